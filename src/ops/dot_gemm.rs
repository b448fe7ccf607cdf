//! `y [n, r] (+)= x [n, k] · Wᵀ` for a row-major `x` and a row-major `W [r, k]` (a
//! dequantized panel of a stored weight), as dot products along `k` on AVX-512 or AVX2,
//! with no packing of either operand.
//!
//! Written here because the gemm crate packs both operands into its own layout on every
//! call: for a prompt through a dequantized panel that is a second pass over the panel
//! (a fifth of a 92-token prefill of a Llama-3.2-1B-shaped model in perf), and its 64-row
//! AVX-512 tiles waste most of a tile on a prompt of 92 rows. Both rows of a dot product
//! are contiguous here, so the kernel reads them as they are: a tile of 4 input rows × 6
//! weight rows keeps 24 accumulators of 16 lanes, each step of 16 values loads 10 vectors
//! for 24 FMAs, and a tile's sums are reduced across their lanes once at the end of a `k`
//! block, by one tree for all of them. AVX2's sixteen registers hold a tile of 2 × 6 (12
//! accumulators of 8 lanes, 8 loads for 12 FMAs a step). On AVX2 the gemm crate reached
//! 61 GFLOP/s on a 92-row prompt against 150–180 on training shapes (AMD Zen 3).
//! Which kernel a shape runs on is decided by timing (`ops::gemm_choice`).

use rayon::prelude::*;

/// Values of `k` per block: a tile's weight rows stay in L1 while the block's input rows
/// stream past them from L2 (6 rows × 1024 values × 4 bytes = 24 KiB).
const K_BLOCK: usize = 1024;
/// Input rows per block: a block's rows of one `k` block stay in L2 (128 × 4 KiB) while
/// the task's weight rows pass them.
const ROW_BLOCK: usize = 128;
/// Most weight rows per parallel task (whole tiles of both kernels).
const COLS_PER_TASK: usize = 60;
/// Weight rows of a tile of either kernel.
const TILE_COLS: usize = 6;

/// The SIMD kernels, best first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Simd {
    Avx512,
    Avx2,
    None,
}

fn simd() -> Simd {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::is_x86_feature_detected as has;
        if has!("avx512f") {
            return Simd::Avx512;
        }
        if has!("avx2") && has!("fma") {
            return Simd::Avx2;
        }
    }
    Simd::None
}

/// Whether this CPU runs one of the SIMD kernels (AVX-512, or AVX2 with FMA).
pub fn available() -> bool {
    simd() != Simd::None
}

/// A raw pointer that may cross to the worker threads.
#[derive(Clone, Copy)]
struct SendPtr<T>(*mut T);
// SAFETY: each task writes a disjoint set of columns of `y` (see `x_wt`).
unsafe impl<T> Send for SendPtr<T> {}
unsafe impl<T> Sync for SendPtr<T> {}

impl<T> SendPtr<T> {
    /// The pointer (a method, so that closures capture the whole wrapper).
    fn ptr(self) -> *mut T {
        self.0
    }
}

/// `y[t·y_stride + j] (+)= scale · Σ_p x[t·x_stride + p] · w[j·w_stride + p]` for
/// `t < n`, `j < r`, on every thread when `parallel`. Without AVX-512 or AVX2 the same
/// loops run in plain Rust (correct, not fast: [`available`] keeps the kernel out of the
/// choice there).
///
/// # Safety
/// `x` must be valid for reads at `t · x_stride + p` and `w` at `j · w_stride + p` for
/// `p < k`, and `y` for reads and writes at `t · y_stride + j`, for every `t < n`,
/// `j < r`, with `y` overlapping neither `x` nor `w`, and no two of those `y` elements the
/// same (`y_stride ≥ r` when `n > 1`): tasks write their columns in parallel.
pub unsafe fn x_wt(
    dims: (usize, usize, usize),
    x: (*const f32, usize),
    w: (*const f32, usize),
    y: (*mut f32, usize),
    scale_add: (f32, bool),
    parallel: bool,
) {
    x_wt_on(simd(), dims, x, w, y, scale_add, parallel)
}

/// [`x_wt`] on the kernel of `simd` (which the CPU must have; the tests run each).
unsafe fn x_wt_on(
    simd: Simd,
    (n, r, k): (usize, usize, usize),
    (x, x_stride): (*const f32, usize),
    (w, w_stride): (*const f32, usize),
    (y, y_stride): (*mut f32, usize),
    scale_add: (f32, bool),
    parallel: bool,
) {
    let y = SendPtr(y);
    let (x, w) = (SendPtr(x as *mut f32), SendPtr(w as *mut f32));
    let task = |columns: std::ops::Range<usize>| {
        let (first, cols) = (columns.start, columns.len());
        let dims = (n, cols, k);
        let (x, w) = (
            (x.ptr() as *const f32, x_stride),
            (w.ptr().add(first * w_stride) as *const f32, w_stride),
        );
        let y = (y.ptr().add(first), y_stride);
        // SAFETY: the caller's promises; this task's columns are `first..first + cols`,
        // and each SIMD kernel runs only where the CPU has it.
        unsafe {
            match simd {
                #[cfg(target_arch = "x86_64")]
                Simd::Avx512 => blocked(
                    dims,
                    x,
                    w,
                    y,
                    scale_add,
                    (x86::TILE, x86::tile_4x6, x86::edge_tile),
                ),
                #[cfg(target_arch = "x86_64")]
                Simd::Avx2 => blocked(
                    dims,
                    x,
                    w,
                    y,
                    scale_add,
                    (avx2::TILE, avx2::tile_2x6, avx2::edge_tile),
                ),
                _ => portable_columns(dims, x, w, y, scale_add),
            }
        }
    };
    if parallel && r > COLS_PER_TASK {
        // A multiple of the threads' count of tasks, of equal size in whole tiles: 192
        // columns on two threads as four tasks of 48, not 60 + 60 + 60 + 12.
        let threads = rayon::current_num_threads().max(1);
        let tiles = r.div_ceil(TILE_COLS);
        let tasks = (threads * r.div_ceil(threads * COLS_PER_TASK)).min(tiles);
        (0..tasks).into_par_iter().for_each(|t| {
            let (from, to) = (
                t * tiles / tasks * TILE_COLS,
                (t + 1) * tiles / tasks * TILE_COLS,
            );
            task(from..to.min(r))
        });
    } else {
        task(0..r);
    }
}

/// [`x_wt`]'s loops without SIMD.
unsafe fn portable_columns(
    (n, r, k): (usize, usize, usize),
    (x, xs): (*const f32, usize),
    (w, ws): (*const f32, usize),
    (y, y_stride): (*mut f32, usize),
    (scale, accumulate): (f32, bool),
) {
    if k == 0 {
        // Nothing is read: an empty sum (and no slice is made of pointers that need not
        // be valid for it).
        for t in 0..n {
            for j in 0..r {
                let out = y.add(t * y_stride + j);
                *out = if accumulate { *out } else { 0.0 };
            }
        }
        return;
    }
    for t in 0..n {
        let xr = std::slice::from_raw_parts(x.add(t * xs), k);
        for j in 0..r {
            let wr = std::slice::from_raw_parts(w.add(j * ws), k);
            let sum = scale * xr.iter().zip(wr).map(|(a, b)| a * b).sum::<f32>();
            let out = y.add(t * y_stride + j);
            *out = if accumulate { *out + sum } else { sum };
        }
    }
}

/// A full tile: `(x, w, len, y, (scale, add))` over `len` values of `k`.
#[cfg(target_arch = "x86_64")]
type FullTile =
    unsafe fn((*const f32, usize), (*const f32, usize), usize, (*mut f32, usize), (f32, bool));
/// A partial tile of `rows × cols`: `(rows, cols, x, w, len, y, (scale, add))`.
#[cfg(target_arch = "x86_64")]
type EdgeTile = unsafe fn(
    usize,
    usize,
    (*const f32, usize),
    (*const f32, usize),
    usize,
    (*mut f32, usize),
    (f32, bool),
);

/// The loops both SIMD kernels share: `k` in blocks of [`K_BLOCK`] (the first block
/// writes or adds as asked, the later ones add), input rows in blocks of [`ROW_BLOCK`],
/// and within them tiles of the kernel's size, a tile's weight rows staying in L1 while
/// the block's input rows (in L2) pass them; partial tiles at the edges.
///
/// # Safety
/// As for [`x_wt`], for columns `0..r` of the pointers given, on a CPU that runs the
/// kernel's tiles.
#[cfg(target_arch = "x86_64")]
unsafe fn blocked(
    (n, r, k): (usize, usize, usize),
    (x, xs): (*const f32, usize),
    (w, ws): (*const f32, usize),
    (y, y_stride): (*mut f32, usize),
    (scale, accumulate): (f32, bool),
    ((tile_rows, tile_cols), full, edge): ((usize, usize), FullTile, EdgeTile),
) {
    if k == 0 {
        if !accumulate {
            for t in 0..n {
                std::ptr::write_bytes(y.add(t * y_stride), 0, r);
            }
        }
        return;
    }
    let mut k0 = 0;
    while k0 < k {
        let len = K_BLOCK.min(k - k0);
        let add = accumulate || k0 > 0;
        let mut t0 = 0;
        while t0 < n {
            let t_end = (t0 + ROW_BLOCK).min(n);
            let mut j = 0;
            while j < r {
                let cols = tile_cols.min(r - j);
                let mut t = t0;
                while t < t_end {
                    let rows = tile_rows.min(t_end - t);
                    let (xp, wp) = ((x.add(t * xs + k0), xs), (w.add(j * ws + k0), ws));
                    let yp = (y.add(t * y_stride + j), y_stride);
                    if (rows, cols) == (tile_rows, tile_cols) {
                        full(xp, wp, len, yp, (scale, add));
                    } else {
                        edge(rows, cols, xp, wp, len, yp, (scale, add));
                    }
                    t += tile_rows;
                }
                j += tile_cols;
            }
            t0 = t_end;
        }
        k0 += K_BLOCK;
    }
}

/// `$tile::<R, C>(args)` for the run-time `rows` and `cols` among the sizes listed: the
/// edge tiles of both kernels, each size its own monomorphized loop.
#[cfg(target_arch = "x86_64")]
macro_rules! tile_of_size {
    ($rows:expr, $cols:expr, [$($r:literal),*], $cs:tt, $tile:ident $args:tt) => {
        match $rows {
            $( $r => tile_of_size!(@cols $r, $cols, $cs, $tile $args), )*
            _ => unreachable!(),
        }
    };
    (@cols $r:literal, $cols:expr, [$($c:literal),*], $tile:ident $args:tt) => {
        match $cols {
            $( $c => $tile::<$r, $c> $args, )*
            _ => unreachable!(),
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Input rows × weight rows of the full tile.
    pub const TILE: (usize, usize) = (4, 6);

    /// A partial tile at the edges, through the full-size kernels of its size.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn edge_tile(
        rows: usize,
        cols: usize,
        x: (*const f32, usize),
        w: (*const f32, usize),
        len: usize,
        y: (*mut f32, usize),
        add: (f32, bool),
    ) {
        tile_of_size!(
            rows,
            cols,
            [1, 2, 3, 4],
            [1, 2, 3, 4, 5, 6],
            tile(x, w, len, y, add)
        )
    }

    /// The full tile, written out: 4 input rows × 6 weight rows, 24 named accumulators
    /// (the generic [`tile`] with an array of them had one spilled to the stack on every
    /// step, halving the rate). Each step of 16 values loads 4 input vectors (from L2) and
    /// 6 weight vectors (from L1) for 24 FMAs.
    #[inline]
    #[target_feature(enable = "avx512f")]
    pub unsafe fn tile_4x6(
        (x, xs): (*const f32, usize),
        (w, ws): (*const f32, usize),
        len: usize,
        (y, ys): (*mut f32, usize),
        (scale, add): (f32, bool),
    ) {
        let full = len / 16 * 16;
        let (x0, x1, x2, x3) = (x, x.add(xs), x.add(2 * xs), x.add(3 * xs));
        let (w0, w1, w2) = (w, w.add(ws), w.add(2 * ws));
        let (w3, w4, w5) = (w.add(3 * ws), w.add(4 * ws), w.add(5 * ws));
        let z = _mm512_setzero_ps();
        let (mut a00, mut a01, mut a02, mut a03, mut a04, mut a05) = (z, z, z, z, z, z);
        let (mut a10, mut a11, mut a12, mut a13, mut a14, mut a15) = (z, z, z, z, z, z);
        let (mut a20, mut a21, mut a22, mut a23, mut a24, mut a25) = (z, z, z, z, z, z);
        let (mut a30, mut a31, mut a32, mut a33, mut a34, mut a35) = (z, z, z, z, z, z);
        let mut p = 0;
        while p < full {
            let v0 = _mm512_loadu_ps(w0.add(p));
            let v1 = _mm512_loadu_ps(w1.add(p));
            let v2 = _mm512_loadu_ps(w2.add(p));
            let v3 = _mm512_loadu_ps(w3.add(p));
            let v4 = _mm512_loadu_ps(w4.add(p));
            let v5 = _mm512_loadu_ps(w5.add(p));
            let u = _mm512_loadu_ps(x0.add(p));
            a00 = _mm512_fmadd_ps(u, v0, a00);
            a01 = _mm512_fmadd_ps(u, v1, a01);
            a02 = _mm512_fmadd_ps(u, v2, a02);
            a03 = _mm512_fmadd_ps(u, v3, a03);
            a04 = _mm512_fmadd_ps(u, v4, a04);
            a05 = _mm512_fmadd_ps(u, v5, a05);
            let u = _mm512_loadu_ps(x1.add(p));
            a10 = _mm512_fmadd_ps(u, v0, a10);
            a11 = _mm512_fmadd_ps(u, v1, a11);
            a12 = _mm512_fmadd_ps(u, v2, a12);
            a13 = _mm512_fmadd_ps(u, v3, a13);
            a14 = _mm512_fmadd_ps(u, v4, a14);
            a15 = _mm512_fmadd_ps(u, v5, a15);
            let u = _mm512_loadu_ps(x2.add(p));
            a20 = _mm512_fmadd_ps(u, v0, a20);
            a21 = _mm512_fmadd_ps(u, v1, a21);
            a22 = _mm512_fmadd_ps(u, v2, a22);
            a23 = _mm512_fmadd_ps(u, v3, a23);
            a24 = _mm512_fmadd_ps(u, v4, a24);
            a25 = _mm512_fmadd_ps(u, v5, a25);
            let u = _mm512_loadu_ps(x3.add(p));
            a30 = _mm512_fmadd_ps(u, v0, a30);
            a31 = _mm512_fmadd_ps(u, v1, a31);
            a32 = _mm512_fmadd_ps(u, v2, a32);
            a33 = _mm512_fmadd_ps(u, v3, a33);
            a34 = _mm512_fmadd_ps(u, v4, a34);
            a35 = _mm512_fmadd_ps(u, v5, a35);
            p += 16;
        }
        let first = reduce16([
            a00, a01, a02, a03, a10, a11, a12, a13, a20, a21, a22, a23, a30, a31, a32, a33,
        ]);
        let rest = reduce16([
            a04, a05, a14, a15, a24, a25, a34, a35, z, z, z, z, z, z, z, z,
        ]);
        let mut first_sums = [0f32; 16];
        let mut rest_sums = [0f32; 16];
        _mm512_storeu_ps(first_sums.as_mut_ptr(), first);
        _mm512_storeu_ps(rest_sums.as_mut_ptr(), rest);
        for r in 0..4 {
            let out = y.add(r * ys);
            let row = [
                first_sums[4 * r],
                first_sums[4 * r + 1],
                first_sums[4 * r + 2],
                first_sums[4 * r + 3],
                rest_sums[2 * r],
                rest_sums[2 * r + 1],
            ];
            for (c, v) in row.into_iter().enumerate() {
                let (o, v) = (out.add(c), scale * v);
                *o = if add { *o + v } else { v };
            }
        }
        if full < len {
            // The last values (fewer than 16) through the generic tile, added on top.
            tile::<4, 6>(
                (x.add(full), xs),
                (w.add(full), ws),
                len - full,
                (y, ys),
                (scale, true),
            );
        }
    }

    /// The sums of sixteen vectors' lanes, lane `i` holding vector `i`'s: a tree of
    /// in-lane unpacks and cross-lane shuffles (45 operations, against about 150 for
    /// sixteen separate reductions).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn reduce16(v: [__m512; 16]) -> __m512 {
        // [a₀+a₂, b₀+b₂, a₁+a₃, b₁+b₃] in each 128-bit lane, for pairs (a, b).
        let mut u = [_mm512_setzero_ps(); 8];
        for (i, u) in u.iter_mut().enumerate() {
            let (a, b) = (v[2 * i], v[2 * i + 1]);
            *u = _mm512_add_ps(_mm512_unpacklo_ps(a, b), _mm512_unpackhi_ps(a, b));
        }
        // [a, b, c, d] partial sums in each 128-bit lane, four vectors each.
        let mut w = [_mm512_setzero_ps(); 4];
        for (i, w) in w.iter_mut().enumerate() {
            let (c, d) = (_mm512_castps_pd(u[2 * i]), _mm512_castps_pd(u[2 * i + 1]));
            *w = _mm512_add_ps(
                _mm512_castpd_ps(_mm512_unpacklo_pd(c, d)),
                _mm512_castpd_ps(_mm512_unpackhi_pd(c, d)),
            );
        }
        // Add the 128-bit lanes pairwise, twice.
        fold(fold(w[0], w[1]), fold(w[2], w[3]))
    }

    /// `[x₀+x₁, x₂+x₃, y₀+y₁, y₂+y₃]` of the 128-bit lanes of `x` and `y`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn fold(x: __m512, y: __m512) -> __m512 {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(x, y),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(x, y),
        )
    }

    /// `R` input rows × `C` weight rows (each a pointer and its row stride) over `len`
    /// values, each sum added to `y` or written over it.
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn tile<const R: usize, const C: usize>(
        (x, xs): (*const f32, usize),
        (w, ws): (*const f32, usize),
        len: usize,
        (y, ys): (*mut f32, usize),
        (scale, add): (f32, bool),
    ) {
        let mut acc = [[_mm512_setzero_ps(); C]; R];
        let mut p = 0;
        while p + 16 <= len {
            let mut wv = [_mm512_setzero_ps(); C];
            for (c, v) in wv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(w.add(c * ws + p));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let xv = _mm512_loadu_ps(x.add(r * xs + p));
                for (c, a) in row.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(xv, wv[c], *a);
                }
            }
            p += 16;
        }
        if p < len {
            let mask: __mmask16 = (1u32 << (len - p)) as u16 - 1;
            let mut wv = [_mm512_setzero_ps(); C];
            for (c, v) in wv.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(mask, w.add(c * ws + p));
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let xv = _mm512_maskz_loadu_ps(mask, x.add(r * xs + p));
                for (c, a) in row.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(xv, wv[c], *a);
                }
            }
        }
        for (r, row) in acc.iter().enumerate() {
            for (c, a) in row.iter().enumerate() {
                let sum = scale * _mm512_reduce_add_ps(*a);
                let out = y.add(r * ys + c);
                *out = if add { *out + sum } else { sum };
            }
        }
    }
}

/// The AVX2 kernel: tiles of 2 input rows × 6 weight rows.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;

    /// Input rows × weight rows of the full tile.
    pub const TILE: (usize, usize) = (2, 6);

    /// A partial tile at the edges, through the generic tile of its size.
    #[allow(clippy::too_many_arguments)]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn edge_tile(
        rows: usize,
        cols: usize,
        x: (*const f32, usize),
        w: (*const f32, usize),
        len: usize,
        y: (*mut f32, usize),
        add: (f32, bool),
    ) {
        tile_of_size!(
            rows,
            cols,
            [1, 2],
            [1, 2, 3, 4, 5, 6],
            tile(x, w, len, y, add)
        )
    }

    /// The full tile, written out: 2 input rows × 6 weight rows, 12 named accumulators;
    /// each step of 8 values loads 2 input vectors and 6 weight vectors for 12 FMAs.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn tile_2x6(
        (x, xs): (*const f32, usize),
        (w, ws): (*const f32, usize),
        len: usize,
        (y, ys): (*mut f32, usize),
        (scale, add): (f32, bool),
    ) {
        let full = len / 8 * 8;
        let (x0, x1) = (x, x.add(xs));
        let (w0, w1, w2) = (w, w.add(ws), w.add(2 * ws));
        let (w3, w4, w5) = (w.add(3 * ws), w.add(4 * ws), w.add(5 * ws));
        let z = _mm256_setzero_ps();
        let (mut a00, mut a01, mut a02, mut a03, mut a04, mut a05) = (z, z, z, z, z, z);
        let (mut a10, mut a11, mut a12, mut a13, mut a14, mut a15) = (z, z, z, z, z, z);
        let mut p = 0;
        while p < full {
            let u0 = _mm256_loadu_ps(x0.add(p));
            let u1 = _mm256_loadu_ps(x1.add(p));
            let v = _mm256_loadu_ps(w0.add(p));
            a00 = _mm256_fmadd_ps(u0, v, a00);
            a10 = _mm256_fmadd_ps(u1, v, a10);
            let v = _mm256_loadu_ps(w1.add(p));
            a01 = _mm256_fmadd_ps(u0, v, a01);
            a11 = _mm256_fmadd_ps(u1, v, a11);
            let v = _mm256_loadu_ps(w2.add(p));
            a02 = _mm256_fmadd_ps(u0, v, a02);
            a12 = _mm256_fmadd_ps(u1, v, a12);
            let v = _mm256_loadu_ps(w3.add(p));
            a03 = _mm256_fmadd_ps(u0, v, a03);
            a13 = _mm256_fmadd_ps(u1, v, a13);
            let v = _mm256_loadu_ps(w4.add(p));
            a04 = _mm256_fmadd_ps(u0, v, a04);
            a14 = _mm256_fmadd_ps(u1, v, a14);
            let v = _mm256_loadu_ps(w5.add(p));
            a05 = _mm256_fmadd_ps(u0, v, a05);
            a15 = _mm256_fmadd_ps(u1, v, a15);
            p += 8;
        }
        let mut sums = [0f32; 12];
        _mm_storeu_ps(sums.as_mut_ptr(), reduce4(a00, a01, a02, a03));
        _mm_storeu_ps(sums.as_mut_ptr().add(4), reduce4(a04, a05, a10, a11));
        _mm_storeu_ps(sums.as_mut_ptr().add(8), reduce4(a12, a13, a14, a15));
        for (i, v) in sums.into_iter().enumerate() {
            let (o, v) = (y.add((i / 6) * ys + i % 6), scale * v);
            *o = if add { *o + v } else { v };
        }
        if full < len {
            // The last values (fewer than 8) through the generic tile, added on top.
            tile::<2, 6>(
                (x.add(full), xs),
                (w.add(full), ws),
                len - full,
                (y, ys),
                (scale, true),
            );
        }
    }

    /// `[Σa, Σb, Σc, Σd]` of four vectors' lanes.
    #[inline]
    #[target_feature(enable = "avx2")]
    unsafe fn reduce4(a: __m256, b: __m256, c: __m256, d: __m256) -> __m128 {
        let t = _mm256_hadd_ps(_mm256_hadd_ps(a, b), _mm256_hadd_ps(c, d));
        _mm_add_ps(_mm256_castps256_ps128(t), _mm256_extractf128_ps::<1>(t))
    }

    /// `R` input rows × `C` weight rows over `len` values, each sum added to `y` or
    /// written over it; loads masked to the values that exist (the edge tiles only).
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const R: usize, const C: usize>(
        (x, xs): (*const f32, usize),
        (w, ws): (*const f32, usize),
        len: usize,
        (y, ys): (*mut f32, usize),
        (scale, add): (f32, bool),
    ) {
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        let mut p = 0;
        while p < len {
            // Every lane but past the end of `len`.
            let mask = _mm256_cmpgt_epi32(_mm256_set1_epi32((len - p).min(8) as i32), lanes);
            let mut wv = [_mm256_setzero_ps(); C];
            for (c, v) in wv.iter_mut().enumerate() {
                *v = _mm256_maskload_ps(w.add(c * ws + p), mask);
            }
            for (r, row) in acc.iter_mut().enumerate() {
                let xv = _mm256_maskload_ps(x.add(r * xs + p), mask);
                for (c, a) in row.iter_mut().enumerate() {
                    *a = _mm256_fmadd_ps(xv, wv[c], *a);
                }
            }
            p += 8;
        }
        for (r, row) in acc.iter().enumerate() {
            for (c, a) in row.iter().enumerate() {
                let h = _mm_add_ps(_mm256_castps256_ps128(*a), _mm256_extractf128_ps::<1>(*a));
                let h = _mm_add_ps(h, _mm_movehl_ps(h, h));
                let h = _mm_add_ss(h, _mm_movehdup_ps(h));
                let sum = scale * _mm_cvtss_f32(h);
                let out = y.add(r * ys + c);
                *out = if add { *out + sum } else { sum };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn textbook(n: usize, r: usize, k: usize, x: &[f32], w: &[f32]) -> Vec<f32> {
        (0..n * r)
            .map(|i| {
                let (t, j) = (i / r, i % r);
                (0..k).map(|p| x[t * k + p] * w[j * k + p]).sum()
            })
            .collect()
    }

    /// The kernels this CPU runs, plain Rust included.
    fn levels() -> Vec<Simd> {
        match simd() {
            Simd::Avx512 => vec![Simd::Avx512, Simd::Avx2, Simd::None],
            Simd::Avx2 => vec![Simd::Avx2, Simd::None],
            Simd::None => vec![Simd::None],
        }
    }

    /// Every edge (rows, weight rows and `k` not multiples of the tiles, `k` over a block),
    /// written and accumulated, on one thread and on all, by every kernel the CPU runs,
    /// against the textbook loop.
    #[test]
    fn matches_the_textbook_loop() {
        for (n, r, k) in [
            (1, 1, 1),
            (2, 3, 0),
            (7, 5, 33),
            (92, 130, 1030),
            (4, 64, 2048),
            (3, 200, 16),
            (300, 70, 40),
        ] {
            let x: Vec<f32> = (0..n * k)
                .map(|i| ((i * 7 % 23) as f32 - 11.0) * 0.1)
                .collect();
            let w: Vec<f32> = (0..r * k)
                .map(|i| ((i * 5 % 19) as f32 - 9.0) * 0.05)
                .collect();
            let want = textbook(n, r, k, &x, &w);
            for (simd, parallel) in levels().into_iter().flat_map(|l| [(l, false), (l, true)]) {
                // A wider output, so that the stride is exercised: columns 1..=r of r + 3.
                let stride = r + 3;
                let mut y = vec![0.5f32; n * stride];
                // SAFETY: x, w hold n·k and r·k values; y is n·stride.
                unsafe {
                    x_wt_on(
                        simd,
                        (n, r, k),
                        (x.as_ptr(), k),
                        (w.as_ptr(), k),
                        (y.as_mut_ptr().add(1), stride),
                        (0.5, true),
                        parallel,
                    )
                };
                for t in 0..n {
                    assert_eq!(y[t * stride], 0.5, "column 0 untouched");
                    for j in 0..r {
                        let got = y[t * stride + 1 + j] - 0.5;
                        let w = 0.5 * want[t * r + j];
                        assert!(
                            (got - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{simd:?} {n}×{r}×{k} [{t},{j}]: {got} vs {w}"
                        );
                    }
                }
                let mut y = vec![f32::NAN; n * r];
                // SAFETY: as above, y is n·r.
                unsafe {
                    x_wt_on(
                        simd,
                        (n, r, k),
                        (x.as_ptr(), k),
                        (w.as_ptr(), k),
                        (y.as_mut_ptr(), r),
                        (1.0, false),
                        parallel,
                    )
                };
                for (g, w) in y.iter().zip(&want) {
                    assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{g} vs {w}");
                }
            }
        }
    }
}
