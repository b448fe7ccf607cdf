//! Activations quantized per block for the integer dot products, as llama.cpp does: each
//! row of `x` once per matrix product, shared by every weight row.

use candle_core::quantized::k_quants::{BlockQ8K, GgmlType};

use super::format::ActivationFormat;

/// Values per block of [`Q8Rows`].
pub const Q8_ELEMS: usize = 32;

/// Rows of activations as int8 in blocks of 32 (`x ≈ d · q`), laid out for the kernels:
/// the codes of a row contiguous, and per block the pair `[d, d · Σ q]` (the second is
/// what weight types with an offset — Q4_0's −8, Q4_1's minimum — multiply). Unlike
/// llama.cpp's Q8_0/Q8_1 the scale stays f32 and the sum is exact.
#[derive(Debug, Clone)]
pub struct Q8Rows {
    pub qs: Vec<i8>,
    pub meta: Vec<f32>,
    pub cols: usize,
}

impl Q8Rows {
    /// Row `i`: its codes and its `[d, d · Σ q]` pairs.
    pub fn row(&self, i: usize) -> (&[i8], &[f32]) {
        let blocks = self.cols / Q8_ELEMS;
        (
            &self.qs[i * self.cols..(i + 1) * self.cols],
            &self.meta[2 * i * blocks..2 * (i + 1) * blocks],
        )
    }
}

/// The activations of one matrix product.
pub enum Activations {
    F32(Vec<f32>),
    Q8(Q8Rows),
    Q8K(Vec<BlockQ8K>),
}

impl Activations {
    /// Quantizes `x` (rows of `cols` values; `cols` a whole number of the format's blocks,
    /// which the weight's row length guarantees) into `format`.
    pub fn quantize(format: ActivationFormat, x: &[f32], cols: usize) -> Self {
        match format {
            ActivationFormat::F32 => Activations::F32(x.to_vec()),
            ActivationFormat::Q8 => {
                let mut qs = vec![0i8; x.len()];
                let mut meta = vec![0f32; x.len() / Q8_ELEMS * 2];
                for ((xb, qb), mb) in x
                    .chunks_exact(Q8_ELEMS)
                    .zip(qs.chunks_exact_mut(Q8_ELEMS))
                    .zip(meta.chunks_exact_mut(2))
                {
                    let (d, sum) = quantize_block(xb, qb);
                    mb[0] = d;
                    mb[1] = d * sum as f32;
                }
                Activations::Q8(Q8Rows { qs, meta, cols })
            }
            ActivationFormat::Q8K => {
                let per_row = cols / BlockQ8K::BLCK_SIZE;
                let rows = x.len() / cols.max(1);
                let mut out = vec![BlockQ8K::zeros(); rows * per_row];
                for (xr, or) in x.chunks_exact(cols).zip(out.chunks_exact_mut(per_row)) {
                    BlockQ8K::from_float(xr, or);
                }
                Activations::Q8K(out)
            }
        }
    }
}

/// One block: `d = max|x| / 127`, `q = round(x / d)` (half away from zero); returns
/// `(d, Σ q)`.
fn quantize_block(x: &[f32], q: &mut [i8]) -> (f32, i32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut sum = 0i32;
    for (q, &v) in q.iter_mut().zip(x) {
        // |v · id| ≤ 127 by the choice of d, so the cast cannot saturate; adding ±0.5 and
        // truncating rounds like `roundf` without its library call.
        let r = v * id;
        *q = (r + 0.5f32.copysign(r)) as i8;
        sum += *q as i32;
    }
    (d, sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_round_trips_within_half_a_step() {
        let x: Vec<f32> = (0..32).map(|i| ((i as f32) * 0.7).sin() * 3.0).collect();
        let mut q = [0i8; 32];
        let (d, sum) = quantize_block(&x, &mut q);
        assert_eq!(sum, q.iter().map(|&q| q as i32).sum::<i32>());
        assert!(q.iter().any(|&v| v.abs() == 127));
        for (q, v) in q.iter().zip(&x) {
            assert!((*q as f32 * d - v).abs() <= d * 0.5 + 1e-6);
        }
        let (d, sum) = quantize_block(&[0.0; 32], &mut q);
        assert_eq!((d, sum), (0.0, 0));
    }
}
