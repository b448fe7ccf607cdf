//! Instruction datasets: the normalized record, format readers and writers, validation, editing, statistics.
//!
//! Start from [`load`] (auto-detects the format) or, for a LLaMA-Factory `dataset_info.json`,
//! [`list_dataset_info_entries`] and [`load_dataset_info_entry`]. The [`Dataset`] holds the
//! records, where they came from, their problems and the edit history.

pub mod contamination;
pub mod dataset;
pub mod dedup;
pub mod edit;
pub mod error;
pub mod formats;
pub mod judgment;
pub mod preference;
pub mod preference_formats;
pub mod reasoning;
pub mod record;
pub mod search;
pub mod split;
pub mod stats;
pub mod tally;
pub mod validate;

use std::path::Path;

pub use dataset::Dataset;
pub use edit::Edit;
pub use error::{DataError, Problem, ProblemKind, Severity};
pub use formats::dataset_info::DatasetInfoEntry;
pub use formats::{Encoding, Format, Mapping, Schema};
pub use preference::{PreferenceEdit, PreferencePair, PreferenceSet};
pub use preference_formats::{PreferenceFormat, PreferenceLayout};
pub use record::{Conversation, Message, Role};
pub use stats::{ByteCounter, Stats, StatsOptions, TokenCounter, WhitespaceCounter};

/// Loads a dataset file. `format` overrides auto-detection. A path of the form
/// `dataset_info.json#entry` loads that entry of a LLaMA-Factory dataset_info.json.
pub fn load(path: &Path, format: Option<Format>) -> Result<Dataset, DataError> {
    if !path.exists() {
        if let Some((file, entry)) = path.to_str().and_then(|s| s.rsplit_once('#')) {
            let file = Path::new(file);
            if file.is_file() {
                return load_dataset_info_entry(file, entry);
            }
        }
    }
    Dataset::load(path, format)
}

/// The entries of a LLaMA-Factory dataset_info.json, in file order.
pub fn list_dataset_info_entries(path: &Path) -> Result<Vec<DatasetInfoEntry>, DataError> {
    formats::dataset_info::entries(path)
}

/// Loads one entry of a LLaMA-Factory dataset_info.json. Warnings about the entry (unknown
/// keys such as `format` for `formatting`) are in [`Dataset::file_problems`].
pub fn load_dataset_info_entry(path: &Path, name: &str) -> Result<Dataset, DataError> {
    let (out, warnings, file) = formats::dataset_info::read_entry(path, name)?;
    let mut ds = Dataset::from_read(out, Some(&file))?;
    ds.file_problems.extend(warnings);
    ds.entry = Some((path.to_path_buf(), name.to_string()));
    Ok(ds)
}
