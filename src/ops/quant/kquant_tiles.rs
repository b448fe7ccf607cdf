//! Products of several input rows (a prompt) with K-quant weights (Q4_K, Q5_K, Q6_K) on AVX2,
//! as integer tiles of eight weight rows by up to four input rows. Eight weight rows are
//! unpacked once per product into one-byte codes interleaved four values per row (the
//! layout llama.cpp repacks Q4_K files into), so one `vpmaddubsw` multiplies four values
//! of eight rows by four values of one input row, sixteen-bit sums run over a whole
//! scale group before one `vpmaddwd` applies the eight rows' scales, and a tile's eight
//! outputs per input row leave as one vector, with no horizontal sums. The inputs are
//! candle's Q8_K blocks, as for the one-row kernels, so a prompt and a decode step
//! compute the same sums.
//!
//! Written here because neither candle nor the gemm crates have integer kernels; the
//! one-row kernels spend most of their instructions per (weight row, input row, block)
//! on scales and sums that a tile shares.

use std::arch::x86_64::*;

use candle_core::quantized::k_quants::BlockQ8K;
use rayon::prelude::*;

// `BlockQ8K`'s fields are private to candle: read at the offsets of its `repr(C)` layout.
use super::dot_kquant_avx2::{q6k_codes, Q8K_BSUMS, Q8K_BYTES, Q8K_QS};
use super::dot_x86::f16_at;
use super::format::{k4_scale_words, StoredType};
use super::interleaved::Interleaved;
use super::QuantMatrix;
use crate::ops::slice_gemm::SharedOut;

/// Weight rows of a panel (the lanes of a tile's outputs).
const ROWS: usize = 8;
/// Input rows of a tile.
const INPUTS: usize = 4;

/// One super-block (256 values) of eight weight rows, unpacked.
#[repr(C, align(32))]
#[derive(Clone)]
struct PanelBlock {
    /// Chunk `c` holds values `4c .. 4c + 4` of each row, row `r` at bytes `4r .. 4r + 4`.
    codes: [[u8; 32]; 64],
    /// Per unit of chunks summed in 16 bits (eight chunks for Q4_K, four for Q5_K, two for
    /// Q6_K: as many as keep the sums of `vpmaddubsw` within 16 bits), each row's scale in
    /// both 16-bit halves of its lane.
    scales: [[i16; 16]; 32],
    /// Per pair of 16-value groups, each row's two coefficients of the activations'
    /// group sums (Q4_K's and Q5_K's minimums, Q6_K's scales for its −32).
    corr: [[i16; 16]; 8],
    /// Each row's factor of the integer sums (`d`) and of the corrections (`dmin`, `32·d`).
    d: [f32; 8],
    c: [f32; 8],
}

impl PanelBlock {
    const ZERO: PanelBlock = PanelBlock {
        codes: [[0; 32]; 64],
        scales: [[0; 16]; 32],
        corr: [[0; 16]; 8],
        d: [0.0; 8],
        c: [0.0; 8],
    };
}

/// Whether the tiles serve `ty` (the caller checks that the CPU has AVX2, FMA and F16C:
/// `Isa::Avx2`).
pub fn serves(ty: StoredType) -> bool {
    matches!(ty, StoredType::Q4K | StoredType::Q5K | StoredType::Q6K)
}

/// A K-quant matrix's weights as the tiles read them.
#[derive(Clone, Copy)]
pub enum Weights<'a> {
    /// The matrix's rows as stored.
    Stored(&'a QuantMatrix),
    /// A Q4_K or Q6_K matrix's copy in interleaved blocks of eight rows.
    Interleaved(&'a Interleaved),
}

/// `y [m, rows] = x · Wᵀ` for a K-quant `w` of `rows` rows and `m` input rows of Q8_K
/// blocks `a` (as many blocks per row as `w` has super-blocks). The caller checks
/// [`serves`], the CPU and the sizes.
pub fn matmul(
    ty: StoredType,
    w: Weights<'_>,
    rows: usize,
    a: &[BlockQ8K],
    m: usize,
    y: &mut [f32],
) {
    let blocks = a.len() / m.max(1);
    let panels = rows.div_ceil(ROWS);
    let out = SharedOut(y.as_mut_ptr());
    let threads = rayon::current_num_threads().max(1);
    let per_task = panels.div_ceil(threads * 4).max(1);
    (0..panels.div_ceil(per_task))
        .into_par_iter()
        .for_each_init(
            || vec![PanelBlock::ZERO; blocks],
            |panel, task| {
                for p in task * per_task..((task + 1) * per_task).min(panels) {
                    let first = p * ROWS;
                    let valid = ROWS.min(rows - first);
                    // SAFETY: the caller checked the CPU and the type; the rows hold
                    // `blocks` whole super-blocks of `ty`.
                    match w {
                        Weights::Stored(q) => {
                            let row = |r: usize| q.row(first + r);
                            unsafe { pack(ty, &row, valid, panel) };
                        }
                        Weights::Interleaved(copy) => {
                            for (s, pb) in panel.iter_mut().enumerate() {
                                let b = copy.block(p, s);
                                match ty {
                                    StoredType::Q4K => unsafe { unpack_q4k_interleaved(b, pb) },
                                    _ => unsafe { unpack_q6k_interleaved(b, pb) },
                                }
                            }
                        }
                    }
                    let mut i = 0;
                    while i < m {
                        let n = INPUTS.min(m - i);
                        let input = |k: usize| a[(i + k) * blocks..].as_ptr().cast::<u8>();
                        let mut tile = [[0f32; ROWS]; INPUTS];
                        // SAFETY: as for `pack`; input rows `i .. i + n` exist.
                        unsafe {
                            match (ty, n) {
                                (StoredType::Q4K, 4) => run::<8, 4>(panel, input, &mut tile),
                                (StoredType::Q4K, 3) => run::<8, 3>(panel, input, &mut tile),
                                (StoredType::Q4K, 2) => run::<8, 2>(panel, input, &mut tile),
                                (StoredType::Q4K, _) => run::<8, 1>(panel, input, &mut tile),
                                (StoredType::Q5K, 4) => run::<4, 4>(panel, input, &mut tile),
                                (StoredType::Q5K, 3) => run::<4, 3>(panel, input, &mut tile),
                                (StoredType::Q5K, 2) => run::<4, 2>(panel, input, &mut tile),
                                (StoredType::Q5K, _) => run::<4, 1>(panel, input, &mut tile),
                                (_, 4) => run::<2, 4>(panel, input, &mut tile),
                                (_, 3) => run::<2, 3>(panel, input, &mut tile),
                                (_, 2) => run::<2, 2>(panel, input, &mut tile),
                                (_, _) => run::<2, 1>(panel, input, &mut tile),
                            }
                        }
                        for (k, outputs) in tile[..n].iter().enumerate() {
                            for (r, &v) in outputs[..valid].iter().enumerate() {
                                // SAFETY: `y` holds `m · rows` values; this task alone
                                // writes columns `first .. first + valid`.
                                unsafe { *out.ptr().add((i + k) * rows + first + r) = v };
                            }
                        }
                        i += n;
                    }
                }
            },
        );
}

/// The tile kernel of `N` input rows on a packed panel, into `tile[..N]`.
#[target_feature(enable = "avx2,fma")]
unsafe fn run<const CHUNKS: usize, const N: usize>(
    panel: &[PanelBlock],
    input: impl Fn(usize) -> *const u8,
    tile: &mut [[f32; ROWS]; INPUTS],
) {
    let mut inputs = [std::ptr::null::<u8>(); N];
    for (n, p) in inputs.iter_mut().enumerate() {
        *p = input(n);
    }
    let mut acc = [_mm256_setzero_ps(); N];
    for (s, pb) in panel.iter().enumerate() {
        let block = |n: usize| inputs[n].add(Q8K_BYTES * s);
        let mut sum = [_mm256_setzero_si256(); N];
        for u in 0..64 / CHUNKS {
            let mut sum16 = [_mm256_setzero_si256(); N];
            for k in 0..CHUNKS {
                let c = u * CHUNKS + k;
                let w = _mm256_load_si256(pb.codes[c].as_ptr().cast());
                for (n, s16) in sum16.iter_mut().enumerate() {
                    let x = block(n).add(Q8K_QS + 4 * c).cast::<i32>().read_unaligned();
                    *s16 = _mm256_add_epi16(*s16, _mm256_maddubs_epi16(w, _mm256_set1_epi32(x)));
                }
            }
            let sc = _mm256_load_si256(pb.scales[u].as_ptr().cast());
            for n in 0..N {
                sum[n] = _mm256_add_epi32(sum[n], _mm256_madd_epi16(sum16[n], sc));
            }
        }
        let (d, c) = (_mm256_load_ps(pb.d.as_ptr()), _mm256_load_ps(pb.c.as_ptr()));
        for n in 0..N {
            let mut corr = _mm256_setzero_si256();
            for (i, coef) in pb.corr.iter().enumerate() {
                let sums = block(n)
                    .add(Q8K_BSUMS + 4 * i)
                    .cast::<i32>()
                    .read_unaligned();
                let coef = _mm256_load_si256(coef.as_ptr().cast());
                corr = _mm256_add_epi32(corr, _mm256_madd_epi16(coef, _mm256_set1_epi32(sums)));
            }
            let yd = _mm256_set1_ps(block(n).cast::<f32>().read_unaligned());
            acc[n] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum[n]), _mm256_mul_ps(d, yd), acc[n]);
            acc[n] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(corr), _mm256_mul_ps(c, yd), acc[n]);
        }
    }
    for n in 0..N {
        _mm256_storeu_ps(tile[n].as_mut_ptr(), acc[n]);
    }
}

/// Unpacks rows `0 .. valid` of a panel (`row(r)`, whole super-blocks of `ty`) into
/// `panel`, the missing rows as zeros.
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn pack<'a>(
    ty: StoredType,
    row: &dyn Fn(usize) -> &'a [u8],
    valid: usize,
    panel: &mut [PanelBlock],
) {
    const ZERO_ROW: [u8; 210] = [0; 210];
    let size = ty.block_bytes();
    for (s, pb) in panel.iter_mut().enumerate() {
        let mut b = [ZERO_ROW.as_ptr(); ROWS];
        for (r, b) in b.iter_mut().enumerate().take(valid) {
            *b = row(r).as_ptr().add(size * s);
        }
        match ty {
            StoredType::Q4K => pack_q4k_q5k::<false>(&b, pb),
            StoredType::Q5K => pack_q4k_q5k::<true>(&b, pb),
            _ => pack_q6k(&b, pb),
        }
    }
}

/// The factors, scales and minimums of a Q4_K or Q5_K super-block (the same 16 bytes at
/// the start of both), with `units` units of chunks per 32-value sub-block.
#[target_feature(enable = "f16c")]
unsafe fn pack_scales_and_mins(b: &[*const u8; ROWS], units: usize, pb: &mut PanelBlock) {
    for (r, &p) in b.iter().enumerate() {
        pb.d[r] = f16_at(p);
        pb.c[r] = f16_at(p.add(2));
        let [s0, s1, m0, m1] = k4_scale_words(p.add(4).cast::<[u8; 12]>().read_unaligned());
        let bytes = |a: u32, b: u32| {
            let (a, b) = (a.to_le_bytes(), b.to_le_bytes());
            [a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]]
        };
        let (sc, mn) = (bytes(s0, s1), bytes(m0, m1));
        for j in 0..8 {
            for u in units * j..units * (j + 1) {
                pb.scales[u][2 * r] = sc[j] as i16;
                pb.scales[u][2 * r + 1] = sc[j] as i16;
            }
            // Groups 2j and 2j + 1 (of sixteen values) are sub-block j.
            pb.corr[j][2 * r] = mn[j] as i16;
            pb.corr[j][2 * r + 1] = mn[j] as i16;
        }
    }
}

/// A Q4_K super-block of eight rows from their interleaved copy (`b`, 32-byte aligned),
/// whose codes are already grouped four values per row: only the nibbles are split.
#[target_feature(enable = "avx2,f16c")]
unsafe fn unpack_q4k_interleaved(b: *const u8, pb: &mut PanelBlock) {
    use super::interleaved_q4k::{sub_scales, D, DMIN, MINS, QS};
    let low = _mm256_set1_epi8(0x0F);
    for (sub, scales) in pb.scales.iter_mut().enumerate().take(8) {
        _mm256_store_si256(scales.as_mut_ptr().cast(), sub_scales(b, sub));
    }
    for r in 0..ROWS {
        pb.d[r] = f16_at(b.add(D + 2 * r));
        pb.c[r] = f16_at(b.add(DMIN + 2 * r));
        for sub in 0..8 {
            let m = *b.add(MINS + 16 * (sub / 2) + 2 * r + sub % 2) as i16;
            pb.corr[sub][2 * r] = m;
            pb.corr[sub][2 * r + 1] = m;
        }
    }
    for pair in 0..4 {
        for j in 0..8 {
            let bits = _mm256_load_si256(b.add(QS + 256 * pair + 32 * j).cast());
            let lo = _mm256_and_si256(bits, low);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), low);
            _mm256_store_si256(pb.codes[16 * pair + j].as_mut_ptr().cast(), lo);
            _mm256_store_si256(pb.codes[16 * pair + 8 + j].as_mut_ptr().cast(), hi);
        }
    }
}

/// A Q6_K super-block of eight rows from their interleaved copy (`b`, 32-byte aligned).
#[target_feature(enable = "avx2,f16c")]
unsafe fn unpack_q6k_interleaved(b: *const u8, pb: &mut PanelBlock) {
    use super::interleaved_q6k::{codes, group_scales, D, SCALES};
    for r in 0..ROWS {
        let d = f16_at(b.add(D + 2 * r));
        pb.d[r] = d;
        pb.c[r] = 32.0 * d;
    }
    for g in 0..16 {
        // Units 2g and 2g + 1 (eight values each) are group g.
        let sc = group_scales(b, g);
        _mm256_store_si256(pb.scales[2 * g].as_mut_ptr().cast(), sc);
        _mm256_store_si256(pb.scales[2 * g + 1].as_mut_ptr().cast(), sc);
    }
    for (i, corr) in pb.corr.iter_mut().enumerate() {
        let pair = _mm_load_si128(b.add(SCALES + 16 * i).cast());
        _mm256_store_si256(corr.as_mut_ptr().cast(), _mm256_cvtepi8_epi16(pair));
    }
    for half in 0..2 {
        for c in 0..8 {
            for (k, q) in codes(b, half, c).into_iter().enumerate() {
                _mm256_store_si256(pb.codes[32 * half + 8 * k + c].as_mut_ptr().cast(), q);
            }
        }
    }
}

/// Q4_K (`FIFTH` false: nibbles at byte 16) or Q5_K (`FIFTH`: nibbles at byte 48, each
/// with a fifth bit from the 32 bytes at 16: bit 2·pair for the low nibbles of pair
/// `pair`, bit 2·pair + 1 for the high). Q5_K's codes reach 31, so four chunks, not
/// eight, keep its 16-bit sums in range.
#[target_feature(enable = "avx2,f16c")]
unsafe fn pack_q4k_q5k<const FIFTH: bool>(b: &[*const u8; ROWS], pb: &mut PanelBlock) {
    let low = _mm256_set1_epi8(0x0F);
    let one = _mm256_set1_epi8(0x01);
    pack_scales_and_mins(b, if FIFTH { 2 } else { 1 }, pb);
    let nibbles_at = if FIFTH { 48 } else { 16 };
    for pair in 0..4 {
        // Values 64·pair .. +32 are the low nibbles of these 32 bytes, the next 32 the high.
        let mut lo = [_mm256_setzero_si256(); ROWS];
        let mut hi = [_mm256_setzero_si256(); ROWS];
        for r in 0..ROWS {
            let bits = _mm256_loadu_si256(b[r].add(nibbles_at + 32 * pair).cast());
            lo[r] = _mm256_and_si256(bits, low);
            hi[r] = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), low);
            if FIFTH {
                let high = _mm256_loadu_si256(b[r].add(16).cast());
                let fifth = |shift: i32| {
                    let bit = _mm256_srl_epi16(high, _mm_cvtsi32_si128(shift));
                    _mm256_slli_epi16::<4>(_mm256_and_si256(bit, one))
                };
                lo[r] = _mm256_or_si256(lo[r], fifth(2 * pair as i32));
                hi[r] = _mm256_or_si256(hi[r], fifth(2 * pair as i32 + 1));
            }
        }
        store_transposed(lo, &mut pb.codes[16 * pair..16 * pair + 8]);
        store_transposed(hi, &mut pb.codes[16 * pair + 8..16 * pair + 16]);
    }
}

#[target_feature(enable = "avx2,f16c")]
unsafe fn pack_q6k(b: &[*const u8; ROWS], pb: &mut PanelBlock) {
    for (r, &p) in b.iter().enumerate() {
        let d = f16_at(p.add(208));
        pb.d[r] = d;
        pb.c[r] = 32.0 * d;
        let sc = &*p.add(192).cast::<[i8; 16]>();
        for u in 0..32 {
            // Unit u (two chunks, values 8u .. 8u + 8) lies in group u / 2.
            pb.scales[u][2 * r] = sc[u / 2] as i16;
            pb.scales[u][2 * r + 1] = sc[u / 2] as i16;
        }
        for i in 0..8 {
            pb.corr[i][2 * r] = sc[2 * i] as i16;
            pb.corr[i][2 * r + 1] = sc[2 * i + 1] as i16;
        }
    }
    for half in 0..2 {
        for k in 0..4 {
            // Values 128·half + 32·k .. +32: low nibbles of the first or second 32 bytes
            // of low bits (k even / odd), their high nibbles for k ≥ 2, and bits 2k, 2k + 1
            // of the high bits.
            let mut q = [_mm256_setzero_si256(); ROWS];
            for r in 0..ROWS {
                let lows = _mm256_loadu_si256(b[r].add(64 * half + 32 * (k % 2)).cast());
                let high = _mm256_loadu_si256(b[r].add(128 + 32 * half).cast());
                q[r] = q6k_codes(lows, high, k);
            }
            let first = 32 * half + 8 * k;
            store_transposed(q, &mut pb.codes[first..first + 8]);
        }
    }
}

/// Eight rows of 32 codes (eight chunks of four each) as eight chunks of eight rows each:
/// an 8 × 8 transpose of 32-bit elements.
#[target_feature(enable = "avx2")]
pub(super) unsafe fn store_transposed(r: [__m256i; ROWS], out: &mut [[u8; 32]]) {
    let t0 = _mm256_unpacklo_epi32(r[0], r[1]);
    let t1 = _mm256_unpackhi_epi32(r[0], r[1]);
    let t2 = _mm256_unpacklo_epi32(r[2], r[3]);
    let t3 = _mm256_unpackhi_epi32(r[2], r[3]);
    let t4 = _mm256_unpacklo_epi32(r[4], r[5]);
    let t5 = _mm256_unpackhi_epi32(r[4], r[5]);
    let t6 = _mm256_unpacklo_epi32(r[6], r[7]);
    let t7 = _mm256_unpackhi_epi32(r[6], r[7]);
    let u0 = _mm256_unpacklo_epi64(t0, t2);
    let u1 = _mm256_unpackhi_epi64(t0, t2);
    let u2 = _mm256_unpacklo_epi64(t1, t3);
    let u3 = _mm256_unpackhi_epi64(t1, t3);
    let u4 = _mm256_unpacklo_epi64(t4, t6);
    let u5 = _mm256_unpackhi_epi64(t4, t6);
    let u6 = _mm256_unpacklo_epi64(t5, t7);
    let u7 = _mm256_unpackhi_epi64(t5, t7);
    let chunks = [
        _mm256_permute2x128_si256::<0x20>(u0, u4),
        _mm256_permute2x128_si256::<0x20>(u1, u5),
        _mm256_permute2x128_si256::<0x20>(u2, u6),
        _mm256_permute2x128_si256::<0x20>(u3, u7),
        _mm256_permute2x128_si256::<0x31>(u0, u4),
        _mm256_permute2x128_si256::<0x31>(u1, u5),
        _mm256_permute2x128_si256::<0x31>(u2, u6),
        _mm256_permute2x128_si256::<0x31>(u3, u7),
    ];
    for (o, v) in out.iter_mut().zip(chunks) {
        _mm256_store_si256(o.as_mut_ptr().cast(), v);
    }
}
