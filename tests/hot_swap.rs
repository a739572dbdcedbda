//! Hot swap with the real example plugins: a swap under continuous load from two threads loses
//! no call and no state update; ma_cross 1.0.0 → 2.0.0 renames its parameters in config and
//! state; undeclared transitions are refused; commit destroys the previous instance;
//! verification runs probes and a side-by-side differential on throwaway instances only.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use plugsync_host::{
    CallError, DifferentialRow, Digest, HostError, Runtime, SlotHandle, StepState, SwapMode,
    SwapPath, SwapReport, SwapRequest, TransitionKind, VerifySpec,
};
use serde_json::{Value, json};
use support::*;

/// A zigzag between 100 and 150 in steps of 10: with periods 2 and 4 the averages cross every
/// few bars, always more than 1% apart, so 1.0.0 and 2.0.0 (threshold 1%) give the same
/// orders and an optimistic swap can catch up on the calls that arrive while it migrates.
fn zigzag(i: usize) -> f64 {
    let phase = i % 10;
    let level = if phase < 5 { phase } else { 10 - phase };
    100.0 + 10.0 * level as f64
}

/// What one feeding thread did.
struct Fed {
    calls: Vec<Recorded>,
    failures: Vec<CallError>,
}

/// Feeds bars of `instrument` until `stop`, and after each order the fill of that order, as a
/// host's simulated exchange would; counts its calls in `count`.
fn feed(
    handle: SlotHandle,
    instrument: &'static str,
    stop: Arc<AtomicBool>,
    count: Arc<AtomicUsize>,
) -> Fed {
    let mut fed = Fed {
        calls: Vec::new(),
        failures: Vec::new(),
    };
    let send = |input: Vec<u8>, fed: &mut Fed| -> Vec<u8> {
        let result = handle.call(&input);
        count.fetch_add(1, Ordering::SeqCst);
        match result {
            Ok(out) => {
                fed.calls.push(Recorded {
                    receipt: out.receipt,
                    input,
                    output: out.output.clone(),
                });
                out.output
            }
            Err(error) => {
                fed.failures.push(error);
                br#"{"orders":[]}"#.to_vec()
            }
        }
    };
    let tracer = format!("{instrument}-FILLS");
    let mut i = 0;
    while !stop.load(Ordering::SeqCst) {
        let close = zigzag(i);
        let output = send(bar(instrument, close), &mut fed);
        for order in parse_orders(&output) {
            send(fill(order.order_id, instrument, order.qty, close), &mut fed);
        }
        // A fill of an order placed elsewhere: the position on `tracer` counts every one of
        // these calls whose update reached the final state.
        send(fill(1_000_000 + i as u64, &tracer, 1, 100.0), &mut fed);
        i += 1;
    }
    fed
}

/// The issue's first scenario, in one switch mode: ma_cross 1.0.0 → 2.0.0 while two threads
/// feed bars and fills, then back and forth a few times more (each swap committed) so that
/// calls are likelier to arrive while a state migrates.
fn swap_under_load_loses_nothing(mode: SwapMode) {
    const CALLS_BETWEEN_SWAPS: usize = 200;
    const SEEDED_INSTRUMENTS: usize = 100;
    let config = json!({"fast_ma_period": 2, "slow_ma_period": 4});
    let (_dir, runtime) = runtime();
    let v1 = install(&runtime, MA_CROSS_1_0_0, config.clone());
    let v2 = stage(&runtime, MA_CROSS_2_0_0);
    // Map 2.0.0 before the load starts (loading re-hashes the file, slow in a debug build).
    runtime
        .verify("ma_cross", &v2, None, None, &VerifySpec::default())
        .unwrap();
    let handle = runtime.handle("ma_cross").unwrap();
    // A large state (one entry per instrument) makes each migration take a while, so that
    // calls are likely to arrive between the cut and the switch of an optimistic swap.
    let mut calls: Vec<Recorded> = (0..SEEDED_INSTRUMENTS)
        .map(|i| record(&runtime, "ma_cross", bar(&format!("SEED{i}"), 100.0)))
        .collect();

    let stop = Arc::new(AtomicBool::new(false));
    let counts = [Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0))];
    let feeders: Vec<_> = ["ES", "NQ"]
        .into_iter()
        .zip(&counts)
        .map(|(instrument, count)| {
            let (handle, stop, count) = (handle.clone(), stop.clone(), count.clone());
            std::thread::spawn(move || feed(handle, instrument, stop, count))
        })
        .collect();
    let more_calls = || {
        let goal = counts
            .iter()
            .map(|c| c.load(Ordering::SeqCst))
            .max()
            .unwrap()
            + CALLS_BETWEEN_SWAPS;
        wait_until("both threads have called again", || {
            counts.iter().all(|c| c.load(Ordering::SeqCst) >= goal)
        });
    };

    // 1.0.0 → 2.0.0, then down (2.0.0's down-migration) and up again twice.
    let mut reports: Vec<SwapReport> = Vec::new();
    for target in [v2, v1, v2, v1, v2] {
        more_calls();
        let report = runtime
            .swap(SwapRequest::new("ma_cross", target).mode(mode))
            .expect("the swap succeeds under load");
        runtime.commit("ma_cross").unwrap();
        reports.push(report);
    }
    more_calls();
    stop.store(true, Ordering::SeqCst);
    for feeder in feeders {
        let fed = feeder.join().expect("a feeding thread panicked");
        assert_eq!(fed.failures, [], "calls failed during the swaps");
        calls.extend(fed.calls);
    }
    assert_eq!((reports[0].from.digest, reports[0].to.digest), (v1, v2));
    assert_eq!(reports[0].kind, TransitionKind::Upgrade);
    assert_eq!(reports[1].kind, TransitionKind::Downgrade);

    // Every call got a place in one total order, none twice.
    calls.sort_by_key(|call| call.receipt.seq);
    let seqs: Vec<u64> = calls.iter().map(|c| c.receipt.seq).collect();
    let expected: Vec<u64> = (1..=calls.len() as u64).collect();
    assert!(seqs == expected, "sequence numbers have gaps or repeats");
    for report in &reports {
        assert!(report.cut_seq <= report.switched_seq, "{report:?}");
        if mode == SwapMode::Locked {
            assert_eq!(report.cut_seq, report.switched_seq);
            assert!(matches!(report.path, SwapPath::Locked { .. }), "{report:?}");
        }
    }

    // Each call was served by the version in force: 1.0.0 up to the first switch, 2.0.0
    // after it (until the next switch); both versions emitted orders.
    for call in &calls {
        let served_by = reports
            .iter()
            .find(|r| call.receipt.seq <= r.switched_seq)
            .map_or(v2, |r| r.from.digest);
        assert_eq!(call.receipt.digest, served_by, "call #{}", call.receipt.seq);
    }
    let ordered = |digest: Digest| {
        calls
            .iter()
            .any(|c| c.receipt.digest == digest && !parse_orders(&c.output).is_empty())
    };
    assert!(ordered(v1) && ordered(v2), "both versions emit orders");

    // The reference: fresh instances fed the calls in sequence order at their recorded host
    // times, each swap done at the recorded cut (the state migrated as the live one was):
    // every output, every migrated state and the final state agree.
    let (_reference_dir, reference, clock) = reference_runtime();
    install(&reference, MA_CROSS_1_0_0, config);
    stage(&reference, MA_CROSS_2_0_0);
    let mut fed = 0;
    for report in &reports {
        let cut = calls.partition_point(|c| c.receipt.seq <= report.cut_seq);
        replay(&reference, &clock, "ma_cross", &calls[fed..cut]);
        fed = cut;
        let expected = reference
            .swap(SwapRequest::new("ma_cross", report.to.digest).mode(SwapMode::Locked))
            .unwrap();
        assert_eq!(expected.cut_seq, report.cut_seq);
        assert_eq!(expected.state_before, report.state_before);
        assert_eq!(expected.state_after, report.state_after);
        assert_eq!(expected.config_after, report.config_after);
        reference.commit("ma_cross").unwrap();
    }
    replay(&reference, &clock, "ma_cross", &calls[fed..]);

    let live = runtime.snapshot("ma_cross").unwrap();
    let expected = reference.snapshot("ma_cross").unwrap();
    assert_eq!(state(&live), state(&expected), "a state update was lost");
    // And, independently of the reference: positions are the sums of the fills sent.
    for instrument in ["ES", "NQ", "ES-FILLS", "NQ-FILLS"] {
        let filled: i64 = calls
            .iter()
            .filter_map(|c| json(&c.input).get("fill").cloned())
            .filter(|fill| fill["instrument"] == instrument)
            .map(|fill| fill["qty"].as_i64().unwrap())
            .sum();
        assert_eq!(
            state(&live)["instruments"][instrument]["position"],
            filled,
            "position on {instrument}"
        );
    }
    assert_eq!(
        (live.seq, live.sha256, &live.version),
        (expected.seq, expected.sha256, &expected.version)
    );
}

#[test]
fn an_optimistic_swap_under_load_fails_no_call_and_loses_no_state_update() {
    swap_under_load_loses_nothing(SwapMode::Optimistic);
}

#[test]
fn a_locked_swap_under_load_fails_no_call_and_loses_no_state_update() {
    swap_under_load_loses_nothing(SwapMode::Locked);
}

#[test]
fn ma_cross_2_0_0_renames_the_periods_and_adds_signal_threshold_in_config_and_state() {
    let es = json!({"closes": [10.0, 10.0, 10.0, 13.0], "position": 3, "pending": 0, "side": 1});
    // With the default periods (5 and 20) nothing was ordered: the fill is of another order.
    let es_default = json!({"closes": [10.0, 10.0, 10.0, 13.0], "position": 3, "pending": -3,
                            "side": 0});
    struct Case {
        config: Value,
        config_after: Value,
        state_before: Value,
        state_after: Value,
    }
    let cases = [
        Case {
            config: json!({"fast_ma_period": 2, "slow_ma_period": 4, "order_qty": 3}),
            config_after: json!({"fast_period": 2, "slow_period": 4, "order_qty": 3,
                                 "signal_threshold": 0.01}),
            state_before: json!({"fast_ma_period": 2, "slow_ma_period": 4, "order_qty": 3,
                                 "next_order_id": 2, "instruments": {"ES": es}}),
            state_after: json!({"fast_period": 2, "slow_period": 4, "order_qty": 3,
                                "signal_threshold": 0.01, "next_order_id": 2,
                                "instruments": {"ES": es}}),
        },
        // A config that leaves everything to the defaults gets only the new field.
        Case {
            config: json!({}),
            config_after: json!({"signal_threshold": 0.01}),
            state_before: json!({"fast_ma_period": 5, "slow_ma_period": 20, "order_qty": 1,
                                 "next_order_id": 1, "instruments": {"ES": es_default}}),
            state_after: json!({"fast_period": 5, "slow_period": 20, "order_qty": 1,
                                "signal_threshold": 0.01, "next_order_id": 1,
                                "instruments": {"ES": es_default}}),
        },
    ];
    for case in cases {
        let (_dir, runtime) = runtime();
        install(&runtime, MA_CROSS_1_0_0, case.config.clone());
        for close in [10.0, 10.0, 10.0, 13.0] {
            runtime.call("ma_cross", &bar("ES", close)).unwrap();
        }
        // A fill (of the order the crossing asked for, with the first config).
        runtime.call("ma_cross", &fill(1, "ES", 3, 13.0)).unwrap();
        let v2 = stage(&runtime, MA_CROSS_2_0_0);

        let report = runtime.swap(SwapRequest::new("ma_cross", v2)).unwrap();
        assert_eq!(report.kind, TransitionKind::Upgrade);
        assert_eq!(
            (report.from.version.as_str(), report.to.version.as_str()),
            ("1.0.0", "2.0.0")
        );
        assert_eq!(report.config_before, case.config);
        assert_eq!(report.config_after, case.config_after);
        assert_eq!(report.state_before, case.state_before);
        assert_eq!(report.state_after, case.state_after);
        runtime.commit("ma_cross").unwrap();

        let snapshot = runtime.snapshot("ma_cross").unwrap();
        assert_eq!(state(&snapshot), case.state_after);
        assert_eq!(
            (snapshot.version.version.as_str(), snapshot.state_schema),
            ("2.0.0", 2)
        );
        let status = runtime.status();
        assert_eq!(status.plugins[0].config, case.config_after);
    }
}

#[test]
fn a_swap_between_versions_that_declare_no_migration_is_refused() {
    struct Case {
        running: &'static str,
        target: &'static str,
        message: &'static str,
    }
    let cases = [
        Case {
            running: MA_CROSS_1_0_0,
            target: MA_CROSS_2_1_0,
            message: "`ma_cross` cannot go from 1.0.0 to 2.1.0: 2.1.0 does not declare \
                      `migrates_from` covering 1.0.0 (it declares `>=2.0.0, <2.1.0`); go \
                      through an intermediate version that does",
        },
        Case {
            running: MA_CROSS_2_1_0,
            target: MA_CROSS_1_0_0,
            message: "`ma_cross` cannot go from 2.1.0 to 1.0.0: 2.1.0 does not declare \
                      `downgrades_to` covering 1.0.0 (it declares `>=2.0.0, <2.1.0`); go \
                      through an intermediate version that does",
        },
    ];
    for case in cases {
        let (_dir, runtime) = runtime();
        let running = install(&runtime, case.running, json!({}));
        let target = stage(&runtime, case.target);
        let error = runtime
            .swap(SwapRequest::new("ma_cross", target))
            .unwrap_err();
        assert!(matches!(error, HostError::NoMigration { .. }), "{error:?}");
        assert_eq!(error.to_string(), case.message);
        // The running version keeps serving, with no step pending.
        let out = runtime.call("ma_cross", &bar("ES", 10.0)).unwrap();
        assert_eq!(out.receipt.digest, running);
        assert_eq!(runtime.status().plugins[0].pending, None);
    }
}

#[test]
fn commit_destroys_the_previous_instance_and_keeps_its_code_mapped() {
    let (_dir, runtime) = runtime();
    let v1 = install(&runtime, MA_CROSS_1_0_0, json!({}));
    let v2 = stage(&runtime, MA_CROSS_2_0_0);
    let live = |runtime: &Runtime, digest: Digest| {
        let status = runtime.status();
        let library = status
            .resident
            .iter()
            .find(|r| r.version.digest == digest)
            .expect("the library is resident");
        (library.live_instances, status.live_instances)
    };
    assert_eq!(live(&runtime, v1), (1, 1));

    runtime.swap(SwapRequest::new("ma_cross", v2)).unwrap();
    // The verification's throwaway instances are gone; the previous one is kept.
    assert_eq!(live(&runtime, v1), (1, 2));
    assert_eq!(live(&runtime, v2), (1, 2));
    let pending = runtime.status().plugins[0].pending.clone().unwrap();
    assert_eq!(pending.previous.map(|previous| previous.digest), Some(v1));

    let committed = runtime.commit("ma_cross").unwrap();
    assert_eq!(
        (committed.version.as_str(), committed.digest),
        ("2.0.0", v2)
    );
    assert_eq!(live(&runtime, v1), (0, 1));
    assert_eq!(live(&runtime, v2), (1, 1));
    let status = runtime.status();
    assert_eq!(status.resident.len(), 2, "code is never unmapped");
    assert_eq!(status.plugins[0].pending, None);
    assert_eq!(
        status.plugins[0].last_step.as_ref().unwrap().outcome,
        StepState::Committed
    );
    let error = runtime.commit("ma_cross").unwrap_err();
    assert_eq!(
        error.to_string(),
        "no step is in progress for `ma_cross`: nothing to commit or roll back"
    );
}

#[test]
fn verification_runs_probes_and_a_differential_on_throwaway_instances_only() {
    let (_dir, runtime) = runtime();
    install(
        &runtime,
        MA_CROSS_1_0_0,
        json!({"fast_ma_period": 2, "slow_ma_period": 4}),
    );
    for _ in 0..3 {
        runtime.call("ma_cross", &bar("ES", 100.0)).unwrap();
    }
    let v2 = stage(&runtime, MA_CROSS_2_0_0);
    let spec = VerifySpec {
        health: true,
        probes: vec![crossing_up_probe(1)],
        // Up 0.2%: 1.0.0 buys, 2.0.0's 1% threshold does not; another instrument: neither.
        differential: vec![
            json!({"bar": {"instrument": "ES", "close": 100.2}}),
            json!({"bar": {"instrument": "NQ", "close": 100.0}}),
        ],
    };
    let before = runtime.snapshot("ma_cross").unwrap();
    let instances = runtime.status().live_instances;

    let report = runtime.verify("ma_cross", &v2, None, None, &spec).unwrap();
    assert!(report.passed(), "{}", report.summary());
    assert_eq!(report.health, Some(Ok(())));
    assert_eq!(report.probes.len(), 1);
    assert!(report.probes[0].passed(), "{:?}", report.probes[0]);
    // Side by side: the running version's clone and the new version's migrated clone.
    assert_eq!(
        report.differential,
        [
            DifferentialRow {
                input: spec.differential[0].clone(),
                old: Ok(orders(&[(1, "ES", 1)])),
                new: Ok(orders(&[])),
            },
            DifferentialRow {
                input: spec.differential[1].clone(),
                old: Ok(orders(&[])),
                new: Ok(orders(&[])),
            },
        ]
    );
    assert_eq!(
        report
            .differential
            .iter()
            .map(|r| r.agrees())
            .collect::<Vec<_>>(),
        [false, true]
    );

    // Nothing live was touched.
    let after = runtime.snapshot("ma_cross").unwrap();
    assert_eq!((after.seq, after.sha256), (before.seq, before.sha256));
    assert_eq!(runtime.status().live_instances, instances);
    assert_eq!(runtime.status().plugins[0].pending, None);

    // A swap carries the same report.
    let swapped = runtime
        .swap(SwapRequest::new("ma_cross", v2).verify(spec))
        .unwrap();
    assert_eq!(swapped.verification, report);
}

#[test]
fn the_runtime_and_its_handles_may_be_used_from_any_thread() {
    // A compile-time check: a host calls and swaps from many threads.
    fn shared_between_threads<T: Send + Sync>() {}
    shared_between_threads::<Runtime>();
    shared_between_threads::<SlotHandle>();
}

#[test]
fn a_handle_names_the_plugin_it_calls() {
    // What a host reports a handle's failures under (the desk's unparsable answers, say).
    let (_dir, runtime) = runtime();
    install(&runtime, MA_CROSS_1_0_0, json!({}));
    install(&runtime, RISK_MODEL_1_0_0, json!({"max_position": 10}));
    let ma_cross = runtime.handle("ma_cross").unwrap();
    let risk_model = runtime.handle("risk_model").unwrap();
    assert_eq!(
        (ma_cross.plugin(), risk_model.plugin()),
        ("ma_cross", "risk_model")
    );
}
