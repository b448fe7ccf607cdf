//! Writing a file the Chat tab produces (a saved conversation, a batch-compare export)
//! as a job: the bytes are made there, the folder is created, and the file is written
//! atomically. The result comes back as one [`Written`] event the tab polls each frame.

use std::path::PathBuf;

use crate::jobs::{self, JobEvent, JobEvents, JobKind, Waker};

/// Where the file went, or what went wrong (with the path).
pub type WriteResult = Result<PathBuf, String>;

/// A write's one event.
#[derive(Debug)]
pub struct Written(pub WriteResult);

impl JobEvent for Written {
    fn failed(_kind: JobKind, error: String) -> Self {
        Written(Err(error))
    }
    fn is_final(&self) -> bool {
        true
    }
}

/// Makes the bytes with `make` and writes them to `path` on a job thread named `name`.
pub fn spawn(
    name: &str,
    path: PathBuf,
    make: impl FnOnce() -> Result<Vec<u8>, String> + Send + 'static,
    waker: &Waker,
) -> JobEvents<Written> {
    jobs::spawn(JobKind::WriteFile, name, 1, waker.clone(), move |_| {
        Ok(Written(write(path, make)))
    })
}

fn write(path: PathBuf, make: impl FnOnce() -> Result<Vec<u8>, String>) -> WriteResult {
    if path.as_os_str().is_empty() {
        return Err("type a file path first".to_string());
    }
    let bytes = make()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    crate::fsio::write_bytes_atomic(&path, &bytes).map_err(|e| e.to_string())?;
    Ok(path)
}
