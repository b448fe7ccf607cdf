//! The Datasets tab: open a file (dialog, typed path, recent files, drag-and-drop),
//! browse it in a virtualized table, search and filter it, edit a conversation, see its
//! statistics and problems, and save it (atomically, in any format).

use std::path::{Path, PathBuf};

use eframe::egui;

use std::sync::Arc;

use crate::data::{ByteCounter, Dataset, Edit, Format, TokenCounter};
use crate::model::Model;
use crate::worker::{Command, DialogPurpose, Event, JobKind};

use super::busy::Busy;
use super::conversation_editor::{Editor, EditorAction};
use super::dataset_contamination::ContaminationCheck;
use super::dataset_doc::OpenDataset;
use super::dataset_filter::{Filter, FlagFilter, Rows};
use super::dataset_scores::RecordScores;
use super::dataset_stats;
use super::dataset_table;
use super::shared::Shared;

/// Seconds without edits before statistics are recomputed.
const ANALYZE_AFTER_SECS: f64 = 0.8;

/// Seconds without edits before unsaved edits are autosaved to the recovery file.
const AUTOSAVE_AFTER_SECS: f64 = 2.0;

/// The "Save as" form.
#[derive(Debug)]
struct SaveAs {
    path: String,
    format: String,
}

/// State of the Datasets tab.
#[derive(Default)]
pub struct DatasetsTab {
    pub doc: Option<OpenDataset>,
    /// An open preference file (shown instead of `doc`).
    pub preferences: Option<super::preference_view::PreferenceDoc>,
    /// A file being read.
    pub loading: Option<PathBuf>,
    /// The typed path field.
    pub path_input: String,
    pub filter: Filter,
    /// The contamination check's form and latest answer.
    pub contamination: ContaminationCheck,
    /// Per-record scores (loss, perplexity, IFD) and their comparison.
    pub scores: RecordScores,
    /// The selected record.
    pub selected: Option<usize>,
    /// Scroll the table to the selected record on the next frame.
    scroll_to_selected: bool,
    editor: Editor,
    save_as: Option<SaveAs>,
    /// Focus the search box on the next frame (Ctrl+F).
    focus_search: bool,
    /// Autosaved unsaved edits found for the open file: (source file, recovery file,
    /// when it was written).
    pub recovery_offer: Option<(PathBuf, PathBuf, String)>,
}

impl DatasetsTab {
    /// Starts reading `path` on the worker.
    pub fn open(&mut self, path: &Path, shared: &mut Shared<'_>) {
        if self.is_dirty() {
            shared.notices.push(
                super::notify::Level::Warning,
                "The open dataset has unsaved changes",
                "Save it first (Ctrl+S), or use Save as; opening another file would discard them.",
            );
            return;
        }
        self.path_input = path.display().to_string();
        self.loading = Some(path.to_path_buf());
        shared.worker.send(Command::LoadDataset {
            path: path.to_path_buf(),
        });
    }

    /// Shows a freshly loaded dataset.
    pub fn set_dataset(&mut self, ds: Dataset, shared: &mut Shared<'_>) {
        if let Some(p) = ds.path() {
            shared.state.remember_file(p);
            self.path_input = p.display().to_string();
        }
        self.doc = Some(OpenDataset::new(ds));
        self.preferences = None;
        self.recovery_offer = None;
        self.loading = None;
        self.selected = None;
        self.editor = Editor::default();
        self.filter.reset();
        self.contamination.reset();
        self.scores.reset();
    }

    /// Whether there are edits not saved yet.
    pub fn is_dirty(&self) -> bool {
        self.doc.as_ref().is_some_and(OpenDataset::is_dirty)
            || self.preferences.as_ref().is_some_and(|p| p.is_dirty())
    }

    /// Takes the worker events meant for this tab; returns the others.
    pub fn on_event(&mut self, event: Event, shared: &mut Shared<'_>) -> Option<Event> {
        match event {
            Event::PreferencesLoaded { path, set, elapsed } => {
                if self.loading.as_deref() == Some(path.as_path()) {
                    shared.state.remember_file(&path);
                    self.path_input = path.display().to_string();
                    shared.notices.info(format!(
                        "Opened {} ({} preference pairs in {:.2} s)",
                        crate::paths::file_name(&path),
                        set.len(),
                        elapsed.as_secs_f64()
                    ));
                    self.preferences = Some(super::preference_view::PreferenceDoc::new(*set));
                    self.doc = None;
                    self.loading = None;
                    self.selected = None;
                    self.recovery_offer = None;
                }
            }
            Event::PreferencesSaved {
                path,
                set,
                generation,
            } => {
                if let Some(p) = &mut self.preferences {
                    let current = p.saved(*set, generation);
                    shared.state.remember_file(&path);
                    shared.notices.info(format!(
                        "Saved {}{}",
                        crate::paths::file_name(&path),
                        if current {
                            ""
                        } else {
                            " (edits made while saving are not in it yet)"
                        }
                    ));
                }
            }
            Event::DatasetLoaded {
                path,
                dataset,
                elapsed,
                recovery,
            } => {
                if self.loading.as_deref() == Some(path.as_path()) {
                    let n = dataset.len();
                    self.set_dataset(*dataset, shared);
                    self.recovery_offer = recovery.map(|(r, when)| (path.clone(), r, when));
                    shared.notices.info(format!(
                        "Opened {} ({n} records in {:.2} s)",
                        crate::paths::file_name(&path),
                        elapsed.as_secs_f64()
                    ));
                }
            }
            Event::DatasetSaved {
                path,
                dataset,
                generation,
            } => {
                if let Some(doc) = &mut self.doc {
                    // Saving removed the recovery file.
                    doc.recovery_written = false;
                    if doc.saved(*dataset, generation) {
                        doc.autosaved = doc.generation();
                        shared.state.remember_file(&path);
                        self.path_input = path.display().to_string();
                        shared
                            .notices
                            .info(format!("Saved {}", crate::paths::file_name(&path)));
                    } else {
                        shared.notices.info(format!(
                            "Saved {} (edits made while saving are not in it yet)",
                            crate::paths::file_name(&path)
                        ));
                    }
                }
            }
            Event::Analyzed {
                generation,
                analysis,
            } => {
                if let Some(doc) = &mut self.doc {
                    if doc.analyzing == Some(generation) {
                        doc.analyzing = None;
                    }
                    let newer = doc.analysis.as_ref().is_none_or(|(g, _)| *g <= generation);
                    if newer {
                        doc.analysis = Some((generation, std::sync::Arc::new(*analysis)));
                    }
                }
            }
            Event::Searched { id, rows } => self.filter.searched(id, rows),
            Event::ContaminationChecked {
                id,
                against,
                report,
            } => {
                if self.contamination.checked(id, against, *report) {
                    if let Some(r) = &self.contamination.result {
                        self.filter.set_contaminated(r.rows());
                    }
                }
            }
            Event::RecordsScored {
                id,
                set,
                scores,
                done,
                total,
            } => self.scores.scored(id, set, scores, done, total),
            Event::ScoringEnded { id, set, cancelled } => self.scores.ended(id, set, cancelled),
            Event::Picked {
                purpose: DialogPurpose::OpenDataset,
                path: Some(path),
            } => self.open(&path, shared),
            Event::Picked {
                purpose: DialogPurpose::SaveDatasetAs,
                path: Some(path),
            } => {
                if let Some(s) = &mut self.save_as {
                    s.path = path.display().to_string();
                }
            }
            Event::Failed { kind, error } => {
                match kind {
                    JobKind::OpenDataset | JobKind::RecoverDataset => self.loading = None,
                    JobKind::SaveDataset => {
                        if let Some(doc) = &mut self.doc {
                            doc.saving = None;
                        }
                        if let Some(p) = &mut self.preferences {
                            p.saving = None;
                        }
                    }
                    JobKind::AnalyzeDataset => {
                        if let Some(doc) = &mut self.doc {
                            if let Some(generation) = doc.analyzing.take() {
                                doc.analysis_failed = Some((generation, error.clone()));
                            }
                        }
                    }
                    JobKind::SearchDataset => self.filter.search_failed(error.clone()),
                    JobKind::CheckContamination => self.contamination.failed(error.clone()),
                    JobKind::ScoreRecords => self.scores.failed(error.clone()),
                    _ => {}
                }
                return Some(Event::Failed { kind, error });
            }
            other => return Some(other),
        }
        None
    }

    /// Work between frames: the debounced analysis and the search.
    pub fn logic(&mut self, shared: &mut Shared<'_>, model: Option<&Arc<Model>>) {
        let max_len = shared.state.run_config.data.max_seq_len;
        // While an earlier session's edits are offered back, autosaving would overwrite them.
        let offer_pending = self.recovery_offer.is_some();
        self.scores.set_model(model);
        let Some(doc) = &mut self.doc else { return };
        let counter = match model {
            Some(m) => m.tokenizer.name(),
            None => ByteCounter::default().name(),
        };
        let current = doc
            .current_analysis()
            .is_some_and(|a| a.stats.max_len == max_len && a.stats.counter == counter);

        let failed_here = doc
            .analysis_failed
            .as_ref()
            .is_some_and(|(g, _)| *g == doc.generation());
        if !current
            && !failed_here
            && doc.analyzing.is_none()
            && shared.now - doc.changed_at > ANALYZE_AFTER_SECS
        {
            doc.analyzing = Some(doc.generation());
            shared.worker.send(Command::Analyze {
                dataset: doc.snapshot(),
                max_len,
                generation: doc.generation(),
                model: model.cloned(),
            });
        }
        let settled = shared.now - doc.changed_at > AUTOSAVE_AFTER_SECS;
        if doc.is_dirty()
            && doc.autosaved != doc.generation()
            && settled
            && doc.saving.is_none()
            && !offer_pending
        {
            doc.autosaved = doc.generation();
            doc.recovery_written = true;
            shared.worker.send(Command::AutosaveDataset {
                dataset: doc.snapshot(),
            });
        } else if !doc.is_dirty() && doc.recovery_written && doc.saving.is_none() {
            // Undone back to the file as saved: the autosaved edits are stale.
            doc.recovery_written = false;
            if let Some(source) = doc.data().path() {
                shared.worker.send(Command::DiscardRecovery {
                    source: source.to_path_buf(),
                });
            }
        }
        self.filter.update(doc, shared.worker);
        self.scores.logic(doc, shared.worker, max_len);
    }

    /// Whether the tab waits on something (a repaint will be needed).
    pub fn is_busy(&self) -> bool {
        self.loading.is_some()
            || self
                .preferences
                .as_ref()
                .is_some_and(|p| p.saving.is_some())
            || self.doc.as_ref().is_some_and(|d| {
                let failed = d
                    .analysis_failed
                    .as_ref()
                    .is_some_and(|(g, _)| *g == d.generation());
                d.analyzing.is_some()
                    || d.saving.is_some()
                    || (d.current_analysis().is_none() && !failed)
            })
            || self.filter.searching
    }

    /// Commits drafts the editor still holds (before save, undo, another record).
    fn commit_drafts(&mut self, shared: &mut Shared<'_>) {
        let (Some(doc), Some(idx)) = (&mut self.doc, self.editor.record()) else {
            return;
        };
        let Some(c) = doc.data().get(idx) else { return };
        let edits = self.editor.pending(c);
        if !edits.is_empty() {
            if let Err(e) = doc.apply_all(edits, shared.now) {
                shared
                    .notices
                    .error("The edit could not be applied", format!("{e:#}"));
            }
        }
    }

    /// Adds `record` at the end of the open dataset as one undoable edit.
    pub fn append(&mut self, record: crate::data::Conversation, shared: &mut Shared<'_>) {
        self.commit_drafts(shared);
        let Some(doc) = &mut self.doc else {
            shared.notices.error(
                "The example was not added",
                "No dataset is open; open one in the Datasets tab first.",
            );
            return;
        };
        let index = doc.data().len();
        match doc.apply(Edit::InsertRecord { index, record }, shared.now) {
            Ok(()) => {
                let name = doc
                    .data()
                    .path()
                    .map_or_else(|| "the dataset".to_string(), crate::paths::file_name);
                shared.notices.info(format!(
                    "Added record {} to {name} (Ctrl+Z undoes it)",
                    index + 1
                ));
                // The Datasets tab shows the new record when it is next opened.
                self.jump_to(index, shared);
            }
            Err(e) => shared
                .notices
                .error("The example could not be added", format!("{e:#}")),
        }
    }

    pub fn undo(&mut self, shared: &mut Shared<'_>) {
        if let Some(p) = &mut self.preferences {
            p.undo(shared);
            return;
        }
        self.commit_drafts(shared);
        if let Some(doc) = &mut self.doc {
            doc.undo(shared.now);
        }
    }

    pub fn redo(&mut self, shared: &mut Shared<'_>) {
        if let Some(p) = &mut self.preferences {
            p.redo(shared);
            return;
        }
        self.commit_drafts(shared);
        if let Some(doc) = &mut self.doc {
            doc.redo(shared.now);
        }
    }

    /// Saves to the dataset's own file (or asks where, when it has none).
    pub fn save(&mut self, shared: &mut Shared<'_>) {
        if let Some(p) = &mut self.preferences {
            p.save(None, None, shared);
            return;
        }
        self.commit_drafts(shared);
        let Some(doc) = &self.doc else { return };
        match doc.data().path().map(Path::to_path_buf) {
            Some(path) => self.save_to(path, None, shared),
            None => self.begin_save_as(),
        }
    }

    fn save_to(&mut self, path: PathBuf, format: Option<Format>, shared: &mut Shared<'_>) {
        self.commit_drafts(shared);
        let Some(doc) = &mut self.doc else { return };
        doc.saving = Some(doc.generation());
        shared.worker.send(Command::SaveDataset {
            dataset: doc.snapshot(),
            path,
            format,
            generation: doc.generation(),
        });
    }

    fn begin_save_as(&mut self) {
        if let Some(p) = &mut self.preferences {
            p.begin_save_as();
            return;
        }
        let Some(doc) = &self.doc else { return };
        let path = doc
            .data()
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        self.save_as = Some(SaveAs {
            path,
            format: format_name(doc.data().format()).to_string(),
        });
    }

    /// Ctrl+F.
    pub fn focus_search(&mut self) {
        self.focus_search = true;
    }

    /// Selects record `idx` and scrolls to it (clearing filters that hide it).
    pub fn jump_to(&mut self, idx: usize, shared: &mut Shared<'_>) {
        self.commit_drafts(shared);
        self.selected = Some(idx);
        self.scroll_to_selected = true;
        if let Some(doc) = &self.doc {
            if self.filter.rows(doc).position(idx).is_none() {
                self.filter.text.clear();
                self.filter.flag = FlagFilter::All;
                self.filter.update(doc, shared.worker);
            }
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, shared: &mut Shared<'_>) {
        self.toolbar_ui(ui, shared);
        ui.separator();
        self.recovery_ui(ui, shared);
        if let Some(p) = &mut self.preferences {
            p.ui(ui, shared);
            return;
        }
        if self.doc.is_none() {
            self.empty_ui(ui, shared);
            return;
        }
        self.filter_bar_ui(ui, shared);
        ui.add_space(2.0);
        let layout = shared.state.layout.clone();
        if layout.stats_open || layout.problems_open {
            egui::Panel::bottom("dataset-bottom")
                .resizable(true)
                .default_size(300.0)
                .min_size(180.0)
                .show(ui, |ui| self.bottom_ui(ui, shared));
        }
        if layout.editor_open {
            egui::Panel::right("conversation-editor-panel")
                .resizable(true)
                .default_size(460.0)
                .size_range(280.0..=900.0)
                .show(ui, |ui| self.editor_ui(ui, shared));
        }
        egui::CentralPanel::default_margins().show(ui, |ui| self.table_ui(ui, shared));
        self.save_as_ui(ui, shared);
    }

    /// The offer to restore autosaved edits of the file just opened.
    fn recovery_ui(&mut self, ui: &mut egui::Ui, shared: &mut Shared<'_>) {
        let Some((source, recovery, when)) = &self.recovery_offer else {
            return;
        };
        let mut choice = None;
        egui::Frame::group(ui.style())
            .fill(ui.visuals().warn_fg_color.gamma_multiply(0.15))
            .show(ui, |ui| {
                ui.horizontal_wrapped(|ui| {
                    ui.label(format!(
                        "{} has unsaved edits from {when} that were never saved (autosaved in {}).",
                        crate::paths::file_name(source),
                        crate::paths::file_name(recovery)
                    ));
                    if ui
                        .button("Restore them")
                        .on_hover_text("Open the file with those edits, unsaved; save to keep them")
                        .clicked()
                    {
                        choice = Some(true);
                    }
                    if ui
                        .button("Discard them")
                        .on_hover_text(
                            "Delete the recovery file and keep the file as it is on disk",
                        )
                        .clicked()
                    {
                        choice = Some(false);
                    }
                });
            });
        ui.add_space(4.0);
        let Some(restore) = choice else { return };
        let source = source.clone();
        self.recovery_offer = None;
        if restore {
            self.loading = Some(source.clone());
            shared.worker.send(Command::RecoverDataset { source });
        } else {
            shared.worker.send(Command::DiscardRecovery { source });
        }
    }

    fn toolbar_ui(&mut self, ui: &mut egui::Ui, shared: &mut Shared<'_>) {
        ui.horizontal(|ui| {
            if ui
                .button("Open…")
                .on_hover_text("Open a dataset with the system's file dialog (Ctrl+O)")
                .clicked()
            {
                self.pick_file(shared);
            }
            let field = ui.add(
                egui::TextEdit::singleline(&mut self.path_input)
                    .hint_text("or type a path: /data/train.jsonl, dataset_info.json#identity")
                    .desired_width((ui.available_width() - 440.0).clamp(240.0, 640.0)),
            );
            let enter = field.lost_focus() && ui.input(|i| i.key_pressed(egui::Key::Enter));
            if ui
                .button("Open")
                .on_hover_text("Open the typed path")
                .clicked()
                || enter
            {
                let p = PathBuf::from(self.path_input.trim());
                if !p.as_os_str().is_empty() {
                    self.open(&p, shared);
                }
            }
            let recent = shared.state.recent_files.clone();
            let mut chosen = None;
            ui.add_enabled_ui(!recent.is_empty(), |ui| {
                ui.menu_button("Recent ▾", |ui| {
                    for p in &recent {
                        if ui.button(p.display().to_string()).clicked() {
                            chosen = Some(p.clone());
                        }
                    }
                });
            });
            if let Some(p) = chosen {
                self.open(&p, shared);
            }
            ui.separator();
            let has_doc = self.doc.is_some() || self.preferences.is_some();
            let saving = self.doc.as_ref().is_some_and(|d| d.saving.is_some())
                || self
                    .preferences
                    .as_ref()
                    .is_some_and(|p| p.saving.is_some());
            if ui
                .add_enabled(has_doc && !saving, egui::Button::new("Save"))
                .on_hover_text("Save to the same file and format (Ctrl+S)")
                .clicked()
            {
                self.save(shared);
            }
            if ui
                .add_enabled(has_doc && !saving, egui::Button::new("Save as…"))
                .on_hover_text("Save to another file, in a format of your choice")
                .clicked()
            {
                self.begin_save_as();
            }
            let (can_undo, can_redo) = match (&self.doc, &self.preferences) {
                (_, Some(p)) => (p.set.can_undo(), p.set.can_redo()),
                (Some(d), None) => (d.data().can_undo(), d.data().can_redo()),
                (None, None) => (false, false),
            };
            if ui
                .add_enabled(can_undo, egui::Button::new("↶ Undo"))
                .on_hover_text("Undo the last edit (Ctrl+Z)")
                .clicked()
            {
                self.undo(shared);
            }
            if ui
                .add_enabled(can_redo, egui::Button::new("↷ Redo"))
                .on_hover_text("Redo (Ctrl+Y)")
                .clicked()
            {
                self.redo(shared);
            }
            if let Some(p) = &self.loading {
                ui.add(Busy);
                ui.label(format!("Reading {}…", crate::paths::file_name(p)));
            }
            if saving {
                ui.add(Busy);
                ui.label("Saving…");
            }
        });
        if let Some(doc) = &self.doc {
            let d = doc.data();
            ui.horizontal(|ui| {
                let name = d
                    .path()
                    .map_or_else(|| "(new dataset)".to_string(), crate::paths::file_name);
                ui.strong(name);
                if doc.is_dirty() {
                    ui.colored_label(ui.visuals().warn_fg_color, "● unsaved changes");
                }
                ui.weak(format!("{} records · {}", d.len(), d.format()));
                if let Some((file, entry)) = d.dataset_info_entry() {
                    ui.weak(format!(
                        "entry “{entry}” of {}",
                        crate::paths::file_name(file)
                    ));
                }
            });
        }
    }

    pub fn pick_file(&mut self, shared: &mut Shared<'_>) {
        shared.worker.send(Command::PickFile {
            purpose: DialogPurpose::OpenDataset,
            save: false,
            start: shared.state.recent_files.first().cloned(),
        });
    }

    fn empty_ui(&mut self, ui: &mut egui::Ui, shared: &mut Shared<'_>) {
        ui.add_space(40.0);
        ui.vertical_centered(|ui| {
            ui.heading("No dataset open");
            ui.add_space(8.0);
            ui.label(
                "Open a JSON, JSONL, CSV or Parquet file (Alpaca, ShareGPT or OpenAI messages),\n\
                 or a LLaMA-Factory dataset_info.json#entry: click Open…, type its path above,\n\
                 pick a recent file, or drag it onto this window.",
            );
            ui.add_space(12.0);
            if ui.button("Open a dataset…").clicked() {
                self.pick_file(shared);
            }
            let recent = shared.state.recent_files.clone();
            if !recent.is_empty() {
                ui.add_space(12.0);
                ui.strong("Recent files");
                for p in recent {
                    if ui.link(p.display().to_string()).clicked() {
                        self.open(&p, shared);
                    }
                }
            }
        });
    }

    fn filter_bar_ui(&mut self, ui: &mut egui::Ui, shared: &mut Shared<'_>) {
        let analysis = self.doc.as_ref().and_then(OpenDataset::latest_analysis);
        ui.horizontal(|ui| {
            let search = ui.add(
                egui::TextEdit::singleline(&mut self.filter.text)
                    .hint_text("Search every text (Ctrl+F)")
                    .desired_width(300.0),
            );
            if std::mem::take(&mut self.focus_search) {
                search.request_focus();
            }
            ui.checkbox(&mut self.filter.regex, "regex")
                .on_hover_text("Treat the search as a regular expression");
            ui.checkbox(&mut self.filter.case_sensitive, "Aa")
                .on_hover_text("Match case");
            // What a running search shows comes and goes: in a scope of its own it takes
            // one automatic id of the row, so the buttons after it keep theirs.
            ui.scope(|ui| {
                if let Some(e) = &self.filter.error {
                    ui.colored_label(ui.visuals().error_fg_color, format!("! {e}"))
                        .on_hover_text(e);
                } else if let Some(n) = self.filter.match_count() {
                    ui.label(format!("{n} matches"));
                }
                if self.filter.searching {
                    ui.add(Busy);
                }
            });
            ui.separator();
            for f in FlagFilter::ALL {
                let count = match (f, analysis) {
                    (FlagFilter::All, _) => self.doc.as_ref().map(|d| d.data().len()),
                    (FlagFilter::Contaminated, _) => self.filter.contaminated_count(),
                    (_, Some(a)) => f.rows(a).map(<[usize]>::len),
                    (_, None) => None,
                };
                let text = match count {
                    Some(n) => format!("{} ({n})", f.label()),
                    None => f.label().to_string(),
                };
                ui.selectable_value(&mut self.filter.flag, f, text)
                    .on_hover_text(f.help());
            }
        });
        if let Some(doc) = &self.doc {
            ui.horizontal(|ui| self.contamination.form_ui(ui, doc, shared.worker));
            let max_len = shared.state.run_config.data.max_seq_len;
            self.scores.form_ui(ui, doc, shared.worker, max_len);
            // Appears when the first scores land: a scope keeps the panels after it on
            // their ids.
            ui.scope(|ui| {
                if self.scores.primary.has_scores() {
                    egui::CollapsingHeader::new("Score histogram")
                        .id_salt("score-histogram-header")
                        .show(ui, |ui| self.scores.histogram_ui(ui, doc));
                }
            });
        }
    }

    fn table_ui(&mut self, ui: &mut egui::Ui, shared: &mut Shared<'_>) {
        let Some(doc) = &self.doc else { return };
        let filtered = self.filter.rows(doc);
        self.scores.update_order(filtered, doc);
        let rows = match self.scores.order() {
            Some(v) => Rows::Ordered(v),
            None => filtered,
        };
        if rows.is_empty() {
            ui.add_space(20.0);
            ui.vertical_centered(|ui| {
                ui.weak(if doc.data().is_empty() {
                    "This dataset has no records."
                } else {
                    "No record matches the search and filter."
                })
            });
            return;
        }
        let scroll_to = if std::mem::take(&mut self.scroll_to_selected) {
            self.selected.and_then(|s| rows.position(s))
        } else {
            None
        };
        let clicked = dataset_table::table_ui(
            ui,
            doc.data().records(),
            rows,
            doc.latest_analysis(),
            self.selected,
            scroll_to,
            &self.scores,
        );
        if let Some(idx) = clicked {
            self.commit_drafts(shared);
            self.selected = Some(idx);
            shared.state.layout.editor_open = true;
        }
    }

    fn editor_ui(&mut self, ui: &mut egui::Ui, shared: &mut Shared<'_>) {
        let Some(doc) = &mut self.doc else { return };
        let Some(idx) = self.selected.filter(|&i| i < doc.data().len()) else {
            ui.add_space(20.0);
            ui.vertical_centered(|ui| ui.weak("Select a row to see and edit its conversation."));
            return;
        };
        let Some(c) = doc.data().get(idx) else { return };
        // The record's contamination and scores come and go with background results and
        // edits: in a scope of their own, the editor's fields keep their ids (and focus).
        ui.scope(|ui| {
            self.contamination.record_ui(ui, idx);
            self.scores.record_ui(ui, c);
        });
        let problems = doc.data().record_problems(idx);
        let actions = self.editor.ui(
            ui,
            idx,
            doc.generation(),
            c,
            doc.data().line_of(idx),
            &problems,
        );
        for a in actions {
            let r = match a {
                EditorAction::Edit(e) => doc.apply(e, shared.now),
                EditorAction::DeleteRecord(index) => {
                    let r = doc.apply(Edit::DeleteRecord { index }, shared.now);
                    if r.is_ok() && index >= doc.data().len() {
                        self.selected = doc.data().len().checked_sub(1);
                    }
                    r
                }
            };
            if let Err(e) = r {
                shared
                    .notices
                    .error("The edit could not be applied", format!("{e:#}"));
            }
        }
    }

    fn bottom_ui(&mut self, ui: &mut egui::Ui, shared: &mut Shared<'_>) {
        let max_len = shared.state.run_config.data.max_seq_len;
        let Some(doc) = &self.doc else { return };
        let Some(a) = doc.latest_analysis() else {
            match &doc.analysis_failed {
                Some((_, error)) => {
                    ui.colored_label(
                        ui.visuals().error_fg_color,
                        format!("The statistics could not be computed: {error}"),
                    );
                }
                None => {
                    ui.horizontal(|ui| {
                        ui.add(Busy);
                        ui.label("Computing statistics…");
                    });
                }
            }
            return;
        };
        let stale = doc.current_analysis().is_none();
        let mut jump = None;
        ui.columns(2, |cols| {
            cols[0].strong("Token lengths");
            dataset_stats::stats_ui(&mut cols[0], a, max_len, stale);
            cols[1].strong("Validation problems");
            jump = dataset_stats::problems_ui(&mut cols[1], a);
        });
        if let Some(idx) = jump {
            self.jump_to(idx, shared);
        }
    }

    fn save_as_ui(&mut self, ui: &mut egui::Ui, shared: &mut Shared<'_>) {
        let Some(s) = &mut self.save_as else { return };
        let mut close = false;
        let mut submit = None;
        let modal = egui::Modal::new(egui::Id::unique("save-as")).show(ui.ctx(), |ui| {
            ui.set_width(520.0);
            ui.heading("Save the dataset as");
            ui.add_space(6.0);
            egui::Grid::new("save-as-grid").num_columns(2).show(ui, |ui| {
                ui.label("File");
                ui.horizontal(|ui| {
                    ui.add(egui::TextEdit::singleline(&mut s.path).desired_width(340.0));
                    if ui.button("Browse…").clicked() {
                        shared.worker.send(Command::PickFile {
                            purpose: DialogPurpose::SaveDatasetAs,
                            save: true,
                            start: Some(PathBuf::from(&s.path)),
                        });
                    }
                });
                ui.end_row();
                ui.label("Format");
                egui::ComboBox::from_id_salt("save-as-format")
                    .selected_text(s.format.as_str())
                    .show_ui(ui, |ui| {
                        for name in Format::NAMES {
                            ui.selectable_value(&mut s.format, name.to_string(), *name);
                        }
                    });
                ui.end_row();
            });
            ui.weak("The file is written to a temporary name and renamed into place; an existing file is kept as .bak.");
            ui.add_space(6.0);
            ui.horizontal(|ui| {
                let ok = !s.path.trim().is_empty();
                if ui.add_enabled(ok, egui::Button::new("Save")).clicked() {
                    submit = Some((PathBuf::from(s.path.trim()), s.format.clone()));
                }
                if ui.button("Cancel").clicked() {
                    close = true;
                }
            });
        });
        if modal.should_close() {
            close = true;
        }
        if let Some((path, format)) = submit {
            match format.parse::<Format>() {
                Ok(f) => {
                    self.save_as = None;
                    self.save_to(path.clone(), Some(f.for_output(&path)), shared);
                }
                Err(e) => shared.notices.error("Unknown format", format!("{e:#}")),
            }
        } else if close {
            self.save_as = None;
        }
    }
}

/// The name `Format::from_str` reads back for a format.
fn format_name(f: Format) -> &'static str {
    Format::NAMES
        .iter()
        .copied()
        .find(|n| n.parse::<Format>().ok() == Some(f))
        .unwrap_or("alpaca")
}
