//! The integer dot products of a weight row with Q8 activations in SIMD: an AVX2 kernel
//! per 32-value block type (`vpmaddubsw`, one block per step, as llama.cpp's) and an
//! AVX-512 VNNI one (`vpdpbusd` over two blocks per 512-bit step, the fifth bits of Q5
//! types expanded from a mask register), plus 16-bit float rows against f32 activations.
//!
//! Written here because candle's CPU kernels for Q4_1, Q5_0 and Q5_1 are scalar and none
//! of them uses AVX-512. Every kernel computes the same integer sums as
//! [`super::dot_scalar`]: the unsigned weight codes times the int8 activations, with a
//! block's offset (−8, −16, a minimum, or Q8_0's +128 bias) applied once per block through
//! the activation block's exact sum.
//!
//! # Safety
//! Each function requires the CPU features of its `target_feature` attribute (the
//! dispatcher checks them once, [`super::isa`]) and a weight row `w` of exactly
//! `a.len()` blocks of its type (or `x.len()` values).

#![allow(clippy::missing_safety_doc)]

use std::arch::x86_64::*;

use super::activation::Q8Block;

#[inline]
#[target_feature(enable = "f16c")]
unsafe fn f16_at(p: *const u8) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
        p.cast::<u16>().read_unaligned() as i32,
    )))
}

#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum256(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// 16 bytes of packed nibbles as 32 bytes: low nibbles (values 0..16), then high ones.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn nibbles256(p: *const u8) -> __m256i {
    let v = _mm_loadu_si128(p.cast());
    _mm256_and_si256(
        _mm256_set_m128i(_mm_srli_epi16(v, 4), v),
        _mm256_set1_epi8(0x0F),
    )
}

/// Bit j of `qh` as 0x10 in byte j (llama.cpp's `bytes_from_bits_32`, masked).
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn fifth_bits256(qh: u32) -> __m256i {
    let shuffle = _mm256_set_epi64x(
        0x0303_0303_0303_0303,
        0x0202_0202_0202_0202,
        0x0101_0101_0101_0101,
        0,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(qh as i32), shuffle);
    let all_but_own_bit = _mm256_set1_epi64x(0x7fbf_dfef_f7fb_fdfe_u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_or_si256(bytes, all_but_own_bit), _mm256_set1_epi8(-1));
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// `Σ q · y` of 32 unsigned codes and 32 int8 activations, as eight i32 lanes in f32.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn udot256(q: __m256i, y: *const i8) -> __m256 {
    let y = _mm256_loadu_si256(y.cast());
    let pairs = _mm256_maddubs_epi16(q, y);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// The AVX2 kernel of a block type: `$codes(block pointer)` gives its 32 unsigned codes,
/// `$extra(d_w · d_a, m_w · d_a, Σ q_a)` the block's offset term.
macro_rules! avx2_kernel {
    ($name:ident, $size:expr, |$b:ident| $codes:expr, $scales:expr) => {
        #[target_feature(enable = "avx2,fma,f16c")]
        pub unsafe fn $name(w: &[u8], a: &[Q8Block]) -> f32 {
            let mut acc = _mm256_setzero_ps();
            let mut extra = 0f32;
            let wp = w.as_ptr();
            for (i, ab) in a.iter().enumerate() {
                let $b = wp.add(i * $size);
                let (d, offset) = $scales($b, ab);
                extra += offset;
                let q = $codes;
                acc = _mm256_fmadd_ps(_mm256_set1_ps(d), udot256(q, ab.qs.as_ptr()), acc);
            }
            hsum256(acc) + extra
        }
    };
}

// Scales of each type: `(d_w · d_a, offset term of the block)`.
#[inline]
#[target_feature(enable = "f16c")]
unsafe fn scales_q4_0(b: *const u8, a: &Q8Block) -> (f32, f32) {
    let d = f16_at(b) * a.d;
    (d, -8.0 * d * a.sum as f32)
}
#[inline]
#[target_feature(enable = "f16c")]
unsafe fn scales_q4_1(b: *const u8, a: &Q8Block) -> (f32, f32) {
    (f16_at(b) * a.d, f16_at(b.add(2)) * a.d * a.sum as f32)
}
#[inline]
#[target_feature(enable = "f16c")]
unsafe fn scales_q5_0(b: *const u8, a: &Q8Block) -> (f32, f32) {
    let d = f16_at(b) * a.d;
    (d, -16.0 * d * a.sum as f32)
}
#[inline]
#[target_feature(enable = "f16c")]
unsafe fn scales_q8_0(b: *const u8, a: &Q8Block) -> (f32, f32) {
    let d = f16_at(b) * a.d;
    (d, -128.0 * d * a.sum as f32)
}
#[inline]
unsafe fn qh_at(b: *const u8) -> u32 {
    b.cast::<u32>().read_unaligned()
}

avx2_kernel!(q4_0_avx2, 18, |b| nibbles256(b.add(2)), scales_q4_0);
avx2_kernel!(q4_1_avx2, 20, |b| nibbles256(b.add(4)), scales_q4_1);
avx2_kernel!(
    q5_0_avx2,
    22,
    |b| _mm256_or_si256(nibbles256(b.add(6)), fifth_bits256(qh_at(b.add(2)))),
    scales_q5_0
);
avx2_kernel!(
    q5_1_avx2,
    24,
    |b| _mm256_or_si256(nibbles256(b.add(8)), fifth_bits256(qh_at(b.add(4)))),
    scales_q4_1
);
// Q8_0's signed codes, biased by +128 into unsigned ones. `vpmaddubsw` would saturate on
// pairs of 255 · 127, so the AVX2 kernel takes the sign trick instead.
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn q8_0_avx2(w: &[u8], a: &[Q8Block]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let wp = w.as_ptr();
    for (i, ab) in a.iter().enumerate() {
        let b = wp.add(i * 34);
        let d = f16_at(b) * ab.d;
        let q = _mm256_loadu_si256(b.add(2).cast());
        let y = _mm256_loadu_si256(ab.qs.as_ptr().cast());
        let pairs = _mm256_maddubs_epi16(_mm256_sign_epi8(q, q), _mm256_sign_epi8(y, q));
        let dot = _mm256_cvtepi32_ps(_mm256_madd_epi16(pairs, _mm256_set1_epi16(1)));
        acc = _mm256_fmadd_ps(_mm256_set1_ps(d), dot, acc);
    }
    hsum256(acc)
}

/// Two 256-bit halves as one 512-bit vector.
#[inline]
#[target_feature(enable = "avx512f")]
unsafe fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1)
}

/// The AVX-512 VNNI kernel of a block type, two blocks per step; an odd last block goes
/// through the type's AVX2 kernel.
macro_rules! vnni_kernel {
    ($name:ident, $avx2:ident, $size:expr, |$b0:ident, $b1:ident| $codes:expr, $scales:expr) => {
        #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
        pub unsafe fn $name(w: &[u8], a: &[Q8Block]) -> f32 {
            let mut acc = _mm512_setzero_ps();
            let mut extra = 0f32;
            let wp = w.as_ptr();
            let pairs = a.len() / 2;
            for p in 0..pairs {
                let (a0, a1) = (&a[2 * p], &a[2 * p + 1]);
                let $b0 = wp.add(2 * p * $size);
                let $b1 = $b0.add($size);
                let (d0, e0) = $scales($b0, a0);
                let (d1, e1) = $scales($b1, a1);
                extra += e0 + e1;
                let q: __m512i = $codes;
                let y = join(
                    _mm256_loadu_si256(a0.qs.as_ptr().cast()),
                    _mm256_loadu_si256(a1.qs.as_ptr().cast()),
                );
                let dot = _mm512_dpbusd_epi32(_mm512_setzero_si512(), q, y);
                let scale = _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(d0), _mm512_set1_ps(d1));
                acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, acc);
            }
            let mut total = _mm512_reduce_add_ps(acc) + extra;
            if a.len() % 2 == 1 {
                let last = a.len() - 1;
                total += $avx2(&w[last * $size..], &a[last..]);
            }
            total
        }
    };
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx2")]
unsafe fn nibbles512(p0: *const u8, p1: *const u8) -> __m512i {
    join(nibbles256(p0), nibbles256(p1))
}

/// The fifth bits of two blocks as 0x10 bytes, straight from a mask register.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn fifth_bits512(qh0: u32, qh1: u32) -> __m512i {
    _mm512_maskz_set1_epi8(qh0 as u64 | (qh1 as u64) << 32, 0x10)
}

vnni_kernel!(
    q4_0_vnni,
    q4_0_avx2,
    18,
    |b0, b1| nibbles512(b0.add(2), b1.add(2)),
    scales_q4_0
);
vnni_kernel!(
    q4_1_vnni,
    q4_1_avx2,
    20,
    |b0, b1| nibbles512(b0.add(4), b1.add(4)),
    scales_q4_1
);
vnni_kernel!(
    q5_0_vnni,
    q5_0_avx2,
    22,
    |b0, b1| _mm512_or_si512(
        nibbles512(b0.add(6), b1.add(6)),
        fifth_bits512(qh_at(b0.add(2)), qh_at(b1.add(2)))
    ),
    scales_q5_0
);
vnni_kernel!(
    q5_1_vnni,
    q5_1_avx2,
    24,
    |b0, b1| _mm512_or_si512(
        nibbles512(b0.add(8), b1.add(8)),
        fifth_bits512(qh_at(b0.add(4)), qh_at(b1.add(4)))
    ),
    scales_q4_1
);
vnni_kernel!(
    q8_0_vnni,
    q8_0_avx2,
    34,
    |b0, b1| _mm512_xor_si512(
        join(
            _mm256_loadu_si256(b0.add(2).cast()),
            _mm256_loadu_si256(b1.add(2).cast())
        ),
        _mm512_set1_epi8(-128)
    ),
    scales_q8_0
);

/// `w · x` for a row of f16 (`w` holds `x.len()` values).
#[target_feature(enable = "avx2,fma,f16c")]
pub unsafe fn f16_avx2(w: &[u8], x: &[f32]) -> f32 {
    let n = x.len();
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        let w0 = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(2 * i).cast()));
        let w1 = _mm256_cvtph_ps(_mm_loadu_si128(wp.add(2 * i + 16).cast()));
        acc0 = _mm256_fmadd_ps(w0, _mm256_loadu_ps(xp.add(i)), acc0);
        acc1 = _mm256_fmadd_ps(w1, _mm256_loadu_ps(xp.add(i + 8)), acc1);
        i += 16;
    }
    let mut total = hsum256(_mm256_add_ps(acc0, acc1));
    while i < n {
        total += f16_at(wp.add(2 * i)) * x[i];
        i += 1;
    }
    total
}

/// Eight bf16 values at `p` as f32.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn widen(p: *const u8) -> __m256 {
    _mm256_castsi256_ps(_mm256_slli_epi32(
        _mm256_cvtepu16_epi32(_mm_loadu_si128(p.cast())),
        16,
    ))
}

/// `w · x` for a row of bf16 (`w` holds `x.len()` values).
#[target_feature(enable = "avx2,fma")]
pub unsafe fn bf16_avx2(w: &[u8], x: &[f32]) -> f32 {
    let n = x.len();
    let (wp, xp) = (w.as_ptr(), x.as_ptr());
    let (mut acc0, mut acc1) = (_mm256_setzero_ps(), _mm256_setzero_ps());
    let mut i = 0;
    while i + 16 <= n {
        acc0 = _mm256_fmadd_ps(widen(wp.add(2 * i)), _mm256_loadu_ps(xp.add(i)), acc0);
        acc1 = _mm256_fmadd_ps(widen(wp.add(2 * i + 16)), _mm256_loadu_ps(xp.add(i + 8)), acc1);
        i += 16;
    }
    let mut total = hsum256(_mm256_add_ps(acc0, acc1));
    while i < n {
        let bits = u16::from_le_bytes([w[2 * i], w[2 * i + 1]]);
        total += half::bf16::from_bits(bits).to_f32() * x[i];
        i += 1;
    }
    total
}
