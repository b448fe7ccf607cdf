//! Batch compare on worker threads: a list of prompts run through several columns (the
//! base model, or the base plus an adapter, all on one shared `Arc<Model>`). Each column
//! gets its own named thread that answers the prompts in order, so the columns progress
//! together like the chat panes do; every finished reply comes back as an event over a
//! bounded channel, and one cancel flag stops every column after its current token.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::chat_job::{generate_reply, read_adapter, AdapterSpec};
use super::Waker;
use crate::infer::{GenerationStats, Sampling, StopReason};
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
}

/// A batch being run.
pub struct BatchJob {
    pub events: Receiver<BatchEvent>,
    cancel: Arc<AtomicBool>,
}

impl BatchJob {
    /// Asks every column to stop after its current token.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

impl Drop for BatchJob {
    fn drop(&mut self) {
        // Nobody reads the replies any more.
        self.cancel();
    }
}

/// Starts one thread per column, named `batch-<column>`.
pub fn spawn(req: BatchRequest, waker: Waker) -> BatchJob {
    let (tx, rx) = crossbeam_channel::bounded(CAPACITY);
    let cancel = Arc::new(AtomicBool::new(false));
    let prompts = Arc::new(req.prompts);
    for (column, adapter) in req.columns.into_iter().enumerate() {
        let sink = Sink {
            tx: tx.clone(),
            waker: waker.clone(),
            cancel: cancel.clone(),
        };
        let column_job = Column {
            model: req.model.clone(),
            adapter,
            prompts: prompts.clone(),
            sampling: req.sampling.clone(),
            max_new_tokens: req.max_new_tokens,
            column,
        };
        let fail = Sink {
            tx: tx.clone(),
            waker: waker.clone(),
            cancel: cancel.clone(),
        };
        let spawned = std::thread::Builder::new()
            .name(format!("batch-{column}"))
            .spawn(move || {
                column_job.run(&sink);
                sink.send(BatchEvent::ColumnDone { column });
            });
        if let Err(e) = spawned {
            fail.send(BatchEvent::Failed {
                row: None,
                column,
                error: format!("cannot start the generation thread: {e}"),
            });
            fail.send(BatchEvent::ColumnDone { column });
        }
    }
    BatchJob { events: rx, cancel }
}

struct Sink {
    tx: Sender<BatchEvent>,
    waker: Waker,
    cancel: Arc<AtomicBool>,
}

impl Sink {
    fn send(&self, e: BatchEvent) {
        if self.tx.send(e).is_err() {
            // The table is gone: stop generating for it.
            self.cancel.store(true, Ordering::Relaxed);
        }
        self.waker.wake();
    }

    fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

/// One column's share of the batch.
struct Column {
    model: Arc<Model>,
    adapter: AdapterSpec,
    prompts: Arc<Vec<Vec<ChatMessage>>>,
    sampling: Sampling,
    max_new_tokens: usize,
    column: usize,
}

impl Column {
    fn run(self, sink: &Sink) {
        let column = self.column;
        let lora: Option<Arc<LoraSet>> = match &self.adapter {
            AdapterSpec::None => None,
            AdapterSpec::Loaded(l) => Some(l.clone()),
            AdapterSpec::Folder(dir) => match read_adapter(&self.model, dir) {
                Ok(l) => Some(l),
                Err(error) => {
                    sink.send(BatchEvent::Failed {
                        row: None,
                        column,
                        error,
                    });
                    return;
                }
            },
        };
        for (row, messages) in self.prompts.iter().enumerate() {
            if sink.cancelled() {
                return;
            }
            sink.send(BatchEvent::Started { row, column });
            let reply = generate_reply(
                &self.model,
                lora.as_deref(),
                messages,
                &self.sampling,
                self.max_new_tokens,
                &sink.cancel,
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
    }
}
