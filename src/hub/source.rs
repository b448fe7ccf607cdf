//! Resolving the one `--model` argument: `default`, a Hugging Face folder, a `.gguf`
//! file, or a hub repo id (from the HF cache, else downloaded with hf-hub).

use std::path::{Path, PathBuf};

use crate::model::{ModelError, ModelLocation, ResolvedModel};
use crate::paths;

/// The hub id of the default model.
pub const DEFAULT_HUB_ID: &str = "HuggingFaceTB/SmolLM2-135M-Instruct";
/// The file the offline fallback extracts into the data directory.
pub const DEFAULT_GGUF_NAME: &str = "SmolLM2-135M-Instruct.Q4_1.gguf";

/// The snapshot folder of `repo_id` in the HF cache, if it is there.
pub fn find_in_hf_cache(repo_id: &str) -> Option<PathBuf> {
    let dir = paths::hf_hub_cache().join(format!("models--{}", repo_id.replace('/', "--")));
    let snapshots = dir.join("snapshots");
    if let Ok(rev) = std::fs::read_to_string(dir.join("refs").join("main")) {
        let p = snapshots.join(rev.trim());
        if p.join("config.json").exists() {
            return Some(p);
        }
    }
    let mut entries: Vec<_> = std::fs::read_dir(&snapshots)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    entries
        .into_iter()
        .rev()
        .find(|p| p.join("config.json").exists())
}

/// Every model in the HF cache that has a `config.json` (repo id, snapshot folder).
pub fn list_hf_cache() -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(paths::hf_hub_cache()) else {
        return Vec::new();
    };
    let mut out: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            let id = name.strip_prefix("models--")?.replacen("--", "/", 1);
            find_in_hf_cache(&id).map(|p| (id, p))
        })
        .collect();
    out.sort();
    out
}

/// The default model, if it is on disk (HF cache first, then the fetched GGUF).
pub fn find_default() -> Option<ResolvedModel> {
    if let Some(p) = find_in_hf_cache(DEFAULT_HUB_ID) {
        return Some(ResolvedModel {
            location: ModelLocation::HfFolder(p),
            hub_id: Some(DEFAULT_HUB_ID.into()),
        });
    }
    let gguf = paths::models_dir().join(DEFAULT_GGUF_NAME);
    gguf.exists().then(|| ResolvedModel {
        location: ModelLocation::Gguf(gguf),
        hub_id: Some(DEFAULT_HUB_ID.into()),
    })
}

fn looks_like_repo_id(spec: &str) -> bool {
    let parts: Vec<&str> = spec.split('/').collect();
    parts.len() == 2
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && !p.starts_with('.')
        })
}

/// The `--model` name of Gemma 3 270M as `fetch-model --gemma3` stores it.
pub const GEMMA3_SPEC: &str = "gemma3";

/// Resolves `spec` without touching the network.
pub fn resolve_local(spec: &str) -> Result<ResolvedModel, ModelError> {
    if spec == "default" {
        return find_default().ok_or_else(|| ModelError::NotFound {
            spec: spec.into(),
            message: format!(
                "the default model ({DEFAULT_HUB_ID}) is not downloaded yet; run `finetune-studio fetch-model`"
            ),
        });
    }
    if spec == GEMMA3_SPEC {
        let path = super::gemma3::find().ok_or_else(|| ModelError::NotFound {
            spec: spec.into(),
            message: format!(
                "Gemma 3 270M ({}) is not downloaded yet; run `finetune-studio fetch-model --gemma3`",
                super::gemma3::GGUF_NAME
            ),
        })?;
        return resolve_path(&path);
    }
    let path = Path::new(spec);
    if path.exists() {
        return resolve_path(path);
    }
    // A bare file or folder name: the studio's models folder, where the Models tab lists
    // it (`--model gemma-3-270m-q4_k_m.gguf`).
    if let Some(found) = in_models_dir(&paths::models_dir(), spec) {
        return resolve_path(&found);
    }
    if looks_like_repo_id(spec) {
        if let Some(p) = find_in_hf_cache(spec) {
            return Ok(ResolvedModel {
                location: ModelLocation::HfFolder(p),
                hub_id: Some(spec.into()),
            });
        }
        return Err(ModelError::NotFound {
            spec: spec.into(),
            message: format!(
                "not in the Hugging Face cache ({})",
                paths::hf_hub_cache().display()
            ),
        });
    }
    Err(ModelError::NotFound {
        spec: spec.into(),
        message: "no such file or folder, and not a hub repo id (owner/name)".into(),
    })
}

fn resolve_path(path: &Path) -> Result<ResolvedModel, ModelError> {
    if path.is_dir() {
        if path.join("config.json").exists() {
            return Ok(ResolvedModel {
                location: ModelLocation::HfFolder(path.to_path_buf()),
                hub_id: None,
            });
        }
        let ggufs: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|e| ModelError::io(path, e))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "gguf"))
            .collect();
        if let [one] = ggufs.as_slice() {
            return Ok(ResolvedModel {
                location: ModelLocation::Gguf(one.clone()),
                hub_id: None,
            });
        }
        return Err(ModelError::NotFound {
            spec: path.display().to_string(),
            message: "the folder has no config.json (a Hugging Face model folder) and not exactly one .gguf file".into(),
        });
    }
    crate::model::weights::refuse_pickle(path)?;
    match path.extension().and_then(|e| e.to_str()) {
        Some("gguf") => Ok(ResolvedModel {
            location: ModelLocation::Gguf(path.to_path_buf()),
            hub_id: None,
        }),
        Some("json") | Some("safetensors") => match path.parent() {
            Some(dir) if dir.join("config.json").exists() => Ok(ResolvedModel {
                location: ModelLocation::HfFolder(dir.to_path_buf()),
                hub_id: None,
            }),
            _ => Err(ModelError::NotFound {
                spec: path.display().to_string(),
                message: "no config.json next to this file".into(),
            }),
        },
        _ => Err(ModelError::NotFound {
            spec: path.display().to_string(),
            message: "expected a Hugging Face model folder or a .gguf file".into(),
        }),
    }
}

/// Downloads `repo_id` into the HF cache with hf-hub and returns its snapshot folder.
pub fn download_from_hub(repo_id: &str) -> Result<PathBuf, ModelError> {
    let api = hf_hub::api::sync::ApiBuilder::new()
        .with_cache_dir(paths::hf_hub_cache())
        .with_progress(true)
        .build()
        .map_err(|e| ModelError::Fetch(format!("cannot start the Hugging Face hub client: {e}")))?;
    let repo = api.model(repo_id.to_string());
    let info = repo.info().map_err(|e| {
        ModelError::Fetch(format!("{repo_id}: hub unreachable or repo unknown: {e}"))
    })?;
    let files: Vec<String> = info.siblings.iter().map(|s| s.rfilename.clone()).collect();
    let wanted = |f: &str| {
        matches!(
            f,
            "config.json"
                | "tokenizer.json"
                | "tokenizer_config.json"
                | "generation_config.json"
                | "chat_template.jinja"
                | "model.safetensors.index.json"
                | "special_tokens_map.json"
        ) || (f.ends_with(".safetensors") && !f.contains('/'))
    };
    let mut dir = None;
    for f in files.iter().filter(|f| wanted(f)) {
        let p = repo
            .get(f)
            .map_err(|e| ModelError::Fetch(format!("{repo_id}: downloading {f}: {e}")))?;
        dir = p.parent().map(Path::to_path_buf);
    }
    dir.ok_or_else(|| {
        ModelError::Fetch(format!(
            "{repo_id}: the repo has no config.json / safetensors files"
        ))
    })
}

/// `spec` as an entry of the models folder `dir`, when it is a bare name (no separator)
/// that exists there.
fn in_models_dir(dir: &Path, spec: &str) -> Option<std::path::PathBuf> {
    let bare = !spec.is_empty() && Path::new(spec).components().count() == 1;
    let candidate = dir.join(spec);
    (bare && !spec.starts_with('.') && candidate.exists()).then_some(candidate)
}

/// Resolves `spec`, downloading a hub repo id that is not in the cache.
pub fn resolve(spec: &str) -> Result<ResolvedModel, ModelError> {
    match resolve_local(spec) {
        Ok(r) => Ok(r),
        Err(ModelError::NotFound { .. })
            if looks_like_repo_id(spec) && !Path::new(spec).exists() =>
        {
            let dir = download_from_hub(spec)?;
            Ok(ResolvedModel {
                location: ModelLocation::HfFolder(dir),
                hub_id: Some(spec.into()),
            })
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bare_names_are_found_in_the_models_folder() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("m.gguf"), b"x").unwrap();
        assert_eq!(
            in_models_dir(dir.path(), "m.gguf"),
            Some(dir.path().join("m.gguf"))
        );
        assert_eq!(in_models_dir(dir.path(), "other.gguf"), None);
        assert_eq!(in_models_dir(dir.path(), "sub/m.gguf"), None);
        assert_eq!(in_models_dir(dir.path(), "../m.gguf"), None);
        assert_eq!(in_models_dir(dir.path(), ""), None);
    }

    #[test]
    fn repo_ids() {
        assert!(looks_like_repo_id("HuggingFaceTB/SmolLM2-135M-Instruct"));
        assert!(!looks_like_repo_id("/abs/path"));
        assert!(!looks_like_repo_id("a/b/c"));
        assert!(!looks_like_repo_id("../x"));
    }
}
