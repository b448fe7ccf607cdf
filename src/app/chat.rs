//! The Chat tab: a conversation with the base model or a tuned adapter, and side-by-side
//! comparison. Built by the chat issue (issue 6); until then it says so.

use eframe::egui;

/// State of the Chat tab.
#[derive(Debug, Default)]
pub struct ChatTab {}

impl ChatTab {
    pub fn ui(&mut self, ui: &mut egui::Ui) {
        ui.add_space(30.0);
        ui.vertical_centered(|ui| {
            ui.heading("Chat");
            ui.label("Talk to the base model and to your tuned adapters, side by side.");
            ui.weak("Coming next: until then, `finetune-studio chat --model … --adapter …` does it in a terminal.");
        });
    }
}
