//! finetune-studio: a desktop studio for instruction tuning (LoRA) of language models.
//!
//! The library holds everything; `main.rs` only parses the command line and starts the
//! GUI or a subcommand. The map of the modules is in `DESIGN.md`.

pub mod app;
pub mod cli;
pub mod data;
pub mod export;
pub mod infer;
pub mod model;
pub mod paths;
pub mod sys;
pub mod train;
pub mod worker;
