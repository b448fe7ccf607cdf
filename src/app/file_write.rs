//! Writing a file the Chat tab produces (a saved conversation, a batch-compare export)
//! on a short-lived named thread: the bytes are made there, the folder is created, and
//! the file is written to a temporary name and renamed into place. The result comes back
//! over a channel the tab polls each frame.

use std::path::PathBuf;

use crossbeam_channel::Receiver;

use crate::worker::Waker;

/// Where the file went, or what went wrong (with the path).
pub type WriteResult = Result<PathBuf, String>;

/// Makes the bytes with `make` and writes them to `path` on a thread named `name`.
pub fn spawn(
    name: &str,
    path: PathBuf,
    make: impl FnOnce() -> Result<Vec<u8>, String> + Send + 'static,
    waker: &Waker,
) -> Receiver<WriteResult> {
    let (tx, rx) = crossbeam_channel::bounded(1);
    let fail = tx.clone();
    let thread_waker = waker.clone();
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let _ = tx.send(write(path, make));
            thread_waker.wake();
        });
    if let Err(e) = spawned {
        let _ = fail.try_send(Err(format!("cannot start the thread that writes: {e}")));
    }
    rx
}

fn write(path: PathBuf, make: impl FnOnce() -> Result<Vec<u8>, String>) -> WriteResult {
    if path.as_os_str().is_empty() {
        return Err("type a file path first".to_string());
    }
    let bytes = make()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    crate::data::dataset::write_atomic(&path, &bytes, false).map_err(|e| e.to_string())?;
    Ok(path)
}
