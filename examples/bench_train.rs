//! Training throughput, the same measurement as `../shared/anchors/peft/bench_train.py`:
//! the default model, LoRA on all seven linear layers, random token rows of
//! `--batch` × `--seq` with every token trained, AdamW; one step = forward, backward,
//! optimizer. Prints trained tokens/s (median over `--steps` after `--warmup`) and peak RSS.
//!
//! With `--epoch FILE` it instead trains one epoch of FILE through the real trainer
//! (chat template, assistant-only loss, packing at `--seq`), optionally on the first
//! `--records N`, and reports tokens/s over the whole epoch.
//!
//! The base is trained as the file stores it (`--base stored`, the default: a GGUF's
//! quantized blocks) or as a dequantized f32 copy (`--base f32`); `--model` takes what
//! the studio opens (a GGUF file, an HF folder, `default`). With
//! `FINETUNE_STUDIO_GEMM_PROFILE=1` it also prints the time of each f32 product shape.
//!
//! `cargo run --release --example bench_train -- [--model M] [--base stored|f32] [--checkpointing] [--batch 4] [--seq 256] [--steps 10] [--warmup 2] [--rank 16] [--dropout 0]`

use std::sync::Arc;
use std::time::Instant;

use finetune_studio::model;
use finetune_studio::ops::gemm_choice::GemmKernel;
use finetune_studio::train::adapter::TrainableAdapter;
use finetune_studio::train::batch::PackedRow;
use finetune_studio::train::config::{EvalSplit, LoraSection, RunConfig};
use finetune_studio::train::data::micro_batch;
use finetune_studio::train::estimate;
use finetune_studio::train::optim::{self, AdamW};
use finetune_studio::train::trainer::{self, Control, Start};
use finetune_studio::train::{TrainCommand, TrainEvent};
use rand::{Rng, SeedableRng};

fn arg(args: &[String], name: &str, default: &str) -> String {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| default.into())
}

/// The median, NaN for no values.
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

struct Quiet;
impl Control for Quiet {
    fn send(&mut self, e: TrainEvent) {
        match e {
            TrainEvent::Step(m) if m.step % 10 == 0 => eprintln!(
                "step {} loss {:.4} {:.0} tok/s",
                m.step, m.loss, m.tokens_per_s
            ),
            TrainEvent::Log { message } => eprintln!("{message}"),
            TrainEvent::Failed { error } => eprintln!("failed: {error}"),
            _ => {}
        }
    }
    fn poll(&mut self) -> Option<TrainCommand> {
        None
    }
    fn wait(&mut self) -> Option<TrainCommand> {
        None
    }
}

/// The studio's step-time estimate for these settings next to the measured median step,
/// and the share of the matmul probe's rate the step reached (what `STEP_EFFICIENCY` in
/// src/train/estimate.rs assumes).
fn report_estimate(
    model: &model::Model,
    batch: usize,
    seq: usize,
    lora: &LoraSection,
    checkpointing: bool,
    step_s: f64,
    peak_rss_mib: f64,
) {
    let Some(rate) = estimate::calibrate() else {
        return;
    };
    // The fixed step: `batch` rows of `seq` tokens, one sample each.
    let workload = finetune_studio::train::plan::Workload::full_rows(batch, seq);
    let footprint =
        estimate::Footprint::for_run(model.config(), model.weight_bytes(), lora, checkpointing);
    let e = estimate::estimate(model.config(), &footprint, 0, &workload);
    println!(
        "estimate {:.2} s/step at a measured matmul rate of {:.0} GFLOP/s; measured {step_s:.2} s/step, \
         {:.2} of the matmul rate (assumed {:.2}: this CPU's runs, else the default)",
        e.seconds_per_step,
        rate / 1e9,
        e.seconds_per_step * estimate::step_efficiency(checkpointing) / step_s,
        estimate::step_efficiency(checkpointing)
    );
    let estimated_mib = e.peak_memory_bytes as f64 / (1024.0 * 1024.0);
    println!(
        "estimate {estimated_mib:.0} MiB at the peak; measured {peak_rss_mib:.0} MiB ({:+.1} %)",
        100.0 * (estimated_mib - peak_rss_mib) / peak_rss_mib
    );
}

fn main() -> anyhow::Result<()> {
    finetune_studio::ops::runtime::tune_runtime();
    let args: Vec<String> = std::env::args().collect();
    let batch: usize = arg(&args, "--batch", "4").parse()?;
    let seq: usize = arg(&args, "--seq", "256").parse()?;
    let steps: usize = arg(&args, "--steps", "10").parse()?;
    let warmup: usize = arg(&args, "--warmup", "2").parse()?;
    let rank: usize = arg(&args, "--rank", "16").parse()?;
    // The adapter's dropout: 0 as in `../shared/anchors/peft/bench_train.py`; the studio's
    // runs default to 0.05.
    let dropout: f32 = arg(&args, "--dropout", "0").parse()?;
    anyhow::ensure!(
        (0.0..1.0).contains(&dropout),
        "--dropout takes a value in [0, 1)"
    );
    let spec = arg(&args, "--model", "default");
    let loaded = finetune_studio::hub::load(&spec)?;
    // `--base f32` trains on a dequantized f32 copy instead of the file's own blocks.
    let base = arg(&args, "--base", "stored");
    let model = Arc::new(match base.as_str() {
        "stored" => loaded,
        "f32" => loaded.with_f32_weights()?,
        other => anyhow::bail!("--base {other}: expected `stored` or `f32`"),
    });
    let storage = model.storage_label();
    // `--checkpointing`: recompute each layer in the backward (gradient checkpointing).
    let checkpointing = args.iter().any(|a| a == "--checkpointing");
    eprintln!(
        "{}: {storage}, {:.0} MiB of weights, {:.0} MiB resident after loading",
        model.name,
        model.weight_bytes() as f64 / (1024.0 * 1024.0),
        finetune_studio::sys::rss_bytes()
            .map(finetune_studio::sys::mib)
            .unwrap_or(0.0)
    );
    let device = model.transformer.device().clone();

    if let Some(file) = args
        .iter()
        .position(|a| a == "--epoch")
        .and_then(|i| args.get(i + 1))
    {
        let records: Option<usize> = args
            .iter()
            .position(|a| a == "--records")
            .and_then(|i| args.get(i + 1))
            .and_then(|v| v.parse().ok());
        let dir = tempfile::tempdir()?;
        let mut data_path = std::path::PathBuf::from(file);
        if let Some(n) = records {
            let ds = finetune_studio::data::load(&data_path, None)?;
            let keep: Vec<usize> = (0..n.min(ds.len())).collect();
            let sub = ds.subset(&keep);
            data_path = dir.path().join("subset.json");
            sub.write(&data_path, None)?;
        }
        let mut cfg = RunConfig::default();
        cfg.data.path = data_path;
        cfg.data.max_seq_len = seq;
        cfg.data.eval_split = EvalSplit::Count(0);
        cfg.lora = LoraSection {
            rank,
            alpha: 2.0 * rank as f64,
            dropout,
            ..Default::default()
        };
        cfg.training.epochs = 1.0;
        cfg.training.gradient_checkpointing = checkpointing;
        cfg.training.batch_size = batch;
        cfg.training.eval_every = 0;
        cfg.training.save_every = 0;
        cfg.output.runs_dir = Some(dir.path().join("runs"));
        let t = Instant::now();
        let summary = trainer::run(cfg, model.clone(), Start::Fresh, None, &mut Quiet)?;
        let secs = t.elapsed().as_secs_f64();
        let metrics = finetune_studio::train::run_dir::read_run(&summary.run_dir);
        let prepared_tokens: usize = metrics.steps.iter().map(|m| m.tokens).sum();
        let peak = finetune_studio::sys::peak_rss_bytes()
            .map(finetune_studio::sys::mib)
            .unwrap_or(0.0);
        println!(
            "epoch of {file}: {} steps, {prepared_tokens} tokens in {secs:.1} s",
            summary.steps
        );
        println!(
            "{}",
            serde_json::json!({"impl": "finetune-studio", "mode": "epoch", "records": records, "seq": seq,
            "batch": batch, "rank": rank, "steps": summary.steps, "tokens": prepared_tokens, "seconds": secs,
            "tokens_per_s": prepared_tokens as f64 / secs, "peak_rss_mib": peak})
        );
        return Ok(());
    }

    let lora = LoraSection {
        rank,
        alpha: 2.0 * rank as f64,
        dropout,
        ..Default::default()
    };
    let adapter = TrainableAdapter::init(model.config(), &lora, None, 0, &device)?;
    let named = adapter.named_vars();
    let mut opt = AdamW::new(
        named.iter().map(|(_, v)| v.clone()).collect(),
        Default::default(),
    )?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0);
    let vocab = model.config().vocab_size as u32;
    // On a pool of its own, as the trainer runs its steps.
    let times = finetune_studio::ops::runtime::on_own_pool(|| -> anyhow::Result<Vec<f64>> {
        let mut times = Vec::new();
        for step in 0..warmup + steps {
            // Rows of random tokens, each one sample in which every position predicts the
            // next token (`labels=input_ids`), laid out as the trainer lays out a micro-batch.
            let rows: Vec<PackedRow> = (0..batch)
                .map(|_| {
                    let ids: Vec<u32> = (0..seq).map(|_| rng.random_range(0..vocab)).collect();
                    let targets = (0..seq).map(|i| ids.get(i + 1).copied()).collect();
                    PackedRow {
                        ids,
                        targets,
                        positions: (0..seq as u32).collect(),
                        segments: vec![0; seq],
                    }
                })
                .collect();
            let mb = micro_batch(&rows, &device)?;
            let trained = mb.trained_tokens;
            let t0 = Instant::now();
            // As the trainer runs a step: gradients with the pool kept awake, then the
            // clipped AdamW update.
            let (grads, loss) = finetune_studio::ops::runtime::with_pool_awake(|| {
                trainer::accumulated_gradients(
                    &model,
                    &adapter,
                    &named,
                    &[mb],
                    trained,
                    |_| step as u64,
                    checkpointing,
                )
            })?;
            let grads = grads.ok_or_else(|| anyhow::anyhow!("a batch without targets"))?;
            let norm = optim::grad_norm(&grads)?;
            let grads = optim::clip(grads, norm, 1.0)?;
            opt.update(&grads, 2e-4)?;
            let dt = t0.elapsed().as_secs_f64();
            eprintln!("step {step} loss {loss:.4} {dt:.3}s");
            if step >= warmup {
                times.push(dt);
            }
        }
        Ok(times)
    })?;
    let tps: Vec<f64> = times.iter().map(|t| (batch * seq) as f64 / t).collect();
    let peak = finetune_studio::sys::peak_rss_bytes()
        .map(finetune_studio::sys::mib)
        .unwrap_or(0.0);
    report_estimate(
        &model,
        batch,
        seq,
        &lora,
        checkpointing,
        median(times.clone()),
        peak,
    );
    println!(
        "trained {:.1} tokens/s (median of {steps}), peak RSS {peak:.0} MiB",
        median(tps.clone())
    );
    let profile = finetune_studio::ops::gemm_choice::profile();
    if !profile.is_empty() {
        let total: f64 = profile.iter().map(|(_, s, _)| s).sum();
        println!("f32 products (FINETUNE_STUDIO_GEMM_PROFILE): {total:.3} s in all");
        for (call, seconds, calls) in profile.iter().take(30) {
            let gflops = 2.0 * (call.m * call.n * call.k) as f64 * *calls as f64 / seconds / 1e9;
            println!(
                "  {:<32} {calls:>5} calls {seconds:>7.3} s {gflops:>6.1} GFLOP/s",
                call.label()
            );
        }
    }
    let kernels = finetune_studio::ops::gemm_choice::chosen();
    let on = |k: GemmKernel| kernels.iter().filter(|(_, c)| *c == k).count();
    println!(
        "gemm kernels ({}): gemm 0.19 on {} shapes, gemm-f32 0.18 AVX2 on {}, dot on {}, packed on {} (AVX-512: {}), rank on {}, outer on {}",
        finetune_studio::sys::cpu_model(),
        on(GemmKernel::Gemm019),
        on(GemmKernel::Gemm018Avx2),
        on(GemmKernel::Dot),
        on(GemmKernel::Packed),
        on(GemmKernel::Packed512),
        on(GemmKernel::Rank),
        on(GemmKernel::Outer)
    );
    println!(
        "{}",
        serde_json::json!({"impl": "finetune-studio", "model": model.name, "base": storage, "checkpointing": checkpointing, "batch": batch, "seq": seq, "rank": rank, "dropout": dropout,
        "tokens_per_s": median(tps.clone()), "tokens_per_s_min": tps.iter().cloned().fold(f64::INFINITY, f64::min),
        "tokens_per_s_max": tps.iter().cloned().fold(0.0, f64::max), "peak_rss_mib": peak,
        "trainable_params": adapter.parameter_count(), "cpu": finetune_studio::sys::cpu_model(),
        "gemm_019_shapes": on(GemmKernel::Gemm019), "gemm_018_avx2_shapes": on(GemmKernel::Gemm018Avx2),
        "gemm_dot_shapes": on(GemmKernel::Dot), "gemm_packed_shapes": on(GemmKernel::Packed),
        "gemm_packed512_shapes": on(GemmKernel::Packed512), "gemm_rank_shapes": on(GemmKernel::Rank), "gemm_outer_shapes": on(GemmKernel::Outer)})
    );
    Ok(())
}
