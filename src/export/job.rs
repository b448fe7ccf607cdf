//! One export from start to finish, shared by `finetune-studio export` and the Runs tab's
//! export dialog: merge the adapter (if any) into a copy of the base, write the chosen
//! layout, then read what was written back with the engine and compare it with the model
//! in memory, so that a broken file never passes silently.

use std::path::{Path, PathBuf};

use candle_core::Tensor;

use super::gguf::GgufType;
use crate::model::{ChatMessage, Forward, Model, ModelError};

/// What an export writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// The adapter alone, in PEFT layout.
    Peft,
    /// The adapter merged into the base, as a Hugging Face folder.
    Merged,
    /// The adapter merged into the base, as one GGUF file with an Ollama `Modelfile`.
    Gguf(GgufType),
}

impl ExportFormat {
    /// Every format, in the order the export dialog lists them.
    pub const ALL: [ExportFormat; 7] = [
        ExportFormat::Peft,
        ExportFormat::Merged,
        ExportFormat::Gguf(GgufType::F16),
        ExportFormat::Gguf(GgufType::Q8_0),
        ExportFormat::Gguf(GgufType::Q4KM),
        ExportFormat::Gguf(GgufType::Source),
        ExportFormat::Gguf(GgufType::F32),
    ];

    /// `format` is `peft`, `merged` or `gguf`; `gguf_type` is `f32`, `f16`, `q8_0`,
    /// `q4_k_m` or `source`.
    pub fn parse(format: &str, gguf_type: &str) -> Option<Self> {
        match format {
            "peft" => Some(ExportFormat::Peft),
            "merged" => Some(ExportFormat::Merged),
            "gguf" => GgufType::from_name(gguf_type).map(ExportFormat::Gguf),
            _ => None,
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            ExportFormat::Peft => "PEFT adapter",
            ExportFormat::Merged => "Merged model (Hugging Face folder)",
            ExportFormat::Gguf(GgufType::F16) => "GGUF f16 + Ollama Modelfile",
            ExportFormat::Gguf(GgufType::Q8_0) => "GGUF q8_0 + Ollama Modelfile",
            ExportFormat::Gguf(GgufType::F32) => "GGUF f32 + Ollama Modelfile",
            ExportFormat::Gguf(GgufType::Q4KM) => "GGUF q4_k_m + Ollama Modelfile",
            ExportFormat::Gguf(GgufType::Source) => {
                "GGUF in the base's own types + Ollama Modelfile"
            }
        }
    }

    /// What the written files are good for, in one sentence.
    pub fn description(self) -> &'static str {
        match self {
            ExportFormat::Peft => {
                "adapter_config.json + adapter_model.safetensors; peft.PeftModel.from_pretrained loads it onto the base"
            }
            ExportFormat::Merged => {
                "config.json, model.safetensors and the tokenizer; transformers' AutoModelForCausalLM loads it"
            }
            ExportFormat::Gguf(GgufType::F16) => {
                "half-precision weights for llama.cpp and Ollama (`ollama create NAME -f Modelfile`)"
            }
            ExportFormat::Gguf(GgufType::Q8_0) => {
                "8-bit weights, about half the size of f16, for llama.cpp and Ollama"
            }
            ExportFormat::Gguf(GgufType::F32) => "full-precision weights for llama.cpp and Ollama",
            ExportFormat::Gguf(GgufType::Q4KM) => {
                "4-bit K-quants (Q6_K where llama.cpp's Q4_K_M puts them), about a quarter of f16, for llama.cpp and Ollama"
            }
            ExportFormat::Gguf(GgufType::Source) => {
                "each matrix in the type the base file stores it (a Q4_K_M base stays Q4_K_M), the merged layers re-quantized"
            }
        }
    }

    /// The folder name an export of this format goes to by default.
    pub fn folder_name(self) -> &'static str {
        match self {
            ExportFormat::Peft => "peft",
            ExportFormat::Merged => "merged",
            ExportFormat::Gguf(GgufType::F16) => "gguf-f16",
            ExportFormat::Gguf(GgufType::Q8_0) => "gguf-q8_0",
            ExportFormat::Gguf(GgufType::F32) => "gguf-f32",
            ExportFormat::Gguf(GgufType::Q4KM) => "gguf-q4_k_m",
            ExportFormat::Gguf(GgufType::Source) => "gguf-source",
        }
    }

    /// What the read-back check accepts. f32 files hold the same numbers as the model in
    /// memory, so their logits must agree to rounding. f16 and q8_0 round every weight,
    /// which moves logits by hundredths (f16) to about one unit (q8_0) on the default
    /// model, so those are judged by the mean KL divergence of the next-token
    /// distributions instead, the figure llama.cpp's own quantization checks report.
    pub fn criterion(self) -> Criterion {
        match self {
            ExportFormat::Peft | ExportFormat::Merged | ExportFormat::Gguf(GgufType::F32) => {
                Criterion::MaxAbsDiff(1e-3)
            }
            ExportFormat::Gguf(GgufType::F16) => Criterion::MeanKl(1e-3),
            ExportFormat::Gguf(GgufType::Q8_0) => Criterion::MeanKl(1e-2),
            // 4-bit rounding moves the distribution further: llama.cpp reports a mean KL
            // of about 0.03–0.1 for Q4_K_M against f16 on small models.
            ExportFormat::Gguf(GgufType::Q4KM) => Criterion::MeanKl(0.2),
            // Unmerged matrices are re-quantized to their own type (close to a no-op);
            // merged ones as far as their type rounds.
            ExportFormat::Gguf(GgufType::Source) => Criterion::MeanKl(0.2),
        }
    }
}

/// What the read-back check requires.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Criterion {
    /// Every value within this of the model in memory.
    MaxAbsDiff(f32),
    /// The mean KL divergence (nats) from the model in memory's next-token distribution
    /// to the written model's, over the probe's positions, at most this.
    MeanKl(f64),
}

/// One export to run.
#[derive(Debug, Clone)]
pub struct ExportRequest {
    /// A PEFT adapter folder (a run's `adapter/` or `checkpoints/step-N/`). Without it the
    /// base model itself is written (not allowed for [`ExportFormat::Peft`]).
    pub adapter: Option<PathBuf>,
    pub format: ExportFormat,
    /// The folder the files go to (created if missing).
    pub out: PathBuf,
    /// Read the written files back and compare them with the model in memory.
    pub verify: bool,
}

/// How the written files compared with the model in memory.
#[derive(Debug, Clone, PartialEq)]
pub struct Verification {
    /// What was compared, in words.
    pub compared: String,
    pub max_abs_diff: f32,
    /// Mean KL divergence of the next-token distributions (`None` for a tensor-by-tensor
    /// comparison).
    pub mean_kl: Option<f64>,
    /// Positions of the probe prompt whose most likely next token is the same in both
    /// (`None` for a tensor-by-tensor comparison).
    pub same_top1: Option<(usize, usize)>,
    pub criterion: Criterion,
}

impl Verification {
    pub fn passed(&self) -> bool {
        match self.criterion {
            Criterion::MaxAbsDiff(tol) => self.max_abs_diff <= tol,
            Criterion::MeanKl(tol) => self.mean_kl.is_some_and(|kl| kl <= tol),
        }
    }

    /// One line for a log or the dialog.
    pub fn summary(&self) -> String {
        let kl = self
            .mean_kl
            .map(|kl| format!(", mean KL {kl:.1e}"))
            .unwrap_or_default();
        let top1 = self
            .same_top1
            .map(|(same, n)| format!(", same next token at {same}/{n} positions"))
            .unwrap_or_default();
        let accepted = match self.criterion {
            Criterion::MaxAbsDiff(tol) => format!("max |Δ| ≤ {tol:.0e}"),
            Criterion::MeanKl(tol) => format!("mean KL ≤ {tol:.0e}"),
        };
        format!(
            "{}: max |Δ| {:.2e}{kl}{top1} (accepted: {accepted})",
            self.compared, self.max_abs_diff
        )
    }
}

/// What an export wrote.
#[derive(Debug, Clone)]
pub struct ExportReport {
    pub out: PathBuf,
    /// The files written, with their sizes in bytes.
    pub files: Vec<(PathBuf, u64)>,
    pub verification: Option<Verification>,
}

/// The prompt whose logits the check compares.
const PROBE: &str = "Write one sentence about the sea.";

/// Runs `req` on a copy of `base` (which is left as it is); `progress` gets a line per stage.
pub fn export(
    base: &Model,
    req: &ExportRequest,
    progress: &mut dyn FnMut(&str),
) -> Result<ExportReport, ModelError> {
    let device = base.transformer.device().clone();
    // The template the adapter's run trained with (its tokenizer_config.json) goes into
    // every format; without one, the model's own.
    let templated = crate::adapter::templated_model(
        base,
        req.adapter.as_deref(),
        &crate::text::TemplateChoice::Own,
        None,
    )?;
    if let Some(t) = &templated {
        progress(&format!(
            "chat template: {}",
            t.model.template.source_name()
        ));
    }
    let base = templated.as_ref().map_or(base, |t| &t.model);
    let adapter = match &req.adapter {
        Some(dir) => {
            progress(&format!("reading the adapter in {}", dir.display()));
            Some(crate::adapter::read_adapter(dir, base.config(), &device)?)
        }
        None => None,
    };
    if req.format == ExportFormat::Peft && adapter.is_none() {
        return Err(no_adapter());
    }
    std::fs::create_dir_all(&req.out).map_err(|e| ModelError::io(&req.out, e))?;
    let verification = match (req.format, &adapter) {
        (ExportFormat::Peft, None) => return Err(no_adapter()),
        (ExportFormat::Peft, Some(a)) => {
            let mut cfg = a.config.clone();
            if cfg.base_model_name_or_path.is_none() {
                cfg.base_model_name_or_path = base.hub_id.clone();
            }
            let pairs = a
                .lora
                .pairs
                .iter()
                .map(|(k, p)| (*k, (p.a.clone(), p.b.clone())))
                .collect();
            progress(
                "writing adapter_model.safetensors, adapter_config.json and tokenizer_config.json",
            );
            crate::adapter::write_adapter(&req.out, &cfg, &pairs)?;
            crate::adapter::write_template(&req.out, base)?;
            if req.verify {
                progress("reading the adapter back");
                let back = crate::adapter::read_adapter(&req.out, base.config(), &device)?;
                Some(compare_adapters(
                    &a.lora,
                    &back.lora,
                    req.format.criterion(),
                )?)
            } else {
                None
            }
        }
        (ExportFormat::Merged | ExportFormat::Gguf(_), adapter) => {
            let mut merged = base.clone();
            if let Some(a) = &adapter {
                progress(&format!(
                    "merging {} adapter matrices into the base weights",
                    a.lora.pairs.len() * 2
                ));
                super::merge::merge_into(&mut merged, &a.lora)?;
            }
            let source_types = super::gguf::stored_types(base);
            let written = write_merged(&merged, &source_types, req, progress)?;
            if req.verify {
                progress("loading the written model back to compare it");
                let back = match req.format {
                    ExportFormat::Gguf(_) => crate::model::load_gguf(&written, &device)?,
                    _ => crate::model::load_hf_folder(&written, &device)?,
                };
                progress("comparing logits on a probe prompt");
                Some(compare_models(&merged, &back, req.format.criterion())?)
            } else {
                None
            }
        }
    };
    let report = ExportReport {
        out: req.out.clone(),
        files: list_files(&req.out),
        verification,
    };
    if let Some(v) = report.verification.as_ref().filter(|v| !v.passed()) {
        return Err(ModelError::Fetch(format!(
            "the files in {} were written, but reading them back does not give the same model ({}); do not use them",
            req.out.display(),
            v.summary()
        )));
    }
    Ok(report)
}

fn no_adapter() -> ModelError {
    ModelError::Fetch(
        "a PEFT export needs an adapter: pick a run's adapter or one of its checkpoints".into(),
    )
}

/// Writes a merged model in the requested layout; returns the folder or the `.gguf` file.
fn write_merged(
    merged: &Model,
    source_types: &std::collections::HashMap<String, candle_core::quantized::GgmlDType>,
    req: &ExportRequest,
    progress: &mut dyn FnMut(&str),
) -> Result<PathBuf, ModelError> {
    match req.format {
        ExportFormat::Gguf(ty) => {
            let path = req.out.join("model.gguf");
            progress(&format!("writing {}", path.display()));
            super::gguf::write_gguf_with(merged, &path, ty, source_types)?;
            progress("writing the Ollama Modelfile");
            super::ollama::write_modelfile(merged, &req.out, "model.gguf")?;
            Ok(path)
        }
        _ => {
            progress(&format!(
                "writing config.json, model.safetensors and the tokenizer to {}",
                req.out.display()
            ));
            super::merge::write_hf_folder(merged, &req.out)?;
            Ok(req.out.clone())
        }
    }
}

/// Compares two adapters matrix by matrix.
fn compare_adapters(
    a: &crate::model::lora::LoraSet,
    b: &crate::model::lora::LoraSet,
    criterion: Criterion,
) -> Result<Verification, ModelError> {
    if a.pairs.len() != b.pairs.len() || a.pairs.keys().ne(b.pairs.keys()) {
        return Err(ModelError::Fetch(format!(
            "the written adapter has {} layers, the source {}",
            b.pairs.len(),
            a.pairs.len()
        )));
    }
    let mut max = 0f32;
    for (pa, pb) in a.pairs.values().zip(b.pairs.values()) {
        max = max.max(max_abs_diff(&pa.a, &pb.a)?);
        max = max.max(max_abs_diff(&pa.b, &pb.b)?);
    }
    Ok(Verification {
        compared: format!("{} LoRA matrices read back", a.pairs.len() * 2),
        max_abs_diff: max,
        mean_kl: None,
        same_top1: None,
        criterion,
    })
}

/// Compares the logits of two models on [`PROBE`], and checks that they tokenize it alike.
pub fn compare_models(
    expected: &Model,
    got: &Model,
    criterion: Criterion,
) -> Result<Verification, ModelError> {
    let messages = [ChatMessage::new("user", PROBE)];
    let ids = expected.encode_chat(&messages, true)?;
    let ids_back = got.encode_chat(&messages, true)?;
    if ids != ids_back {
        return Err(ModelError::Fetch(format!(
            "the written model tokenizes the probe prompt differently ({} tokens instead of {}): its tokenizer or chat template was not written faithfully",
            ids_back.len(),
            ids.len()
        )));
    }
    let a = probe_logits(expected, &ids)?;
    let b = probe_logits(got, &ids)?;
    let top_a = a.argmax(1)?.to_vec1::<u32>()?;
    let top_b = b.argmax(1)?.to_vec1::<u32>()?;
    let same = top_a.iter().zip(&top_b).filter(|(x, y)| x == y).count();
    Ok(Verification {
        compared: format!("logits on a {}-token prompt", ids.len()),
        max_abs_diff: max_abs_diff(&a, &b)?,
        mean_kl: Some(mean_kl(&a, &b)?),
        same_top1: Some((same, ids.len())),
        criterion,
    })
}

/// `[tokens, vocab]` logits of `ids`.
fn probe_logits(model: &Model, ids: &[u32]) -> Result<Tensor, ModelError> {
    let x = Tensor::new(ids, model.transformer.device())?.unsqueeze(0)?;
    let h = model.transformer.forward(&x, Forward::default())?;
    Ok(model.transformer.logits(&h.squeeze(0)?)?)
}

/// Mean over rows of KL(softmax(a) ‖ softmax(b)), in nats.
fn mean_kl(a: &Tensor, b: &Tensor) -> Result<f64, ModelError> {
    let la = candle_nn::ops::log_softmax(a, 1)?;
    let lb = candle_nn::ops::log_softmax(b, 1)?;
    let kl = (la.exp()? * (&la - &lb)?)?.sum(1)?;
    Ok(kl.mean_all()?.to_scalar::<f32>()? as f64)
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f32, ModelError> {
    if a.dims() != b.dims() {
        return Err(ModelError::Fetch(format!(
            "shapes differ after reading back: {:?} and {:?}",
            a.dims(),
            b.dims()
        )));
    }
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?)
}

/// The files directly in `dir`, with their sizes, sorted by name.
fn list_files(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut files: Vec<(PathBuf, u64)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.is_file().then(|| (e.path(), meta.len()))
        })
        .collect();
    files.sort();
    files
}
