//! The status bar: the loaded model, the memory this process uses (VmRSS, from the
//! window's `MemoryGauge`) and the job running now.

use eframe::egui;

use super::model_slot::ModelSlot;

/// The status bar (it keeps no state of its own).
#[derive(Debug, Default)]
pub struct StatusBar;

impl StatusBar {
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        model: &ModelSlot,
        job: Option<String>,
        rss: Option<u64>,
    ) {
        ui.horizontal(|ui| {
            if model.is_loading() {
                ui.spinner();
            }
            let line = model.status_line();
            let r = ui.add(egui::Label::new(&line).truncate());
            if let ModelSlot::Ready { summary, .. } = model {
                r.on_hover_text(summary);
            } else if let ModelSlot::Failed { error, .. } = model {
                r.on_hover_text(error);
            }
            ui.separator();
            match rss {
                Some(b) => ui.label(format!("memory {:.0} MiB", crate::sys::mib(b))),
                None => ui.weak("memory: unknown"),
            }
            .on_hover_text("Resident memory of this process (VmRSS)");
            if let Some(job) = job {
                ui.separator();
                ui.spinner();
                ui.add(egui::Label::new(job).truncate());
            }
        });
        // Keep the memory figure fresh even when nothing else repaints.
        ui.ctx()
            .request_repaint_after(std::time::Duration::from_secs(1));
    }
}
