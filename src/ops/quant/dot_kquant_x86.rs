//! AVX-512 VNNI dot products of the K-quants that Q4_K_M files are made of (Q4_K, Q6_K)
//! against the two-level Q8 activations of [`super::activation`]. A K-quant's 32- or
//! 16-value sub-blocks line up with the activations' 32-value blocks, so each pair of
//! sub-blocks is one 512-bit `vpdpbusd` step, as for the 32-value types.
//!
//! Written here because candle's K-quant kernels are AVX2 only and take one 8-bit level
//! of activations (10⁻³-scale KL divergence from f32); a weight row is decoded once for
//! up to four activation rows.
//!
//! # Safety
//! The functions need AVX-512 F/BW/VL and VNNI, a weight row of whole super-blocks and
//! activation rows of as many values.

#![allow(clippy::missing_safety_doc)]

use std::arch::x86_64::*;

use super::activation::Q8Row;
use super::dot_x86::f16_at;
use super::format::k4_scale_words;

/// The eight 6-bit scales and minimums of a Q4_K super-block (12 bytes at `p`), as `[d·sc₀, −dmin·m₀, d·sc₁, −dmin·m₁, …]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn scales_and_mins(p: *const u8, d: f32, dmin: f32) -> __m512 {
    let [s0, s1, m0, m1] = k4_scale_words(p.cast::<[u8; 12]>().read_unaligned());
    let bytes = _mm_set_epi32(m1 as i32, m0 as i32, s1 as i32, s0 as i32);
    // [sc₀ … sc₇, m₀ … m₇] as floats, scaled, then interleaved.
    let v = _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(bytes));
    let v = _mm512_mul_ps(
        v,
        _mm512_set_ps(
            -dmin, -dmin, -dmin, -dmin, -dmin, -dmin, -dmin, -dmin, d, d, d, d, d, d, d, d,
        ),
    );
    let interleave = _mm512_set_epi32(15, 7, 14, 6, 13, 5, 12, 4, 11, 3, 10, 2, 9, 1, 8, 0);
    _mm512_permutexvar_ps(interleave, v)
}

/// `256 · (q · y₁) + q · y₂` per lane for activation pair `p` of `a`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn two_level_dot(q: __m512i, a: &Q8Row<'_>, p: usize) -> __m512i {
    let y1 = _mm512_loadu_si512(a.qs.as_ptr().add(64 * p).cast());
    let y2 = _mm512_loadu_si512(a.qs2.as_ptr().add(64 * p).cast());
    let dot = _mm512_slli_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), q, y1), 8);
    _mm512_dpbusd_epi32(dot, q, y2)
}

/// One Q4_K row against `N` activation rows. Per super-block, one product of its eight
/// `[d·sc, −dmin·m]` pairs with the activations' eight `[d, d·Σ]` pairs gives every
/// sub-block's scale and minimum term at once (the minimum terms summed in `extra`); each
/// pair of sub-blocks then only picks its two scales out of it.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn q4k_rows<const N: usize>(w: &[u8], a: [Q8Row<'_>; N]) -> [f32; N] {
    let mut acc = [_mm512_setzero_ps(); N];
    let mut extra = [_mm512_setzero_ps(); N];
    let low = _mm512_set1_epi8(0x0F);
    // The pair's 32 bytes in both halves, the upper half shifted to its high nibbles.
    let nibble_shift = _mm512_set_epi64(4, 4, 4, 4, 0, 0, 0, 0);
    // Lanes 0–7 take sub-block 2·pair's scale (lane 4·pair of the product), lanes 8–15
    // sub-block 2·pair + 1's (lane 4·pair + 2).
    let pick = [
        _mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0),
        _mm512_set_epi32(6, 6, 6, 6, 6, 6, 6, 6, 4, 4, 4, 4, 4, 4, 4, 4),
        _mm512_set_epi32(10, 10, 10, 10, 10, 10, 10, 10, 8, 8, 8, 8, 8, 8, 8, 8),
        _mm512_set_epi32(
            14, 14, 14, 14, 14, 14, 14, 14, 12, 12, 12, 12, 12, 12, 12, 12,
        ),
    ];
    for s in 0..w.len() / 144 {
        let b = w.as_ptr().add(144 * s);
        let (d, dmin) = (f16_at(b), f16_at(b.add(2)));
        // [d·sc₀, −dmin·m₀, d·sc₁, −dmin·m₁, …]: what each sub-block's integer dot and
        // activation sum are multiplied by.
        let wm = scales_and_mins(b.add(4), d, dmin);
        let mut prod = [_mm512_setzero_ps(); N];
        for n in 0..N {
            prod[n] = _mm512_mul_ps(wm, _mm512_loadu_ps(a[n].meta.as_ptr().add(16 * s)));
            extra[n] = _mm512_add_ps(extra[n], prod[n]);
        }
        for (pair, pick) in pick.iter().enumerate() {
            // Low nibbles (sub-block 2·pair) in the lower half, high nibbles (2·pair + 1)
            // in the upper: one broadcast load, one shift, one mask.
            let v = _mm512_broadcast_i64x4(_mm256_loadu_si256(b.add(16 + 32 * pair).cast()));
            let q = _mm512_and_si512(_mm512_srlv_epi64(v, nibble_shift), low);
            let p = 4 * s + pair;
            for n in 0..N {
                let scale = _mm512_permutexvar_ps(*pick, prod[n]);
                let dot = two_level_dot(q, &a[n], p);
                acc[n] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc[n]);
            }
        }
    }
    // The minimum terms are the odd lanes of `extra`.
    let odd: __mmask16 = 0xAAAA;
    let mut out = [0f32; N];
    for n in 0..N {
        out[n] = _mm512_reduce_add_ps(acc[n]) + _mm512_mask_reduce_add_ps(odd, extra[n]);
    }
    out
}

/// One Q6_K row against `N` activation rows. Q6_K's codes are `q − 32` with a scale per
/// 16 values: per super-block, one product gives each group's scale times its activation
/// block's scale, and the −32 is applied once per super-block through the activations'
/// group sums, so that each 64 values cost one scale pick and the integer dots.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub unsafe fn q6k_rows<const N: usize>(w: &[u8], a: [Q8Row<'_>; N]) -> [f32; N] {
    let mut acc = [_mm512_setzero_ps(); N];
    let mut offset = [_mm512_setzero_ps(); N];
    let low_mask = _mm512_set1_epi8(0x0F);
    let high_mask = _mm512_set1_epi8(0x30);
    // Bits 0–1 of the high bits to bits 4–5 for the first 32 codes, bits 2–3 for the next
    // (shifts left by 4 and 2); bits 4–5 and 6–7 for the second pair (right by 0 and 2).
    let shift_first = _mm512_set_epi64(2, 2, 2, 2, 4, 4, 4, 4);
    let shift_second = _mm512_set_epi64(2, 2, 2, 2, 0, 0, 0, 0);
    // Group g's activation scale is block g / 2's, lane 2 · (g / 2) of the meta.
    let block_of_group = _mm512_set_epi32(14, 14, 12, 12, 10, 10, 8, 8, 6, 6, 4, 4, 2, 2, 0, 0);
    // The four groups of each 64 values, four lanes each.
    let groups = |first: i32| {
        _mm512_set_epi32(
            first + 3,
            first + 3,
            first + 3,
            first + 3,
            first + 2,
            first + 2,
            first + 2,
            first + 2,
            first + 1,
            first + 1,
            first + 1,
            first + 1,
            first,
            first,
            first,
            first,
        )
    };
    let pick = [groups(0), groups(4), groups(8), groups(12)];
    for s in 0..w.len() / 210 {
        let b = w.as_ptr().add(210 * s);
        let d = f16_at(b.add(208));
        let sc = _mm512_mul_ps(
            _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128(b.add(192).cast()))),
            _mm512_set1_ps(d),
        );
        let mut scale = [_mm512_setzero_ps(); N];
        for n in 0..N {
            let meta = _mm512_loadu_ps(a[n].meta.as_ptr().add(16 * s));
            scale[n] = _mm512_mul_ps(sc, _mm512_permutexvar_ps(block_of_group, meta));
            let sums = _mm512_loadu_ps(a[n].group_sums.as_ptr().add(16 * s));
            offset[n] = _mm512_fmadd_ps(sc, sums, offset[n]);
        }
        for half in 0..2 {
            // Both 32-byte rows of low bits in one vector, the 32 bytes of high bits in
            // both halves; each code is `low nibble | (2 high bits) << 4`, the high bits
            // moved to bits 4–5 by one 64-bit shift per half and merged by one select.
            let l = _mm512_loadu_si512(b.add(64 * half).cast());
            let h = _mm512_broadcast_i64x4(_mm256_loadu_si256(b.add(128 + 32 * half).cast()));
            let merge = |lowbits: __m512i, highbits: __m512i| {
                _mm512_ternarylogic_epi32::<0xD8>(
                    _mm512_and_si512(highbits, high_mask),
                    lowbits,
                    low_mask,
                )
            };
            let pairs = [
                merge(l, _mm512_sllv_epi64(h, shift_first)),
                merge(
                    _mm512_srli_epi64::<4>(l),
                    _mm512_srlv_epi64(h, shift_second),
                ),
            ];
            for (k, q) in pairs.into_iter().enumerate() {
                // Groups 8·half + 4k .. +4.
                let pick = pick[2 * half + k];
                let p = 4 * s + 2 * half + k;
                for n in 0..N {
                    let lane_scale = _mm512_permutexvar_ps(pick, scale[n]);
                    let dot = two_level_dot(q, &a[n], p);
                    acc[n] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), lane_scale, acc[n]);
                }
            }
        }
    }
    let mut out = [0f32; N];
    for n in 0..N {
        out[n] = _mm512_reduce_add_ps(acc[n]) - 32.0 * _mm512_reduce_add_ps(offset[n]);
    }
    out
}
