//! The verifiable checks of an eval suite, in the spirit of IFEval's verifiable
//! instructions: each is a rule a reply passes or fails with a short reason, decided from
//! the reply's text alone. A check is written in a suite line as a JSON object whose
//! `type` names it (`{"type": "contains", "text": "Paris"}`); [`Check::validate`] rejects
//! what would make a rule meaningless (an empty text, a regex that does not compile, bounds
//! that exclude every count, a schema that is not one).

use serde::{Deserialize, Serialize};

use super::text_counts;

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// Inclusive bounds on a count; either may be left out, not both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Bounds {
    min: Option<usize>,
    max: Option<usize>,
}

impl Bounds {
    fn validate(&self) -> Result<(), String> {
        match (self.min, self.max) {
            (None, None) => Err("give `min`, `max` or both".into()),
            (Some(lo), Some(hi)) if lo > hi => Err(format!("`min` {lo} is above `max` {hi}")),
            _ => Ok(()),
        }
    }

    fn holds(&self, n: usize) -> bool {
        self.min.is_none_or(|lo| n >= lo) && self.max.is_none_or(|hi| n <= hi)
    }

    fn describe(&self) -> String {
        match (self.min, self.max) {
            (Some(lo), Some(hi)) if lo == hi => format!("exactly {lo}"),
            (Some(lo), Some(hi)) => format!("{lo} to {hi}"),
            (Some(lo), None) => format!("at least {lo}"),
            (None, Some(hi)) => format!("at most {hi}"),
            (None, None) => "any number".into(),
        }
    }
}

/// One verifiable check. Text comparisons are case-sensitive unless `case_sensitive` is
/// false; `exact`, `starts_with` and `ends_with` compare the reply with its surrounding
/// whitespace trimmed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Check {
    /// The reply contains `text`.
    Contains {
        text: String,
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        case_sensitive: bool,
    },
    /// The reply does not contain `text`.
    NotContains {
        text: String,
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        case_sensitive: bool,
    },
    /// The regular expression (Rust `regex` syntax; `(?i)` for case-insensitive) matches
    /// somewhere in the reply.
    Regex { pattern: String },
    /// The trimmed reply is `text`.
    Exact {
        text: String,
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        case_sensitive: bool,
    },
    /// The trimmed reply starts with `text`.
    StartsWith {
        text: String,
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        case_sensitive: bool,
    },
    /// The trimmed reply ends with `text`.
    EndsWith {
        text: String,
        #[serde(default = "yes", skip_serializing_if = "is_true")]
        case_sensitive: bool,
    },
    /// The reply is one JSON value (a Markdown code fence around it is allowed).
    ValidJson,
    /// The reply is JSON (as for `valid_json`) that the JSON Schema `schema` accepts.
    JsonSchema { schema: serde_json::Value },
    /// Words: whitespace-separated tokens with a letter or digit in them.
    WordCount {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<usize>,
    },
    /// Sentences: text ending at `.`, `!` or `?` (or the end), with a letter or digit.
    SentenceCount {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<usize>,
    },
    /// Bullets: lines starting with `*`, `-`, `+` or `•` and a space.
    BulletCount {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<usize>,
    },
    /// Paragraphs: non-blank blocks separated by blank lines (or a `***` line).
    ParagraphCount {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<usize>,
    },
    /// The reply has letters and none of them is upper-case.
    Lowercase,
    /// The reply has letters and none of them is lower-case.
    Uppercase,
    /// The reply has no comma.
    NoCommas,
}

/// Every check type, as a suite spells it.
pub const CHECK_TYPES: &[&str] = &[
    "contains",
    "not_contains",
    "regex",
    "exact",
    "starts_with",
    "ends_with",
    "valid_json",
    "json_schema",
    "word_count",
    "sentence_count",
    "bullet_count",
    "paragraph_count",
    "lowercase",
    "uppercase",
    "no_commas",
];

/// Whether a reply passed a check, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub passed: bool,
    pub reason: String,
}

impl Outcome {
    fn pass(reason: impl Into<String>) -> Self {
        Outcome {
            passed: true,
            reason: reason.into(),
        }
    }
    fn fail(reason: impl Into<String>) -> Self {
        Outcome {
            passed: false,
            reason: reason.into(),
        }
    }
    fn either(passed: bool, reason: impl Into<String>) -> Self {
        Outcome {
            passed,
            reason: reason.into(),
        }
    }
}

/// A text shortened for a reason line.
fn quote(s: &str) -> String {
    const MAX: usize = 40;
    let mut out: String = s.chars().take(MAX).collect();
    if s.chars().count() > MAX {
        out.push('…');
    }
    format!("{out:?}")
}

fn fold(s: &str, case_sensitive: bool) -> std::borrow::Cow<'_, str> {
    if case_sensitive {
        s.into()
    } else {
        s.to_lowercase().into()
    }
}

/// The JSON value a reply holds: the trimmed text, or the inside of a Markdown code fence
/// (```` ```json … ``` ````) around all of it.
pub fn reply_json(reply: &str) -> Result<serde_json::Value, String> {
    let t = reply.trim();
    let inner = t
        .strip_prefix("```")
        .and_then(|rest| rest.strip_suffix("```"))
        .map(|body| {
            // The fence's info string (`json`) runs to the end of its line.
            match body.split_once('\n') {
                Some((info, code)) if !info.trim().contains(char::is_whitespace) => code,
                _ => body,
            }
        })
        .unwrap_or(t);
    serde_json::from_str(inner.trim()).map_err(|e| format!("not JSON: {e}"))
}

impl Check {
    /// The check's type as a suite spells it.
    pub fn kind(&self) -> &'static str {
        match self {
            Check::Contains { .. } => "contains",
            Check::NotContains { .. } => "not_contains",
            Check::Regex { .. } => "regex",
            Check::Exact { .. } => "exact",
            Check::StartsWith { .. } => "starts_with",
            Check::EndsWith { .. } => "ends_with",
            Check::ValidJson => "valid_json",
            Check::JsonSchema { .. } => "json_schema",
            Check::WordCount { .. } => "word_count",
            Check::SentenceCount { .. } => "sentence_count",
            Check::BulletCount { .. } => "bullet_count",
            Check::ParagraphCount { .. } => "paragraph_count",
            Check::Lowercase => "lowercase",
            Check::Uppercase => "uppercase",
            Check::NoCommas => "no_commas",
        }
    }

    /// Rejects a check that cannot mean anything: an empty text, a regex that does not
    /// compile, bounds with neither end or with `min` above `max`, an invalid schema.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Check::Contains { text, .. }
            | Check::NotContains { text, .. }
            | Check::StartsWith { text, .. }
            | Check::EndsWith { text, .. } => {
                if text.is_empty() {
                    return Err("`text` is empty".into());
                }
                Ok(())
            }
            Check::Exact { .. } => Ok(()),
            Check::Regex { pattern } => regex::Regex::new(pattern)
                .map(|_| ())
                .map_err(|e| format!("the pattern does not compile: {e}")),
            Check::JsonSchema { schema } => jsonschema::validator_for(schema)
                .map(|_| ())
                .map_err(|e| format!("the schema is not valid: {e}")),
            Check::WordCount { min, max }
            | Check::SentenceCount { min, max }
            | Check::BulletCount { min, max }
            | Check::ParagraphCount { min, max } => Bounds {
                min: *min,
                max: *max,
            }
            .validate(),
            Check::ValidJson | Check::Lowercase | Check::Uppercase | Check::NoCommas => Ok(()),
        }
    }

    /// Decides the check on `reply`.
    pub fn evaluate(&self, reply: &str) -> Outcome {
        match self {
            Check::Contains {
                text,
                case_sensitive,
            } => {
                let found = fold(reply, *case_sensitive).contains(&*fold(text, *case_sensitive));
                if found {
                    Outcome::pass(format!("contains {}", quote(text)))
                } else {
                    Outcome::fail(format!("{} not found", quote(text)))
                }
            }
            Check::NotContains {
                text,
                case_sensitive,
            } => {
                let found = fold(reply, *case_sensitive).contains(&*fold(text, *case_sensitive));
                if found {
                    Outcome::fail(format!("contains {}", quote(text)))
                } else {
                    Outcome::pass(format!("{} absent", quote(text)))
                }
            }
            Check::Regex { pattern } => match regex::Regex::new(pattern) {
                Ok(re) => match re.find(reply) {
                    Some(m) => Outcome::pass(format!("matched {}", quote(m.as_str()))),
                    None => Outcome::fail(format!("no match for /{pattern}/")),
                },
                Err(e) => Outcome::fail(format!("the pattern does not compile: {e}")),
            },
            Check::Exact {
                text,
                case_sensitive,
            } => {
                let same =
                    fold(reply.trim(), *case_sensitive) == fold(text.trim(), *case_sensitive);
                if same {
                    Outcome::pass(format!("is {}", quote(text)))
                } else {
                    Outcome::fail(format!("is {}, not {}", quote(reply.trim()), quote(text)))
                }
            }
            Check::StartsWith {
                text,
                case_sensitive,
            } => {
                let ok =
                    fold(reply.trim(), *case_sensitive).starts_with(&*fold(text, *case_sensitive));
                Outcome::either(
                    ok,
                    if ok {
                        format!("starts with {}", quote(text))
                    } else {
                        format!("does not start with {}", quote(text))
                    },
                )
            }
            Check::EndsWith {
                text,
                case_sensitive,
            } => {
                let ok =
                    fold(reply.trim(), *case_sensitive).ends_with(&*fold(text, *case_sensitive));
                Outcome::either(
                    ok,
                    if ok {
                        format!("ends with {}", quote(text))
                    } else {
                        format!("does not end with {}", quote(text))
                    },
                )
            }
            Check::ValidJson => match reply_json(reply) {
                Ok(_) => Outcome::pass("valid JSON"),
                Err(e) => Outcome::fail(e),
            },
            Check::JsonSchema { schema } => {
                let value = match reply_json(reply) {
                    Ok(v) => v,
                    Err(e) => return Outcome::fail(e),
                };
                match jsonschema::validator_for(schema) {
                    Ok(validator) => match validator.validate(&value) {
                        Ok(()) => Outcome::pass("matches the schema"),
                        Err(e) => {
                            let at = e.instance_path().to_string();
                            if at.is_empty() {
                                Outcome::fail(format!("schema: {e}"))
                            } else {
                                Outcome::fail(format!("schema at {at}: {e}"))
                            }
                        }
                    },
                    Err(e) => Outcome::fail(format!("the schema is not valid: {e}")),
                }
            }
            Check::WordCount { min, max } => count_outcome(
                text_counts::words(reply),
                ("word", "words"),
                Bounds {
                    min: *min,
                    max: *max,
                },
            ),
            Check::SentenceCount { min, max } => count_outcome(
                text_counts::sentences(reply),
                ("sentence", "sentences"),
                Bounds {
                    min: *min,
                    max: *max,
                },
            ),
            Check::BulletCount { min, max } => count_outcome(
                text_counts::bullets(reply),
                ("bullet", "bullets"),
                Bounds {
                    min: *min,
                    max: *max,
                },
            ),
            Check::ParagraphCount { min, max } => count_outcome(
                text_counts::paragraphs(reply),
                ("paragraph", "paragraphs"),
                Bounds {
                    min: *min,
                    max: *max,
                },
            ),
            Check::Lowercase => {
                if !reply.chars().any(char::is_alphabetic) {
                    Outcome::fail("no letters")
                } else if let Some(c) = reply.chars().find(|c| c.is_uppercase()) {
                    Outcome::fail(format!("has upper-case {c:?}"))
                } else {
                    Outcome::pass("all lower-case")
                }
            }
            Check::Uppercase => {
                if !reply.chars().any(char::is_alphabetic) {
                    Outcome::fail("no letters")
                } else if let Some(c) = reply.chars().find(|c| c.is_lowercase()) {
                    Outcome::fail(format!("has lower-case {c:?}"))
                } else {
                    Outcome::pass("all upper-case")
                }
            }
            Check::NoCommas => {
                let n = reply.matches(',').count();
                Outcome::either(
                    n == 0,
                    match n {
                        0 => "no commas".to_string(),
                        1 => "1 comma".to_string(),
                        n => format!("{n} commas"),
                    },
                )
            }
        }
    }
}

fn count_outcome(n: usize, (one, many): (&str, &str), bounds: Bounds) -> Outcome {
    let unit = if n == 1 { one } else { many };
    Outcome::either(
        bounds.holds(n),
        format!("{n} {unit}, expected {}", bounds.describe()),
    )
}
