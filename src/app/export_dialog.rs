//! The export dialog, opened from a run in the Runs tab: which adapter (the final one or a
//! checkpoint), which format (PEFT, merged folder, GGUF f16/q8_0/f32 with an Ollama
//! Modelfile), where to, and whether to read the result back and compare it. The export
//! runs on its own thread (`crate::worker::export_job`); the dialog shows its progress,
//! then the files written and the check's figures. Closing the dialog leaves the export
//! running; its end then shows as a notification.

use std::path::PathBuf;

use crate::jobs::JobEvents;
use eframe::egui;

use super::busy::Busy;
use super::model_slot::ModelSlot;
use super::notify::{Level, Notifications};
use crate::export::job::{ExportFormat, ExportReport, ExportRequest};
use crate::train::RunInfo;
use crate::worker::export_job::{self, Base, ExportEvent};
use crate::worker::Waker;

/// Where the dialog is.
enum Stage {
    Choosing,
    Running {
        lines: Vec<String>,
        events: JobEvents<ExportEvent>,
    },
    Done(Box<ExportReport>),
    Failed(String),
}

/// The export dialog of one run.
pub struct ExportDialog {
    run_name: String,
    run_dir: PathBuf,
    /// The run's base model (`--model` spec).
    base: String,
    /// The adapters to choose from: (label, folder), the final adapter first.
    sources: Vec<(String, PathBuf)>,
    source: usize,
    pub format: ExportFormat,
    /// The output folder, as typed.
    pub out: String,
    /// Whether `out` was typed by the user (else it follows the format).
    out_typed: bool,
    pub verify: bool,
    /// The output folder as last checked: (text, problem, whether it holds files). The
    /// file system is asked again only when the text changes, not every frame.
    out_check: Option<(String, Option<String>, bool)>,
    stage: Stage,
    /// Whether the window shows; an export keeps running when it is closed.
    pub open: bool,
}

impl ExportDialog {
    /// A dialog for `run`, or `None` when it has neither an adapter nor a checkpoint.
    pub fn for_run(run: &RunInfo) -> Option<Self> {
        let mut sources = Vec::new();
        if run.has_adapter {
            sources.push(("final adapter".to_string(), run.path.join("adapter")));
        }
        for step in run.checkpoints.iter().rev() {
            sources.push((
                format!("checkpoint at step {step}"),
                run.path.join("checkpoints").join(format!("step-{step}")),
            ));
        }
        if sources.is_empty() {
            return None;
        }
        let format = ExportFormat::Gguf(crate::export::gguf::GgufType::Q8_0);
        Some(ExportDialog {
            run_name: run.name.clone(),
            run_dir: run.path.clone(),
            base: run
                .config
                .as_ref()
                .map_or_else(|| "default".to_string(), |c| c.model.base.clone()),
            sources,
            source: 0,
            format,
            out: default_out(&run.path, format),
            out_typed: false,
            verify: true,
            out_check: None,
            stage: Stage::Choosing,
            open: true,
        })
    }

    /// Whether an export is running.
    pub fn is_running(&self) -> bool {
        matches!(self.stage, Stage::Running { .. })
    }

    /// Takes the export thread's events; runs every frame, shown or not.
    pub fn poll(&mut self, notices: &mut Notifications) {
        let Stage::Running { lines, events } = &mut self.stage else {
            return;
        };
        let mut end = None;
        while let Some(event) = events.try_recv() {
            match event {
                ExportEvent::Progress(l) => lines.push(l),
                ExportEvent::Done(report) => {
                    end = Some(Stage::Done(report));
                    break;
                }
                ExportEvent::Failed(error) => {
                    end = Some(Stage::Failed(error));
                    break;
                }
            }
        }
        let Some(end) = end else { return };
        if self.open {
            // The dialog shows the outcome itself.
            self.stage = end;
            return;
        }
        match &end {
            Stage::Done(r) => notices.push(
                Level::Info,
                format!("Exported {}", self.run_name),
                format!(
                    "{}{}",
                    r.out.display(),
                    r.verification
                        .as_ref()
                        .map(|v| format!("\nchecked: {}", v.summary()))
                        .unwrap_or_default()
                ),
            ),
            Stage::Failed(e) => notices.push(
                Level::Error,
                format!("Exporting {} failed", self.run_name),
                e.clone(),
            ),
            _ => {}
        }
        self.stage = end;
    }

    /// Draws the window. Returns false once the user closed it and nothing runs.
    pub fn ui(&mut self, ctx: &egui::Context, model: &ModelSlot, waker: &Waker) -> bool {
        let mut open = self.open;
        egui::Window::new(format!("Export {}", self.run_name))
            .id(egui::Id::unique("export-dialog"))
            .open(&mut open)
            .collapsible(false)
            .resizable(true)
            .default_width(560.0)
            .pivot(egui::Align2::CENTER_CENTER)
            .default_pos(ctx.content_rect().center())
            .show(ctx, |ui| match &self.stage {
                Stage::Choosing => self.form_ui(ui, model, waker),
                Stage::Running { lines, .. } => {
                    ui.horizontal(|ui| {
                        ui.add(Busy);
                        ui.label(format!("Exporting to {}", self.out));
                    });
                    for l in lines.iter().rev().take(10).rev() {
                        ui.monospace(l);
                    }
                    ui.weak(
                        "You can close this window; the export goes on and reports when it ends.",
                    );
                }
                Stage::Done(report) => {
                    let again = report_ui(ui, report);
                    if again {
                        self.out_check = None;
                        self.stage = Stage::Choosing;
                    }
                }
                Stage::Failed(error) => {
                    ui.colored_label(ui.visuals().error_fg_color, "The export failed");
                    ui.label(error.as_str());
                    if ui.button("Back").clicked() {
                        self.stage = Stage::Choosing;
                    }
                }
            });
        self.open = open;
        self.open || self.is_running()
    }

    fn form_ui(&mut self, ui: &mut egui::Ui, model: &ModelSlot, waker: &Waker) {
        egui::Grid::new("export-form")
            .num_columns(2)
            .spacing([12.0, 8.0])
            .show(ui, |ui| {
                ui.label("Base model");
                ui.label(&self.base);
                ui.end_row();

                ui.label("Adapter");
                let current = self.sources.get(self.source).map(|s| s.0.clone());
                egui::ComboBox::from_id_salt("export-source")
                    .selected_text(current.unwrap_or_default())
                    .show_ui(ui, |ui| {
                        for (i, (label, path)) in self.sources.iter().enumerate() {
                            ui.selectable_value(&mut self.source, i, label)
                                .on_hover_text(path.display().to_string());
                        }
                    });
                ui.end_row();

                ui.label("Format");
                ui.vertical(|ui| {
                    for f in ExportFormat::ALL {
                        if ui
                            .radio_value(&mut self.format, f, f.label())
                            .on_hover_text(f.description())
                            .changed()
                            && !self.out_typed
                        {
                            self.out = default_out(&self.run_dir, f);
                        }
                    }
                    ui.weak(self.format.description());
                });
                ui.end_row();

                ui.label("Output folder");
                if ui
                    .add(egui::TextEdit::singleline(&mut self.out).desired_width(380.0))
                    .changed()
                {
                    self.out_typed = true;
                }
                ui.end_row();

                ui.label("");
                ui.checkbox(&mut self.verify, "Read it back and compare with the model")
                    .on_hover_text(
                        "Loads the written files with the engine and compares their logits (or the adapter's matrices) with the model in memory",
                    );
                ui.end_row();
            });
        ui.separator();
        let out = PathBuf::from(self.out.trim());
        if self.out_check.as_ref().map(|c| &c.0) != Some(&self.out) {
            let problem = if self.out.trim().is_empty() {
                Some("Choose an output folder".to_string())
            } else if out.is_file() {
                Some(format!("{} is a file, not a folder", out.display()))
            } else {
                None
            };
            let non_empty = out.read_dir().is_ok_and(|mut d| d.next().is_some());
            self.out_check = Some((self.out.clone(), problem, non_empty));
        }
        let (problem, non_empty) = match &self.out_check {
            Some((_, p, n)) => (p.clone(), *n),
            None => (None, false),
        };
        ui.horizontal(|ui| {
            let start = ui.add_enabled(problem.is_none(), egui::Button::new("Export"));
            if let Some(p) = &problem {
                ui.colored_label(ui.visuals().warn_fg_color, p);
            } else if non_empty {
                ui.colored_label(
                    ui.visuals().warn_fg_color,
                    "The folder is not empty; files of the same name are replaced",
                );
            }
            if start.clicked() {
                self.start(out, model, waker);
            }
        });
    }

    fn start(&mut self, out: PathBuf, model: &ModelSlot, waker: &Waker) {
        let Some((_, adapter)) = self.sources.get(self.source) else {
            return;
        };
        let req = ExportRequest {
            adapter: Some(adapter.clone()),
            format: self.format,
            out,
            verify: self.verify,
        };
        let base = match super::train::model_for(model, &self.base) {
            Some(m) => Base::Loaded(m),
            None => Base::Spec(self.base.clone()),
        };
        self.stage = Stage::Running {
            lines: Vec::new(),
            events: export_job::spawn(base, req, waker.clone()),
        };
    }
}

/// The files written and the check. Returns true when "Export again" was clicked.
fn report_ui(ui: &mut egui::Ui, report: &ExportReport) -> bool {
    ui.strong(format!("Written to {}", report.out.display()));
    egui::Grid::new("export-files")
        .num_columns(2)
        .striped(true)
        .show(ui, |ui| {
            for (path, size) in &report.files {
                ui.label(crate::paths::file_name(path));
                ui.label(crate::sys::human_bytes(*size));
                ui.end_row();
            }
        });
    match &report.verification {
        Some(v) => {
            ui.label(format!("Read back and compared, passed: {}", v.summary()));
        }
        None => {
            ui.weak("Not read back (the check was off).");
        }
    }
    let mut again = false;
    ui.horizontal(|ui| {
        if ui.button("Open folder").clicked() {
            super::runs::open_folder(&report.out);
        }
        if report.files.iter().any(|(p, _)| p.ends_with("Modelfile")) {
            let cmd = format!(
                "cd '{}' && ollama create my-model -f Modelfile",
                report.out.display()
            );
            if ui
                .button("Copy the Ollama command")
                .on_hover_text(cmd.clone())
                .clicked()
            {
                ui.ctx().copy_text(cmd);
            }
        }
        if ui.button("Export again").clicked() {
            again = true;
        }
    });
    again
}

/// `RUN/export/<format>`.
fn default_out(run_dir: &std::path::Path, format: ExportFormat) -> String {
    run_dir
        .join("export")
        .join(format.folder_name())
        .display()
        .to_string()
}
