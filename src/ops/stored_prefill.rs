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
//! only the first prompts on a new machine pay for timing every path; the next few runs
//! time each kind's close contenders once more, then the choice is kept. No CPU's answer
//! is written into the code. Decode steps
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

/// Later runs that time a saved kind once more; after them it is kept without timing. A
/// recheck runs every path of a layer's product on the first prompt: on the Llama-3-8B
/// shape it put about a second on the first reply of every run (AMD Zen 4, 4.9 against
/// 3.7–3.9 s; 4.2–4.4 with the path pinned), for a correction the first few runs make.
const RECHECK_RUNS: usize = 2;

/// A recheck leaves out the paths whose best time is more than this many times the
/// fastest one's: a busy moment would have had to slow down every trial of such a path
/// by as much while leaving the fastest path's alone.
const RECHECK_MARGIN: f64 = 2.0;

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

/// What the timings of a kind found: each path's best seconds over every run that timed
/// it, and how many earlier runs (processes) decided it.
#[derive(Clone, Default, Debug, PartialEq)]
struct Record {
    best: Times,
    runs: usize,
}

#[derive(Clone)]
enum Choice {
    /// Being timed: `n` products so far, counted on top of the record (empty for a new
    /// kind; an earlier run's decision, saved as that run's choice until this run decides
    /// it again).
    Timing { record: Record, n: usize },
    /// The path, and the record it was decided on (no times where none were saved).
    Chosen(Path, Record),
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
        // Files of before the count hold one run's decisions.
        let runs = num("runs").unwrap_or(1).max(1);
        if let (Some(ty), (Some(cols), Some(weight_rows), Some(rows)), Some(path)) =
            (ty, sizes, path)
        {
            // A kind saved with its times is timed once more, until RECHECK_RUNS later
            // runs have; one without times is kept.
            let record = Record { best, runs };
            let choice = if record.best.is_empty() || runs > RECHECK_RUNS {
                Choice::Chosen(path, record)
            } else {
                Choice::Timing {
                    record,
                    n: TRIALS - RECHECK_TRIALS,
                }
            };
            out.insert(key((ty, cols, weight_rows, rows)), choice);
        }
    }
    out
}

/// Writes the decisions made; a failed write is logged and costs a new timing next run.
fn save(path: &std::path::Path, cpu: &str, map: &HashMap<Key, Choice>) {
    let mut choices: Vec<serde_json::Value> = map
        .iter()
        .filter_map(|((ty, cols, weight_rows, rows), c)| {
            let (path, record) = match c {
                Choice::Chosen(p, record) => (*p, record),
                // Saved by an earlier run and not yet checked again: kept as it was.
                Choice::Timing { record, .. } if record.runs > 0 => {
                    (fastest(&record.best)?, record)
                }
                Choice::Timing { .. } => return None,
            };
            let mut entry = serde_json::json!({
                "type": ty.name(), "cols": cols, "weight_rows": weight_rows, "rows": rows,
                "path": path.label(), "runs": record.runs,
            });
            for (p, t) in &record.best {
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

/// A kind's key: its weight rows and input rows rounded up to powers of two.
fn key((ty, cols, weight_rows, rows): Kind) -> Key {
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
pub fn chosen(kind: Kind) -> Option<Path> {
    if kind.3 < PANEL_MIN_ROWS {
        return Some(Path::Integer);
    }
    if let Some(p) = pinned() {
        return Some(p);
    }
    let choice = with_choices(|m| m.get(&key(kind)).cloned()).flatten();
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
/// result (every path computes the same product). A recheck of an earlier run's decision
/// leaves out the paths [`out_of_reach`] names. Returns the path kept, once decided.
pub fn decide<'a>(kind: Kind, out: &mut [f32], candidates: Vec<Candidate<'a>>) -> Option<Path> {
    let skip = with_choices(|m| out_of_reach(m.get(&key(kind)))).unwrap_or_default();
    // At least one path runs, so that `out` holds the product.
    let candidates: Vec<Candidate<'a>> = if candidates.iter().all(|(p, _)| skip.contains(p)) {
        candidates
    } else {
        candidates
            .into_iter()
            .filter(|(p, _)| !skip.contains(p))
            .collect()
    };
    let mut times = Vec::new();
    for (path, run) in candidates {
        let t = Instant::now();
        run(out);
        times.push((path, t.elapsed().as_secs_f64()));
    }
    with_choices(|map| record(map, kind, &times)).flatten()
}

/// The paths a recheck leaves out: those an earlier run timed at more than
/// [`RECHECK_MARGIN`] times the fastest path. None while a kind is first timed.
fn out_of_reach(choice: Option<&Choice>) -> Vec<Path> {
    let Some(Choice::Timing { record, .. }) = choice else {
        return Vec::new();
    };
    let Some(least) = fastest(&record.best).map(|p| record.best[&p]) else {
        return Vec::new();
    };
    record
        .best
        .iter()
        .filter(|(_, t)| **t > RECHECK_MARGIN * least)
        .map(|(p, _)| *p)
        .collect()
}

/// The path with the lowest time.
fn fastest(best: &Times) -> Option<Path> {
    best.iter()
        .min_by(|a, b| a.1.total_cmp(b.1))
        .map(|(p, _)| *p)
}

/// Adds one timing of each path to the kind's, deciding once it has [`TRIALS`] (counting
/// an earlier run's as all but [`RECHECK_TRIALS`] of them).
fn record(map: &mut HashMap<Key, Choice>, kind: Kind, times: &[(Path, f64)]) -> Option<Path> {
    let (ty, cols, weight_rows, rows) = kind;
    let k = key(kind);
    let (mut record, n) = match map.get(&k) {
        Some(Choice::Timing { record, n }) => (record.clone(), n + 1),
        _ => (Record::default(), 1),
    };
    for &(path, t) in times {
        let b = record.best.entry(path).or_insert(t);
        *b = b.min(t);
    }
    if n < TRIALS {
        map.insert(k, Choice::Timing { record, n });
        return None;
    }
    let path = fastest(&record.best)?;
    let each: Vec<String> = record
        .best
        .iter()
        .map(|(p, t)| format!("{} {:.2} ms", p.label(), t * 1e3))
        .collect();
    tracing::info!(
        "{} [{weight_rows}, {cols}] × {rows} rows: {} (best of {}: {})",
        ty.name(),
        path.label(),
        match record.runs {
            0 => format!("{n} products"),
            runs => format!("this run and {runs} earlier"),
        },
        each.join(", ")
    );
    record.runs += 1;
    map.insert(k, Choice::Chosen(path, record));
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
                key((StoredType::Q4K, 2048, 512, 92)),
                Choice::Chosen(Path::Panels, Record::default()),
            ),
            (
                key((StoredType::Q4K, 8192, 2048, 92)),
                Choice::Chosen(Path::DotSlices, Record::default()),
            ),
            (
                key((StoredType::Q6K, 8192, 2048, 20)),
                Choice::Chosen(Path::Integer, Record::default()),
            ),
            (
                key((StoredType::Q8_0, 576, 576, 9)),
                Choice::Timing {
                    record: Record {
                        best: [(Path::Integer, 1.0), (Path::Panels, 2.0)].into(),
                        runs: 0,
                    },
                    n: 1,
                },
            ),
        ]);
        save(&path, "CPU A", &map);
        let back = load(&path, "CPU A");
        assert_eq!(back.len(), 3, "undecided kinds are not saved");
        assert!(matches!(
            back.get(&key((StoredType::Q4K, 8192, 2000, 128))),
            Some(Choice::Chosen(Path::DotSlices, _))
        ));
        assert!(matches!(
            back.get(&key((StoredType::Q4K, 2048, 300, 100))),
            Some(Choice::Chosen(Path::Panels, _))
        ));
        assert!(matches!(
            back.get(&key((StoredType::Q6K, 8192, 2048, 32))),
            Some(Choice::Chosen(Path::Integer, _))
        ));
        assert!(!back.contains_key(&key((StoredType::Q4K, 2048, 2048, 100))));
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
            first.get(&key(kind)),
            Some(Choice::Chosen(Path::DotSlices, _))
        ));
        save(&file, "CPU A", &first);
        // The next run reads it as undecided, and saving it untouched keeps it.
        let mut next = load(&file, "CPU A");
        let k = key(kind);
        assert!(matches!(
            next.get(&k),
            Some(Choice::Timing { record, n }) if *n == TRIALS - RECHECK_TRIALS && record.runs == 1
        ));
        save(&file, "CPU A", &next);
        assert!(matches!(
            load(&file, "CPU A").get(&k),
            Some(Choice::Timing { record, .. }) if record.best.get(&Path::DotSlices) == Some(&5.0)
        ));
        // One quiet product decides it on the best of both runs.
        let path = record(
            &mut next,
            kind,
            &[(Path::Integer, 4.0), (Path::DotSlices, 6.0)],
        );
        assert_eq!(path, Some(Path::Integer));
        let Some(Choice::Chosen(_, record)) = next.get(&k) else {
            panic!("not decided");
        };
        assert_eq!(
            record,
            &Record {
                best: Times::from([(Path::Integer, 4.0), (Path::DotSlices, 5.0)]),
                runs: 2
            }
        );
    }

    /// A kind is timed again by [`RECHECK_RUNS`] later runs, then kept without timing, so
    /// that the first reply of a run stops paying for every path of a product.
    #[test]
    fn a_kind_rechecked_by_enough_runs_is_kept_without_timing() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(CHOICES_FILE);
        let kind = (StoredType::Q6K, 14336, 4096, 92);
        let k = key(kind);
        let mut map = HashMap::new();
        for _ in 0..TRIALS {
            record(&mut map, kind, &[(Path::Integer, 3.0), (Path::Panels, 7.0)]);
        }
        for run in 1..=RECHECK_RUNS {
            save(&file, "CPU A", &map);
            map = load(&file, "CPU A");
            assert!(
                matches!(map.get(&k), Some(Choice::Timing { record, .. }) if record.runs == run),
                "run {run} after the first times it again"
            );
            assert_eq!(
                record(&mut map, kind, &[(Path::Integer, 3.1)]),
                Some(Path::Integer)
            );
        }
        save(&file, "CPU A", &map);
        let kept = load(&file, "CPU A");
        assert!(matches!(
            kept.get(&k),
            Some(Choice::Chosen(Path::Integer, record)) if record.runs == 1 + RECHECK_RUNS
        ));
        // A file of before the count: its decisions were one run's, and are rechecked.
        let mut doc: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        for e in doc["choices"].as_array_mut().unwrap() {
            e.as_object_mut().unwrap().remove("runs").unwrap();
        }
        std::fs::write(&file, doc.to_string()).unwrap();
        assert!(matches!(
            load(&file, "CPU A").get(&k),
            Some(Choice::Timing { record, .. }) if record.runs == 1
        ));
    }

    /// A recheck times the paths within [`RECHECK_MARGIN`] of the fastest one and leaves
    /// out the others; a new kind times every path.
    #[test]
    fn a_recheck_leaves_out_the_paths_far_behind() {
        let record = Record {
            best: Times::from([
                (Path::Integer, 27.6),
                (Path::IntegerTiles, 27.8),
                (Path::DotSlices, 53.8),
                (Path::Panels, 60.4),
            ]),
            runs: 1,
        };
        let timing = Choice::Timing {
            record: record.clone(),
            n: TRIALS - RECHECK_TRIALS,
        };
        assert_eq!(out_of_reach(Some(&timing)), [Path::Panels]);
        assert!(out_of_reach(None).is_empty());
        assert!(out_of_reach(Some(&Choice::Chosen(Path::Integer, record))).is_empty());
        // Through `decide`: the path left out does not run, the others do.
        let kind = (StoredType::Q5K, 14336 + 256, 4096, 92);
        with_choices(|m| {
            m.insert(
                key(kind),
                Choice::Timing {
                    record: Record {
                        best: Times::from([(Path::Integer, 1.0), (Path::Panels, 2.5)]),
                        runs: 1,
                    },
                    n: TRIALS - RECHECK_TRIALS,
                },
            )
        });
        let ran = std::sync::Mutex::new(Vec::new());
        let candidates: Vec<Candidate<'_>> = [Path::Integer, Path::Panels]
            .into_iter()
            .map(|p| {
                let ran = &ran;
                let run: Run<'_> = Box::new(move |_| ran.lock().unwrap().push(p));
                (p, run)
            })
            .collect();
        assert_eq!(decide(kind, &mut [], candidates), Some(Path::Integer));
        assert_eq!(*ran.lock().unwrap(), [Path::Integer]);
    }
}
