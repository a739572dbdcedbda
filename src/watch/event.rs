//! What the sidecar tells as it goes, and who listens: the log here; alerts and metrics are
//! observers too, each fed the same events.

use std::time::Duration;

use plugsync_host::Digest;
use serde::Serialize;

use crate::apply::{ApplyReport, StepOutcome, StepReport};
use crate::plan::VersionAt;

/// Why the sidecar reconciles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Trigger {
    /// It started (finishing first what a previous run left in the journal).
    Start,
    /// plugins.yaml (or a file it extends) changed what it asks.
    Change,
    /// The interval's drift check found the host other than plugins.yaml asks.
    Drift,
    /// The last reconcile failed; this is its retry, after a backoff.
    Retry,
    /// The time of a `scheduled` change came (`strategy: {kind: scheduled, at: …}`): reconciled
    /// whatever `--drift` says, since plugins.yaml asked for it.
    Schedule,
}

impl Trigger {
    /// Its name in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Change => "change",
            Trigger::Drift => "drift",
            Trigger::Retry => "retry",
            Trigger::Schedule => "schedule",
        }
    }
}

/// Something the sidecar did or found.
#[derive(Debug, Clone)]
pub enum SidecarEvent {
    /// plugins.yaml read, valid, and asking something new (or read for the first time).
    DesiredRead {
        /// What it asks (as `plugins.lock` records it).
        sha256: Digest,
        /// The commit it was read at and whether the file differs from it (outside git: none).
        commit: Option<(String, bool)>,
    },
    /// plugins.yaml cannot be applied as it is: nothing of it is.
    DesiredInvalid {
        /// Every problem, with its `file:line:column`.
        report: String,
        /// The last good desired state, still the one reconciled to (none: nothing is).
        keeping: Option<Digest>,
    },
    /// A reconcile begins.
    ReconcileStarted {
        /// Why.
        trigger: Trigger,
    },
    /// A step began (its first move).
    StepStarted {
        /// The plugin.
        plugin: String,
        /// `ma_cross 1.0.0 → 2.0.0`.
        title: String,
        /// Its step id.
        step_id: String,
        /// The version running before it (`None`: an install).
        from: Option<String>,
        /// The version after it (`None`: a removal).
        to: Option<String>,
    },
    /// A step ended (committed, rolled back, stopped, interrupted).
    StepEnded(StepReport),
    /// Something the apply had to say (a lease held elsewhere, a lifted hold).
    Notice(String),
    /// A reconcile ended; its steps may have failed (each marked on the host).
    ReconcileFinished {
        /// Why it ran.
        trigger: Trigger,
        /// What it did.
        report: ApplyReport,
        /// How long it took.
        took: Duration,
    },
    /// A reconcile could not run to its end (the host unreachable, the registry down, a
    /// freeze): retried after `retry_in`.
    ReconcileFailed {
        /// Why it ran.
        trigger: Trigger,
        /// What went wrong, and the fix.
        error: String,
        /// How many in a row.
        failures: u32,
        /// When it is tried again.
        retry_in: Duration,
    },
    /// The host runs other than plugins.yaml asks, and plugins.yaml did not change: someone
    /// changed the host by hand (or a step the sidecar did not make).
    DriftFound {
        /// The plan that would heal it.
        plan_id: String,
        /// What differs, a line per plugin.
        changes: Vec<String>,
        /// Whether the sidecar heals it now (`--drift heal`) or only reports it.
        healing: bool,
    },
    /// What each plugin should run and runs, as a drift check saw it (after each reconcile
    /// too): metrics' info series and call counters.
    Observed {
        /// Each plugin plugins.yaml names or the host runs, by id.
        plugins: Vec<PluginSeen>,
    },
    /// A drift check was made (after its [`SidecarEvent::DriftFound`], if it found drift).
    Checked {
        /// Whether the host runs other than plugins.yaml asks (kept by the host's restraints
        /// is not drift).
        drift: bool,
    },
    /// A stop was asked; the sidecar ends (what is in flight stays in the journal).
    Stopping {
        /// What was left in flight.
        left: String,
    },
}

/// One plugin as a drift check saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginSeen {
    /// The plugin.
    pub plugin: String,
    /// What plugins.yaml asks it to run (`None`: not named, or removed).
    pub desired: Option<VersionAt>,
    /// What the host runs (`None`: not loaded).
    pub running: Option<VersionAt>,
    /// The host's call counters of what runs.
    pub counters: Option<plugsync_host::Counters>,
}

impl SidecarEvent {
    /// A step's outcome as metrics and alerts name it: `committed`, `rolled-back`, `stopped`,
    /// `not-started`, `interrupted`.
    pub fn outcome_name(outcome: &StepOutcome) -> &'static str {
        match outcome {
            StepOutcome::Done => "committed",
            StepOutcome::RolledBack { .. } => "rolled-back",
            StepOutcome::Stopped { .. } => "stopped",
            StepOutcome::NotStarted => "not-started",
            StepOutcome::Interrupted { .. } => "interrupted",
        }
    }
}

/// Whoever listens to the sidecar. An observer must not block the loop: one that does slow
/// work (delivering a webhook) hands it to a thread of its own.
pub trait Observer: Send {
    /// Something happened.
    fn observe(&mut self, event: &SidecarEvent);
}

/// The sidecar's log: a line per event, through `tracing` (human or JSON, `RUST_LOG`).
#[derive(Debug, Default)]
pub struct LogObserver;

impl Observer for LogObserver {
    fn observe(&mut self, event: &SidecarEvent) {
        match event {
            SidecarEvent::DesiredRead { sha256, commit } => match commit {
                Some((commit, dirty)) => tracing::info!(
                    desired = %sha256.short(),
                    commit = %commit,
                    dirty,
                    "plugins.yaml read"
                ),
                None => tracing::info!(desired = %sha256.short(), "plugins.yaml read"),
            },
            SidecarEvent::DesiredInvalid { report, keeping } => {
                let keeping = keeping.map_or_else(
                    || "nothing is applied until it is fixed".to_owned(),
                    |sha256| format!("keeping the last good desired state ({})", sha256.short()),
                );
                tracing::error!("plugins.yaml is invalid, {keeping}:\n{report}");
            }
            SidecarEvent::ReconcileStarted { trigger } => {
                tracing::info!(trigger = trigger.name(), "reconcile started");
            }
            SidecarEvent::StepStarted { title, step_id, .. } => {
                tracing::info!(step = %step_id, "step started: {title}");
            }
            SidecarEvent::StepEnded(report) => {
                let outcome = report
                    .outcome
                    .as_ref()
                    .map_or("", SidecarEvent::outcome_name);
                if matches!(report.outcome, Some(StepOutcome::Done)) {
                    tracing::info!(step = %report.step_id, outcome, "{}", report.text());
                } else {
                    tracing::warn!(step = %report.step_id, outcome, "{}", report.text());
                }
            }
            SidecarEvent::Notice(text) => tracing::info!("{text}"),
            SidecarEvent::ReconcileFinished {
                trigger,
                report,
                took,
            } => {
                let took_ms = took.as_millis() as u64;
                if report.failed {
                    tracing::warn!(trigger = trigger.name(), took_ms, "{}", report.summary());
                } else {
                    tracing::info!(trigger = trigger.name(), took_ms, "{}", report.summary());
                }
            }
            SidecarEvent::ReconcileFailed {
                trigger,
                error,
                failures,
                retry_in,
            } => tracing::error!(
                trigger = trigger.name(),
                failures,
                retry_in = %humantime::format_duration(*retry_in),
                "reconcile failed: {error}"
            ),
            SidecarEvent::DriftFound {
                plan_id,
                changes,
                healing,
            } => tracing::warn!(
                plan = %plan_id,
                healing,
                "drift: the host runs other than plugins.yaml asks: {}",
                changes.join("; ")
            ),
            SidecarEvent::Checked { drift } => tracing::debug!(drift, "drift check"),
            SidecarEvent::Observed { .. } => {}
            SidecarEvent::Stopping { left } => tracing::info!("stopping: {left}"),
        }
    }
}
