//! The content-addressed artifact store: `<root>/<sha256>/<file name>`.
//!
//! Bytes enter the store only after their sha256 matches the digest they were announced with
//! and their metadata section passed the loader's checks, so a refused artifact leaves nothing
//! behind. One path per digest also defeats `dlopen`'s same-path cache: two versions never
//! share a path, and a path never changes content (files are written once, then made
//! read-only).

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use plugsync_plugin::PluginMetadata;

use crate::digest::Digest;
use crate::error::{HostError, Result, io};
use crate::library::{LoadPolicy, check_metadata, read_metadata};

/// An artifact in the store, checked and ready to load.
#[derive(Debug, Clone)]
pub struct StoredArtifact {
    /// Its sha256.
    pub digest: Digest,
    /// Its metadata, read from the file.
    pub metadata: PluginMetadata,
    /// Where it lives: `<root>/<sha256>/<file name>`.
    pub path: PathBuf,
}

/// A directory of verified plugin artifacts keyed by digest.
#[derive(Debug)]
pub struct ArtifactStore {
    root: PathBuf,
    policy: LoadPolicy,
}

/// Accepts only a plain file name: nothing that could leave the digest's directory.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && name != "..";
    if plain {
        Ok(())
    } else {
        Err(HostError::BadArtifactName {
            name: name.to_owned(),
        })
    }
}

impl ArtifactStore {
    /// Opens (creating it if needed) a store rooted at `root`.
    pub fn open(root: impl Into<PathBuf>, policy: LoadPolicy) -> Result<ArtifactStore> {
        let root = root.into();
        let artifacts = root.join("artifacts");
        fs::create_dir_all(&artifacts).map_err(io("create", &artifacts))?;
        Ok(ArtifactStore { root, policy })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn dir(&self, digest: &Digest) -> PathBuf {
        self.root.join("artifacts").join(digest.to_string())
    }

    /// Verifies `bytes` against `expected` and their metadata, then writes them into the store
    /// (or finds them already there). Nothing is written when a check fails.
    pub fn put(&self, name: &str, bytes: &[u8], expected: &Digest) -> Result<StoredArtifact> {
        check_name(name)?;
        let actual = Digest::of(bytes);
        if actual != *expected {
            return Err(HostError::DigestMismatch {
                artifact: name.to_owned(),
                expected: *expected,
                actual,
            });
        }
        let metadata = read_metadata(name, bytes)?;
        check_metadata(&metadata, &self.policy)?;
        let dir = self.dir(&actual);
        let path = dir.join(name);
        if !path.exists() {
            // Write beside, fsync, then rename: a crash never leaves a partial file at `path`.
            fs::create_dir_all(&dir).map_err(io("create", &dir))?;
            let partial = dir.join(format!(".{name}.partial-{}", std::process::id()));
            let mut file = fs::File::create(&partial).map_err(io("create", &partial))?;
            file.write_all(bytes).map_err(io("write", &partial))?;
            file.sync_all().map_err(io("sync", &partial))?;
            let mut permissions = file.metadata().map_err(io("stat", &partial))?.permissions();
            permissions.set_readonly(true);
            fs::set_permissions(&partial, permissions).map_err(io("chmod", &partial))?;
            fs::rename(&partial, &path).map_err(io("rename", &partial))?;
            fs::File::open(&dir)
                .and_then(|d| d.sync_all())
                .map_err(io("sync", &dir))?;
        }
        Ok(StoredArtifact {
            digest: actual,
            metadata,
            path,
        })
    }

    /// Puts a local library file into the store (`plugsync host --load`): its digest is
    /// whatever its bytes hash to.
    pub fn put_file(&self, path: &Path) -> Result<StoredArtifact> {
        let bytes = fs::read(path).map_err(io("read", path))?;
        let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            HostError::BadArtifactName {
                name: path.display().to_string(),
            }
        })?;
        self.put(name, &bytes, &Digest::of(&bytes))
    }

    /// Finds an artifact by digest, re-verifying the file's bytes and metadata (the store is a
    /// directory an operator can touch).
    pub fn get(&self, digest: &Digest) -> Result<StoredArtifact> {
        let dir = self.dir(digest);
        let entries =
            fs::read_dir(&dir).map_err(|_| HostError::UnknownArtifact { digest: *digest })?;
        let path = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.'))
            })
            .ok_or(HostError::UnknownArtifact { digest: *digest })?;
        let bytes = fs::read(&path).map_err(io("read", &path))?;
        let name = path.display().to_string();
        let actual = Digest::of(&bytes);
        if actual != *digest {
            return Err(HostError::DigestMismatch {
                artifact: name,
                expected: *digest,
                actual,
            });
        }
        let metadata = read_metadata(&name, &bytes)?;
        check_metadata(&metadata, &self.policy)?;
        Ok(StoredArtifact {
            digest: actual,
            metadata,
            path,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_that_could_escape_are_refused() {
        for name in ["", ".", "..", "../x.so", "a/b.so", "a\\b.so", ".hidden.so"] {
            assert!(check_name(name).is_err(), "{name:?} should be refused");
        }
        for name in ["libma_cross_v2_0_0.so", "risk..model.so"] {
            assert!(check_name(name).is_ok(), "{name:?} should be accepted");
        }
    }

    #[test]
    fn a_wrong_digest_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(dir.path(), LoadPolicy::default()).unwrap();
        let err = store
            .put("lib.so", b"not a library", &Digest::of(b"something else"))
            .unwrap_err();
        assert!(matches!(err, HostError::DigestMismatch { .. }), "{err}");
        let entries: Vec<_> = fs::read_dir(dir.path().join("artifacts"))
            .unwrap()
            .collect();
        assert!(entries.is_empty());
    }
}
