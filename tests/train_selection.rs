//! Evaluation in the training loop on a tiny random model: the best checkpoint by eval
//! loss or by an eval suite's pass rate is kept and becomes the final adapter (or the last
//! step's, as asked), early stopping ends the run after its patience, `final.json` and
//! `metrics.jsonl` record which and why, the Runs view reads them back, and a suite that
//! cannot be read stops the run before its folder exists.

mod common;

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;
use finetune_studio::model::config::Architecture;
use finetune_studio::model::{self, Model};
use finetune_studio::testkit::{write_echo_dataset, write_tiny_model};
use finetune_studio::train::config::RunConfig;
use finetune_studio::train::run_dir::{read_final, read_run, MetricLine};
use finetune_studio::train::trainer::{self, Control, Start};
use finetune_studio::train::{BestBy, FinalAdapter, TrainCommand, TrainEvent};

#[derive(Default)]
struct Recorder {
    events: Vec<TrainEvent>,
}

impl Control for Recorder {
    fn send(&mut self, event: TrainEvent) {
        self.events.push(event);
    }
    fn poll(&mut self) -> Option<TrainCommand> {
        None
    }
    fn wait(&mut self) -> Option<TrainCommand> {
        Some(TrainCommand::Resume)
    }
}

fn setup() -> (tempfile::TempDir, Arc<Model>, RunConfig) {
    let dir = tempfile::tempdir().unwrap();
    let mdir = write_tiny_model(&dir.path().join("model"), Architecture::Llama, 11).unwrap();
    let model = Arc::new(model::load_hf_folder(&mdir, &Device::Cpu).unwrap());
    let data = write_echo_dataset(dir.path()).unwrap();
    let mut cfg = common::tiny_run_config(&mdir, data, dir.path().join("runs"));
    cfg.training.max_steps = Some(12);
    cfg.training.eval_every = 2;
    cfg.training.save_every = 0;
    (dir, model, cfg)
}

fn adapter_bytes(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("adapter_model.safetensors"))
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

#[test]
fn the_final_adapter_is_the_lowest_eval_loss_checkpoint() {
    let (_dir, model, cfg) = setup();
    let mut rec = Recorder::default();
    let summary = trainer::run(cfg, model, Start::Fresh, None, &mut rec).unwrap();
    let run = read_run(&summary.run_dir);
    assert_eq!(run.evals.len(), 6, "an evaluation every 2 of 12 steps");
    // The best is the first evaluation with the lowest loss.
    let (best_step, best_loss) = run
        .evals
        .iter()
        .copied()
        .fold(None, |b: Option<(usize, f64)>, e| match b {
            Some(b) if b.1 <= e.1 => Some(b),
            _ => Some(e),
        })
        .unwrap();
    let choice = summary
        .final_choice
        .clone()
        .expect("a finished run says which adapter");
    assert_eq!(choice.best.map(|b| b.step), Some(best_step));
    assert_eq!(choice.best.map(|b| b.value), Some(best_loss));
    assert_eq!(choice.adapter_step, best_step);
    assert_eq!(choice.last_step, 12);
    assert!(!choice.early_stopped);
    assert_eq!(read_final(&summary.run_dir), Some(choice));
    assert_eq!(
        run.best.map(|b| (b.0, b.1)),
        Some((best_step, BestBy::EvalLoss))
    );
    // Every new best was checkpointed, and adapter/ is the best one's, byte for byte.
    assert!(
        run.checkpoints.contains(&best_step),
        "{:?}",
        run.checkpoints
    );
    let adapter = summary.adapter_dir.unwrap();
    assert_eq!(
        adapter_bytes(&adapter),
        adapter_bytes(
            &summary
                .run_dir
                .join(format!("checkpoints/step-{best_step}"))
        )
    );
    let bests = rec
        .events
        .iter()
        .filter(|e| matches!(e, TrainEvent::Best { .. }))
        .count();
    let best_lines = finetune_studio::train::run_dir::read_metrics(&summary.run_dir)
        .into_iter()
        .filter(|l| matches!(l, MetricLine::Best { .. }))
        .count();
    assert!(bests >= 1);
    assert_eq!(bests, best_lines);
}

#[test]
fn early_stopping_ends_the_run_with_the_best_checkpoint_or_the_last_as_asked() {
    for wanted in [FinalAdapter::Best, FinalAdapter::Last] {
        let (_dir, model, mut cfg) = setup();
        // Nothing beats the first evaluation by 1e9: it stays the best, and after two more
        // evaluations the patience has run out.
        cfg.eval.min_delta = 1e9;
        cfg.eval.patience = 2;
        cfg.eval.final_adapter = wanted;
        let mut rec = Recorder::default();
        let summary = trainer::run(cfg, model, Start::Fresh, None, &mut rec).unwrap();
        assert_eq!(summary.steps, 6, "stopped after the evaluation at step 6");
        assert!(!summary.stopped_early, "an early stop finishes the run");
        let choice = summary.final_choice.clone().unwrap();
        assert!(choice.early_stopped);
        assert_eq!(choice.best.map(|b| b.step), Some(2));
        let expected_step = match wanted {
            FinalAdapter::Best => 2,
            FinalAdapter::Last => 6,
        };
        assert_eq!(choice.adapter_step, expected_step);
        assert_eq!(
            adapter_bytes(&summary.adapter_dir.unwrap()),
            adapter_bytes(
                &summary
                    .run_dir
                    .join(format!("checkpoints/step-{expected_step}"))
            )
        );
        assert!(rec.events.iter().any(|e| matches!(
            e,
            TrainEvent::Log { message } if message.contains("stopping early")
        )));
        // Three evaluations, not a fourth at the end: the last step was just evaluated.
        assert_eq!(read_run(&summary.run_dir).evals.len(), 3);
    }
}

/// Two prompts: one check no reply can fail, one no reply can pass.
const HALF_SUITE: &str = concat!(
    r#"{"id": "a", "prompt": "Say something.", "checks": [{"type": "not_contains", "text": "§never§"}]}"#,
    "\n",
    r#"{"id": "b", "prompt": "Say more.", "checks": [{"type": "contains", "text": "§never§"}]}"#,
    "\n"
);

#[test]
fn a_suite_runs_at_each_evaluation_and_its_pass_rate_picks_the_best() {
    let (dir, model, mut cfg) = setup();
    let suite = dir.path().join("half.jsonl");
    std::fs::write(&suite, HALF_SUITE).unwrap();
    cfg.eval.suite = Some(suite.display().to_string());
    cfg.eval.suite_max_new_tokens = 4;
    cfg.eval.best_by = BestBy::PassRate;
    cfg.eval.patience = 2;
    assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    let mut rec = Recorder::default();
    let summary = trainer::run(cfg, model, Start::Fresh, None, &mut rec).unwrap();
    let run = read_run(&summary.run_dir);
    // 50 % every time: a tie is no gain, so the first stays the best and the patience ends
    // the run at the third evaluation.
    assert_eq!(run.suites.len(), 3);
    for s in &run.suites {
        assert_eq!(
            (s.checks_passed, s.checks, s.prompts_passed, s.prompts),
            (1, 2, 1, 2)
        );
        assert_eq!(s.pass_rate(), 0.5);
    }
    assert_eq!(
        run.suites.iter().map(|s| s.step).collect::<Vec<_>>(),
        [2, 4, 6]
    );
    assert_eq!(summary.steps, 6);
    let choice = summary.final_choice.unwrap();
    assert_eq!(choice.best_by, BestBy::PassRate);
    assert_eq!(choice.best.map(|b| (b.step, b.value)), Some((2, 0.5)));
    assert_eq!(choice.adapter_step, 2);
    let suite_events = rec
        .events
        .iter()
        .filter(|e| matches!(e, TrainEvent::Suite(_)))
        .count();
    assert_eq!(suite_events, 3);
    // The eval loss is still measured and logged beside the pass rate.
    assert_eq!(run.evals.len(), 3);
}

#[test]
fn a_malformed_suite_stops_the_run_before_its_folder_exists() {
    let (dir, model, mut cfg) = setup();
    let suite = dir.path().join("broken.jsonl");
    std::fs::write(
        &suite,
        "{\"id\": \"a\", \"prompt\": \"Hi\", \"checks\": [{\"type\": \"shout\"}]}\n",
    )
    .unwrap();
    cfg.eval.suite = Some(suite.display().to_string());
    let runs = cfg.output.runs_dir.clone().unwrap();
    let mut rec = Recorder::default();
    let err = match trainer::run(cfg, model, Start::Fresh, None, &mut rec) {
        Ok(_) => panic!("a run with an unreadable suite trained"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("broken.jsonl"), "{err}");
    assert!(err.contains("broken.jsonl:1:"), "{err}");
    assert!(err.contains("shout"), "{err}");
    let folders = std::fs::read_dir(&runs).map(|d| d.count()).unwrap_or(0);
    assert_eq!(folders, 0, "no run folder for a run that never started");
}
