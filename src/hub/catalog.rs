//! The models on this machine, for the Models tab: the studio's data directory, the
//! Hugging Face cache and the models used recently, each described from its header alone
//! (`config.json` and the safetensors headers, or the GGUF metadata) without reading any
//! weights, so that a scan of many gigabytes takes milliseconds.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use crate::model::{ModelConfig, ModelError};

/// Where a model was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The studio's own models folder (the default model lands there).
    DataDir,
    /// The Hugging Face hub cache.
    HfCache,
    /// Loaded before from elsewhere.
    Recent,
}

impl Origin {
    pub fn label(self) -> &'static str {
        match self {
            Origin::DataDir => "studio models folder",
            Origin::HfCache => "Hugging Face cache",
            Origin::Recent => "recently used",
        }
    }
}

/// One model found on disk.
#[derive(Debug, Clone)]
pub struct ModelEntry {
    /// What `--model` takes to load it: `default`, a hub id, or a path.
    pub spec: String,
    /// A short name for display.
    pub name: String,
    pub origin: Origin,
    pub path: PathBuf,
    /// What its header says, or why it could not be read.
    pub info: Result<ModelInfo, String>,
}

/// A model's shape and size, read from its header.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// `llama`, `mistral`, `qwen2` or `qwen3`.
    pub architecture: String,
    pub parameters: usize,
    pub layers: usize,
    pub hidden_size: usize,
    pub context_length: usize,
    /// How the weights are stored: `bf16`, `f32`, `Q4_1`, `Q8_0`…
    pub quantization: String,
    /// Bytes of weights on disk.
    pub file_bytes: u64,
    /// Bytes the studio needs to hold the weights for chat: they stay as stored (GGUF blocks
    /// mapped, safetensors in their own precision), so about the file size; the KV cache
    /// comes on top. Training also keeps the base as stored.
    pub memory_bytes: u64,
    /// The whole config, for what the tabs derive from it (the Models tab's training
    /// estimate).
    pub config: ModelConfig,
}

/// Describes the model at `path` (a Hugging Face folder or a `.gguf` file).
pub fn describe(path: &Path) -> Result<ModelInfo, ModelError> {
    if path.is_dir() {
        describe_hf_folder(path)
    } else {
        describe_gguf(path)
    }
}

fn info(config: &ModelConfig, quantization: String, file_bytes: u64) -> ModelInfo {
    let parameters = config.parameter_count();
    // The weights' bytes: the file's, less its header, so never more than in f32.
    let memory_bytes = file_bytes.min(config.f32_weight_bytes() as u64);
    ModelInfo {
        architecture: config.architecture.model_type().to_string(),
        parameters,
        layers: config.num_hidden_layers,
        hidden_size: config.hidden_size,
        context_length: config.max_position_embeddings,
        quantization,
        file_bytes,
        memory_bytes,
        config: config.clone(),
    }
}

fn describe_hf_folder(dir: &Path) -> Result<ModelInfo, ModelError> {
    let cfg_path = dir.join("config.json");
    let text = std::fs::read_to_string(&cfg_path).map_err(|e| ModelError::io(&cfg_path, e))?;
    let config = ModelConfig::from_hf_json(&text, &cfg_path.display().to_string())?;
    let raw: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    let mut file_bytes = 0;
    let mut dtypes = std::collections::BTreeMap::<String, u64>::new();
    for entry in std::fs::read_dir(dir).map_err(|e| ModelError::io(dir, e))? {
        let Ok(entry) = entry else { continue };
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "safetensors") {
            let len = entry.metadata().map(|m| m.len()).unwrap_or(0);
            file_bytes += len;
            if let Some(dtype) = safetensors_dtype(&p) {
                *dtypes.entry(dtype).or_default() += len;
            }
        }
    }
    let quantization = dtypes
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|(d, _)| d)
        .or_else(|| {
            ["torch_dtype", "dtype"]
                .iter()
                .find_map(|k| raw.get(*k).and_then(|v| v.as_str()))
                .map(|s| s.replace("bfloat16", "bf16").replace("float", "f"))
        })
        .unwrap_or_else(|| "unknown".into());
    Ok(info(&config, quantization, file_bytes))
}

/// The dtype of the first tensor in a safetensors header (lowercase, e.g. `bf16`).
fn safetensors_dtype(path: &Path) -> Option<String> {
    let file = File::open(path).ok()?;
    let file_len = file.metadata().ok()?.len();
    let mut f = BufReader::new(file);
    let mut len = [0u8; 8];
    f.read_exact(&mut len).ok()?;
    let len = u64::from_le_bytes(len);
    // Never more than the file holds (nor than the safetensors crate's own cap).
    if len > 100 << 20 || len > file_len.saturating_sub(8) {
        return None;
    }
    let mut header = vec![0u8; len as usize];
    f.read_exact(&mut header).ok()?;
    let header: serde_json::Value = serde_json::from_slice(&header).ok()?;
    header
        .as_object()?
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .find_map(|(_, v)| v.get("dtype")?.as_str())
        .map(str::to_lowercase)
}

fn describe_gguf(path: &Path) -> Result<ModelInfo, ModelError> {
    let file = File::open(path).map_err(|e| ModelError::io(path, e))?;
    let file_bytes = file.metadata().map_err(|e| ModelError::io(path, e))?.len();
    let mut reader = BufReader::new(file);
    let content = crate::model::weights::read_gguf_content(&mut reader, path)?;
    crate::model::weights::check_gguf_tensors(&content, file_bytes, path)?;
    let has_output = content.tensor_infos.contains_key("output.weight");
    let config = crate::model::gguf::config_from_metadata(&content.metadata, has_output, path)?;
    // The file's own name for its quantization (`general.file_type`, as llama.cpp and the
    // tools that list GGUF files show it: a Q4_K_M file mixes Q4_K, Q6_K and, where rows
    // are not whole super-blocks, Q5_0 and Q8_0); without one, the type that holds the
    // most weights (norms stay f32). Each tensor lies inside the file, so the counts are
    // bounded by its size.
    let mut by_type = std::collections::BTreeMap::<String, u64>::new();
    for t in content.tensor_infos.values() {
        let n = by_type.entry(format!("{:?}", t.ggml_dtype)).or_default();
        *n = n.saturating_add(t.shape.elem_count() as u64);
    }
    let named = content
        .metadata
        .get("general.file_type")
        .and_then(|v| v.to_u32().ok())
        .and_then(crate::model::file_type::name);
    let quantization = match named {
        Some(name) => name.to_string(),
        None => by_type
            .into_iter()
            .max_by_key(|(_, n)| *n)
            .map(|(d, _)| d)
            .unwrap_or_else(|| "unknown".into()),
    };
    Ok(info(&config, quantization, file_bytes))
}

/// Every model in the studio's models folder, the HF cache, and `recent` (specs loaded
/// before), each once. The default model's entry has the spec `default`.
pub fn scan(recent: &[String]) -> Vec<ModelEntry> {
    let mut out: Vec<ModelEntry> = Vec::new();
    let default = super::source::find_default().map(|r| r.location.path().to_path_buf());
    let mut add = |spec: String, name: String, origin: Origin, path: PathBuf| {
        if out.iter().any(|e| e.path == path) {
            return;
        }
        let spec = if default.as_deref() == Some(path.as_path()) {
            "default".to_string()
        } else {
            spec
        };
        let info = describe(&path).map_err(|e| format!("{e:#}"));
        out.push(ModelEntry {
            spec,
            name,
            origin,
            path,
            info,
        });
    };
    let models_dir = crate::paths::models_dir();
    let mut local: Vec<PathBuf> = std::fs::read_dir(&models_dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "gguf") || p.join("config.json").is_file())
        .collect();
    local.sort();
    for p in local {
        add(
            p.display().to_string(),
            crate::paths::file_name(&p),
            Origin::DataDir,
            p,
        );
    }
    for (id, p) in super::source::list_hf_cache() {
        add(id.clone(), id, Origin::HfCache, p);
    }
    for spec in recent {
        if spec == "default" {
            continue;
        }
        let Ok(resolved) = super::source::resolve_local(spec) else {
            continue;
        };
        let p = resolved.location.path().to_path_buf();
        add(spec.clone(), crate::paths::file_name(&p), Origin::Recent, p);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::config::Architecture;

    #[test]
    fn a_tiny_folder_and_its_gguf_describe_the_same_model() {
        let dir = tempfile::tempdir().unwrap();
        let folder =
            crate::testkit::write_tiny_model(&dir.path().join("m"), Architecture::Qwen2, 1)
                .unwrap();
        let hf = describe(&folder).unwrap();
        assert_eq!(hf.architecture, "qwen2");
        assert_eq!(hf.quantization, "f32");
        let cfg = crate::testkit::tiny_config(Architecture::Qwen2);
        assert_eq!(hf.parameters, cfg.parameter_count());
        assert!(hf.file_bytes as usize >= cfg.parameter_count() * 4);
        assert_eq!(hf.memory_bytes as usize, cfg.parameter_count() * 4);

        let m = crate::model::load_hf_folder(&folder, &candle_core::Device::Cpu).unwrap();
        let gguf = dir.path().join("m.gguf");
        crate::export::gguf::write_gguf(&m, &gguf, crate::export::gguf::GgufType::Q8_0).unwrap();
        let g = describe(&gguf).unwrap();
        assert_eq!(g.architecture, "qwen2");
        assert_eq!(g.parameters, hf.parameters);
        assert_eq!(g.quantization, "Q8_0");
        assert!(g.file_bytes < hf.file_bytes);
    }

    #[test]
    fn a_broken_file_is_described_as_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.gguf");
        std::fs::write(&p, b"not a gguf").unwrap();
        let e = describe(&p).unwrap_err().to_string();
        assert!(e.contains("bad.gguf"), "{e}");
        assert!(describe(&dir.path().join("missing")).is_err());
    }
}
