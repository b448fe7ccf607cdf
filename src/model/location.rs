//! Where a model's files are on disk, and its hub id when known.

use std::path::{Path, PathBuf};

/// Where a model's files are.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelLocation {
    /// A folder with `config.json`, `tokenizer.json` and safetensors weights.
    HfFolder(PathBuf),
    /// One `.gguf` file.
    Gguf(PathBuf),
}

impl ModelLocation {
    pub fn path(&self) -> &Path {
        match self {
            ModelLocation::HfFolder(p) | ModelLocation::Gguf(p) => p,
        }
    }
}

/// A resolved model: where it is and, when known, its hub id.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedModel {
    pub location: ModelLocation,
    pub hub_id: Option<String>,
}
