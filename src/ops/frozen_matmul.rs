//! `y = x Wᵀ` over a frozen f32 weight at inference, by the shape of `x`:
//! - one row (a decode step): a row-by-row dot product split across threads by weight
//!   rows. gemm's packing and dispatch cost more than the multiply here; decoding is bound
//!   by reading the weights, and this streams each weight row once.
//! - a few rows (a prompt's prefill): gemm on 32-row panels of the weight in parallel
//!   ([`gemm_xwt_panels`]).
//! - more rows: candle's matmul.

use candle_core::{DType, Result, Tensor};
use rayon::prelude::*;

use super::slice_gemm::{gemm_xwt_panels, with_slice};
use super::vec_math;

/// Up to this many input rows, the panel products beat one gemm call; measured equal at
/// 512 rows (BENCHMARKS.md, first token).
const PANEL_MAX_ROWS: usize = 256;

/// `x [.., in] · weight [out, in]ᵀ` as `[.., out]`.
pub fn x_wt(x: &Tensor, weight: &Tensor) -> Result<Tensor> {
    let (out_f, in_f) = weight.dims2()?;
    let rows = x.elem_count() / in_f.max(1);
    let on_slices = x.device().is_cpu()
        && x.dtype() == DType::F32
        && weight.dtype() == DType::F32
        && weight.is_contiguous()
        && x.dims().last() == Some(&in_f);
    if !on_slices || rows > PANEL_MAX_ROWS {
        return x.broadcast_matmul(&weight.t()?);
    }
    let x = x.contiguous()?;
    let mut y = vec![0f32; rows * out_f];
    with_slice(&x, |xs| {
        with_slice(weight, |w| {
            if rows == 1 {
                matvec(&mut y, xs, w);
                Ok(())
            } else {
                gemm_xwt_panels(&mut y, (rows, out_f, in_f), xs, w)
            }
        })
    })?;
    Tensor::from_vec(y, out_shape(&x, out_f), x.device())
}

/// `x`'s shape with its last dimension replaced by `out`.
pub fn out_shape(x: &Tensor, out: usize) -> Vec<usize> {
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = out;
    }
    dims
}

/// Tasks per thread of a matrix-vector product: enough that the threads end together
/// when one of them is slowed, few enough that each task streams a long run of rows.
const MATVEC_TASKS_PER_THREAD: usize = 4;
/// The fewest weight rows a task takes.
const MATVEC_MIN_TASK_ROWS: usize = 16;

/// `y = W x` for one input row `x [in]` and `W [y.len(), in]`, in tasks of equal runs of
/// weight rows, a few per thread. (Tasks of a fixed 256 rows left a `[192, 576]` key
/// projection to one thread and split a `[576, 1536]` down projection 2 : 1 over two: on
/// an Intel Xeon the f32 decode read its weights at 56 % of what two threads read from
/// memory.)
pub fn matvec(y: &mut [f32], x: &[f32], w: &[f32]) {
    let in_f = x.len();
    let tasks = rayon::current_num_threads() * MATVEC_TASKS_PER_THREAD;
    let rows = y.len().div_ceil(tasks).max(MATVEC_MIN_TASK_ROWS);
    y.par_chunks_mut(rows).enumerate().for_each(|(c, ys)| {
        let first = c * rows * in_f;
        vec_math::dot_rows(ys, &w[first..first + ys.len() * in_f], x);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn values(n: usize, k: usize, step: f32) -> Tensor {
        let v: Vec<f32> = (0..n * k).map(|i| (i as f32 * step).sin()).collect();
        Tensor::from_vec(v, (n, k), &Device::Cpu).unwrap()
    }

    /// One row (dot products), a few rows (panels, with a last panel of 300 % 32 rows) and
    /// many rows (candle) all agree with candle's matmul, and so does a 3-d input.
    #[test]
    fn every_path_matches_matmul() {
        let w = values(300, 37, 0.001);
        for rows in [1, 5, 46, PANEL_MAX_ROWS + 3] {
            let x = values(rows, 37, 0.7);
            let expected = x.matmul(&w.t().unwrap()).unwrap();
            let got = x_wt(&x, &w).unwrap();
            assert_eq!(got.dims(), &[rows, 300]);
            let diff = (got - expected).unwrap().abs().unwrap().max_all().unwrap();
            assert!(diff.to_scalar::<f32>().unwrap() < 1e-4, "{rows} rows");
        }
        let x3 = values(6, 37, 0.3).reshape((2, 3, 37)).unwrap();
        let got = x_wt(&x3, &w).unwrap();
        assert_eq!(got.dims(), &[2, 3, 300]);
    }

    /// A weight that is a row range of a larger matrix (a view with an offset).
    #[test]
    fn a_weight_view_reads_its_own_rows() {
        let big = values(100, 16, 0.01);
        let w = big.narrow(0, 40, 50).unwrap();
        let x = values(7, 16, 0.2);
        let expected = x.matmul(&w.t().unwrap()).unwrap();
        let diff = (x_wt(&x, &w).unwrap() - expected).unwrap().abs().unwrap();
        assert!(diff.max_all().unwrap().to_scalar::<f32>().unwrap() < 1e-4);
    }
}
