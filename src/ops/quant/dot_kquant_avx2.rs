//! AVX2 dot products of the K-quants that Q4_K_M files are made of (Q4_K, Q6_K) against
//! candle's Q8_K activations (one 8-bit level, one scale per 256 values, sums per 16),
//! for up to four activation rows at once: the integer sums are llama.cpp's
//! (`vpmaddubsw` of the codes and activations, `vpmaddwd` with the sub-block scales,
//! summed in 32 bits over the super-block), but a weight super-block is unpacked once
//! for all the rows of a prompt that share it.
//!
//! Written here because candle's AVX2 K-quant kernels take one activation row per call,
//! so a prompt of `m` rows unpacked every weight super-block `m` times; the 16-bit
//! two-level design of the 32-value types ran at half candle's speed on these types.
//!
//! # Safety
//! The functions need AVX2, FMA and F16C, a weight row of whole super-blocks, and
//! activation rows of as many [`BlockQ8K`]s.

#![allow(clippy::missing_safety_doc)]

use std::arch::x86_64::*;

use candle_core::quantized::k_quants::BlockQ8K;

use super::dot_x86::{f16_at, hsum128, hsum256 as hsum};
use super::format::k4_scale_words;

// `BlockQ8K` is `repr(C)`: `d: f32`, `qs: [i8; 256]`, `bsums: [i16; 16]`. Its fields are
// private to candle, so the kernels read them at these offsets.
pub(super) const Q8K_BYTES: usize = 292;
pub(super) const Q8K_QS: usize = 4;
pub(super) const Q8K_BSUMS: usize = 260;
const _: () = assert!(std::mem::size_of::<BlockQ8K>() == Q8K_BYTES);

/// Super-block `s` of activation row `a`, as bytes.
#[inline(always)]
unsafe fn q8k_at(a: &[BlockQ8K], s: usize) -> *const u8 {
    a.as_ptr().add(s).cast::<u8>()
}

#[inline(always)]
unsafe fn q8k_scale(y: *const u8) -> f32 {
    y.cast::<f32>().read_unaligned()
}

/// The eight 6-bit scales and the eight 6-bit minimums of a Q4_K super-block (12 bytes
/// at `p`) as 16-bit lanes: scales in the lower half, minimums in the upper.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn q4k_scales_and_mins(p: *const u8) -> __m256i {
    let [s0, s1, m0, m1] = k4_scale_words(p.cast::<[u8; 12]>().read_unaligned());
    _mm256_cvtepu8_epi16(_mm_set_epi32(m1 as i32, m0 as i32, s1 as i32, s0 as i32))
}

/// 32 six-bit codes of a Q6_K super-block: quarter `k` of a 128-value half, from the 32
/// bytes of low bits that hold it (`lows`: the first 32 of the half for even `k`, the
/// second for odd) and the half's 32 bytes of high bits. Values `32·k .. 32·k + 32` of
/// the half are the low nibbles of `lows` for k < 2, the high ones after, with bits 2k,
/// 2k + 1 of `high` above them.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn q6k_codes(lows: __m256i, high: __m256i, k: usize) -> __m256i {
    let low = _mm256_set1_epi8(0x0F);
    let nibbles = if k < 2 {
        _mm256_and_si256(lows, low)
    } else {
        _mm256_and_si256(_mm256_srli_epi16::<4>(lows), low)
    };
    let hb = match k {
        0 => high,
        1 => _mm256_srli_epi16::<2>(high),
        2 => _mm256_srli_epi16::<4>(high),
        _ => _mm256_srli_epi16::<6>(high),
    };
    _mm256_or_si256(
        nibbles,
        _mm256_slli_epi16::<4>(_mm256_and_si256(hb, _mm256_set1_epi8(0x03))),
    )
}

/// One Q4_K row against `N` activation rows:
/// `Σ_sub d·sc·(q · y) − dmin·m·Σy`, the first summed in 32-bit integers per super-block.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q4k_rows<const N: usize>(w: &[u8], a: [&[BlockQ8K]; N]) -> [f32; N] {
    let low = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); N];
    let mut acc_min = [_mm_setzero_ps(); N];
    for s in 0..w.len() / 144 {
        let b = w.as_ptr().add(144 * s);
        let (d, dmin) = (f16_at(b), f16_at(b.add(2)));
        let scales_and_mins = q4k_scales_and_mins(b.add(4));
        let sc = _mm256_castsi256_si128(scales_and_mins);
        let scales = _mm256_set_m128i(sc, sc);
        let mins = _mm256_extracti128_si256::<1>(scales_and_mins);
        let mut sum = [_mm256_setzero_si256(); N];
        for pair in 0..4 {
            // Sub-block 2·pair in the low nibbles of these 32 bytes, 2·pair + 1 in the high.
            let bits = _mm256_loadu_si256(b.add(16 + 32 * pair).cast());
            let q_lo = _mm256_and_si256(bits, low);
            let q_hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), low);
            // Each sub-block's scale in every 16-bit lane (bytes 2k, 2k + 1 of `scales`).
            let k = 2 * pair as i16;
            let sc_lo =
                _mm256_shuffle_epi8(scales, _mm256_set1_epi16(((2 * k + 1) << 8) | (2 * k)));
            let sc_hi =
                _mm256_shuffle_epi8(scales, _mm256_set1_epi16(((2 * k + 3) << 8) | (2 * k + 2)));
            for n in 0..N {
                let y = q8k_at(a[n], s).add(Q8K_QS + 64 * pair);
                let y_lo = _mm256_loadu_si256(y.cast());
                let y_hi = _mm256_loadu_si256(y.add(32).cast());
                let p_lo = _mm256_madd_epi16(sc_lo, _mm256_maddubs_epi16(q_lo, y_lo));
                let p_hi = _mm256_madd_epi16(sc_hi, _mm256_maddubs_epi16(q_hi, y_hi));
                sum[n] = _mm256_add_epi32(sum[n], _mm256_add_epi32(p_lo, p_hi));
            }
        }
        for n in 0..N {
            let y = q8k_at(a[n], s);
            let yd = q8k_scale(y);
            acc[n] = _mm256_fmadd_ps(_mm256_set1_ps(d * yd), _mm256_cvtepi32_ps(sum[n]), acc[n]);
            // The activations' sums per 32 values, against the eight minimums.
            let bsums = _mm256_loadu_si256(y.add(Q8K_BSUMS).cast());
            let sums32 = _mm_hadd_epi16(
                _mm256_castsi256_si128(bsums),
                _mm256_extracti128_si256::<1>(bsums),
            );
            let prod = _mm_cvtepi32_ps(_mm_madd_epi16(mins, sums32));
            acc_min[n] = _mm_fmadd_ps(_mm_set1_ps(-dmin * yd), prod, acc_min[n]);
        }
    }
    let mut out = [0f32; N];
    for n in 0..N {
        out[n] = hsum(acc[n]) + hsum128(acc_min[n]);
    }
    out
}

/// One Q6_K row against `N` activation rows. The codes are `q − 32` with a signed scale
/// per 16 values; the unsigned `q` go through `vpmaddubsw`, and the −32 is taken once
/// per super-block from the activations' sums per 16 values.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q6k_rows<const N: usize>(w: &[u8], a: [&[BlockQ8K]; N]) -> [f32; N] {
    let mut acc = [_mm256_setzero_ps(); N];
    for s in 0..w.len() / 210 {
        let b = w.as_ptr().add(210 * s);
        let d = f16_at(b.add(208));
        let scales = _mm_loadu_si128(b.add(192).cast());
        let mut sum = [_mm256_setzero_si256(); N];
        for half in 0..2 {
            let lo1 = _mm256_loadu_si256(b.add(64 * half).cast());
            let lo2 = _mm256_loadu_si256(b.add(64 * half + 32).cast());
            let high = _mm256_loadu_si256(b.add(128 + 32 * half).cast());
            for k in 0..4 {
                let q = q6k_codes(if k % 2 == 0 { lo1 } else { lo2 }, high, k);
                // Scales 2g, 2g + 1 (g = 4·half + k), eight 16-bit lanes each.
                let g = (4 * half + k) as i8;
                let pick = _mm_set_epi8(
                    2 * g + 1,
                    2 * g + 1,
                    2 * g + 1,
                    2 * g + 1,
                    2 * g + 1,
                    2 * g + 1,
                    2 * g + 1,
                    2 * g + 1,
                    2 * g,
                    2 * g,
                    2 * g,
                    2 * g,
                    2 * g,
                    2 * g,
                    2 * g,
                    2 * g,
                );
                let sc = _mm256_cvtepi8_epi16(_mm_shuffle_epi8(scales, pick));
                for n in 0..N {
                    let y = q8k_at(a[n], s).add(Q8K_QS + 128 * half + 32 * k);
                    let y = _mm256_loadu_si256(y.cast());
                    let p = _mm256_madd_epi16(sc, _mm256_maddubs_epi16(q, y));
                    sum[n] = _mm256_add_epi32(sum[n], p);
                }
            }
        }
        let sc16 = _mm256_cvtepi8_epi16(scales);
        for n in 0..N {
            let y = q8k_at(a[n], s);
            let bsums = _mm256_loadu_si256(y.add(Q8K_BSUMS).cast());
            let offset = _mm256_slli_epi32::<5>(_mm256_madd_epi16(sc16, bsums));
            let total = _mm256_sub_epi32(sum[n], offset);
            acc[n] = _mm256_fmadd_ps(
                _mm256_set1_ps(d * q8k_scale(y)),
                _mm256_cvtepi32_ps(total),
                acc[n],
            );
        }
    }
    let mut out = [0f32; N];
    for n in 0..N {
        out[n] = hsum(acc[n]);
    }
    out
}
