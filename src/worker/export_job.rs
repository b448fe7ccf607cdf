//! One export (`crate::export::job`) as a job: progress lines while it
//! runs, then the report or the error. The base model is the one the studio holds when it
//! is the run's base, else the thread loads it.

use std::sync::Arc;

use crate::export::job::{ExportReport, ExportRequest};
use crate::jobs::{self, JobEvent, JobEvents, JobKind, Waker};
use crate::model::Model;

/// What the export thread reports.
#[derive(Debug)]
pub enum ExportEvent {
    Progress(String),
    Done(Box<ExportReport>),
    Failed(String),
}

/// The base model of an export.
pub enum Base {
    /// The model the studio already holds.
    Loaded(Arc<Model>),
    /// A `--model` spec to load first.
    Spec(String),
}

impl Base {
    /// The model: the one held, or `spec` loaded now (saying so through `progress`).
    pub fn into_model(
        self,
        progress: &dyn Fn(&str),
    ) -> Result<Arc<Model>, crate::model::ModelError> {
        match self {
            Base::Loaded(m) => Ok(m),
            Base::Spec(spec) => {
                progress(&format!("loading the base model {spec}"));
                Ok(Arc::new(crate::hub::load(&spec)?))
            }
        }
    }
}

impl JobEvent for ExportEvent {
    fn failed(_kind: JobKind, error: String) -> Self {
        ExportEvent::Failed(error)
    }
    fn is_final(&self) -> bool {
        matches!(self, ExportEvent::Done(_) | ExportEvent::Failed(_))
    }
}

/// Starts `req` as a job. The files are written even when the dialog closes meanwhile.
pub fn spawn(base: Base, req: ExportRequest, waker: Waker) -> JobEvents<ExportEvent> {
    jobs::spawn(JobKind::Export, "export", 256, waker, move |r| {
        let progress = |line: &str| r.send(ExportEvent::Progress(line.to_string()));
        let model = base.into_model(&progress)?;
        let report = crate::export::job::export(&model, &req, &mut |line| progress(line))?;
        Ok(ExportEvent::Done(Box::new(report)))
    })
}
