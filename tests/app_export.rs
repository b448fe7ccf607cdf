//! GUI test of the export dialog: a run with an adapter on a tiny model is exported as
//! GGUF from the Runs tab, on the export thread, and the dialog shows the files written
//! and the read-back check.

mod app_common;

use std::time::Duration;

use app_common::{harness, step_until, studio_home};
use egui_kittest::kittest::Queryable;
use finetune_studio::app::Tab;
use finetune_studio::model::Architecture;
use finetune_studio::testkit::{write_tiny_adapter, write_tiny_model};
use finetune_studio::train::RunConfig;

#[test]
fn export_a_run_as_gguf_from_the_runs_tab() {
    let home = studio_home();
    let model_dir = write_tiny_model(&home.join("tiny-export"), Architecture::Llama, 9).unwrap();
    let runs_dir = home.join("runs-export-test");
    let run = runs_dir.join("20260101-000000-tiny");
    std::fs::create_dir_all(&run).unwrap();
    let mut cfg = RunConfig::default();
    cfg.model.base = model_dir.display().to_string();
    std::fs::write(run.join("run.toml"), cfg.to_toml()).unwrap();
    write_tiny_adapter(&run.join("adapter"), Architecture::Llama, 4).unwrap();

    let mut h = harness();
    h.state_mut().state.run_config.output.runs_dir = Some(runs_dir.clone());
    h.state_mut().state.tab = Tab::Runs;
    assert!(step_until(&mut h, Duration::from_secs(20), |app| !app
        .runs
        .runs
        .is_empty()));
    h.run_steps(2);
    h.get_by_label("Export…").click();
    // The window sizes itself and centres over a few frames.
    h.run_steps(4);
    assert!(h.state().export.is_some(), "the dialog opened");
    // q8_0 GGUF is the default choice; the output goes to the run's export folder.
    h.get_by_label("GGUF f16 + Ollama Modelfile").click();
    h.run_steps(1);
    h.get_by_label("Export").click();
    h.run_steps(1);
    assert!(step_until(&mut h, Duration::from_secs(60), |app| app
        .export
        .as_ref()
        .is_some_and(|d| !d.is_running())));
    h.run_steps(2);
    assert!(
        h.query_by_label_contains("Read back and compared")
            .is_some(),
        "notices: {:?}",
        h.state().notices.items()
    );
    let out = run.join("export").join("gguf-f16");
    assert!(out.join("model.gguf").is_file());
    assert!(out.join("Modelfile").is_file());
    assert!(h.query_by_label_contains("model.gguf").is_some());
}
