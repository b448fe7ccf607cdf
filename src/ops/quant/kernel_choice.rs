//! Picks between two kernels that both run on this CPU (AVX2 against AVX-512 VNNI) by a
//! short measurement on the matrix's own row length, once per (type, row length) per
//! process. Which one wins depends on the core: Zen 4 splits 512-bit operations in two,
//! Zen 5 and recent Xeons do not, so no CPU's result is written into the code.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use super::activation::Activations;
use super::format::{ActivationFormat, StoredType};
use super::isa::{self, Isa};

/// The level to run `ty` rows of `cols` values at, given the level asked for.
pub fn choose(ty: StoredType, cols: usize, asked: Isa) -> Isa {
    // Only the 32-value types have both an AVX2 and a VNNI kernel on the same activations.
    let both = matches!(
        ty,
        StoredType::Q4_0
            | StoredType::Q4_1
            | StoredType::Q5_0
            | StoredType::Q5_1
            | StoredType::Q8_0
    );
    if asked < Isa::Avx512Vnni || !both {
        return asked;
    }
    static CHOSEN: Mutex<Option<HashMap<(StoredType, usize), Isa>>> = Mutex::new(None);
    let key = (ty, cols);
    if let Some(hit) = CHOSEN
        .lock()
        .ok()
        .and_then(|g| g.as_ref().and_then(|m| m.get(&key).copied()))
    {
        return hit;
    }
    let (avx2, vnni) = (
        time_kernel(ty, cols, Isa::Avx2),
        time_kernel(ty, cols, Isa::Avx512Vnni),
    );
    let pick = if vnni <= avx2 {
        Isa::Avx512Vnni
    } else {
        Isa::Avx2
    };
    tracing::info!(
        "{} rows of {cols}: {} ({:.1} µs against {:.1} µs for {})",
        ty.name(),
        pick.label(),
        avx2.min(vnni) * 1e6,
        avx2.max(vnni) * 1e6,
        if pick == Isa::Avx2 {
            Isa::Avx512Vnni.label()
        } else {
            Isa::Avx2.label()
        }
    );
    if let Ok(mut g) = CHOSEN.lock() {
        g.get_or_insert_with(HashMap::new).insert(key, pick);
    }
    pick
}

/// Seconds for 64 rows of `cols` values (best of five), single-threaded.
fn time_kernel(ty: StoredType, cols: usize, level: Isa) -> f64 {
    const ROWS: usize = 64;
    let bytes = vec![0x5Au8; ROWS * cols / ty.block_elems() * ty.block_bytes()];
    let x: Vec<f32> = (0..cols).map(|i| ((i % 17) as f32 - 8.0) * 0.1).collect();
    let Activations::Q8(acts) = Activations::quantize(ActivationFormat::Q8, &x, cols) else {
        return f64::INFINITY;
    };
    let row = acts.row(0);
    let dot = super::matrix::q8_kernel(ty, level.min(isa::detected()));
    let rb = bytes.len() / ROWS;
    let mut best = f64::INFINITY;
    let mut sink = 0f32;
    for _ in 0..5 {
        let t = Instant::now();
        for r in 0..ROWS {
            sink += dot(&bytes[r * rb..(r + 1) * rb], row);
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    std::hint::black_box(sink);
    best
}
