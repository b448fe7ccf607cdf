//! Batch compare's eval suite: which suite (the built-in one, or a file typed or picked in
//! the file dialog), its run through every pane on the worker (`crate::worker::suite_job`:
//! greedy unless asked to sample, stoppable, with progress), and its results
//! (`suite_results`).

use std::path::Path;
use std::sync::Arc;

use eframe::egui;

use super::batch_compare::BatchSettings;
use super::busy::Busy;
use super::chat_pane::ChatPane;
use super::notify::Notifications;
use super::progress;
use super::suite_results::SuiteComparison;
use crate::eval::{RunOptions, BUILTIN_NAME};
use crate::infer::Sampling;
use crate::worker::suite_job::{self, SuiteEvent, SuiteJob, SuitePane, SuiteRequest};

/// What the suite controls ask for this frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuiteUiAction {
    /// Start the suite through every pane.
    Run,
    /// Open the file dialog for a suite file.
    Browse,
}

/// The suite controls' state, the running job and the latest results.
pub struct SuiteRun {
    /// Run the built-in suite (else the file at `path`).
    pub builtin: bool,
    /// A suite file (JSONL).
    pub path: String,
    /// Sample with the tab's settings instead of greedy decoding.
    pub sample: bool,
    pub results: Option<SuiteComparison>,
    job: Option<SuiteJob>,
}

impl Default for SuiteRun {
    fn default() -> Self {
        SuiteRun {
            builtin: true,
            path: String::new(),
            sample: false,
            results: None,
            job: None,
        }
    }
}

impl SuiteRun {
    pub fn is_running(&self) -> bool {
        self.job.is_some()
    }

    /// The suite to run: `builtin` or the typed file.
    pub fn spec(&self) -> Result<String, String> {
        if self.builtin {
            return Ok(BUILTIN_NAME.to_string());
        }
        let path = self.path.trim();
        if path.is_empty() {
            return Err("Type the suite file's path, or pick it with Browse…".into());
        }
        Ok(path.to_string())
    }

    /// A suite file picked in the file dialog.
    pub fn picked(&mut self, path: &Path) {
        self.builtin = false;
        self.path = path.display().to_string();
    }

    /// Takes the job's events; runs every frame.
    pub fn poll(&mut self, notices: &mut Notifications) {
        let Some(job) = &mut self.job else { return };
        while let Some(e) = job.try_recv() {
            if let Some(r) = &mut self.results {
                r.apply(&e);
            }
            match e {
                SuiteEvent::Finished { stopped } => {
                    let (done, total) = self.results.as_ref().map_or((0, 0), |r| r.progress());
                    if stopped {
                        notices.info(format!("Suite run stopped after {done} of {total} replies"));
                    } else {
                        notices.info(format!("Suite run finished: {done} of {total} replies"));
                    }
                }
                SuiteEvent::Failed(error) => notices.error("The eval suite run failed", error),
                SuiteEvent::PaneFailed { pane, error } => {
                    notices.error(format!("Pane {} could not run the suite", pane + 1), error)
                }
                _ => {}
            }
        }
        if job.has_ended() {
            self.job = None;
        }
    }

    /// Starts the suite through every pane.
    pub fn start(
        &mut self,
        panes: &[ChatPane],
        gen: &BatchSettings<'_>,
        notices: &mut Notifications,
    ) {
        if self.is_running() {
            return;
        }
        let spec = match self.spec() {
            Ok(s) => s,
            Err(e) => {
                notices.error("The suite run has no suite", e);
                return;
            }
        };
        let model_key = Arc::as_ptr(gen.model) as usize;
        let mut run_panes = Vec::with_capacity(panes.len());
        for (i, p) in panes.iter().enumerate() {
            match p.adapter_spec(model_key) {
                Ok(adapter) => run_panes.push(SuitePane {
                    adapter,
                    adapter_name: p.use_adapter.then(|| p.adapter_dir.trim().to_string()),
                }),
                Err(e) => {
                    notices.error(format!("Pane {} cannot run the suite", i + 1), e);
                    return;
                }
            }
        }
        let opts = RunOptions {
            max_new_tokens: gen.max_new_tokens,
            sampling: if self.sample {
                gen.sampling.clone()
            } else {
                Sampling::greedy()
            },
        };
        self.results = Some(SuiteComparison::new(
            spec.clone(),
            panes.iter().map(ChatPane::label).collect(),
        ));
        self.job = Some(suite_job::spawn(
            SuiteRequest {
                model: gen.model.clone(),
                suite: spec,
                panes: run_panes,
                opts,
                template: gen.template.clone(),
            },
            gen.waker.clone(),
        ));
    }

    pub fn stop(&self) {
        if let Some(job) = &self.job {
            job.cancel();
        }
    }

    /// The suite row: which suite, run, stop, progress.
    pub fn controls_ui(&mut self, ui: &mut egui::Ui, ready: bool) -> Option<SuiteUiAction> {
        let mut action = None;
        let running = self.is_running();
        ui.horizontal(|ui| {
            ui.label("Eval suite");
            ui.add_enabled_ui(!running, |ui| {
                ui.selectable_value(&mut self.builtin, true, "Built-in suite");
                ui.selectable_value(&mut self.builtin, false, "Suite file");
                if !self.builtin {
                    super::fields::labelled_line(
                        ui,
                        "Suite path",
                        &mut self.path,
                        "suite.jsonl",
                        220.0,
                    );
                    if ui.button("Browse…").clicked() {
                        action = Some(SuiteUiAction::Browse);
                    }
                }
                ui.checkbox(&mut self.sample, "Sample")
                    .on_hover_text("Sample with the settings above instead of greedy decoding");
            });
            if ui
                .add_enabled(ready && !running, egui::Button::new("▶ Run suite"))
                .on_hover_text(
                    "Runs every prompt of the suite through every pane and checks the replies",
                )
                .clicked()
            {
                action = Some(SuiteUiAction::Run);
            }
            if ui
                .add_enabled(running, egui::Button::new("■ Stop suite"))
                .clicked()
            {
                self.stop();
            }
            if let Some(r) = &self.results {
                let (done, total) = r.progress();
                let text = format!("{done} of {total} suite replies");
                progress::count_bar(ui, (done, total), 180.0, text);
                if running {
                    ui.add(Busy);
                }
            }
        });
        action
    }
}
