//! Before a run starts: how much memory it will need at its peak and how long a step will
//! take, from the model's shape, the run's batch and this machine's measured matmul rate.
//! The memory coefficients and the step's share of the matmul rate come from measuring the
//! trainer on SmolLM2-135M (examples/bench_train.rs); the ETA shown while training uses the
//! measured step time instead.

use std::sync::OnceLock;
use std::time::Instant;

use super::config::RunConfig;
use super::events::Estimate;
use crate::model::segment_attention;
use crate::model::slice_gemm::{gemm_into, Threads};
use crate::model::ModelConfig;

/// f32 values kept for the backward pass per token and layer, in units of the hidden size
/// and the MLP width (fit to the peak RSS of examples/bench_train on SmolLM2-135M: 2108 MiB
/// at 4 × 256 tokens). Attention keeps no `[t, t]` scores and the loss no logits.
const ACT_HIDDEN: f64 = 11.0;
const ACT_MLP: f64 = 2.75;
/// The share of the machine's matmul rate ([`calibrate`]) that a whole training step
/// reaches, counted as in [`estimate`]: the norms, attention, softmax, optimizer and
/// autograd around the products. bench_train at 4 × 256 on SmolLM2-135M, 2-core machine
/// of BENCHMARKS.md: 0.65–0.87 over nine runs.
pub const STEP_EFFICIENCY: f64 = 0.7;
/// The step rate assumed until the probe has run (that machine's).
const FALLBACK_FLOPS: f64 = 140e9;

/// This machine's f32 matmul rate, FLOP/s, once measured.
static MATMUL_FLOPS: OnceLock<Option<f64>> = OnceLock::new();

/// Measures this machine's f32 matmul rate on every core, once per process (a product of
/// a training step's shape, best of eight spread over about 100 ms), so that time estimates
/// follow the machine. It keeps the cores busy meanwhile, and whatever else keeps them
/// busy lowers the figure: call it from a worker thread while the studio is otherwise idle.
/// `None` when the probe could not run.
pub fn calibrate() -> Option<f64> {
    *MATMUL_FLOPS.get_or_init(probe_matmul_flops)
}

/// Whether [`calibrate`] has measured this machine (estimates use a fixed rate until then).
pub fn calibrated() -> bool {
    matches!(MATMUL_FLOPS.get(), Some(Some(_)))
}

/// The rate of `[512, 576] × [576, 1536]`, an MLP projection of SmolLM2 on half a batch.
/// The runs are spaced out so that a moment of contention spoils only some of them.
fn probe_matmul_flops() -> Option<f64> {
    let (m, n, k) = (512, 1536, 576);
    let x = vec![0.5f32; m * k];
    let w = vec![0.25f32; n * k];
    let mut y = vec![0f32; m * n];
    let mut best = f64::INFINITY;
    for _ in 0..8 {
        let t = Instant::now();
        gemm_into(
            &mut y,
            false,
            (m, n, k),
            &x,
            false,
            &w,
            true,
            1.0,
            Threads::All,
        )
        .ok()?;
        best = best.min(t.elapsed().as_secs_f64());
        std::thread::sleep(std::time::Duration::from_millis(8));
    }
    let flops = 2.0 * (m * n * k) as f64 / best;
    (flops.is_finite() && flops > 0.0).then_some(flops)
}

/// FLOP/s a training step runs at on this machine, as counted in [`estimate`].
fn step_flops() -> f64 {
    match MATMUL_FLOPS.get() {
        Some(Some(matmul)) => matmul * STEP_EFFICIENCY,
        _ => FALLBACK_FLOPS,
    }
}

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
    // Attention probabilities each layer keeps for its backward pass: those of whole rows,
    // or up to the cap for rows packed with shorter samples.
    let rows = segment_attention::whole_rows(cfg.training.batch_size, cfg.data.max_seq_len);
    let kept = segment_attention::kept_floats(
        &rows,
        (model.num_attention_heads, model.num_key_value_heads),
    );
    let probabilities = layers * kept.min(segment_attention::KEEP_MAX_FLOATS) as f64 * 4.0;
    let peak = weights + activations + logits + optimizer + probabilities + 300e6;
    let matmul_params = (model.parameter_count() - model.vocab_size * model.hidden_size) as f64
        + model.vocab_size as f64 * h;
    let flops_per_step = 4.0 * matmul_params * tokens * cfg.training.grad_accumulation as f64
        // Causal attention, forward and backward, at most one sample per row (packed rows
        // of shorter samples cost less).
        + 6.0 * layers * b * t * t * h * cfg.training.grad_accumulation as f64;
    Estimate {
        peak_memory_bytes: peak as u64,
        available_memory_bytes: crate::sys::available_memory_bytes().unwrap_or(0),
        seconds_per_step: flops_per_step / step_flops(),
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

    // examples/bench_train on SmolLM2-135M at batch 4 × 256, r = 16: peak RSS 2167 MiB
    // (2.27 GB); the packed 4 × 512 epoch: 3695 MiB (3.87 GB).
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

    #[test]
    fn step_time_follows_the_measured_matmul_rate() {
        let rate = calibrate().expect("the matmul probe runs");
        assert!(rate.is_finite() && rate > 1e9, "{rate} FLOP/s");
        let mut cfg = RunConfig::default();
        cfg.data.max_seq_len = 256;
        cfg.training.batch_size = 4;
        let e = estimate(&smollm2(), &cfg, 4_884_480, 100);
        // 4 × 256 tokens: 4 FLOPs per weight and token over 134M weights (the LM head
        // included), and the attention: about 577 GFLOP.
        let flops = e.seconds_per_step * rate * STEP_EFFICIENCY;
        assert!((5.5e11..6.0e11).contains(&flops), "{flops} FLOP per step");
    }
}
