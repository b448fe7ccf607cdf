//! Export: PEFT adapters, merged Hugging Face folders and GGUF files; [`job`] runs one
//! export with its read-back check.

pub mod gguf;
pub mod job;
pub mod merge;
pub mod ollama;
pub mod quant_policy;
