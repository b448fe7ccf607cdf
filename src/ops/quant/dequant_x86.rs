//! AVX2 dequantization of the block types that training panels and prompt products unpack
//! most (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K), to the same f32 values as candle's
//! `to_float`, bit for bit (each value is `q · d`, `q · d + m` or `(d · sc) · q`, multiply
//! then add, as there).
//!
//! Written here because candle's `to_float` is scalar: it was 3–5 % of a training step on
//! a quantized base and most of a prompt's time through dequantized panels
//! (`examples/bench_quant_matvec`). The other K-quants stay on candle's.
//!
//! # Safety
//! The functions need AVX2 and F16C, `bytes` whole blocks of the type and `out` as many
//! values as the blocks hold.

#![allow(clippy::missing_safety_doc)]

use std::arch::x86_64::*;

use super::dot_x86::f16_at;
use super::format::StoredType;

/// Dequantizes `bytes` into `out` when this module has `ty`'s kernel; `false` otherwise
/// (the caller then uses candle's).
pub fn dequantize(ty: StoredType, bytes: &[u8], out: &mut [f32]) -> bool {
    if !has_avx2() {
        return false;
    }
    let blocks = bytes.len() / ty.block_bytes().max(1);
    if out.len() != blocks * ty.block_elems() || bytes.len() != blocks * ty.block_bytes() {
        return false;
    }
    let (b, o) = (bytes.as_ptr(), out.as_mut_ptr());
    // SAFETY: AVX2 and F16C are present (checked above), `bytes` holds `blocks` whole
    // blocks of `ty` and `out` their values (checked above).
    unsafe {
        match ty {
            StoredType::Q4_0 => q4_0(b, o, blocks),
            StoredType::Q4_1 => q4_1(b, o, blocks),
            StoredType::Q5_0 => q5::<false>(b, o, blocks),
            StoredType::Q5_1 => q5::<true>(b, o, blocks),
            StoredType::Q8_0 => q8_0(b, o, blocks),
            StoredType::Q4K => q4k_q5k::<false>(b, o, blocks),
            StoredType::Q5K => q4k_q5k::<true>(b, o, blocks),
            StoredType::Q6K => q6k(b, o, blocks),
            _ => return false,
        }
    }
    true
}

fn has_avx2() -> bool {
    use std::sync::OnceLock;
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("f16c")
    })
}

/// Writes the 16 signed bytes of `v` as `v · scale (+ bias)` to `out[..16]`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn emit16<const BIAS: bool>(out: *mut f32, v: __m128i, scale: f32, bias: f32) {
    let s = _mm256_set1_ps(scale);
    let b = _mm256_set1_ps(bias);
    for (half, part) in [v, _mm_srli_si128(v, 8)].into_iter().enumerate() {
        let f = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(part)), s);
        let f = if BIAS { _mm256_add_ps(f, b) } else { f };
        _mm256_storeu_ps(out.add(8 * half), f);
    }
}

/// The low and high nibbles of the 16 bytes at `p`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn nibbles(p: *const u8) -> (__m128i, __m128i) {
    let v = _mm_loadu_si128(p.cast());
    let low = _mm_set1_epi8(0x0F);
    (
        _mm_and_si128(v, low),
        _mm_and_si128(_mm_srli_epi16(v, 4), low),
    )
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn q4_0(b: *const u8, o: *mut f32, blocks: usize) {
    let eight = _mm_set1_epi8(8);
    for i in 0..blocks {
        let (p, out) = (b.add(18 * i), o.add(32 * i));
        let d = f16_at(p);
        let (lo, hi) = nibbles(p.add(2));
        emit16::<false>(out, _mm_sub_epi8(lo, eight), d, 0.0);
        emit16::<false>(out.add(16), _mm_sub_epi8(hi, eight), d, 0.0);
    }
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn q4_1(b: *const u8, o: *mut f32, blocks: usize) {
    for i in 0..blocks {
        let (p, out) = (b.add(20 * i), o.add(32 * i));
        let (d, m) = (f16_at(p), f16_at(p.add(2)));
        let (lo, hi) = nibbles(p.add(4));
        emit16::<true>(out, lo, d, m);
        emit16::<true>(out.add(16), hi, d, m);
    }
}

/// Bit `i` of the 16 bits `bits` as `0x10` in byte `i`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn fifth_bits(bits: u32) -> __m128i {
    let spread = _mm_shuffle_epi8(
        _mm_set1_epi32(bits as i32),
        _mm_set_epi8(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0),
    );
    let select = _mm_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm_cmpeq_epi8(_mm_and_si128(spread, select), select);
    _mm_and_si128(set, _mm_set1_epi8(0x10))
}

/// Q5_0 (`WITH_MIN` false: `(q − 16) · d`) or Q5_1 (`q · d + m`).
#[target_feature(enable = "avx2,f16c")]
unsafe fn q5<const WITH_MIN: bool>(b: *const u8, o: *mut f32, blocks: usize) {
    let size = if WITH_MIN { 24 } else { 22 };
    let sixteen = _mm_set1_epi8(16);
    for i in 0..blocks {
        let (p, out) = (b.add(size * i), o.add(32 * i));
        let d = f16_at(p);
        let (m, rest) = if WITH_MIN {
            (f16_at(p.add(2)), p.add(4))
        } else {
            (0.0, p.add(2))
        };
        let qh = rest.cast::<u32>().read_unaligned();
        let (lo, hi) = nibbles(rest.add(4));
        let lo = _mm_or_si128(lo, fifth_bits(qh & 0xFFFF));
        let hi = _mm_or_si128(hi, fifth_bits(qh >> 16));
        if WITH_MIN {
            emit16::<true>(out, lo, d, m);
            emit16::<true>(out.add(16), hi, d, m);
        } else {
            emit16::<false>(out, _mm_sub_epi8(lo, sixteen), d, 0.0);
            emit16::<false>(out.add(16), _mm_sub_epi8(hi, sixteen), d, 0.0);
        }
    }
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn q8_0(b: *const u8, o: *mut f32, blocks: usize) {
    for i in 0..blocks {
        let (p, out) = (b.add(34 * i), o.add(32 * i));
        let d = f16_at(p);
        emit16::<false>(out, _mm_loadu_si128(p.add(2).cast()), d, 0.0);
        emit16::<false>(out.add(16), _mm_loadu_si128(p.add(18).cast()), d, 0.0);
    }
}

/// Q4_K's 6-bit scale and minimum of sub-block `j` (llama.cpp's `get_scale_min_k4`).
#[inline]
fn scale_min_k4(j: usize, s: &[u8; 12]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Q4_K (`FIFTH` false: nibbles at byte 16) or Q5_K (`FIFTH`: nibbles at byte 48, each
/// with a fifth bit from the 32 bytes at 16, bit `sub` for sub-block `sub`): candle's
/// `d1 · q − m1` with `q` the nibble (plus 16 where the fifth bit is set).
#[target_feature(enable = "avx2,f16c")]
unsafe fn q4k_q5k<const FIFTH: bool>(b: *const u8, o: *mut f32, blocks: usize) {
    let (size, nibbles_at) = if FIFTH { (176, 48) } else { (144, 16) };
    let one = _mm_set1_epi8(1);
    for i in 0..blocks {
        let (p, out) = (b.add(size * i), o.add(256 * i));
        let (d, dmin) = (f16_at(p), f16_at(p.add(2)));
        let scales: [u8; 12] = p.add(4).cast::<[u8; 12]>().read_unaligned();
        for j in 0..4 {
            let q = p.add(nibbles_at + 32 * j);
            for (k, sub) in [2 * j, 2 * j + 1].into_iter().enumerate() {
                let (sc, m) = scale_min_k4(sub, &scales);
                let (d1, m1) = (d * sc as f32, dmin * m as f32);
                let dst = out.add(64 * j + 32 * k);
                for h in 0..2 {
                    let (lo, hi) = nibbles(q.add(16 * h));
                    let mut v = if k == 0 { lo } else { hi };
                    if FIFTH {
                        let high = _mm_loadu_si128(p.add(16 + 16 * h).cast());
                        let shift = _mm_cvtsi32_si128(sub as i32);
                        let bit = _mm_and_si128(_mm_srl_epi16(high, shift), one);
                        v = _mm_or_si128(v, _mm_slli_epi16(bit, 4));
                    }
                    // `d1 · q − m1`, as `d1 · q + (−m1)`: the same value.
                    emit16::<true>(dst.add(16 * h), v, d1, -m1);
                }
            }
        }
    }
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn q6k(b: *const u8, o: *mut f32, blocks: usize) {
    let low = _mm_set1_epi8(0x0F);
    let two = _mm_set1_epi8(0x03);
    let bias = _mm_set1_epi8(32);
    for i in 0..blocks {
        let (p, out) = (b.add(210 * i), o.add(256 * i));
        let d = f16_at(p.add(208));
        let scales = p.add(192).cast::<i8>();
        for n in 0..2 {
            let (ql, qh, sc) = (p.add(64 * n), p.add(128 + 32 * n), scales.add(8 * n));
            let dst = out.add(128 * n);
            for half in 0..2 {
                let l0 = _mm_loadu_si128(ql.add(16 * half).cast());
                let l1 = _mm_loadu_si128(ql.add(32 + 16 * half).cast());
                let h = _mm_loadu_si128(qh.add(16 * half).cast());
                // The two high bits of each value, in place (bits 4 and 5).
                let hb = [
                    _mm_slli_epi16(_mm_and_si128(h, two), 4),
                    _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(h, 2), two), 4),
                    _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(h, 4), two), 4),
                    _mm_slli_epi16(_mm_and_si128(_mm_srli_epi16(h, 6), two), 4),
                ];
                let q = [
                    _mm_or_si128(_mm_and_si128(l0, low), hb[0]),
                    _mm_or_si128(_mm_and_si128(l1, low), hb[1]),
                    _mm_or_si128(_mm_and_si128(_mm_srli_epi16(l0, 4), low), hb[2]),
                    _mm_or_si128(_mm_and_si128(_mm_srli_epi16(l1, 4), low), hb[3]),
                ];
                for (k, q) in q.into_iter().enumerate() {
                    let s = d * *sc.add(half + 2 * k) as f32;
                    emit16::<false>(dst.add(32 * k + 16 * half), _mm_sub_epi8(q, bias), s, 0.0);
                }
            }
        }
    }
}
