//! The Train tab's evaluation settings: how often to evaluate, the eval suite run at each
//! evaluation (none, the built-in one or a file), the measure that picks the best
//! checkpoint, which adapter the run ends with, and early stopping. Edits the
//! [`RunConfig`]'s `[eval]` section in place.

use eframe::egui;

use super::train_form::row;
use crate::eval::BUILTIN_NAME;
use crate::train::{BestBy, FinalAdapter, RunConfig};
use crate::worker::{Command, DialogPurpose, Worker};

/// Where the suite comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SuiteKind {
    None,
    Builtin,
    File,
}

impl SuiteKind {
    fn of(suite: Option<&str>) -> Self {
        match suite {
            None => SuiteKind::None,
            Some(BUILTIN_NAME) => SuiteKind::Builtin,
            Some(_) => SuiteKind::File,
        }
    }

    fn label(self) -> &'static str {
        match self {
            SuiteKind::None => "None (eval loss only)",
            SuiteKind::Builtin => "Built-in suite",
            SuiteKind::File => "A suite file (JSONL)",
        }
    }
}

/// The section.
pub fn eval_ui(ui: &mut egui::Ui, cfg: &mut RunConfig, worker: &Worker) {
    egui::CollapsingHeader::new("Evaluation and best checkpoint")
        .default_open(true)
        .show(ui, |ui| {
            egui::Grid::new("eval-grid").num_columns(2).show(ui, |ui| {
                row(ui, "Evaluate every", "Optimizer steps between evaluations (0: only at the end). Each one measures the eval loss and runs the eval suite.", |ui| {
                    ui.add(egui::DragValue::new(&mut cfg.training.eval_every).range(0..=100_000))
                });
                suite_row(ui, cfg, worker);
                if cfg.eval.suite.is_some() {
                    let mut limited = cfg.eval.suite_limit.is_some();
                    row(ui, "Suite prompts", "Run only the suite's first prompts at each evaluation: each prompt costs a generated reply.", |ui| {
                        ui.horizontal(|ui| {
                            ui.checkbox(&mut limited, "first");
                            let mut n = cfg.eval.suite_limit.unwrap_or(10);
                            ui.add_enabled(limited, egui::DragValue::new(&mut n).range(1..=100_000));
                            cfg.eval.suite_limit = limited.then_some(n);
                        })
                        .response
                    });
                    row(ui, "Reply tokens", "The most tokens each suite reply may have (greedy decoding).", |ui| {
                        ui.add(egui::DragValue::new(&mut cfg.eval.suite_max_new_tokens).range(1..=4096))
                    });
                }
                row(ui, "Best checkpoint by", "The measure that picks the run's best checkpoint: the eval loss (lower is better) or the suite's pass rate (higher is better). The best checkpoint is always kept.", |ui| {
                    egui::ComboBox::from_id_salt("best-by")
                        .selected_text(cfg.eval.best_by.label())
                        .show_ui(ui, |ui| {
                            ui.selectable_value(&mut cfg.eval.best_by, BestBy::EvalLoss, BestBy::EvalLoss.label());
                            let suite = cfg.eval.suite.is_some();
                            ui.add_enabled_ui(suite, |ui| {
                                ui.selectable_value(&mut cfg.eval.best_by, BestBy::PassRate, BestBy::PassRate.label())
                            })
                            .response
                            .on_disabled_hover_text("Choose an eval suite first");
                        })
                        .response
                });
                row(ui, "Final adapter", "What the finished run leaves in adapter/: its best checkpoint's adapter, or the last step's.", |ui| {
                    egui::ComboBox::from_id_salt("final-adapter")
                        .selected_text(match cfg.eval.final_adapter {
                            FinalAdapter::Best => "best checkpoint",
                            FinalAdapter::Last => "last step",
                        })
                        .show_ui(ui, |ui| {
                            ui.selectable_value(&mut cfg.eval.final_adapter, FinalAdapter::Best, "best checkpoint");
                            ui.selectable_value(&mut cfg.eval.final_adapter, FinalAdapter::Last, "last step");
                        })
                        .response
                });
                let mut early = cfg.eval.patience > 0;
                row(ui, "Early stopping", "Stop when this many evaluations in a row bring no better measure; the run then ends as if finished, with its best adapter.", |ui| {
                    ui.horizontal(|ui| {
                        ui.checkbox(&mut early, "after");
                        let mut n = cfg.eval.patience.max(1);
                        ui.add_enabled(early, egui::DragValue::new(&mut n).range(1..=1000));
                        ui.label("evaluations");
                        cfg.eval.patience = if early { n } else { 0 };
                    })
                    .response
                });
                if cfg.eval.patience > 0 {
                    row(ui, "Minimum gain", "The least improvement of the measure that counts as better (eval loss, or pass rate as a fraction).", |ui| {
                        ui.add(egui::DragValue::new(&mut cfg.eval.min_delta).range(0.0..=10.0).speed(0.001))
                    });
                }
            });
        });
}

fn suite_row(ui: &mut egui::Ui, cfg: &mut RunConfig, worker: &Worker) {
    let kind = SuiteKind::of(cfg.eval.suite.as_deref());
    row(ui, "Eval suite", "Prompts with verifiable checks, answered by the adapter at each evaluation; the pass rate is plotted beside the loss.", |ui| {
        let mut chosen = kind;
        let r = egui::ComboBox::from_id_salt("eval-suite-kind")
            .selected_text(kind.label())
            .show_ui(ui, |ui| {
                for k in [SuiteKind::None, SuiteKind::Builtin, SuiteKind::File] {
                    ui.selectable_value(&mut chosen, k, k.label());
                }
            })
            .response;
        if chosen != kind {
            cfg.eval.suite = match chosen {
                SuiteKind::None => None,
                SuiteKind::Builtin => Some(BUILTIN_NAME.to_string()),
                SuiteKind::File => Some(String::new()),
            };
            if cfg.eval.suite.is_none() && cfg.eval.best_by == BestBy::PassRate {
                cfg.eval.best_by = BestBy::EvalLoss;
            }
        }
        r
    });
    if kind == SuiteKind::File || cfg.eval.suite.as_deref() == Some("") {
        row(ui, "Suite file", "The suite's path: one JSON object per line with a prompt (or messages) and its checks.", |ui| {
            ui.horizontal(|ui| {
                let mut text = cfg.eval.suite.clone().unwrap_or_default();
                if ui
                    .add(egui::TextEdit::singleline(&mut text).desired_width(180.0).hint_text("path to suite.jsonl"))
                    .changed()
                {
                    cfg.eval.suite = Some(text);
                }
                if ui.button("Browse…").clicked() {
                    worker.send(Command::PickFile {
                        purpose: DialogPurpose::EvalSuite,
                        save: false,
                        start: None,
                    });
                }
            })
            .response
        });
    }
}
