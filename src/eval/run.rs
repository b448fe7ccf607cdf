//! Running a suite: each prompt rendered with the model's chat template and answered by
//! the project's generation loop (`infer::generate`, greedy unless the options say
//! otherwise), with the base model alone or an adapter on its weights, then judged.

use std::sync::atomic::{AtomicBool, Ordering};

use super::report::{PromptResult, RunInfo, SuiteReport};
use super::suite::Suite;
use crate::infer::{GenerateRequest, Sampling};
use crate::model::lora::LoraSet;
use crate::model::{ChatMessage, Model};

/// How replies are generated.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOptions {
    pub max_new_tokens: usize,
    /// Greedy by default.
    pub sampling: Sampling,
}

impl Default for RunOptions {
    fn default() -> Self {
        RunOptions {
            max_new_tokens: 256,
            sampling: Sampling::greedy(),
        }
    }
}

/// Why a suite run stopped without a report.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("prompt `{id}` (line {line} of {suite}): {message}")]
    Prompt {
        suite: String,
        id: String,
        line: usize,
        message: String,
    },
    #[error("the suite run was cancelled")]
    Cancelled,
}

/// Generates a reply to every prompt of `suite` and judges it. `adapter` names the
/// adapter in the report; `on_prompt` is called after each prompt with its index and
/// result. `cancel` is checked between tokens and between prompts.
pub fn run_suite(
    model: &Model,
    lora: Option<&LoraSet>,
    adapter: Option<String>,
    suite: &Suite,
    opts: &RunOptions,
    cancel: &AtomicBool,
    on_prompt: &mut dyn FnMut(usize, &PromptResult),
) -> Result<SuiteReport, RunError> {
    let mut results = Vec::with_capacity(suite.items.len());
    for (i, item) in suite.items.iter().enumerate() {
        if cancel.load(Ordering::Relaxed) {
            return Err(RunError::Cancelled);
        }
        let fail = |message: String| RunError::Prompt {
            suite: suite.name.clone(),
            id: item.id.clone(),
            line: item.line,
            message,
        };
        let messages: Vec<ChatMessage> = item
            .turns()
            .into_iter()
            .map(|(r, c)| ChatMessage::new(r, c))
            .collect();
        let prompt_ids = model
            .encode_chat(&messages, true)
            .map_err(|e| fail(format!("applying the chat template: {e}")))?;
        let req = GenerateRequest {
            prompt_ids,
            sampling: opts.sampling.clone(),
            max_new_tokens: opts.max_new_tokens,
            stop_strings: Vec::new(),
        };
        let generation = crate::infer::generate(model, lora, &req, cancel, &mut |_| {})
            .map_err(|e| fail(format!("generating: {e}")))?;
        if cancel.load(Ordering::Relaxed) {
            return Err(RunError::Cancelled);
        }
        let result = PromptResult::judge(
            &item.id,
            generation.text,
            generation.stop_reason,
            generation.stats.generated_tokens,
            &item.checks,
        );
        on_prompt(i, &result);
        results.push(result);
    }
    Ok(SuiteReport::new(
        RunInfo {
            suite: suite.name.clone(),
            model: model.name.clone(),
            adapter,
            max_new_tokens: opts.max_new_tokens,
            sampling: opts.sampling.clone(),
        },
        results,
    ))
}
