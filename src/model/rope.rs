//! Rotary position embeddings: the cos/sin tables (with Llama 3 frequency scaling, or
//! Gemma 3's linear scaling of its full-attention layers, and a second table for its
//! sliding layers' own base) and their application in the `rotate_half` layout Hugging
//! Face checkpoints use.

use candle_core::{DType, Device, Result, Tensor, D};

use super::config::{Llama3RopeScaling, ModelConfig};
use crate::ops::train_ops::HeadLayout;

/// Precomputed cos/sin tables, `[max_positions, head_dim / 2]`.
#[derive(Debug, Clone)]
pub struct Rope {
    cos: Tensor,
    sin: Tensor,
}

/// `1 / base^(2i / dim)` for each rotated pair.
fn plain_frequencies(dim: usize, base: f64) -> Vec<f64> {
    (0..dim / 2)
        .map(|i| 1.0 / base.powf(2.0 * i as f64 / dim as f64))
        .collect()
}

/// Positions the RoPE tables are built for, from a config's `max_position_embeddings`:
/// at least 2048 (configs that state less still get room for a prompt) and at most
/// 32 768 (a 128K-context model's full table would cost hundreds of MiB; a position past
/// the table is an error where the tables are read).
pub fn table_positions(max_position_embeddings: usize) -> usize {
    max_position_embeddings.clamp(2048, 32_768)
}

/// The inverse frequencies of the sliding-window layers, where their base differs from the
/// full-attention layers' (Gemma 3: 10 000); they are never scaled.
pub fn local_inverse_frequencies(cfg: &ModelConfig) -> Option<Vec<f32>> {
    let base = cfg.style.rope_local_theta?;
    if !cfg.style.has_sliding_layers()
        || (base == cfg.rope_theta && cfg.style.rope_linear_factor.is_none())
    {
        return None;
    }
    let inv = plain_frequencies(cfg.head_dim, base as f64);
    Some(inv.into_iter().map(|x| x as f32).collect())
}

/// The inverse frequencies (of the full-attention layers), with Llama 3 scaling or linear
/// scaling applied when configured.
pub fn inverse_frequencies(cfg: &ModelConfig) -> Vec<f32> {
    let mut inv = plain_frequencies(cfg.head_dim, cfg.rope_theta as f64);
    if let Some(f) = cfg.style.rope_linear_factor {
        inv.iter_mut().for_each(|x| *x /= f as f64);
    }
    if let Some(s) = cfg.rope_scaling {
        let orig = s.original_max_position_embeddings as f64;
        let low_wavelen = orig / s.low_freq_factor as f64;
        let high_wavelen = orig / s.high_freq_factor as f64;
        for f in inv.iter_mut() {
            let wavelen = 2.0 * std::f64::consts::PI / *f;
            if wavelen < high_wavelen {
                continue;
            } else if wavelen > low_wavelen {
                *f /= s.factor as f64;
            } else {
                let smooth = (orig / wavelen - s.low_freq_factor as f64)
                    / (s.high_freq_factor as f64 - s.low_freq_factor as f64);
                *f = (1.0 - smooth) * *f / s.factor as f64 + smooth * *f;
            }
        }
    }
    inv.into_iter().map(|x| x as f32).collect()
}

/// The per-pair divisors llama.cpp keeps as the `rope_freqs.weight` tensor for Llama 3
/// scaling (the plain inverse frequencies over the scaled ones, as llama.cpp's
/// `convert_hf_to_gguf.py` computes them); `None` without scaling.
pub fn llama3_freq_factors(cfg: &ModelConfig) -> Option<Vec<f32>> {
    cfg.rope_scaling?;
    let plain = inverse_frequencies(&ModelConfig {
        rope_scaling: None,
        ..cfg.clone()
    });
    let scaled = inverse_frequencies(cfg);
    Some(plain.iter().zip(&scaled).map(|(p, s)| p / s).collect())
}

/// The Llama 3 scaling whose `rope_freqs` factors equal `factors`, found among the
/// parameters Llama 3.x models ship with (a factor that is the largest divisor, low and
/// high frequency factors of 1–8, an original context of 2K–128K). GGUF files keep only
/// the factors; the parameters are needed to write `config.json` again.
pub fn llama3_scaling_from_factors(
    cfg: &ModelConfig,
    factors: &[f32],
) -> Option<Llama3RopeScaling> {
    let factor = factors.iter().copied().fold(f32::NAN, f32::max);
    if !factor.is_finite() || factor <= 1.0 || factors.len() != cfg.head_dim / 2 {
        return None;
    }
    let freq_factors = [1.0f32, 2.0, 4.0, 8.0];
    for orig in [8192usize, 4096, 2048, 16384, 32768, 65536, 131072] {
        for &low in &freq_factors {
            for &high in freq_factors.iter().filter(|&&h| h > low) {
                let s = Llama3RopeScaling {
                    factor,
                    low_freq_factor: low,
                    high_freq_factor: high,
                    original_max_position_embeddings: orig,
                };
                let candidate = ModelConfig {
                    rope_scaling: Some(s),
                    ..cfg.clone()
                };
                let Some(expected) = llama3_freq_factors(&candidate) else {
                    continue;
                };
                let close = expected
                    .iter()
                    .zip(factors)
                    .all(|(e, f)| (e - f).abs() <= 1e-3 * e.abs().max(1.0));
                if close {
                    return Some(s);
                }
            }
        }
    }
    None
}

impl Rope {
    /// The full-attention layers' tables (every layer's, where none slides).
    pub fn new(cfg: &ModelConfig, max_positions: usize, device: &Device) -> Result<Self> {
        Self::from_frequencies(inverse_frequencies(cfg), max_positions, device)
    }

    /// The sliding layers' tables, where they differ from [`Rope::new`]'s.
    pub fn local(cfg: &ModelConfig, max_positions: usize, device: &Device) -> Result<Option<Self>> {
        local_inverse_frequencies(cfg)
            .map(|inv| Self::from_frequencies(inv, max_positions, device))
            .transpose()
    }

    fn from_frequencies(inv: Vec<f32>, max_positions: usize, device: &Device) -> Result<Self> {
        let half = inv.len();
        let inv = Tensor::from_vec(inv, (1, half), device)?;
        let pos = Tensor::arange(0u32, max_positions as u32, device)?
            .to_dtype(DType::F32)?
            .reshape((max_positions, 1))?;
        let freqs = pos.broadcast_mul(&inv)?;
        Ok(Self {
            cos: freqs.cos()?,
            sin: freqs.sin()?,
        })
    }

    pub fn max_positions(&self) -> usize {
        self.cos.dims()[0]
    }

    /// cos/sin rows for positions `start..start + len`, `[len, head_dim / 2]`.
    pub fn range(&self, start: usize, len: usize) -> Result<(Tensor, Tensor)> {
        Ok((
            self.cos.narrow(0, start, len)?,
            self.sin.narrow(0, start, len)?,
        ))
    }

    /// cos/sin rows gathered for explicit positions `[b, t]` (packed sequences), `[b, t, head_dim / 2]`.
    pub fn gather(&self, positions: &Tensor) -> Result<(Tensor, Tensor)> {
        let (b, t) = positions.dims2()?;
        let flat = positions.flatten_all()?;
        let half = self.cos.dims()[1];
        Ok((
            self.cos.index_select(&flat, 0)?.reshape((b, t, half))?,
            self.sin.index_select(&flat, 0)?.reshape((b, t, half))?,
        ))
    }
}

/// Applies rotary embeddings to `x` `[b, h, t, d]`; cos/sin are `[t, d/2]` or `[b, t, d/2]`.
/// One op for training and generation; its backward (the inverse rotation) only matters in
/// training.
pub fn apply(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    crate::ops::train_ops::rope(x, cos, sin, HeadLayout::HeadMajor)
}

/// The same for `x` in the projections' layout `[b, t, heads · d]`.
pub fn apply_token_major(x: &Tensor, cos: &Tensor, sin: &Tensor, heads: usize) -> Result<Tensor> {
    crate::ops::train_ops::rope(x, cos, sin, HeadLayout::TokenMajor { heads })
}

/// The same rotation composed of plain ops, which candle's autograd differentiates: the
/// oracle for the training op's gradient.
pub fn apply_composed(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let cos = Tensor::cat(&[cos, cos], D::Minus1)?;
    let sin = Tensor::cat(&[sin, sin], D::Minus1)?;
    let (cos, sin) = if cos.rank() == 2 {
        (
            cos.unsqueeze(0)?.unsqueeze(0)?,
            sin.unsqueeze(0)?.unsqueeze(0)?,
        )
    } else {
        (cos.unsqueeze(1)?, sin.unsqueeze(1)?)
    };
    let d = x.dim(D::Minus1)?;
    let x1 = x.narrow(D::Minus1, 0, d / 2)?;
    let x2 = x.narrow(D::Minus1, d / 2, d - d / 2)?;
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], D::Minus1)?;
    x.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?
}
