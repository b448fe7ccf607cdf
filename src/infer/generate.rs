//! The generation loop: prefill the prompt, then decode one token at a time through the KV
//! cache, streaming text pieces to a callback until a stop token, a stop string, the token
//! limit or cancellation. Reports time to first token and tokens/s.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::sampler::{Sampler, Sampling};
use super::stream::TokenStream;
use crate::model::lora::LoraSet;
use crate::model::{Cache, Forward, Model, ModelError};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GenerateRequest {
    pub prompt_ids: Vec<u32>,
    pub sampling: Sampling,
    pub max_new_tokens: usize,
    /// Extra stop strings; the model's end-of-turn tokens always stop.
    pub stop_strings: Vec<String>,
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    StopToken,
    StopString,
    MaxTokens,
    Cancelled,
}

/// Timing of one generation.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct GenerationStats {
    pub prompt_tokens: usize,
    pub generated_tokens: usize,
    /// Prompt submitted to first token chosen.
    pub ttft_ms: f64,
    pub prompt_tokens_per_s: f64,
    /// Tokens after the first, per second of decoding.
    pub decode_tokens_per_s: f64,
}

/// The result of a generation.
#[derive(Debug, Clone)]
pub struct Generation {
    /// Generated ids, the stop token excluded.
    pub ids: Vec<u32>,
    pub text: String,
    pub stop_reason: StopReason,
    pub stats: GenerationStats,
}

/// Length of the longest suffix of `text` that is a proper prefix of some stop string.
fn pending_stop_prefix(text: &str, stops: &[String]) -> usize {
    let mut hold = 0;
    for s in stops {
        for n in (1..s.len()).rev() {
            if n <= text.len()
                && text.is_char_boundary(text.len() - n)
                && s.is_char_boundary(n)
                && text.ends_with(&s[..n])
            {
                hold = hold.max(n);
                break;
            }
        }
    }
    hold
}

/// Generates a reply to `req.prompt_ids`, calling `on_text` with each new piece of text.
/// `cancel` is polled between tokens.
pub fn generate(
    model: &Model,
    lora: Option<&LoraSet>,
    req: &GenerateRequest,
    cancel: &AtomicBool,
    on_text: &mut dyn FnMut(&str),
) -> Result<Generation, ModelError> {
    // The caller's stop strings and the template's (a named template's next-turn marker).
    let stop_strings: Vec<String> = req
        .stop_strings
        .iter()
        .chain(model.template.stop_strings())
        .cloned()
        .collect();
    let mut cache = Cache::new(model.config());
    let mut sampler = Sampler::new(req.sampling.clone());
    let mut history = req.prompt_ids.clone();
    let mut stream = TokenStream::new(&model.tokenizer, true);
    let mut ids = Vec::new();
    let mut text = String::new();
    let mut emitted = 0usize;
    let mut stats = GenerationStats {
        prompt_tokens: req.prompt_ids.len(),
        ..Default::default()
    };
    if req.prompt_ids.is_empty() {
        return Err(ModelError::Fetch("the prompt is empty".into()));
    }
    let max_ctx = model.config().max_position_embeddings;
    let max_new = req
        .max_new_tokens
        .min(max_ctx.saturating_sub(req.prompt_ids.len()));

    let t0 = Instant::now();
    let mut logits = next_logits(model, &req.prompt_ids, &mut cache, lora)?;
    let mut next = sampler.sample(&mut logits, &history);
    let prefill_s = t0.elapsed().as_secs_f64();
    stats.ttft_ms = prefill_s * 1000.0;
    stats.prompt_tokens_per_s = req.prompt_ids.len() as f64 / prefill_s.max(1e-9);

    let t_decode = Instant::now();
    let mut reason = StopReason::MaxTokens;
    let mut steps = 0usize;
    while ids.len() < max_new {
        if model.stop_token_ids.contains(&next) {
            reason = StopReason::StopToken;
            break;
        }
        ids.push(next);
        history.push(next);
        if let Some(piece) = stream.push(next)? {
            text.push_str(&piece);
            if let Some(pos) = stop_strings
                .iter()
                .filter_map(|s| text.find(s.as_str()))
                .min()
            {
                text.truncate(pos);
                if text.len() > emitted {
                    on_text(&text[emitted..]);
                }
                emitted = text.len();
                reason = StopReason::StopString;
                break;
            }
            let safe = text.len() - pending_stop_prefix(&text, &stop_strings);
            if safe > emitted {
                on_text(&text[emitted..safe]);
                emitted = safe;
            }
        }
        if cancel.load(Ordering::Relaxed) {
            reason = StopReason::Cancelled;
            break;
        }
        if ids.len() >= max_new {
            break;
        }
        logits = next_logits(model, &[next], &mut cache, lora)?;
        next = sampler.sample(&mut logits, &history);
        steps += 1;
    }
    let decode_s = t_decode.elapsed().as_secs_f64();
    if reason != StopReason::StopString {
        if let Some(rest) = stream.finish()? {
            text.push_str(&rest);
        }
        if text.len() > emitted {
            on_text(&text[emitted..]);
        }
    }
    stats.generated_tokens = ids.len();
    stats.decode_tokens_per_s = if steps > 0 {
        steps as f64 / decode_s.max(1e-9)
    } else {
        0.0
    };
    Ok(Generation {
        ids,
        text,
        stop_reason: reason,
        stats,
    })
}

/// The logits of the token that would follow `prompt_ids` (a fresh cache; nothing is
/// generated): what a judge scores its answer letters with.
pub fn next_token_logits(
    model: &Model,
    lora: Option<&LoraSet>,
    prompt_ids: &[u32],
) -> Result<Vec<f32>, ModelError> {
    if prompt_ids.is_empty() {
        return Err(ModelError::Fetch("the prompt is empty".into()));
    }
    let mut cache = Cache::new(model.config());
    Ok(next_logits(model, prompt_ids, &mut cache, lora)?)
}

/// Runs `ids` after what `cache` holds and returns the next token's logits, on the compute
/// pool: a decode step is a few hundred small parallel products, and a pool whose threads
/// sleep between them halved the default model's tokens/s (78 against 185).
fn next_logits(
    model: &Model,
    ids: &[u32],
    cache: &mut Cache,
    lora: Option<&LoraSet>,
) -> candle_core::Result<Vec<f32>> {
    crate::ops::runtime::on_compute_pool(|| {
        let input = Tensor::new(ids, model.transformer.device())?.unsqueeze(0)?;
        let hidden = model.transformer.forward(
            &input,
            Forward {
                cache: Some(cache),
                lora,
                ..Default::default()
            },
        )?;
        model
            .transformer
            .last_logits(&hidden)?
            .squeeze(0)?
            .to_vec1()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_back_partial_stop_strings() {
        let stops = vec!["</answer>".to_string()];
        assert_eq!(pending_stop_prefix("hello </ans", &stops), 5);
        assert_eq!(pending_stop_prefix("hello", &stops), 0);
        assert_eq!(pending_stop_prefix("é<", &stops), 1);
    }
}
