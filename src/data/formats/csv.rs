//! CSV: one record per row. Columns map to fields through the [`Mapping`] (Alpaca columns by
//! default); cells of list-valued columns (`history`, `messages`, `conversations`) hold JSON
//! text. An empty cell is an absent field.

use std::path::Path;

use serde_json::{Map, Value};

use super::{detect_schema, Encoding, Format, Mapping, ReadOutput, Schema};
use crate::data::error::{DataError, Problem, ProblemKind};

fn is_json_column(name: &str, m: Option<&Mapping>) -> bool {
    matches!(name, "history" | "messages" | "conversations")
        || m.is_some_and(|m| name == m.history || name == m.messages)
}

pub(crate) fn read(
    path: &Path,
    schema: Option<Schema>,
    mapping: Option<&Mapping>,
) -> Result<ReadOutput, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let delim = if super::extension(path).as_deref() == Some("tsv") {
        b'\t'
    } else {
        b','
    };
    let mut rdr = ::csv::ReaderBuilder::new()
        .delimiter(delim)
        .flexible(true)
        .from_reader(bytes.as_slice());
    let csv_err = |e: ::csv::Error| DataError::Csv {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    let headers: Vec<String> = rdr
        .byte_headers()
        .map_err(csv_err)?
        .iter()
        .map(|h| {
            String::from_utf8_lossy(h)
                .trim_start_matches('\u{feff}')
                .to_string()
        })
        .collect();
    let mut values = Vec::new();
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    let mut rec = ::csv::ByteRecord::new();
    loop {
        match rdr.read_byte_record(&mut rec) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                return Err(DataError::Csv {
                    path: path.to_path_buf(),
                    message: e.to_string(),
                })
            }
        }
        let line = rec.position().map(|p| p.line() as usize);
        let mut ps = Vec::new();
        let mut o = Map::new();
        if rec.len() != headers.len() {
            ps.push(Problem::new(
                ProblemKind::WrongType,
                None,
                format!("{} cells for {} columns", rec.len(), headers.len()),
            ));
        }
        for (i, cell) in rec.iter().enumerate() {
            let name = headers
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("column{}", i + 1));
            let text = match std::str::from_utf8(cell) {
                Ok(s) => s.to_string(),
                Err(_) => {
                    ps.push(Problem::new(
                        ProblemKind::NotUtf8,
                        Some(name.clone()),
                        "text is not UTF-8; invalid bytes were replaced with U+FFFD",
                    ));
                    String::from_utf8_lossy(cell).into_owned()
                }
            };
            if text.is_empty() {
                continue;
            }
            let v = if is_json_column(&name, mapping) {
                match serde_json::from_str::<Value>(&text) {
                    Ok(v @ (Value::Array(_) | Value::Object(_))) => v,
                    _ => {
                        ps.push(Problem::new(
                            ProblemKind::InvalidJson,
                            Some(name.clone()),
                            "expected JSON text in this column",
                        ));
                        Value::String(text)
                    }
                }
            } else {
                Value::String(text)
            };
            o.insert(name, v);
        }
        values.push(Value::Object(o));
        lines.push(line);
        problems.push(ps);
    }
    let (schema, mapping) = match (schema, mapping) {
        (Some(s), Some(m)) => (s, m.clone()),
        (s, m) => {
            let det = values.first().and_then(detect_schema);
            let s = s.or(det.as_ref().map(|d| d.0)).unwrap_or(Schema::Alpaca);
            let m = m.cloned().unwrap_or_else(|| match det {
                Some((ds, dm)) if ds == s => dm,
                _ => Mapping::default_for(s),
            });
            (s, m)
        }
    };
    let (records, mut ps2) = super::values_to_records(values, schema, &mapping);
    for (a, b) in problems.iter_mut().zip(ps2.iter_mut()) {
        a.append(b);
    }
    Ok(ReadOutput {
        records,
        lines,
        problems,
        format: Format::new(schema, Encoding::Csv),
        mapping,
    })
}

pub(crate) fn write(
    records: &[crate::data::record::Conversation],
    schema: Schema,
    mapping: &Mapping,
    path: &Path,
) -> Result<Vec<u8>, DataError> {
    let values = super::to_values(records, schema, mapping, path)?;
    let mut columns: Vec<String> = Vec::new();
    for v in &values {
        if let Value::Object(o) = v {
            for k in o.keys() {
                if !columns.contains(k) {
                    columns.push(k.clone());
                }
            }
        }
    }
    let mut w = ::csv::Writer::from_writer(Vec::new());
    let csv_err = |e: ::csv::Error| DataError::Csv {
        path: path.to_path_buf(),
        message: e.to_string(),
    };
    w.write_record(&columns).map_err(csv_err)?;
    for v in &values {
        let row: Vec<String> = columns
            .iter()
            .map(|c| match v.get(c) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            })
            .collect();
        w.write_record(&row).map_err(csv_err)?;
    }
    w.into_inner().map_err(|e| DataError::Csv {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}
