//! Background threads for the studio window. The UI sends a typed [`Command`] and reads
//! [`Event`]s with `try_recv` each frame; every send wakes the UI through [`Waker`].
//! Nothing here holds GUI state, and the UI thread never waits on a worker.
//!
//! - [`Worker`]: one named thread for dataset work (load, save, analyze, search) and
//!   short-lived named threads for file dialogs, which may block for as long as the user
//!   keeps them open (or forever, on a desktop without a portal).
//! - [`model_loader`]: loads a model on its own thread, fetching the default one first.
//! - [`chat_job`]: one chat reply per pane, streamed from its own thread.
//! - [`export_job`]: one export (PEFT, merged, GGUF) with its read-back check.
//! - [`handoff_job`]: a run written for LLaMA-Factory or axolotl, or their output imported.
//! - [`batch_job`]: batch compare, a list of prompts through every pane, a thread per pane.
//! - [`judge_job`]: batch compare's two panes' replies judged pairwise by a local model.
//! - [`suite_job`]: an eval suite through every batch-compare pane, one pane after another.

pub mod batch_job;
pub mod chat_job;
mod commands;
mod dataset_jobs;
mod dialog;
pub mod export_job;
pub mod file_write;
pub mod handoff_job;
pub mod judge_job;
pub mod model_loader;
pub mod plan_job;
mod score_job;
pub mod suite_job;
pub mod train_job;

use std::collections::HashMap;
use std::sync::Mutex;

use crossbeam_channel::Receiver;

use crate::jobs::{self, SharedChannel};
pub use crate::jobs::{JobKind, Waker};
pub use commands::{Analysis, Command, DialogPurpose, Event, ScoreSet};

/// How many events may wait before a job's send blocks.
const CHANNEL_CAPACITY: usize = 256;

/// The dataset, run and model-scan jobs and the file dialogs, all reporting into one
/// channel the window drains each frame. Each command runs as its own job (so a save never
/// waits behind a long analysis); an analysis or a search that arrives while one of its
/// kind runs waits for it, and only the newest waiting one runs.
pub struct Worker {
    events: Receiver<Event>,
    channel: SharedChannel<Event>,
    /// The kinds that run one at a time, with whether one is running and the newest
    /// command waiting for it.
    /// (Locked by the UI thread only; a mutex so that `send` takes `&self`.)
    coalesced: Mutex<HashMap<JobKind, (bool, Option<Command>)>>,
}

impl Worker {
    /// Creates the worker; it starts a thread per command.
    pub fn spawn(waker: Waker) -> Self {
        let (tx, rx) = crossbeam_channel::bounded::<Event>(CHANNEL_CAPACITY);
        Worker {
            events: rx,
            channel: SharedChannel::new(tx, waker),
            coalesced: Mutex::new(HashMap::new()),
        }
    }

    /// Starts a command's job. Never blocks; a job that cannot start reports
    /// [`Event::Failed`] on the event channel.
    pub fn send(&self, cmd: Command) {
        let kind = cmd.kind();
        if matches!(kind, JobKind::AnalyzeDataset | JobKind::SearchDataset) {
            let mut coalesced = self.coalesced.lock().unwrap_or_else(|p| p.into_inner());
            let (running, waiting) = coalesced.entry(kind).or_default();
            if *running {
                *waiting = Some(cmd);
                return;
            }
            *running = true;
        }
        self.start(cmd);
    }

    fn start(&self, cmd: Command) {
        let kind = cmd.kind();
        if let Command::PickFile {
            purpose,
            save,
            start,
        } = cmd
        {
            jobs::spawn_into(kind, "file-dialog", &self.channel, move |_| {
                Ok(dialog::pick(purpose, save, start))
            });
            return;
        }
        if let Command::ScoreRecords { .. } = cmd {
            jobs::spawn_into(kind, "score-records", &self.channel, move |reporter| {
                score_job::run(cmd, reporter)
            });
            return;
        }
        jobs::spawn_into(kind, format!("{kind:?}"), &self.channel, move |_| {
            dataset_jobs::run(cmd)
        });
    }

    /// The next event, if one is waiting.
    pub fn try_recv(&self) -> Option<Event> {
        let event = self.events.try_recv().ok()?;
        if let Some(kind) = event.ends_coalesced() {
            let mut coalesced = self.coalesced.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((running, waiting)) = coalesced.get_mut(&kind) {
                match waiting.take() {
                    Some(next) => self.start(next),
                    None => *running = false,
                }
            }
        }
        Some(event)
    }
}
