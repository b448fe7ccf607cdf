//! Native file dialogs, each on its own job thread: rfd blocks its caller
//! and, on Linux, may wait on xdg-desktop-portal for as long as it likes. The picked path
//! comes back as [`Event::Picked`]; `None` when cancelled or when no dialog could be shown.

use std::path::PathBuf;

use super::{DialogPurpose, Event};

const DATASET_EXTENSIONS: &[&str] = &["json", "jsonl", "ndjson", "csv", "parquet"];

fn dialog_for(purpose: DialogPurpose, start: Option<PathBuf>) -> rfd::FileDialog {
    let mut d = rfd::FileDialog::new();
    if let Some(start) = start {
        let dir = if start.is_dir() {
            Some(start)
        } else {
            start.parent().map(|p| p.to_path_buf())
        };
        if let Some(dir) = dir.filter(|d| d.is_dir()) {
            d = d.set_directory(dir);
        }
    }
    match purpose {
        DialogPurpose::OpenDataset | DialogPurpose::TrainDataset => d
            .set_title("Open a dataset")
            .add_filter("Datasets", DATASET_EXTENSIONS)
            .add_filter("All files", &["*"]),
        DialogPurpose::SaveDatasetAs => d
            .set_title("Save the dataset as")
            .add_filter("Datasets", DATASET_EXTENSIONS),
        DialogPurpose::ModelFolder | DialogPurpose::LoadModelFolder => {
            d.set_title("Choose a model folder")
        }
        DialogPurpose::ImportRunFolder => d.set_title("Choose the engine's output folder"),
        DialogPurpose::EvalSuite | DialogPurpose::BatchSuite => d
            .set_title("Choose an eval suite")
            .add_filter("Eval suites", &["jsonl"])
            .add_filter("All files", &["*"]),
        DialogPurpose::ModelGguf | DialogPurpose::LoadModelGguf => d
            .set_title("Choose a GGUF model")
            .add_filter("GGUF", &["gguf"]),
    }
}

/// Shows the dialog and waits for it (on the dialog's own job thread).
pub(super) fn pick(purpose: DialogPurpose, save: bool, start: Option<PathBuf>) -> Event {
    let d = dialog_for(purpose, start);
    let path = if save {
        d.save_file()
    } else if purpose.picks_folder() {
        d.pick_folder()
    } else {
        d.pick_file()
    };
    Event::Picked { purpose, path }
}
