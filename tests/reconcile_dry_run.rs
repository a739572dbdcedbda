//! `plugsync reconcile --dry-run` through the binary, against a real reference host running the
//! real example plugins and a registry directory they were published to: the plan's text and
//! JSON, its exit codes, and every refusal.
//!
//! Every host runs with `--feed off`; the plugins' states come from calls the test makes
//! (`--allow-calls`), so previews are deterministic. Time comes from `PLUGSYNC_NOW` (a
//! Saturday, outside the example's weekday window, unless a test says otherwise); host times,
//! the host's URL and temporary paths are normalised in the snapshots.

mod support;

use std::path::PathBuf;

use expect_test::expect;
use serde_json::{Value, json};
use support::desk::*;
use support::process::{Finished, plugsync};
use support::*;

/// A Wednesday, 10:00 in New York: inside the example's `trading-hours` deny window.
const WEDNESDAY_MORNING: &str = "2026-12-02T15:00:00Z";

const PINNED_V2: &str = "  plugins:
    - {id: risk_model, version: 2.0.0, config: {max_position: 10}}
    - id: ma_cross
      version: 2.1.0
      config: {fast_period: 2, slow_period: 4, order_qty: 1}
      verify: {soak: {duration: 10s, maxErrorRate: 0.001}}
";

#[test]
fn the_interleaved_upgrade_is_planned_with_each_migration_previewed_on_the_live_state() {
    let desk = Desk::at_v1();
    desk.desire(PINNED_V2);
    let finished = desk.dry_run(&[]);
    desk.check(&finished, 2, expect![[r#"
        Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/plugins.yaml (no plugins.lock: versions resolved afresh)

          ~ risk_model  1.0.0 → 2.0.0  pinned                        1 step
          ~ ma_cross    1.0.0 → 2.1.0  pinned                        2 steps (via 2.0.0)

        Set:
          --- running
          +++ desired
          @@ -1,2 +1,2 @@
          -risk_model 1.0.0
          -ma_cross 1.0.0 config {"fast_ma_period":2,"order_qty":1,"slow_ma_period":4}
          +risk_model 2.0.0
          +ma_cross 2.1.0 config {"fast_period":2,"order_qty":1,"slow_period":4}

        Order (each intermediate set satisfies every dependency):

           1. ma_cross    1.0.0 → 2.0.0      major  migrate   on the way to 2.1.0; 1.0.0 needs risk_model >=1.0, <2, which step 2 breaks: moves first
               switch: immediate; verify: health, soak 10s, max error rate 0.1 %
               config (migrated by 2.0.0):
                 /fast_ma_period: renamed `fast_period` (2)
                 /slow_ma_period: renamed `slow_period` (4)
                 /signal_threshold: added 0.01
               state (live snapshot, migrated in a sandbox):
                 /fast_ma_period: renamed `fast_period` (2)
                 /slow_ma_period: renamed `slow_period` (4)
                 /signal_threshold: added 0.01
           2. risk_model  1.0.0 → 2.0.0      major  migrate   pinned
               switch: immediate; verify: health
               config (from plugins.yaml): unchanged
               state (live snapshot, migrated in a sandbox):
                 /instruments/ES/notional: added 99.5
                 /max_position: removed (was 10)
                 /limits: added {"max_notional":1000000.0,"max_position":10}
           3. ma_cross    2.0.0 → 2.1.0      minor  migrate   pinned; needs risk_model >=2.0, <3 (after step 2)
               switch: immediate; verify: health, soak 10s, max error rate 0.1 %
               config (from plugins.yaml):
                 /signal_threshold: removed (was 0.01)
               state (live snapshot, migrated in a sandbox):
                 /instruments/ES/last_close: added 99.5

        Plan: 0 to install, 2 to upgrade, 0 to downgrade, 0 to reconfigure, 0 to remove (3 steps), 0 unchanged. Plan id [ID].
    "#]]);
}

#[test]
fn a_host_that_runs_what_plugins_yaml_asks_is_in_sync_with_exit_0() {
    let desk = Desk::at_v1();
    desk.desire(
        "  plugins:
    - {id: risk_model, version: 1.0.0, config: {max_position: 10}}
    - {id: ma_cross, version: 1.0.0, config: {fast_ma_period: 2, slow_ma_period: 4, order_qty: 1}}
",
    );
    let finished = desk.dry_run(&[]);
    desk.check(
        &finished,
        0,
        expect![[r#"
            Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
            Desired [ROOT]/plugins.yaml (no plugins.lock: versions resolved afresh)

                risk_model  1.0.0  unchanged
                ma_cross    1.0.0  unchanged

            No changes: the host runs what plugins.yaml asks (2 plugins). Plan id [ID].
        "#]],
    );
}

#[test]
fn a_fresh_install_puts_the_dependency_first() {
    let desk = Desk::new();
    desk.desire(PINNED_V2);
    let finished = desk.dry_run(&[]);
    desk.check(&finished, 2, expect![[r#"
        Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/plugins.yaml (no plugins.lock: versions resolved afresh)

          + risk_model  2.0.0  pinned                        1 step
          + ma_cross    2.1.0  pinned                        1 step

        Set:
          --- running
          +++ desired
          @@ -0,0 +1,2 @@
          +risk_model 2.0.0
          +ma_cross 2.1.0

        Order (each intermediate set satisfies every dependency):

           1. risk_model  → 2.0.0            install          pinned
               switch: immediate; verify: health
               config: {"max_position":10}
           2. ma_cross    → 2.1.0            install          pinned; needs risk_model >=2.0, <3 (after step 1)
               switch: immediate; verify: health, soak 10s, max error rate 0.1 %
               config: {"fast_period":2,"order_qty":1,"slow_period":4}

        Plan: 2 to install, 0 to upgrade, 0 to downgrade, 0 to reconfigure, 0 to remove (2 steps), 0 unchanged. Plan id [ID].
    "#]]);
}

#[test]
fn a_downgrade_runs_the_running_versions_own_migration_down() {
    let desk = Desk::new();
    desk.install(RISK_MODEL_1_0_0, json!({"max_position": 10}));
    desk.install(MA_CROSS_2_0_0, json!({"fast_period": 2, "slow_period": 4}));
    desk.trade();
    desk.desire(
        "  plugins:
    - {id: risk_model, version: 1.0.0, config: {max_position: 10}}
    - {id: ma_cross, version: 1.0.0}
",
    );
    let finished = desk.dry_run(&[]);
    desk.check(&finished, 2, expect![[r#"
        Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/plugins.yaml (no plugins.lock: versions resolved afresh)

            risk_model  1.0.0          unchanged
          ~ ma_cross    2.0.0 → 1.0.0  pinned                        1 step

        Set:
          --- running
          +++ desired
          @@ -1,2 +1,2 @@
           risk_model 1.0.0
          -ma_cross 2.0.0
          +ma_cross 1.0.0

        Order (each intermediate set satisfies every dependency):

           1. ma_cross  2.0.0 → 1.0.0      major  migrate   pinned
               switch: immediate; verify: health
               config (migrated by 2.0.0):
                 /fast_period: renamed `fast_ma_period` (2)
                 /slow_period: renamed `slow_ma_period` (4)
               state (live snapshot, migrated in a sandbox):
                 /fast_period: renamed `fast_ma_period` (2)
                 /signal_threshold: removed (was 0.01)
                 /slow_period: renamed `slow_ma_period` (4)

        Plan: 0 to install, 0 to upgrade, 1 to downgrade, 0 to reconfigure, 0 to remove (1 step), 1 unchanged. Plan id [ID].
    "#]]);
}

#[test]
fn a_config_change_alone_is_a_reconfigure_with_its_diff() {
    let desk = Desk::at_v1();
    desk.desire(
        "  plugins:
    - {id: risk_model, version: 1.0.0, config: {max_position: 25}}
    - {id: ma_cross, version: 1.0.0, config: {fast_ma_period: 2, slow_ma_period: 4, order_qty: 1}}
",
    );
    let finished = desk.dry_run(&[]);
    desk.check(&finished, 2, expect![[r#"
        Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/plugins.yaml (no plugins.lock: versions resolved afresh)

          ~ risk_model  1.0.0  config changed                1 step
            ma_cross    1.0.0  unchanged

        Set:
          --- running
          +++ desired
          @@ -1,2 +1,2 @@
          -risk_model 1.0.0 config {"max_position":10}
          +risk_model 1.0.0 config {"max_position":25}
           ma_cross 1.0.0

        Order (each intermediate set satisfies every dependency):

           1. risk_model  1.0.0              reconfigure      config changed
               switch: immediate; verify: health
               config:
                 /max_position: 10 → 25

        Plan: 0 to install, 0 to upgrade, 0 to downgrade, 1 to reconfigure, 0 to remove (1 step), 1 unchanged. Plan id [ID].
    "#]]);
}

#[test]
fn a_plugin_plugins_yaml_no_longer_names_is_removed_only_with_prune() {
    let desk = Desk::at_v1();
    let only_risk = |prune: &str| {
        format!(
            "  policy: {{prune: {prune}}}\n  plugins:\n    - {{id: risk_model, version: 1.0.0, config: {{max_position: 10}}}}\n"
        )
    };
    desk.desire(&only_risk("false"));
    let kept = desk.dry_run(&[]);
    desk.check(
        &kept,
        0,
        expect![[r#"
            Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
            Desired [ROOT]/plugins.yaml (no plugins.lock: versions resolved afresh)

                risk_model  1.0.0  unchanged
                ma_cross    1.0.0  not in plugins.yaml: kept (`policy.prune` is off)

            No changes: the host runs what plugins.yaml asks (1 plugin). Plan id [ID].
        "#]],
    );
    desk.desire(&only_risk("true"));
    let removed = desk.dry_run(&[]);
    desk.check(&removed, 2, expect![[r#"
        Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/plugins.yaml (no plugins.lock: versions resolved afresh)

            risk_model  1.0.0  unchanged
          - ma_cross    1.0.0  not in plugins.yaml: removed (`policy.prune`)  1 step

        Set:
          --- running
          +++ desired
          @@ -1,2 +1 @@
           risk_model 1.0.0
          -ma_cross 1.0.0

        Order (each intermediate set satisfies every dependency):

           1. ma_cross  1.0.0 →            remove           not in plugins.yaml (`policy.prune`)

        Plan: 0 to install, 0 to upgrade, 0 to downgrade, 0 to reconfigure, 1 to remove (1 step), 1 unchanged. Plan id [ID].
    "#]]);
}

#[test]
fn drift_names_a_change_made_by_hand_and_who_made_it() {
    let desk = Desk::at_v1();
    desk.switch_by("risk_model", RISK_MODEL_1_1_0, "ops-script");
    desk.desire(
        "  plugins:
    - {id: risk_model, version: 1.0.0, config: {max_position: 10}}
    - {id: ma_cross, version: 1.0.0, config: {fast_ma_period: 2, slow_ma_period: 4, order_qty: 1}}
",
    );
    let finished = desk.dry_run(&["--no-preview"]);
    desk.check(&finished, 2, expect![[r#"
        Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/plugins.yaml (no plugins.lock: versions resolved afresh)

          ~ risk_model  1.1.0 → 1.0.0  pinned                        1 step
            ma_cross    1.0.0          unchanged

        Set:
          --- running
          +++ desired
          @@ -1,2 +1,2 @@
          -risk_model 1.1.0
          +risk_model 1.0.0
           ma_cross 1.0.0

        Order (each intermediate set satisfies every dependency):

           1. risk_model  1.1.0 → 1.0.0      minor  migrate   pinned
               switch: immediate; verify: health

        Drift (runs other than the reconciler left it):
          risk_model (at [TIME]): last change `commit` by `ops-script` (client `default`), not the reconciler

        Plan: 0 to install, 0 to upgrade, 1 to downgrade, 0 to reconfigure, 0 to remove (1 step), 1 unchanged. Plan id [ID].
    "#]]);
}

#[test]
fn plugins_loaded_at_the_hosts_start_are_drift_until_the_reconciler_applies_them() {
    let risk = lib(RISK_MODEL_1_0_0);
    let desk = Desk::with_host_args(&["--load", risk.to_str().unwrap()]);
    desk.desire("  plugins:\n    - {id: risk_model, version: 1.0.0}\n");
    let finished = desk.dry_run(&[]);
    desk.check(&finished, 0, expect![[r#"
        Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/plugins.yaml (no plugins.lock: versions resolved afresh)

            risk_model  1.0.0  unchanged, drifted (see Drift)

        Drift (runs other than the reconciler left it):
          risk_model (at [TIME]): last change `load` by the host itself (`--load` or in-process code), not the reconciler

        No changes: the host runs what plugins.yaml asks (1 plugin). Plan id [ID].
    "#]]);
}

#[test]
fn a_jump_past_allow_is_refused_naming_where_allow_came_from_and_the_fix() {
    let desk = Desk::at_v1();
    desk.desire(
        "  plugins:
    - {id: risk_model, channel: stable, config: {max_position: 10}}
    - {id: ma_cross, version: 2.0.0}
",
    );
    let finished = desk.dry_run(&[]);
    desk.check(&finished, 1, expect![[r#"
        error: `risk_model` from 1.0.0 to 2.0.0 is a major jump, but `risk_model` allows `minor` (the default, as nothing in plugins.yaml says): pin `version: 2.0.0` in plugins.yaml or set `allow: major`
    "#]]);
}

#[test]
fn no_path_names_the_missing_transition() {
    let desk = Desk::at_v1();
    let yanked = plugsync(
        &[
            "yank".as_ref(),
            "ma_cross".as_ref(),
            "2.0.0".as_ref(),
            "--registry".as_ref(),
            desk.path().join("registry").as_os_str(),
        ],
        &[],
    );
    assert!(yanked.status.success(), "{}", yanked.stderr);
    desk.desire(PINNED_V2);
    let finished = desk.dry_run(&[]);
    desk.check(&finished, 1, expect![[r#"
        error: no transition reaches `ma_cross` 2.1.0 from 1.0.0: 2.1.0 migrates from `>=2.0.0, <2.1.0` only, and no published version between them connects (2.0.0 is yanked): publish a version that migrates from 1.0.0, add a migration from 1.0.0 to 2.1.0 to its `migrations` in plugins.yaml, or set `update.freshState: 2.1.0` to start it from a fresh state
    "#]]);
}

#[test]
fn two_upgrades_that_can_only_switch_together_are_refused_naming_the_pair() {
    let desk = Desk::at_v1();
    // risk_model 2.0.0 published as needing ma_cross 2.1.0, which needs risk_model 2.x: neither
    // can go first.
    let index = desk.path().join("registry/index/risk_model.json");
    let mut file: Value = serde_json::from_slice(&std::fs::read(&index).unwrap()).unwrap();
    for entry in file["versions"].as_array_mut().unwrap() {
        if entry["version"] == "2.0.0" {
            entry["dependencies"] = json!({"ma_cross": ">=2.1"});
        }
    }
    std::fs::write(&index, serde_json::to_vec_pretty(&file).unwrap()).unwrap();
    desk.desire(PINNED_V2);
    let finished = desk.dry_run(&["--no-preview"]);
    desk.check(&finished, 1, expect![[r#"
        error: no order of the steps keeps every dependency met: `risk_model` 2.0.0 needs `ma_cross >=2.1`, but `ma_cross` 2.1.0 needs `risk_model >=2.0, <3`: publish a version of `risk_model` or `ma_cross` that runs beside the other's current version, or change them in two reconciles (switching both at once is not supported yet)
    "#]]);
}

#[test]
fn a_deny_window_open_now_is_shown_with_when_it_closes() {
    let desk = Desk::at_v1();
    desk.desire(&format!(
        "  policy:
    windows:
      - {{name: trading-hours, deny: true, days: [Mon, Tue, Wed, Thu, Fri], from: \"09:30\", to: \"16:00\", timezone: America/New_York}}
{PINNED_V2}"
    ));
    let finished = desk.dry_run_at(WEDNESDAY_MORNING, &["--no-preview"]);
    desk.check(&finished, 2, expect![[r#"
        Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/plugins.yaml (no plugins.lock: versions resolved afresh)

          ~ risk_model  1.0.0 → 2.0.0  pinned                        1 step
          ~ ma_cross    1.0.0 → 2.1.0  pinned                        2 steps (via 2.0.0)

        Set:
          --- running
          +++ desired
          @@ -1,2 +1,2 @@
          -risk_model 1.0.0
          -ma_cross 1.0.0 config {"fast_ma_period":2,"order_qty":1,"slow_ma_period":4}
          +risk_model 2.0.0
          +ma_cross 2.1.0 config {"fast_period":2,"order_qty":1,"slow_period":4}

        Order (each intermediate set satisfies every dependency):

           1. ma_cross    1.0.0 → 2.0.0      major  migrate   on the way to 2.1.0; 1.0.0 needs risk_model >=1.0, <2, which step 2 breaks: moves first
               switch: immediate; verify: health, soak 10s, max error rate 0.1 %
           2. risk_model  1.0.0 → 2.0.0      major  migrate   pinned
               switch: immediate; verify: health
           3. ma_cross    2.0.0 → 2.1.0      minor  migrate   pinned; needs risk_model >=2.0, <3 (after step 2)
               switch: immediate; verify: health, soak 10s, max error rate 0.1 %
               config:
                 /fast_ma_period: renamed `fast_period` (2)
                 /slow_ma_period: renamed `slow_period` (4)

        Waits: deny window `trading-hours` is open now; reconcile would wait until 16:00 America/New_York (2026-12-02 21:00:00 UTC, in 6h) or need `--force`

        Plan: 0 to install, 2 to upgrade, 0 to downgrade, 0 to reconfigure, 0 to remove (3 steps), 0 unchanged. Plan id [ID].
    "#]]);
}

#[test]
fn a_stale_lock_is_refused_and_locked_needs_a_lock() {
    let desk = Desk::at_v1();
    desk.desire(PINNED_V2);
    let locked = desk.dry_run(&["--locked", "--no-preview"]);
    desk.check(&locked, 1, expect![[r#"
        error: `--locked` needs a plugins.lock, and there is none at `[ROOT]/plugins.lock`: run `plugsync lock` and commit it
    "#]]);
    let lock = plugsync(
        &[
            "lock".as_ref(),
            "-f".as_ref(),
            desk.path().join("plugins.yaml").as_os_str(),
            "--state-dir".as_ref(),
            desk.path().join("state").as_os_str(),
        ],
        &[],
    );
    assert!(lock.status.success(), "{}", lock.stderr);
    let matching = desk.dry_run(&["--locked", "--no-preview"]);
    assert_eq!(matching.status.code(), Some(2), "{}", matching.stderr);
    // A config edit leaves the lock current (it records only what resolution reads)…
    desk.desire(&PINNED_V2.replace("max_position: 10", "max_position: 11"));
    let config_edited = desk.dry_run(&["--locked", "--no-preview"]);
    assert_eq!(
        config_edited.status.code(),
        Some(2),
        "{}",
        config_edited.stderr
    );
    // …another version does not.
    desk.desire(&PINNED_V2.replace("version: 2.1.0", "version: 2.0.0"));
    let stale = desk.dry_run(&["--no-preview"]);
    desk.check(&stale, 1, expect![[r#"
        error: `[ROOT]/plugins.lock` was made from another plugins.yaml (it no longer matches): run `plugsync lock`, review the versions it picks, and commit the new lock
    "#]]);
}

#[test]
fn a_saved_status_gives_the_plan_the_host_gives() {
    let desk = Desk::at_v1();
    desk.desire(PINNED_V2);
    let token = desk.path().join("token");
    let saved = desk
        .host
        .status(&token, &["--output", "json", "--with-state"]);
    assert!(saved.status.success(), "{}", saved.stderr);
    let status_file = desk.path().join("status.json");
    std::fs::write(&status_file, &saved.stdout).unwrap();
    let from_host = desk.dry_run(&["--output", "json"]);
    let from_file = desk.dry_run(&[
        "--output",
        "json",
        "--observed",
        status_file.to_str().unwrap(),
    ]);
    assert_eq!(from_host.status.code(), Some(2), "{}", from_host.stderr);
    assert_eq!(from_file.status.code(), Some(2), "{}", from_file.stderr);
    let mut host_plan: Value = serde_json::from_str(&from_host.stdout).unwrap();
    let mut file_plan: Value = serde_json::from_str(&from_file.stdout).unwrap();
    assert_eq!(host_plan["observed"]["source"], desk.host.url);
    assert_eq!(
        file_plan["observed"]["source"],
        status_file.to_str().unwrap()
    );
    for plan in [&mut host_plan, &mut file_plan] {
        plan["observed"]["source"] = Value::Null;
        plan["observed"]["at"] = Value::Null;
    }
    assert_eq!(host_plan, file_plan);
    assert!(
        file_plan["previews"]
            .as_array()
            .unwrap()
            .iter()
            .all(|p| p["outcome"]["kind"] == "migrated"),
        "{file_plan:#}"
    );
}

#[test]
fn a_saved_status_without_states_skips_the_previews_and_says_why() {
    let desk = Desk::at_v1();
    desk.desire(PINNED_V2);
    let token = desk.path().join("token");
    let saved = desk.host.status(&token, &["--output", "json"]);
    let status_file = desk.path().join("status.json");
    std::fs::write(&status_file, &saved.stdout).unwrap();
    let finished = desk.dry_run(&["--observed", status_file.to_str().unwrap()]);
    desk.check(&finished, 2, expect![[r#"
        Host [ROOT]/status.json (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/plugins.yaml (no plugins.lock: versions resolved afresh)

          ~ risk_model  1.0.0 → 2.0.0  pinned                        1 step
          ~ ma_cross    1.0.0 → 2.1.0  pinned                        2 steps (via 2.0.0)

        Set:
          --- running
          +++ desired
          @@ -1,2 +1,2 @@
          -risk_model 1.0.0
          -ma_cross 1.0.0 config {"fast_ma_period":2,"order_qty":1,"slow_ma_period":4}
          +risk_model 2.0.0
          +ma_cross 2.1.0 config {"fast_period":2,"order_qty":1,"slow_period":4}

        Order (each intermediate set satisfies every dependency):

           1. ma_cross    1.0.0 → 2.0.0      major  migrate   on the way to 2.1.0; 1.0.0 needs risk_model >=1.0, <2, which step 2 breaks: moves first
               switch: immediate; verify: health, soak 10s, max error rate 0.1 %
               state preview skipped: the plugins' states were not observed: plan with `--host`, or save the status with `plugsync status --output json --with-state`
           2. risk_model  1.0.0 → 2.0.0      major  migrate   pinned
               switch: immediate; verify: health
               state preview skipped: the plugins' states were not observed: plan with `--host`, or save the status with `plugsync status --output json --with-state`
           3. ma_cross    2.0.0 → 2.1.0      minor  migrate   pinned; needs risk_model >=2.0, <3 (after step 2)
               switch: immediate; verify: health, soak 10s, max error rate 0.1 %
               state preview skipped: the plugins' states were not observed: plan with `--host`, or save the status with `plugsync status --output json --with-state`

        Plan: 0 to install, 2 to upgrade, 0 to downgrade, 0 to reconfigure, 0 to remove (3 steps), 0 unchanged. Plan id [ID].
    "#]]);
}

#[test]
fn the_plan_id_is_the_same_on_every_run_and_changes_with_the_plan() {
    let desk = Desk::at_v1();
    desk.desire(PINNED_V2);
    let id = |finished: &Finished| -> String {
        let plan: Value = serde_json::from_str(&finished.stdout).unwrap();
        plan["planId"].as_str().unwrap().to_owned()
    };
    let first = id(&desk.dry_run(&["--output", "json"]));
    // More calls change the states (and so the previews), not the plan.
    desk.trade();
    let second = id(&desk.dry_run(&["--output", "json"]));
    assert_eq!(first, second);
    desk.desire(&PINNED_V2.replace("version: 2.1.0", "version: 2.0.0"));
    let third = id(&desk.dry_run(&["--output", "json"]));
    assert_ne!(first, third);
}

#[test]
fn the_json_plan_is_saved_with_out_and_follows_its_schema() {
    let desk = Desk::at_v1();
    desk.desire(PINNED_V2);
    let out = desk.path().join("plan.json");
    let finished = desk.dry_run(&["--output", "json", "--out", out.to_str().unwrap()]);
    assert_eq!(finished.status.code(), Some(2), "{}", finished.stderr);
    let saved = std::fs::read_to_string(&out).unwrap();
    assert_eq!(saved, finished.stdout);
    let plan: Value = serde_json::from_str(&saved).unwrap();
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(PathBuf::from(WORKSPACE).join("schemas/plan.schema.json"))
            .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&plan)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

/// The fixture `ma_cross` 2.0.10, whose `migrate` aborts the process or hangs when
/// `PLUGSYNC_FIXTURE_MIGRATE` says so (the preview's child inherits plugsync's environment).
const FAULT_PREVIEW: &str = "ma_cross_fault_preview";

impl Desk {
    /// `dry_run`, with the fault the fixture's `migrate` injects.
    fn dry_run_with_fault(&self, fault: &str, args: &[&str]) -> Finished {
        self.dry_run_with(
            &[
                ("PLUGSYNC_NOW", SATURDAY),
                ("PLUGSYNC_FIXTURE_MIGRATE", fault),
            ],
            args,
        )
    }
}

const PINNED_FAULTY: &str = "  plugins:
    - {id: risk_model, version: 1.0.0, config: {max_position: 10}}
    - {id: ma_cross, version: 2.0.10}
";

#[test]
fn a_migration_that_aborts_is_an_error_in_the_plan_not_a_crash_of_plugsync() {
    let desk = Desk::at_v1();
    publish(desk.path(), FAULT_PREVIEW, "stable");
    desk.desire(PINNED_FAULTY);
    let finished = desk.dry_run_with_fault("abort", &[]);
    desk.check(&finished, 2, expect![[r#"
        Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/plugins.yaml (no plugins.lock: versions resolved afresh)

            risk_model  1.0.0           unchanged
          ~ ma_cross    1.0.0 → 2.0.10  pinned                        1 step

        Set:
          --- running
          +++ desired
          @@ -1,2 +1,2 @@
           risk_model 1.0.0
          -ma_cross 1.0.0
          +ma_cross 2.0.10

        Order (each intermediate set satisfies every dependency):

           1. ma_cross  1.0.0 → 2.0.10     major  migrate   pinned
               switch: immediate; verify: health
               state preview FAILED: migrating `ma_cross` 1.0.0 -> 2.0.10 (step 1 of 1) crashed the preview process: signal 6 (SIGABRT); the live host was not touched: fix the plugin, or plan a path that avoids this step

        warning: the migration preview of step 1 (`ma_cross`) failed: applying this plan would stop there (its preflight runs the same migration)

        Plan: 0 to install, 1 to upgrade, 0 to downgrade, 0 to reconfigure, 0 to remove (1 step), 1 unchanged. Plan id [ID].
    "#]]);
    // The host never saw it: it still runs 1.0.0 with nothing pending.
    let ma_cross = desk.api.plugin("ma_cross");
    assert_eq!(ma_cross["version"]["version"], "1.0.0");
    assert_eq!(ma_cross["pending"], Value::Null);
}

#[test]
fn a_migration_that_hangs_is_stopped_at_the_preview_timeout() {
    let desk = Desk::at_v1();
    publish(desk.path(), FAULT_PREVIEW, "stable");
    desk.desire(PINNED_FAULTY);
    let finished = desk.dry_run_with_fault("hang", &["--preview-timeout", "2s"]);
    desk.check(&finished, 2, expect![[r#"
        Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/plugins.yaml (no plugins.lock: versions resolved afresh)

            risk_model  1.0.0           unchanged
          ~ ma_cross    1.0.0 → 2.0.10  pinned                        1 step

        Set:
          --- running
          +++ desired
          @@ -1,2 +1,2 @@
           risk_model 1.0.0
          -ma_cross 1.0.0
          +ma_cross 2.0.10

        Order (each intermediate set satisfies every dependency):

           1. ma_cross  1.0.0 → 2.0.10     major  migrate   pinned
               switch: immediate; verify: health
               state preview FAILED: migrating `ma_cross` 1.0.0 -> 2.0.10 (step 1 of 1) did not finish within 2s (the preview process was killed); the live host was not touched: if the migration is only slow, raise it with `--preview-timeout`

        warning: the migration preview of step 1 (`ma_cross`) failed: applying this plan would stop there (its preflight runs the same migration)

        Plan: 0 to install, 1 to upgrade, 0 to downgrade, 0 to reconfigure, 0 to remove (1 step), 1 unchanged. Plan id [ID].
    "#]]);
}

#[test]
fn a_fresh_state_step_is_marked_as_discarding_the_state() {
    let desk = Desk::at_v1();
    desk.desire(
        "  plugins:
    - {id: risk_model, version: 2.0.0, config: {max_position: 10}}
    - id: ma_cross
      version: 2.1.0
      config: {fast_period: 2, slow_period: 4, order_qty: 1}
      update: {freshState: 2.1.0}
",
    );
    let finished = desk.dry_run(&[]);
    desk.check(&finished, 2, expect![[r#"
        Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/plugins.yaml (no plugins.lock: versions resolved afresh)

          ~ risk_model  1.0.0 → 2.0.0  pinned                        1 step
          ~ ma_cross    1.0.0 → 2.1.0  pinned                        2 steps (via 2.0.0)

        Set:
          --- running
          +++ desired
          @@ -1,2 +1,2 @@
          -risk_model 1.0.0
          -ma_cross 1.0.0 config {"fast_ma_period":2,"order_qty":1,"slow_ma_period":4}
          +risk_model 2.0.0
          +ma_cross 2.1.0 config {"fast_period":2,"order_qty":1,"slow_period":4}

        Order (each intermediate set satisfies every dependency):

           1. ma_cross    1.0.0 → 2.0.0      major  migrate   on the way to 2.1.0; 1.0.0 needs risk_model >=1.0, <2, which step 2 breaks: moves first
               switch: immediate; verify: health
               config (migrated by 2.0.0):
                 /fast_ma_period: renamed `fast_period` (2)
                 /slow_ma_period: renamed `slow_period` (4)
                 /signal_threshold: added 0.01
               state (live snapshot, migrated in a sandbox):
                 /fast_ma_period: renamed `fast_period` (2)
                 /slow_ma_period: renamed `slow_period` (4)
                 /signal_threshold: added 0.01
           2. risk_model  1.0.0 → 2.0.0      major  migrate   pinned
               switch: immediate; verify: health
               config (from plugins.yaml): unchanged
               state (live snapshot, migrated in a sandbox):
                 /instruments/ES/notional: added 99.5
                 /max_position: removed (was 10)
                 /limits: added {"max_notional":1000000.0,"max_position":10}
           3. ma_cross    2.0.0 → 2.1.0      minor  fresh     pinned; needs risk_model >=2.0, <3 (after step 2)
               DISCARDS STATE: starts from a fresh state; the positions it holds are lost
               switch: immediate; verify: health
               config (from plugins.yaml):
                 /signal_threshold: removed (was 0.01)
               state (live snapshot, replaced by a fresh one):
                 /instruments/ES: removed (was {"closes":[100.0,101.0,99.5],"pending":-1,"posi…)

        Plan: 0 to install, 2 to upgrade, 0 to downgrade, 0 to reconfigure, 0 to remove (3 steps), 0 unchanged. Plan id [ID].
    "#]]);
}

#[test]
fn what_the_host_would_refuse_or_keeps_is_shown_with_who_and_why() {
    let desk = Desk::at_v1();
    publish(desk.path(), "quote_counter", "stable");
    // A version rolled back on this host is marked failed there.
    let artifact = desk.api.stage(&lib(RISK_MODEL_1_1_0));
    desk.api.post(
        "/v1/steps/tried/switch",
        json!({"plugin": "risk_model", "artifact": artifact}),
    );
    desk.api
        .post("/v1/steps/tried/rollback", json!({"plugin": "risk_model"}));
    desk.api.post(
        "/v1/restraints",
        json!({"action": "freeze", "reason": "quarter-end close"}),
    );
    desk.api.post(
        "/v1/restraints",
        json!({"action": "hold", "plugin": "ma_cross", "reason": "investigating fills"}),
    );
    desk.desire(
        "  plugins:
    - {id: risk_model, version: 1.1.0, config: {max_position: 10}}
    - {id: ma_cross, version: 2.0.0}
    - {id: quote_counter, version: 1.0.0}
",
    );
    // The held plugin and the one whose version failed are kept; the install, which neither
    // touches, is what the freeze refuses.
    let finished = desk.dry_run(&["--no-preview"]);
    desk.check(&finished, 2, expect![[r#"
        Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/plugins.yaml (no plugins.lock: versions resolved afresh)

          = risk_model     1.0.0  1.1.0 marked failed by host at [TIME]: rolled back: rollback requested; not retried (clear: `plugsync retry risk_model`, or change its entry)
          = ma_cross       1.0.0  held by default since [TIME]: investigating fills; plugins.yaml asks 2.0.0 (release: `plugsync release ma_cross`)
          + quote_counter  1.0.0  pinned                        1 step

        Set:
          --- running
          +++ desired
          @@ -2 +2,2 @@
           ma_cross 1.0.0
          +quote_counter 1.0.0

        Order (each intermediate set satisfies every dependency):

           1. quote_counter  → 1.0.0            install          pinned
               switch: immediate; verify: health
               config: {}

        Refused: the host is frozen by default since [TIME]: quarter-end close (lift: `plugsync unfreeze`)

        Drift (runs other than the reconciler left it):
          risk_model (at [TIME]): last change `rollback` by `api` (client `default`), not the reconciler

        Plan: 1 to install, 0 to upgrade, 0 to downgrade, 0 to reconfigure, 0 to remove (1 step), 0 unchanged, 2 kept. Plan id [ID].
    "#]]);
}

#[test]
fn drift_by_hand_is_still_drift_after_the_host_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut desk = Desk::at_v1();
    desk.switch_by("risk_model", RISK_MODEL_1_1_0, "ops-script");
    // The same store, a new process: the applied records come back from it.
    let stopped = desk.restart_host("TERM");
    assert!(stopped.status.success(), "{}", stopped.stderr);
    drop(dir);
    desk.desire(
        "  plugins:
    - {id: risk_model, version: 1.1.0, config: {max_position: 10}}
    - {id: ma_cross, version: 1.0.0, config: {fast_ma_period: 2, slow_ma_period: 4, order_qty: 1}}
",
    );
    let finished = desk.dry_run(&[]);
    desk.check(&finished, 0, expect![[r#"
        Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/plugins.yaml (no plugins.lock: versions resolved afresh)

            risk_model  1.1.0  unchanged, drifted (see Drift)
            ma_cross    1.0.0  unchanged

        Drift (runs other than the reconciler left it):
          risk_model (at [TIME]): last change `commit` by `ops-script` (client `default`), not the reconciler

        No changes: the host runs what plugins.yaml asks (2 plugins). Plan id [ID].
    "#]]);
}

#[test]
fn a_running_artifact_the_registry_lacks_skips_its_preview_and_says_why() {
    let desk = Desk::new();
    desk.install(RISK_MODEL_2_0_0, json!({"max_position": 10}));
    // ma_cross 2.0.10, built here and never published.
    desk.install(FAULT_PREVIEW, json!({"fast_period": 2, "slow_period": 4}));
    desk.desire(
        "  plugins:
    - {id: risk_model, version: 2.0.0, config: {max_position: 10}}
    - {id: ma_cross, version: 2.1.0}
",
    );
    let finished = desk.dry_run(&[]);
    desk.check(&finished, 2, expect![[r#"
        Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/plugins.yaml (no plugins.lock: versions resolved afresh)

            risk_model  2.0.0           unchanged
          ~ ma_cross    2.0.10 → 2.1.0  pinned                        1 step

        Set:
          --- running
          +++ desired
          @@ -1,2 +1,2 @@
           risk_model 2.0.0
          -ma_cross 2.0.10
          +ma_cross 2.1.0

        Order (each intermediate set satisfies every dependency):

           1. ma_cross  2.0.10 → 2.1.0     minor  migrate   pinned
               switch: immediate; verify: health
               state preview skipped: the running ma_cross 2.0.10: the registry has no artifact of `ma_cross` with sha256 [HASH]: it was not published there (loaded by hand?), so its migration cannot be previewed outside the host

        Plan: 0 to install, 1 to upgrade, 0 to downgrade, 0 to reconfigure, 0 to remove (1 step), 1 unchanged. Plan id [ID].
    "#]]);
}

/// Copies `examples/desired-state` into the desk's directory, each registry URL (a directory
/// in the workspace, or the fleet's HTTPS registry) pointed at the desk's registry.
fn copy_examples(desk: &Desk) -> PathBuf {
    let from = PathBuf::from(WORKSPACE).join("examples/desired-state");
    let to = desk.path().join("examples");
    let mut dirs = vec![PathBuf::new()];
    while let Some(dir) = dirs.pop() {
        std::fs::create_dir_all(to.join(&dir)).unwrap();
        for entry in std::fs::read_dir(from.join(&dir)).unwrap() {
            let entry = entry.unwrap();
            let relative = dir.join(entry.file_name());
            if entry.file_type().unwrap().is_dir() {
                dirs.push(relative);
                continue;
            }
            let text = std::fs::read_to_string(entry.path()).unwrap();
            let registry = desk.path().join("registry");
            let url = format!("url: {}", registry.display());
            let text = (text.replace("url: ../../target/registry", &url))
                .replace("url: https://registry.example.com/plugins", &url);
            std::fs::write(to.join(&relative), text).unwrap();
        }
    }
    to
}

#[test]
fn every_shipped_example_plans_against_the_desk() {
    let desk = Desk::at_v1();
    let examples = copy_examples(&desk);
    let mut shown = String::new();
    for example in [
        "one-plugin.yaml",
        "desk.yaml",
        "trading-hours-freeze.yaml",
        "floating-channel.yaml",
        "blue-green.yaml",
        "fleet/canary/plugins.yaml",
        "fleet/prod/plugins.yaml",
    ] {
        let finished = desk.dry_run_of(
            &examples.join(example),
            &[("PLUGSYNC_NOW", SATURDAY)],
            &["--no-preview"],
        );
        let text = match finished.status.code() {
            Some(1) => &finished.stderr,
            _ => &finished.stdout,
        };
        shown.push_str(&format!(
            "== {example}: exit {:?}\n{}",
            finished.status.code(),
            desk.normalised(text)
        ));
    }
    expect![[r#"
        == one-plugin.yaml: exit Some(2)
        Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/examples/one-plugin.yaml (no plugins.lock: versions resolved afresh)

          ~ risk_model  1.0.0  config changed                1 step
            ma_cross    1.0.0  not in plugins.yaml: kept (`policy.prune` is off)

        Set:
          --- running
          +++ desired
          @@ -1,2 +1,2 @@
          -risk_model 1.0.0 config {"max_position":10}
          +risk_model 1.0.0 config {"max_position":100}
           ma_cross 1.0.0

        Order (each intermediate set satisfies every dependency):

           1. risk_model  1.0.0              reconfigure      config changed
               switch: immediate; verify: health
               config:
                 /max_position: 10 → 100

        Plan: 0 to install, 0 to upgrade, 0 to downgrade, 1 to reconfigure, 0 to remove (1 step), 0 unchanged. Plan id [ID].
        == desk.yaml: exit Some(2)
        Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/examples/desk.yaml (no plugins.lock: versions resolved afresh)

          ~ risk_model  1.0.0          config changed                1 step
          ~ ma_cross    1.0.0 → 2.0.0  pinned                        1 step

        Set:
          --- running
          +++ desired
          @@ -1,2 +1,2 @@
          -risk_model 1.0.0 config {"max_position":10}
          -ma_cross 1.0.0 config {"fast_ma_period":2,"order_qty":1,"slow_ma_period":4}
          +risk_model 1.0.0 config {"max_position":100}
          +ma_cross 2.0.0 config {"fast_period":5,"signal_threshold":0.01,"slow_period":20}

        Order (each intermediate set satisfies every dependency):

           1. risk_model  1.0.0              reconfigure      config changed
               switch: immediate; verify: health, soak 30s, max error rate 0.1 %
               config:
                 /max_position: 10 → 100
           2. ma_cross    1.0.0 → 2.0.0      major  migrate   pinned
               switch: immediate; verify: health, probe `a cross up buys`, soak 1m, max error rate 0.1 %, max call latency 500 µs, at least 1000 calls
               config:
                 /fast_ma_period: removed (was 2)
                 /order_qty: removed (was 1)
                 /slow_ma_period: removed (was 4)
                 /fast_period: added 5
                 /signal_threshold: added 0.01
                 /slow_period: added 20

        Plan: 0 to install, 1 to upgrade, 0 to downgrade, 1 to reconfigure, 0 to remove (2 steps), 0 unchanged. Plan id [ID].
        == trading-hours-freeze.yaml: exit Some(2)
        Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/examples/trading-hours-freeze.yaml (no plugins.lock: versions resolved afresh)

            risk_model  1.0.0  unchanged
          ~ ma_cross    1.0.0  config changed                1 step

        Set:
          --- running
          +++ desired
          @@ -1,2 +1,2 @@
           risk_model 1.0.0
          -ma_cross 1.0.0 config {"fast_ma_period":2,"order_qty":1,"slow_ma_period":4}
          +ma_cross 1.0.0 config {"fast_ma_period":5,"slow_ma_period":20}

        Order (each intermediate set satisfies every dependency):

           1. ma_cross  1.0.0              reconfigure      config changed
               switch: when idle for 30s (up to 10m); verify: health
               `ma_cross` served its last call [T] ago: would wait up to 10m for 30s without a call, then fail
               config:
                 /fast_ma_period: 2 → 5
                 /order_qty: removed (was 1)
                 /slow_ma_period: 4 → 20

        Plan: 0 to install, 0 to upgrade, 0 to downgrade, 1 to reconfigure, 0 to remove (1 step), 1 unchanged. Plan id [ID].
        == floating-channel.yaml: exit Some(1)
        error: `ma_cross` from 1.0.0 to 2.0.0 is a major jump, but `ma_cross` allows `minor` (`policy.compatibility` rule `ma_*`): pin `version: 2.0.0` in plugins.yaml or set `allow: major`
        == blue-green.yaml: exit Some(2)
        Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/examples/blue-green.yaml (no plugins.lock: versions resolved afresh)

            risk_model  1.0.0          unchanged
          ~ ma_cross    1.0.0 → 2.0.0  pinned                        1 step

        Set:
          --- running
          +++ desired
          @@ -1,2 +1,2 @@
           risk_model 1.0.0
          -ma_cross 1.0.0 config {"fast_ma_period":2,"order_qty":1,"slow_ma_period":4}
          +ma_cross 2.0.0 config {"fast_period":5,"signal_threshold":0.01,"slow_period":20}

        Order (each intermediate set satisfies every dependency):

           1. ma_cross  1.0.0 → 2.0.0      major  migrate   pinned
               switch: blue-green after 1000 agreeing calls; verify: health
               config:
                 /fast_ma_period: removed (was 2)
                 /order_qty: removed (was 1)
                 /slow_ma_period: removed (was 4)
                 /fast_period: added 5
                 /signal_threshold: added 0.01
                 /slow_period: added 20

        warning: `ma_cross` asks for the `blue-green` strategy, which `plugsync reconcile` does not apply yet: it would refuse the step

        Plan: 0 to install, 1 to upgrade, 0 to downgrade, 0 to reconfigure, 0 to remove (1 step), 1 unchanged. Plan id [ID].
        == fleet/canary/plugins.yaml: exit Some(2)
        Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/examples/fleet/canary/plugins.yaml (no plugins.lock: versions resolved afresh)

          ~ risk_model  1.0.0          config changed                1 step
          ~ ma_cross    1.0.0 → 2.0.0  pinned                        1 step

        Set:
          --- running
          +++ desired
          @@ -1,2 +1,2 @@
          -risk_model 1.0.0 config {"max_position":10}
          -ma_cross 1.0.0 config {"fast_ma_period":2,"order_qty":1,"slow_ma_period":4}
          +risk_model 1.0.0 config {"max_position":50}
          +ma_cross 2.0.0 config {"fast_period":5,"signal_threshold":0.01,"slow_period":20}

        Order (each intermediate set satisfies every dependency):

           1. risk_model  1.0.0              reconfigure      config changed
               switch: immediate; verify: health, soak 2m, max error rate 0.1 %
               config:
                 /max_position: 10 → 50
           2. ma_cross    1.0.0 → 2.0.0      major  migrate   pinned
               switch: immediate; verify: health, soak 2m, max error rate 0.1 %
               config:
                 /fast_ma_period: removed (was 2)
                 /order_qty: removed (was 1)
                 /slow_ma_period: removed (was 4)
                 /fast_period: added 5
                 /signal_threshold: added 0.01
                 /slow_period: added 20

        Plan: 0 to install, 1 to upgrade, 0 to downgrade, 1 to reconfigure, 0 to remove (2 steps), 0 unchanged. Plan id [ID].
        == fleet/prod/plugins.yaml: exit Some(2)
        Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/examples/fleet/prod/plugins.yaml (no plugins.lock: versions resolved afresh)

          ~ risk_model  1.0.0  config changed                1 step
          ~ ma_cross    1.0.0  config changed                1 step

        Set:
          --- running
          +++ desired
          @@ -1,2 +1,2 @@
          -risk_model 1.0.0 config {"max_position":10}
          -ma_cross 1.0.0 config {"fast_ma_period":2,"order_qty":1,"slow_ma_period":4}
          +risk_model 1.0.0 config {"max_position":100}
          +ma_cross 1.0.0 config {"fast_ma_period":5,"slow_ma_period":20}

        Order (each intermediate set satisfies every dependency):

           1. risk_model  1.0.0              reconfigure      config changed
               switch: immediate; verify: health, soak 2m, max error rate 0.1 %
               config:
                 /max_position: 10 → 100
           2. ma_cross    1.0.0              reconfigure      config changed
               switch: immediate; verify: health, soak 2m, max error rate 0.1 %
               config:
                 /fast_ma_period: 2 → 5
                 /order_qty: removed (was 1)
                 /slow_ma_period: 4 → 20

        Plan: 0 to install, 0 to upgrade, 0 to downgrade, 2 to reconfigure, 0 to remove (2 steps), 0 unchanged. Plan id [ID].
    "#]].assert_eq(&shown);
}

#[test]
fn the_json_plan_of_the_example_desk_installed_afresh() {
    let desk = Desk::new();
    let examples = copy_examples(&desk);
    let finished = desk.dry_run_of(
        &examples.join("desk.yaml"),
        &[("PLUGSYNC_NOW", SATURDAY)],
        &["--output", "json"],
    );
    desk.check(
        &finished,
        2,
        expect![[r#"
            {
              "format": 1,
              "planId": "[HASH]",
              "file": "[ROOT]/examples/desk.yaml",
              "inputs": {
                "desiredSha256": "[HASH]",
                "lockSha256": null,
                "abi": 1,
                "framework": "0.1.0",
                "residentCap": 8,
                "running": []
              },
              "observed": {
                "source": "[HOST]",
                "at": "[TIME]",
                "api": "1.1",
                "withState": true
              },
              "changes": [
                {
                  "plugin": "risk_model",
                  "kind": "install",
                  "from": null,
                  "to": {
                    "version": "1.0.0",
                    "sha256": "[HASH]"
                  },
                  "why": {
                    "kind": "pinned"
                  },
                  "via": [],
                  "steps": [
                    1
                  ],
                  "config": null
                },
                {
                  "plugin": "ma_cross",
                  "kind": "install",
                  "from": null,
                  "to": {
                    "version": "2.0.0",
                    "sha256": "[HASH]"
                  },
                  "why": {
                    "kind": "pinned"
                  },
                  "via": [],
                  "steps": [
                    2
                  ],
                  "config": null
                }
              ],
              "steps": [
                {
                  "number": 1,
                  "plugin": "risk_model",
                  "action": "install",
                  "from": null,
                  "to": {
                    "version": "1.0.0",
                    "sha256": "[HASH]",
                    "file": "artifacts/risk_model/1.0.0/librisk_model_v1_0_0.so",
                    "signature": null
                  },
                  "jump": null,
                  "migration": null,
                  "config": {
                    "max_position": 100
                  },
                  "reasons": [
                    {
                      "kind": "pinned"
                    }
                  ],
                  "strategy": {
                    "kind": "immediate"
                  },
                  "verify": {
                    "soak": {
                      "duration": "30s",
                      "maxErrorRate": 0.001,
                      "minCalls": 100
                    }
                  },
                  "onFailure": "halt"
                },
                {
                  "number": 2,
                  "plugin": "ma_cross",
                  "action": "install",
                  "from": null,
                  "to": {
                    "version": "2.0.0",
                    "sha256": "[HASH]",
                    "file": "artifacts/ma_cross/2.0.0/libma_cross_v2_0_0.so",
                    "signature": null
                  },
                  "jump": null,
                  "migration": null,
                  "config": {
                    "fast_period": 5,
                    "signal_threshold": 0.01,
                    "slow_period": 20
                  },
                  "reasons": [
                    {
                      "kind": "pinned"
                    },
                    {
                      "kind": "after",
                      "dependency": "risk_model",
                      "requirement": ">=1.0, <3",
                      "step": 1
                    }
                  ],
                  "strategy": {
                    "kind": "immediate"
                  },
                  "verify": {
                    "probes": [
                      {
                        "name": "a cross up buys",
                        "state": null,
                        "steps": [
                          {
                            "input": {
                              "bar": {
                                "close": 100.0,
                                "instrument": "ES"
                              }
                            },
                            "expect": null
                          },
                          {
                            "input": {
                              "bar": {
                                "close": 101.0,
                                "instrument": "ES"
                              }
                            },
                            "expect": null
                          }
                        ]
                      }
                    ],
                    "soak": {
                      "duration": "1m",
                      "maxErrorRate": 0.001,
                      "minCalls": 100,
                      "maxCallLatencyUs": 500,
                      "minCallsBeforeCommit": 1000
                    }
                  },
                  "onFailure": "rollback"
                }
              ],
              "waves": [
                [
                  1
                ],
                [
                  2
                ]
              ],
              "waits": [],
              "refusals": [],
              "lifts": [],
              "warnings": [],
              "drift": [],
              "previews": []
            }
        "#]],
    );
}
