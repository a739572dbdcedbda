//! `plugsync run` through the binary, against a real reference host running the real example
//! plugins: plugins.yaml edited in place, by rename-on-save and by a symlink swap; an invalid
//! edit never applied; drift healed or only reported; a hold left alone; SIGTERM mid-step and
//! the next start finishing the job.
//!
//! Nothing here sleeps for a set time to let something happen: each test waits for the fact
//! itself (the host's status, the sidecar's `sidecar.json` counters, a log line), polling.

mod support;

use std::ffi::OsStr;
use std::path::PathBuf;

use serde_json::Value;
use support::process::Proc;

use support::desk::*;
use support::sidecar::*;
use support::*;

/// A desk whose plugins.yaml asks the first versions, and a sidecar (with `args`) that has
/// installed them.
fn at_v1(args: &[&str]) -> (Desk, PathBuf, Proc) {
    let desk = Desk::new();
    let file = desk.path().join("plugins.yaml");
    std::fs::write(&file, desired(&desk, V1)).unwrap();
    let sidecar = run(&desk, &file, args);
    eventually(&sidecar, "the first versions run", || {
        running(&desk) == ["ma_cross 1.0.0", "risk_model 1.0.0"]
    });
    (desk, file, sidecar)
}

#[test]
fn each_way_an_edit_lands_is_applied_in_place_by_rename_and_by_a_symlink_swap() {
    let desk = Desk::new();
    // As git-sync lays a checkout out: `current` links to the revision checked out.
    let revision = |name: &str, plugins: &str| -> PathBuf {
        let dir = desk.path().join("git").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("plugins.yaml"), desired(&desk, plugins)).unwrap();
        dir
    };
    revision("rev-1", V1);
    std::os::unix::fs::symlink("rev-1", desk.path().join("git/current")).unwrap();
    let file = desk.path().join("git/current/plugins.yaml");
    let sidecar = run(&desk, &file, &["--drift-interval", "1h"]);
    eventually(&sidecar, "the first versions run", || {
        running(&desk) == ["ma_cross 1.0.0", "risk_model 1.0.0"]
    });

    // In place.
    std::fs::write(&file, desired(&desk, V1_1)).unwrap();
    eventually(&sidecar, "risk_model 1.1.0 is committed", || {
        running(&desk) == ["ma_cross 1.0.0", "risk_model 1.1.0"]
    });

    // By rename-on-save: a reconfigure.
    save_by_rename(&file, &desired(&desk, &V1_1.replace("10}", "20}")));
    eventually(&sidecar, "risk_model runs with max_position 20", || {
        desk.api.plugin("risk_model")["config"]["max_position"] == 20
    });

    // By a symlink swap to another revision: back to the first versions.
    revision("rev-2", V1);
    let link = desk.path().join("git/current.new");
    std::os::unix::fs::symlink("rev-2", &link).unwrap();
    std::fs::rename(&link, desk.path().join("git/current")).unwrap();
    eventually(&sidecar, "risk_model is back on 1.0.0", || {
        running(&desk) == ["ma_cross 1.0.0", "risk_model 1.0.0"]
    });

    let stopped = stop(sidecar);
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let last = &status(&desk)["lastReconcile"];
    assert_eq!(last["outcome"], "applied", "{last}");
    assert!(status(&desk)["stoppedAt"].is_string());
}

#[test]
fn an_invalid_edit_is_logged_with_its_place_and_never_applied_and_the_next_good_one_is() {
    let (desk, file, sidecar) = at_v1(&["--drift-interval", "1h"]);
    eventually(&sidecar, "the first reconcile is told", || {
        reconciles(&desk) == 1
    });
    let before = reconciles(&desk);

    std::fs::write(
        &file,
        desired(&desk, &V1_1.replace("version: 1.1.0", "verison: 1.1.0")),
    )
    .unwrap();
    eventually(&sidecar, "the sidecar says plugins.yaml is invalid", || {
        status(&desk)["invalid"].is_object()
    });
    let invalid = status(&desk)["invalid"]["report"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(invalid.contains("plugins.yaml:8:7"), "{invalid}");
    assert!(invalid.contains("`verison`"), "{invalid}");
    assert!(
        sidecar
            .stderr()
            .contains("plugins.yaml is invalid, keeping the last good desired state")
    );
    assert_eq!(reconciles(&desk), before, "nothing was reconciled");
    assert_eq!(running(&desk), ["ma_cross 1.0.0", "risk_model 1.0.0"]);

    // Operators see it in `plugsync status` (the sidecar's part, from its state directory).
    let shown = desk.operator(&["status"]);
    assert!(shown.status.success(), "{}", shown.stderr);
    let sidecar_part = &shown.stdout[shown.stdout.find("\nsidecar:").unwrap()..];
    let pid = status(&desk)["pid"].to_string();
    expect_test::expect![[r#"

        sidecar: pid [PID] since [TIME], following [ROOT]/plugins.yaml on [HOST]
          plugins.yaml INVALID since [TIME]: unknown key `verison` in a plugin at [ROOT]/plugins.yaml:8:7
          reconciling to the last good one (read [TIME])
          last reconcile: [TIME] (start): applied — Applied 2 steps. The host runs ma_cross 1.0.0, risk_model 1.0.0.
          drift checks: 1, the last [TIME]
    "#]]
    .assert_eq(&desk.normalised(&sidecar_part.replace(&pid, "[PID]")));

    std::fs::write(&file, desired(&desk, V1_1)).unwrap();
    eventually(&sidecar, "risk_model 1.1.0 is committed", || {
        running(&desk) == ["ma_cross 1.0.0", "risk_model 1.1.0"]
    });
    assert!(status(&desk)["invalid"].is_null());
    assert!(stop(sidecar).status.success());
}

#[test]
fn drift_made_by_hand_is_healed() {
    let (desk, _file, sidecar) = at_v1(&["--drift-interval", "200ms"]);

    desk.switch_by("risk_model", RISK_MODEL_1_1_0, "an-operators-script");
    eventually(&sidecar, "the drift is healed", || {
        running(&desk) == ["ma_cross 1.0.0", "risk_model 1.0.0"]
    });
    assert!(sidecar.stderr().contains("drift: the host runs other than plugins.yaml asks: risk_model: runs 1.1.0, plugins.yaml asks 1.0.0"), "{}", sidecar.stderr());
}

#[test]
fn drift_with_report_only_is_told_once_and_left_alone() {
    let desk = Desk::new();
    let file = desk.path().join("plugins.yaml");
    std::fs::write(&file, desired(&desk, V1)).unwrap();
    let sidecar = run(
        &desk,
        &file,
        &["--drift-interval", "200ms", "--drift", "report"],
    );
    eventually(&sidecar, "a check found nothing to do", || {
        checks(&desk) >= 1
    });
    desk.switch_by("risk_model", RISK_MODEL_1_1_0, "an-operators-script");
    eventually(&sidecar, "the drift is told", || {
        status(&desk)["drift"]["changes"][0] == "risk_model: runs 1.1.0, plugins.yaml asks 1.0.0"
    });
    let told = checks(&desk);
    eventually(&sidecar, "two checks more", || checks(&desk) >= told + 2);
    assert_eq!(
        running(&desk),
        ["ma_cross 1.0.0", "risk_model 1.1.0"],
        "only told"
    );
    assert_eq!(status(&desk)["drift"]["healing"], false);
    let stopped = stop(sidecar);
    assert!(stopped.status.success());
    assert_eq!(
        stopped.stderr.matches("drift: the host runs").count(),
        1,
        "told once while it lasts:\n{}",
        stopped.stderr
    );
}

#[test]
fn sigterm_mid_soak_exits_0_and_the_next_start_finishes_the_step() {
    let (desk, file, sidecar) = at_v1(&["--drift-interval", "1h"]);
    // A soak long enough that the stop lands in it even on a loaded machine.
    std::fs::write(&file, desired(&desk, &V1_1.replace("300ms", "10s"))).unwrap();
    eventually(&sidecar, "risk_model 1.1.0 soaks", || {
        running(&desk) == ["ma_cross 1.0.0", "risk_model 1.1.0 (pending)"]
    });

    let stopped = stop(sidecar);
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(
        stopped.stderr.contains("1.0.0 → 1.1.0) at `soaking`"),
        "the log says what was left in flight:\n{}",
        stopped.stderr
    );
    assert_eq!(
        running(&desk),
        ["ma_cross 1.0.0", "risk_model 1.1.0 (pending)"],
        "left soaking on the host, under its lease"
    );

    let sidecar = run(&desk, &file, &["--drift-interval", "1h"]);
    eventually(&sidecar, "the step left is committed", || {
        running(&desk) == ["ma_cross 1.0.0", "risk_model 1.1.0"]
    });
    let finished = stop(sidecar);
    assert!(finished.status.success(), "{}", finished.stderr);
    assert!(
        finished.stderr.contains("soak 10s ✓  committed"),
        "the journal's step was finished, not planned again:\n{}",
        finished.stderr
    );
}

#[test]
fn a_manual_reconcile_while_the_sidecar_applies_waits_for_the_hosts_lease() {
    let (desk, file, sidecar) = at_v1(&["--drift-interval", "1h"]);
    // A soak long enough that the manual reconcile starts in it even on a loaded machine.
    std::fs::write(&file, desired(&desk, &V1_1.replace("300ms", "10s"))).unwrap();
    eventually(&sidecar, "risk_model 1.1.0 soaks", || {
        running(&desk) == ["ma_cross 1.0.0", "risk_model 1.1.0 (pending)"]
    });

    // Another client, with its own journal: it waits, then finds nothing left to do.
    let alice_token = desk.path().join("alice.token");
    let alice_state = desk.path().join("alice-state");
    let manual = desk.reconcile_of(
        &file,
        &[
            ("PLUGSYNC_NOW", SATURDAY),
            ("PLUGSYNC_STATE_DIR", alice_state.to_str().unwrap()),
        ],
        &["--token-file", alice_token.to_str().unwrap()],
    );
    assert!(manual.status.success(), "{}", manual.stderr);
    assert!(
        manual.stderr.contains("waiting: `default`"),
        "it waited on the sidecar's lease:\n{}",
        manual.stderr
    );
    assert_eq!(
        manual.stdout,
        "In sync: nothing to apply. The host runs ma_cross 1.0.0, risk_model 1.1.0.\n"
    );
    assert!(stop(sidecar).status.success());
}

#[test]
fn a_hold_made_by_hand_is_not_healed_away() {
    let desk = Desk::new();
    let file = desk.path().join("plugins.yaml");
    std::fs::write(&file, desired(&desk, V1_1)).unwrap();
    let sidecar = run(&desk, &file, &["--drift-interval", "200ms"]);
    eventually(&sidecar, "risk_model 1.1.0 runs", || {
        running(&desk) == ["ma_cross 1.0.0", "risk_model 1.1.0"]
    });

    // An operator rolls risk_model back by hand (another client, its own journal): a hold.
    let rolled_back = desk.operator(&[
        "rollback",
        "risk_model",
        "--to",
        "1.0.0",
        "--yes",
        "--reason",
        "1.1.0 misprices ES",
        "-f",
        file.to_str().unwrap(),
        "--token-file",
        desk.path().join("alice.token").to_str().unwrap(),
        "--state-dir",
        desk.path().join("alice-state").to_str().unwrap(),
    ]);
    assert!(rolled_back.status.success(), "{}", rolled_back.stderr);
    let after = checks(&desk);
    eventually(&sidecar, "three drift checks more", || {
        checks(&desk) >= after + 3
    });
    assert_eq!(
        running(&desk),
        ["ma_cross 1.0.0", "risk_model 1.0.0"],
        "held"
    );
    assert!(status(&desk)["drift"].is_null(), "a hold is not drift");
    assert!(!sidecar.stderr().contains("drift:"), "{}", sidecar.stderr());
    assert!(stop(sidecar).status.success());
}

#[test]
fn embedded_the_sidecar_runs_beside_the_host_in_one_process_and_the_desk_trades() {
    let desk = Desk::new();
    let file = desk.path().join("plugins.yaml");
    std::fs::write(&file, desired(&desk, V1)).unwrap();
    let state = desk.path().join("embedded");
    let args: Vec<&OsStr> = vec![
        OsStr::new("run"),
        OsStr::new("--embedded"),
        OsStr::new("-f"),
        file.as_os_str(),
        OsStr::new("--state-dir"),
        state.as_os_str(),
        OsStr::new("--drift-interval"),
        OsStr::new("1h"),
        OsStr::new("--debounce"),
        OsStr::new("50ms"),
    ];
    let mut embedded = Proc::spawn(&args, &[("PLUGSYNC_NOW", OsStr::new(SATURDAY))]);
    let url = embedded
        .line_starting("plugsync host listening on ")
        .trim_start_matches("plugsync host listening on ")
        .to_owned();
    let token = std::fs::read_to_string(state.join("host-token")).unwrap();
    let api = support::process::Api::at(&url, token.trim());
    let calls = |plugin: &str| -> u64 {
        (api.status()["plugins"].as_array().unwrap().iter())
            .find(|p| p["plugin"] == plugin)
            .map_or(0, |p| p["counters"]["calls"].as_u64().unwrap())
    };
    eventually(&embedded, "the desk trades through both plugins", || {
        calls("ma_cross") > 0 && calls("risk_model") > 0
    });

    std::fs::write(&file, desired(&desk, V1_1)).unwrap();
    eventually(
        &embedded,
        "risk_model 1.1.0 is committed under load",
        || {
            let status = api.status();
            (status["plugins"].as_array().unwrap().iter()).any(|p| {
                p["plugin"] == "risk_model"
                    && p["version"]["version"] == "1.1.0"
                    && p["pending"].is_null()
            })
        },
    );
    let served = calls("risk_model");
    eventually(&embedded, "the desk still trades", || {
        calls("risk_model") > served
    });

    let stopped = stop(embedded);
    assert!(stopped.status.success(), "{}", stopped.stderr);
    let sidecar: Value =
        serde_json::from_slice(&std::fs::read(state.join("sidecar.json")).unwrap()).unwrap();
    assert_eq!(sidecar["host"], "in-process");
    assert_eq!(sidecar["lastReconcile"]["outcome"], "applied");
}

/// A commit of `text` as `file` in `repo`, made before the work tree has it (as a `git pull`
/// lands: the commit exists when the file changes); its id.
fn commit(repo: &gix::Repository, file: &str, text: &str, message: &str) -> String {
    support::git::commit(repo, file, text.as_bytes(), message)
}

#[test]
fn each_commit_applied_is_in_history_with_its_id() {
    let desk = Desk::new();
    let dir = desk.path().join("repo");
    let repo = gix::init(&dir).unwrap();
    let file = dir.join("plugins.yaml");
    let first = commit(&repo, "plugins.yaml", &desired(&desk, V1), "desk-a: v1");
    std::fs::write(&file, desired(&desk, V1)).unwrap();
    let sidecar = run(&desk, &file, &["--drift-interval", "1h"]);
    eventually(&sidecar, "the first reconcile is told", || {
        reconciles(&desk) == 1
    });
    assert_eq!(status(&desk)["desired"]["commit"], first.as_str());

    let second = commit(
        &repo,
        "plugins.yaml",
        &desired(&desk, V1_1),
        "risk_model 1.1.0",
    );
    std::fs::write(&file, desired(&desk, V1_1)).unwrap();
    eventually(&sidecar, "the second reconcile is told", || {
        reconciles(&desk) == 2
    });
    assert_eq!(status(&desk)["desired"]["commit"], second.as_str());
    assert!(stop(sidecar).status.success());

    let state = desk.path().join("state");
    let history = support::process::plugsync(
        &[
            OsStr::new("history"),
            OsStr::new("--output"),
            OsStr::new("json"),
            OsStr::new("--state-dir"),
            state.as_os_str(),
        ],
        &[],
    );
    assert!(history.status.success(), "{}", history.stderr);
    let entries: Value = serde_json::from_str(&history.stdout).unwrap();
    let commits: Vec<(&str, &str, bool)> = (entries.as_array().unwrap().iter())
        .map(|e| {
            (
                e["plugin"].as_str().unwrap(),
                e["commit"].as_str().unwrap(),
                e["dirty"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        commits,
        [
            ("risk_model", second.as_str(), false),
            ("ma_cross", first.as_str(), false),
            ("risk_model", first.as_str(), false),
        ]
    );
}

#[test]
fn a_broken_base_is_not_applied_and_its_fix_is_seen_where_it_lives() {
    let desk = Desk::new();
    // As a fleet lays its repository out: a host's file extends a shared base.
    let base = desk.path().join("fleet/base/plugins.yaml");
    let host = desk.path().join("fleet/hosts/prod/plugins.yaml");
    std::fs::create_dir_all(base.parent().unwrap()).unwrap();
    std::fs::create_dir_all(host.parent().unwrap()).unwrap();
    std::fs::write(&base, desired(&desk, V1)).unwrap();
    std::fs::write(
        &host,
        "apiVersion: plugsync/v1\nkind: PluginSet\nmetadata: {name: prod}\nspec:\n  \
         extends: ../../base/plugins.yaml\n",
    )
    .unwrap();
    let sidecar = run(&desk, &host, &["--drift-interval", "1h"]);
    eventually(&sidecar, "the first versions run", || {
        running(&desk) == ["ma_cross 1.0.0", "risk_model 1.0.0"]
    });

    std::fs::write(
        &base,
        desired(&desk, &V1_1.replace("version: 1.1.0", "verison: 1.1.0")),
    )
    .unwrap();
    eventually(&sidecar, "the base is told invalid", || {
        status(&desk)["invalid"].is_object()
    });
    // Fixed in the base's own directory, nowhere near the host's file.
    std::fs::write(&base, desired(&desk, V1_1)).unwrap();
    eventually(&sidecar, "risk_model 1.1.0 is committed", || {
        running(&desk) == ["ma_cross 1.0.0", "risk_model 1.1.0"]
    });
    assert!(status(&desk)["invalid"].is_null());
    assert!(stop(sidecar).status.success());
}

#[test]
fn a_checkout_not_there_at_start_is_applied_when_git_sync_makes_it() {
    let desk = Desk::new();
    std::fs::create_dir_all(desk.path().join("git")).unwrap();
    let file = desk.path().join("git/current/plugins.yaml");
    let sidecar = run(&desk, &file, &["--drift-interval", "1h"]);
    eventually(&sidecar, "the missing file is told", || {
        status(&desk)["invalid"].is_object()
    });

    // git-sync's first sync: a worktree, then the link to it.
    let revision = desk.path().join("git/rev-1");
    std::fs::create_dir_all(&revision).unwrap();
    std::fs::write(revision.join("plugins.yaml"), desired(&desk, V1)).unwrap();
    std::os::unix::fs::symlink("rev-1", desk.path().join("git/current")).unwrap();
    eventually(&sidecar, "the first versions run", || {
        running(&desk) == ["ma_cross 1.0.0", "risk_model 1.0.0"]
    });
    assert!(stop(sidecar).status.success());
}

#[test]
fn a_typo_undone_is_valid_again_with_nothing_to_apply() {
    let (desk, file, sidecar) = at_v1(&["--drift-interval", "1h"]);
    eventually(&sidecar, "the first reconcile is told", || {
        reconciles(&desk) == 1
    });
    std::fs::write(
        &file,
        desired(&desk, &V1.replace("version: 1.0.0", "verison: 1.0.0")),
    )
    .unwrap();
    eventually(&sidecar, "the typo is told", || {
        status(&desk)["invalid"].is_object()
    });
    std::fs::write(&file, desired(&desk, V1)).unwrap();
    eventually(&sidecar, "the file is valid again", || {
        status(&desk)["invalid"].is_null()
    });
    assert_eq!(reconciles(&desk), 1, "what it asks did not change");
    assert!(stop(sidecar).status.success());
}

#[test]
fn one_sidecar_per_state_directory_made_private() {
    let (desk, file, first) = at_v1(&["--drift-interval", "1h"]);
    let mode = std::fs::metadata(desk.path().join("state"))
        .unwrap()
        .permissions();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
        0o700
    );
    let second = run(&desk, &file, &["--drift-interval", "1h"]).finish();
    assert_eq!(second.status.code(), Some(1), "{}", second.stderr);
    let pid = status(&desk)["pid"].to_string();
    assert!(
        second.stderr.contains(&format!(
            "error: another `plugsync run` (pid {pid}) uses the state directory"
        )),
        "{}",
        second.stderr
    );
    assert!(stop(first).status.success());
}

#[test]
fn committed_only_applies_a_commit_and_never_an_edit_not_committed() {
    let desk = Desk::new();
    let dir = desk.path().join("repo");
    let repo = gix::init(&dir).unwrap();
    let file = dir.join("plugins.yaml");
    commit(&repo, "plugins.yaml", &desired(&desk, V1), "desk-a: v1");
    std::fs::write(&file, desired(&desk, V1)).unwrap();
    let sidecar = run(
        &desk,
        &file,
        &["--drift-interval", "1h", "--committed-only"],
    );
    eventually(&sidecar, "the first versions run", || {
        running(&desk) == ["ma_cross 1.0.0", "risk_model 1.0.0"]
    });

    // Edited by hand on the machine, not committed: told, not applied.
    std::fs::write(&file, desired(&desk, V1_1)).unwrap();
    eventually(&sidecar, "the edit is refused", || {
        status(&desk)["invalid"]["report"]
            .as_str()
            .is_some_and(|r| r.contains("it differs from the commit checked out"))
    });
    assert_eq!(running(&desk), ["ma_cross 1.0.0", "risk_model 1.0.0"]);

    // Committed: applied.
    commit(
        &repo,
        "plugins.yaml",
        &desired(&desk, V1_1),
        "risk_model 1.1.0",
    );
    std::fs::write(&file, desired(&desk, V1_1)).unwrap();
    eventually(&sidecar, "risk_model 1.1.0 is committed", || {
        running(&desk) == ["ma_cross 1.0.0", "risk_model 1.1.0"]
    });
    assert!(stop(sidecar).status.success());
}
