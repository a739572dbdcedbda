//! A registry in a directory: read by resolution, changed by `publish`, `promote` and `yank`.
//!
//! Every change is made holding `.publish.lock` (an advisory lock on the file, `flock`), and
//! lands by rename: an artifact is written beside and renamed into place before the index
//! names it, and the index is rewritten whole, fsynced, and renamed over the old one. So two
//! publishers at once — two processes, or two machines on a shared file system that honours
//! `flock` — lose nothing, and a reader never sees a half-written index or an index naming an
//! artifact that is not there yet.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

use ed25519_dalek::{Signer, SigningKey};
use plugsync_host::Digest;

use super::error::RegistryError;
use super::index::{IndexEntry, IndexFile};
use crate::spec::model::{Channel, Migration};

/// A registry directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectoryRegistry {
    root: PathBuf,
}

/// What `publish` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Plugin id.
    pub plugin: String,
    /// Version.
    pub version: String,
    /// The artifact's sha256.
    pub sha256: Digest,
    /// Its channel.
    pub channel: Channel,
    /// Whether it was signed.
    pub signed: bool,
    /// `false` when the same bytes were already published there (nothing changed).
    pub new: bool,
}

impl DirectoryRegistry {
    /// The registry in `root` (created by the first `publish`).
    pub fn new(root: impl Into<PathBuf>) -> DirectoryRegistry {
        DirectoryRegistry { root: root.into() }
    }

    /// Where it is.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn index_path(&self, plugin: &str) -> Result<PathBuf, RegistryError> {
        check_id(plugin)?;
        Ok(self.root.join("index").join(format!("{plugin}.json")))
    }

    /// The index of `plugin`, if it was ever published here.
    pub fn index(&self, plugin: &str) -> Result<Option<IndexFile>, RegistryError> {
        let path = self.index_path(plugin)?;
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => return Err(RegistryError::io("read", &path, source)),
        };
        let index: IndexFile =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::BadIndex {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        if index.plugin != plugin {
            return Err(RegistryError::BadIndex {
                path,
                reason: format!("it is the index of `{}`", index.plugin),
            });
        }
        for entry in &index.versions {
            checked_relative(&entry.file)?;
        }
        Ok(Some(index))
    }

    /// Every plugin's index, by id.
    pub fn indexes(&self) -> Result<BTreeMap<String, IndexFile>, RegistryError> {
        let dir = self.root.join("index");
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                return Ok(BTreeMap::new());
            }
            Err(source) => return Err(RegistryError::io("read", &dir, source)),
        };
        let mut indexes = BTreeMap::new();
        for entry in entries {
            let path = entry
                .map_err(|e| RegistryError::io("read", &dir, e))?
                .path();
            let Some(plugin) = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".json"))
            else {
                continue;
            };
            if let Some(index) = self.index(plugin)? {
                indexes.insert(plugin.to_owned(), index);
            }
        }
        Ok(indexes)
    }

    /// The bytes of a published artifact, checked against the sha256 its entry records.
    pub fn artifact(&self, plugin: &str, entry: &IndexEntry) -> Result<Vec<u8>, RegistryError> {
        let path = self.root.join(checked_relative(&entry.file)?);
        let bytes = fs::read(&path).map_err(|e| RegistryError::io("read", &path, e))?;
        entry.check(plugin, bytes)
    }

    /// Publishes a built library on `channel`: reads its metadata without running it, hashes
    /// it, signs it with `key` if given, and adds it to the index. Publishing the same bytes
    /// again changes nothing; other bytes under a published version are refused.
    pub fn publish(
        &self,
        library: &Path,
        channel: Channel,
        key: Option<&SigningKey>,
    ) -> Result<Published, RegistryError> {
        self.publish_with(library, channel, key, Vec::new())
    }

    /// As [`publish`](Self::publish), with declarative migrations published beside the version
    /// (used where the plugin declares none between two versions).
    pub fn publish_with(
        &self,
        library: &Path,
        channel: Channel,
        key: Option<&SigningKey>,
        migrations: Vec<Migration>,
    ) -> Result<Published, RegistryError> {
        let bytes = fs::read(library).map_err(|e| RegistryError::io("read", library, e))?;
        let metadata = plugsync_host::inspect_bytes(&library.display().to_string(), &bytes)?;
        check_id(&metadata.id)?;
        let version =
            semver::Version::parse(&metadata.version).map_err(|e| RegistryError::BadVersion {
                plugin: metadata.id.clone(),
                version: metadata.version.clone(),
                reason: e.to_string(),
            })?;
        // `1.0.0+a` and `1.0.0+b` are the same version to every requirement: two builds under
        // one version would make "a published version never changes" a matter of spelling.
        if !version.build.is_empty() {
            return Err(RegistryError::BadVersion {
                plugin: metadata.id.clone(),
                version: metadata.version.clone(),
                reason: "a registry version carries no build metadata (`+...`)".to_owned(),
            });
        }
        let file_name = library
            .file_name()
            .and_then(|n| n.to_str())
            .filter(|n| !n.starts_with('.'))
            .ok_or_else(|| RegistryError::EscapesRegistry {
                path: library.display().to_string(),
            })?
            .to_owned();
        let sha256 = Digest::of(&bytes);
        let signature = key.map(|key| {
            let payload =
                plugsync_host::signature_payload(&metadata.id, &metadata.version, &sha256);
            hex(&key.sign(&payload).to_bytes())
        });
        let _lock = self.lock()?;
        let mut index = self.index(&metadata.id)?.unwrap_or_else(|| IndexFile {
            plugin: metadata.id.clone(),
            versions: Vec::new(),
        });
        if let Some(published) = index
            .versions
            .iter()
            .find(|e| e.version == metadata.version)
            .cloned()
        {
            if published.sha256 != sha256 {
                return Err(RegistryError::Republished {
                    plugin: metadata.id.clone(),
                    version: metadata.version.clone(),
                    published: published.sha256,
                    given: sha256,
                });
            }
            if published.channel != channel {
                return Err(RegistryError::PublishedOnAnotherChannel {
                    plugin: metadata.id.clone(),
                    version: metadata.version.clone(),
                    channel: published.channel.name(),
                    asked: channel.name(),
                });
            }
            // The same bytes, published unsigned, now given a signature: it is added (the
            // bytes it vouches for are those already published).
            let signed_now = published.signature.is_none() && signature.is_some();
            if signed_now && let Some(signature) = &signature {
                let path = self.root.join(checked_relative(&published.file)?);
                let sig_name = format!(
                    "{}.sig",
                    path.file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or(&file_name)
                );
                write_atomic(
                    &path.with_file_name(sig_name),
                    format!("{signature}\n").as_bytes(),
                    0o444,
                )?;
                for entry in &mut index.versions {
                    if entry.version == metadata.version {
                        entry.signature = Some(signature.clone());
                    }
                }
                self.write_index(&index)?;
            }
            return Ok(Published {
                plugin: metadata.id.clone(),
                version: metadata.version.clone(),
                sha256,
                channel,
                signed: published.signature.is_some() || signed_now,
                new: signed_now,
            });
        }
        let relative = format!("artifacts/{}/{}/{file_name}", metadata.id, metadata.version);
        let path = self.root.join(&relative);
        write_atomic(&path, &bytes, 0o444)?;
        if let Some(signature) = &signature {
            write_atomic(
                &path.with_file_name(format!("{file_name}.sig")),
                format!("{signature}\n").as_bytes(),
                0o444,
            )?;
        }
        let entry = IndexEntry {
            migrations,
            ..IndexEntry::of(&metadata, sha256, relative, channel, signature)
        };
        index.versions.push(entry);
        index.versions.sort_by(|a, b| {
            let parse = |v: &str| semver::Version::parse(v).ok();
            parse(&a.version).cmp(&parse(&b.version))
        });
        self.write_index(&index)?;
        Ok(Published {
            plugin: metadata.id,
            version: metadata.version,
            sha256,
            channel,
            signed: key.is_some(),
            new: true,
        })
    }

    /// Moves a published version to `channel` (no rebuild: the same bytes). Returns the
    /// channel it was on.
    pub fn promote(
        &self,
        plugin: &str,
        version: &str,
        channel: Channel,
    ) -> Result<Channel, RegistryError> {
        self.change(plugin, version, |entry| {
            let was = entry.channel;
            entry.channel = channel;
            was
        })
    }

    /// Withdraws a version from resolution (`yanked: true`), or restores it. A lock that names
    /// a yanked version still installs it. Returns whether it was yanked before.
    pub fn yank(&self, plugin: &str, version: &str, yanked: bool) -> Result<bool, RegistryError> {
        self.change(plugin, version, |entry| {
            std::mem::replace(&mut entry.yanked, yanked)
        })
    }

    /// Changes one entry under the lock, and writes the index.
    fn change<T>(
        &self,
        plugin: &str,
        version: &str,
        change: impl FnOnce(&mut IndexEntry) -> T,
    ) -> Result<T, RegistryError> {
        let _lock = self.lock()?;
        let mut index = self
            .index(plugin)?
            .ok_or_else(|| RegistryError::NoSuchPlugin {
                plugin: plugin.to_owned(),
                registry: self.root.clone(),
            })?;
        let known: Vec<String> = index.versions.iter().map(|e| e.version.clone()).collect();
        let entry = (index.versions.iter_mut())
            .find(|e| e.version == version)
            .ok_or_else(|| RegistryError::NoSuchVersion {
                plugin: plugin.to_owned(),
                version: version.to_owned(),
                known,
            })?;
        let was = change(entry);
        self.write_index(&index)?;
        Ok(was)
    }

    /// Takes the registry's publish lock (waiting for another publisher to finish).
    fn lock(&self) -> Result<File, RegistryError> {
        fs::create_dir_all(&self.root).map_err(|e| RegistryError::io("create", &self.root, e))?;
        let path = self.root.join(".publish.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| RegistryError::io("open", &path, e))?;
        file.lock()
            .map_err(|e| RegistryError::io("lock", &path, e))?;
        Ok(file)
    }

    fn write_index(&self, index: &IndexFile) -> Result<(), RegistryError> {
        let path = self.index_path(&index.plugin)?;
        let mut text =
            serde_json::to_string_pretty(index).map_err(|e| RegistryError::BadIndex {
                path: path.clone(),
                reason: e.to_string(),
            })?;
        text.push('\n');
        write_atomic(&path, text.as_bytes(), 0o644)
    }
}

/// A plugin id safe in a path (the host's rule: `[a-z][a-z0-9_]{0,63}`).
fn check_id(plugin: &str) -> Result<(), RegistryError> {
    plugsync_host::check_plugin_id(plugin).map_err(|_| RegistryError::BadPluginId {
        plugin: plugin.escape_debug().to_string(),
    })
}

/// A path from an index, refused if it could leave the registry: absolute, `..`, or outside
/// `artifacts/`.
pub(crate) fn checked_relative(file: &str) -> Result<&Path, RegistryError> {
    let path = Path::new(file);
    let plain = path.components().all(|c| matches!(c, Component::Normal(_)));
    // Only characters that mean the same in a path and in a URL (no `%` escapes, which a URL
    // would decode to `..`; no `\\`, `?` or `#`).
    let charset = file
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"._+-/".contains(&b));
    if !plain || !charset || !file.starts_with("artifacts/") {
        return Err(RegistryError::EscapesRegistry {
            path: file.to_owned(),
        });
    }
    Ok(path)
}

/// Writes `bytes` to `path` whole: into a file created beside it exclusively under a random
/// name (a name planted by someone else, a symlink say, is never opened), fsynced, given
/// `mode`, renamed over `path`; then the directory is fsynced, and so is the parent of each
/// directory this created, so that a crash never loses a file an index names.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), RegistryError> {
    // A bare file name (`plugins.lock`) has the empty path as its parent: the current directory.
    let dir = Some(path.parent().unwrap_or(Path::new("")))
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut created = Vec::new();
    let mut missing = Some(dir);
    while let Some(d) = missing.filter(|d| !d.as_os_str().is_empty() && !d.exists()) {
        created.push(d.to_path_buf());
        missing = d.parent();
    }
    fs::create_dir_all(dir).map_err(|e| RegistryError::io("create", dir, e))?;
    let result = (|| {
        let mut file = tempfile::Builder::new()
            .prefix(".partial-")
            .tempfile_in(dir)?;
        file.write_all(bytes)?;
        file.as_file().sync_all()?;
        fs::set_permissions(file.path(), fs::Permissions::from_mode(mode))?;
        file.persist(path).map_err(|e| e.error)?;
        File::open(dir)?.sync_all()?;
        for created in &created {
            if let Some(parent) = created.parent().filter(|p| !p.as_os_str().is_empty()) {
                File::open(parent)?.sync_all()?;
            }
        }
        Ok(())
    })();
    result.map_err(|e: std::io::Error| RegistryError::io("write", path, e))
}

/// Lowercase hex.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
