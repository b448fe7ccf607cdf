//! New `f32` buffers written chunk by chunk on the thread pool, for the training ops'
//! outputs and gradients.
//!
//! `vec![0f32; n]` zeroes the whole buffer on the calling thread before the parallel
//! kernel overwrites it: for the step's activation-sized outputs that was a serial pass
//! over several megabytes per op, with the other thread idle, and the zeroed lines long
//! evicted from cache when the kernel came to write them. Here each chunk is zeroed by
//! the thread that fills it, just before it does. (rayon's `collect_into_vec` writes into
//! fresh memory too, but only element by element from an iterator, which the row-wise
//! kernels here are not.)

use std::mem::MaybeUninit;

use rayon::prelude::*;

/// A chunk of each of two buffers, not yet initialized.
type ChunkPair<'a> = (&'a mut [MaybeUninit<f32>], &'a mut [MaybeUninit<f32>]);

/// Elements below which the chunks are filled on the calling thread: for a decode step or
/// a short prompt, waking the thread pool costs more than the work (perf: a fifth of a
/// prefill went to thread wake-ups between small ops).
pub const PARALLEL_MIN_ELEMENTS: usize = 1 << 16;

/// Zeroes `chunk` and hands it out as initialized floats.
fn zeroed(chunk: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    for v in chunk.iter_mut() {
        v.write(0.0);
    }
    // SAFETY: every element was initialized just above, and `MaybeUninit<f32>` has the
    // layout of `f32`.
    unsafe { &mut *(chunk as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// `n` floats; `fill(i, chunk)` writes chunk `i` (`chunk` long, the last one shorter,
/// zeroed before the call). Parallel from [`PARALLEL_MIN_ELEMENTS`] on.
pub fn filled(n: usize, chunk: usize, fill: impl Fn(usize, &mut [f32]) + Sync + Send) -> Vec<f32> {
    let mut out: Vec<f32> = Vec::with_capacity(n);
    let spare = &mut out.spare_capacity_mut()[..n];
    let each = |(i, c): (usize, &mut [MaybeUninit<f32>])| fill(i, zeroed(c));
    if n < PARALLEL_MIN_ELEMENTS {
        spare.chunks_mut(chunk.max(1)).enumerate().for_each(each);
    } else {
        spare
            .par_chunks_mut(chunk.max(1))
            .enumerate()
            .for_each(each);
    }
    // SAFETY: the chunks cover the first `n` elements, and `zeroed` initialized each of
    // them. (Had `fill` panicked, the length would still be 0.)
    unsafe { out.set_len(n) };
    out
}

/// Two buffers of `n` floats filled side by side: `fill(i, a, b)` writes chunk `i` of
/// each, as in [`filled`].
pub fn filled_pair(
    n: usize,
    chunk: usize,
    fill: impl Fn(usize, &mut [f32], &mut [f32]) + Sync + Send,
) -> (Vec<f32>, Vec<f32>) {
    let (mut a, mut b): (Vec<f32>, Vec<f32>) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let chunk = chunk.max(1);
    let (sa, sb) = (
        &mut a.spare_capacity_mut()[..n],
        &mut b.spare_capacity_mut()[..n],
    );
    let each = |(i, (ca, cb)): (usize, ChunkPair<'_>)| fill(i, zeroed(ca), zeroed(cb));
    if n < PARALLEL_MIN_ELEMENTS {
        sa.chunks_mut(chunk)
            .zip(sb.chunks_mut(chunk))
            .enumerate()
            .for_each(each);
    } else {
        sa.par_chunks_mut(chunk)
            .zip(sb.par_chunks_mut(chunk))
            .enumerate()
            .for_each(each);
    }
    // SAFETY: as in `filled`, for both buffers.
    unsafe {
        a.set_len(n);
        b.set_len(n);
    }
    (a, b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_chunk_is_filled_once_in_order_serial_and_parallel() {
        for n in [0, 1, 999, PARALLEL_MIN_ELEMENTS + 7] {
            let v = filled(n, 100, |i, c| {
                assert!(c.iter().all(|&x| x == 0.0), "chunk {i} was not zeroed");
                for (j, x) in c.iter_mut().enumerate() {
                    *x = (i * 100 + j) as f32;
                }
            });
            assert_eq!(v.len(), n);
            assert!(v.iter().enumerate().all(|(k, &x)| x == k as f32), "n = {n}");
        }
    }

    #[test]
    fn pairs_are_filled_side_by_side() {
        let n = PARALLEL_MIN_ELEMENTS + 3;
        let (a, b) = filled_pair(n, 64, |i, a, b| {
            assert_eq!(a.len(), b.len());
            a.iter_mut().for_each(|x| *x = i as f32);
            b.iter_mut().for_each(|x| *x = -(i as f32));
        });
        assert_eq!((a.len(), b.len()), (n, n));
        assert!((0..n).all(|k| a[k] == (k / 64) as f32 && b[k] == -a[k]));
    }

    #[test]
    fn a_chunk_left_untouched_reads_as_zeros() {
        let v = filled(10, 4, |i, c| {
            if i == 1 {
                c.fill(1.0);
            }
        });
        assert_eq!(v, [0., 0., 0., 0., 1., 1., 1., 1., 0., 0.]);
    }
}
