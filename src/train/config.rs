//! `RunConfig`: everything that defines a training run, as TOML. The same file drives the
//! GUI and `finetune-studio train --config`. Every field has a default, so a run needs only
//! a model and a dataset.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::selection::{BestBy, FinalAdapter};
use crate::model::lora::LoraTarget;

/// Learning-rate schedule after warmup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Schedule {
    Constant,
    Linear,
    Cosine,
}

/// The eval split: a fraction of the records or a fixed count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvalSplit {
    Ratio(f64),
    Count(usize),
}

impl RunConfig {
    /// The train and eval record indices of a dataset of `records` records: the split,
    /// seeded with the run's seed, that training and batch compare both use.
    pub fn split(&self, records: usize) -> crate::data::split::Split {
        let size = match self.data.eval_split {
            EvalSplit::Ratio(r) => crate::data::split::EvalSize::Ratio(r),
            EvalSplit::Count(c) => crate::data::split::EvalSize::Count(c),
        };
        crate::data::split::split_indices(records, size, self.training.seed)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ModelSection {
    /// `default`, a Hugging Face folder, a .gguf file, or a hub repo id.
    pub base: String,
    /// The chat template: the model's own when absent, else a named one (`chatml`,
    /// `gemma`, `llama3`, `mistral`, `alpaca`, `plain`, `qwen3`) or a Jinja file. The run's
    /// adapter and every export carry it.
    pub template: Option<String>,
    /// `enable_thinking` for templates with Qwen3's thinking switch; the template's own
    /// default when absent.
    pub enable_thinking: Option<bool>,
}

impl Default for ModelSection {
    fn default() -> Self {
        Self {
            base: "default".into(),
            template: None,
            enable_thinking: None,
        }
    }
}

impl ModelSection {
    /// The template the run uses.
    pub fn template_choice(&self) -> crate::text::TemplateChoice {
        crate::text::TemplateChoice::parse(self.template.as_deref().unwrap_or(""))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DataSection {
    pub path: PathBuf,
    /// Format override (`alpaca`, `sharegpt`, `openai`, `csv`, `parquet`); detected when absent.
    pub format: Option<String>,
    /// The entry to use when `path` is a LLaMA-Factory `dataset_info.json`.
    pub dataset_info_entry: Option<String>,
    /// Text replacements applied to every record before training (e.g. `{{name}}`).
    pub replace: Vec<(String, String)>,
    pub eval_split: EvalSplit,
    /// Train on every token instead of only the assistant turns.
    pub train_on_prompt: bool,
    /// Samples longer than this are truncated (and counted).
    pub max_seq_len: usize,
    /// Pack several samples into each row (no attention across samples).
    pub packing: bool,
    /// Remove reasoning blocks (`<think>…</think>`) from assistant turns before tokenizing.
    pub strip_reasoning: bool,
}

impl Default for DataSection {
    fn default() -> Self {
        Self {
            path: PathBuf::new(),
            format: None,
            dataset_info_entry: None,
            replace: Vec::new(),
            eval_split: EvalSplit::Ratio(0.05),
            train_on_prompt: false,
            max_seq_len: 512,
            packing: true,
            strip_reasoning: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LoraSection {
    pub rank: usize,
    pub alpha: f64,
    pub dropout: f32,
    pub use_rslora: bool,
    pub targets: Vec<LoraTarget>,
}

impl Default for LoraSection {
    fn default() -> Self {
        Self {
            rank: 16,
            alpha: 32.0,
            dropout: 0.05,
            use_rslora: false,
            targets: LoraTarget::ALL.to_vec(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OptimSection {
    pub learning_rate: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    pub schedule: Schedule,
    /// Warmup in optimizer steps; when absent, `warmup_ratio` of the total steps.
    pub warmup_steps: Option<usize>,
    pub warmup_ratio: f64,
    pub max_grad_norm: f64,
}

impl Default for OptimSection {
    fn default() -> Self {
        Self {
            learning_rate: 2e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            schedule: Schedule::Cosine,
            warmup_steps: None,
            warmup_ratio: 0.03,
            max_grad_norm: 1.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TrainingSection {
    pub epochs: f64,
    /// Stops after this many optimizer steps when set (overrides `epochs`).
    pub max_steps: Option<usize>,
    /// Rows per micro-batch.
    pub batch_size: usize,
    pub grad_accumulation: usize,
    pub seed: u64,
    pub log_every: usize,
    /// Evaluate every N optimizer steps (0: only at the end).
    pub eval_every: usize,
    /// Checkpoint every N optimizer steps (0: only at the end).
    pub save_every: usize,
    /// Recompute each layer in the backward instead of keeping its activations: several
    /// times less activation memory for about one more forward pass per step.
    pub gradient_checkpointing: bool,
}

impl Default for TrainingSection {
    fn default() -> Self {
        Self {
            epochs: 3.0,
            max_steps: None,
            batch_size: 4,
            grad_accumulation: 1,
            seed: 42,
            log_every: 1,
            eval_every: 50,
            save_every: 100,
            gradient_checkpointing: false,
        }
    }
}

/// What an evaluation measures beyond the eval loss, which checkpoint is the best, and when
/// the run stops early. Evaluations happen every `training.eval_every` steps and at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EvalSection {
    /// An eval suite run at every evaluation on the adapter as it is: `builtin` or a suite
    /// file (JSONL); none when absent.
    pub suite: Option<String>,
    /// Only the suite's first prompts, when set (a suite run costs generation time).
    pub suite_limit: Option<usize>,
    /// Tokens each suite reply may have (greedy decoding).
    pub suite_max_new_tokens: usize,
    /// The measure that picks the best checkpoint.
    pub best_by: BestBy,
    /// Which adapter the finished run leaves in `adapter/`.
    pub final_adapter: FinalAdapter,
    /// Stop after this many evaluations in a row without a better one (0: never).
    pub patience: usize,
    /// The least change of the measure that counts as better.
    pub min_delta: f64,
}

impl Default for EvalSection {
    fn default() -> Self {
        Self {
            suite: None,
            suite_limit: None,
            suite_max_new_tokens: 128,
            best_by: BestBy::EvalLoss,
            final_adapter: FinalAdapter::Best,
            patience: 0,
            min_delta: 0.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct OutputSection {
    /// Parent folder of run directories; the studio's runs folder when absent.
    pub runs_dir: Option<PathBuf>,
    /// A short name, part of the run folder's name.
    pub name: String,
}

impl Default for OutputSection {
    fn default() -> Self {
        Self {
            runs_dir: None,
            name: "run".into(),
        }
    }
}

/// What a run trains on and for: instruction data (SFT) or preference pairs (DPO, ORPO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    #[default]
    Sft,
    Dpo,
    Orpo,
}

impl Stage {
    pub const ALL: [Stage; 3] = [Stage::Sft, Stage::Dpo, Stage::Orpo];

    /// Whether the run trains on preference pairs.
    pub fn is_preference(self) -> bool {
        self != Stage::Sft
    }

    pub fn label(self) -> &'static str {
        match self {
            Stage::Sft => "SFT",
            Stage::Dpo => "DPO",
            Stage::Orpo => "ORPO",
        }
    }
}

/// The reference a DPO run measures its rewards against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reference {
    /// The base model: the adapter switched off.
    #[default]
    Base,
    /// The adapter the run starts from (`init_adapter`), frozen.
    InitAdapter,
}

/// The preference stages' settings (`stage = "dpo"` or `"orpo"`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PreferenceSection {
    /// DPO's β (strength of the pull towards the reference), or ORPO's λ (weight of the
    /// odds-ratio term), as TRL's `beta` for both.
    pub beta: f64,
    pub reference: Reference,
}

impl Default for PreferenceSection {
    fn default() -> Self {
        Self {
            beta: 0.1,
            reference: Reference::Base,
        }
    }
}

/// How `init_adapter` names a run by its output name instead of a folder.
pub const RUN_PREFIX: &str = "run:";

/// A whole training run.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct RunConfig {
    /// `sft` (instruction data), `dpo` or `orpo` (preference pairs).
    pub stage: Stage,
    /// A PEFT adapter folder (e.g. an SFT run's `adapter/`) whose values the run starts
    /// from; its rank, alpha and targets must match `[lora]`. `run:NAME` names the adapter
    /// of the newest finished run whose `[output] name` is NAME, found when the file is
    /// loaded (the run's `run.toml` keeps the folder it found).
    pub init_adapter: Option<PathBuf>,
    pub model: ModelSection,
    pub data: DataSection,
    pub lora: LoraSection,
    pub optim: OptimSection,
    pub training: TrainingSection,
    pub eval: EvalSection,
    pub output: OutputSection,
    pub preference: PreferenceSection,
}

impl RunConfig {
    pub fn from_toml(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Reads a config file; relative dataset and output paths are taken relative to it and
    /// made absolute, so that the `run.toml` a run writes from it names the same files
    /// wherever it is read from.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let mut cfg =
            Self::from_toml(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let resolve = |p: &Path| {
            let joined = base.join(p);
            std::path::absolute(&joined).unwrap_or(joined)
        };
        if cfg.data.path.is_relative() && !cfg.data.path.as_os_str().is_empty() {
            cfg.data.path = resolve(&cfg.data.path);
        }
        if let Some(suite) = &cfg.eval.suite {
            let p = Path::new(suite);
            if suite != crate::eval::BUILTIN_NAME && p.is_relative() {
                cfg.eval.suite = Some(resolve(p).display().to_string());
            }
        }
        if let Some(r) = &cfg.output.runs_dir {
            if r.is_relative() {
                cfg.output.runs_dir = Some(resolve(r));
            }
        }
        if let Some(a) = cfg.init_adapter.clone() {
            if let Some(name) = a.to_str().and_then(|s| s.strip_prefix(RUN_PREFIX)) {
                let runs = cfg
                    .output
                    .runs_dir
                    .clone()
                    .unwrap_or_else(crate::paths::runs_dir);
                let dir = super::run_dir::latest_run_adapter(&runs, name).map_err(|e| {
                    anyhow::anyhow!(
                        "{}: init_adapter = \"{}\": {e}",
                        path.display(),
                        a.display()
                    )
                })?;
                cfg.init_adapter = Some(dir);
            } else if a.is_relative() {
                cfg.init_adapter = Some(resolve(&a));
            }
        }
        cfg.model.template = cfg
            .model
            .template_choice()
            .resolved_against(base)
            .to_config();
        Ok(cfg)
    }

    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// `lora_alpha / r` (or `/ sqrt(r)` with rsLoRA).
    pub fn lora_scale(&self) -> f64 {
        crate::model::lora::lora_scale(self.lora.alpha, self.lora.rank, self.lora.use_rslora)
    }

    /// Problems that make the run impossible, in words.
    pub fn validate(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.data.path.as_os_str().is_empty() {
            out.push("no dataset chosen".into());
        }
        if self.lora.rank == 0 {
            out.push("LoRA rank must be at least 1".into());
        }
        if self.lora.targets.is_empty() {
            out.push("choose at least one LoRA target layer".into());
        }
        if !(0.0..1.0).contains(&self.lora.dropout) {
            out.push("LoRA dropout must be in [0, 1)".into());
        }
        if self.optim.learning_rate <= 0.0 || !self.optim.learning_rate.is_finite() {
            out.push("learning rate must be positive".into());
        }
        if self.training.batch_size == 0 || self.training.grad_accumulation == 0 {
            out.push("batch size and gradient accumulation must be at least 1".into());
        }
        if self
            .model
            .template
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            out.push(
                "the chat template file is empty: type its path, or choose the model's own".into(),
            );
        }
        if self.data.max_seq_len < 8 {
            out.push("maximum sequence length must be at least 8".into());
        }
        if self.training.max_steps.is_none() && self.training.epochs <= 0.0 {
            out.push("set epochs > 0 or max_steps".into());
        }
        if self.eval.best_by == BestBy::PassRate && self.eval.suite.is_none() {
            out.push("the best checkpoint by pass rate needs an eval suite".into());
        }
        if self
            .eval
            .suite
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            out.push("the eval suite is empty: choose `builtin` or a suite file".into());
        }
        if self.eval.suite.is_some() && self.eval.suite_max_new_tokens == 0 {
            out.push("eval suite replies need at least 1 new token".into());
        }
        if self.eval.patience > 0 && self.training.eval_every == 0 {
            out.push(
                "early stopping needs evaluations during the run (evaluate every N > 0 steps)"
                    .into(),
            );
        }
        if !(self.eval.min_delta >= 0.0 && self.eval.min_delta.is_finite()) {
            out.push("the minimum improvement must be 0 or more".into());
        }
        if self.stage.is_preference() {
            let beta = self.preference.beta;
            if !(beta.is_finite() && beta > 0.0) {
                out.push("preference beta must be positive".into());
            }
            if self.training.gradient_checkpointing {
                out.push(format!(
                    "gradient checkpointing is not available for {} runs",
                    self.stage.label()
                ));
            }
        }
        if self.stage == Stage::Dpo
            && self.preference.reference == Reference::InitAdapter
            && self.init_adapter.is_none()
        {
            out.push("reference = \"init_adapter\" needs an init_adapter".into());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_toml_gets_defaults_and_round_trips() {
        let cfg = RunConfig::from_toml("[data]\npath = \"d.json\"\n").unwrap();
        assert_eq!(cfg.model.base, "default");
        assert_eq!(cfg.lora.rank, 16);
        assert_eq!(cfg.lora.targets.len(), 7);
        assert!(cfg.validate().is_empty());
        let back = RunConfig::from_toml(&cfg.to_toml()).unwrap();
        assert_eq!(back, cfg);
    }

    #[test]
    fn an_init_adapter_named_by_run_without_such_a_run_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dpo.toml");
        std::fs::write(
            &file,
            "stage = \"dpo\"\ninit_adapter = \"run:identity\"\n[data]\npath = \"p.jsonl\"\n\
             [output]\nruns_dir = \"runs\"\n",
        )
        .unwrap();
        let err = RunConfig::load(&file).unwrap_err().to_string();
        assert!(
            err.contains("dpo.toml")
                && err.contains("run:identity")
                && err.contains("no run named identity"),
            "{err}"
        );
    }

    #[test]
    fn relative_paths_are_resolved_against_the_file_and_made_absolute() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sub").join("run.toml");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(
            &file,
            "[data]\npath = \"data/d.json\"\n[output]\nruns_dir = \"runs\"\n",
        )
        .unwrap();
        let cfg = RunConfig::load(&file).unwrap();
        assert!(cfg.data.path.is_absolute());
        assert_eq!(cfg.data.path, dir.path().join("sub/data/d.json"));
        assert_eq!(cfg.output.runs_dir, Some(dir.path().join("sub/runs")));
        // Written back (as run.toml is) and read from elsewhere, it names the same file.
        let moved = dir.path().join("elsewhere").join("run.toml");
        std::fs::create_dir_all(moved.parent().unwrap()).unwrap();
        std::fs::write(&moved, cfg.to_toml()).unwrap();
        assert_eq!(RunConfig::load(&moved).unwrap().data.path, cfg.data.path);
    }

    #[test]
    fn eval_section_defaults_keep_the_best_and_never_stop_early() {
        let cfg = RunConfig::from_toml("[data]\npath = \"d.json\"\n").unwrap();
        assert_eq!(cfg.eval.final_adapter, FinalAdapter::Best);
        assert_eq!(cfg.eval.best_by, BestBy::EvalLoss);
        assert_eq!(cfg.eval.patience, 0);
        let cfg = RunConfig::from_toml(
            "[data]\npath = \"d.json\"\n[eval]\nsuite = \"builtin\"\nbest_by = \"pass_rate\"\nfinal_adapter = \"last\"\npatience = 3\n",
        )
        .unwrap();
        assert_eq!(cfg.eval.best_by, BestBy::PassRate);
        assert_eq!(cfg.eval.final_adapter, FinalAdapter::Last);
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
    }

    #[test]
    fn pass_rate_without_a_suite_and_patience_without_evaluations_are_refused() {
        let mut cfg = RunConfig::from_toml("[data]\npath = \"d.json\"\n").unwrap();
        cfg.eval.best_by = BestBy::PassRate;
        cfg.eval.patience = 2;
        cfg.training.eval_every = 0;
        let problems = cfg.validate();
        assert!(
            problems.iter().any(|p| p.contains("eval suite")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.contains("early stopping")),
            "{problems:?}"
        );
    }

    #[test]
    fn old_files_are_sft_and_preference_stages_round_trip() {
        let cfg = RunConfig::from_toml("[data]\npath = \"d.json\"\n").unwrap();
        assert_eq!(cfg.stage, Stage::Sft);
        let text = "stage = \"dpo\"\ninit_adapter = \"sft/adapter\"\n[data]\npath = \"p.jsonl\"\n[preference]\nbeta = 0.2\nreference = \"init_adapter\"\n";
        let cfg = RunConfig::from_toml(text).unwrap();
        assert_eq!(cfg.stage, Stage::Dpo);
        assert_eq!(cfg.preference.beta, 0.2);
        assert_eq!(cfg.preference.reference, Reference::InitAdapter);
        assert!(cfg.validate().is_empty(), "{:?}", cfg.validate());
        assert_eq!(RunConfig::from_toml(&cfg.to_toml()).unwrap(), cfg);
        let mut bad = cfg.clone();
        bad.init_adapter = None;
        bad.preference.beta = 0.0;
        bad.training.gradient_checkpointing = true;
        let problems = bad.validate().join("; ");
        assert!(
            problems.contains("beta")
                && problems.contains("init_adapter")
                && problems.contains("checkpointing"),
            "{problems}"
        );
    }

    #[test]
    fn validation_names_the_problem() {
        let mut cfg = RunConfig::default();
        cfg.lora.rank = 0;
        let problems = cfg.validate();
        assert!(problems.iter().any(|p| p.contains("dataset")));
        assert!(problems.iter().any(|p| p.contains("rank")));
    }
}
