//! The dot products of a weight row with quantized activations in plain Rust: the
//! reference every SIMD kernel is tested against, and the kernels of a CPU without AVX2.

use super::activation::{Q8Row, Q8_ELEMS};
use super::format::StoredType;

#[inline(always)]
fn f16_at(b: &[u8], at: usize) -> f32 {
    half::f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

#[inline(always)]
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// `Σ code · q` over one block of 4-bit codes at `qs` (16 bytes: low nibbles are values
/// 0..16, high nibbles 16..32), with the fifth bits in `qh` (bit j for value j) if given.
#[inline(always)]
fn nibble_dot(qs: &[u8], qh: Option<u32>, a: &[i8]) -> i32 {
    let mut s = 0i32;
    for j in 0..16 {
        let (mut lo, mut hi) = ((qs[j] & 0x0F) as i32, (qs[j] >> 4) as i32);
        if let Some(h) = qh {
            lo |= (((h >> j) & 1) << 4) as i32;
            hi |= (((h >> (j + 16)) & 1) << 4) as i32;
        }
        s += lo * a[j] as i32 + hi * a[j + 16] as i32;
    }
    s
}

/// One block of a 32-value type: `(d_w, offset coefficient, Σ code · q)`, where the
/// block's value is `d_w · d_a · Σ code · q + coefficient · d_a · Σ q`.
#[inline(always)]
fn block(ty: StoredType, b: &[u8], a: &[i8]) -> (f32, f32, i32) {
    let d = f16_at(b, 0);
    match ty {
        StoredType::Q4_0 => (d, -8.0 * d, nibble_dot(&b[2..18], None, a)),
        StoredType::Q4_1 => (d, f16_at(b, 2), nibble_dot(&b[4..20], None, a)),
        StoredType::Q5_0 => (d, -16.0 * d, nibble_dot(&b[6..22], Some(u32_at(b, 2)), a)),
        StoredType::Q5_1 => (
            d,
            f16_at(b, 2),
            nibble_dot(&b[8..24], Some(u32_at(b, 4)), a),
        ),
        StoredType::Q8_0 => {
            let s = b[2..34]
                .iter()
                .zip(a)
                .map(|(&w, &x)| w as i8 as i32 * x as i32)
                .sum();
            (d, 0.0, s)
        }
        _ => unreachable!("{ty:?} has no 32-value int8 dot product"),
    }
}

/// `w · x` for one row of a 32-value block type against both levels of an activation row.
pub fn dot_q8(ty: StoredType, w: &[u8], a: Q8Row<'_>) -> f32 {
    let size = ty.block_bytes();
    let mut total = 0f32;
    for (((b, q1), q2), m) in w
        .chunks_exact(size)
        .zip(a.qs.chunks_exact(Q8_ELEMS))
        .zip(a.qs2.chunks_exact(Q8_ELEMS))
        .zip(a.meta.chunks_exact(2))
    {
        let (d, coef, s1) = block(ty, b, q1);
        let (_, _, s2) = block(ty, b, q2);
        total += d * m[0] * (256 * s1 + s2) as f32 + coef * m[1];
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
