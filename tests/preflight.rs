//! Preflight: migrations previewed in a throwaway `plugsync preflight-child` process, through
//! the real binary and the real built plugins. A preview is the real migration (the same
//! result as a switch in a runtime), chained step to step; a crash, an abort or a hang of the
//! plugin's code stays in the child and comes back as an error naming the step.

mod support;

use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use expect_test::{Expect, expect};
use plugsync::preflight::{
    ArtifactFile, ChildRunner, PreflightError, PreviewJob, PreviewStage, PreviewStep, StepPreview,
    preview,
};
use plugsync_host::{MigrationRule, Runtime, SwapReport, SwapRequest, TransitionKind};
use serde_json::{Value, json};
use support::*;

/// The fixture (ma_cross 2.0.10) whose migration aborts or hangs on demand.
const FAULT_PREVIEW: &str = "ma_cross_fault_preview";
/// The variable that picks its fault.
const FAULT_ENV: &str = "PLUGSYNC_FIXTURE_MIGRATE";

/// Previews never overlap in this binary: so that, once one returns, a test can check that
/// this process has no child left (a killed child reaped, not a zombie).
fn one_child_at_a_time() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn runner() -> ChildRunner {
    // Generous: a debug build of the child under a loaded machine; the hang test sets its own.
    ChildRunner::new(env!("CARGO_BIN_EXE_plugsync"), Duration::from_secs(120))
}

fn run(job: &PreviewJob, runner: &ChildRunner) -> Result<Vec<StepPreview>, PreflightError> {
    let _one = one_child_at_a_time();
    preview(job, runner)
}

fn artifact(name: &str) -> ArtifactFile {
    ArtifactFile::new(lib(name), digest_of(name))
}

fn v1_config() -> Value {
    json!({"fast_ma_period": 2, "slow_ma_period": 3, "order_qty": 1})
}

/// A runtime running ma_cross 1.0.0 that has traded: a cross up, its fill, more bars.
fn trading_1_0_0() -> (tempfile::TempDir, Runtime) {
    let (dir, runtime) = runtime();
    install(&runtime, MA_CROSS_1_0_0, v1_config());
    for input in [
        bar("ES", 100.0),
        bar("ES", 99.0),
        bar("ES", 103.0),
        bar("ES", 104.0),
        fill(1, "ES", 1, 104.0),
        bar("NQ", 15000.0),
    ] {
        runtime.call("ma_cross", &input).unwrap();
    }
    (dir, runtime)
}

/// The job of previewing `steps` from what `runtime` runs now (its version, config, state).
fn job_from(runtime: &Runtime, running: &str, steps: Vec<PreviewStep>) -> PreviewJob {
    let status = runtime.status();
    let config = status.plugins[0].config.clone();
    let live = state(&runtime.snapshot("ma_cross").unwrap());
    PreviewJob {
        steps,
        ..PreviewJob::new("ma_cross", artifact(running), config, live)
    }
}

/// What a real switch reported, as a preview shows it.
fn as_preview(report: SwapReport) -> StepPreview {
    StepPreview {
        from: report.from.version,
        version: report.to.version,
        kind: report.kind,
        config_before: report.config_before,
        config_after: report.config_after,
        state_before: report.state_before,
        state_after: report.state_after,
        state_discarded: report.state_discarded,
    }
}

/// Switches `runtime` as `request` says and commits: the reference a preview must equal.
fn switch(runtime: &Runtime, request: SwapRequest) -> StepPreview {
    let report = runtime.swap(request).unwrap();
    runtime.commit("ma_cross").unwrap();
    as_preview(report)
}

/// Checks an error's message, paths and digests normalised.
fn check_message(error: &PreflightError, expected: Expect) {
    let message = error
        .to_string()
        .replace(&profile_dir().display().to_string(), "[TARGET]");
    expected.assert_eq(&normalise(&message, Path::new(WORKSPACE)));
}

fn rename_rules() -> Vec<MigrationRule> {
    serde_json::from_value(json!([
        {"op": "rename", "from": "/config/fast_ma_period", "to": "/config/fast_period"},
        {"op": "rename", "from": "/config/slow_ma_period", "to": "/config/slow_period"},
        {"op": "default", "path": "/config/signal_threshold", "value": 0.02},
        {"op": "rename", "from": "/state/fast_ma_period", "to": "/state/fast_period"},
        {"op": "rename", "from": "/state/slow_ma_period", "to": "/state/slow_period"},
        {"op": "default", "path": "/state/signal_threshold", "value": 0.02},
        {"op": "default", "path": "/state/instruments/*/last_close", "value": null}
    ]))
    .unwrap()
}

#[test]
fn a_two_step_chain_previews_what_the_real_switches_do_each_from_the_last() {
    let (_dir, live) = trading_1_0_0();
    let desired = json!({"fast_period": 3, "slow_period": 5, "order_qty": 2});
    let job = job_from(
        &live,
        MA_CROSS_1_0_0,
        vec![
            PreviewStep::new(artifact(MA_CROSS_2_0_0)),
            PreviewStep::new(artifact(MA_CROSS_2_1_0)).config(desired.clone()),
        ],
    );

    let previews = run(&job, &runner()).unwrap();

    // The same switches in a runtime, from the same state.
    stage(&live, MA_CROSS_2_0_0);
    stage(&live, MA_CROSS_2_1_0);
    let expected = vec![
        switch(
            &live,
            SwapRequest::new("ma_cross", digest_of(MA_CROSS_2_0_0)),
        ),
        switch(
            &live,
            SwapRequest::new("ma_cross", digest_of(MA_CROSS_2_1_0)).config(desired.clone()),
        ),
    ];
    assert_eq!(previews, expected);
    // The chain: the first starts from the live state, the second from the first's result.
    assert_eq!(previews[0].state_before, job.state);
    assert_eq!(previews[1].state_before, previews[0].state_after);
    assert_eq!(previews[1].config_before, previews[0].config_after);
    assert_eq!(
        [
            (&*previews[0].from, &*previews[0].version),
            (&*previews[1].from, &*previews[1].version)
        ],
        [("1.0.0", "2.0.0"), ("2.0.0", "2.1.0")]
    );
    assert_eq!(previews[0].kind, TransitionKind::Upgrade);
    assert_eq!(
        previews[0].config_after["fast_period"], 2,
        "migrated, not desired"
    );
    assert_eq!(previews[1].config_after, desired);
    assert_eq!(previews[0].state_after["instruments"]["ES"]["position"], 1);
}

#[test]
fn a_downgrade_is_previewed_with_the_running_versions_own_migration() {
    let (_dir, live) = trading_1_0_0();
    stage(&live, MA_CROSS_2_0_0);
    switch(
        &live,
        SwapRequest::new("ma_cross", digest_of(MA_CROSS_2_0_0)),
    );
    let job = job_from(
        &live,
        MA_CROSS_2_0_0,
        vec![PreviewStep::new(artifact(MA_CROSS_1_0_0))],
    );

    let previews = run(&job, &runner()).unwrap();

    let expected = switch(
        &live,
        SwapRequest::new("ma_cross", digest_of(MA_CROSS_1_0_0)),
    );
    assert_eq!(previews, [expected]);
    assert_eq!(previews[0].kind, TransitionKind::Downgrade);
    assert_eq!(previews[0].state_after["fast_ma_period"], 2);
}

#[test]
fn a_declarative_migration_is_previewed_by_its_rules() {
    // 2.1.0 does not migrate from 1.x itself: the rules stand for the declaration.
    let (_dir, live) = trading_1_0_0();
    let job = job_from(
        &live,
        MA_CROSS_1_0_0,
        vec![PreviewStep::new(artifact(MA_CROSS_2_1_0)).migration_rules(rename_rules())],
    );

    let previews = run(&job, &runner()).unwrap();

    stage(&live, MA_CROSS_2_1_0);
    let expected = switch(
        &live,
        SwapRequest::new("ma_cross", digest_of(MA_CROSS_2_1_0)).migration_rules(rename_rules()),
    );
    assert_eq!(previews, [expected]);
    assert_eq!(previews[0].state_after["signal_threshold"], 0.02);
    assert_eq!(previews[0].config_after["signal_threshold"], 0.02);
}

#[test]
fn a_fresh_state_step_previews_the_state_a_new_instance_starts_with() {
    let (_dir, live) = trading_1_0_0();
    let config = json!({"fast_period": 4, "slow_period": 9});
    let job = job_from(
        &live,
        MA_CROSS_1_0_0,
        vec![
            PreviewStep::new(artifact(MA_CROSS_2_0_0))
                .fresh_state()
                .config(config.clone()),
        ],
    );

    let previews = run(&job, &runner()).unwrap();

    let (_fresh_dir, fresh) = runtime();
    install(&fresh, MA_CROSS_2_0_0, config.clone());
    let [step] = previews.as_slice() else {
        panic!("one step: {previews:?}")
    };
    assert!(step.state_discarded);
    assert_eq!(step.state_before, job.state);
    assert_eq!(
        step.state_after,
        state(&fresh.snapshot("ma_cross").unwrap())
    );
    assert_eq!(step.config_after, config);
}

#[test]
fn a_migration_that_aborts_kills_only_the_child_and_names_the_step_and_signal() {
    // Step 2 aborts: 2.0.0 -> 1.0.0 by 2.0.0's own migration, then 1.0.0 -> 2.0.10.
    let (_dir, live) = trading_1_0_0();
    stage(&live, MA_CROSS_2_0_0);
    switch(
        &live,
        SwapRequest::new("ma_cross", digest_of(MA_CROSS_2_0_0)),
    );
    let job = job_from(
        &live,
        MA_CROSS_2_0_0,
        vec![
            PreviewStep::new(artifact(MA_CROSS_1_0_0)),
            PreviewStep::new(artifact(FAULT_PREVIEW)),
        ],
    );

    let error = run(&job, &runner().env(FAULT_ENV, "abort")).unwrap_err();

    let PreflightError::Crashed { stage, signal, .. } = &error else {
        panic!("not a crash: {error:?}")
    };
    assert_eq!(
        (&**stage, *signal),
        (
            &PreviewStage::Step {
                plugin: "ma_cross".into(),
                number: 2,
                of: 2,
                from: "1.0.0".into(),
                to: "2.0.10".into()
            },
            6
        )
    );
    check_message(
        &error,
        expect![[
            r#"migrating `ma_cross` 1.0.0 -> 2.0.10 (step 2 of 2) crashed the preview process: signal 6 (SIGABRT); the live host was not touched: fix the plugin, or plan a path that avoids this step"#
        ]],
    );
    // Without the fault, the same job previews.
    assert_eq!(run(&job, &runner()).unwrap().len(), 2);
}

#[test]
fn a_migration_that_hangs_is_killed_at_the_timeout_and_reaped() {
    let (_dir, live) = trading_1_0_0();
    let job = job_from(
        &live,
        MA_CROSS_1_0_0,
        vec![PreviewStep::new(artifact(FAULT_PREVIEW))],
    );
    let runner = ChildRunner::new(env!("CARGO_BIN_EXE_plugsync"), Duration::from_secs(2))
        .env(FAULT_ENV, "hang");

    let one = one_child_at_a_time();
    let error = preview(&job, &runner).unwrap_err();
    assert_eq!(
        children_of_this_process(),
        Vec::<u32>::new(),
        "the child is gone"
    );
    drop(one);

    assert!(
        matches!(error, PreflightError::TimedOut { timeout, .. } if timeout == Duration::from_secs(2)),
        "{error:?}"
    );
    check_message(
        &error,
        expect![[
            r#"migrating `ma_cross` 1.0.0 -> 2.0.10 (step 1 of 1) did not finish within 2s (the preview process was killed); the live host was not touched: if the migration is only slow, raise it with `--preview-timeout`"#
        ]],
    );
}

#[test]
fn a_migration_that_panics_is_a_failed_step_not_a_crash() {
    let (_dir, live) = trading_1_0_0();
    let job = job_from(
        &live,
        MA_CROSS_1_0_0,
        vec![PreviewStep::new(artifact(FAULT_MIGRATE))],
    );

    let error = run(&job, &runner()).unwrap_err();

    assert!(matches!(error, PreflightError::Failed { .. }), "{error:?}");
    check_message(
        &error,
        expect![
            "migrating `ma_cross` 1.0.0 -> 2.0.2 (step 1 of 1) failed in the preview process: plugin `ma_cross` 2.0.2 failed in `migrate` (panic caught): plugin panicked: migration bug: cannot migrate 1.0.0 -> 2.0.2 (fault injected by the ma_cross_fault_migrate fixture)"
        ],
    );
}

#[test]
fn an_artifact_that_changed_since_it_was_verified_is_refused_before_any_code_runs() {
    let (_dir, live) = trading_1_0_0();
    let mut job = job_from(
        &live,
        MA_CROSS_1_0_0,
        vec![PreviewStep::new(artifact(MA_CROSS_2_0_0))],
    );
    job.steps[0].artifact.sha256 = digest_of(MA_CROSS_2_1_0);

    let error = run(&job, &runner()).unwrap_err();

    check_message(
        &error,
        expect![
            "preparing the preview of `ma_cross` failed in the preview process: sha256 mismatch for `libma_cross_v2_0_0.so`: expected [HASH], got [HASH]; the artifact is corrupt or not the one that was published: fetch it again from the registry"
        ],
    );
}

#[test]
fn a_job_without_steps_starts_no_child() {
    let (_dir, live) = trading_1_0_0();
    let job = job_from(&live, MA_CROSS_1_0_0, Vec::new());
    let nowhere = ChildRunner::new("/nonexistent/plugsync", Duration::from_secs(1));
    assert_eq!(preview(&job, &nowhere).unwrap(), []);
}

#[test]
fn a_child_that_cannot_start_is_named() {
    let (_dir, live) = trading_1_0_0();
    let job = job_from(
        &live,
        MA_CROSS_1_0_0,
        vec![PreviewStep::new(artifact(MA_CROSS_2_0_0))],
    );
    let nowhere = ChildRunner::new("/nonexistent/plugsync", Duration::from_secs(1));
    check_message(
        &preview(&job, &nowhere).unwrap_err(),
        expect![
            "cannot start the preview process `/nonexistent/plugsync` for `ma_cross`: No such file or directory (os error 2); check that plugsync's binary is still there"
        ],
    );
}

/// The processes whose parent is this one, zombies included (Linux `/proc`).
fn children_of_this_process() -> Vec<u32> {
    let me = std::process::id();
    let mut children = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        // `pid (comm) state ppid …`: the command may hold spaces and parentheses.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(1))
            .and_then(|ppid| ppid.parse::<u32>().ok());
        if ppid == Some(me) {
            children.push(pid);
        }
    }
    children
}

#[test]
fn relative_artifact_paths_are_read_from_the_callers_directory_not_the_childs() {
    // The child runs in its temporary store's directory; the tests run in the package root.
    let relative = |name: &str| {
        let file = artifact(name);
        let path = file
            .path
            .strip_prefix(std::env::current_dir().unwrap())
            .expect("the target directory is under the package root")
            .to_owned();
        ArtifactFile::new(path, file.sha256)
    };
    let (_dir, live) = trading_1_0_0();
    let mut job = job_from(&live, MA_CROSS_1_0_0, Vec::new());
    job.running = relative(MA_CROSS_1_0_0);
    job = job.step(PreviewStep::new(relative(MA_CROSS_2_0_0)));

    let previews = run(&job, &runner()).unwrap();

    assert_eq!(previews[0].version, "2.0.0");
}
