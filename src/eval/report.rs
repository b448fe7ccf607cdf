//! What a suite run produced: each prompt's reply with every check's outcome, and the pass
//! rates per check type, over all checks and over prompts. Serializes to JSON as the
//! CLI's `--json` prints it.

use serde::{Deserialize, Serialize};

use super::check::{Check, CHECK_TYPES};
use crate::infer::{Sampling, StopReason};

/// One check's outcome on one reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub check: Check,
    pub passed: bool,
    /// A short reason (`"Paris" not found`, `12 words, expected at most 10`).
    pub reason: String,
}

/// One prompt's reply and its checks.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PromptResult {
    pub id: String,
    pub reply: String,
    pub stop_reason: StopReason,
    pub generated_tokens: usize,
    /// Whether every check passed.
    pub passed: bool,
    pub checks: Vec<CheckResult>,
}

impl PromptResult {
    /// Decides each of `checks` on `reply`.
    pub fn judge(
        id: &str,
        reply: String,
        stop_reason: StopReason,
        generated_tokens: usize,
        checks: &[Check],
    ) -> PromptResult {
        let checks: Vec<CheckResult> = checks
            .iter()
            .map(|c| {
                let o = c.evaluate(&reply);
                CheckResult {
                    check: c.clone(),
                    passed: o.passed,
                    reason: o.reason,
                }
            })
            .collect();
        PromptResult {
            id: id.to_string(),
            passed: checks.iter().all(|c| c.passed),
            reply,
            stop_reason,
            generated_tokens,
            checks,
        }
    }
}

/// Passed out of total.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Rate {
    pub passed: usize,
    pub total: usize,
    /// `passed / total`, 0 when there is nothing.
    pub rate: f64,
}

impl Rate {
    pub fn new(passed: usize, total: usize) -> Rate {
        Rate {
            passed,
            total,
            rate: if total == 0 {
                0.0
            } else {
                passed as f64 / total as f64
            },
        }
    }
}

/// The pass rate of one check type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckTypeRate {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(flatten)]
    pub rate: Rate,
}

/// A whole suite run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuiteReport {
    /// The suite file, or `builtin`.
    pub suite: String,
    pub model: String,
    pub adapter: Option<String>,
    pub max_new_tokens: usize,
    pub sampling: Sampling,
    /// Checks passed out of all checks of all prompts.
    pub checks: Rate,
    /// Prompts whose every check passed.
    pub prompts_passed: Rate,
    /// Per check type, in the order of [`CHECK_TYPES`]; types the suite does not use are left out.
    pub by_check: Vec<CheckTypeRate>,
    pub prompts: Vec<PromptResult>,
}

/// What a report says about the run that made it, besides its results.
#[derive(Debug, Clone)]
pub struct RunInfo {
    pub suite: String,
    pub model: String,
    pub adapter: Option<String>,
    pub max_new_tokens: usize,
    pub sampling: Sampling,
}

impl SuiteReport {
    /// Counts the pass rates of `prompts`.
    pub fn new(info: RunInfo, prompts: Vec<PromptResult>) -> SuiteReport {
        let all = prompts.iter().flat_map(|p| p.checks.iter());
        let checks = Rate::new(all.clone().filter(|c| c.passed).count(), all.count());
        let prompts_passed = Rate::new(prompts.iter().filter(|p| p.passed).count(), prompts.len());
        let by_check = CHECK_TYPES
            .iter()
            .filter_map(|&kind| {
                let of_kind = prompts
                    .iter()
                    .flat_map(|p| p.checks.iter())
                    .filter(|c| c.check.kind() == kind);
                let total = of_kind.clone().count();
                (total > 0).then(|| CheckTypeRate {
                    kind: kind.to_string(),
                    rate: Rate::new(of_kind.filter(|c| c.passed).count(), total),
                })
            })
            .collect();
        SuiteReport {
            suite: info.suite,
            model: info.model,
            adapter: info.adapter,
            max_new_tokens: info.max_new_tokens,
            sampling: info.sampling,
            checks,
            prompts_passed,
            by_check,
            prompts,
        }
    }
}
