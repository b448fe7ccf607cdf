//! `finetune-studio export`: an adapter in PEFT layout, a merged Hugging Face folder, or
//! GGUF (with an Ollama Modelfile beside it), each read back and compared once written.

use std::path::PathBuf;

use clap::Args;

use crate::export::job::{self, ExportFormat, ExportRequest};

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
    /// GGUF tensor type: f32, f16, q8_0, q4_k_m, or source (each matrix in the type the
    /// base file stores it).
    #[arg(long, default_value = "f16", value_parser = ["f32", "f16", "q8_0", "q4_k_m", "source"])]
    pub gguf_type: String,
    /// Skip reading the written files back and comparing them with the model in memory.
    #[arg(long)]
    pub no_verify: bool,
    /// The folder the files go to (created if missing).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: ExportArgs) -> anyhow::Result<i32> {
    let format_name = if args.merge {
        "merged"
    } else {
        args.format.as_str()
    };
    let format = ExportFormat::parse(format_name, &args.gguf_type).ok_or_else(|| {
        anyhow::anyhow!("unknown export format {format_name} / {}", args.gguf_type)
    })?;
    let model = super::load_model(&args.model)?;
    let req = ExportRequest {
        adapter: args.adapter,
        format,
        out: args.out,
        verify: !args.no_verify,
    };
    let report = job::export(&model, &req, &mut |line| eprintln!("{line}"))?;
    for (path, size) in &report.files {
        println!("{:>10}  {}", crate::sys::human_bytes(*size), path.display());
    }
    if let Some(v) = &report.verification {
        println!("checked: {}", v.summary());
    }
    Ok(0)
}
