//! Writing a model as GGUF for llama.cpp and Ollama: llama.cpp's metadata keys, tensor
//! names and Q/K row permutation, the tokenizer as `tokenizer.ggml.*` (byte-level BPE, or
//! the SentencePiece-style vocabulary a GGUF file brought), the chat template,
//! and f32 / f16 / q8_0 tensors (norms and biases stay f32).

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Tensor;

use crate::model::config::Architecture;
use crate::model::weights::{hf_to_gguf_name_in, permute_qk};
use crate::model::{Model, ModelError};
use crate::text::tokenizer_spm::{token_type, SpmVocab};

/// Tensor types the exporter writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GgufType {
    F32,
    F16,
    Q8_0,
    /// llama.cpp's Q4_K_M mix: Q4_K, with Q6_K for the output and for half the layers'
    /// `attn_v` and `ffn_down`.
    #[serde(rename = "q4_k_m")]
    Q4KM,
    /// Each matrix in the type the base model stored it in (a quantized base stays in its
    /// own quantization, the merged layers re-quantized to their type).
    Source,
}

impl GgufType {
    /// The name `finetune-studio export --gguf-type` takes.
    pub fn name(self) -> &'static str {
        match self {
            GgufType::F32 => "f32",
            GgufType::F16 => "f16",
            GgufType::Q8_0 => "q8_0",
            GgufType::Q4KM => "q4_k_m",
            GgufType::Source => "source",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        [
            GgufType::F32,
            GgufType::F16,
            GgufType::Q8_0,
            GgufType::Q4KM,
            GgufType::Source,
        ]
        .into_iter()
        .find(|t| t.name() == name)
    }

    /// llama.cpp's `general.file_type` for the file.
    fn file_type(self) -> u32 {
        // Source: the most common type of the file decides; written by the caller.
        crate::model::file_type::number(self.name()).unwrap_or(1)
    }
}

/// The type each matrix of `model` is stored in, by Hugging Face name (f32 for the ones
/// held in f32): what [`GgufType::Source`] writes.
pub fn stored_types(model: &Model) -> HashMap<String, GgmlDType> {
    let t = &model.transformer;
    let ty = |w: &crate::model::FrozenWeight| w.stored_type().map_or(GgmlDType::F32, |s| s.ggml());
    let mut out = HashMap::from([("model.embed_tokens.weight".to_string(), ty(&t.embed_tokens))]);
    for (i, l) in t.layers.iter().enumerate() {
        for target in crate::model::lora::LoraTarget::ALL {
            let name = format!(
                "model.layers.{i}.{}.{}.weight",
                target.parent(),
                target.module_name()
            );
            out.insert(name, ty(&l.linear(target).weight));
        }
    }
    if !t.ties_embeddings() {
        out.insert("lm_head.weight".into(), ty(&t.lm_head.weight));
    }
    out
}

/// The type a matrix `gname` (GGUF name) with rows of `row_len` values is written in.
fn matrix_type(
    dtype: GgufType,
    hf_name: &str,
    gname: &str,
    row_len: usize,
    layers: usize,
    tied: bool,
    source: &HashMap<String, GgmlDType>,
) -> GgmlDType {
    let want = match dtype {
        GgufType::F32 => GgmlDType::F32,
        GgufType::F16 => GgmlDType::F16,
        GgufType::Q8_0 => GgmlDType::Q8_0,
        GgufType::Q4KM => {
            let layer = gname
                .strip_prefix("blk.")
                .and_then(|r| r.split('.').next())
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let role = if gname == "output.weight" || (tied && gname == "token_embd.weight") {
                super::quant_policy::Role::Output
            } else if gname.ends_with("attn_v.weight") {
                super::quant_policy::Role::AttnV
            } else if gname.ends_with("ffn_down.weight") {
                super::quant_policy::Role::FfnDown
            } else {
                super::quant_policy::Role::Other
            };
            super::quant_policy::q4_k_m_type(role, row_len, layer, layers)
        }
        GgufType::Source => source.get(hf_name).copied().unwrap_or(GgmlDType::F16),
    };
    // Rows that are not whole blocks of the type fall back as llama.cpp does.
    let block = want.block_size();
    if row_len.is_multiple_of(block) {
        want
    } else if row_len.is_multiple_of(32) && want != GgmlDType::F16 && want != GgmlDType::F32 {
        GgmlDType::Q8_0
    } else if want == GgmlDType::F32 {
        want
    } else {
        GgmlDType::F16
    }
}

/// llama.cpp's architecture name (Mistral files use `llama`).
fn gguf_arch(a: Architecture) -> &'static str {
    match a {
        Architecture::Llama | Architecture::Mistral => "llama",
        Architecture::Qwen2 => "qwen2",
        Architecture::Qwen3 => "qwen3",
        Architecture::Gemma3 => "gemma3",
    }
}

/// Every weight of `model` under its Hugging Face name, as f32 (matrices stored
/// quantized are dequantized).
pub fn named_weights(model: &Model) -> candle_core::Result<Vec<(String, Tensor)>> {
    let t = &model.transformer;
    let dev = t.device();
    let mut out = vec![(
        "model.embed_tokens.weight".to_string(),
        t.embed_tokens.to_f32(dev)?,
    )];
    for (i, l) in t.layers.iter().enumerate() {
        let p = format!("model.layers.{i}");
        // Gemma's checkpoints keep `w` of its `x · (1 + w)` norms; the layers hold `1 + w`.
        let stored = |n: &crate::model::transformer::RmsNorm| -> candle_core::Result<Tensor> {
            if model.config().style.norm_unit_offset {
                n.weight.affine(1.0, -1.0)
            } else {
                Ok(n.weight.clone())
            }
        };
        out.push((
            format!("{p}.input_layernorm.weight"),
            stored(&l.input_norm)?,
        ));
        let pre_mlp = if l.attn_out_norm.is_some() {
            "pre_feedforward_layernorm"
        } else {
            "post_attention_layernorm"
        };
        out.push((format!("{p}.{pre_mlp}.weight"), stored(&l.pre_mlp_norm)?));
        if let Some(n) = &l.attn_out_norm {
            out.push((format!("{p}.post_attention_layernorm.weight"), stored(n)?));
        }
        if let Some(n) = &l.mlp_out_norm {
            out.push((format!("{p}.post_feedforward_layernorm.weight"), stored(n)?));
        }
        for target in crate::model::lora::LoraTarget::ALL {
            let lin = l.linear(target);
            let base = format!("{p}.{}.{}", target.parent(), target.module_name());
            out.push((format!("{base}.weight"), lin.weight.to_f32(dev)?));
            if let Some(b) = &lin.bias {
                out.push((format!("{base}.bias"), b.clone()));
            }
        }
        if let Some(n) = &l.q_norm {
            out.push((format!("{p}.self_attn.q_norm.weight"), stored(n)?));
        }
        if let Some(n) = &l.k_norm {
            out.push((format!("{p}.self_attn.k_norm.weight"), stored(n)?));
        }
    }
    let final_norm = if model.config().style.norm_unit_offset {
        t.norm.weight.affine(1.0, -1.0)?
    } else {
        t.norm.weight.clone()
    };
    out.push(("model.norm.weight".to_string(), final_norm));
    if !t.ties_embeddings() {
        out.push(("lm_head.weight".to_string(), t.lm_head.weight.to_f32(dev)?));
    }
    Ok(out)
}

/// `tokenizer.ggml.pre`: the source GGUF's own, else the one llama.cpp knows for the
/// `tokenizer.json` pre-tokenizer, else `default` (with a warning: llama.cpp will then
/// split text differently from the studio).
fn pre_name(model: &Model) -> String {
    if let Some(pre) = &model.tokenizer.gguf_pre {
        return pre.clone();
    }
    let pre_tokenizer = model
        .tokenizer
        .pipeline()
        .get("pre_tokenizer")
        .cloned()
        .unwrap_or_default();
    match crate::text::tokenizer::gguf_pre_name(&pre_tokenizer) {
        Some(name) => name.to_string(),
        None => {
            tracing::warn!(
                "{}: the pre-tokenizer is not one llama.cpp knows; writing `default`, so llama.cpp may tokenize prompts differently",
                model.location.path().display()
            );
            "default".to_string()
        }
    }
}

/// `tokenizer.ggml.*` and the chat template: the SentencePiece-style vocabulary a GGUF
/// file gave the tokenizer, or that a SentencePiece-style `tokenizer.json` holds (`llama`),
/// else byte-level BPE from `tokenizer.json` (`gpt2`).
fn tokenizer_metadata(model: &Model) -> Result<Vec<(String, Value)>, ModelError> {
    let mut md = match model.tokenizer.spm_vocab() {
        Some(spm) => spm_vocab_metadata(model, spm),
        None => match crate::text::tokenizer_spm::spm_vocab_from_tokenizer_json(
            model.tokenizer.to_json()?,
        ) {
            Some(spm) => spm_vocab_metadata(model, &spm),
            None => byte_level_vocab_metadata(model)?,
        },
    };
    md.push((
        "tokenizer.chat_template".to_string(),
        Value::String(model.template.source().to_string()),
    ));
    let id_of = |t: &Option<String>| t.as_deref().and_then(|t| model.tokenizer.token_to_id(t));
    for (key, tok) in [
        ("bos_token_id", &model.tokenizer.bos_token),
        ("eos_token_id", &model.tokenizer.eos_token),
        ("padding_token_id", &model.tokenizer.pad_token),
        ("unknown_token_id", &model.tokenizer.unk_token),
    ] {
        if let Some(id) = id_of(tok) {
            md.push((format!("tokenizer.ggml.{key}"), Value::U32(id)));
        }
    }
    Ok(md)
}

/// A SentencePiece-style vocabulary as llama.cpp's converter writes one: tokens, scores
/// and token types (rows past the vocabulary as unused `[PAD{i}]`), the file's merges if
/// it had any, and the BOS / EOS / space-prefix flags.
fn spm_vocab_metadata(model: &Model, spm: &SpmVocab) -> Vec<(String, Value)> {
    let size = spm.tokens.len().max(model.config().vocab_size);
    let pad = spm.tokens.len()..size;
    let tokens = spm
        .tokens
        .iter()
        .cloned()
        .chain(pad.clone().map(|i| format!("[PAD{i}]")))
        .map(Value::String);
    let scores = spm
        .scores
        .iter()
        .copied()
        .chain(pad.clone().map(|_| -1000.0));
    let types = spm
        .token_types
        .iter()
        .copied()
        .chain(pad.map(|_| token_type::UNUSED));
    let key = |k: &str| format!("tokenizer.ggml.{k}");
    let mut md = vec![
        (key("model"), Value::String("llama".into())),
        (key("tokens"), Value::Array(tokens.collect())),
        (
            key("scores"),
            Value::Array(scores.map(Value::F32).collect()),
        ),
        (
            key("token_type"),
            Value::Array(types.map(Value::I32).collect()),
        ),
        (key("add_bos_token"), Value::Bool(spm.add_bos)),
        (key("add_eos_token"), Value::Bool(spm.add_eos)),
        (key("add_space_prefix"), Value::Bool(spm.add_space_prefix)),
    ];
    if let Some(pre) = &model.tokenizer.gguf_pre {
        md.push((key("pre"), Value::String(pre.clone())));
    }
    if !spm.merges.is_empty() {
        let merges = spm.merges.iter().cloned().map(Value::String).collect();
        md.push((key("merges"), Value::Array(merges)));
    }
    md
}

/// Byte-level BPE from `tokenizer.json`: `/model/vocab`, added tokens and merges.
fn byte_level_vocab_metadata(model: &Model) -> Result<Vec<(String, Value)>, ModelError> {
    let json = model.tokenizer.to_json()?;
    let bad = |m: &str| crate::text::TextError::Tokenizer {
        path: model.location.path().into(),
        message: m.into(),
    };
    let vocab = json
        .pointer("/model/vocab")
        .and_then(|v| v.as_object())
        .ok_or_else(|| bad("tokenizer has no BPE vocab"))?;
    let size = model.tokenizer.vocab_size().max(model.config().vocab_size);
    let mut tokens = vec![String::new(); size];
    let mut types = vec![1i32; size];
    for (tok, id) in vocab {
        if let Some(id) = id.as_u64().map(|x| x as usize).filter(|&i| i < size) {
            tokens[id] = tok.clone();
        }
    }
    if let Some(added) = json.get("added_tokens").and_then(|a| a.as_array()) {
        for t in added {
            let (Some(id), Some(content)) = (
                t.get("id").and_then(|x| x.as_u64()),
                t.get("content").and_then(|x| x.as_str()),
            ) else {
                continue;
            };
            if let Some(slot) = tokens.get_mut(id as usize) {
                *slot = content.to_string();
                types[id as usize] = if t.get("special").and_then(|s| s.as_bool()).unwrap_or(false)
                {
                    3
                } else {
                    4
                };
            }
        }
    }
    for (i, t) in tokens.iter_mut().enumerate() {
        if t.is_empty() {
            *t = format!("[PAD{i}]");
            types[i] = 5;
        }
    }
    let merges: Vec<Value> = json
        .pointer("/model/merges")
        .and_then(|m| m.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|m| match m {
                    serde_json::Value::String(s) => Some(s.clone()),
                    serde_json::Value::Array(p) if p.len() == 2 => Some(format!(
                        "{} {}",
                        p[0].as_str().unwrap_or(""),
                        p[1].as_str().unwrap_or("")
                    )),
                    _ => None,
                })
                .map(Value::String)
                .collect()
        })
        .unwrap_or_default();
    Ok(vec![
        (
            "tokenizer.ggml.model".to_string(),
            Value::String("gpt2".into()),
        ),
        (
            "tokenizer.ggml.pre".to_string(),
            Value::String(pre_name(model)),
        ),
        (
            "tokenizer.ggml.tokens".to_string(),
            Value::Array(tokens.into_iter().map(Value::String).collect()),
        ),
        (
            "tokenizer.ggml.token_type".to_string(),
            Value::Array(types.into_iter().map(Value::I32).collect()),
        ),
        ("tokenizer.ggml.merges".to_string(), Value::Array(merges)),
        (
            "tokenizer.ggml.add_bos_token".to_string(),
            Value::Bool(false),
        ),
    ])
}

/// Writes `model` (with any adapter already merged into its weights) to `path` as GGUF;
/// [`GgufType::Source`] keeps the types `model` holds its matrices in.
pub fn write_gguf(model: &Model, path: &Path, dtype: GgufType) -> Result<(), ModelError> {
    write_gguf_with(model, path, dtype, &stored_types(model))
}

/// [`write_gguf`] with the matrices' types for [`GgufType::Source`] given: [`stored_types`]
/// of the base before an adapter was merged into it (merged layers are held in f32).
pub fn write_gguf_with(
    model: &Model,
    path: &Path,
    dtype: GgufType,
    source: &HashMap<String, GgmlDType>,
) -> Result<(), ModelError> {
    let c = model.config();
    let gemma = c.architecture == Architecture::Gemma3;
    if gemma {
        gemma3_representable(c).map_err(|message| ModelError::Config {
            path: path.into(),
            message,
        })?;
    }
    let arch = gguf_arch(c.architecture);
    let u32_keys: [(&str, usize); 10] = [
        ("context_length", c.max_position_embeddings),
        ("embedding_length", c.hidden_size),
        ("block_count", c.num_hidden_layers),
        ("feed_forward_length", c.intermediate_size),
        ("attention.head_count", c.num_attention_heads),
        ("attention.head_count_kv", c.num_key_value_heads),
        ("rope.dimension_count", c.head_dim),
        ("attention.key_length", c.head_dim),
        ("attention.value_length", c.head_dim),
        ("vocab_size", c.vocab_size),
    ];
    let file_type = match dtype {
        GgufType::Source => most_common_file_type(source),
        other => other.file_type(),
    };
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String(arch.into())),
        ("general.name".into(), Value::String(model.name.clone())),
        ("general.file_type".into(), Value::U32(file_type)),
        (
            format!("{arch}.attention.layer_norm_rms_epsilon"),
            Value::F32(c.rms_norm_eps as f32),
        ),
        (format!("{arch}.rope.freq_base"), Value::F32(c.rope_theta)),
    ];
    md.extend(
        u32_keys
            .iter()
            .map(|(k, v)| (format!("{arch}.{k}"), Value::U32(*v as u32))),
    );
    if gemma {
        md.extend(gemma3_metadata(c));
    }
    md.extend(tokenizer_metadata(model)?);
    let permute = arch == "llama";
    let mut tensors: Vec<(String, QTensor)> = Vec::new();
    for (name, t) in named_weights(model)? {
        let Some(gname) = hf_to_gguf_name_in(&name, c.style.sandwich_norms) else {
            continue;
        };
        let mut t = t.contiguous()?;
        if c.style.norm_unit_offset && name.ends_with("norm.weight") {
            // llama.cpp's files hold `1 + w` of the `(1 + w)` norms (its converter adds it).
            t = (t + 1.0)?;
        }
        if permute && gname.ends_with("attn_q.weight") {
            t = permute_qk(&t, c.num_attention_heads)?;
        } else if permute && gname.ends_with("attn_k.weight") {
            t = permute_qk(&t, c.num_key_value_heads)?;
        }
        let ty = if t.rank() == 1 {
            GgmlDType::F32
        } else {
            let row_len = t.dim(candle_core::D::Minus1)?;
            let tied = model.transformer.ties_embeddings();
            matrix_type(
                dtype,
                &name,
                &gname,
                row_len,
                c.num_hidden_layers,
                tied,
                source,
            )
        };
        tensors.push((gname, QTensor::quantize(&t, ty)?));
    }
    // Llama 3 rope scaling travels as per-pair frequency divisors, as llama.cpp expects.
    if let Some(factors) = crate::model::rope::llama3_freq_factors(c) {
        let n = factors.len();
        let t = Tensor::from_vec(factors, n, &candle_core::Device::Cpu)?;
        tensors.push((
            "rope_freqs.weight".into(),
            QTensor::quantize(&t, GgmlDType::F32)?,
        ));
    }
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    // Streamed to a temporary file and renamed into place (crate::fsio).
    crate::fsio::write_file_atomic(path, |w| {
        let mut w = Positioned { inner: w, pos: 0 };
        gguf_file::write(&mut w, &md_refs, &t_refs).map_err(std::io::Error::other)
    })?;
    Ok(())
}

/// Whether llama.cpp can express `c`'s Gemma 3 style: it fixes every sixth layer as the
/// global one, the sliding layers' RoPE base at 10 000 and derives the attention scale
/// from the shapes (as `model::gguf` reads it back); anything else would load differently.
fn gemma3_representable(c: &crate::model::ModelConfig) -> Result<(), String> {
    use crate::model::block_style::{BlockStyle, GEMMA3_LOCAL_ROPE_THETA, GEMMA3_SLIDING_PATTERN};
    let s = &c.style;
    let layers = c.num_hidden_layers;
    let kinds: Vec<_> = (0..layers).map(|i| s.layer_kind(i)).collect();
    if kinds != BlockStyle::pattern_layers(layers, GEMMA3_SLIDING_PATTERN)
        || s.sliding_window.is_none()
    {
        return Err("GGUF cannot hold this Gemma 3's layer kinds: llama.cpp makes every sixth layer global and the others sliding; export a merged Hugging Face folder instead".into());
    }
    let scalar = if layers == 62 {
        c.hidden_size / c.num_attention_heads.max(1)
    } else {
        c.head_dim
    };
    if s.query_pre_attn_scalar != Some(scalar as f64) {
        return Err(format!(
            "GGUF cannot hold query_pre_attn_scalar {:?}: llama.cpp uses {scalar} for this shape; export a merged Hugging Face folder instead",
            s.query_pre_attn_scalar
        ));
    }
    if s.rope_local_theta != Some(GEMMA3_LOCAL_ROPE_THETA) {
        return Err(format!(
            "GGUF cannot hold a sliding-layer RoPE base of {:?}: llama.cpp fixes it at 10000; export a merged Hugging Face folder instead",
            s.rope_local_theta
        ));
    }
    Ok(())
}

/// Gemma 3's keys besides the common ones: the window and the global layers' scaling.
fn gemma3_metadata(c: &crate::model::ModelConfig) -> Vec<(String, Value)> {
    let mut md = Vec::new();
    if let Some(w) = c.style.sliding_window {
        md.push((
            "gemma3.attention.sliding_window".to_string(),
            Value::U32(w as u32),
        ));
    }
    if let Some(f) = c.style.rope_linear_factor {
        md.push((
            "gemma3.rope.scaling.type".to_string(),
            Value::String("linear".into()),
        ));
        md.push(("gemma3.rope.scaling.factor".to_string(), Value::F32(f)));
    }
    md
}

/// llama.cpp's `general.file_type` for the type most of `types`' matrices have.
fn most_common_file_type(types: &HashMap<String, GgmlDType>) -> u32 {
    let mut counts: HashMap<u32, usize> = HashMap::new();
    for t in types.values() {
        let ft = crate::model::file_type::mostly(*t);
        *counts.entry(ft).or_default() += 1;
    }
    counts
        .into_iter()
        .max_by_key(|&(ft, n)| (n, std::cmp::Reverse(ft)))
        .map_or(1, |(ft, _)| ft)
}

/// A writer that knows how far it has written: `gguf_file::write` asks for its position
/// (`stream_position`) to place the tensor data, and seeks nowhere else.
struct Positioned<'a> {
    inner: &'a mut dyn std::io::Write,
    pos: u64,
}

impl std::io::Write for Positioned<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.pos += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

impl std::io::Seek for Positioned<'_> {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        match to {
            std::io::SeekFrom::Current(0) => Ok(self.pos),
            _ => Err(std::io::Error::new(
                std::io::ErrorKind::Unsupported,
                "the GGUF writer streams; it only reports its position",
            )),
        }
    }
}
