//! Alerts: what an operator must hear of at once — a step started, committed, rolled back,
//! stopped or interrupted; a reconcile that failed; drift; a plugins.yaml that cannot be
//! applied — posted to webhooks, as a versioned JSON object ([`Alert`], schema
//! `schemas/alert.schema.json`, `plugsync schema alert`) or as a Slack incoming-webhook message
//! (`{"text": …}`).
//!
//! **Delivery never holds up the loop.** [`AlertObserver::observe`] only pushes the alert onto
//! a bounded queue per webhook (full: the oldest alert is dropped, and counted); a thread per
//! webhook posts them in the order they were told, so one webhook that is down or slow delays
//! only its own alerts. Each post is retried with an exponential backoff; one that finally
//! fails is logged once and counted ([`AlertCounters`], which metrics export as
//! `plugsync_alerts_total{outcome}`). When the sidecar stops, each thread goes on delivering
//! for a short while ([`AlertOptions::drain`]), then gives up on what is left.
//!
//! A webhook's URL often carries its secret (Slack's does, in its path): logs name a webhook by
//! its scheme and host only.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::Serialize;

use super::event::{Observer, SidecarEvent};
use crate::apply::{StepOutcome, StepReport};
use crate::error::{Error, Result};

/// How an alert is written on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AlertFormat {
    /// The versioned [`Alert`] object.
    #[default]
    Json,
    /// A Slack incoming-webhook message: `{"text": "…"}`, a line, then details.
    Slack,
}

/// Where alerts go, and how hard the sidecar tries.
#[derive(Debug, Clone)]
pub struct AlertOptions {
    /// The webhooks, each told every alert (none: no alerts).
    pub webhooks: Vec<reqwest::Url>,
    /// The body's format.
    pub format: AlertFormat,
    /// Alerts waiting per webhook before the oldest is dropped.
    pub queue: usize,
    /// How long one post may take.
    pub timeout: Duration,
    /// The waits before each retry of a post that failed (their number is the retries).
    pub backoff: Vec<Duration>,
    /// How long, once the sidecar stops, the alerts queued may still be delivered.
    pub drain: Duration,
}

impl AlertOptions {
    /// Posts to `webhooks` in `format`: 256 alerts queued per webhook, 5 s per post, retried
    /// after 0.5 s, 1 s and 2 s, 3 s to drain at a stop.
    pub fn new(webhooks: Vec<reqwest::Url>, format: AlertFormat) -> AlertOptions {
        AlertOptions {
            webhooks,
            format,
            queue: 256,
            timeout: Duration::from_secs(5),
            backoff: vec![
                Duration::from_millis(500),
                Duration::from_secs(1),
                Duration::from_secs(2),
            ],
            drain: Duration::from_secs(3),
        }
    }
}

impl Default for AlertOptions {
    fn default() -> AlertOptions {
        AlertOptions::new(Vec::new(), AlertFormat::Json)
    }
}

/// What became of the alerts, per webhook post: shared with metrics
/// (`plugsync_alerts_total{outcome}`).
#[derive(Debug, Default)]
pub struct AlertCounters {
    delivered: AtomicU64,
    failed: AtomicU64,
    dropped: AtomicU64,
}

impl AlertCounters {
    /// Posts a webhook accepted (a 2xx answer).
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Posts that failed every try (or that a stop cut short).
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Alerts never posted: dropped from a full queue, or left at a stop.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// The alert's format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum ApiVersion {
    /// The first.
    #[serde(rename = "plugsync/v1")]
    V1,
}

/// What the object is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub enum AlertKind {
    /// An alert.
    Alert,
}

/// An alert, as posted in the JSON format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(title = "plugsync alert")]
pub struct Alert {
    /// `plugsync/v1`.
    pub api_version: ApiVersion,
    /// `Alert`.
    pub kind: AlertKind,
    /// What happened (`event`) and its particulars (`detail`).
    #[serde(flatten)]
    pub what: AlertDetail,
    /// When the sidecar saw it (RFC 3339, UTC).
    pub at: String,
    /// The host the sidecar reconciles (its control API's URL).
    pub host: String,
    /// The plugins.yaml it follows.
    pub file: String,
    /// The plugin, for a step's alert.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// The step's id, for a step's alert.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The version the step moves from (absent: an install).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    /// The version it moves to (absent: a removal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<String>,
    /// One line for people.
    pub summary: String,
}

/// What happened, by event, with its particulars under `detail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(
    tag = "event",
    content = "detail",
    rename_all = "kebab-case",
    rename_all_fields = "camelCase"
)]
pub enum AlertDetail {
    /// A step began: the sidecar is changing the host.
    StepStarted {
        /// `ma_cross 1.0.0 → 2.0.0`.
        title: String,
    },
    /// A step was committed (or, for a removal, the plugin unloaded).
    StepCommitted {
        /// `ma_cross 1.0.0 → 2.0.0`.
        title: String,
        /// What it went through (`preflight ✓`, `switched (slot held 8 µs)`…).
        marks: Vec<String>,
        /// How long the switch held the plugin's slot, in microseconds.
        #[serde(skip_serializing_if = "Option::is_none")]
        slot_held_us: Option<u64>,
        /// A step a previous run left, finished by this one.
        resumed: bool,
    },
    /// A step was switched, then rolled back: the previous version serves, and the new one is
    /// marked failed on the host.
    StepRolledBack {
        /// `ma_cross 1.0.0 → 2.0.0`.
        title: String,
        /// What failed (`soak`, `switch`, `commit`).
        check: String,
        /// What happened, and what the host runs now.
        message: String,
        /// What it went through.
        marks: Vec<String>,
        /// The version marked failed on the host (not retried until cleared).
        #[serde(skip_serializing_if = "Option::is_none")]
        marked_failed: Option<String>,
    },
    /// A step was stopped before anything changed on the host.
    StepStopped {
        /// `ma_cross 1.0.0 → 2.0.0`.
        title: String,
        /// What refused it (`preflight`, `policy window`, `switch`…).
        check: String,
        /// Why, and the fix.
        message: String,
        /// The version marked failed on the host, if the refusal marked it.
        #[serde(skip_serializing_if = "Option::is_none")]
        marked_failed: Option<String>,
    },
    /// A step was lost through no fault of its version (the host restarted before its
    /// commit); it is planned again.
    StepInterrupted {
        /// `ma_cross 1.0.0 → 2.0.0`.
        title: String,
        /// What happened.
        message: String,
    },
    /// A reconcile could not run to its end (the host unreachable, a registry down, a
    /// freeze); it is retried.
    ReconcileFailed {
        /// Why it ran: `start`, `change`, `drift`, `retry`.
        trigger: String,
        /// What went wrong, and the fix.
        error: String,
        /// Failures in a row.
        failures: u32,
        /// When it is tried again, in seconds.
        retry_in_seconds: u64,
    },
    /// The host runs other than plugins.yaml asks, and plugins.yaml did not change.
    DriftFound {
        /// The plan that would heal it.
        plan_id: String,
        /// What differs, a line per plugin.
        changes: Vec<String>,
        /// Whether the sidecar heals it (`--drift heal`) or only reports it.
        healing: bool,
    },
    /// plugins.yaml as it is on disk cannot be applied: nothing of it is.
    DesiredInvalid {
        /// Every problem, with its `file:line:column`.
        report: String,
        /// The sha256 of the last good desired state, still the one reconciled to (absent:
        /// nothing is).
        #[serde(skip_serializing_if = "Option::is_none")]
        keeping: Option<String>,
    },
}

impl AlertDetail {
    /// The event's name (`step-committed`…), as in the JSON.
    pub fn event(&self) -> &'static str {
        match self {
            AlertDetail::StepStarted { .. } => "step-started",
            AlertDetail::StepCommitted { .. } => "step-committed",
            AlertDetail::StepRolledBack { .. } => "step-rolled-back",
            AlertDetail::StepStopped { .. } => "step-stopped",
            AlertDetail::StepInterrupted { .. } => "step-interrupted",
            AlertDetail::ReconcileFailed { .. } => "reconcile-failed",
            AlertDetail::DriftFound { .. } => "drift-found",
            AlertDetail::DesiredInvalid { .. } => "desired-invalid",
        }
    }
}

/// The JSON Schema of an [`Alert`] (`schemas/alert.schema.json`).
pub fn alert_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(Alert)).unwrap_or_default()
}

impl Alert {
    /// The alert an event calls for, if any, for the sidecar following `file` on `host`.
    pub fn of(event: &SidecarEvent, host: &str, file: &Path) -> Option<Alert> {
        let file_name = file.display().to_string();
        let alert = |what: AlertDetail, summary: String| Alert {
            api_version: ApiVersion::V1,
            kind: AlertKind::Alert,
            what,
            at: Timestamp::now().to_string(),
            host: host.to_owned(),
            file: file_name.clone(),
            plugin: None,
            step: None,
            from: None,
            to: None,
            summary,
        };
        match event {
            SidecarEvent::StepStarted {
                plugin,
                title,
                step_id,
                from,
                to,
            } => Some(Alert {
                plugin: Some(plugin.clone()),
                step: Some(step_id.clone()),
                from: from.clone(),
                to: to.clone(),
                ..alert(
                    AlertDetail::StepStarted {
                        title: title.clone(),
                    },
                    format!("{title}: step started on {host}"),
                )
            }),
            SidecarEvent::StepEnded(report) => {
                let (what, summary) = step_ended(report, host)?;
                Some(Alert {
                    plugin: Some(report.plugin.clone()),
                    step: Some(report.step_id.clone()),
                    from: report.from.clone(),
                    to: report.to.clone(),
                    ..alert(what, summary)
                })
            }
            SidecarEvent::ReconcileFailed {
                trigger,
                error,
                failures,
                retry_in,
            } => {
                let retry = humantime::format_duration(super::status::round(*retry_in));
                let summary = format!(
                    "reconcile of {file_name} on {host} failed ({failures} in a row, retried in \
                     {retry}): {}",
                    first_line(error)
                );
                Some(alert(
                    AlertDetail::ReconcileFailed {
                        trigger: trigger.name().to_owned(),
                        error: error.clone(),
                        failures: *failures,
                        retry_in_seconds: retry_in.as_secs().max(1),
                    },
                    summary,
                ))
            }
            SidecarEvent::DriftFound {
                plan_id,
                changes,
                healing,
            } => {
                let doing = if *healing {
                    "healing it"
                } else {
                    "reported only"
                };
                let summary = format!(
                    "{host} runs other than {file_name} asks ({doing}): {}",
                    changes.join("; ")
                );
                Some(alert(
                    AlertDetail::DriftFound {
                        plan_id: plan_id.clone(),
                        changes: changes.clone(),
                        healing: *healing,
                    },
                    summary,
                ))
            }
            SidecarEvent::DesiredInvalid { report, keeping } => {
                let keeping_text = keeping.map_or_else(
                    || "nothing is applied until it is fixed".to_owned(),
                    |sha256| format!("keeping the last good desired state ({})", sha256.short()),
                );
                let summary = format!(
                    "{file_name} is invalid ({}): {keeping_text}",
                    first_line(report).trim_start_matches("error: ")
                );
                Some(alert(
                    AlertDetail::DesiredInvalid {
                        report: report.clone(),
                        keeping: keeping.map(|sha256| sha256.to_string()),
                    },
                    summary,
                ))
            }
            SidecarEvent::DesiredRead { .. }
            | SidecarEvent::ReconcileStarted { .. }
            | SidecarEvent::Notice(_)
            | SidecarEvent::ReconcileFinished { .. }
            | SidecarEvent::Observed { .. }
            | SidecarEvent::Checked { .. }
            | SidecarEvent::Stopping { .. } => None,
        }
    }

    /// The body posted in `format`.
    pub fn body(&self, format: AlertFormat) -> Vec<u8> {
        let value = match format {
            AlertFormat::Json => serde_json::to_value(self),
            AlertFormat::Slack => Ok(serde_json::json!({ "text": self.slack_text() })),
        };
        // A value of strings, numbers and lists always serialises; an empty body would only be
        // refused by the webhook, and counted as failed.
        value
            .and_then(|value| serde_json::to_vec(&value))
            .unwrap_or_default()
    }

    /// The Slack message: the summary on a line, then what a person needs to act on it.
    fn slack_text(&self) -> String {
        let icon = match &self.what {
            AlertDetail::StepStarted { .. } => ":arrows_counterclockwise:",
            AlertDetail::StepCommitted { .. } => ":white_check_mark:",
            AlertDetail::StepRolledBack { .. } | AlertDetail::ReconcileFailed { .. } => {
                ":rotating_light:"
            }
            AlertDetail::StepStopped { .. }
            | AlertDetail::StepInterrupted { .. }
            | AlertDetail::DriftFound { .. } => ":warning:",
            AlertDetail::DesiredInvalid { .. } => ":no_entry:",
        };
        let mut text = format!("{icon} *plugsync* {}", slack_escape(&self.summary));
        let mut details = Vec::new();
        match &self.what {
            AlertDetail::StepStarted { .. } => {}
            AlertDetail::StepCommitted { marks, .. } => details.push(marks.join("  ")),
            AlertDetail::StepRolledBack {
                marks,
                marked_failed,
                ..
            } => {
                details.push(marks.join("  "));
                if let (Some(version), Some(plugin)) = (marked_failed, &self.plugin) {
                    details.push(format!(
                        "{plugin} {version} marked failed on the host: not retried (clear: \
                         `plugsync retry {plugin}`, or change its entry in plugins.yaml)"
                    ));
                }
            }
            AlertDetail::StepStopped { marked_failed, .. } => {
                if let (Some(version), Some(plugin)) = (marked_failed, &self.plugin) {
                    details.push(format!("{plugin} {version} marked failed on the host"));
                }
            }
            AlertDetail::StepInterrupted { .. } => {}
            AlertDetail::ReconcileFailed { error, .. } => details.push(error.trim_end().to_owned()),
            AlertDetail::DriftFound { changes, .. } => {
                details.extend(changes.iter().map(|change| format!("• {change}")));
            }
            AlertDetail::DesiredInvalid { report, .. } => {
                details.push(report.trim_end().to_owned())
            }
        }
        details.retain(|line| !line.trim().is_empty());
        if !details.is_empty() {
            let _ = write!(
                text,
                "\n```\n{}\n```",
                slack_escape(&details.join("\n")).replace("```", "'''")
            );
        }
        text
    }
}

/// The alert of a step's end, and its summary (`None`: a step not started calls for none —
/// the step that failed before it has its own).
fn step_ended(report: &StepReport, host: &str) -> Option<(AlertDetail, String)> {
    let title = report.title.clone();
    Some(match report.outcome.as_ref()? {
        StepOutcome::Done => (
            AlertDetail::StepCommitted {
                title: title.clone(),
                marks: report.marks.clone(),
                slot_held_us: report.slot_held_us,
                resumed: report.resumed,
            },
            format!("{title}: committed on {host}"),
        ),
        StepOutcome::RolledBack { check, message, .. } => (
            AlertDetail::StepRolledBack {
                title: title.clone(),
                check: check.clone(),
                message: message.clone(),
                marks: report.marks.clone(),
                marked_failed: report.marked_failed.clone(),
            },
            format!("{title}: rolled back on {host}: {}", first_line(message)),
        ),
        StepOutcome::Stopped { check, message } => (
            AlertDetail::StepStopped {
                title: title.clone(),
                check: check.clone(),
                message: message.clone(),
                marked_failed: report.marked_failed.clone(),
            },
            format!(
                "{title}: stopped at the {check} on {host}, nothing changed: {}",
                first_line(message)
            ),
        ),
        StepOutcome::Interrupted { message } => (
            AlertDetail::StepInterrupted {
                title: title.clone(),
                message: message.clone(),
            },
            format!(
                "{title}: interrupted on {host} ({}); planned again",
                first_line(message)
            ),
        ),
        StepOutcome::NotStarted => return None,
    })
}

/// The first line of a text that may hold several.
fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or_default().trim_end()
}

/// Slack's three control characters, escaped as its API asks.
fn slack_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The observer that posts alerts (see the module docs).
pub struct AlertObserver {
    host: String,
    file: std::path::PathBuf,
    format: AlertFormat,
    capacity: usize,
    counters: Arc<AlertCounters>,
    couriers: Vec<Courier>,
    drain: Duration,
}

impl std::fmt::Debug for AlertObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AlertObserver")
            .field("webhooks", &self.couriers.len())
            .field("format", &self.format)
            .finish_non_exhaustive()
    }
}

impl AlertObserver {
    /// Starts a delivery thread per webhook of `options`, for the sidecar following `file` on
    /// `host`; what becomes of each alert is counted in `counters`.
    pub fn new(
        options: &AlertOptions,
        host: &str,
        file: &Path,
        counters: Arc<AlertCounters>,
    ) -> Result<AlertObserver> {
        let mut observer = AlertObserver {
            host: host.to_owned(),
            file: file.to_owned(),
            format: options.format,
            capacity: options.queue.max(1),
            counters,
            couriers: Vec::with_capacity(options.webhooks.len()),
            drain: options.drain,
        };
        for url in &options.webhooks {
            // On an error, dropping the observer stops the threads already started.
            let courier = Courier::start(url, options, Arc::clone(&observer.counters))?;
            observer.couriers.push(courier);
        }
        Ok(observer)
    }
}

impl Observer for AlertObserver {
    fn observe(&mut self, event: &SidecarEvent) {
        let Some(alert) = Alert::of(event, &self.host, &self.file) else {
            return;
        };
        let parcel = Arc::new(Parcel {
            event: alert.what.event(),
            body: alert.body(self.format),
        });
        for courier in &self.couriers {
            (courier.shared).push(Arc::clone(&parcel), self.capacity, &self.counters);
        }
    }
}

impl Drop for AlertObserver {
    /// Lets each thread deliver what is queued for [`AlertOptions::drain`] at most, then waits
    /// for it: the sidecar's exit is held up that long at worst.
    fn drop(&mut self) {
        let stop_by = Instant::now() + self.drain;
        for courier in &self.couriers {
            courier.shared.lock().stop_by = Some(stop_by);
            courier.shared.wake.notify_all();
            // A permit: the post in flight, or the next one, sees it.
            courier.shared.stopping.notify_one();
        }
        for courier in &mut self.couriers {
            if let Some(thread) = courier.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// One alert's body, shared by every webhook's queue.
struct Parcel {
    event: &'static str,
    body: Vec<u8>,
}

/// A webhook's queue and delivery thread.
struct Courier {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

/// What the observer and a delivery thread share.
struct Shared {
    state: Mutex<Queue>,
    wake: Condvar,
    /// Told once the sidecar stops: a post in flight is cut short at the drain time.
    stopping: tokio::sync::Notify,
}

struct Queue {
    parcels: VecDeque<Arc<Parcel>>,
    /// Set when the sidecar stops: deliver until then, then give up.
    stop_by: Option<Instant>,
}

impl Shared {
    fn new() -> Shared {
        Shared {
            state: Mutex::new(Queue {
                parcels: VecDeque::new(),
                stop_by: None,
            }),
            wake: Condvar::new(),
            stopping: tokio::sync::Notify::new(),
        }
    }

    /// Queues an alert; a full queue drops its oldest.
    fn push(&self, parcel: Arc<Parcel>, capacity: usize, counters: &AlertCounters) {
        let mut queue = self.lock();
        while queue.parcels.len() >= capacity {
            queue.parcels.pop_front();
            AlertCounters::add(&counters.dropped, 1);
        }
        queue.parcels.push_back(parcel);
        drop(queue);
        self.wake.notify_all();
    }

    /// The queue; a thread that panicked holding it left nothing half-done in it.
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next alert to deliver, waiting for one; `None` once the sidecar stopped and the
    /// queue is empty, or its drain time is over (what is left is counted dropped).
    fn next(&self, counters: &AlertCounters, name: &str) -> Option<Arc<Parcel>> {
        let mut queue = self.lock();
        loop {
            if queue.stop_by.is_some_and(|at| Instant::now() >= at) {
                let left = queue.parcels.len();
                if left > 0 {
                    queue.parcels.clear();
                    AlertCounters::add(&counters.dropped, left as u64);
                    tracing::warn!(
                        webhook = name,
                        "{left} alert(s) not delivered: the sidecar stopped"
                    );
                }
                return None;
            }
            if let Some(parcel) = queue.parcels.pop_front() {
                return Some(parcel);
            }
            if queue.stop_by.is_some() {
                return None;
            }
            queue = self
                .wake
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Waits until `until`, or the stop's drain time if it comes first.
    fn pause(&self, until: Instant) {
        let mut queue = self.lock();
        loop {
            let end = queue.stop_by.map_or(until, |at| at.min(until));
            let now = Instant::now();
            if now >= end {
                return;
            }
            queue = self
                .wake
                .wait_timeout(queue, end - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Ends at the stop's drain time (never, while the sidecar runs).
    async fn drained(&self) {
        self.stopping.notified().await;
        let stop_by = self.lock().stop_by;
        match stop_by {
            Some(at) => tokio::time::sleep_until(at.into()).await,
            None => std::future::pending().await,
        }
    }

    /// How long a post may take now: `timeout`, or less once the stop's drain time nears
    /// (`None`: it is over).
    fn budget(&self, timeout: Duration) -> Option<Duration> {
        match self.lock().stop_by {
            None => Some(timeout),
            Some(at) => {
                let left = at.saturating_duration_since(Instant::now());
                (!left.is_zero()).then(|| left.min(timeout))
            }
        }
    }
}

impl Courier {
    /// A queue and a thread posting to `url`.
    fn start(
        url: &reqwest::Url,
        options: &AlertOptions,
        counters: Arc<AlertCounters>,
    ) -> Result<Courier> {
        let setup = |source: std::io::Error| Error::Setup {
            action: "start the alert webhook's delivery",
            source,
        };
        let client = reqwest::Client::builder()
            .timeout(options.timeout)
            // A webhook answers where it is asked: a redirect could lead to another host, or
            // from https to http, with the alert.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|error| setup(std::io::Error::other(error.without_url())))?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(setup)?;
        let shared = Arc::new(Shared::new());
        let webhook = Webhook {
            url: url.clone(),
            name: webhook_name(url),
            client,
            runtime,
            timeout: options.timeout,
            backoff: options.backoff.clone(),
        };
        let thread = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("plugsync-alerts".into())
                .spawn(move || webhook.run(&shared, &counters))
                .map_err(setup)?
        };
        Ok(Courier {
            shared,
            thread: Some(thread),
        })
    }
}

/// A webhook as its delivery thread holds it.
struct Webhook {
    url: reqwest::Url,
    /// Its scheme and host: what logs show of it (its path may be its secret).
    name: String,
    client: reqwest::Client,
    runtime: tokio::runtime::Runtime,
    timeout: Duration,
    backoff: Vec<Duration>,
}

/// `https://hooks.example.com`: a webhook named without its path, query or credentials.
fn webhook_name(url: &reqwest::Url) -> String {
    let host = url.host_str().unwrap_or("?");
    match url.port() {
        Some(port) => format!("{}://{host}:{port}", url.scheme()),
        None => format!("{}://{host}", url.scheme()),
    }
}

/// An error and its causes, on a line (`error sending request: client error (Connect): tcp
/// connect error: Connection refused`).
fn causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        // Some causes repeat their source's text in their own.
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Why a post failed, and whether trying again may help.
struct Failure {
    reason: String,
    retry: bool,
}

impl Webhook {
    /// Delivers the queue's alerts in order until the sidecar stops.
    fn run(self, shared: &Shared, counters: &AlertCounters) {
        while let Some(parcel) = shared.next(counters, &self.name) {
            match self.deliver(shared, &parcel) {
                Ok(()) => AlertCounters::add(&counters.delivered, 1),
                Err((tries, reason)) => {
                    AlertCounters::add(&counters.failed, 1);
                    tracing::warn!(
                        webhook = %self.name,
                        event = parcel.event,
                        "alert not delivered after {tries} tr{}: {reason}",
                        if tries == 1 { "y" } else { "ies" }
                    );
                }
            }
        }
    }

    /// Posts one alert, retrying after each wait of the backoff; the tries made and the last
    /// failure when none succeeded.
    fn deliver(&self, shared: &Shared, parcel: &Parcel) -> std::result::Result<(), (u32, String)> {
        let mut tries = 0;
        let mut last: Option<String> = None;
        loop {
            let Some(budget) = shared.budget(self.timeout) else {
                let reason = match last {
                    Some(reason) => format!("{reason}; then the sidecar stopped"),
                    None => "the sidecar stopped before it could be sent".to_owned(),
                };
                return Err((tries, reason));
            };
            tries += 1;
            let failure = match self.post(shared, parcel, budget) {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            };
            match self.backoff.get(tries as usize - 1) {
                Some(wait) if failure.retry => {
                    last = Some(failure.reason);
                    shared.pause(Instant::now() + *wait);
                }
                _ => return Err((tries, failure.reason)),
            }
        }
    }

    /// One post, within `budget`.
    fn post(
        &self,
        shared: &Shared,
        parcel: &Parcel,
        budget: Duration,
    ) -> std::result::Result<(), Failure> {
        let request = self
            .client
            .post(self.url.clone())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(parcel.body.clone());
        // Sent within the runtime: the request's own timer needs it. A stop cuts it short at
        // the drain time, however long it was given.
        let answer = self.runtime.block_on(async {
            tokio::select! {
                answer = tokio::time::timeout(budget, request.send()) => Some(answer),
                () = shared.drained() => None,
            }
        });
        let Some(answer) = answer else {
            return Err(Failure {
                reason: "no answer before the sidecar stopped".to_owned(),
                retry: false,
            });
        };
        match answer {
            Err(_) => Err(Failure {
                reason: format!(
                    "no answer within {}",
                    humantime::format_duration(Duration::from_millis(budget.as_millis() as u64))
                ),
                retry: true,
            }),
            // The error names the URL, which may hold the webhook's secret.
            Ok(Err(error)) => Err(Failure {
                reason: causes(&error.without_url()),
                retry: true,
            }),
            Ok(Ok(response)) if response.status().is_success() => Ok(()),
            Ok(Ok(response)) => {
                let status = response.status();
                // A client error other than a timeout or a rate limit will be the same next
                // time: the URL or the format is wrong.
                let retry = status.is_server_error()
                    || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                    || status == reqwest::StatusCode::REQUEST_TIMEOUT;
                Err(Failure {
                    reason: format!("the webhook answered {status}"),
                    retry,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::AtomicU64;

    fn report(outcome: StepOutcome) -> StepReport {
        StepReport {
            number: 1,
            of: 1,
            plugin: "ma_cross".into(),
            title: "ma_cross 2.0.0 → 2.1.0".into(),
            step_id: "abc.1.1".into(),
            marks: vec!["preflight ✓".into(), "switched (slot held 8 µs)".into()],
            outcome: Some(outcome),
            rollback: None,
            resumed: false,
            phase: None,
            marked_failed: Some("2.1.0".into()),
            from: Some("2.0.0".into()),
            to: Some("2.1.0".into()),
            slot_held_us: Some(8),
        }
    }

    #[test]
    fn a_rolled_back_step_names_its_plugin_versions_and_why() {
        let event = SidecarEvent::StepEnded(report(StepOutcome::RolledBack {
            check: "soak".into(),
            message: "rolled back by the host: it panicked".into(),
            halted: None,
        }));
        let alert = Alert::of(&event, "http://h", Path::new("plugins.yaml")).unwrap();
        let json: serde_json::Value =
            serde_json::from_slice(&alert.body(AlertFormat::Json)).unwrap();
        assert_eq!(json["apiVersion"], "plugsync/v1");
        assert_eq!(json["kind"], "Alert");
        assert_eq!(json["event"], "step-rolled-back");
        assert_eq!(json["plugin"], "ma_cross");
        assert_eq!(json["from"], "2.0.0");
        assert_eq!(json["to"], "2.1.0");
        assert_eq!(json["detail"]["check"], "soak");
        assert_eq!(json["detail"]["markedFailed"], "2.1.0");
        assert_eq!(
            json["summary"],
            "ma_cross 2.0.0 → 2.1.0: rolled back on http://h: rolled back by the host: it panicked"
        );
        let slack: serde_json::Value =
            serde_json::from_slice(&alert.body(AlertFormat::Slack)).unwrap();
        let text = slack["text"].as_str().unwrap();
        assert!(text.starts_with(":rotating_light: *plugsync* ma_cross 2.0.0 → 2.1.0"));
        assert!(text.contains("`plugsync retry ma_cross`"), "{text}");
    }

    #[test]
    fn a_step_not_started_and_the_loop_s_own_bookkeeping_call_for_no_alert() {
        let file = Path::new("plugins.yaml");
        let not_started = SidecarEvent::StepEnded(report(StepOutcome::NotStarted));
        assert!(Alert::of(&not_started, "h", file).is_none());
        assert!(Alert::of(&SidecarEvent::Checked { drift: true }, "h", file).is_none());
    }

    #[test]
    fn slack_text_escapes_what_slack_reads_as_markup() {
        assert_eq!(slack_escape("a <b> & c"), "a &lt;b&gt; &amp; c");
    }

    #[test]
    fn a_webhook_is_named_without_its_secret_path() {
        let url = reqwest::Url::parse("https://hooks.example.com/services/T0/B0/secret").unwrap();
        assert_eq!(webhook_name(&url), "https://hooks.example.com");
        let url = reqwest::Url::parse("http://user:pw@127.0.0.1:9000/hook?token=x").unwrap();
        assert_eq!(webhook_name(&url), "http://127.0.0.1:9000");
    }

    #[test]
    fn a_full_queue_drops_its_oldest_and_counts_it() {
        let shared = Shared::new();
        let counters = AlertCounters::default();
        for event in ["1", "2", "3", "4", "5"] {
            shared.push(
                Arc::new(Parcel {
                    event,
                    body: Vec::new(),
                }),
                2,
                &counters,
            );
        }
        let queued: Vec<&str> = shared.lock().parcels.iter().map(|p| p.event).collect();
        assert_eq!(queued, ["4", "5"]);
        assert_eq!(counters.dropped(), 3);
    }

    #[test]
    fn at_a_stop_what_is_left_after_the_drain_time_is_counted_dropped() {
        let shared = Shared::new();
        let counters = AlertCounters::default();
        let parcel = Arc::new(Parcel {
            event: "step-started",
            body: Vec::new(),
        });
        shared.push(Arc::clone(&parcel), 8, &counters);
        shared.push(parcel, 8, &counters);
        shared.lock().stop_by = Some(Instant::now());
        assert!(shared.next(&counters, "w").is_none());
        assert_eq!(counters.dropped(), 2);
        assert_eq!(shared.budget(Duration::from_secs(5)), None);
    }

    /// A webhook on 127.0.0.1 answering each request with the next status of `answers` (the
    /// last one for ever after), closing each connection; it counts the requests.
    fn webhook(answers: &'static [u16]) -> (reqwest::Url, Arc<AtomicU64>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&requests);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let mut reader = BufReader::new(stream);
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = value.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; length];
                let _ = reader.read_exact(&mut body);
                let n = counted.fetch_add(1, Ordering::SeqCst) as usize;
                let status = answers[n.min(answers.len() - 1)];
                let _ = write!(
                    reader.into_inner(),
                    "HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                );
            }
        });
        (reqwest::Url::parse(&url).unwrap(), requests)
    }

    fn quick(url: reqwest::Url) -> AlertOptions {
        AlertOptions {
            backoff: vec![Duration::from_millis(10); 3],
            ..AlertOptions::new(vec![url], AlertFormat::Json)
        }
    }

    fn invalid() -> SidecarEvent {
        SidecarEvent::DesiredInvalid {
            report: "error: unknown key".into(),
            keeping: None,
        }
    }

    /// Waits (polling, 60 s at most) until `done`.
    fn until(mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !done() {
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_server_error_is_retried_and_the_alert_delivered() {
        let (url, requests) = webhook(&[503, 500, 200]);
        let counters = Arc::new(AlertCounters::default());
        let mut observer =
            AlertObserver::new(&quick(url), "h", Path::new("p"), Arc::clone(&counters)).unwrap();
        observer.observe(&invalid());
        until(|| counters.delivered() == 1);
        assert_eq!(requests.load(Ordering::SeqCst), 3);
        assert_eq!((counters.failed(), counters.dropped()), (0, 0));
    }

    #[test]
    fn a_client_error_is_not_retried_and_the_alert_counted_failed() {
        let (url, requests) = webhook(&[404]);
        let counters = Arc::new(AlertCounters::default());
        let mut observer =
            AlertObserver::new(&quick(url), "h", Path::new("p"), Arc::clone(&counters)).unwrap();
        observer.observe(&invalid());
        until(|| counters.failed() == 1);
        assert_eq!(requests.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn a_webhook_that_never_answers_holds_a_stop_up_for_the_drain_time_only() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = reqwest::Url::parse(&format!("http://{}/", listener.local_addr().unwrap()));
        let counters = Arc::new(AlertCounters::default());
        let options = AlertOptions {
            drain: Duration::from_millis(300),
            ..quick(url.unwrap())
        };
        let mut observer =
            AlertObserver::new(&options, "h", Path::new("p"), Arc::clone(&counters)).unwrap();
        for _ in 0..3 {
            observer.observe(&invalid());
        }
        let stopping = Instant::now();
        drop(observer);
        // One post cut short at the drain time, the two behind it never sent.
        assert!(
            stopping.elapsed() < Duration::from_secs(5),
            "{:?}",
            stopping.elapsed()
        );
        assert_eq!((counters.failed(), counters.dropped()), (1, 2));
        drop(listener);
    }
}
