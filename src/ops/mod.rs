//! The hand-written compute kernels and every `unsafe` block of the engine: the gemm
//! crate called on plain slices, vector math (exp, softmax, RMSNorm rows, dot products;
//! AVX2 chosen at run time), parallel output fills, and the training ops whose backward
//! is written by hand (the LoRA linear layer, segment attention, RMSNorm, RoPE, SwiGLU,
//! the chunked cross-entropy), plus the frozen matmul of inference. Each op takes plain
//! tensors and knows nothing of models, files or runs.
//!
//! Written by hand because no maintained crate offers them: candle's own ops allocate
//! and differentiate every intermediate, which the training step cannot afford.

pub mod cross_entropy;
pub mod dot_gemm;
pub mod dropout;
pub mod frozen_matmul;
pub mod frozen_weight;
pub mod gemm_choice;
pub mod mmap;
#[cfg(test)]
pub(crate) mod op_test_util;
pub mod outer_gemm;
pub mod packed_gemm;
pub mod par_fill;
pub mod quant;
pub mod rank_gemm;
pub mod runtime;
pub mod segment_attention;
pub(crate) mod slice_gemm;
pub mod stored_prefill;
pub mod train_linear;
pub mod train_ops;
pub mod tuning_file;
pub mod vec_math;
