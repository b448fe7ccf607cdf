//! JSON and JSON-lines containers. The file is read in one go, split into one byte range
//! per record by a small scanner (strings and nesting only, no parsing), and the records are
//! parsed in parallel. A record that is not valid JSON or not UTF-8 is flagged with its line
//! and kept (as a placeholder holding its raw text), and the records after it still load.

use std::path::Path;

use rayon::prelude::*;
use serde_json::Value;

use super::{detect_schema, from_value, Encoding, Format, Mapping, ReadOutput, Schema};
use crate::data::error::{DataError, Problem, ProblemKind};
use crate::data::record::Conversation;

/// Byte ranges of the records of a top-level JSON array. A truncated file yields the
/// records up to the cut, the last one partial (its parse then fails with a position).
pub(crate) fn split_array(b: &[u8]) -> Result<Vec<(usize, usize)>, String> {
    let mut i = skip_ws(b, 0);
    if b.get(i) != Some(&b'[') {
        return Err("expected `[` at the start of a JSON array".into());
    }
    i += 1;
    let mut spans = Vec::new();
    loop {
        i = skip_ws(b, i);
        match b.get(i) {
            None => return Ok(spans),
            Some(b']') => return Ok(spans),
            _ => {}
        }
        let start = i;
        let mut depth = 0usize;
        loop {
            let Some(&c) = b.get(i) else {
                spans.push((start, b.len()));
                return Ok(spans);
            };
            match c {
                b'"' => {
                    // Jump to the closing quote, skipping escapes.
                    i += 1;
                    loop {
                        match memchr::memchr2(b'"', b'\\', &b[i.min(b.len())..]) {
                            None => {
                                spans.push((start, b.len()));
                                return Ok(spans);
                            }
                            Some(k) => {
                                i += k;
                                if b[i] == b'\\' {
                                    i += 2;
                                } else {
                                    i += 1;
                                    break;
                                }
                            }
                        }
                    }
                    continue;
                }
                b'{' | b'[' => depth += 1,
                b'}' | b']' => {
                    if depth == 0 {
                        // The closing bracket of the array.
                        push_trimmed(b, &mut spans, start, i);
                        return Ok(spans);
                    }
                    depth -= 1;
                }
                b',' if depth == 0 => {
                    push_trimmed(b, &mut spans, start, i);
                    i += 1;
                    break;
                }
                _ => {}
            }
            i += 1;
        }
    }
}

fn push_trimmed(b: &[u8], spans: &mut Vec<(usize, usize)>, start: usize, mut end: usize) {
    while end > start && b[end - 1].is_ascii_whitespace() {
        end -= 1;
    }
    spans.push((start, end));
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && b[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// Byte ranges of the non-blank lines of a JSON-lines file.
fn split_lines(b: &[u8]) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut start = 0;
    for end in memchr::memchr_iter(b'\n', b).chain(std::iter::once(b.len())) {
        let line = &b[start..end.min(b.len())];
        if line.iter().any(|c| !c.is_ascii_whitespace()) {
            spans.push((start, end));
        }
        start = end + 1;
        if start > b.len() {
            break;
        }
    }
    spans
}

/// 1-based line of each span start (spans sorted by start).
fn lines_of(b: &[u8], spans: &[(usize, usize)]) -> Vec<Option<usize>> {
    let mut out = Vec::with_capacity(spans.len());
    let mut line = 1;
    let mut pos = 0;
    for &(s, _) in spans {
        line += memchr::memchr_iter(b'\n', &b[pos..s]).count();
        pos = s;
        out.push(Some(line));
    }
    out
}

/// Parses one record's bytes. Invalid UTF-8 is replaced and reported; invalid JSON yields a
/// placeholder holding the raw text.
fn parse_one(bytes: &[u8], line: usize) -> (Result<Value, Conversation>, Vec<Problem>) {
    let mut problems = Vec::new();
    let owned;
    let text: &[u8] = match std::str::from_utf8(bytes) {
        Ok(_) => bytes,
        Err(e) => {
            let bad_line = line + memchr::memchr_iter(b'\n', &bytes[..e.valid_up_to()]).count();
            let mut p = Problem::new(
                ProblemKind::NotUtf8,
                None,
                format!(
                    "text is not UTF-8 (byte {} of the record); invalid bytes were replaced with U+FFFD",
                    e.valid_up_to()
                ),
            );
            p.line = Some(bad_line);
            problems.push(p);
            owned = String::from_utf8_lossy(bytes).into_owned().into_bytes();
            &owned
        }
    };
    match serde_json::from_slice::<Value>(text) {
        Ok(v) => (Ok(v), problems),
        Err(e) => {
            let mut p = Problem::new(
                ProblemKind::InvalidJson,
                None,
                format!("invalid JSON at column {}: {e}", e.column()),
            );
            p.line = Some(line + e.line().saturating_sub(1));
            problems.push(p);
            let mut c = Conversation::default();
            c.set_hint(
                "raw",
                Value::String(String::from_utf8_lossy(text).into_owned()),
            );
            (Err(c), problems)
        }
    }
}

pub(crate) fn read(
    path: &Path,
    encoding: Encoding,
    schema: Option<Schema>,
    mapping: Option<&Mapping>,
) -> Result<ReadOutput, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(&bytes);
    let first = bytes.iter().copied().find(|c| !c.is_ascii_whitespace());
    let (encoding, spans) = match (encoding, first) {
        (_, None) => (encoding, Vec::new()),
        (Encoding::Json, Some(b'[')) => {
            let spans = split_array(bytes).map_err(|m| DataError::Json {
                path: path.to_path_buf(),
                line: 1,
                column: 1,
                message: m,
            })?;
            (Encoding::Json, spans)
        }
        (Encoding::Json, Some(b'{')) => {
            if super::dataset_info::looks_like_dataset_info(bytes) {
                return Err(DataError::NeedsEntry {
                    path: path.to_path_buf(),
                    entries: super::dataset_info::list_entries(path).unwrap_or_default(),
                });
            }
            (Encoding::JsonLines, split_lines(bytes))
        }
        (Encoding::JsonLines, Some(_)) => (Encoding::JsonLines, split_lines(bytes)),
        (_, Some(c)) => {
            return Err(DataError::Json {
                path: path.to_path_buf(),
                line: 1,
                column: 1,
                message: format!(
                    "expected a JSON array or one JSON object per line, found `{}`",
                    c as char
                ),
            })
        }
    };
    let lines = lines_of(bytes, &spans);

    // The schema comes from the first record that parses, unless the caller fixed it.
    let (schema, mapping) = match (schema, mapping) {
        (Some(s), Some(m)) => (s, m.clone()),
        (Some(s), None) => {
            let detected = first_value(bytes, &spans).and_then(|v| detect_schema(&v));
            match detected {
                Some((ds, m)) if ds == s => (s, m),
                _ => (s, Mapping::default_for(s)),
            }
        }
        (None, m) => {
            match first_value(bytes, &spans).and_then(|v| detect_schema(&v)) {
                Some((s, dm)) => (s, m.cloned().unwrap_or(dm)),
                None if spans.is_empty() => (Schema::Alpaca, m.cloned().unwrap_or_else(|| Mapping::default_for(Schema::Alpaca))),
                None => {
                    return Err(DataError::UnknownFormat {
                        path: path.to_path_buf(),
                        reason: "the first record has none of `instruction`/`output` (Alpaca), `conversations` (ShareGPT) or `messages` (OpenAI)".into(),
                    })
                }
            }
        }
    };

    let (records, problems): (Vec<_>, Vec<_>) = spans
        .par_iter()
        .zip(lines.par_iter())
        .map(|(&(s, e), line)| {
            let (v, mut ps) = parse_one(&bytes[s..e], line.unwrap_or(1));
            let c = match v {
                Ok(v) => from_value(v, schema, &mapping, &mut ps),
                Err(c) => c,
            };
            (c, ps)
        })
        .unzip();
    Ok(ReadOutput {
        records,
        lines,
        problems,
        format: Format::new(schema, encoding),
        mapping,
    })
}

fn first_value(bytes: &[u8], spans: &[(usize, usize)]) -> Option<Value> {
    spans
        .iter()
        .take(100)
        .find_map(|&(s, e)| serde_json::from_slice::<Value>(&bytes[s..e]).ok())
}

pub(crate) fn write(
    records: &[Conversation],
    format: Format,
    mapping: &Mapping,
    path: &Path,
) -> Result<Vec<u8>, DataError> {
    let values = super::to_values(records, format.schema, mapping, path)?;
    let to_err = |e: serde_json::Error| DataError::Other(format!("{}: {e}", path.display()));
    match format.encoding {
        Encoding::JsonLines => {
            let chunks: Vec<Vec<u8>> = values
                .par_iter()
                .map(|v| {
                    let mut b = serde_json::to_vec(v)?;
                    b.push(b'\n');
                    Ok(b)
                })
                .collect::<Result<_, serde_json::Error>>()
                .map_err(to_err)?;
            Ok(chunks.concat())
        }
        _ => {
            let mut out = serde_json::to_vec_pretty(&values).map_err(to_err)?;
            out.push(b'\n');
            Ok(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_arrays_with_tricky_strings() {
        let b = br#" [ {"a": "x,]\"}"}, {"b": [1, {"c": "]"}]} ,{} ] "#;
        let spans = split_array(b).unwrap();
        let parts: Vec<&str> = spans
            .iter()
            .map(|&(s, e)| std::str::from_utf8(&b[s..e]).unwrap())
            .collect();
        assert_eq!(
            parts,
            vec![r#"{"a": "x,]\"}"}"#, r#"{"b": [1, {"c": "]"}]}"#, "{}"]
        );
        assert!(split_array(b"[]").unwrap().is_empty());
        assert_eq!(split_array(br#"[{"a": 1}, {"b": "#).unwrap().len(), 2);
        assert!(split_array(b"{}").is_err());
    }

    #[test]
    fn lines_are_counted() {
        let b = b"{\"a\":1}\n\n{\"b\":2}\n";
        let spans = split_lines(b);
        assert_eq!(spans.len(), 2);
        assert_eq!(lines_of(b, &spans), vec![Some(1), Some(3)]);
    }
}
