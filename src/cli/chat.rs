//! `finetune-studio chat`: one prompt (optionally as JSON with timings) or a REPL.

use std::io::{BufRead, Write};
use std::sync::atomic::AtomicBool;

use clap::Args;

use crate::infer::{self, GenerateRequest, Sampling};
use crate::model::ChatMessage;

#[derive(Debug, Args)]
pub struct ChatArgs {
    /// default, gemma3 (Gemma 3 270M, after `fetch-model --gemma3`), a Hugging Face folder,
    /// a .gguf file, or a hub repo id.
    #[arg(long, default_value = "default")]
    pub model: String,
    /// A LoRA adapter folder (PEFT layout: a run's adapter/ or a checkpoint).
    #[arg(long)]
    pub adapter: Option<std::path::PathBuf>,
    /// System prompt.
    #[arg(long)]
    pub system: Option<String>,
    /// The prompt; without it, an interactive session starts.
    #[arg(long)]
    pub prompt: Option<String>,
    #[arg(long, default_value_t = 256)]
    pub max_tokens: usize,
    /// 0 decodes greedily.
    #[arg(long, default_value_t = 0.7)]
    pub temperature: f32,
    #[arg(long, default_value_t = 50)]
    pub top_k: usize,
    #[arg(long, default_value_t = 0.9)]
    pub top_p: f32,
    #[arg(long, default_value_t = 0.0)]
    pub min_p: f32,
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f32,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Extra stop string (repeatable).
    #[arg(long = "stop")]
    pub stop: Vec<String>,
    /// Weights: `stored` (the file's own quantization, the fast default) or `f32` (every
    /// matrix dequantized to f32 first: the exact reference, matching transformers).
    #[arg(long, default_value = "stored", value_parser = ["stored", "f32"])]
    pub precision: String,
    /// Print one JSON object (ids, text and timings) instead of streaming text.
    #[arg(long)]
    pub json: bool,
    /// Continue --prompt as plain text: no chat template, tokenized as the tokenizer does
    /// by default (with the BOS the model adds), as a base model is used.
    #[arg(long, requires = "prompt", conflicts_with = "system")]
    pub raw: bool,
    /// The chat template: `own` (the model's, or with --adapter the one its run trained
    /// with), chatml, gemma, llama3, mistral, alpaca, plain, qwen3, or a Jinja file.
    #[arg(long, default_value = "own", conflicts_with = "raw")]
    pub template: String,
    /// Qwen3-style thinking: `on` or `off` (passed as `enable_thinking` to templates that
    /// read it); the template's default when absent.
    #[arg(long, value_parser = ["on", "off"], conflicts_with = "raw")]
    pub thinking: Option<String>,
}

/// `on` / `off` as a flag's value.
pub fn on_off(value: Option<&str>) -> Option<bool> {
    value.map(|v| v == "on")
}

pub fn run(args: ChatArgs) -> anyhow::Result<i32> {
    let mut model = super::load_model(&args.model)?;
    let choice = crate::text::TemplateChoice::parse(&args.template);
    let thinking = on_off(args.thinking.as_deref());
    if let Some(t) =
        crate::adapter::templated_model(&model, args.adapter.as_deref(), &choice, thinking)?
    {
        for w in &t.warnings {
            eprintln!("warning: {w}");
        }
        model = t.model;
    }
    let adapter = match &args.adapter {
        Some(dir) => Some(
            crate::adapter::read_adapter(dir, model.config(), model.transformer.device())?.lora,
        ),
        None => None,
    };
    if args.precision == "f32" {
        model.transformer = model.transformer.to_f32()?;
    }
    let sampling = Sampling {
        temperature: args.temperature,
        top_k: args.top_k,
        top_p: args.top_p,
        min_p: args.min_p,
        repetition_penalty: args.repetition_penalty,
        seed: args.seed,
    };
    let mut messages = Vec::new();
    if let Some(s) = &args.system {
        messages.push(ChatMessage::new("system", s.clone()));
    }
    let cancel = AtomicBool::new(false);
    let request = |prompt_ids: Vec<u32>| GenerateRequest {
        prompt_ids,
        sampling: sampling.clone(),
        max_new_tokens: args.max_tokens,
        stop_strings: args.stop.clone(),
    };

    if let Some(prompt) = &args.prompt {
        let ids = if args.raw {
            model.tokenizer.encode(prompt, true)?
        } else {
            messages.push(ChatMessage::new("user", prompt.clone()));
            model.encode_chat(&messages, true)?
        };
        let out = if args.json {
            infer::generate(
                &model,
                adapter.as_ref(),
                &request(ids.clone()),
                &cancel,
                &mut |_| {},
            )?
        } else {
            let mut stdout = std::io::stdout();
            let g = infer::generate(
                &model,
                adapter.as_ref(),
                &request(ids.clone()),
                &cancel,
                &mut |piece| {
                    let _ = write!(stdout, "{piece}");
                    let _ = stdout.flush();
                },
            )?;
            println!();
            g
        };
        if args.json {
            let json = serde_json::json!({
                "prompt_ids": ids,
                "generated_ids": out.ids,
                "text": out.text,
                "stop_reason": out.stop_reason,
                "ttft_ms": out.stats.ttft_ms,
                "prompt_tokens_per_s": out.stats.prompt_tokens_per_s,
                "decode_tokens_per_s": out.stats.decode_tokens_per_s,
            });
            println!("{json}");
        } else {
            eprintln!(
                "[{} tokens, first after {:.0} ms, {:.1} tokens/s]",
                out.stats.generated_tokens, out.stats.ttft_ms, out.stats.decode_tokens_per_s
            );
        }
        return Ok(0);
    }

    eprintln!(
        "chatting with {} — empty line or Ctrl+D quits, /reset starts over",
        model.name
    );
    let stdin = std::io::stdin();
    loop {
        eprint!("> ");
        let _ = std::io::stderr().flush();
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        let line = line.trim_end_matches(['\n', '\r']).to_string();
        if line == "/reset" {
            messages.retain(|m| m.role == "system");
            continue;
        }
        messages.push(ChatMessage::new("user", line));
        let ids = model.encode_chat(&messages, true)?;
        let mut stdout = std::io::stdout();
        let out = infer::generate(
            &model,
            adapter.as_ref(),
            &request(ids),
            &cancel,
            &mut |piece| {
                let _ = write!(stdout, "{piece}");
                let _ = stdout.flush();
            },
        )?;
        println!();
        eprintln!("[{:.1} tokens/s]", out.stats.decode_tokens_per_s);
        messages.push(ChatMessage::new("assistant", out.text));
    }
    Ok(0)
}
