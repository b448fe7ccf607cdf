//! A hand-off (`crate::handoff`) as a job: writing a run as a LLaMA-Factory or axolotl
//! project (the base model loaded first unless the studio holds it), or importing an
//! engine's output folder as a run. Progress lines while it runs, then the report or the
//! error.

use std::path::PathBuf;

use super::export_job::Base;
use crate::handoff::import::ImportReport;
use crate::handoff::{HandoffReport, HandoffRequest};
use crate::jobs::{self, JobEvent, JobEvents, JobKind, Waker};
use crate::train::RunConfig;

/// What a hand-off thread reports.
#[derive(Debug)]
pub enum HandoffEvent {
    Progress(String),
    Exported(Box<HandoffReport>),
    Imported(Box<ImportReport>),
    Failed(String),
}

impl JobEvent for HandoffEvent {
    fn failed(_kind: JobKind, error: String) -> Self {
        HandoffEvent::Failed(error)
    }
    fn is_final(&self) -> bool {
        !matches!(self, HandoffEvent::Progress(_))
    }
}

/// Writes `cfg` as the project `req` describes.
pub fn spawn_export(
    base: Base,
    cfg: RunConfig,
    req: HandoffRequest,
    waker: Waker,
) -> JobEvents<HandoffEvent> {
    jobs::spawn(JobKind::Handoff, "handoff-export", 256, waker, move |r| {
        let progress = |line: &str| r.send(HandoffEvent::Progress(line.to_string()));
        let model = base.into_model(&progress)?;
        let report = crate::handoff::export_project(&cfg, &model, &req, &mut |l| progress(l))?;
        Ok(HandoffEvent::Exported(Box::new(report)))
    })
}

/// Imports the engine output in `dir` as a new run under `runs_dir`.
pub fn spawn_import(dir: PathBuf, runs_dir: PathBuf, waker: Waker) -> JobEvents<HandoffEvent> {
    jobs::spawn(JobKind::ImportRun, "import-run", 16, waker, move |r| {
        r.send(HandoffEvent::Progress(format!("reading {}", dir.display())));
        let report = crate::handoff::import_output(&dir, &runs_dir)?;
        Ok(HandoffEvent::Imported(Box::new(report)))
    })
}
