//! A frozen weight `[out, in]` and every product the engine runs through it. The weight is
//! an f32 tensor (safetensors in f32, the exact reference path) or the model file's own
//! blocks ([`QuantMatrix`]: GGUF's quantized types, 16-bit floats), shared between every
//! copy of the model.
//!
//! - Inference ([`FrozenWeight::x_wt`]): a stored weight multiplies one row (a decode
//!   step) through its integer kernels ([`QuantMatrix::matmul`]); a prompt's rows through
//!   them, through panels into gemm, or through slices dequantized into the dot kernel,
//!   as [`stored_prefill`] decides by timing.
//! - Training ([`FrozenWeight::x_wt_into`], [`FrozenWeight::dy_w_into`]): a stored weight
//!   is dequantized one panel of rows at a time (on every thread), and each panel is
//!   multiplied with every token row of the micro-batch in gemm. The arithmetic is f32 on
//!   the dequantized values, so a step on a quantized base equals the step on its
//!   dequantized f32 copy up to the order of the sums, while the base costs its file size.
//!   An f32 weight goes to gemm whole, as before.

use std::cell::RefCell;
use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor};
use rayon::prelude::*;

use super::quant::{Isa, QuantMatrix, StoredType};
use super::slice_gemm::{gemm_into, gemm_new, with_slice, Threads::All};
use super::stored_prefill::{self, Path};

/// A frozen weight `[out, in]`, as stored or as f32.
#[derive(Debug, Clone)]
pub enum FrozenWeight {
    F32(Tensor),
    Stored(Arc<QuantMatrix>),
}

/// Values in one dequantized panel (16 MiB of f32): large enough that each gemm call has
/// at least 256 rows of the weight as its inner dimension in the backward, so that panels
/// add no passes over the output beyond gemm's own blocking, and small beside the model.
const PANEL_VALUES: usize = 1 << 22;
/// Bytes of the dequantized panel buffer (the estimate counts it).
pub const PANEL_BYTES: usize = PANEL_VALUES * 4;
/// The fewest weight rows in a panel (see [`PANEL_VALUES`]).
const PANEL_MIN_ROWS: usize = 256;

thread_local! {
    /// The panel buffer of the thread that runs a training product, kept between calls:
    /// a fresh 16 MiB allocation per product would fault its pages in again each time.
    static PANEL: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
}

impl FrozenWeight {
    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            FrozenWeight::F32(t) => {
                let d = t.dims();
                (d[0], d.get(1).copied().unwrap_or(1))
            }
            FrozenWeight::Stored(q) => (q.rows(), q.cols()),
        }
    }

    /// The storage type, `None` for f32.
    pub fn stored_type(&self) -> Option<StoredType> {
        match self {
            FrozenWeight::F32(_) => None,
            FrozenWeight::Stored(q) => Some(q.stored_type()),
        }
    }

    /// Products read the stored rows from now on (see
    /// [`QuantMatrix::keep_stored_layout`]); nothing for an f32 weight.
    pub fn keep_stored_layout(&self) {
        if let FrozenWeight::Stored(q) = self {
            q.keep_stored_layout();
        }
    }

    /// Builds what a stored matrix's products keep (see
    /// [`QuantMatrix::prepare_products`]); returns the bytes of a stored matrix, 0 for an
    /// f32 weight, which keeps nothing.
    pub fn prepare_products(&self) -> usize {
        match self {
            FrozenWeight::F32(_) => 0,
            FrozenWeight::Stored(q) => {
                q.prepare_products();
                q.byte_len()
            }
        }
    }

    /// Bytes the weight holds.
    pub fn byte_len(&self) -> usize {
        match self {
            FrozenWeight::F32(t) => t.elem_count() * 4,
            FrozenWeight::Stored(q) => q.byte_len(),
        }
    }

    /// The f32 tensor, when that is how the weight is held.
    pub fn as_f32(&self) -> Option<&Tensor> {
        match self {
            FrozenWeight::F32(t) => Some(t),
            FrozenWeight::Stored(_) => None,
        }
    }

    /// The weight as an f32 tensor: itself, or a dequantized copy.
    pub fn to_f32(&self, device: &Device) -> Result<Tensor> {
        match self {
            FrozenWeight::F32(t) => Ok(t.clone()),
            FrozenWeight::Stored(q) => Tensor::from_vec(q.to_f32(), (q.rows(), q.cols()), device),
        }
    }

    /// The weight as contiguous storage for the training products.
    pub fn contiguous(&self) -> Result<Self> {
        Ok(match self {
            FrozenWeight::F32(t) => FrozenWeight::F32(t.contiguous()?),
            FrozenWeight::Stored(q) => FrozenWeight::Stored(q.clone()),
        })
    }

    /// `x [.., in] · Wᵀ` as `[.., out]` at inference, without autograd through the weight.
    pub fn x_wt(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            FrozenWeight::F32(w) => super::frozen_matmul::x_wt(x, w),
            FrozenWeight::Stored(q) => {
                let (out, inp) = (q.rows(), q.cols());
                if x.dims().last() != Some(&inp) {
                    candle_core::bail!("input {:?} for a weight [{out}, {inp}]", x.dims());
                }
                let x = x.to_dtype(DType::F32)?.contiguous()?;
                let rows = x.elem_count() / inp.max(1);
                let mut y = vec![0f32; rows * out];
                with_slice(&x, |xs| stored_matmul(q, xs, rows, &mut y))?;
                Tensor::from_vec(y, super::frozen_matmul::out_shape(&x, out), x.device())
            }
        }
    }

    /// Rows `ids` of the weight (an embedding lookup) as `[ids.len(), in]`.
    pub fn rows(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            FrozenWeight::F32(t) => t.index_select(ids, 0),
            FrozenWeight::Stored(q) => {
                let device = ids.device().clone();
                let ids = ids.to_vec1::<u32>()?;
                let cols = q.cols();
                let mut out = vec![0f32; ids.len() * cols];
                for (&id, row) in ids.iter().zip(out.chunks_exact_mut(cols.max(1))) {
                    let id = id as usize;
                    if id >= q.rows() {
                        candle_core::bail!(
                            "token id {id} is outside the vocabulary of {}",
                            q.rows()
                        );
                    }
                    q.dequantize_rows(id, row);
                }
                Tensor::from_vec(out, (ids.len(), cols), &device)
            }
        }
    }

    /// Training: `y [n, out] (+)= x [n, in] · Wᵀ`, on every thread.
    pub fn x_wt_into(&self, y: &mut [f32], accumulate: bool, n: usize, x: &[f32]) -> Result<()> {
        let (out, inp) = self.dims();
        check_lengths("x·Wᵀ", (n, inp, out), x.len(), y.len())?;
        match self {
            FrozenWeight::F32(w) => with_slice(w, |w| {
                gemm_into(y, accumulate, (n, out, inp), x, false, w, true, 1.0, All)
            }),
            FrozenWeight::Stored(q) => {
                stored_x_wt(q, y, accumulate, n, x, panel_rows(out, inp));
                Ok(())
            }
        }
    }

    /// Training: `x [n, in] · Wᵀ` into a new `[n, out]` buffer.
    pub fn x_wt_new(&self, n: usize, x: &[f32]) -> Result<Vec<f32>> {
        let (out, inp) = self.dims();
        match self {
            FrozenWeight::F32(w) => {
                with_slice(w, |w| gemm_new((n, out, inp), x, false, w, true, 1.0, All))
            }
            FrozenWeight::Stored(q) => {
                check_lengths("x·Wᵀ", (n, inp, out), x.len(), n * out)?;
                let mut y = Vec::with_capacity(n * out);
                // SAFETY: `y` has room for the `n · out` values and `x` holds `n · inp`
                // (checked above). Without accumulating, every value of `y` is written
                // (see `stored_x_wt_raw`) before `set_len` exposes it.
                unsafe {
                    stored_x_wt_raw(q, y.as_mut_ptr(), false, n, x, panel_rows(out, inp));
                    y.set_len(n * out);
                }
                Ok(y)
            }
        }
    }

    /// Training: `dx [n, in] (+)= dy [n, out] · W`, on every thread.
    pub fn dy_w_into(&self, dx: &mut [f32], accumulate: bool, n: usize, dy: &[f32]) -> Result<()> {
        let (out, inp) = self.dims();
        check_lengths("dy·W", (n, out, inp), dy.len(), dx.len())?;
        match self {
            FrozenWeight::F32(w) => with_slice(w, |w| {
                gemm_into(dx, accumulate, (n, inp, out), dy, false, w, false, 1.0, All)
            }),
            FrozenWeight::Stored(q) => {
                stored_dy_w(q, dx, accumulate, n, dy, panel_rows(out, inp));
                Ok(())
            }
        }
    }

    /// Training: `dy [n, out] · W` into a new `[n, in]` buffer.
    pub fn dy_w_new(&self, n: usize, dy: &[f32]) -> Result<Vec<f32>> {
        let (out, inp) = self.dims();
        match self {
            FrozenWeight::F32(w) => with_slice(w, |w| {
                gemm_new((n, inp, out), dy, false, w, false, 1.0, All)
            }),
            FrozenWeight::Stored(q) => {
                check_lengths("dy·W", (n, out, inp), dy.len(), n * inp)?;
                let mut dx = Vec::with_capacity(n * inp);
                // SAFETY: `dx` has room for the `n · inp` values and `dy` holds `n · out`
                // (checked above). Without accumulating, every value of `dx` is written
                // (see `stored_dy_w_raw`) before `set_len` exposes it.
                unsafe {
                    stored_dy_w_raw(q, dx.as_mut_ptr(), false, n, dy, panel_rows(out, inp));
                    dx.set_len(n * inp);
                }
                Ok(dx)
            }
        }
    }
}

/// `y = x Wᵀ` at inference on a stored weight, by the path [`stored_prefill`] picks for
/// this many rows (deciding it on the first products of its kind).
fn stored_matmul(q: &QuantMatrix, x: &[f32], rows: usize, y: &mut [f32]) -> Result<()> {
    let (out, inp) = (q.rows(), q.cols());
    let integer = |y: &mut [f32]| q.matmul(x, rows, y).map_err(candle_core::Error::Msg);
    let panels = |y: &mut [f32]| stored_x_wt(q, y, false, rows, x, panel_rows(out, inp));
    let dot_slices = |y: &mut [f32]| stored_x_wt_dot_slices(q, y, rows, x);
    // On AVX-512 the integer path takes the VNNI kernels of one weight row; the AVX2
    // integer tiles of the K-quants compete with them there.
    let tiles = |y: &mut [f32]| {
        q.matmul_on(Isa::Avx2, x, rows, y)
            .map_err(candle_core::Error::Msg)
    };
    let kind = (q.stored_type(), inp, out, rows);
    match stored_prefill::chosen(kind) {
        Some(Path::Integer) => integer(y),
        Some(Path::IntegerTiles) => tiles(y),
        Some(Path::Panels) => {
            panels(y);
            Ok(())
        }
        Some(Path::DotSlices) => {
            dot_slices(y);
            Ok(())
        }
        None => {
            let (mut by_integer, mut by_tiles) = (Ok(()), Ok(()));
            // One-time work (an interleaved copy) and page faults stay out of the timings.
            q.prepare_products();
            q.touch_pages();
            let mut candidates: Vec<stored_prefill::Candidate<'_>> = vec![
                (Path::Integer, Box::new(|y| by_integer = integer(y))),
                (Path::Panels, Box::new(panels)),
            ];
            if crate::ops::dot_gemm::available() {
                candidates.push((Path::DotSlices, Box::new(dot_slices)));
            }
            if q.avx2_tiles_compete() {
                candidates.push((Path::IntegerTiles, Box::new(|y| by_tiles = tiles(y))));
            }
            stored_prefill::decide(kind, y, candidates);
            // The paths through f32 read the stored rows back into memory.
            q.release_stored_pages_if_copied();
            by_integer.and(by_tiles)
        }
    }
}

/// Weight rows per slice of [`stored_x_wt_dot_slices`]: about 128 KiB of f32, so that a
/// slice stays in L2 between its dequantization and its product.
fn dot_slice_rows(cols: usize) -> usize {
    // Whole tiles of the kernel (6 weight rows) in whole pairs.
    ((1usize << 15) / cols.max(1)).clamp(12, 252) / 12 * 12
}

/// `y = x Wᵀ` on a stored weight for a prompt: each thread dequantizes a slice of the
/// weight's rows into a buffer of its own and multiplies it at once with every input row
/// in the dot kernel ([`crate::ops::dot_gemm`]), while it is still in L2. Against
/// [`stored_x_wt`], whose panels go through memory between the two, this saves a write and
/// a read of every weight as f32; the lengths are checked by the caller.
fn stored_x_wt_dot_slices(q: &QuantMatrix, y: &mut [f32], n: usize, x: &[f32]) {
    let (out, inp) = (q.rows(), q.cols());
    debug_assert!(x.len() == n * inp && y.len() == n * out);
    let per_slice = dot_slice_rows(inp);
    thread_local! {
        static SLICE: RefCell<Vec<f32>> = const { RefCell::new(Vec::new()) };
    }
    struct Out(*mut f32);
    // SAFETY: each slice writes its own columns of `y` (below).
    unsafe impl Sync for Out {}
    impl Out {
        fn ptr(&self) -> *mut f32 {
            self.0
        }
    }
    let y_out = Out(y.as_mut_ptr());
    (0..out)
        .into_par_iter()
        .step_by(per_slice)
        .for_each(|first| {
            let rows = per_slice.min(out - first);
            let work = |slice: &mut Vec<f32>| {
                slice.resize(rows * inp, 0.0);
                q.dequantize_rows(first, &mut slice[..rows * inp]);
                // SAFETY: x holds n·inp values and the slice rows·inp; y holds n·out, and this
                // task writes columns first..first + rows of each of its n rows, which no other
                // task writes.
                unsafe {
                    crate::ops::dot_gemm::x_wt(
                        (n, rows, inp),
                        (x.as_ptr(), inp),
                        (slice.as_ptr(), inp),
                        (y_out.ptr().add(first), out),
                        (1.0, false),
                        false,
                    )
                }
            };
            SLICE.with(|kept| match kept.try_borrow_mut() {
                Ok(mut slice) => work(&mut slice),
                Err(_) => work(&mut Vec::new()),
            });
        });
}

/// Checks an `n × k` input and an `n × m` output of a product with the weight.
fn check_lengths(
    what: &str,
    (n, k, m): (usize, usize, usize),
    input: usize,
    output: usize,
) -> Result<()> {
    if input != n * k || output != n * m {
        candle_core::bail!(
            "{what}: {n} rows need {} input and {} output values, given {input} and {output}",
            n * k,
            n * m
        );
    }
    Ok(())
}

/// [`FrozenWeight::x_wt_into`] on a stored weight, `per_panel` rows at a time; the lengths
/// are checked by the caller.
fn stored_x_wt(
    q: &QuantMatrix,
    y: &mut [f32],
    accumulate: bool,
    n: usize,
    x: &[f32],
    per_panel: usize,
) {
    debug_assert!(x.len() == n * q.cols() && y.len() == n * q.rows());
    // SAFETY: `y` holds the `n · out` initialized values the product writes.
    unsafe { stored_x_wt_raw(q, y.as_mut_ptr(), accumulate, n, x, per_panel) }
}

/// [`stored_x_wt`] into `n · out` values at `y`. Without `accumulate` each value is
/// written before it is read (the panels cover disjoint columns, each product with
/// `read_dst` false), so `y` may be uninitialized.
///
/// # Safety
/// `y` is valid for writes of `n · out` values (and initialized when `accumulate`),
/// aliases neither `x` nor `q`; `x` holds `n · in` values.
unsafe fn stored_x_wt_raw(
    q: &QuantMatrix,
    y: *mut f32,
    accumulate: bool,
    n: usize,
    x: &[f32],
    per_panel: usize,
) {
    let (out, inp) = (q.rows(), q.cols());
    debug_assert!(x.len() == n * inp);
    if inp == 0 && !accumulate {
        // SAFETY: the caller's promise on `y`.
        unsafe { std::ptr::write_bytes(y, 0, n * out) };
    }
    for_each_panel(q, per_panel, |first, rows, panel| {
        // SAFETY: `y` holds `n · out` values and `x` `n · inp` (the caller's promises);
        // the panel holds `rows · inp`. The product writes y[i, first + j] for i < n,
        // j < rows (offset `first + j + i·out < n·out`), reads x[i, p] and panel[j, p]
        // for p < inp; `y` aliases neither input.
        unsafe {
            super::gemm_choice::gemm(
                n,
                rows,
                inp,
                y.add(first),
                1,
                out as isize,
                accumulate,
                x.as_ptr(),
                1,
                inp as isize,
                panel.as_ptr(),
                inp as isize,
                1,
                1.0,
                1.0,
                parallelism(),
            );
        }
    });
}

/// [`FrozenWeight::dy_w_into`] on a stored weight, `per_panel` rows at a time; the lengths
/// are checked by the caller.
fn stored_dy_w(
    q: &QuantMatrix,
    dx: &mut [f32],
    accumulate: bool,
    n: usize,
    dy: &[f32],
    per_panel: usize,
) {
    debug_assert!(dy.len() == n * q.rows() && dx.len() == n * q.cols());
    // SAFETY: `dx` holds the `n · in` initialized values the product writes.
    unsafe { stored_dy_w_raw(q, dx.as_mut_ptr(), accumulate, n, dy, per_panel) }
}

/// [`stored_dy_w`] into `n · in` values at `dx`. Without `accumulate` the first panel's
/// product writes every value (with `read_dst` false) before a later one reads it, so
/// `dx` may be uninitialized.
///
/// # Safety
/// `dx` is valid for writes of `n · in` values (and initialized when `accumulate`),
/// aliases neither `dy` nor `q`; `dy` holds `n · out` values.
unsafe fn stored_dy_w_raw(
    q: &QuantMatrix,
    dx: *mut f32,
    accumulate: bool,
    n: usize,
    dy: &[f32],
    per_panel: usize,
) {
    let (out, inp) = (q.rows(), q.cols());
    debug_assert!(dy.len() == n * out);
    if out == 0 && !accumulate {
        // SAFETY: the caller's promise on `dx`.
        unsafe { std::ptr::write_bytes(dx, 0, n * inp) };
    }
    for_each_panel(q, per_panel, |first, rows, panel| {
        // The first panel writes dx (or adds to it when accumulating); the others add
        // their rows' share.
        let read_dst = accumulate || first > 0;
        // SAFETY: `dx` holds `n · inp` values and `dy` `n · out` (the caller's promises);
        // the panel holds `rows · inp`. The product writes dx[i, p] for i < n, p < inp,
        // reads dy[i, first + j] (offset `first + j + i·out < n·out`) and panel[j, p] for
        // j < rows; `dx` aliases neither input.
        unsafe {
            super::gemm_choice::gemm(
                n,
                inp,
                rows,
                dx,
                1,
                inp as isize,
                read_dst,
                dy.as_ptr().add(first),
                1,
                out as isize,
                panel.as_ptr(),
                1,
                inp as isize,
                1.0,
                1.0,
                parallelism(),
            );
        }
    });
}

/// gemm's threads for one panel's product: all of rayon's.
fn parallelism() -> gemm::Parallelism {
    match rayon::current_num_threads() {
        n if n > 1 => gemm::Parallelism::Rayon(n),
        _ => gemm::Parallelism::None,
    }
}

/// Rows per panel of a `rows × cols` weight.
fn panel_rows(rows: usize, cols: usize) -> usize {
    (PANEL_VALUES / cols.max(1))
        .max(PANEL_MIN_ROWS)
        .min(rows)
        .max(1)
}

/// Calls `f(first_row, rows, panel)` for each panel of `per_panel` of `q`'s rows in order, the panel
/// dequantized to f32 on every thread first.
fn for_each_panel(q: &QuantMatrix, per_panel: usize, mut f: impl FnMut(usize, usize, &[f32])) {
    let (total, cols) = (q.rows(), q.cols());
    if total == 0 || cols == 0 {
        return;
    }
    let per_panel = per_panel.clamp(1, total);
    let mut run = |panel: &mut Vec<f32>| {
        panel.resize(per_panel * cols, 0.0);
        // About 64 Ki values per dequantizing task.
        let rows_per_task = ((1 << 16) / cols).max(1);
        for first in (0..total).step_by(per_panel) {
            let rows = per_panel.min(total - first);
            let values = &mut panel[..rows * cols];
            values
                .par_chunks_mut(rows_per_task * cols)
                .enumerate()
                .for_each(|(t, chunk)| q.dequantize_rows(first + t * rows_per_task, chunk));
            f(first, rows, values);
        }
    };
    // A product that runs inside another on this thread (rayon may hand this thread a
    // task while it waits) gets a buffer of its own instead of the kept one.
    PANEL.with(|kept| match kept.try_borrow_mut() {
        Ok(mut panel) => run(&mut panel),
        Err(_) => run(&mut Vec::new()),
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QTensor;

    fn matrix(rows: usize, cols: usize, seed: u64) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| ((i as u64 * 2654435761 + seed * 97) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    /// A stored weight of `ty` and its dequantized f32 twin.
    fn twins(ty: StoredType, rows: usize, cols: usize) -> (FrozenWeight, FrozenWeight) {
        let w = Tensor::from_vec(matrix(rows, cols, 1), (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, ty.ggml()).unwrap();
        let bytes = q.data().unwrap().to_vec();
        let m = QuantMatrix::owned(bytes, ty, rows, cols).unwrap();
        let f32_copy = Tensor::from_vec(m.to_f32(), (rows, cols), &Device::Cpu).unwrap();
        (
            FrozenWeight::Stored(Arc::new(m)),
            FrozenWeight::F32(f32_copy),
        )
    }

    fn assert_close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        let scale = b.iter().fold(1f32, |m, v| m.max(v.abs()));
        let worst = a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()));
        assert!(
            worst <= 1e-5 * scale,
            "{what}: max |Δ| {worst} (scale {scale})"
        );
    }

    /// A prompt through dequantized slices into the dot kernel, and through panels into
    /// gemm, equals the product with the dequantized f32 weight (slices that do not divide
    /// the rows, prompts that do not fill a tile).
    #[test]
    fn prompt_paths_equal_the_dequantized_f32_product() {
        for (ty, rows, cols, n) in [
            (StoredType::Q4K, 300, 256, 13),
            (StoredType::Q6K, 130, 512, 92),
            (StoredType::Q8_0, 70, 96, 5),
        ] {
            let (stored, f32_twin) = twins(ty, rows, cols);
            let FrozenWeight::Stored(q) = &stored else {
                unreachable!()
            };
            let x = matrix(n, cols, 7);
            let xt = Tensor::from_vec(x.clone(), (n, cols), &Device::Cpu).unwrap();
            let want: Vec<f32> = f32_twin
                .x_wt(&xt)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let mut y = vec![f32::NAN; n * rows];
            stored_x_wt_dot_slices(q, &mut y, n, &x);
            assert_close(&y, &want, &format!("{} dot slices", ty.name()));
            let mut y = vec![f32::NAN; n * rows];
            stored_x_wt(q, &mut y, false, n, &x, panel_rows(rows, cols));
            assert_close(&y, &want, &format!("{} panels", ty.name()));
        }
    }

    /// Forward and backward, written fresh and accumulated, for a 32-value type, a
    /// K-quant and a 16-bit float, in one panel and in panels that do not divide the rows.
    #[test]
    fn stored_products_equal_the_dequantized_f32_products() {
        for (ty, rows, cols) in [
            (StoredType::Q4_1, 600, 64),
            (StoredType::Q8_0, 40, 96),
            (StoredType::Q4K, 300, 256),
            (StoredType::F16, 520, 32),
        ] {
            let (stored, exact) = twins(ty, rows, cols);
            let FrozenWeight::Stored(q) = &stored else {
                unreachable!()
            };
            let n = 7;
            let x = matrix(n, cols, 2);
            let dy = matrix(n, rows, 3);
            let want_y = exact.x_wt_new(n, &x).unwrap();
            let want_dx = exact.dy_w_new(n, &dy).unwrap();
            for per_panel in [rows, 48, 1] {
                let what = format!("{} {rows}×{cols}, {per_panel} rows a panel", ty.name());
                let mut y = vec![f32::NAN; n * rows];
                stored_x_wt(q, &mut y, false, n, &x, per_panel);
                assert_close(&y, &want_y, &format!("{what}: x·Wᵀ"));
                let mut dx = vec![f32::NAN; n * cols];
                stored_dy_w(q, &mut dx, false, n, &dy, per_panel);
                assert_close(&dx, &want_dx, &format!("{what}: dy·W"));

                let base = matrix(n, rows, 4);
                let (mut a, mut b) = (base.clone(), base);
                stored_x_wt(q, &mut a, true, n, &x, per_panel);
                exact.x_wt_into(&mut b, true, n, &x).unwrap();
                assert_close(&a, &b, &format!("{what}: y + x·Wᵀ"));
                let base = matrix(n, cols, 5);
                let (mut a, mut b) = (base.clone(), base);
                stored_dy_w(q, &mut a, true, n, &dy, per_panel);
                exact.dy_w_into(&mut b, true, n, &dy).unwrap();
                assert_close(&a, &b, &format!("{what}: dx + dy·W"));
            }
            assert_close(&stored.x_wt_new(n, &x).unwrap(), &want_y, "x_wt_new");
            assert_close(&stored.dy_w_new(n, &dy).unwrap(), &want_dx, "dy_w_new");
        }
    }

    #[test]
    fn buffers_of_the_wrong_length_are_an_error() {
        let (stored, _) = twins(StoredType::Q8_0, 8, 32);
        let err = stored.x_wt_new(2, &[0.0; 63]).unwrap_err();
        assert!(err.to_string().contains("2 rows need 64 input"), "{err}");
    }
}
