//! The work the worker thread does: load, save, analyze and search datasets; list and
//! delete runs; list the models on disk. Each job
//! reports one [`Event`]; failures become [`Event::Failed`] with the error's full chain.

use std::sync::Arc;
use std::time::Instant;

use crate::data::search::{self, Query};
use crate::data::stats::{self, StatsOptions};
use crate::data::{ByteCounter, Dataset, TokenCounter};

use super::{Analysis, Command, Event, EventSink};

/// Runs one command to completion.
pub(super) fn run(cmd: Command, sink: &EventSink) {
    let what = cmd.describe();
    let event = match cmd {
        Command::LoadDataset { path } => {
            let t = Instant::now();
            match crate::data::load(&path, None) {
                Ok(ds) => Event::DatasetLoaded {
                    recovery: Dataset::find_recovery(&path).map(|r| {
                        let when = modified_time(&r);
                        (r, when)
                    }),
                    path,
                    dataset: Box::new(ds),
                    elapsed: t.elapsed(),
                },
                Err(e) => failed(what, &e),
            }
        }
        Command::RecoverDataset { source } => {
            let t = Instant::now();
            let recovered = Dataset::find_recovery(&source)
                .ok_or_else(|| format!("no recovery file for {} any more", source.display()))
                .and_then(|rp| Dataset::recover(&rp).map_err(|e| format!("{e:#}")));
            match recovered {
                Ok(ds) => Event::DatasetLoaded {
                    path: source,
                    dataset: Box::new(ds),
                    elapsed: t.elapsed(),
                    recovery: None,
                },
                Err(e) => failed(what, &e),
            }
        }
        Command::DiscardRecovery { source } => match Dataset::discard_recovery(&source) {
            Ok(()) => return,
            Err(e) => failed(what, &e),
        },
        Command::AutosaveDataset { dataset } => match dataset.autosave() {
            Ok(_) => return,
            Err(e) => failed(what, &e),
        },
        Command::SaveDataset {
            dataset,
            path,
            format,
            generation,
        } => {
            let mut ds = Arc::unwrap_or_clone(dataset);
            match ds.save(&path, format) {
                Ok(()) => Event::DatasetSaved {
                    path,
                    dataset: Box::new(ds),
                    generation,
                },
                Err(e) => failed(what, &e),
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
        Command::ListRuns { dir } => Event::Runs(crate::train::list_runs(&dir)),
        Command::ListModels { recent } => Event::Models(crate::model::catalog::scan(&recent)),
        Command::DeleteRun { path } => {
            let looks_like_run = path.join("run.toml").is_file();
            let r = if looks_like_run {
                std::fs::remove_dir_all(&path).map_err(|e| format!("{}: {e}", path.display()))
            } else {
                Err(format!(
                    "{} is not a run folder (no run.toml)",
                    path.display()
                ))
            };
            match (r, path.parent()) {
                (Err(e), _) => Event::Failed { what, error: e },
                (Ok(()), Some(dir)) => Event::Runs(crate::train::list_runs(dir)),
                (Ok(()), None) => Event::Runs(Vec::new()),
            }
        }
        // Dialogs never reach the worker thread (see `Worker::send`).
        Command::PickFile { purpose, .. } => Event::Picked {
            purpose,
            path: None,
        },
    };
    sink.send(event);
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

fn failed(what: String, e: &dyn std::fmt::Display) -> Event {
    Event::Failed {
        what,
        error: format!("{e:#}"),
    }
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
