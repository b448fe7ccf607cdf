//! Generation speed, the same measurement as `../shared/anchors/peft/bench_generate.py` and
//! `../shared/anchors/llamacpp/bench_generate.py`: the same chat prompt, 128 greedy tokens
//! (EOS ignored), one warm-up run then the median of `--runs`. For the weights as the file
//! stores them (the default path) and, unless `--no-f32`, for the f32 copy (the exact
//! reference): load time, time to first token, prompt and decode tokens/s, peak RSS.
//! The warm-up run's first token is the first reply's, which builds what the decode steps
//! keep (the interleaved copies); with `--prepare` they are built right after the load, as
//! the studio does while the user types, and that time is printed on its own.
//! The last line is one JSON object.
//!
//! `cargo run --release --example bench_generate -- [--model default] [--new 128] [--runs 3] [--no-f32] [--prepare]`

use std::time::Instant;

use candle_core::Tensor;
use finetune_studio::infer::sampler::argmax;
use finetune_studio::model::{Cache, ChatMessage, Forward, Model};
use finetune_studio::ops::runtime::on_compute_pool;

struct Run {
    ttft_s: f64,
    prompt_tps: f64,
    decode_tps: f64,
}

/// Next-token logits after `ids`, on the compute pool, as `infer::generate` runs a step.
fn step(m: &Model, ids: &[u32], cache: &mut Cache) -> anyhow::Result<Vec<f32>> {
    let logits = on_compute_pool(|| {
        let x = Tensor::new(ids, m.transformer.device())?.unsqueeze(0)?;
        let h = m.transformer.forward(
            &x,
            Forward {
                cache: Some(cache),
                ..Default::default()
            },
        )?;
        m.transformer.last_logits(&h)?.squeeze(0)?.to_vec1::<f32>()
    })?;
    Ok(logits)
}

fn one_run(m: &Model, prompt: &[u32], new: usize) -> anyhow::Result<Run> {
    let mut cache = Cache::new(m.config());
    let t0 = Instant::now();
    let mut next = argmax(&step(m, prompt, &mut cache)?);
    let ttft = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for _ in 0..new - 1 {
        next = argmax(&step(m, &[next], &mut cache)?);
    }
    let decode = t1.elapsed().as_secs_f64();
    Ok(Run {
        ttft_s: ttft,
        prompt_tps: prompt.len() as f64 / ttft,
        decode_tps: (new - 1) as f64 / decode,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Median time to first token, prompt tokens/s and decode tokens/s over `runs` runs after
/// a warm-up, and the warm-up's (the first reply's) time to first token.
fn measure(
    m: &Model,
    prompt: &[u32],
    new: usize,
    runs: usize,
    label: &str,
) -> anyhow::Result<(f64, f64, f64, f64)> {
    let first = one_run(m, prompt, new)?;
    let mut all = Vec::new();
    for _ in 0..runs {
        all.push(one_run(m, prompt, new)?);
    }
    let ttft = median(all.iter().map(|r| r.ttft_s).collect());
    let ptps = median(all.iter().map(|r| r.prompt_tps).collect());
    let dtps = median(all.iter().map(|r| r.decode_tps).collect());
    let rss = finetune_studio::sys::peak_rss_bytes()
        .map(finetune_studio::sys::mib)
        .unwrap_or(0.0);
    println!(
        "{label:>22}: first token {:.1} ms (the first reply's {:.1} ms), prompt {ptps:.0} tokens/s, decode {dtps:.1} tokens/s (peak RSS so far {rss:.0} MiB)",
        ttft * 1000.0,
        first.ttft_s * 1000.0
    );
    Ok((ttft, ptps, dtps, first.ttft_s))
}

fn main() -> anyhow::Result<()> {
    finetune_studio::ops::runtime::tune_runtime();
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str, default: &str| -> String {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| default.to_string())
    };
    let spec = arg("--model", "default");
    let new: usize = arg("--new", "128").parse()?;
    let runs: usize = arg("--runs", "3").parse()?;
    let with_f32 = !args.iter().any(|a| a == "--no-f32");
    let prepare = args.iter().any(|a| a == "--prepare");
    let t_load = Instant::now();
    let m = finetune_studio::hub::load(&spec)?;
    let load_s = t_load.elapsed().as_secs_f64();
    let t_prepare = Instant::now();
    let prepare_s = prepare.then(|| {
        m.prepare_decode(&|| true);
        t_prepare.elapsed().as_secs_f64()
    });
    // The string `../shared/anchors/llamacpp/bench_generate.py` feeds llama.cpp: SmolLM2's
    // template with its default system prompt, used for every model so both programs
    // tokenize the same text (for the default model it is what `encode_chat` renders).
    let text = "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n<|im_start|>user\nWrite a short story about a lighthouse keeper who finds a message in a bottle.<|im_end|>\n<|im_start|>assistant\n";
    let prompt = m.tokenizer.encode(text, false)?;
    if spec == "default" {
        let msgs = [ChatMessage::new(
            "user",
            "Write a short story about a lighthouse keeper who finds a message in a bottle.",
        )];
        anyhow::ensure!(
            m.encode_chat(&msgs, true)? == prompt,
            "the default model's chat template no longer renders the benchmark's prompt"
        );
    }
    let kernels = finetune_studio::ops::quant::isa::active().label();
    println!(
        "model {} ({}, {:.0} MiB of weights) loaded in {load_s:.2} s; kernels {kernels}; prompt {} tokens; {new} new tokens; {runs} runs",
        m.name,
        m.storage_label(),
        m.weight_bytes() as f64 / (1 << 20) as f64,
        prompt.len()
    );
    if let Some(s) = prepare_s {
        println!("prepared for decoding in {s:.2} s after the load");
    }
    let stored = measure(
        &m,
        &prompt,
        new,
        runs,
        &format!("stored ({})", m.storage_label()),
    )?;
    let stored_rss = finetune_studio::sys::peak_rss_bytes()
        .map(finetune_studio::sys::mib)
        .unwrap_or(0.0);
    let f32_run = if with_f32 {
        let f = m.with_f32_weights()?;
        drop(m);
        Some(measure(&f, &prompt, new, runs, "f32")?)
    } else {
        None
    };
    let peak = finetune_studio::sys::peak_rss_bytes()
        .map(finetune_studio::sys::mib)
        .unwrap_or(0.0);
    let json = serde_json::json!({
        "impl": "finetune-studio",
        "model": spec,
        "kernels": kernels,
        "prompt_tokens": prompt.len(),
        "new_tokens": new,
        "load_s": load_s,
        "prepare_s": prepare_s,
        "quantized_first_reply_ttft_s": stored.3,
        "quantized_ttft_s": stored.0,
        "quantized_prompt_tokens_per_s": stored.1,
        "quantized_decode_tokens_per_s": stored.2,
        "quantized_peak_rss_mib": stored_rss,
        "ttft_s": f32_run.map(|r| r.0),
        "prompt_tokens_per_s": f32_run.map(|r| r.1),
        "decode_tokens_per_s": f32_run.map(|r| r.2),
        "peak_rss_mib": peak,
    });
    println!("{json}");
    Ok(())
}
