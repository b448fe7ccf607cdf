//! The process's compute runtime: allocator tuning for training, candle's and rayon's
//! thread settings, the training loop's own rayon pool, and keeping that pool awake
//! during a step. Here because it holds `unsafe` calls into glibc.

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

/// Runs `f` on the process's compute pool (one, started on first use, as many threads as
/// the global pool) with the pool kept awake ([`with_pool_awake`]): for inference, whose
/// steps are many small parallel products from a caller outside any pool. Falls back to
/// the calling thread if the pool cannot start.
pub fn on_compute_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    static POOL: std::sync::OnceLock<Option<rayon::ThreadPool>> = std::sync::OnceLock::new();
    let pool = POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(rayon::current_num_threads())
            .thread_name(|i| format!("infer-{i}"))
            .build()
            .map_err(|e| {
                tracing::warn!("no inference thread pool ({e}); running on the caller's thread")
            })
            .ok()
    });
    match pool {
        Some(pool) => pool.install(|| with_pool_awake(f)),
        None => f(),
    }
}

/// Runs `f` (on a thread of a rayon pool) while the pool's other threads poll for work
/// instead of going to sleep between parallel ops.
///
/// A training step is a few thousand parallel ops with short serial stretches between
/// them (autograd's bookkeeping, small ops). Rayon puts an idle thread to sleep after a
/// few dozen rounds of looking for work, and on a virtual machine waking it again costs
/// tens of microseconds, during which the op's other half runs on the caller alone.
/// OpenMP, under PyTorch, spins for a while instead. Here each other thread runs a job that
/// keeps taking the pool's work until `f` returns; the caller's own copy returns at once.
/// Outside a pool, or on a pool of one thread, this is just `f()`.
pub fn with_pool_awake<R>(f: impl FnOnce() -> R) -> R {
    with_pool_awake_counting(f, &Default::default())
}

/// How many polling jobs of [`with_pool_awake`] run now, and how many ever started (the
/// tests watch them).
#[derive(Default)]
struct PollCounts {
    now: std::sync::atomic::AtomicUsize,
    started: std::sync::atomic::AtomicUsize,
}

/// [`with_pool_awake`], counting its polling jobs in `polling`.
fn with_pool_awake_counting<R>(f: impl FnOnce() -> R, polling: &std::sync::Arc<PollCounts>) -> R {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Instant;
    let Some(caller) = rayon::current_thread_index() else {
        return f();
    };
    if rayon::current_num_threads() < 2 {
        return f();
    }
    /// Tells the polling jobs to end, also when `f` panics.
    struct Stop(Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    let stop = Stop(Arc::new(AtomicBool::new(false)));
    let flag = Arc::clone(&stop.0);
    let polling = Arc::clone(polling);
    rayon::spawn_broadcast(move |ctx| {
        if ctx.index() == caller || POLLING.get() {
            return;
        }
        POLLING.set(true);
        polling.started.fetch_add(1, Ordering::AcqRel);
        polling.now.fetch_add(1, Ordering::AcqRel);
        let mut last_work = Instant::now();
        while !flag.load(Ordering::Acquire) {
            match rayon::yield_now() {
                Some(rayon::Yield::Idle) => {
                    if last_work.elapsed() > POLL_IDLE_LIMIT {
                        break;
                    }
                    for _ in 0..32 {
                        std::hint::spin_loop();
                    }
                }
                _ => last_work = Instant::now(),
            }
        }
        polling.now.fetch_sub(1, Ordering::AcqRel);
        POLLING.set(false);
    });
    f()
}

thread_local! {
    /// Whether this thread runs a polling job of [`with_pool_awake`] (further down its
    /// stack, when a job it took while polling picked up another poll).
    static POLLING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// How long a polling job of [`with_pool_awake`] waits for work before it returns and
/// lets its thread sleep as rayon would.
///
/// A polling job is a job like any other: a thread waiting inside some other job (its
/// half of a join, say) may pick it up, and while it polls, the job it sits on cannot
/// finish. If the work it polls for waits for that job, nothing moves: a decode step hung
/// so (its matrix-vector product's second half taken by the other thread while polling
/// for the step before, that half waiting on a join, which picked up the next step's poll
/// and polled for the step that waited on it). A poll nested in a poll returns at once
/// (`POLLING`), and every poll ends after this long without work, which bounds what any
/// other nesting can cost. Gaps between the parallel ops of a training step or a decode
/// step are microseconds, far below it.
const POLL_IDLE_LIMIT: std::time::Duration = std::time::Duration::from_millis(2);

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

/// Frees the LM-head loss's logits buffer and returns the heap's free memory to the kernel (after a training run, which keeps its
/// peak for the next step while it runs; see [`tune_allocator`]). A no-op off glibc.
pub fn release_free_memory() {
    crate::ops::cross_entropy::release_logits_buffer();
    trim_heap();
}

/// Returns the heap's free pages to the kernel (after a burst of temporaries, such as
/// loading a model). A no-op off glibc.
pub fn trim_heap() {
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

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;
    use std::sync::atomic::Ordering;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    /// Waits up to two seconds for the polling jobs to end.
    fn pollers_end(polling: &PollCounts) -> bool {
        let t0 = Instant::now();
        while polling.now.load(Ordering::Acquire) > 0 {
            if t0.elapsed() > Duration::from_secs(2) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        true
    }

    #[test]
    fn the_pool_stays_awake_only_while_the_work_runs() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let polling = Arc::new(PollCounts::default());
        let (seen, sum) = pool.install(|| {
            with_pool_awake_counting(
                || {
                    // The other thread starts polling (and may stop again after
                    // `POLL_IDLE_LIMIT` without work, if this one is descheduled)...
                    let t0 = Instant::now();
                    let mut seen = 0;
                    while seen == 0 && t0.elapsed() < Duration::from_secs(2) {
                        seen = polling.started.load(Ordering::Acquire);
                        std::hint::spin_loop();
                    }
                    // ...and parallel work inside still runs to completion.
                    let sum = (0..10_000u64).into_par_iter().map(|i| i * i).sum::<u64>();
                    (seen, sum)
                },
                &polling,
            )
        });
        assert_eq!(seen, 1, "the other thread did not poll");
        assert_eq!(sum, (0..10_000u64).map(|i| i * i).sum::<u64>());
        assert!(pollers_end(&polling), "a polling job outlived the work");

        // A panic inside ends the polling too.
        let caught = pool.install(|| {
            std::panic::catch_unwind(|| with_pool_awake_counting(|| panic!("inside"), &polling))
        });
        assert!(caught.is_err());
        assert!(pollers_end(&polling), "a polling job outlived a panic");
    }

    /// Many short steps of nested parallel work, each with the pool kept awake, as decode
    /// runs them: the other thread takes halves of joins while it polls and picks up the
    /// next step's poll while it waits inside them. None may hang (a decode step once did:
    /// see `POLL_IDLE_LIMIT`); a watchdog fails the test instead of letting it hang.
    #[test]
    fn back_to_back_awake_steps_with_nested_joins_never_hang() {
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(2)
                .build()
                .unwrap();
            let total: u64 = pool.install(|| {
                (0..20_000u64)
                    .map(|step| {
                        with_pool_awake(|| {
                            (0..8u64)
                                .into_par_iter()
                                .map(|i| {
                                    (0..16u64)
                                        .into_par_iter()
                                        .map(|j| i * j + step)
                                        .sum::<u64>()
                                })
                                .sum::<u64>()
                        })
                    })
                    .sum()
            });
            let _ = done.send(total);
        });
        let expected: u64 = (0..20_000u64)
            .map(|step| {
                (0..8u64)
                    .map(|i| (0..16u64).map(|j| i * j + step).sum::<u64>())
                    .sum::<u64>()
            })
            .sum();
        match finished.recv_timeout(Duration::from_secs(300)) {
            Ok(total) => assert_eq!(total, expected),
            Err(_) => panic!("20 000 awake steps did not finish in 300 s: the pool deadlocked"),
        }
    }

    #[test]
    fn outside_a_pool_it_just_runs() {
        assert_eq!(with_pool_awake(|| 7), 7);
    }
}
