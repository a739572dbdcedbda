//! What `plugsync status` adds for an operator, beside what the host runs: with `-f
//! plugins.yaml`, desired against running for each plugin (in sync, a change pending, or kept
//! by the host's restraints, and why), the drift seen and the restraints plugins.yaml has moved
//! past; from this plugsync's state directory, the last plan it applied and how it ended, and
//! the rollback points it keeps. The host's own facts (freeze, holds, failed marks, halts) are
//! in the host's part. In JSON, all of it is under its own key (`plugsync`), so a saved status
//! still reads back as the host's running state (`reconcile --dry-run --observed`).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use plugsync_host::control::api::RunningState;
use serde::Serialize;

use super::history::{HistoryOptions, Outcome, history};
use super::reconcile::Inputs;
use crate::error::Result;
use crate::observe::{Observation, Source};
use crate::plan::{ChangeKind, SearchLimits};
use crate::store::{FILE_NAME, Store};

/// The operator's view, as `plugsync status` adds it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OperatorView {
    /// Desired against running (with `-f`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub desired: Option<DesiredView>,
    /// The last plan this plugsync applied, and how its steps ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_plan: Option<LastPlan>,
    /// The rollback points kept, newest first.
    pub rollback_points: Vec<PointView>,
    /// The journal is open in another plugsync (a sidecar reconciling now): the last plan and
    /// the rollback points are not shown.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub journal_busy: bool,
    /// What the sidecar (`plugsync run`) with this state directory says of itself, from its
    /// `sidecar.json`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sidecar: Option<crate::watch::SidecarStatus>,
    /// When this view was taken (`PLUGSYNC_NOW` in tests): a sidecar's silence is judged by it.
    #[serde(skip)]
    pub now: Timestamp,
}

/// plugins.yaml against the host.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DesiredView {
    /// The file.
    pub file: PathBuf,
    /// Its git commit, when it is in a repository.
    pub commit: Option<String>,
    /// Whether it differs from that commit.
    pub dirty: Option<bool>,
    /// Each plugin, as the plan sees it.
    pub plugins: Vec<PluginView>,
    /// Drift: plugins whose last change was not the reconciler's, and how.
    pub drift: Vec<String>,
    /// Holds and failed marks the next reconcile lifts (their plugin's entry changed).
    pub lifts: Vec<String>,
    /// Whether the next reconcile has nothing to do.
    pub in_sync: bool,
}

/// One plugin, desired against running.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PluginView {
    /// The plugin.
    pub plugin: String,
    /// What plugins.yaml asks (`None`: it does not name it).
    pub desired: Option<String>,
    /// What runs (`None`: not loaded).
    pub running: Option<String>,
    /// `in-sync`, `install`, `upgrade`, `downgrade`, `reconfigure`, `remove`, `unmanaged`, or
    /// `kept`.
    pub status: String,
    /// Why it is kept, for `kept`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// The last plan this plugsync applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastPlan {
    /// Its id.
    pub plan_id: String,
    /// When its first step started (RFC 3339, to the second).
    pub started_at: String,
    /// Who applied it.
    pub client: Option<String>,
    /// How many steps were committed.
    pub done: usize,
    /// The steps that failed (rolled back or stopped): `plugin from → to: check`.
    pub failed: Vec<String>,
    /// Steps not ended yet (running now, or left for the next reconcile).
    pub unfinished: usize,
}

/// A rollback point, as status lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PointView {
    /// The plugin.
    pub plugin: String,
    /// The version it ran.
    pub version: String,
    /// The step it was taken before.
    pub step_id: String,
    /// When it was taken (RFC 3339).
    pub taken_at: String,
    /// When it expires (RFC 3339).
    pub expires_at: String,
    /// Whether it holds a state.
    pub state: bool,
}

/// The operator's view of `running` (the host's status): against plugins.yaml at `file` if
/// given, and from the journal in `state_dir` if there is one.
pub fn operator_view(
    running: &RunningState,
    file: Option<&Path>,
    state_dir: &Path,
    now: Timestamp,
) -> Result<OperatorView> {
    let desired = match file {
        Some(file) => Some(desired_view(running, file, now)?),
        None => None,
    };
    let journal = match state_dir.join(FILE_NAME).exists() {
        true => last_plan(state_dir).and_then(|plan| Ok((plan, points(state_dir)?))),
        false => Ok((None, Vec::new())),
    };
    let (last_plan, rollback_points, journal_busy) = match journal {
        Ok((plan, points)) => (plan, points, false),
        Err(error) if in_use(&error) => (None, Vec::new(), true),
        Err(error) => return Err(error),
    };
    let sidecar = crate::watch::SidecarStatus::read(state_dir).unwrap_or_else(|error| {
        tracing::warn!("cannot read the sidecar's status: {error}");
        None
    });
    Ok(OperatorView {
        desired,
        last_plan,
        rollback_points,
        journal_busy,
        sidecar,
        now,
    })
}

/// Whether `error` says the journal is open in another plugsync.
fn in_use(error: &crate::Error) -> bool {
    match error {
        crate::Error::Store(error) => matches!(**error, crate::store::StoreError::InUse { .. }),
        crate::Error::History(error) => matches!(**error, super::HistoryError::JournalInUse { .. }),
        _ => false,
    }
}

fn desired_view(running: &RunningState, file: &Path, now: Timestamp) -> Result<DesiredView> {
    let inputs = Inputs::read(file, false, None)?;
    let observation = Observation {
        source: Source::File {
            path: file.to_owned(),
        },
        running: running.clone(),
    };
    let document = inputs.plan(observation, now, SearchLimits::default())?;
    let plugins = (document.plan.changes.iter())
        .map(|change| {
            let desired = match change.kind {
                ChangeKind::Unmanaged | ChangeKind::Remove => None,
                ChangeKind::Kept => (change.kept.as_ref())
                    .and_then(|k| k.wanted.as_ref())
                    .map(|w| w.version.to_string()),
                _ => change.to.as_ref().map(|t| t.version.to_string()),
            };
            let status = match change.kind {
                ChangeKind::Unchanged => "in-sync",
                ChangeKind::Install => "install",
                ChangeKind::Upgrade => "upgrade",
                ChangeKind::Downgrade => "downgrade",
                ChangeKind::Reconfigure => "reconfigure",
                ChangeKind::Remove => "remove",
                ChangeKind::Unmanaged => "unmanaged",
                ChangeKind::Kept => "kept",
            };
            PluginView {
                plugin: change.plugin.clone(),
                desired,
                running: change.from.as_ref().map(|f| f.version.to_string()),
                status: status.to_owned(),
                why: crate::render::kept_why(change),
            }
        })
        .collect();
    let git = inputs.provenance.first().map(|p| &p.git);
    let commit = git.and_then(|g| g.commit()).map(str::to_owned);
    let dirty = commit.as_ref().and(git.map(|g| g.dirty()));
    Ok(DesiredView {
        file: file.to_owned(),
        commit,
        dirty,
        plugins,
        drift: document
            .drift
            .iter()
            .map(crate::render::drift_text)
            .collect(),
        lifts: (document.plan.lifts.iter())
            .map(|lift| match lift {
                crate::plan::Lift::Hold { plugin, .. } => format!("the hold on `{plugin}`"),
                crate::plan::Lift::Failed {
                    plugin, version, ..
                } => format!("the failed mark on `{plugin}` {version}"),
            })
            .collect(),
        in_sync: document.plan.in_sync(),
    })
}

fn last_plan(state_dir: &Path) -> Result<Option<LastPlan>> {
    let history = history(&HistoryOptions {
        state_dir: state_dir.to_owned(),
        plugin: None,
        since: None,
    })?;
    let Some(newest) = history.entries.first() else {
        return Ok(None);
    };
    let steps: Vec<_> = (history.entries.iter())
        .filter(|entry| entry.plan_id == newest.plan_id)
        .collect();
    let count = |outcome: Outcome| steps.iter().filter(|s| s.outcome == outcome).count();
    let failed = (steps.iter())
        .filter(|s| matches!(s.outcome, Outcome::RolledBack | Outcome::Stopped))
        .map(|s| {
            let version = |v: &Option<super::history::Version>| {
                v.as_ref().map_or("-".to_owned(), |v| v.version.clone())
            };
            format!(
                "{} {} → {}: {}",
                s.plugin,
                version(&s.from),
                version(&s.to),
                s.check.as_deref().unwrap_or("failed")
            )
        })
        .collect();
    Ok(Some(LastPlan {
        plan_id: newest.plan_id.clone(),
        started_at: (steps.iter().map(|s| s.started_at.clone()).min())
            .map(|at| to_the_second(&at))
            .unwrap_or_default(),
        client: newest.client.clone(),
        done: count(Outcome::Done),
        failed,
        unfinished: count(Outcome::Unfinished),
    }))
}

/// An RFC 3339 time to the second (`2026-12-05T17:00:03Z`), as the rest of status shows them.
fn to_the_second(at: &str) -> String {
    at.parse::<Timestamp>()
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| at.to_owned())
}

fn points(state_dir: &Path) -> Result<Vec<PointView>> {
    let store = Store::open(state_dir)?;
    let time = |ms: i64| {
        Timestamp::from_millisecond(ms)
            .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default()
    };
    Ok((store.points(None)?.into_iter())
        .map(|point| PointView {
            plugin: point.plugin,
            version: point.version,
            step_id: point.step_id,
            taken_at: time(point.at_ms),
            expires_at: time(point.expires_at_ms),
            state: point.state.is_some(),
        })
        .collect())
}

impl OperatorView {
    /// The view as text, after the host's part.
    pub fn text(&self) -> String {
        let mut out = String::new();
        if let Some(desired) = &self.desired {
            let at = match (&desired.commit, desired.dirty) {
                (Some(commit), Some(true)) => {
                    format!(" at {} (modified since)", &commit[..commit.len().min(12)])
                }
                (Some(commit), _) => format!(" at {}", &commit[..commit.len().min(12)]),
                _ => String::new(),
            };
            let _ = writeln!(out, "\ndesired: {}{at}", desired.file.display());
            let width =
                |f: &dyn Fn(&PluginView) -> usize| desired.plugins.iter().map(f).max().unwrap_or(0);
            let plugin_w = width(&|p| p.plugin.len()).max("PLUGIN".len());
            let desired_w = width(&|p| p.desired.as_deref().unwrap_or("-").len()).max(7);
            let running_w = width(&|p| p.running.as_deref().unwrap_or("-").len()).max(7);
            let _ = writeln!(
                out,
                "  {:plugin_w$}  {:desired_w$}  {:running_w$}  STATUS",
                "PLUGIN", "DESIRED", "RUNNING"
            );
            for plugin in &desired.plugins {
                let status = match &plugin.why {
                    Some(why) => format!("kept: {why}"),
                    None => plugin.status.clone(),
                };
                let _ = writeln!(
                    out,
                    "  {:plugin_w$}  {:desired_w$}  {:running_w$}  {status}",
                    plugin.plugin,
                    plugin.desired.as_deref().unwrap_or("-"),
                    plugin.running.as_deref().unwrap_or("-"),
                );
            }
            for drift in &desired.drift {
                let _ = writeln!(out, "  drift: {drift}");
            }
            for lift in &desired.lifts {
                let _ = writeln!(out, "  the next reconcile lifts {lift} (its entry changed)");
            }
            let kept = desired
                .plugins
                .iter()
                .filter(|p| p.status == "kept")
                .count();
            let _ = writeln!(
                out,
                "  {}",
                match (desired.in_sync, kept) {
                    (true, 0) => "in sync: the next reconcile has nothing to do".to_owned(),
                    (true, n) =>
                        format!("nothing for the next reconcile to do now: {n} kept (above)"),
                    (false, _) => {
                        "not in sync: `plugsync reconcile --dry-run` shows the plan".to_owned()
                    }
                }
            );
        }
        match &self.last_plan {
            Some(plan) => {
                let short = plan.plan_id.get(..12).unwrap_or(&plan.plan_id);
                let by = plan
                    .client
                    .as_deref()
                    .map(|c| format!(" by {c}"))
                    .unwrap_or_default();
                let _ = write!(
                    out,
                    "\nlast plan applied here: {short}, {}{by}: {} committed",
                    plan.started_at, plan.done
                );
                if !plan.failed.is_empty() {
                    let _ = write!(
                        out,
                        ", {} failed ({})",
                        plan.failed.len(),
                        plan.failed.join("; ")
                    );
                }
                if plan.unfinished > 0 {
                    let _ = write!(out, ", {} unfinished", plan.unfinished);
                }
                out.push('\n');
            }
            None if self.desired.is_some() => out.push_str("\nlast plan applied here: none\n"),
            None => {}
        }
        if self.journal_busy {
            out.push_str(
                "\nthe journal is open in another plugsync (a sidecar reconciling?): the last \
                 plan and the rollback points are not shown\n",
            );
        }
        if let Some(sidecar) = &self.sidecar {
            out.push_str(&sidecar_text(sidecar, self.now));
        }
        if !self.rollback_points.is_empty() {
            let _ = writeln!(
                out,
                "\nrollback points ({} kept):",
                self.rollback_points.len()
            );
            for point in &self.rollback_points {
                let _ = writeln!(
                    out,
                    "  {} {} taken {} before step {}, expires {}{}",
                    point.plugin,
                    point.version,
                    point.taken_at,
                    point.step_id.get(..20).unwrap_or(&point.step_id),
                    point.expires_at,
                    if point.state { "" } else { " (no state)" }
                );
            }
        }
        out
    }
}

/// What the sidecar says of itself, for people.
fn sidecar_text(sidecar: &crate::watch::SidecarStatus, now: Timestamp) -> String {
    let mut out = String::new();
    let at = |t: &str| to_the_second(t);
    match &sidecar.stopped_at {
        Some(stopped) => {
            let _ = writeln!(
                out,
                "\nsidecar: stopped {} (pid {} ran since {})",
                at(stopped),
                sidecar.pid,
                at(&sidecar.started_at)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "\nsidecar: pid {} since {}, following {} on {}",
                sidecar.pid,
                at(&sidecar.started_at),
                sidecar.file.display(),
                sidecar.host
            );
            // It checks every interval: silent for three, it is gone (killed, its machine
            // down) or stuck.
            let heard = (sidecar.last_check_at.as_deref())
                .unwrap_or(&sidecar.started_at)
                .parse::<Timestamp>()
                .ok();
            let interval = Duration::from_millis(sidecar.drift_interval_ms.max(1));
            if let Some(heard) = heard
                && sidecar.drift_interval_ms > 0
                && now.duration_since(heard).unsigned_abs() > interval * 3
            {
                let _ = writeln!(
                    out,
                    "  NOT HEARD FROM since {} (it checks every {}): is it running?",
                    to_the_second(&heard.to_string()),
                    humantime::format_duration(interval)
                );
            }
        }
    }
    if let Some(invalid) = &sidecar.invalid {
        // The first problem and its place; `plugsync validate` shows them all.
        let mut lines = invalid.report.lines();
        let first = lines.next().unwrap_or_default();
        let first = first.strip_prefix("error: ").unwrap_or(first);
        let place = lines
            .find_map(|line| line.trim_start().strip_prefix("--> "))
            .map(|place| format!(" at {place}"))
            .unwrap_or_default();
        let more = invalid.report.matches("\nerror").count();
        let _ = writeln!(
            out,
            "  plugins.yaml INVALID since {}: {first}{place}{}",
            at(&invalid.since),
            match more {
                0 => String::new(),
                n => format!(" (and {n} more: `plugsync validate`)"),
            }
        );
        let _ = writeln!(
            out,
            "  reconciling to the last good one{}",
            match &sidecar.desired {
                Some(desired) => format!(
                    " ({})",
                    desired.commit.as_deref().map_or_else(
                        || format!("read {}", at(&desired.at)),
                        |c| format!("commit {}", c.get(..12).unwrap_or(c))
                    )
                ),
                None => ": none yet, nothing is applied".to_owned(),
            }
        );
    } else if let Some(desired) = &sidecar.desired {
        let _ = writeln!(
            out,
            "  desired: read {}{}",
            at(&desired.at),
            match &desired.commit {
                Some(c) if desired.dirty =>
                    format!(" at {} (modified since)", c.get(..12).unwrap_or(c)),
                Some(c) => format!(" at {}", c.get(..12).unwrap_or(c)),
                None => String::new(),
            }
        );
    }
    if let Some(last) = &sidecar.last_reconcile {
        let summary = last.summary.lines().next().unwrap_or_default();
        let _ = write!(
            out,
            "  last reconcile: {} ({}): {} — {summary}",
            at(&last.at),
            last.trigger,
            last.outcome
        );
        if let Some(retry) = &last.retry_in {
            let _ = write!(out, "; retried in {retry} ({} in a row)", last.failures);
        }
        out.push('\n');
    }
    if let Some(drift) = &sidecar.drift {
        let _ = writeln!(
            out,
            "  drift since {} ({}): {}",
            at(&drift.at),
            if drift.healing {
                "healing"
            } else {
                "reported only"
            },
            drift.changes.join("; ")
        );
    }
    if let Some(checked) = &sidecar.last_check_at {
        let _ = writeln!(
            out,
            "  drift checks: {}, the last {}",
            sidecar.checks,
            at(checked)
        );
    }
    out
}
