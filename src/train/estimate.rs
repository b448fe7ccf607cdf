//! Before a run starts: how much memory it will need at its peak and how long a step will
//! take, from the model's shape, the run's batch and this machine's measured matmul rate.
//! The memory coefficients and the step's share of the matmul rate come from measuring the
//! trainer on SmolLM2-135M (examples/bench_train.rs); the ETA shown while training uses the
//! measured step time instead.

use std::sync::OnceLock;
use std::time::Instant;

use super::events::Estimate;
use super::plan::Workload;
use crate::model::ModelConfig;
use crate::ops::segment_attention;
use crate::ops::slice_gemm::{gemm_into, Threads};

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

/// The memory at the peak and the time per step of a run of `total_steps` steps, each of
/// `workload`'s size (from [`super::plan`], the trainer's own packing), at this machine's
/// measured rate.
pub fn estimate(
    model: &ModelConfig,
    trainable: usize,
    total_steps: usize,
    workload: &Workload,
) -> Estimate {
    estimate_at(model, trainable, total_steps, workload, step_flops())
}

/// [`estimate`] at a given step rate (FLOP/s as counted here).
fn estimate_at(
    model: &ModelConfig,
    trainable: usize,
    total_steps: usize,
    workload: &Workload,
    flops_per_s: f64,
) -> Estimate {
    let h = model.hidden_size as f64;
    let i = model.intermediate_size as f64;
    let layers = model.num_hidden_layers as f64;
    let weights = model.parameter_count() as f64 * 4.0;
    let per_token_layer = ACT_HIDDEN * h + ACT_MLP * i;
    let activations = workload.max_micro_batch_tokens as f64 * layers * per_token_layer * 4.0;
    // One chunk of logits at a time, during the forward pass only.
    let logits = crate::train::loss::LOSS_CHUNK_ROWS as f64 * model.vocab_size as f64 * 4.0 * 1.25;
    // AdamW's two moments, the gradients and the values of every adapter tensor.
    let optimizer = trainable as f64 * 4.0 * 4.0;
    // Attention probabilities each layer keeps for its backward pass, up to the cap.
    let spans: segment_attention::Spans = std::sync::Arc::new(
        workload
            .largest_micro_batch_samples
            .iter()
            .map(|row| {
                let mut start = 0;
                row.iter()
                    .map(|&len| {
                        start += len;
                        (start - len, len)
                    })
                    .collect()
            })
            .collect(),
    );
    let kept = segment_attention::kept_floats(
        &spans,
        (model.num_attention_heads, model.num_key_value_heads),
    );
    let probabilities = layers * kept.min(segment_attention::KEEP_MAX_FLOATS) as f64 * 4.0;
    let peak = weights + activations + logits + optimizer + probabilities + 300e6;
    let matmul_params = (model.parameter_count() - model.vocab_size * model.hidden_size) as f64
        + model.vocab_size as f64 * h;
    let flops_per_step = 4.0 * matmul_params * workload.tokens_per_step
        // Causal attention, forward and backward, within each packed sample.
        + 6.0 * layers * workload.attention_pairs_per_step * h;
    Estimate {
        peak_memory_bytes: peak as u64,
        available_memory_bytes: crate::sys::available_memory_bytes().unwrap_or(0),
        seconds_per_step: flops_per_step / flops_per_s,
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

    /// `rows` rows of `len` tokens, one sample each, per micro-batch.
    fn full_rows(rows: usize, len: usize) -> Workload {
        Workload {
            max_micro_batch_tokens: rows * len,
            tokens_per_step: (rows * len) as f64,
            attention_pairs_per_step: (rows * len * len) as f64,
            largest_micro_batch_samples: vec![vec![len]; rows],
        }
    }

    // examples/bench_train on SmolLM2-135M at batch 4 × 256, r = 16: peak RSS 2167 MiB
    // (2.27 GB); the packed 4 × 512 epoch: 3695 MiB (3.87 GB).
    #[test]
    fn estimate_is_near_the_measured_peak_and_grows_with_the_batch() {
        let e = estimate(&smollm2(), 4_884_480, 100, &full_rows(4, 256));
        let gb = e.peak_memory_bytes as f64 / 1e9;
        assert!((2.0..2.6).contains(&gb), "{gb} GB");
        let gb =
            estimate(&smollm2(), 4_884_480, 100, &full_rows(4, 512)).peak_memory_bytes as f64 / 1e9;
        assert!((3.5..4.3).contains(&gb), "{gb} GB");
        let bigger = estimate(&smollm2(), 4_884_480, 100, &full_rows(8, 256));
        assert!(bigger.peak_memory_bytes > e.peak_memory_bytes);
        assert!(bigger.seconds_per_step > e.seconds_per_step);
        assert_eq!(format_duration(3725.0), "1 h 02 min");
    }

    /// The FLOPs a step is charged: counted here by hand for SmolLM2-135M at 4 × 256.
    #[test]
    fn step_time_is_the_steps_flops_at_the_given_rate() {
        let m = smollm2();
        let e = estimate_at(&m, 0, 10, &full_rows(4, 256), 1e11);
        // 134.5M weights (the tied LM head counted once as a product), 4 FLOPs per weight
        // and token, 1024 tokens; attention: 6 · 30 layers · 4 · 256² pairs · 576.
        let weights = 134_515_008.0;
        let expected = 4.0 * weights * 1024.0 + 6.0 * 30.0 * 4.0 * 65536.0 * 576.0;
        let got = e.seconds_per_step * 1e11;
        assert!(
            (got - expected).abs() / expected < 1e-9,
            "{got} vs {expected}"
        );
        // Packing four 64-token samples into each row costs a quarter of the attention.
        let mut packed = full_rows(4, 256);
        packed.attention_pairs_per_step /= 4.0;
        let p = estimate_at(&m, 0, 10, &packed, 1e11);
        assert!(p.seconds_per_step < e.seconds_per_step);
    }

    #[test]
    fn the_probe_measures_a_plausible_matmul_rate() {
        let rate = calibrate().expect("the matmul probe runs");
        // Between one slow core (1 GFLOP/s) and a large server (100 TFLOP/s).
        assert!((1e9..1e14).contains(&rate), "{rate} FLOP/s");
        assert!(calibrated());
    }
}
