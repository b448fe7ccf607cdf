//! What a GGUF file says besides its tensors: the model config (`{arch}.*` keys), the
//! tokenizer (`tokenizer.ggml.*`) and the chat template (`tokenizer.chat_template`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;

use super::config::{Architecture, ModelConfig};
use super::ModelError;
use crate::text::tokenizer::GgufTokenizerSpec;

type Metadata = HashMap<String, Value>;

fn get_str<'a>(md: &'a Metadata, key: &str) -> Option<&'a str> {
    md.get(key)
        .and_then(|v| v.to_string().ok())
        .map(|s| s.as_str())
}

fn get_u64(md: &Metadata, key: &str) -> Option<u64> {
    let v = md.get(key)?;
    v.to_u64()
        .ok()
        .or_else(|| v.to_u32().ok().map(u64::from))
        .or_else(|| v.to_i32().ok().map(|x| x.max(0) as u64))
        .or_else(|| v.to_i64().ok().map(|x| x.max(0) as u64))
}

fn get_f32(md: &Metadata, key: &str) -> Option<f32> {
    let v = md.get(key)?;
    v.to_f32()
        .ok()
        .or_else(|| v.to_f64().ok().map(|x| x as f32))
}

fn get_bool(md: &Metadata, key: &str) -> Option<bool> {
    md.get(key).and_then(|v| v.to_bool().ok())
}

fn get_strings(md: &Metadata, key: &str) -> Option<Vec<String>> {
    let arr = md.get(key)?.to_vec().ok()?;
    arr.iter().map(|v| v.to_string().ok().cloned()).collect()
}

fn get_f32s(md: &Metadata, key: &str) -> Option<Vec<f32>> {
    let arr = md.get(key)?.to_vec().ok()?;
    arr.iter()
        .map(|v| {
            v.to_f32()
                .ok()
                .or_else(|| v.to_f64().ok().map(|x| x as f32))
        })
        .collect()
}

fn get_i32s(md: &Metadata, key: &str) -> Option<Vec<i32>> {
    let arr = md.get(key)?.to_vec().ok()?;
    arr.iter()
        .map(|v| {
            v.to_i32()
                .ok()
                .or_else(|| v.to_u32().ok().map(|x| x as i32))
        })
        .collect()
}

/// The `general.architecture` value.
pub fn architecture_name(md: &Metadata) -> Option<&str> {
    get_str(md, "general.architecture")
}

/// Builds the model config from GGUF metadata. `has_output` says whether an untied
/// `output.weight` tensor exists.
pub fn config_from_metadata(
    md: &Metadata,
    has_output: bool,
    path: &Path,
) -> Result<ModelConfig, ModelError> {
    let arch_name = architecture_name(md).unwrap_or("");
    let architecture = Architecture::from_model_type(arch_name).ok_or_else(|| {
        ModelError::UnsupportedArchitecture {
            path: path.into(),
            found: arch_name.to_string(),
        }
    })?;
    let need = |key: &str| -> Result<u64, ModelError> {
        get_u64(md, &format!("{arch_name}.{key}")).ok_or_else(|| ModelError::Config {
            path: path.into(),
            message: format!("metadata key `{arch_name}.{key}` is missing"),
        })
    };
    let hidden = need("embedding_length")? as usize;
    let heads = need("attention.head_count")? as usize;
    if heads == 0 {
        return Err(ModelError::Config {
            path: path.into(),
            message: "attention.head_count is 0".into(),
        });
    }
    let kv_heads = get_u64(md, &format!("{arch_name}.attention.head_count_kv"))
        .map(|x| x as usize)
        .unwrap_or(heads);
    let vocab = get_u64(md, &format!("{arch_name}.vocab_size"))
        .map(|x| x as usize)
        .or_else(|| {
            md.get("tokenizer.ggml.tokens")
                .and_then(|v| v.to_vec().ok())
                .map(|v| v.len())
        })
        .ok_or_else(|| ModelError::Config {
            path: path.into(),
            message: "cannot tell the vocabulary size".into(),
        })?;
    let head_dim = get_u64(md, &format!("{arch_name}.attention.key_length"))
        .map(|x| x as usize)
        .unwrap_or(hidden / heads);
    let eos = get_u64(md, "tokenizer.ggml.eos_token_id").map(|x| x as u32);
    Ok(ModelConfig {
        architecture,
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: need("feed_forward_length")? as usize,
        num_hidden_layers: need("block_count")? as usize,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim,
        rms_norm_eps: get_f32(md, &format!("{arch_name}.attention.layer_norm_rms_epsilon"))
            .unwrap_or(1e-5) as f64,
        rope_theta: get_f32(md, &format!("{arch_name}.rope.freq_base")).unwrap_or(10_000.0),
        rope_scaling: None,
        max_position_embeddings: get_u64(md, &format!("{arch_name}.context_length")).unwrap_or(4096)
            as usize,
        tie_word_embeddings: !has_output,
        attention_bias: architecture.default_qkv_bias(),
        bos_token_id: get_u64(md, "tokenizer.ggml.bos_token_id").map(|x| x as u32),
        eos_token_ids: eos.into_iter().collect(),
    })
}

/// Reads the tokenizer description. A SentencePiece-style vocabulary (`llama`) adds BOS
/// unless the file says otherwise, as llama.cpp and transformers do.
pub fn tokenizer_spec(md: &Metadata, path: &Path) -> Result<GgufTokenizerSpec, ModelError> {
    let bad = |m: String| crate::text::TextError::Tokenizer {
        path: path.into(),
        message: m,
    };
    let tokens = get_strings(md, "tokenizer.ggml.tokens")
        .ok_or_else(|| bad("metadata has no `tokenizer.ggml.tokens`".into()))?;
    let model = get_str(md, "tokenizer.ggml.model")
        .unwrap_or("gpt2")
        .to_string();
    let scores = match md.get("tokenizer.ggml.scores") {
        None => Vec::new(),
        Some(_) => get_f32s(md, "tokenizer.ggml.scores")
            .ok_or_else(|| bad("`tokenizer.ggml.scores` is not an array of numbers".into()))?,
    };
    let add_bos_default = model == "llama";
    Ok(GgufTokenizerSpec {
        pre: get_str(md, "tokenizer.ggml.pre").map(str::to_string),
        token_types: get_i32s(md, "tokenizer.ggml.token_type")
            .unwrap_or_else(|| vec![1; tokens.len()]),
        merges: get_strings(md, "tokenizer.ggml.merges").unwrap_or_default(),
        scores,
        bos_id: get_u64(md, "tokenizer.ggml.bos_token_id").map(|x| x as u32),
        eos_id: get_u64(md, "tokenizer.ggml.eos_token_id").map(|x| x as u32),
        pad_id: get_u64(md, "tokenizer.ggml.padding_token_id").map(|x| x as u32),
        unk_id: get_u64(md, "tokenizer.ggml.unknown_token_id").map(|x| x as u32),
        add_bos: get_bool(md, "tokenizer.ggml.add_bos_token").unwrap_or(add_bos_default),
        add_eos: get_bool(md, "tokenizer.ggml.add_eos_token").unwrap_or(false),
        add_space_prefix: get_bool(md, "tokenizer.ggml.add_space_prefix"),
        model,
        tokens,
    })
}

/// The chat template, when the file has one.
pub fn chat_template(md: &Metadata) -> Option<String> {
    get_str(md, "tokenizer.chat_template").map(str::to_string)
}
