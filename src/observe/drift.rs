//! Drift: a plugin that runs other than the last change plugsync's reconciler applied to it.
//!
//! The host keeps, per plugin, an [`AppliedRecord`]: what was done last, the version and
//! config hash it left, who asked (`origin`) and when. A plugin drifted when
//!
//! - its last record comes from anything but the reconciler ([`RECONCILER_TOOLS`]): a change
//!   by hand through the API, a host started with `--load`, a script; or there is no record
//!   (installed before the host kept them);
//! - it runs another artifact or config than its record says (the record is the reconciler's,
//!   yet something changed under it);
//! - recovery started it with a fresh state (its positions are gone).
//!
//! A plugin with a step in progress is not judged: it runs the step's new version until the
//! step's commit or rollback, and the plan reports the step instead.

use plugsync_host::control::api::RunningState;
use plugsync_host::{AppliedOperation, AppliedRecord, Digest, PluginStatus, VersionRef};
use schemars::JsonSchema;
use serde::Serialize;

/// The `origin.tool` names of plugsync's reconciler: `plugsync reconcile` and the sidecar
/// `plugsync run`. A change whose origin is any other tool is a change by hand.
pub const RECONCILER_TOOLS: [&str; 2] = ["plugsync-reconcile", "plugsync-run"];

/// One plugin that drifted, and why.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Drift {
    /// The plugin.
    pub plugin: String,
    /// Every way it drifted (at least one).
    pub kinds: Vec<DriftKind>,
    /// Its last applied record (who and when), if the host has one.
    pub record: Option<AppliedRecord>,
}

/// One way a plugin drifted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum DriftKind {
    /// The host has no record of how it came to run (installed before the host kept them).
    Unrecorded,
    /// Its last change was not the reconciler's.
    #[serde(rename_all = "camelCase")]
    ChangedElsewhere {
        /// What was done (`install`, `commit`, `load`…).
        operation: AppliedOperation,
        /// The tool that asked (`api`, a script…); `None`: the host's own code, in process.
        tool: Option<String>,
        /// The client that asked, if it said.
        client: Option<String>,
    },
    /// It runs another artifact than its record left.
    #[serde(rename_all = "camelCase")]
    ArtifactDiffers {
        /// What the record says.
        recorded: VersionRef,
        /// What runs.
        running: VersionRef,
    },
    /// It runs another config than its record left.
    #[serde(rename_all = "camelCase")]
    ConfigDiffers {
        /// The record's config hash.
        #[schemars(with = "String")]
        recorded: Digest,
        /// The running config's hash.
        #[schemars(with = "String")]
        running: Digest,
    },
    /// Recovery started it with a fresh state: the positions it held are gone.
    FreshState,
}

/// Every plugin of `running` that drifted, in the host's order (see the module docs).
pub fn drift(running: &RunningState) -> Vec<Drift> {
    running
        .status
        .plugins
        .iter()
        .filter(|plugin| plugin.pending.is_none())
        .filter_map(plugin_drift)
        .collect()
}

fn plugin_drift(plugin: &PluginStatus) -> Option<Drift> {
    let mut kinds = Vec::new();
    match &plugin.applied {
        None => kinds.push(DriftKind::Unrecorded),
        Some(record) => {
            let tool = record.origin.as_ref().map(|o| o.tool.as_str());
            if !tool.is_some_and(|tool| RECONCILER_TOOLS.contains(&tool)) {
                kinds.push(DriftKind::ChangedElsewhere {
                    operation: record.operation,
                    tool: tool.map(str::to_owned),
                    client: record.origin.as_ref().and_then(|o| o.client.clone()),
                });
            }
            if record.version != plugin.version {
                kinds.push(DriftKind::ArtifactDiffers {
                    recorded: record.version.clone(),
                    running: plugin.version.clone(),
                });
            }
            if record.config_hash != plugin.config_hash {
                kinds.push(DriftKind::ConfigDiffers {
                    recorded: record.config_hash,
                    running: plugin.config_hash,
                });
            }
            if record.fresh_state {
                kinds.push(DriftKind::FreshState);
            }
        }
    }
    (!kinds.is_empty()).then(|| Drift {
        plugin: plugin.plugin.clone(),
        kinds,
        record: plugin.applied.clone(),
    })
}
