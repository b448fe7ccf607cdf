//! Causal attention within segments, for training and packed evaluation: each row of a
//! micro-batch holds one or more samples (segments) and a token attends only to the tokens
//! before it in its own segment, or, on a sliding-window layer, only to the last `window`
//! of them (itself included): the keys outside the window get probability zero, forward
//! and backward.
//!
//! A dense masked attention computes the full `t × t` scores of every row and throws away
//! what the mask hides: above the diagonal, and every pair of different samples. This op
//! computes, per segment, only query tiles against the keys up to the tile's end, so its
//! work grows with the sum of the squared segment lengths instead of the squared row
//! length (for rows of 512 tokens packed with samples of about 200, a tenth). Where a
//! layer's probabilities are small (short segments: up to [`KEEP_MAX_FLOATS`]), the
//! forward pass keeps them, causal tiles only, for the backward; otherwise it keeps only q,
//! k and v and the backward recomputes the probabilities one tile at a time, so no
//! `[t, t]` tensor ever exists.
//!
//! It reads q, k and v in the layout the projections write (`[b, t, heads · d]`, each
//! token's heads side by side) and writes its output in the same layout, so no transposes
//! to and from a head-major layout exist, forward or backward. Each job gathers the query
//! heads that share one KV head, so one product covers `reps · 64` query rows. candle has no
//! such op, hence this one; the dense composition stays the oracle in the tests.

use std::sync::{Arc, OnceLock};

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::par_fill::filled;
use super::slice_gemm::{arg_slice, gemm_into, with_slice, Threads::One};
use super::vec_math;

/// Query tokens per tile: the causal saving grows as tiles shrink, the per-call overhead of
/// gemm as well; 64 keeps both small for rows of up to a few thousand tokens.
const TILE: usize = 64;

/// Probabilities (floats, over every job's causal tiles) a differentiated call keeps from
/// its forward pass for the backward, instead of recomputing them: 16 MB per layer. A
/// batch of 4 × 256 tokens of SmolLM2 needs 1.5 M per layer; rows of a few thousand tokens
/// need more and recompute. The recomputation is a seventh of attention's products and
/// half its softmax work.
pub const KEEP_MAX_FLOATS: usize = 4 << 20;

/// Multiply-adds of `q kᵀ` (every segment's square, every query head) below which the
/// forward pass stays on the calling thread.
const PARALLEL_MIN_WORK: usize = 1 << 22;

/// Per batch row, the segments as `(start, len)`, covering the row in order.
pub type Spans = Arc<Vec<Vec<(usize, usize)>>>;

/// Segments of each row from per-token sample ids `[b, t]`: runs of equal ids.
pub fn spans_from_segments(segments: &Tensor) -> Result<Spans> {
    let rows = segments
        .to_dtype(candle_core::DType::U32)?
        .to_vec2::<u32>()?;
    Ok(Arc::new(
        rows.iter()
            .map(|row| {
                let mut spans: Vec<(usize, usize)> = Vec::new();
                for (i, id) in row.iter().enumerate() {
                    match spans.last_mut() {
                        Some((start, len)) if row[*start] == *id => *len += 1,
                        _ => spans.push((i, 1)),
                    }
                }
                spans
            })
            .collect(),
    ))
}

/// One causal segment spanning each of `b` rows of `t` tokens.
pub fn whole_rows(b: usize, t: usize) -> Spans {
    Arc::new(vec![vec![(0, t)]; b])
}

struct SegmentAttention {
    spans: Spans,
    heads: usize,
    kv_heads: usize,
    scale: f32,
    /// Keys a query sees on a sliding-window layer, itself included; `None`: all before it.
    window: Option<usize>,
    /// Whether the forward pass keeps the probabilities for the backward.
    keep: bool,
    /// Per job, the probabilities of its causal tiles one after another.
    kept: OnceLock<Vec<Vec<f32>>>,
    /// Which job holds each token, for the forward and the backward pass.
    index: JobIndex,
}

/// The shapes of one call: `q [b, t, heads · d]`, `k, v [b, t, kv_heads · d]`.
#[derive(Clone, Copy)]
struct Dims {
    t: usize,
    d: usize,
    /// Query heads per KV head.
    reps: usize,
    /// Floats per token of q (and of the output) and of k and v.
    q_width: usize,
    kv_width: usize,
}

impl SegmentAttention {
    fn dims(&self, q: &Shape, k: &Shape, v: &Shape) -> Result<Dims> {
        let (b, t, q_width) = q.dims3()?;
        let (kb, kt, kv_width) = k.dims3()?;
        let fits = self.kv_heads > 0
            && self.heads >= self.kv_heads
            && self.heads.is_multiple_of(self.kv_heads)
            && q_width % self.heads == 0
            && kv_width * self.heads == q_width * self.kv_heads;
        if (kb, kt) != (b, t) || v.dims() != k.dims() || t == 0 || !fits {
            candle_core::bail!(
                "segment-attention: q {q:?}, k {k:?} and v {v:?} do not fit {} query and {} \
                 KV heads",
                self.heads,
                self.kv_heads
            );
        }
        let covers = |row: &Vec<(usize, usize)>| {
            let mut at = 0;
            row.iter().all(|&(start, len)| {
                let next = start == at && len > 0;
                at += len;
                next
            }) && at == t
        };
        if self.spans.len() != b || !self.spans.iter().all(covers) {
            candle_core::bail!("segment-attention: the segments do not cover rows of {t} tokens");
        }
        Ok(Dims {
            t,
            d: q_width / self.heads,
            reps: self.heads / self.kv_heads,
            q_width,
            kv_width,
        })
    }

    /// One job per (batch row, KV head, segment): its queries are the `reps` query heads
    /// that share the KV head, over the segment's tokens.
    fn jobs(&self) -> Vec<Job> {
        let mut jobs = Vec::new();
        for (row, spans) in self.spans.iter().enumerate() {
            for group in 0..self.kv_heads {
                jobs.extend(spans.iter().map(|&(start, len)| Job {
                    row,
                    group,
                    start,
                    len,
                }));
            }
        }
        jobs
    }
}

/// Which job holds each token of each KV head: the inverse of
/// [`SegmentAttention::jobs`], whose order is row, then KV head, then segment.
struct JobIndex {
    kv_heads: usize,
    /// Per batch row, the index of its first job.
    first_job: Vec<usize>,
    /// Per batch row, the number of segments.
    segments: Vec<usize>,
    /// Per batch row and token, the segment that holds the token.
    segment_of: Vec<Vec<usize>>,
}

impl JobIndex {
    fn new(spans: &Spans, kv_heads: usize) -> Self {
        let mut first_job = Vec::with_capacity(spans.len());
        let mut next = 0;
        for row in spans.iter() {
            first_job.push(next);
            next += kv_heads * row.len();
        }
        let segment_of = spans
            .iter()
            .map(|row| {
                row.iter()
                    .enumerate()
                    .flat_map(|(i, &(_, len))| std::iter::repeat_n(i, len))
                    .collect()
            })
            .collect();
        Self {
            kv_heads,
            first_job,
            segments: spans.iter().map(Vec::len).collect(),
            segment_of,
        }
    }

    /// The job that holds `token` of batch row `row` for KV head `group`.
    fn job(&self, row: usize, token: usize, group: usize) -> usize {
        self.first_job[row] + group * self.segments[row] + self.segment_of[row][token]
    }

    /// Token rows per parallel chunk when assembling a buffer of `row_width` floats per
    /// token: about 64 KB.
    fn chunk_rows(row_width: usize) -> usize {
        (16 << 10) / row_width.max(1) + 1
    }

    /// A `[b, t, kv_heads · width]` buffer from the jobs' blocks (`blocks[j]` is job `j`'s
    /// `[len, width]` block, the columns of its KV head), assembled on the pool token row by
    /// token row.
    fn assemble(&self, jobs: &[Job], blocks: &[&[f32]], t: usize, width: usize) -> Vec<f32> {
        let row_width = self.kv_heads * width;
        let rows = Self::chunk_rows(row_width);
        let n = self.segment_of.len() * t * row_width;
        filled(n, rows * row_width, |chunk, out| {
            for (i, token_row) in out.chunks_mut(row_width).enumerate() {
                let at = chunk * rows + i;
                let (row, token) = (at / t, at % t);
                for (group, dst) in token_row.chunks_mut(width).enumerate() {
                    let j = self.job(row, token, group);
                    dst.copy_from_slice(&blocks[j][(token - jobs[j].start) * width..][..width]);
                }
            }
        })
    }
}

/// A segment `start..start + len` of batch row `row`, seen through KV head `group`.
#[derive(Clone, Copy)]
struct Job {
    row: usize,
    group: usize,
    start: usize,
    len: usize,
}

/// Which floats of each token row a job's block holds: `width` of them from `col`, in rows
/// of `row_width`.
#[derive(Clone, Copy)]
struct Columns {
    row_width: usize,
    col: usize,
    width: usize,
}

impl Job {
    /// The job's query heads (of q, the output or their gradients): `[len, reps · d]`,
    /// that is `len · reps` rows of `d`, token by token, each token's heads side by side.
    fn queries(&self, dm: Dims) -> Columns {
        Columns {
            row_width: dm.q_width,
            col: self.group * dm.reps * dm.d,
            width: dm.reps * dm.d,
        }
    }

    /// The job's KV head (of k, v or their gradients): `[len, d]`.
    fn kv(&self, dm: Dims) -> Columns {
        Columns {
            row_width: dm.kv_width,
            col: self.group * dm.d,
            width: dm.d,
        }
    }

    /// Offset of the job's first token row in a `[b, t, ..]` buffer, plus `c.col`.
    fn first(&self, dm: Dims, c: Columns) -> usize {
        (self.row * dm.t + self.start) * c.row_width + c.col
    }

    /// Copies the job's `[len, c.width]` block out of `src`.
    fn gather(&self, src: &[f32], dm: Dims, c: Columns) -> Vec<f32> {
        let mut out = Vec::with_capacity(self.len * c.width);
        for token in src[self.first(dm, c)..].chunks(c.row_width).take(self.len) {
            out.extend_from_slice(&token[..c.width]);
        }
        out
    }
}

/// Softmax probabilities of one query tile, in place over its raw scores `p` (`rows · reps`
/// rows of `keys`): row `i` belongs to the query at segment position `q = first + i / reps`,
/// which sees keys `0..=q`, or with a window of `w`, keys `q + 1 - w..=q`.
fn softmax_causal(
    p: &mut [f32],
    keys: usize,
    first: usize,
    reps: usize,
    scale: f32,
    window: Option<usize>,
) {
    for (i, row) in p.chunks_mut(keys).enumerate() {
        let q = first + i / reps;
        let lo = window.map_or(0, |w| (q + 1).saturating_sub(w));
        let (seen, dead) = row.split_at_mut(q + 1);
        let (before, live) = seen.split_at_mut(lo);
        vec_math::softmax_in_place(live, scale);
        before.fill(0.0);
        dead.fill(0.0);
    }
}

/// The query tiles of a segment of `len` tokens: `(first, rows)`, `TILE` tokens each.
fn tiles(len: usize) -> impl Iterator<Item = (usize, usize)> {
    (0..len)
        .step_by(TILE)
        .map(move |first| (first, TILE.min(len - first)))
}

/// Floats of the causal tiles of a segment of `len` tokens: `reps · rows × keys` each.
fn tile_floats(len: usize, reps: usize) -> usize {
    tiles(len)
        .map(|(first, rows)| rows * reps * (first + rows))
        .sum()
}

/// Gradients of one job, written back after the parallel loop.
struct JobGrads {
    job: Job,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

impl CustomOp3 for SegmentAttention {
    fn name(&self) -> &'static str {
        "segment-attention"
    }

    fn cpu_fwd(
        &self,
        qs: &CpuStorage,
        ql: &Layout,
        ks: &CpuStorage,
        kl: &Layout,
        vs: &CpuStorage,
        vl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let dm = self.dims(ql.shape(), kl.shape(), vl.shape())?;
        let (q, k, v) = (
            arg_slice(qs, ql, "segment-attention")?,
            arg_slice(ks, kl, "segment-attention")?,
            arg_slice(vs, vl, "segment-attention")?,
        );
        let (d, reps) = (dm.d, dm.reps);
        // One job's output block and, when kept, its probabilities tile after tile.
        let run = |job: &Job| -> Result<(Vec<f32>, Option<Vec<f32>>)> {
            let (qc, kvc) = (job.queries(dm), job.kv(dm));
            let (qj, kj, vj) = (
                job.gather(q, dm, qc),
                job.gather(k, dm, kvc),
                job.gather(v, dm, kvc),
            );
            let mut out = vec![0f32; qj.len()];
            let mut probs = match self.keep {
                true => vec![0f32; tile_floats(job.len, reps)],
                false => vec![0f32; TILE * reps * job.len],
            };
            let mut at = 0;
            for (first, rows) in tiles(job.len) {
                let (m, keys) = (rows * reps, first + rows);
                let p = &mut probs[at..][..m * keys];
                if self.keep {
                    at += m * keys;
                }
                let qt = &qj[first * reps * d..][..m * d];
                gemm_into(
                    p,
                    false,
                    (m, keys, d),
                    qt,
                    false,
                    &kj[..keys * d],
                    true,
                    1.0,
                    One,
                )?;
                softmax_causal(p, keys, first, reps, self.scale, self.window);
                let ot = &mut out[first * reps * d..][..m * d];
                gemm_into(
                    ot,
                    false,
                    (m, d, keys),
                    p,
                    false,
                    &vj[..keys * d],
                    false,
                    1.0,
                    One,
                )?;
            }
            Ok((out, self.keep.then_some(probs)))
        };
        let jobs = self.jobs();
        let work: usize = jobs.iter().map(|j| reps * j.len * j.len * d).sum();
        // A short prompt's attention is a few hundred microseconds of work: waking the
        // thread pool for it costs more than it saves.
        let outs: Vec<(Vec<f32>, Option<Vec<f32>>)> = if work >= PARALLEL_MIN_WORK {
            jobs.par_iter().map(run).collect::<Result<_>>()?
        } else {
            jobs.iter().map(run).collect::<Result<_>>()?
        };
        let blocks: Vec<&[f32]> = outs.iter().map(|(block, _)| block.as_slice()).collect();
        let out = self.index.assemble(&jobs, &blocks, dm.t, reps * d);
        let kept: Vec<Vec<f32>> = outs.into_iter().filter_map(|(_, probs)| probs).collect();
        if self.keep {
            // A second forward of the same op (not done by the trainer) keeps the first,
            // which is the same for the same inputs.
            let _ = self.kept.set(kept);
        }
        Ok((CpuStorage::F32(out), ql.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        g: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dm = self.dims(q.shape(), k.shape(), v.shape())?;
        let g = g.contiguous()?;
        let grads: Vec<JobGrads> = with_slice(q, |q| {
            with_slice(k, |k| {
                with_slice(v, |v| {
                    with_slice(&g, |go| {
                        let kept = self.kept.get();
                        self.jobs()
                            .into_par_iter()
                            .enumerate()
                            .map(|(i, job)| {
                                let probs = kept.and_then(|k| k.get(i)).map(Vec::as_slice);
                                self.job_backward(job, dm, (q, k, v, go), probs)
                            })
                            .collect::<Result<_>>()
                    })
                })
            })
        })?;
        let jobs: Vec<Job> = grads.iter().map(|g| g.job).collect();
        let gather = |part: fn(&JobGrads) -> &[f32], width: usize| {
            let blocks: Vec<&[f32]> = grads.iter().map(part).collect();
            self.index.assemble(&jobs, &blocks, dm.t, width)
        };
        let dq = gather(|g| &g.dq, dm.reps * dm.d);
        let dk = gather(|g| &g.dk, dm.d);
        let dv = gather(|g| &g.dv, dm.d);
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), dev)?),
            Some(Tensor::from_vec(dk, k.shape(), dev)?),
            Some(Tensor::from_vec(dv, v.shape(), dev)?),
        ))
    }
}

impl SegmentAttention {
    /// One job's dQ, dK and dV from the probabilities the forward pass kept (`kept`, its
    /// tiles one after another), or recomputing them tile by tile.
    fn job_backward(
        &self,
        job: Job,
        dm: Dims,
        (q, k, v, go): (&[f32], &[f32], &[f32], &[f32]),
        kept: Option<&[f32]>,
    ) -> Result<JobGrads> {
        let (d, reps) = (dm.d, dm.reps);
        let (qc, kvc) = (job.queries(dm), job.kv(dm));
        let (qj, gj) = (job.gather(q, dm, qc), job.gather(go, dm, qc));
        let (kj, vj) = (job.gather(k, dm, kvc), job.gather(v, dm, kvc));
        let mut dq = vec![0f32; qj.len()];
        let mut dk = vec![0f32; kj.len()];
        let mut dv = vec![0f32; vj.len()];
        if kept.is_some_and(|p| p.len() != tile_floats(job.len, reps)) {
            candle_core::bail!("segment-attention: kept probabilities do not fit the job");
        }
        let mut scratch = match kept {
            Some(_) => Vec::new(),
            None => vec![0f32; TILE * reps * job.len],
        };
        let mut dp = vec![0f32; TILE * reps * job.len];
        let mut at = 0;
        for (first, rows) in tiles(job.len) {
            let (m, keys) = (rows * reps, first + rows);
            let dp = &mut dp[..m * keys];
            let qt = &qj[first * reps * d..][..m * d];
            let gt = &gj[first * reps * d..][..m * d];
            let (kt, vt) = (&kj[..keys * d], &vj[..keys * d]);
            let p: &[f32] = match kept {
                Some(all) => &all[at..at + m * keys],
                None => {
                    let p = &mut scratch[..m * keys];
                    gemm_into(p, false, (m, keys, d), qt, false, kt, true, 1.0, One)?;
                    softmax_causal(p, keys, first, reps, self.scale, self.window);
                    p
                }
            };
            at += m * keys;
            // dV += Pᵀ dO; dP = dO Vᵀ.
            let dvt = &mut dv[..keys * d];
            gemm_into(dvt, true, (keys, d, m), p, true, gt, false, 1.0, One)?;
            gemm_into(dp, false, (m, keys, d), gt, false, vt, true, 1.0, One)?;
            // dS = P ⊙ (dP − Σ_j dP ⊙ P) · scale, row by row.
            for (pr, dpr) in p.chunks(keys).zip(dp.chunks_mut(keys)) {
                let dot = vec_math::dot(pr, dpr);
                for (ds, &pv) in dpr.iter_mut().zip(pr) {
                    *ds = pv * (*ds - dot) * self.scale;
                }
            }
            // dQ = dS K; dK += dSᵀ Q.
            let dqt = &mut dq[first * reps * d..][..m * d];
            gemm_into(dqt, false, (m, d, keys), dp, false, kt, false, 1.0, One)?;
            let dkt = &mut dk[..keys * d];
            gemm_into(dkt, true, (keys, d, m), dp, true, qt, false, 1.0, One)?;
        }
        Ok(JobGrads { job, dq, dk, dv })
    }
}

/// `softmax(q kᵀ · scale) v` with each query seeing the keys at or before it in its own
/// segment (the last `window` of them where given), in the projections' token-major
/// layout: `q [b, t, heads · d]`, `k, v [b, t, kv_heads · d]`, query head `h` reading KV
/// head `h / (heads / kv_heads)`. The output is `[b, t, heads · d]`, ready for the output
/// projection.
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    spans: &Spans,
    (heads, kv_heads): (usize, usize),
    scale: f64,
    window: Option<usize>,
) -> Result<Tensor> {
    // Kept only where a backward pass can follow and the probabilities are small.
    let tracked = q.track_op() || k.track_op() || v.track_op();
    let keep = tracked && kept_floats(spans, (heads, kv_heads)) <= KEEP_MAX_FLOATS;
    attention_op(q, k, v, spans, (heads, kv_heads), scale, window, keep)
}

/// Floats of probabilities a layer keeps over `spans` (every job's causal tiles).
pub fn kept_floats(spans: &Spans, (heads, kv_heads): (usize, usize)) -> usize {
    let reps = heads / kv_heads.max(1);
    let per_kv_head: usize = spans
        .iter()
        .flatten()
        .map(|&(_, len)| tile_floats(len, reps))
        .sum();
    per_kv_head * kv_heads
}

/// [`attention`], keeping the probabilities for the backward pass or not.
#[allow(clippy::too_many_arguments)]
fn attention_op(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    spans: &Spans,
    (heads, kv_heads): (usize, usize),
    scale: f64,
    window: Option<usize>,
    keep: bool,
) -> Result<Tensor> {
    if window == Some(0) {
        candle_core::bail!("segment-attention: a window of 0 keys");
    }
    let op = SegmentAttention {
        spans: spans.clone(),
        heads,
        kv_heads,
        scale: scale as f32,
        window,
        keep,
        kept: OnceLock::new(),
        index: JobIndex::new(spans, kv_heads),
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    use crate::ops::op_test_util::{flat as vec_of, max_abs_diff, uniform};

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        uniform(shape, seed, 2.0)
    }

    /// The dense formula on the token-major layout: heads split out and KV heads repeated
    /// with plain ops, full scores, an additive mask, softmax, all composed from candle ops
    /// so that autograd differentiates it.
    fn dense(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        seg: &[Vec<u32>],
        (heads, kv_heads): (usize, usize),
        scale: f64,
        window: Option<usize>,
    ) -> Tensor {
        let (b, t, qw) = q.dims3().unwrap();
        let d = qw / heads;
        let reps = heads / kv_heads;
        let head_major = |x: &Tensor, n: usize| {
            x.reshape((b, t, n, d))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        // Query head h reads KV head h / reps.
        let index: Vec<u32> = (0..heads).map(|h| (h / reps) as u32).collect();
        let index = Tensor::new(index, &Device::Cpu).unwrap();
        let repeat = |x: &Tensor| head_major(x, kv_heads).index_select(&index, 1).unwrap();
        let (qh, kh, vh) = (head_major(q, heads), repeat(k), repeat(v));
        let mut mask = Vec::new();
        for row in seg {
            for i in 0..t {
                for j in 0..t {
                    let visible = j <= i && row[i] == row[j] && window.is_none_or(|w| i - j < w);
                    mask.push(if visible { 0f32 } else { -1e9 });
                }
            }
        }
        let mask = Tensor::from_vec(mask, (b, 1, t, t), &Device::Cpu).unwrap();
        let s = ((qh.matmul(&kh.t().unwrap()).unwrap() * scale).unwrap())
            .broadcast_add(&mask)
            .unwrap();
        let max = s.max_keepdim(D::Minus1).unwrap();
        let e = s.broadcast_sub(&max).unwrap().exp().unwrap();
        let p = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
        p.matmul(&vh)
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, t, qw))
            .unwrap()
    }

    fn check(seg: Vec<Vec<u32>>, heads: (usize, usize)) {
        check_window(seg, heads, None)
    }

    fn check_window(seg: Vec<Vec<u32>>, heads: (usize, usize), window: Option<usize>) {
        let (b, d) = (seg.len(), 8);
        let t = seg[0].len();
        let q = Var::from_tensor(&randn(&[b, t, heads.0 * d], 1)).unwrap();
        let k = Var::from_tensor(&randn(&[b, t, heads.1 * d], 2)).unwrap();
        let v = Var::from_tensor(&randn(&[b, t, heads.1 * d], 3)).unwrap();
        let probe = randn(&[b, t, heads.0 * d], 4);
        let scale = 1.0 / (d as f64).sqrt();
        let seg_t = Tensor::new(seg.clone(), &Device::Cpu).unwrap();
        let spans = spans_from_segments(&seg_t).unwrap();
        let (qt, kt, vt) = (q.as_tensor(), k.as_tensor(), v.as_tensor());
        let slow = dense(qt, kt, vt, &seg, heads, scale, window);
        let g2 = (&slow * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let close = |a: &[f32], b: &[f32], what: &str| {
            let worst = max_abs_diff(a, b);
            assert!(worst < 1e-4, "{what}: max |Δ| {worst}");
        };
        // Probabilities kept from the forward pass, and recomputed in the backward.
        for keep in [true, false] {
            let fast = attention_op(qt, kt, vt, &spans, heads, scale, window, keep).unwrap();
            close(&vec_of(&fast), &vec_of(&slow), "output");
            let g1 = (&fast * &probe)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            for (x, what) in [(&q, "dq"), (&k, "dk"), (&v, "dv")] {
                close(
                    &vec_of(g1.get(x.as_tensor()).unwrap()),
                    &vec_of(g2.get(x.as_tensor()).unwrap()),
                    &format!("{what} (kept: {keep})"),
                );
            }
        }
    }

    #[test]
    fn kept_probabilities_are_counted_over_causal_tiles() {
        let spans = whole_rows(2, 130);
        // Tiles of 64, 64 and 2 queries against 64, 128 and 130 keys, three query heads per
        // KV head, two KV heads, two rows.
        let per_job = 3 * (64 * 64 + 64 * 128 + 2 * 130);
        assert_eq!(kept_floats(&spans, (6, 2)), 2 * 2 * per_job);
        let long = whole_rows(4, 4096);
        assert!(kept_floats(&long, (9, 3)) > KEEP_MAX_FLOATS);
    }

    #[test]
    fn packed_segments_match_the_dense_masked_attention() {
        // Segments of 3, 70 (two tiles) and 1 token; a row with one segment; two KV heads
        // of three query heads each.
        let mut row0 = vec![0u32; 3];
        row0.extend(vec![1u32; 70]);
        row0.push(2);
        let row1 = vec![0u32; 74];
        check(vec![row0, row1], (6, 2));
    }

    #[test]
    fn one_segment_per_row_is_plain_causal_attention() {
        check(vec![vec![0u32; 130]], (2, 2));
    }

    /// Sliding-window attention (Gemma's local layers): a window shorter than a tile, one
    /// across tiles, and one longer than every segment (plain causal), packed and whole,
    /// forward and backward against the dense mask.
    #[test]
    fn a_sliding_window_matches_the_dense_windowed_mask() {
        let mut row0 = vec![0u32; 5];
        row0.extend(vec![1u32; 140]);
        let row1 = vec![0u32; 145];
        for window in [1, 7, 70, 500] {
            check_window(vec![row0.clone(), row1.clone()], (4, 2), Some(window));
        }
        let q = randn(&[1, 4, 2], 1);
        let err = attention(&q, &q, &q, &whole_rows(1, 4), (1, 1), 1.0, Some(0)).unwrap_err();
        assert!(err.to_string().contains("window of 0"), "{err}");
    }

    #[test]
    fn segments_that_do_not_cover_the_row_are_an_error() {
        let q = randn(&[1, 4, 2], 1);
        let spans: Spans = Arc::new(vec![vec![(0, 3)]]);
        let err = attention(&q, &q, &q, &spans, (1, 1), 1.0, None).unwrap_err();
        assert!(err.to_string().contains("do not cover"), "{err}");
    }

    #[test]
    fn heads_that_do_not_fit_the_widths_are_an_error() {
        let q = randn(&[1, 4, 12], 1);
        let k = randn(&[1, 4, 8], 2);
        let spans = whole_rows(1, 4);
        for heads in [(3, 2), (0, 2), (6, 0)] {
            let err = attention(&q, &k, &k, &spans, heads, 1.0, None).unwrap_err();
            assert!(err.to_string().contains("do not fit"), "{heads:?}: {err}");
        }
    }
}
