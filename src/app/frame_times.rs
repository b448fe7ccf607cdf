//! Frame times of the studio (the CPU time of `logic()` plus `ui()`), kept for the last
//! few thousand frames so a benchmark or a test can read percentiles.

use std::collections::VecDeque;
use std::time::Duration;

const KEEP: usize = 4096;

/// The recent frame times.
#[derive(Debug, Default)]
pub struct FrameTimes {
    logic: Duration,
    frames: VecDeque<Duration>,
}

impl FrameTimes {
    pub(crate) fn add_logic(&mut self, d: Duration) {
        self.logic = d;
    }

    pub(crate) fn add_ui(&mut self, d: Duration) {
        if self.frames.len() == KEEP {
            self.frames.pop_front();
        }
        self.frames.push_back(self.logic + d);
        self.logic = Duration::ZERO;
    }

    pub fn clear(&mut self) {
        self.frames.clear();
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The `p`-th percentile (0 to 100), nearest rank.
    pub fn percentile(&self, p: f64) -> Option<Duration> {
        let mut v: Vec<Duration> = self.frames.iter().copied().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_unstable();
        let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
        v.get(rank.clamp(1, v.len()) - 1).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let mut f = FrameTimes::default();
        for ms in 1..=100 {
            f.add_ui(Duration::from_millis(ms));
        }
        assert_eq!(f.percentile(50.0), Some(Duration::from_millis(50)));
        assert_eq!(f.percentile(99.0), Some(Duration::from_millis(99)));
        assert_eq!(f.percentile(100.0), Some(Duration::from_millis(100)));
    }
}
