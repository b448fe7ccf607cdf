//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

use finetune_studio::model::{self, Model};

/// The default model when it is on disk (CI fetches it); `None` otherwise, with a note.
pub fn default_model() -> Option<Model> {
    match hub::source::find_default() {
        Some(r) => {
            Some(model::load_resolved(&r, &candle_core::Device::Cpu).expect("default model loads"))
        }
        None => {
            eprintln!("default model not downloaded: run `finetune-studio fetch-model`; skipping");
            None
        }
    }
}

pub fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fixtures")
        .join(name)
}

pub fn read_json(name: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(fixture(name)).expect("fixture exists");
    serde_json::from_str(&text).expect("fixture is JSON")
}

/// Largest absolute difference between two tensors.
pub fn max_abs_diff(a: &candle_core::Tensor, b: &candle_core::Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// Logits of every position of `ids`, with an optional adapter and KV cache.
pub fn logits(
    m: &Model,
    lora: Option<&model::lora::LoraSet>,
    cache: Option<&mut model::Cache>,
    ids: &[u32],
) -> candle_core::Tensor {
    let x = candle_core::Tensor::new(ids, &candle_core::Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let h = m
        .transformer
        .forward(
            &x,
            model::Forward {
                lora,
                cache,
                ..Default::default()
            },
        )
        .unwrap();
    m.transformer.logits(&h.squeeze(0).unwrap(), false).unwrap()
}
