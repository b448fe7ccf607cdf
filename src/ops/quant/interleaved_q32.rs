//! The 32-value types' interleaved tiles (eight rows × one 32-value block of Q4_0, Q4_1,
//! Q5_0, Q5_1 or Q8_0): the layout, its packing from the stored blocks and back, and the
//! AVX2 product of a group of eight rows with up to four rows of two-level Q8 activations
//! (their 16-bit codes, `activation::Q8Rows::qs16`).
//!
//! Each 16 bytes of codes widen to sixteen 16-bit lanes in which lanes `2r` and `2r + 1`
//! hold two values of row `r`: one `vpmaddwd` against a broadcast pair of activation
//! codes gives each of the eight rows its two products in its own 32-bit lane, so a
//! block's integer sum never leaves its row's lane and its scale is applied to eight rows
//! at once. The one-row kernels (`dot_x86`) spend about twice the instructions per value
//! on short rows (the default model's 576 values): a horizontal add and a scale
//! conversion per pair of blocks, and a call per row.
//!
//! Layout of a tile (whole 32-byte lines): the rows' `d` (8 × f16) at [`D`], their
//! minimums (Q4_1, Q5_1; zeros otherwise) at [`M`], for the Q5 types a line of fifth bits
//! at [`FIFTH`], then the codes. 4-bit codes: eight units of 16 bytes, byte `2r + j` of
//! unit `u` being stored byte `2u + j` of row `r` (value `2u + j` in its low nibble,
//! `16 + 2u + j` in its high one). Fifth bits: 16-bit lane `2r + j`, bit `2u + h`, is the
//! fifth bit of value `16h + 2u + j` of row `r`. Q8_0: sixteen units, byte `2r + j` of
//! unit `p` being value `2p + j` of row `r`.

use std::arch::x86_64::*;

use super::format::StoredType;
use super::interleaved::{prefetch_ahead, Line, ROWS};

/// The rows' scales `d` (f16).
const D: usize = 0;
/// The rows' minimums (f16), for the types that keep one.
const M: usize = 16;
/// The Q5 types' fifth bits.
const FIFTH: usize = 32;

/// Type codes of the const-generic kernels.
pub(super) const Q4_0: u8 = 0;
pub(super) const Q4_1: u8 = 1;
pub(super) const Q5_0: u8 = 2;
pub(super) const Q5_1: u8 = 3;
pub(super) const Q8_0: u8 = 4;

/// The kernel code of a 32-value type.
pub(super) fn code(ty: StoredType) -> Option<u8> {
    Some(match ty {
        StoredType::Q4_0 => Q4_0,
        StoredType::Q4_1 => Q4_1,
        StoredType::Q5_0 => Q5_0,
        StoredType::Q5_1 => Q5_1,
        StoredType::Q8_0 => Q8_0,
        _ => return None,
    })
}

const fn five(ty: u8) -> bool {
    ty == Q5_0 || ty == Q5_1
}
const fn has_min(ty: u8) -> bool {
    ty == Q4_1 || ty == Q5_1
}
/// Where a tile's codes start.
const fn codes(ty: u8) -> usize {
    if five(ty) {
        64
    } else {
        32
    }
}
/// 32-byte lines per tile.
pub(super) const fn lines(ty: u8) -> usize {
    (codes(ty) + if ty == Q8_0 { 256 } else { 128 }) / 32
}
/// What multiplies `d` to give the offset of a type without a minimum.
const fn coefficient(ty: u8) -> f32 {
    match ty {
        Q4_0 => -8.0,
        Q5_0 => -16.0,
        _ => 0.0,
    }
}
/// Byte offsets in a stored block: the minimum, the fifth bits, the codes.
const fn stored_layout(ty: u8) -> (usize, usize, usize) {
    match ty {
        Q4_0 => (0, 0, 2),
        Q4_1 => (2, 0, 4),
        Q5_0 => (0, 2, 6),
        Q5_1 => (2, 4, 8),
        _ => (0, 0, 2),
    }
}

/// Writes eight rows' stored blocks (`b`, each pointing at one block) as one tile.
///
/// # Safety
/// Each `b` points at a whole stored block of type `ty`; `tile` holds [`lines`] lines.
pub(super) unsafe fn pack_block(ty: u8, b: &[*const u8; ROWS], tile: &mut [Line]) {
    let dst = tile.as_mut_ptr().cast::<u8>();
    let (min, qh, qs) = stored_layout(ty);
    for (r, &p) in b.iter().enumerate() {
        std::ptr::copy_nonoverlapping(p, dst.add(D + 2 * r), 2);
        if has_min(ty) {
            std::ptr::copy_nonoverlapping(p.add(min), dst.add(M + 2 * r), 2);
        }
        let units = if ty == Q8_0 { 16 } else { 8 };
        for unit in 0..units {
            std::ptr::copy_nonoverlapping(
                p.add(qs + 2 * unit),
                dst.add(codes(ty) + 16 * unit + 2 * r),
                2,
            );
        }
        if five(ty) {
            let bits = u32::from_le_bytes(p.add(qh).cast::<[u8; 4]>().read());
            let (even, odd) = fifth_lanes(bits);
            let at = dst.add(FIFTH + 4 * r);
            std::ptr::copy_nonoverlapping(even.to_le_bytes().as_ptr(), at, 2);
            std::ptr::copy_nonoverlapping(odd.to_le_bytes().as_ptr(), at.add(2), 2);
        }
    }
}

/// A block's fifth bits (bit `v` of value `v`) as the tile's lanes `2r` and `2r + 1`:
/// bit `2u + h` of lane `2r + j` is the bit of value `16h + 2u + j`.
fn fifth_lanes(bits: u32) -> (u16, u16) {
    let even = (bits & 0x5555) | ((bits >> 15) & 0xAAAA);
    let odd = ((bits >> 1) & 0x5555) | ((bits >> 16) & 0xAAAA);
    (even as u16, odd as u16)
}

/// The inverse of [`fifth_lanes`].
fn fifth_bits(even: u16, odd: u16) -> u32 {
    let (even, odd) = (even as u32, odd as u32);
    (even & 0x5555) | ((even & 0xAAAA) << 15) | ((odd & 0x5555) << 1) | ((odd & 0xAAAA) << 16)
}

/// Writes the eight rows' stored blocks back from tile `tile`: row `r`'s block at
/// `out + r · row_bytes` (the type's block bytes).
///
/// # Safety
/// The CPU has AVX2; `tile` points at a whole tile of type `ty`; `out` has room for eight
/// rows of `row_bytes`, each holding a whole block from where `out` points.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn unpack_tile(ty: u8, tile: *const u8, out: *mut u8, row_bytes: usize) {
    let (min, qh, qs) = stored_layout(ty);
    for r in 0..ROWS {
        let o = out.add(r * row_bytes);
        std::ptr::copy_nonoverlapping(tile.add(D + 2 * r), o, 2);
        if has_min(ty) {
            std::ptr::copy_nonoverlapping(tile.add(M + 2 * r), o.add(min), 2);
        }
        if five(ty) {
            let lane =
                |k: usize| u16::from_le_bytes(tile.add(FIFTH + 2 * k).cast::<[u8; 2]>().read());
            let bits = fifth_bits(lane(2 * r), lane(2 * r + 1));
            std::ptr::copy_nonoverlapping(bits.to_le_bytes().as_ptr(), o.add(qh), 4);
        }
    }
    // Each 128 bytes of codes are an 8 × 8 matrix of byte pairs, unit by row: transposed,
    // each row's 16 stored code bytes.
    let halves = if ty == Q8_0 { 2 } else { 1 };
    for half in 0..halves {
        let src = tile.add(codes(ty) + 128 * half);
        let a: [__m128i; ROWS] = std::array::from_fn(|u| _mm_load_si128(src.add(16 * u).cast()));
        let t = [
            _mm_unpacklo_epi16(a[0], a[1]),
            _mm_unpackhi_epi16(a[0], a[1]),
            _mm_unpacklo_epi16(a[2], a[3]),
            _mm_unpackhi_epi16(a[2], a[3]),
            _mm_unpacklo_epi16(a[4], a[5]),
            _mm_unpackhi_epi16(a[4], a[5]),
            _mm_unpacklo_epi16(a[6], a[7]),
            _mm_unpackhi_epi16(a[6], a[7]),
        ];
        let s = [
            _mm_unpacklo_epi32(t[0], t[2]),
            _mm_unpackhi_epi32(t[0], t[2]),
            _mm_unpacklo_epi32(t[1], t[3]),
            _mm_unpackhi_epi32(t[1], t[3]),
            _mm_unpacklo_epi32(t[4], t[6]),
            _mm_unpackhi_epi32(t[4], t[6]),
            _mm_unpacklo_epi32(t[5], t[7]),
            _mm_unpackhi_epi32(t[5], t[7]),
        ];
        let rows = [
            _mm_unpacklo_epi64(s[0], s[4]),
            _mm_unpackhi_epi64(s[0], s[4]),
            _mm_unpacklo_epi64(s[1], s[5]),
            _mm_unpackhi_epi64(s[1], s[5]),
            _mm_unpacklo_epi64(s[2], s[6]),
            _mm_unpackhi_epi64(s[2], s[6]),
            _mm_unpacklo_epi64(s[3], s[7]),
            _mm_unpackhi_epi64(s[3], s[7]),
        ];
        for (r, row) in rows.iter().enumerate() {
            _mm_storeu_si128(out.add(r * row_bytes + qs + 16 * half).cast(), *row);
        }
    }
}

/// The fifth bits of unit `u`'s low (`h = 0`) or high (`h = 1`) values as 0x10 per lane.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn fifth(bits: __m256i, b: usize) -> __m256i {
    let at4 = if b < 4 {
        _mm256_sll_epi16(bits, _mm_cvtsi32_si128(4 - b as i32))
    } else {
        _mm256_srl_epi16(bits, _mm_cvtsi32_si128(b as i32 - 4))
    };
    _mm256_and_si256(at4, _mm256_set1_epi16(0x10))
}

/// The broadcast pair of activation codes `at`, `at + 1`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn pair(at: *const i16) -> __m256i {
    _mm256_set1_epi32(at.cast::<i32>().read_unaligned())
}

/// One group of eight weight rows (its tiles, one per block) against `N` input rows, each
/// given as its 16-bit codes and its `[d, d · Σ q]` per block, into `res[..N]`.
///
/// # Safety
/// The CPU has AVX2, FMA and F16C; `group` holds whole tiles of type `TY`, 32-byte
/// aligned; each input row holds as many blocks as the group.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn gemv<const TY: u8, const N: usize>(
    group: &[Line],
    a: [(*const i16, *const f32); N],
    res: &mut [[f32; ROWS]; 4],
) {
    let tile_bytes = lines(TY) * 32;
    let blocks = group.len() / lines(TY);
    let base = group.as_ptr().cast::<u8>();
    let low = _mm256_set1_epi16(0x0F);
    let mut acc = [_mm256_setzero_ps(); N];
    for s in 0..blocks {
        let t = base.add(s * tile_bytes);
        prefetch_ahead(t, 0..tile_bytes);
        let mut sums = [_mm256_setzero_si256(); N];
        if TY == Q8_0 {
            for unit in 0..16 {
                let w = _mm256_cvtepi8_epi16(_mm_load_si128(t.add(32 + 16 * unit).cast()));
                for n in 0..N {
                    let y = pair(a[n].0.add(32 * s + 2 * unit));
                    sums[n] = _mm256_add_epi32(sums[n], _mm256_madd_epi16(w, y));
                }
            }
        } else {
            let bits = if five(TY) {
                _mm256_load_si256(t.add(FIFTH).cast())
            } else {
                _mm256_setzero_si256()
            };
            for unit in 0..8 {
                let v = _mm256_cvtepu8_epi16(_mm_load_si128(t.add(codes(TY) + 16 * unit).cast()));
                let mut lo = _mm256_and_si256(v, low);
                let mut hi = _mm256_srli_epi16::<4>(v);
                if five(TY) {
                    lo = _mm256_or_si256(lo, fifth(bits, 2 * unit));
                    hi = _mm256_or_si256(hi, fifth(bits, 2 * unit + 1));
                }
                for n in 0..N {
                    let y = a[n].0.add(32 * s + 2 * unit);
                    let p = _mm256_add_epi32(
                        _mm256_madd_epi16(lo, pair(y)),
                        _mm256_madd_epi16(hi, pair(y.add(16))),
                    );
                    sums[n] = _mm256_add_epi32(sums[n], p);
                }
            }
        }
        let d = _mm256_cvtph_ps(_mm_load_si128(t.add(D).cast()));
        let m = if has_min(TY) {
            _mm256_cvtph_ps(_mm_load_si128(t.add(M).cast()))
        } else {
            _mm256_mul_ps(d, _mm256_set1_ps(coefficient(TY)))
        };
        for n in 0..N {
            let meta = a[n].1.add(2 * s);
            let scaled = _mm256_mul_ps(d, _mm256_set1_ps(*meta));
            acc[n] = _mm256_fmadd_ps(scaled, _mm256_cvtepi32_ps(sums[n]), acc[n]);
            if TY != Q8_0 {
                acc[n] = _mm256_fmadd_ps(m, _mm256_set1_ps(*meta.add(1)), acc[n]);
            }
        }
    }
    for n in 0..N {
        _mm256_storeu_ps(res[n].as_mut_ptr(), acc[n]);
    }
}

/// [`gemv`] for the type code `ty` and `inputs.len()` (1 to 4) input rows.
///
/// # Safety
/// As [`gemv`]'s.
pub(super) unsafe fn gemv_any(
    ty: u8,
    group: &[Line],
    inputs: &[(*const i16, *const f32)],
    res: &mut [[f32; ROWS]; 4],
) {
    macro_rules! by_rows {
        ($ty:expr) => {
            match inputs {
                [a, b, c, d, ..] => gemv::<$ty, 4>(group, [*a, *b, *c, *d], res),
                [a, b, c] => gemv::<$ty, 3>(group, [*a, *b, *c], res),
                [a, b] => gemv::<$ty, 2>(group, [*a, *b], res),
                [a] => gemv::<$ty, 1>(group, [*a], res),
                [] => {}
            }
        };
    }
    match ty {
        Q4_0 => by_rows!(Q4_0),
        Q4_1 => by_rows!(Q4_1),
        Q5_0 => by_rows!(Q5_0),
        Q5_1 => by_rows!(Q5_1),
        _ => by_rows!(Q8_0),
    }
}
