//! Batch compare, the Chat tab's second view: a list of prompts (typed one per line, or
//! the open dataset's eval split) runs through every pane on worker threads
//! (`crate::worker::batch_job`), with progress and a stop button; the replies sit in a
//! table, one column per pane, next to the dataset's reference reply; the table exports to
//! JSONL and CSV; any reply can become a new dataset example. The table's data and its
//! file formats live in `batch_table`. An eval suite runs through the same panes
//! (`batch_suite`), its pass rates shown side by side (`suite_results`); with two panes, a
//! local judge compares their replies pairwise (`batch_judge`).

use std::path::PathBuf;
use std::sync::Arc;

use eframe::egui;

use super::add_example::{add_button, DatasetTarget, ExampleDraft};
use super::batch_judge::JudgeRun;
use super::batch_suite::{SuiteRun, SuiteUiAction};
use super::batch_table::{self, BatchRow, BatchTable, Cell, TableColumn};
use super::busy::Busy;
use super::chat_pane::ChatPane;
use super::dataset_doc::OpenDataset;
use super::notify::Notifications;
use super::progress;
use crate::infer::Sampling;
use crate::jobs::JobEvents;
use crate::model::Model;
use crate::train::RunConfig;
use crate::worker::batch_job::{self, BatchJob, BatchRequest};
use crate::worker::chat_job::TemplateSpec;
use crate::worker::file_write::{self, Written};
use crate::worker::Waker;

/// The most prompts taken from an eval split in one batch.
pub const MAX_EVAL_PROMPTS: usize = 500;

/// Width of the row-number column.
const NUM_WIDTH: f32 = 34.0;

/// Where the prompts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromptSource {
    /// The typed list, one prompt per line.
    Typed,
    /// The eval split of the dataset open in the Datasets tab.
    EvalSplit,
}

/// What the batch view asks for this frame.
pub enum BatchUiAction {
    /// Start a batch.
    Run,
    /// Add this reply to the open dataset (opens the dialog).
    Add(ExampleDraft),
    /// Start the eval suite through every pane.
    RunSuite,
    /// Open the file dialog for a suite file.
    BrowseSuite,
    /// Judge the two panes' replies.
    RunJudge,
}

/// Which results the view shows under its controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchShown {
    /// The batch table's replies.
    Replies,
    /// The eval suite's pass rates.
    Suite,
    /// The judge's verdicts on two panes.
    Judge,
}

/// What a batch generates with, besides the prompts and the panes.
pub struct BatchSettings<'a> {
    pub model: &'a Arc<Model>,
    pub template: &'a TemplateSpec,
    pub system: &'a str,
    pub sampling: &'a Sampling,
    pub max_new_tokens: usize,
    pub run_config: &'a RunConfig,
    pub waker: &'a Waker,
}

/// State of the batch-compare view.
pub struct BatchCompare {
    pub source: PromptSource,
    /// The typed prompts, one per line.
    pub typed: String,
    /// At most this many prompts from the eval split.
    pub eval_limit: usize,
    /// The latest batch: its prompts and replies.
    pub table: Option<BatchTable>,
    job: Option<BatchJob>,
    /// The eval suite through the panes.
    pub suite: SuiteRun,
    /// The judge of two panes' replies.
    pub judge: JudgeRun,
    pub shown: BatchShown,
    /// Where "Export" writes (the extension follows the format).
    pub export_path: String,
    exporting: Option<JobEvents<Written>>,
}

impl Default for BatchCompare {
    fn default() -> Self {
        BatchCompare {
            source: PromptSource::Typed,
            typed: String::new(),
            eval_limit: 20,
            table: None,
            job: None,
            suite: SuiteRun::default(),
            judge: JudgeRun::default(),
            shown: BatchShown::Replies,
            export_path: crate::paths::data_dir()
                .join("batch")
                .join("compare.jsonl")
                .display()
                .to_string(),
            exporting: None,
        }
    }
}

impl BatchCompare {
    /// Whether a batch is running.
    pub fn is_running(&self) -> bool {
        self.job.is_some()
    }

    /// Whether a batch, a suite or a judgment is running (the panes are locked).
    pub fn is_busy(&self) -> bool {
        self.is_running() || self.suite.is_running() || self.judge.is_running()
    }

    /// Judges the table's two columns with `model` (unless the judge names another).
    pub fn start_judge(&mut self, model: &Arc<Model>, waker: &Waker, notices: &mut Notifications) {
        if self.is_busy() {
            return;
        }
        let Some(t) = &self.table else {
            notices.error(
                "There is nothing to judge",
                "Run a batch with two panes first.",
            );
            return;
        };
        self.judge
            .start(t, model, &self.export_path, waker, notices);
    }

    /// Takes the batch job's events and the export result; runs every frame.
    pub fn poll(&mut self, notices: &mut Notifications) {
        self.suite.poll(notices);
        self.judge.poll(notices);
        if let (Some(job), Some(table)) = (&mut self.job, &mut self.table) {
            while let Some(e) = job.try_recv() {
                table.apply(e);
            }
            if job.has_ended() {
                let (done, total) = table.progress();
                if job.is_cancelled() {
                    notices.info(format!("Batch stopped after {done} of {total} replies"));
                } else {
                    notices.info(format!("Batch finished: {done} of {total} replies"));
                }
                self.job = None;
            }
        }
        if let Some(rx) = &mut self.exporting {
            if let Some(Written(r)) = rx.try_recv() {
                self.exporting = None;
                match r {
                    Ok(p) => notices.info(format!("Batch table exported to {}", p.display())),
                    Err(e) => notices.error("Exporting the batch table failed", e),
                }
            }
        }
    }

    /// Starts a batch: the prompts through every pane.
    pub fn start(
        &mut self,
        panes: &[ChatPane],
        dataset: Option<&OpenDataset>,
        gen: &BatchSettings<'_>,
        notices: &mut Notifications,
    ) {
        if self.is_busy() {
            return;
        }
        self.shown = BatchShown::Replies;
        self.judge.clear_result();
        let rows = match self.prompts(dataset, gen, notices) {
            Some(rows) => rows,
            None => return,
        };
        let model_key = Arc::as_ptr(gen.model) as usize;
        let mut adapters = Vec::with_capacity(panes.len());
        let mut columns = Vec::with_capacity(panes.len());
        for (i, p) in panes.iter().enumerate() {
            match p.adapter_spec(model_key) {
                Ok(spec) => adapters.push(spec),
                Err(e) => {
                    notices.error(format!("Pane {} cannot run the batch", i + 1), e);
                    return;
                }
            }
            columns.push(TableColumn {
                label: p.label(),
                adapter: p.use_adapter.then(|| p.adapter_dir.trim().to_string()),
            });
        }
        let prompts = rows.iter().map(BatchRow::messages).collect();
        let table = BatchTable::new(columns, rows, gen.sampling.clone(), gen.max_new_tokens);
        self.table = Some(table);
        self.job = Some(batch_job::spawn(
            BatchRequest {
                model: gen.model.clone(),
                columns: adapters,
                prompts,
                sampling: gen.sampling.clone(),
                max_new_tokens: gen.max_new_tokens,
                template: gen.template.clone(),
            },
            gen.waker.clone(),
        ));
    }

    /// The prompts of the chosen source, or `None` (with a notice saying why).
    fn prompts(
        &self,
        dataset: Option<&OpenDataset>,
        gen: &BatchSettings<'_>,
        notices: &mut Notifications,
    ) -> Option<Vec<BatchRow>> {
        let rows = match self.source {
            PromptSource::Typed => {
                let rows = batch_table::typed_prompts(&self.typed, gen.system);
                if rows.is_empty() {
                    notices.error(
                        "The batch has no prompts",
                        "Type the prompts into the Prompts box, one per line.",
                    );
                }
                rows
            }
            PromptSource::EvalSplit => {
                let Some(doc) = dataset else {
                    notices.error(
                        "The batch has no prompts",
                        "No dataset is open: open one in the Datasets tab, or type the prompts.",
                    );
                    return None;
                };
                let p = batch_table::eval_prompts(
                    doc.data(),
                    gen.run_config,
                    gen.system,
                    self.eval_limit.clamp(1, MAX_EVAL_PROMPTS),
                );
                if p.rows.is_empty() {
                    notices.error(
                        "The batch has no prompts",
                        format!(
                            "The eval split has {} records and {} of them end without a user \
                             prompt to answer. Set the eval split in the Train tab.",
                            p.eval_records, p.skipped
                        ),
                    );
                }
                p.rows
            }
        };
        (!rows.is_empty()).then_some(rows)
    }

    pub fn stop(&self) {
        if let Some(job) = &self.job {
            job.cancel();
        }
    }

    /// Writes the table as JSONL (`csv` false) or CSV, next to the typed export path.
    pub fn export(&mut self, csv: bool, waker: &Waker) {
        let Some(table) = self.table.clone() else {
            return;
        };
        let ext = if csv { "csv" } else { "jsonl" };
        let path = PathBuf::from(self.export_path.trim());
        let path = if path.as_os_str().is_empty() {
            path
        } else {
            path.with_extension(ext)
        };
        let make = move || {
            if csv {
                table.to_csv()
            } else {
                table.to_jsonl()
            }
        };
        self.exporting = Some(file_write::spawn("batch-export", path, make, waker));
    }

    /// The view under the pane headers.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        target: Option<&DatasetTarget>,
        ready: bool,
        waker: &Waker,
    ) -> Option<BatchUiAction> {
        let mut action = None;
        self.source_ui(ui, target);
        ui.horizontal(|ui| {
            let running = self.is_running();
            let busy = self.is_busy();
            if ui
                .add_enabled(ready && !busy, egui::Button::new("▶ Run batch"))
                .on_hover_text(
                    "Runs every prompt through every pane, with the sampling settings above",
                )
                .clicked()
            {
                action = Some(BatchUiAction::Run);
            }
            if ui
                .add_enabled(running, egui::Button::new("■ Stop batch"))
                .clicked()
            {
                self.stop();
            }
            if let Some(t) = &self.table {
                let (done, total) = t.progress();
                progress::count_bar(
                    ui,
                    (done, total),
                    220.0,
                    format!("{done} of {total} replies"),
                );
                // Laid out while hidden, so the fields after it keep their ids.
                ui.add_visible(running, Busy);
            }
            ui.separator();
            super::fields::labelled_line(
                ui,
                "Export to",
                &mut self.export_path,
                "compare.jsonl",
                260.0,
            );
            let can = self.table.is_some() && self.exporting.is_none();
            if ui
                .add_enabled(can, egui::Button::new("Export JSONL"))
                .clicked()
            {
                self.export(false, waker);
            }
            if ui
                .add_enabled(can, egui::Button::new("Export CSV"))
                .clicked()
            {
                self.export(true, waker);
            }
        });
        match self.suite.controls_ui(ui, ready && !self.is_running()) {
            Some(SuiteUiAction::Run) => action = Some(BatchUiAction::RunSuite),
            Some(SuiteUiAction::Browse) => action = Some(BatchUiAction::BrowseSuite),
            None => {}
        }
        ui.separator();
        let columns: Vec<String> = self
            .table
            .as_ref()
            .map(|t| t.columns.iter().map(|c| c.label.clone()).collect())
            .unwrap_or_default();
        let two = columns.len() == 2;
        if self.suite.results.is_some() || two {
            ui.horizontal(|ui| {
                ui.label("Show");
                ui.selectable_value(&mut self.shown, BatchShown::Replies, "Batch replies");
                if self.suite.results.is_some() {
                    ui.selectable_value(&mut self.shown, BatchShown::Suite, "Suite results");
                }
                if two {
                    ui.selectable_value(&mut self.shown, BatchShown::Judge, "Judge A vs B")
                        .on_hover_text(
                            "A local model judges the two panes' replies pairwise: win rate of A",
                        );
                }
            });
        }
        if self.shown == BatchShown::Judge {
            let has_pairs = self
                .table
                .as_ref()
                .is_some_and(|t| !super::batch_judge::pairs_of(t).is_empty());
            if self
                .judge
                .ui(ui, &columns, ready && has_pairs && !self.is_busy())
            {
                action = Some(BatchUiAction::RunJudge);
            }
            return action;
        }
        let running = self.is_running();
        if self.shown == BatchShown::Suite {
            let suite_running = self.suite.is_running();
            if let Some(r) = &mut self.suite.results {
                super::suite_results::results_ui(ui, r, suite_running);
                return action;
            }
        }
        match &self.table {
            Some(t) => {
                if let Some(d) = table_ui(ui, t, target, running) {
                    action = Some(BatchUiAction::Add(d));
                }
            }
            None => {
                ui.add_space(20.0);
                ui.vertical_centered(|ui| {
                    ui.weak("Run a batch to see each pane's replies side by side.")
                });
            }
        }
        action
    }

    fn source_ui(&mut self, ui: &mut egui::Ui, target: Option<&DatasetTarget>) {
        ui.horizontal(|ui| {
            ui.label("Prompts from");
            ui.add_enabled_ui(!self.is_busy(), |ui| {
                ui.selectable_value(&mut self.source, PromptSource::Typed, "Typed list");
                let eval = ui.add_enabled(
                    target.is_some(),
                    egui::Button::selectable(
                        self.source == PromptSource::EvalSplit,
                        "Dataset eval split",
                    ),
                );
                if eval.clicked() {
                    self.source = PromptSource::EvalSplit;
                }
                eval.on_disabled_hover_text("Open a dataset in the Datasets tab first");
            });
            if target.is_none() && self.source == PromptSource::EvalSplit {
                self.source = PromptSource::Typed;
            }
            if let (PromptSource::EvalSplit, Some(t)) = (self.source, target) {
                ui.separator();
                ui.label("at most");
                ui.add(egui::DragValue::new(&mut self.eval_limit).range(1..=MAX_EVAL_PROMPTS));
                ui.weak(format!(
                    "prompts of {} (the split and seed set in the Train tab, placeholders \
                     replaced; each record's last reply is the reference)",
                    t.name
                ));
            }
        });
        if self.source == PromptSource::Typed {
            ui.horizontal(|ui| {
                let l = ui.label("Prompts");
                ui.add_enabled(
                    !self.is_busy(),
                    egui::TextEdit::multiline(&mut self.typed)
                        .hint_text("One prompt per line")
                        .desired_rows(3)
                        .desired_width(f32::INFINITY),
                )
                .labelled_by(l.id);
            });
        }
    }
}

/// The table: a row per prompt; columns for the prompt, the reference (when the prompts
/// have one) and each pane. Returns a reply chosen for the dataset.
fn table_ui(
    ui: &mut egui::Ui,
    t: &BatchTable,
    target: Option<&DatasetTarget>,
    running: bool,
) -> Option<ExampleDraft> {
    let refs = t.has_references();
    let ncols = 1 + usize::from(refs) + t.columns.len();
    let gap = ui.spacing().item_spacing.x;
    let width =
        ((ui.available_width() - NUM_WIDTH - gap * (ncols as f32 + 1.0)) / ncols as f32).max(120.0);
    let mut chosen = None;
    ui.horizontal(|ui| {
        cell(ui, NUM_WIDTH, |ui| {
            ui.strong("#");
        });
        cell(ui, width, |ui| {
            ui.strong("Prompt");
        });
        if refs {
            cell(ui, width, |ui| {
                ui.strong("Reference");
            });
        }
        for c in &t.columns {
            cell(ui, width, |ui| {
                ui.strong(&c.label);
            });
        }
    });
    ui.separator();
    egui::ScrollArea::both()
        .id_salt("batch-table")
        .auto_shrink([false, false])
        .show(ui, |ui| {
            for (i, row) in t.rows.iter().enumerate() {
                ui.push_id(("batch-row", i), |ui| {
                    ui.horizontal_top(|ui| {
                        cell(ui, NUM_WIDTH, |ui| {
                            ui.weak(format!("{}", i + 1));
                        });
                        cell(ui, width, |ui| prompt_ui(ui, row));
                        if refs {
                            cell(ui, width, |ui| match &row.reference {
                                Some(r) => {
                                    ui.add(egui::Label::new(r.as_str()).wrap());
                                }
                                None => {
                                    ui.weak("(none)");
                                }
                            });
                        }
                        for (c, reply) in row.cells.iter().enumerate() {
                            cell(ui, width, |ui| {
                                ui.push_id(c, |ui| {
                                    if reply_ui(ui, reply, target, running) {
                                        chosen = Some(draft(t, row, c));
                                    }
                                });
                            });
                        }
                    });
                    ui.separator();
                });
            }
        });
    chosen.flatten()
}

/// A fixed-width column of a row.
fn cell(ui: &mut egui::Ui, width: f32, add: impl FnOnce(&mut egui::Ui)) {
    ui.allocate_ui_with_layout(
        egui::vec2(width, 0.0),
        egui::Layout::top_down(egui::Align::Min),
        |ui| {
            ui.set_width(width);
            add(ui);
        },
    );
}

fn prompt_ui(ui: &mut egui::Ui, row: &BatchRow) {
    ui.add(egui::Label::new(row.prompt.as_str()).wrap());
    let mut notes = Vec::new();
    if let Some(i) = row.record {
        notes.push(format!("record {}", i + 1));
    }
    if !row.history.is_empty() {
        notes.push(format!("{} earlier turns", row.history.len()));
    }
    if let Some(s) = &row.system {
        notes.push(format!("system: {}", super::dataset_table::one_line(s, 60)));
    }
    if !notes.is_empty() {
        ui.weak(notes.join(" · "));
    }
}

/// One reply cell. Returns whether "Add to dataset" was clicked.
fn reply_ui(
    ui: &mut egui::Ui,
    reply: &Cell,
    target: Option<&DatasetTarget>,
    running: bool,
) -> bool {
    match reply {
        Cell::Waiting if running => {
            ui.weak("waiting");
        }
        Cell::Waiting => {
            ui.weak("not run");
        }
        Cell::Running => {
            ui.horizontal(|ui| {
                ui.add(Busy);
                ui.weak("generating…");
            });
        }
        Cell::Failed(e) => {
            ui.colored_label(ui.visuals().error_fg_color, e);
        }
        Cell::Done(r) => {
            ui.add(egui::Label::new(r.text.as_str()).wrap());
            let note = batch_table::stop_note(r);
            let note = if note.is_empty() {
                String::new()
            } else {
                format!(" · {note}")
            };
            ui.weak(format!(
                "{} tokens · {:.1} tok/s{note}",
                r.stats.generated_tokens, r.stats.decode_tokens_per_s
            ));
            let mut add = false;
            ui.horizontal(|ui| {
                if ui.small_button("Copy").clicked() {
                    ui.ctx().copy_text(r.text.clone());
                }
                add = add_button(ui, target, !r.text.trim().is_empty());
            });
            return add;
        }
    }
    false
}

/// The example a reply of the table would add.
fn draft(t: &BatchTable, row: &BatchRow, column: usize) -> Option<ExampleDraft> {
    let reply = row.reply(column)?;
    Some(ExampleDraft {
        source: t.columns.get(column)?.label.clone(),
        system: row.system.clone().unwrap_or_default(),
        history: row.history.clone(),
        prompt: row.prompt.clone(),
        reply: reply.text.clone(),
    })
}
