//! Element-wise kernels written so that the compiler vectorizes them: `exp`, the softmax
//! and log-sum-exp built on it (attention, the loss), SwiGLU and GeGLU (tanh GELU) and
//! their gradients, and sums
//! and dot products with eight accumulators.
//!
//! libm's `expf` is one scalar call per element; the softmaxes of attention and the loss,
//! and SiLU, call it tens of millions of times per training step. [`exp`] is the Cephes
//! `expf` (range reduction by ln 2, a degree-6 polynomial, the exponent set through the
//! bits), branch-free and within 2 ulp, so a loop over it compiles to SIMD. A float sum
//! with one accumulator is a chain of dependent additions that the compiler may not
//! reorder; eight independent ones let it vectorize. No maintained crate offers these for
//! `f32` slices on stable Rust, hence this module.

/// Below this, `exp` underflows to 0 (the smallest normal `f32` is `e^-87.34`).
const EXP_MIN: f32 = -87.3;
/// Above this, `exp` overflows to infinity.
const EXP_MAX: f32 = 88.72;

/// `e^x`, vectorizable, within 2 ulp of `f32::exp` for normal results (0 below `e^-87.3`).
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    // ln 2 split in two so that `n · LN2_HI` is exact.
    const LN2_HI: f32 = 0.693_359_4;
    const LN2_LO: f32 = -2.121_944_4e-4;
    // Adding and subtracting 1.5 · 2²³ rounds to the nearest integer without a call.
    const ROUND: f32 = 12_582_912.0;
    let xc = x.clamp(EXP_MIN, EXP_MAX);
    let rounded = xc * LOG2E + ROUND;
    let n = rounded - ROUND;
    let r = xc - n * LN2_HI - n * LN2_LO;
    let mut p = 1.987_569_1e-4_f32;
    p = p * r + 1.398_199_9e-3;
    p = p * r + 8.333_452e-3;
    p = p * r + 4.166_579_6e-2;
    p = p * r + 0.166_666_65;
    p = p * r + 0.5;
    let er = p * r * r + r + 1.0;
    // 2^n through the exponent bits. n is within [-126, 128] after the clamp, so
    // `rounded = 1.5 · 2²³ + n` lies in one binade where floats are the integers: its bits
    // are ROUND's plus n. (`n as i32` would be the same number, but its saturating
    // conversion compiles to eight scalar conversions per vector.) 2^128 is past the
    // largest exponent, so n = 128 is 2^127 · 2.
    let n = rounded.to_bits() as i32 - ROUND.to_bits() as i32;
    let scale = f32::from_bits(((n.min(127) + 127).max(1) as u32) << 23);
    let y = er * scale * if n > 127 { 2.0 } else { 1.0 };
    // e^88.72 is past f32::MAX: the product is infinite, as f32::exp gives.
    if x < EXP_MIN {
        0.0
    } else if x > EXP_MAX {
        f32::INFINITY
    } else {
        y
    }
}

/// Defines a function whose body is compiled three times, for baseline x86-64, for AVX2 +
/// FMA and for AVX-512 (F/BW/VL), and picks at run time the widest that
/// [`super::quant::isa::active`] allows (`FINETUNE_STUDIO_ISA` pins a lower one). The crate
/// is built for baseline x86-64 (four lanes), so loops over [`exp`] only get eight or
/// sixteen lanes this way. Every version computes each value with the same operations in
/// the same order (no fused multiply-adds are formed, sums keep their eight partial sums),
/// so all three give the same bits.
macro_rules! simd_versions {
    ($(#[$doc:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn baseline($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                baseline($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
            unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                baseline($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            match $crate::ops::quant::isa::active() {
                // SAFETY: `active` never exceeds what CPUID reported for this CPU, and
                // its AVX-512 level includes F, BW and VL, its AVX2 level AVX2 and FMA.
                $crate::ops::quant::isa::Isa::Avx512Vnni => return unsafe { avx512($($arg),*) },
                // SAFETY: as above.
                $crate::ops::quant::isa::Isa::Avx2 => return unsafe { avx2($($arg),*) },
                $crate::ops::quant::isa::Isa::Scalar => {}
            }
            baseline($($arg),*)
        }
    };
}

pub(crate) use simd_versions;

/// `x · σ(x)`'s factor `σ(x) = 1 / (1 + e^-x)`.
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

simd_versions! {
    /// SwiGLU: `out[i] = silu(gate[i]) · up[i]`, `silu(g) = g · σ(g)`, over the shortest of
    /// the three slices.
    pub fn silu_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = g * sigmoid(g) * u;
        }
    }
}

simd_versions! {
    /// The gradients of [`silu_mul`] for an output gradient `d`:
    /// `d_up = d · silu(g)` and `d_gate = d · u · σ(g) · (1 + g · (1 − σ(g)))`.
    pub fn silu_mul_backward(
        gate: &[f32],
        up: &[f32],
        d: &[f32],
        d_gate: &mut [f32],
        d_up: &mut [f32],
    ) {
        let grads = d_gate.iter_mut().zip(d_up.iter_mut());
        for ((dg, du), ((&g, &u), &d)) in grads.zip(gate.iter().zip(up).zip(d)) {
            let s = sigmoid(g);
            *du = d * g * s;
            *dg = d * u * s * (1.0 + g * (1.0 - s));
        }
    }
}

/// `√(2/π)`, the tanh-approximated GELU's inner factor.
const GELU_C: f32 = 0.797_884_6;
/// The cubic term's weight in the tanh-approximated GELU.
const GELU_A: f32 = 0.044_715;

/// The tanh-approximated GELU's gate `½(1 + tanh(u))`, `u = √(2/π)(x + 0.044715 x³)`,
/// computed as `σ(2u)` (the same function, one exp), and `du/dx`.
#[inline(always)]
fn gelu_tanh_gate(x: f32) -> (f32, f32) {
    let u = GELU_C * (x + GELU_A * x * x * x);
    (sigmoid(2.0 * u), GELU_C * (1.0 + 3.0 * GELU_A * x * x))
}

simd_versions! {
    /// GeGLU: `out[i] = gelu_tanh(gate[i]) · up[i]`, `gelu_tanh(g) = g · ½(1 + tanh(√(2/π)
    /// (g + 0.044715 g³)))` (PyTorch's `gelu(approximate="tanh")`), over the shortest of
    /// the three slices.
    pub fn gelu_tanh_mul(gate: &[f32], up: &[f32], out: &mut [f32]) {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = g * gelu_tanh_gate(g).0 * u;
        }
    }
}

simd_versions! {
    /// The gradients of [`gelu_tanh_mul`] for an output gradient `d`: `d_up = d ·
    /// gelu_tanh(g)` and `d_gate = d · u · (s + g · 2s(1 − s) · du/dg)`, `s = σ(2u)`.
    pub fn gelu_tanh_mul_backward(
        gate: &[f32],
        up: &[f32],
        d: &[f32],
        d_gate: &mut [f32],
        d_up: &mut [f32],
    ) {
        let grads = d_gate.iter_mut().zip(d_up.iter_mut());
        for ((dg, du), ((&g, &u), &d)) in grads.zip(gate.iter().zip(up).zip(d)) {
            let (s, du_dg) = gelu_tanh_gate(g);
            *du = d * g * s;
            *dg = d * u * (s + g * 2.0 * s * (1.0 - s) * du_dg);
        }
    }
}

simd_versions! {
    /// `xs ← softmax(scale · xs)` (`scale > 0`), with one exp per element; returns
    /// `log Σ exp(scale · xs)`, the log-sum-exp of the scaled input.
    pub fn softmax_in_place(xs: &mut [f32], scale: f32) -> f32 {
        let max = max_of(xs);
        for x in xs.iter_mut() {
            *x = exp((*x - max) * scale);
        }
        let total = sum(xs);
        let inv = 1.0 / total;
        xs.iter_mut().for_each(|x| *x *= inv);
        max * scale + total.ln()
    }
}

simd_versions! {
    /// RMSNorm of one row: `out = x · r · w`, `r = 1 / sqrt(mean(x²) + eps)`.
    pub fn rms_norm_row(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
        let r = 1.0 / (dot(x, x) / x.len() as f32 + eps).sqrt();
        for ((o, &v), &w) in out.iter_mut().zip(x).zip(w) {
            *o = v * r * w;
        }
    }
}

simd_versions! {
    /// The gradient of [`rms_norm_row`] for an output gradient `g`:
    /// `dx = r · (g ⊙ w) − x · r³ · mean(g ⊙ w ⊙ x)`.
    pub fn rms_norm_row_backward(x: &[f32], g: &[f32], w: &[f32], eps: f32, dx: &mut [f32]) {
        let h = x.len() as f32;
        let r = 1.0 / (dot(x, x) / h + eps).sqrt();
        let mut acc = [0f32; 8];
        let split = x.len().min(g.len()).min(w.len()) / 8 * 8;
        for ((x, g), w) in x[..split]
            .chunks_exact(8)
            .zip(g[..split].chunks_exact(8))
            .zip(w[..split].chunks_exact(8))
        {
            for k in 0..8 {
                acc[k] += x[k] * g[k] * w[k];
            }
        }
        let tail: f32 = x.iter().zip(g).zip(w).skip(split).map(|((x, g), w)| x * g * w).sum();
        let k = r * r * r * (acc.iter().sum::<f32>() + tail) / h;
        for (((d, &x), &g), &w) in dx.iter_mut().zip(x).zip(g).zip(w) {
            *d = r * g * w - x * k;
        }
    }
}

/// The largest of `xs` (NaNs skipped, `-∞` when empty), in eight interleaved maxima.
#[inline(always)]
fn max_of(xs: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            acc[k] = if c[k] > acc[k] { c[k] } else { acc[k] };
        }
    }
    let tail = chunks.remainder().iter();
    acc.iter()
        .chain(tail)
        .fold(f32::NEG_INFINITY, |m, &x| m.max(x))
}

/// `log Σ exp(xs)`, leaving `xs` as it is.
pub fn logsumexp(xs: &[f32]) -> f32 {
    let max = max_of(xs);
    let mut acc = [0f32; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            acc[k] += exp(c[k] - max);
        }
    }
    let tail: f32 = chunks.remainder().iter().map(|&x| exp(x - max)).sum();
    max + (acc.iter().sum::<f32>() + tail).ln()
}

/// `Σ xs`, in eight interleaved partial sums.
#[inline(always)]
pub fn sum(xs: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let mut chunks = xs.chunks_exact(8);
    for c in &mut chunks {
        for k in 0..8 {
            acc[k] += c[k];
        }
    }
    acc.iter().sum::<f32>() + chunks.remainder().iter().sum::<f32>()
}

/// `Σ a[i] · b[i]` over the shorter of the two, in eight interleaved partial sums.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; 8];
    let split = n / 8 * 8;
    for (x, y) in a[..split].chunks_exact(8).zip(b[..split].chunks_exact(8)) {
        for k in 0..8 {
            acc[k] += x[k] * y[k];
        }
    }
    let tail: f32 = a[split..].iter().zip(&b[split..]).map(|(x, y)| x * y).sum();
    acc.iter().sum::<f32>() + tail
}

simd_versions! {
    /// `ys[k] = w_k · x` for the rows `w_k` of `w` (`ys.len()` rows of `x.len()`), the
    /// decode step's matrix-vector product: [`dot`] compiled with eight FMA lanes where the
    /// CPU has them, instead of as whatever the caller's inlining makes of it.
    pub fn dot_rows(ys: &mut [f32], w: &[f32], x: &[f32]) {
        let n = x.len();
        for (yk, row) in ys.iter_mut().zip(w.chunks_exact(n.max(1))) {
            *yk = dot(row, x);
        }
    }
}

simd_versions! {
    /// `out += Σ_k weights[k] · row_k` for the rows `row_k` of `rows` (`weights.len()` rows
    /// of `out.len()`): attention's weighted sum of values in a decode step, each product
    /// and sum rounded as the plain loop rounds them.
    pub fn add_weighted_rows(out: &mut [f32], weights: &[f32], rows: &[f32]) {
        let n = out.len();
        for (&p, row) in weights.iter().zip(rows.chunks_exact(n.max(1))) {
            for (o, &v) in out.iter_mut().zip(row) {
                *o += p * v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The weighted sum of value rows equals the plain loop bit for bit (no fused
    /// multiply-add on the CPU's wider lanes), for a row length that is not a whole
    /// number of vectors.
    #[test]
    fn weighted_rows_sum_as_the_plain_loop_rounds() {
        let (n, k) = (67, 13);
        let rows: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.37).sin() * 3.1).collect();
        let weights: Vec<f32> = (0..k).map(|i| (i as f32 * 0.71).cos() / 7.0).collect();
        let mut want: Vec<f32> = (0..n).map(|i| i as f32 * 0.01).collect();
        let mut got = want.clone();
        for (p, row) in weights.iter().zip(rows.chunks_exact(n)) {
            for (o, v) in want.iter_mut().zip(row) {
                *o += p * v;
            }
        }
        add_weighted_rows(&mut got, &weights, &rows);
        assert_eq!(got, want);
    }

    #[test]
    fn exp_is_within_two_ulp_of_libm() {
        let mut worst = 0f32;
        let mut x = -87.0f32;
        while x < 88.0 {
            let (fast, exact) = (exp(x), x.exp());
            worst = worst.max(((fast - exact) / exact).abs());
            x += 0.001_7;
        }
        // 2 ulp of the mantissa is 2.4e-7 relative.
        assert!(worst < 2.5e-7, "worst relative error {worst}");
        for x in [0.0f32, 1.0, -1.0, 1e-8, -1e-8] {
            assert!(((exp(x) - x.exp()) / x.exp()).abs() < 2.5e-7, "{x}");
        }
    }

    #[test]
    fn exp_saturates_like_libm() {
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-1000.0), 0.0);
        assert_eq!(exp(-87.5), 0.0);
        assert_eq!(exp(1000.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(((exp(88.5) - 88.5f32.exp()) / 88.5f32.exp()).abs() < 2.5e-7);
        assert_eq!(exp(0.0), 1.0);
        assert!((exp(1.0) - std::f32::consts::E).abs() < 1e-6);
    }

    #[test]
    fn softmax_and_logsumexp_match_the_plain_formulas() {
        let xs: Vec<f32> = (0..37).map(|i| ((i as f32) * 0.7).sin() * 5.0).collect();
        let scale = 0.25;
        let lse_plain = xs.iter().map(|x| (x * scale).exp()).sum::<f32>().ln();
        let mut p = xs.clone();
        let lse = softmax_in_place(&mut p, scale);
        assert!((lse - lse_plain).abs() < 1e-5, "{lse} vs {lse_plain}");
        for (pi, x) in p.iter().zip(&xs) {
            assert!((pi - (x * scale - lse_plain).exp()).abs() < 1e-6);
        }
        let unscaled: f32 = xs.iter().map(|x| x.exp()).sum::<f32>().ln();
        assert!((logsumexp(&xs) - unscaled).abs() < 1e-5);
        // The largest score past the last full group of eight, and masked ones.
        let mut tail = vec![0.0f32; 19];
        tail[18] = 30.0;
        tail[3] = f32::NEG_INFINITY;
        let lse = softmax_in_place(&mut tail, 1.0);
        assert!((lse - 30.0).abs() < 1e-5, "{lse}");
        assert!((tail[18] - 1.0).abs() < 1e-6 && tail[3] == 0.0);
        assert!((logsumexp(&[1.0, 2.0, 9.0]) - 9.001_25).abs() < 1e-4);
    }

    #[test]
    fn silu_mul_and_its_gradient_match_the_plain_formulas() {
        let n = 37;
        let g: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.9).sin() * 6.0).collect();
        let u: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.4).cos() * 2.0).collect();
        let d: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.3).sin()).collect();
        let sig = |x: f32| 1.0 / (1.0 + (-x).exp());
        let mut out = vec![0f32; n];
        silu_mul(&g, &u, &mut out);
        let (mut dg, mut du) = (vec![0f32; n], vec![0f32; n]);
        silu_mul_backward(&g, &u, &d, &mut dg, &mut du);
        for i in 0..n {
            let s = sig(g[i]);
            assert!((out[i] - g[i] * s * u[i]).abs() < 1e-5, "out {i}");
            assert!((du[i] - d[i] * g[i] * s).abs() < 1e-5, "d_up {i}");
            let want = d[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
            assert!((dg[i] - want).abs() < 1e-5, "d_gate {i}");
        }
    }

    #[test]
    fn sums_and_dots_match_the_plain_loops() {
        for n in [0, 1, 7, 8, 9, 100, 1001] {
            let a: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.37).sin()).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i as f32) * 0.11).cos()).collect();
            let plain_sum: f32 = a.iter().sum();
            let plain_dot: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert!((sum(&a) - plain_sum).abs() < 1e-4, "sum of {n}");
            assert!((dot(&a, &b) - plain_dot).abs() < 1e-4, "dot of {n}");
        }
    }
}
