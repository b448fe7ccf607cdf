//! An Ollama `Modelfile` beside an exported GGUF: `FROM`, the chat template as Go template
//! text (for ChatML-style templates), and a stop parameter for each end-of-turn token.

use std::path::Path;

use crate::model::{Model, ModelError};

/// Writes `Modelfile` in `dir` for `gguf_name`.
pub fn write_modelfile(model: &Model, dir: &Path, gguf_name: &str) -> Result<(), ModelError> {
    let mut text = format!("FROM ./{gguf_name}\n");
    let src = model.template.source();
    if src.contains("<|im_start|>") {
        text.push_str(
            "TEMPLATE \"\"\"{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n\"\"\"\n",
        );
    } else if src.contains("<|start_header_id|>") {
        text.push_str(
            "TEMPLATE \"\"\"{{- range .Messages }}<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n{{ .Content }}<|eot_id|>{{ end }}<|start_header_id|>assistant<|end_header_id|>\n\n\"\"\"\n",
        );
    }
    for id in &model.stop_token_ids {
        if let Some(tok) = model.tokenizer.id_to_token(*id) {
            text.push_str(&format!("PARAMETER stop \"{tok}\"\n"));
        }
    }
    Ok(crate::fsio::write_bytes_atomic(
        &dir.join("Modelfile"),
        text.as_bytes(),
    )?)
}
