//! The f32 products of a prompt and of a training step on every thread, kernel against
//! kernel on the same operands: `y = x · Wᵀ` for row-major `x [n, k]` and `W [r, k]` (a
//! dequantized panel) on the studio's dot-product kernel (`ops::dot_gemm`), its packed
//! kernel (`ops::packed_gemm`, on its AVX2 and AVX-512 micro-kernels) and the gemm crate; and the backward's `dx = dy · W` on the
//! packed kernel and the gemm crate. The kernels take turns call by call (`--rounds`
//! rounds, 15 by default), so that a busy host slows all of them alike; each figure is the
//! median GFLOP/s over the rounds, with the best in brackets.
//!
//! `cargo run --release --example bench_dot_gemm [-- --rounds 15]`

use std::time::Instant;

use finetune_studio::ops::packed_gemm::{self, Micro, Strided};

/// One kernel's call on the shape's operands.
type Call<'a> = Box<dyn FnMut() + 'a>;

/// Row-major `rows × cols` values, row `i` at `i · cols`.
fn row_major(ptr: *const f32, cols: usize) -> Strided<f32> {
    Strided::new(ptr, cols as isize, 1)
}

/// `dst [m, n] = lhs [m, k] · rhs` on the gemm crate, `dst` and `lhs` row-major, element
/// (p, j) of `rhs` at `p · rhs_rs + j · rhs_cs`.
fn crate_gemm(
    (m, n, k): (usize, usize, usize),
    dst: &mut [f32],
    lhs: &[f32],
    (rhs, rhs_rs, rhs_cs): (&[f32], usize, usize),
    threads: usize,
) {
    assert!(dst.len() >= m * n && lhs.len() >= m * k);
    assert!(rhs.len() > (k.max(1) - 1) * rhs_rs + (n.max(1) - 1) * rhs_cs);
    // SAFETY: the lengths checked above cover every element the strides reach.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            n as isize,
            false,
            lhs.as_ptr(),
            1,
            k as isize,
            rhs.as_ptr(),
            rhs_cs as isize,
            rhs_rs as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::Rayon(threads),
        )
    }
}

/// The largest relative difference between two results.
fn rel_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(a, b)| (a - b).abs() / (1.0 + b.abs()))
        .fold(0f32, f32::max)
}

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
    let threads = rayon::current_num_threads();
    let dot_ok = finetune_studio::ops::dot_gemm::available();
    // The packed kernel's micro-kernels this CPU runs, with the names of their two products.
    let micros: Vec<(Micro, &str, &str)> = [
        (Micro::Avx2, "packed", "dy·W packed"),
        (Micro::Avx512, "packed512", "dy·W packed512"),
    ]
    .into_iter()
    .filter(|(micro, ..)| micro.available())
    .collect();
    println!(
        "{} ({threads} threads); dot kernel: {dot_ok}, packed micro-kernels: {:?}; median (best) GFLOP/s of {rounds} rounds",
        finetune_studio::sys::cpu_model(),
        micros.iter().map(|(micro, ..)| *micro).collect::<Vec<_>>(),
    );
    for (n, r, k) in [
        (16, 2048, 2048),
        (92, 2048, 2048),
        (92, 8192, 2048),
        (256, 2048, 2048),
        (1024, 1536, 576),
        (1024, 576, 1536),
        (1024, 576, 576),
        (1024, 192, 576),
        (16, 1024, 576),
        (16, 1024, 1536),
    ] {
        let x: Vec<f32> = (0..n * k).map(|i| (i % 17) as f32 * 0.01).collect();
        let w: Vec<f32> = (0..r * k).map(|i| (i % 13) as f32 * 0.02).collect();
        let dy: Vec<f32> = (0..n * r).map(|i| (i % 11) as f32 * 0.03).collect();
        let (mut y_dot, mut y_crate) = (vec![0f32; n * r], vec![0f32; n * r]);
        let mut dx_crate = vec![0f32; n * k];
        // Each micro-kernel's outputs of the two products.
        let mut y_own = vec![vec![0f32; n * r]; micros.len()];
        let mut dx_own = vec![vec![0f32; n * k]; micros.len()];
        let (x, w, dy) = (&x, &w, &dy);
        // Each kernel, in turn: (name, call) pairs; a kernel this CPU lacks is left out.
        let mut kernels: Vec<(&str, Call<'_>)> = Vec::new();
        if dot_ok {
            kernels.push((
                "x·Wᵀ dot",
                Box::new(|| {
                    // SAFETY: x is n×k, w r×k and y n×r, row-major, distinct.
                    unsafe {
                        finetune_studio::ops::dot_gemm::x_wt(
                            (n, r, k),
                            (x.as_ptr(), k),
                            (w.as_ptr(), k),
                            (y_dot.as_mut_ptr(), r),
                            (1.0, false),
                            true,
                        )
                    }
                }),
            ));
        }
        for ((micro, name, _), y) in micros.iter().zip(&mut y_own) {
            let micro = *micro;
            kernels.push((
                name,
                Box::new(move || {
                    // SAFETY: the CPU runs `micro`; x is n×k and y n×r row-major, w (r×k,
                    // row-major) read column-major as Wᵀ.
                    unsafe {
                        packed_gemm::gemm(
                            micro,
                            (n, r, k),
                            row_major(y.as_mut_ptr(), r),
                            false,
                            row_major(x.as_ptr(), k),
                            Strided::new(w.as_ptr(), 1, k as isize),
                            (1.0, 1.0),
                            threads,
                        )
                    }
                }),
            ));
        }
        kernels.push((
            "gemm crate",
            // W [r, k] read column-major as the k × r right-hand side.
            Box::new(|| crate_gemm((n, r, k), &mut y_crate, x, (w, 1, k), threads)),
        ));
        for ((micro, _, name), dx) in micros.iter().zip(&mut dx_own) {
            let micro = *micro;
            kernels.push((
                name,
                Box::new(move || {
                    // SAFETY: the CPU runs `micro`; dy n×r, w r×k, dx n×k, row-major.
                    unsafe {
                        packed_gemm::gemm(
                            micro,
                            (n, k, r),
                            row_major(dx.as_mut_ptr(), k),
                            false,
                            row_major(dy.as_ptr(), r),
                            row_major(w.as_ptr(), k),
                            (1.0, 1.0),
                            threads,
                        )
                    }
                }),
            ));
        }
        kernels.push((
            "gemm crate",
            Box::new(|| crate_gemm((n, k, r), &mut dx_crate, dy, (w, k, 1), threads)),
        ));
        let mut times = vec![Vec::new(); kernels.len()];
        for round in 0..=rounds {
            for (i, (_, call)) in kernels.iter_mut().enumerate() {
                let t = Instant::now();
                call();
                // Round 0 warms up (pages, packing buffers).
                if round > 0 {
                    times[i].push(t.elapsed().as_secs_f64());
                }
            }
        }
        let names: Vec<&str> = kernels.iter().map(|(name, _)| *name).collect();
        drop(kernels);
        let flops = 2.0 * (n * r * k) as f64;
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
        let mut diff = 0f32;
        if dot_ok {
            diff = diff.max(rel_diff(&y_dot, &y_crate));
        }
        for (y, dx) in y_own.iter().zip(&dx_own) {
            diff = diff.max(rel_diff(y, &y_crate)).max(rel_diff(dx, &dx_crate));
        }
        println!(
            "n {n:>4} r {r:>5} k {k:>5}: {} (max rel diff {diff:.1e})",
            figures.join(", ")
        );
    }
}
