//! Each fault fixture (ma_cross 2.0.x with one injected fault) leaves the previous version
//! serving, with an error that says what happened: a migration that panics, a health check
//! that fails after the switch, a probe that catches wrong orders, a panic in a call after
//! commit (the slot is marked faulted, the host keeps serving) and during a step (the step
//! rolls back by itself; the same call is served by the previous version after a replay, but
//! fails after a down-migration, whose state may hold part of it). A swap away from a faulted
//! slot starts the new version unfaulted, and its rollback brings the fault back.
//!
//! Libraries refused before `dlopen` (wrong ABI, `panic = "abort"`, wrong digest) are in
//! `tests/loader.rs`.

mod support;

use plugsync_host::{
    CallError, Health, HostError, RollbackMethod, RollbackReason, Runtime, StepState, SwapPath,
    SwapRequest, TransitionKind, VerifySpec, inspect,
};
use serde_json::json;
use support::*;

const CONFIG: fn() -> serde_json::Value = || json!({"fast_ma_period": 2, "slow_ma_period": 4});

/// A runtime serving ma_cross 1.0.0 after a few bars, with the digest of 1.0.0.
fn serving_1_0_0() -> (tempfile::TempDir, Runtime, plugsync_host::Digest) {
    let (dir, runtime) = runtime();
    let v1 = install(&runtime, MA_CROSS_1_0_0, CONFIG());
    for close in [100.0, 101.0, 102.0] {
        runtime.call("ma_cross", &bar("ES", close)).unwrap();
    }
    (dir, runtime, v1)
}

/// Checks that `v1` serves, with no step pending and no fault, and nothing but its instance
/// alive.
fn assert_still_serving(runtime: &Runtime, v1: plugsync_host::Digest) {
    let out = runtime.call("ma_cross", &bar("ES", 103.0)).unwrap();
    assert_eq!(out.receipt.digest, v1);
    let status = runtime.status();
    let plugin = &status.plugins[0];
    assert_eq!((plugin.version.digest, &plugin.pending), (v1, &None));
    assert_eq!((&plugin.fault, &plugin.health), (&None, &Health::Ok));
    assert_eq!(status.live_instances, 1);
    runtime.check_health("ma_cross").unwrap();
}

#[test]
fn a_migration_that_panics_is_refused_and_the_old_version_keeps_serving() {
    let (_dir, runtime, v1) = serving_1_0_0();
    let before = runtime.snapshot("ma_cross").unwrap();
    let faulty = stage(&runtime, FAULT_MIGRATE);

    let error = runtime
        .swap(SwapRequest::new("ma_cross", faulty))
        .unwrap_err();
    let HostError::Plugin {
        operation,
        panicked,
        ..
    } = &error
    else {
        panic!("expected a plugin error, got {error:?}");
    };
    assert_eq!((*operation, *panicked), ("migrate", true));
    assert_eq!(
        error.to_string(),
        "plugin `ma_cross` 2.0.2 failed in `migrate` (panic caught): plugin panicked: migration \
         bug: cannot migrate 1.0.0 -> 2.0.2 (fault injected by the ma_cross_fault_migrate \
         fixture)"
    );
    let after = runtime.snapshot("ma_cross").unwrap();
    assert_eq!((after.seq, after.sha256), (before.seq, before.sha256));
    assert_still_serving(&runtime, v1);
}

#[test]
fn a_version_that_fails_its_health_check_after_the_switch_is_rolled_back() {
    let (_dir, runtime, v1) = serving_1_0_0();
    let faulty = stage(&runtime, FAULT_HEALTH);
    // Healthy until it has served a call: it passes verification and the check at the switch.
    let report = runtime.swap(SwapRequest::new("ma_cross", faulty)).unwrap();
    assert_eq!(report.verification.health, Some(Ok(())));
    let served = runtime.call("ma_cross", &bar("ES", 104.0)).unwrap();
    assert_eq!(served.receipt.digest, faulty);

    // Whoever looks first rolls it back: this check, or the runtime's steward, which looks at
    // a soaking step's health every 100 ms by itself.
    let report = match runtime.check_health("ma_cross") {
        Err(HostError::RolledBack { report, .. }) => *report,
        Ok(()) => runtime.status().plugins[0]
            .last_rollback
            .clone()
            .expect("the steward rolled the step back"),
        Err(other) => panic!("expected a rollback: {other}"),
    };
    assert_eq!(
        report.reason.to_string(),
        "the new version failed its health check (order book desynchronised: positions disagree \
         with the exchange after 1 calls (fault injected by the ma_cross_fault_health fixture))"
    );
    assert!(matches!(report.reason, RollbackReason::HealthFailed { .. }));
    // The one call it served is replayed into 1.0.0 (which answers it the same way).
    assert_eq!(
        report.method,
        RollbackMethod::Replay {
            replayed: 1,
            divergences: Vec::new()
        }
    );
    assert_eq!(
        (report.from.digest, report.to.as_ref().unwrap().digest),
        (faulty, v1)
    );
    let closes = &state(&runtime.snapshot("ma_cross").unwrap())["instruments"]["ES"]["closes"];
    assert_eq!(*closes, json!([100.0, 101.0, 102.0, 104.0]));
    assert_still_serving(&runtime, v1);
}

#[test]
fn a_probe_catches_wrong_orders_before_the_switch() {
    let (_dir, runtime, v1) = serving_1_0_0();
    let faulty = stage(&runtime, FAULT_PROBE);
    let spec = VerifySpec {
        probes: vec![crossing_up_probe(1)],
        ..VerifySpec::default()
    };

    let error = runtime
        .swap(SwapRequest::new("ma_cross", faulty).verify(spec))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        r#"verification of `ma_cross` 2.0.4 failed, the running version keeps serving: probe `a fresh instance buys on a cross up` step 4: expected {"orders":[{"instrument":"ES","order_id":1,"qty":1}]}, got {"orders":[{"instrument":"ES","order_id":1,"qty":-1}]}"#
    );
    let HostError::VerificationFailed { report, .. } = error else {
        panic!("expected a verification failure");
    };
    assert_eq!(report.health, Some(Ok(())), "only the probe fails");
    let mismatches = &report.probes[0].mismatches;
    assert_eq!(mismatches.len(), 1);
    assert_eq!(mismatches[0].step, 4);
    assert_eq!(mismatches[0].actual, Ok(orders(&[(1, "ES", -1)])));
    assert_still_serving(&runtime, v1);
}

#[test]
fn a_panic_in_a_call_after_commit_fails_that_call_marks_the_slot_faulted_and_the_host_serves_on() {
    let (_dir, runtime, _) = serving_1_0_0();
    let faulty = stage(&runtime, FAULT_CALL);
    runtime.swap(SwapRequest::new("ma_cross", faulty)).unwrap();
    runtime.commit("ma_cross").unwrap();
    let risk = install(&runtime, RISK_MODEL_1_0_0, json!({}));

    let error = runtime.call("ma_cross", &bar("CRASH", 1.0)).unwrap_err();
    let CallError::Plugin {
        panicked,
        digest,
        seq,
        ..
    } = &error
    else {
        panic!("expected a plugin error, got {error:?}");
    };
    assert_eq!((*panicked, *digest, *seq), (true, faulty, 4));
    assert_eq!(
        normalise(&error.to_string(), std::path::Path::new("/")),
        "plugin `ma_cross` ([SHORT]) panicked (caught; slot marked faulted): plugin panicked: \
         call on instrument CRASH (fault injected by the ma_cross_fault_call fixture)"
    );

    // Status says the slot is faulted and why; its health fails.
    let status = runtime.status();
    let plugin = status
        .plugins
        .iter()
        .find(|p| p.plugin == "ma_cross")
        .unwrap();
    let fault = plugin.fault.as_ref().expect("the slot is marked faulted");
    assert_eq!((fault.seq, fault.digest), (4, faulty));
    assert!(
        fault.message.contains("call on instrument CRASH"),
        "{fault:?}"
    );
    assert_eq!(
        (
            plugin.counters.calls,
            plugin.counters.errors,
            plugin.counters.panics
        ),
        (4, 1, 1)
    );
    assert!(!plugin.health.is_ok(), "{:?}", plugin.health);
    let health = runtime.check_health("ma_cross").unwrap_err();
    assert_eq!(
        health.to_string(),
        "plugin `ma_cross` 2.0.3 is faulted: it panicked in call #4 (plugin panicked: call on \
         instrument CRASH (fault injected by the ma_cross_fault_call fixture)), so its state is \
         suspect; swap to a fixed version or reinstall it"
    );

    // The host serves on: other instruments, and other plugins.
    let out = runtime.call("ma_cross", &bar("ES", 103.0)).unwrap();
    assert_eq!((out.receipt.digest, out.receipt.seq), (faulty, 5));
    let check = json!({"check": {"order_id": 1, "instrument": "ES", "qty": 1}});
    let out = runtime
        .call("risk_model", check.to_string().as_bytes())
        .unwrap();
    assert_eq!(out.receipt.digest, risk);
    assert_eq!(json(&out.output)["approved"], true);
}

#[test]
fn a_panic_in_a_call_during_a_step_rolls_the_step_back_and_that_call_is_served_by_the_old_version()
{
    let (_dir, runtime, v1) = serving_1_0_0();
    let faulty = stage(&runtime, FAULT_CALL);
    let mut calls = Vec::new();
    runtime.swap(SwapRequest::new("ma_cross", faulty)).unwrap();
    calls.push(record(&runtime, "ma_cross", bar("NQ", 50.0)));
    assert_eq!(calls[0].receipt.digest, faulty);

    // No failed call: the caller gets 1.0.0's answer.
    calls.push(record(&runtime, "ma_cross", bar("CRASH", 1.0)));
    assert_eq!(calls[1].receipt.digest, v1);
    assert_eq!(calls[1].receipt.seq, 5);
    assert_eq!(json(&calls[1].output), orders(&[]));

    let status = runtime.status();
    let plugin = &status.plugins[0];
    assert_eq!((plugin.version.digest, &plugin.pending), (v1, &None));
    assert_eq!(plugin.fault, None, "1.0.0 did not panic");
    let rollback = plugin.last_rollback.as_ref().expect("the step rolled back");
    assert!(
        matches!(&rollback.reason, RollbackReason::CallPanicked { seq: 5, message }
            if message.contains("call on instrument CRASH")),
        "{:?}",
        rollback.reason
    );
    assert_eq!(
        rollback.method,
        RollbackMethod::Replay {
            replayed: 1,
            divergences: Vec::new()
        }
    );
    assert_eq!(
        rollback.reason.to_string(),
        "the new version panicked in call #5 (plugin panicked: call on instrument CRASH (fault \
         injected by the ma_cross_fault_call fixture))"
    );

    // 1.0.0's state is that of a plugin that was never updated, the CRASH bar included.
    let (_reference_dir, reference, clock) = reference_runtime();
    install(&reference, MA_CROSS_1_0_0, CONFIG());
    for close in [100.0, 101.0, 102.0] {
        reference.call("ma_cross", &bar("ES", close)).unwrap();
    }
    replay(&reference, &clock, "ma_cross", &calls);
    assert_eq!(
        state(&runtime.snapshot("ma_cross").unwrap()),
        state(&reference.snapshot("ma_cross").unwrap())
    );
    assert_still_serving(&runtime, v1);
}

#[test]
fn a_panic_in_a_call_during_a_step_whose_journal_overflowed_fails_that_call_and_migrates_the_state_back()
 {
    let (_dir, runtime, v1) = serving_1_0_0();
    let faulty = stage(&runtime, FAULT_CALL);
    let swap = runtime
        .swap(SwapRequest::new("ma_cross", faulty).journal_capacity(1))
        .unwrap();
    assert_eq!(swap.switched_seq, 3);
    // Three calls, more than the journal holds: a replay is impossible.
    let calls: Vec<Recorded> = [bar("NQ", 50.0), fill(1, "NQ", 2, 50.0), bar("ES", 104.0)]
        .into_iter()
        .map(|input| record(&runtime, "ma_cross", input))
        .collect();
    assert!(calls.iter().all(|c| c.receipt.digest == faulty));
    assert_eq!(json(&calls[2].output), orders(&[(1, "ES", 1)]));
    assert!(
        !runtime.status().plugins[0]
            .pending
            .as_ref()
            .unwrap()
            .journal_complete
    );

    // The step rolls back by down-migration of the state of the instance that panicked midway
    // through this call: serving it again could apply it twice, so the caller gets the error.
    let error = runtime.call("ma_cross", &bar("CRASH", 1.0)).unwrap_err();
    let panic = "plugin panicked: call on instrument CRASH (fault injected by the \
                 ma_cross_fault_call fixture)";
    assert_eq!(
        error,
        CallError::Plugin {
            plugin: "ma_cross".into(),
            digest: faulty,
            message: panic.into(),
            panicked: true,
            seq: 7,
        }
    );
    assert_eq!(
        normalise(&error.to_string(), std::path::Path::new("/")),
        format!("plugin `ma_cross` ([SHORT]) panicked (caught; slot marked faulted): {panic}")
    );

    // 1.0.0 has the state of a plugin that was never updated, fed the three calls (the fixture
    // panics before touching its state, so nothing of the `CRASH` bar is in it).
    let (_reference_dir, reference, clock) = reference_runtime();
    install(&reference, MA_CROSS_1_0_0, CONFIG());
    for close in [100.0, 101.0, 102.0] {
        reference.call("ma_cross", &bar("ES", close)).unwrap();
    }
    replay(&reference, &clock, "ma_cross", &calls);
    let expected = state(&reference.snapshot("ma_cross").unwrap());
    assert_eq!(expected["instruments"]["NQ"]["position"], 2);

    let status = runtime.status();
    let plugin = &status.plugins[0];
    assert_eq!((plugin.version.digest, &plugin.pending), (v1, &None));
    let rollback = plugin.last_rollback.clone().expect("the step rolled back");
    assert_eq!(
        rollback.reason,
        RollbackReason::CallPanicked {
            seq: 7,
            message: panic.into()
        }
    );
    assert_eq!(
        rollback.method,
        RollbackMethod::DownMigration {
            unjournaled_calls: 3,
            state: expected.clone(),
            in_doubt_call: Some(7),
        }
    );
    assert!(!rollback.lost_nothing());
    assert_eq!(
        (rollback.from.digest, rollback.to.as_ref().unwrap().digest),
        (faulty, v1)
    );
    assert_eq!(rollback.calls_since_switch, 4);
    assert_eq!(
        (
            plugin.counters.calls,
            plugin.counters.errors,
            plugin.counters.panics
        ),
        (7, 1, 1)
    );
    // The state came back from the instance that panicked midway through call #7: the slot
    // stays faulted (and unhealthy) until a good state replaces it.
    let fault = plugin.fault.as_ref().expect("the slot is faulted");
    assert_eq!((fault.seq, fault.digest), (7, faulty));
    assert!(!plugin.health.is_ok());
    assert_eq!(state(&runtime.snapshot("ma_cross").unwrap()), expected);

    // 1.0.0 serves the next call, still flagged until a good state replaces the suspect one.
    let next = runtime.call("ma_cross", &bar("ES", 105.0)).unwrap();
    assert_eq!((next.receipt.digest, next.receipt.seq), (v1, 8));
    let status = runtime.status();
    assert_eq!(status.plugins[0].pending, None);
    assert_eq!(status.live_instances, 1);
}

#[test]
fn a_swap_of_a_faulted_slot_reports_the_fault_it_replaced_and_a_rollback_brings_it_back() {
    let (_dir, runtime, _) = serving_1_0_0();
    let faulty = stage(&runtime, FAULT_CALL);
    let fixed = stage(&runtime, MA_CROSS_2_0_0);
    // 2.0.3 -> 2.0.0 is a downgrade: 2.0.3 declares it.
    let metadata = inspect(&lib(FAULT_CALL)).unwrap();
    assert_eq!(metadata.version, "2.0.3");
    assert!(
        metadata.downgrades_to.contains(&"=2.0.0".to_owned()),
        "{:?}",
        metadata.downgrades_to
    );
    runtime.swap(SwapRequest::new("ma_cross", faulty)).unwrap();
    runtime.commit("ma_cross").unwrap();
    runtime.call("ma_cross", &bar("CRASH", 1.0)).unwrap_err();
    let fault = runtime.status().plugins[0]
        .fault
        .clone()
        .expect("the slot is marked faulted");
    assert_eq!((fault.seq, fault.digest), (4, faulty));

    let report = runtime.swap(SwapRequest::new("ma_cross", fixed)).unwrap();
    assert_eq!(report.kind, TransitionKind::Downgrade);
    assert_eq!((report.from.digest, report.to.digest), (faulty, fixed));
    assert_eq!(report.replaced_fault.as_ref(), Some(&fault));
    // The new version starts unfaulted, and serves.
    let status = runtime.status();
    let plugin = &status.plugins[0];
    assert_eq!(plugin.version.digest, fixed);
    assert_eq!((&plugin.fault, &plugin.health), (&None, &Health::Ok));
    runtime.check_health("ma_cross").unwrap();
    let out = runtime.call("ma_cross", &bar("ES", 103.0)).unwrap();
    assert_eq!((out.receipt.digest, out.receipt.seq), (fixed, 5));

    // A rollback brings 2.0.3 back with its fault, as it was.
    let rollback = runtime.rollback("ma_cross").unwrap();
    assert_eq!(
        (rollback.from.digest, rollback.to.as_ref().unwrap().digest),
        (fixed, faulty)
    );
    assert_eq!(
        rollback.method,
        RollbackMethod::Replay {
            replayed: 1,
            divergences: Vec::new()
        }
    );
    let status = runtime.status();
    let plugin = &status.plugins[0];
    assert_eq!(plugin.version.digest, faulty);
    assert_eq!(plugin.fault.as_ref(), Some(&fault));
    assert_eq!(
        plugin.health,
        Health::Unhealthy {
            reason: "faulted: it panicked in call #4 (plugin panicked: call on instrument CRASH \
                     (fault injected by the ma_cross_fault_call fixture))"
                .to_owned()
        }
    );
    let health = runtime.check_health("ma_cross").unwrap_err();
    assert!(
        matches!(health, HostError::Faulted { seq: 4, .. }),
        "{health:?}"
    );
}

/// ma_cross 2.0.3 (it panics on instruments named `CRASH…`) serving, and a swap to the gated
/// 2.0.9 (it panics on `CRASH_BOTH` only) held in its migration, so calls can be sent inside
/// the swap's window. Returns the runtime, the digests of 2.0.3 and 2.0.9, the gate and the
/// swap's thread.
#[allow(clippy::type_complexity)]
fn swap_held_open() -> (
    tempfile::TempDir,
    Runtime,
    plugsync_host::Digest,
    plugsync_host::Digest,
    Gate,
    std::thread::JoinHandle<Result<plugsync_host::SwapReport, HostError>>,
) {
    let (dir, runtime) = runtime();
    let old = install(&runtime, FAULT_CALL, json!({}));
    let new = stage(&runtime, FAULT_GATE);
    let gate = Gate::new();
    runtime
        .call("ma_cross", &bar(&gate.migrate_instrument(), 1.0))
        .unwrap();
    let swap = {
        let runtime = runtime.clone();
        std::thread::spawn(move || runtime.swap(SwapRequest::new("ma_cross", new)))
    };
    gate.wait_reached();
    (dir, runtime, old, new, gate, swap)
}

#[test]
fn a_panic_of_the_new_version_during_a_swap_fails_the_swap() {
    let (dir, runtime, old, _new, gate, swap) = swap_held_open();
    // Both versions panic on it: the old one now, the new one when it catches up.
    let error = runtime
        .call("ma_cross", &bar("CRASH_BOTH", 1.0))
        .unwrap_err();
    assert!(
        matches!(
            error,
            CallError::Plugin {
                panicked: true,
                seq: 2,
                ..
            }
        ),
        "{error:?}"
    );
    gate.open();

    let error = swap.join().unwrap().unwrap_err();
    assert_eq!(
        normalise(&error.to_string(), dir.path()),
        "plugin `ma_cross` 2.0.9 panicked replaying call #2 during the swap (plugin panicked: \
         call on instrument CRASH_BOTH (fault injected by the ma_cross_fault_gate fixture)); the \
         swap was abandoned and the running version keeps serving: fix the new version"
    );
    // The old version serves on, with its own fault shown.
    let status = runtime.status();
    let plugin = &status.plugins[0];
    assert_eq!((plugin.version.digest, &plugin.pending), (old, &None));
    assert_eq!(plugin.fault.as_ref().map(|f| f.seq), Some(2));
    assert_eq!(status.live_instances, 1);
}

#[test]
fn a_fault_of_the_old_version_inside_a_swaps_window_is_in_its_report_and_status() {
    let (_dir, runtime, old, new, gate, swap) = swap_held_open();
    // Only the old version panics on it: the optimistic switch cannot agree with a panic, so
    // the swap switches under the lock from the state the panic left, and says so.
    runtime.call("ma_cross", &bar("CRASH", 1.0)).unwrap_err();
    gate.open();

    let report = swap.join().unwrap().unwrap();
    assert_eq!(
        report.path,
        SwapPath::Locked {
            reason: "call #2 panicked in the old version during catch-up".to_owned()
        }
    );
    let fault = report
        .replaced_fault
        .expect("the old version's fault is reported");
    assert_eq!((fault.seq, fault.digest), (2, old));
    let status = runtime.status();
    let plugin = &status.plugins[0];
    assert_eq!(plugin.version.digest, new);
    let last_step = plugin.last_step.as_ref().unwrap();
    assert_eq!(last_step.replaced_fault.as_ref(), Some(&fault));
    // It stays on record once the step is committed.
    runtime.commit("ma_cross").unwrap();
    let status = runtime.status();
    let last_step = status.plugins[0].last_step.as_ref().unwrap();
    assert_eq!(
        (last_step.outcome, last_step.replaced_fault.as_ref()),
        (StepState::Committed, Some(&fault))
    );
}

#[test]
fn a_call_the_old_version_panicked_on_never_agrees_with_a_refusal_by_the_new_one() {
    let (_dir, runtime, old, new, gate, swap) = swap_held_open();
    // A fill on `CRASH` that no position can take: 2.0.3 panics on its instrument, 2.0.9
    // refuses its quantity (an error). Two refusals agree, but a panic is a fault, never an
    // answer: the swap switches under the lock from the state the panic left.
    let error = runtime
        .call("ma_cross", &fill(1, "CRASH", i64::MIN, 1.0))
        .unwrap_err();
    assert!(
        matches!(
            error,
            CallError::Plugin {
                panicked: true,
                seq: 2,
                ..
            }
        ),
        "{error:?}"
    );
    gate.open();

    let report = swap.join().unwrap().unwrap();
    assert_eq!(
        report.path,
        SwapPath::Locked {
            reason: "call #2 panicked in the old version during catch-up".to_owned()
        }
    );
    let fault = report.replaced_fault.expect("the old version's fault");
    assert_eq!((fault.seq, fault.digest), (2, old));
    assert_eq!(runtime.status().plugins[0].version.digest, new);
}

#[test]
fn a_version_made_unhealthy_by_the_calls_it_caught_up_is_rolled_back_at_the_switch() {
    // 2.0.9 serving, and a downgrade to 2.0.1 (healthy until it has served a call), held in
    // 2.0.9's migration down: the call of the window reaches 2.0.1 only by the catch-up.
    let (_dir, runtime) = runtime();
    let gated = install(&runtime, FAULT_GATE, json!({}));
    let faulty = stage(&runtime, FAULT_HEALTH);
    let gate = Gate::new();
    runtime
        .call("ma_cross", &bar(&gate.migrate_instrument(), 1.0))
        .unwrap();
    let swap = {
        let runtime = runtime.clone();
        std::thread::spawn(move || runtime.swap(SwapRequest::new("ma_cross", faulty)))
    };
    gate.wait_reached();
    let served = runtime.call("ma_cross", &bar("ES", 100.0)).unwrap();
    assert_eq!(served.receipt.digest, gated);
    gate.open();

    // It passed verification (a restored throwaway instance has served nothing); the health
    // check at the switch sees the instance that caught up, and rolls the step back.
    let error = swap.join().unwrap().unwrap_err();
    let HostError::RolledBack { report, .. } = error else {
        panic!("expected a rollback: {error}");
    };
    assert_eq!(
        report.reason.to_string(),
        "the new version failed its health check (order book desynchronised: positions disagree \
         with the exchange after 1 calls (fault injected by the ma_cross_fault_health fixture))"
    );
    assert_eq!(
        (report.from.digest, report.to.as_ref().unwrap().digest),
        (faulty, gated)
    );
    // (Not `assert_still_serving`: the steward may be the one that rolled it back, and it
    // destroys the unhealthy instance after releasing the slot.)
    let served = runtime.call("ma_cross", &bar("ES", 100.0)).unwrap();
    assert_eq!(served.receipt.digest, gated);
    assert_eq!(runtime.status().plugins[0].pending, None);
}

#[test]
fn a_faulted_slot_that_fails_closed_refuses_calls_until_it_is_swapped() {
    let (_dir, runtime) = runtime();
    let faulty = install(&runtime, FAULT_CALL, json!({}));
    runtime.set_fail_closed("ma_cross", true).unwrap();
    runtime.call("ma_cross", &bar("ES", 100.0)).unwrap();
    runtime.call("ma_cross", &bar("CRASH", 1.0)).unwrap_err();

    // Faulted: refused without running the plugin (the calls counter does not move).
    let calls = runtime.status().plugins[0].counters.calls;
    let refused = runtime.call("ma_cross", &bar("ES", 101.0)).unwrap_err();
    assert_eq!(
        refused.to_string(),
        "plugin `ma_cross` is faulted (it panicked in call #2: plugin panicked: call on \
         instrument CRASH (fault injected by the ma_cross_fault_call fixture)) and fails closed: \
         the call was refused; swap to a fixed version or restore a verified snapshot"
    );
    let status = runtime.status();
    assert_eq!(status.plugins[0].counters.calls, calls);
    assert!(status.plugins[0].fail_closed);
    assert!(runtime.committed().plugins[0].fail_closed);

    // A swap to a fixed version starts unfaulted, and serves.
    let fixed = stage(&runtime, MA_CROSS_2_0_0);
    runtime.swap(SwapRequest::new("ma_cross", fixed)).unwrap();
    let served = runtime.call("ma_cross", &bar("ES", 102.0)).unwrap();
    assert_ne!(served.receipt.digest, faulty);
}
