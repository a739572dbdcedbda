//! Rolling a switched step back to the previous instance without losing state.
//!
//! The previous instance is still loaded and untouched since the switch, so a rollback is a
//! switch back, not a reload. What the new version received meanwhile is carried back by the
//! first of these that can:
//!
//! 1. **Replay**: every call since the switch is in the journal (with the host time it was
//!    given), so feeding them to the previous instance gives exactly the state of a plugin that
//!    was never updated. Each output it computes is compared with what the new version really
//!    returned, and every difference is reported: the host owns the orders the new version
//!    emitted, and their fills reach whichever version runs.
//! 2. **Down-migration**: the journal overflowed, but a migration back to the previous version
//!    is declared: its state is migrated to the previous version's schema (like Erlang's
//!    `code_change`) and restored into the previous instance, keeping the effects (fills) it had
//!    received. After an upgrade that is the new version's `downgrades_to`; after a downgrade,
//!    the previous version's `migrates_from`; after a reconfigure the state passes unchanged.
//! 3. Neither: the previous instance resumes with its state at the switch, and the report says
//!    exactly which calls it never saw and keeps the abandoned state for manual recovery.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{HostError, declarer_covered};
use crate::library::Library;
use crate::migration::{Transition, migrate};
use crate::restraints::{Because, FailedMark};
use crate::slot::{
    Active, Fault, Journal, PendingStep, RecordedCall, Slot, SlotState, StepRecord, StepState,
};

/// Why a step was rolled back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RollbackReason {
    /// An operator or the sidecar asked for it.
    Requested,
    /// The new version panicked in a call during the step.
    CallPanicked {
        /// The call that panicked.
        seq: u64,
        /// Its panic message.
        message: String,
    },
    /// The new version failed its health check after the switch.
    HealthFailed {
        /// The reason it gave.
        message: String,
    },
    /// The step's lease (a switch's, or an install's) ran out before a commit arrived.
    LeaseExpired {
        /// The lease the switch was given.
        lease_ms: u64,
    },
    /// The new version crossed a soak threshold during the lease.
    SoakThreshold {
        /// Which threshold.
        threshold: String,
        /// What was observed.
        observed: String,
    },
}

impl fmt::Display for RollbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RollbackReason::Requested => f.write_str("rollback requested"),
            RollbackReason::CallPanicked { seq, message } => {
                write!(f, "the new version panicked in call #{seq} ({message})")
            }
            RollbackReason::HealthFailed { message } => {
                write!(f, "the new version failed its health check ({message})")
            }
            RollbackReason::LeaseExpired { lease_ms } => {
                write!(
                    f,
                    "no commit arrived within the step's lease of {lease_ms} ms"
                )
            }
            RollbackReason::SoakThreshold {
                threshold,
                observed,
            } => {
                write!(
                    f,
                    "the new version crossed its soak threshold `{threshold}`: {observed}"
                )
            }
        }
    }
}

/// A version of a plugin, by number and artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct VersionRef {
    /// Semantic version.
    pub version: String,
    /// Artifact sha256.
    pub digest: Digest,
}

impl VersionRef {
    pub(crate) fn of(library: &Library) -> VersionRef {
        VersionRef {
            version: library.metadata.version.clone(),
            digest: library.digest,
        }
    }
}

impl fmt::Display for VersionRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.version, self.digest.short())
    }
}

/// A call whose output differs between the version rolled back and the one restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct Divergence {
    /// The call.
    pub seq: u64,
    /// Its input (lossy UTF-8).
    pub input: String,
    /// What the rolled-back version returned (`Err` for an error).
    pub new_output: Result<String, String>,
    /// What the restored version computes for it.
    pub old_output: Result<String, String>,
}

/// Calls whose effect on the state could not be carried back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct LostCalls {
    /// How many.
    pub count: u64,
    /// First lost call.
    pub first_seq: u64,
    /// Last lost call.
    pub last_seq: u64,
    /// Why neither replay nor down-migration could be used.
    pub why: String,
    /// The state the rolled-back version had, kept for manual recovery; `null` when it could
    /// not be read (a state that was itself `null` is shown so too).
    pub abandoned_state: Option<serde_json::Value>,
}

/// How the state was carried back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RollbackMethod {
    /// Every call since the switch was replayed into the previous instance.
    Replay {
        /// Calls replayed.
        replayed: usize,
        /// Calls whose outputs differ between the two versions.
        divergences: Vec<Divergence>,
    },
    /// The new version's state was migrated back to the previous version (down after an
    /// upgrade, up after a downgrade, unchanged after a reconfigure) and restored into the
    /// previous instance.
    DownMigration {
        /// Calls the journal could not hold (so could not be replayed).
        unjournaled_calls: u64,
        /// The state restored.
        state: serde_json::Value,
        /// A call whose effect is in doubt: the rolled-back version panicked midway through
        /// it, so the state migrated back may hold part of it. The caller got an error for it.
        in_doubt_call: Option<u64>,
    },
    /// The previous instance resumed with its state at the switch.
    Lossy {
        /// What it never saw.
        lost: LostCalls,
    },
    /// The step was an install (with a lease): nothing ran before it, so the plugin was
    /// unloaded, and calls to it are refused as to any plugin not loaded.
    Unloaded {
        /// The state the install had reached, kept for manual recovery; `null` when it could
        /// not be read or was itself `null`.
        abandoned_state: Option<serde_json::Value>,
    },
}

/// The outcome of a rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct RollbackReport {
    /// Plugin id.
    pub plugin: String,
    /// The version rolled back.
    pub from: VersionRef,
    /// The version serving again; `null` when the step rolled back was an install: the plugin
    /// is no longer loaded.
    pub to: Option<VersionRef>,
    /// Why.
    pub reason: RollbackReason,
    /// How the state came back.
    pub method: RollbackMethod,
    /// Calls the rolled-back version served.
    pub calls_since_switch: u64,
    /// Who asked for it, when a client did (reason `requested`): recorded with the report, so
    /// whoever reads it (the client that was soaking the step) sees who, whenever it looks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub asked_by: Option<crate::Origin>,
}

impl RollbackReport {
    /// What serves after the rollback, for a log line: the version, or "not loaded" after an
    /// install rolled back.
    pub fn serving(&self) -> impl fmt::Display + '_ {
        struct Serving<'a>(Option<&'a VersionRef>);
        impl fmt::Display for Serving<'_> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self.0 {
                    Some(version) => version.fmt(f),
                    None => f.write_str("not loaded"),
                }
            }
        }
        Serving(self.to.as_ref())
    }

    /// Whether every state update made since the switch survived the rollback.
    pub fn lost_nothing(&self) -> bool {
        match &self.method {
            RollbackMethod::Replay { .. } => true,
            RollbackMethod::DownMigration { in_doubt_call, .. } => in_doubt_call.is_none(),
            // The state the install reached is gone with it (kept in the report only).
            RollbackMethod::Lossy { .. } | RollbackMethod::Unloaded { .. } => false,
        }
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Replays the journal into the previous instance, comparing outputs.
fn replay(
    previous: &mut Active,
    calls: &[RecordedCall],
    fault: &mut Option<Fault>,
) -> RollbackMethod {
    let mut divergences = Vec::new();
    for call in calls {
        let old_output = match previous.instance.call(&call.input, call.now.0) {
            Ok(output) => Ok(output.to_vec()),
            Err(failure) => {
                if failure.panicked {
                    *fault = Some(Fault {
                        message: failure.message.clone(),
                        seq: call.seq,
                        at: call.now,
                        digest: previous.digest(),
                    });
                }
                Err(failure.message)
            }
        };
        let same = match (&old_output, &call.output) {
            (Ok(old), Ok(new)) => old == new,
            (Err(_), Err(_)) => true,
            _ => false,
        };
        if !same {
            divergences.push(Divergence {
                seq: call.seq,
                input: text(&call.input),
                new_output: call.output.as_deref().map(text).map_err(|e| e.to_owned()),
                old_output: old_output.as_deref().map(text).map_err(|e| e.to_owned()),
            });
        }
    }
    RollbackMethod::Replay {
        replayed: calls.len(),
        divergences,
    }
}

/// Migrates the new instance's state back into the previous instance, if a migration between
/// the two versions is declared (the same rules as a swap from the new version to the previous
/// one).
fn down_migrate(
    plugin: &str,
    new: &Active,
    previous: &mut Active,
    unjournaled: u64,
) -> Result<RollbackMethod, String> {
    let transition =
        Transition::between(plugin, new.library(), previous.library()).map_err(|e| match e {
            HostError::NoMigration {
                from, to, field, ..
            } => {
                let (declarer, covered) = declarer_covered(field, &from, &to);
                format!("{plugin} {declarer} declares no `{field}` covering {covered}")
            }
            other => other.to_string(),
        })?;
    let state = new
        .instance
        .snapshot()
        .map_err(|f| format!("snapshot of the new version failed: {}", f.message))?;
    let migrated = migrate(&transition, &new.config, &state, Some(&previous.config))
        .map_err(|e| format!("down-migration failed: {e}"))?;
    previous.instance.restore(&migrated.state).map_err(|f| {
        format!(
            "the previous version refused the down-migrated state: {}",
            f.message
        )
    })?;
    Ok(RollbackMethod::DownMigration {
        unjournaled_calls: unjournaled,
        state: serde_json::from_slice(&migrated.state).unwrap_or(serde_json::Value::Null),
        in_doubt_call: None,
    })
}

/// What a rollback took out of the slot: the rolled-back instance and the step's journal. It is
/// dropped by the caller once the slot lock is released, so that destroying the instance (plugin
/// code) and freeing the journal never stall the callers waiting on the slot.
#[must_use = "drop it after releasing the slot lock"]
#[derive(Debug)]
pub(crate) struct Discarded {
    _instance: Active,
    _journal: Journal,
}

/// Rolls the slot's pending step back, if there is one. Called with the slot locked: calls wait
/// for it, none fails. Returns the report and what must be dropped after the lock is released.
/// The version rolled back is marked failed ([`crate::restraints`]): the host refuses to switch
/// to it again until the mark is cleared.
pub(crate) fn roll_back(
    slot: &Slot,
    state: &mut SlotState,
    reason: RollbackReason,
) -> Option<(RollbackReport, Discarded)> {
    let entry_sha256 = (state.step.as_ref()).and_then(|step| step.entry_sha256.clone());
    let rolled_back = roll_back_unmarked(&slot.id, state, reason.clone())?;
    if rolled_back.0.to.is_none() {
        // An install undone: nothing runs, whatever status saw last.
        crate::slot::lock(&slot.last_known).status = None;
    }
    let from = &rolled_back.0.from;
    slot.restraints.mark_failed_soon(FailedMark {
        plugin: slot.id.clone(),
        digest: from.digest,
        version: from.version.clone(),
        because: Because {
            reason: format!("rolled back: {reason}"),
            by: "host".to_owned(),
            at: slot.clock.now(),
            entry_sha256,
        },
    });
    Some(rolled_back)
}

fn roll_back_unmarked(
    plugin: &str,
    state: &mut SlotState,
    reason: RollbackReason,
) -> Option<(RollbackReport, Discarded)> {
    let (mut step, new) = match (state.step.take(), state.active.take()) {
        (Some(step), Some(new)) => (step, new),
        // No pending step (or, impossibly, a step with no active instance): nothing to undo.
        (step, active) => {
            state.step = step;
            state.active = active;
            return None;
        }
    };
    let calls_since_switch = state.seq - step.switched_seq;
    let Some(mut previous) = step.previous.take() else {
        return Some(undo_install(
            plugin,
            state,
            step,
            new,
            reason,
            calls_since_switch,
        ));
    };
    // The previous instance's own fault, if it had one, comes back with it (a replay that
    // panics replaces it).
    let mut fault = step.previous_fault;
    let mut method = if step.journal.is_complete() {
        replay(&mut previous, &step.journal.calls, &mut fault)
    } else {
        down_migrate(plugin, &new, &mut previous, step.journal.overflowed).unwrap_or_else(|why| {
            RollbackMethod::Lossy {
                lost: LostCalls {
                    count: calls_since_switch,
                    first_seq: step.switched_seq + 1,
                    last_seq: state.seq,
                    why: format!(
                        "the journal holds {} calls and {} came since the switch, and {why}",
                        step.journal.capacity(),
                        step.journal.overflowed
                    ),
                    abandoned_state: abandoned_state(&new),
                },
            }
        })
    };
    if let (
        RollbackMethod::DownMigration { in_doubt_call, .. },
        RollbackReason::CallPanicked { seq, .. },
    ) = (&mut method, &reason)
    {
        // The state came back from the instance that panicked midway through this call: it is
        // suspect, and the slot says so.
        *in_doubt_call = Some(*seq);
        // `failed_call` recorded that panic as the slot's fault just before rolling back.
        fault = state.fault.clone();
    }
    let report = RollbackReport {
        asked_by: None,
        plugin: plugin.to_owned(),
        from: VersionRef::of(new.library()),
        to: Some(VersionRef::of(previous.library())),
        reason,
        method,
        calls_since_switch,
    };
    let replaced_fault = (state.last_step.take()).and_then(|record| record.replaced_fault);
    state.last_step = Some(StepRecord::of(
        step.step_id,
        new.library(),
        step.switched_at,
        StepState::RolledBack,
        replaced_fault,
    ));
    state.active = Some(previous);
    state.fault = fault;
    state.last_rollback = Some(report.clone());
    let discarded = Discarded {
        _instance: new,
        _journal: step.journal,
    };
    Some((report, discarded))
}

/// The state of the instance rolled back, for the report, when it cannot be carried back.
fn abandoned_state(new: &Active) -> Option<serde_json::Value> {
    new.instance
        .snapshot()
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .filter(|state: &serde_json::Value| !state.is_null())
}

/// Rolls back an install made with a lease: the slot is emptied (its settings with it), and
/// the state the install reached is kept in the report.
fn undo_install(
    plugin: &str,
    state: &mut SlotState,
    step: PendingStep,
    new: Active,
    reason: RollbackReason,
    calls_since_switch: u64,
) -> (RollbackReport, Discarded) {
    let report = RollbackReport {
        asked_by: None,
        plugin: plugin.to_owned(),
        from: VersionRef::of(new.library()),
        to: None,
        reason,
        method: RollbackMethod::Unloaded {
            abandoned_state: abandoned_state(&new),
        },
        calls_since_switch,
    };
    state.last_step = Some(StepRecord::of(
        step.step_id,
        new.library(),
        step.switched_at,
        StepState::RolledBack,
        None,
    ));
    // What the install set (its checkpointing, its fault) goes with it: nothing of the
    // plugin is left to checkpoint or to refuse calls for.
    state.fault = None;
    state.checkpointing = None;
    state.fail_closed = false;
    state.last_rollback = Some(report.clone());
    let discarded = Discarded {
        _instance: new,
        _journal: step.journal,
    };
    (report, discarded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_version_is_named_in_the_logs_by_its_number_and_the_short_digest_of_its_artifact() {
        let version = VersionRef {
            version: "2.0.0".to_owned(),
            // sha256("artifact") = c7c5c1d70c5d…
            digest: Digest::of(b"artifact"),
        };
        assert_eq!(version.to_string(), "2.0.0 (c7c5c1d70c5d)");
    }
}
