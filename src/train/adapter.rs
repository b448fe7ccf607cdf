//! The trainable LoRA adapter: one (A, B) pair of `Var`s per adapted layer, initialised as
//! PEFT does (A Kaiming-uniform, B zero), with PEFT names for saving and resuming.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor, Var};
use rand::{Rng, SeedableRng};

use super::config::LoraSection;
use crate::adapter::{self, linear_shape, AdapterConfig};
use crate::model::lora::{LoraSet, LoraTarget};
use crate::model::ModelConfig;

pub struct TrainableAdapter {
    pub vars: BTreeMap<(usize, LoraTarget), (Var, Var)>,
    pub scale: f64,
    pub dropout: f32,
    pub config: AdapterConfig,
}

impl TrainableAdapter {
    /// Fresh adapter: `A ~ U(-1/sqrt(in), 1/sqrt(in))` (PEFT's `kaiming_uniform_(a=sqrt(5))`),
    /// `B = 0`, so the adapted model starts equal to the base.
    pub fn init(
        model: &ModelConfig,
        lora: &LoraSection,
        base_name: Option<String>,
        seed: u64,
        device: &Device,
    ) -> candle_core::Result<Self> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x4C6F_5241);
        let mut vars = BTreeMap::new();
        for layer in 0..model.num_hidden_layers {
            for &target in &lora.targets {
                let (out_f, in_f) = linear_shape(model, target);
                let bound = 1.0 / (in_f as f64).sqrt();
                let a: Vec<f32> = (0..lora.rank * in_f)
                    .map(|_| rng.random_range(-bound..bound) as f32)
                    .collect();
                let a = Var::from_tensor(&Tensor::from_vec(a, (lora.rank, in_f), device)?)?;
                let b = Var::zeros((out_f, lora.rank), candle_core::DType::F32, device)?;
                vars.insert((layer, target), (a, b));
            }
        }
        let config = AdapterConfig::new(
            base_name,
            lora.rank,
            lora.alpha,
            lora.dropout,
            lora.use_rslora,
            &lora.targets,
        );
        Ok(Self {
            vars,
            scale: config.scale(),
            dropout: lora.dropout,
            config,
        })
    }

    /// Replaces the values with those of a saved adapter (resume).
    pub fn load_values(
        &mut self,
        dir: &std::path::Path,
        model: &ModelConfig,
        device: &Device,
    ) -> anyhow::Result<()> {
        let loaded = adapter::read_adapter(dir, model, device)?;
        for (key, (a, b)) in &self.vars {
            let pair = loaded.lora.pairs.get(key).ok_or_else(|| {
                anyhow::anyhow!(
                    "{}: checkpoint lacks layer {} {}",
                    dir.display(),
                    key.0,
                    key.1.module_name()
                )
            })?;
            a.set(&pair.a)?;
            b.set(&pair.b)?;
        }
        Ok(())
    }

    /// The current values as the transformer consumes them.
    pub fn lora_set(&self) -> LoraSet {
        LoraSet::from_vars(&self.vars, self.scale, self.dropout)
    }

    /// (A, B) tensors by layer and target, for saving.
    pub fn pairs(&self) -> BTreeMap<(usize, LoraTarget), (Tensor, Tensor)> {
        self.vars
            .iter()
            .map(|(k, (a, b))| (*k, (a.as_tensor().clone(), b.as_tensor().clone())))
            .collect()
    }

    /// Every variable with its PEFT name, in a fixed order.
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let mut out = Vec::with_capacity(self.vars.len() * 2);
        for ((layer, target), (a, b)) in &self.vars {
            out.push((adapter::peft_key(*layer, *target, 'A'), a.clone()));
            out.push((adapter::peft_key(*layer, *target, 'B'), b.clone()));
        }
        out
    }

    pub fn parameter_count(&self) -> usize {
        self.vars
            .values()
            .map(|(a, b)| a.elem_count() + b.elem_count())
            .sum()
    }
}

/// LoRA parameters a run with `lora` trains on `model`: `r × (in + out)` for every
/// targeted layer, as [`TrainableAdapter::init`] creates them.
pub fn trainable_parameters(model: &ModelConfig, lora: &LoraSection) -> usize {
    let per_layer: usize = lora
        .targets
        .iter()
        .map(|&t| {
            let (out_f, in_f) = linear_shape(model, t);
            lora.rank * (in_f + out_f)
        })
        .sum();
    per_layer * model.num_hidden_layers
}
