//! The command line: `finetune-studio [FILE]` with no subcommand starts the studio (with
//! FILE open in the Datasets tab); the subcommands run the same library code headless.

pub mod chat;
pub mod dataset;
mod dataset_contamination;
mod dataset_pairs;
mod dataset_preference;
mod dataset_score;
pub mod eval;
mod eval_suite;
pub mod export;
pub mod fetch;
pub mod handoff;
pub mod judge;
pub mod train;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "finetune-studio",
    version,
    about = "Instruction tuning (LoRA) of language models: datasets, training, chat, export"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Model to open in the studio (default, a folder, a .gguf file or a hub repo id).
    #[arg(long, global = false)]
    pub model: Option<String>,
    /// Dataset file to open in the studio's Datasets tab (JSON, JSONL, CSV, Parquet, or
    /// `dataset_info.json#entry`).
    #[arg(value_name = "FILE")]
    pub dataset: Option<PathBuf>,
}

impl Cli {
    /// What clap's derive cannot say: FILE opens the studio, so it cannot come with a
    /// subcommand (`finetune-studio x.json train ...`).
    pub fn check(&self) -> Result<(), clap::Error> {
        use clap::CommandFactory;
        match (&self.command, &self.dataset) {
            (Some(_), Some(file)) => Err(Cli::command().error(
                clap::error::ErrorKind::ArgumentConflict,
                format!(
                    "`{}` opens a dataset in the studio and cannot come with a subcommand",
                    file.display()
                ),
            )),
            _ => Ok(()),
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Chat with a model: one prompt, or an interactive session without --prompt.
    Chat(chat::ChatArgs),
    /// Mean cross-entropy of a model on a dataset's assistant tokens (--data), or the pass
    /// rates of an eval suite of verifiable checks (--suite FILE|builtin).
    Eval(eval::EvalArgs),
    /// The win rate of A against B on a prompt set, judged by a local model in both
    /// orders, with a 95 % interval.
    Judge(judge::JudgeArgs),
    /// Download the default model (SmolLM2-135M-Instruct), or with --gemma3 Gemma 3 270M,
    /// if it is missing.
    FetchModel(fetch::FetchArgs),
    /// Inspect, validate and convert datasets.
    Dataset(dataset::DatasetArgs),
    /// Train a LoRA adapter from a run config (TOML), or resume a run.
    Train(train::TrainArgs),
    /// Export an adapter (PEFT), a merged model, or GGUF.
    Export(export::ExportArgs),
    /// Write a run (or a run config) as a LLaMA-Factory or axolotl project for a GPU
    /// machine or cluster: data, config YAML, launch files, README.
    ExportRun(handoff::ExportRunArgs),
    /// Bring a LLaMA-Factory or axolotl output folder back as a run (adapter and curves).
    ImportRun(handoff::ImportRunArgs),
}

/// Runs a subcommand and returns the process exit code.
pub fn run(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Chat(args) => chat::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Judge(args) => judge::run(args),
        Command::FetchModel(args) => fetch::run(args),
        Command::Dataset(args) => {
            if let Some(code) = dataset_preference::intercept(&args)? {
                return Ok(code);
            }
            if let Some(code) = dataset_score::intercept(&args)? {
                return Ok(code);
            }
            dataset::run(args, &|spec| {
                let model = load_model(spec)?;
                Ok(Box::new(model.tokenizer) as Box<dyn crate::data::TokenCounter>)
            })
        }
        Command::Train(args) => train::run(args),
        Command::Export(args) => export::run(args),
        Command::ExportRun(args) => handoff::export_run(args),
        Command::ImportRun(args) => handoff::import_run(args),
    }
}

/// Loads a model for a subcommand, fetching the default model first when it is missing.
pub fn load_model(spec: &str) -> anyhow::Result<crate::model::Model> {
    if spec == "default" && crate::hub::source::find_default().is_none() {
        eprintln!("the default model is not downloaded yet; fetching it");
        crate::hub::fetch::fetch_default(&mut |line| eprintln!("  {line}"))?;
    }
    let t0 = std::time::Instant::now();
    let model = crate::hub::load(spec)?;
    tracing::info!(
        "loaded {} in {:.2} s",
        model.name,
        t0.elapsed().as_secs_f64()
    );
    Ok(model)
}

/// The model at `spec` with the chat template the adapter in `adapter` was trained with
/// (its `tokenizer_config.json`), so prompts render as its run rendered them.
pub fn load_model_for_adapter(
    spec: &str,
    adapter: Option<&std::path::Path>,
) -> anyhow::Result<crate::model::Model> {
    let model = load_model(spec)?;
    let choice = crate::text::TemplateChoice::Own;
    Ok(
        match crate::adapter::templated_model(&model, adapter, &choice, None)? {
            Some(t) => t.model,
            None => model,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("finetune-studio").chain(args.iter().copied()))
    }

    #[test]
    fn a_bare_path_opens_a_dataset() {
        let cli = parse(&["x.json"]).unwrap();
        assert!(cli.command.is_none());
        assert_eq!(cli.dataset, Some(PathBuf::from("x.json")));
        let cli = parse(&["--model", "m.gguf", "data/dataset_info.json#identity"]).unwrap();
        assert_eq!(cli.model.as_deref(), Some("m.gguf"));
        assert_eq!(
            cli.dataset,
            Some(PathBuf::from("data/dataset_info.json#identity"))
        );
        let cli = parse(&[]).unwrap();
        assert!(cli.command.is_none() && cli.dataset.is_none());
        cli.check().unwrap();
    }

    #[test]
    fn subcommands_are_not_paths() {
        let cli = parse(&["fetch-model"]).unwrap();
        assert!(matches!(cli.command, Some(Command::FetchModel(_))));
        assert!(cli.dataset.is_none());
        let cli = parse(&["dataset", "stats", "x.json"]).unwrap();
        assert!(matches!(cli.command, Some(Command::Dataset(_))));
        assert!(cli.dataset.is_none());
        cli.check().unwrap();
        // A path before a subcommand would be ignored: it is an error instead.
        let cli = parse(&["x.json", "fetch-model"]).unwrap();
        let e = cli.check().unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::ArgumentConflict);
        assert!(e.to_string().contains("x.json"), "{e}");
    }
}
