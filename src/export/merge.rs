//! Merging an adapter into its base (`W' = W + s · B A`) and writing the result as a
//! Hugging Face folder (`config.json`, `model.safetensors`, tokenizer files,
//! `generation_config.json`) that transformers and the studio load.

use std::path::Path;

use crate::model::lora::LoraSet;
use crate::model::{Model, ModelError};

/// Adds every adapter's delta to the base weights in place; a layer stored quantized
/// becomes f32 (dequantized, then the delta added).
pub fn merge_into(model: &mut Model, lora: &LoraSet) -> Result<(), ModelError> {
    for (&(layer, target), pair) in &lora.pairs {
        let Some(l) = model.transformer.layers.get_mut(layer) else {
            return Err(ModelError::Fetch(format!(
                "adapter has layer {layer}, the model has fewer"
            )));
        };
        let lin = l.linear_mut(target);
        let delta = (pair.b.matmul(&pair.a)? * pair.scale)?;
        let dev = delta.device().clone();
        lin.weight = crate::model::FrozenWeight::F32((lin.weight.to_f32(&dev)? + delta)?);
    }
    Ok(())
}

/// Writes `model` (merged or not) as a Hugging Face folder in `out`.
pub fn write_hf_folder(model: &Model, out: &Path) -> Result<(), ModelError> {
    std::fs::create_dir_all(out).map_err(|e| ModelError::io(out, e))?;
    let write = |name: &str, value: &serde_json::Value| -> Result<(), ModelError> {
        let path = out.join(name);
        let text = serde_json::to_string_pretty(value).unwrap_or_default();
        Ok(crate::fsio::write_bytes_atomic(&path, text.as_bytes())?)
    };
    let cfg = model.config();
    write("config.json", &cfg.to_hf_json())?;
    let tensors = super::gguf::named_weights(model)?;
    crate::adapter::write_safetensors(&out.join("model.safetensors"), &tensors)?;
    write("tokenizer.json", model.tokenizer.to_json()?)?;
    write(
        "tokenizer_config.json",
        &model.tokenizer_config_with_template(),
    )?;
    let eos: Vec<u32> = model.stop_token_ids.clone();
    let mut gen = serde_json::json!({"_from_model_config": true, "eos_token_id": eos});
    if let Some(b) = cfg.bos_token_id {
        gen["bos_token_id"] = b.into();
    }
    write("generation_config.json", &gen)
}
