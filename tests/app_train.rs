//! GUI test of the Train and Runs tabs on a tiny random model: start a run from the
//! Train tab, see steps arrive in the plot's state while the UI stays responsive, stop it,
//! then resume it from the Runs tab.

mod app_common;

use std::time::{Duration, Instant};

use app_common::{fixture, harness, open_dataset, step_until, studio_home};
use egui_kittest::kittest::Queryable;
use finetune_studio::app::{RunStatus, Tab};
use finetune_studio::model::Architecture;
use finetune_studio::testkit::write_tiny_model;

#[test]
fn start_watch_stop_and_resume_a_run() {
    let home = studio_home();
    let model_dir = write_tiny_model(&home.join("tiny-llama"), Architecture::Llama, 7).unwrap();
    let runs_dir = home.join("runs-train-test");

    let mut h = harness();
    h.run_steps(2);
    open_dataset(&mut h, &fixture("llamafactory_identity.json"));
    {
        let cfg = &mut h.state_mut().state.run_config;
        cfg.model.base = model_dir.display().to_string();
        cfg.data.max_seq_len = 64;
        cfg.training.batch_size = 2;
        cfg.training.max_steps = Some(400);
        cfg.training.eval_every = 0;
        cfg.training.save_every = 2;
        cfg.output.runs_dir = Some(runs_dir.clone());
        cfg.output.name = "kittest".into();
    }
    h.state_mut().state.tab = Tab::Train;
    h.run_steps(3);
    h.get_by_label("▶ Start training").click();
    h.run_steps(1);
    assert!(
        h.state().train.is_running(),
        "notices: {:?}",
        h.state().notices.items()
    );

    assert!(
        step_until(&mut h, Duration::from_secs(120), |app| app
            .train
            .run
            .as_ref()
            .is_some_and(|r| r.curves.steps.len() >= 3)),
        "no steps arrived; notices: {:?}",
        h.state().notices.items()
    );
    // One frame while the run trains stays short (the budget is for a loaded CI machine).
    let t = Instant::now();
    h.step();
    let frame = t.elapsed();
    assert!(frame < Duration::from_millis(250), "a frame took {frame:?}");

    h.get_by_label("■ Stop").click();
    assert!(
        step_until(&mut h, Duration::from_secs(60), |app| !app
            .train
            .is_running()),
        "the run did not stop"
    );
    let run = h.state().train.run.clone().unwrap();
    assert_eq!(run.status, RunStatus::Finished);
    assert!(run.summary.as_ref().is_some_and(|s| s.stopped_early));
    let stopped_at = run.curves.last().map(|m| m.step).unwrap_or(0);
    assert!(stopped_at < 400);

    // The Runs tab lists it and resumes it.
    h.state_mut().state.tab = Tab::Runs;
    assert!(step_until(&mut h, Duration::from_secs(20), |app| !app
        .runs
        .runs
        .is_empty()));
    h.run_steps(2);
    h.get_by_label("▶ Resume").click();
    h.run_steps(1);
    assert!(
        h.state().train.is_running(),
        "notices: {:?}",
        h.state().notices.items()
    );
    assert!(
        step_until(&mut h, Duration::from_secs(120), |app| app
            .train
            .run
            .as_ref()
            .and_then(|r| r.curves.last())
            .is_some_and(|m| m.step > stopped_at)),
        "the resumed run made no progress; notices: {:?}",
        h.state().notices.items()
    );
    h.state_mut().train.stop();
    assert!(step_until(&mut h, Duration::from_secs(60), |app| !app
        .train
        .is_running()));
}

/// The Train tab's estimate counts the steps the run takes: with packing, fewer than the
/// records would give one sample per row.
#[test]
fn the_estimate_shows_the_steps_the_run_takes() {
    let home = studio_home();
    let model_dir = write_tiny_model(&home.join("tiny-estimate"), Architecture::Llama, 3).unwrap();
    let mut h = harness();
    h.run_steps(2);
    open_dataset(&mut h, &fixture("llamafactory_identity.json"));
    {
        let cfg = &mut h.state_mut().state.run_config;
        cfg.model.base = model_dir.display().to_string();
        cfg.data.max_seq_len = 256;
        cfg.data.packing = true;
        cfg.training.batch_size = 2;
        cfg.training.max_steps = None;
        cfg.training.epochs = 1.0;
        cfg.training.eval_every = 0;
        cfg.training.save_every = 0;
        cfg.output.runs_dir = Some(home.join("runs-estimate-test"));
    }
    let model =
        finetune_studio::model::load_hf_folder(&model_dir, &candle_core::Device::Cpu).unwrap();
    h.state_mut().model = finetune_studio::app::ModelSlot::Ready {
        spec: model_dir.display().to_string(),
        model: std::sync::Arc::new(model),
        summary: "tiny".into(),
    };
    h.state_mut().state.tab = Tab::Train;
    assert!(
        step_until(&mut h, Duration::from_secs(60), |app| app
            .train
            .estimate_for(&app.state.run_config)
            .is_some()),
        "no estimate"
    );
    let planned = h
        .state()
        .train
        .estimate_for(&h.state().state.run_config)
        .unwrap()
        .total_steps;
    // 91 records less the eval split, packed into 256-token rows, two rows a step.
    assert!(planned < 80 / 2, "{planned} steps planned");
    h.run_steps(2);
    assert!(h
        .query_by_label_contains(&format!("{planned} steps"))
        .is_some());
    h.get_by_label("▶ Start training").click();
    assert!(
        step_until(&mut h, Duration::from_secs(60), |app| app
            .train
            .run
            .as_ref()
            .is_some_and(|r| r.total_steps > 0)),
        "the run did not start"
    );
    assert_eq!(h.state().train.run.as_ref().unwrap().total_steps, planned);
    h.get_by_label("■ Stop").click();
    assert!(step_until(&mut h, Duration::from_secs(60), |app| !app
        .train
        .is_running()));
}

/// The evaluation settings in the form: the built-in suite chosen, the best checkpoint by
/// its pass rate; the run plots the pass rate, marks its best checkpoint, and the Runs tab
/// says which adapter the run kept.
#[test]
fn a_run_with_the_builtin_suite_plots_its_pass_rate_and_keeps_its_best() {
    let home = studio_home();
    let model_dir = write_tiny_model(&home.join("tiny-suite"), Architecture::Llama, 5).unwrap();
    let runs_dir = home.join("runs-suite-test");
    // Tall enough to show the whole settings form.
    let mut h = app_common::harness_sized(
        finetune_studio::app::AppOptions::headless(),
        [1280.0, 2400.0],
    );
    h.run_steps(2);
    open_dataset(&mut h, &fixture("llamafactory_identity.json"));
    {
        let cfg = &mut h.state_mut().state.run_config;
        cfg.model.base = model_dir.display().to_string();
        cfg.data.max_seq_len = 64;
        cfg.training.batch_size = 2;
        cfg.training.max_steps = Some(4);
        cfg.training.eval_every = 2;
        cfg.training.save_every = 0;
        cfg.eval.suite_limit = Some(2);
        cfg.eval.suite_max_new_tokens = 4;
        cfg.output.runs_dir = Some(runs_dir.clone());
        cfg.output.name = "suite".into();
    }
    h.state_mut().state.tab = Tab::Train;
    h.run_steps(3);
    // The form: the suite, then the measure it makes possible.
    h.get_by_value("None (eval loss only)").click();
    h.run_steps(2);
    h.get_by_label("Built-in suite").click();
    h.run_steps(2);
    assert_eq!(
        h.state().state.run_config.eval.suite.as_deref(),
        Some("builtin")
    );
    h.get_by_value("eval loss").click();
    h.run_steps(2);
    h.get_by_label("pass rate").click();
    h.run_steps(2);
    assert_eq!(
        h.state().state.run_config.eval.best_by,
        finetune_studio::train::BestBy::PassRate
    );
    h.get_by_label("▶ Start training").click();
    assert!(
        step_until(&mut h, Duration::from_secs(120), |app| !app
            .train
            .is_running()
            && app.train.run.is_some()),
        "the run did not finish; notices: {:?}",
        h.state().notices.items()
    );
    let run = h.state().train.run.clone().unwrap();
    assert_eq!(run.status, RunStatus::Finished, "{:?}", run.log);
    assert_eq!(
        run.curves.suites.iter().map(|s| s.0).collect::<Vec<_>>(),
        [2, 4]
    );
    let (best_step, by, _) = run.curves.best.expect("a best evaluation");
    assert_eq!(by, finetune_studio::train::BestBy::PassRate);
    h.run_steps(3);
    let last_rate = run.curves.suites.last().map(|s| s.1).unwrap();
    assert!(h
        .query_by_label(&format!("pass rate {:.1} %", last_rate * 100.0))
        .is_some());
    assert!(h
        .query_by_label_contains(&format!("best checkpoint: step {best_step}"))
        .is_some());
    assert!(h
        .query_by_label(&format!("step {best_step} (best)"))
        .is_some());
    let choice = run.summary.and_then(|s| s.final_choice).unwrap();
    assert_eq!(choice.adapter_step, best_step);

    h.state_mut().state.tab = Tab::Runs;
    assert!(step_until(&mut h, Duration::from_secs(20), |app| app
        .runs
        .runs
        .iter()
        .any(|r| r.final_choice.is_some())));
    h.run_steps(3);
    assert!(h
        .query_by_label_contains(&format!("best at step {best_step}"))
        .is_some());
}
