//! llama.cpp's `general.file_type` (its `llama_ftype`): the number a GGUF file gives its
//! quantization, and the name llama.cpp and the tools that list GGUF files show for it.
//! One table for the reader (the Models tab) and the writers (export, the shaped test
//! files).

use candle_core::quantized::GgmlDType;

/// `LLAMA_FTYPE_MOSTLY_Q4_K_M`.
pub const MOSTLY_Q4_K_M: u32 = 15;

/// The file types with a name, as llama.cpp numbers them.
const NAMES: [(u32, &str); 20] = [
    (0, "F32"),
    (1, "F16"),
    (2, "Q4_0"),
    (3, "Q4_1"),
    (7, "Q8_0"),
    (8, "Q5_0"),
    (9, "Q5_1"),
    (10, "Q2_K"),
    (11, "Q3_K_S"),
    (12, "Q3_K_M"),
    (13, "Q3_K_L"),
    (14, "Q4_K_S"),
    (MOSTLY_Q4_K_M, "Q4_K_M"),
    (16, "Q5_K_S"),
    (17, "Q5_K_M"),
    (18, "Q6_K"),
    (21, "Q2_K_S"),
    (25, "IQ4_NL"),
    (30, "IQ4_XS"),
    (32, "BF16"),
];

/// The name of file type `ftype`, where llama.cpp has one.
pub fn name(ftype: u32) -> Option<&'static str> {
    NAMES.iter().find(|(n, _)| *n == ftype).map(|(_, s)| *s)
}

/// The number of the file type named `name` (any case: `q4_k_m` too).
pub fn number(name: &str) -> Option<u32> {
    NAMES
        .iter()
        .find(|(_, s)| s.eq_ignore_ascii_case(name))
        .map(|(n, _)| *n)
}

/// The file type of a file whose matrices are mostly `ty` (the K-quants by their `_M`
/// mixes, as llama-quantize names them); F16 for a type without one.
pub fn mostly(ty: GgmlDType) -> u32 {
    let name = match ty {
        GgmlDType::F32 => "F32",
        GgmlDType::F16 => "F16",
        GgmlDType::BF16 => "BF16",
        GgmlDType::Q4_0 => "Q4_0",
        GgmlDType::Q4_1 => "Q4_1",
        GgmlDType::Q5_0 => "Q5_0",
        GgmlDType::Q5_1 => "Q5_1",
        GgmlDType::Q8_0 => "Q8_0",
        GgmlDType::Q2K => "Q2_K",
        GgmlDType::Q3K => "Q3_K_M",
        GgmlDType::Q4K => "Q4_K_M",
        GgmlDType::Q5K => "Q5_K_M",
        GgmlDType::Q6K => "Q6_K",
        _ => "F16",
    };
    number(name).unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_agree() {
        for (n, s) in NAMES {
            assert_eq!(name(n), Some(s));
            assert_eq!(number(s), Some(n));
        }
        assert_eq!(number("q4_k_m"), Some(MOSTLY_Q4_K_M));
        assert_eq!(name(4), None);
        assert_eq!(mostly(GgmlDType::Q4K), MOSTLY_Q4_K_M);
        assert_eq!(mostly(GgmlDType::Q8_0), 7);
    }
}
