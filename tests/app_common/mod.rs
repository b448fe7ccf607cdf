//! The one harness factory for the GUI tests: the real `StudioApp`, headless, with no
//! model loaded and the data directory in a temporary folder, plus helpers to step a UI
//! that keeps repainting until something happens.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use egui_kittest::Harness;
use finetune_studio::app::{AppOptions, StudioApp};

/// A temporary studio home (data dir and HF cache) shared by the tests of one binary.
pub fn studio_home() -> &'static PathBuf {
    static HOME: OnceLock<PathBuf> = OnceLock::new();
    HOME.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir").keep();
        // Set before any thread reads them; nothing here touches the user's folders.
        std::env::set_var("FINETUNE_STUDIO_HOME", dir.join("home"));
        std::env::set_var("HF_HOME", dir.join("hf"));
        dir
    })
}

/// A fixture file of this repository.
pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

/// The studio app in a 1280×800 harness. Datasets hold any script (the identity fixture
/// has Chinese), which the bundled fonts cannot all draw, so missing glyphs are boxes here
/// as in the app rather than a panic.
pub fn harness() -> Harness<'static, StudioApp> {
    harness_with(AppOptions::headless())
}

/// The studio app in a 1280×800 harness, started with `options`.
pub fn harness_with(options: AppOptions) -> Harness<'static, StudioApp> {
    harness_sized(options, [1280.0, 800.0])
}

/// The studio app in a harness of `size` (a tall one shows a long form without scrolling).
#[allow(dead_code)]
pub fn harness_sized(options: AppOptions, size: [f32; 2]) -> Harness<'static, StudioApp> {
    studio_home();
    Harness::builder()
        .with_size(size)
        .allow_missing_glyphs()
        .build_eframe(move |cc| StudioApp::with_options(cc, options))
}

/// Steps the UI (sleeping a little between frames, as a real window would) until `done`
/// holds or `timeout` passes. Returns whether it held.
pub fn step_until(
    h: &mut Harness<'static, StudioApp>,
    timeout: Duration,
    mut done: impl FnMut(&StudioApp) -> bool,
) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        h.step();
        if done(h.state()) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// Opens a dataset with its path injected (no dialog) and waits until it is shown.
pub fn open_dataset(h: &mut Harness<'static, StudioApp>, path: &std::path::Path) {
    h.state_mut().open_dataset(path, 0.0);
    assert!(
        step_until(h, Duration::from_secs(20), |app| app.datasets.doc.is_some()),
        "the dataset did not load; notices: {:?}",
        h.state().notices.items()
    );
}
