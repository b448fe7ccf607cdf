//! Weights kept in their file's own blocks: the storage types (GGUF's 16-bit floats,
//! Q4_0 … Q8_0 and the K-quants), [`QuantMatrix`] (a mapped or owned matrix of them), and
//! `y = x Wᵀ` on it as llama.cpp computes it: each input row quantized to int8 blocks
//! once, integer dot products per weight row (AVX2 or AVX-512 VNNI, chosen at run time),
//! rows split over the threads.

mod activation;
#[cfg(target_arch = "x86_64")]
mod dequant_x86;
#[cfg(target_arch = "x86_64")]
mod dot_kquant_avx2;
#[cfg(target_arch = "x86_64")]
mod dot_kquant_x86;
mod dot_scalar;
#[cfg(target_arch = "x86_64")]
mod dot_x86;
mod format;
#[cfg(target_arch = "x86_64")]
mod interleaved;
#[cfg(target_arch = "x86_64")]
mod interleaved_q32;
#[cfg(target_arch = "x86_64")]
mod interleaved_q4k;
#[cfg(target_arch = "x86_64")]
mod interleaved_q6k;
pub mod isa;
mod kernel_choice;
#[cfg(target_arch = "x86_64")]
mod kquant_tiles;
mod matrix;

pub use format::StoredType;
pub use isa::Isa;
pub use matrix::QuantMatrix;

#[cfg(test)]
mod tests;
