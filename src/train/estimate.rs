//! Before a run starts: how much memory it will need at its peak and how long a step will
//! take, from the model's shape, the run's batch and this machine's measured matmul rate.
//! The memory coefficients come from measuring the trainer on SmolLM2-135M
//! (examples/bench_train.rs). The step's share of the matmul rate differs between CPUs
//! (0.65–0.87 on a Zen 5, 1.1–1.2 on a Zen 4), so each run on this CPU measures it and
//! keeps it in `step-efficiency.json` in the data directory ([`learn_step_time`]); until a
//! run has, a fixed share is assumed. The ETA shown while training uses the measured step
//! time.

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

/// f32 values kept for the backward pass per token and layer, in units of the hidden size
/// and the MLP width (fit to the peak RSS of examples/bench_train on SmolLM2-135M at
/// 4 × 256 tokens: 1798 MiB on its Q4_1 base, 452 MiB with checkpointing). Attention keeps
/// no `[t, t]` scores and the loss no logits.
const ACT_HIDDEN: f64 = 11.0;
const ACT_MLP: f64 = 2.75;
/// With gradient checkpointing, `[tokens, hidden]` tensors alive besides the layer inputs
/// and the recomputed layer: the gradient at the layer's output, at its input, and the
/// input's tracked copy.
const CHECKPOINT_EXTRA_HIDDEN: f64 = 3.0;
/// The process around the step: code, the allocator's slack, the thread stacks, the
/// tokenizer and the data (fit with the coefficients above, on a Q4_1 base).
const RUNTIME_BYTES: f64 = 100e6;
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

fn learned_key(checkpointing: bool) -> String {
    let mode = if checkpointing {
        "checkpointing"
    } else {
        "plain"
    };
    format!("{} / {mode}", crate::sys::cpu_model())
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
}

impl Footprint {
    /// An f32 base of `model`'s shape.
    pub fn f32_base(model: &ModelConfig, trainable: usize) -> Self {
        Self {
            weight_bytes: model.parameter_count().saturating_mul(4),
            trainable,
            checkpointing: false,
        }
    }
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
    let i = model.intermediate_size as f64;
    let layers = model.num_hidden_layers as f64;
    let tokens = workload.max_micro_batch_tokens as f64;
    let weights = footprint.weight_bytes as f64;
    let per_token_layer = ACT_HIDDEN * h + ACT_MLP * i;
    // Every layer's saved tensors; with checkpointing, each layer's input, one layer's
    // saved tensors while it is recomputed, and the gradient flowing between layers.
    let activations = if footprint.checkpointing {
        tokens * (layers * h + per_token_layer + CHECKPOINT_EXTRA_HIDDEN * h) * 4.0
    } else {
        tokens * layers * per_token_layer * 4.0
    };
    // One chunk of logits at a time, during the forward pass only.
    let logits = crate::train::loss::LOSS_CHUNK_ROWS as f64 * model.vocab_size as f64 * 4.0 * 1.25;
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
    // Without checkpointing the loss runs while every layer's tensors are kept; with it,
    // the loss runs before any layer is recomputed, so only the larger of the two counts.
    let transient = if footprint.checkpointing {
        logits.max(probabilities)
    } else {
        logits + probabilities
    };
    let peak = weights + activations + transient + optimizer + panel + RUNTIME_BYTES;
    let matmul_params = (model.parameter_count() - model.vocab_size * model.hidden_size) as f64
        + model.vocab_size as f64 * h;
    // Forward 2 and backward 2 FLOPs per weight and token (no weight gradient); a
    // recomputed layer adds its forward again.
    let passes = if footprint.checkpointing { 6.0 } else { 4.0 };
    let attention_passes = if footprint.checkpointing { 8.0 } else { 6.0 };
    let flops_per_step = passes * matmul_params * workload.tokens_per_step
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
    let workload = Workload {
        max_micro_batch_tokens: rows * len,
        tokens_per_step: (rows * len) as f64,
        attention_pairs_per_step: (rows * len * len) as f64,
        largest_micro_batch_samples: vec![vec![len]; rows],
    };
    let mut footprint = Footprint {
        weight_bytes: weight_bytes as usize,
        trainable: super::adapter::trainable_parameters(model, &cfg.lora),
        checkpointing: false,
    };
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
        let f32_base = Footprint::f32_base(&smollm2(), 4_884_480);
        let e = estimate(&smollm2(), &f32_base, 100, &full_rows(4, 256));
        let gb = e.peak_memory_bytes as f64 / 1e9;
        assert!((2.0..2.6).contains(&gb), "{gb} GB");
        let gb =
            estimate(&smollm2(), &f32_base, 100, &full_rows(4, 512)).peak_memory_bytes as f64 / 1e9;
        assert!((3.5..4.3).contains(&gb), "{gb} GB");
        let bigger = estimate(&smollm2(), &f32_base, 100, &full_rows(8, 256));
        assert!(bigger.peak_memory_bytes > e.peak_memory_bytes);
        assert!(bigger.seconds_per_step > e.seconds_per_step);
        assert_eq!(format_duration(3725.0), "1 h 02 min");
    }

    // examples/bench_train on the default model's Q4_1 file (92.1 MiB of weights) at
    // 4 × 256, r = 16: peak RSS 1798 MiB, and 452 MiB with checkpointing (AMD EPYC Zen 5,
    // 2026-12-03).
    #[test]
    fn a_quantized_base_and_checkpointing_are_estimated_within_15_percent() {
        let mib = |e: &Estimate| e.peak_memory_bytes as f64 / (1024.0 * 1024.0);
        let mut q4_1 = Footprint {
            weight_bytes: (92.1 * 1024.0 * 1024.0) as usize,
            trainable: 4_884_480,
            checkpointing: false,
        };
        let plain = estimate(&smollm2(), &q4_1, 10, &full_rows(4, 256));
        assert!(
            (mib(&plain) / 1798.0 - 1.0).abs() < 0.15,
            "{} MiB",
            mib(&plain)
        );
        q4_1.checkpointing = true;
        let ckpt = estimate(&smollm2(), &q4_1, 10, &full_rows(4, 256));
        assert!(
            (mib(&ckpt) / 452.0 - 1.0).abs() < 0.15,
            "{} MiB",
            mib(&ckpt)
        );
        assert!(ckpt.seconds_per_step > plain.seconds_per_step * 1.3);
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
