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

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use plugsync_plugin::HostTime;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::Digest;
use crate::error::{HostError, Result, io};
use crate::rollback::VersionRef;
use crate::runtime::{Runtime, StateSnapshot, StepFate, snapshot_of};
use crate::slot::{Slot, StepState, lock, try_lock};

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
    /// Whether a faulted slot refuses calls ([`Runtime::set_fail_closed`]).
    #[serde(default)]
    pub fail_closed: bool,
    /// The last change applied to it: what, asked by whom, when.
    #[serde(default)]
    pub applied: Option<AppliedRecord>,
}

/// The last change applied to a plugin of the committed set, kept with it (so it survives a
/// restart): clients tell their own changes from changes by hand with it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct AppliedRecord {
    /// What was done.
    pub operation: AppliedOperation,
    /// The step id it was asked with, if any.
    pub step_id: Option<String>,
    /// The version running after it.
    pub version: VersionRef,
    /// The sha256 of the canonical JSON of the config running after it.
    pub config_hash: Digest,
    /// Who asked, as the request said (`None`: the host's own code, in process).
    pub origin: Option<Origin>,
    /// Host time (ns since the Unix epoch) it was applied.
    #[cfg_attr(feature = "control-api", schemars(with = "i64"))]
    pub at: HostTime,
    /// Whether its state was started fresh although a checkpoint existed (recovery, on the
    /// operator's choice): the positions it held are gone.
    #[serde(default)]
    pub fresh_state: bool,
}

/// What an [`AppliedRecord`] records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum AppliedOperation {
    /// Installed into an empty slot.
    Install,
    /// Installed by the host at its start (`plugsync host --load`).
    Load,
    /// A pending step committed.
    Commit,
    /// A pending step rolled back on request: the committed version runs again.
    Rollback,
    /// Recovered at a restart with a fresh state, on the operator's choice.
    Recovery,
    /// Unloaded: the plugin left the committed set (the record stays, in
    /// [`CommittedSet::unloaded`], until it is installed again).
    Unload,
}

/// Who asked for a change: a client says it with each mutating request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Origin {
    /// The tool (`plugsync-reconcile`, `plugsync-run`, an operator's script…).
    pub tool: String,
    /// The client's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// The plan the change belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan_id: Option<String>,
    /// The sha256 of the desired state (plugins.yaml) the plan was made from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_sha256: Option<String>,
    /// Why the change was forced through the client's own policy (an update window that
    /// forbids it now), as the operator gave it: recorded with the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forced: Option<String>,
    /// The sha256 of this plugin's entry in that desired state (the client's fingerprint of
    /// what it asked for this plugin): a failed mark set because the change failed carries
    /// it, and stands until the entry changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_sha256: Option<String>,
}

/// What the host runs, as committed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct CommittedSet {
    /// One entry per plugin, by id.
    pub plugins: Vec<CommittedPlugin>,
    /// The plugins unloaded since, each with the record of its unload (who, when, which
    /// version), until it is installed again: a client tells a plugin removed on purpose, and
    /// by whom, from one that never ran.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unloaded: Vec<UnloadedPlugin>,
}

/// A plugin no longer in the committed set, and how it left.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct UnloadedPlugin {
    /// Plugin id.
    pub plugin: String,
    /// The unload: its step id, origin and time, and the version and config hash it ended.
    pub applied: AppliedRecord,
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

/// Where a recovered plugin's state came from. A plugin whose checkpoint existed never comes
/// back with a fresh state unless the operator asked for it
/// ([`RecoverOptions::fresh_state`]): positions would be silently forgotten.
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
    /// Its checkpoint was taken from another version (the commit's checkpoint was not
    /// written): verified, migrated forward by the plugins' declared migration, restored.
    Migrated {
        /// The checkpoint.
        #[serde(flatten)]
        checkpoint: CheckpointRef,
        /// The version it was taken from.
        from: VersionRef,
    },
    /// It had no checkpoint: a fresh state.
    Missing,
    /// Its checkpoint could not be restored, so the plugin was **not started**: it stays in
    /// the committed set, and calls to it fail as not loaded until an operator decides.
    NotStarted {
        /// Why, and what to do.
        reason: String,
    },
    /// Its checkpoint could not be restored and the operator chose a fresh state.
    Fresh {
        /// Why the checkpoint was not used.
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

/// How [`Runtime::recover_with`] treats checkpoints it cannot restore.
#[derive(Debug, Clone, Default)]
pub struct RecoverOptions {
    /// Plugins to start with a fresh state when their checkpoint cannot be restored (an
    /// explicit operator choice: their positions are forgotten). Others are not started.
    pub fresh_state: std::collections::BTreeSet<String>,
}

/// A checkpoint file: a state snapshot, and the config the instance ran with when it was taken
/// (what a migration forward needs).
#[derive(Debug, Serialize, Deserialize)]
struct Checkpoint {
    #[serde(flatten)]
    snapshot: StateSnapshot,
    #[serde(default)]
    config: Option<Value>,
}

/// Why a committed plugin was not recovered.
enum NotRecovered {
    /// Its artifact cannot be loaded (missing, unsigned, refused): no choice of state helps.
    Load(HostError),
    /// Its checkpoint cannot be restored: the operator may choose a fresh state.
    Checkpoint(String),
}

/// When a slot's next checkpoint is due.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Checkpointing {
    pub every: Duration,
    pub last: Instant,
}

/// Writes `bytes` to `path` whole: beside, fsync, rename, fsync the directory. The file is
/// `0600` and new directories `0700`: the host's state is its user's alone. The file beside has
/// a name no other writer uses (process and a per-process counter), so two threads writing the
/// same file never write into one partial file; the last rename wins whole.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    crate::store::create_private_dir_all(dir)?;
    let partial = dir.join(format!(
        ".{}.partial-{}-{}",
        path.file_name().and_then(|n| n.to_str()).unwrap_or("file"),
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
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

pub(crate) fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Option<T>> {
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

    /// The committed set as it is now: per plugin, the version committed (the previous one
    /// while a step is pending). Read without touching any slot.
    pub fn committed(&self) -> CommittedSet {
        let committed = lock(&self.shared.committed);
        CommittedSet {
            plugins: committed.values().cloned().collect(),
            unloaded: self.unloaded_records(),
        }
    }

    /// The plugins unloaded and not installed again, with their unload's record.
    pub(crate) fn unloaded_records(&self) -> Vec<UnloadedPlugin> {
        lock(&self.shared.unloaded)
            .iter()
            .map(|(plugin, applied)| UnloadedPlugin {
                plugin: plugin.clone(),
                applied: applied.clone(),
            })
            .collect()
    }

    /// Changes the committed set and writes it to the store, both under the set's lock: two
    /// changes at once are both in the file, whichever writes last.
    pub(crate) fn update_committed(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, CommittedPlugin>),
    ) -> Result<()> {
        let mut committed = lock(&self.shared.committed);
        change(&mut committed);
        // A plugin in the set is no longer unloaded: its unload record goes in the same write.
        lock(&self.shared.unloaded).retain(|plugin, _| !committed.contains_key(plugin));
        let set = CommittedSet {
            plugins: committed.values().cloned().collect(),
            unloaded: self.unloaded_records(),
        };
        let bytes = serde_json::to_vec_pretty(&set).map_err(|e| HostError::Io {
            action: "serialise",
            path: self.committed_path(),
            source: std::io::Error::other(e),
        })?;
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
        let every_ms = every.map(|every| every.as_millis() as u64);
        self.update_committed(|set| {
            if let Some(entry) = set.get_mut(plugin) {
                entry.checkpoint_every_ms = every_ms;
            }
        })
    }

    /// Makes a faulted `plugin` refuse calls ([`CallError::FailedClosed`](crate::CallError))
    /// until it is swapped or restored, instead of serving on with a state a panic left
    /// (`true`); or serve on (`false`, the default). For a risk plugin, a refused order is
    /// safer than one approved by a suspect state. Part of the committed set.
    pub fn set_fail_closed(&self, plugin: &str, fail_closed: bool) -> Result<()> {
        let slot = self.slot(plugin)?;
        let _control = lock(&slot.control);
        slot.state().fail_closed = fail_closed;
        self.update_committed(|set| {
            if let Some(entry) = set.get_mut(plugin) {
                entry.fail_closed = fail_closed;
            }
        })
    }

    /// Writes `plugin`'s checkpoint now, if it opted in (`set_checkpointing`) and no step is
    /// pending (a host about to stop, say).
    pub fn checkpoint_now(&self, plugin: &str) -> Result<()> {
        let slot = self.slot(plugin)?;
        self.write_checkpoint(&slot)
    }

    /// Writes the checkpoint of a slot that opted in and has no step pending.
    pub(crate) fn write_checkpoint(&self, slot: &Arc<Slot>) -> Result<()> {
        // One writer per slot at a time, snapshot to rename: a checkpoint taken earlier never
        // lands after (and over) one taken later.
        let _writing = lock(&slot.checkpoint);
        self.write_checkpoint_held(slot, None)
    }

    /// Writes the checkpoint with the slot's checkpoint lock held. For the steward
    /// (`steward_now`), only if one is due by then, and never waiting on a busy slot.
    fn write_checkpoint_held(&self, slot: &Arc<Slot>, steward_now: Option<Instant>) -> Result<()> {
        let wait = steward_now.is_none();
        let config = {
            let Some(mut guard) = (if wait {
                Some(slot.state())
            } else {
                slot.try_state()
            }) else {
                return Ok(());
            };
            let state = &mut *guard;
            match (&mut state.checkpointing, &state.step, &state.active) {
                (Some(checkpointing), None, Some(active))
                    if steward_now.is_none_or(|now| {
                        now.duration_since(checkpointing.last) >= checkpointing.every
                    }) =>
                {
                    checkpointing.last = Instant::now();
                    active.config.clone()
                }
                _ => return Ok(()),
            }
        };
        let Some(snapshot) = snapshot_of(slot, wait)? else {
            return Ok(());
        };
        let checkpoint = Checkpoint {
            snapshot,
            config: Some(config),
        };
        let bytes = serde_json::to_vec(&checkpoint).map_err(|e| HostError::Io {
            action: "serialise",
            path: self.checkpoint_path(&slot.id),
            source: std::io::Error::other(e),
        })?;
        let path = self.checkpoint_path(&slot.id);
        crate::failpoint::hit("checkpoint.write", &path)?;
        write_atomic(&path, &bytes)
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

    /// The steward's periodic checkpoint. It never waits: a slot busy now (a long call, a
    /// checkpoint already being written) is looked at again next tick.
    pub(crate) fn checkpoint_if_due(&self, slot: &Arc<Slot>, now: Instant) {
        let Some(_writing) = try_lock(&slot.checkpoint) else {
            return;
        };
        if let Err(error) = self.write_checkpoint_held(slot, Some(now)) {
            tracing::error!(plugin = %slot.id, "checkpoint failed: {error}");
        }
    }

    /// Comes back on the committed set of the store, with the checkpointed states: for a host
    /// started again with the same store, with no registry or sidecar needed. An empty store
    /// recovers nothing. A plugin whose checkpoint cannot be restored is not started (see
    /// [`recover_with`](Runtime::recover_with)).
    pub fn recover(&self) -> Result<Recovery> {
        self.recover_with(&RecoverOptions::default())
    }

    /// As [`recover`](Runtime::recover), with the operator's choices for checkpoints that
    /// cannot be restored.
    pub fn recover_with(&self, options: &RecoverOptions) -> Result<Recovery> {
        let set: CommittedSet = read_json(&self.committed_path())?.unwrap_or_default();
        lock(&self.shared.unloaded)
            .extend((set.unloaded.into_iter()).map(|unloaded| (unloaded.plugin, unloaded.applied)));
        let mut plugins = Vec::new();
        for committed in set.plugins {
            lock(&self.shared.committed).insert(committed.plugin.clone(), committed.clone());
            let plugin = committed.plugin.clone();
            let not_loaded = |error: HostError| {
                let reason = format!(
                    "{error}; it was not started (the other plugins run; calls to `{plugin}` \
                     fail as not loaded until it can be loaded)"
                );
                tracing::error!(plugin = %plugin, "not started: {reason}");
                CheckpointOutcome::NotStarted { reason }
            };
            let outcome = match self.recover_plugin(&committed) {
                Ok(outcome) => outcome,
                Err(NotRecovered::Load(error)) => {
                    self.evict(&plugin);
                    not_loaded(error)
                }
                Err(NotRecovered::Checkpoint(reason)) if options.fresh_state.contains(&plugin) => {
                    self.evict(&plugin);
                    match self
                        .install_unpersisted(&committed.version.digest, committed.config.clone())
                    {
                        Ok(_) => {
                            tracing::warn!(plugin = %plugin, "recovered with a fresh state, as the operator chose: {reason}");
                            // Recorded: its positions are gone, and clients must see that the
                            // host, not they, changed it.
                            let applied = AppliedRecord {
                                fresh_state: true,
                                ..self.applied(
                                    AppliedOperation::Recovery,
                                    &crate::runtime::Asked::default(),
                                    &committed.version,
                                    &committed.config,
                                )
                            };
                            self.persisted(self.update_committed(|set| {
                                if let Some(entry) = set.get_mut(&plugin) {
                                    entry.applied = Some(applied);
                                }
                            }));
                            CheckpointOutcome::Fresh { reason }
                        }
                        Err(error) => not_loaded(error),
                    }
                }
                Err(NotRecovered::Checkpoint(reason)) => {
                    self.evict(&plugin);
                    let reason = format!(
                        "{reason}; it was not started, so that its state is not silently \
                         forgotten: fix or restore `checkpoints/{plugin}.json`, or start it \
                         with a fresh state on purpose (`plugsync host --fresh-state {plugin}`)"
                    );
                    tracing::error!(plugin = %plugin, "not started: {reason}");
                    CheckpointOutcome::NotStarted { reason }
                }
            };
            if let Ok(slot) = self.slot(&plugin) {
                let mut state = slot.state();
                state.checkpointing = committed.checkpoint_every_ms.map(|ms| Checkpointing {
                    every: Duration::from_millis(ms),
                    last: Instant::now(),
                });
                state.fail_closed = committed.fail_closed;
                // A halt outlives a restart: the plugin comes back refusing calls.
                state.halted = self
                    .shared
                    .restraints
                    .snapshot()
                    .halts
                    .get(&plugin)
                    .map(|because| because.reason.clone());
                drop(state);
                // The checkpoint that could not be restored is replaced by the fresh state the
                // operator chose (or removed, for a plugin no longer checkpointed): otherwise
                // the next restart would refuse the plugin again over it.
                if matches!(outcome, CheckpointOutcome::Fresh { .. }) {
                    let replaced = match committed.checkpoint_every_ms {
                        Some(_) => self.write_checkpoint(&slot),
                        None => self.forget_checkpoint(&plugin),
                    };
                    self.persisted(replaced);
                }
            }
            match &outcome {
                CheckpointOutcome::Restored { checkpoint: c } => {
                    tracing::info!(plugin = %plugin, version = %committed.version, seq = c.seq, "recovered from the store with its checkpointed state")
                }
                CheckpointOutcome::Migrated {
                    checkpoint: c,
                    from,
                } => {
                    tracing::warn!(plugin = %plugin, version = %committed.version, seq = c.seq, "recovered from the store with the checkpoint of {from}, migrated forward")
                }
                CheckpointOutcome::Missing => {
                    tracing::info!(plugin = %plugin, version = %committed.version, "recovered from the store with a fresh state (no checkpoint)")
                }
                CheckpointOutcome::NotStarted { .. } | CheckpointOutcome::Fresh { .. } => {}
            }
            plugins.push(RecoveredPlugin {
                plugin,
                version: committed.version,
                checkpoint: outcome,
            });
        }
        let recovery = Recovery { plugins };
        *lock(&self.shared.recovery) = Some(recovery.clone());
        Ok(recovery)
    }

    /// Starts one committed plugin with its checkpointed state; `Err` says why it cannot be.
    fn recover_plugin(
        &self,
        committed: &CommittedPlugin,
    ) -> Result<CheckpointOutcome, NotRecovered> {
        let install = || {
            self.install_unpersisted(&committed.version.digest, committed.config.clone())
                .map_err(NotRecovered::Load)
        };
        let path = self.checkpoint_path(&committed.plugin);
        let checkpoint: Option<Checkpoint> =
            read_json(&path).map_err(|e| NotRecovered::Checkpoint(e.to_string()))?;
        let Some(Checkpoint { snapshot, config }) = checkpoint else {
            install()?;
            return Ok(CheckpointOutcome::Missing);
        };
        snapshot
            .verify()
            .map_err(|e| NotRecovered::Checkpoint(e.to_string()))?;
        let checkpoint = CheckpointRef {
            seq: snapshot.seq,
            sha256: snapshot.sha256,
        };
        if snapshot.version.digest == committed.version.digest {
            install()?;
            self.restore(&snapshot)
                .map_err(|e| NotRecovered::Checkpoint(e.to_string()))?;
            return Ok(CheckpointOutcome::Restored { checkpoint });
        }
        // The checkpoint is another version's: the commit that changed the version did not
        // write its own. Migrate it forward (or back) as a swap would.
        let from = snapshot.version.clone();
        let why = |e: HostError| {
            NotRecovered::Checkpoint(format!(
                "its checkpoint was taken from {from}, not the committed {}, and cannot be \
                 migrated: {e}",
                committed.version
            ))
        };
        let old = self.library(&from.digest).map_err(why)?;
        let new = self
            .library(&committed.version.digest)
            .map_err(NotRecovered::Load)?;
        let transition =
            crate::migration::Transition::new(&committed.plugin, &old, &new, None).map_err(why)?;
        let old_config = config.unwrap_or_else(|| committed.config.clone());
        let migrated = crate::migration::migrate(
            &transition,
            &old_config,
            snapshot.state.as_bytes(),
            Some(&committed.config),
        )
        .map_err(why)?;
        install()?;
        self.restore_state(&committed.plugin, &migrated.state)
            .map_err(why)?;
        Ok(CheckpointOutcome::Migrated { checkpoint, from })
    }

    fn step_path(&self, step_id: &str, operation: &str) -> PathBuf {
        self.store()
            .root()
            .join("steps")
            .join(step_id)
            .join(format!("{operation}.json"))
    }

    /// Runs a mutating operation once per step id: the first call runs `apply` and records its
    /// final outcome (success or refusal) in the store with the request's fingerprint
    /// (`request`, e.g. the sha256 of its canonical JSON); a retry with the same step id,
    /// operation and request returns the recorded outcome without applying anything, and one
    /// with another request is refused ([`HostError::StepIdReused`]). A transient failure
    /// ([`StepResult::Transient`]) is returned but not recorded: the step id is not spent, and
    /// a retry runs again. Retries are serialised with the first call, so two at once never
    /// both apply. Records are kept for the runtime's step retention
    /// ([`RuntimeOptions::step_retention`](crate::RuntimeOptions::step_retention)).
    pub fn once_per_step<R: Into<StepResult>>(
        &self,
        step_id: &str,
        operation: &str,
        request: &Digest,
        apply: impl FnOnce() -> R,
    ) -> Result<StepOutcome> {
        check_step_id(step_id)?;
        let step_lock = lock(&self.shared.step_locks)
            .entry(step_id.to_owned())
            .or_default()
            .clone();
        let _step = lock(&step_lock);
        let result = self.once_per_step_locked(step_id, operation, request, || apply().into());
        // The last user of this step id's lock removes it (the map holds one reference).
        let mut locks = lock(&self.shared.step_locks);
        if std::sync::Arc::strong_count(&step_lock) <= 2 {
            locks.remove(step_id);
        }
        result
    }

    fn once_per_step_locked(
        &self,
        step_id: &str,
        operation: &str,
        request: &Digest,
        apply: impl FnOnce() -> StepResult,
    ) -> Result<StepOutcome> {
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
        let outcome = match apply() {
            StepResult::Final(outcome) => outcome,
            StepResult::Transient(error) => {
                return Ok(StepOutcome {
                    outcome: Err(error),
                    replayed: false,
                });
            }
        };
        let record = StepRecord {
            request: *request,
            outcome,
        };
        let bytes = serde_json::to_vec(&record).map_err(|e| HostError::Io {
            action: "serialise",
            path: path.clone(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&path, &bytes)?;
        Ok(StepOutcome {
            outcome: record.outcome,
            replayed: false,
        })
    }

    /// What became of step `step_id` of `plugin` since its switch: pending, committed or rolled
    /// back (from the slot, else from the step's own commit or rollback record), or unknown to
    /// this host. A retried switch is answered from its record only while the switch holds:
    /// the control API refuses one whose step was rolled back or lost in a restart
    /// ([`HostError::StepGone`]).
    pub fn step_fate(&self, plugin: &str, step_id: &str) -> Result<StepFate> {
        check_step_id(step_id)?;
        if let Ok(slot) = self.slot(plugin) {
            let state = slot.state();
            if state.step.as_ref().and_then(|s| s.step_id.as_deref()) == Some(step_id) {
                return Ok(StepFate::Pending);
            }
            if let Some(last) = &state.last_step
                && last.step_id.as_deref() == Some(step_id)
            {
                return Ok(match last.outcome {
                    StepState::Pending => StepFate::Pending,
                    StepState::Committed => StepFate::Committed,
                    StepState::RolledBack => StepFate::RolledBack,
                });
            }
        }
        let ended = |operation: &str| -> Result<bool> {
            let record = read_json::<StepRecord>(&self.step_path(step_id, operation))?;
            Ok(record.is_some_and(|record| record.outcome.is_ok()))
        };
        Ok(if ended("commit")? {
            StepFate::Committed
        } else if ended("rollback")? {
            StepFate::RolledBack
        } else {
            StepFate::Unknown
        })
    }

    /// Removes the step records older than `retention` (by their files' modification time),
    /// except those of a step in progress now; returns how many steps it removed. The steward
    /// runs it every hour with [`RuntimeOptions::step_retention`](crate::RuntimeOptions::step_retention):
    /// a retry later than that applies again.
    pub fn prune_step_records(&self, retention: Duration) -> Result<usize> {
        let steps = self.store().root().join("steps");
        let entries = match fs::read_dir(&steps) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
            Err(e) => return Err(io("read", &steps)(e)),
        };
        let cutoff = std::time::SystemTime::now()
            .checked_sub(retention)
            .unwrap_or(std::time::UNIX_EPOCH);
        let mut removed = 0;
        for entry in entries {
            let dir = entry.map_err(io("read", &steps))?.path();
            let Some(step_id) = dir.file_name().and_then(|n| n.to_str()).map(str::to_owned) else {
                continue;
            };
            let step_lock = lock(&self.shared.step_locks).get(&step_id).cloned();
            // A step in use now is never pruned under its user.
            if step_lock.is_some() {
                continue;
            }
            if newest_modification(&dir).is_some_and(|newest| newest < cutoff) {
                fs::remove_dir_all(&dir).map_err(io("remove", &dir))?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// The latest modification time of the files in `dir`.
fn newest_modification(dir: &Path) -> Option<std::time::SystemTime> {
    fs::read_dir(dir)
        .ok()?
        .filter_map(|entry| entry.ok()?.metadata().ok()?.modified().ok())
        .max()
}

/// What a mutating operation returned, for [`Runtime::once_per_step`].
#[derive(Debug, Clone, PartialEq)]
pub enum StepResult {
    /// A final outcome, success (`Ok`) or refusal (`Err`): recorded, and returned again to a
    /// retry of the same step.
    Final(Result<Value, Value>),
    /// A transient failure (the host could not do it now: an I/O error, say): returned, never
    /// recorded, so a retry with the same step id runs again.
    Transient(Value),
}

impl From<Result<Value, Value>> for StepResult {
    fn from(outcome: Result<Value, Value>) -> StepResult {
        StepResult::Final(outcome)
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
