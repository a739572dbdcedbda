//! Update strategies through the binary, against a real reference host: `when-flat` waits while
//! the strategy holds a position and switches once it is flat; `when-idle` switches once the
//! plugin served no call for `idleFor`, and with a busy feed hits its deadline, then fails or
//! (`fallback: immediate`) switches anyway; a plugin built before ABI 1.3 counts as always
//! flat; `scheduled` keeps its plugin until `at` (time from `PLUGSYNC_NOW`). Each as the dry
//! run shows it first.
//!
//! Barriers, not sleeps: the test sends the desk's calls itself (`--allow-calls`), and waits for
//! the reconcile to say it waits before it flattens the strategy. The host's "not yet" spends
//! no step id: the switch that finally happens carries the step's first and only id.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use expect_test::expect;
use serde_json::{Value, json};
use support::desk::*;
use support::process::{Finished, Proc};
use support::*;

/// risk_model 1.0.0 and ma_cross 1.0.0 (fast 2, slow 3), nothing traded yet.
fn desk() -> Desk {
    let desk = Desk::new();
    desk.install(RISK_MODEL_1_0_0, json!({"max_position": 10}));
    desk.install(
        MA_CROSS_1_0_0,
        json!({"fast_ma_period": 2, "slow_ma_period": 3, "order_qty": 1}),
    );
    desk
}

/// plugins.yaml: both plugins, ma_cross at `version` with `strategy`.
fn desire(desk: &Desk, version: &str, strategy: &str) {
    desk.desire(&format!(
        "  plugins:
    - {{id: risk_model, version: 1.0.0, config: {{max_position: 10}}}}
    - id: ma_cross
      version: {version}
      strategy: {strategy}
"
    ));
}

/// The desk sends `input` to ma_cross.
fn send(desk: &Desk, input: Value) {
    desk.api
        .post("/v1/plugins/ma_cross/call", json!({"input": input}));
}

fn bar(close: f64) -> Value {
    json!({"bar": {"instrument": "ES", "close": close}})
}

/// Long 1 in ES: the averages cross up (buy 1), and the order fills.
fn go_long(desk: &Desk) {
    for close in [10.0, 10.0, 13.0] {
        send(desk, bar(close));
    }
    send(
        desk,
        json!({"fill": {"order_id": 1, "instrument": "ES", "qty": 1, "price": 13.0}}),
    );
}

/// `plugsync reconcile ARGS` on a Saturday, in the background.
fn reconcile_in_background(desk: &Desk, args: &[&str]) -> Proc {
    desk.reconcile_in_background(&[("PLUGSYNC_NOW", SATURDAY)], args)
}

fn reconcile_at(desk: &Desk, now: &str, args: &[&str]) -> Finished {
    desk.reconcile_of(
        &desk.path().join("plugins.yaml"),
        &[("PLUGSYNC_NOW", now)],
        args,
    )
}

/// Checks the exit code and the reconcile's normalised output, its waits as `waited [T]`.
fn check_applied(desk: &Desk, finished: &Finished, code: i32, expected: expect_test::Expect) {
    assert_exit(finished, code);
    let shown = if finished.stdout.is_empty() {
        &finished.stderr
    } else {
        &finished.stdout
    };
    let text = normalise_apply(&desk.normalised(shown));
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(at) = rest.find("waited ") {
        out.push_str(&rest[..at]);
        let after = &rest[at..];
        let end = after.find(" until ").unwrap_or(after.len());
        out.push_str("waited [T]");
        rest = &after[end..];
    }
    out.push_str(rest);
    // The host's clock: how long ago a busy feed's last call was.
    let out = match (out.find("its last call was "), out.find(" ms ago")) {
        (Some(from), Some(to)) if from < to => {
            format!("{}its last call was [N]{}", &out[..from], &out[to..])
        }
        _ => out,
    };
    expected.assert_eq(&out);
}

/// The version ma_cross runs, and the step id of what was last applied to it.
fn applied(desk: &Desk) -> (String, String) {
    let plugin = desk.api.plugin("ma_cross");
    (
        plugin["version"]["version"].as_str().unwrap().to_owned(),
        plugin["applied"]["step_id"]
            .as_str()
            .unwrap_or("")
            .to_owned(),
    )
}

/// The one plan's first step id as the journal gave it (`{plan}.1.1`) — attempt 1: no "not
/// yet" answer spent it.
fn first_attempt(step_id: &str) {
    assert!(step_id.ends_with(".1.1"), "{step_id}");
}

#[test]
fn when_flat_waits_while_ma_cross_holds_a_position_and_switches_once_it_is_flat() {
    let desk = desk();
    go_long(&desk);
    desire(&desk, "2.0.0", "{kind: when-flat, deadline: 10m}");
    desk.check(&desk.dry_run(&["--no-preview"]), 2, expect![[r#"
        Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/plugins.yaml (no plugins.lock: versions resolved afresh)

            risk_model  1.0.0          unchanged
          ~ ma_cross    1.0.0 → 2.0.0  pinned                        1 step

        Set:
          --- running
          +++ desired
          @@ -1,2 +1,2 @@
           risk_model 1.0.0
          -ma_cross 1.0.0
          +ma_cross 2.0.0

        Order (each intermediate set satisfies every dependency):

           1. ma_cross  1.0.0 → 2.0.0      major  migrate   pinned
               switch: when flat (up to 10m); verify: health
               `ma_cross` holds a position of +1 in ES: would wait up to 10m for flat, then fail

        Plan: 0 to install, 1 to upgrade, 0 to downgrade, 0 to reconfigure, 0 to remove (1 step), 1 unchanged. Plan id [ID].
    "#]]);

    let running = reconcile_in_background(&desk, &[]);
    wait_until("the reconcile waits for flat", || {
        running.stderr().contains("waits until it is flat")
    });
    assert_eq!(applied(&desk).0, "1.0.0", "nothing switched while it holds");
    // Down: sell 2 to go short; 1 fills, the rest is cancelled: flat.
    send(&desk, bar(4.0));
    send(
        &desk,
        json!({"fill": {"order_id": 2, "instrument": "ES", "qty": -1, "price": 4.0}}),
    );
    assert!(running.stderr().contains("holds a position of +1 in ES"));
    send(
        &desk,
        json!({"cancel": {"order_id": 2, "instrument": "ES", "qty": -1}}),
    );
    let finished = running.finish();
    check_applied(
        &desk,
        &finished,
        0,
        expect![[r#"
            [1/1] ma_cross 1.0.0 → 2.0.0       preflight ✓  staged ✓  waited [T] until flat  switched (slot held [N] µs)  committed

            Applied 1 step. The host runs ma_cross 2.0.0, risk_model 1.0.0.
        "#]],
    );
    expect![[r#"
        Applying plan [SHORT] (1 step) to [HOST]
        step [HASH].1.1: `ma_cross` waits until it is flat: it is not flat (holds a position of +1 in ES); asked again for up to 10m, then it fails
    "#]].assert_eq(&normalise_apply(&desk.normalised(&finished.stderr)));
    let (version, step_id) = applied(&desk);
    assert_eq!(version, "2.0.0");
    first_attempt(&step_id);
    let state = desk.api.state("ma_cross");
    assert_eq!(state["instruments"]["ES"]["position"], 0, "{state}");
}

#[test]
fn when_idle_switches_once_the_feed_pauses_and_at_its_deadline_fails_or_falls_back() {
    let desk = desk();
    go_long(&desk);

    // The dry run: the last call was just now, so an hour without one is not there yet.
    desire(
        &desk,
        "2.0.0",
        "{kind: when-idle, idleFor: 1h, deadline: 10m}",
    );
    let dry_run = desk.dry_run(&["--no-preview"]);
    assert_exit(&dry_run, 2);
    let shown = desk.normalised(&dry_run.stdout);
    let step = shown
        .lines()
        .skip_while(|l| !l.contains("switch: when idle"));
    expect![[r#"
        switch: when idle for 1h (up to 10m); verify: health
        `ma_cross` served its last call [T] ago: would wait up to 10m for 1h without a call, then fail"#]].assert_eq(&step.take(2).map(str::trim).collect::<Vec<_>>().join("\n"));

    // A paused feed: idle for 1s comes while the reconcile asks.
    desire(
        &desk,
        "2.0.0",
        "{kind: when-idle, idleFor: 1s, deadline: 10m}",
    );
    let finished = reconcile_at(&desk, SATURDAY, &[]);
    assert_exit(&finished, 0);
    let (version, step_id) = applied(&desk);
    assert_eq!(version, "2.0.0");
    first_attempt(&step_id);

    // A busy feed: a call every few milliseconds, never 1h without one.
    let busy = Arc::new(AtomicBool::new(true));
    let feed = {
        let (url, busy) = (desk.host.url.clone(), busy.clone());
        std::thread::spawn(move || {
            let api = support::process::Api::at(&url, TOKEN);
            let mut close = 100.0;
            while busy.load(Ordering::Relaxed) {
                close += 0.25;
                api.post("/v1/plugins/ma_cross/call", json!({"input": bar(close)}));
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    let config = "{fast_period: 2, slow_period: 3}";
    for (fallback, code, expected) in [
        (
            "fail",
            1,
            expect![[r#"
                [1/1] ma_cross 2.0.0 (reconfigure) preflight ✓  staged ✓
                      ✗ stopped at the strategy: `ma_cross` was not idle for 1h within its deadline of 1s (its last call was [N] ms ago, and it waits for 1h without one): nothing changed; the next reconcile waits again (or set `fallback: immediate`)
                        nothing changed on the host

                Reconcile failed at step 1 of 1 (ma_cross 2.0.0 (reconfigure)); 0 steps applied. The host runs ma_cross 2.0.0, risk_model 1.0.0 — a committed set.
            "#]],
        ),
        (
            "immediate",
            0,
            expect![[r#"
                [1/1] ma_cross 2.0.0 (reconfigure) preflight ✓  staged ✓  not idle for 1h within 1s: switching anyway (fallback: immediate)  switched (slot held [N] µs)  committed

                Applied 1 step. The host runs ma_cross 2.0.0, risk_model 1.0.0.
            "#]],
        ),
    ] {
        let strategy =
            format!("{{kind: when-idle, idleFor: 1h, deadline: 1s, fallback: {fallback}}}");
        desk.desire(&format!(
            "  plugins:
    - {{id: risk_model, version: 1.0.0, config: {{max_position: 10}}}}
    - id: ma_cross
      version: 2.0.0
      config: {config}
      strategy: {strategy}
"
        ));
        let finished = reconcile_at(&desk, SATURDAY, &[]);
        check_applied(&desk, &finished, code, expected);
    }
    busy.store(false, Ordering::Relaxed);
    feed.join().unwrap();
    let plugin = desk.api.plugin("ma_cross");
    assert_eq!(plugin["config"]["fast_period"], 2, "{plugin}");
    first_attempt(&applied(&desk).1);
}

#[test]
fn a_plugin_built_before_abi_1_3_counts_as_always_flat_and_the_plan_says_so() {
    let desk = Desk::new();
    desk.install(RISK_MODEL_1_0_0, json!({"max_position": 10}));
    // ma_cross 1.0.0 as an ABI 1.2 SDK built it: minor 2 in its metadata and vtable header.
    let mut bytes = std::fs::read(lib(MA_CROSS_1_0_0)).unwrap();
    let abi = plugsync_plugin::abi::ABI_MINOR;
    replace_once(
        &mut bytes,
        format!(r#""abi_minor":{abi}"#).as_bytes(),
        br#""abi_minor":2"#,
    );
    let header = |minor: u16, size: usize| {
        let version = (u32::from(plugsync_plugin::abi::ABI_MAJOR) << 16) | u32::from(minor);
        [version.to_ne_bytes(), (size as u32).to_ne_bytes()].concat()
    };
    let full = size_of::<plugsync_plugin::abi::PluginVTable>();
    replace_once(
        &mut bytes,
        &header(abi, full),
        &header(2, plugsync_plugin::abi::VTABLE_SIZE_1_2),
    );
    let built = desk.path().join("libma_cross_v1_0_0.so");
    std::fs::write(&built, &bytes).unwrap();
    let artifact = desk.api.stage(&built);
    desk.api.post(
        "/v1/steps/setup-old-abi/install",
        json!({"artifact": artifact,
               "config": {"fast_ma_period": 2, "slow_ma_period": 3, "order_qty": 1},
               "origin": {"tool": "plugsync-reconcile"}}),
    );
    go_long(&desk);
    desire(&desk, "2.0.0", "{kind: when-flat, deadline: 10m}");
    let dry_run = desk.dry_run(&["--no-preview"]);
    assert_exit(&dry_run, 2);
    let step = dry_run
        .stdout
        .lines()
        .skip_while(|l| !l.contains("switch: when flat"));
    expect![[r#"
               switch: when flat (up to 10m); verify: health
               `ma_cross` is built for plugin ABI 1.2, before `swap_safe`: it cannot say whether it is flat and counts as always flat: would switch at once"#]].assert_eq(&step.take(2).map(str::trim).collect::<Vec<_>>().join("\n"));
    // Not in the registry (an edited build): no preflight of its switch.
    let finished = reconcile_at(&desk, SATURDAY, &["--no-preflight"]);
    check_applied(
        &desk,
        &finished,
        0,
        expect![[r#"
        [1/1] ma_cross 1.0.0 → 2.0.0       not preflighted  staged ✓  switched (slot held [N] µs)  committed

        Applied 1 step. The host runs ma_cross 2.0.0, risk_model 1.0.0.
    "#]],
    );
    let state = desk.api.state("ma_cross");
    assert_eq!(
        state["instruments"]["ES"]["position"], 1,
        "it switched holding"
    );
}

/// `bytes` with `from` replaced by `to` (same length), where `from` occurs exactly once.
fn replace_once(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len());
    let found: Vec<usize> = (bytes.windows(from.len()).enumerate())
        .filter(|(_, w)| *w == from)
        .map(|(at, _)| at)
        .collect();
    assert_eq!(found.len(), 1, "{found:?}");
    bytes[found[0]..found[0] + from.len()].copy_from_slice(to);
}

#[test]
fn scheduled_keeps_ma_cross_until_at_and_moves_it_at_the_first_reconcile_after() {
    let desk = desk();
    go_long(&desk);
    // (what plugins.yaml asks, the dry run and the reconcile at SATURDAY — 17:00 UTC, noon in
    // New York —, then a reconcile when the time has come)
    let cases = [
        (
            "2.0.0",
            "2026-12-05T18:00:00Z",
            expect![[r#"
                Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
                Desired [ROOT]/plugins.yaml (no plugins.lock: versions resolved afresh)

                    risk_model  1.0.0  unchanged
                  = ma_cross    1.0.0  plugins.yaml asks 2.0.0, scheduled at `[TIME]`: not before [TIME] (in 1h); the first reconcile from then on moves it

                No changes now: 1 plugin kept where it is (above); the rest runs what plugins.yaml asks. Plan id [ID].
                == reconcile
                Nothing to apply now: the rest is kept where it is (below). The host runs ma_cross 1.0.0, risk_model 1.0.0.
                Kept: ma_cross 1.0.0: plugins.yaml asks 2.0.0, scheduled at `[TIME]`: not before [TIME] (in 1h); the first reconcile from then on moves it
            "#]],
            "2026-12-05T18:00:00Z",
        ),
        (
            "2.0.0\n      config: {fast_period: 2, slow_period: 4}",
            "18:00 America/New_York",
            expect![[r#"
                Host [HOST] (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
                Desired [ROOT]/plugins.yaml (no plugins.lock: versions resolved afresh)

                    risk_model  1.0.0  unchanged
                  = ma_cross    2.0.0  plugins.yaml asks 2.0.0, scheduled at `18:00 America/New_York`: not before [TIME] (in 6h); the first reconcile from then on moves it

                No changes now: 1 plugin kept where it is (above); the rest runs what plugins.yaml asks. Plan id [ID].
                == reconcile
                Nothing to apply now: the rest is kept where it is (below). The host runs ma_cross 2.0.0, risk_model 1.0.0.
                Kept: ma_cross 2.0.0: plugins.yaml asks 2.0.0, scheduled at `18:00 America/New_York`: not before [TIME] (in 6h); the first reconcile from then on moves it
            "#]],
            "2026-12-05T23:30:00Z",
        ),
    ];
    for (version, at, before, after) in cases {
        desire(
            &desk,
            version,
            &format!("{{kind: scheduled, at: \"{at}\"}}"),
        );
        let dry_run = desk.dry_run(&["--no-preview"]);
        let kept = reconcile_at(&desk, SATURDAY, &[]);
        assert_exit(&kept, 0);
        let shown = format!(
            "{}== reconcile\n{}",
            desk.normalised(&dry_run.stdout),
            normalise_apply(&desk.normalised(&kept.stdout))
        );
        before.assert_eq(&shown);
        let moved = reconcile_at(&desk, after, &[]);
        assert_exit(&moved, 0);
        assert_eq!(applied(&desk).0, "2.0.0", "{at}");
    }
    let plugin = desk.api.plugin("ma_cross");
    assert_eq!(plugin["config"]["slow_period"], 4, "{plugin}");
}

#[test]
fn a_saved_plan_keeps_its_id_though_the_hosts_answer_to_its_strategy_moves_on() {
    let desk = desk();
    go_long(&desk);
    desire(
        &desk,
        "2.0.0",
        "{kind: when-idle, idleFor: 1h, deadline: 1s, fallback: immediate}",
    );
    let plan = desk.path().join("plan.json");
    let plan_arg = plan.to_str().unwrap();
    let saved = desk.dry_run(&["--no-preview", "--out", plan_arg]);
    assert_exit(&saved, 2);
    // The plugin's idle time, which the plan shows, is not what it was.
    send(&desk, bar(13.0));
    let finished = reconcile_at(&desk, SATURDAY, &["--plan", plan_arg]);
    assert_exit(&finished, 0);
    assert_eq!(applied(&desk).0, "2.0.0");
}

#[test]
fn a_scheduled_change_whose_time_has_come_still_waits_for_the_policy_windows() {
    let desk = desk();
    desk.desire(
        "  policy:
    windows:
      - {name: weekend, deny: true, days: [Sat, Sun], from: \"00:00\", to: \"24:00\", timezone: UTC}
  plugins:
    - {id: risk_model, version: 1.0.0, config: {max_position: 10}}
    - id: ma_cross
      version: 2.0.0
      strategy: {kind: scheduled, at: \"2026-12-05T18:00:00Z\"}
",
    );
    // Its time has come (Saturday 19:00 UTC), but the weekend is a deny window.
    let refused = reconcile_at(&desk, "2026-12-05T19:00:00Z", &[]);
    check_applied(
        &desk,
        &refused,
        1,
        expect![[r#"
        error: updates are not allowed now: deny window `weekend` is open, until Mon 00:00 UTC ([TIME]); nothing was applied. Reconcile then, or now with `--force --reason TEXT` (recorded on the host)
    "#]],
    );
    assert_eq!(applied(&desk).0, "1.0.0");
    // On Monday it goes.
    let moved = reconcile_at(&desk, "2026-12-07T09:00:00Z", &[]);
    assert_exit(&moved, 0);
    assert_eq!(applied(&desk).0, "2.0.0");
}
