//! The host protocol that several clients share, through a real server and a real HTTP client
//! with the real plugin libraries: every fact clients must agree on is the host's, and the host
//! enforces it.
//!
//! - **Steps are owned**: a commit or rollback ends the pending step only if it names it; a
//!   retried switch is answered from its record only while the switch holds.

mod support;

use plugsync_host::{SwapRequest, VersionRef};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::*;

/// A host running ma_cross 1.0.0 (installed by step `install`), with 2.0.0 staged.
async fn host_with_v1_and_v2_staged() -> (Host, String, String) {
    let host = Host::start().await;
    let v1 = host.stage(MA_CROSS_1_0_0).await.to_string();
    let v2 = host.stage(MA_CROSS_2_0_0).await.to_string();
    host.post(
        "/v1/steps/install/install",
        json!({"artifact": v1, "config": v1_config()}),
    )
    .await
    .expect_ok();
    (host, v1, v2)
}

fn ma_cross() -> Value {
    json!({"plugin": "ma_cross"})
}

/// What `ma_cross` runs and which step is pending, from `GET /v1/status`.
async fn running(host: &Host) -> (String, Value) {
    let status = host.get("/v1/status").await;
    let plugin = &status.expect_ok()["plugins"][0];
    (
        plugin["version"]["version"].as_str().unwrap().to_owned(),
        plugin["pending"]["step_id"].clone(),
    )
}

#[tokio::test]
async fn a_commit_or_rollback_naming_another_step_is_refused_and_names_the_pending_one() {
    let (host, _, v2) = host_with_v1_and_v2_staged().await;
    host.post(
        "/v1/steps/plan-7.1.0/switch",
        json!({"plugin": "ma_cross", "artifact": v2}),
    )
    .await
    .expect_ok();

    for operation in ["commit", "rollback"] {
        let refused = host
            .post(&format!("/v1/steps/plan-6.1.0/{operation}"), ma_cross())
            .await;
        let message = refused.expect_error(StatusCode::CONFLICT, "step_not_owned");
        assert_eq!(
            message,
            "the pending step of `ma_cross` is `plan-7.1.0`, not `plan-6.1.0`: commit or roll \
             back only the step you switched (its id is in `GET /v1/status`, under `pending`)"
        );
        // Nothing happened: 2.0.0 still runs, its step still pending.
        assert_eq!(running(&host).await, ("2.0.0".into(), json!("plan-7.1.0")));
    }

    let committed = host.post("/v1/steps/plan-7.1.0/commit", ma_cross()).await;
    assert_eq!(committed.expect_ok()["version"]["version"], "2.0.0");
    assert_eq!(running(&host).await, ("2.0.0".into(), Value::Null));
    host.shutdown().await;
}

#[tokio::test]
async fn a_step_started_in_process_is_not_ended_through_the_api() {
    let (host, _, v2) = host_with_v1_and_v2_staged().await;
    // The host's own code switched, with no step id: no client owns the step.
    host.runtime
        .swap(SwapRequest::new("ma_cross", v2.parse().unwrap()))
        .unwrap();

    let refused = host.post("/v1/steps/mine/commit", ma_cross()).await;
    let message = refused.expect_error(StatusCode::CONFLICT, "step_not_owned");
    assert_eq!(
        message,
        "the pending step of `ma_cross` is one started in process, without a step id (only the \
         host ends it), not `mine`: commit or roll back only the step you switched (its id is in \
         `GET /v1/status`, under `pending`)"
    );
    let version = host.runtime.commit("ma_cross").unwrap();
    assert_eq!(version.version, "2.0.0");
    host.shutdown().await;
}

#[tokio::test]
async fn a_switch_retried_after_its_rollback_learns_it_is_gone() {
    let (host, _, v2) = host_with_v1_and_v2_staged().await;
    let switch = json!({"plugin": "ma_cross", "artifact": v2});
    host.post("/v1/steps/s1/switch", switch.clone())
        .await
        .expect_ok();
    // While the step holds, a retry gets the recorded report.
    let retry = host.post("/v1/steps/s1/switch", switch.clone()).await;
    assert!(retry.replayed());
    retry.expect_ok();

    host.post("/v1/steps/s1/rollback", ma_cross())
        .await
        .expect_ok();
    let gone = host.post("/v1/steps/s1/switch", switch).await;
    let message = gone.expect_error(StatusCode::CONFLICT, "step_gone");
    assert_eq!(
        message,
        "step `s1` switched `ma_cross`, but has been rolled back since: the switch is not in \
         effect; read `GET /v1/status` and start a new step with a new step id"
    );
    assert_eq!(running(&host).await, ("1.0.0".into(), Value::Null));
    host.shutdown().await;
}

#[tokio::test]
async fn a_switch_retried_across_a_host_restart_learns_it_is_gone_and_a_committed_one_holds() {
    let (host, v1, v2) = host_with_v1_and_v2_staged().await;
    let switch = json!({"plugin": "ma_cross", "artifact": v2});
    host.post("/v1/steps/committed/switch", switch.clone())
        .await
        .expect_ok();
    host.post("/v1/steps/committed/commit", ma_cross())
        .await
        .expect_ok();
    // Back to 1.0.0 by a second step, left pending when the host restarts.
    let pending = json!({"plugin": "ma_cross", "artifact": v1, "config": v1_config()});
    host.post("/v1/steps/lost/switch", pending.clone())
        .await
        .expect_ok();

    let host = host.restart().await;
    // Recovery started from the committed set: 2.0.0, no step pending.
    assert_eq!(running(&host).await, ("2.0.0".into(), Value::Null));
    let gone = host.post("/v1/steps/lost/switch", pending).await;
    let message = gone.expect_error(StatusCode::CONFLICT, "step_gone");
    assert_eq!(
        message,
        "step `lost` switched `ma_cross`, but the host has no trace of it: it restarted since (a \
         pending step does not survive a restart: the committed version runs): the switch is not \
         in effect; read `GET /v1/status` and start a new step with a new step id"
    );
    // The committed switch still holds: its retry is answered from its record.
    let held = host.post("/v1/steps/committed/switch", switch).await;
    assert!(held.replayed());
    assert_eq!(held.expect_ok()["to"]["version"], "2.0.0");
    assert_eq!(
        host.runtime.committed().plugins[0].version,
        VersionRef {
            version: "2.0.0".into(),
            digest: v2.parse().unwrap()
        }
    );
    host.shutdown().await;
}
