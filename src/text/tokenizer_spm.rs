//! SentencePiece-style tokenizers from GGUF metadata (`tokenizer.ggml.model = "llama"`:
//! Llama 2, TinyLlama, Mistral 7B v0.1–v0.3), built the way current transformers builds
//! them (`integrations/gguf/gguf_tokenizer_mapping.py`: `sentencepiece_tokenizer` hands the
//! vocabulary to `LlamaTokenizer`), so ids match `AutoTokenizer.from_pretrained(dir,
//! gguf_file=..)`:
//!
//! - a BPE model over the file's tokens, ids as listed, with `byte_fallback` (a character
//!   no piece covers becomes its `<0xNN>` byte tokens) and `fuse_unk`;
//! - merges from `tokenizer.ggml.merges` when the file has them, else recovered from the
//!   vocabulary by [`generate_merges`]: every split of a token into two tokens, the token's
//!   score deciding the order (transformers' `generate_merges`, tie-breaks included);
//! - no normalizer; a `Metaspace` pre-tokenizer that turns spaces into `▁` and puts one
//!   `▁` before the text unless it starts with one (`prepend_scheme: first`: not after an
//!   added token), without splitting;
//! - the decoder undoes it: `▁` to space, `<0xNN>` tokens to bytes, fuse, strip one
//!   leading space;
//! - a template post-processor adding BOS (`tokenizer.ggml.add_bos_token`, on when the
//!   file does not say, as in transformers and llama.cpp) and EOS (`add_eos_token`);
//! - control tokens as special added tokens, user-defined ones as plain added tokens, and
//!   the BOS, EOS, unknown and padding tokens as special ones, so none is cut in pieces.
//!
//! Two departures from current transformers, both where llama.cpp and transformers'
//! earlier `GGUFLlamaConverter` agree: `tokenizer.ggml.add_space_prefix = false` turns
//! the leading `▁` off (transformers ignores the key), and the unknown token is the BPE
//! model's `unk_token` (transformers leaves it unset, so a character with neither a piece
//! nor byte tokens would vanish instead of becoming `<unk>`). Neither changes an id for a
//! vocabulary with byte tokens whose file does not set `add_space_prefix = false`.
//!
//! The vocabulary is kept as [`SpmVocab`], so a GGUF export writes tokens, scores and
//! token types back unchanged.

use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde_json::{json, Value};

use super::tokenizer::{GgufTokenizerSpec, Tokenizer};
use super::tokenizer_parts::{merges_from_gguf, AddedEntry, BpeOptions, BpeParts};
use super::TextError;

/// llama.cpp's token types (`tokenizer.ggml.token_type`).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// A SentencePiece-style vocabulary as a GGUF file stores it.
#[derive(Debug, Clone, PartialEq)]
pub struct SpmVocab {
    pub tokens: Vec<String>,
    /// One score per token (higher merges first).
    pub scores: Vec<f32>,
    /// One [`token_type`] per token.
    pub token_types: Vec<i32>,
    /// `tokenizer.ggml.merges` when the file had them (empty: generated from the scores).
    pub merges: Vec<String>,
    pub add_space_prefix: bool,
    pub add_bos: bool,
    pub add_eos: bool,
}

fn error(source: &Path, message: String) -> TextError {
    TextError::Tokenizer {
        path: source.into(),
        message,
    }
}

/// The merges transformers' `generate_merges(vocab, vocab_scores)` recovers from a
/// vocabulary: for every token (in order of first appearance, with its last score), each
/// split into a left and a right part that are both tokens, those of one token ordered by
/// the ids of the parts; then all of them by score, then length in characters of the left
/// and of the right part, highest first, ties kept in that order. A token listed twice
/// keeps its last id, as a Python dict would.
pub fn generate_merges(tokens: &[String], scores: &[f32]) -> Vec<(String, String)> {
    // Fx hashing: a 262K-token vocabulary is looked up about two million times here.
    // Each token's last id and last score.
    let mut last: FxHashMap<&str, (usize, f32)> =
        FxHashMap::with_capacity_and_hasher(tokens.len(), Default::default());
    let mut order: Vec<&str> = Vec::with_capacity(tokens.len());
    for (i, (token, &score)) in tokens.iter().zip(scores).enumerate() {
        if last.insert(token, (i, score)).is_none() {
            order.push(token);
        }
    }
    /// A split of `order[token]` at byte `at` into two tokens.
    struct Merge {
        token: usize,
        at: usize,
        score: f32,
        left_chars: usize,
        right_chars: usize,
    }
    // The splits of one token do not depend on any other's: found in chunks over the
    // thread pool, in order (Gemma 3's 262K tokens give 515K merges).
    let found: Vec<Vec<Merge>> = order
        .par_chunks(4096)
        .enumerate()
        .map(|(c, chunk)| {
            let mut found = Vec::new();
            let mut splits: Vec<((usize, usize), Merge)> = Vec::new();
            for (i, &token) in chunk.iter().enumerate() {
                let score = last.get(token).map_or(0.0, |&(_, s)| s);
                let chars = token.chars().count();
                for (n, (at, _)) in token.char_indices().enumerate().skip(1) {
                    let (left, right) = token.split_at(at);
                    let Some(&(l, _)) = last.get(left) else {
                        continue;
                    };
                    if let Some(&(r, _)) = last.get(right) {
                        let merge = Merge {
                            token: 4096 * c + i,
                            at,
                            score,
                            left_chars: n,
                            right_chars: chars - n,
                        };
                        splits.push(((l, r), merge));
                    }
                }
                splits.sort_by_key(|(ids, _)| *ids);
                found.extend(splits.drain(..).map(|(_, m)| m));
            }
            found
        })
        .collect();
    let mut merges: Vec<Merge> = found.into_iter().flatten().collect();
    // Stable, as Python's sort is.
    merges.par_sort_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(b.left_chars.cmp(&a.left_chars))
            .then(b.right_chars.cmp(&a.right_chars))
    });
    merges
        .into_par_iter()
        .map(|m| {
            let (left, right) = order[m.token].split_at(m.at);
            (left.to_string(), right.to_string())
        })
        .collect()
}

/// The merges of the BPE model: the file's own, else generated from the scores.
fn merges_for(spec: &GgufTokenizerSpec, source: &Path) -> Result<Vec<(String, String)>, TextError> {
    if !spec.merges.is_empty() {
        return merges_from_gguf(&spec.merges, source);
    }
    if spec.scores.len() != spec.tokens.len() {
        let message = if spec.scores.is_empty() {
            "the SentencePiece vocabulary has neither `tokenizer.ggml.merges` nor `tokenizer.ggml.scores` to order its merges by".to_string()
        } else {
            format!(
                "`tokenizer.ggml.scores` has {} entries for {} tokens",
                spec.scores.len(),
                spec.tokens.len()
            )
        };
        return Err(error(source, message));
    }
    Ok(generate_merges(&spec.tokens, &spec.scores))
}

/// The `TemplateProcessing` post-processor transformers' `update_post_processor` sets:
/// BOS before and EOS after each sequence, where asked for.
fn post_processor(bos: Option<(&str, u32)>, eos: Option<(&str, u32)>) -> Value {
    let special = |t: &str, type_id: u32| json!({"SpecialToken": {"id": t, "type_id": type_id}});
    let sequence = |id: &str, type_id: u32| json!({"Sequence": {"id": id, "type_id": type_id}});
    let with_specials = |seq: &str, type_id: u32| {
        let mut parts = Vec::new();
        parts.extend(bos.map(|(t, _)| special(t, type_id)));
        parts.push(sequence(seq, type_id));
        parts.extend(eos.map(|(t, _)| special(t, type_id)));
        parts
    };
    let single = with_specials("A", 0);
    let mut pair = single.clone();
    pair.extend(with_specials("B", 1));
    let mut specials = serde_json::Map::new();
    for (t, id) in bos.into_iter().chain(eos) {
        specials.insert(t.to_string(), json!({"id": t, "ids": [id], "tokens": [t]}));
    }
    json!({"type": "TemplateProcessing", "single": single, "pair": pair, "special_tokens": specials})
}

/// Builds a SentencePiece-style tokenizer from GGUF metadata (see the module comment).
pub fn from_gguf(spec: &GgufTokenizerSpec, source: &Path) -> Result<Tokenizer, TextError> {
    let n = spec.tokens.len();
    let token_types: Vec<i32> = (0..n)
        .map(|i| {
            spec.token_types
                .get(i)
                .copied()
                .unwrap_or(token_type::NORMAL)
        })
        .collect();
    let merges = merges_for(spec, source)?;
    let name =
        |id: Option<u32>| id.and_then(|i| spec.tokens.get(i as usize).map(|t| (t.as_str(), i)));
    let (bos, eos, unk, pad) = (
        name(spec.bos_id),
        name(spec.eos_id),
        name(spec.unk_id),
        name(spec.pad_id),
    );

    let named: Vec<u32> = [bos, eos, unk, pad]
        .iter()
        .flatten()
        .map(|&(_, id)| id)
        .collect();
    let mut added = Vec::new();
    for (id, (token, &ty)) in spec.tokens.iter().zip(&token_types).enumerate() {
        let special = ty == token_type::CONTROL || named.contains(&(id as u32));
        // An empty added token would match between every two characters.
        if !token.is_empty() && (special || ty == token_type::USER_DEFINED) {
            added.push(AddedEntry {
                id: id as u32,
                content: token.clone(),
                special,
            });
        }
    }

    let add_space_prefix = spec.add_space_prefix.unwrap_or(true);
    let mut decoders = vec![
        json!({"type": "Replace", "pattern": {"String": "▁"}, "content": " "}),
        json!({"type": "ByteFallback"}),
        json!({"type": "Fuse"}),
    ];
    if add_space_prefix {
        decoders.push(json!({"type": "Strip", "content": " ", "start": 1, "stop": 0}));
    }
    let mut pipeline = serde_json::Map::new();
    pipeline.insert("normalizer".into(), Value::Null);
    pipeline.insert(
        "pre_tokenizer".into(),
        json!({"type": "Metaspace", "replacement": "▁",
            "prepend_scheme": if add_space_prefix { "first" } else { "never" }, "split": false}),
    );
    pipeline.insert(
        "post_processor".into(),
        post_processor(bos.filter(|_| spec.add_bos), eos.filter(|_| spec.add_eos)),
    );
    pipeline.insert(
        "decoder".into(),
        json!({"type": "Sequence", "decoders": decoders}),
    );
    let parts = BpeParts {
        vocab: spec.tokens.clone(),
        merges,
        options: BpeOptions {
            unk_token: unk.map(|(t, _)| t.to_string()),
            continuing_subword_prefix: None,
            end_of_word_suffix: None,
            fuse_unk: true,
            byte_fallback: true,
        },
        added,
        pipeline,
    };
    let mut tok = Tokenizer::from_bpe_parts(parts, source)?;
    tok.bos_token = bos.map(|(t, _)| t.to_string());
    tok.eos_token = eos.map(|(t, _)| t.to_string());
    tok.pad_token = pad.map(|(t, _)| t.to_string());
    tok.unk_token = unk.map(|(t, _)| t.to_string());
    tok.gguf_pre = spec.pre.clone();
    tok.spm = Some(Arc::new(SpmVocab {
        tokens: spec.tokens.clone(),
        scores: if spec.scores.len() == n {
            spec.scores.clone()
        } else {
            vec![0.0; n]
        },
        token_types,
        merges: spec.merges.clone(),
        add_space_prefix,
        add_bos: spec.add_bos,
        add_eos: spec.add_eos,
    }));
    Ok(tok)
}

/// The SentencePiece-style vocabulary of a `tokenizer.json` that is one (BPE with byte
/// fallback and `▁` for spaces, as Llama 2, TinyLlama and Mistral folders ship it), so that
/// such a model exports to GGUF as `llama` rather than as byte-level BPE, which llama.cpp
/// would split differently. Scores come from the merge ranks (a token made by an earlier
/// merge scores higher, which is the order llama.cpp's SentencePiece merging follows) and
/// the merges are kept too. `None` for any other tokenizer.
pub fn spm_vocab_from_tokenizer_json(json: &Value) -> Option<SpmVocab> {
    let model = json.get("model")?;
    if model.get("type")?.as_str()? != "BPE" || model.get("byte_fallback")?.as_bool() != Some(true)
    {
        return None;
    }
    let pre = json.get("pre_tokenizer").filter(|v| !v.is_null());
    let normalizer = json.get("normalizer").filter(|v| !v.is_null());
    let metaspace = pre.is_some_and(|p| p.to_string().contains("Metaspace"));
    let replaces_spaces = normalizer.is_some_and(|n| n.to_string().contains('▁'));
    if !metaspace && !replaces_spaces {
        return None;
    }
    let vocab = model.get("vocab")?.as_object()?;
    let added: Vec<&Value> = json
        .get("added_tokens")
        .and_then(Value::as_array)
        .map(|a| a.iter().collect())
        .unwrap_or_default();
    let added_id = |t: &Value| t.get("id").and_then(Value::as_u64).map(|i| i as usize);
    let n = vocab
        .values()
        .filter_map(Value::as_u64)
        .map(|i| i as usize)
        .chain(added.iter().filter_map(|t| added_id(t)))
        .max()?
        + 1;
    // Ids far past the number of entries are a broken file, not a vocabulary to allocate.
    if n > 2 * (vocab.len() + added.len()) + 1024 {
        return None;
    }
    let mut tokens = vec![String::new(); n];
    for (t, id) in vocab {
        if let Some(slot) = id.as_u64().and_then(|i| tokens.get_mut(i as usize)) {
            *slot = t.clone();
        }
    }
    let unk = model.get("unk_token").and_then(Value::as_str);
    let mut token_types: Vec<i32> = tokens
        .iter()
        .map(|t| {
            let is_byte = t.len() == 6
                && t.starts_with("<0x")
                && t.ends_with('>')
                && t[3..5].chars().all(|c| c.is_ascii_hexdigit());
            if is_byte {
                token_type::BYTE
            } else if Some(t.as_str()) == unk {
                token_type::UNKNOWN
            } else {
                token_type::NORMAL
            }
        })
        .collect();
    for t in &added {
        let (Some(id), Some(content)) = (added_id(t), t.get("content").and_then(Value::as_str))
        else {
            continue;
        };
        if id < n {
            tokens[id] = content.to_string();
            let special = t.get("special").and_then(Value::as_bool).unwrap_or(false);
            if Some(content) != unk {
                token_types[id] = if special {
                    token_type::CONTROL
                } else {
                    token_type::USER_DEFINED
                };
            }
        }
    }
    let merges: Vec<(String, String)> = model
        .get("merges")
        .and_then(Value::as_array)
        .map(|m| {
            m.iter()
                .filter_map(|m| match m {
                    Value::String(s) => s
                        .split_once(' ')
                        .map(|(l, r)| (l.to_string(), r.to_string())),
                    Value::Array(pair) => match pair.as_slice() {
                        [Value::String(l), Value::String(r)] => Some((l.clone(), r.clone())),
                        _ => None,
                    },
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    let mut scores = vec![0.0f32; n];
    for (rank, (l, r)) in merges.iter().enumerate() {
        let merged = format!("{l}{r}");
        if let Some(id) = vocab.get(&merged).and_then(Value::as_u64) {
            let score = &mut scores[id as usize];
            if *score == 0.0 {
                *score = -(rank as f32) - 1.0;
            }
        }
    }
    let prepend_scheme = pre
        .and_then(|p| p.get("prepend_scheme"))
        .and_then(Value::as_str);
    let add_space_prefix = match prepend_scheme {
        Some(scheme) => scheme != "never",
        None => {
            pre.and_then(|p| p.get("add_prefix_space"))
                .and_then(Value::as_bool)
                .unwrap_or(false)
                || normalizer.is_some_and(|n| n.to_string().contains("Prepend"))
        }
    };
    let single = json
        .pointer("/post_processor/single")
        .and_then(Value::as_array);
    let is_special = |v: Option<&Value>| v.is_some_and(|v| v.get("SpecialToken").is_some());
    Some(SpmVocab {
        tokens,
        scores,
        token_types,
        merges: merges.iter().map(|(l, r)| format!("{l} {r}")).collect(),
        add_space_prefix,
        add_bos: single.is_some_and(|s| is_special(s.first())),
        add_eos: single.is_some_and(|s| s.len() > 1 && is_special(s.last())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testkit::{tiny_spm_spec, TINY_SPM_USER_TOKEN};

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn tiny(edit: impl FnOnce(&mut GgufTokenizerSpec)) -> Tokenizer {
        let mut spec = tiny_spm_spec();
        edit(&mut spec);
        from_gguf(&spec, Path::new("tiny-spm.gguf")).unwrap()
    }

    fn id(t: &Tokenizer, token: &str) -> u32 {
        t.token_to_id(token)
            .unwrap_or_else(|| panic!("{token} in vocab"))
    }

    #[test]
    fn merges_follow_transformers_tie_breaks() {
        // Checked against transformers' `generate_merges` on the same input: equal scores
        // put the longer left part first, then keep the order of appearance.
        let tokens = strings(&["a", "b", "c", "ab", "bc", "abc"]);
        let merges = generate_merges(&tokens, &[0.0, 0.0, 0.0, -1.0, -1.0, -1.0]);
        let want = [("ab", "c"), ("a", "bc"), ("a", "b"), ("b", "c")];
        assert_eq!(
            merges,
            want.map(|(l, r)| (l.to_string(), r.to_string())).to_vec()
        );
        // Higher scores first; splits are at character boundaries.
        let tokens = strings(&["▁", "é", "▁é", "x", "éx", "▁éx"]);
        let merges = generate_merges(&tokens, &[0.0, 0.0, -2.0, 0.0, -1.0, -3.0]);
        let want = [("é", "x"), ("▁", "é"), ("▁é", "x"), ("▁", "éx")];
        assert_eq!(
            merges,
            want.map(|(l, r)| (l.to_string(), r.to_string())).to_vec()
        );
    }

    #[test]
    fn encodes_by_score_with_byte_fallback() {
        let t = tiny(|_| {});
        let ids = |s: &str| t.encode(s, false).unwrap();
        let [hello, world, sp, sp_h] = ["▁hello", "▁world", "▁", "▁h"].map(|s| id(&t, s));
        // ll, he, llo, hello, ▁hello outrank ▁h, so "▁hello" forms whole.
        assert_eq!(ids("hello world"), vec![hello, world]);
        // ▁w outranks ▁▁: the second space stays alone.
        assert_eq!(ids("hello  world"), vec![hello, sp, world]);
        // "t" has no piece: its byte token (3 + 0x74); "ing" merges.
        assert_eq!(ids("thing"), vec![sp, 3 + 0x74, id(&t, "h"), id(&t, "ing")]);
        // "é" is a piece, "中" falls back to its three UTF-8 bytes; with "h" next to "é",
        // nothing outranks ▁h.
        assert_eq!(
            ids("héllo 中"),
            vec![
                sp_h,
                id(&t, "é"),
                id(&t, "llo"),
                sp,
                3 + 0xE4,
                3 + 0xB8,
                3 + 0xAD
            ]
        );
        // A leading space is the prefix `▁` itself (Metaspace adds none then).
        assert_eq!(ids(" hello"), vec![hello]);
    }

    #[test]
    fn decode_round_trips_text_and_fallback_bytes() {
        let t = tiny(|_| {});
        for text in [
            "hello world",
            "héllo 中",
            "thing  ing\n\tworld",
            "日本語 ü 🙂",
            "",
        ] {
            let ids = t.encode(text, false).unwrap();
            assert_eq!(t.decode(&ids, false).unwrap(), text, "{text:?} {ids:?}");
        }
        // Byte tokens alone decode to their bytes.
        assert_eq!(
            t.decode(&[3 + 0xE4, 3 + 0xB8, 3 + 0xAD], false).unwrap(),
            "中"
        );
    }

    #[test]
    fn statistics_count_what_encode_gives() {
        use crate::data::TokenCounter;
        let t = tiny(|_| {});
        for text in ["hello  world", "<s>héllo 中</s>", " thing\n"] {
            assert_eq!(
                t.count(text),
                t.encode(text, false).unwrap().len(),
                "{text:?}"
            );
        }
    }

    #[test]
    fn bos_and_eos_follow_the_flags() {
        let t = tiny(|_| {});
        let hello = id(&t, "▁hello");
        assert_eq!(t.encode("hello", true).unwrap(), vec![1, hello]);
        assert_eq!(t.encode("hello", false).unwrap(), vec![hello]);
        let t = tiny(|s| {
            s.add_bos = false;
            s.add_eos = true;
        });
        assert_eq!(t.encode("hello", true).unwrap(), vec![hello, 2]);
        assert_eq!(t.bos_token.as_deref(), Some("<s>"));
        assert_eq!(t.eos_token.as_deref(), Some("</s>"));
        assert_eq!(t.unk_token.as_deref(), Some("<unk>"));
    }

    #[test]
    fn special_and_user_tokens_stay_whole() {
        let t = tiny(|_| {});
        let [hello_bare, hello, world] = ["hello", "▁hello", "▁world"].map(|s| id(&t, s));
        let user = id(&t, TINY_SPM_USER_TOKEN);
        // No `▁` after an added token (prepend_scheme "first"), unless the text has a space.
        assert_eq!(
            t.encode("<s>hello</s>", false).unwrap(),
            vec![1, hello_bare, 2]
        );
        assert_eq!(t.encode("<s> hello", false).unwrap(), vec![1, hello]);
        let text = format!("{TINY_SPM_USER_TOKEN}hello world");
        assert_eq!(
            t.encode(&text, false).unwrap(),
            vec![user, hello_bare, world]
        );
        assert_eq!(
            t.decode(&[1, hello, 2], false).unwrap(),
            "<s> hello</s>".to_string()
        );
        assert_eq!(t.decode(&[1, hello, 2], true).unwrap(), "hello");
        assert_eq!(
            t.decode(&[user, hello_bare], true).unwrap(),
            format!("{TINY_SPM_USER_TOKEN}hello")
        );
    }

    #[test]
    fn add_space_prefix_false_drops_the_leading_marker() {
        let t = tiny(|s| s.add_space_prefix = Some(false));
        let [hello, world] = ["hello", "▁world"].map(|s| id(&t, s));
        assert_eq!(t.encode("hello world", false).unwrap(), vec![hello, world]);
        assert_eq!(t.decode(&[hello, world], false).unwrap(), "hello world");
        assert!(!t.spm_vocab().unwrap().add_space_prefix);
    }

    #[test]
    fn merges_from_the_file_win_over_scores() {
        // With only `▁ h` as a merge, "hello" cannot form.
        let t = tiny(|s| s.merges = vec!["▁ h".into()]);
        assert_eq!(
            t.encode("he", false).unwrap(),
            vec![id(&t, "▁h"), id(&t, "e")]
        );
    }

    #[test]
    fn missing_or_short_scores_are_errors_naming_the_file() {
        for scores in [vec![], vec![0.0; 3]] {
            let mut spec = tiny_spm_spec();
            spec.scores = scores;
            let e = from_gguf(&spec, Path::new("bad-spm.gguf"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("bad-spm.gguf") && e.contains("tokenizer.ggml.scores"),
                "{e}"
            );
        }
        let mut spec = tiny_spm_spec();
        spec.merges = vec!["nospace".into()];
        let e = from_gguf(&spec, Path::new("bad-spm.gguf"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("merges") && e.contains("nospace"), "{e}");
    }

    #[test]
    fn keeps_the_vocabulary_for_export() {
        let spec = tiny_spm_spec();
        let t = from_gguf(&spec, Path::new("tiny-spm.gguf")).unwrap();
        let v = t.spm_vocab().unwrap();
        assert_eq!(v.tokens, spec.tokens);
        assert_eq!(v.scores, spec.scores);
        assert_eq!(v.token_types, spec.token_types);
        assert!(v.add_bos && !v.add_eos && v.add_space_prefix);
        assert_eq!(t.vocab_size(), spec.tokens.len());
    }
}
