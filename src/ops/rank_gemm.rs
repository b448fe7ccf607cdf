//! `dst = α · dst + β · lhs · rhs` for a short inner size `k` (an adapter's rank, 8–32):
//! the LoRA term `s · (x Aᵀ) Bᵀ` added onto the base product's output, and `(dh) A` onto
//! `dx`, on AVX2 + FMA.
//!
//! With `k` = 16 each output value takes 16 multiply-adds, so the product is a pass over
//! `dst` rather than arithmetic, and the blocked gemm kernels pay their packing and
//! blocking for almost nothing: in the training step (AMD Zen 2) the gemm crate ran
//! `[1024, 16] × [16, 576]` at 44 GFLOP/s and the packed kernel `× [16, 1536]` at 65. Here
//! each task takes four rows of `dst` at a time, keeps their 4 × 16 block in eight
//! registers while it walks the `k` rows of `rhs` (read in place: `k` × 16 values, in L1),
//! and writes the block back once. One candidate of the timed choice
//! (`ops::gemm_choice`), for `k` up to [`MAX_K`] with `dst` and `rhs` row-major.

use rayon::prelude::*;

use super::packed_gemm::Strided;

/// The largest inner size the kernel takes (its scaled `lhs` values live on the stack).
pub const MAX_K: usize = 32;
/// Rows of a block.
const ROWS: usize = 4;
/// Rows of `dst` per parallel task (whole blocks).
const TASK_ROWS: usize = 64;

/// Whether this CPU runs the kernel (AVX2 and FMA).
pub fn available() -> bool {
    super::packed_gemm::available()
}

/// `dst (m × n) = α · dst (when read_dst) + β · lhs (m × k) · rhs (k × n)`, on `threads`
/// threads.
///
/// # Safety
/// The CPU has AVX2 and FMA ([`available`]); `k ≤ MAX_K`; `dst` and `rhs` have unit
/// column strides (`cs == 1`); every element of `lhs`, `rhs` and `dst` the strides reach
/// is valid for reads (and `dst` for writes); `dst` overlaps neither input and no two of
/// its elements are the same.
pub unsafe fn gemm(
    (m, n, k): (usize, usize, usize),
    dst: Strided<f32>,
    read_dst: bool,
    lhs: Strided<f32>,
    rhs: Strided<f32>,
    (alpha, beta): (f32, f32),
    threads: usize,
) {
    debug_assert!(k <= MAX_K && dst.cs == 1 && rhs.cs == 1);
    // `Strided` is `Send` and `Sync`: the tasks write disjoint rows of dst.
    let task = |first: usize| {
        let rows = first..(first + TASK_ROWS).min(m);
        // SAFETY: the caller's promises; each task writes its own rows of dst.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            x86::rows(rows, (n, k), dst, read_dst, lhs, rhs, (alpha, beta))
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (rows, dst, lhs, rhs);
    };
    if threads > 1 && m > TASK_ROWS {
        (0..m).into_par_iter().step_by(TASK_ROWS).for_each(task);
    } else {
        (0..m).step_by(TASK_ROWS).for_each(task);
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::ops::Range;

    use super::{Strided, MAX_K, ROWS};

    /// Rows `rows` of `dst`.
    ///
    /// # Safety
    /// As for [`super::gemm`].
    #[target_feature(enable = "avx2,fma")]
    pub unsafe fn rows(
        rows: Range<usize>,
        (n, k): (usize, usize),
        dst: Strided<f32>,
        read_dst: bool,
        lhs: Strided<f32>,
        rhs: Strided<f32>,
        (alpha, beta): (f32, f32),
    ) {
        let mut first = rows.start;
        while first < rows.end {
            let height = ROWS.min(rows.end - first);
            // β · lhs of the block's rows (zeros for rows past the end: their sums are
            // computed and dropped).
            let mut coef = [[0f32; MAX_K]; ROWS];
            for (r, row) in coef.iter_mut().enumerate().take(height) {
                for (p, c) in row.iter_mut().enumerate().take(k) {
                    // SAFETY: the caller's promises on lhs.
                    *c = beta * unsafe { *lhs.at(first + r, p) };
                }
            }
            let dst_row = |r: usize| {
                // SAFETY: row first + r (r < height) is one of the caller's rows of dst.
                unsafe { dst.at(first + r, 0) as *mut f32 }
            };
            let mut j = 0;
            while j + 16 <= n {
                // SAFETY: columns j .. j + 16 of the block's rows and of rhs's k rows
                // exist (the caller's promises, unit column strides).
                unsafe {
                    let mut acc = [[_mm256_setzero_ps(); 2]; ROWS];
                    if read_dst {
                        let a = _mm256_set1_ps(alpha);
                        for (r, acc) in acc.iter_mut().enumerate().take(height) {
                            acc[0] = _mm256_mul_ps(a, _mm256_loadu_ps(dst_row(r).add(j)));
                            acc[1] = _mm256_mul_ps(a, _mm256_loadu_ps(dst_row(r).add(j + 8)));
                        }
                    }
                    for p in 0..k {
                        let b = rhs.at(p, j);
                        let (b0, b1) = (_mm256_loadu_ps(b), _mm256_loadu_ps(b.add(8)));
                        for (acc, c) in acc.iter_mut().zip(&coef) {
                            let a = _mm256_set1_ps(c[p]);
                            acc[0] = _mm256_fmadd_ps(a, b0, acc[0]);
                            acc[1] = _mm256_fmadd_ps(a, b1, acc[1]);
                        }
                    }
                    for (r, acc) in acc.iter().enumerate().take(height) {
                        _mm256_storeu_ps(dst_row(r).add(j), acc[0]);
                        _mm256_storeu_ps(dst_row(r).add(j + 8), acc[1]);
                    }
                }
                j += 16;
            }
            for (r, c) in coef.iter().enumerate().take(height) {
                for col in j..n {
                    let mut sum = 0f32;
                    for (p, c) in c.iter().enumerate().take(k) {
                        // SAFETY: the caller's promises on rhs.
                        sum += c * unsafe { *rhs.at(p, col) };
                    }
                    // SAFETY: the caller's promises on dst.
                    unsafe {
                        let out = dst_row(r).add(col);
                        *out = if read_dst { alpha * *out + sum } else { sum };
                    }
                }
            }
            first += ROWS;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::packed_gemm::tests::{textbook, values};

    #[test]
    fn matches_the_textbook_loop_for_every_edge() {
        assert!(
            available(),
            "the rank kernel needs AVX2 and FMA; this machine lacks them"
        );
        // Rows and columns off the block sizes, k from 1 to the largest taken, lhs
        // row-major and transposed (as the adapter's hᵀ is read).
        for (m, n, k) in [
            (1, 1, 1),
            (5, 17, 3),
            (70, 40, 16),
            (130, 576, 16),
            (9, 33, 32),
        ] {
            for lhs_t in [false, true] {
                for (read, alpha, beta) in [(false, 0.0, 1.0), (true, 1.0, 0.5), (true, 0.25, -2.0)]
                {
                    for threads in [1, 2] {
                        let lhs = values(m * k, 1);
                        let rhs = values(k * n, 2);
                        let before = values(m * n, 3);
                        let want = textbook(
                            (m, n, k),
                            &before,
                            read,
                            &lhs,
                            !lhs_t,
                            &rhs,
                            true,
                            (alpha, beta),
                        );
                        // Without reading dst it may hold anything: NaN would show through.
                        let mut dst = if read {
                            before.clone()
                        } else {
                            vec![f32::NAN; m * n]
                        };
                        let (lrs, lcs) = if lhs_t {
                            (1, m as isize)
                        } else {
                            (k as isize, 1)
                        };
                        // SAFETY: AVX2 checked above; the strides stay inside the buffers.
                        unsafe {
                            gemm(
                                (m, n, k),
                                Strided::new(dst.as_mut_ptr(), n as isize, 1),
                                read,
                                Strided::new(lhs.as_ptr(), lrs, lcs),
                                Strided::new(rhs.as_ptr(), n as isize, 1),
                                (alpha, beta),
                                threads,
                            )
                        };
                        for (idx, (g, w)) in dst.iter().zip(&want).enumerate() {
                            assert!(
                                (g - w).abs() <= 1e-4 * (1.0 + w.abs()),
                                "m{m} n{n} k{k} lhs_t {lhs_t} read {read} threads {threads}: \
                                 value {idx} is {g}, want {w}"
                            );
                        }
                    }
                }
            }
        }
    }
}
