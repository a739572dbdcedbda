//! `plugsync rollback` through the binary, against a real reference host: a pending step
//! rolled back by the host (even while another client soaks it), a committed one downgraded by
//! a plan shown first and applied with `--yes`, a dependant refused unless carried down, and
//! the hold that keeps every reconcile from undoing it.

mod support;

use expect_test::expect;
use serde_json::json;
use support::desk::*;
use support::*;

/// risk_model and ma_cross at their first versions.
const V1: &str = "  plugins:
    - {id: risk_model, version: 1.0.0, config: {max_position: 10}}
    - id: ma_cross
      version: 1.0.0
      config: {fast_ma_period: 2, slow_ma_period: 4, order_qty: 1}
";

/// `plugsync reconcile` on the desk's plugins.yaml, on a Saturday.
fn reconcile(desk: &Desk) -> support::process::Finished {
    desk.reconcile_of(
        &desk.path().join("plugins.yaml"),
        &[("PLUGSYNC_NOW", SATURDAY)],
        &[],
    )
}

/// The versions the host runs, sorted.
fn running(desk: &Desk) -> Vec<String> {
    let status = desk.api.status();
    let mut running: Vec<String> = (status["plugins"].as_array().unwrap().iter())
        .map(|p| {
            format!(
                "{} {}",
                p["plugin"].as_str().unwrap(),
                p["version"]["version"].as_str().unwrap()
            )
        })
        .collect();
    running.sort();
    running
}

/// A desk at [`V1`], then at `spec`, both by `plugsync reconcile`, having traded between.
fn desk_moved_to(spec: &str) -> Desk {
    let desk = Desk::new();
    desk.desire(V1);
    assert!(reconcile(&desk).status.success());
    desk.trade();
    desk.desire(spec);
    let moved = reconcile(&desk);
    assert!(moved.status.success(), "{}", moved.stderr);
    desk
}

const RISK_1_1: &str = "  plugins:
    - {id: risk_model, version: 1.1.0, config: {max_position: 10}}
    - id: ma_cross
      version: 1.0.0
      config: {fast_ma_period: 2, slow_ma_period: 4, order_qty: 1}
";

#[test]
fn a_committed_upgrade_is_rolled_back_by_a_planned_downgrade_shown_first_then_held() {
    let desk = desk_moved_to(RISK_1_1);
    // Without `--yes`: the plan, its migration previewed on the live state; nothing changes.
    let file = desk.path().join("plugins.yaml");
    let file = file.to_str().unwrap();
    let shown = desk.operator(&[
        "rollback",
        "risk_model",
        "-f",
        file,
        "--reason",
        "limits too loose",
    ]);
    desk.check(&shown, 2, expect![[r#"
        Rollback of `risk_model` to 1.0.0: every other plugin stays where it runs (plugins.yaml gives the registry and the policy).
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
               config (migrated by 1.1.0): unchanged
               state (live snapshot, migrated in a sandbox): unchanged

        Plan: 0 to install, 0 to upgrade, 1 to downgrade, 0 to reconfigure, 0 to remove (1 step), 1 unchanged. Plan id [ID].

        Not applied: run again with `--yes` to apply it (the plugin is then held).
    "#]]);
    assert_eq!(running(&desk), ["ma_cross 1.0.0", "risk_model 1.1.0"]);

    let applied = desk.operator(&[
        "rollback",
        "risk_model",
        "-f",
        file,
        "--reason",
        "limits too loose",
        "--yes",
    ]);
    check(
        &desk,
        &applied,
        0,
        expect![[r#"
            Rollback of `risk_model` to 1.0.0: every other plugin stays where it runs (plugins.yaml gives the registry and the policy).
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
                   config (migrated by 1.1.0): unchanged
                   state (live snapshot, migrated in a sandbox): unchanged

            Plan: 0 to install, 0 to upgrade, 1 to downgrade, 0 to reconfigure, 0 to remove (1 step), 1 unchanged. Plan id [ID].

            [1/1] risk_model 1.1.0 → 1.0.0     preflight ✓  staged ✓  switched (slot held [N] µs)  committed

            Applied 1 step. The host runs ma_cross 1.0.0, risk_model 1.0.0.
            Held `risk_model` at 1.0.0: every reconcile keeps it there until `plugsync release risk_model`, or until its entry in plugins.yaml changes.
        "#]],
    );
    assert_eq!(running(&desk), ["ma_cross 1.0.0", "risk_model 1.0.0"]);
    let hold = &desk.api.status()["restraints"]["holds"]["risk_model"];
    assert_eq!(
        (&hold["by"], &hold["reason"]),
        (
            &json!("default"),
            &json!("manual rollback: limits too loose")
        )
    );

    // The next reconcile keeps it there, and says so.
    check(
        &desk,
        &reconcile(&desk),
        0,
        expect![[r#"
            Nothing to apply now: the rest is kept where it is (below). The host runs ma_cross 1.0.0, risk_model 1.0.0.
            Kept: risk_model 1.0.0: held by default since [TIME]: manual rollback: limits too loose; plugins.yaml asks 1.1.0 (release: `plugsync release risk_model`)
        "#]],
    );
    assert_eq!(running(&desk), ["ma_cross 1.0.0", "risk_model 1.0.0"]);
}

#[test]
fn a_rollback_that_would_break_a_dependant_is_refused_unless_it_is_carried_down() {
    let desk = desk_moved_to(
        "  plugins:
    - {id: risk_model, version: 2.0.0, config: {max_position: 10}}
    - id: ma_cross
      version: 2.1.0
      config: {fast_period: 2, slow_period: 4, order_qty: 1}
",
    );
    let file = desk.path().join("plugins.yaml");
    let file = file.to_str().unwrap();
    let refused = desk.operator(&[
        "rollback",
        "risk_model",
        "-f",
        file,
        "--to",
        "1.0.0",
        "--reason",
        "x",
    ]);
    desk.check(&refused, 1, expect![[r#"
        error: rolling `risk_model` back to 1.0.0 would break `ma_cross` 2.1.0, which needs `risk_model` >=2.0, <3: nothing was changed; carry it down too with `--carry ma_cross@VERSION` (a version that accepts `risk_model` 1.0.0), or roll `ma_cross` back first
    "#]]);
    let carried = desk.operator(&[
        "rollback",
        "risk_model",
        "-f",
        file,
        "--to",
        "1.0.0",
        "--carry",
        "ma_cross@2.0.0",
        "--reason",
        "notional wrong",
        "--yes",
    ]);
    check(
        &desk,
        &carried,
        0,
        expect![[r#"
            Rollback of `risk_model` to 1.0.0, `ma_cross` to 2.0.0: every other plugin stays where it runs (plugins.yaml gives the registry and the policy).
            Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
            Desired [ROOT]/plugins.yaml (no plugins.lock: versions resolved afresh)

              ~ risk_model  2.0.0 → 1.0.0  pinned                        1 step
              ~ ma_cross    2.1.0 → 2.0.0  pinned                        1 step

            Set:
              --- running
              +++ desired
              @@ -1,2 +1,2 @@
              -risk_model 2.0.0
              -ma_cross 2.1.0
              +risk_model 1.0.0
              +ma_cross 2.0.0

            Order (each intermediate set satisfies every dependency):

               1. ma_cross    2.1.0 → 2.0.0      minor  migrate   pinned; 2.1.0 needs risk_model >=2.0, <3, which step 2 breaks: moves first
                   switch: immediate; verify: health
                   config (migrated by 2.1.0): unchanged
                   state (live snapshot, migrated in a sandbox):
                     /instruments/ES/last_close: removed (was 99.5)
               2. risk_model  2.0.0 → 1.0.0      major  migrate   pinned
                   switch: immediate; verify: health
                   config (migrated by 2.0.0): unchanged
                   state (live snapshot, migrated in a sandbox):
                     /instruments/ES/notional: removed (was 99.5)
                     /limits: removed (was {"max_notional":1000000.0,"max_position":10})
                     /max_position: added 10

            Plan: 0 to install, 0 to upgrade, 2 to downgrade, 0 to reconfigure, 0 to remove (2 steps), 0 unchanged. Plan id [ID].

            [1/2] ma_cross 2.1.0 → 2.0.0       preflight ✓  staged ✓  switched (slot held [N] µs)  committed
            [2/2] risk_model 2.0.0 → 1.0.0     preflight ✓  staged ✓  switched (slot held [N] µs)  committed

            Applied 2 steps. The host runs ma_cross 2.0.0, risk_model 1.0.0.
            Held `risk_model` at 1.0.0: every reconcile keeps it there until `plugsync release risk_model`, or until its entry in plugins.yaml changes.
            Held `ma_cross` at 2.0.0: every reconcile keeps it there until `plugsync release ma_cross`, or until its entry in plugins.yaml changes.
        "#]],
    );
    assert_eq!(running(&desk), ["ma_cross 2.0.0", "risk_model 1.0.0"]);
    let holds = &desk.api.status()["restraints"]["holds"];
    assert!(
        holds["ma_cross"].is_object() && holds["risk_model"].is_object(),
        "{holds}"
    );
}

#[test]
fn a_pending_step_is_rolled_back_by_the_host_while_another_client_soaks_it() {
    let desk = Desk::new();
    desk.desire(V1);
    assert!(reconcile(&desk).status.success());
    desk.trade();
    desk.desire(&RISK_1_1.replace(
        "config: {max_position: 10}}",
        "config: {max_position: 10}, verify: {soak: {duration: 10m}}}",
    ));
    let soaking = desk.reconcile_in_background(&[("PLUGSYNC_NOW", SATURDAY)], &[]);
    wait_until("risk_model 1.1.0 soaks", || {
        !desk.api.plugin("risk_model")["pending"].is_null()
    });
    // The reconcile holds the lease; the operator's rollback goes all the same.
    let file = desk.path().join("plugins.yaml");
    let rolled = desk.operator(&[
        "rollback",
        "risk_model",
        "-f",
        file.to_str().unwrap(),
        "--reason",
        "stop it",
    ]);
    check(
        &desk,
        &rolled,
        0,
        expect![[r#"
            Rolled back `risk_model`'s pending step [HASH].1.1 (1.1.0): 0 calls replayed into 1.0.0, 0 outputs differ; 1.0.0 serves, its state exact.
            Held `risk_model` at 1.0.0: every reconcile keeps it there until `plugsync release risk_model`, or until its entry in plugins.yaml changes.
        "#]],
    );
    let finished = soaking.finish();
    // Kept by the hold or by the mark, whichever its next plan saw first (the operator's
    // rollback and hold race its plan): either says why, and how to let it go.
    let (shown, kept) = finished
        .stdout
        .split_at(finished.stdout.find("Kept: ").unwrap());
    assert!(
        kept.starts_with("Kept: risk_model 1.0.0: held by default")
            || kept.starts_with("Kept: risk_model 1.0.0: 1.1.0 marked failed by host"),
        "{kept}"
    );
    let finished = support::process::Finished {
        stdout: shown.to_owned(),
        ..finished
    };
    check(
        &desk,
        &finished,
        1,
        expect![[r#"
            [1/1] risk_model 1.0.0 → 1.1.0     preflight ✓  staged ✓  switched (slot held [N] µs)
                  ✗ rolled back by the host: rollback requested by `default` (plugsync-rollback); 0 calls replayed into 1.0.0, 0 outputs differ; 1.0.0 serves, its state exact
                  risk_model 1.1.0 marked failed on this host: not retried (clear: `plugsync retry risk_model`, or change its entry in plugins.yaml)

            Reconcile failed at step 1 of 1 (risk_model 1.0.0 → 1.1.0); 0 steps applied. The host runs ma_cross 1.0.0, risk_model 1.0.0 — a committed set.
        "#]],
    );
    assert_eq!(running(&desk), ["ma_cross 1.0.0", "risk_model 1.0.0"]);
    // Held (and the version marked failed by the host's rollback): not retried.
    check(
        &desk,
        &reconcile(&desk),
        0,
        expect![[r#"
            Nothing to apply now: the rest is kept where it is (below). The host runs ma_cross 1.0.0, risk_model 1.0.0.
            Kept: risk_model 1.0.0: held by default since [TIME]: manual rollback: stop it; plugins.yaml asks 1.1.0 (release: `plugsync release risk_model`)
        "#]],
    );
}

#[test]
fn a_rollback_point_is_kept_before_each_step_restored_on_request_and_dropped_once_expired() {
    let desk = Desk::new();
    desk.desire(V1);
    assert!(reconcile(&desk).status.success());
    desk.trade();
    let before_upgrade = desk.api.state("risk_model");
    desk.desire(RISK_1_1);
    assert!(reconcile(&desk).status.success());
    // The desk trades on: the live state moves away from the point's.
    desk.trade();
    assert_ne!(desk.api.state("risk_model"), before_upgrade);

    let file = desk.path().join("plugins.yaml");
    let file = file.to_str().unwrap();
    let args = [
        "rollback",
        "risk_model",
        "-f",
        file,
        "--reason",
        "back to Friday's book",
        "--restore-snapshot",
    ];
    let shown = desk.operator(&args);
    assert_exit(&shown, 2);
    let restore = &shown.stdout[shown.stdout.find("Then restore").unwrap()..];
    expect![[r#"
        Then restore risk_model 1.0.0 before step [HASH].1.1, taken [TIME]:
               its state against what the downgrade leaves:
                 /instruments/ES/exposure: 2 → 1
                 /instruments/ES/reserved: -2 → -1

        Not applied: run again with `--yes` to apply it (the plugin is then held).
    "#]]
    .assert_eq(&normalise_apply(&desk.normalised(restore)));

    let mut yes = args.to_vec();
    yes.push("--yes");
    let restored = desk.operator(&yes);
    assert_exit(&restored, 0);
    assert!(
        restored
            .stdout
            .contains("Restored the state of risk_model 1.0.0"),
        "{}",
        restored.stdout
    );
    assert_eq!(desk.api.state("risk_model"), before_upgrade);
    assert_eq!(running(&desk), ["ma_cross 1.0.0", "risk_model 1.0.0"]);

    // Kept a week (the default); dropped by `plugsync gc` once expired.
    let state = desk.path().join("state");
    let gc = |now: &str| {
        support::process::plugsync(
            &["gc", "--state-dir", state.to_str().unwrap()],
            &[("PLUGSYNC_NOW", std::ffi::OsStr::new(now))],
        )
    };
    expect![[r#"
        No rollback point has expired.
        Kept 2 points; the next expires at [TIME].
    "#]]
    .assert_eq(&normalise_apply(&desk.normalised(&gc(SATURDAY).stdout)));
    expect![[r#"
        Dropped 2 expired rollback points:
          risk_model 1.1.0 before step [HASH].1.1, taken [TIME]
          risk_model 1.0.0 before step [HASH].1.1, taken [TIME]
        None is kept.
    "#]]
    .assert_eq(&normalise_apply(
        &desk.normalised(&gc("2026-12-13T00:00:00Z").stdout),
    ));
}
