//! The export job on a tiny model with a random adapter: every format writes its files,
//! reads back to the same model, and carries the adapter; bad requests get clear errors.

mod common;

use candle_core::{Device, Tensor};
use finetune_studio::adapter::{write_adapter, AdapterConfig};
use finetune_studio::export::gguf::GgufType;
use finetune_studio::export::job::{self, Criterion, ExportFormat, ExportRequest};
use finetune_studio::model::config::Architecture;
use finetune_studio::model::lora::LoraTarget;
use finetune_studio::model::{self, ChatMessage, Model};
use finetune_studio::testkit::{write_tiny_adapter, write_tiny_model};

fn setup(arch: Architecture) -> (tempfile::TempDir, Model) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_tiny_model(&dir.path().join("base"), arch, 3).unwrap();
    write_tiny_adapter(&dir.path().join("adapter"), arch, 5).unwrap();
    let m = model::load_hf_folder(&path, &Device::Cpu).unwrap();
    (dir, m)
}

fn last_logits(m: &Model) -> Tensor {
    let ids = m
        .encode_chat(&[ChatMessage::new("user", "hello there")], true)
        .unwrap();
    common::logits(m, None, None, &ids)
}

#[test]
fn every_format_writes_its_files_and_reads_back_to_the_same_model() {
    for arch in [Architecture::Llama, Architecture::Qwen2] {
        let (dir, base) = setup(arch);
        let base_logits = last_logits(&base);
        for format in ExportFormat::ALL {
            let out = dir.path().join(format.folder_name());
            let req = ExportRequest {
                adapter: Some(dir.path().join("adapter")),
                format,
                out: out.clone(),
                verify: true,
            };
            let mut lines = Vec::new();
            let report = job::export(&base, &req, &mut |l| lines.push(l.to_string()))
                .unwrap_or_else(|e| panic!("{arch:?} {format:?}: {e}"));
            assert!(!lines.is_empty(), "progress lines are reported");
            let v = report.verification.expect("verified");
            assert!(v.passed(), "{arch:?} {format:?}: {}", v.summary());
            let names: Vec<String> = report
                .files
                .iter()
                .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            let expected: &[&str] = match format {
                ExportFormat::Peft => &["adapter_config.json", "adapter_model.safetensors"],
                ExportFormat::Merged => &["config.json", "model.safetensors", "tokenizer.json"],
                ExportFormat::Gguf(_) => &["Modelfile", "model.gguf"],
            };
            for e in expected {
                assert!(names.iter().any(|n| n == e), "{format:?}: {e} in {names:?}");
            }
            assert!(report.files.iter().all(|(_, size)| *size > 0));
            if format == ExportFormat::Peft {
                assert_eq!(
                    v.max_abs_diff, 0.0,
                    "the adapter's matrices are copied exactly"
                );
                continue;
            }
            // The written model carries the adapter: it differs from the base.
            let back = match format {
                ExportFormat::Gguf(_) => model::load_gguf(&out.join("model.gguf"), &Device::Cpu),
                _ => model::load_hf_folder(&out, &Device::Cpu),
            }
            .unwrap();
            let moved = common::max_abs_diff(&last_logits(&back), &base_logits);
            assert!(moved > 1e-2, "{format:?}: adapter not merged (Δ {moved})");
        }
    }
}

#[test]
fn lossless_formats_are_held_to_rounding_and_lossy_ones_to_kl() {
    assert_eq!(
        ExportFormat::Gguf(GgufType::F32).criterion(),
        Criterion::MaxAbsDiff(1e-3)
    );
    assert!(matches!(
        ExportFormat::Gguf(GgufType::Q8_0).criterion(),
        Criterion::MeanKl(_)
    ));
    assert_eq!(
        ExportFormat::parse("gguf", "q8_0"),
        Some(ExportFormat::Gguf(GgufType::Q8_0))
    );
    assert_eq!(ExportFormat::parse("onnx", "f16"), None);
}

#[test]
fn the_check_tells_two_different_models_apart() {
    let dir = tempfile::tempdir().unwrap();
    let a = write_tiny_model(&dir.path().join("a"), Architecture::Llama, 1).unwrap();
    let b = write_tiny_model(&dir.path().join("b"), Architecture::Llama, 2).unwrap();
    let a = model::load_hf_folder(&a, &Device::Cpu).unwrap();
    let b = model::load_hf_folder(&b, &Device::Cpu).unwrap();
    let same = job::compare_models(&a, &a.clone(), Criterion::MaxAbsDiff(1e-3)).unwrap();
    assert!(same.passed() && same.max_abs_diff == 0.0);
    for criterion in [Criterion::MaxAbsDiff(1e-3), Criterion::MeanKl(1e-2)] {
        let v = job::compare_models(&a, &b, criterion).unwrap();
        assert!(!v.passed(), "{criterion:?}: {}", v.summary());
    }
}

#[test]
fn bad_requests_get_clear_errors_and_leave_the_base_alone() {
    let (dir, base) = setup(Architecture::Llama);
    let before = last_logits(&base);
    let err = job::export(
        &base,
        &ExportRequest {
            adapter: None,
            format: ExportFormat::Peft,
            out: dir.path().join("peft"),
            verify: true,
        },
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("needs an adapter"), "{err}");

    // An adapter made for a wider model does not fit.
    let cfg = finetune_studio::testkit::tiny_config(Architecture::Llama);
    let wide = (
        Tensor::zeros(
            (4, cfg.hidden_size * 2),
            candle_core::DType::F32,
            &Device::Cpu,
        )
        .unwrap(),
        Tensor::zeros(
            (cfg.intermediate_size, 4),
            candle_core::DType::F32,
            &Device::Cpu,
        )
        .unwrap(),
    );
    let pairs = [((0, LoraTarget::GateProj), wide)].into_iter().collect();
    let config = AdapterConfig::new(None, 4, 8.0, 0.0, false, &[LoraTarget::GateProj]);
    write_adapter(&dir.path().join("wide-adapter"), &config, &pairs).unwrap();
    let err = job::export(
        &base,
        &ExportRequest {
            adapter: Some(dir.path().join("wide-adapter")),
            format: ExportFormat::Merged,
            out: dir.path().join("merged"),
            verify: true,
        },
        &mut |_| {},
    )
    .unwrap_err();
    assert!(err.to_string().contains("another base model"), "{err}");

    // A merged export works on a copy: the model it was given is unchanged.
    job::export(
        &base,
        &ExportRequest {
            adapter: Some(dir.path().join("adapter")),
            format: ExportFormat::Merged,
            out: dir.path().join("merged-ok"),
            verify: false,
        },
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(common::max_abs_diff(&before, &last_logits(&base)), 0.0);
}

#[test]
fn gguf_export_names_the_pre_tokenizer_llama_cpp_should_use() {
    let (dir, base) = setup(Architecture::Llama);
    let read_pre = |p: &std::path::Path| {
        let mut f = std::fs::File::open(p).unwrap();
        let c = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
        c.metadata["tokenizer.ggml.pre"]
            .to_string()
            .unwrap()
            .clone()
    };
    // The tiny tokenizer is GPT-2's byte-level split.
    let first = dir.path().join("first.gguf");
    finetune_studio::export::gguf::write_gguf(&base, &first, GgufType::F32).unwrap();
    assert_eq!(read_pre(&first), "gpt2");
    // A model loaded from GGUF keeps its file's name when written again.
    let mut loaded = model::load_gguf(&first, &Device::Cpu).unwrap();
    loaded.tokenizer.gguf_pre = Some("smollm".into());
    let second = dir.path().join("second.gguf");
    finetune_studio::export::gguf::write_gguf(&loaded, &second, GgufType::F32).unwrap();
    assert_eq!(read_pre(&second), "smollm");
}

/// The GGUF tensor types of the file at `path`, by name.
fn tensor_types(
    path: &std::path::Path,
) -> std::collections::HashMap<String, candle_core::quantized::GgmlDType> {
    let mut f = std::fs::File::open(path).unwrap();
    let content = candle_core::quantized::gguf_file::Content::read(&mut f).unwrap();
    content
        .tensor_infos
        .iter()
        .map(|(n, i)| (n.clone(), i.ggml_dtype))
        .collect()
}

/// Merging into a quantized base and writing "the base's own types" keeps each matrix in
/// its stored type, merged or not, and reads back to the merged model.
#[test]
fn a_quantized_base_merges_and_stays_in_its_own_types() {
    use candle_core::quantized::GgmlDType;
    use finetune_studio::ops::quant::StoredType;
    let (dir, f32_base) = setup(Architecture::Llama);
    let base = finetune_studio::testkit::with_stored_matrices(&f32_base, StoredType::Q8_0).unwrap();
    let base_logits = last_logits(&base);
    let out = dir.path().join("source");
    let req = ExportRequest {
        adapter: Some(dir.path().join("adapter")),
        format: ExportFormat::Gguf(GgufType::Source),
        out: out.clone(),
        verify: true,
    };
    let report = job::export(&base, &req, &mut |_| {}).unwrap();
    assert!(report.verification.unwrap().passed());
    let types = tensor_types(&out.join("model.gguf"));
    // The adapter is on v_proj and gate_proj: merged, and still Q8_0 like the rest.
    for name in [
        "blk.0.attn_v.weight",
        "blk.0.ffn_gate.weight",
        "blk.1.attn_q.weight",
        "token_embd.weight",
    ] {
        assert_eq!(types.get(name), Some(&GgmlDType::Q8_0), "{name}: {types:?}");
    }
    assert_eq!(types.get("blk.0.attn_norm.weight"), Some(&GgmlDType::F32));
    let back = model::load_gguf(&out.join("model.gguf"), &Device::Cpu).unwrap();
    assert!(
        !back.transformer.is_f32(),
        "the written file loads as stored blocks"
    );
    let moved = common::max_abs_diff(&last_logits(&back), &base_logits);
    assert!(moved > 1e-2, "adapter not merged (Δ {moved})");
}

/// q4_k_m writes llama.cpp's mix where rows are whole super-blocks: Q4_K, and Q6_K for the
/// output and the `use_more_bits` layers' attn_v and ffn_down.
#[test]
fn q4_k_m_export_writes_llama_cpps_mix() {
    use candle_core::quantized::GgmlDType;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = finetune_studio::testkit::tiny_config(Architecture::Llama);
    cfg.hidden_size = 256;
    cfg.intermediate_size = 512;
    cfg.head_dim = 64;
    let path =
        finetune_studio::testkit::write_tiny_model_with(&dir.path().join("m"), &cfg, 2).unwrap();
    let base = model::load_hf_folder(&path, &Device::Cpu).unwrap();
    let out = dir.path().join("q4");
    let req = ExportRequest {
        adapter: None,
        format: ExportFormat::Gguf(GgufType::Q4KM),
        out: out.clone(),
        verify: true,
    };
    let report = job::export(&base, &req, &mut |_| {}).unwrap();
    let v = report.verification.unwrap();
    assert!(v.passed(), "{}", v.summary());
    let types = tensor_types(&out.join("model.gguf"));
    // Two layers: the first eighth is empty (2 / 8 = 0), the last eighth is layer 1, so
    // only layer 1's attn_v and ffn_down get the extra bits.
    assert_eq!(types.get("blk.0.attn_q.weight"), Some(&GgmlDType::Q4K));
    assert_eq!(types.get("blk.1.ffn_up.weight"), Some(&GgmlDType::Q4K));
    assert_eq!(types.get("blk.0.attn_v.weight"), Some(&GgmlDType::Q4K));
    assert_eq!(types.get("blk.0.ffn_down.weight"), Some(&GgmlDType::Q4K));
    assert_eq!(types.get("blk.1.attn_v.weight"), Some(&GgmlDType::Q6K));
    assert_eq!(types.get("blk.1.ffn_down.weight"), Some(&GgmlDType::Q6K));
    // Tied embeddings are the output.
    assert_eq!(types.get("token_embd.weight"), Some(&GgmlDType::Q6K));
}
