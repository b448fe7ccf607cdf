//! The messages between a training worker and whoever watches it (the GUI's Train tab or
//! the CLI's progress bar). Events carry values, never references.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Estimated cost of a run, shown before it starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub peak_memory_bytes: u64,
    pub available_memory_bytes: u64,
    pub seconds_per_step: f64,
    pub total_steps: usize,
    pub trainable_parameters: usize,
}

/// One logged optimizer step. JSON has no NaN: a NaN figure (a diverged loss, a grad norm
/// an imported log does not give) is written as `null` and read back as NaN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: usize,
    #[serde(deserialize_with = "f64_or_nan")]
    pub epoch: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub loss: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub lr: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub grad_norm: f64,
    /// Tokens in this step's batches (padding excluded).
    #[serde(default)]
    pub tokens: usize,
    #[serde(deserialize_with = "f64_or_nan")]
    pub tokens_per_s: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub eta_s: f64,
    /// The preference stages' figures (DPO, ORPO runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preference: Option<PreferenceMetrics>,
}

/// A preference step's (or evaluation's) figures, means over its pairs, named as TRL logs
/// them: `logps/chosen`, `logps/rejected` (log-probabilities of the replies: sums over
/// their tokens for DPO, means per token for ORPO), `rewards/chosen`, `rewards/rejected`
/// (DPO: β · (policy − reference) log-ratio; ORPO: β · the mean log-probability),
/// `rewards/margins` and `rewards/accuracies` (the share of pairs whose chosen reward is
/// the higher).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PreferenceMetrics {
    #[serde(deserialize_with = "f64_or_nan")]
    pub chosen_logp: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub rejected_logp: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub chosen_reward: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub rejected_reward: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub reward_margin: f64,
    #[serde(deserialize_with = "f64_or_nan")]
    pub reward_accuracy: f64,
    /// Pairs these figures are means over.
    pub pairs: usize,
}

/// Reads a number, or `null` as NaN (serde_json writes non-finite floats as `null`).
pub fn f64_or_nan<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

/// An eval suite run at one evaluation of a run, on the adapter as it was then.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteScore {
    pub step: usize,
    /// Checks passed out of all checks of all prompts.
    pub checks_passed: usize,
    pub checks: usize,
    /// Prompts whose every check passed.
    pub prompts_passed: usize,
    pub prompts: usize,
}

impl SuiteScore {
    /// The share of checks that passed (0 when there were none).
    pub fn pass_rate(&self) -> f64 {
        if self.checks == 0 {
            0.0
        } else {
            self.checks_passed as f64 / self.checks as f64
        }
    }

    /// The line the Train tab's log and the command line print.
    pub fn summary(&self) -> String {
        format!(
            "step {}: eval suite {}/{} checks ({:.1} %), {}/{} prompts",
            self.step,
            self.checks_passed,
            self.checks,
            self.pass_rate() * 100.0,
            self.prompts_passed,
            self.prompts
        )
    }
}

/// What happened at the end of a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub run_dir: PathBuf,
    pub steps: usize,
    pub final_loss: Option<f64>,
    pub best_eval_loss: Option<f64>,
    pub duration_s: f64,
    pub adapter_dir: Option<PathBuf>,
    /// Whether the run was stopped before its planned end.
    pub stopped_early: bool,
    /// Which step's adapter `adapter/` holds and why (absent when the run was stopped).
    #[serde(default)]
    pub final_choice: Option<super::selection::FinalChoice>,
}

/// Worker to watcher.
#[derive(Debug, Clone, PartialEq)]
pub enum TrainEvent {
    /// The data is ready and the first step is about to run.
    Started {
        run_dir: PathBuf,
        total_steps: usize,
        start_step: usize,
        estimate: Estimate,
    },
    Step(StepMetrics),
    Eval {
        step: usize,
        loss: f64,
    },
    /// The eval suite's result at an evaluation.
    Suite(SuiteScore),
    /// A new best evaluation; its checkpoint is kept.
    Best {
        step: usize,
        by: super::selection::BestBy,
        value: f64,
    },
    /// A preference run's evaluation on its held-out pairs (sent before its `Eval`).
    PreferenceEval {
        step: usize,
        metrics: PreferenceMetrics,
    },
    Checkpoint {
        step: usize,
        path: PathBuf,
    },
    /// A warning or note for the log pane (truncated samples, resume point ...).
    Log {
        message: String,
    },
    Paused {
        step: usize,
    },
    Resumed {
        step: usize,
    },
    Finished {
        summary: Summary,
    },
    Failed {
        error: String,
    },
}

/// Watcher to worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrainCommand {
    Pause,
    Resume,
    /// Stop after the current optimizer step, leaving a loadable checkpoint.
    Stop,
    /// Write a checkpoint after the current optimizer step.
    SaveNow,
}
