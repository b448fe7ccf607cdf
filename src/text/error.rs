//! Errors of the text layer (tokenizers, chat templates). Each names the file or the
//! template it comes from and what is wrong with it.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum TextError {
    #[error("{path}: {message}")]
    Tokenizer { path: PathBuf, message: String },

    #[error("chat template of {source_name}: {message}")]
    Template {
        source_name: String,
        message: String,
    },

    /// The I/O error is part of the message, not a separate source, so that a report of
    /// the whole chain (`{:#}`) does not repeat it.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl TextError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        TextError::Io {
            path: path.into(),
            error: source,
        }
    }
}
