//! The integer dot products of a weight row with Q8 activations in SIMD: an AVX2 kernel
//! per 32-value block type (weight codes widened to 16 bits against the activations'
//! 16-bit codes in `vpmaddwd`, two blocks per step) and an
//! AVX-512 VNNI one (`vpdpbusd` over two blocks per 512-bit step, the two blocks' scales
//! and offsets converted and multiplied as one vector, the fifth bits of the Q5 types
//! expanded from a mask register), plus 16-bit float rows against f32 activations.
//!
//! Written here because candle's CPU kernels for Q4_1, Q5_0 and Q5_1 are scalar and none
//! of them uses AVX-512. Every kernel computes the sums of [`super::dot_scalar`]: unsigned
//! weight codes times int8 activations per block, scaled by `d_w · d_a`, plus the block's
//! offset (a minimum, or −8, −16, or Q8_0's +128 bias) times `d_a · Σ q`.
//!
//! # Safety
//! Each function requires the CPU features of its `target_feature` attribute (the
//! dispatcher checks them once, [`super::isa`]), a weight row `w` of whole blocks, and
//! activation codes `qs` and `[d, d · Σ q]` pairs `meta` for the same number of blocks
//! (or `x.len()` values for the float rows).

#![allow(clippy::missing_safety_doc)]

use std::arch::x86_64::*;

use super::activation::Q8Row;
use super::dot_scalar;
use super::format::StoredType;

/// The f16 at `p` as f32.
#[inline]
#[target_feature(enable = "f16c")]
pub(super) unsafe fn f16_at(p: *const u8) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(
        p.cast::<u16>().read_unaligned() as i32,
    )))
}

#[inline]
unsafe fn u16_at(p: *const u8) -> u32 {
    p.cast::<u16>().read_unaligned() as u32
}

#[inline]
unsafe fn u32_at(p: *const u8) -> u32 {
    p.cast::<u32>().read_unaligned()
}

/// The sum of the eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn hsum256(v: __m256) -> f32 {
    hsum128(_mm_add_ps(
        _mm256_castps256_ps128(v),
        _mm256_extractf128_ps(v, 1),
    ))
}

/// The sum of the four lanes.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn hsum128(s: __m128) -> f32 {
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    _mm_cvtss_f32(_mm_add_ss(s, _mm_movehdup_ps(s)))
}

/// Byte offsets of a type's block layout: block size, codes, fifth bits, and whether the
/// second f16 is a minimum (else the offset is `coefficient · d`).
struct Layout {
    size: usize,
    codes: usize,
    qh: Option<usize>,
    has_min: bool,
    coefficient: f32,
}

const fn layout(ty: StoredType) -> Layout {
    match ty {
        StoredType::Q4_0 => Layout {
            size: 18,
            codes: 2,
            qh: None,
            has_min: false,
            coefficient: -8.0,
        },
        StoredType::Q4_1 => Layout {
            size: 20,
            codes: 4,
            qh: None,
            has_min: true,
            coefficient: 0.0,
        },
        StoredType::Q5_0 => Layout {
            size: 22,
            codes: 6,
            qh: Some(2),
            has_min: false,
            coefficient: -16.0,
        },
        StoredType::Q5_1 => Layout {
            size: 24,
            codes: 8,
            qh: Some(4),
            has_min: true,
            coefficient: 0.0,
        },
        // Q8_0's signed codes: the AVX2 kernel multiplies them with the sign trick (no
        // offset); the VNNI one biases them by +128, undone by −128 · d_a · Σ q.
        _ => Layout {
            size: 34,
            codes: 2,
            qh: None,
            has_min: false,
            coefficient: -128.0,
        },
    }
}

/// The AVX2 kernel of a 32-value type, two blocks per step, both activation levels.
/// Each block's integer dot stays in eight lanes until one horizontal add folds the
/// pair's into four lanes each, so that the pair's scales and offset terms come from one
/// conversion and one product of `[d, m]` pairs (no scalar work per block, no chain of
/// scalar additions through the row).
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_avx2<const TY: u8>(w: &[u8], a: Q8Row<'_>) -> f32 {
    let ty = type_of(TY);
    let l = layout(ty);
    let q8_0 = ty == StoredType::Q8_0;
    // Q8_0's signed codes go through the sign trick, which needs no offset term.
    let coefficient = if q8_0 { 0.0 } else { l.coefficient };
    let mut acc = _mm256_setzero_ps();
    let mut extra = _mm_setzero_ps();
    for p in 0..a.meta.len() / 4 {
        let b0 = w.as_ptr().add(2 * p * l.size);
        let b1 = b0.add(l.size);
        // [s0, e0, s1, e1]: each block's scale and offset term.
        let t = _mm_mul_ps(
            pair_meta(b0, b1, &l, coefficient),
            _mm_loadu_ps(a.meta.as_ptr().add(4 * p)),
        );
        extra = _mm_add_ps(extra, t);
        let d0 = block_dot_avx2(b0, &l, q8_0, a, 2 * p);
        let d1 = block_dot_avx2(b1, &l, q8_0, a, 2 * p + 1);
        // [b0, b0, b1, b1 | b0, b0, b1, b1] against [s0, s0, s1, s1 | s0, s0, s1, s1].
        let sums = _mm256_hadd_epi32(d0, d1);
        let s = _mm_shuffle_ps::<0b10_10_00_00>(t, t);
        acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sums), _mm256_set_m128(s, s), acc);
    }
    let mut e = [0f32; 4];
    _mm_storeu_ps(e.as_mut_ptr(), extra);
    hsum256(acc) + e[1] + e[3] + odd_last_block(ty, w, a)
}

/// `256 · (w · q₁) + w · q₂` of block `i` (at `b`) in eight lanes of i32: the weight
/// codes widened to 16 bits (values 0–15 and 16–31 of the block in two vectors) times the
/// activations' 16-bit codes, one `vpmaddwd` per sixteen values.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn block_dot_avx2(b: *const u8, l: &Layout, q8_0: bool, a: Q8Row<'_>, i: usize) -> __m256i {
    let y = a.qs16.as_ptr().add(32 * i);
    let (w_lo, w_hi) = if q8_0 {
        (
            _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(2).cast())),
            _mm256_cvtepi8_epi16(_mm_loadu_si128(b.add(18).cast())),
        )
    } else {
        // Byte j holds value j in its low nibble and value j + 16 in its high one.
        let v = _mm256_cvtepu8_epi16(_mm_loadu_si128(b.add(l.codes).cast()));
        let lo = _mm256_and_si256(v, _mm256_set1_epi16(0x0F));
        let hi = _mm256_srli_epi16::<4>(v);
        match l.qh {
            Some(h) => {
                let qh = u32_at(b.add(h));
                (
                    _mm256_or_si256(lo, fifth_bits16(qh)),
                    _mm256_or_si256(hi, fifth_bits16(qh >> 16)),
                )
            }
            None => (lo, hi),
        }
    };
    _mm256_add_epi32(
        _mm256_madd_epi16(w_lo, _mm256_loadu_si256(y.cast())),
        _mm256_madd_epi16(w_hi, _mm256_loadu_si256(y.add(16).cast())),
    )
}

/// Bit j of `bits` (j < 16) as 0x10 in 16-bit lane j: the fifth bits of a Q5 block's
/// sixteen values.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn fifth_bits16(bits: u32) -> __m256i {
    let own = _mm256_setr_epi16(
        1,
        2,
        4,
        8,
        16,
        32,
        64,
        128,
        256,
        512,
        1024,
        2048,
        4096,
        8192,
        16384,
        i16::MIN,
    );
    let set = _mm256_cmpeq_epi16(
        _mm256_and_si256(_mm256_set1_epi16(bits as u16 as i16), own),
        own,
    );
    _mm256_and_si256(set, _mm256_set1_epi16(0x10))
}

/// A pair of blocks' `[d0, c0, d1, c1]`, what multiplies the activations' `[d, d · Σ q]`:
/// the minimum where the type has one, else `coefficient · d`.
#[inline]
#[target_feature(enable = "f16c")]
unsafe fn pair_meta(b0: *const u8, b1: *const u8, l: &Layout, coefficient: f32) -> __m128 {
    if l.has_min {
        _mm_cvtph_ps(_mm_set_epi32(0, 0, u32_at(b1) as i32, u32_at(b0) as i32))
    } else {
        let dup = |b: *const u8| (u16_at(b) * 0x1_0001) as i32;
        _mm_mul_ps(
            _mm_cvtph_ps(_mm_set_epi32(0, 0, dup(b1), dup(b0))),
            _mm_set_ps(coefficient, 1.0, coefficient, 1.0),
        )
    }
}

/// The last block of a row of an odd number of blocks (which the pair kernels leave), by
/// the scalar reference; 0 for an even number.
fn odd_last_block(ty: StoredType, w: &[u8], a: Q8Row<'_>) -> f32 {
    let blocks = a.meta.len() / 2;
    if blocks.is_multiple_of(2) {
        return 0.0;
    }
    let last = blocks - 1;
    let tail = Q8Row {
        qs: &a.qs[32 * last..],
        qs2: &a.qs2[32 * last..],
        qs16: &a.qs16[32 * last..],
        meta: &a.meta[2 * last..],
        group_sums: &a.group_sums[2 * last..],
    };
    dot_scalar::dot_q8(ty, &w[last * layout(ty).size..], tail)
}

/// A pair of weight blocks decoded for the VNNI kernels: the 64 unsigned codes and the
/// `[d0, m0, d1, m1]` that multiply the activation meta (the offset coefficient times `d`
/// standing in for `m` where the type has no minimum).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,f16c")]
unsafe fn decode_pair(b0: *const u8, l: &Layout, q8_0: bool) -> (__m512i, __m128) {
    let b1 = b0.add(l.size);
    let wmeta = pair_meta(b0, b1, l, l.coefficient);
    let q = if q8_0 {
        let lo = _mm256_loadu_si256(b0.add(2).cast());
        let hi = _mm256_loadu_si256(b1.add(2).cast());
        _mm512_xor_si512(
            _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1),
            _mm512_set1_epi8(-128),
        )
    } else {
        let v0 = _mm_loadu_si128(b0.add(l.codes).cast());
        let v1 = _mm_loadu_si128(b1.add(l.codes).cast());
        let lo = _mm256_set_m128i(_mm_srli_epi16(v0, 4), v0);
        let hi = _mm256_set_m128i(_mm_srli_epi16(v1, 4), v1);
        let mut q = _mm512_and_si512(
            _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1),
            _mm512_set1_epi8(0x0F),
        );
        if let Some(h) = l.qh {
            let bits = u32_at(b0.add(h)) as u64 | (u32_at(b1.add(h)) as u64) << 32;
            q = _mm512_or_si512(q, _mm512_maskz_set1_epi8(bits, 0x10));
        }
        q
    };
    (q, wmeta)
}

/// Accumulates one activation row's product with a decoded weight pair `p` into `acc`:
/// `256 · (w · q₁) + w · q₂` per block in i32 (two `vpdpbusd`), scaled per block, and the
/// blocks' offset terms into lanes 1 and 3 of `extra`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma")]
unsafe fn accumulate_pair(
    q: __m512i,
    wmeta: __m128,
    a: Q8Row<'_>,
    p: usize,
    acc: &mut __m512,
    extra: &mut __m128,
) {
    // [s0, e0, s1, e1]: each block's scale and offset term.
    let t = _mm_mul_ps(wmeta, _mm_loadu_ps(a.meta.as_ptr().add(4 * p)));
    *extra = _mm_add_ps(*extra, t);
    let spread = _mm512_set_epi32(2, 2, 2, 2, 2, 2, 2, 2, 0, 0, 0, 0, 0, 0, 0, 0);
    let scale = _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(t));
    let y1 = _mm512_loadu_si512(a.qs.as_ptr().add(64 * p).cast());
    let y2 = _mm512_loadu_si512(a.qs2.as_ptr().add(64 * p).cast());
    let dot = _mm512_slli_epi32(_mm512_dpbusd_epi32(_mm512_setzero_si512(), q, y1), 8);
    let dot = _mm512_dpbusd_epi32(dot, q, y2);
    *acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(dot), scale, *acc);
}

/// The total of [`accumulate_pair`]'s sums, plus an odd last block through the scalar
/// reference.
#[inline]
#[target_feature(enable = "avx512f,avx2")]
unsafe fn finish(ty: StoredType, acc: __m512, extra: __m128, w: &[u8], a: Q8Row<'_>) -> f32 {
    let mut e = [0f32; 4];
    _mm_storeu_ps(e.as_mut_ptr(), extra);
    _mm512_reduce_add_ps(acc) + e[1] + e[3] + odd_last_block(ty, w, a)
}

/// The AVX-512 VNNI kernel of a 32-value type, two blocks per step.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_vnni<const TY: u8>(w: &[u8], a: Q8Row<'_>) -> f32 {
    let ty = type_of(TY);
    let l = layout(ty);
    let mut acc = _mm512_setzero_ps();
    let mut extra = _mm_setzero_ps();
    for p in 0..a.meta.len() / 4 {
        let (q, wmeta) = decode_pair(w.as_ptr().add(2 * p * l.size), &l, ty == StoredType::Q8_0);
        accumulate_pair(q, wmeta, a, p, &mut acc, &mut extra);
    }
    finish(ty, acc, extra, w, a)
}

/// [`dot_vnni`] for one weight row against `N` activation rows at once: each pair of
/// weight blocks is decoded once and multiplied with every row (a prompt's prefill).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
unsafe fn dot_vnni_rows<const TY: u8, const N: usize>(w: &[u8], a: [Q8Row<'_>; N]) -> [f32; N] {
    let ty = type_of(TY);
    let l = layout(ty);
    let mut acc = [_mm512_setzero_ps(); N];
    let mut extra = [_mm_setzero_ps(); N];
    for p in 0..a[0].meta.len() / 4 {
        let (q, wmeta) = decode_pair(w.as_ptr().add(2 * p * l.size), &l, ty == StoredType::Q8_0);
        for n in 0..N {
            accumulate_pair(q, wmeta, a[n], p, &mut acc[n], &mut extra[n]);
        }
    }
    let mut out = [0f32; N];
    for n in 0..N {
        out[n] = finish(ty, acc[n], extra[n], w, a[n]);
    }
    out
}

const fn type_of(tag: u8) -> StoredType {
    match tag {
        0 => StoredType::Q4_0,
        1 => StoredType::Q4_1,
        2 => StoredType::Q5_0,
        3 => StoredType::Q5_1,
        _ => StoredType::Q8_0,
    }
}

/// A kernel of the 32-value types: `(weight row, activation row) -> dot`.
pub type Q8Dot = unsafe fn(&[u8], Q8Row<'_>) -> f32;

/// The AVX-512 VNNI kernel of a K-quant against Q8 activations, if it has one.
pub fn kquant_kernel(ty: StoredType) -> Option<Q8Dot> {
    use super::dot_kquant_x86::{q4k_rows, q6k_rows};
    unsafe fn one<const T: u8>(w: &[u8], a: Q8Row<'_>) -> f32 {
        // SAFETY: forwarded from the caller's promise (AVX-512 VNNI present, whole blocks).
        unsafe {
            if T == 0 {
                q4k_rows::<1>(w, [a])[0]
            } else {
                q6k_rows::<1>(w, [a])[0]
            }
        }
    }
    Some(match ty {
        StoredType::Q4K => one::<0>,
        StoredType::Q6K => one::<1>,
        _ => return None,
    })
}

/// The AVX2 and AVX-512 VNNI kernels of `ty`, if it is a 32-value type.
pub fn q8_kernels(ty: StoredType) -> Option<(Q8Dot, Q8Dot)> {
    Some(match ty {
        StoredType::Q4_0 => (dot_avx2::<0>, dot_vnni::<0>),
        StoredType::Q4_1 => (dot_avx2::<1>, dot_vnni::<1>),
        StoredType::Q5_0 => (dot_avx2::<2>, dot_vnni::<2>),
        StoredType::Q5_1 => (dot_avx2::<3>, dot_vnni::<3>),
        StoredType::Q8_0 => (dot_avx2::<4>, dot_vnni::<4>),
        _ => return None,
    })
}

/// A kernel of one weight row against four activation rows.
pub type Q8Dot4 = unsafe fn(&[u8], [Q8Row<'_>; 4]) -> [f32; 4];

/// The four-row VNNI kernel of `ty`, if it has one (the 32-value types, Q4_K, Q6_K).
pub fn q8_kernel4(ty: StoredType) -> Option<Q8Dot4> {
    use super::dot_kquant_x86::{q4k_rows, q6k_rows};
    Some(match ty {
        StoredType::Q4K => q4k_rows::<4>,
        StoredType::Q6K => q6k_rows::<4>,
        StoredType::Q4_0 => dot_vnni_rows::<0, 4>,
        StoredType::Q4_1 => dot_vnni_rows::<1, 4>,
        StoredType::Q5_0 => dot_vnni_rows::<2, 4>,
        StoredType::Q5_1 => dot_vnni_rows::<3, 4>,
        StoredType::Q8_0 => dot_vnni_rows::<4, 4>,
        _ => return None,
    })
}

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
        acc1 = _mm256_fmadd_ps(
            widen(wp.add(2 * i + 16)),
            _mm256_loadu_ps(xp.add(i + 8)),
            acc1,
        );
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
