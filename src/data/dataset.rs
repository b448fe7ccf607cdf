//! The [`Dataset`]: records with their source lines and load-time problems, the source file
//! and format, validation over all records, and atomic saving (temporary file renamed into
//! place, the previous file kept as `.bak`).

use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::edit::History;
use super::error::{DataError, Problem};
use super::formats::{self, Encoding, Format, Mapping, ReadOutput, Schema};
use super::record::Conversation;
use super::validate;

/// A loaded (or new) dataset.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The records. Edit them through [`Dataset::apply`] to get undo/redo and dirty
    /// tracking; direct changes are allowed but are not undoable.
    pub conversations: Vec<Conversation>,
    /// 1-based source line of each record (None for records added since loading).
    pub(crate) lines: Vec<Option<usize>>,
    /// Problems found while reading each record; cleared when the record is edited.
    pub(crate) load_problems: Vec<Vec<Problem>>,
    pub(crate) path: Option<PathBuf>,
    pub(crate) format: Format,
    pub(crate) mapping: Mapping,
    /// Problems of the file or its configuration rather than of one record.
    pub file_problems: Vec<Problem>,
    /// The dataset_info.json and entry this came from, if any.
    pub(crate) entry: Option<(PathBuf, String)>,
    pub(crate) history: History,
}

impl Default for Dataset {
    fn default() -> Self {
        Dataset::new(Format::ALPACA)
    }
}

impl Dataset {
    /// An empty dataset that will be saved in `format`.
    pub fn new(format: Format) -> Self {
        Dataset {
            conversations: Vec::new(),
            lines: Vec::new(),
            load_problems: Vec::new(),
            path: None,
            format,
            mapping: Mapping::default_for(format.schema),
            file_problems: Vec::new(),
            entry: None,
            history: History::default(),
        }
    }

    /// A dataset of the given records (no source file).
    pub fn from_records(records: Vec<Conversation>, format: Format) -> Self {
        let n = records.len();
        Dataset {
            conversations: records,
            lines: vec![None; n],
            load_problems: vec![Vec::new(); n],
            ..Dataset::new(format)
        }
    }

    /// Loads a file; see [`crate::data::load`].
    pub fn load(path: &Path, format: Option<Format>) -> Result<Self, DataError> {
        let out = formats::read_path(path, format, None)?;
        Dataset::from_read(out, Some(path))
    }

    pub(crate) fn from_read(out: ReadOutput, path: Option<&Path>) -> Result<Self, DataError> {
        let path = path.map(Path::to_path_buf);
        Ok(Dataset {
            conversations: out.records,
            lines: out.lines,
            load_problems: out.problems,
            path,
            format: out.format,
            mapping: out.mapping,
            file_problems: Vec::new(),
            entry: None,
            history: History::default(),
        })
    }

    pub fn records(&self) -> &[Conversation] {
        &self.conversations
    }
    pub fn get(&self, i: usize) -> Option<&Conversation> {
        self.conversations.get(i)
    }
    pub fn len(&self) -> usize {
        self.conversations.len()
    }
    pub fn is_empty(&self) -> bool {
        self.conversations.is_empty()
    }
    /// Takes the records out (e.g. for the trainer).
    pub fn into_records(self) -> Vec<Conversation> {
        self.conversations
    }
    /// The file the records were read from (or last saved to).
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
    /// The format the records were read in (and are saved in by default).
    pub fn format(&self) -> Format {
        self.format
    }
    /// The column and tag names of the source.
    pub fn mapping(&self) -> &Mapping {
        &self.mapping
    }
    /// The dataset_info.json and entry name this dataset was loaded from, if any.
    pub fn dataset_info_entry(&self) -> Option<(&Path, &str)> {
        self.entry.as_ref().map(|(p, n)| (p.as_path(), n.as_str()))
    }
    /// 1-based source line of record `i`, when known.
    pub fn line_of(&self, i: usize) -> Option<usize> {
        self.lines.get(i).copied().flatten()
    }

    /// Every problem: the file's own, then each record's (read-time and content checks), in
    /// record order, with file, line, record index and field filled in.
    pub fn problems(&self) -> Vec<Problem> {
        let file = self.path.clone().unwrap_or_default();
        let per_record: Vec<Vec<Problem>> = (0..self.conversations.len())
            .into_par_iter()
            .map(|i| self.record_problems_with(i, &file))
            .collect();
        let mut out = self.file_problems.clone();
        out.extend(per_record.into_iter().flatten());
        out
    }

    /// The problems of one record.
    pub fn record_problems(&self, i: usize) -> Vec<Problem> {
        let file = self.path.clone().unwrap_or_default();
        self.record_problems_with(i, &file)
    }

    fn record_problems_with(&self, i: usize, file: &Path) -> Vec<Problem> {
        let Some(c) = self.conversations.get(i) else {
            return Vec::new();
        };
        let mut ps: Vec<Problem> = self.load_problems.get(i).cloned().unwrap_or_default();
        ps.extend(validate::check(c, self.format.schema, &self.mapping));
        for p in &mut ps {
            p.file = file.to_path_buf();
            p.record = Some(i);
            if p.line.is_none() {
                p.line = self.line_of(i);
            }
        }
        ps
    }

    /// Indices of records with at least one error.
    pub fn invalid_records(&self) -> Vec<usize> {
        (0..self.conversations.len())
            .into_par_iter()
            .filter(|&i| self.record_problems(i).iter().any(Problem::is_error))
            .collect()
    }

    /// The bytes of the records in `format` (`None`: the loaded format).
    pub fn to_bytes(&self, format: Option<Format>, path: &Path) -> Result<Vec<u8>, DataError> {
        let format = format.unwrap_or(self.format);
        let mapping = if format.schema == self.format.schema {
            self.mapping.clone()
        } else {
            Mapping::default_for(format.schema)
        };
        formats::write_bytes(&self.conversations, format, &mapping, path)
    }

    /// Writes the records to `path` atomically without touching the dataset's state: a
    /// temporary file in the same folder, flushed and renamed into place; an existing file
    /// is kept as `<path>.bak` first. `format` `None` keeps the loaded format.
    pub fn write(&self, path: &Path, format: Option<Format>) -> Result<(), DataError> {
        let bytes = self.to_bytes(format, path)?;
        write_keeping_backup(path, &bytes)
    }

    /// Saves (like [`Dataset::write`]), then marks the dataset clean, makes `path` its file
    /// and removes the autosave recovery file.
    pub fn save(&mut self, path: &Path, format: Option<Format>) -> Result<(), DataError> {
        self.write(path, format)?;
        if let Some(old) = self.recovery_path() {
            let _ = std::fs::remove_file(old);
        }
        if let Some(f) = format {
            if f.schema != self.format.schema {
                self.mapping = Mapping::default_for(f.schema);
            }
            self.format = f;
        }
        self.path = Some(path.to_path_buf());
        self.history.mark_saved();
        Ok(())
    }

    /// A new dataset of the records at `indices` (in that order), same format (for splits).
    pub fn subset(&self, indices: &[usize]) -> Dataset {
        let mut d = Dataset::new(self.format);
        d.mapping = self.mapping.clone();
        for &i in indices {
            if let Some(c) = self.conversations.get(i) {
                d.conversations.push(c.clone());
                d.lines.push(self.lines.get(i).copied().flatten());
                d.load_problems
                    .push(self.load_problems.get(i).cloned().unwrap_or_default());
            }
        }
        d
    }

    /// The default output format for a schema name given on the command line.
    pub fn default_format_for(schema: Schema) -> Format {
        match schema {
            Schema::Alpaca => Format::ALPACA,
            Schema::ShareGpt => Format::SHAREGPT,
            Schema::OpenAi => Format::new(Schema::OpenAi, Encoding::JsonLines),
        }
    }
}

/// Writes `bytes` to `path` atomically ([`crate::fsio`]); an existing file is first kept
/// as `<path>.bak` (itself written atomically, so a crash leaves a whole backup or the
/// previous one).
pub(crate) fn write_keeping_backup(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    match std::fs::File::open(path) {
        Ok(mut old) => {
            crate::fsio::write_file_atomic(&backup_path(path), |w| {
                std::io::copy(&mut old, w).map(|_| ())
            })?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(DataError::io(path, e)),
    }
    Ok(crate::fsio::write_bytes_atomic(path, bytes)?)
}

/// `<path>.bak`.
pub fn backup_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".bak");
    PathBuf::from(s)
}
