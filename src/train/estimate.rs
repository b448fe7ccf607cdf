//! Before a run starts: how much memory it will need at its peak and how long a step will
//! take, from the model's shape and the run's batch. The coefficients come from measuring
//! the trainer on SmolLM2-135M (examples/bench_train.rs); the ETA shown while training uses
//! the measured step time instead.

use super::config::RunConfig;
use super::events::Estimate;
use crate::model::ModelConfig;

/// f32 values kept for the backward pass per token and layer, in units of the hidden size
/// and the MLP width (fit to the peak RSS of examples/bench_train on SmolLM2-135M: 2108 MiB
/// at 4 × 256 tokens). Attention keeps no `[t, t]` scores and the loss no logits.
const ACT_HIDDEN: f64 = 11.0;
const ACT_MLP: f64 = 2.75;
/// Effective training throughput of this CPU trainer, FLOP/s (bench_train: 211–226
/// tokens/s on the 2-core machine of BENCHMARKS.md, about 120 GFLOP/s counted as below).
const EFFECTIVE_FLOPS: f64 = 120e9;

pub fn estimate(
    model: &ModelConfig,
    cfg: &RunConfig,
    trainable: usize,
    total_steps: usize,
) -> Estimate {
    let t = cfg.data.max_seq_len as f64;
    let b = cfg.training.batch_size as f64;
    let tokens = b * t;
    let h = model.hidden_size as f64;
    let i = model.intermediate_size as f64;
    let layers = model.num_hidden_layers as f64;
    let weights = model.parameter_count() as f64 * 4.0;
    let per_token_layer = ACT_HIDDEN * h + ACT_MLP * i;
    let activations = tokens * layers * per_token_layer * 4.0;
    // One chunk of logits at a time, during the forward pass only.
    let logits = crate::train::loss::LOSS_CHUNK_ROWS as f64 * model.vocab_size as f64 * 4.0 * 1.25;
    let optimizer = trainable as f64 * 4.0 * 4.0;
    let peak = weights + activations + logits + optimizer + 300e6;
    let matmul_params = (model.parameter_count() - model.vocab_size * model.hidden_size) as f64
        + model.vocab_size as f64 * h;
    let flops_per_step = 4.0 * matmul_params * tokens * cfg.training.grad_accumulation as f64
        // Causal attention, forward and backward, at most one sample per row (packed rows
        // of shorter samples cost less).
        + 6.0 * layers * b * t * t * h * cfg.training.grad_accumulation as f64;
    Estimate {
        peak_memory_bytes: peak as u64,
        available_memory_bytes: crate::sys::available_memory_bytes().unwrap_or(0),
        seconds_per_step: flops_per_step / EFFECTIVE_FLOPS,
        total_steps,
        trainable_parameters: trainable,
    }
}

impl Estimate {
    /// Whether the run fits in the memory the machine has free (unknown counts as fitting).
    pub fn fits(&self) -> bool {
        self.available_memory_bytes == 0 || self.peak_memory_bytes < self.available_memory_bytes
    }

    /// One line for the user.
    pub fn describe(&self) -> String {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        let total_s = self.seconds_per_step * self.total_steps as f64;
        format!(
            "needs about {:.1} GiB at its peak ({:.1} GiB free); about {:.1} s per step, {} steps, {}",
            gib(self.peak_memory_bytes),
            gib(self.available_memory_bytes),
            self.seconds_per_step,
            self.total_steps,
            format_duration(total_s)
        )
    }
}

/// `1 h 05 min`, `3 min 20 s`, `12 s`.
pub fn format_duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{} h {:02} min", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{} min {:02} s", s / 60, s % 60)
    } else {
        format!("{s} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::Architecture;

    fn smollm2() -> ModelConfig {
        ModelConfig {
            architecture: Architecture::Llama,
            vocab_size: 49152,
            hidden_size: 576,
            intermediate_size: 1536,
            num_hidden_layers: 30,
            num_attention_heads: 9,
            num_key_value_heads: 3,
            head_dim: 64,
            rms_norm_eps: 1e-5,
            rope_theta: 100_000.0,
            rope_scaling: None,
            max_position_embeddings: 8192,
            tie_word_embeddings: true,
            attention_bias: false,
            bos_token_id: Some(1),
            eos_token_ids: vec![2],
        }
    }

    // examples/bench_train on SmolLM2-135M at batch 4 × 256, r = 16: peak RSS 2108 MiB
    // (2.21 GB); the packed 4 × 512 epoch: 3535 MiB (3.71 GB).
    #[test]
    fn estimate_is_near_the_measured_peak_and_grows_with_the_batch() {
        let mut cfg = RunConfig::default();
        cfg.data.max_seq_len = 256;
        cfg.training.batch_size = 4;
        let e = estimate(&smollm2(), &cfg, 4_884_480, 100);
        let gb = e.peak_memory_bytes as f64 / 1e9;
        assert!((2.0..2.6).contains(&gb), "{gb} GB");
        cfg.data.max_seq_len = 512;
        let gb = estimate(&smollm2(), &cfg, 4_884_480, 100).peak_memory_bytes as f64 / 1e9;
        assert!((3.5..4.3).contains(&gb), "{gb} GB");
        cfg.data.max_seq_len = 256;
        cfg.training.batch_size = 8;
        let bigger = estimate(&smollm2(), &cfg, 4_884_480, 100);
        assert!(bigger.peak_memory_bytes > e.peak_memory_bytes);
        assert!(bigger.seconds_per_step > e.seconds_per_step);
        assert_eq!(format_duration(3725.0), "1 h 02 min");
    }
}
