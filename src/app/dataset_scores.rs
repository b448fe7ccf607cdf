//! The Datasets tab's per-record scores: each record's loss, perplexity and IFD under the
//! loaded model and an optional adapter, and "Compare with…" a second adapter (or the
//! model alone), which shows how the tuning changed each record's loss. Scoring runs on
//! the worker and fills the table as it goes, with progress and a Stop; scores are kept by
//! each record's content, so after an edit only that record is scored again. The sort by
//! a score, the "Highest 5 %" filter and the histogram come from here.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use eframe::egui;
use egui_plot::{Bar, BarChart, Plot};

use crate::data::Conversation;
use crate::model::Model;
use crate::train::score::{content_key, RecordScore, ScoreResult};
use crate::worker::{Command, ScoreSet, Worker};

use super::dataset_doc::OpenDataset;
use super::dataset_filter::Rows;
use super::progress;

/// What orders the table (and what "Highest 5 %" and the histogram measure).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ScoreSort {
    #[default]
    RecordOrder,
    Loss,
    Ifd,
    /// The comparison's loss less the first: the records it made worse first.
    MadeWorse,
    /// The records it improved most first.
    Improved,
}

impl ScoreSort {
    pub const ALL: [ScoreSort; 5] = [
        ScoreSort::RecordOrder,
        ScoreSort::Loss,
        ScoreSort::Ifd,
        ScoreSort::MadeWorse,
        ScoreSort::Improved,
    ];

    pub fn label(self) -> &'static str {
        match self {
            ScoreSort::RecordOrder => "record order",
            ScoreSort::Loss => "highest loss",
            ScoreSort::Ifd => "highest IFD",
            ScoreSort::MadeWorse => "made worse most",
            ScoreSort::Improved => "improved most",
        }
    }

    /// What the measure is called on the histogram.
    fn measure_name(self) -> &'static str {
        match self {
            ScoreSort::RecordOrder | ScoreSort::Loss => "loss",
            ScoreSort::Ifd => "IFD",
            ScoreSort::MadeWorse | ScoreSort::Improved => "loss change (compared − first)",
        }
    }
}

/// One set of scores: under which adapter, the scores by record content, the job.
#[derive(Debug, Default)]
pub struct ScoreColumn {
    /// The adapter folder, as typed (empty: the model alone).
    pub adapter: String,
    /// What the kept scores were made with: the model's name and the adapter.
    scorer: Option<(String, Option<PathBuf>)>,
    cache: HashMap<u64, ScoreResult>,
    /// The job in flight: its id and Stop flag.
    pending: Option<(u64, Arc<AtomicBool>)>,
    /// Records scored of those sent.
    pub progress: Option<(usize, usize)>,
    /// Records sent to the latest job (after an edit, only the changed ones).
    pub sent: usize,
    pub error: Option<String>,
    /// The records' generation last sent in full.
    sent_generation: Option<u64>,
}

impl ScoreColumn {
    pub fn is_scoring(&self) -> bool {
        self.pending.is_some()
    }

    /// The score of a record, when it has been scored.
    pub fn of(&self, c: &Conversation) -> Option<&ScoreResult> {
        self.cache.get(&content_key(c))
    }

    fn ok(&self, c: &Conversation) -> Option<&RecordScore> {
        self.of(c)?.as_ref().ok()
    }

    /// Whether any record has a score.
    pub fn has_scores(&self) -> bool {
        !self.cache.is_empty()
    }
}

/// The scores of the open dataset.
#[derive(Debug, Default)]
pub struct RecordScores {
    pub primary: ScoreColumn,
    pub compare: ScoreColumn,
    /// "Compare with…" is on.
    pub comparing: bool,
    pub sort: ScoreSort,
    /// Only the highest 5 % by the sort's measure (the loss in record order).
    pub top_only: bool,
    next_id: u64,
    /// Bumped when scores arrive: the order is recomputed.
    version: u64,
    order: Option<(OrderKey, Vec<usize>)>,
    /// The histogram's bars and how many records they count, for (version, generation,
    /// sort): recomputed when one changes, not every frame.
    histogram: Option<(HistogramKey, Vec<Bar>, usize)>,
    model: Option<Arc<Model>>,
}

type HistogramKey = (u64, u64, ScoreSort);

type OrderKey = (
    u64,
    u64,
    ScoreSort,
    bool,
    usize,
    Option<usize>,
    Option<usize>,
);

impl RecordScores {
    pub fn column(&self, set: ScoreSet) -> &ScoreColumn {
        match set {
            ScoreSet::Primary => &self.primary,
            ScoreSet::Compare => &self.compare,
        }
    }

    fn column_mut(&mut self, set: ScoreSet) -> &mut ScoreColumn {
        match set {
            ScoreSet::Primary => &mut self.primary,
            ScoreSet::Compare => &mut self.compare,
        }
    }

    /// The studio's loaded model, which scores.
    pub fn set_model(&mut self, model: Option<&Arc<Model>>) {
        self.model = model.cloned();
    }

    pub fn has_model(&self) -> bool {
        self.model.is_some()
    }

    /// Scores the records of `doc` that `set` has no score for, under the adapter typed
    /// for it; scores made under another model or adapter are dropped first.
    pub fn start(&mut self, set: ScoreSet, doc: &OpenDataset, worker: &Worker, max_len: usize) {
        let typed = self.column(set).adapter.trim().to_string();
        let adapter = (!typed.is_empty()).then(|| PathBuf::from(typed));
        self.send(set, adapter, doc, worker, max_len);
    }

    fn send(
        &mut self,
        set: ScoreSet,
        adapter: Option<PathBuf>,
        doc: &OpenDataset,
        worker: &Worker,
        max_len: usize,
    ) {
        let Some(model) = self.model.clone() else {
            self.column_mut(set).error = Some("load a model first (Models tab)".into());
            return;
        };
        self.next_id += 1;
        let id = self.next_id;
        let col = self.column_mut(set);
        let scorer = Some((model.name.clone(), adapter.clone()));
        if col.scorer != scorer {
            col.cache.clear();
            col.scorer = scorer;
        }
        let records: Vec<(usize, u64, Conversation)> = doc
            .data()
            .records()
            .iter()
            .enumerate()
            .map(|(i, c)| (i, content_key(c), c))
            .filter(|(_, k, _)| !col.cache.contains_key(k))
            .map(|(i, k, c)| (i, k, c.clone()))
            .collect();
        col.sent_generation = Some(doc.generation());
        col.error = None;
        col.sent = records.len();
        if records.is_empty() {
            col.progress = None;
            return;
        }
        col.progress = Some((0, records.len()));
        let cancel = Arc::new(AtomicBool::new(false));
        col.pending = Some((id, cancel.clone()));
        worker.send(Command::ScoreRecords {
            id,
            set,
            model,
            adapter,
            records,
            max_len,
            cancel,
        });
    }

    /// After an edit, scores the changed records under the same model and adapter.
    pub fn logic(&mut self, doc: &OpenDataset, worker: &Worker, max_len: usize) {
        for set in [ScoreSet::Primary, ScoreSet::Compare] {
            let col = self.column(set);
            let stale = col.sent_generation.is_some_and(|g| g != doc.generation());
            if stale && !col.is_scoring() {
                if let Some((_, adapter)) = col.scorer.clone() {
                    self.send(set, adapter, doc, worker, max_len);
                }
            }
        }
    }

    /// Asks the jobs in flight to stop.
    pub fn stop(&mut self) {
        for col in [&mut self.primary, &mut self.compare] {
            if let Some((_, cancel)) = &col.pending {
                cancel.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Takes a chunk of scores; a stale job's are dropped.
    pub fn scored(
        &mut self,
        id: u64,
        set: ScoreSet,
        scores: Vec<(usize, u64, ScoreResult)>,
        done: usize,
        total: usize,
    ) {
        let col = self.column_mut(set);
        if col.pending.as_ref().map(|p| p.0) != Some(id) {
            return;
        }
        for (_, key, s) in scores {
            col.cache.insert(key, s);
        }
        col.progress = Some((done, total));
        self.version += 1;
    }

    /// A job ended (all scored, or stopped).
    pub fn ended(&mut self, id: u64, set: ScoreSet, cancelled: bool) {
        let col = self.column_mut(set);
        if col.pending.as_ref().map(|p| p.0) != Some(id) {
            return;
        }
        col.pending = None;
        if !cancelled {
            col.progress = None;
        }
    }

    /// A scoring job failed (an adapter that cannot be read, a forward that failed).
    pub fn failed(&mut self, error: String) {
        for col in [&mut self.primary, &mut self.compare] {
            if col.pending.take().is_some() {
                col.error = Some(error.clone());
                col.progress = None;
            }
        }
    }

    /// Forgets everything (another dataset was opened).
    pub fn reset(&mut self) {
        self.stop();
        let model = self.model.take();
        let (a, b) = (
            std::mem::take(&mut self.primary.adapter),
            std::mem::take(&mut self.compare.adapter),
        );
        *self = RecordScores {
            model,
            ..Default::default()
        };
        self.primary.adapter = a;
        self.compare.adapter = b;
    }

    /// Whether the table shows score columns, and the comparison's.
    pub fn columns(&self) -> (bool, bool) {
        (
            self.primary.has_scores(),
            self.comparing && self.compare.has_scores(),
        )
    }

    /// The measure of a record under `sort` (the loss in record order).
    pub fn measure(&self, sort: ScoreSort, c: &Conversation) -> Option<f64> {
        let a = self.primary.ok(c);
        match sort {
            ScoreSort::RecordOrder | ScoreSort::Loss => a.map(|s| s.loss),
            ScoreSort::Ifd => a.and_then(|s| s.ifd),
            ScoreSort::MadeWorse => Some(self.compare.ok(c)?.loss - a?.loss),
            ScoreSort::Improved => Some(a?.loss - self.compare.ok(c)?.loss),
        }
    }

    /// Orders the filter's `rows` as chosen ([`RecordScores::order`]), when the sort or
    /// "Highest 5 %" asks for it and anything changed since.
    pub fn update_order(&mut self, rows: Rows<'_>, doc: &OpenDataset) {
        if self.sort == ScoreSort::RecordOrder && !self.top_only {
            self.order = None;
            return;
        }
        let key: OrderKey = (
            self.version,
            doc.generation(),
            self.sort,
            self.top_only,
            rows.len(),
            rows.get(0),
            rows.get(rows.len().saturating_sub(1)),
        );
        if self.order.as_ref().map(|o| &o.0) != Some(&key) {
            let records = doc.data().records();
            let mut measured: Vec<(usize, Option<f64>)> = (0..rows.len())
                .filter_map(|p| rows.get(p))
                .map(|i| (i, records.get(i).and_then(|c| self.measure(self.sort, c))))
                .collect();
            if self.sort != ScoreSort::RecordOrder {
                sort_descending(&mut measured);
            }
            if self.top_only {
                measured = top_share(measured, 0.05);
            }
            self.order = Some((key, measured.into_iter().map(|(i, _)| i).collect()));
        }
    }

    /// The table's rows in the chosen order, and only the highest 5 % when asked; `None`
    /// when neither applies (the filter's rows as they are).
    pub fn order(&self) -> Option<&[usize]> {
        self.order.as_ref().map(|o| o.1.as_slice())
    }

    /// The form: adapter, Score / Stop and progress; the comparison; sort and filter.
    pub fn form_ui(
        &mut self,
        ui: &mut egui::Ui,
        doc: &OpenDataset,
        worker: &Worker,
        max_len: usize,
    ) {
        ui.horizontal(|ui| {
            ui.strong("Scores").on_hover_text(
                "Each record's loss over its assistant tokens, its perplexity, and its IFD (instruction-following difficulty: that loss divided by the loss of the answer alone; near or above 1, the instruction hardly helps). High loss or IFD marks records the model finds hard, or that are wrong.",
            );
            self.set_ui(ui, ScoreSet::Primary, doc, worker, max_len);
        });
        ui.horizontal(|ui| {
            ui.checkbox(&mut self.comparing, "Compare with…")
                .on_hover_text("Score the same records under a second adapter (a tuned run's) or the model alone, and show how each record's loss changed");
            if self.comparing {
                self.set_ui(ui, ScoreSet::Compare, doc, worker, max_len);
            }
            ui.separator();
            ui.label("Sort");
            egui::ComboBox::from_id_salt("score-sort")
                .selected_text(self.sort.label())
                .show_ui(ui, |ui| {
                    for s in ScoreSort::ALL {
                        ui.selectable_value(&mut self.sort, s, s.label());
                    }
                })
                .response
                .on_hover_text("Order the table by a score, highest first; records without one go last");
            ui.checkbox(&mut self.top_only, "Highest 5 %")
                .on_hover_text("Show only the 5 % of scored records with the highest measure of the sort (the loss in record order)");
        });
    }

    fn set_ui(
        &mut self,
        ui: &mut egui::Ui,
        set: ScoreSet,
        doc: &OpenDataset,
        worker: &Worker,
        max_len: usize,
    ) {
        let has_model = self.has_model();
        let scoring = self.column(set).is_scoring();
        let id = match set {
            ScoreSet::Primary => "score-adapter",
            ScoreSet::Compare => "compare-adapter",
        };
        ui.add(
            egui::TextEdit::singleline(&mut self.column_mut(set).adapter)
                .id_salt(id)
                .hint_text("adapter folder (empty: the model alone)")
                .desired_width(220.0),
        );
        let label = match set {
            ScoreSet::Primary => "Score",
            ScoreSet::Compare => "Score comparison",
        };
        let score = ui
            .add_enabled(has_model && !scoring, egui::Button::new(label))
            .on_hover_text("Score every record not scored yet, on the worker")
            .on_disabled_hover_text(if has_model {
                "Scoring…"
            } else {
                "Load a model first (Models tab)"
            });
        if score.clicked() {
            self.start(set, doc, worker, max_len);
        }
        if scoring && ui.button("■ Stop").clicked() {
            self.stop();
        }
        let col = self.column(set);
        if let Some((done, total)) = col.progress {
            progress::count_bar(ui, (done, total), 120.0, format!("{done}/{total}"));
        } else if col.has_scores() {
            ui.weak(format!("{} scored", col.cache.len()));
        }
        if let Some(e) = &col.error {
            ui.colored_label(ui.visuals().error_fg_color, format!("! {e}"))
                .on_hover_text(e.as_str());
        }
    }

    /// The histogram of the sort's measure over the scored records.
    pub fn histogram_ui(&mut self, ui: &mut egui::Ui, doc: &OpenDataset) {
        let key = (self.version, doc.generation(), self.sort);
        if self.histogram.as_ref().map(|h| h.0) != Some(key) {
            let values: Vec<f64> = doc
                .data()
                .records()
                .iter()
                .filter_map(|c| self.measure(self.sort, c))
                .filter(|v| v.is_finite())
                .collect();
            let bars = if values.is_empty() {
                Vec::new()
            } else {
                histogram(&values, 30)
            };
            self.histogram = Some((key, bars, values.len()));
        }
        let Some((_, bars, n)) = &self.histogram else {
            return;
        };
        if *n == 0 {
            ui.weak("No scores yet: press Score.");
            return;
        }
        let bars = bars.clone();
        ui.label(format!("{} of {n} records", self.sort.measure_name()));
        Plot::new("score-histogram")
            .height(120.0)
            .allow_scroll(false)
            .show(ui, |p| {
                p.bar_chart(BarChart::new(self.sort.measure_name(), bars))
            });
    }

    /// The selected record's scores, above the editor.
    pub fn record_ui(&self, ui: &mut egui::Ui, c: &Conversation) {
        let line = |s: &ScoreResult| match s {
            Ok(s) => format!(
                "loss {:.3} · perplexity {:.2} · IFD {}",
                s.loss,
                s.perplexity,
                s.ifd.map_or("—".into(), |v| format!("{v:.3}"))
            ),
            Err(e) => format!("not scored: {e}"),
        };
        if let Some(a) = self.primary.of(c) {
            ui.label(format!("Scores: {}", line(a)));
        }
        if self.comparing {
            if let Some(b) = self.compare.of(c) {
                let change = match (self.primary.ok(c), b.as_ref().ok()) {
                    (Some(a), Some(b)) => format!(" · change {:+.3}", b.loss - a.loss),
                    _ => String::new(),
                };
                ui.label(format!("Compared: {}{change}", line(b)));
            }
        }
    }
}

/// Highest measure first; records without one last, in record order.
fn sort_descending(measured: &mut [(usize, Option<f64>)]) {
    measured.sort_by(|a, b| match (a.1, b.1) {
        (Some(x), Some(y)) => y.total_cmp(&x).then(a.0.cmp(&b.0)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.0.cmp(&b.0),
    });
}

/// The `share` of measured records with the highest measure (at least one), in the order
/// they came.
fn top_share(measured: Vec<(usize, Option<f64>)>, share: f64) -> Vec<(usize, Option<f64>)> {
    let mut values: Vec<f64> = measured.iter().filter_map(|m| m.1).collect();
    if values.is_empty() {
        return Vec::new();
    }
    values.sort_by(|a, b| b.total_cmp(a));
    let keep = ((values.len() as f64 * share).ceil() as usize).clamp(1, values.len());
    let threshold = values[keep - 1];
    let mut taken = 0;
    measured
        .into_iter()
        .filter(|m| {
            let take = m.1.is_some_and(|v| v >= threshold) && taken < keep;
            taken += take as usize;
            take
        })
        .collect()
}

/// `bins` equal-width bars over the range of `values`.
fn histogram(values: &[f64], bins: usize) -> Vec<Bar> {
    let lo = values.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let width = ((hi - lo) / bins as f64).max(1e-9);
    let mut counts = vec![0usize; bins];
    for v in values {
        let b = (((v - lo) / width) as usize).min(bins - 1);
        counts[b] += 1;
    }
    counts
        .iter()
        .enumerate()
        .map(|(i, &n)| Bar::new(lo + (i as f64 + 0.5) * width, n as f64).width(width * 0.95))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_highest_share_keeps_at_least_one_and_skips_unscored() {
        let m = vec![(0, Some(1.0)), (1, None), (2, Some(3.0)), (3, Some(2.0))];
        assert_eq!(top_share(m.clone(), 0.05), vec![(2, Some(3.0))]);
        let all: Vec<usize> = top_share(m, 1.0).into_iter().map(|x| x.0).collect();
        assert_eq!(all, [0, 2, 3]);
    }

    #[test]
    fn sorting_puts_the_highest_first_and_unscored_last() {
        let mut m = vec![(0, None), (1, Some(1.0)), (2, Some(5.0)), (3, Some(1.0))];
        sort_descending(&mut m);
        let order: Vec<usize> = m.iter().map(|x| x.0).collect();
        assert_eq!(order, [2, 1, 3, 0]);
    }

    #[test]
    fn the_histogram_counts_every_value_once() {
        let bars = histogram(&[0.0, 0.5, 1.0, 1.0, 2.0], 4);
        assert_eq!(bars.iter().map(|b| b.value).sum::<f64>(), 5.0);
    }
}
