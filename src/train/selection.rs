//! Which checkpoint is a run's best, when the run stops early, and which adapter it ends
//! with. The measure is the user's pick (the eval loss, lower is better, or an eval suite's
//! pass rate, higher is better); an evaluation counts as better only by more than
//! `min_delta`; after `patience` evaluations in a row without a better one the run stops.
//! Pure bookkeeping, kept in the trainer state, so a resumed run counts on where it stopped.

use serde::{Deserialize, Serialize};

/// The measure that picks the best checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BestBy {
    /// The mean loss on the eval split: lower is better.
    #[default]
    EvalLoss,
    /// The share of the eval suite's checks that pass: higher is better.
    PassRate,
}

impl BestBy {
    /// In words, for logs and labels.
    pub fn label(self) -> &'static str {
        match self {
            BestBy::EvalLoss => "eval loss",
            BestBy::PassRate => "pass rate",
        }
    }

    /// Whether `new` beats `old` by more than `min_delta`. A non-finite value never does.
    pub fn improves(self, new: f64, old: f64, min_delta: f64) -> bool {
        if !new.is_finite() {
            return false;
        }
        if !old.is_finite() {
            return true;
        }
        match self {
            BestBy::EvalLoss => new < old - min_delta,
            BestBy::PassRate => new > old + min_delta,
        }
    }

    /// `value` as the logs show it.
    pub fn format(self, value: f64) -> String {
        match self {
            BestBy::EvalLoss => format!("{value:.4}"),
            BestBy::PassRate => format!("{:.1} %", value * 100.0),
        }
    }
}

/// Which adapter a finished run leaves in `adapter/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalAdapter {
    /// The best checkpoint's (the last step's when no evaluation was measured).
    #[default]
    Best,
    /// The last step's, whatever the evaluations said.
    Last,
}

/// A measured evaluation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Measured {
    pub step: usize,
    pub value: f64,
}

/// The best evaluation so far and how many came after it without beating it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Selection {
    pub best: Option<Measured>,
    pub evals_since_best: usize,
}

/// What one evaluation means for the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// It is the new best: its checkpoint is kept.
    pub improved: bool,
    /// The patience ran out: the run stops here.
    pub stop: bool,
}

impl Selection {
    /// Takes the evaluation at `step`. `patience` 0 never stops the run.
    pub fn observe(
        &mut self,
        by: BestBy,
        min_delta: f64,
        patience: usize,
        step: usize,
        value: f64,
    ) -> Verdict {
        let improved = match self.best {
            None => value.is_finite(),
            Some(b) => by.improves(value, b.value, min_delta),
        };
        if improved {
            self.best = Some(Measured { step, value });
            self.evals_since_best = 0;
        } else {
            self.evals_since_best += 1;
        }
        Verdict {
            improved,
            stop: patience > 0 && self.evals_since_best >= patience,
        }
    }
}

/// What `final.json` in a finished run's folder records: which step's adapter is in
/// `adapter/`, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FinalChoice {
    /// What the run was asked for.
    pub wanted: FinalAdapter,
    /// The step whose adapter `adapter/` holds.
    pub adapter_step: usize,
    /// The run's last step.
    pub last_step: usize,
    pub best_by: BestBy,
    /// The best evaluation, when one was measured.
    pub best: Option<Measured>,
    /// Whether the run stopped because its patience ran out.
    pub early_stopped: bool,
}

impl FinalChoice {
    /// One line for logs and the Runs tab.
    pub fn describe(&self) -> String {
        let what = if self.adapter_step == self.last_step {
            format!("the last step's ({})", self.last_step)
        } else {
            format!("step {}'s", self.adapter_step)
        };
        let best = match self.best {
            Some(b) => format!(
                "; best {} {} at step {}",
                self.best_by.label(),
                self.best_by.format(b.value),
                b.step
            ),
            None => format!("; no {} was measured", self.best_by.label()),
        };
        let early = if self.early_stopped {
            "; stopped early (no better evaluation within the patience)"
        } else {
            ""
        };
        format!("adapter: {what}{best}{early}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        by: BestBy,
        min_delta: f64,
        patience: usize,
        values: &[f64],
    ) -> (Selection, Vec<Verdict>) {
        let mut s = Selection::default();
        let verdicts = values
            .iter()
            .enumerate()
            .map(|(i, &v)| s.observe(by, min_delta, patience, (i + 1) * 10, v))
            .collect();
        (s, verdicts)
    }

    #[test]
    fn the_lowest_loss_is_best_and_patience_counts_evaluations_since_it() {
        let (s, v) = run(BestBy::EvalLoss, 0.0, 2, &[2.0, 1.5, 1.6, 1.4, 1.45, 1.41]);
        assert_eq!(
            s.best,
            Some(Measured {
                step: 40,
                value: 1.4
            })
        );
        let improved: Vec<bool> = v.iter().map(|v| v.improved).collect();
        assert_eq!(improved, [true, true, false, true, false, false]);
        let stop: Vec<bool> = v.iter().map(|v| v.stop).collect();
        assert_eq!(stop, [false, false, false, false, false, true]);
    }

    #[test]
    fn the_highest_pass_rate_is_best_and_ties_do_not_improve() {
        let (s, v) = run(BestBy::PassRate, 0.0, 0, &[0.4, 0.5, 0.5, 0.45]);
        assert_eq!(
            s.best,
            Some(Measured {
                step: 20,
                value: 0.5
            })
        );
        assert!(v.iter().all(|v| !v.stop), "patience 0 never stops");
        assert_eq!(s.evals_since_best, 2);
    }

    #[test]
    fn a_gain_within_min_delta_is_no_gain() {
        let (s, v) = run(BestBy::EvalLoss, 0.05, 1, &[1.0, 0.97]);
        assert_eq!(s.best.map(|b| b.step), Some(10));
        assert!(v[1].stop);
    }

    #[test]
    fn a_nan_never_becomes_the_best() {
        let (s, v) = run(BestBy::EvalLoss, 0.0, 3, &[f64::NAN, 1.0, f64::NAN]);
        assert!(!v[0].improved);
        assert_eq!(
            s.best,
            Some(Measured {
                step: 20,
                value: 1.0
            })
        );
        assert_eq!(s.evals_since_best, 1);
    }

    #[test]
    fn the_description_says_which_adapter_and_why() {
        let c = FinalChoice {
            wanted: FinalAdapter::Best,
            adapter_step: 40,
            last_step: 60,
            best_by: BestBy::PassRate,
            best: Some(Measured {
                step: 40,
                value: 0.5,
            }),
            early_stopped: true,
        };
        let d = c.describe();
        assert!(
            d.contains("step 40's") && d.contains("50.0 %") && d.contains("early"),
            "{d}"
        );
    }
}
