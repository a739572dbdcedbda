//! Rollback points: what a plugin was just before a step changed it — its version and
//! artifact, its config, its state (as the host snapshotted it, with the sha256 the host gave
//! and plugsync checked), and what the other plugins ran — kept in the journal's database
//! until they expire (`policy.rollbackRetention`, 7 days unless plugins.yaml says otherwise).
//!
//! A point is this client's own record, like the journal: what it saw before it changed the
//! host. `plugsync rollback --restore-snapshot` restores a point's state into the version it
//! was taken from (after showing its difference from the live state); `plugsync gc` drops the
//! expired ones, and every reconcile does it on its way out.

use std::time::Duration;

use plugsync_host::{Digest, StateSnapshot};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How long a rollback point is kept when plugins.yaml's `policy.rollbackRetention` says
/// nothing.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(7 * 24 * 3600);

/// A plugin as it was just before a step changed it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RollbackPoint {
    /// The step about to change it.
    pub step_id: String,
    /// The plan the step belongs to.
    pub plan_id: String,
    /// The plugin.
    pub plugin: String,
    /// When it was taken, in unix milliseconds (the plan's time: `PLUGSYNC_NOW` in tests).
    pub at_ms: i64,
    /// When it expires, in unix milliseconds.
    pub expires_at_ms: i64,
    /// The version that ran.
    pub version: String,
    /// Its artifact.
    pub sha256: Digest,
    /// The config it ran with.
    pub config: Value,
    /// Its state as the host gave it, its sha256 checked when taken (`None`: the host gave no
    /// state for it).
    pub state: Option<StateSnapshot>,
    /// What every plugin ran then (the dependencies it ran beside), sorted.
    pub running: Vec<RunningVersion>,
    /// Its place among the journal's records when it was kept (set by `Store::save_point`):
    /// the order points were taken in, whatever clock timed them.
    #[serde(default)]
    pub seq: u64,
}

/// One plugin's version, as a rollback point saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RunningVersion {
    /// The plugin.
    pub plugin: String,
    /// Its version.
    pub version: String,
    /// Its artifact.
    pub sha256: Digest,
}

impl RollbackPoint {
    /// Whether it has expired at `now_ms`.
    pub fn expired(&self, now_ms: i64) -> bool {
        self.expires_at_ms <= now_ms
    }
}
