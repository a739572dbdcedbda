//! The host clock: where each call's host time comes from.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use plugsync_plugin::HostTime;

/// Gives each call its host time. The time is recorded with the call, so replay never reads a
/// clock; tests inject a [`ManualClock`] for golden outputs.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current host time.
    fn now(&self) -> HostTime;
}

/// Wall-clock time.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> HostTime {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        HostTime(i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX))
    }
}

/// A clock that moves only when told, by one nanosecond per reading so that every call still
/// gets a distinct time.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicI64,
}

impl ManualClock {
    /// A clock starting at `start`.
    pub fn starting_at(start: HostTime) -> ManualClock {
        ManualClock {
            nanos: AtomicI64::new(start.0),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, nanos: i64) {
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> HostTime {
        HostTime(self.nanos.fetch_add(1, Ordering::Relaxed))
    }
}
