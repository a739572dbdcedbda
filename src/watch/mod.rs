//! `plugsync run`: the sidecar — a loop around the same reconcile as `plugsync reconcile`,
//! with the same journal and the same host lease, so an operator's manual reconcile and the
//! sidecar take turns and never interleave.
//!
//! - **On start** it finishes what a previous run left in the journal, then reconciles.
//! - **On change**: plugins.yaml's directories are watched ([`FileWatch`]); once they have been
//!   quiet for `debounce`, the file is read whole and, if what it asks (or its lock) changed,
//!   reconciled. A file that does not parse or validate is never applied: its errors are
//!   logged with `file:line:column` and the last good desired state stays the one reconciled
//!   to. With `committed_only`, neither is a file that differs from its commit.
//! - **On an interval** it reads the file again (a change no event told of is seen there),
//!   then plans against the host without the lease; a plan that is not empty is drift: healed
//!   (`--drift heal`: a reconcile, which keeps what the host's holds, freeze and failed marks
//!   keep) or only reported. A check is skipped while another client holds the lease.
//! - **On failure** (the host unreachable, a registry down, a freeze) it retries after
//!   [`retry_delay`]'s backoff. A step that fails is not a failure of the loop: its version is
//!   marked failed on the host and never retried.
//! - **On stop** (SIGTERM, SIGINT, [`SidecarHandle::stop`]) it ends at the apply's next safe
//!   point and returns: what was in flight is in the journal.
//!
//! Everything it does is told to its [`Observer`]s as [`SidecarEvent`]s: the log, the status
//! file (`sidecar.json` in the state directory), alerts and metrics.

mod alert;
mod event;
mod files;
pub mod metrics;
mod status;

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use plugsync_host::Digest;

use crate::apply::{HostPort, StepReport, Stop};
use crate::error::{Error, Result};
use crate::ops::{self, DesiredState, Progress, ReconcileOptions};

pub use alert::{
    Alert, AlertCounters, AlertDetail, AlertFormat, AlertKind, AlertObserver, AlertOptions,
    ApiVersion, alert_schema,
};
pub use event::{LogObserver, Observer, PluginSeen, SidecarEvent, Trigger};
pub use files::{FileWatch, directories_of};
pub use status::{SIDECAR_FILE, SidecarLock, SidecarStatus, StatusFile};

/// What the sidecar does when the host drifts from plugins.yaml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DriftMode {
    /// Reconcile it away (never undoing a hold, a freeze or a failed mark: the plan keeps
    /// those).
    #[default]
    Heal,
    /// Only tell of it (log, status, alert, metric).
    Report,
}

/// The time plans are made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The system's.
    System,
    /// A fixed instant (`PLUGSYNC_NOW`, for tests).
    Fixed(Timestamp),
}

impl Clock {
    /// Now, by this clock.
    pub fn now(self) -> Timestamp {
        match self {
            Clock::System => Timestamp::now(),
            Clock::Fixed(at) => at,
        }
    }
}

/// How the sidecar runs.
#[derive(Debug, Clone)]
pub struct SidecarOptions {
    /// Each reconcile's options (`file`, state directory, registry CA…); `now` and `stop` are
    /// set by the sidecar for each.
    pub reconcile: ReconcileOptions,
    /// The time plans are made for.
    pub clock: Clock,
    /// Heal or only report drift.
    pub drift: DriftMode,
    /// How often the host is compared with plugins.yaml when nothing changed.
    pub drift_interval: Duration,
    /// How long the files must be quiet after a change before they are read.
    pub debounce: Duration,
    /// The longest backoff between retries of a failing reconcile.
    pub max_backoff: Duration,
    /// Apply only a plugins.yaml (and bases) exactly as their commit holds them: an edit not
    /// committed, or a file caught mid-write, is never applied.
    pub committed_only: bool,
}

/// What the sidecar wakes up for.
#[derive(Debug)]
enum Wake {
    /// A watched directory changed.
    Files,
    /// A stop was asked.
    Stop,
}

/// Stops a running [`Sidecar`] from another thread (a signal handler).
#[derive(Debug, Clone)]
pub struct SidecarHandle {
    stop: Stop,
    wake: Sender<Wake>,
}

impl SidecarHandle {
    /// Asks the sidecar to stop at the next safe point (see the module docs).
    pub fn stop(&self) {
        self.stop.ask();
        let _ = self.wake.send(Wake::Stop);
    }
}

/// The sidecar loop (see the module docs), over the host behind a [`HostPort`]: its control
/// API ([`crate::apply::HttpHost`]) or a runtime in this process
/// ([`crate::apply::InProcessHost`]).
pub struct Sidecar {
    options: SidecarOptions,
    port: Box<dyn HostPort>,
    observers: Vec<Box<dyn Observer>>,
    stop: Stop,
    wake: Sender<Wake>,
    woken: Receiver<Wake>,
}

impl std::fmt::Debug for Sidecar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sidecar")
            .field("options", &self.options)
            .field("host", &self.port.describe())
            .finish_non_exhaustive()
    }
}

/// What the loop keeps between wake-ups.
#[derive(Default)]
struct Memory {
    /// The last plugins.yaml read that was valid: what is reconciled to.
    last_good: Option<DesiredState>,
    /// What the last reconcile that ran to its end reconciled to.
    reconciled: Option<Digest>,
    /// The last invalid file's report (told once, not at every look).
    invalid: Option<String>,
    /// Failed reconciles in a row.
    failures: u32,
    /// When the next try of a failed reconcile (or of the journal left) is due.
    retry_at: Option<Instant>,
    /// What the failing reconcile reconciled to: a file event that changes nothing of it
    /// waits for the retry, a real change goes at once.
    attempted: Option<Digest>,
    /// The journal held steps a previous run left and they could not be finished yet (with
    /// no valid plugins.yaml, no reconcile would finish them).
    journal_left: bool,
    /// The files followed: the desired state's (plugins.yaml, its bases, its lock) as last
    /// read valid, plus plugins.yaml itself (an error never shrinks the set).
    followed: Vec<PathBuf>,
    /// The last drift told, by plan id (told once while it lasts, in report mode).
    drift_told: Option<String>,
    /// A reconcile stopped part-way, as asked: what it left in flight.
    stopped: Option<String>,
    /// When the next drift check is due (`None`: at once).
    next_check: Option<Instant>,
    /// When expired rollback points were last dropped.
    collected: Option<Instant>,
    /// When the earliest `scheduled` change the last plan kept may go.
    scheduled_at: Option<Instant>,
}

impl Sidecar {
    /// A sidecar for the host behind `port`; it tells `observers` (the log is always one).
    pub fn new(options: SidecarOptions, port: Box<dyn HostPort>) -> Sidecar {
        let (wake, woken) = std::sync::mpsc::channel();
        Sidecar {
            options,
            port,
            observers: vec![Box::new(LogObserver)],
            stop: Stop::new(),
            wake,
            woken,
        }
    }

    /// Adds an observer (alerts, metrics, the status file).
    pub fn observe(&mut self, observer: Box<dyn Observer>) {
        self.observers.push(observer);
    }

    /// A handle that stops it from another thread.
    pub fn handle(&self) -> SidecarHandle {
        SidecarHandle {
            stop: self.stop.clone(),
            wake: self.wake.clone(),
        }
    }

    /// Runs until stopped (see the module docs). Returns `Ok` on a stop asked; an error only
    /// when the loop itself cannot run (the files cannot be watched).
    pub fn run(mut self) -> Result<()> {
        let mut watch = FileWatch::new(self.wake.clone(), || Wake::Files)
            .map_err(|error| Error::Watch { source: error })?;
        let file = self.options.reconcile.file.clone();
        let mut memory = Memory {
            followed: vec![file.clone(), lock_of(&file)],
            ..Memory::default()
        };
        watch.follow(&memory.followed);

        self.finish_journal(&mut memory);
        let mut next = (!self.stop.asked()).then_some(Trigger::Start);
        memory.next_check = Some(Instant::now() + self.options.drift_interval);
        while !self.stop.asked() {
            match next.take() {
                Some(trigger @ (Trigger::Start | Trigger::Change)) => {
                    self.look(&mut memory, &mut watch, trigger);
                }
                Some(Trigger::Retry) if memory.journal_left && memory.last_good.is_none() => {
                    memory.retry_at = None;
                    self.finish_journal(&mut memory);
                }
                Some(Trigger::Retry) => self.reconcile(&mut memory, Trigger::Retry),
                Some(Trigger::Schedule) => {
                    memory.scheduled_at = None;
                    self.reconcile(&mut memory, Trigger::Schedule);
                }
                Some(Trigger::Drift) => {
                    memory.next_check = Some(Instant::now() + self.options.drift_interval);
                    // The file read again first: a change no event told of (a watch lost
                    // with a directory, a file system that sends none) is seen here.
                    if !self.look(&mut memory, &mut watch, Trigger::Change) {
                        self.check_drift(&mut memory);
                    }
                    self.collect(&mut memory);
                }
                None => {}
            }
            if self.stop.asked() {
                break;
            }
            // Sleep until a file changes, the retry is due, a scheduled change's time, or the
            // drift check.
            let next_check = memory.next_check.unwrap_or_else(Instant::now);
            let (due, trigger) = [
                (memory.retry_at, Trigger::Retry),
                (memory.scheduled_at, Trigger::Schedule),
            ]
            .into_iter()
            .filter_map(|(at, trigger)| Some((at?, trigger)))
            .filter(|(at, _)| *at < next_check)
            .min_by_key(|(at, _)| *at)
            .unwrap_or((next_check, Trigger::Drift));
            match self
                .woken
                .recv_timeout(due.saturating_duration_since(Instant::now()))
            {
                Ok(Wake::Files) => {
                    self.quiet();
                    next = Some(Trigger::Change);
                }
                Ok(Wake::Stop) => break,
                Err(RecvTimeoutError::Timeout) => next = Some(trigger),
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        let left = (memory.stopped.take()).unwrap_or_else(|| "no step in flight".to_owned());
        self.tell(&SidecarEvent::Stopping { left });
        Ok(())
    }

    /// Waits until the files have been quiet for `debounce` (a save is often several events:
    /// truncate, write, rename). A file still being written is never read: while events keep
    /// coming, it keeps waiting (saying so once a while), until a stop.
    fn quiet(&self) {
        let debounce = self.options.debounce;
        let mut busy_since = Instant::now();
        loop {
            match self.woken.recv_timeout(debounce) {
                Ok(Wake::Files) => {
                    if busy_since.elapsed() >= debounce * 20 {
                        tracing::warn!(
                            "plugins.yaml's directory keeps changing; waiting for it to be quiet \
                             for {} before reading it",
                            humantime::format_duration(debounce)
                        );
                        busy_since = Instant::now();
                    }
                }
                // A stop is seen by the loop through `stop.asked()`.
                Ok(Wake::Stop) | Err(_) => return,
            }
        }
    }

    /// Reads plugins.yaml and reconciles if what it asks is new (`trigger`: why it was read);
    /// whether it reconciled.
    fn look(&mut self, memory: &mut Memory, watch: &mut FileWatch, trigger: Trigger) -> bool {
        self.read(memory, watch);
        let Some(sha256) = memory.last_good.as_ref().map(DesiredState::sha256) else {
            return false;
        };
        let changed = Some(sha256) != memory.reconciled;
        // A failing reconcile is tried again at its retry, not at every event; a new desired
        // state goes at once.
        let waits_for_retry = memory.retry_at.is_some() && memory.attempted == Some(sha256);
        if trigger == Trigger::Start || (changed && !waits_for_retry) {
            self.reconcile(memory, trigger);
            return true;
        }
        false
    }

    /// Reads plugins.yaml: a valid file asking something new becomes the last good one; an
    /// invalid one is told (once) and changes nothing.
    fn read(&mut self, memory: &mut Memory, watch: &mut FileWatch) {
        let file = self.options.reconcile.file.clone();
        // Read through the path as it resolves now, once: the file and the bases it extends
        // (relative to it) all come from one revision, though a symlink above them (git-sync's
        // `current`) may swap to another in between.
        let resolved = std::fs::canonicalize(&file).unwrap_or_else(|_| file.clone());
        let read = DesiredState::read(&resolved).and_then(|desired| {
            if self.options.committed_only {
                check_committed(&desired)?;
            }
            Ok(desired)
        });
        match read {
            Ok(desired) => {
                // The path as named too: its symlinks are where the next revision lands.
                memory.followed = std::iter::once(file.clone())
                    .chain(desired.desired.files.iter().cloned())
                    .chain([lock_of(&file), lock_of(&resolved)])
                    .collect();
                watch.follow(&memory.followed);
                // Valid again, even as the last good one was: told, so that what said it
                // invalid (status, metrics) hears it is not any more.
                let was_invalid = memory.invalid.take().is_some();
                let sha256 = desired.sha256();
                if was_invalid
                    || memory.last_good.as_ref().map(DesiredState::sha256) != Some(sha256)
                {
                    self.tell(&SidecarEvent::DesiredRead {
                        sha256,
                        commit: desired
                            .commit()
                            .map(|(commit, dirty)| (commit.to_owned(), dirty)),
                    });
                }
                memory.last_good = Some(desired);
            }
            Err(error) => {
                // What was followed stays followed (a broken base is fixed where it lives).
                if !memory.followed.contains(&file) {
                    memory.followed.push(file.clone());
                }
                watch.follow(&memory.followed);
                let report = match error {
                    Error::InvalidDesiredState { report } => report,
                    other => other.to_string(),
                };
                if memory.invalid.as_ref() != Some(&report) {
                    memory.invalid = Some(report.clone());
                    self.tell(&SidecarEvent::DesiredInvalid {
                        report,
                        keeping: memory.last_good.as_ref().map(DesiredState::sha256),
                    });
                }
            }
        }
    }

    /// Finishes the steps a previous run left in the journal, whatever plugins.yaml says now;
    /// tried again with a backoff while it cannot (a reconcile, which resumes the journal
    /// first, does it too).
    fn finish_journal(&mut self, memory: &mut Memory) {
        let options = self.reconcile_options();
        let started = Instant::now();
        let mut progress = Tell::new(&mut self.observers);
        match ops::finish_journal(&options, self.port.as_ref(), &mut progress) {
            Ok(report) => {
                memory.journal_left = false;
                if let Some(report) = report {
                    self.tell(&SidecarEvent::ReconcileFinished {
                        trigger: Trigger::Start,
                        report,
                        took: started.elapsed(),
                    });
                }
            }
            Err(Error::Stopped { left }) => memory.stopped = Some(left),
            Err(error) => {
                memory.journal_left = true;
                self.retry_later(
                    memory,
                    Trigger::Start,
                    &error,
                    "the steps a previous run left: ",
                );
            }
        }
    }

    /// Reconciles to the last good desired state, as `plugsync reconcile` does.
    fn reconcile(&mut self, memory: &mut Memory, trigger: Trigger) {
        let Some(desired) = memory.last_good.clone() else {
            return;
        };
        let sha256 = desired.sha256();
        self.tell(&SidecarEvent::ReconcileStarted { trigger });
        let started = Instant::now();
        let options = self.reconcile_options();
        let mut progress = Tell::new(&mut self.observers);
        let result = ops::reconcile_desired(desired, &options, self.port.as_ref(), &mut progress);
        match result {
            Ok(report) => {
                memory.reconciled = Some(sha256);
                memory.attempted = None;
                memory.journal_left = false;
                memory.failures = 0;
                memory.retry_at = None;
                memory.drift_told = None;
                // Checked at once: what runs now, for status and metrics (and a host that
                // changed meanwhile).
                if trigger != Trigger::Drift {
                    memory.next_check = None;
                }
                self.tell(&SidecarEvent::ReconcileFinished {
                    trigger,
                    report,
                    took: started.elapsed(),
                });
            }
            Err(Error::Stopped { left }) => memory.stopped = Some(left),
            Err(error) => {
                memory.attempted = Some(sha256);
                self.retry_later(memory, trigger, &error, "");
            }
        }
    }

    /// After a reconcile (or the journal's finish) failed with `error`: the retry scheduled by
    /// [`retry_delay`] and told, `what` before the error. A freeze or a closed window is not a
    /// fault: it does not grow the backoff.
    fn retry_later(&mut self, memory: &mut Memory, trigger: Trigger, error: &Error, what: &str) {
        if !waits(error) {
            memory.failures += 1;
        }
        let retry_in = retry_delay(
            error,
            memory.failures,
            self.options.drift_interval,
            self.options.max_backoff,
        );
        memory.retry_at = Some(Instant::now() + retry_in);
        self.tell(&SidecarEvent::ReconcileFailed {
            trigger,
            error: format!("{what}{error}"),
            failures: memory.failures,
            retry_in,
        });
    }

    /// Compares the host with the last good desired state, without the lease; drift is told
    /// and, with `--drift heal`, reconciled away.
    fn check_drift(&mut self, memory: &mut Memory) {
        let Some(desired) = memory.last_good.clone() else {
            return;
        };
        if memory.retry_at.is_some() {
            // A retry is due anyway: it reconciles.
            return;
        }
        let options = self.reconcile_options();
        let (document, observation) = match ops::plan_now(desired, &options, self.port.as_ref()) {
            Ok(planned) => planned,
            Err(error) => {
                tracing::warn!("drift check failed: {error}");
                return;
            }
        };
        self.tell(&SidecarEvent::Observed {
            plugins: seen(&document, &observation),
        });
        let kept = document.plan.kept().map(|(_, kept)| &kept.because);
        memory.scheduled_at =
            next_scheduled(kept, self.options.clock.now()).map(|wait| Instant::now() + wait);
        // This loop holds the lease only while it reconciles: whoever holds it now is another
        // client in the middle of its own changes (an operator's rollback, a manual
        // reconcile), which are not drift. Looked at again next time.
        if let Some(holder) = &observation.running.status.lease.holder {
            tracing::debug!(holder = %holder.owner, "drift check skipped: another client reconciles");
            return;
        }
        if document.plan.in_sync() {
            memory.drift_told = None;
            self.tell(&SidecarEvent::Checked { drift: false });
            return;
        }
        let plan_id = document.plan_id.to_string();
        let healing = self.options.drift == DriftMode::Heal;
        if healing || memory.drift_told.as_ref() != Some(&plan_id) {
            let changes = (document.plan.changes.iter())
                .filter(|change| !change.steps.is_empty())
                .map(|change| {
                    let at = |v: &Option<crate::plan::VersionAt>| {
                        v.as_ref()
                            .map_or("not loaded".to_owned(), |v| v.version.to_string())
                    };
                    format!(
                        "{}: runs {}, plugins.yaml asks {}",
                        change.plugin,
                        at(&change.from),
                        at(&change.to)
                    )
                })
                .collect();
            self.tell(&SidecarEvent::DriftFound {
                plan_id: plan_id.clone(),
                changes,
                healing,
            });
            memory.drift_told = Some(plan_id);
        }
        self.tell(&SidecarEvent::Checked { drift: true });
        if healing {
            self.reconcile(memory, Trigger::Drift);
        }
    }

    /// Drops expired rollback points, at most once an hour (each reconcile does too, on its
    /// way out: this is for a sidecar with nothing to apply for days).
    fn collect(&mut self, memory: &mut Memory) {
        if memory.collected.is_some_and(|at| at.elapsed() < GC_EVERY) {
            return;
        }
        memory.collected = Some(Instant::now());
        let state_dir = &self.options.reconcile.state_dir;
        if !state_dir.join(crate::store::FILE_NAME).exists() {
            return;
        }
        let now_ms = self.options.clock.now().as_millisecond();
        match crate::store::Store::open(state_dir).and_then(|store| store.gc(now_ms)) {
            Ok(dropped) if !dropped.is_empty() => {
                tracing::info!(dropped = dropped.len(), "expired rollback points dropped");
            }
            Ok(_) => {}
            // Open in another plugsync (a manual reconcile with this state directory): that
            // reconcile collects on its way out.
            Err(error) => tracing::debug!("rollback points not collected now: {error}"),
        }
    }

    /// Each reconcile's options: the clock read now, and this sidecar's stop.
    fn reconcile_options(&self) -> ReconcileOptions {
        ReconcileOptions {
            now: self.options.clock.now(),
            stop: self.stop.clone(),
            ..self.options.reconcile.clone()
        }
    }

    fn tell(&mut self, event: &SidecarEvent) {
        for observer in &mut self.observers {
            observer.observe(event);
        }
    }
}

/// How often a sidecar with nothing to apply drops expired rollback points.
const GC_EVERY: Duration = Duration::from_secs(3600);

/// How long the sidecar waits before it tries a failed reconcile again, the `failures`-th
/// fault in a row: an exponential backoff from one second up to `max` — but a freeze or a
/// closed update window is not a fault, and is looked at again at the next drift check.
pub fn retry_delay(error: &Error, failures: u32, interval: Duration, max: Duration) -> Duration {
    if waits(error) {
        return interval;
    }
    Duration::from_secs(1u64 << failures.saturating_sub(1).min(20)).min(max)
}

/// Whether `error` is the host's or the policy's "not now" rather than a fault.
fn waits(error: &Error) -> bool {
    matches!(error, Error::Restrained { .. } | Error::PolicyWindow { .. })
}

/// The lock beside plugins.yaml (followed too: a new lock changes the versions applied).
fn lock_of(file: &Path) -> PathBuf {
    file.with_file_name("plugins.lock")
}

/// With `--committed-only`: refuses a desired state whose files are not exactly what their
/// commit holds (modified, untracked, outside git).
fn check_committed(desired: &DesiredState) -> Result<()> {
    use crate::spec::provenance::{FileState, Git};
    for file in &desired.provenance {
        let why = match &file.git {
            Git::Repository {
                commit: Some(_),
                state: FileState::Clean,
                ..
            } => continue,
            Git::Repository { commit: None, .. } => "its repository has no commit yet",
            Git::Repository { .. } => "it differs from the commit checked out",
            Git::Outside => "it is in no git repository",
            Git::Unreadable { .. } => "its repository cannot be read",
        };
        return Err(Error::InvalidDesiredState {
            report: format!(
                "error: `{}` is not applied: {why} (`--committed-only` applies only committed \
                 files)",
                file.file.display()
            ),
        });
    }
    Ok(())
}

/// The apply's progress, as events.
struct Tell<'a> {
    observers: &'a mut Vec<Box<dyn Observer>>,
    started: std::collections::BTreeSet<String>,
}

impl<'a> Tell<'a> {
    fn new(observers: &'a mut Vec<Box<dyn Observer>>) -> Tell<'a> {
        Tell {
            observers,
            started: std::collections::BTreeSet::new(),
        }
    }

    fn tell(&mut self, event: &SidecarEvent) {
        for observer in self.observers.iter_mut() {
            observer.observe(event);
        }
    }
}

impl Progress for Tell<'_> {
    fn step(&mut self, report: &StepReport) {
        self.tell(&SidecarEvent::StepEnded(report.clone()));
    }

    fn working(&mut self, report: &StepReport) {
        if self.started.insert(report.step_id.clone()) {
            self.tell(&SidecarEvent::StepStarted {
                plugin: report.plugin.clone(),
                title: report.title.clone(),
                step_id: report.step_id.clone(),
                from: report.from.clone(),
                to: report.to.clone(),
            });
        }
    }

    fn notice(&mut self, text: &str) {
        self.tell(&SidecarEvent::Notice(text.to_owned()));
    }
}

/// How long from `now` until the earliest `scheduled` change among those a plan keeps (`kept`:
/// why each is kept) may go, if any.
fn next_scheduled<'a>(
    kept: impl Iterator<Item = &'a crate::plan::KeptBecause>,
    now: Timestamp,
) -> Option<Duration> {
    kept.filter_map(|because| match because {
        crate::plan::KeptBecause::Scheduled { not_before, .. } => {
            not_before.parse::<Timestamp>().ok()
        }
        _ => None,
    })
    .min()
    .map(|at| {
        let wait = at.as_millisecond().saturating_sub(now.as_millisecond());
        Duration::from_millis(wait.max(0) as u64)
    })
}

/// Each plugin plugins.yaml names or the host runs, as the plan and the host's status saw it.
fn seen(
    document: &crate::plan::PlanDocument,
    observation: &crate::observe::Observation,
) -> Vec<PluginSeen> {
    let running = &observation.running.status.plugins;
    (document.plan.changes.iter())
        .map(|change| PluginSeen {
            plugin: change.plugin.clone(),
            desired: change
                .kept
                .as_ref()
                .map_or(change.to.clone(), |kept| kept.wanted.clone()),
            running: change.from.clone(),
            counters: (running.iter())
                .find(|p| p.plugin == change.plugin)
                .map(|p| p.counters),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::KeptBecause;

    fn scheduled(not_before: &str) -> KeptBecause {
        KeptBecause::Scheduled {
            at: "18:00 America/New_York".to_owned(),
            not_before: not_before.to_owned(),
            wait: String::new(),
        }
    }

    #[test]
    fn the_sidecar_wakes_for_the_earliest_scheduled_change_kept() {
        let now: Timestamp = "2026-12-05T17:00:00Z".parse().unwrap();
        let held = KeptBecause::Needs {
            plugin: "risk_model".to_owned(),
            requirement: ">=2".to_owned(),
        };
        let cases = [
            (vec![], None),
            (vec![held.clone()], None),
            (
                vec![
                    held,
                    scheduled("2026-12-05T23:00:00Z"),
                    scheduled("2026-12-05T18:00:00Z"),
                ],
                Some(Duration::from_secs(3600)),
            ),
            // Already due (the plan that kept it was made before): at once.
            (
                vec![scheduled("2026-12-05T16:00:00Z")],
                Some(Duration::ZERO),
            ),
        ];
        for (kept, expected) in cases {
            assert_eq!(next_scheduled(kept.iter(), now), expected, "{kept:?}");
        }
    }
}
