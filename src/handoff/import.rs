//! The way back: an engine's output folder (LLaMA-Factory, axolotl, or any Hugging Face
//! `Trainer` run with a PEFT adapter) becomes a run folder beside the local runs. The
//! adapter and each `checkpoint-N` adapter are copied, the loss and eval curves read from
//! `trainer_state.json` (or LLaMA-Factory's `trainer_log.jsonl`) into `metrics.jsonl`, the
//! run config restored from the project's `studio-run.toml` (or, without one, from the
//! adapter's own config), and `imported.json` says where the run came from, so the Runs
//! tab labels it and does not offer to resume it here.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde_json::Value;

use super::project::STUDIO_CONFIG_FILE;
use super::Engine;
use crate::adapter::AdapterConfig;
use crate::train::run_dir::{folder_name, new_run_path, Imported, MetricLine, IMPORTED_FILE};
use crate::train::{RunConfig, StepMetrics};

pub use crate::train::run_dir::{Imported as Origin, IMPORTED_FILE as ORIGIN_FILE};

const ADAPTER_CONFIG: &str = "adapter_config.json";
const ADAPTER_WEIGHTS: &str = "adapter_model.safetensors";
/// An adapter header larger than this is not an adapter's.
const MAX_HEADER_BYTES: u64 = 64 << 20;

/// What [`import_output`] found and wrote.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// The new run folder.
    pub run_dir: PathBuf,
    pub engine: Option<Engine>,
    pub steps: usize,
    pub evals: usize,
    pub checkpoints: Vec<usize>,
    /// Where the curves came from.
    pub log_source: Option<PathBuf>,
    /// Whether the run's settings came from the project's `studio-run.toml`.
    pub restored_config: bool,
}

/// The parts of an engine's output, found.
struct Found {
    adapter: PathBuf,
    project: Option<PathBuf>,
    engine: Option<Engine>,
    log: Option<PathBuf>,
    checkpoints: Vec<(usize, PathBuf)>,
}

/// Imports the engine output at `dir` (the output folder, or the hand-off project that
/// holds it in `output/`) as a new run under `runs_dir`.
pub fn import_output(dir: &Path, runs_dir: &Path) -> anyhow::Result<ImportReport> {
    let found = find(dir)?;
    let adapter_cfg = check_adapter(&found.adapter)?;
    let (cfg, restored_config) = run_config(&found, &adapter_cfg)?;
    let lines = match &found.log {
        Some(p) => read_log(p)?,
        None => Vec::new(),
    };
    let runtime = found.log.as_deref().and_then(train_runtime);
    for (_, ck) in &found.checkpoints {
        check_adapter(ck)?;
    }

    let engine_id = found.engine.map_or("trainer", Engine::id);
    let run_name = match folder_name(&cfg.output.name) {
        n if n.is_empty() => "imported".to_string(),
        n => n,
    };
    std::fs::create_dir_all(runs_dir).with_context(|| runs_dir.display().to_string())?;
    let run_dir = new_run_path(runs_dir, &format!("{run_name}-{engine_id}"));
    let imported = Imported {
        engine: found
            .engine
            .map_or("Hugging Face Trainer", Engine::label)
            .to_string(),
        source: std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf()),
        imported_at: chrono::Local::now().format("%Y-%m-%d %H:%M:%S").to_string(),
        train_runtime_s: runtime,
    };
    crate::fsio::replace_dir_atomic(&run_dir, |tmp: &Path| -> anyhow::Result<()> {
        let mut toml = cfg.to_toml();
        toml.push_str(&format!(
            "\n# imported from {} ({})\n",
            imported.source.display(),
            imported.engine
        ));
        crate::fsio::write_bytes_atomic(&tmp.join("run.toml"), toml.as_bytes())?;
        crate::fsio::write_file_atomic(&tmp.join("metrics.jsonl"), |w| {
            for line in &lines {
                serde_json::to_writer(&mut *w, line)?;
                w.write_all(b"\n")?;
            }
            Ok(())
        })?;
        copy_adapter(&found.adapter, &tmp.join("adapter"))?;
        let ck_dir = tmp.join("checkpoints");
        std::fs::create_dir_all(&ck_dir).with_context(|| ck_dir.display().to_string())?;
        for (step, ck) in &found.checkpoints {
            copy_adapter(ck, &ck_dir.join(format!("step-{step}")))?;
        }
        let json = serde_json::to_string_pretty(&imported)?;
        crate::fsio::write_bytes_atomic(&tmp.join(IMPORTED_FILE), json.as_bytes())?;
        Ok(())
    })?;
    Ok(ImportReport {
        run_dir,
        engine: found.engine,
        steps: lines
            .iter()
            .filter(|l| matches!(l, MetricLine::Step(_)))
            .count(),
        evals: lines
            .iter()
            .filter(|l| matches!(l, MetricLine::Eval { .. }))
            .count(),
        checkpoints: found.checkpoints.iter().map(|c| c.0).collect(),
        log_source: found.log,
        restored_config,
    })
}

fn has_adapter(dir: &Path) -> bool {
    dir.join(ADAPTER_CONFIG).is_file() && dir.join(ADAPTER_WEIGHTS).is_file()
}

/// Finds the adapter, the project around it, the engine and the log in `dir`.
fn find(dir: &Path) -> anyhow::Result<Found> {
    if !dir.is_dir() {
        anyhow::bail!("{}: not a folder", dir.display());
    }
    let output = if has_adapter(dir) {
        dir.to_path_buf()
    } else if has_adapter(&dir.join("output")) {
        dir.join("output")
    } else if dir.join(ADAPTER_CONFIG).is_file() && dir.join("adapter_model.bin").is_file() {
        anyhow::bail!(
            "{}: the adapter is a pickle (adapter_model.bin), which the studio does not \
             load; save it with safetensors (the engines' default)",
            dir.display()
        );
    } else {
        anyhow::bail!(
            "{}: no PEFT adapter here ({ADAPTER_CONFIG} and {ADAPTER_WEIGHTS}) or in output/; \
             open the folder the engine trained into",
            dir.display()
        );
    };
    let project = [Some(output.as_path()), output.parent()]
        .into_iter()
        .flatten()
        .find(|p| p.join(STUDIO_CONFIG_FILE).is_file())
        .map(Path::to_path_buf);
    let mut checkpoints: Vec<(usize, PathBuf)> = std::fs::read_dir(&output)
        .with_context(|| output.display().to_string())?
        .flatten()
        .filter_map(|e| {
            let step = e
                .file_name()
                .to_str()?
                .strip_prefix("checkpoint-")?
                .parse()
                .ok()?;
            has_adapter(&e.path()).then(|| (step, e.path()))
        })
        .collect();
    checkpoints.sort();
    let engine = detect_engine(&output, project.as_deref());
    // The final trainer_state.json has the whole history; the last checkpoint's stops there.
    let log = [output.join("trainer_state.json")]
        .into_iter()
        .chain(
            checkpoints
                .iter()
                .rev()
                .map(|(_, p)| p.join("trainer_state.json")),
        )
        .chain([output.join("trainer_log.jsonl")])
        .find(|p| p.is_file());
    Ok(Found {
        adapter: output,
        project,
        engine,
        log,
        checkpoints,
    })
}

fn detect_engine(output: &Path, project: Option<&Path>) -> Option<Engine> {
    if let Some(p) = project {
        for e in Engine::ALL {
            if p.join(e.config_file()).is_file() {
                return Some(e);
            }
        }
    }
    if output.join("trainer_log.jsonl").is_file() || output.join("llamaboard_config.yaml").is_file()
    {
        return Some(Engine::LlamaFactory);
    }
    // axolotl keeps its resolved config beside the adapter in recent versions.
    if output.join("axolotl_config.yaml").is_file() || output.join("config.yaml").is_file() {
        return Some(Engine::Axolotl);
    }
    None
}

/// Checks that `dir` holds a LoRA adapter the studio reads: its config passes
/// [`crate::adapter::read_adapter_config`] with a usable scale, and the safetensors header
/// names PEFT LoRA matrices in pairs. The shapes are checked against
/// the base when the adapter is loaded.
fn check_adapter(dir: &Path) -> anyhow::Result<AdapterConfig> {
    let cfg = crate::adapter::read_adapter_config(dir)?;
    let cfg_path = dir.join(ADAPTER_CONFIG);
    if cfg.r == 0 || !cfg.lora_alpha.is_finite() {
        anyhow::bail!(
            "{}: r {} and lora_alpha {} are not a usable LoRA scale",
            cfg_path.display(),
            cfg.r,
            cfg.lora_alpha
        );
    }
    let st = dir.join(ADAPTER_WEIGHTS);
    let names = safetensors_names(&st)?;
    let mut a = std::collections::BTreeSet::new();
    let mut b = std::collections::BTreeSet::new();
    for n in &names {
        match crate::adapter::parse_peft_key(n) {
            Some((layer, target, 'A')) => a.insert((layer, target)),
            Some((layer, target, _)) => b.insert((layer, target)),
            None => anyhow::bail!(
                "{}: tensor `{n}` is not a LoRA matrix of a decoder layer (modules_to_save \
                 and embedding adapters are not supported)",
                st.display()
            ),
        };
    }
    if a.is_empty() || a != b {
        anyhow::bail!(
            "{}: the LoRA A and B matrices do not come in pairs ({} A, {} B)",
            st.display(),
            a.len(),
            b.len()
        );
    }
    Ok(cfg)
}

/// The tensor names in a safetensors file's header, read without reading the tensors.
fn safetensors_names(path: &Path) -> anyhow::Result<Vec<String>> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut len = [0u8; 8];
    f.read_exact(&mut len)
        .map_err(|_| anyhow::anyhow!("{}: too short for a safetensors file", path.display()))?;
    let n = u64::from_le_bytes(len);
    if n == 0 || n > MAX_HEADER_BYTES || n > size.saturating_sub(8) {
        anyhow::bail!(
            "{}: the header claims {n} bytes in a file of {size}",
            path.display()
        );
    }
    let mut header = vec![0u8; n as usize];
    f.read_exact(&mut header)
        .with_context(|| format!("{}: cannot read the header", path.display()))?;
    let map: serde_json::Map<String, Value> = serde_json::from_slice(&header)
        .map_err(|e| anyhow::anyhow!("{}: the header is not JSON: {e}", path.display()))?;
    Ok(map
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect())
}

/// The run's config: the project's `studio-run.toml`, else what the adapter says.
fn run_config(found: &Found, adapter: &AdapterConfig) -> anyhow::Result<(RunConfig, bool)> {
    if let Some(p) = &found.project {
        let path = p.join(STUDIO_CONFIG_FILE);
        let cfg = RunConfig::load(&path)?;
        return Ok((cfg, true));
    }
    let mut cfg = RunConfig::default();
    cfg.model.base = match adapter.base_model_name_or_path.as_deref() {
        Some(crate::hub::source::DEFAULT_HUB_ID) | None => "default".into(),
        Some(b) => b.to_string(),
    };
    cfg.lora.rank = adapter.r;
    cfg.lora.alpha = adapter.lora_alpha;
    cfg.lora.dropout = adapter.lora_dropout;
    cfg.lora.use_rslora = adapter.use_rslora;
    if let crate::adapter::TargetModules::List(names) = &adapter.target_modules {
        let targets: Vec<_> = names
            .iter()
            .filter_map(|n| crate::model::lora::LoraTarget::from_module_name(n))
            .collect();
        if !targets.is_empty() {
            cfg.lora.targets = targets;
        }
    }
    cfg.output.name = found
        .adapter
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "imported".into());
    Ok((cfg, false))
}

/// A non-negative integer field.
fn step_of(v: &Value, key: &str) -> Option<usize> {
    v.get(key)?.as_u64().and_then(|s| usize::try_from(s).ok())
}

/// A number field; `null`, `NaN` and strings Python writes for non-finite values read as NaN.
fn num(v: &Value, key: &str) -> Option<f64> {
    match v.get(key)? {
        Value::Number(n) => n.as_f64(),
        Value::Null => Some(f64::NAN),
        Value::String(s) if matches!(s.as_str(), "NaN" | "nan" | "inf" | "-inf") => Some(f64::NAN),
        _ => None,
    }
}

/// Parses the curves: `trainer_state.json`'s `log_history`, or `trainer_log.jsonl`.
pub fn read_log(path: &Path) -> anyhow::Result<Vec<MetricLine>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let is_jsonl = path.extension().is_some_and(|e| e == "jsonl");
    let entries: Vec<Value> = if is_jsonl {
        // A line cut short by a killed run is skipped, as in metrics.jsonl.
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    } else {
        let state: Value = serde_json::from_str(&python_json(&text))
            .map_err(|e| anyhow::anyhow!("{}: not JSON: {e}", path.display()))?;
        match state.get("log_history") {
            Some(Value::Array(a)) => a.clone(),
            _ => anyhow::bail!("{}: no log_history list", path.display()),
        }
    };
    let (step_key, lr_key) = if is_jsonl {
        ("current_steps", "lr")
    } else {
        ("step", "learning_rate")
    };
    let mut out = Vec::new();
    for e in &entries {
        let Some(step) = step_of(e, step_key) else {
            continue;
        };
        if let Some(loss) = num(e, "eval_loss") {
            out.push(MetricLine::Eval { step, loss });
        } else if let Some(loss) = num(e, "loss") {
            out.push(MetricLine::Step(StepMetrics {
                step,
                epoch: num(e, "epoch").unwrap_or(f64::NAN),
                loss,
                lr: num(e, lr_key).unwrap_or(f64::NAN),
                grad_norm: num(e, "grad_norm").unwrap_or(f64::NAN),
                tokens: 0,
                tokens_per_s: 0.0,
                eta_s: 0.0,
                preference: None,
            }));
        }
    }
    Ok(out)
}

/// Python's `json` writes `NaN` and `Infinity` bare, which JSON does not allow; they become
/// `null` (outside strings).
fn python_json(text: &str) -> std::borrow::Cow<'_, str> {
    if !(text.contains("NaN") || text.contains("Infinity")) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut in_string = false;
    let mut escaped = false;
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        if in_string {
            out.push(c);
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => escaped = false,
            }
            rest = &rest[c.len_utf8()..];
            continue;
        }
        if c == '"' {
            in_string = true;
        }
        let bare = ["-Infinity", "Infinity", "NaN"]
            .into_iter()
            .find(|w| rest.starts_with(w));
        match bare {
            Some(w) => {
                out.push_str("null");
                rest = &rest[w.len()..];
            }
            None => {
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    std::borrow::Cow::Owned(out)
}

/// The engine's training time in seconds: `train_runtime` in `trainer_state.json`, or the
/// last `elapsed_time` (`H:MM:SS`) of `trainer_log.jsonl`.
fn train_runtime(log: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(log).ok()?;
    if log.extension().is_some_and(|e| e == "jsonl") {
        let last: Value = text
            .lines()
            .rev()
            .find_map(|l| serde_json::from_str(l).ok())?;
        let hms = last.get("elapsed_time")?.as_str()?;
        let mut secs = 0.0;
        for part in hms.split(':') {
            secs = secs * 60.0 + part.trim().parse::<f64>().ok()?;
        }
        return Some(secs);
    }
    let state: Value = serde_json::from_str(&python_json(&text)).ok()?;
    state
        .get("log_history")?
        .as_array()?
        .iter()
        .rev()
        .find_map(|e| num(e, "train_runtime"))
        .filter(|s| s.is_finite() && *s >= 0.0)
}

fn copy_adapter(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| to.display().to_string())?;
    for name in [ADAPTER_CONFIG, ADAPTER_WEIGHTS] {
        let src = from.join(name);
        let dst = to.join(name);
        std::fs::copy(&src, &dst)
            .with_context(|| format!("copying {} to {}", src.display(), dst.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_json_turns_bare_nan_into_null_outside_strings() {
        let t = r#"{"a": NaN, "b": "NaN \" Infinity", "c": -Infinity, "d": [Infinity]}"#;
        let v: Value = serde_json::from_str(&python_json(t)).unwrap();
        assert_eq!(v["a"], Value::Null);
        assert_eq!(v["b"], "NaN \" Infinity");
        assert_eq!(v["c"], Value::Null);
        assert_eq!(v["d"][0], Value::Null);
    }
}
