//! Migrations: which version change a swap is, what migrates its `{config, state}` document
//! (the plugin's own `migrate`, or the operator's rules), and running it.
//!
//! The transition is decided from the plugins' metadata alone ([`TransitionKind::between`]),
//! so a version that declares no path from the running one is refused before it is mapped.

use std::sync::Arc;

use plugsync_plugin::PluginMetadata;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::error::{HostError, Result};
use crate::library::{Instance, Library};
use crate::rules::{self, MigrationRule};
use crate::versions::version_matches;

/// What kind of version change a swap is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
pub enum TransitionKind {
    /// To a newer version (the new version's `migrate`, declared in its `migrates_from`).
    Upgrade,
    /// To an older version (the running version's `migrate` down, declared in its
    /// `downgrades_to`).
    Downgrade,
    /// The same version with another config or build: the state passes unchanged.
    Reconfigure,
}

/// The `{config, state}` document a migration transforms, built without re-parsing the state.
pub(crate) fn document(config: &Value, state: &[u8]) -> Vec<u8> {
    let mut doc = Vec::with_capacity(state.len() + 64);
    doc.extend_from_slice(b"{\"config\":");
    serde_json::to_writer(&mut doc, config).expect("a JSON value serialises");
    doc.extend_from_slice(b",\"state\":");
    doc.extend_from_slice(state);
    doc.push(b'}');
    doc
}

#[derive(Deserialize)]
struct Document {
    config: Box<RawValue>,
    state: Box<RawValue>,
}

/// Splits a migrated document into its config and state, leaving both as raw JSON.
pub(crate) fn split_document(bytes: &[u8]) -> serde_json::Result<(Box<RawValue>, Box<RawValue>)> {
    let doc: Document = serde_json::from_slice(bytes)?;
    Ok((doc.config, doc.state))
}

impl TransitionKind {
    /// Which change a switch of `plugin` from the version with metadata `old` to the one with
    /// metadata `new` is, or why the host refuses it: the very check a swap or a verification
    /// makes before it maps the new library (so a refused version is never `dlopen`ed).
    ///
    /// - a newer version must declare the running one in its `migrates_from`
    ///   ([`Upgrade`](TransitionKind::Upgrade));
    /// - the running version must declare an older one in its `downgrades_to`
    ///   ([`Downgrade`](TransitionKind::Downgrade));
    /// - the same version is a [`Reconfigure`](TransitionKind::Reconfigure), refused when the
    ///   two builds' state schemas differ ([`HostError::StateSchemaDiffers`]);
    /// - with `ruled` (the switch sends migration rules), the rules are the declaration: any
    ///   version change may be made with them.
    ///
    /// A declared requirement admits pre-releases by version order
    /// ([`version_matches`](crate::version_matches) with `prereleases`): `>=1.0.0, <2.0.0`
    /// covers a running `1.5.0-beta.1` but not `2.0.0-beta.1`, which belongs to the release it
    /// excludes. Resolution reads requirements the same way, so it plans no step this refuses.
    ///
    /// Otherwise [`HostError::NoMigration`] (or [`HostError::BadVersion`] for a version that is
    /// not semver). A client plans from the metadata in status
    /// ([`PluginStatus::metadata`](crate::PluginStatus::metadata)) and a staged artifact's, and
    /// so never plans a switch this refuses. The switch also requires the artifact to be of the
    /// same plugin id (checked apart, as `wrong_plugin`).
    ///
    /// ```
    /// use plugsync_host::{PluginMetadata, TransitionKind};
    ///
    /// let metadata = |version: &str, migrates_from: &[&str]| -> PluginMetadata {
    ///     serde_json::from_value(serde_json::json!({
    ///         "abi": 1, "abi_minor": 2, "id": "ma_cross", "version": version,
    ///         "kind": "strategy", "state_schema": 1, "framework": ">=0.1.0",
    ///         "dependencies": {}, "migrates_from": migrates_from, "downgrades_to": [],
    ///         "build": {"panic": "unwind", "sdk": "0.1.0", "rustc": "1.88.0"}
    ///     }))
    ///     .unwrap()
    /// };
    /// let v1 = metadata("1.0.0", &[]);
    /// let v2 = metadata("2.0.0", &[">=1.0.0, <2.0.0"]);
    ///
    /// let up = TransitionKind::between("ma_cross", &v1, &v2, false);
    /// assert_eq!(up.unwrap(), TransitionKind::Upgrade);
    /// // 2.0.0 declares no way down: the host refuses that switch, unless it brings rules.
    /// let down = TransitionKind::between("ma_cross", &v2, &v1, false);
    /// assert_eq!(down.unwrap_err().code(), "no_migration");
    /// let ruled = TransitionKind::between("ma_cross", &v2, &v1, true);
    /// assert_eq!(ruled.unwrap(), TransitionKind::Downgrade);
    /// ```
    pub fn between(
        plugin: &str,
        old: &PluginMetadata,
        new: &PluginMetadata,
        ruled: bool,
    ) -> Result<TransitionKind> {
        let version = |metadata: &PluginMetadata| {
            semver::Version::parse(&metadata.version).map_err(|e| HostError::BadVersion {
                plugin: plugin.to_owned(),
                field: "version",
                value: metadata.version.clone(),
                reason: e.to_string(),
            })
        };
        let (old_version, new_version) = (version(old)?, version(new)?);
        let (kind, field, declared, covered) = match new_version.cmp(&old_version) {
            // Two builds of one version must share a state schema: a reconfigure hands the
            // state over unchanged (rules may still transform it).
            std::cmp::Ordering::Equal if old.state_schema != new.state_schema && !ruled => {
                return Err(HostError::StateSchemaDiffers {
                    plugin: plugin.to_owned(),
                    version: new.version.clone(),
                    running: old.state_schema,
                    target: new.state_schema,
                });
            }
            std::cmp::Ordering::Equal => return Ok(TransitionKind::Reconfigure),
            std::cmp::Ordering::Greater => (
                TransitionKind::Upgrade,
                "migrates_from",
                &new.migrates_from,
                &old_version,
            ),
            std::cmp::Ordering::Less => (
                TransitionKind::Downgrade,
                "downgrades_to",
                &old.downgrades_to,
                &new_version,
            ),
        };
        // By version order, pre-releases included: a running pre-release is a fact, and a
        // plan resolved on any channel must not be refused here for it.
        let declares = declared
            .iter()
            .filter_map(|r| semver::VersionReq::parse(r).ok())
            .any(|r| version_matches(&r, covered, true));
        if declares || ruled {
            return Ok(kind);
        }
        Err(HostError::NoMigration {
            plugin: plugin.to_owned(),
            from: old.version.clone(),
            to: new.version.clone(),
            field,
            declared: if declared.is_empty() {
                "it declares none".to_owned()
            } else {
                format!("it declares `{}`", declared.join("`, `"))
            },
        })
    }
}

/// What migrates a document along a transition.
enum Migrator {
    /// A plugin library's own `migrate` (the newer version's, going up or down).
    Plugin(Arc<Library>),
    /// The rules the operator sent with the switch.
    Rules(Vec<MigrationRule>),
    /// No migration: the new version starts from `create(config)`, the state discarded.
    Fresh(Arc<Library>),
}

/// A version change, and what migrates it.
pub(crate) struct Transition {
    pub kind: TransitionKind,
    migrator: Migrator,
    plugin: String,
    from: String,
    to: String,
}

impl Transition {
    /// The change from `old` to `new` by the migration the plugins declare.
    pub(crate) fn between(
        plugin: &str,
        old: &Arc<Library>,
        new: &Arc<Library>,
    ) -> Result<Transition> {
        Transition::new(plugin, old, new, None)
    }

    /// The change from `old` to `new` discarding the state: the new version starts from
    /// `create(config)`, so no migration need be declared between them.
    pub(crate) fn fresh(
        plugin: &str,
        old: &Arc<Library>,
        new: &Arc<Library>,
    ) -> Result<Transition> {
        let kind = TransitionKind::between(plugin, &old.metadata, &new.metadata, true)?;
        Ok(Transition {
            kind,
            migrator: Migrator::Fresh(new.clone()),
            plugin: plugin.to_owned(),
            from: old.metadata.version.clone(),
            to: new.metadata.version.clone(),
        })
    }

    /// The change from `old` to `new`, by `rules` when given, else as the plugins declare.
    pub(crate) fn new(
        plugin: &str,
        old: &Arc<Library>,
        new: &Arc<Library>,
        rules: Option<&[MigrationRule]>,
    ) -> Result<Transition> {
        let kind = TransitionKind::between(plugin, &old.metadata, &new.metadata, rules.is_some())?;
        let migrator = match rules {
            Some(rules) => Migrator::Rules(rules.to_vec()),
            None if kind == TransitionKind::Downgrade => Migrator::Plugin(old.clone()),
            None => Migrator::Plugin(new.clone()),
        };
        Ok(Transition {
            kind,
            migrator,
            plugin: plugin.to_owned(),
            from: old.metadata.version.clone(),
            to: new.metadata.version.clone(),
        })
    }
}

/// A migrated config and state, ready to create the new instance from.
pub(crate) struct Migrated {
    pub config: Value,
    pub config_bytes: Vec<u8>,
    pub state: Vec<u8>,
}

/// Migrates a config and state along `transition` (a reconfigure passes the state unchanged);
/// `desired`, when given, replaces the migrated config.
pub(crate) fn migrate(
    transition: &Transition,
    config: &Value,
    state: &[u8],
    desired: Option<&Value>,
) -> Result<Migrated> {
    let (config, state) = match &transition.migrator {
        Migrator::Rules(rules) => {
            let bad_state = |e: serde_json::Error| HostError::BadSnapshot {
                plugin: transition.plugin.clone(),
                reason: format!("the state is not JSON: {e}"),
            };
            let doc = serde_json::json!({
                "config": config,
                "state": serde_json::from_slice::<Value>(state).map_err(bad_state)?,
            });
            let migrated = rules::apply(rules, &doc).map_err(|error| HostError::MigrationRule {
                plugin: transition.plugin.clone(),
                from: transition.from.clone(),
                to: transition.to.clone(),
                error: Box::new(error),
            })?;
            let config = desired
                .cloned()
                .unwrap_or_else(|| migrated["config"].clone());
            let state = serde_json::to_vec(&migrated["state"]).expect("a JSON value serialises");
            (config, state)
        }
        Migrator::Fresh(library) => {
            // The new version's own fresh state for the config: restoring it into a new
            // instance gives that instance as `create(config)` left it.
            let config = desired.unwrap_or(config).clone();
            let config_bytes = serde_json::to_vec(&config).expect("a JSON value serialises");
            let state = Instance::create(library.clone(), &config_bytes)
                .and_then(|fresh| fresh.snapshot())
                .map_err(|f| f.into_error(library, "create"))?;
            (config, state)
        }
        Migrator::Plugin(_) if transition.kind == TransitionKind::Reconfigure => {
            (desired.unwrap_or(config).clone(), state.to_vec())
        }
        Migrator::Plugin(library) => {
            let migrated = library
                .migrate(&document(config, state), &transition.from, &transition.to)
                .map_err(|f| f.into_error(library, "migrate"))?;
            let bad = |e: serde_json::Error| HostError::BadMigrationOutput {
                plugin: library.metadata.id.clone(),
                version: library.metadata.version.clone(),
                reason: e.to_string(),
            };
            let (migrated_config, migrated_state) = split_document(&migrated).map_err(bad)?;
            let config = match desired {
                Some(desired) => desired.clone(),
                None => serde_json::from_str(migrated_config.get()).map_err(bad)?,
            };
            (config, migrated_state.get().as_bytes().to_vec())
        }
    };
    let config_bytes = serde_json::to_vec(&config).expect("a JSON value serialises");
    Ok(Migrated {
        config,
        config_bytes,
        state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn metadata(version: &str, migrates_from: &[&str], downgrades_to: &[&str]) -> PluginMetadata {
        serde_json::from_value(serde_json::json!({
            "abi": 1, "abi_minor": 2, "id": "ma_cross", "version": version,
            "kind": "strategy", "state_schema": 1, "framework": ">=0.1.0",
            "dependencies": {}, "migrates_from": migrates_from, "downgrades_to": downgrades_to,
            "build": {"panic": "unwind", "sdk": "0.1.0", "rustc": "1.88.0"}
        }))
        .unwrap()
    }

    /// A running pre-release is covered by a requirement that spans it by version order (which
    /// semver's own rule would refuse), except the pre-releases of an excluded upper bound.
    #[test]
    fn declared_requirements_cover_running_prereleases_by_version_order() {
        let v2 = metadata("2.0.0", &[">=1.0.0, <2.0.0"], &[">=1.0.0, <2.0.0"]);
        let beta = metadata("1.5.0-beta.1", &[], &[]);
        let up = TransitionKind::between("ma_cross", &beta, &v2, false);
        assert_eq!(up.unwrap(), TransitionKind::Upgrade);
        let down = TransitionKind::between("ma_cross", &v2, &beta, false);
        assert_eq!(down.unwrap(), TransitionKind::Downgrade);

        let own_beta = metadata("2.0.0-beta.1", &[], &[]);
        let up = TransitionKind::between("ma_cross", &own_beta, &v2, false);
        assert_eq!(up.unwrap_err().code(), "no_migration");
    }

    #[test]
    fn documents_split_back_into_config_and_state() {
        let doc = document(&serde_json::json!({"fast": 5}), br#"{"closes":[1.5,2]}"#);
        let (config, state) = split_document(&doc).unwrap();
        assert_eq!(config.get(), r#"{"fast":5}"#);
        assert_eq!(state.get(), r#"{"closes":[1.5,2]}"#);
    }
}
