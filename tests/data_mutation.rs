//! Mutation tests of every dataset reader: small real inputs of each format (Alpaca JSON and
//! JSONL, ShareGPT, OpenAI messages, LLaMA-Factory `dataset_info.json`, CSV, Parquet) are
//! cut, bit-flipped, spliced and given absurd structure (deep nesting, huge numbers and
//! strings, lengths and counts that claim gigabytes), and each mutant goes through the
//! public loader from a file. Every load must return (no panic, no hang), an error must
//! name the file, and no load may allocate much more than a real file of that size needs.
//!
//! The cases come from a seeded generator (rand), so a failure names its seed and mutant
//! and keeps the input that failed in the test's temporary folder.

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use finetune_studio::data::{self, Dataset, Format, Schema};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// ---- allocation accounting ----

/// The system allocator, counting the bytes live and the most live at once since the last
/// [`reset_peak`]. The loads run one at a time (see [`SERIAL`]), so the peak is the load's.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Starts a new peak at the bytes live now and returns them.
fn reset_peak() -> usize {
    let now = LIVE.load(Ordering::Relaxed);
    PEAK.store(now, Ordering::Relaxed);
    now
}

/// The tests of this file run one at a time, so each load's allocation peak is its own.
static SERIAL: Mutex<()> = Mutex::new(());

/// The most a load of a file of `len` bytes giving `records` records may have live at
/// once: a generous multiple of the file and of the records made from it (a record with
/// load problems takes about 1.5 KB, whatever its size in the file), never what a length
/// in the file claims.
fn allocation_budget(len: usize, records: usize) -> usize {
    (64 << 20) + 32 * len + 4096 * records
}

// ---- the inputs ----

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

/// How a seed file is loaded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Json,
    Jsonl,
    Csv,
    Parquet,
    /// A LLaMA-Factory dataset_info.json; its entries point at the other seeds.
    Info,
}

struct Seed {
    name: &'static str,
    kind: Kind,
    bytes: Vec<u8>,
}

/// The first `n` records of a fixture in the format given.
fn first_records(rel: &str, n: usize, format: Option<Format>, out_name: &str) -> Vec<u8> {
    let ds = data::load(&fixture(rel), None).unwrap();
    let idx: Vec<usize> = (0..n.min(ds.len())).collect();
    let sub = ds.subset(&idx);
    sub.to_bytes(format, Path::new(out_name)).unwrap()
}

/// Small real inputs of every format, written where the dataset_info.json seed finds them.
fn seeds(dir: &Path) -> Vec<Seed> {
    let jsonl = |rel: &str, n: usize| -> Vec<u8> {
        let text = std::fs::read_to_string(fixture(rel)).unwrap();
        text.lines()
            .take(n)
            .flat_map(|l| format!("{l}\n").into_bytes())
            .collect()
    };
    let alpaca = first_records(
        "tests/fixtures/datasets/llamafactory_alpaca_en_demo.json",
        6,
        None,
        "a.json",
    );
    let glaive = first_records(
        "tests/fixtures/datasets/llamafactory_glaive_toolcall_en_demo.json",
        2,
        None,
        "g.json",
    );
    let identity = first_records("examples/data/identity.json", 8, None, "i.json");
    // The entries of the real dataset_info.json that these files answer.
    for (name, bytes) in [
        ("alpaca_en_demo.json", &alpaca),
        ("glaive_toolcall_en_demo.json", &glaive),
        ("identity.json", &identity),
    ] {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
    let sharegpt_jsonl = Format::new(Schema::ShareGpt, data::Encoding::JsonLines);
    vec![
        Seed {
            name: "alpaca.json",
            kind: Kind::Json,
            bytes: alpaca,
        },
        Seed {
            name: "alpaca_zh.jsonl",
            kind: Kind::Jsonl,
            bytes: first_records(
                "tests/fixtures/datasets/llamafactory_alpaca_zh_demo.json",
                6,
                Some(Format::new(Schema::Alpaca, data::Encoding::JsonLines)),
                "z.jsonl",
            ),
        },
        Seed {
            name: "identity.json",
            kind: Kind::Json,
            bytes: identity,
        },
        Seed {
            name: "sharegpt_tools.json",
            kind: Kind::Json,
            bytes: glaive.clone(),
        },
        Seed {
            name: "fastchat.json",
            kind: Kind::Json,
            bytes: first_records(
                "tests/fixtures/datasets/fastchat_dummy_conversation.json",
                3,
                None,
                "f.json",
            ),
        },
        Seed {
            name: "sharegpt.jsonl",
            kind: Kind::Jsonl,
            bytes: first_records(
                "tests/fixtures/datasets/llamafactory_glaive_toolcall_en_demo.json",
                2,
                Some(sharegpt_jsonl),
                "s.jsonl",
            ),
        },
        Seed {
            name: "openai_parts.jsonl",
            kind: Kind::Jsonl,
            bytes: jsonl("tests/fixtures/datasets/llamafactory_v1_sft_demo.jsonl", 5),
        },
        Seed {
            name: "dataset_info.json",
            kind: Kind::Info,
            bytes: std::fs::read(fixture(
                "tests/fixtures/datasets/llamafactory_dataset_info.json",
            ))
            .unwrap(),
        },
        Seed {
            name: "alpaca.csv",
            kind: Kind::Csv,
            bytes: first_records(
                "tests/fixtures/datasets/llamafactory_alpaca_en_demo.json",
                6,
                Some(Format::CSV),
                "a.csv",
            ),
        },
        Seed {
            name: "sharegpt.csv",
            kind: Kind::Csv,
            bytes: first_records(
                "examples/data/identity.json",
                3,
                Some(Format::new(Schema::ShareGpt, data::Encoding::Csv)),
                "s.csv",
            ),
        },
        Seed {
            name: "openai.parquet",
            kind: Kind::Parquet,
            bytes: first_records(
                "tests/fixtures/datasets/llamafactory_glaive_toolcall_en_demo.json",
                3,
                Some(Format::PARQUET),
                "o.parquet",
            ),
        },
        Seed {
            name: "alpaca.parquet",
            kind: Kind::Parquet,
            bytes: first_records(
                "tests/fixtures/datasets/llamafactory_alpaca_en_demo.json",
                6,
                Some(Format::new(Schema::Alpaca, data::Encoding::Parquet)),
                "a.parquet",
            ),
        },
    ]
}

// ---- mutations ----

/// Bytes a structure-minded insertion picks from.
const SPECIAL: &[u8] = b"{}[]\",:\\\n\r\t 0-e.\x00\xff\xc3";

fn pos(rng: &mut StdRng, b: &[u8]) -> usize {
    rng.random_range(0..=b.len())
}

/// One byte-level change anywhere.
fn byte_mutation(rng: &mut StdRng, b: &mut Vec<u8>) -> &'static str {
    if b.is_empty() {
        b.push(rng.random());
        return "insert";
    }
    match rng.random_range(0..6) {
        0 => {
            let at = rng.random_range(0..b.len());
            b.truncate(at);
            "truncate"
        }
        1 => {
            for _ in 0..rng.random_range(1..=4) {
                let i = rng.random_range(0..b.len());
                b[i] ^= 1 << rng.random_range(0..8);
            }
            "flip bits"
        }
        2 => {
            let i = rng.random_range(0..b.len());
            b[i] = rng.random();
            "set byte"
        }
        3 => {
            let at = pos(rng, b);
            let n = rng.random_range(1..=8);
            let ins: Vec<u8> = (0..n)
                .map(|_| {
                    if rng.random_bool(0.7) {
                        SPECIAL[rng.random_range(0..SPECIAL.len())]
                    } else {
                        rng.random()
                    }
                })
                .collect();
            b.splice(at..at, ins);
            "insert bytes"
        }
        4 => {
            let at = rng.random_range(0..b.len());
            let n = rng.random_range(1..=32).min(b.len() - at);
            b.drain(at..at + n);
            "delete bytes"
        }
        _ => {
            let from = rng.random_range(0..b.len());
            let n = rng.random_range(1..=256).min(b.len() - from);
            let piece = b[from..from + n].to_vec();
            let at = pos(rng, b);
            b.splice(at..at, piece);
            "duplicate a slice"
        }
    }
}

/// Offsets just after each `": "` / `":"` (where a JSON object value starts).
fn value_starts(b: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    for i in 0..b.len().saturating_sub(1) {
        if b[i] == b'"' && b[i + 1] == b':' {
            let mut j = i + 2;
            while j < b.len() && b[j] == b' ' {
                j += 1;
            }
            out.push(j);
        }
    }
    out
}

/// The end (one past the closing quote) of the JSON string starting at `b[at] == '"'`.
fn string_end(b: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn pick_value(rng: &mut StdRng, b: &[u8]) -> usize {
    let starts = value_starts(b);
    if starts.is_empty() {
        pos(rng, b)
    } else {
        starts[rng.random_range(0..starts.len())]
    }
}

/// A change that keeps (or abuses) the structure of JSON text: absurd nesting, numbers,
/// strings, counts and types.
fn json_mutation(rng: &mut StdRng, b: &mut Vec<u8>, lines: bool) -> String {
    match rng.random_range(0..9) {
        0 => {
            let depth = [200, 5_000, 200_000][rng.random_range(0..3)];
            let at = pick_value(rng, b);
            let close = rng.random_bool(0.5);
            let mut ins = "[".repeat(depth);
            if close {
                ins.push_str(&"]".repeat(depth));
                ins.push_str(", \"nested\": ");
            }
            b.splice(at..at, ins.into_bytes());
            format!("nested arrays, depth {depth}")
        }
        1 => {
            let depth = [200, 50_000][rng.random_range(0..2)];
            let at = pick_value(rng, b);
            let ins = "{\"a\": ".repeat(depth) + "1" + &"}".repeat(depth) + ", \"deep\": ";
            b.splice(at..at, ins.into_bytes());
            format!("nested objects, depth {depth}")
        }
        2 => {
            const NUMBERS: &[&str] = &[
                "1e999999",
                "-1e-999999",
                "18446744073709551616",
                "-9223372036854775809",
                "0.0000000000000000000000000000000000000000000000001",
                "NaN",
                "-Infinity",
                "1.7976931348623157e309",
                "00012",
                "-",
            ];
            let at = pick_value(rng, b);
            let n = match rng.random_range(0..3) {
                0 => "9".repeat(rng.random_range(400..100_000)),
                _ => NUMBERS[rng.random_range(0..NUMBERS.len())].to_string(),
            };
            let end = if b.get(at) == Some(&b'"') {
                string_end(b, at).unwrap_or(b.len())
            } else {
                at
            };
            let label = format!("number {}…", &n[..n.len().min(24)]);
            b.splice(at..end, n.into_bytes());
            label
        }
        3 => {
            let len = [1 << 16, 1 << 20, 4 << 20][rng.random_range(0..3)];
            let piece: &str = ["x", "\\u00e9", "\\\\", "é", "\\n"][rng.random_range(0..5)];
            let s = piece.repeat(len / piece.len());
            let at = pick_value(rng, b);
            let ins = format!("\"{s}\", \"long\": ");
            b.splice(at..at, ins.into_bytes());
            format!("string of {} MiB of `{piece}`", len >> 20)
        }
        4 => {
            const TYPES: &[&str] = &[
                "null",
                "1",
                "-0.5",
                "true",
                "\"\"",
                "[]",
                "{}",
                "[1, [2]]",
                "{\"a\": null}",
            ];
            let t = TYPES[rng.random_range(0..TYPES.len())];
            let at = pick_value(rng, b);
            b.splice(at..at, format!("{t}, \"was\": ").into_bytes());
            format!("value replaced by {t}")
        }
        5 => {
            let n = [1_000, 100_000][rng.random_range(0..2)];
            let rec = [
                "{}",
                "{\"instruction\": \"i\", \"output\": \"o\"}",
                "[]",
                "0",
            ][rng.random_range(0..4)];
            let sep = if lines { "\n" } else { "," };
            let at = if lines {
                0
            } else {
                b.iter().position(|&c| c == b'[').map_or(0, |p| p + 1)
            };
            let ins = format!("{rec}{sep}").repeat(n);
            b.splice(at..at, ins.into_bytes());
            format!("{n} records `{rec}`")
        }
        6 => {
            const ESCAPES: &[&str] = &[
                "\\ud800",
                "\\udfff\\ud800",
                "\\u12",
                "\\x41",
                "\\",
                "\\u0000",
                "\u{0}",
                "\u{7f}",
            ];
            let e = ESCAPES[rng.random_range(0..ESCAPES.len())];
            let at = pick_value(rng, b);
            let at = if b.get(at) == Some(&b'"') { at + 1 } else { at };
            b.splice(at..at, e.bytes());
            format!("escape {e:?} in a string")
        }
        7 => {
            const PREFIXES: &[&[u8]] = &[
                b"\xEF\xBB\xBF\xEF\xBB\xBF",
                b"\xFF\xFE",
                b"\xFE\xFF",
                b"\xEF\xBB",
                b"\x00",
                b"   \n\n\t",
                b"]",
                b"}",
                b"{\"file_name\": \"x\"}",
            ];
            let p = PREFIXES[rng.random_range(0..PREFIXES.len())];
            b.splice(0..0, p.iter().copied());
            format!("prefix {:?}", String::from_utf8_lossy(p))
        }
        _ => {
            const SUFFIXES: &[&[u8]] = &[b"]", b"garbage", b",", b"{", b"\"", b"\\", b"\n\n\n"];
            let s = SUFFIXES[rng.random_range(0..SUFFIXES.len())];
            b.extend_from_slice(s);
            format!("suffix {:?}", String::from_utf8_lossy(s))
        }
    }
}

fn csv_mutation(rng: &mut StdRng, b: &mut Vec<u8>) -> String {
    match rng.random_range(0..6) {
        0 => {
            let at = pos(rng, b);
            b.insert(at, b'"');
            "unbalanced quote".into()
        }
        1 => {
            let at = pos(rng, b);
            b.splice(at..at, std::iter::repeat_n(b'x', 4 << 20));
            "4 MiB cell".into()
        }
        2 => {
            let at = pos(rng, b);
            let n = [1_000, 100_000][rng.random_range(0..2)];
            b.splice(at..at, std::iter::repeat_n(b',', n));
            format!("{n} extra columns")
        }
        3 => {
            for c in b.iter_mut() {
                if *c == b'\n' {
                    *c = b'\r';
                }
            }
            "CR line ends".into()
        }
        4 => {
            // Two records each (rows of empty cells are records, with problems).
            let n = [1_000, 20_000][rng.random_range(0..2)];
            b.extend(std::iter::repeat_n(b"\n,,\n\"\"\n".iter().copied(), n).flatten());
            format!("{n} pairs of blank rows")
        }
        _ => {
            // A JSON cell (`conversations`, `history`) with absurd structure.
            let depth = [200, 100_000][rng.random_range(0..2)];
            let at = b
                .windows(2)
                .position(|w| w == b"\"[")
                .map_or_else(|| pos(rng, b), |p| p + 1);
            b.splice(at..at, "[".repeat(depth).into_bytes());
            format!("JSON cell nested {depth} deep")
        }
    }
}

/// The offsets of a Parquet file's Thrift metadata, from its footer.
fn parquet_metadata(b: &[u8]) -> Option<(usize, usize)> {
    let n = b.len();
    let len = u32::from_le_bytes(b.get(n.checked_sub(8)?..n - 4)?.try_into().ok()?) as usize;
    let start = (n - 8).checked_sub(len)?;
    Some((start, n - 8))
}

/// A change aimed at a Parquet file's lengths and counts: the footer's metadata length, the
/// Thrift metadata (list sizes, offsets, varints), the page headers.
fn parquet_mutation(rng: &mut StdRng, b: &mut Vec<u8>) -> String {
    let n = b.len();
    let Some((meta_start, meta_end)) = parquet_metadata(b) else {
        return byte_mutation(rng, b).into();
    };
    match rng.random_range(0..6) {
        0 => {
            let claims = [
                0,
                1,
                7,
                (n - 8) as u32,
                (n - 7) as u32,
                n as u32,
                u32::MAX,
                0xFFFF_FFF0,
                1 << 31,
                rng.random(),
            ];
            let c = claims[rng.random_range(0..claims.len())];
            b[n - 8..n - 4].copy_from_slice(&c.to_le_bytes());
            format!("footer claims {c} bytes of metadata")
        }
        1 => {
            let i = [0, 1, 3, n - 4, n - 1][rng.random_range(0..5)];
            b[i] ^= 0x20;
            format!("magic byte {i} changed")
        }
        2 => {
            for _ in 0..rng.random_range(1..=3) {
                let i = rng.random_range(meta_start..meta_end);
                b[i] = rng.random();
            }
            "metadata bytes changed".into()
        }
        3 => {
            // Varints as large as they go, or list headers claiming 2^31 elements.
            const BOMBS: &[&[u8]] = &[
                &[0xFF, 0xFF, 0xFF, 0xFF, 0x0F],
                &[0xFE, 0xFF, 0xFF, 0xFF, 0x0F],
                &[0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x01],
                &[0xFC, 0xFF, 0xFF, 0xFF, 0xFF, 0x07],
                &[0xF8, 0xFF, 0xFF, 0xFF, 0xFF, 0x07],
                &[0xF5, 0xFF, 0xFF, 0xFF, 0xFF, 0x07],
            ];
            let bomb = BOMBS[rng.random_range(0..BOMBS.len())];
            let i = rng.random_range(meta_start..meta_end);
            let end = (i + bomb.len()).min(meta_end);
            b[i..end].copy_from_slice(&bomb[..end - i]);
            format!("metadata varint {bomb:02x?} at {}", i - meta_start)
        }
        4 => {
            // The first page header's sizes (fields 2 and 3, zigzag i32 varints).
            let claim: i32 = [i32::MAX, 1 << 30, -1, 0, 100_000_000][rng.random_range(0..5)];
            let field = rng.random_range(0..2);
            match page_header_size_field(b, 4, field) {
                Some((at, end)) => {
                    b.splice(at..end, zigzag_varint(claim));
                    format!("first page header field {} claims {claim}", field + 2)
                }
                None => byte_mutation(rng, b).into(),
            }
        }
        _ => {
            for _ in 0..rng.random_range(1..=3) {
                let i = rng.random_range(4..meta_start.max(5));
                b[i] = rng.random();
            }
            "column data bytes changed".into()
        }
    }
}

fn zigzag_varint(v: i32) -> Vec<u8> {
    let mut z = ((v << 1) ^ (v >> 31)) as u32;
    let mut out = Vec::new();
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return out;
        }
        out.push((z as u8 & 0x7F) | 0x80);
        z >>= 7;
    }
}

/// The byte range of the varint of field 2 (`field` 0: uncompressed_page_size) or field 3
/// (`field` 1: compressed_page_size) of the page header at `at`: compact Thrift, fields
/// 1–3 are i32s in order (header byte 0x15).
fn page_header_size_field(b: &[u8], mut at: usize, field: usize) -> Option<(usize, usize)> {
    let skip_varint = |b: &[u8], mut i: usize| -> Option<usize> {
        while *b.get(i)? & 0x80 != 0 {
            i += 1;
        }
        Some(i + 1)
    };
    for _ in 0..=field {
        if *b.get(at)? != 0x15 {
            return None;
        }
        at = skip_varint(b, at + 1)?;
    }
    if *b.get(at)? != 0x15 {
        return None;
    }
    Some((at + 1, skip_varint(b, at + 1)?))
}

/// One mutant of a seed.
fn mutate(rng: &mut StdRng, seed: &Seed) -> (String, Vec<u8>) {
    let mut b = seed.bytes.clone();
    let label = if rng.random_bool(0.5) {
        let k = rng.random_range(1..=3);
        let ops: Vec<&str> = (0..k).map(|_| byte_mutation(rng, &mut b)).collect();
        ops.join(" + ")
    } else {
        match seed.kind {
            Kind::Json | Kind::Info => json_mutation(rng, &mut b, false),
            Kind::Jsonl => json_mutation(rng, &mut b, true),
            Kind::Csv => csv_mutation(rng, &mut b),
            Kind::Parquet => parquet_mutation(rng, &mut b),
        }
    };
    (label, b)
}

// ---- running the cases ----

/// What went wrong with one case.
struct Failure {
    case: String,
    input: PathBuf,
    what: String,
}

/// Loads `path` the ways the studio does for its kind and checks the outcome: every
/// problem and every error names the file (for a dataset_info.json, it or the entry's
/// file). Returns the records loaded.
fn check_load(path: &Path, kind: Kind) -> Result<usize, String> {
    let name = path.display().to_string();
    let checked = |r: Result<Dataset, data::DataError>, names: &[&str]| -> Result<usize, String> {
        match r {
            Ok(ds) => {
                for p in ds.problems() {
                    let file = p.file.display().to_string();
                    if !names.contains(&file.as_str()) {
                        return Err(format!("a problem names `{file}`, not the file: {p}"));
                    }
                }
                Ok(ds.len())
            }
            Err(e) => {
                let text = format!("{e:#}");
                if names.iter().any(|n| text.contains(n)) {
                    Ok(0)
                } else {
                    Err(format!("the error does not name the file: {text}"))
                }
            }
        }
    };
    match kind {
        Kind::Info => {
            let dir = path.parent().unwrap();
            let files: Vec<String> = [
                "alpaca_en_demo.json",
                "glaive_toolcall_en_demo.json",
                "identity.json",
            ]
            .iter()
            .map(|f| dir.join(f).display().to_string())
            .collect();
            let mut names = vec![name.as_str()];
            names.extend(files.iter().map(String::as_str));
            let mut out = vec![checked(data::load(path, None), &names)?];
            if let Err(e) = data::list_dataset_info_entries(path) {
                let text = e.to_string();
                if !text.contains(&name) {
                    return Err(format!("the error does not name the file: {text}"));
                }
            }
            for entry in ["alpaca_en_demo", "glaive_toolcall_en_demo", "identity"] {
                let spec = PathBuf::from(format!("{name}#{entry}"));
                out.push(checked(data::load(&spec, None), &names)?);
            }
            Ok(out.iter().sum())
        }
        _ => checked(data::load(path, None), &[name.as_str()]),
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into())
}

/// Runs one case: writes the input, loads it, checks it never panics, names the file in
/// errors and stays within its allocation budget. Returns the failure, if any, and the
/// time the load took.
fn run_case(
    dir: &Path,
    kind: Kind,
    file_name: &str,
    bytes: &[u8],
    case: &str,
) -> (Option<Failure>, Duration) {
    let path = dir.join(file_name);
    std::fs::write(&path, bytes).unwrap();
    let base = reset_peak();
    let t = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(|| check_load(&path, kind)));
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    let elapsed = t.elapsed();
    let what = match r {
        Err(p) => Some(format!("panicked: {}", panic_text(p.as_ref()))),
        Ok(Err(e)) => Some(e),
        Ok(Ok(records)) if peak > allocation_budget(bytes.len(), records) => Some(format!(
            "allocated {} MiB at once for a file of {} bytes ({records} records)",
            peak >> 20,
            bytes.len()
        )),
        Ok(Ok(_)) => None,
    };
    let failure = what.map(|what| {
        let keep = dir.join(format!("failed-{}-{file_name}", case_id(case)));
        std::fs::copy(&path, &keep).unwrap();
        Failure {
            case: case.to_string(),
            input: keep,
            what,
        }
    });
    (failure, elapsed)
}

fn case_id(case: &str) -> String {
    case.chars()
        .take_while(|c| *c != ' ')
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect()
}

/// Runs `body` on its own thread and fails if it has not finished after `limit`, naming the
/// case it was on.
fn within<T: Send + 'static>(
    limit: Duration,
    current: Arc<Mutex<String>>,
    body: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(catch_unwind(AssertUnwindSafe(body)));
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => v,
        Ok(Err(p)) => std::panic::resume_unwind(p),
        Err(_) => panic!(
            "the mutants did not finish within {limit:?}; stuck on {}",
            current.lock().unwrap()
        ),
    }
}

fn report(failures: &[Failure], dir: tempfile::TempDir, total: usize) {
    if failures.is_empty() {
        return;
    }
    let kept = dir.keep();
    let mut msg = format!(
        "{} of {total} mutants failed (inputs kept in {}):\n",
        failures.len(),
        kept.display()
    );
    // The first 20 in the message, the rest on stderr.
    for (i, f) in failures.iter().enumerate() {
        let line = format!(
            "  {}: {}\n    input {}\n",
            f.case,
            f.what,
            f.input.display()
        );
        if i < 20 {
            msg.push_str(&line);
        } else {
            eprint!("{line}");
        }
    }
    panic!("{msg}");
}

const SEED: u64 = 0x5eed_da7a;
const MUTANTS_PER_SEED: usize = 300;

#[test]
fn mutants_of_every_format_load_or_fail_cleanly() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::Builder::new()
        .prefix("data_mutation-")
        .tempdir()
        .unwrap();
    // If the process dies (a stack overflow, an abort), the input being loaded is left here.
    eprintln!("mutants are written to {}", dir.path().display());
    let current = Arc::new(Mutex::new(String::new()));
    let cur = current.clone();
    let root = dir.path().to_path_buf();
    let t = Instant::now();
    let (failures, total) = within(Duration::from_secs(120), current, move || {
        let seeds = seeds(&root);
        let mut failures = Vec::new();
        let mut total = 0;
        for (si, seed) in seeds.iter().enumerate() {
            // The unmutated seed loads, with records.
            let name = seed.name;
            let path = root.join(name);
            std::fs::write(&path, &seed.bytes).unwrap();
            let spec = match seed.kind {
                Kind::Info => PathBuf::from(format!("{}#identity", path.display())),
                _ => path,
            };
            match data::load(&spec, None) {
                Ok(ds) => assert!(!ds.is_empty(), "{name}"),
                Err(e) => panic!("the seed {name} does not load: {e}"),
            }
            let mut rng = StdRng::seed_from_u64(SEED ^ si as u64);
            let t = Instant::now();
            let mut slowest = (Duration::ZERO, String::new());
            for i in 0..MUTANTS_PER_SEED {
                let (label, bytes) = mutate(&mut rng, seed);
                let case = format!("{name}#{i} (seed {SEED:#x}^{si}): {label}");
                *cur.lock().unwrap() = case.clone();
                total += 1;
                let (failure, took) = run_case(&root, seed.kind, name, &bytes, &case);
                failures.extend(failure);
                if took > slowest.0 {
                    slowest = (took, case);
                }
            }
            eprintln!(
                "{name}: {MUTANTS_PER_SEED} mutants in {:.2?}, slowest {:.2?}: {}",
                t.elapsed(),
                slowest.0,
                slowest.1
            );
        }
        (failures, total)
    });
    eprintln!("{total} mutants in {:.1?}", t.elapsed());
    assert!(total >= 3000, "{total}");
    report(&failures, dir, total);
}

/// A Parquet footer that claims 4 GB of metadata, a page that claims 2 GiB uncompressed and
/// Thrift lists that claim 2^31 elements are errors, found without allocating the claim.
#[test]
fn parquet_length_claims_are_not_allocated() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let good = first_records(
        "tests/fixtures/datasets/llamafactory_glaive_toolcall_en_demo.json",
        3,
        Some(Format::PARQUET),
        "o.parquet",
    );
    let n = good.len();
    let (meta_start, meta_end) = parquet_metadata(&good).unwrap();
    let mut cases: Vec<(String, Vec<u8>)> = Vec::new();
    for claim in [0xFFFF_FFF0u32, u32::MAX, (n - 8) as u32, 1 << 31] {
        let mut b = good.clone();
        b[n - 8..n - 4].copy_from_slice(&claim.to_le_bytes());
        cases.push((format!("footer claims {claim} bytes of metadata"), b));
    }
    for field in 0..2 {
        for claim in [i32::MAX, 1 << 30] {
            let mut b = good.clone();
            let (at, end) = page_header_size_field(&b, 4, field).unwrap();
            b.splice(at..end, zigzag_varint(claim));
            cases.push((format!("page header field {} claims {claim}", field + 2), b));
        }
    }
    for at in (meta_start..meta_end).step_by(7) {
        let mut b = good.clone();
        let bomb = [0xFC, 0xFF, 0xFF, 0xFF, 0xFF, 0x07];
        let end = (at + bomb.len()).min(meta_end);
        b[at..end].copy_from_slice(&bomb[..end - at]);
        cases.push((
            format!(
                "list header claiming 2^31 structs at metadata byte {}",
                at - meta_start
            ),
            b,
        ));
    }
    let mut failures = Vec::new();
    for (case, bytes) in &cases {
        let (failure, took) = run_case(dir.path(), Kind::Parquet, "claims.parquet", bytes, case);
        failures.extend(failure);
        assert!(took < Duration::from_secs(10), "{case}: {took:?}");
    }
    // The footer and page header claims cannot load.
    for (case, bytes) in cases.iter().take(8) {
        let path = dir.path().join("claims.parquet");
        std::fs::write(&path, bytes).unwrap();
        let err = data::load(&path, None).err();
        assert!(err.is_some(), "{case}: loaded");
    }
    let total = cases.len();
    report(&failures, dir, total);
}

/// A sparse file of 4 GiB whose footer claims nearly all of it as metadata: the reader must
/// not read (or allocate) 4 GiB to find out it is not Thrift.
#[test]
fn parquet_footer_claiming_a_huge_file_is_not_read_whole() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.parquet");
    let good = first_records(
        "tests/fixtures/datasets/llamafactory_alpaca_en_demo.json",
        2,
        Some(Format::new(Schema::Alpaca, data::Encoding::Parquet)),
        "a.parquet",
    );
    let size: u64 = 4 << 30;
    {
        use std::io::{Seek, SeekFrom, Write};
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&good[..4]).unwrap();
        f.set_len(size).unwrap();
        f.seek(SeekFrom::Start(size - 8)).unwrap();
        f.write_all(&(0xFFFF_FF00u32).to_le_bytes()).unwrap();
        f.write_all(b"PAR1").unwrap();
    }
    let base = reset_peak();
    let t = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(|| data::load(&path, None)));
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    let elapsed = t.elapsed();
    let err = match r {
        Ok(Err(e)) => e.to_string(),
        Ok(Ok(ds)) => panic!("loaded {} records", ds.len()),
        Err(p) => panic!("panicked: {}", panic_text(p.as_ref())),
    };
    assert!(err.contains(&path.display().to_string()), "{err}");
    assert!(peak < 64 << 20, "allocated {} MiB: {err}", peak >> 20);
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}: {err}");
}
