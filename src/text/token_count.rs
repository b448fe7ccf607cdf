//! Exact token counts for dataset statistics, without building `tokenizers::Encoding`s.
//!
//! A count needs the pieces the pre-tokenizer cuts and the number of BPE tokens of each
//! piece, nothing else. `tokenizers`' own `encode_fast` spent nine tenths of the statistics
//! of a 5000-record Alpaca file (callgrind) on work a count throws away: 59 % in the
//! pre-tokenizer (the GPT-2 split regex runs in fancy-regex's backtracking VM because of one
//! `\s+(?!\S)` look-ahead, and every piece carries its alignment table through
//! `NormalizedString`), 10 % building an `Encoding` with one `String` per token, and the
//! allocator behind all of it. The crate offers no cheaper public entry point, so this
//! module reproduces the pipeline for the configurations it can reproduce exactly, and the
//! caller falls back to `encode_fast` for every other one (and for any text it cannot
//! handle):
//!
//! - added tokens split out first (aho-corasick, leftmost-longest, as the crate's
//!   `AddedVocabulary` does: tokens that are not `normalized` on the raw text, then the
//!   `normalized` ones on the rest), each one counting as one token;
//! - no normalizer; the pre-tokenizer is `ByteLevel` (with its GPT-2 regex) or a
//!   `Split` regex (isolated, not inverted) followed by `ByteLevel` without a regex, never
//!   with `add_prefix_space`;
//! - the split regex runs in regex-automata's DFA, anchored at each piece start. Its only
//!   look-ahead, a trailing `\s+(?!\S)|\s+`, is applied by hand: a whitespace run followed
//!   by a non-space keeps its last character for the next piece;
//! - each piece's bytes are mapped to the byte-level alphabet and handed to the crate's own
//!   BPE model (`Model::tokenize`), so merges, unknown tokens and byte fallback are the
//!   crate's. The number of tokens per piece is remembered per thread, as the crate's BPE
//!   cache remembers merged words.
//!
//! No post-processor adds tokens when special tokens are not requested, which is how
//! statistics count. `tests/data_token_count.rs` checks the counts against
//! `Tokenizer::encode` on the fixture datasets and on random text.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use aho_corasick::{AhoCorasick, MatchKind};
use regex_automata::{meta, Anchored, Input};
use rustc_hash::FxHashMap;
use serde_json::Value;
use tokenizers::Model;

/// The GPT-2 split regex of `tokenizers`' `ByteLevel` pre-tokenizer (`use_regex: true`).
const GPT2_SPLIT: &str =
    r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

/// The whitespace alternatives every byte-level split regex ends with; the look-ahead is
/// applied by [`whitespace_end`].
const TRAILING_WHITESPACE: &str = r"|\s+(?!\S)|\s+";

/// Pieces up to this many bytes have their token count remembered.
const MAX_CACHED_PIECE: usize = 64;
/// Remembered pieces per thread (about 10 MB at most; a thread keeps them until it counts
/// with another tokenizer, as the crate keeps its own BPE cache).
const CACHE_CAPACITY: usize = 1 << 17;

static NEXT_PLAN_ID: AtomicU64 = AtomicU64::new(1);

/// What the counter needs to know about a tokenizer, built from its `tokenizer.json`.
pub(crate) struct CountPlan {
    id: u64,
    /// Added tokens matched on the raw text (`normalized: false`).
    raw_added: Option<AhoCorasick>,
    /// Added tokens matched on what the raw ones leave (`normalized: true`).
    normalized_added: Option<AhoCorasick>,
    /// The split regex without its trailing whitespace alternatives.
    split: meta::Regex,
    /// Whether the regex ended with `\s+(?!\S)|\s+`.
    trailing_whitespace: bool,
    alphabet: [char; 256],
}

/// Per-thread scratch: the regex cache, the piece counts and a buffer for byte-level text.
struct Scratch {
    plan: u64,
    cache: meta::Cache,
    counts: FxHashMap<Box<str>, u32>,
    word: String,
}

thread_local! {
    static SCRATCH: RefCell<Option<Scratch>> = const { RefCell::new(None) };
}

fn flag(v: &Value, key: &str) -> Option<bool> {
    match v.get(key) {
        None | Some(Value::Null) => None,
        Some(b) => b.as_bool(),
    }
}

/// The split regex of a supported pre-tokenizer, or `None`.
fn split_pattern(pre: &Value) -> Option<String> {
    let byte_level_ok = |b: &Value, regex: bool| {
        b.get("type").and_then(Value::as_str) == Some("ByteLevel")
            && flag(b, "add_prefix_space") == Some(false)
            && flag(b, "use_regex").unwrap_or(true) == regex
    };
    match pre.get("type")?.as_str()? {
        "ByteLevel" if byte_level_ok(pre, true) => Some(GPT2_SPLIT.to_string()),
        "Sequence" => {
            let [split, byte_level] = pre.get("pretokenizers")?.as_array()?.as_slice() else {
                return None;
            };
            let ok = split.get("type")?.as_str()? == "Split"
                && split.get("behavior")?.as_str()? == "Isolated"
                && flag(split, "invert") == Some(false)
                && byte_level_ok(byte_level, false);
            if !ok {
                return None;
            }
            split
                .get("pattern")?
                .get("Regex")?
                .as_str()
                .map(str::to_string)
        }
        _ => None,
    }
}

impl CountPlan {
    /// The plan for a tokenizer, or `None` when its pipeline is not one this module
    /// reproduces exactly.
    pub(crate) fn new(json: &Value, alphabet: [char; 256]) -> Option<Self> {
        let null = |k: &str| json.get(k).is_none_or(Value::is_null);
        if !null("normalizer") || !null("truncation") || !null("padding") {
            return None;
        }
        let model = json.get("model")?;
        if model.get("type")?.as_str()? != "BPE"
            || model.get("dropout").and_then(Value::as_f64).unwrap_or(0.0) != 0.0
        {
            return None;
        }
        if let Some(pp) = json.get("post_processor").filter(|p| !p.is_null()) {
            // These add tokens only when special tokens are requested.
            let known = [
                "ByteLevel",
                "TemplateProcessing",
                "RobertaProcessing",
                "BertProcessing",
            ];
            let all_known = match pp.get("type")?.as_str()? {
                "Sequence" => pp.get("processors")?.as_array()?.iter().all(|p| {
                    p.get("type")
                        .and_then(Value::as_str)
                        .is_some_and(|t| known.contains(&t))
                }),
                t => known.contains(&t),
            };
            if !all_known {
                return None;
            }
        }

        let pattern = split_pattern(json.get("pre_tokenizer")?)?;
        let (head, trailing_whitespace) = match pattern.strip_suffix(TRAILING_WHITESPACE) {
            Some(h) => (h, true),
            None => (pattern.as_str(), false),
        };
        // Look-around and atomic groups are fancy-regex only; anything else regex-automata
        // rejects fails the build below.
        if ["(?=", "(?!", "(?<", "(?>"]
            .iter()
            .any(|f| head.contains(f))
        {
            return None;
        }
        let split = meta::Regex::new(head).ok()?;

        let (mut raw, mut normalized) = (Vec::new(), Vec::new());
        for t in json.get("added_tokens")?.as_array()? {
            let content = t.get("content")?.as_str()?;
            let plain = ["single_word", "lstrip", "rstrip"]
                .iter()
                .all(|k| flag(t, k) != Some(true));
            if !plain || content.is_empty() {
                return None;
            }
            if flag(t, "normalized") == Some(true) {
                normalized.push(content.to_string());
            } else {
                raw.push(content.to_string());
            }
        }
        let automaton = |tokens: Vec<String>| -> Option<Option<AhoCorasick>> {
            if tokens.is_empty() {
                return Some(None);
            }
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(tokens)
                .ok()
                .map(Some)
        };
        Some(CountPlan {
            id: NEXT_PLAN_ID.fetch_add(1, Ordering::Relaxed),
            raw_added: automaton(raw)?,
            normalized_added: automaton(normalized)?,
            split,
            trailing_whitespace,
            alphabet,
        })
    }

    /// The number of tokens of `text` (no special tokens added), or `None` where the text
    /// needs the crate's own path.
    pub(crate) fn count(&self, text: &str, model: &impl Model) -> Option<usize> {
        SCRATCH.with(|cell| {
            let mut slot = cell.borrow_mut();
            let scratch = match slot.as_mut() {
                Some(s) if s.plan == self.id => s,
                _ => slot.insert(Scratch {
                    plan: self.id,
                    cache: self.split.create_cache(),
                    counts: FxHashMap::default(),
                    word: String::new(),
                }),
            };
            let mut n = 0;
            for_each_segment(self.raw_added.as_ref(), text, &mut |seg, added| {
                if added {
                    n += 1;
                    return Some(());
                }
                for_each_segment(self.normalized_added.as_ref(), seg, &mut |seg, added| {
                    n += if added {
                        1
                    } else {
                        self.count_segment(seg, scratch, model)?
                    };
                    Some(())
                })
            })?;
            Some(n)
        })
    }

    /// Tokens of a text without added tokens: split into pieces, then BPE per piece.
    fn count_segment(&self, seg: &str, s: &mut Scratch, model: &impl Model) -> Option<usize> {
        let mut n = 0;
        let Scratch {
            cache,
            counts,
            word,
            ..
        } = s;
        self.split_pieces(seg, cache, |piece| {
            n += self.count_piece(piece, counts, word, model)?;
            Some(())
        })?;
        Some(n)
    }

    /// Calls `f` on each piece the pre-tokenizer cuts `seg` into, in order.
    fn split_pieces<'t>(
        &self,
        seg: &'t str,
        cache: &mut meta::Cache,
        mut f: impl FnMut(&'t str) -> Option<()>,
    ) -> Option<()> {
        let mut pos = 0;
        while pos < seg.len() {
            let input = Input::new(seg).range(pos..).anchored(Anchored::Yes);
            let end = match self.split.search_half_with(cache, &input) {
                Some(m) if m.offset() > pos => m.offset(),
                // An empty match: the crate's iterator semantics are not reproduced.
                Some(_) => return None,
                None if self.trailing_whitespace => whitespace_end(seg, pos)?,
                // Text the regex does not match would be its own piece; leave it to the crate.
                None => return None,
            };
            f(&seg[pos..end])?;
            pos = end;
        }
        Some(())
    }

    /// BPE tokens of one pre-tokenized piece, remembered per thread.
    fn count_piece(
        &self,
        piece: &str,
        counts: &mut FxHashMap<Box<str>, u32>,
        word: &mut String,
        model: &impl Model,
    ) -> Option<usize> {
        if let Some(&n) = counts.get(piece) {
            return Some(n as usize);
        }
        word.clear();
        word.extend(piece.bytes().map(|b| self.alphabet[usize::from(b)]));
        let n = model.tokenize(word).ok()?.len();
        if piece.len() <= MAX_CACHED_PIECE && counts.len() < CACHE_CAPACITY {
            counts.insert(piece.into(), u32::try_from(n).ok()?);
        }
        Some(n)
    }
}

/// Calls `f` on the pieces of `text` between added tokens (`false`) and on each added token
/// (`true`); empty pieces are skipped, as the crate drops them.
fn for_each_segment<'t>(
    added: Option<&AhoCorasick>,
    text: &'t str,
    f: &mut dyn FnMut(&'t str, bool) -> Option<()>,
) -> Option<()> {
    let Some(ac) = added else {
        return if text.is_empty() {
            Some(())
        } else {
            f(text, false)
        };
    };
    let mut last = 0;
    for m in ac.find_iter(text) {
        if m.start() > last {
            f(&text[last..m.start()], false)?;
        }
        f(&text[m.start()..m.end()], true)?;
        last = m.end();
    }
    if last < text.len() {
        f(&text[last..], false)?;
    }
    Some(())
}

/// Where `\s+(?!\S)|\s+` ends a match starting at `pos`: the whole whitespace run at the
/// end of the text, all but its last character when a non-space follows (that character
/// then starts the next piece), a single character otherwise. `None` when no whitespace
/// starts at `pos`. `char::is_whitespace` and the regex's `\s` are both Unicode `White_Space`.
fn whitespace_end(text: &str, pos: usize) -> Option<usize> {
    let mut run = 0usize;
    let mut last_start = pos;
    let mut end = pos;
    for (i, c) in text[pos..].char_indices() {
        if !c.is_whitespace() {
            break;
        }
        run += 1;
        last_start = pos + i;
        end = pos + i + c.len_utf8();
    }
    match run {
        0 => None,
        _ if end == text.len() || run == 1 => Some(end),
        _ => Some(last_start),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whitespace_runs_keep_their_last_space_for_the_next_piece() {
        assert_eq!(whitespace_end("   x", 0), Some(2));
        assert_eq!(whitespace_end("\nx", 0), Some(1));
        assert_eq!(whitespace_end("a  ", 1), Some(3));
        assert_eq!(whitespace_end("ab", 0), None);
        assert_eq!(whitespace_end(" \u{3000}é", 0), Some(1));
    }

    #[test]
    fn rust_whitespace_is_the_regex_class() {
        let re = regex::Regex::new(r"^\s$").unwrap();
        let mut buf = [0u8; 4];
        for c in (0..=0x10_FFFFu32).filter_map(char::from_u32) {
            assert_eq!(
                c.is_whitespace(),
                re.is_match(c.encode_utf8(&mut buf)),
                "{c:?}"
            );
        }
    }

    /// Random text from fragments that sit on the split regexes' edges: every letter and
    /// number category, marks, Unicode spaces, contractions, CR/LF runs, emoji.
    fn tricky_text(rng: &mut impl rand::Rng) -> String {
        const FRAGMENTS: &[&str] = &[
            "a", "Z", "é", "中", "ß", "ǅ", "ʰ", "1", "42", "1234", "٣", "Ⅷ", "½", " ", "  ", "   ",
            "\n", "\r\n", "\n\n", "\t", "\u{a0}", "\u{3000}", "\u{2028}", "\u{85}", "'", "'s",
            "'S", "'ll", "'re", "'ve", "'m", "'d", "'t", "!", "...", "\u{301}", "😀", "-", "_",
            "\"", "(#", ")", "/", "word", "Word", "WORD", "wOrD", " the", "\u{200b}",
        ];
        let n = rng.random_range(0..24);
        (0..n)
            .map(|_| FRAGMENTS[rng.random_range(0..FRAGMENTS.len())])
            .collect()
    }

    #[test]
    fn pieces_match_the_crate_pre_tokenizers() {
        use rand::SeedableRng;
        use tokenizers::tokenizer::{OffsetReferential, OffsetType, PreTokenizedString};
        use tokenizers::{PreTokenizer, PreTokenizerWrapper};

        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for pre in ["default", "llama-bpe", "qwen2", "gpt-4o", "tekken"] {
            let pre_json = crate::text::tokenizer::pre_tokenizer_for(pre);
            let json = serde_json::json!({
                "normalizer": null, "added_tokens": [], "pre_tokenizer": pre_json,
                "model": {"type": "BPE", "dropout": null},
            });
            let plan = CountPlan::new(&json, ['a'; 256]).expect("plan");
            let crate_pre: PreTokenizerWrapper = serde_json::from_value(pre_json).unwrap();
            let mut cache = plan.split.create_cache();
            for _ in 0..3000 {
                let text = tricky_text(&mut rng);
                let mut pts = PreTokenizedString::from(text.as_str());
                crate_pre.pre_tokenize(&mut pts).unwrap();
                let want: Vec<(usize, usize)> = pts
                    .get_splits(OffsetReferential::Original, OffsetType::Byte)
                    .into_iter()
                    .map(|(_, o, _)| o)
                    .collect();
                let mut got = Vec::new();
                let base = text.as_ptr() as usize;
                plan.split_pieces(&text, &mut cache, |p| {
                    let start = p.as_ptr() as usize - base;
                    got.push((start, start + p.len()));
                    Some(())
                })
                .expect("split");
                assert_eq!(got, want, "{pre}: {text:?}");
            }
        }
    }

    #[test]
    fn unsupported_pipelines_have_no_plan() {
        let alphabet = ['a'; 256];
        let base = serde_json::json!({
            "normalizer": null, "added_tokens": [],
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "use_regex": true},
            "model": {"type": "BPE", "dropout": null},
        });
        assert!(CountPlan::new(&base, alphabet).is_some());
        let mut prefix = base.clone();
        prefix["pre_tokenizer"]["add_prefix_space"] = true.into();
        assert!(CountPlan::new(&prefix, alphabet).is_none());
        let mut norm = base.clone();
        norm["normalizer"] = serde_json::json!({"type": "NFC"});
        assert!(CountPlan::new(&norm, alphabet).is_none());
        let mut lstrip = base;
        lstrip["added_tokens"] = serde_json::json!([{"content": "<s>", "lstrip": true}]);
        assert!(CountPlan::new(&lstrip, alphabet).is_none());
    }
}
