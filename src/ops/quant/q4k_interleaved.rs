//! Q4_K matrices repacked eight weight rows to a block, and the AVX2 decode product over
//! them. A super-block of eight rows keeps the rows' 4-bit codes as they are stored but
//! interleaved four bytes per row, so one 32-byte load holds the same eight values
//! (four in the low nibbles, four in the high) of eight rows: one broadcast of four
//! activation bytes and one `vpmaddubsw` multiply them for all eight rows, the 16-bit
//! sums run over a whole 32-value sub-block, and one `vpmaddwd` applies the eight rows'
//! scales. Scales, minimums and factors are unpacked once at repacking, so a decode step
//! spends about half the instructions per weight byte of the one-row kernels, which on
//! two cores is what keeps it at the memory's pace instead of the core's.
//!
//! The repacked copy is as large as the rows it replaces (1184 bytes per eight rows and
//! 256 columns, against 8 × 144) and is built once per matrix by its first product on
//! AVX2; the prompt tiles unpack their panels from it too, so the mapped file's pages of
//! the matrix can be released. It is llama.cpp's idea (its Q4_K repacking at load), in a
//! layout of our own that needs no shuffles per value. Each thread reads its groups as
//! one stream, which the hardware prefetcher follows: software prefetches one to eight
//! blocks ahead were no faster on AMD Zen 3. Written here because no crate has integer
//! kernels over interleaved K-quant rows.
//!
//! # Safety
//! [`Interleaved::matmul`] needs AVX2, FMA and F16C (the caller checks `Isa::Avx2`).

use std::arch::x86_64::*;

use candle_core::quantized::k_quants::BlockQ8K;
use rayon::prelude::*;

use super::dot_kquant_avx2::{Q8K_BSUMS, Q8K_BYTES, Q8K_QS};
use super::format::k4_scale_words;
use super::kquant_tiles::store_transposed;
use crate::ops::slice_gemm::SharedOut;

/// Weight rows per interleaved block.
pub const ROWS: usize = 8;
/// Bytes of a Q4_K super-block as stored.
const STORED: usize = 144;

// One interleaved block: eight rows × 256 columns.
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
const LINES: usize = BLOCK / 32;
const _: () = assert!(BLOCK == 1184 && BLOCK.is_multiple_of(32));

/// One 32-byte line of the copy (the type keeps the copy aligned for vector loads).
#[derive(Clone, Copy)]
#[repr(C, align(32))]
struct Line([u8; 32]);

/// A Q4_K matrix in interleaved blocks of eight rows.
pub struct Interleaved {
    lines: Vec<Line>,
    rows: usize,
    /// Super-blocks per row.
    blocks: usize,
}

impl Interleaved {
    /// Repacks `rows` rows of `blocks` Q4_K super-blocks each (`w`, as stored; rows of
    /// whole super-blocks, checked by the caller). A last group of fewer than eight rows
    /// is padded with rows of zeros (zero factors: zero outputs, dropped).
    ///
    /// # Safety
    /// The CPU has AVX2.
    pub unsafe fn repack(w: &[u8], rows: usize, blocks: usize) -> Self {
        const ZERO_ROW: [u8; STORED] = [0; STORED];
        let groups = rows.div_ceil(ROWS);
        let per_group = blocks * LINES;
        let mut lines = vec![Line([0; 32]); groups * per_group];
        let row_bytes = blocks * STORED;
        lines
            .par_chunks_mut(per_group.max(1))
            .enumerate()
            .for_each(|(g, out)| {
                for (s, block) in out.chunks_exact_mut(LINES).enumerate() {
                    let mut b = [ZERO_ROW.as_ptr(); ROWS];
                    for (r, b) in b.iter_mut().enumerate().take(rows - g * ROWS) {
                        *b = w[(g * ROWS + r) * row_bytes + s * STORED..].as_ptr();
                    }
                    // SAFETY: the caller's CPU check; every `b` holds a whole super-block.
                    unsafe { pack_block(&b, block) };
                }
            });
        Interleaved {
            lines,
            rows,
            blocks,
        }
    }

    /// Interleaved block `s` of rows `8g .. 8g + 8` (`BLOCK` bytes, 32-byte aligned).
    pub(super) fn block(&self, g: usize, s: usize) -> *const u8 {
        self.lines[(g * self.blocks + s) * LINES..].as_ptr().cast()
    }

    /// `y [m, rows] = x · Wᵀ` for `m` input rows of Q8_K blocks `a` (`blocks` per row),
    /// groups of eight weight rows split over the threads.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `a` holds `m · blocks` blocks; `y` holds `m · rows`
    /// values.
    pub unsafe fn matmul(&self, a: &[BlockQ8K], m: usize, y: &mut [f32]) {
        let groups = self.rows.div_ceil(ROWS);
        let threads = rayon::current_num_threads().max(1);
        let per_task = groups.div_ceil(threads * 4).max(1);
        let tasks = groups.div_ceil(per_task);
        let out = SharedOut(y.as_mut_ptr());
        let work = |task: usize| {
            for g in task * per_task..((task + 1) * per_task).min(groups) {
                let group = &self.lines[g * self.blocks * LINES..(g + 1) * self.blocks * LINES];
                let valid = ROWS.min(self.rows - g * ROWS);
                let mut i = 0;
                while i < m {
                    let n = 4.min(m - i);
                    let input = |k: usize| a[(i + k) * self.blocks..].as_ptr().cast::<u8>();
                    let mut res = [[0f32; ROWS]; 4];
                    // SAFETY: the caller's guarantees; input rows `i .. i + n` exist.
                    unsafe {
                        match n {
                            4 => {
                                gemv::<4>(group, [input(0), input(1), input(2), input(3)], &mut res)
                            }
                            3 => gemv::<3>(group, [input(0), input(1), input(2)], &mut res),
                            2 => gemv::<2>(group, [input(0), input(1)], &mut res),
                            _ => gemv::<1>(group, [input(0)], &mut res),
                        }
                    }
                    for (k, outputs) in res[..n].iter().enumerate() {
                        for (r, &v) in outputs[..valid].iter().enumerate() {
                            // SAFETY: `y` holds `m · rows` values; this task alone writes
                            // columns `g·8 .. g·8 + valid`.
                            unsafe { *out.ptr().add((i + k) * self.rows + g * ROWS + r) = v };
                        }
                    }
                    i += n;
                }
            }
        };
        if tasks == 1 {
            work(0);
        } else {
            (0..tasks).into_par_iter().for_each(work);
        }
    }
}

/// Writes eight rows' stored super-blocks (`b`) as one interleaved block.
#[target_feature(enable = "avx2")]
unsafe fn pack_block(b: &[*const u8; ROWS], block: &mut [Line]) {
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

/// One group of eight weight rows (`blocks` interleaved blocks) against `N` Q8_K input
/// rows (pointers to their first block), into `res[..N]`.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn gemv<const N: usize>(group: &[Line], a: [*const u8; N], res: &mut [[f32; ROWS]; 4]) {
    let low = _mm256_set1_epi8(0x0F);
    // Scale byte `r` of eight (broadcast to both lanes) into both 16-bit halves of lane r.
    let spread = _mm256_setr_epi8(
        0, -1, 0, -1, 1, -1, 1, -1, 2, -1, 2, -1, 3, -1, 3, -1, 4, -1, 4, -1, 5, -1, 5, -1, 6, -1,
        6, -1, 7, -1, 7, -1,
    );
    let mut acc = [_mm256_setzero_ps(); N];
    let mut acc_min = [_mm256_setzero_ps(); N];
    let blocks = group.len() / LINES;
    let base = group.as_ptr().cast::<u8>();
    for s in 0..blocks {
        let b = base.add(s * BLOCK);
        let mut sum = [_mm256_setzero_si256(); N];
        for pair in 0..4 {
            let scale = |sub: usize| {
                let bytes = b.add(SCALES + 8 * sub).cast::<i64>().read_unaligned();
                _mm256_shuffle_epi8(_mm256_set1_epi64x(bytes), spread)
            };
            let (sc_lo, sc_hi) = (scale(2 * pair), scale(2 * pair + 1));
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
        let mins = [0, 1, 2, 3]
            .map(|pair| _mm256_cvtepu8_epi16(_mm_loadu_si128(b.add(MINS + 16 * pair).cast())));
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
