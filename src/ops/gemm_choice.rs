//! Which f32 gemm kernel each product shape runs on: AVX2 + FMA or AVX-512, chosen on this
//! machine by timing, never by a constant.
//!
//! The gemm crate (0.19, built with `x86-v4`) runs AVX-512 on CPUs that have it; gemm-f32
//! 0.18 (the same algorithm, whose AVX-512 kernels need a nightly compiler) is the AVX2
//! one. Which is faster depends on the core (Zen 4 splits 512-bit operations in two, Zen 5
//! and recent Xeons do not) and on the shape (thin products can favour AVX2). So the
//! first calls of each shape alternate between the two and time themselves, the faster
//! per FLOP is kept, the choice is logged, and the choices are kept on disk for this CPU
//! (`kernel-choices.json` in the data directory) with each kernel's best time.
//!
//! A busy machine only ever makes a kernel look slower than it is, so the best time over
//! every trial ever taken converges on the quiet figure: each later run times a saved shape
//! once more on each kernel and decides on the best times of all runs together. A choice
//! that a neighbour's build skewed is corrected by the next quiet run instead of being kept.
//! `FINETUNE_STUDIO_GEMM=avx2|avx512` pins one kernel for comparisons.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

/// The two kernel sets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GemmKernel {
    Avx2,
    Avx512,
}

impl GemmKernel {
    pub fn label(self) -> &'static str {
        match self {
            GemmKernel::Avx2 => "avx2",
            GemmKernel::Avx512 => "avx512",
        }
    }
    fn from_label(s: &str) -> Option<Self> {
        match s {
            "avx2" => Some(GemmKernel::Avx2),
            "avx512" => Some(GemmKernel::Avx512),
            _ => None,
        }
    }
}

/// Timed calls of each kernel before a new shape's choice is made.
const TRIALS: usize = 3;
/// Timed calls of each kernel, in a later run, for a shape saved with its best times.
const RECHECK_TRIALS: usize = 1;
/// Products below this many multiply-adds (a few microseconds) are not worth timing:
/// they run on AVX2.
const TIMED_MIN_MACS: usize = 1 << 20;

/// A product's shape as the choice sees it: each size rounded up to a power of two (packed
/// micro-batches vary in length, and attention's sizes with them: exact sizes would time
/// and log a new shape for every row length), the operands' layouts and the threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct ShapeKey {
    m: usize,
    n: usize,
    k: usize,
    /// Which operands are read column-major (dst, lhs, rhs).
    transposed: [bool; 3],
    threads: usize,
}

impl ShapeKey {
    fn label(&self) -> String {
        let t = |b: bool| if b { 'T' } else { 'N' };
        format!(
            "m{} n{} k{} {}{}{} t{}",
            self.m,
            self.n,
            self.k,
            t(self.transposed[0]),
            t(self.transposed[1]),
            t(self.transposed[2]),
            self.threads
        )
    }
}

#[derive(Debug, Clone)]
enum Choice {
    /// Seconds per multiply-add of each timed call so far.
    Timing {
        avx2: Vec<f64>,
        avx512: Vec<f64>,
        /// The best seconds per multiply-add saved by earlier runs, `(avx2, avx512)`.
        saved: Option<(f64, f64)>,
    },
    /// The kernel, and the best seconds per multiply-add of each, `(avx2, avx512)` (none
    /// for choices of unit tests).
    Chosen(GemmKernel, Option<(f64, f64)>),
}

struct Choices {
    cpu: String,
    shapes: HashMap<ShapeKey, Choice>,
}

static CHOICES: Mutex<Option<Choices>> = Mutex::new(None);

/// Whether this CPU and the environment leave two kernels to choose from.
fn both_available() -> bool {
    static BOTH: OnceLock<bool> = OnceLock::new();
    *BOTH.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            std::arch::is_x86_feature_detected!("avx512f") && pinned().is_none()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// The kernel `FINETUNE_STUDIO_GEMM` pins, if any (AVX-512 only where the CPU has it).
fn pinned() -> Option<GemmKernel> {
    static PINNED: OnceLock<Option<GemmKernel>> = OnceLock::new();
    *PINNED.get_or_init(|| {
        let asked = std::env::var("FINETUNE_STUDIO_GEMM").ok()?;
        let k = GemmKernel::from_label(&asked)?;
        #[cfg(target_arch = "x86_64")]
        let has_avx512 = std::arch::is_x86_feature_detected!("avx512f");
        #[cfg(not(target_arch = "x86_64"))]
        let has_avx512 = false;
        Some(if k == GemmKernel::Avx512 && !has_avx512 {
            GemmKernel::Avx2
        } else {
            k
        })
    })
}

fn cache_path() -> std::path::PathBuf {
    crate::paths::data_dir().join("kernel-choices.json")
}

/// The choices saved for this CPU (none when the file is missing, unreadable or written on
/// another CPU).
fn load(path: &std::path::Path, cpu: &str) -> HashMap<ShapeKey, Choice> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return HashMap::new();
    };
    let parsed: Result<serde_json::Value, _> = serde_json::from_str(&text);
    let Ok(v) = parsed else {
        tracing::warn!(
            "{}: not JSON; the gemm kernels are timed again",
            path.display()
        );
        return HashMap::new();
    };
    if v["cpu"].as_str() != Some(cpu) {
        return HashMap::new();
    }
    let mut out = HashMap::new();
    for entry in v["shapes"].as_array().into_iter().flatten() {
        let num = |k: &str| entry[k].as_u64().map(|v| v as usize);
        let flag = |i: usize| entry["transposed"][i].as_bool();
        let key = (|| {
            Some(ShapeKey {
                m: num("m")?,
                n: num("n")?,
                k: num("k")?,
                transposed: [flag(0)?, flag(1)?, flag(2)?],
                threads: num("threads")?,
            })
        })();
        let seconds = |k: &str| entry[k].as_f64().filter(|t| t.is_finite() && *t > 0.0);
        let saved = seconds("avx2_s_per_mac").zip(seconds("avx512_s_per_mac"));
        // A file of an older version, with no times, is timed afresh.
        if let (Some(key), Some(saved)) = (key, saved) {
            out.insert(
                key,
                Choice::Timing {
                    avx2: Vec::new(),
                    avx512: Vec::new(),
                    saved: Some(saved),
                },
            );
        }
    }
    out
}

/// Writes every choice made so far; a failed write is logged and costs only a new timing
/// next run.
fn save(path: &std::path::Path, choices: &Choices) {
    let shapes: Vec<serde_json::Value> = choices
        .shapes
        .iter()
        .filter_map(|(key, c)| match c {
            Choice::Chosen(kernel, Some((t2, t5))) => Some(serde_json::json!({
                "m": key.m, "n": key.n, "k": key.k, "transposed": key.transposed,
                "threads": key.threads, "kernel": kernel.label(),
                "avx2_s_per_mac": t2, "avx512_s_per_mac": t5,
            })),
            // Saved times not yet checked in this run are kept as they were.
            Choice::Timing {
                saved: Some((t2, t5)),
                ..
            } => Some(serde_json::json!({
                "m": key.m, "n": key.n, "k": key.k, "transposed": key.transposed,
                "threads": key.threads,
                "kernel": if t5 < t2 { "avx512" } else { "avx2" },
                "avx2_s_per_mac": t2, "avx512_s_per_mac": t5,
            })),
            Choice::Chosen(_, None) | Choice::Timing { saved: None, .. } => None,
        })
        .collect();
    let doc = serde_json::json!({"cpu": choices.cpu, "shapes": shapes});
    let written = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .map_err(|e| crate::fsio::WriteError::new(path, e))
        .and_then(|()| crate::fsio::write_bytes_atomic(path, doc.to_string().as_bytes()));
    if let Err(e) = written {
        tracing::warn!("keeping the gemm kernel choices: {e}");
    }
}

/// The kernel for `key` and whether this call is a timed trial.
fn pick(key: ShapeKey) -> (GemmKernel, bool) {
    let Ok(mut guard) = CHOICES.lock() else {
        return (GemmKernel::Avx2, false);
    };
    let choices = guard.get_or_insert_with(|| {
        let cpu = crate::sys::cpu_model();
        let shapes = load(&cache_path(), &cpu);
        Choices { cpu, shapes }
    });
    let choice = choices.shapes.entry(key).or_insert(Choice::Timing {
        avx2: Vec::new(),
        avx512: Vec::new(),
        saved: None,
    });
    match choice {
        Choice::Chosen(k, _) => (*k, false),
        Choice::Timing { avx2, avx512, .. } => {
            // Alternate, AVX2 first, so that both see the same conditions.
            if avx2.len() <= avx512.len() {
                (GemmKernel::Avx2, true)
            } else {
                (GemmKernel::Avx512, true)
            }
        }
    }
}

/// Records a timed call of `kernel` on `key`, deciding the shape once both have run
/// [`TRIALS`] times ([`RECHECK_TRIALS`] for a shape with saved times), on the best time of
/// each over this run's trials and the saved ones.
fn record(key: ShapeKey, kernel: GemmKernel, seconds_per_mac: f64) {
    let Ok(mut guard) = CHOICES.lock() else {
        return;
    };
    let Some(choices) = guard.as_mut() else {
        return;
    };
    let Some(Choice::Timing {
        avx2,
        avx512,
        saved,
    }) = choices.shapes.get_mut(&key)
    else {
        return;
    };
    match kernel {
        GemmKernel::Avx2 => avx2.push(seconds_per_mac),
        GemmKernel::Avx512 => avx512.push(seconds_per_mac),
    }
    let trials = if saved.is_some() {
        RECHECK_TRIALS
    } else {
        TRIALS
    };
    if avx2.len() < trials || avx512.len() < trials {
        return;
    }
    let (saved2, saved5) = saved.unwrap_or((f64::INFINITY, f64::INFINITY));
    let best = |v: &[f64], saved: f64| v.iter().copied().fold(saved, f64::min);
    let (t2, t5) = (best(avx2, saved2), best(avx512, saved5));
    let chosen = if t5 < t2 {
        GemmKernel::Avx512
    } else {
        GemmKernel::Avx2
    };
    let gflops = |t: f64| 2.0 / t / 1e9;
    tracing::info!(
        "gemm {}: {} ({:.0} GFLOP/s; AVX2 {:.0}, AVX-512 {:.0})",
        key.label(),
        chosen.label(),
        gflops(t2.min(t5)),
        gflops(t2),
        gflops(t5)
    );
    choices
        .shapes
        .insert(key, Choice::Chosen(chosen, Some((t2, t5))));
    // Unit tests decide made-up shapes; they stay out of the user's file.
    #[cfg(not(test))]
    save(&cache_path(), choices);
}

/// The kernels chosen so far, `(shape, kernel)`, for benchmarks' reports.
pub fn chosen() -> Vec<(String, GemmKernel)> {
    let Ok(guard) = CHOICES.lock() else {
        return Vec::new();
    };
    let mut out: Vec<(String, GemmKernel)> = guard
        .iter()
        .flat_map(|c| c.shapes.iter())
        .filter_map(|(key, c)| match c {
            Choice::Chosen(k, _) => Some((key.label(), *k)),
            Choice::Timing { .. } => None,
        })
        .collect();
    out.sort();
    out
}

/// `dst = alpha · dst + beta · lhs · rhs` (`dst` read only when `read_dst`), with the
/// arguments of `gemm::gemm`, on the kernel chosen for its shape.
///
/// # Safety
/// As for `gemm::gemm`: every element the strides and sizes reach must be valid for the
/// reads (lhs, rhs, and dst when `read_dst`) and writes (dst) gemm does, and `dst` must not
/// overlap `lhs` or `rhs`.
#[allow(clippy::too_many_arguments)]
pub unsafe fn gemm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_cs: isize,
    dst_rs: isize,
    read_dst: bool,
    lhs: *const f32,
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: *const f32,
    rhs_cs: isize,
    rhs_rs: isize,
    alpha: f32,
    beta: f32,
    parallelism: gemm::Parallelism,
) {
    let macs = m.saturating_mul(n).saturating_mul(k);
    let (kernel, timed) = match pinned() {
        Some(k) => (k, false),
        None if !both_available() || macs < TIMED_MIN_MACS => (GemmKernel::Avx2, false),
        None => {
            let key = ShapeKey {
                m: m.next_power_of_two(),
                n: n.next_power_of_two(),
                k: k.next_power_of_two(),
                transposed: [dst_cs != 1, lhs_cs != 1, rhs_cs != 1],
                threads: match parallelism {
                    gemm::Parallelism::Rayon(t) => t,
                    _ => 1,
                },
            };
            let (kernel, timed) = pick(key);
            if timed {
                let t = Instant::now();
                // SAFETY: the caller's promises.
                unsafe {
                    run(
                        kernel,
                        m,
                        n,
                        k,
                        dst,
                        dst_cs,
                        dst_rs,
                        read_dst,
                        lhs,
                        lhs_cs,
                        lhs_rs,
                        rhs,
                        rhs_cs,
                        rhs_rs,
                        alpha,
                        beta,
                        parallelism,
                    )
                };
                record(key, kernel, t.elapsed().as_secs_f64() / macs.max(1) as f64);
                return;
            }
            (kernel, timed)
        }
    };
    debug_assert!(!timed);
    // SAFETY: the caller's promises.
    unsafe {
        run(
            kernel,
            m,
            n,
            k,
            dst,
            dst_cs,
            dst_rs,
            read_dst,
            lhs,
            lhs_cs,
            lhs_rs,
            rhs,
            rhs_cs,
            rhs_rs,
            alpha,
            beta,
            parallelism,
        )
    }
}

/// One call of `kernel`'s gemm.
///
/// # Safety
/// As for [`gemm`].
#[allow(clippy::too_many_arguments)]
unsafe fn run(
    kernel: GemmKernel,
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_cs: isize,
    dst_rs: isize,
    read_dst: bool,
    lhs: *const f32,
    lhs_cs: isize,
    lhs_rs: isize,
    rhs: *const f32,
    rhs_cs: isize,
    rhs_rs: isize,
    alpha: f32,
    beta: f32,
    parallelism: gemm::Parallelism,
) {
    match kernel {
        // SAFETY: the caller's promises; gemm 0.19 picks AVX-512 on this CPU.
        GemmKernel::Avx512 => unsafe {
            gemm::gemm(
                m,
                n,
                k,
                dst,
                dst_cs,
                dst_rs,
                read_dst,
                lhs,
                lhs_cs,
                lhs_rs,
                rhs,
                rhs_cs,
                rhs_rs,
                alpha,
                beta,
                false,
                false,
                false,
                parallelism,
            )
        },
        GemmKernel::Avx2 => {
            let parallelism = match parallelism {
                gemm::Parallelism::Rayon(t) => gemm_common_avx2::Parallelism::Rayon(t),
                _ => gemm_common_avx2::Parallelism::None,
            };
            let f = gemm_f32_avx2::gemm::f32::get_gemm_fn();
            // SAFETY: the caller's promises; gemm-f32 0.18 runs AVX2 + FMA (or scalar).
            unsafe {
                f(
                    m,
                    n,
                    k,
                    dst,
                    dst_cs,
                    dst_rs,
                    read_dst,
                    lhs,
                    lhs_cs,
                    lhs_rs,
                    rhs,
                    rhs_cs,
                    rhs_rs,
                    alpha,
                    beta,
                    false,
                    false,
                    false,
                    parallelism,
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Both kernels compute the same product (within rounding), for every layout.
    #[test]
    fn both_kernels_agree_with_the_textbook_loop() {
        let (m, n, k) = (37, 29, 45);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i as f32 * 0.53).cos()).collect();
        let want: Vec<f32> = (0..m * n)
            .map(|ij| {
                (0..k)
                    .map(|p| a[(ij / n) * k + p] * b[p * n + ij % n])
                    .sum()
            })
            .collect();
        let mut kernels = vec![GemmKernel::Avx2];
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            kernels.push(GemmKernel::Avx512);
        }
        for kernel in kernels {
            for par in [gemm::Parallelism::None, gemm::Parallelism::Rayon(2)] {
                let mut c = vec![f32::NAN; m * n];
                // SAFETY: a is m×k, b is k×n and c is m×n, all row-major.
                unsafe {
                    run(
                        kernel,
                        m,
                        n,
                        k,
                        c.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        a.as_ptr(),
                        1,
                        k as isize,
                        b.as_ptr(),
                        1,
                        n as isize,
                        1.0,
                        1.0,
                        par,
                    )
                };
                for (g, w) in c.iter().zip(&want) {
                    assert!((g - w).abs() < 1e-4, "{kernel:?}: {g} vs {w}");
                }
            }
        }
    }

    #[test]
    fn a_shape_is_decided_after_its_trials_and_kept() {
        let key = ShapeKey {
            m: 1 << 20,
            n: 3,
            k: 5,
            transposed: [false, true, false],
            threads: 7,
        };
        let mut runs = Vec::new();
        for _ in 0..2 * TRIALS {
            let (kernel, timed) = pick(key);
            assert!(timed);
            runs.push(kernel);
            // AVX-512 twice as fast per multiply-add.
            record(
                key,
                kernel,
                if kernel == GemmKernel::Avx512 {
                    1.0
                } else {
                    2.0
                },
            );
        }
        assert_eq!(
            runs.iter().filter(|&&k| k == GemmKernel::Avx2).count(),
            TRIALS
        );
        assert_eq!(pick(key), (GemmKernel::Avx512, false));
        assert!(chosen()
            .iter()
            .any(|(label, k)| label == &key.label() && *k == GemmKernel::Avx512));
    }

    #[test]
    fn choices_round_trip_through_the_file_for_the_same_cpu_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kernel-choices.json");
        let key = ShapeKey {
            m: 1024,
            n: 576,
            k: 1536,
            transposed: [false, false, true],
            threads: 2,
        };
        let choices = Choices {
            cpu: "CPU A".into(),
            shapes: HashMap::from([(key, Choice::Chosen(GemmKernel::Avx512, Some((2.0, 1.0))))]),
        };
        save(&path, &choices);
        let back = load(&path, "CPU A");
        // A saved shape is checked again, starting from its saved best times.
        assert!(matches!(
            back.get(&key),
            Some(Choice::Timing { avx2, avx512, saved: Some((t2, t5)) })
                if avx2.is_empty() && avx512.is_empty() && *t2 == 2.0 && *t5 == 1.0
        ));
        assert!(load(&path, "CPU B").is_empty());
        // A file of the version before, with kernels but no times, is timed afresh.
        std::fs::write(
            &path,
            r#"{"cpu":"CPU A","shapes":[{"m":1024,"n":576,"k":2048,"transposed":[false,false,true],"threads":2,"kernel":"avx2"}]}"#,
        )
        .unwrap();
        assert!(load(&path, "CPU A").is_empty());
        std::fs::write(&path, "{ not json").unwrap();
        assert!(load(&path, "CPU A").is_empty());
    }

    #[test]
    fn a_choice_a_busy_run_skewed_is_corrected_by_a_quiet_recheck() {
        let key = ShapeKey {
            m: 1 << 21,
            n: 5,
            k: 3,
            transposed: [true, false, false],
            threads: 9,
        };
        // Saved by a run whose AVX-512 trials met a busy machine: AVX2 looked faster.
        {
            let mut guard = CHOICES.lock().unwrap();
            let choices = guard.get_or_insert_with(|| Choices {
                cpu: "test".into(),
                shapes: HashMap::new(),
            });
            choices.shapes.insert(
                key,
                Choice::Timing {
                    avx2: Vec::new(),
                    avx512: Vec::new(),
                    saved: Some((2.0, 3.0)),
                },
            );
        }
        // This run is quiet: AVX-512 twice as fast as AVX2's best.
        for _ in 0..2 * RECHECK_TRIALS {
            let (kernel, timed) = pick(key);
            assert!(timed);
            let t = match kernel {
                GemmKernel::Avx512 => 1.0,
                GemmKernel::Avx2 => 2.5,
            };
            record(key, kernel, t);
        }
        assert_eq!(pick(key), (GemmKernel::Avx512, false));
        let guard = CHOICES.lock().unwrap();
        let best = guard.as_ref().and_then(|c| match c.shapes.get(&key) {
            Some(Choice::Chosen(_, times)) => *times,
            _ => None,
        });
        // The best of each over both runs.
        assert_eq!(best, Some((2.0, 1.0)));
    }
}
