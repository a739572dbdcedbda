//! Declared dependencies between plugins, checked by the host when a client changes what runs.
//!
//! A plugin's metadata declares the other plugins it needs, each with a semver requirement
//! (`ma_cross` 2.1.0 needs `risk_model >=2.0, <3`). A client's plan orders its steps so that
//! every requirement holds after each one; with several clients the host is the second guard: a
//! switch, install or unload through the control API that would leave a running plugin's
//! requirement unmet (the dependency absent, or at a version outside the requirement) is
//! refused with both plugins named, unless forced. A requirement admits pre-releases by version
//! order ([`version_matches`](crate::version_matches)), as resolution reads it, so a set a
//! client resolved is never refused here over a pre-release. Only requirements that involve the plugin
//! being changed are checked, so a conflict that was already there does not block unrelated
//! changes. In process, the embedder orders its own steps and may call
//! [`Runtime::check_dependencies`](crate::Runtime::check_dependencies) itself.

use std::collections::BTreeMap;

use plugsync_plugin::PluginMetadata;

use crate::error::{HostError, Result};
use crate::versions::version_matches;

/// A change to what runs, as a dependency check sees it.
#[derive(Debug, Clone, Copy)]
pub enum PlannedChange<'a> {
    /// `metadata`'s plugin runs (installed, or switched to that version).
    Run(&'a PluginMetadata),
    /// The plugin stops running (unloaded).
    Remove(&'a str),
}

impl PlannedChange<'_> {
    fn plugin(&self) -> &str {
        match self {
            PlannedChange::Run(metadata) => &metadata.id,
            PlannedChange::Remove(plugin) => plugin,
        }
    }
}

/// The first requirement involving the changed plugin that `running` (id → metadata) would
/// break after `change`.
pub(crate) fn check(running: &[PluginMetadata], change: PlannedChange<'_>) -> Result<()> {
    let changed = change.plugin();
    let mut after: BTreeMap<&str, &PluginMetadata> =
        running.iter().map(|m| (m.id.as_str(), m)).collect();
    match change {
        PlannedChange::Run(metadata) => after.insert(changed, metadata),
        PlannedChange::Remove(plugin) => after.remove(plugin),
    };
    for (dependant, metadata) in &after {
        for (dependency, requirement) in &metadata.dependencies {
            if *dependant != changed && dependency != changed {
                continue;
            }
            let found = after.get(dependency.as_str()).map(|m| m.version.clone());
            let satisfied = found.as_deref().is_some_and(|version| {
                match (
                    semver::VersionReq::parse(requirement),
                    semver::Version::parse(version),
                ) {
                    (Ok(requirement), Ok(version)) => version_matches(&requirement, &version, true),
                    _ => false,
                }
            });
            if !satisfied {
                return Err(HostError::DependencyUnmet(Box::new(UnmetDependency {
                    dependant: (*dependant).to_owned(),
                    dependant_version: metadata.version.clone(),
                    dependency: dependency.clone(),
                    requirement: requirement.clone(),
                    found,
                    changed: changed.to_owned(),
                })));
            }
        }
    }
    Ok(())
}

/// A declared dependency a change would leave unmet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{dependant}` {dependant_version} needs `{dependency}` {requirement}, {}: the change to \
     `{changed}` was refused and nothing was applied; change them in an order that keeps the \
     requirement met (the dependency first when upgrading it, the dependant first when \
     downgrading), or force this change with a reason (`force`, recorded)",
    match found {
        Some(version) => format!("and it would run {version}"),
        None => "and it would not run".to_owned(),
    }
)]
pub struct UnmetDependency {
    /// The plugin whose requirement breaks.
    pub dependant: String,
    /// Its version.
    pub dependant_version: String,
    /// The plugin it needs.
    pub dependency: String,
    /// The requirement.
    pub requirement: String,
    /// The dependency's version after the change, if it would run.
    pub found: Option<String>,
    /// The plugin the refused change was to.
    pub changed: String,
}
