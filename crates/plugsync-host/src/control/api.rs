//! The wire types of the control API: what each request sends and each response returns.
//!
//! Requests refuse unknown fields (a misspelt `lease_ms` must not silently mean "no lease").
//! Responses reuse the runtime's own types ([`RuntimeStatus`], [`SwapReport`](crate::SwapReport), …), so the API
//! says exactly what the runtime reports. The JSON Schema of each is in the OpenAPI document
//! ([`openapi`](super::openapi)); the running state's is also `schemas/running-state.schema.json`.

use std::collections::BTreeMap;

use plugsync_plugin::PluginMetadata;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::digest::Digest;
use crate::persist::Origin;
use crate::reconcile_lease::{LeaseBreak, LeaseHolder};
use crate::rollback::VersionRef;
use crate::rules::MigrationRule;
use crate::runtime::{RuntimeStatus, StateSnapshot};
use crate::steward::SoakThresholds;
use crate::swap::{SwapMode, SwitchWhen};
use crate::verify::{VerifyReport, VerifySpec};

/// The body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// What went wrong.
    pub error: ErrorDetail,
}

/// What went wrong, for a program (`code`) and for a person (`message`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorDetail {
    /// A stable, machine-readable code: the runtime's
    /// [`HostError::code`](crate::HostError::code) (`not_loaded`, `step_in_progress`, …) or one
    /// of the API's own (`unauthorized`, `not_this_client`, `bad_request`, `body_too_large`,
    /// `bad_signature`, `signature_required`, `not_found`, `method_not_allowed`, `internal`).
    pub code: String,
    /// What happened and what to do about it.
    pub message: String,
}

/// The query of `GET /v1/status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusQuery {
    /// Also return every plugin's state (they hold positions: ask only when needed).
    #[serde(default)]
    pub with_state: bool,
}

/// The version of the control API this host serves, `1.<minor>`. A minor only adds (routes,
/// fields, capabilities); a change a client built for `1.x` could not read would be `2.0`.
/// `1.0` was the API before the lease; `1.1` (not yet released, so still growing) adds the
/// reconcile lease, owned steps, named clients, `GET`/`HEAD /v1/artifacts/{sha256}`, an
/// origin's `forced` reason and every capability of [`Capability::ALL`].
pub const API_VERSION: &str = "1.1";

/// Something a host's control API does that a client may depend on: its name is what
/// [`ApiInfo::capabilities`] lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// Each plugin's applied record (what was applied, by whom, from which plan) in status.
    AppliedRecord,
    /// `GET` and `HEAD /v1/artifacts/{sha256}`: whether the store has an artifact.
    ArtifactHead,
    /// `POST /v1/plugins/{plugin}/call` is served (the host was started with `allow_calls`).
    Calls,
    /// Declared dependencies are enforced on install, switch and unload.
    Dependencies,
    /// The reconcile lease: `POST /v1/lease` and `x-plugsync-lease-epoch` on mutating steps.
    Lease,
    /// An install may carry `lease_ms` (and `soak`): a step committed or rolled back (unloaded)
    /// like a switch.
    LeasedInstall,
    /// A commit may ask for `min_calls` served since the switch.
    MinCalls,
    /// Each token names a client; the lease is held in the name of the client whose token a
    /// request carries.
    NamedClients,
    /// A commit or rollback ends only the pending step switched with its step id.
    OwnedSteps,
    /// `POST /v1/steps/{step_id}/restore` of an operator's snapshot.
    Restore,
    /// `POST /v1/restraints`: freeze, holds, failed marks, halts.
    Restraints,
}

impl Capability {
    /// Every capability a host of this release may list.
    pub const ALL: [Capability; 11] = [
        Capability::AppliedRecord,
        Capability::ArtifactHead,
        Capability::Calls,
        Capability::Dependencies,
        Capability::Lease,
        Capability::LeasedInstall,
        Capability::MinCalls,
        Capability::NamedClients,
        Capability::OwnedSteps,
        Capability::Restore,
        Capability::Restraints,
    ];

    /// Its name in [`ApiInfo::capabilities`].
    pub fn name(self) -> &'static str {
        match self {
            Capability::AppliedRecord => "applied_record",
            Capability::ArtifactHead => "artifact_head",
            Capability::Calls => "calls",
            Capability::Dependencies => "dependencies",
            Capability::Lease => "lease",
            Capability::LeasedInstall => "leased_install",
            Capability::MinCalls => "min_calls",
            Capability::NamedClients => "named_clients",
            Capability::OwnedSteps => "owned_steps",
            Capability::Restore => "restore",
            Capability::Restraints => "restraints",
        }
    }
}

/// Which control API a host serves, so that a client built from another release can refuse
/// or adapt (`api` in `GET /v1/status`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ApiInfo {
    /// The API's version, `1.<minor>`: a minor only adds.
    pub version: String,
    /// What this host serves, sorted by name: `applied_record` (each plugin's in status),
    /// `artifact_head` (`GET`/`HEAD /v1/artifacts/{sha256}`), `calls` (`POST
    /// /v1/plugins/{plugin}/call`, only when the host allows calls), `dependencies` (declared
    /// dependencies enforced), `lease` (the reconcile lease), `leased_install` (an install with a
    /// lease, committed or unloaded like a switch), `min_calls` (a commit that waits
    /// for evidence), `named_clients` (a token names a client, the lease's owner), `owned_steps`
    /// (a commit or rollback ends only the step switched with its id), `restore` (an operator's
    /// snapshot restored), `restraints` (freeze, holds, failed marks, halts). A client ignores a
    /// name it does not know.
    pub capabilities: Vec<String>,
}

impl ApiInfo {
    /// What this release serves; `calls` only when `allow_calls`.
    pub fn served(allow_calls: bool) -> ApiInfo {
        let mut capabilities: Vec<String> = Capability::ALL
            .into_iter()
            .filter(|&capability| allow_calls || capability != Capability::Calls)
            .map(|capability| capability.name().to_owned())
            .collect();
        capabilities.sort_unstable();
        ApiInfo {
            version: API_VERSION.to_owned(),
            capabilities,
        }
    }

    /// Whether the host lists `capability`.
    pub fn has(&self, capability: Capability) -> bool {
        self.capabilities
            .iter()
            .any(|name| name == capability.name())
    }
}

/// What the host runs: the runtime's status, which control API serves it, and the plugins'
/// states when asked for.
///
/// Its JSON shape is a contract (`plugsync status --output json` prints it): its schema is
/// `schemas/running-state.schema.json`, checked by a test. A client reads it back into this
/// very type (a round trip gives back an equal value).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunningState {
    /// The runtime's status.
    #[serde(flatten)]
    pub status: RuntimeStatus,
    /// The control API's version and capabilities (a host from before API 1.1 sends none:
    /// read that as `1.0`, with no capabilities).
    pub api: ApiInfo,
    /// Each loaded plugin's state, by plugin id; only with `with_state=true`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub states: Option<BTreeMap<String, StateSnapshot>>,
}

impl RunningState {
    /// What `runtime` runs, as `GET /v1/status` answers it (with every plugin's state when
    /// `with_state`; the capability `calls` when `allow_calls`): for a client in the same
    /// process as the runtime, the same document a remote one reads.
    pub fn of(
        runtime: &crate::Runtime,
        with_state: bool,
        allow_calls: bool,
    ) -> Result<RunningState, crate::HostError> {
        let status = runtime.status();
        let states = if with_state {
            let mut states = BTreeMap::new();
            for plugin in &status.plugins {
                match runtime.snapshot(&plugin.plugin) {
                    Ok(snapshot) => {
                        states.insert(plugin.plugin.clone(), snapshot);
                    }
                    // Unloaded since the status was taken: it is not running any more.
                    Err(crate::HostError::NotLoaded { .. }) => {}
                    Err(error) => return Err(error),
                }
            }
            Some(states)
        } else {
            None
        };
        Ok(RunningState {
            status,
            api: ApiInfo::served(allow_calls),
            states,
        })
    }
}

/// The response of `PUT /v1/artifacts/{sha256}/{file_name}`: the artifact is in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Staged {
    /// Its sha256 (the one in the path, checked).
    pub sha256: Digest,
    /// Its file name in the store.
    pub file: String,
    /// Its metadata, read from its `.plugsync` section without running it.
    #[schemars(with = "MetadataSchema")]
    pub metadata: PluginMetadata,
}

/// The response of `GET /v1/artifacts/{sha256}`: the store has the artifact, its bytes
/// verified against the digest and its metadata checked just now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct StoredArtifactInfo {
    /// Its sha256.
    pub sha256: Digest,
    /// Its file name in the store (the name it was staged with).
    pub file: String,
    /// Its size in bytes.
    pub size: u64,
    /// Whether its publisher's signature is kept beside it.
    pub signed: bool,
}

/// The body of `POST /v1/steps/{step_id}/verify`: checks a staged artifact against what a
/// plugin runs, on throwaway instances (nothing live changes, no step is recorded).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyRequest {
    /// Plugin id.
    pub plugin: String,
    /// The staged artifact to check.
    pub artifact: Digest,
    /// The config the new version would run with; the running config migrated when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    /// The checks (health by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifySpec>,
    /// Declarative migration rules to migrate the state by, instead of the plugins' own
    /// `migrate` (as the switch would be sent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_rules: Option<Vec<MigrationRule>>,
}

/// The response of `POST /v1/steps/{step_id}/verify`.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
pub struct Verified {
    /// Whether the new version may be switched in (health and every probe passed;
    /// differential rows are shown, not judged).
    pub passed: bool,
    /// What was checked and found.
    #[serde(flatten)]
    pub report: VerifyReport,
}

/// The body of `POST /v1/steps/{step_id}/install`: loads a staged artifact into an empty slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallRequest {
    /// The staged artifact.
    pub artifact: Digest,
    /// Its config.
    pub config: Value,
    /// Checkpoint the plugin's state this often (and at each commit), for a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every_ms: Option<u64>,
    /// Refuse calls while the plugin is faulted by a panic, instead of serving on (for risk
    /// plugins); default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fail_closed: bool,
    /// Install as a step with this lease (milliseconds): the plugin serves at once, but joins
    /// the committed set only when a commit with the same step id arrives in time; otherwise,
    /// or on a rollback, a panic, a failed health check or a crossed soak threshold, the host
    /// unloads it and marks the version failed. A restart before the commit comes back
    /// without it. Without a lease the install is committed at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// What the install must stay within until its commit (with `lease_ms` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<SoakThresholds>,
    /// Who asks (recorded in the plugin's applied record and the host's log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// Go ahead despite a freeze or a failed mark (and, for a switch, a hold), for this reason
    /// (recorded with who gave it); without it such a change is refused with 409.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<String>,
}

/// The body of `POST /v1/steps/{step_id}/switch`: the runtime's
/// [`SwapRequest`](crate::SwapRequest), its step id taken from the path.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SwitchRequest {
    /// Plugin id.
    pub plugin: String,
    /// The staged artifact to switch to.
    pub artifact: Digest,
    /// The config to run with; the running config as the migration left it when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    /// Checks before the switch (health by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifySpec>,
    /// How to switch (`optimistic` by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SwapMode>,
    /// How many calls the step's journal keeps for rollback by replay (100 000 by default, at
    /// most 1 000 000: more is refused with `journal_too_large`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1_000_000))]
    pub journal_capacity: Option<usize>,
    /// Milliseconds to commit in after the switch; when they run out, the host rolls the step
    /// back by itself. No lease: the step waits for a commit or a rollback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_ms: Option<u64>,
    /// Thresholds watched during the lease (a panic always rolls back at once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<SoakThresholds>,
    /// Declarative migration rules to use instead of the plugins' own `migrate`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration_rules: Option<Vec<MigrationRule>>,
    /// Discard the running state: the new version starts from `create(config)` (give the
    /// config), switched under the lock; no migration need be declared. The report says
    /// `state_discarded`, and the commit's applied record `fresh_state`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fresh_state: bool,
    /// Who asks (recorded in the plugin's applied record and the host's log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// Go ahead despite a freeze or a failed mark (and, for a switch, a hold), for this reason
    /// (recorded with who gave it); without it such a change is refused with 409.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<String>,
    /// Switch only when these hold (`when-idle`, `when-flat`), judged under the slot lock at
    /// the switch: otherwise 409 `not_yet`, nothing applied, the step id not spent (ask again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<SwitchWhen>,
}

/// The body of `POST /v1/steps/{step_id}/commit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitRequest {
    /// Plugin id.
    pub plugin: String,
    /// Commit only once the new version has served at least this many calls since its switch;
    /// fewer: 409 `not_enough_calls`, nothing committed, the step id not spent (ask again).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_calls: Option<u64>,
    /// Who asks (recorded in the plugin's applied record and the host's log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// The body of `POST /v1/steps/{step_id}/restore`: a state snapshot restored into the running
/// plugin, on an operator's explicit choice.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// The snapshot (as `GET /v1/plugins/{plugin}/state` gives it): its sha256 is checked, and
    /// it must be of the version running.
    pub snapshot: StateSnapshot,
    /// Who asks (recorded in the host's log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
}

/// The response of `POST /v1/steps/{step_id}/restore`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Restored {
    /// Plugin id.
    pub plugin: String,
    /// The version it was restored into.
    pub version: VersionRef,
    /// The sha256 of the state restored.
    pub sha256: Digest,
}

/// The body of `rollback` and `unload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PluginRequest {
    /// Plugin id.
    pub plugin: String,
    /// Who asks (recorded in the plugin's applied record and the host's log).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Origin>,
    /// Go ahead despite a freeze or a failed mark (and, for a switch, a hold), for this reason
    /// (recorded with who gave it); without it such a change is refused with 409.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force: Option<String>,
}

/// The response of `POST /v1/steps/{step_id}/commit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Committed {
    /// Plugin id.
    pub plugin: String,
    /// The version now committed (the one a restart comes back on).
    pub version: VersionRef,
}

/// The response of `POST /v1/steps/{step_id}/unload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Unloaded {
    /// Plugin id.
    pub plugin: String,
    /// The version unloaded (its code stays mapped, never `dlclose`d).
    pub version: VersionRef,
}

/// The schema of [`PluginMetadata`] (a type of the plugin SDK, which has no schema
/// dependency); a test checks it names the same fields.
#[derive(JsonSchema)]
#[schemars(rename = "PluginMetadata")]
#[allow(dead_code)] // only its schema is used
pub(crate) struct MetadataSchema {
    /// ABI major version the library was built for.
    abi: u16,
    /// ABI minor version the library was built for (0 when its metadata predates the field).
    abi_minor: u16,
    /// Plugin id, e.g. `ma_cross`.
    id: String,
    /// The plugin's own semantic version, e.g. `2.1.0`.
    version: String,
    /// Kind of plugin, e.g. `strategy` or `risk`.
    kind: String,
    /// Version of the state schema; a migration changes it.
    state_schema: u32,
    /// Host framework versions this plugin runs in (a semver requirement).
    framework: String,
    /// Other plugins this one needs, by id, with a semver requirement each.
    dependencies: BTreeMap<String, String>,
    /// Semver requirements on the versions this one can migrate state up from.
    migrates_from: Vec<String>,
    /// Semver requirements on the older versions this one can migrate its state down to.
    downgrades_to: Vec<String>,
    /// How the library was built.
    build: BuildSchema,
}

/// The schema of [`plugsync_plugin::metadata::BuildInfo`].
#[derive(JsonSchema)]
#[schemars(rename = "BuildInfo")]
#[allow(dead_code)] // only its schema is used
pub(crate) struct BuildSchema {
    /// `unwind` or `abort`.
    panic: String,
    /// Version of the plugsync-plugin SDK the plugin was built with.
    sdk: String,
    /// Version of rustc that built it.
    rustc: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The property names of a schema, sorted.
    fn properties(schema: &Value) -> Vec<String> {
        let mut names: Vec<String> = schema["properties"]
            .as_object()
            .expect("an object schema")
            .keys()
            .cloned()
            .collect();
        names.sort();
        names
    }

    fn keys(value: &Value) -> Vec<String> {
        let mut names: Vec<String> = value.as_object().unwrap().keys().cloned().collect();
        names.sort();
        names
    }

    #[test]
    fn the_metadata_schema_names_the_sdk_fields() {
        let metadata: PluginMetadata = serde_json::from_value(serde_json::json!({
            "abi": 1, "id": "x", "version": "1.0.0", "kind": "strategy", "state_schema": 1,
            "framework": "*", "dependencies": {}, "migrates_from": [], "downgrades_to": [],
            "build": {"panic": "unwind", "sdk": "0.1.0", "rustc": "1.95.0"}
        }))
        .unwrap();
        let value = serde_json::to_value(&metadata).unwrap();
        let schema = serde_json::to_value(schemars::schema_for!(MetadataSchema)).unwrap();
        assert_eq!(properties(&schema), keys(&value));
        let build = &schema["$defs"]["BuildInfo"];
        assert_eq!(properties(build), keys(&value["build"]));
    }
}

/// The body of `POST /v1/plugins/{plugin}/call` (only with `allow_calls`): one call, as a line
/// of `plugsync host --feed FILE` carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CallRequest {
    /// The input: a string is sent as its bytes, any other JSON value as its JSON text.
    pub input: Value,
    /// The host time to give the plugin, in ns since the Unix epoch; default: the host clock.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub now: Option<i64>,
}

/// The response of `POST /v1/plugins/{plugin}/call`: the plugin's output and which call it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CallAnswer {
    /// Position of the call in the slot's order.
    pub seq: u64,
    /// The host time the plugin was given (ns since the Unix epoch).
    pub now: i64,
    /// The artifact that answered.
    pub digest: Digest,
    /// The output: its JSON value when it is JSON, else its text (lossy UTF-8).
    pub output: Value,
}

/// The body of `POST /v1/lease`: what to do with the reconcile lease. The lease is held in the
/// name of the client whose token the request carries: `owner` (and a break's `by`) may be left
/// out, and if given must be that name (else `403 not_this_client`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum LeaseRequest {
    /// Take the lease (when free, expired, or held by this client itself: then with a new
    /// epoch).
    Acquire {
        /// The client's name: the authenticated client's, which it may only repeat.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
        /// How long it lasts unless renewed: 1 ms to an hour.
        ttl_ms: u64,
    },
    /// Extend the lease this client holds at `epoch`, to `ttl_ms` from now.
    Renew {
        /// The holder's name: the authenticated client's, which it may only repeat.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
        /// The epoch it was given.
        epoch: u64,
        /// How long from now it lasts unless renewed again.
        ttl_ms: u64,
    },
    /// End the lease this client holds at `epoch`.
    Release {
        /// The holder's name: the authenticated client's, which it may only repeat.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
        /// The epoch it was given.
        epoch: u64,
    },
    /// Take the lease from whoever holds it, on purpose (a crashed client's): recorded in the
    /// name of the client that breaks it.
    Break {
        /// Who breaks it: the authenticated client's name, which it may only repeat.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        by: Option<String>,
        /// Why.
        reason: String,
    },
}

impl LeaseRequest {
    /// The field that names the client (`owner` or `by`) and the name it gives, if any.
    pub(crate) fn named(&self) -> (&'static str, Option<&str>) {
        match self {
            LeaseRequest::Acquire { owner, .. }
            | LeaseRequest::Renew { owner, .. }
            | LeaseRequest::Release { owner, .. } => ("owner", owner.as_deref()),
            LeaseRequest::Break { by, .. } => ("by", by.as_deref()),
        }
    }
}

/// The answer of `POST /v1/lease`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct LeaseAnswer {
    /// The lease as acquired or renewed; `null` after a release or a break.
    pub holder: Option<LeaseHolder>,
    /// The break, as recorded (after `break` only).
    pub broken: Option<LeaseBreak>,
}

/// The body of `POST /v1/restraints`: what to forbid or allow again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum RestraintRequest {
    /// Freeze the host: switch, install and unload refused unless forced.
    Freeze {
        /// Why (shown to every client).
        reason: String,
        /// Who: the authenticated client's name (the only name it may give).
        #[serde(default)]
        by: Option<String>,
    },
    /// Lift the freeze.
    Unfreeze {
        /// Who: the authenticated client's name (the only name it may give).
        #[serde(default)]
        by: Option<String>,
    },
    /// Hold a plugin at its running version: a switch of it refused unless forced.
    Hold {
        /// Plugin id.
        plugin: String,
        /// Why.
        reason: String,
        /// Who: the authenticated client's name (the only name it may give).
        #[serde(default)]
        by: Option<String>,
        /// The client's fingerprint of the plugin's entry in its desired state: clients lift
        /// the hold once that entry changes (API 1.1).
        #[serde(default)]
        entry_sha256: Option<String>,
    },
    /// Release a plugin's hold.
    Release {
        /// Plugin id.
        plugin: String,
        /// Who: the authenticated client's name (the only name it may give).
        #[serde(default)]
        by: Option<String>,
    },
    /// Clear the failed mark of an artifact: a switch to it is allowed again.
    ClearFailed {
        /// The artifact marked failed.
        artifact: Digest,
        /// Who: the authenticated client's name (the only name it may give).
        #[serde(default)]
        by: Option<String>,
    },
    /// Mark a version failed on the client's word: it failed a check the client ran before
    /// asking the host (a preflight). Refused like the host's own marks until cleared (API 1.1).
    MarkFailed {
        /// Plugin id.
        plugin: String,
        /// The artifact that failed (it need not be staged).
        artifact: Digest,
        /// Its version.
        version: String,
        /// What failed.
        reason: String,
        /// Who: the authenticated client's name (the only name it may give).
        #[serde(default)]
        by: Option<String>,
        /// The client's fingerprint of the plugin's entry in its desired state: clients clear
        /// the mark once that entry changes.
        #[serde(default)]
        entry_sha256: Option<String>,
    },
    /// Halt a plugin: every call refused at once until resumed.
    Halt {
        /// Plugin id.
        plugin: String,
        /// Why.
        reason: String,
        /// Who: the authenticated client's name (the only name it may give).
        #[serde(default)]
        by: Option<String>,
    },
    /// Resume a halted plugin.
    Resume {
        /// Plugin id.
        plugin: String,
        /// Who: the authenticated client's name (the only name it may give).
        #[serde(default)]
        by: Option<String>,
    },
}

impl RestraintRequest {
    /// The name the body gives as who acts, if any.
    pub fn by(&self) -> Option<&str> {
        match self {
            RestraintRequest::Freeze { by, .. }
            | RestraintRequest::Unfreeze { by }
            | RestraintRequest::Hold { by, .. }
            | RestraintRequest::Release { by, .. }
            | RestraintRequest::ClearFailed { by, .. }
            | RestraintRequest::MarkFailed { by, .. }
            | RestraintRequest::Halt { by, .. }
            | RestraintRequest::Resume { by, .. } => by.as_deref(),
        }
    }
}
