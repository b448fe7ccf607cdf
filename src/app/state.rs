//! The UI state that survives a restart, stored through eframe's storage: the last
//! dataset and recent files, the model, the run configuration, the theme and the layout.
//! Every field has a default, so an older or damaged store still loads.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::tab::Tab;
use crate::train::RunConfig;

/// The key under which eframe stores [`Persisted`].
pub const STORAGE_KEY: &str = "finetune-studio-ui";

/// How many recent files the Datasets tab remembers.
const MAX_RECENT: usize = 10;

/// Dark, light, or whatever the system prefers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum ThemeChoice {
    #[default]
    Dark,
    Light,
    System,
}

impl ThemeChoice {
    pub fn preference(self) -> eframe::egui::ThemePreference {
        match self {
            ThemeChoice::Dark => eframe::egui::ThemePreference::Dark,
            ThemeChoice::Light => eframe::egui::ThemePreference::Light,
            ThemeChoice::System => eframe::egui::ThemePreference::System,
        }
    }
}

/// Which panels of the Datasets tab are open.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Layout {
    pub editor_open: bool,
    pub stats_open: bool,
    pub problems_open: bool,
}

impl Default for Layout {
    fn default() -> Self {
        Layout {
            editor_open: true,
            stats_open: true,
            problems_open: true,
        }
    }
}

/// Everything persisted between sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Persisted {
    pub tab: Tab,
    pub theme: ThemeChoice,
    /// The dataset open when the studio last closed.
    pub last_dataset: Option<PathBuf>,
    /// Most recent first.
    pub recent_files: Vec<PathBuf>,
    /// The model the studio loads (`default`, a folder, a `.gguf` file or a hub id).
    pub model: String,
    /// Models loaded before (`--model` specs), most recent first.
    pub recent_models: Vec<String>,
    pub run_config: RunConfig,
    pub layout: Layout,
    /// Exponential smoothing of the loss curve, 0 (none) to 0.99.
    pub loss_smoothing: f32,
}

impl Default for Persisted {
    fn default() -> Self {
        Persisted {
            tab: Tab::default(),
            theme: ThemeChoice::default(),
            last_dataset: None,
            recent_files: Vec::new(),
            model: "default".into(),
            recent_models: Vec::new(),
            run_config: RunConfig::default(),
            layout: Layout::default(),
            loss_smoothing: 0.6,
        }
    }
}

impl Persisted {
    /// Puts `path` first in the recent files.
    pub fn remember_file(&mut self, path: &Path) {
        self.recent_files.retain(|p| p != path);
        self.recent_files.insert(0, path.to_path_buf());
        self.recent_files.truncate(MAX_RECENT);
        self.last_dataset = Some(path.to_path_buf());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recent_files_are_unique_and_bounded() {
        let mut s = Persisted::default();
        for i in 0..15 {
            s.remember_file(Path::new(&format!("/d/{i}.json")));
        }
        s.remember_file(Path::new("/d/3.json"));
        assert_eq!(s.recent_files.len(), MAX_RECENT);
        assert_eq!(s.recent_files[0], Path::new("/d/3.json"));
        assert_eq!(
            s.recent_files
                .iter()
                .filter(|p| p.ends_with("3.json"))
                .count(),
            1
        );
    }

    #[test]
    fn missing_fields_take_defaults() {
        let s: Persisted = serde_json::from_str(r#"{"theme":"Light"}"#).unwrap();
        assert_eq!(s.theme, ThemeChoice::Light);
        assert_eq!(s.model, "default");
    }
}
