//! DPO and ORPO against TRL's formulas in PyTorch + PEFT on the same tiny Llama and the
//! same LoRA adapter (`tools/reference/preference_losses.py` wrote
//! `tests/fixtures/preference/`): the loss, the logged figures and the gradient of every
//! lora_A and lora_B agree within 1e-4. The reference of DPO is the base with the adapter
//! off, computed on the same weights.
//!
//! The Python lines that produced the expected values (see the script for the rest):
//! ```python
//! loss = (-F.logsigmoid(beta * ((pc - rc_) - (pr - rr_)))).mean()          # DPO, beta 0.2
//! log_odds = (ac - ar) - (log1mexp(ac) - log1mexp(ar))
//! loss = -sc.sum() / nc.sum() - (beta * F.logsigmoid(log_odds)).mean()    # ORPO, beta 0.25
//! loss.backward()
//! ```

use std::path::{Path, PathBuf};

use candle_core::Device;
use finetune_studio::model::lora::LoraTarget;
use finetune_studio::model::{self, Model};
use finetune_studio::testkit::tiny_tokenizer_json;
use finetune_studio::train::adapter::TrainableAdapter;
use finetune_studio::train::batch::Example;
use finetune_studio::train::config::{LoraSection, RunConfig};
use finetune_studio::train::data::micro_batch;
use finetune_studio::train::preference::{accumulated_gradients, pair_row};
use finetune_studio::train::Stage;
use serde_json::Value;

const TOLERANCE: f64 = 1e-4;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preference")
}

/// The fixture's model with the studio's tiny tokenizer beside it (the token ids need
/// none, but a model folder carries one).
fn load_model(dir: &Path) -> Model {
    let m = dir.join("model");
    std::fs::create_dir_all(&m).unwrap();
    for f in ["config.json", "model.safetensors"] {
        std::fs::copy(fixture().join("model").join(f), m.join(f)).unwrap();
    }
    std::fs::write(m.join("tokenizer.json"), tiny_tokenizer_json().to_string()).unwrap();
    let tok_cfg = serde_json::json!({"bos_token": "<|im_start|>", "eos_token": "<|im_end|>",
        "chat_template": model::FALLBACK_TEMPLATE});
    std::fs::write(m.join("tokenizer_config.json"), tok_cfg.to_string()).unwrap();
    model::load_hf_folder(&m, &Device::Cpu).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

fn example(prompt: &[u32], reply: &[u32]) -> Example {
    let ids: Vec<u32> = prompt.iter().chain(reply).copied().collect();
    let train = (0..ids.len()).map(|i| i >= prompt.len()).collect();
    Example {
        ids,
        train,
        truncated: false,
    }
}

fn check(stage: Stage, key: &str) {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model = load_model(dir.path());
    let lora = LoraSection {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        use_rslora: false,
        targets: LoraTarget::ALL.to_vec(),
    };
    let mut adapter = TrainableAdapter::init(model.config(), &lora, None, 0, &Device::Cpu).unwrap();
    adapter
        .load_values(&fixture().join("adapter"), model.config(), &Device::Cpu)
        .unwrap();
    let named = adapter.named_vars();
    let rows: Vec<_> = expected["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let prompt = ids(&p["prompt"]);
            pair_row(
                &example(&prompt, &ids(&p["chosen"])),
                &example(&prompt, &ids(&p["rejected"])),
            )
        })
        .collect();
    let mb = micro_batch(&rows, &Device::Cpu).unwrap();
    let want = &expected[key];
    let mut cfg = RunConfig {
        stage,
        ..Default::default()
    };
    cfg.preference.beta = want["beta"].as_f64().unwrap();
    let got = accumulated_gradients(&model, &adapter, &named, &[mb], &cfg, None, |_| 0).unwrap();

    let loss = want["loss"].as_f64().unwrap();
    assert!(
        (got.loss - loss).abs() < TOLERANCE,
        "{key} loss {} vs TRL {loss}",
        got.loss
    );
    let m = got.metrics.unwrap();
    let figures = [
        ("chosen_logp", m.chosen_logp),
        ("rejected_logp", m.rejected_logp),
        ("chosen_reward", m.chosen_reward),
        ("rejected_reward", m.rejected_reward),
        ("reward_margin", m.reward_margin),
        ("reward_accuracy", m.reward_accuracy),
    ];
    for (name, value) in figures {
        let w = want["metrics"][name].as_f64().unwrap();
        // Log-probabilities summed over a reply are tens in size: the same 1e-4, relative.
        let tol = TOLERANCE * w.abs().max(1.0);
        assert!((value - w).abs() < tol, "{key} {name}: {value} vs TRL {w}");
    }

    let grads = got.grads.unwrap();
    let want_grads = want["grads"].as_object().unwrap();
    assert_eq!(want_grads.len(), named.len());
    let mut largest = 0f64;
    for ((name, _), g) in named.iter().zip(&grads) {
        let w: Vec<f64> = want_grads[name]
            .as_array()
            .unwrap_or_else(|| panic!("TRL has no gradient for {name}"))
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(g.len(), w.len(), "{name}");
        for (a, b) in g.iter().zip(&w) {
            largest = largest.max(b.abs());
            assert!(
                (*a as f64 - b).abs() < TOLERANCE,
                "{key} {name}: {a} vs TRL {b}"
            );
        }
    }
    // The comparison means something only if the gradients are not all tiny.
    assert!(largest > 0.1, "{key}: largest gradient {largest}");
}

#[test]
fn dpo_matches_trl() {
    check(Stage::Dpo, "dpo");
}

#[test]
fn orpo_matches_trl() {
    check(Stage::Orpo, "orpo");
}
