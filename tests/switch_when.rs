//! A switch with a `when` (the `when-idle` and `when-flat` strategies) happens only while its
//! condition holds, judged by the host under the slot lock at the switch itself; otherwise
//! the host answers `not_yet`, and nothing changes: the old version serves on, untouched, and a
//! later ask switches as any other would.
//!
//! Idle time is the runtime's manual clock; calls made while a migration waits at a gate
//! (`ma_cross_fault_gate`) stand for a call arriving between the host's first look and the
//! switch. No sleeps.

mod support;

use plugsync_host::{
    Digest, HostError, Runtime, SwapMode, SwapRequest, SwapSafeAnswer, SwitchWhen,
};
use serde_json::json;
use support::*;

fn ma_cross_2() -> serde_json::Value {
    json!({"fast_period": 2, "slow_period": 3, "order_qty": 1, "signal_threshold": 0.0})
}

fn idle_for(ms: u64) -> SwitchWhen {
    SwitchWhen {
        idle_for_ms: Some(ms),
        flat: false,
    }
}

fn flat() -> SwitchWhen {
    SwitchWhen {
        idle_for_ms: None,
        flat: true,
    }
}

/// What serves `plugin`, and whether a step is pending.
fn serving(runtime: &Runtime, plugin: &str) -> (Digest, bool) {
    let status = runtime.status();
    let slot = status.plugins.iter().find(|p| p.plugin == plugin).unwrap();
    (slot.version.digest, slot.pending.is_some())
}

/// The host's "not yet", checked: its code, its message, and that nothing changed.
fn not_yet(
    runtime: &Runtime,
    result: Result<plugsync_host::SwapReport, HostError>,
    old: Digest,
) -> String {
    let error = result.expect_err("the switch waits");
    assert!(matches!(error, HostError::NotYet { .. }), "{error:?}");
    assert_eq!(error.code(), "not_yet");
    assert!(
        error.lifted_elsewhere(),
        "a `not_yet` does not spend the step id"
    );
    assert_eq!(
        serving(runtime, "ma_cross"),
        (old, false),
        "nothing changed"
    );
    error.to_string()
}

#[test]
fn an_idle_switch_waits_until_the_plugin_served_no_call_for_idle_for_in_either_mode() {
    for mode in [SwapMode::Optimistic, SwapMode::Locked] {
        let (_store, runtime, clock) = runtime_and_clock();
        let old = install(&runtime, MA_CROSS_2_0_0, ma_cross_2());
        let new = stage(&runtime, MA_CROSS_2_1_0);
        let request = SwapRequest::new("ma_cross", new)
            .mode(mode)
            .when(idle_for(5_000));

        // Never called: idle since it was loaded.
        runtime.swap(request.clone()).unwrap();
        runtime.rollback("ma_cross").unwrap();
        runtime.clear_failed(&new, "test").unwrap();

        runtime.call("ma_cross", &bar("ES", 100.0)).unwrap();
        clock.advance(4_999_000_000);
        assert_eq!(
            not_yet(&runtime, runtime.swap(request.clone()), old),
            "`switch` of `ma_cross` not yet: its last call was 4999 ms ago, and it waits for \
             5s without one; nothing was applied: ask again with the same step id",
            "{mode:?}"
        );
        clock.advance(1_000_000);
        let report = runtime.swap(request).unwrap();
        assert_eq!(report.to.digest, new, "{mode:?}");
        assert_eq!(serving(&runtime, "ma_cross"), (new, true), "{mode:?}");
    }
}

#[test]
fn a_call_between_the_hosts_first_look_and_the_switch_makes_it_wait() {
    let (_store, runtime, clock) = runtime_and_clock();
    let old = install(&runtime, MA_CROSS_2_0_0, ma_cross_2());
    let gated = stage(&runtime, FAULT_GATE);
    let gate = Gate::new();
    runtime
        .call("ma_cross", &bar(&gate.migrate_instrument(), 1.0))
        .unwrap();
    clock.advance(10_000_000_000);

    // Idle for 10 s at the first look; the migration then waits at the gate, and a call comes.
    let swap = {
        let runtime = runtime.clone();
        let request = SwapRequest::new("ma_cross", gated).when(idle_for(5_000));
        std::thread::spawn(move || runtime.swap(request))
    };
    gate.wait_reached();
    runtime.call("ma_cross", &bar("ES", 100.0)).unwrap();
    gate.open();
    let message = not_yet(&runtime, swap.join().unwrap(), old);
    assert!(message.contains("its last call was 0 ms ago"), "{message}");

    // The call the old version served is in the state a later switch carries across.
    clock.advance(5_000_000_000);
    let report = runtime
        .swap(SwapRequest::new("ma_cross", gated).when(idle_for(5_000)))
        .unwrap();
    assert!(
        report.state_before["instruments"].get("ES").is_some(),
        "{}",
        report.state_before
    );
}

#[test]
fn a_flat_switch_waits_while_the_strategy_holds_a_position_or_a_working_order() {
    let (_store, runtime) = runtime();
    let old = install(&runtime, MA_CROSS_2_0_0, ma_cross_2());
    let new = stage(&runtime, MA_CROSS_2_1_0);
    let request = SwapRequest::new("ma_cross", new).when(flat());
    let swap_safe = |runtime: &Runtime| runtime.status().plugins[0].swap_safe.clone();
    assert_eq!(swap_safe(&runtime), Some(SwapSafeAnswer::Safe));

    // (what the desk sends, what the strategy holds after it)
    let cases: [(&[Vec<u8>], &str); 3] = [
        // Up: buy 1, working.
        (
            &[bar("ES", 10.0), bar("ES", 10.0), bar("ES", 13.0)],
            "holds +1 working in ES",
        ),
        (&[fill(1, "ES", 1, 13.0)], "holds a position of +1 in ES"),
        // Down: sell 2 to go short; 1 fills.
        (
            &[bar("ES", 4.0), fill(2, "ES", -1, 4.0)],
            "holds -1 working in ES",
        ),
    ];
    for (inputs, holds) in cases {
        for input in inputs {
            runtime.call("ma_cross", input).unwrap();
        }
        assert_eq!(
            swap_safe(&runtime),
            Some(SwapSafeAnswer::NotSafe {
                reason: holds.to_owned()
            })
        );
        assert_eq!(
            not_yet(&runtime, runtime.swap(request.clone()), old),
            format!(
                "`switch` of `ma_cross` not yet: it is not flat ({holds}); nothing was applied: \
                 ask again with the same step id"
            )
        );
    }
    // The rest is cancelled: flat.
    runtime
        .call(
            "ma_cross",
            br#"{"cancel":{"order_id":2,"instrument":"ES","qty":-1}}"#,
        )
        .unwrap();
    assert_eq!(swap_safe(&runtime), Some(SwapSafeAnswer::Safe));
    let report = runtime.swap(request).unwrap();
    assert_eq!(report.to.digest, new);
}

#[test]
fn a_faulted_plugin_is_not_asked_whether_it_is_flat_and_is_not_safe() {
    let (_store, runtime) = runtime();
    let old = install(&runtime, FAULT_CALL, ma_cross_2());
    let new = stage(&runtime, MA_CROSS_2_1_0);
    runtime.call("ma_cross", &bar("CRASH", 1.0)).unwrap_err();
    let faulted = SwapSafeAnswer::Failed {
        message: "faulted: it panicked in call #1 (plugin panicked: call on instrument CRASH \
                  (fault injected by the ma_cross_fault_call fixture))"
            .to_owned(),
    };
    assert_eq!(runtime.status().plugins[0].swap_safe, Some(faulted));
    let message = not_yet(
        &runtime,
        runtime.swap(SwapRequest::new("ma_cross", new).when(flat())),
        old,
    );
    assert!(
        message.contains("it cannot say whether it is flat (faulted: it panicked in call #1"),
        "{message}"
    );
}
