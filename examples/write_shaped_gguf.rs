//! Writes a GGUF file at the real shape of a model people tune, with random weights in
//! llama.cpp's Q4_K_M mix (`testkit::shaped`), for benchmarks of speed and memory, and
//! checks it without loading the weights: prints the file size, the tensors of each type,
//! the time the vocabulary and the whole write took, the mean and standard deviation of
//! the smallest tensor of each quantized type, and what the studio's loader makes of the
//! header (config, tokenizer, a chat prompt's tokens).
//!
//! `cargo run --release --example write_shaped_gguf -- --shape llama-3-8b --out /tmp/llama-3-8b-q4_k_m.gguf [--seed 1]`
//!
//! Shapes: `qwen2.5-0.5b`, `llama-3.2-1b`, `llama-3-8b`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use candle_core::quantized::{gguf_file, GgmlDType};
use candle_core::Device;
use clap::Parser;
use finetune_studio::model::{gguf, weights::GgufSource, ChatMessage, ChatTemplate};
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

    // The smallest tensor of each quantized type, dequantized.
    let mut smallest: BTreeMap<String, (&String, usize)> = BTreeMap::new();
    for (name, info) in &content.tensor_infos {
        if info.ggml_dtype == GgmlDType::F32 {
            continue;
        }
        let n = info.shape.elem_count();
        let e = smallest
            .entry(format!("{:?}", info.ggml_dtype))
            .or_insert((name, n));
        if n < e.1 {
            *e = (name, n);
        }
    }
    for (dtype, (name, _)) in &smallest {
        let v: Vec<f32> = content
            .tensor(&mut file, name, &Device::Cpu)?
            .dequantize(&Device::Cpu)?
            .flatten_all()?
            .to_vec1()?;
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let std = (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n).sqrt();
        println!("{dtype} {name}: mean {mean:+.5}, std {std:.5}");
    }

    // What the studio's loader reads before the weights: every tensor's range checked
    // against the file, the config, the tokenizer and the template.
    let t = Instant::now();
    let src = GgufSource::open(&args.out, &Device::Cpu)?;
    let has_output = src.content.tensor_infos.contains_key("output.weight");
    let config = gguf::config_from_metadata(src.metadata(), has_output, &args.out)?;
    let tok_spec = gguf::tokenizer_spec(src.metadata(), &args.out)?;
    let tokenizer = finetune_studio::text::tokenizer::from_gguf(&tok_spec, &args.out)?;
    let template_src = gguf::chat_template(src.metadata()).context("no chat template")?;
    let template = ChatTemplate::new(
        &template_src,
        "tokenizer.chat_template",
        tokenizer.bos_token.as_deref(),
        tokenizer.eos_token.as_deref(),
    )?;
    let prompt = template.render(
        &[ChatMessage::new("user", "What is the capital of France?")],
        true,
    )?;
    let ids = tokenizer.encode(&prompt, false)?;
    let check_time = t.elapsed();
    let mut want = spec.model_config();
    // The loader recovers Llama 3 rope scaling from the factors after this step.
    want.rope_scaling = None;
    anyhow::ensure!(
        config == want,
        "the loader reads {config:?}, expected {want:?}"
    );
    println!(
        "loader: config as specified ({:?}, head dim {}, tied {}), tokenizer of {} tokens, {} bytes of chat prompt in {} tokens {:?}; checked in {:.2} s",
        config.architecture,
        config.head_dim,
        config.tie_word_embeddings,
        tokenizer.vocab_size(),
        prompt.len(),
        ids.len(),
        ids,
        check_time.as_secs_f64()
    );
    Ok(())
}
