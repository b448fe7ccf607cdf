//! The README of a hand-off project: how to train it on one GPU, several, or a Slurm
//! cluster, which of the run's settings the engine takes one to one, which it cannot take
//! exactly and what was done instead, and how the result comes back to the studio.

use std::fmt::Write as _;
use std::path::Path;

use super::hyper::Hyper;
use super::launch::{MULTI_GPU, SINGLE_GPU, SLURM};
use super::project::{BaseWeights, Records};
use super::Engine;
use crate::train::RunConfig;

/// The README text.
pub fn text(
    engine: Engine,
    cfg: &RunConfig,
    h: &Hyper,
    base: &BaseWeights,
    records: &Records,
    planned_steps: usize,
) -> String {
    let mut s = String::new();
    let e = engine.label();
    let _ = writeln!(s, "# {}: a finetune-studio run for {e}\n", cfg.output.name);
    let install = match engine {
        Engine::LlamaFactory => "pip install llamafactory deepspeed",
        Engine::Axolotl => "pip install 'axolotl[flash-attn,deepspeed]'",
    };
    let _ = writeln!(
        s,
        "Install {e} on the training machine (`{install}`), then, in this folder:\n\n\
         ```sh\n\
         ./{SINGLE_GPU}          # one GPU\n\
         ./{MULTI_GPU}           # every GPU of this node (DeepSpeed ZeRO-2); set NNODES, NODE_RANK,\n\
         \x20                             # MASTER_ADDR and MASTER_PORT on each node for several\n\
         sbatch {SLURM}     # a Slurm cluster (edit the node and GPU counts first)\n\
         ```\n\n\
         The adapter and `trainer_state.json` land in `output/`. Bring them back with\n\
         `finetune-studio import-run output` (or *Runs › Import engine output…*): the run joins\n\
         the Runs tab with its loss and eval curves, and its adapter chats, compares and exports\n\
         like a local one.\n"
    );
    let _ = writeln!(s, "## Data\n");
    let _ = writeln!(
        s,
        "`data/` holds the records the studio would train on: {} for training and {} for eval \
         (the run's own split, seed {}){}{}. {}\n",
        records.train.len(),
        records.eval.len(),
        cfg.training.seed,
        if records.invalid > 0 {
            format!(
                "; {} records that do not validate were left out, as the studio skips them",
                records.invalid
            )
        } else {
            String::new()
        },
        if records.replaced > 0 {
            format!(
                "; the run's placeholder replacements are already filled in ({} records)",
                records.replaced
            )
        } else {
            String::new()
        },
        match engine {
            Engine::LlamaFactory => {
                "The files are ShareGPT JSON with LLaMA-Factory's default tags, named in `data/dataset_info.json`."
            }
            Engine::Axolotl =>
                "The files are OpenAI-messages JSONL for the `chat_template` loader.",
        }
    );
    let _ = writeln!(s, "## What maps one to one\n");
    let targets: Vec<&str> = cfg.lora.targets.iter().map(|t| t.module_name()).collect();
    let warmup = match cfg.optim.warmup_steps {
        Some(w) => format!("{w} steps"),
        None => format!(
            "{} steps ({} of the {planned_steps} steps the studio plans; an integer, which \
             every `transformers` version reads the same way)",
            h.warmup_steps, cfg.optim.warmup_ratio
        ),
    };
    let rows = [
        ("base model", format!("`{}`", base.name())),
        (
            "masking",
            if cfg.data.train_on_prompt {
                "every token is trained".to_string()
            } else {
                "only the assistant turns (and their end-of-turn token) are trained".to_string()
            },
        ),
        (
            "LoRA",
            format!(
                "rank {}, alpha {}, dropout {}, rsLoRA {}, on {}",
                cfg.lora.rank,
                cfg.lora.alpha,
                cfg.lora.dropout,
                cfg.lora.use_rslora,
                targets.join(", ")
            ),
        ),
        (
            "optimizer",
            format!(
                "AdamW, learning rate {:e}, betas {} / {}, eps {:e}, weight decay {}, gradient clipping at {}",
                h.learning_rate, h.beta1, h.beta2, h.eps, h.weight_decay, h.max_grad_norm
            ),
        ),
        (
            "schedule",
            format!("`{}` after a warmup of {warmup}", h.scheduler),
        ),
        (
            "length",
            match h.max_steps {
                Some(n) => format!("{n} optimizer steps"),
                None => format!("{} epochs", h.epochs),
            },
        ),
        (
            "batch",
            format!(
                "{} per device × {} accumulation steps",
                h.micro_batch_size, h.grad_accumulation
            ),
        ),
        (
            "maximum length",
            format!("{} tokens", cfg.data.max_seq_len),
        ),
        (
            "intervals",
            format!(
                "log every {} steps, eval {}, save {}",
                h.logging_steps,
                h.eval_steps
                    .map_or("at the end".to_string(), |n| format!("every {n} steps")),
                h.save_steps
                    .map_or("at the end".to_string(), |n| format!("every {n} steps"))
            ),
        ),
        ("seed", h.seed.to_string()),
    ];
    let _ = writeln!(s, "| setting | value |\n|---|---|");
    for (k, v) in rows {
        let _ = writeln!(s, "| {k} | {v} |");
    }
    let _ = writeln!(s, "\n## What does not map exactly\n");
    let template = match engine {
        Engine::LlamaFactory => {
            "- **Chat template.** `train.yaml` names no `template`, so LLaMA-Factory derives one \
             from the tokenizer's chat template, the base's own, which the studio renders. Its \
             named templates are its own transcriptions and can differ (its `smollm2` adds a \
             period to the default system prompt). Tool calls use LLaMA-Factory's own format.\n"
        }
        Engine::Axolotl => {
            "- **Chat template.** The base's own Jinja template, the one the studio renders, is \
             inline in `config.yaml` (`chat_template_jinja`): this maps one to one.\n"
        }
    };
    s.push_str(template);
    let packing = match engine {
        Engine::LlamaFactory => {
            "LLaMA-Factory's `neat_packing` packs greedily into `cutoff_len` and keeps samples \
             from attending to each other"
        }
        Engine::Axolotl => {
            "axolotl's `sample_packing` bins samples into `sequence_len` (multipack) and keeps \
             them apart only with flash attention's variable-length kernel (`flash_attention: \
             true`); without it, packed samples see each other"
        }
    };
    let _ = writeln!(
        s,
        "- **Packing.** {} The studio packs samples best fit decreasing into rows of at most \
         {} tokens, without attention across samples and without padding; {packing}. Rows hold \
         different samples, so the engine counts its own steps (the studio plans \
         {planned_steps}).",
        if cfg.data.packing {
            "On."
        } else {
            "Off: one sample per row, as in the studio."
        },
        cfg.data.max_seq_len
    );
    let _ = writeln!(
        s,
        "- **Batch.** The studio's batch is rows per micro-batch on one device; the engine's is \
         per GPU, so on G GPUs the effective batch is G times larger. Divide \
         `gradient_accumulation_steps` by G to keep the run's."
    );
    let _ = writeln!(
        s,
        "- **Long samples.** The studio cuts a sample at the maximum length and keeps its \
         start; {}.",
        match engine {
            Engine::LlamaFactory => {
                "LLaMA-Factory's `cutoff_len` shortens prompt and answer in proportion"
            }
            Engine::Axolotl => "axolotl drops samples longer than `sequence_len`",
        }
    );
    let _ = writeln!(
        s,
        "- **Precision and weights.** The studio trains in f32 on the base as it stores it \
         (for a GGUF base, its quantized blocks); the engine trains in bf16 on `{}`.",
        base.name()
    );
    let _ = writeln!(
        s,
        "- **Order and dropout.** The same seed does not give the same sample order or dropout \
         masks in another engine; losses agree in trend, not step for step."
    );
    if h.eval_steps.is_none() && !records.eval.is_empty() {
        let _ = writeln!(
            s,
            "- **Eval at the end only.** {}",
            match engine {
                Engine::LlamaFactory => "`do_eval: true` evaluates once after training.",
                Engine::Axolotl => {
                    "axolotl has no end-only evaluation: `eval_strategy: no`; set `eval_steps` for curves."
                }
            }
        );
    }
    if cfg.eval.suite.is_some() || cfg.eval.patience > 0 {
        let _ = writeln!(
            s,
            "- **Eval suite, best checkpoint, early stopping.** The engine measures the eval \
             loss only: the studio's eval suite is not run during its training (run it on the \
             imported run with `finetune-studio eval --suite`), and its early stopping \
             (patience {}) is not set; its final adapter is the last step's, and each \
             `checkpoint-N` is imported for choosing another.",
            cfg.eval.patience
        );
    }
    match base {
        BaseWeights::Written { path } => {
            let _ = writeln!(
                s,
                "- **Base weights.** `{path}` holds the base as the studio read it, \
                 dequantized to a Hugging Face folder, for machines without the hub."
            );
        }
        BaseWeights::LocalFolder(p) => {
            let _ = writeln!(
                s,
                "- **Base weights.** `{p}` is a folder on the machine that wrote this project; \
                 on another machine, change `{}` to a hub id or a path there.",
                match engine {
                    Engine::LlamaFactory => "model_name_or_path",
                    Engine::Axolotl => "base_model",
                }
            );
        }
        BaseWeights::Named(_) => {}
    }
    s
}

/// Writes `README.md` into the project folder `dir`.
pub fn write(
    dir: &Path,
    engine: Engine,
    cfg: &RunConfig,
    h: &Hyper,
    base: &BaseWeights,
    records: &Records,
    planned_steps: usize,
) -> anyhow::Result<()> {
    let text = text(engine, cfg, h, base, records, planned_steps);
    crate::fsio::write_bytes_atomic(&dir.join("README.md"), text.as_bytes())?;
    Ok(())
}
