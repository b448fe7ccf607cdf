//! `finetune-studio train --config run.toml [--resume RUN_DIR]`: the same trainer the
//! studio runs, with an indicatif progress bar (loss, tokens/s, ETA) and a final summary.
//! When stderr is not a terminal (a batch job's log), indicatif draws nothing, so the same
//! facts go out as plain lines: one per logged step.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::jobs::Waker;
use crate::train::{self, RunConfig, TrainEvent};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The run configuration (TOML).
    #[arg(long, required_unless_present = "resume")]
    pub config: Option<PathBuf>,
    /// Continue this run directory from its last checkpoint.
    #[arg(long)]
    pub resume: Option<PathBuf>,
    /// Start even when the memory estimate exceeds the free memory.
    #[arg(long)]
    pub force: bool,
    /// The chat template, overriding the config's `[model] template`: `own`, chatml,
    /// gemma, llama3, mistral, alpaca, plain, qwen3, or a Jinja file.
    #[arg(long, conflicts_with = "resume")]
    pub template: Option<String>,
    /// Qwen3-style thinking while training: `on` or `off` (`[model] enable_thinking`).
    #[arg(long, value_parser = ["on", "off"], conflicts_with = "resume")]
    pub thinking: Option<String>,
    /// Remove `<think>…</think>` blocks from assistant turns (`[data] strip_reasoning`).
    #[arg(long, conflicts_with = "resume")]
    pub strip_reasoning: bool,
}

/// Runs the training job and prints its events; the exit code is 0 when it finished and
/// 1 when it failed (the error, naming the file, on stderr).
pub fn run(args: TrainArgs) -> anyhow::Result<i32> {
    let mut handle = start(&args)?;
    let bar = ProgressBar::new(1);
    bar.set_style(
        ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} steps  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let mut code = 1;
    while let Some(event) = handle.events.recv() {
        if let Some(end) = show(&bar, event) {
            code = end;
        }
    }
    Ok(code)
}

/// Starts the run of `--config` (after its estimate says it fits) or resumes `--resume`.
fn start(args: &TrainArgs) -> anyhow::Result<train::TrainHandle> {
    let path = match (&args.resume, &args.config) {
        (Some(dir), _) => return train::resume(dir, None, Waker::noop()),
        (None, Some(path)) => path,
        (None, None) => anyhow::bail!("give --config or --resume"),
    };
    let mut cfg = RunConfig::load(path)?;
    if let Some(t) = &args.template {
        cfg.model.template = crate::text::TemplateChoice::parse(t).to_config();
    }
    if let Some(on) = super::chat::on_off(args.thinking.as_deref()) {
        cfg.model.enable_thinking = Some(on);
    }
    if args.strip_reasoning {
        cfg.data.strip_reasoning = true;
    }
    let problems = cfg.validate();
    if !problems.is_empty() {
        anyhow::bail!("{}: {}", path.display(), problems.join("; "));
    }
    let model = Arc::new(super::load_model(&cfg.model.base)?);
    let plan = train::plan::plan(&cfg, &model)
        .with_context(|| format!("the run of {}", path.display()))?;
    train::estimate::calibrate();
    let estimate = plan.estimate(&model);
    if !estimate.fits() && !args.force {
        let advice = if cfg.training.gradient_checkpointing {
            "lower batch_size or max_seq_len"
        } else {
            "set gradient_checkpointing = true under [training], lower batch_size or max_seq_len"
        };
        anyhow::bail!(
            "this run will not fit in memory: it {}; {advice}, or pass --force",
            estimate.describe()
        );
    }
    Ok(train::spawn_planned(cfg, model, plan, Waker::noop()))
}

/// Shows one event on the bar (or as a line); the exit code once the run has ended.
fn show(bar: &ProgressBar, event: TrainEvent) -> Option<i32> {
    match event {
        TrainEvent::Started {
            run_dir,
            total_steps,
            start_step,
            estimate,
        } => {
            bar.set_length(total_steps as u64);
            bar.set_position(start_step as u64);
            say(bar, format!("run {}", run_dir.display()));
            say(bar, format!("estimate: {}", estimate.describe()));
        }
        TrainEvent::Step(m) => {
            let mut status = format!(
                "loss {:.4}  lr {:.2e}  |g| {:.3}  {:.0} tok/s  ETA {}",
                m.loss,
                m.lr,
                m.grad_norm,
                m.tokens_per_s,
                train::estimate::format_duration(m.eta_s)
            );
            if let Some(p) = m.preference {
                status.push_str(&format!(
                    "  margin {:.4}  accuracy {:.2}",
                    p.reward_margin, p.reward_accuracy
                ));
            }
            if bar.is_hidden() {
                let total = bar.length().unwrap_or(0);
                eprintln!("step {}/{total}  {status}", m.step);
            }
            bar.set_position(m.step as u64);
            bar.set_message(status);
        }
        TrainEvent::Eval { step, loss } => say(bar, format!("step {step}: eval loss {loss:.4}")),
        TrainEvent::Suite(s) => say(bar, s.summary()),
        TrainEvent::Best { step, by, value } => say(
            bar,
            format!(
                "step {step}: best {} so far, {}",
                by.label(),
                by.format(value)
            ),
        ),
        TrainEvent::PreferenceEval { step, metrics } => say(
            bar,
            format!(
                "step {step}: held-out reward accuracy {:.3}, margin {:.4} ({} pairs)",
                metrics.reward_accuracy, metrics.reward_margin, metrics.pairs
            ),
        ),
        TrainEvent::Checkpoint { step, path } => {
            say(bar, format!("step {step}: checkpoint {}", path.display()))
        }
        TrainEvent::Log { message } => say(bar, message),
        TrainEvent::Paused { .. } | TrainEvent::Resumed { .. } => {}
        TrainEvent::Finished { summary } => {
            bar.finish_and_clear();
            print_summary(&summary);
            return Some(0);
        }
        TrainEvent::Failed { error } => {
            bar.abandon();
            eprintln!("error: {error}");
            return Some(1);
        }
    }
    None
}

fn print_summary(summary: &train::Summary) {
    let loss = |l: Option<f64>| l.map(|l| format!("{l:.4}")).unwrap_or_else(|| "-".into());
    println!(
        "finished {} steps in {} — final loss {}, best eval loss {}",
        summary.steps,
        train::estimate::format_duration(summary.duration_s),
        loss(summary.final_loss),
        loss(summary.best_eval_loss),
    );
    match &summary.adapter_dir {
        Some(a) => println!("adapter: {}", a.display()),
        None => println!(
            "stopped early; resume with --resume {}",
            summary.run_dir.display()
        ),
    }
}

/// A line above the progress bar, or on stderr when the bar is hidden (not a terminal),
/// where indicatif would drop it.
fn say(bar: &ProgressBar, line: String) {
    if bar.is_hidden() {
        eprintln!("{line}");
    } else {
        bar.println(line);
    }
}
