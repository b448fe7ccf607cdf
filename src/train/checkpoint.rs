//! Gradient checkpointing: a micro-batch's loss and adapter gradients with each layer's
//! activations recomputed in the backward instead of kept. The forward keeps only each
//! layer's input (`[tokens, hidden]`); the backward runs from the last layer to the first,
//! recomputing one layer with autograd on, and backpropagates the gradient of its output
//! into that layer's adapter and its input. Activation memory falls from every layer's
//! saved tensors to one layer's plus the inputs, for one more forward pass per step.
//!
//! Written here because candle has no checkpointing: its autograd keeps the whole graph of
//! a forward until `backward` returns.

use candle_core::{Result, Tensor, Var};

use super::adapter::TrainableAdapter;
use super::data::MicroBatch;
use crate::model::{Forward, Layout, Model};

/// The loss of `mb` divided by `trained` and its gradient for each of `named`'s tensors
/// (zeros for those it does not reach), with dropout drawn from `dropout_seed`, as the
/// plain backward computes them.
pub fn micro_batch_gradients(
    model: &Model,
    adapter: &TrainableAdapter,
    named: &[(String, Var)],
    mb: &MicroBatch,
    trained: usize,
    dropout_seed: u64,
) -> Result<(f64, Vec<Tensor>)> {
    let tr = &model.transformer;
    let lora = adapter.lora_set();
    let opts = Forward {
        lora: Some(&lora),
        layout: Layout::Packed {
            positions: mb.positions.clone(),
            segments: mb.segments.clone(),
        },
        training_ops: true,
        dropout_seed: Some(dropout_seed),
        ..Default::default()
    };
    let (mut x, plan) = tr.prepare(&mb.ids, &opts)?;
    // Forward: each layer's output is cut from its graph, which is dropped at once.
    let layers = tr.layers.len();
    let mut inputs = Vec::with_capacity(layers);
    for i in 0..layers {
        let y = tr.run_layer(i, &x, None, &plan)?.detach();
        inputs.push(x);
        x = y;
    }
    // The loss on the last layer's output, with that output as the variable.
    let last = Var::from_tensor(&x)?;
    drop(x);
    let hidden = tr
        .final_norm(last.as_tensor())?
        .reshape((mb.targets.len(), model.config().hidden_size))?;
    let loss = (super::loss::cross_entropy_sum_differentiable(tr, &hidden, &mb.targets)?
        / trained as f64)?;
    let loss_value = loss.to_scalar::<f32>()? as f64;
    let store = loss.backward()?;
    let mut upstream = match store.get(last.as_tensor()) {
        Some(g) => g.clone(),
        None => last.as_tensor().zeros_like()?,
    };
    drop(store);
    let mut grads: Vec<Option<Tensor>> = vec![None; named.len()];
    // Backward: recompute each layer from its input, then push the output's gradient
    // through it (`Σ y ⊙ upstream` has gradient `upstream` at y).
    for i in (0..layers).rev() {
        let Some(input) = inputs.pop() else {
            candle_core::bail!("checkpointing: no input kept for layer {i}");
        };
        // The first layer's input is the frozen embedding: not tracked, no gradient.
        let tracked = if i > 0 {
            Some(Var::from_tensor(&input)?)
        } else {
            None
        };
        let x_in = tracked.as_ref().map_or(&input, |v| v.as_tensor());
        let y = tr.run_layer(i, x_in, None, &plan)?;
        let store = (y * &upstream)?.sum_all()?.backward()?;
        for (slot, (_, var)) in grads.iter_mut().zip(named) {
            if let Some(g) = store.get(var.as_tensor()) {
                *slot = Some(match slot.take() {
                    None => g.clone(),
                    Some(acc) => (acc + g)?,
                });
            }
        }
        if let Some(v) = &tracked {
            upstream = match store.get(v.as_tensor()) {
                Some(g) => g.clone(),
                None => v.as_tensor().zeros_like()?,
            };
        }
    }
    let grads = grads
        .into_iter()
        .zip(named)
        .map(|(g, (_, v))| match g {
            Some(g) => Ok(g),
            None => v.as_tensor().zeros_like(),
        })
        .collect::<Result<_>>()?;
    Ok((loss_value, grads))
}
