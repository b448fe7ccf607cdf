//! The kernel of a product too small to be timed where it runs (under `TIMED_MIN_MACS`
//! multiply-adds: attention's per-head tiles, the products of a short prompt).
//!
//! Timing such a product in place would hand its first calls to each candidate in turn, and
//! candidates round differently, so the same question asked twice in one run could get
//! answers that differ in the last digits. Instead, the first call of each shape has the
//! candidates multiply scratch operands of that shape and layout, a few times each in turn,
//! and the shape keeps the fastest: every real call of the shape, the first included, runs
//! on one kernel. The probe costs a few dozen small products once per shape and process.
//! A fixed kernel in its place (gemm-f32 0.18's AVX2 kernels, as before) ran attention's
//! smallest tiles at 49 GFLOP/s in the training step on an Intel Xeon (family 6, model
//! 167), where the probe's choice, gemm 0.19's AVX-512 kernels, runs them at 86–100.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use super::{fastest, run, GemmKernel, ShapeKey, Times};

/// Rounds of the probe; each calls every candidate once, after one untimed call each.
const ROUNDS: usize = 5;

/// The kernel each small shape runs on, decided once per process.
static SMALL: Mutex<Option<HashMap<ShapeKey, GemmKernel>>> = Mutex::new(None);

/// What of a call, beyond its key, the probe repeats: the exact sizes and the
/// accumulation.
#[derive(Debug, Clone, Copy)]
pub(super) struct Call {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub read_dst: bool,
    pub alpha: f32,
    pub beta: f32,
    pub parallelism: gemm::Parallelism,
}

/// The kernel for a small product of shape `key`, probed on the shape's first call.
pub(super) fn kernel(key: ShapeKey, call: Call) -> GemmKernel {
    if let Ok(guard) = SMALL.lock() {
        if let Some(kernel) = guard.as_ref().and_then(|m| m.get(&key)) {
            return *kernel;
        }
    }
    let probed = probe(key, call);
    let Ok(mut guard) = SMALL.lock() else {
        return probed;
    };
    // Another thread may have probed the same shape meanwhile: the first answer stands,
    // so that every call of the shape runs on one kernel.
    *guard
        .get_or_insert_with(HashMap::new)
        .entry(key)
        .or_insert_with(|| {
            tracing::debug!("small product {} runs on {}", key.label(), probed.label());
            probed
        })
}

/// Times every candidate of `key` on scratch operands laid out as the key says and returns
/// the fastest (gemm-f32 0.18 for an empty product).
fn probe(key: ShapeKey, call: Call) -> GemmKernel {
    let Call { m, n, k, .. } = call;
    let candidates = key.candidates();
    if m == 0 || n == 0 || k == 0 || candidates.len() < 2 {
        return candidates
            .first()
            .copied()
            .unwrap_or(GemmKernel::Gemm018Avx2);
    }
    let lhs = vec![0.5f32; m * k];
    let rhs = vec![0.25f32; k * n];
    let mut dst = vec![1.0f32; m * n];
    // Best seconds of each candidate.
    let mut best: Times = candidates.iter().map(|&k| (k, f64::INFINITY)).collect();
    for round in 0..=ROUNDS {
        for &kernel in &candidates {
            let t = Instant::now();
            // SAFETY: the scratch buffers hold exactly `m · n`, `m · k` and `k · n` values
            // and the strides `multiply` derives from the key reach no further; dst is its
            // own allocation.
            unsafe { multiply(kernel, key, call, &mut dst, &lhs, &rhs) };
            let seconds = t.elapsed().as_secs_f64();
            if round > 0 {
                best.entry(kernel).and_modify(|b| *b = b.min(seconds));
            }
        }
    }
    fastest(&best).unwrap_or(GemmKernel::Gemm018Avx2)
}

/// One product on `kernel` with the operands laid out as `key` says: row-major, or
/// column-major where the key marks the operand transposed.
///
/// # Safety
/// `dst`, `lhs` and `rhs` hold at least `m · n`, `m · k` and `k · n` values.
unsafe fn multiply(
    kernel: GemmKernel,
    key: ShapeKey,
    call: Call,
    dst: &mut [f32],
    lhs: &[f32],
    rhs: &[f32],
) {
    let Call { m, n, k, .. } = call;
    // (column stride, row stride) of a `rows × cols` matrix.
    let strides = |transposed: bool, rows: usize, cols: usize| -> (isize, isize) {
        if transposed {
            (rows as isize, 1)
        } else {
            (1, cols as isize)
        }
    };
    let (dst_cs, dst_rs) = strides(key.transposed[0], m, n);
    let (lhs_cs, lhs_rs) = strides(key.transposed[1], m, k);
    let (rhs_cs, rhs_rs) = strides(key.transposed[2], k, n);
    // SAFETY: the caller's sizes; every index `i · rs + j · cs` stays below rows · cols.
    unsafe {
        run(
            kernel,
            m,
            n,
            k,
            dst.as_mut_ptr(),
            dst_cs,
            dst_rs,
            call.read_dst,
            lhs.as_ptr(),
            lhs_cs,
            lhs_rs,
            rhs.as_ptr(),
            rhs_cs,
            rhs_rs,
            call.alpha,
            call.beta,
            call.parallelism,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small shape's first call already runs on the kernel every later call of the shape
    /// runs on: the same product twice gives the same bits, within rounding of the
    /// textbook loop, and the probe picked one of the shape's candidates.
    #[test]
    fn a_small_shape_runs_on_one_kernel_from_its_first_call() {
        // 23 × 19 × 31 multiply-adds, far below the timing threshold; row-major operands.
        let (m, n, k) = (23usize, 19usize, 31usize);
        let lhs: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.41).sin()).collect();
        let rhs: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.29).cos()).collect();
        let product = || {
            let mut dst = vec![0f32; m * n];
            // SAFETY: row-major buffers of exactly these sizes.
            unsafe {
                super::super::gemm(
                    m,
                    n,
                    k,
                    dst.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    lhs.as_ptr(),
                    1,
                    k as isize,
                    rhs.as_ptr(),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    gemm::Parallelism::None,
                )
            };
            dst
        };
        let first = product();
        let second = product();
        assert_eq!(
            first, second,
            "two calls of one small shape rounded differently"
        );
        for (ij, got) in first.iter().enumerate() {
            let want: f32 = (0..k)
                .map(|p| lhs[(ij / n) * k + p] * rhs[p * n + ij % n])
                .sum();
            assert!(
                (got - want).abs() < 1e-4,
                "element {ij}: {got} against {want}"
            );
        }
        let key = ShapeKey {
            m: m.next_power_of_two(),
            n: n.next_power_of_two(),
            k: k.next_power_of_two(),
            transposed: [false; 3],
            threads: 1,
            dot: false,
        };
        if super::super::pinned().is_none() && super::super::choices_available() {
            let chosen = SMALL
                .lock()
                .ok()
                .and_then(|g| g.as_ref()?.get(&key).copied());
            let chosen = chosen.expect("the small shape's kernel was not recorded");
            assert!(
                key.candidates().contains(&chosen),
                "{chosen:?} is no candidate"
            );
        }
    }

    /// The probe times every candidate in each layout the keys describe without reading or
    /// writing outside its scratch operands (the strides follow the key), and answers one
    /// of them.
    #[test]
    fn the_probe_answers_a_candidate_in_every_layout() {
        let (m, n, k) = (9usize, 17usize, 13usize);
        for bits in 0..8u8 {
            let transposed = [bits & 1 != 0, bits & 2 != 0, bits & 4 != 0];
            let key = ShapeKey {
                m: m.next_power_of_two(),
                n: n.next_power_of_two(),
                k: k.next_power_of_two(),
                transposed,
                threads: 1,
                dot: transposed == [false, false, true],
            };
            let call = Call {
                m,
                n,
                k,
                read_dst: true,
                alpha: 1.0,
                beta: 0.5,
                parallelism: gemm::Parallelism::None,
            };
            let kernel = probe(key, call);
            assert!(
                key.candidates().contains(&kernel),
                "{transposed:?}: {kernel:?}"
            );
        }
    }
}
