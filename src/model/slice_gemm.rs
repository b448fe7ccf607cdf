//! f32 matrix products on plain slices through the gemm crate (candle's own matmul
//! kernel), for the training ops that work on raw buffers: they accumulate into existing
//! buffers and read transposed operands in place, which candle's matmul cannot do
//! without copies.

use candle_core::{CpuStorage, Layout, Result, Storage, Tensor};

/// Whether a product may use every rayon thread or must stay on the calling one (inside
/// work that is already split across threads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    All,
    One,
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
    if dst.len() != m * n || lhs.len() != m * k || rhs.len() != k * n {
        candle_core::bail!(
            "gemm: {m}×{k}·{k}×{n} given buffers of {}, {} and {}",
            lhs.len(),
            rhs.len(),
            dst.len()
        );
    }
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return Ok(());
    }
    let (lhs_cs, lhs_rs) = if lhs_t { (m, 1) } else { (1, k) };
    let (rhs_cs, rhs_rs) = if rhs_t { (k, 1) } else { (1, n) };
    let parallelism = match (threads, rayon::current_num_threads()) {
        (Threads::All, n) if n > 1 => gemm::Parallelism::Rayon(n),
        _ => gemm::Parallelism::None,
    };
    // SAFETY: the lengths checked above cover every index gemm reads or writes for these
    // dimensions and strides; the three slices are distinct borrows, so `dst` aliases
    // neither input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
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
            false,
            false,
            false,
            parallelism,
        );
    }
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
