//! LoRA adapters as the transformer consumes them: one low-rank pair per adapted linear
//! layer, kept apart from the base weights so several adapters (or none) can run on the
//! same base model in memory.

use std::collections::BTreeMap;

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

/// The linear layers of a decoder block that can carry an adapter, with PEFT's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoraTarget {
    QProj,
    KProj,
    VProj,
    OProj,
    GateProj,
    UpProj,
    DownProj,
}

impl LoraTarget {
    pub const ALL: [LoraTarget; 7] = [
        LoraTarget::QProj,
        LoraTarget::KProj,
        LoraTarget::VProj,
        LoraTarget::OProj,
        LoraTarget::GateProj,
        LoraTarget::UpProj,
        LoraTarget::DownProj,
    ];

    /// PEFT's module name (`q_proj`, ...).
    pub fn module_name(self) -> &'static str {
        match self {
            LoraTarget::QProj => "q_proj",
            LoraTarget::KProj => "k_proj",
            LoraTarget::VProj => "v_proj",
            LoraTarget::OProj => "o_proj",
            LoraTarget::GateProj => "gate_proj",
            LoraTarget::UpProj => "up_proj",
            LoraTarget::DownProj => "down_proj",
        }
    }

    /// `self_attn` or `mlp`, the parent module in HF checkpoints.
    pub fn parent(self) -> &'static str {
        match self {
            LoraTarget::QProj | LoraTarget::KProj | LoraTarget::VProj | LoraTarget::OProj => {
                "self_attn"
            }
            _ => "mlp",
        }
    }

    pub fn from_module_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.module_name() == name)
    }
}

/// One adapted linear layer: `y = W x + scale · B (A x)`, A `[r, in]`, B `[out, r]`.
#[derive(Debug, Clone)]
pub struct LoraPair {
    pub a: Tensor,
    pub b: Tensor,
    pub scale: f64,
}

/// The adapters of a whole model, by layer index and target.
#[derive(Debug, Clone, Default)]
pub struct LoraSet {
    pub pairs: BTreeMap<(usize, LoraTarget), LoraPair>,
    /// Dropout on the adapter input while training (0 at inference).
    pub dropout: f32,
}

impl LoraSet {
    pub fn get(&self, layer: usize, target: LoraTarget) -> Option<&LoraPair> {
        self.pairs.get(&(layer, target))
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// A set whose tensors are the current values of trainable variables.
    pub fn from_vars(
        vars: &BTreeMap<(usize, LoraTarget), (Var, Var)>,
        scale: f64,
        dropout: f32,
    ) -> Self {
        let pairs = vars
            .iter()
            .map(|(k, (a, b))| {
                (
                    *k,
                    LoraPair {
                        a: a.as_tensor().clone(),
                        b: b.as_tensor().clone(),
                        scale,
                    },
                )
            })
            .collect();
        Self { pairs, dropout }
    }
}

/// `lora_alpha / r`, or `lora_alpha / sqrt(r)` with rsLoRA.
pub fn lora_scale(alpha: f64, rank: usize, use_rslora: bool) -> f64 {
    if use_rslora {
        alpha / (rank as f64).sqrt()
    } else {
        alpha / rank as f64
    }
}
