//! GUI test of the Models tab: the models in the studio's models folder are listed with
//! their architecture, size and quantization (read from their headers), and can be loaded
//! and unloaded; a bad path gets a clear error and the studio goes on.

mod app_common;

use std::time::Duration;

use app_common::{harness, step_until, studio_home};
use egui_kittest::kittest::Queryable;
use finetune_studio::app::Tab;
use finetune_studio::export::gguf::{write_gguf, GgufType};
use finetune_studio::model::{self, Architecture};
use finetune_studio::testkit::write_tiny_model;

fn is_ready(app: &finetune_studio::app::StudioApp) -> bool {
    app.model.model().is_some()
}

#[test]
fn list_load_and_unload_models() {
    studio_home();
    let models = finetune_studio::paths::models_dir();
    let folder = write_tiny_model(&models.join("tiny-qwen3"), Architecture::Qwen3, 2).unwrap();
    let m = model::load_hf_folder(&folder, &candle_core::Device::Cpu).unwrap();
    write_gguf(&m, &models.join("tiny-q8.gguf"), GgufType::Q8_0).unwrap();

    let mut h = harness();
    h.state_mut().state.tab = Tab::Models;
    assert!(step_until(&mut h, Duration::from_secs(20), |app| app
        .models
        .entries
        .len()
        >= 2));
    h.run_steps(2);
    assert!(h.query_by_label("tiny-qwen3").is_some());
    assert!(h.query_by_label("tiny-q8.gguf").is_some());
    assert_eq!(h.query_all_by_label("qwen3").count(), 2, "both are qwen3");
    assert!(h.query_by_label_contains("Q8_0 ·").is_some());
    assert!(h.query_by_label_contains("f32 ·").is_some());

    // The first Load button belongs to the path field (disabled while it is empty); the
    // next ones to the rows, sorted by name: tiny-q8.gguf, then tiny-qwen3.
    h.get_all_by_label("Load").nth(2).unwrap().click();
    assert!(
        step_until(&mut h, Duration::from_secs(30), is_ready),
        "notices: {:?}",
        h.state().notices.items()
    );
    h.run_steps(2);
    assert!(h.query_by_label("loaded").is_some());
    assert_eq!(h.state().state.model, folder.display().to_string());
    assert_eq!(
        h.state().state.recent_models.first(),
        Some(&folder.display().to_string())
    );

    h.get_by_label("Unload").click();
    h.run_steps(2);
    assert!(!is_ready(h.state()));
    assert!(h.query_by_label("loaded").is_none());

    // A path that is not a model: a clear error, and the tab goes on.
    h.state_mut().models.spec_input = "/no/such/model.gguf".into();
    h.run_steps(1);
    h.get_all_by_label("Load").next().unwrap().click();
    assert!(step_until(&mut h, Duration::from_secs(20), |app| matches!(
        app.model,
        finetune_studio::app::ModelSlot::Failed { .. }
    )));
    h.run_steps(2);
    assert!(h
        .query_by_label_contains("/no/such/model.gguf could not be loaded")
        .is_some());
}
