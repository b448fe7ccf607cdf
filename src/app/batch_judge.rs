//! Batch compare's "Judge A vs B", for a batch of exactly two panes: the judge (the loaded
//! model or another one, with an optional adapter), the judge prompt as an editable
//! template (the default from `assets/eval/judge_prompt.jinja`), the job that asks the
//! judge about every pair of replies in both orders (`crate::worker::judge_job`), and its
//! result: the win rate of A with its 95 % interval and each prompt's verdict. The result,
//! with the prompt used, is written beside the batch export (`<export>.judge.json`).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use eframe::egui;

use super::batch_table::BatchTable;
use super::busy::Busy;
use super::notify::Notifications;
use super::progress;
use crate::eval::judge::{JudgeLabels, JudgePair, JudgeResult, PairVerdict, DEFAULT_JUDGE_PROMPT};
use crate::model::Model;
use crate::worker::judge_job::{self, JudgeEvent, JudgeJob, JudgeRequest};
use crate::worker::Waker;

/// The judge's settings, the running job and the latest result.
pub struct JudgeRun {
    /// The judge prompt's template, as edited.
    pub prompt: String,
    /// Another model to judge with; empty: the loaded model.
    pub judge_model: String,
    /// An adapter folder on the judge; empty: none.
    pub judge_adapter: String,
    /// Verdicts so far, by pair.
    pub verdicts: Vec<Option<PairVerdict>>,
    /// The prompts of the pairs being judged, by pair.
    pub prompts: Vec<String>,
    pub result: Option<JudgeResult>,
    /// Where the result was written.
    pub saved: Option<PathBuf>,
    job: Option<JudgeJob>,
}

impl Default for JudgeRun {
    fn default() -> Self {
        JudgeRun {
            prompt: DEFAULT_JUDGE_PROMPT.to_string(),
            judge_model: String::new(),
            judge_adapter: String::new(),
            verdicts: Vec::new(),
            prompts: Vec::new(),
            result: None,
            saved: None,
            job: None,
        }
    }
}

/// Where the judgment of a batch exported to `export` is written: beside it, as
/// `<name>.judge.json`.
pub fn result_path(export: &str) -> PathBuf {
    let export = Path::new(export.trim());
    if export.as_os_str().is_empty() {
        return crate::paths::data_dir()
            .join("batch")
            .join("compare.judge.json");
    }
    export.with_extension("judge.json")
}

/// The pairs a two-column table holds: the rows where both replies finished.
pub fn pairs_of(table: &BatchTable) -> Vec<JudgePair> {
    table
        .rows
        .iter()
        .filter_map(|r| {
            Some(JudgePair {
                prompt: r.prompt.clone(),
                reply_a: r.reply(0)?.text.clone(),
                reply_b: r.reply(1)?.text.clone(),
            })
        })
        .collect()
}

impl JudgeRun {
    pub fn is_running(&self) -> bool {
        self.job.is_some()
    }

    /// Takes the job's events; runs every frame.
    pub fn poll(&mut self, notices: &mut Notifications) {
        let Some(job) = &mut self.job else { return };
        while let Some(e) = job.try_recv() {
            match e {
                JudgeEvent::Pair { index, verdict } => {
                    if let Some(slot) = self.verdicts.get_mut(index) {
                        *slot = Some(*verdict);
                    }
                }
                JudgeEvent::Done { result, saved } => {
                    notices.info(format!("Judgment: {}", result.summary()));
                    match saved {
                        Ok(p) => self.saved = Some(p),
                        Err(e) => notices.error("Saving the judgment failed", e),
                    }
                    self.result = Some(*result);
                }
                JudgeEvent::Stopped => notices.info("Judging stopped"),
                JudgeEvent::Failed(e) => notices.error("Judging A against B failed", e),
            }
        }
        if job.has_ended() {
            self.job = None;
        }
    }

    /// Starts judging `table`'s two columns, writing the result beside `export`.
    pub fn start(
        &mut self,
        table: &BatchTable,
        model: &Arc<Model>,
        export: &str,
        waker: &Waker,
        notices: &mut Notifications,
    ) {
        if self.is_running() {
            return;
        }
        if table.columns.len() != 2 {
            notices.error(
                "Judging needs two panes",
                format!(
                    "The batch has {} panes; run it with exactly two.",
                    table.columns.len()
                ),
            );
            return;
        }
        let pairs = pairs_of(table);
        if pairs.is_empty() {
            notices.error(
                "There is nothing to judge",
                "No prompt of the batch has a finished reply in both panes.",
            );
            return;
        }
        let label = |c: usize| {
            let col = &table.columns[c];
            match &col.adapter {
                Some(a) => format!("{} + {a}", model.name),
                None => col.label.clone(),
            }
        };
        let judge_model = Some(self.judge_model.trim().to_string()).filter(|s| !s.is_empty());
        let judge_adapter = Some(self.judge_adapter.trim()).filter(|s| !s.is_empty());
        let mut judge = judge_model.clone().unwrap_or_else(|| model.name.clone());
        if let Some(a) = judge_adapter {
            judge = format!("{judge} + {a}");
        }
        self.prompts = pairs.iter().map(|p| p.prompt.clone()).collect();
        self.verdicts = vec![None; pairs.len()];
        self.result = None;
        self.saved = None;
        self.job = Some(judge_job::spawn(
            JudgeRequest {
                model: model.clone(),
                judge_model,
                judge_adapter: judge_adapter.map(PathBuf::from),
                template: self.prompt.clone(),
                labels: JudgeLabels {
                    a: label(0),
                    b: label(1),
                    judge,
                },
                pairs,
                out: result_path(export),
            },
            waker.clone(),
        ));
    }

    /// Forgets the last judgment (a new batch replaces the replies it judged); keeps the
    /// settings and the prompt.
    pub fn clear_result(&mut self) {
        self.verdicts.clear();
        self.prompts.clear();
        self.result = None;
        self.saved = None;
    }

    pub fn stop(&self) {
        if let Some(job) = &self.job {
            job.cancel();
        }
    }

    /// The judge view. `columns` are the batch's pane labels; `can_run` whether the batch
    /// has two finished columns and nothing else runs. Returns whether "Run judge" was clicked.
    pub fn ui(&mut self, ui: &mut egui::Ui, columns: &[String], can_run: bool) -> bool {
        let mut run = false;
        let running = self.is_running();
        egui::ScrollArea::vertical()
            .id_salt("judge-view")
            .auto_shrink([false, false])
            .show(ui, |ui| {
                if columns.len() != 2 {
                    ui.weak("Judging compares two panes: run a batch with exactly two.");
                    return;
                }
                ui.label(format!("A: {} · B: {}", columns[0], columns[1]));
                ui.add_enabled_ui(!running, |ui| {
                    ui.horizontal(|ui| {
                        super::fields::labelled_line(
                            ui,
                            "Judge model",
                            &mut self.judge_model,
                            "the loaded model",
                            260.0,
                        )
                        .on_hover_text("default, a folder, a .gguf file or a hub repo id");
                        super::fields::labelled_line(
                            ui,
                            "Judge adapter",
                            &mut self.judge_adapter,
                            "none",
                            260.0,
                        );
                    });
                    ui.horizontal(|ui| {
                        ui.label("Judge prompt").on_hover_text(
                            "A minijinja template of {{ prompt }}, {{ response_a }} and \
                             {{ response_b }}; the judge's next-token probabilities of A, B and \
                             tie decide. Saved with the result.",
                        );
                        if ui.small_button("Reset to default").clicked() {
                            self.prompt = DEFAULT_JUDGE_PROMPT.to_string();
                        }
                    });
                    // Kept short, so the verdicts below show without scrolling.
                    egui::ScrollArea::vertical()
                        .id_salt("judge-prompt-scroll")
                        .max_height(140.0)
                        .show(ui, |ui| {
                            ui.add(
                                egui::TextEdit::multiline(&mut self.prompt)
                                    .id_salt("judge-prompt")
                                    .code_editor()
                                    .desired_rows(8)
                                    .desired_width(f32::INFINITY),
                            );
                        });
                });
                ui.horizontal(|ui| {
                    if ui
                        .add_enabled(can_run && !running, egui::Button::new("▶ Run judge"))
                        .on_hover_text("Asks the judge about every pair twice, in both orders")
                        .clicked()
                    {
                        run = true;
                    }
                    if ui
                        .add_enabled(running, egui::Button::new("■ Stop judging"))
                        .clicked()
                    {
                        self.stop();
                    }
                    let done = self.verdicts.iter().filter(|v| v.is_some()).count();
                    let total = self.verdicts.len();
                    if total > 0 {
                        let text = format!("{done} of {total} pairs judged");
                        progress::count_bar(ui, (done, total), 200.0, text);
                    }
                    if running {
                        ui.add(Busy);
                    }
                });
                ui.separator();
                self.result_ui(ui);
            });
        run
    }

    fn result_ui(&self, ui: &mut egui::Ui) {
        if let Some(r) = &self.result {
            ui.strong(r.summary());
            ui.weak(
                "Each pair asked twice with the order swapped; a win counts only when it wins \
                 in both orders, a tie counts half.",
            );
            if let Some(p) = &self.saved {
                ui.weak(format!("Saved to {}", p.display()));
            }
        }
        if self.verdicts.is_empty() {
            return;
        }
        let p3 = |a: f64, b: f64, t: f64| format!("A {a:.2} · B {b:.2} · tie {t:.2}");
        egui::Grid::new("judge-verdicts")
            .striped(true)
            .show(ui, |ui| {
                ui.strong("#");
                ui.strong("Prompt");
                ui.strong("Verdict");
                ui.strong("A shown first");
                ui.strong("B shown first");
                ui.end_row();
                for (i, v) in self.verdicts.iter().enumerate() {
                    ui.weak(format!("{}", i + 1));
                    let prompt = self.prompts.get(i).map(String::as_str).unwrap_or("");
                    ui.label(super::dataset_table::one_line(prompt, 60))
                        .on_hover_text(prompt);
                    match v {
                        Some(v) => {
                            ui.label(v.verdict.describe());
                            let (a, b) = (&v.a_first, &v.b_first);
                            ui.label(p3(a.first, a.second, a.tie));
                            ui.label(p3(b.second, b.first, b.tie));
                        }
                        None => {
                            ui.weak("…");
                            ui.weak("");
                            ui.weak("");
                        }
                    }
                    ui.end_row();
                }
            });
    }
}
