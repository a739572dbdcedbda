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
//! - **What was applied, by whom**: the applied record, kept across restarts.
//! - **What is forbidden for now**: freeze, holds, failed marks and halts, each refusing and
//!   each lifted, kept across restarts; a change forced through is recorded.

mod support;

use plugsync_host::{AppliedOperation, SwapRequest, VersionRef};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::*;

/// A host running ma_cross 1.0.0 (installed by step `install`), with 2.0.0 staged; its clock
/// moves only when the test says (and by 1 ns per reading).
async fn host_with_v1_and_v2_staged() -> (Host, String, String) {
    with_v1_and_v2_staged(Host::start_with_manual_clock().await).await
}

/// `host` running risk_model 1.0.0 and ma_cross 1.0.0 (installed by step `install`), with
/// ma_cross 2.0.0 staged.
async fn with_v1_and_v2_staged(host: Host) -> (Host, String, String) {
    host.install_risk_model().await;
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
         pending step does not survive a restart: what was committed runs): the switch is not \
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

#[tokio::test]
async fn the_applied_record_says_what_was_done_by_whom_and_survives_a_restart_even_an_unload() {
    let host = Host::start_with_manual_clock().await;
    host.install_risk_model().await;
    let v1 = host.stage(MA_CROSS_1_0_0).await.to_string();
    let v2 = host.stage(MA_CROSS_2_0_0).await.to_string();
    // The body names the tool and plan; the host names the client: the one whose token the
    // request carries (`default` for a single-token host), whatever the body says.
    let origin = json!({
        "tool": "plugsync-reconcile", "client": "someone-else", "plan_id": "p-17",
        "desired_sha256": "d".repeat(64),
    });
    let recorded = json!({
        "tool": "plugsync-reconcile", "client": "default", "plan_id": "p-17",
        "desired_sha256": "d".repeat(64),
    });
    host.post(
        "/v1/steps/p-17.1.0/install",
        json!({"artifact": v1, "config": v1_config(), "origin": origin}),
    )
    .await
    .expect_ok();
    let installed = applied(&host).await;
    assert_eq!(
        (
            &installed["operation"],
            &installed["step_id"],
            &installed["origin"]
        ),
        (&json!("install"), &json!("p-17.1.0"), &recorded)
    );
    assert_eq!(installed["version"]["digest"], v1);

    // A switch is not applied until its commit; the commit's origin is recorded with it.
    let by_hand = json!({"tool": "curl"});
    let by_hand_recorded = json!({"tool": "curl", "client": "default"});
    host.post(
        "/v1/steps/hand-1/switch",
        json!({"plugin": "ma_cross", "artifact": v2}),
    )
    .await
    .expect_ok();
    assert_eq!(applied(&host).await, installed);
    host.post(
        "/v1/steps/hand-1/commit",
        json!({"plugin": "ma_cross", "origin": by_hand}),
    )
    .await
    .expect_ok();
    let committed = applied(&host).await;
    assert_eq!(
        (
            &committed["operation"],
            &committed["step_id"],
            &committed["origin"]
        ),
        (&json!("commit"), &json!("hand-1"), &by_hand_recorded)
    );
    assert_eq!(committed["version"]["digest"], v2);
    let status = host.get("/v1/status").await;
    assert_eq!(
        committed["config_hash"],
        status.expect_ok()["plugins"][0]["config_hash"]
    );
    assert!(committed["at"].as_i64().unwrap() > installed["at"].as_i64().unwrap());

    // A requested rollback is recorded too: the committed version runs again, by its hand.
    host.post(
        "/v1/steps/hand-2/switch",
        json!({"plugin": "ma_cross", "artifact": v1, "config": v1_config()}),
    )
    .await
    .expect_ok();
    host.post("/v1/steps/hand-2/rollback", ma_cross())
        .await
        .expect_ok();
    let rolled_back = applied(&host).await;
    assert_eq!(
        (
            &rolled_back["operation"],
            &rolled_back["step_id"],
            &rolled_back["origin"]
        ),
        (
            &json!("rollback"),
            &json!("hand-2"),
            &json!({"tool": "api", "client": "default"})
        )
    );
    assert_eq!(rolled_back["version"]["digest"], v2);

    let host = host.restart().await;
    assert_eq!(applied(&host).await, rolled_back);

    // An unload takes the plugin out of the committed set, and its record stays in status
    // (across a restart too) until the plugin is installed again.
    host.post(
        "/v1/steps/prune-1/unload",
        json!({"plugin": "ma_cross", "origin": {"tool": "plugsync-reconcile", "plan_id": "p-18"}}),
    )
    .await
    .expect_ok();
    let unloaded = |status: &Value| status["unloaded"].clone();
    let host = host.restart().await;
    let status = host.get("/v1/status").await;
    let record = unloaded(status.expect_ok());
    assert_eq!(
        (
            &record[0]["plugin"],
            &record[0]["applied"]["operation"],
            &record[0]["applied"]["step_id"],
            &record[0]["applied"]["origin"],
            &record[0]["applied"]["version"]["digest"],
        ),
        (
            &json!("ma_cross"),
            &json!("unload"),
            &json!("prune-1"),
            &json!({"tool": "plugsync-reconcile", "client": "default", "plan_id": "p-18"}),
            &json!(v2),
        )
    );
    let reinstall = json!({"artifact": v1, "config": v1_config()});
    // (1.0.0 was marked failed by the rollback above.)
    let refused = host
        .post("/v1/steps/p-19.1.0/install", reinstall.clone())
        .await;
    assert_eq!(
        refused.expect_error(StatusCode::CONFLICT, "version_failed"),
        "`ma_cross` 1.0.0 is marked failed (rolled back: rollback requested): `install` of \
         `ma_cross` was refused and nothing was applied; clear the mark once the version is \
         fixed (`clear_failed`), or force this change with a reason (`force`, recorded)"
    );
    restrain(&host, json!({"action": "clear_failed", "artifact": v1}))
        .await
        .expect_ok();
    host.post("/v1/steps/p-19.1.0/install", reinstall)
        .await
        .expect_ok();
    let status = host.get("/v1/status").await;
    assert_eq!(unloaded(status.expect_ok()), json!([]));
    assert!(host.runtime.committed().unloaded.is_empty());
    host.shutdown().await;
}

/// The applied record of `ma_cross`, from `GET /v1/status`.
async fn applied(host: &Host) -> Value {
    let status = host.get("/v1/status").await;
    status.expect_ok()["plugins"][0]["applied"].clone()
}

/// `POST /v1/restraints` with `body`.
async fn restrain(host: &Host, body: Value) -> Answer {
    host.post("/v1/restraints", body).await
}

#[tokio::test]
async fn a_freeze_refuses_changes_until_lifted_and_a_forced_change_is_recorded() {
    let (host, _, v2) = host_with_v1_and_v2_staged().await;
    restrain(
        &host,
        json!({"action": "freeze", "reason": "US open, 09:30-10:00"}),
    )
    .await
    .expect_ok();

    let switch = json!({"plugin": "ma_cross", "artifact": v2});
    let refused = host.post("/v1/steps/s1/switch", switch.clone()).await;
    let message = refused.expect_error(StatusCode::CONFLICT, "frozen");
    assert_eq!(
        message,
        "the host is frozen (US open, 09:30-10:00, by default): `switch` of `ma_cross` was refused \
         and nothing was applied; unfreeze the host when the freeze is over, or force this \
         change with a reason (`force`, recorded)"
    );
    host.post("/v1/steps/u1/unload", ma_cross())
        .await
        .expect_error(StatusCode::CONFLICT, "frozen");
    assert_eq!(running(&host).await, ("1.0.0".into(), Value::Null));

    // Forced, with a reason: it goes, and the host records who forced what through what.
    let forced = json!({
        "plugin": "ma_cross", "artifact": v2, "force": "hotfix for a stuck order",
        "origin": {"tool": "plugsync"},
    });
    host.post("/v1/steps/s2/switch", forced).await.expect_ok();
    // A pending step may still be committed while frozen.
    host.post("/v1/steps/s2/commit", ma_cross())
        .await
        .expect_ok();
    let status = host.get("/v1/status").await;
    let restraints = &status.expect_ok()["restraints"];
    let record = &restraints["forced"][0];
    assert_eq!(
        (
            &record["operation"],
            &record["overrode"],
            &record["because"]["reason"],
            &record["because"]["by"]
        ),
        (
            &json!("switch"),
            &json!(["freeze"]),
            &json!("hotfix for a stuck order"),
            &json!("default")
        )
    );

    // The freeze outlives a restart, then is lifted.
    let host = host.restart().await;
    host.post("/v1/steps/u2/unload", ma_cross())
        .await
        .expect_error(StatusCode::CONFLICT, "frozen");
    restrain(&host, json!({"action": "unfreeze"}))
        .await
        .expect_ok();
    host.post("/v1/steps/u2/unload", ma_cross())
        .await
        .expect_ok();
    host.shutdown().await;
}

#[tokio::test]
async fn a_held_plugin_is_not_switched_until_released() {
    let (host, _, v2) = host_with_v1_and_v2_staged().await;
    restrain(
        &host,
        json!({"action": "hold", "plugin": "ma_cross", "reason": "manual rollback under review"}),
    )
    .await
    .expect_ok();
    let switch = json!({"plugin": "ma_cross", "artifact": v2});
    let refused = host.post("/v1/steps/s1/switch", switch.clone()).await;
    let message = refused.expect_error(StatusCode::CONFLICT, "held");
    assert_eq!(
        message,
        "`ma_cross` is held at its running version (manual rollback under review, by default): \
         `switch` of `ma_cross` was refused and nothing was applied; release the hold first, or \
         force this change with a reason (`force`, recorded)"
    );
    restrain(&host, json!({"action": "release", "plugin": "ma_cross"}))
        .await
        .expect_ok();
    host.post("/v1/steps/s1/switch", switch).await.expect_ok();
    host.shutdown().await;
}

#[tokio::test]
async fn a_version_rolled_back_is_marked_failed_and_refused_until_cleared() {
    let (host, _, v2) = host_with_v1_and_v2_staged().await;
    let switch = json!({"plugin": "ma_cross", "artifact": v2});
    host.post("/v1/steps/s1/switch", switch.clone())
        .await
        .expect_ok();
    host.post("/v1/steps/s1/rollback", ma_cross())
        .await
        .expect_ok();

    let again = host.post("/v1/steps/s2/switch", switch.clone()).await;
    let message = again.expect_error(StatusCode::CONFLICT, "version_failed");
    assert_eq!(
        message,
        "`ma_cross` 2.0.0 is marked failed (rolled back: rollback requested): `switch` of \
         `ma_cross` was refused and nothing was applied; clear the mark once the version is \
         fixed (`clear_failed`), or force this change with a reason (`force`, recorded)"
    );
    // The mark is the host's, kept across a restart (written by the steward).
    let host = host.restart().await;
    let status = host.get("/v1/status").await;
    let mark = &status.expect_ok()["restraints"]["failed"][0];
    assert_eq!(
        (
            &mark["plugin"],
            &mark["digest"],
            &mark["version"],
            &mark["because"]["by"]
        ),
        (
            &json!("ma_cross"),
            &json!(v2),
            &json!("2.0.0"),
            &json!("host")
        )
    );
    host.post("/v1/steps/s3/switch", switch.clone())
        .await
        .expect_error(StatusCode::CONFLICT, "version_failed");

    restrain(&host, json!({"action": "clear_failed", "artifact": v2}))
        .await
        .expect_ok();
    host.post("/v1/steps/s3/switch", switch).await.expect_ok();
    host.shutdown().await;
}

#[tokio::test]
async fn a_failed_mark_and_a_hold_carry_the_clients_entry_fingerprint_across_a_restart() {
    let (host, _, v2) = host_with_v1_and_v2_staged().await;
    // A verification that fails: the host's mark carries the fingerprint of the desired entry
    // the switch came from, so every client can tell when that entry has changed since.
    let verify = json!({"health": true, "probes": [{"name": "never", "steps": [{"input": {"bar": {"instrument": "ES", "close": 1.0}}, "expect": {"orders": ["never"]}}]}]});
    let origin = json!({"tool": "plugsync-reconcile", "entry_sha256": "e2"});
    host.post(
        "/v1/steps/s1/switch",
        json!({"plugin": "ma_cross", "artifact": v2, "verify": verify, "origin": origin}),
    )
    .await
    .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "verification_failed");
    let status = host.get("/v1/status").await;
    let mark = &status.expect_ok()["restraints"]["failed"][0];
    assert_eq!(mark["because"]["entry_sha256"], json!("e2"));
    restrain(&host, json!({"action": "clear_failed", "artifact": v2}))
        .await
        .expect_ok();
    // A step rolled back: so does its mark.
    let origin = json!({"tool": "plugsync-reconcile", "entry_sha256": "e1"});
    let switch = json!({"plugin": "ma_cross", "artifact": v2, "origin": origin});
    host.post("/v1/steps/s2/switch", switch).await.expect_ok();
    host.post("/v1/steps/s2/rollback", ma_cross())
        .await
        .expect_ok();
    // A client marks a version that failed its own preflight; and holds a plugin.
    let unstaged = "ab".repeat(32);
    restrain(
        &host,
        json!({"action": "mark_failed", "plugin": "ma_cross", "artifact": unstaged, "version": "2.0.9", "reason": "preflight: probe `flat` failed", "entry_sha256": "e3"}),
    )
    .await
    .expect_ok();
    restrain(
        &host,
        json!({"action": "hold", "plugin": "ma_cross", "reason": "manual rollback", "entry_sha256": "e4"}),
    )
    .await
    .expect_ok();

    let host = host.restart().await;
    let status = host.get("/v1/status").await;
    let restraints = &status.expect_ok()["restraints"];
    let marks: Vec<(Value, Value, Value)> = (restraints["failed"].as_array().unwrap().iter())
        .map(|m| {
            (
                m["version"].clone(),
                m["because"]["by"].clone(),
                m["because"]["entry_sha256"].clone(),
            )
        })
        .collect();
    assert_eq!(
        marks,
        [
            (json!("2.0.0"), json!("host"), json!("e1")),
            (json!("2.0.9"), json!("default"), json!("e3")),
        ]
    );
    assert_eq!(restraints["holds"]["ma_cross"]["entry_sha256"], json!("e4"));
    // The client's mark is refused like the host's own.
    let refused = host
        .post(
            "/v1/steps/s3/install",
            json!({"artifact": unstaged, "config": {}}),
        )
        .await;
    assert_ne!(refused.status, StatusCode::OK);
    host.shutdown().await;
}

#[tokio::test]
async fn a_halted_plugin_refuses_every_call_until_resumed_even_after_a_restart() {
    let (host, _, _) = host_with_v1_and_v2_staged().await;
    restrain(
        &host,
        json!({"action": "halt", "plugin": "ma_cross", "reason": "risk limit breached"}),
    )
    .await
    .expect_ok();
    let handle = host.runtime.handle("ma_cross").unwrap();
    let refused = handle.call(b"{}").unwrap_err();
    assert_eq!(
        refused.to_string(),
        "plugin `ma_cross` is halted (risk limit breached): the call was refused; resume it when \
         it is safe (`POST /v1/restraints` with `\"action\": \"resume\"`)"
    );

    let host = host.restart().await;
    let handle = host.runtime.handle("ma_cross").unwrap();
    assert!(handle.call(b"{}").is_err(), "still halted after a restart");
    restrain(&host, json!({"action": "resume", "plugin": "ma_cross"}))
        .await
        .expect_ok();
    let input = serde_json::to_vec(&json!({"bar": {"instrument": "ES", "close": 100.0}})).unwrap();
    handle.call(&input).expect("served again");
    host.shutdown().await;
}

#[tokio::test]
async fn a_version_rolled_back_by_a_panic_on_a_callers_thread_is_marked_and_the_mark_reaches_the_store()
 {
    let (host, _, _) = host_with_v1_and_v2_staged().await;
    let faulty = host.stage(FAULT_CALL).await.to_string();
    host.post(
        "/v1/steps/s1/switch",
        json!({"plugin": "ma_cross", "artifact": faulty}),
    )
    .await
    .expect_ok();
    // The fixture panics on this bar: the caller's own call rolls the step back.
    let answered = host.runtime.call("ma_cross", &bar("CRASH", 11.0)).unwrap();
    assert_ne!(answered.receipt.digest.to_string(), faulty);

    // Refused at once, before the mark is written...
    host.post(
        "/v1/steps/s2/switch",
        json!({"plugin": "ma_cross", "artifact": faulty}),
    )
    .await
    .expect_error(StatusCode::CONFLICT, "version_failed");
    // ...which the steward does on its next tick, not the caller.
    let file = host.dir.path().join("store/restraints.json");
    poll_until("the failed mark is in the store", || {
        let file = file.clone();
        let faulty = faulty.clone();
        async move { std::fs::read_to_string(&file).is_ok_and(|text| text.contains(&faulty)) }
    })
    .await;
    let status = host.get("/v1/status").await;
    let reason = status.expect_ok()["restraints"]["failed"][0]["because"]["reason"].clone();
    assert_eq!(
        reason,
        "rolled back: the new version panicked in call #1 (plugin panicked: call on instrument \
         CRASH (fault injected by the ma_cross_fault_call fixture))"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn a_version_that_fails_verification_is_marked_failed() {
    let (host, _, v2) = host_with_v1_and_v2_staged().await;
    // A probe whose expected answer 2.0.0 does not give: verification fails before the switch.
    let verify = json!({"health": true, "probes": [{"name": "never", "steps": [{"input": {"bar": {"instrument": "ES", "close": 1.0}}, "expect": {"orders": ["never"]}}]}]});
    let refused = host
        .post(
            "/v1/steps/s1/switch",
            json!({"plugin": "ma_cross", "artifact": v2, "verify": verify}),
        )
        .await;
    refused.expect_error(StatusCode::UNPROCESSABLE_ENTITY, "verification_failed");
    host.post(
        "/v1/steps/s2/switch",
        json!({"plugin": "ma_cross", "artifact": v2}),
    )
    .await
    .expect_error(StatusCode::CONFLICT, "version_failed");
    host.shutdown().await;
}

#[tokio::test]
async fn a_change_that_would_break_a_declared_dependency_is_refused_naming_both_plugins() {
    let host = Host::start_with_manual_clock().await;
    let ma_cross_1 = host.stage(MA_CROSS_1_0_0).await.to_string();
    let ma_cross_2 = host.stage(MA_CROSS_2_0_0).await.to_string();
    let ma_cross_2_1 = host.stage("ma_cross_v2_1_0").await.to_string();
    let risk_2 = host.stage("risk_model_v2_0_0").await.to_string();

    // ma_cross 1.0.0 declares it needs risk_model >=1.0, <2: not without it.
    let alone = host
        .post(
            "/v1/steps/i1/install",
            json!({"artifact": ma_cross_1, "config": v1_config()}),
        )
        .await;
    let message = alone.expect_error(StatusCode::CONFLICT, "dependency_unmet");
    assert_eq!(
        message,
        "`ma_cross` 1.0.0 needs `risk_model` >=1.0, <2, and it would not run: the change to \
         `ma_cross` was refused and nothing was applied; change them in an order that keeps the \
         requirement met (the dependency first when upgrading it, the dependant first when \
         downgrading), or force this change with a reason (`force`, recorded)"
    );
    host.install_risk_model().await;
    host.post(
        "/v1/steps/i1/install",
        json!({"artifact": ma_cross_1, "config": v1_config()}),
    )
    .await
    .expect_ok();

    // risk_model 2.0.0 under ma_cross 1.0.0, or risk_model gone: refused, both named.
    let risk_up = json!({"plugin": "risk_model", "artifact": risk_2});
    let refused = host.post("/v1/steps/r1/switch", risk_up.clone()).await;
    let message = refused.expect_error(StatusCode::CONFLICT, "dependency_unmet");
    assert!(
        message.starts_with(
            "`ma_cross` 1.0.0 needs `risk_model` >=1.0, <2, and it would run 2.0.0: the change \
             to `risk_model` was refused"
        ),
        "{message}"
    );
    host.post("/v1/steps/u1/unload", json!({"plugin": "risk_model"}))
        .await
        .expect_error(StatusCode::CONFLICT, "dependency_unmet");
    // ma_cross 2.1.0 needs risk_model >=2.0: not before risk_model is upgraded.
    host.post(
        "/v1/steps/m1/switch",
        json!({"plugin": "ma_cross", "artifact": ma_cross_2_1}),
    )
    .await
    .expect_error(StatusCode::CONFLICT, "dependency_unmet");

    // In an order that keeps every requirement met, each step goes.
    for (id, plugin, artifact) in [
        ("m2", "ma_cross", &ma_cross_2),
        ("r2", "risk_model", &risk_2),
        ("m3", "ma_cross", &ma_cross_2_1),
    ] {
        host.post(
            &format!("/v1/steps/{id}/switch"),
            json!({"plugin": plugin, "artifact": artifact}),
        )
        .await
        .expect_ok();
        host.post(&format!("/v1/steps/{id}/commit"), json!({"plugin": plugin}))
            .await
            .expect_ok();
    }

    // Forced, with a reason: it goes, recorded as overriding the dependency.
    host.post(
        "/v1/steps/u2/unload",
        json!({"plugin": "risk_model", "force": "risk moved out of process for the drill"}),
    )
    .await
    .expect_ok();
    let status = host.get("/v1/status").await;
    let forced = &status.expect_ok()["restraints"]["forced"][0];
    assert_eq!(
        (&forced["operation"], &forced["plugin"], &forced["overrode"]),
        (
            &json!("unload"),
            &json!("risk_model"),
            &json!(["dependency"])
        )
    );
    host.shutdown().await;
}

#[tokio::test]
async fn a_commit_that_waits_for_evidence_is_refused_until_enough_calls_were_served() {
    let (host, _, v2) = host_with_v1_and_v2_staged().await;
    host.post(
        "/v1/steps/s1/switch",
        json!({"plugin": "ma_cross", "artifact": v2}),
    )
    .await
    .expect_ok();
    let commit = json!({"plugin": "ma_cross", "min_calls": 3});
    for served in 0..3 {
        let early = host.post("/v1/steps/s1/commit", commit.clone()).await;
        let message = early.expect_error(StatusCode::CONFLICT, "not_enough_calls");
        assert_eq!(
            message,
            format!(
                "`ma_cross`'s new version has served {served} calls since its switch, fewer than \
                 the 3 this commit asks for: nothing was committed; ask again once it has (the \
                 step stays pending, under its lease if it has one)"
            )
        );
        host.runtime.call("ma_cross", &bar("ES", 100.0)).unwrap();
    }
    // The same step id, not spent by the refusals: now it commits.
    let committed = host.post("/v1/steps/s1/commit", commit).await;
    assert!(!committed.replayed());
    committed.expect_ok();
    assert_eq!(running(&host).await, ("2.0.0".into(), Value::Null));
    host.shutdown().await;
}

#[tokio::test]
async fn a_switch_that_waits_for_idle_is_not_yet_until_then_and_spends_no_step_id() {
    let (host, _, v2) = host_with_v1_and_v2_staged().await;
    let clock = host.clock.clone().expect("a manual clock");
    host.runtime.call("ma_cross", &bar("ES", 100.0)).unwrap();
    let switch = json!({"plugin": "ma_cross", "artifact": v2, "when": {"idle_for_ms": 2000}});
    for idle_ms in [0, 1999] {
        clock.advance(if idle_ms == 0 { 0 } else { 1_999_000_000 });
        let early = host.post("/v1/steps/s1/switch", switch.clone()).await;
        assert!(!early.replayed(), "a `not_yet` is not recorded");
        assert_eq!(
            early.expect_error(StatusCode::CONFLICT, "not_yet"),
            format!(
                "`switch` of `ma_cross` not yet: its last call was {idle_ms} ms ago, and it \
                 waits for 2s without one; nothing was applied: ask again with the same step id"
            )
        );
        assert_eq!(running(&host).await, ("1.0.0".into(), Value::Null));
    }
    // The same step id, not spent: now it switches, and a retry of it replays the switch.
    clock.advance(1_000_000);
    let switched = host.post("/v1/steps/s1/switch", switch.clone()).await;
    assert!(!switched.replayed());
    switched.expect_ok();
    assert_eq!(running(&host).await, ("2.0.0".into(), json!("s1")));
    let again = host.post("/v1/steps/s1/switch", switch).await;
    assert!(again.replayed());
    host.shutdown().await;
}

#[tokio::test]
async fn an_operator_restores_a_snapshot_it_took_and_not_during_a_step() {
    let (host, _, v2) = host_with_v1_and_v2_staged().await;
    host.runtime.call("ma_cross", &bar("ES", 100.0)).unwrap();
    let taken = host.get("/v1/plugins/ma_cross/state").await;
    let snapshot = taken.expect_ok().clone();
    host.runtime.call("ma_cross", &bar("NQ", 200.0)).unwrap();

    // Not during a step: a rollback by replay would silently undo it.
    host.post(
        "/v1/steps/s1/switch",
        json!({"plugin": "ma_cross", "artifact": v2}),
    )
    .await
    .expect_ok();
    host.post("/v1/steps/r1/restore", json!({"snapshot": snapshot}))
        .await
        .expect_error(StatusCode::CONFLICT, "step_in_progress");
    host.post("/v1/steps/s1/rollback", ma_cross())
        .await
        .expect_ok();

    let restored = host
        .post("/v1/steps/r2/restore", json!({"snapshot": snapshot}))
        .await;
    assert_eq!(restored.expect_ok()["sha256"], snapshot["sha256"]);
    let now = host.get("/v1/plugins/ma_cross/state").await;
    assert_eq!(
        now.expect_ok()["state"],
        snapshot["state"],
        "NQ is gone, ES is back"
    );

    // A snapshot whose sha256 does not match its state is refused.
    let mut forged = snapshot.clone();
    forged["state"] = json!("{\"instruments\":{}}");
    host.post("/v1/steps/r3/restore", json!({"snapshot": forged}))
        .await
        .expect_error(StatusCode::UNPROCESSABLE_ENTITY, "bad_snapshot");
    host.shutdown().await;
}

#[tokio::test]
async fn the_holders_epoch_admits_the_holder_only_not_a_client_that_read_it_from_status() {
    let (host, _, v2) = with_v1_and_v2_staged(Host::start_with_clients(&CLIENTS).await).await;
    let laptop = host.as_client(LAPTOP_TOKEN);
    let acquired = host
        .post("/v1/lease", json!({"action": "acquire", "ttl_ms": 30_000}))
        .await;
    let epoch = acquired.expect_ok()["holder"]["epoch"].as_u64().unwrap();
    // The epoch is in status for all to read; carrying it does not make the laptop the holder.
    let borrowed = laptop
        .post_with_epoch(
            "/v1/restraints",
            json!({"action": "hold", "plugin": "ma_cross", "reason": "mine now"}),
            epoch,
        )
        .await;
    borrowed.expect_error(StatusCode::CONFLICT, "lease_held");
    let status = host.get("/v1/status").await;
    assert_eq!(status.expect_ok()["restraints"]["holds"], json!({}));
    // The holder's own request with it goes through, in its name.
    host.post_with_epoch(
        "/v1/restraints",
        json!({"action": "hold", "plugin": "ma_cross", "reason": "maintenance"}),
        epoch,
    )
    .await
    .expect_ok();
    let status = host.get("/v1/status").await;
    assert_eq!(
        status.expect_ok()["restraints"]["holds"]["ma_cross"]["by"],
        "sidecar"
    );
    // So does a rollback of a step the holder soaks: back to the committed version, by replay.
    host.post_with_epoch(
        "/v1/steps/s2/switch",
        json!({"plugin": "ma_cross", "artifact": v2, "force": "the hold is this test's"}),
        epoch,
    )
    .await
    .expect_ok();
    laptop
        .post("/v1/steps/s2/rollback", json!({"plugin": "ma_cross"}))
        .await
        .expect_ok();
    let status = host.get("/v1/status").await;
    let plugins = status.expect_ok()["plugins"].clone();
    let plugin = (plugins.as_array().unwrap().iter())
        .find(|p| p["plugin"] == "ma_cross")
        .unwrap();
    assert_eq!(
        (&plugin["version"]["version"], &plugin["pending"]),
        (&json!("1.0.0"), &Value::Null)
    );
    // A freeze, the kill switch, goes whoever holds the lease.
    laptop
        .post(
            "/v1/restraints",
            json!({"action": "freeze", "reason": "stop everything"}),
        )
        .await
        .expect_ok();
    let status = host.get("/v1/status").await;
    assert_eq!(status.expect_ok()["restraints"]["freeze"]["by"], "laptop");
    host.shutdown().await;
}

#[tokio::test]
async fn a_switch_with_a_fresh_state_discards_it_says_so_and_the_commit_records_it() {
    let (host, _, v2) = host_with_v1_and_v2_staged().await;
    host.runtime.call("ma_cross", &bar("ES", 100.0)).unwrap();
    let config = json!({"fast_period": 2, "slow_period": 4, "signal_threshold": 0.0});
    let switched = host
        .post(
            "/v1/steps/s1/switch",
            json!({"plugin": "ma_cross", "artifact": v2, "config": config, "fresh_state": true}),
        )
        .await;
    let report = switched.expect_ok();
    assert_eq!(report["state_discarded"], true);
    assert_eq!(report["path"]["kind"], "locked", "{report:#}");
    assert_eq!(report["state_after"]["instruments"], json!({}));
    assert_ne!(
        report["state_before"]["instruments"],
        json!({}),
        "ES was known"
    );

    // The state running is the fresh one: 2.0.0 as `create(config)` left it.
    let state = host.get("/v1/plugins/ma_cross/state").await;
    let state: Value = serde_json::from_str(state.expect_ok()["state"].as_str().unwrap()).unwrap();
    assert_eq!(state["instruments"], json!({}));

    host.post("/v1/steps/s1/commit", ma_cross())
        .await
        .expect_ok();
    let applied = applied(&host).await;
    assert_eq!(
        (&applied["operation"], &applied["fresh_state"]),
        (&json!("commit"), &json!(true))
    );
    host.shutdown().await;
}

/// `POST /v1/steps/{step}/install` of `artifact` (ma_cross 1.0.0's config) with a lease.
async fn install_leased(host: &Host, step: &str, artifact: &str, lease_ms: u64) -> Answer {
    host.post(
        &format!("/v1/steps/{step}/install"),
        json!({"artifact": artifact, "config": v1_config(), "lease_ms": lease_ms}),
    )
    .await
}

/// What `GET /v1/status` shows of ma_cross, if it runs.
async fn ma_cross_status(host: &Host) -> Option<Value> {
    let status = host.get("/v1/status").await;
    let plugins = status.expect_ok()["plugins"].as_array().unwrap().clone();
    plugins
        .into_iter()
        .find(|plugin| plugin["plugin"] == "ma_cross")
}

/// A host running risk_model (which ma_cross needs), with ma_cross 1.0.0 staged.
async fn host_with_v1_staged() -> (Host, String) {
    let host = Host::start_with_manual_clock().await;
    host.install_risk_model().await;
    let v1 = host.stage(MA_CROSS_1_0_0).await.to_string();
    (host, v1)
}

#[tokio::test]
async fn an_install_with_a_lease_serves_at_once_and_joins_the_committed_set_only_at_its_commit() {
    let (host, v1) = host_with_v1_staged().await;
    let v2 = host.stage(MA_CROSS_2_0_0).await.to_string();
    let install = json!({
        "artifact": v1, "config": v1_config(), "lease_ms": 60_000,
        "checkpoint_every_ms": 3_600_000, "fail_closed": true,
    });
    let installed = host.post("/v1/steps/i1/install", install.clone()).await;
    assert!(installed.expect_ok()["lease_expires_at"].is_i64());

    // It serves, as a pending step with nothing to go back to, and is not committed yet.
    let handle = host.runtime.handle("ma_cross").unwrap();
    handle
        .call(&bar("ES", 100.0))
        .expect("served during the lease");
    let plugin = &ma_cross_status(&host).await.unwrap();
    assert_eq!(
        (
            &plugin["pending"]["step_id"],
            &plugin["pending"]["previous"],
            &plugin["applied"]
        ),
        (&json!("i1"), &Value::Null, &Value::Null)
    );
    assert!(
        (host.runtime.committed().plugins.iter()).all(|entry| entry.plugin != "ma_cross"),
        "not committed"
    );
    let switch = host
        .post(
            "/v1/steps/s1/switch",
            json!({"plugin": "ma_cross", "artifact": v2}),
        )
        .await;
    assert_eq!(
        switch.expect_error(StatusCode::CONFLICT, "step_in_progress"),
        "a step is in progress for `ma_cross` (not loaded -> 1.0.0): commit it or roll it back \
         first"
    );

    host.post("/v1/steps/i1/commit", ma_cross())
        .await
        .expect_ok();
    let committed = host.runtime.committed();
    let entry = (committed.plugins.iter())
        .find(|entry| entry.plugin == "ma_cross")
        .unwrap();
    assert_eq!(
        (
            entry.version.digest.to_string(),
            entry.checkpoint_every_ms,
            entry.fail_closed
        ),
        (v1.clone(), Some(3_600_000), true),
        "committed with the settings it was installed with"
    );
    let applied = entry.applied.as_ref().expect("an applied record");
    assert_eq!(
        (
            applied.operation,
            applied.step_id.as_deref(),
            applied.origin.as_ref().and_then(|o| o.client.as_deref())
        ),
        (AppliedOperation::Install, Some("i1"), Some("default"))
    );

    // Committed, it survives a restart, and a retry of its install is answered from its record.
    let host = host.restart().await;
    assert_eq!(running(&host).await, ("1.0.0".into(), Value::Null));
    let retry = host.post("/v1/steps/i1/install", install).await;
    assert!(retry.replayed());
    retry.expect_ok();
    host.shutdown().await;
}

#[tokio::test]
async fn an_install_whose_lease_runs_out_is_unloaded_and_marked_failed_and_its_retry_learns_it_is_gone()
 {
    let (host, v1) = host_with_v1_staged().await;
    install_leased(&host, "i1", &v1, 1_000).await.expect_ok();
    let handle = host.runtime.handle("ma_cross").unwrap();
    handle
        .call(&bar("ES", 100.0))
        .expect("served during the lease");

    // The client that installed it went away: no commit comes, and the lease runs out.
    host.advance_ms(1_001);
    poll_until("the host has unloaded the install", || async {
        ma_cross_status(&host).await.is_none()
    })
    .await;
    assert_eq!(
        handle.call(&bar("ES", 101.0)).unwrap_err().to_string(),
        "no plugin `ma_cross` is loaded in this host"
    );
    let status = host.get("/v1/status").await;
    let mark = &status.expect_ok()["restraints"]["failed"][0];
    assert_eq!(
        (&mark["digest"], &mark["because"]["reason"]),
        (
            &json!(v1),
            &json!("rolled back: no commit arrived within the step's lease of 1000 ms")
        )
    );
    assert!(
        (host.runtime.committed().plugins.iter()).all(|entry| entry.plugin != "ma_cross"),
        "not committed"
    );

    let gone = install_leased(&host, "i1", &v1, 1_000).await;
    assert_eq!(
        gone.expect_error(StatusCode::CONFLICT, "step_gone"),
        "step `i1` installed `ma_cross`, but has been rolled back since: the install is not in \
         effect; read `GET /v1/status` and start a new step with a new step id"
    );
    let late = host.post("/v1/steps/i1/commit", ma_cross()).await;
    late.expect_error(StatusCode::CONFLICT, "no_step_in_progress");
    install_leased(&host, "i2", &v1, 1_000)
        .await
        .expect_error(StatusCode::CONFLICT, "version_failed");
    host.shutdown().await;
}

#[tokio::test]
async fn an_install_rolled_back_leaves_the_plugin_not_loaded_and_a_restart_forgets_a_pending_one() {
    let (host, v1) = host_with_v1_staged().await;
    install_leased(&host, "i1", &v1, 60_000).await.expect_ok();
    let handle = host.runtime.handle("ma_cross").unwrap();
    handle
        .call(&bar("ES", 100.0))
        .expect("served during the lease");

    let rolled_back = host.post("/v1/steps/i1/rollback", ma_cross()).await;
    let report = rolled_back.expect_ok();
    assert_eq!(
        (
            &report["to"],
            &report["method"]["kind"],
            &report["calls_since_switch"]
        ),
        (&Value::Null, &json!("unloaded"), &json!(1))
    );
    assert!(
        report["method"]["abandoned_state"].is_object(),
        "the state the install reached is kept in the report: {report}"
    );
    assert!(ma_cross_status(&host).await.is_none());
    assert!(handle.call(&bar("ES", 101.0)).is_err());

    // A pending install does not survive a restart: the host comes back without it.
    restrain(&host, json!({"action": "clear_failed", "artifact": v1}))
        .await
        .expect_ok();
    install_leased(&host, "i2", &v1, 60_000).await.expect_ok();
    let host = host.restart().await;
    assert!(ma_cross_status(&host).await.is_none());
    let gone = install_leased(&host, "i2", &v1, 60_000).await;
    gone.expect_error(StatusCode::CONFLICT, "step_gone");
    host.shutdown().await;
}

#[tokio::test]
async fn soak_thresholds_on_an_install_need_a_lease() {
    let (host, v1) = host_with_v1_staged().await;
    let refused = host
        .post(
            "/v1/steps/i1/install",
            json!({"artifact": v1, "config": v1_config(), "soak": {"max_error_rate": 0.1}}),
        )
        .await;
    assert_eq!(
        refused.expect_error(StatusCode::BAD_REQUEST, "bad_request"),
        "`soak` is given without `lease_ms`: soak thresholds are watched until a commit, which \
         only an install with a lease waits for; give `lease_ms` too"
    );
    assert!(ma_cross_status(&host).await.is_none());
    host.shutdown().await;
}

#[tokio::test]
async fn an_install_that_panics_before_its_commit_is_unloaded_and_the_caller_gets_the_panic() {
    let (host, _) = host_with_v1_staged().await;
    let faulty = host.stage(FAULT_CALL).await.to_string();
    let config = json!({"fast_period": 2, "slow_period": 4, "signal_threshold": 0.0});
    host.post(
        "/v1/steps/i1/install",
        json!({"artifact": faulty, "config": config, "lease_ms": 60_000}),
    )
    .await
    .expect_ok();
    let handle = host.runtime.handle("ma_cross").unwrap();
    handle
        .call(&bar("ES", 100.0))
        .expect("served during the lease");

    // The fixture panics on this bar: nothing ran before the install to serve it instead.
    let failed = handle.call(&bar("CRASH", 11.0)).unwrap_err();
    assert!(
        failed
            .to_string()
            .contains("fault injected by the ma_cross_fault_call fixture"),
        "the caller gets the panic, not `not loaded`: {failed}"
    );
    assert!(ma_cross_status(&host).await.is_none());
    let status = host.get("/v1/status").await;
    assert_eq!(
        status.expect_ok()["restraints"]["failed"][0]["digest"],
        json!(faulty)
    );
    host.post("/v1/steps/i1/commit", ma_cross())
        .await
        .expect_error(StatusCode::CONFLICT, "no_step_in_progress");
    assert!(
        (host.runtime.committed().plugins.iter()).all(|entry| entry.plugin != "ma_cross"),
        "never committed"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn a_pending_install_does_not_meet_a_dependency_until_it_is_committed() {
    let host = Host::start_with_manual_clock().await;
    let risk = host.stage(RISK_MODEL_1_0_0).await.to_string();
    let v1 = host.stage(MA_CROSS_1_0_0).await.to_string();
    host.post(
        "/v1/steps/r1/install",
        json!({"artifact": risk, "config": {"max_position": 100}, "lease_ms": 60_000}),
    )
    .await
    .expect_ok();
    // ma_cross needs risk_model, which may yet be unloaded by its lease: refused.
    let refused = host
        .post(
            "/v1/steps/m1/install",
            json!({"artifact": v1, "config": v1_config()}),
        )
        .await;
    refused.expect_error(StatusCode::CONFLICT, "dependency_unmet");
    host.post("/v1/steps/r1/commit", json!({"plugin": "risk_model"}))
        .await
        .expect_ok();
    host.post(
        "/v1/steps/m1/install",
        json!({"artifact": v1, "config": v1_config()}),
    )
    .await
    .expect_ok();
    host.shutdown().await;
}
