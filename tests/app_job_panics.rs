//! A job that panics, for each kind of job the window starts, leaves its tab usable: the
//! tab stops waiting ("loading…", "analyzing…", "generating…", "searching…"), the failure
//! is shown, and the same action works when tried again. The panics are injected through
//! `jobs::fault` (a test-support feature), so the real job code runs otherwise.

mod app_common;
mod chat_common;

use std::sync::Mutex;
use std::time::Duration;

use app_common::{fixture, harness, open_dataset, step_until, studio_home};
use chat_common::{chat_harness, done, type_message};
use eframe::egui;
use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;
use finetune_studio::app::{ModelSlot, RunStatus, StudioApp, Tab};
use finetune_studio::jobs::{fault, JobKind};

/// The faults are process-wide: one test at a time arms them.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const WAIT: Duration = Duration::from_secs(60);

/// Whether an error notice mentions the injected fault.
fn fault_shown(app: &StudioApp) -> bool {
    app.notices
        .items()
        .iter()
        .any(|n| format!("{n:?}").contains("fault injected"))
}

fn armed_and_struck(h: &mut Harness<'static, StudioApp>, kind: JobKind) {
    assert!(
        step_until(h, WAIT, |_| !fault::is_armed(kind)),
        "no {kind:?} job started"
    );
}

#[test]
fn opening_analyzing_searching_and_saving_a_dataset_recover_from_a_panic() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut h = harness();
    h.run_steps(2);
    let path = fixture("llamafactory_identity.json");

    // Opening: the tab stops loading and says why; opening again works.
    fault::panic_next(JobKind::OpenDataset);
    h.state_mut().open_dataset(&path, 0.0);
    assert!(step_until(&mut h, WAIT, fault_shown), "no notice");
    assert!(h.state().datasets.loading.is_none(), "still loading");
    assert!(h.state().datasets.doc.is_none());

    // Analyzing: the statistics say they failed instead of spinning, and the tab goes idle.
    fault::panic_next(JobKind::AnalyzeDataset);
    open_dataset(&mut h, &path);
    armed_and_struck(&mut h, JobKind::AnalyzeDataset);
    assert!(
        step_until(&mut h, WAIT, |app| app
            .datasets
            .doc
            .as_ref()
            .is_some_and(|d| d.analysis_failed.is_some())),
        "the failed analysis was not recorded"
    );
    assert!(
        step_until(&mut h, WAIT, |app| !app.datasets.is_busy()),
        "the tab stays busy"
    );
    assert!(h
        .query_by_label_contains("statistics could not be computed")
        .is_some());

    // Searching: the search ends with the error shown, and a new query searches again.
    fault::panic_next(JobKind::SearchDataset);
    h.state_mut().datasets.filter.text = "Hello".into();
    armed_and_struck(&mut h, JobKind::SearchDataset);
    assert!(
        step_until(&mut h, WAIT, |app| !app.datasets.filter.searching),
        "still searching"
    );
    h.state_mut().datasets.filter.text = "Hello there".into();
    assert!(
        step_until(&mut h, WAIT, |app| app
            .datasets
            .filter
            .match_count()
            .is_some()),
        "a second search found nothing"
    );

    // Saving: the save ends, the edits stay, and saving again writes the file.
    let copy = studio_home().join("panic-save.json");
    std::fs::copy(&path, &copy).unwrap();
    h.state_mut().open_dataset(&copy, 0.0);
    assert!(step_until(&mut h, WAIT, |app| app
        .datasets
        .doc
        .as_ref()
        .is_some_and(|d| d.data().path() == Some(copy.as_path()))));
    h.state_mut()
        .datasets
        .doc
        .as_mut()
        .unwrap()
        .apply(finetune_studio::data::Edit::DeleteRecord { index: 0 }, 0.0)
        .unwrap();
    h.run_steps(2);
    fault::panic_next(JobKind::SaveDataset);
    h.key_press_modifiers(egui::Modifiers::COMMAND, egui::Key::S);
    armed_and_struck(&mut h, JobKind::SaveDataset);
    assert!(
        step_until(&mut h, WAIT, |app| app
            .datasets
            .doc
            .as_ref()
            .is_some_and(|d| d.saving.is_none())),
        "still saving"
    );
    assert!(h.state().datasets.doc.as_ref().unwrap().is_dirty());
}

#[test]
fn listing_runs_and_models_recover_from_a_panic() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut h = harness();
    h.run_steps(2);
    fault::panic_next(JobKind::ListRuns);
    h.state_mut().state.tab = Tab::Runs;
    armed_and_struck(&mut h, JobKind::ListRuns);
    assert!(
        step_until(&mut h, WAIT, |app| !app.runs.is_loading()),
        "the Runs tab stays loading"
    );

    fault::panic_next(JobKind::ListModels);
    h.state_mut().state.tab = Tab::Models;
    armed_and_struck(&mut h, JobKind::ListModels);
    assert!(
        step_until(&mut h, WAIT, |app| !app.models.is_scanning()),
        "the Models tab stays scanning"
    );
}

#[test]
fn a_model_load_that_panics_fails_and_the_next_load_works() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let dir = chat_common::tiny_model_dir();
    let mut h = harness();
    h.run_steps(2);
    fault::panic_next(JobKind::LoadModel);
    let waker = h.state().waker().clone();
    h.state_mut().model = ModelSlot::load(&dir.display().to_string(), waker.clone());
    assert!(
        step_until(&mut h, WAIT, |app| matches!(
            app.model,
            ModelSlot::Failed { .. }
        )),
        "the slot stays loading"
    );
    h.state_mut().model = ModelSlot::load(&dir.display().to_string(), waker);
    assert!(
        step_until(&mut h, WAIT, |app| matches!(
            app.model,
            ModelSlot::Ready { .. }
        )),
        "a second load did not finish"
    );
}

#[test]
fn chat_batch_and_file_writes_recover_from_a_panic() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut h = chat_harness();
    fault::panic_next(JobKind::Chat);
    type_message(&mut h, "Hello");
    h.get_by_label("Send").click();
    h.run_steps(1);
    assert!(
        step_until(&mut h, WAIT, |app| !app.chat.is_generating()),
        "the pane stays generating"
    );
    assert!(h.state().chat.panes[0]
        .error
        .as_deref()
        .is_some_and(|e| e.contains("fault injected")));
    // The next message gets a reply.
    type_message(&mut h, "Hello again");
    h.get_by_label("Send").click();
    assert!(step_until(&mut h, WAIT, done), "no reply after the panic");

    // Saving the conversation: the button comes back.
    fault::panic_next(JobKind::WriteFile);
    h.get_by_label("Save JSON").click();
    armed_and_struck(&mut h, JobKind::WriteFile);
    assert!(
        step_until(&mut h, WAIT, |app| !app.chat.is_saving()),
        "the conversation stays saving"
    );

    // Batch compare: one column panics, the batch ends, the table keeps the rest.
    h.state_mut().chat.max_new_tokens = 4;
    h.get_by_label("Batch compare").click();
    h.run_steps(2);
    h.state_mut().chat.batch.typed = "one\ntwo".into();
    h.run_steps(1);
    fault::panic_next(JobKind::BatchCompare);
    h.get_by_label("▶ Run batch").click();
    armed_and_struck(&mut h, JobKind::BatchCompare);
    assert!(
        step_until(&mut h, WAIT, |app| !app.chat.batch.is_running()),
        "the batch stays running"
    );
}

#[test]
fn a_suite_run_or_a_judgment_that_panics_ends_the_wait() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut h = chat_harness();
    h.state_mut().chat.max_new_tokens = 4;
    h.get_by_label("2 panes").click();
    h.run_steps(2);
    h.get_by_label("Batch compare").click();
    h.run_steps(2);
    h.state_mut().chat.batch.typed = "one".into();
    h.run_steps(1);

    // The suite run: the failure is shown and the panes are free again.
    fault::panic_next(JobKind::SuiteCompare);
    h.get_by_label("▶ Run suite").click();
    armed_and_struck(&mut h, JobKind::SuiteCompare);
    assert!(
        step_until(&mut h, WAIT, |app| !app.chat.batch.is_busy()
            && fault_shown(app)),
        "the suite run stays running, or its failure is not shown"
    );

    // The judgment of a finished batch of two panes: the same, then it works.
    h.get_by_label("▶ Run batch").click();
    assert!(
        step_until(&mut h, WAIT, |app| !app.chat.batch.is_busy()
            && app
                .chat
                .batch
                .table
                .as_ref()
                .is_some_and(|t| t.progress() == (2, 2))),
        "the batch did not finish"
    );
    h.get_by_label("Judge A vs B").click();
    h.run_steps(2);
    h.state_mut().notices = Default::default();
    fault::panic_next(JobKind::Judge);
    h.get_by_label("▶ Run judge").click();
    armed_and_struck(&mut h, JobKind::Judge);
    assert!(
        step_until(&mut h, WAIT, |app| !app.chat.batch.is_busy()
            && fault_shown(app)),
        "the judgment stays running, or its failure is not shown"
    );
    h.get_by_label("▶ Run judge").click();
    assert!(
        step_until(&mut h, WAIT, |app| app.chat.batch.judge.result.is_some()),
        "judging again does not work"
    );
}

#[test]
fn a_plan_or_a_training_run_that_panics_ends_the_wait() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut h = chat_harness();
    open_dataset(&mut h, &fixture("llamafactory_identity.json"));
    {
        let cfg = &mut h.state_mut().state.run_config;
        cfg.model.base = chat_common::tiny_model_dir().display().to_string();
        cfg.data.max_seq_len = 64;
        cfg.training.max_steps = Some(3);
        cfg.output.runs_dir = Some(studio_home().join("runs-panic"));
    }
    // The estimate's plan: the error is shown, not "reading the dataset" forever.
    fault::panic_next(JobKind::PlanRun);
    h.state_mut().state.tab = Tab::Train;
    armed_and_struck(&mut h, JobKind::PlanRun);
    let start = std::time::Instant::now();
    while h.query_by_label_contains("fault injected").is_none() {
        assert!(
            start.elapsed() < WAIT,
            "the estimate does not show the failure"
        );
        h.step();
        std::thread::sleep(Duration::from_millis(5));
    }

    // The run: it ends failed, with the error in the tab's log and a notice.
    fault::panic_next(JobKind::Train);
    h.get_by_label("▶ Start training").click();
    assert!(
        step_until(&mut h, WAIT, |app| !app.train.is_running()),
        "the run never ended"
    );
    let run = h.state().train.run.clone().unwrap();
    assert!(matches!(&run.status, RunStatus::Failed(e) if e.contains("fault injected")));
    assert!(run.log.iter().any(|l| l.contains("fault injected")));
    assert!(fault_shown(h.state()));
    // A second start trains.
    h.get_by_label("▶ Start training").click();
    assert!(
        step_until(&mut h, WAIT, |app| !app.train.is_running()
            && app
                .train
                .run
                .as_ref()
                .is_some_and(|r| r.status == RunStatus::Finished)),
        "the second run did not finish: {:?}",
        h.state().train.run.as_ref().map(|r| r.status.clone())
    );
}

#[test]
fn an_export_that_panics_ends_in_the_dialog_and_the_next_export_works() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    use finetune_studio::model::Architecture;
    use finetune_studio::testkit::{write_tiny_adapter, write_tiny_model};
    let home = studio_home();
    let model_dir =
        write_tiny_model(&home.join("tiny-export-panic"), Architecture::Llama, 9).unwrap();
    let runs_dir = home.join("runs-export-panic");
    let run = runs_dir.join("20260101-000000-tiny");
    std::fs::create_dir_all(&run).unwrap();
    let mut cfg = finetune_studio::train::RunConfig::default();
    cfg.model.base = model_dir.display().to_string();
    std::fs::write(run.join("run.toml"), cfg.to_toml()).unwrap();
    write_tiny_adapter(&run.join("adapter"), Architecture::Llama, 4).unwrap();

    let mut h = harness();
    h.state_mut().state.run_config.output.runs_dir = Some(runs_dir);
    h.state_mut().state.tab = Tab::Runs;
    assert!(step_until(&mut h, WAIT, |app| !app.runs.runs.is_empty()));
    h.run_steps(2);
    h.get_by_label("Export…").click();
    h.run_steps(4);
    fault::panic_next(JobKind::Export);
    h.get_by_label("Export").click();
    assert!(
        step_until(&mut h, WAIT, |app| app
            .export
            .as_ref()
            .is_some_and(|d| !d.is_running())),
        "the export dialog stays running"
    );
    h.run_steps(2);
    assert!(h.query_by_label_contains("fault injected").is_some());
}

#[test]
fn a_file_dialog_that_panics_is_a_notice_and_the_path_field_still_opens() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut h = harness();
    h.run_steps(2);
    // The fault strikes as the dialog's job starts, before any dialog is shown.
    fault::panic_next(JobKind::FileDialog);
    h.get_by_label("Open…").click();
    armed_and_struck(&mut h, JobKind::FileDialog);
    assert!(step_until(&mut h, WAIT, fault_shown), "no notice");
    open_dataset(&mut h, &fixture("llamafactory_identity.json"));
}
