//! Mutation tests for the model parsers: small valid GGUF files, safetensors files and
//! `config.json`s, mutated a few thousand ways from fixed seeds (truncations, flipped
//! bytes, absurd counts, lengths, dims, offsets and type ids in the GGUF header, lying
//! safetensors headers, zero, negative, huge, missing and mistyped config fields), each
//! loaded through the public loader and described by the catalog. None may panic, hang,
//! or allocate what the file merely claims: a counting allocator tracks the peak of live
//! heap bytes during each load, which may not exceed the file's size by more than
//! [`MAX_EXTRA_BYTES`]. A failing mutant is kept under `CARGO_TARGET_TMPDIR` and named in
//! the failure, with the seed that regenerates it.

use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use candle_core::quantized::{gguf_file, GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value as Json};

use finetune_studio::export::gguf::{write_gguf, GgufType};
use finetune_studio::hub::catalog;
use finetune_studio::model::config::Architecture;
use finetune_studio::model::{self, ModelLocation, ResolvedModel};
use finetune_studio::testkit::{tiny_spm_spec, write_tiny_gguf_with_tokenizer, write_tiny_model};

// ---------------------------------------------------------------------------------------
// The counting allocator.

/// How far a load's peak of live heap bytes may exceed the file's size.
const MAX_EXTRA_BYTES: usize = 256 << 20;
/// A single request above this is refused outright (the process then aborts with Rust's
/// "memory allocation failed" message, after the note below names the mutants in flight).
const HUGE_REQUEST: usize = 4 << 30;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

/// The seed of the mutant each family is loading (0: none), for the note on a huge request.
static IN_FLIGHT: [AtomicU64; 4] = [const { AtomicU64::new(0) }; 4];
const FAMILIES: [&str; 4] = ["gguf-bytes", "gguf-values", "safetensors", "config"];

struct Counting;

/// Writes `n` in decimal into `buf`, returning the digits; no allocation.
fn digits(mut n: u64, buf: &mut [u8; 20]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &buf[i..];
        }
    }
}

fn raw_stderr(bytes: &[u8]) {
    // SAFETY: writing a valid buffer to fd 2.
    unsafe {
        libc::write(2, bytes.as_ptr().cast(), bytes.len());
    }
}

fn note_huge_request(size: usize) {
    let mut buf = [0u8; 20];
    raw_stderr(b"\nmodel_mutation: a single allocation of ");
    raw_stderr(digits(size as u64, &mut buf));
    raw_stderr(b" bytes was requested; mutants in flight (family, seed):");
    for (family, seed) in FAMILIES.iter().zip(&IN_FLIGHT) {
        let s = seed.load(Ordering::Relaxed);
        if s != 0 {
            raw_stderr(b" ");
            raw_stderr(family.as_bytes());
            raw_stderr(b" ");
            raw_stderr(digits(s, &mut buf));
        }
    }
    raw_stderr(b" (regenerate with the seed; the work files are in CARGO_TARGET_TMPDIR)\n");
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > HUGE_REQUEST {
            note_huge_request(layout.size());
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > HUGE_REQUEST {
            note_huge_request(layout.size());
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > HUGE_REQUEST {
            note_huge_request(new_size);
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded unchanged.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                let now = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed)
                    + (new_size - layout.size());
                PEAK.fetch_max(now, Ordering::Relaxed);
            } else {
                LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
            }
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

// ---------------------------------------------------------------------------------------
// Loading a mutant.

/// What loading one file did.
struct Outcome {
    /// `Err` holds the panic message.
    result: Result<Result<(), String>, String>,
    /// Peak live heap bytes above those live before the load.
    peak_extra: usize,
    elapsed: Duration,
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(non-string panic)".into())
}

/// One test at a time in this process: the allocation peak a load records is the whole
/// process's, so another test's thread building its mutants meanwhile would count too.
static ONE_TEST: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_test_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    let guard = ONE_TEST.lock().unwrap_or_else(|p| p.into_inner());
    // Errors capture a backtrace when RUST_BACKTRACE is set (as in many shells), and
    // symbolizing it reads this binary's debug info: a quarter of a gigabyte that no file
    // asked for. The allocation checks are about what the files claim, so backtraces of
    // errors (not of panics) stay off here; std reads this once, before the first error.
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::env::set_var("RUST_LIB_BACKTRACE", "0"));
    guard
}

/// Describes and loads `location` (as the Models tab and `--model` would), catching panics.
fn load(location: &ModelLocation) -> Outcome {
    let start = Instant::now();
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let result = catch_unwind(AssertUnwindSafe(|| -> Result<(), String> {
        let described = catalog::describe(location.path())
            .map(|_| ())
            .map_err(|e| format!("{e:#}"));
        let resolved = ResolvedModel {
            location: location.clone(),
            hub_id: None,
        };
        let loaded = model::load_resolved(&resolved, &Device::Cpu)
            .map(|_| ())
            .map_err(|e| format!("{e:#}"));
        // Every refusal names the file (a folder's files carry the folder's path).
        let path = location.path().display().to_string();
        for e in [&described, &loaded]
            .into_iter()
            .filter_map(|r| r.as_ref().err())
        {
            assert!(e.contains(&path), "the error does not name {path}: {e}");
        }
        loaded
    }))
    .map_err(|p| panic_message(&*p));
    let peak_extra = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    Outcome {
        result,
        peak_extra,
        elapsed: start.elapsed(),
    }
}

fn load_err(location: &ModelLocation) -> String {
    let resolved = ResolvedModel {
        location: location.clone(),
        hub_id: None,
    };
    match model::load_resolved(&resolved, &Device::Cpu) {
        Ok(_) => panic!("{location:?} loaded"),
        Err(e) => format!("{e:#}"),
    }
}

/// Where failing mutants are kept.
fn keep_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("model_mutation");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Runs `count` mutants of one family on a thread with an overall timeout. `make` builds
/// the mutant of a seed in place (returning its location, the mutated file and a
/// description); every panic, over-allocation and slow load is collected, and the
/// offending file kept.
fn run_family(
    family: usize,
    count: u64,
    make: impl FnMut(&mut StdRng) -> (ModelLocation, PathBuf, String) + Send + 'static,
) {
    const TIMEOUT: Duration = Duration::from_secs(300);
    let (tx, rx) = std::sync::mpsc::channel();
    let mut make = make;
    let name = FAMILIES[family];
    std::thread::Builder::new()
        .name(format!("mutants-{name}"))
        .spawn(move || {
            let started = Instant::now();
            let mut failures = Vec::new();
            let (mut refused, mut slowest) = (0u64, Duration::ZERO);
            // `MODEL_MUTATION_SEED=<seed>` runs that one mutant and says what it is.
            let only: Option<u64> = std::env::var("MODEL_MUTATION_SEED")
                .ok()
                .and_then(|s| s.trim().parse().ok());
            let seeds: Vec<u64> = match only {
                Some(seed) if seed >> 32 == family as u64 + 1 => vec![seed],
                Some(_) => Vec::new(),
                None => (1..=count)
                    .map(|i| ((family as u64 + 1) << 32) | i)
                    .collect(),
            };
            for &seed in &seeds {
                IN_FLIGHT[family].store(seed, Ordering::Relaxed);
                let mut rng = StdRng::seed_from_u64(seed);
                let (location, file, what) = make(&mut rng);
                let size = std::fs::metadata(&file).map(|m| m.len() as usize).unwrap_or(0);
                if only.is_some() {
                    eprintln!("{name} mutant seed {seed}: {what}");
                }
                let out = load(&location);
                if only.is_some() {
                    eprintln!(
                        "  -> {:?}, peak {} bytes, {:?}",
                        out.result, out.peak_extra, out.elapsed
                    );
                }
                slowest = slowest.max(out.elapsed);
                let problem = match &out.result {
                    Err(panic) => Some(format!("panicked: {panic}")),
                    Ok(_) if out.peak_extra > size + MAX_EXTRA_BYTES => Some(format!(
                        "allocated {} bytes for a {size}-byte file",
                        out.peak_extra
                    )),
                    Ok(_) if out.elapsed > Duration::from_secs(20) => {
                        Some(format!("took {:?}", out.elapsed))
                    }
                    Ok(Err(_)) => {
                        refused += 1;
                        None
                    }
                    Ok(Ok(())) => None,
                };
                if let Some(problem) = problem {
                    let ext = file.extension().and_then(|e| e.to_str()).unwrap_or("bin");
                    let kept = keep_dir().join(format!("{name}-{seed}.{ext}"));
                    let _ = std::fs::copy(&file, &kept);
                    failures.push(format!(
                        "{name} mutant seed {seed} ({what}): {problem}; file kept at {}",
                        kept.display()
                    ));
                }
            }
            IN_FLIGHT[family].store(0, Ordering::Relaxed);
            let count = seeds.len();
            eprintln!(
                "{name}: {count} mutants, {refused} refused with an error, slowest load {slowest:?}, {:?} in all",
                started.elapsed()
            );
            let _ = tx.send(failures);
        })
        .unwrap();
    match rx.recv_timeout(TIMEOUT) {
        Ok(failures) => assert!(
            failures.is_empty(),
            "{} of {count} {name} mutants failed:\n{}",
            failures.len(),
            failures.join("\n")
        ),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!(
            "{name} mutants did not finish within {TIMEOUT:?}; mutant seed {} was in flight",
            IN_FLIGHT[family].load(Ordering::Relaxed)
        ),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!(
            "{name} mutants: making mutant seed {} failed (see the panic above)",
            IN_FLIGHT[family].load(Ordering::Relaxed)
        ),
    }
}

// ---------------------------------------------------------------------------------------
// Valid files to start from.

/// Three small GGUF files: a Llama with a SentencePiece-style vocabulary in f32, a Qwen2
/// with a byte-level BPE in Q8_0, a Llama with byte-level BPE in f16.
fn gguf_bases(dir: &Path) -> Vec<Vec<u8>> {
    let spm = dir.join("spm.gguf");
    write_tiny_gguf_with_tokenizer(&spm, &tiny_spm_spec(), 3).unwrap();
    let mut out = vec![std::fs::read(&spm).unwrap()];
    for (arch, ty) in [
        (Architecture::Qwen2, GgufType::Q8_0),
        (Architecture::Llama, GgufType::F16),
    ] {
        let folder = write_tiny_model(&dir.join(format!("{arch:?}")), arch, 5).unwrap();
        let m = model::load_hf_folder(&folder, &Device::Cpu).unwrap();
        let p = dir.join(format!("{arch:?}.gguf"));
        write_gguf(&m, &p, ty).unwrap();
        out.push(std::fs::read(&p).unwrap());
    }
    out
}

/// Where each field of a GGUF header lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Slot {
    Magic,
    Version,
    TensorCount,
    KvCount,
    KeyLen,
    ValueType,
    StringLen,
    ArrayType,
    ArrayLen,
    Scalar,
    NameLen,
    NDims,
    Dim,
    DType,
    Offset,
}

struct GgufLayout {
    /// (slot, byte offset, width)
    fields: Vec<(Slot, usize, usize)>,
    header_end: usize,
}

fn rd(b: &[u8], at: usize, width: usize) -> u64 {
    let mut x = [0u8; 8];
    x[..width].copy_from_slice(&b[at..at + width]);
    u64::from_le_bytes(x)
}

/// Walks a (valid, version 2 or 3) GGUF header, recording every field.
fn gguf_layout(b: &[u8]) -> GgufLayout {
    let mut fields = Vec::new();
    let mut at = 0;
    let mut field = |slot, at: &mut usize, width| {
        fields.push((slot, *at, width));
        let v = rd(b, *at, width);
        *at += width;
        v
    };
    field(Slot::Magic, &mut at, 4);
    field(Slot::Version, &mut at, 4);
    let tensors = field(Slot::TensorCount, &mut at, 8);
    let kvs = field(Slot::KvCount, &mut at, 8);
    fn value(ty: u64, at: &mut usize, field: &mut impl FnMut(Slot, &mut usize, usize) -> u64) {
        match ty {
            0 | 1 | 7 => {
                field(Slot::Scalar, at, 1);
            }
            2 | 3 => {
                field(Slot::Scalar, at, 2);
            }
            4..=6 => {
                field(Slot::Scalar, at, 4);
            }
            10..=12 => {
                field(Slot::Scalar, at, 8);
            }
            8 => {
                let n = field(Slot::StringLen, at, 8);
                *at += n as usize;
            }
            9 => {
                let ty = field(Slot::ArrayType, at, 4);
                let n = field(Slot::ArrayLen, at, 8);
                for _ in 0..n {
                    value(ty, at, field);
                }
            }
            _ => panic!("bad value type {ty} in a base file"),
        }
    }
    for _ in 0..kvs {
        let n = field(Slot::KeyLen, &mut at, 8);
        at += n as usize;
        let ty = field(Slot::ValueType, &mut at, 4);
        value(ty, &mut at, &mut field);
    }
    for _ in 0..tensors {
        let n = field(Slot::NameLen, &mut at, 8);
        at += n as usize;
        let dims = field(Slot::NDims, &mut at, 4);
        for _ in 0..dims {
            field(Slot::Dim, &mut at, 8);
        }
        field(Slot::DType, &mut at, 4);
        field(Slot::Offset, &mut at, 8);
    }
    GgufLayout {
        fields,
        header_end: at,
    }
}

/// An absurd, or merely wrong, replacement for a `width`-byte field holding `orig`.
fn absurd(rng: &mut StdRng, orig: u64, width: usize) -> u64 {
    let wide = [
        0,
        1,
        2,
        3,
        255,
        1 << 16,
        (1 << 31) - 1,
        1 << 31,
        u32::MAX as u64,
        1 << 32,
        1 << 40,
        1 << 60,
        1 << 62,
        1 << 63,
        u64::MAX,
        u64::MAX - 7,
    ];
    let narrow = [
        0,
        1,
        2,
        3,
        4,
        5,
        6,
        7,
        8,
        9,
        10,
        11,
        12,
        13,
        14,
        15,
        16,
        29,
        30,
        31,
        255,
        1 << 16,
        1 << 31,
        u32::MAX as u64,
    ];
    let v = match rng.random_range(0..10) {
        0 => orig.wrapping_add(1),
        1 => orig.wrapping_sub(1),
        2 => orig.wrapping_mul(2),
        3 => rng.random(),
        _ if width >= 8 => wide[rng.random_range(0..wide.len())],
        _ => narrow[rng.random_range(0..narrow.len())],
    };
    if width >= 8 {
        v
    } else {
        v & ((1u64 << (8 * width)) - 1)
    }
}

fn write_field(b: &mut [u8], at: usize, width: usize, v: u64) {
    b[at..at + width].copy_from_slice(&v.to_le_bytes()[..width]);
}

/// A byte-level mutant of a GGUF file: truncated, bytes flipped, or header fields set to
/// absurd values.
fn gguf_byte_mutant(base: &[u8], layout: &GgufLayout, rng: &mut StdRng) -> (Vec<u8>, String) {
    let mut b = base.to_vec();
    match rng.random_range(0..10) {
        0 | 1 => {
            let cut = if rng.random_bool(0.6) {
                rng.random_range(0..layout.header_end)
            } else {
                rng.random_range(0..b.len())
            };
            b.truncate(cut);
            (b, format!("truncated to {cut} bytes"))
        }
        2 | 3 => {
            let n = rng.random_range(1..=6);
            let mut at = Vec::new();
            for _ in 0..n {
                let i = if rng.random_bool(0.8) {
                    rng.random_range(0..layout.header_end)
                } else {
                    rng.random_range(0..b.len())
                };
                b[i] ^= rng.random_range(1..=255u8);
                at.push(i);
            }
            (b, format!("bytes flipped at {at:?}"))
        }
        k => {
            // Fields by kind first, so the few counts are hit as often as the many dims.
            let kinds: Vec<Slot> = {
                let mut k: Vec<Slot> = layout.fields.iter().map(|f| f.0).collect();
                k.dedup();
                let mut seen = Vec::new();
                for s in k {
                    if !seen.contains(&s) {
                        seen.push(s);
                    }
                }
                seen
            };
            let n = if k == 9 { rng.random_range(2..=3) } else { 1 };
            let mut what = Vec::new();
            for _ in 0..n {
                let kind = kinds[rng.random_range(0..kinds.len())];
                let of_kind: Vec<_> = layout.fields.iter().filter(|f| f.0 == kind).collect();
                let &(slot, at, width) = of_kind[rng.random_range(0..of_kind.len())];
                let orig = rd(&b, at, width);
                let v = absurd(rng, orig, width);
                write_field(&mut b, at, width, v);
                what.push(format!("{slot:?} at {at}: {orig} -> {v}"));
            }
            (b, what.join(", "))
        }
    }
}

/// A GGUF file's metadata and tensors, to be written again with changes.
struct GgufParts {
    metadata: Vec<(String, gguf_file::Value)>,
    tensors: Vec<(String, QTensor)>,
}

fn gguf_parts(bytes: &[u8]) -> GgufParts {
    let mut r = std::io::Cursor::new(bytes);
    let content = gguf_file::Content::read(&mut r).unwrap();
    let mut metadata: Vec<_> = content.metadata.clone().into_iter().collect();
    metadata.sort_by(|a, b| a.0.cmp(&b.0));
    let mut names: Vec<(&String, u64)> = content
        .tensor_infos
        .iter()
        .map(|(n, t)| (n, t.offset))
        .collect();
    names.sort_by_key(|x| x.1);
    let tensors = names
        .into_iter()
        .map(|(n, _)| (n.clone(), content.tensor(&mut r, n, &Device::Cpu).unwrap()))
        .collect();
    GgufParts { metadata, tensors }
}

fn write_parts(parts: &GgufParts, path: &Path) {
    let md: Vec<(&str, &gguf_file::Value)> = parts
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v))
        .collect();
    let ts: Vec<(&str, &QTensor)> = parts.tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(path).unwrap();
    gguf_file::write(&mut f, &md, &ts).unwrap();
}

fn set_md(parts: &mut GgufParts, key: &str, value: Option<gguf_file::Value>) {
    parts.metadata.retain(|(k, _)| k != key);
    if let Some(v) = value {
        parts.metadata.push((key.to_string(), v));
    }
}

fn md_value<'a>(parts: &'a GgufParts, key: &str) -> Option<&'a gguf_file::Value> {
    parts
        .metadata
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn random_tensor(rng: &mut StdRng, dims: &[usize]) -> Tensor {
    let n: usize = dims.iter().product();
    let data: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(data, dims, &Device::Cpu).unwrap()
}

/// A value-level mutant: metadata values replaced, removed or mistyped, tokenizer arrays
/// out of step, tensors of the wrong shape or type, missing or extra.
fn gguf_value_mutant(base: &GgufParts, rng: &mut StdRng) -> (GgufParts, String) {
    use gguf_file::Value as V;
    let mut parts = GgufParts {
        metadata: base.metadata.clone(),
        tensors: base
            .tensors
            .iter()
            .map(|(n, t)| {
                let d = t.dequantize(&Device::Cpu).unwrap();
                (n.clone(), QTensor::quantize(&d, t.dtype()).unwrap())
            })
            .collect(),
    };
    let arch = md_value(&parts, "general.architecture")
        .and_then(|v| v.to_string().ok().cloned())
        .unwrap_or_default();
    let mut what = Vec::new();
    for _ in 0..rng.random_range(1..=2) {
        match rng.random_range(0..10) {
            0..=4 => {
                let keys = [
                    "embedding_length",
                    "feed_forward_length",
                    "block_count",
                    "attention.head_count",
                    "attention.head_count_kv",
                    "attention.key_length",
                    "attention.value_length",
                    "attention.layer_norm_rms_epsilon",
                    "rope.freq_base",
                    "rope.dimension_count",
                    "context_length",
                    "vocab_size",
                ];
                let key = match rng.random_range(0..16) {
                    0 => "general.architecture".to_string(),
                    1 => "general.alignment".to_string(),
                    2 => "tokenizer.ggml.bos_token_id".to_string(),
                    3 => "tokenizer.ggml.eos_token_id".to_string(),
                    _ => format!("{arch}.{}", keys[rng.random_range(0..keys.len())]),
                };
                let values = [
                    Some(V::U32(0)),
                    Some(V::U32(1)),
                    Some(V::U32(2)),
                    Some(V::U32(3)),
                    Some(V::U32(7)),
                    Some(V::U32(63)),
                    Some(V::U32(64)),
                    Some(V::U32(128)),
                    Some(V::U32(4096)),
                    Some(V::U32(1 << 20)),
                    Some(V::U32(u32::MAX)),
                    Some(V::U64(1 << 40)),
                    Some(V::U64(u64::MAX)),
                    Some(V::I32(-1)),
                    Some(V::I64(i64::MIN)),
                    Some(V::F32(0.0)),
                    Some(V::F32(-1.0)),
                    Some(V::F32(f32::NAN)),
                    Some(V::F32(f32::INFINITY)),
                    Some(V::F32(1e-45)),
                    Some(V::F64(1e300)),
                    Some(V::String("llama".into())),
                    Some(V::String("qwen3".into())),
                    Some(V::String(String::new())),
                    Some(V::Bool(true)),
                    Some(V::Array(Vec::new())),
                    Some(V::Array(vec![V::U32(1), V::U32(2)])),
                    None,
                ];
                let v = values[rng.random_range(0..values.len())].clone();
                what.push(format!("{key} = {v:?}"));
                set_md(&mut parts, &key, v);
            }
            5 | 6 => {
                // The tokenizer's arrays out of step with each other or broken.
                let key = [
                    "tokenizer.ggml.tokens",
                    "tokenizer.ggml.token_type",
                    "tokenizer.ggml.scores",
                    "tokenizer.ggml.merges",
                    "tokenizer.ggml.model",
                    "tokenizer.ggml.pre",
                ][rng.random_range(0..6)];
                let old = md_value(&parts, key).cloned();
                let v = match (rng.random_range(0..7), old) {
                    (0, _) => None,
                    (1, Some(V::Array(mut a))) => {
                        let keep = rng.random_range(0..=a.len());
                        a.truncate(keep);
                        Some(V::Array(a))
                    }
                    (2, Some(V::Array(mut a))) if !a.is_empty() => {
                        let i = rng.random_range(0..a.len());
                        // The writer keeps an array's elements of one type.
                        let odd: Vec<V> = match &a[i] {
                            V::String(_) => ["", "\u{0}", "<0xZZ>", "▁▁▁▁▁▁▁▁"]
                                .iter()
                                .map(|s| V::String(s.to_string()))
                                .collect(),
                            V::I32(_) => vec![V::I32(-1), V::I32(i32::MIN), V::I32(1000)],
                            V::F32(_) => {
                                vec![V::F32(f32::NAN), V::F32(f32::INFINITY), V::F32(-1e30)]
                            }
                            other => vec![other.clone()],
                        };
                        a[i] = pick(rng, &odd);
                        Some(V::Array(a))
                    }
                    (3, Some(V::Array(mut a))) if !a.is_empty() => {
                        // Duplicates.
                        let x = a[0].clone();
                        for _ in 0..rng.random_range(1..20) {
                            let i = rng.random_range(0..a.len());
                            a[i] = x.clone();
                        }
                        Some(V::Array(a))
                    }
                    (4, _) => Some(V::Array(
                        [
                            "a b",
                            "",
                            " ",
                            "x y z",
                            "\u{0} \u{1}",
                            "ab",
                            "Ġ Ġ",
                            "<0x41> ▁",
                        ]
                        .iter()
                        .map(|s| V::String(s.to_string()))
                        .collect(),
                    )),
                    (5, _) => Some(V::String(
                        ["gpt2", "llama", "bert", "", "t5"][rng.random_range(0..5)].into(),
                    )),
                    _ => Some(V::Array(
                        (0..rng.random_range(0..400))
                            .map(|_| V::I32(rng.random_range(-3..9)))
                            .collect(),
                    )),
                };
                what.push(format!(
                    "{key} = {}",
                    v.as_ref().map_or("(removed)".into(), |v| {
                        let s = format!("{v:?}");
                        s.chars().take(60).collect::<String>()
                    })
                ));
                set_md(&mut parts, key, v);
            }
            _ => {
                // A tensor reshaped, retyped, removed, renamed or added.
                let i = rng.random_range(0..parts.tensors.len());
                let (name, t) = &parts.tensors[i];
                let dims = t.shape().dims().to_vec();
                let name = name.clone();
                match rng.random_range(0..6) {
                    0 => {
                        parts.tensors.remove(i);
                        what.push(format!("tensor {name} removed"));
                    }
                    1 => {
                        let new = format!("{name}.x");
                        parts.tensors[i].0 = new.clone();
                        what.push(format!("tensor {name} renamed {new}"));
                    }
                    2 => {
                        let mut d = dims.clone();
                        let j = rng.random_range(0..d.len());
                        d[j] = [1, 2, 32, d[j] + 32, d[j] * 2][rng.random_range(0..5)];
                        if rng.random_bool(0.3) {
                            d.reverse();
                        }
                        if rng.random_bool(0.2) {
                            d.push(1);
                        }
                        let q = QTensor::quantize(&random_tensor(rng, &d), GgmlDType::F32).unwrap();
                        parts.tensors[i].1 = q;
                        what.push(format!("tensor {name} {dims:?} -> {d:?}"));
                    }
                    3 => {
                        let ty = [
                            GgmlDType::F16,
                            GgmlDType::Q8_0,
                            GgmlDType::Q4_0,
                            GgmlDType::BF16,
                        ][rng.random_range(0..4)];
                        if let Ok(q) = QTensor::quantize(&random_tensor(rng, &dims), ty) {
                            parts.tensors[i].1 = q;
                            what.push(format!("tensor {name} as {ty:?}"));
                        }
                    }
                    4 => {
                        let q =
                            QTensor::quantize(&random_tensor(rng, &[32]), GgmlDType::F32).unwrap();
                        parts.tensors.push(("rope_freqs.weight".into(), q));
                        what.push("rope_freqs.weight [32] added".into());
                    }
                    _ => {
                        let j = rng.random_range(0..parts.tensors.len());
                        let other = parts.tensors[j].0.clone();
                        parts.tensors[i].0 = other.clone();
                        parts.tensors[j].0 = name.clone();
                        what.push(format!("tensors {name} and {other} swapped"));
                    }
                }
            }
        }
    }
    (parts, what.join("; "))
}

// ---------------------------------------------------------------------------------------
// Safetensors and config.json.

fn tiny_folder(dir: &Path) -> PathBuf {
    write_tiny_model(dir, Architecture::Llama, 9).unwrap()
}

/// A safetensors file split into its header and data.
fn split_safetensors(b: &[u8]) -> (serde_json::Map<String, Json>, Vec<u8>) {
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header: Json = serde_json::from_slice(&b[8..8 + n]).unwrap();
    (header.as_object().unwrap().clone(), b[8 + n..].to_vec())
}

fn join_safetensors(header: &[u8], data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header);
    out.extend_from_slice(data);
    out
}

fn pick<T: Clone>(rng: &mut StdRng, xs: &[T]) -> T {
    xs[rng.random_range(0..xs.len())].clone()
}

/// A safetensors mutant: the header's length field, its JSON (offsets, dtypes, shapes,
/// entries), or its bytes.
fn safetensors_mutant(base: &[u8], rng: &mut StdRng) -> (Vec<u8>, String) {
    let (header, data) = split_safetensors(base);
    let n = u64::from_le_bytes(base[..8].try_into().unwrap());
    let names: Vec<String> = header
        .keys()
        .filter(|k| *k != "__metadata__")
        .cloned()
        .collect();
    match rng.random_range(0..12) {
        0 => {
            let len = base.len() as u64;
            let random: u64 = rng.random();
            let v = pick(
                rng,
                &[
                    0,
                    1,
                    2,
                    7,
                    8,
                    n - 1,
                    n + 1,
                    n + 8,
                    len,
                    len - 8,
                    len + 1,
                    100_000_000,
                    100_000_001,
                    1 << 32,
                    1 << 40,
                    1 << 63,
                    u64::MAX,
                    random,
                ],
            );
            let mut b = base.to_vec();
            b[..8].copy_from_slice(&v.to_le_bytes());
            (b, format!("header length {n} -> {v}"))
        }
        1 => {
            let mut b = base.to_vec();
            let cut = rng.random_range(0..(n as usize + 16).min(b.len()));
            let cut = if rng.random_bool(0.2) {
                rng.random_range(0..b.len())
            } else {
                cut
            };
            b.truncate(cut);
            (b, format!("truncated to {cut} bytes"))
        }
        2 => {
            let mut b = base.to_vec();
            let mut at = Vec::new();
            for _ in 0..rng.random_range(1..=4) {
                let i = rng.random_range(0..8 + n as usize);
                b[i] ^= rng.random_range(1..=255u8);
                at.push(i);
            }
            (b, format!("header bytes flipped at {at:?}"))
        }
        3 => {
            let whole = pick(
                rng,
                &[
                    json!([]),
                    json!(1),
                    json!("x"),
                    json!(null),
                    json!({}),
                    json!({"__metadata__": 5}),
                    json!({"__metadata__": {"a": 1}}),
                ],
            );
            let h = serde_json::to_vec(&whole).unwrap();
            (
                join_safetensors(&h, &data),
                format!("header replaced by {whole}"),
            )
        }
        k => {
            let mut header = header;
            let name = pick(rng, &names);
            let what;
            let entry = header.get_mut(&name).unwrap().as_object_mut().unwrap();
            let offsets: Vec<u64> = entry["data_offsets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect();
            let (s, e) = (offsets[0], offsets[1]);
            let shape: Vec<u64> = entry["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap())
                .collect();
            match k {
                4 | 5 => {
                    let v = pick(
                        rng,
                        &[
                            json!([s + 1, e + 1]),
                            json!([s, e + 1]),
                            json!([s, e - 1]),
                            json!([e, s]),
                            json!([0, 0]),
                            json!([0, e - s]),
                            json!([s, 1u64 << 40]),
                            json!([1u64 << 62, (1u64 << 62) + 4]),
                            json!([u64::MAX - 1, u64::MAX]),
                            json!([-1, 4]),
                            json!(["a", 4]),
                            json!([s]),
                            json!([]),
                            json!(null),
                            json!([s, data.len() as u64 + 4]),
                        ],
                    );
                    what = format!("{name}.data_offsets [{s}, {e}] -> {v}");
                    entry.insert("data_offsets".into(), v);
                }
                6 | 7 => {
                    let v = pick(
                        rng,
                        &[
                            "F32", "F16", "BF16", "F64", "I8", "U8", "I16", "U16", "I32", "U32",
                            "I64", "U64", "BOOL", "F8_E4M3", "F8_E5M2", "F4", "F6_E2M3", "F8_E8M0",
                            "C64", "XYZ", "",
                        ],
                    );
                    what = format!("{name}.dtype -> {v}");
                    entry.insert("dtype".into(), json!(v));
                }
                8 | 9 => {
                    let p: u64 = shape.iter().product();
                    let v = pick(
                        rng,
                        &[
                            json!([]),
                            json!([0]),
                            json!(shape.iter().rev().collect::<Vec<_>>()),
                            json!([p]),
                            json!([p / 2, 2]),
                            json!(shape.iter().chain([1].iter()).collect::<Vec<_>>()),
                            json!([1u64 << 32, 1u64 << 32]),
                            json!([1u64 << 63, 2]),
                            json!([u64::MAX]),
                            json!([-1, 64]),
                            json!(["64"]),
                            json!([p * 2]),
                            json!(null),
                            json!(vec![1; 40]),
                        ],
                    );
                    what = format!("{name}.shape {shape:?} -> {v}");
                    entry.insert("shape".into(), v);
                }
                10 => {
                    let field = pick(rng, &["dtype", "shape", "data_offsets"]);
                    entry.remove(field);
                    what = format!("{name}.{field} removed");
                }
                _ => match rng.random_range(0..3) {
                    0 => {
                        header.remove(&name);
                        what = format!("{name} removed");
                    }
                    1 => {
                        let v = header.remove(&name).unwrap();
                        header.insert(format!("{name}.renamed"), v);
                        what = format!("{name} renamed");
                    }
                    _ => {
                        header.insert(
                            "extra".into(),
                            json!({"dtype": "F32", "shape": [1u64 << 30], "data_offsets": [0, 1u64 << 32]}),
                        );
                        what = "an extra tensor claiming 4 GiB".into();
                    }
                },
            }
            let h = serde_json::to_vec(&Json::Object(header)).unwrap();
            (join_safetensors(&h, &data), what)
        }
    }
}

/// A `config.json` mutant: fields set to zero, negative, huge, fractional or mistyped
/// values, or removed; or the text truncated or its bytes flipped.
fn config_mutant(base: &Json, rng: &mut StdRng) -> (Vec<u8>, String) {
    let text = serde_json::to_vec(base).unwrap();
    match rng.random_range(0..10) {
        0 => {
            let cut = rng.random_range(0..text.len());
            (text[..cut].to_vec(), format!("truncated to {cut} bytes"))
        }
        1 => {
            let mut b = text;
            let mut at = Vec::new();
            for _ in 0..rng.random_range(1..=3) {
                let i = rng.random_range(0..b.len());
                b[i] ^= rng.random_range(1..=255u8);
                at.push(i);
            }
            (b, format!("bytes flipped at {at:?}"))
        }
        _ => {
            let fields = [
                "vocab_size",
                "hidden_size",
                "intermediate_size",
                "num_hidden_layers",
                "num_attention_heads",
                "num_key_value_heads",
                "head_dim",
                "rms_norm_eps",
                "rope_theta",
                "max_position_embeddings",
                "bos_token_id",
                "eos_token_id",
                "tie_word_embeddings",
                "attention_bias",
                "model_type",
                "rope_scaling",
                "rope_parameters",
            ];
            let mut cfg = base.as_object().unwrap().clone();
            let mut what = Vec::new();
            for _ in 0..rng.random_range(1..=3) {
                let field = pick(rng, &fields);
                let orig = cfg.get(field).and_then(|v| v.as_i64()).unwrap_or(16);
                let v = pick(
                    rng,
                    &[
                        Some(json!(0)),
                        Some(json!(-1)),
                        Some(json!(1)),
                        Some(json!(2)),
                        Some(json!(3)),
                        Some(json!(orig + 1)),
                        Some(json!(orig - 1)),
                        Some(json!(orig * 2)),
                        Some(json!(1u64 << 31)),
                        Some(json!(1u64 << 32)),
                        Some(json!(1u64 << 53)),
                        Some(json!(u64::MAX)),
                        Some(json!(i64::MIN)),
                        Some(json!(1e300)),
                        Some(json!(-1e300)),
                        Some(json!(1e-300)),
                        Some(json!(1.5)),
                        Some(json!("64")),
                        Some(json!(null)),
                        Some(json!(true)),
                        Some(json!([])),
                        Some(json!([1, -1, 1u64 << 40])),
                        Some(json!({})),
                        Some(json!("x".repeat(1000))),
                        Some(
                            json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 4.0,
                            "high_freq_factor": 1.0, "original_max_position_embeddings": 0}),
                        ),
                        Some(
                            json!({"rope_type": "llama3", "factor": -8.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 1.0, "original_max_position_embeddings": 1e30}),
                        ),
                        Some(
                            json!({"rope_type": "llama3", "factor": 1e-40, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}),
                        ),
                        Some(json!({"rope_type": 5})),
                        Some(json!({"rope_type": "yarn", "factor": 4.0})),
                        Some(json!({"rope_theta": "x"})),
                        None,
                    ],
                );
                what.push(format!(
                    "{field} = {}",
                    v.as_ref().map_or("(removed)".to_string(), |v| {
                        v.to_string().chars().take(60).collect()
                    })
                ));
                match v {
                    Some(v) => cfg.insert(field.into(), v),
                    None => cfg.remove(field),
                };
            }
            (
                serde_json::to_vec(&Json::Object(cfg)).unwrap(),
                what.join(", "),
            )
        }
    }
}

// ---------------------------------------------------------------------------------------
// The mutant runs.

#[test]
fn gguf_byte_mutants_never_panic_hang_or_overallocate() {
    let _serial = one_test_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let bases = gguf_bases(dir.path());
    let layouts: Vec<GgufLayout> = bases.iter().map(|b| gguf_layout(b)).collect();
    let path = dir.path().join("mutant.gguf");
    let location = ModelLocation::Gguf(path.clone());
    // The bases themselves load.
    for b in &bases {
        std::fs::write(&path, b).unwrap();
        assert!(matches!(load(&location).result, Ok(Ok(()))));
    }
    run_family(0, 5000, move |rng| {
        let which = rng.random_range(0..bases.len());
        let (bytes, what) = gguf_byte_mutant(&bases[which], &layouts[which], rng);
        std::fs::write(&path, bytes).unwrap();
        (
            location.clone(),
            path.clone(),
            format!("base {which}: {what}"),
        )
    });
}

#[test]
fn gguf_value_mutants_never_panic_hang_or_overallocate() {
    let _serial = one_test_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let bases: Vec<GgufParts> = gguf_bases(dir.path())
        .iter()
        .map(|b| gguf_parts(b))
        .collect();
    let path = dir.path().join("mutant.gguf");
    let location = ModelLocation::Gguf(path.clone());
    run_family(1, 1500, move |rng| {
        let which = rng.random_range(0..bases.len());
        let (parts, what) = gguf_value_mutant(&bases[which], rng);
        write_parts(&parts, &path);
        (
            location.clone(),
            path.clone(),
            format!("base {which}: {what}"),
        )
    });
}

#[test]
fn safetensors_mutants_never_panic_hang_or_overallocate() {
    let _serial = one_test_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let folder = tiny_folder(&dir.path().join("m"));
    let st = folder.join("model.safetensors");
    let base = std::fs::read(&st).unwrap();
    let location = ModelLocation::HfFolder(folder.clone());
    run_family(2, 2500, move |rng| {
        let (bytes, what) = safetensors_mutant(&base, rng);
        std::fs::write(&st, bytes).unwrap();
        (location.clone(), st.clone(), what)
    });
}

#[test]
fn config_mutants_never_panic_hang_or_overallocate() {
    let _serial = one_test_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let folder = tiny_folder(&dir.path().join("m"));
    let cfg_path = folder.join("config.json");
    let mut base: Json = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    base["rope_scaling"] = json!({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
        "high_freq_factor": 4.0, "original_max_position_embeddings": 1024});
    let location = ModelLocation::HfFolder(folder.clone());
    std::fs::write(&cfg_path, serde_json::to_vec(&base).unwrap()).unwrap();
    assert!(matches!(load(&location).result, Ok(Ok(()))));
    run_family(3, 2500, move |rng| {
        let (bytes, what) = config_mutant(&base, rng);
        std::fs::write(&cfg_path, bytes).unwrap();
        (location.clone(), cfg_path.clone(), what)
    });
}

// ---------------------------------------------------------------------------------------
// Named cases.

/// The SentencePiece-vocabulary tiny Llama GGUF, rewritten by `change`, at `dir/name`.
fn changed_gguf(dir: &Path, name: &str, change: impl FnOnce(&mut GgufParts)) -> ModelLocation {
    let spm = dir.join("base.gguf");
    write_tiny_gguf_with_tokenizer(&spm, &tiny_spm_spec(), 3).unwrap();
    let mut parts = gguf_parts(&std::fs::read(&spm).unwrap());
    change(&mut parts);
    let path = dir.join(name);
    write_parts(&parts, &path);
    ModelLocation::Gguf(path)
}

#[test]
fn gguf_with_zero_kv_heads_is_refused_naming_file_and_key() {
    let _serial = one_test_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let loc = changed_gguf(dir.path(), "model.gguf", |p| {
        set_md(
            p,
            "llama.attention.head_count_kv",
            Some(gguf_file::Value::U32(0)),
        );
    });
    let e = load_err(&loc);
    assert!(
        e.contains("model.gguf") && e.contains("llama.attention.head_count_kv is 0"),
        "{e}"
    );
    let e = catalog::describe(loc.path()).unwrap_err().to_string();
    assert!(
        e.contains("model.gguf") && e.contains("head_count_kv"),
        "{e}"
    );
}

#[test]
fn heads_not_a_multiple_of_kv_heads_are_refused() {
    let _serial = one_test_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let loc = changed_gguf(dir.path(), "m.gguf", |p| {
        set_md(
            p,
            "llama.attention.head_count_kv",
            Some(gguf_file::Value::U32(3)),
        );
    });
    let e = load_err(&loc);
    assert!(
        e.contains("m.gguf")
            && e.contains("llama.attention.head_count (4) is not a multiple of llama.attention.head_count_kv (3)"),
        "{e}"
    );

    let folder = tiny_folder(&dir.path().join("hf"));
    let cfg_path = folder.join("config.json");
    let mut cfg: Json = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    cfg["num_key_value_heads"] = json!(3);
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = load_err(&ModelLocation::HfFolder(folder));
    assert!(
        e.contains("config.json")
            && e.contains("num_attention_heads (4) is not a multiple of num_key_value_heads (3)"),
        "{e}"
    );
}

#[test]
fn config_errors_name_the_field() {
    let _serial = one_test_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let folder = tiny_folder(&dir.path().join("hf"));
    let cfg_path = folder.join("config.json");
    let base: Json = serde_json::from_slice(&std::fs::read(&cfg_path).unwrap()).unwrap();
    for (field, value, expected) in [
        ("vocab_size", json!(0), "vocab_size is 0"),
        ("hidden_size", json!(-64), "`hidden_size` is -64"),
        (
            "num_hidden_layers",
            json!("2"),
            "`num_hidden_layers` is \"2\"",
        ),
        (
            "intermediate_size",
            json!(1u64 << 40),
            "intermediate_size is 1099511627776",
        ),
        ("rms_norm_eps", json!(0.0), "rms_norm_eps is 0"),
        ("rope_theta", json!(-1.0), "rope_theta is -1"),
        (
            "max_position_embeddings",
            json!(0),
            "max_position_embeddings is 0",
        ),
        ("eos_token_id", json!(100_000), "eos_token_id is 100000"),
        (
            "bos_token_id",
            json!(1u64 << 33),
            "`bos_token_id` holds 8589934592",
        ),
        ("head_dim", json!(15), "head_dim is 15"),
    ] {
        let mut cfg = base.clone();
        cfg[field] = value;
        std::fs::write(&cfg_path, cfg.to_string()).unwrap();
        let e = load_err(&ModelLocation::HfFolder(folder.clone()));
        assert!(
            e.contains("config.json") && e.contains(expected),
            "{field}: {e}"
        );
    }
    let mut cfg = base.clone();
    cfg.as_object_mut().unwrap().remove("hidden_size");
    std::fs::write(&cfg_path, cfg.to_string()).unwrap();
    let e = load_err(&ModelLocation::HfFolder(folder.clone()));
    assert!(e.contains("`hidden_size` is missing"), "{e}");
}

#[test]
fn a_gguf_tensor_whose_shape_disagrees_with_the_config_is_named() {
    let _serial = one_test_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let loc = changed_gguf(dir.path(), "m.gguf", |p| {
        let t = p
            .tensors
            .iter_mut()
            .find(|(n, _)| n == "blk.1.ffn_up.weight")
            .unwrap();
        let mut rng = StdRng::seed_from_u64(1);
        t.1 = QTensor::quantize(&random_tensor(&mut rng, &[96, 64]), GgmlDType::F32).unwrap();
    });
    let e = load_err(&loc);
    assert!(
        e.contains("m.gguf")
            && e.contains("blk.1.ffn_up.weight")
            && e.contains("[96, 64]")
            && e.contains("[128, 64]"),
        "{e}"
    );
}

#[test]
fn a_safetensors_tensor_whose_shape_disagrees_with_the_config_is_named() {
    let _serial = one_test_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let folder = tiny_folder(&dir.path().join("hf"));
    let st = folder.join("model.safetensors");
    let (mut header, data) = split_safetensors(&std::fs::read(&st).unwrap());
    // Same element count, so the safetensors crate accepts it; the loader must not.
    header["model.layers.0.mlp.up_proj.weight"]["shape"] = json!([64, 128]);
    let h = serde_json::to_vec(&Json::Object(header.clone())).unwrap();
    std::fs::write(&st, join_safetensors(&h, &data)).unwrap();
    let e = load_err(&ModelLocation::HfFolder(folder.clone()));
    assert!(
        e.contains("model.safetensors")
            && e.contains("model.layers.0.mlp.up_proj.weight")
            && e.contains("[64, 128]")
            && e.contains("[128, 64]"),
        "{e}"
    );
    // A same-size integer dtype is refused by name too.
    header["model.layers.0.mlp.up_proj.weight"]["shape"] = json!([128, 64]);
    header["model.layers.0.mlp.up_proj.weight"]["dtype"] = json!("I32");
    let h = serde_json::to_vec(&Json::Object(header)).unwrap();
    std::fs::write(&st, join_safetensors(&h, &data)).unwrap();
    let e = load_err(&ModelLocation::HfFolder(folder));
    assert!(
        e.contains("model.layers.0.mlp.up_proj.weight") && e.contains("I32"),
        "{e}"
    );
}

/// Loads `bytes` as a GGUF file and checks that it fails fast, with little memory.
fn refused_quickly(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let out = load(&ModelLocation::Gguf(path));
    let e = match out.result {
        Ok(Err(e)) => e,
        other => panic!("{name}: {:?}", other.map(|r| r.is_ok())),
    };
    // A guard against reading or looping over what the file claims, not a speed figure:
    // a refusal reads a few bytes, so even a loaded machine is far inside this.
    assert!(
        out.elapsed < Duration::from_secs(30),
        "{name}: {:?}",
        out.elapsed
    );
    assert!(
        out.peak_extra < bytes.len() + (32 << 20),
        "{name}: {} bytes allocated",
        out.peak_extra
    );
    e
}

#[test]
fn absurd_gguf_lengths_and_counts_are_refused_quickly() {
    let _serial = one_test_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let spm = dir.path().join("base.gguf");
    write_tiny_gguf_with_tokenizer(&spm, &tiny_spm_spec(), 3).unwrap();
    let base = std::fs::read(&spm).unwrap();
    let layout = gguf_layout(&base);
    let first = |slot: Slot| {
        *layout
            .fields
            .iter()
            .find(|f| f.0 == slot)
            .unwrap_or_else(|| panic!("no {slot:?}"))
    };
    for (slot, value) in [
        (Slot::Version, 1u64),
        (Slot::KeyLen, 1 << 40),
        (Slot::StringLen, 1 << 40),
        (Slot::ArrayLen, 1 << 40),
        (Slot::ArrayLen, (1 << 30) - 1),
        (Slot::TensorCount, 1 << 60),
        (Slot::KvCount, 1 << 60),
        (Slot::Dim, 1 << 40),
        (Slot::Dim, u64::MAX),
        (Slot::Offset, u64::MAX - 7),
    ] {
        let (_, at, width) = first(slot);
        let mut b = base.clone();
        write_field(&mut b, at, width, value);
        let name = format!("{slot:?}-{value}.gguf");
        let e = refused_quickly(dir.path(), &name, &b);
        assert!(e.contains(&name), "{e}");
    }
}

#[test]
fn gguf_alignments_that_are_not_powers_of_two_are_refused() {
    let _serial = one_test_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    for a in [0u32, 3, 48] {
        let loc = changed_gguf(dir.path(), &format!("a{a}.gguf"), |p| {
            set_md(p, "general.alignment", Some(gguf_file::Value::U32(a)));
        });
        let e = load_err(&loc);
        assert!(
            e.contains("general.alignment") && e.contains(&format!("a{a}.gguf")),
            "{e}"
        );
    }
}

#[test]
fn safetensors_header_lengths_beyond_the_file_are_refused() {
    let _serial = one_test_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let folder = tiny_folder(&dir.path().join("hf"));
    let st = folder.join("model.safetensors");
    let base = std::fs::read(&st).unwrap();
    for v in [0u64, 7, base.len() as u64, 99_999_999, 1 << 40, u64::MAX] {
        let mut b = base.clone();
        b[..8].copy_from_slice(&v.to_le_bytes());
        std::fs::write(&st, &b).unwrap();
        let out = load(&ModelLocation::HfFolder(folder.clone()));
        match out.result {
            Ok(Err(e)) => assert!(e.contains("model.safetensors"), "{e}"),
            other => panic!("header length {v}: {:?}", other.map(|r| r.is_ok())),
        }
        assert!(
            out.peak_extra < 32 << 20,
            "header length {v}: {}",
            out.peak_extra
        );
    }
}
