//! The eframe application: one file per tab (`datasets`, `train`, `runs`, `chat`,
//! `models`), the shell around them (`shell`: tab bar, status bar, notifications,
//! shortcuts, close guard, persistence), and the widgets they share. Heavy work goes to
//! `crate::worker`; the UI thread only draws and drains events.

mod add_example;
mod batch_compare;
mod batch_judge;
mod batch_suite;
mod batch_table;
mod blind_ab;
mod busy;
mod chat;
mod chat_pane;
mod conversation_editor;
mod dataset_contamination;
mod dataset_doc;
mod dataset_filter;
mod dataset_scores;
mod dataset_stats;
mod dataset_table;
mod datasets;
mod export_dialog;
mod fields;
mod fonts;
mod frame_times;
mod handoff_dialog;
mod live_plots;
mod memory_gauge;
mod model_slot;
mod models;
mod notify;
mod preference_plots;
pub mod preference_view;
mod progress;
mod runs;
mod shared;
mod shell;
mod state;
mod status_bar;
mod suite_results;
mod tab;
mod template_picker;
mod train;
mod train_estimate;
mod train_eval_form;
mod train_form;
mod train_stage;

pub use add_example::ExampleDraft;
pub use batch_compare::{BatchCompare, BatchShown, PromptSource};
pub use batch_judge::{result_path as judge_result_path, JudgeRun};
pub use batch_suite::SuiteRun;
pub use batch_table::{BatchRow, BatchTable, Cell};
pub use blind_ab::{BlindAb, Draft, Kept};
pub use chat::{ChatAction, ChatTab, ChatView};
pub use chat_pane::{ChatPane, Turn};
pub use dataset_doc::OpenDataset;
pub use dataset_filter::FlagFilter;
pub use dataset_scores::{RecordScores, ScoreColumn, ScoreSort};
pub use datasets::DatasetsTab;
pub use frame_times::FrameTimes;
pub use live_plots::{smooth, Curves};
pub use model_slot::ModelSlot;
pub use models::{ModelsAction, ModelsTab};
pub use notify::{Level, Notice, Notifications};
pub use runs::{preference_curves, PreferenceCurves, PreferenceMeasure, RunsTab};
pub use shell::{AppOptions, StudioApp};
pub use state::{Layout, Persisted, ThemeChoice};
pub use suite_results::{rate_text, PaneResults, SuiteComparison};
pub use tab::Tab;
pub use train::{RunStatus, RunView, TrainTab};

/// Opens the studio window. `model` is the model to load (`default` when `None`);
/// `open_dataset` is a dataset file to open in the Datasets tab (the last one when `None`).
pub fn run(model: Option<String>, open_dataset: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("finetune-studio")
            .with_app_id("finetune-studio")
            .with_inner_size([1280.0, 800.0])
            .with_min_inner_size([800.0, 500.0])
            .with_drag_and_drop(true),
        ..Default::default()
    };
    eframe::run_native(
        "finetune-studio",
        options,
        Box::new(move |cc| Ok(Box::new(StudioApp::new(cc, model, open_dataset)))),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))
}
