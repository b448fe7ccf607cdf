//! The Chat tab's blind A/B view: the first two panes' models answer each prompt side by
//! side under the names A and B, their order shuffled per prompt from a recorded seed
//! (`data::judgment::shown_swapped`). The user rates the replies (A better, B better, a
//! tie, both bad), may edit the better reply (or write one) before keeping it, and each
//! kept judgment's pairs are appended to a preference file through the file-write job;
//! undo takes the last judgment out of the file and the tally and shows its replies
//! again. The tally gives a win rate with its Wilson 95 % interval; "Reveal names" shows
//! which model is which.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use eframe::egui;

use super::busy::Busy;
use super::chat_pane::{ChatPane, GenSettings, Turn};
use super::model_slot::ModelSlot;
use super::notify::Notifications;
use crate::data::judgment::{
    appended_bytes, removed_bytes, shown_swapped, Judgment, ReplySource, Verdict,
};
use crate::data::tally::{Outcome, Tally};
use crate::data::{Message, PreferencePair, Role};
use crate::infer::Sampling;
use crate::jobs::JobEvents;
use crate::model::Model;
use crate::worker::chat_job::TemplateSpec;
use crate::worker::file_write::{self, Written};
use crate::worker::Waker;

/// The settings of the tab that a blind prompt is sent with.
pub struct BlindSettings<'a> {
    /// The chat tab's template choice (`None` before a model is loaded).
    pub template: Option<&'a TemplateSpec>,
    pub system: &'a str,
    pub sampling: &'a Sampling,
    pub max_new_tokens: usize,
    pub markdown: bool,
}

/// A verdict picked, with the chosen reply as the user edits it, before it is kept.
#[derive(Debug, Clone, PartialEq)]
pub struct Draft {
    pub verdict: Verdict,
    pub text: String,
}

/// What a prompt was sent with (recorded in its pairs).
#[derive(Debug, Clone, Default)]
struct Sent {
    system: String,
    sampling: Sampling,
    max_new_tokens: usize,
}

/// A kept judgment, as undo needs it.
#[derive(Debug, Clone)]
pub struct Kept {
    pub id: String,
    pub outcome: Outcome,
    /// Pairs written for it (0 for a tie or "both bad" without an edit).
    pub pairs: usize,
    /// The file they were written to.
    pub path: PathBuf,
    turns_before: [Vec<Turn>; 2],
    prompt_index: u64,
    swapped: bool,
    judged_before: u64,
}

/// One change to the preference file, done in order on the file-write job.
enum FileOp {
    Append(PathBuf, String, Vec<PreferencePair>),
    Remove(PathBuf, String),
}

/// A session button clicked.
enum SessionAction {
    Undo,
    Restart,
}

/// State of the blind A/B view.
pub struct BlindAb {
    /// Model 1 and model 2 (by model, not by side), each with its conversation; empty
    /// until a session starts.
    pub panes: Vec<ChatPane>,
    /// The shuffle's seed, recorded in every pair.
    pub order_seed: u64,
    /// Prompts sent in this session (the shuffle's index).
    pub prompt_index: u64,
    /// The index of the last prompt rated or skipped: a verdict is due while it is
    /// behind `prompt_index`.
    pub judged: u64,
    /// Whether model 2 shows as A for the current prompt.
    pub swapped: bool,
    pub revealed: bool,
    /// The preference file judgments go to (JSON lines; `.json` for an array).
    pub path: String,
    pub input: String,
    pub tally: Tally,
    pub draft: Option<Draft>,
    pub kept: Vec<Kept>,
    /// What the last write did, for the status line.
    pub status: String,
    sent: Sent,
    serial: u64,
    ops: VecDeque<FileOp>,
    writing: Option<(FileOp, JobEvents<Written>)>,
}

impl Default for BlindAb {
    fn default() -> Self {
        BlindAb {
            panes: Vec::new(),
            order_seed: 0,
            prompt_index: 0,
            judged: 0,
            swapped: false,
            revealed: false,
            path: crate::paths::data_dir()
                .join("preferences")
                .join("blind-ab.jsonl")
                .display()
                .to_string(),
            input: String::new(),
            tally: Tally::default(),
            draft: None,
            kept: Vec::new(),
            status: String::new(),
            sent: Sent::default(),
            serial: 0,
            ops: VecDeque::new(),
            writing: None,
        }
    }
}

/// A clock-derived seed for a new session's shuffle.
fn fresh_seed() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    now.as_secs() ^ (u64::from(now.subsec_nanos()) << 20)
}

fn pane_like(p: &ChatPane) -> ChatPane {
    let mut out = ChatPane::base();
    out.use_adapter = p.use_adapter;
    out.adapter_dir = p.adapter_dir.clone();
    out.hide_stats = true;
    out
}

impl BlindAb {
    pub fn is_started(&self) -> bool {
        self.panes.len() == 2
    }

    pub fn is_generating(&self) -> bool {
        self.panes.iter().any(ChatPane::is_generating)
    }

    /// Whether a judgment is being written to (or removed from) the file.
    pub fn is_writing(&self) -> bool {
        self.writing.is_some() || !self.ops.is_empty()
    }

    /// Starts a session on the models of `from`'s first two panes, with a fresh shuffle
    /// seed and an empty tally.
    pub fn start(&mut self, from: &[ChatPane]) {
        self.start_seeded(from, fresh_seed());
    }

    /// Starts a session with a given shuffle seed.
    pub fn start_seeded(&mut self, from: &[ChatPane], order_seed: u64) {
        self.panes = from.iter().take(2).map(pane_like).collect();
        self.order_seed = order_seed;
        self.prompt_index = 0;
        self.judged = 0;
        self.swapped = false;
        self.revealed = false;
        self.tally = Tally::default();
        self.draft = None;
        self.kept.clear();
        self.status.clear();
    }

    /// The model (0 or 1) shown on side `side` (0: A, 1: B).
    pub fn model_on(&self, side: usize) -> usize {
        if self.swapped {
            1 - side
        } else {
            side
        }
    }

    /// The model's name, as its pane shows it.
    pub fn model_name(&self, m: usize) -> String {
        self.panes.get(m).map(ChatPane::label).unwrap_or_default()
    }

    /// Both replies are in and no verdict is kept for them yet.
    pub fn awaiting_verdict(&self) -> bool {
        self.is_started()
            && self.judged < self.prompt_index
            && !self.is_generating()
            && self
                .panes
                .iter()
                .all(|p| p.last_reply().is_some_and(|t| t.stop_reason.is_some()))
    }

    /// Takes the panes' events and the write results, and starts the next queued file
    /// change; runs every frame, whichever tab shows.
    pub fn poll(&mut self, notices: &mut Notifications, waker: &Waker) {
        for p in &mut self.panes {
            p.poll();
        }
        if let Some((_, rx)) = &mut self.writing {
            if let Some(Written(r)) = rx.try_recv() {
                if let Some((op, _)) = self.writing.take() {
                    self.written(op, r, notices);
                }
            }
        }
        self.pump(waker);
    }

    fn written(&mut self, op: FileOp, r: Result<PathBuf, String>, notices: &mut Notifications) {
        match (op, r) {
            (FileOp::Append(_, _, pairs), Ok(p)) => {
                self.status = format!("{} pair(s) added to {}", pairs.len(), p.display());
            }
            (FileOp::Remove(_, _), Ok(p)) => {
                self.status = format!("the last judgment was taken out of {}", p.display());
            }
            (FileOp::Append(_, id, _), Err(e)) => {
                if let Some(k) = self.kept.iter_mut().find(|k| k.id == id) {
                    k.pairs = 0;
                }
                notices.error("The judgment's pairs were not saved", e);
            }
            (FileOp::Remove(..), Err(e)) => {
                notices.error("Taking the judgment out of the file failed", e)
            }
        }
    }

    /// Starts the next queued file change, if none is running.
    fn pump(&mut self, waker: &Waker) {
        if self.writing.is_some() {
            return;
        }
        let Some(op) = self.ops.pop_front() else {
            return;
        };
        let job = match &op {
            FileOp::Append(path, _, pairs) => {
                let (p, pairs) = (path.clone(), pairs.clone());
                file_write::spawn(
                    "blind-ab-append",
                    path.clone(),
                    move || appended_bytes(&p, &pairs).map_err(|e| e.to_string()),
                    waker,
                )
            }
            FileOp::Remove(path, id) => {
                let (p, id) = (path.clone(), id.clone());
                file_write::spawn(
                    "blind-ab-remove",
                    path.clone(),
                    move || removed_bytes(&p, &id).map_err(|e| e.to_string()),
                    waker,
                )
            }
        };
        self.writing = Some((op, job));
    }

    /// Sends the input to both models, with the sides shuffled for this prompt.
    pub fn send(&mut self, model: &Arc<Model>, settings: &BlindSettings<'_>, waker: &Waker) {
        let prompt = self.input.trim().to_string();
        if prompt.is_empty() || !self.is_started() || self.is_generating() || self.draft.is_some() {
            return;
        }
        self.input.clear();
        self.prompt_index += 1;
        self.swapped = shown_swapped(self.order_seed, self.prompt_index);
        self.sent = Sent {
            system: settings.system.trim().to_string(),
            sampling: settings.sampling.clone(),
            max_new_tokens: settings.max_new_tokens,
        };
        let template = settings.template.cloned().unwrap_or_default();
        for (i, p) in self.panes.iter_mut().enumerate() {
            let name = format!("blind-{i}");
            p.send(
                &prompt,
                &GenSettings {
                    model,
                    template: &template,
                    system: &self.sent.system,
                    sampling: &self.sent.sampling,
                    max_new_tokens: self.sent.max_new_tokens,
                    waker,
                    name: &name,
                },
            );
        }
    }

    /// Picks a verdict; the chosen reply starts as the better reply (empty for a tie or
    /// "both bad": the user may write one).
    pub fn pick(&mut self, verdict: Verdict) {
        if !self.awaiting_verdict() {
            return;
        }
        let text = match verdict {
            Verdict::A => self.reply_on(0),
            Verdict::B => self.reply_on(1),
            Verdict::Tie | Verdict::BothBad => String::new(),
        };
        self.draft = Some(Draft { verdict, text });
    }

    /// The reply shown on side `side`.
    pub fn reply_on(&self, side: usize) -> String {
        self.panes
            .get(self.model_on(side))
            .and_then(ChatPane::last_reply)
            .map(|t| t.content.clone())
            .unwrap_or_default()
    }

    /// The judgment the open draft would keep.
    fn judgment(&self, draft: &Draft) -> Judgment {
        let turns = &self.panes[0].turns;
        let prompt = turns[..turns.len().saturating_sub(1)]
            .iter()
            .filter_map(|t| Role::parse_any(&t.role).map(|r| Message::new(r, t.content.as_str())))
            .collect();
        let source = |side: usize| {
            let p = &self.panes[self.model_on(side)];
            let adapter = p.use_adapter.then(|| p.adapter_dir.trim().to_string());
            ReplySource::new(p.label(), adapter)
        };
        let mut sampling = serde_json::to_value(&self.sent.sampling).unwrap_or_default();
        if let Some(o) = sampling.as_object_mut() {
            o.insert("max_new_tokens".into(), self.sent.max_new_tokens.into());
        }
        Judgment {
            id: format!("{:016x}-{}", self.order_seed, self.serial),
            system: Some(self.sent.system.clone()).filter(|s| !s.is_empty()),
            prompt,
            replies: [self.reply_on(0), self.reply_on(1)],
            sources: [source(0), source(1)],
            verdict: draft.verdict,
            edited: Some(draft.text.clone()),
            sampling,
            seed: self.sent.sampling.seed,
            order_seed: self.order_seed,
            prompt_index: self.prompt_index,
            swapped: self.swapped,
        }
    }

    /// Keeps the open draft: counts it, queues its pairs for the file, and continues the
    /// conversation from the chosen reply (from A's after a tie; without the exchange
    /// after "both bad" with nothing written).
    pub fn keep(&mut self, waker: &Waker) {
        let Some(draft) = self.draft.take() else {
            return;
        };
        if !self.awaiting_verdict() {
            return;
        }
        self.serial += 1;
        let j = self.judgment(&draft);
        let pairs = j.pairs();
        let outcome = match draft.verdict {
            Verdict::A => Outcome::Win(self.model_on(0)),
            Verdict::B => Outcome::Win(self.model_on(1)),
            Verdict::Tie => Outcome::Tie,
            Verdict::BothBad => Outcome::BothBad,
        };
        self.tally.add(outcome);
        let path = PathBuf::from(self.path.trim());
        self.kept.push(Kept {
            id: j.id.clone(),
            outcome,
            pairs: pairs.len(),
            path: path.clone(),
            turns_before: [self.panes[0].turns.clone(), self.panes[1].turns.clone()],
            prompt_index: self.prompt_index,
            swapped: self.swapped,
            judged_before: self.judged,
        });
        self.judged = self.prompt_index;
        let next = match (j.chosen_text(), draft.verdict) {
            (Some(t), _) => Some(t.to_string()),
            (None, Verdict::Tie) => Some(j.replies[0].clone()),
            (None, _) => None,
        };
        for p in &mut self.panes {
            match &next {
                Some(text) => {
                    if let Some(t) = p.turns.last_mut() {
                        t.content = text.clone();
                    }
                }
                None => {
                    p.pop_exchange(true);
                }
            }
        }
        if !pairs.is_empty() {
            self.ops.push_back(FileOp::Append(path, j.id, pairs));
            self.pump(waker);
        }
    }

    /// Takes the last judgment back: out of the tally and the file, its replies shown
    /// again for a new verdict.
    pub fn undo(&mut self, waker: &Waker) {
        if self.is_generating() {
            return;
        }
        let Some(k) = self.kept.pop() else {
            return;
        };
        self.tally.remove(k.outcome);
        let [a, b] = k.turns_before;
        self.panes[0].turns = a;
        self.panes[1].turns = b;
        self.prompt_index = k.prompt_index;
        self.judged = k.judged_before;
        self.swapped = k.swapped;
        self.draft = None;
        if k.pairs > 0 {
            // From the file it went to, even if the path was changed since.
            self.ops.push_back(FileOp::Remove(k.path, k.id));
            self.pump(waker);
        }
    }

    /// Drops the unrated exchange without a judgment.
    fn skip(&mut self) {
        self.draft = None;
        self.judged = self.prompt_index;
        for p in &mut self.panes {
            p.pop_exchange(true);
        }
    }

    /// Draws the view. `from` are the Conversation view's panes (the models a session
    /// starts on).
    pub fn ui(
        &mut self,
        ui: &mut egui::Ui,
        model: &ModelSlot,
        from: &[ChatPane],
        settings: &BlindSettings<'_>,
        waker: &Waker,
    ) {
        if !self.is_started() {
            self.intro_ui(ui, from);
            return;
        }
        match self.session_ui(ui, from) {
            Some(SessionAction::Undo) => self.undo(waker),
            Some(SessionAction::Restart) => self.start(from),
            None => {}
        }
        ui.separator();
        let height = (ui.available_height() - 150.0).max(100.0);
        let revealed = self.revealed;
        let names = [self.model_name(0), self.model_name(1)];
        let order = [self.model_on(0), self.model_on(1)];
        ui.columns(2, |cols| {
            for (side, ui) in cols.iter_mut().enumerate() {
                let m = order[side];
                ui.push_id(("blind-pane", side), |ui| {
                    let side_name = if side == 0 { "A" } else { "B" };
                    if revealed {
                        ui.strong(format!("{side_name} · Model {} · {}", m + 1, names[m]));
                    } else {
                        ui.strong(side_name);
                    }
                    ui.separator();
                    let _ = self.panes[m].conversation_ui(ui, height, None, settings.markdown);
                });
            }
        });
        ui.separator();
        if let Some(model) = model.model() {
            self.controls_ui(ui, model, settings, waker);
        } else {
            ui.weak("No model loaded. Load one in the Models tab.");
        }
    }

    fn intro_ui(&mut self, ui: &mut egui::Ui, from: &[ChatPane]) {
        ui.label(
            "Blind A/B: the first two panes' models answer each prompt under the names A and \
             B, in an order shuffled per prompt. Rate the replies; each judgment is kept as a \
             preference pair in a file.",
        );
        if from.len() < 2 {
            ui.weak(
                "Choose 2 panes in the Conversation view and pick their models (the base, or \
                 an adapter) first.",
            );
        }
        if ui
            .add_enabled(from.len() >= 2, egui::Button::new("Start blind session"))
            .clicked()
        {
            self.start(from);
        }
    }

    /// The file, the seed, the tally and the session buttons.
    fn session_ui(&mut self, ui: &mut egui::Ui, from: &[ChatPane]) -> Option<SessionAction> {
        let mut action = None;
        ui.horizontal(|ui| {
            super::fields::labelled_line(
                ui,
                "Preference file",
                &mut self.path,
                "preferences.jsonl",
                360.0,
            );
            ui.weak(format!("order seed {}", self.order_seed))
                .on_hover_text("The sides of prompt i are swapped when one bit of SplitMix64(seed, i) is set; it is recorded in every pair");
            if !self.status.is_empty() {
                ui.weak(&self.status);
            }
            if self.is_writing() {
                ui.add(Busy);
            }
        });
        ui.horizontal_wrapped(|ui| {
            ui.label(self.tally_line());
            ui.separator();
            let reveal = if self.revealed {
                "Hide names"
            } else {
                "Reveal names"
            };
            if ui.button(reveal).clicked() {
                self.revealed = !self.revealed;
            }
            let can_undo = !self.kept.is_empty() && !self.is_generating();
            if ui
                .add_enabled(can_undo, egui::Button::new("Undo last judgment"))
                .on_hover_text("Takes it out of the tally and the file and shows its replies again")
                .clicked()
            {
                action = Some(SessionAction::Undo);
            }
            if ui
                .add_enabled(
                    !self.is_generating() && from.len() >= 2,
                    egui::Button::new("New session"),
                )
                .on_hover_text(
                    "Starts over on the Conversation view's first two panes (the file keeps \
                     what was written)",
                )
                .clicked()
            {
                action = Some(SessionAction::Restart);
            }
        });
        action
    }

    /// The rating buttons, the draft of the chosen reply, or the message box.
    fn controls_ui(
        &mut self,
        ui: &mut egui::Ui,
        model: &Arc<Model>,
        settings: &BlindSettings<'_>,
        waker: &Waker,
    ) {
        if let Some(draft) = &mut self.draft {
            let mut keep = false;
            let mut cancel = false;
            ui.horizontal(|ui| {
                ui.strong(draft.verdict.label());
                ui.weak(match draft.verdict {
                    Verdict::A | Verdict::B => {
                        "Edit the better reply if you like; it is kept as the chosen reply."
                    }
                    Verdict::Tie | Verdict::BothBad => {
                        "Counted in the tally. Write a better reply to keep it as chosen over both."
                    }
                });
            });
            ui.horizontal(|ui| {
                let label = ui.label("Chosen reply");
                ui.add(
                    egui::TextEdit::multiline(&mut draft.text)
                        .hint_text("(optional) a better reply")
                        .desired_rows(3)
                        .desired_width(ui.available_width() - 140.0),
                )
                .labelled_by(label.id);
                ui.vertical(|ui| {
                    keep = ui.button("Keep").clicked();
                    cancel = ui.button("Cancel").clicked();
                });
            });
            if keep {
                self.keep(waker);
            } else if cancel {
                self.draft = None;
            }
            return;
        }
        if self.awaiting_verdict() {
            let mut picked = None;
            let mut skip = false;
            ui.horizontal(|ui| {
                ui.label("Which reply is better?");
                for v in [Verdict::A, Verdict::B, Verdict::Tie, Verdict::BothBad] {
                    if ui.button(v.label()).clicked() {
                        picked = Some(v);
                    }
                }
                ui.separator();
                skip = ui
                    .button("Skip")
                    .on_hover_text("Drops this prompt and its replies without a judgment")
                    .clicked();
            });
            if let Some(v) = picked {
                self.pick(v);
            } else if skip {
                self.skip();
            }
            return;
        }
        let busy = self.is_generating();
        // A side that failed leaves its prompt unanswered: skip it before the next one.
        let unanswered = !busy
            && self
                .panes
                .iter()
                .any(|p| p.turns.last().is_some_and(|t| t.role == "user"));
        let can_send = !busy && !unanswered && !self.input.trim().is_empty();
        let input_id = egui::Id::unique("blind-ab-input");
        let enter = ui.memory(|m| m.has_focus(input_id))
            && ui.input_mut(|i| i.consume_key(egui::Modifiers::NONE, egui::Key::Enter));
        let mut send = enter && can_send;
        ui.horizontal(|ui| {
            let label = ui.label("Message");
            ui.add(
                egui::TextEdit::multiline(&mut self.input)
                    .id(input_id)
                    .hint_text("Sent to both models with the same seed (Enter sends)")
                    .desired_rows(2)
                    .desired_width(ui.available_width() - 210.0),
            )
            .labelled_by(label.id);
            if ui
                .add_enabled(can_send, egui::Button::new("Send"))
                .clicked()
            {
                send = true;
            }
            if ui.add_enabled(busy, egui::Button::new("■ Stop")).clicked() {
                self.panes.iter().for_each(ChatPane::stop);
            }
            if unanswered && ui.button("Skip").clicked() {
                self.skip();
            }
        });
        if send {
            self.send(model, settings, waker);
        }
    }

    /// The tally in words: model 1's win rate with its interval, ties and "both bad".
    pub fn tally_line(&self) -> String {
        let t = &self.tally;
        let name = |m: usize| {
            if self.revealed {
                format!("Model {} ({})", m + 1, self.model_name(m))
            } else {
                format!("Model {}", m + 1)
            }
        };
        let head = match t.win_rate(0) {
            Some(r) => format!(
                "{} wins {} of {} ({:.0} %, 95 % CI {:.0}–{:.0} %) against {}",
                name(0),
                r.wins,
                r.decisive,
                r.rate * 100.0,
                r.low * 100.0,
                r.high * 100.0,
                name(1)
            ),
            None => format!("{} against {}: no decisive judgment yet", name(0), name(1)),
        };
        format!("{head} · {} ties · {} both bad", t.ties, t.both_bad)
    }
}
