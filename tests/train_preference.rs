//! The preference stages end to end on a tiny random model: DPO and ORPO runs on echo
//! pairs lower their loss and raise the reward accuracy, log their figures per step and on
//! held-out pairs, save a PEFT adapter; a DPO run starts from an SFT run's adapter (with
//! that adapter, frozen, as its reference, the first loss is ln 2); and a stopped DPO run
//! resumes onto the same curve.

use std::sync::Arc;

use candle_core::Device;
use finetune_studio::model::config::Architecture;
use finetune_studio::model::{self, Model};
use finetune_studio::testkit::{write_echo_dataset, write_echo_preferences, write_tiny_model};
use finetune_studio::train::config::{EvalSplit, Reference, RunConfig, Schedule};
use finetune_studio::train::run_dir::{read_metrics, MetricLine, RunDir};
use finetune_studio::train::trainer::{self, Control, Start};
use finetune_studio::train::{PreferenceMetrics, Stage, TrainCommand, TrainEvent};

struct Recorder {
    events: Vec<TrainEvent>,
    stop_at: Option<usize>,
    pending: Option<TrainCommand>,
}

impl Recorder {
    fn new(stop_at: Option<usize>) -> Self {
        Self {
            events: Vec::new(),
            stop_at,
            pending: None,
        }
    }
    fn steps(&self) -> Vec<(usize, f64, PreferenceMetrics)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                TrainEvent::Step(m) => Some((m.step, m.loss, m.preference.expect("figures"))),
                _ => None,
            })
            .collect()
    }
    fn held_out(&self) -> Vec<PreferenceMetrics> {
        self.events
            .iter()
            .filter_map(|e| match e {
                TrainEvent::PreferenceEval { metrics, .. } => Some(*metrics),
                _ => None,
            })
            .collect()
    }
}

impl Control for Recorder {
    fn send(&mut self, event: TrainEvent) {
        if let (TrainEvent::Step(m), Some(s)) = (&event, self.stop_at) {
            if m.step == s {
                self.pending = Some(TrainCommand::Stop);
            }
        }
        self.events.push(event);
    }
    fn poll(&mut self) -> Option<TrainCommand> {
        self.pending.take()
    }
    fn wait(&mut self) -> Option<TrainCommand> {
        Some(TrainCommand::Resume)
    }
}

fn setup(stage: Stage) -> (tempfile::TempDir, Arc<Model>, RunConfig) {
    let dir = tempfile::tempdir().unwrap();
    let mdir = write_tiny_model(&dir.path().join("model"), Architecture::Llama, 11).unwrap();
    let model = Arc::new(model::load_hf_folder(&mdir, &Device::Cpu).unwrap());
    let mut cfg = RunConfig {
        stage,
        ..Default::default()
    };
    cfg.model.base = mdir.display().to_string();
    cfg.data.path = write_echo_preferences(dir.path()).unwrap();
    cfg.data.max_seq_len = 64;
    cfg.data.eval_split = EvalSplit::Count(4);
    cfg.lora.rank = 4;
    cfg.lora.alpha = 8.0;
    cfg.lora.dropout = 0.0;
    cfg.optim.learning_rate = 1e-2;
    cfg.optim.schedule = Schedule::Constant;
    cfg.optim.warmup_steps = Some(0);
    cfg.training.batch_size = 2;
    cfg.training.max_steps = Some(30);
    cfg.training.eval_every = 15;
    cfg.training.save_every = 10;
    cfg.output.runs_dir = Some(dir.path().join("runs"));
    (dir, model, cfg)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn dpo_learns_the_pairs_and_logs_its_figures() {
    let (_dir, model, mut cfg) = setup(Stage::Dpo);
    cfg.preference.beta = 0.5;
    let mut rec = Recorder::new(None);
    let summary = trainer::run(cfg, model.clone(), Start::Fresh, None, &mut rec).unwrap();
    let steps = rec.steps();
    assert_eq!(steps.len(), 30);
    // A fresh adapter is the base: the first loss is ln 2 and no margin.
    assert!(
        (steps[0].1 - std::f64::consts::LN_2).abs() < 1e-4,
        "{}",
        steps[0].1
    );
    assert!(steps[0].2.reward_margin.abs() < 1e-4);
    let losses: Vec<f64> = steps.iter().map(|s| s.1).collect();
    let acc: Vec<f64> = steps.iter().map(|s| s.2.reward_accuracy).collect();
    assert!(mean(&losses[25..]) < 0.5 * mean(&losses[..3]), "{losses:?}");
    assert!(mean(&acc[25..]) > 0.9, "{acc:?}");
    let last = steps[29].2;
    assert!(last.reward_margin > 0.0 && last.chosen_reward > last.rejected_reward);
    // Held out: evaluated at steps 15 and 30, on the 4 held-out pairs.
    let held = rec.held_out();
    assert_eq!(held.len(), 2);
    assert_eq!(held[1].pairs, 4);
    assert!(held[1].reward_accuracy > 0.9, "{held:?}");
    // metrics.jsonl keeps both.
    let lines = read_metrics(&summary.run_dir);
    assert!(lines
        .iter()
        .any(|l| matches!(l, MetricLine::Step(m) if m.preference.is_some())));
    assert!(lines
        .iter()
        .any(|l| matches!(l, MetricLine::PreferenceEval { step: 30, .. })));
    // The adapter is in PEFT's layout and changes the model.
    let dir = summary.adapter_dir.unwrap();
    let st = candle_core::safetensors::load(dir.join("adapter_model.safetensors"), &Device::Cpu)
        .unwrap();
    assert!(st.contains_key("base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight"));
    let loaded =
        finetune_studio::adapter::read_adapter(&dir, model.config(), &Device::Cpu).unwrap();
    assert_eq!(loaded.lora.pairs.len(), 14);
}

#[test]
fn orpo_learns_the_pairs() {
    let (_dir, model, mut cfg) = setup(Stage::Orpo);
    cfg.preference.beta = 0.5;
    let mut rec = Recorder::new(None);
    trainer::run(cfg, model, Start::Fresh, None, &mut rec).unwrap();
    let steps = rec.steps();
    let losses: Vec<f64> = steps.iter().map(|s| s.1).collect();
    assert!(mean(&losses[25..]) < 0.5 * mean(&losses[..3]), "{losses:?}");
    let last = steps[29].2;
    assert!(
        last.reward_accuracy > 0.9 && last.chosen_logp > last.rejected_logp,
        "{last:?}"
    );
    assert!(rec.held_out().last().unwrap().reward_accuracy > 0.9);
}

#[test]
fn dpo_starts_from_an_sft_adapter() {
    let (dir, model, cfg) = setup(Stage::Dpo);
    // Stage one: SFT on the echo chats.
    let mut sft = cfg.clone();
    sft.stage = Stage::Sft;
    sft.data.path = write_echo_dataset(dir.path()).unwrap();
    sft.training.max_steps = Some(6);
    let mut rec = Recorder::new(None);
    let sft_run = trainer::run(sft, model.clone(), Start::Fresh, None, &mut rec).unwrap();
    let sft_adapter = sft_run.adapter_dir.unwrap();

    // Stage two from its adapter, measured against it: policy = reference at first.
    let mut dpo = cfg.clone();
    dpo.init_adapter = Some(sft_adapter.clone());
    dpo.preference.reference = Reference::InitAdapter;
    dpo.training.max_steps = Some(2);
    let mut rec = Recorder::new(None);
    let run = trainer::run(dpo.clone(), model.clone(), Start::Fresh, None, &mut rec).unwrap();
    let first = rec.steps()[0];
    assert!(
        (first.1 - std::f64::consts::LN_2).abs() < 1e-4,
        "{}",
        first.1
    );
    assert!(first.2.reward_margin.abs() < 1e-4);
    // The run's config names the adapter it started from.
    let (_, written) = RunDir::open(&run.run_dir).unwrap();
    assert_eq!(written.init_adapter.as_deref(), Some(sft_adapter.as_path()));

    // Measured against the base instead, the SFT adapter already has a margin.
    dpo.preference.reference = Reference::Base;
    let mut rec = Recorder::new(None);
    trainer::run(dpo.clone(), model.clone(), Start::Fresh, None, &mut rec).unwrap();
    assert!(rec.steps()[0].2.reward_margin.abs() > 1e-3);

    // An adapter of another rank is refused, naming the folder and what differs.
    dpo.lora.rank = 8;
    let mut rec = Recorder::new(None);
    let err = trainer::run(dpo, model, Start::Fresh, None, &mut rec).unwrap_err();
    let msg = format!("{err:#}");
    assert!(
        msg.contains("init_adapter") && msg.contains("r = 4"),
        "{msg}"
    );
}

#[test]
fn a_stopped_dpo_run_resumes_onto_the_same_curve() {
    let (_dir, model, mut cfg) = setup(Stage::Dpo);
    cfg.training.max_steps = Some(8);
    cfg.training.save_every = 4;
    cfg.training.eval_every = 0;
    let mut full = Recorder::new(None);
    trainer::run(cfg.clone(), model.clone(), Start::Fresh, None, &mut full).unwrap();

    let mut first = Recorder::new(Some(3));
    let summary = trainer::run(cfg, model.clone(), Start::Fresh, None, &mut first).unwrap();
    assert!(summary.stopped_early);
    let ck = summary.run_dir.join("checkpoints").join("step-3");
    let (run, cfg) = RunDir::open(&summary.run_dir).unwrap();
    assert_eq!(cfg.stage, Stage::Dpo);
    let mut second = Recorder::new(None);
    trainer::run(
        cfg,
        model,
        Start::Resume {
            run,
            checkpoint: ck,
        },
        None,
        &mut second,
    )
    .unwrap();
    let expected = full.steps();
    let mut got = first.steps();
    got.extend(second.steps());
    assert_eq!(got.len(), expected.len());
    for (a, b) in got.iter().zip(&expected) {
        assert_eq!(a.0, b.0);
        assert!((a.1 - b.1).abs() < 1e-4, "step {}: {} vs {}", a.0, a.1, b.1);
        assert!((a.2.reward_margin - b.2.reward_margin).abs() < 1e-4);
    }
}

#[test]
fn the_train_command_runs_a_dpo_config_headless() {
    let dir = tempfile::tempdir().unwrap();
    let mdir = write_tiny_model(&dir.path().join("model"), Architecture::Llama, 11).unwrap();
    write_echo_preferences(dir.path()).unwrap();
    let config = dir.path().join("dpo.toml");
    std::fs::write(
        &config,
        format!(
            "stage = \"dpo\"\n[model]\nbase = {:?}\n[data]\npath = \"pairs.jsonl\"\nmax_seq_len = 64\n\
             eval_split = {{ count = 4 }}\n[lora]\nrank = 4\nalpha = 8.0\n[training]\nmax_steps = 2\n\
             batch_size = 2\n[preference]\nbeta = 0.2\n[output]\nruns_dir = \"runs\"\n",
            mdir.display().to_string()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_finetune-studio"))
        .args(["train", "--config"])
        .arg(&config)
        .env("FINETUNE_STUDIO_HOME", dir.path().join("home"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("step 2/2  loss") && stderr.contains("accuracy"),
        "{stderr}"
    );
    assert!(
        format!("{stdout}{stderr}").contains("held-out reward accuracy"),
        "{stdout}{stderr}"
    );
    let runs: Vec<_> = std::fs::read_dir(dir.path().join("runs"))
        .unwrap()
        .collect();
    assert_eq!(runs.len(), 1);
    let run = runs[0].as_ref().unwrap().path();
    assert!(run
        .join("adapter")
        .join("adapter_model.safetensors")
        .is_file());
    let (_, cfg) = RunDir::open(&run).unwrap();
    assert_eq!(cfg.stage, Stage::Dpo);
}
