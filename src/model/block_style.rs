//! How a decoder block differs between the families the one transformer covers, as data
//! the layers read (never a second model): the gated MLP's activation, the embedding
//! scale, the `(1 + w)` RMSNorm, Gemma's extra norms around attention and the MLP, the
//! per-head q/k norm, the attention scale, sliding-window layers and the RoPE base of each
//! layer kind. [`BlockStyle::for_architecture`] gives each family's fixed traits; the
//! config readers fill in what the file states.

use serde::{Deserialize, Serialize};

use super::config::Architecture;
pub use crate::ops::train_ops::GateActivation;

/// Whether a layer attends to every earlier position or only to a window of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerKind {
    /// Every earlier position (`full_attention`).
    Full,
    /// The last `sliding_window` positions, the query's own included (`sliding_attention`).
    Sliding,
}

impl LayerKind {
    /// The name Hugging Face configs use in `layer_types`.
    pub fn hf_name(self) -> &'static str {
        match self {
            LayerKind::Full => "full_attention",
            LayerKind::Sliding => "sliding_attention",
        }
    }

    pub fn from_hf_name(name: &str) -> Option<Self> {
        match name {
            "full_attention" => Some(LayerKind::Full),
            "sliding_attention" => Some(LayerKind::Sliding),
            _ => None,
        }
    }
}

/// The per-family traits of a block (the Llama layout when defaulted).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BlockStyle {
    /// The gated MLP's activation: SiLU (SwiGLU) or tanh-approximated GELU (GeGLU).
    pub activation: GateActivation,
    /// Token embeddings multiplied by √hidden before the first layer (Gemma).
    pub scale_embeddings: bool,
    /// RMSNorm weights kept by the checkpoint as an offset from one: the norm is
    /// `x · (1 + w)` (Gemma). The loaded norms hold `1 + w`, so one norm op serves all.
    pub norm_unit_offset: bool,
    /// RMSNorm of the attention output and of the MLP output before each residual add,
    /// besides the norms before them: four norms per block (Gemma 2 and 3).
    pub sandwich_norms: bool,
    /// RMSNorm of each query and key head before RoPE (Qwen3, Gemma 3).
    pub qk_norm: bool,
    /// Scores scaled by `1 / √query_pre_attn_scalar` instead of `1 / √head_dim` (Gemma).
    pub query_pre_attn_scalar: Option<f64>,
    /// Positions a sliding layer's query sees, its own included.
    pub sliding_window: Option<usize>,
    /// Each layer's kind; empty means every layer attends fully.
    pub layer_types: Vec<LayerKind>,
    /// RoPE base of the sliding layers (Gemma 3: 10 000); `None`: `rope_theta`.
    pub rope_local_theta: Option<f32>,
    /// Linear RoPE scaling of the full-attention layers (positions divided by the factor).
    pub rope_linear_factor: Option<f32>,
}

impl Default for BlockStyle {
    fn default() -> Self {
        Self {
            activation: GateActivation::Silu,
            scale_embeddings: false,
            norm_unit_offset: false,
            sandwich_norms: false,
            qk_norm: false,
            query_pre_attn_scalar: None,
            sliding_window: None,
            layer_types: Vec::new(),
            rope_local_theta: None,
            rope_linear_factor: None,
        }
    }
}

/// Gemma 3's RoPE base of its sliding layers, which GGUF files do not record.
pub const GEMMA3_LOCAL_ROPE_THETA: f32 = 10_000.0;

/// Gemma 3 makes every sixth layer a full-attention one when the file lists no
/// `layer_types` (`sliding_window_pattern`).
pub const GEMMA3_SLIDING_PATTERN: usize = 6;

impl BlockStyle {
    /// The traits every model of `architecture` has; sizes that files state (window,
    /// layer kinds, scalars) are left for the readers.
    pub fn for_architecture(architecture: Architecture) -> Self {
        match architecture {
            Architecture::Llama | Architecture::Mistral | Architecture::Qwen2 => Self::default(),
            Architecture::Qwen3 => Self {
                qk_norm: true,
                ..Self::default()
            },
            Architecture::Gemma3 => Self {
                activation: GateActivation::GeluTanh,
                scale_embeddings: true,
                norm_unit_offset: true,
                sandwich_norms: true,
                qk_norm: true,
                rope_local_theta: Some(GEMMA3_LOCAL_ROPE_THETA),
                ..Self::default()
            },
        }
    }

    /// Layer kinds where layer `i` is full attention when `(i + 1) % pattern == 0` and
    /// sliding otherwise (Gemma's `sliding_window_pattern`); `pattern` 0 or 1: all full.
    pub fn pattern_layers(layers: usize, pattern: usize) -> Vec<LayerKind> {
        (0..layers)
            .map(|i| {
                if pattern <= 1 || (i + 1) % pattern == 0 {
                    LayerKind::Full
                } else {
                    LayerKind::Sliding
                }
            })
            .collect()
    }

    /// Layer `i`'s kind (full where the config lists none).
    pub fn layer_kind(&self, i: usize) -> LayerKind {
        self.layer_types.get(i).copied().unwrap_or(LayerKind::Full)
    }

    /// The window of layer `i`: `Some(positions)` for a sliding layer.
    pub fn window(&self, i: usize) -> Option<usize> {
        match self.layer_kind(i) {
            LayerKind::Full => None,
            LayerKind::Sliding => self.sliding_window,
        }
    }

    /// Whether any layer slides (the model then keeps a second RoPE table and mask).
    pub fn has_sliding_layers(&self) -> bool {
        self.sliding_window.is_some() && self.layer_types.contains(&LayerKind::Sliding)
    }

    /// Checks the style against a model of `layers` layers; the message names the field
    /// as Hugging Face configs spell it (GGUF readers rename where they differ).
    pub fn check(&self, layers: usize) -> Result<(), String> {
        if !self.layer_types.is_empty() && self.layer_types.len() != layers {
            return Err(format!(
                "layer_types lists {} layers, the model has {layers}",
                self.layer_types.len()
            ));
        }
        if self.layer_types.contains(&LayerKind::Sliding) {
            match self.sliding_window {
                None => {
                    return Err(
                        "layer_types has sliding layers but sliding_window is not set".into(),
                    )
                }
                Some(0) => return Err("sliding_window is 0".into()),
                Some(w) if w > super::config::limits::POSITIONS => {
                    return Err(format!(
                        "sliding_window is {w}, more than the {} positions any supported model has",
                        super::config::limits::POSITIONS
                    ))
                }
                Some(_) => {}
            }
        }
        let positive = |name: &str, x: Option<f64>| match x {
            Some(x) if !(x.is_finite() && x > 0.0) => {
                Err(format!("{name} is {x}, expected a positive number"))
            }
            _ => Ok(()),
        };
        positive("query_pre_attn_scalar", self.query_pre_attn_scalar)?;
        positive("rope_local_base_freq", self.rope_local_theta.map(f64::from))?;
        positive(
            "rope_scaling.factor",
            self.rope_linear_factor.map(f64::from),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_sixth_layer_is_global() {
        let kinds = BlockStyle::pattern_layers(18, GEMMA3_SLIDING_PATTERN);
        let full: Vec<usize> = (0..18).filter(|&i| kinds[i] == LayerKind::Full).collect();
        assert_eq!(full, [5, 11, 17]);
        assert!(BlockStyle::pattern_layers(3, 1)
            .iter()
            .all(|k| *k == LayerKind::Full));
    }

    #[test]
    fn the_check_names_what_is_wrong() {
        let mut s = BlockStyle::for_architecture(Architecture::Gemma3);
        s.layer_types = BlockStyle::pattern_layers(6, 6);
        assert!(s
            .check(6)
            .unwrap_err()
            .contains("sliding_window is not set"));
        s.sliding_window = Some(0);
        assert_eq!(s.check(6).unwrap_err(), "sliding_window is 0");
        s.sliding_window = Some(512);
        assert!(s.check(6).is_ok());
        assert!(s.check(7).unwrap_err().contains("lists 6 layers"));
        s.query_pre_attn_scalar = Some(-1.0);
        assert!(s.check(6).unwrap_err().contains("query_pre_attn_scalar"));
        assert_eq!(s.window(0), Some(512));
        assert_eq!(s.window(5), None);
    }
}
