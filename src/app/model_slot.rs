//! The studio's loaded model, as the status bar and the Train tab see it: not loaded,
//! loading (with progress lines from the loader thread), ready, or failed.

use std::sync::Arc;

use crate::jobs::JobEvents;
use crate::model::Model;
use crate::worker::model_loader::{self, LoadEvent};
use crate::worker::Waker;

/// The model slot.
#[derive(Default)]
pub enum ModelSlot {
    #[default]
    NotLoaded,
    Loading {
        spec: String,
        lines: Vec<String>,
        events: JobEvents<LoadEvent>,
    },
    Ready {
        spec: String,
        model: Arc<Model>,
        summary: String,
    },
    Failed {
        spec: String,
        error: String,
    },
}

impl ModelSlot {
    /// Starts loading `spec` on the loader thread.
    pub fn load(spec: &str, waker: Waker) -> Self {
        ModelSlot::Loading {
            spec: spec.to_string(),
            lines: Vec::new(),
            events: model_loader::spawn(spec.to_string(), waker),
        }
    }

    /// Takes the loader's events. Returns an error to show, if loading failed.
    pub fn poll(&mut self) -> Option<(String, String)> {
        let ModelSlot::Loading {
            spec,
            lines,
            events,
        } = self
        else {
            return None;
        };
        let mut next = None;
        while let Some(e) = events.try_recv() {
            match e {
                LoadEvent::Progress(l) => {
                    lines.push(l);
                    if lines.len() > 200 {
                        lines.remove(0);
                    }
                }
                LoadEvent::Loaded { model, summary } => {
                    next = Some(ModelSlot::Ready {
                        spec: spec.clone(),
                        model,
                        summary,
                    });
                    break;
                }
                LoadEvent::Calibrated => {}
                LoadEvent::Failed(error) => {
                    next = Some(ModelSlot::Failed {
                        spec: spec.clone(),
                        error,
                    });
                    break;
                }
            }
        }
        let next = next?;
        let failure = match &next {
            ModelSlot::Failed { spec, error } => Some((
                format!("The model “{spec}” could not be loaded"),
                error.clone(),
            )),
            _ => None,
        };
        *self = next;
        failure
    }

    /// The loaded model.
    pub fn model(&self) -> Option<&Arc<Model>> {
        match self {
            ModelSlot::Ready { model, .. } => Some(model),
            _ => None,
        }
    }

    /// One line for the status bar.
    pub fn status_line(&self) -> String {
        match self {
            ModelSlot::NotLoaded => "no model loaded".into(),
            ModelSlot::Loading { spec, lines, .. } => match lines.last() {
                Some(l) => format!("loading {spec}: {l}"),
                None => format!("loading {spec}…"),
            },
            ModelSlot::Ready { model, .. } => format!("model: {}", model.name),
            ModelSlot::Failed { spec, .. } => format!("model {spec} failed to load"),
        }
    }

    pub fn is_loading(&self) -> bool {
        matches!(self, ModelSlot::Loading { .. })
    }
}
