//! The memory figures the window shows (this process's resident memory, the memory still
//! free), read from `/proc` at most once a second for the whole window, not per widget
//! and not every frame.

/// The latest readings.
#[derive(Debug, Default, Clone, Copy)]
pub struct MemoryGauge {
    /// Resident memory of this process (VmRSS).
    pub rss: Option<u64>,
    /// Memory the system still has available (MemAvailable).
    pub available: Option<u64>,
    read_at: Option<f64>,
}

impl MemoryGauge {
    /// Reads the figures again if the last reading is a second old (`now`: `ctx` time).
    pub fn refresh(&mut self, now: f64) {
        if self.read_at.is_some_and(|t| now - t < 1.0) {
            return;
        }
        self.rss = crate::sys::rss_bytes();
        self.available = crate::sys::available_memory_bytes();
        self.read_at = Some(now);
    }
}
