//! Errors of the model layer. Each names the file and what is wrong with it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("{path}: {message}")]
    Config { path: PathBuf, message: String },

    #[error(
        "{path}: unsupported architecture `{found}` (supported: llama, mistral, qwen2, qwen3, gemma3)"
    )]
    UnsupportedArchitecture { path: PathBuf, found: String },

    #[error("{path}: {message}")]
    Weights { path: PathBuf, message: String },

    #[error("{path}: this is a PyTorch pickle file, which can run arbitrary code when loaded and is never unpickled here; convert it to safetensors (e.g. `python -c \"from transformers import AutoModelForCausalLM as M; M.from_pretrained('DIR').save_pretrained('OUT', safe_serialization=True)\"`) or pick a .gguf file")]
    Pickle { path: PathBuf },

    /// A tokenizer or chat template that cannot be used.
    #[error(transparent)]
    Text(#[from] crate::text::TextError),

    #[error("model `{spec}` not found: {message}")]
    NotFound { spec: String, message: String },

    #[error("{0}")]
    Fetch(String),

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// The I/O error is part of the message, not a separate source, so that a report of
    /// the whole chain (`{:#}`) does not repeat it.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl From<crate::fsio::WriteError> for ModelError {
    fn from(e: crate::fsio::WriteError) -> Self {
        ModelError::Io {
            path: e.path,
            error: e.error,
        }
    }
}

impl ModelError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ModelError::Io {
            path: path.into(),
            error: source,
        }
    }
    pub fn weights(path: impl Into<PathBuf>, message: impl std::fmt::Display) -> Self {
        ModelError::Weights {
            path: path.into(),
            message: message.to_string(),
        }
    }
}
