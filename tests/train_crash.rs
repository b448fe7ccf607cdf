//! A trainer killed (SIGKILL) while it writes checkpoints leaves only complete
//! `checkpoints/step-N/` folders and temporaries the resume recognizes and clears, and the
//! run resumes from its last checkpoint and finishes.
//!
//! The test binary runs itself again as the trainer: with `CRASH_CHILD_RUNS` set, the test
//! below trains a tiny model, checkpointing after every step with a large LoRA rank (so a
//! checkpoint is several MB and takes a while to write), and writes a marker file once
//! `step-1` exists. The parent waits for the marker, then kills the child: some children
//! the moment a checkpoint's temporary folder shows up (to land inside a write), others
//! at a random time (seeded). After each kill it checks the run folder, resumes the run
//! and checks the result.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use candle_core::Device;
use finetune_studio::fsio;
use finetune_studio::model::config::Architecture;
use finetune_studio::model::{self, Model};
use finetune_studio::testkit::{write_echo_dataset, write_tiny_model};
use finetune_studio::train::config::{EvalSplit, RunConfig, Schedule};
use finetune_studio::train::run_dir::{self, RunDir, TrainerState};
use finetune_studio::train::trainer::{self, Control, Start};
use finetune_studio::train::{TrainCommand, TrainEvent};
use rand::{Rng, SeedableRng};

const TEST_NAME: &str = "a_run_killed_while_writing_checkpoints_resumes_from_a_complete_one";
/// Set in the child: the runs folder to train into.
const CHILD_RUNS: &str = "CRASH_CHILD_RUNS";
/// Set in the child: the folder with the tiny model and the dataset.
const CHILD_BASE: &str = "CRASH_CHILD_BASE";
/// The file the child writes (with its run folder) once `step-1` is on disk.
const MARKER: &str = "step-1-written";
const CHILDREN: usize = 6;
const MAX_STEPS: usize = 40;

/// The run both processes use: a checkpoint after every step, rank 256 on every target
/// (a checkpoint of about 7 MB: adapter plus twice that in optimizer moments).
fn config(base: &Path, runs: &Path) -> RunConfig {
    let mut cfg = RunConfig::default();
    cfg.model.base = base.join("model").display().to_string();
    cfg.data.path = base.join("data.jsonl");
    cfg.data.max_seq_len = 64;
    cfg.data.eval_split = EvalSplit::Count(4);
    cfg.lora.rank = 256;
    cfg.lora.alpha = 16.0;
    cfg.lora.dropout = 0.0;
    cfg.optim.learning_rate = 1e-3;
    cfg.optim.schedule = Schedule::Constant;
    cfg.optim.warmup_steps = Some(0);
    cfg.training.batch_size = 2;
    cfg.training.max_steps = Some(MAX_STEPS);
    cfg.training.eval_every = 0;
    cfg.training.save_every = 1;
    cfg.output.runs_dir = Some(runs.to_path_buf());
    cfg
}

fn load(base: &Path) -> Arc<Model> {
    Arc::new(model::load_hf_folder(&base.join("model"), &Device::Cpu).unwrap())
}

/// The child's watcher: writes the marker after the first checkpoint, never stops.
struct Signal {
    marker: PathBuf,
}

impl Control for Signal {
    fn send(&mut self, event: TrainEvent) {
        if let TrainEvent::Checkpoint { step: 1, path } = &event {
            let run = path
                .parent()
                .and_then(Path::parent)
                .unwrap_or(Path::new(""));
            fsio::write_bytes_atomic(&self.marker, run.display().to_string().as_bytes()).unwrap();
        }
    }
    fn poll(&mut self) -> Option<TrainCommand> {
        None
    }
    fn wait(&mut self) -> Option<TrainCommand> {
        Some(TrainCommand::Resume)
    }
}

fn child(runs: &Path) {
    let base = PathBuf::from(std::env::var_os(CHILD_BASE).expect("CRASH_CHILD_BASE"));
    let cfg = config(&base, runs);
    let mut control = Signal {
        marker: runs.join(MARKER),
    };
    trainer::run(cfg, load(&base), Start::Fresh, None, &mut control).unwrap();
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// Every file and folder under `dir` whose name is a temporary's.
fn temporaries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for name in names(dir) {
        let p = dir.join(&name);
        if fsio::is_temp_name(&name) {
            out.push(p);
        } else if p.is_dir() {
            out.extend(temporaries(&p));
        }
    }
    out
}

/// `step-N/` holds the whole checkpoint, and every file parses.
fn assert_complete(dir: &Path, step: usize) {
    assert_eq!(
        names(dir),
        [
            "adapter_config.json",
            "adapter_model.safetensors",
            "optimizer.safetensors",
            "tokenizer_config.json",
            "trainer_state.json"
        ],
        "{}",
        dir.display()
    );
    let state: TrainerState =
        serde_json::from_str(&std::fs::read_to_string(dir.join("trainer_state.json")).unwrap())
            .unwrap();
    assert_eq!(state.step, step);
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["r"], 256);
    let adapter =
        candle_core::safetensors::load(dir.join("adapter_model.safetensors"), &Device::Cpu)
            .unwrap();
    assert_eq!(adapter.len(), 2 * 2 * 7, "{}", dir.display());
    let moments =
        candle_core::safetensors::load(dir.join("optimizer.safetensors"), &Device::Cpu).unwrap();
    assert_eq!(moments.len(), 2 * adapter.len(), "{}", dir.display());
    let tok: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("tokenizer_config.json")).unwrap())
            .unwrap();
    assert!(tok["chat_template"].is_string(), "{}", dir.display());
}

/// How a kill found the run folder.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Found {
    /// No write in progress.
    Clean,
    /// A checkpoint folder was being built (`.step-N.XXXXXX.tmp`).
    Building,
    /// A checkpoint was between the renames that replace it (`.step-N.XXXXXX.old`).
    Replacing,
}

#[test]
fn a_run_killed_while_writing_checkpoints_resumes_from_a_complete_one() {
    if let Some(runs) = std::env::var_os(CHILD_RUNS) {
        child(Path::new(&runs));
        return;
    }
    let base = tempfile::tempdir().unwrap();
    write_tiny_model(&base.path().join("model"), Architecture::Llama, 11).unwrap();
    write_echo_dataset(base.path()).unwrap();
    let model = load(base.path());
    let exe = std::env::current_exe().unwrap();
    let mut rng = rand::rngs::StdRng::seed_from_u64(20240611);
    let mut found = Vec::new();

    for i in 0..CHILDREN {
        let runs = base.path().join(format!("runs-{i}"));
        std::fs::create_dir_all(&runs).unwrap();
        let log = |n: &str| std::fs::File::create(runs.join(n)).unwrap();
        let mut proc = Command::new(&exe)
            .args(["--exact", TEST_NAME, "--nocapture", "--test-threads=1"])
            .env(CHILD_RUNS, &runs)
            .env(CHILD_BASE, base.path())
            .stdout(Stdio::from(log("child.out")))
            .stderr(Stdio::from(log("child.err")))
            .spawn()
            .unwrap();
        let output = || {
            let read = |n: &str| std::fs::read_to_string(runs.join(n)).unwrap_or_default();
            format!("{}{}", read("child.out"), read("child.err"))
        };

        // Until step-1 is on disk.
        let marker = runs.join(MARKER);
        let start = Instant::now();
        while !marker.exists() {
            if let Some(status) = proc.try_wait().unwrap() {
                panic!(
                    "child {i} ended ({status}) before its first checkpoint:\n{}",
                    output()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "child {i}: no checkpoint after 5 minutes:\n{}",
                output()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        let run = PathBuf::from(std::fs::read_to_string(&marker).unwrap());
        let checkpoints = run.join("checkpoints");

        // Even children: the moment a checkpoint's temporary folder appears, plus up to a
        // millisecond. Odd children: at a random time in the next 400 ms.
        if i % 2 == 0 {
            let delay = Duration::from_micros(rng.random_range(0..1000));
            let start = Instant::now();
            while names(&checkpoints).iter().all(|n| !fsio::is_temp_name(n))
                && start.elapsed() < Duration::from_secs(60)
            {
                std::thread::sleep(Duration::from_micros(100));
            }
            std::thread::sleep(delay);
        } else {
            std::thread::sleep(Duration::from_millis(rng.random_range(0..400)));
        }
        proc.kill().unwrap();
        let status = proc.wait().unwrap();
        assert!(
            !status.success(),
            "child {i} finished before it was killed:\n{}",
            output()
        );

        // Only complete checkpoints, and nothing else but temporaries.
        let steps = run_dir::checkpoint_steps(&run);
        assert!(steps.first() == Some(&1), "child {i}: {steps:?}");
        for &s in &steps {
            assert_complete(&run.join("checkpoints").join(format!("step-{s}")), s);
        }
        let stray: Vec<String> = names(&checkpoints)
            .into_iter()
            .filter(|n| !fsio::is_temp_name(n))
            .filter(|n| !steps.iter().any(|s| *n == format!("step-{s}")))
            .collect();
        assert!(stray.is_empty(), "child {i}: {stray:?}");
        let in_run: Vec<String> = names(&run)
            .into_iter()
            .filter(|n| !fsio::is_temp_name(n))
            .collect();
        assert_eq!(in_run, ["checkpoints", "metrics.jsonl", "run.toml"]);
        let temps = temporaries(&run);
        let kind = if temps.iter().any(|p| p.to_string_lossy().ends_with(".old")) {
            Found::Replacing
        } else if temps.is_empty() {
            Found::Clean
        } else {
            Found::Building
        };
        let inside: Vec<(String, u64)> = temps
            .iter()
            .filter(|p| p.is_dir())
            .flat_map(|p| names(p).into_iter().map(move |n| p.join(n)))
            .map(|f| {
                let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
                (f.file_name().unwrap().to_string_lossy().into_owned(), len)
            })
            .collect();
        eprintln!(
            "child {i}: killed after step {:?}; {kind:?}; temporaries {temps:?} holding {inside:?}",
            steps.last()
        );
        found.push(kind);

        // Resume from the last complete checkpoint; it clears the temporaries and finishes.
        let last = *steps.last().unwrap();
        let (run_dir, mut cfg) = RunDir::open(&run).unwrap();
        cfg.training.save_every = 10;
        let mut logs = common::LogLines::default();
        let summary = trainer::run(
            cfg,
            model.clone(),
            Start::Resume {
                run: run_dir,
                checkpoint: run.join("checkpoints").join(format!("step-{last}")),
            },
            None,
            &mut logs,
        )
        .unwrap();
        assert_eq!(summary.steps, MAX_STEPS);
        assert!(!summary.stopped_early);
        assert!(logs
            .0
            .iter()
            .any(|l| l.contains(&format!("resuming from step {last}"))));
        assert_eq!(
            logs.0.iter().any(|l| l.contains("interrupted write")),
            kind != Found::Clean,
            "{:?}",
            logs.0
        );
        assert!(temporaries(&run).is_empty(), "{:?}", temporaries(&run));
        for s in run_dir::checkpoint_steps(&run) {
            assert_complete(&run.join("checkpoints").join(format!("step-{s}")), s);
        }
        assert!(run
            .join("adapter")
            .join("adapter_model.safetensors")
            .exists());
        let info = run_dir::read_run(&run);
        assert_eq!(info.last_step, MAX_STEPS);
        assert!(info.failure.is_none());
    }

    let hits = found.iter().filter(|f| **f != Found::Clean).count();
    eprintln!(
        "{hits} of {CHILDREN} kills hit a checkpoint write in progress ({} while building, {} between renames)",
        found.iter().filter(|f| **f == Found::Building).count(),
        found.iter().filter(|f| **f == Found::Replacing).count(),
    );
    // The children killed as a temporary folder appeared are the point of the test.
    assert!(
        found.iter().step_by(2).any(|f| *f != Found::Clean),
        "no kill landed inside a checkpoint write: {found:?}"
    );
}
