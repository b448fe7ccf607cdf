//! The transformer on tiny random models of every architecture: shapes, KV-cache decoding
//! against a full forward, GGUF round trips, and clear errors on bad input.

mod common;

use candle_core::{Device, Tensor};
use finetune_studio::export::gguf::{write_gguf, GgufType};
use finetune_studio::model::config::Architecture;
use finetune_studio::model::{self, Cache, Forward};
use finetune_studio::testkit::write_tiny_model;

const ARCHS: [Architecture; 5] = [
    Architecture::Llama,
    Architecture::Mistral,
    Architecture::Qwen2,
    Architecture::Qwen3,
    Architecture::Gemma3,
];

fn tiny(arch: Architecture) -> (tempfile::TempDir, model::Model) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny_model(dir.path(), arch, 7).unwrap();
    let m = model::load_hf_folder(&path, &Device::Cpu).unwrap();
    (dir, m)
}

#[test]
fn shapes_for_every_architecture() {
    for arch in ARCHS {
        let (_d, m) = tiny(arch);
        let input = Tensor::new(&[[1u32, 2, 3, 4, 5], [6, 7, 8, 9, 10]], &Device::Cpu).unwrap();
        let h = m.transformer.forward(&input, Forward::default()).unwrap();
        assert_eq!(h.dims(), &[2, 5, 64], "{arch:?}");
        let logits = m.transformer.last_logits(&h).unwrap();
        assert_eq!(logits.dims(), &[2, m.config().vocab_size], "{arch:?}");
        assert_eq!(m.config().architecture, arch);
    }
}

#[test]
fn kv_cache_decode_equals_full_forward() {
    let ids: Vec<u32> = vec![257, 10, 72, 101, 108, 108, 111, 33, 258, 12];
    for arch in ARCHS {
        let (_d, m) = tiny(arch);
        let full = common::logits(&m, None, None, &ids);
        let mut cache = Cache::new(m.config());
        let mut rows = vec![common::logits(&m, None, Some(&mut cache), &ids[..4])];
        for &id in &ids[4..] {
            rows.push(common::logits(&m, None, Some(&mut cache), &[id]));
        }
        let stepwise = Tensor::cat(&rows, 0).unwrap();
        let diff = common::max_abs_diff(&full, &stepwise);
        assert!(
            diff < 1e-4,
            "{arch:?}: cached decode differs from full forward by {diff}"
        );
        assert_eq!(cache.len(), ids.len());
    }
}

#[test]
fn packed_rows_match_separate_sequences() {
    use finetune_studio::model::Layout;
    let (_d, m) = tiny(Architecture::Llama);
    let a = [257u32, 5, 6, 7];
    let b = [257u32, 9, 10];
    let sep_a = common::logits(&m, None, None, &a);
    let sep_b = common::logits(&m, None, None, &b);
    let ids = Tensor::new(&[[257u32, 5, 6, 7, 257, 9, 10]], &Device::Cpu).unwrap();
    let positions = Tensor::new(&[[0u32, 1, 2, 3, 0, 1, 2]], &Device::Cpu).unwrap();
    let segments = Tensor::new(&[[0u32, 0, 0, 0, 1, 1, 1]], &Device::Cpu).unwrap();
    let h = m
        .transformer
        .forward(
            &ids,
            Forward {
                layout: Layout::Packed {
                    positions,
                    segments,
                },
                ..Default::default()
            },
        )
        .unwrap();
    let packed = m.transformer.logits(&h.squeeze(0).unwrap()).unwrap();
    assert!(common::max_abs_diff(&packed.narrow(0, 0, 4).unwrap(), &sep_a) < 1e-4);
    assert!(common::max_abs_diff(&packed.narrow(0, 4, 3).unwrap(), &sep_b) < 1e-4);
}

#[test]
fn differentiable_path_matches_fast_path() {
    for arch in ARCHS {
        let (_d, m) = tiny(arch);
        let input = Tensor::new(&[[257u32, 3, 4, 5, 6, 7]], &Device::Cpu).unwrap();
        let fast = m.transformer.forward(&input, Forward::default()).unwrap();
        let slow = m
            .transformer
            .forward(
                &input,
                Forward {
                    training_ops: true,
                    ..Default::default()
                },
            )
            .unwrap();
        assert!(common::max_abs_diff(&fast, &slow) < 1e-4, "{arch:?}");
    }
}

#[test]
fn gguf_written_by_export_loads_back_with_same_logits_and_tokens() {
    // Gemma 3's GGUF export is refused (tests/model_gemma3_tiny.rs).
    for arch in ARCHS.into_iter().filter(|a| *a != Architecture::Gemma3) {
        let (dir, m) = tiny(arch);
        let path = dir.path().join("tiny.gguf");
        write_gguf(&m, &path, GgufType::F32).unwrap();
        let g = model::load_gguf(&path, &Device::Cpu).unwrap();
        assert_eq!(g.config().num_hidden_layers, 2);
        assert_eq!(
            g.config().tie_word_embeddings,
            m.config().tie_word_embeddings,
            "{arch:?}"
        );
        let text = "<|im_start|>user\nthe inner there<|im_end|>";
        let ids = m.tokenizer.encode(text, false).unwrap();
        assert_eq!(g.tokenizer.encode(text, false).unwrap(), ids, "{arch:?}");
        let diff = common::max_abs_diff(
            &common::logits(&m, None, None, &ids),
            &common::logits(&g, None, None, &ids),
        );
        assert!(diff < 1e-4, "{arch:?}: GGUF logits differ by {diff}");
        let prompt = m
            .template
            .render(&[model::ChatMessage::new("user", "hi")], true)
            .unwrap();
        assert_eq!(
            g.template
                .render(&[model::ChatMessage::new("user", "hi")], true)
                .unwrap(),
            prompt
        );
    }
}

/// A Q8_0 export: dequantized, it is within the rounding of its weights of the f32
/// model; as stored (8-bit activations on top, as llama.cpp computes), within as much
/// again of the dequantized one.
#[test]
fn quantized_gguf_stays_close() {
    let (dir, m) = tiny(Architecture::Llama);
    let path = dir.path().join("q8.gguf");
    write_gguf(&m, &path, GgufType::Q8_0).unwrap();
    let g = model::load_gguf(&path, &Device::Cpu).unwrap();
    assert_eq!(g.storage_label(), "Q8_0");
    let ids = [257u32, 40, 41, 42, 43];
    let reference = common::logits(&m, None, None, &ids);
    let scale = reference
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let dequantized = common::logits(&g.with_f32_weights().unwrap(), None, None, &ids);
    let of_weights = common::max_abs_diff(&reference, &dequantized);
    assert!(
        of_weights < 0.02 * scale,
        "dequantized q8_0 logits differ by {of_weights} (largest logit {scale})"
    );
    let of_activations = common::max_abs_diff(&dequantized, &common::logits(&g, None, None, &ids));
    assert!(
        of_activations > 0.0 && of_activations < 0.02 * scale,
        "stored q8_0 logits differ from dequantized ones by {of_activations} (largest logit {scale})"
    );
}

fn load_err(path: &std::path::Path) -> String {
    match finetune_studio::hub::load(path.to_str().unwrap()) {
        Ok(_) => panic!("{} loaded but should not", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_inputs_get_clear_errors() {
    let (dir, m) = tiny(Architecture::Llama);
    let root = dir.path();

    // Truncated safetensors.
    let st = root.join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let e = load_err(root);
    assert!(e.contains("model.safetensors"), "{e}");
    std::fs::write(&st, &bytes).unwrap();

    // Config that does not match the weights.
    let cfg_path = root.join("config.json");
    let cfg = std::fs::read_to_string(&cfg_path).unwrap();
    std::fs::write(
        &cfg_path,
        cfg.replace("\"intermediate_size\":128", "\"intermediate_size\":96"),
    )
    .unwrap();
    let e = load_err(root);
    assert!(
        e.contains("does not match") && e.contains("mlp.gate_proj"),
        "{e}"
    );

    // Unsupported architecture.
    std::fs::write(
        &cfg_path,
        cfg.replace("\"model_type\":\"llama\"", "\"model_type\":\"gpt_neox\""),
    )
    .unwrap();
    let e = load_err(root);
    assert!(
        e.contains("unsupported architecture `gpt_neox`") && e.contains("config.json"),
        "{e}"
    );
    std::fs::write(&cfg_path, &cfg).unwrap();

    // Pickle.
    let pickle = root.join("pytorch_model.bin");
    std::fs::write(&pickle, b"\x80\x02not really").unwrap();
    let e = load_err(&pickle);
    assert!(
        e.contains("pickle") && e.contains("pytorch_model.bin"),
        "{e}"
    );

    // Corrupt and truncated GGUF.
    let gguf = root.join("m.gguf");
    std::fs::write(&gguf, b"GGUF garbage").unwrap();
    let e = load_err(&gguf);
    assert!(e.contains("m.gguf") && e.contains("GGUF"), "{e}");
    write_gguf(&m, &gguf, GgufType::F32).unwrap();
    let g = std::fs::read(&gguf).unwrap();
    std::fs::write(&gguf, &g[..g.len() - 1000]).unwrap();
    let e = load_err(&gguf);
    assert!(e.contains("m.gguf") && e.contains("remaining"), "{e}");

    // Missing file.
    let e = load_err(&root.join("nope.gguf"));
    assert!(e.contains("nope.gguf"), "{e}");

    // A template that raises.
    let tc = root.join("tokenizer_config.json");
    std::fs::write(
        &tc,
        r#"{"chat_template": "{{ raise_exception('Conversation roles must alternate') }}"}"#,
    )
    .unwrap();
    let m2 = model::load_hf_folder(root, &Device::Cpu).unwrap();
    let e = m2.template.render(&[], true).unwrap_err().to_string();
    assert!(
        e.contains("Conversation roles must alternate") && e.contains("tokenizer_config.json"),
        "{e}"
    );
    std::fs::write(&tc, r#"{"chat_template": "{% if %}"}"#).unwrap();
    let e = model::load_hf_folder(root, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("cannot parse") && e.contains("tokenizer_config.json"),
        "{e}"
    );
}

#[test]
fn llama3_rope_scaling_travels_through_gguf_as_rope_freqs() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny_model(&dir.path().join("m"), Architecture::Llama, 5).unwrap();
    // Scaling whose thresholds fall inside the tiny head's wavelengths (6 to 20 000
    // positions), so that unscaled, smoothly scaled and fully scaled pairs all occur.
    let cfg_path = path.join("config.json");
    let mut cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    cfg["rope_scaling"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0,
        "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 8192});
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let m = model::load_hf_folder(&path, &Device::Cpu).unwrap();
    let factors = model::rope::llama3_freq_factors(m.config()).unwrap();
    assert_eq!(factors.first(), Some(&1.0));
    assert!((factors.last().unwrap() - 8.0).abs() < 1e-4);
    assert!(factors.iter().any(|f| *f > 1.0 && *f < 8.0), "{factors:?}");

    let gguf = dir.path().join("m.gguf");
    write_gguf(&m, &gguf, GgufType::F32).unwrap();
    let g = model::load_gguf(&gguf, &Device::Cpu).unwrap();
    assert_eq!(g.config().rope_scaling, m.config().rope_scaling);
    let ids: Vec<u32> = (1..40).collect();
    let diff = common::max_abs_diff(
        &common::logits(&m, None, None, &ids),
        &common::logits(&g, None, None, &ids),
    );
    assert!(diff < 1e-4, "GGUF with rope_freqs differs by {diff}");

    // Without rope_freqs the same weights compute something else: the factors matter.
    let unscaled = model::rope::inverse_frequencies(&model::ModelConfig {
        rope_scaling: None,
        ..m.config().clone()
    });
    assert_ne!(unscaled, model::rope::inverse_frequencies(m.config()));
}
