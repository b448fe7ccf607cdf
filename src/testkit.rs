//! Tiny random models (a few layers, a byte-level vocabulary) written as Hugging Face
//! folders, and tiny Llama GGUF files with a given tokenizer (a SentencePiece-style one in
//! [`tiny_spm_spec`]), for tests, examples and benchmarks that must not depend on a download.

pub mod shaped;

use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};
use serde_json::json;

use crate::model::config::{Architecture, ModelConfig};
use crate::model::{ModelError, FALLBACK_TEMPLATE};
use crate::text::tokenizer::GgufTokenizerSpec;

/// The special tokens of the tiny vocabulary, after the 256 byte tokens.
pub const TINY_SPECIALS: [&str; 3] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"];

/// A small config of the given architecture.
pub fn tiny_config(architecture: Architecture) -> ModelConfig {
    ModelConfig {
        architecture,
        vocab_size: 256 + TINY_SPECIALS.len() + 5,
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 2,
        num_attention_heads: 4,
        num_key_value_heads: 2,
        head_dim: 16,
        rms_norm_eps: 1e-5,
        // Gemma 3's local layers keep 10 000; its global ones get their own base.
        rope_theta: if architecture == Architecture::Gemma3 {
            1_000_000.0
        } else {
            10_000.0
        },
        rope_scaling: None,
        max_position_embeddings: 2048,
        tie_word_embeddings: architecture != Architecture::Mistral,
        attention_bias: architecture.default_qkv_bias(),
        bos_token_id: Some(257),
        eos_token_ids: vec![258],
        style: tiny_style(architecture),
    }
}

/// The tiny models' block style: Gemma 3's with a window of 5 on its first layer (so
/// that short test prompts cross it), a second full layer, and an attention scalar that
/// differs from the head dim.
fn tiny_style(architecture: Architecture) -> crate::model::config::BlockStyle {
    use crate::model::config::{BlockStyle, LayerKind};
    let mut style = BlockStyle::for_architecture(architecture);
    if architecture == Architecture::Gemma3 {
        style.sliding_window = Some(5);
        style.layer_types = vec![LayerKind::Sliding, LayerKind::Full];
        style.query_pre_attn_scalar = Some(24.0);
    }
    style
}

/// GPT-2's printable spelling of a byte.
fn byte_char(b: u8) -> char {
    let b32 = b as u32;
    let printable =
        (33..=126).contains(&b32) || (161..=172).contains(&b32) || (174..=255).contains(&b32);
    if printable {
        return char::from(b);
    }
    let mut n = 0u32;
    for x in 0..b32 {
        let p = (33..=126).contains(&x) || (161..=172).contains(&x) || (174..=255).contains(&x);
        if !p {
            n += 1;
        }
    }
    char::from_u32(256 + n).unwrap_or('?')
}

/// A byte-level BPE `tokenizer.json` with five merges and the ChatML specials.
pub fn tiny_tokenizer_json() -> serde_json::Value {
    let mut vocab = serde_json::Map::new();
    for b in 0..=255u8 {
        vocab.insert(byte_char(b).to_string(), json!(b as u32));
    }
    let mut added = Vec::new();
    for (i, s) in TINY_SPECIALS.iter().enumerate() {
        let id = 256 + i as u32;
        vocab.insert(s.to_string(), json!(id));
        added.push(
            json!({"id": id, "content": s, "single_word": false, "lstrip": false, "rstrip": false,
            "normalized": false, "special": true}),
        );
    }
    let merges = ["Ġ t", "h e", "Ġt he", "i n", "e r"];
    let first_merge_id = 256 + TINY_SPECIALS.len() as u32;
    for (i, m) in merges.iter().enumerate() {
        vocab.insert(m.replace(' ', ""), json!(first_merge_id + i as u32));
    }
    json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added, "normalizer": null,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true},
        "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": "",
            "end_of_word_suffix": "", "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges},
    })
}

/// Normal samples of standard deviation `std` from a seeded generator (candle cannot seed
/// its CPU generator).
fn seeded_normal(
    rng: &mut rand::rngs::StdRng,
    shape: &[usize],
    std: f64,
) -> Result<Tensor, ModelError> {
    use rand::Rng;
    let n: usize = shape.iter().product();
    // Box-Muller: normal samples from the seeded uniform generator.
    let data: Vec<f32> = (0..n)
        .map(|_| {
            let u1: f64 = rng.random::<f64>().max(1e-12);
            let u2: f64 = rng.random::<f64>();
            ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos() * std) as f32
        })
        .collect();
    Ok(Tensor::from_vec(data, shape, &Device::Cpu)?)
}

/// Random weights for `cfg` with Hugging Face names, from a generator seeded with `seed`.
pub fn random_weights(cfg: &ModelConfig, seed: u64) -> Result<Vec<(String, Tensor)>, ModelError> {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let h = cfg.hidden_size;
    let q = cfg.num_attention_heads * cfg.head_dim;
    let kv = cfg.num_key_value_heads * cfg.head_dim;
    let mut out = Vec::new();
    let mut w = |name: String, shape: &[usize], std: f64| -> Result<(), ModelError> {
        out.push((name, seeded_normal(&mut rng, shape, std)?));
        Ok(())
    };
    w(
        "model.embed_tokens.weight".into(),
        &[cfg.vocab_size, h],
        0.5,
    )?;
    for i in 0..cfg.num_hidden_layers {
        let p = format!("model.layers.{i}");
        let s = 1.0 / (h as f64).sqrt();
        w(format!("{p}.self_attn.q_proj.weight"), &[q, h], s)?;
        w(format!("{p}.self_attn.k_proj.weight"), &[kv, h], s)?;
        w(format!("{p}.self_attn.v_proj.weight"), &[kv, h], s)?;
        w(
            format!("{p}.self_attn.o_proj.weight"),
            &[h, q],
            1.0 / (q as f64).sqrt(),
        )?;
        w(
            format!("{p}.mlp.gate_proj.weight"),
            &[cfg.intermediate_size, h],
            s,
        )?;
        w(
            format!("{p}.mlp.up_proj.weight"),
            &[cfg.intermediate_size, h],
            s,
        )?;
        w(
            format!("{p}.mlp.down_proj.weight"),
            &[h, cfg.intermediate_size],
            1.0 / (cfg.intermediate_size as f64).sqrt(),
        )?;
        if cfg.attention_bias {
            w(format!("{p}.self_attn.q_proj.bias"), &[q], 0.1)?;
            w(format!("{p}.self_attn.k_proj.bias"), &[kv], 0.1)?;
            w(format!("{p}.self_attn.v_proj.bias"), &[kv], 0.1)?;
        }
        w(format!("{p}.input_layernorm.weight"), &[h], 0.1)?;
        w(format!("{p}.post_attention_layernorm.weight"), &[h], 0.1)?;
        if cfg.style.sandwich_norms {
            w(format!("{p}.pre_feedforward_layernorm.weight"), &[h], 0.1)?;
            w(format!("{p}.post_feedforward_layernorm.weight"), &[h], 0.1)?;
        }
        if cfg.style.qk_norm {
            w(format!("{p}.self_attn.q_norm.weight"), &[cfg.head_dim], 0.1)?;
            w(format!("{p}.self_attn.k_norm.weight"), &[cfg.head_dim], 0.1)?;
        }
    }
    w("model.norm.weight".into(), &[h], 0.1)?;
    if !cfg.tie_word_embeddings {
        w(
            "lm_head.weight".into(),
            &[cfg.vocab_size, h],
            1.0 / (h as f64).sqrt(),
        )?;
    }
    // Norm weights near 1, as trained models have them.
    let out = out
        .into_iter()
        .map(|(n, t)| {
            // Gemma's checkpoints store the norms' offset from one.
            let near_one = !cfg.style.norm_unit_offset;
            if near_one && (n.ends_with("norm.weight") || n.ends_with("layernorm.weight")) {
                let t = (t + 1.0)?;
                Ok((n, t))
            } else {
                Ok((n, t))
            }
        })
        .collect::<Result<Vec<_>, candle_core::Error>>()?;
    Ok(out)
}

fn write(path: &Path, text: &str) -> Result<(), ModelError> {
    std::fs::write(path, text).map_err(|e| ModelError::io(path, e))
}

/// Writes a tiny random model of `architecture` as an HF folder in `dir` and returns it.
pub fn write_tiny_model(
    dir: &Path,
    architecture: Architecture,
    seed: u64,
) -> Result<PathBuf, ModelError> {
    write_tiny_model_with(dir, &tiny_config(architecture), seed)
}

/// Writes a random model of `cfg` with the tiny tokenizer (`cfg.vocab_size` must cover
/// it) as an HF folder in `dir` and returns it.
pub fn write_tiny_model_with(
    dir: &Path,
    cfg: &ModelConfig,
    seed: u64,
) -> Result<PathBuf, ModelError> {
    std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
    write(&dir.join("config.json"), &cfg.to_hf_json().to_string())?;
    write(
        &dir.join("tokenizer.json"),
        &tiny_tokenizer_json().to_string(),
    )?;
    let tok_cfg = json!({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>", "pad_token": "<|endoftext|>",
        "chat_template": FALLBACK_TEMPLATE});
    write(&dir.join("tokenizer_config.json"), &tok_cfg.to_string())?;
    let weights = random_weights(cfg, seed)?;
    let map: std::collections::HashMap<String, Tensor> = weights
        .into_iter()
        .map(|(n, t)| t.to_dtype(DType::F32).map(|t| (n, t)))
        .collect::<Result<_, _>>()?;
    let path = dir.join("model.safetensors");
    candle_core::safetensors::save(&map, &path).map_err(|e| ModelError::weights(&path, e))?;
    Ok(dir.to_path_buf())
}

/// `model` with its embedding and every projection (and an untied LM head) quantized to
/// `ty` and held as stored blocks, as a GGUF of that type loads; norms and biases stay f32.
/// Every matrix's row length must be a whole number of `ty`'s blocks.
pub fn with_stored_matrices(
    model: &crate::model::Model,
    ty: crate::ops::quant::StoredType,
) -> Result<crate::model::Model, ModelError> {
    use crate::model::lora::LoraTarget;
    use crate::model::FrozenWeight;
    use crate::ops::quant::QuantMatrix;
    let store = |w: &FrozenWeight| -> Result<FrozenWeight, ModelError> {
        let t = w.to_f32(&Device::Cpu)?;
        let (rows, cols) = t.dims2()?;
        let q = candle_core::quantized::QTensor::quantize(&t, ty.ggml())?;
        let m = QuantMatrix::owned(q.data()?.to_vec(), ty, rows, cols)
            .map_err(|e| ModelError::weights(&model.name, format!("{} storage: {e}", ty.name())))?;
        Ok(FrozenWeight::Stored(std::sync::Arc::new(m)))
    };
    let mut out = model.clone();
    let tr = &mut out.transformer;
    tr.embed_tokens = store(&tr.embed_tokens)?;
    for layer in &mut tr.layers {
        for t in LoraTarget::ALL {
            let lin = layer.linear_mut(t);
            lin.weight = store(&lin.weight)?;
        }
    }
    tr.lm_head.weight = if tr.ties_embeddings() {
        tr.embed_tokens.clone()
    } else {
        store(&tr.lm_head.weight)?
    };
    Ok(out)
}

/// Writes a random LoRA adapter (rank 4, alpha 8) on every layer's gate and value
/// projections of the tiny `architecture` model to `dir`, in PEFT layout. Both matrices
/// are random, so the adapter changes the model's output (PEFT's zero-initialized B
/// would not).
pub fn write_tiny_adapter(
    dir: &Path,
    architecture: Architecture,
    seed: u64,
) -> Result<(), ModelError> {
    use crate::model::lora::LoraTarget;
    let cfg = tiny_config(architecture);
    let r = 4;
    let targets = [LoraTarget::GateProj, LoraTarget::VProj];
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let mut pairs = std::collections::BTreeMap::new();
    for layer in 0..cfg.num_hidden_layers {
        for target in targets {
            let (out_f, in_f) = crate::adapter::linear_shape(&cfg, target);
            let a = seeded_normal(&mut rng, &[r, in_f], 1.0)?;
            let b = seeded_normal(&mut rng, &[out_f, r], 1.0)?;
            pairs.insert((layer, target), (a, b));
        }
    }
    let config = crate::adapter::AdapterConfig::new(None, r, 8.0, 0.0, false, &targets);
    crate::adapter::write_adapter(dir, &config, &pairs)
}

/// The user-defined token of [`tiny_spm_spec`].
pub const TINY_SPM_USER_TOKEN: &str = "<|user|>";

/// A tiny SentencePiece-style vocabulary as GGUF metadata describes it: `<unk>`, `<s>`,
/// `</s>` (ids 0–2), the byte tokens `<0x00>`..`<0xFF>` (ids 3–258), `▁` and pieces
/// scored like a trained model (earlier is better), single characters last, and one
/// user-defined token. BOS added, no EOS, no `add_space_prefix` key.
pub fn tiny_spm_spec() -> GgufTokenizerSpec {
    use crate::text::tokenizer_spm::token_type;
    let mut tokens: Vec<String> = ["<unk>", "<s>", "</s>"].map(String::from).to_vec();
    let mut types = vec![
        token_type::UNKNOWN,
        token_type::CONTROL,
        token_type::CONTROL,
    ];
    tokens.extend((0..=255u8).map(|b| format!("<0x{b:02X}>")));
    types.extend([token_type::BYTE; 256]);
    let mut scores = vec![0.0f32; tokens.len()];
    let pieces = [
        "▁", "ll", "he", "llo", "hello", "▁hello", "or", "ld", "▁w", "▁wor", "▁world", "in", "ing",
        "▁▁", "▁h",
    ];
    let chars = ["h", "e", "l", "o", "w", "r", "d", "i", "n", "g", "é"];
    for (i, p) in pieces.iter().enumerate() {
        tokens.push(p.to_string());
        scores.push(-1.0 - i as f32);
        types.push(token_type::NORMAL);
    }
    for (i, c) in chars.iter().enumerate() {
        tokens.push(c.to_string());
        scores.push(-20.0 - i as f32);
        types.push(token_type::NORMAL);
    }
    tokens.push(TINY_SPM_USER_TOKEN.into());
    scores.push(0.0);
    types.push(token_type::USER_DEFINED);
    GgufTokenizerSpec {
        model: "llama".into(),
        tokens,
        scores,
        token_types: types,
        bos_id: Some(1),
        eos_id: Some(2),
        unk_id: Some(0),
        add_bos: true,
        ..Default::default()
    }
}

/// The `tokenizer.ggml.*` metadata of `spec`. The flags are written only where they
/// differ from what a reader assumes without them (BOS on, EOS off, no
/// `add_space_prefix`), so files without them are tested too.
pub fn gguf_tokenizer_metadata(spec: &GgufTokenizerSpec) -> Vec<(String, gguf_file::Value)> {
    use gguf_file::Value;
    let key = |k: &str| format!("tokenizer.ggml.{k}");
    let mut md = vec![
        (key("model"), Value::String(spec.model.clone())),
        (
            key("tokens"),
            Value::Array(spec.tokens.iter().cloned().map(Value::String).collect()),
        ),
        (
            key("token_type"),
            Value::Array(spec.token_types.iter().copied().map(Value::I32).collect()),
        ),
    ];
    if !spec.scores.is_empty() {
        md.push((
            key("scores"),
            Value::Array(spec.scores.iter().copied().map(Value::F32).collect()),
        ));
    }
    if !spec.merges.is_empty() {
        md.push((
            key("merges"),
            Value::Array(spec.merges.iter().cloned().map(Value::String).collect()),
        ));
    }
    for (k, id) in [
        ("bos_token_id", spec.bos_id),
        ("eos_token_id", spec.eos_id),
        ("unknown_token_id", spec.unk_id),
        ("padding_token_id", spec.pad_id),
    ] {
        md.extend(id.map(|id| (key(k), Value::U32(id))));
    }
    if !spec.add_bos {
        md.push((key("add_bos_token"), Value::Bool(false)));
    }
    if spec.add_eos {
        md.push((key("add_eos_token"), Value::Bool(true)));
    }
    if let Some(p) = spec.add_space_prefix {
        md.push((key("add_space_prefix"), Value::Bool(p)));
    }
    md
}

/// Writes a tiny random Llama model to `path` as GGUF, with `spec` as its tokenizer and
/// a vocabulary of `spec.tokens.len()` rows.
pub fn write_tiny_gguf_with_tokenizer(
    path: &Path,
    spec: &GgufTokenizerSpec,
    seed: u64,
) -> Result<(), ModelError> {
    use gguf_file::Value;
    let mut cfg = tiny_config(Architecture::Llama);
    cfg.vocab_size = spec.tokens.len();
    let u32_keys = [
        ("context_length", cfg.max_position_embeddings),
        ("embedding_length", cfg.hidden_size),
        ("block_count", cfg.num_hidden_layers),
        ("feed_forward_length", cfg.intermediate_size),
        ("attention.head_count", cfg.num_attention_heads),
        ("attention.head_count_kv", cfg.num_key_value_heads),
        ("rope.dimension_count", cfg.head_dim),
    ];
    let mut md: Vec<(String, Value)> = vec![
        ("general.architecture".into(), Value::String("llama".into())),
        (
            "llama.attention.layer_norm_rms_epsilon".into(),
            Value::F32(cfg.rms_norm_eps as f32),
        ),
        ("llama.rope.freq_base".into(), Value::F32(cfg.rope_theta)),
    ];
    md.extend(
        u32_keys
            .iter()
            .map(|(k, v)| (format!("llama.{k}"), Value::U32(*v as u32))),
    );
    md.extend(gguf_tokenizer_metadata(spec));
    let mut tensors = Vec::new();
    for (name, t) in random_weights(&cfg, seed)? {
        let Some(gname) = crate::model::weights::hf_to_gguf_name(&name) else {
            continue;
        };
        let t = if gname.ends_with("attn_q.weight") {
            crate::model::weights::permute_qk(&t, cfg.num_attention_heads)?
        } else if gname.ends_with("attn_k.weight") {
            crate::model::weights::permute_qk(&t, cfg.num_key_value_heads)?
        } else {
            t
        };
        let q =
            candle_core::quantized::QTensor::quantize(&t, candle_core::quantized::GgmlDType::F32)?;
        tensors.push((gname, q));
    }
    let mut file = std::fs::File::create(path).map_err(|e| ModelError::io(path, e))?;
    let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let t_refs: Vec<_> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut file, &md_refs, &t_refs).map_err(|e| ModelError::weights(path, e))
}

/// `dir/data.jsonl`: 24 short chats a tiny model can learn, each answer the question's
/// word three times.
pub fn write_echo_dataset(dir: &Path) -> std::io::Result<PathBuf> {
    let words = [
        "alpha", "beta", "gamma", "delta", "omega", "sigma", "theta", "kappa",
    ];
    let mut text = String::new();
    for (i, w) in words.iter().cycle().take(24).enumerate() {
        let line = json!({"messages": [
            {"role": "user", "content": format!("say {w} {i}")},
            {"role": "assistant", "content": format!("{w} {w} {w}")}
        ]});
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let path = dir.join("data.jsonl");
    std::fs::write(&path, text)?;
    Ok(path)
}

/// `dir/pairs.jsonl`: 24 preference pairs in TRL's conversational layout on the echo
/// questions of [`write_echo_dataset`]: chosen, the word three times; rejected, a refusal.
pub fn write_echo_preferences(dir: &Path) -> std::io::Result<PathBuf> {
    let words = [
        "alpha", "beta", "gamma", "delta", "omega", "sigma", "theta", "kappa",
    ];
    let mut text = String::new();
    for (i, w) in words.iter().cycle().take(24).enumerate() {
        let line = json!({
            "prompt": [{"role": "user", "content": format!("say {w} {i}")}],
            "chosen": [{"role": "assistant", "content": format!("{w} {w} {w}")}],
            "rejected": [{"role": "assistant", "content": "no"}]
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let path = dir.join("pairs.jsonl");
    std::fs::write(&path, text)?;
    Ok(path)
}
