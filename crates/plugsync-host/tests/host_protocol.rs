//! The host protocol that several clients share, through a real server and a real HTTP client
//! with the real plugin libraries: every fact clients must agree on is the host's, and the host
//! enforces it.
//!
//! - **Steps are owned**: a commit or rollback ends the pending step only if it names it; a
//!   retried switch is answered from its record only while the switch holds.
//! - **One client reconciles at a time**: the reconcile lease, its epoch on every mutating
//!   request, its expiry by the host's clock (a `ManualClock` here), breaks on purpose.
//! - **Named clients**: each client has its own token (the host's token file names them), and
//!   acts on the lease in that name only.

mod support;

use plugsync_host::{SwapRequest, VersionRef};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::*;

/// A host running ma_cross 1.0.0 (installed by step `install`), with 2.0.0 staged; its clock
/// moves only when the test says (and by 1 ns per reading).
async fn host_with_v1_and_v2_staged() -> (Host, String, String) {
    with_v1_and_v2_staged(Host::start_with_manual_clock().await).await
}

/// `host` running ma_cross 1.0.0 (installed by step `install`), with 2.0.0 staged.
async fn with_v1_and_v2_staged(host: Host) -> (Host, String, String) {
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

/// `POST /v1/lease` with `body`, as `client` (e.g. `host.as_client(LAPTOP_TOKEN)`).
async fn lease(client: As<'_>, body: Value) -> Answer {
    client.post("/v1/lease", body).await
}

/// The clients of [`CLIENTS`], as requests of `host` carry their tokens.
fn clients(host: &Host) -> (As<'_>, As<'_>, As<'_>) {
    (
        host.as_client(TOKEN),
        host.as_client(LAPTOP_TOKEN),
        host.as_client(OPS_TOKEN),
    )
}

#[tokio::test]
async fn the_reconcile_lease_admits_its_holder_only_and_a_refused_request_changes_nothing() {
    let (host, _, v2) = with_v1_and_v2_staged(Host::start_with_clients(&CLIENTS).await).await;
    let (sidecar, laptop, _) = clients(&host);
    let acquire = json!({"action": "acquire", "ttl_ms": 30_000});
    let acquired = lease(sidecar, acquire.clone()).await;
    let holder = &acquired.expect_ok()["holder"];
    assert_eq!(
        (&holder["owner"], &holder["epoch"]),
        (&json!("sidecar"), &json!(1))
    );
    let epoch = 1;

    // A second client can neither take the lease nor change the host.
    let taken = lease(laptop, acquire.clone()).await;
    let message = taken.expect_error(StatusCode::CONFLICT, "lease_held");
    assert_eq!(
        message,
        "`sidecar` holds this host's reconcile lease (epoch 1) for 30000 ms more: nothing was \
         applied; wait for it, or if it crashed, let the lease expire or break it on purpose \
         (`POST /v1/lease` with `\"action\": \"break\"`, recorded)"
    );
    let switch = json!({"plugin": "ma_cross", "artifact": v2});
    let refused = laptop
        .post("/v1/steps/laptop-1/switch", switch.clone())
        .await;
    refused.expect_error(StatusCode::CONFLICT, "lease_held");
    let stale = laptop
        .post_with_epoch("/v1/steps/laptop-1/switch", switch.clone(), 7)
        .await;
    let message = stale.expect_error(StatusCode::CONFLICT, "stale_lease_epoch");
    assert_eq!(
        message,
        "lease epoch 7 is not current (`sidecar` holds the lease at epoch 1): nothing was \
         applied; acquire the lease again, observe the host again and plan again"
    );
    assert_eq!(running(&host).await, ("1.0.0".into(), Value::Null));

    // The holder releases (a body may name its own client); the refused step id was not
    // spent: the laptop's retry applies.
    lease(
        sidecar,
        json!({"action": "release", "owner": "sidecar", "epoch": epoch}),
    )
    .await
    .expect_ok();
    let applied = laptop
        .post("/v1/steps/laptop-1/switch", switch.clone())
        .await;
    assert!(!applied.replayed());
    applied.expect_ok();
    // The released holder's epoch is stale now: its requests change nothing.
    let late = sidecar
        .post_with_epoch("/v1/steps/sidecar-1/commit", ma_cross(), epoch)
        .await;
    let message = late.expect_error(StatusCode::CONFLICT, "stale_lease_epoch");
    assert_eq!(
        message,
        "lease epoch 1 is not current (no one holds the lease: it expired, was released or was \
         broken): nothing was applied; acquire the lease again, observe the host again and plan \
         again"
    );
    assert_eq!(running(&host).await, ("2.0.0".into(), json!("laptop-1")));

    // The holder's own requests go through while it holds the lease.
    let again = lease(laptop, acquire).await;
    let holder = &again.expect_ok()["holder"];
    assert_eq!(holder["owner"], "laptop");
    assert_eq!(holder["epoch"], 2, "an epoch is never given twice");
    laptop
        .post_with_epoch("/v1/steps/laptop-1/commit", ma_cross(), 2)
        .await
        .expect_ok();
    assert_eq!(running(&host).await, ("2.0.0".into(), Value::Null));
    host.shutdown().await;
}

#[tokio::test]
async fn a_crashed_holders_lease_expires_a_broken_one_is_recorded_and_both_survive_a_restart() {
    let host = Host::start_with_clients(&CLIENTS).await;
    let acquire = json!({"action": "acquire", "ttl_ms": 1_000});
    {
        let (sidecar, laptop, _) = clients(&host);
        lease(sidecar, acquire.clone()).await.expect_ok();
        lease(laptop, acquire.clone())
            .await
            .expect_error(StatusCode::CONFLICT, "lease_held");

        // The sidecar crashed: no renewal comes, and the lease runs out by the host's clock.
        host.advance_ms(1_001);
        let taken = lease(laptop, acquire.clone()).await;
        assert_eq!(taken.expect_ok()["holder"]["epoch"], 2);
        let renew = json!({"action": "renew", "epoch": 1, "ttl_ms": 1_000});
        lease(sidecar, renew)
            .await
            .expect_error(StatusCode::CONFLICT, "stale_lease_epoch");
    }

    // A lease outlives a restart of the host (and so do its clients: the same token file).
    let host = host.restart().await;
    {
        let (sidecar, laptop, ops) = clients(&host);
        let status = host.get("/v1/status").await;
        assert_eq!(status.expect_ok()["lease"]["holder"]["owner"], "laptop");
        lease(sidecar, acquire.clone())
            .await
            .expect_error(StatusCode::CONFLICT, "lease_held");

        // An operator breaks the laptop's lease on purpose: recorded in the operator's name,
        // and the laptop's epoch is stale.
        let broken = lease(
            ops,
            json!({"action": "break", "reason": "the laptop went away mid-reconcile"}),
        )
        .await;
        let record = &broken.expect_ok()["broken"];
        assert_eq!(
            (
                &record["by"],
                &record["reason"],
                &record["holder"]["owner"],
                &record["holder"]["epoch"]
            ),
            (
                &json!("ops"),
                &json!("the laptop went away mid-reconcile"),
                &json!("laptop"),
                &json!(2)
            )
        );
        laptop
            .post_with_epoch("/v1/steps/laptop-2/unload", ma_cross(), 2)
            .await
            .expect_error(StatusCode::CONFLICT, "stale_lease_epoch");
    }

    let host = host.restart().await;
    let status = host.get("/v1/status").await;
    let lease_status = &status.expect_ok()["lease"];
    assert_eq!(lease_status["holder"], Value::Null);
    assert_eq!(lease_status["last_epoch"], 2);
    assert_eq!(lease_status["breaks"][0]["by"], "ops");
    let next = lease(host.as_client(TOKEN), acquire).await;
    assert_eq!(
        next.expect_ok()["holder"]["epoch"],
        3,
        "epochs go on across restarts"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn the_lease_is_held_in_the_name_of_the_client_whose_token_the_request_carries() {
    // Two clients, each with its own token.
    let host = Host::start_with_clients(&CLIENTS[..2]).await;
    let (sidecar, laptop, _) = clients(&host);
    let acquired = lease(sidecar, json!({"action": "acquire", "ttl_ms": 30_000})).await;
    let holder = acquired.expect_ok()["holder"].clone();
    assert_eq!(
        (&holder["owner"], &holder["epoch"]),
        (&json!("sidecar"), &json!(1))
    );

    // The laptop cannot act on the sidecar's lease by naming the sidecar: its token says who
    // it is.
    for body in [
        json!({"action": "acquire", "owner": "sidecar", "ttl_ms": 30_000}),
        json!({"action": "renew", "owner": "sidecar", "epoch": 1, "ttl_ms": 30_000}),
        json!({"action": "release", "owner": "sidecar", "epoch": 1}),
    ] {
        let refused = lease(laptop, body.clone()).await;
        let message = refused.expect_error(StatusCode::FORBIDDEN, "not_this_client");
        assert_eq!(
            message,
            "`owner` is `sidecar`, but this request carries the token of client `laptop`: a \
             client acts on the reconcile lease in its own name only; leave `owner` out (it is \
             the name of the client whose token the request carries), or send `sidecar`'s own \
             token",
            "{body}"
        );
    }
    // Nor in its own name with the sidecar's epoch (status shows it): the lease is not its.
    for body in [
        json!({"action": "renew", "epoch": 1, "ttl_ms": 30_000}),
        json!({"action": "release", "owner": "laptop", "epoch": 1}),
    ] {
        let refused = lease(laptop, body.clone()).await;
        let message = refused.expect_error(StatusCode::CONFLICT, "lease_held");
        assert!(
            message.starts_with("`sidecar` holds this host's reconcile lease (epoch 1) for "),
            "{body}: {message}"
        );
    }
    // Nothing changed: the sidecar holds the lease as it was given, and renews it naming
    // itself.
    let status = host.get("/v1/status").await;
    assert_eq!(status.expect_ok()["lease"]["holder"], holder);
    let renewed = lease(
        sidecar,
        json!({"action": "renew", "owner": "sidecar", "epoch": 1, "ttl_ms": 30_000}),
    )
    .await;
    assert_eq!(renewed.expect_ok()["holder"]["owner"], "sidecar");

    // A break is recorded in the name of the client that breaks; naming another is refused.
    let reason = "the sidecar is wedged";
    let refused = lease(
        laptop,
        json!({"action": "break", "by": "sidecar", "reason": reason}),
    )
    .await;
    let message = refused.expect_error(StatusCode::FORBIDDEN, "not_this_client");
    assert!(
        message.starts_with("`by` is `sidecar`, but this request carries the token of client"),
        "{message}"
    );
    let broken = lease(laptop, json!({"action": "break", "reason": reason})).await;
    let record = &broken.expect_ok()["broken"];
    assert_eq!(
        (&record["by"], &record["holder"]["owner"]),
        (&json!("laptop"), &json!("sidecar"))
    );
    host.shutdown().await;
}

#[tokio::test]
async fn lease_requests_that_cannot_be_carried_out_say_why() {
    // One token: its client is named `default`, and the lease is held in that name.
    let host = Host::start().await;
    let acquired = host
        .post("/v1/lease", json!({"action": "acquire", "ttl_ms": 1_000}))
        .await;
    assert_eq!(acquired.expect_ok()["holder"]["owner"], "default");
    for (body, reason) in [
        (
            json!({"action": "acquire", "owner": "default", "ttl_ms": 0}),
            "`ttl_ms` is 0: give 1 to 3600000 ms (renew a longer lease)",
        ),
        (
            json!({"action": "break", "reason": ""}),
            "breaking the lease needs `by` (who) and a `reason`",
        ),
    ] {
        let answer = host.post("/v1/lease", body).await;
        let message = answer.expect_error(StatusCode::BAD_REQUEST, "bad_lease_request");
        assert_eq!(message, format!("invalid lease request: {reason}"));
    }
    let answer = host
        .post(
            "/v1/lease",
            json!({"action": "acquire", "owner": " ", "ttl_ms": 1_000}),
        )
        .await;
    answer.expect_error(StatusCode::FORBIDDEN, "not_this_client");
    let garbled = host
        .send(
            host.client
                .post(format!("{}/v1/steps/s/unload", host.url))
                .header("x-plugsync-lease-epoch", "one")
                .json(&ma_cross()),
        )
        .await;
    let message = garbled.expect_error(StatusCode::BAD_REQUEST, "bad_request");
    assert_eq!(
        message,
        "`x-plugsync-lease-epoch` must be the epoch your lease was given (a number)"
    );
    host.shutdown().await;
}
