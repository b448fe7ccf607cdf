//! The model configuration: a serde mirror of the Hugging Face `config.json` fields the
//! Llama-family transformer needs, and the same values read from GGUF metadata.

use serde::{Deserialize, Serialize};

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
}

impl Architecture {
    /// The Hugging Face `model_type` string.
    pub fn model_type(self) -> &'static str {
        match self {
            Architecture::Llama => "llama",
            Architecture::Mistral => "mistral",
            Architecture::Qwen2 => "qwen2",
            Architecture::Qwen3 => "qwen3",
        }
    }

    /// The class name transformers writes into `architectures`.
    pub fn hf_class(self) -> &'static str {
        match self {
            Architecture::Llama => "LlamaForCausalLM",
            Architecture::Mistral => "MistralForCausalLM",
            Architecture::Qwen2 => "Qwen2ForCausalLM",
            Architecture::Qwen3 => "Qwen3ForCausalLM",
        }
    }

    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "llama" => Some(Architecture::Llama),
            "mistral" => Some(Architecture::Mistral),
            "qwen2" => Some(Architecture::Qwen2),
            "qwen3" => Some(Architecture::Qwen3),
            _ => None,
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
}

/// The subset of HF `config.json` we read. Unknown keys are ignored.
#[derive(Debug, Deserialize)]
struct HfConfig {
    model_type: Option<String>,
    architectures: Option<Vec<String>>,
    vocab_size: usize,
    hidden_size: usize,
    intermediate_size: usize,
    num_hidden_layers: usize,
    num_attention_heads: usize,
    num_key_value_heads: Option<usize>,
    head_dim: Option<usize>,
    rms_norm_eps: Option<f64>,
    rope_theta: Option<f32>,
    rope_scaling: Option<serde_json::Value>,
    /// transformers 5 moved `rope_theta` and `rope_scaling` here.
    rope_parameters: Option<serde_json::Value>,
    max_position_embeddings: Option<usize>,
    tie_word_embeddings: Option<bool>,
    attention_bias: Option<bool>,
    bos_token_id: Option<serde_json::Value>,
    eos_token_id: Option<serde_json::Value>,
}

fn token_ids(v: &Option<serde_json::Value>) -> Vec<u32> {
    match v {
        Some(serde_json::Value::Number(n)) => {
            n.as_u64().map(|x| vec![x as u32]).unwrap_or_default()
        }
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_u64())
            .map(|x| x as u32)
            .collect(),
        _ => Vec::new(),
    }
}

fn parse_rope_scaling(v: &serde_json::Value) -> Result<Option<Llama3RopeScaling>, String> {
    let kind = v
        .get("rope_type")
        .or_else(|| v.get("type"))
        .and_then(|t| t.as_str())
        .unwrap_or("default");
    match kind {
        "default" => Ok(None),
        "llama3" => {
            let f = |k: &str| v.get(k).and_then(|x| x.as_f64());
            match (
                f("factor"),
                f("low_freq_factor"),
                f("high_freq_factor"),
                f("original_max_position_embeddings"),
            ) {
                (Some(factor), Some(lo), Some(hi), Some(orig)) => Ok(Some(Llama3RopeScaling {
                    factor: factor as f32,
                    low_freq_factor: lo as f32,
                    high_freq_factor: hi as f32,
                    original_max_position_embeddings: orig as usize,
                })),
                _ => Err("rope_scaling of type llama3 lacks factor, low_freq_factor, high_freq_factor or original_max_position_embeddings".into()),
            }
        }
        other => Err(format!(
            "rope_scaling type `{other}` is not supported (supported: default, llama3)"
        )),
    }
}

impl ModelConfig {
    /// Parses a Hugging Face `config.json`. `source` names the file in errors.
    pub fn from_hf_json(text: &str, source: &str) -> Result<Self, ModelError> {
        let bad = |message: String| ModelError::Config {
            path: source.into(),
            message,
        };
        let hf: HfConfig = serde_json::from_str(text).map_err(|e| bad(e.to_string()))?;
        let model_type = hf.model_type.clone().unwrap_or_default();
        let architecture = Architecture::from_model_type(&model_type).ok_or_else(|| {
            ModelError::UnsupportedArchitecture {
                path: source.into(),
                found: if model_type.is_empty() {
                    hf.architectures.clone().unwrap_or_default().join(", ")
                } else {
                    model_type.clone()
                },
            }
        })?;
        if hf.num_attention_heads == 0
            || hf.hidden_size % hf.num_attention_heads != 0 && hf.head_dim.is_none()
        {
            return Err(bad(format!(
                "hidden_size {} is not divisible by num_attention_heads {}",
                hf.hidden_size, hf.num_attention_heads
            )));
        }
        let kv_heads = hf.num_key_value_heads.unwrap_or(hf.num_attention_heads);
        if kv_heads == 0 || hf.num_attention_heads % kv_heads != 0 {
            return Err(bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {kv_heads}",
                hf.num_attention_heads
            )));
        }
        let rope_params = hf.rope_parameters.as_ref();
        let rope_theta = hf
            .rope_theta
            .or_else(|| {
                rope_params
                    .and_then(|p| p.get("rope_theta"))
                    .and_then(|x| x.as_f64())
                    .map(|x| x as f32)
            })
            .unwrap_or(10_000.0);
        let rope_scaling = match (hf.rope_scaling.as_ref(), rope_params) {
            (Some(v), _) if !v.is_null() => parse_rope_scaling(v).map_err(bad)?,
            (_, Some(p)) => parse_rope_scaling(p).map_err(bad)?,
            _ => None,
        };
        Ok(Self {
            architecture,
            vocab_size: hf.vocab_size,
            hidden_size: hf.hidden_size,
            intermediate_size: hf.intermediate_size,
            num_hidden_layers: hf.num_hidden_layers,
            num_attention_heads: hf.num_attention_heads,
            num_key_value_heads: kv_heads,
            head_dim: hf
                .head_dim
                .unwrap_or(hf.hidden_size / hf.num_attention_heads),
            rms_norm_eps: hf.rms_norm_eps.unwrap_or(1e-6),
            rope_theta,
            rope_scaling,
            max_position_embeddings: hf.max_position_embeddings.unwrap_or(4096),
            tie_word_embeddings: hf.tie_word_embeddings.unwrap_or(false),
            attention_bias: hf.attention_bias.unwrap_or(architecture.default_qkv_bias()),
            bos_token_id: token_ids(&hf.bos_token_id).first().copied(),
            eos_token_ids: token_ids(&hf.eos_token_id),
        })
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

    /// Parameters in the matmuls plus embeddings and norms.
    /// Bytes the weights take in memory: the studio computes in f32, four bytes each,
    /// whatever the file's precision.
    pub fn f32_weight_bytes(&self) -> usize {
        self.parameter_count() * 4
    }

    pub fn parameter_count(&self) -> usize {
        let h = self.hidden_size;
        let q = self.num_attention_heads * self.head_dim;
        let kv = self.num_key_value_heads * self.head_dim;
        let per_layer = h * q + 2 * h * kv + q * h + 3 * h * self.intermediate_size + 2 * h;
        let embed = self.vocab_size * h;
        let head = if self.tie_word_embeddings { 0 } else { embed };
        self.num_hidden_layers * per_layer + embed + head + h
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
