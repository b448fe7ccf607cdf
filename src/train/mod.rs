//! Training: run configuration, batching, the LoRA step loop, checkpoints and the run
//! directory. [`spawn`] and [`resume`] run it as a job (`crate::jobs`).

pub mod adapter;
pub mod batch;
pub mod checkpoint;
pub mod config;
pub mod data;
pub mod estimate;
pub mod events;
pub mod job;
pub mod loss;
pub mod optim;
pub mod pairs;
pub mod plan;
pub mod preference;
pub mod run_dir;
pub mod score;
pub mod selection;
pub mod suite_eval;
pub mod template;
pub mod trainer;

pub use config::{RunConfig, Stage};
pub use estimate::estimate;
pub use events::{Estimate, PreferenceMetrics, StepMetrics, Summary, TrainCommand, TrainEvent};
pub use job::{resume, spawn, spawn_planned, TrainHandle};
pub use run_dir::{list_runs, RunInfo};
pub use selection::{BestBy, FinalAdapter, FinalChoice};

/// `train::runs::list_runs` and friends, under the name the GUI uses.
pub mod runs {
    pub use super::run_dir::{checkpoint_steps, list_runs, read_run, RunInfo};
}
