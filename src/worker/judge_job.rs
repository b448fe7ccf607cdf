//! Batch compare's "Judge A vs B" as a job: the judge model (the loaded one, or another
//! loaded here from its spec, with an optional adapter) put to every pair of the two
//! panes' replies in both orders (`crate::eval::judge`), each pair's verdict sent as it
//! comes, then the result written as JSON beside the batch export. Stoppable between
//! questions.

use std::path::PathBuf;
use std::sync::Arc;

use crate::eval::judge::{
    self, JudgeError, JudgeLabels, JudgePair, JudgePrompt, JudgeResult, ModelJudge, PairVerdict,
};
use crate::jobs::{self, JobEvent, JobEvents, JobKind, Reporter, Waker};
use crate::model::Model;

/// How many events may wait before the job waits for the UI.
const CAPACITY: usize = 256;

/// What a judge job reports.
#[derive(Debug)]
pub enum JudgeEvent {
    /// Pair `index` has its verdict.
    Pair {
        index: usize,
        verdict: Box<PairVerdict>,
    },
    /// Every pair is judged; `saved` says where the result went, or why it did not.
    Done {
        result: Box<JudgeResult>,
        saved: Result<PathBuf, String>,
    },
    /// Stopped before the last pair.
    Stopped,
    Failed(String),
}

impl JobEvent for JudgeEvent {
    fn failed(_kind: JobKind, error: String) -> Self {
        JudgeEvent::Failed(error)
    }
    fn is_final(&self) -> bool {
        matches!(
            self,
            JudgeEvent::Done { .. } | JudgeEvent::Stopped | JudgeEvent::Failed(_)
        )
    }
}

/// A judgment to run.
pub struct JudgeRequest {
    /// The studio's loaded model: the judge unless `judge_model` names another.
    pub model: Arc<Model>,
    /// Another model to judge with (default, a folder, a .gguf file or a hub id).
    pub judge_model: Option<String>,
    /// An adapter folder on the judge.
    pub judge_adapter: Option<PathBuf>,
    /// The judge prompt's template text, as edited.
    pub template: String,
    pub labels: JudgeLabels,
    pub pairs: Vec<JudgePair>,
    /// Where the result is written.
    pub out: PathBuf,
}

pub type JudgeJob = JobEvents<JudgeEvent>;

/// Starts the judgment on a job thread named `judge`.
pub fn spawn(req: JudgeRequest, waker: Waker) -> JudgeJob {
    jobs::spawn(JobKind::Judge, "judge", CAPACITY, waker, move |r| {
        run(req, r)
    })
}

fn run(req: JudgeRequest, sink: &Reporter<JudgeEvent>) -> anyhow::Result<JudgeEvent> {
    let template = JudgePrompt::new(&req.template, "as edited")?;
    let model = match &req.judge_model {
        Some(spec) => Arc::new(crate::hub::load(spec)?),
        None => req.model.clone(),
    };
    let lora = req
        .judge_adapter
        .as_deref()
        .map(|dir| super::chat_job::read_adapter(&model, dir))
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let scorer = ModelJudge::new(&model, lora.as_deref())?;
    let result = judge::judge_pairs(
        &scorer,
        &template,
        req.labels,
        &req.pairs,
        sink.cancel_flag(),
        &mut |index, v| {
            sink.send(JudgeEvent::Pair {
                index,
                verdict: Box::new(v.clone()),
            })
        },
    );
    let result = match result {
        Ok(r) => r,
        Err(JudgeError::Cancelled) => return Ok(JudgeEvent::Stopped),
        Err(e) => return Err(e.into()),
    };
    let saved = write_result(&req.out, &result);
    Ok(JudgeEvent::Done {
        result: Box::new(result),
        saved,
    })
}

/// Writes `result` as pretty JSON to `path` (its folder created), atomically; the CLI's
/// `judge --out` writes through it too.
pub fn write_result(path: &std::path::Path, result: &JudgeResult) -> Result<PathBuf, String> {
    let json = serde_json::to_vec_pretty(result).map_err(|e| e.to_string())?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    crate::fsio::write_bytes_atomic(path, &json).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(path.to_path_buf())
}
