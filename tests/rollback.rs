//! Rollback of a switched step with the real example plugins: by replay it gives exactly the
//! state of a plugin that was never updated and lists the outputs that differed, each call
//! replayed at the host time it was first given; when the journal overflowed, by the declared
//! migration back, keeping the fills the new version received (after an upgrade, a downgrade
//! or a reconfigure); with neither, the previous version resumes with its state at the switch
//! and the report accounts exactly for the calls lost.

mod support;

use std::path::Path;

use plugsync_host::{
    Divergence, HostError, HostTime, RollbackMethod, RollbackReason, StepState, SwapRequest,
    TransitionKind, inspect,
};
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
    assert_eq!(
        (report.from.digest, report.to.as_ref().unwrap().digest),
        (v2, v1)
    );
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
    assert_eq!(
        plugin.last_step.as_ref().unwrap().outcome,
        StepState::RolledBack
    );
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
    assert_eq!(
        (report.from.digest, report.to.as_ref().unwrap().digest),
        (target, running)
    );
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

#[test]
fn rollback_with_neither_replay_nor_down_migration_resumes_the_state_at_the_switch_and_accounts_for_every_lost_call()
 {
    // 2.0.8 migrates up from 1.x but declares no way back.
    let metadata = inspect(&lib(NO_DOWNGRADE)).unwrap();
    assert_eq!(
        (metadata.version.as_str(), &metadata.downgrades_to),
        ("2.0.8", &Vec::<String>::new())
    );
    let (_dir, runtime) = runtime();
    let v1 = install(&runtime, MA_CROSS_1_0_0, CONFIG());
    let v2 = stage(&runtime, NO_DOWNGRADE);
    for input in [fill(7, "ES", 2, 100.0), bar("ES", 100.0), bar("ES", 101.0)] {
        record(&runtime, "ma_cross", input);
    }
    let swap = runtime
        .swap(SwapRequest::new("ma_cross", v2).journal_capacity(2))
        .unwrap();
    assert_eq!(swap.kind, TransitionKind::Upgrade);
    // One thread: no call arrived between the cut and the switch, so `state_before` is the
    // state 1.0.0 had at the switch.
    assert_eq!((swap.cut_seq, swap.switched_seq), (3, 3));

    // Five calls, bars and fills, more than the journal holds.
    let lost: Vec<Recorded> = [
        fill(8, "ES", -5, 101.0),
        fill(9, "NQ", 3, 50.0),
        bar("ES", 102.0),
        fill(10, "NQ", 1, 51.0),
        bar("NQ", 52.0),
    ]
    .into_iter()
    .map(|input| record(&runtime, "ma_cross", input))
    .collect();
    assert!(lost.iter().all(|c| c.receipt.digest == v2));
    let pending = runtime.status().plugins[0].pending.clone().unwrap();
    assert_eq!(
        (pending.calls_since_switch, pending.journal_complete),
        (5, false)
    );
    let abandoned = runtime.snapshot("ma_cross").unwrap();
    assert_eq!(abandoned.version.digest, v2);
    assert_eq!(state(&abandoned)["instruments"]["ES"]["position"], -3);
    assert_eq!(state(&abandoned)["instruments"]["NQ"]["position"], 4);

    let report = runtime.rollback("ma_cross").unwrap();
    assert_eq!(
        (report.from.digest, report.to.as_ref().unwrap().digest),
        (v2, v1)
    );
    assert_eq!(report.reason, RollbackReason::Requested);
    assert_eq!(report.calls_since_switch, 5);
    assert!(!report.lost_nothing());
    let RollbackMethod::Lossy { lost: account } = &report.method else {
        panic!("expected a lossy rollback: {:?}", report.method);
    };
    assert_eq!(
        (account.count, account.first_seq, account.last_seq),
        (5, swap.switched_seq + 1, lost[4].receipt.seq)
    );
    assert_eq!(account.last_seq, 8);
    assert_eq!(
        normalise(&account.why, Path::new("/")),
        "the journal holds 2 calls and 5 came since the switch, and ma_cross 2.0.8 declares no \
         `downgrades_to` covering 1.0.0"
    );
    // The state 2.0.8 had, fills and all, is kept for manual recovery.
    assert_eq!(account.abandoned_state.as_ref(), Some(&state(&abandoned)));

    // 1.0.0 serves again with its state exactly as at the switch: none of the five calls.
    let resumed = runtime.snapshot("ma_cross").unwrap();
    assert_eq!(resumed.version.digest, v1);
    assert_eq!(state(&resumed), swap.state_before);
    assert_eq!(resumed.sha256, swap.state_before_sha256);
    assert_eq!(state(&resumed)["instruments"]["ES"]["position"], 2);
    assert_eq!(state(&resumed)["instruments"].get("NQ"), None);
    let next = runtime.call("ma_cross", &bar("ES", 103.0)).unwrap();
    assert_eq!((next.receipt.digest, next.receipt.seq), (v1, 9));
    let status = runtime.status();
    let plugin = &status.plugins[0];
    assert_eq!((&plugin.pending, &plugin.fault), (&None, &None));
    assert_eq!(
        plugin.last_step.as_ref().unwrap().outcome,
        StepState::RolledBack
    );
    assert_eq!(plugin.last_rollback.as_ref(), Some(&report));
    assert_eq!(status.live_instances, 1);
}

#[test]
fn calls_at_a_host_time_the_caller_gives_are_replayed_at_that_time_by_a_rollback() {
    let (_dir, runtime) = runtime();
    let v1 = install(&runtime, MA_CROSS_1_0_0, CONFIG());
    let v2 = stage(&runtime, MA_CROSS_2_0_0);
    let handle = runtime.handle("ma_cross").unwrap();
    let mut calls: Vec<Recorded> = (0..4)
        .map(|i| record_at(&handle, bar("ES", 100.0), event_time(i)))
        .collect();
    runtime.swap(SwapRequest::new("ma_cross", v2)).unwrap();
    for (i, input) in [
        bar("ES", 100.2),
        bar("ES", 105.0),
        fill(1, "ES", 1, 105.0),
        bar("NQ", 50.0),
    ]
    .into_iter()
    .enumerate()
    {
        calls.push(record_at(&handle, input, event_time(4 + i as i64)));
    }
    assert!(calls[4..].iter().all(|c| c.receipt.digest == v2));
    // Not the runtime's clock: it shows START and later.
    assert!(calls.iter().all(|c| c.receipt.now.0 < START.0));

    let report = runtime.rollback("ma_cross").unwrap();
    assert!(
        matches!(report.method, RollbackMethod::Replay { replayed: 4, .. }),
        "{:?}",
        report.method
    );
    assert_eq!(report.to.as_ref().unwrap().digest, v1);

    // The reference: 1.0.0 alone, given the same times.
    let (_reference_dir, reference, clock) = reference_runtime();
    install(&reference, MA_CROSS_1_0_0, CONFIG());
    feed_at(&reference, &clock, "ma_cross", &calls);
    let restored = runtime.snapshot("ma_cross").unwrap();
    let never_updated = reference.snapshot("ma_cross").unwrap();
    assert_eq!(state(&restored), state(&never_updated));
    assert_eq!(
        (restored.seq, restored.sha256),
        (never_updated.seq, never_updated.sha256)
    );
}

#[test]
fn a_rollback_by_replay_gives_each_call_the_host_time_it_was_first_given() {
    // The example plugins ignore the time; what a replayed call was given shows where the
    // previous version panics on it: 2.0.3 panics on `CRASH`, which 2.0.0 serves.
    let (_dir, runtime) = runtime();
    let faulty = install(
        &runtime,
        FAULT_CALL,
        json!({"fast_period": 2, "slow_period": 4}),
    );
    let v2 = stage(&runtime, MA_CROSS_2_0_0);
    let handle = runtime.handle("ma_cross").unwrap();
    record_at(&handle, bar("ES", 100.0), event_time(0));
    let swap = runtime.swap(SwapRequest::new("ma_cross", v2)).unwrap();
    assert_eq!(swap.kind, TransitionKind::Downgrade);
    let calls = [
        record_at(&handle, bar("ES", 101.0), event_time(1)),
        record_at(&handle, bar("CRASH", 1.0), event_time(2)),
        record_at(&handle, bar("ES", 102.0), event_time(3)),
    ];
    assert_eq!(calls[1].receipt.digest, v2);
    assert_eq!(json(&calls[1].output), orders(&[]));

    let report = runtime.rollback("ma_cross").unwrap();
    assert_eq!(
        (report.from.digest, report.to.as_ref().unwrap().digest),
        (v2, faulty)
    );
    let panic = "plugin panicked: call on instrument CRASH (fault injected by the \
                 ma_cross_fault_call fixture)";
    assert_eq!(
        report.method,
        RollbackMethod::Replay {
            replayed: 3,
            divergences: vec![Divergence {
                seq: 3,
                input: String::from_utf8(bar("CRASH", 1.0)).unwrap(),
                new_output: Ok(r#"{"orders":[]}"#.to_owned()),
                old_output: Err(panic.to_owned()),
            }],
        }
    );
    // The restored instance panicked in the replay of call #3: the slot is faulted, at the time
    // that call was given, not at a reading of the runtime's clock.
    let fault = runtime.status().plugins[0].fault.clone().expect("faulted");
    assert_eq!(
        (fault.seq, fault.at, fault.digest, fault.message.as_str()),
        (3, event_time(2), faulty, panic)
    );
}

#[test]
fn a_rollback_by_replay_gives_each_call_its_host_time_so_a_plugin_that_reads_it_comes_back_exactly()
{
    // The gate fixture (2.0.9) takes a bar about ECHO_NOW as closing at the host time, and
    // echoes the time: its state and its answers depend on the time each call is given.
    let config = json!({"fast_period": 2, "slow_period": 4});
    let (_dir, runtime) = runtime();
    let gated = install(&runtime, FAULT_GATE, config.clone());
    let handle = runtime.handle("ma_cross").unwrap();
    let mut calls: Vec<Recorded> = (0..3)
        .map(|i| record_at(&handle, bar(ECHO_NOW, 1.0), event_time(i)))
        .collect();
    // A reconfigure to the same config: the step's new instance answers as the old one would.
    let swap = runtime.swap(SwapRequest::new("ma_cross", gated)).unwrap();
    assert_eq!(swap.kind, TransitionKind::Reconfigure);
    for (i, input) in [
        bar(ECHO_NOW, 1.0),
        bar("ES", 100.0),
        bar(ECHO_NOW, 1.0),
        fill(7, "ES", 2, 100.0),
        bar(ECHO_NOW, 1.0),
    ]
    .into_iter()
    .enumerate()
    {
        calls.push(record_at(&handle, input, event_time(3 + i as i64)));
    }
    for call in &calls {
        if json(&call.input)["bar"]["instrument"] == ECHO_NOW {
            assert_eq!(
                json(&call.output),
                json!({"orders": [], "now": call.receipt.now.0}),
                "call #{} answers the time it was given",
                call.receipt.seq
            );
        }
    }
    let times: std::collections::BTreeSet<HostTime> = calls.iter().map(|c| c.receipt.now).collect();
    assert_eq!(times.len(), calls.len(), "every call has its own host time");

    let report = runtime.rollback("ma_cross").unwrap();
    assert_eq!(
        report.method,
        RollbackMethod::Replay {
            replayed: 5,
            divergences: vec![],
        },
        "replayed at their own times, the calls answer what they answered"
    );

    // The reference: 2.0.9 alone, given the same times.
    let (_reference_dir, reference, clock) = reference_runtime();
    install(&reference, FAULT_GATE, config);
    replay(&reference, &clock, "ma_cross", &calls);
    let restored = runtime.snapshot("ma_cross").unwrap();
    let never_updated = reference.snapshot("ma_cross").unwrap();
    assert_eq!(state(&restored), state(&never_updated));
    assert_eq!(
        (restored.seq, restored.sha256),
        (never_updated.seq, never_updated.sha256)
    );
    let closes: Vec<f64> = calls
        .iter()
        .filter(|c| json(&c.input)["bar"]["instrument"] == ECHO_NOW)
        .map(|c| c.receipt.now.0 as f64 / 1e9)
        .skip(2)
        .collect();
    assert_eq!(
        state(&restored)["instruments"][ECHO_NOW]["closes"],
        json!(closes),
        "the window holds the last 4 host times"
    );
}

#[test]
fn a_call_refused_during_a_step_is_journaled_and_replayed_with_the_others() {
    let (_dir, runtime) = runtime();
    let v1 = install(&runtime, MA_CROSS_1_0_0, CONFIG());
    let v2 = stage(&runtime, MA_CROSS_2_0_0);
    let before: Vec<Vec<u8>> = (0..4).map(|_| bar("ES", 100.0)).collect();
    for input in &before {
        record(&runtime, "ma_cross", input.clone());
    }
    runtime.swap(SwapRequest::new("ma_cross", v2)).unwrap();

    // Two calls both versions answer alike, and between them one both refuse: a negative
    // close is an error, not a panic, and changes nothing.
    let refused = bar("ES", -1.0);
    let during = [bar("NQ", 50.0), refused.clone(), fill(7, "ES", 2, 100.0)];
    for input in &during {
        let result = runtime.call("ma_cross", input);
        if *input == refused {
            let error = result.unwrap_err();
            assert!(
                error
                    .to_string()
                    .contains("`close` must be a positive price"),
                "{error}"
            );
        } else {
            assert_eq!(result.unwrap().receipt.digest, v2);
        }
    }
    assert_eq!(
        runtime.status().plugins[0]
            .pending
            .as_ref()
            .unwrap()
            .calls_since_switch,
        3
    );

    let report = runtime.rollback("ma_cross").unwrap();
    assert_eq!(report.to.as_ref().unwrap().digest, v1);
    assert_eq!(report.calls_since_switch, 3);
    assert_eq!(
        report.method,
        RollbackMethod::Replay {
            replayed: 3,
            divergences: vec![],
        },
        "the refused call is in the journal and refused again in the replay"
    );

    // The reference: 1.0.0 alone, fed the same inputs (the refused one refused there too).
    let (_reference_dir, reference) = support::runtime();
    install(&reference, MA_CROSS_1_0_0, CONFIG());
    for input in before.iter().chain(&during) {
        let result = reference.call("ma_cross", input);
        assert_eq!(
            result.is_err(),
            *input == refused,
            "{}",
            String::from_utf8_lossy(input)
        );
    }
    let restored = runtime.snapshot("ma_cross").unwrap();
    let never_updated = reference.snapshot("ma_cross").unwrap();
    assert_eq!(state(&restored), state(&never_updated));
    assert_eq!(
        (restored.seq, restored.sha256),
        (never_updated.seq, never_updated.sha256)
    );
}
