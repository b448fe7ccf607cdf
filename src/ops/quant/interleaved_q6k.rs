//! Q6_K's interleaved blocks (eight rows × 256 columns): the layout, its packing from
//! the stored super-blocks, and the AVX2 product of a group of eight rows with up to four
//! Q8_K input rows. The stored bits stay split as Q6_K splits them (low nibbles, two high
//! bits), interleaved four bytes per row: three 32-byte loads give four vectors of 6-bit
//! codes, each the same four values of eight rows, multiplied by one broadcast of four
//! activation bytes. The codes are `q − 32` with a signed scale per 16 values: the
//! unsigned `q` go through `vpmaddubsw`, and the −32 is taken once per super-block from
//! the activations' sums per 16 values, as in the one-row kernel.

use std::arch::x86_64::*;

use super::dot_kquant_avx2::{Q8K_BSUMS, Q8K_BYTES, Q8K_QS};
use super::interleaved::{prefetch_ahead, Line, ROWS};
use super::kquant_tiles::store_transposed;

/// Bytes of a Q6_K super-block as stored.
pub(super) const STORED: usize = 210;

/// Per 128-value half `h` and chunk `c` (at `CODES + 96 · (8h + c)`), three lines of the
/// eight rows' four stored bytes each, in the order the product reads them, so that a
/// block is read front to back (three short streams per block left the hardware
/// prefetcher behind: a third of the speed from memory): the half's low-bit bytes
/// `4c ..+4` (values `128h + 4c ..+4` in the low nibbles, `128h + 64 + 4c ..+4` in the
/// high), its low-bit bytes `32 + 4c ..+4` (values `128h + 32 + 4c ..+4` and `128h + 96
/// + 4c ..+4`), and its high-bit bytes `4c ..+4` (bits `2k, 2k + 1` belong to values
/// `128h + 32k + 4c ..+4`).
pub(super) const CODES: usize = 0;
/// Bytes of a chunk's three lines.
const CHUNK: usize = 96;
/// Per pair of 16-value groups, each row's two signed scales.
pub(super) const SCALES: usize = 1536;
/// The rows' `d` (f16), then 16 bytes of padding to a whole line.
pub(super) const D: usize = 1664;
const BLOCK: usize = D + 32;
pub(super) const LINES: usize = BLOCK / 32;
const _: () = assert!(BLOCK == 1696 && BLOCK.is_multiple_of(32));

/// Eight transposed lines, aligned for `store_transposed`'s stores.
#[repr(C, align(32))]
struct Chunks([[u8; 32]; 8]);

/// Writes eight rows' stored super-blocks (`b`) as one interleaved block.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn pack_block(b: &[*const u8; ROWS], block: &mut [Line]) {
    let dst = block.as_mut_ptr().cast::<u8>();
    for (r, &p) in b.iter().enumerate() {
        std::ptr::copy_nonoverlapping(p.add(208), dst.add(D + 2 * r), 2);
        for g in 0..16 {
            *dst.add(SCALES + 16 * (g / 2) + 2 * r + g % 2) = *p.add(192 + g);
        }
    }
    for half in 0..2 {
        // Each row's 32 bytes at `from`, as eight chunks of four bytes of eight rows, to
        // line `line` of each chunk of the half.
        for (from, line) in [(64 * half, 0), (64 * half + 32, 1), (128 + 32 * half, 2)] {
            let rows = b.map(|p| _mm256_loadu_si256(p.add(from).cast()));
            let mut chunks = Chunks([[0u8; 32]; 8]);
            store_transposed(rows, &mut chunks.0);
            for (c, chunk) in chunks.0.iter().enumerate() {
                let to = CODES + CHUNK * (8 * half + c) + 32 * line;
                std::ptr::copy_nonoverlapping(chunk.as_ptr(), dst.add(to), 32);
            }
        }
    }
}

/// The four code vectors of chunk `c` of half `h`: `[k]` holds values `128h + 32k + 4c
/// ..+4` of the eight rows (unsigned, 0 … 63).
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn codes(b: *const u8, half: usize, c: usize) -> [__m256i; 4] {
    let low = _mm256_set1_epi8(0x0F);
    let two = _mm256_set1_epi8(0x30);
    let at = b.add(CODES + CHUNK * (8 * half + c));
    let l0 = _mm256_load_si256(at.cast());
    let l1 = _mm256_load_si256(at.add(32).cast());
    let h = _mm256_load_si256(at.add(64).cast());
    // Bits 2k, 2k + 1 of each high byte moved to bits 4, 5 (16-bit shifts: the bits that
    // cross into the next byte are masked away).
    [
        _mm256_or_si256(
            _mm256_and_si256(l0, low),
            _mm256_and_si256(_mm256_slli_epi16::<4>(h), two),
        ),
        _mm256_or_si256(
            _mm256_and_si256(l1, low),
            _mm256_and_si256(_mm256_slli_epi16::<2>(h), two),
        ),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(l0), low),
            _mm256_and_si256(h, two),
        ),
        _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(l1), low),
            _mm256_and_si256(_mm256_srli_epi16::<2>(h), two),
        ),
    ]
}

/// Each row's signed scale of group `g` (`b`'s scales) in both 16-bit halves of its lane.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn group_scales(b: *const u8, g: usize) -> __m256i {
    // The pair's 16 bytes in both lanes; byte 2r + g % 2 into the high byte of both of
    // lane r's halves, then shifted down with its sign.
    let pair = _mm256_broadcastsi128_si256(_mm_load_si128(b.add(SCALES + 16 * (g / 2)).cast()));
    let e = (g % 2) as i8;
    let z = -1i8;
    let pick = _mm256_setr_epi8(
        z,
        e,
        z,
        e,
        z,
        2 + e,
        z,
        2 + e,
        z,
        4 + e,
        z,
        4 + e,
        z,
        6 + e,
        z,
        6 + e,
        z,
        8 + e,
        z,
        8 + e,
        z,
        10 + e,
        z,
        10 + e,
        z,
        12 + e,
        z,
        12 + e,
        z,
        14 + e,
        z,
        14 + e,
    );
    _mm256_srai_epi16::<8>(_mm256_shuffle_epi8(pair, pick))
}

/// One group of eight weight rows (its interleaved blocks) against `N` Q8_K input rows
/// (pointers to their first block), into `res[..N]`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn gemv<const N: usize>(
    group: &[Line],
    a: [*const u8; N],
    res: &mut [[f32; ROWS]; 4],
) {
    let mut acc = [_mm256_setzero_ps(); N];
    let blocks = group.len() / LINES;
    let base = group.as_ptr().cast::<u8>();
    for s in 0..blocks {
        let b = base.add(s * BLOCK);
        let mut sum = [_mm256_setzero_si256(); N];
        for half in 0..2 {
            for quarter in 0..2 {
                let part = 2 * half + quarter;
                prefetch_ahead(b, part * BLOCK / 4..(part + 1) * BLOCK / 4);
                // Chunks 4·quarter .. +4: values of groups 8h + 2k + quarter.
                let mut sc = [_mm256_setzero_si256(); 4];
                for (k, sc) in sc.iter_mut().enumerate() {
                    *sc = group_scales(b, 8 * half + 2 * k + quarter);
                }
                for c in (4 * quarter..4 * quarter + 4).step_by(2) {
                    let q = [codes(b, half, c), codes(b, half, c + 1)];
                    for k in 0..4 {
                        for n in 0..N {
                            let y = a[n].add(Q8K_BYTES * s + Q8K_QS + 128 * half + 32 * k + 4 * c);
                            let y0 = _mm256_set1_epi32(y.cast::<i32>().read_unaligned());
                            let y1 = _mm256_set1_epi32(y.add(4).cast::<i32>().read_unaligned());
                            // At most 2 · 63 · 128 per product pair, two chunks: within i16.
                            let s16 = _mm256_add_epi16(
                                _mm256_maddubs_epi16(q[0][k], y0),
                                _mm256_maddubs_epi16(q[1][k], y1),
                            );
                            sum[n] = _mm256_add_epi32(sum[n], _mm256_madd_epi16(sc[k], s16));
                        }
                    }
                }
            }
        }
        let d = _mm256_cvtph_ps(_mm_load_si128(b.add(D).cast()));
        // Per pair of groups, each row's two scales as 16-bit lanes (in loops, not
        // closures: a closure does not inherit the function's target features, and its
        // intrinsics become calls).
        let mut pairs = [_mm256_setzero_si256(); 8];
        for (p, pair) in pairs.iter_mut().enumerate() {
            *pair = _mm256_cvtepi8_epi16(_mm_load_si128(b.add(SCALES + 16 * p).cast()));
        }
        for n in 0..N {
            let y = a[n].add(Q8K_BYTES * s);
            // The −32 of every code: 32 · Σ_g scale · (the activations' sum over group g).
            let bsums = _mm256_loadu_si256(y.add(Q8K_BSUMS).cast());
            let mut corr = _mm256_setzero_si256();
            for (p, sc) in pairs.iter().enumerate() {
                let both = _mm256_permutevar8x32_epi32(bsums, _mm256_set1_epi32(p as i32));
                corr = _mm256_add_epi32(corr, _mm256_madd_epi16(*sc, both));
            }
            let total = _mm256_sub_epi32(sum[n], _mm256_slli_epi32::<5>(corr));
            let yd = _mm256_set1_ps(y.cast::<f32>().read_unaligned());
            acc[n] = _mm256_fmadd_ps(_mm256_mul_ps(d, yd), _mm256_cvtepi32_ps(total), acc[n]);
        }
    }
    for n in 0..N {
        _mm256_storeu_ps(res[n].as_mut_ptr(), acc[n]);
    }
}
