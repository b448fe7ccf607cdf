//! Writes a GGUF file at the real shape of a model people tune, with random weights in
//! llama.cpp's Q4_K_M mix (`testkit::shaped`), for benchmarks of speed and memory, and
//! reads its header back: prints the file size, the tensors of each type, and the time the
//! vocabulary and the whole write took.
//!
//! `cargo run --release --example write_shaped_gguf -- --shape llama-3-8b --out /tmp/llama-3-8b-q4_k_m.gguf [--seed 1]`
//!
//! Shapes: `qwen2.5-0.5b`, `llama-3.2-1b`, `llama-3-8b`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::quantized::gguf_file;
use clap::Parser;
use finetune_studio::testkit::shaped::{write_shaped_gguf, KnownShape};

#[derive(Parser)]
struct Args {
    /// qwen2.5-0.5b, llama-3.2-1b or llama-3-8b.
    #[arg(long)]
    shape: String,
    /// The file to write.
    #[arg(long)]
    out: PathBuf,
    /// Seed of the random weights.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let shape = KnownShape::from_name(&args.shape).with_context(|| {
        let names: Vec<&str> = KnownShape::ALL.iter().map(|s| s.name()).collect();
        format!(
            "unknown shape `{}` (known: {})",
            args.shape,
            names.join(", ")
        )
    })?;
    let spec = shape.spec();
    if let Some(dir) = args.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    }

    let t = Instant::now();
    let vocab = spec.tokenizer_spec();
    let vocab_time = t.elapsed();
    drop(vocab);

    let t = Instant::now();
    write_shaped_gguf(&args.out, &spec, args.seed)?;
    let write_time = t.elapsed();

    let mut file =
        std::fs::File::open(&args.out).with_context(|| format!("{}", args.out.display()))?;
    let size = file.metadata()?.len();
    let content = gguf_file::Content::read(&mut file)
        .with_context(|| format!("{}: header", args.out.display()))?;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for info in content.tensor_infos.values() {
        *counts.entry(format!("{:?}", info.ggml_dtype)).or_default() += 1;
    }
    let counts: Vec<String> = counts.iter().map(|(t, n)| format!("{t} {n}")).collect();
    println!(
        "{}: {} ({} parameters, {} layers, vocabulary {})",
        args.out.display(),
        spec.name,
        spec.parameter_count(),
        spec.num_layers,
        spec.vocab_size
    );
    println!(
        "size {size} bytes ({:.2} GB, {:.2} bits per parameter)",
        size as f64 / 1e9,
        size as f64 * 8.0 / spec.parameter_count() as f64
    );
    println!(
        "{} tensors: {}",
        content.tensor_infos.len(),
        counts.join(", ")
    );
    println!(
        "vocabulary generated in {:.2} s; file written in {:.1} s ({:.0} MB/s)",
        vocab_time.as_secs_f64(),
        write_time.as_secs_f64(),
        size as f64 / 1e6 / write_time.as_secs_f64()
    );
    Ok(())
}
