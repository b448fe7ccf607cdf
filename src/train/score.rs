//! Per-record scores under a model and an optional adapter: the mean loss over the tokens
//! a run would train (the assistant turns, rendered with the chat template and masked as
//! the trainer masks them), its perplexity, and the IFD, instruction-following difficulty
//! (Li et al., 2023, "From Quantity to Quality"): that loss divided by the loss of the
//! assistant text alone, without the conversation before it. An IFD near or above 1 says
//! the instruction hardly helps to predict the answer.
//!
//! Records are scored in micro-batches laid end to end, each in its own segment, through
//! the same forward and chunked loss as the trainer's evaluation.

use crate::data::Conversation;
use crate::model::lora::LoraSet;
use crate::model::{ChatMessage, Forward, Layout, Model};

use super::batch::{self, Example};
use super::data;

/// Tokens a scoring forward takes at once.
const TOKENS_PER_BATCH: usize = 2048;

/// The scores of one record.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RecordScore {
    /// Tokens scored (the trained tokens of the record).
    pub tokens: usize,
    /// Mean cross-entropy over them, in nats.
    pub loss: f64,
    /// `exp(loss)`.
    pub perplexity: f64,
    /// `loss / loss of the assistant text alone`; absent when the assistant text alone has
    /// fewer than two tokens (nothing to predict).
    pub ifd: Option<f64>,
}

/// Why a record has no score.
pub type ScoreResult = Result<RecordScore, String>;

/// What a record is scored on: the conversation as trained, and the answer alone.
struct Prepared {
    conditioned: Example,
    alone: Option<Example>,
}

fn prepare(model: &Model, c: &Conversation, max_len: usize) -> Result<Prepared, String> {
    let msgs: Vec<ChatMessage> = c
        .to_chat_messages()
        .into_iter()
        .map(|(r, t)| ChatMessage::new(r, t))
        .collect();
    let conditioned = batch::tokenize_conversation(model, &msgs, max_len, false)
        .map_err(|e| format!("the chat template: {e}"))?;
    if conditioned.trained_tokens() == 0 {
        return Err("no assistant text to score".into());
    }
    let answer: Vec<&str> = c
        .messages
        .iter()
        .filter(|m| m.role.is_trained())
        .map(|m| m.content.as_str())
        .collect();
    let mut ids = model
        .tokenizer
        .encode(&answer.join("\n"), true)
        .map_err(|e| format!("tokenizing the answer: {e}"))?;
    ids.truncate(max_len);
    let alone = (ids.len() >= 2).then(|| Example {
        train: vec![true; ids.len()],
        ids,
        truncated: false,
    });
    Ok(Prepared { conditioned, alone })
}

/// Mean of each row's target losses, rows in order (`None` for a row with no target).
fn row_mean_losses(
    model: &Model,
    lora: Option<&LoraSet>,
    examples: &[&Example],
) -> anyhow::Result<Vec<Option<f64>>> {
    let rows = data::rows_for(examples, false, usize::MAX);
    let mut out = Vec::with_capacity(rows.len());
    let mut start = 0;
    while start < rows.len() {
        let mut end = start + 1;
        let mut tokens = rows[start].ids.len();
        while end < rows.len() && tokens + rows[end].ids.len() <= TOKENS_PER_BATCH {
            tokens += rows[end].ids.len();
            end += 1;
        }
        let group = &rows[start..end];
        let mb = data::micro_batch(group, model.transformer.device())?;
        let hidden = model.transformer.forward(
            &mb.ids,
            Forward {
                lora,
                layout: Layout::Packed {
                    positions: mb.positions.clone(),
                    segments: mb.segments.clone(),
                },
                // The training products (weight panels dequantized once, then gemm over
                // every token): many times faster than per-row dot products for the
                // thousands of tokens a batch of records holds. No gradient is taken.
                training_ops: true,
                ..Default::default()
            },
        )?;
        let hidden = hidden.reshape((mb.targets.len(), model.config().hidden_size))?;
        let losses = super::loss::token_losses(&model.transformer, &hidden, &mb.targets)?;
        let mut at = 0;
        for row in group {
            let n = row.trained_tokens();
            let sum: f64 = losses[at..at + n].iter().map(|&l| l as f64).sum();
            at += n;
            out.push((n > 0).then(|| sum / n as f64));
        }
        start = end;
    }
    Ok(out)
}

/// Scores `records` with `lora` on the model (the base alone when `None`), samples cut at
/// `max_len` tokens as a run would cut them. One result per record, in order; a record
/// that cannot be scored (no assistant turn, a template error) gets its reason.
pub fn score_records(
    model: &Model,
    lora: Option<&LoraSet>,
    records: &[&Conversation],
    max_len: usize,
) -> anyhow::Result<Vec<ScoreResult>> {
    let prepared: Vec<Result<Prepared, String>> =
        records.iter().map(|c| prepare(model, c, max_len)).collect();
    // Both examples of every record, in one list of rows: conditioned, then alone.
    let mut examples: Vec<&Example> = Vec::new();
    for p in prepared.iter().flatten() {
        examples.push(&p.conditioned);
        if let Some(a) = &p.alone {
            examples.push(a);
        }
    }
    let means = crate::ops::runtime::on_compute_pool(|| row_mean_losses(model, lora, &examples))?;
    let mut means = means.into_iter();
    let mut out = Vec::with_capacity(records.len());
    for p in prepared {
        let p = match p {
            Ok(p) => p,
            Err(e) => {
                out.push(Err(e));
                continue;
            }
        };
        let loss = means.next().flatten();
        let alone = if p.alone.is_some() {
            means.next().flatten()
        } else {
            None
        };
        out.push(match loss {
            Some(loss) if loss.is_finite() => Ok(RecordScore {
                tokens: p.conditioned.trained_tokens(),
                loss,
                perplexity: loss.exp(),
                ifd: alone.filter(|a| *a > 0.0).map(|a| loss / a),
            }),
            Some(loss) => Err(format!("the loss is {loss}")),
            None => Err("no assistant text to score".into()),
        });
    }
    Ok(out)
}

/// A record's content as a key for cached scores: an edit changes it.
pub fn content_key(c: &Conversation) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for (role, text) in c.to_chat_messages() {
        role.hash(&mut h);
        text.hash(&mut h);
    }
    h.finish()
}
