//! Per-row cross-entropy, `logsumexp(z) − z[label]`, as ops with hand-written backward
//! passes (`softmax(z) − onehot(label)`, times the upstream gradient).
//!
//! [`cross_entropy`] takes a chunk of logits: composed from candle ops (log-softmax,
//! gather, sum) the loss walks the `[rows, vocab]` logits a dozen times and keeps several
//! logits-sized temporaries for autograd; this op walks them twice forward and once
//! backward, and keeps one float per row.
//!
//! [`lm_head_cross_entropy`] takes the hidden states instead and applies the (frozen) LM
//! head itself. Since a row's loss gradient is linear in its upstream gradient, it can
//! compute `(softmax(z) − onehot) W` for each row during the forward pass and be done
//! with the logits there; the backward only scales those rows. Training keeps `[rows, hidden]`
//! per chunk instead of `[rows, vocab]` (85× less for SmolLM2).
//!
//! The logits of a chunk live in one buffer kept between calls ([`LOGITS`]): with a
//! 262K-token vocabulary a chunk is 512 MiB, and allocated afresh each step it found no
//! hole of its size in the heap the step's activations had left (the allocator keeps
//! freed memory, see `ops::runtime`), so the heap grew by a chunk from the second step on
//! (Gemma 3 270M, 4 × 256: 2396 MiB at the first step, 2910 MiB after).

use std::sync::{Mutex, OnceLock};

use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

use crate::ops::frozen_weight::FrozenWeight;
use crate::ops::slice_gemm::arg_slice;
use crate::ops::vec_math;

/// The logits buffer of the LM-head loss, kept at its largest size until
/// [`release_logits_buffer`] (the end of a training run).
static LOGITS: Mutex<Vec<f32>> = Mutex::new(Vec::new());

/// Frees the LM-head loss's logits buffer.
pub fn release_logits_buffer() {
    let mut buf = LOGITS.lock().unwrap_or_else(|p| p.into_inner());
    *buf = Vec::new();
}

struct CrossEntropy {
    labels: Vec<u32>,
    /// `logsumexp` of each row, from the forward pass, for the backward.
    lse: OnceLock<Vec<f32>>,
}

/// Every label must name a token of the vocabulary.
fn check_labels(labels: &[u32], vocab: usize) -> Result<()> {
    match labels.iter().find(|&&l| l as usize >= vocab) {
        Some(bad) => {
            candle_core::bail!("cross-entropy: label {bad} is outside a vocabulary of {vocab}")
        }
        None => Ok(()),
    }
}

impl CrossEntropy {
    fn dims(&self, shape: &Shape) -> Result<(usize, usize)> {
        let (rows, vocab) = shape.dims2()?;
        if rows != self.labels.len() {
            candle_core::bail!(
                "cross-entropy: {rows} rows of logits for {} labels",
                self.labels.len()
            );
        }
        check_labels(&self.labels, vocab)?;
        Ok((rows, vocab))
    }
}

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, vocab) = self.dims(layout.shape())?;
        let z = arg_slice(storage, layout, "cross-entropy")?;
        let lse: Vec<f32> = z.par_chunks(vocab).map(vec_math::logsumexp).collect();
        let loss = (0..rows)
            .map(|r| lse[r] - z[r * vocab + self.labels[r] as usize])
            .collect();
        // A second forward of the same op (not done by the trainer) keeps the first value,
        // which is the same for the same logits.
        let _ = self.lse.set(lse);
        Ok((CpuStorage::F32(loss), Shape::from(rows)))
    }

    fn bwd(&self, logits: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let (rows, vocab) = self.dims(logits.shape())?;
        let Some(lse) = self.lse.get() else {
            candle_core::bail!("cross-entropy: backward before forward");
        };
        let z = logits.flatten_all()?.to_vec1::<f32>()?;
        let g = g.flatten_all()?.to_vec1::<f32>()?;
        let mut dz = vec![0f32; rows * vocab];
        dz.par_chunks_mut(vocab)
            .zip(z.par_chunks(vocab))
            .enumerate()
            .for_each(|(r, (d, z))| {
                for (d, &x) in d.iter_mut().zip(z) {
                    *d = g[r] * vec_math::exp(x - lse[r]);
                }
                d[self.labels[r] as usize] -= g[r];
            });
        Ok(Some(Tensor::from_vec(dz, (rows, vocab), logits.device())?))
    }
}

/// Cross-entropy of `h Wᵀ` per row of `h [rows, hidden]`, with the LM head `W [vocab, hidden]`
/// frozen; see the module comment.
struct LmHeadCrossEntropy {
    weight: FrozenWeight,
    labels: Vec<u32>,
    /// `(softmax(z) − onehot(label)) W` per row, from the forward pass.
    dh: OnceLock<Vec<f32>>,
}

impl CustomOp1 for LmHeadCrossEntropy {
    fn name(&self) -> &'static str {
        "lm-head-cross-entropy"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (rows, hidden) = layout.shape().dims2()?;
        let (vocab, w_hidden) = self.weight.dims();
        if w_hidden != hidden || rows != self.labels.len() {
            candle_core::bail!(
                "lm-head cross-entropy: {rows} × {hidden} hidden states, an LM head of \
                 [{vocab}, {w_hidden}] and {} labels",
                self.labels.len()
            );
        }
        check_labels(&self.labels, vocab)?;
        let h = arg_slice(storage, layout, "lm-head cross-entropy")?;
        // The shared buffer, or (while another loss holds it) a fresh one.
        let mut shared = LOGITS.try_lock().ok();
        let mut own = Vec::new();
        let z: &mut Vec<f32> = match shared.as_deref_mut() {
            Some(buf) => buf,
            None => &mut own,
        };
        if z.len() < rows * vocab {
            z.resize(rows * vocab, 0.0);
        }
        let z = &mut z[..rows * vocab];
        let (loss, dh) = {
            self.weight.x_wt_into(z, false, rows, h)?;
            // Loss per row, then the logits become softmax − onehot in place.
            let loss: Vec<f32> = z
                .par_chunks_mut(vocab)
                .zip(&self.labels)
                .map(|(z, &label)| {
                    let picked = z[label as usize];
                    let lse = vec_math::softmax_in_place(z, 1.0);
                    z[label as usize] -= 1.0;
                    lse - picked
                })
                .collect();
            let dh = self.weight.dy_w_new(rows, z)?;
            (loss, dh)
        };
        let _ = self.dh.set(dh);
        Ok((CpuStorage::F32(loss), Shape::from(rows)))
    }

    fn bwd(&self, h: &Tensor, _res: &Tensor, g: &Tensor) -> Result<Option<Tensor>> {
        let (_, hidden) = h.dims2()?;
        let Some(dh) = self.dh.get() else {
            candle_core::bail!("lm-head cross-entropy: backward before forward");
        };
        let g = g.flatten_all()?.to_vec1::<f32>()?;
        let mut out = dh.clone();
        out.par_chunks_mut(hidden)
            .zip(g.par_iter())
            .for_each(|(row, g)| row.iter_mut().for_each(|x| *x *= g));
        Ok(Some(Tensor::from_vec(out, h.shape(), h.device())?))
    }
}

/// `-log softmax(h Wᵀ)[label]` per row of `h [rows, hidden]`, with `W [vocab, hidden]`
/// frozen (f32 or quantized): a `[rows]` tensor that autograd differentiates with respect
/// to `h`. The logits are not kept for the backward (their buffer is reused by the next
/// call).
pub fn lm_head_cross_entropy(h: &Tensor, weight: &FrozenWeight, labels: &[u32]) -> Result<Tensor> {
    h.contiguous()?.apply_op1(LmHeadCrossEntropy {
        weight: weight.contiguous()?,
        labels: labels.to_vec(),
        dh: OnceLock::new(),
    })
}

/// `-log softmax(logits)[label]` per row of `logits [rows, vocab]`: a `[rows]` tensor that
/// autograd differentiates with respect to the logits.
pub fn cross_entropy(logits: &Tensor, labels: &[u32]) -> Result<Tensor> {
    logits.contiguous()?.apply_op1(CrossEntropy {
        labels: labels.to_vec(),
        lse: OnceLock::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::op_test_util::{flat, max_abs_diff};
    use candle_core::{Device, Var, D};

    /// The composed oracle: log-softmax and gather from candle ops, which autograd
    /// differentiates.
    fn composed_loss(logits: &Tensor, labels: &[u32]) -> Tensor {
        let lsm = candle_nn::ops::log_softmax(logits, D::Minus1).unwrap();
        let lab = Tensor::new(labels, &Device::Cpu)
            .unwrap()
            .unsqueeze(1)
            .unwrap();
        lsm.gather(&lab, 1)
            .unwrap()
            .squeeze(1)
            .unwrap()
            .neg()
            .unwrap()
    }

    /// Losses, and the gradient of `Σ weights · loss` with respect to `x`, agree within 1e-5.
    fn assert_same_loss_and_gradient(fast: &Tensor, slow: &Tensor, weights: &Tensor, x: &Var) {
        let close = |a: Vec<f32>, b: Vec<f32>| {
            let worst = max_abs_diff(&a, &b);
            assert!(worst < 1e-5, "max |Δ| {worst}");
        };
        close(flat(fast), flat(slow));
        let grad = |loss: &Tensor| {
            let g = (loss * weights)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap();
            flat(g.get(x.as_tensor()).unwrap())
        };
        close(grad(fast), grad(slow));
    }

    #[test]
    fn matches_log_softmax_and_its_gradient() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let (rows, vocab) = (5, 11);
        let v: Vec<f32> = (0..rows * vocab)
            .map(|_| rng.random_range(-4.0..4.0))
            .collect();
        let z = Var::from_vec(v, (rows, vocab), &Device::Cpu).unwrap();
        let labels = [0u32, 10, 3, 3, 7];
        let weights = Tensor::new(&[1f32, 0.5, 2.0, -1.0, 0.25], &Device::Cpu).unwrap();

        let fast = cross_entropy(z.as_tensor(), &labels).unwrap();
        let slow = composed_loss(z.as_tensor(), &labels);
        assert_same_loss_and_gradient(&fast, &slow, &weights, &z);
    }

    #[test]
    fn lm_head_loss_matches_logits_then_log_softmax() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(4);
        let (rows, hidden, vocab) = (6, 5, 13);
        let mut rand =
            |n: usize| -> Vec<f32> { (0..n).map(|_| rng.random_range(-1.5..1.5)).collect() };
        let h = Var::from_vec(rand(rows * hidden), (rows, hidden), &Device::Cpu).unwrap();
        let w = Tensor::from_vec(rand(vocab * hidden), (vocab, hidden), &Device::Cpu).unwrap();
        let labels = [1u32, 12, 0, 5, 5, 9];
        let weights = Tensor::new(&[1f32, -0.5, 2.0, 0.0, 0.25, 3.0], &Device::Cpu).unwrap();

        let fast =
            lm_head_cross_entropy(h.as_tensor(), &FrozenWeight::F32(w.clone()), &labels).unwrap();
        let logits = h.as_tensor().matmul(&w.t().unwrap()).unwrap();
        let slow = composed_loss(&logits, &labels);
        assert_same_loss_and_gradient(&fast, &slow, &weights, &h);
        let g = fast.sum_all().unwrap().backward().unwrap();
        assert!(g.get(&w).is_none(), "the frozen LM head got a gradient");
    }

    #[test]
    fn a_label_outside_the_vocabulary_is_an_error() {
        let z = Tensor::zeros((1, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        let err = cross_entropy(&z, &[4]).unwrap_err();
        assert!(err.to_string().contains("outside a vocabulary"), "{err}");
    }
}
