//! The training worker: a named thread that owns the model and the trainer, takes
//! commands and sends events over bounded crossbeam channels, and wakes the watcher
//! (the GUI's `request_repaint`) after each event.

use std::path::Path;
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::config::RunConfig;
use super::events::{TrainCommand, TrainEvent};
use super::run_dir::{self, RunDir};
use super::trainer::{self, Control, Start};
use crate::model::Model;

/// The watcher's end of a training worker.
pub struct TrainHandle {
    pub events: Receiver<TrainEvent>,
    pub commands: Sender<TrainCommand>,
    pub thread: std::thread::JoinHandle<()>,
}

/// Wakes the watcher after an event (e.g. `egui::Context::request_repaint`).
pub type Wake = Arc<dyn Fn() + Send + Sync>;

struct ChannelControl {
    events: Sender<TrainEvent>,
    commands: Receiver<TrainCommand>,
    wake: Wake,
}

impl Control for ChannelControl {
    fn send(&mut self, event: TrainEvent) {
        // A watcher that went away must not stop the run; its events are dropped.
        let _ = self.events.send(event);
        (self.wake)();
    }
    fn poll(&mut self) -> Option<TrainCommand> {
        self.commands.try_recv().ok()
    }
    fn wait(&mut self) -> Option<TrainCommand> {
        self.commands.recv().ok()
    }
}

fn spawn_with(
    work: impl FnOnce(&mut ChannelControl) -> anyhow::Result<()> + Send + 'static,
    wake: Wake,
) -> anyhow::Result<TrainHandle> {
    let (etx, erx) = crossbeam_channel::bounded(1024);
    let (ctx, crx) = crossbeam_channel::bounded(16);
    let thread = std::thread::Builder::new()
        .name("trainer".into())
        .spawn(move || {
            let mut control = ChannelControl {
                events: etx,
                commands: crx,
                wake,
            };
            if let Err(e) = work(&mut control) {
                control.send(TrainEvent::Failed {
                    error: format!("{e:#}"),
                });
            }
        })?;
    Ok(TrainHandle {
        events: erx,
        commands: ctx,
        thread,
    })
}

fn load_base(spec: &str, control: &mut ChannelControl) -> anyhow::Result<Arc<Model>> {
    control.send(TrainEvent::Log {
        message: format!("loading base model {spec}"),
    });
    if spec == "default" && crate::model::source::find_default().is_none() {
        crate::model::fetch::fetch_default(&mut |l| {
            control.send(TrainEvent::Log {
                message: l.to_string(),
            })
        })?;
    }
    Ok(Arc::new(crate::model::load(spec)?))
}

/// Starts a new run. `model`, when given, is used instead of loading `config.model.base`
/// (the studio shares the model it already has).
pub fn spawn(
    config: RunConfig,
    model: Option<Arc<Model>>,
    wake: Wake,
) -> anyhow::Result<TrainHandle> {
    spawn_with(
        move |control| {
            let model = match model {
                Some(m) => m,
                None => load_base(&config.model.base, control)?,
            };
            // A failed run has already reported itself through `Failed`.
            let _ = trainer::run(config, model, Start::Fresh, control);
            Ok(())
        },
        wake,
    )
}

/// Continues the run in `run_dir` from its last checkpoint.
pub fn resume(
    run_dir: &Path,
    model: Option<Arc<Model>>,
    wake: Wake,
) -> anyhow::Result<TrainHandle> {
    let (run, config) = RunDir::open(run_dir)?;
    let steps = run_dir::checkpoint_steps(run_dir);
    let Some(&last) = steps.last() else {
        anyhow::bail!(
            "{}: the run has no checkpoint to resume from",
            run_dir.display()
        );
    };
    let checkpoint = run.checkpoint_dir(last);
    spawn_with(
        move |control| {
            let model = match model {
                Some(m) => m,
                None => load_base(&config.model.base, control)?,
            };
            let _ = trainer::run(config, model, Start::Resume { run, checkpoint }, control);
            Ok(())
        },
        wake,
    )
}
