//! Helpers the training ops' tests share: seeded random tensors, flattening, and the
//! largest difference between two results.

use candle_core::{Device, Tensor};

/// A CPU tensor of `shape` with values drawn uniformly from `(-bound, bound)`, from `seed`.
pub fn uniform(shape: &[usize], seed: u64, bound: f32) -> Tensor {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-bound..bound)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

/// All values of `t`, row-major.
pub fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

/// `max |a − b|` over two results of the same length.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max)
}
