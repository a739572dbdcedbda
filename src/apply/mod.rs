//! Apply: the plan made real on the host, one step at a time, each step a state machine
//! journaled in the client's store before anything it describes is sent.
//!
//! A step goes `planned` → `preflighted` → `staged` → `switch-sent` → `soaking` →
//! `commit-sent` → `done`, or ends `rollback-sent` → `rolled-back` (the host rolled it back by
//! its lease or soak thresholds, or plugsync did), or `stopped` (a pre-check, the preflight or
//! the host refused it before anything changed). Ids are `{plan_id}.{n}.{attempt}`.
//!
//! - [`HostPort`]: the host's operations, over its control API ([`HttpHost`]) or in this
//!   process ([`InProcessHost`]), the same requests either way;
//! - [`Engine`]: level-triggered passes ([`Engine::reconcile`] returns an [`Action`]) under
//!   the host's reconcile lease; the journal is the only memory a restart needs, and what is
//!   in doubt after one (an operation sent, its answer lost) is read from the host's status —
//!   its pending step id and applied record — never from a replayed answer;
//! - [`error_policy`]: what an error of a pass means for the next (retried with backoff, or
//!   the end).

mod engine;
mod port;
mod report;
mod step;

use std::path::PathBuf;
use std::time::Duration;

use plugsync_host::Digest;

pub use engine::{Engine, describe_rollback};
pub use port::{
    HostAnswer, HostMethod, HostPort, HostRequest, HttpHost, InProcessHost, StepOperation,
};
pub use report::{ApplyReport, StepOutcome, StepReport};
pub use step::{
    LEASE_MARGIN, StepContext, StepOperationName, StepWait, VersionDigest, context, step_id,
};

use crate::error::Error;
use crate::preflight::{ArtifactFile, PreviewStep};

/// What the caller does after a pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Call [`Engine::reconcile`] again after this long (zero: at once).
    Requeue(Duration),
    /// Every step loaded has ended.
    Finished,
}

/// What to do after a pass failed with `error`, the `failures`-th in a row: retried after a
/// backoff when the host may come back (unreachable, a 5xx), else the end.
pub fn error_policy(error: &Error, failures: u32) -> Option<Duration> {
    const MAX_RETRIES: u32 = 8;
    let retry = match error {
        Error::Unreachable { .. } => true,
        Error::HostRefused { status, .. } | Error::BadAnswer { status, .. } => *status >= 500,
        _ => false,
    };
    (retry && failures <= MAX_RETRIES)
        .then(|| Duration::from_millis(200u64 << failures.min(6)).min(Duration::from_secs(10)))
}

/// How the engine works.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// The tool named in the host's records (`plugsync-reconcile`).
    pub tool: &'static str,
    /// How long the reconcile lease lasts unless renewed (renewed every third of it).
    pub lease_ttl: Duration,
    /// Fail at once when another client holds the lease, instead of waiting.
    pub no_wait: bool,
    /// The plugsync executable the preflight child runs.
    pub exe: PathBuf,
    /// How long a preflight may take before its child is killed.
    pub preflight_timeout: Duration,
    /// Abort the process at this point (`PLUGSYNC_CRASH_AT`, for tests).
    pub crash_at: Option<CrashPoint>,
    /// The least free space the state directory's file system must have for a step to start.
    pub min_free_bytes: u64,
}

/// Where `PLUGSYNC_CRASH_AT` makes plugsync abort, to prove a restart finishes what the journal
/// holds: right after journaling a phase (`switch-sent`: journaled, not yet sent), or right
/// after the host answered the request that phase sent (`switch-sent+answered`: applied on the
/// host, the answer not yet journaled — the outcome a restart must read from the host).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashPoint {
    /// The phase.
    pub phase: crate::store::StepPhase,
    /// After the host's answer to the phase's request, rather than after the journal write.
    pub answered: bool,
}

impl std::str::FromStr for CrashPoint {
    type Err = String;

    fn from_str(text: &str) -> Result<CrashPoint, String> {
        use crate::store::StepPhase;
        let (name, answered) = match text.strip_suffix("+answered") {
            Some(name) => (name, true),
            None => (text, false),
        };
        let phase: StepPhase =
            (name.parse()).map_err(|e: crate::store::UnknownPhase| e.to_string())?;
        let sends = [
            StepPhase::SwitchSent,
            StepPhase::CommitSent,
            StepPhase::RollbackSent,
        ];
        if answered && !sends.contains(&phase) {
            return Err(format!(
                "`+answered` follows a phase that sends a request: `switch-sent`, `commit-sent` \
                 or `rollback-sent`, not `{phase}`"
            ));
        }
        Ok(CrashPoint { phase, answered })
    }
}

/// A plan ready to apply: each step's context and what it needs on this side.
#[derive(Debug, Clone)]
pub struct PreparedPlan {
    /// The plan's id.
    pub plan_id: String,
    /// The sha256 of the plugins.yaml it was made from.
    pub desired_sha256: Digest,
    /// Who asks, as every request of the plan says (the plan id, the desired state, a forced
    /// change's reason).
    pub origin: plugsync_host::Origin,
    /// The steps, in order.
    pub steps: Vec<PreparedStep>,
    /// The waves, by index into `steps`.
    pub waves: Vec<Vec<usize>>,
    /// The policy's update windows, checked again before each step (a long reconcile may run
    /// into one); empty when forced.
    pub windows: Vec<crate::spec::model::Window>,
    /// The time the plan was made for; each step's check adds the time since.
    pub now: jiff::Timestamp,
    /// How long the rollback points of its steps are kept (`policy.rollbackRetention`).
    pub rollback_retention: std::time::Duration,
}

/// One step of a [`PreparedPlan`].
#[derive(Debug, Clone)]
pub struct PreparedStep {
    /// What it sends.
    pub context: StepContext,
    /// The artifact to stage (none for a removal).
    pub artifact: Option<LocalArtifact>,
    /// How to preflight it (none: not preflighted).
    pub preflight: Option<Preflight>,
}

/// An artifact on this machine, verified (sha256, signature), ready to stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalArtifact {
    /// The file.
    pub path: PathBuf,
    /// Its sha256.
    pub sha256: Digest,
    /// The file name the host stores it under.
    pub file_name: String,
    /// The publisher's signature, when signed.
    pub signature: Option<String>,
}

/// A step's preflight: the switch (or install) it makes, in a child process, from the running
/// artifact and the live state read just before.
#[derive(Debug, Clone)]
pub struct Preflight {
    /// The running version's artifact (none: an install).
    pub running: Option<ArtifactFile>,
    /// The step.
    pub step: PreviewStep,
}

/// A request to stop at the next safe point, shared between whoever asks (a signal handler,
/// a test) and the apply that honours it. Every point between two passes of the [`Engine`] is
/// safe: each transition is journaled before it is acted on, so a step left there is finished
/// (or found rolled back by the host) by the next run. Waits — for the lease, a soak, a
/// backoff — end early when it is asked.
#[derive(Debug, Clone, Default)]
pub struct Stop {
    asked: std::sync::Arc<(std::sync::Mutex<bool>, std::sync::Condvar)>,
}

impl Stop {
    /// A stop nobody has asked for yet.
    pub fn new() -> Stop {
        Stop::default()
    }

    /// Asks every holder of this stop (or a clone) to stop at its next safe point.
    pub fn ask(&self) {
        let (asked, changed) = &*self.asked;
        *asked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = true;
        changed.notify_all();
    }

    /// Whether a stop was asked.
    pub fn asked(&self) -> bool {
        *(self.asked.0.lock()).unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits `wait`, or less if a stop is asked meanwhile; whether one was.
    pub fn sleep(&self, wait: Duration) -> bool {
        let (asked, changed) = &*self.asked;
        let guard = asked
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let (guard, _) = changed
            .wait_timeout_while(guard, wait, |asked| !*asked)
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *guard
    }
}
