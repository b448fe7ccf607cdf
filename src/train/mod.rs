//! Training: run configuration, batching, the LoRA step loop, checkpoints and the run
//! directory.

pub mod batch;
pub mod config;
pub mod events;
pub mod loss;

pub use config::RunConfig;
pub use events::{Estimate, StepMetrics, Summary, TrainCommand, TrainEvent};
