//! Where the studio keeps its files: the data directory (models, runs, recovery files)
//! and the Hugging Face cache it reads models from.

use std::path::{Path, PathBuf};

/// The studio's data directory: `$FINETUNE_STUDIO_HOME`, else the platform data dir
/// (`~/.local/share/finetune-studio` on Linux).
pub fn data_dir() -> PathBuf {
    if let Some(p) = std::env::var_os("FINETUNE_STUDIO_HOME") {
        return PathBuf::from(p);
    }
    dirs::data_dir()
        .unwrap_or_else(std::env::temp_dir)
        .join("finetune-studio")
}

/// Models the studio fetched itself.
pub fn models_dir() -> PathBuf {
    data_dir().join("models")
}

/// Training runs, one folder each.
pub fn runs_dir() -> PathBuf {
    data_dir().join("runs")
}

/// The Hugging Face hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else
/// `~/.cache/huggingface/hub`.
pub fn hf_hub_cache() -> PathBuf {
    if let Some(p) = std::env::var_os("HF_HUB_CACHE") {
        return PathBuf::from(p);
    }
    if let Some(p) = std::env::var_os("HF_HOME") {
        return PathBuf::from(p).join("hub");
    }
    dirs::home_dir()
        .unwrap_or_else(|| PathBuf::from("."))
        .join(".cache")
        .join("huggingface")
        .join("hub")
}

/// The last component of `p` for display, or the whole path when it has none (`/`, `..`).
pub fn file_name(p: &Path) -> String {
    p.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.display().to_string())
}
