//! axolotl's side of a hand-off: `config.yaml` for `axolotl train` (LoRA, the
//! `chat_template` loader on OpenAI-messages JSONL, the studio's exact chat template inline
//! as `chat_template_jinja`).

use std::path::Path;

use serde_yaml_ng::{Mapping, Value};

use super::hyper::{f32_as_typed, put, strings, Hyper};
use super::project::{BaseWeights, DataFiles};
use crate::train::RunConfig;

/// One entry of `datasets` / `test_datasets`.
fn dataset(file: &Path, train_on_prompt: bool, split: Option<&str>) -> Value {
    let mut d = Mapping::new();
    put(&mut d, "path", file.to_string_lossy().into_owned());
    put(&mut d, "ds_type", "json");
    if let Some(s) = split {
        put(&mut d, "split", s);
    }
    put(&mut d, "type", "chat_template");
    put(&mut d, "field_messages", "messages");
    let mut props = Mapping::new();
    put(&mut props, "role", "role");
    put(&mut props, "content", "content");
    put(&mut d, "message_property_mappings", Value::Mapping(props));
    let roles: &[&str] = if train_on_prompt {
        &["system", "user", "assistant", "tool"]
    } else {
        &["assistant"]
    };
    put(&mut d, "roles_to_train", strings(roles.iter().copied()));
    // The end of each trained turn is trained too, as the studio's assistant spans are.
    put(&mut d, "train_on_eos", "turn");
    Value::Mapping(d)
}

/// The `config.yaml` mapping.
pub fn config(
    cfg: &RunConfig,
    h: &Hyper,
    base: &BaseWeights,
    data: &DataFiles,
    template: &str,
) -> Mapping {
    let mut m = Mapping::new();
    put(&mut m, "base_model", base.name());
    put(&mut m, "trust_remote_code", true);
    put(&mut m, "chat_template", "jinja");
    put(&mut m, "chat_template_jinja", template);
    let train_on_prompt = cfg.data.train_on_prompt;
    put(
        &mut m,
        "datasets",
        Value::Sequence(vec![dataset(&data.train, train_on_prompt, None)]),
    );
    if let Some(eval) = &data.eval {
        put(
            &mut m,
            "test_datasets",
            Value::Sequence(vec![dataset(eval, train_on_prompt, Some("train"))]),
        );
    }
    put(&mut m, "val_set_size", 0.0);
    put(&mut m, "train_on_inputs", train_on_prompt);
    put(&mut m, "dataset_prepared_path", "prepared");
    put(&mut m, "sequence_len", cfg.data.max_seq_len as u64);
    put(&mut m, "sample_packing", cfg.data.packing);
    put(&mut m, "eval_sample_packing", false);
    put(&mut m, "pad_to_sequence_len", cfg.data.packing);
    // LoRA
    put(&mut m, "adapter", "lora");
    put(&mut m, "lora_r", cfg.lora.rank as u64);
    put(&mut m, "lora_alpha", cfg.lora.alpha);
    put(&mut m, "lora_dropout", f32_as_typed(cfg.lora.dropout));
    put(
        &mut m,
        "lora_target_modules",
        strings(cfg.lora.targets.iter().map(|t| t.module_name())),
    );
    put(&mut m, "peft_use_rslora", cfg.lora.use_rslora);
    // training
    h.put_trainer_args(&mut m);
    put(&mut m, "micro_batch_size", h.micro_batch_size as u64);
    if h.max_steps.is_none() {
        put(&mut m, "num_epochs", h.epochs);
    }
    put(&mut m, "optimizer", "adamw_torch");
    put(&mut m, "lr_scheduler", h.scheduler);
    put(&mut m, "gradient_checkpointing", h.gradient_checkpointing);
    if h.cpu {
        put(&mut m, "bf16", false);
        put(&mut m, "fp16", false);
        put(&mut m, "tf32", false);
        put(&mut m, "flash_attention", false);
    } else {
        put(&mut m, "bf16", "auto");
        put(&mut m, "tf32", false);
        // Packed samples stay apart only through flash attention's variable-length kernel.
        put(&mut m, "flash_attention", true);
    }
    put(&mut m, "save_safetensors", true);
    m
}
