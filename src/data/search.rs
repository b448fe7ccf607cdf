//! Search, filters and sorting over a dataset; everything returns row indices. Search looks
//! at every text of a record: system prompt, turns, tools and the string values of its
//! extra fields.

use rayon::prelude::*;
use serde_json::Value;

use super::dataset::Dataset;
use super::record::{Conversation, HINTS_KEY};
use super::stats::Stats;

/// What to look for.
#[derive(Debug, Clone)]
pub enum Query {
    /// A plain substring (case-sensitive).
    Text(String),
    /// A regular expression (also used for case-insensitive substrings).
    Regex(regex::Regex),
}

impl Query {
    /// A substring query; `case_sensitive = false` compiles to an escaped case-insensitive regex.
    pub fn substring(text: &str, case_sensitive: bool) -> Self {
        if case_sensitive || !text.chars().any(char::is_alphabetic) {
            return Query::Text(text.to_string());
        }
        match regex::RegexBuilder::new(&regex::escape(text))
            .case_insensitive(true)
            .build()
        {
            Ok(r) => Query::Regex(r),
            Err(_) => Query::Text(text.to_string()),
        }
    }

    /// A regular-expression query.
    pub fn regex(pattern: &str, case_sensitive: bool) -> Result<Self, regex::Error> {
        regex::RegexBuilder::new(pattern)
            .case_insensitive(!case_sensitive)
            .build()
            .map(Query::Regex)
    }
}

enum Matcher<'a> {
    Text(Box<memchr::memmem::Finder<'a>>),
    Regex(&'a regex::Regex),
}

impl Matcher<'_> {
    fn is_match(&self, s: &str) -> bool {
        match self {
            Matcher::Text(f) => f.find(s.as_bytes()).is_some(),
            Matcher::Regex(r) => r.is_match(s),
        }
    }
}

fn value_matches(v: &Value, m: &Matcher) -> bool {
    match v {
        Value::String(s) => m.is_match(s),
        Value::Array(a) => a.iter().any(|x| value_matches(x, m)),
        Value::Object(o) => o.values().any(|x| value_matches(x, m)),
        _ => false,
    }
}

fn record_matches(c: &Conversation, m: &Matcher) -> bool {
    c.texts().any(|t| m.is_match(t))
        || c.meta
            .iter()
            .any(|(k, v)| k != HINTS_KEY && (m.is_match(k) || value_matches(v, m)))
}

/// Indices of the records that match, in order.
pub fn search_records(records: &[Conversation], query: &Query) -> Vec<usize> {
    let m = match query {
        Query::Text(t) => Matcher::Text(Box::new(memchr::memmem::Finder::new(t.as_bytes()))),
        Query::Regex(r) => Matcher::Regex(r),
    };
    records
        .par_iter()
        .enumerate()
        .with_min_len(256)
        .filter(|(_, c)| record_matches(c, &m))
        .map(|(i, _)| i)
        .collect()
}

/// Indices of the records of a dataset that match, in order.
pub fn search(ds: &Dataset, query: &Query) -> Vec<usize> {
    search_records(ds.records(), query)
}

/// A filter by flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// Repeats an earlier record exactly.
    Duplicate,
    /// In a near-duplicate group (not the group's first).
    NearDuplicate,
    /// Over the maximum length of the statistics.
    TooLong,
    /// Has an empty turn or system prompt.
    Empty,
    /// Has at least one error (validation).
    Invalid,
}

/// Indices of the records with a flag. `Invalid` uses the dataset's validation; the others
/// use `stats`, which must be of the same records.
pub fn filter(ds: &Dataset, stats: &Stats, flag: Flag) -> Vec<usize> {
    match flag {
        Flag::Duplicate => stats.duplicate_records(),
        Flag::NearDuplicate => stats.near_duplicate_records(),
        Flag::TooLong => stats.over_max.clone(),
        Flag::Empty => stats.empty_records(),
        Flag::Invalid => ds.invalid_records(),
    }
}

/// Which length to sort by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LengthKind {
    Prompt,
    Response,
    Total,
}

/// Record indices sorted by token length (stable: equal lengths keep record order).
pub fn sort_by_length(stats: &Stats, kind: LengthKind, descending: bool) -> Vec<usize> {
    let lens = match kind {
        LengthKind::Prompt => &stats.prompt_tokens,
        LengthKind::Response => &stats.response_tokens,
        LengthKind::Total => &stats.total_tokens,
    };
    let mut idx: Vec<usize> = (0..lens.len()).collect();
    if descending {
        idx.sort_by(|&a, &b| lens[b].cmp(&lens[a]));
    } else {
        idx.sort_by_key(|&i| lens[i]);
    }
    idx
}

/// Keeps only the indices present in both lists (both sorted ascending), e.g. a search within a filter.
pub fn intersect(a: &[usize], b: &[usize]) -> Vec<usize> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}
