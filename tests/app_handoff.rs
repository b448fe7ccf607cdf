//! GUI test of the hand-off: from the Runs tab a run is written as a LLaMA-Factory
//! project on its own thread (the dialog lists the files and the command), and an
//! engine's output folder, typed into the import dialog, joins the run list marked as
//! imported, with its curve selected and Resume not offered.

mod app_common;

use std::time::Duration;

use app_common::{fixture, harness, step_until, studio_home};
use eframe::egui::accesskit::Role;
use egui_kittest::kittest::Queryable;
use finetune_studio::app::Tab;
use finetune_studio::model::Architecture;
use finetune_studio::testkit::{write_tiny_adapter, write_tiny_model};
use finetune_studio::train::config::EvalSplit;
use finetune_studio::train::RunConfig;

const WAIT: Duration = Duration::from_secs(60);

#[test]
fn a_run_is_handed_off_and_an_engines_output_comes_back() {
    let home = studio_home();
    let model_dir = write_tiny_model(&home.join("tiny-handoff"), Architecture::Llama, 5).unwrap();
    let runs_dir = home.join("runs-handoff-test");
    let run = runs_dir.join("20260101-000000-identity");
    std::fs::create_dir_all(&run).unwrap();
    let mut cfg = RunConfig::default();
    cfg.model.base = model_dir.display().to_string();
    cfg.data.path = fixture("llamafactory_identity.json");
    cfg.data.eval_split = EvalSplit::Count(4);
    cfg.output.name = "identity".into();
    std::fs::write(run.join("run.toml"), cfg.to_toml()).unwrap();
    write_tiny_adapter(&run.join("adapter"), Architecture::Llama, 4).unwrap();

    let mut h = harness();
    h.state_mut().state.run_config.output.runs_dir = Some(runs_dir.clone());
    h.state_mut().state.tab = Tab::Runs;
    assert!(step_until(&mut h, WAIT, |app| !app.runs.runs.is_empty()));
    h.run_steps(2);
    h.get_by_label("Hand off…").click();
    h.run_steps(4);
    assert!(h.state().handoff.is_some(), "the dialog opened");
    h.get_by_label("Write project").click();
    h.run_steps(1);
    assert!(step_until(&mut h, WAIT, |app| app
        .handoff
        .as_ref()
        .is_some_and(|d| !d.is_running())));
    h.run_steps(2);
    assert!(
        h.query_by_label_contains("Written to").is_some(),
        "notices: {:?}",
        h.state().notices.items()
    );
    let project = finetune_studio::paths::data_dir()
        .join("handoff")
        .join("20260101-000000-identity-llamafactory");
    for f in [
        "train.yaml",
        "data/train.json",
        "data/dataset_info.json",
        "README.md",
    ] {
        assert!(
            project.join(f).is_file(),
            "{f} missing in {}",
            project.display()
        );
    }
    assert!(h
        .query_by_label_contains("llamafactory-cli train train.yaml")
        .is_some());
    h.state_mut().handoff = None;
    h.run_steps(2);

    // The engine's output, as LLaMA-Factory leaves it in the project.
    let output = project.join("output");
    write_tiny_adapter(&output, Architecture::Llama, 4).unwrap();
    for f in ["trainer_state.json", "trainer_log.jsonl"] {
        std::fs::copy(
            fixture("handoff/llamafactory_output").join(f),
            output.join(f),
        )
        .unwrap();
    }
    h.get_by_label("Import engine output…").click();
    h.run_steps(4);
    h.get_by_role_and_label(Role::TextInput, "Engine output folder")
        .focus();
    h.run_steps(1);
    h.get_by_role_and_label(Role::TextInput, "Engine output folder")
        .type_text(&output.display().to_string());
    h.run_steps(1);
    h.get_by_label("Import").click();
    assert!(step_until(&mut h, WAIT, |app| app
        .runs
        .runs
        .iter()
        .any(|r| r.imported.is_some())));
    h.run_steps(2);
    assert!(h.query_by_label_contains("Imported as").is_some());
    let imported = h
        .state()
        .runs
        .runs
        .iter()
        .find(|r| r.imported.is_some())
        .cloned()
        .unwrap();
    assert!(imported.has_adapter && !imported.steps.is_empty() && !imported.evals.is_empty());
    assert!(
        h.state().runs.selected.contains(&imported.path),
        "its curve is shown"
    );
    h.state_mut().handoff = None;
    h.run_steps(2);
    assert!(h
        .query_by_label_contains("imported (LLaMA-Factory)")
        .is_some());
}
