//! `finetune-studio eval`: with `--data`, mean cross-entropy over the assistant tokens of a
//! dataset, with the model's chat template applied, as training would see them; with
//! `--suite`, an eval suite of verifiable checks (`eval_suite.rs`).

use clap::{ArgGroup, Args};

use crate::model::{ChatMessage, Forward, Layout};
use crate::train::batch;

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("source").required(true).args(["data", "suite"])))]
pub struct EvalArgs {
    #[arg(long, default_value = "default")]
    pub model: String,
    /// A LoRA adapter folder (PEFT layout).
    #[arg(long)]
    pub adapter: Option<std::path::PathBuf>,
    /// Dataset file (Alpaca, ShareGPT, OpenAI messages JSONL, CSV, Parquet ...): the mean
    /// loss over its assistant tokens.
    #[arg(long)]
    pub data: Option<std::path::PathBuf>,
    /// An eval suite (JSONL of prompts with verifiable checks), or `builtin`: pass rates
    /// per check and per prompt.
    #[arg(long, value_name = "FILE|builtin")]
    pub suite: Option<String>,
    /// Samples are cut at this many tokens (--data).
    #[arg(long, default_value_t = 1024)]
    pub max_len: usize,
    /// Evaluate only the first N records (--data) or prompts (--suite).
    #[arg(long)]
    pub limit: Option<usize>,
    /// Tokens generated per reply at most (--suite).
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Sampling temperature of the replies; 0 is greedy (--suite).
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Seed of the sampler when the temperature is above 0 (--suite).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: EvalArgs) -> anyhow::Result<i32> {
    match (&args.data, &args.suite) {
        (Some(data), None) => run_loss(&args, data),
        (None, Some(suite)) => super::eval_suite::run(&args, suite),
        _ => anyhow::bail!("give --data or --suite"),
    }
}

fn run_loss(args: &EvalArgs, data: &std::path::Path) -> anyhow::Result<i32> {
    let model = super::load_model_for_adapter(&args.model, args.adapter.as_deref())?;
    let adapter = match &args.adapter {
        Some(dir) => Some(
            crate::adapter::read_adapter(dir, model.config(), model.transformer.device())?.lora,
        ),
        None => None,
    };
    let dataset = crate::data::load(data, None)?;
    let n = args.limit.unwrap_or(usize::MAX).min(dataset.len());
    let mut per_example = Vec::with_capacity(n);
    let (mut total, mut tokens) = (0.0f64, 0usize);
    for (i, conv) in dataset.records().iter().take(n).enumerate() {
        let messages: Vec<ChatMessage> = conv
            .to_chat_messages()
            .into_iter()
            .map(|(r, c)| ChatMessage::new(r, c))
            .collect();
        let ex = batch::tokenize_conversation(&model, &messages, args.max_len, false)?;
        let row = batch::single_row(&ex);
        if row.trained_tokens() == 0 {
            per_example.push(serde_json::Value::Null);
            continue;
        }
        let ids = candle_core::Tensor::new(row.ids.as_slice(), model.transformer.device())?
            .unsqueeze(0)?;
        let hidden = model.transformer.forward(
            &ids,
            Forward {
                layout: Layout::Causal,
                lora: adapter.as_ref(),
                ..Default::default()
            },
        )?;
        let hidden = hidden.squeeze(0)?;
        let losses = crate::train::loss::token_losses(&model.transformer, &hidden, &row.targets)?;
        let sum: f64 = losses.iter().map(|&x| x as f64).sum();
        total += sum;
        tokens += losses.len();
        let mean = sum / losses.len() as f64;
        per_example.push(serde_json::json!(mean));
        if !args.json {
            eprintln!("example {i}: loss {mean:.4} over {} tokens", losses.len());
        }
    }
    let mean_loss = if tokens > 0 {
        total / tokens as f64
    } else {
        f64::NAN
    };
    if args.json {
        println!(
            "{}",
            serde_json::json!({"mean_loss": mean_loss, "tokens": tokens, "per_example": per_example})
        );
    } else {
        println!("mean loss {mean_loss:.4} over {tokens} assistant tokens in {n} examples");
    }
    Ok(0)
}
