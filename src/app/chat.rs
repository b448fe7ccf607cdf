//! The Chat tab: one to three panes side by side, each the base model or the base plus an
//! adapter, all on the one loaded model's weights. One input box sends the same prompt
//! with the same sampling seed to every pane, and the replies stream in together, each
//! from its pane's own generation thread (`crate::worker::chat_job`). The second view,
//! batch compare (`batch_compare`), runs a list of prompts through the same panes; the
//! third, blind A/B (`blind_ab`), rates the first two panes' models without their names
//! and keeps the judgments as preference pairs. Any
//! reply can become an example of the open dataset (`add_example`); the tab hands it to
//! the shell as a [`ChatAction`], and the shell gives it to the Datasets tab.

use std::path::PathBuf;

use eframe::egui;

use super::add_example::{self, DatasetTarget, ExampleDraft};
use super::batch_compare::{BatchCompare, BatchSettings, BatchShown, BatchUiAction};
use super::blind_ab::{BlindAb, BlindSettings};
use super::chat_pane::{adapter_choices, ChatPane, GenSettings};
use super::dataset_doc::OpenDataset;
use super::model_slot::ModelSlot;
use super::runs::RunsTab;
use super::shared::Shared;
use super::template_picker;
use crate::data::Conversation;
use crate::infer::Sampling;
use crate::jobs::JobEvents;
use crate::model::Model;
use crate::text::TemplateChoice;
use crate::worker::chat_job::TemplateSpec;
use crate::worker::file_write::{self, Written};
use crate::worker::{Command, DialogPurpose, Event, Waker};

/// The most panes side by side.
pub const MAX_PANES: usize = 3;

/// Height kept below the panes for the input box and the buttons.
const INPUT_HEIGHT: f32 = 110.0;

/// Which view of the Chat tab shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatView {
    /// A conversation in every pane.
    Conversation,
    /// A list of prompts through every pane, in a table.
    Batch,
    /// Two models under the names A and B, rated prompt by prompt.
    Blind,
}

/// What the Chat tab asks of the rest of the studio.
#[must_use]
#[derive(Debug)]
pub enum ChatAction {
    /// Add this record to the dataset open in the Datasets tab.
    AddExample(Conversation),
}

/// State of the Chat tab.
pub struct ChatTab {
    pub view: ChatView,
    pub panes: Vec<ChatPane>,
    pub batch: BatchCompare,
    pub blind: BlindAb,
    /// A reply being prepared as a dataset example (the dialog is open).
    pub adding: Option<ExampleDraft>,
    pub system: String,
    /// The chat template (`Own`: the model's, or each adapter's own).
    pub template: TemplateChoice,
    /// `enable_thinking` where the template has the switch (`None`: its default).
    pub thinking: Option<bool>,
    /// The message being typed.
    pub input: String,
    pub sampling: Sampling,
    pub max_new_tokens: usize,
    /// Render replies as Markdown (else as plain text, exactly as generated).
    pub markdown: bool,
    /// Where "Save" writes the conversation (JSON).
    pub save_path: String,
    saving: Option<JobEvents<Written>>,
    runs_listed: bool,
}

impl Default for ChatTab {
    fn default() -> Self {
        ChatTab {
            view: ChatView::Conversation,
            panes: vec![ChatPane::base()],
            batch: BatchCompare::default(),
            blind: BlindAb::default(),
            adding: None,
            system: String::new(),
            template: TemplateChoice::Own,
            thinking: None,
            input: String::new(),
            sampling: Sampling::default(),
            max_new_tokens: 256,
            markdown: true,
            save_path: crate::paths::data_dir()
                .join("chats")
                .join("conversation.json")
                .display()
                .to_string(),
            saving: None,
            runs_listed: false,
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
    /// Whether the conversation is being written to a file.
    pub fn is_saving(&self) -> bool {
        self.saving.is_some()
    }

    pub fn is_generating(&self) -> bool {
        self.panes.iter().any(|p| p.is_generating())
    }

    /// Takes the panes' events and the save result; runs every frame, whichever tab shows.
    pub fn logic(&mut self, shared: &mut Shared<'_>, waker: &Waker) {
        for p in &mut self.panes {
            p.poll();
        }
        self.blind.poll(shared.notices, waker);
        self.batch.poll(shared.notices);
        if let Some(rx) = &mut self.saving {
            if let Some(Written(r)) = rx.try_recv() {
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

    /// Draws the tab. `dataset` is the dataset open in the Datasets tab (read only: a
    /// reply to add to it comes back as [`ChatAction::AddExample`]).
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        shared: &mut Shared<'_>,
        model: &ModelSlot,
        runs: &mut RunsTab,
        dataset: Option<&OpenDataset>,
        waker: &Waker,
    ) -> Option<ChatAction> {
        if !self.runs_listed {
            self.runs_listed = true;
            runs.refresh(shared);
        }
        let target = dataset.map(dataset_target);
        let choices = adapter_choices(&runs.runs);
        self.top_ui(ui, shared, model, &runs.runs);
        ui.separator();
        if self.view == ChatView::Blind {
            let template = model.model().map(|m| self.template_spec(m));
            let settings = BlindSettings {
                template: template.as_ref(),
                system: &self.system,
                sampling: &self.sampling,
                max_new_tokens: self.max_new_tokens,
                markdown: self.markdown,
            };
            self.blind.ui(ui, model, &self.panes, &settings, waker);
            return None;
        }
        let n = self.panes.len();
        let batch = self.view == ChatView::Batch;
        let locked = self.batch.is_busy();
        let system = self.system.as_str();
        let mut adding = None;
        ui.columns(n, |cols| {
            for (i, (pane, ui)) in self.panes.iter_mut().zip(cols.iter_mut()).enumerate() {
                ui.push_id(("chat-pane", i), |ui| {
                    pane.header_ui(ui, &choices, locked);
                    if batch {
                        return;
                    }
                    ui.separator();
                    // The conversation takes what the input controls below leave.
                    let height = (ui.available_height() - INPUT_HEIGHT).max(100.0);
                    if let Some(turn) =
                        pane.conversation_ui(ui, height, target.as_ref(), self.markdown)
                    {
                        adding = pane.draft(turn, system);
                    }
                });
            }
        });
        ui.separator();
        if batch {
            let ready = model.model().is_some() && !self.is_generating();
            match self.batch.ui(ui, target.as_ref(), ready, waker) {
                Some(BatchUiAction::Run) => self.run_batch(shared, model, dataset, waker),
                Some(BatchUiAction::Add(d)) => adding = Some(d),
                Some(BatchUiAction::RunSuite) => self.run_suite(shared, model, waker),
                Some(BatchUiAction::RunJudge) => {
                    if let Some(m) = model.model() {
                        self.batch.start_judge(m, waker, shared.notices);
                    }
                }
                Some(BatchUiAction::BrowseSuite) => shared.worker.send(Command::PickFile {
                    purpose: DialogPurpose::BatchSuite,
                    save: false,
                    start: None,
                }),
                None => {}
            }
        } else {
            self.conversation_input(ui, model, waker);
        }
        if adding.is_some() {
            self.adding = adding;
        }
        add_example::dialog_ui(ui.ctx(), &mut self.adding, target.as_ref())
            .map(ChatAction::AddExample)
    }

    /// The template every pane renders with, as the controls set it.
    fn template_spec(&self, model: &Model) -> TemplateSpec {
        let switch = template_picker::has_thinking_switch(&self.template, Some(model));
        TemplateSpec {
            choice: self.template.clone(),
            thinking: if switch { self.thinking } else { None },
        }
    }

    /// Starts a batch with the tab's settings.
    pub fn run_batch(
        &mut self,
        shared: &mut Shared<'_>,
        model: &ModelSlot,
        dataset: Option<&OpenDataset>,
        waker: &Waker,
    ) {
        let Some(m) = model.model() else { return };
        let template = self.template_spec(m);
        let gen = BatchSettings {
            model: m,
            template: &template,
            system: &self.system,
            sampling: &self.sampling,
            max_new_tokens: self.max_new_tokens,
            run_config: &shared.state.run_config,
            waker,
        };
        self.batch.start(&self.panes, dataset, &gen, shared.notices);
    }

    /// Starts the eval suite through every pane, with the tab's settings.
    pub fn run_suite(&mut self, shared: &mut Shared<'_>, model: &ModelSlot, waker: &Waker) {
        let Some(m) = model.model() else { return };
        if self.batch.is_busy() || self.is_generating() {
            return;
        }
        let template = self.template_spec(m);
        let gen = BatchSettings {
            model: m,
            template: &template,
            system: &self.system,
            sampling: &self.sampling,
            max_new_tokens: self.max_new_tokens,
            run_config: &shared.state.run_config,
            waker,
        };
        self.batch.suite.start(&self.panes, &gen, shared.notices);
        if self.batch.suite.is_running() {
            self.batch.shown = BatchShown::Suite;
        }
    }

    /// Takes a suite file picked for batch compare; passes every other event on.
    pub fn on_event(&mut self, event: Event) -> Option<Event> {
        match event {
            Event::Picked {
                purpose: DialogPurpose::BatchSuite,
                path: Some(p),
            } => {
                self.batch.suite.picked(&p);
                None
            }
            other => Some(other),
        }
    }

    /// The message box and the conversation buttons under the panes.
    fn conversation_input(&mut self, ui: &mut egui::Ui, model: &ModelSlot, waker: &Waker) {
        let ready = model.model().is_some() && !self.batch.is_busy();
        let action = self.input_ui(ui, ready);
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
            ui.selectable_value(&mut self.view, ChatView::Conversation, "Conversation");
            ui.selectable_value(&mut self.view, ChatView::Batch, "Batch compare")
                .on_hover_text(
                    "Run a list of prompts through every pane and compare the replies in a table",
                );
            ui.selectable_value(&mut self.view, ChatView::Blind, "Blind A/B")
                .on_hover_text(
                    "Rate the first two panes' models without their names; each judgment is kept as a preference pair",
                );
            ui.separator();
            ui.label("Side by side:");
            let mut n = self.panes.len();
            let locked = self.batch.is_busy() || self.view == ChatView::Blind;
            for k in 1..=MAX_PANES {
                let label = if k == 1 {
                    "1 pane".into()
                } else {
                    format!("{k} panes")
                };
                ui.add_enabled_ui(!locked, |ui| ui.selectable_value(&mut n, k, label));
            }
            if n != self.panes.len() {
                self.set_pane_count(n, runs);
            }
            ui.checkbox(&mut self.markdown, "Markdown").on_hover_text(
                "Render replies as Markdown; untick to see them exactly as generated",
            );
            ui.separator();
            match model.model() {
                Some(m) => {
                    let rss = shared.memory.rss;
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
        ui.horizontal(|ui| {
            template_picker::picker_ui(
                ui,
                "chat-template",
                "Model's own / the adapter's",
                &mut self.template,
            );
            if template_picker::has_thinking_switch(&self.template, model.model().map(|m| &**m)) {
                template_picker::thinking_ui(ui, &mut self.thinking);
            }
        });
        template_picker::warnings_ui(
            ui,
            &template_picker::warnings(&self.template, model.model().map(|m| &**m)),
        );
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

    /// Sends the input to every pane.
    pub fn send(&mut self, model: &ModelSlot, waker: &Waker) {
        let prompt = self.input.trim().to_string();
        let Some(m) = model.model() else { return };
        if prompt.is_empty() || self.is_generating() || self.batch.is_busy() {
            return;
        }
        self.input.clear();
        let template = self.template_spec(m);
        for (i, p) in self.panes.iter_mut().enumerate() {
            let name = format!("pane-{i}");
            p.send(
                &prompt,
                &GenSettings {
                    model: m,
                    template: &template,
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
        let template = self.template_spec(m);
        for (i, p) in self.panes.iter_mut().enumerate() {
            if p.turns.last().is_some_and(|t| t.role == "user") {
                let name = format!("pane-{i}");
                p.reply(&GenSettings {
                    model: m,
                    template: &template,
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
        let make = move || json.map(String::into_bytes).map_err(|e| e.to_string());
        self.saving = Some(file_write::spawn("chat-save", path, make, waker));
    }
}

/// The open dataset, in the words the Chat tab shows.
fn dataset_target(doc: &OpenDataset) -> DatasetTarget {
    let name = doc
        .data()
        .path()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "(new dataset)".into());
    DatasetTarget {
        name,
        records: doc.data().len(),
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
