//! Why a set does not resolve, each with its fix.

use plugsync_host::Digest;

use super::explain::Conflict;

/// Why the plugins of a plugins.yaml cannot be resolved against a registry's index.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResolveError {
    /// plugins.yaml names no registry.
    #[error(
        "plugins.yaml names no registry to resolve `{plugin}` from: add `spec.registry.url` (a \
         directory or an http(s) URL)"
    )]
    NoRegistry {
        /// The first plugin to resolve.
        plugin: String,
    },
    /// The registry has never published the plugin.
    #[error(
        "`{plugin}` is not in the registry's index: publish it (`plugsync publish`), or correct \
         its id in plugins.yaml"
    )]
    NotPublished {
        /// The plugin.
        plugin: String,
    },
    /// A pinned version is not in the index.
    #[error(
        "`{plugin}` {version} is not published; the index has {published}: pin one of those, or \
         publish {version}"
    )]
    PinNotPublished {
        /// The plugin.
        plugin: String,
        /// The pinned version.
        version: semver::Version,
        /// The versions the index has, in words.
        published: String,
    },
    /// A pinned version was yanked and no lock names it.
    #[error(
        "`{plugin}` {version} was yanked: pin another version (a plugins.lock that already names \
         {version} keeps installing it)"
    )]
    PinYanked {
        /// The plugin.
        plugin: String,
        /// The pinned version.
        version: semver::Version,
    },
    /// A pinned version cannot run in the host plugins.yaml targets.
    #[error(
        "`{plugin}` {version} cannot run in the target host: {reason}; pin a version built for it, or correct `spec.host`"
    )]
    PinIncompatible {
        /// The plugin.
        plugin: String,
        /// The pinned version.
        version: semver::Version,
        /// Why, in words.
        reason: String,
    },
    /// A channel (and constraint) admits no version.
    #[error("no version of `{plugin}` fits {asked}: {skipped}; {fix}")]
    NothingFits {
        /// The plugin.
        plugin: String,
        /// What plugins.yaml asks, in words (`channel `stable` with constraint `>=3``).
        asked: String,
        /// What the index has and why each was passed over, in words.
        skipped: String,
        /// What to change.
        fix: &'static str,
    },
    /// The plugins' requirements on each other cannot all hold at once.
    #[error("{0}")]
    Conflict(Box<Conflict>),
    /// plugins.yaml's host target cannot be read.
    #[error(
        "`spec.host.{field}` `{value}` cannot be read: write it as its status shows it (`MAJOR.MINOR`)"
    )]
    BadHostTarget {
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
    },
    /// An index entry that cannot be read.
    #[error(
        "the registry's index entry for `{plugin}` {version} has a bad `{field}` `{value}`: \
         {reason}; republish it with `plugsync publish`"
    )]
    BadIndexEntry {
        /// The plugin.
        plugin: String,
        /// The entry's version, as written.
        version: String,
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A version plugins.lock names is gone from the index.
    #[error(
        "plugins.lock names `{plugin}` {version}, which the registry's index no longer has: \
         update the lock for it (`plugsync lock --update {plugin}`)"
    )]
    LockedNotPublished {
        /// The plugin.
        plugin: String,
        /// The locked version.
        version: semver::Version,
    },
    /// The index gives a locked version another artifact than the lock recorded.
    #[error("{0}")]
    LockedDigestDiffers(Box<DigestDiffers>),
    /// An update names a plugin plugins.yaml does not.
    #[error("cannot update `{plugin}`: plugins.yaml has no such plugin (it has {known})")]
    UnknownUpdate {
        /// The id asked for.
        plugin: String,
        /// The ids plugins.yaml has, in words.
        known: String,
    },
}

/// The registry's index gives a locked version another artifact than the lock recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the registry's `{file}` (`{plugin}` {version}) has sha256 {index}, but plugins.lock recorded \
     {locked}: the artifact was republished or the registry altered; find out which before \
     updating the lock for it (`plugsync lock --update {plugin}`)"
)]
pub struct DigestDiffers {
    /// The plugin.
    pub plugin: String,
    /// The locked version.
    pub version: semver::Version,
    /// The artifact's path in the registry.
    pub file: String,
    /// The digest the lock recorded.
    pub locked: Digest,
    /// The digest the index gives now.
    pub index: Digest,
}
