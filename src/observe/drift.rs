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
pub const RECONCILER_TOOLS: [&str; 2] = [crate::ops::RECONCILE_TOOL, crate::ops::RUN_TOOL];

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

/// Every plugin of `running` that drifted, in the host's order (see the module docs), then
/// the plugins unloaded by anything but the reconciler (a plugin removed by hand is drift
/// too: plugins.yaml may still name it).
pub fn drift(running: &RunningState) -> Vec<Drift> {
    let status = &running.status;
    let loaded = (status.plugins.iter())
        .filter(|plugin| plugin.pending.is_none())
        .filter_map(plugin_drift);
    let unloaded = status.unloaded.iter().filter_map(|unloaded| {
        let record = &unloaded.applied;
        let elsewhere = changed_elsewhere(record)?;
        Some(Drift {
            plugin: unloaded.plugin.clone(),
            kinds: vec![elsewhere],
            record: Some(record.clone()),
        })
    });
    loaded.chain(unloaded).collect()
}

/// [`DriftKind::ChangedElsewhere`] when `record` is not the reconciler's.
fn changed_elsewhere(record: &AppliedRecord) -> Option<DriftKind> {
    let tool = record.origin.as_ref().map(|o| o.tool.as_str());
    if tool.is_some_and(|tool| RECONCILER_TOOLS.contains(&tool)) {
        return None;
    }
    Some(DriftKind::ChangedElsewhere {
        operation: record.operation,
        tool: tool.map(str::to_owned),
        client: record.origin.as_ref().and_then(|o| o.client.clone()),
    })
}

fn plugin_drift(plugin: &PluginStatus) -> Option<Drift> {
    let mut kinds = Vec::new();
    match &plugin.applied {
        None => kinds.push(DriftKind::Unrecorded),
        Some(record) => {
            kinds.extend(changed_elsewhere(record));
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

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;

    const RUNS: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const OTHER: &str = "2222222222222222222222222222222222222222222222222222222222222222";
    const CONFIG: &str = "3333333333333333333333333333333333333333333333333333333333333333";

    fn record(tool: Option<&str>, digest: &str, fresh_state: bool) -> Value {
        json!({
            "operation": "commit", "step_id": null,
            "version": {"version": "1.0.0", "digest": digest},
            "config_hash": CONFIG,
            "origin": tool.map(|tool| json!({"tool": tool, "client": "ops"})),
            "at": 0, "fresh_state": fresh_state,
        })
    }

    /// A host running `risk_model` 1.0.0 (artifact `RUNS`) with `applied`, and `unloaded`.
    fn running(applied: Value, pending: bool, unloaded: Value) -> RunningState {
        let pending = pending.then(|| {
            json!({"step_id": "s", "previous": null, "calls_since_switch": 0,
                   "journal_complete": true, "lease_expires_at": null, "soak": {}})
        });
        let metadata = json!({
            "abi": 1, "abi_minor": 2, "id": "risk_model", "version": "1.0.0", "kind": "risk",
            "state_schema": 1, "framework": ">=0.1", "dependencies": {}, "migrates_from": [],
            "downgrades_to": [], "build": {"panic": "unwind", "sdk": "0.1.0", "rustc": "1.95"},
        });
        serde_json::from_value(json!({
            "abi": 1, "framework": "0.1.0", "now": 0, "resident": [], "resident_cap": 8,
            "live_instances": 1, "recovered": null, "persist_error": null,
            "lease": {"holder": null, "last_epoch": 0, "breaks": []},
            "restraints": {"freeze": null, "holds": {}, "failed": [], "halts": {}, "forced": []},
            "unloaded": unloaded,
            "api": {"version": "1.1", "capabilities": []},
            "plugins": [{
                "plugin": "risk_model",
                "version": {"version": "1.0.0", "digest": RUNS},
                "config": {}, "config_hash": CONFIG, "state_schema": 1, "metadata": metadata,
                "health": {"status": "ok"}, "fault": null,
                "counters": {"calls": 0, "errors": 0, "panics": 0}, "last_call_at": null,
                "pending": pending, "last_step": null, "last_rollback": null, "busy": false,
                "stuck": null, "fail_closed": false, "applied": applied,
            }],
        }))
        .unwrap()
    }

    fn kinds(running: &RunningState) -> Vec<String> {
        drift(running)
            .iter()
            .map(|d| format!("{} {}", d.plugin, serde_json::to_string(&d.kinds).unwrap()))
            .collect()
    }

    #[test]
    fn drift_is_whatever_the_reconciler_did_not_leave() {
        let none: Vec<&str> = Vec::new();
        let cases: Vec<(&str, RunningState, Vec<&str>)> = vec![
            (
                "the reconciler's record, matching: no drift",
                running(
                    record(Some("plugsync-reconcile"), RUNS, false),
                    false,
                    json!([]),
                ),
                none.clone(),
            ),
            (
                "the sidecar's record counts as the reconciler's",
                running(record(Some("plugsync-run"), RUNS, false), false, json!([])),
                none.clone(),
            ),
            (
                "no record at all",
                running(Value::Null, false, json!([])),
                vec![r#"risk_model [{"kind":"unrecorded"}]"#],
            ),
            (
                "a change by hand through the API",
                running(record(Some("api"), RUNS, false), false, json!([])),
                vec![
                    r#"risk_model [{"kind":"changedElsewhere","operation":"commit","tool":"api","client":"ops"}]"#,
                ],
            ),
            (
                "the host's own code (no origin)",
                running(record(None, RUNS, false), false, json!([])),
                vec![
                    r#"risk_model [{"kind":"changedElsewhere","operation":"commit","tool":null,"client":null}]"#,
                ],
            ),
            (
                "another artifact runs than the reconciler left",
                running(
                    record(Some("plugsync-reconcile"), OTHER, false),
                    false,
                    json!([]),
                ),
                vec![
                    r#"risk_model [{"kind":"artifactDiffers","recorded":{"version":"1.0.0","digest":"2222222222222222222222222222222222222222222222222222222222222222"},"running":{"version":"1.0.0","digest":"1111111111111111111111111111111111111111111111111111111111111111"}}]"#,
                ],
            ),
            (
                "recovery started it fresh",
                running(
                    record(Some("plugsync-reconcile"), RUNS, true),
                    false,
                    json!([]),
                ),
                vec![r#"risk_model [{"kind":"freshState"}]"#],
            ),
            (
                "a step in progress is not judged",
                running(record(Some("api"), OTHER, false), true, json!([])),
                none.clone(),
            ),
            (
                "a plugin unloaded by hand",
                running(
                    record(Some("plugsync-reconcile"), RUNS, false),
                    false,
                    json!([{"plugin": "ma_cross", "applied": record(Some("ops-script"), OTHER, false)}]),
                ),
                vec![
                    r#"ma_cross [{"kind":"changedElsewhere","operation":"commit","tool":"ops-script","client":"ops"}]"#,
                ],
            ),
            (
                "a plugin unloaded by the reconciler",
                running(
                    record(Some("plugsync-reconcile"), RUNS, false),
                    false,
                    json!([{"plugin": "ma_cross", "applied": record(Some("plugsync-reconcile"), OTHER, false)}]),
                ),
                none.clone(),
            ),
        ];
        for (name, running, expected) in cases {
            assert_eq!(kinds(&running), expected, "{name}");
        }
        // Another config than the reconciler left.
        let mut reconfigured = running(
            record(Some("plugsync-reconcile"), RUNS, false),
            false,
            json!([]),
        );
        reconfigured.status.plugins[0].config_hash = Digest::of(b"{\"max_position\":1}");
        assert_eq!(
            kinds(&reconfigured),
            vec![format!(
                r#"risk_model [{{"kind":"configDiffers","recorded":"{CONFIG}","running":"{}"}}]"#,
                Digest::of(b"{\"max_position\":1}")
            )]
        );
    }
}
