//! A run's plan made off the UI thread for the Train tab's estimate: the dataset read,
//! tokenized and packed exactly as the trainer will (`crate::train::plan`), so the steps,
//! memory and time it shows are the run's.

use std::sync::Arc;

use crate::jobs::{self, JobEvent, JobEvents, JobKind, Waker};
use crate::model::Model;
use crate::train::{Estimate, RunConfig};

/// The plan's one event: the estimate, or why the run could not be planned.
#[derive(Debug)]
pub struct Planned(pub Result<Estimate, String>);

impl JobEvent for Planned {
    fn failed(_kind: JobKind, error: String) -> Self {
        Planned(Err(error))
    }
    fn is_final(&self) -> bool {
        true
    }
}

/// Plans `cfg` on `model` as a job.
pub fn spawn(cfg: RunConfig, model: Arc<Model>, waker: Waker) -> JobEvents<Planned> {
    jobs::spawn(JobKind::PlanRun, "plan-run", 1, waker, move |_| {
        let plan = crate::train::plan::plan(&cfg, &model)?;
        Ok(Planned(Ok(plan.estimate(&model))))
    })
}
