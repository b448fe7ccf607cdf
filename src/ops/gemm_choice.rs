//! Which f32 gemm kernel each product shape runs on: gemm-f32 0.18's AVX2 + FMA kernels,
//! the gemm crate 0.19's own choice for this CPU (AVX-512 where the CPU has it, else its
//! AVX2 kernels), the studio's packed kernel ([`super::packed_gemm`], on its AVX2 and,
//! where the CPU has it, its AVX-512 micro-kernel: two candidates), its kernel
//! for an inner size of at most 32 ([`super::rank_gemm`], the adapter's rank-`r`
//! products), its kernel for at most 16 rows and a long inner size
//! ([`super::outer_gemm`], the adapter's weight gradients), or (for `x · Wᵀ` with both
//! operands' rows contiguous, on AVX-512 or AVX2) its dot-product kernel
//! ([`super::dot_gemm`]), chosen on this machine by timing, never by a constant.
//!
//! The two crate versions implement the same algorithm with different kernels, blocking
//! and packing, and neither wins everywhere: on AMD Zen 3 (AVX2 only) 0.19's kernels
//! trained the default model 1.2–1.5× as fast as 0.18's; on Zen 4, which splits 512-bit operations
//! in two, 0.18's AVX2 beat 0.19's AVX-512 on thin products; a prompt of a few rows can
//! favour the dot kernel. So the first calls of each shape take turns on the candidates
//! and time themselves, the fastest per FLOP is kept, the choice is logged, and the
//! choices are kept on disk for this CPU (`kernel-choices.json` in the data directory)
//! with each kernel's best time.
//!
//! A busy machine only ever makes a kernel look slower than it is, so the best time over
//! every trial ever taken converges on the quiet figure: each later run times a saved shape
//! once more on each kernel and decides on the best times of all runs together. A choice
//! that a neighbour's build skewed is corrected by the next quiet run instead of being kept.
//! `FINETUNE_STUDIO_GEMM=gemm018|gemm019|dot|packed|packed512` pins one kernel for
//! comparisons (the dot kernel where the layout and the CPU allow it, the packed ones where
//! the CPU has AVX2 and FMA or AVX-512F, gemm 0.19 elsewhere); `FINETUNE_STUDIO_GEMM_PROFILE=1` sums each product's
//! time by exact shape and kernel ([`profile`]; `bench_train` prints it).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

mod small;

/// The kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GemmKernel {
    /// gemm-f32 0.18's AVX2 + FMA kernels.
    Gemm018Avx2,
    /// The gemm crate 0.19, on the best kernels it has for this CPU.
    Gemm019,
    /// [`super::dot_gemm`]: `x · Wᵀ` as dot products of contiguous rows (AVX-512 or AVX2).
    Dot,
    /// [`super::packed_gemm`]: packed operands, a 6 × 16 AVX2 micro-kernel.
    Packed,
    /// [`super::packed_gemm`] on its 12 × 32 AVX-512 micro-kernel.
    Packed512,
    /// [`super::rank_gemm`]: a short inner size (an adapter's rank), `dst` and `rhs`
    /// row-major, on AVX2.
    Rank,
    /// [`super::outer_gemm`]: at most 16 rows of `lhs` and a long inner size (an
    /// adapter's weight gradients), `dst` and `rhs` row-major, on AVX-512.
    Outer,
}

impl GemmKernel {
    /// Every kernel (the order of the file's time keys).
    const ALL: [GemmKernel; 7] = [
        GemmKernel::Gemm018Avx2,
        GemmKernel::Gemm019,
        GemmKernel::Dot,
        GemmKernel::Packed,
        GemmKernel::Packed512,
        GemmKernel::Rank,
        GemmKernel::Outer,
    ];

    pub fn label(self) -> &'static str {
        match self {
            GemmKernel::Gemm018Avx2 => "gemm018",
            GemmKernel::Gemm019 => "gemm019",
            GemmKernel::Dot => "dot",
            GemmKernel::Packed => "packed",
            GemmKernel::Packed512 => "packed512",
            GemmKernel::Rank => "rank",
            GemmKernel::Outer => "outer",
        }
    }
    fn from_label(s: &str) -> Option<Self> {
        match s {
            "gemm018" => Some(GemmKernel::Gemm018Avx2),
            "gemm019" => Some(GemmKernel::Gemm019),
            "dot" => Some(GemmKernel::Dot),
            "packed" => Some(GemmKernel::Packed),
            "packed512" => Some(GemmKernel::Packed512),
            "rank" => Some(GemmKernel::Rank),
            "outer" => Some(GemmKernel::Outer),
            _ => None,
        }
    }
    /// The key of its best time in the file.
    fn time_key(self) -> String {
        format!("{}_s_per_mac", self.label())
    }
}

/// Timed calls of each kernel before a new shape's choice is made.
const TRIALS: usize = 3;
/// Timed calls of each kernel, in a later run, for a shape saved with its best times.
const RECHECK_TRIALS: usize = 1;
/// Timed calls of each kernel that took page faults and are set aside (not counted as
/// trials) before such calls count after all. A product whose output or packing buffers are
/// first touched pays the kernel for fresh pages inside the call: on the default model's
/// first training step that made every kernel look 15–55 % slower than in the steps after
/// it, by amounts that have nothing to do with the kernel (AMD Zen 4, 2026-12-07: gemm-f32
/// 0.18 was chosen for the down projection at 132 GFLOP/s where the AVX-512 packed kernel
/// runs it at 184). Setting them aside moves the trials to the steps after the first,
/// where the heap holds its pages; a product that faults on every call is still decided,
/// after this many.
const FAULTED_TRIALS_SET_ASIDE: usize = 8;
/// Products below this many multiply-adds (a few microseconds) are not timed where they
/// run: [`small`] probes their kernel on scratch operands instead.
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
    /// Whether the product is one the dot kernel computes: rows of dst, lhs and rhsᵀ
    /// contiguous, dst's rows apart, and dst either written or added to unscaled.
    dot: bool,
}

impl ShapeKey {
    fn label(&self) -> String {
        format!(
            "m{} n{} k{} {} t{}{}",
            self.m,
            self.n,
            self.k,
            layout_label(self.transposed),
            self.threads,
            if self.dot { " dot" } else { "" }
        )
    }

    /// The kernels that can run this shape here.
    fn candidates(&self) -> Vec<GemmKernel> {
        let mut out = vec![GemmKernel::Gemm018Avx2, GemmKernel::Gemm019];
        if self.dot && super::dot_gemm::available() {
            out.push(GemmKernel::Dot);
        }
        if super::packed_gemm::available() {
            out.push(GemmKernel::Packed);
        }
        if super::packed_gemm::Micro::Avx512.available() {
            out.push(GemmKernel::Packed512);
        }
        // The key's k is rounded up to a power of two, so every product of the shape has
        // an inner size of at most MAX_K.
        if self.k <= super::rank_gemm::MAX_K
            && !self.transposed[0]
            && !self.transposed[2]
            && super::rank_gemm::available()
        {
            out.push(GemmKernel::Rank);
        }
        // The key's m is rounded up to a power of two, so every product of the shape has
        // at most MAX_M rows.
        if self.m <= super::outer_gemm::MAX_M
            && !self.transposed[0]
            && !self.transposed[2]
            && super::outer_gemm::available()
        {
            out.push(GemmKernel::Outer);
        }
        out
    }
}

/// Best seconds per multiply-add of each kernel.
type Times = BTreeMap<GemmKernel, f64>;

#[derive(Debug, Clone)]
enum Choice {
    Timing {
        /// Seconds per multiply-add of each timed call so far, per kernel.
        trials: BTreeMap<GemmKernel, Vec<f64>>,
        /// Timed calls set aside because they took page faults, per kernel.
        set_aside: BTreeMap<GemmKernel, usize>,
        /// The best seconds per multiply-add saved by earlier runs.
        saved: Times,
    },
    /// The kernel, and the best seconds per multiply-add of each (empty for choices of
    /// unit tests).
    Chosen(GemmKernel, Times),
}

impl Choice {
    fn timing(saved: Times) -> Self {
        Choice::Timing {
            trials: BTreeMap::new(),
            set_aside: BTreeMap::new(),
            saved,
        }
    }
}

struct Choices {
    cpu: String,
    shapes: HashMap<ShapeKey, Choice>,
}

static CHOICES: Mutex<Option<Choices>> = Mutex::new(None);

/// Whether this CPU and the environment leave kernels to choose from.
fn choices_available() -> bool {
    static BOTH: OnceLock<bool> = OnceLock::new();
    *BOTH.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            // gemm 0.19 runs its AVX2 kernels where AVX-512 is missing: two candidates on
            // any CPU with AVX2 and FMA.
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && pinned().is_none()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            false
        }
    })
}

/// The kernel `FINETUNE_STUDIO_GEMM` pins, if any (the dot and packed kernels only where
/// the CPU runs them; gemm 0.19 in their place elsewhere).
fn pinned() -> Option<GemmKernel> {
    static PINNED: OnceLock<Option<GemmKernel>> = OnceLock::new();
    *PINNED.get_or_init(|| {
        let asked = std::env::var("FINETUNE_STUDIO_GEMM").ok()?;
        Some(match GemmKernel::from_label(&asked)? {
            GemmKernel::Dot if !super::dot_gemm::available() => GemmKernel::Gemm019,
            GemmKernel::Packed if !super::packed_gemm::available() => GemmKernel::Gemm019,
            GemmKernel::Packed512 if !super::packed_gemm::Micro::Avx512.available() => {
                GemmKernel::Gemm019
            }
            // Only some shapes can run on it: not a kernel for every product.
            GemmKernel::Rank | GemmKernel::Outer => GemmKernel::Gemm019,
            k => k,
        })
    })
}

fn cache_path() -> std::path::PathBuf {
    crate::paths::data_dir().join("kernel-choices.json")
}

/// The choices saved for this CPU (none when the file is missing, unreadable or written on
/// another CPU).
fn load(path: &std::path::Path, cpu: &str) -> HashMap<ShapeKey, Choice> {
    let Some(v) = super::tuning_file::read(path, cpu) else {
        return HashMap::new();
    };
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
                // Files written before the dot kernel have no flag: not its layout.
                dot: entry["dot"].as_bool().unwrap_or(false),
            })
        })();
        let saved: Times = GemmKernel::ALL
            .into_iter()
            .filter_map(|k| Some((k, super::tuning_file::seconds(entry, &k.time_key())?)))
            .collect();
        // A file of an older version, with no times, is timed afresh.
        let timed = saved.contains_key(&GemmKernel::Gemm018Avx2)
            && saved.contains_key(&GemmKernel::Gemm019);
        if let (Some(key), true) = (key, timed) {
            out.insert(key, Choice::timing(saved));
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
        .filter_map(|(key, c)| {
            // Saved times not yet checked in this run are kept as they were.
            let (kernel, times) = match c {
                Choice::Chosen(kernel, times) if !times.is_empty() => (*kernel, times),
                Choice::Timing { saved, .. } if !saved.is_empty() => (fastest(saved)?, saved),
                _ => return None,
            };
            let mut entry = serde_json::json!({
                "m": key.m, "n": key.n, "k": key.k, "transposed": key.transposed,
                "threads": key.threads, "dot": key.dot, "kernel": kernel.label(),
            });
            for (k, t) in times {
                entry[k.time_key()] = (*t).into();
            }
            Some(entry)
        })
        .collect();
    super::tuning_file::write(path, &choices.cpu, serde_json::json!({ "shapes": shapes }));
}

/// Page faults this process has taken so far that the kernel served without reading from
/// disk (first touches of fresh memory, mostly); `None` where the count is unavailable.
fn minor_page_faults() -> Option<u64> {
    #[cfg(unix)]
    {
        // SAFETY: `getrusage` writes one `rusage` into the zeroed value it is given.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
        (rc == 0).then(|| u64::try_from(usage.ru_minflt).unwrap_or(0))
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// The kernel with the lowest time.
fn fastest(times: &Times) -> Option<GemmKernel> {
    times
        .iter()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(k, _)| *k)
}

/// The kernel for `key` and whether this call is a timed trial.
fn pick(key: ShapeKey) -> (GemmKernel, bool) {
    let Ok(mut guard) = CHOICES.lock() else {
        return (GemmKernel::Gemm018Avx2, false);
    };
    let choices = guard.get_or_insert_with(|| {
        let cpu = crate::sys::cpu_model();
        let shapes = load(&cache_path(), &cpu);
        Choices { cpu, shapes }
    });
    let choice = choices
        .shapes
        .entry(key)
        .or_insert_with(|| Choice::timing(Times::new()));
    match choice {
        Choice::Chosen(k, _) => (*k, false),
        Choice::Timing {
            trials, set_aside, ..
        } => {
            // Take turns, in order, so that every kernel sees the same conditions; a call
            // set aside was a turn too.
            let count = |k: &GemmKernel| {
                trials.get(k).map_or(0, Vec::len) + set_aside.get(k).copied().unwrap_or(0)
            };
            let next = key
                .candidates()
                .into_iter()
                .min_by_key(count)
                .unwrap_or(GemmKernel::Gemm018Avx2);
            (next, true)
        }
    }
}

/// Records a timed call of `kernel` on `key`, deciding the shape once every candidate has
/// run [`TRIALS`] times ([`RECHECK_TRIALS`] for one with a saved time), on the best time of
/// each over this run's trials and the saved ones. A call that `faulted` is set aside
/// while the kernel has had fewer than [`FAULTED_TRIALS_SET_ASIDE`] set aside.
fn record(key: ShapeKey, kernel: GemmKernel, seconds_per_mac: f64, faulted: bool) {
    let Ok(mut guard) = CHOICES.lock() else {
        return;
    };
    let Some(choices) = guard.as_mut() else {
        return;
    };
    let Some(Choice::Timing {
        trials,
        set_aside,
        saved,
    }) = choices.shapes.get_mut(&key)
    else {
        return;
    };
    let aside = set_aside.entry(kernel).or_default();
    if faulted && *aside < FAULTED_TRIALS_SET_ASIDE {
        *aside += 1;
        return;
    }
    trials.entry(kernel).or_default().push(seconds_per_mac);
    let candidates = key.candidates();
    let done = candidates.iter().all(|k| {
        let needed = if saved.contains_key(k) {
            RECHECK_TRIALS
        } else {
            TRIALS
        };
        trials.get(k).map_or(0, Vec::len) >= needed
    });
    if !done {
        return;
    }
    let best: Times = candidates
        .iter()
        .map(|k| {
            let saved = saved.get(k).copied().unwrap_or(f64::INFINITY);
            let t = trials
                .get(k)
                .into_iter()
                .flatten()
                .copied()
                .fold(saved, f64::min);
            (*k, t)
        })
        .collect();
    let Some(chosen) = fastest(&best) else {
        return;
    };
    let gflops = |t: f64| 2.0 / t / 1e9;
    let each: Vec<String> = best
        .iter()
        .map(|(k, t)| format!("{} {:.0}", k.label(), gflops(*t)))
        .collect();
    tracing::info!(
        "gemm {}: {} ({:.0} GFLOP/s; {})",
        key.label(),
        chosen.label(),
        gflops(best[&chosen]),
        each.join(", ")
    );
    choices.shapes.insert(key, Choice::Chosen(chosen, best));
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

/// A product's exact shape and kernel, as the profile counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProfiledCall {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// Which operands are read column-major (dst, lhs, rhs).
    pub transposed: [bool; 3],
    pub kernel: GemmKernel,
}

impl ProfiledCall {
    /// `m1024 n576 k1536 NNT packed`.
    pub fn label(&self) -> String {
        format!(
            "m{} n{} k{} {} {}",
            self.m,
            self.n,
            self.k,
            layout_label(self.transposed),
            self.kernel.label()
        )
    }
}

/// `T` for each operand (dst, lhs, rhs) read column-major, `N` for each read row-major.
fn layout_label(transposed: [bool; 3]) -> String {
    transposed
        .iter()
        .map(|&t| if t { 'T' } else { 'N' })
        .collect()
}

/// Seconds and calls of each product since the start, when `FINETUNE_STUDIO_GEMM_PROFILE`
/// is set (the benchmarks print it).
static PROFILE: Mutex<Option<HashMap<ProfiledCall, (f64, usize)>>> = Mutex::new(None);

/// Whether products are profiled (`FINETUNE_STUDIO_GEMM_PROFILE` set, to anything).
fn profiling() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| std::env::var_os("FINETUNE_STUDIO_GEMM_PROFILE").is_some())
}

/// Adds its call's time to the profile when dropped.
struct Profiled {
    start: Instant,
    call: ProfiledCall,
}

impl Drop for Profiled {
    fn drop(&mut self) {
        if let Ok(mut guard) = PROFILE.lock() {
            let entry = guard
                .get_or_insert_with(HashMap::new)
                .entry(self.call)
                .or_insert((0.0, 0));
            entry.0 += self.start.elapsed().as_secs_f64();
            entry.1 += 1;
        }
    }
}

/// The profile (`(call, seconds, calls)`, most time first; empty unless
/// `FINETUNE_STUDIO_GEMM_PROFILE` is set). Timed trials of the choice are not in it.
pub fn profile() -> Vec<(ProfiledCall, f64, usize)> {
    let Ok(guard) = PROFILE.lock() else {
        return Vec::new();
    };
    let mut rows: Vec<_> = guard
        .iter()
        .flatten()
        .map(|(call, (seconds, calls))| (*call, *seconds, *calls))
        .collect();
    rows.sort_by(|a, b| b.1.total_cmp(&a.1));
    rows
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
    // The dot kernel computes `dst (+)= beta · lhs · rhs` with rows of dst and lhs and
    // columns of rhs contiguous (rhs is a row-major Wᵀ).
    // Its tasks write disjoint columns in parallel, so dst's rows must not overlap.
    let dot_layout = dst_cs == 1
        && lhs_cs == 1
        && rhs_rs == 1
        && (alpha == 1.0 || !read_dst)
        && (m <= 1 || dst_rs >= n as isize)
        && lhs_rs >= 0
        && rhs_cs >= 0;
    let key = ShapeKey {
        m: m.next_power_of_two(),
        n: n.next_power_of_two(),
        k: k.next_power_of_two(),
        transposed: [dst_cs != 1, lhs_cs != 1, rhs_cs != 1],
        threads: match parallelism {
            gemm::Parallelism::Rayon(t) => t,
            _ => 1,
        },
        dot: dot_layout,
    };
    let (kernel, timed) = match pinned() {
        Some(GemmKernel::Dot) if !dot_layout => (GemmKernel::Gemm019, false),
        Some(k) => (k, false),
        // An empty product (k = 0 shares its key with k = 1) on a kernel that takes every
        // degenerate size.
        None if !choices_available() || macs == 0 => (GemmKernel::Gemm018Avx2, false),
        None if macs < TIMED_MIN_MACS => {
            let call = small::Call {
                m,
                n,
                k,
                read_dst,
                alpha,
                beta,
                parallelism,
            };
            (small::kernel(key, call), false)
        }
        None => {
            let (kernel, timed) = pick(key);
            if timed {
                let faults = minor_page_faults();
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
                let seconds = t.elapsed().as_secs_f64();
                let faulted = faults
                    .zip(minor_page_faults())
                    .is_some_and(|(before, after)| after > before);
                record(key, kernel, seconds / macs.max(1) as f64, faulted);
                return;
            }
            (kernel, timed)
        }
    };
    debug_assert!(!timed);
    let _profiled = profiling().then(|| Profiled {
        start: Instant::now(),
        call: ProfiledCall {
            m,
            n,
            k,
            transposed: [dst_cs != 1, lhs_cs != 1, rhs_cs != 1],
            kernel,
        },
    });
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
    // The threads as the studio's own kernels take them.
    use super::packed_gemm::{Micro, Strided};
    let threads = match parallelism {
        gemm::Parallelism::Rayon(t) => t.max(1),
        _ => 1,
    };
    match kernel {
        // SAFETY: the caller's promises, and the layout checked by `gemm` before the dot
        // kernel is a candidate: element (i, p) of lhs at `lhs + i·lhs_rs + p`, (p, j) of
        // rhs at `rhs + j·rhs_cs + p`, (i, j) of dst at `dst + i·dst_rs + j`.
        GemmKernel::Dot => unsafe {
            super::dot_gemm::x_wt(
                (m, n, k),
                (lhs, lhs_rs as usize),
                (rhs, rhs_cs as usize),
                (dst, dst_rs as usize),
                (beta, read_dst),
                matches!(parallelism, gemm::Parallelism::Rayon(t) if t != 1),
            )
        },
        GemmKernel::Packed | GemmKernel::Packed512 | GemmKernel::Rank | GemmKernel::Outer => {
            let (dst, lhs, rhs) = (
                Strided::new(dst, dst_rs, dst_cs),
                Strided::new(lhs, lhs_rs, lhs_cs),
                Strided::new(rhs, rhs_rs, rhs_cs),
            );
            let sizes = (m, n, k);
            // SAFETY: the caller's promises; the packed kernel is a candidate (or pinned)
            // only where the CPU runs its micro-kernel (AVX2 and FMA, or AVX-512F), the
            // rank kernel only where it has AVX2 and FMA and where k is at most its MAX_K
            // and dst and rhs have unit column strides, the outer kernel only where it has
            // AVX-512F and where m is at most its MAX_M and dst and rhs have unit column
            // strides.
            unsafe {
                match kernel {
                    GemmKernel::Packed | GemmKernel::Packed512 => {
                        let micro = match kernel {
                            GemmKernel::Packed => Micro::Avx2,
                            _ => Micro::Avx512,
                        };
                        super::packed_gemm::gemm(
                            micro,
                            sizes,
                            dst,
                            read_dst,
                            lhs,
                            rhs,
                            (alpha, beta),
                            threads,
                        )
                    }
                    GemmKernel::Outer => super::outer_gemm::gemm(
                        sizes,
                        dst,
                        read_dst,
                        lhs,
                        rhs,
                        (alpha, beta),
                        threads,
                    ),
                    _ => super::rank_gemm::gemm(
                        sizes,
                        dst,
                        read_dst,
                        lhs,
                        rhs,
                        (alpha, beta),
                        threads,
                    ),
                }
            }
        }
        // SAFETY: the caller's promises; gemm 0.19 picks its kernels for this CPU.
        GemmKernel::Gemm019 => unsafe {
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
        GemmKernel::Gemm018Avx2 => {
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

    /// Every kernel computes the same product (within rounding), in the layout each takes:
    /// all three on `x · Wᵀ` (W row-major), the gemm crate's also on row-major operands.
    #[test]
    fn every_kernel_agrees_with_the_textbook_loop() {
        let (m, n, k) = (37, 29, 45);
        let a: Vec<f32> = (0..m * k).map(|i| (i as f32 * 0.37).sin()).collect();
        // W [n, k], row-major: column j of the right-hand side is row j of W.
        let w: Vec<f32> = (0..n * k).map(|i| (i as f32 * 0.53).cos()).collect();
        let want: Vec<f32> = (0..m * n)
            .map(|ij| {
                (0..k)
                    .map(|p| a[(ij / n) * k + p] * w[(ij % n) * k + p])
                    .sum()
            })
            .collect();
        // The same right-hand side stored row-major as [k, n].
        let b: Vec<f32> = (0..k * n).map(|i| w[(i % n) * k + i / n]).collect();
        let mut kernels = vec![GemmKernel::Gemm018Avx2, GemmKernel::Gemm019];
        if super::super::dot_gemm::available() {
            kernels.push(GemmKernel::Dot);
        }
        if super::super::packed_gemm::available() {
            kernels.push(GemmKernel::Packed);
        }
        if super::super::packed_gemm::Micro::Avx512.available() {
            kernels.push(GemmKernel::Packed512);
        }
        for kernel in kernels {
            for par in [gemm::Parallelism::None, gemm::Parallelism::Rayon(2)] {
                let layouts: &[(&[f32], isize, isize)] = if kernel == GemmKernel::Dot {
                    &[(&w, k as isize, 1)]
                } else {
                    &[(&w, k as isize, 1), (&b, 1, n as isize)]
                };
                for &(rhs, rhs_cs, rhs_rs) in layouts {
                    // `dst = dst + beta · a · rhs` on a row-major dst starting at `start`.
                    let product = |start: f32, read_dst: bool, beta: f32| {
                        let mut c = vec![start; m * n];
                        // SAFETY: a is m×k row-major, rhs holds k×n values at the strides
                        // given, c is m×n row-major.
                        unsafe {
                            run(
                                kernel,
                                m,
                                n,
                                k,
                                c.as_mut_ptr(),
                                1,
                                n as isize,
                                read_dst,
                                a.as_ptr(),
                                1,
                                k as isize,
                                rhs.as_ptr(),
                                rhs_cs,
                                rhs_rs,
                                1.0,
                                beta,
                                par,
                            )
                        };
                        c
                    };
                    // Added onto dst, scaled: c = 1 + 0.5 · a · w.
                    for (g, w) in product(1.0, true, 0.5).iter().zip(&want) {
                        assert!(
                            (g - 1.0 - 0.5 * w).abs() < 1e-4,
                            "{kernel:?} added: {g} vs {w}"
                        );
                    }
                    for (g, w) in product(f32::NAN, false, 1.0).iter().zip(&want) {
                        assert!((g - w).abs() < 1e-4, "{kernel:?}: {g} vs {w}");
                    }
                }
            }
        }
    }

    fn key(m: usize, dot: bool) -> ShapeKey {
        ShapeKey {
            m,
            n: 3,
            k: 5,
            transposed: [false, true, false],
            threads: 7,
            dot,
        }
    }

    /// Takes `calls` turns on `key`, each kernel taking `time(kernel)` per multiply-add;
    /// returns the kernels that ran.
    fn take_turns(
        key: ShapeKey,
        calls: usize,
        time: impl Fn(GemmKernel) -> f64,
    ) -> Vec<GemmKernel> {
        let mut runs = Vec::new();
        for _ in 0..calls {
            let (kernel, timed) = pick(key);
            assert!(timed);
            runs.push(kernel);
            record(key, kernel, time(kernel), false);
        }
        runs
    }

    #[test]
    fn a_shape_is_decided_after_its_trials_and_kept() {
        let key = key(1 << 20, false);
        // gemm 0.19 twice as fast per multiply-add.
        let runs = take_turns(key, key.candidates().len() * TRIALS, |k| {
            if k == GemmKernel::Gemm019 {
                1.0
            } else {
                2.0
            }
        });
        assert_eq!(
            runs.iter()
                .filter(|&&k| k == GemmKernel::Gemm018Avx2)
                .count(),
            TRIALS
        );
        assert_eq!(pick(key), (GemmKernel::Gemm019, false));
        assert!(chosen()
            .iter()
            .any(|(label, k)| label == &key.label() && *k == GemmKernel::Gemm019));
    }

    /// Calls that took page faults (a first step's fresh buffers) do not decide: gemm 0.19,
    /// slow while it faults and fastest after, is chosen on its calls without faults.
    #[test]
    fn calls_that_page_faulted_are_set_aside() {
        let key = key(1 << 23, false);
        let candidates = key.candidates();
        let faulted_turns = candidates.len() * 2;
        let mut calls = 0;
        while let (kernel, true) = pick(key) {
            let faulted = calls < faulted_turns;
            let time = match (kernel, faulted) {
                (GemmKernel::Gemm019, true) => 10.0,
                (GemmKernel::Gemm019, false) => 1.0,
                _ => 2.0,
            };
            record(key, kernel, time, faulted);
            calls += 1;
            assert!(
                calls <= 10 * candidates.len(),
                "the shape was never decided"
            );
        }
        // Every kernel took two turns that were set aside, then its trials.
        assert_eq!(calls, candidates.len() * (2 + TRIALS));
        assert_eq!(pick(key), (GemmKernel::Gemm019, false));
    }

    /// A shape whose every call faults is still decided, once each kernel has had its
    /// share set aside.
    #[test]
    fn a_shape_that_always_faults_is_decided_all_the_same() {
        let key = key(1 << 24, false);
        let candidates = key.candidates();
        let mut calls = 0;
        while let (kernel, true) = pick(key) {
            let time = if kernel == GemmKernel::Gemm019 {
                1.0
            } else {
                2.0
            };
            record(key, kernel, time, true);
            calls += 1;
            assert!(
                calls <= 100 * candidates.len(),
                "the shape was never decided"
            );
        }
        assert_eq!(
            calls,
            candidates.len() * (FAULTED_TRIALS_SET_ASIDE + TRIALS)
        );
        assert_eq!(pick(key), (GemmKernel::Gemm019, false));
    }

    /// In the dot kernel's layout it takes its turns too, and wins where it is fastest.
    #[test]
    fn the_dot_kernel_competes_in_its_layout() {
        let key = key(1 << 22, true);
        let candidates = key.candidates();
        let has_dot = candidates.contains(&GemmKernel::Dot);
        assert_eq!(has_dot, super::super::dot_gemm::available());
        let time = |k: GemmKernel| match k {
            GemmKernel::Dot => 0.5,
            GemmKernel::Gemm019 => 1.0,
            GemmKernel::Packed => 1.5,
            GemmKernel::Packed512 => 1.75,
            GemmKernel::Gemm018Avx2 => 2.0,
            GemmKernel::Rank => 3.0,
            GemmKernel::Outer => 3.5,
        };
        let runs = take_turns(key, candidates.len() * TRIALS, time);
        for k in &candidates {
            assert_eq!(runs.iter().filter(|&r| r == k).count(), TRIALS, "{k:?}");
        }
        let want = if has_dot {
            GemmKernel::Dot
        } else {
            GemmKernel::Gemm019
        };
        assert_eq!(pick(key), (want, false));
    }

    /// The rank kernel takes its turns on short inner sizes with `dst` and `rhs`
    /// row-major, and is never offered a product it cannot run.
    #[test]
    fn the_rank_kernel_is_a_candidate_for_short_inner_sizes_only() {
        let mut short = key(1024, false);
        short.k = 16;
        let long = ShapeKey { k: 64, ..short };
        let column_major_rhs = ShapeKey {
            transposed: [false, true, true],
            ..short
        };
        let column_major_dst = ShapeKey {
            transposed: [true, true, false],
            ..short
        };
        offered_only_where_it_fits(
            GemmKernel::Rank,
            short,
            super::super::rank_gemm::available(),
            [long, column_major_rhs, column_major_dst],
        );
    }

    /// `kernel` is a candidate of `fits` exactly where the CPU runs it (`available`), and
    /// of none of `misfits`.
    fn offered_only_where_it_fits(
        kernel: GemmKernel,
        fits: ShapeKey,
        available: bool,
        misfits: [ShapeKey; 3],
    ) {
        assert_eq!(fits.candidates().contains(&kernel), available, "{fits:?}");
        for other in misfits {
            assert!(
                !other.candidates().contains(&kernel),
                "{kernel:?}: {other:?}"
            );
        }
    }

    /// The outer-product kernel takes its turns on at most 16 rows with `dst` and `rhs`
    /// row-major, where the CPU has AVX-512F, and is never offered a product it cannot run.
    #[test]
    fn the_outer_kernel_is_a_candidate_for_short_left_operands_only() {
        let mut short = key(1 << 22, false);
        short.m = 16;
        let tall = ShapeKey { m: 32, ..short };
        let column_major_rhs = ShapeKey {
            transposed: [false, false, true],
            ..short
        };
        let column_major_dst = ShapeKey {
            transposed: [true, false, false],
            ..short
        };
        offered_only_where_it_fits(
            GemmKernel::Outer,
            short,
            super::super::outer_gemm::available(),
            [tall, column_major_rhs, column_major_dst],
        );
    }

    #[test]
    fn choices_round_trip_through_the_file_for_the_same_cpu_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kernel-choices.json");
        let mut k = key(1024, true);
        k.transposed = [false, false, true];
        // Every kernel's best time comes back.
        let times: Times = GemmKernel::ALL
            .into_iter()
            .zip([2.0, 1.0, 0.5, 0.75, 0.875, 0.625])
            .collect();
        let choices = Choices {
            cpu: "CPU A".into(),
            shapes: HashMap::from([(k, Choice::Chosen(GemmKernel::Dot, times.clone()))]),
        };
        save(&path, &choices);
        let back = load(&path, "CPU A");
        // A saved shape is checked again, starting from its saved best times.
        assert!(matches!(
            back.get(&k),
            Some(Choice::Timing { trials, saved, .. }) if trials.is_empty() && *saved == times
        ));
        assert!(load(&path, "CPU B").is_empty());
        // A file written before the dot kernel: no flag, no dot time, still read.
        std::fs::write(
            &path,
            r#"{"cpu":"CPU A","shapes":[{"m":1024,"n":576,"k":2048,"transposed":[false,false,true],"threads":2,"kernel":"gemm018","gemm018_s_per_mac":2.0,"gemm019_s_per_mac":3.0}]}"#,
        )
        .unwrap();
        let old = load(&path, "CPU A");
        assert!(matches!(
            old.values().next(),
            Some(Choice::Timing { saved, .. }) if saved.len() == 2
        ));
        assert!(!old.keys().next().unwrap().dot);
        // A file of the version before that, with kernels but no times, is timed afresh.
        std::fs::write(
            &path,
            r#"{"cpu":"CPU A","shapes":[{"m":1024,"n":576,"k":2048,"transposed":[false,false,true],"threads":2,"kernel":"gemm018"}]}"#,
        )
        .unwrap();
        assert!(load(&path, "CPU A").is_empty());
        std::fs::write(&path, "{ not json").unwrap();
        assert!(load(&path, "CPU A").is_empty());
    }

    #[test]
    fn a_choice_a_busy_run_skewed_is_corrected_by_a_quiet_recheck() {
        let mut key = key(1 << 21, false);
        key.transposed = [true, false, false];
        // Saved by a run whose gemm 0.19 trials met a busy machine: 0.18 looked faster.
        {
            let mut guard = CHOICES.lock().unwrap();
            let choices = guard.get_or_insert_with(|| Choices {
                cpu: "test".into(),
                shapes: HashMap::new(),
            });
            choices.shapes.insert(
                key,
                Choice::timing(Times::from([
                    (GemmKernel::Gemm018Avx2, 2.0),
                    (GemmKernel::Gemm019, 3.0),
                ])),
            );
        }
        // This run is quiet: gemm 0.19 twice as fast as 0.18's best. A kernel with no saved
        // time (the packed ones, where the CPU has them) takes its full trials, the others
        // take turns with it meanwhile.
        let packed = super::super::packed_gemm::available();
        let packed512 = super::super::packed_gemm::Micro::Avx512.available();
        let fresh = usize::from(packed) + usize::from(packed512);
        let mut calls = 0;
        while let (kernel, true) = pick(key) {
            record(
                key,
                kernel,
                if kernel == GemmKernel::Gemm019 {
                    1.0
                } else {
                    2.5
                },
                false,
            );
            calls += 1;
            assert!(calls <= 4 * TRIALS, "the shape was never decided");
        }
        assert_eq!(
            calls,
            if fresh > 0 {
                (2 + fresh) * TRIALS
            } else {
                2 * RECHECK_TRIALS
            }
        );
        assert_eq!(pick(key), (GemmKernel::Gemm019, false));
        let guard = CHOICES.lock().unwrap();
        let best = guard.as_ref().and_then(|c| match c.shapes.get(&key) {
            Some(Choice::Chosen(_, times)) => Some(times.clone()),
            _ => None,
        });
        // The best of each over both runs.
        let mut want = Times::from([(GemmKernel::Gemm018Avx2, 2.0), (GemmKernel::Gemm019, 1.0)]);
        if packed {
            want.insert(GemmKernel::Packed, 2.5);
        }
        if packed512 {
            want.insert(GemmKernel::Packed512, 2.5);
        }
        assert_eq!(best, Some(want));
    }
}
