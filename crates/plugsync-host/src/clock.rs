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

/// Wall-clock time, read cheaply: the wall time at start-up plus the time elapsed since on the
/// CPU's time-stamp counter (`quanta`, calibrated against the OS clock). Reading the OS wall
/// clock costs ~40 ns on a VM, a sixth of a plugin call; the counter costs a few. The time never
/// goes backwards and does not follow later adjustments of the wall clock (NTP steps), which
/// suits host times that must only order and date calls.
#[derive(Debug, Clone)]
pub struct SystemClock {
    counter: quanta::Clock,
    start: quanta::Instant,
    start_wall_ns: i64,
}

impl SystemClock {
    /// A clock anchored at the current wall time.
    pub fn new() -> SystemClock {
        let counter = quanta::Clock::new();
        let start = counter.now();
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        SystemClock {
            start,
            counter,
            start_wall_ns: i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> HostTime {
        let elapsed = self.counter.now().duration_since(self.start).as_nanos();
        HostTime(
            self.start_wall_ns
                .saturating_add(i64::try_from(elapsed).unwrap_or(i64::MAX)),
        )
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
