//! Speed of segment attention alone, forward and backward, at the default model's shapes
//! (3 KV heads of 3 query heads each, head size 64) times its 30 layers: the part of a
//! training step that runs on small tiles rather than on the big weight products.
//!
//! `cargo run --release --example bench_attention -- [--rows 4] [--seq 256] [--segment 256]
//! [--runs 5]`: `--rows` rows of `--seq` tokens, cut into samples of `--segment` tokens
//! (the last one shorter). Prints the median time of the 30 layers and the achieved
//! GFLOP/s of the products (causal half only), then one JSON line.

use std::time::Instant;

use candle_core::{Device, Tensor, Var};
use finetune_studio::ops::segment_attention::{attention, spans_from_segments};

const LAYERS: usize = 30;
const KV_HEADS: usize = 3;
const REPS: usize = 3;
const HEAD: usize = 64;

fn arg(name: &str, default: usize) -> anyhow::Result<usize> {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == name) {
        Some(i) => Ok(args
            .get(i + 1)
            .ok_or_else(|| anyhow::anyhow!("{name} needs a value"))?
            .parse()?),
        None => Ok(default),
    }
}

fn random(shape: &[usize], seed: u64) -> anyhow::Result<Tensor> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1f32..1.0)).collect();
    Ok(Tensor::from_vec(v, shape, &Device::Cpu)?)
}

fn main() -> anyhow::Result<()> {
    // The allocator and thread settings of the studio and the other benchmarks.
    finetune_studio::ops::runtime::tune_runtime();
    let (rows, seq, segment, runs) = (
        arg("--rows", 4)?,
        arg("--seq", 256)?,
        arg("--segment", 256)?.max(1),
        arg("--runs", 5)?.max(1),
    );
    let ids: Vec<Vec<u32>> = (0..rows)
        .map(|_| (0..seq).map(|i| (i / segment) as u32).collect())
        .collect();
    let spans = spans_from_segments(&Tensor::new(ids, &Device::Cpu)?)?;
    // The projections' layout: each token's heads side by side.
    let q = Var::from_tensor(&random(&[rows, seq, KV_HEADS * REPS * HEAD], 1)?)?;
    let k = Var::from_tensor(&random(&[rows, seq, KV_HEADS * HEAD], 2)?)?;
    let v = Var::from_tensor(&random(&[rows, seq, KV_HEADS * HEAD], 3)?)?;
    let probe = random(&[rows, seq, KV_HEADS * REPS * HEAD], 4)?;
    let heads = (KV_HEADS * REPS, KV_HEADS);
    let scale = 1.0 / (HEAD as f64).sqrt();

    // Multiply-adds of the causal products: q kᵀ and p v forward; the backward recomputes
    // q kᵀ and runs four more (dV, dP, dQ, dK).
    let causal: usize = spans
        .iter()
        .flatten()
        .map(|&(_, len)| len * (len + 1) / 2)
        .sum();
    let flop_per_layer = 2.0 * (KV_HEADS * REPS * causal * HEAD) as f64 * 7.0;

    let mut times = Vec::new();
    for run in 0..=runs {
        let t0 = Instant::now();
        // As in a training step, every layer's output stays alive until one backward pass.
        let mut total = Tensor::zeros((), candle_core::DType::F32, &Device::Cpu)?;
        for _ in 0..LAYERS {
            let out = attention(
                q.as_tensor(),
                k.as_tensor(),
                v.as_tensor(),
                &spans,
                heads,
                scale,
                None,
            )?;
            total = (total + (out * &probe)?.sum_all()?)?;
        }
        std::hint::black_box(total.backward()?);
        let dt = t0.elapsed().as_secs_f64();
        if run > 0 {
            times.push(dt);
        }
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let gflops = flop_per_layer * LAYERS as f64 / median / 1e9;
    println!("{LAYERS} layers of attention, fwd + bwd: {median:.3} s (median of {runs}), {gflops:.1} GFLOP/s");
    println!(
        "{}",
        serde_json::json!({"rows": rows, "seq": seq, "segment": segment, "seconds": median, "gflops": gflops})
    );
    Ok(())
}
