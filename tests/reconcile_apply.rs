//! `plugsync reconcile` through the binary, against a real reference host running the real
//! example plugins: steps applied, rolled back, refused, and finished after a crash.
//!
//! Every host runs with `--feed off`; the plugins' states come from calls the test makes
//! (`--allow-calls`). Time for policy windows comes from `PLUGSYNC_NOW`; soaks are short and
//! real (the host's own lease and thresholds are what they exercise).

mod support;

use expect_test::expect;
use serde_json::{Value, json};
use support::desk::*;
use support::process::Finished;
use support::*;

/// The example desk at its first versions.
const V1: &str = "  plugins:
    - {id: risk_model, version: 1.0.0, config: {max_position: 10}}
    - id: ma_cross
      version: 1.0.0
      config: {fast_ma_period: 2, slow_ma_period: 4, order_qty: 1}
";

/// Both plugins at their last versions: ma_cross → 2.0.0, risk_model → 2.0.0, ma_cross →
/// 2.1.0, each step soaked briefly.
const V2: &str = "  plugins:
    - id: risk_model
      version: 2.0.0
      config: {max_position: 10}
      verify: {soak: {duration: 300ms}}
    - id: ma_cross
      version: 2.1.0
      config: {fast_period: 2, slow_period: 4, order_qty: 1}
      verify: {soak: {duration: 300ms, maxErrorRate: 0.001}}
";

/// `plugsync reconcile ARGS` on the desk's plugins.yaml, on a Saturday.
fn reconcile(desk: &Desk, args: &[&str]) -> Finished {
    reconcile_with(desk, &[], args)
}

fn reconcile_with(desk: &Desk, env: &[(&str, &str)], args: &[&str]) -> Finished {
    let mut all = vec![("PLUGSYNC_NOW", SATURDAY)];
    all.extend(env);
    desk.reconcile_of(&desk.path().join("plugins.yaml"), &all, args)
}

/// The states a runtime in this process holds after the calls [`Desk::trade`] makes and the
/// three switches of the upgrade, each with the host's own defaults: what the host must hold.
fn reference_after_upgrade() -> Value {
    use plugsync_host::SwapRequest;
    let (_dir, runtime) = support::runtime();
    support::install(&runtime, RISK_MODEL_1_0_0, json!({"max_position": 10}));
    support::install(
        &runtime,
        MA_CROSS_1_0_0,
        json!({"fast_ma_period": 2, "slow_ma_period": 4, "order_qty": 1}),
    );
    for (plugin, input) in Desk::trade_inputs() {
        runtime
            .call(plugin, input.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{plugin}: {e:?}"));
    }
    let steps = [
        ("ma_cross", MA_CROSS_2_0_0, None),
        (
            "risk_model",
            RISK_MODEL_2_0_0,
            Some(json!({"max_position": 10})),
        ),
        (
            "ma_cross",
            MA_CROSS_2_1_0,
            Some(json!({"fast_period": 2, "slow_period": 4, "order_qty": 1})),
        ),
    ];
    for (plugin, library, config) in steps {
        let mut request = SwapRequest::new(plugin, support::stage(&runtime, library));
        request.config = config;
        runtime.swap(request).unwrap();
        runtime.commit(plugin).unwrap();
    }
    let mut states = serde_json::Map::new();
    for plugin in ["ma_cross", "risk_model"] {
        let snapshot = runtime.snapshot(plugin).unwrap();
        states.insert(
            plugin.to_owned(),
            serde_json::from_str(&snapshot.state).unwrap(),
        );
    }
    Value::Object(states)
}

fn versions(desk: &Desk) -> Vec<(String, String)> {
    let status = desk.api.status();
    let mut versions: Vec<(String, String)> = status["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["plugin"].as_str().unwrap().to_owned(),
                p["version"]["version"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    versions.sort();
    versions
}

fn pair(plugin: &str, version: &str) -> (String, String) {
    (plugin.to_owned(), version.to_owned())
}

#[test]
fn from_nothing_to_the_first_versions_then_the_interleaved_upgrade_then_nothing_to_do() {
    let desk = Desk::new();
    desk.desire(V1);
    let installed = reconcile(&desk, &[]);
    check(
        &desk,
        &installed,
        0,
        expect![[r#"
        [1/2] risk_model 1.0.0 (install)   preflight ✓  staged ✓  installed  committed
        [2/2] ma_cross 1.0.0 (install)     preflight ✓  staged ✓  installed  committed

        Applied 2 steps. The host runs ma_cross 1.0.0, risk_model 1.0.0.
    "#]],
    );
    assert_eq!(
        versions(&desk),
        [pair("ma_cross", "1.0.0"), pair("risk_model", "1.0.0")]
    );

    desk.trade();
    desk.desire(V2);
    let upgraded = reconcile(&desk, &[]);
    check(
        &desk,
        &upgraded,
        0,
        expect![[r#"
        [1/3] ma_cross 1.0.0 → 2.0.0       preflight ✓  staged ✓  switched (slot held [N] µs)  soak 300ms ✓  committed
        [2/3] risk_model 1.0.0 → 2.0.0     preflight ✓  staged ✓  switched (slot held [N] µs)  soak 300ms ✓  committed
        [3/3] ma_cross 2.0.0 → 2.1.0       preflight ✓  staged ✓  switched (slot held [N] µs)  soak 300ms ✓  committed

        Applied 3 steps. The host runs ma_cross 2.1.0, risk_model 2.0.0.
    "#]],
    );
    assert_eq!(
        versions(&desk),
        [pair("ma_cross", "2.1.0"), pair("risk_model", "2.0.0")]
    );
    // Exactly what a runtime fed the same calls and switched the same way holds.
    let reference = reference_after_upgrade();
    for plugin in ["ma_cross", "risk_model"] {
        assert_eq!(desk.api.state(plugin), reference[plugin], "{plugin}");
    }

    let again = reconcile(&desk, &[]);
    check(
        &desk,
        &again,
        0,
        expect![[r#"
        In sync: nothing to apply. The host runs ma_cross 2.1.0, risk_model 2.0.0.
    "#]],
    );
}

/// risk_model at 1.1.0 (a compatible minor, one step), ma_cross unchanged.
const V1_1: &str = "  plugins:
    - id: risk_model
      version: 1.1.0
      config: {max_position: 10}
      verify: {soak: {duration: 300ms}}
    - id: ma_cross
      version: 1.0.0
      config: {fast_ma_period: 2, slow_ma_period: 4, order_qty: 1}
";

/// The states a runtime in this process holds after [`Desk::trade`]'s calls and the switch of
/// risk_model to 1.1.0.
fn reference_after_minor() -> Value {
    use plugsync_host::SwapRequest;
    let (_dir, runtime) = support::runtime();
    support::install(&runtime, RISK_MODEL_1_0_0, json!({"max_position": 10}));
    support::install(
        &runtime,
        MA_CROSS_1_0_0,
        json!({"fast_ma_period": 2, "slow_ma_period": 4, "order_qty": 1}),
    );
    for (plugin, input) in Desk::trade_inputs() {
        runtime.call(plugin, input.to_string().as_bytes()).unwrap();
    }
    let mut request = SwapRequest::new("risk_model", support::stage(&runtime, RISK_MODEL_1_1_0));
    request.config = Some(json!({"max_position": 10}));
    runtime.swap(request).unwrap();
    runtime.commit("risk_model").unwrap();
    states_of(&runtime)
}

fn states_of(runtime: &plugsync_host::Runtime) -> Value {
    let mut states = serde_json::Map::new();
    for plugin in ["ma_cross", "risk_model"] {
        let snapshot = runtime.snapshot(plugin).unwrap();
        states.insert(
            plugin.to_owned(),
            serde_json::from_str(&snapshot.state).unwrap(),
        );
    }
    Value::Object(states)
}

/// Calls that failed on the host, per plugin.
fn failed_calls(desk: &Desk) -> Vec<(String, u64)> {
    let status = desk.api.status();
    status["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            let counters = &p["counters"];
            let failed =
                counters["errors"].as_u64().unwrap_or(0) + counters["panics"].as_u64().unwrap_or(0);
            (p["plugin"].as_str().unwrap().to_owned(), failed)
        })
        .collect()
}

/// A desk at the first versions, installed by `plugsync reconcile`, having traded.
fn desk_at_v1() -> Desk {
    let desk = Desk::new();
    desk.desire(V1);
    let installed = reconcile(&desk, &[]);
    assert!(installed.status.success(), "{}", installed.stderr);
    desk.trade();
    desk
}

#[test]
fn a_reconcile_killed_right_after_journaling_any_transition_is_finished_by_the_next() {
    // What the next `plugsync reconcile` prints after a crash at each transition of a
    // successful step: before the switch is sent, the step is planned again; after, it is
    // finished from the journal, its outcome read from the host — also when the host applied
    // a request whose answer never reached the journal (`+answered`).
    let cases = [
        (
            "switch-sent+answered",
            expect![[r#"
            [1/1] risk_model 1.0.0 → 1.1.0     (left by a previous run) switched (found pending on the host)  soak 300ms ✓  committed

            Applied 1 step. The host runs ma_cross 1.0.0, risk_model 1.1.0.
        "#]],
        ),
        (
            "commit-sent+answered",
            expect![[r#"
            [1/1] risk_model 1.0.0 → 1.1.0     (left by a previous run) committed (found on the host)

            Applied 1 step. The host runs ma_cross 1.0.0, risk_model 1.1.0.
        "#]],
        ),
        (
            "planned",
            expect![[r#"
            [1/1] risk_model 1.0.0 → 1.1.0     preflight ✓  staged ✓  switched (slot held [N] µs)  soak 300ms ✓  committed

            Applied 1 step. The host runs ma_cross 1.0.0, risk_model 1.1.0.
        "#]],
        ),
        (
            "preflighted",
            expect![[r#"
            [1/1] risk_model 1.0.0 → 1.1.0     preflight ✓  staged ✓  switched (slot held [N] µs)  soak 300ms ✓  committed

            Applied 1 step. The host runs ma_cross 1.0.0, risk_model 1.1.0.
        "#]],
        ),
        (
            "staged",
            expect![[r#"
            [1/1] risk_model 1.0.0 → 1.1.0     preflight ✓  staged ✓  switched (slot held [N] µs)  soak 300ms ✓  committed

            Applied 1 step. The host runs ma_cross 1.0.0, risk_model 1.1.0.
        "#]],
        ),
        (
            "switch-sent",
            expect![[r#"
            [1/1] risk_model 1.0.0 → 1.1.0     (left by a previous run) switched (slot held [N] µs)  soak 300ms ✓  committed

            Applied 1 step. The host runs ma_cross 1.0.0, risk_model 1.1.0.
        "#]],
        ),
        (
            "soaking",
            expect![[r#"
            [1/1] risk_model 1.0.0 → 1.1.0     (left by a previous run) soak 300ms ✓  committed

            Applied 1 step. The host runs ma_cross 1.0.0, risk_model 1.1.0.
        "#]],
        ),
        (
            "commit-sent",
            expect![[r#"
            [1/1] risk_model 1.0.0 → 1.1.0     (left by a previous run) committed

            Applied 1 step. The host runs ma_cross 1.0.0, risk_model 1.1.0.
        "#]],
        ),
        (
            "done",
            expect![[r#"
            In sync: nothing to apply. The host runs ma_cross 1.0.0, risk_model 1.1.0.
        "#]],
        ),
    ];
    let reference = reference_after_minor();
    for (phase, expected) in cases {
        let desk = desk_at_v1();
        desk.desire(V1_1);
        let crashed = reconcile_with(&desk, &[("PLUGSYNC_CRASH_AT", phase)], &[]);
        assert_eq!(crashed.status.code(), None, "{phase}: {}", crashed.stderr);
        assert!(
            crashed
                .stderr
                .contains(&format!("PLUGSYNC_CRASH_AT={phase}: aborting")),
            "{phase}: {}",
            crashed.stderr
        );
        let finished = reconcile(&desk, &[]);
        check(&desk, &finished, 0, expected);
        assert_eq!(
            versions(&desk),
            [pair("ma_cross", "1.0.0"), pair("risk_model", "1.1.0")],
            "{phase}"
        );
        for plugin in ["ma_cross", "risk_model"] {
            assert_eq!(
                desk.api.state(plugin),
                reference[plugin],
                "{phase}: {plugin}"
            );
        }
        assert!(
            failed_calls(&desk).iter().all(|(_, n)| *n == 0),
            "{phase}: {:?}",
            failed_calls(&desk)
        );
    }
}

/// risk_model 1.0.0 and ma_cross 2.0.0: where the faulty ma_cross 2.0.x fixtures migrate from.
const V2_0: &str = "  plugins:
    - {id: risk_model, version: 1.0.0, config: {max_position: 10}}
    - id: ma_cross
      version: 2.0.0
      config: {fast_period: 2, slow_period: 4, order_qty: 1}
";

/// ma_cross pinned to `version`, with a soak long enough for a test to act in it.
fn ma_cross_at(version: &str) -> String {
    format!(
        "  plugins:
    - {{id: risk_model, version: 1.0.0, config: {{max_position: 10}}}}
    - id: ma_cross
      version: {version}
      config: {{fast_period: 2, slow_period: 4, order_qty: 1}}
      verify: {{soak: {{duration: 60s, maxErrorRate: 0.001}}}}
"
    )
}

/// A desk at [`V2_0`], installed by `plugsync reconcile`, having traded, with the faulty
/// fixtures published (stable) beside the example versions.
fn desk_at_v2_0(fixtures: &[&str]) -> Desk {
    let desk = Desk::new();
    for fixture in fixtures {
        publish(desk.path(), fixture, "stable");
    }
    desk.desire(V2_0);
    let installed = reconcile(&desk, &[]);
    assert!(installed.status.success(), "{}", installed.stderr);
    desk.trade();
    desk
}

/// The plugins' states and the libraries the host has mapped.
fn snapshot(desk: &Desk) -> (Value, Value) {
    let states = json!({
        "ma_cross": desk.api.state("ma_cross"),
        "risk_model": desk.api.state("risk_model"),
    });
    (states, desk.api.status()["resident"].clone())
}

#[test]
fn a_release_that_panics_in_its_soak_is_rolled_back_by_the_host_its_state_exact_and_the_reconcile_stops()
 {
    let desk = desk_at_v2_0(&[FAULT_CALL]);
    desk.desire(&ma_cross_at("2.0.3"));
    let running = desk.reconcile_in_background(&[("PLUGSYNC_NOW", SATURDAY)], &[]);
    wait_until("ma_cross 2.0.3 soaks", || {
        !desk.api.plugin("ma_cross")["pending"].is_null()
    });
    let bar = json!({"bar": {"instrument": "ES", "close": 102.0}});
    desk.api
        .post("/v1/plugins/ma_cross/call", json!({"input": bar}));
    let crash = json!({"bar": {"instrument": "CRASH", "close": 1.0}});
    let (status, body) = desk
        .api
        .try_post("/v1/plugins/ma_cross/call", json!({"input": crash}));
    // 2.0.3 panics on it; the host rolls back at once and 2.0.0 answers it: no call fails.
    assert_eq!(status, 200, "{body}");
    let finished = running.finish();
    check(
        &desk,
        &finished,
        1,
        expect![[r#"
            [1/1] ma_cross 2.0.0 → 2.0.3       preflight ✓  staged ✓  switched (slot held [N] µs)
                  ✗ rolled back by the host: the new version panicked in call #6 (plugin panicked: call on instrument CRASH (fault injected by the ma_cross_fault_call fixture)); 1 call replayed into 2.0.0, 0 outputs differ; 2.0.0 serves, its state exact
                  ma_cross 2.0.3 marked failed on this host: not retried (clear: `plugsync retry ma_cross`, or change its entry in plugins.yaml)

            Reconcile failed at step 1 of 1 (ma_cross 2.0.0 → 2.0.3); 0 steps applied. The host runs ma_cross 2.0.0, risk_model 1.0.0 — a committed set.
            Kept: ma_cross 2.0.0: 2.0.3 marked failed by host at [TIME]: rolled back: the new version panicked in call #6 (plugin panicked: call on instrument CRASH (fault injected by the ma_cross_fault_call fixture)); not retried (clear: `plugsync retry ma_cross`, or change its entry)
        "#]],
    );
    assert_eq!(
        versions(&desk),
        [pair("ma_cross", "2.0.0"), pair("risk_model", "1.0.0")]
    );
    // 2.0.0 fed the same calls, the one 2.0.3 panicked on included (2.0.0 takes it).
    let (_dir, reference) = support::runtime();
    support::install(&reference, RISK_MODEL_1_0_0, json!({"max_position": 10}));
    support::install(
        &reference,
        MA_CROSS_2_0_0,
        json!({"fast_period": 2, "slow_period": 4, "order_qty": 1}),
    );
    for (plugin, input) in Desk::trade_inputs() {
        reference
            .call(plugin, input.to_string().as_bytes())
            .unwrap();
    }
    reference
        .call("ma_cross", bar.to_string().as_bytes())
        .unwrap();
    reference
        .call("ma_cross", crash.to_string().as_bytes())
        .unwrap();
    assert_eq!(
        desk.api.state("ma_cross"),
        states_of(&reference)["ma_cross"]
    );
}

#[test]
fn a_build_whose_migration_panics_is_stopped_in_preflight_and_never_reaches_the_host() {
    let desk = desk_at_v2_0(&[FAULT_MIGRATE]);
    let before = snapshot(&desk);
    desk.desire(&ma_cross_at("2.0.2"));
    let finished = reconcile(&desk, &[]);
    check(
        &desk,
        &finished,
        1,
        expect![[r#"
            [1/1] ma_cross 2.0.0 → 2.0.2
                  ✗ stopped at the preflight: migrating `ma_cross` 2.0.0 -> 2.0.2 (step 1 of 1) failed in the preview process: plugin `ma_cross` 2.0.2 failed in `migrate` (panic caught): plugin panicked: migration bug: cannot migrate 2.0.0 -> 2.0.2 (fault injected by the ma_cross_fault_migrate fixture)
                    nothing changed on the host
                  ma_cross 2.0.2 marked failed on this host: not retried (clear: `plugsync retry ma_cross`, or change its entry in plugins.yaml)

            Reconcile failed at step 1 of 1 (ma_cross 2.0.0 → 2.0.2); 0 steps applied. The host runs ma_cross 2.0.0, risk_model 1.0.0 — a committed set.
            Kept: ma_cross 2.0.0: 2.0.2 marked failed by default at [TIME]: preflight failed: migrating `ma_cross` 2.0.0 -> 2.0.2 (step 1 of 1) failed in the preview process: plugin `ma_cross` 2.0.2 failed in `migrate` (panic caught): plugin panicked: migration bug: cannot migrate 2.0.0 -> 2.0.2 (fault injected by the ma_cross_fault_migrate fixture); not retried (clear: `plugsync retry ma_cross`, or change its entry)
        "#]],
    );
    assert_eq!(snapshot(&desk), before, "the host changed");
}

#[test]
fn a_build_whose_migration_aborts_or_hangs_is_stopped_in_preflight_and_never_reaches_the_host() {
    let desk = Desk::new();
    publish(desk.path(), "ma_cross_fault_preview", "stable");
    desk.desire(V1);
    assert!(reconcile(&desk, &[]).status.success());
    desk.trade();
    let cases = [
        (
            "abort",
            expect![[r#"
                [1/1] ma_cross 1.0.0 → 2.0.10
                      ✗ stopped at the preflight: migrating `ma_cross` 1.0.0 -> 2.0.10 (step 1 of 1) crashed the preview process: signal 6 (SIGABRT); the live host was not touched: fix the plugin, or plan a path that avoids this step
                        nothing changed on the host
                      ma_cross 2.0.10 marked failed on this host: not retried (clear: `plugsync retry ma_cross`, or change its entry in plugins.yaml)

                Reconcile failed at step 1 of 1 (ma_cross 1.0.0 → 2.0.10); 0 steps applied. The host runs ma_cross 1.0.0, risk_model 1.0.0 — a committed set.
                Kept: ma_cross 1.0.0: 2.0.10 marked failed by default at [TIME]: preflight failed: migrating `ma_cross` 1.0.0 -> 2.0.10 (step 1 of 1) crashed the preview process: signal 6 (SIGABRT); the live host was not touched: fix the plugin, or plan a path that avoids this step; not retried (clear: `plugsync retry ma_cross`, or change its entry)
            "#]],
        ),
        (
            "hang",
            expect![[r#"
                [1/1] ma_cross 1.0.0 → 2.0.10
                      ✗ stopped at the preflight: migrating `ma_cross` 1.0.0 -> 2.0.10 (step 1 of 1) did not finish within 3s (the preview process was killed); the live host was not touched: if the migration is only slow, raise it with `--preview-timeout`
                        nothing changed on the host

                Reconcile failed at step 1 of 1 (ma_cross 1.0.0 → 2.0.10); 0 steps applied. The host runs ma_cross 1.0.0, risk_model 1.0.0 — a committed set.
            "#]],
        ),
    ];
    for (fault, expected) in cases {
        let before = snapshot(&desk);
        desk.desire(&ma_cross_at("2.0.10"));
        let finished = reconcile_with(
            &desk,
            &[("PLUGSYNC_FIXTURE_MIGRATE", fault)],
            &["--preview-timeout", "3s"],
        );
        check(&desk, &finished, 1, expected);
        assert_eq!(snapshot(&desk), before, "{fault}: the host changed");
        // A crash marks the version failed (a hang does not: it may only be slow); cleared
        // here so that the next case tries it again.
        if fault == "abort" {
            assert!(desk.operator(&["retry", "ma_cross"]).status.success());
        }
    }
}

/// A Wednesday, 10:00 in New York: inside the `trading-hours` deny window.
const WEDNESDAY_MORNING: &str = "2026-12-02T15:00:00Z";

/// [`V1_1`] under a policy that denies updates in New York's trading hours.
fn v1_1_outside_trading_hours() -> String {
    format!(
        "  policy:
    windows:
      - {{name: trading-hours, deny: true, days: [Mon, Tue, Wed, Thu, Fri], from: \"09:30\", to: \"16:00\", timezone: America/New_York}}
{V1_1}"
    )
}

#[test]
fn inside_a_deny_window_the_apply_is_refused_and_forced_with_a_reason_the_host_records() {
    let desk = desk_at_v1();
    desk.desire(&v1_1_outside_trading_hours());
    let wednesday = [("PLUGSYNC_NOW", WEDNESDAY_MORNING)];
    let refused = reconcile_with(&desk, &wednesday, &[]);
    check(
        &desk,
        &refused,
        1,
        expect![[r#"
        error: updates are not allowed now: deny window `trading-hours` is open, until 16:00 America/New_York ([TIME]); nothing was applied. Reconcile then, or now with `--force --reason TEXT` (recorded on the host)
    "#]],
    );
    assert_eq!(
        versions(&desk),
        [pair("ma_cross", "1.0.0"), pair("risk_model", "1.0.0")]
    );

    let forced = reconcile_with(
        &desk,
        &wednesday,
        &["--force", "--reason", "hotfix: ES limits"],
    );
    check(
        &desk,
        &forced,
        0,
        expect![[r#"
        [1/1] risk_model 1.0.0 → 1.1.0     preflight ✓  staged ✓  switched (slot held [N] µs)  soak 300ms ✓  committed

        Applied 1 step. The host runs ma_cross 1.0.0, risk_model 1.1.0.
    "#]],
    );
    let applied = &desk.api.plugin("risk_model")["applied"];
    assert_eq!(
        applied["origin"]["forced"], "hotfix: ES limits",
        "{applied}"
    );
    assert_eq!(applied["origin"]["tool"], "plugsync-reconcile", "{applied}");
}

#[test]
fn a_saved_plan_is_applied_only_while_it_is_still_the_plan() {
    let desk = desk_at_v1();
    desk.desire(V1_1);
    let plan = desk.path().join("plan.json");
    let plan_arg = plan.to_str().unwrap();
    let saved = reconcile(&desk, &["--dry-run", "--no-preview", "--out", plan_arg]);
    assert_eq!(saved.status.code(), Some(2), "{}", saved.stderr);

    // plugins.yaml edited since the plan was reviewed.
    desk.desire(&V1_1.replace("300ms", "400ms"));
    let edited = reconcile(&desk, &["--plan", plan_arg]);
    check(
        &desk,
        &edited,
        1,
        expect![[r#"
        error: the saved plan `[ROOT]/plan.json` ([HASH]) is not the plan now ([HASH]): plugins.yaml changed since it was saved; nothing was applied. Review the new plan with `plugsync reconcile --dry-run --out [ROOT]/plan.json`
    "#]],
    );

    // The host changed since.
    desk.desire(V1_1);
    desk.switch_by("ma_cross", MA_CROSS_1_0_0, "ops-script");
    let changed = reconcile(&desk, &["--plan", plan_arg]);
    check(
        &desk,
        &changed,
        1,
        expect![[r#"
        error: the saved plan `[ROOT]/plan.json` ([HASH]) is not the plan now ([HASH]): the host, the lock or the registry changed since it was saved; nothing was applied. Review the new plan with `plugsync reconcile --dry-run --out [ROOT]/plan.json`
    "#]],
    );
    assert_eq!(
        versions(&desk),
        [pair("ma_cross", "1.0.0"), pair("risk_model", "1.0.0")]
    );

    // Reviewed again: applied.
    let saved = reconcile(&desk, &["--dry-run", "--no-preview", "--out", plan_arg]);
    assert_eq!(saved.status.code(), Some(2), "{}", saved.stderr);
    let applied = reconcile(&desk, &["--plan", plan_arg]);
    check(
        &desk,
        &applied,
        0,
        expect![[r#"
        [1/1] risk_model 1.0.0 → 1.1.0     preflight ✓  staged ✓  switched (slot held [N] µs)  soak 300ms ✓  committed

        Applied 1 step. The host runs ma_cross 1.0.0, risk_model 1.1.0.
    "#]],
    );
}

#[test]
fn a_strategy_the_engine_does_not_run_yet_is_refused_by_name() {
    let desk = desk_at_v1();
    desk.desire(&V1_1.replace(
        "      verify: {soak: {duration: 300ms}}\n",
        "      verify: {soak: {duration: 300ms}}\n      strategy: {kind: blue-green, agreeingCalls: 100}\n",
    ));
    let refused = reconcile(&desk, &[]);
    check(
        &desk,
        &refused,
        1,
        expect![[r#"
        error: `risk_model` asks for the update strategy `blue-green`, which `plugsync reconcile` does not run yet: nothing was applied; use `strategy: {kind: immediate}` (or remove the key) for this plugin
    "#]],
    );
}

#[test]
fn two_clients_with_their_own_journals_take_turns_by_the_hosts_lease() {
    let desk = desk_at_v1();
    desk.desire(&V1_1.replace("300ms", "3s"));
    let alice_token = desk.path().join("alice.token");
    let alice_state = desk.path().join("alice-state");
    let alice = desk.reconcile_in_background(
        &[
            ("PLUGSYNC_NOW", SATURDAY),
            ("PLUGSYNC_STATE_DIR", alice_state.to_str().unwrap()),
        ],
        &["--token-file", alice_token.to_str().unwrap()],
    );
    wait_until("alice's step soaks", || {
        !desk.api.plugin("risk_model")["pending"].is_null()
    });
    let bob_token = desk.path().join("bob.token");
    let bob_state = desk.path().join("bob-state");
    let bob = |args: &[&str]| {
        let mut all = vec!["--token-file", bob_token.to_str().unwrap()];
        all.extend(args);
        reconcile_with(
            &desk,
            &[("PLUGSYNC_STATE_DIR", bob_state.to_str().unwrap())],
            &all,
        )
    };
    let refused = bob(&["--no-wait"]);
    check(
        &desk,
        &refused,
        1,
        expect![[r#"
            error: `alice` (its lease runs until [TIME] unless renewed) is reconciling the host at [HOST]: nothing was applied; run again without `--no-wait` to wait for it, or take its lease with `plugsync reconcile --break-lease --reason TEXT` if that client is gone
        "#]],
    );
    // Waiting, bob gets the lease once alice is done, and finds nothing left to do.
    let waited = bob(&[]);
    check(
        &desk,
        &waited,
        0,
        expect![[r#"
        In sync: nothing to apply. The host runs ma_cross 1.0.0, risk_model 1.1.0.
    "#]],
    );
    let alice = alice.finish();
    assert!(alice.status.success(), "{}", alice.stderr);
    assert_eq!(
        versions(&desk),
        [pair("ma_cross", "1.0.0"), pair("risk_model", "1.1.0")]
    );
}

#[test]
fn a_host_killed_mid_soak_comes_back_on_its_committed_set_and_the_reconcile_plans_again() {
    // The plugins opt in to checkpoints, and a clean stop writes one: a host restores what it
    // checkpointed (calls after a checkpoint die with a killed host, whatever plugsync does).
    let mut desk = Desk::new();
    desk.desire(&V1.replace(
        "config: {max_position: 10}}",
        "config: {max_position: 10}, update: {checkpointEvery: 1h}}",
    ).replace(
        "      config: {fast_ma_period: 2, slow_ma_period: 4, order_qty: 1}\n",
        "      config: {fast_ma_period: 2, slow_ma_period: 4, order_qty: 1}\n      update: {checkpointEvery: 1h}\n",
    ));
    assert!(reconcile(&desk, &[]).status.success());
    desk.trade();
    let stopped = desk.restart_host("TERM");
    assert!(stopped.status.success(), "{}", stopped.stderr);
    // A soak long enough that the kill lands in it even on a loaded machine (the kill follows
    // the first sight of the pending step; the step planned again soaks as long).
    desk.desire(&V1_1.replace("300ms", "15s"));
    let running = desk.reconcile_in_background(&[("PLUGSYNC_NOW", SATURDAY)], &[]);
    wait_until("risk_model 1.1.0 soaks", || {
        !desk.api.plugin("risk_model")["pending"].is_null()
    });
    desk.restart_host("KILL");
    let finished = running.finish();
    // The host applies the switch before plugsync journals its answer: the kill lands either
    // after that (the step found gone: interrupted, planned again) or before it (the switch
    // re-sent with its id to the restarted host, which applies it). Both end committed.
    if finished.stdout.contains("interrupted") {
        check(
            &desk,
            &finished,
            0,
            expect![[r#"
                [1/1] risk_model 1.0.0 → 1.1.0     preflight ✓  staged ✓  switched (slot held [N] µs)
                      ✗ interrupted: the host restarted during the soak and came back on its committed set (risk_model 1.0.0 runs); planned again
                [1/1] risk_model 1.0.0 → 1.1.0     preflight ✓  staged ✓  switched (slot held [N] µs)  soak 15s ✓  committed

                Applied 1 step. The host runs ma_cross 1.0.0, risk_model 1.1.0.
            "#]],
        );
    } else {
        check(
            &desk,
            &finished,
            0,
            expect![[r#"
                [1/1] risk_model 1.0.0 → 1.1.0     preflight ✓  staged ✓  switched (slot held [N] µs)  soak 15s ✓  committed

                Applied 1 step. The host runs ma_cross 1.0.0, risk_model 1.1.0.
            "#]],
        );
    }
    assert_eq!(
        versions(&desk),
        [pair("ma_cross", "1.0.0"), pair("risk_model", "1.1.0")]
    );
    let reference = reference_after_minor();
    for plugin in ["ma_cross", "risk_model"] {
        assert_eq!(desk.api.state(plugin), reference[plugin], "{plugin}");
    }
}

#[test]
fn on_failure_halt_rolls_back_then_halts_the_plugin_and_says_so() {
    let desk = desk_at_v2_0(&[FAULT_CALL]);
    desk.desire(
        &ma_cross_at("2.0.3").replace("      verify:", "      onFailure: halt\n      verify:"),
    );
    let running = desk.reconcile_in_background(&[("PLUGSYNC_NOW", SATURDAY)], &[]);
    wait_until("ma_cross 2.0.3 soaks", || {
        !desk.api.plugin("ma_cross")["pending"].is_null()
    });
    let crash = json!({"bar": {"instrument": "CRASH", "close": 1.0}});
    desk.api
        .try_post("/v1/plugins/ma_cross/call", json!({"input": crash}));
    let finished = running.finish();
    check(
        &desk,
        &finished,
        1,
        expect![[r#"
            [1/1] ma_cross 2.0.0 → 2.0.3       preflight ✓  staged ✓  switched (slot held [N] µs)
                  ✗ rolled back by the host: the new version panicked in call #5 (plugin panicked: call on instrument CRASH (fault injected by the ma_cross_fault_call fixture)); 0 calls replayed into 2.0.0, 0 outputs differ; 2.0.0 serves, its state exact
                  `ma_cross` HALTED on the host (onFailure: halt): every call to it is refused until an operator resumes it
                  ma_cross 2.0.3 marked failed on this host: not retried (clear: `plugsync retry ma_cross`, or change its entry in plugins.yaml)

            Reconcile failed at step 1 of 1 (ma_cross 2.0.0 → 2.0.3); 0 steps applied. The host runs ma_cross 2.0.0, risk_model 1.0.0 — a committed set.
            Kept: ma_cross 2.0.0: 2.0.3 marked failed by host at [TIME]: rolled back: the new version panicked in call #5 (plugin panicked: call on instrument CRASH (fault injected by the ma_cross_fault_call fixture)); not retried (clear: `plugsync retry ma_cross`, or change its entry)
        "#]],
    );
    let bar = json!({"bar": {"instrument": "ES", "close": 100.0}});
    let (status, body) = desk
        .api
        .try_post("/v1/plugins/ma_cross/call", json!({"input": bar}));
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("halted")),
        "{body}"
    );
}

/// Collects what `ops::reconcile` tells, for the in-process run.
#[derive(Default)]
struct Told {
    steps: Vec<String>,
    /// Each step's phases as it moved, by step id.
    phases: Vec<(String, String)>,
}

impl plugsync::ops::Progress for Told {
    fn step(&mut self, report: &plugsync::apply::StepReport) {
        self.steps.push(report.text());
    }

    fn working(&mut self, report: &plugsync::apply::StepReport) {
        let phase = report.phase.map_or("none".to_owned(), |p| p.to_string());
        self.phases.push((report.step_id.clone(), phase));
    }

    fn notice(&mut self, _: &str) {}
}

#[test]
fn the_same_engine_applies_through_a_runtime_in_this_process() {
    use plugsync::apply::InProcessHost;
    use plugsync::ops::{ReconcileOptions, reconcile};
    use plugsync_host::TrustedKeys;

    // The registry and plugins.yaml of a desk; the host is a runtime of this process.
    let desk = Desk::new();
    desk.desire(V1);
    let (_store, runtime) = support::runtime();
    let port = InProcessHost::new(runtime.clone(), "embedded", TrustedKeys::none()).unwrap();
    let options = |file: &str| ReconcileOptions {
        file: desk.path().join(file),
        locked: false,
        state_dir: desk.path().join("in-process-state"),
        trusted_keys: None,
        registry_ca: None,
        plan: None,
        force: None,
        no_wait: true,
        preflight: true,
        preflight_timeout: std::time::Duration::from_secs(30),
        exe: support::process::PLUGSYNC.into(),
        now: SATURDAY.parse().unwrap(),
        limits: Default::default(),
        crash_at: None,
        lease_ttl: std::time::Duration::from_secs(30),
        stop: plugsync::apply::Stop::new(),
    };
    let mut told = Told::default();
    let installed = reconcile(&options("plugins.yaml"), &port, &mut told).unwrap();
    assert!(!installed.failed, "{installed:?}");
    for (plugin, input) in Desk::trade_inputs() {
        runtime.call(plugin, input.to_string().as_bytes()).unwrap();
    }
    desk.desire(V2);
    let upgraded = reconcile(&options("plugins.yaml"), &port, &mut told).unwrap();
    assert!(!upgraded.failed, "{upgraded:?}");
    expect![[r#"
        [1/2] risk_model 1.0.0 (install)   preflight ✓  staged ✓  installed  committed
        [2/2] ma_cross 1.0.0 (install)     preflight ✓  staged ✓  installed  committed
        [1/3] ma_cross 1.0.0 → 2.0.0       preflight ✓  staged ✓  switched (slot held [N] µs)  soak 300ms ✓  committed
        [2/3] risk_model 1.0.0 → 2.0.0     preflight ✓  staged ✓  switched (slot held [N] µs)  soak 300ms ✓  committed
        [3/3] ma_cross 2.0.0 → 2.1.0       preflight ✓  staged ✓  switched (slot held [N] µs)  soak 300ms ✓  committed"#]].assert_eq(&normalise_apply(&told.steps.join("\n")));
    assert_eq!(upgraded.running, ["ma_cross 2.1.0", "risk_model 2.0.0"]);
    // Every step went through every phase of a successful step, in order, each once.
    for step in &upgraded.steps {
        let phases: Vec<&str> = (told.phases.iter())
            .filter(|(id, _)| *id == step.step_id)
            .map(|(_, phase)| phase.as_str())
            .collect();
        assert_eq!(
            phases,
            [
                "planned",
                "preflighted",
                "staged",
                "switch-sent",
                "soaking",
                "commit-sent"
            ],
            "{}",
            step.title
        );
    }
    let reference = reference_after_upgrade();
    assert_eq!(states_of(&runtime), reference);
    // The host's records name the embedded client and the reconciler.
    let applied = runtime.status().plugins[0].applied.clone().unwrap();
    let origin = applied.origin.unwrap();
    assert_eq!(
        (origin.tool.as_str(), origin.client.as_deref()),
        ("plugsync-reconcile", Some("embedded"))
    );
}

#[test]
fn the_result_as_json_names_each_step_its_marks_and_outcome() {
    let desk = desk_at_v1();
    desk.desire(V1_1);
    let finished = reconcile(&desk, &["--output", "json"]);
    assert!(finished.status.success(), "{}", finished.stderr);
    let mut result: Value = serde_json::from_str(&finished.stdout).unwrap();
    result["plan_id"] = json!("[ID]");
    result["steps"][0]["step_id"] = json!("[ID]");
    result["steps"][0]["marks"][2] = json!("switched (slot held [N] µs)");
    expect![[r#"
        {
          "failed": false,
          "plan_id": "[ID]",
          "running": [
            "ma_cross 1.0.0",
            "risk_model 1.1.0"
          ],
          "steps": [
            {
              "marks": [
                "preflight ✓",
                "staged ✓",
                "switched (slot held [N] µs)",
                "soak 300ms ✓",
                "committed"
              ],
              "number": 1,
              "of": 1,
              "outcome": "done",
              "phase": "done",
              "plugin": "risk_model",
              "resumed": false,
              "step_id": "[ID]",
              "title": "risk_model 1.0.0 → 1.1.0"
            }
          ]
        }"#]]
    .assert_eq(&serde_json::to_string_pretty(&result).unwrap());
}

#[test]
fn a_deny_window_that_opens_while_the_reconcile_runs_stops_the_steps_left() {
    let desk = desk_at_v1();
    desk.desire(&format!(
        "  policy:
    windows:
      - {{name: trading-hours, deny: true, days: [Mon, Tue, Wed, Thu, Fri], from: \"09:30\", to: \"16:00\", timezone: America/New_York}}
{}",
        V2.replace("{duration: 300ms, maxErrorRate", "{duration: 15s, maxErrorRate")
    ));
    // Ten seconds before the window opens; the first step soaks fifteen.
    let finished = reconcile_with(&desk, &[("PLUGSYNC_NOW", "2026-12-02T14:29:50Z")], &[]);
    check(
        &desk,
        &finished,
        1,
        expect![[r#"
            [1/3] ma_cross 1.0.0 → 2.0.0       preflight ✓  staged ✓  switched (slot held [N] µs)  soak 15s ✓  committed
            [2/3] risk_model 1.0.0 → 2.0.0
                  ✗ stopped at the policy window: deny window `trading-hours` opened while the reconcile ran: the steps left wait for the next reconcile (or `--force --reason TEXT`)
                    nothing changed on the host
            [3/3] ma_cross 2.0.0 → 2.1.0 not started

            Reconcile failed at step 2 of 3 (risk_model 1.0.0 → 2.0.0); 1 step applied. The host runs ma_cross 2.0.0, risk_model 1.0.0 — a committed set.
        "#]],
    );
    assert_eq!(
        versions(&desk),
        [pair("ma_cross", "2.0.0"), pair("risk_model", "1.0.0")]
    );
}

#[test]
fn a_plugin_plugins_yaml_no_longer_names_is_unloaded_when_prune_is_on() {
    let desk = desk_at_v1();
    desk.desire(
        "  policy: {prune: true}
  plugins:
    - {id: risk_model, version: 1.0.0, config: {max_position: 10}}
",
    );
    let finished = reconcile(&desk, &[]);
    check(
        &desk,
        &finished,
        0,
        expect![[r#"
        [1/1] ma_cross 1.0.0 (remove)      unloaded

        Applied 1 step. The host runs risk_model 1.0.0.
    "#]],
    );
    assert_eq!(versions(&desk), [pair("risk_model", "1.0.0")]);
}

#[test]
fn a_build_that_fails_its_probe_is_stopped_in_preflight_or_refused_by_the_hosts_verification() {
    let desk = desk_at_v2_0(&[FAULT_PROBE]);
    let probe = serde_json::to_string(&crossing_up_probe(1)).unwrap();
    let with_probe = ma_cross_at("2.0.4").replace(
        "      verify: {soak: {duration: 60s, maxErrorRate: 0.001}}",
        &format!("      verify: {{probes: [{probe}]}}"),
    );
    desk.desire(&with_probe);
    let cases = [
        // Caught before the host sees the build.
        (
            vec![],
            expect![[r#"
                [1/1] ma_cross 2.0.0 → 2.0.4
                      ✗ stopped at the preflight: migrating `ma_cross` 2.0.0 -> 2.0.4 (step 1 of 1) failed in the preview process: verification of `ma_cross` 2.0.4 failed, the running version keeps serving: probe `a fresh instance buys on a cross up` step 4: expected {"orders":[{"instrument":"ES","order_id":1,"qty":1}]}, got {"orders":[{"instrument":"ES","order_id":1,"qty":-1}]}
                        nothing changed on the host
                      ma_cross 2.0.4 marked failed on this host: not retried (clear: `plugsync retry ma_cross`, or change its entry in plugins.yaml)

                Reconcile failed at step 1 of 1 (ma_cross 2.0.0 → 2.0.4); 0 steps applied. The host runs ma_cross 2.0.0, risk_model 1.0.0 — a committed set.
                Kept: ma_cross 2.0.0: 2.0.4 marked failed by default at [TIME]: preflight failed: migrating `ma_cross` 2.0.0 -> 2.0.4 (step 1 of 1) failed in the preview process: verification of `ma_cross` 2.0.4 failed, the running version keeps serving: probe `a fresh instance buys on a cross up` step 4: expected {"orders":[{"instrument":"ES","order_id":1,"qty":1}]}, got {"orders":[{"instrument":"ES","order_id":1,"qty":-1}]}; not retried (clear: `plugsync retry ma_cross`, or change its entry)
            "#]],
        ),
        // Without the preflight, the host's own verification refuses the switch.
        (
            vec!["--no-preflight"],
            expect![[r#"
                [1/1] ma_cross 2.0.0 → 2.0.4       not preflighted  staged ✓
                      ✗ stopped at the switch: the host refused it (`verification_failed`): verification of `ma_cross` 2.0.4 failed, the running version keeps serving: probe `a fresh instance buys on a cross up` step 4: expected {"orders":[{"instrument":"ES","order_id":1,"qty":1}]}, got {"orders":[{"instrument":"ES","order_id":1,"qty":-1}]}
                        nothing changed on the host
                      ma_cross 2.0.4 marked failed on this host: not retried (clear: `plugsync retry ma_cross`, or change its entry in plugins.yaml)

                Reconcile failed at step 1 of 1 (ma_cross 2.0.0 → 2.0.4); 0 steps applied. The host runs ma_cross 2.0.0, risk_model 1.0.0 — a committed set.
                Kept: ma_cross 2.0.0: 2.0.4 marked failed by host at [TIME]: verification failed: probe `a fresh instance buys on a cross up` step 4: expected {"orders":[{"instrument":"ES","order_id":1,"qty":1}]}, got {"orders":[{"instrument":"ES","order_id":1,"qty":-1}]}; not retried (clear: `plugsync retry ma_cross`, or change its entry)
            "#]],
        ),
    ];
    for (args, expected) in cases {
        let states = snapshot(&desk).0;
        let finished = reconcile(&desk, &args);
        check(&desk, &finished, 1, expected);
        // Marked failed either way (by plugsync's preflight, or the host's verification);
        // cleared so that the next case tries it again.
        let retried = desk.operator(&["retry", "ma_cross"]);
        assert!(retried.status.success(), "{}", retried.stderr);
        assert_eq!(snapshot(&desk).0, states, "{args:?}: a state changed");
        assert_eq!(
            versions(&desk),
            [pair("ma_cross", "2.0.0"), pair("risk_model", "1.0.0")]
        );
    }
}

#[test]
fn a_step_pending_on_the_host_that_this_client_did_not_start_is_never_called_in_sync() {
    let desk = desk_at_v1();
    // Another tool switched risk_model to what plugins.yaml asks, and has not committed.
    let artifact = desk.api.stage(&lib(RISK_MODEL_1_1_0));
    desk.api.post(
        "/v1/steps/by-hand/switch",
        json!({"plugin": "risk_model", "artifact": artifact, "config": {"max_position": 10},
               "lease_ms": 600_000, "origin": {"tool": "ops-script"}}),
    );
    desk.desire(&V1_1.replace("      verify: {soak: {duration: 300ms}}\n", ""));
    let refused = reconcile(&desk, &[]);
    check(
        &desk,
        &refused,
        1,
        expect![[r#"
        error: `risk_model` has a step in progress on the host (step `by-hand`) that this client did not start: nothing was applied; wait for its commit or rollback, then reconcile again
    "#]],
    );
}

#[test]
fn the_steps_of_one_wave_run_together_up_to_max_parallel() {
    let desk = Desk::new();
    publish(desk.path(), "quote_counter", "stable");
    // Two plugins that need nothing of each other: one wave of two installs.
    desk.desire(
        "  policy: {maxParallel: 2}
  plugins:
    - {id: risk_model, version: 1.0.0, config: {max_position: 10}, verify: {soak: {duration: 3s}}}
    - {id: quote_counter, version: 1.0.0, verify: {soak: {duration: 3s}}}
",
    );
    let running = desk.reconcile_in_background(&[("PLUGSYNC_NOW", SATURDAY)], &[]);
    // Both soak at once: one wave, not one step after the other.
    wait_until("both installs are pending at once", || {
        let status = desk.api.status();
        let pending = |id: &str| {
            status["plugins"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["plugin"] == id && !p["pending"].is_null())
        };
        pending("risk_model") && pending("quote_counter")
    });
    let finished = running.finish();
    check(
        &desk,
        &finished,
        0,
        expect![[r#"
        [1/2] risk_model 1.0.0 (install)   preflight ✓  staged ✓  installed  soak 3s ✓  committed
        [2/2] quote_counter 1.0.0 (install) preflight ✓  staged ✓  installed  soak 3s ✓  committed

        Applied 2 steps. The host runs quote_counter 1.0.0, risk_model 1.0.0.
    "#]],
    );
}

#[test]
fn a_frozen_host_is_not_changed_unless_forced_with_a_reason_it_records() {
    let desk = desk_at_v1();
    desk.api.post(
        "/v1/restraints",
        json!({"action": "freeze", "reason": "quarter-end close"}),
    );
    desk.desire(V1_1);
    let refused = reconcile(&desk, &[]);
    check(
        &desk,
        &refused,
        1,
        expect![[r#"
            error: the host is frozen by default: quarter-end close; nothing was applied. Lift it with `plugsync unfreeze` once it is over, or go ahead with `--force --reason TEXT` (recorded on the host)
        "#]],
    );
    let forced = reconcile(
        &desk,
        &["--force", "--reason", "limits fix, approved by risk"],
    );
    check(
        &desk,
        &forced,
        0,
        expect![[r#"
        [1/1] risk_model 1.0.0 → 1.1.0     preflight ✓  staged ✓  switched (slot held [N] µs)  soak 300ms ✓  committed

        Applied 1 step. The host runs ma_cross 1.0.0, risk_model 1.1.0.
    "#]],
    );
    let restraints = &desk.api.status()["restraints"];
    let forced = &restraints["forced"][0];
    assert_eq!(
        (&forced["plugin"], &forced["because"]["reason"]),
        (&json!("risk_model"), &json!("limits fix, approved by risk")),
        "{restraints}"
    );
}

#[test]
fn signed_artifacts_are_checked_here_then_staged_with_their_signature_for_the_host_to_check() {
    let desk = Desk::signed();
    let keys = desk.path().join("k.pub");
    let keys = keys.to_str().unwrap();
    desk.desire(V1);
    // The host trusts only `k`: each artifact staged carried its signature, or it would have
    // been refused there.
    let installed = reconcile(&desk, &["--trusted-keys", keys]);
    check(
        &desk,
        &installed,
        0,
        expect![[r#"
        [1/2] risk_model 1.0.0 (install)   preflight ✓  staged ✓  installed  committed
        [2/2] ma_cross 1.0.0 (install)     preflight ✓  staged ✓  installed  committed

        Applied 2 steps. The host runs ma_cross 1.0.0, risk_model 1.0.0.
    "#]],
    );
    // A release published without a signature: refused here, before the host sees it.
    publish(desk.path(), FAULT_CALL, "stable");
    desk.desire(&ma_cross_at("2.0.3"));
    let unsigned = reconcile(&desk, &["--trusted-keys", keys]);
    check(
        &desk,
        &unsigned,
        1,
        expect![[r#"
        error: `ma_cross` 2.0.3 (sha256 [HASH]) is not signed: publish it signed (`plugsync publish --sign-key`) by a key in `--trusted-keys`, or pin a version that is
    "#]],
    );
}
