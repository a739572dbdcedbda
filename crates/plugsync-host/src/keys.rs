//! Trusted signing keys and the signature an artifact carries.
//!
//! The keys are the host's own configuration (a key in `plugins.yaml` could be added by anyone
//! who can commit). A publisher signs [`signature_payload`]: the canonical JSON of the
//! artifact's id, version and sha256, so a signature cannot be moved to other bytes, nor the
//! bytes passed off as another plugin or version.
//!
//! A signature is 128 hex digits (the 64 bytes of the ed25519 signature), the same text in the
//! control API's `x-plugsync-signature` header, in a `LIB.sig` file beside a library given to
//! `plugsync host --load LIB`, and in the store beside the artifact
//! (`artifacts/<sha256>/<file>.sig`), where it is checked again before every load.

use std::fmt;
use std::path::Path;

use ed25519_dalek::{Signature, VerifyingKey};
use plugsync_plugin::PluginMetadata;

use crate::digest::Digest;
use crate::error::HostError;

/// The ed25519 public keys whose signatures the host accepts on artifacts: checked when an
/// artifact is staged with a signature, and before every load (an unsigned artifact is then
/// refused, unless allowed by [`Runtime::allow_unsigned`](crate::Runtime::allow_unsigned)).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct TrustedKeys(Vec<VerifyingKey>);

impl fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|key| hex(key.as_bytes())))
            .finish()
    }
}

impl TrustedKeys {
    /// No trusted key: artifacts are staged and loaded without a signature.
    pub fn none() -> Self {
        TrustedKeys(Vec::new())
    }

    /// Reads a keys file: one ed25519 public key per line as 64 hex digits; `#` starts a
    /// comment, blank lines are skipped. A file with no key is an error (it would silently
    /// accept unsigned artifacts).
    pub fn load(path: &Path) -> Result<Self, HostError> {
        let text = std::fs::read_to_string(path).map_err(|source| HostError::KeysUnreadable {
            path: path.to_owned(),
            source,
        })?;
        let mut keys = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let key = line.split('#').next().unwrap_or_default().trim();
            if key.is_empty() {
                continue;
            }
            let bad = |reason: String| HostError::BadKey {
                path: path.to_owned(),
                line: index + 1,
                reason,
            };
            let bytes: [u8; 32] =
                unhex(key).ok_or_else(|| bad(format!("`{key}` is not 64 hex digits")))?;
            let key = VerifyingKey::from_bytes(&bytes)
                .map_err(|_| bad(format!("`{key}` is not a valid ed25519 public key")))?;
            keys.push(key);
        }
        if keys.is_empty() {
            return Err(HostError::NoTrustedKeys {
                path: path.to_owned(),
            });
        }
        Ok(TrustedKeys(keys))
    }

    /// Whether no key is trusted (signatures are then not required).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many keys are trusted.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Checks an artifact before it is staged, loaded or locked: with no trusted key, anything
    /// passes; otherwise `signature` must be a trusted key's over its id, version and digest
    /// ([`signature_payload`]).
    pub fn check_artifact(
        &self,
        metadata: &PluginMetadata,
        digest: &Digest,
        signature: Option<&str>,
    ) -> Result<(), HostError> {
        if self.is_empty() {
            return Ok(());
        }
        let Some(signature) = signature else {
            return Err(HostError::Unsigned {
                plugin: metadata.id.clone(),
                version: metadata.version.clone(),
                digest: *digest,
            });
        };
        let payload = signature_payload(&metadata.id, &metadata.version, digest);
        self.verify(&payload, signature)
            .map_err(|error| HostError::BadSignature {
                plugin: metadata.id.clone(),
                version: metadata.version.clone(),
                digest: *digest,
                reason: error.reason(),
            })
    }

    /// These keys and `other`'s.
    #[cfg(feature = "control-api")]
    pub(crate) fn union(&self, other: &TrustedKeys) -> TrustedKeys {
        let mut keys = self.0.clone();
        keys.extend(other.0.iter().filter(|k| !self.0.contains(k)));
        TrustedKeys(keys)
    }

    /// Whether `signature` (128 hex digits) is a signature of `payload` by a trusted key.
    pub(crate) fn verify(&self, payload: &[u8], signature: &str) -> Result<(), SignatureError> {
        let bytes: [u8; 64] = unhex(signature.trim()).ok_or(SignatureError::Malformed)?;
        let signature = Signature::from_bytes(&bytes);
        if self
            .0
            .iter()
            .any(|key| key.verify_strict(payload, &signature).is_ok())
        {
            Ok(())
        } else {
            Err(SignatureError::Untrusted)
        }
    }
}

/// Why a signature was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SignatureError {
    /// Not 128 hex digits.
    Malformed,
    /// No trusted key made it (for these bytes, id and version).
    Untrusted,
}

impl SignatureError {
    /// What is wrong, after "the signature …".
    pub(crate) fn reason(self) -> &'static str {
        match self {
            SignatureError::Malformed => "is not 128 hex digits",
            SignatureError::Untrusted => "was not made by a key this host trusts",
        }
    }
}

/// Whether `signature` is well formed (128 hex digits, surrounding whitespace ignored).
pub(crate) fn well_formed(signature: &str) -> bool {
    unhex::<64>(signature.trim()).is_some()
}

/// What a publisher signs for an artifact: the canonical JSON (RFC 8785, keys sorted) of
/// `{"id", "version", "sha256"}`, the digest as 64 lowercase hex digits.
pub fn signature_payload(id: &str, version: &str, sha256: &Digest) -> Vec<u8> {
    let payload = serde_json::json!({
        "id": id,
        "version": version,
        "sha256": sha256.to_string(),
    });
    plugsync_plugin::canonical_json(&payload).expect("a map of strings serialises")
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Exactly `N` bytes from `2 * N` hex digits (either case).
fn unhex<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let nibble = |d: u8| (d as char).to_digit(16).map(|v| v as u8);
    let mut out = [0u8; N];
    for (byte, pair) in out.iter_mut().zip(digits.chunks(2)) {
        *byte = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_payload_is_canonical_json() {
        let digest = Digest::of(b"abc");
        assert_eq!(
            String::from_utf8(signature_payload("ma_cross", "2.0.0", &digest)).unwrap(),
            format!(r#"{{"id":"ma_cross","sha256":"{digest}","version":"2.0.0"}}"#)
        );
    }

    #[test]
    fn hex_round_trips_and_refuses_what_is_not_hex() {
        assert_eq!(unhex::<2>("0aFf"), Some([0x0a, 0xff]));
        assert_eq!(hex(&[0x0a, 0xff]), "0aff");
        for bad in ["", "0a", "0aff00", "0g00", "+a00"] {
            assert_eq!(unhex::<2>(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn key_files_name_the_bad_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys");
        let good = hex(ed25519_dalek::SigningKey::from_bytes(&[7; 32])
            .verifying_key()
            .as_bytes());
        std::fs::write(&path, format!("# publishers\n\n{good} # ci\nnot-a-key\n")).unwrap();
        let message = TrustedKeys::load(&path).unwrap_err().to_string();
        assert_eq!(
            message,
            format!(
                "`{}:4`: `not-a-key` is not 64 hex digits; write one ed25519 public key per \
                 line as 64 hex digits (`#` starts a comment)",
                path.display()
            )
        );
        std::fs::write(&path, format!("# publishers\n{good}\n")).unwrap();
        assert_eq!(TrustedKeys::load(&path).unwrap().len(), 1);
        std::fs::write(&path, "# nobody yet\n").unwrap();
        assert!(matches!(
            TrustedKeys::load(&path),
            Err(HostError::NoTrustedKeys { .. })
        ));
    }
}
