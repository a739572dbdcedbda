//! `plugsync run` through the binary, against a real reference host running the real example
//! plugins: plugins.yaml edited in place, by rename-on-save and by a symlink swap; an invalid
//! edit never applied; drift healed or only reported; a hold left alone; SIGTERM mid-step and
//! the next start finishing the job.
//!
//! Nothing here sleeps for a set time to let something happen: each test waits for the fact
//! itself (the host's status, the sidecar's `sidecar.json` counters, a log line), polling.

mod support;

use std::path::PathBuf;

use support::desk::*;
use support::sidecar::*;
use support::*;

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
    let desk = Desk::new();
    let file = desk.path().join("plugins.yaml");
    std::fs::write(&file, desired(&desk, V1)).unwrap();
    let sidecar = run(&desk, &file, &["--drift-interval", "1h"]);
    eventually(&sidecar, "the first versions run", || {
        running(&desk) == ["ma_cross 1.0.0", "risk_model 1.0.0"]
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

    std::fs::write(&file, desired(&desk, V1_1)).unwrap();
    eventually(&sidecar, "risk_model 1.1.0 is committed", || {
        running(&desk) == ["ma_cross 1.0.0", "risk_model 1.1.0"]
    });
    assert!(status(&desk)["invalid"].is_null());
    assert!(stop(sidecar).status.success());
}

#[test]
fn drift_made_by_hand_is_healed() {
    let desk = Desk::new();
    let file = desk.path().join("plugins.yaml");
    std::fs::write(&file, desired(&desk, V1)).unwrap();
    let sidecar = run(&desk, &file, &["--drift-interval", "200ms"]);
    eventually(&sidecar, "the first versions run", || {
        running(&desk) == ["ma_cross 1.0.0", "risk_model 1.0.0"]
    });

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
    assert!(stop(sidecar).status.success());
}

#[test]
fn sigterm_mid_soak_exits_0_and_the_next_start_finishes_the_step() {
    let desk = Desk::new();
    let file = desk.path().join("plugins.yaml");
    std::fs::write(&file, desired(&desk, V1)).unwrap();
    let sidecar = run(&desk, &file, &["--drift-interval", "1h"]);
    eventually(&sidecar, "the first versions run", || {
        running(&desk) == ["ma_cross 1.0.0", "risk_model 1.0.0"]
    });
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
