//! What a GGUF file says besides its tensors: the model config (`{arch}.*` keys), the
//! tokenizer (`tokenizer.ggml.*`) and the chat template (`tokenizer.chat_template`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;

use super::block_style::{BlockStyle, GEMMA3_SLIDING_PATTERN};
use super::config::{Architecture, ConfigKeys, ModelConfig};
use super::ModelError;
use crate::text::tokenizer::GgufTokenizerSpec;

type Metadata = HashMap<String, Value>;

fn get_str<'a>(md: &'a Metadata, key: &str) -> Option<&'a str> {
    md.get(key)
        .and_then(|v| v.to_string().ok())
        .map(|s| s.as_str())
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

/// A metadata value's type, for messages.
fn type_name(v: &Value) -> &'static str {
    match v {
        Value::U8(_) => "u8",
        Value::I8(_) => "i8",
        Value::U16(_) => "u16",
        Value::I16(_) => "i16",
        Value::U32(_) => "u32",
        Value::I32(_) => "i32",
        Value::U64(_) => "u64",
        Value::I64(_) => "i64",
        Value::F32(_) => "f32",
        Value::F64(_) => "f64",
        Value::Bool(_) => "bool",
        Value::String(_) => "string",
        Value::Array(_) => "array",
    }
}

/// An integer metadata value that must be non-negative; `Ok(None)` when absent.
fn count(md: &Metadata, key: &str) -> Result<Option<u64>, String> {
    let Some(v) = md.get(key) else {
        return Ok(None);
    };
    let n: Option<i128> = match v {
        Value::U8(x) => Some((*x).into()),
        Value::I8(x) => Some((*x).into()),
        Value::U16(x) => Some((*x).into()),
        Value::I16(x) => Some((*x).into()),
        Value::U32(x) => Some((*x).into()),
        Value::I32(x) => Some((*x).into()),
        Value::U64(x) => Some((*x).into()),
        Value::I64(x) => Some((*x).into()),
        _ => None,
    };
    match n {
        Some(n) => u64::try_from(n)
            .map(Some)
            .map_err(|_| format!("{key} is {n}, expected a non-negative integer")),
        None => Err(format!("{key} is a {}, expected an integer", type_name(v))),
    }
}

/// A floating-point metadata value; `Ok(None)` when absent.
fn float(md: &Metadata, key: &str) -> Result<Option<f64>, String> {
    match md.get(key) {
        None => Ok(None),
        Some(Value::F32(x)) => Ok(Some(f64::from(*x))),
        Some(Value::F64(x)) => Ok(Some(*x)),
        Some(v) => Err(format!("{key} is a {}, expected a number", type_name(v))),
    }
}

/// A size as `usize` (the limits in [`ModelConfig::validate`] are far below `u32::MAX`,
/// so anything beyond is cut to a value that fails them).
fn size(n: u64) -> usize {
    usize::try_from(n).unwrap_or(usize::MAX)
}

/// A token id, refused beyond `u32`.
fn token_id(md: &Metadata, key: &str) -> Result<Option<u32>, String> {
    count(md, key)?
        .map(|n| u32::try_from(n).map_err(|_| format!("{key} is {n}, beyond any vocabulary")))
        .transpose()
}

/// Builds the model config from GGUF metadata and validates it. `has_output` says whether
/// an untied `output.weight` tensor exists. Errors name the metadata key.
pub fn config_from_metadata(
    md: &Metadata,
    has_output: bool,
    path: &Path,
) -> Result<ModelConfig, ModelError> {
    let bad = |message: String| ModelError::Config {
        path: path.into(),
        message,
    };
    let arch_name = architecture_name(md).unwrap_or("");
    let architecture = Architecture::from_gguf_name(arch_name).ok_or_else(|| {
        ModelError::UnsupportedArchitecture {
            path: path.into(),
            found: arch_name.to_string(),
        }
    })?;
    let key = |k: &str| format!("{arch_name}.{k}");
    let opt = |k: &str| count(md, &key(k)).map_err(bad);
    let need = |k: &str| -> Result<usize, ModelError> {
        opt(k)?
            .map(size)
            .ok_or_else(|| bad(format!("metadata key `{}` is missing", key(k))))
    };
    let hidden = need("embedding_length")?;
    let heads = need("attention.head_count")?;
    let kv_heads = opt("attention.head_count_kv")?.map(size).unwrap_or(heads);
    let stated_vocab = opt("vocab_size")?;
    let vocab = match stated_vocab {
        Some(n) => size(n),
        None => match md.get("tokenizer.ggml.tokens") {
            Some(Value::Array(tokens)) => tokens.len(),
            _ => return Err(bad("cannot tell the vocabulary size".into())),
        },
    };
    let stated_head_dim = opt("attention.key_length")?;
    let head_dim = match stated_head_dim {
        Some(n) => size(n),
        // Checked here only to compute the default; `validate` says what is wrong.
        None => hidden.checked_div(heads).unwrap_or(0),
    };
    let mut keys = ConfigKeys::gguf(arch_name, stated_head_dim.is_some());
    if stated_vocab.is_none() {
        keys.vocab_size = "the length of tokenizer.ggml.tokens".into();
    }
    let eos = token_id(md, "tokenizer.ggml.eos_token_id").map_err(bad)?;
    let layers = need("block_count")?;
    let style = match architecture {
        Architecture::Gemma3 => {
            gemma3_style(md, arch_name, layers, (hidden, heads, head_dim)).map_err(bad)?
        }
        _ => BlockStyle::for_architecture(architecture),
    };
    let default_eps = if architecture == Architecture::Gemma3 {
        1e-6
    } else {
        1e-5
    };
    let config = ModelConfig {
        architecture,
        vocab_size: vocab,
        hidden_size: hidden,
        intermediate_size: need("feed_forward_length")?,
        num_hidden_layers: layers,
        num_attention_heads: heads,
        num_key_value_heads: kv_heads,
        head_dim,
        rms_norm_eps: float(md, &key("attention.layer_norm_rms_epsilon"))
            .map_err(bad)?
            .unwrap_or(default_eps),
        rope_theta: float(md, &key("rope.freq_base"))
            .map_err(bad)?
            .unwrap_or(10_000.0) as f32,
        rope_scaling: None,
        max_position_embeddings: opt("context_length")?.map(size).unwrap_or(4096),
        tie_word_embeddings: !has_output,
        attention_bias: architecture.default_qkv_bias(),
        bos_token_id: token_id(md, "tokenizer.ggml.bos_token_id").map_err(bad)?,
        eos_token_ids: eos.into_iter().collect(),
        style,
    };
    config.validate(path, &keys)?;
    // The transformer gives keys and values the same head dim and rotates all of it.
    for k in ["attention.value_length", "rope.dimension_count"] {
        if let Some(n) = opt(k)? {
            if n != head_dim as u64 {
                return Err(bad(format!(
                    "{} is {n}, but the head dim is {head_dim} ({}); only models whose values and rotary embeddings span the whole head are supported",
                    key(k),
                    if stated_head_dim.is_some() {
                        keys.head_dim.clone()
                    } else {
                        format!("{} / {}", keys.hidden_size, keys.num_attention_heads)
                    }
                )));
            }
        }
    }
    Ok(config)
}

/// Gemma 3's block style from llama.cpp's metadata: the window
/// (`{arch}.attention.sliding_window`), every sixth layer global, the sliding layers' RoPE
/// base of 10 000 and the attention scale, which llama.cpp does not store but derives as
/// it is done here (`1/√head_dim`, or `1/√(hidden / heads)` for the 62-layer 27B), and
/// the global layers' linear RoPE scaling (`{arch}.rope.scaling.factor`).
fn gemma3_style(
    md: &Metadata,
    arch: &str,
    layers: usize,
    (hidden, heads, head_dim): (usize, usize, usize),
) -> Result<BlockStyle, String> {
    let key = |k: &str| format!("{arch}.{k}");
    let mut style = BlockStyle::for_architecture(Architecture::Gemma3);
    let window_key = key("attention.sliding_window");
    let window =
        count(md, &window_key)?.ok_or_else(|| format!("metadata key `{window_key}` is missing"))?;
    if window == 0 {
        return Err(format!("{window_key} is 0"));
    }
    style.sliding_window = Some(size(window));
    style.layer_types = BlockStyle::pattern_layers(layers, GEMMA3_SLIDING_PATTERN);
    let scalar = if layers == 62 {
        hidden.checked_div(heads).unwrap_or(0)
    } else {
        head_dim
    };
    style.query_pre_attn_scalar = Some(scalar as f64);
    let type_key = key("rope.scaling.type");
    match get_str(md, &type_key) {
        None | Some("linear") | Some("none") => {}
        Some(other) => {
            return Err(format!(
                "{type_key} is `{other}`; Gemma 3 is supported with linear scaling"
            ))
        }
    }
    let factor_key = key("rope.scaling.factor");
    if let Some(f) = float(md, &factor_key)? {
        if !(f.is_finite() && f > 0.0) {
            return Err(format!("{factor_key} is {f}, expected a positive number"));
        }
        style.rope_linear_factor = (f != 1.0).then_some(f as f32);
    }
    Ok(style)
}

/// Reads the tokenizer description. A SentencePiece-style vocabulary (`llama`) adds BOS
/// unless the file says otherwise, as llama.cpp and transformers do.
pub fn tokenizer_spec(md: &Metadata, path: &Path) -> Result<GgufTokenizerSpec, ModelError> {
    let bad = |m: String| crate::text::TextError::Tokenizer {
        path: path.into(),
        message: m,
    };
    let tokens = match md.get("tokenizer.ggml.tokens") {
        None => return Err(bad("metadata has no `tokenizer.ggml.tokens`".into()).into()),
        Some(_) => get_strings(md, "tokenizer.ggml.tokens")
            .ok_or_else(|| bad("`tokenizer.ggml.tokens` is not an array of strings".into()))?,
    };
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
        bos_id: token_id(md, "tokenizer.ggml.bos_token_id").map_err(bad)?,
        eos_id: token_id(md, "tokenizer.ggml.eos_token_id").map_err(bad)?,
        pad_id: token_id(md, "tokenizer.ggml.padding_token_id").map_err(bad)?,
        unk_id: token_id(md, "tokenizer.ggml.unknown_token_id").map_err(bad)?,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::LayerKind;

    /// Gemma 3 270M's metadata as llama.cpp writes it (the keys the config reads).
    fn gemma3_270m() -> Metadata {
        let u = |n: u32| Value::U32(n);
        HashMap::from([
            (
                "general.architecture".into(),
                Value::String("gemma3".into()),
            ),
            ("gemma3.context_length".into(), u(32768)),
            ("gemma3.embedding_length".into(), u(640)),
            ("gemma3.block_count".into(), u(18)),
            ("gemma3.feed_forward_length".into(), u(2048)),
            ("gemma3.attention.head_count".into(), u(4)),
            ("gemma3.attention.head_count_kv".into(), u(1)),
            ("gemma3.attention.key_length".into(), u(256)),
            ("gemma3.attention.value_length".into(), u(256)),
            (
                "gemma3.attention.layer_norm_rms_epsilon".into(),
                Value::F32(1e-6),
            ),
            ("gemma3.rope.freq_base".into(), Value::F32(1e6)),
            ("gemma3.attention.sliding_window".into(), u(512)),
            ("gemma3.vocab_size".into(), u(262144)),
            ("tokenizer.ggml.bos_token_id".into(), u(2)),
            ("tokenizer.ggml.eos_token_id".into(), u(1)),
        ])
    }

    fn read(md: &Metadata) -> Result<ModelConfig, String> {
        config_from_metadata(md, false, Path::new("g.gguf")).map_err(|e| e.to_string())
    }

    #[test]
    fn gemma3_metadata_gives_its_block_style() {
        let c = read(&gemma3_270m()).unwrap();
        assert_eq!(c.architecture, Architecture::Gemma3);
        let s = &c.style;
        assert_eq!(s.sliding_window, Some(512));
        assert_eq!(s.query_pre_attn_scalar, Some(256.0));
        assert_eq!(s.rope_local_theta, Some(10_000.0));
        assert_eq!(s.rope_linear_factor, None);
        let full: Vec<usize> = (0..18)
            .filter(|&i| s.layer_kind(i) == LayerKind::Full)
            .collect();
        assert_eq!(full, [5, 11, 17]);
        assert!(c.tie_word_embeddings && s.sandwich_norms && s.norm_unit_offset);

        // 4B and larger scale their global layers' positions linearly.
        let mut md = gemma3_270m();
        md.insert(
            "gemma3.rope.scaling.type".into(),
            Value::String("linear".into()),
        );
        md.insert("gemma3.rope.scaling.factor".into(), Value::F32(8.0));
        assert_eq!(read(&md).unwrap().style.rope_linear_factor, Some(8.0));
    }

    #[test]
    fn bad_gemma3_metadata_names_the_key() {
        let mut md = gemma3_270m();
        md.remove("gemma3.attention.sliding_window");
        let e = read(&md).unwrap_err();
        assert!(
            e.contains("g.gguf") && e.contains("gemma3.attention.sliding_window"),
            "{e}"
        );
        md.insert("gemma3.attention.sliding_window".into(), Value::U32(0));
        assert!(read(&md).unwrap_err().contains("sliding_window is 0"));
        let mut md = gemma3_270m();
        md.insert(
            "gemma3.attention.sliding_window".into(),
            Value::String("512".into()),
        );
        assert!(read(&md).unwrap_err().contains("expected an integer"));
        let mut md = gemma3_270m();
        md.insert(
            "gemma3.rope.scaling.type".into(),
            Value::String("yarn".into()),
        );
        assert!(read(&md).unwrap_err().contains("gemma3.rope.scaling.type"));
        let mut md = gemma3_270m();
        md.insert("gemma3.rope.scaling.factor".into(), Value::F32(f32::NAN));
        assert!(read(&md)
            .unwrap_err()
            .contains("gemma3.rope.scaling.factor"));
    }
}
