//! `y = x · Wᵀ` for row-major `x [n, k]` and `W [r, k]` (a prompt through a dequantized
//! panel): the studio's dot-product kernel (`ops::dot_gemm`, AVX-512 or AVX2) against the
//! gemm crate's kernels for this CPU on the same operands, both on every thread; best of
//! 7 calls each.
//!
//! `cargo run --release --example bench_dot_gemm`

use std::time::Instant;

fn best_of(mut f: impl FnMut()) -> f64 {
    f();
    (0..7)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    finetune_studio::ops::runtime::tune_runtime();
    let threads = rayon::current_num_threads();
    println!(
        "{} ({} threads); dot kernel (AVX-512 or AVX2) available: {}",
        finetune_studio::sys::cpu_model(),
        threads,
        finetune_studio::ops::dot_gemm::available()
    );
    for (n, r, k) in [
        (16, 2048, 2048),
        (92, 2048, 2048),
        (92, 8192, 2048),
        (92, 2048, 8192),
        (256, 2048, 2048),
        (1024, 1536, 576),
        (1024, 576, 1536),
    ] {
        let x: Vec<f32> = (0..n * k).map(|i| (i % 17) as f32 * 0.01).collect();
        let w: Vec<f32> = (0..r * k).map(|i| (i % 13) as f32 * 0.02).collect();
        let mut y = vec![0f32; n * r];
        let flops = 2.0 * (n * r * k) as f64;
        // SAFETY: x is n×k, w is r×k and y is n×r, row-major, distinct.
        let own = best_of(|| unsafe {
            finetune_studio::ops::dot_gemm::x_wt(
                (n, r, k),
                (x.as_ptr(), k),
                (w.as_ptr(), k),
                (y.as_mut_ptr(), r),
                (1.0, false),
                true,
            )
        });
        let own_y = y.clone();
        // SAFETY: as above; W read column-major as the k × r right-hand side.
        let crate_s = best_of(|| unsafe {
            gemm::gemm(
                n,
                r,
                k,
                y.as_mut_ptr(),
                1,
                r as isize,
                false,
                x.as_ptr(),
                1,
                k as isize,
                w.as_ptr(),
                k as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(threads),
            )
        });
        let diff = own_y
            .iter()
            .zip(&y)
            .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
            .fold(0f32, f32::max);
        println!(
            "n {n:>4} r {r:>5} k {k:>5}: dot {:>6.1} GFLOP/s, gemm crate {:>6.1} GFLOP/s (max rel diff {diff:.1e})",
            flops / own / 1e9,
            flops / crate_s / 1e9
        );
    }
}
