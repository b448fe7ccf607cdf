//! The Runs tab: every run in the runs folder with its settings, final and best loss and
//! progress, the checkpoint it kept as its best; several selected runs overlay their loss
//! curves (and eval suite pass rates, when they ran a suite; the reward accuracy or margin
//! of DPO and ORPO runs, per step and on the held-out pairs); a run can be resumed from
//! its last checkpoint, exported (`export_dialog`), handed off to LLaMA-Factory or axolotl
//! (`handoff_dialog`), deleted (after confirmation) or opened in the file manager. Runs
//! trained by an engine and imported are listed with the local ones, marked as such.
//! Listing and deleting happen on the worker.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use eframe::egui;
use egui_plot::{Legend, Line, Plot, PlotPoints, Points};

use crate::train::{PreferenceMetrics, RunInfo};
use crate::worker::{Command, Event, JobKind};

use super::busy::Busy;
use super::live_plots::smooth;
use super::shared::Shared;

/// What the Runs tab asks the shell to do.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum RunsAction {
    Resume(PathBuf),
    /// Open the export dialog for this run.
    Export(PathBuf),
    /// Open the hand-off dialog for this run.
    Handoff(PathBuf),
    /// Open the hand-off dialog for the Train tab's current settings.
    HandoffSettings,
    /// Open the dialog that imports an engine's output folder.
    Import,
}

/// State of the Runs tab.
#[derive(Debug, Default)]
pub struct RunsTab {
    pub runs: Vec<RunInfo>,
    listed: bool,
    loading: bool,
    /// Runs whose curves are overlaid.
    pub selected: BTreeSet<PathBuf>,
    confirm_delete: Option<PathBuf>,
    /// The preference figure the overlay plots.
    pub preference_measure: PreferenceMeasure,
}

/// The figure of a preference run that the overlay plots.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum PreferenceMeasure {
    /// The share of pairs whose chosen reply has the higher reward, in %.
    #[default]
    Accuracy,
    /// The chosen reward minus the rejected one.
    Margin,
}

impl PreferenceMeasure {
    fn of(self, m: &PreferenceMetrics) -> f64 {
        match self {
            PreferenceMeasure::Accuracy => m.reward_accuracy * 100.0,
            PreferenceMeasure::Margin => m.reward_margin,
        }
    }
}

/// The runs folder the Runs tab lists.
pub fn runs_dir(shared: &Shared<'_>) -> PathBuf {
    shared
        .state
        .run_config
        .output
        .runs_dir
        .clone()
        .unwrap_or_else(crate::paths::runs_dir)
}

impl RunsTab {
    /// Lists the runs again (on the worker).
    pub fn refresh(&mut self, shared: &mut Shared<'_>) {
        self.loading = true;
        self.listed = true;
        shared.worker.send(Command::ListRuns {
            dir: runs_dir(shared),
        });
    }

    /// Whether the run list is being read.
    pub fn is_loading(&self) -> bool {
        self.loading
    }

    pub fn on_event(&mut self, event: Event) -> Option<Event> {
        match event {
            Event::Runs(runs) => {
                self.loading = false;
                self.selected.retain(|p| runs.iter().any(|r| &r.path == p));
                if self.selected.is_empty() {
                    if let Some(r) = runs.first() {
                        self.selected.insert(r.path.clone());
                    }
                }
                self.runs = runs;
                None
            }
            Event::Failed { kind, error } => {
                if matches!(kind, JobKind::ListRuns | JobKind::DeleteRun) {
                    self.loading = false;
                }
                Some(Event::Failed { kind, error })
            }
            other => Some(other),
        }
    }

    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        shared: &mut Shared<'_>,
        active: Option<&Path>,
    ) -> Option<RunsAction> {
        if !self.listed {
            self.refresh(shared);
        }
        let mut action = None;
        ui.horizontal(|ui| {
            ui.heading("Runs");
            if ui.button("Refresh").clicked() {
                self.refresh(shared);
            }
            // Always laid out, shown only while loading: the buttons after it keep their ids.
            ui.add_visible(self.loading, Busy);
            ui.weak(format!("in {}", runs_dir(shared).display()));
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui
                    .button("Import engine output…")
                    .on_hover_text(
                        "Bring back a run LLaMA-Factory or axolotl trained: its adapter and curves join this list",
                    )
                    .clicked()
                {
                    action = Some(RunsAction::Import);
                }
                if ui
                    .button("Hand off the Train settings…")
                    .on_hover_text(
                        "Write the Train tab's current settings as a LLaMA-Factory or axolotl project for a GPU machine or cluster",
                    )
                    .clicked()
                {
                    action = Some(RunsAction::HandoffSettings);
                }
            });
        });
        if self.runs.is_empty() {
            ui.add_space(20.0);
            ui.vertical_centered(|ui| {
                ui.weak("No run yet. Start one in the Train tab; it appears here with its curves.");
            });
            return action;
        }
        egui::Panel::bottom("runs-overlay")
            .resizable(true)
            .default_size(300.0)
            .show(ui, |ui| self.overlay_ui(ui, shared.state.loss_smoothing));
        egui::CentralPanel::default_margins().show(ui, |ui| {
            egui::ScrollArea::vertical()
                .id_salt("runs-list")
                .auto_shrink([false, false])
                .show(ui, |ui| {
                    egui::Grid::new("runs-grid")
                        .num_columns(8)
                        .striped(true)
                        .spacing([14.0, 6.0])
                        .show(ui, |ui| {
                            for h in [
                                "Plot",
                                "Run",
                                "Model · dataset",
                                "Settings",
                                "Steps",
                                "Final loss",
                                "Best eval",
                                "",
                            ] {
                                ui.strong(h);
                            }
                            ui.end_row();
                            for r in &self.runs {
                                if let Some(a) = run_row_ui(
                                    ui,
                                    r,
                                    &mut self.selected,
                                    &mut self.confirm_delete,
                                    active,
                                ) {
                                    action = Some(a);
                                }
                                ui.end_row();
                            }
                        });
                });
        });
        self.confirm_ui(ui, shared);
        action
    }

    fn overlay_ui(&mut self, ui: &mut egui::Ui, smoothing: f32) {
        let selected = || self.runs.iter().filter(|r| self.selected.contains(&r.path));
        let with_suite = selected().any(|r| !r.suites.is_empty());
        let with_preference = selected().any(is_preference_run);
        let n = 1 + usize::from(with_suite) + usize::from(with_preference);
        ui.columns(n, |cols| {
            self.loss_overlay_ui(&mut cols[0], smoothing);
            if with_suite {
                self.pass_rate_overlay_ui(&mut cols[1]);
            }
            if with_preference {
                self.preference_overlay_ui(&mut cols[n - 1], smoothing);
            }
        });
    }

    /// The reward accuracy or margin of the selected preference runs: each step's
    /// (smoothed) as a line, the held-out pairs' as dots.
    fn preference_overlay_ui(&mut self, ui: &mut egui::Ui, smoothing: f32) {
        ui.horizontal(|ui| {
            ui.strong("Preference runs:");
            let m = &mut self.preference_measure;
            ui.selectable_value(m, PreferenceMeasure::Accuracy, "Reward accuracy (%)");
            ui.selectable_value(m, PreferenceMeasure::Margin, "Reward margin");
        });
        let measure = self.preference_measure;
        let mut plot = Plot::new("runs-preference-plot")
            .legend(Legend::default())
            .x_axis_label("step")
            .allow_scroll(false);
        if measure == PreferenceMeasure::Accuracy {
            plot = plot.include_y(0.0).include_y(100.0);
        }
        plot.show(ui, |p| {
            for r in self.runs.iter().filter(|r| self.selected.contains(&r.path)) {
                if let Some(c) = preference_curves(r, measure, smoothing) {
                    let (line, held_out) = (c.steps, c.held_out);
                    p.line(Line::new(r.name.clone(), PlotPoints::from(line)).width(2.0));
                    if !held_out.is_empty() {
                        p.points(
                            Points::new(format!("{} held-out", r.name), PlotPoints::from(held_out))
                                .radius(3.5),
                        );
                    }
                }
            }
        });
    }

    fn pass_rate_overlay_ui(&self, ui: &mut egui::Ui) {
        ui.strong("Eval suite pass rate (% of checks), selected runs");
        Plot::new("runs-pass-rate-plot")
            .legend(Legend::default())
            .x_axis_label("step")
            .include_y(0.0)
            .include_y(100.0)
            .allow_scroll(false)
            .show(ui, |p| {
                for r in self.runs.iter().filter(|r| self.selected.contains(&r.path)) {
                    let pts: Vec<[f64; 2]> = r
                        .suites
                        .iter()
                        .map(|s| [s.step as f64, s.pass_rate() * 100.0])
                        .collect();
                    if pts.is_empty() {
                        continue;
                    }
                    p.points(
                        Points::new(r.name.clone(), PlotPoints::from(pts.clone())).radius(3.5),
                    );
                    p.line(Line::new(r.name.clone(), PlotPoints::from(pts)));
                }
            });
    }

    fn loss_overlay_ui(&self, ui: &mut egui::Ui, smoothing: f32) {
        ui.strong("Loss (smoothed) and eval loss (dots), selected runs");
        Plot::new("runs-overlay-plot")
            .legend(Legend::default())
            .x_axis_label("step")
            .allow_scroll(false)
            .show(ui, |p| {
                for r in self.runs.iter().filter(|r| self.selected.contains(&r.path)) {
                    let xs: Vec<f64> = r.steps.iter().map(|s| s.step as f64).collect();
                    let ys: Vec<f64> = r.steps.iter().map(|s| s.loss).collect();
                    let pts: Vec<[f64; 2]> = xs
                        .into_iter()
                        .zip(smooth(&ys, smoothing as f64))
                        .filter(|(_, y)| y.is_finite())
                        .map(|(x, y)| [x, y])
                        .collect();
                    p.line(Line::new(r.name.clone(), PlotPoints::from(pts)).width(2.0));
                    let evals: Vec<[f64; 2]> = r
                        .evals
                        .iter()
                        .filter(|(_, l)| l.is_finite())
                        .map(|&(s, l)| [s as f64, l])
                        .collect();
                    if !evals.is_empty() {
                        p.points(
                            Points::new(format!("{} eval", r.name), PlotPoints::from(evals))
                                .radius(3.5),
                        );
                    }
                }
            });
    }

    fn confirm_ui(&mut self, ui: &mut egui::Ui, shared: &mut Shared<'_>) {
        let Some(path) = self.confirm_delete.clone() else {
            return;
        };
        let mut choice = None;
        egui::Modal::new(egui::Id::unique("confirm-delete-run")).show(ui.ctx(), |ui| {
            ui.heading("Delete this run?");
            ui.label(path.display().to_string());
            ui.label("Its checkpoints, metrics and adapter are removed from disk. This cannot be undone.");
            ui.horizontal(|ui| {
                if ui.button("Delete").clicked() {
                    choice = Some(true);
                }
                if ui.button("Cancel").clicked() {
                    choice = Some(false);
                }
            });
        });
        match choice {
            Some(true) => {
                self.confirm_delete = None;
                self.loading = true;
                shared.worker.send(Command::DeleteRun { path });
            }
            Some(false) => self.confirm_delete = None,
            None => {}
        }
    }
}

fn run_row_ui(
    ui: &mut egui::Ui,
    r: &RunInfo,
    selected: &mut BTreeSet<PathBuf>,
    confirm_delete: &mut Option<PathBuf>,
    active: Option<&Path>,
) -> Option<RunsAction> {
    let mut action = None;
    let training = active.is_some();
    let is_active = active.and_then(Path::file_name) == r.path.file_name();
    let mut on = selected.contains(&r.path);
    if ui
        .checkbox(&mut on, "")
        .on_hover_text("Overlay this run's loss curve")
        .changed()
    {
        if on {
            selected.insert(r.path.clone());
        } else {
            selected.remove(&r.path);
        }
    }
    ui.label(&r.name)
        .on_hover_text(r.path.display().to_string());
    match &r.config {
        Some(c) => {
            ui.label(format!(
                "{} · {}",
                c.model.base,
                crate::paths::file_name(&c.data.path)
            ));
            ui.label(format!(
                "r {} · α {} · lr {:.0e} · batch {}×{}",
                c.lora.rank,
                c.lora.alpha,
                c.optim.learning_rate,
                c.training.batch_size,
                c.training.grad_accumulation
            ));
        }
        None => {
            ui.weak("run.toml unreadable");
            ui.label("");
        }
    }
    let imported_status = r
        .imported
        .as_ref()
        .map(|i| format!("imported ({})", i.engine));
    let status = if is_active {
        "training"
    } else if let Some(s) = &imported_status {
        s.as_str()
    } else if r.failure.is_some() {
        "failed"
    } else if r.has_adapter {
        "finished"
    } else if r.checkpoints.is_empty() {
        "no checkpoint"
    } else {
        "stopped"
    };
    let line = format!(
        "{} · {status} · {}",
        r.last_step,
        fmt_duration(train_secs(r))
    );
    match (&r.failure, is_active) {
        (Some(error), false) => {
            ui.colored_label(ui.visuals().error_fg_color, line)
                .on_hover_text(format!("The run failed: {error}"));
        }
        _ => {
            ui.label(line)
                .on_hover_text("Steps logged, how the run ended, and the time spent training");
        }
    }
    ui.label(fmt_loss(r.final_loss));
    best_ui(ui, r);
    ui.horizontal(|ui| {
        let can_resume = !r.checkpoints.is_empty() && !training && r.imported.is_none();
        if ui
            .add_enabled(can_resume, egui::Button::new("▶ Resume"))
            .on_hover_text(if let Some(i) = &r.imported {
                format!(
                    "Trained by {} and imported from {}: it has no optimizer state here, so resume it there",
                    i.engine,
                    i.source.display()
                )
            } else if r.checkpoints.is_empty() {
                "This run has no checkpoint to resume from".to_string()
            } else {
                format!(
                    "Continue from the checkpoint at step {}",
                    r.checkpoints.last().copied().unwrap_or(0)
                )
            })
            .clicked()
        {
            action = Some(RunsAction::Resume(r.path.clone()));
        }
        let exportable = r.has_adapter || !r.checkpoints.is_empty();
        if ui
            .add_enabled(exportable, egui::Button::new("Export…"))
            .on_hover_text(if exportable {
                "Export the adapter (PEFT), a merged model, or GGUF for llama.cpp and Ollama"
            } else {
                "This run has neither an adapter nor a checkpoint yet"
            })
            .clicked()
        {
            action = Some(RunsAction::Export(r.path.clone()));
        }
        if ui
            .add_enabled(r.config.is_some(), egui::Button::new("Hand off…"))
            .on_hover_text(
                "Write this run's data and settings as a LLaMA-Factory or axolotl project for a GPU machine or cluster",
            )
            .clicked()
        {
            action = Some(RunsAction::Handoff(r.path.clone()));
        }
        ui.menu_button("⋯", |ui| {
            if ui
                .button("Open folder")
                .on_hover_text("Open the run folder in the file manager")
                .clicked()
            {
                open_folder(&r.path);
                ui.close();
            }
            if ui.button("Delete…").on_hover_text("Delete this run").clicked() {
                *confirm_delete = Some(r.path.clone());
                ui.close();
            }
        })
        .response
        .on_hover_text("Open the run folder, or delete the run");
    });
    action
}

/// Seconds spent in optimizer steps: each step's tokens over its throughput (for an
/// imported run, the engine's own figure).
/// Whether a run logged preference figures (a DPO or ORPO run).
fn is_preference_run(r: &RunInfo) -> bool {
    !r.held_out.is_empty() || r.steps.iter().any(|s| s.preference.is_some())
}

/// A preference run's curves, as plot points (step, value).
#[derive(Debug, Clone, PartialEq)]
pub struct PreferenceCurves {
    /// Each step's value, smoothed.
    pub steps: Vec<[f64; 2]>,
    /// The held-out pairs' value at each evaluation.
    pub held_out: Vec<[f64; 2]>,
}

/// A preference run's `measure` per step (smoothed) and on its held-out pairs, as plot
/// points; `None` for a run without preference figures.
pub fn preference_curves(
    r: &RunInfo,
    measure: PreferenceMeasure,
    smoothing: f32,
) -> Option<PreferenceCurves> {
    if !is_preference_run(r) {
        return None;
    }
    let (xs, ys): (Vec<f64>, Vec<f64>) = r
        .steps
        .iter()
        .filter_map(|s| Some((s.step as f64, measure.of(s.preference.as_ref()?))))
        .unzip();
    let steps = xs
        .into_iter()
        .zip(smooth(&ys, smoothing as f64))
        .filter(|(_, y)| y.is_finite())
        .map(|(x, y)| [x, y])
        .collect();
    let held_out = r
        .held_out
        .iter()
        .map(|(step, m)| [*step as f64, measure.of(m)])
        .filter(|p| p[1].is_finite())
        .collect();
    Some(PreferenceCurves { steps, held_out })
}

fn train_secs(r: &RunInfo) -> f64 {
    if let Some(s) = r.imported.as_ref().and_then(|i| i.train_runtime_s) {
        return s;
    }
    r.steps
        .iter()
        .filter(|s| s.tokens_per_s > 0.0 && s.tokens_per_s.is_finite())
        .map(|s| s.tokens as f64 / s.tokens_per_s)
        .sum()
}

fn fmt_duration(s: f64) -> String {
    let s = s.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

/// The best eval loss, and the checkpoint the run kept as its best (from `final.json` once
/// it has finished, else from its metrics).
fn best_ui(ui: &mut egui::Ui, r: &RunInfo) {
    let mut text = fmt_loss(r.best_eval_loss);
    let best = r
        .final_choice
        .as_ref()
        .and_then(|c| c.best.map(|b| (b.step, c.best_by, b.value)))
        .or(r.best);
    if let Some((step, by, value)) = best {
        text = match by {
            crate::train::BestBy::EvalLoss => format!("{text} · best at step {step}"),
            crate::train::BestBy::PassRate => {
                format!("{text} · {} · best at step {step}", by.format(value))
            }
        };
    }
    let hover = match &r.final_choice {
        Some(c) => c.describe(),
        None => match best {
            Some((step, by, _)) => format!("Best {} so far at step {step}", by.label()),
            None => "No evaluation yet".into(),
        },
    };
    ui.label(text).on_hover_text(hover);
}

fn fmt_loss(l: Option<f64>) -> String {
    l.map_or_else(|| "—".into(), |l| format!("{l:.4}"))
}

/// Opens `path` in the file manager without waiting for it.
pub fn open_folder(path: &Path) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(target_os = "windows") {
        "explorer"
    } else {
        "xdg-open"
    };
    if let Err(e) = std::process::Command::new(opener).arg(path).spawn() {
        tracing::warn!("cannot open {}: {e}", path.display());
    }
}
