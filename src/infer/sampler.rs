//! Choosing the next token from logits: greedy, or temperature sampling with top-k,
//! top-p and min-p filtering, plus a repetition penalty, all seeded. The order of the
//! steps follows transformers' logits processors.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

/// Sampling settings. `temperature == 0` means greedy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sampling {
    pub temperature: f32,
    /// Keep the k most likely tokens (0: off).
    pub top_k: usize,
    /// Keep the smallest set whose probability reaches p (1: off).
    pub top_p: f32,
    /// Drop tokens below `min_p` × the top probability (0: off).
    pub min_p: f32,
    /// transformers' `repetition_penalty` (1: off).
    pub repetition_penalty: f32,
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            temperature: 0.7,
            top_k: 50,
            top_p: 0.9,
            min_p: 0.0,
            repetition_penalty: 1.0,
            seed: 42,
        }
    }
}

impl Sampling {
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }
}

/// A sampler with its own seeded random state.
pub struct Sampler {
    settings: Sampling,
    rng: StdRng,
}

impl Sampler {
    pub fn new(settings: Sampling) -> Self {
        let rng = StdRng::seed_from_u64(settings.seed);
        Self { settings, rng }
    }

    /// Picks the next token. `history` is every token so far (prompt included), for the
    /// repetition penalty.
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> u32 {
        let s = &self.settings;
        if s.repetition_penalty != 1.0 && s.repetition_penalty > 0.0 {
            let mut seen = std::collections::HashSet::new();
            for &id in history {
                if seen.insert(id) {
                    if let Some(l) = logits.get_mut(id as usize) {
                        *l = if *l < 0.0 {
                            *l * s.repetition_penalty
                        } else {
                            *l / s.repetition_penalty
                        };
                    }
                }
            }
        }
        if s.temperature <= 0.0 {
            return argmax(logits);
        }
        let inv_t = 1.0 / s.temperature;
        // Candidates sorted by logit, descending.
        let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
        let k = if s.top_k > 0 {
            s.top_k.min(idx.len())
        } else {
            idx.len()
        };
        if k < idx.len() {
            idx.select_nth_unstable_by(k - 1, |&a, &b| {
                logits[b as usize].total_cmp(&logits[a as usize])
            });
            idx.truncate(k);
        }
        idx.sort_unstable_by(|&a, &b| logits[b as usize].total_cmp(&logits[a as usize]));
        let max = logits[idx[0] as usize] * inv_t;
        let mut probs: Vec<f32> = idx
            .iter()
            .map(|&i| (logits[i as usize] * inv_t - max).exp())
            .collect();
        let sum: f32 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= sum);
        let mut keep = probs.len();
        if s.top_p < 1.0 {
            let mut cum = 0.0;
            for (i, p) in probs.iter().enumerate() {
                cum += p;
                if cum >= s.top_p {
                    keep = i + 1;
                    break;
                }
            }
        }
        if s.min_p > 0.0 {
            let floor = probs[0] * s.min_p;
            keep = keep.min(probs.iter().take_while(|&&p| p >= floor).count().max(1));
        }
        let total: f32 = probs[..keep].iter().sum();
        let mut r = self.rng.random::<f32>() * total;
        for (i, p) in probs[..keep].iter().enumerate() {
            r -= p;
            if r <= 0.0 {
                return idx[i];
            }
        }
        idx[keep - 1]
    }
}

/// Index of the largest logit (the first one on ties, as `torch.argmax`).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_max() {
        let mut s = Sampler::new(Sampling::greedy());
        assert_eq!(s.sample(&mut [0.1, 3.0, 2.0], &[]), 1);
    }

    #[test]
    fn repetition_penalty_moves_greedy_choice() {
        let mut s = Sampler::new(Sampling {
            repetition_penalty: 2.0,
            ..Sampling::greedy()
        });
        assert_eq!(s.sample(&mut [0.0, 3.0, 2.0], &[1]), 2);
    }

    #[test]
    fn top_k_one_is_greedy_and_seed_repeats() {
        let mut s = Sampler::new(Sampling {
            temperature: 1.0,
            top_k: 1,
            ..Sampling::default()
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [0.5, 0.4, 0.6], &[]), 2);
        }
        let draw = |seed| {
            let mut s = Sampler::new(Sampling {
                temperature: 1.0,
                top_k: 0,
                top_p: 1.0,
                seed,
                ..Sampling::default()
            });
            (0..50)
                .map(|_| s.sample(&mut [1.0, 1.0, 1.0, 1.0], &[]))
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn top_p_and_min_p_cut_the_tail() {
        // probabilities ≈ [0.84, 0.11, 0.04, ...]: top_p 0.5 keeps only the first.
        let mut s = Sampler::new(Sampling {
            temperature: 1.0,
            top_k: 0,
            top_p: 0.5,
            ..Sampling::default()
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [5.0, 3.0, 2.0, 0.0], &[]), 0);
        }
        let mut s = Sampler::new(Sampling {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.5,
            ..Sampling::default()
        });
        for _ in 0..20 {
            assert_eq!(s.sample(&mut [5.0, 3.0, 2.0, 0.0], &[]), 0);
        }
    }
}
