//! The Datasets tab's contamination check: a field naming the other set (`builtin`, a
//! suite file or a dataset file) and a button that sends a snapshot of the records to the
//! worker; its answer gives the "Contaminated" filter its rows and shows, for the selected
//! record, the text it shares and the other record's id. The UI thread never waits for it.

use eframe::egui;

use crate::data::contamination::{ContaminationReport, Flagged};
use crate::worker::{Command, Worker};

use super::busy::Busy;
use super::dataset_doc::OpenDataset;

/// One answer of the worker.
#[derive(Debug)]
pub struct Contamination {
    /// What the records were checked against.
    pub against: String,
    /// The generation of the records checked (older than the open one after an edit).
    pub generation: u64,
    pub report: ContaminationReport,
}

impl Contamination {
    /// The flagged records, in order.
    pub fn rows(&self) -> Vec<usize> {
        self.report.flagged.iter().map(|f| f.record).collect()
    }

    /// The overlaps of record `idx`, when it is flagged.
    pub fn of(&self, idx: usize) -> Option<&Flagged> {
        self.report
            .flagged
            .binary_search_by_key(&idx, |f| f.record)
            .ok()
            .map(|i| &self.report.flagged[i])
    }
}

/// The check's form, the check in flight and the latest answer.
#[derive(Debug)]
pub struct ContaminationCheck {
    /// The other set, as typed.
    pub against: String,
    next_id: u64,
    /// The check in flight: its id and the generation of the records sent.
    pending: Option<(u64, u64)>,
    pub error: Option<String>,
    pub result: Option<Contamination>,
}

impl Default for ContaminationCheck {
    fn default() -> Self {
        ContaminationCheck {
            against: crate::eval::BUILTIN_NAME.to_string(),
            next_id: 0,
            pending: None,
            error: None,
            result: None,
        }
    }
}

impl ContaminationCheck {
    /// Sends the open records to the worker.
    pub fn start(&mut self, doc: &OpenDataset, worker: &Worker) {
        self.next_id += 1;
        self.pending = Some((self.next_id, doc.generation()));
        self.error = None;
        worker.send(Command::CheckContamination {
            dataset: doc.snapshot(),
            against: self.against.trim().to_string(),
            id: self.next_id,
        });
    }

    /// Takes the worker's answer; a stale one is dropped. Returns whether it was taken.
    pub fn checked(&mut self, id: u64, against: String, report: ContaminationReport) -> bool {
        match self.pending {
            Some((pending, generation)) if pending == id => {
                self.pending = None;
                self.result = Some(Contamination {
                    against,
                    generation,
                    report,
                });
                true
            }
            _ => false,
        }
    }

    /// The check failed (a file that cannot be read, a malformed suite).
    pub fn failed(&mut self, error: String) {
        self.pending = None;
        self.error = Some(error);
    }

    /// Forgets the answer and any check in flight (another dataset was opened); the form
    /// keeps what was typed.
    pub fn reset(&mut self) {
        self.pending = None;
        self.error = None;
        self.result = None;
    }

    pub fn busy(&self) -> bool {
        self.pending.is_some()
    }

    /// The form: the other set, the button, and what the last check found.
    pub fn form_ui(&mut self, ui: &mut egui::Ui, doc: &OpenDataset, worker: &Worker) {
        ui.label("Contamination against");
        ui.add(
            egui::TextEdit::singleline(&mut self.against)
                .hint_text("builtin, a suite or a dataset file")
                .desired_width(200.0),
        )
        .on_hover_text(
            "`builtin` (the built-in eval suite), an eval suite file, or a dataset file such \
             as an eval split: records sharing a run of 13 words with it are flagged",
        );
        let can = !self.busy() && !self.against.trim().is_empty();
        if ui
            .add_enabled(can, egui::Button::new("Check"))
            .on_hover_text("Look for 13-word overlaps on the worker")
            .clicked()
        {
            self.start(doc, worker);
        }
        if self.busy() {
            ui.add(Busy);
        } else if let Some(e) = &self.error {
            ui.colored_label(ui.visuals().error_fg_color, "! check failed")
                .on_hover_text(e);
        } else if let Some(r) = &self.result {
            let stale = if r.generation == doc.generation() {
                ""
            } else {
                " (edited since)"
            };
            ui.label(format!(
                "{} flagged against {}{stale}",
                r.report.flagged.len(),
                r.against
            ));
        }
    }

    /// What the selected record shares with the other set, when it is flagged.
    pub fn record_ui(&self, ui: &mut egui::Ui, idx: usize) {
        let Some(r) = &self.result else { return };
        let Some(flagged) = r.of(idx) else { return };
        egui::Frame::group(ui.style()).show(ui, |ui| {
            ui.colored_label(
                ui.visuals().warn_fg_color,
                format!("Contaminated: shares text with {}", r.against),
            );
            for o in &flagged.overlaps {
                ui.label(format!("{} ({} words): “{}”", o.other_id, o.words, o.text));
            }
        });
    }
}
