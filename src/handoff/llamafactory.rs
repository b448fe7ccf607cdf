//! LLaMA-Factory's side of a hand-off: `train.yaml` for `llamafactory-cli train` (stage
//! `sft`, LoRA) and `data/dataset_info.json` naming the train and eval files. Only keys
//! LLaMA-Factory's argument parser knows are written: it refuses unknown ones.
//!
//! No `template:` is written. LLaMA-Factory's named templates are its own transcriptions
//! (its `smollm2` ends the default system prompt with a period the model's template does
//! not have); without one it derives the slots from the tokenizer's chat template, the one
//! the studio renders. `tools/handoff-check` compares the token ids both produce.

use std::path::Path;

use serde_json::json;
use serde_yaml_ng::Mapping;

use super::hyper::{f32_as_typed, put, write_config, Hyper};
use super::project::{BaseWeights, DataFiles, DATA_DIR};
use crate::train::RunConfig;

/// The dataset names `train.yaml` uses for the files in `dataset_info.json`.
pub const TRAIN_NAME: &str = "studio_train";
pub const EVAL_NAME: &str = "studio_eval";

/// The `train.yaml` mapping.
pub fn config(cfg: &RunConfig, h: &Hyper, base: &BaseWeights, data: &DataFiles) -> Mapping {
    let mut m = Mapping::new();
    // model
    put(&mut m, "model_name_or_path", base.name());
    put(&mut m, "trust_remote_code", true);
    // method
    put(&mut m, "stage", "sft");
    put(&mut m, "do_train", true);
    put(&mut m, "finetuning_type", "lora");
    put(&mut m, "lora_rank", cfg.lora.rank as u64);
    put(&mut m, "lora_alpha", cfg.lora.alpha);
    put(&mut m, "lora_dropout", f32_as_typed(cfg.lora.dropout));
    let targets: Vec<&str> = cfg.lora.targets.iter().map(|t| t.module_name()).collect();
    put(&mut m, "lora_target", targets.join(","));
    put(&mut m, "use_rslora", cfg.lora.use_rslora);
    // dataset
    put(&mut m, "dataset_dir", DATA_DIR);
    put(&mut m, "dataset", TRAIN_NAME);
    if data.eval.is_some() {
        put(&mut m, "eval_dataset", EVAL_NAME);
    }
    put(&mut m, "cutoff_len", cfg.data.max_seq_len as u64);
    put(&mut m, "train_on_prompt", cfg.data.train_on_prompt);
    // The studio packs without attention across samples: LLaMA-Factory's neat packing.
    put(&mut m, "packing", cfg.data.packing);
    put(&mut m, "neat_packing", cfg.data.packing);
    put(&mut m, "overwrite_cache", true);
    put(&mut m, "preprocessing_num_workers", 4u64);
    put(&mut m, "dataloader_num_workers", 0u64);
    // train
    h.put_trainer_args(&mut m);
    put(
        &mut m,
        "per_device_train_batch_size",
        h.micro_batch_size as u64,
    );
    put(
        &mut m,
        "per_device_eval_batch_size",
        h.micro_batch_size as u64,
    );
    put(&mut m, "lr_scheduler_type", h.scheduler);
    if h.max_steps.is_none() {
        put(&mut m, "num_train_epochs", h.epochs);
    }
    // LLaMA-Factory turns gradient checkpointing on unless told not to.
    put(
        &mut m,
        "disable_gradient_checkpointing",
        !h.gradient_checkpointing,
    );
    if data.eval.is_some() && h.eval_steps.is_none() {
        // Evaluated once, after training.
        put(&mut m, "do_eval", true);
    }
    if h.cpu {
        put(&mut m, "use_cpu", true);
        put(&mut m, "bf16", false);
    } else {
        put(&mut m, "bf16", true);
    }
    put(&mut m, "plot_loss", true);
    put(&mut m, "overwrite_output_dir", true);
    put(&mut m, "save_only_model", false);
    put(&mut m, "report_to", "none");
    m
}

/// `dataset_info.json`: the two ShareGPT files with LLaMA-Factory's default tags, which
/// the studio's ShareGPT writer uses (`human`, `gpt`, `function_call`, `observation`, and
/// `system` and `tools` columns where any record has them).
pub fn dataset_info(data: &DataFiles) -> serde_json::Value {
    let mut columns = serde_json::Map::new();
    columns.insert("messages".into(), "conversations".into());
    if data.has_system {
        columns.insert("system".into(), "system".into());
    }
    if data.has_tools {
        columns.insert("tools".into(), "tools".into());
    }
    let entry = |file: &Path| {
        json!({
            "file_name": file.file_name().map(|n| n.to_string_lossy().into_owned()),
            "formatting": "sharegpt",
            "columns": columns,
        })
    };
    let mut info = serde_json::Map::new();
    info.insert(TRAIN_NAME.into(), entry(&data.train));
    if let Some(eval) = &data.eval {
        info.insert(EVAL_NAME.into(), entry(eval));
    }
    serde_json::Value::Object(info)
}

/// Writes `train.yaml` and `data/dataset_info.json` into the project folder `dir`.
pub fn write(
    dir: &Path,
    cfg: &RunConfig,
    h: &Hyper,
    base: &BaseWeights,
    data: &DataFiles,
) -> anyhow::Result<()> {
    let m = config(cfg, h, base, data);
    write_config(dir, super::Engine::LlamaFactory, &cfg.output.name, &m)?;
    let info = serde_json::to_string_pretty(&dataset_info(data))?;
    crate::fsio::write_bytes_atomic(
        &dir.join(DATA_DIR).join("dataset_info.json"),
        info.as_bytes(),
    )?;
    Ok(())
}
