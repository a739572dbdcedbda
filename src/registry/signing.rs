//! Publishers' ed25519 keys: `plugsync keygen` writes a pair; `publish --sign-key` reads the
//! private half.
//!
//! Formats (text, one key per file):
//! - `NAME.key`, the private half, mode `0600`: `#` comment lines, then the 32-byte ed25519
//!   seed as 64 lowercase hex digits;
//! - `NAME.pub`, the public half: the 32-byte public key as 64 hex digits, then a `#` comment
//!   naming it — one line of a host's `--trusted-keys` file, as is.

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;

use super::directory::hex;
use super::error::RegistryError;

/// The files `keygen` wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyPair {
    /// The private half (`0600`).
    pub private: PathBuf,
    /// The public half.
    pub public: PathBuf,
    /// The public key, 64 hex digits.
    pub public_hex: String,
}

/// Writes a new key pair to `NAME.key` and `NAME.pub` (`name` may be a path); refuses to
/// overwrite either.
pub fn keygen(name: &Path) -> Result<KeyPair, RegistryError> {
    // Appended, not replaced: `desk.2026` gives `desk.2026.key`, never `desk.key`.
    let with = |extension: &str| {
        let mut path = name.as_os_str().to_owned();
        path.push(extension);
        PathBuf::from(path)
    };
    let (private, public) = (with(".key"), with(".pub"));
    for path in [&private, &public] {
        if path.exists() {
            return Err(RegistryError::KeyExists { path: path.clone() });
        }
    }
    let mut seed = [0u8; 32];
    getrandom::getrandom(&mut seed).map_err(|e| {
        RegistryError::io("read random bytes for", &private, std::io::Error::other(e))
    })?;
    let key = SigningKey::from_bytes(&seed);
    let public_hex = hex(key.verifying_key().as_bytes());
    let label = name.file_name().and_then(|n| n.to_str()).unwrap_or("key");
    write_new(
        &private,
        format!(
            "# plugsync ed25519 signing key `{label}` (private: keep it 0600, never commit it)\n{}\n",
            hex(&seed)
        )
        .as_bytes(),
        0o600,
    )?;
    write_new(
        &public,
        format!("{public_hex}  # {label}\n").as_bytes(),
        0o644,
    )?;
    Ok(KeyPair {
        private,
        public,
        public_hex,
    })
}

/// Reads a private key written by [`keygen`].
pub fn read_signing_key(path: &Path) -> Result<SigningKey, RegistryError> {
    let bad = |reason: &str| RegistryError::BadSigningKey {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let mode = std::fs::metadata(path)
        .map_err(|e| RegistryError::io("read", path, e))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(bad(&format!(
            "others may read it (mode {:o}): `chmod 600` it, and consider whether it leaked",
            mode & 0o777
        )));
    }
    let text = std::fs::read_to_string(path).map_err(|e| RegistryError::io("read", path, e))?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .ok_or_else(|| bad("it holds no key"))?;
    if !line.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad("the key is not hex digits"));
    }
    let bytes: Vec<u8> = (0..line.len())
        .step_by(2)
        .map(|i| {
            line.get(i..i + 2)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        })
        .collect::<Option<_>>()
        .ok_or_else(|| bad("the key is not hex digits"))?;
    let seed: [u8; 32] = bytes
        .try_into()
        .map_err(|_| bad("the key is not 64 hex digits (a `.pub` file given for a `.key`?)"))?;
    Ok(SigningKey::from_bytes(&seed))
}

fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), RegistryError> {
    let mut file = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(mode)
        .open(path)
        .map_err(|e| RegistryError::io("create", path, e))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| RegistryError::io("write", path, e))
}
