//! The conversation editor: the selected record's system prompt and every turn, each
//! editable. Text is edited in drafts and committed as one data-module edit when the field
//! loses focus, so each change is one undo step; turns can be added, removed, moved and
//! given another role.

use eframe::egui;

use crate::data::{Conversation, Edit, Message, Problem, Role};

/// Drafts of the record being edited.
#[derive(Debug, Default)]
pub struct Editor {
    /// The record and dataset generation the drafts were taken from.
    source: Option<(usize, u64)>,
    system: String,
    turns: Vec<String>,
}

/// What the editor asks for.
#[derive(Debug, PartialEq)]
pub enum EditorAction {
    Edit(Edit),
    DeleteRecord(usize),
}

impl Editor {
    /// Retakes the drafts when another record is shown or the records changed.
    fn sync(&mut self, idx: usize, generation: u64, c: &Conversation) {
        if self.source == Some((idx, generation)) {
            return;
        }
        self.source = Some((idx, generation));
        self.system = c.system.clone().unwrap_or_default();
        self.turns = c.messages.iter().map(|m| m.content.clone()).collect();
    }

    /// The edits that drafts not yet committed would make (before a save or an undo).
    pub fn pending(&self, c: &Conversation) -> Vec<Edit> {
        let Some((index, _)) = self.source else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if c.system.as_deref().unwrap_or_default() != self.system {
            out.push(Edit::SetSystem {
                index,
                system: (!self.system.is_empty()).then(|| self.system.clone()),
            });
        }
        for (turn, (m, draft)) in c.messages.iter().zip(&self.turns).enumerate() {
            if m.content != *draft {
                out.push(Edit::SetTurnContent {
                    index,
                    turn,
                    content: draft.clone(),
                });
            }
        }
        out
    }

    /// The record whose drafts these are.
    pub fn record(&self) -> Option<usize> {
        self.source.map(|(i, _)| i)
    }

    /// Draws the editor of record `idx`; returns what to apply.
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        idx: usize,
        generation: u64,
        c: &Conversation,
        line: Option<usize>,
        problems: &[Problem],
    ) -> Vec<EditorAction> {
        self.sync(idx, generation, c);
        let mut out = Vec::new();
        ui.horizontal(|ui| {
            ui.heading(format!("Record {}", idx + 1));
            if let Some(l) = line {
                ui.weak(format!("line {l}"));
            }
            ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                if ui
                    .button("Delete record")
                    .on_hover_text("Remove this record from the dataset (Ctrl+Z brings it back)")
                    .clicked()
                {
                    out.push(EditorAction::DeleteRecord(idx));
                }
            });
        });
        for p in problems {
            let color = if p.is_error() {
                ui.visuals().error_fg_color
            } else {
                ui.visuals().warn_fg_color
            };
            let field = p
                .field
                .as_deref()
                .map(|f| format!("{f}: "))
                .unwrap_or_default();
            ui.colored_label(color, format!("! {field}{}", p.message));
        }
        ui.separator();
        egui::ScrollArea::vertical()
            .id_salt("conversation-editor")
            .auto_shrink([false, false])
            .show(ui, |ui| {
                self.system_ui(ui, idx, c, &mut out);
                let n = c.messages.len();
                for (turn, m) in c.messages.iter().enumerate() {
                    self.turn_ui(ui, idx, turn, n, m, &mut out);
                }
                ui.add_space(6.0);
                ui.horizontal(|ui| {
                    let next = match c.messages.last().map(|m| m.role) {
                        Some(Role::User) | Some(Role::Tool) => Role::Assistant,
                        _ => Role::User,
                    };
                    for role in [Role::User, Role::Assistant] {
                        let b = ui.button(format!("+ {} turn", role.label()));
                        let b = if role == next {
                            b.on_hover_text("Add this turn at the end (the usual next turn)")
                        } else {
                            b.on_hover_text("Add this turn at the end")
                        };
                        if b.clicked() {
                            out.push(EditorAction::Edit(Edit::InsertTurn {
                                index: idx,
                                turn: n,
                                message: Message::new(role, ""),
                            }));
                        }
                    }
                });
            });
        out
    }

    fn system_ui(
        &mut self,
        ui: &mut egui::Ui,
        idx: usize,
        c: &Conversation,
        out: &mut Vec<EditorAction>,
    ) {
        let label = ui.strong("System prompt");
        let r = ui.add(
            egui::TextEdit::multiline(&mut self.system)
                .desired_rows(1)
                .desired_width(f32::INFINITY)
                .hint_text("(none)"),
        );
        let r = r.labelled_by(label.id);
        if r.lost_focus() && c.system.as_deref().unwrap_or_default() != self.system {
            out.push(EditorAction::Edit(Edit::SetSystem {
                index: idx,
                system: (!self.system.is_empty()).then(|| self.system.clone()),
            }));
        }
        ui.add_space(4.0);
    }

    fn turn_ui(
        &mut self,
        ui: &mut egui::Ui,
        idx: usize,
        turn: usize,
        n: usize,
        m: &Message,
        out: &mut Vec<EditorAction>,
    ) {
        let Some(draft) = self.turns.get_mut(turn) else {
            return;
        };
        ui.push_id(("turn", turn), |ui| {
            let label = ui
                .horizontal(|ui| {
                    let label = ui.strong(format!("Turn {}", turn + 1));
                    let mut role = m.role;
                    egui::ComboBox::from_id_salt("role")
                        .selected_text(role.label())
                        .width(110.0)
                        .show_ui(ui, |ui| {
                            for r in Role::ALL {
                                ui.selectable_value(&mut role, r, r.label());
                            }
                        });
                    if role != m.role {
                        out.push(EditorAction::Edit(Edit::SetTurnRole {
                            index: idx,
                            turn,
                            role,
                        }));
                    }
                    if role.is_trained() {
                        ui.weak("trained").on_hover_text(
                            "The model learns to produce this turn (the loss is computed on it)",
                        );
                    }
                    ui.with_layout(egui::Layout::right_to_left(egui::Align::Center), |ui| {
                        if ui
                            .small_button("×")
                            .on_hover_text("Remove this turn")
                            .clicked()
                        {
                            out.push(EditorAction::Edit(Edit::RemoveTurn { index: idx, turn }));
                        }
                        if ui
                            .add_enabled(turn + 1 < n, egui::Button::new("▼").small())
                            .on_hover_text("Move down")
                            .clicked()
                        {
                            out.push(EditorAction::Edit(Edit::MoveTurn {
                                index: idx,
                                from: turn,
                                to: turn + 1,
                            }));
                        }
                        if ui
                            .add_enabled(turn > 0, egui::Button::new("▲").small())
                            .on_hover_text("Move up")
                            .clicked()
                        {
                            out.push(EditorAction::Edit(Edit::MoveTurn {
                                index: idx,
                                from: turn,
                                to: turn - 1,
                            }));
                        }
                    });
                    label
                })
                .inner;
            let r = ui
                .add(
                    egui::TextEdit::multiline(draft)
                        .desired_rows(2)
                        .desired_width(f32::INFINITY),
                )
                .labelled_by(label.id);
            if r.lost_focus() && *draft != m.content {
                out.push(EditorAction::Edit(Edit::SetTurnContent {
                    index: idx,
                    turn,
                    content: draft.clone(),
                }));
            }
            ui.add_space(4.0);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_lists_changed_drafts() {
        let c = Conversation {
            messages: vec![
                Message::new(Role::User, "q"),
                Message::new(Role::Assistant, "a"),
            ],
            ..Default::default()
        };
        let mut e = Editor::default();
        e.sync(3, 1, &c);
        assert!(e.pending(&c).is_empty());
        e.turns[1] = "b".into();
        assert_eq!(
            e.pending(&c),
            vec![Edit::SetTurnContent {
                index: 3,
                turn: 1,
                content: "b".into()
            }]
        );
    }
}
