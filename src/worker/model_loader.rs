//! Loads the studio's model on a named thread, fetching the default model first (with
//! progress lines) when it is not on disk yet.

use std::sync::Arc;

use crossbeam_channel::Receiver;

use super::Waker;
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

/// Starts loading `spec` (`default`, a folder, a `.gguf` file or a hub id).
pub fn spawn(spec: String, waker: Waker) -> Receiver<LoadEvent> {
    let (tx, rx) = crossbeam_channel::bounded(256);
    let fail_tx = tx.clone();
    let spawned = std::thread::Builder::new()
        .name("model-loader".into())
        .spawn(move || {
            let send = |e: LoadEvent| {
                let _ = tx.send(e);
                waker.wake();
            };
            if spec == "default" && crate::model::source::find_default().is_none() {
                send(LoadEvent::Progress(
                    "the default model is not on disk yet; fetching it".into(),
                ));
                let r = crate::model::fetch::fetch_default(&mut |line| {
                    send(LoadEvent::Progress(line.to_string()))
                });
                if let Err(e) = r {
                    send(LoadEvent::Failed(format!("{e:#}")));
                    return;
                }
            }
            send(LoadEvent::Progress(format!("loading {spec}")));
            match crate::model::load(&spec) {
                Ok(m) => {
                    let summary = summary(&m);
                    send(LoadEvent::Loaded {
                        model: Arc::new(m),
                        summary,
                    });
                    // The Train tab's time estimate follows this machine's matmul rate.
                    // Measured once the window has drawn the loaded model and gone idle
                    // (while the status bar's spinner turns, drawing competes for the
                    // cores); the wake redraws the estimate with it.
                    if !crate::train::estimate::calibrated() {
                        std::thread::sleep(std::time::Duration::from_millis(500));
                        crate::train::estimate::calibrate();
                        waker.wake();
                    }
                }
                Err(e) => send(LoadEvent::Failed(format!("{e:#}"))),
            }
        });
    if let Err(e) = spawned {
        let _ = fail_tx.send(LoadEvent::Failed(format!(
            "cannot start the loader thread: {e}"
        )));
    }
    rx
}
