//! The content-addressed artifact store: `<root>/<sha256>/<file name>`.
//!
//! Bytes enter the store only after their sha256 matches the digest they were announced with
//! and their metadata section passed the loader's checks, so a refused artifact leaves nothing
//! behind. One path per digest: two versions never share a path, and a path holds the bytes of
//! its digest (files are written whole, then made read-only; a file found corrupt is replaced
//! by the next `put` of the right bytes).
//!
//! The store is the trust boundary for code: whoever can write it can change what the host
//! loads. Its directories are created `0700` and a store that another user can write is
//! refused ([`HostError::InsecureStore`]); artifacts are `0400`, the host's state files `0600`.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use plugsync_plugin::PluginMetadata;

use crate::digest::Digest;
use crate::error::{HostError, Result, io};
use crate::library::{LoadPolicy, check_metadata, effective_uid, read_metadata};

/// An artifact in the store, checked and ready to load.
#[derive(Debug, Clone)]
pub struct StoredArtifact {
    /// Its sha256.
    pub digest: Digest,
    /// Its metadata, read from the file.
    pub metadata: PluginMetadata,
    /// Where it lives: `<root>/<sha256>/<file name>`.
    pub path: PathBuf,
    /// Its publisher's signature (128 hex digits), kept beside it as `<file name>.sig`.
    pub signature: Option<String>,
}

/// Writes `dir/name` whole and read-only (`0400`): beside, fsync, rename over whatever was
/// there, fsync the directory. A crash never leaves a partial file at `dir/name`.
fn write_read_only(dir: &Path, name: &str, bytes: &[u8]) -> Result<()> {
    create_private_dir_all(dir)?;
    let partial = dir.join(format!(".{name}.partial-{}", std::process::id()));
    // A partial file left by a crash is not reused: its mode could be anything.
    let _ = fs::remove_file(&partial);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&partial)
        .map_err(io("create", &partial))?;
    file.write_all(bytes).map_err(io("write", &partial))?;
    file.sync_all().map_err(io("sync", &partial))?;
    file.set_permissions(fs::Permissions::from_mode(0o400))
        .map_err(io("chmod", &partial))?;
    let path = dir.join(name);
    fs::rename(&partial, &path).map_err(io("rename", &partial))?;
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("sync", dir))
}

/// A directory of verified plugin artifacts keyed by digest.
#[derive(Debug)]
pub struct ArtifactStore {
    root: PathBuf,
    policy: LoadPolicy,
}

/// The file beside an artifact that holds its signature.
const SIGNATURE_SUFFIX: &str = ".sig";

/// Accepts only a plain file name: nothing that could leave the digest's directory, nor a name
/// the store keeps for signatures.
pub(crate) fn check_name(name: &str) -> Result<()> {
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && name != "..";
    if !plain {
        return Err(HostError::BadArtifactName {
            name: name.to_owned(),
        });
    }
    if name.ends_with(SIGNATURE_SUFFIX) {
        return Err(HostError::SignatureName {
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// The signature file of the artifact at `path`.
fn signature_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(SIGNATURE_SUFFIX);
    PathBuf::from(name)
}

/// Reads a signature file, if there is one: its text, trimmed.
fn read_signature(path: &Path) -> Result<Option<String>> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text.trim().to_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io("read", path)(e)),
    }
}

/// Creates `dir` and any missing parent `0700`, whatever the umask: the store's directories
/// are readable by the host's user only.
pub(crate) fn create_private_dir_all(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir_all(parent)?;
    }
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {
            // The umask may have removed bits we need (the owner's); it cannot add any.
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(io("chmod", dir))
        }
        // Created by another thread or process in between.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(io("create", dir)(e)),
    }
}

/// Refuses a directory that another user could write: one owned by another user, or with the
/// group or other write bit.
fn check_private(dir: &Path) -> Result<()> {
    let metadata = fs::metadata(dir).map_err(io("stat", dir))?;
    let (mode, owner, uid) = (
        metadata.permissions().mode() & 0o7777,
        metadata.uid(),
        effective_uid(),
    );
    let problem = if owner != uid {
        "belongs to another user"
    } else if mode & 0o022 != 0 {
        "can be written by its group or others"
    } else {
        return Ok(());
    };
    Err(HostError::InsecureStore {
        path: dir.to_owned(),
        problem,
        mode,
        owner,
        uid,
    })
}

impl ArtifactStore {
    /// Opens (creating it `0700` if needed) a store rooted at `root`. A store whose root or
    /// `artifacts/` directory another user could write is refused.
    pub fn open(root: impl Into<PathBuf>, policy: LoadPolicy) -> Result<ArtifactStore> {
        let root = root.into();
        let artifacts = root.join("artifacts");
        create_private_dir_all(&artifacts)?;
        check_private(&root)?;
        check_private(&artifacts)?;
        Ok(ArtifactStore { root, policy })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The keys whose signatures this store's artifacts must carry (none: not checked).
    pub fn trusted_keys(&self) -> &crate::TrustedKeys {
        &self.policy.trusted_keys
    }

    fn dir(&self, digest: &Digest) -> PathBuf {
        self.root.join("artifacts").join(digest.to_string())
    }

    /// Verifies `bytes` against `expected` and their metadata, then writes them into the store
    /// (or finds them already there). Nothing is written when a check fails.
    pub fn put(&self, name: &str, bytes: &[u8], expected: &Digest) -> Result<StoredArtifact> {
        self.put_signed(name, bytes, expected, None)
    }

    /// [`put`](Self::put), keeping the publisher's `signature` (128 hex digits over
    /// [`signature_payload`](crate::signature_payload)) beside the artifact, where it is checked
    /// before every load. With trusted keys, a signature given must be one of theirs (else
    /// nothing is written); an artifact put without one keeps the signature it had.
    pub fn put_signed(
        &self,
        name: &str,
        bytes: &[u8],
        expected: &Digest,
        signature: Option<&str>,
    ) -> Result<StoredArtifact> {
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
        let signature = signature.map(str::trim).filter(|signature| {
            // With no trusted key nothing checks it now; a malformed one is dropped rather than
            // kept to fail every load once keys are configured.
            let keep = !self.policy.trusted_keys.is_empty() || crate::keys::well_formed(signature);
            if !keep {
                tracing::warn!(
                    artifact = name,
                    "ignoring a signature that is not 128 hex digits"
                );
            }
            keep
        });
        if signature.is_some() {
            self.policy
                .trusted_keys
                .check_artifact(&metadata, &actual, signature)?;
        }
        let dir = self.dir(&actual);
        let path = dir.join(name);
        // A file already there is kept only if it still holds these bytes: a corrupt one (a
        // disk error, a hand edit) is repaired by putting the right bytes again.
        let intact = fs::read(&path).is_ok_and(|found| Digest::of(&found) == actual);
        if !intact {
            if path.exists() {
                tracing::warn!(
                    path = %path.display(),
                    "the stored artifact does not hash to its digest: replacing it with the \
                     verified bytes"
                );
            }
            write_read_only(&dir, name, bytes)?;
        }
        let signature = match signature {
            Some(signature) => {
                let file = format!("{name}{SIGNATURE_SUFFIX}");
                write_read_only(&dir, &file, format!("{signature}\n").as_bytes())?;
                Some(signature.to_owned())
            }
            None => read_signature(&signature_path(&path))?,
        };
        Ok(StoredArtifact {
            digest: actual,
            metadata,
            path,
            signature,
        })
    }

    /// Puts a local library file into the store (`plugsync host --load`): its digest is
    /// whatever its bytes hash to, and its signature is the file `<path>.sig` beside it, if
    /// there is one (128 hex digits, as in the control API's `x-plugsync-signature` header).
    pub fn put_file(&self, path: &Path) -> Result<StoredArtifact> {
        let bytes = fs::read(path).map_err(io("read", path))?;
        let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
            HostError::BadArtifactName {
                name: path.display().to_string(),
            }
        })?;
        let signature = read_signature(&signature_path(path))?;
        self.put_signed(name, &bytes, &Digest::of(&bytes), signature.as_deref())
    }

    /// Finds an artifact by digest, re-verifying the file's bytes and metadata (the store is a
    /// directory an operator can touch).
    pub fn get(&self, digest: &Digest) -> Result<StoredArtifact> {
        self.read(digest).map(|(artifact, _)| artifact)
    }

    /// Finds an artifact by digest and reads its bytes once, verified (sha256 and metadata):
    /// the loader maps these bytes, never the file again (a file replaced after the check would
    /// be loaded unverified).
    pub(crate) fn read(&self, digest: &Digest) -> Result<(StoredArtifact, Vec<u8>)> {
        let dir = self.dir(digest);
        let entries =
            fs::read_dir(&dir).map_err(|_| HostError::UnknownArtifact { digest: *digest })?;
        let path = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.') && !n.ends_with(SIGNATURE_SUFFIX))
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
        let signature = read_signature(&signature_path(&path))?;
        let artifact = StoredArtifact {
            digest: actual,
            metadata,
            path,
            signature,
        };
        Ok((artifact, bytes))
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
