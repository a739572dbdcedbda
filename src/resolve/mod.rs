//! Resolution: which version of each plugin a plugins.yaml means, given a registry's index and
//! the lock.
//!
//! Pure: [`resolve`] reads its arguments and nothing else — no file, no network, no clock —
//! so the same plugins.yaml, index and lock always give the same versions (the registry
//! adapter reads the index; `plugsync lock` writes the lock).
//!
//! For each plugin:
//!
//! - **a pin** (`version`) is that version: it must be published, built for the target host,
//!   and not yanked — unless the lock already names it (a yanked version stays installable for
//!   whoever locked it, as in cargo);
//! - **a channel** (its own, else `defaults.channel`, else `stable`) is the highest version on
//!   that channel or a more stable one (`dev` sees `alpha`, `beta` and `stable`) that meets the
//!   `constraint`, is not yanked and runs in `spec.host` when given (the same ABI major, a minor
//!   up to the host's, a `framework` requirement the host's framework meets).
//!
//! A constraint on `stable` reads pre-releases by semver's own rule (none, unless it names
//! one); on the channels below it by version order, with `<X.Y.Z` stopping below `X.Y.Z`'s own
//! pre-releases ([`plugsync_host::version_matches`], the rule the host applies to declared
//! migrations and dependencies too). Dependencies between plugins (`dependencies` in the index)
//! are read by version order.
//!
//! The plugins' dependencies on each other are solved jointly (PubGrub): the highest versions
//! that together meet every requirement, or a [`Conflict`] naming the requirements that
//! collide. A version that needs a plugin plugins.yaml does not name cannot be chosen.
//!
//! **The lock.** With [`Update::None`] and a lock made from this plugins.yaml (its
//! `desiredSha256` is [`desired_sha256`] of the set), the result is exactly the locked
//! versions, each checked against the index: still published, with the same sha256. A lock
//! made from another plugins.yaml is stale: the set is resolved again, keeping each locked
//! version that still meets everything. [`Update::Plugins`] resolves the plugins named as if
//! unlocked; [`Update::All`] ignores the lock.
//!
//! **Not here:** `policy.compatibility` and a plugin's `allow` limit the *jump* from what runs
//! to what is resolved; the running version is the planner's to know, so resolution names the
//! target and the planner decides whether the step may be taken automatically.

mod candidates;
mod error;
mod explain;
mod lock;
mod solver;
mod words;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use plugsync_host::Digest;
use semver::{Version, VersionReq};
use serde::Serialize;

pub use error::{DigestDiffers, ResolveError};
pub use explain::{Clause, Conflict};
pub use lock::{
    LOCK_FORMAT, LockChange, LockedPlugin, PluginsLock, desired_sha256, lock_changes, lock_schema,
};

use crate::registry::IndexFile;
use crate::spec::model::{Channel, PluginSet};

/// Which plugins may move off the versions the lock names.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Update {
    /// None: a current lock is followed exactly; a stale one is kept wherever it still fits.
    #[default]
    None,
    /// Every plugin: the lock is ignored.
    All,
    /// These plugins (by id) are resolved as if unlocked; the others keep their locked versions
    /// where they still fit.
    Plugins(BTreeSet<String>),
}

/// What plugins.yaml asks of a plugin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Asked {
    /// Exactly this version.
    Pinned(#[serde(serialize_with = "serialize_display")] Version),
    /// The highest version on a channel (or a more stable one) within a constraint.
    Channel {
        /// The channel, after `defaults.channel` (`stable` when neither says).
        channel: Channel,
        /// The constraint, if any.
        constraint: Option<VersionReq>,
    },
}

impl fmt::Display for Asked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Asked::Pinned(version) => write!(f, "the pin {version}"),
            Asked::Channel {
                channel,
                constraint: None,
            } => write!(f, "channel `{}`", channel.name()),
            Asked::Channel {
                channel,
                constraint: Some(constraint),
            } => write!(
                f,
                "channel `{}` with constraint `{constraint}`",
                channel.name()
            ),
        }
    }
}

fn serialize_optional_display<S: serde::Serializer>(
    value: &Option<impl fmt::Display>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => serializer.collect_str(value),
        None => serializer.serialize_none(),
    }
}

fn serialize_display<S: serde::Serializer>(
    value: &impl fmt::Display,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Why a plugin resolved to its version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Why {
    /// plugins.yaml pins it.
    Pinned,
    /// The highest version that fits its channel and constraint (and the other plugins'
    /// requirements).
    Channel {
        /// The channel followed.
        channel: Channel,
        /// The constraint, if any.
        #[serde(serialize_with = "serialize_optional_display")]
        #[schemars(with = "Option<String>")]
        constraint: Option<VersionReq>,
    },
    /// The version plugins.lock names (for a plugin that follows a channel).
    Locked,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Pinned => f.write_str("pinned"),
            Why::Channel {
                channel,
                constraint,
            } => Asked::Channel {
                channel: *channel,
                constraint: constraint.clone(),
            }
            .fmt(f),
            Why::Locked => f.write_str("locked"),
        }
    }
}

/// One plugin's resolved version and the artifact to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resolved {
    /// The plugin's id.
    pub id: String,
    /// The version.
    #[serde(serialize_with = "serialize_display")]
    pub version: Version,
    /// Its artifact's sha256.
    pub sha256: Digest,
    /// Its artifact's path in the registry (`artifacts/<id>/<version>/<file>`).
    pub file: String,
    /// The publisher's signature of the artifact, if signed.
    pub signature: Option<String>,
    /// Why this version.
    pub why: Why,
}

/// The versions a plugins.yaml resolves to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Resolution {
    /// [`desired_sha256`] of the plugins.yaml resolved.
    pub desired_sha256: Digest,
    /// The registry resolved from (`spec.registry.url`).
    pub registry: String,
    /// Each plugin, in plugins.yaml's order.
    pub plugins: Vec<Resolved>,
}

impl Resolution {
    /// The plugin `id`'s resolution.
    pub fn get(&self, id: &str) -> Option<&Resolved> {
        self.plugins.iter().find(|p| p.id == id)
    }

    /// The lock that records this resolution.
    pub fn lock(&self) -> PluginsLock {
        let plugins = self.plugins.iter().map(|p| {
            let locked = LockedPlugin {
                version: p.version.clone(),
                sha256: p.sha256,
                registry: self.registry.clone(),
                signature: p.signature.clone(),
            };
            (p.id.clone(), locked)
        });
        PluginsLock {
            format: LOCK_FORMAT,
            desired_sha256: self.desired_sha256,
            plugins: plugins.collect(),
        }
    }
}

/// Resolves every plugin of `set` against `index` (each plugin's [`IndexFile`], by id), as the
/// module docs say: pins, channels and constraints, the target host, the plugins' dependencies
/// on each other, and `lock` as `update` lets it bind.
pub fn resolve(
    set: &PluginSet,
    index: &BTreeMap<String, IndexFile>,
    lock: Option<&PluginsLock>,
    update: &Update,
) -> Result<Resolution, ResolveError> {
    let desired = desired_sha256(set);
    let registry = match (&set.spec.registry, set.spec.plugins.first()) {
        (Some(registry), _) => registry.url.clone(),
        (None, Some(first)) => {
            return Err(ResolveError::NoRegistry {
                plugin: first.id.clone(),
            });
        }
        (None, None) => String::new(),
    };
    if let Update::Plugins(ids) = update
        && let Some(unknown) = ids
            .iter()
            .find(|id| !set.spec.plugins.iter().any(|p| &p.id == *id))
    {
        return Err(ResolveError::UnknownUpdate {
            plugin: unknown.clone(),
            known: words::ids(set.spec.plugins.iter().map(|p| p.id.as_str())),
        });
    }
    // The lock's entries that still bind.
    let locked: BTreeMap<&str, &LockedPlugin> = match (lock, update) {
        (None, _) | (_, Update::All) => BTreeMap::new(),
        (Some(lock), Update::None) => {
            if lock.desired_sha256 == desired
                && let Some(plugins) = exactly_locked(set, index, lock)?
            {
                return Ok(Resolution {
                    desired_sha256: desired,
                    registry,
                    plugins,
                });
            }
            bound(lock, |_| true)
        }
        (Some(lock), Update::Plugins(freed)) => bound(lock, |id| !freed.contains(id)),
    };
    let universe = candidates::Universe::build(set, index, &locked)?;
    let chosen = solver::solve(&universe)?;
    let plugins = universe.plugins.iter().zip(chosen).map(|(plugin, place)| {
        let candidate = &plugin.candidates[place as usize];
        let why = match &plugin.asked {
            Asked::Pinned(_) => Why::Pinned,
            Asked::Channel { .. } if plugin.preferred == Some(place) => Why::Locked,
            Asked::Channel {
                channel,
                constraint,
            } => Why::Channel {
                channel: *channel,
                constraint: constraint.clone(),
            },
        };
        Resolved {
            id: plugin.spec.id.clone(),
            version: candidate.version.clone(),
            sha256: candidate.entry.sha256,
            file: candidate.entry.file.clone(),
            signature: candidate.entry.signature.clone(),
            why,
        }
    });
    Ok(Resolution {
        desired_sha256: desired,
        registry,
        plugins: plugins.collect(),
    })
}

/// The lock's entries whose id `binds`.
fn bound(lock: &PluginsLock, binds: impl Fn(&str) -> bool) -> BTreeMap<&str, &LockedPlugin> {
    lock.plugins
        .iter()
        .filter(|(id, _)| binds(id))
        .map(|(id, locked)| (id.as_str(), locked))
        .collect()
}

/// The locked versions of a current lock, each checked against the index; `None` when the
/// lock does not cover exactly the set's plugins and pins (it was edited by hand): it is then
/// treated as stale.
fn exactly_locked(
    set: &PluginSet,
    index: &BTreeMap<String, IndexFile>,
    lock: &PluginsLock,
) -> Result<Option<Vec<Resolved>>, ResolveError> {
    let covers = lock.plugins.len() == set.spec.plugins.len()
        && set.spec.plugins.iter().all(|plugin| {
            lock.plugins.get(&plugin.id).is_some_and(|locked| {
                plugin
                    .version
                    .as_ref()
                    .is_none_or(|pin| *pin == locked.version)
            })
        });
    if !covers {
        return Ok(None);
    }
    let mut plugins = Vec::with_capacity(set.spec.plugins.len());
    for plugin in &set.spec.plugins {
        let Some(locked) = lock.plugins.get(&plugin.id) else {
            return Ok(None);
        };
        let id = &plugin.id;
        let file = index
            .get(id)
            .ok_or_else(|| ResolveError::NotPublished { plugin: id.clone() })?;
        let entry = file
            .versions
            .iter()
            .find(|entry| Version::parse(&entry.version).is_ok_and(|v| v == locked.version))
            .ok_or_else(|| ResolveError::LockedNotPublished {
                plugin: id.clone(),
                version: locked.version.clone(),
            })?;
        candidates::check_locked_digest(id, entry, locked)?;
        plugins.push(Resolved {
            id: id.clone(),
            version: locked.version.clone(),
            sha256: entry.sha256,
            file: entry.file.clone(),
            signature: entry.signature.clone(),
            why: if plugin.version.is_some() {
                Why::Pinned
            } else {
                Why::Locked
            },
        });
    }
    Ok(Some(plugins))
}
