//! Every way a run can fail reaches the user with its cause: `finetune-studio train` prints
//! the error naming the file and exits non-zero (a missing dataset, a dataset with nothing
//! to train on, a runs folder that cannot be created), and a checkpoint write that fails
//! ends the run with the path in the error and the run folder marked failed. In the studio
//! a failed run shows in the Train tab's log, as a notification, and in the Runs tab.

mod app_common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::sync::Arc;
use std::time::Duration;

use app_common::{harness, step_until, studio_home};
use candle_core::Device;
use egui_kittest::kittest::Queryable;
use finetune_studio::app::{RunStatus, Tab};
use finetune_studio::model::config::Architecture;
use finetune_studio::model::load_hf_folder;
use finetune_studio::testkit::write_tiny_model;
use finetune_studio::train::config::{EvalSplit, RunConfig};
use finetune_studio::train::trainer::{self, Control, Start};
use finetune_studio::train::{TrainCommand, TrainEvent};

fn write_jsonl(path: &Path, replies: &[&str]) -> PathBuf {
    let mut text = String::new();
    for (i, reply) in replies.iter().enumerate() {
        let line = serde_json::json!({"messages": [
            {"role": "user", "content": format!("question {i}")},
            {"role": "assistant", "content": reply}
        ]});
        text.push_str(&line.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).unwrap();
    path.to_path_buf()
}

/// A tiny model and a config that trains on it for two steps, all in `dir`.
fn config(dir: &Path) -> RunConfig {
    let model = write_tiny_model(&dir.join("model"), Architecture::Llama, 5).unwrap();
    let mut cfg = RunConfig::default();
    cfg.model.base = model.display().to_string();
    cfg.data.path = write_jsonl(
        &dir.join("data.jsonl"),
        &["one two", "three four", "five six", "seven eight"],
    );
    cfg.data.max_seq_len = 64;
    cfg.data.eval_split = EvalSplit::Count(0);
    cfg.lora.rank = 2;
    cfg.training.batch_size = 2;
    cfg.training.max_steps = Some(2);
    cfg.training.eval_every = 0;
    cfg.training.save_every = 1;
    cfg.output.runs_dir = Some(dir.join("runs"));
    cfg
}

fn train_cli(dir: &Path, cfg: &RunConfig) -> Output {
    let path = dir.join("run.toml");
    std::fs::write(&path, cfg.to_toml()).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_finetune-studio"))
        .args(["train", "--config"])
        .arg(&path)
        .env("FINETUNE_STUDIO_HOME", dir.join("home"))
        .output()
        .unwrap()
}

/// The run failed, and its stderr holds every one of `needles`.
fn assert_failed_with(out: &Output, needles: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the run succeeded: {stderr}");
    for n in needles {
        assert!(stderr.contains(n), "no `{n}` in: {stderr}");
    }
}

#[test]
fn a_missing_dataset_is_named_and_the_command_fails() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    let missing = dir.path().join("no-such-data.jsonl");
    cfg.data.path = missing.clone();
    let out = train_cli(dir.path(), &cfg);
    assert_failed_with(&out, &["error:", &missing.display().to_string()]);
}

#[test]
fn a_dataset_with_nothing_to_train_on_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    cfg.data.path = write_jsonl(&dir.path().join("empty-replies.jsonl"), &["", "", ""]);
    let out = train_cli(dir.path(), &cfg);
    assert_failed_with(
        &out,
        &["error:", "no training example has a token to train on"],
    );
}

#[test]
fn a_runs_folder_that_cannot_be_made_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path());
    // A folder inside a regular file cannot be created, whoever runs the test (root too).
    let file = dir.path().join("not-a-folder");
    std::fs::write(&file, "x").unwrap();
    cfg.output.runs_dir = Some(file.join("runs"));
    let out = train_cli(dir.path(), &cfg);
    assert_failed_with(&out, &["error:", &file.display().to_string()]);
}

/// Replaces the run's `checkpoints` folder with a file as soon as the run starts, so the
/// first checkpoint cannot be written.
struct BreakCheckpoints {
    run_dir: Option<PathBuf>,
}

impl Control for BreakCheckpoints {
    fn send(&mut self, event: TrainEvent) {
        if let TrainEvent::Started { run_dir, .. } = &event {
            let ck = run_dir.join("checkpoints");
            std::fs::remove_dir_all(&ck).unwrap();
            std::fs::write(&ck, "in the way").unwrap();
            self.run_dir = Some(run_dir.clone());
        }
    }
    fn poll(&mut self) -> Option<TrainCommand> {
        None
    }
    fn wait(&mut self) -> Option<TrainCommand> {
        Some(TrainCommand::Resume)
    }
}

#[test]
fn a_checkpoint_write_that_fails_ends_the_run_and_marks_it_failed() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path());
    let model = Arc::new(load_hf_folder(Path::new(&cfg.model.base), &Device::Cpu).unwrap());
    let mut control = BreakCheckpoints { run_dir: None };
    let err = trainer::run(cfg, model, Start::Fresh, None, &mut control)
        .expect_err("the checkpoint cannot be written");
    let message = format!("{err:#}");
    assert!(message.contains("checkpoints"), "{message}");
    let run_dir = control.run_dir.expect("the run started");
    let info = finetune_studio::train::run_dir::read_run(&run_dir);
    let failure = info.failure.expect("the run folder is marked failed");
    assert!(failure.contains("checkpoints"), "{failure}");
    assert!(!info.has_adapter);
}

/// In the studio: a run whose checkpoint cannot be written ends failed, says so in the
/// Train tab's log and as a notification, and the Runs tab lists it as failed.
#[test]
fn a_failed_run_shows_in_the_train_tab_and_the_runs_tab() {
    let home = studio_home();
    let dir = home.join("failing-run");
    std::fs::create_dir_all(&dir).unwrap();
    let mut cfg = config(&dir);
    cfg.training.max_steps = Some(100_000);
    cfg.training.save_every = 0;
    let mut h = harness();
    h.run_steps(2);
    h.state_mut().state.run_config = cfg;
    h.state_mut().state.tab = Tab::Train;
    h.run_steps(3);
    h.get_by_label("▶ Start training").click();
    h.run_steps(1);
    assert!(
        step_until(&mut h, Duration::from_secs(60), |app| app
            .train
            .run
            .as_ref()
            .is_some_and(|r| !r.curves.steps.is_empty())),
        "no step arrived"
    );
    // Paused, the checkpoints folder becomes a file; then a checkpoint is asked for.
    h.get_by_label("Pause").click();
    assert!(step_until(&mut h, Duration::from_secs(60), |app| app
        .train
        .run
        .as_ref()
        .is_some_and(|r| r.status == RunStatus::Paused)));
    let run_dir = h
        .state()
        .train
        .run
        .as_ref()
        .unwrap()
        .run_dir
        .clone()
        .unwrap();
    let ck = run_dir.join("checkpoints");
    std::fs::remove_dir_all(&ck).unwrap();
    std::fs::write(&ck, "in the way").unwrap();
    h.get_by_label("Save checkpoint").click();
    h.run_steps(1);
    h.get_by_label("▶ Resume").click();
    assert!(
        step_until(&mut h, Duration::from_secs(60), |app| !app
            .train
            .is_running()),
        "the run never ended"
    );
    let run = h.state().train.run.clone().unwrap();
    let RunStatus::Failed(error) = &run.status else {
        panic!("the run ended as {:?}: {:?}", run.status, run.log);
    };
    assert!(error.contains("checkpoints"), "{error}");
    assert!(run.log.iter().any(|l| l.contains("checkpoints")));
    assert!(h
        .state()
        .notices
        .items()
        .iter()
        .any(|n| format!("{n:?}").contains("checkpoints")));

    h.state_mut().state.tab = Tab::Runs;
    assert!(
        step_until(&mut h, Duration::from_secs(20), |app| app
            .runs
            .runs
            .iter()
            .any(|r| r.path == run_dir && r.failure.is_some())),
        "the Runs tab does not list the run as failed"
    );
    h.run_steps(2);
    assert!(h.query_by_label_contains("· failed ·").is_some());
}
