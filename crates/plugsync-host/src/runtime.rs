//! The runtime a host embeds: store, resident libraries and slots, and the operations on them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use plugsync_plugin::{HostTime, PluginMetadata, canonical_json};
use serde::{Deserialize, Serialize};

use crate::clock::{Clock, SystemClock};
use crate::dependencies::{self, PlannedChange};
use crate::digest::Digest;
use crate::error::{HostError, Result};
use crate::keys::TrustedKeys;
use crate::library::{FRAMEWORK_VERSION, Instance, Library, LoadPolicy, check_plugin_id};
use crate::persist::{
    AppliedOperation, AppliedRecord, Checkpointing, CommittedPlugin, Origin, Recovery,
    UnloadedPlugin,
};
use crate::reconcile_lease::{LeaseBreak, LeaseGuard, LeaseHolder, LeaseStatus, ReconcileLease};
use crate::restraints::{
    Because, FailedMark, Force, Restraint, Restraints, RestraintsCell, add_failed,
};
use crate::rollback::{self, RollbackReason, RollbackReport, VersionRef};
use crate::slot::{
    Active, CallError, CallOutput, Counters, Fault, Journal, PendingStep, Slot, SlotHandle,
    SlotState, StepRecord, StepState, StuckCall, lock,
};
use crate::steward::{self, SoakThresholds, StepWatch};
use crate::store::{ArtifactStore, StoredArtifact};
use crate::swap::SwapSafeAnswer;

/// How a [`Runtime`] is set up.
#[derive(Clone)]
pub struct RuntimeOptions {
    /// The store directory (artifacts live under `<store>/artifacts/<sha256>/`).
    pub store: PathBuf,
    /// How many versions of one plugin may be mapped in the process at once. Code is never
    /// unmapped, so this bounds what a long-running host accumulates.
    pub resident_cap: usize,
    /// What the loader accepts, and whose signatures every artifact must carry to load
    /// ([`LoadPolicy::trusted_keys`]).
    pub load_policy: LoadPolicy,
    /// The host clock that gives each call its time, and by which leases expire.
    pub clock: Arc<dyn Clock>,
    /// A call running longer than this marks its plugin `stuck` in status (and logs once). A
    /// call cannot be cancelled in-process: the watchdog only reports. `None`: not watched.
    pub call_watchdog: Option<std::time::Duration>,
    /// How long the outcome of a mutating control operation is kept under its step id (a
    /// retry within it gets the recorded outcome; after it, the step applies again).
    pub step_retention: std::time::Duration,
}

impl std::fmt::Debug for RuntimeOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RuntimeOptions")
            .field("store", &self.store)
            .field("resident_cap", &self.resident_cap)
            .field("load_policy", &self.load_policy)
            .field("call_watchdog", &self.call_watchdog)
            .field("step_retention", &self.step_retention)
            .finish_non_exhaustive()
    }
}

impl RuntimeOptions {
    /// Defaults with the given store directory: a resident cap of 8 versions per plugin, the
    /// system clock, `panic = "abort"` plugins refused, calls watched for 1 s, step records kept
    /// 7 days.
    pub fn new(store: impl Into<PathBuf>) -> RuntimeOptions {
        RuntimeOptions {
            store: store.into(),
            resident_cap: 8,
            load_policy: LoadPolicy::default(),
            clock: Arc::new(SystemClock::new()),
            call_watchdog: Some(std::time::Duration::from_secs(1)),
            step_retention: std::time::Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// The plugin runtime of a host process. Cheap to clone (shared); every method may be called
/// from any thread.
#[derive(Clone, Debug)]
pub struct Runtime {
    pub(crate) shared: Arc<Shared>,
}

#[derive(Debug)]
pub(crate) struct Shared {
    pub store: ArtifactStore,
    /// Every library ever mapped, by digest. Never shrinks: code is never unmapped.
    libraries: Mutex<BTreeMap<Digest, Arc<Library>>>,
    /// Libraries mapped but refused after `dlopen` (a bad vtable), by digest, with their plugin
    /// id: their code is mapped for good too, so they count against the resident cap.
    refused_mapped: Mutex<BTreeMap<Digest, String>>,
    /// Artifacts allowed to load without a signature although keys are trusted
    /// ([`Runtime::allow_unsigned`]).
    unsigned_allowed: Mutex<BTreeSet<Digest>>,
    slots: RwLock<BTreeMap<String, Arc<Slot>>>,
    resident_cap: usize,
    pub clock: Arc<dyn Clock>,
    /// What [`Runtime::recover`] came back on, for status.
    pub recovery: Mutex<Option<Recovery>>,
    /// The committed set, by plugin id: changed and written to the store under this one lock,
    /// so two commits at once never lose each other's entry, and read without touching any
    /// slot (a slot busy with a long call must not hold up another plugin's commit).
    pub committed: Mutex<BTreeMap<String, CommittedPlugin>>,
    /// The plugins unloaded (and not installed since), with their unload's record: changed
    /// only under the `committed` lock, inside the change written with it.
    pub unloaded: Mutex<BTreeMap<String, AppliedRecord>>,
    /// One lock per step id in use: a retry waits for the first attempt of the same step, and
    /// steps of other plugins never wait on each other.
    pub step_locks: Mutex<BTreeMap<String, Arc<Mutex<()>>>>,
    /// The call watchdog's bound.
    pub call_watchdog: Option<std::time::Duration>,
    /// How long step records are kept, and when they were last pruned.
    pub step_retention: std::time::Duration,
    pub steps_pruned: Mutex<Option<std::time::Instant>>,
    /// The last failure to persist the committed set or a checkpoint, for status.
    persist_error: Mutex<Option<String>>,
    /// Which client may change this host now.
    pub lease: ReconcileLease,
    /// What operators and the host forbid for now (freeze, holds, failed marks, halts).
    pub restraints: Arc<RestraintsCell>,
}

/// A plugin's state at one point, with its checksum.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct StateSnapshot {
    /// Plugin id.
    pub plugin: String,
    /// Version and artifact that produced it.
    pub version: VersionRef,
    /// The state schema version it follows.
    pub state_schema: u32,
    /// Calls the slot had served when it was taken (after a lossy rollback, not all of them
    /// are reflected: the rollback report says which are not).
    pub seq: u64,
    /// The state JSON, as the plugin wrote it.
    pub state: String,
    /// sha256 of the canonical JSON form of the state.
    pub sha256: Digest,
}

impl StateSnapshot {
    /// Checks the checksum (done on every restore).
    pub fn verify(&self) -> Result<serde_json::Value> {
        let bad = |reason: String| HostError::BadSnapshot {
            plugin: self.plugin.clone(),
            reason,
        };
        let value: serde_json::Value = serde_json::from_str(&self.state)
            .map_err(|e| bad(format!("the state is not JSON: {e}")))?;
        let actual = Digest::of(&canonical_json(&value).map_err(|e| bad(e.to_string()))?);
        if actual != self.sha256 {
            return Err(bad(format!(
                "its sha256 is {actual} but it claims {}: it was altered or truncated",
                self.sha256
            )));
        }
        Ok(value)
    }
}

/// The checksum of a state: sha256 of its canonical JSON.
pub(crate) fn state_checksum(state: &[u8]) -> Option<(serde_json::Value, Digest)> {
    let value: serde_json::Value = serde_json::from_slice(state).ok()?;
    let digest = Digest::of(&canonical_json(&value).ok()?);
    Some((value, digest))
}

/// What [`Runtime::install`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct Installed {
    /// Plugin id.
    pub plugin: String,
    /// Version and artifact now serving.
    pub version: VersionRef,
    /// For an install with a lease: when the lease ends (host time). The install is a pending
    /// step until a commit with its step id; the host unloads it then unless committed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "control-api", schemars(with = "Option<i64>"))]
    pub lease_expires_at: Option<HostTime>,
}

/// How an install is asked for, besides its artifact and config.
#[derive(Debug, Clone, Default)]
pub struct InstallTerms {
    /// Checkpoint the plugin's state this often (and at each commit), for a restart.
    pub checkpoint_every: Option<Duration>,
    /// Refuse calls while the plugin is faulted by a panic (see
    /// [`Runtime::set_fail_closed`]).
    pub fail_closed: bool,
    /// Install as a step with this lease: the plugin serves at once, but joins the committed
    /// set only when a commit with the same step id arrives in time. Otherwise — a rollback, a
    /// panic, a failed health check, a crossed soak threshold, the lease run out — the host
    /// unloads it and marks the version failed, as it rolls a switch back; a restart before
    /// the commit comes back without it.
    pub lease: Option<Duration>,
    /// What the step must stay within until its commit (with a lease only).
    pub soak: SoakThresholds,
}

/// A pending (switched, not committed) step, for status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct PendingStatus {
    /// Step id, if the sidecar gave one.
    pub step_id: Option<String>,
    /// The version kept for rollback; `null` when the step is an install (with a lease): a
    /// rollback unloads it.
    pub previous: Option<VersionRef>,
    /// Calls served since the switch.
    pub calls_since_switch: u64,
    /// Whether every one of them is journaled (rollback by replay possible).
    pub journal_complete: bool,
    /// When the step's lease ends (host time), if it has one: the host rolls the step back then
    /// unless it was committed. Without one, the step waits for a commit or a rollback.
    #[cfg_attr(feature = "control-api", schemars(with = "Option<i64>"))]
    pub lease_expires_at: Option<HostTime>,
    /// The soak thresholds the host watches until the step ends (crossing one rolls it back).
    pub soak: SoakThresholds,
}

/// What a plugin's health check says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Health {
    /// Fit to serve.
    Ok,
    /// Not fit to serve.
    Unhealthy {
        /// The reason the plugin gave, or the panic that faulted the slot.
        reason: String,
    },
}

impl Health {
    /// Whether it is fit to serve.
    pub fn is_ok(&self) -> bool {
        matches!(self, Health::Ok)
    }
}

/// What one slot runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct PluginStatus {
    /// Plugin id.
    pub plugin: String,
    /// Version and artifact serving.
    pub version: VersionRef,
    /// Its config.
    pub config: serde_json::Value,
    /// sha256 of the canonical JSON form of the config.
    pub config_hash: Digest,
    /// State schema version of the serving version.
    pub state_schema: u32,
    /// The serving version's metadata, as its library declares it: what a step from it is
    /// checked against (`migrates_from`, `downgrades_to`, `state_schema`, `framework`,
    /// `dependencies`; see [`TransitionKind::between`](crate::TransitionKind::between)).
    #[cfg_attr(
        feature = "control-api",
        schemars(with = "crate::control::api::MetadataSchema")
    )]
    pub metadata: PluginMetadata,
    /// What its health check says (a slot faulted by a panic is unhealthy).
    pub health: Health,
    /// The panic that marked the slot faulted, if any.
    pub fault: Option<Fault>,
    /// Call counters.
    pub counters: Counters,
    /// The host time the last call served by this slot was given, if it has served one.
    #[cfg_attr(feature = "control-api", schemars(with = "Option<i64>"))]
    pub last_call_at: Option<HostTime>,
    /// The step in progress, if any.
    pub pending: Option<PendingStatus>,
    /// The last step applied.
    pub last_step: Option<StepRecord>,
    /// The last rollback.
    pub last_rollback: Option<RollbackReport>,
    /// The slot was busy when status looked (a call or a control operation held it past the
    /// status's short wait): the rest of this entry is what it showed last.
    pub busy: bool,
    /// A call running longer than the host's call watchdog allows.
    pub stuck: Option<StuckCall>,
    /// A faulted slot refuses calls instead of serving on.
    pub fail_closed: bool,
    /// The last change applied to it that the committed set holds (install, commit, a
    /// requested rollback…): what, asked by whom, when. `None` for a plugin installed before
    /// the host kept them.
    pub applied: Option<AppliedRecord>,
    /// Whether it says a swap is safe now (its `swap_safe`, asked under the lock with the
    /// health check): what a `when-flat` switch would be told. `None` from a host that does
    /// not ask.
    #[serde(default)]
    pub swap_safe: Option<SwapSafeAnswer>,
}

/// A library mapped in the process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct ResidentLibrary {
    /// Plugin id.
    pub plugin: String,
    /// Version and artifact.
    pub version: VersionRef,
    /// Where it was mapped from.
    pub path: PathBuf,
    /// Instances of it alive now (0: forgotten, but still mapped).
    pub live_instances: usize,
}

/// What the runtime runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct RuntimeStatus {
    /// Plugin ABI major this host speaks.
    pub abi: u16,
    /// The host framework version.
    pub framework: String,
    /// Host time of this status.
    #[cfg_attr(feature = "control-api", schemars(with = "i64"))]
    pub now: HostTime,
    /// One entry per loaded plugin, by id.
    pub plugins: Vec<PluginStatus>,
    /// Every library mapped in the process.
    pub resident: Vec<ResidentLibrary>,
    /// The cap on resident versions per plugin.
    pub resident_cap: usize,
    /// Plugin instances alive now, over all libraries (live, kept for rollback, throwaway).
    pub live_instances: usize,
    /// What this host came back on from its store when it started, if it recovered.
    pub recovered: Option<Recovery>,
    /// The last failure to persist the committed set or a checkpoint (cleared by a success).
    pub persist_error: Option<String>,
    /// Which client may change this host now, and the last breaks of that lease.
    pub lease: LeaseStatus,
    /// What operators and the host forbid for now: a freeze, holds, versions marked failed,
    /// halted plugins, and the last changes forced through them.
    pub restraints: Restraints,
    /// The plugins unloaded and not installed since, each with the record of its unload (what
    /// version, by whom, when).
    #[serde(default)]
    pub unloaded: Vec<UnloadedPlugin>,
}

impl Runtime {
    /// Starts a runtime over the store in `options`.
    pub fn new(options: RuntimeOptions) -> Result<Runtime> {
        let store = ArtifactStore::open(&options.store, options.load_policy.clone())?;
        let lease = ReconcileLease::open(store.root().join("lease.json"))?;
        let restraints = Arc::new(RestraintsCell::open(store.root().join("restraints.json"))?);
        let runtime = Runtime {
            shared: Arc::new(Shared {
                store,
                libraries: Mutex::new(BTreeMap::new()),
                refused_mapped: Mutex::new(BTreeMap::new()),
                unsigned_allowed: Mutex::new(BTreeSet::new()),
                slots: RwLock::new(BTreeMap::new()),
                resident_cap: options.resident_cap,
                clock: options.clock,
                recovery: Mutex::new(None),
                committed: Mutex::new(BTreeMap::new()),
                unloaded: Mutex::new(BTreeMap::new()),
                step_locks: Mutex::new(BTreeMap::new()),
                call_watchdog: options.call_watchdog,
                step_retention: options.step_retention,
                steps_pruned: Mutex::new(None),
                persist_error: Mutex::new(None),
                lease,
                restraints,
            }),
        };
        steward::spawn(Arc::downgrade(&runtime.shared));
        Ok(runtime)
    }

    /// The artifact store.
    pub fn store(&self) -> &ArtifactStore {
        &self.shared.store
    }

    /// Stages artifact bytes announced with `sha256`: verified, then written to the store.
    pub fn stage(&self, name: &str, bytes: &[u8], sha256: &Digest) -> Result<StoredArtifact> {
        self.shared.store.put(name, bytes, sha256)
    }

    /// Stages artifact bytes announced with `sha256`, with their publisher's `signature` (128
    /// hex digits), kept beside them and checked before every load
    /// ([`ArtifactStore::put_signed`]).
    pub fn stage_signed(
        &self,
        name: &str,
        bytes: &[u8],
        sha256: &Digest,
        signature: Option<&str>,
    ) -> Result<StoredArtifact> {
        self.shared.store.put_signed(name, bytes, sha256, signature)
    }

    /// Stages a local library file (its digest is what its bytes hash to), with the signature
    /// in `<path>.sig` if there is one.
    pub fn stage_file(&self, path: &Path) -> Result<StoredArtifact> {
        self.shared.store.put_file(path)
    }

    /// The keys whose signatures every artifact must carry to load (none: not checked).
    pub fn trusted_keys(&self) -> &TrustedKeys {
        self.shared.store.trusted_keys()
    }

    /// Lets one artifact load without a signature in this process although keys are trusted:
    /// for development (`plugsync host --allow-unsigned-load`). A signature it does carry must
    /// still be good.
    pub fn allow_unsigned(&self, digest: &Digest) {
        lock(&self.shared.unsigned_allowed).insert(*digest);
    }

    /// Checks that a stored artifact may load: with trusted keys, its signature must be one of
    /// theirs over its id, version and digest (or it is unsigned and allowed by
    /// [`allow_unsigned`](Self::allow_unsigned)). Runs before every `dlopen`.
    pub fn check_signature(&self, artifact: &StoredArtifact) -> Result<()> {
        let keys = self.trusted_keys();
        if artifact.signature.is_none()
            && !keys.is_empty()
            && lock(&self.shared.unsigned_allowed).contains(&artifact.digest)
        {
            tracing::warn!(
                plugin = %artifact.metadata.id,
                version = %artifact.metadata.version,
                digest = %artifact.digest,
                "loading an unsigned artifact: allowed for development (`--allow-unsigned-load`)"
            );
            return Ok(());
        }
        keys.check_artifact(
            &artifact.metadata,
            &artifact.digest,
            artifact.signature.as_deref(),
        )
    }

    /// Maps the library of a stored artifact, or reuses it if it is resident already.
    pub(crate) fn library(&self, digest: &Digest) -> Result<Arc<Library>> {
        match self.resident(digest) {
            Some(library) => Ok(library),
            None => {
                let (artifact, bytes) = self.shared.store.read(digest)?;
                self.map_bytes(artifact, &bytes)
            }
        }
    }

    /// The library of `digest` if it is mapped already.
    pub(crate) fn resident(&self, digest: &Digest) -> Option<Arc<Library>> {
        lock(&self.shared.libraries).get(digest).cloned()
    }

    /// Maps a stored artifact (or reuses it if it is resident): its bytes are read from the
    /// store and verified once more here, and those very bytes are mapped.
    pub(crate) fn map(&self, artifact: StoredArtifact) -> Result<Arc<Library>> {
        self.library(&artifact.digest)
    }

    /// Maps bytes read and verified by the store (or reuses the library if another thread just
    /// did), within the cap.
    fn map_bytes(&self, artifact: StoredArtifact, bytes: &[u8]) -> Result<Arc<Library>> {
        self.check_signature(&artifact)?;
        let digest = &artifact.digest;
        let mut libraries = lock(&self.shared.libraries);
        if let Some(library) = libraries.get(digest) {
            return Ok(library.clone());
        }
        let mut refused_mapped = lock(&self.shared.refused_mapped);
        let resident = libraries
            .values()
            .filter(|l| l.id() == artifact.metadata.id)
            .count()
            + refused_mapped
                .iter()
                .filter(|(d, id)| **id == artifact.metadata.id && *d != digest)
                .count();
        if resident >= self.shared.resident_cap {
            return Err(HostError::ResidentCap {
                plugin: artifact.metadata.id,
                version: artifact.metadata.version,
                resident,
                cap: self.shared.resident_cap,
            });
        }
        let id = artifact.metadata.id.clone();
        let opened = Library::open(bytes, &artifact.path, artifact.digest, artifact.metadata);
        let library = match opened {
            Ok(library) => Arc::new(library),
            Err(failure) => {
                if failure.mapped {
                    refused_mapped.insert(*digest, id);
                }
                return Err(failure.error);
            }
        };
        tracing::info!(
            plugin = library.id(),
            version = %library.version,
            digest = %library.digest.short(),
            memfd = library.memfd,
            "mapped plugin library"
        );
        libraries.insert(*digest, library.clone());
        Ok(library)
    }

    pub(crate) fn slot(&self, plugin: &str) -> Result<Arc<Slot>> {
        self.shared
            .slots
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(plugin)
            .cloned()
            .ok_or_else(|| HostError::NotLoaded {
                plugin: plugin.to_owned(),
            })
    }

    /// Every slot, loaded or not.
    pub(crate) fn slots(&self) -> Vec<Arc<Slot>> {
        self.shared
            .slots
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .values()
            .cloned()
            .collect()
    }

    /// Persists after a change of the committed set; a failure is logged and shown in status
    /// (the change itself stands: the host keeps serving it).
    pub(crate) fn persisted(&self, what: Result<()>) {
        let mut last = lock(&self.shared.persist_error);
        match what {
            Ok(()) => *last = None,
            Err(error) => {
                tracing::error!(
                    "cannot persist to the store, a restart would come back on the previous committed set: {error}"
                );
                *last = Some(error.to_string());
            }
        }
    }

    fn slot_or_new(&self, plugin: &str) -> Arc<Slot> {
        let mut slots = self
            .shared
            .slots
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        slots
            .entry(plugin.to_owned())
            .or_insert_with(|| {
                Arc::new(Slot::new(
                    plugin.to_owned(),
                    self.shared.clock.clone(),
                    self.shared.restraints.clone(),
                ))
            })
            .clone()
    }

    /// Loads a staged artifact into its (empty) slot with a config, fresh state.
    pub fn install(&self, artifact: &Digest, config: serde_json::Value) -> Result<Installed> {
        self.install_asked(
            artifact,
            config,
            &InstallTerms::default(),
            &Asked::default(),
        )
    }

    /// As [`install`](Self::install), as a client asked (its step id and origin recorded), on
    /// `terms`: its checkpointing and fail-closed setting are part of the install (applied
    /// with it, or not at all), and with a lease it is a step (see [`InstallTerms::lease`]).
    pub fn install_asked(
        &self,
        artifact: &Digest,
        config: serde_json::Value,
        terms: &InstallTerms,
        asked: &Asked,
    ) -> Result<Installed> {
        // Named by its artifact: its plugin id is known only once it is read (and hashed).
        self.shared.restraints.check(
            "install",
            &format!("artifact {}", artifact.short()),
            Some(artifact),
            asked.force.as_ref(),
            self.shared.clock.now(),
        )?;
        let installed = self.install_into(artifact, config.clone(), terms, asked)?;
        if terms.lease.is_some() {
            // Committed (written to the store) only by the step's commit.
            return Ok(installed);
        }
        self.record_install(&installed, config, terms, AppliedOperation::Install, asked);
        Ok(installed)
    }

    /// As [`install`](Self::install), by the host itself at its start (`plugsync host
    /// --load`): recorded as such, so a client tells it from its own installs. Not held back
    /// by a freeze: it only starts what the operator named.
    pub fn load(&self, artifact: &Digest, config: serde_json::Value) -> Result<Installed> {
        let (terms, asked) = (InstallTerms::default(), Asked::default());
        let installed = self.install_into(artifact, config.clone(), &terms, &asked)?;
        self.record_install(&installed, config, &terms, AppliedOperation::Load, &asked);
        Ok(installed)
    }

    /// Adds what was installed to the committed set, and writes its first checkpoint.
    fn record_install(
        &self,
        installed: &Installed,
        config: serde_json::Value,
        terms: &InstallTerms,
        operation: AppliedOperation,
        asked: &Asked,
    ) {
        let applied = self.applied(operation, asked, &installed.version, &config);
        let entry = CommittedPlugin {
            plugin: installed.plugin.clone(),
            version: installed.version.clone(),
            config,
            checkpoint_every_ms: terms.checkpoint_every.map(|every| every.as_millis() as u64),
            fail_closed: terms.fail_closed,
            applied: Some(applied),
        };
        let checkpoint = match terms.checkpoint_every {
            Some(_) => self.checkpoint_now(&installed.plugin),
            None => Ok(()),
        };
        self.persisted(checkpoint.and(self.update_committed(|set| {
            set.insert(entry.plugin.clone(), entry);
        })));
    }

    /// Installs without writing the committed set (recovery writes nothing while it reads it).
    pub(crate) fn install_unpersisted(
        &self,
        artifact: &Digest,
        config: serde_json::Value,
    ) -> Result<Installed> {
        self.install_into(
            artifact,
            config,
            &InstallTerms::default(),
            &Asked::default(),
        )
    }

    /// Creates the plugin's instance in its empty slot, with its settings; with a lease, as a
    /// pending step.
    fn install_into(
        &self,
        artifact: &Digest,
        config: serde_json::Value,
        terms: &InstallTerms,
        asked: &Asked,
    ) -> Result<Installed> {
        let library = self.library(artifact)?;
        let slot = self.slot_or_new(library.id());
        let _control = lock(&slot.control);
        if let Some(active) = &slot.state().active {
            return Err(HostError::AlreadyLoaded {
                plugin: slot.id.clone(),
                version: active.version().to_owned(),
            });
        }
        let config_bytes = serde_json::to_vec(&config).map_err(|e| HostError::BadConfig {
            plugin: slot.id.clone(),
            reason: e.to_string(),
        })?;
        let instance = Instance::create(library.clone(), &config_bytes)
            .map_err(|f| f.into_error(&library, "create"))?;
        let (lease_expires_at, described) = {
            let mut state = slot.state();
            if let Some(lease) = terms.lease {
                let now = self.shared.clock.now();
                let step_id = asked.step_id.clone();
                state.last_step = Some(StepRecord::of(
                    step_id.clone(),
                    &library,
                    now,
                    StepState::Pending,
                    None,
                ));
                state.step = Some(PendingStep {
                    previous: None,
                    step_id,
                    switched_seq: state.seq,
                    switched_at: now,
                    // Nothing ran before the install: there is nothing to replay calls into.
                    journal: Journal::new(0),
                    previous_fault: None,
                    fresh_state: false,
                    entry_sha256: (asked.origin.as_ref()).and_then(|o| o.entry_sha256.clone()),
                    watch: StepWatch::new(Some(lease), terms.soak.clone(), state.counters, now),
                });
            }
            state.active = Some(Active { instance, config });
            state.fault = None;
            state.checkpointing = terms.checkpoint_every.map(|every| Checkpointing {
                every,
                last: std::time::Instant::now(),
            });
            state.fail_closed = terms.fail_closed;
            let lease_expires_at = state
                .step
                .as_ref()
                .and_then(|step| step.watch.lease)
                .map(|(until, _)| until);
            (lease_expires_at, describe(&state))
        };
        // Seeded now, so that status has something to show even if the first call hangs.
        lock(&slot.last_known).status = described.map(|d| d.status(&slot.id));
        tracing::info!(plugin = %slot.id, version = %library.version, leased = terms.lease.is_some(), "installed");
        Ok(Installed {
            plugin: slot.id.clone(),
            version: VersionRef::of(&library),
            lease_expires_at,
        })
    }

    /// A handle for calling `plugin` on the hot path without a lookup.
    pub fn handle(&self, plugin: &str) -> Result<SlotHandle> {
        Ok(SlotHandle {
            slot: self.slot(plugin)?,
        })
    }

    /// Calls `plugin` once (looks the slot up; keep a [`SlotHandle`] on hot paths).
    pub fn call(&self, plugin: &str, input: &[u8]) -> Result<CallOutput, CallError> {
        self.handle(plugin)
            .map_err(|_| CallError::NotLoaded {
                plugin: plugin.to_owned(),
            })?
            .call(input)
    }

    /// Snapshots a plugin's state. Calls wait only while the state is copied (a clone); it is
    /// serialised after the slot is released.
    pub fn snapshot(&self, plugin: &str) -> Result<StateSnapshot> {
        let slot = self.slot(plugin)?;
        let taken = snapshot_of(&slot, true)?;
        taken.ok_or_else(|| HostError::NotLoaded {
            plugin: plugin.to_owned(),
        })
    }

    /// Restores a snapshot into the running instance, after checking its checksum and that it
    /// was taken from the same version.
    pub fn restore(&self, snapshot: &StateSnapshot) -> Result<()> {
        snapshot.verify()?;
        self.restore_bytes(
            &snapshot.plugin,
            Some(&snapshot.version),
            snapshot.state.as_bytes(),
        )
    }

    /// Restores raw state bytes (a migrated checkpoint) into the running instance of a plugin
    /// with no step pending.
    pub(crate) fn restore_state(&self, plugin: &str, bytes: &[u8]) -> Result<()> {
        self.restore_bytes(plugin, None, bytes)
    }

    /// Restores state bytes into the running instance, refused during a step and, with
    /// `taken_from`, unless that version is the one running.
    fn restore_bytes(
        &self,
        plugin: &str,
        taken_from: Option<&VersionRef>,
        bytes: &[u8],
    ) -> Result<()> {
        let slot = self.slot(plugin)?;
        let _control = lock(&slot.control);
        let mut state = slot.state();
        // A restore during a step would be invisible to the journal: a rollback by replay would
        // silently undo it.
        state.no_step_pending(plugin)?;
        let active = state.active.as_mut().ok_or_else(|| HostError::NotLoaded {
            plugin: plugin.to_owned(),
        })?;
        if let Some(taken_from) = taken_from
            && active.digest() != taken_from.digest
        {
            return Err(HostError::BadSnapshot {
                plugin: plugin.to_owned(),
                reason: format!(
                    "it was taken from {taken_from} but {} is running: migrate it instead",
                    VersionRef::of(active.library())
                ),
            });
        }
        let library = active.library().clone();
        active
            .instance
            .restore(bytes)
            .map_err(|f| f.into_error(&library, "restore"))?;
        // A verified state replaces whatever a panic left behind.
        state.fault = None;
        Ok(())
    }

    /// Takes a plugin's instance out of its slot without touching the committed set (a
    /// recovery that must not start it).
    pub(crate) fn evict(&self, plugin: &str) {
        let Ok(slot) = self.slot(plugin) else {
            return;
        };
        let _control = lock(&slot.control);
        let active = slot.state().active.take();
        lock(&slot.last_known).status = None;
        drop(active);
    }

    /// Commits the pending step of `plugin`: the previous instance is destroyed (its library
    /// stays mapped) and the journal dropped.
    ///
    /// What survives a restart is written checkpoint first, committed set second: a crash in
    /// between comes back on the previous version with its own checkpoint, and a failed
    /// checkpoint leaves an older one that recovery migrates forward (never a fresh state).
    pub fn commit(&self, plugin: &str) -> Result<VersionRef> {
        self.commit_owned(plugin, &Asked::default())
    }

    /// Commits the pending step of `plugin` as a client asked: with a step id, only if it is
    /// the pending step's (a client commits only the switch it made, never another client's,
    /// nor one made in process: [`HostError::StepNotOwned`]); the applied record keeps the
    /// step id and origin.
    pub fn commit_asked(&self, plugin: &str, asked: &Asked) -> Result<VersionRef> {
        self.commit_owned(plugin, asked)
    }

    fn commit_owned(&self, plugin: &str, asked: &Asked) -> Result<VersionRef> {
        let slot = self.slot(plugin)?;
        let _control = lock(&slot.control);
        let (step, committed, config, (checkpoint_every_ms, fail_closed)) = {
            let mut state = slot.state();
            check_owner(plugin, &state, asked.step_id.as_deref())?;
            let Some(active) = state.active.as_ref().filter(|_| state.step.is_some()) else {
                return Err(HostError::NoStepInProgress {
                    plugin: plugin.to_owned(),
                });
            };
            if let (Some(wanted), Some(step)) = (asked.min_calls, &state.step) {
                let served = state.seq - step.switched_seq;
                if served < wanted {
                    return Err(HostError::NotEnoughCalls {
                        plugin: plugin.to_owned(),
                        served,
                        wanted,
                    });
                }
            }
            let committed = VersionRef::of(active.library());
            let config = active.config.clone();
            if let Some(record) = &mut state.last_step {
                record.outcome = StepState::Committed;
            }
            // An install joins the committed set now, with the settings it was given.
            let settings = (
                state
                    .checkpointing
                    .as_ref()
                    .map(|c| c.every.as_millis() as u64),
                state.fail_closed,
            );
            (state.step.take(), committed, config, settings)
        };
        let install = step.as_ref().is_some_and(|step| step.previous.is_none());
        let fresh_state = step.as_ref().is_some_and(|step| step.fresh_state);
        // Destroy the previous instance and free the journal outside the slot lock.
        drop(step);
        tracing::info!(plugin, version = %committed, "committed");
        let checkpoint = self.write_checkpoint(&slot);
        if let Err(error) = &checkpoint {
            tracing::error!(plugin, "checkpoint at commit failed: {error}");
        }
        if let Err(error) = crate::failpoint::hit("commit.between-writes", self.store().root()) {
            tracing::error!(plugin, "{error}");
        }
        let operation = match install {
            true => AppliedOperation::Install,
            false => AppliedOperation::Commit,
        };
        let applied = AppliedRecord {
            fresh_state,
            ..self.applied(operation, asked, &committed, &config)
        };
        let entry_version = committed.clone();
        let written = self.update_committed(|set| match set.get_mut(plugin) {
            Some(entry) if !install => {
                entry.version = entry_version;
                entry.config = config;
                entry.applied = Some(applied);
            }
            // An install is committed whole, with the settings it was installed with (an
            // entry left by a recovery that could not start the plugin is replaced).
            _ if install => {
                let entry = CommittedPlugin {
                    plugin: plugin.to_owned(),
                    version: entry_version,
                    config,
                    checkpoint_every_ms,
                    fail_closed,
                    applied: Some(applied),
                };
                set.insert(plugin.to_owned(), entry);
            }
            _ => {}
        });
        self.persisted(written.and(checkpoint));
        Ok(committed)
    }

    /// Rolls the pending step of `plugin` back: by replay, else down-migration, else with an
    /// exact account of what was lost (see [`RollbackMethod`](crate::RollbackMethod)).
    pub fn rollback(&self, plugin: &str) -> Result<RollbackReport> {
        self.rollback_asked(plugin, &Asked::default())
    }

    /// Rolls the pending step of `plugin` back as a client asked: with a step id, only if it
    /// is the pending step's, as [`commit_asked`](Self::commit_asked) commits. The applied
    /// record says who rolled back (the committed version runs again).
    pub fn rollback_asked(&self, plugin: &str, asked: &Asked) -> Result<RollbackReport> {
        let slot = self.slot(plugin)?;
        let _control = lock(&slot.control);
        let mut state = slot.state();
        check_owner(plugin, &state, asked.step_id.as_deref())?;
        let Some((mut report, discarded)) =
            rollback::roll_back(&slot, &mut state, RollbackReason::Requested)
        else {
            return Err(HostError::NoStepInProgress {
                plugin: plugin.to_owned(),
            });
        };
        // Who asked, in the report status shows, set before the slot is let go: a reader never
        // sees the rollback without it.
        report.asked_by = asked.origin.clone();
        state.last_rollback = Some(report.clone());
        let config = state.active.as_ref().map(|active| active.config.clone());
        drop(state);
        drop(discarded);
        tracing::warn!(plugin, from = %report.from, to = %report.serving(), "rolled back");
        // The failed mark the rollback set, written now (a control thread may do I/O).
        if let Err(error) = self.shared.restraints.persist_if_dirty() {
            self.persisted(Err(error));
        }
        // An install rolled back leaves nothing running, and was never in the committed set.
        if let (Some(config), Some(to)) = (config, &report.to) {
            let applied = self.applied(AppliedOperation::Rollback, asked, to, &config);
            self.persisted(self.update_committed(|set| {
                if let Some(entry) = set.get_mut(plugin) {
                    entry.applied = Some(applied);
                }
            }));
        }
        Ok(report)
    }

    /// The record of `operation` applied as `asked`, leaving `version` with `config`.
    pub(crate) fn applied(
        &self,
        operation: AppliedOperation,
        asked: &Asked,
        version: &VersionRef,
        config: &serde_json::Value,
    ) -> AppliedRecord {
        AppliedRecord {
            operation,
            step_id: asked.step_id.clone(),
            version: version.clone(),
            config_hash: config_hash(config),
            origin: asked.origin.clone(),
            at: self.shared.clock.now(),
            fresh_state: false,
        }
    }

    /// Checks the health of what `plugin` runs: a slot faulted by a panic is unhealthy. During
    /// a step, a failed check rolls the step back (the error carries the report).
    pub fn check_health(&self, plugin: &str) -> Result<()> {
        let slot = self.slot(plugin)?;
        let _control = lock(&slot.control);
        let mut state = slot.state();
        let active = state.active.as_ref().ok_or_else(|| HostError::NotLoaded {
            plugin: plugin.to_owned(),
        })?;
        if let Some(fault) = &state.fault {
            return Err(HostError::Faulted {
                plugin: plugin.to_owned(),
                version: active.version().to_owned(),
                seq: fault.seq,
                message: fault.message.clone(),
            });
        }
        let Err(failure) = active.instance.health() else {
            return Ok(());
        };
        let library = active.library().clone();
        let reason = RollbackReason::HealthFailed {
            message: failure.message.clone(),
        };
        if let Some((report, discarded)) = rollback::roll_back(&slot, &mut state, reason) {
            drop(state);
            drop(discarded);
            tracing::error!(plugin, "{}", report.reason);
            return Err(HostError::RolledBack {
                plugin: plugin.to_owned(),
                version: library.metadata.version.clone(),
                report: Box::new(report),
            });
        }
        Err(failure.into_error(&library, "health"))
    }

    /// Unloads `plugin`: destroys its instances and forgets its version. The library stays
    /// mapped (never `dlclose`d) and is reused if the same digest is loaded again.
    pub fn unload(&self, plugin: &str) -> Result<VersionRef> {
        self.unload_asked(plugin, &Asked::default())
    }

    /// As [`unload`](Self::unload), as a client asked: refused while the host is frozen
    /// unless forced.
    pub fn unload_asked(&self, plugin: &str, asked: &Asked) -> Result<VersionRef> {
        self.shared.restraints.check(
            "unload",
            plugin,
            None,
            asked.force.as_ref(),
            self.shared.clock.now(),
        )?;
        let slot = self.slot(plugin)?;
        let _control = lock(&slot.control);
        let (active, step) = {
            let mut state = slot.state();
            let active = state.active.take().ok_or_else(|| HostError::NotLoaded {
                plugin: plugin.to_owned(),
            })?;
            state.checkpointing = None;
            let step = state.step.take();
            if step.is_some() {
                // The pending step ends with the plugin, neither committed nor rolled back: a
                // retry of its switch or install learns it is gone (`step_fate` says unknown).
                state.last_step = None;
            }
            (active, step)
        };
        let version = VersionRef::of(active.library());
        let applied = self.applied(AppliedOperation::Unload, asked, &version, &active.config);
        drop(step);
        drop(active);
        lock(&slot.last_known).status = None;
        tracing::info!(plugin, %version, "unloaded");
        self.persisted(
            self.update_committed(|set| {
                // A pending install was never in the set: its unload is recorded all the same.
                set.remove(plugin);
                lock(&self.shared.unloaded).insert(plugin.to_owned(), applied);
            })
            .and_then(|()| self.forget_checkpoint(plugin)),
        );
        Ok(version)
    }

    /// What the runtime runs now. Runs each plugin's health check.
    ///
    /// It answers promptly whatever a slot is doing: a slot whose lock stays held (a long or
    /// hung call, a switch under the lock) past a short wait is shown as it was last seen,
    /// marked `busy`, with the call watchdog's verdict.
    pub fn status(&self) -> RuntimeStatus {
        let deadline = std::time::Instant::now() + STATUS_WAIT;
        let mut plugins = Vec::new();
        for slot in self.slots() {
            let seen = loop {
                if let Some(state) = slot.try_state() {
                    let described = describe(&state);
                    drop(state);
                    let status = described.map(|d| d.status(&slot.id));
                    lock(&slot.last_known).status = status.clone();
                    break status;
                }
                if std::time::Instant::now() >= deadline {
                    break lock(&slot.last_known).status.clone().map(|mut status| {
                        status.busy = true;
                        status
                    });
                }
                std::thread::sleep(std::time::Duration::from_micros(50));
            };
            if let Some(mut status) = seen {
                status.stuck = lock(&slot.last_known).stuck.clone();
                plugins.push(status);
            }
        }
        let committed = lock(&self.shared.committed);
        for status in &mut plugins {
            status.applied = committed
                .get(&status.plugin)
                .and_then(|entry| entry.applied.clone());
        }
        drop(committed);
        let libraries = lock(&self.shared.libraries);
        let resident: Vec<ResidentLibrary> = libraries
            .values()
            .map(|l| ResidentLibrary {
                plugin: l.id().to_owned(),
                version: VersionRef::of(l),
                path: l.path.clone(),
                live_instances: l.live_instances(),
            })
            .collect();
        RuntimeStatus {
            abi: plugsync_plugin::abi::ABI_MAJOR,
            framework: FRAMEWORK_VERSION.to_owned(),
            now: self.shared.clock.now(),
            live_instances: resident.iter().map(|r| r.live_instances).sum(),
            plugins,
            resident,
            resident_cap: self.shared.resident_cap,
            recovered: lock(&self.shared.recovery).clone(),
            persist_error: lock(&self.shared.persist_error).clone(),
            lease: self.shared.lease.status(self.shared.clock.now()),
            restraints: self.shared.restraints.snapshot(),
            unloaded: self.unloaded_records(),
        }
    }

    /// Refuses `change` if it would leave a running plugin's declared dependency unmet (module
    /// `dependencies`), unless `force` gives a reason: then it is recorded as forced.
    pub fn check_dependencies(
        &self,
        operation: &str,
        change: PlannedChange<'_>,
        force: Option<&Force>,
    ) -> Result<()> {
        // What each slot runs, read without waiting and without the health checks a status
        // runs: a slot busy now (a long call) is taken as status last saw it. An install still
        // pending (with a lease) does not count: its lease may unload it, and a dependant
        // committed on it would be left with its requirement unmet.
        let running: Vec<PluginMetadata> = self
            .slots()
            .iter()
            .filter_map(|slot| match slot.try_state() {
                Some(state) => {
                    let installing = state.step.as_ref().is_some_and(|s| s.previous.is_none());
                    let active = state.active.as_ref().filter(|_| !installing)?;
                    Some(active.library().metadata.clone())
                }
                None => {
                    let known = lock(&slot.last_known);
                    let status = known.status.as_ref()?;
                    let installing =
                        (status.pending.as_ref()).is_some_and(|p| p.previous.is_none());
                    (!installing).then(|| status.metadata.clone())
                }
            })
            .collect();
        match (dependencies::check(&running, change), force) {
            (Ok(()), _) => Ok(()),
            (Err(error), Some(force)) if !force.reason.trim().is_empty() => {
                let plugin = match change {
                    PlannedChange::Run(metadata) => metadata.id.as_str(),
                    PlannedChange::Remove(plugin) => plugin,
                };
                tracing::warn!(plugin, "forced through a dependency: {error}");
                self.shared.restraints.record_forced(
                    operation,
                    plugin,
                    vec![Restraint::Dependency],
                    force,
                    self.shared.clock.now(),
                )
            }
            (Err(error), _) => Err(error),
        }
    }

    /// Freezes the host: switch, install and unload are refused unless forced.
    pub fn freeze(&self, reason: &str, by: &str) -> Result<()> {
        let because = self.because(reason, by)?;
        tracing::warn!(reason, by, "host frozen");
        self.shared.restraints.update(|r| {
            r.freeze = Some(because);
            Ok(())
        })
    }

    /// Lifts the freeze.
    pub fn unfreeze(&self, by: &str) -> Result<()> {
        tracing::warn!(by, "host unfrozen");
        self.shared.restraints.update(|r| {
            r.freeze = None;
            Ok(())
        })
    }

    /// Holds `plugin` at its running version: a switch of it is refused unless forced.
    /// `entry_sha256`, a client's fingerprint of the plugin's desired entry, lets clients lift
    /// the hold once that entry changes.
    pub fn hold(
        &self,
        plugin: &str,
        reason: &str,
        by: &str,
        entry_sha256: Option<&str>,
    ) -> Result<()> {
        let because = self.because_for(plugin, reason, by, entry_sha256)?;
        tracing::warn!(plugin, reason, by, "plugin held");
        self.shared.restraints.update(|r| {
            r.holds.insert(plugin.to_owned(), because);
            Ok(())
        })
    }

    /// Releases the hold on `plugin`.
    pub fn release_hold(&self, plugin: &str, by: &str) -> Result<()> {
        tracing::warn!(plugin, by, "hold released");
        self.shared.restraints.update(|r| {
            r.holds.remove(plugin);
            Ok(())
        })
    }

    /// Clears the failed mark of artifact `digest`: a switch to it is allowed again.
    pub fn clear_failed(&self, digest: &Digest, by: &str) -> Result<()> {
        tracing::warn!(%digest, by, "failed mark cleared");
        self.shared.restraints.update(|r| {
            let before = r.failed.len();
            r.failed.retain(|mark| mark.digest != *digest);
            if r.failed.len() == before {
                return Err(HostError::BadRestraint {
                    reason: format!("no failed mark on artifact {digest}: nothing to clear"),
                });
            }
            Ok(())
        })
    }

    /// Marks `plugin`'s artifact `digest` (its `version`) failed on a client's word: it failed a
    /// check the client ran before asking the host (a preflight). A switch or install of it is
    /// refused until the mark is cleared, as for the host's own marks.
    pub fn mark_failed(
        &self,
        plugin: &str,
        digest: &Digest,
        version: &str,
        reason: &str,
        by: &str,
        entry_sha256: Option<&str>,
    ) -> Result<()> {
        let because = self.because_for(plugin, reason, by, entry_sha256)?;
        tracing::warn!(plugin, %digest, version, reason = %because.reason, by = %because.by, "version marked failed");
        self.shared.restraints.update(|r| {
            add_failed(
                r,
                FailedMark {
                    plugin: plugin.to_owned(),
                    digest: *digest,
                    version: version.to_owned(),
                    because,
                },
            );
            Ok(())
        })
    }

    /// Halts `plugin`: it fails closed, every call refused at once with `reason`, until
    /// resumed. Kept across restarts.
    pub fn halt(&self, plugin: &str, reason: &str, by: &str) -> Result<()> {
        let slot = self.slot(plugin)?;
        let because = self.because(reason, by)?;
        let _control = lock(&slot.control);
        self.shared.restraints.update(|r| {
            r.halts.insert(plugin.to_owned(), because);
            Ok(())
        })?;
        slot.state().halted = Some(reason.to_owned());
        tracing::warn!(plugin, reason, by, "plugin halted: its calls are refused");
        Ok(())
    }

    /// Resumes a halted `plugin`: calls are served again.
    pub fn resume(&self, plugin: &str, by: &str) -> Result<()> {
        let slot = self.slot(plugin)?;
        let _control = lock(&slot.control);
        self.shared.restraints.update(|r| {
            r.halts.remove(plugin);
            Ok(())
        })?;
        slot.state().halted = None;
        tracing::warn!(plugin, by, "plugin resumed");
        Ok(())
    }

    /// A restraint on `plugin` (its id checked), set under a client's entry fingerprint.
    fn because_for(
        &self,
        plugin: &str,
        reason: &str,
        by: &str,
        entry_sha256: Option<&str>,
    ) -> Result<Because> {
        check_plugin_id(plugin)?;
        Ok(Because {
            entry_sha256: entry_sha256.map(str::to_owned),
            ..self.because(reason, by)?
        })
    }

    fn because(&self, reason: &str, by: &str) -> Result<Because> {
        if reason.trim().is_empty() || by.trim().is_empty() {
            return Err(HostError::BadRestraint {
                reason: "give a `reason` (it is shown to every client and operator)".into(),
            });
        }
        Ok(Because {
            reason: reason.to_owned(),
            by: by.to_owned(),
            at: self.shared.clock.now(),
            entry_sha256: None,
        })
    }

    /// Gives the reconcile lease to `owner` for `ttl_ms` (module `reconcile_lease`): refused
    /// while another client holds it.
    pub fn acquire_lease(&self, owner: &str, ttl_ms: u64) -> Result<LeaseHolder> {
        self.shared
            .lease
            .acquire(owner, ttl_ms, self.shared.clock.now())
    }

    /// Extends the lease `owner` holds at `epoch` to `ttl_ms` from now.
    pub fn renew_lease(&self, owner: &str, epoch: u64, ttl_ms: u64) -> Result<LeaseHolder> {
        self.shared
            .lease
            .renew(owner, epoch, ttl_ms, self.shared.clock.now())
    }

    /// Ends the lease `owner` holds at `epoch`.
    pub fn release_lease(&self, owner: &str, epoch: u64) -> Result<()> {
        self.shared
            .lease
            .release(owner, epoch, self.shared.clock.now())
    }

    /// Takes the lease from its holder on purpose, recorded with `by` and `reason`.
    pub fn break_lease(&self, by: &str, reason: &str) -> Result<LeaseBreak> {
        self.shared
            .lease
            .break_lease(by, reason, self.shared.clock.now())
    }

    /// Admits a mutating request from `client` carrying lease `epoch` (or none): refused while
    /// another client holds the lease, or when the epoch is not the holder's (or is, but
    /// `client` is not the holder); the lease cannot change hands until the guard is dropped.
    pub fn admit(&self, epoch: Option<u64>, client: Option<&str>) -> Result<LeaseGuard<'_>> {
        self.shared
            .lease
            .admit(epoch, client, self.shared.clock.now())
    }
}

/// How long a status waits, over all slots, for slots that are busy before it shows them as
/// last seen.
const STATUS_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// A snapshot of a slot's state; with `wait` false, `None` when the slot is busy now (the
/// steward never waits on a slot).
/// How a client asked for a change: the step id (which owns the step it switches) and who it
/// is. The runtime's own callers ask with neither.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Asked {
    /// The step id of the request.
    pub step_id: Option<String>,
    /// Who asked.
    pub origin: Option<Origin>,
    /// Go ahead despite the host's restraints (a freeze, a failed mark), for this reason.
    pub force: Option<Force>,
    /// Commit only once the new version has served at least this many calls since its switch
    /// (evidence, not just time: a soak outside trading hours sees none).
    pub min_calls: Option<u64>,
}

/// The sha256 of a config's canonical JSON, as status shows it.
pub(crate) fn config_hash(config: &serde_json::Value) -> Digest {
    Digest::of(&canonical_json(config).unwrap_or_default())
}

/// Refuses to end a pending step that is not step `step_id` (with `None`, any step may be
/// ended: the runtime's own callers own every step). No step pending is left to the caller's
/// own error.
fn check_owner(plugin: &str, state: &SlotState, step_id: Option<&str>) -> Result<()> {
    let (Some(wanted), Some(step)) = (step_id, &state.step) else {
        return Ok(());
    };
    if step.step_id.as_deref() == Some(wanted) {
        return Ok(());
    }
    Err(HostError::StepNotOwned {
        plugin: plugin.to_owned(),
        step_id: wanted.to_owned(),
        pending: step.step_id.clone(),
    })
}

/// What became of a step after its switch, as far as this host knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepFate {
    /// It is the plugin's pending step.
    Pending,
    /// It was committed.
    Committed,
    /// It was rolled back (asked for, or by the host).
    RolledBack,
    /// This host has no trace of it: it restarted since the switch (a pending step does not
    /// survive a restart: recovery starts from the committed set), or later steps of the
    /// plugin replaced what it knew.
    Unknown,
}

pub(crate) fn snapshot_of(slot: &Slot, wait: bool) -> Result<Option<StateSnapshot>> {
    let (copy, library, seq) = {
        let state = if wait {
            slot.state()
        } else {
            match slot.try_state() {
                Some(state) => state,
                None => return Ok(None),
            }
        };
        let active = state.active.as_ref().ok_or_else(|| HostError::NotLoaded {
            plugin: slot.id.clone(),
        })?;
        let copy = active
            .instance
            .copy_state()
            .map_err(|f| f.into_error(active.library(), "copy_state"))?;
        (copy, active.library().clone(), state.seq)
    };
    let bytes = copy
        .serialize()
        .map_err(|f| f.into_error(&library, "snapshot"))?;
    drop(copy);
    let (_, sha256) = state_checksum(&bytes).ok_or_else(|| HostError::BadSnapshot {
        plugin: slot.id.clone(),
        reason: "the plugin's snapshot is not JSON".into(),
    })?;
    Ok(Some(StateSnapshot {
        plugin: slot.id.clone(),
        version: VersionRef::of(&library),
        state_schema: library.metadata.state_schema,
        seq,
        state: String::from_utf8_lossy(&bytes).into_owned(),
        sha256,
    }))
}

/// What one slot runs, as read under its lock: clones only, and the health check (plugin
/// code, which runs only under the lock). [`Described::status`] makes it a status once the lock
/// is released: the config's hash (canonical JSON, then sha256) was ~85 % of the instructions
/// a status read held the slot for (callgrind: 14.8k of 17.3k), and callers wait for whatever
/// is done under the lock.
struct Described {
    library: Arc<Library>,
    config: serde_json::Value,
    health: Health,
    fault: Option<Fault>,
    counters: Counters,
    last_call_at: Option<HostTime>,
    pending: Option<PendingStatus>,
    last_step: Option<StepRecord>,
    last_rollback: Option<RollbackReport>,
    fail_closed: bool,
    swap_safe: SwapSafeAnswer,
}

impl Described {
    fn status(self, plugin: &str) -> PluginStatus {
        let library = &self.library;
        PluginStatus {
            plugin: plugin.to_owned(),
            version: VersionRef::of(library),
            config_hash: config_hash(&self.config),
            config: self.config,
            state_schema: library.metadata.state_schema,
            metadata: library.metadata.clone(),
            health: self.health,
            fault: self.fault,
            counters: self.counters,
            last_call_at: self.last_call_at,
            pending: self.pending,
            last_step: self.last_step,
            last_rollback: self.last_rollback,
            busy: false,
            stuck: None,
            applied: None,
            fail_closed: self.fail_closed,
            swap_safe: Some(self.swap_safe),
        }
    }
}

/// What one slot runs, read under its lock (runs the health check); `None` when empty.
fn describe(state: &SlotState) -> Option<Described> {
    let active = state.active.as_ref()?;
    Some(Described {
        library: active.library().clone(),
        config: active.config.clone(),
        health: match &state.fault {
            Some(fault) => Health::Unhealthy {
                reason: format!(
                    "faulted: it panicked in call #{} ({})",
                    fault.seq, fault.message
                ),
            },
            None => match active.instance.health() {
                Ok(()) => Health::Ok,
                Err(failure) => Health::Unhealthy {
                    reason: failure.message,
                },
            },
        },
        fault: state.fault.clone(),
        counters: state.counters,
        last_call_at: state.last_call_at,
        pending: state.step.as_ref().map(|step| PendingStatus {
            step_id: step.step_id.clone(),
            previous: step
                .previous
                .as_ref()
                .map(|previous| VersionRef::of(previous.library())),
            calls_since_switch: state.seq - step.switched_seq,
            journal_complete: step.journal.is_complete(),
            lease_expires_at: step.watch.lease.map(|(until, _)| until),
            soak: step.watch.soak.clone(),
        }),
        last_step: state.last_step.clone(),
        last_rollback: state.last_rollback.clone(),
        fail_closed: state.fail_closed,
        swap_safe: crate::swap::swap_safe(state, active),
    })
}
