//! SentencePiece-style GGUF tokenizers (`tokenizer.ggml.model = "llama"`): token ids and
//! decoded text against transformers on files that llama.cpp's own writer (gguf-py) wrote
//! (`tests/fixtures/spm`, made by its `make_fixtures.py`), and a tiny model with the
//! hand-made vocabulary of `tiny_spm_spec` loaded, streamed, exported and loaded back.

mod common;

use std::path::Path;

use candle_core::quantized::gguf_file;
use candle_core::Device;
use finetune_studio::export::gguf::{write_gguf, GgufType};
use finetune_studio::infer::stream::TokenStream;
use finetune_studio::model::{self, gguf};
use finetune_studio::testkit::{tiny_spm_spec, write_tiny_gguf_with_tokenizer};
use finetune_studio::text::tokenizer::{self, GgufTokenizerSpec, Tokenizer};

/// The tokenizer of a GGUF file, from its metadata alone.
fn tokenizer_of(path: &Path) -> Tokenizer {
    let mut f = std::fs::File::open(path).unwrap();
    let content = gguf_file::Content::read(&mut f).unwrap();
    let spec = gguf::tokenizer_spec(&content.metadata, path).unwrap();
    tokenizer::from_gguf(&spec, path).unwrap()
}

/// Checks every case of `dir/expected.json`; returns how many texts were checked.
fn check_against_transformers(dir: &Path) -> usize {
    let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    let expected: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut checked = 0;
    for fixture in expected["fixtures"].as_array().unwrap() {
        let name = fixture["gguf"].as_str().unwrap();
        let tok = tokenizer_of(&dir.join(name));
        for case in fixture["cases"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let ids =
                |key: &str| -> Vec<u32> { serde_json::from_value(case[key].clone()).unwrap() };
            let plain = tok.encode(text, false).unwrap();
            assert_eq!(plain, ids("ids"), "{name}: {text:?}");
            assert_eq!(
                tok.encode(text, true).unwrap(),
                ids("ids_special"),
                "{name}: {text:?} with special tokens"
            );
            assert_eq!(
                tok.decode(&plain, false).unwrap(),
                case["decoded"].as_str().unwrap(),
                "{name}: decoding {text:?}"
            );
            checked += 1;
        }
    }
    checked
}

#[test]
fn ids_match_transformers_on_gguf_py_files() {
    let n = check_against_transformers(&common::fixture("spm"));
    assert!(n >= 50, "only {n} texts checked");
}

/// More fixtures made by `make_fixtures.py OUT --mistral DIR` (the real Mistral 7B
/// vocabularies, too large to commit), checked when `SPM_FIXTURE_DIR=OUT` is set.
#[test]
#[ignore = "needs SPM_FIXTURE_DIR=OUT from `make_fixtures.py OUT --mistral DIR`"]
fn ids_match_transformers_on_fixtures_from_the_environment() {
    let dir = std::env::var_os("SPM_FIXTURE_DIR")
        .expect("set SPM_FIXTURE_DIR to the folder `make_fixtures.py OUT --mistral DIR` wrote");
    let n = check_against_transformers(Path::new(&dir));
    assert!(n > 0, "no texts in {}", Path::new(&dir).display());
    eprintln!("{n} texts match transformers");
}

#[test]
fn fixture_vocabulary_is_tiny_spm_spec() {
    let tok = tokenizer_of(&common::fixture("spm").join("tiny.gguf"));
    let spec = tiny_spm_spec();
    let v = tok.spm_vocab().unwrap();
    assert_eq!(v.tokens, spec.tokens);
    assert_eq!(v.scores, spec.scores);
    assert_eq!(v.token_types, spec.token_types);
    // gguf-py wrote no add_bos_token: SentencePiece vocabularies add BOS by default.
    assert!(v.add_bos);
    assert_eq!(tok.encode("hello", true).unwrap(), vec![1, 264]);
}

fn tiny_model(dir: &Path, spec: &GgufTokenizerSpec) -> model::Model {
    let path = dir.join("spm.gguf");
    write_tiny_gguf_with_tokenizer(&path, spec, 7).unwrap();
    model::load_gguf(&path, &Device::Cpu).unwrap()
}

const TEXTS: [&str; 7] = [
    "hello world",
    "héllo 中 world thing",
    "<s>hello</s>",
    "<|user|>hello  world",
    "line\n\tnext 🙂",
    " hello ",
    "",
];

#[test]
fn tiny_spm_model_loads_encodes_and_streams() {
    let dir = tempfile::tempdir().unwrap();
    let m = tiny_model(dir.path(), &tiny_spm_spec());
    let tok = &m.tokenizer;
    assert_eq!(tok.encode("hello world", false).unwrap(), vec![264, 269]);
    assert_eq!(tok.encode("hello world", true).unwrap(), vec![1, 264, 269]);
    assert_eq!(m.tokenizer_config["add_bos_token"], true);
    assert_eq!(m.config().vocab_size, tok.vocab_size());
    // Streaming never splits the bytes of "中" and keeps the spaces between pieces.
    let text = "héllo 中 world thing";
    let ids = tok.encode(text, false).unwrap();
    let mut stream = TokenStream::new(tok, false);
    let mut out = String::new();
    for &id in &ids {
        if let Some(piece) = stream.push(id).unwrap() {
            assert!(!piece.contains('\u{FFFD}'), "{piece:?}");
            out.push_str(&piece);
        }
    }
    out.extend(stream.finish().unwrap());
    assert_eq!(out, text);
    assert_eq!(tok.decode(&ids, false).unwrap(), text);
}

#[test]
fn spm_gguf_exports_and_loads_back_with_the_same_ids() {
    let mut flags = tiny_spm_spec();
    flags.add_bos = false;
    flags.add_eos = true;
    flags.add_space_prefix = Some(false);
    flags.pad_id = Some(0);
    for spec in [tiny_spm_spec(), flags] {
        let dir = tempfile::tempdir().unwrap();
        let first = tiny_model(dir.path(), &spec);
        let path = dir.path().join("exported.gguf");
        write_gguf(&first, &path, GgufType::F32).unwrap();
        let mut f = std::fs::File::open(&path).unwrap();
        let md = gguf_file::Content::read(&mut f).unwrap().metadata;
        assert_eq!(
            md["tokenizer.ggml.model"].to_string().unwrap(),
            "llama",
            "{spec:?}"
        );
        let second = model::load_gguf(&path, &Device::Cpu).unwrap();
        let (a, b) = (&first.tokenizer, &second.tokenizer);
        assert_eq!(a.spm_vocab(), b.spm_vocab());
        for text in TEXTS {
            for special in [false, true] {
                let ids = a.encode(text, special).unwrap();
                assert_eq!(b.encode(text, special).unwrap(), ids, "{text:?} {special}");
                assert_eq!(
                    b.decode(&ids, false).unwrap(),
                    a.decode(&ids, false).unwrap()
                );
            }
        }
        for (x, y) in [
            (&a.bos_token, &b.bos_token),
            (&a.eos_token, &b.eos_token),
            (&a.unk_token, &b.unk_token),
            (&a.pad_token, &b.pad_token),
        ] {
            assert_eq!(x, y);
        }
        let ids = a.encode("hello world", true).unwrap();
        let diff = common::max_abs_diff(
            &common::logits(&first, None, None, &ids),
            &common::logits(&second, None, None, &ids),
        );
        assert!(diff < 1e-4, "logits differ by {diff}");
    }
}

/// A SentencePiece-style model saved as a Hugging Face folder (only `tokenizer.json`, no
/// scores) still exports as a `llama` vocabulary that tokenizes as before.
#[test]
fn spm_tokenizer_json_exports_to_gguf_as_llama() {
    for spec in [tiny_spm_spec(), {
        let mut s = tiny_spm_spec();
        s.add_space_prefix = Some(false);
        s
    }] {
        let dir = tempfile::tempdir().unwrap();
        let first = tiny_model(dir.path(), &spec);
        let folder = dir.path().join("hf");
        finetune_studio::export::merge::write_hf_folder(&first, &folder).unwrap();
        let hf = model::load_hf_folder(&folder, &Device::Cpu).unwrap();
        assert!(
            hf.tokenizer.spm_vocab().is_none(),
            "read from tokenizer.json alone"
        );
        let path = dir.path().join("from-hf.gguf");
        write_gguf(&hf, &path, GgufType::F32).unwrap();
        let mut f = std::fs::File::open(&path).unwrap();
        let md = gguf_file::Content::read(&mut f).unwrap().metadata;
        assert_eq!(md["tokenizer.ggml.model"].to_string().unwrap(), "llama");
        let back = model::load_gguf(&path, &Device::Cpu).unwrap();
        for text in TEXTS {
            for special in [false, true] {
                let ids = first.tokenizer.encode(text, special).unwrap();
                assert_eq!(hf.tokenizer.encode(text, special).unwrap(), ids, "{text:?}");
                assert_eq!(
                    back.tokenizer.encode(text, special).unwrap(),
                    ids,
                    "{text:?}"
                );
                assert_eq!(
                    back.tokenizer.decode(&ids, false).unwrap(),
                    first.tokenizer.decode(&ids, false).unwrap()
                );
            }
        }
        let spm = back.tokenizer.spm_vocab().unwrap();
        assert_eq!(spm.add_space_prefix, spec.add_space_prefix.unwrap_or(true));
        assert_eq!(spm.add_bos, spec.add_bos);
    }
}
