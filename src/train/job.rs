//! The training job: the trainer on a job thread of its own (see [`crate::jobs`]), taking
//! commands over a bounded channel and reporting events, each of which wakes the watcher
//! (the GUI's repaint; nothing for the CLI). Its final event is `Finished` or `Failed`
//! with the run's error, whatever went wrong: the config, the dataset, the model, the run
//! folder, a checkpoint write, a NaN loss, or a panic.

use std::path::Path;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::config::RunConfig;
use super::events::{TrainCommand, TrainEvent};
use super::plan::RunPlan;
use super::run_dir::{self, RunDir};
use super::trainer::{self, Control, Start};
use crate::jobs::{self, JobEvent, JobEvents, JobKind, Reporter, Waker};
use crate::model::Model;

/// The watcher's end of a training job.
pub struct TrainHandle {
    pub events: JobEvents<TrainEvent>,
    pub commands: Sender<TrainCommand>,
}

impl JobEvent for TrainEvent {
    fn failed(_kind: JobKind, error: String) -> Self {
        TrainEvent::Failed { error }
    }
    fn is_final(&self) -> bool {
        matches!(
            self,
            TrainEvent::Finished { .. } | TrainEvent::Failed { .. }
        )
    }
}

struct ChannelControl {
    events: Reporter<TrainEvent>,
    commands: Receiver<TrainCommand>,
}

impl Control for ChannelControl {
    fn send(&mut self, event: TrainEvent) {
        // A watcher that went away must not stop the run; its events are dropped.
        self.events.send(event);
    }
    fn poll(&mut self) -> Option<TrainCommand> {
        self.commands.try_recv().ok()
    }
    fn wait(&mut self) -> Option<TrainCommand> {
        self.commands.recv().ok()
    }
}

/// Where the job gets its base model.
enum Base {
    Shared(Arc<Model>),
    Load(String),
}

fn spawn_job(
    base: Base,
    config: RunConfig,
    start: Start,
    plan: Option<RunPlan>,
    waker: Waker,
) -> TrainHandle {
    let (commands_tx, commands_rx) = crossbeam_channel::bounded(16);
    let events = jobs::spawn(JobKind::Train, "trainer", 1024, waker, move |reporter| {
        let mut control = ChannelControl {
            events: reporter.clone(),
            commands: commands_rx,
        };
        let model = match base {
            Base::Shared(m) => m,
            Base::Load(spec) => load_base(&spec, &mut control)?,
        };
        let summary = trainer::run(config, model, start, plan, &mut control)?;
        Ok(TrainEvent::Finished { summary })
    });
    TrainHandle {
        events,
        commands: commands_tx,
    }
}

fn load_base(spec: &str, control: &mut ChannelControl) -> anyhow::Result<Arc<Model>> {
    control.send(TrainEvent::Log {
        message: format!("loading base model {spec}"),
    });
    if spec == "default" && crate::hub::source::find_default().is_none() {
        crate::hub::fetch::fetch_default(&mut |l| {
            control.send(TrainEvent::Log {
                message: l.to_string(),
            })
        })?;
    }
    Ok(Arc::new(crate::hub::load(spec)?))
}

/// Starts a new run. `model`, when given, is used instead of loading `config.model.base`
/// (the studio shares the model it already has).
pub fn spawn(config: RunConfig, model: Option<Arc<Model>>, waker: Waker) -> TrainHandle {
    let base = match model {
        Some(m) => Base::Shared(m),
        None => Base::Load(config.model.base.clone()),
    };
    spawn_job(base, config, Start::Fresh, None, waker)
}

/// Starts a new run on `model` with the plan already made for it (the CLI's, which printed
/// the estimate from it).
pub fn spawn_planned(
    config: RunConfig,
    model: Arc<Model>,
    plan: RunPlan,
    waker: Waker,
) -> TrainHandle {
    spawn_job(Base::Shared(model), config, Start::Fresh, Some(plan), waker)
}

/// Continues the run in `run_dir` from its last checkpoint.
pub fn resume(
    run_dir: &Path,
    model: Option<Arc<Model>>,
    waker: Waker,
) -> anyhow::Result<TrainHandle> {
    let (run, config) = RunDir::open(run_dir)?;
    if let Some(imported) = run_dir::read_imported(run_dir) {
        anyhow::bail!(
            "{}: this run was trained by {} and imported; it has adapters but no optimizer \
             state here, so resume it there ({})",
            run_dir.display(),
            imported.engine,
            imported.source.display()
        );
    }
    // Before choosing: a checkpoint caught between the renames that replace it comes back.
    run.remove_leftovers()?;
    let steps = run_dir::checkpoint_steps(run_dir);
    let Some(&last) = steps.last() else {
        anyhow::bail!(
            "{}: the run has no checkpoint to resume from",
            run_dir.display()
        );
    };
    let checkpoint = run.checkpoint_dir(last);
    let base = match model {
        Some(m) => Base::Shared(m),
        None => Base::Load(config.model.base.clone()),
    };
    Ok(spawn_job(
        base,
        config,
        Start::Resume { run, checkpoint },
        None,
        waker,
    ))
}
