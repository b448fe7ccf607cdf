//! The studio's side of `../shared/anchors/peft/check_adapter.py`: loads the default model
//! and a PEFT-layout adapter and prints the same JSON (top-10 next-token ids and logits of
//! base and tuned) for a prompt tokenized as-is, so the two can be compared number by number.
//!
//! `cargo run --release --example check_adapter -- ADAPTER_DIR "PROMPT TEXT" [--model default]`

use candle_core::Tensor;
use finetune_studio::model::{lora::LoraSet, Forward, Model};

fn last_logits(m: &Model, ids: &[u32], lora: Option<&LoraSet>) -> anyhow::Result<Vec<f32>> {
    let x = Tensor::new(ids, m.transformer.device())?.unsqueeze(0)?;
    let h = m.transformer.forward(
        &x,
        Forward {
            lora,
            ..Default::default()
        },
    )?;
    Ok(m.transformer.last_logits(&h)?.squeeze(0)?.to_vec1()?)
}

fn top10(v: &[f32]) -> (Vec<usize>, Vec<f32>) {
    let mut idx: Vec<usize> = (0..v.len()).collect();
    idx.sort_by(|&a, &b| v[b].total_cmp(&v[a]));
    idx.truncate(10);
    let vals = idx.iter().map(|&i| v[i]).collect();
    (idx, vals)
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(prompt)) = (args.get(1), args.get(2)) else {
        anyhow::bail!("usage: check_adapter ADAPTER_DIR PROMPT [--model M] [--f32]");
    };
    let spec = args
        .iter()
        .position(|a| a == "--model")
        .and_then(|i| args.get(i + 1))
        .cloned()
        .unwrap_or_else(|| "default".into());
    let m = finetune_studio::hub::load(&spec)?;
    // `--f32`: the dequantized copy, the path that matches transformers' f32 arithmetic.
    let m = if args.iter().any(|a| a == "--f32") {
        m.with_f32_weights()?
    } else {
        m
    };
    let adapter = finetune_studio::adapter::read_adapter(
        std::path::Path::new(dir),
        m.config(),
        m.transformer.device(),
    )?;
    let ids = m.tokenizer.encode(prompt, false)?;
    let base = last_logits(&m, &ids, None)?;
    let tuned = last_logits(&m, &ids, Some(&adapter.lora))?;
    let (bi, bv) = top10(&base);
    let (ti, tv) = top10(&tuned);
    let diff = base
        .iter()
        .zip(&tuned)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    println!(
        "{}",
        serde_json::json!({"prompt_ids": ids, "base_top10_ids": bi, "base_top10_logits": bv,
            "tuned_top10_ids": ti, "tuned_top10_logits": tv, "max_abs_diff_base_vs_tuned": diff})
    );
    Ok(())
}
