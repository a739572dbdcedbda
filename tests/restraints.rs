//! The host's restraints through the binary, against a real reference host: a version that
//! fails is marked and never retried while the rest of the plan goes on; a hold keeps its
//! plugin (and what needs it) for every client until released or until its entry in
//! plugins.yaml changes; a freeze, the kill switch, goes even while another client reconciles.

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

/// risk_model 2.0.0 and ma_cross 2.1.0 (which needs risk_model >=2.0), and quote_counter,
/// which needs nothing.
const V2_AND_QUOTES: &str = "  plugins:
    - {id: risk_model, version: 2.0.0, config: {max_position: 10}}
    - id: ma_cross
      version: 2.1.0
      config: {fast_period: 2, slow_period: 4, order_qty: 1}
    - {id: quote_counter, version: 1.0.0}
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

/// A desk at [`V1`], installed by `plugsync reconcile`, with quote_counter and the fixture
/// whose migration panics (ma_cross 2.0.2) published.
fn desk_at_v1() -> Desk {
    let desk = Desk::new();
    publish(desk.path(), "quote_counter", "stable");
    publish(desk.path(), FAULT_MIGRATE, "stable");
    desk.desire(V1);
    let installed = reconcile(&desk);
    assert!(installed.status.success(), "{}", installed.stderr);
    desk
}

#[test]
fn a_version_that_fails_is_marked_and_never_retried_while_the_rest_of_the_plan_goes_on() {
    let desk = desk_at_v1();
    desk.desire(
        "  plugins:
    - {id: risk_model, version: 1.0.0, config: {max_position: 10}}
    - id: ma_cross
      version: 2.0.0
      config: {fast_period: 2, slow_period: 4, order_qty: 1}
",
    );
    assert!(reconcile(&desk).status.success());
    // 2.0.2's migration panics: stopped in preflight, marked failed on the host; quote_counter,
    // which the failure does not touch, is installed all the same.
    let faulty = "  plugins:
    - {id: risk_model, version: 1.0.0, config: {max_position: 10}}
    - id: ma_cross
      version: 2.0.2
      config: {fast_period: 2, slow_period: 4, order_qty: 1}
    - {id: quote_counter, version: 1.0.0}
";
    desk.desire(faulty);
    check(
        &desk,
        &reconcile(&desk),
        1,
        expect![[r#"
        [1/2] ma_cross 2.0.0 → 2.0.2
              ✗ stopped at the preflight: migrating `ma_cross` 2.0.0 -> 2.0.2 (step 1 of 1) failed in the preview process: plugin `ma_cross` 2.0.2 failed in `migrate` (panic caught): plugin panicked: migration bug: cannot migrate 2.0.0 -> 2.0.2 (fault injected by the ma_cross_fault_migrate fixture)
                nothing changed on the host
              ma_cross 2.0.2 marked failed on this host: not retried (clear: `plugsync retry ma_cross`, or change its entry in plugins.yaml)
        [2/2] quote_counter 1.0.0 (install) not started
        [1/1] quote_counter 1.0.0 (install) preflight ✓  staged ✓  installed  committed

        Reconcile failed at step 1 of 2 (ma_cross 2.0.0 → 2.0.2); 1 step applied. The host runs ma_cross 2.0.0, quote_counter 1.0.0, risk_model 1.0.0 — a committed set.
        Kept: ma_cross 2.0.0: 2.0.2 marked failed by default at [TIME]: preflight failed: migrating `ma_cross` 2.0.0 -> 2.0.2 (step 1 of 1) failed in the preview process: plugin `ma_cross` 2.0.2 failed in `migrate` (panic caught): plugin panicked: migration bug: cannot migrate 2.0.0 -> 2.0.2 (fault injected by the ma_cross_fault_migrate fixture); not retried (clear: `plugsync retry ma_cross`, or change its entry)
    "#]],
    );
    assert_eq!(
        running(&desk),
        ["ma_cross 2.0.0", "quote_counter 1.0.0", "risk_model 1.0.0"]
    );
    let mark = &desk.api.status()["restraints"]["failed"][0];
    assert_eq!(
        (&mark["plugin"], &mark["version"], &mark["because"]["by"]),
        (&json!("ma_cross"), &json!("2.0.2"), &json!("default"))
    );
    assert_eq!(
        mark["because"]["entry_sha256"].as_str().map(str::len),
        Some(64)
    );

    // Not retried: not by this client, not by another, not by a dry run.
    check(
        &desk,
        &reconcile(&desk),
        0,
        expect![[r#"
            Nothing to apply now: the rest is kept where it is (below). The host runs ma_cross 2.0.0, quote_counter 1.0.0, risk_model 1.0.0.
            Kept: ma_cross 2.0.0: 2.0.2 marked failed by default at [TIME]: preflight failed: migrating `ma_cross` 2.0.0 -> 2.0.2 (step 1 of 1) failed in the preview process: plugin `ma_cross` 2.0.2 failed in `migrate` (panic caught): plugin panicked: migration bug: cannot migrate 2.0.0 -> 2.0.2 (fault injected by the ma_cross_fault_migrate fixture); not retried (clear: `plugsync retry ma_cross`, or change its entry)
        "#]],
    );
    let by_bob = desk.reconcile_of(
        &desk.path().join("plugins.yaml"),
        &[
            ("PLUGSYNC_NOW", SATURDAY),
            (
                "PLUGSYNC_STATE_DIR",
                desk.path().join("bob-state").to_str().unwrap(),
            ),
        ],
        &[
            "--token-file",
            desk.path().join("bob.token").to_str().unwrap(),
        ],
    );
    check(
        &desk,
        &by_bob,
        0,
        expect![[r#"
            Nothing to apply now: the rest is kept where it is (below). The host runs ma_cross 2.0.0, quote_counter 1.0.0, risk_model 1.0.0.
            Kept: ma_cross 2.0.0: 2.0.2 marked failed by default at [TIME]: preflight failed: migrating `ma_cross` 2.0.0 -> 2.0.2 (step 1 of 1) failed in the preview process: plugin `ma_cross` 2.0.2 failed in `migrate` (panic caught): plugin panicked: migration bug: cannot migrate 2.0.0 -> 2.0.2 (fault injected by the ma_cross_fault_migrate fixture); not retried (clear: `plugsync retry ma_cross`, or change its entry)
        "#]],
    );
    desk.check(&desk.dry_run(&[]), 0, expect![[r#"
        Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/plugins.yaml (no plugins.lock: versions resolved afresh)

            risk_model     1.0.0  unchanged
          = ma_cross       2.0.0  2.0.2 marked failed by default at [TIME]: preflight failed: migrating `ma_cross` 2.0.0 -> 2.0.2 (step 1 of 1) failed in the preview process: plugin `ma_cross` 2.0.2 failed in `migrate` (panic caught): plugin panicked: migration bug: cannot migrate 2.0.0 -> 2.0.2 (fault injected by the ma_cross_fault_migrate fixture); not retried (clear: `plugsync retry ma_cross`, or change its entry)
            quote_counter  1.0.0  unchanged

        No changes now: 1 plugin kept where it is (above); the rest runs what plugins.yaml asks. Plan id [ID].
    "#]]);

    // `retry` clears the mark: the next reconcile tries 2.0.2 again (and it fails again).
    let retried = desk.operator(&["retry", "ma_cross"]);
    desk.check(&retried, 0, expect![[r#"
        Cleared the failed mark on `ma_cross` 2.0.2 (by default at [TIME]: preflight failed: migrating `ma_cross` 2.0.0 -> 2.0.2 (step 1 of 1) failed in the preview process: plugin `ma_cross` 2.0.2 failed in `migrate` (panic caught): plugin panicked: migration bug: cannot migrate 2.0.0 -> 2.0.2 (fault injected by the ma_cross_fault_migrate fixture)).
        The next reconcile may try it again.
    "#]]);
    let again = reconcile(&desk);
    assert_eq!(again.status.code(), Some(1), "{}", again.stdout);
    assert!(
        again.stdout.contains("✗ stopped at the preflight"),
        "{}",
        again.stdout
    );
    let retried_twice = desk.operator(&["retry", "quote_counter"]);
    desk.check(&retried_twice, 1, expect![[r#"
        error: no version of `quote_counter` is marked failed on the host at [HOST]: nothing was changed; `plugsync status` lists the failed marks
    "#]]);

    // A change of ma_cross's own entry lifts the mark: 2.1.0 (with risk_model 2.0.0) goes.
    desk.desire(V2_AND_QUOTES);
    let moved_on = reconcile(&desk);
    check(
        &desk,
        &moved_on,
        0,
        expect![[r#"
        [1/2] risk_model 1.0.0 → 2.0.0     preflight ✓  staged ✓  switched (slot held [N] µs)  committed
        [2/2] ma_cross 2.0.0 → 2.1.0       preflight ✓  staged ✓  switched (slot held [N] µs)  committed

        Applied 2 steps. The host runs ma_cross 2.1.0, quote_counter 1.0.0, risk_model 2.0.0.
    "#]],
    );
    expect![[r#"
        Cleared the failed mark on `ma_cross` 2.0.2: its entry in plugins.yaml changed
        Applying plan [SHORT] (2 steps) to [HOST]
    "#]]
    .assert_eq(&normalise_apply(&desk.normalised(&moved_on.stderr)));
    assert_eq!(desk.api.status()["restraints"]["failed"], json!([]));
    assert_eq!(
        running(&desk),
        ["ma_cross 2.1.0", "quote_counter 1.0.0", "risk_model 2.0.0"]
    );
}

#[test]
fn a_hold_keeps_its_plugin_and_what_needs_it_for_every_client_until_released_or_its_entry_changes()
{
    let desk = desk_at_v1();
    // plugins.yaml asks for the new versions; risk_model is held at 1.0.0 under that entry.
    desk.desire(V2_AND_QUOTES);
    let held = desk.operator(&[
        "hold",
        "risk_model",
        "--reason",
        "limits under review",
        "-f",
        desk.path().join("plugins.yaml").to_str().unwrap(),
    ]);
    desk.check(&held, 0, expect![[r#"
        Held `risk_model` at 1.0.0: every reconcile keeps it there until `plugsync release risk_model`, or until its entry in plugins.yaml changes.
    "#]]);
    // Another client sees the same hold: risk_model stays, ma_cross 2.1.0 (which needs
    // risk_model >=2.0) stays with it, quote_counter goes.
    let bob = desk.path().join("bob.token");
    desk.check(
        &desk.dry_run(&["--token-file", bob.to_str().unwrap()]),
        2,
        expect![[r#"
            Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
            Desired [ROOT]/plugins.yaml (no plugins.lock: versions resolved afresh)

              = risk_model     1.0.0  held by default since [TIME]: limits under review; plugins.yaml asks 2.0.0 (release: `plugsync release risk_model`)
              = ma_cross       1.0.0  plugins.yaml asks 2.1.0, which needs `risk_model` >=2.0, <3: `risk_model` stays
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

            Plan: 1 to install, 0 to upgrade, 0 to downgrade, 0 to reconfigure, 0 to remove (1 step), 0 unchanged, 2 kept. Plan id [ID].
        "#]],
    );
    check(
        &desk,
        &reconcile(&desk),
        0,
        expect![[r#"
            [1/1] quote_counter 1.0.0 (install) preflight ✓  staged ✓  installed  committed

            Applied 1 step. The host runs ma_cross 1.0.0, quote_counter 1.0.0, risk_model 1.0.0.
            Kept: risk_model 1.0.0: held by default since [TIME]: limits under review; plugins.yaml asks 2.0.0 (release: `plugsync release risk_model`)
            Kept: ma_cross 1.0.0: plugins.yaml asks 2.1.0, which needs `risk_model` >=2.0, <3: `risk_model` stays
        "#]],
    );
    assert_eq!(
        running(&desk),
        ["ma_cross 1.0.0", "quote_counter 1.0.0", "risk_model 1.0.0"]
    );

    // Released by hand: the next reconcile moves both.
    desk.check(
        &desk.operator(&["release", "risk_model"]),
        0,
        expect![[r#"
            Released `risk_model` (held by default since [TIME]: limits under review): the next reconcile moves it to what plugins.yaml asks.
        "#]],
    );
    check(
        &desk,
        &reconcile(&desk),
        0,
        expect![[r#"
        [1/3] ma_cross 1.0.0 → 2.0.0       preflight ✓  staged ✓  switched (slot held [N] µs)  committed
        [2/3] risk_model 1.0.0 → 2.0.0     preflight ✓  staged ✓  switched (slot held [N] µs)  committed
        [3/3] ma_cross 2.0.0 → 2.1.0       preflight ✓  staged ✓  switched (slot held [N] µs)  committed

        Applied 3 steps. The host runs ma_cross 2.1.0, quote_counter 1.0.0, risk_model 2.0.0.
    "#]],
    );
    assert_eq!(
        running(&desk),
        ["ma_cross 2.1.0", "quote_counter 1.0.0", "risk_model 2.0.0"]
    );
    desk.check(
        &desk.operator(&["release", "risk_model"]),
        1,
        expect![[r#"
            error: `risk_model` is not held on the host at [HOST]: nothing was changed; `plugsync status` lists the holds
        "#]],
    );

    // Held under its entry, then the entry changes: the hold is lifted, the change made.
    let file = desk.path().join("plugins.yaml");
    let held = desk.operator(&[
        "hold",
        "ma_cross",
        "--reason",
        "watching fills",
        "-f",
        file.to_str().unwrap(),
    ]);
    assert!(held.status.success(), "{}", held.stderr);
    // An edit elsewhere in the file does not lift it.
    desk.desire(&V2_AND_QUOTES.replace("max_position: 10", "max_position: 12"));
    let elsewhere = reconcile(&desk);
    assert!(elsewhere.status.success(), "{}", elsewhere.stderr);
    assert!(desk.api.status()["restraints"]["holds"]["ma_cross"].is_object());
    desk.desire(
        &V2_AND_QUOTES
            .replace("max_position: 10", "max_position: 12")
            .replace("order_qty: 1", "order_qty: 2"),
    );
    let edited = reconcile(&desk);
    check(
        &desk,
        &edited,
        0,
        expect![[r#"
        [1/1] ma_cross 2.1.0 (reconfigure) preflight ✓  staged ✓  switched (slot held [N] µs)  committed

        Applied 1 step. The host runs ma_cross 2.1.0, quote_counter 1.0.0, risk_model 2.0.0.
    "#]],
    );
    expect![[r#"
        Released the hold on `ma_cross` (by default: watching fills): its entry in plugins.yaml changed
        Applying plan [SHORT] (1 step) to [HOST]
    "#]].assert_eq(&normalise_apply(&desk.normalised(&edited.stderr)));
    assert_eq!(desk.api.status()["restraints"]["holds"], json!({}));
}

#[test]
fn a_freeze_goes_while_another_client_reconciles_and_stops_every_change_until_lifted() {
    let desk = desk_at_v1();
    // alice holds the reconcile lease: a hold would wait for it, a freeze does not.
    let alice = support::process::Api::new(&desk.host, ALICE_TOKEN);
    let lease = alice.post("/v1/lease", json!({"action": "acquire", "ttl_ms": 600_000}));
    let frozen = desk.operator(&["freeze", "--reason", "quarter-end close"]);
    desk.check(&frozen, 0, expect![[r#"
        Froze the host at [HOST]: every client's switch, install and unload is refused until `plugsync unfreeze` (a pending step may still be committed or rolled back). Reason: quarter-end close
    "#]]);
    let waiting = desk.operator(&["hold", "ma_cross", "--reason", "x", "--no-wait"]);
    desk.check(&waiting, 1, expect![[r#"
        error: `alice` is reconciling the host at [HOST]: nothing was applied; run again without `--no-wait` to wait for it, or take its lease with `plugsync reconcile --break-lease --reason TEXT` if that client is gone
    "#]]);
    alice.post(
        "/v1/lease",
        json!({"action": "release", "epoch": lease["holder"]["epoch"]}),
    );

    desk.desire(&V1.replace(
        "version: 1.0.0, config: {max_position",
        "version: 1.1.0, config: {max_position",
    ));
    check(
        &desk,
        &reconcile(&desk),
        1,
        expect![[r#"
        error: the host is frozen by default: quarter-end close; nothing was applied. Lift it with `plugsync unfreeze` once it is over, or go ahead with `--force --reason TEXT` (recorded on the host)
    "#]],
    );
    desk.check(&desk.dry_run(&[]), 2, expect![[r#"
        Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/plugins.yaml (no plugins.lock: versions resolved afresh)

          ~ risk_model  1.0.0 → 1.1.0  pinned                        1 step
            ma_cross    1.0.0          unchanged

        Set:
          --- running
          +++ desired
          @@ -1,2 +1,2 @@
          -risk_model 1.0.0
          +risk_model 1.1.0
           ma_cross 1.0.0

        Order (each intermediate set satisfies every dependency):

           1. risk_model  1.0.0 → 1.1.0      minor  migrate   pinned
               switch: immediate; verify: health
               config (from plugins.yaml): unchanged
               state (live snapshot, migrated in a sandbox): unchanged

        Refused: the host is frozen by default since [TIME]: quarter-end close (lift: `plugsync unfreeze`)

        Plan: 0 to install, 1 to upgrade, 0 to downgrade, 0 to reconfigure, 0 to remove (1 step), 1 unchanged. Plan id [ID].
    "#]]);
    desk.check(
        &desk.operator(&["unfreeze"]),
        0,
        expect![[r#"
        Unfroze the host at [HOST] (frozen by default since [TIME]: quarter-end close).
    "#]],
    );
    assert!(reconcile(&desk).status.success());
    assert_eq!(running(&desk), ["ma_cross 1.0.0", "risk_model 1.1.0"]);
    desk.check(
        &desk.operator(&["unfreeze"]),
        0,
        expect![[r#"
        The host at [HOST] is not frozen: nothing to do.
    "#]],
    );
}

#[test]
fn status_shows_desired_against_running_what_is_kept_and_why_the_last_plan_and_rollback_points() {
    let desk = desk_at_v1();
    desk.desire(V2_AND_QUOTES);
    let file = desk.path().join("plugins.yaml");
    let file = file.to_str().unwrap();
    let held = desk.operator(&[
        "hold",
        "risk_model",
        "--reason",
        "limits under review",
        "-f",
        file,
    ]);
    assert_exit(&held, 0);
    assert!(reconcile(&desk).status.success());

    let status = desk.operator(&["status", "-f", file]);
    assert_exit(&status, 0);
    let operator = &status.stdout[status.stdout.find("\ndesired:").unwrap()..];
    expect![[r#"

        desired: [ROOT]/plugins.yaml
          PLUGIN         DESIRED  RUNNING  STATUS
          risk_model     2.0.0    1.0.0    kept: held by default since [TIME]: limits under review; plugins.yaml asks 2.0.0 (release: `plugsync release risk_model`)
          ma_cross       2.1.0    1.0.0    kept: plugins.yaml asks 2.1.0, which needs `risk_model` >=2.0, <3: `risk_model` stays
          quote_counter  1.0.0    1.0.0    in-sync
          nothing for the next reconcile to do now: 2 kept (above)

        last plan applied here: [SHORT], [TIME] by default: 1 committed
    "#]].assert_eq(&normalise_apply(&desk.normalised(operator)));

    // As JSON, under its own key: the rest is still the host's running state, which a dry run
    // reads back (`--observed`).
    let json = desk.operator(&["status", "-f", file, "--output", "json"]);
    assert_exit(&json, 0);
    let value: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    let operator = serde_json::to_string_pretty(&value["plugsync"]).unwrap();
    expect![[r#"
        {
          "desired": {
            "commit": null,
            "dirty": null,
            "drift": [],
            "file": "[ROOT]/plugins.yaml",
            "inSync": true,
            "lifts": [],
            "plugins": [
              {
                "desired": "2.0.0",
                "plugin": "risk_model",
                "running": "1.0.0",
                "status": "kept",
                "why": "held by default since [TIME]: limits under review; plugins.yaml asks 2.0.0 (release: `plugsync release risk_model`)"
              },
              {
                "desired": "2.1.0",
                "plugin": "ma_cross",
                "running": "1.0.0",
                "status": "kept",
                "why": "plugins.yaml asks 2.1.0, which needs `risk_model` >=2.0, <3: `risk_model` stays"
              },
              {
                "desired": "1.0.0",
                "plugin": "quote_counter",
                "running": "1.0.0",
                "status": "in-sync"
              }
            ]
          },
          "lastPlan": {
            "client": "default",
            "done": 1,
            "failed": [],
            "planId": "[HASH]",
            "startedAt": "[TIME]",
            "unfinished": 0
          },
          "rollbackPoints": []
        }
    "#]].assert_eq(&normalise_apply(&desk.normalised(&operator)));
    let plugins = &value["plugsync"]["desired"]["plugins"];
    let statuses: Vec<(&str, &str)> = (plugins.as_array().unwrap().iter())
        .map(|p| (p["plugin"].as_str().unwrap(), p["status"].as_str().unwrap()))
        .collect();
    assert_eq!(
        statuses,
        [
            ("risk_model", "kept"),
            ("ma_cross", "kept"),
            ("quote_counter", "in-sync")
        ]
    );
    let saved = desk.path().join("status.json");
    std::fs::write(&saved, &json.stdout).unwrap();
    let observed = desk.dry_run(&["--observed", saved.to_str().unwrap()]);
    assert_exit(&observed, 0);
}
