//! Seeded train/eval split by ratio or count; the two parts can be saved like any dataset.

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::dataset::Dataset;

/// How large the eval part is.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EvalSize {
    /// A fraction of the records (clamped to 0..=1, rounded).
    Ratio(f64),
    /// A number of records (clamped to the dataset size).
    Count(usize),
}

/// Record indices of the two parts, each in record order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    pub train: Vec<usize>,
    pub eval: Vec<usize>,
}

/// Splits `n` records: the eval part is a seeded random sample of the given size.
pub fn split_indices(n: usize, size: EvalSize, seed: u64) -> Split {
    let k = match size {
        EvalSize::Ratio(r) => {
            let r = if r.is_finite() {
                r.clamp(0.0, 1.0)
            } else {
                0.0
            };
            (n as f64 * r).round() as usize
        }
        EvalSize::Count(c) => c,
    }
    .min(n);
    let mut idx: Vec<usize> = (0..n).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    idx.shuffle(&mut rng);
    let mut eval = idx[..k].to_vec();
    let mut train = idx[k..].to_vec();
    eval.sort_unstable();
    train.sort_unstable();
    Split { train, eval }
}

impl Dataset {
    /// A seeded train/eval split into two new datasets (same format).
    pub fn split(&self, size: EvalSize, seed: u64) -> (Dataset, Dataset) {
        let s = split_indices(self.len(), size, seed);
        (self.subset(&s.train), self.subset(&s.eval))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_is_seeded_and_partitions() {
        let a = split_indices(100, EvalSize::Ratio(0.1), 7);
        let b = split_indices(100, EvalSize::Ratio(0.1), 7);
        assert_eq!(a, b);
        assert_eq!(a.eval.len(), 10);
        let mut all = a.train.clone();
        all.extend(&a.eval);
        all.sort_unstable();
        assert_eq!(all, (0..100).collect::<Vec<_>>());
        assert_ne!(a, split_indices(100, EvalSize::Ratio(0.1), 8));
        assert_eq!(split_indices(5, EvalSize::Count(9), 0).eval.len(), 5);
    }
}
