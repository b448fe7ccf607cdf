//! Causal attention within segments, for training and packed evaluation: each row of a
//! micro-batch holds one or more samples (segments) and a token attends only to the tokens
//! before it in its own segment.
//!
//! A dense masked attention computes the full `t × t` scores of every row and throws away
//! what the mask hides: above the diagonal, and every pair of different samples. This op
//! computes, per segment, only query tiles against the keys up to the tile's end, so its
//! work grows with the sum of the squared segment lengths instead of the squared row
//! length (for rows of 512 tokens packed with samples of about 200, a tenth). It keeps only
//! q, k and v for the backward pass and recomputes the probabilities there, one tile at a
//! time, so no `[t, t]` tensor ever exists. candle has no such op, hence this one; the
//! dense composition stays the oracle in the tests.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::slice_gemm::{arg_slice, gemm_into, Threads::One};
use super::vec_math;

/// Query rows per tile: the causal saving grows as tiles shrink, the per-call overhead of
/// gemm as well; 64 keeps both small for rows of up to a few thousand tokens.
const TILE: usize = 64;

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
    scale: f32,
}

/// The shapes of one call: `q [b, g, reps · t, d]`, `k, v [b, g, t, d]`.
#[derive(Clone, Copy)]
struct Dims {
    g: usize,
    reps: usize,
    t: usize,
    d: usize,
}

impl SegmentAttention {
    fn dims(&self, q: &Shape, k: &Shape, v: &Shape) -> Result<Dims> {
        let (b, g, qt, d) = q.dims4()?;
        let (kb, kg, t, kd) = k.dims4()?;
        if (kb, kg, kd) != (b, g, d) || v.dims() != k.dims() || t == 0 || qt % t != 0 {
            candle_core::bail!(
                "segment-attention: q {q:?}, k {k:?} and v {v:?} do not fit together"
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
            g,
            reps: qt / t,
            t,
            d,
        })
    }
}

/// Softmax probabilities of one query tile, in place over its raw scores `p [rows × keys]`:
/// query `r` of the tile sits at segment position `first + r` and sees keys `0..=first + r`.
fn softmax_causal(p: &mut [f32], keys: usize, first: usize, scale: f32) {
    for (r, row) in p.chunks_mut(keys).enumerate() {
        let (live, dead) = row.split_at_mut(first + r + 1);
        vec_math::softmax_in_place(live, scale);
        dead.fill(0.0);
    }
}

/// The query tiles of one segment `(start, len)` for query head `rep`, whose queries sit at
/// `rep · t + start ..` along q's `[reps · t]` axis.
fn tiles((start, len): (usize, usize), rep: usize, t: usize) -> impl Iterator<Item = Tile> {
    (0..len).step_by(TILE).map(move |first| {
        let rows = TILE.min(len - first);
        Tile {
            start,
            q_row: rep * t + start + first,
            first,
            rows,
            keys: first + rows,
        }
    })
}

/// Cuts a `[rows × d]` buffer into the consecutive row ranges of `spans` (which cover it,
/// as `dims` checks), so each segment's part can go to its own thread.
fn split_by_spans<'a>(
    mut rest: &'a mut [f32],
    spans: &[(usize, usize)],
    d: usize,
) -> Vec<&'a mut [f32]> {
    spans
        .iter()
        .map(|&(_, len)| {
            let (piece, tail) = std::mem::take(&mut rest).split_at_mut(len * d);
            rest = tail;
            piece
        })
        .collect()
}

/// One job of the parallel loops: segment `span` of batch-and-group block `bg`, with its
/// rows of each per-query-head output (`per_rep`) and, in the backward, of dK and dV.
struct SegmentJob<'a> {
    bg: usize,
    span: (usize, usize),
    per_rep: Vec<&'a mut [f32]>,
    dk: Option<&'a mut [f32]>,
    dv: Option<&'a mut [f32]>,
}

/// The jobs for output buffers laid out like q (`per_rep`: `[b·g, reps·t, d]`) and, when
/// given, like k (`dk`, `dv`: `[b·g, t, d]`).
fn segment_jobs<'a>(
    spans: &[Vec<(usize, usize)>],
    dm: Dims,
    q_like: &'a mut [f32],
    kv_like: Option<(&'a mut [f32], &'a mut [f32])>,
) -> Vec<SegmentJob<'a>> {
    let (q_block, kv_block) = (dm.reps * dm.t * dm.d, dm.t * dm.d);
    let mut kv_blocks =
        kv_like.map(|(dk, dv)| dk.chunks_mut(kv_block).zip(dv.chunks_mut(kv_block)));
    let mut jobs = Vec::new();
    for (bg, block) in q_like.chunks_mut(q_block).enumerate() {
        let row = &spans[bg / dm.g];
        // per_segment[s][rep]: segment s's rows of query head rep.
        let mut per_segment: Vec<Vec<&mut [f32]>> = row.iter().map(|_| Vec::new()).collect();
        for rep_block in block.chunks_mut(kv_block) {
            for (s, piece) in split_by_spans(rep_block, row, dm.d).into_iter().enumerate() {
                per_segment[s].push(piece);
            }
        }
        let (mut dk, mut dv) = match kv_blocks.as_mut().and_then(Iterator::next) {
            Some((dk, dv)) => (
                Some(split_by_spans(dk, row, dm.d).into_iter()),
                Some(split_by_spans(dv, row, dm.d).into_iter()),
            ),
            None => (None, None),
        };
        for (&span, per_rep) in row.iter().zip(per_segment) {
            jobs.push(SegmentJob {
                bg,
                span,
                per_rep,
                dk: dk.as_mut().and_then(Iterator::next),
                dv: dv.as_mut().and_then(Iterator::next),
            });
        }
    }
    jobs
}

struct Tile {
    start: usize,
    q_row: usize,
    first: usize,
    rows: usize,
    keys: usize,
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
        let (q_block, kv_block) = (dm.reps * dm.t * dm.d, dm.t * dm.d);
        let mut out = vec![0f32; q.len()];
        let job = |job: SegmentJob<'_>| -> Result<()> {
            let q = &q[job.bg * q_block..][..q_block];
            let k = &k[job.bg * kv_block..][..kv_block];
            let v = &v[job.bg * kv_block..][..kv_block];
            let mut p = vec![0f32; TILE * job.span.1];
            for (rep, out) in job.per_rep.into_iter().enumerate() {
                for tile in tiles(job.span, rep, dm.t) {
                    let p = &mut p[..tile.rows * tile.keys];
                    let qt = &q[tile.q_row * dm.d..][..tile.rows * dm.d];
                    let kt = &k[tile.start * dm.d..][..tile.keys * dm.d];
                    let vt = &v[tile.start * dm.d..][..tile.keys * dm.d];
                    let dims = (tile.rows, tile.keys, dm.d);
                    gemm_into(p, false, dims, qt, false, kt, true, 1.0, One)?;
                    softmax_causal(p, tile.keys, tile.first, self.scale);
                    let ot = &mut out[tile.first * dm.d..][..tile.rows * dm.d];
                    let dims = (tile.rows, dm.d, tile.keys);
                    gemm_into(ot, false, dims, p, false, vt, false, 1.0, One)?;
                }
            }
            Ok(())
        };
        let jobs = segment_jobs(&self.spans, dm, &mut out, None);
        let work: usize = jobs
            .iter()
            .map(|j| dm.reps * j.span.1 * j.span.1 * dm.d)
            .sum();
        // A short prompt's attention is a few hundred microseconds of work: waking the
        // thread pool for it costs more than it saves.
        if work >= PARALLEL_MIN_WORK {
            jobs.into_par_iter().try_for_each(job)?;
        } else {
            jobs.into_iter().try_for_each(job)?;
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
        let (q_block, kv_block) = (dm.reps * dm.t * dm.d, dm.t * dm.d);
        let (qv, kv, vv, gv) = (
            q.flatten_all()?.to_vec1::<f32>()?,
            k.flatten_all()?.to_vec1::<f32>()?,
            v.flatten_all()?.to_vec1::<f32>()?,
            g.flatten_all()?.to_vec1::<f32>()?,
        );
        let mut dq = vec![0f32; qv.len()];
        let mut dk = vec![0f32; kv.len()];
        let mut dv = vec![0f32; vv.len()];
        segment_jobs(&self.spans, dm, &mut dq, Some((&mut dk, &mut dv)))
            .into_par_iter()
            .try_for_each(|job| -> Result<()> {
                let q = &qv[job.bg * q_block..][..q_block];
                let go = &gv[job.bg * q_block..][..q_block];
                let k = &kv[job.bg * kv_block..][..kv_block];
                let v = &vv[job.bg * kv_block..][..kv_block];
                let (Some(dk), Some(dv)) = (job.dk, job.dv) else {
                    candle_core::bail!("segment-attention: a backward job without dK and dV");
                };
                let (start, len) = job.span;
                let mut p = vec![0f32; TILE * len];
                let mut dp = vec![0f32; TILE * len];
                for (rep, dq) in job.per_rep.into_iter().enumerate() {
                    for tile in tiles(job.span, rep, dm.t) {
                        let n = tile.rows * tile.keys;
                        let (p, dp) = (&mut p[..n], &mut dp[..n]);
                        let qt = &q[tile.q_row * dm.d..][..tile.rows * dm.d];
                        let gt = &go[tile.q_row * dm.d..][..tile.rows * dm.d];
                        let kt = &k[start * dm.d..][..tile.keys * dm.d];
                        let vt = &v[start * dm.d..][..tile.keys * dm.d];
                        let (rows, keys, d) = (tile.rows, tile.keys, dm.d);
                        gemm_into(p, false, (rows, keys, d), qt, false, kt, true, 1.0, One)?;
                        softmax_causal(p, keys, tile.first, self.scale);
                        // dV += Pᵀ dO; dP = dO Vᵀ.
                        let dvt = &mut dv[..keys * d];
                        gemm_into(dvt, true, (keys, d, rows), p, true, gt, false, 1.0, One)?;
                        gemm_into(dp, false, (rows, keys, d), gt, false, vt, true, 1.0, One)?;
                        // dS = P ⊙ (dP − Σ_j dP ⊙ P) · scale, row by row.
                        for (pr, dpr) in p.chunks(keys).zip(dp.chunks_mut(keys)) {
                            let dot = vec_math::dot(pr, dpr);
                            for (ds, &pv) in dpr.iter_mut().zip(pr) {
                                *ds = pv * (*ds - dot) * self.scale;
                            }
                        }
                        // dQ = dS K; dK += dSᵀ Q.
                        let dqt = &mut dq[tile.first * d..][..rows * d];
                        gemm_into(dqt, false, (rows, d, keys), dp, false, kt, false, 1.0, One)?;
                        let dkt = &mut dk[..keys * d];
                        gemm_into(dkt, true, (keys, d, rows), dp, true, qt, false, 1.0, One)?;
                    }
                }
                Ok(())
            })?;
        let dev = q.device();
        Ok((
            Some(Tensor::from_vec(dq, q.shape(), dev)?),
            Some(Tensor::from_vec(dk, k.shape(), dev)?),
            Some(Tensor::from_vec(dv, v.shape(), dev)?),
        ))
    }
}

/// `softmax(q kᵀ · scale) v` with each query seeing the keys at or before it in its own
/// segment. `q [b, g, reps · t, d]` holds `reps` query heads per KV head, one after
/// another along the third axis; `k, v [b, g, t, d]`.
pub fn attention(q: &Tensor, k: &Tensor, v: &Tensor, spans: &Spans, scale: f64) -> Result<Tensor> {
    let op = SegmentAttention {
        spans: spans.clone(),
        scale: scale as f32,
    };
    q.contiguous()?
        .apply_op3(&k.contiguous()?, &v.contiguous()?, op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var, D};

    use crate::model::op_test_util::{flat as vec_of, max_abs_diff, uniform};

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        uniform(shape, seed, 2.0)
    }

    /// The dense formula: full scores, an additive mask, softmax, all composed from candle
    /// ops so that autograd differentiates it.
    fn dense(
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        seg: &[Vec<u32>],
        reps: usize,
        scale: f64,
    ) -> Tensor {
        let t = seg[0].len();
        let mut mask = Vec::new();
        for row in seg {
            for _ in 0..reps {
                for i in 0..t {
                    for j in 0..t {
                        let visible = j <= i && row[i] == row[j];
                        mask.push(if visible { 0f32 } else { -1e9 });
                    }
                }
            }
        }
        let mask = Tensor::from_vec(mask, (seg.len(), 1, reps * t, t), &Device::Cpu).unwrap();
        let s = ((q.matmul(&k.t().unwrap()).unwrap() * scale).unwrap())
            .broadcast_add(&mask)
            .unwrap();
        let max = s.max_keepdim(D::Minus1).unwrap();
        let e = s.broadcast_sub(&max).unwrap().exp().unwrap();
        let p = e.broadcast_div(&e.sum_keepdim(D::Minus1).unwrap()).unwrap();
        p.matmul(v).unwrap()
    }

    fn check(seg: Vec<Vec<u32>>, reps: usize) {
        let (b, g, d) = (seg.len(), 2, 8);
        let t = seg[0].len();
        let q = Var::from_tensor(&randn(&[b, g, reps * t, d], 1)).unwrap();
        let k = Var::from_tensor(&randn(&[b, g, t, d], 2)).unwrap();
        let v = Var::from_tensor(&randn(&[b, g, t, d], 3)).unwrap();
        let probe = randn(&[b, g, reps * t, d], 4);
        let scale = 1.0 / (d as f64).sqrt();
        let seg_t = Tensor::new(seg.clone(), &Device::Cpu).unwrap();
        let spans = spans_from_segments(&seg_t).unwrap();
        let fast = attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), &spans, scale).unwrap();
        let slow = dense(
            q.as_tensor(),
            k.as_tensor(),
            v.as_tensor(),
            &seg,
            reps,
            scale,
        );
        let close = |a: &[f32], b: &[f32], what: &str| {
            let worst = max_abs_diff(a, b);
            assert!(worst < 1e-4, "{what}: max |Δ| {worst}");
        };
        close(&vec_of(&fast), &vec_of(&slow), "output");
        let g1 = (&fast * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (&slow * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (x, what) in [(&q, "dq"), (&k, "dk"), (&v, "dv")] {
            close(
                &vec_of(g1.get(x.as_tensor()).unwrap()),
                &vec_of(g2.get(x.as_tensor()).unwrap()),
                what,
            );
        }
    }

    #[test]
    fn packed_segments_match_the_dense_masked_attention() {
        // Segments of 3, 70 (two tiles) and 1 token; a row with one segment; grouped heads.
        let mut row0 = vec![0u32; 3];
        row0.extend(vec![1u32; 70]);
        row0.push(2);
        let row1 = vec![0u32; 74];
        check(vec![row0, row1], 3);
    }

    #[test]
    fn one_segment_per_row_is_plain_causal_attention() {
        check(vec![vec![0u32; 130]], 1);
    }

    #[test]
    fn segments_that_do_not_cover_the_row_are_an_error() {
        let q = randn(&[1, 1, 4, 2], 1);
        let k = randn(&[1, 1, 4, 2], 2);
        let spans: Spans = Arc::new(vec![vec![(0, 3)]]);
        let err = attention(&q, &k, &k, &spans, 1.0).unwrap_err();
        assert!(err.to_string().contains("do not cover"), "{err}");
    }
}
