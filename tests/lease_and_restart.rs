//! The host acting on its own and coming back: a switch's lease expires and the host rolls the
//! step back; a soak threshold crossed rolls back; a host started again on the same store comes
//! back on its committed set with the checkpointed state; a step id is applied once.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use plugsync_host::{
    AppliedOperation, CheckpointOutcome, Digest, RecoverOptions, RollbackReason, Runtime,
    SoakThresholds, StepFate, StepResult, SwapRequest,
};
use serde_json::{Value, json};
use support::*;

fn ma_cross_1() -> Value {
    json!({"fast_ma_period": 2, "slow_ma_period": 3, "order_qty": 1})
}

#[test]
fn a_switch_whose_lease_expires_is_rolled_back_by_the_host_alone() {
    let (_store, runtime, clock) = runtime_and_clock();
    let v1 = install(&runtime, MA_CROSS_1_0_0, ma_cross_1());
    let v2 = stage(&runtime, MA_CROSS_2_0_0);
    runtime.call("ma_cross", &bar("ES", 100.0)).unwrap();
    runtime
        .swap(
            SwapRequest::new("ma_cross", v2)
                .lease(Duration::from_millis(30), SoakThresholds::default()),
        )
        .unwrap();
    let served = runtime.call("ma_cross", &bar("ES", 101.0)).unwrap();
    assert_eq!(
        served.receipt.digest, v2,
        "the new version serves during the lease"
    );

    clock.advance(31_000_000);
    let reason = rolled_back_by_host(&runtime, "ma_cross");
    assert_eq!(reason, RollbackReason::LeaseExpired { lease_ms: 30 });
    assert_eq!(
        reason.to_string(),
        "no commit arrived within the step's lease of 30 ms"
    );
    let after = runtime.call("ma_cross", &bar("ES", 102.0)).unwrap();
    assert_eq!(
        after.receipt.digest, v1,
        "the previous version serves again"
    );
    // Nothing was lost: the call served by 2.0.0 was replayed into 1.0.0.
    let closes = &state(&runtime.snapshot("ma_cross").unwrap())["instruments"]["ES"]["closes"];
    assert_eq!(closes, &json!([100.0, 101.0, 102.0]));
    assert!(
        runtime.commit("ma_cross").is_err(),
        "nothing is left to commit"
    );
}

#[test]
fn a_step_committed_within_its_lease_stays() {
    let (_store, runtime, clock) = runtime_and_clock();
    install(&runtime, MA_CROSS_1_0_0, ma_cross_1());
    install(&runtime, RISK_MODEL_1_0_0, json!({"max_position": 10}));
    let v2 = stage(&runtime, MA_CROSS_2_0_0);
    let lease = |digest| {
        SwapRequest::new("", digest).lease(Duration::from_millis(30), SoakThresholds::default())
    };
    runtime
        .swap(SwapRequest {
            plugin: "ma_cross".to_owned(),
            ..lease(v2)
        })
        .unwrap();
    runtime.commit("ma_cross").unwrap();
    // A second step, left uncommitted, tells when the steward has looked past both leases:
    // it looks at every slot on each tick, `ma_cross` before `risk_model`.
    let risk_2 = stage(&runtime, RISK_MODEL_2_0_0);
    runtime
        .swap(SwapRequest {
            plugin: "risk_model".to_owned(),
            ..lease(risk_2)
        })
        .unwrap();
    clock.advance(3_600_000_000_000);
    rolled_back_by_host(&runtime, "risk_model");
    let status = runtime.status();
    assert_eq!(status.plugins[0].version.digest, v2);
    assert!(status.plugins[0].last_rollback.is_none());
}

#[test]
fn an_error_rate_above_the_soak_threshold_rolls_back() {
    let (_store, runtime) = runtime();
    let v1 = install(&runtime, MA_CROSS_1_0_0, ma_cross_1());
    let v2 = stage(&runtime, MA_CROSS_2_0_0);
    let soak = SoakThresholds {
        max_error_rate: Some(0.25),
        min_calls: 4,
        max_call_latency_us: None,
    };
    runtime
        .swap(SwapRequest::new("ma_cross", v2).lease(Duration::from_secs(600), soak))
        .unwrap();
    // Two good calls, two refused (a close must be positive): half of them failed.
    runtime.call("ma_cross", &bar("ES", 100.0)).unwrap();
    runtime.call("ma_cross", &bar("ES", 101.0)).unwrap();
    runtime.call("ma_cross", &bar("ES", -1.0)).unwrap_err();
    runtime.call("ma_cross", &bar("ES", -2.0)).unwrap_err();

    let reason = rolled_back_by_host(&runtime, "ma_cross");
    assert_eq!(
        reason.to_string(),
        "the new version crossed its soak threshold `max_error_rate 0.25`: 2 of 4 calls failed \
         (0.5000)"
    );
    assert_eq!(
        runtime
            .call("ma_cross", &bar("ES", 102.0))
            .unwrap()
            .receipt
            .digest,
        v1
    );
}

#[test]
fn a_version_that_turns_unhealthy_while_it_soaks_is_rolled_back_by_the_host_alone() {
    let (_store, runtime) = runtime();
    let v1 = install(&runtime, MA_CROSS_1_0_0, ma_cross_1());
    let faulty = stage(&runtime, FAULT_HEALTH);
    // Healthy until it has served a call: it passes verification and the check at the switch.
    runtime.swap(SwapRequest::new("ma_cross", faulty)).unwrap();
    runtime.call("ma_cross", &bar("ES", 100.0)).unwrap();

    let reason = rolled_back_by_host(&runtime, "ma_cross");
    assert!(
        matches!(reason, RollbackReason::HealthFailed { .. }),
        "{reason:?}"
    );
    assert_eq!(
        runtime
            .call("ma_cross", &bar("ES", 101.0))
            .unwrap()
            .receipt
            .digest,
        v1
    );
}

#[test]
fn a_restarted_host_comes_back_on_its_committed_set_and_checkpointed_state() {
    let store = tempfile::tempdir().unwrap();
    let (v2, state_at_commit) = {
        let runtime = Runtime::new(options(store.path())).unwrap();
        install(&runtime, MA_CROSS_1_0_0, ma_cross_1());
        install(&runtime, RISK_MODEL_1_0_0, json!({"max_position": 10}));
        runtime
            .set_checkpointing("ma_cross", Some(Duration::from_secs(3600)))
            .unwrap();
        for close in [100.0, 101.0, 103.0] {
            runtime.call("ma_cross", &bar("ES", close)).unwrap();
        }
        let v2 = stage(&runtime, MA_CROSS_2_0_0);
        runtime.swap(SwapRequest::new("ma_cross", v2)).unwrap();
        runtime.call("ma_cross", &bar("ES", 104.0)).unwrap();
        runtime.commit("ma_cross").unwrap();
        let state_at_commit = state(&runtime.snapshot("ma_cross").unwrap());
        // A step switched but never committed is not in the committed set.
        let risk_2 = stage(&runtime, RISK_MODEL_2_0_0);
        runtime
            .swap(SwapRequest::new("risk_model", risk_2))
            .unwrap();
        // The process dies here: nothing runs on the way out (the runtime is leaked, as a
        // killed process leaves it).
        std::mem::forget(runtime);
        (v2, state_at_commit)
    };

    let restarted = Runtime::new(options(store.path())).unwrap();
    let recovery = restarted.recover().unwrap();
    let summary: Vec<(String, String, bool)> = recovery
        .plugins
        .iter()
        .map(|p| {
            (
                p.plugin.clone(),
                p.version.version.clone(),
                matches!(p.checkpoint, CheckpointOutcome::Restored { .. }),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("ma_cross".to_owned(), "2.0.0".to_owned(), true),
            ("risk_model".to_owned(), "1.0.0".to_owned(), false),
        ]
    );
    let status = restarted.status();
    assert_eq!(status.recovered.as_ref(), Some(&recovery));
    assert_eq!(status.plugins[0].version.digest, v2);
    assert_eq!(
        state(&restarted.snapshot("ma_cross").unwrap()),
        state_at_commit
    );
    // And it trades on from there.
    restarted.call("ma_cross", &bar("ES", 105.0)).unwrap();
}

/// A store where ma_cross 1.0.0 checkpointed its state after one bar, and the checkpoint's path.
fn a_store_with_a_checkpoint() -> (tempfile::TempDir, std::path::PathBuf) {
    let store = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(options(store.path())).unwrap();
    install(&runtime, MA_CROSS_1_0_0, ma_cross_1());
    runtime.call("ma_cross", &bar("ES", 100.0)).unwrap();
    runtime
        .set_checkpointing("ma_cross", Some(Duration::from_secs(3600)))
        .unwrap();
    drop(runtime);
    let checkpoint = store.path().join("checkpoints").join("ma_cross.json");
    (store, checkpoint)
}

/// A runtime started again on `store` that recovers its committed set but does not start
/// ma_cross, and why.
fn restarted_without_ma_cross(store: &std::path::Path) -> (Runtime, String) {
    let restarted = Runtime::new(options(store)).unwrap();
    let recovery = restarted.recover().unwrap();
    let CheckpointOutcome::NotStarted { reason } = recovery.plugins[0].checkpoint.clone() else {
        panic!("the plugin should not start: {:?}", recovery.plugins[0]);
    };
    (restarted, reason)
}

#[test]
fn a_checkpoint_that_does_not_verify_keeps_the_plugin_stopped_unless_fresh_state_is_chosen() {
    let (store, checkpoint) = a_store_with_a_checkpoint();
    let text = std::fs::read_to_string(&checkpoint).unwrap();
    std::fs::write(&checkpoint, text.replace("100.0", "999.0")).unwrap();

    // Its positions would be forgotten: the plugin is not started, and says why.
    let (restarted, reason) = restarted_without_ma_cross(store.path());
    assert_eq!(
        normalise(&reason, store.path()),
        "state snapshot for `ma_cross` does not verify: its sha256 is [HASH] but it claims \
         [HASH]: it was altered or truncated; it was not restored; it was not started, so that \
         its state is not silently forgotten: fix or restore `checkpoints/ma_cross.json`, or \
         start it with a fresh state on purpose (`plugsync host --fresh-state ma_cross`)"
    );
    assert!(restarted.status().plugins.is_empty());
    assert!(restarted.call("ma_cross", &bar("ES", 101.0)).is_err());
    // It stays committed: a commit of another plugin does not drop it from the store.
    assert_eq!(restarted.committed().plugins.len(), 1);
    install(&restarted, RISK_MODEL_1_0_0, json!({"max_position": 10}));
    drop(restarted);
    let committed = std::fs::read_to_string(store.path().join("committed.json")).unwrap();
    assert!(committed.contains("\"ma_cross\""), "{committed}");

    // Starting fresh is the operator's explicit choice.
    let chosen = Runtime::new(options(store.path())).unwrap();
    let recovery = chosen
        .recover_with(&RecoverOptions {
            fresh_state: ["ma_cross".to_owned()].into(),
        })
        .unwrap();
    assert!(
        matches!(
            recovery.plugins[0].checkpoint,
            CheckpointOutcome::Fresh { .. }
        ),
        "{:?}",
        recovery.plugins[0]
    );
    let fresh = state(&chosen.snapshot("ma_cross").unwrap());
    assert_eq!(fresh["instruments"], json!({}));
    // Recorded, so that every client sees the host dropped the state, and kept across a restart.
    let record = |runtime: &Runtime| runtime.status().plugins[0].applied.clone().unwrap();
    let applied = record(&chosen);
    assert_eq!(
        (
            applied.operation,
            applied.fresh_state,
            applied.origin.clone()
        ),
        (AppliedOperation::Recovery, true, None)
    );
    drop(chosen);
    let again = Runtime::new(options(store.path())).unwrap();
    again.recover().unwrap();
    assert_eq!(record(&again), applied);
}

#[test]
fn the_same_step_id_applies_once() {
    let (_store, runtime) = runtime();
    let applied = AtomicUsize::new(0);
    let apply = || {
        applied.fetch_add(1, Ordering::SeqCst);
        Ok(json!({"switched": true}))
    };
    let request = Digest::of(b"the switch request");
    let first = runtime
        .once_per_step("step-1", "switch", &request, apply)
        .unwrap();
    let retry = runtime
        .once_per_step("step-1", "switch", &request, apply)
        .unwrap();
    assert_eq!(applied.load(Ordering::SeqCst), 1);
    assert!(!first.replayed && retry.replayed);
    assert_eq!(first.outcome, retry.outcome);
    // Another operation of the same step, or another step, applies.
    runtime
        .once_per_step("step-1", "commit", &request, apply)
        .unwrap();
    runtime
        .once_per_step("step-2", "switch", &request, apply)
        .unwrap();
    assert_eq!(applied.load(Ordering::SeqCst), 3);
    // A failure is recorded too: the retry gets the same failure, nothing is applied again.
    let failing = || Err(json!({"code": "verification_failed"}));
    let failed = runtime
        .once_per_step("step-3", "switch", &request, failing)
        .unwrap();
    let again = runtime
        .once_per_step("step-3", "switch", &request, apply)
        .unwrap();
    assert_eq!(failed.outcome, again.outcome);
    assert_eq!(applied.load(Ordering::SeqCst), 3);
    // The same step id with another request is a mistake, not a retry: refused, not applied.
    let other = Digest::of(b"another switch request");
    let reused = runtime
        .once_per_step("step-1", "switch", &other, apply)
        .unwrap_err();
    assert_eq!(
        reused.to_string(),
        "step id `step-1` was already used for a different `switch` request: a retry must send \
         the same request; give a new step a new step id"
    );
    assert_eq!(applied.load(Ordering::SeqCst), 3);
    // A transient failure (the host could not do it now) is not recorded: the step id is not
    // spent, and the retry applies.
    let transient = || StepResult::Transient(json!({"code": "io", "status": 500}));
    let failed = runtime
        .once_per_step("step-4", "switch", &request, transient)
        .unwrap();
    assert_eq!(failed.outcome, Err(json!({"code": "io", "status": 500})));
    let retried = runtime
        .once_per_step("step-4", "switch", &request, apply)
        .unwrap();
    assert!(!retried.replayed);
    assert_eq!(applied.load(Ordering::SeqCst), 4);
    // Step ids name files: anything else is refused.
    let error = runtime
        .once_per_step("../x", "switch", &request, apply)
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "step id `../x` is not usable: use 1 to 128 letters, digits, `.`, `_` or `-`, not \
         starting with `.`"
    );
}

#[test]
fn step_records_past_their_retention_are_pruned_and_the_step_applies_again() {
    let (store, runtime) = runtime();
    let request = Digest::of(b"the switch request");
    let applied = AtomicUsize::new(0);
    let apply = || {
        applied.fetch_add(1, Ordering::SeqCst);
        Ok(json!({"switched": true}))
    };
    for step in ["old", "recent"] {
        runtime
            .once_per_step(step, "switch", &request, apply)
            .unwrap();
    }
    // `old` was recorded eight days ago.
    let eight_days_ago = std::time::SystemTime::now() - Duration::from_secs(8 * 24 * 3600);
    let old = store.path().join("steps").join("old").join("switch.json");
    std::fs::File::options()
        .write(true)
        .open(&old)
        .unwrap()
        .set_modified(eight_days_ago)
        .unwrap();

    let week = Duration::from_secs(7 * 24 * 3600);
    assert_eq!(runtime.prune_step_records(week).unwrap(), 1);
    assert!(!old.exists());
    let recent = runtime
        .once_per_step("recent", "switch", &request, apply)
        .unwrap();
    assert!(recent.replayed, "a recent step is still recorded");
    let again = runtime
        .once_per_step("old", "switch", &request, apply)
        .unwrap();
    assert!(!again.replayed, "a pruned step applies again");
    assert_eq!(applied.load(Ordering::SeqCst), 3);
}

#[test]
fn a_steps_fate_is_known_from_its_slot_when_it_ended_in_process() {
    let (_store, runtime) = runtime();
    install(&runtime, MA_CROSS_1_0_0, ma_cross_1());
    let v2 = stage(&runtime, MA_CROSS_2_0_0);
    runtime
        .swap(SwapRequest::new("ma_cross", v2).step_id("s1"))
        .unwrap();
    assert_eq!(
        runtime.step_fate("ma_cross", "s1").unwrap(),
        StepFate::Pending
    );
    // Rolled back in process, not through the control API: the store holds no record of the
    // step, the slot's last step says what became of it, and of it only.
    runtime.rollback("ma_cross").unwrap();
    assert_eq!(
        runtime.step_fate("ma_cross", "s1").unwrap(),
        StepFate::RolledBack
    );
    assert_eq!(
        runtime.step_fate("ma_cross", "s2").unwrap(),
        StepFate::Unknown
    );
}

#[test]
fn step_records_that_cannot_be_listed_are_an_error_not_nothing_to_prune() {
    let (store, runtime) = runtime();
    // A file where the directory of step records would be.
    std::fs::write(store.path().join("steps"), b"").unwrap();
    let error = runtime
        .prune_step_records(Duration::from_secs(3600))
        .unwrap_err();
    assert_eq!(
        normalise(&error.to_string(), store.path()),
        "cannot read `[ROOT]/steps`: Not a directory (os error 20)"
    );
}

#[test]
fn the_steward_prunes_step_records_past_the_runtimes_retention() {
    let store = tempfile::tempdir().unwrap();
    let request = Digest::of(b"the switch request");
    let record = store.path().join("steps").join("s1").join("switch.json");
    {
        let runtime = Runtime::new(options(store.path())).unwrap();
        runtime
            .once_per_step("s1", "switch", &request, || Ok(json!({})))
            .unwrap();
    }
    assert!(record.exists());
    // A runtime keeping records for no time prunes them on its steward's first look.
    let mut no_retention = options(store.path());
    no_retention.step_retention = Duration::ZERO;
    let _runtime = Runtime::new(no_retention).unwrap();
    wait_until("the steward prunes the record", || !record.exists());
}

#[test]
fn a_checkpoint_that_cannot_be_read_keeps_the_plugin_stopped_rather_than_starting_it_fresh() {
    let (store, checkpoint) = a_store_with_a_checkpoint();
    // Unreadable, not missing: a directory where the file should be.
    std::fs::remove_file(&checkpoint).unwrap();
    std::fs::create_dir(&checkpoint).unwrap();

    let (restarted, reason) = restarted_without_ma_cross(store.path());
    assert_eq!(
        normalise(&reason, store.path()),
        "cannot read `[ROOT]/checkpoints/ma_cross.json`: Is a directory (os error 21); it was \
         not started, so that its state is not silently forgotten: fix or restore \
         `checkpoints/ma_cross.json`, or start it with a fresh state on purpose (`plugsync \
         host --fresh-state ma_cross`)"
    );
    assert!(restarted.status().plugins.is_empty());
}

#[test]
fn a_checkpoint_that_cannot_be_removed_at_an_unload_is_reported_as_a_persistence_error() {
    let (store, runtime) = runtime();
    install(&runtime, MA_CROSS_1_0_0, ma_cross_1());
    // There, but not a file an unload can remove: a directory where the checkpoint would be.
    // Left unreported, it would come back as the checkpoint of a later install of `ma_cross`.
    let checkpoint = store.path().join("checkpoints").join("ma_cross.json");
    std::fs::create_dir_all(&checkpoint).unwrap();

    runtime.unload("ma_cross").unwrap();
    let error = runtime
        .status()
        .persist_error
        .expect("the failed removal is reported");
    assert_eq!(
        normalise(&error, store.path()),
        "cannot remove `[ROOT]/checkpoints/ma_cross.json`: Is a directory (os error 21)"
    );
}

#[test]
fn the_steward_writes_no_checkpoint_before_the_plugins_period_is_up() {
    let (store, runtime, clock) = runtime_and_clock();
    install(&runtime, MA_CROSS_1_0_0, ma_cross_1());
    install(&runtime, RISK_MODEL_1_0_0, json!({"max_position": 10}));
    // Opting in writes a checkpoint at once; the next is due in an hour.
    runtime
        .set_checkpointing("ma_cross", Some(Duration::from_secs(3600)))
        .unwrap();
    let checkpoint = store.path().join("checkpoints").join("ma_cross.json");
    let at_opt_in = std::fs::read(&checkpoint).unwrap();
    for close in [100.0, 101.0, 103.0] {
        runtime.call("ma_cross", &bar("ES", close)).unwrap();
    }

    // The witness that the steward has looked at `ma_cross` since those calls: in the same
    // look it rolls back a step of `risk_model` (after `ma_cross` in its order) whose lease ran
    // out by the manual clock.
    let risk_2 = stage(&runtime, RISK_MODEL_2_0_0);
    runtime
        .swap(
            SwapRequest::new("risk_model", risk_2)
                .lease(Duration::from_millis(30), SoakThresholds::default()),
        )
        .unwrap();
    clock.advance(31_000_000);
    assert_eq!(
        rolled_back_by_host(&runtime, "risk_model"),
        RollbackReason::LeaseExpired { lease_ms: 30 }
    );
    assert_eq!(
        std::fs::read(&checkpoint).unwrap(),
        at_opt_in,
        "the checkpoint written at the opt-in, not rewritten within the hour"
    );
}

#[test]
fn a_plugin_unloaded_and_installed_again_comes_back_without_the_checkpoint_of_its_earlier_life() {
    let store = tempfile::tempdir().unwrap();
    {
        let runtime = Runtime::new(options(store.path())).unwrap();
        install(&runtime, MA_CROSS_1_0_0, ma_cross_1());
        runtime.call("ma_cross", &fill(7, "ES", 2, 100.0)).unwrap();
        runtime
            .set_checkpointing("ma_cross", Some(Duration::from_secs(3600)))
            .unwrap();
        runtime.unload("ma_cross").unwrap();
        // Installed again, without checkpoints: a new plugin as far as the store knows.
        install(&runtime, MA_CROSS_1_0_0, ma_cross_1());
        std::mem::forget(runtime);
    }
    let restarted = Runtime::new(options(store.path())).unwrap();
    let recovery = restarted.recover().unwrap();
    assert_eq!(
        recovery.plugins[0].checkpoint,
        CheckpointOutcome::Missing,
        "the checkpoint went with the unload"
    );
    let fresh = state(&restarted.snapshot("ma_cross").unwrap());
    assert_eq!(
        fresh["instruments"],
        json!({}),
        "no position from the earlier life"
    );
    // Unloading it again, with no checkpoint to remove, persists without an error.
    restarted.unload("ma_cross").unwrap();
    assert_eq!(restarted.status().persist_error, None);
}
