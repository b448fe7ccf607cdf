//! Export: PEFT adapters, merged Hugging Face folders and GGUF files.

pub mod gguf;
pub mod merge;
pub mod ollama;
pub mod peft;
