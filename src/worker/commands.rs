//! The messages between the studio window and its worker: [`Command`] in, [`Event`] out.
//! Events carry values (datasets, statistics, row lists), never references into the UI.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::data::contamination::ContaminationReport;
use crate::data::{Dataset, Format, Problem, Stats};
use crate::jobs::{JobEvent, JobKind};
use crate::train::RunInfo;

/// Why a file dialog was opened; comes back with the picked path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DialogPurpose {
    /// Open a dataset in the Datasets tab.
    OpenDataset,
    /// Choose where "Save as" writes.
    SaveDatasetAs,
    /// A dataset file for the Train tab.
    TrainDataset,
    /// A model folder (Hugging Face layout).
    ModelFolder,
    /// A `.gguf` model file.
    ModelGguf,
    /// A model folder to load in the Models tab.
    LoadModelFolder,
    /// A `.gguf` file to load in the Models tab.
    LoadModelGguf,
    /// An engine's output folder to import as a run.
    ImportRunFolder,
    /// An eval suite (JSONL) for the Train tab's evaluations.
    EvalSuite,
    /// An eval suite (JSONL) for batch compare's suite run.
    BatchSuite,
}

impl DialogPurpose {
    /// Whether the dialog picks a folder rather than a file.
    pub fn picks_folder(self) -> bool {
        matches!(
            self,
            DialogPurpose::ModelFolder
                | DialogPurpose::LoadModelFolder
                | DialogPurpose::ImportRunFolder
        )
    }
}

/// UI to worker.
#[derive(Debug, Clone)]
pub enum Command {
    /// Reads a dataset file (format detected).
    LoadDataset { path: PathBuf },
    /// Reads the autosaved unsaved edits of `source` (its recovery file).
    RecoverDataset { source: PathBuf },
    /// Removes the recovery file of `source` (the user declined it).
    DiscardRecovery { source: PathBuf },
    /// Writes the unsaved edits of a snapshot to its recovery file.
    AutosaveDataset { dataset: Arc<Dataset> },
    /// Writes `dataset` atomically to `path` and marks it saved. `generation` is the
    /// UI's edit counter when the snapshot was taken; it comes back with the result.
    SaveDataset {
        dataset: Arc<Dataset>,
        path: PathBuf,
        format: Option<Format>,
        generation: u64,
    },
    /// Writes a preference set atomically to `path` (keeping `.bak`) and marks it saved;
    /// `generation` comes back with the result, as for [`Command::SaveDataset`].
    SavePreferences {
        set: Box<crate::data::PreferenceSet>,
        path: PathBuf,
        format: Option<Box<crate::data::PreferenceFormat>>,
        generation: u64,
    },
    /// Statistics, validation problems and flag lists of a snapshot.
    Analyze {
        dataset: Arc<Dataset>,
        max_len: usize,
        generation: u64,
        /// Counts tokens with this model's tokenizer (else about 4 bytes per token).
        model: Option<Arc<crate::model::Model>>,
    },
    /// Rows whose text matches `query` (a substring, or a regular expression).
    Search {
        dataset: Arc<Dataset>,
        query: String,
        regex: bool,
        case_sensitive: bool,
        id: u64,
    },
    /// The records of a snapshot that share a 13-word run with the set `against` names
    /// (`builtin`, a suite file or a dataset file).
    CheckContamination {
        dataset: Arc<Dataset>,
        against: String,
        id: u64,
    },
    /// Each record's loss, perplexity and IFD under `model` with the adapter in `adapter`
    /// (the model alone when `None`), sent back in chunks as they are scored; `cancel`
    /// stops it between chunks.
    ScoreRecords {
        id: u64,
        set: ScoreSet,
        model: Arc<crate::model::Model>,
        adapter: Option<PathBuf>,
        /// (record index, content key, record).
        records: Vec<(usize, u64, crate::data::Conversation)>,
        max_len: usize,
        cancel: Arc<std::sync::atomic::AtomicBool>,
    },
    /// Reads every run folder under `dir` (newest first).
    ListRuns { dir: PathBuf },
    /// Describes the models on disk (models folder, HF cache, and these recent specs).
    ListModels { recent: Vec<String> },
    /// Deletes a run folder, then lists the runs again.
    DeleteRun { path: PathBuf },
    /// Opens a native file dialog on its own thread.
    PickFile {
        purpose: DialogPurpose,
        /// A save dialog rather than an open dialog.
        save: bool,
        /// The folder (or file) to start in.
        start: Option<PathBuf>,
    },
}

impl Command {
    /// The kind of job the command starts.
    pub fn kind(&self) -> JobKind {
        match self {
            Command::LoadDataset { .. } => JobKind::OpenDataset,
            Command::RecoverDataset { .. } => JobKind::RecoverDataset,
            Command::DiscardRecovery { .. } => JobKind::DiscardRecovery,
            Command::AutosaveDataset { .. } => JobKind::AutosaveDataset,
            Command::SaveDataset { .. } | Command::SavePreferences { .. } => JobKind::SaveDataset,
            Command::Analyze { .. } => JobKind::AnalyzeDataset,
            Command::Search { .. } => JobKind::SearchDataset,
            Command::CheckContamination { .. } => JobKind::CheckContamination,
            Command::ScoreRecords { .. } => JobKind::ScoreRecords,
            Command::ListRuns { .. } => JobKind::ListRuns,
            Command::ListModels { .. } => JobKind::ListModels,
            Command::DeleteRun { .. } => JobKind::DeleteRun,
            Command::PickFile { .. } => JobKind::FileDialog,
        }
    }
}

/// Which scores of the Datasets tab a scoring job fills.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScoreSet {
    /// The scores under the chosen model and adapter.
    Primary,
    /// The scores of "Compare with…".
    Compare,
}

/// Statistics and problems of one snapshot of a dataset.
#[derive(Debug, Clone)]
pub struct Analysis {
    pub stats: Stats,
    /// Every validation problem, file problems first, then by record.
    pub problems: Vec<Problem>,
    /// Records with at least one error.
    pub invalid: Vec<usize>,
    pub duplicates: Vec<usize>,
    pub too_long: Vec<usize>,
    pub empty: Vec<usize>,
    pub elapsed: Duration,
}

/// Worker to UI.
#[derive(Debug)]
pub enum Event {
    DatasetLoaded {
        path: PathBuf,
        dataset: Box<Dataset>,
        elapsed: Duration,
        /// Autosaved unsaved edits of this file, from a session that did not save them:
        /// the recovery file and when it was written.
        recovery: Option<(PathBuf, String)>,
    },
    /// A preference file opened by [`Command::LoadDataset`] (its first record has
    /// `chosen` and `rejected`, or it is a `ranking: true` dataset_info.json entry).
    PreferencesLoaded {
        path: PathBuf,
        set: Box<crate::data::PreferenceSet>,
        elapsed: Duration,
    },
    /// The saved preference set (marked clean, with its new path and format).
    PreferencesSaved {
        path: PathBuf,
        set: Box<crate::data::PreferenceSet>,
        generation: u64,
    },
    /// The saved dataset (marked clean, with its new path and format).
    DatasetSaved {
        path: PathBuf,
        dataset: Box<Dataset>,
        generation: u64,
    },
    Analyzed {
        generation: u64,
        analysis: Box<Analysis>,
    },
    Searched {
        id: u64,
        /// Matching rows, or why the query is invalid.
        rows: Result<Vec<usize>, String>,
    },
    /// The answer to [`Command::CheckContamination`].
    ContaminationChecked {
        id: u64,
        against: String,
        report: Box<ContaminationReport>,
    },
    /// Scores of a chunk of records ([`Command::ScoreRecords`]): (record index, content
    /// key, score or why there is none); `done` of `total` records scored so far.
    RecordsScored {
        id: u64,
        set: ScoreSet,
        scores: Vec<(usize, u64, crate::train::score::ScoreResult)>,
        done: usize,
        total: usize,
    },
    /// A scoring job ended: every record scored, or stopped.
    ScoringEnded {
        id: u64,
        set: ScoreSet,
        cancelled: bool,
    },
    /// The runs found in the runs folder.
    Runs(Vec<RunInfo>),
    /// The models found on disk.
    Models(Vec<crate::hub::catalog::ModelEntry>),
    /// A dialog closed; `None` when the user cancelled or no dialog could be shown.
    Picked {
        purpose: DialogPurpose,
        path: Option<PathBuf>,
    },
    /// A job that needed no answer (an autosave, a discarded recovery file) is done.
    Done { kind: JobKind },
    /// A job failed; its tab stops waiting for it, and the shell shows a notification.
    Failed { kind: JobKind, error: String },
}

impl JobEvent for Event {
    fn failed(kind: JobKind, error: String) -> Self {
        Event::Failed { kind, error }
    }
    fn is_final(&self) -> bool {
        // Every dataset job and dialog answers with one event; a scoring job sends its
        // chunks before it (the shared channel routes by content, not by finality).
        true
    }
}

impl Event {
    /// The kind of a one-at-a-time job ([`super::Worker`]) that this event ends.
    pub(super) fn ends_coalesced(&self) -> Option<JobKind> {
        match self {
            Event::Analyzed { .. } => Some(JobKind::AnalyzeDataset),
            Event::Searched { .. } => Some(JobKind::SearchDataset),
            Event::Failed { kind, .. }
                if matches!(kind, JobKind::AnalyzeDataset | JobKind::SearchDataset) =>
            {
                Some(*kind)
            }
            _ => None,
        }
    }
}
