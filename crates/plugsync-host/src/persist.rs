//! What a host keeps across restarts, in its store directory beside the artifacts:
//!
//! - `committed.json`: the committed set — per plugin the artifact, the config and whether it
//!   checkpoints its state. Written at every install, commit and unload; a pending step is not
//!   in it (its previous version is), so a host that dies mid-step comes back on what was
//!   committed.
//! - `checkpoints/<plugin>.json`: the last [`StateSnapshot`] of each plugin that opted in, at
//!   each commit and every interval; checked (sha256, artifact) before it is restored.
//! - `steps/<step id>/<operation>.json`: the outcome of each mutating control operation, so a
//!   sidecar that retries after a crash gets the recorded outcome instead of a second apply.
//!
//! Every file is written whole: beside, fsync, rename, fsync the directory. A crash leaves the
//! old file or the new one, never a mix.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::Digest;
use crate::error::{HostError, Result, io};
use crate::rollback::VersionRef;
use crate::runtime::{Runtime, StateSnapshot};
use crate::slot::{Slot, lock};

/// One plugin of the committed set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommittedPlugin {
    /// Plugin id.
    pub plugin: String,
    /// The committed version and artifact.
    pub version: VersionRef,
    /// Its config.
    pub config: Value,
    /// How often its state is checkpointed (also at each commit); `None`: never.
    pub checkpoint_every_ms: Option<u64>,
}

/// What the host runs, as committed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommittedSet {
    /// One entry per plugin, by id.
    pub plugins: Vec<CommittedPlugin>,
}

/// How one plugin came back after a restart.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct RecoveredPlugin {
    /// Plugin id.
    pub plugin: String,
    /// The version it runs again.
    pub version: VersionRef,
    /// Where its state came from.
    pub checkpoint: CheckpointOutcome,
}

/// Where a recovered plugin's state came from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum CheckpointOutcome {
    /// Its checkpoint, verified and restored.
    Restored {
        /// The checkpoint.
        #[serde(flatten)]
        checkpoint: CheckpointRef,
    },
    /// It had no checkpoint: a fresh state.
    Missing,
    /// Its checkpoint did not verify: a fresh state.
    Refused {
        /// Why.
        reason: String,
    },
}

/// A checkpoint that was restored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct CheckpointRef {
    /// Calls the slot had served when it was taken (after a lossy rollback, not all of them
    /// are reflected: the rollback report says which are not).
    pub seq: u64,
    /// sha256 of the state.
    pub sha256: Digest,
}

/// What a restarted host came back on, from its store alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct Recovery {
    /// The plugins, as committed.
    pub plugins: Vec<RecoveredPlugin>,
}

/// When a slot's next checkpoint is due.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checkpointing {
    pub every: Duration,
    pub last: Instant,
}

/// Writes `bytes` to `path` whole: beside, fsync, rename, fsync the directory. The file is
/// `0600` and new directories `0700`: the host's state is its user's alone.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().expect("store files live in a directory");
    crate::store::create_private_dir_all(dir)?;
    let partial = dir.join(format!(
        ".{}.partial-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id()
    ));
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&partial)
        .map_err(io("create", &partial))?;
    // `mode` applies only to a new file: a partial file left by a crash keeps its own.
    file.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(io("chmod", &partial))?;
    file.write_all(bytes).map_err(io("write", &partial))?;
    file.sync_all().map_err(io("sync", &partial))?;
    fs::rename(&partial, path).map_err(io("rename", &partial))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync", dir))
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| HostError::Io {
                action: "parse",
                path: path.to_owned(),
                source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path)(e)),
    }
}

/// Accepts a step id that is safe as a file name: 1 to 128 of `A-Z a-z 0-9 . _ -`, not
/// starting with a dot.
pub(crate) fn check_step_id(step_id: &str) -> Result<()> {
    let ok = (1..=128).contains(&step_id.len())
        && !step_id.starts_with('.')
        && step_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(HostError::BadStepId {
            step_id: step_id.to_owned(),
        })
    }
}

impl Runtime {
    fn committed_path(&self) -> PathBuf {
        self.store().root().join("committed.json")
    }

    fn checkpoint_path(&self, plugin: &str) -> PathBuf {
        self.store()
            .root()
            .join("checkpoints")
            .join(format!("{plugin}.json"))
    }

    /// The committed set as it is now: per slot, the committed instance (the previous one
    /// while a step is pending).
    pub fn committed(&self) -> CommittedSet {
        let mut plugins = Vec::new();
        for slot in self.slots() {
            let state = slot.state();
            let committed = match &state.step {
                Some(step) => Some(&step.previous),
                None => state.active.as_ref(),
            };
            if let Some(active) = committed {
                plugins.push(CommittedPlugin {
                    plugin: slot.id.clone(),
                    version: VersionRef::of(active.library()),
                    config: active.config.clone(),
                    checkpoint_every_ms: state.checkpointing.map(|c| c.every.as_millis() as u64),
                });
            }
        }
        CommittedSet { plugins }
    }

    /// Writes the committed set to the store.
    pub(crate) fn persist_committed(&self) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&self.committed()).expect("the set serialises");
        write_atomic(&self.committed_path(), &bytes)
    }

    /// Checkpoints `plugin`'s state every `every` (and at each commit), or stops (`None`).
    pub fn set_checkpointing(&self, plugin: &str, every: Option<Duration>) -> Result<()> {
        let slot = self.slot(plugin)?;
        let _control = lock(&slot.control);
        slot.state().checkpointing = every.map(|every| Checkpointing {
            every,
            last: Instant::now(),
        });
        if every.is_some() {
            self.write_checkpoint(&slot)?;
        }
        self.persist_committed()
    }

    /// Writes `plugin`'s checkpoint now, if it opted in (`set_checkpointing`) and no step is
    /// pending (a host about to stop, say).
    pub fn checkpoint_now(&self, plugin: &str) -> Result<()> {
        let slot = self.slot(plugin)?;
        self.write_checkpoint(&slot)
    }

    /// Writes the checkpoint of a slot that opted in and has no step pending.
    pub(crate) fn write_checkpoint(&self, slot: &Arc<Slot>) -> Result<()> {
        {
            let mut guard = slot.state();
            let state = &mut *guard;
            match (&mut state.checkpointing, &state.step) {
                (Some(checkpointing), None) => checkpointing.last = Instant::now(),
                _ => return Ok(()),
            }
        }
        let snapshot = self.snapshot(&slot.id)?;
        let bytes = serde_json::to_vec(&snapshot).expect("a snapshot serialises");
        write_atomic(&self.checkpoint_path(&slot.id), &bytes)
    }

    /// Removes the checkpoint of an unloaded plugin.
    pub(crate) fn forget_checkpoint(&self, plugin: &str) -> Result<()> {
        let path = self.checkpoint_path(plugin);
        match fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io("remove", &path)(e)),
        }
    }

    /// The steward's periodic checkpoint.
    pub(crate) fn checkpoint_if_due(&self, slot: &Arc<Slot>, now: Instant) {
        let due = {
            let state = slot.state();
            state.step.is_none()
                && state
                    .checkpointing
                    .is_some_and(|c| now.duration_since(c.last) >= c.every)
        };
        if due && let Err(error) = self.write_checkpoint(slot) {
            tracing::error!(plugin = %slot.id, "checkpoint failed: {error}");
        }
    }

    /// Comes back on the committed set of the store, with the checkpointed states: for a host
    /// started again with the same store, with no registry or sidecar needed. An empty store
    /// recovers nothing.
    pub fn recover(&self) -> Result<Recovery> {
        let set: CommittedSet = read_json(&self.committed_path())?.unwrap_or_default();
        let mut plugins = Vec::new();
        for committed in set.plugins {
            let installed =
                self.install_unpersisted(&committed.version.digest, committed.config.clone())?;
            let slot = self.slot(&committed.plugin)?;
            slot.state().checkpointing = committed.checkpoint_every_ms.map(|ms| Checkpointing {
                every: Duration::from_millis(ms),
                last: Instant::now(),
            });
            let checkpoint = match self.restore_checkpoint(&committed.plugin) {
                Ok(Some(checkpoint)) => CheckpointOutcome::Restored { checkpoint },
                Ok(None) => CheckpointOutcome::Missing,
                Err(reason) => CheckpointOutcome::Refused { reason },
            };
            match &checkpoint {
                CheckpointOutcome::Restored { checkpoint: c } => {
                    tracing::info!(plugin = %committed.plugin, version = %installed.version, seq = c.seq, "recovered from the store with its checkpointed state")
                }
                CheckpointOutcome::Missing => {
                    tracing::info!(plugin = %committed.plugin, version = %installed.version, "recovered from the store with a fresh state (no checkpoint)")
                }
                CheckpointOutcome::Refused { reason: why } => {
                    tracing::error!(plugin = %committed.plugin, version = %installed.version, "recovered with a fresh state: its checkpoint was refused: {why}")
                }
            }
            plugins.push(RecoveredPlugin {
                plugin: committed.plugin,
                version: installed.version,
                checkpoint,
            });
        }
        let recovery = Recovery { plugins };
        *lock(&self.shared.recovery) = Some(recovery.clone());
        Ok(recovery)
    }

    fn restore_checkpoint(&self, plugin: &str) -> Result<Option<CheckpointRef>, String> {
        let snapshot: Option<StateSnapshot> =
            read_json(&self.checkpoint_path(plugin)).map_err(|e| e.to_string())?;
        let Some(snapshot) = snapshot else {
            return Ok(None);
        };
        self.restore(&snapshot).map_err(|e| e.to_string())?;
        Ok(Some(CheckpointRef {
            seq: snapshot.seq,
            sha256: snapshot.sha256,
        }))
    }

    fn step_path(&self, step_id: &str, operation: &str) -> PathBuf {
        self.store()
            .root()
            .join("steps")
            .join(step_id)
            .join(format!("{operation}.json"))
    }

    /// Runs a mutating operation once per step id: the first call runs `apply` and records its
    /// outcome (success or failure) in the store with the request's fingerprint (`request`,
    /// e.g. the sha256 of its canonical JSON); a retry with the same step id, operation and
    /// request returns the recorded outcome without applying anything, and one with another
    /// request is refused ([`HostError::StepIdReused`]). Retries are serialised with the first
    /// call, so two at once never both apply.
    pub fn once_per_step(
        &self,
        step_id: &str,
        operation: &str,
        request: &Digest,
        apply: impl FnOnce() -> Result<Value, Value>,
    ) -> Result<StepOutcome> {
        check_step_id(step_id)?;
        let _steps = lock(&self.shared.step_lock);
        let path = self.step_path(step_id, operation);
        if let Some(recorded) = read_json::<StepRecord>(&path)? {
            if recorded.request != *request {
                return Err(HostError::StepIdReused {
                    step_id: step_id.to_owned(),
                    operation: operation.to_owned(),
                });
            }
            return Ok(StepOutcome {
                outcome: recorded.outcome,
                replayed: true,
            });
        }
        let record = StepRecord {
            request: *request,
            outcome: apply(),
        };
        let bytes = serde_json::to_vec(&record).expect("an outcome serialises");
        write_atomic(&path, &bytes)?;
        Ok(StepOutcome {
            outcome: record.outcome,
            replayed: false,
        })
    }
}

/// What the store keeps of a mutating operation, under its step id.
#[derive(Debug, Serialize, Deserialize)]
struct StepRecord {
    /// The fingerprint of the request that applied it.
    request: Digest,
    /// What it returned.
    outcome: Result<Value, Value>,
}

/// The outcome of a mutating operation run once per step id.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutcome {
    /// What it returned, as JSON: `Ok` the result, `Err` the error.
    pub outcome: Result<Value, Value>,
    /// Whether this is the outcome recorded by an earlier call with the same step id.
    pub replayed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_ids_must_be_plain_names() {
        for ok in ["s1", "2026-11-25T10.00_ma_cross-2.0.0", &"a".repeat(128)] {
            assert!(check_step_id(ok).is_ok(), "{ok:?}");
        }
        for bad in ["", ".hidden", "../x", "a/b", "a b", &"a".repeat(129), "é"] {
            assert!(check_step_id(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn atomic_writes_replace_whole_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("committed.json");
        write_atomic(&path, b"first").unwrap();
        write_atomic(&path, b"second").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["committed.json"]);
    }
}
