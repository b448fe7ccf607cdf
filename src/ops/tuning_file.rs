//! The small JSON files in the data directory that keep what was measured on this machine
//! (`kernel-choices.json`, `prefill-choices.json`): a document is read back only on the
//! machine that wrote it (its `cpu` field), written atomically, and a failure either way
//! only costs a new measurement, so it is logged, not returned.

use std::path::Path;

use serde_json::Value;

/// The best time in seconds saved under `key` of a file's `entry`, if it is one (a
/// positive, finite number).
pub fn seconds(entry: &Value, key: &str) -> Option<f64> {
    let t = entry[key].as_f64()?;
    (t.is_finite() && t > 0.0).then_some(t)
}

/// `path`'s document, when the file parses and was written for `machine`.
pub fn read(path: &Path, machine: &str) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    let Ok(doc) = serde_json::from_str::<Value>(&text) else {
        tracing::warn!(
            "{}: not JSON; its choices are measured again",
            path.display()
        );
        return None;
    };
    (doc["cpu"].as_str() == Some(machine)).then_some(doc)
}

/// Writes the object `doc` to `path` as `machine`'s, creating the folder.
pub fn write(path: &Path, machine: &str, mut doc: Value) {
    doc["cpu"] = machine.into();
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .map_err(|e| crate::fsio::WriteError::new(path, e))
        .and_then(|()| crate::fsio::write_bytes_atomic(path, doc.to_string().as_bytes()));
    if let Err(e) = written {
        tracing::warn!("keeping the measured choices: {e}");
    }
}
