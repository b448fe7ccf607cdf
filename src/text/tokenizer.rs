//! The tokenizer: a Hugging Face `tokenizers::Tokenizer`, loaded from `tokenizer.json` or
//! built from a GGUF file's `tokenizer.ggml.*` metadata the way transformers builds it:
//! byte-level BPE (`gpt2`) here, SentencePiece-style vocabularies (`llama`) in
//! [`super::tokenizer_spm`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use serde_json::{json, Value};

use super::token_count::CountPlan;
use super::tokenizer_parts::{merges_from_gguf, AddedEntry, BpeOptions, BpeParts};
use super::tokenizer_spm::SpmVocab;
use super::TextError;

/// Token ids and the byte range of `text` each one covers.
pub type TokensWithOffsets = (Vec<u32>, Vec<(usize, usize)>);

/// A loaded tokenizer plus the special tokens the rest of the studio needs.
#[derive(Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// The tokenizer as `tokenizer.json`, for writing merged models: the file's own
    /// value, or, for one built from GGUF metadata, written from `inner` on first use
    /// (0.6 s for Gemma 3's 262K tokens, so not at load).
    json: OnceLock<Value>,
    /// `tokenizer.json` without the model's vocabulary and merges: the pipeline, which is
    /// what the token counter reads.
    frame: Value,
    pub bos_token: Option<String>,
    pub eos_token: Option<String>,
    pub pad_token: Option<String>,
    pub unk_token: Option<String>,
    /// `tokenizer.ggml.pre` of the GGUF file this tokenizer was built from, written back
    /// unchanged when the model is exported as GGUF.
    pub gguf_pre: Option<String>,
    /// The SentencePiece-style vocabulary (tokens, scores, token types) of the GGUF file
    /// this tokenizer was built from, written back when the model is exported as GGUF.
    pub(crate) spm: Option<Arc<SpmVocab>>,
    /// How [`crate::data::TokenCounter::count`] counts without the crate's `encode_fast`
    /// (built on first use; `None` inside where the pipeline needs the crate's path).
    count_plan: OnceLock<Option<Arc<CountPlan>>>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab_size", &self.vocab_size())
            .field("bos", &self.bos_token)
            .field("eos", &self.eos_token)
            .finish()
    }
}

/// Refuses BPE merges the tokenizers crate cannot build, before it sees them: it joins
/// each merge's parts in a buffer as long as the longest vocabulary entry and slices it
/// (tokenizers 0.23 `BpeBuilder::build`), so a merge of two vocabulary tokens whose join
/// is longer than any entry, or whose second part is shorter than
/// `continuing_subword_prefix`, panics there instead of failing. Every merge's parts and
/// its result must be in the vocabulary.
fn check_bpe_merges(json: &Value, source: &Path) -> Result<(), TextError> {
    let Some(model) = json.get("model") else {
        return Ok(());
    };
    if model.get("type").is_some_and(|t| t.as_str() != Some("BPE")) {
        return Ok(());
    }
    let (Some(vocab), Some(merges)) = (
        model.get("vocab").and_then(|v| v.as_object()),
        model.get("merges").and_then(|m| m.as_array()),
    ) else {
        return Ok(());
    };
    let prefix = model
        .get("continuing_subword_prefix")
        .and_then(|p| p.as_str())
        .unwrap_or("");
    // Looked up three times a merge: a vocabulary of 262K tokens has 515K merges
    // (Gemma 3), where the map's own string hashing took half a second.
    let vocab: rustc_hash::FxHashSet<&str> = vocab.keys().map(String::as_str).collect();
    for (i, merge) in merges.iter().enumerate() {
        let (a, b) = match merge {
            Value::String(s) => match s.split_once(' ') {
                Some(pair) => pair,
                None => continue,
            },
            Value::Array(pair) => match pair.as_slice() {
                [Value::String(a), Value::String(b)] => (a.as_str(), b.as_str()),
                _ => continue,
            },
            _ => continue,
        };
        let bad = |what: String| TextError::Tokenizer {
            path: source.into(),
            message: format!("merge {i} (`{a}` + `{b}`) {what}"),
        };
        let Some(rest) = b.strip_prefix(prefix) else {
            return Err(bad(format!(
                "has a second part without the continuing-subword prefix `{prefix}`"
            )));
        };
        for part in [a, b] {
            if !vocab.contains(part) {
                return Err(bad(format!(
                    "uses `{part}`, which is not in the vocabulary"
                )));
            }
        }
        let joined = format!("{a}{rest}");
        if !vocab.contains(joined.as_str()) {
            return Err(bad(format!(
                "makes `{joined}`, which is not in the vocabulary"
            )));
        }
    }
    Ok(())
}

/// `tokenizer.json` without the model's vocabulary and merges.
fn frame_of(json: &Value) -> Value {
    let Some(top) = json.as_object() else {
        return json.clone();
    };
    let mut frame = serde_json::Map::new();
    for (key, value) in top {
        let value = match (key.as_str(), value.as_object()) {
            ("model", Some(model)) => Value::Object(
                model
                    .iter()
                    .filter(|(k, _)| !matches!(k.as_str(), "vocab" | "merges"))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            _ => value.clone(),
        };
        frame.insert(key.clone(), value);
    }
    Value::Object(frame)
}

impl Tokenizer {
    /// Builds the tokenizer from `tokenizer.json` text; special tokens come from the caller
    /// (usually `tokenizer_config.json`).
    pub fn from_json(json: Value, source: &Path) -> Result<Self, TextError> {
        check_bpe_merges(&json, source)?;
        // Read straight from the JSON value, not through its text: for a 262K-token
        // vocabulary the text's writing and parsing were most of the load.
        let inner =
            <tokenizers::Tokenizer as serde::Deserialize>::deserialize(&json).map_err(|e| {
                TextError::Tokenizer {
                    path: source.into(),
                    message: format!("cannot build the tokenizer: {e}"),
                }
            })?;
        let frame = frame_of(&json);
        Ok(Self::from_built(inner, frame, Some(json)))
    }

    /// A tokenizer the crate has built, with its pipeline (`frame`, see the field) and,
    /// where there is one, the `tokenizer.json` value it came from.
    pub(super) fn from_built(
        inner: tokenizers::Tokenizer,
        frame: Value,
        json: Option<Value>,
    ) -> Self {
        let cell = OnceLock::new();
        if let Some(json) = json {
            let _ = cell.set(json);
        }
        Self {
            inner,
            json: cell,
            frame,
            bos_token: None,
            eos_token: None,
            pad_token: None,
            unk_token: None,
            gguf_pre: None,
            spm: None,
            count_plan: OnceLock::new(),
        }
    }

    /// Loads `tokenizer.json` from disk.
    pub fn from_file(path: &Path) -> Result<Self, TextError> {
        let text = std::fs::read_to_string(path).map_err(|e| TextError::io(path, e))?;
        let json: Value = serde_json::from_str(&text).map_err(|e| TextError::Tokenizer {
            path: path.into(),
            message: format!("invalid JSON: {e}"),
        })?;
        Self::from_json(json, path)
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The tokenizer in `tokenizer.json` form.
    pub fn to_json(&self) -> Result<&Value, TextError> {
        if let Some(json) = self.json.get() {
            return Ok(json);
        }
        let json = serde_json::to_value(&self.inner).map_err(|e| TextError::Tokenizer {
            path: "tokenizer".into(),
            message: format!("cannot write the tokenizer as tokenizer.json: {e}"),
        })?;
        Ok(self.json.get_or_init(|| json))
    }

    /// `tokenizer.json` without the model's vocabulary and merges: the normalizer,
    /// pre-tokenizer, post-processor, decoder, added tokens and the model's options.
    pub fn pipeline(&self) -> &Value {
        &self.frame
    }

    /// Encodes text. `add_special_tokens` adds what the post-processor adds (BOS for Llama 2).
    pub fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, TextError> {
        let enc = self
            .inner
            .encode_fast(text, add_special_tokens)
            .map_err(|e| TextError::Tokenizer {
                path: "tokenizer".into(),
                message: format!("cannot encode: {e}"),
            })?;
        Ok(enc.get_ids().to_vec())
    }

    /// Encodes and returns the byte offsets of every token in `text`.
    pub fn encode_with_offsets(&self, text: &str) -> Result<TokensWithOffsets, TextError> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| TextError::Tokenizer {
                path: "tokenizer".into(),
                message: format!("cannot encode: {e}"),
            })?;
        Ok((enc.get_ids().to_vec(), enc.get_offsets().to_vec()))
    }

    pub fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, TextError> {
        self.inner
            .decode(ids, skip_special_tokens)
            .map_err(|e| TextError::Tokenizer {
                path: "tokenizer".into(),
                message: format!("cannot decode: {e}"),
            })
    }

    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    pub fn id_to_token(&self, id: u32) -> Option<String> {
        self.inner.id_to_token(id)
    }

    /// The SentencePiece-style vocabulary, when this tokenizer was built from a GGUF file
    /// with `tokenizer.ggml.model = "llama"`.
    pub fn spm_vocab(&self) -> Option<&SpmVocab> {
        self.spm.as_deref()
    }
}

/// GPT-2's reversible map from bytes to printable characters (`bytes_to_unicode`). The
/// tokenizers crate keeps its copy private, so it is spelt out here.
pub(crate) fn byte_alphabet() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..=255u32 {
        let printable =
            (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        table[b as usize] = if printable {
            char::from_u32(b).unwrap_or('\0')
        } else {
            let c = char::from_u32(256 + n).unwrap_or('\0');
            n += 1;
            c
        };
    }
    table
}

const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Split regexes of the pre-tokenizers by `tokenizer.ggml.pre` name, as transformers and
/// llama.cpp know them (the name written back is the first of each).
const PRE_REGEXES: [(&[&str], &str); 4] = [
    (&["llama-bpe", "llama3", "llama-v3", "smaug-bpe"], LLAMA3),
    (&["qwen2", "qwen35"], QWEN2),
    (&["gpt-4o"], GPT4O),
    (&["tekken"], TEKKEN),
];

/// Pre-tokenizer split regexes by `tokenizer.ggml.pre`, as transformers maps them.
pub(crate) fn pre_tokenizer_for(pre: &str) -> Value {
    let regex = PRE_REGEXES
        .iter()
        .find(|(names, _)| names.contains(&pre))
        .map(|(_, r)| *r);
    match regex {
        None => {
            json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true})
        }
        Some(r) => json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
        ]}),
    }
}

/// The `tokenizer.ggml.pre` name for a `tokenizer.json` pre-tokenizer: llama.cpp splits
/// text before BPE by this name, so a wrong one changes how prompts tokenize there.
/// `None` when the pre-tokenizer is none that llama.cpp knows.
pub fn gguf_pre_name(pre_tokenizer: &Value) -> Option<&'static str> {
    let ty = pre_tokenizer.get("type").and_then(Value::as_str)?;
    let byte_level_regex = |p: &Value| {
        p.get("type").and_then(Value::as_str) == Some("ByteLevel")
            && p.get("use_regex").and_then(Value::as_bool).unwrap_or(true)
    };
    if ty == "ByteLevel" {
        return byte_level_regex(pre_tokenizer).then_some("gpt2");
    }
    let parts = pre_tokenizer.get("pretokenizers")?.as_array()?;
    // SmolLM: single digits, then GPT-2's byte-level split.
    if let [digits, bl] = parts.as_slice() {
        if digits.get("type").and_then(Value::as_str) == Some("Digits")
            && digits.get("individual_digits").and_then(Value::as_bool) == Some(true)
            && byte_level_regex(bl)
        {
            return Some("smollm");
        }
    }
    let regex = parts.iter().find_map(|p| {
        (p.get("type").and_then(Value::as_str) == Some("Split"))
            .then(|| p.pointer("/pattern/Regex").and_then(Value::as_str))
            .flatten()
    })?;
    PRE_REGEXES
        .iter()
        .find(|(_, r)| *r == regex)
        .map(|(names, _)| names[0])
}

/// What a GGUF file says about its tokenizer (`tokenizer.ggml.*`).
#[derive(Debug, Clone, Default)]
pub struct GgufTokenizerSpec {
    /// `tokenizer.ggml.model`: `gpt2` (byte-level BPE) or `llama` (SentencePiece-style).
    pub model: String,
    pub pre: Option<String>,
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores` (empty when the file has none); `llama` vocabularies
    /// without merges need them.
    pub scores: Vec<f32>,
    pub token_types: Vec<i32>,
    pub merges: Vec<String>,
    pub bos_id: Option<u32>,
    pub eos_id: Option<u32>,
    pub pad_id: Option<u32>,
    pub unk_id: Option<u32>,
    pub add_bos: bool,
    pub add_eos: bool,
    /// `tokenizer.ggml.add_space_prefix`, when the file says.
    pub add_space_prefix: Option<bool>,
}

/// Builds the tokenizer a GGUF file describes the way transformers does, so token ids
/// match `AutoTokenizer.from_pretrained(dir, gguf_file=..)`: byte-level BPE (`gpt2`) or
/// SentencePiece-style (`llama`).
pub fn from_gguf(spec: &GgufTokenizerSpec, source: &Path) -> Result<Tokenizer, TextError> {
    match spec.model.as_str() {
        "gpt2" => byte_level_from_gguf(spec, source),
        "llama" => super::tokenizer_spm::from_gguf(spec, source),
        other => Err(TextError::Tokenizer {
            path: source.into(),
            message: format!(
                "tokenizer model `{other}` in GGUF metadata is not supported (byte-level BPE `gpt2` and SentencePiece-style `llama` are); use the model's Hugging Face folder with tokenizer.json instead"
            ),
        }),
    }
}

/// Builds a byte-level BPE tokenizer from GGUF metadata the way transformers'
/// `GGUFGPTConverter` does.
fn byte_level_from_gguf(spec: &GgufTokenizerSpec, source: &Path) -> Result<Tokenizer, TextError> {
    let alphabet = byte_alphabet();
    let in_alphabet: std::collections::HashSet<char> = alphabet.iter().copied().collect();
    let respell = |t: &str| -> String {
        if t.chars().all(|c| in_alphabet.contains(&c)) {
            t.to_string()
        } else {
            t.bytes().map(|b| alphabet[b as usize]).collect()
        }
    };
    const CONTROL: i32 = 3;
    const USER_DEFINED: i32 = 4;
    let mut vocab = Vec::with_capacity(spec.tokens.len());
    let mut added = Vec::new();
    for (id, token) in spec.tokens.iter().enumerate() {
        let ty = spec.token_types.get(id).copied().unwrap_or(1);
        let is_added = ty == CONTROL || ty == USER_DEFINED;
        vocab.push(if is_added {
            token.clone()
        } else {
            respell(token)
        });
        if is_added {
            added.push(AddedEntry {
                id: id as u32,
                content: token.clone(),
                special: ty == CONTROL,
            });
        }
    }
    let merges = merges_from_gguf(&spec.merges, source)?;
    let name = |id: Option<u32>| id.and_then(|i| spec.tokens.get(i as usize)).cloned();
    let bos = name(spec.bos_id);
    let post_processor = match (&bos, spec.add_bos) {
        (Some(b), true) => json!({"type": "TemplateProcessing",
            "single": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
            "pair": [{"SpecialToken": {"id": b, "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
                     {"SpecialToken": {"id": b, "type_id": 1}}, {"Sequence": {"id": "B", "type_id": 1}}],
            "special_tokens": {b.as_str(): {"id": b, "ids": [spec.bos_id], "tokens": [b]}}}),
        _ => {
            json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": false, "use_regex": true})
        }
    };
    let mut pipeline = serde_json::Map::new();
    pipeline.insert("normalizer".into(), Value::Null);
    pipeline.insert(
        "pre_tokenizer".into(),
        pre_tokenizer_for(spec.pre.as_deref().unwrap_or("default")),
    );
    pipeline.insert("post_processor".into(), post_processor);
    pipeline.insert(
        "decoder".into(),
        json!({"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true}),
    );
    let parts = BpeParts {
        vocab,
        merges,
        options: BpeOptions {
            unk_token: None,
            continuing_subword_prefix: Some(String::new()),
            end_of_word_suffix: Some(String::new()),
            fuse_unk: false,
            byte_fallback: false,
        },
        added,
        pipeline,
    };
    let mut tok = Tokenizer::from_bpe_parts(parts, source)?;
    tok.bos_token = bos;
    tok.eos_token = name(spec.eos_id);
    tok.pad_token = name(spec.pad_id);
    tok.unk_token = name(spec.unk_id);
    tok.gguf_pre = spec.pre.clone();
    Ok(tok)
}

/// Reads special tokens from `tokenizer_config.json` (strings or `{"content": ..}` objects).
pub fn special_tokens_from_config(config: &Value) -> HashMap<&'static str, String> {
    let mut out = HashMap::new();
    for key in ["bos_token", "eos_token", "pad_token", "unk_token"] {
        let v = match config.get(key) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Object(o)) => o
                .get("content")
                .and_then(|c| c.as_str())
                .map(str::to_string),
            _ => None,
        };
        if let Some(v) = v {
            out.insert(key, v);
        }
    }
    out
}

/// Dataset statistics count tokens with the model's own tokenizer: through
/// [`super::token_count`] where it reproduces the pipeline, else through `encode_fast`.
/// Both give `encode(text, false).len()`.
impl crate::data::TokenCounter for Tokenizer {
    fn count(&self, text: &str) -> usize {
        let plan = self
            .count_plan
            .get_or_init(|| CountPlan::new(&self.frame, byte_alphabet()).map(Arc::new));
        if let Some(n) = plan
            .as_ref()
            .and_then(|p| p.count(text, self.inner.get_model()))
        {
            return n;
        }
        self.inner
            .encode_fast(text, false)
            .map(|e| e.len())
            .unwrap_or(0)
    }
    fn name(&self) -> String {
        "model tokenizer".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_alphabet_matches_gpt2() {
        let a = byte_alphabet();
        assert_eq!(a[b' ' as usize], 'Ġ');
        assert_eq!(a[b'\n' as usize], 'Ċ');
        assert_eq!(a[b'A' as usize], 'A');
        let unique: std::collections::HashSet<_> = a.iter().collect();
        assert_eq!(unique.len(), 256);
    }

    #[test]
    fn tiny_bpe_from_gguf_metadata() {
        let spec = GgufTokenizerSpec {
            model: "gpt2".into(),
            pre: Some("smollm".into()),
            tokens: [
                "<|endoftext|>",
                "<|im_start|>",
                "h",
                "i",
                "Ġ",
                "hi",
                "Ġhi",
                "中",
            ]
            .map(String::from)
            .to_vec(),
            token_types: vec![3, 3, 1, 1, 1, 1, 1, 1],
            merges: vec!["h i".into(), "Ġ hi".into()],
            bos_id: Some(1),
            eos_id: Some(0),
            pad_id: None,
            unk_id: None,
            add_bos: false,
            ..Default::default()
        };
        let t = from_gguf(&spec, Path::new("t.gguf")).unwrap();
        assert_eq!(t.encode("<|im_start|>hi hi", false).unwrap(), vec![1, 5, 6]);
        assert_eq!(t.decode(&[5, 6], false).unwrap(), "hi hi");
        // "中" is outside the byte alphabet, so it is re-spelt as its three UTF-8 bytes.
        let a = byte_alphabet();
        let respelt: String = "中".bytes().map(|b| a[b as usize]).collect();
        assert_eq!(t.token_to_id(&respelt), Some(7));
        assert_eq!(t.bos_token.as_deref(), Some("<|im_start|>"));
    }

    #[test]
    fn gguf_pre_names_round_trip_through_pre_tokenizers() {
        for name in ["llama-bpe", "qwen2", "gpt-4o", "tekken"] {
            assert_eq!(gguf_pre_name(&pre_tokenizer_for(name)), Some(name));
        }
        assert_eq!(gguf_pre_name(&pre_tokenizer_for("gpt2")), Some("gpt2"));
        let smollm = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": true},
            {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}]});
        assert_eq!(gguf_pre_name(&smollm), Some("smollm"));
        let unknown = json!({"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": "\\s+"}, "behavior": "Isolated", "invert": false},
            {"type": "ByteLevel", "use_regex": false}]});
        assert_eq!(gguf_pre_name(&unknown), None);
        assert_eq!(gguf_pre_name(&Value::Null), None);
    }
}
