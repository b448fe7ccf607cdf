//! The dot products of a weight row with quantized activations in plain Rust: the
//! reference every SIMD kernel is tested against, and the kernels of a CPU without AVX2.

use super::activation::Q8Block;
use super::format::StoredType;

#[inline(always)]
fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

#[inline(always)]
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// `Σ q_w · q_a` over one block of 4-bit values at `qs` (16 bytes: low nibbles are values
/// 0..16, high nibbles 16..32), with the fifth bits in `qh` (bit j for value j) if given.
#[inline(always)]
fn nibble_dot(qs: &[u8], qh: Option<u32>, a: &Q8Block) -> i32 {
    let mut s = 0i32;
    for j in 0..16 {
        let (mut lo, mut hi) = ((qs[j] & 0x0F) as i32, (qs[j] >> 4) as i32);
        if let Some(h) = qh {
            lo |= (((h >> j) & 1) << 4) as i32;
            hi |= (((h >> (j + 16)) & 1) << 4) as i32;
        }
        s += lo * a.qs[j] as i32 + hi * a.qs[j + 16] as i32;
    }
    s
}

/// `w · x` for one row of a 32-value block type (`w` holds `a.len()` blocks).
pub fn dot_q8(ty: StoredType, w: &[u8], a: &[Q8Block]) -> f32 {
    let size = ty.block_bytes();
    let mut total = 0f32;
    for (b, ab) in w.chunks_exact(size).zip(a) {
        let sum = ab.sum as f32;
        total += match ty {
            StoredType::Q4_0 => {
                let d = f16_at(b, 0) * ab.d;
                d * (nibble_dot(&b[2..18], None, ab) as f32 - 8.0 * sum)
            }
            StoredType::Q4_1 => {
                let (d, m) = (f16_at(b, 0) * ab.d, f16_at(b, 2) * ab.d);
                d * nibble_dot(&b[4..20], None, ab) as f32 + m * sum
            }
            StoredType::Q5_0 => {
                let d = f16_at(b, 0) * ab.d;
                d * (nibble_dot(&b[6..22], Some(u32_at(b, 2)), ab) as f32 - 16.0 * sum)
            }
            StoredType::Q5_1 => {
                let (d, m) = (f16_at(b, 0) * ab.d, f16_at(b, 2) * ab.d);
                d * nibble_dot(&b[8..24], Some(u32_at(b, 4)), ab) as f32 + m * sum
            }
            StoredType::Q8_0 => {
                let d = f16_at(b, 0) * ab.d;
                let s: i32 = b[2..34]
                    .iter()
                    .zip(&ab.qs)
                    .map(|(&w, &x)| w as i8 as i32 * x as i32)
                    .sum();
                d * s as f32
            }
            _ => unreachable!("{ty:?} has no 32-value int8 dot product"),
        };
    }
    total
}

/// `w · x` for one row of 16-bit floats.
pub fn dot_f32(ty: StoredType, w: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    for (k, (b, &xv)) in w.chunks_exact(2).zip(x).enumerate() {
        let v = match ty {
            StoredType::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            _ => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
        };
        acc[k % 8] += v * xv;
    }
    acc.iter().sum()
}
