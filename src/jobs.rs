//! The one way the studio starts a background thread (GUI and CLI alike): [`spawn`] (a job with a channel of
//! its own) or [`spawn_into`] (a job that reports into a channel several jobs share).
//!
//! Either way the thread is named, a panic inside it is caught, and the job's last event
//! is always sent: the work's own final event when it returns `Ok`, or the event type's
//! [`JobEvent::failed`] with the job's [`JobKind`] and the error (or the panic's message)
//! when it returns `Err` or panics. The receiving side, [`JobEvents`], turns a channel
//! that closes before its final event into a failure too, so no tab can wait for a thread
//! that is gone.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender, TryRecvError};

/// How soon after a send the window repaints.
pub const WAKE_WITHIN: std::time::Duration = std::time::Duration::from_millis(33);

/// Wakes the UI after a send. Sends within 33 ms merge into one repaint: a reply streams at
/// 30 frames a second however fast its tokens come, and a window painted on the CPU does
/// not take a core from the decoding.
#[derive(Clone)]
pub struct Waker(Arc<dyn Fn() + Send + Sync>);

impl Waker {
    /// A waker that asks `ctx` for a repaint within [`WAKE_WITHIN`].
    pub fn from_ctx(ctx: &eframe::egui::Context) -> Self {
        let ctx = ctx.clone();
        Waker(Arc::new(move || ctx.request_repaint_after(WAKE_WITHIN)))
    }

    /// A waker that does nothing (the CLI, and tests that poll).
    pub fn noop() -> Self {
        Waker(Arc::new(|| {}))
    }

    pub fn wake(&self) {
        (self.0)()
    }
}

/// What a background job does, for routing its failure to the tab that waits for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    OpenDataset,
    RecoverDataset,
    DiscardRecovery,
    AutosaveDataset,
    SaveDataset,
    AnalyzeDataset,
    SearchDataset,
    CheckContamination,
    ScoreRecords,
    ListRuns,
    DeleteRun,
    ListModels,
    FileDialog,
    LoadModel,
    Chat,
    BatchCompare,
    SuiteCompare,
    Judge,
    Export,
    Handoff,
    ImportRun,
    WriteFile,
    PlanRun,
    Train,
}

impl JobKind {
    /// The job in words, for notifications ("Saving the dataset failed").
    pub fn describe(self) -> &'static str {
        match self {
            JobKind::OpenDataset => "Opening the dataset",
            JobKind::RecoverDataset => "Restoring the unsaved edits",
            JobKind::DiscardRecovery => "Removing the unsaved edits",
            JobKind::AutosaveDataset => "Autosaving the unsaved edits",
            JobKind::SaveDataset => "Saving the dataset",
            JobKind::AnalyzeDataset => "Computing dataset statistics",
            JobKind::SearchDataset => "Searching the dataset",
            JobKind::CheckContamination => "The contamination check",
            JobKind::ScoreRecords => "Scoring the records",
            JobKind::ListRuns => "Reading the runs folder",
            JobKind::DeleteRun => "Deleting the run",
            JobKind::ListModels => "Looking for models",
            JobKind::FileDialog => "Opening a file dialog",
            JobKind::LoadModel => "Loading the model",
            JobKind::Chat => "Generating a reply",
            JobKind::BatchCompare => "Batch compare",
            JobKind::SuiteCompare => "The eval suite run",
            JobKind::Judge => "Judging A against B",
            JobKind::Export => "The export",
            JobKind::Handoff => "Writing the hand-off project",
            JobKind::ImportRun => "Importing the engine's run",
            JobKind::WriteFile => "Writing the file",
            JobKind::PlanRun => "Estimating the run",
            JobKind::Train => "The training run",
        }
    }
}

/// An event type whose stream ends with one final event.
pub trait JobEvent: Send + Sized + 'static {
    /// The final event of a job that failed, panicked or vanished.
    fn failed(kind: JobKind, error: String) -> Self;
    /// Whether this event ends its job's stream.
    fn is_final(&self) -> bool;
}

/// The job's side of its channel: sends events and wakes the UI.
pub struct Reporter<E> {
    tx: Sender<E>,
    waker: Waker,
    /// Set when the receiver is gone or [`JobEvents::cancel`] was called.
    cancel: Arc<AtomicBool>,
    kind: JobKind,
}

impl<E> Clone for Reporter<E> {
    fn clone(&self) -> Self {
        Reporter {
            tx: self.tx.clone(),
            waker: self.waker.clone(),
            cancel: self.cancel.clone(),
            kind: self.kind,
        }
    }
}

/// A channel several jobs report into (the dataset worker's): each job started with
/// [`spawn_into`] gets a [`Reporter`] into it that carries the job's own kind.
pub struct SharedChannel<E> {
    tx: Sender<E>,
    waker: Waker,
    /// Set when the receiver is gone.
    cancel: Arc<AtomicBool>,
}

impl<E: JobEvent> SharedChannel<E> {
    pub fn new(tx: Sender<E>, waker: Waker) -> Self {
        SharedChannel {
            tx,
            waker,
            cancel: Arc::new(AtomicBool::new(false)),
        }
    }
}

impl<E: JobEvent> Reporter<E> {
    /// Sends an event and wakes the UI. Blocks while the channel is full (the UI drains
    /// it every frame). When nobody listens any more, the job is marked cancelled.
    pub fn send(&self, event: E) {
        if self.tx.send(event).is_err() {
            self.cancel.store(true, Ordering::Relaxed);
        }
        self.waker.wake();
    }

    /// Whether the job should stop: cancelled, or nobody listens.
    pub fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The flag behind [`Reporter::cancelled`], for loops that take an `&AtomicBool`.
    pub fn cancel_flag(&self) -> &AtomicBool {
        &self.cancel
    }
}

/// The UI's side of a job started with [`spawn`].
pub struct JobEvents<E> {
    rx: Receiver<E>,
    cancel: Arc<AtomicBool>,
    kind: JobKind,
    ended: bool,
}

impl<E: JobEvent> JobEvents<E> {
    /// The next event, if one is waiting. A channel that closed before its final event
    /// yields one failure event, then nothing.
    pub fn try_recv(&mut self) -> Option<E> {
        if self.ended {
            return None;
        }
        match self.rx.try_recv() {
            Ok(event) => Some(self.took(event)),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(self.vanished()),
        }
    }

    /// The next event, waiting for it (the CLI's loop). `None` once the final event has
    /// been taken; a channel that closed before it yields one failure event first.
    pub fn recv(&mut self) -> Option<E> {
        if self.ended {
            return None;
        }
        Some(match self.rx.recv() {
            Ok(event) => self.took(event),
            Err(_) => self.vanished(),
        })
    }

    fn took(&mut self, event: E) -> E {
        self.ended = event.is_final();
        event
    }

    /// The failure that stands in for the final event of a job whose thread is gone.
    fn vanished(&mut self) -> E {
        self.ended = true;
        E::failed(
            self.kind,
            "its background thread ended without reporting a result".into(),
        )
    }

    /// Whether the final event has been taken.
    pub fn has_ended(&self) -> bool {
        self.ended
    }

    /// Asks the job to stop at its next check.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }
}

impl<E> Drop for JobEvents<E> {
    fn drop(&mut self) {
        // Nobody reads the job's events any more.
        self.cancel.store(true, Ordering::Relaxed);
    }
}

/// Starts `work` on a thread named `name`, with a channel of `capacity` events of its own.
/// `work` sends its progress through the reporter and returns its final event.
pub fn spawn<E: JobEvent>(
    kind: JobKind,
    name: impl Into<String>,
    capacity: usize,
    waker: Waker,
    work: impl FnOnce(&Reporter<E>) -> anyhow::Result<E> + Send + 'static,
) -> JobEvents<E> {
    let (tx, rx) = crossbeam_channel::bounded(capacity.max(1));
    let cancel = Arc::new(AtomicBool::new(false));
    let reporter = Reporter {
        tx,
        waker,
        cancel: cancel.clone(),
        kind,
    };
    start(name.into(), reporter, work);
    JobEvents {
        rx,
        cancel,
        kind,
        ended: false,
    }
}

/// Starts `work` on a thread named `name`, reporting into `channel` under `kind`.
pub fn spawn_into<E: JobEvent>(
    kind: JobKind,
    name: impl Into<String>,
    channel: &SharedChannel<E>,
    work: impl FnOnce(&Reporter<E>) -> anyhow::Result<E> + Send + 'static,
) {
    let reporter = Reporter {
        tx: channel.tx.clone(),
        waker: channel.waker.clone(),
        cancel: channel.cancel.clone(),
        kind,
    };
    start(name.into(), reporter, work);
}

fn start<E: JobEvent>(
    name: String,
    reporter: Reporter<E>,
    work: impl FnOnce(&Reporter<E>) -> anyhow::Result<E> + Send + 'static,
) {
    let kind = reporter.kind;
    let fallback = reporter.clone();
    let spawned = std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                #[cfg(feature = "test-support")]
                fault::strike(kind);
                work(&reporter)
            }));
            let last = match outcome {
                Ok(Ok(event)) => event,
                Ok(Err(e)) => E::failed(kind, format!("{e:#}")),
                Err(panic) => E::failed(
                    kind,
                    format!("internal error: {}", panic_message(panic.as_ref())),
                ),
            };
            reporter.send(last);
        });
    if let Err(e) = spawned {
        fallback.send(E::failed(
            kind,
            format!("cannot start the thread `{name}`: {e}"),
        ));
    }
}

/// Faults injected into jobs, for the tests that check every tab recovers from a job that
/// panics. Only in builds with the `test-support` feature (the tests'), never the studio's.
#[cfg(feature = "test-support")]
pub mod fault {
    use std::sync::Mutex;

    use super::JobKind;

    static ARMED: Mutex<Vec<JobKind>> = Mutex::new(Vec::new());

    /// Makes the next job of `kind` panic as it starts.
    pub fn panic_next(kind: JobKind) {
        ARMED.lock().unwrap_or_else(|p| p.into_inner()).push(kind);
    }

    /// Whether a fault for `kind` is still armed (no such job has started since).
    pub fn is_armed(kind: JobKind) -> bool {
        ARMED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains(&kind)
    }

    pub(super) fn strike(kind: JobKind) {
        let hit = {
            let mut armed = ARMED.lock().unwrap_or_else(|p| p.into_inner());
            match armed.iter().position(|k| *k == kind) {
                Some(i) => {
                    armed.remove(i);
                    true
                }
                None => false,
            }
        };
        if hit {
            panic!("a fault injected into a {kind:?} job");
        }
    }
}

/// The message of a caught panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[derive(Debug, PartialEq)]
    enum Ev {
        Progress(u32),
        Done(u32),
        Failed(JobKind, String),
    }

    impl JobEvent for Ev {
        fn failed(kind: JobKind, error: String) -> Self {
            Ev::Failed(kind, error)
        }
        fn is_final(&self) -> bool {
            matches!(self, Ev::Done(_) | Ev::Failed(..))
        }
    }

    fn drain(job: &mut JobEvents<Ev>) -> Vec<Ev> {
        let t0 = Instant::now();
        let mut out = Vec::new();
        while !job.has_ended() {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the job never ended"
            );
            match job.try_recv() {
                Some(e) => out.push(e),
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
        assert!(job.try_recv().is_none(), "an event after the final one");
        out
    }

    #[test]
    fn a_job_sends_its_progress_then_its_final_event() {
        let mut job = spawn(JobKind::Export, "t-ok", 4, Waker::noop(), |r| {
            r.send(Ev::Progress(1));
            r.send(Ev::Progress(2));
            Ok(Ev::Done(3))
        });
        assert_eq!(
            drain(&mut job),
            vec![Ev::Progress(1), Ev::Progress(2), Ev::Done(3)]
        );
    }

    #[test]
    fn an_error_ends_the_job_with_its_kind_and_cause() {
        let mut job = spawn(JobKind::SaveDataset, "t-err", 4, Waker::noop(), |_| {
            Err(anyhow::anyhow!("disk full").context("/tmp/x.json"))
        });
        assert_eq!(
            drain(&mut job),
            vec![Ev::Failed(
                JobKind::SaveDataset,
                "/tmp/x.json: disk full".into()
            )]
        );
    }

    #[test]
    fn a_panic_ends_the_job_as_a_failure_of_its_kind() {
        for kind in [JobKind::Chat, JobKind::LoadModel, JobKind::Train] {
            let mut job = spawn(kind, "t-panic", 4, Waker::noop(), |r| {
                r.send(Ev::Progress(1));
                panic!("index out of bounds")
            });
            let events = drain(&mut job);
            assert_eq!(events[0], Ev::Progress(1));
            match &events[1] {
                Ev::Failed(k, e) => {
                    assert_eq!(*k, kind);
                    assert!(e.contains("index out of bounds"), "{e}");
                }
                other => panic!("expected a failure, got {other:?}"),
            }
        }
    }

    #[test]
    fn a_channel_closed_before_the_final_event_is_a_failure() {
        let (tx, rx) = crossbeam_channel::bounded::<Ev>(4);
        tx.send(Ev::Progress(1)).unwrap();
        drop(tx);
        let mut job = JobEvents {
            rx,
            cancel: Arc::new(AtomicBool::new(false)),
            kind: JobKind::BatchCompare,
            ended: false,
        };
        let events = drain(&mut job);
        assert_eq!(events[0], Ev::Progress(1));
        assert!(matches!(events[1], Ev::Failed(JobKind::BatchCompare, _)));
    }

    #[test]
    fn dropping_the_receiver_cancels_the_job() {
        let (seen_tx, seen_rx) = crossbeam_channel::bounded(1);
        let job = spawn(JobKind::Chat, "t-cancel", 1, Waker::noop(), move |r| {
            let t0 = Instant::now();
            while !r.cancelled() {
                assert!(t0.elapsed() < Duration::from_secs(10));
                std::thread::sleep(Duration::from_millis(1));
            }
            seen_tx.send(()).ok();
            Ok(Ev::Done(0))
        });
        drop(job);
        assert!(seen_rx.recv_timeout(Duration::from_secs(10)).is_ok());
    }

    #[test]
    fn jobs_in_a_shared_channel_each_end_under_their_kind() {
        let (tx, rx) = crossbeam_channel::bounded::<Ev>(8);
        let shared = SharedChannel::new(tx, Waker::noop());
        spawn_into(JobKind::AnalyzeDataset, "t-a", &shared, |_| {
            panic!("bad record")
        });
        spawn_into(JobKind::SaveDataset, "t-b", &shared, |_| Ok(Ev::Done(7)));
        let mut got = [
            rx.recv_timeout(Duration::from_secs(10)).unwrap(),
            rx.recv_timeout(Duration::from_secs(10)).unwrap(),
        ];
        got.sort_by_key(|e| matches!(e, Ev::Done(_)));
        assert!(
            matches!(&got[0], Ev::Failed(JobKind::AnalyzeDataset, e) if e.contains("bad record"))
        );
        assert_eq!(got[1], Ev::Done(7));
    }
}
