//! Training: run configuration, batching, the LoRA step loop, checkpoints and the run
//! directory.

pub mod batch;
pub mod loss;
