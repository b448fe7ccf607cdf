//! The Chat tab: one to three panes side by side, each the base model or the base plus an
//! adapter, all on the one loaded model's weights. One input box sends the same prompt
//! with the same sampling seed to every pane, and the replies stream in together, each
//! from its pane's own generation thread (`crate::worker::chat_job`).

use std::path::PathBuf;

use crossbeam_channel::Receiver;
use eframe::egui;

use super::chat_pane::{adapter_choices, ChatPane, GenSettings};
use super::model_slot::ModelSlot;
use super::runs::RunsTab;
use super::shared::Shared;
use crate::infer::Sampling;
use crate::worker::Waker;

/// The most panes side by side.
pub const MAX_PANES: usize = 3;

/// Height kept below the panes for the input box and the buttons.
const INPUT_HEIGHT: f32 = 110.0;

/// State of the Chat tab.
pub struct ChatTab {
    pub panes: Vec<ChatPane>,
    pub system: String,
    /// The message being typed.
    pub input: String,
    pub sampling: Sampling,
    pub max_new_tokens: usize,
    /// Where "Save" writes the conversation (JSON).
    pub save_path: String,
    saving: Option<Receiver<Result<PathBuf, String>>>,
    runs_listed: bool,
    /// Resident memory, read at most once a second: (time read, bytes).
    memory: Option<(f64, Option<u64>)>,
}

impl Default for ChatTab {
    fn default() -> Self {
        ChatTab {
            panes: vec![ChatPane::base()],
            system: String::new(),
            input: String::new(),
            sampling: Sampling::default(),
            max_new_tokens: 256,
            save_path: crate::paths::data_dir()
                .join("chats")
                .join("conversation.json")
                .display()
                .to_string(),
            saving: None,
            runs_listed: false,
            memory: None,
        }
    }
}

/// What the controls asked for this frame.
#[derive(PartialEq)]
enum Action {
    Send,
    Stop,
    Regenerate,
    EditLast,
    Clear,
    Save,
}

impl ChatTab {
    pub fn is_generating(&self) -> bool {
        self.panes.iter().any(|p| p.is_generating())
    }

    /// Takes the panes' events and the save result; runs every frame, whichever tab shows.
    pub fn logic(&mut self, shared: &mut Shared<'_>) {
        for p in &mut self.panes {
            p.poll();
        }
        if let Some(rx) = &self.saving {
            if let Ok(r) = rx.try_recv() {
                self.saving = None;
                match r {
                    Ok(p) => shared
                        .notices
                        .info(format!("Conversation saved to {}", p.display())),
                    Err(e) => shared.notices.error("Saving the conversation failed", e),
                }
            }
        }
    }

    /// Sets the number of panes; a new pane starts on the newest run's adapter.
    pub fn set_pane_count(&mut self, n: usize, runs: &[crate::train::runs::RunInfo]) {
        let n = n.clamp(1, MAX_PANES);
        self.panes.truncate(n);
        while self.panes.len() < n {
            let pane = match adapter_choices(runs).first() {
                Some((_, dir)) => ChatPane::with_adapter(dir),
                None => ChatPane::base(),
            };
            self.panes.push(pane);
        }
    }

    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        shared: &mut Shared<'_>,
        model: &ModelSlot,
        runs: &mut RunsTab,
        waker: &Waker,
    ) {
        if !self.runs_listed {
            self.runs_listed = true;
            runs.refresh(shared);
        }
        let choices = adapter_choices(&runs.runs);
        self.top_ui(ui, shared, model, &runs.runs);
        ui.separator();
        let n = self.panes.len();
        ui.columns(n, |cols| {
            for (i, (pane, ui)) in self.panes.iter_mut().zip(cols.iter_mut()).enumerate() {
                ui.push_id(("chat-pane", i), |ui| {
                    pane.header_ui(ui, &choices);
                    ui.separator();
                    // The conversation takes what the input controls below leave.
                    let height = (ui.available_height() - INPUT_HEIGHT).max(100.0);
                    pane.conversation_ui(ui, height);
                });
            }
        });
        ui.separator();
        let action = self.input_ui(ui, model.model().is_some());
        match action {
            Some(Action::Send) => self.send(model, waker),
            Some(Action::Stop) => self.panes.iter().for_each(|p| p.stop()),
            Some(Action::Regenerate) => {
                for p in &mut self.panes {
                    p.pop_exchange(false);
                }
                self.reply_all(model, waker);
            }
            Some(Action::EditLast) => {
                let mut prompt = None;
                for p in &mut self.panes {
                    prompt = p.pop_exchange(true).or(prompt);
                }
                if let Some(p) = prompt {
                    self.input = p;
                }
            }
            Some(Action::Clear) => self.panes.iter_mut().for_each(|p| p.clear()),
            Some(Action::Save) => self.save(waker),
            None => {}
        }
    }

    fn top_ui(
        &mut self,
        ui: &mut egui::Ui,
        shared: &mut Shared<'_>,
        model: &ModelSlot,
        runs: &[crate::train::runs::RunInfo],
    ) {
        ui.horizontal(|ui| {
            ui.label("Side by side:");
            let mut n = self.panes.len();
            for k in 1..=MAX_PANES {
                let label = if k == 1 {
                    "1 pane".into()
                } else {
                    format!("{k} panes")
                };
                ui.selectable_value(&mut n, k, label);
            }
            if n != self.panes.len() {
                self.set_pane_count(n, runs);
            }
            ui.separator();
            match model.model() {
                Some(m) => {
                    let rss = self.memory_in_use(shared.now);
                    ui.label(format!(
                        "{} · weights {:.0} MiB, shared by every pane · memory in use {}",
                        m.name,
                        crate::sys::mib(m.weight_bytes() as u64),
                        rss.map(|b| format!("{:.0} MiB", crate::sys::mib(b)))
                            .unwrap_or_else(|| "unknown".into()),
                    ));
                }
                None => {
                    ui.weak(format!(
                        "No model loaded ({}). Load one in the Models tab or start with --model.",
                        model.status_line()
                    ));
                }
            }
        });
        ui.horizontal(|ui| {
            let label = ui.label("System prompt");
            ui.add(
                egui::TextEdit::singleline(&mut self.system)
                    .hint_text("You are a helpful assistant.")
                    .desired_width(f32::INFINITY),
            )
            .labelled_by(label.id);
        });
        ui.horizontal_wrapped(|ui| {
            let s = &mut self.sampling;
            ui.label("Temperature");
            ui.add(
                egui::DragValue::new(&mut s.temperature)
                    .range(0.0..=2.0)
                    .speed(0.01),
            )
            .on_hover_text("0 picks the most likely token every time");
            ui.label("Top-p");
            ui.add(
                egui::DragValue::new(&mut s.top_p)
                    .range(0.0..=1.0)
                    .speed(0.01),
            );
            ui.label("Top-k");
            ui.add(egui::DragValue::new(&mut s.top_k).range(0..=1000))
                .on_hover_text("0 keeps every token");
            ui.label("Max tokens");
            ui.add(egui::DragValue::new(&mut self.max_new_tokens).range(1..=32768));
            ui.label("Repetition penalty");
            ui.add(
                egui::DragValue::new(&mut s.repetition_penalty)
                    .range(0.5..=2.0)
                    .speed(0.01),
            );
            ui.label("Seed");
            ui.add(egui::DragValue::new(&mut s.seed));
        });
    }

    fn input_ui(&mut self, ui: &mut egui::Ui, ready: bool) -> Option<Action> {
        let mut action = None;
        let busy = self.is_generating();
        let input_id = egui::Id::unique("chat-input");
        // Enter sends; Shift+Enter starts a new line.
        let enter = ui.memory(|m| m.has_focus(input_id))
            && ui.input_mut(|i| i.consume_key(egui::Modifiers::NONE, egui::Key::Enter));
        let can_send = ready && !busy && !self.input.trim().is_empty();
        if enter && can_send {
            action = Some(Action::Send);
        }
        ui.horizontal(|ui| {
            let label = ui.label("Message");
            ui.add(
                egui::TextEdit::multiline(&mut self.input)
                    .id(input_id)
                    .hint_text("Sent to every pane with the same seed (Enter sends)")
                    .desired_rows(2)
                    .desired_width(ui.available_width() - 90.0),
            )
            .labelled_by(label.id);
            if ui
                .add_enabled(can_send, egui::Button::new("Send"))
                .clicked()
            {
                action = Some(Action::Send);
            }
        });
        ui.horizontal(|ui| {
            if ui.add_enabled(busy, egui::Button::new("■ Stop")).clicked() {
                action = Some(Action::Stop);
            }
            let has_prompt = self
                .panes
                .iter()
                .any(|p| p.turns.iter().any(|t| t.role == "user"));
            if ui
                .add_enabled(
                    ready && !busy && has_prompt,
                    egui::Button::new("↻ Regenerate"),
                )
                .clicked()
            {
                action = Some(Action::Regenerate);
            }
            if ui
                .add_enabled(!busy && has_prompt, egui::Button::new("Edit last"))
                .on_hover_text("Takes the last prompt back into the input box to edit and resend")
                .clicked()
            {
                action = Some(Action::EditLast);
            }
            if ui.add_enabled(!busy, egui::Button::new("Clear")).clicked() {
                action = Some(Action::Clear);
            }
            ui.separator();
            ui.add(
                egui::TextEdit::singleline(&mut self.save_path)
                    .hint_text("conversation.json")
                    .desired_width(320.0),
            );
            if ui
                .add_enabled(self.saving.is_none(), egui::Button::new("Save JSON"))
                .clicked()
            {
                action = Some(Action::Save);
            }
        });
        action
    }

    fn memory_in_use(&mut self, now: f64) -> Option<u64> {
        match self.memory {
            Some((t, bytes)) if now - t < 1.0 => bytes,
            _ => {
                let bytes = crate::sys::rss_bytes();
                self.memory = Some((now, bytes));
                bytes
            }
        }
    }

    /// Sends the input to every pane.
    pub fn send(&mut self, model: &ModelSlot, waker: &Waker) {
        let prompt = self.input.trim().to_string();
        let Some(m) = model.model() else { return };
        if prompt.is_empty() || self.is_generating() {
            return;
        }
        self.input.clear();
        for (i, p) in self.panes.iter_mut().enumerate() {
            let name = format!("pane-{i}");
            p.send(
                &prompt,
                &GenSettings {
                    model: m,
                    system: &self.system,
                    sampling: &self.sampling,
                    max_new_tokens: self.max_new_tokens,
                    waker,
                    name: &name,
                },
            );
        }
    }

    /// Replies again in every pane whose conversation ends with a prompt.
    fn reply_all(&mut self, model: &ModelSlot, waker: &Waker) {
        let Some(m) = model.model() else { return };
        for (i, p) in self.panes.iter_mut().enumerate() {
            if p.turns.last().is_some_and(|t| t.role == "user") {
                let name = format!("pane-{i}");
                p.reply(&GenSettings {
                    model: m,
                    system: &self.system,
                    sampling: &self.sampling,
                    max_new_tokens: self.max_new_tokens,
                    waker,
                    name: &name,
                });
            }
        }
    }

    /// The conversation of every pane, with the settings, as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "system": self.system,
            "sampling": self.sampling,
            "max_new_tokens": self.max_new_tokens,
            "panes": self.panes.iter().map(pane_json).collect::<Vec<_>>(),
        })
    }

    /// Writes the conversation to the typed path, on a short-lived thread.
    fn save(&mut self, waker: &Waker) {
        let path = PathBuf::from(self.save_path.trim());
        let json = serde_json::to_string_pretty(&self.to_json());
        let (tx, rx) = crossbeam_channel::bounded(1);
        let fail = tx.clone();
        let thread_waker = waker.clone();
        let spawned = std::thread::Builder::new()
            .name("chat-save".into())
            .spawn(move || {
                let r = (|| -> Result<PathBuf, String> {
                    let json = json.map_err(|e| e.to_string())?;
                    if path.as_os_str().is_empty() {
                        return Err("type a file path first".to_string());
                    }
                    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                        std::fs::create_dir_all(dir)
                            .map_err(|e| format!("{}: {e}", dir.display()))?;
                    }
                    crate::train::run_dir::write_atomic(&path, json.as_bytes())
                        .map_err(|e| format!("{e:#}"))?;
                    Ok(path)
                })();
                let _ = tx.send(r);
                thread_waker.wake();
            });
        if let Err(e) = spawned {
            let _ = fail.try_send(Err(format!("cannot start the save thread: {e}")));
        }
        self.saving = Some(rx);
    }
}

/// One pane's model and messages, as saved.
fn pane_json(p: &ChatPane) -> serde_json::Value {
    let adapter = p.use_adapter.then(|| p.adapter_dir.trim().to_string());
    serde_json::json!({
        "model": p.label(),
        "adapter": adapter,
        "messages": p.turns,
    })
}
