//! The parts of a hand-off both engines share: the records exactly as the studio would
//! train on them (placeholders filled in, invalid records left out, the run's own seeded
//! train/eval split), written in the engine's dataset format; which base model the engine
//! loads; the run config kept beside it for the way back; the output folder's checks.

use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{Engine, HandoffRequest};
use crate::data::{Conversation, Dataset, Format};
use crate::model::{Model, ModelLocation};
use crate::train::RunConfig;

/// The run config as the studio knows it (base model spec, dataset path), kept in the
/// project so that importing the engine's output restores the run's settings.
pub const STUDIO_CONFIG_FILE: &str = "studio-run.toml";
/// Where the base model's weights go when they travel with the project.
pub const BASE_DIR: &str = "base";
/// The dataset folder inside a project.
pub const DATA_DIR: &str = "data";

/// The records of a run, split as the trainer splits them.
pub struct Records {
    pub train: Vec<Conversation>,
    pub eval: Vec<Conversation>,
    /// Records left out because they do not validate (the trainer skips them too).
    pub invalid: usize,
    /// Records whose text the run's replacements changed.
    pub replaced: usize,
}

/// Loads the run's dataset and splits it exactly as `train::data::prepare` does: the
/// replacements applied (and reasoning blocks stripped when the run asks), the split over
/// all records with the run's seed, invalid records dropped from either side. Only the
/// conversation is kept (system prompt, turns, tools): the engines read every column, and
/// a stray field of another type breaks their loaders.
pub fn records(cfg: &RunConfig) -> anyhow::Result<Records> {
    let ds = crate::train::data::load_dataset(cfg)?;
    let invalid: std::collections::HashSet<usize> = ds.invalid_records().into_iter().collect();
    let split = cfg.split(ds.len());
    let mut all = ds.into_records();
    let mut replaced = 0;
    if !cfg.data.replace.is_empty() {
        for c in &mut all {
            replaced += usize::from(c.replace_text(&cfg.data.replace));
        }
    }
    // Reasoning blocks go as they go before the studio's own tokenizing.
    if cfg.data.strip_reasoning {
        for c in &mut all {
            crate::data::reasoning::strip_record(c);
        }
    }
    let take = |indices: &[usize]| -> Vec<Conversation> {
        indices
            .iter()
            .filter(|i| !invalid.contains(i))
            .filter_map(|&i| all.get(i))
            .map(|c| Conversation {
                system: c.system.clone(),
                messages: c.messages.clone(),
                tools: c.tools.clone(),
                meta: Default::default(),
            })
            .collect()
    };
    let train = take(&split.train);
    let eval = take(&split.eval);
    if train.is_empty() {
        anyhow::bail!(
            "{}: no valid record is left for training",
            cfg.data.path.display()
        );
    }
    Ok(Records {
        train,
        eval,
        invalid: invalid.len(),
        replaced,
    })
}

/// The dataset files of a project, relative to it.
pub struct DataFiles {
    pub train: PathBuf,
    /// Absent when the run has no eval split.
    pub eval: Option<PathBuf>,
    /// Whether any record has a system prompt / a tool description (LLaMA-Factory refuses
    /// a column that no record has).
    pub has_system: bool,
    pub has_tools: bool,
}

/// The format each engine reads without a conversion of its own: ShareGPT for
/// LLaMA-Factory (its default tags, function calls and tools included), OpenAI messages
/// for axolotl's `chat_template` loader.
fn data_format(engine: Engine) -> (Format, &'static str) {
    match engine {
        Engine::LlamaFactory => (Format::SHAREGPT, "json"),
        Engine::Axolotl => (Format::OPENAI, "jsonl"),
    }
}

/// Writes `data/train.*` and `data/eval.*` into the project folder `dir`.
pub fn write_data(dir: &Path, engine: Engine, records: &Records) -> anyhow::Result<DataFiles> {
    let data_dir = dir.join(DATA_DIR);
    std::fs::create_dir_all(&data_dir).with_context(|| data_dir.display().to_string())?;
    let (format, ext) = data_format(engine);
    let write = |name: &str, recs: &[Conversation]| -> anyhow::Result<PathBuf> {
        let rel = Path::new(DATA_DIR).join(format!("{name}.{ext}"));
        let path = dir.join(&rel);
        let bytes = Dataset::from_records(recs.to_vec(), format).to_bytes(None, &path)?;
        crate::fsio::write_bytes_atomic(&path, &bytes)?;
        Ok(rel)
    };
    let train = write("train", &records.train)?;
    let eval = if records.eval.is_empty() {
        None
    } else {
        Some(write("eval", &records.eval)?)
    };
    let all = || records.train.iter().chain(&records.eval);
    Ok(DataFiles {
        train,
        eval,
        has_system: all().any(|c| c.system.is_some()),
        has_tools: all().any(|c| c.tools.is_some()),
    })
}

/// What the engine loads as the base model.
#[derive(Debug, Clone, PartialEq)]
pub enum BaseWeights {
    /// A hub id or a path on the training machine.
    Named(String),
    /// The weights written into the project's `base/` folder.
    Written { path: String },
    /// A local Hugging Face folder: right on this machine, to be changed for another.
    LocalFolder(String),
}

impl BaseWeights {
    /// The value of the engine's `model_name_or_path` / `base_model`.
    pub fn name(&self) -> &str {
        match self {
            BaseWeights::Named(s) | BaseWeights::Written { path: s } => s,
            BaseWeights::LocalFolder(s) => s,
        }
    }
}

/// Chooses the base the engine loads (see [`HandoffRequest::base_model`]).
pub fn base_weights(model: &Model, req: &HandoffRequest) -> anyhow::Result<BaseWeights> {
    if let Some(b) = req.base_model.as_deref().map(str::trim) {
        if b.is_empty() {
            anyhow::bail!("the base model to hand off is empty");
        }
        return Ok(BaseWeights::Named(b.to_string()));
    }
    if req.write_base {
        return Ok(BaseWeights::Written {
            path: format!("./{BASE_DIR}"),
        });
    }
    if let Some(id) = &model.hub_id {
        return Ok(BaseWeights::Named(id.clone()));
    }
    match &model.location {
        ModelLocation::HfFolder(dir) => {
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.clone());
            Ok(BaseWeights::LocalFolder(dir.display().to_string()))
        }
        ModelLocation::Gguf(file) => anyhow::bail!(
            "{}: the engines train from Hugging Face weights, and this GGUF file names no hub \
             repository; give the base as a hub id or a path on the training machine, or \
             write its weights into the project",
            file.display()
        ),
    }
}

/// Refuses an output folder that holds anything but an earlier hand-off.
pub fn check_out_dir(out: &Path) -> anyhow::Result<()> {
    if out.as_os_str().is_empty() {
        anyhow::bail!("no output folder given");
    }
    if out.is_file() {
        anyhow::bail!("{}: is a file, not a folder", out.display());
    }
    if out.is_dir() {
        let mut entries = std::fs::read_dir(out).with_context(|| out.display().to_string())?;
        let empty = entries.next().is_none();
        if !empty && !out.join(STUDIO_CONFIG_FILE).is_file() {
            anyhow::bail!(
                "{}: the folder exists and is not an earlier hand-off (no {STUDIO_CONFIG_FILE}); \
                 choose a new or empty folder",
                out.display()
            );
        }
    }
    if let Some(parent) = out.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).with_context(|| parent.display().to_string())?;
    }
    Ok(())
}

/// Writes the run config into the project, for [`super::import`].
pub fn write_studio_config(dir: &Path, cfg: &RunConfig) -> anyhow::Result<()> {
    let mut text = String::from(
        "# The studio's run config this project was written from; importing the engine's\n\
         # output restores it as the imported run's settings.\n",
    );
    text.push_str(&cfg.to_toml());
    crate::fsio::write_bytes_atomic(&dir.join(STUDIO_CONFIG_FILE), text.as_bytes())?;
    Ok(())
}

/// Every file under `dir`, relative to it, with its size, sorted.
pub fn list_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(PathBuf, u64)>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let path = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => walk(root, &path, out),
                Ok(t) if t.is_file() => {
                    let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                    let rel = path.strip_prefix(root).unwrap_or(&path).to_path_buf();
                    out.push((rel, size));
                }
                _ => {}
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}
