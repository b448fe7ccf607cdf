//! Before a run starts: how much memory it will need at its peak and how long a step will
//! take, from the model's shape, the run's batch and this machine's measured matmul rate.
//! The memory coefficients come from measuring the trainer on SmolLM2-135M
//! (examples/bench_train.rs). The step's share of the matmul rate differs between CPUs
//! and between data (0.72–1.18 on a Zen 2, 0.88–1.2 on a Zen 4), so each run on this CPU
//! measures it and keeps it in `step-efficiency.json` in the data directory
//! ([`learn_step_time`]); until a run has, a fixed share is assumed. The ETA shown while
//! training uses the measured step time.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::events::Estimate;
use super::plan::Workload;
use crate::model::ModelConfig;
use crate::ops::segment_attention;
use crate::ops::slice_gemm::{gemm_into, Threads};

/// Measured activations over the tensors [`saved_floats_per_token_layer`] counts (the
/// norms' per-row statistics, allocator rounding): bench_train at 1, 2 and 4 rows of 256
/// tokens put each row at 1.060× the count on SmolLM2-135M and 1.067× on Gemma 3 270M.
const ACTIVATION_OVERHEAD: f64 = 1.065;
/// With gradient checkpointing, `[tokens, hidden]` tensors alive besides the layer inputs
/// and the recomputed layer: the gradient at the layer's output, at its input, and the
/// input's tracked copy.
const CHECKPOINT_EXTRA_HIDDEN: f64 = 3.0;
/// The process around the step: code, thread stacks, the data (bench_train's peaks less
/// everything else counted here: 24–25 MiB on both models above).
const RUNTIME_BYTES: f64 = 26e6;
/// What the loaded tokenizer and the file's vocabulary metadata keep per vocabulary
/// token (the resident memory after loading: 54 MiB for SmolLM2's 49K tokens, 366 MiB
/// for Gemma 3's 262K, less their RoPE tables).
const VOCABULARY_BYTES_PER_TOKEN: f64 = 1220.0;
/// The share of the machine's matmul rate ([`calibrate`]) that a whole training step
/// reaches, counted as in [`estimate`]: the norms, attention, softmax, optimizer and
/// autograd around the products, assumed on a CPU no run has measured yet. It depends on
/// the data as well as the CPU: the identity example (short samples packed into rows,
/// BENCHMARKS.md) measured 0.88 on a Zen 4 and 0.72 on a Zen 2, where bench_train's full
/// rows of random tokens measured 0.85–0.94 on SmolLM2-135M and 1.01–1.18 on the 0.5B
/// and 8B shapes (the step's own kernels beat the probe's single gemm call). The middle
/// of the real-data runs puts a first estimate within about 10 % of either.
pub const STEP_EFFICIENCY: f64 = 0.8;
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
fn step_flops(checkpointing: bool) -> f64 {
    match MATMUL_FLOPS.get() {
        Some(Some(matmul)) => matmul * step_efficiency(checkpointing),
        _ => FALLBACK_FLOPS,
    }
}

/// The file that keeps the step efficiency measured by this machine's runs.
pub const LEARNED_FILE: &str = "step-efficiency.json";
/// Runs remembered per CPU and mode; the estimate takes their median.
const LEARNED_RUNS: usize = 5;
/// A measured share outside this range is a measurement gone wrong (a step paused, a
/// machine under load), not the machine.
const PLAUSIBLE_EFFICIENCY: std::ops::RangeInclusive<f64> = 0.05..=5.0;
/// Steps shorter than this are mostly overhead (a tiny model's), not matmuls: they teach
/// nothing about the steps of real models.
const MIN_LEARNED_STEP_S: f64 = 0.25;

/// Step efficiencies measured by runs, per CPU and mode (`"<cpu> / plain"`,
/// `"<cpu> / checkpointing"`), newest last.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Learned {
    runs: BTreeMap<String, Vec<f64>>,
}

impl Learned {
    fn read(path: &Path) -> Self {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default()
    }

    fn efficiency(&self, key: &str) -> Option<f64> {
        let mut runs: Vec<f64> = self
            .runs
            .get(key)?
            .iter()
            .copied()
            .filter(|e| PLAUSIBLE_EFFICIENCY.contains(e))
            .collect();
        if runs.is_empty() {
            return None;
        }
        runs.sort_by(f64::total_cmp);
        Some(runs[runs.len() / 2])
    }

    fn add(&mut self, key: &str, efficiency: f64) {
        let runs = self.runs.entry(key.to_string()).or_default();
        runs.push(efficiency);
        let extra = runs.len().saturating_sub(LEARNED_RUNS);
        runs.drain(..extra);
    }
}

/// How [`estimate`] counts a step's FLOPs (2: the LM head over the rows with a target,
/// the embedding not at all); efficiencies learned under another count are not used.
const FLOP_COUNT_VERSION: u32 = 2;

fn learned_key(checkpointing: bool) -> String {
    let mode = if checkpointing {
        "checkpointing"
    } else {
        "plain"
    };
    format!(
        "{} / {mode} / count {FLOP_COUNT_VERSION}",
        crate::sys::cpu_model()
    )
}

fn learned_path() -> PathBuf {
    crate::paths::data_dir().join(LEARNED_FILE)
}

/// What this process knows of the learned efficiencies (read from disk once).
fn learned() -> &'static Mutex<Learned> {
    static LEARNED: OnceLock<Mutex<Learned>> = OnceLock::new();
    LEARNED.get_or_init(|| Mutex::new(Learned::read(&learned_path())))
}

/// The share of the matmul rate a step reaches on this CPU: what its runs measured, else
/// [`STEP_EFFICIENCY`].
pub fn step_efficiency(checkpointing: bool) -> f64 {
    let learned = learned().lock().unwrap_or_else(|p| p.into_inner());
    learned
        .efficiency(&learned_key(checkpointing))
        .unwrap_or(STEP_EFFICIENCY)
}

/// The efficiency a run measured: the one its estimate assumed, scaled by how much faster
/// or slower its steps were than estimated. `None` for figures that cannot be one.
fn implied_efficiency(assumed: f64, estimated_s: f64, measured_s: f64) -> Option<f64> {
    let e = assumed * estimated_s / measured_s;
    (e.is_finite() && PLAUSIBLE_EFFICIENCY.contains(&e)).then_some(e)
}

/// Records what a run measured: its steps took `measured_s` (the median step) where the
/// estimate made with `assumed` efficiency said `estimated_s`. Later estimates on this CPU
/// use the median of the last runs. Only with the matmul probe measured (an estimate at
/// the fallback rate says nothing of this machine); a failed write is logged, not fatal.
pub fn learn_step_time(assumed: f64, estimated_s: f64, measured_s: f64, checkpointing: bool) {
    if !calibrated() || estimated_s.min(measured_s) < MIN_LEARNED_STEP_S {
        return;
    }
    let Some(e) = implied_efficiency(assumed, estimated_s, measured_s) else {
        return;
    };
    let key = learned_key(checkpointing);
    let mut learned = learned().lock().unwrap_or_else(|p| p.into_inner());
    learned.add(&key, e);
    tracing::info!(
        "step time: estimated {estimated_s:.2} s, measured {measured_s:.2} s; this CPU's step efficiency is now {:.2} ({key})",
        learned.efficiency(&key).unwrap_or(e)
    );
    let path = learned_path();
    let text = serde_json::to_string_pretty(&*learned).unwrap_or_default();
    if let Err(e) = crate::fsio::write_bytes_atomic(&path, text.as_bytes()) {
        tracing::warn!("could not keep the measured step time: {e}");
    }
}

/// What the estimate needs to know about the base and the run besides its data.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Footprint {
    /// Bytes the base's weights hold as loaded (a quantized file's own size; `4 ×`
    /// parameters for f32).
    pub weight_bytes: usize,
    /// LoRA parameters trained.
    pub trainable: usize,
    /// Whether each layer is recomputed in the backward (gradient checkpointing).
    pub checkpointing: bool,
    /// Values per token and layer that LoRA dropout's masks cover, one bit each
    /// ([`dropout_mask_values`]).
    pub dropout_mask_values: usize,
}

impl Footprint {
    /// An f32 base of `model`'s shape, without dropout.
    pub fn f32_base(model: &ModelConfig, trainable: usize) -> Self {
        Self {
            weight_bytes: model.parameter_count().saturating_mul(4),
            trainable,
            checkpointing: false,
            dropout_mask_values: 0,
        }
    }

    /// A run of `lora` on a base of `model`'s shape whose weights hold `weight_bytes`.
    pub fn for_run(
        model: &ModelConfig,
        weight_bytes: usize,
        lora: &super::config::LoraSection,
        checkpointing: bool,
    ) -> Self {
        Self {
            weight_bytes,
            trainable: super::adapter::trainable_parameters(model, lora),
            checkpointing,
            dropout_mask_values: dropout_mask_values(model, lora),
        }
    }
}

/// f32 values per token and layer that the autograd graph keeps for the backward pass:
/// every op's output in the layer (the products keep nothing else; attention's
/// probabilities are counted apart). Counted from the layer's code in
/// `model::transformer`: the input norm, the attention output projection, the residual
/// sum, the MLP norm, the down projection and the block's output are hidden-sized (and
/// Gemma's norms after attention and after the MLP); the query, its rotated copy and the
/// attention output are query-sized; the key, value and rotated key kv-sized (and the
/// per-head norms of query and key); the gate, up and gated product MLP-sized.
pub fn saved_floats_per_token_layer(model: &ModelConfig) -> f64 {
    let h = model.hidden_size as f64;
    let q = model.num_attention_heads as f64 * model.head_dim as f64;
    let kv = model.num_key_value_heads as f64 * model.head_dim as f64;
    let mlp = model.intermediate_size as f64;
    let norms_after = if model.style.sandwich_norms { 2.0 } else { 0.0 };
    let qk_norm = if model.style.qk_norm { 1.0 } else { 0.0 };
    (6.0 + norms_after) * h + (3.0 + qk_norm) * q + (3.0 + qk_norm) * kv + 3.0 * mlp
}

/// Values per token and layer of LoRA dropout's masks (one bit each: `ops::dropout`): one
/// per adapted projection, the width of its input (none without dropout).
pub fn dropout_mask_values(model: &ModelConfig, lora: &super::config::LoraSection) -> usize {
    if lora.dropout <= 0.0 {
        return 0;
    }
    lora.targets
        .iter()
        .map(|&t| crate::adapter::linear_shape(model, t).1)
        .sum()
}

/// The memory at the peak and the time per step of a run of `total_steps` steps, each of
/// `workload`'s size (from [`super::plan`], the trainer's own packing), at this machine's
/// measured rate.
pub fn estimate(
    model: &ModelConfig,
    footprint: &Footprint,
    total_steps: usize,
    workload: &Workload,
) -> Estimate {
    estimate_at(
        model,
        footprint,
        total_steps,
        workload,
        step_flops(footprint.checkpointing),
    )
}

/// [`estimate`] at a given step rate (FLOP/s as counted here).
fn estimate_at(
    model: &ModelConfig,
    footprint: &Footprint,
    total_steps: usize,
    workload: &Workload,
    flops_per_s: f64,
) -> Estimate {
    let h = model.hidden_size as f64;
    let layers = model.num_hidden_layers as f64;
    let tokens = workload.max_micro_batch_tokens as f64;
    let weights = footprint.weight_bytes as f64;
    let per_token_layer = ACTIVATION_OVERHEAD
        * (saved_floats_per_token_layer(model) + footprint.dropout_mask_values as f64 / 32.0);
    // Every layer's saved tensors; with checkpointing, each layer's input, one layer's
    // saved tensors while it is recomputed and their gradients as its backward runs, and
    // the gradient flowing between layers.
    let activations = if footprint.checkpointing {
        tokens * (layers * h + 2.0 * per_token_layer + CHECKPOINT_EXTRA_HIDDEN * h) * 4.0
    } else {
        tokens * layers * per_token_layer * 4.0
    };
    // One chunk of logits (the loss's buffer, kept between chunks and steps).
    let chunk_rows = workload
        .max_micro_batch_targets
        .min(crate::train::loss::LOSS_CHUNK_ROWS) as f64;
    let logits = chunk_rows * model.vocab_size as f64 * 4.0;
    // AdamW's two moments, the gradients and the values of every adapter tensor.
    let optimizer = footprint.trainable as f64 * 4.0 * 4.0;
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
    let layers_keeping = if footprint.checkpointing { 1.0 } else { layers };
    let probabilities = layers_keeping * kept.min(segment_attention::KEEP_MAX_FLOATS) as f64 * 4.0;
    // The training products' dequantized panel, for a base not stored as f32.
    let panel = if footprint.weight_bytes < model.parameter_count().saturating_mul(4) {
        crate::ops::frozen_weight::PANEL_BYTES as f64
    } else {
        0.0
    };
    // The logits buffer is kept across the step (and steps), so the probabilities a
    // layer keeps for its backward come on top of it, with checkpointing too.
    let transient = logits + probabilities;
    // The tokenizer and vocabulary, and the RoPE tables (cos and sin per position, for
    // each layer kind with its own base).
    let rope_kinds = if crate::model::rope::local_inverse_frequencies(model).is_some() {
        2.0
    } else {
        1.0
    };
    let rope_positions = crate::model::rope::table_positions(model.max_position_embeddings);
    let loaded = model.vocab_size as f64 * VOCABULARY_BYTES_PER_TOKEN
        + rope_kinds * rope_positions as f64 * model.head_dim as f64 * 4.0;
    let peak = weights + activations + transient + optimizer + panel + loaded + RUNTIME_BYTES;
    // The LM head multiplies only the rows that have a target.
    let head_params = model.vocab_size as f64 * h;
    let layer_params = model.parameter_count() as f64
        - head_params * if model.tie_word_embeddings { 1.0 } else { 2.0 };
    // Forward 2 and backward 2 FLOPs per weight and token (no weight gradient); a
    // recomputed layer adds its forward again.
    let passes = if footprint.checkpointing { 6.0 } else { 4.0 };
    let attention_passes = if footprint.checkpointing { 8.0 } else { 6.0 };
    let flops_per_step = passes * layer_params * workload.tokens_per_step
        + 4.0 * head_params * workload.targets_per_step
        // Causal attention, forward and backward, within each packed sample.
        + attention_passes * layers * workload.attention_pairs_per_step * h;
    Estimate {
        peak_memory_bytes: peak as u64,
        available_memory_bytes: crate::sys::available_memory_bytes().unwrap_or(0),
        seconds_per_step: flops_per_step / flops_per_s,
        total_steps,
        trainable_parameters: footprint.trainable,
    }
}

/// The peak memory of a run with the default settings (batch, sequence length and LoRA
/// of [`super::RunConfig::default`], every row full) on a base of `model`'s shape whose
/// weights hold `weight_bytes`, without and with gradient checkpointing: what the Models
/// tab shows before any dataset is chosen.
pub fn default_run_peak_bytes(model: &ModelConfig, weight_bytes: u64) -> (u64, u64) {
    let cfg = super::RunConfig::default();
    let (rows, len) = (cfg.training.batch_size, cfg.data.max_seq_len);
    let workload = Workload::full_rows(rows, len);
    let mut footprint = Footprint::for_run(model, weight_bytes as usize, &cfg.lora, false);
    let plain = estimate_at(model, &footprint, 0, &workload, FALLBACK_FLOPS).peak_memory_bytes;
    footprint.checkpointing = true;
    let ckpt = estimate_at(model, &footprint, 0, &workload, FALLBACK_FLOPS).peak_memory_bytes;
    (plain, ckpt)
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
            style: Default::default(),
        }
    }

    fn full_rows(rows: usize, len: usize) -> Workload {
        Workload::full_rows(rows, len)
    }

    /// google/gemma-3-270m's shape.
    fn gemma3_270m() -> ModelConfig {
        let mut style = crate::model::config::BlockStyle::for_architecture(Architecture::Gemma3);
        style.sliding_window = Some(512);
        ModelConfig {
            architecture: Architecture::Gemma3,
            vocab_size: 262_144,
            hidden_size: 640,
            intermediate_size: 2048,
            num_hidden_layers: 18,
            num_attention_heads: 4,
            num_key_value_heads: 1,
            head_dim: 256,
            rms_norm_eps: 1e-6,
            rope_theta: 1_000_000.0,
            rope_scaling: None,
            max_position_embeddings: 32_768,
            tie_word_embeddings: true,
            attention_bias: false,
            bos_token_id: Some(2),
            eos_token_ids: vec![1],
            style,
        }
    }

    fn mib(e: &Estimate) -> f64 {
        e.peak_memory_bytes as f64 / (1024.0 * 1024.0)
    }

    /// Each estimate within 15 % of the peak RSS examples/bench_train measured.
    fn assert_within_15_percent(cases: &[(&str, Estimate, f64)]) {
        for (what, e, measured) in cases {
            let off = mib(e) / measured - 1.0;
            assert!(
                off.abs() < 0.15,
                "{what}: estimated {:.0} MiB, measured {measured} MiB ({:+.1} %)",
                mib(e),
                100.0 * off
            );
        }
    }

    // examples/bench_train at r = 16 on every projection, no dropout (Intel Xeon family 6
    // model 167, 2 cores, 2026-12-06): SmolLM2-135M, its Q4_1 file (92.1 MiB of weights)
    // at 1, 2 and 4 rows of 256 tokens 647, 1059 and 1776 MiB, 495 MiB with
    // checkpointing at 4 rows; dequantized to f32, 2294 MiB at 4 rows. Gemma 3 270M's
    // Q4_K_M file (235 MiB of weights): 1254, 1829 and 2462 MiB, 1384 MiB with
    // checkpointing.
    #[test]
    fn quantized_bases_and_checkpointing_are_estimated_within_15_percent() {
        let smol = smollm2();
        let q4_1 = Footprint {
            weight_bytes: (92.1 * 1024.0 * 1024.0) as usize,
            ..Footprint::f32_base(&smol, 4_884_480)
        };
        let ckpt = Footprint {
            checkpointing: true,
            ..q4_1
        };
        let gemma = gemma3_270m();
        let g = Footprint {
            weight_bytes: 235 << 20,
            ..Footprint::f32_base(&gemma, 3_796_992)
        };
        let g_ckpt = Footprint {
            checkpointing: true,
            ..g
        };
        let at =
            |m: &ModelConfig, f: &Footprint, rows: usize| estimate(m, f, 10, &full_rows(rows, 256));
        assert_within_15_percent(&[
            ("SmolLM2 Q4_1, 1 row", at(&smol, &q4_1, 1), 647.0),
            ("SmolLM2 Q4_1, 2 rows", at(&smol, &q4_1, 2), 1059.0),
            ("SmolLM2 Q4_1, 4 rows", at(&smol, &q4_1, 4), 1776.0),
            ("SmolLM2 Q4_1, checkpointing", at(&smol, &ckpt, 4), 495.0),
            (
                "SmolLM2 f32",
                at(&smol, &Footprint::f32_base(&smol, 4_884_480), 4),
                2294.0,
            ),
            ("Gemma 3, 1 row", at(&gemma, &g, 1), 1254.0),
            ("Gemma 3, 2 rows", at(&gemma, &g, 2), 1829.0),
            ("Gemma 3, 4 rows", at(&gemma, &g, 4), 2462.0),
            ("Gemma 3, checkpointing", at(&gemma, &g_ckpt, 4), 1384.0),
        ]);
        let plain = at(&smol, &q4_1, 4);
        let recomputed = at(&smol, &ckpt, 4);
        assert!(recomputed.seconds_per_step > plain.seconds_per_step * 1.3);
        let bigger = at(&smol, &q4_1, 8);
        assert!(bigger.peak_memory_bytes > plain.peak_memory_bytes);
        assert!(bigger.seconds_per_step > plain.seconds_per_step);
        assert_eq!(format_duration(3725.0), "1 h 02 min");
    }

    /// LoRA dropout keeps one mask per adapted projection, its input's width.
    #[test]
    fn dropout_masks_are_counted() {
        let smol = smollm2();
        let mut lora = crate::train::config::LoraSection::default();
        lora.targets = crate::model::lora::LoraTarget::ALL.to_vec();
        lora.dropout = 0.05;
        // q, k, v, gate, up read the hidden state; o the attention output; down the MLP.
        assert_eq!(dropout_mask_values(&smol, &lora), 5 * 576 + 576 + 1536);
        let with = Footprint::for_run(&smol, 100 << 20, &lora, false);
        lora.dropout = 0.0;
        let without = Footprint::for_run(&smol, 100 << 20, &lora, false);
        assert_eq!(without.dropout_mask_values, 0);
        let w = full_rows(4, 256);
        assert!(
            estimate(&smol, &with, 1, &w).peak_memory_bytes
                > estimate(&smol, &without, 1, &w).peak_memory_bytes
        );
    }

    /// The FLOPs a step is charged: counted here by hand for SmolLM2-135M at 4 × 256.
    #[test]
    fn step_time_is_the_steps_flops_at_the_given_rate() {
        let m = smollm2();
        let e = estimate_at(
            &m,
            &Footprint::f32_base(&m, 0),
            10,
            &full_rows(4, 256),
            1e11,
        );
        // 134.5M weights, of which the tied LM head's 28.3M multiply only the 1020 rows
        // with a target, 4 FLOPs per weight and row; attention: 6 · 30 layers · 4 · 256²
        // pairs · 576.
        let head = 49_152.0 * 576.0;
        let layers = 134_515_008.0 - head;
        let expected =
            4.0 * layers * 1024.0 + 4.0 * head * 1020.0 + 6.0 * 30.0 * 4.0 * 65536.0 * 576.0;
        let got = e.seconds_per_step * 1e11;
        assert!(
            (got - expected).abs() / expected < 1e-9,
            "{got} vs {expected}"
        );
        // Packing four 64-token samples into each row costs a quarter of the attention.
        let mut packed = full_rows(4, 256);
        packed.attention_pairs_per_step /= 4.0;
        let p = estimate_at(&m, &Footprint::f32_base(&m, 0), 10, &packed, 1e11);
        assert!(p.seconds_per_step < e.seconds_per_step);
    }

    #[test]
    fn runs_teach_the_step_efficiency_of_their_cpu() {
        // A run 1.7× faster than estimated at 0.7 ran at 1.19 of the matmul rate.
        let e = implied_efficiency(0.7, 6.05, 3.54).unwrap();
        assert!((e - 1.196).abs() < 1e-3, "{e}");
        assert_eq!(implied_efficiency(0.7, 6.0, 0.0), None);
        assert_eq!(
            implied_efficiency(0.7, 6.0, 1e6),
            None,
            "a paused run teaches nothing"
        );
        let mut l = Learned::default();
        assert_eq!(l.efficiency("cpu / plain"), None);
        for e in [1.1, 1.2, 9.0, 1.3, 1.25, 1.15] {
            l.add("cpu / plain", e);
        }
        // Only the last five are kept, and of those the implausible 9.0 is left out: the
        // upper median of 1.15, 1.2, 1.25, 1.3.
        assert_eq!(l.runs["cpu / plain"].len(), LEARNED_RUNS);
        assert_eq!(l.efficiency("cpu / plain"), Some(1.25));
        assert_eq!(l.efficiency("cpu / checkpointing"), None);
        // The file round-trips, and a broken one reads as nothing learned.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LEARNED_FILE);
        std::fs::write(&path, serde_json::to_string(&l).unwrap()).unwrap();
        assert_eq!(Learned::read(&path), l);
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(Learned::read(&path), Learned::default());
    }

    #[test]
    fn the_probe_measures_a_plausible_matmul_rate() {
        let rate = calibrate().expect("the matmul probe runs");
        // Between one slow core (1 GFLOP/s) and a large server (100 TFLOP/s).
        assert!((1e9..1e14).contains(&rate), "{rate} FLOP/s");
        assert!(calibrated());
    }
}
