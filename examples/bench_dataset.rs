//! Benchmark of the dataset layer at 100K rows: builds an Alpaca JSON by repeating
//! `../shared/datasets/llamafactory_alpaca_en_demo.json` (each instruction made unique with
//! a ` (#i)` suffix, as `../shared/anchors/peft/bench_dataset.py` does), then times load,
//! full-text search, validation and statistics, and reports peak memory (VmHWM).
//!
//! `cargo run --release --example bench_dataset [-- ROWS]`
//! The last line is one JSON object with every figure.

use std::path::Path;
use std::time::Instant;

use finetune_studio::data::{self, search, TokenCounter};
use finetune_studio::sys::{peak_rss_bytes, rss_bytes as current_rss_bytes};
use serde_json::{json, Value};

fn build_file(rows: usize, path: &Path) -> anyhow::Result<u64> {
    let demo_path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/datasets/llamafactory_alpaca_en_demo.json");
    let demo: Vec<Value> = serde_json::from_slice(&std::fs::read(demo_path)?)?;
    anyhow::ensure!(!demo.is_empty(), "empty demo file");
    // Streamed so that building the file does not raise the peak memory measured later.
    use std::io::Write;
    let mut w = std::io::BufWriter::new(std::fs::File::create(path)?);
    w.write_all(b"[\n")?;
    for i in 0..rows {
        let mut r = demo[i % demo.len()].clone();
        let ins = r["instruction"].as_str().unwrap_or_default().to_string();
        r["instruction"] = Value::String(format!("{ins} (#{i})"));
        serde_json::to_writer_pretty(&mut w, &r)?;
        w.write_all(if i + 1 < rows { b",\n" } else { b"\n" })?;
    }
    w.write_all(b"]\n")?;
    w.flush()?;
    Ok(std::fs::metadata(path)?.len())
}

/// Runs the benchmark with a given counter (the model's tokenizer when one is wired in).
fn bench(rows: usize, counter: &dyn TokenCounter) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join(format!("alpaca_{rows}.json"));
    let size = build_file(rows, &path)?;
    eprintln!("{}: {:.1} MB", path.display(), size as f64 / 1e6);
    let rss_before = peak_rss_bytes().unwrap_or(0);

    let t = Instant::now();
    let ds = data::load(&path, None)?;
    let load_s = t.elapsed().as_secs_f64();
    anyhow::ensure!(ds.len() == rows, "loaded {} of {rows} rows", ds.len());
    let rss_after_load = peak_rss_bytes().unwrap_or(0);
    let rss_records = current_rss_bytes().unwrap_or(0);

    let time_search = |q: &search::Query| {
        let t = Instant::now();
        let hits = search::search(&ds, q);
        (t.elapsed().as_secs_f64(), hits.len())
    };
    // Warm once (page in), then time.
    let q = search::Query::substring("photosynthesis", true);
    let _ = time_search(&q);
    let (search_s, search_hits) = time_search(&q);
    let qi = search::Query::substring("Photosynthesis", false);
    let (search_ci_s, search_ci_hits) = time_search(&qi);
    let qr = search::Query::regex(r"\(#9999\d\)", true)?;
    let (search_re_s, search_re_hits) = time_search(&qr);

    let t = Instant::now();
    let problems = ds.problems().len();
    let validate_s = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let st = data::stats::compute(&ds, counter, 2048);
    let stats_s = t.elapsed().as_secs_f64();

    let peak = peak_rss_bytes().unwrap_or(0);
    let out = json!({
        "rows": rows,
        "file_mb": size as f64 / 1e6,
        "load_s": load_s,
        "search_s": search_s,
        "search_hits": search_hits,
        "search_case_insensitive_s": search_ci_s,
        "search_case_insensitive_hits": search_ci_hits,
        "search_regex_s": search_re_s,
        "search_regex_hits": search_re_hits,
        "validate_s": validate_s,
        "problems": problems,
        "stats_s": stats_s,
        "counter": st.counter,
        "tokens": st.total.sum,
        "near_duplicate_groups": st.near_duplicates.len(),
        "rss_before_load_mb": rss_before as f64 / 1e6,
        "peak_rss_after_load_mb": rss_after_load as f64 / 1e6,
        "rss_holding_records_mb": rss_records as f64 / 1e6,
        "peak_rss_mb": peak as f64 / 1e6,
        "peak_rss_over_file": peak as f64 / size as f64,
        "load_rss_over_file": rss_after_load.saturating_sub(rss_before) as f64 / size as f64,
    });
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let rows = std::env::args()
        .nth(1)
        .filter(|a| !a.starts_with("--"))
        .map(|s| s.parse::<usize>())
        .transpose()?
        .unwrap_or(100_000);
    // `--model M` counts tokens with that model's tokenizer (the issue's target is for the
    // default model); without it, the 4-bytes-per-token fallback.
    let args: Vec<String> = std::env::args().collect();
    let model = args
        .iter()
        .position(|a| a == "--model")
        .and_then(|i| args.get(i + 1));
    let out = match model {
        Some(spec) => {
            let m = finetune_studio::hub::load(spec)?;
            bench(rows, &m.tokenizer)?
        }
        None => bench(rows, &data::ByteCounter::default())?,
    };
    if let Value::Object(o) = &out {
        for (k, v) in o {
            eprintln!("{k:>30}: {v}");
        }
    }
    println!("{out}");
    Ok(())
}
