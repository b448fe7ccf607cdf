//! Every storage type against dequantize-then-f32: each kernel level this CPU has, one
//! input row and several, against the bound that the activations' rounding allows.

use candle_core::quantized::QTensor;
use candle_core::{Device, Tensor};

use super::format::ActivationFormat;
use super::*;

fn values(n: usize, seed: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i as f32 * 0.731 + seed).sin() * 1.7 + (i as f32 * 0.05).cos()) * 0.3)
        .collect()
}

/// A xorshift generator: the same bytes on every run.
fn xorshift(mut state: u64) -> impl FnMut() -> u64 {
    move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    }
}

/// `blocks` blocks of `ty` of random bytes, with a finite f16 of either sign (2^-14 to
/// 2^2) at each of the offsets `scales` of every block.
fn random_blocks(
    ty: StoredType,
    scales: &[usize],
    blocks: usize,
    next: &mut impl FnMut() -> u64,
) -> Vec<u8> {
    let size = ty.block_bytes();
    let mut bytes: Vec<u8> = (0..blocks * size).map(|_| next() as u8).collect();
    for b in 0..blocks {
        for &at in scales {
            let v = (next() % 1000) as f32 / 250.0 - 2.0 + 1e-3;
            let h = half::f16::from_f32(v).to_le_bytes();
            bytes[b * size + at..b * size + at + 2].copy_from_slice(&h);
        }
    }
    bytes
}

/// A `rows × cols` matrix of `ty` quantized by candle from smooth random values.
fn matrix(ty: StoredType, rows: usize, cols: usize) -> QuantMatrix {
    let w = Tensor::from_vec(values(rows * cols, 0.3), (rows, cols), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&w, ty.ggml()).unwrap();
    let bytes = q.data().unwrap().to_vec();
    QuantMatrix::owned(bytes, ty, rows, cols).unwrap()
}

fn cols_for(ty: StoredType) -> usize {
    // Three blocks (an odd count, for the two-block kernels' tail), and two for K-quants.
    match ty.block_elems() {
        1 => 83,
        32 => 96,
        _ => 512,
    }
}

#[test]
fn dequantizing_matches_candle() {
    for ty in StoredType::ALL {
        let (rows, cols) = (5, cols_for(ty));
        let w = Tensor::from_vec(values(rows * cols, 0.9), (rows, cols), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, ty.ggml()).unwrap();
        let want = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap();
        let m = QuantMatrix::owned(q.data().unwrap().to_vec(), ty, rows, cols).unwrap();
        assert_eq!(m.to_f32(), want.to_vec1::<f32>().unwrap(), "{}", ty.name());
    }
}

/// Every bit pattern of the codes (random bytes, with finite f16 scales where the block
/// keeps them): the vectorized dequantizers equal candle's `to_float` bit for bit.
#[test]
fn dequantizing_random_blocks_matches_candle_bit_for_bit() {
    use candle_core::quantized::k_quants::*;
    use format::blocks;
    fn candle_values(ty: StoredType, b: &[u8], out: &mut [f32]) {
        match ty {
            StoredType::Q4_0 => BlockQ4_0::to_float(blocks(b), out),
            StoredType::Q4_1 => BlockQ4_1::to_float(blocks(b), out),
            StoredType::Q5_0 => BlockQ5_0::to_float(blocks(b), out),
            StoredType::Q5_1 => BlockQ5_1::to_float(blocks(b), out),
            StoredType::Q8_0 => BlockQ8_0::to_float(blocks(b), out),
            StoredType::Q4K => BlockQ4K::to_float(blocks(b), out),
            StoredType::Q5K => BlockQ5K::to_float(blocks(b), out),
            StoredType::Q6K => BlockQ6K::to_float(blocks(b), out),
            _ => unreachable!(),
        }
    }
    // Where each type keeps its f16 scales.
    let scale_at: [(StoredType, &[usize]); 8] = [
        (StoredType::Q4_0, &[0]),
        (StoredType::Q4_1, &[0, 2]),
        (StoredType::Q5_0, &[0]),
        (StoredType::Q5_1, &[0, 2]),
        (StoredType::Q8_0, &[0]),
        (StoredType::Q4K, &[0, 2]),
        (StoredType::Q5K, &[0, 2]),
        (StoredType::Q6K, &[208]),
    ];
    let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
    for (ty, scales) in scale_at {
        let blocks_n = 37;
        let bytes = random_blocks(ty, scales, blocks_n, &mut next);
        // Owned storage is aligned as candle's block types need.
        let m = QuantMatrix::owned(bytes, ty, blocks_n, ty.block_elems()).unwrap();
        let ours = m.to_f32();
        let mut theirs = vec![0f32; ours.len()];
        candle_values(ty, m.row_bytes_all(), &mut theirs);
        for (i, (a, b)) in ours.iter().zip(&theirs).enumerate() {
            assert_eq!(
                a.to_bits(),
                b.to_bits(),
                "{} value {i}: {a} vs {b}",
                ty.name()
            );
        }
    }
}

/// The exact products of the dequantized weights `w` with `x`, and how far the
/// activations' rounding in `format` can move each: f32 ones only by f32 sums; two-level
/// Q8 ones hold each value within half of 1/256 of its 32-value block's step
/// (`max|x| / 127`); one-level Q8_K ones within half of its 256-value block's step.
fn exact_and_bound(
    w: &[f32],
    x: &[f32],
    (rows, cols, inputs): (usize, usize, usize),
    format: ActivationFormat,
) -> (Vec<f64>, Vec<f64>) {
    let (block, fine) = match format {
        ActivationFormat::F32 => (cols, 0.0),
        ActivationFormat::Q8 => (32, 1.0 / 256.0),
        ActivationFormat::Q8K => (256, 1.0),
    };
    let mut want = vec![0f64; inputs * rows];
    let mut bound = vec![0f64; inputs * rows];
    for i in 0..inputs {
        let xi = &x[i * cols..(i + 1) * cols];
        for r in 0..rows {
            let wr = &w[r * cols..(r + 1) * cols];
            let (mut s, mut b) = (0f64, 0f64);
            for (xb, wb) in xi.chunks(block).zip(wr.chunks(block)) {
                let step = xb.iter().fold(0f32, |a, v| a.max(v.abs())) as f64 / 127.0 * fine;
                for (&xv, &wv) in xb.iter().zip(wb) {
                    s += xv as f64 * wv as f64;
                    b += wv.abs() as f64 * step * 0.5;
                }
            }
            want[i * rows + r] = s;
            bound[i * rows + r] = b * 1.01 + 1e-4 * (1.0 + s.abs());
        }
    }
    (want, bound)
}

#[test]
fn every_kernel_is_within_the_rounding_of_its_activations() {
    for ty in StoredType::ALL {
        let (rows, cols) = (37, cols_for(ty));
        let m = matrix(ty, rows, cols);
        let w = m.to_f32();
        for inputs in [1, 3, 11] {
            let x = values(inputs * cols, 2.0 + inputs as f32);
            let mut reference = vec![0f32; inputs * rows];
            m.matmul_on(Isa::Scalar, &x, inputs, &mut reference)
                .unwrap();
            for level in Isa::available() {
                // Where two levels both run on this CPU the product takes the one a short
                // measurement chose (AVX2 over AVX-512 for Q4_K on some Xeons), with that
                // level's activations: the bound is theirs.
                let ran = super::kernel_choice::choose(ty, cols, level);
                let format = ty.activation_format(ran);
                let (want, bound) = exact_and_bound(&w, &x, (rows, cols, inputs), format);
                let mut y = vec![0f32; inputs * rows];
                m.matmul_on(level, &x, inputs, &mut y).unwrap();
                for k in 0..y.len() {
                    let err = (y[k] as f64 - want[k]).abs();
                    assert!(
                        err <= bound[k],
                        "{} {level:?} (ran {ran:?}) {inputs} rows, output {k}: {} vs {} (bound {})",
                        ty.name(),
                        y[k],
                        want[k],
                        bound[k]
                    );
                    // Kernels on the scalar kernel's activations compute its integer sums.
                    if format == ty.activation_format(Isa::Scalar) {
                        let same = (y[k] - reference[k]).abs() <= 1e-5 * (1.0 + reference[k].abs());
                        assert!(
                            same,
                            "{} {level:?}: {} vs scalar {}",
                            ty.name(),
                            y[k],
                            reference[k]
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn reordered_rows_and_wrong_sizes() {
    let m = matrix(StoredType::Q4_1, 6, 64);
    let r = m.with_rows_from(|i| 5 - i).unwrap();
    let (a, b) = (m.to_f32(), r.to_f32());
    assert_eq!(&a[..64], &b[5 * 64..]);
    assert!(m.with_rows_from(|i| i + 1).is_err());
    let err = QuantMatrix::owned(vec![0; 39], StoredType::Q4_1, 2, 32).unwrap_err();
    assert!(err.contains("Q4_1 [2, 32]"), "{err}");
    let err = QuantMatrix::owned(vec![0; 20], StoredType::Q4_1, 1, 20).unwrap_err();
    assert!(err.contains("whole 32-value blocks"), "{err}");
    let mut y = vec![0f32; 5];
    assert!(m.matmul(&[0.0; 64], 1, &mut y).is_err());
}

/// The K-quants' multi-row AVX2 kernels and integer tiles on random bytes (every scale, minimum and code
/// pattern, finite f16 scales): the integer sums of candle's scalar kernel, to f32
/// rounding of the terms' magnitudes (on a CPU without AVX2 both run the scalar kernel).
#[test]
fn kquant_row_groups_match_the_scalar_sums_on_random_blocks() {
    let mut next = xorshift(0x2545_F491_4F6C_DD1D);
    for (ty, scales) in [
        (StoredType::Q4K, &[0usize, 2][..]),
        (StoredType::Q5K, &[0, 2][..]),
        (StoredType::Q6K, &[208][..]),
    ] {
        // Rows past a whole tile of eight; inputs in whole tiles of four and not.
        let (rows, cols) = (13, 3 * 256);
        let bytes = random_blocks(ty, scales, rows * cols / 256, &mut next);
        let m = QuantMatrix::owned(bytes, ty, rows, cols).unwrap();
        let w = m.to_f32();
        for inputs in [1, 2, 3, 4, 5, 8, 11, 17] {
            let x: Vec<f32> = (0..inputs * cols)
                .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let (mut fast, mut scalar) = (vec![0f32; inputs * rows], vec![0f32; inputs * rows]);
            m.matmul_on(Isa::Avx2, &x, inputs, &mut fast).unwrap();
            m.matmul_on(Isa::Scalar, &x, inputs, &mut scalar).unwrap();
            for i in 0..inputs {
                for r in 0..rows {
                    let magnitude: f32 = (0..cols)
                        .map(|c| (w[r * cols + c] * x[i * cols + c]).abs())
                        .sum();
                    let k = i * rows + r;
                    assert!(
                        (fast[k] - scalar[k]).abs() <= 1e-5 * (1.0 + magnitude),
                        "{} input {i} row {r}: {} vs scalar {}",
                        ty.name(),
                        fast[k],
                        scalar[k]
                    );
                }
            }
        }
    }
}

/// `got` and `want` are the same integer sums scaled to f32: equal within 1e-5 of each
/// value's size.
fn assert_same_sums(got: &[f32], want: &[f32], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (k, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-5 * (1.0 + w.abs()),
            "{what}, output {k}: {g} vs {w}"
        );
    }
}

/// Every type with an interleaved layout and the offsets of its f16 scales.
const INTERLEAVED: [(StoredType, &[usize]); 7] = [
    (StoredType::Q4K, &[0, 2]),
    (StoredType::Q6K, &[208]),
    (StoredType::Q4_0, &[0]),
    (StoredType::Q4_1, &[0, 2]),
    (StoredType::Q5_0, &[0]),
    (StoredType::Q5_1, &[0, 2]),
    (StoredType::Q8_0, &[0]),
];

/// A matrix's decode steps on AVX2 build its interleaved copy (where they take AVX2 on
/// this CPU); once it is kept in its stored layout (as training keeps its base) the copy
/// is gone and the products, through the one-row kernels, give the same sums, for one
/// input row and for runs of four and fewer. A 32-value type's rows, rebuilt from its
/// copy, equal its stored rows bit for bit (a last group of fewer than eight rows
/// included).
#[test]
fn a_matrix_kept_in_its_stored_layout_drops_its_copy_and_computes_the_same() {
    assert!(
        isa::active() >= Isa::Avx2,
        "the interleaved copies are built on AVX2, which this CPU does not have"
    );
    let mut next = xorshift(0x9E37_79B9_7F4A_7C15);
    for (ty, scales) in INTERLEAVED {
        let (rows, cols) = (21, 2 * 256);
        let bytes = random_blocks(ty, scales, rows * cols / ty.block_elems(), &mut next);
        let reference = QuantMatrix::owned(bytes.clone(), ty, rows, cols).unwrap();
        reference.keep_stored_layout();
        let m = QuantMatrix::owned(bytes, ty, rows, cols).unwrap();
        let x: Vec<f32> = (0..cols)
            .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
            .collect();
        for inputs in [3, 9] {
            let x: Vec<f32> = (0..inputs * cols)
                .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            let (mut a, mut b) = (vec![0f32; inputs * rows], vec![0f32; inputs * rows]);
            m.matmul_on(Isa::Avx2, &x, inputs, &mut a).unwrap();
            reference.matmul_on(Isa::Avx2, &x, inputs, &mut b).unwrap();
            // The same integer sums, scaled and added in another order: within the
            // rounding of the terms' magnitudes (random scales of either sign cancel).
            let w = reference.to_f32();
            for (k, (&got, &want)) in a.iter().zip(&b).enumerate() {
                let (i, r) = (k / rows, k % rows);
                let magnitude: f32 = (0..cols)
                    .map(|j| (w[r * cols + j] * x[i * cols + j]).abs())
                    .sum();
                assert!(
                    (got - want).abs() <= 1e-6 * (1.0 + magnitude),
                    "{} {inputs} rows, output {k}: {got} vs {want} (terms {magnitude})",
                    ty.name()
                );
            }
        }
        let (mut copied, mut stored) = (vec![0f32; rows], vec![0f32; rows]);
        m.matmul_on(Isa::Avx2, &x, 1, &mut copied).unwrap();
        if ty.block_elems() == 32 && m.has_interleaved_copy() {
            assert_eq!(
                m.to_f32(),
                reference.to_f32(),
                "{}: rows from the copy",
                ty.name()
            );
        }
        // On AVX-512 the copy is built only where its product outran VNNI's.
        let decode_level = kernel_choice::choose(ty, cols, isa::active());
        assert_eq!(
            m.has_interleaved_copy(),
            decode_level == Isa::Avx2,
            "{}",
            ty.name()
        );
        m.keep_stored_layout();
        assert!(!m.has_interleaved_copy(), "{}", ty.name());
        m.matmul_on(Isa::Avx2, &x, 1, &mut stored).unwrap();
        assert!(!m.has_interleaved_copy(), "{}: built again", ty.name());
        assert_same_sums(&copied, &stored, ty.name());
    }
}

/// Preparing a matrix's products builds the copy its decode steps take on this CPU,
/// before any product asks for it; a matrix kept in its stored layout (a training base)
/// builds none.
#[test]
fn preparing_products_builds_the_copy_decode_takes_unless_the_stored_layout_is_kept() {
    assert!(
        isa::active() >= Isa::Avx2,
        "the interleaved copies are built on AVX2, which this CPU does not have"
    );
    let mut next = xorshift(0x2545_F491_4F6C_DD1D);
    for (ty, scales) in INTERLEAVED {
        let (rows, cols) = (10, 256);
        let bytes = random_blocks(ty, scales, rows * cols / ty.block_elems(), &mut next);
        let m = QuantMatrix::owned(bytes.clone(), ty, rows, cols).unwrap();
        assert!(!m.has_interleaved_copy(), "{}: a copy at load", ty.name());
        m.prepare_products();
        let decode_level = kernel_choice::choose(ty, cols, isa::active());
        assert_eq!(
            m.has_interleaved_copy(),
            decode_level == Isa::Avx2,
            "{}",
            ty.name()
        );
        let kept = QuantMatrix::owned(bytes, ty, rows, cols).unwrap();
        kept.keep_stored_layout();
        kept.prepare_products();
        assert!(!kept.has_interleaved_copy(), "{}: kept stored", ty.name());
    }
}

/// A mapped matrix with its rows reordered (as llama.cpp's Q/K rows are at load) reads
/// the mapped bytes in the new order, no copy: its rows, its dequantization and every
/// product (one input row, a group, a prompt's tiles, on each level) equal those of a
/// copy with the rows moved.
#[test]
fn reordered_mapped_rows_are_read_in_place_in_the_new_order() {
    use std::io::Write;
    let mut next = xorshift(0x51AF_D7ED_558C_CD1B);
    for (ty, scales) in [
        (StoredType::Q4K, &[0usize, 2][..]),
        (StoredType::Q6K, &[208][..]),
        (StoredType::Q4_1, &[0, 2][..]),
    ] {
        let (rows, cols) = (24, 512);
        let bytes = random_blocks(ty, scales, rows * cols / ty.block_elems(), &mut next);
        let mut file = tempfile::tempfile().unwrap();
        file.write_all(&bytes).unwrap();
        // SAFETY: a private temporary file that nothing else writes.
        let map = std::sync::Arc::new(unsafe { memmap2::Mmap::map(&file).unwrap() });
        let mapped = QuantMatrix::mapped(map, 0, ty, rows, cols).unwrap();
        let source = |i: usize| (i * 7 + 3) % rows;
        let reordered = mapped.with_rows_from(source).unwrap();
        let copied = QuantMatrix::owned(bytes, ty, rows, cols)
            .unwrap()
            .with_rows_from(source)
            .unwrap();
        assert_eq!(reordered.to_f32(), copied.to_f32(), "{}", ty.name());
        assert_eq!(
            reordered.row_bytes_all().as_ptr(),
            mapped.row_bytes_all().as_ptr(),
            "{}: the mapped bytes, not a copy of them",
            ty.name()
        );
        for inputs in [1, 3, 9] {
            let x: Vec<f32> = (0..inputs * cols)
                .map(|_| (next() % 2001) as f32 / 1000.0 - 1.0)
                .collect();
            for level in Isa::available() {
                let (mut a, mut b) = (vec![0f32; inputs * rows], vec![0f32; inputs * rows]);
                reordered.matmul_on(level, &x, inputs, &mut a).unwrap();
                copied.matmul_on(level, &x, inputs, &mut b).unwrap();
                assert_same_sums(&a, &b, &format!("{} {level:?} {inputs} rows", ty.name()));
            }
        }
    }
}

/// The choice between the AVX2 and VNNI kernels times both on a matrix of its own; for
/// Q4_K and Q6_K the AVX2 product reads an interleaved copy, which the timing builds
/// itself: the product never asks for the choice being made (on AVX-512 it once did, and
/// the timing called itself without end). On a CPU without VNNI both timings run AVX2.
#[test]
fn choosing_a_kernel_level_times_each_type_once_and_ends() {
    for ty in StoredType::ALL {
        let cols = 2 * 256;
        let picked = kernel_choice::choose(ty, cols, Isa::Avx512Vnni);
        assert!(picked <= Isa::Avx512Vnni, "{}", ty.name());
        assert_eq!(
            kernel_choice::choose(ty, cols, Isa::Avx512Vnni),
            picked,
            "{}: the choice is kept",
            ty.name()
        );
    }
}
