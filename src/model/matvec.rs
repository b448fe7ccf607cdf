//! `y = W x` for a single token (decode) over the frozen f32 weight, split across threads
//! by rows. For one row of input, gemm's packing and dispatch cost more than the multiply;
//! decoding is bound by reading the weights, so a plain row-by-row dot product that
//! streams each weight row once is as fast as the memory allows.

use candle_core::{Device, Result, Storage, Tensor};
use rayon::prelude::*;

/// Dot product with eight independent accumulators so the compiler can vectorize it.
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for i in 0..chunks {
        let (x, y) = (&a[i * 8..i * 8 + 8], &b[i * 8..i * 8 + 8]);
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for i in chunks * 8..a.len() {
        sum += a[i] * b[i];
    }
    sum
}

/// `x [1, in]` times `weight [out, in]`ᵀ, as `[1, out]`. `None` when the weight is not a
/// contiguous f32 CPU tensor (the caller then uses the general matmul).
pub fn matvec(weight: &Tensor, x: &Tensor) -> Result<Option<Tensor>> {
    let (out_f, in_f) = weight.dims2()?;
    let xv: Vec<f32> = x.flatten_all()?.to_vec1()?;
    if xv.len() != in_f {
        return Ok(None);
    }
    let (guard, layout) = weight.storage_and_layout();
    let Storage::Cpu(cpu) = &*guard else {
        return Ok(None);
    };
    let Some((start, end)) = layout.contiguous_offsets() else {
        return Ok(None);
    };
    let Ok(data) = cpu.as_slice::<f32>() else {
        return Ok(None);
    };
    let w = &data[start..end];
    let mut y = vec![0f32; out_f];
    y.par_chunks_mut(256).enumerate().for_each(|(c, ys)| {
        for (k, yk) in ys.iter_mut().enumerate() {
            let row = c * 256 + k;
            *yk = dot(&w[row * in_f..(row + 1) * in_f], &xv);
        }
    });
    drop(guard);
    Ok(Some(Tensor::from_vec(y, (1, out_f), &Device::Cpu)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_matmul() {
        let w = Tensor::arange(0f32, 300.0 * 37.0, &Device::Cpu)
            .unwrap()
            .reshape((300, 37))
            .unwrap();
        let w = (w / 1000.0).unwrap().sin().unwrap();
        let x = Tensor::arange(0f32, 37.0, &Device::Cpu)
            .unwrap()
            .reshape((1, 37))
            .unwrap()
            .cos()
            .unwrap();
        let a: Vec<f32> = matvec(&w, &x)
            .unwrap()
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = x
            .matmul(&w.t().unwrap())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        for (p, q) in a.iter().zip(&b) {
            assert!((p - q).abs() < 1e-4, "{p} vs {q}");
        }
    }
}
