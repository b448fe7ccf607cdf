//! "Add to dataset": a reply from a chat pane or from the batch-compare table, as it stands
//! or edited, becomes a new example of the dataset open in the Datasets tab. The draft
//! (system prompt, earlier turns, prompt, reply) is edited in a dialog; confirming it
//! yields one record, which the shell inserts through the dataset's edit operations so
//! that undo, redo and the unsaved-changes mark apply to it like to any other edit.

use eframe::egui;

use crate::data::{Conversation, Message, Role};

/// The open dataset, as the Chat tab sees it.
#[derive(Debug, Clone)]
pub struct DatasetTarget {
    /// The file name, or "(new dataset)".
    pub name: String,
    pub records: usize,
}

/// An example being prepared from a reply.
#[derive(Debug, Clone)]
pub struct ExampleDraft {
    /// Where the reply came from ("Base model", "Base + run").
    pub source: String,
    pub system: String,
    /// Turns before the prompt, oldest first, kept as they are.
    pub history: Vec<Message>,
    pub prompt: String,
    pub reply: String,
}

impl ExampleDraft {
    /// The record to add: the system prompt (when there is one), the earlier turns, the
    /// prompt as a user turn and the reply as the assistant turn.
    pub fn to_record(&self) -> Conversation {
        let mut messages = self.history.clone();
        messages.push(Message::new(Role::User, self.prompt.trim()));
        messages.push(Message::new(Role::Assistant, self.reply.trim()));
        Conversation {
            system: Some(self.system.trim().to_string()).filter(|s| !s.is_empty()),
            messages,
            ..Default::default()
        }
    }
}

/// The "Add to dataset" button of a reply; disabled, with the reason on hover, while no
/// dataset is open. Returns whether it was clicked.
pub fn add_button(ui: &mut egui::Ui, target: Option<&DatasetTarget>, enabled: bool) -> bool {
    let button = egui::Button::new("Add to dataset").small();
    match target {
        Some(t) => ui
            .add_enabled(enabled, button)
            .on_hover_text(format!(
                "Add this prompt and reply to {} as a new example (you can edit the reply first)",
                t.name
            ))
            .clicked(),
        None => {
            ui.add_enabled(false, button).on_disabled_hover_text(
                "No dataset is open. Open one in the Datasets tab; a reply can then be added \
                 to it as a new example.",
            );
            false
        }
    }
}

/// The dialog that edits `draft`. Returns the record to add when the user confirms; the
/// dialog closes (`draft` becomes `None`) on confirm or cancel.
pub fn dialog_ui(
    ctx: &egui::Context,
    draft: &mut Option<ExampleDraft>,
    target: Option<&DatasetTarget>,
) -> Option<Conversation> {
    let d = draft.as_mut()?;
    let mut close = false;
    let mut add = None;
    let modal = egui::Modal::new(egui::Id::unique("add-example")).show(ctx, |ui| {
        ui.set_width(620.0);
        match target {
            Some(t) => ui.heading(format!("Add an example to {}", t.name)),
            None => ui.heading("Add an example"),
        };
        ui.weak(format!("From the reply of “{}”.", d.source));
        ui.add_space(6.0);
        egui::Grid::new("add-example-grid")
            .num_columns(2)
            .spacing([8.0, 6.0])
            .show(ui, |ui| {
                let l = ui.label("System");
                ui.add(
                    egui::TextEdit::singleline(&mut d.system)
                        .hint_text("(none)")
                        .desired_width(f32::INFINITY),
                )
                .labelled_by(l.id);
                ui.end_row();
                if !d.history.is_empty() {
                    ui.label("Earlier turns");
                    ui.weak(format!(
                        "{} turns before the prompt are included as they are",
                        d.history.len()
                    ));
                    ui.end_row();
                }
                let l = ui.label("Prompt");
                ui.add(
                    egui::TextEdit::multiline(&mut d.prompt)
                        .desired_rows(3)
                        .desired_width(f32::INFINITY),
                )
                .labelled_by(l.id);
                ui.end_row();
                let l = ui.label("Reply");
                ui.add(
                    egui::TextEdit::multiline(&mut d.reply)
                        .desired_rows(8)
                        .desired_width(f32::INFINITY),
                )
                .labelled_by(l.id);
                ui.end_row();
            });
        ui.add_space(6.0);
        match target {
            Some(t) => ui.weak(format!(
                "It becomes record {} of {}. Undo it in the Datasets tab (Ctrl+Z); save \
                 the dataset to keep it.",
                t.records + 1,
                t.name
            )),
            None => ui.colored_label(
                ui.visuals().warn_fg_color,
                "No dataset is open any more. Open one in the Datasets tab to add this.",
            ),
        };
        ui.add_space(6.0);
        ui.horizontal(|ui| {
            let ok = target.is_some() && !d.prompt.trim().is_empty() && !d.reply.trim().is_empty();
            if ui
                .add_enabled(ok, egui::Button::new("Add example"))
                .clicked()
            {
                add = Some(d.to_record());
            }
            if ui.button("Cancel").clicked() {
                close = true;
            }
        });
    });
    if add.is_some() || close || modal.should_close() {
        *draft = None;
    }
    add
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_draft_becomes_system_user_assistant() {
        let d = ExampleDraft {
            source: "Base model".into(),
            system: "  ".into(),
            history: vec![
                Message::new(Role::User, "hi"),
                Message::new(Role::Assistant, "hello"),
            ],
            prompt: " Who are you? ".into(),
            reply: "I am Studio.\n".into(),
        };
        let r = d.to_record();
        assert_eq!(r.system, None);
        let roles: Vec<Role> = r.messages.iter().map(|m| m.role).collect();
        assert_eq!(
            roles,
            [Role::User, Role::Assistant, Role::User, Role::Assistant]
        );
        assert_eq!(r.messages[2].content, "Who are you?");
        assert_eq!(r.messages[3].content, "I am Studio.");
        let with_system = ExampleDraft {
            system: "Be brief.".into(),
            ..d
        };
        assert_eq!(with_system.to_record().system.as_deref(), Some("Be brief."));
    }
}
