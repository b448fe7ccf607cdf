//! The Train tab's settings form: base model, chat template and thinking switch, dataset
//! (with reasoning blocks kept or stripped), LoRA, optimizer and schedule, and training
//! loop settings, grouped, each with a tooltip that says what it does. Edits the
//! [`RunConfig`] in place.

use std::path::PathBuf;

use eframe::egui;

use super::template_picker;
use crate::model::lora::LoraTarget;
use crate::model::Model;
use crate::text::TemplateChoice;
use crate::train::config::{EvalSplit, Schedule};
use crate::train::RunConfig;
use crate::worker::{Command, DialogPurpose, Worker};

/// Where the base model comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    Default,
    Folder,
    Gguf,
    HfCache,
}

impl ModelKind {
    pub fn of(spec: &str) -> Self {
        if spec == "default" || spec.is_empty() {
            ModelKind::Default
        } else if spec.ends_with(".gguf") {
            ModelKind::Gguf
        } else if spec.contains('/') && !std::path::Path::new(spec).exists() {
            ModelKind::HfCache
        } else {
            ModelKind::Folder
        }
    }

    fn label(self) -> &'static str {
        match self {
            ModelKind::Default => "Default (SmolLM2-135M-Instruct)",
            ModelKind::Folder => "A model folder",
            ModelKind::Gguf => "A GGUF file",
            ModelKind::HfCache => "From the Hugging Face cache",
        }
    }
}

/// Form state that is not part of the config.
#[derive(Debug)]
pub struct FormState {
    pub model_kind: ModelKind,
    /// Train on the dataset open in the Datasets tab (else on `config.data.path`).
    pub use_open_dataset: bool,
    hf_models: Option<Vec<(String, PathBuf)>>,
    /// The template picker's choice (a file choice keeps its typed path, even empty).
    pub template: TemplateChoice,
}

impl FormState {
    pub fn new(config: &RunConfig) -> Self {
        FormState {
            model_kind: ModelKind::of(&config.model.base),
            use_open_dataset: true,
            hf_models: None,
            template: config.model.template_choice(),
        }
    }
}

pub(super) fn row(
    ui: &mut egui::Ui,
    label: &str,
    tip: &str,
    add: impl FnOnce(&mut egui::Ui) -> egui::Response,
) {
    ui.label(label).on_hover_text(tip);
    add(ui).on_hover_text(tip);
    ui.end_row();
}

/// The model section.
pub fn model_ui(ui: &mut egui::Ui, cfg: &mut RunConfig, form: &mut FormState, worker: &Worker) {
    ui.strong("Base model");
    let before = form.model_kind;
    egui::ComboBox::from_id_salt("model-kind")
        .selected_text(form.model_kind.label())
        .width(260.0)
        .show_ui(ui, |ui| {
            for k in [
                ModelKind::Default,
                ModelKind::Folder,
                ModelKind::Gguf,
                ModelKind::HfCache,
            ] {
                ui.selectable_value(&mut form.model_kind, k, k.label());
            }
        });
    if form.model_kind != before && form.model_kind == ModelKind::Default {
        cfg.model.base = "default".into();
    }
    match form.model_kind {
        ModelKind::Default => {
            ui.weak("Fetched on first use; small enough to train on a laptop CPU.");
        }
        ModelKind::Folder | ModelKind::Gguf => {
            let (purpose, hint) = if form.model_kind == ModelKind::Folder {
                (
                    DialogPurpose::ModelFolder,
                    "folder with config.json, tokenizer.json, *.safetensors",
                )
            } else {
                (DialogPurpose::ModelGguf, "/path/to/model.gguf")
            };
            ui.horizontal(|ui| {
                if cfg.model.base == "default" {
                    cfg.model.base.clear();
                }
                ui.add(
                    egui::TextEdit::singleline(&mut cfg.model.base)
                        .hint_text(hint)
                        .desired_width(ui.available_width() - 80.0),
                );
                if ui.button("Browse…").clicked() {
                    worker.send(Command::PickFile {
                        purpose,
                        save: false,
                        start: None,
                    });
                }
            });
        }
        ModelKind::HfCache => {
            let models = form
                .hf_models
                .get_or_insert_with(crate::hub::source::list_hf_cache);
            if models.is_empty() {
                ui.weak(format!(
                    "No model in the Hugging Face cache ({}).",
                    crate::paths::hf_hub_cache().display()
                ));
            } else {
                egui::ComboBox::from_id_salt("hf-model")
                    .selected_text(cfg.model.base.as_str())
                    .width(260.0)
                    .show_ui(ui, |ui| {
                        for (id, _) in models.iter() {
                            ui.selectable_value(&mut cfg.model.base, id.clone(), id);
                        }
                    });
            }
            if ui.small_button("Rescan").clicked() {
                form.hf_models = None;
            }
        }
    }
}

/// The chat template section: the picker, the thinking switch where the template has one,
/// and the warnings of the choice on `loaded` (the base model, when it is the one loaded).
pub fn template_ui(
    ui: &mut egui::Ui,
    cfg: &mut RunConfig,
    form: &mut FormState,
    loaded: Option<&Model>,
) {
    if form.template.to_config() != cfg.model.template {
        form.template = cfg.model.template_choice();
    }
    template_picker::picker_ui(ui, "train-template", "Model's own", &mut form.template);
    cfg.model.template = form.template.to_config();
    if template_picker::has_thinking_switch(&form.template, loaded) {
        template_picker::thinking_ui(ui, &mut cfg.model.enable_thinking);
    }
    template_picker::warnings_ui(ui, &template_picker::warnings(&form.template, loaded));
}

/// The dataset section. `open` is the Datasets tab's file and whether it has unsaved edits.
pub fn dataset_ui(
    ui: &mut egui::Ui,
    cfg: &mut RunConfig,
    form: &mut FormState,
    open: Option<(PathBuf, Option<String>, bool)>,
    worker: &Worker,
) {
    ui.strong("Dataset");
    ui.horizontal(|ui| {
        ui.radio_value(&mut form.use_open_dataset, true, "The open dataset");
        ui.radio_value(&mut form.use_open_dataset, false, "A file");
    });
    if form.use_open_dataset {
        match open {
            Some((path, entry, dirty)) => {
                cfg.data.path = path.clone();
                cfg.data.dataset_info_entry = entry.clone();
                let name = match &entry {
                    Some(e) => format!("{} (entry {e})", path.display()),
                    None => path.display().to_string(),
                };
                ui.add(egui::Label::new(name).truncate());
                if dirty {
                    ui.colored_label(
                        ui.visuals().warn_fg_color,
                        "! It has unsaved changes: save it (Ctrl+S) so the run sees them.",
                    );
                }
            }
            None => {
                ui.weak("No dataset is open; open one in the Datasets tab or choose a file.");
            }
        }
    } else {
        ui.horizontal(|ui| {
            let mut text = cfg.data.path.display().to_string();
            if ui
                .add(
                    egui::TextEdit::singleline(&mut text)
                        .hint_text("/path/to/train.jsonl")
                        .desired_width(ui.available_width() - 80.0),
                )
                .changed()
            {
                cfg.data.path = PathBuf::from(text);
                cfg.data.dataset_info_entry = None;
            }
            if ui.button("Browse…").clicked() {
                worker.send(Command::PickFile {
                    purpose: DialogPurpose::TrainDataset,
                    save: false,
                    start: None,
                });
            }
        });
    }
    ui.checkbox(&mut cfg.data.strip_reasoning, "Strip reasoning blocks")
        .on_hover_text(
            "Remove <think>…</think> from assistant turns before tokenizing (the Datasets tab \
             counts the records that have them); off keeps them and the model learns to reason",
        );
    placeholders_ui(ui, cfg);
}

fn placeholders_ui(ui: &mut egui::Ui, cfg: &mut RunConfig) {
    egui::CollapsingHeader::new(format!("Placeholders ({})", cfg.data.replace.len()))
        .id_salt("placeholders")
        .show(ui, |ui| {
            ui.weak("Text replaced in every record before training, e.g. {{name}} → Studio.");
            let mut remove = None;
            for (i, (from, to)) in cfg.data.replace.iter_mut().enumerate() {
                ui.horizontal(|ui| {
                    ui.add(egui::TextEdit::singleline(from).desired_width(110.0));
                    ui.label("→");
                    ui.add(egui::TextEdit::singleline(to).desired_width(140.0));
                    if ui.small_button("×").clicked() {
                        remove = Some(i);
                    }
                });
            }
            if let Some(i) = remove {
                cfg.data.replace.remove(i);
            }
            ui.horizontal(|ui| {
                if ui.small_button("+ Add").clicked() {
                    cfg.data.replace.push(("{{name}}".into(), String::new()));
                }
                if ui
                    .small_button("Identity example")
                    .on_hover_text("{{name}} and {{author}}, as LLaMA-Factory's identity.json uses")
                    .clicked()
                {
                    cfg.data.replace = vec![
                        ("{{name}}".into(), "Studio".into()),
                        ("{{author}}".into(), "finetune-studio".into()),
                    ];
                }
            });
        });
}

/// LoRA, optimizer and training settings.
pub fn settings_ui(ui: &mut egui::Ui, cfg: &mut RunConfig) {
    egui::CollapsingHeader::new("LoRA adapter")
        .default_open(true)
        .show(ui, |ui| {
            egui::Grid::new("lora-grid").num_columns(2).show(ui, |ui| {
                row(ui, "Rank (r)", "Width of the low-rank update. Higher learns more and costs more memory; 8–64 is usual.", |ui| {
                    ui.add(egui::DragValue::new(&mut cfg.lora.rank).range(1..=512))
                });
                row(ui, "Alpha", "Scales the update: scale = alpha / r (or alpha / √r with rsLoRA). Twice the rank is a common choice.", |ui| {
                    ui.add(egui::DragValue::new(&mut cfg.lora.alpha).range(0.1..=2048.0).speed(0.5))
                });
                row(ui, "Dropout", "Dropout on the adapter's input while training; 0.05–0.1 helps small datasets generalize.", |ui| {
                    ui.add(egui::DragValue::new(&mut cfg.lora.dropout).range(0.0..=0.9).speed(0.01))
                });
                row(ui, "rsLoRA", "Rank-stabilized scaling (alpha / √r), steadier when the rank is high.", |ui| {
                    ui.checkbox(&mut cfg.lora.use_rslora, "")
                });
            });
            ui.label("Target layers").on_hover_text(
                "The linear layers that get an adapter. All seven learn the most; q/v only is the cheapest.",
            );
            ui.horizontal_wrapped(|ui| {
                for t in LoraTarget::ALL {
                    let mut on = cfg.lora.targets.contains(&t);
                    if ui.checkbox(&mut on, t.module_name()).changed() {
                        if on {
                            cfg.lora.targets.push(t);
                        } else {
                            cfg.lora.targets.retain(|x| *x != t);
                        }
                    }
                }
            });
        });
    egui::CollapsingHeader::new("Optimizer (AdamW) and schedule")
        .default_open(true)
        .show(ui, |ui| {
            egui::Grid::new("optim-grid").num_columns(2).show(ui, |ui| {
                row(ui, "Learning rate", "Peak step size. 1e-4 to 3e-4 suits LoRA; too high makes the loss jump or turn NaN.", |ui| {
                    ui.add(egui::DragValue::new(&mut cfg.optim.learning_rate).range(1e-7..=1e-1).speed(1e-5).custom_formatter(|v, _| format!("{v:.1e}")))
                });
                row(ui, "Schedule", "How the learning rate changes after warmup.", |ui| {
                    egui::ComboBox::from_id_salt("schedule")
                        .selected_text(format!("{:?}", cfg.optim.schedule).to_lowercase())
                        .show_ui(ui, |ui| {
                            for s in [Schedule::Cosine, Schedule::Linear, Schedule::Constant] {
                                ui.selectable_value(&mut cfg.optim.schedule, s, format!("{s:?}").to_lowercase());
                            }
                        })
                        .response
                });
                row(ui, "Warmup ratio", "Fraction of the steps over which the learning rate rises from 0 to its peak.", |ui| {
                    ui.add(egui::DragValue::new(&mut cfg.optim.warmup_ratio).range(0.0..=0.5).speed(0.005))
                });
                row(ui, "Weight decay", "Pulls adapter weights toward zero; 0 is the usual choice for LoRA.", |ui| {
                    ui.add(egui::DragValue::new(&mut cfg.optim.weight_decay).range(0.0..=1.0).speed(0.001))
                });
                row(ui, "Max grad norm", "Gradients with a larger norm are scaled down to it (clipping); guards against spikes.", |ui| {
                    ui.add(egui::DragValue::new(&mut cfg.optim.max_grad_norm).range(0.0..=100.0).speed(0.05))
                });
            });
        });
    egui::CollapsingHeader::new("Training")
        .default_open(true)
        .show(ui, |ui| {
            egui::Grid::new("training-grid").num_columns(2).show(ui, |ui| {
                row(ui, "Epochs", "Passes over the training split.", |ui| {
                    ui.add(egui::DragValue::new(&mut cfg.training.epochs).range(0.1..=100.0).speed(0.1))
                });
                let mut limit = cfg.training.max_steps.is_some();
                row(ui, "Stop after steps", "Stop after this many optimizer steps, whatever the epochs say.", |ui| {
                    ui.horizontal(|ui| {
                        ui.checkbox(&mut limit, "");
                        let mut n = cfg.training.max_steps.unwrap_or(100);
                        ui.add_enabled(limit, egui::DragValue::new(&mut n).range(1..=1_000_000));
                        cfg.training.max_steps = limit.then_some(n);
                    })
                    .response
                });
                row(ui, "Batch size", "Rows per forward pass. Memory grows with it.", |ui| {
                    ui.add(egui::DragValue::new(&mut cfg.training.batch_size).range(1..=256))
                });
                row(ui, "Gradient accumulation", "Micro-batches per optimizer step: an effective batch of batch size × this, at the memory of one.", |ui| {
                    ui.add(egui::DragValue::new(&mut cfg.training.grad_accumulation).range(1..=256))
                });
                row(ui, "Gradient checkpointing", "Recompute each layer in the backward instead of keeping its activations: several times less memory for about 40 % more time per step. For large models and long rows.", |ui| {
                    ui.checkbox(&mut cfg.training.gradient_checkpointing, "")
                });
                row(ui, "Max sequence length", "Tokens per row; longer samples are truncated (and flagged “too long” in the Datasets tab).", |ui| {
                    ui.add(egui::DragValue::new(&mut cfg.data.max_seq_len).range(8..=32768))
                });
                row(ui, "Packing", "Put several short samples in one row (no attention across them): fewer padding tokens, faster epochs.", |ui| {
                    ui.checkbox(&mut cfg.data.packing, "")
                });
                row(ui, "Train on prompt", "Also learn the user turns. Off: only the assistant's replies count in the loss.", |ui| {
                    ui.checkbox(&mut cfg.data.train_on_prompt, "")
                });
                let mut ratio = match cfg.data.eval_split {
                    EvalSplit::Ratio(r) => r,
                    EvalSplit::Count(_) => 0.05,
                };
                row(ui, "Eval split", "Fraction of the records held out to measure the eval loss.", |ui| {
                    let r = ui.add(egui::DragValue::new(&mut ratio).range(0.0..=0.5).speed(0.005));
                    if r.changed() {
                        cfg.data.eval_split = EvalSplit::Ratio(ratio);
                    }
                    r
                });
                row(ui, "Checkpoint every", "Optimizer steps between checkpoints (0: only at the end). A run resumes from its last checkpoint.", |ui| {
                    ui.add(egui::DragValue::new(&mut cfg.training.save_every).range(0..=100_000))
                });
                row(ui, "Seed", "Seeds the split, the shuffling, the adapter's initialization and dropout: the same seed gives the same run.", |ui| {
                    ui.add(egui::DragValue::new(&mut cfg.training.seed))
                });
                row(ui, "Run name", "Part of the run folder's name.", |ui| {
                    ui.add(egui::TextEdit::singleline(&mut cfg.output.name).desired_width(160.0))
                });
            });
        });
}
