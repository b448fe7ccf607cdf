//! The Datasets tab's view of a preference file (TRL or LLaMA-Factory ranking layout):
//! the pairs in a list, the selected pair's prompt above its chosen and rejected replies
//! side by side, each reply editable (an edit is committed, as one undoable step, when its
//! field loses focus), chosen and rejected swapped or the pair deleted, its problems, and
//! saving through the worker (atomic, `.bak` kept) in its own layout or another. The
//! tab's toolbar (Save, Save as, Undo, Redo and their keys) acts on it.

use std::path::PathBuf;

use eframe::egui;

use crate::data::{
    Encoding, Message, PreferenceEdit, PreferenceFormat, PreferenceLayout, PreferencePair,
    PreferenceSet, Role,
};
use crate::worker::Command;

use super::shared::Shared;

/// An open preference set and what the view holds of it.
pub struct PreferenceDoc {
    pub set: PreferenceSet,
    /// The selected pair.
    pub selected: usize,
    /// Counts edits, undos and redos, so a save's answer knows whether it is current.
    generation: u64,
    /// The generation being saved.
    pub saving: Option<u64>,
    /// Draft texts of the selected pair's replies: (pair, chosen, rejected).
    draft: Option<(usize, String, String)>,
    /// The "Save as" form: layout and path.
    save_as: Option<(PreferenceLayout, String)>,
}

impl PreferenceDoc {
    pub fn new(set: PreferenceSet) -> Self {
        PreferenceDoc {
            set,
            selected: 0,
            generation: 0,
            saving: None,
            draft: None,
            save_as: None,
        }
    }

    pub fn is_dirty(&self) -> bool {
        self.set.is_dirty()
    }

    /// Applies an edit as one undoable step (drafts first).
    pub fn apply(&mut self, edit: PreferenceEdit, shared: &mut Shared<'_>) {
        self.commit_draft(shared);
        self.apply_now(edit, shared);
    }

    fn apply_now(&mut self, edit: PreferenceEdit, shared: &mut Shared<'_>) {
        match self.set.apply(edit) {
            Ok(()) => self.generation += 1,
            Err(e) => shared
                .notices
                .error("The edit could not be applied", format!("{e:#}")),
        }
        self.selected = self.selected.min(self.set.len().saturating_sub(1));
    }

    pub fn undo(&mut self, shared: &mut Shared<'_>) {
        self.commit_draft(shared);
        if self.set.undo() {
            self.generation += 1;
        }
        self.draft = None;
        self.selected = self.selected.min(self.set.len().saturating_sub(1));
    }

    pub fn redo(&mut self, shared: &mut Shared<'_>) {
        self.commit_draft(shared);
        if self.set.redo() {
            self.generation += 1;
        }
        self.draft = None;
        self.selected = self.selected.min(self.set.len().saturating_sub(1));
    }

    /// Saves to `path` (its own file when `None`) in `format` (its own when `None`).
    pub fn save(
        &mut self,
        path: Option<PathBuf>,
        format: Option<PreferenceFormat>,
        shared: &mut Shared<'_>,
    ) {
        self.commit_draft(shared);
        let Some(path) = path.or_else(|| self.set.path().map(PathBuf::from)) else {
            self.save_as = Some((self.set.format().layout, String::new()));
            return;
        };
        self.saving = Some(self.generation);
        shared.worker.send(Command::SavePreferences {
            set: Box::new(self.set.clone()),
            path,
            format: format.map(Box::new),
            generation: self.generation,
        });
    }

    /// Opens the "Save as" form (layout and path).
    pub fn begin_save_as(&mut self) {
        let path = self
            .set
            .path()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        self.save_as = Some((self.set.format().layout, path));
    }

    /// The worker's answer to a save: the saved set replaces this one when nothing was
    /// edited meanwhile.
    pub fn saved(&mut self, set: PreferenceSet, generation: u64) -> bool {
        self.saving = None;
        if generation == self.generation {
            self.set = set;
            true
        } else {
            false
        }
    }

    /// The edit the draft of the selected pair's replies makes, committed.
    fn commit_draft(&mut self, shared: &mut Shared<'_>) {
        let Some((i, chosen, rejected)) = self.draft.take() else {
            return;
        };
        let Some(pair) = self.set.pairs.get(i) else {
            return;
        };
        let mut new = pair.clone();
        set_text(&mut new.chosen, chosen);
        set_text(&mut new.rejected, rejected);
        if new != *pair {
            self.apply_now(PreferenceEdit::Set(i, new), shared);
        }
    }

    pub fn ui(&mut self, ui: &mut egui::Ui, shared: &mut Shared<'_>) {
        self.header_ui(ui, shared);
        ui.separator();
        if self.set.is_empty() {
            ui.label("The file holds no pairs.");
            return;
        }
        ui.horizontal_top(|ui| {
            ui.vertical(|ui| {
                ui.set_width(260.0);
                self.list_ui(ui, shared);
            });
            ui.separator();
            ui.vertical(|ui| self.pair_ui(ui, shared));
        });
    }

    fn header_ui(&mut self, ui: &mut egui::Ui, shared: &mut Shared<'_>) {
        let invalid = self.set.invalid_pairs().len();
        ui.horizontal(|ui| {
            let name = self.set.path().map_or_else(
                || "(new preference set)".to_string(),
                crate::paths::file_name,
            );
            ui.strong(name);
            if self.is_dirty() {
                ui.colored_label(ui.visuals().warn_fg_color, "● unsaved changes");
            }
            let f = self.set.format();
            let container = match f.encoding {
                Encoding::Json => "JSON",
                _ => "JSON lines",
            };
            ui.weak(format!(
                "{} preference pairs · {} ({container})",
                self.set.len(),
                f.layout.label()
            ));
            if invalid > 0 {
                ui.colored_label(
                    ui.visuals().error_fg_color,
                    format!("{invalid} invalid (training skips them)"),
                );
            }
        });
        let (mut go, mut cancel) = (None, false);
        if let Some((layout, path)) = &mut self.save_as {
            ui.horizontal(|ui| {
                egui::ComboBox::from_id_salt("preference-layout")
                    .selected_text(layout.label())
                    .show_ui(ui, |ui| {
                        for l in PreferenceLayout::ALL {
                            ui.selectable_value(layout, l, l.label());
                        }
                    });
                ui.add(egui::TextEdit::singleline(path).hint_text("path/to/pairs.jsonl"));
                if ui.button("Save").clicked() && !path.trim().is_empty() {
                    go = Some((*layout, PathBuf::from(path.trim())));
                }
                if ui.button("Cancel").clicked() {
                    cancel = true;
                }
            });
        }
        if cancel {
            self.save_as = None;
        }
        if let Some((layout, path)) = go {
            let encoding = match path.extension().and_then(|e| e.to_str()) {
                Some("json") => Encoding::Json,
                _ => Encoding::JsonLines,
            };
            self.save_as = None;
            self.save(
                Some(path),
                Some(PreferenceFormat::new(layout, encoding)),
                shared,
            );
        }
    }

    fn list_ui(&mut self, ui: &mut egui::Ui, shared: &mut Shared<'_>) {
        let mut pick = None;
        egui::ScrollArea::vertical()
            .id_salt("preference-list")
            .auto_shrink([false, false])
            .show_rows(ui, 20.0, self.set.len(), |ui, range| {
                for i in range {
                    let bad = self.set.pair_problems(i).iter().any(|p| p.is_error());
                    let text: String = self.set.pairs[i]
                        .last_user_text()
                        .chars()
                        .take(48)
                        .collect();
                    let label = format!("{}{} {text}", if bad { "⚠ " } else { "" }, i + 1);
                    if ui.selectable_label(self.selected == i, label).clicked() {
                        pick = Some(i);
                    }
                }
            });
        if let Some(i) = pick {
            self.commit_draft(shared);
            self.selected = i;
        }
    }

    fn pair_ui(&mut self, ui: &mut egui::Ui, shared: &mut Shared<'_>) {
        let i = self.selected;
        let Some(pair) = self.set.pairs.get(i).cloned() else {
            return;
        };
        ui.heading(format!("Pair {}", i + 1));
        if let Some(s) = &pair.system {
            ui.label(egui::RichText::new(format!("system: {s}")).weak());
        }
        for m in &pair.prompt {
            ui.label(format!("{}: {}", m.role, m.content));
        }
        ui.add_space(6.0);
        if self.draft.as_ref().is_none_or(|d| d.0 != i) {
            self.draft = Some((
                i,
                PreferencePair::reply_text(&pair.chosen),
                PreferencePair::reply_text(&pair.rejected),
            ));
        }
        let mut commit = false;
        if let Some((_, chosen, rejected)) = &mut self.draft {
            ui.columns(2, |cols| {
                for (col, title, text, reply) in [
                    (0, "Chosen", &mut *chosen, &pair.chosen),
                    (1, "Rejected", &mut *rejected, &pair.rejected),
                ] {
                    let ui = &mut cols[col];
                    let label = ui.strong(title);
                    let editable = reply.len() <= 1;
                    let r = ui
                        .add_enabled(
                            editable,
                            egui::TextEdit::multiline(text)
                                .desired_width(f32::INFINITY)
                                .desired_rows(8),
                        )
                        .labelled_by(label.id);
                    if !editable {
                        ui.weak("several turns: edit them in the file");
                    }
                    commit |= r.lost_focus();
                }
            });
        }
        if commit {
            self.commit_draft(shared);
        }
        ui.horizontal(|ui| {
            if ui.button("Swap chosen and rejected").clicked() {
                self.apply(PreferenceEdit::Swap(i), shared);
            }
            if ui.button("Delete pair").clicked() {
                self.apply(PreferenceEdit::Remove(i), shared);
                self.draft = None;
            }
        });
        for p in self.set.pair_problems(i) {
            let color = if p.is_error() {
                ui.visuals().error_fg_color
            } else {
                ui.visuals().warn_fg_color
            };
            ui.colored_label(color, p.to_string());
        }
    }
}

/// Sets a reply's text: its one turn's content, or a new assistant turn.
fn set_text(reply: &mut Vec<Message>, text: String) {
    match reply.as_mut_slice() {
        [one] => one.content = text,
        [] if !text.is_empty() => reply.push(Message::new(Role::Assistant, text)),
        _ => {}
    }
}
