//! The Runs tab's overlay of preference runs: a DPO run trained on a tiny random model in
//! the studio's runs folder shows its reward accuracy (or margin) per step and on its
//! held-out pairs beside the loss; an SFT run adds no preference plot.

mod app_common;

use std::sync::Arc;
use std::time::Duration;

use app_common::{harness, step_until, studio_home};
use candle_core::Device;
use egui_kittest::kittest::Queryable;
use finetune_studio::app::{preference_curves, PreferenceMeasure, Tab};
use finetune_studio::model;
use finetune_studio::model::config::Architecture;
use finetune_studio::testkit::{write_echo_dataset, write_echo_preferences, write_tiny_model};
use finetune_studio::train::config::{EvalSplit, RunConfig, Schedule};
use finetune_studio::train::trainer::{self, Control, Start};
use finetune_studio::train::{Stage, TrainCommand, TrainEvent};

struct Quiet;

impl Control for Quiet {
    fn send(&mut self, _event: TrainEvent) {}
    fn poll(&mut self) -> Option<TrainCommand> {
        None
    }
    fn wait(&mut self) -> Option<TrainCommand> {
        Some(TrainCommand::Resume)
    }
}

#[test]
fn a_dpo_run_shows_its_reward_curves_in_the_overlay() {
    let home = studio_home();
    let dir = home.join("runs-preference");
    let mdir = write_tiny_model(&dir.join("model"), Architecture::Llama, 11).unwrap();
    let model = Arc::new(model::load_hf_folder(&mdir, &Device::Cpu).unwrap());
    let mut cfg = RunConfig {
        stage: Stage::Dpo,
        ..Default::default()
    };
    cfg.model.base = mdir.display().to_string();
    cfg.data.path = write_echo_preferences(&dir).unwrap();
    cfg.data.max_seq_len = 64;
    cfg.data.eval_split = EvalSplit::Count(4);
    cfg.lora.rank = 4;
    cfg.lora.alpha = 8.0;
    cfg.optim.learning_rate = 1e-2;
    cfg.optim.schedule = Schedule::Constant;
    cfg.training.batch_size = 2;
    cfg.training.max_steps = Some(6);
    cfg.training.eval_every = 3;
    cfg.output.name = "dpo".into();
    trainer::run(cfg.clone(), model.clone(), Start::Fresh, None, &mut Quiet).unwrap();
    // An SFT run beside it, listed first (newer), selected with it.
    let mut sft = cfg;
    sft.stage = Stage::Sft;
    sft.data.path = write_echo_dataset(&dir).unwrap();
    sft.training.max_steps = Some(2);
    sft.output.name = "sft".into();
    std::thread::sleep(Duration::from_millis(1100));
    trainer::run(sft, model, Start::Fresh, None, &mut Quiet).unwrap();

    let mut h = harness();
    h.state_mut().state.tab = Tab::Runs;
    assert!(step_until(&mut h, Duration::from_secs(20), |app| app
        .runs
        .runs
        .len()
        == 2));
    let runs = h.state().runs.runs.clone();
    let dpo = runs.iter().find(|r| r.name.ends_with("-dpo")).unwrap();
    let sft = runs.iter().find(|r| r.name.ends_with("-sft")).unwrap();
    let held_steps: Vec<usize> = dpo.held_out.iter().map(|(s, _)| *s).collect();
    assert_eq!(held_steps.first(), Some(&3), "{held_steps:?}");
    assert_eq!(held_steps.last(), Some(&6), "{held_steps:?}");
    let curves = preference_curves(dpo, PreferenceMeasure::Accuracy, 0.0).unwrap();
    let (line, held_out) = (curves.steps, curves.held_out);
    assert_eq!(line.len(), 6);
    assert!(line.iter().all(|p| (0.0..=100.0).contains(&p[1])));
    assert_eq!(held_out.len(), held_steps.len());
    let last = dpo.held_out[dpo.held_out.len() - 1].1;
    assert_eq!(
        held_out[held_out.len() - 1],
        [6.0, last.reward_accuracy * 100.0]
    );
    let margins = preference_curves(dpo, PreferenceMeasure::Margin, 0.0)
        .unwrap()
        .steps;
    assert_eq!(
        margins[5][1],
        dpo.steps[5].preference.unwrap().reward_margin
    );
    assert!(preference_curves(sft, PreferenceMeasure::Accuracy, 0.0).is_none());

    // Only the SFT run selected: no preference plot.
    h.state_mut().runs.selected = [sft.path.clone()].into_iter().collect();
    h.run_steps(3);
    assert!(h.query_by_label("Reward accuracy (%)").is_none());
    // With the DPO run: the plot, its legend naming the held-out points, and the switch.
    h.state_mut().runs.selected.insert(dpo.path.clone());
    h.run_steps(3);
    assert!(h.query_by_label("Reward accuracy (%)").is_some());
    assert!(h
        .query_by_label_contains(&format!("{} held-out", dpo.name))
        .is_some());
    h.get_by_label("Reward margin").click();
    h.run_steps(2);
    assert_eq!(h.state().runs.preference_measure, PreferenceMeasure::Margin);
}
