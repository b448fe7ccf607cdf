//! The suite file: JSON lines, one prompt each, with the checks its reply must pass.
//!
//! ```text
//! {"id": "capital", "prompt": "What is the capital of France?", "checks": [{"type": "contains", "text": "Paris"}]}
//! {"id": "chat", "system": "Answer briefly.", "messages": [{"role": "user", "content": "Hi"}], "checks": [{"type": "word_count", "max": 20}]}
//! ```
//!
//! Each line has an `id` (a string or an integer, unique in the file), either a `prompt` or
//! OpenAI-style `messages` (ending with a user turn), an optional `system` prompt, the
//! `checks` (at least one; see [`Check`]) and an optional `meta` the studio ignores. Blank
//! lines are skipped. Every error names the file and the line; nothing here panics on what
//! a file holds. The built-in suite (`builtin`) is compiled into the binary.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::check::{Check, CHECK_TYPES};
use crate::data::contamination::Reference;

/// The name that selects the built-in suite wherever a suite file is asked for.
pub const BUILTIN_NAME: &str = "builtin";

/// The built-in suite: short prompts with checks a small instruction model can pass.
pub const BUILTIN: &str = include_str!("../../assets/eval/builtin.jsonl");

/// Why a suite could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SuiteError {
    #[error("reading the suite {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{file}:{line}: {message}")]
    Line {
        file: String,
        line: usize,
        message: String,
    },
    #[error("{file}: the suite has no prompts (each line is a JSON object with `id`, `prompt` or `messages`, and `checks`)")]
    Empty { file: String },
}

/// One turn of a prompt given as messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuiteMessage {
    pub role: String,
    pub content: String,
}

/// What the model is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SuiteInput {
    Prompt(String),
    Messages(Vec<SuiteMessage>),
}

/// One prompt of a suite and the checks its reply must pass.
#[derive(Debug, Clone, PartialEq)]
pub struct SuiteItem {
    pub id: String,
    /// The line of the suite file it came from (1-based).
    pub line: usize,
    pub system: Option<String>,
    pub input: SuiteInput,
    pub checks: Vec<Check>,
}

impl SuiteItem {
    /// The conversation to send, as `(role, content)` pairs: the system prompt first when
    /// there is one, ending with the user turn.
    pub fn turns(&self) -> Vec<(&str, &str)> {
        let mut out = Vec::new();
        if let Some(s) = &self.system {
            out.push(("system", s.as_str()));
        }
        match &self.input {
            SuiteInput::Prompt(p) => out.push(("user", p.as_str())),
            SuiteInput::Messages(ms) => {
                out.extend(ms.iter().map(|m| (m.role.as_str(), m.content.as_str())))
            }
        }
        out
    }

    /// The last user turn's text: the request a reply answers.
    pub fn last_user_text(&self) -> &str {
        self.turns()
            .into_iter()
            .rev()
            .find(|(role, _)| *role == "user")
            .map_or("", |(_, t)| t)
    }
}

/// A parsed suite.
#[derive(Debug, Clone, PartialEq)]
pub struct Suite {
    /// The file it came from, or `builtin`.
    pub name: String,
    pub items: Vec<SuiteItem>,
}

/// A suite line as written, before its checks are read one by one.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawItem {
    id: Value,
    #[serde(default)]
    prompt: Option<String>,
    #[serde(default)]
    messages: Option<Vec<SuiteMessage>>,
    #[serde(default)]
    system: Option<String>,
    checks: Vec<Value>,
    #[serde(default)]
    #[allow(dead_code)]
    meta: Option<Value>,
}

impl Suite {
    /// The suite `spec` names: `builtin`, or a JSONL file.
    pub fn load(spec: &str) -> Result<Suite, SuiteError> {
        if spec == BUILTIN_NAME {
            return Suite::builtin();
        }
        Suite::read(Path::new(spec))
    }

    /// The built-in suite.
    pub fn builtin() -> Result<Suite, SuiteError> {
        Suite::parse(BUILTIN, BUILTIN_NAME)
    }

    /// Reads a suite file.
    pub fn read(path: &Path) -> Result<Suite, SuiteError> {
        let text = std::fs::read_to_string(path).map_err(|source| SuiteError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Suite::parse(&text, &path.display().to_string())
    }

    /// Parses suite text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Suite, SuiteError> {
        let mut items: Vec<SuiteItem> = Vec::new();
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for (i, raw_line) in text.lines().enumerate() {
            let line = i + 1;
            if raw_line.trim().is_empty() {
                continue;
            }
            let err = |message: String| SuiteError::Line {
                file: file.to_string(),
                line,
                message,
            };
            let item = parse_line(raw_line, line).map_err(err)?;
            if let Some(first) = items.iter().find(|it| it.id == item.id) {
                return Err(err(format!(
                    "the id `{}` is also on line {}",
                    item.id, first.line
                )));
            }
            items.push(item);
        }
        if items.is_empty() {
            return Err(SuiteError::Empty {
                file: file.to_string(),
            });
        }
        Ok(Suite {
            name: file.to_string(),
            items,
        })
    }

    /// The prompts as the other side of a contamination check: each item's id and the
    /// texts of its turns.
    pub fn references(&self) -> Vec<Reference> {
        self.items
            .iter()
            .map(|it| Reference {
                id: it.id.clone(),
                texts: it.turns().into_iter().map(|(_, t)| t.to_string()).collect(),
            })
            .collect()
    }

    /// How many checks the suite holds.
    pub fn check_count(&self) -> usize {
        self.items.iter().map(|it| it.checks.len()).sum()
    }
}

/// Whether the JSONL file at `path` looks like a suite (its first non-blank line is an
/// object with `checks`) rather than a dataset. Reads no further than that line.
pub fn looks_like_suite(path: &Path) -> bool {
    use std::io::BufRead;
    let Ok(file) = std::fs::File::open(path) else {
        return false;
    };
    std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .find(|l| !l.trim().is_empty())
        .and_then(|l| serde_json::from_str::<Value>(l.trim_start_matches('\u{feff}')).ok())
        .is_some_and(|v| v.get("checks").is_some_and(Value::is_array))
}

fn parse_line(text: &str, line: usize) -> Result<SuiteItem, String> {
    let value: Value = serde_json::from_str(text)
        .map_err(|e| format!("not a JSON object: {e} (column {})", e.column()))?;
    if !value.is_object() {
        return Err(
            "expected a JSON object with `id`, `prompt` or `messages`, and `checks`".into(),
        );
    }
    let raw: RawItem = serde_json::from_value(value).map_err(|e| e.to_string())?;
    let id = match &raw.id {
        Value::String(s) if !s.trim().is_empty() => s.clone(),
        Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
        other => {
            return Err(format!(
                "`id` must be a non-empty string or an integer, not {other}"
            ))
        }
    };
    let input = match (raw.prompt, raw.messages) {
        (Some(_), Some(_)) => return Err(format!("`{id}`: give `prompt` or `messages`, not both")),
        (None, None) => return Err(format!("`{id}`: no `prompt` or `messages`")),
        (Some(p), None) => {
            if p.trim().is_empty() {
                return Err(format!("`{id}`: the prompt is empty"));
            }
            SuiteInput::Prompt(p)
        }
        (None, Some(ms)) => {
            check_messages(&ms, raw.system.is_some()).map_err(|m| format!("`{id}`: {m}"))?;
            SuiteInput::Messages(ms)
        }
    };
    if raw.checks.is_empty() {
        return Err(format!("`{id}`: `checks` is empty"));
    }
    let checks = raw
        .checks
        .into_iter()
        .enumerate()
        .map(|(k, v)| parse_check(v).map_err(|m| format!("`{id}`, check {}: {m}", k + 1)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(SuiteItem {
        id,
        line,
        system: raw.system,
        input,
        checks,
    })
}

fn check_messages(ms: &[SuiteMessage], has_system: bool) -> Result<(), String> {
    let Some(last) = ms.last() else {
        return Err("`messages` is empty".into());
    };
    for (i, m) in ms.iter().enumerate() {
        match m.role.as_str() {
            "user" | "assistant" => {}
            "system" if i == 0 && !has_system => {}
            "system" if has_system => {
                return Err("a system message and `system` both given".into());
            }
            "system" => return Err("a system message after the first".into()),
            other => {
                return Err(format!(
                    "message {}: unknown role `{other}` (system, user or assistant)",
                    i + 1
                ))
            }
        }
    }
    if last.role != "user" {
        return Err("the last message must be a user turn".into());
    }
    Ok(())
}

fn parse_check(v: Value) -> Result<Check, String> {
    let Some(obj) = v.as_object() else {
        return Err(format!("expected an object with a `type`, not {v}"));
    };
    let kind = match obj.get("type") {
        Some(Value::String(s)) => s.clone(),
        Some(other) => return Err(format!("`type` must be a string, not {other}")),
        None => return Err("no `type`".into()),
    };
    if !CHECK_TYPES.contains(&kind.as_str()) {
        return Err(format!(
            "unknown check type `{kind}` (known: {})",
            CHECK_TYPES.join(", ")
        ));
    }
    let check: Check = serde_json::from_value(v).map_err(|e| format!("`{kind}`: {e}"))?;
    check.validate().map_err(|e| format!("`{kind}`: {e}"))?;
    Ok(check)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_builtin_suite_parses() {
        let s = Suite::builtin().unwrap();
        assert!((15..=30).contains(&s.items.len()), "{}", s.items.len());
        let kinds: std::collections::BTreeSet<&str> = s
            .items
            .iter()
            .flat_map(|it| it.checks.iter().map(Check::kind))
            .collect();
        assert!(kinds.len() >= 10, "{kinds:?}");
    }
}
