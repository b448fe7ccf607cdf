//! The linear layer as training runs it: `y = x Wᵀ + s · ((x ⊙ m) Aᵀ) Bᵀ`, the base weight
//! W frozen (f32 or quantized: [`FrozenWeight`]'s training products), the LoRA pair (A, B)
//! trainable and `m` an optional dropout mask, as one op whose backward is written by hand.
//!
//! Composed from candle ops, autograd computes the gradient of every matmul operand (a
//! frozen W costs a full dW matmul and a weight-sized gradient: PERF.md) and keeps four
//! `[n, out]` tensors per layer alive until the backward (base output, adapter output,
//! scaled, sum). This op keeps nothing but its inputs and the small `[r, n]` product
//! `A (x ⊙ m)ᵀ`, and writes `dx = dy W + (s · dy B) A` into one buffer. It calls the gemm crate
//! (candle's own matmul kernel) directly because candle's matmul cannot accumulate into an
//! existing buffer or read a transposed operand without a copy.

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp1, CustomOp3, Layout, Result, Shape, Tensor};

use super::dropout::DropoutMask;
use super::frozen_weight::FrozenWeight;
use super::slice_gemm::{arg_slice, gemm_into, gemm_new, with_slice, Threads::All};

/// `[.., in]` -> `[.., out]`.
fn output_shape(x: &Shape, out: usize) -> Shape {
    let mut dims = x.dims().to_vec();
    if let Some(last) = dims.last_mut() {
        *last = out;
    }
    Shape::from(dims)
}

/// The frozen weight's `(out, in)`, checked against the input's last dimension.
fn weight_dims(weight: &FrozenWeight, x: &Shape) -> Result<(usize, usize)> {
    let (out, inp) = weight.dims();
    if x.dims().last() != Some(&inp) {
        candle_core::bail!("train-linear: input {x:?} does not match a weight of [{out}, {inp}]");
    }
    Ok((out, inp))
}

/// The `cols × rows` transpose of a row-major `rows × cols` matrix.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    (0..cols)
        .flat_map(|c| (0..rows).map(move |r| m[r * cols + c]))
        .collect()
}

/// `dst [n, cols] += scale · lhsᵀ · rhs` for `lhs [r, n]` and `rhs [r, cols]`, both
/// row-major: an adapter's rank-`r` term added onto the base product's output.
fn add_rank_product(
    dst: &mut [f32],
    (n, cols, r): (usize, usize, usize),
    lhs: &[f32],
    rhs: &[f32],
    scale: f32,
) -> Result<()> {
    gemm_into(dst, true, (n, cols, r), lhs, true, rhs, false, scale, All)
}

fn tensor_of(data: Vec<f32>, shape: impl Into<Shape>) -> Result<Tensor> {
    Tensor::from_vec(data, shape, &candle_core::Device::Cpu)
}

/// `x Wᵀ`, differentiated with respect to `x` only.
struct FrozenLinear {
    weight: FrozenWeight,
}

impl CustomOp1 for FrozenLinear {
    fn name(&self) -> &'static str {
        "frozen-linear"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (out, inp) = weight_dims(&self.weight, layout.shape())?;
        let x = arg_slice(storage, layout, "frozen-linear")?;
        let n = x.len() / inp.max(1);
        let y = self.weight.x_wt_new(n, x)?;
        Ok((CpuStorage::F32(y), output_shape(layout.shape(), out)))
    }

    fn bwd(&self, x: &Tensor, _res: &Tensor, dy: &Tensor) -> Result<Option<Tensor>> {
        let (_, inp) = weight_dims(&self.weight, x.shape())?;
        let n = x.elem_count() / inp.max(1);
        let dx = with_slice(&dy.contiguous()?, |dy| self.weight.dy_w_new(n, dy))?;
        Ok(Some(tensor_of(dx, x.shape())?))
    }
}

/// `x Wᵀ + scale · ((x ⊙ mask) Aᵀ) Bᵀ`, differentiated with respect to x, A and B.
struct LoraLinear {
    weight: FrozenWeight,
    scale: f32,
    mask: Option<DropoutMask>,
    /// `hᵀ = A (x ⊙ mask)ᵀ` from the forward pass (`[r, n]`, a few kilobytes), for the
    /// backward.
    h_t: OnceLock<Vec<f32>>,
}

impl LoraLinear {
    /// `x ⊙ mask`, or `x` itself.
    fn masked<'a>(&self, x: &'a [f32]) -> Result<std::borrow::Cow<'a, [f32]>> {
        match &self.mask {
            None => Ok(std::borrow::Cow::Borrowed(x)),
            Some(m) if m.len() != x.len() => {
                candle_core::bail!("train-linear: dropout mask does not match the input")
            }
            Some(m) => Ok(std::borrow::Cow::Owned(m.apply(x))),
        }
    }

    /// `(rank, out, in)`, checked against A `[r, in]` and B `[out, r]`.
    fn dims(&self, x: &Shape, a: &Shape, b: &Shape) -> Result<(usize, usize, usize)> {
        let (out, inp) = weight_dims(&self.weight, x)?;
        let (r, a_in) = a.dims2()?;
        let (b_out, b_r) = b.dims2()?;
        if a_in != inp || b_out != out || b_r != r {
            candle_core::bail!(
                "train-linear: adapter A {a:?} and B {b:?} do not fit a weight of [{out}, {inp}]"
            );
        }
        Ok((r, out, inp))
    }
}

impl CustomOp3 for LoraLinear {
    fn name(&self) -> &'static str {
        "lora-linear"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        a_s: &CpuStorage,
        al: &Layout,
        b_s: &CpuStorage,
        bl: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let (r, out, inp) = self.dims(xl.shape(), al.shape(), bl.shape())?;
        let (x, a, b) = (
            arg_slice(xs, xl, "lora-linear")?,
            arg_slice(a_s, al, "lora-linear")?,
            arg_slice(b_s, bl, "lora-linear")?,
        );
        let n = x.len() / inp.max(1);
        let xm = self.masked(x)?;
        // hᵀ = A (x ⊙ m)ᵀ: kept `[r, n]`, so the token axis is the unit-stride one gemm
        // tiles by 16 × 4 (stored `[n, r]`, the r = 16 axis made single-row micro-tiles,
        // a third of the speed).
        let ht = gemm_new((r, n, inp), a, false, &xm, true, 1.0, All)?;
        // The base product first, into a fresh y, then the adapter's product adds itself
        // on top. Either order walks y twice; this one gives the first touch of fresh
        // memory to the product with 576 or more multiply-adds per value, which hides it,
        // and leaves the inner-size-16 product a y still in cache: in the other order
        // that product ran at 30–33 GFLOP/s in the step, in this one at 56–67 (AMD Zen 3,
        // `FINETUNE_STUDIO_GEMM_PROFILE`). Bᵀ laid out row-major ([r, out], a few
        // thousand values): read in place as B, the r = 16 inner axis strided, the
        // product ran at half the speed.
        let bt = transpose(b, out, r);
        let mut y = self.weight.x_wt_new(n, x)?;
        add_rank_product(&mut y, (n, out, r), &ht, &bt, self.scale)?;
        let _ = self.h_t.set(ht);
        Ok((CpuStorage::F32(y), output_shape(xl.shape(), out)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        a: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (r, out, inp) = self.dims(x.shape(), a.shape(), b.shape())?;
        let n = x.elem_count() / inp.max(1);
        let dy = dy.contiguous()?;
        let x_tracked = x.track_op();
        let (dx, da, db) = with_slice(x, |x| {
            with_slice(a, |a| {
                with_slice(b, |b| {
                    with_slice(&dy, |dy| {
                        let xm = self.masked(x)?;
                        let Some(ht) = self.h_t.get() else {
                            candle_core::bail!("train-linear: backward before forward");
                        };
                        // Every product is laid out so that its output's unit-stride axis
                        // is a long one (tokens, in or out), never r (see the forward):
                        // dhᵀ = s · Bᵀ dyᵀ; dBᵀ = s · hᵀ dy; dA = dhᵀ (x ⊙ m).
                        // Bᵀ laid out row-major ([r, out], a few thousand values), so
                        // that both operands of dhᵀ have contiguous rows along `out` (the
                        // layout the dot kernel can take).
                        let bt = transpose(b, out, r);
                        let dht = gemm_new((r, n, out), &bt, false, dy, true, self.scale, All)?;
                        let db_t = gemm_new((r, out, n), ht, false, dy, false, self.scale, All)?;
                        let db = transpose(&db_t, r, out);
                        let da = gemm_new((r, inp, n), &dht, false, &xm, false, 1.0, All)?;
                        // dx = dy W + (dh A) ⊙ m; not needed when x is not tracked
                        // (the first layer's input comes from the frozen embedding).
                        if !x_tracked {
                            return Ok((Vec::new(), da, db));
                        }
                        let dx = match &self.mask {
                            // (dh A) ⊙ m first, then dy W added on top.
                            Some(mask) => {
                                let mut dx = gemm_new((n, inp, r), &dht, true, a, false, 1.0, All)?;
                                mask.apply_in_place(&mut dx);
                                self.weight.dy_w_into(&mut dx, true, n, dy)?;
                                dx
                            }
                            // dy W first, then dh A added on top (as in the forward).
                            None => {
                                let mut dx = self.weight.dy_w_new(n, dy)?;
                                add_rank_product(&mut dx, (n, inp, r), &dht, a, 1.0)?;
                                dx
                            }
                        };
                        Ok((dx, da, db))
                    })
                })
            })
        })?;
        Ok((
            x_tracked.then(|| tensor_of(dx, x.shape())).transpose()?,
            Some(tensor_of(da, (r, inp))?),
            Some(tensor_of(db, (out, r))?),
        ))
    }
}

/// `x Wᵀ` that autograd differentiates with respect to `x` only (`W [out, in]` frozen).
pub fn frozen_linear(x: &Tensor, weight: &FrozenWeight) -> Result<Tensor> {
    x.contiguous()?.apply_op1(FrozenLinear {
        weight: weight.contiguous()?,
    })
}

/// `x Wᵀ + scale · ((x ⊙ mask) Aᵀ) Bᵀ` (`A [r, in]`, `B [out, r]`), differentiated with
/// respect to x, A and B but not W.
pub fn lora_linear(
    x: &Tensor,
    weight: &FrozenWeight,
    a: &Tensor,
    b: &Tensor,
    scale: f64,
    mask: Option<&DropoutMask>,
) -> Result<Tensor> {
    let op = LoraLinear {
        weight: weight.contiguous()?,
        scale: scale as f32,
        mask: mask.cloned(),
        h_t: OnceLock::new(),
    };
    x.contiguous()?
        .apply_op3(&a.contiguous()?, &b.contiguous()?, op)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    use crate::ops::op_test_util::{flat as vec_of, max_abs_diff, uniform};

    fn randn(shape: &[usize], seed: u64) -> Tensor {
        uniform(shape, seed, 1.0)
    }

    fn frozen(w: &Tensor) -> FrozenWeight {
        FrozenWeight::F32(w.clone())
    }

    fn assert_close(a: &[f32], b: &[f32], what: &str) {
        assert_eq!(a.len(), b.len(), "{what}");
        let worst = max_abs_diff(a, b);
        assert!(worst < 1e-4, "{what}: max |Δ| {worst}");
    }

    /// Output and gradients of the fused op against the same formula composed from
    /// candle ops and differentiated by candle's autograd.
    fn check(mask: Option<DropoutMask>) {
        let (n, inp, out, r) = (7, 12, 10, 3);
        let w = randn(&[out, inp], 1);
        let x = Var::from_tensor(&randn(&[1, n, inp], 2)).unwrap();
        let a = Var::from_tensor(&randn(&[r, inp], 3)).unwrap();
        let b = Var::from_tensor(&randn(&[out, r], 4)).unwrap();
        let probe = randn(&[1, n, out], 5);
        let scale = 0.75;

        let fused = lora_linear(
            x.as_tensor(),
            &frozen(&w),
            a.as_tensor(),
            b.as_tensor(),
            scale,
            mask.as_ref(),
        )
        .unwrap();
        let xm = match &mask {
            Some(m) => (x.as_tensor() * m.to_tensor(&[1, n, inp], &Device::Cpu).unwrap()).unwrap(),
            None => x.as_tensor().clone(),
        };
        let composed = (x.as_tensor().broadcast_matmul(&w.t().unwrap()).unwrap()
            + (xm
                .broadcast_matmul(&a.as_tensor().t().unwrap())
                .unwrap()
                .broadcast_matmul(&b.as_tensor().t().unwrap())
                .unwrap()
                * scale)
                .unwrap())
        .unwrap();
        assert_close(&vec_of(&fused), &vec_of(&composed), "output");

        let g1 = (&fused * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let g2 = (&composed * &probe)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (v, what) in [(&x, "dx"), (&a, "dA"), (&b, "dB")] {
            assert_close(
                &vec_of(g1.get(v.as_tensor()).unwrap()),
                &vec_of(g2.get(v.as_tensor()).unwrap()),
                what,
            );
        }
        assert!(g1.get(&w).is_none(), "the frozen weight got a gradient");
    }

    #[test]
    fn lora_linear_matches_autograd() {
        check(None);
    }

    #[test]
    fn lora_linear_with_dropout_matches_autograd() {
        let mask = crate::model::transformer::dropout_mask(&[1, 7, 12], 0.3, 9);
        assert!(
            mask.apply(&[1.0; 84]).contains(&0.0),
            "the mask drops something"
        );
        check(Some(mask));
    }

    #[test]
    fn an_untracked_input_still_trains_the_adapter() {
        let w = randn(&[6, 4], 1);
        let x = randn(&[5, 4], 2);
        let a = Var::from_tensor(&randn(&[2, 4], 3)).unwrap();
        let b = Var::from_tensor(&randn(&[6, 2], 4)).unwrap();
        let fused = lora_linear(&x, &frozen(&w), a.as_tensor(), b.as_tensor(), 0.5, None).unwrap();
        let composed = (x.matmul(&w.t().unwrap()).unwrap()
            + (x.matmul(&a.as_tensor().t().unwrap())
                .unwrap()
                .matmul(&b.as_tensor().t().unwrap())
                .unwrap()
                * 0.5)
                .unwrap())
        .unwrap();
        let g1 = fused.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = composed
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(g1.get(&x).is_none());
        for (v, what) in [(&a, "dA"), (&b, "dB")] {
            assert_close(
                &vec_of(g1.get(v.as_tensor()).unwrap()),
                &vec_of(g2.get(v.as_tensor()).unwrap()),
                what,
            );
        }
    }

    #[test]
    fn frozen_linear_matches_autograd() {
        let w = randn(&[5, 4], 1);
        let x = Var::from_tensor(&randn(&[3, 4], 2)).unwrap();
        let y1 = frozen_linear(x.as_tensor(), &frozen(&w)).unwrap();
        let y2 = x.as_tensor().matmul(&w.t().unwrap()).unwrap();
        assert_close(&vec_of(&y1), &vec_of(&y2), "output");
        let g1 = y1.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = y2.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert_close(
            &vec_of(g1.get(x.as_tensor()).unwrap()),
            &vec_of(g2.get(x.as_tensor()).unwrap()),
            "dx",
        );
    }

    #[test]
    fn mismatched_adapter_is_an_error() {
        let w = randn(&[5, 4], 1);
        let x = randn(&[3, 4], 2);
        let a = randn(&[2, 3], 3);
        let b = randn(&[5, 2], 4);
        let err = lora_linear(&x, &frozen(&w), &a, &b, 1.0, None).unwrap_err();
        assert!(err.to_string().contains("do not fit"), "{err}");
    }
}
