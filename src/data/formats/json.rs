//! JSON and JSON-lines containers. The file is read block by block
//! ([`super::json_blocks`]), each block cut into one byte range per record by a small
//! scanner (strings and nesting only, no parsing), and each block's records are parsed in
//! parallel before the next block is read. A record that is not valid JSON or not UTF-8 is
//! flagged with its line and kept (as a placeholder holding its raw text), and the records
//! after it still load.

use std::path::Path;

use rayon::prelude::*;
use serde_json::Value;

use super::json_blocks::{Block, Blocks, Layout};
use super::{detect_schema, from_value, Encoding, Format, Mapping, ReadOutput, Schema};
use crate::data::error::{DataError, Problem, ProblemKind};
use crate::data::record::Conversation;

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
    let io = |e| DataError::io(path, e);
    let file = std::fs::File::open(path).map_err(io)?;
    let mut blocks = Blocks::new(file).map_err(io)?;
    let first = blocks.first_byte().map_err(io)?;
    let (encoding, layout) = match (encoding, first) {
        (_, None) => (encoding, None),
        (Encoding::Json, Some(b'[')) => (Encoding::Json, Some(Layout::Array)),
        (Encoding::Json, Some(b'{')) => {
            if super::dataset_info::file_looks_like_dataset_info(path) {
                return Err(DataError::NeedsEntry {
                    path: path.to_path_buf(),
                    entries: super::dataset_info::list_entries(path).unwrap_or_default(),
                });
            }
            (Encoding::JsonLines, Some(Layout::Lines))
        }
        (Encoding::JsonLines, Some(_)) => (Encoding::JsonLines, Some(Layout::Lines)),
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
    if let Some(layout) = layout {
        blocks.start(layout).map_err(io)?;
    }

    // The schema comes from the first record that parses among the first 100, unless the
    // caller fixed it; the first block holds at least those.
    let first_block = blocks.next_block(100).map_err(io)?;
    let detected = || {
        first_block
            .as_ref()
            .and_then(first_value)
            .and_then(|v| detect_schema(&v))
    };
    let no_records = first_block.as_ref().is_none_or(|b| b.spans.is_empty());
    let (schema, mapping) = match (schema, mapping) {
        (Some(s), Some(m)) => (s, m.clone()),
        (Some(s), None) => match detected() {
            Some((ds, m)) if ds == s => (s, m),
            _ => (s, Mapping::default_for(s)),
        },
        (None, m) => {
            match detected() {
                Some((s, dm)) => (s, m.cloned().unwrap_or(dm)),
                None if no_records => (Schema::Alpaca, m.cloned().unwrap_or_else(|| Mapping::default_for(Schema::Alpaca))),
                None => {
                    return Err(DataError::UnknownFormat {
                        path: path.to_path_buf(),
                        reason: "the first record has none of `instruction`/`output` (Alpaca), `conversations` (ShareGPT) or `messages` (OpenAI)".into(),
                    })
                }
            }
        }
    };

    let mut out = ReadOutput {
        records: Vec::new(),
        lines: Vec::new(),
        problems: Vec::new(),
        format: Format::new(schema, encoding),
        mapping,
    };
    let mut block = first_block;
    while let Some(b) = block {
        parse_block(b, schema, &mut out);
        block = blocks.next_block(1).map_err(io)?;
    }
    out.records.shrink_to_fit();
    out.lines.shrink_to_fit();
    out.problems.shrink_to_fit();
    Ok(out)
}

/// Parses a block's records in parallel and appends them (with their lines and problems).
fn parse_block(block: Block, schema: Schema, out: &mut ReadOutput) {
    let Block {
        bytes,
        spans,
        lines,
    } = block;
    let mapping = &out.mapping;
    let (records, problems): (Vec<_>, Vec<_>) = spans
        .par_iter()
        .zip(lines.par_iter())
        .map(|(&(s, e), line)| {
            let (v, mut ps) = parse_one(&bytes[s..e], line.unwrap_or(1));
            let c = match v {
                Ok(v) => from_value(v, schema, mapping, &mut ps),
                Err(c) => c,
            };
            (c, ps)
        })
        .unzip();
    out.records.extend(records);
    out.problems.extend(problems);
    out.lines.extend(lines);
}

fn first_value(block: &Block) -> Option<Value> {
    block
        .spans
        .iter()
        .take(100)
        .find_map(|&(s, e)| serde_json::from_slice::<Value>(&block.bytes[s..e]).ok())
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
