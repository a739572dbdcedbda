//! Slots: one per plugin id, holding the instance that serves calls, and the hot path.
//!
//! Calls to one instance are serialised by the slot's lock (a stateful instance is mutated by
//! each call); the drain of a swap is taking that same lock, so in-flight calls finish and new
//! ones wait. Beyond that lock the hot path touches no shared atomics: counters and the
//! sequence number live under it, the host time is read under it, and the receipt returned is
//! plain data.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, TryLockError};
use std::time::{Duration, Instant};

use plugsync_plugin::HostTime;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::digest::Digest;
use crate::error::HostError;
use crate::library::{Failure, Instance, Library};
use crate::persist::Checkpointing;
use crate::restraints::RestraintsCell;
use crate::rollback::{self, RollbackMethod, RollbackReason, RollbackReport};
use crate::runtime::PluginStatus;
use crate::steward::StepWatch;

/// What a call returns besides its output: which call it was and which artifact served it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CallReceipt {
    /// Position of the call in the slot's total order (taken under the slot lock).
    pub seq: u64,
    /// Host time the plugin was given.
    pub now: HostTime,
    /// sha256 of the artifact whose instance served the call (to tag orders with).
    pub digest: Digest,
}

/// A call's output, copied out of the plugin, with its receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallOutput {
    /// The bytes the plugin returned.
    pub output: Vec<u8>,
    /// Which call, when, served by what.
    pub receipt: CallReceipt,
}

/// A call that did not produce an output.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// Nothing is loaded in the slot.
    #[error("no plugin `{plugin}` is loaded in this host")]
    NotLoaded {
        /// Plugin id.
        plugin: String,
    },
    /// The slot is faulted and fails closed: the call was refused without running the plugin,
    /// whose state is suspect since a panic.
    #[error(
        "plugin `{plugin}` is faulted (it panicked in call #{fault_seq}: {message}) and fails \
         closed: the call was refused; swap to a fixed version or restore a verified snapshot"
    )]
    FailedClosed {
        /// Plugin id.
        plugin: String,
        /// The call that panicked.
        fault_seq: u64,
        /// Its panic message.
        message: String,
    },
    /// The plugin is halted: the call was refused without running it.
    #[error(
        "plugin `{plugin}` is halted ({reason}): the call was refused; resume it when it is safe \
         (`POST /v1/restraints` with `\"action\": \"resume\"`)"
    )]
    Halted {
        /// Plugin id.
        plugin: String,
        /// Why it was halted.
        reason: String,
    },
    /// The plugin returned an error or panicked.
    #[error("plugin `{plugin}` ({}) {}: {message}", .digest.short(), if *.panicked { "panicked (caught; slot marked faulted)" } else { "returned an error" })]
    Plugin {
        /// Plugin id.
        plugin: String,
        /// Artifact that failed.
        digest: Digest,
        /// The plugin's message.
        message: String,
        /// Whether it was a caught panic.
        panicked: bool,
        /// Sequence number of the failed call.
        seq: u64,
    },
}

/// A panic caught in a plugin: its state is suspect from then on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct Fault {
    /// The panic message.
    pub message: String,
    /// Sequence number of the call that panicked.
    pub seq: u64,
    /// Host time of that call.
    #[cfg_attr(feature = "control-api", schemars(with = "i64"))]
    pub at: HostTime,
    /// Artifact that panicked.
    pub digest: Digest,
}

/// Per-slot counters, kept under the slot lock (no shared atomics on the hot path).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct Counters {
    /// Calls served (successfully or not).
    pub calls: u64,
    /// Calls that returned an error or panicked.
    pub errors: u64,
    /// Calls that panicked.
    pub panics: u64,
}

/// One call as recorded for replay: enough to feed it again, deterministically.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedCall {
    /// Its sequence number.
    pub seq: u64,
    /// The host time it was given.
    pub now: HostTime,
    /// Its input.
    pub input: Vec<u8>,
    /// What the serving instance returned (or its error message).
    pub output: Result<Vec<u8>, String>,
    /// Whether the serving instance panicked in it (caught): the error is then a fault, never
    /// an answer another version may agree with.
    pub panicked: bool,
}

/// A bounded record of calls. On overflow it drops what it held (replay is then impossible
/// anyway) and only counts.
#[derive(Debug)]
pub(crate) struct Journal {
    capacity: usize,
    pub calls: Vec<RecordedCall>,
    /// Calls that arrived while full (the journal then holds none).
    pub overflowed: u64,
}

impl Journal {
    pub fn new(capacity: usize) -> Journal {
        Journal {
            capacity,
            calls: Vec::new(),
            overflowed: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    pub fn is_complete(&self) -> bool {
        self.overflowed == 0
    }

    fn record_failure(&mut self, seq: u64, now: HostTime, input: &[u8], failure: &Failure) {
        self.record(seq, now, input, Err(&failure.message), failure.panicked);
    }

    fn record(
        &mut self,
        seq: u64,
        now: HostTime,
        input: &[u8],
        output: Result<&[u8], &str>,
        panicked: bool,
    ) {
        if self.overflowed > 0 || self.calls.len() >= self.capacity {
            if self.overflowed == 0 {
                self.overflowed = self.calls.len() as u64;
                self.calls = Vec::new();
            }
            self.overflowed += 1;
            return;
        }
        self.calls.push(RecordedCall {
            seq,
            now,
            input: input.to_vec(),
            output: output.map(<[u8]>::to_vec).map_err(str::to_owned),
            panicked,
        });
    }
}

/// The instance a slot serves with, and what it was made from.
#[derive(Debug)]
pub(crate) struct Active {
    pub instance: Instance,
    pub config: serde_json::Value,
}

impl Active {
    pub fn library(&self) -> &Arc<Library> {
        self.instance.library()
    }

    pub fn digest(&self) -> Digest {
        self.library().digest
    }

    pub fn version(&self) -> &str {
        &self.library().metadata.version
    }
}

/// A switched but not yet committed step: the previous instance is kept, untouched since the
/// switch, and every call since is journaled so a rollback can replay it. Or an install with a
/// lease: nothing ran before it, so there is no previous instance and nothing to journal; a
/// rollback unloads it.
#[derive(Debug)]
pub(crate) struct PendingStep {
    /// The instance a rollback goes back to; `None` for an install.
    pub previous: Option<Active>,
    pub step_id: Option<String>,
    pub switched_seq: u64,
    pub switched_at: HostTime,
    pub journal: Journal,
    /// The fault the slot carried before the switch: restored if the step rolls back.
    pub previous_fault: Option<Fault>,
    /// The switch discarded the state (`SwapRequest::fresh_state`): recorded at commit.
    pub fresh_state: bool,
    /// The asking client's fingerprint of the plugin's desired entry, for the failed mark
    /// should the step fail.
    pub entry_sha256: Option<String>,
    /// Lease and soak thresholds, watched by the steward.
    pub watch: StepWatch,
}

impl PendingStep {
    /// The version before the step, for messages: an install's is "not loaded".
    pub fn previous_version(&self) -> &str {
        self.previous.as_ref().map_or("not loaded", Active::version)
    }
}

/// Where a step is, once switched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Switched, neither committed nor rolled back yet: the previous version is kept.
    Pending,
    /// Committed: the previous version is gone.
    Committed,
    /// Rolled back (asked for, or by the host: a lease, a threshold, a panic).
    RolledBack,
}

/// The last step applied to a slot, for status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct StepRecord {
    /// The step id the sidecar gave, if any.
    pub step_id: Option<String>,
    /// Version switched to.
    pub version: String,
    /// Artifact switched to.
    pub digest: Digest,
    /// Host time of the switch.
    #[cfg_attr(feature = "control-api", schemars(with = "i64"))]
    pub at: HostTime,
    /// Where the step is: `pending`, `committed` or `rolled_back`.
    pub outcome: StepState,
    /// The fault the replaced version carried at the switch (a panic before or during the
    /// swap): the state migrated into this version came from an instance that had panicked.
    pub replaced_fault: Option<Fault>,
}

impl StepRecord {
    /// The record of step `step_id` to `library`, switched (or installed) at `at`.
    pub(crate) fn of(
        step_id: Option<String>,
        library: &Library,
        at: HostTime,
        outcome: StepState,
        replaced_fault: Option<Fault>,
    ) -> StepRecord {
        StepRecord {
            step_id,
            version: library.metadata.version.clone(),
            digest: library.digest,
            at,
            outcome,
            replaced_fault,
        }
    }
}

/// Everything under a slot's lock.
#[derive(Debug, Default)]
pub(crate) struct SlotState {
    pub active: Option<Active>,
    pub seq: u64,
    pub counters: Counters,
    /// The host time the last call served was given (set with the counters, under the lock).
    pub last_call_at: Option<HostTime>,
    pub fault: Option<Fault>,
    pub step: Option<PendingStep>,
    /// Calls recorded while a swap migrates a snapshot off the lock (see `swap`).
    pub catch_up: Option<Journal>,
    pub last_step: Option<StepRecord>,
    pub last_rollback: Option<RollbackReport>,
    /// Whether and when this plugin's state is checkpointed to the store.
    pub checkpointing: Option<Checkpointing>,
    /// Refuse calls while faulted (a risk plugin whose state is suspect must not approve
    /// orders) instead of serving on.
    pub fail_closed: bool,
    /// Halted by an operator or a client: every call is refused at once, with this reason,
    /// until resumed.
    pub halted: Option<String>,
}

impl SlotState {
    /// Refuses an operation that must not run while a step is pending (a swap, a restore).
    pub fn no_step_pending(&self, plugin: &str) -> Result<(), HostError> {
        match (&self.step, &self.active) {
            (Some(step), Some(active)) => Err(HostError::StepInProgress {
                plugin: plugin.to_owned(),
                from: step.previous_version().to_owned(),
                to: active.version().to_owned(),
            }),
            _ => Ok(()),
        }
    }
}

/// One plugin id's slot.
#[derive(Debug)]
pub(crate) struct Slot {
    pub id: String,
    state: Mutex<SlotState>,
    /// Serialises control operations (swap, commit, rollback, unload) on this slot; calls never
    /// take it.
    pub control: Mutex<()>,
    /// Held while a checkpoint of this slot is taken and written.
    pub checkpoint: Mutex<()>,
    pub clock: Arc<dyn Clock>,
    /// The sequence number of the call running now, 0 when none: what the call watchdog
    /// reads without taking the slot lock (a hung call holds it). Written on the hot path with
    /// two relaxed stores to a line the slot lock already owns; never read there.
    in_call: AtomicU64,
    /// What this slot's status said the last time it could be read, for a status asked while
    /// the slot is busy (a long call holds its lock); and what the watchdog found.
    pub last_known: Mutex<LastKnown>,
    /// The host's restraints: a rollback marks the version it leaves failed.
    pub restraints: Arc<RestraintsCell>,
}

/// What a slot showed last, kept outside its lock.
#[derive(Debug, Default)]
pub(crate) struct LastKnown {
    /// The slot's last status (without the busy and stuck marks).
    pub status: Option<PluginStatus>,
    /// A call the watchdog found running past its bound.
    pub stuck: Option<StuckCall>,
    /// The call the watchdog saw running at its last look, and since when.
    pub watched: Option<(u64, Instant)>,
}

/// A call that has run longer than the watchdog's bound. It cannot be cancelled: a plugin runs
/// in the host's process, on the caller's thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct StuckCall {
    /// Sequence number of the call.
    pub seq: u64,
    /// How long it had run when the watchdog last looked, in milliseconds.
    pub running_ms: u64,
}

/// Locks a mutex, carrying on after a poisoning panic: the runtime's own code does not panic
/// while holding these locks, and a host must keep serving whatever happened.
/// How long a call spins for a slot held by another thread before sleeping on it
/// ([`Slot::state_for_call`]): longer than a swap's cut or switch holds it (a copy of the state,
/// µs), far shorter than a scheduler slice.
pub(crate) const CALLER_SPIN: Duration = Duration::from_micros(50);

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Locks a mutex if it is free now, carrying on after a poisoning panic as [`lock`] does:
/// `None` only when another thread holds it.
pub(crate) fn try_lock<T>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

impl Slot {
    pub fn new(id: String, clock: Arc<dyn Clock>, restraints: Arc<RestraintsCell>) -> Slot {
        Slot {
            id,
            restraints,
            state: Mutex::new(SlotState::default()),
            control: Mutex::new(()),
            checkpoint: Mutex::new(()),
            clock,
            in_call: AtomicU64::new(0),
            last_known: Mutex::new(LastKnown::default()),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, SlotState> {
        lock(&self.state)
    }

    /// The slot's state for a call: spins for it up to [`CALLER_SPIN`] before sleeping on it.
    ///
    /// A caller that sleeps on a held lock (std's mutex spins for ~1-2 µs, then waits on a
    /// futex) is woken when it is released and must then be scheduled: 20-50 µs on a VM, more
    /// than the swap's cut or switch holds the slot. Spinning for a bounded time makes a hold of
    /// a few µs cost callers a few µs; a longer hold (the locked switch, a rollback's replay,
    /// a hung call) costs them the bound in CPU and then they sleep as before.
    fn state_for_call(&self) -> MutexGuard<'_, SlotState> {
        if let Some(state) = self.try_state() {
            return state;
        }
        let started = Instant::now();
        loop {
            // One `try_lock` (a write to the lock's cache line) per ~64 pauses, not per pause:
            // the holder works on the state beside it.
            for _ in 0..64 {
                std::hint::spin_loop();
            }
            if let Some(state) = self.try_state() {
                return state;
            }
            if started.elapsed() >= CALLER_SPIN {
                return self.state();
            }
        }
    }

    /// The slot's state if no one holds it now (a call, a control operation).
    pub fn try_state(&self) -> Option<MutexGuard<'_, SlotState>> {
        try_lock(&self.state)
    }

    /// The sequence number of the call running now, if one is.
    pub fn call_running(&self) -> Option<u64> {
        match self.in_call.load(Ordering::Relaxed) {
            0 => None,
            seq => Some(seq),
        }
    }

    /// The hot path: one call, its output handed to `on_output` while still borrowed from the
    /// plugin (no copy, no allocation unless a step or swap is recording).
    ///
    /// `now` is the host time to give the plugin; `None` reads the runtime's clock (under the
    /// lock, so times follow the calls' order).
    pub fn call_with<R>(
        &self,
        input: &[u8],
        now: Option<HostTime>,
        on_output: impl FnOnce(&[u8]) -> R,
    ) -> Result<(CallReceipt, R), CallError> {
        let mut guard = self.state_for_call();
        let state = &mut *guard;
        let now = now.unwrap_or_else(|| self.clock.now());
        let Some(active) = state.active.as_mut() else {
            return Err(CallError::NotLoaded {
                plugin: self.id.clone(),
            });
        };
        if let Some(reason) = &state.halted {
            return Err(CallError::Halted {
                plugin: self.id.clone(),
                reason: reason.clone(),
            });
        }
        if state.fail_closed
            && let Some(fault) = &state.fault
        {
            return Err(CallError::FailedClosed {
                plugin: self.id.clone(),
                fault_seq: fault.seq,
                message: fault.message.clone(),
            });
        }
        state.seq += 1;
        state.counters.calls += 1;
        state.last_call_at = Some(now);
        let seq = state.seq;
        let digest = active.digest();
        // Only a step in soak is timed (its latency threshold); otherwise no clock is read.
        let started = state.step.is_some().then(Instant::now);
        self.in_call.store(seq, Ordering::Relaxed);
        let result = active.instance.call(input, now.0);
        self.in_call.store(0, Ordering::Relaxed);
        match result {
            Ok(output) => {
                if let Some(step) = &mut state.step {
                    step.journal.record(seq, now, input, Ok(output), false);
                    if let Some(started) = started {
                        step.watch.slowest_call = step.watch.slowest_call.max(started.elapsed());
                    }
                }
                if let Some(catch_up) = &mut state.catch_up {
                    catch_up.record(seq, now, input, Ok(output), false);
                }
                let result = on_output(output);
                Ok((CallReceipt { seq, now, digest }, result))
            }
            Err(failure) => {
                let mut discarded = None;
                let result = self.failed_call(
                    state,
                    seq,
                    now,
                    digest,
                    input,
                    failure,
                    on_output,
                    &mut discarded,
                );
                // A rollback's leftovers (the faulty instance, the journal) are destroyed with
                // the slot released: callers waiting on it do not wait for that too.
                drop(guard);
                drop(discarded);
                result
            }
        }
    }

    /// A call failed. A panic marks the slot faulted; during a step it rolls the step back at
    /// once and serves this same call with the previous version, so the caller gets an answer
    /// and no input is lost.
    #[allow(clippy::too_many_arguments)]
    #[cold]
    fn failed_call<R>(
        &self,
        state: &mut SlotState,
        seq: u64,
        now: HostTime,
        digest: Digest,
        input: &[u8],
        failure: Failure,
        on_output: impl FnOnce(&[u8]) -> R,
        discarded: &mut Option<rollback::Discarded>,
    ) -> Result<(CallReceipt, R), CallError> {
        if let Some(catch_up) = &mut state.catch_up {
            catch_up.record_failure(seq, now, input, &failure);
        }
        // A panic during a step rolls it back (below); any other failure is journaled.
        let step_panicked =
            (failure.panicked && state.step.is_some()).then(|| failure.message.clone());
        if !failure.panicked
            && let Some(step) = &mut state.step
        {
            step.journal.record_failure(seq, now, input, &failure);
        }
        let error = self.count_failure(state, seq, now, digest, failure);
        if let Some(message) = step_panicked {
            let reason = RollbackReason::CallPanicked { seq, message };
            let Some((report, leftovers)) = rollback::roll_back(self, state, reason) else {
                return Err(error);
            };
            *discarded = Some(leftovers);
            tracing::error!(plugin = %self.id, "{}", report.reason);
            // After a replay (or a loss) the previous version never saw this call: serve it
            // there. After a down-migration its state came from the instance that panicked
            // midway through this call, so serving it again could apply it twice: the
            // caller gets the error instead (the report marks the call as in doubt). After an
            // install rolled back, nothing is left to serve it: the caller gets the panic.
            if matches!(
                report.method,
                RollbackMethod::Replay { .. } | RollbackMethod::Lossy { .. }
            ) {
                return self.serve_again(state, seq, now, input, on_output);
            }
        }
        Err(error)
    }

    /// Counts a failed call; a panic marks the slot faulted (its state is suspect).
    fn count_failure(
        &self,
        state: &mut SlotState,
        seq: u64,
        now: HostTime,
        digest: Digest,
        failure: Failure,
    ) -> CallError {
        state.counters.errors += 1;
        if failure.panicked {
            state.counters.panics += 1;
            state.fault = Some(Fault {
                message: failure.message.clone(),
                seq,
                at: now,
                digest,
            });
        }
        CallError::Plugin {
            plugin: self.id.clone(),
            digest,
            message: failure.message,
            panicked: failure.panicked,
            seq,
        }
    }
}

impl Slot {
    /// Serves a call with the instance a rollback just restored.
    #[cold]
    fn serve_again<R>(
        &self,
        state: &mut SlotState,
        seq: u64,
        now: HostTime,
        input: &[u8],
        on_output: impl FnOnce(&[u8]) -> R,
    ) -> Result<(CallReceipt, R), CallError> {
        let Some(active) = state.active.as_mut() else {
            return Err(CallError::NotLoaded {
                plugin: self.id.clone(),
            });
        };
        let digest = active.digest();
        self.in_call.store(seq, Ordering::Relaxed);
        let result = active.instance.call(input, now.0);
        self.in_call.store(0, Ordering::Relaxed);
        match result {
            Ok(output) => Ok((CallReceipt { seq, now, digest }, on_output(output))),
            Err(failure) => Err(self.count_failure(state, seq, now, digest, failure)),
        }
    }
}

/// A cheap, cloneable handle on one plugin's slot: the hot path for a host that calls the same
/// plugin often (no lookup by id). It stays valid across swaps, and after an unload it answers
/// [`CallError::NotLoaded`] until the plugin is installed again.
#[derive(Debug, Clone)]
pub struct SlotHandle {
    pub(crate) slot: Arc<Slot>,
}

impl SlotHandle {
    /// The plugin id.
    pub fn plugin(&self) -> &str {
        &self.slot.id
    }

    /// Calls the plugin and lets `on_output` read the output in place.
    ///
    /// `on_output` runs while the slot is locked: keep it short, and never call the runtime
    /// from it (calling this same slot would deadlock).
    pub fn call_with<R>(
        &self,
        input: &[u8],
        on_output: impl FnOnce(&[u8]) -> R,
    ) -> Result<(CallReceipt, R), CallError> {
        self.slot.call_with(input, None, on_output)
    }

    /// Calls the plugin, copying the output into `output` (cleared first; reuse it and a
    /// steady-state call allocates nothing). The runtime's clock gives the host time.
    pub fn call_into(&self, input: &[u8], output: &mut Vec<u8>) -> Result<CallReceipt, CallError> {
        self.copy_into(input, None, output)
    }

    /// As [`call_into`](Self::call_into), at a host time the caller gives (a trading host has
    /// the event's own timestamp; this also saves reading a clock per call). The time is
    /// recorded with the call, so replay stays exact whatever the caller passes.
    pub fn call_into_at(
        &self,
        input: &[u8],
        now: HostTime,
        output: &mut Vec<u8>,
    ) -> Result<CallReceipt, CallError> {
        self.copy_into(input, Some(now), output)
    }

    fn copy_into(
        &self,
        input: &[u8],
        now: Option<HostTime>,
        output: &mut Vec<u8>,
    ) -> Result<CallReceipt, CallError> {
        output.clear();
        self.slot
            .call_with(input, now, |bytes| output.extend_from_slice(bytes))
            .map(|(receipt, ())| receipt)
    }

    /// Calls the plugin, returning its output in a new buffer.
    pub fn call(&self, input: &[u8]) -> Result<CallOutput, CallError> {
        self.slot
            .call_with(input, None, <[u8]>::to_vec)
            .map(|(receipt, output)| CallOutput { output, receipt })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_poisoned_lock_is_taken_over_not_reported_busy() {
        let mutex = Arc::new(Mutex::new(1));
        let poisoner = Arc::clone(&mutex);
        let _ = std::thread::spawn(move || {
            let _held = poisoner.lock().unwrap();
            panic!("poison the lock");
        })
        .join();
        assert!(mutex.is_poisoned());
        assert_eq!(try_lock(&mutex).map(|guard| *guard), Some(1));
        assert_eq!(*lock(&mutex), 1);
        let held = lock(&mutex);
        assert!(try_lock(&mutex).is_none(), "held elsewhere: busy");
        drop(held);
    }
}
