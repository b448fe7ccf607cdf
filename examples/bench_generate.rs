//! Generation speed of the default model, the same measurement as
//! `../shared/anchors/peft/bench_generate.py`: the same chat prompt, 128 greedy tokens
//! (EOS ignored), one warm-up run then the median of `--runs`. Prints prompt tokens/s,
//! decode tokens/s and time to first token for f32 weights and for the Q8_0 decode path,
//! then one JSON line (f32 figures at the top level, as the issue asks).
//!
//! `cargo run --release --example bench_generate -- [--model default] [--new 128] [--runs 3]`

use std::time::Instant;

use candle_core::Tensor;
use finetune_studio::infer::sampler::argmax;
use finetune_studio::model::{Cache, ChatMessage, Forward, Model};

struct Run {
    ttft_s: f64,
    prompt_tps: f64,
    decode_tps: f64,
}

fn one_run(m: &Model, prompt: &[u32], new: usize, quantized: bool) -> anyhow::Result<Run> {
    let dev = m.transformer.device();
    let mut cache = Cache::new(m.config());
    let t0 = Instant::now();
    let input = Tensor::new(prompt, dev)?.unsqueeze(0)?;
    let h = m.transformer.forward(
        &input,
        Forward {
            cache: Some(&mut cache),
            ..Default::default()
        },
    )?;
    let mut next = argmax(
        &m.transformer
            .last_logits(&h, false)?
            .squeeze(0)?
            .to_vec1::<f32>()?,
    );
    let ttft = t0.elapsed().as_secs_f64();
    let t1 = Instant::now();
    for _ in 0..new - 1 {
        let x = Tensor::new(&[next], dev)?.unsqueeze(0)?;
        let h = m.transformer.forward(
            &x,
            Forward {
                cache: Some(&mut cache),
                quantized,
                ..Default::default()
            },
        )?;
        next = argmax(
            &m.transformer
                .last_logits(&h, quantized)?
                .squeeze(0)?
                .to_vec1::<f32>()?,
        );
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
    let t_load = Instant::now();
    let mut m = finetune_studio::hub::load(&spec)?;
    let load_s = t_load.elapsed().as_secs_f64();
    let msgs = [ChatMessage::new(
        "user",
        "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    )];
    let prompt = m.encode_chat(&msgs, true)?;
    println!(
        "model {} loaded in {load_s:.2} s; prompt {} tokens; {new} new tokens; {runs} runs",
        m.name,
        prompt.len()
    );

    let mut results = Vec::new();
    for quantized in [false, true] {
        if quantized {
            let t = Instant::now();
            m.transformer.quantize_for_decode()?;
            println!("Q8_0 copies made in {:.2} s", t.elapsed().as_secs_f64());
        }
        let label = if quantized { "q8_0 decode" } else { "f32" };
        let mut all = Vec::new();
        for i in 0..=runs {
            let r = one_run(&m, &prompt, new, quantized)?;
            if i > 0 {
                all.push(r);
            }
        }
        let ttft = median(all.iter().map(|r| r.ttft_s).collect());
        let ttft_min = all.iter().map(|r| r.ttft_s).fold(f64::INFINITY, f64::min);
        let ptps = median(all.iter().map(|r| r.prompt_tps).collect());
        let dtps = median(all.iter().map(|r| r.decode_tps).collect());
        println!(
            "{label:>12}: time to first token {:.1} ms (best {:.1}), prompt {ptps:.0} tokens/s, decode {dtps:.1} tokens/s",
            ttft * 1000.0,
            ttft_min * 1000.0
        );
        results.push((ttft, ptps, dtps, ttft_min));
    }
    let peak = finetune_studio::sys::peak_rss_bytes()
        .map(finetune_studio::sys::mib)
        .unwrap_or(0.0);
    println!("peak RSS {peak:.0} MiB");
    let json = serde_json::json!({
        "impl": "finetune-studio",
        "prompt_tokens": prompt.len(),
        "new_tokens": new,
        "ttft_s": results[0].0,
        "ttft_min_s": results[0].3,
        "prompt_tokens_per_s": results[0].1,
        "decode_tokens_per_s": results[0].2,
        "q8_ttft_s": results[1].0,
        "q8_decode_tokens_per_s": results[1].2,
        "peak_rss_mib": peak,
    });
    println!("{json}");
    Ok(())
}
