//! Preference file layouts, read and written: TRL's (`prompt`, `chosen`, `rejected` as
//! strings or message lists, and the implicit-prompt form where `chosen` and `rejected`
//! are whole conversations) and LLaMA-Factory's `ranking: true` entries (ShareGPT:
//! `conversations` or `messages` plus a `chosen` and a `rejected` message; Alpaca:
//! `instruction`, `input`, `history`, `chosen` and `rejected` strings), in a JSON array or
//! JSON lines. Every error names the file, the record and the field.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::error::DataError;
use super::formats::openai::content_text;
use super::formats::{extension, type_name, Encoding, Mapping, Schema};
use super::preference::PreferencePair;
use super::record::{Message, Role};

/// How a preference record is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreferenceLayout {
    /// TRL, explicit prompt, text: `{"prompt": str, "chosen": str, "rejected": str}`.
    TrlStandard,
    /// TRL, explicit prompt, conversational: the three are lists of `{role, content}`.
    #[default]
    TrlConversational,
    /// TRL, implicit prompt: `chosen` and `rejected` are whole conversations that share
    /// the prompt as their first turns.
    TrlImplicit,
    /// LLaMA-Factory ShareGPT ranking: the turns (`conversations`, or the `messages`
    /// column), a `system` column, and `chosen` / `rejected` as one message each.
    ShareGptRanking,
    /// LLaMA-Factory Alpaca ranking: `instruction`, `input`, `history`, `system`, and
    /// `chosen` / `rejected` as text.
    AlpacaRanking,
}

impl PreferenceLayout {
    pub const ALL: [PreferenceLayout; 5] = [
        PreferenceLayout::TrlConversational,
        PreferenceLayout::TrlStandard,
        PreferenceLayout::TrlImplicit,
        PreferenceLayout::ShareGptRanking,
        PreferenceLayout::AlpacaRanking,
    ];

    pub fn label(self) -> &'static str {
        match self {
            PreferenceLayout::TrlStandard => "TRL (text)",
            PreferenceLayout::TrlConversational => "TRL (messages)",
            PreferenceLayout::TrlImplicit => "TRL (implicit prompt)",
            PreferenceLayout::ShareGptRanking => "LLaMA-Factory ShareGPT ranking",
            PreferenceLayout::AlpacaRanking => "LLaMA-Factory Alpaca ranking",
        }
    }
}

/// A preference file's format: the layout, the container, and the keys and role tags
/// (LLaMA-Factory's `columns` and `tags`).
#[derive(Debug, Clone, PartialEq)]
pub struct PreferenceFormat {
    pub layout: PreferenceLayout,
    /// JSON array or JSON lines.
    pub encoding: Encoding,
    /// Turn keys and tags (ShareGPT) or column names (Alpaca).
    pub mapping: Mapping,
    pub chosen_key: String,
    pub rejected_key: String,
}

impl Default for PreferenceFormat {
    fn default() -> Self {
        Self::new(PreferenceLayout::TrlConversational, Encoding::JsonLines)
    }
}

impl PreferenceFormat {
    /// A layout in a container, with the layout's usual keys.
    pub fn new(layout: PreferenceLayout, encoding: Encoding) -> Self {
        let schema = match layout {
            PreferenceLayout::ShareGptRanking => Schema::ShareGpt,
            PreferenceLayout::AlpacaRanking => Schema::Alpaca,
            _ => Schema::OpenAi,
        };
        PreferenceFormat {
            layout,
            encoding,
            mapping: Mapping::default_for(schema),
            chosen_key: "chosen".into(),
            rejected_key: "rejected".into(),
        }
    }
}

/// Whether `path` names preference data: a JSON or JSON-lines file whose first record
/// has `chosen` and `rejected`, or `dataset_info.json#entry` of a `ranking: true` entry.
pub fn is_preference_path(path: &Path) -> bool {
    if path.is_file() {
        return looks_like_preference(path);
    }
    let Some((file, entry)) = path.to_str().and_then(|s| s.rsplit_once('#')) else {
        return false;
    };
    let Ok(bytes) = std::fs::read(file) else {
        return false;
    };
    serde_json::from_slice::<Value>(strip_bom(&bytes))
        .ok()
        .and_then(|v| v.get(entry)?.get("ranking")?.as_bool())
        .unwrap_or(false)
}

/// Whether a JSON or JSON-lines file's first record has `chosen` and `rejected` keys.
pub fn looks_like_preference(path: &Path) -> bool {
    match first_record(path) {
        Some(Value::Object(o)) => o.contains_key("chosen") && o.contains_key("rejected"),
        _ => false,
    }
}

/// The first record of a JSON array or JSON-lines file, read whole (small files) or up to
/// its first line.
fn first_record(path: &Path) -> Option<Value> {
    use std::io::BufRead;
    let file = std::fs::File::open(path).ok()?;
    let mut reader = std::io::BufReader::new(file);
    let mut line = String::new();
    loop {
        line.clear();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let t = line.trim_start_matches('\u{feff}').trim();
        if t.is_empty() {
            continue;
        }
        if t.starts_with('[') {
            // A JSON array: read its first element with a streaming parse of the rest.
            let rest = std::fs::read(path).ok()?;
            let v: Value = serde_json::from_slice(strip_bom(&rest)).ok()?;
            return v.as_array()?.first().cloned();
        }
        return serde_json::from_str(t).ok();
    }
}

fn strip_bom(b: &[u8]) -> &[u8] {
    b.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(b)
}

fn record_err(path: &Path, record: usize, field: Option<&str>, message: String) -> DataError {
    DataError::Record {
        path: path.to_path_buf(),
        record,
        field: field.map(str::to_string),
        message,
    }
}

/// The pairs of a file, their source lines, and the format they were read in.
type ReadPairs = (Vec<PreferencePair>, Vec<Option<usize>>, PreferenceFormat);

/// Reads every record of a preference file. `format` fixes the layout and keys (a
/// dataset_info.json entry); otherwise they are detected from the first record.
pub(crate) fn read_file(
    path: &Path,
    format: Option<PreferenceFormat>,
) -> Result<ReadPairs, DataError> {
    let bytes = std::fs::read(path).map_err(|e| DataError::io(path, e))?;
    let text = std::str::from_utf8(strip_bom(&bytes)).map_err(|e| DataError::UnknownFormat {
        path: path.to_path_buf(),
        reason: format!("not UTF-8 text (byte {})", e.valid_up_to()),
    })?;
    let is_array = text.trim_start().starts_with('[');
    let ext = extension(path);
    if matches!(ext.as_deref(), Some("csv" | "tsv" | "parquet")) {
        return Err(DataError::UnknownFormat {
            path: path.to_path_buf(),
            reason: "preference data is read from JSON or JSON lines".into(),
        });
    }
    let mut values: Vec<(Value, Option<usize>)> = Vec::new();
    if is_array {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(items)) => values.extend(items.into_iter().map(|v| (v, None))),
            Ok(_) => {
                return Err(DataError::UnknownFormat {
                    path: path.to_path_buf(),
                    reason: "expected a JSON array of records".into(),
                })
            }
            Err(e) => {
                return Err(DataError::Json {
                    path: path.to_path_buf(),
                    line: e.line(),
                    column: e.column(),
                    message: e.to_string(),
                })
            }
        }
    } else {
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let v = serde_json::from_str::<Value>(line).map_err(|e| DataError::Json {
                path: path.to_path_buf(),
                line: i + 1,
                column: e.column(),
                message: e.to_string(),
            })?;
            values.push((v, Some(i + 1)));
        }
    }
    let Some((first, _)) = values.first() else {
        return Err(DataError::Empty {
            path: path.to_path_buf(),
            what: "no preference records",
        });
    };
    let encoding = if is_array {
        Encoding::Json
    } else {
        Encoding::JsonLines
    };
    let format = match format {
        Some(mut f) => {
            f.encoding = encoding;
            f
        }
        None => detect(first, encoding).map_err(|reason| DataError::UnknownFormat {
            path: path.to_path_buf(),
            reason,
        })?,
    };
    let mut pairs = Vec::with_capacity(values.len());
    let mut lines = Vec::with_capacity(values.len());
    for (i, (v, line)) in values.into_iter().enumerate() {
        let pair = read_record(v, &format).map_err(|(field, msg)| {
            let msg = match line {
                Some(l) => format!("{msg} (line {l})"),
                None => msg,
            };
            record_err(path, i, field.as_deref(), msg)
        })?;
        pairs.push(pair);
        lines.push(line);
    }
    Ok((pairs, lines, format))
}

/// The layout and keys a record's fields point to.
fn detect(v: &Value, encoding: Encoding) -> Result<PreferenceFormat, String> {
    let Some(o) = v.as_object() else {
        return Err(format!(
            "the first record is {}, not a JSON object",
            type_name(v)
        ));
    };
    if !o.contains_key("chosen") || !o.contains_key("rejected") {
        return Err(
            "not preference data: the first record has no `chosen` and `rejected` fields".into(),
        );
    }
    let turns_use_role = |key: &str| {
        o.get(key)
            .and_then(Value::as_array)
            .and_then(|t| t.iter().find_map(Value::as_object))
            .is_some_and(|t| t.contains_key("role"))
    };
    let f = |layout| PreferenceFormat::new(layout, encoding);
    if o.contains_key("conversations") || o.contains_key("messages") {
        let mut fmt = f(PreferenceLayout::ShareGptRanking);
        let key = if o.contains_key("conversations") {
            "conversations"
        } else {
            "messages"
        };
        fmt.mapping.messages = key.into();
        if turns_use_role(key) {
            super::formats::role_content_tags(&mut fmt.mapping);
        }
        return Ok(fmt);
    }
    match o.get("prompt") {
        Some(Value::String(_)) => return Ok(f(PreferenceLayout::TrlStandard)),
        Some(Value::Array(_)) => return Ok(f(PreferenceLayout::TrlConversational)),
        Some(other) => {
            return Err(format!(
                "`prompt` must be text or a list of messages, found {}",
                type_name(other)
            ))
        }
        None => {}
    }
    if o.contains_key("instruction") {
        return Ok(f(PreferenceLayout::AlpacaRanking));
    }
    if o.get("chosen").is_some_and(Value::is_array) {
        return Ok(f(PreferenceLayout::TrlImplicit));
    }
    Err("a preference record needs a prompt: `prompt`, `messages`, `conversations` or `instruction` (or `chosen` and `rejected` as whole conversations)".into())
}

type FieldError = (Option<String>, String);

fn ferr(field: &str, msg: impl Into<String>) -> FieldError {
    (Some(field.to_string()), msg.into())
}

/// The role a tag names under a mapping (its own tags first, then the usual names).
fn role_of(tag: &str, m: &Mapping) -> Option<Role> {
    if tag == m.user_tag {
        Some(Role::User)
    } else if tag == m.assistant_tag {
        Some(Role::Assistant)
    } else if tag == m.observation_tag {
        Some(Role::Tool)
    } else if tag == m.function_tag {
        Some(Role::FunctionCall)
    } else if tag == m.system_tag {
        Some(Role::System)
    } else {
        Role::parse_any(tag)
    }
}

fn tag_of(role: Role, m: &Mapping) -> &str {
    match role {
        Role::User => &m.user_tag,
        Role::Assistant => &m.assistant_tag,
        Role::Tool => &m.observation_tag,
        Role::FunctionCall => &m.function_tag,
        Role::System => &m.system_tag,
    }
}

/// One message object (`{role, content}` or the mapping's tags).
fn read_message(v: &Value, m: &Mapping, field: &str) -> Result<Message, FieldError> {
    let o = v.as_object().ok_or_else(|| {
        ferr(
            field,
            format!("a message must be an object, found {}", type_name(v)),
        )
    })?;
    let (role_key, content_key) = if o.contains_key(&m.role_tag) {
        (m.role_tag.as_str(), m.content_tag.as_str())
    } else if o.contains_key("role") {
        ("role", "content")
    } else {
        ("from", "value")
    };
    let tag = o
        .get(role_key)
        .and_then(Value::as_str)
        .ok_or_else(|| ferr(field, format!("a message needs a `{role_key}` text")))?;
    let role = role_of(tag, m).ok_or_else(|| ferr(field, format!("unknown role `{tag}`")))?;
    let content = o
        .get(content_key)
        .and_then(content_text)
        .ok_or_else(|| ferr(field, format!("a message needs a `{content_key}` text")))?;
    Ok(Message::new(role, content))
}

fn read_messages(v: &Value, m: &Mapping, field: &str) -> Result<Vec<Message>, FieldError> {
    let items = v.as_array().ok_or_else(|| {
        ferr(
            field,
            format!("expected a list of messages, found {}", type_name(v)),
        )
    })?;
    items
        .iter()
        .enumerate()
        .map(|(i, t)| read_message(t, m, &format!("{field}[{i}]")))
        .collect()
}

/// A reply: text (one assistant turn), one message, or a list of messages.
fn read_reply(v: Option<&Value>, m: &Mapping, field: &str) -> Result<Vec<Message>, FieldError> {
    match v {
        None => Err(ferr(field, format!("missing `{field}`"))),
        Some(Value::String(s)) => Ok(vec![Message::new(Role::Assistant, s.clone())]),
        Some(v @ Value::Object(_)) => Ok(vec![read_message(v, m, field)?]),
        Some(v @ Value::Array(_)) => read_messages(v, m, field),
        Some(other) => Err(ferr(
            field,
            format!(
                "expected text, a message or a list of messages, found {}",
                type_name(other)
            ),
        )),
    }
}

/// Takes a leading system turn out of `turns`.
fn split_system(turns: &mut Vec<Message>) -> Option<String> {
    if turns.first().is_some_and(|t| t.role == Role::System) {
        Some(turns.remove(0).content)
    } else {
        None
    }
}

fn opt_text(o: &Map<String, Value>, key: &str) -> Result<Option<String>, FieldError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(ferr(
            key,
            format!("expected text, found {}", type_name(other)),
        )),
    }
}

fn read_record(v: Value, f: &PreferenceFormat) -> Result<PreferencePair, FieldError> {
    let Value::Object(mut o) = v else {
        return Err((
            None,
            format!("a record must be a JSON object, found {}", type_name(&v)),
        ));
    };
    let m = &f.mapping;
    let (ck, rk) = (f.chosen_key.as_str(), f.rejected_key.as_str());
    let mut used: Vec<String> = vec![ck.into(), rk.into()];
    let mut pair = PreferencePair::default();
    match f.layout {
        PreferenceLayout::TrlStandard | PreferenceLayout::TrlConversational => {
            used.push("prompt".into());
            pair.prompt = match o.get("prompt") {
                Some(Value::String(s)) => vec![Message::new(Role::User, s.clone())],
                Some(v) => read_messages(v, m, "prompt")?,
                None => return Err(ferr("prompt", "missing `prompt`")),
            };
            pair.system = split_system(&mut pair.prompt);
            pair.chosen = read_reply(o.get(ck), m, ck)?;
            pair.rejected = read_reply(o.get(rk), m, rk)?;
        }
        PreferenceLayout::TrlImplicit => {
            let chosen = read_reply(o.get(ck), m, ck)?;
            let rejected = read_reply(o.get(rk), m, rk)?;
            let shared = chosen
                .iter()
                .zip(&rejected)
                .take_while(|(a, b)| a == b)
                .count();
            if shared == 0 {
                return Err(ferr(
                    ck,
                    "with no `prompt`, `chosen` and `rejected` must be conversations that start with the same turns",
                ));
            }
            pair.prompt = chosen[..shared].to_vec();
            pair.chosen = chosen[shared..].to_vec();
            pair.rejected = rejected[shared..].to_vec();
            pair.system = split_system(&mut pair.prompt);
        }
        PreferenceLayout::ShareGptRanking => {
            used.push(m.messages.clone());
            used.push(m.system.clone());
            let turns = o
                .get(&m.messages)
                .ok_or_else(|| ferr(&m.messages, format!("missing `{}`", m.messages)))?;
            pair.prompt = read_messages(turns, m, &m.messages)?;
            pair.system = opt_text(&o, &m.system)?.or_else(|| split_system(&mut pair.prompt));
            pair.chosen = read_reply(o.get(ck), m, ck)?;
            pair.rejected = read_reply(o.get(rk), m, rk)?;
        }
        PreferenceLayout::AlpacaRanking => {
            for k in [&m.prompt, &m.query, &m.history, &m.system] {
                used.push(k.clone());
            }
            let instruction = opt_text(&o, &m.prompt)?
                .ok_or_else(|| ferr(&m.prompt, format!("missing `{}`", m.prompt)))?;
            let input = opt_text(&o, &m.query)?.unwrap_or_default();
            let user = if input.is_empty() {
                instruction
            } else {
                format!("{instruction}\n{input}")
            };
            if let Some(h) = o.get(&m.history).filter(|h| !h.is_null()) {
                let turns = h.as_array().ok_or_else(|| {
                    ferr(&m.history, "expected a list of [prompt, response] pairs")
                })?;
                for (i, t) in turns.iter().enumerate() {
                    let field = format!("{}[{i}]", m.history);
                    match t.as_array().map(Vec::as_slice) {
                        Some([Value::String(q), Value::String(a)]) => {
                            pair.prompt.push(Message::new(Role::User, q.clone()));
                            pair.prompt.push(Message::new(Role::Assistant, a.clone()));
                        }
                        _ => {
                            return Err(ferr(&field, "expected a [prompt, response] pair of texts"))
                        }
                    }
                }
            }
            pair.prompt.push(Message::new(Role::User, user));
            pair.system = opt_text(&o, &m.system)?;
            pair.chosen = read_reply(o.get(ck), m, ck)?;
            pair.rejected = read_reply(o.get(rk), m, rk)?;
        }
    }
    o.retain(|k, _| !used.contains(k));
    pair.meta = o;
    Ok(pair)
}

fn message_value(msg: &Message, m: &Mapping) -> Value {
    let mut o = Map::new();
    o.insert(
        m.role_tag.clone(),
        Value::String(tag_of(msg.role, m).into()),
    );
    o.insert(m.content_tag.clone(), Value::String(msg.content.clone()));
    Value::Object(o)
}

fn messages_value(msgs: &[Message], m: &Mapping) -> Value {
    Value::Array(msgs.iter().map(|x| message_value(x, m)).collect())
}

/// The one assistant turn a text-valued layout can hold.
fn single_text<'a>(reply: &'a [Message], field: &str) -> Result<&'a str, String> {
    match reply {
        [one] if one.role == Role::Assistant => Ok(&one.content),
        _ => Err(format!(
            "`{field}` has {} turns; this layout holds one assistant reply (save as TRL (messages))",
            reply.len()
        )),
    }
}

/// One pair as a record of `f`'s layout, or why the layout cannot hold it.
fn write_record(p: &PreferencePair, f: &PreferenceFormat) -> Result<Value, String> {
    let m = &f.mapping;
    let openai = Mapping::default_for(Schema::OpenAi);
    let mut o = Map::new();
    let with_system = |m: &Mapping| {
        let mut turns = Vec::with_capacity(p.prompt.len() + 1);
        if let Some(s) = &p.system {
            turns.push(message_value(&Message::new(Role::System, s.clone()), m));
        }
        turns.extend(p.prompt.iter().map(|x| message_value(x, m)));
        turns
    };
    match f.layout {
        PreferenceLayout::TrlStandard => {
            if p.system.is_some() || p.prompt.len() != 1 || p.prompt[0].role != Role::User {
                return Err("TRL's text layout holds one user prompt with no system prompt (save as TRL (messages))".into());
            }
            o.insert("prompt".into(), Value::String(p.prompt[0].content.clone()));
            o.insert(
                f.chosen_key.clone(),
                single_text(&p.chosen, "chosen")?.into(),
            );
            o.insert(
                f.rejected_key.clone(),
                single_text(&p.rejected, "rejected")?.into(),
            );
        }
        PreferenceLayout::TrlConversational => {
            o.insert("prompt".into(), Value::Array(with_system(&openai)));
            o.insert(f.chosen_key.clone(), messages_value(&p.chosen, &openai));
            o.insert(f.rejected_key.clone(), messages_value(&p.rejected, &openai));
        }
        PreferenceLayout::TrlImplicit => {
            let full = |reply: &[Message]| {
                let mut t = with_system(&openai);
                t.extend(reply.iter().map(|x| message_value(x, &openai)));
                Value::Array(t)
            };
            o.insert(f.chosen_key.clone(), full(&p.chosen));
            o.insert(f.rejected_key.clone(), full(&p.rejected));
        }
        PreferenceLayout::ShareGptRanking => {
            o.insert(m.messages.clone(), messages_value(&p.prompt, m));
            if let Some(s) = &p.system {
                o.insert(m.system.clone(), Value::String(s.clone()));
            }
            for (key, reply, name) in [
                (&f.chosen_key, &p.chosen, "chosen"),
                (&f.rejected_key, &p.rejected, "rejected"),
            ] {
                match reply.as_slice() {
                    [one] => o.insert(key.clone(), message_value(one, m)),
                    _ => {
                        return Err(format!(
                        "`{name}` has {} turns; LLaMA-Factory's ranking layout holds one message",
                        reply.len()
                    ))
                    }
                };
            }
        }
        PreferenceLayout::AlpacaRanking => {
            let Some((last, history)) = p.prompt.split_last() else {
                return Err("the prompt has no turns".into());
            };
            if last.role != Role::User {
                return Err("the prompt must end with a user turn".into());
            }
            let mut pairs = Vec::new();
            for qa in history.chunks(2) {
                match qa {
                    [q, a] if q.role == Role::User && a.role == Role::Assistant => pairs.push(
                        Value::Array(vec![q.content.clone().into(), a.content.clone().into()]),
                    ),
                    _ => return Err("the Alpaca layout needs user and assistant turns in alternation (save as TRL (messages))".into()),
                }
            }
            o.insert(m.prompt.clone(), Value::String(last.content.clone()));
            o.insert(m.query.clone(), Value::String(String::new()));
            if let Some(s) = &p.system {
                o.insert(m.system.clone(), Value::String(s.clone()));
            }
            if !pairs.is_empty() {
                o.insert(m.history.clone(), Value::Array(pairs));
            }
            o.insert(
                f.chosen_key.clone(),
                single_text(&p.chosen, "chosen")?.into(),
            );
            o.insert(
                f.rejected_key.clone(),
                single_text(&p.rejected, "rejected")?.into(),
            );
        }
    }
    for (k, v) in &p.meta {
        if !o.contains_key(k) {
            o.insert(k.clone(), v.clone());
        }
    }
    Ok(Value::Object(o))
}

/// The bytes of `pairs` in `format`; a pair the layout cannot hold is an error naming
/// the file and the record.
pub(crate) fn write_bytes(
    pairs: &[PreferencePair],
    format: PreferenceFormat,
    path: &Path,
) -> Result<Vec<u8>, DataError> {
    let values = pairs
        .iter()
        .enumerate()
        .map(|(i, p)| write_record(p, &format).map_err(|msg| record_err(path, i, None, msg)))
        .collect::<Result<Vec<_>, _>>()?;
    let to_err = |e: serde_json::Error| DataError::Other(format!("{}: {e}", path.display()));
    match format.encoding {
        Encoding::JsonLines => {
            let mut out = Vec::new();
            for v in &values {
                out.extend(serde_json::to_vec(v).map_err(to_err)?);
                out.push(b'\n');
            }
            Ok(out)
        }
        _ => {
            let mut out = serde_json::to_vec_pretty(&values).map_err(to_err)?;
            out.push(b'\n');
            Ok(out)
        }
    }
}

/// A `ranking: true` entry of a LLaMA-Factory `dataset_info.json`: its file (relative to
/// the JSON's folder) and the format its `formatting`, `columns` and `tags` describe.
pub(crate) fn dataset_info_entry(
    info: &Path,
    name: &str,
) -> Result<(PathBuf, PreferenceFormat), DataError> {
    let bytes = std::fs::read(info).map_err(|e| DataError::io(info, e))?;
    let root: Value = serde_json::from_slice(strip_bom(&bytes)).map_err(|e| DataError::Json {
        path: info.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })?;
    let entry_err = |message: String| DataError::Entry {
        path: info.to_path_buf(),
        entry: name.to_string(),
        message,
    };
    let e = root
        .get(name)
        .ok_or_else(|| entry_err("no such entry".into()))?
        .as_object()
        .ok_or_else(|| entry_err("an entry must be a JSON object".into()))?;
    if e.get("ranking").and_then(Value::as_bool) != Some(true) {
        return Err(entry_err(
            "not preference data (`ranking` is not true); open it as instruction data".into(),
        ));
    }
    let file_name = e
        .get("file_name")
        .and_then(Value::as_str)
        .ok_or_else(|| entry_err("no local `file_name`".into()))?;
    let file = info.parent().unwrap_or(Path::new(".")).join(file_name);
    if !file.is_file() {
        return Err(entry_err(format!(
            "`file_name` {file_name:?} resolves to {}, which is not a file",
            file.display()
        )));
    }
    let layout = match e.get("formatting").and_then(Value::as_str) {
        None | Some("alpaca") => PreferenceLayout::AlpacaRanking,
        Some("sharegpt") => PreferenceLayout::ShareGptRanking,
        Some(other) => {
            return Err(entry_err(format!(
                "unknown formatting `{other}` (LLaMA-Factory knows `alpaca` and `sharegpt`)"
            )))
        }
    };
    let mut f = PreferenceFormat::new(layout, Encoding::Json);
    for section in ["columns", "tags"] {
        let Some(sec) = e.get(section) else { continue };
        let sec = sec
            .as_object()
            .ok_or_else(|| entry_err(format!("`{section}` must be an object")))?;
        for (k, v) in sec {
            let v = v
                .as_str()
                .ok_or_else(|| entry_err(format!("`{section}.{k}` must be text")))?
                .to_string();
            let m = &mut f.mapping;
            match k.as_str() {
                "prompt" => m.prompt = v,
                "query" => m.query = v,
                "history" => m.history = v,
                "messages" => m.messages = v,
                "system" => m.system = v,
                "chosen" => f.chosen_key = v,
                "rejected" => f.rejected_key = v,
                "role_tag" => m.role_tag = v,
                "content_tag" => m.content_tag = v,
                "user_tag" => m.user_tag = v,
                "assistant_tag" => m.assistant_tag = v,
                "observation_tag" => m.observation_tag = v,
                "function_tag" => m.function_tag = v,
                "system_tag" => m.system_tag = v,
                _ => {}
            }
        }
    }
    Ok((file, f))
}

/// The `dataset_info.json` entry LLaMA-Factory needs to read a file written in `f`
/// (`file_name` relative to the JSON's folder); `None` for TRL's layouts.
pub fn dataset_info_value(file_name: &str, f: &PreferenceFormat) -> Option<Value> {
    let m = &f.mapping;
    let s = |x: &str| Value::String(x.to_string());
    let mut columns = Map::new();
    let mut e = Map::new();
    e.insert("file_name".into(), s(file_name));
    e.insert("ranking".into(), Value::Bool(true));
    match f.layout {
        PreferenceLayout::ShareGptRanking => {
            e.insert("formatting".into(), s("sharegpt"));
            columns.insert("messages".into(), s(&m.messages));
            columns.insert("system".into(), s(&m.system));
            let mut tags = Map::new();
            for (k, v) in [
                ("role_tag", &m.role_tag),
                ("content_tag", &m.content_tag),
                ("user_tag", &m.user_tag),
                ("assistant_tag", &m.assistant_tag),
                ("observation_tag", &m.observation_tag),
                ("function_tag", &m.function_tag),
                ("system_tag", &m.system_tag),
            ] {
                tags.insert(k.into(), s(v));
            }
            e.insert("tags".into(), Value::Object(tags));
        }
        PreferenceLayout::AlpacaRanking => {
            e.insert("formatting".into(), s("alpaca"));
            columns.insert("prompt".into(), s(&m.prompt));
            columns.insert("query".into(), s(&m.query));
            columns.insert("history".into(), s(&m.history));
            columns.insert("system".into(), s(&m.system));
        }
        _ => return None,
    }
    columns.insert("chosen".into(), s(&f.chosen_key));
    columns.insert("rejected".into(), s(&f.rejected_key));
    e.insert("columns".into(), Value::Object(columns));
    Some(Value::Object(e))
}
