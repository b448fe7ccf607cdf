//! `dataset pairs`: the batch form of rating replies for the identity kind of preference
//! set, with a progress line per pair. The pairs are built by `train::pairs` (each
//! record's answer chosen, the model's own greedy answer rejected, with who wrote which
//! and the sampling settings in each record) and written in TRL's message layout.

use std::path::Path;
use std::sync::atomic::AtomicBool;

use anyhow::Context;

use crate::infer::Sampling;
use crate::train::pairs::{build_pairs, write_pairs, PairOptions};

/// Writes the pairs of `dataset` (after `replace`) to `out`; returns how many it wrote.
pub fn run(
    dataset: &crate::data::Dataset,
    model_spec: &str,
    adapter: Option<&Path>,
    replace: &[(String, String)],
    max_new_tokens: usize,
    out: &Path,
) -> anyhow::Result<usize> {
    let model = super::load_model(model_spec)?;
    let lora = match adapter {
        Some(dir) => Some(
            crate::adapter::read_adapter(dir, model.config(), model.transformer.device())
                .with_context(|| format!("loading the adapter {}", dir.display()))?
                .lora,
        ),
        None => None,
    };
    let chosen_by = match dataset.path().and_then(|p| p.file_name()) {
        Some(name) => format!("dataset {}", name.to_string_lossy()),
        None => "dataset".to_string(),
    };
    let opts = PairOptions {
        replace: replace.to_vec(),
        max_new_tokens,
        sampling: Sampling::greedy(),
        chosen_by,
        adapter: adapter.map(|a| a.display().to_string()),
    };
    let cancel = AtomicBool::new(false);
    let mut n = 0usize;
    let outcome = build_pairs(
        &model,
        lora.as_ref(),
        dataset,
        &opts,
        &cancel,
        &mut |pair| {
            n += 1;
            eprintln!("pair {n}: {}", pair.last_user_text());
        },
    )
    .map_err(anyhow::Error::msg)?;
    if outcome.same > 0 {
        eprintln!(
            "{} records skipped: the model already answers them as the data does",
            outcome.same
        );
    }
    if outcome.blank > 0 {
        eprintln!(
            "{} records skipped: the model's answer was blank",
            outcome.blank
        );
    }
    if outcome.pairs.is_empty() {
        anyhow::bail!(
            "no pair was made: no record ends with an assistant turn the model answers differently"
        );
    }
    let n = outcome.pairs.len();
    write_pairs(outcome.pairs, out).map_err(anyhow::Error::msg)?;
    Ok(n)
}
