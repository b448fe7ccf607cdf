//! A training run seen from the UI: the engine's event and command channels. The engine
//! (`crate::train`) owns the thread; this module only starts or resumes it.

use std::path::Path;

use crossbeam_channel::{Receiver, Sender};

use super::Waker;
use crate::train::{RunConfig, TrainCommand, TrainEvent};

/// A run in progress.
pub struct TrainJob {
    pub events: Receiver<TrainEvent>,
    pub commands: Sender<TrainCommand>,
}

impl TrainJob {
    /// Sends a command; false when the run has already ended.
    pub fn send(&self, cmd: TrainCommand) -> bool {
        self.commands.try_send(cmd).is_ok()
    }
}

/// Starts a run of `config`.
pub fn start(config: RunConfig, waker: &Waker) -> anyhow::Result<TrainJob> {
    let _ = (config, waker);
    anyhow::bail!("the training engine is not part of this build yet")
}

/// Resumes the run in `run_dir` from its last checkpoint.
pub fn resume(run_dir: &Path, waker: &Waker) -> anyhow::Result<TrainJob> {
    let _ = waker;
    anyhow::bail!(
        "the training engine is not part of this build yet (cannot resume {})",
        run_dir.display()
    )
}
