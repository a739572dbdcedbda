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

use plugsync_plugin::HostTime;
use serde::{Deserialize, Serialize};

use crate::rollback::{self, RollbackReason};
use crate::runtime::{Runtime, Shared};
use crate::slot::{Counters, Slot, StuckCall, lock, try_lock};

/// How often the steward looks: the precision of leases and thresholds.
const TICK: Duration = Duration::from_millis(10);

/// How often old step records are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How often a soaking step's health is checked (it runs plugin code under the slot lock).
const HEALTH_EVERY: Duration = Duration::from_millis(100);

/// What a step must stay within while its lease runs.
///
/// A threshold not set is not written, so that its JSON is the same read (a switch request)
/// and written (a pending step in status).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SoakThresholds {
    /// Roll back when more than this share of the calls since the switch failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_error_rate: Option<f64>,
    /// Calls the new version must have served before its error rate is judged.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub min_calls: u64,
    /// Roll back when one call takes longer than this (microseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_call_latency_us: Option<u64>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What the steward watches on a pending step.
#[derive(Debug, Clone)]
pub(crate) struct StepWatch {
    /// When the lease ends (host time: the runtime's clock, so a test's manual clock moves
    /// it), and how long it was.
    pub lease: Option<(HostTime, Duration)>,
    pub soak: SoakThresholds,
    /// The slot's counters at the switch.
    pub counters_at_switch: Counters,
    /// The longest call since the switch.
    pub slowest_call: Duration,
    /// When the steward last checked the new version's health.
    pub health_checked: Instant,
}

impl StepWatch {
    pub fn new(
        lease: Option<Duration>,
        soak: SoakThresholds,
        counters: Counters,
        switched_at: HostTime,
    ) -> StepWatch {
        StepWatch {
            lease: lease.map(|lease| {
                let nanos = i64::try_from(lease.as_nanos()).unwrap_or(i64::MAX);
                (HostTime(switched_at.0.saturating_add(nanos)), lease)
            }),
            soak,
            counters_at_switch: counters,
            slowest_call: Duration::ZERO,
            health_checked: Instant::now(),
        }
    }

    /// Why the step must roll back now, if it must.
    pub fn breach(&self, counters: &Counters, now: HostTime) -> Option<RollbackReason> {
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
    /// One look at every slot: roll back what breached its lease or thresholds, mark calls
    /// that overran the watchdog, write the checkpoints that are due. It never waits on a slot:
    /// one busy with a control operation or a long call is looked at again next tick, so one
    /// hung plugin cannot stop the host watching the others.
    pub(crate) fn steward_tick(&self, now: Instant) {
        self.shared.clock.tick(); // The host clock re-anchors to the system clock (`clock.rs`).
        let host_now = self.shared.clock.now();
        for slot in self.slots() {
            self.watch_calls(&slot, now);
            // A control operation (a swap, a commit) in progress owns the slot: look next tick.
            let Some(_control) = try_lock(&slot.control) else {
                continue;
            };
            let Some(mut state) = slot.try_state() else {
                continue;
            };
            let mut breach = state
                .step
                .as_ref()
                .and_then(|step| step.watch.breach(&state.counters, host_now));
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
            let rolled_back =
                breach.and_then(|reason| rollback::roll_back(&slot, &mut state, reason));
            drop(state);
            if let Some((report, discarded)) = rolled_back {
                drop(discarded);
                tracing::error!(plugin = %slot.id, from = %report.from, to = %report.serving(), "rolled back by the host: {}", report.reason);
                continue;
            }
            self.checkpoint_if_due(&slot, now);
        }
        // Failed marks a rollback set on a caller's thread reach the store from here.
        if let Err(error) = self.shared.restraints.persist_if_dirty() {
            self.persisted(Err(error));
        }
        self.prune_if_due(now);
    }

    /// Prunes old step records once an hour.
    fn prune_if_due(&self, now: Instant) {
        {
            let mut last = lock(&self.shared.steps_pruned);
            if last.is_some_and(|last| now.duration_since(last) < PRUNE_EVERY) {
                return;
            }
            *last = Some(now);
        }
        match self.prune_step_records(self.shared.step_retention) {
            Ok(0) => {}
            Ok(removed) => tracing::info!(removed, "pruned step records past their retention"),
            Err(error) => tracing::error!("cannot prune step records: {error}"),
        }
    }

    /// The call watchdog: a call seen running for longer than the bound marks the slot stuck
    /// (logged once per call); it is cleared when that call returns. Reads only the slot's
    /// running-call marker, never its lock.
    fn watch_calls(&self, slot: &Slot, now: Instant) {
        let Some(bound) = self.shared.call_watchdog else {
            return;
        };
        let running = slot.call_running();
        let mut known = lock(&slot.last_known);
        let since = match (running, known.watched) {
            (Some(seq), Some((watched, since))) if watched == seq => since,
            (Some(seq), _) => {
                known.watched = Some((seq, now));
                now
            }
            (None, _) => {
                known.watched = None;
                if let Some(stuck) = known.stuck.take() {
                    tracing::warn!(plugin = %slot.id, seq = stuck.seq, "the stuck call returned");
                }
                return;
            }
        };
        let running_for = now.duration_since(since);
        let Some(seq) = running.filter(|_| running_for > bound) else {
            return;
        };
        if known.stuck.as_ref().is_none_or(|stuck| stuck.seq != seq) {
            tracing::error!(
                plugin = %slot.id,
                seq,
                bound_ms = bound.as_millis() as u64,
                "a call has run longer than the call watchdog allows; it cannot be cancelled \
                 in-process: the plugin is marked stuck"
            );
        }
        known.stuck = Some(StuckCall {
            seq,
            running_ms: running_for.as_millis() as u64,
        });
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
        let start = HostTime(1_000_000_000);
        let soak = SoakThresholds {
            max_error_rate: Some(0.1),
            min_calls: 10,
            max_call_latency_us: Some(500),
        };
        let watch = |slowest_us: u64, lease_ms: Option<u64>| StepWatch {
            lease: lease_ms.map(|ms| {
                (
                    HostTime(start.0 + ms as i64 * 1_000_000),
                    Duration::from_millis(ms),
                )
            }),
            soak: soak.clone(),
            counters_at_switch: counters(1000, 500),
            slowest_call: Duration::from_micros(slowest_us),
            health_checked: Instant::now(),
        };
        let cases: [(&str, StepWatch, Counters, Option<&str>); 8] = [
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
                "an error rate at the threshold is within it",
                watch(0, None),
                counters(1010, 501),
                None,
            ),
            (
                "a slow call",
                watch(900, None),
                counters(1001, 500),
                Some("max_call_latency_us 500"),
            ),
            (
                "a call as slow as the bound is within it",
                watch(500, None),
                counters(1001, 500),
                None,
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
            let breach = watch.breach(&now, HostTime(start.0 + 1_000_000));
            let what = breach.map(|reason| match reason {
                RollbackReason::SoakThreshold { threshold, .. } => threshold,
                RollbackReason::LeaseExpired { .. } => "lease".to_owned(),
                other => format!("{other:?}"),
            });
            assert_eq!(what.as_deref(), expected, "{name}");
        }
    }

    #[test]
    fn a_threshold_not_set_is_not_written_so_a_pending_steps_soak_reads_as_it_was_asked() {
        let unset = serde_json::to_value(SoakThresholds::default()).expect("serializes");
        assert_eq!(unset, serde_json::json!({}), "nothing set, nothing written");
        let set = SoakThresholds {
            max_error_rate: Some(0.25),
            min_calls: 4,
            max_call_latency_us: Some(500),
        };
        let written = serde_json::to_value(&set).expect("serializes");
        assert_eq!(
            written,
            serde_json::json!({"max_error_rate": 0.25, "min_calls": 4, "max_call_latency_us": 500})
        );
        let read: SoakThresholds = serde_json::from_value(written).expect("deserializes");
        assert_eq!(read, set, "written as read");
    }
}
