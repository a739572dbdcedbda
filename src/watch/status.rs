//! `sidecar.json` in the state directory: what the sidecar is doing, for `plugsync status`
//! and for people — the last good desired state, whether the file on disk is invalid, the last
//! reconcile and its outcome, drift, the next retry. Written whole after each event (to a
//! temporary file, then renamed: a reader never sees half of it), `0600`. The journal's
//! database is not used for this: the sidecar holds it only while it reconciles, and a reader
//! must not wait on it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::event::{Observer, SidecarEvent};

/// The status file's name in the state directory.
pub const SIDECAR_FILE: &str = "sidecar.json";

/// What `sidecar.json` holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct SidecarStatus {
    /// The sidecar's process id.
    pub pid: u32,
    /// When it started.
    pub started_at: String,
    /// When it stopped (`None`: running, or killed).
    pub stopped_at: Option<String>,
    /// The plugins.yaml it follows.
    pub file: PathBuf,
    /// The host it reconciles.
    pub host: String,
    /// The last valid plugins.yaml: what it asks (sha256) and the commit it was read at.
    pub desired: Option<DesiredRead>,
    /// plugins.yaml as it is on disk now cannot be applied: every problem, with its
    /// `file:line:column` (the last good desired state is the one reconciled to).
    pub invalid: Option<Invalid>,
    /// The last reconcile that ended.
    pub last_reconcile: Option<LastReconcile>,
    /// The last drift found, while it lasts.
    pub drift: Option<DriftSeen>,
    /// Reconciles ended since the start (applied, failed or in error).
    pub reconciles: u64,
    /// Drift checks made since the start.
    pub checks: u64,
    /// When the last drift check was made (every `drift_interval_ms` while it runs: a check
    /// much older than that says the sidecar is gone).
    pub last_check_at: Option<String>,
    /// How often it checks.
    pub drift_interval_ms: u64,
}

/// The last valid plugins.yaml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredRead {
    /// What it asks, as `plugins.lock` records it.
    pub sha256: String,
    /// The commit it was read at.
    pub commit: Option<String>,
    /// Whether the file differed from that commit.
    pub dirty: bool,
    /// When it was read.
    pub at: String,
}

/// plugins.yaml is invalid on disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Invalid {
    /// Since when.
    pub since: String,
    /// Every problem.
    pub report: String,
}

/// How the last reconcile ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LastReconcile {
    /// When it ended.
    pub at: String,
    /// Why it ran: `start`, `change`, `drift`, `retry`.
    pub trigger: String,
    /// `applied` (every step), `failed` (a step failed: rolled back, marked) or `error` (it
    /// could not run to its end).
    pub outcome: String,
    /// Its summary, or the error.
    pub summary: String,
    /// The error's retry, when it failed: in how long, and how many failures in a row.
    pub retry_in: Option<String>,
    /// Failures in a row.
    pub failures: u32,
}

/// Drift found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DriftSeen {
    /// When.
    pub at: String,
    /// The plan that would heal it.
    pub plan_id: String,
    /// What differs.
    pub changes: Vec<String>,
    /// Whether the sidecar heals it.
    pub healing: bool,
}

impl SidecarStatus {
    /// Reads `DIR/sidecar.json` (`None`: no sidecar ever ran with this state directory).
    pub fn read(state_dir: &Path) -> std::io::Result<Option<SidecarStatus>> {
        match std::fs::read(state_dir.join(SIDECAR_FILE)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(std::io::Error::other),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// Applies an event.
    fn record(&mut self, event: &SidecarEvent, now: &str) {
        match event {
            SidecarEvent::DesiredRead { sha256, commit } => {
                self.invalid = None;
                self.desired = Some(DesiredRead {
                    sha256: sha256.to_string(),
                    commit: commit.as_ref().map(|(commit, _)| commit.clone()),
                    dirty: commit.as_ref().is_some_and(|(_, dirty)| *dirty),
                    at: now.to_owned(),
                });
            }
            SidecarEvent::DesiredInvalid { report, .. } => {
                self.invalid = Some(Invalid {
                    since: now.to_owned(),
                    report: report.clone(),
                });
            }
            SidecarEvent::ReconcileFinished {
                trigger, report, ..
            } => {
                self.reconciles += 1;
                self.drift = None;
                self.last_reconcile = Some(LastReconcile {
                    at: now.to_owned(),
                    trigger: trigger.name().to_owned(),
                    outcome: if report.failed { "failed" } else { "applied" }.to_owned(),
                    summary: report.summary().trim_end().to_owned(),
                    retry_in: None,
                    failures: 0,
                });
            }
            SidecarEvent::ReconcileFailed {
                trigger,
                error,
                failures,
                retry_in,
            } => {
                self.reconciles += 1;
                self.last_reconcile = Some(LastReconcile {
                    at: now.to_owned(),
                    trigger: trigger.name().to_owned(),
                    outcome: "error".to_owned(),
                    summary: error.clone(),
                    retry_in: Some(humantime::format_duration(round(*retry_in)).to_string()),
                    failures: *failures,
                });
            }
            SidecarEvent::DriftFound {
                plan_id,
                changes,
                healing,
            } => {
                self.drift = Some(DriftSeen {
                    at: now.to_owned(),
                    plan_id: plan_id.clone(),
                    changes: changes.clone(),
                    healing: *healing,
                });
            }
            SidecarEvent::Checked { drift } => {
                self.checks += 1;
                self.last_check_at = Some(now.to_owned());
                if !drift {
                    self.drift = None;
                }
            }
            SidecarEvent::Stopping { .. } => self.stopped_at = Some(now.to_owned()),
            SidecarEvent::Observed { .. }
            | SidecarEvent::ReconcileStarted { .. }
            | SidecarEvent::StepStarted { .. }
            | SidecarEvent::StepEnded(_)
            | SidecarEvent::Notice(_) => {}
        }
    }
}

/// Whole seconds, at least one (a backoff shown to the millisecond says nothing more).
pub(super) fn round(duration: Duration) -> Duration {
    Duration::from_secs(duration.as_secs().max(1))
}

/// The observer that keeps `sidecar.json`.
#[derive(Debug)]
pub struct StatusFile {
    state_dir: PathBuf,
    status: SidecarStatus,
    /// The sidecar's clock: its times and `plugsync status`'s now agree (`PLUGSYNC_NOW`).
    clock: super::Clock,
}

impl StatusFile {
    /// Starts the file for a sidecar following `file` on `host` as `options` say.
    pub fn new(state_dir: &Path, host: &str, options: &super::SidecarOptions) -> StatusFile {
        let drift_interval = options.drift_interval;
        let file = &options.reconcile.file;
        let mut status_file = StatusFile {
            clock: options.clock,
            state_dir: state_dir.to_owned(),
            status: SidecarStatus {
                pid: std::process::id(),
                started_at: options.clock.now().to_string(),
                file: file.to_owned(),
                host: host.to_owned(),
                drift_interval_ms: drift_interval.as_millis() as u64,
                ..SidecarStatus::default()
            },
        };
        status_file.write();
        status_file
    }

    fn write(&mut self) {
        if let Err(error) = self.try_write() {
            tracing::warn!(
                "could not write `{}`: {error}",
                self.state_dir.join(SIDECAR_FILE).display()
            );
        }
    }

    fn try_write(&self) -> std::io::Result<()> {
        use std::io::Write as _;
        // Made `0700` as the journal's open makes it (this may run first), never by the umask.
        crate::store::prepare_dir(&self.state_dir).map_err(std::io::Error::other)?;
        // tempfile creates it 0600, exclusively, under an unpredictable name.
        let mut file = tempfile::NamedTempFile::new_in(&self.state_dir)?;
        let json = serde_json::to_vec_pretty(&self.status).map_err(std::io::Error::other)?;
        file.write_all(&json)?;
        file.as_file().sync_all()?;
        file.persist(self.state_dir.join(SIDECAR_FILE))
            .map_err(|error| error.error)?;
        Ok(())
    }
}

impl Observer for StatusFile {
    fn observe(&mut self, event: &SidecarEvent) {
        let before = self.status.clone();
        self.status.record(event, &self.clock.now().to_string());
        if self.status != before {
            self.write();
        }
    }
}

/// The one sidecar of a state directory: an exclusive `flock` on `STATE_DIR/sidecar.lock`,
/// held for the life of the process (the kernel lets it go however the process ends). A
/// second sidecar on the same directory would fight the first for the journal and write
/// `sidecar.json` over it.
#[derive(Debug)]
pub struct SidecarLock {
    _file: std::fs::File,
}

impl SidecarLock {
    /// Takes the lock, or says which process holds it.
    pub fn take(state_dir: &Path) -> crate::Result<SidecarLock> {
        use std::io::{Read as _, Seek as _, Write as _};
        use std::os::unix::fs::OpenOptionsExt as _;
        crate::store::prepare_dir(state_dir)?;
        let path = state_dir.join("sidecar.lock");
        let io = |source| crate::Error::Io {
            action: "lock",
            path: path.clone(),
            source,
        };
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(io)?;
        if rustix::fs::flock(&file, rustix::fs::FlockOperation::NonBlockingLockExclusive).is_err() {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            return Err(crate::Error::SidecarRunning {
                state_dir: state_dir.to_owned(),
                pid: holder.trim().to_owned(),
            });
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        write!(file, "{}", std::process::id()).map_err(io)?;
        Ok(SidecarLock { _file: file })
    }
}
