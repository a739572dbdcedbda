//! A plugin logs through its host: its own copy of std and `tracing` never reach the host's
//! subscriber, so the SDK hands it the host's logger, and routes its panic reports there too —
//! from the moment the library is mapped (ABI 1.2's `set_host`), so also for a panic in
//! `migrate`, which runs before the library has any instance. The host's own warning about a
//! verification that failed is checked here too.

mod support;

use plugsync_host::{CallError, HostError, SwapRequest, VerifySpec};
use serde_json::json;
use support::*;

#[test]
fn a_plugin_panic_is_reported_with_its_location_in_the_host_log() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // The plugin's log callback runs on the calling thread: a thread-local subscriber sees it.
    tracing::subscriber::with_default(subscriber, || {
        let (_dir, runtime) = runtime();
        install(
            &runtime,
            FAULT_CALL,
            json!({"fast_period": 2, "slow_period": 3, "order_qty": 1}),
        );
        let error = runtime.call("ma_cross", &bar("CRASH", 10.0)).unwrap_err();
        assert!(
            matches!(error, CallError::Plugin { panicked: true, .. }),
            "{error}"
        );
    });
    let log = captured.text();
    let line = log
        .lines()
        .find(|line| line.contains("plugin panicked at"))
        .unwrap_or_else(|| panic!("no panic report in the host log:\n{log}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("plugin=\"ma_cross\""), "{line}");
    assert!(line.contains("version=\"2.0.3\""), "{line}");
    assert!(
        line.contains("tests/fixtures/plugins/ma_cross_fault_call/src/lib.rs:"),
        "{line}"
    );
}

#[test]
fn a_verification_that_fails_leaves_a_warning_in_the_host_log_and_one_that_passes_none() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // A verification runs on the thread that asks for it: a thread-local subscriber sees it.
    tracing::subscriber::with_default(subscriber, || {
        let (_dir, runtime) = runtime();
        install(
            &runtime,
            MA_CROSS_1_0_0,
            json!({"fast_ma_period": 2, "slow_ma_period": 4}),
        );
        let v2 = stage(&runtime, MA_CROSS_2_0_0);
        // 2.0.0 orders 1 on this cross up: a probe expecting 1 passes, one expecting 2 fails.
        let spec = |qty| VerifySpec {
            probes: vec![crossing_up_probe(qty)],
            ..VerifySpec::default()
        };
        let passed = runtime
            .verify("ma_cross", &v2, None, None, &spec(1))
            .unwrap();
        assert!(passed.passed(), "{}", passed.summary());
        let failed = runtime
            .verify("ma_cross", &v2, None, None, &spec(2))
            .unwrap();
        assert!(!failed.passed());
    });
    let log = captured.text();
    let warnings: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("verification failed"))
        .collect();
    let [line] = warnings[..] else {
        panic!("expected one warning, for the failed verification only:\n{log}");
    };
    assert!(line.contains("WARN"), "{line}");
    assert!(line.contains("plugin=\"ma_cross\""), "{line}");
    assert!(
        line.contains(
            "verification failed: probe `a fresh instance buys on a cross up` step 4: expected \
             {\"orders\":[{\"instrument\":\"ES\",\"order_id\":1,\"qty\":2}]}, got \
             {\"orders\":[{\"instrument\":\"ES\",\"order_id\":1,\"qty\":1}]}"
        ),
        "{line}"
    );
}

#[test]
fn a_panic_in_migrate_is_reported_in_the_host_log_and_nothing_reaches_stderr() {
    // Built here: the child does not build.
    lib(MA_CROSS_1_0_0);
    lib(FAULT_MIGRATE);
    // The child's stderr is the process's own: a panic report from the plugin's default hook
    // would land there, with a backtrace since `RUST_BACKTRACE=1`.
    let output = run_child_test(
        "child_swaps_to_a_migration_that_panics",
        &[("RUST_BACKTRACE", std::path::Path::new("1"))],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    for noise in ["panicked", "backtrace", "migration bug"] {
        assert!(
            !stderr.contains(noise),
            "`{noise}` on stderr: the panic was not reported through the host's logger:\n{stderr}"
        );
    }
}

#[test]
#[ignore = "run by `a_panic_in_migrate_is_reported_in_the_host_log_and_nothing_reaches_stderr`"]
fn child_swaps_to_a_migration_that_panics() {
    let captured = Captured::default();
    let writer = captured.clone();
    // Global: whichever thread runs the migration, its report reaches this subscriber.
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let (_dir, runtime) = runtime();
    install(
        &runtime,
        MA_CROSS_1_0_0,
        json!({"fast_ma_period": 2, "slow_ma_period": 3}),
    );
    let faulty = stage(&runtime, FAULT_MIGRATE);
    // The first thing this library runs is its `migrate`: no instance of it exists yet.
    let error = runtime
        .swap(SwapRequest::new("ma_cross", faulty))
        .unwrap_err();
    assert!(
        matches!(
            error,
            HostError::Plugin {
                operation: "migrate",
                panicked: true,
                ..
            }
        ),
        "{error:?}"
    );
    let log = captured.text();
    let line = log
        .lines()
        .find(|line| line.contains("plugin panicked at"))
        .unwrap_or_else(|| panic!("no panic report in the host log:\n{log}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("plugin=\"ma_cross\""), "{line}");
    assert!(line.contains("version=\"2.0.2\""), "{line}");
    assert!(
        line.contains("tests/fixtures/plugins/ma_cross_fault_migrate/src/lib.rs:"),
        "{line}"
    );
    assert!(
        line.contains("migration bug: cannot migrate 1.0.0 -> 2.0.2"),
        "{line}"
    );
}
