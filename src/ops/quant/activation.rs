//! Activations quantized per block for the integer dot products, as llama.cpp does: each
//! row of `x` once per matrix product, shared by every weight row.

use candle_core::quantized::k_quants::{BlockQ8K, GgmlType};

use super::format::ActivationFormat;

/// Values per [`Q8Block`].
pub const Q8_ELEMS: usize = 32;

/// 32 activations as int8 with their scale (`x ≈ d · q`) and `Σ q`, which the weight types
/// with an offset (Q4_0's −8, Q4_1's minimum …) need. Unlike llama.cpp's Q8_0/Q8_1 the
/// scale stays f32 and the sum is exact.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
pub struct Q8Block {
    pub d: f32,
    pub sum: i32,
    pub qs: [i8; Q8_ELEMS],
}

/// The activations of one matrix product, `rows` rows of `per_row` blocks each.
pub enum Activations {
    F32(Vec<f32>),
    Q8(Vec<Q8Block>),
    Q8K(Vec<BlockQ8K>),
}

impl Activations {
    /// Quantizes `x` (`rows` rows of `cols` values; `cols` a whole number of the format's
    /// blocks, which the weight's row length guarantees) into `format`.
    pub fn quantize(format: ActivationFormat, x: &[f32], cols: usize) -> Self {
        match format {
            ActivationFormat::F32 => Activations::F32(x.to_vec()),
            ActivationFormat::Q8 => {
                let mut out = Vec::with_capacity(x.len() / Q8_ELEMS);
                out.extend(x.chunks_exact(Q8_ELEMS).map(quantize_q8));
                Activations::Q8(out)
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

/// One block: `d = max|x| / 127`, `q = round(x / d)`.
fn quantize_q8(x: &[f32]) -> Q8Block {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d = amax / 127.0;
    let id = if d > 0.0 { 1.0 / d } else { 0.0 };
    let mut qs = [0i8; Q8_ELEMS];
    let mut sum = 0i32;
    for (q, &v) in qs.iter_mut().zip(x) {
        // |v · id| ≤ 127 by the choice of d, so the cast cannot saturate.
        *q = (v * id).round() as i8;
        sum += *q as i32;
    }
    Q8Block { d, sum, qs }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_round_trips_within_half_a_step() {
        let x: Vec<f32> = (0..32).map(|i| ((i as f32) * 0.7).sin() * 3.0).collect();
        let b = quantize_q8(&x);
        assert_eq!(b.sum, b.qs.iter().map(|&q| q as i32).sum::<i32>());
        for (q, v) in b.qs.iter().zip(&x) {
            assert!((*q as f32 * b.d - v).abs() <= b.d * 0.5 + 1e-6);
        }
        let zero = quantize_q8(&[0.0; 32]);
        assert_eq!((zero.d, zero.sum), (0.0, 0));
    }
}
