//! PEFT LoRA adapters on disk: `adapter_config.json` + `adapter_model.safetensors` with
//! PEFT's tensor names (`base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight`),
//! written by the trainer and read back for chat, eval and merging (ours or PEFT's own);
//! beside them, the chat template the adapter was trained with (`template.rs`).

mod template;

pub use template::{read_template, templated_model, write_template, TOKENIZER_CONFIG_FILE};

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{DType, Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::lora::{lora_scale, LoraPair, LoraSet, LoraTarget};
use crate::model::{ModelConfig, ModelError};

/// The adapter's settings file in a PEFT folder.
pub const CONFIG_FILE: &str = "adapter_config.json";
/// The adapter's tensors in a PEFT folder.
pub const WEIGHTS_FILE: &str = "adapter_model.safetensors";

/// The fields of `adapter_config.json` that matter here; PEFT fills the rest with defaults.
/// Recent PEFT versions write `null` for fields left at their default (`"fan_in_fan_out":
/// null`), so every defaulted field reads `null` as its default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdapterConfig {
    #[serde(default = "lora")]
    pub peft_type: String,
    #[serde(default = "causal_lm")]
    pub task_type: String,
    #[serde(default)]
    pub base_model_name_or_path: Option<String>,
    pub r: usize,
    pub lora_alpha: f64,
    #[serde(default, deserialize_with = "null_as_default")]
    pub lora_dropout: f32,
    #[serde(default, deserialize_with = "null_as_default")]
    pub use_rslora: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub target_modules: TargetModules,
    #[serde(default = "none", deserialize_with = "none_if_null")]
    pub bias: String,
    #[serde(default, deserialize_with = "null_as_default")]
    pub fan_in_fan_out: bool,
    #[serde(default, deserialize_with = "null_as_default")]
    pub use_dora: bool,
}

/// A value, or its type's default where the file has `null`.
fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// `bias`, with `null` read as `"none"`.
fn none_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_else(none))
}

fn lora() -> String {
    "LORA".into()
}
fn causal_lm() -> String {
    "CAUSAL_LM".into()
}
fn none() -> String {
    "none".into()
}

/// PEFT accepts a list of module names or a single regex string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TargetModules {
    List(Vec<String>),
    Pattern(String),
}

impl Default for TargetModules {
    fn default() -> Self {
        TargetModules::List(Vec::new())
    }
}

impl AdapterConfig {
    pub fn new(
        base: Option<String>,
        r: usize,
        alpha: f64,
        dropout: f32,
        rslora: bool,
        targets: &[LoraTarget],
    ) -> Self {
        Self {
            peft_type: lora(),
            task_type: causal_lm(),
            base_model_name_or_path: base,
            r,
            lora_alpha: alpha,
            lora_dropout: dropout,
            use_rslora: rslora,
            target_modules: TargetModules::List(
                targets
                    .iter()
                    .map(|t| t.module_name().to_string())
                    .collect(),
            ),
            bias: none(),
            fan_in_fan_out: false,
            use_dora: false,
        }
    }

    pub fn scale(&self) -> f64 {
        lora_scale(self.lora_alpha, self.r, self.use_rslora)
    }

    /// The full JSON PEFT writes, with every field it expects present.
    pub fn to_json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            for (k, d) in [
                ("inference_mode", serde_json::json!(true)),
                ("init_lora_weights", serde_json::json!(true)),
                ("modules_to_save", serde_json::Value::Null),
                ("layers_to_transform", serde_json::Value::Null),
                ("layers_pattern", serde_json::Value::Null),
                ("rank_pattern", serde_json::json!({})),
                ("alpha_pattern", serde_json::json!({})),
                ("revision", serde_json::Value::Null),
            ] {
                o.entry(k).or_insert(d);
            }
        }
        v
    }
}

/// PEFT's tensor name for one adapter matrix (`which` is `A` or `B`).
pub fn peft_key(layer: usize, target: LoraTarget, which: char) -> String {
    format!(
        "base_model.model.model.layers.{layer}.{}.{}.lora_{which}.weight",
        target.parent(),
        target.module_name()
    )
}

/// Parses a PEFT key back into (layer, target, `A`|`B`); tolerates an adapter-name segment.
pub fn parse_peft_key(key: &str) -> Option<(usize, LoraTarget, char)> {
    let rest = key.strip_prefix("base_model.model.model.layers.")?;
    let (layer, rest) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let parts: Vec<&str> = rest.split('.').collect();
    let target = parts.iter().find_map(|p| LoraTarget::from_module_name(p))?;
    let which = parts.iter().find_map(|p| match *p {
        "lora_A" => Some('A'),
        "lora_B" => Some('B'),
        _ => None,
    })?;
    Some((layer, target, which))
}

/// Writes named tensors as f32 safetensors with `{"format": "pt"}` metadata, atomically
/// ([`crate::fsio`]). The file is streamed: the header first, then one tensor at a time,
/// so no copy of the whole file is made in memory.
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<(), ModelError> {
    use safetensors::tensor::{Metadata, TensorInfo};
    // The order `safetensors::serialize` uses: by dtype alignment (all f32 here), then name.
    let mut order: Vec<&(String, Tensor)> = tensors.iter().collect();
    order.sort_by(|a, b| a.0.cmp(&b.0));
    let mut infos = Vec::with_capacity(order.len());
    let mut offset = 0usize;
    for (name, t) in &order {
        let n = t.elem_count() * 4;
        infos.push((
            name.clone(),
            TensorInfo {
                dtype: safetensors::Dtype::F32,
                shape: t.dims().to_vec(),
                data_offsets: (offset, offset + n),
            },
        ));
        offset += n;
    }
    let meta: HashMap<String, String> = [("format".to_string(), "pt".to_string())].into();
    let metadata = Metadata::new(Some(meta), infos).map_err(|e| ModelError::weights(path, e))?;
    let mut header = serde_json::to_string(&metadata)
        .map_err(|e| ModelError::weights(path, e))?
        .into_bytes();
    // safetensors pads the header with spaces to a multiple of 8 bytes.
    header.resize(header.len().next_multiple_of(8), b' ');
    // Tensor errors met while streaming come back as I/O errors; keep candle's own.
    let mut tensor_error = None;
    let written = crate::fsio::write_file_atomic(path, |w| {
        w.write_all(&(header.len() as u64).to_le_bytes())?;
        w.write_all(&header)?;
        let mut buf = Vec::with_capacity(1 << 16);
        for (_, t) in &order {
            let values: Vec<f32> = match t
                .to_dtype(DType::F32)
                .and_then(|t| t.flatten_all())
                .and_then(|t| t.to_vec1())
            {
                Ok(v) => v,
                Err(e) => {
                    tensor_error = Some(e);
                    return Err(std::io::Error::other("a tensor could not be read"));
                }
            };
            for chunk in values.chunks(1 << 14) {
                buf.clear();
                buf.extend(chunk.iter().flat_map(|v| v.to_le_bytes()));
                w.write_all(&buf)?;
            }
        }
        Ok(())
    });
    match (written, tensor_error) {
        (Ok(()), _) => Ok(()),
        (Err(_), Some(e)) => Err(e.into()),
        (Err(e), None) => Err(e.into()),
    }
}

/// Writes an adapter folder in PEFT layout (each file atomically; a caller that needs the
/// folder as a whole to appear at once builds it with [`crate::fsio::replace_dir_atomic`]).
pub fn write_adapter(
    dir: &Path,
    config: &AdapterConfig,
    pairs: &BTreeMap<(usize, LoraTarget), (Tensor, Tensor)>,
) -> Result<(), ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    let mut tensors = Vec::with_capacity(pairs.len() * 2);
    for ((layer, target), (a, b)) in pairs {
        tensors.push((peft_key(*layer, *target, 'A'), a.clone()));
        tensors.push((peft_key(*layer, *target, 'B'), b.clone()));
    }
    write_safetensors(&dir.join(WEIGHTS_FILE), &tensors)?;
    let json = serde_json::to_string_pretty(&config.to_json()).unwrap_or_default();
    Ok(crate::fsio::write_bytes_atomic(
        &dir.join(CONFIG_FILE),
        json.as_bytes(),
    )?)
}

/// An adapter read from disk.
pub struct LoadedAdapter {
    pub config: AdapterConfig,
    pub lora: LoraSet,
}

/// Reads `dir/adapter_config.json` and checks that it describes an adapter the studio
/// runs: LoRA, not DoRA.
pub fn read_adapter_config(dir: &Path) -> Result<AdapterConfig, ModelError> {
    let cfg_path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::io(&cfg_path, e))?;
    let config: AdapterConfig = serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: cfg_path.clone(),
        message: format!("not a PEFT adapter config: {e}"),
    })?;
    if config.peft_type != "LORA" {
        return Err(ModelError::Config {
            path: cfg_path,
            message: format!("peft_type {} is not supported (LORA is)", config.peft_type),
        });
    }
    if config.use_dora {
        return Err(ModelError::Config {
            path: cfg_path,
            message: "DoRA adapters are not supported".into(),
        });
    }
    Ok(config)
}

/// Reads a PEFT adapter folder (f32, f16 or bf16) and checks it against the base model.
pub fn read_adapter(
    dir: &Path,
    base: &ModelConfig,
    device: &Device,
) -> Result<LoadedAdapter, ModelError> {
    let config = read_adapter_config(dir)?;
    let st_path = dir.join(WEIGHTS_FILE);
    if !st_path.exists() && dir.join("adapter_model.bin").exists() {
        return Err(ModelError::Pickle {
            path: dir.join("adapter_model.bin"),
        });
    }
    let tensors = candle_core::safetensors::load(&st_path, device)
        .map_err(|e| ModelError::weights(&st_path, e))?;
    let mut halves: BTreeMap<(usize, LoraTarget), (Option<Tensor>, Option<Tensor>)> =
        BTreeMap::new();
    for (key, t) in tensors {
        let Some((layer, target, which)) = parse_peft_key(&key) else {
            return Err(ModelError::weights(&st_path, format!("unexpected tensor `{key}` (only LoRA A/B matrices of linear layers are supported)")));
        };
        if layer >= base.num_hidden_layers {
            return Err(ModelError::weights(
                &st_path,
                format!(
                    "`{key}` is for layer {layer}, but the base model has {} layers",
                    base.num_hidden_layers
                ),
            ));
        }
        let t = t.to_dtype(DType::F32)?;
        let e = halves.entry((layer, target)).or_default();
        if which == 'A' {
            e.0 = Some(t);
        } else {
            e.1 = Some(t);
        }
    }
    let scale = config.scale();
    let mut pairs = BTreeMap::new();
    for ((layer, target), (a, b)) in halves {
        let (Some(a), Some(b)) = (a, b) else {
            return Err(ModelError::weights(
                &st_path,
                format!(
                    "layer {layer} {} has only one of lora_A / lora_B",
                    target.module_name()
                ),
            ));
        };
        let (out_f, in_f) = linear_shape(base, target);
        if a.dims() != [config.r, in_f] || b.dims() != [out_f, config.r] {
            return Err(ModelError::weights(
                &st_path,
                format!(
                    "layer {layer} {}: lora_A {:?} / lora_B {:?} do not fit r={} on a [{out_f}, {in_f}] layer: the adapter is for another base model",
                    target.module_name(), a.dims(), b.dims(), config.r
                ),
            ));
        }
        pairs.insert((layer, target), LoraPair { a, b, scale });
    }
    Ok(LoadedAdapter {
        config,
        lora: LoraSet {
            pairs,
            dropout: 0.0,
        },
    })
}

/// `[out, in]` of a target layer.
pub fn linear_shape(c: &ModelConfig, target: LoraTarget) -> (usize, usize) {
    let q = c.num_attention_heads * c.head_dim;
    let kv = c.num_key_value_heads * c.head_dim;
    match target {
        LoraTarget::QProj => (q, c.hidden_size),
        LoraTarget::KProj | LoraTarget::VProj => (kv, c.hidden_size),
        LoraTarget::OProj => (c.hidden_size, q),
        LoraTarget::GateProj | LoraTarget::UpProj => (c.intermediate_size, c.hidden_size),
        LoraTarget::DownProj => (c.hidden_size, c.intermediate_size),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_tolerate_adapter_names() {
        let k = peft_key(3, LoraTarget::DownProj, 'B');
        assert_eq!(
            k,
            "base_model.model.model.layers.3.mlp.down_proj.lora_B.weight"
        );
        assert_eq!(parse_peft_key(&k), Some((3, LoraTarget::DownProj, 'B')));
        assert_eq!(
            parse_peft_key(
                "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight"
            ),
            Some((0, LoraTarget::QProj, 'A'))
        );
    }

    #[test]
    fn nulls_of_recent_peft_read_as_defaults() {
        // As PEFT 0.20 (axolotl 0.19) writes it: defaults as null.
        let text = r#"{"base_model_name_or_path": "./base", "bias": null, "fan_in_fan_out": null,
            "lora_alpha": 32, "lora_dropout": null, "peft_type": "LORA", "r": 16,
            "target_modules": ["q_proj", "v_proj"], "task_type": "CAUSAL_LM",
            "use_dora": null, "use_rslora": null}"#;
        let cfg: AdapterConfig = serde_json::from_str(text).unwrap();
        assert!(!cfg.fan_in_fan_out && !cfg.use_dora && !cfg.use_rslora);
        assert_eq!(cfg.bias, "none");
        assert_eq!(cfg.lora_dropout, 0.0);
        assert_eq!(cfg.scale(), 2.0);
    }
}
