//! `finetune-studio dataset contamination FILE (--against FILE|builtin | --eval-split F)`:
//! the records of FILE that share an n-gram with another set, each with the matching text
//! and the other record's id. Exits with 1 when any record is flagged.

use std::path::Path;

use super::dataset::{load_input, InputArgs};
use crate::data::contamination::{self, ContaminationParams, ContaminationReport, Reference};
use crate::data::split::{split_indices, EvalSize};

/// What the records are checked against.
pub enum Other {
    /// A dataset file, a suite file or `builtin`.
    Against(String),
    /// The input's own eval split.
    EvalSplit { size: EvalSize, seed: u64 },
}

impl Other {
    pub fn from_args(
        against: Option<String>,
        eval_split: Option<f64>,
        seed: u64,
    ) -> anyhow::Result<Other> {
        match (against, eval_split) {
            (Some(a), None) => Ok(Other::Against(a)),
            (None, Some(f)) => {
                let size = if !f.is_finite() || f < 0.0 {
                    anyhow::bail!("--eval-split expects a fraction (0..1) or a count, got {f}")
                } else if f < 1.0 {
                    EvalSize::Ratio(f)
                } else if f.fract() == 0.0 {
                    EvalSize::Count(f as usize)
                } else {
                    anyhow::bail!("--eval-split from 1 up is a count of records, got {f}")
                };
                Ok(Other::EvalSplit { size, seed })
            }
            _ => anyhow::bail!("give --against or --eval-split"),
        }
    }
}

pub fn run(
    input: &InputArgs,
    other: Other,
    params: ContaminationParams,
    json: bool,
) -> anyhow::Result<i32> {
    if params.n == 0 {
        anyhow::bail!("--n must be at least 1");
    }
    let ds = load_input(input)?;
    let (report, against) = match other {
        Other::Against(spec) => {
            let refs = crate::eval::against::read_references(&spec)?;
            (contamination::check(ds.records(), &refs, params), spec)
        }
        Other::EvalSplit { size, seed } => {
            let split = split_indices(ds.len(), size, seed);
            let records = ds.records();
            let train: Vec<_> = split.train.iter().map(|&i| records[i].clone()).collect();
            let refs: Vec<Reference> = split
                .eval
                .iter()
                .map(|&i| Reference::from_record(i, &records[i]))
                .collect();
            let mut report = contamination::check(&train, &refs, params);
            // Back to the file's numbering.
            for f in &mut report.flagged {
                f.record = split.train[f.record];
                for o in &mut f.overlaps {
                    o.other_index = split.eval[o.other_index];
                }
            }
            report.records = ds.len();
            (
                report,
                format!("its eval split ({} records)", split.eval.len()),
            )
        }
    };
    if json {
        let mut v = serde_json::to_value(&report)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("file".into(), input.file.display().to_string().into());
            o.insert("against".into(), against.clone().into());
        }
        println!("{}", serde_json::to_string(&v)?);
    } else {
        print_report(&report, &ds, &input.file, &against);
    }
    Ok(if report.flagged.is_empty() { 0 } else { 1 })
}

fn print_report(r: &ContaminationReport, ds: &crate::data::Dataset, file: &Path, against: &str) {
    for f in &r.flagged {
        let line = ds
            .line_of(f.record)
            .map(|l| format!(" (line {l})"))
            .unwrap_or_default();
        println!("record {}{line}:", f.record);
        for o in &f.overlaps {
            println!(
                "  {} words shared with {}: {:?}",
                o.words, o.other_id, o.text
            );
        }
    }
    eprintln!(
        "{}: {} of {} records share a {}-word run with {against} ({} records)",
        file.display(),
        r.flagged.len(),
        r.records,
        r.n,
        r.references
    );
}
