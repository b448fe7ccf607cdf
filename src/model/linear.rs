//! A frozen linear layer and where its weight lives: an f32 tensor (safetensors in f32,
//! the exact reference path, training) or the model file's own blocks
//! ([`crate::ops::quant::QuantMatrix`]: GGUF's quantized types, 16-bit floats), shared
//! between every copy of the model. Also the embedding lookup on either storage.

use std::sync::Arc;

use candle_core::{DType, Device, Result, Tensor};

use super::lora::LoraPair;
use crate::ops::quant::{QuantMatrix, StoredType};
use crate::ops::slice_gemm::with_slice;

/// A frozen weight `[out, in]`, as stored or as f32.
#[derive(Debug, Clone)]
pub enum FrozenWeight {
    F32(Tensor),
    Stored(Arc<QuantMatrix>),
}

impl FrozenWeight {
    /// `(out, in)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            FrozenWeight::F32(t) => {
                let d = t.dims();
                (d[0], d.get(1).copied().unwrap_or(1))
            }
            FrozenWeight::Stored(q) => (q.rows(), q.cols()),
        }
    }

    /// The storage type, `None` for f32.
    pub fn stored_type(&self) -> Option<StoredType> {
        match self {
            FrozenWeight::F32(_) => None,
            FrozenWeight::Stored(q) => Some(q.stored_type()),
        }
    }

    /// Bytes the weight holds.
    pub fn byte_len(&self) -> usize {
        match self {
            FrozenWeight::F32(t) => t.elem_count() * 4,
            FrozenWeight::Stored(q) => q.byte_len(),
        }
    }

    /// The f32 tensor, when that is how the weight is held.
    pub fn as_f32(&self) -> Option<&Tensor> {
        match self {
            FrozenWeight::F32(t) => Some(t),
            FrozenWeight::Stored(_) => None,
        }
    }

    /// The weight as an f32 tensor: itself, or a dequantized copy.
    pub fn to_f32(&self, device: &Device) -> Result<Tensor> {
        match self {
            FrozenWeight::F32(t) => Ok(t.clone()),
            FrozenWeight::Stored(q) => Tensor::from_vec(q.to_f32(), (q.rows(), q.cols()), device),
        }
    }

    /// `x [.., in] · Wᵀ` as `[.., out]`, without autograd through the weight.
    pub fn x_wt(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            FrozenWeight::F32(w) => crate::ops::frozen_matmul::x_wt(x, w),
            FrozenWeight::Stored(q) => {
                let (out, inp) = (q.rows(), q.cols());
                if x.dims().last() != Some(&inp) {
                    candle_core::bail!("input {:?} for a weight [{out}, {inp}]", x.dims());
                }
                let x = x.to_dtype(DType::F32)?.contiguous()?;
                let rows = x.elem_count() / inp.max(1);
                let mut y = vec![0f32; rows * out];
                with_slice(&x, |xs| {
                    q.matmul(xs, rows, &mut y).map_err(candle_core::Error::Msg)
                })?;
                Tensor::from_vec(y, crate::ops::frozen_matmul::out_shape(&x, out), x.device())
            }
        }
    }

    /// Rows `ids` of the weight (an embedding lookup) as `[ids.len(), in]`.
    pub fn rows(&self, ids: &Tensor) -> Result<Tensor> {
        match self {
            FrozenWeight::F32(t) => t.index_select(ids, 0),
            FrozenWeight::Stored(q) => {
                let device = ids.device().clone();
                let ids = ids.to_vec1::<u32>()?;
                let cols = q.cols();
                let mut out = vec![0f32; ids.len() * cols];
                for (&id, row) in ids.iter().zip(out.chunks_exact_mut(cols.max(1))) {
                    let id = id as usize;
                    if id >= q.rows() {
                        candle_core::bail!(
                            "token id {id} is outside the vocabulary of {}",
                            q.rows()
                        );
                    }
                    q.dequantize_rows(id, row);
                }
                Tensor::from_vec(out, (ids.len(), cols), &device)
            }
        }
    }
}

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
    /// The training op: frozen f32 weight, LoRA pair fused, backward written by hand.
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
        dropout_mask: Option<&Tensor>,
        mode: MatmulMode,
    ) -> Result<Tensor> {
        if mode == MatmulMode::Training {
            let Some(w) = self.weight.as_f32() else {
                candle_core::bail!(
                    "training runs on f32 weights; this layer is stored as {} (make the f32 copy first: Model::with_f32_weights)",
                    self.weight.stored_type().map_or("?", StoredType::name)
                )
            };
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
                Some(m) => (x * m)?,
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
