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
//! - [`batch_job`]: batch compare, a list of prompts through every pane, a thread per pane.

pub mod batch_job;
pub mod chat_job;
mod commands;
mod dataset_jobs;
mod dialog;
pub mod export_job;
pub mod model_loader;
pub mod train_job;

use std::sync::Arc;
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};

pub use commands::{Analysis, Command, DialogPurpose, Event};

/// Wakes the UI after a send. Many sends within 10 ms merge into one repaint.
#[derive(Clone)]
pub struct Waker(Arc<dyn Fn() + Send + Sync>);

impl Waker {
    /// A waker that asks `ctx` for a repaint within 10 ms.
    pub fn from_ctx(ctx: &eframe::egui::Context) -> Self {
        let ctx = ctx.clone();
        Waker(Arc::new(move || {
            ctx.request_repaint_after(Duration::from_millis(10))
        }))
    }

    /// A waker that does nothing (tests that poll).
    pub fn noop() -> Self {
        Waker(Arc::new(|| {}))
    }

    pub fn wake(&self) {
        (self.0)()
    }

    /// The shared function, as the training engine takes it.
    pub fn as_arc(&self) -> Arc<dyn Fn() + Send + Sync> {
        self.0.clone()
    }
}

/// Sends events to the UI and wakes it.
#[derive(Clone)]
pub(crate) struct EventSink {
    tx: Sender<Event>,
    waker: Waker,
}

impl EventSink {
    pub(crate) fn send(&self, event: Event) {
        // A closed channel means the window is gone; nothing is waiting for the event.
        let _ = self.tx.send(event);
        self.waker.wake();
    }
}

/// How many commands or events may wait before a send blocks (the worker side) or fails
/// (the UI side, which never blocks).
const CHANNEL_CAPACITY: usize = 256;

/// The dataset worker and the dialog threads it starts.
pub struct Worker {
    commands: Sender<Command>,
    events: Receiver<Event>,
    sink: EventSink,
}

impl Worker {
    /// Starts the worker thread.
    pub fn spawn(waker: Waker) -> Self {
        let (cmd_tx, cmd_rx) = crossbeam_channel::bounded::<Command>(CHANNEL_CAPACITY);
        let (ev_tx, ev_rx) = crossbeam_channel::bounded::<Event>(CHANNEL_CAPACITY);
        let sink = EventSink { tx: ev_tx, waker };
        let thread_sink = sink.clone();
        let spawned = std::thread::Builder::new()
            .name("studio-worker".into())
            .spawn(move || {
                for cmd in cmd_rx {
                    // A job that panics (a reader bug on some file) fails alone; the
                    // worker stays up for the saves and autosaves that come after it.
                    let what = cmd.describe();
                    let job = std::panic::AssertUnwindSafe(|| dataset_jobs::run(cmd, &thread_sink));
                    if let Err(panic) = std::panic::catch_unwind(job) {
                        thread_sink.send(Event::Failed {
                            what,
                            error: format!("internal error: {}", panic_message(&panic)),
                        });
                    }
                }
            });
        if let Err(e) = spawned {
            sink.send(Event::Failed {
                what: "Starting the background worker".into(),
                error: e.to_string(),
            });
        }
        Worker {
            commands: cmd_tx,
            events: ev_rx,
            sink,
        }
    }

    /// Queues a command. Never blocks: a full queue or a dead worker becomes a
    /// [`Event::Failed`] on the event channel.
    pub fn send(&self, cmd: Command) {
        if let Command::PickFile {
            purpose,
            save,
            start,
        } = cmd
        {
            dialog::spawn(purpose, save, start, self.sink.clone());
            return;
        }
        let what = cmd.describe();
        match self.commands.try_send(cmd) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => self.sink.send(Event::Failed {
                what,
                error: "the background worker is busy; try again in a moment".into(),
            }),
            Err(TrySendError::Disconnected(_)) => self.sink.send(Event::Failed {
                what,
                error: "the background worker has stopped".into(),
            }),
        }
    }

    /// The next event, if one is waiting.
    pub fn try_recv(&self) -> Option<Event> {
        self.events.try_recv().ok()
    }
}

/// The message of a caught panic.
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}
