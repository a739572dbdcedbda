//! The steward: the runtime's own thread that watches pending steps and acts without being
//! asked.
//!
//! A switch holds a **lease** (like Junos `commit confirmed`): if no commit arrives before it
//! expires (the sidecar crashed, the network dropped), the steward rolls the step back. Until
//! the commit it watches the step's **soak thresholds** (error rate, call latency; a panic
//! rolls back at once on the hot path) and the new version's health, and rolls back when one
//! fails. The rollback and its reason appear in the running state like any other. It also
//! writes the periodic state checkpoints of the plugins that opted in.

use std::sync::Weak;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::rollback::{self, RollbackReason};
use crate::runtime::{Runtime, Shared};
use crate::slot::Counters;

/// How often the steward looks: the precision of leases and thresholds.
const TICK: Duration = Duration::from_millis(10);

/// How often a soaking step's health is checked (it runs plugin code under the slot lock).
const HEALTH_EVERY: Duration = Duration::from_millis(100);

/// What a step must stay within while its lease runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SoakThresholds {
    /// Roll back when more than this share of the calls since the switch failed.
    #[serde(default)]
    pub max_error_rate: Option<f64>,
    /// Calls the new version must have served before its error rate is judged.
    #[serde(default)]
    pub min_calls: u64,
    /// Roll back when one call takes longer than this (microseconds).
    #[serde(default)]
    pub max_call_latency_us: Option<u64>,
}

/// What the steward watches on a pending step.
#[derive(Debug, Clone)]
pub(crate) struct StepWatch {
    /// When the lease ends, and how long it was.
    pub lease: Option<(Instant, Duration)>,
    pub soak: SoakThresholds,
    /// The slot's counters at the switch.
    pub counters_at_switch: Counters,
    /// The longest call since the switch.
    pub slowest_call: Duration,
    /// When the steward last checked the new version's health.
    pub health_checked: Instant,
}

impl StepWatch {
    pub fn new(lease: Option<Duration>, soak: SoakThresholds, counters: Counters) -> StepWatch {
        StepWatch {
            lease: lease.map(|lease| (Instant::now() + lease, lease)),
            soak,
            counters_at_switch: counters,
            slowest_call: Duration::ZERO,
            health_checked: Instant::now(),
        }
    }

    /// Why the step must roll back now, if it must.
    pub fn breach(&self, counters: &Counters, now: Instant) -> Option<RollbackReason> {
        let calls = counters.calls - self.counters_at_switch.calls;
        let errors = counters.errors - self.counters_at_switch.errors;
        if let Some(max) = self.soak.max_error_rate
            && calls > 0
            && calls >= self.soak.min_calls
        {
            let rate = errors as f64 / calls as f64;
            if rate > max {
                return Some(RollbackReason::SoakThreshold {
                    threshold: format!("max_error_rate {max}"),
                    observed: format!("{errors} of {calls} calls failed ({rate:.4})"),
                });
            }
        }
        if let Some(max) = self.soak.max_call_latency_us
            && self.slowest_call > Duration::from_micros(max)
        {
            return Some(RollbackReason::SoakThreshold {
                threshold: format!("max_call_latency_us {max}"),
                observed: format!("a call took {} µs", self.slowest_call.as_micros()),
            });
        }
        match self.lease {
            Some((until, lease)) if now >= until => Some(RollbackReason::LeaseExpired {
                lease_ms: lease.as_millis() as u64,
            }),
            _ => None,
        }
    }
}

/// Starts the steward of a runtime; it ends by itself once the runtime is dropped.
pub(crate) fn spawn(shared: Weak<Shared>) {
    let spawned = std::thread::Builder::new()
        .name("plugsync-steward".into())
        .spawn(move || {
            while let Some(shared) = shared.upgrade() {
                let runtime = Runtime { shared };
                runtime.steward_tick(Instant::now());
                drop(runtime);
                std::thread::sleep(TICK);
            }
        });
    if let Err(error) = spawned {
        tracing::error!(
            "cannot start the steward thread, leases and soak thresholds are not watched: {error}"
        );
    }
}

impl Runtime {
    /// One look at every slot: roll back what breached its lease or thresholds, write the
    /// checkpoints that are due.
    pub(crate) fn steward_tick(&self, now: Instant) {
        self.shared.clock.tick(); // The host clock re-anchors to the system clock (`clock.rs`).
        for slot in self.slots() {
            // A control operation (a swap, a commit) in progress owns the slot: look next tick.
            let Ok(_control) = slot.control.try_lock() else {
                continue;
            };
            let report = {
                let mut state = slot.state();
                let mut breach = state
                    .step
                    .as_ref()
                    .and_then(|step| step.watch.breach(&state.counters, now));
                // The new version's health, looked at every `HEALTH_EVERY` while it soaks.
                if breach.is_none()
                    && let Some(step) = &mut state.step
                    && now.duration_since(step.watch.health_checked) >= HEALTH_EVERY
                {
                    step.watch.health_checked = now;
                    if let Some(Err(failure)) = state.active.as_ref().map(|a| a.instance.health()) {
                        breach = Some(RollbackReason::HealthFailed {
                            message: failure.message,
                        });
                    }
                }
                breach.map(|reason| rollback::roll_back(&slot.id, &mut state, reason))
            };
            if let Some(report) = report {
                tracing::error!(plugin = %slot.id, from = %report.from, to = %report.to, "rolled back by the host: {}", report.reason);
                continue;
            }
            self.checkpoint_if_due(&slot, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(calls: u64, errors: u64) -> Counters {
        Counters {
            calls,
            errors,
            panics: 0,
        }
    }

    #[test]
    fn breaches_are_judged_on_the_calls_since_the_switch() {
        let start = Instant::now();
        let soak = SoakThresholds {
            max_error_rate: Some(0.1),
            min_calls: 10,
            max_call_latency_us: Some(500),
        };
        let watch = |slowest_us: u64, lease_ms: Option<u64>| StepWatch {
            lease: lease_ms
                .map(|ms| (start + Duration::from_millis(ms), Duration::from_millis(ms))),
            soak: soak.clone(),
            counters_at_switch: counters(1000, 500),
            slowest_call: Duration::from_micros(slowest_us),
            health_checked: start,
        };
        let cases: [(&str, StepWatch, Counters, Option<&str>); 6] = [
            (
                "too few calls to judge",
                watch(0, None),
                counters(1005, 505),
                None,
            ),
            (
                "errors before the switch do not count",
                watch(0, None),
                counters(1100, 505),
                None,
            ),
            (
                "error rate crossed",
                watch(0, None),
                counters(1020, 503),
                Some("max_error_rate 0.1"),
            ),
            (
                "a slow call",
                watch(900, None),
                counters(1001, 500),
                Some("max_call_latency_us 500"),
            ),
            (
                "lease running",
                watch(0, Some(60_000)),
                counters(1001, 500),
                None,
            ),
            (
                "lease expired",
                watch(0, Some(0)),
                counters(1001, 500),
                Some("lease"),
            ),
        ];
        for (name, watch, now, expected) in cases {
            let breach = watch.breach(&now, start + Duration::from_millis(1));
            let what = breach.map(|reason| match reason {
                RollbackReason::SoakThreshold { threshold, .. } => threshold,
                RollbackReason::LeaseExpired { .. } => "lease".to_owned(),
                other => format!("{other:?}"),
            });
            assert_eq!(what.as_deref(), expected, "{name}");
        }
    }
}
