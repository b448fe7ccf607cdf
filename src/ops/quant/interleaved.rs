//! Quantized matrices repacked eight weight rows to a block, and the AVX2 products over
//! them: the K-quants (Q4_K, Q6_K: `interleaved_q4k`, `interleaved_q6k`) and the 32-value
//! types (Q4_0 … Q8_0: `interleaved_q32`). The decode steps' products (up to four input
//! rows per pass over the weights) are here, the K-quant prompt tiles' in `kquant_tiles`,
//! which unpack their panels from the copy. A block keeps the rows' codes as stored but
//! interleaved a few bytes per row, so one load holds the same values of eight rows and
//! one broadcast of activations serves them all; scales and factors sit side by side
//! (the K-quants' unpacked once, at repacking). A decode step then spends about half the
//! instructions per weight byte of the one-row kernels, which on two cores is what keeps
//! it at the memory's pace instead of the core's.
//!
//! The copy is about as large as the rows it replaces (Q4_K 1184 bytes per eight rows
//! and 256 columns, against 8 × 144; Q6_K 1696 against 8 × 210; the 32-value types pad
//! each tile to whole 32-byte lines: Q4_0 160 bytes per eight rows and 32 columns against
//! 8 × 18, Q5_0 192 against 8 × 22, Q8_0 288 against 8 × 34, Q4_1 and Q5_1 none) and is
//! built once per matrix by its first product on AVX2, the mapped file's pages of the
//! matrix released behind the repacking; the 32-value types' stored blocks are rebuilt
//! from the copy when something asks for rows ([`Interleaved::stored_group`]). It is
//! llama.cpp's idea (its repacking at load), in layouts of our own that need no shuffles
//! per value. Each thread reads its groups as one stream, and the kernels ask every line
//! 2 KiB ahead into cache as they go: with the work the kernels do per byte, the
//! hardware prefetcher alone kept two cores at about 17–20 GB/s from memory where a bare
//! read loop takes 35 (AMD Zen 3; `examples/bench_quant_matvec`, BENCHMARKS.md).
//! Written here because no crate has integer kernels over interleaved quantized rows.
//!
//! # Safety
//! [`Interleaved::repack`] needs AVX2, the products AVX2, FMA and F16C (the caller checks
//! `Isa::Avx2`).

use candle_core::quantized::k_quants::BlockQ8K;
use rayon::prelude::*;

use super::activation::Q8Rows;
use super::format::StoredType;
use super::matrix::{prefetch_lines, PREFETCH_AHEAD_BYTES};
use super::{interleaved_q32 as q32, interleaved_q4k as q4k, interleaved_q6k as q6k, QuantMatrix};
use crate::ops::slice_gemm::SharedOut;

/// Weight rows per interleaved block.
pub const ROWS: usize = 8;

/// Stored bytes repacked between two hand-backs of the stored rows.
const SLAB_BYTES: usize = 8 << 20;
/// How far behind the rows being read the stored pages are given back (more than the
/// 64 KiB that Linux maps around a faulting page of a file).
const FAULT_AROUND_BYTES: usize = 256 << 10;

/// Asks bytes `part` of the block that starts [`PREFETCH_AHEAD_BYTES`] after `b` into
/// cache: a kernel that asks for each part of the block ahead as it reads the same part
/// of its own keeps the requests in step with its reading (the groups of a task lie one
/// after another, so near a group's end this asks for the next group's lines).
#[inline]
pub(super) fn prefetch_ahead(b: *const u8, part: std::ops::Range<usize>) {
    prefetch_lines(
        b.wrapping_add(PREFETCH_AHEAD_BYTES + part.start),
        part.len(),
    );
}

/// One 32-byte line of a copy (the type keeps the copy aligned for vector loads).
#[derive(Clone, Copy)]
#[repr(C, align(32))]
pub(super) struct Line(pub(super) [u8; 32]);

/// A quantized matrix in interleaved blocks of eight rows.
pub struct Interleaved {
    ty: StoredType,
    lines: Vec<Line>,
    rows: usize,
    /// Stored blocks (super-blocks of the K-quants) per row.
    blocks: usize,
    /// Lines per interleaved block.
    block_lines: usize,
}

/// Whether `ty` has an interleaved layout.
pub fn serves(ty: StoredType) -> bool {
    matches!(ty, StoredType::Q4K | StoredType::Q6K) || q32::code(ty).is_some()
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
        let ty = m.stored_type();
        let (rows, blocks) = (m.rows(), m.cols() / ty.block_elems());
        let stored = ty.block_bytes();
        let block_lines = match (ty, q32::code(ty)) {
            (StoredType::Q4K, _) => q4k::LINES,
            (_, Some(code)) => q32::lines(code),
            _ => q6k::LINES,
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
                            match (ty, q32::code(ty)) {
                                (StoredType::Q4K, _) => q4k::pack_block(&b, block),
                                (_, Some(code)) => q32::pack_block(code, &b, block),
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

    /// Whether [`Self::stored_group`] rebuilds rows (the 32-value types).
    pub fn rebuilds_stored_rows(&self) -> bool {
        q32::code(self.ty).is_some()
    }

    /// Rows `8g .. 8g + 8` as stored (their bytes one row after the other, rows past the
    /// matrix's last as zeros) rebuilt from the copy into `out`, for a 32-value type;
    /// `false` (nothing written) for the K-quants or a group or buffer out of range.
    pub fn stored_group(&self, g: usize, out: &mut [u8]) -> bool {
        let Some(code) = q32::code(self.ty) else {
            return false;
        };
        let (size, row_bytes) = (self.ty.block_bytes(), self.blocks * self.ty.block_bytes());
        if g >= self.rows.div_ceil(ROWS) || out.len() < ROWS * row_bytes {
            return false;
        }
        for s in 0..self.blocks {
            // SAFETY: a copy exists only where the CPU has AVX2 (`repack`'s condition);
            // block `s` of group `g` is a whole tile; `out` holds eight rows of
            // `row_bytes`, and block `s` of each starts `s · size` into its row.
            unsafe {
                q32::unpack_tile(
                    code,
                    self.block(g, s),
                    out.as_mut_ptr().add(s * size),
                    row_bytes,
                )
            };
        }
        true
    }

    /// Interleaved block `s` of rows `8g .. 8g + 8` (32-byte aligned).
    pub(super) fn block(&self, g: usize, s: usize) -> *const u8 {
        self.lines[(g * self.blocks + s) * self.block_lines..]
            .as_ptr()
            .cast()
    }

    /// `y [m, rows] = x · Wᵀ` for `m` input rows of Q8_K blocks `a` (`blocks` per row),
    /// groups of eight weight rows split over the threads (a K-quant copy).
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `a` holds `m · blocks` blocks; `y` holds `m · rows`
    /// values.
    pub unsafe fn matmul(&self, a: &[BlockQ8K], m: usize, y: &mut [f32]) {
        let input = |k: usize| a[k * self.blocks..].as_ptr().cast::<u8>();
        self.by_groups(m, y, |group, i, n, r| {
            // SAFETY: the caller's guarantees; input rows `i .. i + n` exist.
            unsafe {
                match (self.ty, n) {
                    (StoredType::Q4K, 4) => q4k::gemv::<4>(
                        group,
                        [input(i), input(i + 1), input(i + 2), input(i + 3)],
                        r,
                    ),
                    (StoredType::Q4K, 3) => {
                        q4k::gemv::<3>(group, [input(i), input(i + 1), input(i + 2)], r)
                    }
                    (StoredType::Q4K, 2) => q4k::gemv::<2>(group, [input(i), input(i + 1)], r),
                    (StoredType::Q4K, _) => q4k::gemv::<1>(group, [input(i)], r),
                    (_, 4) => q6k::gemv::<4>(
                        group,
                        [input(i), input(i + 1), input(i + 2), input(i + 3)],
                        r,
                    ),
                    (_, 3) => q6k::gemv::<3>(group, [input(i), input(i + 1), input(i + 2)], r),
                    (_, 2) => q6k::gemv::<2>(group, [input(i), input(i + 1)], r),
                    (_, _) => q6k::gemv::<1>(group, [input(i)], r),
                }
            }
        });
    }

    /// `y [m, rows] = x · Wᵀ` for `m` input rows of two-level Q8 activations `a` (a
    /// 32-value type's copy), groups of eight weight rows split over the threads.
    ///
    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `a` holds `m` rows of `blocks` blocks; `y` holds
    /// `m · rows` values.
    pub unsafe fn matmul_q8(&self, a: &Q8Rows, m: usize, y: &mut [f32]) {
        let Some(code) = q32::code(self.ty) else {
            return;
        };
        let blocks = self.blocks;
        let input = |k: usize| {
            (
                a.qs16[k * blocks * 32..].as_ptr(),
                a.meta[k * blocks * 2..].as_ptr(),
            )
        };
        self.by_groups(m, y, |group, i, n, r| {
            let inputs: [(*const i16, *const f32); 4] =
                std::array::from_fn(|k| input(i + k.min(n - 1)));
            // SAFETY: the caller's guarantees; input rows `i .. i + n` exist and hold
            // `blocks` blocks each.
            unsafe { q32::gemv_any(code, group, &inputs[..n], r) }
        });
    }

    /// Runs `gemv(group, first input row, input rows (1 to 4), results)` over every group
    /// of eight weight rows and every run of up to four input rows, the groups split over
    /// the threads, and writes each group's results into `y [m, rows]`.
    fn by_groups(
        &self,
        m: usize,
        y: &mut [f32],
        gemv: impl Fn(&[Line], usize, usize, &mut [[f32; ROWS]; 4]) + Sync,
    ) {
        let groups = self.rows.div_ceil(ROWS);
        let threads = rayon::current_num_threads().max(1);
        let per_task = groups.div_ceil(threads * 4).max(1);
        let tasks = groups.div_ceil(per_task);
        let per_group = self.blocks * self.block_lines;
        let out = SharedOut(y.as_mut_ptr());
        let work = |task: usize| {
            for g in task * per_task..((task + 1) * per_task).min(groups) {
                let group = &self.lines[g * per_group..(g + 1) * per_group];
                let valid = ROWS.min(self.rows - g * ROWS);
                let mut i = 0;
                while i < m {
                    let n = 4.min(m - i);
                    let mut res = [[0f32; ROWS]; 4];
                    gemv(group, i, n, &mut res);
                    for (k, outputs) in res[..n].iter().enumerate() {
                        for (r, &v) in outputs[..valid].iter().enumerate() {
                            // SAFETY: `y` holds `m · rows` values (the callers' promise);
                            // this task alone writes columns `g·8 .. g·8 + valid`.
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
