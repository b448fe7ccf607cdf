//! What a run will do, worked out once and the same way for everyone who asks: the
//! trainer before its first step, the CLI's estimate, and the Train tab's estimate. The
//! data is loaded, split, tokenized and packed exactly as the trainer does it, so the step
//! count, the tokens of each step and the largest micro-batch are the run's own.

use super::batch::PackedRow;
use super::config::RunConfig;
use super::data::{self, PreparedData};
use super::events::Estimate;
use crate::model::Model;

/// A run's data and schedule.
pub struct RunPlan {
    pub prepared: PreparedData,
    /// The micro-batches of the first epoch (rows of packed samples).
    pub first_epoch: Vec<Vec<PackedRow>>,
    /// Optimizer steps of the whole run.
    pub total_steps: usize,
    /// LoRA parameters the run trains.
    pub trainable_parameters: usize,
    /// What one step computes, from the first epoch.
    pub workload: Workload,
    /// Notes for the user from preparing the data (truncations, skipped records).
    pub notes: Vec<String>,
    /// Whether the run recomputes each layer in the backward.
    pub checkpointing: bool,
    /// Values per token and layer that the run's LoRA dropout masks cover (a bit each).
    pub dropout_mask_values: usize,
}

/// The size of a step's work, for the estimate.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Workload {
    /// Tokens in the largest micro-batch: what the activations at the peak hold.
    pub max_micro_batch_tokens: usize,
    /// Targets (tokens with a label) in the micro-batch that has the most: the rows of
    /// the loss's largest logits chunk.
    pub max_micro_batch_targets: usize,
    /// Mean tokens of an optimizer step (all its micro-batches).
    pub tokens_per_step: f64,
    /// Mean targets of an optimizer step: the rows the LM head multiplies.
    pub targets_per_step: f64,
    /// Mean of Σ (sample length)² over a step's samples: what causal attention costs.
    pub attention_pairs_per_step: f64,
    /// The sample lengths of each row of the largest micro-batch: the attention
    /// probabilities its backward keeps.
    pub largest_micro_batch_samples: Vec<Vec<usize>>,
}

impl Workload {
    /// `rows` rows of `len` tokens per step, one sample each, every token but each row's
    /// last with a target.
    pub fn full_rows(rows: usize, len: usize) -> Self {
        let targets = rows * len.saturating_sub(1);
        Workload {
            max_micro_batch_tokens: rows * len,
            max_micro_batch_targets: targets,
            tokens_per_step: (rows * len) as f64,
            targets_per_step: targets as f64,
            attention_pairs_per_step: (rows * len * len) as f64,
            largest_micro_batch_samples: vec![vec![len]; rows],
        }
    }
}

/// Micro-batches of one epoch.
pub fn epoch_batches(
    prepared: &PreparedData,
    cfg: &RunConfig,
    epoch: usize,
) -> Vec<Vec<PackedRow>> {
    let rows = data::epoch_rows(&prepared.train, cfg, epoch);
    rows.chunks(cfg.training.batch_size.max(1))
        .map(|c| c.to_vec())
        .collect()
}

/// Optimizer steps of the whole run.
pub fn total_steps(cfg: &RunConfig, micro_batches_per_epoch: usize) -> usize {
    let per_epoch = micro_batches_per_epoch
        .div_ceil(cfg.training.grad_accumulation.max(1))
        .max(1);
    match cfg.training.max_steps {
        Some(s) => s.max(1),
        None => ((cfg.training.epochs * per_epoch as f64).ceil() as usize).max(1),
    }
}

/// Loads, tokenizes and packs the run's data and counts its steps. Fails (naming the
/// file) when the config is unusable, the dataset cannot be read, or nothing is left to
/// train on.
pub fn plan(cfg: &RunConfig, model: &Model) -> anyhow::Result<RunPlan> {
    let problems = cfg.validate();
    if !problems.is_empty() {
        anyhow::bail!("the run config is not usable: {}", problems.join("; "));
    }
    let mut notes = Vec::new();
    let templated = super::template::run_model(cfg, model)?;
    let model = match &templated {
        Some(t) => {
            notes.extend(t.warnings.iter().cloned());
            &t.model
        }
        None => model,
    };
    let prepared = data::prepare(cfg, model, &mut |m| notes.push(m))?;
    let first_epoch = epoch_batches(&prepared, cfg, 0);
    let total_steps = total_steps(cfg, first_epoch.len());
    let trainable_parameters = super::adapter::trainable_parameters(model.config(), &cfg.lora);
    let workload = workload(&first_epoch, cfg.training.grad_accumulation.max(1));
    Ok(RunPlan {
        prepared,
        first_epoch,
        total_steps,
        trainable_parameters,
        workload,
        notes,
        checkpointing: cfg.training.gradient_checkpointing,
        dropout_mask_values: super::estimate::dropout_mask_values(model.config(), &cfg.lora),
    })
}

impl RunPlan {
    /// Memory at the peak and time per step for this plan on `model` (as loaded: a
    /// quantized base at its stored size).
    pub fn estimate(&self, model: &Model) -> Estimate {
        let footprint = super::estimate::Footprint {
            weight_bytes: model.weight_bytes(),
            trainable: self.trainable_parameters,
            checkpointing: self.checkpointing,
            dropout_mask_values: self.dropout_mask_values,
        };
        super::estimate::estimate(model.config(), &footprint, self.total_steps, &self.workload)
    }
}

fn workload(micro_batches: &[Vec<PackedRow>], accumulation: usize) -> Workload {
    let mut w = Workload::default();
    let (mut tokens, mut targets, mut pairs) = (0usize, 0usize, 0f64);
    for mb in micro_batches {
        let mb_tokens: usize = mb.iter().map(|r| r.ids.len()).sum();
        if mb_tokens > w.max_micro_batch_tokens {
            w.max_micro_batch_tokens = mb_tokens;
            w.largest_micro_batch_samples = mb.iter().map(sample_lengths).collect();
        }
        let mb_targets: usize = mb.iter().map(|r| r.trained_tokens()).sum();
        w.max_micro_batch_targets = w.max_micro_batch_targets.max(mb_targets);
        tokens += mb_tokens;
        targets += mb_targets;
        pairs += mb
            .iter()
            .flat_map(sample_lengths)
            .map(|n| (n * n) as f64)
            .sum::<f64>();
    }
    let steps = micro_batches.len().div_ceil(accumulation).max(1) as f64;
    w.tokens_per_step = tokens as f64 / steps;
    w.targets_per_step = targets as f64 / steps;
    w.attention_pairs_per_step = pairs / steps;
    w
}

/// The lengths of the samples packed in a row, in order.
fn sample_lengths(row: &PackedRow) -> Vec<usize> {
    let mut out: Vec<usize> = Vec::new();
    for (i, s) in row.segments.iter().enumerate() {
        match out.last_mut() {
            Some(n) if row.segments[i - 1] == *s => *n += 1,
            _ => out.push(1),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(segments: &[u32]) -> PackedRow {
        PackedRow {
            ids: vec![1; segments.len()],
            targets: vec![None; segments.len()],
            positions: vec![0; segments.len()],
            segments: segments.to_vec(),
        }
    }

    #[test]
    fn the_workload_counts_packed_samples_and_the_largest_micro_batch() {
        // Two micro-batches, one step each: [3+2 tokens] and [4 tokens, 1 token].
        let mbs = vec![
            vec![row(&[0, 0, 0, 1, 1])],
            vec![row(&[0, 0, 0, 0]), row(&[0])],
        ];
        let w = workload(&mbs, 1);
        assert_eq!(w.max_micro_batch_tokens, 5);
        assert_eq!(w.largest_micro_batch_samples, vec![vec![3, 2]]);
        assert_eq!(w.tokens_per_step, 5.0);
        // (9 + 4) and (16 + 1), over two steps.
        assert_eq!(w.attention_pairs_per_step, 15.0);
        // With accumulation 2, one step holds both.
        let w = workload(&mbs, 2);
        assert_eq!(w.tokens_per_step, 10.0);
        assert_eq!(w.attention_pairs_per_step, 30.0);
    }
}
