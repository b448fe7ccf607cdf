//! The Train tab: the settings form on the left; on the right Start / Pause / Stop, the
//! progress bar with its ETA, the live plots, the log pane and the checkpoints of the run.
//! The run itself lives in the engine's thread; this tab drains its events with a budget.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use eframe::egui;

use crate::model::Model;
use crate::train::{Estimate, RunConfig, Summary, TrainCommand, TrainEvent};
use crate::worker::train_job::{self, TrainJob};
use crate::worker::{DialogPurpose, Event, Waker};

use super::datasets::DatasetsTab;
use super::live_plots::{self, Curves};
use super::model_slot::ModelSlot;
use super::shared::Shared;
use super::train_estimate::EstimateView;
use super::train_eval_form;
use super::train_form::{self, FormState, ModelKind};

/// Where a run stands.
#[derive(Debug, Clone, PartialEq)]
pub enum RunStatus {
    Starting,
    Running,
    Paused,
    Stopping,
    Finished,
    Failed(String),
}

/// What the tab knows of the current (or last) run.
#[derive(Debug, Clone)]
pub struct RunView {
    pub status: RunStatus,
    pub run_dir: Option<PathBuf>,
    pub total_steps: usize,
    pub start_step: usize,
    pub estimate: Option<Estimate>,
    pub curves: Curves,
    pub log: Vec<String>,
    pub checkpoints: Vec<(usize, PathBuf)>,
    pub summary: Option<Summary>,
}

impl RunView {
    fn new() -> Self {
        RunView {
            status: RunStatus::Starting,
            run_dir: None,
            total_steps: 0,
            start_step: 0,
            estimate: None,
            curves: Curves::default(),
            log: Vec::new(),
            checkpoints: Vec::new(),
            summary: None,
        }
    }

    fn log(&mut self, line: impl Into<String>) {
        self.log.push(line.into());
        if self.log.len() > 2000 {
            self.log.drain(..500);
        }
    }

    /// Applies one engine event.
    pub fn apply(&mut self, e: TrainEvent) {
        match e {
            TrainEvent::Started {
                run_dir,
                total_steps,
                start_step,
                estimate,
            } => {
                self.log(format!(
                    "started {} ({} steps{})",
                    run_dir.display(),
                    total_steps,
                    if start_step > 0 {
                        format!(", resuming at step {start_step}")
                    } else {
                        String::new()
                    }
                ));
                self.run_dir = Some(run_dir);
                self.total_steps = total_steps;
                self.start_step = start_step;
                self.estimate = Some(estimate);
                self.status = RunStatus::Running;
            }
            TrainEvent::Step(m) => {
                if !m.loss.is_finite() {
                    self.log(format!(
                        "step {}: the loss is {} (not a number)",
                        m.step, m.loss
                    ));
                }
                self.curves.push(m);
            }
            TrainEvent::Eval { step, loss } => {
                self.log(format!("step {step}: eval loss {loss:.4}"));
                self.curves.evals.push((step, loss));
            }
            TrainEvent::Suite(s) => {
                self.log(s.summary());
                self.curves.suites.push((s.step, s.pass_rate()));
            }
            TrainEvent::Best { step, by, value } => {
                self.log(format!(
                    "step {step}: best {} so far, {}; its checkpoint is kept",
                    by.label(),
                    by.format(value)
                ));
                self.curves.best = Some((step, by, value));
            }
            TrainEvent::PreferenceEval { step, metrics } => {
                self.log(format!(
                    "step {step}: held-out reward accuracy {:.3}, margin {:.4} ({} pairs)",
                    metrics.reward_accuracy, metrics.reward_margin, metrics.pairs
                ));
                self.curves.preference_evals.push((step, metrics));
            }
            TrainEvent::Checkpoint { step, path } => {
                let name = crate::paths::file_name(&path);
                self.log(format!("step {step}: checkpoint saved ({name})"));
                self.checkpoints.push((step, path));
            }
            TrainEvent::Log { message } => self.log(message),
            TrainEvent::Paused { step } => {
                self.log(format!("paused at step {step}"));
                self.status = RunStatus::Paused;
            }
            TrainEvent::Resumed { step } => {
                self.log(format!("resumed at step {step}"));
                self.status = RunStatus::Running;
            }
            TrainEvent::Finished { summary } => {
                self.log(format!(
                    "{} after {} steps in {:.0} s",
                    if summary.stopped_early {
                        "stopped"
                    } else {
                        "finished"
                    },
                    summary.steps,
                    summary.duration_s
                ));
                if let Some(a) = &summary.adapter_dir {
                    self.log(format!("adapter: {}", a.display()));
                }
                if let Some(c) = &summary.final_choice {
                    self.log(c.describe());
                }
                self.summary = Some(summary);
                self.status = RunStatus::Finished;
            }
            TrainEvent::Failed { error } => {
                self.log(format!("failed: {error}"));
                self.status = RunStatus::Failed(error);
            }
        }
    }

    /// Steps done and the fraction of the run.
    pub fn progress(&self) -> (usize, f32) {
        let step = self.curves.last().map_or(self.start_step, |m| m.step);
        let frac = if self.total_steps > 0 {
            (step as f32 / self.total_steps as f32).clamp(0.0, 1.0)
        } else {
            0.0
        };
        (step, frac)
    }
}

/// The Train tab.
pub struct TrainTab {
    form: FormState,
    job: Option<TrainJob>,
    pub run: Option<RunView>,
    estimate: EstimateView,
    /// The user accepts a run the estimate says will not fit.
    start_anyway: bool,
}

impl TrainTab {
    pub fn new(config: &RunConfig) -> Self {
        TrainTab {
            form: FormState::new(config),
            job: None,
            run: None,
            estimate: EstimateView::default(),
            start_anyway: false,
        }
    }

    pub fn is_running(&self) -> bool {
        self.job.is_some()
    }

    /// The estimate of a run with `cfg`, once its plan is made.
    pub fn estimate_for(&self, cfg: &RunConfig) -> Option<&Estimate> {
        self.estimate.for_config(cfg)
    }

    /// The folder of the run in progress (once the engine has created it).
    pub fn active_run_dir(&self) -> Option<PathBuf> {
        self.job.as_ref()?;
        self.run.as_ref()?.run_dir.clone()
    }

    /// One line for the status bar.
    pub fn status_line(&self) -> Option<String> {
        let run = self.run.as_ref().filter(|_| self.job.is_some())?;
        let (step, _) = run.progress();
        Some(match &run.status {
            RunStatus::Starting => "training: preparing the data".into(),
            RunStatus::Paused => format!("training paused at step {step}/{}", run.total_steps),
            RunStatus::Stopping => format!("training: stopping after step {step}"),
            _ => format!("training: step {step}/{}", run.total_steps),
        })
    }

    /// Starts a run of `config`.
    pub fn start(
        &mut self,
        config: RunConfig,
        model: Option<Arc<Model>>,
        waker: &Waker,
        shared: &mut Shared<'_>,
    ) {
        let problems = config.validate();
        if !problems.is_empty() {
            shared
                .notices
                .error("The run cannot start", problems.join("\n"));
            return;
        }
        let started = train_job::start(config, model, waker);
        self.watch(Ok(started), "The run could not start", shared);
    }

    /// Follows a job that started, or reports why it did not.
    fn watch(&mut self, job: anyhow::Result<TrainJob>, failure: &str, shared: &mut Shared<'_>) {
        match job {
            Ok(job) => {
                self.job = Some(job);
                self.run = Some(RunView::new());
            }
            Err(e) => shared.notices.error(failure, format!("{e:#}")),
        }
    }

    /// Resumes the run in `run_dir` (from the Runs tab).
    pub fn resume(
        &mut self,
        run_dir: &std::path::Path,
        model: Option<Arc<Model>>,
        waker: &Waker,
        shared: &mut Shared<'_>,
    ) {
        if self.job.is_some() {
            shared.notices.error(
                "A run is already in progress",
                "Stop it before resuming another.",
            );
            return;
        }
        let resumed = train_job::resume(run_dir, model, waker);
        self.watch(resumed, "The run could not be resumed", shared);
    }

    /// Asks the run to stop after its current step.
    pub fn stop(&mut self) {
        if let Some(job) = &self.job {
            if job.send(TrainCommand::Stop) {
                if let Some(r) = &mut self.run {
                    r.status = RunStatus::Stopping;
                }
            }
        }
    }

    fn pause_or_resume(&mut self) {
        let (Some(job), Some(run)) = (&self.job, &self.run) else {
            return;
        };
        let cmd = if run.status == RunStatus::Paused {
            TrainCommand::Resume
        } else {
            TrainCommand::Pause
        };
        job.send(cmd);
    }

    /// Takes picked files meant for the form.
    pub fn on_event(&mut self, event: Event, shared: &mut Shared<'_>) -> Option<Event> {
        let cfg = &mut shared.state.run_config;
        match event {
            Event::Picked {
                purpose: DialogPurpose::TrainDataset,
                path: Some(p),
            } => {
                cfg.data.path = p;
                cfg.data.dataset_info_entry = None;
                self.form.use_open_dataset = false;
            }
            Event::Picked {
                purpose: DialogPurpose::EvalSuite,
                path: Some(p),
            } => cfg.eval.suite = Some(p.display().to_string()),
            Event::Picked {
                purpose: DialogPurpose::ModelFolder | DialogPurpose::ModelGguf,
                path: Some(p),
            } => {
                cfg.model.base = p.display().to_string();
                self.form.model_kind = ModelKind::of(&cfg.model.base);
            }
            other => return Some(other),
        }
        None
    }

    /// Takes run events until `deadline`. Returns true if more are waiting.
    pub fn drain(&mut self, shared: &mut Shared<'_>, deadline: Instant) -> bool {
        let Some(job) = &mut self.job else {
            return false;
        };
        let run = self.run.get_or_insert_with(RunView::new);
        let mut ended = false;
        loop {
            if Instant::now() >= deadline {
                return true;
            }
            let Some(e) = job.events.try_recv() else {
                break;
            };
            // The job runner ends every run with `Finished` or `Failed`, also when its
            // thread panicked or vanished.
            let terminal = matches!(e, TrainEvent::Finished { .. } | TrainEvent::Failed { .. });
            if let TrainEvent::Failed { error } = &e {
                shared
                    .notices
                    .error("The training run failed", error.clone());
            }
            run.apply(e);
            if terminal {
                ended = true;
                break;
            }
        }
        if ended {
            self.job = None;
        }
        false
    }

    /// Between frames: the estimate's plan.
    pub fn logic(
        &mut self,
        shared: &mut Shared<'_>,
        model: &ModelSlot,
        datasets: &DatasetsTab,
        waker: &Waker,
    ) {
        self.estimate
            .logic(&shared.state.run_config, model, datasets, waker);
    }

    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        shared: &mut Shared<'_>,
        model: &ModelSlot,
        datasets: &DatasetsTab,
        waker: &Waker,
    ) {
        egui::Panel::left("train-form")
            .resizable(true)
            .default_size(400.0)
            .size_range(320.0..=620.0)
            .show(ui, |ui| {
                egui::ScrollArea::vertical()
                    .id_salt("train-form-scroll")
                    .show(ui, |ui| self.form_ui(ui, shared, model, datasets, waker));
            });
        egui::CentralPanel::default_margins().show(ui, |ui| self.run_ui(ui, shared));
    }

    fn form_ui(
        &mut self,
        ui: &mut egui::Ui,
        shared: &mut Shared<'_>,
        model: &ModelSlot,
        datasets: &DatasetsTab,
        waker: &Waker,
    ) {
        let open = datasets.doc.as_ref().and_then(|d| {
            let ds = d.data();
            match ds.dataset_info_entry() {
                Some((file, entry)) => {
                    Some((file.to_path_buf(), Some(entry.to_string()), d.is_dirty()))
                }
                None => ds.path().map(|p| (p.to_path_buf(), None, d.is_dirty())),
            }
        });
        let preferences = datasets.preferences.as_ref();
        let open = open.or_else(|| {
            let p = preferences?;
            Some((p.set.path()?.to_path_buf(), None, p.is_dirty()))
        });
        let open_is_preference = match (&datasets.doc, preferences) {
            (_, Some(_)) => Some(true),
            (Some(_), None) => Some(false),
            (None, None) => None,
        };
        let dirty = open.as_ref().is_some_and(|o| o.2) && self.form.use_open_dataset;
        // The status block's widgets come and go with background results (the estimate's
        // "updating…", a memory warning); in a scope of its own it takes one automatic id
        // of the form's whatever it shows, so the widgets below keep theirs from one frame
        // to the next and a click that spans a change still lands.
        let picked_base = ui
            .scope(|ui| self.status_ui(ui, shared, model, waker, dirty))
            .inner;
        if let Some(base) = picked_base {
            self.form.model_kind = train_form::ModelKind::of(&base);
            shared.state.run_config.model.base = base;
        }
        ui.separator();
        let cfg = &mut shared.state.run_config;
        // Each section in a scope: the template's warnings and switch (with the model's
        // load), the stage's warning (with the dataset's) and the dataset's unsaved-edits
        // line (with a save) come and go, and the sections after keep their ids.
        ui.scope(|ui| train_form::model_ui(ui, cfg, &mut self.form, shared.worker));
        let loaded = model_for(model, &cfg.model.base);
        ui.scope(|ui| train_form::template_ui(ui, cfg, &mut self.form, loaded.as_deref()));
        ui.separator();
        ui.scope(|ui| super::train_stage::stage_ui(ui, cfg, open_is_preference));
        ui.separator();
        ui.scope(|ui| train_form::dataset_ui(ui, cfg, &mut self.form, open, shared.worker));
        ui.separator();
        train_form::settings_ui(ui, cfg);
        train_eval_form::eval_ui(ui, cfg, shared.worker);
        ui.add_space(8.0);
    }

    /// The form's status block: the config's problems, the memory warning, the start
    /// button and the estimate. Returns the base the estimate offers to switch to, if
    /// clicked.
    fn status_ui(
        &mut self,
        ui: &mut egui::Ui,
        shared: &mut Shared<'_>,
        model: &ModelSlot,
        waker: &Waker,
        dirty: bool,
    ) -> Option<String> {
        {
            let cfg = &shared.state.run_config;
            let problems = cfg.validate();
            // A run that needs more memory than is free gets the whole process killed
            // (training runs in it), so it starts only when the user insists. The
            // warning comes with a new estimate: in a scope, the start button keeps its id.
            let too_big = self.estimate.for_config(cfg).is_some_and(|e| !e.fits());
            ui.scope(|ui| {
                for p in &problems {
                    ui.colored_label(ui.visuals().warn_fg_color, format!("! {p}"));
                }
                if too_big {
                    let advice = if cfg.training.gradient_checkpointing {
                        "lower the batch size or the maximum sequence length, or close other \
                         programs"
                    } else {
                        "turn on gradient checkpointing, lower the batch size or the maximum \
                         sequence length, or close other programs"
                    };
                    ui.colored_label(
                        ui.visuals().error_fg_color,
                        format!("! This run needs more memory than is free: {advice}."),
                    );
                    ui.checkbox(&mut self.start_anyway, "Start anyway");
                }
            });
            let can_start = problems.is_empty()
                && !dirty
                && self.job.is_none()
                && (!too_big || self.start_anyway);
            ui.horizontal(|ui| {
                let start = ui
                    .add_enabled(can_start, egui::Button::new("▶ Start training"))
                    .on_hover_text("Start a run with these settings; it trains in the background");
                if start.clicked() {
                    let cfg = shared.state.run_config.clone();
                    let model = model_for(model, &cfg.model.base);
                    self.start(cfg, model, waker, shared);
                }
            });
        }
        self.estimate.ui(ui, &shared.state.run_config, model)
    }

    fn run_ui(&mut self, ui: &mut egui::Ui, shared: &mut Shared<'_>) {
        let running = self.job.is_some();
        ui.horizontal(|ui| {
            let paused = self
                .run
                .as_ref()
                .is_some_and(|r| r.status == RunStatus::Paused);
            let label = if paused { "▶ Resume" } else { "Pause" };
            if ui.add_enabled(running, egui::Button::new(label)).clicked() {
                self.pause_or_resume();
            }
            if ui
                .add_enabled(running, egui::Button::new("■ Stop"))
                .on_hover_text("Stop after the current step, leaving a checkpoint to resume from")
                .clicked()
            {
                self.stop();
            }
            if ui
                .add_enabled(running, egui::Button::new("Save checkpoint"))
                .on_hover_text("Write a checkpoint after the current step")
                .clicked()
            {
                if let Some(j) = &self.job {
                    j.send(TrainCommand::SaveNow);
                }
            }
        });
        let Some(run) = &self.run else {
            ui.add_space(30.0);
            ui.vertical_centered(|ui| {
                ui.heading("No run yet");
                ui.label("Choose a model and a dataset on the left, then press Start training.\nThe loss, learning rate, gradient norm and speed appear here as it trains.");
            });
            return;
        };
        let (step, frac) = run.progress();
        let eta = run.curves.last().map_or(String::new(), |m| {
            if run.status == RunStatus::Running && m.eta_s.is_finite() {
                format!(" · ETA {}", fmt_secs(m.eta_s))
            } else {
                String::new()
            }
        });
        let status = match &run.status {
            RunStatus::Starting => "preparing the data…".to_string(),
            RunStatus::Running => "training".into(),
            RunStatus::Paused => "paused".into(),
            RunStatus::Stopping => "stopping after this step…".into(),
            RunStatus::Finished => match &run.summary {
                Some(s) if s.stopped_early => "stopped; resume it from the Runs tab".into(),
                _ => "finished".into(),
            },
            RunStatus::Failed(e) => format!("failed: {e}"),
        };
        ui.add(
            egui::ProgressBar::new(frac)
                .show_percentage()
                .text(format!("step {step}/{} · {status}{eta}", run.total_steps)),
        );
        if let Some(d) = &run.run_dir {
            ui.weak(format!("run folder: {}", d.display()));
        }
        egui::Panel::bottom("train-log")
            .resizable(true)
            .default_size(180.0)
            .show(ui, |ui| {
                ui.columns(2, |cols| {
                    cols[0].strong("Log");
                    egui::ScrollArea::vertical()
                        .id_salt("train-log-scroll")
                        .stick_to_bottom(true)
                        .auto_shrink([false, false])
                        .show(&mut cols[0], |ui| {
                            // Not justified: a long path would spread its letters.
                            ui.set_width(ui.available_width());
                            let layout = egui::Layout::top_down(egui::Align::LEFT);
                            ui.with_layout(layout, |ui| {
                                for l in &run.log {
                                    ui.add(egui::Label::new(l).wrap());
                                }
                            });
                        });
                    cols[1].strong("Checkpoints");
                    if run.checkpoints.is_empty() {
                        cols[1].weak("None yet.");
                    }
                    egui::ScrollArea::vertical()
                        .id_salt("train-checkpoints")
                        .auto_shrink([false, false])
                        .show(&mut cols[1], |ui| {
                            let best = run.curves.best.map(|b| b.0);
                            for (s, p) in &run.checkpoints {
                                let label = if best == Some(*s) {
                                    format!("step {s} (best)")
                                } else {
                                    format!("step {s}")
                                };
                                ui.label(label).on_hover_text(p.display().to_string());
                            }
                        });
                });
            });
        egui::CentralPanel::default_margins().show(ui, |ui| {
            live_plots::curves_ui(ui, &run.curves, &mut shared.state.loss_smoothing);
        });
    }
}

/// The studio's loaded model when it is the run's base (shared, not loaded twice).
pub fn model_for(slot: &ModelSlot, base: &str) -> Option<Arc<Model>> {
    match slot {
        ModelSlot::Ready { spec, model, .. } if same_model(spec, base) => Some(model.clone()),
        _ => None,
    }
}

/// Whether two model specs name the same model: equal, or found (without downloading) at
/// the same file or folder, as `default` and the default model's path are. Answers are
/// kept for the session: the UI asks every frame.
fn same_model(a: &str, b: &str) -> bool {
    use std::cell::RefCell;
    use std::collections::HashMap;
    thread_local! {
        static KNOWN: RefCell<HashMap<(String, String), bool>> = RefCell::new(HashMap::new());
    }
    if a == b {
        return true;
    }
    let key = (a.to_string(), b.to_string());
    if let Some(known) = KNOWN.with(|k| k.borrow().get(&key).copied()) {
        return known;
    }
    let place = |spec: &str| {
        let resolved = crate::hub::source::resolve_local(spec).ok()?;
        let path = match resolved.location {
            crate::model::ModelLocation::HfFolder(p) | crate::model::ModelLocation::Gguf(p) => p,
        };
        std::fs::canonicalize(path).ok()
    };
    let same = matches!((place(a), place(b)), (Some(x), Some(y)) if x == y);
    KNOWN.with(|k| k.borrow_mut().insert(key, same));
    same
}

fn fmt_secs(s: f64) -> String {
    let s = s.max(0.0) as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::same_model;

    /// A file and the folder holding only it, or a link to it, are the same model; another
    /// file and a spec that resolves to nothing are not.
    #[test]
    fn specs_of_one_file_are_the_same_model() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("one");
        std::fs::create_dir(&sub).unwrap();
        let file = sub.join("m.gguf");
        std::fs::write(&file, b"GGUF").unwrap();
        let other = dir.path().join("n.gguf");
        std::fs::write(&other, b"GGUF").unwrap();
        let (file_s, sub_s) = (file.display().to_string(), sub.display().to_string());
        assert!(same_model(&file_s, &file_s));
        assert!(
            same_model(&sub_s, &file_s),
            "the folder's only GGUF is that file"
        );
        assert!(!same_model(&file_s, &other.display().to_string()));
        assert!(!same_model(&file_s, "no/such-model-anywhere"));
    }
}
