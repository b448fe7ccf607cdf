//! One pane of the Chat tab: which model it talks to (the base, or the base plus an
//! adapter from a run, a checkpoint or a typed folder), its own conversation, and the
//! reply streaming in from its generation thread.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use eframe::egui;
use serde::Serialize;

use super::add_example::{add_button, DatasetTarget, ExampleDraft};
use super::busy::Busy;
use crate::data::{Message, Role};
use crate::infer::{GenerationStats, Sampling, StopReason};
use crate::model::lora::LoraSet;
use crate::model::{ChatMessage, Model};
use crate::train::runs::RunInfo;
use crate::worker::chat_job::{self, AdapterSpec, ChatEvent, ChatJob, ChatRequest, TemplateSpec};
use crate::worker::Waker;

/// One message of a pane's conversation.
#[derive(Debug, Clone, Serialize)]
pub struct Turn {
    pub role: String,
    pub content: String,
    /// For replies: why the reply ended (`None` while it streams).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stop_reason: Option<StopReason>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stats: Option<GenerationStats>,
}

impl Turn {
    fn new(role: &str, content: &str) -> Self {
        Turn {
            role: role.into(),
            content: content.into(),
            stop_reason: None,
            stats: None,
        }
    }
}

/// A chat pane.
#[derive(Default)]
pub struct ChatPane {
    /// Generate with an adapter on the base weights.
    pub use_adapter: bool,
    /// The adapter folder (picked from a run or typed).
    pub adapter_dir: String,
    /// The adapter read for `adapter_dir`, with the base model it was read for (its
    /// address: a reloaded model reads the adapter again).
    loaded: Option<(PathBuf, usize, Arc<LoraSet>)>,
    /// The base model of the running job, by address.
    job_model: usize,
    pub turns: Vec<Turn>,
    job: Option<ChatJob>,
    pub error: Option<String>,
    /// Leave out each reply's speed line (blind A/B: an adapter's pane is slower, which
    /// would tell the sides apart).
    pub hide_stats: bool,
    /// Layout state of the Markdown renderer (code-block scroll areas and the like).
    markdown_cache: egui_commonmark::CommonMarkCache,
}

/// The adapter folders the runs offer: each run's final adapter and its checkpoints.
pub fn adapter_choices(runs: &[RunInfo]) -> Vec<(String, PathBuf)> {
    let mut out = Vec::new();
    for r in runs {
        if r.has_adapter {
            out.push((format!("{} · final", r.name), r.path.join("adapter")));
        }
        for step in r.checkpoints.iter().rev() {
            out.push((
                format!("{} · step {step}", r.name),
                r.path.join("checkpoints").join(format!("step-{step}")),
            ));
        }
    }
    out
}

fn short_name(dir: &Path) -> String {
    // `<run>/adapter` and `<run>/checkpoints/step-N` read better with the run's name.
    let name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default()
    };
    match dir.parent() {
        Some(parent) if name(dir) == "adapter" => name(parent),
        Some(parent) if name(parent) == "checkpoints" => match parent.parent() {
            Some(run) => format!("{} {}", name(run), name(dir)),
            None => name(dir),
        },
        _ => name(dir),
    }
}

impl ChatPane {
    /// A pane on the base model.
    pub fn base() -> Self {
        Self::default()
    }

    /// A pane on the base plus the adapter in `dir`.
    pub fn with_adapter(dir: &Path) -> Self {
        ChatPane {
            use_adapter: true,
            adapter_dir: dir.display().to_string(),
            ..Self::default()
        }
    }

    /// What the pane talks to, in a few words.
    pub fn label(&self) -> String {
        let dir = self.adapter_dir.trim();
        if self.use_adapter && !dir.is_empty() {
            format!("Base + {}", short_name(Path::new(dir)))
        } else if self.use_adapter {
            "Base + adapter (none chosen)".into()
        } else {
            "Base model".into()
        }
    }

    pub fn is_generating(&self) -> bool {
        self.job.is_some()
    }

    /// The last reply, if the conversation ends with one.
    pub fn last_reply(&self) -> Option<&Turn> {
        self.turns.last().filter(|t| t.role == "assistant")
    }

    /// The adapter to generate with on the model at address `model`, or why there is none.
    pub(super) fn adapter_spec(&self, model: usize) -> Result<AdapterSpec, String> {
        if !self.use_adapter {
            return Ok(AdapterSpec::None);
        }
        let dir = self.adapter_dir.trim();
        if dir.is_empty() {
            return Err("choose an adapter (a run, a checkpoint or a folder)".into());
        }
        let dir = PathBuf::from(dir);
        Ok(match &self.loaded {
            Some((d, m, lora)) if *d == dir && *m == model => AdapterSpec::Loaded {
                dir,
                lora: lora.clone(),
            },
            _ => AdapterSpec::Folder(dir),
        })
    }

    /// Adds `prompt` as a user turn and starts a reply.
    pub fn send(&mut self, prompt: &str, gen: &GenSettings<'_>) {
        self.turns.push(Turn::new("user", prompt));
        self.reply(gen);
    }

    /// Generates a reply to the conversation, which ends with a user turn.
    pub fn reply(&mut self, gen: &GenSettings<'_>) {
        self.job = None;
        self.error = None;
        let model_key = Arc::as_ptr(gen.model) as usize;
        let adapter = match self.adapter_spec(model_key) {
            Ok(a) => a,
            Err(e) => {
                self.error = Some(e);
                return;
            }
        };
        let mut messages = Vec::new();
        if !gen.system.trim().is_empty() {
            messages.push(ChatMessage::new("system", gen.system));
        }
        messages.extend(
            self.turns
                .iter()
                .map(|t| ChatMessage::new(t.role.as_str(), t.content.as_str())),
        );
        self.turns.push(Turn::new("assistant", ""));
        let req = ChatRequest {
            model: gen.model.clone(),
            adapter,
            messages,
            sampling: gen.sampling.clone(),
            max_new_tokens: gen.max_new_tokens,
            template: gen.template.clone(),
        };
        self.job_model = model_key;
        self.job = Some(chat_job::spawn(req, gen.name, gen.waker.clone()));
    }

    /// Removes the last reply (and, with `user`, the prompt before it). Returns the prompt
    /// removed.
    pub fn pop_exchange(&mut self, user: bool) -> Option<String> {
        self.stop();
        self.job = None;
        if self.last_reply().is_some() {
            self.turns.pop();
        }
        if user && self.turns.last().is_some_and(|t| t.role == "user") {
            return self.turns.pop().map(|t| t.content);
        }
        None
    }

    pub fn stop(&self) {
        if let Some(job) = &self.job {
            job.cancel();
        }
    }

    pub fn clear(&mut self) {
        self.job = None;
        self.turns.clear();
        self.error = None;
    }

    /// Takes the generation thread's events. Returns true while a reply streams.
    pub fn poll(&mut self) -> bool {
        let Some(mut job) = self.job.take() else {
            return false;
        };
        let mut ended = false;
        while let Some(e) = job.try_recv() {
            match e {
                ChatEvent::Adapter { dir, lora } => self.loaded = Some((dir, self.job_model, lora)),
                ChatEvent::Text(piece) => {
                    if let Some(t) = self.turns.last_mut() {
                        t.content.push_str(&piece);
                    }
                }
                ChatEvent::Done { stop_reason, stats } => {
                    if let Some(t) = self.turns.last_mut() {
                        t.stop_reason = Some(stop_reason);
                        t.stats = Some(stats);
                    }
                    ended = true;
                }
                ChatEvent::Failed(e) => {
                    if self.turns.last().is_some_and(|t| t.content.is_empty()) {
                        self.turns.pop();
                    }
                    self.error = Some(e);
                    ended = true;
                }
            }
            if ended {
                break;
            }
        }
        if !ended {
            self.job = Some(job);
        }
        self.job.is_some()
    }

    /// The pane's header: the model choice (fixed while `locked` or generating).
    pub fn header_ui(&mut self, ui: &mut egui::Ui, choices: &[(String, PathBuf)], locked: bool) {
        let busy = locked || self.is_generating();
        ui.horizontal(|ui| {
            ui.add_enabled_ui(!busy, |ui| {
                ui.selectable_value(&mut self.use_adapter, false, "Base model");
                ui.selectable_value(&mut self.use_adapter, true, "Base + adapter");
            });
        });
        if self.use_adapter {
            ui.add_enabled_ui(!busy, |ui| {
                ui.horizontal(|ui| {
                    egui::ComboBox::from_id_salt("adapter-choice")
                        .selected_text("Runs…")
                        .show_ui(ui, |ui| {
                            if choices.is_empty() {
                                ui.weak("No run has an adapter yet.");
                            }
                            for (label, dir) in choices {
                                if ui.selectable_label(false, label).clicked() {
                                    self.adapter_dir = dir.display().to_string();
                                }
                            }
                        });
                    ui.add(
                        egui::TextEdit::singleline(&mut self.adapter_dir)
                            .hint_text("adapter folder (PEFT layout)")
                            .desired_width(f32::INFINITY),
                    );
                })
            });
        }
        ui.strong(self.label());
    }

    /// The conversation, newest at the bottom. Returns the reply whose "Add to dataset"
    /// was clicked, by turn index.
    pub fn conversation_ui(
        &mut self,
        ui: &mut egui::Ui,
        height: f32,
        target: Option<&DatasetTarget>,
        markdown: bool,
    ) -> Option<usize> {
        let generating = self.is_generating();
        let n = self.turns.len();
        let mut add = None;
        egui::ScrollArea::vertical()
            .max_height(height)
            .min_scrolled_height(height)
            .auto_shrink([false, false])
            .stick_to_bottom(true)
            .show(ui, |ui| {
                if self.turns.is_empty() {
                    ui.weak("No messages yet.");
                }
                for (i, t) in self.turns.iter().enumerate() {
                    let user = t.role == "user";
                    ui.horizontal(|ui| {
                        ui.strong(if user { "You" } else { "Assistant" });
                        if !user && !t.content.is_empty() {
                            if ui.small_button("Copy").clicked() {
                                ui.ctx().copy_text(t.content.clone());
                            }
                            let streaming = generating && i + 1 == n;
                            if add_button(ui, target, !streaming) {
                                add = Some(i);
                            }
                        }
                    });
                    if markdown && !user {
                        egui_commonmark::CommonMarkViewer::new().show(
                            ui,
                            &mut self.markdown_cache,
                            &t.content,
                        );
                    } else {
                        ui.add(egui::Label::new(t.content.as_str()).wrap());
                    }
                    if !user {
                        if generating && i + 1 == n {
                            ui.horizontal(|ui| {
                                ui.add(Busy);
                                ui.weak("generating…");
                            });
                        } else if !self.hide_stats {
                            ui.weak(reply_line(t));
                        }
                    }
                    ui.add_space(6.0);
                }
                if let Some(e) = &self.error {
                    ui.colored_label(ui.visuals().error_fg_color, e);
                }
            });
        add
    }

    /// The example that adding reply `turn` would make: the turns before its prompt, the
    /// prompt, and the reply.
    pub fn draft(&self, turn: usize, system: &str) -> Option<ExampleDraft> {
        let reply = self.turns.get(turn).filter(|t| t.role == "assistant")?;
        let prompt_at = turn.checked_sub(1)?;
        let prompt = self.turns.get(prompt_at).filter(|t| t.role == "user")?;
        let history = self.turns[..prompt_at]
            .iter()
            .filter_map(|t| Role::parse_any(&t.role).map(|r| Message::new(r, t.content.as_str())))
            .collect();
        Some(ExampleDraft {
            source: self.label(),
            system: system.trim().to_string(),
            history,
            prompt: prompt.content.clone(),
            reply: reply.content.clone(),
        })
    }
}

/// Tokens/s and how the reply ended, in one line.
fn reply_line(t: &Turn) -> String {
    let Some(s) = &t.stats else {
        return String::new();
    };
    let why = match t.stop_reason {
        Some(StopReason::Cancelled) => " · stopped",
        Some(StopReason::MaxTokens) => " · token limit",
        _ => "",
    };
    format!(
        "{:.1} tok/s · {} tokens · first token {:.0} ms{why}",
        s.decode_tokens_per_s, s.generated_tokens, s.ttft_ms
    )
}

/// What every pane generates with.
pub struct GenSettings<'a> {
    pub model: &'a Arc<Model>,
    pub template: &'a TemplateSpec,
    pub system: &'a str,
    pub sampling: &'a Sampling,
    pub max_new_tokens: usize,
    pub waker: &'a Waker,
    /// Names the generation thread.
    pub name: &'a str,
}
