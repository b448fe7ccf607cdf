//! The dataset open in the Datasets tab: the records behind an `Arc` (so workers analyze,
//! search and save a snapshot without copying it), an edit counter, and the latest
//! analysis. Edits go through the data module's edit operations, so undo and redo work;
//! a pause in editing autosaves them to the recovery file (see `DatasetsTab::logic`).

use std::sync::Arc;

use crate::data::{DataError, Dataset, Edit};
use crate::worker::Analysis;

/// An open dataset.
pub struct OpenDataset {
    data: Arc<Dataset>,
    /// Counts every change (edit, undo, redo, save); snapshots carry it to tell whether
    /// their result is still current.
    generation: u64,
    /// The latest analysis, and the generation it describes.
    pub analysis: Option<(u64, Arc<Analysis>)>,
    /// A snapshot of this generation is being analyzed.
    pub analyzing: Option<u64>,
    /// The analysis of this generation failed, and why (it is not retried until the next
    /// change).
    pub analysis_failed: Option<(u64, String)>,
    /// A save of this generation is in flight.
    pub saving: Option<u64>,
    /// `ctx` time of the last change (analysis waits for a pause in editing).
    pub changed_at: f64,
    /// The generation last autosaved to the recovery file.
    pub autosaved: u64,
    /// A recovery file was written since the dataset was last clean.
    pub recovery_written: bool,
}

impl OpenDataset {
    pub fn new(ds: Dataset) -> Self {
        OpenDataset {
            data: Arc::new(ds),
            generation: 1,
            analysis: None,
            analyzing: None,
            analysis_failed: None,
            saving: None,
            changed_at: f64::NEG_INFINITY,
            autosaved: 1,
            recovery_written: false,
        }
    }

    pub fn data(&self) -> &Dataset {
        &self.data
    }

    /// A snapshot for a worker (shares the records until the next edit).
    pub fn snapshot(&self) -> Arc<Dataset> {
        self.data.clone()
    }

    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Applies one edit as one undo step.
    pub fn apply(&mut self, edit: Edit, now: f64) -> Result<(), DataError> {
        Arc::make_mut(&mut self.data).apply(edit)?;
        self.touch(now);
        Ok(())
    }

    /// Applies several edits as one undo step.
    pub fn apply_all(&mut self, edits: Vec<Edit>, now: f64) -> Result<(), DataError> {
        Arc::make_mut(&mut self.data).apply_all(edits)?;
        self.touch(now);
        Ok(())
    }

    pub fn undo(&mut self, now: f64) -> bool {
        if !self.data.can_undo() {
            return false;
        }
        let done = Arc::make_mut(&mut self.data).undo();
        self.touch(now);
        done
    }

    pub fn redo(&mut self, now: f64) -> bool {
        if !self.data.can_redo() {
            return false;
        }
        let done = Arc::make_mut(&mut self.data).redo();
        self.touch(now);
        done
    }

    pub fn is_dirty(&self) -> bool {
        self.data.is_dirty()
    }

    /// Takes the result of a save of `generation`: the saved dataset replaces the open
    /// one when nothing changed since, else the open one stays (and stays dirty).
    pub fn saved(&mut self, saved: Dataset, generation: u64) -> bool {
        self.saving = None;
        if generation != self.generation {
            return false;
        }
        self.data = Arc::new(saved);
        // The records are the same; the analysis still holds.
        if let Some((g, _)) = &mut self.analysis {
            if *g == generation {
                *g += 1;
            }
        }
        self.generation += 1;
        true
    }

    /// The analysis if it describes the records as they are now.
    pub fn current_analysis(&self) -> Option<&Analysis> {
        self.analysis
            .as_ref()
            .filter(|(g, _)| *g == self.generation)
            .map(|(_, a)| a.as_ref())
    }

    /// The latest analysis, current or not.
    pub fn latest_analysis(&self) -> Option<&Analysis> {
        self.analysis.as_ref().map(|(_, a)| a.as_ref())
    }

    fn touch(&mut self, now: f64) {
        self.generation += 1;
        self.changed_at = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{Conversation, Format, Message, Role};

    fn doc() -> OpenDataset {
        let recs = vec![Conversation {
            messages: vec![
                Message::new(Role::User, "q"),
                Message::new(Role::Assistant, "a"),
            ],
            ..Default::default()
        }];
        OpenDataset::new(Dataset::from_records(recs, Format::ALPACA))
    }

    #[test]
    fn edits_under_a_snapshot_copy_on_write() {
        let mut d = doc();
        let snap = d.snapshot();
        let g = d.generation();
        d.apply(
            Edit::SetTurnContent {
                index: 0,
                turn: 1,
                content: "b".into(),
            },
            0.0,
        )
        .unwrap();
        assert_eq!(snap.records()[0].messages[1].content, "a");
        assert_eq!(d.data().records()[0].messages[1].content, "b");
        assert!(d.generation() > g);
        assert!(d.is_dirty());
        assert!(d.undo(1.0));
        assert!(!d.is_dirty());
        assert!(!d.undo(2.0), "nothing left to undo");
    }

    #[test]
    fn a_stale_save_does_not_replace_newer_edits() {
        let mut d = doc();
        let g = d.generation();
        let saved = (*d.snapshot()).clone();
        d.apply(Edit::DeleteRecord { index: 0 }, 0.0).unwrap();
        assert!(!d.saved(saved, g));
        assert_eq!(d.data().len(), 0);
    }
}
