//! `plugsync reconcile --dry-run`: what reconciling would do, in what order, and what it does to
//! the plugins' state — computed without touching the host.
//!
//! 1. **Read** plugins.yaml (every error at once, or nothing) and its `plugins.lock`: a lock
//!    made from this plugins.yaml is applied exactly; a stale one is an error (run
//!    `plugsync lock`: reconcile never writes the lock); with none, versions are resolved
//!    afresh and channels float; `--locked` requires a matching lock.
//! 2. **Index** each plugin's published versions from the registry; **resolve** (pure).
//! 3. **Observe** the host: its control API, a saved `plugsync status --output json`, or a
//!    runtime in this process (the demo's).
//! 4. **Plan** (pure): paths, order, waves, waits, refusals, drift.
//! 5. **Preview** each step that migrates state, on the real artifacts, in a child process of
//!    plugsync (never on the live host), when the observation has the plugins' states.
//! 6. **Render**: text for people or JSON (a contract: `plugsync schema plan`), and the plan
//!    saved with `--out` for `plugsync reconcile --plan`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use plugsync_host::Digest;

use crate::client::ControlClient;
use crate::error::{Error, Result};
use crate::observe::{self, Observation};
use crate::plan::{self, PlanDocument, SearchLimits};
use crate::registry;
use crate::resolve::{self, PluginsLock, Update};
use crate::spec::{self, Limits};

use super::lock::{indexes, read_lock};

/// Where the running state comes from.
// Not `PartialEq`: a runtime is a handle, with no equality of its own.
#[derive(Debug, Clone)]
pub enum Observe {
    /// The host's control API.
    Host {
        /// Its URL (`http://`, `https://` or `unix:PATH`).
        url: String,
        /// The file holding the bearer token.
        token_file: Option<PathBuf>,
        /// The CA an `https://` host's certificate must verify against.
        tls_ca: Option<PathBuf>,
    },
    /// A saved `plugsync status --output json [--with-state]`.
    File(PathBuf),
    /// A runtime in this process (a handle: the clone shares it), as `plugsync demo` runs.
    Runtime(plugsync_host::Runtime),
}

/// What `reconcile --dry-run` is asked.
#[derive(Debug, Clone)]
pub struct DryRunOptions {
    /// The plugins.yaml.
    pub file: PathBuf,
    /// Where the running state comes from.
    pub observe: Observe,
    /// Require a `plugins.lock` made from this plugins.yaml.
    pub locked: bool,
    /// Where plugsync keeps its state (artifacts fetched for previews: `DIR/cache`).
    pub state_dir: PathBuf,
    /// The publishers' public keys, when artifacts must be signed.
    pub trusted_keys: Option<PathBuf>,
    /// A CA an `https://` registry's certificate must verify against.
    pub registry_ca: Option<PathBuf>,
    /// Preview state migrations (needs the plugins' states; fetches the artifacts).
    pub preview: bool,
    /// How long one plugin's previews may take before the child is killed.
    pub preview_timeout: Duration,
    /// The plugsync executable that runs previews in a child process.
    pub exe: PathBuf,
    /// The time the plan is for (policy windows); `PLUGSYNC_NOW` in tests.
    pub now: Timestamp,
    /// How far the ordering search may go.
    pub limits: SearchLimits,
}

/// A computed dry run: the plan document, ready to print or save.
#[derive(Debug, Clone)]
pub struct DryRun {
    /// The plan, what it was computed from, its drift and previews.
    pub document: PlanDocument,
}

impl DryRun {
    /// The exit code `plugsync reconcile --dry-run` ends with: 0 in sync, 2 changes pending.
    pub fn exit_code(&self) -> u8 {
        if self.document.plan.in_sync() { 0 } else { 2 }
    }

    /// The document as text, coloured when `styled`.
    pub fn text(&self, styled: bool) -> String {
        crate::render::plan_text(&self.document, styled)
    }

    /// The document as JSON.
    pub fn json(&self) -> String {
        crate::render::plan_json(&self.document)
    }
}

/// Computes the plan `reconcile` would apply, without touching the host (see the module docs).
pub fn dry_run(options: &DryRunOptions) -> Result<DryRun> {
    let inputs = Inputs::read(
        &options.file,
        options.locked,
        options.registry_ca.as_deref(),
    )?;
    let observation = observe(&options.observe, options.preview)?;
    let mut document = inputs.plan(observation.clone(), options.now, options.limits)?;
    if options.preview {
        document.previews = super::preview::previews(
            &document.plan,
            &observation,
            inputs.registry.as_deref(),
            &inputs.index,
            &super::preview::PreviewContext {
                state_dir: &options.state_dir,
                trusted_keys: options.trusted_keys.as_deref(),
                timeout: options.preview_timeout,
                exe: &options.exe,
            },
        );
    }
    Ok(DryRun { document })
}

/// A plugins.yaml read and valid (with the files it extends), and where each of its files
/// came from in git when it was read.
#[derive(Debug, Clone)]
pub struct DesiredState {
    /// What it asks (its `file`'s directory is where the lock and a relative registry are).
    pub desired: spec::Desired,
    /// The sha256 of `plugins.lock` beside it when read (`None`: no lock): a new lock changes
    /// the versions applied as surely as an edit.
    pub lock_sha256: Option<Digest>,
    /// Where each file of it came from in git.
    pub provenance: Vec<spec::provenance::FileProvenance>,
}

impl DesiredState {
    /// Reads and checks plugins.yaml: every error at once, rendered with `file:line:column`.
    pub fn read(file: &Path) -> Result<DesiredState> {
        let desired =
            spec::load(file, &Limits::default()).map_err(|report| Error::InvalidDesiredState {
                report: report.render(false),
            })?;
        let provenance = spec::provenance::of_files(&desired.files);
        let lock_path = file.parent().unwrap_or(Path::new("")).join("plugins.lock");
        let lock_sha256 = match std::fs::read(&lock_path) {
            Ok(bytes) => Some(Digest::of(&bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => {
                return Err(Error::Io {
                    action: "read",
                    path: lock_path,
                    source,
                });
            }
        };
        Ok(DesiredState {
            lock_sha256,
            desired,
            provenance,
        })
    }

    /// The sha256 of everything it asks, merged (versions, configs, strategies, policy), and
    /// of its lock: a comment, a reordering of keys or a move of a setting into a base file
    /// keeps it, any change of meaning does not.
    pub fn sha256(&self) -> Digest {
        // Its maps are `BTreeMap`s keyed by strings: the JSON is canonical, and cannot fail.
        let mut bytes = serde_json::to_vec(&self.desired.set)
            .expect("a plugins.yaml's model serialises (every map is keyed by strings)");
        if let Some(lock) = &self.lock_sha256 {
            bytes.extend_from_slice(lock.to_string().as_bytes());
        }
        Digest::of(&bytes)
    }

    /// The commit plugins.yaml itself was read at (hex), and whether the file differs from
    /// it; `None` outside git (or before the first commit).
    pub fn commit(&self) -> Option<(&str, bool)> {
        match &self.provenance.first()?.git {
            spec::provenance::Git::Repository { commit, state, .. } => Some((
                commit.as_deref()?,
                *state != spec::provenance::FileState::Clean,
            )),
            _ => None,
        }
    }
}

/// What a plan is computed from, besides the host: plugins.yaml, its lock, the registry's
/// index, and the versions resolved from them.
pub(super) struct Inputs {
    pub desired: spec::Desired,
    pub lock: Option<PluginsLock>,
    pub registry: Option<Box<dyn registry::Registry>>,
    pub index: BTreeMap<String, registry::IndexFile>,
    pub resolution: resolve::Resolution,
    /// plugins.yaml's own entries, which the host's holds and failed marks are judged by
    /// (the desired set's, but for a manual rollback, which plans from a set of its own).
    pub of_record: Vec<spec::model::PluginSpec>,
    /// Where each file of the desired state came from in git, read with it.
    pub provenance: Vec<spec::provenance::FileProvenance>,
}

impl Inputs {
    /// Reads plugins.yaml (every error at once), its lock (checked: see [`check_lock`]), the
    /// registry's index of the plugins it names, and resolves; and where each file of the
    /// desired state comes from in git (never an error: see `spec::provenance`).
    pub fn read(file: &Path, locked: bool, registry_ca: Option<&Path>) -> Result<Inputs> {
        Inputs::resolve(DesiredState::read(file)?, locked, registry_ca)
    }

    /// The inputs of a plan from a desired state already read: its lock, the registry's index
    /// and the resolution are read now (the sidecar plans from the last good plugins.yaml while
    /// the file on disk is invalid).
    pub fn resolve(
        desired: DesiredState,
        locked: bool,
        registry_ca: Option<&Path>,
    ) -> Result<Inputs> {
        let DesiredState {
            desired,
            provenance,
            ..
        } = desired;
        let set = &desired.set;
        let dir = desired.file.parent().unwrap_or(Path::new(""));
        let lock_path = dir.join("plugins.lock");
        let lock = read_lock(&lock_path)?;
        let desired_sha256 = resolve::desired_sha256(set);
        check_lock(&lock_path, lock.as_ref(), desired_sha256, locked)?;

        let (registry, index) = match &set.spec.registry {
            Some(spec_registry) => {
                let registry = registry::open(&spec_registry.url, dir, registry_ca)?;
                let index = indexes(
                    registry.as_ref(),
                    set.spec.plugins.iter().map(|p| p.id.clone()),
                )?;
                (Some(registry), index)
            }
            None => (None, BTreeMap::new()),
        };
        let resolution = resolve::resolve(set, &index, lock.as_ref(), &Update::None)
            .map_err(|error| Error::Resolve(Box::new(error)))?;
        Ok(Inputs {
            of_record: desired.set.spec.plugins.clone(),
            desired,
            lock,
            registry,
            index,
            resolution,
            provenance,
        })
    }

    /// The plan against `observation` at `now` (pure), as a document.
    pub fn plan(
        &self,
        observation: Observation,
        now: Timestamp,
        limits: SearchLimits,
    ) -> Result<PlanDocument> {
        let input = plan::PlanInput {
            set: &self.desired.set,
            resolution: &self.resolution,
            index: &self.index,
            running: &observation.running.status,
            of_record: &self.of_record,
            now,
            limits,
        };
        let computed = plan::plan(&input).map_err(|error| Error::Plan(Box::new(error)))?;
        Ok(PlanDocument::new(
            &self.desired,
            self.lock.as_ref(),
            &observation,
            computed,
        ))
    }
}

/// A lock binds only when made from this plugins.yaml: a stale one is refused, not re-resolved
/// (reconcile applies what was reviewed, or nothing).
fn check_lock(
    path: &Path,
    lock: Option<&PluginsLock>,
    desired: Digest,
    locked: bool,
) -> Result<()> {
    match lock {
        Some(lock) if lock.desired_sha256 != desired => Err(Error::StaleLock {
            path: path.to_owned(),
        }),
        None if locked => Err(Error::NoLock {
            path: path.to_owned(),
        }),
        _ => Ok(()),
    }
}

fn observe(source: &Observe, with_state: bool) -> Result<Observation> {
    match source {
        Observe::Host {
            url,
            token_file,
            tls_ca,
        } => {
            let client = ControlClient::new(Some(url), token_file.as_deref(), tls_ca.as_deref())?;
            observe::from_host(&client, with_state)
        }
        Observe::File(path) => observe::from_file(path),
        Observe::Runtime(runtime) => observe::from_runtime(runtime, with_state),
    }
}
