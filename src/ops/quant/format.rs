//! The block formats weights are stored in (GGUF's F16, BF16, Q4_0 … Q8_0 and the
//! K-quants): their sizes, names, the activation format each one's dot product takes, and
//! dequantization to f32 (through candle's reference `to_float`, which these layouts share
//! with llama.cpp byte for byte).

use candle_core::quantized::k_quants::{
    BlockQ2K, BlockQ3K, BlockQ4K, BlockQ4_0, BlockQ4_1, BlockQ5K, BlockQ5_0, BlockQ5_1, BlockQ6K,
    BlockQ8_0, GgmlType,
};
use candle_core::quantized::GgmlDType;

/// A storage type the quantized kernels read in place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoredType {
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
}

/// How a type's dot product takes the activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActivationFormat {
    /// f32 as they are (16-bit float weights).
    F32,
    /// 32-value blocks of int8 with an f32 scale and the block's integer sum (Q4_0 … Q8_0).
    Q8,
    /// 256-value super-blocks of int8 with 16-value partial sums (the K-quants).
    Q8K,
}

impl StoredType {
    pub const ALL: [StoredType; 12] = [
        StoredType::F16,
        StoredType::BF16,
        StoredType::Q4_0,
        StoredType::Q4_1,
        StoredType::Q5_0,
        StoredType::Q5_1,
        StoredType::Q8_0,
        StoredType::Q2K,
        StoredType::Q3K,
        StoredType::Q4K,
        StoredType::Q5K,
        StoredType::Q6K,
    ];

    /// The type of a GGUF tensor, when the kernels read it in place (F32 tensors stay
    /// plain tensors; Q8_1 and Q8_K are activation formats no file stores weights in).
    pub fn from_ggml(t: GgmlDType) -> Option<Self> {
        Some(match t {
            GgmlDType::F16 => StoredType::F16,
            GgmlDType::BF16 => StoredType::BF16,
            GgmlDType::Q4_0 => StoredType::Q4_0,
            GgmlDType::Q4_1 => StoredType::Q4_1,
            GgmlDType::Q5_0 => StoredType::Q5_0,
            GgmlDType::Q5_1 => StoredType::Q5_1,
            GgmlDType::Q8_0 => StoredType::Q8_0,
            GgmlDType::Q2K => StoredType::Q2K,
            GgmlDType::Q3K => StoredType::Q3K,
            GgmlDType::Q4K => StoredType::Q4K,
            GgmlDType::Q5K => StoredType::Q5K,
            GgmlDType::Q6K => StoredType::Q6K,
            _ => return None,
        })
    }

    pub fn ggml(self) -> GgmlDType {
        match self {
            StoredType::F16 => GgmlDType::F16,
            StoredType::BF16 => GgmlDType::BF16,
            StoredType::Q4_0 => GgmlDType::Q4_0,
            StoredType::Q4_1 => GgmlDType::Q4_1,
            StoredType::Q5_0 => GgmlDType::Q5_0,
            StoredType::Q5_1 => GgmlDType::Q5_1,
            StoredType::Q8_0 => GgmlDType::Q8_0,
            StoredType::Q2K => GgmlDType::Q2K,
            StoredType::Q3K => GgmlDType::Q3K,
            StoredType::Q4K => GgmlDType::Q4K,
            StoredType::Q5K => GgmlDType::Q5K,
            StoredType::Q6K => GgmlDType::Q6K,
        }
    }

    /// The name llama.cpp gives the type.
    pub fn name(self) -> &'static str {
        match self {
            StoredType::F16 => "F16",
            StoredType::BF16 => "BF16",
            StoredType::Q4_0 => "Q4_0",
            StoredType::Q4_1 => "Q4_1",
            StoredType::Q5_0 => "Q5_0",
            StoredType::Q5_1 => "Q5_1",
            StoredType::Q8_0 => "Q8_0",
            StoredType::Q2K => "Q2_K",
            StoredType::Q3K => "Q3_K",
            StoredType::Q4K => "Q4_K",
            StoredType::Q5K => "Q5_K",
            StoredType::Q6K => "Q6_K",
        }
    }

    /// Values per block.
    pub fn block_elems(self) -> usize {
        self.ggml().block_size()
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        self.ggml().type_size()
    }

    /// Bits per stored value, for display and estimates.
    pub fn bits_per_value(self) -> f64 {
        self.block_bytes() as f64 * 8.0 / self.block_elems() as f64
    }

    /// The activations this type's kernels at `level` take: Q4_K and Q6_K have kernels of
    /// their own on two-level Q8 activations with AVX-512 VNNI, candle's on Q8_K otherwise.
    pub fn activation_format(self, level: super::Isa) -> ActivationFormat {
        match self {
            StoredType::Q4K | StoredType::Q6K if level == super::Isa::Avx512Vnni => {
                ActivationFormat::Q8
            }
            StoredType::F16 | StoredType::BF16 => ActivationFormat::F32,
            StoredType::Q4_0
            | StoredType::Q4_1
            | StoredType::Q5_0
            | StoredType::Q5_1
            | StoredType::Q8_0 => ActivationFormat::Q8,
            _ => ActivationFormat::Q8K,
        }
    }

    /// The alignment a row's bytes need to be read as this type's blocks.
    pub fn alignment(self) -> usize {
        2
    }

    /// Dequantizes `bytes` (whole blocks of this type) into `out` (`out.len()` values).
    pub fn dequantize(self, bytes: &[u8], out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if super::dequant_x86::dequantize(self, bytes, out) {
            return;
        }
        match self {
            StoredType::F16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            StoredType::BF16 => {
                for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                    *o = half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
                }
            }
            StoredType::Q4_0 => BlockQ4_0::to_float(blocks(bytes), out),
            StoredType::Q4_1 => BlockQ4_1::to_float(blocks(bytes), out),
            StoredType::Q5_0 => BlockQ5_0::to_float(blocks(bytes), out),
            StoredType::Q5_1 => BlockQ5_1::to_float(blocks(bytes), out),
            StoredType::Q8_0 => BlockQ8_0::to_float(blocks(bytes), out),
            StoredType::Q2K => BlockQ2K::to_float(blocks(bytes), out),
            StoredType::Q3K => BlockQ3K::to_float(blocks(bytes), out),
            StoredType::Q4K => BlockQ4K::to_float(blocks(bytes), out),
            StoredType::Q5K => BlockQ5K::to_float(blocks(bytes), out),
            StoredType::Q6K => BlockQ6K::to_float(blocks(bytes), out),
        }
    }
}

/// `bytes` as a slice of candle's block type `B`, which has the same layout as the file.
///
/// Panics when `bytes` is not a whole number of aligned blocks: storage is built aligned
/// and cut at block boundaries, so that is a bug here, not a property of a file.
pub(super) fn blocks<B: GgmlType>(bytes: &[u8]) -> &[B] {
    let size = std::mem::size_of::<B>();
    assert!(
        bytes.len().is_multiple_of(size)
            && (bytes.as_ptr() as usize).is_multiple_of(std::mem::align_of::<B>()),
        "quantized storage of {} bytes is not whole aligned {:?} blocks",
        bytes.len(),
        B::DTYPE
    );
    // SAFETY: candle's block types are `repr(C)` structs of integers and `f16`s, valid for
    // every bit pattern; the length and alignment were checked above, and the slice
    // borrows `bytes` for its whole life.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), bytes.len() / size) }
}

/// The eight 6-bit scales and eight 6-bit minimums of a Q4_K or Q5_K super-block (the 12
/// bytes after its two f16 factors), unpacked with llama.cpp's masks into four words of
/// four bytes: scales 0–3, scales 4–7, minimums 0–3, minimums 4–7.
pub(super) fn k4_scale_words(s: [u8; 12]) -> [u32; 4] {
    const KMASK1: u32 = 0x3f3f_3f3f;
    const KMASK2: u32 = 0x0f0f_0f0f;
    const KMASK3: u32 = 0x0303_0303;
    let u = |i: usize| u32::from_le_bytes([s[4 * i], s[4 * i + 1], s[4 * i + 2], s[4 * i + 3]]);
    let (u0, u1, u2) = (u(0), u(1), u(2));
    [
        u0 & KMASK1,
        (u2 & KMASK2) | (((u0 >> 6) & KMASK3) << 4),
        u1 & KMASK1,
        ((u2 >> 4) & KMASK2) | (((u1 >> 6) & KMASK3) << 4),
    ]
}
