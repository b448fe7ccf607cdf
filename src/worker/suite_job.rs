//! An eval suite run through every batch-compare pane, as one job: the suite read (a file
//! or `builtin`), then for each pane in turn the base model alone or with the pane's
//! adapter (on the one shared `Arc<Model>`) answering every prompt through
//! [`crate::eval::run_suite`], which judges the replies. Each answered prompt and each
//! pane's report come back as events; a stop ends the run between tokens.

use std::sync::Arc;

use super::chat_job::{read_adapter, templated, AdapterSpec, TemplateSpec};
use crate::eval::{self, RunError, RunOptions, Suite, SuiteReport};
use crate::jobs::{self, JobEvent, JobEvents, JobKind, Reporter, Waker};
use crate::model::lora::LoraSet;
use crate::model::Model;

/// How many events may wait before the job waits for the UI.
const CAPACITY: usize = 256;

/// A prompt of the suite, as the results view shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct SuitePrompt {
    pub id: String,
    /// The last user turn.
    pub text: String,
}

/// What a suite job reports.
#[derive(Debug)]
pub enum SuiteEvent {
    /// The suite was read: its name and prompts, in order.
    Loaded {
        suite: String,
        prompts: Vec<SuitePrompt>,
    },
    /// `pane` has answered and judged `done` prompts.
    Progress { pane: usize, done: usize },
    /// `pane`'s whole report.
    PaneDone {
        pane: usize,
        report: Box<SuiteReport>,
    },
    /// `pane` could not run (its adapter could not be read, a prompt failed); the others go on.
    PaneFailed { pane: usize, error: String },
    /// Every pane has run (`stopped`: the run was stopped before the end).
    Finished { stopped: bool },
    /// The run failed as a whole (the suite could not be read, the thread died).
    Failed(String),
}

impl JobEvent for SuiteEvent {
    fn failed(_kind: JobKind, error: String) -> Self {
        SuiteEvent::Failed(error)
    }
    fn is_final(&self) -> bool {
        matches!(self, SuiteEvent::Finished { .. } | SuiteEvent::Failed(_))
    }
}

/// One pane of the run.
#[derive(Debug, Clone)]
pub struct SuitePane {
    pub adapter: AdapterSpec,
    /// The adapter's name in the report (its folder), `None` for the base model.
    pub adapter_name: Option<String>,
}

/// A suite to run through the panes.
pub struct SuiteRequest {
    pub model: Arc<Model>,
    /// `builtin` or a suite file.
    pub suite: String,
    pub panes: Vec<SuitePane>,
    pub opts: RunOptions,
    /// The chat template the panes render with (else each adapter's own).
    pub template: TemplateSpec,
}

/// A suite run in progress; dropping it stops the run.
pub type SuiteJob = JobEvents<SuiteEvent>;

/// Starts the run on a job thread named `suite-compare`.
pub fn spawn(req: SuiteRequest, waker: Waker) -> SuiteJob {
    jobs::spawn(
        JobKind::SuiteCompare,
        "suite-compare",
        CAPACITY,
        waker,
        move |r| run(req, r),
    )
}

fn run(req: SuiteRequest, sink: &Reporter<SuiteEvent>) -> anyhow::Result<SuiteEvent> {
    let suite = Suite::load(&req.suite)?;
    sink.send(SuiteEvent::Loaded {
        suite: suite.name.clone(),
        prompts: suite.items.iter().map(prompt_of).collect(),
    });
    for (pane, p) in req.panes.into_iter().enumerate() {
        if sink.cancelled() {
            return Ok(SuiteEvent::Finished { stopped: true });
        }
        let lora: Option<Arc<LoraSet>> = match &p.adapter {
            AdapterSpec::None => None,
            AdapterSpec::Loaded { lora, .. } => Some(lora.clone()),
            AdapterSpec::Folder(dir) => match read_adapter(&req.model, dir) {
                Ok(l) => Some(l),
                Err(error) => {
                    sink.send(SuiteEvent::PaneFailed { pane, error });
                    continue;
                }
            },
        };
        let model = match templated(&req.model, &req.template, p.adapter.dir()) {
            Ok(m) => m,
            Err(error) => {
                sink.send(SuiteEvent::PaneFailed { pane, error });
                continue;
            }
        };
        let result = eval::run_suite(
            &model,
            lora.as_deref(),
            p.adapter_name.clone(),
            &suite,
            &req.opts,
            sink.cancel_flag(),
            &mut |i, _| sink.send(SuiteEvent::Progress { pane, done: i + 1 }),
        );
        match result {
            Ok(report) => sink.send(SuiteEvent::PaneDone {
                pane,
                report: Box::new(report),
            }),
            Err(RunError::Cancelled) => return Ok(SuiteEvent::Finished { stopped: true }),
            Err(e) => sink.send(SuiteEvent::PaneFailed {
                pane,
                error: e.to_string(),
            }),
        }
    }
    Ok(SuiteEvent::Finished {
        stopped: sink.cancelled(),
    })
}

fn prompt_of(item: &eval::SuiteItem) -> SuitePrompt {
    SuitePrompt {
        id: item.id.clone(),
        text: item.last_user_text().to_string(),
    }
}
