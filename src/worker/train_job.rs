//! A training run seen from the UI: the engine's event and command channels. The engine
//! (`crate::train`) owns the thread; this module starts or resumes it, sharing the model
//! the studio already holds when it is the run's base.

use std::path::Path;
use std::sync::Arc;

use crossbeam_channel::Sender;

use crate::jobs::{JobEvents, Waker};
use crate::model::Model;
use crate::train::{RunConfig, TrainCommand, TrainEvent};

/// A run in progress.
pub struct TrainJob {
    pub events: JobEvents<TrainEvent>,
    pub commands: Sender<TrainCommand>,
}

impl TrainJob {
    /// Sends a command; false when the run has already ended.
    pub fn send(&self, cmd: TrainCommand) -> bool {
        self.commands.try_send(cmd).is_ok()
    }
}

/// Starts a run of `config`. `model` is used when given (else the engine loads the base).
pub fn start(config: RunConfig, model: Option<Arc<Model>>, waker: &Waker) -> TrainJob {
    let h = crate::train::spawn(config, model, waker.clone());
    TrainJob {
        events: h.events,
        commands: h.commands,
    }
}

/// Resumes the run in `run_dir` from its last checkpoint.
pub fn resume(
    run_dir: &Path,
    model: Option<Arc<Model>>,
    waker: &Waker,
) -> anyhow::Result<TrainJob> {
    let h = crate::train::resume(run_dir, model, waker.clone())?;
    Ok(TrainJob {
        events: h.events,
        commands: h.commands,
    })
}
