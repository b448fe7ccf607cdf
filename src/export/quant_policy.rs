//! Which quantized type each matrix of a GGUF file gets under a mixed scheme: llama.cpp's
//! Q4_K_M rule (`llama_tensor_get_type`), for the exporter and for the random-weight
//! files of the test tools.

use candle_core::quantized::GgmlDType;

/// Values per K-quant super-block.
const QK_K: usize = 256;

/// Where a tensor sits in a decoder, for the type rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `output.weight`, or `token_embd.weight` when it is also the output.
    Output,
    AttnV,
    FfnDown,
    /// Every other matrix.
    Other,
}

/// llama.cpp's `use_more_bits`: the layers whose `attn_v` and `ffn_down` get Q6_K in a
/// Q4_K_M file (the first and last eighth, and every third in between).
pub fn use_more_bits(layer: usize, layers: usize) -> bool {
    layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2
}

/// The type llama.cpp's `llama_tensor_get_type` gives a matrix in a Q4_K_M file, rows of
/// `row_len` elements (a multiple of 32).
pub fn q4_k_m_type(role: Role, row_len: usize, layer: usize, layers: usize) -> GgmlDType {
    let wanted = match role {
        // The K-quant's block, not Q6_K's, decides: llama.cpp tests the default type's.
        Role::Output if !row_len.is_multiple_of(QK_K) => GgmlDType::Q8_0,
        Role::Output => GgmlDType::Q6K,
        Role::AttnV | Role::FfnDown if use_more_bits(layer, layers) => GgmlDType::Q6K,
        _ => GgmlDType::Q4K,
    };
    // Rows that are not whole super-blocks cannot be K-quantized: llama.cpp's fallbacks.
    match wanted {
        GgmlDType::Q4K if !row_len.is_multiple_of(QK_K) => GgmlDType::Q5_0,
        GgmlDType::Q6K if !row_len.is_multiple_of(QK_K) => GgmlDType::Q8_0,
        t => t,
    }
}
