//! f32 matrix products on plain slices through the gemm crate (candle's own matmul
//! kernel), for the training ops that work on raw buffers: they accumulate into existing
//! buffers and read transposed operands in place, which candle's matmul cannot do
//! without copies.

use candle_core::{CpuStorage, Layout, Result, Storage, Tensor};
use rayon::prelude::*;

/// Whether a product may use every rayon thread or must stay on the calling one (inside
/// work that is already split across threads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    All,
    One,
}

/// Checks that the operands of an `m × k` by `k × n` product hold `m · k` and `k · n`
/// elements.
fn check_operands((m, n, k): (usize, usize, usize), lhs_len: usize, rhs_len: usize) -> Result<()> {
    if lhs_len != m * k || rhs_len != k * n {
        candle_core::bail!("gemm: {m}×{k}·{k}×{n} given buffers of {lhs_len} and {rhs_len}");
    }
    Ok(())
}

/// Checks the buffers of an `m × k` by `k × n` product into `dst`, and settles the products
/// with no work: an empty result, or an empty sum (zeros, unless accumulating). `true`
/// when nothing is left for gemm to do.
fn settled_without_gemm(
    dst: &mut [f32],
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    lhs_len: usize,
    rhs_len: usize,
) -> Result<bool> {
    if dst.len() != m * n || lhs_len != m * k || rhs_len != k * n {
        candle_core::bail!(
            "gemm: {m}×{k}·{k}×{n} given buffers of {lhs_len}, {rhs_len} and {}",
            dst.len()
        );
    }
    if k == 0 && !accumulate {
        dst.fill(0.0);
    }
    Ok(m == 0 || n == 0 || k == 0)
}

/// `dst (m × n, row-major) = [dst +] beta · op(lhs) · op(rhs)`. `lhs` is stored row-major as
/// `m × k`, or as `k × m` when `lhs_t`; `rhs` as `k × n`, or as `n × k` when `rhs_t`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_into(
    dst: &mut [f32],
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    lhs: &[f32],
    lhs_t: bool,
    rhs: &[f32],
    rhs_t: bool,
    beta: f32,
    threads: Threads,
) -> Result<()> {
    if settled_without_gemm(dst, accumulate, (m, n, k), lhs.len(), rhs.len())? {
        return Ok(());
    }
    // SAFETY: `dst` holds `m · n` initialized elements and the operands `m · k` and
    // `k · n` (checked above).
    unsafe {
        gemm_raw(
            dst.as_mut_ptr(),
            accumulate,
            (m, n, k),
            lhs,
            lhs_t,
            rhs,
            rhs_t,
            beta,
            threads,
        )
    }
    Ok(())
}

/// The gemm call behind [`gemm_into`] and [`gemm_new`].
///
/// # Safety
/// `lhs` and `rhs` must hold `m · k` and `k · n` elements ([`check_operands`]); `dst` must
/// be valid for writes of `m · n` elements (and initialized when `accumulate`), and must
/// not overlap `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_raw(
    dst: *mut f32,
    accumulate: bool,
    (m, n, k): (usize, usize, usize),
    lhs: &[f32],
    lhs_t: bool,
    rhs: &[f32],
    rhs_t: bool,
    beta: f32,
    threads: Threads,
) {
    let (lhs_cs, lhs_rs) = if lhs_t { (m, 1) } else { (1, k) };
    let (rhs_cs, rhs_rs) = if rhs_t { (k, 1) } else { (1, n) };
    let parallelism = match (threads, rayon::current_num_threads()) {
        (Threads::All, n) if n > 1 => gemm::Parallelism::Rayon(n),
        _ => gemm::Parallelism::None,
    };
    // SAFETY: the caller's promises on the lengths cover every index gemm reads or writes
    // for these dimensions and strides; `dst` aliases neither input.
    unsafe {
        super::gemm_choice::gemm(
            m,
            n,
            k,
            dst,
            1,
            n as isize,
            accumulate,
            lhs.as_ptr(),
            lhs_cs as isize,
            lhs_rs as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            beta,
            parallelism,
        );
    }
}

/// `op(lhs) · op(rhs) · beta` (`m × n`, row-major) into a new buffer, with the operands as in
/// [`gemm_into`]. gemm writes every element of the result before it reads any, so the
/// buffer is never filled with zeros first: for the training step's outputs that fill was
/// a serial pass over about a gigabyte per step.
#[allow(clippy::too_many_arguments)]
pub fn gemm_new(
    (m, n, k): (usize, usize, usize),
    lhs: &[f32],
    lhs_t: bool,
    rhs: &[f32],
    rhs_t: bool,
    beta: f32,
    threads: Threads,
) -> Result<Vec<f32>> {
    check_operands((m, n, k), lhs.len(), rhs.len())?;
    if m == 0 || n == 0 || k == 0 {
        // An empty result, or an empty sum: zeros.
        return Ok(vec![0f32; m * n]);
    }
    let mut dst: Vec<f32> = Vec::with_capacity(m * n);
    // SAFETY: the operands hold `m · k` and `k · n` elements (checked above), and `dst`
    // has capacity for `m · n`. The spare capacity is handed to
    // gemm as a raw pointer only (no slice of uninitialized floats is formed); with
    // `read_dst` false gemm stores into every element of `dst` during its first pass over
    // the inner dimension and reads none before (gemm-common: alpha is set to zero and
    // the micro-kernels' alpha-zero path only writes; the dot and packed kernels
    // `gemm_choice` may run instead write each sum of their first `k` block before any
    // read), so all `m · n`
    // elements are initialized when `set_len` runs.
    unsafe {
        gemm_raw(
            dst.as_mut_ptr(),
            false,
            (m, n, k),
            lhs,
            lhs_t,
            rhs,
            rhs_t,
            beta,
            threads,
        );
        dst.set_len(m * n);
    }
    Ok(dst)
}

/// Rows of weight per single-threaded product in [`gemm_xwt_panels`]: two of gemm's
/// 16-row f32 micro-tiles. 16, 24, 48 and 64 measured slower (BENCHMARKS.md, first token).
const PANEL_ROWS: usize = 32;

/// A raw output pointer that parallel tasks share, each writing a set of elements no
/// other task writes (the panel products here, the quantized row tasks).
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(pub(crate) *mut f32);
// SAFETY: every user hands each thread a set of output elements no other thread writes
// (`gemm_xwt_panels`: columns per panel; `QuantMatrix`: columns per row chunk), and the
// pointer outlives the parallel loop, which borrows the output mutably.
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// The pointer, through a method so that closures capture the whole (`Send`) wrapper.
    pub(crate) fn ptr(self) -> *mut f32 {
        self.0
    }
}

/// `y [m, n] = x [m, k] · Wᵀ` (`W [n, k]` row-major) for inputs of few rows (a prompt's
/// prefill). With few rows, gemm packs the whole weight on the calling thread before it
/// splits the work; here each 32-row panel of W is its own single-threaded product
/// (`y[:, panel]ᵀ = W_panel · xᵀ`), and the panels spread over the thread pool, so the
/// packing runs in parallel and stays in cache. Measured on a 46-token prefill of
/// SmolLM2: 82 → 70 ms for its 210 products.
pub fn gemm_xwt_panels(
    y: &mut [f32],
    (m, n, k): (usize, usize, usize),
    x: &[f32],
    w: &[f32],
) -> Result<()> {
    if settled_without_gemm(y, false, (m, n, k), x.len(), w.len())? {
        return Ok(());
    }
    let out = SharedOut(y.as_mut_ptr());
    (0..n.div_ceil(PANEL_ROWS)).into_par_iter().for_each(|p| {
        let first = p * PANEL_ROWS;
        let rows = PANEL_ROWS.min(n - first);
        // SAFETY: panel p reads rows `first..first + rows` of W (within `w`, checked above)
        // and all of x, and writes y[i, first + j] for i < m, j < rows: at offsets
        // `first + j + i·n < m·n`, a set of columns no other panel writes.
        unsafe {
            super::gemm_choice::gemm(
                rows,
                m,
                k,
                out.ptr().add(first),
                n as isize,
                1,
                false,
                w.as_ptr().add(first * k),
                1,
                k as isize,
                x.as_ptr(),
                k as isize,
                1,
                1.0,
                1.0,
                gemm::Parallelism::None,
            );
        }
    });
    Ok(())
}

/// Runs `f` on the contiguous f32 data of a CPU tensor.
pub fn with_slice<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> Result<R>) -> Result<R> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cpu(cpu) = &*storage else {
        candle_core::bail!("only the CPU is supported");
    };
    let data = cpu.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((s, e)) => f(&data[s..e]),
        None => candle_core::bail!("gemm: operand must be contiguous"),
    }
}

/// The contiguous f32 data of a custom op's argument; `op` names the op in the error.
pub fn arg_slice<'a>(storage: &'a CpuStorage, layout: &Layout, op: &str) -> Result<&'a [f32]> {
    let data = storage.as_slice::<f32>()?;
    match layout.contiguous_offsets() {
        Some((s, e)) => Ok(&data[s..e]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `op(lhs) · op(rhs) · beta` by the textbook loop.
    fn naive(
        (m, n, k): (usize, usize, usize),
        lhs: &[f32],
        lhs_t: bool,
        rhs: &[f32],
        rhs_t: bool,
        beta: f32,
    ) -> Vec<f32> {
        let l = |i: usize, p: usize| {
            if lhs_t {
                lhs[p * m + i]
            } else {
                lhs[i * k + p]
            }
        };
        let r = |p: usize, j: usize| {
            if rhs_t {
                rhs[j * k + p]
            } else {
                rhs[p * n + j]
            }
        };
        (0..m * n)
            .map(|ij| beta * (0..k).map(|p| l(ij / n, p) * r(p, ij % n)).sum::<f32>())
            .collect()
    }

    #[test]
    fn a_new_product_matches_the_textbook_loop_for_every_layout() {
        for (m, n, k) in [(5, 7, 3), (33, 20, 17), (4, 3, 0), (0, 3, 2)] {
            let lhs: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let rhs: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.53).cos()).collect();
            for (lhs_t, rhs_t) in [(false, false), (true, false), (false, true), (true, true)] {
                for threads in [Threads::All, Threads::One] {
                    let got = gemm_new((m, n, k), &lhs, lhs_t, &rhs, rhs_t, 0.5, threads).unwrap();
                    let want = naive((m, n, k), &lhs, lhs_t, &rhs, rhs_t, 0.5);
                    assert_eq!(got.len(), want.len());
                    for (g, w) in got.iter().zip(&want) {
                        assert!(
                            (g - w).abs() < 1e-5,
                            "{m}×{n}×{k} {lhs_t} {rhs_t}: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn operands_of_the_wrong_size_are_an_error() {
        let err = gemm_new(
            (2, 2, 2),
            &[1.0; 3],
            false,
            &[1.0; 4],
            false,
            1.0,
            Threads::One,
        )
        .unwrap_err();
        assert!(err.to_string().contains("2×2·2×2"), "{err}");
    }
}
