//! What can go wrong with a registry.

use std::path::{Path, PathBuf};

use plugsync_host::Digest;

/// A registry could not be read or changed. Messages are lowercase, name things in backticks
/// and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A file could not be read or written.
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },

    /// The library is not a plugin this host could load (its metadata, read without running
    /// it).
    #[error(transparent)]
    Library(#[from] plugsync_host::HostError),

    /// A plugin's version is not semver.
    #[error(
        "`{plugin}` declares version `{version}`, which is not a semantic version ({reason}): fix `version` in its `export_plugin!` (or its Cargo.toml) and rebuild"
    )]
    BadVersion {
        /// Plugin id.
        plugin: String,
        /// As declared.
        version: String,
        /// The parser's words.
        reason: String,
    },

    /// Other bytes under a version already published.
    #[error(
        "`{plugin}` {version} is already published with sha256 {published}, and this library's \
         is {given}: a published version never changes; bump the version and publish that"
    )]
    Republished {
        /// Plugin id.
        plugin: String,
        /// Version.
        version: String,
        /// The published artifact's digest.
        published: Digest,
        /// The digest of the bytes given.
        given: Digest,
    },

    /// The same bytes published again on another channel.
    #[error(
        "`{plugin}` {version} is already published on `{channel}`: move it to `{asked}` with \
         `plugsync promote {plugin} {version} --channel {asked}`"
    )]
    PublishedOnAnotherChannel {
        /// Plugin id.
        plugin: String,
        /// Version.
        version: String,
        /// Its channel.
        channel: &'static str,
        /// The channel asked.
        asked: &'static str,
    },

    /// No index for the plugin.
    #[error("no plugin `{plugin}` is published in `{registry}`")]
    NoSuchPlugin {
        /// Plugin id.
        plugin: String,
        /// The registry.
        registry: PathBuf,
    },

    /// No such version in the plugin's index.
    #[error("`{plugin}` {version} is not published (published: {})", if known.is_empty() { "none".to_owned() } else { known.join(", ") })]
    NoSuchVersion {
        /// Plugin id.
        plugin: String,
        /// The version asked.
        version: String,
        /// The versions published.
        known: Vec<String>,
    },

    /// An index that cannot be read.
    #[error("the registry index `{path}` is not valid: {reason}")]
    BadIndex {
        /// The index file.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// A plugin id that is not one.
    #[error(
        "`{plugin}` is not a plugin id: an id is a lowercase letter, then up to 63 lowercase \
         letters, digits or `_` (as the plugin's library declares it: `plugsync inspect LIB`)"
    )]
    BadPluginId {
        /// As given.
        plugin: String,
    },

    /// A path (in an index, or a plugin id) that would lead outside the registry.
    #[error("`{path}` would lead outside the registry: refused")]
    EscapesRegistry {
        /// The path as found.
        path: String,
    },

    /// An artifact whose bytes are not the ones its index entry records (boxed: rare, and
    /// keeps every `Result` small).
    #[error(transparent)]
    DigestMismatch(Box<DigestMismatch>),

    /// A registry URL that cannot be used.
    #[error("`{url}` is not a registry URL: {reason}")]
    BadRegistryUrl {
        /// As given.
        url: String,
        /// Why.
        reason: String,
    },

    /// A registry that could not be reached, or whose answers kept failing.
    #[error("cannot fetch `{url}` after {attempts} attempts: {cause}")]
    Unreachable {
        /// What was asked.
        url: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last failure.
        cause: String,
    },

    /// An answer that retrying will not change (a 403, a 410…).
    #[error("`{url}` answered HTTP {status}")]
    HttpStatus {
        /// What was asked.
        url: String,
        /// The status.
        status: u16,
    },

    /// A download larger than the limit.
    #[error("`{url}` is {size} bytes, more than the {limit} allowed")]
    TooLarge {
        /// What was asked.
        url: String,
        /// The limit.
        limit: usize,
        /// Its size (or how much had come when it passed the limit).
        size: u64,
    },

    /// A migrations file that cannot be read.
    #[error(
        "`{path}` is not a list of migrations: {reason}; write a JSON list of `{{\"from\": REQ, \
         \"to\": REQ, \"rules\": [...]}}`, the `migrations` of plugins.yaml"
    )]
    BadMigrations {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// A signing key file that cannot be used.
    #[error("the signing key `{path}` cannot be used: {reason}")]
    BadSigningKey {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// A key file that would be overwritten.
    #[error("`{path}` exists: `plugsync keygen` never overwrites a key; choose another name")]
    KeyExists {
        /// The file.
        path: PathBuf,
    },
}

impl RegistryError {
    pub(crate) fn io(action: &'static str, path: &Path, source: std::io::Error) -> RegistryError {
        RegistryError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// An artifact whose bytes are not the ones its index entry records.
#[derive(Debug, thiserror::Error)]
#[error(
    "the artifact of `{plugin}` {version} (`{file}`) has sha256 {found}, not the {expected} its \
     index records: it was altered or corrupted; republish it from its build"
)]
pub struct DigestMismatch {
    /// Plugin id.
    pub plugin: String,
    /// Version.
    pub version: String,
    /// Its path in the registry.
    pub file: String,
    /// The digest the index records.
    pub expected: Digest,
    /// The digest of the bytes found.
    pub found: Digest,
}
