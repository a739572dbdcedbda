//! Declarative migration rules sent with a switch, instead of the plugin's own `migrate`.

mod support;

use plugsync_host::{HostError, MigrationRule, SwapRequest};
use serde_json::json;
use support::*;

fn rename_rules() -> Vec<MigrationRule> {
    serde_json::from_value(json!([
        {"op": "rename", "from": "/config/fast_ma_period", "to": "/config/fast_period"},
        {"op": "rename", "from": "/config/slow_ma_period", "to": "/config/slow_period"},
        {"op": "default", "path": "/config/signal_threshold", "value": 0.01},
        {"op": "rename", "from": "/state/fast_ma_period", "to": "/state/fast_period"},
        {"op": "rename", "from": "/state/slow_ma_period", "to": "/state/slow_period"},
        {"op": "default", "path": "/state/signal_threshold", "value": 0.01}
    ]))
    .unwrap()
}

/// Feeds the same bars to a 1.0.0 and returns its runtime, ready to swap.
fn trading_1_0_0() -> (tempfile::TempDir, plugsync_host::Runtime) {
    let (dir, runtime) = runtime();
    install(
        &runtime,
        MA_CROSS_1_0_0,
        json!({"fast_ma_period": 2, "slow_ma_period": 3, "order_qty": 1}),
    );
    for close in [100.0, 99.0, 103.0, 104.0] {
        runtime.call("ma_cross", &bar("ES", close)).unwrap();
    }
    (dir, runtime)
}

#[test]
fn rules_migrate_the_state_as_the_plugins_own_migration_does() {
    let (_a, by_plugin) = trading_1_0_0();
    let (_b, by_rules) = trading_1_0_0();
    let v2 = stage(&by_plugin, MA_CROSS_2_0_0);
    stage(&by_rules, MA_CROSS_2_0_0);

    let plugin_report = by_plugin.swap(SwapRequest::new("ma_cross", v2)).unwrap();
    let rules_report = by_rules
        .swap(SwapRequest::new("ma_cross", v2).migration_rules(rename_rules()))
        .unwrap();
    assert_eq!(rules_report.state_after, plugin_report.state_after);
    assert_eq!(rules_report.config_after, plugin_report.config_after);
    assert_eq!(
        state(&by_rules.snapshot("ma_cross").unwrap()),
        state(&by_plugin.snapshot("ma_cross").unwrap())
    );
}

#[test]
fn rules_stand_for_the_declaration_of_a_transition_the_plugins_do_not_declare() {
    // 2.1.0 migrates only from 2.x; with rules an operator takes 1.0.0 there directly.
    let (_dir, runtime) = trading_1_0_0();
    let v21 = stage(&runtime, MA_CROSS_2_1_0);
    let refused = runtime.swap(SwapRequest::new("ma_cross", v21)).unwrap_err();
    assert!(
        matches!(refused, HostError::NoMigration { .. }),
        "{refused}"
    );

    let mut rules = rename_rules();
    rules.push(
        serde_json::from_value(
            json!({"op": "default", "path": "/state/instruments/*/last_close", "value": null}),
        )
        .unwrap(),
    );
    let report = runtime
        .swap(SwapRequest::new("ma_cross", v21).migration_rules(rules))
        .unwrap();
    assert_eq!(report.to.version, "2.1.0");
    assert_eq!(
        report.state_after["instruments"]["ES"]["last_close"],
        serde_json::Value::Null
    );
    runtime.call("ma_cross", &bar("ES", 105.0)).unwrap();
}

#[test]
fn a_rule_that_does_not_fit_the_state_is_refused_and_nothing_is_switched() {
    let (_dir, runtime) = trading_1_0_0();
    let v1 = digest_of(MA_CROSS_1_0_0);
    let v2 = stage(&runtime, MA_CROSS_2_0_0);
    let rules = serde_json::from_value(json!([
        {"op": "rename", "from": "/state/fast_period", "to": "/state/fast"}
    ]))
    .unwrap();
    let error = runtime
        .swap(SwapRequest::new("ma_cross", v2).migration_rules(rules))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "migrating `ma_cross` from 1.0.0 to 2.0.0: migration rule 1 (rename `/state/fast_period` \
         to `/state/fast`) cannot be applied: `/state/fast_period` does not exist; fix the rule \
         for this state schema"
    );
    let served = runtime.call("ma_cross", &bar("ES", 105.0)).unwrap();
    assert_eq!(served.receipt.digest, v1);
}

#[test]
fn rules_that_leave_a_state_the_new_version_refuses_fail_before_the_switch() {
    let (_dir, runtime) = trading_1_0_0();
    let v1 = digest_of(MA_CROSS_1_0_0);
    let v2 = stage(&runtime, MA_CROSS_2_0_0);
    // Renames the config but forgets the state: 2.0.0 refuses a state with 1.x's fields.
    let rules = serde_json::from_value(json!([
        {"op": "rename", "from": "/config/fast_ma_period", "to": "/config/fast_period"},
        {"op": "rename", "from": "/config/slow_ma_period", "to": "/config/slow_period"}
    ]))
    .unwrap();
    let error = runtime
        .swap(SwapRequest::new("ma_cross", v2).migration_rules(rules))
        .unwrap_err();
    // Verification restores the migrated state into a throwaway 2.0.0 first: that is where it
    // fails, before anything live is touched.
    let HostError::VerificationFailed { report, .. } = &error else {
        panic!("expected a failed verification: {error}");
    };
    let health = report.health.clone().unwrap().unwrap_err();
    assert!(
        health.starts_with("`restore` failed: state does not match this version's schema"),
        "{health}"
    );
    assert_eq!(
        runtime
            .call("ma_cross", &bar("ES", 105.0))
            .unwrap()
            .receipt
            .digest,
        v1
    );
}
