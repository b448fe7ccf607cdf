//! `dst = α · dst + β · lhs · rhs` in f32 on AVX2 + FMA, blocked and packed as BLIS does
//! it: a block of `rhs` (`KC` × up to `NC` values, in L3) is packed once per call into
//! panels of 16 columns and shared by the threads; each task packs its own rows of `lhs`
//! (up to `MC` × `KC`, in L2) into panels of 6 rows, and a 6 × 16 micro-kernel keeps its
//! 12 accumulators of 8 lanes in registers while a panel of `rhs` stays in L1: per value
//! of `k`, two loads and six broadcasts for twelve FMAs, no reduction across lanes.
//!
//! Written here because f32 products are four fifths of a training step and the gemm
//! crates' blocking, packing and split between threads are fixed inside them:
//! this one splits rows into bands of equal height (the threads end together), reads a
//! 16-row product's row-major `rhs` in place instead of copying it, and is the place for
//! what a crate cannot do (a LoRA term in the same inner loop, dequantizing into the
//! packed panels). On AMD Zen 3 it runs the step's largest products at the gemm crate's
//! rate (medians taking turns call by call: 123–137 against 114–127 GFLOP/s for
//! `[1024, 576] × [576, 1536]`, where the cores peak at 197) and is behind on 16-row ones,
//! so it is one candidate of the timed choice (`ops::gemm_choice`), not the default.
//! Operands may have any strides (the packing reads them); `dst` is written a row of 16
//! at a time where its rows are contiguous, element by element elsewhere.
//!
//! Where the CPU has AVX-512F a second micro-kernel ([`avx512`], 14 × 32: two panels of
//! 16 a tile, 28 accumulators of 16 lanes) runs on the same packed panels; it is a
//! separate candidate of the timed choice ([`Micro::Avx512`]), since 512-bit FMAs are twice
//! the work per instruction on Intel's server cores and split in two on AMD Zen 4.

use std::cell::RefCell;

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod avx512;

/// Rows of an AVX2 micro-tile (broadcast values of `lhs`).
const MR: usize = 6;
/// Rows of an AVX-512 micro-tile: 28 accumulators of the 32 registers. On an Intel
/// Xeon (family 6, model 207, one thread of `examples/bench_dot_gemm`) 14 rows ran
/// `[1024, 576] · [576, 1536]` at 135 GFLOP/s, 12 rows at 130, 8 at 120.
const MR_AVX512: usize = 14;
/// Columns of a packed panel of `rhs` (and of an AVX2 micro-tile: two vectors of 8).
const NR: usize = 16;
/// Up to this many rows of `lhs` use each value of a row-major `rhs` so few times that
/// the micro-kernel reads `rhs` where it lies instead of paying for a packed copy.
const IN_PLACE_MAX_ROWS: usize = 24;
/// Most values of `k` per block: a packed panel of `rhs` (`KC` × 16 × 4 bytes = 16 KiB)
/// stays in L1 while the task's row panels pass it.
const KC: usize = 256;
/// Most rows per task: the task's packed rows (144 × 256 × 4 bytes = 144 KiB) stay in L2.
const MC: usize = 144;
/// Most columns per block of `rhs` (whole panels): 4 MiB packed at `KC`, in L3.
const NC: usize = 4080;

thread_local! {
    /// The packed block of `rhs` of the calling thread, kept between calls.
    static RHS_PACK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    /// The packed rows of `lhs` of each worker, kept between calls.
    static LHS_PACK: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

/// Whether this CPU runs the kernel on its AVX2 micro-kernel (AVX2 and FMA).
pub fn available() -> bool {
    Micro::Avx2.available()
}

/// The micro-kernel a call runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Micro {
    /// 6 × 16 on AVX2 + FMA.
    Avx2,
    /// 14 × 32 on AVX-512F: two panels of 16 a tile.
    Avx512,
}

impl Micro {
    /// Whether this CPU runs it.
    pub fn available(self) -> bool {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            match self {
                Micro::Avx2 => has!("avx2") && has!("fma"),
                Micro::Avx512 => has!("avx512f"),
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = self;
            false
        }
    }

    /// Rows of its tile (of a packed panel of `lhs`).
    const fn rows(self) -> usize {
        match self {
            Micro::Avx2 => MR,
            Micro::Avx512 => MR_AVX512,
        }
    }

    /// Panels of 16 columns of its tile.
    const fn panels(self) -> usize {
        match self {
            Micro::Avx2 => 1,
            Micro::Avx512 => 2,
        }
    }
}

/// A matrix operand: element (i, j) at `ptr + i·rs + j·cs`.
#[derive(Clone, Copy)]
pub struct Strided<T> {
    pub ptr: *const T,
    pub rs: isize,
    pub cs: isize,
}

// SAFETY: the operands are only read (lhs, rhs) or written in disjoint tiles (dst) by the
// tasks of one call, which the caller's promises make valid.
unsafe impl<T> Send for Strided<T> {}
unsafe impl<T> Sync for Strided<T> {}

impl<T> Strided<T> {
    /// The operand at `ptr` whose element (i, j) lies `i · rs + j · cs` elements on.
    pub const fn new(ptr: *const T, rs: isize, cs: isize) -> Self {
        Self { ptr, rs, cs }
    }

    /// Element (i, j).
    ///
    /// # Safety
    /// The element lies inside the operand.
    pub(super) unsafe fn at(self, i: usize, j: usize) -> *const T {
        unsafe { self.ptr.offset(i as isize * self.rs + j as isize * self.cs) }
    }
}

/// Where a task reads a block's panels of `rhs` from.
#[derive(Clone, Copy)]
enum Panels {
    /// Packed once per block: panel `p` as row `p` (`kc · 16` values apart), 16 values a
    /// step.
    Packed(Strided<f32>),
    /// The operand itself, its rows contiguous, read where it lies (full panels; a last
    /// partial one is packed by its task).
    InPlace(Strided<f32>),
}

/// How a block's sums meet `dst`: `dst = alpha · dst + beta · sums` when `read`, else
/// `dst = beta · sums`.
#[derive(Clone, Copy)]
struct Store {
    alpha: f32,
    beta: f32,
    read: bool,
}

/// `dst [m, n] = alpha · dst + beta · lhs [m, k] · rhs [k, n]` (`dst` read only when
/// `read_dst`), on `threads` of rayon's threads (one: on this thread), on `micro`.
///
/// # Safety
/// The CPU runs `micro` ([`Micro::available`]). Every element of `lhs` (m × k), `rhs`
/// (k × n) and `dst` (m × n) that the strides reach is valid for reads (and `dst` for
/// writes); `dst` overlaps neither input and no two of its elements are the same.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    micro: Micro,
    (m, n, k): (usize, usize, usize),
    dst: Strided<f32>,
    read_dst: bool,
    lhs: Strided<f32>,
    rhs: Strided<f32>,
    (alpha, beta): (f32, f32),
    threads: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        for i in 0..m {
            for j in 0..n {
                // SAFETY: the caller's promises on dst.
                unsafe {
                    let c = dst.at(i, j) as *mut f32;
                    *c = if read_dst { alpha * *c } else { 0.0 };
                }
            }
        }
        return;
    }
    // Blocks of `k` of equal size: 576 runs as three of 192, not 256 + 256 + 64.
    let k_blocks = k.div_ceil(KC);
    let kc_max = k.div_ceil(k_blocks);
    // A few rows (a LoRA weight's gradient: 16) use each value of a row-major rhs at
    // most a few times: the micro-kernel reads its rows where they are instead of paying
    // a copy of the whole rhs for them.
    let in_place = rhs.cs == 1 && m <= IN_PLACE_MAX_ROWS;
    let run = |packed: &mut Vec<f32>| {
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            let panels = nc.div_ceil(NR);
            for pc in (0..k).step_by(kc_max) {
                let kc = kc_max.min(k - pc);
                if !in_place {
                    // `pack_rhs` writes every value of its panel (zeros past column n),
                    // so only newly grown room is zeroed, not the whole block each call.
                    packed.resize(panels * kc * NR, 0.0);
                    let pack = |(p, out): (usize, &mut [f32])| {
                        // SAFETY: the caller's promises on rhs; panel `p` covers columns
                        // `jc + 16p ..` (those below n) of rows `pc .. pc + kc`.
                        unsafe { pack_rhs(rhs, (pc, kc), (jc + p * NR, n), out) }
                    };
                    if threads > 1 {
                        packed.par_chunks_mut(kc * NR).enumerate().for_each(pack);
                    } else {
                        packed.chunks_mut(kc * NR).enumerate().for_each(pack);
                    }
                }
                let store = if pc == 0 {
                    Store {
                        alpha,
                        beta,
                        read: read_dst,
                    }
                } else {
                    Store {
                        alpha: 1.0,
                        beta,
                        read: true,
                    }
                };
                // Panel p is "row" p of the packed block.
                let packed = Strided::new(packed.as_ptr(), (kc * NR) as isize, 1);
                let task = |(rows, cols): (std::ops::Range<usize>, std::ops::Range<usize>)| {
                    LHS_PACK.with(|kept| {
                        let mut fresh = Vec::new();
                        let mut kept = kept.try_borrow_mut();
                        let buf = match kept.as_mut() {
                            Ok(b) => &mut **b,
                            Err(_) => &mut fresh,
                        };
                        // SAFETY: the caller's promises; the task's tiles are rows
                        // `rows` × panels `cols` of this block, written by no other task.
                        unsafe {
                            block_task(
                                micro,
                                (rows, cols),
                                (pc, kc),
                                (jc, n),
                                lhs,
                                if in_place {
                                    Panels::InPlace(rhs)
                                } else {
                                    Panels::Packed(packed)
                                },
                                dst,
                                store,
                                buf,
                            )
                        }
                    })
                };
                let tasks = plan(m, panels, threads, micro);
                if threads > 1 && tasks.len() > 1 {
                    tasks.into_par_iter().for_each(task);
                } else {
                    tasks.into_iter().for_each(task);
                }
            }
        }
    };
    RHS_PACK.with(|kept| match kept.try_borrow_mut() {
        Ok(mut packed) => run(&mut packed),
        Err(_) => run(&mut Vec::new()),
    });
}

/// The tasks of one block: `(rows, panels of 16 columns)`. Enough rows: bands of rows of
/// equal height (whole micro-tiles, at most [`MC`]), a multiple of `threads` of them,
/// each with every panel; few rows: every row, the panels split between the threads
/// (whole tiles of `micro`).
fn plan(
    m: usize,
    panels: usize,
    threads: usize,
    micro: Micro,
) -> Vec<(std::ops::Range<usize>, std::ops::Range<usize>)> {
    let threads = threads.max(1);
    let mr = micro.rows();
    if m >= 8 * mr * threads || panels < threads {
        // Whole micro-tiles, shared out as evenly as they go (1024 rows in 8 bands: 126
        // or 132 rows each, not 7 of 132 and one of 100).
        let units = m.div_ceil(mr);
        let bands = (threads * m.div_ceil(threads * MC)).min(units);
        (0..bands)
            .map(|b| {
                let (from, to) = (b * units / bands * mr, (b + 1) * units / bands * mr);
                (from..to.min(m), 0..panels)
            })
            .filter(|(rows, _)| !rows.is_empty())
            .collect()
    } else {
        let per = panels.div_ceil(threads).next_multiple_of(micro.panels());
        (0..panels)
            .step_by(per)
            .map(|p| (0..m, p..(p + per).min(panels)))
            .collect()
    }
}

/// Packs columns `col .. col + 16` (those below `n`; zeros past it) of rows
/// `pc .. pc + kc` of `rhs` into `out` (`kc` rows of 16).
///
/// # Safety
/// Those elements of `rhs` are valid for reads; `out` holds `kc · 16` values.
unsafe fn pack_rhs(
    rhs: Strided<f32>,
    (pc, kc): (usize, usize),
    (col, n): (usize, usize),
    out: &mut [f32],
) {
    let cols = NR.min(n - col);
    if rhs.cs == 1 && cols == NR {
        for (p, row) in out.chunks_exact_mut(NR).enumerate() {
            // SAFETY: the caller's promises: 16 contiguous values of row pc + p.
            let src = unsafe { std::slice::from_raw_parts(rhs.at(pc + p, col), NR) };
            row.copy_from_slice(src);
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if rhs.rs == 1 && cols == NR {
        // SAFETY: the caller's promises (and AVX2, the module's condition).
        unsafe { x86::pack_columns(rhs, pc, kc, col, out) };
        return;
    }
    for (p, row) in out.chunks_exact_mut(NR).enumerate() {
        for (j, v) in row.iter_mut().enumerate() {
            *v = if j < cols {
                // SAFETY: the caller's promises.
                unsafe { *rhs.at(pc + p, col + j) }
            } else {
                // Past column n: zeros.
                0.0
            };
        }
    }
}

/// Packs rows `rows` of columns `pc .. pc + kc` of `lhs` into `out`, panels of `mr` rows
/// (`kc` groups of `mr` each, zeros past the last row).
///
/// # Safety
/// Those elements of `lhs` are valid for reads.
unsafe fn pack_lhs(
    lhs: Strided<f32>,
    rows: std::ops::Range<usize>,
    (pc, kc): (usize, usize),
    mr: usize,
    out: &mut Vec<f32>,
) {
    let panels = rows.len().div_ceil(mr);
    out.clear();
    out.resize(panels * kc * mr, 0.0);
    for (panel, dst) in out.chunks_exact_mut(kc * mr).enumerate() {
        let first = rows.start + panel * mr;
        let height = mr.min(rows.end - first);
        for i in 0..height {
            // SAFETY: the caller's promises.
            let src = unsafe { lhs.at(first + i, pc) };
            if lhs.cs == 1 {
                // SAFETY: the caller's promises: row first + i holds kc values from pc.
                let src = unsafe { std::slice::from_raw_parts(src, kc) };
                for (p, v) in src.iter().enumerate() {
                    dst[p * mr + i] = *v;
                }
            } else {
                for p in 0..kc {
                    // SAFETY: the caller's promises.
                    dst[p * mr + i] = unsafe { *src.offset(p as isize * lhs.cs) };
                }
            }
        }
    }
}

/// Where the micro-kernel reads panel `p` of a block from: `(first value, stride of a
/// step of k)`. A partial panel read in place is packed into `edge` first.
///
/// # Safety
/// As for [`block_task`]; `edge` holds `kc · 16` values.
unsafe fn panel_source(
    rhs: Panels,
    p: usize,
    (pc, kc): (usize, usize),
    (jc, n): (usize, usize),
    edge: &mut [f32],
) -> (*const f32, isize) {
    let col = jc + p * NR;
    match rhs {
        // SAFETY: panel p of the block holds kc · 16 values.
        Panels::Packed(packed) => (unsafe { packed.at(p, 0) }, NR as isize),
        // SAFETY: the caller's promises: 16 values of each of rows pc .. pc + kc.
        Panels::InPlace(rhs) if n - col >= NR => (unsafe { rhs.at(pc, col) }, rhs.rs),
        Panels::InPlace(rhs) => {
            // SAFETY: the caller's promises; `edge` holds kc rows of 16.
            unsafe { pack_rhs(rhs, (pc, kc), (col, n), &mut edge[..kc * NR]) };
            (edge.as_ptr(), NR as isize)
        }
    }
}

/// One task of a block: packs its rows of `lhs`, then runs the micro-kernel on each of
/// its tiles, a tile's panels at a time of the packed `rhs`.
///
/// # Safety
/// As for [`gemm`]; `rhs` holds the block's panels; no other task writes these tiles.
#[allow(clippy::too_many_arguments)]
unsafe fn block_task(
    micro: Micro,
    (rows, panels): (std::ops::Range<usize>, std::ops::Range<usize>),
    (pc, kc): (usize, usize),
    (jc, n): (usize, usize),
    lhs: Strided<f32>,
    rhs: Panels,
    dst: Strided<f32>,
    store: Store,
    buf: &mut Vec<f32>,
) {
    let mr = micro.rows();
    // SAFETY: the caller's promises.
    unsafe { pack_lhs(lhs, rows.clone(), (pc, kc), mr, buf) };
    // Only the block's last panel can be partial: one edge buffer serves every tile.
    let mut edge = [0f32; KC * NR];
    for p in panels.clone().step_by(micro.panels()) {
        let col = jc + p * NR;
        let pair = micro.panels() == 2 && p + 1 < panels.end;
        let cols = (if pair { 2 * NR } else { NR }).min(n - col);
        // SAFETY: the caller's promises.
        let first = unsafe { panel_source(rhs, p, (pc, kc), (jc, n), &mut edge) };
        let second = if pair {
            // SAFETY: as above; the first panel is whole, so it is not in `edge`.
            unsafe { panel_source(rhs, p + 1, (pc, kc), (jc, n), &mut edge) }
        } else {
            first
        };
        for (t, a) in buf.chunks_exact(kc * mr).enumerate() {
            let row = rows.start + t * mr;
            let height = mr.min(rows.end - row);
            let c = (
                // SAFETY: the tile's first element lies inside dst.
                unsafe { dst.at(row, col) as *mut f32 },
                (dst.rs, dst.cs),
            );
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the caller's promises (the CPU runs `micro`); the tile's elements of
            // dst are this task's.
            unsafe {
                match (micro, pair) {
                    (Micro::Avx2, _) => {
                        x86::tile(kc, a.as_ptr(), first, c.0, c.1, (height, cols), store)
                    }
                    (Micro::Avx512, true) => {
                        avx512::tile::<2>(kc, a.as_ptr(), [first, second], c, (height, cols), store)
                    }
                    (Micro::Avx512, false) => {
                        avx512::tile::<1>(kc, a.as_ptr(), [first, second], c, (height, cols), store)
                    }
                }
            };
            #[cfg(not(target_arch = "x86_64"))]
            let _ = (a, c, height, cols, store, first, second);
        }
    }
}

/// Asks for the rows of a tile of `dst` (element (i, j) at `c + i·rs + j·cs`, `height` ×
/// `width` of it valid: each row's first and last element) while its sums are made.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn prefetch_rows(c: *mut f32, (rs, cs): (isize, isize), (height, width): (usize, usize)) {
    use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
    for i in 0..height {
        let row = c.wrapping_offset(i as isize * rs);
        let last = row.wrapping_offset((width as isize - 1) * cs);
        // SAFETY: a prefetch faults on no address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(row.cast());
            _mm_prefetch::<_MM_HINT_T0>(last.cast());
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::{Store, Strided, MR, NR};

    /// The 6 × 16 micro-kernel: `kc` steps over a packed row panel `a` (6 values a step)
    /// and a column panel `b` (16 contiguous values a step, `b_stride` apart), then the
    /// tile stored by `store` into
    /// `c` (element (i, j) at `c + i·rs + j·cs`, `height` × `width` of it valid).
    ///
    /// # Safety
    /// AVX2 and FMA; `a` holds `kc · 6` values, `b` 16 at each of its `kc` steps; the
    /// valid elements of the tile are writable.
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile(
        kc: usize,
        a: *const f32,
        (b, b_stride): (*const f32, isize),
        c: *mut f32,
        (rs, cs): (isize, isize),
        (height, width): (usize, usize),
        store: Store,
    ) {
        super::prefetch_rows(c, (rs, cs), (height, width));
        let mut acc = [_mm256_setzero_ps(); 2 * MR];
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            // SAFETY: the caller's promises on the panels' lengths.
            unsafe {
                let b0 = _mm256_loadu_ps(b);
                let b1 = _mm256_loadu_ps(b.add(8));
                for i in 0..MR {
                    let ai = _mm256_broadcast_ss(&*a.add(i));
                    acc[2 * i] = _mm256_fmadd_ps(ai, b0, acc[2 * i]);
                    acc[2 * i + 1] = _mm256_fmadd_ps(ai, b1, acc[2 * i + 1]);
                }
                a = a.add(MR);
                b = b.offset(b_stride);
            }
        }
        let beta = _mm256_set1_ps(store.beta);
        let alpha = _mm256_set1_ps(store.alpha);
        if height == MR && width == NR && cs == 1 {
            for i in 0..MR {
                // SAFETY: a full tile of contiguous rows (the caller's promises).
                unsafe {
                    let row = c.offset(i as isize * rs);
                    let (mut v0, mut v1) = (
                        _mm256_mul_ps(acc[2 * i], beta),
                        _mm256_mul_ps(acc[2 * i + 1], beta),
                    );
                    if store.read {
                        v0 = _mm256_fmadd_ps(_mm256_loadu_ps(row), alpha, v0);
                        v1 = _mm256_fmadd_ps(_mm256_loadu_ps(row.add(8)), alpha, v1);
                    }
                    _mm256_storeu_ps(row, v0);
                    _mm256_storeu_ps(row.add(8), v1);
                }
            }
            return;
        }
        let mut sums = [0f32; MR * NR];
        for (i, pair) in acc.chunks_exact(2).enumerate() {
            // SAFETY: `sums` holds 6 rows of 16.
            unsafe {
                _mm256_storeu_ps(sums.as_mut_ptr().add(i * NR), pair[0]);
                _mm256_storeu_ps(sums.as_mut_ptr().add(i * NR + 8), pair[1]);
            }
        }
        for i in 0..height {
            for j in 0..width {
                // SAFETY: element (i, j) of the tile is valid (the caller's promises).
                unsafe {
                    let e = c.offset(i as isize * rs + j as isize * cs);
                    let s = store.beta * sums[i * NR + j];
                    *e = if store.read { store.alpha * *e + s } else { s };
                }
            }
        }
    }

    /// Packs 16 columns (`col ..`) of rows `pc .. pc + kc` of a column-major `rhs`
    /// (`rs == 1`: each column's values contiguous) into `out`, 8 × 8 blocks transposed
    /// in registers.
    ///
    /// # Safety
    /// AVX2; the elements are valid for reads; `out` holds `kc · 16` values.
    #[target_feature(enable = "avx2")]
    pub unsafe fn pack_columns(
        rhs: Strided<f32>,
        pc: usize,
        kc: usize,
        col: usize,
        out: &mut [f32],
    ) {
        let whole = kc / 8 * 8;
        for half in 0..2 {
            // SAFETY: the caller's promises: columns col + 8·half .. + 8 hold kc values
            // from row pc each.
            let src: [*const f32; 8] =
                std::array::from_fn(|j| unsafe { rhs.at(pc, col + 8 * half + j) });
            for p in (0..whole).step_by(8) {
                // SAFETY: 8 values of each column from p; rows p .. p + 8 of `out`.
                unsafe {
                    let r: [__m256; 8] = std::array::from_fn(|j| _mm256_loadu_ps(src[j].add(p)));
                    let t = transpose8(r);
                    for (q, v) in t.iter().enumerate() {
                        _mm256_storeu_ps(out.as_mut_ptr().add((p + q) * NR + 8 * half), *v);
                    }
                }
            }
            for p in whole..kc {
                for (j, s) in src.iter().enumerate() {
                    // SAFETY: as above, one value.
                    out[p * NR + 8 * half + j] = unsafe { *s.add(p) };
                }
            }
        }
    }

    /// The transpose of an 8 × 8 block held as 8 rows.
    #[inline(always)]
    unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let s0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let s1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let s2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let s3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let s4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let s5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let s6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let s7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(s0, s4),
            _mm256_permute2f128_ps::<0x20>(s1, s5),
            _mm256_permute2f128_ps::<0x20>(s2, s6),
            _mm256_permute2f128_ps::<0x20>(s3, s7),
            _mm256_permute2f128_ps::<0x31>(s0, s4),
            _mm256_permute2f128_ps::<0x31>(s1, s5),
            _mm256_permute2f128_ps::<0x31>(s2, s6),
            _mm256_permute2f128_ps::<0x31>(s3, s7),
        ]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `alpha · dst + beta · lhs · rhs` by the textbook loop, in f64.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn textbook(
        (m, n, k): (usize, usize, usize),
        dst: &[f32],
        read: bool,
        lhs: &[f32],
        lhs_row_major: bool,
        rhs: &[f32],
        rhs_row_major: bool,
        (alpha, beta): (f32, f32),
    ) -> Vec<f32> {
        let a = |i: usize, p: usize| {
            if lhs_row_major {
                lhs[i * k + p]
            } else {
                lhs[p * m + i]
            }
        };
        let b = |p: usize, j: usize| {
            if rhs_row_major {
                rhs[p * n + j]
            } else {
                rhs[j * k + p]
            }
        };
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k).map(|p| a(i, p) as f64 * b(p, j) as f64).sum();
                let d = if read {
                    alpha as f64 * dst[i * n + j] as f64
                } else {
                    0.0
                };
                out[i * n + j] = (d + beta as f64 * s) as f32;
            }
        }
        out
    }

    /// `len` values in [−1, 1], spread by `seed`.
    pub(crate) fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) % 2001) as f32
                    / 1000.0
                    - 1.0
            })
            .collect()
    }

    /// The micro-kernels this CPU runs (AVX2 on every CPU the tests run on).
    fn micros() -> Vec<Micro> {
        assert!(
            available(),
            "the packed kernel needs AVX2 and FMA; this machine lacks them"
        );
        [Micro::Avx2, Micro::Avx512]
            .into_iter()
            .filter(|m| m.available())
            .collect()
    }

    /// Every layout, edge (rows, columns and `k` not multiples of a tile; an odd number of
    /// panels, so that the AVX-512 kernel runs a single panel too; `k` over a block),
    /// store and thread count, on every micro-kernel the CPU runs.
    #[test]
    fn matches_the_textbook_loop_for_every_layout_and_edge() {
        let micros = micros();
        let shapes = [
            (1, 1, 1),
            (7, 17, 5),
            (13, 33, 300),
            (6, 16, 256),
            (50, 40, 513),
            (100, 70, 16),
            (200, 35, 600),
            (24, 48, 40),
            (30, 80, 7),
        ];
        for ((m, n, k), &micro) in shapes
            .into_iter()
            .flat_map(|s| micros.iter().map(move |m| (s, m)))
        {
            for (lhs_rm, rhs_rm) in [(true, false), (true, true), (false, true), (false, false)] {
                for (read, alpha, beta) in [(false, 0.0, 1.0), (true, 1.0, 0.5), (true, 0.25, -2.0)]
                {
                    for threads in [1, 2] {
                        let lhs = values(m * k, 1);
                        let rhs = values(k * n, 2);
                        let mut dst = values(m * n, 3);
                        let want = textbook(
                            (m, n, k),
                            &dst,
                            read,
                            &lhs,
                            lhs_rm,
                            &rhs,
                            rhs_rm,
                            (alpha, beta),
                        );
                        let (lrs, lcs) = if lhs_rm {
                            (k as isize, 1)
                        } else {
                            (1, m as isize)
                        };
                        let (rrs, rcs) = if rhs_rm {
                            (n as isize, 1)
                        } else {
                            (1, k as isize)
                        };
                        // SAFETY: the CPU runs `micro`; the strides stay inside the buffers.
                        unsafe {
                            gemm(
                                micro,
                                (m, n, k),
                                Strided::new(dst.as_mut_ptr(), n as isize, 1),
                                read,
                                Strided::new(lhs.as_ptr(), lrs, lcs),
                                Strided::new(rhs.as_ptr(), rrs, rcs),
                                (alpha, beta),
                                threads,
                            )
                        };
                        let tol = 1e-5 * (k as f32).sqrt() * beta.abs().max(1.0) * 4.0;
                        for (g, w) in dst.iter().zip(&want) {
                            assert!(
                                (g - w).abs() <= tol,
                                "{micro:?} m {m} n {n} k {k} lhs row-major {lhs_rm} rhs row-major {rhs_rm} read {read} threads {threads}: {g} against {w}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_column_major_destination_and_an_empty_sum() {
        for micro in micros() {
            a_column_major_destination(micro);
        }
        let mut kept = vec![2.0f32; 6];
        // SAFETY: k = 0 reads no operand; dst is 2 × 3.
        unsafe {
            gemm(
                Micro::Avx2,
                (2, 3, 0),
                Strided::new(kept.as_mut_ptr(), 3, 1),
                true,
                Strided::new(std::ptr::null(), 0, 0),
                Strided::new(std::ptr::null(), 0, 0),
                (0.5, 1.0),
                1,
            )
        };
        assert_eq!(kept, vec![1.0; 6]);
    }

    fn a_column_major_destination(micro: Micro) {
        let (m, n, k) = (9, 20, 31);
        let lhs = values(m * k, 4);
        let rhs = values(k * n, 5);
        let want = textbook((m, n, k), &[], false, &lhs, true, &rhs, true, (0.0, 1.0));
        let mut dst = vec![f32::NAN; m * n];
        // SAFETY: the CPU runs `micro`; dst is column-major m × n.
        unsafe {
            gemm(
                micro,
                (m, n, k),
                Strided::new(dst.as_mut_ptr(), 1, m as isize),
                false,
                Strided::new(lhs.as_ptr(), k as isize, 1),
                Strided::new(rhs.as_ptr(), n as isize, 1),
                (0.0, 1.0),
                2,
            )
        };
        for i in 0..m {
            for j in 0..n {
                assert!(
                    (dst[j * m + i] - want[i * n + j]).abs() < 1e-4,
                    "{micro:?} ({i}, {j})"
                );
            }
        }
    }
}
