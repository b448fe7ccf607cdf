//! The data side of a run: load the dataset named in the config, apply its text
//! replacements, split train/eval, tokenize every conversation (in parallel), and lay the
//! examples out as micro-batches for each epoch, reproducibly from the seed.

use std::path::Path;

use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use sha2::Digest;

use super::batch::{self, Example, PackedRow};
use super::config::RunConfig;
use crate::model::{ChatMessage, Model};

/// Tokenized examples ready for training.
pub struct PreparedData {
    pub train: Vec<Example>,
    pub eval: Vec<Example>,
    pub records: usize,
    /// Samples cut at the maximum length.
    pub truncated: usize,
    /// Records skipped: invalid, or with no token to train on.
    pub skipped: usize,
    /// SHA-256 of the dataset file, recorded in run.toml.
    pub dataset_sha256: String,
}

/// Loads the dataset the config names (a file, or an entry of a `dataset_info.json`).
pub fn load_dataset(cfg: &RunConfig) -> anyhow::Result<crate::data::Dataset> {
    let path = &cfg.data.path;
    let format = match &cfg.data.format {
        Some(f) => Some(f.parse::<crate::data::Format>()?),
        None => None,
    };
    let ds = match &cfg.data.dataset_info_entry {
        Some(entry) => crate::data::load_dataset_info_entry(path, entry)?,
        None => crate::data::load(path, format)?,
    };
    Ok(ds)
}

pub(crate) fn sha256_file(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(bytes) => format!("{:x}", sha2::Sha256::digest(&bytes)),
        Err(_) => String::new(),
    }
}

/// Loads, splits and tokenizes the run's data. `log` receives warnings for the user.
pub fn prepare(
    cfg: &RunConfig,
    model: &Model,
    log: &mut dyn FnMut(String),
) -> anyhow::Result<PreparedData> {
    if cfg.stage.is_preference() {
        return super::preference::prepare(cfg, model, log);
    }
    let mut ds = load_dataset(cfg)?;
    let records = ds.len();
    if !cfg.data.replace.is_empty() {
        let n = ds
            .conversations
            .iter_mut()
            .map(|c| c.replace_text(&cfg.data.replace))
            .filter(|&changed| changed)
            .count();
        log(format!("replaced placeholders in {n} of {records} records"));
    }
    if cfg.data.strip_reasoning {
        let n = ds
            .conversations
            .iter_mut()
            .map(crate::data::reasoning::strip_record)
            .filter(|&changed| changed)
            .count();
        log(format!(
            "removed reasoning blocks from {n} of {records} records"
        ));
    }
    let invalid: std::collections::HashSet<usize> = ds.invalid_records().into_iter().collect();
    if !invalid.is_empty() {
        log(format!(
            "skipping {} invalid records (see the dataset's problems list)",
            invalid.len()
        ));
    }
    let split = cfg.split(records);
    let mut counts = Counts {
        skipped: invalid.len(),
        truncated: 0,
    };
    let train = counts.keep_trainable(tokenize(&ds, &split.train, &invalid, cfg, model))?;
    let eval = counts.keep_trainable(tokenize(&ds, &split.eval, &invalid, cfg, model))?;
    let Counts { skipped, truncated } = counts;
    if truncated > 0 {
        log(format!(
            "{truncated} samples are longer than {} tokens and were truncated",
            cfg.data.max_seq_len
        ));
    }
    if train.is_empty() {
        anyhow::bail!(
            "no training example has a token to train on ({} records, {skipped} skipped): check that the conversations have assistant turns and fit in {} tokens",
            records,
            cfg.data.max_seq_len
        );
    }
    Ok(PreparedData {
        train,
        eval,
        records,
        truncated,
        skipped,
        dataset_sha256: sha256_file(&cfg.data.path),
    })
}

/// The records at `indices` (less the invalid ones) through the chat template and the
/// tokenizer, in parallel.
fn tokenize(
    ds: &crate::data::Dataset,
    indices: &[usize],
    invalid: &std::collections::HashSet<usize>,
    cfg: &RunConfig,
    model: &Model,
) -> Vec<anyhow::Result<Example>> {
    indices
        .par_iter()
        .filter(|i| !invalid.contains(i))
        .map(|&i| {
            let msgs: Vec<ChatMessage> = ds.conversations[i]
                .to_chat_messages()
                .into_iter()
                .map(|(r, c)| ChatMessage::new(r, c))
                .collect();
            batch::tokenize_conversation(
                model,
                &msgs,
                cfg.data.max_seq_len,
                cfg.data.train_on_prompt,
            )
            .map_err(|e| anyhow::anyhow!("record {i}: {e}"))
        })
        .collect()
}

/// What preparing the data left out or cut.
struct Counts {
    skipped: usize,
    truncated: usize,
}

impl Counts {
    /// The examples with a token to train on; counts the truncated and the skipped.
    fn keep_trainable(
        &mut self,
        results: Vec<anyhow::Result<Example>>,
    ) -> anyhow::Result<Vec<Example>> {
        let mut out = Vec::with_capacity(results.len());
        for r in results {
            let ex = r?;
            if ex.truncated {
                self.truncated += 1;
            }
            if ex.trained_tokens() == 0 {
                self.skipped += 1;
                continue;
            }
            out.push(ex);
        }
        Ok(out)
    }
}

/// The rows of one epoch, in training order: shuffled from `seed + epoch`, then packed
/// (or padded one sample per row).
pub fn epoch_rows(examples: &[Example], cfg: &RunConfig, epoch: usize) -> Vec<PackedRow> {
    if cfg.stage.is_preference() {
        return super::preference::epoch_rows(examples, cfg, epoch);
    }
    let mut order: Vec<usize> = (0..examples.len()).collect();
    let mut rng =
        rand::rngs::StdRng::seed_from_u64(cfg.training.seed.wrapping_add(epoch as u64 * 1_000_003));
    order.shuffle(&mut rng);
    let refs: Vec<&Example> = order.iter().map(|&i| &examples[i]).collect();
    let mut rows = rows_for(&refs, cfg.data.packing, cfg.data.max_seq_len);
    // Packing sorts by length; the rows go out in a seeded random order again.
    if cfg.data.packing {
        rows.shuffle(&mut rng);
    }
    rows
}

/// Packs `examples` into rows of `max_len`, or gives each its own row, in order.
pub fn rows_for(examples: &[&Example], packing: bool, max_len: usize) -> Vec<PackedRow> {
    if packing {
        batch::pack(examples, max_len)
    } else {
        examples
            .iter()
            .filter(|e| !e.ids.is_empty())
            .map(|e| batch::single_row(e))
            .collect()
    }
}

/// A micro-batch as tensors: its rows laid end to end as one sequence `[1, tokens]`.
/// Attention stays within each sample (the segment ids), so the rows need no padding to a
/// common length and no work goes to padding.
pub struct MicroBatch {
    pub ids: Tensor,
    pub positions: Tensor,
    pub segments: Tensor,
    /// Next-token targets per position.
    pub targets: Vec<Option<u32>>,
    pub tokens: usize,
    pub trained_tokens: usize,
}

/// Lays `rows` end to end into one micro-batch, numbering their samples apart.
pub fn micro_batch(rows: &[PackedRow], device: &Device) -> candle_core::Result<MicroBatch> {
    let (mut ids, mut pos, mut seg) = (Vec::<u32>::new(), Vec::<u32>::new(), Vec::<u32>::new());
    let mut targets: Vec<Option<u32>> = Vec::new();
    let mut first_segment = 0;
    for r in rows {
        ids.extend(&r.ids);
        pos.extend(&r.positions);
        seg.extend(r.segments.iter().map(|s| first_segment + s));
        targets.extend(&r.targets);
        first_segment += r.segments.iter().max().map_or(0, |m| m + 1);
    }
    if ids.is_empty() {
        candle_core::bail!("a micro-batch with no tokens");
    }
    let tokens = ids.len();
    let trained_tokens = targets.iter().filter(|x| x.is_some()).count();
    Ok(MicroBatch {
        ids: Tensor::from_vec(ids, (1, tokens), device)?,
        positions: Tensor::from_vec(pos, (1, tokens), device)?,
        segments: Tensor::from_vec(seg, (1, tokens), device)?,
        targets,
        tokens,
        trained_tokens,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ids: &[u32], segments: &[u32]) -> PackedRow {
        PackedRow {
            ids: ids.to_vec(),
            targets: ids.iter().map(|&i| (i % 2 == 0).then_some(i)).collect(),
            positions: (0..ids.len() as u32).collect(),
            segments: segments.to_vec(),
        }
    }

    /// Rows of different lengths go end to end with no padding, and the samples of the
    /// second row get ids of their own, so no attention crosses from one row into the next.
    #[test]
    fn a_micro_batch_is_its_rows_end_to_end() {
        let rows = [row(&[1, 2, 3], &[0, 0, 1]), row(&[4, 5], &[0, 0])];
        let mb = micro_batch(&rows, &Device::Cpu).unwrap();
        assert_eq!(mb.ids.dims(), &[1, 5]);
        assert_eq!(mb.tokens, 5);
        assert_eq!(mb.ids.to_vec2::<u32>().unwrap(), vec![vec![1, 2, 3, 4, 5]]);
        assert_eq!(
            mb.segments.to_vec2::<u32>().unwrap(),
            vec![vec![0, 0, 1, 2, 2]]
        );
        assert_eq!(
            mb.positions.to_vec2::<u32>().unwrap(),
            vec![vec![0, 1, 2, 0, 1]]
        );
        assert_eq!(mb.targets, vec![None, Some(2), None, Some(4), None]);
        assert_eq!(mb.trained_tokens, 2);
        assert!(micro_batch(&[], &Device::Cpu).is_err());
    }
}
