//! finetune-studio: a desktop studio for instruction tuning (LoRA) of language models.
//!
//! The library holds everything; `main.rs` only parses the command line and starts the
//! GUI or a subcommand. The map of the modules is in `DESIGN.md`.

pub mod adapter;
pub mod app;
pub mod cli;
pub mod data;
pub mod eval;
pub mod export;
pub mod fsio;
pub mod handoff;
pub mod hub;
pub mod infer;
pub mod jobs;
pub mod model;
pub mod ops;
pub mod paths;
pub mod sys;
#[cfg(any(test, feature = "test-support"))]
pub mod testkit;
pub mod text;
pub mod train;
pub mod worker;
