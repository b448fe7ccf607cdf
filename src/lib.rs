//! finetune-studio: a desktop studio for instruction tuning (LoRA) of language models.
//!
//! The library holds everything; `main.rs` only parses the command line and starts the
//! GUI or a subcommand. The map of the modules is in `DESIGN.md`.

pub mod data;
pub mod paths;
pub mod model;
pub mod infer;
pub mod train;
pub mod cli;
pub mod app;
pub mod export;
