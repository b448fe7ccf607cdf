//! The eframe application.

mod shell;

pub use shell::StudioApp;

/// Opens the studio window. `model` is the model to load (`default` when `None`).
pub fn run(model: Option<String>) -> anyhow::Result<()> {
    let options = eframe::NativeOptions {
        viewport: eframe::egui::ViewportBuilder::default()
            .with_title("finetune-studio")
            .with_inner_size([1280.0, 800.0])
            .with_min_inner_size([800.0, 500.0]),
        ..Default::default()
    };
    eframe::run_native(
        "finetune-studio",
        options,
        Box::new(move |cc| Ok(Box::new(StudioApp::new(cc, model)))),
    )
    .map_err(|e| anyhow::anyhow!("cannot open the window: {e}"))
}
