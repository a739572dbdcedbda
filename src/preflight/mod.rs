//! Preflight: a plugin's real migrations run in a short-lived child process of plugsync, never
//! in the live host.
//!
//! A library once mapped is never unmapped, and a `migrate` may crash (SIGSEGV, abort) or hang
//! where no `catch_unwind` reaches: so what a plan shows as "current state → migrated state"
//! (and, in a later issue, the check of a build before the host sees it) is computed in a
//! process that may die without harming the host or the plugsync that asked.
//!
//! 1. **job**: the caller describes one plugin's chain in a [`PreviewJob`]: the running
//!    artifact with its config and live state, then each step's artifact (already verified by
//!    the caller: digest, signature) and how it migrates (the plugins' own `migrate`, declarative
//!    [`MigrationRule`]s, or a fresh state), and the config of the last step;
//! 2. **spawn**: [`preview`] starts `plugsync preflight-child --store DIR` (a hidden command)
//!    through a [`ChildRunner`], over a temporary store the parent owns and removes, writes the
//!    job as JSON on its stdin, and reads its stdout and stderr whole on threads;
//! 3. **child**: it stages the artifacts in a [`Runtime`](plugsync_host::Runtime) of its own
//!    (re-checking each sha256), installs the running version with its config, restores the
//!    state, then swaps step by step and commits each, exactly as a host would. After each
//!    stage it writes one JSON line on stdout, so the parent knows how far it got if it dies;
//! 4. **verdict**: every step's [`StepPreview`] (the second step starting from the first's
//!    result), or a [`PreflightError`] naming the plugin, the step, and what happened: a
//!    signal (by number and name), the timeout (the child is killed and reaped), or the error
//!    the runtime reported (a `migrate` that fails or panics, a refused transition).

mod child;
mod error;
mod runner;

use std::path::PathBuf;

use plugsync_host::{Digest, MigrationRule, TransitionKind, VerifySpec};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub(crate) use child::run_child;
pub use error::{PreflightError, PreviewStage, StderrTail};
pub use runner::{ChildRunner, DEFAULT_PREVIEW_TIMEOUT, preview, signal_name};

/// A built plugin library and the sha256 its bytes must have.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArtifactFile {
    /// The library file.
    pub path: PathBuf,
    /// Its sha256, as the caller verified it: the child stages it only if the bytes it reads
    /// still hash to this.
    pub sha256: Digest,
}

impl ArtifactFile {
    /// The library at `path`, whose bytes hash to `sha256`.
    pub fn new(path: impl Into<PathBuf>, sha256: Digest) -> ArtifactFile {
        ArtifactFile {
            path: path.into(),
            sha256,
        }
    }
}

/// One plugin's chain of steps to preview, from what runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviewJob {
    /// Plugin id.
    pub plugin: String,
    /// The version running now.
    pub running: ArtifactFile,
    /// The running config.
    pub config: Value,
    /// The running state, as the running version snapshots it.
    pub state: Value,
    /// The steps, in order: each starts from the previous one's result.
    pub steps: Vec<PreviewStep>,
    /// `running` is installed with a fresh state (`state` is ignored) and its health checked:
    /// the preflight of an install.
    #[serde(default)]
    pub fresh: bool,
}

impl PreviewJob {
    /// A job with no steps yet, from `running` with its `config` and `state`.
    pub fn new(
        plugin: impl Into<String>,
        running: ArtifactFile,
        config: Value,
        state: Value,
    ) -> PreviewJob {
        PreviewJob {
            plugin: plugin.into(),
            running,
            config,
            state,
            steps: Vec::new(),
            fresh: false,
        }
    }

    /// The preflight of an install: `artifact` loaded with `config` and a fresh state, and its
    /// health checked, with no step after.
    pub fn install(plugin: impl Into<String>, artifact: ArtifactFile, config: Value) -> PreviewJob {
        PreviewJob {
            fresh: true,
            ..PreviewJob::new(plugin, artifact, config, Value::Null)
        }
    }

    /// Adds a step at the end of the chain.
    pub fn step(mut self, step: PreviewStep) -> PreviewJob {
        self.steps.push(step);
        self
    }
}

/// One step of a chain: a switch to `artifact`, as the host's
/// [`SwapRequest`](plugsync_host::SwapRequest) would make it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PreviewStep {
    /// The version switched to.
    pub artifact: ArtifactFile,
    /// A declarative migration used instead of the plugins' own `migrate`.
    #[serde(default)]
    pub migration_rules: Option<Vec<MigrationRule>>,
    /// Discard the state: the version starts from `create(config)`.
    #[serde(default)]
    pub fresh_state: bool,
    /// The config to run with; `None`: the running config, migrated with the state (an
    /// intermediate step). The last step of a plan gives the desired config.
    #[serde(default)]
    pub config: Option<Value>,
    /// The checks the switch makes before it goes ahead (health, probes, the differential
    /// check); `None`: the host's default (health only).
    #[serde(default)]
    pub verify: Option<VerifySpec>,
}

impl PreviewStep {
    /// A switch to `artifact` migrated by the plugins' own `migrate`, config migrated too.
    pub fn new(artifact: ArtifactFile) -> PreviewStep {
        PreviewStep {
            artifact,
            migration_rules: None,
            fresh_state: false,
            config: None,
            verify: None,
        }
    }

    /// Checks the switch with `verify` before it goes ahead.
    pub fn verify(mut self, verify: VerifySpec) -> PreviewStep {
        self.verify = Some(verify);
        self
    }

    /// Migrates by `rules` instead of the plugins' own `migrate`.
    pub fn migration_rules(mut self, rules: Vec<MigrationRule>) -> PreviewStep {
        self.migration_rules = Some(rules);
        self
    }

    /// Starts the version from a fresh state.
    pub fn fresh_state(mut self) -> PreviewStep {
        self.fresh_state = true;
        self
    }

    /// Runs the version with `config`.
    pub fn config(mut self, config: Value) -> PreviewStep {
        self.config = Some(config);
        self
    }
}

/// What one step did to the config and the state, as the real switch computed them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepPreview {
    /// Version before the step.
    pub from: String,
    /// Version after it.
    pub version: String,
    /// Upgrade, downgrade or reconfigure.
    pub kind: TransitionKind,
    /// Config before.
    pub config_before: Value,
    /// Config after.
    pub config_after: Value,
    /// State before, as the previous version snapshotted it.
    pub state_before: Value,
    /// State after: migrated (or fresh), as restored into the new version.
    pub state_after: Value,
    /// The state was discarded on request: `state_after` is a fresh instance's.
    pub state_discarded: bool,
}

/// One line the child writes on stdout: how far it got, then its result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case", deny_unknown_fields)]
enum Progress {
    /// Every artifact is staged (no plugin code ran yet): their versions.
    Staged {
        running: String,
        versions: Vec<String>,
    },
    /// The running version is installed with its config and state.
    Loaded,
    /// A step is done.
    Step { preview: StepPreview },
    /// The stage after the last one reported failed.
    Failed { message: String },
    /// Every step is done.
    Done,
}
