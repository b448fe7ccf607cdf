//! `finetune-studio export-run` (a run, or a run config, as a LLaMA-Factory or axolotl
//! project) and `finetune-studio import-run` (the engine's output back as a run).

use std::path::PathBuf;

use clap::Args;

use crate::handoff::{self, Engine, HandoffRequest};
use crate::train::RunConfig;

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["run", "config"])))]
pub struct ExportRunArgs {
    /// A run folder (its run.toml is the config).
    pub run: Option<PathBuf>,
    /// A run config (TOML), as `train --config` takes.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// The engine: llamafactory or axolotl.
    #[arg(long, value_parser = ["llamafactory", "axolotl"])]
    pub to: String,
    /// The project folder (new, empty, or an earlier hand-off, which is replaced).
    #[arg(long)]
    pub out: PathBuf,
    /// What the engine loads as the base: a hub id or a path on the training machine
    /// (default: the base's hub id).
    #[arg(long)]
    pub base_model: Option<String>,
    /// Write the base model's weights into the project (base/), for machines without the
    /// hub.
    #[arg(long, conflicts_with = "base_model")]
    pub write_base: bool,
    /// Settings for a machine without a GPU (checking the project, not the real run).
    #[arg(long)]
    pub cpu: bool,
}

#[derive(Debug, Args)]
pub struct ImportRunArgs {
    /// The engine's output folder (or the hand-off project holding it in output/).
    pub dir: PathBuf,
    /// Where the imported run goes (default: the studio's runs folder).
    #[arg(long)]
    pub runs_dir: Option<PathBuf>,
}

pub fn export_run(args: ExportRunArgs) -> anyhow::Result<i32> {
    let cfg = match (&args.run, &args.config) {
        (Some(run), _) => RunConfig::load(&run.join("run.toml"))?,
        (None, Some(file)) => RunConfig::load(file)?,
        (None, None) => anyhow::bail!("give a run folder or --config FILE"),
    };
    let engine = Engine::parse(&args.to)
        .ok_or_else(|| anyhow::anyhow!("unknown engine {} (llamafactory or axolotl)", args.to))?;
    let model = super::load_model(&cfg.model.base)?;
    let req = HandoffRequest {
        engine,
        out: args.out,
        base_model: args.base_model,
        write_base: args.write_base,
        cpu: args.cpu,
    };
    let report = handoff::export_project(&cfg, &model, &req, &mut |line| eprintln!("{line}"))?;
    for (path, size) in &report.files {
        println!("{:>10}  {}", crate::sys::human_bytes(*size), path.display());
    }
    println!(
        "{} project in {}: {} training and {} eval records, base {}, {} steps planned here",
        engine.label(),
        report.out.display(),
        report.train_records,
        report.eval_records,
        report.base_model,
        report.planned_steps
    );
    println!("train it: cd {} && {}", report.out.display(), report.launch);
    Ok(0)
}

pub fn import_run(args: ImportRunArgs) -> anyhow::Result<i32> {
    let runs_dir = args.runs_dir.unwrap_or_else(crate::paths::runs_dir);
    let r = handoff::import_output(&args.dir, &runs_dir)?;
    println!(
        "imported {} as {}: {} logged steps, {} evals, checkpoints {:?}{}",
        r.engine.map_or("a Hugging Face Trainer run", Engine::label),
        r.run_dir.display(),
        r.steps,
        r.evals,
        r.checkpoints,
        if r.restored_config {
            ", settings from the hand-off's studio-run.toml"
        } else {
            ", settings from the adapter's config"
        }
    );
    if r.log_source.is_none() {
        println!("no trainer_state.json or trainer_log.jsonl was found: the run has no curves");
    }
    Ok(0)
}
