//! Hand-off to the engines that train on GPU clusters (LLaMA-Factory, axolotl), and the way
//! back. [`export_project`] writes a run as a folder such an engine trains unchanged: the
//! dataset in the engine's format with the eval split as its own file, a config YAML with
//! the run's settings, launch files for one GPU, several GPUs (DeepSpeed ZeRO-2) and Slurm,
//! and a README of what maps one to one and what does not. [`import::import_output`] turns
//! what the engine wrote (the PEFT adapter, `trainer_state.json` or `trainer_log.jsonl`)
//! into a run folder the Runs tab lists beside local runs.
//!
//! The studio does not train across machines itself: these engines already do, and teams
//! that have the cluster run them.

mod axolotl;
mod hyper;
pub mod import;
mod launch;
mod llamafactory;
mod project;
mod readme;

use std::path::{Path, PathBuf};

pub use import::{import_output, Origin, ORIGIN_FILE};
pub use project::{BaseWeights, STUDIO_CONFIG_FILE};

use crate::model::Model;
use crate::train::RunConfig;

/// An engine a run can be handed to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    LlamaFactory,
    Axolotl,
}

impl Engine {
    pub const ALL: [Engine; 2] = [Engine::LlamaFactory, Engine::Axolotl];

    /// The name the command line and folder names use.
    pub fn id(self) -> &'static str {
        match self {
            Engine::LlamaFactory => "llamafactory",
            Engine::Axolotl => "axolotl",
        }
    }

    /// The engine's name as its authors write it.
    pub fn label(self) -> &'static str {
        match self {
            Engine::LlamaFactory => "LLaMA-Factory",
            Engine::Axolotl => "axolotl",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().replace(['-', '_'], "").as_str() {
            "llamafactory" | "lf" => Some(Engine::LlamaFactory),
            "axolotl" => Some(Engine::Axolotl),
            _ => None,
        }
    }

    /// The config file the engine is started with.
    pub fn config_file(self) -> &'static str {
        match self {
            Engine::LlamaFactory => "train.yaml",
            Engine::Axolotl => "config.yaml",
        }
    }
}

impl std::fmt::Display for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// One hand-off to write.
#[derive(Debug, Clone)]
pub struct HandoffRequest {
    pub engine: Engine,
    /// The folder the project goes to: new, empty, or an earlier hand-off (which is replaced
    /// whole); any other folder is refused, so that nothing of the user's is removed.
    pub out: PathBuf,
    /// What the engine loads as the base model: a hub id or a path on the cluster. When
    /// absent, the base's hub id, or the weights written into the project.
    pub base_model: Option<String>,
    /// Write the base model's weights into the project (`base/`, a Hugging Face folder) and
    /// point the config at them: for machines that cannot reach the hub.
    pub write_base: bool,
    /// Settings for a machine without a GPU (no bf16, `use_cpu`): for checking a project
    /// on a laptop, not for the real run.
    pub cpu: bool,
}

/// What a hand-off wrote.
#[derive(Debug, Clone)]
pub struct HandoffReport {
    pub out: PathBuf,
    /// Every file written, relative to `out`, with its size in bytes.
    pub files: Vec<(PathBuf, u64)>,
    pub train_records: usize,
    pub eval_records: usize,
    /// The optimizer steps the studio plans for this run (the engine counts its own).
    pub planned_steps: usize,
    /// What the engine will load as the base model.
    pub base_model: String,
    /// How to start it, one line.
    pub launch: String,
}

/// Writes `cfg` as an engine project (see the module doc). `model` is the run's base,
/// loaded: its tokenizer plans the steps, its template and hub id go into the config, and
/// its weights into `base/` when asked. The folder appears complete or not at all.
pub fn export_project(
    cfg: &RunConfig,
    model: &Model,
    req: &HandoffRequest,
    progress: &mut dyn FnMut(&str),
) -> anyhow::Result<HandoffReport> {
    let problems = cfg.validate();
    if !problems.is_empty() {
        anyhow::bail!("the run config is not usable: {}", problems.join("; "));
    }
    // The folder first: a refusal should not wait for the dataset to be tokenized.
    project::check_out_dir(&req.out)?;
    // The run's chat template (`[model] template`) is the one axolotl gets inline and a
    // written `base/` carries.
    let templated = crate::train::template::run_model(cfg, model)?;
    let model = templated.as_ref().map_or(model, |t| &t.model);
    progress("planning the run (tokenizing the dataset with the base model's tokenizer)");
    let plan = crate::train::plan::plan(cfg, model)?;
    let records = project::records(cfg)?;
    let base = project::base_weights(model, req)?;
    let mut hyper = hyper::Hyper::new(cfg, plan.total_steps, req.cpu);
    if records.eval.is_empty() {
        // Nothing to evaluate on: the Trainer refuses an eval strategy without a dataset.
        hyper.eval_steps = None;
    }
    let mut report = None;
    crate::fsio::replace_dir_atomic(&req.out, |tmp: &Path| -> anyhow::Result<()> {
        progress(&format!(
            "writing {} training and {} eval records",
            records.train.len(),
            records.eval.len()
        ));
        let data = project::write_data(tmp, req.engine, &records)?;
        let template = model.template.source();
        match req.engine {
            Engine::LlamaFactory => llamafactory::write(tmp, cfg, &hyper, &base, &data)?,
            Engine::Axolotl => {
                let m = axolotl::config(cfg, &hyper, &base, &data, template);
                hyper::write_config(tmp, Engine::Axolotl, &cfg.output.name, &m)?;
            }
        }
        launch::write(tmp, req.engine)?;
        project::write_studio_config(tmp, cfg)?;
        readme::write(
            tmp,
            req.engine,
            cfg,
            &hyper,
            &base,
            &records,
            plan.total_steps,
        )?;
        if let BaseWeights::Written { .. } = base {
            progress("writing the base model's weights to base/");
            let export = crate::export::job::ExportRequest {
                adapter: None,
                format: crate::export::job::ExportFormat::Merged,
                out: tmp.join(project::BASE_DIR),
                verify: false,
            };
            crate::export::job::export(model, &export, &mut |line| progress(line))?;
        }
        report = Some(HandoffReport {
            out: req.out.clone(),
            files: project::list_files(tmp),
            train_records: records.train.len(),
            eval_records: records.eval.len(),
            planned_steps: plan.total_steps,
            base_model: base.name().to_string(),
            launch: launch::single_gpu_command(req.engine),
        });
        Ok(())
    })?;
    report.ok_or_else(|| anyhow::anyhow!("{}: the project was not written", req.out.display()))
}
