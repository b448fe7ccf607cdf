//! The status bar: the loaded model, the memory this process uses (VmRSS, read once a
//! second) and the job running now.

use eframe::egui;

use super::model_slot::ModelSlot;

/// Cached figures, so `/proc` is read at most once a second.
#[derive(Debug, Default)]
pub struct StatusBar {
    rss_bytes: Option<u64>,
    read_at: f64,
}

impl StatusBar {
    pub fn ui(&mut self, ui: &mut egui::Ui, model: &ModelSlot, job: Option<String>, now: f64) {
        if now - self.read_at >= 1.0 || self.read_at == 0.0 {
            self.rss_bytes = crate::sys::rss_bytes();
            self.read_at = now;
        }
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
            match self.rss_bytes {
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
