//! LLaMA-Factory's `dataset_info.json`: list its entries, and load one by resolving its
//! `file_name` (relative to the JSON's folder) with its `formatting`, `columns` and `tags`.
//! Keys LLaMA-Factory would not read (e.g. `format` for `formatting`) are reported as
//! warnings instead of being ignored silently.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use super::{Mapping, ReadOutput, Schema};
use crate::data::error::{DataError, Problem, ProblemKind};

const ENTRY_KEYS: &[&str] = &[
    "hf_hub_url",
    "ms_hub_url",
    "om_hub_url",
    "script_url",
    "cloud_file_name",
    "file_name",
    "file_sha1",
    "formatting",
    "ranking",
    "subset",
    "split",
    "folder",
    "num_samples",
    "columns",
    "tags",
];
const COLUMN_KEYS: &[&str] = &[
    "prompt", "query", "response", "history", "messages", "system", "tools", "images", "videos",
    "audios", "chosen", "rejected", "kto_tag",
];
const TAG_KEYS: &[&str] = &[
    "role_tag",
    "content_tag",
    "user_tag",
    "assistant_tag",
    "observation_tag",
    "function_tag",
    "system_tag",
];
const SOURCE_KEYS: &[&str] = &[
    "file_name",
    "hf_hub_url",
    "ms_hub_url",
    "om_hub_url",
    "script_url",
    "cloud_file_name",
];

/// One entry of a dataset_info.json.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DatasetInfoEntry {
    pub name: String,
    /// The local file, resolved against the JSON's folder (None for hub-only entries).
    pub file: Option<PathBuf>,
    /// Whether that file exists.
    pub exists: bool,
    /// `alpaca` or `sharegpt` (LLaMA-Factory's default is alpaca).
    pub formatting: String,
    /// Hub id when the entry names one.
    pub hub: Option<String>,
    pub ranking: bool,
}

/// Whether a file that starts with `{` is one JSON object whose entries all name a source
/// (rather than JSON lines). Reads only the first value and what follows it.
pub(crate) fn file_looks_like_dataset_info(path: &Path) -> bool {
    use std::io::BufRead;
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    let mut reader = std::io::BufReader::new(file);
    if reader
        .fill_buf()
        .is_ok_and(|b| b.starts_with(b"\xEF\xBB\xBF"))
    {
        reader.consume(3);
    }
    let mut values = serde_json::Deserializer::from_reader(reader).into_iter::<Value>();
    match (values.next(), values.next()) {
        (Some(Ok(Value::Object(o))), None) => looks_like_dataset_info(&o),
        _ => false,
    }
}

/// Whether an object looks like a dataset_info.json: its values are objects naming a source.
fn looks_like_dataset_info(o: &Map<String, Value>) -> bool {
    !o.is_empty()
        && o.values().all(|v| {
            v.as_object()
                .is_some_and(|e| SOURCE_KEYS.iter().any(|k| e.contains_key(*k)))
        })
}

fn read_info(path: &Path) -> Result<Map<String, Value>, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(o)) => Ok(o),
        Ok(_) => Err(DataError::UnknownFormat {
            path: path.to_path_buf(),
            reason: "a dataset_info.json must be a JSON object".into(),
        }),
        Err(e) => Err(DataError::Json {
            path: path.to_path_buf(),
            line: e.line(),
            column: e.column(),
            message: e.to_string(),
        }),
    }
}

/// Every entry of a dataset_info.json, in file order.
pub fn entries(path: &Path) -> Result<Vec<DatasetInfoEntry>, DataError> {
    let info = read_info(path)?;
    let dir = path.parent().unwrap_or(Path::new("."));
    Ok(info
        .iter()
        .map(|(name, v)| {
            let e = v.as_object();
            let get = |k: &str| e.and_then(|e| e.get(k)).and_then(Value::as_str);
            let file = get("file_name").map(|f| dir.join(f));
            DatasetInfoEntry {
                name: name.clone(),
                exists: file.as_ref().is_some_and(|f| f.exists()),
                file,
                formatting: get("formatting").unwrap_or("alpaca").to_string(),
                hub: get("hf_hub_url")
                    .or_else(|| get("ms_hub_url"))
                    .or_else(|| get("om_hub_url"))
                    .map(str::to_string),
                ranking: e
                    .and_then(|e| e.get("ranking"))
                    .and_then(Value::as_bool)
                    .unwrap_or(false),
            }
        })
        .collect())
}

/// The names of the entries whose file is on disk.
pub(crate) fn list_entries(path: &Path) -> Result<Vec<String>, DataError> {
    Ok(entries(path)?
        .into_iter()
        .filter(|e| e.exists)
        .map(|e| e.name)
        .collect())
}

fn warn(field: String, message: String) -> Problem {
    Problem::new(ProblemKind::UnknownKey, Some(field), message).warning()
}

/// Loads one entry: the records, plus warnings about the entry itself.
pub(crate) fn read_entry(
    path: &Path,
    name: &str,
) -> Result<(ReadOutput, Vec<Problem>, PathBuf), DataError> {
    let info = read_info(path)?;
    let entry_err = |message: String| DataError::Entry {
        path: path.to_path_buf(),
        entry: name.to_string(),
        message,
    };
    let Some(v) = info.get(name) else {
        return Err(DataError::NoSuchEntry {
            path: path.to_path_buf(),
            name: name.to_string(),
            entries: list_entries(path).unwrap_or_default(),
        });
    };
    let e = v
        .as_object()
        .ok_or_else(|| entry_err("an entry must be a JSON object".into()))?;
    let mut warnings = Vec::new();
    for k in e.keys() {
        if !ENTRY_KEYS.contains(&k.as_str()) {
            let hint = match k.as_str() {
                "format" => " (did you mean `formatting`?)",
                "column" => " (did you mean `columns`?)",
                "tag" => " (did you mean `tags`?)",
                "file" | "filename" | "path" => " (did you mean `file_name`?)",
                _ => "",
            };
            warnings.push(warn(
                format!("{name}.{k}"),
                format!("unknown key `{k}` is ignored by LLaMA-Factory{hint}"),
            ));
        }
    }
    let Some(file_name) = e.get("file_name").and_then(Value::as_str) else {
        let hub = [
            "hf_hub_url",
            "ms_hub_url",
            "om_hub_url",
            "script_url",
            "cloud_file_name",
        ]
        .iter()
        .find_map(|k| {
            e.get(*k)
                .and_then(Value::as_str)
                .map(|v| format!("{k} = {v}"))
        });
        return Err(entry_err(match hub {
            Some(h) => format!(
                "no local `file_name` ({h}); download the dataset and point `file_name` at it"
            ),
            None => "no `file_name`".into(),
        }));
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    let file = dir.join(file_name);
    if !file.exists() {
        return Err(entry_err(format!(
            "`file_name` {file_name:?} resolves to {}, which does not exist (file_name is relative to the folder of dataset_info.json)",
            file.display()
        )));
    }
    if file.is_dir() {
        return Err(entry_err(format!(
            "{} is a folder; point `file_name` at one file",
            file.display()
        )));
    }
    let schema = match e.get("formatting").and_then(Value::as_str) {
        None | Some("alpaca") => Schema::Alpaca,
        Some("sharegpt") => Schema::ShareGpt,
        Some(other) => {
            warnings.push(warn(
                format!("{name}.formatting"),
                format!("unknown formatting `{other}` (LLaMA-Factory knows `alpaca` and `sharegpt`); reading as alpaca"),
            ));
            Schema::Alpaca
        }
    };
    let mut m = Mapping::default_for(schema);
    let mut apply = |section: &str, allowed: &[&str]| {
        let Some(sec) = e.get(section) else { return };
        let Some(sec) = sec.as_object() else {
            warnings.push(warn(
                format!("{name}.{section}"),
                format!("`{section}` must be an object"),
            ));
            return;
        };
        for (k, v) in sec {
            let field = format!("{name}.{section}.{k}");
            if !allowed.contains(&k.as_str()) {
                warnings.push(warn(field, format!("unknown key `{k}` in `{section}`")));
                continue;
            }
            let Some(v) = v.as_str() else {
                warnings.push(warn(field, "expected a string".into()));
                continue;
            };
            let v = v.to_string();
            match k.as_str() {
                "prompt" => m.prompt = v,
                "query" => m.query = v,
                "response" => m.response = v,
                "history" => m.history = v,
                "messages" => m.messages = v,
                "system" => m.system = v,
                "tools" => m.tools = v,
                "role_tag" => m.role_tag = v,
                "content_tag" => m.content_tag = v,
                "user_tag" => m.user_tag = v,
                "assistant_tag" => m.assistant_tag = v,
                "observation_tag" => m.observation_tag = v,
                "function_tag" => m.function_tag = v,
                "system_tag" => m.system_tag = v,
                // images, videos, audios, chosen, rejected, kto_tag: kept as extra fields.
                _ => {}
            }
        }
    };
    apply("columns", COLUMN_KEYS);
    apply("tags", TAG_KEYS);
    if schema == Schema::Alpaca && e.get("tags").is_some() {
        warnings.push(warn(
            format!("{name}.tags"),
            "`tags` only apply to the sharegpt formatting".into(),
        ));
    }
    if e.get("ranking").and_then(Value::as_bool) == Some(true) {
        warnings.push(
            Problem::new(
                ProblemKind::Unsupported,
                Some(format!("{name}.ranking")),
                "preference data: `chosen`/`rejected` are kept as extra fields, not as turns",
            )
            .warning(),
        );
    }
    if e.get("num_samples").is_some() {
        warnings.push(
            Problem::new(
                ProblemKind::Unsupported,
                Some(format!("{name}.num_samples")),
                "`num_samples` is not applied here; every record is loaded",
            )
            .warning(),
        );
    }
    let encoding = match super::extension(&file).as_deref() {
        Some("jsonl" | "ndjson") => super::Encoding::JsonLines,
        Some("csv" | "tsv") => super::Encoding::Csv,
        Some("parquet") => super::Encoding::Parquet,
        _ => super::Encoding::Json,
    };
    let out = super::read_path(&file, Some(super::Format::new(schema, encoding)), Some(&m))?;
    for w in &mut warnings {
        w.file = path.to_path_buf();
    }
    Ok((out, warnings, file))
}
