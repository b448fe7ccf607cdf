//! K-quant matrices (Q4_K, Q6_K) repacked eight weight rows to a block, and the AVX2
//! products over them: the decode steps' (up to four input rows per pass over the
//! weights) here, the prompt tiles' in `kquant_tiles`, which unpack their panels from the
//! copy. A block keeps the rows' codes as stored but interleaved four bytes per row
//! (`interleaved_q4k`, `interleaved_q6k`), so one 32-byte load holds the same values of
//! eight rows and one broadcast of activations serves them all; scales and factors are
//! unpacked once, at repacking. A decode step then spends about half the instructions
//! per weight byte of the one-row kernels, which on two cores is what keeps it at the
//! memory's pace instead of the core's.
//!
//! The copy is as large as the rows it replaces (Q4_K 1184 bytes per eight rows and 256
//! columns, against 8 × 144; Q6_K 1696 against 8 × 210) and is built once per matrix by
//! its first product on AVX2, the mapped file's pages of the matrix released behind the
//! repacking. It is llama.cpp's idea (its K-quant repacking at load), in layouts of our
//! own that need no shuffles per value. Each thread reads its groups as one stream,
//! which the hardware prefetcher follows: software prefetches one to eight blocks ahead
//! were no faster on AMD Zen 3. Written here because no crate has integer kernels over
//! interleaved K-quant rows.
//!
//! # Safety
//! [`Interleaved::repack`] needs AVX2, [`Interleaved::matmul`] AVX2, FMA and F16C (the
//! caller checks `Isa::Avx2`).

use candle_core::quantized::k_quants::BlockQ8K;
use rayon::prelude::*;

use super::format::StoredType;
use super::{interleaved_q4k as q4k, interleaved_q6k as q6k, QuantMatrix};
use crate::ops::slice_gemm::SharedOut;

/// Weight rows per interleaved block.
pub const ROWS: usize = 8;

/// Stored bytes repacked between two hand-backs of the stored rows.
const SLAB_BYTES: usize = 8 << 20;
/// How far behind the rows being read the stored pages are given back (more than the
/// 64 KiB that Linux maps around a faulting page of a file).
const FAULT_AROUND_BYTES: usize = 256 << 10;

/// One 32-byte line of a copy (the type keeps the copy aligned for vector loads).
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub(super) struct Line(pub(super) [u8; 32]);

/// A K-quant matrix in interleaved blocks of eight rows.
pub struct Interleaved {
    ty: StoredType,
    lines: Vec<Line>,
    rows: usize,
    /// Super-blocks per row.
    blocks: usize,
    /// Lines per interleaved block.
    block_lines: usize,
}

/// Whether `ty` has an interleaved layout.
pub fn serves(ty: StoredType) -> bool {
    matches!(ty, StoredType::Q4K | StoredType::Q6K)
}

impl Interleaved {
    /// Repacks matrix `m` (of a type that [`serves`], checked by the caller), calling
    /// `done` with the ranges of its stored bytes it has finished reading (at the end,
    /// all of them). A last group of fewer than eight rows is padded with rows of zeros
    /// (zero factors: zero outputs, dropped).
    ///
    /// # Safety
    /// The CPU has AVX2.
    pub unsafe fn repack(m: &QuantMatrix, done: impl Fn(std::ops::Range<usize>) + Sync) -> Self {
        const ZERO_ROW: [u8; q6k::STORED] = [0; q6k::STORED];
        let (ty, rows, blocks) = (m.stored_type(), m.rows(), m.cols() / 256);
        let (stored, block_lines) = match ty {
            StoredType::Q4K => (q4k::STORED, q4k::LINES),
            _ => (q6k::STORED, q6k::LINES),
        };
        let groups = rows.div_ceil(ROWS);
        let per_group = blocks * block_lines;
        let row_bytes = blocks * stored;
        let total = groups * per_group;
        // Each task zeroes its own lines just before it packs them (in cache), instead
        // of one thread zeroing the whole copy first: for an 8B model that pass alone
        // cost half a second of the first prompt.
        let mut lines: Vec<Line> = Vec::with_capacity(total);
        // Slabs of about 8 MB of stored rows, packed on every thread one after the other;
        // the stored bytes behind a slab are given back before the next. Not per group:
        // the kernel maps a faulting page's neighbours with it (64 KiB around), so pages
        // given back just behind the rows being read came straight back.
        let slab_groups = (SLAB_BYTES / (ROWS * row_bytes).max(1)).max(1);
        let mut given_back = 0;
        for (slab, out) in lines.spare_capacity_mut()[..total]
            .chunks_mut(slab_groups * per_group.max(1))
            .enumerate()
        {
            out.par_chunks_mut(per_group.max(1))
                .enumerate()
                .for_each(|(i, out)| {
                    let g = slab * slab_groups + i;
                    for line in out.iter_mut() {
                        line.write(Line([0; 32]));
                    }
                    // SAFETY: every line of `out` was just written.
                    let out =
                        unsafe { &mut *(out as *mut [std::mem::MaybeUninit<Line>] as *mut [Line]) };
                    for (s, block) in out.chunks_exact_mut(block_lines).enumerate() {
                        let mut b = [ZERO_ROW.as_ptr(); ROWS];
                        for (r, b) in b.iter_mut().enumerate().take(rows - g * ROWS) {
                            *b = m.row(g * ROWS + r)[s * stored..].as_ptr();
                        }
                        // SAFETY: the caller's CPU check; every `b` holds a whole
                        // super-block.
                        unsafe {
                            match ty {
                                StoredType::Q4K => q4k::pack_block(&b, block),
                                _ => q6k::pack_block(&b, block),
                            }
                        }
                    }
                });
            let read = ((slab + 1) * slab_groups * ROWS * row_bytes).min(m.byte_len());
            let behind = read.saturating_sub(FAULT_AROUND_BYTES);
            if behind > given_back {
                done(given_back..behind);
                given_back = behind;
            }
        }
        done(0..m.byte_len());
        // SAFETY: the tasks wrote all `total` lines (the chunks cover them).
        unsafe { lines.set_len(total) };
        Interleaved {
            ty,
            lines,
            rows,
            blocks,
            block_lines,
        }
    }

    /// Interleaved block `s` of rows `8g .. 8g + 8` (32-byte aligned).
    pub(super) fn block(&self, g: usize, s: usize) -> *const u8 {
        self.lines[(g * self.blocks + s) * self.block_lines..]
            .as_ptr()
            .cast()
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
                let per_group = self.blocks * self.block_lines;
                let group = &self.lines[g * per_group..(g + 1) * per_group];
                let valid = ROWS.min(self.rows - g * ROWS);
                let mut i = 0;
                while i < m {
                    let n = 4.min(m - i);
                    let input = |k: usize| a[(i + k) * self.blocks..].as_ptr().cast::<u8>();
                    let mut res = [[0f32; ROWS]; 4];
                    // SAFETY: the caller's guarantees; input rows `i .. i + n` exist.
                    unsafe {
                        let r = &mut res;
                        match (self.ty, n) {
                            (StoredType::Q4K, 4) => {
                                q4k::gemv::<4>(group, [input(0), input(1), input(2), input(3)], r)
                            }
                            (StoredType::Q4K, 3) => {
                                q4k::gemv::<3>(group, [input(0), input(1), input(2)], r)
                            }
                            (StoredType::Q4K, 2) => q4k::gemv::<2>(group, [input(0), input(1)], r),
                            (StoredType::Q4K, _) => q4k::gemv::<1>(group, [input(0)], r),
                            (_, 4) => {
                                q6k::gemv::<4>(group, [input(0), input(1), input(2), input(3)], r)
                            }
                            (_, 3) => q6k::gemv::<3>(group, [input(0), input(1), input(2)], r),
                            (_, 2) => q6k::gemv::<2>(group, [input(0), input(1)], r),
                            (_, _) => q6k::gemv::<1>(group, [input(0)], r),
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
