//! What every tab may use during a frame: the worker, the notifications, the persisted
//! state and the frame's time.

use super::notify::Notifications;
use super::state::Persisted;
use crate::worker::Worker;

/// Borrowed by a tab for one frame.
pub struct Shared<'a> {
    pub worker: &'a Worker,
    pub notices: &'a mut Notifications,
    pub state: &'a mut Persisted,
    /// `ctx` time of this frame, in seconds.
    pub now: f64,
    /// Memory figures, read at most once a second.
    pub memory: super::memory_gauge::MemoryGauge,
}
