//! `deploy/prometheus/plugsync-rules.yaml`: each alerting rule is complete (alert, expr, for,
//! a severity, a summary), the rules asked for are there, and every `plugsync_*` series an
//! expression names is one the sidecar exports (`plugsync::watch::metrics::SERIES`) — so a
//! renamed series cannot leave a rule silently matching nothing.
//!
//! Read with plugsync's own YAML reader (`spec::yaml`, over `saphyr-parser`): no YAML crate
//! beyond the one plugins.yaml already needs.

use std::collections::BTreeSet;
use std::path::Path;

use plugsync::spec::{Limits, yaml};
use plugsync::watch::metrics;
use serde_json::Value;

/// The rules file as JSON.
fn rules_file() -> Value {
    yaml_file("deploy/prometheus/plugsync-rules.yaml")
}

/// A YAML file of the workspace as JSON.
fn yaml_file(relative: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    let text = std::fs::read_to_string(&path).unwrap();
    let node = yaml::parse(&text, &Limits::default())
        .unwrap_or_else(|e| panic!("{} is not YAML: {e:?}", path.display()));
    node.to_json()
        .unwrap_or_else(|(span, e)| panic!("{}:{span}: {e}", path.display()))
}

/// Every rule of every group.
fn rules() -> Vec<Value> {
    let file = rules_file();
    let groups = file["groups"].as_array().expect("`groups` is a list");
    assert!(!groups.is_empty());
    (groups.iter())
        .flat_map(|group| {
            assert!(group["name"].is_string(), "a group has a name: {group}");
            group["rules"]
                .as_array()
                .expect("`rules` is a list")
                .clone()
        })
        .collect()
}

/// The `plugsync_…` names in a PromQL expression (words of `[a-zA-Z0-9_:]`).
fn series_in(expr: &str) -> BTreeSet<String> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .filter(|word| word.starts_with("plugsync_"))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_rule_is_complete_and_names_only_series_the_sidecar_exports() {
    let rules = rules();
    for rule in &rules {
        let alert = rule["alert"]
            .as_str()
            .unwrap_or_else(|| panic!("no `alert`: {rule}"));
        let expr = rule["expr"]
            .as_str()
            .unwrap_or_else(|| panic!("{alert}: no `expr`"));
        let wait = rule["for"]
            .as_str()
            .unwrap_or_else(|| panic!("{alert}: no `for`"));
        humantime::parse_duration(wait).unwrap_or_else(|e| panic!("{alert}: `for: {wait}`: {e}"));
        let severity = rule["labels"]["severity"].as_str();
        assert!(
            matches!(severity, Some("warning" | "critical" | "info")),
            "{alert}: `labels.severity` is {severity:?}"
        );
        let summary = rule["annotations"]["summary"].as_str();
        assert!(
            summary.is_some_and(|s| !s.trim().is_empty()),
            "{alert}: no `annotations.summary`"
        );
        let named = series_in(expr);
        assert!(
            !named.is_empty(),
            "{alert} names no plugsync series: {expr}"
        );
        for series in named {
            assert!(
                metrics::exports(&series),
                "{alert} uses `{series}`, which the sidecar does not export (SERIES: {:?})",
                metrics::SERIES
            );
        }
    }
}

#[test]
fn the_rules_asked_for_are_there() {
    let rules = rules();
    let expr_of = |alert: &str| -> String {
        (rules.iter())
            .find(|rule| rule["alert"] == alert)
            .unwrap_or_else(|| panic!("no rule `{alert}`"))["expr"]
            .as_str()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(
        expr_of("PlugsyncReconcileFailing"),
        "increase(plugsync_reconciles_total{outcome=\"error\"}[10m]) > 0"
    );
    assert_eq!(
        expr_of("PlugsyncDesiredStateInvalid"),
        "plugsync_desired_state_valid == 0"
    );
    assert_eq!(expr_of("PlugsyncDrift"), "plugsync_drift == 1");
    assert_eq!(
        expr_of("PlugsyncPluginNotAtDesiredVersion"),
        "plugsync_plugin_running_info unless on(instance, plugin, version) \
         plugsync_plugin_desired_info"
    );
    assert_eq!(
        expr_of("PlugsyncGroupDisagrees"),
        "count by (group, plugin) ( count by (group, plugin, version) \
         (plugsync_plugin_running_info) ) > 1"
    );
    let group_rule = rules
        .iter()
        .find(|rule| rule["alert"] == "PlugsyncGroupDisagrees")
        .unwrap();
    assert_eq!(group_rule["for"], "15m");
}

#[test]
fn the_series_list_is_what_the_names_say() {
    // Counters end in `_total`, and every name is the sidecar's.
    for name in metrics::SERIES {
        assert!(name.starts_with("plugsync_"), "{name}");
    }
    assert!(metrics::exports("plugsync_step_duration_seconds_bucket"));
    assert!(metrics::exports("plugsync_swap_stall_seconds_count"));
    assert!(!metrics::exports("plugsync_drift_bucket"));
    assert!(!metrics::exports("plugsync_reconciles"));
}

#[test]
fn every_rule_has_a_promtool_unit_test_that_fires_it() {
    // `promtool test rules deploy/prometheus/plugsync-rules.test.yaml` runs them (Prometheus
    // ships promtool; it is not needed to build or test plugsync).
    let tests = yaml_file("deploy/prometheus/plugsync-rules.test.yaml");
    assert_eq!(tests["rule_files"][0], "plugsync-rules.yaml");
    let fired: BTreeSet<String> = (tests["tests"].as_array().unwrap().iter())
        .flat_map(|test| test["alert_rule_test"].as_array().unwrap().iter())
        .filter(|case| !case["exp_alerts"].as_array().unwrap().is_empty())
        .map(|case| case["alertname"].as_str().unwrap().to_owned())
        .collect();
    let alerts: BTreeSet<String> = (rules().iter())
        .map(|rule| rule["alert"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(fired, alerts);
}
