//! Restoring a state snapshot into the running instance: refused during a pending step (a
//! rollback by replay would silently undo it) and when its checksum does not verify; a verified
//! snapshot clears the fault a panic left.

mod support;

use plugsync_host::{Digest, Health, HostError, SwapRequest};
use serde_json::json;
use support::*;

#[test]
fn a_restore_during_a_pending_step_is_refused_and_touches_nothing() {
    let (dir, runtime) = runtime();
    install(
        &runtime,
        MA_CROSS_1_0_0,
        json!({"fast_ma_period": 2, "slow_ma_period": 4}),
    );
    for close in [100.0, 101.0] {
        runtime.call("ma_cross", &bar("ES", close)).unwrap();
    }
    let v2 = stage(&runtime, MA_CROSS_2_0_0);
    runtime.swap(SwapRequest::new("ma_cross", v2)).unwrap();
    // A snapshot of the version now serving: it verifies, and is of the running artifact.
    let taken = runtime.snapshot("ma_cross").unwrap();
    assert_eq!(taken.version.digest, v2);
    runtime.call("ma_cross", &fill(3, "ES", 2, 101.0)).unwrap();
    let before = runtime.snapshot("ma_cross").unwrap();

    let error = runtime.restore(&taken).unwrap_err();
    assert!(
        matches!(error, HostError::StepInProgress { .. }),
        "{error:?}"
    );
    assert_eq!(
        normalise(&error.to_string(), dir.path()),
        "a step is in progress for `ma_cross` (1.0.0 -> 2.0.0): commit it or roll it back first"
    );
    let after = runtime.snapshot("ma_cross").unwrap();
    assert_eq!(
        (state(&after), after.sha256, after.seq),
        (state(&before), before.sha256, before.seq)
    );
    assert_eq!(state(&after)["instruments"]["ES"]["position"], 2);
    let pending = runtime.status().plugins[0].pending.clone().unwrap();
    assert_eq!(
        (pending.calls_since_switch, pending.journal_complete),
        (1, true)
    );

    // Once the step is committed, the same snapshot restores.
    runtime.commit("ma_cross").unwrap();
    runtime.restore(&taken).unwrap();
    let restored = runtime.snapshot("ma_cross").unwrap();
    assert_eq!(
        (state(&restored), restored.sha256),
        (state(&taken), taken.sha256)
    );
    assert_eq!(state(&restored)["instruments"]["ES"]["position"], 0);
}

#[test]
fn a_verified_snapshot_clears_a_fault_and_an_altered_one_is_refused() {
    let (dir, runtime) = runtime();
    let faulty = install(
        &runtime,
        FAULT_CALL,
        json!({"fast_period": 2, "slow_period": 4}),
    );
    for input in [bar("ES", 100.0), fill(1, "ES", 2, 100.0)] {
        runtime.call("ma_cross", &input).unwrap();
    }
    let good = runtime.snapshot("ma_cross").unwrap();
    runtime.call("ma_cross", &bar("ES", 101.0)).unwrap();
    runtime.call("ma_cross", &bar("CRASH", 1.0)).unwrap_err();
    let fault = runtime.status().plugins[0]
        .fault
        .clone()
        .expect("the slot is marked faulted");
    assert_eq!((fault.seq, fault.digest), (4, faulty));
    let faulted = runtime.snapshot("ma_cross").unwrap();

    // A snapshot whose checksum was altered, or whose state was: refused, nothing changes.
    let mut altered_sha256 = good.clone();
    altered_sha256.sha256 = Digest::of(b"another state");
    let mut altered_state = good.clone();
    altered_state.state = altered_state
        .state
        .replace("\"position\":2", "\"position\":3");
    assert_ne!(altered_state.state, good.state);
    for altered in [&altered_sha256, &altered_state] {
        let error = runtime.restore(altered).unwrap_err();
        assert!(matches!(error, HostError::BadSnapshot { .. }), "{error:?}");
        assert_eq!(
            normalise(&error.to_string(), dir.path()),
            "state snapshot for `ma_cross` does not verify: its sha256 is [HASH] but it claims \
             [HASH]: it was altered or truncated; it was not restored"
        );
        let status = runtime.status();
        assert_eq!(status.plugins[0].fault.as_ref(), Some(&fault));
        let now = runtime.snapshot("ma_cross").unwrap();
        assert_eq!((state(&now), now.sha256), (state(&faulted), faulted.sha256));
    }

    // The verified snapshot restores, and the slot is healthy again.
    runtime.restore(&good).unwrap();
    let restored = runtime.snapshot("ma_cross").unwrap();
    assert_eq!(
        (state(&restored), restored.sha256),
        (state(&good), good.sha256)
    );
    let status = runtime.status();
    let plugin = &status.plugins[0];
    assert_eq!((&plugin.fault, &plugin.health), (&None, &Health::Ok));
    runtime.check_health("ma_cross").unwrap();
    let out = runtime.call("ma_cross", &bar("ES", 102.0)).unwrap();
    assert_eq!((out.receipt.digest, out.receipt.seq), (faulty, 5));
}
