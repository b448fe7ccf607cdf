//! `testkit::shaped`: GGUF files at real models' shapes with random Q4_K_M weights. Scaled-
//! down llama and qwen2 shapes are written, read back with candle's GGUF reader (metadata,
//! tensor types by llama.cpp's Q4_K_M rule, dequantized weight statistics), loaded by the
//! studio and run; the known shapes have their models' parameter counts and llama.cpp's
//! type counts; the full-size vocabulary builds and tokenizes a chat.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::GgmlDType;
use candle_core::{Device, Tensor};
use finetune_studio::model::config::{Architecture, Llama3RopeScaling};
use finetune_studio::model::{self, ChatMessage, Forward};
use finetune_studio::ops::stored_prefill;
use finetune_studio::testkit::shaped::{
    shaped_tokenizer_spec, use_more_bits, write_shaped_gguf, KnownShape, ShapeSpec, WEIGHT_STD,
};

/// A Llama-architecture shape small enough to load in a test: untied output, Llama 3 rope
/// scaling, rows of whole K-quant super-blocks.
fn small_llama() -> ShapeSpec {
    ShapeSpec {
        name: "small llama".into(),
        architecture: Architecture::Llama,
        hidden_size: 256,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        intermediate_size: 512,
        vocab_size: 1000,
        rope_theta: 500_000.0,
        rms_norm_eps: 1e-5,
        context_length: 4096,
        tie_word_embeddings: false,
        attention_bias: false,
        rope_scaling: Some(Llama3RopeScaling {
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        }),
    }
}

/// A Qwen2-architecture shape like Qwen2.5-0.5B in small: tied embeddings, q/k/v biases,
/// a hidden size (384) that is not a multiple of 256, so most matrices fall back to Q5_0
/// and Q8_0, while `ffn_down`'s rows (512) are K-quantized.
fn small_qwen2() -> ShapeSpec {
    ShapeSpec {
        name: "small qwen2".into(),
        architecture: Architecture::Qwen2,
        hidden_size: 384,
        num_layers: 2,
        num_heads: 6,
        num_kv_heads: 2,
        intermediate_size: 512,
        vocab_size: 1200,
        rope_theta: 1_000_000.0,
        rms_norm_eps: 1e-6,
        context_length: 32_768,
        tie_word_embeddings: true,
        attention_bias: true,
        rope_scaling: None,
    }
}

/// llama.cpp's `llama_tensor_get_type` for Q4_K_M, restated: 1-D tensors stay F32; the
/// output matrix (the token embedding when tied) Q6_K, or Q8_0 when its rows are not
/// whole super-blocks; `attn_v` and `ffn_down` Q6_K on the `use_more_bits` layers; every
/// other matrix Q4_K; K-quants on rows of a length that is not a multiple of 256 become
/// Q5_0 (for Q4_K) and Q8_0 (for Q6_K).
fn expected_type(name: &str, dims: &[usize], layers: usize, tied: bool) -> GgmlDType {
    if dims.len() < 2 {
        return GgmlDType::F32;
    }
    let row = dims[dims.len() - 1];
    let whole = row.is_multiple_of(256);
    if name == "output.weight" || (tied && name == "token_embd.weight") {
        return if whole {
            GgmlDType::Q6K
        } else {
            GgmlDType::Q8_0
        };
    }
    let layer: Option<usize> = name
        .strip_prefix("blk.")
        .and_then(|r| r.split('.').next())
        .and_then(|n| n.parse().ok());
    let n = layers;
    let more_bits = |i: usize| i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
    let six = (name.ends_with(".attn_v.weight") || name.ends_with(".ffn_down.weight"))
        && more_bits(layer.unwrap());
    match (six, whole) {
        (true, true) => GgmlDType::Q6K,
        (true, false) => GgmlDType::Q8_0,
        (false, true) => GgmlDType::Q4K,
        (false, false) => GgmlDType::Q5_0,
    }
}

/// The tensors a file of `spec` must hold, with their shapes in candle's order.
fn expected_tensors(spec: &ShapeSpec) -> BTreeMap<String, Vec<usize>> {
    let (h, i, v) = (spec.hidden_size, spec.intermediate_size, spec.vocab_size);
    let hd = h / spec.num_heads;
    let (q, kv) = (spec.num_heads * hd, spec.num_kv_heads * hd);
    let mut t = BTreeMap::new();
    t.insert("token_embd.weight".to_string(), vec![v, h]);
    t.insert("output_norm.weight".to_string(), vec![h]);
    if !spec.tie_word_embeddings {
        t.insert("output.weight".to_string(), vec![v, h]);
    }
    if spec.rope_scaling.is_some() {
        t.insert("rope_freqs.weight".to_string(), vec![hd / 2]);
    }
    for l in 0..spec.num_layers {
        let mut add = |name: &str, dims: Vec<usize>| {
            t.insert(format!("blk.{l}.{name}"), dims);
        };
        add("attn_norm.weight", vec![h]);
        add("attn_q.weight", vec![q, h]);
        add("attn_k.weight", vec![kv, h]);
        add("attn_v.weight", vec![kv, h]);
        add("attn_output.weight", vec![h, q]);
        add("ffn_norm.weight", vec![h]);
        add("ffn_gate.weight", vec![i, h]);
        add("ffn_up.weight", vec![i, h]);
        add("ffn_down.weight", vec![h, i]);
        if spec.attention_bias {
            add("attn_q.bias", vec![q]);
            add("attn_k.bias", vec![kv]);
            add("attn_v.bias", vec![kv]);
        }
    }
    t
}

fn u32_key(md: &std::collections::HashMap<String, Value>, key: &str) -> u32 {
    md.get(key)
        .unwrap_or_else(|| panic!("metadata has no {key}"))
        .to_u32()
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

fn f32_key(md: &std::collections::HashMap<String, Value>, key: &str) -> f32 {
    md.get(key)
        .unwrap_or_else(|| panic!("metadata has no {key}"))
        .to_f32()
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

fn str_key<'a>(md: &'a std::collections::HashMap<String, Value>, key: &str) -> &'a str {
    md.get(key)
        .unwrap_or_else(|| panic!("metadata has no {key}"))
        .to_string()
        .unwrap_or_else(|e| panic!("{key}: {e}"))
}

/// Reads `path` back with candle's reader and checks what a file of `spec` must say.
fn check_file(path: &Path, spec: &ShapeSpec) {
    let mut file = std::fs::File::open(path).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let md = &content.metadata;
    let arch = spec.arch_name();
    assert_eq!(str_key(md, "general.architecture"), arch);
    assert_eq!(str_key(md, "general.name"), spec.name);
    assert_eq!(u32_key(md, "general.file_type"), 15, "MOSTLY_Q4_K_M");
    for (key, value) in [
        ("block_count", spec.num_layers),
        ("embedding_length", spec.hidden_size),
        ("feed_forward_length", spec.intermediate_size),
        ("attention.head_count", spec.num_heads),
        ("attention.head_count_kv", spec.num_kv_heads),
        ("context_length", spec.context_length),
    ] {
        assert_eq!(
            u32_key(md, &format!("{arch}.{key}")) as usize,
            value,
            "{arch}.{key}"
        );
    }
    assert_eq!(
        f32_key(md, &format!("{arch}.attention.layer_norm_rms_epsilon")),
        spec.rms_norm_eps
    );
    assert_eq!(
        f32_key(md, &format!("{arch}.rope.freq_base")),
        spec.rope_theta
    );
    assert_eq!(str_key(md, "tokenizer.ggml.model"), "gpt2");
    let tokens = md["tokenizer.ggml.tokens"].to_vec().unwrap();
    assert_eq!(tokens.len(), spec.vocab_size);
    let eos = u32_key(md, "tokenizer.ggml.eos_token_id") as usize;
    assert_eq!(tokens[eos].to_string().unwrap(), "<|im_end|>");
    let types = md["tokenizer.ggml.token_type"].to_vec().unwrap();
    for s in ["<|im_start|>", "<|im_end|>", "<|endoftext|>"] {
        let id = tokens
            .iter()
            .position(|t| t.to_string().unwrap() == s)
            .unwrap_or_else(|| panic!("no {s}"));
        assert_eq!(types[id].to_i32().unwrap(), 3, "{s} is a control token");
    }
    assert!(str_key(md, "tokenizer.chat_template").contains("<|im_start|>"));

    let expected = expected_tensors(spec);
    let found: BTreeMap<String, Vec<usize>> = content
        .tensor_infos
        .iter()
        .map(|(n, i)| (n.clone(), i.shape.dims().to_vec()))
        .collect();
    assert_eq!(found, expected, "{arch}: tensor names and shapes");
    for (name, info) in &content.tensor_infos {
        let want = expected_type(
            name,
            info.shape.dims(),
            spec.num_layers,
            spec.tie_word_embeddings,
        );
        assert_eq!(info.ggml_dtype, want, "{arch}: type of {name}");
    }

    // Weights: standard deviation WEIGHT_STD, mean near zero; norms 1, biases 0.
    for (name, info) in &content.tensor_infos {
        let t = content
            .tensor(&mut file, name, &Device::Cpu)
            .unwrap()
            .dequantize(&Device::Cpu)
            .unwrap();
        let v: Vec<f32> = t.flatten_all().unwrap().to_vec1().unwrap();
        if name.ends_with("norm.weight") {
            assert!(v.iter().all(|&x| x == 1.0), "{name}");
        } else if name.ends_with(".bias") {
            assert!(v.iter().all(|&x| x == 0.0), "{name}");
        } else if name == "rope_freqs.weight" {
            assert!(v.iter().all(|&x| (1.0..=32.001).contains(&x)), "{v:?}");
        } else {
            let n = v.len() as f64;
            let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
            let std = (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
            assert!(
                (0.005..0.1).contains(&std) && (std / WEIGHT_STD - 1.0).abs() < 0.1,
                "{name} ({:?}): std {std}",
                info.ggml_dtype
            );
            assert!(
                mean.abs() < 0.05 * std,
                "{name} ({:?}): mean {mean}, std {std}",
                info.ggml_dtype
            );
            assert!(v.iter().all(|x| x.is_finite()), "{name}");
        }
    }
}

/// Loads the file with the studio's loader, tokenizes a chat and runs a forward pass.
fn check_load_and_forward(path: &Path, spec: &ShapeSpec) {
    let m = model::load_gguf(path, &Device::Cpu).unwrap();
    let mut want = spec.model_config();
    let got = m.config().clone();
    if let (Some(w), Some(g)) = (want.rope_scaling, got.rope_scaling) {
        assert!((w.factor - g.factor).abs() < 1e-3, "{g:?}");
        want.rope_scaling = Some(Llama3RopeScaling {
            factor: g.factor,
            ..w
        });
    }
    assert_eq!(got, want);
    let messages = [
        ChatMessage::new("system", "You are terse."),
        ChatMessage::new("user", "Hello there, how are you today?"),
    ];
    let ids = m.encode_chat(&messages, true).unwrap();
    let [_, im_start, im_end] = spec.special_ids();
    assert_eq!(ids[0], im_start);
    assert_eq!(ids.iter().filter(|&&i| i == im_end).count(), 2);
    let text = m.template.render(&messages, true).unwrap();
    assert!(ids.len() < text.len(), "merges shorten the text");
    assert_eq!(m.tokenizer.decode(&ids, false).unwrap(), text);
    assert!(m.stop_token_ids.contains(&im_end));

    let x = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let h = m.transformer.forward(&x, Forward::default()).unwrap();
    let logits = m.transformer.last_logits(&h).unwrap();
    assert_eq!(logits.dims(), &[1, spec.vocab_size]);
    let v: Vec<f32> = logits.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.iter().all(|x| x.is_finite()), "logits are finite");
    let spread =
        v.iter().copied().fold(f32::MIN, f32::max) - v.iter().copied().fold(f32::MAX, f32::min);
    assert!(spread > 0.0 && spread < 1e3, "logits spread {spread}");
}

#[test]
fn scaled_down_llama_and_qwen2_files_follow_llama_cpp_and_run() {
    let dir = tempfile::tempdir().unwrap();
    for spec in [small_llama(), small_qwen2()] {
        let path = dir.path().join(format!("{}.gguf", spec.arch_name()));
        write_shaped_gguf(&path, &spec, 7).unwrap();
        check_file(&path, &spec);
        check_load_and_forward(&path, &spec);
    }
    // The qwen2 shape's fallbacks, spelled out.
    let mut file = std::fs::File::open(dir.path().join("qwen2.gguf")).unwrap();
    let content = gguf_file::Content::read(&mut file).unwrap();
    let ty = |n: &str| content.tensor_infos[n].ggml_dtype;
    assert_eq!(ty("token_embd.weight"), GgmlDType::Q8_0);
    assert_eq!(ty("blk.0.attn_q.weight"), GgmlDType::Q5_0);
    assert_eq!(ty("blk.0.attn_v.weight"), GgmlDType::Q5_0);
    assert_eq!(ty("blk.1.attn_v.weight"), GgmlDType::Q8_0);
    assert_eq!(ty("blk.0.ffn_down.weight"), GgmlDType::Q4K);
    assert_eq!(ty("blk.1.ffn_down.weight"), GgmlDType::Q6K);
    assert_eq!(ty("blk.0.attn_q.bias"), GgmlDType::F32);
    // Most of its weights are Q8_0 and Q5_0; the Models tab names it as llama.cpp does.
    let info = finetune_studio::hub::catalog::describe(&dir.path().join("qwen2.gguf")).unwrap();
    assert_eq!(info.quantization, "Q4_K_M");
    // Only the two files: no temporaries left.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["llama.gguf", "qwen2.gguf"]);
}

/// Greedy ids of a short reply.
fn greedy_reply(m: &model::Model) -> Vec<u32> {
    use finetune_studio::infer::{self, GenerateRequest, Sampling};
    let prompt_ids = m
        .encode_chat(&[ChatMessage::new("user", "Name three colours.")], true)
        .unwrap();
    let req = GenerateRequest {
        prompt_ids,
        sampling: Sampling {
            temperature: 0.0,
            ..Sampling::default()
        },
        max_new_tokens: 12,
        stop_strings: vec![],
    };
    let cancel = std::sync::atomic::AtomicBool::new(false);
    infer::generate(m, None, &req, &cancel, &mut |_| {})
        .unwrap()
        .ids
}

/// A model prepared for decoding after its load (what the studio does while the user
/// types) covers every matrix a decode step multiplies (the layers' projections and the
/// head: the embedding itself where tied, not the untied embedding, which decode only
/// looks rows up in) and replies as one that builds its copies inside the first reply.
///
/// The prompt's products take the path a short timing decides (`ops::stored_prefill`),
/// and the paths round differently (8-bit activations or f32): until a kind is decided,
/// a product's output is whichever path ran last. Two replies of a third copy of the model
/// first decide every kind this prompt has, so that the two compared replies take the
/// same paths, whichever this CPU's timing chose.
#[test]
fn a_model_prepared_for_decoding_covers_its_decode_matrices_and_replies_the_same() {
    let dir = tempfile::tempdir().unwrap();
    for spec in [small_llama(), small_qwen2()] {
        let path = dir.path().join(format!("{}.gguf", spec.arch_name()));
        write_shaped_gguf(&path, &spec, 11).unwrap();
        let timing = model::load_gguf(&path, &Device::Cpu).unwrap();
        for _ in 0..stored_prefill::TRIALS {
            greedy_reply(&timing);
        }
        let lazy = model::load_gguf(&path, &Device::Cpu).unwrap();
        let prepared = model::load_gguf(&path, &Device::Cpu).unwrap();
        let bytes = prepared.prepare_decode(&|| true);
        let t = &prepared.transformer;
        let embedding = t.embed_tokens.byte_len();
        let want = match spec.tie_word_embeddings {
            true => t.matrix_bytes(),
            false => t.matrix_bytes() - embedding,
        };
        assert_eq!(bytes, want, "{}", spec.name);
        assert_eq!(
            prepared.prepare_decode(&|| true),
            want,
            "{}: again",
            spec.name
        );
        assert_eq!(
            prepared.prepare_decode(&|| false),
            0,
            "{}: let go of",
            spec.name
        );
        assert_eq!(
            greedy_reply(&prepared),
            greedy_reply(&lazy),
            "{}",
            spec.name
        );
    }
}

#[test]
fn the_same_seed_writes_the_same_file_and_another_seed_another() {
    let dir = tempfile::tempdir().unwrap();
    let spec = small_llama();
    let read = |name: &str, seed: u64| {
        let p = dir.path().join(name);
        write_shaped_gguf(&p, &spec, seed).unwrap();
        std::fs::read(p).unwrap()
    };
    let a = read("a.gguf", 1);
    assert_eq!(a, read("b.gguf", 1));
    let c = read("c.gguf", 2);
    assert_eq!(a.len(), c.len());
    assert_ne!(a, c);
}

#[test]
fn known_shapes_have_their_models_parameter_counts() {
    for (shape, params) in [
        (KnownShape::Qwen25_0_5B, 494e6),
        (KnownShape::Llama32_1B, 1.236e9),
        (KnownShape::Llama3_8B, 8.03e9),
    ] {
        let spec = shape.spec();
        let n = spec.parameter_count() as f64;
        assert!(
            (n / params - 1.0).abs() < 0.01,
            "{}: {n} parameters, expected about {params}",
            shape.name()
        );
        assert_eq!(KnownShape::from_name(shape.name()), Some(shape));
        spec.check(Path::new("spec.gguf")).unwrap();
        // The tensors' elements are the parameters (plus rope_freqs).
        let elements: u64 = spec
            .tensors()
            .iter()
            .filter(|t| t.name != "rope_freqs.weight")
            .map(|t| t.elements())
            .sum();
        assert_eq!(elements, spec.parameter_count(), "{}", shape.name());
    }
    assert_eq!(
        KnownShape::from_name("LLAMA-3-8B"),
        Some(KnownShape::Llama3_8B)
    );
    assert_eq!(KnownShape::from_name("llama-2-7b"), None);
}

#[test]
fn known_shapes_have_llama_cpps_type_counts() {
    // The counts llama.cpp's loader reports for these models' Q4_K_M files.
    let expected: [(KnownShape, &[(GgmlDType, usize)]); 3] = [
        (
            KnownShape::Qwen25_0_5B,
            &[
                (GgmlDType::F32, 121),
                (GgmlDType::Q5_0, 132),
                (GgmlDType::Q8_0, 13),
                (GgmlDType::Q4K, 12),
                (GgmlDType::Q6K, 12),
            ],
        ),
        (
            KnownShape::Llama32_1B,
            &[
                (GgmlDType::F32, 34),
                (GgmlDType::Q4K, 96),
                (GgmlDType::Q6K, 17),
            ],
        ),
        (
            KnownShape::Llama3_8B,
            &[
                (GgmlDType::F32, 65),
                (GgmlDType::Q4K, 193),
                (GgmlDType::Q6K, 33),
            ],
        ),
    ];
    for (shape, counts) in expected {
        let spec = shape.spec();
        let tensors = spec.tensors();
        for &(dtype, n) in counts {
            let found = tensors.iter().filter(|t| t.dtype == dtype).count();
            assert_eq!(found, n, "{}: {dtype:?} tensors", shape.name());
        }
        let total: usize = counts.iter().map(|&(_, n)| n).sum();
        assert_eq!(tensors.len(), total, "{}", shape.name());
        for t in &tensors {
            assert_eq!(
                t.dtype,
                expected_type(&t.name, &t.dims, spec.num_layers, spec.tie_word_embeddings),
                "{}: {}",
                shape.name(),
                t.name
            );
        }
    }
}

#[test]
fn the_full_size_vocabularies_build_and_tokenize_a_chat() {
    for shape in [KnownShape::Qwen25_0_5B, KnownShape::Llama32_1B] {
        let spec = shape.spec();
        let tok_spec = spec.tokenizer_spec();
        assert_eq!(tok_spec.tokens.len(), spec.vocab_size);
        let tok = finetune_studio::text::tokenizer::from_gguf(&tok_spec, Path::new("shaped.gguf"))
            .unwrap();
        assert_eq!(tok.vocab_size(), spec.vocab_size);
        let prompt =
            "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n";
        let ids = tok.encode(prompt, false).unwrap();
        let [_, im_start, im_end] = spec.special_ids();
        assert_eq!(ids[0], im_start);
        assert!(ids.contains(&im_end));
        assert!(
            ids.iter()
                .any(|&i| (256 + 65_536..im_start - 1).contains(&i)),
            "three-byte tokens are used: {ids:?}"
        );
        assert_eq!(tok.decode(&ids, false).unwrap(), prompt);
        assert_eq!(tok.eos_token.as_deref(), Some("<|im_end|>"));
    }
    // The vocabulary alone, at its smallest: bytes and specials.
    let tiny = shaped_tokenizer_spec(259, "qwen2");
    assert_eq!(tiny.tokens.len(), 259);
    assert!(tiny.merges.is_empty());
}

#[test]
fn shapes_that_cannot_be_written_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    let cases: Vec<(ShapeSpec, &str)> = vec![
        (
            ShapeSpec {
                num_heads: 5,
                ..small_llama()
            },
            "llama.attention.head_count",
        ),
        (
            ShapeSpec {
                hidden_size: 272,
                num_heads: 4,
                ..small_llama()
            },
            "not a multiple of 32",
        ),
        (
            ShapeSpec {
                attention_bias: false,
                ..small_qwen2()
            },
            "attention_bias",
        ),
        (
            ShapeSpec {
                architecture: Architecture::Qwen3,
                attention_bias: false,
                ..small_qwen2()
            },
            "qwen3",
        ),
        (
            ShapeSpec {
                vocab_size: 100,
                ..small_llama()
            },
            "vocab_size",
        ),
    ];
    for (spec, what) in cases {
        let e = write_shaped_gguf(&path, &spec, 1).unwrap_err().to_string();
        assert!(e.contains("bad.gguf") && e.contains(what), "{e}");
        assert!(!path.exists());
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn use_more_bits_picks_llama_cpps_layers() {
    // 32 layers: the first and last four, and every third from 6.
    let picked: Vec<usize> = (0..32).filter(|&i| use_more_bits(i, 32)).collect();
    assert_eq!(
        picked,
        [0, 1, 2, 3, 6, 9, 12, 15, 18, 21, 24, 27, 28, 29, 30, 31]
    );
    let picked: Vec<usize> = (0..2).filter(|&i| use_more_bits(i, 2)).collect();
    assert_eq!(picked, [1]);
}

#[test]
fn vocabularies_are_unique_and_every_merge_makes_a_token_of_them() {
    for n in [259, 1000, 66_000, 151_936] {
        let spec = shaped_tokenizer_spec(n, "qwen2");
        assert_eq!(spec.tokens.len(), n);
        assert_eq!(spec.token_types.len(), n);
        assert_eq!(spec.merges.len(), n - 259);
        let set: std::collections::HashSet<&str> = spec.tokens.iter().map(|t| t.as_str()).collect();
        assert_eq!(set.len(), n, "duplicate tokens at vocabulary size {n}");
        for m in &spec.merges {
            let (a, b) = m.split_once(' ').unwrap();
            assert!(set.contains(a) && set.contains(b), "{m}");
            assert!(set.contains(format!("{a}{b}").as_str()), "{m}");
        }
    }
}
