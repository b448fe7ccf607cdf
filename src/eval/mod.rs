//! Eval suites of verifiable checks: the JSONL suite format and the built-in suite
//! (`suite`), the checks and how they decide (`check`, `text_counts`), a suite run through
//! a model and optional adapter (`run`), and its results with pass rates (`report`); the
//! other set of a contamination check named by a file or `builtin` (`against`); two sets
//! of replies compared pairwise by a local judge model (`judge`).

pub mod against;
pub mod check;
pub mod judge;
pub mod report;
pub mod run;
pub mod suite;
pub mod text_counts;

pub use check::{Check, Outcome, CHECK_TYPES};
pub use report::{CheckResult, CheckTypeRate, PromptResult, Rate, SuiteReport};
pub use run::{run_suite, RunError, RunOptions};
pub use suite::{Suite, SuiteError, SuiteInput, SuiteItem, SuiteMessage, BUILTIN_NAME};
