//! Export: PEFT adapters, merged Hugging Face folders and GGUF files.

pub mod gguf;
