//! Facts about this process and machine read from `/proc` (resident memory now and at
//! its peak, memory available for a new run; `None` where `/proc` is unavailable), and
//! the process's runtime settings: allocator, thread pools.

fn proc_status_kib(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    text.lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

/// Resident memory of this process now, in bytes.
pub fn rss_bytes() -> Option<u64> {
    proc_status_kib("VmRSS:").map(|k| k * 1024)
}

/// Peak resident memory of this process, in bytes.
pub fn peak_rss_bytes() -> Option<u64> {
    proc_status_kib("VmHWM:").map(|k| k * 1024)
}

/// Memory the kernel says a new allocation can use (`MemAvailable`), in bytes.
pub fn available_memory_bytes() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    text.lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .map(|k| k * 1024)
}

/// A size in words: `812 B`, `3.4 KiB`, `512.0 MiB`, `1.25 GiB`.
pub fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.2} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
    }
}

/// Bytes as MiB, for reports.
pub fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// Process-wide runtime settings, called first thing in `main` (and in the benchmarks):
/// the allocator tuning below, and candle's own thread pool switched off
/// (`CANDLE_NUM_THREADS=1` unless the user set it). On two cores that pool's spinning
/// barrier competes with the gemm threads: perf showed half the prefill time spent
/// spinning, and decode runs that stalled at 2 tokens/s; without it gemm and the studio's
/// own kernels still use every core through rayon.
///
/// It also sets `RAYON_NUM_THREADS` (unless the user did) to the count candle would pick:
/// candle asks for the thread count on every matmul, and without the variable it parses
/// `/proc/cpuinfo` each time, which perf put at a tenth of a 46-token prefill.
pub fn tune_runtime() {
    // Single-threaded at this point: nothing else reads the environment concurrently.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        let threads = candle_core::utils::get_num_threads();
        std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    }
    tune_allocator();
}

/// Runs `f` on a rayon pool of its own (as many threads as the global pool), with `f`
/// itself on one of the pool's threads, so that the parallel ops inside it split their
/// work from within the pool. Called from outside any pool (the trainer thread, `main`),
/// each of the ~3000 parallel ops of a training step instead hands its work to the global
/// pool and puts the caller to sleep until it is done. Measured on examples/bench_train,
/// three alternating pairs: 243 / 232 / 256 → 257 / 240 / 261 tokens/s, and a quarter
/// less system time. Falls back to the calling thread if the pool cannot start.
pub fn on_own_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(rayon::current_num_threads())
        .thread_name(|i| format!("compute-{i}"))
        .build();
    match pool {
        Ok(pool) => pool.install(f),
        Err(e) => {
            tracing::warn!("no thread pool of its own ({e}); running on the caller's thread");
            f()
        }
    }
}

/// Keeps freed memory in glibc's heap instead of returning every large block to the kernel.
/// Training allocates and frees tensors of the same large sizes every step; with glibc's
/// default (blocks above a few MB are mmapped and unmapped each time) the kernel zeroes
/// fresh pages on every allocation, which cost a fifth of a training step (perf on
/// examples/bench_train). Trimming is off too: a step frees gigabytes of activations at
/// once, more than the largest threshold glibc takes (2 GiB), and the next step would fault
/// them all in again (a tenth of an epoch in perf). [`release_free_memory`] hands the
/// free heap back when a run ends. Call once at start-up; a no-op off glibc.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator tunables; it is called before other threads
    // allocate heavily and takes plain integers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, -1);
        libc::mallopt(libc::M_TOP_PAD, 256 << 20);
        // One arena for every thread. Training runs on threads other than main, and glibc
        // gives those arenas of 64 MB heaps that it unmaps as soon as they are empty,
        // whatever the trim threshold: after every step the freed activations went back
        // to the kernel and came back as fresh zeroed pages (5 % of a step in perf).
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

/// Returns the heap's free memory to the kernel (after a training run, which keeps its
/// peak for the next step while it runs; see [`tune_allocator`]). A no-op off glibc.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free pages of the allocator's own heaps.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Calls [`release_free_memory`] when dropped: hold one for the length of a training run.
pub struct ReleaseFreeMemoryOnDrop;

impl Drop for ReleaseFreeMemoryOnDrop {
    fn drop(&mut self) {
        release_free_memory();
    }
}
