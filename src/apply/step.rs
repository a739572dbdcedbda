//! One step as the engine drives it: what it sends, journaled whole at its first transition
//! so that a plugsync restarted after a crash can finish it from the journal alone.

use std::time::Duration;

use plugsync_host::control::api::{CommitRequest, InstallRequest, PluginRequest, SwitchRequest};
use plugsync_host::{Digest, Origin, SoakThresholds, SwitchWhen, VerifySpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plan::{PlannedStep, StateMigration, StepAction};
use crate::spec::model::{Fallback, OnFailure, Strategy, Update};
use crate::spec::provenance::FileProvenance;

use super::port::StepOperation;

/// How long past its soak a step's lease runs on the host: the time plugsync has to commit
/// after the soak. A plugsync that dies mid-step leaves the host to roll the step back by
/// itself when the lease runs out.
pub const LEASE_MARGIN: Duration = Duration::from_secs(30);

/// A step id: `{plan_id}.{n}.{attempt}`. The host applies each operation once per step id; a
/// new attempt at the same step (the host forgot the first: it restarted) gets a new one.
pub fn step_id(plan_id: &str, number: usize, attempt: u32) -> String {
    format!("{plan_id}.{number}.{attempt}")
}

/// Everything needed to finish a step from the journal alone: the operation and its request,
/// what the host should run before and after, and how long to soak; and what `plugsync
/// history` tells of it besides its transitions: the desired state's sha256 and git
/// provenance, who asked, why it was forced. Journaled with the step's first transition
/// (`planned`). Fields added since the first journals are `#[serde(default)]`, so those still
/// read.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepContext {
    /// The step's number in its plan, from 1.
    pub number: usize,
    /// How many steps the plan has.
    pub of: usize,
    /// The plugin.
    pub plugin: String,
    /// What the step does (`upgrade`, `install`…), for messages.
    pub action: String,
    /// The version the plan expects running before (`None`: not loaded).
    pub from: Option<VersionDigest>,
    /// The version after (`None`: removed).
    pub to: Option<VersionDigest>,
    /// The operation that makes the step.
    pub operation: StepOperationName,
    /// Its request body, without the step id (in the path).
    pub request: Value,
    /// How long the new version serves before the commit.
    pub soak_ms: u64,
    /// Calls the new version must have served before the commit.
    pub min_calls: Option<u64>,
    /// Halt the plugin after a rollback.
    pub halt_on_failure: bool,
    /// The fingerprint of the plugin's entry in plugins.yaml, carried by a failed mark this
    /// step sets (`PluginSpec::fingerprint`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry_sha256: Option<String>,
    /// The sha256 of the desired state the plan was made from (the origin's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_sha256: Option<String>,
    /// Where plugins.yaml, then each file it extends, came from in git when the step was
    /// planned.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provenance: Vec<FileProvenance>,
    /// Who asked: the name the host knows this client by (the holder of the reconcile lease
    /// the step ran under).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
    /// Why the step was forced (`--force --reason`), if it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forced: Option<String>,
    /// What its switch waits for (`when-idle`, `when-flat`): the request's `when`, and how
    /// long the engine asks again before its deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<StepWait>,
}

/// How the engine waits for a switch the host answers "not yet" (module `engine`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepWait {
    /// What it waits to be, for messages (`idle for 5s`, `flat`).
    pub waits_for: String,
    /// How long at most, from the first "not yet", in milliseconds.
    pub deadline_ms: u64,
    /// At the deadline, switch anyway (`fallback: immediate`) rather than fail the step.
    pub fallback_immediate: bool,
}

impl StepContext {
    /// `ma_cross 1.0.0 → 2.0.0`, `+ risk_model 1.0.0`, `- old 1.0.0`.
    pub fn title(&self) -> String {
        match (&self.from, &self.to) {
            (Some(from), Some(to)) if from.version == to.version => {
                format!("{} {} (reconfigure)", self.plugin, to.version)
            }
            (Some(from), Some(to)) => format!("{} {} → {}", self.plugin, from.version, to.version),
            (None, Some(to)) => format!("{} {} (install)", self.plugin, to.version),
            (Some(from), None) => format!("{} {} (remove)", self.plugin, from.version),
            (None, None) => self.plugin.clone(),
        }
    }

    /// The commit of this step.
    pub fn commit_request(&self, origin: &Origin) -> Value {
        serde_json::to_value(CommitRequest {
            plugin: self.plugin.clone(),
            min_calls: self.min_calls,
            origin: Some(origin.clone()),
        })
        .unwrap_or(Value::Null)
    }

    /// The rollback of this step.
    pub fn rollback_request(&self, origin: &Origin) -> Value {
        serde_json::to_value(PluginRequest {
            plugin: self.plugin.clone(),
            origin: Some(origin.clone()),
            force: None,
        })
        .unwrap_or(Value::Null)
    }
}

/// A version and its artifact's digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionDigest {
    /// The version.
    pub version: String,
    /// The artifact's sha256.
    pub sha256: Digest,
}

/// A [`StepOperation`] as journaled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StepOperationName {
    /// Load into an empty slot, with a lease.
    Install,
    /// Hot-swap, with a lease.
    Switch,
    /// Remove.
    Unload,
}

impl StepOperationName {
    /// The host operation.
    pub fn operation(self) -> StepOperation {
        match self {
            StepOperationName::Install => StepOperation::Install,
            StepOperationName::Switch => StepOperation::Switch,
            StepOperationName::Unload => StepOperation::Unload,
        }
    }

    /// Whether the step is pending on the host after its operation, until a commit.
    pub fn soaks(self) -> bool {
        self != StepOperationName::Unload
    }
}

/// The context of a planned step: its request built from the plan, the plugin's `update`
/// settings in plugins.yaml, and who asks. `None` for an install or a switch with no target
/// version, which a plan never has.
pub fn context(
    step: &PlannedStep,
    of: usize,
    update: Option<&Update>,
    origin: &Origin,
    force: Option<&str>,
) -> Option<StepContext> {
    let soak = step.verify.as_ref().and_then(|v| v.soak.as_ref());
    let soak_ms = soak.map_or(0, |s| s.duration.0.as_millis() as u64);
    let lease_ms = soak_ms + LEASE_MARGIN.as_millis() as u64;
    let thresholds = soak.map(|s| SoakThresholds {
        max_error_rate: s.max_error_rate,
        min_calls: s.min_calls.unwrap_or(1),
        max_call_latency_us: s.max_call_latency_us,
    });
    let verify = step.verify.as_ref().map(|v| VerifySpec {
        health: v.health,
        probes: v.probes.clone(),
        differential: v.differential.clone(),
    });
    let force = force.map(str::to_owned);
    let forced = force.clone();
    let (operation, request) = match step.action {
        StepAction::Install => {
            let request = InstallRequest {
                artifact: step.to.as_ref()?.at.sha256,
                config: step
                    .config
                    .clone()
                    .unwrap_or(Value::Object(Default::default())),
                checkpoint_every_ms: update
                    .and_then(|u| u.checkpoint_every.as_ref())
                    .map(|p| p.0.as_millis() as u64),
                fail_closed: false,
                lease_ms: Some(lease_ms),
                soak: thresholds,
                origin: Some(origin.clone()),
                force,
            };
            (StepOperationName::Install, to_value(&request))
        }
        StepAction::Remove => {
            let request = PluginRequest {
                plugin: step.plugin.clone(),
                origin: Some(origin.clone()),
                force,
            };
            (StepOperationName::Unload, to_value(&request))
        }
        StepAction::Upgrade | StepAction::Downgrade | StepAction::Reconfigure => {
            let request = SwitchRequest {
                plugin: step.plugin.clone(),
                artifact: step.to.as_ref()?.at.sha256,
                config: step.config.clone(),
                verify,
                mode: update.and_then(|u| u.mode),
                journal_capacity: update.and_then(|u| u.journal_capacity).map(|c| c as usize),
                lease_ms: Some(lease_ms),
                soak: thresholds,
                migration_rules: match &step.migration {
                    Some(StateMigration::Rules { rules, .. }) => Some(rules.clone()),
                    _ => None,
                },
                fresh_state: step.discards_state(),
                origin: Some(origin.clone()),
                force,
                when: switch_when(&step.strategy),
            };
            (StepOperationName::Switch, to_value(&request))
        }
    };
    Some(StepContext {
        number: step.number,
        of,
        plugin: step.plugin.clone(),
        action: format!("{:?}", step.action).to_lowercase(),
        from: step.from.as_ref().map(|f| VersionDigest {
            version: f.version.to_string(),
            sha256: f.sha256,
        }),
        to: step.to.as_ref().map(|t| VersionDigest {
            version: t.at.version.to_string(),
            sha256: t.at.sha256,
        }),
        operation,
        request,
        soak_ms,
        min_calls: soak.and_then(|s| s.min_calls_before_commit),
        halt_on_failure: step.on_failure == OnFailure::Halt,
        entry_sha256: origin.entry_sha256.clone(),
        desired_sha256: origin.desired_sha256.clone(),
        provenance: Vec::new(),
        client: origin.client.clone(),
        forced,
        wait: (operation == StepOperationName::Switch)
            .then(|| step_wait(&step.strategy))
            .flatten(),
    })
}

/// The host's `when` for a strategy that waits for the plugin (`when-idle`, `when-flat`).
fn switch_when(strategy: &Strategy) -> Option<SwitchWhen> {
    match strategy {
        Strategy::WhenIdle { idle_for, .. } => Some(SwitchWhen {
            idle_for_ms: Some(u64::try_from(idle_for.0.as_millis()).unwrap_or(u64::MAX)),
            flat: false,
        }),
        Strategy::WhenFlat { .. } => Some(SwitchWhen {
            idle_for_ms: None,
            flat: true,
        }),
        _ => None,
    }
}

/// How the engine waits for a strategy's moment.
fn step_wait(strategy: &Strategy) -> Option<StepWait> {
    let (deadline, fallback) = strategy.deadline()?;
    let waits_for = match strategy {
        Strategy::WhenIdle { idle_for, .. } => format!("idle for {idle_for}"),
        _ => "flat".to_owned(),
    };
    Some(StepWait {
        waits_for,
        deadline_ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
        fallback_immediate: fallback == Fallback::Immediate,
    })
}

/// A request as JSON: the wire types always serialise.
fn to_value(request: &impl Serialize) -> Value {
    serde_json::to_value(request).unwrap_or(Value::Null)
}
