//! Batch compare on worker threads: a list of prompts run through several columns (the
//! base model, or the base plus an adapter, all on one shared `Arc<Model>`). Each column
//! is its own job that answers the prompts in order, so the columns progress together
//! like the chat panes do; every finished reply comes back as an event, and cancelling
//! stops every column after its current token.

use std::collections::VecDeque;
use std::sync::Arc;

use super::chat_job::{read_adapter, templated, AdapterSpec, TemplateSpec};
use crate::infer::{GenerationStats, Sampling, StopReason};
use crate::jobs::{self, JobEvent, JobEvents, JobKind, Reporter, Waker};
use crate::model::lora::LoraSet;
use crate::model::{ChatMessage, Model};

/// How many events may wait before a column thread waits for the UI.
const CAPACITY: usize = 256;

/// One finished reply.
#[derive(Debug, Clone)]
pub struct BatchReply {
    pub text: String,
    pub stop_reason: StopReason,
    pub stats: GenerationStats,
}

/// What a batch job reports. `row` indexes the prompts, `column` the adapters.
#[derive(Debug)]
pub enum BatchEvent {
    /// The column began generating the reply to `row`.
    Started { row: usize, column: usize },
    Reply {
        row: usize,
        column: usize,
        reply: BatchReply,
    },
    /// The reply to `row` failed; `row` is `None` when the whole column failed (its adapter
    /// could not be read).
    Failed {
        row: Option<usize>,
        column: usize,
        error: String,
    },
    /// The column has answered every prompt, or stopped.
    ColumnDone { column: usize },
}

/// A batch to run.
pub struct BatchRequest {
    pub model: Arc<Model>,
    /// One adapter per column.
    pub columns: Vec<AdapterSpec>,
    /// Each prompt's conversation: system (if any), then turns ending with a user turn.
    pub prompts: Vec<Vec<ChatMessage>>,
    pub sampling: Sampling,
    pub max_new_tokens: usize,
    /// The chat template every column renders with (`Own`: each adapter's own).
    pub template: TemplateSpec,
}

impl JobEvent for BatchEvent {
    fn failed(_kind: JobKind, error: String) -> Self {
        // The column is filled in by [`BatchJob::try_recv`], which knows whose job it was.
        BatchEvent::Failed {
            row: None,
            column: usize::MAX,
            error,
        }
    }
    fn is_final(&self) -> bool {
        matches!(
            self,
            BatchEvent::ColumnDone { .. } | BatchEvent::Failed { row: None, .. }
        )
    }
}

/// A batch being run: one job per column.
pub struct BatchJob {
    columns: Vec<JobEvents<BatchEvent>>,
    /// Events to hand out before polling the columns again.
    pending: VecDeque<BatchEvent>,
}

impl BatchJob {
    /// Asks every column to stop after its current token.
    pub fn cancel(&self) {
        for c in &self.columns {
            c.cancel();
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.columns.iter().any(|c| c.is_cancelled())
    }

    /// The next event of any column. A column that fails as a whole (its adapter cannot
    /// be read, its thread panics or vanishes) reports `Failed { row: None }` and then
    /// `ColumnDone`, like a column that finished.
    pub fn try_recv(&mut self) -> Option<BatchEvent> {
        if let Some(e) = self.pending.pop_front() {
            return Some(e);
        }
        for (column, job) in self.columns.iter_mut().enumerate() {
            if let Some(mut e) = job.try_recv() {
                if let BatchEvent::Failed {
                    row: None,
                    column: c,
                    ..
                } = &mut e
                {
                    *c = column;
                    self.pending.push_back(BatchEvent::ColumnDone { column });
                }
                return Some(e);
            }
        }
        None
    }

    /// Whether every column has ended and every event was taken.
    pub fn has_ended(&self) -> bool {
        self.pending.is_empty() && self.columns.iter().all(|c| c.has_ended())
    }
}

/// Starts one job per column, on threads named `batch-<column>`.
pub fn spawn(req: BatchRequest, waker: Waker) -> BatchJob {
    let prompts = Arc::new(req.prompts);
    let columns = req
        .columns
        .into_iter()
        .enumerate()
        .map(|(column, adapter)| {
            let column_job = Column {
                model: req.model.clone(),
                adapter,
                prompts: prompts.clone(),
                sampling: req.sampling.clone(),
                max_new_tokens: req.max_new_tokens,
                template: req.template.clone(),
                column,
            };
            jobs::spawn(
                JobKind::BatchCompare,
                format!("batch-{column}"),
                CAPACITY,
                waker.clone(),
                move |r| column_job.run(r),
            )
        })
        .collect();
    BatchJob {
        columns,
        pending: VecDeque::new(),
    }
}

/// One column's share of the batch.
struct Column {
    model: Arc<Model>,
    adapter: AdapterSpec,
    prompts: Arc<Vec<Vec<ChatMessage>>>,
    sampling: Sampling,
    max_new_tokens: usize,
    template: TemplateSpec,
    column: usize,
}

impl Column {
    fn run(self, sink: &Reporter<BatchEvent>) -> anyhow::Result<BatchEvent> {
        let column = self.column;
        let model = templated(&self.model, &self.template, self.adapter.dir())
            .map_err(anyhow::Error::msg)?;
        let lora: Option<Arc<LoraSet>> = match &self.adapter {
            AdapterSpec::None => None,
            AdapterSpec::Loaded { lora, .. } => Some(lora.clone()),
            AdapterSpec::Folder(dir) => {
                Some(read_adapter(&self.model, dir).map_err(anyhow::Error::msg)?)
            }
        };
        for (row, messages) in self.prompts.iter().enumerate() {
            if sink.cancelled() {
                break;
            }
            sink.send(BatchEvent::Started { row, column });
            let reply = crate::infer::chat_reply(
                &model,
                lora.as_deref(),
                messages,
                &self.sampling,
                self.max_new_tokens,
                sink.cancel_flag(),
                &mut |_| {},
            );
            match reply {
                Ok(g) => sink.send(BatchEvent::Reply {
                    row,
                    column,
                    reply: BatchReply {
                        text: g.text,
                        stop_reason: g.stop_reason,
                        stats: g.stats,
                    },
                }),
                Err(error) => sink.send(BatchEvent::Failed {
                    row: Some(row),
                    column,
                    error,
                }),
            }
        }
        Ok(BatchEvent::ColumnDone { column })
    }
}
