//! The Models tab: the models in the data directory and the Hugging Face cache, with
//! their size and memory. Filled in by the models issue (issue 6); for now it shows the
//! loaded model and the models found in the cache.

use std::path::PathBuf;

use eframe::egui;

use super::model_slot::ModelSlot;

/// State of the Models tab.
#[derive(Debug, Default)]
pub struct ModelsTab {
    hf_models: Option<Vec<(String, PathBuf)>>,
}

impl ModelsTab {
    pub fn ui(&mut self, ui: &mut egui::Ui, model: &ModelSlot) {
        ui.heading("Loaded model");
        match model {
            ModelSlot::NotLoaded => {
                ui.weak("None. Start the studio with --model, or pick one in the Train tab.");
            }
            ModelSlot::Loading { spec, lines, .. } => {
                ui.horizontal(|ui| {
                    ui.spinner();
                    ui.label(format!("Loading {spec}…"));
                });
                for l in lines.iter().rev().take(8).rev() {
                    ui.monospace(l);
                }
            }
            ModelSlot::Ready { model, summary, .. } => {
                ui.strong(&model.name);
                ui.label(summary);
                ui.weak(model.location.path().display().to_string());
            }
            ModelSlot::Failed { spec, error } => {
                ui.colored_label(
                    ui.visuals().error_fg_color,
                    format!("{spec} could not be loaded"),
                );
                ui.monospace(error);
            }
        }
        ui.separator();
        ui.horizontal(|ui| {
            ui.heading("Hugging Face cache");
            if ui.small_button("Rescan").clicked() {
                self.hf_models = None;
            }
        });
        let models = self
            .hf_models
            .get_or_insert_with(crate::model::source::list_hf_cache);
        if models.is_empty() {
            ui.weak(format!(
                "No model found in {}.",
                crate::paths::hf_hub_cache().display()
            ));
        }
        for (id, path) in models.iter() {
            ui.label(id).on_hover_text(path.display().to_string());
        }
    }
}
