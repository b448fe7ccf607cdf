//! A frozen linear layer `y = x Wᵀ (+ b)` with an optional LoRA pair on top, at inference
//! or as the training op. Its weight ([`FrozenWeight`], from `ops`) is f32 or the model
//! file's own blocks, shared between every copy of the model.

use candle_core::{Device, Result, Tensor};

use super::lora::LoraPair;
use crate::ops::dropout::DropoutMask;
pub use crate::ops::frozen_weight::FrozenWeight;

/// A frozen linear layer `y = x Wᵀ (+ b)`.
#[derive(Debug, Clone)]
pub struct Linear {
    /// `[out, in]`, as in HF checkpoints.
    pub weight: FrozenWeight,
    pub bias: Option<Tensor>,
}

/// How a linear layer multiplies by its frozen weight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MatmulMode {
    /// Inference: the weight as stored, no autograd through it.
    Plain,
    /// The training op: frozen weight in any storage, LoRA pair fused, backward written
    /// by hand.
    Training,
}

impl Linear {
    pub fn new(weight: Tensor, bias: Option<Tensor>) -> Self {
        Self {
            weight: FrozenWeight::F32(weight),
            bias,
        }
    }

    /// Applies the layer to `x` `[.., in]`, adding the adapter's contribution when given.
    pub fn forward(
        &self,
        x: &Tensor,
        lora: Option<&LoraPair>,
        dropout_mask: Option<&DropoutMask>,
        mode: MatmulMode,
    ) -> Result<Tensor> {
        if mode == MatmulMode::Training {
            let w = &self.weight;
            let y = match lora {
                Some(p) => {
                    crate::ops::train_linear::lora_linear(x, w, &p.a, &p.b, p.scale, dropout_mask)?
                }
                None => crate::ops::train_linear::frozen_linear(x, w)?,
            };
            return match &self.bias {
                Some(b) => y.broadcast_add(b),
                None => Ok(y),
            };
        }
        let mut y = self.weight.x_wt(x)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b)?;
        }
        if let Some(p) = lora {
            let xin = match dropout_mask {
                Some(m) => (x * m.to_tensor(x.dims(), x.device())?)?,
                None => x.clone(),
            };
            let delta = xin
                .broadcast_matmul(&p.a.t()?)?
                .broadcast_matmul(&p.b.t()?)?;
            y = (y + (delta * p.scale)?)?;
        }
        Ok(y)
    }

    /// The same layer with an f32 weight.
    pub fn to_f32(&self, device: &Device) -> Result<Self> {
        Ok(Self {
            weight: FrozenWeight::F32(self.weight.to_f32(device)?),
            bias: self.bias.clone(),
        })
    }

    pub fn out_features(&self) -> usize {
        self.weight.dims().0
    }
    pub fn in_features(&self) -> usize {
        self.weight.dims().1
    }
}
