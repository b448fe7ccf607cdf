//! Errors that stop a load or save ([`DataError`]) and problems that flag a record but let
//! loading go on ([`Problem`]), each with the file, line or record, and field it concerns.

use std::fmt;
use std::path::PathBuf;

use serde::Serialize;

/// An error that stops an operation on a whole file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The I/O error is part of the message, not a separate source, so that a report of
    /// the whole chain (`{:#}`) does not repeat it.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}:{line}:{column}: invalid JSON: {message}")]
    Json {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{path}: cannot tell the dataset format: {reason}")]
    UnknownFormat { path: PathBuf, reason: String },
    #[error("{path}: this is a LLaMA-Factory dataset_info.json; pick one of its entries ({})", entries.join(", "))]
    NeedsEntry { path: PathBuf, entries: Vec<String> },
    #[error("{path}: no entry named `{name}` (entries with a local file: {})", entries.join(", "))]
    NoSuchEntry {
        path: PathBuf,
        name: String,
        entries: Vec<String>,
    },
    #[error("{path}: entry `{entry}`: {message}")]
    Entry {
        path: PathBuf,
        entry: String,
        message: String,
    },
    #[error("{path}: record {record}{}: {message}", field.as_ref().map(|f| format!(", field `{f}`")).unwrap_or_default())]
    Record {
        path: PathBuf,
        record: usize,
        field: Option<String>,
        message: String,
    },
    /// A file that holds no records: no bytes, only whitespace, an empty array, a CSV
    /// header with no rows, a Parquet file with no rows.
    #[error("{path}: contains no records ({what})")]
    Empty { path: PathBuf, what: &'static str },
    #[error("{path}: CSV: {message}")]
    Csv { path: PathBuf, message: String },
    #[error("{path}: Parquet: {message}")]
    Parquet { path: PathBuf, message: String },
    #[error("{path}: recovery file: {message}")]
    Recovery { path: PathBuf, message: String },
    #[error("{0}")]
    Other(String),
}

impl From<crate::fsio::WriteError> for DataError {
    fn from(e: crate::fsio::WriteError) -> Self {
        DataError::Io {
            path: e.path,
            error: e.error,
        }
    }
}

impl DataError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DataError::Io {
            path: path.into(),
            error: source,
        }
    }
}

/// How bad a problem is: errors make a record invalid, warnings do not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Warning,
    Error,
}

/// What kind of problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    /// The record is not valid JSON (it is kept as a placeholder with its raw text).
    InvalidJson,
    /// A field has the wrong JSON type.
    WrongType,
    /// A required field is missing.
    MissingField,
    /// An instruction, output or turn is empty.
    EmptyField,
    /// Turns that do not alternate between user and assistant.
    NotAlternating,
    /// The conversation does not end with an assistant turn.
    NoFinalAssistant,
    /// A role the studio does not know.
    UnknownRole,
    /// Text that is not valid UTF-8 (read with replacement characters).
    NotUtf8,
    /// A key the studio does not know in a configuration (e.g. `format` in dataset_info.json).
    UnknownKey,
    /// Something the target format cannot express.
    Unsupported,
}

/// One problem of one record (or of the file's configuration when `record` is `None`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    pub file: PathBuf,
    /// 1-based line where the record starts (JSON, JSONL and CSV files), when known.
    pub line: Option<usize>,
    /// 0-based index of the record in the dataset.
    pub record: Option<usize>,
    /// The field, e.g. `output`, `conversations[3].from`.
    pub field: Option<String>,
    pub kind: ProblemKind,
    pub severity: Severity,
    pub message: String,
}

impl Problem {
    pub(crate) fn new(
        kind: ProblemKind,
        field: Option<String>,
        message: impl Into<String>,
    ) -> Self {
        let severity = match kind {
            ProblemKind::UnknownKey => Severity::Warning,
            _ => Severity::Error,
        };
        Problem {
            file: PathBuf::new(),
            line: None,
            record: None,
            field,
            kind,
            severity,
            message: message.into(),
        }
    }

    pub(crate) fn warning(mut self) -> Self {
        self.severity = Severity::Warning;
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if let Some(r) = self.record {
            write!(f, ": record {r}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ", field `{field}`")?;
        }
        let sev = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, ": {sev}: {}", self.message)
    }
}
