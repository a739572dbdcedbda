//! `plugsync run --metrics-listen` through the binary, against a real reference host: an
//! install, an upgrade committed, a faulty release rolled back by the host, drift made by hand
//! and an invalid edit, each read back from `/metrics` (parsed here, line by line) as the
//! series the scenario implies; `/healthz` and `/readyz` answer as the loop stands.
//!
//! The sidecar listens on port 0 and logs the address it got. Nothing sleeps for a set time:
//! each step waits for the fact itself, polling.

mod support;

use std::collections::BTreeMap;

use serde_json::json;
use support::desk::*;
use support::process::Proc;
use support::sidecar::*;
use support::*;

/// risk_model 1.0.0 and ma_cross 2.0.0, where the faulty ma_cross 2.0.3 migrates from.
const V2_0: &str = "  plugins:
    - {id: risk_model, version: 1.0.0, config: {max_position: 10}}
    - id: ma_cross
      version: 2.0.0
      config: {fast_period: 2, slow_period: 4, order_qty: 1}
";

/// risk_model's minor upgrade, soaked briefly.
const V2_0_RISK_1_1: &str = "  plugins:
    - {id: risk_model, version: 1.1.0, config: {max_position: 10}, verify: {soak: {duration: 300ms}}}
    - id: ma_cross
      version: 2.0.0
      config: {fast_period: 2, slow_period: 4, order_qty: 1}
";

/// ma_cross 2.0.3 (it panics on instrument `CRASH`), soaked long enough for the test to call
/// it.
const FAULTY: &str = "  plugins:
    - {id: risk_model, version: 1.1.0, config: {max_position: 10}, verify: {soak: {duration: 300ms}}}
    - id: ma_cross
      version: 2.0.3
      config: {fast_period: 2, slow_period: 4, order_qty: 1}
      verify: {soak: {duration: 60s, maxErrorRate: 0.001}}
";

/// One sample of the text format: its name and labels.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Series {
    name: String,
    labels: BTreeMap<String, String>,
}

/// `/metrics` parsed: each sample's value, by name and labels (`# ` lines skipped).
fn parse(text: &str) -> BTreeMap<Series, f64> {
    let mut samples = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            value => value.parse().unwrap_or_else(|_| panic!("{line}")),
        };
        let (name, labels) = match series.split_once('{') {
            None => (series, BTreeMap::new()),
            Some((name, rest)) => {
                let rest = rest.strip_suffix('}').unwrap_or_else(|| panic!("{line}"));
                (name, labels_of(rest))
            }
        };
        let series = Series {
            name: name.to_owned(),
            labels,
        };
        assert!(
            samples.insert(series, value).is_none(),
            "a sample twice: {line}"
        );
    }
    samples
}

/// `a="1",b="x\"y"` as a map, unescaping `\\`, `\"` and `\n`.
fn labels_of(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    while chars.peek().is_some() {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "{text}");
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(other) => value.push(other),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').to_owned(), value);
        if chars.peek() == Some(&',') {
            chars.next();
        }
    }
    labels
}

/// The sidecar's metrics, read over HTTP.
struct Scrape {
    address: String,
}

impl Scrape {
    fn samples(&self) -> BTreeMap<Series, f64> {
        let (status, body) = http_get(&self.address, "/metrics");
        assert_eq!(status, 200, "{body}");
        parse(&body)
    }

    /// The sample `name{labels}` (`None`: absent).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let series = Series {
            name: name.to_owned(),
            labels: (labels.iter())
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        };
        self.samples().get(&series).copied()
    }

    /// The sum of every sample named `name` whose labels include `labels`.
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        (self.samples().iter())
            .filter(|(series, _)| {
                series.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| series.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, value)| value)
            .sum()
    }

    /// The versions an info series gives each plugin: `plugin version`, sorted.
    fn info(&self, name: &str) -> Vec<String> {
        let mut info: Vec<String> = (self.samples().into_iter())
            .filter(|(series, value)| series.name == name && *value == 1.0)
            .map(|(series, _)| format!("{} {}", series.labels["plugin"], series.labels["version"]))
            .collect();
        info.sort();
        info
    }

    fn get(&self, path: &str) -> (u16, String) {
        http_get(&self.address, path)
    }
}

/// Waits until the sample `name{labels}` is `value`.
fn until_value(sidecar: &Proc, scrape: &Scrape, name: &str, labels: &[(&str, &str)], value: f64) {
    eventually(sidecar, &format!("{name}{labels:?} is {value}"), || {
        scrape.value(name, labels) == Some(value)
    });
}

#[test]
fn the_series_tell_a_scenario_of_installs_an_upgrade_a_rollback_drift_and_an_invalid_edit() {
    let desk = Desk::new();
    publish(desk.path(), FAULT_CALL, "stable");
    let file = desk.path().join("plugins.yaml");
    std::fs::write(&file, desired(&desk, V2_0)).unwrap();
    let sidecar = run(
        &desk,
        &file,
        &["--drift", "report", "--drift-interval", "300ms"],
    );
    let scrape = Scrape {
        address: metrics_address(&sidecar),
    };
    assert_eq!(scrape.get("/healthz").0, 200);

    // The install: two steps committed, ready once it ended.
    until_value(
        &sidecar,
        &scrape,
        "plugsync_steps_total",
        &[("outcome", "committed")],
        2.0,
    );
    eventually(&sidecar, "the sidecar is ready", || {
        scrape.get("/readyz").0 == 200
    });
    assert_eq!(scrape.value("plugsync_desired_state_valid", &[]), Some(1.0));
    assert_eq!(
        scrape.sum("plugsync_reconciles_total", &[("outcome", "applied")]),
        1.0
    );
    assert!(
        scrape
            .value("plugsync_last_success_timestamp_seconds", &[])
            .unwrap()
            > 1.7e9
    );

    // An upgrade committed: its switch's stall measured.
    desk.trade();
    std::fs::write(&file, desired(&desk, V2_0_RISK_1_1)).unwrap();
    until_value(
        &sidecar,
        &scrape,
        "plugsync_steps_total",
        &[("outcome", "committed")],
        3.0,
    );
    assert_eq!(
        scrape.value("plugsync_swap_stall_seconds_count", &[]),
        Some(1.0)
    );
    let stall = scrape
        .value("plugsync_swap_stall_seconds_sum", &[])
        .unwrap();
    assert!(stall > 0.0 && stall < 1.0, "{stall}");
    assert_eq!(
        scrape.value(
            "plugsync_step_duration_seconds_count",
            &[("outcome", "committed")]
        ),
        Some(3.0)
    );

    // A faulty release: it panics on a call during its soak; the host rolls it back.
    std::fs::write(&file, desired(&desk, FAULTY)).unwrap();
    eventually(&sidecar, "ma_cross 2.0.3 soaks", || {
        !desk.api.plugin("ma_cross")["pending"].is_null()
    });
    let crash = json!({"bar": {"instrument": "CRASH", "close": 1.0}});
    desk.api
        .post("/v1/plugins/ma_cross/call", json!({"input": crash}));
    until_value(
        &sidecar,
        &scrape,
        "plugsync_steps_total",
        &[("outcome", "rolled-back")],
        1.0,
    );
    assert_eq!(scrape.value("plugsync_rollbacks_total", &[]), Some(1.0));
    assert_eq!(
        scrape.value("plugsync_steps_total", &[("outcome", "committed")]),
        Some(3.0)
    );
    assert_eq!(
        scrape.value("plugsync_swap_stall_seconds_count", &[]),
        Some(2.0)
    );
    // The reconcile ends after its step.
    eventually(
        &sidecar,
        "the reconcile with a failed step is counted",
        || scrape.sum("plugsync_reconciles_total", &[("outcome", "failed")]) == 1.0,
    );
    // plugins.yaml asks 2.0.3; the host runs 2.0.0 (2.0.3 is marked failed: kept, not drift).
    eventually(
        &sidecar,
        "the info series show ma_cross kept on 2.0.0",
        || {
            scrape.info("plugsync_plugin_running_info") == ["ma_cross 2.0.0", "risk_model 1.1.0"]
                && scrape.info("plugsync_plugin_desired_info")
                    == ["ma_cross 2.0.3", "risk_model 1.1.0"]
        },
    );
    assert_eq!(scrape.value("plugsync_drift", &[]), Some(0.0));

    // Drift made by hand: risk_model back to 1.0.0; reported, not healed.
    desk.switch_by("risk_model", RISK_MODEL_1_0_0, "an-operators-script");
    until_value(&sidecar, &scrape, "plugsync_drift", &[], 1.0);
    assert!(scrape.value("plugsync_drift_found_total", &[]).unwrap() >= 1.0);
    eventually(
        &sidecar,
        "the running info follows the hand-made change",
        || scrape.info("plugsync_plugin_running_info") == ["ma_cross 2.0.0", "risk_model 1.0.0"],
    );
    // The host's call counters, as the host counts them (the desk makes no call meanwhile).
    for plugin in ["ma_cross", "risk_model"] {
        let counters = desk.api.plugin(plugin)["counters"].clone();
        for (series, key) in [
            ("plugsync_plugin_calls_total", "calls"),
            ("plugsync_plugin_errors_total", "errors"),
            ("plugsync_plugin_panics_total", "panics"),
        ] {
            let host = counters[key].as_f64().unwrap();
            until_value(&sidecar, &scrape, series, &[("plugin", plugin)], host);
        }
    }
    assert!(
        scrape
            .value("plugsync_plugin_calls_total", &[("plugin", "ma_cross")])
            .unwrap()
            > 0.0,
        "the desk traded"
    );

    // An invalid edit: not ready, valid 0; fixed: ready again.
    std::fs::write(
        &file,
        desired(&desk, &FAULTY.replace("version: 2.0.3", "verison: 2.0.3")),
    )
    .unwrap();
    until_value(&sidecar, &scrape, "plugsync_desired_state_valid", &[], 0.0);
    let (status, reason) = scrape.get("/readyz");
    assert_eq!(
        (status, reason.as_str()),
        (
            503,
            "plugins.yaml is invalid on disk: nothing of it is applied (see the sidecar's log)\n"
        )
    );
    std::fs::write(&file, desired(&desk, FAULTY)).unwrap();
    until_value(&sidecar, &scrape, "plugsync_desired_state_valid", &[], 1.0);
    assert_eq!(scrape.get("/readyz").0, 200);
    assert_eq!(scrape.get("/healthz").0, 200);

    // Every sample is one the metrics module says it exports (what alerting rules may use).
    for series in scrape.samples().keys() {
        assert!(
            plugsync::watch::metrics::exports(&series.name),
            "`{}` is not in metrics::SERIES",
            series.name
        );
    }
    assert!(stop(sidecar).status.success());
}

#[test]
fn a_metrics_address_off_loopback_is_refused_without_metrics_allow_remote() {
    let desk = Desk::new();
    let file = desk.path().join("plugins.yaml");
    std::fs::write(&file, desired(&desk, V1)).unwrap();
    let refused = run(&desk, &file, &["--metrics-listen", "0.0.0.0:0"]).finish();
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stderr);
    assert!(
        refused.stderr.contains(
            "`--metrics-listen 0.0.0.0:0` is not a loopback address: the metrics name every \
             plugin, its versions and its traffic, served in clear to whoever reaches it; listen \
             on `127.0.0.1:PORT`, or pass `--metrics-allow-remote` if the network is yours"
        ),
        "{}",
        refused.stderr
    );
    assert!(
        status(&desk).is_null(),
        "refused before it started: no sidecar.json"
    );
}
