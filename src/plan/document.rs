//! The plan as a document: the [`Plan`], what it was computed from, the drift seen and the
//! state previews — what `--output json` prints and `--out plan.json` saves.
//!
//! **The plan id** is the sha256 of the canonical JSON of `{format, inputs, changes, steps,
//! waves}`: what the plan was computed from and what it would do. Waits, refusals, warnings,
//! drift and previews are left out: they say when and whether the steps may run, and what they
//! would do to a state that moves with every call, not which steps. `plugsync reconcile --plan`
//! recomputes the plan from the recorded inputs and refuses it when the ids differ, so a plan
//! edited by hand is never applied.

use plugsync_host::control::api::RunningState;
use plugsync_host::{AppliedRecord, Digest};
use plugsync_plugin::canonical_json;
use schemars::JsonSchema;
use serde::Serialize;
use serde_json::Value;

use super::model::{Change, Kept, KeptBecause, Plan, PlannedStep};
use crate::observe::{Drift, Observation, drift};
use crate::resolve::PluginsLock;
use crate::spec::Desired;

/// The version of the plan document's shape.
pub const PLAN_FORMAT: u32 = 1;

/// The plan, what it was computed from, and what was seen around it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "plugsync plan")]
pub struct PlanDocument {
    /// [`PLAN_FORMAT`].
    pub format: u32,
    /// The sha256 of the canonical plan (see the module docs).
    #[schemars(with = "String")]
    pub plan_id: Digest,
    /// The plugins.yaml planned from, as named.
    pub file: String,
    /// What the plan was computed from.
    pub inputs: PlanInputs,
    /// Where the running state was observed, and when.
    pub observed: Observed,
    /// The plan.
    #[serde(flatten)]
    pub plan: Plan,
    /// Plugins that run other than the reconciler last left them.
    pub drift: Vec<Drift>,
    /// What each step that migrates state would do to it.
    pub previews: Vec<StatePreview>,
}

/// What a plan was computed from.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanInputs {
    /// The sha256 of the merged plugins.yaml's canonical JSON (every setting: a config edit
    /// changes it).
    #[schemars(with = "String")]
    pub desired_sha256: Digest,
    /// The sha256 of the canonical JSON of the plugins.lock followed, if any.
    #[schemars(with = "Option<String>")]
    pub lock_sha256: Option<Digest>,
    /// The host's plugin ABI major.
    pub abi: u16,
    /// The host's framework version.
    pub framework: String,
    /// The host's cap on resident versions per plugin.
    pub resident_cap: usize,
    /// What each plugin ran, by id.
    pub running: Vec<RunningInput>,
}

/// What one plugin ran when the plan was made.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunningInput {
    /// The plugin.
    pub plugin: String,
    /// Its version.
    pub version: String,
    /// Its artifact's sha256.
    #[schemars(with = "String")]
    pub sha256: Digest,
    /// Its config's hash.
    #[schemars(with = "String")]
    pub config_hash: Digest,
    /// The host's record of the last change applied to it.
    pub applied: Option<AppliedRecord>,
}

/// Where and when the running state was observed.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Observed {
    /// The host's URL, or the saved status file.
    pub source: String,
    /// The host's time then (RFC 3339, UTC).
    pub at: String,
    /// The control API's version.
    pub api: String,
    /// Whether the plugins' states were observed (migration previews need them).
    pub with_state: bool,
}

/// What one step would do to its plugin's state.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatePreview {
    /// The step, by number.
    pub step: usize,
    /// The plugin.
    pub plugin: String,
    /// What the preview found.
    pub outcome: PreviewOutcome,
}

/// What a preview found.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum PreviewOutcome {
    /// The state and config before the step and after it, migrated by the real migration in a
    /// throwaway process.
    #[serde(rename_all = "camelCase")]
    Migrated {
        /// The config before.
        config_before: Value,
        /// The config after.
        config_after: Value,
        /// The state before.
        state_before: Value,
        /// The state after.
        state_after: Value,
    },
    /// Not previewed, and why.
    #[serde(rename_all = "camelCase")]
    Skipped {
        /// Why.
        reason: String,
    },
    /// The migration failed (returned an error, crashed, or ran past the timeout).
    #[serde(rename_all = "camelCase")]
    Failed {
        /// What happened.
        error: String,
    },
}

impl PlanDocument {
    /// The document for `plan`, computed from `desired`, `lock` (if followed) and
    /// `observation`; no previews yet.
    pub fn new(
        desired: &Desired,
        lock: Option<&PluginsLock>,
        observation: &Observation,
        plan: Plan,
    ) -> PlanDocument {
        let running = &observation.running;
        let inputs = PlanInputs {
            desired_sha256: desired.digest(),
            lock_sha256: lock.and_then(lock_digest),
            abi: running.status.abi,
            framework: running.status.framework.clone(),
            resident_cap: running.status.resident_cap,
            running: running_inputs(running),
        };
        let plan_id = plan_id(&inputs, &plan.changes, &plan.steps, &plan.waves);
        PlanDocument {
            format: PLAN_FORMAT,
            plan_id,
            file: desired.file.display().to_string(),
            inputs,
            observed: Observed {
                source: observation.source.to_string(),
                at: host_time(running.status.now.as_nanos()),
                api: running.api.version.clone(),
                with_state: observation.has_states(),
            },
            plan,
            drift: drift(running),
            previews: Vec::new(),
        }
    }
}

/// The sha256 of the canonical JSON of what a plan was computed from and what it would do.
///
/// What only says how things stand at the moment of planning — the host's answer to a
/// strategy's condition (`PlannedStep::wait`), the time left until a scheduled change
/// (`KeptBecause::Scheduled::wait`) — is left out: the same plan made a second later, or
/// saved and applied later, must keep its id.
pub fn plan_id(
    inputs: &PlanInputs,
    changes: &[Change],
    steps: &[PlannedStep],
    waves: &[Vec<usize>],
) -> Digest {
    let steps: Vec<PlannedStep> = (steps.iter().cloned())
        .map(|step| PlannedStep { wait: None, ..step })
        .collect();
    let changes: Vec<Change> = (changes.iter().cloned())
        .map(|mut change| {
            if let Some(Kept {
                because: KeptBecause::Scheduled { wait, .. },
                ..
            }) = &mut change.kept
            {
                wait.clear();
            }
            change
        })
        .collect();
    let (changes, steps) = (changes.as_slice(), steps.as_slice());
    #[derive(Serialize)]
    struct Canonical<'a> {
        format: u32,
        inputs: &'a PlanInputs,
        changes: &'a [Change],
        steps: &'a [PlannedStep],
        waves: &'a [Vec<usize>],
    }
    let canonical = canonical_json(&Canonical {
        format: PLAN_FORMAT,
        inputs,
        changes,
        steps,
        waves,
    });
    // Serialised from our own types, whose numbers came from JSON or YAML (never NaN): canonical
    // JSON cannot fail on them.
    Digest::of(&canonical.unwrap_or_default())
}

fn running_inputs(running: &RunningState) -> Vec<RunningInput> {
    let mut inputs: Vec<RunningInput> = (running.status.plugins.iter())
        .map(|p| RunningInput {
            plugin: p.plugin.clone(),
            version: p.version.version.clone(),
            sha256: p.version.digest,
            config_hash: p.config_hash,
            applied: p.applied.clone(),
        })
        .collect();
    inputs.sort_by(|a, b| a.plugin.cmp(&b.plugin));
    inputs
}

/// The sha256 of a lock's canonical JSON (so reformatting the file does not change a plan id).
fn lock_digest(lock: &PluginsLock) -> Option<Digest> {
    Some(Digest::of(&canonical_json(lock).ok()?))
}

/// A host time (ns since the epoch) as RFC 3339 UTC, to the second.
pub(crate) fn host_time(nanos: i64) -> String {
    match jiff::Timestamp::from_nanosecond(i128::from(nanos)) {
        Ok(at) => at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Err(_) => format!("{nanos} ns"),
    }
}

/// The JSON Schema of [`PlanDocument`] (`plugsync schema plan`).
pub fn plan_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(PlanDocument)).unwrap_or_default()
}
