//! Loads the studio's model as a job, fetching the default model first (with
//! progress lines) when it is not on disk yet.

use std::sync::Arc;

use crate::jobs::{self, JobEvent, JobEvents, JobKind, Waker};
use crate::model::Model;

/// What the loader reports.
#[derive(Debug)]
pub enum LoadEvent {
    /// A line of progress (download, extraction, loading).
    Progress(String),
    Loaded {
        model: Arc<Model>,
        /// Architecture, layers, sizes, parameter count, in one line.
        summary: String,
    },
    Failed(String),
    /// The machine's matmul rate was measured after the load (the UI has stopped
    /// listening by then; the wake redraws the Train tab's estimate).
    Calibrated,
}

/// One line that describes a loaded model.
pub fn summary(m: &Model) -> String {
    let c = m.config();
    format!(
        "{} · {} layers · hidden {} · {} heads ({} KV) · vocab {} · {:.0}M parameters",
        c.architecture.model_type(),
        c.num_hidden_layers,
        c.hidden_size,
        c.num_attention_heads,
        c.num_key_value_heads,
        c.vocab_size,
        c.parameter_count() as f64 / 1e6
    )
}

impl JobEvent for LoadEvent {
    fn failed(_kind: JobKind, error: String) -> Self {
        LoadEvent::Failed(error)
    }
    fn is_final(&self) -> bool {
        !matches!(self, LoadEvent::Progress(_))
    }
}

/// Starts loading `spec` (`default`, a folder, a `.gguf` file or a hub id) as a job.
pub fn spawn(spec: String, waker: Waker) -> JobEvents<LoadEvent> {
    jobs::spawn(JobKind::LoadModel, "model-loader", 256, waker, move |r| {
        if spec == "default" && crate::hub::source::find_default().is_none() {
            r.send(LoadEvent::Progress(
                "the default model is not on disk yet; fetching it".into(),
            ));
            crate::hub::fetch::fetch_default(&mut |line| {
                r.send(LoadEvent::Progress(line.to_string()))
            })?;
        }
        r.send(LoadEvent::Progress(format!("loading {spec}")));
        let model = crate::hub::load(&spec)?;
        let summary = summary(&model);
        let model = Arc::new(model);
        r.send(LoadEvent::Loaded {
            model: model.clone(),
            summary,
        });
        // The decode steps' interleaved copies are built now, while the user types, not
        // inside the first reply (a reply that starts meanwhile waits for, or builds, the
        // matrix it needs: each is built once); no longer once the studio let go of the
        // model (another was loaded).
        let started = std::time::Instant::now();
        let bytes = model.prepare_decode(&|| Arc::strong_count(&model) > 1);
        tracing::info!(
            "prepared {:.0} MiB of stored matrices for decoding in {:.2} s",
            bytes as f64 / (1 << 20) as f64,
            started.elapsed().as_secs_f64()
        );
        drop(model);
        // The Train tab's time estimate follows this machine's matmul rate. Measured once
        // the window has drawn the loaded model and gone idle (while the status bar shows
        // the loading indicator, drawing competes for the cores); the wake redraws the
        // estimate.
        if !crate::train::estimate::calibrated() {
            std::thread::sleep(std::time::Duration::from_millis(500));
            crate::train::estimate::calibrate();
        }
        Ok(LoadEvent::Calibrated)
    })
}
