//! The Runs tab: every run in the runs folder with its settings, final and best loss and
//! duration; overlaid loss curves; resume, delete and open the folder; export. Waits on
//! the engine's run listing (`train::runs`); until it lands it shows where runs go.

use eframe::egui;

use super::shared::Shared;

/// State of the Runs tab.
#[derive(Debug, Default)]
pub struct RunsTab {}

impl RunsTab {
    pub fn ui(&mut self, ui: &mut egui::Ui, _shared: &mut Shared<'_>) {
        ui.heading("Runs");
        ui.label(format!(
            "Runs are written to {}.",
            crate::paths::runs_dir().display()
        ));
    }
}
