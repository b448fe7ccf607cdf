//! The eval suite of a run (`[eval] suite`): read once when the run starts, so a malformed
//! file stops the run before its first step, and run at every evaluation on the adapter as
//! it is then, greedy, so that two evaluations differ only by the adapter.

use std::sync::atomic::AtomicBool;

use super::config::EvalSection;
use super::events::SuiteScore;
use crate::eval::{self, PromptResult, RunOptions, Suite};
use crate::infer::Sampling;
use crate::model::lora::LoraSet;
use crate::model::Model;

/// A run's suite and how its replies are generated.
pub struct RunSuite {
    suite: Suite,
    opts: RunOptions,
}

impl RunSuite {
    /// The suite `cfg` names (cut to `suite_limit` prompts), or `None` when it names none.
    pub fn load(cfg: &EvalSection) -> anyhow::Result<Option<RunSuite>> {
        let Some(spec) = &cfg.suite else {
            return Ok(None);
        };
        let mut suite = Suite::load(spec)?;
        if let Some(n) = cfg.suite_limit {
            suite.items.truncate(n.max(1));
        }
        Ok(Some(RunSuite {
            suite,
            opts: RunOptions {
                max_new_tokens: cfg.suite_max_new_tokens.max(1),
                sampling: Sampling::greedy(),
            },
        }))
    }

    /// The suite's name (`builtin` or its file).
    pub fn name(&self) -> &str {
        &self.suite.name
    }

    /// Prompts a run of it answers.
    pub fn prompts(&self) -> usize {
        self.suite.items.len()
    }

    /// Answers every prompt with `lora` on the model and counts what passed. `None` when
    /// `cancel` was set (between tokens or by `after_prompt`, which is called after each
    /// prompt with its index).
    pub fn run(
        &self,
        model: &Model,
        lora: &LoraSet,
        step: usize,
        cancel: &AtomicBool,
        after_prompt: &mut dyn FnMut(usize, &PromptResult),
    ) -> anyhow::Result<Option<SuiteScore>> {
        let report = match eval::run_suite(
            model,
            Some(lora),
            Some(format!("the adapter at step {step}")),
            &self.suite,
            &self.opts,
            cancel,
            after_prompt,
        ) {
            Ok(r) => r,
            Err(eval::RunError::Cancelled) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(Some(SuiteScore {
            step,
            checks_passed: report.checks.passed,
            checks: report.checks.total,
            prompts_passed: report.prompts_passed.passed,
            prompts: report.prompts_passed.total,
        }))
    }
}
