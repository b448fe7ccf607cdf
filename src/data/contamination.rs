//! Contamination check: word n-gram overlap (13-grams by default, as the GPT-3 report
//! uses) between the training records and another set (an eval split, a suite's prompts,
//! any dataset file).
//!
//! Texts are compared as words: lowercased, punctuation removed, split on whitespace (so
//! `Don't, stop!` is `dont stop`). N-grams never span two turns. The other set's n-grams
//! go into a hash set of 64-bit hashes; each training text's n-grams are looked up in it
//! and a hit is confirmed word by word (a hash collision flags nothing). Consecutive or
//! overlapping matching n-grams against the same other record are reported as one span of
//! the training text as written. A text of the other set shorter than `n` words but at
//! least `min_words` long is matched whole, so a short prompt copied into the training
//! data is found too.

use std::hash::{Hash, Hasher};
use std::ops::Range;

use rustc_hash::{FxHashMap, FxHasher};
use serde::Serialize;

use super::record::Conversation;

/// The settings of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContaminationParams {
    /// Words per n-gram.
    pub n: usize,
    /// Texts of the other set with fewer than `n` words, but at least this many, are
    /// matched whole; `min_words >= n` turns this off.
    pub min_words: usize,
}

impl Default for ContaminationParams {
    fn default() -> Self {
        ContaminationParams {
            n: 13,
            min_words: 8,
        }
    }
}

/// A record of the other set: an id to report and its texts (turns, prompts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub id: String,
    pub texts: Vec<String>,
}

impl Reference {
    /// A dataset record as a reference: its `id` field when it has one, else `#<index>`.
    pub fn from_record(index: usize, conv: &Conversation) -> Reference {
        let id = match conv.meta.get("id") {
            Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
            Some(serde_json::Value::Number(n)) => n.to_string(),
            _ => format!("#{index}"),
        };
        Reference {
            id,
            texts: conv.texts().map(str::to_string).collect(),
        }
    }
}

/// One overlap of a training record with a record of the other set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Overlap {
    /// The overlapping span of the training text, as written.
    pub text: String,
    /// How many words the span has.
    pub words: usize,
    /// The other record's id and its position in the other set.
    pub other_id: String,
    pub other_index: usize,
}

/// A training record with overlaps.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Flagged {
    /// The record's index in the training set.
    pub record: usize,
    pub overlaps: Vec<Overlap>,
}

/// The result of a check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContaminationReport {
    pub n: usize,
    pub records: usize,
    pub references: usize,
    pub flagged: Vec<Flagged>,
}

/// A word of a text: its normalized form and where it is in the text.
struct Word {
    norm: String,
    span: Range<usize>,
}

/// The words of `text`: whitespace-separated tokens, lowercased, with every character that
/// is not a letter or digit removed; tokens left empty are dropped.
fn words(text: &str) -> Vec<Word> {
    let mut out = Vec::new();
    let mut start = None;
    let push = |s: usize, e: usize, out: &mut Vec<Word>| {
        let norm: String = text[s..e]
            .chars()
            .filter(|c| c.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect();
        if !norm.is_empty() {
            out.push(Word { norm, span: s..e });
        }
    };
    for (i, c) in text.char_indices() {
        match (c.is_whitespace(), start) {
            (true, Some(s)) => {
                push(s, i, &mut out);
                start = None;
            }
            (false, None) => start = Some(i),
            _ => {}
        }
    }
    if let Some(s) = start {
        push(s, text.len(), &mut out);
    }
    out
}

fn hash_words(ws: &[Word]) -> u64 {
    let mut h = FxHasher::default();
    for w in ws {
        w.norm.hash(&mut h);
    }
    h.finish()
}

/// Where an indexed n-gram is in the other set.
#[derive(Clone, Copy)]
struct Posting {
    reference: u32,
    text: u32,
    start: u32,
}

/// The other set's n-grams, keyed by (length, hash).
struct Index {
    words: Vec<Vec<Vec<Word>>>,
    postings: FxHashMap<(usize, u64), Posting>,
    /// The n-gram lengths indexed: `n`, and the lengths of short texts matched whole.
    lengths: Vec<usize>,
}

impl Index {
    fn build(references: &[Reference], p: ContaminationParams) -> Index {
        let mut postings = FxHashMap::default();
        let mut lengths = vec![p.n];
        let words: Vec<Vec<Vec<Word>>> = references
            .iter()
            .map(|r| r.texts.iter().map(|t| words(t)).collect())
            .collect();
        for (ri, texts) in words.iter().enumerate() {
            for (ti, ws) in texts.iter().enumerate() {
                let posting = |start: usize| Posting {
                    reference: ri as u32,
                    text: ti as u32,
                    start: start as u32,
                };
                if ws.len() >= p.n {
                    for (start, gram) in ws.windows(p.n).enumerate() {
                        postings
                            .entry((p.n, hash_words(gram)))
                            .or_insert_with(|| posting(start));
                    }
                } else if ws.len() >= p.min_words.max(1) {
                    postings
                        .entry((ws.len(), hash_words(ws)))
                        .or_insert_with(|| posting(0));
                    if !lengths.contains(&ws.len()) {
                        lengths.push(ws.len());
                    }
                }
            }
        }
        Index {
            words,
            postings,
            lengths,
        }
    }

    /// The reference a run of words matches, confirmed word by word.
    fn lookup(&self, gram: &[Word]) -> Option<usize> {
        let p = self.postings.get(&(gram.len(), hash_words(gram)))?;
        let ws = &self.words[p.reference as usize][p.text as usize];
        let start = p.start as usize;
        let same = ws
            .get(start..start + gram.len())
            .is_some_and(|other| other.iter().zip(gram).all(|(a, b)| a.norm == b.norm));
        same.then_some(p.reference as usize)
    }
}

/// Finds the training records of `records` that share an n-gram with `references`.
pub fn check(
    records: &[Conversation],
    references: &[Reference],
    params: ContaminationParams,
) -> ContaminationReport {
    let params = ContaminationParams {
        n: params.n.max(1),
        ..params
    };
    let index = Index::build(references, params);
    let mut flagged = Vec::new();
    for (ri, conv) in records.iter().enumerate() {
        let mut overlaps = Vec::new();
        for text in conv.texts() {
            overlaps.extend(text_overlaps(text, &index, references));
        }
        if !overlaps.is_empty() {
            flagged.push(Flagged {
                record: ri,
                overlaps,
            });
        }
    }
    ContaminationReport {
        n: params.n,
        records: records.len(),
        references: references.len(),
        flagged,
    }
}

/// The overlaps of one training text: matching n-grams merged into spans per reference.
fn text_overlaps(text: &str, index: &Index, references: &[Reference]) -> Vec<Overlap> {
    let ws = words(text);
    // (first word, one past the last word, reference), in order of first word.
    let mut hits: Vec<(usize, usize, usize)> = Vec::new();
    for &len in &index.lengths {
        if ws.len() < len {
            continue;
        }
        for (start, gram) in ws.windows(len).enumerate() {
            if let Some(r) = index.lookup(gram) {
                hits.push((start, start + len, r));
            }
        }
    }
    hits.sort_unstable();
    let mut spans: Vec<(usize, usize, usize)> = Vec::new();
    for (s, e, r) in hits {
        match spans.iter_mut().rev().find(|sp| sp.2 == r) {
            Some(sp) if s <= sp.1 => sp.1 = sp.1.max(e),
            _ => spans.push((s, e, r)),
        }
    }
    spans
        .into_iter()
        .map(|(s, e, r)| Overlap {
            text: text[ws[s].span.start..ws[e - 1].span.end].to_string(),
            words: e - s,
            other_id: references[r].id.clone(),
            other_index: r,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Message, Role};

    fn conv(user: &str, assistant: &str) -> Conversation {
        Conversation {
            messages: vec![
                Message::new(Role::User, user),
                Message::new(Role::Assistant, assistant),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn words_are_lowercased_without_punctuation() {
        let ws = words("  Don't, STOP!  — now");
        let norms: Vec<&str> = ws.iter().map(|w| w.norm.as_str()).collect();
        assert_eq!(norms, ["dont", "stop", "now"]);
        assert_eq!(&"  Don't, STOP!  — now"[ws[1].span.clone()], "STOP!");
    }

    #[test]
    fn finds_a_span_and_reports_it_as_written() {
        let shared =
            "the quick brown fox jumps over the lazy dog while the farmer sleeps under a tree";
        let refs = vec![Reference {
            id: "eval-7".into(),
            texts: vec![format!("Question: {shared}?")],
        }];
        let records = vec![
            conv(
                "Tell me a story.",
                "Once, THE quick brown fox jumps over the lazy dog, while the farmer sleeps under a tree. The end.",
            ),
            conv("Unrelated", "nothing in common with the other text at all, not a single thirteen word run"),
        ];
        let r = check(&records, &refs, ContaminationParams::default());
        assert_eq!(r.flagged.len(), 1);
        let f = &r.flagged[0];
        assert_eq!(f.record, 0);
        assert_eq!(f.overlaps.len(), 1);
        assert_eq!(f.overlaps[0].other_id, "eval-7");
        assert_eq!(
            f.overlaps[0].text,
            "THE quick brown fox jumps over the lazy dog, while the farmer sleeps under a tree."
        );
        assert_eq!(f.overlaps[0].words, 16);
    }

    #[test]
    fn twelve_shared_words_are_not_a_13_gram() {
        let refs = vec![Reference {
            id: "a".into(),
            texts: vec!["one two three four five six seven eight nine ten eleven twelve x".into()],
        }];
        let records = vec![conv(
            "y one two three four five six seven eight nine ten eleven twelve",
            "",
        )];
        let r = check(
            &records,
            &refs,
            ContaminationParams {
                n: 13,
                min_words: 13,
            },
        );
        assert!(r.flagged.is_empty());
        let r = check(
            &records,
            &refs,
            ContaminationParams {
                n: 12,
                min_words: 12,
            },
        );
        assert_eq!(r.flagged.len(), 1);
    }

    #[test]
    fn short_reference_texts_match_whole() {
        let refs = vec![Reference {
            id: "p".into(),
            texts: vec!["What is the capital of France, in one word?".into()],
        }];
        let records = vec![
            conv("what is the capital of france in one word", "Paris"),
            conv("what is the capital of Spain in one word", "Madrid"),
        ];
        let r = check(&records, &refs, ContaminationParams::default());
        assert_eq!(r.flagged.len(), 1);
        assert_eq!(r.flagged[0].record, 0);
        let off = ContaminationParams {
            n: 13,
            min_words: 13,
        };
        assert!(check(&records, &refs, off).flagged.is_empty());
    }
}
