//! Editing a [`Dataset`]: insert, delete and change records; edit, add, remove and reorder
//! turns; undo and redo; dirty tracking; and the autosave recovery file that brings unsaved
//! edits back after a crash.
//!
//! Every edit is recorded as record-level changes (the record before and after), so undo
//! is exact whatever the edit was, and several edits can form one undo step.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::dataset::Dataset;
use super::error::{DataError, Problem};
use super::formats::{Format, Mapping};
use super::record::{Conversation, Message, Role};

/// One edit. Indices are record indices; `turn` indexes `messages`.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    InsertRecord {
        index: usize,
        record: Conversation,
    },
    DeleteRecord {
        index: usize,
    },
    /// Replaces a whole record.
    SetRecord {
        index: usize,
        record: Conversation,
    },
    MoveRecord {
        from: usize,
        to: usize,
    },
    SetSystem {
        index: usize,
        system: Option<String>,
    },
    SetTools {
        index: usize,
        tools: Option<String>,
    },
    /// Sets (`Some`) or removes (`None`) an extra field.
    SetMeta {
        index: usize,
        key: String,
        value: Option<Value>,
    },
    SetTurnContent {
        index: usize,
        turn: usize,
        content: String,
    },
    SetTurnRole {
        index: usize,
        turn: usize,
        role: Role,
    },
    InsertTurn {
        index: usize,
        turn: usize,
        message: Message,
    },
    RemoveTurn {
        index: usize,
        turn: usize,
    },
    MoveTurn {
        index: usize,
        from: usize,
        to: usize,
    },
}

/// A record with what travels with it (source line, read-time problems).
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    conv: Conversation,
    line: Option<usize>,
    problems: Vec<Problem>,
}

#[derive(Debug, Clone)]
enum Change {
    Insert {
        index: usize,
        slot: Box<Slot>,
    },
    Remove {
        index: usize,
        slot: Box<Slot>,
    },
    Replace {
        index: usize,
        before: Box<Slot>,
        after: Box<Slot>,
    },
}

/// Undo and redo stacks, and where the last save sits in them.
#[derive(Debug, Clone)]
pub(crate) struct History {
    undo: Vec<Vec<Change>>,
    redo: Vec<Vec<Change>>,
    /// `undo.len()` at the last save or load; `None` when that state can no longer be reached.
    saved_at: Option<usize>,
}

impl Default for History {
    fn default() -> Self {
        History {
            undo: Vec::new(),
            redo: Vec::new(),
            saved_at: Some(0),
        }
    }
}

impl History {
    pub(crate) fn mark_saved(&mut self) {
        self.saved_at = Some(self.undo.len());
    }
    fn push(&mut self, step: Vec<Change>) {
        if step.is_empty() {
            return;
        }
        if self.saved_at.is_some_and(|s| s > self.undo.len()) {
            self.saved_at = None;
        }
        self.redo.clear();
        self.undo.push(step);
    }
}

fn out_of_range(what: &str, i: usize, n: usize) -> DataError {
    DataError::Other(format!("{what} {i} is out of range (there are {n})"))
}

impl Dataset {
    fn slot(&self, i: usize) -> Slot {
        Slot {
            conv: self.conversations[i].clone(),
            line: self.lines.get(i).copied().flatten(),
            problems: self.load_problems.get(i).cloned().unwrap_or_default(),
        }
    }

    fn put(&mut self, i: usize, s: Slot) {
        self.conversations[i] = s.conv;
        self.lines[i] = s.line;
        self.load_problems[i] = s.problems;
    }

    fn insert_slot(&mut self, i: usize, s: Slot) {
        self.conversations.insert(i, s.conv);
        self.lines.insert(i, s.line);
        self.load_problems.insert(i, s.problems);
    }

    fn remove_slot(&mut self, i: usize) -> Slot {
        Slot {
            conv: self.conversations.remove(i),
            line: self.lines.remove(i),
            problems: self.load_problems.remove(i),
        }
    }

    fn run(&mut self, c: &Change, forward: bool) {
        match (c, forward) {
            (Change::Insert { index, slot }, true) | (Change::Remove { index, slot }, false) => {
                self.insert_slot(*index, (**slot).clone())
            }
            (Change::Insert { index, .. }, false) | (Change::Remove { index, .. }, true) => {
                self.remove_slot(*index);
            }
            (Change::Replace { index, after, .. }, true) => self.put(*index, (**after).clone()),
            (Change::Replace { index, before, .. }, false) => self.put(*index, (**before).clone()),
        }
    }

    /// Applies one edit to the record at `index` through a closure on a copy.
    fn change_record(
        &mut self,
        index: usize,
        f: impl FnOnce(&mut Conversation) -> Result<(), DataError>,
    ) -> Result<Change, DataError> {
        let n = self.conversations.len();
        if index >= n {
            return Err(out_of_range("record", index, n));
        }
        let before = self.slot(index);
        let mut after = before.clone();
        f(&mut after.conv)?;
        // An edited record is re-checked from its content; read-time problems no longer apply.
        after.problems.clear();
        let change = Change::Replace {
            index,
            before: Box::new(before),
            after: Box::new(after),
        };
        self.run(&change, true);
        Ok(change)
    }

    /// Keeps the per-record side tables as long as the records (they may have been changed directly).
    fn sync_len(&mut self) {
        let n = self.conversations.len();
        self.lines.resize(n, None);
        self.load_problems.resize(n, Vec::new());
    }

    fn apply_one(&mut self, edit: Edit) -> Result<Vec<Change>, DataError> {
        self.sync_len();
        let n = self.conversations.len();
        let turn_check = |c: &Conversation, t: usize| {
            if t < c.messages.len() {
                Ok(())
            } else {
                Err(out_of_range("turn", t, c.messages.len()))
            }
        };
        Ok(match edit {
            Edit::InsertRecord { index, record } => {
                if index > n {
                    return Err(out_of_range("record", index, n));
                }
                let ch = Change::Insert {
                    index,
                    slot: Box::new(Slot {
                        conv: record,
                        line: None,
                        problems: Vec::new(),
                    }),
                };
                self.run(&ch, true);
                vec![ch]
            }
            Edit::DeleteRecord { index } => {
                if index >= n {
                    return Err(out_of_range("record", index, n));
                }
                let ch = Change::Remove {
                    index,
                    slot: Box::new(self.slot(index)),
                };
                self.run(&ch, true);
                vec![ch]
            }
            Edit::MoveRecord { from, to } => {
                if from >= n || to >= n {
                    return Err(out_of_range("record", from.max(to), n));
                }
                let slot = Box::new(self.slot(from));
                let a = Change::Remove {
                    index: from,
                    slot: slot.clone(),
                };
                self.run(&a, true);
                let b = Change::Insert { index: to, slot };
                self.run(&b, true);
                vec![a, b]
            }
            Edit::SetRecord { index, record } => vec![self.change_record(index, |c| {
                *c = record;
                Ok(())
            })?],
            Edit::SetSystem { index, system } => vec![self.change_record(index, |c| {
                c.system = system;
                Ok(())
            })?],
            Edit::SetTools { index, tools } => vec![self.change_record(index, |c| {
                c.tools = tools;
                Ok(())
            })?],
            Edit::SetMeta { index, key, value } => vec![self.change_record(index, |c| {
                match value {
                    Some(v) => {
                        c.meta.insert(key, v);
                    }
                    None => {
                        c.meta.shift_remove(&key);
                    }
                }
                Ok(())
            })?],
            Edit::SetTurnContent {
                index,
                turn,
                content,
            } => vec![self.change_record(index, |c| {
                turn_check(c, turn)?;
                c.messages[turn].content = content;
                Ok(())
            })?],
            Edit::SetTurnRole { index, turn, role } => vec![self.change_record(index, |c| {
                turn_check(c, turn)?;
                c.messages[turn].role = role;
                Ok(())
            })?],
            Edit::InsertTurn {
                index,
                turn,
                message,
            } => vec![self.change_record(index, |c| {
                if turn > c.messages.len() {
                    return Err(out_of_range("turn", turn, c.messages.len()));
                }
                c.insert_turn(turn, message);
                Ok(())
            })?],
            Edit::RemoveTurn { index, turn } => vec![self.change_record(index, |c| {
                turn_check(c, turn)?;
                c.remove_turn(turn);
                Ok(())
            })?],
            Edit::MoveTurn { index, from, to } => vec![self.change_record(index, |c| {
                turn_check(c, from)?;
                turn_check(c, to)?;
                c.move_turn(from, to);
                Ok(())
            })?],
        })
    }

    /// Applies one edit as one undo step.
    pub fn apply(&mut self, edit: Edit) -> Result<(), DataError> {
        self.apply_all(vec![edit])
    }

    /// Applies several edits as one undo step. If one fails, the ones before it are rolled
    /// back and the error is returned.
    pub fn apply_all(&mut self, edits: Vec<Edit>) -> Result<(), DataError> {
        let mut step = Vec::new();
        for e in edits {
            match self.apply_one(e) {
                Ok(mut ch) => step.append(&mut ch),
                Err(err) => {
                    for c in step.iter().rev() {
                        self.run(c, false);
                    }
                    return Err(err);
                }
            }
        }
        self.history.push(step);
        Ok(())
    }

    /// Undoes the last step. Returns false when there is nothing to undo.
    pub fn undo(&mut self) -> bool {
        self.sync_len();
        let Some(step) = self.history.undo.pop() else {
            return false;
        };
        for c in step.iter().rev() {
            self.run(c, false);
        }
        self.history.redo.push(step);
        true
    }

    /// Redoes the last undone step. Returns false when there is nothing to redo.
    pub fn redo(&mut self) -> bool {
        self.sync_len();
        let Some(step) = self.history.redo.pop() else {
            return false;
        };
        for c in &step {
            self.run(c, true);
        }
        self.history.undo.push(step);
        true
    }

    pub fn can_undo(&self) -> bool {
        !self.history.undo.is_empty()
    }
    pub fn can_redo(&self) -> bool {
        !self.history.redo.is_empty()
    }
    /// Whether there are edits since the last load or save.
    pub fn is_dirty(&self) -> bool {
        self.history.saved_at != Some(self.history.undo.len())
    }

    /// Replaces placeholders such as `{{name}}` in every text of every record (one undo
    /// step). Returns how many records changed. This is how the trainer fills in LLaMA-Factory's
    /// identity dataset without editing the file.
    pub fn replace_placeholders(&mut self, map: &[(String, String)]) -> usize {
        let changed: Vec<(usize, Conversation)> = {
            use rayon::prelude::*;
            self.conversations
                .par_iter()
                .enumerate()
                .filter_map(|(i, c)| {
                    let mut c2 = c.clone();
                    c2.replace_text(map).then_some((i, c2))
                })
                .collect()
        };
        let n = changed.len();
        let edits = changed
            .into_iter()
            .map(|(index, record)| Edit::SetRecord { index, record })
            .collect();
        // Indices come from the records themselves, so this cannot fail.
        let _ = self.apply_all(edits);
        n
    }

    // ---- crash recovery ----

    /// Where unsaved edits of this dataset are autosaved: `.<file name>.recovery.jsonl` next
    /// to the source file. `None` for a dataset without a file.
    pub fn recovery_path(&self) -> Option<PathBuf> {
        self.path.as_deref().map(recovery_path_for)
    }

    /// Writes the records to the recovery file if there are unsaved edits (atomically).
    /// Returns the file written, if any.
    pub fn autosave(&self) -> Result<Option<PathBuf>, DataError> {
        let Some(rp) = self.recovery_path() else {
            return Ok(None);
        };
        if !self.is_dirty() {
            return Ok(None);
        }
        let header = RecoveryHeader {
            studio_recovery: 1,
            source: self.path.clone().unwrap_or_default(),
            format: self.format,
            mapping: self.mapping.clone(),
            entry: self.entry.clone(),
            saved_at: chrono::Local::now().to_rfc3339(),
        };
        let mut out = serde_json::to_vec(&header).map_err(|e| DataError::Other(e.to_string()))?;
        out.push(b'\n');
        for (c, line) in self.conversations.iter().zip(&self.lines) {
            let rec = RecoveryRecord { c, line: *line };
            serde_json::to_writer(&mut out, &rec).map_err(|e| DataError::Other(e.to_string()))?;
            out.push(b'\n');
        }
        crate::fsio::write_bytes_atomic(&rp, &out)?;
        Ok(Some(rp))
    }

    /// The recovery file of `source` if one exists (to offer it back after a crash).
    pub fn find_recovery(source: &Path) -> Option<PathBuf> {
        let rp = recovery_path_for(source);
        rp.is_file().then_some(rp)
    }

    /// Loads a recovery file written by [`Dataset::autosave`]. The dataset is dirty (its
    /// edits are not in the source file yet) and has no undo history.
    pub fn recover(recovery: &Path) -> Result<Dataset, DataError> {
        let bytes = std::fs::read(recovery).map_err(|e| DataError::io(recovery, e))?;
        let rerr = |line: usize, e: &dyn std::fmt::Display| DataError::Recovery {
            path: recovery.to_path_buf(),
            message: format!("line {line}: {e}"),
        };
        let mut lines = bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty());
        let header: RecoveryHeader = match lines.next() {
            Some(l) => serde_json::from_slice(l).map_err(|e| rerr(1, &e))?,
            None => return Err(rerr(1, &"empty file")),
        };
        let mut ds = Dataset::new(header.format);
        ds.mapping = header.mapping;
        ds.path = Some(header.source);
        ds.entry = header.entry;
        for (i, l) in lines.enumerate() {
            let r: OwnedRecoveryRecord = serde_json::from_slice(l).map_err(|e| rerr(i + 2, &e))?;
            ds.conversations.push(r.c);
            ds.lines.push(r.line);
            ds.load_problems.push(Vec::new());
        }
        ds.history.saved_at = None;
        Ok(ds)
    }

    /// Removes the recovery file of `source` (the user declined it, or saved).
    pub fn discard_recovery(source: &Path) -> Result<(), DataError> {
        let rp = recovery_path_for(source);
        match std::fs::remove_file(&rp) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(DataError::io(rp, e)),
        }
    }
}

fn recovery_path_for(source: &Path) -> PathBuf {
    let name = source
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "dataset".into());
    source.with_file_name(format!(".{name}.recovery.jsonl"))
}

#[derive(Serialize, Deserialize)]
struct RecoveryHeader {
    studio_recovery: u32,
    source: PathBuf,
    format: Format,
    mapping: Mapping,
    entry: Option<(PathBuf, String)>,
    saved_at: String,
}

#[derive(Serialize)]
struct RecoveryRecord<'a> {
    c: &'a Conversation,
    line: Option<usize>,
}

#[derive(Deserialize)]
struct OwnedRecoveryRecord {
    c: Conversation,
    line: Option<usize>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Role;

    fn ds() -> Dataset {
        let recs = (0..3)
            .map(|i| Conversation {
                messages: vec![
                    Message::new(Role::User, format!("q{i}")),
                    Message::new(Role::Assistant, format!("a{i}")),
                ],
                ..Default::default()
            })
            .collect();
        Dataset::from_records(recs, Format::ALPACA)
    }

    #[test]
    fn undo_redo_and_dirty() {
        let mut d = ds();
        let orig = d.records().to_vec();
        assert!(!d.is_dirty());
        d.apply(Edit::SetTurnContent {
            index: 1,
            turn: 1,
            content: "x".into(),
        })
        .unwrap();
        d.apply(Edit::DeleteRecord { index: 0 }).unwrap();
        d.apply(Edit::MoveRecord { from: 0, to: 1 }).unwrap();
        d.apply(Edit::InsertTurn {
            index: 0,
            turn: 0,
            message: Message::new(Role::System, "s"),
        })
        .unwrap();
        assert!(d.is_dirty());
        assert_eq!(d.len(), 2);
        while d.undo() {}
        assert_eq!(d.records(), &orig[..]);
        assert!(!d.is_dirty());
        assert!(d.redo());
        assert_eq!(d.records()[1].messages[1].content, "x");
        assert!(d.apply(Edit::RemoveTurn { index: 0, turn: 9 }).is_err());
        assert!(d
            .apply_all(vec![
                Edit::DeleteRecord { index: 0 },
                Edit::DeleteRecord { index: 7 }
            ])
            .is_err());
        assert_eq!(d.len(), 3, "a failed batch is rolled back");
    }

    #[test]
    fn placeholders_are_one_step() {
        let mut d = ds();
        d.apply(Edit::SetTurnContent {
            index: 0,
            turn: 1,
            content: "I am {{name}}".into(),
        })
        .unwrap();
        let n = d.replace_placeholders(&[("{{name}}".into(), "Studio".into())]);
        assert_eq!(n, 1);
        assert_eq!(d.records()[0].messages[1].content, "I am Studio");
        d.undo();
        assert_eq!(d.records()[0].messages[1].content, "I am {{name}}");
    }
}
