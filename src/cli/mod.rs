//! The command line: `finetune-studio` with no subcommand starts the studio; the
//! subcommands run the same library code headless.

pub mod chat;
pub mod dataset;
pub mod eval;
pub mod export;
pub mod fetch;
pub mod train;

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
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Chat with a model: one prompt, or an interactive session without --prompt.
    Chat(chat::ChatArgs),
    /// Mean cross-entropy of a model on a dataset's assistant tokens.
    Eval(eval::EvalArgs),
    /// Download the default model (SmolLM2-135M-Instruct) if it is missing.
    FetchModel,
    /// Inspect, validate and convert datasets.
    Dataset(dataset::DatasetArgs),
    /// Train a LoRA adapter from a run config (TOML), or resume a run.
    Train(train::TrainArgs),
    /// Export an adapter (PEFT), a merged model, or GGUF.
    Export(export::ExportArgs),
}

/// Runs a subcommand and returns the process exit code.
pub fn run(command: Command) -> anyhow::Result<i32> {
    match command {
        Command::Chat(args) => chat::run(args),
        Command::Eval(args) => eval::run(args),
        Command::FetchModel => fetch::run(),
        Command::Dataset(args) => dataset::run(args, &|spec| {
            let model = load_model(spec)?;
            Ok(Box::new(model.tokenizer) as Box<dyn crate::data::TokenCounter>)
        }),
        Command::Train(args) => train::run(args),
        Command::Export(args) => export::run(args),
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
