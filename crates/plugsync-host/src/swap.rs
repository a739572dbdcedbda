//! The hot swap: replacing the instance in a slot while it is being called, state migrated.
//!
//! 1. **check**, from the artifact's metadata alone (nothing refused is `dlopen`ed): the same
//!    plugin, and a declared version change (`migrates_from` of the newer version going up,
//!    `downgrades_to` of the running one going down; the same version is a reconfigure and
//!    keeps the state as is);
//! 2. **cut**: under the slot lock, snapshot the live state and start recording calls;
//! 3. **migrate** the snapshot off the lock and **verify** on throwaway instances
//!    ([`verify`](crate::verify)); nothing live is touched, and the old version keeps serving;
//! 4. **catch up**, off the lock, in rounds: create the new instance from the migrated state and
//!    feed it the calls recorded since the cut (served by the old version meanwhile), swapping
//!    in a fresh record each round, until a round is small;
//! 5. **switch**, under the lock: replay that last small round and switch, provided every
//!    replayed call gave the output the old version gave. If one differs (the new version
//!    would have answered otherwise) or too many came in, the swap falls back to doing the cut,
//!    the migration and the switch all under the lock, so that no state update is ever lost.
//!    The old instance is kept, and every call from now on is journaled, until commit;
//! 6. **health** of what now serves: a failure rolls the step back at once.
//!
//! Callers wait only for the switch window (and, briefly, the snapshot); none fails.

use std::sync::{Arc, MutexGuard};
use std::time::{Duration, Instant};

use plugsync_plugin::PluginMetadata;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::Digest;
use crate::error::{HostError, Result};
use crate::library::{Instance, Library};
use crate::migration::{Migrated, Transition, TransitionKind, migrate};
use crate::persist::Origin;
use crate::restraints::{Because, FailedMark, Force, add_failed};
use crate::rollback::{self, RollbackReason, VersionRef};
use crate::rules::MigrationRule;
use crate::runtime::{Runtime, state_checksum};
use crate::slot::{
    Active, Fault, Journal, PendingStep, Slot, SlotState, StepRecord, StepState, lock,
};
use crate::steward::{SoakThresholds, StepWatch};
use crate::verify::{self, Subject, VerifyReport, VerifySpec};

/// How many calls one round of catch-up may record before the swap gives up and does the whole
/// switch under the lock (a round lasts as long as the migration, or the previous round).
const CATCH_UP_CAPACITY: usize = 1 << 16;

/// Rounds of catch-up off the lock, at most, before the last one, under it.
const CATCH_UP_ROUNDS: usize = 16;

/// A round this small is replayed under the lock, and the switch follows.
const FINAL_ROUND_CALLS: usize = 8;

/// How the switch is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum SwapMode {
    /// Migrate a snapshot off the lock, then catch up on the calls that came in meanwhile
    /// (falls back to `locked` when their outputs differ): the shortest stall.
    #[default]
    Optimistic,
    /// Snapshot, migrate, restore and switch all under the lock.
    Locked,
}

/// When a switch may happen, beyond "now": checked by the host under the slot lock at the
/// switch itself, so that no call can slip in between a look and the switch. Every condition
/// given must hold; while one does not, the swap is refused with [`HostError::NotYet`]
/// (nothing applied, the step id not spent), and the client asks again.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SwitchWhen {
    /// The plugin has served no call for this many milliseconds (`when-idle`): the host clock
    /// now against the host time its last call was given (`SlotState::last_call_at`: the
    /// runtime's clock, or the time a host gave the call).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_for_ms: Option<u64>,
    /// The plugin says a swap is safe now: no position, no working order (`when-flat`, its
    /// `swap_safe`; a library built before ABI 1.3 cannot say and counts as safe).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub flat: bool,
}

impl SwitchWhen {
    /// Why the switch may not happen now, judged on the slot as it is (its lock held), if it
    /// may not.
    fn unmet(&self, state: &SlotState, now: plugsync_plugin::HostTime) -> Option<String> {
        if let Some(idle_for_ms) = self.idle_for_ms {
            let idle = idle_ms(state.last_call_at, now);
            if let Some(idle_ms) = idle.filter(|idle| *idle < idle_for_ms) {
                return Some(format!(
                    "its last call was {idle_ms} ms ago, and it waits for {} without one",
                    millis(idle_for_ms)
                ));
            }
        }
        if self.flat {
            let active = state.active.as_ref()?;
            match swap_safe(state, active) {
                SwapSafeAnswer::NotSafe { reason } => {
                    return Some(format!("it is not flat ({reason})"));
                }
                SwapSafeAnswer::Failed { message } => {
                    return Some(format!(
                        "it cannot say whether it is flat ({message}), so it is not safe"
                    ));
                }
                // What a plan tells as "would switch at once".
                answer => debug_assert!(answer.lets_switch()),
            }
        }
        None
    }
}

/// How long ago, in whole milliseconds, a plugin's last call was at host time `now` (`None`:
/// no call yet, which counts as idle): what `when-idle` is judged by, on the host at the switch
/// and in a plan.
pub fn idle_ms(
    last_call_at: Option<plugsync_plugin::HostTime>,
    now: plugsync_plugin::HostTime,
) -> Option<u64> {
    last_call_at.map(|at| (now.0.saturating_sub(at.0)).max(0) as u64 / 1_000_000)
}

/// What the active instance answers when asked whether a swap is safe now: a faulted one (it
/// panicked; its state is suspect) is not asked, and is not safe.
pub(crate) fn swap_safe(state: &SlotState, active: &Active) -> SwapSafeAnswer {
    match &state.fault {
        Some(fault) => SwapSafeAnswer::Failed {
            message: format!(
                "faulted: it panicked in call #{} ({})",
                fault.seq, fault.message
            ),
        },
        None => active.instance.swap_safe(),
    }
}

/// `1h`, `30s`, `1500 ms`: a wait as an operator wrote it.
fn millis(ms: u64) -> String {
    match ms {
        0 => "0 ms".to_owned(),
        _ if ms.is_multiple_of(3_600_000) => format!("{}h", ms / 3_600_000),
        _ if ms.is_multiple_of(60_000) => format!("{}m", ms / 60_000),
        _ if ms.is_multiple_of(1_000) => format!("{}s", ms / 1_000),
        _ => format!("{ms} ms"),
    }
}

/// What a plugin answers when asked whether a swap is safe now (its `swap_safe`, ABI 1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
#[serde(tag = "answer", rename_all = "snake_case")]
pub enum SwapSafeAnswer {
    /// Safe: nothing open.
    Safe,
    /// Not now.
    NotSafe {
        /// Why, in the plugin's words (`holds a position in ES (+2)`).
        reason: String,
    },
    /// It could not say (an error or a panic in `swap_safe`): counted as not safe.
    Failed {
        /// What it reported.
        message: String,
    },
    /// Its library was built for an ABI minor before 1.3, without `swap_safe`: counted as
    /// always safe.
    Undeclared {
        /// The ABI minor it was built for.
        abi_minor: u16,
    },
}

impl SwapSafeAnswer {
    /// Whether a `when-flat` switch goes on this answer: the plugin says it is safe, or cannot
    /// say (an older ABI).
    pub fn lets_switch(&self) -> bool {
        matches!(
            self,
            SwapSafeAnswer::Safe | SwapSafeAnswer::Undeclared { .. }
        )
    }
}

/// A request to switch a plugin to another artifact.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SwapRequest {
    /// Plugin id.
    pub plugin: String,
    /// The staged artifact to switch to.
    pub artifact: Digest,
    /// The config to run with; when absent, the running config as the migration left it.
    #[serde(default)]
    pub config: Option<Value>,
    /// Checks before the switch.
    #[serde(default)]
    pub verify: VerifySpec,
    /// How to switch.
    #[serde(default)]
    pub mode: SwapMode,
    /// How many calls the step's journal keeps for rollback by replay.
    #[serde(default = "default_journal_capacity")]
    pub journal_capacity: usize,
    /// The sidecar's step id, recorded in status.
    #[serde(default)]
    pub step_id: Option<String>,
    /// Milliseconds the sidecar has to commit after the switch; when they run out, the host
    /// rolls the step back by itself. No lease: the step waits for a commit or rollback.
    #[serde(default)]
    pub lease_ms: Option<u64>,
    /// Thresholds watched during the lease (a panic always rolls back at once).
    #[serde(default)]
    pub soak: SoakThresholds,
    /// Declarative migration rules to use instead of the plugins' own `migrate` (they also
    /// stand for the declaration: any version change may be made with them).
    #[serde(default)]
    pub migration_rules: Option<Vec<MigrationRule>>,
    /// Switch despite a freeze, a hold or a failed mark of the target, with this reason
    /// (recorded); without it such a switch is refused.
    #[serde(default)]
    pub force: Option<Force>,
    /// Discard the running state: the new version starts from `create(config)` (no migration,
    /// so none need be declared), switched under the lock. The report says so.
    #[serde(default)]
    pub fresh_state: bool,
    /// Who asked, and from which desired state: kept with the pending step, so that a failed
    /// mark set when the step fails carries the plugin's desired entry (`entry_sha256`).
    #[serde(default)]
    pub origin: Option<Origin>,
    /// Switch only when these hold, judged under the slot lock at the switch; else
    /// [`HostError::NotYet`].
    #[serde(default)]
    pub when: Option<SwitchWhen>,
}

fn default_journal_capacity() -> usize {
    100_000
}

impl SwapRequest {
    /// A swap of `plugin` to `artifact` with the defaults: migrated config, health checked,
    /// optimistic switch, a journal of 100 000 calls.
    pub fn new(plugin: impl Into<String>, artifact: Digest) -> SwapRequest {
        SwapRequest {
            plugin: plugin.into(),
            artifact,
            config: None,
            verify: VerifySpec::default(),
            mode: SwapMode::default(),
            journal_capacity: default_journal_capacity(),
            step_id: None,
            lease_ms: None,
            soak: SoakThresholds::default(),
            migration_rules: None,
            force: None,
            fresh_state: false,
            origin: None,
            when: None,
        }
    }

    /// Switches only when `when` holds.
    pub fn when(mut self, when: SwitchWhen) -> SwapRequest {
        self.when = Some(when);
        self
    }

    /// Migrates by `rules` instead of the plugins' own `migrate`.
    pub fn migration_rules(mut self, rules: Vec<MigrationRule>) -> SwapRequest {
        self.migration_rules = Some(rules);
        self
    }

    /// Runs the new version with `config`.
    pub fn config(mut self, config: Value) -> SwapRequest {
        self.config = Some(config);
        self
    }

    /// Checks `spec` before the switch.
    pub fn verify(mut self, spec: VerifySpec) -> SwapRequest {
        self.verify = spec;
        self
    }

    /// Switches in the given mode.
    pub fn mode(mut self, mode: SwapMode) -> SwapRequest {
        self.mode = mode;
        self
    }

    /// Rolls the step back unless it is committed within `lease`, watching `soak` meanwhile.
    pub fn lease(mut self, lease: Duration, soak: SoakThresholds) -> SwapRequest {
        self.lease_ms = Some(lease.as_millis() as u64);
        self.soak = soak;
        self
    }

    /// Records `step_id` with the step.
    pub fn step_id(mut self, step_id: impl Into<String>) -> SwapRequest {
        self.step_id = Some(step_id.into());
        self
    }

    /// Keeps at most `calls` calls for rollback by replay.
    pub fn journal_capacity(mut self, calls: usize) -> SwapRequest {
        self.journal_capacity = calls;
        self
    }
}

/// How the switch was done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SwapPath {
    /// Migrated off the lock; the calls since the cut were caught up.
    Optimistic,
    /// Everything under the lock.
    Locked {
        /// Why (asked for, or why the optimistic attempt was abandoned).
        reason: String,
    },
}

/// What a swap did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct SwapReport {
    /// Plugin id.
    pub plugin: String,
    /// Version before.
    pub from: VersionRef,
    /// Version now serving.
    pub to: VersionRef,
    /// Upgrade, downgrade or reconfigure.
    pub kind: TransitionKind,
    /// Config before.
    pub config_before: Value,
    /// Config now.
    pub config_after: Value,
    /// The state at the cut, as the old version had it.
    pub state_before: Value,
    /// sha256 of `state_before` (canonical JSON).
    pub state_before_sha256: Digest,
    /// That state migrated, as restored into the new version.
    pub state_after: Value,
    /// Last call whose effect is in `state_before`: calls after it reach the new version's
    /// state (served by the old version until the switch, then caught up).
    pub cut_seq: u64,
    /// Last call served by the old version.
    pub switched_seq: u64,
    /// Calls replayed into the new version between cut and switch.
    pub caught_up: usize,
    /// How the switch was done.
    pub path: SwapPath,
    /// How long the swap held the slot for the switch (callers waited at most this).
    pub locked_window: Duration,
    /// What verification found.
    pub verification: VerifyReport,
    /// The fault the slot carried at the switch, if any — raised before the swap or by the old
    /// version during it: the state migrated into the new version came from an instance that
    /// had panicked (the new version starts unfaulted; a
    /// rollback brings the fault back with the old instance).
    pub replaced_fault: Option<Fault>,
    /// The state was discarded on request (`fresh_state`): the new version started from
    /// `create(config)`; `state_after` is that fresh state.
    #[serde(default)]
    pub state_discarded: bool,
}

fn create_restored(library: &Arc<Library>, migrated: &Migrated) -> Result<Instance> {
    let mut instance = Instance::create(library.clone(), &migrated.config_bytes)
        .map_err(|f| f.into_error(library, "create"))?;
    instance
        .restore(&migrated.state)
        .map_err(|f| f.into_error(library, "restore"))?;
    Ok(instance)
}

/// The live state at the cut, and its migration.
struct Cut {
    /// Last call whose effect is in `before`.
    seq: u64,
    before: Vec<u8>,
    migrated: Migrated,
    /// How long the snapshot and the migration took: what a switch under the lock would cost
    /// besides creating the instance.
    took: Duration,
}

/// Everything needed to build the new instance, shared by both switch paths.
struct Target<'a> {
    slot: &'a Slot,
    transition: &'a Transition,
    old_config: &'a Value,
    desired: Option<&'a Value>,
    library: &'a Arc<Library>,
}

impl Target<'_> {
    fn snapshot(&self, state: &SlotState) -> Result<Vec<u8>> {
        let active = state.active.as_ref().ok_or_else(|| HostError::NotLoaded {
            plugin: self.slot.id.clone(),
        })?;
        active
            .instance
            .snapshot()
            .map_err(|f| f.into_error(active.library(), "snapshot"))
    }

    /// Snapshots the live state (briefly holding the slot) and migrates it off the lock; with
    /// `record`, calls from the cut on are recorded for the catch-up.
    fn cut(&self, record: bool) -> Result<Cut> {
        let started = Instant::now();
        // Under the lock only a copy of the state is taken (a clone); it is serialised after.
        let (seq, copy, running) = {
            let mut state = self.slot.state();
            let active = state.active.as_ref().ok_or_else(|| HostError::NotLoaded {
                plugin: self.slot.id.clone(),
            })?;
            let copy = active
                .instance
                .copy_state()
                .map_err(|f| f.into_error(active.library(), "copy_state"))?;
            let running = active.library().clone();
            if record {
                state.catch_up = Some(Journal::new(CATCH_UP_CAPACITY));
            }
            (state.seq, copy, running)
        };
        // Only a cut that started recording stops it: a verification's cut (`record` false)
        // must never touch the recording of a swap in flight on the same slot.
        let stop = || {
            if record {
                self.stop_recording();
            }
        };
        let before = match copy.serialize() {
            Ok(before) => before,
            Err(failure) => {
                stop();
                return Err(failure.into_error(&running, "snapshot"));
            }
        };
        drop(copy);
        match migrate(self.transition, self.old_config, &before, self.desired) {
            Ok(migrated) => Ok(Cut {
                seq,
                before,
                migrated,
                took: started.elapsed(),
            }),
            Err(error) => {
                stop();
                Err(error)
            }
        }
    }

    /// Stops recording (the journal is dropped off the lock).
    fn stop_recording(&self) {
        let recorded = self.slot.state().catch_up.take();
        drop(recorded);
    }

    /// Cut, migration and creation all under the lock.
    fn prepare_locked(&self, state: &SlotState) -> Result<(Cut, Instance)> {
        let started = Instant::now();
        let before = self.snapshot(state)?;
        let migrated = migrate(self.transition, self.old_config, &before, self.desired)?;
        let instance = create_restored(self.library, &migrated)?;
        Ok((
            Cut {
                seq: state.seq,
                before,
                migrated,
                took: started.elapsed(),
            },
            instance,
        ))
    }
}

/// What the switch did, before the report is assembled.
struct Switched {
    /// The fault the replaced instance carried at the switch.
    replaced_fault: Option<Fault>,
    cut: Cut,
    switched_seq: u64,
    caught_up: usize,
    path: SwapPath,
    locked_window: Duration,
}

/// Why the calls recorded since the cut could not be caught up.
enum CatchUpFailure {
    /// The optimistic switch must be abandoned for the locked one: the new version answered a
    /// call differently from the old one, or too many calls came in.
    Abandon(String),
    /// The new version panicked replaying a call: the swap fails.
    Panicked {
        /// The call.
        seq: u64,
        /// The panic message.
        message: String,
    },
}

/// Feeds recorded calls to the new instance. Outputs must agree with what the old version
/// gave; two errors agree, but a panic is a fault, never an answer: a panic of the new version
/// fails the swap, and one of the old version (its slot is then faulted) abandons the
/// optimistic switch, so the locked one migrates the state as the panic left it and the
/// report carries the fault.
fn catch_up(instance: &mut Instance, recorded: &Journal) -> Result<usize, CatchUpFailure> {
    if !recorded.is_complete() {
        return Err(CatchUpFailure::Abandon(format!(
            "more than {CATCH_UP_CAPACITY} calls arrived during one round of catch-up"
        )));
    }
    for call in &recorded.calls {
        let agrees = match (instance.call(&call.input, call.now.0), &call.output) {
            (Err(failure), _) if failure.panicked => {
                return Err(CatchUpFailure::Panicked {
                    seq: call.seq,
                    message: failure.message,
                });
            }
            (_, Err(_)) if call.panicked => false,
            (Ok(new), Ok(old)) => new == old.as_slice(),
            (Err(_), Err(_)) => true,
            _ => false,
        };
        if !agrees {
            let how = if call.panicked {
                "panicked in the old version"
            } else {
                "was answered differently by the new version"
            };
            return Err(CatchUpFailure::Abandon(format!(
                "call #{} {how} during catch-up",
                call.seq
            )));
        }
    }
    Ok(recorded.calls.len())
}

/// Installs `instance` as the active one and keeps the old one for rollback. Returns the fault
/// the old instance carried at the switch (it comes back if the step rolls back).
fn switch(
    plugin: &str,
    state: &mut SlotState,
    instance: Instance,
    config: Value,
    request: &SwapRequest,
    now: plugsync_plugin::HostTime,
) -> Result<Option<Fault>> {
    let Some(previous) = state.active.take() else {
        return Err(HostError::NotLoaded {
            plugin: plugin.to_owned(),
        });
    };
    let step_id = request.step_id.clone();
    let replaced_fault = state.fault.take();
    let library = instance.library().clone();
    state.last_step = Some(StepRecord::of(
        step_id.clone(),
        &library,
        now,
        StepState::Pending,
        replaced_fault.clone(),
    ));
    state.active = Some(Active { instance, config });
    state.step = Some(PendingStep {
        previous: Some(previous),
        step_id,
        switched_seq: state.seq,
        switched_at: now,
        journal: Journal::new(request.journal_capacity),
        previous_fault: replaced_fault.clone(),
        fresh_state: request.fresh_state,
        entry_sha256: (request.origin.as_ref()).and_then(|o| o.entry_sha256.clone()),
        watch: StepWatch::new(
            request.lease_ms.map(Duration::from_millis),
            request.soak.clone(),
            state.counters,
            now,
        ),
    });
    Ok(replaced_fault)
}

impl Runtime {
    /// Verifies a staged artifact against what `plugin` runs, on throwaway instances only,
    /// migrating by `rules` when given (else by the plugins' declared migrations).
    pub fn verify(
        &self,
        plugin: &str,
        artifact: &Digest,
        config: Option<&Value>,
        rules: Option<&[MigrationRule]>,
        spec: &VerifySpec,
    ) -> Result<VerifyReport> {
        let result = self.verify_unlogged(plugin, artifact, config, rules, spec);
        match &result {
            Err(error) => tracing::warn!(plugin, "verification refused: {error}"),
            Ok(report) if !report.passed() => {
                tracing::warn!(plugin, "verification failed: {}", report.summary())
            }
            Ok(_) => {}
        }
        result
    }

    fn verify_unlogged(
        &self,
        plugin: &str,
        artifact: &Digest,
        config: Option<&Value>,
        rules: Option<&[MigrationRule]>,
        spec: &VerifySpec,
    ) -> Result<VerifyReport> {
        let slot = self.slot(plugin)?;
        let (old_library, old_config) = self.running(&slot)?;
        let new_library = self.target_library(&slot, &old_library, artifact, rules.is_some())?;
        let transition = Transition::new(&slot.id, &old_library, &new_library, rules)?;
        let target = Target {
            slot: &slot,
            transition: &transition,
            old_config: &old_config,
            desired: config,
            library: &new_library,
        };
        let cut = target.cut(false)?;
        Ok(self.verify_cut(&target, &old_library, &cut, spec))
    }

    fn running(&self, slot: &Slot) -> Result<(Arc<Library>, Value)> {
        let state = slot.state();
        let active = state.active.as_ref().ok_or_else(|| HostError::NotLoaded {
            plugin: slot.id.clone(),
        })?;
        Ok((active.library().clone(), active.config.clone()))
    }

    /// Maps the target artifact's library, after checking from its metadata alone that it is
    /// the slot's plugin and a declared transition from what runs.
    fn target_library(
        &self,
        slot: &Slot,
        running: &Library,
        artifact: &Digest,
        ruled: bool,
    ) -> Result<Arc<Library>> {
        let check = |metadata: &PluginMetadata| {
            if metadata.id != slot.id {
                return Err(HostError::WrongPlugin {
                    plugin: slot.id.clone(),
                    found: metadata.id.clone(),
                    digest: *artifact,
                });
            }
            TransitionKind::between(&slot.id, &running.metadata, metadata, ruled)
        };
        if let Some(library) = self.resident(artifact) {
            check(&library.metadata)?;
            return Ok(library);
        }
        let stored = self.store().get(artifact)?;
        check(&stored.metadata)?;
        self.map(stored)
    }

    fn verify_cut(
        &self,
        target: &Target<'_>,
        old_library: &Arc<Library>,
        cut: &Cut,
        spec: &VerifySpec,
    ) -> VerifyReport {
        let old_config = serde_json::to_vec(target.old_config).expect("a JSON value serialises");
        verify::run(
            spec,
            &Subject {
                old_library,
                old_config: &old_config,
                snapshot: &cut.before,
                new_library: target.library,
                new_config: &cut.migrated.config_bytes,
                migrated_state: &cut.migrated.state,
                now_ns: self.shared.clock.now().0,
            },
        )
    }

    /// Hot-swaps a plugin to a staged artifact: verify, cut, migrate, catch up, switch, health
    /// (see `ARCHITECTURE.md`). On any error the running version keeps serving, untouched; on
    /// success the step is pending until [`commit`](Runtime::commit) or
    /// [`rollback`](Runtime::rollback).
    pub fn swap(&self, request: SwapRequest) -> Result<SwapReport> {
        let plugin = request.plugin.clone();
        let target = request.artifact;
        let entry_sha256 = (request.origin.as_ref()).and_then(|o| o.entry_sha256.clone());
        let result = self.swap_unlogged(request);
        if let Err(HostError::VerificationFailed {
            version, report, ..
        }) = &result
        {
            // Marked at once (this is a control thread): a retry of it is refused.
            let mark = FailedMark {
                plugin: plugin.clone(),
                digest: target,
                version: version.clone(),
                because: Because {
                    reason: format!("verification failed: {}", report.summary()),
                    by: "host".to_owned(),
                    at: self.shared.clock.now(),
                    entry_sha256,
                },
            };
            self.persisted(self.shared.restraints.update(|restraints| {
                add_failed(restraints, mark);
                Ok(())
            }));
        }
        if let Err(error @ HostError::NotYet { .. }) = &result {
            // Asked again and again while a strategy waits: not worth a warning each time.
            tracing::debug!(plugin = %plugin, "switch not yet: {error}");
        } else if let Err(error) = &result {
            // A refused or failed switch leaves one line on the host, whoever asked for it.
            tracing::warn!(plugin = %plugin, "switch refused: {error}");
        }
        result
    }

    fn swap_unlogged(&self, request: SwapRequest) -> Result<SwapReport> {
        check_journal_capacity(&request)?;
        let slot = self.slot(&request.plugin)?;
        let _control = lock(&slot.control);
        slot.state().no_step_pending(&slot.id)?;
        self.shared.restraints.check(
            "switch",
            &slot.id,
            Some(&request.artifact),
            request.force.as_ref(),
            self.shared.clock.now(),
        )?;
        let (old_library, old_config) = self.running(&slot)?;
        let rules = request.migration_rules.as_deref();
        // Looked at once before the cut too, so that a switch that cannot happen yet does not
        // migrate and verify for nothing; what decides is the look at the switch.
        self.not_yet(&slot, &slot.state(), &request)?;
        let new_library = self.target_library(
            &slot,
            &old_library,
            &request.artifact,
            rules.is_some() || request.fresh_state,
        )?;
        let transition = if request.fresh_state {
            Transition::fresh(&slot.id, &old_library, &new_library)?
        } else {
            Transition::new(&slot.id, &old_library, &new_library, rules)?
        };
        let target = Target {
            slot: &slot,
            transition: &transition,
            old_config: &old_config,
            desired: request.config.as_ref(),
            library: &new_library,
        };
        // One cut serves both the verification and, when optimistic, the switch. A fresh state
        // switches under the lock: calls answered by the old version meanwhile would otherwise
        // be caught up into the state that was to start fresh.
        let optimistic = request.mode == SwapMode::Optimistic && !request.fresh_state;
        let cut = target.cut(optimistic)?;
        let verification = self.verify_cut(&target, &old_library, &cut, &request.verify);
        if !verification.passed() {
            target.stop_recording();
            return Err(HostError::VerificationFailed {
                plugin: slot.id.clone(),
                version: new_library.metadata.version.clone(),
                report: Box::new(verification),
            });
        }
        let switched = if optimistic {
            self.switch_optimistic(&target, &request, cut)?
        } else {
            self.switch_locked(&target, &request, "requested".to_owned())?
        };
        self.check_after_switch(&slot, &new_library)?;
        let before = &switched.cut.before;
        let (state_before, state_before_sha256) =
            state_checksum(before).unwrap_or((Value::Null, Digest::of(before)));
        let state_after =
            serde_json::from_slice(&switched.cut.migrated.state).unwrap_or(Value::Null);
        tracing::info!(
            plugin = %slot.id,
            from = %old_library.version,
            to = %new_library.version,
            locked_us = switched.locked_window.as_micros() as u64,
            "switched"
        );
        Ok(SwapReport {
            plugin: slot.id.clone(),
            from: VersionRef::of(&old_library),
            to: VersionRef::of(&new_library),
            kind: transition.kind,
            config_before: old_config,
            config_after: switched.cut.migrated.config,
            state_before,
            state_before_sha256,
            state_after,
            cut_seq: switched.cut.seq,
            switched_seq: switched.switched_seq,
            caught_up: switched.caught_up,
            path: switched.path,
            locked_window: switched.locked_window,
            verification,
            replaced_fault: switched.replaced_fault,
            state_discarded: request.fresh_state,
        })
    }

    fn switch_locked(
        &self,
        target: &Target<'_>,
        request: &SwapRequest,
        reason: String,
    ) -> Result<Switched> {
        let state = target.slot.state();
        let started = Instant::now();
        self.switch_locked_held(state, started, target, request, reason)
    }

    /// Cut, migration, creation and switch all under the lock already held since `started`.
    fn switch_locked_held(
        &self,
        mut state: MutexGuard<'_, SlotState>,
        started: Instant,
        target: &Target<'_>,
        request: &SwapRequest,
        reason: String,
    ) -> Result<Switched> {
        if let Err(not_yet) = self.not_yet(target.slot, &state, request) {
            let recorded = state.catch_up.take();
            drop(state);
            drop(recorded);
            return Err(not_yet);
        }
        let prepared = target.prepare_locked(&state);
        let recorded = state.catch_up.take();
        let (cut, instance) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                drop(state);
                drop(recorded);
                return Err(error);
            }
        };
        let config = cut.migrated.config.clone();
        let switched = self.switch_now(target.slot, &mut state, instance, config, request);
        let locked_window = started.elapsed();
        drop(state);
        drop(recorded);
        Ok(Switched {
            switched_seq: cut.seq,
            cut,
            caught_up: 0,
            path: SwapPath::Locked { reason },
            locked_window,
            replaced_fault: switched?,
        })
    }

    /// Switches under the lock already held, to `instance` running `config`.
    fn switch_now(
        &self,
        slot: &Slot,
        state: &mut SlotState,
        instance: Instance,
        config: Value,
        request: &SwapRequest,
    ) -> Result<Option<Fault>> {
        switch(
            &slot.id,
            state,
            instance,
            config,
            request,
            self.shared.clock.now(),
        )
    }

    /// The optimistic switch (module docs): catch up off the lock in rounds, each replaying
    /// what the previous one left, until few enough calls remain to replay under the lock.
    fn switch_optimistic(
        &self,
        target: &Target<'_>,
        request: &SwapRequest,
        cut: Cut,
    ) -> Result<Switched> {
        let slot = target.slot;
        let creating = Instant::now();
        let mut instance = match create_restored(target.library, &cut.migrated) {
            Ok(instance) => instance,
            Err(error) => {
                target.stop_recording();
                return Err(error);
            }
        };
        let panicked = |seq, message| HostError::SwapPanicked {
            plugin: slot.id.clone(),
            version: target.library.metadata.version.clone(),
            seq,
            message,
        };
        // What switching under the lock would cost: the bound on what catching up may cost.
        let locked_cost = cut.took + creating.elapsed();
        let (mut caught_up, mut replaying) = (0, Duration::ZERO);
        let mut abandoned = None;
        let mut last_pending = usize::MAX;
        for _ in 0..CATCH_UP_ROUNDS {
            let recorded = {
                let mut state = slot.state();
                let pending = state.catch_up.as_ref().map_or(0, |j| j.calls.len());
                // Done when few are left, or when calls arrive as fast as they are replayed.
                if pending <= FINAL_ROUND_CALLS || pending >= last_pending {
                    break;
                }
                last_pending = pending;
                state.catch_up.replace(Journal::new(CATCH_UP_CAPACITY))
            };
            let Some(recorded) = recorded else {
                abandoned = Some("the record of the calls since the cut was lost".to_owned());
                break;
            };
            let started = Instant::now();
            let result = catch_up(&mut instance, &recorded);
            replaying += started.elapsed();
            match result {
                Ok(n) => caught_up += n,
                Err(CatchUpFailure::Abandon(reason)) => {
                    abandoned = Some(reason);
                    break;
                }
                Err(CatchUpFailure::Panicked { seq, message }) => {
                    target.stop_recording();
                    return Err(panicked(seq, message));
                }
            }
        }
        // Cloned before the lock: callers wait for whatever is done under it.
        let config = cut.migrated.config.clone();
        let mut state = slot.state();
        let started = Instant::now();
        if let Err(not_yet) = self.not_yet(slot, &state, request) {
            let recorded = state.catch_up.take();
            drop(state);
            drop((recorded, instance));
            return Err(not_yet);
        }
        let last_round = match state.catch_up.take() {
            Some(journal) => journal,
            None => {
                // Nothing may take a swap's record but the swap itself; if it is gone all the
                // same, the calls since the cut are unknown: switch exactly, under the lock.
                abandoned.get_or_insert_with(|| {
                    "the record of the calls since the cut was lost".to_owned()
                });
                Journal::new(0)
            }
        };
        let left = last_round.calls.len();
        if abandoned.is_none() && left > FINAL_ROUND_CALLS && caught_up > 0 {
            let estimate = replaying.mul_f64(left as f64 / caught_up as f64);
            if estimate > locked_cost {
                abandoned = Some(format!(
                    "calls arrived as fast as they were caught up ({left} left, ~{} µs to \
                     replay, more than switching under the lock)",
                    estimate.as_micros()
                ));
            }
        }
        let result = match abandoned {
            Some(reason) => Err(CatchUpFailure::Abandon(reason)),
            None => catch_up(&mut instance, &last_round),
        };
        match result {
            Ok(n) => {
                let switched_seq = state.seq;
                let switched = self.switch_now(slot, &mut state, instance, config, request);
                let locked_window = started.elapsed();
                drop(state);
                drop(last_round);
                Ok(Switched {
                    cut,
                    switched_seq,
                    caught_up: caught_up + n,
                    path: SwapPath::Optimistic,
                    locked_window,
                    replaced_fault: switched?,
                })
            }
            Err(CatchUpFailure::Abandon(reason)) => {
                // Outputs the old version gave cannot be reproduced: switch exactly, under
                // the lock, from the state as it is now.
                let switched = self.switch_locked_held(state, started, target, request, reason);
                drop((last_round, instance));
                switched
            }
            Err(CatchUpFailure::Panicked { seq, message }) => {
                drop(state);
                drop((last_round, instance));
                Err(panicked(seq, message))
            }
        }
    }

    /// Refuses the switch with [`HostError::NotYet`] while its `when` does not hold on the slot
    /// as it is (`state`: its lock held).
    fn not_yet(&self, slot: &Slot, state: &SlotState, request: &SwapRequest) -> Result<()> {
        let Some(when) = &request.when else {
            return Ok(());
        };
        match when.unmet(state, self.shared.clock.now()) {
            Some(why) => Err(HostError::NotYet {
                plugin: slot.id.clone(),
                why,
            }),
            None => Ok(()),
        }
    }

    /// Health of what now serves; a failure (or a panic that already rolled the step back on
    /// the hot path) returns the rollback.
    fn check_after_switch(&self, slot: &Slot, library: &Arc<Library>) -> Result<()> {
        let mut state = slot.state();
        let rolled_back = |report| HostError::RolledBack {
            plugin: slot.id.clone(),
            version: library.metadata.version.clone(),
            report: Box::new(report),
        };
        let Some(active) = state.active.as_ref().filter(|_| state.step.is_some()) else {
            // The step ended before this look: a panic on the hot path rolled it back.
            return match state.last_rollback.clone() {
                Some(report) => Err(rolled_back(report)),
                None => Err(HostError::NotLoaded {
                    plugin: slot.id.clone(),
                }),
            };
        };
        if let Err(failure) = active.instance.health() {
            let reason = RollbackReason::HealthFailed {
                message: failure.message,
            };
            if let Some((report, discarded)) = rollback::roll_back(slot, &mut state, reason) {
                drop(state);
                drop(discarded);
                tracing::error!(plugin = %slot.id, "{}", report.reason);
                return Err(rolled_back(report));
            }
        }
        Ok(())
    }
}

/// The most calls a step's journal may keep: enough for minutes of a busy strategy, small
/// enough that a journal cannot exhaust the host's memory (each call keeps its input and
/// output) and that a rollback's replay under the slot lock stays bounded.
pub const MAX_JOURNAL_CAPACITY: usize = 1_000_000;

fn check_journal_capacity(request: &SwapRequest) -> Result<()> {
    if request.journal_capacity > MAX_JOURNAL_CAPACITY {
        return Err(HostError::JournalTooLarge {
            plugin: request.plugin.clone(),
            requested: request.journal_capacity,
            max: MAX_JOURNAL_CAPACITY,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journals_beyond_the_bound_are_refused() {
        let request =
            |calls| SwapRequest::new("ma_cross", Digest::of(b"x")).journal_capacity(calls);
        assert!(check_journal_capacity(&request(MAX_JOURNAL_CAPACITY)).is_ok());
        let error = check_journal_capacity(&request(MAX_JOURNAL_CAPACITY + 1)).unwrap_err();
        assert_eq!(
            error.to_string(),
            "a journal of 1000001 calls for `ma_cross` is more than this host keeps (1000000): \
             ask for at most 1000000, and commit sooner"
        );
    }
}
