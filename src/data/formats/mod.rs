//! Format readers and writers: the record layouts ([`Schema`]: Alpaca, ShareGPT, OpenAI
//! messages), the containers ([`Encoding`]: JSON array, JSON lines, CSV, Parquet), the
//! column/tag [`Mapping`] (LLaMA-Factory's `columns`/`tags`), auto-detection, and the
//! dispatch from a file to records and back.

pub mod alpaca;
pub mod csv;
pub mod dataset_info;
pub mod json;
mod json_blocks;
pub mod openai;
pub mod parquet;
mod parquet_check;
pub mod sharegpt;

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::error::{DataError, Problem, ProblemKind};
use super::record::Conversation;

/// How one record is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schema {
    /// `instruction` / `input` / `output`, optional `system` / `history`.
    Alpaca,
    /// `conversations` of `from` / `value` (`human`, `gpt`, `function_call`, `observation`), `system`, `tools`.
    ShareGpt,
    /// `messages` of `role` / `content` (content may be a list of parts).
    OpenAi,
}

/// The container the records sit in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    /// One JSON array of records.
    Json,
    /// One JSON record per line.
    JsonLines,
    Csv,
    Parquet,
}

/// A file format: record layout plus container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Format {
    pub schema: Schema,
    pub encoding: Encoding,
}

impl Format {
    pub const ALPACA: Format = Format::new(Schema::Alpaca, Encoding::Json);
    pub const SHAREGPT: Format = Format::new(Schema::ShareGpt, Encoding::Json);
    pub const OPENAI: Format = Format::new(Schema::OpenAi, Encoding::JsonLines);
    pub const CSV: Format = Format::new(Schema::Alpaca, Encoding::Csv);
    pub const PARQUET: Format = Format::new(Schema::OpenAi, Encoding::Parquet);

    pub const fn new(schema: Schema, encoding: Encoding) -> Self {
        Format { schema, encoding }
    }

    /// The names accepted by [`FromStr`].
    pub const NAMES: &'static [&'static str] = &[
        "alpaca",
        "alpaca-jsonl",
        "sharegpt",
        "sharegpt-jsonl",
        "openai",
        "openai-json",
        "csv",
        "parquet",
        "alpaca-parquet",
        "sharegpt-parquet",
    ];

    /// The format a `--to NAME --out PATH` pair means: `.jsonl` / `.json` on the output
    /// switches the JSON container.
    pub fn for_output(self, out: &Path) -> Format {
        match (self.encoding, extension(out).as_deref()) {
            (Encoding::Json, Some("jsonl" | "ndjson")) => {
                Format::new(self.schema, Encoding::JsonLines)
            }
            (Encoding::JsonLines, Some("json")) => Format::new(self.schema, Encoding::Json),
            _ => self,
        }
    }
}

impl FromStr for Format {
    type Err = DataError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.to_ascii_lowercase().as_str() {
            "alpaca" | "alpaca-json" => Format::ALPACA,
            "alpaca-jsonl" => Format::new(Schema::Alpaca, Encoding::JsonLines),
            "sharegpt" | "sharegpt-json" => Format::SHAREGPT,
            "sharegpt-jsonl" => Format::new(Schema::ShareGpt, Encoding::JsonLines),
            "openai" | "openai-jsonl" | "messages" => Format::OPENAI,
            "openai-json" => Format::new(Schema::OpenAi, Encoding::Json),
            "csv" => Format::CSV,
            "parquet" | "openai-parquet" => Format::PARQUET,
            "alpaca-parquet" => Format::new(Schema::Alpaca, Encoding::Parquet),
            "sharegpt-parquet" => Format::new(Schema::ShareGpt, Encoding::Parquet),
            _ => {
                return Err(DataError::Other(format!(
                    "unknown format `{s}` (one of: {})",
                    Format::NAMES.join(", ")
                )))
            }
        })
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self.schema {
            Schema::Alpaca => "alpaca",
            Schema::ShareGpt => "sharegpt",
            Schema::OpenAi => "openai",
        };
        let e = match self.encoding {
            Encoding::Json => "json",
            Encoding::JsonLines => "jsonl",
            Encoding::Csv => "csv",
            Encoding::Parquet => "parquet",
        };
        write!(f, "{s} ({e})")
    }
}

/// Which keys of a record hold what (LLaMA-Factory's `columns` and `tags`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mapping {
    // Alpaca columns.
    pub prompt: String,
    pub query: String,
    pub response: String,
    pub history: String,
    // Shared columns.
    pub system: String,
    pub tools: String,
    // Conversation columns and tags.
    pub messages: String,
    pub role_tag: String,
    pub content_tag: String,
    pub user_tag: String,
    pub assistant_tag: String,
    pub observation_tag: String,
    pub function_tag: String,
    pub system_tag: String,
}

impl Mapping {
    /// The keys a schema uses when nothing else is said.
    pub fn default_for(schema: Schema) -> Self {
        let s = |x: &str| x.to_string();
        let mut m = Mapping {
            prompt: s("instruction"),
            query: s("input"),
            response: s("output"),
            history: s("history"),
            system: s("system"),
            tools: s("tools"),
            messages: s("conversations"),
            role_tag: s("from"),
            content_tag: s("value"),
            user_tag: s("human"),
            assistant_tag: s("gpt"),
            observation_tag: s("observation"),
            function_tag: s("function_call"),
            system_tag: s("system"),
        };
        if schema == Schema::OpenAi {
            m.messages = s("messages");
            m.role_tag = s("role");
            m.content_tag = s("content");
            m.user_tag = s("user");
            m.assistant_tag = s("assistant");
            m.observation_tag = s("tool");
        }
        m
    }
}

/// Lower-case extension of a path.
pub(crate) fn extension(path: &Path) -> Option<String> {
    path.extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase)
}

/// What a reader hands back: the records with their source line, and the problems found.
pub(crate) struct ReadOutput {
    pub records: Vec<Conversation>,
    /// 1-based source line of each record, when the container has lines.
    pub lines: Vec<Option<usize>>,
    /// Problems per record (same length as `records`).
    pub problems: Vec<Vec<Problem>>,
    pub format: Format,
    pub mapping: Mapping,
}

/// Guesses the schema (and the mapping) from one parsed record.
pub(crate) fn detect_schema(v: &Value) -> Option<(Schema, Mapping)> {
    let o = v.as_object()?;
    let turn_keys = |key: &str| -> Option<(bool, bool)> {
        let turns = o.get(key)?.as_array()?;
        let first = turns.iter().find_map(Value::as_object);
        Some(match first {
            Some(t) => (t.contains_key("from"), t.contains_key("role")),
            None => (false, false),
        })
    };
    if let Some((from, role)) = turn_keys("conversations") {
        let mut m = Mapping::default_for(Schema::ShareGpt);
        if role && !from {
            role_content_tags(&mut m);
        }
        return Some((Schema::ShareGpt, m));
    }
    if let Some((from, _)) = turn_keys("messages") {
        if from {
            let mut m = Mapping::default_for(Schema::ShareGpt);
            m.messages = "messages".into();
            return Some((Schema::ShareGpt, m));
        }
        return Some((Schema::OpenAi, Mapping::default_for(Schema::OpenAi)));
    }
    if o.contains_key("instruction") || o.contains_key("output") {
        return Some((Schema::Alpaca, Mapping::default_for(Schema::Alpaca)));
    }
    None
}

/// ShareGPT tags for files whose turns use `role` / `content` with OpenAI role names.
pub(crate) fn role_content_tags(m: &mut Mapping) {
    let o = Mapping::default_for(Schema::OpenAi);
    m.role_tag = o.role_tag;
    m.content_tag = o.content_tag;
    m.user_tag = o.user_tag;
    m.assistant_tag = o.assistant_tag;
    m.observation_tag = o.observation_tag;
}

/// Turns one parsed record into a conversation, collecting its problems.
pub(crate) fn from_value(
    v: Value,
    schema: Schema,
    mapping: &Mapping,
    problems: &mut Vec<Problem>,
) -> Conversation {
    let mut c = match v {
        Value::Object(o) => match schema {
            Schema::Alpaca => alpaca::read(o, mapping, problems),
            Schema::ShareGpt | Schema::OpenAi => sharegpt::read(o, mapping, problems),
        },
        other => {
            problems.push(Problem::new(
                ProblemKind::WrongType,
                None,
                format!(
                    "a record must be a JSON object, found {}",
                    type_name(&other)
                ),
            ));
            let mut c = Conversation::default();
            c.set_hint("value", other);
            c
        }
    };
    c.tidy_hints();
    c
}

/// Turns a conversation into a record of the given schema.
pub(crate) fn to_value(
    c: &Conversation,
    schema: Schema,
    mapping: &Mapping,
) -> Result<Value, String> {
    if c.hint("raw").is_some() && c.messages.is_empty() {
        return Err("the record was not valid JSON when loaded; fix or delete it first".into());
    }
    if let (Some(v), true) = (c.hint("value"), c.messages.is_empty()) {
        return Ok(v.clone());
    }
    Ok(Value::Object(match schema {
        Schema::Alpaca => alpaca::write(c, mapping)?,
        Schema::ShareGpt | Schema::OpenAi => sharegpt::write(c, mapping, schema),
    }))
}

/// Appends the record's unknown fields after the interpreted ones. A meta field whose key
/// the writer already used fills it only when the interpreted value is empty (that is where
/// readers keep a field of the wrong type).
pub(crate) fn merge_meta(out: &mut Map<String, Value>, c: &Conversation) {
    for (k, v) in c.user_meta() {
        match out.get_mut(k) {
            Some(existing) => {
                let empty = match existing {
                    Value::Null => true,
                    Value::String(s) => s.is_empty(),
                    _ => false,
                };
                if empty {
                    *existing = v.clone();
                }
            }
            None => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
}

pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Reads a file in the given (or detected) format.
pub(crate) fn read_path(
    path: &Path,
    format: Option<Format>,
    mapping: Option<&Mapping>,
) -> Result<ReadOutput, DataError> {
    let ext = extension(path);
    let encoding = match format {
        Some(f) => f.encoding,
        None => match ext.as_deref() {
            Some("parquet") => Encoding::Parquet,
            Some("csv" | "tsv") => Encoding::Csv,
            Some("jsonl" | "ndjson") => Encoding::JsonLines,
            _ => Encoding::Json,
        },
    };
    let schema = format.map(|f| f.schema);
    let mut out = match encoding {
        Encoding::Json | Encoding::JsonLines => json::read(path, encoding, schema, mapping)?,
        Encoding::Csv => csv::read(path, schema, mapping)?,
        Encoding::Parquet => parquet::read(path, schema, mapping)?,
    };
    if out.records.is_empty() {
        return Err(empty(path, out.format.encoding));
    }
    for (i, ps) in out.problems.iter_mut().enumerate() {
        for p in ps {
            p.file = path.to_path_buf();
            p.record = Some(i);
            if p.line.is_none() {
                p.line = out.lines[i];
            }
        }
    }
    Ok(out)
}

/// The error for a file that gave no records, with what it held instead.
fn empty(path: &Path, encoding: Encoding) -> DataError {
    let no_bytes = std::fs::metadata(path).is_ok_and(|m| m.len() == 0);
    let what = match encoding {
        _ if no_bytes => "the file is empty",
        Encoding::Json => "only whitespace or an empty JSON array",
        Encoding::JsonLines => "only blank lines",
        Encoding::Csv => "a header and no rows",
        Encoding::Parquet => "no rows",
    };
    DataError::Empty {
        path: path.to_path_buf(),
        what,
    }
}

/// Serializes records into the bytes of a file of the given format.
pub(crate) fn write_bytes(
    records: &[Conversation],
    format: Format,
    mapping: &Mapping,
    path: &Path,
) -> Result<Vec<u8>, DataError> {
    match format.encoding {
        Encoding::Json | Encoding::JsonLines => json::write(records, format, mapping, path),
        Encoding::Csv => csv::write(records, format.schema, mapping, path),
        Encoding::Parquet => parquet::write(records, format.schema, mapping, path),
    }
}

/// Converts all records to JSON values of a schema (in parallel), or names the first that cannot be.
pub(crate) fn to_values(
    records: &[Conversation],
    schema: Schema,
    mapping: &Mapping,
    path: &Path,
) -> Result<Vec<Value>, DataError> {
    use rayon::prelude::*;
    records
        .par_iter()
        .enumerate()
        .map(|(i, c)| {
            to_value(c, schema, mapping).map_err(|message| DataError::Record {
                path: path.to_path_buf(),
                record: i,
                field: None,
                message,
            })
        })
        .collect()
}

/// Converts parsed values into conversations (in parallel).
pub(crate) fn values_to_records(
    values: Vec<Value>,
    schema: Schema,
    mapping: &Mapping,
) -> (Vec<Conversation>, Vec<Vec<Problem>>) {
    use rayon::prelude::*;
    values
        .into_par_iter()
        .map(|v| {
            let mut ps = Vec::new();
            let c = from_value(v, schema, mapping, &mut ps);
            (c, ps)
        })
        .unzip()
}
