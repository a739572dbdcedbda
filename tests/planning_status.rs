//! What a planning client reads from a host: the status types read back from their JSON into
//! the very types the host wrote them from (a round trip gives back an equal value), and the
//! facts a plan needs (each plugin's metadata, its last call, a pending step's lease and soak
//! thresholds), taken from a real runtime running the real example plugins through a fault, a
//! rolled-back step and a pending one; and a plan made from status with the host's own check
//! ([`TransitionKind::between`]) agrees with what the host accepts and refuses.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use plugsync_host::control::api::{ApiInfo, RunningState};
use plugsync_host::{
    Asked, HostTime, RollbackMethod, RollbackReason, Runtime, RuntimeStatus, SoakThresholds,
    StepState, SwapRequest, TransitionKind, VerifySpec, inspect,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use support::*;

/// The soak thresholds of the scenario's steps (never crossed by it).
fn soak() -> SoakThresholds {
    SoakThresholds {
        max_error_rate: Some(0.25),
        min_calls: 1000,
        max_call_latency_us: Some(5_000_000),
    }
}

/// The lease of the scenario's steps (the manual clock never reaches its end).
const LEASE: Duration = Duration::from_secs(60);

/// A runtime taken through the scenario, and what it showed on the way.
struct Scenario {
    _dir: tempfile::TempDir,
    runtime: Runtime,
    /// Just after the install, before any call.
    installed: RuntimeStatus,
    /// After the rollback of the first step.
    rolled_back: RuntimeStatus,
    /// With the second step pending.
    pending: RuntimeStatus,
    /// The host time of the last call served before the rollback, and of the last one of all.
    last_call_before_rollback: HostTime,
    last_call: HostTime,
}

/// ma_cross 2.0.3 (the call-fault fixture) faulted by a panic, a step to 2.1.0 rolled back
/// (which brings the fault back), then another step to 2.1.0 left pending; the reconcile lease
/// broken once and held.
fn scenario() -> Scenario {
    let (dir, runtime, clock) = runtime_and_clock();
    install(&runtime, FAULT_CALL, json!({}));
    let installed = runtime.status();
    runtime.acquire_lease("planner-a", 60_000).unwrap();
    runtime
        .break_lease("planner-b", "planner-a crashed")
        .unwrap();
    runtime.acquire_lease("planner-b", 60_000).unwrap();
    let call = |close: f64| {
        clock.advance(1_000_000);
        runtime
            .call("ma_cross", &bar("ES", close))
            .unwrap()
            .receipt
            .now
    };
    for close in [100.0, 101.0, 102.0] {
        call(close);
    }
    clock.advance(1_000_000);
    runtime.call("ma_cross", &bar("CRASH", 1.0)).unwrap_err();

    let v2_1 = stage(&runtime, MA_CROSS_2_1_0);
    let step = |id: &str| {
        SwapRequest::new("ma_cross", v2_1)
            .step_id(id)
            .lease(LEASE, soak())
    };
    runtime.swap(step("plan-1")).unwrap();
    call(103.0);
    let last_call_before_rollback = call(104.0);
    let asked = Asked {
        step_id: Some("plan-1".into()),
        ..Asked::default()
    };
    runtime.rollback_asked("ma_cross", &asked).unwrap();
    let rolled_back = runtime.status();

    // The rollback marked 2.1.0 failed; cleared, the same version is switched to again.
    runtime.clear_failed(&v2_1, "test").unwrap();
    runtime.swap(step("plan-2")).unwrap();
    let last_call = call(105.0);
    let pending = runtime.status();
    Scenario {
        _dir: dir,
        runtime,
        installed,
        rolled_back,
        pending,
        last_call_before_rollback,
        last_call,
    }
}

/// `value` written as JSON text and read back.
fn round_trip<T: Serialize + DeserializeOwned>(value: &T) -> T {
    let text = serde_json::to_string(value).unwrap();
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

#[test]
fn a_real_status_reads_back_as_the_same_value() {
    let Scenario {
        runtime,
        rolled_back,
        pending,
        ..
    } = scenario();

    // After the rollback: the fault is back with 2.0.3, the step and its rollback on record.
    let plugin = &rolled_back.plugins[0];
    assert_eq!(plugin.version.version, "2.0.3");
    assert!(plugin.fault.is_some() && plugin.pending.is_none());
    let last_step = plugin.last_step.as_ref().unwrap();
    assert_eq!(
        (last_step.step_id.as_deref(), last_step.outcome),
        (Some("plan-1"), StepState::RolledBack)
    );
    assert_eq!(last_step.replaced_fault, plugin.fault);
    let rollback = plugin.last_rollback.as_ref().unwrap();
    assert_eq!(rollback.reason, RollbackReason::Requested);
    assert!(matches!(
        rollback.method,
        RollbackMethod::Replay { replayed: 2, .. }
    ));
    assert_eq!(round_trip(&rolled_back), rolled_back);

    // With the second step pending: 2.1.0 serves unfaulted, the fault it replaced on record.
    let plugin = &pending.plugins[0];
    assert_eq!(plugin.version.version, "2.1.0");
    assert_eq!(plugin.fault, None);
    let step = plugin.pending.as_ref().unwrap();
    assert_eq!(
        (step.step_id.as_deref(), step.calls_since_switch),
        (Some("plan-2"), 1)
    );
    let last_step = plugin.last_step.as_ref().unwrap();
    assert_eq!(last_step.outcome, StepState::Pending);
    assert!(last_step.replaced_fault.is_some() && plugin.last_rollback.is_some());
    assert_eq!(pending.lease.breaks.len(), 1);
    assert!(pending.lease.holder.is_some());
    assert_eq!(round_trip(&pending), pending);

    // The control API's answer (the status flattened, with the states or without).
    let api = ApiInfo {
        version: "1.1".into(),
        capabilities: vec!["lease".into(), "owned_steps".into()],
    };
    let with_states = RunningState {
        status: pending.clone(),
        api: api.clone(),
        states: Some(BTreeMap::from([(
            "ma_cross".to_owned(),
            runtime.snapshot("ma_cross").unwrap(),
        )])),
    };
    assert_eq!(round_trip(&with_states), with_states);
    let without = RunningState {
        status: pending,
        api,
        states: None,
    };
    assert_eq!(round_trip(&without), without);
}

#[test]
fn status_holds_what_a_plan_needs() {
    let scenario = scenario();

    // The serving version's own metadata, whichever version serves.
    let metadata = |status: &RuntimeStatus| status.plugins[0].metadata.clone();
    assert_eq!(
        metadata(&scenario.rolled_back),
        inspect(&lib(FAULT_CALL)).unwrap()
    );
    assert_eq!(
        metadata(&scenario.pending),
        inspect(&lib(MA_CROSS_2_1_0)).unwrap()
    );

    // The host time of the last call served: none before the first, and a rollback's replay
    // serves no call.
    let last_call_at = |status: &RuntimeStatus| status.plugins[0].last_call_at;
    assert_eq!(last_call_at(&scenario.installed), None);
    assert_eq!(
        last_call_at(&scenario.rolled_back),
        Some(scenario.last_call_before_rollback)
    );
    assert_eq!(last_call_at(&scenario.pending), Some(scenario.last_call));

    // The pending step's lease ends its length after the switch, by the runtime's clock, and
    // its soak thresholds are the ones it was switched with.
    let plugin = &scenario.pending.plugins[0];
    let step = plugin.pending.as_ref().unwrap();
    let switched_at = plugin.last_step.as_ref().unwrap().at;
    assert_eq!(
        step.lease_expires_at,
        Some(HostTime(switched_at.0 + LEASE.as_nanos() as i64))
    );
    assert_eq!(step.soak, soak());
}

#[test]
fn a_plan_made_from_status_agrees_with_what_the_host_accepts_and_refuses() {
    let (_dir, runtime) = runtime();
    install(
        &runtime,
        MA_CROSS_1_0_0,
        json!({"fast_ma_period": 2, "slow_ma_period": 4}),
    );
    let running = runtime.status().plugins[0].metadata.clone();
    for (target, expected) in [
        (MA_CROSS_2_0_0, Ok(TransitionKind::Upgrade)),
        // 2.1.0 migrates up from 2.0.x only: through 2.0.0.
        (MA_CROSS_2_1_0, Err("no_migration")),
    ] {
        let staged = runtime.stage_file(&lib(target)).unwrap();
        let planned = TransitionKind::between("ma_cross", &running, &staged.metadata, false);
        let host = runtime.verify(
            "ma_cross",
            &staged.digest,
            None,
            None,
            &VerifySpec::default(),
        );
        match (&planned, &host) {
            (Ok(_), Ok(report)) => assert!(report.passed(), "{target}: {report:?}"),
            (Err(planned), Err(refused)) => assert_eq!(planned.to_string(), refused.to_string()),
            _ => panic!("{target}: planned {planned:?}, the host answered {host:?}"),
        }
        assert_eq!(planned.map_err(|e| e.code()), expected, "{target}");
    }
}
