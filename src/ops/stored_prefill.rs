//! Which way a product of several input rows (a prompt, a batch) goes through a stored
//! weight: the integer kernels, as a decode step does, or the weight dequantized in panels
//! into f32 gemm, as training does. Which is faster depends on the CPU (how wide its
//! integer dot products are against its f32 FMA rate) and on the type and shape, so the
//! first products of each (type, row length, rows rounded up to a power of two) run both,
//! timed, and the faster (by the best of [`TRIALS`] timings of each, the weights' pages
//! touched first) is kept for the process and logged. No CPU's answer is written into the
//! code. Decode steps (fewer than [`PANEL_MIN_ROWS`] rows) always take the integer kernels.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use super::quant::StoredType;

/// Input rows from which a product may go through panels.
pub const PANEL_MIN_ROWS: usize = 8;

/// Products of a kind timed both ways before its path is kept.
pub const TRIALS: usize = 2;

/// The two ways.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    Integer,
    Panels,
}

type Key = (StoredType, usize, usize);

#[derive(Clone, Copy)]
enum Choice {
    /// The best seconds of each path so far, and how many products were timed.
    Timing {
        integer: f64,
        panels: f64,
        n: usize,
    },
    Chosen(Path),
}

static CHOICES: Mutex<Option<HashMap<Key, Choice>>> = Mutex::new(None);

fn key(ty: StoredType, cols: usize, rows: usize) -> Key {
    (ty, cols, rows.next_power_of_two())
}

/// The path for `rows` inputs of `cols` values on a `ty` weight; `None` while undecided.
pub fn chosen(ty: StoredType, cols: usize, rows: usize) -> Option<Path> {
    if rows < PANEL_MIN_ROWS {
        return Some(Path::Integer);
    }
    if let Some(p) = pinned() {
        return Some(p);
    }
    let choice = CHOICES.lock().ok().and_then(|g| {
        g.as_ref()
            .and_then(|m| m.get(&key(ty, cols, rows)).copied())
    });
    match choice {
        Some(Choice::Chosen(p)) => Some(p),
        _ => None,
    }
}

/// Runs both paths once into `out` (`integer` then `panels`, each timed), and once the
/// kind has been timed [`TRIALS`] times keeps the faster; `out` is left with the panels'
/// result (exact f32 products). Returns the path kept, once decided.
pub fn decide(
    (ty, cols, rows): (StoredType, usize, usize),
    out: &mut [f32],
    integer: impl FnOnce(&mut [f32]),
    panels: impl FnOnce(&mut [f32]),
) -> Option<Path> {
    let t = Instant::now();
    integer(out);
    let ti = t.elapsed().as_secs_f64();
    let t = Instant::now();
    panels(out);
    let tp = t.elapsed().as_secs_f64();
    let mut guard = CHOICES.lock().ok()?;
    let map = guard.get_or_insert_with(HashMap::new);
    let k = key(ty, cols, rows);
    let (integer, panels, n) = match map.get(&k) {
        Some(Choice::Timing { integer, panels, n }) => (integer.min(ti), panels.min(tp), n + 1),
        _ => (ti, tp, 1),
    };
    if n < TRIALS {
        map.insert(k, Choice::Timing { integer, panels, n });
        return None;
    }
    let path = if panels <= integer {
        Path::Panels
    } else {
        Path::Integer
    };
    tracing::info!(
        "{} × {rows} rows of {cols}: {path:?} (best of {n}: integer {:.2} ms, panels {:.2} ms)",
        ty.name(),
        integer * 1e3,
        panels * 1e3
    );
    map.insert(k, Choice::Chosen(path));
    Some(path)
}

/// The path `FINETUNE_STUDIO_PREFILL=integer|panels` pins, for comparisons.
fn pinned() -> Option<Path> {
    static PINNED: OnceLock<Option<Path>> = OnceLock::new();
    *PINNED.get_or_init(
        || match std::env::var("FINETUNE_STUDIO_PREFILL").ok().as_deref() {
            Some("integer") => Some(Path::Integer),
            Some("panels") => Some(Path::Panels),
            _ => None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_faster_path_is_kept_per_type_shape_and_row_bucket() {
        let (ty, cols) = (StoredType::Q5_1, 4096 + 32);
        assert_eq!(chosen(ty, cols, 3), Some(Path::Integer));
        assert_eq!(chosen(ty, cols, 100), None);
        let slow = || std::thread::sleep(std::time::Duration::from_millis(5));
        // Decided after TRIALS timings of each path.
        for i in 1..=TRIALS {
            let path = decide((ty, cols, 100), &mut [], |_| slow(), |_| {});
            assert_eq!(path, (i == TRIALS).then_some(Path::Panels));
        }
        // 100 and 120 rows share the bucket of 128; 300 rows do not.
        assert_eq!(chosen(ty, cols, 120), Some(Path::Panels));
        assert_eq!(chosen(ty, cols, 300), None);
        for _ in 0..TRIALS {
            decide((ty, cols, 300), &mut [], |_| {}, |_| slow());
        }
        assert_eq!(chosen(ty, cols, 300), Some(Path::Integer));
    }
}
