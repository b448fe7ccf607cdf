//! The dataset worker's jobs: load, save, analyze, search and check datasets for
//! contamination; list and delete runs; list the models on disk. Each returns its one
//! [`Event`]; an error becomes [`Event::Failed`] through the job runner, with the error's
//! full chain.

use std::sync::Arc;
use std::time::Instant;

use crate::data::search::{self, Query};
use crate::data::stats::{self, StatsOptions};
use crate::data::{ByteCounter, Dataset, TokenCounter};

use anyhow::{anyhow, bail, Context};

use super::{Analysis, Command, Event};

/// Runs one command to completion.
pub(super) fn run(cmd: Command) -> anyhow::Result<Event> {
    let kind = cmd.kind();
    Ok(match cmd {
        Command::LoadDataset { path }
            if crate::data::preference_formats::is_preference_path(&path) =>
        {
            let t = Instant::now();
            let set = crate::data::PreferenceSet::open(&path)?;
            Event::PreferencesLoaded {
                path,
                set: Box::new(set),
                elapsed: t.elapsed(),
            }
        }
        Command::SavePreferences {
            mut set,
            path,
            format,
            generation,
        } => {
            set.save(&path, format.map(|f| *f))?;
            Event::PreferencesSaved {
                path,
                set,
                generation,
            }
        }
        Command::LoadDataset { path } => {
            let t = Instant::now();
            let ds = crate::data::load(&path, None)?;
            Event::DatasetLoaded {
                recovery: Dataset::find_recovery(&path).map(|r| {
                    let when = modified_time(&r);
                    (r, when)
                }),
                path,
                dataset: Box::new(ds),
                elapsed: t.elapsed(),
            }
        }
        Command::RecoverDataset { source } => {
            let t = Instant::now();
            let rp = Dataset::find_recovery(&source)
                .ok_or_else(|| anyhow!("no recovery file for {} any more", source.display()))?;
            let ds = Dataset::recover(&rp)?;
            Event::DatasetLoaded {
                path: source,
                dataset: Box::new(ds),
                elapsed: t.elapsed(),
                recovery: None,
            }
        }
        Command::DiscardRecovery { source } => {
            Dataset::discard_recovery(&source)?;
            Event::Done { kind }
        }
        Command::AutosaveDataset { dataset } => {
            dataset.autosave()?;
            Event::Done { kind }
        }
        Command::SaveDataset {
            dataset,
            path,
            format,
            generation,
        } => {
            let mut ds = Arc::unwrap_or_clone(dataset);
            ds.save(&path, format)?;
            Event::DatasetSaved {
                path,
                dataset: Box::new(ds),
                generation,
            }
        }
        Command::Analyze {
            dataset,
            max_len,
            generation,
            model,
        } => {
            let counter: &dyn TokenCounter = match &model {
                Some(m) => &m.tokenizer,
                None => &ByteCounter::default(),
            };
            Event::Analyzed {
                generation,
                analysis: Box::new(analyze(&dataset, max_len, counter)),
            }
        }
        Command::Search {
            dataset,
            query,
            regex,
            case_sensitive,
            id,
        } => {
            let q = if regex {
                Query::regex(&query, case_sensitive).map_err(|e| e.to_string())
            } else {
                Ok(Query::substring(&query, case_sensitive))
            };
            Event::Searched {
                id,
                rows: q.map(|q| search::search(&dataset, &q)),
            }
        }
        Command::CheckContamination {
            dataset,
            against,
            id,
        } => {
            let references = crate::eval::against::read_references(&against)?;
            let report = crate::data::contamination::check(
                dataset.records(),
                &references,
                crate::data::contamination::ContaminationParams::default(),
            );
            Event::ContaminationChecked {
                id,
                against,
                report: Box::new(report),
            }
        }
        Command::ListRuns { dir } => Event::Runs(crate::train::list_runs(&dir)),
        Command::ListModels { recent } => Event::Models(crate::hub::catalog::scan(&recent)),
        Command::DeleteRun { path } => {
            if !path.join("run.toml").is_file() {
                bail!("{} is not a run folder (no run.toml)", path.display());
            }
            std::fs::remove_dir_all(&path).with_context(|| path.display().to_string())?;
            match path.parent() {
                Some(dir) => Event::Runs(crate::train::list_runs(dir)),
                None => Event::Runs(Vec::new()),
            }
        }
        // Dialogs and scoring run as jobs of their own (see `Worker::start`).
        Command::PickFile { .. } | Command::ScoreRecords { .. } => {
            bail!("internal error: {kind:?} reached the dataset jobs")
        }
    })
}

/// When `path` was last written, in local time, for messages.
fn modified_time(path: &std::path::Path) -> String {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .map(|t| {
            chrono::DateTime::<chrono::Local>::from(t)
                .format("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_else(|_| "an earlier session".into())
}

/// Statistics, problems and flags of `ds`, token lengths counted by `counter` (the texts
/// only; the chat template adds a few tokens per turn when training).
pub fn analyze(ds: &Dataset, max_len: usize, counter: &dyn TokenCounter) -> Analysis {
    let t = Instant::now();
    let opts = StatsOptions {
        max_len,
        ..Default::default()
    };
    let stats = stats::compute_with(ds, counter, &opts);
    let problems = ds.problems();
    let invalid = ds.invalid_records();
    Analysis {
        duplicates: stats.duplicate_records(),
        too_long: stats.over_max.clone(),
        empty: stats.empty_records(),
        stats,
        problems,
        invalid,
        elapsed: t.elapsed(),
    }
}
