//! What operators and the host itself forbid for now: a freeze of the whole host, holds on
//! plugins, versions marked failed, plugins halted. Facts every client must respect, so the host
//! keeps and enforces them (and persists them in the store: `restraints.json`), not a client's
//! store.
//!
//! - **Freeze** (`reason`): switch, install and unload are refused unless forced; a pending step
//!   may still be committed or rolled back.
//! - **Hold** on a plugin: kept at its running version; a switch of it is refused unless forced.
//! - **Failed mark** on (plugin, artifact): set by the host when a version fails verification or
//!   is rolled back (whoever asked, or by the host's own lease, threshold or panic check); a
//!   new switch or install of it is refused until the mark is cleared, or forced.
//! - **Halt** of a plugin: it fails closed, every call refused at once, until resumed (the
//!   `onFailure: halt` of a risk plugin). The slot carries it (the call path reads it under the
//!   slot lock it already holds); this module keeps it for status and restarts.
//!
//! A forced change is logged and recorded here (the last [`FORCED_KEPT`]).
//!
//! Marks set on a caller's thread (a panic rolled a step back) are written to the store by the
//! steward within a tick, not by the caller: a trading thread does no file I/O.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use plugsync_plugin::HostTime;
use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::error::{HostError, Result};
use crate::persist::{read_json, write_atomic};
use crate::slot::lock;

/// How many forced changes the host remembers.
pub const FORCED_KEPT: usize = 32;

/// What forbids a change: a restraint, or (for a forced change) a declared dependency.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum Restraint {
    /// The host is frozen.
    Freeze,
    /// The plugin is held at its running version.
    Hold,
    /// The target artifact is marked failed.
    Failed,
    /// A running plugin's declared dependency would be unmet.
    Dependency,
}

/// Why and by whom a restraint was set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct Because {
    /// Why.
    pub reason: String,
    /// Who (the client's name or tool; `host` for the host's own marks).
    pub by: String,
    /// Host time it was set.
    #[cfg_attr(feature = "control-api", schemars(with = "i64"))]
    pub at: HostTime,
    /// The sha256 of the plugin's entry in the desired state the restraint was set under (a
    /// client's fingerprint of what it asked for that plugin), when a client gave one: a hold
    /// or a failed mark stands until that entry changes, and clients lift it once it has.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_sha256: Option<String>,
}

/// A version the host marked failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct FailedMark {
    /// Plugin id.
    pub plugin: String,
    /// The artifact marked.
    pub digest: Digest,
    /// Its version.
    pub version: String,
    /// What failed, when.
    pub because: Because,
}

/// A change made despite a restraint, on purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct ForcedChange {
    /// The operation (`switch`, `install`, `unload`).
    pub operation: String,
    /// Plugin id.
    pub plugin: String,
    /// What it overrode.
    pub overrode: Vec<Restraint>,
    /// The reason given, who gave it, when.
    pub because: Because,
}

/// Every restraint in force, as status shows it and the store keeps it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct Restraints {
    /// The host is frozen.
    pub freeze: Option<Because>,
    /// Plugins held at their running version, by id.
    pub holds: BTreeMap<String, Because>,
    /// Versions marked failed.
    pub failed: Vec<FailedMark>,
    /// Plugins halted (failing closed), by id.
    pub halts: BTreeMap<String, Because>,
    /// The last changes forced through a restraint, oldest first.
    pub forced: Vec<ForcedChange>,
}

impl Restraints {
    /// The failed mark of artifact `digest`, if any (an artifact is one plugin's version).
    pub fn failed_mark(&self, digest: &Digest) -> Option<&FailedMark> {
        self.failed.iter().find(|mark| mark.digest == *digest)
    }
}

/// A change forced through the host's restraints, on purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct Force {
    /// Why the change must go ahead despite a freeze, a hold or a failed mark (recorded).
    pub reason: String,
    /// Who forces it.
    pub by: String,
}

/// The restraints and where they are kept.
#[derive(Debug)]
pub(crate) struct RestraintsCell {
    path: PathBuf,
    state: Mutex<Restraints>,
    /// Changed in memory since last written (marks set on a caller's thread).
    dirty: AtomicBool,
}

impl RestraintsCell {
    /// The restraints kept at `path` (none if never written).
    pub fn open(path: PathBuf) -> Result<RestraintsCell> {
        let state = read_json::<Restraints>(&path)?.unwrap_or_default();
        Ok(RestraintsCell {
            path,
            state: Mutex::new(state),
            dirty: AtomicBool::new(false),
        })
    }

    /// A copy, for status.
    pub fn snapshot(&self) -> Restraints {
        lock(&self.state).clone()
    }

    /// Changes the restraints and writes them to the store before they take effect.
    pub fn update<R>(&self, change: impl FnOnce(&mut Restraints) -> Result<R>) -> Result<R> {
        let mut state = lock(&self.state);
        let mut next = state.clone();
        let result = change(&mut next)?;
        write(&self.path, &next)?;
        *state = next;
        self.dirty.store(false, Ordering::Release);
        Ok(result)
    }

    /// Marks a version failed in memory now (refused from this instant), written by the next
    /// [`persist_if_dirty`](Self::persist_if_dirty) (the steward's tick).
    pub fn mark_failed_soon(&self, mark: FailedMark) {
        let mut state = lock(&self.state);
        add_failed(&mut state, mark);
        self.dirty.store(true, Ordering::Release);
    }

    /// Writes the restraints if marks were set in memory since the last write.
    pub fn persist_if_dirty(&self) -> Result<()> {
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(());
        }
        let state = lock(&self.state);
        let written = write(&self.path, &state);
        if written.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
        written
    }

    /// Refuses a change to `plugin` (`operation`, to `target` if it loads an artifact) that a
    /// restraint forbids, unless `force` gives a reason: then the change is recorded as forced
    /// (written before it is made) and allowed.
    pub fn check(
        &self,
        operation: &str,
        plugin: &str,
        target: Option<&Digest>,
        force: Option<&Force>,
        now: HostTime,
    ) -> Result<()> {
        let state = self.snapshot();
        let mut overrode = Vec::new();
        if let Some(freeze) = &state.freeze {
            overrode.push((Restraint::Freeze, freeze, None));
        }
        if operation == "switch"
            && let Some(hold) = state.holds.get(plugin)
        {
            overrode.push((Restraint::Hold, hold, None));
        }
        // An install names its artifact (its plugin id is known once it is read); a failed
        // mark knows whose artifact it is, so the refusal or the forced change names the plugin.
        let mut plugin = plugin;
        if let Some(digest) = target
            && let Some(mark) = state.failed_mark(digest)
        {
            overrode.push((Restraint::Failed, &mark.because, Some(&mark.version)));
            plugin = &mark.plugin;
        }
        let Some(&(first, because, version)) = overrode.first() else {
            return Ok(());
        };
        let Some(force) = force.filter(|f| !f.reason.trim().is_empty()) else {
            return Err(HostError::Restrained {
                operation: operation.to_owned(),
                plugin: plugin.to_owned(),
                restraint: first,
                version: version.cloned(),
                because: Box::new(because.clone()),
            });
        };
        let overrode = overrode.iter().map(|&(restraint, ..)| restraint).collect();
        self.record_forced(operation, plugin, overrode, force, now)
    }

    /// Records a change `force`d through what it `overrode` (written before it is made).
    pub fn record_forced(
        &self,
        operation: &str,
        plugin: &str,
        overrode: Vec<Restraint>,
        force: &Force,
        now: HostTime,
    ) -> Result<()> {
        let forced = ForcedChange {
            operation: operation.to_owned(),
            plugin: plugin.to_owned(),
            overrode,
            because: Because {
                reason: force.reason.clone(),
                by: force.by.clone(),
                at: now,
                entry_sha256: None,
            },
        };
        tracing::warn!(
            operation,
            plugin,
            overrode = ?forced.overrode,
            reason = %force.reason,
            by = %force.by,
            "forced through the host's restraints"
        );
        self.update(|restraints| {
            restraints.forced.push(forced);
            let excess = restraints.forced.len().saturating_sub(FORCED_KEPT);
            restraints.forced.drain(..excess);
            Ok(())
        })
    }
}

/// Adds `mark`, replacing an older mark of the same artifact.
pub(crate) fn add_failed(restraints: &mut Restraints, mark: FailedMark) {
    restraints
        .failed
        .retain(|m| !(m.plugin == mark.plugin && m.digest == mark.digest));
    restraints.failed.push(mark);
}

fn write(path: &std::path::Path, restraints: &Restraints) -> Result<()> {
    let bytes = serde_json::to_vec_pretty(restraints).map_err(|e| HostError::Io {
        action: "serialise",
        path: path.to_owned(),
        source: std::io::Error::other(e),
    })?;
    write_atomic(path, &bytes)
}
