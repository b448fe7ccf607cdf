//! Q4_K's interleaved blocks (eight rows × 256 columns): the layout, its packing from
//! the stored super-blocks, and the AVX2 product of a group of eight rows with up to four
//! Q8_K input rows. One 32-byte load holds the same eight values of eight rows (four in
//! the low nibbles, four in the high); one broadcast of four activation bytes and one
//! `vpmaddubsw` multiply them for all eight rows, the 16-bit sums run over a whole
//! 32-value sub-block, and one `vpmaddwd` applies the eight rows' scales.

use std::arch::x86_64::*;

use super::dot_kquant_avx2::{Q8K_BSUMS, Q8K_BYTES, Q8K_QS};
use super::format::k4_scale_words;
use super::interleaved::{prefetch_ahead, Line, ROWS};
use super::kquant_tiles::store_transposed;

/// The rows' `d` (f16).
pub(super) const D: usize = 0;
/// The rows' `dmin` (f16).
pub(super) const DMIN: usize = 16;
/// Per 32-value sub-block, the eight rows' 6-bit scales.
pub(super) const SCALES: usize = 32;
/// Per pair of sub-blocks, each row's two 6-bit minimums.
pub(super) const MINS: usize = 96;
/// Per pair of sub-blocks (64 values) and chunk of four stored bytes, the eight rows'
/// four bytes: values `64p + 4j ..+4` in the low nibbles, `64p + 32 + 4j ..+4` in the high.
pub(super) const QS: usize = 160;
const BLOCK: usize = QS + 4 * 8 * 32;
pub(super) const LINES: usize = BLOCK / 32;
const _: () = assert!(BLOCK == 1184 && BLOCK.is_multiple_of(32));

/// Writes eight rows' stored super-blocks (`b`) as one interleaved block.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn pack_block(b: &[*const u8; ROWS], block: &mut [Line]) {
    let dst = block.as_mut_ptr().cast::<u8>();
    for (r, &p) in b.iter().enumerate() {
        std::ptr::copy_nonoverlapping(p, dst.add(D + 2 * r), 2);
        std::ptr::copy_nonoverlapping(p.add(2), dst.add(DMIN + 2 * r), 2);
        let [s0, s1, m0, m1] = k4_scale_words(p.add(4).cast::<[u8; 12]>().read_unaligned());
        let (s0, s1, m0, m1) = (
            s0.to_le_bytes(),
            s1.to_le_bytes(),
            m0.to_le_bytes(),
            m1.to_le_bytes(),
        );
        let scales = [s0[0], s0[1], s0[2], s0[3], s1[0], s1[1], s1[2], s1[3]];
        let mins = [m0[0], m0[1], m0[2], m0[3], m1[0], m1[1], m1[2], m1[3]];
        for (sub, &sc) in scales.iter().enumerate() {
            *dst.add(SCALES + 8 * sub + r) = sc;
        }
        for (sub, &m) in mins.iter().enumerate() {
            // Sub-blocks 2·pair and 2·pair + 1 are a pair's two minimums of row r.
            *dst.add(MINS + 16 * (sub / 2) + 2 * r + sub % 2) = m;
        }
    }
    for pair in 0..4 {
        // Each row's 32 bytes of the pair, as eight chunks of four bytes of eight rows.
        let rows = b.map(|p| _mm256_loadu_si256(p.add(16 + 32 * pair).cast()));
        let at = (QS + 256 * pair) / 32;
        // SAFETY: `Line` and `[u8; 32]` have one layout; the pair's eight lines exist.
        let out =
            std::slice::from_raw_parts_mut(block[at..at + 8].as_mut_ptr().cast::<[u8; 32]>(), 8);
        store_transposed(rows, out);
    }
}

/// Each row's 6-bit scale of sub-block `sub` (`b`'s scales) in both 16-bit halves of
/// its lane.
#[inline]
#[target_feature(enable = "avx2")]
pub(super) unsafe fn sub_scales(b: *const u8, sub: usize) -> __m256i {
    // The eight bytes in every quarter; byte r into both halves of lane r.
    let spread = _mm256_setr_epi8(
        0, -1, 0, -1, 1, -1, 1, -1, 2, -1, 2, -1, 3, -1, 3, -1, 4, -1, 4, -1, 5, -1, 5, -1, 6, -1,
        6, -1, 7, -1, 7, -1,
    );
    let bytes = b.add(SCALES + 8 * sub).cast::<i64>().read_unaligned();
    _mm256_shuffle_epi8(_mm256_set1_epi64x(bytes), spread)
}

/// One group of eight weight rows (`blocks` interleaved blocks) against `N` Q8_K input
/// rows (pointers to their first block), into `res[..N]`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn gemv<const N: usize>(
    group: &[Line],
    a: [*const u8; N],
    res: &mut [[f32; ROWS]; 4],
) {
    let low = _mm256_set1_epi8(0x0F);
    let mut acc = [_mm256_setzero_ps(); N];
    let mut acc_min = [_mm256_setzero_ps(); N];
    let blocks = group.len() / LINES;
    let base = group.as_ptr().cast::<u8>();
    for s in 0..blocks {
        let b = base.add(s * BLOCK);
        let mut sum = [_mm256_setzero_si256(); N];
        for pair in 0..4 {
            prefetch_ahead(b, pair * BLOCK / 4..(pair + 1) * BLOCK / 4);
            let (sc_lo, sc_hi) = (sub_scales(b, 2 * pair), sub_scales(b, 2 * pair + 1));
            let mut lo16 = [_mm256_setzero_si256(); N];
            let mut hi16 = [_mm256_setzero_si256(); N];
            for j in 0..8 {
                let bits = _mm256_load_si256(b.add(QS + 256 * pair + 32 * j).cast());
                let q_lo = _mm256_and_si256(bits, low);
                let q_hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), low);
                for n in 0..N {
                    let y = a[n].add(Q8K_BYTES * s + Q8K_QS + 64 * pair + 4 * j);
                    let y_lo = _mm256_set1_epi32(y.cast::<i32>().read_unaligned());
                    let y_hi = _mm256_set1_epi32(y.add(32).cast::<i32>().read_unaligned());
                    // At most 2 · 15 · 128 per product pair, eight chunks: within i16.
                    lo16[n] = _mm256_add_epi16(lo16[n], _mm256_maddubs_epi16(q_lo, y_lo));
                    hi16[n] = _mm256_add_epi16(hi16[n], _mm256_maddubs_epi16(q_hi, y_hi));
                }
            }
            for n in 0..N {
                let p = _mm256_add_epi32(
                    _mm256_madd_epi16(sc_lo, lo16[n]),
                    _mm256_madd_epi16(sc_hi, hi16[n]),
                );
                sum[n] = _mm256_add_epi32(sum[n], p);
            }
        }
        let d = _mm256_cvtph_ps(_mm_loadu_si128(b.add(D).cast()));
        let dmin = _mm256_cvtph_ps(_mm_loadu_si128(b.add(DMIN).cast()));
        // In a loop, not a closure: a closure does not inherit the function's target
        // features, and its intrinsics become calls.
        let mut mins = [_mm256_setzero_si256(); 4];
        for (pair, m) in mins.iter_mut().enumerate() {
            *m = _mm256_cvtepu8_epi16(_mm_loadu_si128(b.add(MINS + 16 * pair).cast()));
        }
        for n in 0..N {
            let y = a[n].add(Q8K_BYTES * s);
            let yd = _mm256_set1_ps(y.cast::<f32>().read_unaligned());
            acc[n] = _mm256_fmadd_ps(_mm256_mul_ps(d, yd), _mm256_cvtepi32_ps(sum[n]), acc[n]);
            // The activations' sums per 32 values (from Q8_K's per 16), against each
            // row's minimums, a pair of sub-blocks per `vpmaddwd`.
            let bsums = _mm256_loadu_si256(y.add(Q8K_BSUMS).cast());
            let sums32 = _mm256_castsi128_si256(_mm_hadd_epi16(
                _mm256_castsi256_si128(bsums),
                _mm256_extracti128_si256::<1>(bsums),
            ));
            let mut msum = _mm256_setzero_si256();
            for (pair, m) in mins.iter().enumerate() {
                let both = _mm256_permutevar8x32_epi32(sums32, _mm256_set1_epi32(pair as i32));
                msum = _mm256_add_epi32(msum, _mm256_madd_epi16(*m, both));
            }
            acc_min[n] = _mm256_fmadd_ps(
                _mm256_mul_ps(dmin, yd),
                _mm256_cvtepi32_ps(msum),
                acc_min[n],
            );
        }
    }
    for n in 0..N {
        _mm256_storeu_ps(res[n].as_mut_ptr(), _mm256_sub_ps(acc[n], acc_min[n]));
    }
}
