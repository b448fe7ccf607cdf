//! Dataset statistics for the GUI's plots and `dataset stats`: token lengths per sample
//! (prompt, response, total) with histograms, samples over the maximum length, role and
//! turn counts, empty fields, exact and near duplicates, and diversity figures. Token counts
//! come from a [`TokenCounter`], so this module never depends on the model.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};

use rayon::prelude::*;
use serde::Serialize;

use super::dataset::Dataset;
use super::dedup::{self, MinHashParams};
use super::record::{Conversation, Role};

/// Counts tokens of a text. The model module implements it for real tokenizers.
pub trait TokenCounter: Sync {
    fn count(&self, text: &str) -> usize;
    /// A short name for reports (e.g. the tokenizer's model).
    fn name(&self) -> String {
        "custom".into()
    }
}

/// Fallback: one token per whitespace-separated word.
#[derive(Debug, Clone, Copy, Default)]
pub struct WhitespaceCounter;

impl TokenCounter for WhitespaceCounter {
    fn count(&self, text: &str) -> usize {
        text.split_whitespace().count()
    }
    fn name(&self) -> String {
        "whitespace words".into()
    }
}

/// Fallback: one token per `bytes_per_token` bytes of UTF-8 (4 is close to BPE tokenizers on English).
#[derive(Debug, Clone, Copy)]
pub struct ByteCounter {
    pub bytes_per_token: usize,
}

impl Default for ByteCounter {
    fn default() -> Self {
        ByteCounter { bytes_per_token: 4 }
    }
}

impl TokenCounter for ByteCounter {
    fn count(&self, text: &str) -> usize {
        text.len().div_ceil(self.bytes_per_token.max(1))
    }
    fn name(&self) -> String {
        format!("approximate (1 token per {} bytes)", self.bytes_per_token)
    }
}

/// What to compute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StatsOptions {
    /// Samples with more total tokens than this are "too long".
    pub max_len: usize,
    pub histogram_bins: usize,
    /// Near-duplicate search (`None` skips it).
    pub near_duplicates: Option<MinHashParams>,
}

impl Default for StatsOptions {
    fn default() -> Self {
        StatsOptions {
            max_len: 2048,
            histogram_bins: 40,
            near_duplicates: Some(MinHashParams::default()),
        }
    }
}

/// Equal-width bins: `counts[i]` samples fall in `[edges[i], edges[i+1])` (the last bin is closed).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    pub edges: Vec<usize>,
    pub counts: Vec<usize>,
}

impl Histogram {
    pub fn of(values: &[u32], bins: usize) -> Self {
        let max = values.iter().copied().max().unwrap_or(0) as usize;
        let bins = bins.max(1);
        let width = (max / bins + 1).max(1);
        let mut counts = vec![0; bins];
        for &v in values {
            counts[(v as usize / width).min(bins - 1)] += 1;
        }
        Histogram {
            edges: (0..=bins).map(|i| i * width).collect(),
            counts,
        }
    }
}

/// Summary figures of a length distribution.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Default)]
pub struct Summary {
    pub min: u32,
    pub max: u32,
    pub mean: f64,
    pub p50: u32,
    pub p90: u32,
    pub p99: u32,
    pub sum: u64,
}

impl Summary {
    pub fn of(values: &[u32]) -> Self {
        if values.is_empty() {
            return Summary::default();
        }
        let mut v = values.to_vec();
        v.sort_unstable();
        let q = |p: f64| v[((v.len() - 1) as f64 * p).round() as usize];
        let sum: u64 = v.iter().map(|&x| u64::from(x)).sum();
        Summary {
            min: v[0],
            max: v[v.len() - 1],
            mean: sum as f64 / v.len() as f64,
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            sum,
        }
    }
}

/// An empty turn or system prompt.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EmptyField {
    pub record: usize,
    /// `system`, or `turn N (role)`.
    pub field: String,
}

/// Diversity figures of the prompts.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct Diversity {
    /// Distinct leading (verb, object) pairs of the first user turn, approximated by the
    /// first word and the next word that is not a function word (the survey's measure).
    pub distinct_leading_pairs: usize,
    /// The most frequent leading pairs with their counts.
    pub top_leading_pairs: Vec<(String, usize)>,
    /// Distinct words / words, over the user turns.
    pub distinct_1: f64,
    /// Distinct word bigrams / bigrams, over the user turns.
    pub distinct_2: f64,
}

/// The statistics of a dataset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    pub records: usize,
    pub counter: String,
    pub max_len: usize,
    /// Tokens of the system prompt and the prompt-side turns, per record.
    #[serde(skip)]
    pub prompt_tokens: Vec<u32>,
    /// Tokens of the trained turns (assistant, tool calls), per record.
    #[serde(skip)]
    pub response_tokens: Vec<u32>,
    /// Prompt + response, per record (chat-template tokens not included).
    #[serde(skip)]
    pub total_tokens: Vec<u32>,
    pub prompt: Summary,
    pub response: Summary,
    pub total: Summary,
    pub prompt_histogram: Histogram,
    pub response_histogram: Histogram,
    pub total_histogram: Histogram,
    /// Records whose total exceeds `max_len`.
    pub over_max: Vec<usize>,
    /// Turns per role (`label()` names; the system prompt counts as `system`).
    pub role_counts: BTreeMap<String, usize>,
    /// Number of records with each turn count.
    pub turn_counts: BTreeMap<usize, usize>,
    pub empty_fields: Vec<EmptyField>,
    /// Groups of identical records (same system, roles and texts).
    pub exact_duplicates: Vec<Vec<usize>>,
    /// Groups of near-identical records (MinHash/LSH), exact duplicates included.
    pub near_duplicates: Vec<Vec<usize>>,
    pub diversity: Diversity,
    /// Records with a reasoning block (`<think>…</think>`) in a trained turn.
    pub records_with_reasoning: usize,
}

impl Stats {
    /// Records that repeat an earlier one exactly (every member of a group but the first).
    pub fn duplicate_records(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .exact_duplicates
            .iter()
            .flat_map(|g| g.iter().skip(1).copied())
            .collect();
        v.sort_unstable();
        v
    }
    /// Records in a near-duplicate group, except the first of each group.
    pub fn near_duplicate_records(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self
            .near_duplicates
            .iter()
            .flat_map(|g| g.iter().skip(1).copied())
            .collect();
        v.sort_unstable();
        v
    }
    /// Records with an empty turn or system prompt.
    pub fn empty_records(&self) -> Vec<usize> {
        let mut v: Vec<usize> = self.empty_fields.iter().map(|e| e.record).collect();
        v.dedup();
        v
    }
}

/// Statistics with default options and the given maximum length.
pub fn compute(ds: &Dataset, counter: &dyn TokenCounter, max_len: usize) -> Stats {
    compute_with(
        ds,
        counter,
        &StatsOptions {
            max_len,
            ..Default::default()
        },
    )
}

struct PerRecord {
    prompt: u32,
    response: u32,
    hash: u64,
    leading: Option<String>,
}

const FUNCTION_WORDS: &[&str] = &[
    "a",
    "an",
    "the",
    "me",
    "us",
    "you",
    "him",
    "her",
    "them",
    "it",
    "this",
    "that",
    "these",
    "those",
    "some",
    "any",
    "of",
    "to",
    "for",
    "in",
    "on",
    "with",
    "my",
    "your",
    "our",
    "their",
    "its",
    "and",
    "or",
    "is",
    "are",
    "be",
    "up",
    "out",
    "down",
    "about",
    "all",
    "one",
    "two",
    "three",
    "five",
    "ten",
    "please",
    "following",
    "given",
];

fn leading_pair(text: &str) -> Option<String> {
    let mut words = text
        .split(|c: char| !c.is_alphabetic())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase);
    let first = words.next()?;
    let second = words
        .take(6)
        .find(|w| !FUNCTION_WORDS.contains(&w.as_str()))
        .unwrap_or_default();
    Some(format!("{first} {second}").trim().to_string())
}

fn record_hash(c: &Conversation) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    c.system.hash(&mut h);
    for m in &c.messages {
        m.role.hash(&mut h);
        m.content.hash(&mut h);
    }
    h.finish()
}

/// Statistics of a dataset, computed in parallel.
pub fn compute_with(ds: &Dataset, counter: &dyn TokenCounter, opts: &StatsOptions) -> Stats {
    let records = ds.records();
    let per: Vec<PerRecord> = records
        .par_iter()
        .map(|c| {
            let mut prompt = c.system.as_deref().map_or(0, |s| counter.count(s));
            let mut response = 0;
            for m in &c.messages {
                let n = counter.count(&m.content);
                if m.role.is_trained() {
                    response += n;
                } else {
                    prompt += n;
                }
            }
            PerRecord {
                prompt: prompt.min(u32::MAX as usize) as u32,
                response: response.min(u32::MAX as usize) as u32,
                hash: record_hash(c),
                leading: c
                    .messages
                    .iter()
                    .find(|m| m.role == Role::User)
                    .and_then(|m| leading_pair(&m.content)),
            }
        })
        .collect();
    let prompt_tokens: Vec<u32> = per.iter().map(|p| p.prompt).collect();
    let response_tokens: Vec<u32> = per.iter().map(|p| p.response).collect();
    let total_tokens: Vec<u32> = per
        .iter()
        .map(|p| p.prompt.saturating_add(p.response))
        .collect();
    let over_max = total_tokens
        .iter()
        .enumerate()
        .filter(|(_, &t)| t as usize > opts.max_len)
        .map(|(i, _)| i)
        .collect();

    let mut role_counts = BTreeMap::new();
    let mut turn_counts = BTreeMap::new();
    let mut empty_fields = Vec::new();
    for (i, c) in records.iter().enumerate() {
        if let Some(s) = &c.system {
            *role_counts.entry("system".to_string()).or_insert(0) += 1;
            if s.trim().is_empty() {
                empty_fields.push(EmptyField {
                    record: i,
                    field: "system".into(),
                });
            }
        }
        *turn_counts.entry(c.messages.len()).or_insert(0) += 1;
        for (t, m) in c.messages.iter().enumerate() {
            *role_counts.entry(m.role.label().to_string()).or_insert(0) += 1;
            if m.content.trim().is_empty() {
                empty_fields.push(EmptyField {
                    record: i,
                    field: format!("turn {t} ({})", m.role),
                });
            }
        }
    }

    // Exact duplicates: same hash, confirmed by comparing the records.
    let mut by_hash: HashMap<u64, Vec<usize>> = HashMap::new();
    for (i, p) in per.iter().enumerate() {
        by_hash.entry(p.hash).or_default().push(i);
    }
    let mut exact_duplicates: Vec<Vec<usize>> = Vec::new();
    for idx in by_hash.into_values().filter(|g| g.len() > 1) {
        let mut rest = idx;
        while let Some(first) = rest.first().copied() {
            let (same, other): (Vec<usize>, Vec<usize>) = rest.into_iter().partition(|&j| {
                let (a, b) = (&records[first], &records[j]);
                a.system == b.system && a.messages == b.messages
            });
            if same.len() > 1 {
                exact_duplicates.push(same);
            }
            rest = other;
        }
    }
    exact_duplicates.sort_unstable_by_key(|g| g[0]);

    let near_duplicates = match &opts.near_duplicates {
        Some(params) => {
            let signer = dedup::Signer::new(params);
            let sigs: Vec<Vec<u64>> = records
                .par_iter()
                .map_with(Vec::new(), |words, c| {
                    let mut sig = signer.empty();
                    for t in c.texts() {
                        signer.add_text(&mut sig, t, params.shingle, words);
                    }
                    sig
                })
                .collect();
            dedup::groups_from_signatures(&sigs, params)
        }
        None => Vec::new(),
    };

    Stats {
        records: records.len(),
        counter: counter.name(),
        max_len: opts.max_len,
        prompt: Summary::of(&prompt_tokens),
        response: Summary::of(&response_tokens),
        total: Summary::of(&total_tokens),
        prompt_histogram: Histogram::of(&prompt_tokens, opts.histogram_bins),
        response_histogram: Histogram::of(&response_tokens, opts.histogram_bins),
        total_histogram: Histogram::of(&total_tokens, opts.histogram_bins),
        prompt_tokens,
        response_tokens,
        total_tokens,
        over_max,
        role_counts,
        turn_counts,
        empty_fields,
        exact_duplicates,
        near_duplicates,
        diversity: diversity(records, &per),
        records_with_reasoning: super::reasoning::count_records_with_reasoning(records),
    }
}

fn diversity(records: &[Conversation], per: &[PerRecord]) -> Diversity {
    let mut pairs: HashMap<&str, usize> = HashMap::new();
    for p in per {
        if let Some(l) = &p.leading {
            *pairs.entry(l.as_str()).or_insert(0) += 1;
        }
    }
    let mut top: Vec<(String, usize)> = pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect();
    top.sort_unstable_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top.truncate(20);

    // Word and bigram hashes per record in parallel, then one pass into sets.
    let per_words: Vec<Vec<u64>> = records
        .par_iter()
        .map(|c| {
            let mut v = Vec::new();
            for m in c.messages.iter().filter(|m| m.role == Role::User) {
                v.extend(
                    m.content
                        .split(|ch: char| !ch.is_alphanumeric())
                        .filter(|w| !w.is_empty())
                        .map(|w| {
                            let mut h = std::collections::hash_map::DefaultHasher::new();
                            w.to_lowercase().hash(&mut h);
                            h.finish()
                        }),
                );
            }
            v
        })
        .collect();
    let (mut uni, mut bi) = (HashSet::new(), HashSet::new());
    let (mut n1, mut n2) = (0usize, 0usize);
    for ws in &per_words {
        n1 += ws.len();
        uni.extend(ws.iter().copied());
        for w in ws.windows(2) {
            n2 += 1;
            bi.insert(w[0].rotate_left(17) ^ w[1]);
        }
    }
    let ratio = |d: usize, n: usize| if n == 0 { 0.0 } else { d as f64 / n as f64 };
    Diversity {
        distinct_leading_pairs: pairs.len(),
        top_leading_pairs: top,
        distinct_1: ratio(uni.len(), n1),
        distinct_2: ratio(bi.len(), n2),
    }
}
