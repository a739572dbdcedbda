//! `plugins.lock`: the versions a resolution chose, with the digests that make them exact, and
//! the hash of what it read from plugins.yaml, so a later run can tell whether it still
//! applies.

use std::collections::BTreeMap;
use std::fmt;

use plugsync_host::Digest;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spec::model::{Channel, HostTarget, PluginSet, PluginSpec};

/// The only `format` of `plugins.lock` this release reads and writes.
pub const LOCK_FORMAT: u32 = 1;

/// `plugins.lock`: for each plugin of a plugins.yaml, the version resolution chose and the
/// artifact it names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "plugins.lock")]
pub struct PluginsLock {
    /// The lock's format ([`LOCK_FORMAT`]).
    pub format: u32,
    /// The sha256 of what resolution read from plugins.yaml ([`desired_sha256`]): when the
    /// file's value differs, the lock is stale and the set is resolved again.
    #[schemars(with = "String")]
    pub desired_sha256: Digest,
    /// Each plugin, by id.
    pub plugins: BTreeMap<String, LockedPlugin>,
}

/// One plugin's locked version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LockedPlugin {
    /// The version.
    #[schemars(with = "String")]
    pub version: semver::Version,
    /// Its artifact's sha256, as the registry's index gave it when the lock was made.
    #[schemars(with = "String")]
    pub sha256: Digest,
    /// The registry it came from (plugins.yaml's `spec.registry.url`).
    pub registry: String,
    /// The publisher's signature of the artifact (128 hex digits), if it was signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
}

/// The sha256 of exactly what resolution reads from `set`: the registry URL, the host target,
/// and each plugin's id and selection (its pin, or its effective channel and constraint).
///
/// Nothing else enters it: editing a plugin's config, strategy, verification or the policy
/// leaves a lock current, while any change that could change a resolved version makes it
/// stale. The selection is taken as resolution sees it — a plugin's channel after
/// `defaults.channel`, a constraint in semver's normal form — so a change that means the same
/// (`>=1.0,<3` for `>=1.0, <3`, a default channel spelled out on the plugin) does not either.
pub fn desired_sha256(set: &PluginSet) -> Digest {
    #[derive(Serialize)]
    struct Read<'a> {
        registry: Option<&'a str>,
        host: Option<&'a HostTarget>,
        plugins: BTreeMap<&'a str, Selection>,
    }
    #[derive(Serialize)]
    struct Selection {
        version: Option<String>,
        channel: Option<Channel>,
        constraint: Option<String>,
    }
    let spec = &set.spec;
    let plugins = spec.plugins.iter().map(|plugin| {
        let selection = match &plugin.version {
            Some(pin) => Selection {
                version: Some(pin.to_string()),
                channel: None,
                constraint: None,
            },
            None => Selection {
                version: None,
                channel: Some(effective_channel(set, plugin)),
                constraint: plugin.constraint.as_ref().map(ToString::to_string),
            },
        };
        (plugin.id.as_str(), selection)
    });
    let read = Read {
        registry: spec.registry.as_ref().map(|r| r.url.as_str()),
        host: spec.host.as_ref(),
        plugins: plugins.collect(),
    };
    // Serialising plain strings, options and maps cannot fail; were it to, an empty document
    // hashes to a value no lock holds, so the lock counts as stale rather than current.
    let canonical = plugsync_plugin::canonical_json(&read).unwrap_or_default();
    Digest::of(&canonical)
}

/// The channel a plugin with no pin follows: its own, else the set's default, else `stable`.
pub(crate) fn effective_channel(set: &PluginSet, plugin: &PluginSpec) -> Channel {
    plugin
        .channel
        .or(set.spec.defaults.channel)
        .unwrap_or(Channel::Stable)
}

impl PluginsLock {
    /// What writing `new` in place of this lock would change: nothing when it is empty (what
    /// `--locked` requires).
    pub fn changes_to(&self, new: &PluginsLock) -> Vec<LockChange> {
        lock_changes(Some(self), new)
    }
}

/// What writing `new` would change in `current` (none: every entry added, and nothing else),
/// plugin by plugin in id order, the desired hash last.
pub fn lock_changes(current: Option<&PluginsLock>, new: &PluginsLock) -> Vec<LockChange> {
    let empty = BTreeMap::new();
    let old = current.map_or(&empty, |lock| &lock.plugins);
    let mut changes = Vec::new();
    for (plugin, before) in old {
        match new.plugins.get(plugin) {
            None => changes.push(LockChange::Removed {
                plugin: plugin.clone(),
                version: before.version.clone(),
            }),
            Some(after) if after.version != before.version => {
                changes.push(LockChange::Version {
                    plugin: plugin.clone(),
                    from: before.version.clone(),
                    to: after.version.clone(),
                });
            }
            Some(after) if after != before => changes.push(LockChange::Artifact {
                plugin: plugin.clone(),
                version: after.version.clone(),
            }),
            Some(_) => {}
        }
    }
    for (plugin, after) in &new.plugins {
        if !old.contains_key(plugin) {
            changes.push(LockChange::Added {
                plugin: plugin.clone(),
                version: after.version.clone(),
            });
        }
    }
    changes.sort_by(|a, b| a.plugin().cmp(b.plugin()));
    // A first lock is its additions; the desired hash changes only from a lock there was.
    if current
        .is_some_and(|lock| lock.desired_sha256 != new.desired_sha256 || lock.format != new.format)
    {
        changes.push(LockChange::Desired);
    }
    changes
}

/// One difference between a lock and the one a resolution would write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockChange {
    /// A plugin the lock does not name yet.
    Added {
        /// The plugin.
        plugin: String,
        /// The version it would be locked to.
        version: semver::Version,
    },
    /// A plugin no longer in plugins.yaml.
    Removed {
        /// The plugin.
        plugin: String,
        /// The version it was locked to.
        version: semver::Version,
    },
    /// Another version.
    Version {
        /// The plugin.
        plugin: String,
        /// The locked version.
        from: semver::Version,
        /// The version resolved now.
        to: semver::Version,
    },
    /// The same version with another artifact, registry or signature.
    Artifact {
        /// The plugin.
        plugin: String,
        /// Its version.
        version: semver::Version,
    },
    /// The lock was made from another plugins.yaml (or in another format), though every
    /// version stays.
    Desired,
}

impl LockChange {
    /// The plugin it is about (empty for [`LockChange::Desired`]).
    pub fn plugin(&self) -> &str {
        match self {
            LockChange::Added { plugin, .. }
            | LockChange::Removed { plugin, .. }
            | LockChange::Version { plugin, .. }
            | LockChange::Artifact { plugin, .. } => plugin,
            LockChange::Desired => "",
        }
    }
}

impl fmt::Display for LockChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LockChange::Added { plugin, version } => write!(f, "`{plugin}` added at {version}"),
            LockChange::Removed { plugin, version } => {
                write!(f, "`{plugin}` {version} removed")
            }
            LockChange::Version { plugin, from, to } => write!(f, "`{plugin}` {from} → {to}"),
            LockChange::Artifact { plugin, version } => write!(
                f,
                "`{plugin}` {version}: another artifact, registry or signature"
            ),
            LockChange::Desired => f.write_str("plugins.yaml changed since the lock was made"),
        }
    }
}

/// The JSON Schema of `plugins.lock`.
pub fn lock_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(PluginsLock)).unwrap_or_default()
}
