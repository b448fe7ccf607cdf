//! The Datasets tab's scoring job: the records it is given scored with
//! [`crate::train::score`] a chunk at a time, each chunk sent as it is done so the table
//! fills in progressively, until the last one or a stop.

use std::sync::atomic::Ordering;

use anyhow::bail;

use super::{Command, Event};
use crate::jobs::Reporter;
use crate::train::score::score_records;

/// Records per chunk: small enough for the table to fill in steadily, large enough for
/// one forward to batch them.
const CHUNK: usize = 8;

/// Scores a [`Command::ScoreRecords`]; its last event says whether it was stopped.
pub(super) fn run(cmd: Command, reporter: &Reporter<Event>) -> anyhow::Result<Event> {
    let Command::ScoreRecords {
        id,
        set,
        model,
        adapter,
        records,
        max_len,
        cancel,
    } = cmd
    else {
        bail!("internal error: the scoring job got another command");
    };
    // Records are rendered with the template the adapter's run trained with.
    let model = super::chat_job::templated(
        &model,
        &super::chat_job::TemplateSpec::default(),
        adapter.as_deref(),
    )
    .map_err(anyhow::Error::msg)?;
    let lora = adapter
        .as_deref()
        .map(|dir| super::chat_job::read_adapter(&model, dir))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let total = records.len();
    let mut done = 0;
    for chunk in records.chunks(CHUNK) {
        if cancel.load(Ordering::Relaxed) || reporter.cancelled() {
            return Ok(Event::ScoringEnded {
                id,
                set,
                cancelled: true,
            });
        }
        let convs: Vec<&crate::data::Conversation> = chunk.iter().map(|(_, _, c)| c).collect();
        let scores = score_records(&model, lora.as_deref(), &convs, max_len)?;
        done += chunk.len();
        reporter.send(Event::RecordsScored {
            id,
            set,
            scores: chunk
                .iter()
                .zip(scores)
                .map(|((i, key, _), s)| (*i, *key, s))
                .collect(),
            done,
            total,
        });
    }
    Ok(Event::ScoringEnded {
        id,
        set,
        cancelled: false,
    })
}
