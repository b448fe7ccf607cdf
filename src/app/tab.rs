//! The tabs of the studio window.

use serde::{Deserialize, Serialize};

/// Which tab is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Tab {
    #[default]
    Datasets,
    Train,
    Runs,
    Chat,
    Models,
}

impl Tab {
    pub const ALL: [Tab; 5] = [Tab::Datasets, Tab::Train, Tab::Runs, Tab::Chat, Tab::Models];

    pub fn label(self) -> &'static str {
        match self {
            Tab::Datasets => "Datasets",
            Tab::Train => "Train",
            Tab::Runs => "Runs",
            Tab::Chat => "Chat",
            Tab::Models => "Models",
        }
    }
}
