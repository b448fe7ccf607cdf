//! The studio window: the tab bar, the status bar, notifications, shortcuts, the close
//! guard and persistence around the five tabs. Worker events are drained in `logic()`
//! with a time budget, so a burst of events never stretches a frame.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use eframe::egui;

use super::chat::{ChatAction, ChatTab};
use super::datasets::DatasetsTab;
use super::export_dialog::ExportDialog;
use super::frame_times::FrameTimes;
use super::handoff_dialog::HandoffDialog;
use super::model_slot::ModelSlot;
use super::models::{ModelsAction, ModelsTab};
use super::notify::Notifications;
use super::runs::{RunsAction, RunsTab};
use super::shared::Shared;
use super::state::{Persisted, ThemeChoice, STORAGE_KEY};
use super::status_bar::StatusBar;
use super::tab::Tab;
use super::train::TrainTab;
use crate::worker::{Event, Waker, Worker};

/// Borrows the fields every tab shares (field by field, so the tabs stay borrowable).
macro_rules! shared {
    ($app:ident, $now:expr) => {
        Shared {
            worker: &$app.worker,
            notices: &mut $app.notices,
            state: &mut $app.state,
            now: $now,
            memory: $app.memory,
        }
    };
}

/// How long `logic()` may spend taking events per frame.
const DRAIN_BUDGET: Duration = Duration::from_millis(10);

/// How the app starts.
#[derive(Debug, Clone)]
pub struct AppOptions {
    /// The model to load; `None` takes the persisted one (`default` at first).
    pub model: Option<String>,
    /// Load (and, for `default`, fetch) the model at start.
    pub load_model: bool,
    /// Read the persisted UI state and reopen the last dataset.
    pub restore: bool,
    /// A dataset file to open at start, in place of the last one
    /// (`finetune-studio FILE`).
    pub open_dataset: Option<PathBuf>,
}

impl Default for AppOptions {
    fn default() -> Self {
        AppOptions {
            model: None,
            load_model: true,
            restore: true,
            open_dataset: None,
        }
    }
}

impl AppOptions {
    /// No model, no persisted state: what tests and benchmarks want.
    pub fn headless() -> Self {
        AppOptions {
            model: None,
            load_model: false,
            restore: false,
            open_dataset: None,
        }
    }
}

/// The close guard's state.
#[derive(Debug, Default)]
struct CloseGuard {
    /// The "unsaved changes" question is shown.
    asking: bool,
    /// The user chose to quit.
    allowed: bool,
}

/// The studio application.
pub struct StudioApp {
    pub state: Persisted,
    worker: Worker,
    waker: Waker,
    pub model: ModelSlot,
    pub datasets: DatasetsTab,
    pub train: TrainTab,
    pub runs: RunsTab,
    pub chat: ChatTab,
    pub models: ModelsTab,
    /// The export dialog of a run, while it shows or its export runs.
    pub export: Option<ExportDialog>,
    /// The hand-off dialog (a run to LLaMA-Factory or axolotl, or their output back).
    pub handoff: Option<HandoffDialog>,
    pub notices: Notifications,
    status: StatusBar,
    close: CloseGuard,
    applied_theme: Option<ThemeChoice>,
    /// How long each frame's `logic()` + `ui()` took.
    pub frame_times: FrameTimes,
    memory: super::memory_gauge::MemoryGauge,
}

impl StudioApp {
    /// The app as `finetune-studio [FILE]` starts it: persisted state, the model loading,
    /// `open_dataset` (or else the last dataset) opening.
    pub fn new(
        cc: &eframe::CreationContext<'_>,
        model: Option<String>,
        open_dataset: Option<PathBuf>,
    ) -> Self {
        Self::with_options(
            cc,
            AppOptions {
                model,
                open_dataset,
                ..AppOptions::default()
            },
        )
    }

    pub fn with_options(cc: &eframe::CreationContext<'_>, options: AppOptions) -> Self {
        let mut state: Persisted = if options.restore {
            cc.storage
                .and_then(|s| eframe::get_value(s, STORAGE_KEY))
                .unwrap_or_default()
        } else {
            Persisted::default()
        };
        if let Some(m) = &options.model {
            state.model = m.clone();
        }
        super::fonts::install(&cc.egui_ctx);
        let waker = Waker::from_ctx(&cc.egui_ctx);
        let worker = Worker::spawn(waker.clone());
        let model = if options.load_model {
            ModelSlot::load(&state.model, waker.clone())
        } else {
            ModelSlot::NotLoaded
        };
        let mut app = StudioApp {
            train: TrainTab::new(&state.run_config),
            state,
            worker,
            waker,
            model,
            datasets: DatasetsTab::default(),
            runs: RunsTab::default(),
            chat: ChatTab::default(),
            models: ModelsTab::default(),
            export: None,
            handoff: None,
            notices: Notifications::default(),
            status: StatusBar,
            close: CloseGuard::default(),
            applied_theme: None,
            frame_times: FrameTimes::default(),
            memory: Default::default(),
        };
        // A file that cannot be read shows the usual error notice once the worker replies.
        let last = options.restore.then(|| app.state.last_dataset.clone());
        match (options.open_dataset, last.flatten()) {
            (Some(p), _) => app.open_dataset(&p, 0.0),
            (None, Some(p)) if p.exists() => app.open_dataset(&p, 0.0),
            _ => {}
        }
        app
    }

    /// Opens a dataset file in the Datasets tab (read on the worker).
    pub fn open_dataset(&mut self, path: &std::path::Path, now: f64) {
        self.state.tab = Tab::Datasets;
        let mut shared = shared!(self, now);
        self.datasets.open(path, &mut shared);
    }

    /// The waker the engine's threads use to repaint the window.
    pub fn waker(&self) -> &Waker {
        &self.waker
    }

    fn handle_event(&mut self, event: Event, now: f64) {
        let mut shared = shared!(self, now);
        let Some(event) = self.datasets.on_event(event, &mut shared) else {
            return;
        };
        let Some(event) = self.train.on_event(event, &mut shared) else {
            return;
        };
        let Some(event) = self.runs.on_event(event) else {
            return;
        };
        let Some(event) = self.models.on_event(event) else {
            return;
        };
        let Some(event) = self.chat.on_event(event) else {
            return;
        };
        match event {
            Event::Failed { kind, error } => {
                self.notices.error(format!("{} failed", kind.describe()), error)
            }
            Event::Picked {
                purpose: crate::worker::DialogPurpose::ImportRunFolder,
                path: Some(path),
            } => {
                if let Some(d) = &mut self.handoff {
                    d.picked(&path);
                }
            }
            Event::Picked { path: None, .. } => self.notices.info(
                "No file chosen. If no dialog appeared, type the path into the path field or drag the file onto the window.",
            ),
            _ => {}
        }
    }

    /// Takes worker and training events for at most [`DRAIN_BUDGET`].
    fn drain_events(&mut self, ctx: &egui::Context, now: f64) {
        let start = Instant::now();
        while start.elapsed() < DRAIN_BUDGET {
            let Some(event) = self.worker.try_recv() else {
                break;
            };
            self.handle_event(event, now);
        }
        let mut shared = shared!(self, now);
        let was_running = self.train.is_running();
        let more = self.train.drain(&mut shared, start + DRAIN_BUDGET);
        if was_running && !self.train.is_running() {
            // The run wrote its final checkpoint and metrics: list it again.
            self.runs.refresh(&mut shared);
        }
        if more {
            ctx.request_repaint();
        }
        if let Some((title, error)) = self.model.poll() {
            self.notices.error(title, error);
        }
    }

    fn shortcuts(&mut self, ctx: &egui::Context, now: f64) {
        use egui::{Key, KeyboardShortcut, Modifiers};
        let pressed = |m: Modifiers, k: Key| {
            ctx.input_mut(|i| i.consume_shortcut(&KeyboardShortcut::new(m, k)))
        };
        let typing = ctx.text_edit_focused();
        let mut shared = shared!(self, now);
        let datasets = &mut self.datasets;
        if pressed(Modifiers::COMMAND, Key::O) {
            shared.state.tab = Tab::Datasets;
            datasets.pick_file(&mut shared);
        }
        if pressed(Modifiers::COMMAND, Key::S) {
            datasets.save(&mut shared);
        }
        if pressed(Modifiers::COMMAND, Key::F) {
            shared.state.tab = Tab::Datasets;
            datasets.focus_search();
        }
        // While a text field has focus, Ctrl+Z and Ctrl+Y undo its typing instead.
        if !typing {
            if pressed(Modifiers::COMMAND | Modifiers::SHIFT, Key::Z)
                || pressed(Modifiers::COMMAND, Key::Y)
            {
                datasets.redo(&mut shared);
            }
            if pressed(Modifiers::COMMAND, Key::Z) {
                datasets.undo(&mut shared);
            }
        }
    }

    fn dropped_files(&mut self, ctx: &egui::Context, now: f64) {
        let dropped: Vec<std::path::PathBuf> = ctx.input(|i| {
            i.raw
                .dropped_files
                .iter()
                .map(|f| f.path().to_path_buf())
                .collect()
        });
        if let Some(p) = dropped.into_iter().next() {
            self.open_dataset(&p, now);
        }
    }

    fn close_guard(&mut self, ctx: &egui::Context) {
        if ctx.input(|i| i.viewport().close_requested())
            && !self.close.allowed
            && (self.datasets.is_dirty() || self.train.is_running())
        {
            ctx.send_viewport_cmd(egui::ViewportCommand::CancelClose);
            self.close.asking = true;
        }
    }

    fn close_dialog_ui(&mut self, ui: &mut egui::Ui, now: f64) {
        if !self.close.asking {
            return;
        }
        let mut choice = None;
        egui::Modal::new(egui::Id::unique("close-guard")).show(ui.ctx(), |ui| {
            ui.set_width(420.0);
            ui.heading("Quit finetune-studio?");
            if self.datasets.is_dirty() {
                ui.label("The open dataset has unsaved changes.");
            }
            if self.train.is_running() {
                ui.label(
                    "A training run is in progress; quitting stops it after its current step.",
                );
            }
            ui.add_space(8.0);
            ui.horizontal(|ui| {
                if self.datasets.is_dirty() && ui.button("Save and quit").clicked() {
                    choice = Some(1);
                }
                if ui.button("Quit without saving").clicked() {
                    choice = Some(2);
                }
                if ui.button("Cancel").clicked() {
                    choice = Some(0);
                }
            });
        });
        match choice {
            Some(0) => self.close.asking = false,
            Some(1) => {
                let mut shared = shared!(self, now);
                self.datasets.save(&mut shared);
                self.close.asking = false;
                self.notices
                    .info("Saving; close the window again once it is saved.");
            }
            Some(_) => {
                self.close.asking = false;
                self.close.allowed = true;
                self.train.stop();
                // The user chose to drop the edits: do not offer them back next time.
                if let Some(source) = self.datasets.doc.as_ref().and_then(|d| d.data().path()) {
                    if let Err(e) = crate::data::Dataset::discard_recovery(source) {
                        tracing::warn!("{e}");
                    }
                }
                ui.ctx().send_viewport_cmd(egui::ViewportCommand::Close);
            }
            None => {}
        }
    }

    fn top_bar_ui(&mut self, ui: &mut egui::Ui) {
        ui.horizontal(|ui| {
            ui.label(egui::RichText::new("finetune-studio").strong().size(16.0));
            ui.add_space(12.0);
            for tab in Tab::ALL {
                let mut label = tab.label().to_string();
                if tab == Tab::Datasets && self.datasets.is_dirty() {
                    label.push_str(" ●");
                }
                if tab == Tab::Train && self.train.is_running() {
                    label.push_str(" ▶");
                }
                ui.selectable_value(&mut self.state.tab, tab, label);
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                let (icon, next, tip) = match self.state.theme {
                    ThemeChoice::Dark => (
                        "Theme: dark",
                        ThemeChoice::Light,
                        "Dark theme; click for light",
                    ),
                    ThemeChoice::Light => (
                        "Theme: light",
                        ThemeChoice::System,
                        "Light theme; click to follow the system",
                    ),
                    ThemeChoice::System => (
                        "Theme: system",
                        ThemeChoice::Dark,
                        "System theme; click for dark",
                    ),
                };
                if ui.button(icon).on_hover_text(tip).clicked() {
                    self.state.theme = next;
                }
            });
        });
    }

    /// Opens the export dialog for the run in `dir`, unless an export is running.
    fn open_export(&mut self, dir: &std::path::Path) {
        if let Some(d) = &mut self.export {
            if d.is_running() {
                d.open = true;
                self.notices.push(
                    super::notify::Level::Warning,
                    "An export is running",
                    "Wait for it to end before starting another.",
                );
                return;
            }
        }
        self.export = self
            .runs
            .runs
            .iter()
            .find(|r| r.path == dir)
            .and_then(ExportDialog::for_run);
    }

    /// Opens the hand-off dialog, unless a hand-off is running.
    fn open_handoff(&mut self, dialog: impl FnOnce() -> Option<HandoffDialog>) {
        if let Some(d) = &mut self.handoff {
            if d.is_running() {
                d.open = true;
                self.notices.push(
                    super::notify::Level::Warning,
                    "A hand-off is running",
                    "Wait for it to end before starting another.",
                );
                return;
            }
        }
        self.handoff = dialog();
    }

    fn job_line(&self) -> Option<String> {
        if let Some(line) = self.train.status_line() {
            return Some(line);
        }
        if self.export.as_ref().is_some_and(ExportDialog::is_running) {
            return Some("exporting".into());
        }
        if self.handoff.as_ref().is_some_and(HandoffDialog::is_running) {
            return Some("hand-off".into());
        }
        if let Some(p) = &self.datasets.loading {
            return Some(format!("reading {}", p.display()));
        }
        let doc = self.datasets.doc.as_ref()?;
        if doc.saving.is_some() {
            Some("saving the dataset".into())
        } else if doc.analyzing.is_some() {
            Some("computing dataset statistics".into())
        } else {
            None
        }
    }
}

impl eframe::App for StudioApp {
    fn logic(&mut self, ctx: &egui::Context, _frame: &mut eframe::Frame) {
        let start = Instant::now();
        let now = ctx.input(|i| i.time);
        if self.applied_theme != Some(self.state.theme) {
            ctx.set_theme(self.state.theme.preference());
            self.applied_theme = Some(self.state.theme);
        }
        self.memory.refresh(now);
        self.drain_events(ctx, now);
        self.shortcuts(ctx, now);
        self.dropped_files(ctx, now);
        self.close_guard(ctx);
        let mut shared = shared!(self, now);
        self.datasets.logic(&mut shared, self.model.model());
        self.train
            .logic(&mut shared, &self.model, &self.datasets, &self.waker);
        self.chat.logic(&mut shared, &self.waker);
        if let Some(d) = &mut self.export {
            d.poll(&mut self.notices);
        }
        let imported = self
            .handoff
            .as_mut()
            .and_then(|d| d.poll(&mut self.notices));
        if let Some(run) = imported {
            self.runs.selected.insert(run);
            let mut shared = shared!(self, now);
            self.runs.refresh(&mut shared);
        }
        if self.datasets.is_busy() {
            // Polls the dataset's jobs at the busy indicator's pace, not faster: where the
            // window is painted on the CPU, every frame takes from the job.
            ctx.request_repaint_after(super::busy::STEP);
        }
        self.frame_times.add_logic(start.elapsed());
    }

    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let start = Instant::now();
        let now = ui.input(|i| i.time);
        egui::Panel::top("top-bar").show(ui, |ui| {
            ui.add_space(4.0);
            self.top_bar_ui(ui);
            ui.add_space(2.0);
        });
        let job = self.job_line();
        egui::Panel::bottom("status-bar").show(ui, |ui| {
            self.status.ui(ui, &self.model, job, self.memory.rss);
        });
        egui::CentralPanel::default_margins().show(ui, |ui| {
            let tab = self.state.tab;
            let mut shared = shared!(self, now);
            match tab {
                Tab::Datasets => self.datasets.ui(ui, &mut shared),
                Tab::Train => {
                    self.train
                        .ui(ui, &mut shared, &self.model, &self.datasets, &self.waker)
                }
                Tab::Runs => {
                    let active = self.train.active_run_dir();
                    match self.runs.ui(ui, &mut shared, active.as_deref()) {
                        Some(RunsAction::Resume(dir)) => {
                            let base = self
                                .runs
                                .runs
                                .iter()
                                .find(|r| r.path == dir)
                                .and_then(|r| r.config.as_ref())
                                .map(|c| c.model.base.clone())
                                .unwrap_or_default();
                            let model = super::train::model_for(&self.model, &base);
                            self.train.resume(&dir, model, &self.waker, &mut shared);
                            shared.state.tab = Tab::Train;
                        }
                        Some(RunsAction::Export(dir)) => self.open_export(&dir),
                        Some(RunsAction::Handoff(dir)) => {
                            let run = self.runs.runs.iter().find(|r| r.path == dir);
                            let found = run.and_then(|r| Some((r.name.clone(), r.config.clone()?)));
                            let runs_dir = super::runs::runs_dir(&shared);
                            self.open_handoff(|| {
                                let (name, cfg) = found?;
                                Some(HandoffDialog::export(&name, cfg, runs_dir))
                            });
                        }
                        Some(RunsAction::HandoffSettings) => {
                            let cfg = shared.state.run_config.clone();
                            let runs_dir = super::runs::runs_dir(&shared);
                            self.open_handoff(|| {
                                Some(HandoffDialog::export(
                                    &cfg.output.name,
                                    cfg.clone(),
                                    runs_dir,
                                ))
                            });
                        }
                        Some(RunsAction::Import) => {
                            let runs_dir = super::runs::runs_dir(&shared);
                            self.open_handoff(|| Some(HandoffDialog::import(runs_dir)));
                        }
                        None => {}
                    }
                }
                Tab::Chat => {
                    let action = self.chat.ui(
                        ui,
                        &mut shared,
                        &self.model,
                        &mut self.runs,
                        self.datasets.doc.as_ref(),
                        &self.waker,
                    );
                    if let Some(ChatAction::AddExample(record)) = action {
                        self.datasets.append(record, &mut shared);
                    }
                }
                Tab::Models => match self.models.ui(ui, &mut shared, &self.model) {
                    Some(ModelsAction::Load(spec)) => {
                        shared.state.model = spec.clone();
                        shared.state.recent_models.retain(|s| s != &spec);
                        shared.state.recent_models.insert(0, spec.clone());
                        shared.state.recent_models.truncate(10);
                        self.model = ModelSlot::load(&spec, self.waker.clone());
                    }
                    Some(ModelsAction::Unload) => self.model = ModelSlot::NotLoaded,
                    None => {}
                },
            }
        });
        if ui.input(|i| !i.raw.hovered_files.is_empty()) {
            drop_overlay(ui);
        }
        if let Some(d) = &mut self.export {
            if !d.ui(ui.ctx(), &self.model, &self.waker) {
                self.export = None;
            }
        }
        if let Some(d) = &mut self.handoff {
            if !d.ui(ui.ctx(), &self.model, &self.worker, &self.waker) {
                self.handoff = None;
            }
        }
        self.close_dialog_ui(ui, now);
        self.notices.show(ui.ctx());
        self.frame_times.add_ui(start.elapsed());
    }

    fn save(&mut self, storage: &mut dyn eframe::Storage) {
        eframe::set_value(storage, STORAGE_KEY, &self.state);
    }

    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        self.train.stop();
    }
}

fn drop_overlay(ui: &egui::Ui) {
    let rect = ui.ctx().content_rect();
    let painter = ui.ctx().layer_painter(egui::LayerId::new(
        egui::Order::Foreground,
        egui::Id::unique("drop-overlay"),
    ));
    painter.rect_filled(rect, 0.0, egui::Color32::from_black_alpha(160));
    painter.text(
        rect.center(),
        egui::Align2::CENTER_CENTER,
        "Drop the dataset file to open it",
        egui::FontId::proportional(24.0),
        egui::Color32::WHITE,
    );
}
