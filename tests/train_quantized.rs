//! Training on a quantized base: a step on a model whose matrices are stored as each
//! quantized type (and as f16) gives the loss and adapter gradients of the same step on
//! its dequantized f32 copy, and a whole run on a stored base trains.

use candle_core::{Device, Tensor};
use finetune_studio::model::{self, config::Architecture, Model};
use finetune_studio::ops::quant::StoredType;
use finetune_studio::testkit::{tiny_config, with_stored_matrices, write_tiny_model_with};
use finetune_studio::train::adapter::TrainableAdapter;
use finetune_studio::train::batch::PackedRow;
use finetune_studio::train::config::LoraSection;
use finetune_studio::train::data::micro_batch;
use finetune_studio::train::trainer;

/// A tiny Llama whose matrices all have rows of 256 values (one K-quant block).
fn model_256(dir: &std::path::Path) -> Model {
    let mut cfg = tiny_config(Architecture::Llama);
    cfg.hidden_size = 256;
    cfg.intermediate_size = 512;
    cfg.num_attention_heads = 4;
    cfg.num_key_value_heads = 2;
    cfg.head_dim = 64;
    let folder = write_tiny_model_with(&dir.join("model"), &cfg, 5).unwrap();
    model::load_hf_folder(&folder, &Device::Cpu).unwrap()
}

/// Loss and gradients of one step of two micro-batches with dropout, on `model`.
fn step(model: &Model) -> (f64, Vec<Vec<f32>>) {
    step_with(model, false)
}

fn step_with(model: &Model, checkpointing: bool) -> (f64, Vec<Vec<f32>>) {
    let lora = LoraSection {
        rank: 4,
        alpha: 8.0,
        dropout: 0.1,
        targets: finetune_studio::model::lora::LoraTarget::ALL.to_vec(),
        ..Default::default()
    };
    let adapter = TrainableAdapter::init(model.config(), &lora, None, 3, &Device::Cpu).unwrap();
    // B = 0 at init would hide the adapter's path through the weights from dA; give it
    // values.
    for (_, v) in adapter.named_vars() {
        let n = v.as_tensor().elem_count();
        let vals: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 / 101.0 - 0.5) * 0.1)
            .collect();
        v.set(&Tensor::from_vec(vals, v.as_tensor().shape(), &Device::Cpu).unwrap())
            .unwrap();
    }
    let named = adapter.named_vars();
    let vocab = model.config().vocab_size as u32;
    let group: Vec<_> = (0..2u32)
        .map(|g| {
            let rows: Vec<PackedRow> = (0..2u32)
                .map(|r| {
                    let ids: Vec<u32> = (0..24u32)
                        .map(|i| (i * 7 + r * 13 + g * 29) % vocab)
                        .collect();
                    let targets = (0..24).map(|i| ids.get(i + 1).copied()).collect();
                    PackedRow {
                        ids,
                        targets,
                        positions: (0..12).chain(0..12).collect(),
                        segments: [0; 12].into_iter().chain([1; 12]).collect(),
                    }
                })
                .collect();
            micro_batch(&rows, &Device::Cpu).unwrap()
        })
        .collect();
    let trained = group.iter().map(|m| m.trained_tokens).sum();
    let (grads, loss) = trainer::accumulated_gradients(
        model,
        &adapter,
        &named,
        &group,
        trained,
        |j| 11 + j as u64,
        checkpointing,
    )
    .unwrap();
    let grads = grads
        .unwrap()
        .iter()
        .map(|g| g.flatten_all().unwrap().to_vec1::<f32>().unwrap())
        .collect();
    (loss, grads)
}

#[test]
fn a_step_on_a_stored_base_equals_the_step_on_its_dequantized_copy() {
    let dir = tempfile::tempdir().unwrap();
    let base = model_256(dir.path());
    let mut largest_gradient = 0f32;
    for ty in [
        StoredType::Q4_0,
        StoredType::Q4_1,
        StoredType::Q5_0,
        StoredType::Q5_1,
        StoredType::Q8_0,
        StoredType::Q2K,
        StoredType::Q3K,
        StoredType::Q4K,
        StoredType::Q5K,
        StoredType::Q6K,
        StoredType::F16,
        StoredType::BF16,
    ] {
        let stored = with_stored_matrices(&base, ty).unwrap();
        assert!(!stored.transformer.is_f32(), "{}", ty.name());
        let dequantized = stored.with_f32_weights().unwrap();
        let (loss_q, grads_q) = step(&stored);
        let (loss_f, grads_f) = step(&dequantized);
        assert!(
            loss_q.is_finite() && loss_q > 0.0,
            "{}: loss {loss_q}",
            ty.name()
        );
        assert!(
            (loss_q - loss_f).abs() < 1e-4,
            "{}: loss {loss_q} on the stored base, {loss_f} on its f32 copy",
            ty.name()
        );
        for (q, f) in grads_q.iter().zip(&grads_f) {
            for (a, b) in q.iter().zip(f) {
                largest_gradient = largest_gradient.max(b.abs());
                assert!(
                    (a - b).abs() < 1e-4,
                    "{}: gradient {a} on the stored base, {b} on its f32 copy",
                    ty.name()
                );
            }
        }
    }
    assert!(
        largest_gradient > 1e-3,
        "gradients too small to compare: {largest_gradient}"
    );
}

/// Recomputing each layer in the backward gives the loss and gradients of the plain
/// backward, on an f32 base and on a stored one.
#[test]
fn checkpointing_gives_the_plain_gradients() {
    let dir = tempfile::tempdir().unwrap();
    let base = model_256(dir.path());
    let stored = with_stored_matrices(&base, StoredType::Q4K).unwrap();
    for (what, m) in [("f32", &base), ("Q4_K", &stored)] {
        let (loss_p, grads_p) = step_with(m, false);
        let (loss_c, grads_c) = step_with(m, true);
        assert!(
            (loss_p - loss_c).abs() < 1e-5,
            "{what}: loss {loss_p} vs {loss_c}"
        );
        assert_eq!(grads_p.len(), grads_c.len());
        for (p, c) in grads_p.iter().zip(&grads_c) {
            for (a, b) in p.iter().zip(c) {
                assert!(
                    (a - b).abs() < 1e-5,
                    "{what}: gradient {a} plain, {b} checkpointed"
                );
            }
        }
        assert!(
            grads_c.iter().flatten().any(|g| g.abs() > 1e-4),
            "{what}: all gradients ~0"
        );
    }
}
