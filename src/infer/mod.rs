//! Generation: KV-cached decoding, sampling, stop conditions and streaming text, with
//! adapters switched per call on shared base weights. Callers run it on a worker thread
//! and cancel it through an `AtomicBool`.

pub mod generate;
pub mod sampler;
pub mod stream;

pub use generate::{generate, GenerateRequest, Generation, GenerationStats, StopReason};
pub use sampler::{Sampler, Sampling};

/// Runs `f` (a generation) on a compute pool of its own whose threads keep polling for
/// work between the few hundred small parallel products of each token, instead of
/// sleeping and being woken for each.
pub fn on_compute_pool<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    crate::ops::runtime::on_own_pool(|| crate::ops::runtime::with_pool_awake(f))
}
