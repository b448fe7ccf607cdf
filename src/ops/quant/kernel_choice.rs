//! Picks between two kernels that both run on this CPU (AVX2 against AVX-512 VNNI; for
//! Q4_K and Q6_K, AVX2 over the interleaved copy against VNNI over the stored rows) by a
//! short measurement of a decode step's product on the matrix's own row length, once per
//! (type, row length) per process. Which one wins depends on the core: Zen 4 splits 512-bit operations in two,
//! Zen 5 and recent Xeons do not, so no CPU's result is written into the code.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use super::format::StoredType;
use super::isa::{self, Isa};

/// The level to run `ty` rows of `cols` values at, given the level asked for.
pub fn choose(ty: StoredType, cols: usize, asked: Isa) -> Isa {
    // The 32-value types have an AVX2 and a VNNI kernel of one row; Q4_K and Q6_K the
    // VNNI one of one row and the AVX2 one over their interleaved copy.
    let both = matches!(
        ty,
        StoredType::Q4_0
            | StoredType::Q4_1
            | StoredType::Q5_0
            | StoredType::Q5_1
            | StoredType::Q8_0
            | StoredType::Q4K
            | StoredType::Q6K
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

/// Seconds for a decode step's product of 64 rows of `cols` values (best of five, after
/// one untimed product that builds what the kernels keep), single-threaded: the whole
/// product, activations' quantization included, since the two levels quantize them
/// differently for the K-quants.
fn time_kernel(ty: StoredType, cols: usize, level: Isa) -> f64 {
    const ROWS: usize = 64;
    // 0x5A bytes: codes of every value, and finite f16 scales (0x5A5A = 203.25).
    let bytes = vec![0x5Au8; ROWS * cols / ty.block_elems() * ty.block_bytes()];
    let Ok(m) = super::QuantMatrix::owned(bytes, ty, ROWS, cols) else {
        return f64::INFINITY;
    };
    let x: Vec<f32> = (0..cols).map(|i| ((i % 17) as f32 - 8.0) * 0.1).collect();
    let mut y = vec![0f32; ROWS];
    let level = level.min(isa::detected());
    // The AVX2 product of Q4_K and Q6_K reads the interleaved copy; built here, not by the
    // product, which would ask for this choice again.
    #[cfg(target_arch = "x86_64")]
    if level == Isa::Avx2 {
        drop(m.build_interleaved_copy());
    }
    let pool = rayon::ThreadPoolBuilder::new().num_threads(1).build();
    let mut time = || {
        m.matmul_at(level, &x, 1, &mut y);
        let mut best = f64::INFINITY;
        for _ in 0..5 {
            let t = Instant::now();
            m.matmul_at(level, &x, 1, &mut y);
            best = best.min(t.elapsed().as_secs_f64());
        }
        best
    };
    match pool {
        Ok(pool) => pool.install(time),
        Err(_) => time(),
    }
}
