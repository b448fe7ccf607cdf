//! A second reference that needs no Python: candle-transformers' own implementations of
//! the architectures run the same random tiny weights (the HF folder the testkit writes)
//! as the studio's transformer, and the next-token logits after a prompt must agree.
//! Llama (tied embeddings), Qwen2 (q/k/v bias), Qwen3 (q/k norms per head, explicit head
//! dim), Mistral (an untied LM head) and Gemma 3 (a sliding-window layer the prompt
//! crosses, a full layer with its own RoPE base).

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use finetune_studio::infer::next_token_logits;
use finetune_studio::model::config::Architecture;
use finetune_studio::model::load_hf_folder;
use finetune_studio::testkit::write_tiny_model;

const PROMPT: [u32; 9] = [257, 72, 101, 108, 108, 111, 44, 32, 259];

/// The tiny model's `config.json` with the fields candle-transformers' configs also ask
/// for (no sliding window, SiLU).
fn reference_config(dir: &std::path::Path) -> serde_json::Value {
    let text = std::fs::read_to_string(dir.join("config.json")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_str(&text).unwrap();
    let extra = serde_json::json!({
        "sliding_window": 4096,
        "max_window_layers": 0,
        "use_sliding_window": false,
        "hidden_act": "silu",
    });
    for (k, v) in extra.as_object().unwrap() {
        cfg.as_object_mut()
            .unwrap()
            .entry(k.clone())
            .or_insert(v.clone());
    }
    cfg
}

fn weights(dir: &std::path::Path) -> VarBuilder<'static> {
    let path = dir.join("model.safetensors");
    // SAFETY: the file was just written by this test and is not changed while mapped.
    unsafe { VarBuilder::from_mmaped_safetensors(&[path], DType::F32, &Device::Cpu).unwrap() }
}

fn studio_logits(dir: &std::path::Path) -> Vec<f32> {
    let model = load_hf_folder(dir, &Device::Cpu).unwrap();
    next_token_logits(&model, None, &PROMPT).unwrap()
}

fn assert_close(ours: &[f32], theirs: &[f32], what: &str) {
    assert_eq!(ours.len(), theirs.len(), "{what}: vocabulary sizes");
    let scale = theirs.iter().fold(0f32, |m, v| m.max(v.abs()));
    let worst = ours
        .iter()
        .zip(theirs)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(scale > 1e-3, "{what}: logits all near zero ({scale})");
    assert!(
        worst <= 1e-4 * scale.max(1.0) + 1e-5,
        "{what}: logits differ by up to {worst} (largest logit {scale})"
    );
    let argmax = |v: &[f32]| {
        v.iter()
            .enumerate()
            .fold((0, f32::MIN), |b, (i, &x)| if x > b.1 { (i, x) } else { b })
            .0
    };
    assert_eq!(argmax(ours), argmax(theirs), "{what}: next token");
}

fn prompt_tensor() -> Tensor {
    Tensor::new(&PROMPT[..], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap()
}

fn last_row(logits: Tensor) -> Vec<f32> {
    logits.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

#[test]
fn qwen2_logits_equal_candle_transformers() {
    use candle_transformers::models::qwen2;
    let dir = tempfile::tempdir().unwrap();
    let dir = write_tiny_model(dir.path(), Architecture::Qwen2, 11).unwrap();
    let cfg: qwen2::Config = serde_json::from_value(reference_config(&dir)).unwrap();
    let mut reference = qwen2::ModelForCausalLM::new(&cfg, weights(&dir)).unwrap();
    let theirs = last_row(reference.forward(&prompt_tensor(), 0).unwrap());
    assert_close(&studio_logits(&dir), &theirs, "Qwen2");
}

#[test]
fn qwen3_logits_equal_candle_transformers() {
    use candle_transformers::models::qwen3;
    let dir = tempfile::tempdir().unwrap();
    let dir = write_tiny_model(dir.path(), Architecture::Qwen3, 12).unwrap();
    let cfg: qwen3::Config = serde_json::from_value(reference_config(&dir)).unwrap();
    let mut reference = qwen3::ModelForCausalLM::new(&cfg, weights(&dir)).unwrap();
    let theirs = last_row(reference.forward(&prompt_tensor(), 0).unwrap());
    assert_close(&studio_logits(&dir), &theirs, "Qwen3");
}

#[test]
fn mistral_logits_equal_candle_transformers() {
    use candle_transformers::models::mistral;
    let dir = tempfile::tempdir().unwrap();
    let dir = write_tiny_model(dir.path(), Architecture::Mistral, 13).unwrap();
    let mut cfg = reference_config(&dir);
    // Mistral's reference reads `sliding_window` as optional: none, as the tiny prompt is
    // far inside any window.
    cfg["sliding_window"] = serde_json::Value::Null;
    let cfg: mistral::Config = serde_json::from_value(cfg).unwrap();
    let mut reference = mistral::Model::new(&cfg, weights(&dir)).unwrap();
    let theirs = last_row(reference.forward(&prompt_tensor(), 0).unwrap());
    assert_close(&studio_logits(&dir), &theirs, "Mistral");
}

#[test]
fn llama_logits_equal_candle_transformers() {
    use candle_transformers::models::llama;
    let dir = tempfile::tempdir().unwrap();
    let dir = write_tiny_model(dir.path(), Architecture::Llama, 14).unwrap();
    let cfg: llama::LlamaConfig = serde_json::from_value(reference_config(&dir)).unwrap();
    let cfg = cfg.into_config(false);
    let reference = llama::Llama::load(weights(&dir), &cfg).unwrap();
    let mut cache = llama::Cache::new(true, DType::F32, &cfg, &Device::Cpu).unwrap();
    let theirs = last_row(reference.forward(&prompt_tensor(), 0, &mut cache).unwrap());
    assert_close(&studio_logits(&dir), &theirs, "Llama");
}

/// Gemma 3 with a window of 5 on its first layer and a full second layer; the 9-token
/// prompt crosses the window. candle-transformers' Gemma 3 differs from transformers in
/// two places the test steps around: it scales attention by the head dim rather than
/// `query_pre_attn_scalar` (so the two are set equal here), and its whole-prompt path
/// masks one key more than the window (and needs contiguous values in its cache), so the
/// prompt goes through it one token at a time, where its rotating cache keeps exactly the
/// window, as transformers does.
#[test]
fn gemma3_logits_equal_candle_transformers() {
    use candle_transformers::models::gemma3;
    use finetune_studio::testkit::{tiny_config, write_tiny_model_with};
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = tiny_config(Architecture::Gemma3);
    cfg.style.query_pre_attn_scalar = Some(cfg.head_dim as f64);
    assert_eq!(
        cfg.style.sliding_window,
        Some(5),
        "the prompt must cross the window"
    );
    let dir = write_tiny_model_with(dir.path(), &cfg, 15).unwrap();
    let mut json = reference_config(&dir);
    json["sliding_window_pattern"] = 2.into();
    json["rope_local_base_freq"] = 10_000.0.into();
    json["query_pre_attn_scalar"] = cfg.head_dim.into();
    let reference_cfg: gemma3::Config = serde_json::from_value(json).unwrap();
    let mut reference = gemma3::Model::new(false, &reference_cfg, weights(&dir)).unwrap();
    let mut theirs = Vec::new();
    for (pos, &token) in PROMPT.iter().enumerate() {
        let input = Tensor::new(&[[token]], &Device::Cpu).unwrap();
        theirs = last_row(reference.forward(&input, pos).unwrap());
    }
    assert_close(&studio_logits(&dir), &theirs, "Gemma 3");
}
