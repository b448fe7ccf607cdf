//! RMSNorm, rotary embedding and the SwiGLU activation with hand-written backward passes,
//! for training; generation uses the same forward passes, which stay on the calling
//! thread for small inputs
//! (attention: `segment_attention.rs`; linear layers: `train_linear.rs`).
//! candle's fused versions of these ops have no backward, and its composed ("slow")
//! versions keep several full-size intermediates per op alive for autograd and walk the
//! data many times. These keep only their input (or output) and compute the gradient in
//! one formula each. The composed versions remain the oracle in the tests below.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use super::slice_gemm::{arg_slice, with_slice};
use super::vec_math;

/// Elements below which a row-wise op runs on the calling thread: for a decode step or a
/// short prompt, waking the thread pool costs more than the work (perf: a fifth of a
/// prefill went to thread wake-ups between small ops).
const PARALLEL_MIN_ELEMENTS: usize = 1 << 16;

/// Calls `f(row index, output row, input row)` for each row of `len` values, in parallel
/// only when there is enough work.
fn for_each_row(
    out: &mut [f32],
    x: &[f32],
    len: usize,
    f: impl Fn(usize, &mut [f32], &[f32]) + Sync + Send,
) {
    if x.len() < PARALLEL_MIN_ELEMENTS {
        for (i, (o, row)) in out.chunks_mut(len).zip(x.chunks(len)).enumerate() {
            f(i, o, row);
        }
    } else {
        out.par_chunks_mut(len)
            .zip(x.par_chunks(len))
            .enumerate()
            .for_each(|(i, (o, row))| f(i, o, row));
    }
}

/// `x / sqrt(mean(x²) + eps) * w` over the last dimension; `w` is frozen.
struct RmsNormOp {
    weight: Vec<f32>,
    eps: f32,
}

impl CustomOp1 for RmsNormOp {
    fn name(&self) -> &'static str {
        "rms-norm-train"
    }
    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = arg_slice(storage, layout, "rms-norm")?;
        let h = self.weight.len();
        let mut out = vec![0f32; x.len()];
        for_each_row(&mut out, x, h, |_, o, row| {
            let ms = row.iter().map(|v| v * v).sum::<f32>() / h as f32;
            let r = 1.0 / (ms + self.eps).sqrt();
            for ((o, v), w) in o.iter_mut().zip(row).zip(&self.weight) {
                *o = v * r * w;
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        // dx = r·(g⊙w) − x·r³·mean((g⊙w)⊙x), r = (mean(x²) + eps)^(-1/2), row by row.
        let h = self.weight.len();
        let mut dx = vec![0f32; x.elem_count()];
        with_slice(x, |xs| {
            with_slice(&g.contiguous()?, |gs| {
                if gs.len() != xs.len() {
                    candle_core::bail!(
                        "rms-norm: gradient {:?} for an input {:?}",
                        g.shape(),
                        x.shape()
                    );
                }
                dx.par_chunks_mut(h)
                    .zip(xs.par_chunks(h).zip(gs.par_chunks(h)))
                    .for_each(|(d, (x, g))| {
                        let ms = x.iter().map(|v| v * v).sum::<f32>() / h as f32;
                        let r = 1.0 / (ms + self.eps).sqrt();
                        let dot = x
                            .iter()
                            .zip(g)
                            .zip(&self.weight)
                            .map(|((x, g), w)| x * g * w)
                            .sum::<f32>()
                            / h as f32;
                        let k = r * r * r * dot;
                        for (((d, x), g), w) in d.iter_mut().zip(x).zip(g).zip(&self.weight) {
                            *d = r * g * w - x * k;
                        }
                    });
                Ok(())
            })
        })?;
        Ok(Some(Tensor::from_vec(dx, x.shape(), x.device())?))
    }
}

pub fn rms_norm(x: &Tensor, weight: &Tensor, eps: f32) -> Result<Tensor> {
    let op = RmsNormOp {
        weight: weight.to_vec1()?,
        eps,
    };
    x.contiguous()?.apply_op1(op)
}

/// Where each row of `d` values sits: which token, hence which position.
#[derive(Clone, Copy)]
pub enum HeadLayout {
    /// `[b, heads, t, d]`, as the KV cache and the dense attention keep it.
    HeadMajor,
    /// `[b, t, heads · d]`, as the projections write it.
    TokenMajor { heads: usize },
}

/// Rotary embedding (`rotate_half` layout) of the rows of `x` in `layout`, with cos/sin
/// `[t, d/2]` or `[b, t, d/2]`. Its gradient is the same rotation by the opposite angle.
struct RopeOp {
    cos: Tensor,
    sin: Tensor,
    layout: HeadLayout,
}

impl RopeOp {
    /// `(t, d, token of a row)`: the row index maps to `b · t + position index`.
    fn geometry(&self, shape: &Shape) -> Result<(usize, usize, impl Fn(usize) -> usize)> {
        let (t, d, heads, head_major) = match self.layout {
            HeadLayout::HeadMajor => {
                let (_, h, t, d) = shape.dims4()?;
                (t, d, h, true)
            }
            HeadLayout::TokenMajor { heads } => {
                let (_, t, width) = shape.dims3()?;
                if heads == 0 || width % heads != 0 {
                    candle_core::bail!("rope: rows of {width} do not split into {heads} heads");
                }
                (t, width / heads, heads, false)
            }
        };
        let token = move |row: usize| {
            if head_major {
                row / (t * heads) * t + row % t
            } else {
                row / heads
            }
        };
        Ok((t, d, token))
    }
}

impl CustomOp1 for RopeOp {
    fn name(&self) -> &'static str {
        "rope-train"
    }
    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = arg_slice(storage, layout, "rope")?;
        let (t, d, token_of) = self.geometry(layout.shape())?;
        let half = d / 2;
        let cos: Vec<f32> = self.cos.flatten_all()?.to_vec1()?;
        let sin: Vec<f32> = self.sin.flatten_all()?.to_vec1()?;
        let per_batch = self.cos.rank() == 3;
        let mut out = vec![0f32; x.len()];
        for_each_row(&mut out, x, d, |row, o, v| {
            let token = token_of(row);
            let base = if per_batch { token } else { token % t } * half;
            for i in 0..half {
                let (c, s) = (cos[base + i], sin[base + i]);
                o[i] = v[i] * c - v[i + half] * s;
                o[i + half] = v[i + half] * c + v[i] * s;
            }
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
    fn bwd(&self, _x: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let inverse = RopeOp {
            cos: self.cos.clone(),
            sin: self.sin.neg()?,
            layout: self.layout,
        };
        Ok(Some(g.contiguous()?.apply_op1_no_bwd(&inverse)?))
    }
}

pub fn rope(x: &Tensor, cos: &Tensor, sin: &Tensor, layout: HeadLayout) -> Result<Tensor> {
    x.contiguous()?.apply_op1(RopeOp {
        cos: cos.contiguous()?,
        sin: sin.contiguous()?,
        layout,
    })
}

/// `silu(gate) ⊙ up`, the gated MLP activation, keeping only its two inputs for the
/// backward (composed, autograd keeps silu's output and walks the data five times more).
struct SwiGluOp;

/// Elements per parallel job of the element-wise passes: large enough that a job is
/// tens of microseconds, small enough that both threads get several.
const CHUNK: usize = 1 << 14;

impl CustomOp2 for SwiGluOp {
    fn name(&self) -> &'static str {
        "swiglu-train"
    }
    fn cpu_fwd(
        &self,
        gs: &CpuStorage,
        gl: &Layout,
        us: &CpuStorage,
        ul: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let gate = arg_slice(gs, gl, "swiglu")?;
        let up = arg_slice(us, ul, "swiglu")?;
        if gl.shape() != ul.shape() {
            candle_core::bail!(
                "swiglu: gate {:?} and up {:?} differ",
                gl.shape(),
                ul.shape()
            );
        }
        let mut out = vec![0f32; gate.len()];
        if gate.len() < PARALLEL_MIN_ELEMENTS {
            vec_math::silu_mul(gate, up, &mut out);
        } else {
            out.par_chunks_mut(CHUNK)
                .zip(gate.par_chunks(CHUNK).zip(up.par_chunks(CHUNK)))
                .for_each(|(o, (g, u))| vec_math::silu_mul(g, u, o));
        }
        Ok((CpuStorage::F32(out), gl.shape().clone()))
    }
    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _res: &Tensor,
        d: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let n = gate.elem_count();
        if up.elem_count() != n || d.elem_count() != n {
            candle_core::bail!(
                "swiglu: gradient {:?} for inputs {:?}",
                d.shape(),
                gate.shape()
            );
        }
        let (mut d_gate, mut d_up) = (vec![0f32; n], vec![0f32; n]);
        with_slice(gate, |g| {
            with_slice(up, |u| {
                with_slice(&d.contiguous()?, |d| {
                    let grads = d_gate.par_chunks_mut(CHUNK).zip(d_up.par_chunks_mut(CHUNK));
                    let inputs = g.par_chunks(CHUNK).zip(u.par_chunks(CHUNK));
                    grads.zip(inputs.zip(d.par_chunks(CHUNK))).for_each(
                        |((dg, du), ((g, u), d))| vec_math::silu_mul_backward(g, u, d, dg, du),
                    );
                    Ok(())
                })
            })
        })?;
        Ok((
            Some(Tensor::from_vec(d_gate, gate.shape(), gate.device())?),
            Some(Tensor::from_vec(d_up, up.shape(), up.device())?),
        ))
    }
}

/// `silu(gate) ⊙ up` with a hand-written backward.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGluOp)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    use crate::model::op_test_util::flat;

    fn grad_of(
        f: impl Fn(&Tensor) -> Result<Tensor>,
        x: &Var,
        probe: &Tensor,
    ) -> (Vec<f32>, Vec<f32>) {
        let y = f(x.as_tensor()).unwrap();
        let loss = (&y * probe).unwrap().sum_all().unwrap();
        let g = loss.backward().unwrap();
        (
            y.flatten_all().unwrap().to_vec1().unwrap(),
            g.get(x.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap(),
        )
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "{x} vs {y}");
        }
    }

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        crate::model::op_test_util::uniform(shape, seed, 2.0)
    }

    #[test]
    fn rms_norm_matches_autograd_oracle() {
        let x = Var::from_tensor(&randn(&[3, 5, 8], 1)).unwrap();
        let w = (randn(&[8], 2) + 1.0).unwrap();
        let probe = randn(&[3, 5, 8], 3);
        let (y1, g1) = grad_of(|x| rms_norm(x, &w, 1e-5), &x, &probe);
        let (y2, g2) = grad_of(|x| candle_nn::ops::rms_norm_slow(x, &w, 1e-5), &x, &probe);
        close(&y1, &y2, 1e-5);
        close(&g1, &g2, 1e-4);
    }

    #[test]
    fn swiglu_matches_autograd_oracle() {
        let gate = Var::from_tensor(&randn(&[4, 6], 7)).unwrap();
        let up = randn(&[4, 6], 8);
        let probe = randn(&[4, 6], 9);
        let (y1, g1) = grad_of(|g| swiglu(g, &up), &gate, &probe);
        let (y2, g2) = grad_of(|g| candle_nn::ops::silu(g).unwrap() * &up, &gate, &probe);
        close(&y1, &y2, 1e-6);
        close(&g1, &g2, 1e-5);
        let upv = Var::from_tensor(&up).unwrap();
        let g = gate.as_tensor().clone();
        let (_, gu1) = grad_of(|u| swiglu(&g, u), &upv, &probe);
        let (_, gu2) = grad_of(|u| candle_nn::ops::silu(&g).unwrap() * u, &upv, &probe);
        close(&gu1, &gu2, 1e-6);
    }

    #[test]
    fn rope_matches_autograd_oracle() {
        let x = Var::from_tensor(&randn(&[2, 3, 4, 8], 4)).unwrap();
        let probe = randn(&[2, 3, 4, 8], 5);
        for per_batch in [false, true] {
            let (cos, sin) = if per_batch {
                (
                    randn(&[2, 4, 4], 6).cos().unwrap(),
                    randn(&[2, 4, 4], 6).sin().unwrap(),
                )
            } else {
                (
                    randn(&[4, 4], 6).cos().unwrap(),
                    randn(&[4, 4], 6).sin().unwrap(),
                )
            };
            let (y1, g1) = grad_of(|x| rope(x, &cos, &sin, HeadLayout::HeadMajor), &x, &probe);
            let (y2, g2) = grad_of(
                |x| crate::model::rope::apply_composed(x, &cos, &sin),
                &x,
                &probe,
            );
            close(&y1, &y2, 1e-5);
            close(&g1, &g2, 1e-4);
            // The same rows in the projections' layout, [b, t, heads · d].
            let token_major = |x: &Tensor| x.transpose(1, 2)?.contiguous()?.reshape((2, 4, 24));
            let xt = Var::from_tensor(&token_major(x.as_tensor()).unwrap()).unwrap();
            let layout = HeadLayout::TokenMajor { heads: 3 };
            let (y3, g3) = grad_of(
                |x| rope(x, &cos, &sin, layout),
                &xt,
                &token_major(&probe).unwrap(),
            );
            let y2t = Tensor::from_vec(y2.clone(), (2, 3, 4, 8), &Device::Cpu).unwrap();
            let g2t = Tensor::from_vec(g2.clone(), (2, 3, 4, 8), &Device::Cpu).unwrap();
            close(&y3, &flat(&token_major(&y2t).unwrap()), 1e-5);
            close(&g3, &flat(&token_major(&g2t).unwrap()), 1e-4);
        }
    }
}
