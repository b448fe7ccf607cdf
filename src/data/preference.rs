//! Preference data: the normalized pair (`PreferencePair`: the conversation so far, a
//! chosen and a rejected reply, the fields the studio does not interpret) and the set a
//! file holds (`PreferenceSet`): loading, validation with file, line and record, edits
//! with undo and redo, and the atomic save that keeps `<name>.bak`. The file layouts
//! (TRL's and LLaMA-Factory's) are read and written by [`super::preference_formats`].

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::error::{DataError, Problem, ProblemKind};
use super::preference_formats::{self as pf, PreferenceFormat};
use super::record::{Message, Role};

/// One judgment: the same conversation answered twice, one reply preferred.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PreferencePair {
    pub system: Option<String>,
    /// The conversation so far; ends with the user turn both replies answer.
    pub prompt: Vec<Message>,
    /// The preferred reply (usually one assistant turn).
    pub chosen: Vec<Message>,
    /// The other reply.
    pub rejected: Vec<Message>,
    /// Every field of the source record the studio does not interpret, in source order
    /// (the A/B view's models, sampling settings and seed live here).
    pub meta: Map<String, Value>,
}

impl PreferencePair {
    /// A single-turn pair: one user prompt, one chosen and one rejected assistant reply.
    pub fn single_turn(prompt: &str, chosen: &str, rejected: &str) -> Self {
        PreferencePair {
            system: None,
            prompt: vec![Message::new(Role::User, prompt)],
            chosen: vec![Message::new(Role::Assistant, chosen)],
            rejected: vec![Message::new(Role::Assistant, rejected)],
            meta: Map::new(),
        }
    }

    /// The text of a reply's turns, joined by blank lines (for display and search).
    pub fn reply_text(reply: &[Message]) -> String {
        reply
            .iter()
            .map(|m| m.content.as_str())
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    /// The last user turn of the prompt (what the replies answer), or "".
    pub fn last_user_text(&self) -> &str {
        self.prompt
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map_or("", |m| m.content.as_str())
    }

    /// `(role, content)` pairs of the prompt followed by one reply, in chat-template order:
    /// the system prompt first when present.
    pub fn chat_messages<'a>(&'a self, reply: &'a [Message]) -> Vec<(&'static str, &'a str)> {
        let mut out = Vec::with_capacity(self.prompt.len() + reply.len() + 1);
        if let Some(s) = &self.system {
            out.push(("system", s.as_str()));
        }
        out.extend(
            self.prompt
                .iter()
                .chain(reply)
                .map(|m| (m.role.as_str(), m.content.as_str())),
        );
        out
    }

    /// Applies text replacements (e.g. `{{name}}`) to every turn; true when one changed.
    pub fn replace_text(&mut self, map: &[(String, String)]) -> bool {
        let mut changed = false;
        let mut fix = |s: &mut String| {
            for (from, to) in map {
                if !from.is_empty() && s.contains(from.as_str()) {
                    *s = s.replace(from.as_str(), to);
                    changed = true;
                }
            }
        };
        if let Some(s) = &mut self.system {
            fix(s);
        }
        for m in self
            .prompt
            .iter_mut()
            .chain(self.chosen.iter_mut())
            .chain(self.rejected.iter_mut())
        {
            fix(&mut m.content);
        }
        changed
    }

    /// This pair's problems (file, line and record are filled in by the set).
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Vec::new();
        let mut push = |kind, field: &str, msg: String| {
            out.push(Problem::new(kind, Some(field.to_string()), msg));
        };
        match self.prompt.last() {
            None => push(
                ProblemKind::MissingField,
                "prompt",
                "the prompt has no turns".into(),
            ),
            Some(m) if m.role != Role::User && m.role != Role::Tool => push(
                ProblemKind::NotAlternating,
                "prompt",
                format!(
                    "the prompt must end with a user (or tool) turn, not {}",
                    m.role
                ),
            ),
            _ => {}
        }
        for (i, m) in self.prompt.iter().enumerate() {
            if m.content.trim().is_empty() {
                push(
                    ProblemKind::EmptyField,
                    &format!("prompt[{i}]"),
                    "empty turn".into(),
                );
            }
        }
        for (name, reply) in [("chosen", &self.chosen), ("rejected", &self.rejected)] {
            match reply.first() {
                None => push(ProblemKind::MissingField, name, format!("no {name} reply")),
                Some(m) if !m.role.is_trained() => push(
                    ProblemKind::UnknownRole,
                    name,
                    format!(
                        "the {name} reply must start with an assistant turn, not {}",
                        m.role
                    ),
                ),
                _ => {}
            }
            if !reply.is_empty() && reply.iter().all(|m| m.content.trim().is_empty()) {
                push(
                    ProblemKind::EmptyField,
                    name,
                    format!("the {name} reply is empty"),
                );
            }
        }
        if !self.chosen.is_empty() && self.chosen == self.rejected {
            out.push(
                Problem::new(
                    ProblemKind::EmptyField,
                    Some("rejected".into()),
                    "chosen and rejected are the same reply; the pair teaches nothing",
                )
                .warning(),
            );
        }
        out
    }
}

/// One change to a set, undoable.
#[derive(Debug, Clone, PartialEq)]
pub enum PreferenceEdit {
    /// Replaces the pair at an index.
    Set(usize, PreferencePair),
    /// Inserts a pair at an index (`len` appends).
    Insert(usize, PreferencePair),
    Remove(usize),
    /// Swaps a pair's chosen and rejected replies.
    Swap(usize),
}

/// The pairs of one preference file, where they came from, and the edit history.
#[derive(Debug, Clone)]
pub struct PreferenceSet {
    pub pairs: Vec<PreferencePair>,
    path: Option<PathBuf>,
    format: PreferenceFormat,
    /// 1-based source line of each pair, when the container has lines.
    lines: Vec<Option<usize>>,
    undo: Vec<PreferenceEdit>,
    redo: Vec<PreferenceEdit>,
    /// Edits since the last save (negative after undoing past it: still dirty).
    since_save: i64,
}

impl PreferenceSet {
    /// An empty set that will be written in `format`.
    pub fn new(format: PreferenceFormat) -> Self {
        PreferenceSet {
            pairs: Vec::new(),
            path: None,
            format,
            lines: Vec::new(),
            undo: Vec::new(),
            redo: Vec::new(),
            since_save: 0,
        }
    }

    pub fn from_pairs(pairs: Vec<PreferencePair>, format: PreferenceFormat) -> Self {
        let mut s = Self::new(format);
        s.lines = vec![None; pairs.len()];
        s.pairs = pairs;
        s
    }

    /// Reads a preference file (JSON array or JSON lines), its layout detected from the
    /// first record. A record that cannot be read as a pair stops the load with an error
    /// naming the file, the record and the field.
    pub fn load(path: &Path) -> Result<Self, DataError> {
        let (pairs, lines, format) = pf::read_file(path, None)?;
        Ok(Self::loaded(path, pairs, lines, format))
    }

    /// Loads a preference file, or `dataset_info.json#entry` (a `ranking: true` entry).
    pub fn open(path: &Path) -> Result<Self, DataError> {
        if !path.exists() {
            if let Some((file, entry)) = path.to_str().and_then(|s| s.rsplit_once('#')) {
                if Path::new(file).is_file() {
                    return Self::load_dataset_info_entry(Path::new(file), entry);
                }
            }
        }
        Self::load(path)
    }

    /// Loads a `ranking: true` entry of a LLaMA-Factory `dataset_info.json`.
    pub fn load_dataset_info_entry(info: &Path, entry: &str) -> Result<Self, DataError> {
        let (file, format) = pf::dataset_info_entry(info, entry)?;
        let (pairs, lines, format) = pf::read_file(&file, Some(format))?;
        Ok(Self::loaded(&file, pairs, lines, format))
    }

    fn loaded(
        path: &Path,
        pairs: Vec<PreferencePair>,
        lines: Vec<Option<usize>>,
        format: PreferenceFormat,
    ) -> Self {
        let mut s = Self::new(format);
        s.pairs = pairs;
        s.lines = lines;
        s.path = Some(path.to_path_buf());
        s
    }

    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    pub fn format(&self) -> &PreferenceFormat {
        &self.format
    }

    /// The problems of pair `i`, with the file, line and record filled in.
    pub fn pair_problems(&self, i: usize) -> Vec<Problem> {
        let Some(p) = self.pairs.get(i) else {
            return Vec::new();
        };
        let mut out = p.problems();
        for pr in &mut out {
            pr.file = self.path.clone().unwrap_or_default();
            pr.line = self.lines.get(i).copied().flatten();
            pr.record = Some(i);
        }
        out
    }

    /// Every problem of every pair, in order.
    pub fn problems(&self) -> Vec<Problem> {
        (0..self.pairs.len())
            .flat_map(|i| self.pair_problems(i))
            .collect()
    }

    /// Indices of pairs with at least one error (training skips them).
    pub fn invalid_pairs(&self) -> Vec<usize> {
        (0..self.pairs.len())
            .filter(|&i| self.pair_problems(i).iter().any(Problem::is_error))
            .collect()
    }

    /// Applies an edit; an index out of range is refused and changes nothing.
    pub fn apply(&mut self, edit: PreferenceEdit) -> Result<(), DataError> {
        let inverse = self.apply_raw(edit)?;
        self.undo.push(inverse);
        self.redo.clear();
        self.since_save += 1;
        Ok(())
    }

    /// Applies an edit and returns the one that undoes it.
    fn apply_raw(&mut self, edit: PreferenceEdit) -> Result<PreferenceEdit, DataError> {
        let n = self.pairs.len();
        let out_of_range = |i: usize| DataError::Other(format!("no pair {i} (the set has {n})"));
        Ok(match edit {
            PreferenceEdit::Set(i, pair) => {
                let slot = self.pairs.get_mut(i).ok_or_else(|| out_of_range(i))?;
                PreferenceEdit::Set(i, std::mem::replace(slot, pair))
            }
            PreferenceEdit::Insert(i, pair) => {
                if i > n {
                    return Err(out_of_range(i));
                }
                self.pairs.insert(i, pair);
                self.lines.insert(i.min(self.lines.len()), None);
                PreferenceEdit::Remove(i)
            }
            PreferenceEdit::Remove(i) => {
                if i >= n {
                    return Err(out_of_range(i));
                }
                if i < self.lines.len() {
                    self.lines.remove(i);
                }
                PreferenceEdit::Insert(i, self.pairs.remove(i))
            }
            PreferenceEdit::Swap(i) => {
                let p = self.pairs.get_mut(i).ok_or_else(|| out_of_range(i))?;
                std::mem::swap(&mut p.chosen, &mut p.rejected);
                PreferenceEdit::Swap(i)
            }
        })
    }

    /// Undoes the last edit; false when there is none.
    pub fn undo(&mut self) -> bool {
        let Some(edit) = self.undo.pop() else {
            return false;
        };
        match self.apply_raw(edit) {
            Ok(inverse) => {
                self.redo.push(inverse);
                self.since_save -= 1;
                true
            }
            Err(_) => false,
        }
    }

    /// Redoes the last undone edit; false when there is none.
    pub fn redo(&mut self) -> bool {
        let Some(edit) = self.redo.pop() else {
            return false;
        };
        match self.apply_raw(edit) {
            Ok(inverse) => {
                self.undo.push(inverse);
                self.since_save += 1;
                true
            }
            Err(_) => false,
        }
    }

    pub fn can_undo(&self) -> bool {
        !self.undo.is_empty()
    }

    pub fn can_redo(&self) -> bool {
        !self.redo.is_empty()
    }

    /// Whether there are edits the file does not have.
    pub fn is_dirty(&self) -> bool {
        self.since_save != 0
    }

    /// The bytes of the set in `format` (`None`: the loaded one).
    pub fn to_bytes(&self, format: Option<PreferenceFormat>) -> Result<Vec<u8>, DataError> {
        let path = self.path.clone().unwrap_or_default();
        pf::write_bytes(
            &self.pairs,
            format.unwrap_or_else(|| self.format.clone()),
            &path,
        )
    }

    /// Writes the set to `path` atomically, keeping an existing file as `<path>.bak`,
    /// then makes `path` its file and marks it clean.
    pub fn save(&mut self, path: &Path, format: Option<PreferenceFormat>) -> Result<(), DataError> {
        let format = format.unwrap_or_else(|| self.format.clone());
        let bytes = pf::write_bytes(&self.pairs, format.clone(), path)?;
        super::dataset::write_keeping_backup(path, &bytes)?;
        self.format = format;
        self.path = Some(path.to_path_buf());
        self.since_save = 0;
        self.lines = vec![None; self.pairs.len()];
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_name_the_field() {
        let mut p = PreferencePair::single_turn("q", "a", "b");
        assert!(p.problems().is_empty());
        p.rejected.clear();
        p.prompt[0].role = Role::Assistant;
        let probs = p.problems();
        assert!(probs
            .iter()
            .any(|x| x.field.as_deref() == Some("rejected") && x.is_error()));
        assert!(probs
            .iter()
            .any(|x| x.field.as_deref() == Some("prompt") && x.message.contains("user")));
        let same = PreferencePair::single_turn("q", "a", "a");
        let probs = same.problems();
        assert_eq!(probs.len(), 1);
        assert!(!probs[0].is_error());
    }

    #[test]
    fn edits_undo_and_redo() {
        let mut s = PreferenceSet::from_pairs(
            vec![PreferencePair::single_turn("q", "a", "b")],
            PreferenceFormat::default(),
        );
        s.apply(PreferenceEdit::Swap(0)).unwrap();
        assert_eq!(s.pairs[0].chosen[0].content, "b");
        s.apply(PreferenceEdit::Insert(
            1,
            PreferencePair::single_turn("x", "y", "z"),
        ))
        .unwrap();
        s.apply(PreferenceEdit::Remove(0)).unwrap();
        assert_eq!(s.len(), 1);
        assert!(s.apply(PreferenceEdit::Remove(5)).is_err());
        assert!(s.is_dirty());
        assert!(s.undo() && s.undo() && s.undo());
        assert!(!s.undo());
        assert!(!s.is_dirty());
        assert_eq!(s.pairs, vec![PreferencePair::single_turn("q", "a", "b")]);
        assert!(s.redo());
        assert_eq!(s.pairs[0].chosen[0].content, "b");
        assert!(s.is_dirty());
    }
}
