//! The hand-off dialog, opened from the Runs tab. *Hand off*: a run (or the Train tab's
//! current settings) written as a LLaMA-Factory or axolotl project (engine, folder, which
//! base the engine loads, CPU settings for a check here), then the files and the command
//! that trains it. *Import*: an engine's output folder brought back as a run. Both run on
//! their own thread (`crate::worker::handoff_job`); closing the dialog leaves the job
//! running, and its end shows as a notification.

use std::path::{Path, PathBuf};

use eframe::egui;

use super::busy::Busy;
use super::model_slot::ModelSlot;
use super::notify::{Level, Notifications};
use crate::handoff::import::ImportReport;
use crate::handoff::{Engine, HandoffReport, HandoffRequest};
use crate::jobs::JobEvents;
use crate::train::RunConfig;
use crate::worker::export_job::Base;
use crate::worker::handoff_job::{self, HandoffEvent};
use crate::worker::{Command, DialogPurpose, Waker, Worker};

/// What the dialog does.
enum Mode {
    /// Write `config` (of the run `name`) as an engine project.
    Export {
        name: String,
        config: Box<RunConfig>,
    },
    /// Bring an engine's output folder back.
    Import,
}

enum Stage {
    Choosing,
    Running {
        lines: Vec<String>,
        events: JobEvents<HandoffEvent>,
    },
    Exported(Box<HandoffReport>),
    Imported(Box<ImportReport>),
    Failed(String),
}

/// The hand-off dialog.
pub struct HandoffDialog {
    mode: Mode,
    pub engine: Engine,
    /// The project folder (export) or the engine's output folder (import), as typed.
    pub path: String,
    path_typed: bool,
    /// What the engine loads as the base, as typed (empty: the base's hub id).
    pub base_model: String,
    pub write_base: bool,
    pub cpu: bool,
    /// The runs folder an import goes to.
    runs_dir: PathBuf,
    stage: Stage,
    pub open: bool,
}

/// `<data dir>/handoff/<name>-<engine>`.
fn default_out(name: &str, engine: Engine) -> String {
    let name = crate::train::run_dir::folder_name(name);
    crate::paths::data_dir()
        .join("handoff")
        .join(format!("{name}-{}", engine.id()))
        .display()
        .to_string()
}

impl HandoffDialog {
    fn new(mode: Mode, path: String, runs_dir: PathBuf) -> Self {
        HandoffDialog {
            mode,
            engine: Engine::LlamaFactory,
            path,
            path_typed: false,
            base_model: String::new(),
            write_base: false,
            cpu: false,
            runs_dir,
            stage: Stage::Choosing,
            open: true,
        }
    }

    /// A dialog that writes `config` (the run `name`'s, or the Train tab's) as a project.
    pub fn export(name: &str, config: RunConfig, runs_dir: PathBuf) -> Self {
        let mode = Mode::Export {
            name: name.to_string(),
            config: Box::new(config),
        };
        Self::new(mode, default_out(name, Engine::LlamaFactory), runs_dir)
    }

    /// A dialog that imports an engine's output folder into `runs_dir`.
    pub fn import(runs_dir: PathBuf) -> Self {
        Self::new(Mode::Import, String::new(), runs_dir)
    }

    pub fn is_running(&self) -> bool {
        matches!(self.stage, Stage::Running { .. })
    }

    /// A folder picked in the file dialog.
    pub fn picked(&mut self, path: &Path) {
        self.path = path.display().to_string();
        self.path_typed = true;
    }

    /// Takes the job's events; runs every frame, shown or not. Returns the folder of a run
    /// that was just imported (the Runs tab lists it).
    pub fn poll(&mut self, notices: &mut Notifications) -> Option<PathBuf> {
        let Stage::Running { lines, events } = &mut self.stage else {
            return None;
        };
        let mut end = None;
        while let Some(event) = events.try_recv() {
            match event {
                HandoffEvent::Progress(l) => lines.push(l),
                HandoffEvent::Exported(r) => end = Some(Stage::Exported(r)),
                HandoffEvent::Imported(r) => end = Some(Stage::Imported(r)),
                HandoffEvent::Failed(e) => end = Some(Stage::Failed(e)),
            }
            if end.is_some() {
                break;
            }
        }
        let end = end?;
        let imported = match &end {
            Stage::Imported(r) => Some(r.run_dir.clone()),
            _ => None,
        };
        if !self.open {
            match &end {
                Stage::Exported(r) => notices.push(
                    Level::Info,
                    format!("Wrote the {} project", self.engine.label()),
                    format!("{}\ntrain it there: {}", r.out.display(), r.launch),
                ),
                Stage::Imported(r) => notices.push(
                    Level::Info,
                    "Imported the engine's run",
                    r.run_dir.display().to_string(),
                ),
                Stage::Failed(e) => notices.push(Level::Error, self.title(), e.clone()),
                _ => {}
            }
        }
        self.stage = end;
        imported
    }

    fn title(&self) -> String {
        match &self.mode {
            Mode::Export { name, .. } => format!("Hand off {name}"),
            Mode::Import => "Import an engine's run".into(),
        }
    }

    /// Draws the window. Returns false once the user closed it and nothing runs.
    pub fn ui(
        &mut self,
        ctx: &egui::Context,
        model: &ModelSlot,
        worker: &Worker,
        waker: &Waker,
    ) -> bool {
        let mut open = self.open;
        egui::Window::new(self.title())
            .id(egui::Id::unique("handoff-dialog"))
            .open(&mut open)
            .collapsible(false)
            .resizable(true)
            .default_width(600.0)
            .pivot(egui::Align2::CENTER_CENTER)
            .default_pos(ctx.content_rect().center())
            .show(ctx, |ui| match &self.stage {
                Stage::Choosing => match self.mode {
                    Mode::Export { .. } => self.export_form_ui(ui, model, waker),
                    Mode::Import => self.import_form_ui(ui, worker, waker),
                },
                Stage::Running { lines, .. } => {
                    ui.horizontal(|ui| {
                        ui.add(Busy);
                        ui.label(match self.mode {
                            Mode::Export { .. } => format!("Writing {}", self.path),
                            Mode::Import => format!("Importing {}", self.path),
                        });
                    });
                    for l in lines.iter().rev().take(10).rev() {
                        ui.monospace(l);
                    }
                    ui.weak("You can close this window; the job goes on and reports when it ends.");
                }
                Stage::Exported(r) => {
                    if exported_ui(ui, r) {
                        self.stage = Stage::Choosing;
                    }
                }
                Stage::Imported(r) => imported_ui(ui, r),
                Stage::Failed(e) => {
                    ui.colored_label(
                        ui.visuals().error_fg_color,
                        format!("{} failed", self.title()),
                    );
                    ui.label(e.as_str());
                    if ui.button("Back").clicked() {
                        self.stage = Stage::Choosing;
                    }
                }
            });
        self.open = open;
        self.open || self.is_running()
    }

    fn export_form_ui(&mut self, ui: &mut egui::Ui, model: &ModelSlot, waker: &Waker) {
        let Mode::Export { config, .. } = &self.mode else {
            return;
        };
        let base_spec = config.model.base.clone();
        egui::Grid::new("handoff-form")
            .num_columns(2)
            .spacing([12.0, 8.0])
            .show(ui, |ui| {
                ui.label("Engine");
                ui.horizontal(|ui| {
                    for e in Engine::ALL {
                        if ui.radio_value(&mut self.engine, e, e.label()).changed()
                            && !self.path_typed
                        {
                            if let Mode::Export { name, .. } = &self.mode {
                                self.path = default_out(name, e);
                            }
                        }
                    }
                });
                ui.end_row();

                ui.label("Project folder");
                if ui
                    .add(egui::TextEdit::singleline(&mut self.path).desired_width(400.0))
                    .changed()
                {
                    self.path_typed = true;
                }
                ui.end_row();

                ui.label("Base model");
                ui.vertical(|ui| {
                    ui.label(format!("{base_spec} (the run's)"));
                    ui.add_enabled(
                        !self.write_base,
                        egui::TextEdit::singleline(&mut self.base_model)
                            .hint_text("the engine loads: the base's hub id unless you name one")
                            .desired_width(400.0),
                    );
                    ui.checkbox(
                        &mut self.write_base,
                        "Include the base's weights in the project (for machines without the hub)",
                    );
                });
                ui.end_row();

                ui.label("");
                ui.checkbox(
                    &mut self.cpu,
                    "CPU settings (to check the project on this machine)",
                )
                .on_hover_text(
                    "No bf16, use_cpu: for a few steps on a laptop, not for the real run",
                );
                ui.end_row();
            });
        ui.weak(
            "Writes the data (the run's split), the config YAML, launch files for one GPU, several GPUs \
             (DeepSpeed ZeRO-2) and Slurm, and a README of what maps one to one.",
        );
        ui.separator();
        let problems = config.validate();
        let out = PathBuf::from(self.path.trim());
        let problem = if !problems.is_empty() {
            Some(format!(
                "The run config is not usable: {}",
                problems.join("; ")
            ))
        } else if self.path.trim().is_empty() {
            Some("Choose a project folder".to_string())
        } else {
            None
        };
        ui.horizontal(|ui| {
            let start = ui.add_enabled(problem.is_none(), egui::Button::new("Write project"));
            if let Some(p) = &problem {
                ui.colored_label(ui.visuals().warn_fg_color, p);
            }
            if start.clicked() {
                let req = HandoffRequest {
                    engine: self.engine,
                    out,
                    base_model: Some(self.base_model.trim().to_string())
                        .filter(|b| !b.is_empty() && !self.write_base),
                    write_base: self.write_base,
                    cpu: self.cpu,
                };
                let base = match super::train::model_for(model, &base_spec) {
                    Some(m) => Base::Loaded(m),
                    None => Base::Spec(base_spec.clone()),
                };
                self.stage = Stage::Running {
                    lines: Vec::new(),
                    events: handoff_job::spawn_export(base, (**config).clone(), req, waker.clone()),
                };
            }
        });
    }

    fn import_form_ui(&mut self, ui: &mut egui::Ui, worker: &Worker, waker: &Waker) {
        ui.label(
            "The folder LLaMA-Factory or axolotl trained into (its adapter and trainer_state.json or \
             trainer_log.jsonl), or the hand-off project around it.",
        );
        ui.horizontal(|ui| {
            super::fields::labelled_line(
                ui,
                "Engine output folder",
                &mut self.path,
                "…/output",
                380.0,
            );
            if ui.button("Browse…").clicked() {
                worker.send(Command::PickFile {
                    purpose: DialogPurpose::ImportRunFolder,
                    save: false,
                    start: Some(PathBuf::from(self.path.trim())).filter(|p| p.is_dir()),
                });
            }
        });
        ui.weak(format!("The run goes to {}", self.runs_dir.display()));
        ui.separator();
        let dir = PathBuf::from(self.path.trim());
        let ready = !self.path.trim().is_empty();
        if ui.add_enabled(ready, egui::Button::new("Import")).clicked() {
            self.stage = Stage::Running {
                lines: Vec::new(),
                events: handoff_job::spawn_import(dir, self.runs_dir.clone(), waker.clone()),
            };
        }
    }
}

/// The project written. Returns true when "Write again" was clicked.
fn exported_ui(ui: &mut egui::Ui, r: &HandoffReport) -> bool {
    ui.strong(format!("Written to {}", r.out.display()));
    ui.label(format!(
        "{} training and {} eval records; the engine loads {}; the studio plans {} steps for this run.",
        r.train_records, r.eval_records, r.base_model, r.planned_steps
    ));
    egui::ScrollArea::vertical()
        .max_height(220.0)
        .show(ui, |ui| {
            egui::Grid::new("handoff-files")
                .num_columns(2)
                .striped(true)
                .show(ui, |ui| {
                    for (path, size) in r.files.iter().take(200) {
                        ui.label(path.display().to_string());
                        ui.label(crate::sys::human_bytes(*size));
                        ui.end_row();
                    }
                });
        });
    let cmd = format!("cd '{}' && {}", r.out.display(), r.launch);
    ui.monospace(&cmd);
    let mut again = false;
    ui.horizontal(|ui| {
        if ui.button("Copy the command").clicked() {
            ui.ctx().copy_text(cmd.clone());
        }
        if ui.button("Open folder").clicked() {
            super::runs::open_folder(&r.out);
        }
        if ui.button("Write again").clicked() {
            again = true;
        }
    });
    again
}

fn imported_ui(ui: &mut egui::Ui, r: &ImportReport) {
    ui.strong(format!("Imported as {}", r.run_dir.display()));
    ui.label(format!(
        "{}: {} logged steps, {} evals, {} checkpoints; settings from {}.",
        r.engine.map_or("a Hugging Face Trainer run", Engine::label),
        r.steps,
        r.evals,
        r.checkpoints.len(),
        if r.restored_config {
            "the hand-off's studio-run.toml"
        } else {
            "the adapter's config"
        }
    ));
    if r.log_source.is_none() {
        ui.colored_label(
            ui.visuals().warn_fg_color,
            "No trainer_state.json or trainer_log.jsonl was found: the run has no curves.",
        );
    }
    ui.weak("It is in the Runs tab; its adapter chats, compares and exports like a local run's.");
}
