//! LoRA dropout's masks, kept as one bit per value: drawn from a seed with SplitMix64 (the
//! same step always sees the same mask, so a resumed run repeats its masks exactly), and
//! applied as `x ⊙ m` with `m` either 0 or `1 / (1 − p)` (inverted dropout).
//!
//! A training step keeps each adapted projection's mask until its backward pass: as f32
//! tensors that was 4 bytes per input value, 587 MiB of a 4 × 256 step of the default model
//! (1758 MiB without dropout, 2345 with) and about 5 GB on an 8B shape; as bits it is a
//! thirty-second of that. No crate draws a seeded mask into bits and applies it to a
//! buffer, hence this one.

use candle_core::{Device, Result, Tensor};
use rayon::prelude::*;

/// Values per chunk of the draw: each chunk's SplitMix64 stream starts from the seed and
/// the chunk's index, so chunks are drawn in parallel and the mask does not depend on the
/// number of threads. A multiple of 64: chunks fill whole words of bits.
const CHUNK: usize = 4096;

/// An inverted-dropout mask over `len` values.
#[derive(Debug, Clone, PartialEq)]
pub struct DropoutMask {
    /// Bit `i % 64` of word `i / 64`: whether value `i` is kept.
    kept: Vec<u64>,
    len: usize,
    /// `1 / (1 − p)`, the factor of a kept value.
    scale: f32,
}

impl DropoutMask {
    /// Draws the mask of `len` values for drop probability `p` (in `[0, 1)`) from `seed`.
    pub fn draw(len: usize, p: f32, seed: u64) -> Self {
        let threshold = (p as f64 * u32::MAX as f64) as u32;
        let mut kept = vec![0u64; len.div_ceil(64)];
        kept.par_chunks_mut(CHUNK / 64)
            .enumerate()
            .for_each(|(c, words)| {
                let start = seed.wrapping_add((c as u64).wrapping_mul(GOLDEN));
                let first = c * CHUNK;
                for (w, word) in words.iter_mut().enumerate() {
                    let bits = 64.min(len - (first + 64 * w));
                    let state = start.wrapping_add((64 * w as u64).wrapping_mul(GOLDEN));
                    // A last word past `len` draws all 64 and keeps its first `bits`.
                    let all = kept_bits(state, threshold);
                    *word = if bits == 64 {
                        all
                    } else {
                        all & ((1 << bits) - 1)
                    };
                }
            });
        Self {
            kept,
            len,
            scale: 1.0 / (1.0 - p),
        }
    }

    /// Values the mask covers.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes the mask holds.
    pub fn byte_len(&self) -> usize {
        self.kept.len() * 8
    }

    /// `x ⊙ m` into a new buffer (`x` holds [`Self::len`] values).
    pub fn apply(&self, x: &[f32]) -> Vec<f32> {
        debug_assert_eq!(x.len(), self.len);
        // Each chunk written by the thread that computes it (a serial zero fill of the
        // whole buffer first was a pass over 2–6 MB per projection, twice a step).
        super::par_fill::filled(x.len(), CHUNK, |c, out| {
            let words = &self.kept[c * CHUNK / 64..];
            masked(out, &x[c * CHUNK..], words, self.scale);
        })
    }

    /// `y ⊙ m` in place (`y` holds [`Self::len`] values).
    pub fn apply_in_place(&self, y: &mut [f32]) {
        debug_assert_eq!(y.len(), self.len);
        y.par_chunks_mut(CHUNK)
            .zip(self.kept.par_chunks(CHUNK / 64))
            .for_each(|(values, words)| masked_in_place(values, words, self.scale));
    }

    /// The mask as values (`0` or `1 / (1 − p)`), shaped `dims`: for the composed path of
    /// the layer (candle ops, differentiated by autograd) and the tests.
    pub fn to_tensor(&self, dims: &[usize], device: &Device) -> Result<Tensor> {
        let mut ones = vec![1f32; self.len];
        self.apply_in_place(&mut ones);
        Tensor::from_vec(ones, dims, device)
    }
}

/// SplitMix64's increment: value `i` of a chunk draws from `start + (i + 1) · GOLDEN`.
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// Whether value `i` after `state` is kept: SplitMix64's output for `state + (i + 1) ·
/// GOLDEN`, its high 32 bits at or above `threshold`, as 0 or 1. Each value's draw depends
/// on its index only, so a word's 64 draws are independent lanes.
#[inline(always)]
fn kept_bit(state: u64, i: u64, threshold: u32) -> u64 {
    let mut z = state.wrapping_add((i + 1).wrapping_mul(GOLDEN));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    ((z >> 32) as u32 >= threshold) as u64
}

super::vec_math::simd_versions! {
    /// The 64 bits of a whole word of mask after `state`. Branch-free, so the loop
    /// compiles to vector lanes (AVX2 has no 64-bit multiply: the compiler builds it from
    /// 32-bit ones). The loop with a branch and a bit set per value took 22 instructions
    /// a value (callgrind) and 3 % of a training step's samples; this one takes 10.
    fn kept_bits(state: u64, threshold: u32) -> u64 {
        (0..64).fold(0, |word, bit| word | (kept_bit(state, bit, threshold) << bit))
    }
}

/// Per byte of mask, its eight bits as factors 0 or 1: a byte's values are then eight
/// plain products, which compile to vector multiplies (a select per bit did not).
const BYTE_FACTORS: [[f32; 8]; 256] = {
    let mut table = [[0f32; 8]; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut j = 0;
        while j < 8 {
            if (byte >> j) & 1 == 1 {
                table[byte][j] = 1.0;
            }
            j += 1;
        }
        byte += 1;
    }
    table
};

/// `out = x ⊙ m` for the values of `words`' bits, eight values per byte of mask.
fn masked(out: &mut [f32], x: &[f32], words: &[u64], scale: f32) {
    let bytes = words.iter().flat_map(|w| w.to_le_bytes());
    for ((out, x), byte) in out.chunks_mut(8).zip(x.chunks(8)).zip(bytes) {
        let factors = &BYTE_FACTORS[byte as usize];
        for ((o, &v), &f) in out.iter_mut().zip(x).zip(factors) {
            *o = v * scale * f;
        }
    }
}

/// `y = y ⊙ m` for the values of `words`' bits.
fn masked_in_place(y: &mut [f32], words: &[u64], scale: f32) {
    let bytes = words.iter().flat_map(|w| w.to_le_bytes());
    for (y, byte) in y.chunks_mut(8).zip(bytes) {
        let factors = &BYTE_FACTORS[byte as usize];
        for (v, &f) in y.iter_mut().zip(factors) {
            *v *= scale * f;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The f32 mask the studio drew before masks were bits, restated: a run resumed across
    /// the change sees the same masks.
    fn f32_mask(n: usize, p: f32, seed: u64) -> Vec<f32> {
        let keep = 1.0 / (1.0 - p);
        let threshold = (p as f64 * u32::MAX as f64) as u32;
        let mut data = vec![0f32; n];
        for (c, chunk) in data.chunks_mut(4096).enumerate() {
            let mut state = seed.wrapping_add((c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            for v in chunk.iter_mut() {
                state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
                let mut z = state;
                z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
                z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
                z ^= z >> 31;
                *v = if (z >> 32) as u32 >= threshold {
                    keep
                } else {
                    0.0
                };
            }
        }
        data
    }

    #[test]
    fn bits_hold_the_f32_mask_and_apply_it() {
        // Lengths that end inside a word and inside a chunk, and whole chunks.
        for (n, p, seed) in [
            (1, 0.5, 1),
            (100, 0.1, 7),
            (4096 * 3 + 17, 0.05, 42),
            (8192, 0.3, 9),
        ] {
            let mask = DropoutMask::draw(n, p, seed);
            let want = f32_mask(n, p, seed);
            let got: Vec<f32> = mask
                .to_tensor(&[n], &Device::Cpu)
                .unwrap()
                .to_vec1()
                .unwrap();
            assert_eq!(got, want, "{n} values, p {p}");
            let x: Vec<f32> = (0..n).map(|i| i as f32 * 0.25 - 3.0).collect();
            let masked = mask.apply(&x);
            for i in 0..n {
                assert_eq!(masked[i], x[i] * want[i], "{n} values, value {i}");
            }
            assert_eq!(mask.len(), n);
            assert_eq!(mask.byte_len(), n.div_ceil(64) * 8);
        }
    }

    #[test]
    fn about_p_of_the_values_are_dropped_and_the_seed_decides_which() {
        let n = 200_000;
        let mask = DropoutMask::draw(n, 0.05, 3);
        let kept: usize = mask.kept.iter().map(|w| w.count_ones() as usize).sum();
        let dropped = (n - kept) as f64 / n as f64;
        assert!((dropped - 0.05).abs() < 0.003, "dropped {dropped}");
        assert_eq!(mask, DropoutMask::draw(n, 0.05, 3));
        assert_ne!(mask, DropoutMask::draw(n, 0.05, 4));
        let none: usize = DropoutMask::draw(n + 5, 0.0, 3)
            .kept
            .iter()
            .map(|w| w.count_ones() as usize)
            .sum();
        assert_eq!(none, n + 5, "p = 0 keeps every value");
    }
}
