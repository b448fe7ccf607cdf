//! One chat reply generated on its own job thread. The job renders the conversation
//! with the chat template the pane chose (the model's own, or with an adapter the one its
//! run trained with; a named one; a file) and its thinking switch, reads the pane's
//! adapter from its folder when it is not loaded yet, and streams text pieces back over a
//! bounded channel, waking the UI after each send. Every pane runs its own job on the one shared `Arc<Model>`; an adapter
//! is a `LoraSet` applied on the same base weights, so a tuned pane copies no weights.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::infer::{GenerationStats, Sampling, StopReason};
use crate::jobs::{self, JobEvent, JobEvents, JobKind, Reporter, Waker};
use crate::model::lora::LoraSet;
use crate::model::{ChatMessage, Model};
use crate::text::TemplateChoice;

/// How many events may wait before the generating thread waits for the UI.
const CAPACITY: usize = 1024;

/// What a chat job reports.
#[derive(Debug)]
pub enum ChatEvent {
    /// The adapter read from `dir`, for the pane to keep for its next replies.
    Adapter {
        dir: PathBuf,
        lora: Arc<LoraSet>,
    },
    /// A new piece of the reply.
    Text(String),
    /// The reply ended.
    Done {
        stop_reason: StopReason,
        stats: GenerationStats,
    },
    Failed(String),
}

/// The adapter a pane generates with.
#[derive(Debug, Clone)]
pub enum AdapterSpec {
    /// The base model alone.
    None,
    /// An adapter already read from `dir`.
    Loaded { dir: PathBuf, lora: Arc<LoraSet> },
    /// A PEFT adapter folder to read first.
    Folder(PathBuf),
}

/// One reply to generate.
pub struct ChatRequest {
    pub model: Arc<Model>,
    pub adapter: AdapterSpec,
    /// The conversation so far: system (if any), then alternating user / assistant turns
    /// ending with a user turn.
    pub messages: Vec<ChatMessage>,
    pub sampling: Sampling,
    pub max_new_tokens: usize,
    pub template: TemplateSpec,
}

impl AdapterSpec {
    /// The adapter's folder, when there is an adapter.
    pub fn dir(&self) -> Option<&Path> {
        match self {
            AdapterSpec::None => None,
            AdapterSpec::Loaded { dir, .. } | AdapterSpec::Folder(dir) => Some(dir),
        }
    }
}

/// The chat template a reply is rendered with.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TemplateSpec {
    /// `Own`: the model's, or the adapter's (what its run trained with).
    pub choice: TemplateChoice,
    /// `enable_thinking` for templates with the switch; the template's default when `None`.
    pub thinking: Option<bool>,
}

/// `model` with the template of `spec` for the adapter in `adapter_dir` (the model itself
/// when that changes nothing).
pub fn templated(
    model: &Arc<Model>,
    spec: &TemplateSpec,
    adapter_dir: Option<&Path>,
) -> Result<Arc<Model>, String> {
    match crate::adapter::templated_model(model, adapter_dir, &spec.choice, spec.thinking) {
        Ok(Some(t)) => {
            for w in &t.warnings {
                tracing::warn!("{w}");
            }
            Ok(Arc::new(t.model))
        }
        Ok(None) => Ok(model.clone()),
        Err(e) => Err(format!("the chat template: {e}")),
    }
}

impl JobEvent for ChatEvent {
    fn failed(_kind: JobKind, error: String) -> Self {
        ChatEvent::Failed(error)
    }
    fn is_final(&self) -> bool {
        matches!(self, ChatEvent::Done { .. } | ChatEvent::Failed(_))
    }
}

/// A reply being generated; dropping it stops the generation after its current token.
pub type ChatJob = JobEvents<ChatEvent>;

/// Starts generating on a job thread named `chat-<name>`.
pub fn spawn(req: ChatRequest, name: &str, waker: Waker) -> ChatJob {
    jobs::spawn(
        JobKind::Chat,
        format!("chat-{name}"),
        CAPACITY,
        waker,
        move |r| run(req, r).map_err(anyhow::Error::msg),
    )
}

fn run(req: ChatRequest, sink: &Reporter<ChatEvent>) -> Result<ChatEvent, String> {
    let model = &templated(&req.model, &req.template, req.adapter.dir())?;
    let lora = match req.adapter {
        AdapterSpec::None => None,
        AdapterSpec::Loaded { lora, .. } => Some(lora),
        AdapterSpec::Folder(dir) => {
            let lora = read_adapter(model, &dir)?;
            sink.send(ChatEvent::Adapter {
                dir,
                lora: lora.clone(),
            });
            Some(lora)
        }
    };
    let generation = crate::infer::chat_reply(
        model,
        lora.as_deref(),
        &req.messages,
        &req.sampling,
        req.max_new_tokens,
        sink.cancel_flag(),
        &mut |piece| sink.send(ChatEvent::Text(piece.to_string())),
    )?;
    Ok(ChatEvent::Done {
        stop_reason: generation.stop_reason,
        stats: generation.stats,
    })
}

/// Reads the PEFT adapter in `dir` for `model`.
pub fn read_adapter(model: &Model, dir: &Path) -> Result<Arc<LoraSet>, String> {
    let read = crate::adapter::read_adapter(dir, model.config(), model.transformer.device())
        .map_err(|e| format!("reading the adapter in {}: {e}", dir.display()))?;
    Ok(Arc::new(read.lora))
}
