//! The AVX-512 micro-kernel of [`super`]: 14 rows of a packed `lhs` panel against one or
//! two panels of 16 columns of `rhs`, 14 × `W` accumulators of 16 lanes in registers (28
//! of the 32 for a full tile): per value of `k`, `W` loads and 14 broadcasts for `14 · W`
//! FMAs, no reduction across lanes.

use std::arch::x86_64::*;

use super::{Store, MR_AVX512 as ROWS};

/// Values of `k` ahead of the one multiplied at which a panel read in place is prefetched.
const PREFETCH_STEPS: isize = 16;

/// `kc` steps over a packed row panel `a` (14 values a step) and `W` column panels
/// (`b[w]`: 16 contiguous values a step, its stride apart), then the tile (`height` ×
/// `width` of its 14 × 16·`W` valid) stored by `store` into `c` (element (i, j) at
/// `c.0 + i·rs + j·cs`).
///
/// # Safety
/// AVX-512F; `a` holds `kc · 14` values, each `b[w]` (w < W) 16 at each of its `kc`
/// steps; the valid elements of the tile are writable.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn tile<const W: usize>(
    kc: usize,
    a: *const f32,
    b: [(*const f32, isize); 2],
    (c, (rs, cs)): (*mut f32, (isize, isize)),
    (height, width): (usize, usize),
    store: Store,
) {
    super::prefetch_rows(c, (rs, cs), (height, width));
    let mut acc = [[_mm512_setzero_ps(); W]; ROWS];
    let mut a = a;
    let mut at = [b[0].0, b[1].0];
    // A panel read in place steps a whole row of `rhs` a value of `k`: strides the
    // hardware prefetchers do not follow past 2 KiB, so the lines are asked for ahead (a
    // LoRA A gradient, `[16, 1024] · [1024, 576]`, in the training step on an Intel Xeon
    // of family 6, model 207: 32.2 and 34.5 GFLOP/s against 24.5 and 29.3 without).
    let far = b.iter().take(W).any(|&(_, stride)| stride != 16);
    for _ in 0..kc {
        if far {
            for w in 0..W {
                let ahead = at[w].wrapping_offset(PREFETCH_STEPS * b[w].1);
                _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
            }
        }
        // SAFETY: the caller's promises on the panels' lengths.
        unsafe {
            let bv: [__m512; W] = std::array::from_fn(|w| _mm512_loadu_ps(at[w]));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.add(i));
                for (sum, bw) in row.iter_mut().zip(&bv) {
                    *sum = _mm512_fmadd_ps(ai, *bw, *sum);
                }
            }
            a = a.add(ROWS);
            for w in 0..W {
                at[w] = at[w].offset(b[w].1);
            }
        }
    }
    let beta = _mm512_set1_ps(store.beta);
    let alpha = _mm512_set1_ps(store.alpha);
    if height == ROWS && width == 16 * W && cs == 1 {
        for (i, row) in acc.iter().enumerate() {
            for (w, sum) in row.iter().enumerate() {
                // SAFETY: a full tile of contiguous rows (the caller's promises).
                unsafe {
                    let out = c.offset(i as isize * rs).add(16 * w);
                    let mut v = _mm512_mul_ps(*sum, beta);
                    if store.read {
                        v = _mm512_fmadd_ps(_mm512_loadu_ps(out), alpha, v);
                    }
                    _mm512_storeu_ps(out, v);
                }
            }
        }
        return;
    }
    let mut sums = [0f32; ROWS * 32];
    for (i, row) in acc.iter().enumerate() {
        for (w, sum) in row.iter().enumerate() {
            // SAFETY: `sums` holds 14 rows of 32.
            unsafe { _mm512_storeu_ps(sums.as_mut_ptr().add(i * 32 + 16 * w), *sum) };
        }
    }
    for i in 0..height {
        for j in 0..width {
            // SAFETY: element (i, j) of the tile is valid (the caller's promises).
            unsafe {
                let e = c.offset(i as isize * rs + j as isize * cs);
                let s = store.beta * sums[i * 32 + j];
                *e = if store.read { store.alpha * *e + s } else { s };
            }
        }
    }
}
