//! The run directory (DESIGN.md, On-disk layout): `run.toml`, `metrics.jsonl`,
//! `checkpoints/step-N/` (PEFT adapter + optimizer state + trainer state) and the final
//! `adapter/`, each adapter with the `tokenizer_config.json` of the run's chat template. Every file is written atomically and every folder built beside its name and
//! renamed into place ([`crate::fsio`]); a resumed run first clears what a killed one left
//! ([`RunDir::remove_leftovers`]). Also lists runs.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use candle_core::{Device, Tensor};
use serde::{Deserialize, Serialize};

use super::config::RunConfig;
use super::events::{StepMetrics, SuiteScore};
use super::selection::{BestBy, FinalChoice, Selection};
use crate::adapter::{self, AdapterConfig};
use crate::fsio;
use crate::model::lora::LoraTarget;
use crate::model::Model;

/// Where a run resumes: everything beyond the weights and optimizer moments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps completed.
    pub step: usize,
    pub total_steps: usize,
    /// Epoch and micro-batch index within it where the next step starts.
    pub epoch: usize,
    pub micro_batch: usize,
    pub best_eval_loss: Option<f64>,
    pub elapsed_s: f64,
    /// The best evaluation by the run's measure, and the evaluations since.
    #[serde(default)]
    pub selection: Selection,
}

impl TrainerState {
    /// The state before the first step of a run of `total_steps` steps.
    pub fn new(total_steps: usize) -> Self {
        TrainerState {
            step: 0,
            total_steps,
            epoch: 0,
            micro_batch: 0,
            best_eval_loss: None,
            elapsed_s: 0.0,
            selection: Selection::default(),
        }
    }
}

/// The file that marks a run as failed; it holds the error.
pub const FAILED_FILE: &str = "failed.txt";

/// The file of a finished run that says which step's adapter `adapter/` holds ([`FinalChoice`]).
pub const FINAL_FILE: &str = "final.json";

/// The file that marks a run trained elsewhere and imported ([`Imported`]).
pub const IMPORTED_FILE: &str = "imported.json";

/// Where an imported run was trained (`crate::handoff::import`). Such a run has adapters
/// but no optimizer state: it is resumed in the engine that trained it, not here.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Imported {
    /// The engine, in words (`LLaMA-Factory`, `axolotl`, `Hugging Face Trainer`).
    pub engine: String,
    /// The folder it was imported from.
    pub source: PathBuf,
    pub imported_at: String,
    /// The engine's own training time, when its log says.
    #[serde(default)]
    pub train_runtime_s: Option<f64>,
}

/// One line of `metrics.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum MetricLine {
    Step(StepMetrics),
    Eval {
        step: usize,
        /// A NaN loss is written as `null` (JSON has no NaN) and read back as NaN.
        #[serde(deserialize_with = "super::events::f64_or_nan")]
        loss: f64,
    },
    /// A preference run's figures on its held-out pairs.
    PreferenceEval {
        step: usize,
        metrics: super::events::PreferenceMetrics,
    },
    /// The eval suite's result at an evaluation.
    Suite(SuiteScore),
    /// A new best evaluation by the run's measure.
    Best {
        step: usize,
        by: BestBy,
        #[serde(deserialize_with = "super::events::f64_or_nan")]
        value: f64,
    },
}

impl MetricLine {
    /// The step the line belongs to.
    pub fn step(&self) -> usize {
        match self {
            MetricLine::Step(m) => m.step,
            MetricLine::Eval { step, .. }
            | MetricLine::Best { step, .. }
            | MetricLine::PreferenceEval { step, .. } => *step,
            MetricLine::Suite(s) => s.step,
        }
    }
}

/// `name` as a folder name: ASCII letters, digits, `-` and `_`, anything else as `-`.
pub fn folder_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

/// A run folder under `parent` that does not exist yet: `<YYYYmmdd-HHMMSS>-<name>`, with
/// `-2`, `-3`, … when two runs start in the same second.
pub fn new_run_path(parent: &Path, name: &str) -> PathBuf {
    let name = folder_name(name);
    let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S");
    let mut path = parent.join(format!("{stamp}-{name}"));
    let mut n = 1;
    while path.exists() {
        n += 1;
        path = parent.join(format!("{stamp}-{name}-{n}"));
    }
    path
}

/// Where an imported run was trained (`imported.json`), when it was.
pub fn read_imported(run: &Path) -> Option<Imported> {
    let text = std::fs::read_to_string(run.join(IMPORTED_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// An open run directory.
pub struct RunDir {
    pub path: PathBuf,
    /// The model whose `tokenizer_config.json` (with the run's chat template) goes beside
    /// every adapter the run writes; none writes no such file.
    template_model: Option<Arc<Model>>,
}

fn io_err(path: &Path, e: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!("{}: {e}", path.display())
}

/// The temporaries of earlier versions, which wrote `<name>.partial` files and
/// `.step-N.partial` / `.adapter.partial` folders; a resume clears them too.
fn is_legacy_temp(name: &str) -> bool {
    matches!(
        name,
        "run.partial" | "metrics.partial" | "failed.partial" | ".adapter.partial"
    ) || (name.starts_with(".step-") && name.ends_with(".partial"))
}

impl RunDir {
    /// Creates `<runs>/<YYYYmmdd-HHMMSS>-<name>/` and writes `run.toml`.
    pub fn create(cfg: &RunConfig, dataset_sha256: &str) -> anyhow::Result<Self> {
        let parent = cfg
            .output
            .runs_dir
            .clone()
            .unwrap_or_else(crate::paths::runs_dir);
        let path = new_run_path(&parent, &cfg.output.name);
        std::fs::create_dir_all(path.join("checkpoints")).map_err(|e| io_err(&path, e))?;
        let mut text = cfg.to_toml();
        text.push_str(&format!("\n# dataset sha256: {dataset_sha256}\n"));
        fsio::write_bytes_atomic(&path.join("run.toml"), text.as_bytes())?;
        Ok(Self {
            path,
            template_model: None,
        })
    }

    /// The run folder at `path`, as it is.
    pub fn at(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            template_model: None,
        }
    }

    /// Writes `model`'s `tokenizer_config.json`, with the chat template the run trains
    /// with, beside each adapter from now on.
    pub fn set_template_model(&mut self, model: Arc<Model>) {
        self.template_model = Some(model);
    }

    fn write_template(&self, dir: &Path) -> anyhow::Result<()> {
        if let Some(m) = &self.template_model {
            adapter::write_template(dir, m)?;
        }
        Ok(())
    }

    /// Marks the run failed with `error` (shown in the Runs tab). Best effort: the error
    /// reaches the user through the run's events even when this write fails too.
    pub fn mark_failed(&self, error: &str) {
        let path = self.path.join(FAILED_FILE);
        if let Err(e) = fsio::write_bytes_atomic(&path, format!("{error}\n").as_bytes()) {
            tracing::warn!("could not mark the run failed: {e:#}");
        }
    }

    /// Removes the failure mark (a resumed run is no longer failed).
    pub fn clear_failed(&self) -> anyhow::Result<()> {
        let path = self.path.join(FAILED_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err(&path, e)),
        }
    }

    pub fn open(path: &Path) -> anyhow::Result<(Self, RunConfig)> {
        let cfg = RunConfig::load(&path.join("run.toml"))?;
        Ok((Self::at(path), cfg))
    }

    /// Appends one line to `metrics.jsonl`. An append, not an atomic rewrite: the file grows
    /// a line at a time, and a line cut short by a crash is skipped by [`read_metrics`] and
    /// dropped by the resume's [`RunDir::truncate_metrics_after`].
    pub fn log_metric(&self, line: &MetricLine) -> anyhow::Result<()> {
        let path = self.path.join("metrics.jsonl");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| io_err(&path, e))?;
        let text = serde_json::to_string(line)?;
        writeln!(f, "{text}").map_err(|e| io_err(&path, e))
    }

    /// Drops metric lines after `step` (a resumed run rewrites what followed its checkpoint),
    /// and any line that does not parse; the file is rewritten atomically.
    pub fn truncate_metrics_after(&self, step: usize) -> anyhow::Result<()> {
        let lines = read_metrics(&self.path);
        let kept = lines.iter().filter(|l| l.step() <= step);
        fsio::write_file_atomic(&self.path.join("metrics.jsonl"), |w| {
            for line in kept {
                serde_json::to_writer(&mut *w, line)?;
                w.write_all(b"\n")?;
            }
            Ok(())
        })?;
        Ok(())
    }

    /// Clears what a killed or crashed write left in the run folder and its `checkpoints/`
    /// ([`fsio::remove_leftovers`], and the temporaries of earlier versions), putting back a
    /// checkpoint caught between the renames that replace it. For a resume, before it picks
    /// its checkpoint; never while the run trains.
    pub fn remove_leftovers(&self) -> anyhow::Result<Vec<String>> {
        let mut removed = Vec::new();
        for dir in [self.path.clone(), self.path.join("checkpoints")] {
            if !dir.is_dir() {
                continue;
            }
            removed.extend(fsio::remove_leftovers(&dir)?);
            let rd = std::fs::read_dir(&dir).map_err(|e| io_err(&dir, e))?;
            for entry in rd.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if !is_legacy_temp(&name) {
                    continue;
                }
                let path = entry.path();
                let gone = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
                gone.map_err(|e| io_err(&path, e))?;
                removed.push(name);
            }
        }
        Ok(removed)
    }

    pub fn checkpoint_dir(&self, step: usize) -> PathBuf {
        self.path.join("checkpoints").join(format!("step-{step}"))
    }

    /// Writes `checkpoints/step-N/` atomically ([`fsio::replace_dir_atomic`]): adapter,
    /// optimizer moments, trainer state. The folder appears complete or not at all.
    pub fn save_checkpoint(
        &self,
        adapter_cfg: &AdapterConfig,
        pairs: &BTreeMap<(usize, LoraTarget), (Tensor, Tensor)>,
        moments: &[(String, Tensor)],
        state: &TrainerState,
    ) -> anyhow::Result<PathBuf> {
        let dest = self.checkpoint_dir(state.step);
        fsio::replace_dir_atomic(&dest, |tmp: &Path| -> anyhow::Result<()> {
            adapter::write_adapter(tmp, adapter_cfg, pairs)?;
            self.write_template(tmp)?;
            adapter::write_safetensors(&tmp.join("optimizer.safetensors"), moments)?;
            fsio::write_bytes_atomic(
                &tmp.join("trainer_state.json"),
                serde_json::to_string_pretty(state)?.as_bytes(),
            )?;
            Ok(())
        })?;
        Ok(dest)
    }

    /// Writes the final adapter to `adapter/`, atomically as a folder.
    pub fn save_adapter(
        &self,
        adapter_cfg: &AdapterConfig,
        pairs: &BTreeMap<(usize, LoraTarget), (Tensor, Tensor)>,
    ) -> anyhow::Result<PathBuf> {
        let dir = self.path.join("adapter");
        fsio::replace_dir_atomic(&dir, |tmp: &Path| -> anyhow::Result<()> {
            adapter::write_adapter(tmp, adapter_cfg, pairs)?;
            self.write_template(tmp)
        })?;
        Ok(dir)
    }

    /// Writes the adapter of `checkpoints/step-N/` to `adapter/`, atomically as a folder:
    /// the run's best checkpoint becomes its final adapter.
    pub fn adapter_from_checkpoint(&self, step: usize) -> anyhow::Result<PathBuf> {
        let from = self.checkpoint_dir(step);
        let dir = self.path.join("adapter");
        fsio::replace_dir_atomic(&dir, |tmp: &Path| -> anyhow::Result<()> {
            for name in [adapter::CONFIG_FILE, adapter::WEIGHTS_FILE] {
                let src = from.join(name);
                std::fs::copy(&src, tmp.join(name)).map_err(|e| io_err(&src, e))?;
            }
            self.write_template(tmp)
        })?;
        Ok(dir)
    }

    /// Writes `final.json`: which step's adapter `adapter/` holds, and why.
    pub fn write_final(&self, choice: &FinalChoice) -> anyhow::Result<()> {
        fsio::write_bytes_atomic(
            &self.path.join(FINAL_FILE),
            serde_json::to_string_pretty(choice)?.as_bytes(),
        )?;
        Ok(())
    }
}

/// A finished run's `final.json`, when it has one that parses.
pub fn read_final(run: &Path) -> Option<FinalChoice> {
    let text = std::fs::read_to_string(run.join(FINAL_FILE)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Steps of the checkpoints in a run, ascending: the `step-N` folders, which are complete
/// (each is renamed into place whole). Temporaries (`.step-N.XXXXXX.tmp`, being written
/// or left by a killed run) and anything else are not listed.
pub fn checkpoint_steps(run: &Path) -> Vec<usize> {
    let mut steps: Vec<usize> = std::fs::read_dir(run.join("checkpoints"))
        .map(|rd| {
            rd.flatten()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .filter_map(|e| e.file_name().to_str()?.strip_prefix("step-")?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    steps.sort_unstable();
    steps
}

/// A checkpoint read back for resuming.
pub struct Checkpoint {
    pub state: TrainerState,
    pub moments: std::collections::HashMap<String, Tensor>,
    pub adapter_dir: PathBuf,
}

pub fn load_checkpoint(dir: &Path, device: &Device) -> anyhow::Result<Checkpoint> {
    let state_path = dir.join("trainer_state.json");
    let text = std::fs::read_to_string(&state_path).map_err(|e| io_err(&state_path, e))?;
    let state: TrainerState = serde_json::from_str(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", state_path.display()))?;
    let opt_path = dir.join("optimizer.safetensors");
    let moments = candle_core::safetensors::load(&opt_path, device)
        .map_err(|e| anyhow::anyhow!("{}: {e}", opt_path.display()))?;
    Ok(Checkpoint {
        state,
        moments,
        adapter_dir: dir.to_path_buf(),
    })
}

/// Every line of a run's `metrics.jsonl` that parses.
pub fn read_metrics(run: &Path) -> Vec<MetricLine> {
    std::fs::read_to_string(run.join("metrics.jsonl"))
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

/// What the Runs view shows of a run.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub path: PathBuf,
    pub name: String,
    pub config: Option<RunConfig>,
    pub steps: Vec<StepMetrics>,
    pub evals: Vec<(usize, f64)>,
    /// The eval suite's results, one per evaluation that ran it.
    pub suites: Vec<SuiteScore>,
    /// A preference run's figures on its held-out pairs, one per evaluation.
    pub held_out: Vec<(usize, super::events::PreferenceMetrics)>,
    /// The latest best evaluation: (step, measure, value).
    pub best: Option<(usize, BestBy, f64)>,
    /// Which adapter the finished run kept (`final.json`).
    pub final_choice: Option<FinalChoice>,
    pub checkpoints: Vec<usize>,
    pub has_adapter: bool,
    pub final_loss: Option<f64>,
    pub best_eval_loss: Option<f64>,
    /// Wall time from the first to the last logged step, estimated from ETA-free figures.
    pub last_step: usize,
    /// Why the run failed, when it did (`failed.txt`).
    pub failure: Option<String>,
    /// Where the run was trained, when it was imported (`imported.json`).
    pub imported: Option<Imported>,
}

/// The adapter folder of the newest run under `runs` whose `[output] name` is `name`,
/// that finished with an adapter; an error saying what is there when none did.
pub fn latest_run_adapter(runs: &Path, name: &str) -> Result<PathBuf, String> {
    let all = list_runs(runs);
    let named: Vec<&RunInfo> = all
        .iter()
        .filter(|r| r.config.as_ref().is_some_and(|c| c.output.name == name))
        .collect();
    match named.iter().find(|r| r.has_adapter && r.failure.is_none()) {
        Some(r) => Ok(r.path.join("adapter")),
        None if named.is_empty() => Err(format!(
            "no run named {name} in {} (train its config first)",
            runs.display()
        )),
        None => Err(format!(
            "no run named {name} in {} finished with an adapter ({} tried)",
            runs.display(),
            named.len()
        )),
    }
}

/// Reads every run folder under `dir`, newest first.
pub fn list_runs(dir: &Path) -> Vec<RunInfo> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut runs: Vec<RunInfo> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("run.toml").exists())
        .map(|p| read_run(&p))
        .collect();
    runs.sort_by(|a, b| b.name.cmp(&a.name));
    runs
}

pub fn read_run(path: &Path) -> RunInfo {
    let config = RunConfig::load(&path.join("run.toml")).ok();
    let mut steps = Vec::new();
    let mut evals = Vec::new();
    let mut suites = Vec::new();
    let mut held_out = Vec::new();
    let mut best = None;
    for line in read_metrics(path) {
        match line {
            MetricLine::Step(s) => steps.push(s),
            MetricLine::Eval { step, loss } => evals.push((step, loss)),
            MetricLine::Suite(s) => suites.push(s),
            MetricLine::Best { step, by, value } => best = Some((step, by, value)),
            MetricLine::PreferenceEval { step, metrics } => held_out.push((step, metrics)),
        }
    }
    let best_eval_loss = evals
        .iter()
        .map(|e| e.1)
        .filter(|l| l.is_finite())
        .reduce(f64::min);
    RunInfo {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default(),
        path: path.to_path_buf(),
        config,
        final_loss: steps.last().map(|s| s.loss),
        last_step: steps.last().map(|s| s.step).unwrap_or(0),
        steps,
        evals,
        suites,
        held_out,
        best,
        final_choice: read_final(path),
        checkpoints: checkpoint_steps(path),
        has_adapter: path
            .join("adapter")
            .join("adapter_model.safetensors")
            .exists(),
        best_eval_loss,
        failure: std::fs::read_to_string(path.join(FAILED_FILE))
            .ok()
            .map(|t| t.trim().to_string()),
        imported: read_imported(path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trainer_state_written_before_selection_existed_still_loads() {
        let old = r#"{"step": 4, "total_steps": 8, "epoch": 0, "micro_batch": 4,
                      "best_eval_loss": 1.5, "elapsed_s": 2.0}"#;
        let state: TrainerState = serde_json::from_str(old).unwrap();
        assert_eq!(state.step, 4);
        assert_eq!(state.selection, Selection::default());
    }

    #[test]
    fn temporaries_are_not_checkpoints_and_a_resume_clears_them() {
        let dir = tempfile::tempdir().unwrap();
        let run = RunDir::at(dir.path());
        let ck = dir.path().join("checkpoints");
        for d in [
            "step-1",
            "step-2",
            ".step-3.aB3dE9.tmp",
            ".step-4.partial",
            ".step-2.Qw3rTy.old",
        ] {
            std::fs::create_dir_all(ck.join(d)).unwrap();
        }
        std::fs::write(ck.join("step-9"), b"a file, not a checkpoint").unwrap();
        std::fs::write(dir.path().join(".metrics.jsonl.Zz9Yy8.tmp"), b"{").unwrap();
        std::fs::write(dir.path().join("metrics.partial"), b"{").unwrap();
        std::fs::write(dir.path().join("metrics.jsonl"), b"").unwrap();
        assert_eq!(checkpoint_steps(dir.path()), [1, 2]);

        let mut removed = run.remove_leftovers().unwrap();
        removed.sort();
        assert_eq!(
            removed,
            [
                ".metrics.jsonl.Zz9Yy8.tmp",
                ".step-2.Qw3rTy.old",
                ".step-3.aB3dE9.tmp",
                ".step-4.partial",
                "metrics.partial"
            ]
        );
        let mut left: Vec<String> = std::fs::read_dir(&ck)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["step-1", "step-2", "step-9"]);
        assert_eq!(checkpoint_steps(dir.path()), [1, 2]);
    }
}
