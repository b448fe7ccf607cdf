//! `finetune-studio eval --suite FILE|builtin`: an eval suite run through a model and an
//! optional adapter, with a progress bar; prints each prompt's outcome and the pass rates
//! per check type and overall, or the whole report as JSON with `--json`.

use std::sync::atomic::AtomicBool;

use anyhow::Context;
use indicatif::{ProgressBar, ProgressStyle};

use super::eval::EvalArgs;
use crate::eval::{self, RunOptions, Suite, SuiteReport};
use crate::infer::Sampling;

pub fn run(args: &EvalArgs, spec: &str) -> anyhow::Result<i32> {
    // The suite first: a malformed file is reported before a model is loaded.
    let mut suite = Suite::load(spec)?;
    if let Some(n) = args.limit {
        suite.items.truncate(n.max(1));
    }
    let model = super::load_model_for_adapter(&args.model, args.adapter.as_deref())?;
    let lora = match &args.adapter {
        Some(dir) => Some(
            crate::adapter::read_adapter(dir, model.config(), model.transformer.device())
                .with_context(|| format!("reading the adapter in {}", dir.display()))?
                .lora,
        ),
        None => None,
    };
    let opts = RunOptions {
        max_new_tokens: args.max_new_tokens,
        sampling: if args.temperature > 0.0 {
            Sampling {
                temperature: args.temperature,
                seed: args.seed,
                ..Sampling::default()
            }
        } else {
            Sampling::greedy()
        },
    };
    let bar = ProgressBar::new(suite.items.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} prompts  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (mut passed, mut total) = (0usize, 0usize);
    let cancel = AtomicBool::new(false);
    let report = eval::run_suite(
        &model,
        lora.as_ref(),
        args.adapter.as_ref().map(|d| d.display().to_string()),
        &suite,
        &opts,
        &cancel,
        &mut |_, result| {
            passed += result.checks.iter().filter(|c| c.passed).count();
            total += result.checks.len();
            bar.set_message(format!("{passed}/{total} checks passed"));
            bar.inc(1);
        },
    )?;
    bar.finish_and_clear();
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print_report(&report);
    }
    Ok(0)
}

fn percent(rate: f64) -> String {
    format!("{:5.1} %", rate * 100.0)
}

/// One line per prompt (failing checks below it with their reasons), then the pass rate
/// of each check type and the totals.
fn print_report(r: &SuiteReport) {
    let model = match &r.adapter {
        Some(a) => format!("{} + {a}", r.model),
        None => r.model.clone(),
    };
    println!("suite {} on {model}", r.suite);
    let width = r.prompts.iter().map(|p| p.id.len()).max().unwrap_or(0);
    for p in &r.prompts {
        let n = p.checks.iter().filter(|c| c.passed).count();
        println!(
            "  {} {:<width$}  {n}/{} checks",
            if p.passed { "PASS" } else { "FAIL" },
            p.id,
            p.checks.len()
        );
        for c in p.checks.iter().filter(|c| !c.passed) {
            println!("         {}: {}", c.check.kind(), c.reason);
        }
        if !p.passed {
            println!("         reply: {:?}", shorten(&p.reply, 160));
        }
    }
    println!("pass rate per check:");
    for c in &r.by_check {
        println!(
            "  {:<16} {}  ({}/{})",
            c.kind,
            percent(c.rate.rate),
            c.rate.passed,
            c.rate.total
        );
    }
    println!(
        "checks passed: {}  ({}/{})",
        percent(r.checks.rate),
        r.checks.passed,
        r.checks.total
    );
    println!(
        "prompts with every check passed: {}  ({}/{})",
        percent(r.prompts_passed.rate),
        r.prompts_passed.passed,
        r.prompts_passed.total
    );
}

fn shorten(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if s.chars().count() > max {
        out.push('…');
    }
    out
}
