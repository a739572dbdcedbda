//! Rollback of a switched step with the real example plugins: by replay it gives exactly the
//! state of a plugin that was never updated and lists the outputs that differed; when the
//! journal overflowed, by the declared migration back, keeping the fills the new version
//! received (after an upgrade, a downgrade or a reconfigure).

mod support;

use plugsync_host::{Divergence, HostError, RollbackMethod, RollbackReason, SwapRequest};
use serde_json::{Value, json};
use support::*;

const CONFIG: fn() -> Value = || json!({"fast_ma_period": 2, "slow_ma_period": 4});

/// A divergence with its outputs parsed, for comparison.
fn parsed(divergence: &Divergence) -> (u64, Value, Value, Value) {
    let parse = |output: &Result<String, String>| {
        json(output.as_ref().expect("both versions answered").as_bytes())
    };
    (
        divergence.seq,
        json(divergence.input.as_bytes()),
        parse(&divergence.new_output),
        parse(&divergence.old_output),
    )
}

#[test]
fn rollback_by_replay_gives_the_state_of_a_never_updated_plugin_and_lists_what_differed() {
    let (_dir, runtime) = runtime();
    let v1 = install(&runtime, MA_CROSS_1_0_0, CONFIG());
    let v2 = stage(&runtime, MA_CROSS_2_0_0);
    let mut calls: Vec<Recorded> = (0..4)
        .map(|_| record(&runtime, "ma_cross", bar("ES", 100.0)))
        .collect();
    runtime.swap(SwapRequest::new("ma_cross", v2)).unwrap();

    // Up 0.2%: 1.0.0 would buy, 2.0.0 (1% threshold) does not. Up to 105: 2.0.0 buys (order
    // 1), 1.0.0 would already be long. The fill of 2.0.0's order, and another instrument's
    // bar, get the same (empty) answer from both.
    for input in [
        bar("ES", 100.2),
        bar("ES", 105.0),
        fill(1, "ES", 1, 105.0),
        bar("NQ", 50.0),
    ] {
        calls.push(record(&runtime, "ma_cross", input));
    }
    assert_eq!(json(&calls[5].output), orders(&[(1, "ES", 1)]));
    assert!(calls[4..].iter().all(|c| c.receipt.digest == v2));

    let report = runtime.rollback("ma_cross").unwrap();
    assert_eq!((report.from.digest, report.to.digest), (v2, v1));
    assert_eq!(report.reason, RollbackReason::Requested);
    assert_eq!(report.calls_since_switch, 4);
    assert!(report.lost_nothing());
    let RollbackMethod::Replay {
        replayed,
        divergences,
    } = &report.method
    else {
        panic!("expected a rollback by replay: {:?}", report.method);
    };
    assert_eq!(*replayed, 4);
    assert_eq!(
        divergences.iter().map(parsed).collect::<Vec<_>>(),
        [
            (
                5,
                json(&bar("ES", 100.2)),
                orders(&[]),
                orders(&[(1, "ES", 1)])
            ),
            (
                6,
                json(&bar("ES", 105.0)),
                orders(&[(1, "ES", 1)]),
                orders(&[])
            ),
        ]
    );

    // The reference: 1.0.0 alone, fed the same inputs at the same host times.
    let (_reference_dir, reference, clock) = reference_runtime();
    install(&reference, MA_CROSS_1_0_0, CONFIG());
    feed_at(&reference, &clock, "ma_cross", &calls);
    let restored = runtime.snapshot("ma_cross").unwrap();
    let never_updated = reference.snapshot("ma_cross").unwrap();
    assert_eq!(state(&restored), state(&never_updated));
    assert_eq!(
        (restored.seq, restored.sha256, &restored.version),
        (
            never_updated.seq,
            never_updated.sha256,
            &never_updated.version
        )
    );
    assert_eq!(state(&restored)["instruments"]["ES"]["position"], 1);

    // 1.0.0 serves again; the step is over and status says how it ended.
    let next = runtime.call("ma_cross", &bar("ES", 104.0)).unwrap();
    assert_eq!(next.receipt.digest, v1);
    let status = runtime.status();
    let plugin = &status.plugins[0];
    assert_eq!(plugin.pending, None);
    assert_eq!(plugin.last_step.as_ref().unwrap().outcome, "rolled back");
    assert_eq!(plugin.last_rollback.as_ref(), Some(&report));
    assert_eq!(status.live_instances, 1);
    let error = runtime.rollback("ma_cross").unwrap_err();
    assert!(
        matches!(error, HostError::NoStepInProgress { .. }),
        "{error}"
    );
}

/// What a rollback after a journal overflow must carry back.
struct Overflow {
    /// The version running before the step, and its config.
    running: &'static str,
    config: Value,
    /// The version switched to.
    target: &'static str,
    /// The 1.x or 2.x state expected after the rollback, but for its instruments.
    parameters: Value,
}

/// Swaps with a journal of 2 calls, sends 4 (fills among them), rolls back: the state comes
/// back by migration, with every fill.
fn rollback_after_overflow_keeps_the_fills(case: Overflow) {
    let (_dir, runtime) = runtime();
    let running = install(&runtime, case.running, case.config);
    let target = stage(&runtime, case.target);
    for input in [fill(7, "ES", 2, 100.0), bar("ES", 100.0), bar("ES", 101.0)] {
        record(&runtime, "ma_cross", input);
    }
    let swap = runtime
        .swap(SwapRequest::new("ma_cross", target).journal_capacity(2))
        .unwrap();
    for input in [
        fill(8, "ES", -5, 101.0),
        fill(9, "NQ", 3, 50.0),
        bar("ES", 102.0),
        fill(10, "NQ", 1, 51.0),
    ] {
        let out = record(&runtime, "ma_cross", input);
        assert_eq!(out.receipt.digest, target);
    }
    let pending = runtime.status().plugins[0].pending.clone().unwrap();
    assert!(!pending.journal_complete);

    let report = runtime.rollback("ma_cross").unwrap();
    assert_eq!((report.from.digest, report.to.digest), (target, running));
    assert_eq!(report.calls_since_switch, 4);
    assert!(report.lost_nothing());
    let RollbackMethod::DownMigration {
        unjournaled_calls,
        state: migrated,
        in_doubt_call,
    } = &report.method
    else {
        panic!("expected a rollback by migration: {:?}", report.method);
    };
    assert_eq!(*unjournaled_calls, 4);
    assert_eq!(*in_doubt_call, None);

    // Positions are the sums of the fills, before and after the switch; windows and orders
    // are carried as well.
    let mut expected = case.parameters;
    expected["next_order_id"] = json!(1);
    expected["instruments"] = json!({
        "ES": {"closes": [100.0, 101.0, 102.0], "position": -3, "pending": 3, "side": 0},
        "NQ": {"closes": [], "position": 4, "pending": -4, "side": 0},
    });
    assert_eq!(*migrated, expected);
    let snapshot = runtime.snapshot("ma_cross").unwrap();
    assert_eq!(state(&snapshot), expected);
    assert_eq!(snapshot.version.digest, running);
    assert_eq!(swap.from.digest, running);
    assert_eq!(
        runtime
            .call("ma_cross", &bar("ES", 103.0))
            .unwrap()
            .receipt
            .digest,
        running
    );
}

#[test]
fn rollback_of_an_upgrade_after_a_journal_overflow_migrates_the_state_down_with_its_fills() {
    rollback_after_overflow_keeps_the_fills(Overflow {
        running: MA_CROSS_1_0_0,
        config: CONFIG(),
        target: MA_CROSS_2_0_0,
        parameters: json!({"fast_ma_period": 2, "slow_ma_period": 4, "order_qty": 1}),
    });
}

#[test]
fn rollback_of_a_downgrade_after_a_journal_overflow_migrates_the_state_up_with_its_fills() {
    rollback_after_overflow_keeps_the_fills(Overflow {
        running: MA_CROSS_2_0_0,
        config: json!({"fast_period": 2, "slow_period": 4}),
        target: MA_CROSS_1_0_0,
        parameters: json!({"fast_period": 2, "slow_period": 4, "order_qty": 1,
                           "signal_threshold": 0.01}),
    });
}

#[test]
fn rollback_of_a_reconfigure_after_a_journal_overflow_keeps_the_state_as_it_is() {
    // 1.0.0 declares no migration at all: a reconfigure passes the state unchanged, both ways.
    let (_dir, runtime) = runtime();
    let v1 = install(&runtime, MA_CROSS_1_0_0, CONFIG());
    record(&runtime, "ma_cross", fill(7, "ES", 2, 100.0));
    runtime
        .swap(
            SwapRequest::new("ma_cross", v1)
                .config(json!({"fast_ma_period": 3, "slow_ma_period": 6}))
                .journal_capacity(1),
        )
        .unwrap();
    for input in [fill(8, "ES", 1, 100.0), fill(9, "ES", 1, 100.0)] {
        record(&runtime, "ma_cross", input);
    }
    let report = runtime.rollback("ma_cross").unwrap();
    assert!(
        matches!(report.method, RollbackMethod::DownMigration { .. }),
        "{:?}",
        report.method
    );
    let snapshot = runtime.snapshot("ma_cross").unwrap();
    assert_eq!(state(&snapshot)["instruments"]["ES"]["position"], 4);
    // The previous config is back in force.
    assert_eq!(state(&snapshot)["slow_ma_period"], 4);
    assert_eq!(runtime.status().plugins[0].config, CONFIG());
}
