//! The running tally of blind A/B judgments between two models: wins of each, ties and
//! "both bad", and a model's win rate over the decisive judgments with its Wilson score
//! interval (95 % by default).

use serde::{Deserialize, Serialize};

/// z of a two-sided 95 % interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// One judgment, by model rather than by the side it was shown on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// Model 0 or 1 gave the better reply.
    Win(usize),
    Tie,
    BothBad,
}

/// Counts of judgments between model 0 and model 1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub wins: [u32; 2],
    pub ties: u32,
    pub both_bad: u32,
}

/// A win rate and its interval, as fractions.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct WinRate {
    pub wins: u32,
    pub decisive: u32,
    pub rate: f64,
    pub low: f64,
    pub high: f64,
}

impl Tally {
    pub fn add(&mut self, o: Outcome) {
        match o {
            Outcome::Win(m) => self.wins[m.min(1)] += 1,
            Outcome::Tie => self.ties += 1,
            Outcome::BothBad => self.both_bad += 1,
        }
    }

    /// Takes one judgment back out (undo); a count never goes below zero.
    pub fn remove(&mut self, o: Outcome) {
        let c = match o {
            Outcome::Win(m) => &mut self.wins[m.min(1)],
            Outcome::Tie => &mut self.ties,
            Outcome::BothBad => &mut self.both_bad,
        };
        *c = c.saturating_sub(1);
    }

    /// Every judgment counted.
    pub fn total(&self) -> u32 {
        self.wins[0] + self.wins[1] + self.ties + self.both_bad
    }

    /// Model `m`'s share of the judgments one model won, with the Wilson 95 % interval;
    /// `None` before the first decisive judgment.
    pub fn win_rate(&self, m: usize) -> Option<WinRate> {
        let wins = self.wins[m.min(1)];
        let decisive = self.wins[0] + self.wins[1];
        if decisive == 0 {
            return None;
        }
        let (low, high) = wilson(wins, decisive, Z95);
        Some(WinRate {
            wins,
            decisive,
            rate: wins as f64 / decisive as f64,
            low,
            high,
        })
    }
}

/// The Wilson score interval of `k` successes in `n` trials at `z` (`(0, 1)` for n = 0).
pub fn wilson(k: u32, n: u32, z: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let n = n as f64;
    let p = k as f64 / n;
    let z2 = z * z;
    let denom = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denom;
    let half = z * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt() / denom;
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wilson_matches_the_textbook_values() {
        // 7 of 10: statsmodels' proportion_confint(7, 10, method="wilson").
        let (lo, hi) = wilson(7, 10, Z95);
        assert!((lo - 0.396_778).abs() < 1e-5, "{lo}");
        assert!((hi - 0.892_208).abs() < 1e-5, "{hi}");
        let (lo, hi) = wilson(0, 5, Z95);
        assert_eq!(lo, 0.0);
        assert!((hi - 0.434_482).abs() < 1e-5, "{hi}");
        assert_eq!(wilson(0, 0, Z95), (0.0, 1.0));
    }

    #[test]
    fn the_tally_counts_and_takes_back() {
        let mut t = Tally::default();
        assert!(t.win_rate(0).is_none());
        for o in [
            Outcome::Win(0),
            Outcome::Win(0),
            Outcome::Win(1),
            Outcome::Tie,
            Outcome::BothBad,
        ] {
            t.add(o);
        }
        assert_eq!(t.total(), 5);
        let r = t.win_rate(0).unwrap();
        assert_eq!((r.wins, r.decisive), (2, 3));
        assert!((r.rate - 2.0 / 3.0).abs() < 1e-12);
        assert!(r.low < r.rate && r.rate < r.high);
        t.remove(Outcome::Win(0));
        t.remove(Outcome::Tie);
        t.remove(Outcome::Tie);
        assert_eq!(
            t,
            Tally {
                wins: [1, 1],
                ties: 0,
                both_bad: 1
            }
        );
    }
}
