//! One chat reply generated on its own named thread. The job renders the conversation
//! with the model's chat template, reads the pane's adapter from its folder when it is
//! not loaded yet, and streams text pieces back over a bounded channel, waking the UI
//! after each send. Every pane runs its own job on the one shared `Arc<Model>`; an adapter
//! is a `LoraSet` applied on the same base weights, so a tuned pane copies no weights.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

use super::Waker;
use crate::infer::{GenerateRequest, Generation, GenerationStats, Sampling, StopReason};
use crate::model::lora::LoraSet;
use crate::model::{ChatMessage, Model};

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
    /// An adapter already read.
    Loaded(Arc<LoraSet>),
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
}

/// A reply being generated.
pub struct ChatJob {
    pub events: Receiver<ChatEvent>,
    cancel: Arc<AtomicBool>,
}

impl ChatJob {
    /// Asks the thread to stop after its current token.
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }
}

impl Drop for ChatJob {
    fn drop(&mut self) {
        // Nobody reads the reply any more.
        self.cancel();
    }
}

/// Starts generating on a thread named `chat-<name>`.
pub fn spawn(req: ChatRequest, name: &str, waker: Waker) -> ChatJob {
    let (tx, rx) = crossbeam_channel::bounded(CAPACITY);
    let cancel = Arc::new(AtomicBool::new(false));
    let job = ChatJob {
        events: rx,
        cancel: cancel.clone(),
    };
    let fail_tx = tx.clone();
    let fail_waker = waker.clone();
    let spawned = std::thread::Builder::new()
        .name(format!("chat-{name}"))
        .spawn(move || {
            let sink = Sink { tx, waker, cancel };
            if let Err(e) = run(req, &sink) {
                sink.send(ChatEvent::Failed(e));
            }
        });
    if let Err(e) = spawned {
        let _ = fail_tx.try_send(ChatEvent::Failed(format!(
            "cannot start the generation thread: {e}"
        )));
        fail_waker.wake();
    }
    job
}

struct Sink {
    tx: Sender<ChatEvent>,
    waker: Waker,
    cancel: Arc<AtomicBool>,
}

impl Sink {
    fn send(&self, e: ChatEvent) {
        if self.tx.send(e).is_err() {
            // The pane is gone: stop generating for it.
            self.cancel.store(true, Ordering::Relaxed);
        }
        self.waker.wake();
    }
}

fn run(req: ChatRequest, sink: &Sink) -> Result<(), String> {
    let model = &req.model;
    let lora = match req.adapter {
        AdapterSpec::None => None,
        AdapterSpec::Loaded(l) => Some(l),
        AdapterSpec::Folder(dir) => {
            let lora = read_adapter(model, &dir)?;
            sink.send(ChatEvent::Adapter {
                dir,
                lora: lora.clone(),
            });
            Some(lora)
        }
    };
    let generation = generate_reply(
        model,
        lora.as_deref(),
        &req.messages,
        &req.sampling,
        req.max_new_tokens,
        &sink.cancel,
        &mut |piece| sink.send(ChatEvent::Text(piece.to_string())),
    )?;
    sink.send(ChatEvent::Done {
        stop_reason: generation.stop_reason,
        stats: generation.stats,
    });
    Ok(())
}

/// Reads the PEFT adapter in `dir` for `model`.
pub fn read_adapter(model: &Model, dir: &Path) -> Result<Arc<LoraSet>, String> {
    let read = crate::export::peft::read_adapter(dir, model.config(), model.transformer.device())
        .map_err(|e| format!("reading the adapter in {}: {e}", dir.display()))?;
    Ok(Arc::new(read.lora))
}

/// Renders `messages` with the model's chat template and generates the reply, passing
/// each text piece to `on_text`. Blocks until the reply ends or `cancel` is set.
pub fn generate_reply(
    model: &Model,
    lora: Option<&LoraSet>,
    messages: &[ChatMessage],
    sampling: &Sampling,
    max_new_tokens: usize,
    cancel: &AtomicBool,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation, String> {
    let prompt_ids = model
        .encode_chat(messages, true)
        .map_err(|e| format!("applying the chat template: {e}"))?;
    let gen_req = GenerateRequest {
        prompt_ids,
        sampling: sampling.clone(),
        max_new_tokens,
        stop_strings: Vec::new(),
        quantized: model.transformer.has_quantized_copy(),
    };
    crate::infer::generate(model, lora, &gen_req, cancel, on_text)
        .map_err(|e| format!("generating: {e}"))
}
