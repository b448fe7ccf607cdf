//! The Train tab's estimate of the run its settings describe: memory at the peak, time per
//! step and steps, from the trainer's own plan of the data (made by a job whenever the
//! settings, the model, the dataset file or the machine's measured speed change).

use eframe::egui;

use crate::jobs::JobEvents;
use crate::train::{Estimate, RunConfig};
use crate::worker::plan_job::{self, Planned};
use crate::worker::Waker;

use super::datasets::DatasetsTab;
use super::model_slot::ModelSlot;

/// What an estimate was made for: the settings, the model, the open dataset's length and
/// whether it had unsaved edits (a save changes the file the run reads), and whether the
/// machine's matmul rate had been measured.
#[derive(Clone, PartialEq)]
struct Key {
    cfg: RunConfig,
    model: String,
    dataset: Option<(usize, bool)>,
    calibrated: bool,
}

/// The estimate shown, and the plan being made.
#[derive(Default)]
pub struct EstimateView {
    shown: Option<(Key, Result<Estimate, String>)>,
    planning: Option<(Key, JobEvents<Planned>)>,
}

impl EstimateView {
    /// Takes a finished plan, and starts a new one when what the estimate depends on has
    /// changed and none is being made.
    pub fn logic(
        &mut self,
        cfg: &RunConfig,
        model: &ModelSlot,
        datasets: &DatasetsTab,
        waker: &Waker,
    ) {
        if let Some((key, job)) = &mut self.planning {
            if let Some(Planned(result)) = job.try_recv() {
                self.shown = Some((key.clone(), result));
                self.planning = None;
            }
        }
        // The run's own base, never another loaded model: its figures would be another's.
        let Some(m) = super::train::model_for(model, &cfg.model.base) else {
            return;
        };
        let key = Key {
            cfg: cfg.clone(),
            model: m.name.clone(),
            dataset: datasets
                .doc
                .as_ref()
                .map(|d| (d.data().len(), d.is_dirty())),
            calibrated: crate::train::estimate::calibrated(),
        };
        let current = self.shown.as_ref().is_some_and(|(k, _)| *k == key);
        if !current && self.planning.is_none() {
            let job = plan_job::spawn(cfg.clone(), m.clone(), waker.clone());
            self.planning = Some((key, job));
        }
    }

    /// The estimate for exactly these settings, if it is made.
    pub fn for_config(&self, cfg: &RunConfig) -> Option<&Estimate> {
        match &self.shown {
            Some((k, Ok(e))) if k.cfg == *cfg => Some(e),
            _ => None,
        }
    }

    /// Draws the estimate. Returns a base model spec when the user asks to train the
    /// loaded model instead of the run's base.
    #[must_use]
    pub fn ui(&self, ui: &mut egui::Ui, cfg: &RunConfig, model: &ModelSlot) -> Option<String> {
        ui.strong("Estimate");
        let Some(m) = super::train::model_for(model, &cfg.model.base) else {
            return not_loaded_ui(ui, cfg, model);
        };
        match &self.shown {
            Some((_, Ok(e))) => {
                let color = if e.fits() {
                    ui.visuals().text_color()
                } else {
                    ui.visuals().error_fg_color
                };
                ui.colored_label(
                    color,
                    format!(
                        "{:.2}M trainable parameters; {}",
                        e.trainable_parameters as f64 / 1e6,
                        e.describe()
                    ),
                )
                .on_hover_text(format!(
                    "For {} on {}, packed and batched as the run will be.",
                    m.name,
                    cfg.data.path.display()
                ));
            }
            Some((_, Err(error))) => {
                ui.colored_label(ui.visuals().warn_fg_color, format!("! {error}"));
            }
            None => {
                ui.weak("Reading the dataset for the estimate…");
            }
        }
        if self.planning.is_some() && self.shown.is_some() {
            ui.weak("updating…");
        }
        None
    }
}

/// The estimate when the run's base is not the loaded model: says so, and offers to train
/// the loaded one.
fn not_loaded_ui(ui: &mut egui::Ui, cfg: &RunConfig, model: &ModelSlot) -> Option<String> {
    match model {
        ModelSlot::Ready { spec, model, .. } => {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                format!(
                    "The run's base ({}) is not the loaded model ({}): the estimate is made \
                     with the run's base loaded (Models tab), and the run loads it when it \
                     starts.",
                    cfg.model.base, model.name
                ),
            );
            ui.button(format!("Train {} instead", model.name))
                .on_hover_text("Make the loaded model the run's base")
                .clicked()
                .then(|| spec.clone())
        }
        _ => {
            ui.weak("Load a model to see the memory and time estimate (the status bar shows it loading).");
            None
        }
    }
}
