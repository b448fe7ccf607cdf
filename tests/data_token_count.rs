//! Statistics count tokens through a faster path than `Tokenizer::encode`
//! (`text::token_count`); its counts must be the encoder's, exactly. Checked on every text
//! of the fixture datasets (alone and inside chat-template markers, so special tokens are
//! split out), on random text that sits on the split regex's edges, and with a tiny GGUF
//! tokenizer whose added tokens are plain text. The default-model checks skip (with a note)
//! when the model has not been fetched; CI fetches it.

mod common;

use std::path::Path;

use finetune_studio::data::{self, TokenCounter};
use finetune_studio::text::tokenizer::{self, GgufTokenizerSpec, Tokenizer};
use rand::{Rng, SeedableRng};

fn assert_counts(tok: &Tokenizer, text: &str) {
    let want = tok.encode(text, false).expect("encodes").len();
    assert_eq!(tok.count(text), want, "{text:?}");
}

/// Every text of every fixture dataset (all formats the loader reads).
fn fixture_texts() -> Vec<String> {
    let dir = common::fixture("datasets");
    let mut texts = Vec::new();
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .expect("fixture folder")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "json" || e == "jsonl"))
        .collect();
    names.sort();
    for path in names {
        let ds = if path.ends_with("llamafactory_dataset_info.json") {
            continue;
        } else {
            data::load(&path, None).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        };
        for c in ds.records() {
            texts.extend(c.texts().map(str::to_string));
        }
    }
    assert!(texts.len() > 2000, "{} texts", texts.len());
    texts
}

#[test]
fn counts_equal_encode_on_fixture_datasets() {
    let m = common::default_model();
    let tok = &m.tokenizer;
    for text in fixture_texts() {
        assert_counts(tok, &text);
        assert_counts(tok, &format!("<|im_start|>user\n{text}<|im_end|>\n"));
    }
}

#[test]
fn counts_equal_encode_on_random_text() {
    let m = common::default_model();
    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    for _ in 0..20_000 {
        let text = tricky_text(&mut rng);
        assert_counts(&m.tokenizer, &text);
    }
}

/// GPT-2's `bytes_to_unicode`: printable bytes stand for themselves, the others map to
/// U+0100 onwards.
fn byte_level_char(b: u8) -> char {
    let printable = |x: u8| matches!(x, 33..=126 | 161..=172 | 174..=255);
    if printable(b) {
        return char::from(b);
    }
    let k = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(256 + k).expect("valid char")
}

#[test]
fn counts_equal_encode_with_a_tiny_gguf_tokenizer() {
    // All 256 byte-level characters plus a few merges, and added tokens that overlap
    // (`<a>` inside `<a><b>`: leftmost-longest takes the longer one).
    let mut tokens = vec!["<a>".to_string(), "<a><b>".to_string()];
    tokens.extend((0u8..=255).map(|b| byte_level_char(b).to_string()));
    tokens.extend(["ĠĠ", "he", "ll", "hell", "Ġhell"].map(String::from));
    for pre in ["llama-bpe", "smollm"] {
        let spec = GgufTokenizerSpec {
            model: "gpt2".into(),
            pre: Some(pre.into()),
            token_types: (0..tokens.len())
                .map(|i| if i < 2 { 4 } else { 1 })
                .collect(),
            tokens: tokens.clone(),
            merges: ["Ġ Ġ", "h e", "l l", "he ll", "Ġ hell"]
                .map(String::from)
                .to_vec(),
            bos_id: None,
            eos_id: None,
            pad_id: None,
            unk_id: None,
            add_bos: false,
            ..Default::default()
        };
        let tok = tokenizer::from_gguf(&spec, Path::new("tiny.gguf")).expect("tiny tokenizer");
        for text in [
            "hello  hell",
            "x<a><b>y<a>  <a",
            "",
            "   ",
            "hell\n\n  hell",
        ] {
            assert_counts(&tok, text);
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..2000 {
            let text = tricky_text(&mut rng) + "<a><b>" + &tricky_text(&mut rng);
            assert_counts(&tok, &text);
        }
    }
}

/// Random text from fragments on the split regex's edges (letters and numbers of every
/// category, marks, Unicode spaces, contractions, line breaks, emoji).
fn tricky_text(rng: &mut impl Rng) -> String {
    const FRAGMENTS: &[&str] = &[
        "a",
        "Z",
        "é",
        "中",
        "ß",
        "ǅ",
        "ʰ",
        "1",
        "42",
        "1234",
        "٣",
        "Ⅷ",
        "½",
        " ",
        "  ",
        "   ",
        "\n",
        "\r\n",
        "\n\n",
        "\t",
        "\u{a0}",
        "\u{3000}",
        "\u{2028}",
        "\u{85}",
        "'",
        "'s",
        "'S",
        "'ll",
        "'re",
        "'ve",
        "'m",
        "'d",
        "'t",
        "!",
        "...",
        "\u{301}",
        "😀",
        "-",
        "_",
        "\"",
        "(#",
        ")",
        "/",
        "word",
        "Word",
        "WORD",
        "wOrD",
        " the",
        "\u{200b}",
        "<|im_start|>",
        "<|im_end|>",
    ];
    let n = rng.random_range(0..24);
    (0..n)
        .map(|_| FRAGMENTS[rng.random_range(0..FRAGMENTS.len())])
        .collect()
}
