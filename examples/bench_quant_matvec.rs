//! Throughput of the stored-weight products alone, per storage type: one input row (a
//! decode step) and a prompt's worth of rows (prefill), on 1 and 2 threads, with the
//! weights in cache (one matrix, again and again) and from memory (a set of copies larger
//! than the last-level cache, in turn). Weights are a Llama-3.2-1B feed-forward shape,
//! `[8192, 2048]` unless `--out` says; the figures are bytes of weight per second (decode) and GFLOP/s
//! (prefill), so they compare with the machine's memory bandwidth and matmul rate.
//!
//! `cargo run --release --example bench_quant_matvec -- [--types q4_k,q6_k] [--rows 92] [--out 8192]`

use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};
use clap::Parser;
use finetune_studio::ops::frozen_weight::FrozenWeight;
use finetune_studio::ops::quant::{QuantMatrix, StoredType};

#[derive(Parser)]
struct Args {
    /// Storage types, by GGUF name.
    #[arg(long, default_value = "q4_k,q6_k,q4_1,q8_0")]
    types: String,
    /// Input rows of the prefill product.
    #[arg(long, default_value_t = 92)]
    rows: usize,
    /// Output rows of the matrix (8192: the feed-forward shape; 128 fits a core's L2, for
    /// the kernels' own rate).
    #[arg(long, default_value_t = 8192)]
    out: usize,
    /// Bytes of weight copies for the from-memory figure.
    #[arg(long, default_value_t = 1 << 30)]
    memory_bytes: usize,
}

const IN: usize = 2048;

fn main() -> Result<()> {
    let args = Args::parse();
    let out = args.out;
    println!("cpu: {}", finetune_studio::sys::cpu_model());
    for name in args.types.split(',') {
        let ty = StoredType::ALL
            .into_iter()
            .find(|t| t.name().eq_ignore_ascii_case(name.trim()))
            .with_context(|| format!("unknown type {name}"))?;
        let w: Vec<f32> = (0..out * IN)
            .map(|i| (i as f32 * 0.731).sin() * 0.02)
            .collect();
        let w = Tensor::from_vec(w, (out, IN), &Device::Cpu)?;
        let bytes = QTensor::quantize(&w, ty.ggml())?.data()?.to_vec();
        let copies = (args.memory_bytes / bytes.len()).max(2);
        let set: Vec<QuantMatrix> = (0..copies)
            .map(|_| QuantMatrix::owned(bytes.clone(), ty, out, IN))
            .collect::<std::result::Result<_, _>>()
            .map_err(anyhow::Error::msg)?;
        let x1: Vec<f32> = (0..IN).map(|i| (i as f32 * 0.37).cos()).collect();
        let xp: Vec<f32> = (0..IN * args.rows)
            .map(|i| (i as f32 * 0.37).cos())
            .collect();
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()?;
            pool.install(|| -> Result<()> {
                let mut y1 = vec![0f32; out];
                let mut yp = vec![0f32; out * args.rows];
                let gbs = |secs: f64, n: usize| (bytes.len() * n) as f64 / secs / 1e9;
                // In cache.
                set[0].matmul(&x1, 1, &mut y1).map_err(anyhow::Error::msg)?;
                let t = Instant::now();
                for _ in 0..50 {
                    set[0].matmul(&x1, 1, &mut y1).map_err(anyhow::Error::msg)?;
                }
                let cached = gbs(t.elapsed().as_secs_f64(), 50);
                // From memory, after one untimed pass: a matrix's first product builds
                // what its kernels keep (the interleaved copy of a Q4_K matrix on AVX2).
                for m in &set {
                    m.matmul(&x1, 1, &mut y1).map_err(anyhow::Error::msg)?;
                }
                let t = Instant::now();
                for m in &set {
                    m.matmul(&x1, 1, &mut y1).map_err(anyhow::Error::msg)?;
                }
                let memory = gbs(t.elapsed().as_secs_f64(), set.len());
                // Prefill.
                let t = Instant::now();
                for m in set.iter().take(4) {
                    m.matmul(&xp, args.rows, &mut yp)
                        .map_err(anyhow::Error::msg)?;
                }
                let flops = 2.0 * (out * IN * args.rows * 4) as f64;
                let prefill = flops / t.elapsed().as_secs_f64() / 1e9;
                // Prefill through dequantized panels and f32 gemm, as training multiplies.
                let panels: Vec<FrozenWeight> = set
                    .iter()
                    .take(4)
                    .map(|m| {
                        QuantMatrix::owned(bytes.clone(), m.stored_type(), out, IN)
                            .map(|q| FrozenWeight::Stored(std::sync::Arc::new(q)))
                    })
                    .collect::<std::result::Result<_, _>>()
                    .map_err(anyhow::Error::msg)?;
                let t = Instant::now();
                for w in &panels {
                    w.x_wt_into(&mut yp, false, args.rows, &xp)?;
                }
                let panel_rate = flops / t.elapsed().as_secs_f64() / 1e9;
                // Dequantizing alone, into a buffer already faulted in, 256 rows a call.
                let mut buf = vec![0f32; 256 * IN];
                let t = Instant::now();
                for m in set.iter().take(4) {
                    for first in (0..out).step_by(256) {
                        let n = 256.min(out - first);
                        m.dequantize_rows(first, &mut buf[..n * IN]);
                    }
                }
                std::hint::black_box(&buf);
                let dequant = (out * IN * 4) as f64 / t.elapsed().as_secs_f64() / 1e9;
                println!(
                    "{:>5} {threads} thread(s): decode {cached:5.1} GB/s in cache, {memory:5.1} GB/s from memory; prefill of {} rows {prefill:5.1} GFLOP/s, through f32 panels {panel_rate:5.1}; dequantizing {dequant:5.2} Gvalues/s",
                    ty.name(),
                    args.rows
                );
                Ok(())
            })?;
        }
    }
    Ok(())
}
