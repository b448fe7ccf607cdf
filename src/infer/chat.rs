//! One reply to a conversation: the model's chat template applied to the messages, then
//! [`super::generate`]. The Chat tab's panes, batch compare and the preference-pair
//! builder (`train::pairs`) all answer a conversation through [`chat_reply`].

use std::sync::atomic::AtomicBool;

use super::generate::{generate, GenerateRequest, Generation};
use super::sampler::Sampling;
use crate::model::lora::LoraSet;
use crate::model::{ChatMessage, Model};

/// Renders `messages` with the model's chat template and generates the reply, passing
/// each text piece to `on_text`. Blocks until the reply ends or `cancel` is set.
pub fn chat_reply(
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
    let req = GenerateRequest {
        prompt_ids,
        sampling: sampling.clone(),
        max_new_tokens,
        stop_strings: Vec::new(),
    };
    generate(model, lora, &req, cancel, on_text).map_err(|e| format!("generating: {e}"))
}
