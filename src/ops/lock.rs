//! `plugsync lock`: resolve a plugins.yaml against its registry, fetch and verify each chosen
//! artifact into the local cache, and write `plugins.lock` beside the file.
//!
//! 1. **Read** plugins.yaml (every error at once, or nothing).
//! 2. **Index**: the index of each plugin it names, and of every plugin their versions depend
//!    on, from the registry (a directory, or over HTTP(S)).
//! 3. **Resolve** (pure: `resolve::resolve`), against the current lock.
//! 4. **Fetch and verify** each chosen artifact into `STATE_DIR/cache`: its sha256 (the
//!    index's), its metadata (the plugin and version the index says), and, with trusted keys,
//!    its signature. Nothing is written to the lock before every artifact passed.
//! 5. **Write** `plugins.lock` (whole, renamed into place) — or, with `--locked`, refuse if it
//!    would change.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};

use plugsync_host::{ArtifactStore, LoadPolicy, StoredArtifact, TrustedKeys};

use crate::error::{Error, Result};
use crate::registry::{self, IndexEntry, IndexFile, Registry};
use crate::resolve::{self, LockChange, PluginsLock, Resolved, Update};
use crate::spec::{self, Limits};

/// What `lock` is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockOptions {
    /// The plugins.yaml.
    pub file: PathBuf,
    /// Which locked versions may move.
    pub update: Update,
    /// Refuse to change the lock (CI: the lock committed must be the one plugins.yaml gives).
    pub locked: bool,
    /// Where the artifact cache is (`STATE_DIR/cache`).
    pub state_dir: PathBuf,
    /// Keys whose signatures artifacts must carry (never from plugins.yaml: anyone who can
    /// commit could add one).
    pub trusted_keys: Option<PathBuf>,
    /// A CA (PEM) an `https://` registry's certificate must verify against, instead of the
    /// webpki roots.
    pub registry_ca: Option<PathBuf>,
}

/// What `lock` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockOutcome {
    /// The lock file.
    pub path: PathBuf,
    /// Each plugin resolved.
    pub plugins: Vec<Resolved>,
    /// What changed in the lock (nothing: it was current).
    pub changes: Vec<LockChange>,
}

impl LockOutcome {
    /// What to print: each plugin, then what changed.
    pub fn render(&self) -> String {
        let width = self.plugins.iter().map(|p| p.id.len()).max().unwrap_or(0);
        let mut out = String::new();
        for plugin in &self.plugins {
            out.push_str(&format!(
                "  {:width$}  {:<12} sha256 {}  {}{}\n",
                plugin.id,
                plugin.version.to_string(),
                plugin.sha256.short(),
                plugin.why,
                if plugin.signature.is_some() {
                    ", signed"
                } else {
                    ""
                },
            ));
        }
        let name = self.path.display();
        match self.changes.len() {
            0 => out.push_str(&format!("{name} is up to date\n")),
            n => {
                out.push_str(&format!(
                    "wrote {name} ({n} change{}):\n",
                    if n == 1 { "" } else { "s" }
                ));
                for change in &self.changes {
                    out.push_str(&format!("  {change}\n"));
                }
            }
        }
        out
    }
}

/// Resolves, fetches and verifies, and writes the lock (see the module docs).
pub fn lock(options: &LockOptions) -> Result<LockOutcome> {
    let desired = spec::load(&options.file, &Limits::default()).map_err(|report| {
        Error::InvalidDesiredState {
            report: report.render(false),
        }
    })?;
    let set = &desired.set;
    let dir = options.file.parent().unwrap_or(Path::new(""));
    let path = dir.join("plugins.lock");
    let url = set
        .spec
        .registry
        .as_ref()
        .map(|registry| registry.url.clone())
        .ok_or_else(|| {
            Error::Resolve(Box::new(resolve::ResolveError::NoRegistry {
                plugin: set
                    .spec
                    .plugins
                    .first()
                    .map(|p| p.id.clone())
                    .unwrap_or_default(),
            }))
        })?;
    let registry = registry::open(&url, dir, options.registry_ca.as_deref())?;
    let index = indexes(
        registry.as_ref(),
        set.spec.plugins.iter().map(|p| p.id.clone()),
    )?;
    let current = read_lock(&path)?;
    let resolution = resolve::resolve(set, &index, current.as_ref(), &options.update)
        .map_err(|error| Error::Resolve(Box::new(error)))?;
    let new = resolution.lock();
    let changes = resolve::lock_changes(current.as_ref(), &new);
    if options.locked && (current.is_none() || !changes.is_empty()) {
        let mut said: Vec<String> = changes.iter().map(ToString::to_string).collect();
        if current.is_none() {
            said.insert(0, "there is no lock yet".to_owned());
        }
        return Err(Error::LockWouldChange {
            path,
            changes: said,
        });
    }
    let keys = match &options.trusted_keys {
        Some(file) => TrustedKeys::load(file)?,
        None if set.spec.policy.require_signatures => {
            return Err(Error::SignaturesNeedKeys {
                file: options.file.clone(),
            });
        }
        None => TrustedKeys::none(),
    };
    fetch(
        registry.as_ref(),
        &index,
        &resolution.plugins,
        &options.state_dir,
        keys,
    )?;
    if current.is_none() || !changes.is_empty() {
        write_lock(&path, &new)?;
    }
    Ok(LockOutcome {
        path,
        plugins: resolution.plugins,
        changes,
    })
}

/// The indexes of `plugins` and of every plugin their published versions depend on.
pub(super) fn indexes(
    registry: &dyn Registry,
    plugins: impl Iterator<Item = String>,
) -> Result<BTreeMap<String, IndexFile>> {
    let mut found = BTreeMap::new();
    let mut queue: VecDeque<String> = plugins.collect();
    while let Some(plugin) = queue.pop_front() {
        if found.contains_key(&plugin) {
            continue;
        }
        let Some(index) = registry.index(&plugin)? else {
            // Resolution names what is missing, and who asked for it.
            continue;
        };
        for entry in &index.versions {
            queue.extend(entry.dependencies.keys().cloned());
        }
        found.insert(plugin, index);
    }
    Ok(found)
}

/// Each resolved artifact in the cache: fetched unless already there, its sha256, metadata and
/// (with keys) signature verified.
fn fetch(
    registry: &dyn Registry,
    index: &BTreeMap<String, IndexFile>,
    plugins: &[Resolved],
    state_dir: &Path,
    keys: TrustedKeys,
) -> Result<()> {
    let cache = ArtifactCache::open(state_dir, keys)?;
    for plugin in plugins {
        let entry = index
            .get(&plugin.id)
            .and_then(|i| i.versions.iter().find(|e| e.sha256 == plugin.sha256))
            .ok_or_else(|| {
                Error::Resolve(Box::new(resolve::ResolveError::NotPublished {
                    plugin: plugin.id.clone(),
                }))
            })?;
        cache.verified(registry, &plugin.id, entry)?;
    }
    Ok(())
}

/// The artifact cache, `STATE_DIR/cache`: what `lock` fetched and the dry run's previews run.
pub(super) struct ArtifactCache {
    store: ArtifactStore,
    keys: TrustedKeys,
}

impl ArtifactCache {
    /// The cache under `state_dir`, checking signatures against `keys` (none: not checked).
    pub(super) fn open(state_dir: &Path, keys: TrustedKeys) -> Result<ArtifactCache> {
        let store = ArtifactStore::open(
            state_dir.join("cache"),
            LoadPolicy {
                trusted_keys: keys.clone(),
                ..LoadPolicy::default()
            },
        )?;
        Ok(ArtifactCache { store, keys })
    }

    /// `plugin`'s artifact of index `entry`: from the cache, else fetched from `registry` and
    /// stored; either way its sha256, its own metadata (the plugin and version the index says)
    /// and, with keys, its signature verified.
    pub(super) fn verified(
        &self,
        registry: &dyn Registry,
        plugin: &str,
        entry: &IndexEntry,
    ) -> Result<StoredArtifact> {
        let not_signed = |signed: bool| Error::NotSignedByTrustedKey {
            plugin: plugin.to_owned(),
            version: entry.version.clone(),
            sha256: entry.sha256,
            signed,
        };
        let artifact = match self.store.get(&entry.sha256) {
            Ok(artifact) => artifact,
            Err(_) => {
                // Checked before anything is fetched or stored.
                if !self.keys.is_empty() && entry.signature.is_none() {
                    return Err(not_signed(false));
                }
                let bytes = registry.artifact(plugin, entry)?;
                let name = entry.file.rsplit('/').next().unwrap_or(&entry.file);
                self.store
                    .put_signed(name, &bytes, &entry.sha256, entry.signature.as_deref())
                    .map_err(|error| match error {
                        plugsync_host::HostError::BadSignature { .. } => not_signed(true),
                        other => other.into(),
                    })?
            }
        };
        // The index could lie about what an artifact is: its own metadata decides.
        let metadata = &artifact.metadata;
        if metadata.id != plugin || metadata.version != entry.version {
            return Err(Error::ArtifactIsNot {
                plugin: plugin.to_owned(),
                version: entry.version.clone(),
                found: format!("{} {}", metadata.id, metadata.version),
                sha256: entry.sha256,
            });
        }
        // `put_signed` checks a signature given; with keys, one must be given.
        (self.keys)
            .check_artifact(metadata, &entry.sha256, entry.signature.as_deref())
            .map_err(|_| not_signed(entry.signature.is_some()))?;
        Ok(artifact)
    }
}

pub(super) fn read_lock(path: &Path) -> Result<Option<PluginsLock>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                action: "read",
                path: path.to_owned(),
                source,
            });
        }
    };
    serde_json::from_str(&text)
        .map(Some)
        .map_err(|e| Error::BadLock {
            path: path.to_owned(),
            reason: e.to_string(),
        })
}

/// Writes the lock whole, as the registry writes its index (an exclusively created file
/// beside, fsynced, renamed over the old one, the directory fsynced).
fn write_lock(path: &Path, lock: &PluginsLock) -> Result<()> {
    let mut text = serde_json::to_string_pretty(lock).map_err(|e| Error::BadLock {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;
    text.push('\n');
    Ok(registry::write_atomic(path, text.as_bytes(), 0o644)?)
}

/// Where the sidecar's state is by default: `$XDG_STATE_HOME/plugsync`, else
/// `~/.local/state/plugsync`, else `.plugsync-state` here.
pub fn default_state_dir() -> PathBuf {
    if let Some(state) = std::env::var_os("XDG_STATE_HOME").filter(|s| !s.is_empty()) {
        return PathBuf::from(state).join("plugsync");
    }
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => PathBuf::from(home).join(".local/state/plugsync"),
        None => PathBuf::from(".plugsync-state"),
    }
}
