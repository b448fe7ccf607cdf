//! The adapter's weight-gradient products of a training step, `[16, tokens] · [tokens, n]`
//! with both `rhs` and `dst` row-major, kernel against kernel on every thread: the
//! outer-product kernel (`ops::outer_gemm`), the packed kernel on AVX-512
//! (`ops::packed_gemm`) and the gemm crate. In the step `rhs` (a layer's input or output
//! gradient) comes from memory, not from cache, so each call reads the next of several
//! copies of it (64 MiB in all, past the caches of the machines measured), on the pool the
//! step runs on, its threads kept awake. The kernels
//! take turns call by call; each figure is the median GFLOP/s over the rounds, with the
//! best in brackets.
//!
//! `cargo run --release --example bench_outer_gemm [-- --rounds 15] [--in-cache]`

use std::time::Instant;

use finetune_studio::ops::packed_gemm::{self, Micro, Strided};

fn main() {
    finetune_studio::ops::runtime::tune_runtime();
    let args: Vec<String> = std::env::args().collect();
    let rounds = args
        .iter()
        .position(|a| a == "--rounds")
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(15)
        .max(1);
    // `--in-cache`: one copy of rhs, read again by every call.
    let in_cache = args.iter().any(|a| a == "--in-cache");
    let threads = rayon::current_num_threads();
    if !finetune_studio::ops::outer_gemm::available() {
        eprintln!("this CPU lacks AVX-512F: the outer-product kernel does not run here");
        std::process::exit(1);
    }
    println!(
        "{} ({threads} threads); median (best) GFLOP/s of {rounds} rounds, rhs {}",
        finetune_studio::sys::cpu_model(),
        if in_cache { "in cache" } else { "from memory" }
    );
    let m = 16;
    // Inside the pool with its threads kept awake, as in a training step.
    finetune_studio::ops::runtime::on_compute_pool(|| shapes(m, rounds, threads, in_cache));
}

/// Each shape's figures.
fn shapes(m: usize, rounds: usize, threads: usize, in_cache: bool) {
    for (n, k) in [(576, 1024), (1536, 1024), (192, 1024), (576, 4096)] {
        let copies = if in_cache {
            1
        } else {
            ((64usize << 20) / (4 * k * n)).max(2)
        };
        let lhs: Vec<f32> = (0..m * k).map(|i| (i % 17) as f32 * 0.01).collect();
        let rhs: Vec<Vec<f32>> = (0..copies)
            .map(|c| (0..k * n).map(|i| ((i + c) % 13) as f32 * 0.02).collect())
            .collect();
        let mut dst = vec![vec![0f32; m * n]; 3];
        let mut times = vec![Vec::new(); 3];
        let names = ["outer", "packed512", "gemm crate"];
        let mut next = 0;
        for round in 0..=rounds {
            for (i, out) in dst.iter_mut().enumerate() {
                let b = &rhs[next % copies];
                next += 1;
                let t = Instant::now();
                let d = Strided::new(out.as_mut_ptr(), n as isize, 1);
                let l = Strided::new(lhs.as_ptr(), k as isize, 1);
                let r = Strided::new(b.as_ptr(), n as isize, 1);
                // SAFETY: row-major buffers of exactly these sizes; m = 16; the CPU has
                // AVX-512F (checked above).
                unsafe {
                    match i {
                        0 => finetune_studio::ops::outer_gemm::gemm(
                            (m, n, k),
                            d,
                            false,
                            l,
                            r,
                            (1.0, 1.0),
                            threads,
                        ),
                        1 => packed_gemm::gemm(
                            Micro::Avx512,
                            (m, n, k),
                            d,
                            false,
                            l,
                            r,
                            (1.0, 1.0),
                            threads,
                        ),
                        _ => gemm::gemm(
                            m,
                            n,
                            k,
                            out.as_mut_ptr(),
                            1,
                            n as isize,
                            false,
                            lhs.as_ptr(),
                            1,
                            k as isize,
                            b.as_ptr(),
                            1,
                            n as isize,
                            1.0,
                            1.0,
                            false,
                            false,
                            false,
                            gemm::Parallelism::Rayon(threads),
                        ),
                    }
                }
                if round > 0 {
                    times[i].push(t.elapsed().as_secs_f64());
                }
            }
        }
        let flops = 2.0 * (m * n * k) as f64;
        let figures: Vec<String> = names
            .iter()
            .zip(&mut times)
            .map(|(name, t)| {
                t.sort_by(f64::total_cmp);
                let (median, best) = (t[t.len() / 2], t[0]);
                format!(
                    "{name} {:.1} ({:.1})",
                    flops / median / 1e9,
                    flops / best / 1e9
                )
            })
            .collect();
        println!("m {m} n {n:>5} k {k:>5}: {}", figures.join(", "));
    }
}
