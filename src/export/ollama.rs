//! An Ollama `Modelfile` beside an exported GGUF: `FROM`, the chat template as Go template
//! text (the named template whose markup the model's template writes: ChatML, Llama 3,
//! Gemma, Mistral, Alpaca, plain), and a stop parameter for each end-of-turn token and
//! each of the template's stop strings.

use std::path::Path;

use crate::model::{Model, ModelError};
use crate::text::named_template;
use crate::text::NamedTemplate;

/// A parameter value in double quotes, with quotes and backslashes escaped.
fn go_quoted(s: &str) -> String {
    let escaped = s.replace('\\', "\\\\").replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// Writes `Modelfile` in `dir` for `gguf_name`.
pub fn write_modelfile(model: &Model, dir: &Path, gguf_name: &str) -> Result<(), ModelError> {
    let mut text = format!("FROM ./{gguf_name}\n");
    let source = model.template.source();
    if let Some(named) = NamedTemplate::detect(source) {
        let eos = model.tokenizer.eos_token.as_deref().unwrap_or_default();
        let mut go = named.ollama_template(eos);
        // A run trained with thinking off answers after an empty reasoning block, as
        // Qwen3's template writes it when `enable_thinking` is false.
        if named_template::thinking_default(source) == Some(false) {
            go.push_str("<think>\n\n</think>\n\n");
        }
        text.push_str(&format!("TEMPLATE \"\"\"{go}\"\"\"\n"));
    }
    for id in &model.stop_token_ids {
        if let Some(tok) = model.tokenizer.id_to_token(*id) {
            text.push_str(&format!("PARAMETER stop {}\n", go_quoted(&tok)));
        }
    }
    for stop in model.template.stop_strings() {
        text.push_str(&format!("PARAMETER stop {}\n", go_quoted(stop.trim())));
    }
    Ok(crate::fsio::write_bytes_atomic(
        &dir.join("Modelfile"),
        text.as_bytes(),
    )?)
}
