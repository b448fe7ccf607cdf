//! `finetune-studio export`: an adapter in PEFT layout, a merged Hugging Face folder, or
//! GGUF (with an Ollama Modelfile beside it).

use std::path::PathBuf;

use clap::Args;

use crate::export::{self, gguf::GgufType};

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[arg(long, default_value = "default")]
    pub model: String,
    /// A PEFT adapter folder (a run's adapter/ or checkpoints/step-N/).
    #[arg(long)]
    pub adapter: Option<PathBuf>,
    /// peft, merged or gguf.
    #[arg(long, default_value = "merged", value_parser = ["peft", "merged", "gguf"])]
    pub format: String,
    /// Same as --format merged.
    #[arg(long)]
    pub merge: bool,
    /// GGUF tensor type: f32, f16 or q8_0.
    #[arg(long, default_value = "f16", value_parser = ["f32", "f16", "q8_0"])]
    pub gguf_type: String,
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: ExportArgs) -> anyhow::Result<i32> {
    let format = if args.merge {
        "merged"
    } else {
        args.format.as_str()
    };
    let mut model = super::load_model(&args.model)?;
    let adapter = match &args.adapter {
        Some(dir) => Some(export::peft::read_adapter(
            dir,
            model.config(),
            model.transformer.device(),
        )?),
        None => None,
    };
    match format {
        "peft" => {
            let a = adapter.ok_or_else(|| anyhow::anyhow!("--format peft needs --adapter"))?;
            let pairs = a
                .lora
                .pairs
                .iter()
                .map(|(k, p)| (*k, (p.a.clone(), p.b.clone())))
                .collect();
            let mut cfg = a.config.clone();
            if cfg.base_model_name_or_path.is_none() {
                cfg.base_model_name_or_path = model.hub_id.clone();
            }
            export::peft::write_adapter(&args.out, &cfg, &pairs)?;
        }
        "merged" => {
            if let Some(a) = &adapter {
                export::merge::merge_into(&mut model, &a.lora)?;
            }
            export::merge::write_hf_folder(&model, &args.out)?;
        }
        _ => {
            if let Some(a) = &adapter {
                export::merge::merge_into(&mut model, &a.lora)?;
            }
            let ty = match args.gguf_type.as_str() {
                "f32" => GgufType::F32,
                "q8_0" => GgufType::Q8_0,
                _ => GgufType::F16,
            };
            std::fs::create_dir_all(&args.out)?;
            let path = args.out.join("model.gguf");
            export::gguf::write_gguf(&model, &path, ty)?;
            export::ollama::write_modelfile(&model, &args.out, "model.gguf")?;
        }
    }
    println!("{}", args.out.display());
    Ok(0)
}
