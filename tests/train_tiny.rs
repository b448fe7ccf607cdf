//! The trainer end to end on a tiny random model: the loss falls, only the adapter
//! changes, B = 0 reproduces the base, merging equals base + adapter (also after a round
//! trip through a written HF folder), resume reproduces an uninterrupted run, and a NaN
//! stops the run and marks it failed, and the `train` command logs plain lines
//! when its output is not a terminal.

mod common;

use std::path::Path;
use std::sync::Arc;

use candle_core::Device;
use finetune_studio::adapter as peft;
use finetune_studio::export::merge;
use finetune_studio::model::config::Architecture;
use finetune_studio::model::{self, Model};
use finetune_studio::testkit::{write_echo_dataset, write_tiny_model};
use finetune_studio::train::adapter::TrainableAdapter;
use finetune_studio::train::config::RunConfig;
use finetune_studio::train::trainer::{self, Control, Start};
use finetune_studio::train::{TrainCommand, TrainEvent};

/// Records events; sends `Stop` once step `stop_at` has been reported.
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
    fn losses(&self) -> Vec<(usize, f64)> {
        self.events
            .iter()
            .filter_map(|e| match e {
                TrainEvent::Step(m) => Some((m.step, m.loss)),
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

fn setup() -> (tempfile::TempDir, Arc<Model>, RunConfig) {
    let dir = tempfile::tempdir().unwrap();
    let mdir = write_tiny_model(&dir.path().join("model"), Architecture::Llama, 11).unwrap();
    let model = Arc::new(model::load_hf_folder(&mdir, &Device::Cpu).unwrap());
    let data = write_echo_dataset(dir.path()).unwrap();
    let mut cfg = common::tiny_run_config(&mdir, data, dir.path().join("runs"));
    cfg.lora.dropout = 0.1;
    cfg.training.max_steps = Some(8);
    cfg.training.eval_every = 4;
    cfg.training.save_every = 4;
    (dir, model, cfg)
}

#[test]
fn loss_falls_and_only_the_adapter_changes() {
    let (_dir, model, mut cfg) = setup();
    cfg.training.max_steps = Some(40);
    cfg.training.eval_every = 0;
    let before: Vec<f32> = model.transformer.layers[0]
        .q_proj
        .weight
        .to_f32(&candle_core::Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let mut rec = Recorder::new(None);
    let summary = trainer::run(cfg, model.clone(), Start::Fresh, None, &mut rec).unwrap();
    let losses = rec.losses();
    assert_eq!(losses.len(), 40);
    let first = losses[..4].iter().map(|l| l.1).sum::<f64>() / 4.0;
    let last = losses[36..].iter().map(|l| l.1).sum::<f64>() / 4.0;
    assert!(
        last < 0.6 * first,
        "loss did not fall enough: {first} -> {last}"
    );
    let after: Vec<f32> = model.transformer.layers[0]
        .q_proj
        .weight
        .to_f32(&candle_core::Device::Cpu)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(before, after, "a base weight changed");

    // The adapter folder is PEFT's layout.
    let adapter_dir = summary.adapter_dir.unwrap();
    let st =
        candle_core::safetensors::load(adapter_dir.join("adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    let a = &st["base_model.model.model.layers.1.mlp.down_proj.lora_A.weight"];
    let b = &st["base_model.model.model.layers.1.mlp.down_proj.lora_B.weight"];
    assert_eq!(a.dims(), &[4, 128]);
    assert_eq!(b.dims(), &[64, 4]);
    assert!(st.keys().all(|k| !k.contains(".default.")));
    let cfg_json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(adapter_dir.join("adapter_config.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(cfg_json["r"], 4);
    assert_eq!(cfg_json["task_type"], "CAUSAL_LM");
    assert_eq!(cfg_json["target_modules"].as_array().unwrap().len(), 7);
    assert!(rec
        .events
        .iter()
        .any(|e| matches!(e, TrainEvent::Started { .. })));
}

#[test]
fn zero_b_reproduces_the_base_and_merge_equals_base_plus_adapter() {
    let (dir, model, cfg) = setup();
    let ids = [257u32, 10, 20, 30, 40, 50];
    let fresh = TrainableAdapter::init(model.config(), &cfg.lora, None, 1, &Device::Cpu).unwrap();
    let base = common::logits(&model, None, None, &ids);
    assert!(
        common::max_abs_diff(
            &base,
            &common::logits(&model, Some(&fresh.lora_set()), None, &ids)
        ) < 1e-6
    );

    let mut rec = Recorder::new(None);
    let summary = trainer::run(cfg, model.clone(), Start::Fresh, None, &mut rec).unwrap();
    let loaded =
        peft::read_adapter(&summary.adapter_dir.unwrap(), model.config(), &Device::Cpu).unwrap();
    let tuned = common::logits(&model, Some(&loaded.lora), None, &ids);
    assert!(
        common::max_abs_diff(&base, &tuned) > 1e-3,
        "training changed nothing"
    );

    let mut merged =
        model::load_hf_folder(Path::new(&model.location.path()), &Device::Cpu).unwrap();
    merge::merge_into(&mut merged, &loaded.lora).unwrap();
    let diff = common::max_abs_diff(&tuned, &common::logits(&merged, None, None, &ids));
    assert!(diff < 1e-4, "merged differs from base + adapter by {diff}");

    let out = dir.path().join("merged");
    merge::write_hf_folder(&merged, &out).unwrap();
    let reloaded = model::load_hf_folder(&out, &Device::Cpu).unwrap();
    let diff = common::max_abs_diff(&tuned, &common::logits(&reloaded, None, None, &ids));
    assert!(diff < 1e-4, "merged folder reloads with logits {diff} away");
    assert_eq!(reloaded.template.source(), model.template.source());
}

#[test]
fn resume_continues_the_loss_curve_exactly() {
    let (_dir, model, cfg) = setup();
    let mut full = Recorder::new(None);
    trainer::run(cfg.clone(), model.clone(), Start::Fresh, None, &mut full).unwrap();

    let mut first = Recorder::new(Some(3));
    let summary = trainer::run(cfg, model.clone(), Start::Fresh, None, &mut first).unwrap();
    assert!(summary.stopped_early);
    assert_eq!(summary.steps, 3);
    assert!(summary.adapter_dir.is_none());
    let ck = summary.run_dir.join("checkpoints").join("step-3");
    assert!(ck.join("adapter_model.safetensors").exists());

    let (run, cfg) = finetune_studio::train::run_dir::RunDir::open(&summary.run_dir).unwrap();
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
    assert!(second.events.iter().any(
        |e| matches!(e, TrainEvent::Log { message } if message.contains("resuming from step 3"))
    ));

    let expected = full.losses();
    let mut got = first.losses();
    got.extend(second.losses());
    assert_eq!(got.len(), expected.len());
    for ((s1, l1), (s2, l2)) in got.iter().zip(&expected) {
        assert_eq!(s1, s2);
        assert!(
            (l1 - l2).abs() < 1e-4,
            "step {s1}: resumed {l1} vs uninterrupted {l2}"
        );
    }
    let metrics = finetune_studio::train::run_dir::read_run(&summary.run_dir);
    assert_eq!(metrics.steps.len(), expected.len());
}

#[test]
fn nan_stops_the_run_and_keeps_it_unfinished() {
    let (_dir, model, mut cfg) = setup();
    cfg.optim.learning_rate = 1e30;
    cfg.optim.max_grad_norm = 0.0;
    cfg.training.max_steps = Some(6);
    let mut rec = Recorder::new(None);
    let err = trainer::run(cfg, model, Start::Fresh, None, &mut rec)
        .unwrap_err()
        .to_string();
    assert!(err.contains("at step"), "{err}");
    let run_dir = rec
        .events
        .iter()
        .find_map(|e| match e {
            TrainEvent::Started { run_dir, .. } => Some(run_dir.clone()),
            _ => None,
        })
        .expect("the run started");
    // The run folder says it failed, and why; it has no final adapter.
    let info = finetune_studio::train::run_dir::read_run(&run_dir);
    assert!(
        info.failure
            .as_deref()
            .is_some_and(|f| f.contains("at step")),
        "{:?}",
        info.failure
    );
    assert!(!info.has_adapter);
}

/// `finetune-studio train` with its output going to files, as in a batch job: indicatif
/// draws nothing there, so the run, the estimate and each logged step come out as lines.
#[test]
fn headless_train_logs_plain_lines_when_not_on_a_terminal() {
    let (dir, _model, mut cfg) = setup();
    cfg.training.max_steps = Some(2);
    cfg.training.eval_every = 0;
    cfg.training.save_every = 0;
    let config = dir.path().join("run.toml");
    std::fs::write(&config, cfg.to_toml()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_finetune-studio"))
        .args(["train", "--config"])
        .arg(&config)
        .env("FINETUNE_STUDIO_HOME", dir.path().join("home"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("estimate: needs about"), "{stderr}");
    for step in ["step 1/2  loss", "step 2/2  loss"] {
        assert!(stderr.contains(step), "no '{step}' in {stderr}");
    }
    assert!(stdout.contains("finished 2 steps"), "{stdout}");
    assert!(stdout.contains("adapter: "), "{stdout}");
}

/// The plan the estimates come from is the run's: with packing, the steps it counts are
/// the steps the trainer takes, and its tokens per step are the ones the steps log.
#[test]
fn the_plan_counts_the_steps_and_tokens_the_run_takes() {
    let (_dir, model, mut cfg) = setup();
    cfg.data.packing = true;
    cfg.training.max_steps = None;
    cfg.training.epochs = 2.0;
    cfg.training.grad_accumulation = 2;
    cfg.training.eval_every = 0;
    cfg.training.save_every = 0;
    cfg.training.log_every = 1;
    let plan = finetune_studio::train::plan::plan(&cfg, &model).unwrap();
    let records_per_epoch = 24 - 4;
    // Packing puts several samples in a row, so there are fewer steps than records.
    assert!(plan.total_steps < records_per_epoch * 2 / cfg.training.batch_size);
    let mut rec = Recorder::new(None);
    let summary = trainer::run(cfg, model, Start::Fresh, None, &mut rec).unwrap();
    assert_eq!(summary.steps, plan.total_steps);
    let steps = finetune_studio::train::run_dir::read_run(&summary.run_dir).steps;
    let first_epoch = plan.total_steps / 2;
    let tokens: usize = steps[..first_epoch].iter().map(|m| m.tokens).sum();
    let expected = plan.workload.tokens_per_step * first_epoch as f64;
    assert!(
        (tokens as f64 - expected).abs() < 1e-9,
        "{tokens} tokens logged, {expected} planned"
    );
}
