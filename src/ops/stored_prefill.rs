//! Which way a product of several input rows (a prompt, a batch) goes through a stored
//! weight: the integer kernels, as a decode step does (for Q4_K, Q5_K and Q6_K on AVX2,
//! tiles of eight weight rows by four input rows: `quant::kquant_tiles`); the weight
//! dequantized in panels into f32 gemm, as training does; (on AVX-512 or AVX2) dequantized
//! in small slices, each multiplied in the dot kernel while it is in L2; or, on AVX-512,
//! the AVX2 integer tiles of the K-quants against the VNNI kernels of one weight row.
//! Which is fastest depends on the CPU (how wide its integer dot products are against its
//! f32 FMA rate) and on the type and shape, so the first products of each kind (type, row
//! length, weight rows and input rows, the last two rounded up to a power of two) run
//! every way, timed, and the fastest (by the best of [`TRIALS`] timings of each, the
//! weights' pages touched first) is kept, logged, and saved for this CPU
//! (`prefill-choices.json` in the data directory, as the gemm kernel choices are), so that
//! only the first prompts on a new machine pay for timing every path. No CPU's answer is
//! written into the code. Decode steps
//! (fewer than [`PANEL_MIN_ROWS`] rows) always take the integer kernels.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use super::quant::StoredType;

/// Input rows from which a product may go through panels.
pub const PANEL_MIN_ROWS: usize = 8;

/// Products of a kind timed every way before its path is kept.
pub const TRIALS: usize = 2;

/// Products of a kind that an earlier run decided, timed every way once more: a busy
/// machine only ever makes a path look slower than it is, so the best times of every run
/// together converge on the quiet ones, and a choice a noisy first prompt skewed is
/// corrected by a later run instead of being kept (as `ops::gemm_choice` does).
const RECHECK_TRIALS: usize = 1;

/// The ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Path {
    Integer,
    Panels,
    /// Slices dequantized into the dot kernel (`ops::dot_gemm`).
    DotSlices,
    /// The K-quants' AVX2 integer tiles where the integer path takes AVX-512 kernels.
    IntegerTiles,
}

/// (type, row length, weight rows rounded up to a power of two, input rows rounded up to
/// a power of two). The weight's rows belong in it: a model's `k_proj` (512 rows) and its
/// `up_proj` (8192 rows) share type and row length, and on an Intel Xeon (family 6, model
/// 207) the first favoured the dequantized slices and the second the integer tiles.
type Key = (StoredType, usize, usize, usize);

/// A way to compute a product, to be timed by [`decide`].
pub type Candidate<'a> = (Path, Box<dyn FnOnce(&mut [f32]) + 'a>);

/// Best seconds of each path.
type Times = std::collections::BTreeMap<Path, f64>;

#[derive(Clone)]
enum Choice {
    /// The best seconds of each path so far, how many products were timed, and whether
    /// the kind was decided by an earlier run (then saved as that run's choice until this
    /// run decides it again).
    Timing { best: Times, n: usize, saved: bool },
    /// The path, and the best seconds of each path (empty where none were saved).
    Chosen(Path, Times),
}

static CHOICES: Mutex<Option<HashMap<Key, Choice>>> = Mutex::new(None);

/// The file that keeps the decisions.
pub const CHOICES_FILE: &str = "prefill-choices.json";

#[cfg_attr(test, allow(dead_code))]
fn cache_path() -> std::path::PathBuf {
    crate::paths::data_dir().join(CHOICES_FILE)
}

/// Bumped when a path's kernels change on some CPU, so that decisions timed on the old
/// ones are timed afresh (2: the dot kernel's AVX2 tiles; 3: the K-quants' AVX2 integer
/// tiles; 5: Q4_K's and Q6_K's tiles from their interleaved copies, built before timing;
/// 6: the 32-value types' integer path and their rows from their interleaved copies; 7:
/// decisions per weight size).
const KERNELS_VERSION: u32 = 7;

/// The decisions belong to a CPU, its thread count and this version's kernels.
#[cfg_attr(test, allow(dead_code))]
fn machine() -> String {
    format!(
        "{} / {} threads / finetune-studio {} / kernels {KERNELS_VERSION}",
        crate::sys::cpu_model(),
        rayon::current_num_threads(),
        env!("CARGO_PKG_VERSION")
    )
}

impl Path {
    fn label(self) -> &'static str {
        match self {
            Path::Integer => "integer",
            Path::Panels => "panels",
            Path::DotSlices => "dot-slices",
            Path::IntegerTiles => "integer-tiles",
        }
    }

    const ALL: [Path; 4] = [
        Path::Integer,
        Path::Panels,
        Path::DotSlices,
        Path::IntegerTiles,
    ];

    fn from_label(s: &str) -> Option<Self> {
        Path::ALL.into_iter().find(|p| p.label() == s)
    }

    /// The key of its best time in the file.
    fn time_key(self) -> String {
        format!("{}_s", self.label())
    }
}

/// The decisions saved for `cpu` (none when the file is missing, unreadable or another
/// CPU's or version's).
fn load(path: &std::path::Path, cpu: &str) -> HashMap<Key, Choice> {
    let Some(v) = super::tuning_file::read(path, cpu) else {
        return HashMap::new();
    };
    let mut out = HashMap::new();
    for e in v["choices"].as_array().into_iter().flatten() {
        let ty = e["type"]
            .as_str()
            .and_then(|n| StoredType::ALL.into_iter().find(|t| t.name() == n));
        let num = |k: &str| e[k].as_u64().map(|v| v as usize);
        let path = e["path"].as_str().and_then(Path::from_label);
        let sizes = (num("cols"), num("weight_rows"), num("rows"));
        let best: Times = Path::ALL
            .into_iter()
            .filter_map(|p| Some((p, super::tuning_file::seconds(e, &p.time_key())?)))
            .collect();
        if let (Some(ty), (Some(cols), Some(weight_rows), Some(rows)), Some(path)) =
            (ty, sizes, path)
        {
            // A kind saved with its times is timed once more; one without is kept.
            let choice = if best.is_empty() {
                Choice::Chosen(path, best)
            } else {
                Choice::Timing {
                    best,
                    n: TRIALS - RECHECK_TRIALS,
                    saved: true,
                }
            };
            out.insert(key(ty, cols, weight_rows, rows), choice);
        }
    }
    out
}

/// Writes the decisions made; a failed write is logged and costs a new timing next run.
fn save(path: &std::path::Path, cpu: &str, map: &HashMap<Key, Choice>) {
    let mut choices: Vec<serde_json::Value> = map
        .iter()
        .filter_map(|((ty, cols, weight_rows, rows), c)| {
            let (path, best) = match c {
                Choice::Chosen(p, best) => (*p, best),
                // Saved by an earlier run and not yet checked again: kept as it was.
                Choice::Timing {
                    best, saved: true, ..
                } => (fastest(best)?, best),
                Choice::Timing { .. } => return None,
            };
            let mut entry = serde_json::json!({
                "type": ty.name(), "cols": cols, "weight_rows": weight_rows, "rows": rows,
                "path": path.label(),
            });
            for (p, t) in best {
                entry[p.time_key()] = (*t).into();
            }
            Some(entry)
        })
        .collect();
    choices.sort_by_key(|v| v.to_string());
    super::tuning_file::write(path, cpu, serde_json::json!({ "choices": choices }));
}

/// The decisions, read from the file on first use.
fn with_choices<R>(f: impl FnOnce(&mut HashMap<Key, Choice>) -> R) -> Option<R> {
    let mut guard = CHOICES.lock().ok()?;
    let map = guard.get_or_insert_with(|| {
        // Unit tests decide made-up kinds; they neither read nor write the user's file.
        #[cfg(not(test))]
        return load(&cache_path(), &machine());
        #[cfg(test)]
        HashMap::new()
    });
    Some(f(map))
}

fn key(ty: StoredType, cols: usize, weight_rows: usize, rows: usize) -> Key {
    (
        ty,
        cols,
        weight_rows.next_power_of_two(),
        rows.next_power_of_two(),
    )
}

/// A product's kind: the weight's type, row length and rows, and the input rows.
pub type Kind = (StoredType, usize, usize, usize);

/// The path for `rows` inputs of `cols` values on a `ty` weight of `weight_rows` rows;
/// `None` while undecided.
pub fn chosen((ty, cols, weight_rows, rows): Kind) -> Option<Path> {
    if rows < PANEL_MIN_ROWS {
        return Some(Path::Integer);
    }
    if let Some(p) = pinned() {
        return Some(p);
    }
    let choice = with_choices(|m| m.get(&key(ty, cols, weight_rows, rows)).cloned()).flatten();
    match choice {
        // A saved choice of the dot kernel on a CPU that no longer shows AVX-512 (a VM
        // that masks it) is decided again.
        Some(Choice::Chosen(Path::DotSlices, _)) if !crate::ops::dot_gemm::available() => None,
        Some(Choice::Chosen(p, _)) => Some(p),
        _ => None,
    }
}

/// Runs every candidate path once into `out`, each timed, and once the kind has been
/// timed [`TRIALS`] times keeps the fastest; `out` is left with the last candidate's
/// result (every path computes the same product). Returns the path kept, once decided.
pub fn decide<'a>(kind: Kind, out: &mut [f32], candidates: Vec<Candidate<'a>>) -> Option<Path> {
    let mut times = Vec::new();
    for (path, run) in candidates {
        let t = Instant::now();
        run(out);
        times.push((path, t.elapsed().as_secs_f64()));
    }
    with_choices(|map| record(map, kind, &times)).flatten()
}

/// The path with the lowest time.
fn fastest(best: &Times) -> Option<Path> {
    best.iter()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(p, _)| *p)
}

/// Adds one timing of each path to the kind's, deciding once it has [`TRIALS`] (counting
/// an earlier run's as all but [`RECHECK_TRIALS`] of them).
fn record(
    map: &mut HashMap<Key, Choice>,
    (ty, cols, weight_rows, rows): Kind,
    times: &[(Path, f64)],
) -> Option<Path> {
    let k = key(ty, cols, weight_rows, rows);
    let (mut best, n, saved) = match map.get(&k) {
        Some(Choice::Timing { best, n, saved }) => (best.clone(), n + 1, *saved),
        _ => (Default::default(), 1, false),
    };
    for &(path, t) in times {
        let b = best.entry(path).or_insert(t);
        *b = b.min(t);
    }
    if n < TRIALS {
        map.insert(k, Choice::Timing { best, n, saved });
        return None;
    }
    let path = fastest(&best)?;
    let each: Vec<String> = best
        .iter()
        .map(|(p, t)| format!("{} {:.2} ms", p.label(), t * 1e3))
        .collect();
    tracing::info!(
        "{} [{weight_rows}, {cols}] × {rows} rows: {} (best of {}: {})",
        ty.name(),
        path.label(),
        if saved {
            "this run and earlier ones".to_string()
        } else {
            format!("{n} products")
        },
        each.join(", ")
    );
    map.insert(k, Choice::Chosen(path, best));
    #[cfg(not(test))]
    save(&cache_path(), &machine(), map);
    Some(path)
}

/// The path `FINETUNE_STUDIO_PREFILL=integer|panels|dot-slices|integer-tiles` pins, for
/// comparisons (`dot-slices` only where the CPU runs the dot kernel; `integer-tiles` runs
/// the integer kernels of the AVX2 level, the K-quants' tiles, on any CPU with AVX2).
fn pinned() -> Option<Path> {
    static PINNED: OnceLock<Option<Path>> = OnceLock::new();
    *PINNED.get_or_init(|| {
        let p = Path::from_label(&std::env::var("FINETUNE_STUDIO_PREFILL").ok()?)?;
        Some(match p {
            Path::DotSlices if !crate::ops::dot_gemm::available() => Path::Panels,
            p => p,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    type Run<'a> = Box<dyn FnOnce(&mut [f32]) + 'a>;

    /// Candidates that take the given milliseconds.
    fn taking(ms: &[(Path, u64)]) -> Vec<(Path, Run<'static>)> {
        ms.iter()
            .map(|&(p, ms)| {
                let run: Run<'static> =
                    Box::new(move |_| std::thread::sleep(std::time::Duration::from_millis(ms)));
                (p, run)
            })
            .collect()
    }

    #[test]
    fn the_fastest_path_is_kept_per_type_shape_and_row_bucket() {
        let (ty, cols, out) = (StoredType::Q5_1, 4096 + 32, 512);
        assert_eq!(chosen((ty, cols, out, 3)), Some(Path::Integer));
        assert_eq!(chosen((ty, cols, out, 100)), None);
        // Decided after TRIALS timings of each path.
        for i in 1..=TRIALS {
            let path = decide(
                (ty, cols, out, 100),
                &mut [],
                taking(&[(Path::Integer, 6), (Path::Panels, 0), (Path::DotSlices, 3)]),
            );
            assert_eq!(path, (i == TRIALS).then_some(Path::Panels));
        }
        // 100 and 120 rows share the bucket of 128; 300 rows do not.
        assert_eq!(chosen((ty, cols, out, 120)), Some(Path::Panels));
        assert_eq!(chosen((ty, cols, out, 300)), None);
        for _ in 0..TRIALS {
            decide(
                (ty, cols, out, 300),
                &mut [],
                taking(&[(Path::Integer, 0), (Path::Panels, 5)]),
            );
        }
        assert_eq!(chosen((ty, cols, out, 300)), Some(Path::Integer));
        for _ in 0..TRIALS {
            decide(
                (ty, cols, out, 1000),
                &mut [],
                taking(&[(Path::Integer, 6), (Path::Panels, 5), (Path::DotSlices, 0)]),
            );
        }
        assert_eq!(chosen((ty, cols, out, 1000)), Some(Path::DotSlices));
        // A weight of the same type and row length but 16 times the rows is its own kind:
        // 500 and 512 rows share a bucket, 8192 rows do not.
        assert_eq!(chosen((ty, cols, 500, 100)), Some(Path::Panels));
        assert_eq!(chosen((ty, cols, 8192, 100)), None);
        for _ in 0..TRIALS {
            decide(
                (ty, cols, 8192, 100),
                &mut [],
                taking(&[(Path::Integer, 0), (Path::Panels, 5)]),
            );
        }
        assert_eq!(chosen((ty, cols, 8192, 100)), Some(Path::Integer));
        assert_eq!(chosen((ty, cols, out, 100)), Some(Path::Panels));
    }

    #[test]
    fn decisions_round_trip_through_the_file_for_the_same_cpu_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(CHOICES_FILE);
        let map = HashMap::from([
            (
                key(StoredType::Q4K, 2048, 512, 92),
                Choice::Chosen(Path::Panels, Times::new()),
            ),
            (
                key(StoredType::Q4K, 8192, 2048, 92),
                Choice::Chosen(Path::DotSlices, Times::new()),
            ),
            (
                key(StoredType::Q6K, 8192, 2048, 20),
                Choice::Chosen(Path::Integer, Times::new()),
            ),
            (
                key(StoredType::Q8_0, 576, 576, 9),
                Choice::Timing {
                    best: [(Path::Integer, 1.0), (Path::Panels, 2.0)].into(),
                    n: 1,
                    saved: false,
                },
            ),
        ]);
        save(&path, "CPU A", &map);
        let back = load(&path, "CPU A");
        assert_eq!(back.len(), 3, "undecided kinds are not saved");
        assert!(matches!(
            back.get(&key(StoredType::Q4K, 8192, 2000, 128)),
            Some(Choice::Chosen(Path::DotSlices, _))
        ));
        assert!(matches!(
            back.get(&key(StoredType::Q4K, 2048, 300, 100)),
            Some(Choice::Chosen(Path::Panels, _))
        ));
        assert!(matches!(
            back.get(&key(StoredType::Q6K, 8192, 2048, 32)),
            Some(Choice::Chosen(Path::Integer, _))
        ));
        assert!(!back.contains_key(&key(StoredType::Q4K, 2048, 2048, 100)));
        assert!(load(&path, "CPU B").is_empty());
        std::fs::write(&path, "{ not json").unwrap();
        assert!(load(&path, "CPU A").is_empty());
    }

    /// A kind decided by an earlier run is saved with each path's best time, timed once
    /// more by the next run, and decided on the best times of both: a path that a noisy
    /// first run made look slow takes over once a quiet run times it.
    #[test]
    fn a_saved_decision_is_checked_once_more_and_corrected_by_a_quiet_run() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(CHOICES_FILE);
        let kind = (StoredType::Q4K, 2048, 8192, 92);
        // The first run: its integer trials met a busy machine.
        let mut first = HashMap::new();
        for _ in 0..TRIALS {
            record(
                &mut first,
                kind,
                &[(Path::Integer, 9.0), (Path::DotSlices, 5.0)],
            );
        }
        assert!(matches!(
            first.get(&key(kind.0, kind.1, kind.2, kind.3)),
            Some(Choice::Chosen(Path::DotSlices, _))
        ));
        save(&file, "CPU A", &first);
        // The next run reads it as undecided, and saving it untouched keeps it.
        let mut next = load(&file, "CPU A");
        let k = key(kind.0, kind.1, kind.2, kind.3);
        assert!(matches!(
            next.get(&k),
            Some(Choice::Timing { saved: true, n, .. }) if *n == TRIALS - RECHECK_TRIALS
        ));
        save(&file, "CPU A", &next);
        assert!(matches!(
            load(&file, "CPU A").get(&k),
            Some(Choice::Timing { best, .. }) if best.get(&Path::DotSlices) == Some(&5.0)
        ));
        // One quiet product decides it on the best of both runs.
        let path = record(
            &mut next,
            kind,
            &[(Path::Integer, 4.0), (Path::DotSlices, 6.0)],
        );
        assert_eq!(path, Some(Path::Integer));
        let Some(Choice::Chosen(_, best)) = next.get(&k) else {
            panic!("not decided");
        };
        assert_eq!(
            best,
            &Times::from([(Path::Integer, 4.0), (Path::DotSlices, 5.0)])
        );
    }
}
