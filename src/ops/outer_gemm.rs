//! `dst = α · dst + β · lhs · rhs` for a short left operand (`m` ≤ 16 rows) and a long
//! inner size, `rhs` and `dst` row-major, on AVX-512: the adapter's weight gradients of a
//! training step, `dA = dhᵀ · x` and `dBᵀ = hᵀ · dy` (`[16, tokens] · [tokens, 576 | 1536]`),
//! as a sum of outer products, one per token.
//!
//! Each output value takes `k` multiply-adds, but each value of `rhs` (the layer's input
//! or output gradient, several megabytes) only 16, so the product is a pass over `rhs`
//! more than arithmetic. The blocked kernels pack `rhs` (one more pass over it) or walk it
//! down a narrow column strip, a row apart per step: strides the hardware prefetchers do
//! not follow (the gemm crate ran `[16, 1024] · [1024, 1536]` at 55 GFLOP/s and
//! `· [1024, 576]` at 75 in the step on an Intel Xeon, family 6, model 167, where its large
//! products run at 375–404). Here `rhs` is read in blocks of [`KC`] whole rows (contiguous
//! memory, a few hundred kilobytes, in L2): each thread takes a stretch of rows, walks each
//! block a strip of 16 columns at a time with a 16 × 16 tile of sums in registers (per row
//! of the block, one load of `rhs` and 16 FMAs whose `lhs` value is broadcast from memory),
//! and meanwhile asks for the next block, in address order, a cache line a step. A candidate of the timed choice
//! (`ops::gemm_choice`) where the CPU has AVX-512F.

use rayon::prelude::*;

use super::packed_gemm::Strided;

/// The most rows of `lhs` (and `dst`) the kernel takes: one tile of 16 sums per column.
pub const MAX_M: usize = 16;
/// Rows of `rhs` per block: 128 rows of 1536 values are 768 KiB, in L2 with room to spare.
const KC: usize = 128;

/// Whether this CPU runs the kernel (AVX-512F).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `dst (m × n) = α · dst (when read_dst) + β · lhs (m × k) · rhs (k × n)`, on `threads`
/// threads (each a stretch of `k`).
///
/// # Safety
/// The CPU has AVX-512F ([`available`]); `m ≤ MAX_M`; `dst` and `rhs` have unit column
/// strides (`cs == 1`); every element of `lhs`, `rhs` and `dst` the strides reach is valid
/// for reads (and `dst` for writes); `dst` overlaps neither input and no two of its
/// elements are the same.
pub unsafe fn gemm(
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
    debug_assert!(
        m <= MAX_M,
        "{m} rows of lhs: the kernel takes at most {MAX_M}"
    );
    // lhsᵀ, `k` rows of 16 (rows past `m` zero): the 16 values a step of `k` broadcasts,
    // side by side.
    let mut lhs_t = vec![0f32; k * MAX_M];
    for (p, row) in lhs_t.chunks_exact_mut(MAX_M).enumerate() {
        for (i, v) in row.iter_mut().enumerate().take(m) {
            // SAFETY: i < m, p < k: inside lhs.
            *v = unsafe { *lhs.at(i, p) };
        }
    }
    // Each thread sums the products of its own rows of `rhs` (whole blocks, one
    // contiguous stretch of memory), over every column; the partial sums are added at the
    // end. (Bands of columns would have each thread read a part of every row: a stride the
    // prefetchers do not follow.)
    let blocks = k.div_ceil(KC);
    // (k = 0: one part of no rows, sums of zero.)
    let parts = threads.clamp(1, blocks.max(1));
    let per_part = blocks.div_ceil(parts);
    let part = |t: usize| {
        let rows = (t * per_part * KC).min(k)..((t + 1) * per_part * KC).min(k);
        // SAFETY: the caller's promises; the rows lie inside rhs.
        unsafe { range_sums(n, rows, &lhs_t, rhs) }
    };
    let partial: Vec<Vec<f32>> = if parts == 1 {
        vec![part(0)]
    } else {
        (0..parts).into_par_iter().map(part).collect()
    };
    for i in 0..m {
        for j in 0..n {
            let s: f32 = partial.iter().map(|p| p[i * n + j]).sum();
            // SAFETY: the caller's promises on dst; i < m and j < n.
            unsafe {
                let c = dst.at(i, j) as *mut f32;
                *c = if read_dst {
                    alpha * *c + beta * s
                } else {
                    beta * s
                };
            }
        }
    }
}

/// Where the `count` rows of `rhs` from row `first` on start, and the cache lines from
/// there to the end of the last one's `n` values; `None` for no rows.
///
/// # Safety
/// Row `first` lies inside rhs when `count > 0`.
unsafe fn block_lines(
    rhs: Strided<f32>,
    first: usize,
    count: usize,
    n: usize,
) -> Option<(*const u8, usize)> {
    let bytes = count.checked_sub(1)? * rhs.rs.unsigned_abs() * 4 + n * 4;
    // SAFETY: the caller's promise.
    let start = unsafe { rhs.at(first, 0) };
    Some((start.cast(), bytes.div_ceil(64)))
}

/// The 16 × `n` sums of the products over `rows` of `rhs` (all of its `n` columns).
///
/// # Safety
/// As for [`gemm`], with `lhs_t` holding 16 values for each of `rows`.
unsafe fn range_sums(
    n: usize,
    rows: std::ops::Range<usize>,
    lhs_t: &[f32],
    rhs: Strided<f32>,
) -> Vec<f32> {
    let mut sums = vec![0f32; MAX_M * n];
    let strips = n.div_ceil(16);
    // The first block is asked for all at once, in address order; each later one while
    // the block before it is multiplied.
    // SAFETY: the caller's promises on rows.
    #[cfg(target_arch = "x86_64")]
    if let Some((start, lines)) = unsafe { block_lines(rhs, rows.start, KC.min(rows.len()), n) } {
        x86::prefetch(start, lines);
    }
    for pc in rows.clone().step_by(KC) {
        let kc = KC.min(rows.end - pc);
        // The next block's rows, as one stretch of memory, asked for a line or a few per
        // step while this block is multiplied: in address order, across all its strips.
        let next_rows = KC.min(rows.end.saturating_sub(pc + kc));
        // SAFETY: the rows after this block, up to `rows.end`, lie inside rhs.
        let next = unsafe { block_lines(rhs, pc + kc, next_rows, n) }
            .map(|(start, lines)| (start, lines.div_ceil(strips * kc)));
        for j in 0..strips {
            let cols = 16.min(n - 16 * j);
            let ahead = next
                .map(|(start, per_step)| (start.wrapping_add(j * kc * per_step * 64), per_step));
            // SAFETY: rows pc..pc + kc of rhs and columns 16 j .. + cols lie inside it;
            // `sums` holds 16 rows of `n`; prefetches may point anywhere.
            unsafe {
                #[cfg(target_arch = "x86_64")]
                x86::strip(
                    kc,
                    &lhs_t[pc * MAX_M..],
                    (rhs.at(pc, 16 * j), rhs.rs),
                    ahead,
                    (sums.as_mut_ptr().add(16 * j), n),
                    cols,
                );
            }
        }
    }
    sums
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    use super::MAX_M;

    /// Asks for `lines` cache lines from `start` on into L2 (`start` may point anywhere).
    pub(super) fn prefetch(start: *const u8, lines: usize) {
        for i in 0..lines {
            // SAFETY: a prefetch reads nothing and faults on no address.
            unsafe { _mm_prefetch::<_MM_HINT_T1>(start.wrapping_add(64 * i).cast()) };
        }
    }

    /// Adds `kc` outer products onto a 16 × `cols` tile of sums (`sums.0`, rows `sums.1`
    /// apart): per step `p`, row `p` of `rhs` (`cols` ≤ 16 values at `rhs.0 + p · rhs.1`)
    /// times the 16 values `lhs_t[16 p ..]`. Asks for `ahead.1` cache lines a step into
    /// L2, in address order from `ahead.0`.
    ///
    /// # Safety
    /// AVX-512F; `lhs_t` holds `16 · kc` values; `cols` values of each of the `kc` rows of
    /// `rhs` and of the 16 rows of sums are valid; prefetches may point anywhere.
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn strip(
        kc: usize,
        lhs_t: &[f32],
        (rhs, rhs_rs): (*const f32, isize),
        ahead: Option<(*const u8, usize)>,
        (sums, sums_rs): (*mut f32, usize),
        cols: usize,
    ) {
        let mask: __mmask16 = if cols >= 16 {
            0xffff
        } else {
            (1u16 << cols) - 1
        };
        // SAFETY: the caller's promises; masked lanes are neither read nor written.
        unsafe {
            let mut acc: [__m512; MAX_M] =
                std::array::from_fn(|i| _mm512_maskz_loadu_ps(mask, sums.add(i * sums_rs)));
            let mut row = rhs;
            let (mut line, lines) = ahead.unwrap_or((std::ptr::null(), 0));
            let mut a = lhs_t.as_ptr();
            for _ in 0..kc {
                for _ in 0..lines {
                    _mm_prefetch::<_MM_HINT_T1>(line.cast());
                    line = line.wrapping_add(64);
                }
                let b = _mm512_maskz_loadu_ps(mask, row);
                for (i, sum) in acc.iter_mut().enumerate() {
                    *sum = _mm512_fmadd_ps(_mm512_set1_ps(*a.add(i)), b, *sum);
                }
                a = a.add(MAX_M);
                row = row.offset(rhs_rs);
            }
            for (i, sum) in acc.iter().enumerate() {
                _mm512_mask_storeu_ps(sums.add(i * sums_rs), mask, *sum);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every shape of short `lhs` (including a partial strip, several blocks of `k` and
    /// none), alone and added onto `dst`, against the textbook loop, on one thread and on
    /// two.
    #[test]
    fn outer_products_agree_with_the_textbook_loop() {
        // Where the CPU lacks AVX-512F the kernel is never offered (`gemm_choice`'s
        // `the_outer_kernel_is_a_candidate_for_short_left_operands_only`): nothing to run.
        let shapes = if available() {
            vec![
                (16, 576, 300),
                (5, 37, 129),
                (16, 16, 1),
                (1, 70, 257),
                (3, 20, 0),
            ]
        } else {
            Vec::new()
        };
        for (m, n, k) in shapes {
            let lhs: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let rhs: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.11).cos()).collect();
            let before: Vec<f32> = (0..m * n).map(|i| (i as f32 * 0.7).sin()).collect();
            for (threads, read_dst) in [(1, false), (2, true), (3, false)] {
                let mut dst = before.clone();
                // SAFETY: row-major buffers of exactly these sizes; m ≤ 16.
                unsafe {
                    gemm(
                        (m, n, k),
                        Strided::new(dst.as_mut_ptr(), n as isize, 1),
                        read_dst,
                        Strided::new(lhs.as_ptr(), k as isize, 1),
                        Strided::new(rhs.as_ptr(), n as isize, 1),
                        (0.5, 2.0),
                        threads,
                    )
                };
                for (ij, got) in dst.iter().enumerate() {
                    let (i, j) = (ij / n, ij % n);
                    let product: f32 = (0..k).map(|p| lhs[i * k + p] * rhs[p * n + j]).sum();
                    let want = 2.0 * product + if read_dst { 0.5 * before[ij] } else { 0.0 };
                    assert!(
                        (got - want).abs() < 1e-3 * (1.0 + want.abs()),
                        "{m}×{n}×{k}, {threads} threads, element ({i}, {j}): {got} against {want}"
                    );
                }
            }
        }
    }
}
