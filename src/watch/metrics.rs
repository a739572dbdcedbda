//! Metrics: what the sidecar did and sees, as Prometheus series ([`SERIES`]), served with its
//! health on `--metrics-listen` (default `127.0.0.1:9464`):
//!
//! - `GET /metrics`: the Prometheus text exposition format (0.0.4);
//! - `GET /healthz`: 200 while the loop runs, 503 once it stops;
//! - `GET /readyz`: 200 once a reconcile (or the finish of what the journal held) ran to its
//!   end and while plugins.yaml on disk is valid; 503 with a one-line reason otherwise.
//!
//! [`MetricsObserver`] keeps the series from the sidecar's events; the host's per-plugin call
//! counters are the host's own, exported as counters whose value is the host's
//! ([`SidecarEvent::Observed`]), so a host restart shows as a counter reset. The server runs
//! on a thread of its own with its own small tokio runtime, so a slow scraper never holds up
//! the loop, and it serves plain HTTP on a loopback address only unless
//! `--metrics-allow-remote` (the series name the plugins, their versions and their traffic).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Instant;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::routing::get;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::alert::AlertCounters;
use super::event::{Observer, PluginSeen, SidecarEvent};
use crate::apply::StepOutcome;
use crate::error::{Error, Result};

/// Where metrics are served unless `--metrics-listen` says otherwise (9464: the port
/// Prometheus' exporters list gives the OpenTelemetry Prometheus exporter, free on a host
/// that runs no other).
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);

/// Every series `/metrics` exports, by its Prometheus name (a histogram's `_bucket`, `_sum`
/// and `_count` follow from its name): what alerting rules may use ([`exports`]).
pub const SERIES: &[&str] = &[
    "plugsync_reconciles_total",
    "plugsync_steps_total",
    "plugsync_rollbacks_total",
    "plugsync_drift_found_total",
    "plugsync_drift",
    "plugsync_desired_state_valid",
    "plugsync_last_success_timestamp_seconds",
    "plugsync_step_duration_seconds",
    "plugsync_swap_stall_seconds",
    "plugsync_plugin_desired_info",
    "plugsync_plugin_running_info",
    "plugsync_plugin_calls_total",
    "plugsync_plugin_errors_total",
    "plugsync_plugin_panics_total",
    "plugsync_alerts_total",
];

/// A step's outcomes, as [`SidecarEvent::outcome_name`] names them.
const STEP_OUTCOMES: &[&str] = &[
    "committed",
    "rolled-back",
    "stopped",
    "not-started",
    "interrupted",
];

/// The histograms among [`SERIES`].
const HISTOGRAMS: &[&str] = &[
    "plugsync_step_duration_seconds",
    "plugsync_swap_stall_seconds",
];

/// Whether `/metrics` exports a sample named `name` (a series of [`SERIES`], or a histogram's
/// bucket, sum or count).
pub fn exports(name: &str) -> bool {
    SERIES.contains(&name)
        || ["_bucket", "_sum", "_count"].iter().any(|suffix| {
            name.strip_suffix(suffix)
                .is_some_and(|base| HISTOGRAMS.contains(&base))
        })
}

/// Where metrics are served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsOptions {
    /// The address (port 0: any free port, logged).
    pub listen: SocketAddr,
    /// Serve on a non-loopback address (`--metrics-allow-remote`).
    pub allow_remote: bool,
}

impl Default for MetricsOptions {
    fn default() -> MetricsOptions {
        MetricsOptions {
            listen: DEFAULT_LISTEN,
            allow_remote: false,
        }
    }
}

/// A series' labels.
type Labels = Vec<(&'static str, String)>;

/// The sidecar's series and health, shared by its observer and its server.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    reconciles: Family<Labels, Counter>,
    steps: Family<Labels, Counter>,
    rollbacks: Counter,
    drift_found: Counter,
    drift: Gauge,
    desired_valid: Gauge,
    last_success: Gauge<f64, AtomicU64>,
    step_duration: Family<Labels, Histogram, fn() -> Histogram>,
    swap_stall: Histogram,
    desired_info: Family<Labels, Gauge>,
    running_info: Family<Labels, Gauge>,
    plugin_counters: Arc<PluginCounters>,
    health: Health,
}

/// What `/healthz` and `/readyz` answer from.
#[derive(Debug)]
struct Health {
    /// The loop runs (false once it told it stops).
    running: AtomicBool,
    /// A reconcile ran to its end.
    reconciled: AtomicBool,
    /// plugins.yaml on disk is valid (false before it is first read).
    desired_valid: AtomicBool,
    /// Whether it was read at all.
    desired_read: AtomicBool,
}

impl Metrics {
    /// The series, zero; `alerts` are the alert observer's counters (exported as
    /// `plugsync_alerts_total`).
    pub fn new(alerts: Arc<AlertCounters>) -> Arc<Metrics> {
        let mut registry = Registry::default();
        let reconciles = Family::<Labels, Counter>::default();
        registry.register(
            "plugsync_reconciles",
            "Reconciles ended, by why they ran (start, change, drift, retry) and how (applied: \
             every step; failed: a step failed and was marked; error: it could not run to its \
             end)",
            reconciles.clone(),
        );
        let steps = Family::<Labels, Counter>::default();
        registry.register(
            "plugsync_steps",
            "Steps ended, by outcome (committed, rolled-back, stopped, not-started, interrupted)",
            steps.clone(),
        );
        let rollbacks = Counter::default();
        registry.register(
            "plugsync_rollbacks",
            "Steps switched and then rolled back (the previous version serves)",
            rollbacks.clone(),
        );
        let drift_found = Counter::default();
        registry.register(
            "plugsync_drift_found",
            "Drift checks that found the host running other than plugins.yaml asks",
            drift_found.clone(),
        );
        let drift = Gauge::default();
        registry.register(
            "plugsync_drift",
            "1 while the host runs other than plugins.yaml asks (the last check saw it), 0 once \
             a check or a reconcile finds it in sync",
            drift.clone(),
        );
        let desired_valid = Gauge::default();
        registry.register(
            "plugsync_desired_state_valid",
            "1 while plugins.yaml on disk is valid; 0 while it cannot be applied (the last good \
             one is still reconciled to) or before it is first read",
            desired_valid.clone(),
        );
        let last_success = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "plugsync_last_success_timestamp_seconds",
            "When the host was last seen running what plugins.yaml asks (a reconcile that \
             applied every step, or a drift check in sync), in unix seconds",
            last_success.clone(),
        );
        let step_duration =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(step_buckets);
        registry.register(
            "plugsync_step_duration_seconds",
            "How long a step took, from its start to its end (preflight, staging, switch, soak, \
             commit), by outcome",
            step_duration.clone(),
        );
        let swap_stall = Histogram::new(exponential_buckets(1e-6, 4.0, 12));
        registry.register(
            "plugsync_swap_stall_seconds",
            "How long a switch held the plugin's slot (the stall a caller could see), as the \
             host reported it",
            swap_stall.clone(),
        );
        let desired_info = Family::<Labels, Gauge>::default();
        registry.register(
            "plugsync_plugin_desired_info",
            "1 for the version (and artifact sha256) plugins.yaml asks each plugin to run",
            desired_info.clone(),
        );
        let running_info = Family::<Labels, Gauge>::default();
        registry.register(
            "plugsync_plugin_running_info",
            "1 for the version (and artifact sha256) each plugin runs on the host",
            running_info.clone(),
        );
        // Every trigger and outcome known from the start, at 0: a rate or an increase over a
        // series that appears only at its first event misses that event.
        for trigger in ["start", "change", "drift", "retry", "schedule"] {
            for outcome in ["applied", "failed", "error"] {
                drop(reconciles.get_or_create(&vec![
                    ("trigger", trigger.to_owned()),
                    ("outcome", outcome.to_owned()),
                ]));
            }
        }
        for outcome in STEP_OUTCOMES {
            drop(steps.get_or_create(&vec![("outcome", (*outcome).to_owned())]));
        }
        let plugin_counters = Arc::new(PluginCounters::default());
        registry.register_collector(Box::new(Arc::clone(&plugin_counters)));
        registry.register_collector(Box::new(AlertsCollector(alerts)));
        Arc::new(Metrics {
            registry,
            reconciles,
            steps,
            rollbacks,
            drift_found,
            drift,
            desired_valid,
            last_success,
            step_duration,
            swap_stall,
            desired_info,
            running_info,
            plugin_counters,
            health: Health {
                running: AtomicBool::new(true),
                reconciled: AtomicBool::new(false),
                desired_valid: AtomicBool::new(false),
                desired_read: AtomicBool::new(false),
            },
        })
    }

    /// Every series in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a `String` does not fail, and every series encodes.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, &self.registry);
        text
    }

    /// `Ok` while the loop runs; else why not.
    pub fn healthy(&self) -> std::result::Result<(), &'static str> {
        if self.health.running.load(Ordering::Relaxed) {
            Ok(())
        } else {
            Err("the sidecar is stopping")
        }
    }

    /// `Ok` once a reconcile ran to its end, while plugins.yaml on disk is valid; else why not.
    pub fn ready(&self) -> std::result::Result<(), &'static str> {
        let health = &self.health;
        if !health.running.load(Ordering::Relaxed) {
            Err("the sidecar is stopping")
        } else if !health.desired_read.load(Ordering::Relaxed) {
            Err("plugins.yaml has not been read yet")
        } else if !health.desired_valid.load(Ordering::Relaxed) {
            Err("plugins.yaml is invalid on disk: nothing of it is applied (see the sidecar's log)")
        } else if !health.reconciled.load(Ordering::Relaxed) {
            Err("no reconcile has run to its end yet")
        } else {
            Ok(())
        }
    }
}

/// 0.1 s to about 27 min, doubling: a step is a preflight, a switch and a soak.
fn step_buckets() -> Histogram {
    Histogram::new(exponential_buckets(0.1, 2.0, 15))
}

/// Reads one of the host's counters.
type CounterOf = fn(&plugsync_host::Counters) -> u64;

/// The host's per-plugin call counters, as a drift check last saw them: exported as counters
/// whose value is the host's (a client-side counter could only add up differences, and would
/// be wrong after a host restart).
#[derive(Debug, Default)]
struct PluginCounters(Mutex<BTreeMap<String, plugsync_host::Counters>>);

impl Collector for PluginCounters {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::result::Result<(), std::fmt::Error> {
        let counters = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let families: [(&str, &str, CounterOf); 3] = [
            (
                "plugsync_plugin_calls",
                "Calls the plugin served on the host (its running version's slot), as the host \
                 counts them",
                |c| c.calls,
            ),
            (
                "plugsync_plugin_errors",
                "Calls of the plugin that returned an error or panicked, as the host counts them",
                |c| c.errors,
            ),
            (
                "plugsync_plugin_panics",
                "Calls of the plugin that panicked (caught), as the host counts them",
                |c| c.panics,
            ),
        ];
        for (name, help, value) in families {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (plugin, counters) in &counters {
                let labels: Labels = vec![("plugin", plugin.clone())];
                let sample = family.encode_family(&labels)?;
                ConstCounter::new(value(counters)).encode(sample)?;
            }
        }
        Ok(())
    }
}

/// The alert observer's counters, by outcome.
#[derive(Debug)]
struct AlertsCollector(Arc<AlertCounters>);

impl Collector for AlertsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::result::Result<(), std::fmt::Error> {
        let mut family = encoder.encode_descriptor(
            "plugsync_alerts",
            "Alerts by what became of them, per webhook (delivered; failed: every try; dropped: \
             a full queue, or left at a stop)",
            None,
            MetricType::Counter,
        )?;
        for (outcome, value) in [
            ("delivered", self.0.delivered()),
            ("failed", self.0.failed()),
            ("dropped", self.0.dropped()),
        ] {
            let labels: Labels = vec![("outcome", outcome.to_owned())];
            ConstCounter::new(value).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// The observer that keeps [`Metrics`] from the sidecar's events.
#[derive(Debug)]
pub struct MetricsObserver {
    metrics: Arc<Metrics>,
    /// When each step in flight started, by step id.
    started: HashMap<String, (String, Instant)>,
    /// Each plugin's info labels now, to remove a label set when it changes.
    desired: BTreeMap<String, Labels>,
    running: BTreeMap<String, Labels>,
}

impl MetricsObserver {
    /// An observer keeping `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> MetricsObserver {
        MetricsObserver {
            metrics,
            started: HashMap::new(),
            desired: BTreeMap::new(),
            running: BTreeMap::new(),
        }
    }

    /// A successful look at the host: it runs what plugins.yaml asks.
    fn success(&self) {
        let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
        self.metrics.last_success.set(now);
        self.metrics.drift.set(0);
    }

    /// The info series and call counters of a drift check.
    fn seen(&mut self, plugins: &[PluginSeen]) {
        let info = |plugin: &str, at: &crate::plan::VersionAt| -> Labels {
            vec![
                ("plugin", plugin.to_owned()),
                ("version", at.version.to_string()),
                ("sha256", at.sha256.to_string()),
            ]
        };
        let desired: BTreeMap<String, Labels> = (plugins.iter())
            .filter_map(|p| {
                p.desired
                    .as_ref()
                    .map(|at| (p.plugin.clone(), info(&p.plugin, at)))
            })
            .collect();
        let running: BTreeMap<String, Labels> = (plugins.iter())
            .filter_map(|p| {
                p.running
                    .as_ref()
                    .map(|at| (p.plugin.clone(), info(&p.plugin, at)))
            })
            .collect();
        replace(&self.metrics.desired_info, &mut self.desired, desired);
        replace(&self.metrics.running_info, &mut self.running, running);
        let counters = (plugins.iter())
            .filter(|p| p.running.is_some())
            .filter_map(|p| p.counters.map(|c| (p.plugin.clone(), c)))
            .collect();
        *(self.metrics.plugin_counters.0.lock()).unwrap_or_else(PoisonError::into_inner) = counters;
    }
}

/// Sets each plugin's info series to its new label set, removing the old one (and those of
/// plugins gone).
fn replace(
    family: &Family<Labels, Gauge>,
    now: &mut BTreeMap<String, Labels>,
    new: BTreeMap<String, Labels>,
) {
    for (plugin, labels) in now.iter() {
        if new.get(plugin) != Some(labels) {
            family.remove(labels);
        }
    }
    for labels in new.values() {
        family.get_or_create(labels).set(1);
    }
    *now = new;
}

impl Observer for MetricsObserver {
    fn observe(&mut self, event: &SidecarEvent) {
        let metrics = &self.metrics;
        match event {
            SidecarEvent::DesiredRead { .. } => {
                metrics.desired_valid.set(1);
                metrics.health.desired_read.store(true, Ordering::Relaxed);
                metrics.health.desired_valid.store(true, Ordering::Relaxed);
            }
            SidecarEvent::DesiredInvalid { .. } => {
                metrics.desired_valid.set(0);
                metrics.health.desired_read.store(true, Ordering::Relaxed);
                metrics.health.desired_valid.store(false, Ordering::Relaxed);
            }
            SidecarEvent::StepStarted {
                plugin, step_id, ..
            } => {
                self.started
                    .insert(step_id.clone(), (plugin.clone(), Instant::now()));
            }
            SidecarEvent::StepEnded(report) => {
                let Some(outcome) = &report.outcome else {
                    return;
                };
                let name = SidecarEvent::outcome_name(outcome);
                let outcome_label: Labels = vec![("outcome", name.to_owned())];
                if let Some(us) = report.slot_held_us {
                    metrics.swap_stall.observe(us as f64 / 1e6);
                }
                // A retried step ends under its last attempt's id: matched by plugin then.
                let started = self.started.remove(&report.step_id).or_else(|| {
                    let id = (self.started.iter())
                        .find(|(_, (plugin, _))| *plugin == report.plugin)
                        .map(|(id, _)| id.clone())?;
                    self.started.remove(&id)
                });
                if let Some((_, at)) = started {
                    (metrics.step_duration.get_or_create(&outcome_label))
                        .observe(at.elapsed().as_secs_f64());
                }
                if matches!(outcome, StepOutcome::RolledBack { .. }) {
                    metrics.rollbacks.inc();
                }
                // Last: a scrape that sees the step counted sees the rest of it too.
                metrics.steps.get_or_create(&outcome_label).inc();
            }
            SidecarEvent::ReconcileFinished {
                trigger, report, ..
            } => {
                let outcome = if report.failed { "failed" } else { "applied" };
                let labels: Labels = vec![
                    ("trigger", trigger.name().to_owned()),
                    ("outcome", outcome.to_owned()),
                ];
                metrics.reconciles.get_or_create(&labels).inc();
                metrics.health.reconciled.store(true, Ordering::Relaxed);
                if !report.failed {
                    self.success();
                }
                // Steps that never ended (a stop) are not timed.
                self.started.clear();
            }
            SidecarEvent::ReconcileFailed { trigger, .. } => {
                let labels: Labels = vec![
                    ("trigger", trigger.name().to_owned()),
                    ("outcome", "error".to_owned()),
                ];
                metrics.reconciles.get_or_create(&labels).inc();
                self.started.clear();
            }
            SidecarEvent::DriftFound { .. } => {
                metrics.drift_found.inc();
                metrics.drift.set(1);
            }
            SidecarEvent::Checked { drift } => {
                if *drift {
                    metrics.drift.set(1);
                } else {
                    self.success();
                }
            }
            SidecarEvent::Observed { plugins } => self.seen(plugins),
            SidecarEvent::Stopping { .. } => {
                metrics.health.running.store(false, Ordering::Relaxed);
            }
            SidecarEvent::ReconcileStarted { .. } | SidecarEvent::Notice(_) => {}
        }
    }
}

/// The metrics server, on its own thread; dropping it stops it.
#[derive(Debug)]
pub struct MetricsServer {
    local_addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl MetricsServer {
    /// The address it listens on (the port chosen, for port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Binds `options.listen` (refusing a non-loopback address without `allow_remote`) and serves
/// `metrics` there on a thread of its own until the returned server is dropped.
pub fn serve(options: &MetricsOptions, metrics: Arc<Metrics>) -> Result<MetricsServer> {
    let listen = options.listen;
    if !listen.ip().is_loopback() && !options.allow_remote {
        return Err(Error::MetricsNotLoopback { listen });
    }
    let bind = |source: std::io::Error| Error::MetricsListen { listen, source };
    let listener = std::net::TcpListener::bind(listen).map_err(bind)?;
    listener.set_nonblocking(true).map_err(bind)?;
    let local_addr = listener.local_addr().map_err(bind)?;
    let setup = |source: std::io::Error| Error::Setup {
        action: "start the metrics server",
        source,
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(setup)?;
    let listener = {
        let _entered = runtime.enter();
        tokio::net::TcpListener::from_std(listener).map_err(bind)?
    };
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(metrics);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::Builder::new()
        .name("plugsync-metrics".into())
        .spawn(move || {
            runtime.block_on(async move {
                // Not a graceful shutdown: a scraper's idle keep-alive connection would hold
                // the sidecar's exit up. The runtime's drop closes every connection.
                tokio::select! {
                    served = axum::serve(listener, app).into_future() => {
                        if let Err(error) = served {
                            tracing::warn!("the metrics server stopped: {error}");
                        }
                    }
                    _ = stopped => {}
                }
            });
        })
        .map_err(setup)?;
    Ok(MetricsServer {
        local_addr,
        stop: Some(stop),
        thread: Some(thread),
    })
}

/// `GET /metrics`.
async fn metrics_text(
    State(metrics): State<Arc<Metrics>>,
) -> ([(header::HeaderName, &'static str); 1], String) {
    (
        [(
            header::CONTENT_TYPE,
            prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        )],
        metrics.encode(),
    )
}

/// `GET /healthz`.
async fn healthz(State(metrics): State<Arc<Metrics>>) -> (StatusCode, String) {
    answer(metrics.healthy())
}

/// `GET /readyz`.
async fn readyz(State(metrics): State<Arc<Metrics>>) -> (StatusCode, String) {
    answer(metrics.ready())
}

/// 200 `ok`, or 503 with the reason, each a line.
fn answer(state: std::result::Result<(), &'static str>) -> (StatusCode, String) {
    match state {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()),
        Err(reason) => (StatusCode::SERVICE_UNAVAILABLE, format!("{reason}\n")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_named_is_exported_and_nothing_else() {
        let metrics = Metrics::new(Arc::new(AlertCounters::default()));
        let mut observer = MetricsObserver::new(Arc::clone(&metrics));
        // A step, so that the labelled families have a sample.
        observer.observe(&SidecarEvent::StepStarted {
            plugin: "p".into(),
            title: "p 1.0.0 (install)".into(),
            step_id: "s".into(),
            from: None,
            to: Some("1.0.0".into()),
        });
        let report = crate::apply::StepReport {
            number: 1,
            of: 1,
            plugin: "p".into(),
            title: "p 1.0.0 (install)".into(),
            step_id: "s".into(),
            marks: Vec::new(),
            outcome: Some(StepOutcome::Done),
            rollback: None,
            resumed: false,
            phase: None,
            marked_failed: None,
            from: None,
            to: Some("1.0.0".into()),
            slot_held_us: Some(3),
        };
        observer.observe(&SidecarEvent::StepEnded(report));
        let at = crate::plan::VersionAt {
            version: "1.0.0".parse().unwrap(),
            sha256: plugsync_host::Digest::of(b"p"),
        };
        observer.observe(&SidecarEvent::Observed {
            plugins: vec![PluginSeen {
                plugin: "p".into(),
                desired: Some(at.clone()),
                running: Some(at),
                counters: Some(plugsync_host::Counters::default()),
            }],
        });
        let text = metrics.encode();
        let typed: Vec<&str> = (text.lines())
            .filter_map(|line| line.strip_prefix("# TYPE "))
            .filter_map(|line| line.split(' ').next())
            .collect();
        let mut expected = SERIES.to_vec();
        expected.sort_unstable();
        let mut typed_sorted = typed.clone();
        typed_sorted.sort_unstable();
        assert_eq!(typed_sorted, expected, "{text}");
        for line in text.lines().filter(|line| !line.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            assert!(exports(name), "`{name}` is not in SERIES:\n{text}");
        }
    }

    #[test]
    fn a_plugin_s_info_series_follows_its_version() {
        let metrics = Metrics::new(Arc::new(AlertCounters::default()));
        let mut observer = MetricsObserver::new(Arc::clone(&metrics));
        let at = |version: &str| crate::plan::VersionAt {
            version: version.parse().unwrap(),
            sha256: plugsync_host::Digest::of(version.as_bytes()),
        };
        let seen = |running: &str| SidecarEvent::Observed {
            plugins: vec![PluginSeen {
                plugin: "ma_cross".into(),
                desired: Some(at("2.0.0")),
                running: Some(at(running)),
                counters: Some(plugsync_host::Counters {
                    calls: 7,
                    errors: 1,
                    panics: 0,
                }),
            }],
        };
        observer.observe(&seen("1.0.0"));
        observer.observe(&seen("2.0.0"));
        let text = metrics.encode();
        let running: Vec<&str> = (text.lines())
            .filter(|l| l.starts_with("plugsync_plugin_running_info{"))
            .collect();
        assert_eq!(running.len(), 1, "{text}");
        assert!(running[0].contains("version=\"2.0.0\""), "{text}");
        assert!(
            text.contains("plugsync_plugin_calls_total{plugin=\"ma_cross\"} 7"),
            "{text}"
        );
    }

    #[test]
    fn ready_once_a_reconcile_ended_and_while_plugins_yaml_is_valid() {
        let metrics = Metrics::new(Arc::new(AlertCounters::default()));
        let mut observer = MetricsObserver::new(Arc::clone(&metrics));
        assert!(metrics.ready().is_err());
        observer.observe(&SidecarEvent::DesiredRead {
            sha256: plugsync_host::Digest::of(b"x"),
            commit: None,
        });
        assert_eq!(metrics.ready(), Err("no reconcile has run to its end yet"));
        observer.observe(&SidecarEvent::ReconcileFinished {
            trigger: super::super::Trigger::Start,
            report: crate::apply::ApplyReport {
                plan_id: None,
                steps: Vec::new(),
                running: Vec::new(),
                failed: false,
                kept: Vec::new(),
            },
            took: std::time::Duration::ZERO,
        });
        assert_eq!(metrics.ready(), Ok(()));
        observer.observe(&SidecarEvent::DesiredInvalid {
            report: "error".into(),
            keeping: None,
        });
        assert!(metrics.ready().unwrap_err().contains("invalid"));
        assert!(metrics.healthy().is_ok());
        observer.observe(&SidecarEvent::Stopping {
            left: String::new(),
        });
        assert!(metrics.healthy().is_err());
    }

    #[test]
    fn a_non_loopback_address_is_refused_without_allow_remote() {
        let metrics = Metrics::new(Arc::new(AlertCounters::default()));
        let options = MetricsOptions {
            listen: "0.0.0.0:0".parse().unwrap(),
            allow_remote: false,
        };
        let error = serve(&options, metrics).unwrap_err().to_string();
        assert!(error.contains("--metrics-allow-remote"), "{error}");
    }
}
