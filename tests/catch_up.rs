//! The catch-up of an optimistic swap, held open by the gate fixture (2.0.9) so that calls
//! arrive between its cut and its switch: when the new version answers every one of them as
//! the old version did, the swap switches optimistically with those calls caught up; when it
//! answers one differently, the swap switches under the lock and says which call; each call is
//! caught up at the host time it was first given. The state after the switch is checked against
//! a reference runtime fed the same calls.
//!
//! Every wait is a gate the test opens or a poll: no sleeps, no timing asserts.

mod support;

use std::thread::JoinHandle;

use plugsync_host::{
    CallError, Digest, HostError, Runtime, SwapMode, SwapPath, SwapReport, SwapRequest,
    TransitionKind,
};
use serde_json::{Value, json};
use support::*;

/// Periods 2 and 4, threshold 1%.
fn config() -> Value {
    json!({"fast_period": 2, "slow_period": 4})
}

/// A swap of ma_cross to the gated 2.0.9, held open by its gate.
struct Held {
    _dir: tempfile::TempDir,
    runtime: Runtime,
    /// The calls made so far, in order.
    calls: Vec<Recorded>,
    gate: Gate,
    swap: JoinHandle<Result<SwapReport, HostError>>,
    /// The version serving before the switch, and 2.0.9.
    old: Digest,
    new: Digest,
}

impl Held {
    /// Opens the gate and returns the swap's report.
    fn finish(self) -> (Runtime, Vec<Recorded>, SwapReport, Digest, Digest, Gate) {
        self.gate.open();
        let report = self
            .swap
            .join()
            .expect("the swap does not panic")
            .expect("the swap succeeds");
        (
            self.runtime,
            self.calls,
            report,
            self.old,
            self.new,
            self.gate,
        )
    }
}

/// ma_cross 2.0.0 serving four flat ES bars, then a swap to 2.0.9 (`request` made from the
/// artifact) held in 2.0.9's migration until the gate opens.
fn upgrade_held_open(request: impl FnOnce(Digest) -> SwapRequest) -> Held {
    let (dir, runtime) = runtime();
    let old = install(&runtime, MA_CROSS_2_0_0, config());
    let new = stage(&runtime, FAULT_GATE);
    let gate = Gate::new();
    let mut calls = vec![record(
        &runtime,
        "ma_cross",
        bar(&gate.migrate_instrument(), 1.0),
    )];
    calls.extend((0..4).map(|_| record(&runtime, "ma_cross", bar("ES", 100.0))));
    let request = request(new);
    let swap = {
        let runtime = runtime.clone();
        std::thread::spawn(move || runtime.swap(request))
    };
    gate.wait_reached();
    Held {
        _dir: dir,
        runtime,
        calls,
        gate,
        swap,
        old,
        new,
    }
}

/// Inside the window: up 10% (with a 1% threshold the averages cross: buy order 1), then its
/// fill. Returns the two calls, both served by `old`.
fn cross_up_in_the_window(held: &mut Held) {
    let crossing = record(&held.runtime, "ma_cross", bar("ES", 110.0));
    assert_eq!(json(&crossing.output), orders(&[(1, "ES", 1)]));
    let filled = record(&held.runtime, "ma_cross", fill(1, "ES", 1, 110.0));
    for call in [&crossing, &filled] {
        assert_eq!(
            call.receipt.digest, held.old,
            "the old version serves the window"
        );
    }
    held.calls.extend([crossing, filled]);
}

/// The reference: ma_cross 2.0.0 alone fed `calls` in order at their host times, switched
/// (under the lock, with `config`) to 2.0.9 at `report.cut_seq`, then fed the rest; checks
/// the switch migrated the same state and every output after it, and returns the reference.
fn reference_of(
    calls: &[Recorded],
    report: &SwapReport,
    config: Option<Value>,
) -> (tempfile::TempDir, Runtime) {
    let (dir, reference, clock) = reference_runtime();
    install(&reference, MA_CROSS_2_0_0, self::config());
    let target = stage(&reference, FAULT_GATE);
    let cut = calls.partition_point(|c| c.receipt.seq <= report.cut_seq);
    replay(&reference, &clock, "ma_cross", &calls[..cut]);
    let mut request = SwapRequest::new("ma_cross", target).mode(SwapMode::Locked);
    if let Some(config) = config {
        request = request.config(config);
    }
    let expected = reference.swap(request).unwrap();
    assert_eq!(
        (&expected.state_before, &expected.state_after),
        (&report.state_before, &report.state_after)
    );
    assert_eq!(expected.config_after, report.config_after);
    feed_at(&reference, &clock, "ma_cross", &calls[cut..]);
    (dir, reference)
}

/// Live and reference snapshots agree: state, last call and checksum.
fn assert_same_state(live: &Runtime, reference: &Runtime) {
    let live = live.snapshot("ma_cross").unwrap();
    let expected = reference.snapshot("ma_cross").unwrap();
    assert_eq!(state(&live), state(&expected), "a state update was lost");
    assert_eq!(
        (live.seq, live.sha256, &live.version),
        (expected.seq, expected.sha256, &expected.version)
    );
}

#[test]
fn an_upgrade_that_answers_the_window_as_the_old_version_did_switches_optimistically() {
    let mut held = upgrade_held_open(|new| SwapRequest::new("ma_cross", new));
    cross_up_in_the_window(&mut held);
    let (runtime, calls, report, old, new, _gate) = held.finish();

    assert_eq!(report.path, SwapPath::Optimistic);
    assert_eq!(report.kind, TransitionKind::Upgrade);
    assert_eq!((report.from.digest, report.to.digest), (old, new));
    // Cut after the four flat bars; both calls of the window caught up, then the switch.
    assert_eq!((report.cut_seq, report.switched_seq), (5, 7));
    assert_eq!(
        report.caught_up, 2,
        "both calls of the window were caught up"
    );

    // The state is 2.0.9's, as if it had served from the cut: the reference agrees.
    let next = record(&runtime, "ma_cross", bar("ES", 111.0));
    assert_eq!(next.receipt.digest, new);
    let mut calls = calls;
    calls.push(next);
    let (_reference_dir, reference) = reference_of(&calls, &report, None);
    assert_same_state(&runtime, &reference);
    assert_eq!(
        state(&runtime.snapshot("ma_cross").unwrap())["instruments"]["ES"]["position"],
        1
    );
}

#[test]
fn an_upgrade_that_answers_a_call_of_the_window_differently_switches_under_the_lock_and_names_the_call()
 {
    // 2.0.9 with a 50% threshold: the 10% cross up in the window orders nothing there.
    let strict = json!({"fast_period": 2, "slow_period": 4, "signal_threshold": 0.5});
    let request = strict.clone();
    let mut held = upgrade_held_open(move |new| SwapRequest::new("ma_cross", new).config(request));
    cross_up_in_the_window(&mut held);
    let (runtime, calls, report, old, new, _gate) = held.finish();

    assert_eq!(
        report.path,
        SwapPath::Locked {
            reason: "call #6 was answered differently by the new version during catch-up"
                .to_owned()
        }
    );
    assert_eq!((report.from.digest, report.to.digest), (old, new));
    // Under the lock: cut and switch at the last call, nothing caught up.
    assert_eq!((report.cut_seq, report.switched_seq), (7, 7));
    assert_eq!(report.caught_up, 0);
    assert_eq!(report.config_after, strict);
    // The order the old version gave (and the host acted on) is in the migrated state.
    assert_eq!(report.state_after["instruments"]["ES"]["position"], 1);
    assert_eq!(report.state_after["next_order_id"], 2);

    let next = record(&runtime, "ma_cross", bar("ES", 100.0));
    assert_eq!(next.receipt.digest, new);
    let mut calls = calls;
    calls.push(next);
    let (_reference_dir, reference) = reference_of(&calls, &report, Some(strict));
    assert_same_state(&runtime, &reference);
}

#[test]
fn calls_of_the_window_are_caught_up_at_the_host_time_they_were_given() {
    // 2.0.9 reconfigured (it restores, but does not migrate: the restore holds the window).
    // Bars about ECHO_NOW close at the host time and answer it: the new version agrees with
    // the old one only if it is given the time each call was first given.
    let (_dir, runtime) = runtime();
    let gated = install(&runtime, FAULT_GATE, config());
    let handle = runtime.handle("ma_cross").unwrap();
    let gate = Gate::new();
    let mut calls = vec![record_at(
        &handle,
        bar(&gate.restore_instrument(), 1.0),
        event_time(0),
    )];
    calls.extend((1..4).map(|i| record_at(&handle, bar(ECHO_NOW, 1.0), event_time(i))));
    let swap = {
        let runtime = runtime.clone();
        std::thread::spawn(move || runtime.swap(SwapRequest::new("ma_cross", gated)))
    };
    gate.wait_reached();
    for i in 4..8 {
        let call = record_at(&handle, bar(ECHO_NOW, 1.0), event_time(i));
        assert_eq!(
            json(&call.output),
            json!({"orders": [], "now": event_time(i).0})
        );
        calls.push(call);
    }
    gate.open();
    let report = swap.join().unwrap().unwrap();

    assert_eq!(report.kind, TransitionKind::Reconfigure);
    assert_eq!(report.path, SwapPath::Optimistic);
    assert_eq!((report.cut_seq, report.switched_seq), (4, 8));
    assert_eq!(report.caught_up, 4);

    // The reference: 2.0.9 alone, given the same times, reconfigured at the cut.
    let (_reference_dir, reference, clock) = reference_runtime();
    install(&reference, FAULT_GATE, config());
    replay(&reference, &clock, "ma_cross", &calls[..4]);
    let expected = reference
        .swap(SwapRequest::new("ma_cross", gated).mode(SwapMode::Locked))
        .unwrap();
    assert_eq!(expected.state_after, report.state_after);
    replay(&reference, &clock, "ma_cross", &calls[4..]);
    assert_same_state(&runtime, &reference);
    let closes = &state(&runtime.snapshot("ma_cross").unwrap())["instruments"][ECHO_NOW]["closes"];
    assert_eq!(
        closes.as_array().unwrap().len(),
        4,
        "the window keeps the last 4 closes: {closes}"
    );
}

#[test]
fn a_call_both_versions_refuse_in_the_window_agrees_and_is_caught_up_with_the_others() {
    let mut held = upgrade_held_open(|new| SwapRequest::new("ma_cross", new));
    cross_up_in_the_window(&mut held);
    // Not a message either version reads: both refuse it with an error (not a panic). Two
    // refusals agree, whatever each says: nothing answered differently.
    let refused = held.runtime.call("ma_cross", b"not a message").unwrap_err();
    assert!(
        matches!(
            refused,
            CallError::Plugin {
                panicked: false,
                seq: 8,
                ..
            }
        ),
        "{refused:?}"
    );
    let (runtime, calls, report, _old, _new, _gate) = held.finish();

    assert_eq!(report.path, SwapPath::Optimistic);
    assert_eq!((report.cut_seq, report.switched_seq), (5, 8));
    assert_eq!(
        report.caught_up, 3,
        "the refused call was caught up with the cross and its fill"
    );
    // The reference, switched at the cut and given the same calls, refusal included.
    let (_reference_dir, reference) = reference_of(&calls, &report, None);
    reference
        .call("ma_cross", b"not a message")
        .expect_err("the reference refuses it too");
    assert_same_state(&runtime, &reference);
}

#[test]
fn a_window_longer_than_the_last_round_is_caught_up_off_the_lock_while_the_old_version_serves_on() {
    let mut held = upgrade_held_open(|new| SwapRequest::new("ma_cross", new));
    // Ten calls in the window, more than the last round replays under the lock (8): a round
    // replays them off the lock first, and the new version waits inside the last of them.
    let replaying = Gate::new();
    for _ in 0..9 {
        let call = record(&held.runtime, "ma_cross", bar("ES", 100.0));
        held.calls.push(call);
    }
    let call = record(
        &held.runtime,
        "ma_cross",
        bar(&replaying.call_instrument(), 1.0),
    );
    held.calls.push(call);
    held.gate.open();
    replaying.wait_reached();

    // Off the lock, the old version serves on; the call is recorded for the next round. (Were
    // the round replayed under the lock, this call would wait for the gate, never opened.)
    let served = {
        let runtime = held.runtime.clone();
        std::thread::spawn(move || record(&runtime, "ma_cross", bar("ES", 100.0)))
    };
    wait_until(
        "a call is served while the new version replays the window",
        || served.is_finished(),
    );
    let served = served.join().expect("the call does not panic");
    assert_eq!(served.receipt.digest, held.old);
    held.calls.push(served);
    replaying.open();
    let (runtime, calls, report, _old, _new, _gate) = held.finish();

    assert_eq!(report.path, SwapPath::Optimistic);
    assert_eq!((report.cut_seq, report.switched_seq), (5, 16));
    assert_eq!(
        report.caught_up, 11,
        "the ten calls of the first round and the one served during it"
    );
    let (_reference_dir, reference) = reference_of(&calls, &report, None);
    assert_same_state(&runtime, &reference);
}
