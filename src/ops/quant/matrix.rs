//! [`QuantMatrix`]: a weight matrix `[rows, cols]` kept in its file's own blocks (mapped
//! from the file, or owned when its rows had to be reordered), multiplied as `y = x Wᵀ`
//! with the activations quantized once per product and integer dot products per row,
//! split over the threads by weight rows.

use std::sync::Arc;

use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ5K, BlockQ6K, BlockQ8K, GgmlType,
};
use rayon::prelude::*;

use super::activation::{Activations, Q8Row};
use super::format::{blocks, StoredType};
use super::isa::{self, Isa};
use super::{dot_scalar, kernel_choice};
use crate::ops::slice_gemm::SharedOut;

/// Where a matrix's bytes live.
enum Bytes {
    /// A range of a memory-mapped model file.
    Mapped {
        map: Arc<memmap2::Mmap>,
        start: usize,
        len: usize,
    },
    /// A copy (rows reordered at load); `u64`s keep it aligned for every block type.
    Owned { words: Vec<u64>, len: usize },
}

impl Bytes {
    fn as_slice(&self) -> &[u8] {
        match self {
            Bytes::Mapped { map, start, len } => &map[*start..*start + *len],
            Bytes::Owned { words, len } => {
                // SAFETY: `words` holds at least `len` initialized bytes (built that way
                // in `QuantMatrix::owned_with`); u8 has no alignment or validity requirement.
                unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), *len) }
            }
        }
    }

    /// Lets the operating system drop a mapped matrix's pages from this process (they
    /// are read back from the file if touched again); an owned copy stays.
    fn release_pages(&self) {
        self.release_range(0..self.as_slice().len());
    }

    /// [`Self::release_pages`] for the bytes `range` of the matrix (the pages that hold
    /// them, from the one holding its first byte).
    fn release_range(&self, range: std::ops::Range<usize>) {
        if let Bytes::Mapped { map, start, len } = self {
            if range.start >= range.end || range.end > *len {
                return;
            }
            // SAFETY: the map is a read-only shared mapping of the file: pages dropped are
            // read back unchanged from the file on the next access.
            let advised = unsafe {
                map.unchecked_advise_range(
                    memmap2::UncheckedAdvice::DontNeed,
                    start + range.start,
                    range.len(),
                )
            };
            if let Err(e) = advised {
                tracing::debug!("could not release {} mapped bytes: {e}", range.len());
            }
        }
    }
}

/// A frozen weight matrix in a quantized (or 16-bit float) storage type.
pub struct QuantMatrix {
    ty: StoredType,
    rows: usize,
    cols: usize,
    /// Bytes per row (kept: a decode step looks rows up by the hundred thousand).
    row_bytes: usize,
    bytes: Bytes,
    /// Row `i` is stored row `order[i]` (llama.cpp's Q/K row order undone without a
    /// copy); `None`: rows in stored order.
    order: Option<Box<[u32]>>,
    /// The matrix's copy in interleaved blocks of eight rows (Q4_K, Q6_K and the 32-value
    /// types), which its products on AVX2 read once it exists (built by the first, the
    /// mapped pages released as it is built, so the matrix still costs its size once).
    #[cfg(target_arch = "x86_64")]
    interleaved: std::sync::RwLock<Option<Arc<super::interleaved::Interleaved>>>,
    /// Products read the stored rows only ([`Self::keep_stored_layout`]).
    keep_stored: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for QuantMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "QuantMatrix({} [{}, {}])",
            self.ty.name(),
            self.rows,
            self.cols
        )
    }
}

/// Why a matrix cannot be read as its type claims.
fn shape_error(ty: StoredType, rows: usize, cols: usize, len: usize) -> String {
    format!(
        "{} [{rows}, {cols}] does not fit its {len} bytes (rows must be whole {}-value blocks of {} bytes)",
        ty.name(),
        ty.block_elems(),
        ty.block_bytes()
    )
}

fn expected_len(ty: StoredType, rows: usize, cols: usize) -> Option<usize> {
    if !cols.is_multiple_of(ty.block_elems()) {
        return None;
    }
    (cols / ty.block_elems())
        .checked_mul(ty.block_bytes())?
        .checked_mul(rows)
}

impl QuantMatrix {
    /// The matrix at `start..` of a mapped file. A range that is not aligned for the
    /// type's blocks is copied (GGUF aligns tensor data, so this is the exception).
    pub fn mapped(
        map: Arc<memmap2::Mmap>,
        start: usize,
        ty: StoredType,
        rows: usize,
        cols: usize,
    ) -> Result<Self, String> {
        let len = expected_len(ty, rows, cols)
            .filter(|&l| start.checked_add(l).is_some_and(|end| end <= map.len()))
            .ok_or_else(|| shape_error(ty, rows, cols, map.len().saturating_sub(start)))?;
        if !(map.as_ptr() as usize + start).is_multiple_of(ty.alignment()) {
            return Self::owned(map[start..start + len].to_vec(), ty, rows, cols);
        }
        Ok(Self::with_bytes(
            (ty, rows, cols),
            Bytes::Mapped { map, start, len },
            None,
        ))
    }

    /// A matrix of `bytes` read in `order`, nothing built from it yet.
    fn with_bytes(
        (ty, rows, cols): (StoredType, usize, usize),
        bytes: Bytes,
        order: Option<Box<[u32]>>,
    ) -> Self {
        Self {
            ty,
            rows,
            cols,
            row_bytes: cols / ty.block_elems() * ty.block_bytes(),
            bytes,
            order,
            #[cfg(target_arch = "x86_64")]
            interleaved: Default::default(),
            keep_stored: Default::default(),
        }
    }

    /// A matrix from bytes in memory.
    pub fn owned(bytes: Vec<u8>, ty: StoredType, rows: usize, cols: usize) -> Result<Self, String> {
        Self::owned_with(ty, rows, cols, bytes.len(), |dst| {
            dst.copy_from_slice(&bytes);
            Ok(())
        })
    }

    /// A matrix of `len` bytes that `fill` writes straight into the matrix's own aligned
    /// buffer (one copy of the weights, not two: an 8B model's reordered Q/K rows are
    /// about 380 MB).
    fn owned_with(
        ty: StoredType,
        rows: usize,
        cols: usize,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> Result<(), String>,
    ) -> Result<Self, String> {
        if expected_len(ty, rows, cols) != Some(len) {
            return Err(shape_error(ty, rows, cols, len));
        }
        let mut words = vec![0u64; len.div_ceil(8)];
        // SAFETY: the words' memory holds at least `len` bytes, any byte pattern is a
        // valid u64, and the slice is the only reference to it while `fill` runs.
        let dst = unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) };
        fill(dst)?;
        Ok(Self::with_bytes(
            (ty, rows, cols),
            Bytes::Owned { words, len },
            None,
        ))
    }

    /// The same matrix with row `i` of the result taken from row `source(i)` of this one
    /// (llama.cpp's Q/K row order undone): the same mapped bytes read in the new order,
    /// or a copy of bytes already in memory.
    pub fn with_rows_from(&self, source: impl Fn(usize) -> usize) -> Result<Self, String> {
        if let Bytes::Mapped { map, start, len } = &self.bytes {
            let mut order = Vec::with_capacity(self.rows);
            for i in 0..self.rows {
                let s = source(i);
                if s >= self.rows {
                    return Err(format!("row {s} of {} requested", self.rows));
                }
                let stored = self.stored_index(s);
                order
                    .push(u32::try_from(stored).map_err(|_| format!("row {stored} out of range"))?);
            }
            let bytes = Bytes::Mapped {
                map: map.clone(),
                start: *start,
                len: *len,
            };
            return Ok(Self::with_bytes(
                (self.ty, self.rows, self.cols),
                bytes,
                Some(order.into_boxed_slice()),
            ));
        }
        let rb = self.row_bytes();
        Self::owned_with(self.ty, self.rows, self.cols, self.rows * rb, |dst| {
            for (i, out) in dst.chunks_exact_mut(rb.max(1)).enumerate() {
                let s = source(i);
                if s >= self.rows {
                    return Err(format!("row {s} of {} requested", self.rows));
                }
                out.copy_from_slice(self.row(s));
            }
            Ok(())
        })
    }

    /// Whether a prompt through this matrix has an integer path of the AVX2 level (the
    /// K-quants' tiles) other than the one [`Self::matmul`] takes on this CPU: on AVX-512,
    /// where Q4_K and Q6_K take the VNNI kernels of one weight row, the two compete.
    pub fn avx2_tiles_compete(&self) -> bool {
        let active = isa::active();
        cfg!(target_arch = "x86_64")
            && active > Isa::Avx2
            && self.ty.activation_format(active) != self.ty.activation_format(Isa::Avx2)
    }

    pub fn stored_type(&self) -> StoredType {
        self.ty
    }
    pub fn rows(&self) -> usize {
        self.rows
    }
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Bytes held (as stored).
    pub fn byte_len(&self) -> usize {
        self.bytes.as_slice().len()
    }
    #[inline]
    fn row_bytes(&self) -> usize {
        self.row_bytes
    }
    /// Row `r`'s bytes.
    #[inline]
    pub(super) fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        let s = self.stored_index(r);
        &self.bytes.as_slice()[s * rb..(s + 1) * rb]
    }

    /// Where row `r` is stored.
    #[inline]
    fn stored_index(&self, r: usize) -> usize {
        self.order.as_ref().map_or(r, |o| o[r] as usize)
    }

    /// Reads one byte of each page of the matrix, so that a mapped file's pages are in
    /// memory before a product is timed (the first touch of a mapped page costs a fault).
    pub fn touch_pages(&self) {
        let bytes = self.bytes.as_slice();
        let mut sum = 0u8;
        for at in (0..bytes.len()).step_by(4096) {
            sum = sum.wrapping_add(bytes[at]);
        }
        std::hint::black_box(sum);
    }

    /// Whether the matrix holds an interleaved copy now.
    #[cfg(test)]
    pub(super) fn has_interleaved_copy(&self) -> bool {
        #[cfg(target_arch = "x86_64")]
        return self.interleaved.read().is_ok_and(|c| c.is_some());
        #[cfg(not(target_arch = "x86_64"))]
        false
    }

    /// All of the matrix's bytes in stored order, for tests against candle's block types.
    #[cfg(test)]
    pub(super) fn row_bytes_all(&self) -> &[u8] {
        self.bytes.as_slice()
    }

    /// Rows `first..first + out.len() / cols` as f32.
    pub fn dequantize_rows(&self, first: usize, out: &mut [f32]) {
        let n = out.len() / self.cols.max(1);
        #[cfg(target_arch = "x86_64")]
        if let Some(copy) = self
            .interleaved
            .read()
            .ok()
            .and_then(|c| c.clone())
            .filter(|c| c.rebuilds_stored_rows())
        {
            // A 32-value type's stored pages were released behind its copy: its rows are
            // rebuilt from the copy, eight at a time, rather than read back into memory.
            let (rb, cols) = (self.row_bytes, self.cols.max(1));
            const ROWS: usize = super::interleaved::ROWS;
            let mut group = vec![0u8; ROWS * rb];
            let (mut r, end) = (first, first + n);
            while r < end {
                let g = r / ROWS;
                let (lo, hi) = (r - ROWS * g, (end - ROWS * g).min(ROWS));
                if !copy.stored_group(g, &mut group) {
                    break;
                }
                let rows_out = &mut out[(r - first) * cols..(ROWS * g + hi - first) * cols];
                self.ty.dequantize(&group[lo * rb..hi * rb], rows_out);
                r = ROWS * g + hi;
            }
            if r >= end {
                return;
            }
        }
        if self.order.is_some() {
            for (i, out) in out.chunks_exact_mut(self.cols.max(1)).enumerate().take(n) {
                self.ty.dequantize(self.row(first + i), out);
            }
            return;
        }
        let rb = self.row_bytes();
        let bytes = &self.bytes.as_slice()[first * rb..(first + n) * rb];
        self.ty.dequantize(bytes, out);
    }

    /// The whole matrix as f32, row-major, dequantized on every thread.
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        let rows_per_task = (1 << 16) / self.cols.max(1) + 1;
        out.par_chunks_mut(rows_per_task * self.cols.max(1))
            .enumerate()
            .for_each(|(t, chunk)| self.dequantize_rows(t * rows_per_task, chunk));
        out
    }

    /// `y [m, rows] = x [m, cols] · Wᵀ`.
    pub fn matmul(&self, x: &[f32], m: usize, y: &mut [f32]) -> Result<(), String> {
        self.matmul_on(isa::active(), x, m, y)
    }

    /// [`Self::matmul`] with the kernels of `level` (tests and benchmarks compare them).
    pub fn matmul_on(&self, level: Isa, x: &[f32], m: usize, y: &mut [f32]) -> Result<(), String> {
        if x.len() != m * self.cols || y.len() != m * self.rows {
            return Err(format!(
                "{:?}: input of {} values for {m} rows, output of {}",
                self,
                x.len(),
                y.len()
            ));
        }
        if m == 0 || self.rows == 0 {
            return Ok(());
        }
        let level = kernel_choice::choose(self.ty, self.cols, level.min(isa::detected()));
        self.matmul_at(level, x, m, y);
        Ok(())
    }

    /// The product with the kernels of exactly `level` (at most the detected one), the
    /// lengths checked by the caller: what [`kernel_choice`] times.
    pub(super) fn matmul_at(&self, level: Isa, x: &[f32], m: usize, y: &mut [f32]) {
        let acts = Activations::quantize(self.ty.activation_format(level), x, self.cols);
        let out = SharedOut(y.as_mut_ptr());
        let ty = self.ty;
        match &acts {
            Activations::Q8(a) => {
                #[cfg(target_arch = "x86_64")]
                if let Some(copy) = self.interleaved_for(level) {
                    // SAFETY: `level` is AVX2, at most the detected one; the sizes were
                    // checked by the caller and the activations quantized for `cols`.
                    unsafe { copy.matmul_q8(a, m, y) };
                    return;
                }
                let dot = q8_kernel(ty, level);
                let dot4 = q8_kernel4(ty, level);
                // Sliced once, not once per weight row: a decode step of a 262K-row LM
                // head of short rows spent a tenth of its time around the kernel calls.
                let rows: Vec<Q8Row<'_>> = (0..m).map(|i| a.row(i)).collect();
                self.rows_parallel(m, out, |w, i, y: &mut [f32]| {
                    if let (Some(dot4), 4) = (&dot4, y.len()) {
                        y.copy_from_slice(&dot4(
                            w,
                            [rows[i], rows[i + 1], rows[i + 2], rows[i + 3]],
                        ));
                    } else {
                        for (k, y) in y.iter_mut().enumerate() {
                            *y = dot.dot(w, rows[i + k]);
                        }
                    }
                });
            }
            Activations::Q8K(a) => {
                #[cfg(target_arch = "x86_64")]
                {
                    use super::kquant_tiles::{self, Weights};
                    if let Some(copy) = self.interleaved_for(level) {
                        let copy = &*copy;
                        if m >= TILE_MIN_ROWS {
                            kquant_tiles::matmul(
                                ty,
                                Weights::Interleaved(copy),
                                self.rows,
                                a,
                                m,
                                y,
                            );
                        } else {
                            // SAFETY: `level` is at most the detected one; the sizes were
                            // checked above and the activations quantized for `cols`.
                            unsafe { copy.matmul(a, m, y) };
                        }
                        return;
                    }
                    if m >= TILE_MIN_ROWS && level >= Isa::Avx2 && kquant_tiles::serves(ty) {
                        kquant_tiles::matmul(ty, Weights::Stored(self), self.rows, a, m, y);
                        return;
                    }
                }
                let dot = q8k_kernel(ty, level);
                let dot4 = q8k_kernel4(ty, level);
                let per_row = a.len() / m;
                let row = |i: usize| &a[i * per_row..(i + 1) * per_row];
                self.rows_parallel(m, out, |w, i, y: &mut [f32]| {
                    if let (Some(dot4), 4) = (dot4, y.len()) {
                        y.copy_from_slice(&dot4(w, [row(i), row(i + 1), row(i + 2), row(i + 3)]));
                    } else {
                        for (k, y) in y.iter_mut().enumerate() {
                            *y = dot(w, row(i + k));
                        }
                    }
                });
            }
            Activations::F32(a) => {
                let dot = f32_kernel(ty, level);
                let cols = self.cols;
                self.rows_parallel(m, out, |w, i, y: &mut [f32]| {
                    for (k, y) in y.iter_mut().enumerate() {
                        *y = dot(w, &a[(i + k) * cols..(i + k + 1) * cols]);
                    }
                });
            }
        }
    }

    /// The interleaved copy that products at `level` read: for a matrix of a type with
    /// one (Q4_K, Q6_K, the 32-value types) whose decode steps take the AVX2 level on this
    /// CPU (by [`kernel_choice`] on AVX-512), built on first use with the mapped file's
    /// pages released as it goes; `None` for the other types and levels, and once [`Self::keep_stored_layout`] ran.
    /// A copy that exists is read at AVX2 whatever the choice: the timing of
    /// [`kernel_choice`] builds one first ([`Self::build_interleaved_copy`]), so that its
    /// product at AVX2 never asks for the choice it is making.
    #[cfg(target_arch = "x86_64")]
    fn interleaved_for(&self, level: Isa) -> Option<Arc<super::interleaved::Interleaved>> {
        use std::sync::atomic::Ordering;
        if level != Isa::Avx2
            || !super::interleaved::serves(self.ty)
            || self.keep_stored.load(Ordering::Relaxed)
        {
            return None;
        }
        if let Some(copy) = self.interleaved.read().ok()?.as_ref() {
            return Some(copy.clone());
        }
        if kernel_choice::choose(self.ty, self.cols, isa::active()) != Isa::Avx2 {
            return None;
        }
        self.build_interleaved_copy()
    }

    /// Builds the interleaved copy of a matrix (once; `None` for the types without one,
    /// without AVX2, or once [`Self::keep_stored_layout`] ran), whatever level its decode
    /// steps take.
    #[cfg(target_arch = "x86_64")]
    pub(super) fn build_interleaved_copy(&self) -> Option<Arc<super::interleaved::Interleaved>> {
        use std::sync::atomic::Ordering;
        if isa::detected() < Isa::Avx2
            || !super::interleaved::serves(self.ty)
            || self.keep_stored.load(Ordering::Relaxed)
        {
            return None;
        }
        let mut slot = self.interleaved.write().ok()?;
        if let Some(copy) = slot.as_ref() {
            return Some(copy.clone());
        }
        // SAFETY: the CPU has AVX2 (checked above); the matrix holds `rows` rows of whole
        // blocks of its type.
        let copy = Arc::new(unsafe {
            super::interleaved::Interleaved::repack(self, |range| self.bytes.release_range(range))
        });
        *slot = Some(copy.clone());
        Some(copy)
    }

    /// Builds what this matrix's products keep (the interleaved copy of a Q4_K, Q6_K or
    /// 32-value matrix where decode steps take it), so that a timing of its products does
    /// not count it and a model's first reply does not wait for it.
    pub fn prepare_products(&self) {
        #[cfg(target_arch = "x86_64")]
        drop(self.interleaved_for(Isa::Avx2));
    }

    /// From now on products read the stored rows (dropping an interleaved copy): for a
    /// matrix that training dequantizes, whose stored rows stay in memory anyway, so a
    /// copy would hold the weights twice.
    pub fn keep_stored_layout(&self) {
        self.keep_stored
            .store(true, std::sync::atomic::Ordering::Relaxed);
        #[cfg(target_arch = "x86_64")]
        if let Ok(mut slot) = self.interleaved.write() {
            *slot = None;
        }
    }

    /// Releases the mapped file's pages of a matrix whose products read its interleaved
    /// copy (after something read the stored rows again, as the timing of the prompt
    /// paths does); nothing otherwise.
    pub fn release_stored_pages_if_copied(&self) {
        #[cfg(target_arch = "x86_64")]
        if self.interleaved.read().is_ok_and(|c| c.is_some()) {
            self.bytes.release_pages();
        }
    }

    /// Runs `dot(weight row, first input row, outputs)` over every weight row and groups
    /// of up to four input rows (`outputs` holds one value per input row of the group),
    /// weight rows split over the threads in chunks.
    fn rows_parallel(
        &self,
        m: usize,
        out: SharedOut,
        dot: impl Fn(&[u8], usize, &mut [f32]) + Sync,
    ) {
        let threads = rayon::current_num_threads().max(1);
        let chunk = (self.rows / (threads * 4)).clamp(4, 256);
        let tasks = self.rows.div_ceil(chunk);
        let bytes = self.bytes.as_slice();
        let rb = self.row_bytes();
        const GROUP: usize = 4;
        let work = |t: usize| {
            let first = t * chunk;
            let last = (first + chunk).min(self.rows);
            let mut group = [0f32; GROUP];
            for i0 in (0..m).step_by(GROUP) {
                let n = GROUP.min(m - i0);
                for r in first..last {
                    let w = self.row(r);
                    prefetch(bytes, self.stored_index(r) * rb + PREFETCH_AHEAD_BYTES, rb);
                    dot(w, i0, &mut group[..n]);
                    for (k, &v) in group[..n].iter().enumerate() {
                        // SAFETY: y holds m · rows values (checked by the caller); task t
                        // writes only columns first..last, which no other task writes.
                        unsafe { *out.ptr().add((i0 + k) * self.rows + r) = v };
                    }
                }
            }
        };
        if tasks == 1 || m * self.rows * self.cols < 1 << 16 {
            (0..tasks).for_each(work);
        } else {
            (0..tasks).into_par_iter().for_each(work);
        }
    }
}

/// Input rows from which a K-quant product on AVX2 goes through the integer tiles of
/// `kquant_tiles` (which unpack every weight row once per product) instead of the
/// one-row kernels.
const TILE_MIN_ROWS: usize = 8;

/// How far ahead of what a decode kernel multiplies it asks the weights into cache (the
/// next rows here, the next lines of an interleaved copy in `interleaved`). The integer
/// kernels do enough work per byte that the out-of-order core stops issuing loads long
/// before memory answers, and the hardware prefetcher alone kept a decode step at half the
/// memory bandwidth (`examples/bench_quant_matvec`, BENCHMARKS.md).
pub(super) const PREFETCH_AHEAD_BYTES: usize = 2048;

/// Asks the cache lines of `bytes[start..start + len]` (as far as they exist) into cache.
#[inline]
fn prefetch(bytes: &[u8], start: usize, len: usize) {
    let end = (start + len).min(bytes.len());
    if start < end {
        prefetch_lines(bytes.as_ptr().wrapping_add(start), end - start);
    }
}

/// Asks every cache line that `from .. from + len` touches into cache. Any address will
/// do: a prefetch reads nothing architecturally and faults on nothing, so a kernel may
/// ask past the end of what it reads.
#[inline]
pub(super) fn prefetch_lines(from: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let end = (from as usize).wrapping_add(len);
        let mut line = from.wrapping_sub(from as usize % 64);
        while (line as usize) < end {
            // SAFETY: SSE is part of x86_64; a prefetch dereferences nothing.
            unsafe {
                std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line.cast())
            };
            line = line.wrapping_add(64);
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (from, len);
}

/// The kernel of a 32-value type (or a K-quant's VNNI kernel on Q8 activations) at one
/// level: a SIMD function the CPU has, or the scalar reference. A plain function pointer,
/// not a boxed closure: a decode step calls it once per weight row, and the LM head of a
/// large vocabulary has hundreds of thousands of short rows.
#[derive(Clone, Copy)]
pub(super) enum Q8Kernel {
    /// Only built for a kernel whose CPU features were checked ([`q8_kernel`]).
    Simd(Q8Dot),
    Scalar(StoredType),
}

#[cfg(not(target_arch = "x86_64"))]
type Q8Dot = fn(&[u8], Q8Row<'_>) -> f32;
#[cfg(target_arch = "x86_64")]
use super::dot_x86::Q8Dot;

impl Q8Kernel {
    /// The dot product of weight row `w` with activation row `a` (whole blocks, as many
    /// of them, as `QuantMatrix::matmul_on` builds them).
    #[inline]
    pub(super) fn dot(self, w: &[u8], a: Q8Row<'_>) -> f32 {
        match self {
            // SAFETY: `Simd` holds only kernels whose CPU features `q8_kernel` checked;
            // the rows are whole blocks of the same count (the callers' lengths).
            #[allow(unused_unsafe)]
            Q8Kernel::Simd(k) => unsafe { k(w, a) },
            Q8Kernel::Scalar(ty) => dot_scalar::dot_q8(ty, w, a),
        }
    }
}

/// The 32-value block kernel of `ty` at `level` (capped at what the CPU has).
pub(super) fn q8_kernel(ty: StoredType, level: Isa) -> Q8Kernel {
    #[cfg(target_arch = "x86_64")]
    if let (Some(k), Isa::Avx512Vnni) = (
        super::dot_x86::kquant_kernel(ty),
        level.min(isa::detected()),
    ) {
        return Q8Kernel::Simd(k);
    }
    #[cfg(target_arch = "x86_64")]
    if let Some((avx2, vnni)) = super::dot_x86::q8_kernels(ty) {
        match level.min(isa::detected()) {
            Isa::Avx512Vnni => return Q8Kernel::Simd(vnni),
            Isa::Avx2 => return Q8Kernel::Simd(avx2),
            Isa::Scalar => {}
        }
    }
    let _ = level;
    Q8Kernel::Scalar(ty)
}

/// A safe kernel of one weight row against four activation rows.
type Q8Kernel4 = Box<dyn Fn(&[u8], [Q8Row<'_>; 4]) -> [f32; 4] + Sync>;

/// The four-row kernel of `ty` at `level`, where there is one (AVX-512 VNNI).
fn q8_kernel4(ty: StoredType, level: Isa) -> Option<Q8Kernel4> {
    #[cfg(target_arch = "x86_64")]
    if level.min(isa::detected()) == Isa::Avx512Vnni {
        let k = super::dot_x86::q8_kernel4(ty)?;
        // SAFETY: as in `q8_kernel`: the CPU has AVX-512 VNNI, and every row holds the
        // same whole number of blocks.
        return Some(Box::new(move |w, a| unsafe { k(w, a) }));
    }
    let _ = (ty, level);
    None
}

/// A K-quant kernel of one weight row against four activation rows.
type Q8KKernel4 = fn(&[u8], [&[BlockQ8K]; 4]) -> [f32; 4];

/// The four-row AVX2 kernel of `ty` (Q4_K, Q6_K), where the CPU has AVX2.
fn q8k_kernel4(ty: StoredType, level: Isa) -> Option<Q8KKernel4> {
    #[cfg(target_arch = "x86_64")]
    if level.min(isa::detected()) >= Isa::Avx2 {
        use super::dot_kquant_avx2 as k;
        // SAFETY (both): the CPU has AVX2, FMA and F16C (the level is capped at the
        // detected one); a weight row holds as many whole super-blocks as each activation
        // row, as `QuantMatrix::matmul_on` builds them.
        return match ty {
            StoredType::Q4K => Some(|w, a| unsafe { k::q4k_rows::<4>(w, a) }),
            StoredType::Q6K => Some(|w, a| unsafe { k::q6k_rows::<4>(w, a) }),
            _ => None,
        };
    }
    let _ = (ty, level);
    None
}

/// The K-quant kernel of `ty`: ours for Q4_K and Q6_K on AVX2 (`dot_kquant_avx2`, 10–35 %
/// more bytes a second than candle's on AMD Zen 3: `examples/bench_quant_matvec`), else
/// candle's (AVX2 where the CPU has it, else scalar).
fn q8k_kernel(ty: StoredType, level: Isa) -> fn(&[u8], &[BlockQ8K]) -> f32 {
    fn with<B: GgmlType<VecDotType = BlockQ8K>>(w: &[u8], a: &[BlockQ8K]) -> f32 {
        B::vec_dot(a.len() * BlockQ8K::BLCK_SIZE, blocks::<B>(w), a)
    }
    fn with_unopt<B: GgmlType<VecDotType = BlockQ8K>>(w: &[u8], a: &[BlockQ8K]) -> f32 {
        B::vec_dot_unopt(a.len() * BlockQ8K::BLCK_SIZE, blocks::<B>(w), a)
    }
    let scalar = level == Isa::Scalar;
    #[cfg(target_arch = "x86_64")]
    if !scalar {
        use super::dot_kquant_avx2 as k;
        // SAFETY (both): a level above scalar is AVX2 or better, which the CPU has (the
        // level is capped at the detected one); rows are whole super-blocks, as many as
        // the activations'.
        match ty {
            StoredType::Q4K => return |w, a| unsafe { k::q4k_rows::<1>(w, [a])[0] },
            StoredType::Q6K => return |w, a| unsafe { k::q6k_rows::<1>(w, [a])[0] },
            _ => {}
        }
    }
    match (ty, scalar) {
        (StoredType::Q2K, false) => with::<BlockQ2K>,
        (StoredType::Q3K, false) => with::<BlockQ3K>,
        (StoredType::Q4K, false) => with::<BlockQ4K>,
        (StoredType::Q5K, false) => with::<BlockQ5K>,
        (StoredType::Q2K, true) => with_unopt::<BlockQ2K>,
        (StoredType::Q3K, true) => with_unopt::<BlockQ3K>,
        (StoredType::Q4K, true) => with_unopt::<BlockQ4K>,
        (StoredType::Q5K, true) => with_unopt::<BlockQ5K>,
        (_, false) => with::<BlockQ6K>,
        (_, true) => with_unopt::<BlockQ6K>,
    }
}

/// The 16-bit float kernel of `ty`.
/// A safe kernel of the 16-bit float types: `(weight row, f32 activations) -> dot`.
type F32Kernel = Box<dyn Fn(&[u8], &[f32]) -> f32 + Sync>;

fn f32_kernel(ty: StoredType, level: Isa) -> F32Kernel {
    #[cfg(target_arch = "x86_64")]
    if level.min(isa::detected()) >= Isa::Avx2 {
        use super::dot_x86 as x;
        // SAFETY: the CPU has AVX2, FMA and F16C (checked just above); a row holds
        // `x.len()` 16-bit values.
        return match ty {
            StoredType::BF16 => Box::new(|w, a| unsafe { x::bf16_avx2(w, a) }),
            _ => Box::new(|w, a| unsafe { x::f16_avx2(w, a) }),
        };
    }
    Box::new(move |w, a| dot_scalar::dot_f32(ty, w, a))
}
