//! RMSNorm, rotary embedding and the gated activations (SwiGLU, GeGLU) with hand-written
//! backward passes,
//! for training; generation uses the same forward passes, which stay on the calling
//! thread for small inputs
//! (attention: `segment_attention.rs`; linear layers: `train_linear.rs`).
//! candle's fused versions of these ops have no backward, and its composed ("slow")
//! versions keep several full-size intermediates per op alive for autograd and walk the
//! data many times. These keep only their input (or output) and compute the gradient in
//! one formula each. The composed versions remain the oracle in the tests below.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, Layout, Result, Shape, Tensor};

use super::par_fill::{filled, filled_pair};
use super::slice_gemm::{arg_slice, with_slice};
use super::vec_math;

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
        let out = filled(x.len(), h, |i, o| {
            vec_math::rms_norm_row(&x[i * h..][..o.len()], &self.weight, self.eps, o)
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
    fn bwd(&self, x: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        // Row by row: vec_math::rms_norm_row_backward.
        let h = self.weight.len();
        let dx = with_slice(x, |xs| {
            with_slice(&g.contiguous()?, |gs| {
                if gs.len() != xs.len() {
                    candle_core::bail!(
                        "rms-norm: gradient {:?} for an input {:?}",
                        g.shape(),
                        x.shape()
                    );
                }
                Ok(filled(xs.len(), h, |i, d| {
                    let (x, g) = (&xs[i * h..][..d.len()], &gs[i * h..][..d.len()]);
                    vec_math::rms_norm_row_backward(x, g, &self.weight, self.eps, d)
                }))
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
        let out = filled(x.len(), d, |row, o| {
            let v = &x[row * d..][..o.len()];
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

/// The activation of a gated MLP's gate: `act(gate) ⊙ up`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GateActivation {
    /// SiLU: SwiGLU (Llama, Mistral, Qwen).
    #[default]
    Silu,
    /// The tanh-approximated GELU: GeGLU (Gemma's `gelu_pytorch_tanh`).
    GeluTanh,
}

impl GateActivation {
    /// `out = act(gate) ⊙ up` over plain slices.
    pub fn forward(self, gate: &[f32], up: &[f32], out: &mut [f32]) {
        match self {
            GateActivation::Silu => vec_math::silu_mul(gate, up, out),
            GateActivation::GeluTanh => vec_math::gelu_tanh_mul(gate, up, out),
        }
    }

    /// The gradients of [`Self::forward`] for an output gradient `d`.
    fn backward(self, gate: &[f32], up: &[f32], d: &[f32], d_gate: &mut [f32], d_up: &mut [f32]) {
        match self {
            GateActivation::Silu => vec_math::silu_mul_backward(gate, up, d, d_gate, d_up),
            GateActivation::GeluTanh => vec_math::gelu_tanh_mul_backward(gate, up, d, d_gate, d_up),
        }
    }
}

/// `act(gate) ⊙ up`, the gated MLP activation, keeping only its two inputs for the
/// backward (composed, autograd keeps the activation's output and walks the data five
/// times more).
struct GatedOp(GateActivation);

/// Elements per parallel job of the element-wise passes: large enough that a job is
/// tens of microseconds, small enough that both threads get several.
const CHUNK: usize = 1 << 14;

impl CustomOp2 for GatedOp {
    fn name(&self) -> &'static str {
        match self.0 {
            GateActivation::Silu => "swiglu-train",
            GateActivation::GeluTanh => "geglu-train",
        }
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
        let out = filled(gate.len(), CHUNK, |i, o| {
            let at = i * CHUNK..i * CHUNK + o.len();
            self.0.forward(&gate[at.clone()], &up[at], o)
        });
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
        let (d_gate, d_up) = with_slice(gate, |g| {
            with_slice(up, |u| {
                with_slice(&d.contiguous()?, |d| {
                    Ok(filled_pair(n, CHUNK, |i, dg, du| {
                        let at = i * CHUNK..i * CHUNK + dg.len();
                        let (g, u, d) = (&g[at.clone()], &u[at.clone()], &d[at]);
                        self.0.backward(g, u, d, dg, du)
                    }))
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
    gated(gate, up, GateActivation::Silu)
}

/// `act(gate) ⊙ up` with a hand-written backward (SwiGLU or GeGLU).
pub fn gated(gate: &Tensor, up: &Tensor, act: GateActivation) -> Result<Tensor> {
    gate.contiguous()?
        .apply_op2(&up.contiguous()?, GatedOp(act))
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    use crate::ops::op_test_util::flat;

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
        crate::ops::op_test_util::uniform(shape, seed, 2.0)
    }

    #[test]
    fn rms_norm_matches_autograd_oracle() {
        // Rows of whole eight-float blocks, rows with a remainder, and enough rows for
        // the parallel path.
        for (shape, seed) in [([3, 5, 8], 1), ([2, 3, 13], 4), ([64, 16, 67], 7)] {
            let h = shape[2];
            let x = Var::from_tensor(&randn(&shape, seed)).unwrap();
            let w = (randn(&[h], seed + 1) + 1.0).unwrap();
            let probe = randn(&shape, seed + 2);
            let (y1, g1) = grad_of(|x| rms_norm(x, &w, 1e-5), &x, &probe);
            let (y2, g2) = grad_of(|x| candle_nn::ops::rms_norm_slow(x, &w, 1e-5), &x, &probe);
            close(&y1, &y2, 1e-5);
            close(&g1, &g2, 1e-4);
        }
    }

    #[test]
    fn swiglu_matches_autograd_oracle() {
        for shape in [[4, 6], [300, 250]] {
            swiglu_matches_autograd_at(&shape);
        }
    }

    /// SwiGLU's output and both gradients against candle's composed ops, at `shape`
    /// (`[300, 250]` runs the parallel path, with a short last chunk).
    fn swiglu_matches_autograd_at(shape: &[usize]) {
        let gate = Var::from_tensor(&randn(shape, 7)).unwrap();
        let up = randn(shape, 8);
        let probe = randn(shape, 9);
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

    /// GeGLU's output and both gradients against the composed tanh GELU (PyTorch's
    /// `gelu(approximate="tanh")` written out) differentiated by candle's autograd.
    #[test]
    fn geglu_matches_autograd_oracle() {
        let composed = |g: &Tensor, u: &Tensor| -> Result<Tensor> {
            let c = (2.0f64 / std::f64::consts::PI).sqrt();
            let inner = ((g + (g.powf(3.0)? * 0.044715)?)? * c)?;
            ((g * 0.5)? * (inner.tanh()? + 1.0)?)? * u
        };
        for shape in [[4, 6], [300, 250]] {
            // Values out to ±6 reach both tails of the gate.
            let gate = Var::from_tensor(&(randn(&shape, 17) * 3.0).unwrap()).unwrap();
            let up = randn(&shape, 18);
            let probe = randn(&shape, 19);
            let act = GateActivation::GeluTanh;
            let (y1, g1) = grad_of(|g| gated(g, &up, act), &gate, &probe);
            let (y2, g2) = grad_of(|g| composed(g, &up), &gate, &probe);
            close(&y1, &y2, 1e-5);
            close(&g1, &g2, 1e-4);
            let upv = Var::from_tensor(&up).unwrap();
            let g = gate.as_tensor().clone();
            let (_, gu1) = grad_of(|u| gated(&g, u, act), &upv, &probe);
            let (_, gu2) = grad_of(|u| composed(&g, u), &upv, &probe);
            close(&gu1, &gu2, 1e-5);
        }
    }

    /// Gemma's `x · (1 + w)` norm: the loader keeps `1 + w`, so the one norm op runs it;
    /// its input gradient against autograd through the composed form with `w` itself.
    #[test]
    fn unit_offset_norm_matches_autograd_oracle() {
        let shape = [3, 7, 24];
        let x = Var::from_tensor(&randn(&shape, 21)).unwrap();
        let w = (randn(&[24], 22) * 0.3).unwrap();
        let probe = randn(&shape, 23);
        let held = (&w + 1.0).unwrap();
        let (y1, g1) = grad_of(|x| rms_norm(x, &held, 1e-6), &x, &probe);
        let composed = |x: &Tensor| -> Result<Tensor> {
            let ms = x.sqr()?.mean_keepdim(candle_core::D::Minus1)?;
            let normed = x.broadcast_div(&(ms + 1e-6)?.sqrt()?)?;
            normed.broadcast_mul(&(&w + 1.0)?)
        };
        let (y2, g2) = grad_of(composed, &x, &probe);
        close(&y1, &y2, 1e-5);
        close(&g1, &g2, 1e-4);
    }

    #[test]
    fn rope_matches_autograd_oracle() {
        // A few rows, and enough for the parallel path.
        for dims in [(2, 3, 4, 8), (2, 9, 64, 64)] {
            rope_matches_autograd_at(dims);
        }
    }

    /// RoPE against the composed rotation, head-major and token-major, with one table for
    /// every row and one per batch row, at `x [b, heads, t, d]`.
    fn rope_matches_autograd_at((b, heads, t, d): (usize, usize, usize, usize)) {
        let x = Var::from_tensor(&randn(&[b, heads, t, d], 4)).unwrap();
        let probe = randn(&[b, heads, t, d], 5);
        for per_batch in [false, true] {
            let (cos, sin) = if per_batch {
                (
                    randn(&[b, t, d / 2], 6).cos().unwrap(),
                    randn(&[b, t, d / 2], 6).sin().unwrap(),
                )
            } else {
                (
                    randn(&[t, d / 2], 6).cos().unwrap(),
                    randn(&[t, d / 2], 6).sin().unwrap(),
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
            let token_major =
                |x: &Tensor| x.transpose(1, 2)?.contiguous()?.reshape((b, t, heads * d));
            let xt = Var::from_tensor(&token_major(x.as_tensor()).unwrap()).unwrap();
            let layout = HeadLayout::TokenMajor { heads };
            let (y3, g3) = grad_of(
                |x| rope(x, &cos, &sin, layout),
                &xt,
                &token_major(&probe).unwrap(),
            );
            let y2t = Tensor::from_vec(y2.clone(), (b, heads, t, d), &Device::Cpu).unwrap();
            let g2t = Tensor::from_vec(g2.clone(), (b, heads, t, d), &Device::Cpu).unwrap();
            close(&y3, &flat(&token_major(&y2t).unwrap()), 1e-5);
            close(&g3, &flat(&token_major(&g2t).unwrap()), 1e-4);
        }
    }
}
