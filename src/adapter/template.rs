//! The chat template an adapter was trained with: a run writes the model's
//! `tokenizer_config.json` with that template into `adapter/` and every checkpoint (as
//! `tokenizer.save_pretrained` beside a PEFT adapter does), so chat, batch compare,
//! scoring and exports of the adapter pick it up without being told.

use std::path::Path;

use crate::model::{Model, ModelError, Templated};
use crate::text::named_template::{self, NamedTemplate};
use crate::text::{TemplateChoice, TemplateSource};

/// The file beside the adapter that holds its template.
pub const TOKENIZER_CONFIG_FILE: &str = "tokenizer_config.json";

/// Writes `tokenizer_config.json` (with `model`'s current template) into `dir`.
pub fn write_template(dir: &Path, model: &Model) -> Result<(), ModelError> {
    let json =
        serde_json::to_string_pretty(&model.tokenizer_config_with_template()).unwrap_or_default();
    Ok(crate::fsio::write_bytes_atomic(
        &dir.join(TOKENIZER_CONFIG_FILE),
        json.as_bytes(),
    )?)
}

/// The template in `dir/tokenizer_config.json`, when the adapter folder has one.
pub fn read_template(dir: &Path) -> Result<Option<TemplateSource>, ModelError> {
    let path = dir.join(TOKENIZER_CONFIG_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| ModelError::io(&path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: path.clone(),
        message: format!("invalid JSON: {e}"),
    })?;
    let Some(source) = json.get("chat_template").and_then(|t| t.as_str()) else {
        return Ok(None);
    };
    let bare = strip_thinking_default(source);
    Ok(Some(TemplateSource {
        name: path.display().to_string(),
        named: NamedTemplate::ALL
            .into_iter()
            .find(|t| t.source().trim() == bare.trim()),
        source: source.to_string(),
    }))
}

fn strip_thinking_default(source: &str) -> &str {
    let header = named_template::with_thinking_default("", true);
    let start = &header[..header.find(" else").unwrap_or(header.len())];
    match source.strip_prefix(start) {
        Some(rest) => rest.split_once("%}\n").map_or(source, |(_, body)| body),
        None => source,
    }
}

/// `model` with the template a chat, a score or an export of the adapter in `adapter_dir`
/// uses: `choice` when it names one, else the adapter's own (what its run trained with),
/// else the model's; `thinking` sets the thinking switch's default. `None` when that is
/// the model as it is.
pub fn templated_model(
    model: &Model,
    adapter_dir: Option<&Path>,
    choice: &TemplateChoice,
    thinking: Option<bool>,
) -> Result<Option<Templated>, ModelError> {
    let chosen = match choice {
        TemplateChoice::Own => match adapter_dir {
            Some(dir) => read_template(dir)?,
            None => None,
        },
        other => other.load()?,
    };
    let same = chosen
        .as_ref()
        .is_none_or(|c| c.source == model.template.source());
    if same && thinking.is_none() {
        return Ok(None);
    }
    let chosen = chosen.filter(|c| c.source != model.template.source());
    Ok(Some(model.with_template(chosen.as_ref(), thinking)?))
}
