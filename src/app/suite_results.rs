//! An eval suite run across the batch-compare panes, as data and as a view: each pane's
//! [`SuiteReport`] (as `crate::eval` computed it: no check is decided here) with the run's
//! progress, and the results shown side by side: the pass rate of each pane over checks
//! and over prompts, a table of check type × pane, and a grid of prompt × pane where a
//! click on a failing cell shows that pane's reply and the checks it failed.

use eframe::egui;

use crate::eval::{Rate, SuiteReport, CHECK_TYPES};
use crate::worker::suite_job::{SuiteEvent, SuitePrompt};

/// Width of a pane's column in the tables.
const PANE_WIDTH: f32 = 150.0;

/// One pane of the comparison.
#[derive(Debug, Clone)]
pub struct PaneResults {
    /// The pane's label ("Base model", "Base + run-name").
    pub label: String,
    /// Prompts answered so far.
    pub done: usize,
    pub report: Option<SuiteReport>,
    /// Why the pane has no report.
    pub error: Option<String>,
}

impl PaneResults {
    pub fn new(label: String) -> Self {
        PaneResults {
            label,
            done: 0,
            report: None,
            error: None,
        }
    }
}

/// A suite run through every pane.
#[derive(Debug, Clone)]
pub struct SuiteComparison {
    /// The suite file, or `builtin` (the name the job read it under once it has).
    pub suite: String,
    pub prompts: Vec<SuitePrompt>,
    pub panes: Vec<PaneResults>,
    /// The cell whose reply shows: (prompt, pane).
    pub selected: Option<(usize, usize)>,
}

impl SuiteComparison {
    /// A comparison waiting for its first event.
    pub fn new(suite: String, labels: Vec<String>) -> Self {
        SuiteComparison {
            suite,
            prompts: Vec::new(),
            panes: labels.into_iter().map(PaneResults::new).collect(),
            selected: None,
        }
    }

    /// Takes one event of the suite job (the final ones are the caller's).
    pub fn apply(&mut self, event: &SuiteEvent) {
        match event {
            SuiteEvent::Loaded { suite, prompts } => {
                self.suite = suite.clone();
                self.prompts = prompts.clone();
            }
            SuiteEvent::Progress { pane, done } => {
                if let Some(p) = self.panes.get_mut(*pane) {
                    p.done = *done;
                }
            }
            SuiteEvent::PaneDone { pane, report } => {
                if let Some(p) = self.panes.get_mut(*pane) {
                    p.done = report.prompts.len();
                    p.report = Some((**report).clone());
                }
            }
            SuiteEvent::PaneFailed { pane, error } => {
                if let Some(p) = self.panes.get_mut(*pane) {
                    p.error = Some(error.clone());
                }
            }
            SuiteEvent::Finished { .. } | SuiteEvent::Failed(_) => {}
        }
    }

    /// Prompts answered, and prompts to answer, over every pane.
    pub fn progress(&self) -> (usize, usize) {
        let done = self.panes.iter().map(|p| p.done).sum();
        (done, self.prompts.len() * self.panes.len())
    }

    /// The check types some pane's report holds, in the order of [`CHECK_TYPES`].
    fn check_types(&self) -> Vec<&'static str> {
        CHECK_TYPES
            .iter()
            .copied()
            .filter(|k| {
                self.panes
                    .iter()
                    .filter_map(|p| p.report.as_ref())
                    .any(|r| r.by_check.iter().any(|c| c.kind == *k))
            })
            .collect()
    }
}

/// One of a report's overall rates.
type RateOf = fn(&SuiteReport) -> Rate;

/// `passed/total · rate %`, as every table of the view writes a rate.
pub fn rate_text(r: &Rate) -> String {
    format!("{}/{} · {:.1} %", r.passed, r.total, r.rate * 100.0)
}

/// What a pane's cell says while it has no report: the panes run one after another.
fn pending_text(p: &PaneResults, running: bool) -> &'static str {
    match (&p.error, running) {
        (Some(_), _) => "failed",
        (None, true) if p.done > 0 => "running…",
        (None, true) => "waiting",
        (None, false) => "not run",
    }
}

/// The results view, scrolled as a whole. `running` says whether the job is still at work.
pub fn results_ui(ui: &mut egui::Ui, c: &mut SuiteComparison, running: bool) {
    egui::ScrollArea::vertical()
        .id_salt("suite-results")
        .auto_shrink([false, false])
        .show(ui, |ui| results_body(ui, c, running));
}

fn results_body(ui: &mut egui::Ui, c: &mut SuiteComparison, running: bool) {
    ui.horizontal(|ui| {
        ui.strong(format!("Suite {}", c.suite));
        ui.weak(format!(
            "{} prompts · greedy unless sampling was asked for",
            c.prompts.len()
        ));
    });
    for p in &c.panes {
        if let Some(e) = &p.error {
            ui.colored_label(ui.visuals().error_fg_color, format!("{}: {e}", p.label));
        }
    }
    egui::Grid::new("suite-summary")
        .striped(true)
        .min_col_width(PANE_WIDTH)
        .show(ui, |ui| {
            header_row(ui, "Pass rate", c);
            let rows: [(&str, RateOf); 2] = [
                ("Checks passed", |r| r.checks),
                ("Prompts with every check passed", |r| r.prompts_passed),
            ];
            for (name, rate) in rows {
                ui.label(name);
                for p in &c.panes {
                    match &p.report {
                        Some(r) => ui.label(rate_text(&rate(r))),
                        None => ui.weak(pending_text(p, running)),
                    };
                }
                ui.end_row();
            }
        });
    ui.add_space(6.0);
    // The prompts on the left; on the right the chosen reply, then the check types, so a
    // reply opens beside the cell clicked and near the top.
    ui.columns(2, |cols| {
        let [left, right] = cols else { return };
        left.strong("Per prompt");
        left.weak("Click a failing cell to see the pane's reply and the checks it failed.");
        prompts_grid(left, c, running);
        selected_ui(right, c);
        right.add_space(6.0);
        by_check_ui(right, c);
    });
}

/// A grid's first row: `corner` above the row names, then each pane's label.
fn header_row(ui: &mut egui::Ui, corner: &str, c: &SuiteComparison) {
    ui.strong(corner);
    for p in &c.panes {
        ui.strong(&p.label);
    }
    ui.end_row();
}

/// A row per check type, a cell per pane.
fn by_check_ui(ui: &mut egui::Ui, c: &SuiteComparison) {
    ui.strong("Per check type");
    egui::Grid::new("suite-by-check")
        .striped(true)
        .min_col_width(PANE_WIDTH)
        .show(ui, |ui| {
            header_row(ui, "Check", c);
            for kind in c.check_types() {
                ui.label(kind);
                for p in &c.panes {
                    let rate = p
                        .report
                        .as_ref()
                        .and_then(|r| r.by_check.iter().find(|b| b.kind == kind));
                    match rate {
                        Some(b) => ui.label(rate_text(&b.rate)),
                        None => ui.weak("–"),
                    };
                }
                ui.end_row();
            }
        });
}

/// A row per prompt, a cell per pane: passed, or a button to the failing reply.
fn prompts_grid(ui: &mut egui::Ui, c: &mut SuiteComparison, running: bool) {
    let mut clicked = None;
    egui::Grid::new("suite-per-prompt")
        .striped(true)
        .show(ui, |ui| {
            header_row(ui, "Prompt", c);
            for (i, prompt) in c.prompts.iter().enumerate() {
                ui.label(&prompt.id).on_hover_text(&prompt.text);
                for (j, p) in c.panes.iter().enumerate() {
                    let result = p.report.as_ref().and_then(|r| r.prompts.get(i));
                    ui.push_id(("suite-cell", i, j), |ui| match result {
                        Some(r) if r.passed => {
                            ui.colored_label(egui::Color32::from_rgb(60, 160, 60), "pass");
                        }
                        Some(r) => {
                            let failed = r.checks.iter().filter(|ch| !ch.passed).count();
                            let text = format!("{failed} of {} failed", r.checks.len());
                            let selected = c.selected == Some((i, j));
                            let b = egui::Button::selectable(
                                selected,
                                egui::RichText::new(text).color(ui.visuals().error_fg_color),
                            );
                            if ui.add(b).on_hover_text("Show the reply").clicked() {
                                clicked = Some((i, j));
                            }
                        }
                        None if i < p.done => {
                            ui.weak("answered");
                        }
                        None => {
                            ui.weak(pending_text(p, running));
                        }
                    });
                }
                ui.end_row();
            }
        });
    if clicked.is_some() {
        c.selected = clicked;
    }
}

/// The reply of the selected cell and its checks.
fn selected_ui(ui: &mut egui::Ui, c: &SuiteComparison) {
    let Some((i, j)) = c.selected else {
        ui.weak("No reply chosen.");
        return;
    };
    let (Some(pane), Some(prompt)) = (c.panes.get(j), c.prompts.get(i)) else {
        return;
    };
    let Some(result) = pane.report.as_ref().and_then(|r| r.prompts.get(i)) else {
        return;
    };
    ui.strong(format!("{} · {}", pane.label, prompt.id));
    ui.add(egui::Label::new(format!("Prompt: {}", prompt.text)).wrap());
    ui.separator();
    for ch in &result.checks {
        // Words, not check marks: the bundled fonts have no ✔ or ✘.
        let (mark, color) = if ch.passed {
            ("passed", egui::Color32::from_rgb(60, 160, 60))
        } else {
            ("failed", ui.visuals().error_fg_color)
        };
        ui.colored_label(color, format!("{mark} {}: {}", ch.check.kind(), ch.reason));
    }
    ui.separator();
    ui.weak(format!(
        "Reply ({} tokens, {:?}):",
        result.generated_tokens, result.stop_reason
    ));
    ui.add(egui::Label::new(result.reply.as_str()).wrap());
    if ui.small_button("Copy reply").clicked() {
        ui.ctx().copy_text(result.reply.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::report::RunInfo;
    use crate::eval::{Check, PromptResult};
    use crate::infer::{Sampling, StopReason};

    fn report(replies: &[&str]) -> SuiteReport {
        let checks: Vec<Check> =
            vec![serde_json::from_str(r#"{"type":"contains","text":"Paris"}"#).expect("check")];
        let prompts = replies
            .iter()
            .enumerate()
            .map(|(i, r)| {
                PromptResult::judge(
                    &format!("p{i}"),
                    r.to_string(),
                    StopReason::StopToken,
                    3,
                    &checks,
                )
            })
            .collect();
        SuiteReport::new(
            RunInfo {
                suite: "builtin".into(),
                model: "m".into(),
                adapter: None,
                max_new_tokens: 8,
                sampling: Sampling::greedy(),
            },
            prompts,
        )
    }

    #[test]
    fn events_fill_the_comparison_and_its_progress() {
        let mut c = SuiteComparison::new("builtin".into(), vec!["a".into(), "b".into()]);
        c.apply(&SuiteEvent::Loaded {
            suite: "builtin".into(),
            prompts: vec![
                SuitePrompt {
                    id: "p0".into(),
                    text: "Capital?".into(),
                },
                SuitePrompt {
                    id: "p1".into(),
                    text: "Again?".into(),
                },
            ],
        });
        assert_eq!(c.progress(), (0, 4));
        c.apply(&SuiteEvent::Progress { pane: 0, done: 1 });
        assert_eq!(c.progress(), (1, 4));
        c.apply(&SuiteEvent::PaneDone {
            pane: 0,
            report: Box::new(report(&["Paris.", "Lyon."])),
        });
        c.apply(&SuiteEvent::PaneFailed {
            pane: 1,
            error: "no adapter".into(),
        });
        assert_eq!(c.progress(), (2, 4));
        assert_eq!(c.check_types(), vec!["contains"]);
        let r = c.panes[0].report.as_ref().expect("report");
        assert_eq!(rate_text(&r.checks), "1/2 · 50.0 %");
        assert_eq!(c.panes[1].error.as_deref(), Some("no adapter"));
    }
}
