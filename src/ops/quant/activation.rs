//! Activations quantized per block for the integer dot products, as llama.cpp does: each
//! row of `x` once per matrix product, shared by every weight row.

use candle_core::quantized::k_quants::{BlockQ8K, GgmlType};
use rayon::prelude::*;

use super::format::ActivationFormat;

/// Values per block of [`Q8Rows`].
pub const Q8_ELEMS: usize = 32;

/// Rows of activations as int8 in blocks of 32, in two levels: `x ≈ d · (256 · q₁ + q₂)`,
/// the second level quantizing what the first leaves at 1/256 of its step, so that one
/// integer `256 · (w · q₁) + w · q₂` per block carries about 16 bits of the activation.
/// One 8-bit level, as llama.cpp uses, put the default model's next-token distributions
/// 5·10⁻³ nats of KL divergence from f32; two levels put them 10⁻⁷ away, for a second
/// `vpdpbusd` on the same decoded weight codes. Laid out for the kernels: each level's
/// codes of a row contiguous, and per block `[d, d · Σ (256 · q₁ + q₂)]` (the sum is what
/// weight types with an offset — Q4_0's −8, Q4_1's minimum — multiply).
#[derive(Debug, Clone)]
pub struct Q8Rows {
    pub qs: Vec<i8>,
    pub qs2: Vec<i8>,
    /// The two levels as one 16-bit code per value, `256 · q₁ + q₂` (at most 32 639 in
    /// magnitude): what the AVX2 kernels multiply with 16-bit weight codes in one
    /// `vpmaddwd`, the same integer sums as two 8-bit products with half the instructions.
    pub qs16: Vec<i16>,
    pub meta: Vec<f32>,
    /// `d · Σ (256 · q₁ + q₂)` over each sixteen values (a Q6_K scale's group): what its
    /// −32 offset multiplies.
    pub group_sums: Vec<f32>,
    pub cols: usize,
}

/// One row of [`Q8Rows`]: both levels' codes and the per-block meta.
#[derive(Clone, Copy)]
pub struct Q8Row<'a> {
    pub qs: &'a [i8],
    pub qs2: &'a [i8],
    pub qs16: &'a [i16],
    pub meta: &'a [f32],
    pub group_sums: &'a [f32],
}

impl Q8Rows {
    pub fn row(&self, i: usize) -> Q8Row<'_> {
        let blocks = self.cols / Q8_ELEMS;
        Q8Row {
            qs: &self.qs[i * self.cols..(i + 1) * self.cols],
            qs2: &self.qs2[i * self.cols..(i + 1) * self.cols],
            qs16: &self.qs16[i * self.cols..(i + 1) * self.cols],
            meta: &self.meta[2 * i * blocks..2 * (i + 1) * blocks],
            group_sums: &self.group_sums[i * self.cols / 16..(i + 1) * self.cols / 16],
        }
    }
}

/// Values below which quantizing stays on the calling thread: a decode step's row is a
/// few microseconds of work, less than handing half of it to another thread. A prompt's
/// rows were a serial stretch of every product (2 % of an 8B prefill in perf, the other
/// thread waiting).
const PARALLEL_VALUES: usize = 1 << 15;

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
                let mut qs2 = vec![0i8; x.len()];
                let mut meta = vec![0f32; x.len() / Q8_ELEMS * 2];
                if x.len() < PARALLEL_VALUES {
                    x.chunks_exact(Q8_ELEMS)
                        .zip(qs.chunks_exact_mut(Q8_ELEMS))
                        .zip(qs2.chunks_exact_mut(Q8_ELEMS))
                        .zip(meta.chunks_exact_mut(2))
                        .for_each(|(((xb, qb), qb2), mb)| quantize_block(xb, qb, qb2, mb));
                } else {
                    x.par_chunks_exact(Q8_ELEMS)
                        .zip(qs.par_chunks_exact_mut(Q8_ELEMS))
                        .zip(qs2.par_chunks_exact_mut(Q8_ELEMS))
                        .zip(meta.par_chunks_exact_mut(2))
                        .with_min_len(64)
                        .for_each(|(((xb, qb), qb2), mb)| quantize_block(xb, qb, qb2, mb));
                }
                let qs16: Vec<i16> = qs
                    .iter()
                    .zip(&qs2)
                    .map(|(&a, &b)| 256 * a as i16 + b as i16)
                    .collect();
                // Two groups of sixteen a block (of scale meta[2 · block]).
                let group_sums = qs16
                    .chunks_exact(16)
                    .enumerate()
                    .map(|(g, codes)| {
                        let sum: i32 = codes.iter().map(|&c| c as i32).sum();
                        meta[2 * (g / 2)] * sum as f32
                    })
                    .collect();
                Activations::Q8(Q8Rows {
                    qs,
                    qs2,
                    qs16,
                    meta,
                    group_sums,
                    cols,
                })
            }
            ActivationFormat::Q8K => {
                let per_row = cols / BlockQ8K::BLCK_SIZE;
                let rows = x.len() / cols.max(1);
                let mut out = vec![BlockQ8K::zeros(); rows * per_row];
                if x.len() < PARALLEL_VALUES {
                    for (xr, or) in x.chunks_exact(cols).zip(out.chunks_exact_mut(per_row)) {
                        BlockQ8K::from_float(xr, or);
                    }
                } else {
                    // Block by block: every block is quantized on its own.
                    x.par_chunks_exact(BlockQ8K::BLCK_SIZE)
                        .zip(out.par_chunks_exact_mut(1))
                        .with_min_len(16)
                        .for_each(|(xb, ob)| BlockQ8K::from_float(xb, ob));
                }
                Activations::Q8K(out)
            }
        }
    }
}

/// One block of [`Q8Rows`]: its codes and its `[d, d · Σ (256 · q₁ + q₂)]`.
fn quantize_block(x: &[f32], q1: &mut [i8], q2: &mut [i8], meta: &mut [f32]) {
    let (d, sum) = quantize_two_levels(x, q1, q2);
    meta.copy_from_slice(&[d, d * sum as f32]);
}

/// One block in two levels: `d₁ = max|x| / 127`, `q₁ = round(x / d₁)`, then the rest
/// `x − d₁ q₁` (at most `d₁ / 2`) as `q₂ = round(rest / d)` with `d = d₁ / 256`, clamped
/// to ±127 (only an exact half step reaches 128). Rounds half away from zero by adding
/// ±0.5 and truncating, like `roundf` without its library call. Returns `(d, Σ (256 q₁ + q₂))`.
fn quantize_two_levels(x: &[f32], q1: &mut [i8], q2: &mut [i8]) -> (f32, i32) {
    let amax = x.iter().fold(0f32, |m, v| m.max(v.abs()));
    let d1 = amax / 127.0;
    let d = d1 / 256.0;
    let (id1, id) = if d1 > 0.0 {
        (1.0 / d1, 256.0 / d1)
    } else {
        (0.0, 0.0)
    };
    let mut sum = 0i32;
    for ((a, b), &v) in q1.iter_mut().zip(q2.iter_mut()).zip(x) {
        let r = v * id1;
        // |v · id1| ≤ 127 by the choice of d1, so the cast cannot saturate.
        *a = (r + 0.5f32.copysign(r)) as i8;
        let rest = (v - d1 * *a as f32) * id;
        *b = (rest + 0.5f32.copysign(rest)).clamp(-127.0, 127.0) as i8;
        sum += 256 * *a as i32 + *b as i32;
    }
    (d, sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_levels_hold_a_block_within_half_a_fine_step() {
        let x: Vec<f32> = (0..32).map(|i| ((i as f32) * 0.7).sin() * 3.0).collect();
        let (mut q1, mut q2) = ([0i8; 32], [0i8; 32]);
        let (d, sum) = quantize_two_levels(&x, &mut q1, &mut q2);
        let codes: Vec<i32> = q1
            .iter()
            .zip(&q2)
            .map(|(&a, &b)| 256 * a as i32 + b as i32)
            .collect();
        assert_eq!(sum, codes.iter().sum::<i32>());
        assert!(q1.iter().any(|&v| v.abs() == 127));
        for (c, v) in codes.iter().zip(&x) {
            assert!(
                (*c as f32 * d - v).abs() <= d * 0.5 + 1e-6,
                "{c} · {d} vs {v}"
            );
        }
        let (d, sum) = quantize_two_levels(&[0.0; 32], &mut q1, &mut q2);
        assert_eq!((d, sum), (0.0, 0));
    }

    /// A prompt's rows (quantized over the threads) give the codes each row gives alone
    /// (on the calling thread).
    #[test]
    fn rows_quantized_together_equal_each_row_alone() {
        let (rows, cols) = (20, 2048);
        assert!(rows * cols >= PARALLEL_VALUES && cols < PARALLEL_VALUES);
        let x: Vec<f32> = (0..rows * cols)
            .map(|i| ((i as f32) * 0.37).sin() * (1.0 + (i % 97) as f32))
            .collect();
        let alone = |format| -> Vec<Activations> {
            x.chunks_exact(cols)
                .map(|r| Activations::quantize(format, r, cols))
                .collect()
        };
        match Activations::quantize(ActivationFormat::Q8K, &x, cols) {
            Activations::Q8K(all) => {
                let each: Vec<BlockQ8K> = alone(ActivationFormat::Q8K)
                    .into_iter()
                    .flat_map(|a| match a {
                        Activations::Q8K(b) => b,
                        _ => panic!("not Q8K"),
                    })
                    .collect();
                assert!(all == each);
            }
            _ => panic!("not Q8K"),
        }
        match Activations::quantize(ActivationFormat::Q8, &x, cols) {
            Activations::Q8(all) => {
                for (r, a) in alone(ActivationFormat::Q8).iter().enumerate() {
                    let Activations::Q8(one) = a else {
                        panic!("not Q8")
                    };
                    let (mine, its) = (all.row(r), one.row(0));
                    assert_eq!(mine.qs, its.qs);
                    assert_eq!(mine.qs2, its.qs2);
                    assert_eq!(mine.qs16, its.qs16);
                    assert_eq!(mine.meta, its.meta);
                    assert_eq!(mine.group_sums, its.group_sums);
                }
            }
            _ => panic!("not Q8"),
        }
    }
}
