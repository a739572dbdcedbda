//! A registry's index: per plugin, every published version and what a resolver or planner
//! needs to know of it without downloading it.
//!
//! Layout of a registry (a directory, or the same served over HTTP(S)):
//!
//! ```text
//! index/<plugin id>.json                       an IndexFile
//! artifacts/<plugin id>/<version>/<file>       the library, as built
//! artifacts/<plugin id>/<version>/<file>.sig   its signature (128 hex digits), if signed
//! .publish.lock                                held while a publisher changes the registry
//! ```

use std::collections::BTreeMap;

use plugsync_host::Digest;
use plugsync_plugin::PluginMetadata;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::error::{DigestMismatch, RegistryError};
use crate::spec::model::{Channel, Migration};

/// The index of one plugin: `index/<id>.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "plugsync registry index")]
pub struct IndexFile {
    /// The plugin id.
    pub plugin: String,
    /// Every version published, lowest first (semver order).
    pub versions: Vec<IndexEntry>,
}

/// One published version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IndexEntry {
    /// Its semantic version.
    pub version: String,
    /// The channel it is on (`plugsync promote` moves it).
    pub channel: Channel,
    /// Withdrawn from resolution (`plugsync yank`); a lock that names it still installs it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub yanked: bool,
    /// The artifact's sha256.
    #[schemars(with = "String")]
    pub sha256: Digest,
    /// The artifact's path in the registry, `artifacts/<id>/<version>/<file>`.
    pub file: String,
    /// The publisher's ed25519 signature of the artifact (128 hex digits) over its id, version
    /// and sha256, if it was signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<String>,
    /// `ABI_MAJOR.ABI_MINOR` the library was built for.
    pub abi: String,
    /// The host framework versions it runs in (a semver requirement).
    pub framework: String,
    /// Kind of plugin (`strategy`, `risk`).
    pub kind: String,
    /// Its state schema version.
    pub state_schema: u32,
    /// Other plugins it needs, by id, each with a semver requirement.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dependencies: BTreeMap<String, String>,
    /// Requirements on the versions it migrates state up from.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrates_from: Vec<String>,
    /// Requirements on the older versions it migrates state down to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub downgrades_to: Vec<String>,
    /// Declarative migrations published with it (used where the plugin declares none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<Migration>,
}

impl IndexEntry {
    /// `bytes`, if they are this entry's artifact (their sha256 the one recorded).
    pub fn check(&self, plugin: &str, bytes: Vec<u8>) -> Result<Vec<u8>, RegistryError> {
        let found = Digest::of(&bytes);
        if found != self.sha256 {
            return Err(RegistryError::DigestMismatch(Box::new(DigestMismatch {
                plugin: plugin.to_owned(),
                version: self.version.clone(),
                file: self.file.clone(),
                expected: self.sha256,
                found,
            })));
        }
        Ok(bytes)
    }

    /// The entry of an artifact with `metadata`, published on `channel`.
    pub fn of(
        metadata: &PluginMetadata,
        sha256: Digest,
        file: String,
        channel: Channel,
        signature: Option<String>,
    ) -> IndexEntry {
        IndexEntry {
            version: metadata.version.clone(),
            channel,
            yanked: false,
            sha256,
            file,
            signature,
            abi: format!("{}.{}", metadata.abi, metadata.abi_minor),
            framework: metadata.framework.clone(),
            kind: metadata.kind.clone(),
            state_schema: metadata.state_schema,
            dependencies: metadata.dependencies.clone(),
            migrates_from: metadata.migrates_from.clone(),
            downgrades_to: metadata.downgrades_to.clone(),
            migrations: Vec::new(),
        }
    }
}
