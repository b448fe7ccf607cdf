//! One export (`crate::export::job`) on its own named thread: progress lines while it
//! runs, then the report or the error. The base model is the one the studio holds when it
//! is the run's base, else the thread loads it.

use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::Waker;
use crate::export::job::{ExportReport, ExportRequest};
use crate::model::Model;

/// What the export thread reports.
#[derive(Debug)]
pub enum ExportEvent {
    Progress(String),
    Done(Box<ExportReport>),
    Failed(String),
}

/// The base model of an export.
pub enum Base {
    /// The model the studio already holds.
    Loaded(Arc<Model>),
    /// A `--model` spec to load first.
    Spec(String),
}

/// Starts `req` on a new thread.
pub fn spawn(base: Base, req: ExportRequest, waker: Waker) -> Receiver<ExportEvent> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let fail_tx = tx.clone();
    let spawned = std::thread::Builder::new()
        .name("export".into())
        .spawn(move || {
            let send = |e: ExportEvent| {
                // A closed channel means the dialog is gone; the files are still written.
                let _ = tx.send(e);
                waker.wake();
            };
            let model = match base {
                Base::Loaded(m) => m,
                Base::Spec(spec) => {
                    send(ExportEvent::Progress(format!(
                        "loading the base model {spec}"
                    )));
                    match crate::model::load(&spec) {
                        Ok(m) => Arc::new(m),
                        Err(e) => {
                            send(ExportEvent::Failed(format!("{e:#}")));
                            return;
                        }
                    }
                }
            };
            let run = std::panic::AssertUnwindSafe(|| {
                crate::export::job::export(&model, &req, &mut |line| {
                    send(ExportEvent::Progress(line.to_string()))
                })
            });
            send(match std::panic::catch_unwind(run) {
                Ok(Ok(report)) => ExportEvent::Done(Box::new(report)),
                Ok(Err(e)) => ExportEvent::Failed(format!("{e:#}")),
                Err(panic) => ExportEvent::Failed(format!(
                    "internal error while exporting: {}",
                    super::panic_message(&panic)
                )),
            });
        });
    if let Err(e) = spawned {
        let _ = fail_tx.send(ExportEvent::Failed(format!(
            "cannot start the export thread: {e}"
        )));
    }
    rx
}
