//! `finetune-studio judge`: the win rate of A against B on a prompt set, judged by a local
//! model. A's and B's replies are generated greedily (each a model with an optional
//! adapter, as `eval --suite` runs them), then every pair is put to the judge twice, in
//! both orders (`crate::eval::judge`); prints the wins, losses, ties and the win rate with
//! its 95 % interval, and writes the whole result, with the judge prompt used, to `--out`.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use crate::eval::judge::{self, JudgeLabels, JudgePair, JudgePrompt, JudgeResult, ModelJudge};
use crate::eval::{self, RunOptions, Suite, SuiteInput, SuiteItem};
use crate::model::lora::LoraSet;
use crate::model::Model;

#[derive(Debug, Args)]
pub struct JudgeArgs {
    /// The prompts: `builtin` (the built-in eval suite's), an eval suite (JSONL; its
    /// checks are not used), or a `.txt` file with one prompt per line.
    #[arg(long, value_name = "FILE|builtin")]
    pub prompts: String,
    /// Model A (default, a folder, a .gguf file or a hub repo id).
    #[arg(long = "a", value_name = "MODEL", default_value = "default")]
    pub a: String,
    /// A LoRA adapter folder (PEFT layout) on model A.
    #[arg(long, value_name = "DIR")]
    pub a_adapter: Option<PathBuf>,
    /// Model B.
    #[arg(long = "b", value_name = "MODEL", default_value = "default")]
    pub b: String,
    /// A LoRA adapter folder on model B.
    #[arg(long, value_name = "DIR")]
    pub b_adapter: Option<PathBuf>,
    /// The judge model.
    #[arg(long, value_name = "MODEL")]
    pub judge: String,
    /// A LoRA adapter folder on the judge.
    #[arg(long, value_name = "DIR")]
    pub judge_adapter: Option<PathBuf>,
    /// The judge prompt, a minijinja template of `prompt`, `response_a` and `response_b`
    /// asking for `A`, `B` or `tie` (default: the built-in one).
    #[arg(long, value_name = "FILE")]
    pub judge_prompt: Option<PathBuf>,
    /// Where the result (JSON, with the judge prompt used) is written.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Judge only the first N prompts.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Tokens generated per reply at most.
    #[arg(long, default_value_t = 256)]
    pub max_new_tokens: usize,
    /// Print the result as one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The models loaded so far, so one named twice is loaded once.
#[derive(Default)]
struct Models(Vec<(String, Arc<Model>)>);

impl Models {
    fn get(&mut self, spec: &str) -> anyhow::Result<Arc<Model>> {
        if let Some((_, m)) = self.0.iter().find(|(s, _)| s == spec) {
            return Ok(m.clone());
        }
        let m = Arc::new(super::load_model(spec)?);
        self.0.push((spec.to_string(), m.clone()));
        Ok(m)
    }
}

fn read_lora(model: &Model, dir: Option<&Path>) -> anyhow::Result<Option<LoraSet>> {
    dir.map(|dir| {
        crate::adapter::read_adapter(dir, model.config(), model.transformer.device())
            .with_context(|| format!("reading the adapter in {}", dir.display()))
            .map(|r| r.lora)
    })
    .transpose()
}

fn label(model: &str, adapter: Option<&Path>) -> String {
    match adapter {
        Some(a) => format!("{model} + {}", a.display()),
        None => model.to_string(),
    }
}

fn bar(len: usize, what: &str) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(&format!("{{bar:30.cyan/blue}} {{pos}}/{{len}} {what}"))
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

pub fn run(args: JudgeArgs) -> anyhow::Result<i32> {
    // The files first: a bad prompt set or template is reported before any model loads.
    let template = match &args.judge_prompt {
        Some(path) => JudgePrompt::read(path)?,
        None => JudgePrompt::default_prompt()?,
    };
    let mut prompts = read_prompts(&args.prompts)?;
    if let Some(n) = args.limit {
        prompts.items.truncate(n.max(1));
    }
    let mut models = Models::default();
    let opts = RunOptions {
        max_new_tokens: args.max_new_tokens,
        ..RunOptions::default()
    };
    let cancel = AtomicBool::new(false);
    let mut replies = Vec::new();
    for (side, spec, adapter) in [
        ("A", &args.a, args.a_adapter.as_deref()),
        ("B", &args.b, args.b_adapter.as_deref()),
    ] {
        let model = models.get(spec)?;
        let lora = read_lora(&model, adapter)?;
        let bar = bar(prompts.items.len(), &format!("replies of {side}"));
        let report = eval::run_suite(
            &model,
            lora.as_ref(),
            adapter.map(|a| a.display().to_string()),
            &prompts,
            &opts,
            &cancel,
            &mut |_, _| bar.inc(1),
        )?;
        bar.finish_and_clear();
        replies.push(
            report
                .prompts
                .into_iter()
                .map(|p| p.reply)
                .collect::<Vec<_>>(),
        );
    }
    let pairs: Vec<JudgePair> = prompts
        .items
        .iter()
        .zip(replies[0].iter().zip(&replies[1]))
        .map(|(item, (a, b))| JudgePair {
            prompt: item.last_user_text().to_string(),
            reply_a: a.clone(),
            reply_b: b.clone(),
        })
        .collect();
    let judge_model = models.get(&args.judge)?;
    let judge_lora = read_lora(&judge_model, args.judge_adapter.as_deref())?;
    let scorer = ModelJudge::new(&judge_model, judge_lora.as_ref())?;
    let labels = JudgeLabels {
        a: label(&args.a, args.a_adapter.as_deref()),
        b: label(&args.b, args.b_adapter.as_deref()),
        judge: label(&args.judge, args.judge_adapter.as_deref()),
    };
    let bar = bar(pairs.len(), "pairs judged (both orders)");
    let result = judge::judge_pairs(&scorer, &template, labels, &pairs, &cancel, &mut |_, _| {
        bar.inc(1)
    })?;
    bar.finish_and_clear();
    if let Some(out) = &args.out {
        crate::worker::judge_job::write_result(out, &result)
            .map_err(|e| anyhow::anyhow!("writing the result: {e}"))?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&result)?);
    } else {
        print_result(&result, args.out.as_deref());
    }
    Ok(0)
}

/// The prompt set: `builtin`, a suite file, or a `.txt` file with a prompt per line.
fn read_prompts(spec: &str) -> anyhow::Result<Suite> {
    let path = Path::new(spec);
    if path.extension().is_some_and(|e| e == "txt") {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the prompts in {}", path.display()))?;
        let items: Vec<SuiteItem> = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| SuiteItem {
                id: format!("line-{}", i + 1),
                line: i + 1,
                system: None,
                input: SuiteInput::Prompt(l.trim().to_string()),
                checks: Vec::new(),
            })
            .collect();
        anyhow::ensure!(!items.is_empty(), "{} holds no prompts", path.display());
        return Ok(Suite {
            name: path.display().to_string(),
            items,
        });
    }
    Ok(Suite::load(spec)?)
}

fn print_result(r: &JudgeResult, out: Option<&Path>) {
    println!(
        "A: {}\nB: {}\njudge: {}",
        r.labels.a, r.labels.b, r.labels.judge
    );
    for (i, p) in r.pairs.iter().enumerate() {
        println!(
            "  {:>3} {:<7} A first: A {:.2} B {:.2} tie {:.2} · B first: B {:.2} A {:.2} tie {:.2}  {:?}",
            i + 1,
            p.verdict.describe(),
            p.a_first.first,
            p.a_first.second,
            p.a_first.tie,
            p.b_first.first,
            p.b_first.second,
            p.b_first.tie,
            p.pair.prompt.chars().take(50).collect::<String>()
        );
    }
    println!("{}", r.summary());
    if let Some(out) = out {
        println!("result written to {}", out.display());
    }
}
