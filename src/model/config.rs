//! The model configuration: a serde mirror of the Hugging Face `config.json` fields the
//! Llama-family transformer needs, and the same values read from GGUF metadata.

use serde::{Deserialize, Serialize};

pub use super::block_style::{BlockStyle, GateActivation, LayerKind};
use super::ModelError;

/// The architectures the one transformer implementation covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// Llama 2/3.x, SmolLM/SmolLM2, TinyLlama.
    Llama,
    /// Mistral (Llama layout, optional sliding window, which is ignored for short contexts).
    Mistral,
    /// Qwen2 and Qwen2.5: bias on the q, k and v projections.
    Qwen2,
    /// Qwen3: RMSNorm on queries and keys per head, no q/k/v bias.
    Qwen3,
    /// Gemma 3 (text): GeGLU, `(1 + w)` norms, four norms per block, q/k norm, scaled
    /// embeddings, sliding-window layers with their own RoPE base ([`BlockStyle`]).
    Gemma3,
}

impl Architecture {
    /// The Hugging Face `model_type` string.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Mistral => "mistral",
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
            Architecture::Gemma3 => "gemma3_text",
        }
    }

    /// The class name transformers writes into `architectures`.
    pub fn hf_class(self) -> &'static str {
        match self {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Mistral => "MistralForCausalLM",
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Qwen3 => "Qwen3ForCausalLM",
            Architecture::Gemma3 => "Gemma3ForCausalLM",
        }
    }

    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "llama" => Some(Architecture::Llama),
            "mistral" => Some(Architecture::Mistral),
            "qwen2" => Some(Architecture::Qwen2),
            "qwen3" => Some(Architecture::Qwen3),
            "gemma3_text" => Some(Architecture::Gemma3),
            _ => None,
        }
    }

    /// The architecture of a GGUF file's `general.architecture` (llama.cpp calls Gemma 3's
    /// text model `gemma3`).
    pub fn from_gguf_name(name: &str) -> Option<Self> {
        match name {
            "gemma3" => Some(Architecture::Gemma3),
            "gemma3_text" => None,
            other => Self::from_model_type(other),
        }
    }

    /// Whether q, k and v projections carry a bias by default.
    pub fn default_qkv_bias(self) -> bool {
        matches!(self, Architecture::Qwen2)
    }
}

/// Llama 3.x rope scaling (`rope_scaling.rope_type = "llama3"`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Llama3RopeScaling {
    pub factor: f32,
    pub low_freq_factor: f32,
    pub high_freq_factor: f32,
    pub original_max_position_embeddings: usize,
}

/// Everything the transformer needs to know about a model's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub architecture: Architecture,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    pub head_dim: usize,
    pub rms_norm_eps: f64,
    pub rope_theta: f32,
    pub rope_scaling: Option<Llama3RopeScaling>,
    pub max_position_embeddings: usize,
    pub tie_word_embeddings: bool,
    pub attention_bias: bool,
    pub bos_token_id: Option<u32>,
    pub eos_token_ids: Vec<u32>,
    /// How this family's blocks differ from Llama's (activation, norms, windows…).
    #[serde(default)]
    pub style: BlockStyle,
}

/// How a file names each field of [`ModelConfig`], for error messages (the JSON field of
/// a `config.json`, the metadata key of a GGUF file), and whether it states `head_dim`.
#[derive(Debug, Clone)]
pub struct ConfigKeys {
    pub vocab_size: String,
    pub hidden_size: String,
    pub intermediate_size: String,
    pub num_hidden_layers: String,
    pub num_attention_heads: String,
    pub num_key_value_heads: String,
    pub head_dim: String,
    pub rms_norm_eps: String,
    pub rope_theta: String,
    pub rope_scaling: String,
    pub max_position_embeddings: String,
    pub bos_token_id: String,
    pub eos_token_id: String,
    /// Whether the file gives `head_dim` itself; otherwise it is `hidden_size /
    /// num_attention_heads`, which must then divide evenly.
    pub head_dim_stated: bool,
}

impl ConfigKeys {
    /// The field names of a Hugging Face `config.json`.
    pub fn hf_json(head_dim_stated: bool) -> Self {
        Self {
            vocab_size: "vocab_size".into(),
            hidden_size: "hidden_size".into(),
            intermediate_size: "intermediate_size".into(),
            num_hidden_layers: "num_hidden_layers".into(),
            num_attention_heads: "num_attention_heads".into(),
            num_key_value_heads: "num_key_value_heads".into(),
            head_dim: "head_dim".into(),
            rms_norm_eps: "rms_norm_eps".into(),
            rope_theta: "rope_theta".into(),
            rope_scaling: "rope_scaling".into(),
            max_position_embeddings: "max_position_embeddings".into(),
            bos_token_id: "bos_token_id".into(),
            eos_token_id: "eos_token_id".into(),
            head_dim_stated,
        }
    }

    /// The metadata keys of a GGUF file of architecture `arch` (`llama`, `qwen2`…).
    pub fn gguf(arch: &str, head_dim_stated: bool) -> Self {
        let k = |key: &str| format!("{arch}.{key}");
        Self {
            vocab_size: k("vocab_size"),
            hidden_size: k("embedding_length"),
            intermediate_size: k("feed_forward_length"),
            num_hidden_layers: k("block_count"),
            num_attention_heads: k("attention.head_count"),
            num_key_value_heads: k("attention.head_count_kv"),
            head_dim: k("attention.key_length"),
            rms_norm_eps: k("attention.layer_norm_rms_epsilon"),
            rope_theta: k("rope.freq_base"),
            rope_scaling: "rope_freqs.weight".into(),
            max_position_embeddings: k("context_length"),
            bos_token_id: "tokenizer.ggml.bos_token_id".into(),
            eos_token_id: "tokenizer.ggml.eos_token_id".into(),
            head_dim_stated,
        }
    }
}

/// Upper bounds on a config's sizes. Each admits every released Llama-family model with
/// a wide margin (Llama 3.1 405B: vocabulary 128 256, hidden 16 384, intermediate 53 248,
/// 126 layers, 128 heads of 128, context 131 072; Gemma-style vocabularies of 256 000;
/// head dims up to 256), and together they keep every product the loader forms (the
/// parameter count and its bytes, a projection's `heads × head_dim`, a tensor's element
/// count) far below `u64::MAX`, so that no arithmetic on a file's numbers can overflow.
pub mod limits {
    /// 2^24 tokens.
    pub const VOCAB_SIZE: usize = 1 << 24;
    /// 2^17.
    pub const HIDDEN_SIZE: usize = 1 << 17;
    /// 2^20.
    pub const INTERMEDIATE_SIZE: usize = 1 << 20;
    pub const LAYERS: usize = 1024;
    /// 2^12 query heads.
    pub const HEADS: usize = 1 << 12;
    pub const HEAD_DIM: usize = 1024;
    /// 2^24 positions (Llama 4 Scout's 10M context fits).
    pub const POSITIONS: usize = 1 << 24;
}

/// A short rendering of a JSON value for messages (long strings and containers cut).
pub(super) fn show(v: &serde_json::Value) -> String {
    let s = v.to_string();
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s
    }
}

/// Reads the fields of a `config.json` object, each error naming the field.
pub(super) struct JsonFields<'a> {
    pub(super) obj: &'a serde_json::Map<String, serde_json::Value>,
}

impl JsonFields<'_> {
    /// The field, `None` when absent or `null` (transformers writes `null` for unset).
    pub(super) fn get(&self, key: &str) -> Option<&serde_json::Value> {
        self.obj.get(key).filter(|v| !v.is_null())
    }

    pub(super) fn count(&self, key: &str) -> Result<Option<usize>, String> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        v.as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("`{key}` is {}, expected a non-negative integer", show(v)))
    }

    pub(super) fn required_count(&self, key: &str) -> Result<usize, String> {
        self.count(key)?
            .ok_or_else(|| format!("`{key}` is missing"))
    }

    pub(super) fn float(&self, key: &str) -> Result<Option<f64>, String> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        v.as_f64()
            .map(Some)
            .ok_or_else(|| format!("`{key}` is {}, expected a number", show(v)))
    }

    pub(super) fn flag(&self, key: &str) -> Result<Option<bool>, String> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        v.as_bool()
            .map(Some)
            .ok_or_else(|| format!("`{key}` is {}, expected true or false", show(v)))
    }

    pub(super) fn string(&self, key: &str) -> Result<Option<&str>, String> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        v.as_str()
            .map(Some)
            .ok_or_else(|| format!("`{key}` is {}, expected a string", show(v)))
    }

    /// A token id or a list of them (`eos_token_id` may be either).
    pub(super) fn token_ids(&self, key: &str) -> Result<Vec<u32>, String> {
        let one = |v: &serde_json::Value| {
            v.as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| format!("`{key}` holds {}, expected a token id", show(v)))
        };
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(serde_json::Value::Array(a)) => a.iter().map(one).collect(),
            Some(v) => Ok(vec![one(v)?]),
        }
    }
}

/// Reads `rope_scaling` (or transformers 5's `rope_parameters`), `key` naming it.
fn parse_rope_scaling(
    v: &serde_json::Value,
    key: &str,
) -> Result<Option<Llama3RopeScaling>, String> {
    if !v.is_object() {
        return Err(format!("`{key}` is {}, expected an object", show(v)));
    }
    let kind = match v.get("rope_type").or_else(|| v.get("type")) {
        None | Some(serde_json::Value::Null) => "default",
        Some(t) => t
            .as_str()
            .ok_or_else(|| format!("`{key}.rope_type` is {}, expected a string", show(t)))?,
    };
    match kind {
        "default" => Ok(None),
        "llama3" => {
            let f = |k: &str| -> Result<f32, String> {
                let x = v
                    .get(k)
                    .ok_or_else(|| format!("`{key}` of type llama3 lacks `{k}`"))?;
                x.as_f64()
                    .map(|x| x as f32)
                    .ok_or_else(|| format!("`{key}.{k}` is {}, expected a number", show(x)))
            };
            let orig_key = "original_max_position_embeddings";
            let orig = v
                .get(orig_key)
                .ok_or_else(|| format!("`{key}` of type llama3 lacks `{orig_key}`"))?;
            let original_max_position_embeddings = orig
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| {
                    format!(
                        "`{key}.{orig_key}` is {}, expected a non-negative integer",
                        show(orig)
                    )
                })?;
            Ok(Some(Llama3RopeScaling {
                factor: f("factor")?,
                low_freq_factor: f("low_freq_factor")?,
                high_freq_factor: f("high_freq_factor")?,
                original_max_position_embeddings,
            }))
        }
        other => Err(format!(
            "`{key}` type `{other}` is not supported (supported: default, llama3)"
        )),
    }
}

impl ModelConfig {
    /// Parses a Hugging Face `config.json` and validates it. `source` names the file in
    /// errors.
    pub fn from_hf_json(text: &str, source: &str) -> Result<Self, ModelError> {
        let bad = |message: String| ModelError::Config {
            path: source.into(),
            message,
        };
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| bad(format!("invalid JSON: {e}")))?;
        let obj = value
            .as_object()
            .ok_or_else(|| bad(format!("expected a JSON object, found {}", show(&value))))?;
        let fields = JsonFields { obj };
        let model_type = fields.string("model_type").map_err(bad)?.unwrap_or("");
        let architecture = Architecture::from_model_type(model_type).ok_or_else(|| {
            ModelError::UnsupportedArchitecture {
                path: source.into(),
                found: if model_type.is_empty() {
                    fields
                        .get("architectures")
                        .and_then(|a| a.as_array())
                        .map(|a| {
                            a.iter()
                                .filter_map(|x| x.as_str())
                                .collect::<Vec<_>>()
                                .join(", ")
                        })
                        .unwrap_or_default()
                } else {
                    model_type.to_string()
                },
            }
        })?;
        let c = |k: &str| fields.required_count(k).map_err(bad);
        let (vocab_size, hidden_size, intermediate_size, num_hidden_layers, heads) = (
            c("vocab_size")?,
            c("hidden_size")?,
            c("intermediate_size")?,
            c("num_hidden_layers")?,
            c("num_attention_heads")?,
        );
        let kv_heads = fields
            .count("num_key_value_heads")
            .map_err(bad)?
            .unwrap_or(heads);
        let stated_head_dim = fields.count("head_dim").map_err(bad)?;
        // Checked here only to compute the default; `validate` says what is wrong.
        let head_dim =
            stated_head_dim.unwrap_or_else(|| hidden_size.checked_div(heads).unwrap_or(0));
        let rope_params = fields.get("rope_parameters");
        let gemma = match architecture {
            Architecture::Gemma3 => {
                Some(super::config_gemma3::read_hf(&fields, num_hidden_layers).map_err(bad)?)
            }
            _ => None,
        };
        let rope_theta = match fields.float("rope_theta").map_err(bad)? {
            Some(t) => t,
            None => match rope_params.and_then(|p| p.get("rope_theta")) {
                None => 10_000.0,
                Some(t) => t.as_f64().ok_or_else(|| {
                    bad(format!(
                        "`rope_parameters.rope_theta` is {}, expected a number",
                        show(t)
                    ))
                })?,
            },
        } as f32;
        let rope_scaling = match (fields.get("rope_scaling"), rope_params) {
            _ if gemma.is_some() => None,
            (Some(v), _) => parse_rope_scaling(v, "rope_scaling").map_err(bad)?,
            (None, Some(p)) => parse_rope_scaling(p, "rope_parameters").map_err(bad)?,
            _ => None,
        };
        let (rope_theta, style) = match gemma {
            Some(g) => (g.rope_theta, g.style),
            None => (rope_theta, BlockStyle::for_architecture(architecture)),
        };
        let config = Self {
            architecture,
            vocab_size,
            hidden_size,
            intermediate_size,
            num_hidden_layers,
            num_attention_heads: heads,
            num_key_value_heads: kv_heads,
            head_dim,
            rms_norm_eps: fields.float("rms_norm_eps").map_err(bad)?.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: fields
                .count("max_position_embeddings")
                .map_err(bad)?
                .unwrap_or(4096),
            tie_word_embeddings: fields
                .flag("tie_word_embeddings")
                .map_err(bad)?
                // Gemma's configs leave it to the class default, which ties.
                .unwrap_or(architecture == Architecture::Gemma3),
            attention_bias: fields
                .flag("attention_bias")
                .map_err(bad)?
                .unwrap_or(architecture.default_qkv_bias()),
            bos_token_id: fields
                .token_ids("bos_token_id")
                .map_err(bad)?
                .first()
                .copied(),
            eos_token_ids: fields.token_ids("eos_token_id").map_err(bad)?,
            style,
        };
        config.validate(
            std::path::Path::new(source),
            &ConfigKeys::hf_json(stated_head_dim.is_some()),
        )?;
        Ok(config)
    }

    /// Checks that the config describes a model the transformer can build: every size
    /// non-zero and within [`limits`], heads a multiple of KV heads, a head dim that is
    /// even (RoPE rotates pairs) and agrees with the hidden size unless the file states it,
    /// positive finite epsilon and RoPE base, sane RoPE scaling, token ids inside the
    /// vocabulary, and a parameter count (and its f32 bytes) that fits in a `usize`. The
    /// error names `source` and the field as the file spells it (`keys`).
    pub fn validate(&self, source: &std::path::Path, keys: &ConfigKeys) -> Result<(), ModelError> {
        let bad = |message: String| ModelError::Config {
            path: source.into(),
            message,
        };
        let sizes = [
            (self.vocab_size, &keys.vocab_size, limits::VOCAB_SIZE),
            (self.hidden_size, &keys.hidden_size, limits::HIDDEN_SIZE),
            (
                self.intermediate_size,
                &keys.intermediate_size,
                limits::INTERMEDIATE_SIZE,
            ),
            (
                self.num_hidden_layers,
                &keys.num_hidden_layers,
                limits::LAYERS,
            ),
            (
                self.num_attention_heads,
                &keys.num_attention_heads,
                limits::HEADS,
            ),
            (
                self.num_key_value_heads,
                &keys.num_key_value_heads,
                limits::HEADS,
            ),
            (
                self.max_position_embeddings,
                &keys.max_position_embeddings,
                limits::POSITIONS,
            ),
        ];
        for (value, key, limit) in sizes {
            if value == 0 {
                return Err(bad(format!("{key} is 0")));
            }
            if value > limit {
                return Err(bad(format!(
                    "{key} is {value}, more than the {limit} any supported model has"
                )));
            }
        }
        let (heads, kv_heads) = (self.num_attention_heads, self.num_key_value_heads);
        if heads % kv_heads != 0 {
            return Err(bad(format!(
                "{} ({heads}) is not a multiple of {} ({kv_heads})",
                keys.num_attention_heads, keys.num_key_value_heads
            )));
        }
        if !keys.head_dim_stated && !self.hidden_size.is_multiple_of(heads) {
            return Err(bad(format!(
                "{} ({}) is not divisible by {} ({heads}), and the file gives no {}",
                keys.hidden_size, self.hidden_size, keys.num_attention_heads, keys.head_dim
            )));
        }
        let head_dim = self.head_dim;
        if head_dim == 0 {
            return Err(bad(format!("{} is 0", keys.head_dim)));
        }
        if head_dim > limits::HEAD_DIM {
            return Err(bad(format!(
                "{} is {head_dim}, more than the {} any supported model has",
                keys.head_dim,
                limits::HEAD_DIM
            )));
        }
        if !head_dim.is_multiple_of(2) {
            return Err(bad(format!(
                "{} is {head_dim}, but rotary embeddings need an even head dim",
                keys.head_dim
            )));
        }
        let eps = self.rms_norm_eps;
        if !(eps.is_finite() && eps > 0.0) {
            return Err(bad(format!(
                "{} is {eps}, expected a positive number",
                keys.rms_norm_eps
            )));
        }
        let theta = self.rope_theta;
        if !(theta.is_finite() && theta > 0.0) {
            return Err(bad(format!(
                "{} is {theta}, expected a positive number",
                keys.rope_theta
            )));
        }
        if let Some(s) = self.rope_scaling {
            let key = &keys.rope_scaling;
            for (name, x) in [
                ("factor", s.factor),
                ("low_freq_factor", s.low_freq_factor),
                ("high_freq_factor", s.high_freq_factor),
            ] {
                if !(x.is_finite() && x > 0.0) {
                    return Err(bad(format!(
                        "{key}: {name} is {x}, expected a positive number"
                    )));
                }
            }
            if s.high_freq_factor <= s.low_freq_factor {
                return Err(bad(format!(
                    "{key}: high_freq_factor ({}) must exceed low_freq_factor ({})",
                    s.high_freq_factor, s.low_freq_factor
                )));
            }
            let orig = s.original_max_position_embeddings;
            if orig == 0 || orig > limits::POSITIONS {
                return Err(bad(format!(
                    "{key}: original_max_position_embeddings is {orig}, expected 1 to {}",
                    limits::POSITIONS
                )));
            }
        }
        let ids = self
            .bos_token_id
            .iter()
            .map(|id| (id, &keys.bos_token_id))
            .chain(self.eos_token_ids.iter().map(|id| (id, &keys.eos_token_id)));
        for (&id, key) in ids {
            if id as usize >= self.vocab_size {
                return Err(bad(format!(
                    "{key} is {id}, outside the vocabulary of {} ({})",
                    self.vocab_size, keys.vocab_size
                )));
            }
        }
        self.style.check(self.num_hidden_layers).map_err(bad)?;
        if self
            .checked_parameter_count()
            .and_then(|n| n.checked_mul(4))
            .is_none()
        {
            return Err(bad(
                "the parameter count these sizes imply does not fit in memory arithmetic".into(),
            ));
        }
        Ok(())
    }

    /// Writes the config as a Hugging Face `config.json` that transformers loads.
    pub fn to_hf_json(&self) -> serde_json::Value {
        let mut v = serde_json::json!({
            "architectures": [self.architecture.hf_class()],
            "model_type": self.architecture.model_type(),
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "max_position_embeddings": self.max_position_embeddings,
            "tie_word_embeddings": self.tie_word_embeddings,
            "hidden_act": "silu",
            "torch_dtype": "float32",
            "attention_bias": self.attention_bias,
        });
        if let Some(b) = self.bos_token_id {
            v["bos_token_id"] = b.into();
        }
        match self.eos_token_ids.as_slice() {
            [] => {}
            [one] => v["eos_token_id"] = (*one).into(),
            many => v["eos_token_id"] = many.to_vec().into(),
        }
        if self.architecture == Architecture::Gemma3 {
            super::config_gemma3::write_hf(self, &mut v);
        }
        if let Some(s) = self.rope_scaling {
            v["rope_scaling"] = serde_json::json!({
                "rope_type": "llama3",
                "factor": s.factor,
                "low_freq_factor": s.low_freq_factor,
                "high_freq_factor": s.high_freq_factor,
                "original_max_position_embeddings": s.original_max_position_embeddings,
            });
        }
        v
    }

    /// The factor on attention scores: `1 / √query_pre_attn_scalar` where the style sets
    /// it (Gemma), else `1 / √head_dim`.
    pub fn attention_scale(&self) -> f64 {
        1.0 / self
            .style
            .query_pre_attn_scalar
            .unwrap_or(self.head_dim as f64)
            .sqrt()
    }

    /// Bytes the weights take in memory: the studio computes in f32, four bytes each,
    /// whatever the file's precision.
    pub fn f32_weight_bytes(&self) -> usize {
        self.parameter_count().saturating_mul(4)
    }

    /// Parameters in the matmuls plus embeddings and norms (saturating; exact for a
    /// validated config).
    pub fn parameter_count(&self) -> usize {
        self.checked_parameter_count().unwrap_or(usize::MAX)
    }

    /// [`Self::parameter_count`], `None` where it overflows.
    pub fn checked_parameter_count(&self) -> Option<usize> {
        let h = self.hidden_size;
        let q = self.num_attention_heads.checked_mul(self.head_dim)?;
        let kv = self.num_key_value_heads.checked_mul(self.head_dim)?;
        let hq = h.checked_mul(q)?;
        let per_layer = hq
            .checked_mul(2)?
            .checked_add(h.checked_mul(kv)?.checked_mul(2)?)?
            .checked_add(h.checked_mul(self.intermediate_size)?.checked_mul(3)?)?
            .checked_add(h.checked_mul(if self.style.sandwich_norms { 4 } else { 2 })?)?;
        let embed = self.vocab_size.checked_mul(h)?;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        self.num_hidden_layers
            .checked_mul(per_layer)?
            .checked_add(embed)?
            .checked_add(head)?
            .checked_add(h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_smollm2_style_config() {
        let text = r#"{"model_type":"llama","vocab_size":49152,"hidden_size":576,"intermediate_size":1536,
            "num_hidden_layers":30,"num_attention_heads":9,"num_key_value_heads":3,"rms_norm_eps":1e-5,
            "rope_theta":100000,"tie_word_embeddings":true,"bos_token_id":1,"eos_token_id":2}"#;
        let c = ModelConfig::from_hf_json(text, "config.json").unwrap();
        assert_eq!(c.head_dim, 64);
        assert_eq!(c.architecture, Architecture::Llama);
        assert_eq!(c.eos_token_ids, vec![2]);
        assert!(!c.attention_bias);
        let back = ModelConfig::from_hf_json(&c.to_hf_json().to_string(), "x").unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn llama3_rope_scaling_from_transformers5_rope_parameters() {
        let text = r#"{"model_type":"llama","vocab_size":10,"hidden_size":8,"intermediate_size":16,
            "num_hidden_layers":1,"num_attention_heads":2,
            "rope_parameters":{"rope_type":"llama3","rope_theta":500000.0,"factor":8.0,"low_freq_factor":1.0,
            "high_freq_factor":4.0,"original_max_position_embeddings":8192}}"#;
        let c = ModelConfig::from_hf_json(text, "config.json").unwrap();
        assert_eq!(c.rope_theta, 500000.0);
        assert_eq!(c.rope_scaling.unwrap().factor, 8.0);
    }

    #[test]
    fn the_limits_admit_the_largest_llama_and_a_stated_head_dim() {
        // Llama 3.1 405B's config.json (the fields read here).
        let text = r#"{"model_type":"llama","vocab_size":128256,"hidden_size":16384,
            "intermediate_size":53248,"num_hidden_layers":126,"num_attention_heads":128,
            "num_key_value_heads":8,"rms_norm_eps":1e-5,"rope_theta":500000.0,
            "max_position_embeddings":131072,"bos_token_id":128000,
            "eos_token_id":[128001,128008,128009],"rope_scaling":{"factor":8.0,
            "low_freq_factor":1.0,"high_freq_factor":4.0,
            "original_max_position_embeddings":8192,"rope_type":"llama3"}}"#;
        let c = ModelConfig::from_hf_json(text, "config.json").unwrap();
        let billions = c.parameter_count() as f64 / 1e9;
        assert!((400.0..410.0).contains(&billions), "{billions}");
        // Qwen3-style: head_dim stated, so the query width need not equal hidden_size.
        let text = r#"{"model_type":"qwen3","vocab_size":151936,"hidden_size":1024,
            "intermediate_size":3072,"num_hidden_layers":28,"num_attention_heads":16,
            "num_key_value_heads":8,"head_dim":128,"max_position_embeddings":40960}"#;
        let c = ModelConfig::from_hf_json(text, "config.json").unwrap();
        assert_eq!(c.num_attention_heads * c.head_dim, 2048);
    }

    #[test]
    fn validation_names_the_field_as_the_file_spells_it() {
        let mut c = crate::testkit::tiny_config(Architecture::Llama);
        c.num_key_value_heads = 0;
        let e = c
            .validate(
                std::path::Path::new("m.gguf"),
                &ConfigKeys::gguf("llama", false),
            )
            .unwrap_err()
            .to_string();
        assert_eq!(e, "m.gguf: llama.attention.head_count_kv is 0");
        c.num_key_value_heads = 2;
        c.hidden_size = limits::HIDDEN_SIZE + 1;
        let e = c
            .validate(
                std::path::Path::new("config.json"),
                &ConfigKeys::hf_json(true),
            )
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("config.json: hidden_size is 131073"), "{e}");
        c.hidden_size = 64;
        c.rms_norm_eps = f64::NAN;
        assert!(c
            .validate(std::path::Path::new("c"), &ConfigKeys::hf_json(false))
            .is_err());
        c.rms_norm_eps = 1e-5;
        c.eos_token_ids = vec![c.vocab_size as u32];
        let e = c
            .validate(std::path::Path::new("c"), &ConfigKeys::hf_json(false))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("eos_token_id") && e.contains("outside the vocabulary"),
            "{e}"
        );
    }

    #[test]
    fn unsupported_architecture_is_named() {
        let text = r#"{"model_type":"gpt_neox","vocab_size":10,"hidden_size":8,"intermediate_size":16,
            "num_hidden_layers":1,"num_attention_heads":2}"#;
        let e = ModelConfig::from_hf_json(text, "/m/config.json")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("gpt_neox") && e.contains("/m/config.json"),
            "{e}"
        );
    }
}
