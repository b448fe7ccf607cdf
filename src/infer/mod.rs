//! Generation: KV-cached decoding, sampling, stop conditions and streaming text, with
//! adapters switched per call on shared base weights. Callers run it on a worker thread
//! and cancel it through an `AtomicBool`.

pub mod chat;
pub mod generate;
pub mod sampler;
pub mod stream;

pub use chat::chat_reply;
pub use generate::{
    generate, next_token_logits, GenerateRequest, Generation, GenerationStats, StopReason,
};
pub use sampler::{Sampler, Sampling};
