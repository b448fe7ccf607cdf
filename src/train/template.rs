//! The run's chat template (`[model] template`, `enable_thinking`) applied to its base
//! model: the plan tokenizes with it, the trainer evaluates and runs its suite with it,
//! and the adapters it writes carry it in `tokenizer_config.json`.

use anyhow::Context;

use super::config::RunConfig;
use crate::model::{Model, Templated};

/// The base model with the run's template, or `None` when the run uses the model's own
/// as it is. A template the model's tokenizer cannot write is an error naming both.
pub fn run_model(cfg: &RunConfig, model: &Model) -> anyhow::Result<Option<Templated>> {
    let choice = cfg.model.template_choice();
    crate::adapter::templated_model(model, None, &choice, cfg.model.enable_thinking)
        .with_context(|| format!("the run's chat template ({})", choice.label()))
}
