//! Models: configuration (HF `config.json` or GGUF metadata, validated once), weights
//! (safetensors, GGUF), the Llama-family transformer with LoRA-capable layers, and the
//! [`Model`] that bundles them with a tokenizer and chat template from [`crate::text`].
//!
//! [`load_resolved`] loads a model at a known location; `crate::hub::load` resolves the
//! `--model` argument first.

pub mod block_style;
pub mod config;
mod config_gemma3;
pub mod decode;
mod error;
pub mod file_type;
pub mod gguf;
mod kv_cache;
pub mod linear;
mod location;
pub mod lora;
pub mod rope;
mod template_choice;
pub mod transformer;
pub mod weights;

use std::path::{Path, PathBuf};

use candle_core::Device;

pub use config::{Architecture, ModelConfig};
pub use error::ModelError;
pub use location::{ModelLocation, ResolvedModel};
pub use template_choice::Templated;
// The text half of a `Model`, re-exported because every user of a model needs them.
pub use crate::text::{ChatMessage, ChatTemplate, Tokenizer};
pub use transformer::{Cache, Forward, FrozenWeight, Layout, MatmulMode, Transformer};

/// A loaded model: weights, tokenizer, chat template, and where it came from. Cloning
/// shares the weight tensors (they are reference-counted), so a clone is cheap and an
/// operation that replaces tensors, like merging, leaves the original untouched.
#[derive(Clone)]
pub struct Model {
    /// A short name for display (folder or file name).
    pub name: String,
    pub location: ModelLocation,
    /// The hub repo id, when known (written into adapter configs).
    pub hub_id: Option<String>,
    pub transformer: Transformer,
    pub tokenizer: Tokenizer,
    pub template: ChatTemplate,
    /// Whether the model came with its template (false: a built-in one stands in).
    pub own_template: bool,
    /// Token ids that end a reply.
    pub stop_token_ids: Vec<u32>,
    /// The `tokenizer_config.json` to write with merged models.
    pub tokenizer_config: serde_json::Value,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("name", &self.name)
            .field("location", &self.location)
            .finish()
    }
}

impl Model {
    pub fn config(&self) -> &ModelConfig {
        &self.transformer.config
    }

    /// Builds what the decode steps keep before the first reply asks for it (see
    /// [`Transformer::prepare_decode`], which stops once `go_on` says no); the bytes of
    /// the stored matrices prepared.
    pub fn prepare_decode(&self, go_on: &dyn Fn() -> bool) -> usize {
        self.transformer.prepare_decode(go_on)
    }

    /// Renders `messages` with the model's template and tokenizes the result.
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<Vec<u32>, ModelError> {
        let text = self.template.render(messages, add_generation_prompt)?;
        Ok(self.tokenizer.encode(&text, false)?)
    }

    /// Bytes the weights hold as loaded (quantized matrices at their stored size).
    pub fn weight_bytes(&self) -> usize {
        let cfg = self.config();
        let per_layer = if cfg.style.sandwich_norms { 4 } else { 2 };
        let norms = (per_layer * cfg.num_hidden_layers + 1) * cfg.hidden_size * 4;
        self.transformer.matrix_bytes() + norms
    }

    /// The same model with every matrix in f32 (a dequantized copy where the file stores
    /// them quantized): the exact reference path, and what training runs on.
    pub fn with_f32_weights(&self) -> Result<Model, ModelError> {
        let mut m = self.clone();
        if !m.transformer.is_f32() {
            m.transformer = m.transformer.to_f32()?;
        }
        Ok(m)
    }

    /// How the weights are stored, for display: "Q4_1" or "Q4_1 + Q8_0", "F32".
    pub fn storage_label(&self) -> String {
        let mix = self.transformer.storage_mix();
        let main: Vec<&str> = mix
            .iter()
            .filter(|(_, s)| *s >= 0.02)
            .map(|(t, _)| *t)
            .collect();
        main.join(" + ")
    }
}

/// Loads an already resolved model.
pub fn load_resolved(resolved: &ResolvedModel, device: &Device) -> Result<Model, ModelError> {
    let mut model = match &resolved.location {
        ModelLocation::HfFolder(dir) => load_hf_folder(dir, device)?,
        ModelLocation::Gguf(path) => load_gguf(path, device)?,
    };
    model.hub_id = resolved.hub_id.clone();
    // Building a large vocabulary's tokenizer (Gemma 3's 262K tokens) passes through
    // about 600 MiB of temporaries that the tuned allocator would otherwise keep.
    crate::ops::runtime::trim_heap();
    Ok(model)
}

fn read_json(path: &Path) -> Result<serde_json::Value, ModelError> {
    let text = std::fs::read_to_string(path).map_err(|e| ModelError::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| ModelError::Config {
        path: path.into(),
        message: format!("invalid JSON: {e}"),
    })
}

/// The chat template of an HF folder: `chat_template.jinja`, else `tokenizer_config.json`'s
/// `chat_template` (a string, or a list of named templates where `default` wins).
fn hf_chat_template(
    dir: &Path,
    tok_cfg: &serde_json::Value,
    architecture: Architecture,
) -> Result<(String, String, bool), ModelError> {
    let jinja = dir.join("chat_template.jinja");
    if jinja.exists() {
        let text = std::fs::read_to_string(&jinja).map_err(|e| ModelError::io(&jinja, e))?;
        return Ok((text, jinja.display().to_string(), true));
    }
    let name = dir.join("tokenizer_config.json").display().to_string();
    match tok_cfg.get("chat_template") {
        Some(serde_json::Value::String(s)) => Ok((s.clone(), name, true)),
        Some(serde_json::Value::Array(list)) => {
            let pick = list
                .iter()
                .find(|t| t.get("name").and_then(|n| n.as_str()) == Some("default"))
                .or_else(|| list.first())
                .and_then(|t| t.get("template"))
                .and_then(|t| t.as_str());
            pick.map(|s| (s.to_string(), name.clone(), true))
                .ok_or_else(|| {
                    crate::text::TextError::Template {
                        source_name: name,
                        message: "`chat_template` list has no usable entry".into(),
                    }
                    .into()
                })
        }
        _ => {
            let (text, name) = builtin_template(architecture);
            Ok((text, name, false))
        }
    }
}

/// Gemma's chat template (Gemma 3's own, as Google's instruction-tuned models ship it):
/// the system turn folded into the first user turn, the assistant named `model`.
pub const GEMMA_TEMPLATE: &str = include_str!("../../assets/templates/gemma.jinja");

/// The template of a model that ships none, and how to name it: Gemma's for the Gemma
/// family (its tokenizer has the turn markers), ChatML for the rest.
fn builtin_template(architecture: Architecture) -> (String, String) {
    match architecture {
        Architecture::Gemma3 => (
            GEMMA_TEMPLATE.to_string(),
            "built-in Gemma template (the model ships none)".into(),
        ),
        _ => (
            FALLBACK_TEMPLATE.to_string(),
            "built-in ChatML template (the model ships none)".into(),
        ),
    }
}

/// ChatML, for base models that ship no template (the named `chatml`).
pub const FALLBACK_TEMPLATE: &str = include_str!("../../assets/templates/chatml.jinja");

fn stop_ids(
    config: &ModelConfig,
    tokenizer: &Tokenizer,
    template: &str,
    extra: &[u32],
) -> Vec<u32> {
    let mut ids: Vec<u32> = config.eos_token_ids.clone();
    ids.extend_from_slice(extra);
    if let Some(id) = tokenizer
        .eos_token
        .as_deref()
        .and_then(|t| tokenizer.token_to_id(t))
    {
        ids.push(id);
    }
    for t in [
        "<|im_end|>",
        "<|eot_id|>",
        "<|end_of_text|>",
        "<|endoftext|>",
        "</s>",
    ] {
        if let Some(id) = tokenizer.token_to_id(t) {
            // Only end-of-turn markers that the template or config actually uses.
            if config.eos_token_ids.contains(&id) || tokenizer.eos_token.as_deref() == Some(t) {
                ids.push(id);
            }
        }
    }
    // Gemma ends a turn with `<end_of_turn>` and the file's EOS is `<eos>`: a reply stops
    // at the marker wherever the template writes it.
    if let Some(id) = tokenizer.token_to_id(GEMMA_END_OF_TURN) {
        if template.contains(GEMMA_END_OF_TURN) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    ids.dedup();
    ids
}

/// Gemma's end-of-turn marker.
pub const GEMMA_END_OF_TURN: &str = "<end_of_turn>";

/// Loads a Hugging Face model folder.
pub fn load_hf_folder(dir: &Path, device: &Device) -> Result<Model, ModelError> {
    let cfg_path = dir.join("config.json");
    let cfg_text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::io(&cfg_path, e))?;
    let config = ModelConfig::from_hf_json(&cfg_text, &cfg_path.display().to_string())?;
    let weights_path = ["model.safetensors", "model.safetensors.index.json"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.exists());
    let weights_path = match weights_path {
        Some(p) => p,
        None => {
            for pickle in [
                "pytorch_model.bin",
                "pytorch_model.bin.index.json",
                "model.pt",
            ] {
                if dir.join(pickle).exists() {
                    return Err(ModelError::Pickle {
                        path: dir.join(pickle),
                    });
                }
            }
            return Err(ModelError::weights(
                dir,
                "no model.safetensors or model.safetensors.index.json in the folder",
            ));
        }
    };
    let mut src = weights::SafetensorsSource::open(&weights_path, device)?;
    let transformer = Transformer::load(config, &mut src, device)?;

    let tok_cfg_path = dir.join("tokenizer_config.json");
    let tok_cfg = if tok_cfg_path.exists() {
        read_json(&tok_cfg_path)?
    } else {
        serde_json::json!({})
    };
    let mut tokenizer = Tokenizer::from_file(&dir.join("tokenizer.json"))?;
    let specials = crate::text::tokenizer::special_tokens_from_config(&tok_cfg);
    tokenizer.bos_token = specials.get("bos_token").cloned();
    tokenizer.eos_token = specials.get("eos_token").cloned();
    tokenizer.pad_token = specials.get("pad_token").cloned();
    tokenizer.unk_token = specials.get("unk_token").cloned();
    let (template_src, template_name, own_template) =
        hf_chat_template(dir, &tok_cfg, transformer.config.architecture)?;
    let template = ChatTemplate::new(
        &template_src,
        &template_name,
        tokenizer.bos_token.as_deref(),
        tokenizer.eos_token.as_deref(),
    )?;
    let gen_cfg = dir.join("generation_config.json");
    let extra_eos = if gen_cfg.exists() {
        let g = read_json(&gen_cfg)?;
        match g.get("eos_token_id") {
            Some(serde_json::Value::Number(n)) => n
                .as_u64()
                .and_then(|x| u32::try_from(x).ok())
                .into_iter()
                .collect(),
            Some(serde_json::Value::Array(a)) => a
                .iter()
                .filter_map(|x| x.as_u64())
                .filter_map(|x| u32::try_from(x).ok())
                .collect(),
            _ => Vec::new(),
        }
    } else {
        Vec::new()
    };
    let stop_token_ids = stop_ids(&transformer.config, &tokenizer, &template_src, &extra_eos);
    Ok(Model {
        name: crate::paths::file_name(dir),
        location: ModelLocation::HfFolder(dir.to_path_buf()),
        hub_id: None,
        transformer,
        tokenizer,
        template,
        own_template,
        stop_token_ids,
        tokenizer_config: tok_cfg,
    })
}

/// Loads a GGUF file: its matrices in their own blocks (mapped), the rest as f32, the
/// tokenizer and template from its metadata.
pub fn load_gguf(path: &Path, device: &Device) -> Result<Model, ModelError> {
    let mut src = weights::GgufSource::open(path, device)?;
    let has_output = src.content.tensor_infos.contains_key("output.weight");
    let mut config = gguf::config_from_metadata(src.metadata(), has_output, path)?;
    if gguf::architecture_name(src.metadata()) == Some("llama") {
        src.qk_heads = Some((config.num_attention_heads, config.num_key_value_heads));
    }
    src.gemma = config.architecture == Architecture::Gemma3;
    if src.content.tensor_infos.contains_key("rope_freqs.weight") {
        let factors: Vec<f32> = src
            .gguf_tensor("rope_freqs.weight", &[config.head_dim / 2])?
            .to_vec1()?;
        match rope::llama3_scaling_from_factors(&config, &factors) {
            Some(s) => config.rope_scaling = Some(s),
            None => tracing::warn!(
                "{}: rope_freqs holds frequency factors that match no Llama 3 rope scaling (largest {:.3}); they are not applied, so long prompts may degrade; load the model's Hugging Face folder for exact results",
                path.display(),
                factors.iter().copied().fold(f32::NAN, f32::max)
            ),
        }
    }
    let spec = gguf::tokenizer_spec(src.metadata(), path)?;
    if spec.tokens.len() > config.vocab_size {
        return Err(ModelError::Config {
            path: path.into(),
            message: format!(
                "tokenizer.ggml.tokens holds {} tokens, more than the model's vocabulary of {}",
                spec.tokens.len(),
                config.vocab_size
            ),
        });
    }
    let template_src = gguf::chat_template(src.metadata());
    // Independent, and each a large part of the load: a 262K-token vocabulary takes
    // longer to build than the model's mapped matrices take to set up.
    let (tokenizer, transformer) = rayon::join(
        || crate::text::tokenizer::from_gguf(&spec, path),
        || Transformer::load(config, &mut src, device),
    );
    let (tokenizer, transformer) = (tokenizer?, transformer?);
    let own_template = template_src.is_some();
    let (template_src, template_name) = match template_src {
        Some(t) => (t, format!("{} (tokenizer.chat_template)", path.display())),
        None => builtin_template(transformer.config.architecture),
    };
    let template = ChatTemplate::new(
        &template_src,
        &template_name,
        tokenizer.bos_token.as_deref(),
        tokenizer.eos_token.as_deref(),
    )?;
    let stop_token_ids = stop_ids(&transformer.config, &tokenizer, &template_src, &[]);
    let tokenizer_config = serde_json::json!({
        "bos_token": tokenizer.bos_token,
        "eos_token": tokenizer.eos_token,
        "pad_token": tokenizer.pad_token,
        "unk_token": tokenizer.unk_token,
        "chat_template": template_src,
        "add_bos_token": spec.add_bos,
        "clean_up_tokenization_spaces": false,
        "model_max_length": transformer.config.max_position_embeddings,
        "tokenizer_class": "PreTrainedTokenizerFast",
    });
    Ok(Model {
        name: crate::paths::file_name(path),
        location: ModelLocation::Gguf(path.to_path_buf()),
        hub_id: None,
        transformer,
        tokenizer,
        template,
        own_template,
        stop_token_ids,
        tokenizer_config,
    })
}

/// The file a model's location points at, for display.
pub fn location_path(loc: &ModelLocation) -> PathBuf {
    loc.path().to_path_buf()
}
