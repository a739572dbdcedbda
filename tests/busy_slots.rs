//! One plugin busy or hung does not stop the host for the others: a verification during a
//! switch leaves the switch alone, the steward never waits on a busy slot, status answers with
//! a busy slot shown as last seen, and the call watchdog marks a call that overruns.
//!
//! Every wait is a barrier the test opens (the `ma_cross_fault_gate` fixture) or a poll, and
//! leases expire by the runtime's manual clock: no sleeps, no timing asserts.

mod support;

use std::time::Duration;

use plugsync_host::{
    HostError, MigrationRule, RollbackReason, SoakThresholds, SwapPath, SwapRequest, VerifySpec,
};
use serde_json::json;
use support::*;

fn ma_cross_2() -> serde_json::Value {
    json!({"fast_period": 2, "slow_period": 3, "order_qty": 1, "signal_threshold": 0.0})
}

fn leased(plugin: &str, artifact: plugsync_host::Digest) -> SwapRequest {
    SwapRequest::new(plugin, artifact).lease(Duration::from_millis(30), SoakThresholds::default())
}

#[test]
fn a_verify_during_an_optimistic_switch_leaves_the_switch_and_later_leases_working() {
    let (_store, runtime, clock) = runtime_and_clock();
    let v2 = install(&runtime, MA_CROSS_2_0_0, ma_cross_2());
    let gated = stage(&runtime, FAULT_GATE);
    let gate = Gate::new();
    runtime
        .call("ma_cross", &bar(&gate.migrate_instrument(), 1.0))
        .unwrap();

    // The switch records calls while its migration waits at the gate.
    let swap = {
        let runtime = runtime.clone();
        std::thread::spawn(move || runtime.swap(SwapRequest::new("ma_cross", gated)))
    };
    gate.wait_reached();
    runtime.call("ma_cross", &bar("ES", 100.0)).unwrap();
    // A verification of the same target whose rules fail, meanwhile.
    let failing = [MigrationRule::Remove {
        path: "/state/no_such_field".to_owned(),
    }];
    let refused = runtime
        .verify(
            "ma_cross",
            &gated,
            None,
            Some(&failing),
            &VerifySpec::default(),
        )
        .unwrap_err();
    assert!(
        matches!(refused, HostError::MigrationRule { .. }),
        "{refused}"
    );
    runtime.call("ma_cross", &bar("ES", 101.0)).unwrap();
    gate.open();

    let report = swap.join().expect("the switch does not panic").unwrap();
    assert_eq!(report.path, SwapPath::Optimistic);
    assert_eq!(
        report.caught_up, 2,
        "both calls of the window were caught up"
    );
    runtime.commit("ma_cross").unwrap();

    // The slot's locks are sound: a later switch with a lease is rolled back when it expires.
    runtime.swap(leased("ma_cross", v2)).unwrap();
    clock.advance(31_000_000);
    let status = rolled_back_by_host(&runtime, "ma_cross");
    assert_eq!(status, RollbackReason::LeaseExpired { lease_ms: 30 });
}

#[test]
fn a_hung_call_in_one_plugin_does_not_stop_the_host_for_the_others() {
    let (_store, runtime, clock) = runtime_and_clock_with(|options| {
        options.call_watchdog = Some(Duration::from_millis(5));
    });
    install(&runtime, FAULT_GATE, ma_cross_2());
    install(&runtime, RISK_MODEL_1_0_0, json!({"max_position": 10}));
    let risk_1_1 = stage(&runtime, RISK_MODEL_1_1_0);
    runtime.call("ma_cross", &bar("ES", 100.0)).unwrap();
    let before = runtime.status();

    // Plugin A (ma_cross) hangs inside a call, holding its slot.
    let gate = Gate::new();
    let hung = {
        let runtime = runtime.clone();
        let input = bar(&gate.call_instrument(), 1.0);
        std::thread::spawn(move || runtime.call("ma_cross", &input))
    };
    gate.wait_reached();

    // Meanwhile B's lease expires and the host rolls B back by itself.
    runtime.swap(leased("risk_model", risk_1_1)).unwrap();
    clock.advance(31_000_000);
    assert_eq!(
        rolled_back_by_host(&runtime, "risk_model"),
        RollbackReason::LeaseExpired { lease_ms: 30 }
    );

    // Status answers, with A shown busy as last seen, and soon stuck.
    let mut stuck = None;
    wait_until("the watchdog marks the hung call", || {
        let status = runtime.status();
        let a = status
            .plugins
            .iter()
            .find(|p| p.plugin == "ma_cross")
            .unwrap();
        assert!(a.busy, "a slot held by a call is shown busy");
        assert_eq!(a.counters, before.plugins[0].counters, "as last seen");
        stuck = a.stuck.clone();
        stuck.is_some()
    });
    assert_eq!(stuck.unwrap().seq, before.plugins[0].counters.calls + 1);

    // A commit of B completes, and the committed set (written to the store) still has A. (The
    // lease's rollback marked 1.1.0 failed: cleared, as an operator would once it is understood.)
    runtime.clear_failed(&risk_1_1, "test").unwrap();
    runtime
        .swap(SwapRequest::new("risk_model", risk_1_1))
        .unwrap();
    runtime.commit("risk_model").unwrap();
    let committed: Vec<String> = runtime
        .committed()
        .plugins
        .into_iter()
        .map(|p| format!("{} {}", p.plugin, p.version.version))
        .collect();
    assert_eq!(committed, ["ma_cross 2.0.9", "risk_model 1.1.0"]);

    // Released, A's call completes and the marks go.
    gate.open();
    hung.join().unwrap().unwrap();
    wait_until("the stuck mark is cleared", || {
        let status = runtime.status();
        let a = &status.plugins[0];
        !a.busy && a.stuck.is_none()
    });
}

#[test]
fn a_hung_call_within_the_watchdogs_bound_is_busy_but_not_stuck() {
    let (_store, runtime, clock) = runtime_and_clock_with(|options| {
        options.call_watchdog = Some(Duration::from_secs(3600));
    });
    install(&runtime, FAULT_GATE, ma_cross_2());
    install(&runtime, RISK_MODEL_1_0_0, json!({"max_position": 10}));
    let risk_1_1 = stage(&runtime, RISK_MODEL_1_1_0);
    let gate = Gate::new();
    let hung = {
        let runtime = runtime.clone();
        let input = bar(&gate.call_instrument(), 1.0);
        std::thread::spawn(move || runtime.call("ma_cross", &input))
    };
    gate.wait_reached();
    // B's lease expiring tells when the steward has looked: it watches `ma_cross`'s call
    // before it looks at `risk_model` on each tick.
    runtime.swap(leased("risk_model", risk_1_1)).unwrap();
    clock.advance(31_000_000);
    rolled_back_by_host(&runtime, "risk_model");
    let status = runtime.status();
    let a = &status.plugins[0];
    assert!(a.busy, "the call holds the slot");
    assert_eq!(a.stuck, None, "an hour has not passed");
    gate.open();
    hung.join().unwrap().unwrap();
}
