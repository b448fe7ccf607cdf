//! The run's optimizer and schedule settings as the Hugging Face `Trainer` spells them,
//! resolved once for both engines (warmup in steps, schedule names, eval and save
//! strategies), and the keys both engines take under the `TrainingArguments` names.

use serde_yaml_ng::{Mapping, Value};

use crate::train::config::Schedule;
use crate::train::RunConfig;

/// Settings both engines take in the same units.
#[derive(Debug, Clone, PartialEq)]
pub struct Hyper {
    pub learning_rate: f64,
    /// `transformers.SchedulerType`: `cosine`, `linear`, or `constant_with_warmup` (the
    /// studio's constant schedule warms up too; the Trainer's `constant` would not).
    pub scheduler: &'static str,
    /// Warmup in optimizer steps: the run's `warmup_steps`, else `warmup_ratio` of the
    /// steps the studio plans. An integer, which every `transformers` version reads the
    /// same way (v5 reads a float below 1 as a ratio, v4 refuses it).
    pub warmup_steps: usize,
    pub epochs: f64,
    pub max_steps: Option<usize>,
    pub micro_batch_size: usize,
    pub grad_accumulation: usize,
    pub weight_decay: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub max_grad_norm: f64,
    pub seed: u64,
    pub logging_steps: usize,
    /// Steps between evaluations; `None`: at the end only.
    pub eval_steps: Option<usize>,
    /// Steps between checkpoints; `None`: at the end only.
    pub save_steps: Option<usize>,
    pub gradient_checkpointing: bool,
    /// Settings for a machine without a GPU.
    pub cpu: bool,
}

impl Hyper {
    pub fn new(cfg: &RunConfig, planned_steps: usize, cpu: bool) -> Self {
        let o = &cfg.optim;
        let t = &cfg.training;
        let warmup_steps = o.warmup_steps.unwrap_or_else(|| {
            let ratio = if o.warmup_ratio.is_finite() {
                o.warmup_ratio.clamp(0.0, 1.0)
            } else {
                0.0
            };
            (ratio * planned_steps as f64).ceil() as usize
        });
        Hyper {
            learning_rate: o.learning_rate,
            scheduler: match o.schedule {
                Schedule::Cosine => "cosine",
                Schedule::Linear => "linear",
                Schedule::Constant => "constant_with_warmup",
            },
            warmup_steps,
            epochs: t.epochs,
            max_steps: t.max_steps,
            micro_batch_size: t.batch_size,
            grad_accumulation: t.grad_accumulation,
            weight_decay: o.weight_decay,
            beta1: o.beta1,
            beta2: o.beta2,
            eps: o.eps,
            max_grad_norm: o.max_grad_norm,
            seed: t.seed,
            logging_steps: t.log_every.max(1),
            eval_steps: (t.eval_every > 0).then_some(t.eval_every),
            save_steps: (t.save_every > 0).then_some(t.save_every),
            gradient_checkpointing: t.gradient_checkpointing,
            cpu,
        }
    }

    /// The keys LLaMA-Factory and axolotl both spell as `TrainingArguments` does.
    pub fn put_trainer_args(&self, m: &mut Mapping) {
        put(m, "learning_rate", self.learning_rate);
        put(m, "warmup_steps", self.warmup_steps as u64);
        if let Some(s) = self.max_steps {
            put(m, "max_steps", s as u64);
        }
        put(
            m,
            "gradient_accumulation_steps",
            self.grad_accumulation as u64,
        );
        put(m, "weight_decay", self.weight_decay);
        put(m, "adam_beta1", self.beta1);
        put(m, "adam_beta2", self.beta2);
        put(m, "adam_epsilon", self.eps);
        put(m, "max_grad_norm", self.max_grad_norm);
        put(m, "seed", self.seed);
        put(m, "logging_steps", self.logging_steps as u64);
        match self.eval_steps {
            Some(s) => {
                put(m, "eval_strategy", "steps");
                put(m, "eval_steps", s as u64);
            }
            None => put(m, "eval_strategy", "no"),
        }
        match self.save_steps {
            Some(s) => {
                put(m, "save_strategy", "steps");
                put(m, "save_steps", s as u64);
            }
            None => put(m, "save_strategy", "no"),
        }
        put(m, "output_dir", "output");
    }
}

/// Sets `key` in a YAML mapping.
pub fn put(m: &mut Mapping, key: &str, value: impl Into<Value>) {
    m.insert(Value::String(key.to_string()), value.into());
}

/// An f32 setting as its shortest decimal (0.05, not 0.05000000074505806 as widening
/// gives), which is what the user typed.
pub fn f32_as_typed(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

/// A YAML sequence of strings.
pub fn strings<'a>(items: impl IntoIterator<Item = &'a str>) -> Value {
    Value::Sequence(items.into_iter().map(|s| Value::String(s.into())).collect())
}

/// Writes an engine's config file (`train.yaml`, `config.yaml`) into the project folder
/// `dir`: a comment header saying what it is and how it is started, then `m`.
pub fn write_config(
    dir: &std::path::Path,
    engine: super::Engine,
    run_name: &str,
    m: &Mapping,
) -> anyhow::Result<()> {
    let file = engine.config_file();
    let mut text = format!(
        "# {} config of the studio run `{run_name}`: {}\n\
         # README.md says which settings map one to one and which do not.\n",
        engine.label(),
        super::launch::single_gpu_command(engine)
    );
    text.push_str(&serde_yaml_ng::to_string(m)?);
    crate::fsio::write_bytes_atomic(&dir.join(file), text.as_bytes())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_ratio_becomes_steps_and_constant_keeps_its_warmup() {
        let mut cfg = RunConfig::default();
        cfg.optim.warmup_ratio = 0.05;
        cfg.optim.schedule = Schedule::Constant;
        let h = Hyper::new(&cfg, 110, false);
        assert_eq!(h.warmup_steps, 6);
        assert_eq!(h.scheduler, "constant_with_warmup");
        cfg.optim.warmup_steps = Some(3);
        assert_eq!(Hyper::new(&cfg, 110, false).warmup_steps, 3);
        cfg.training.eval_every = 0;
        let h = Hyper::new(&cfg, 110, false);
        let mut m = Mapping::new();
        h.put_trainer_args(&mut m);
        assert_eq!(m.get("eval_strategy"), Some(&Value::from("no")));
        assert!(m.get("eval_steps").is_none());
        assert_eq!(m.get("save_steps"), Some(&Value::from(100u64)));
    }
}
