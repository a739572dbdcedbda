//! The fleet example (`examples/fleet/`, told in `docs/fleet.md`), through the binary: a base
//! every host group extends, a canary group a version ahead of prod. Both host files validate,
//! and planned against hosts observed as saved statuses (`--observed`) each resolves to the
//! versions its files say — before the promotion (the canary ahead), after it (prod follows,
//! the canary is left alone) and after backing it out.

mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use expect_test::expect;
use plugsync_host::{Asked, InstallTerms, Origin, Runtime};
use serde_json::{Value, json};
use support::desk::{SATURDAY, normalise_host_times, publish};
use support::process::{Finished, plugsync};
use support::*;

/// The host files, from the example's root.
const HOSTS: [&str; 2] = ["hosts/canary/plugins.yaml", "hosts/prod/plugins.yaml"];

/// The example's files, from its root.
const FILES: [&str; 3] = [
    "base/plugins.yaml",
    "hosts/canary/plugins.yaml",
    "hosts/prod/plugins.yaml",
];

/// The registry URL the example's base names.
const REGISTRY_URL: &str = "url: https://registry.example.com/plugins";

fn example() -> PathBuf {
    Path::new(WORKSPACE).join("examples/fleet")
}

#[test]
fn both_host_files_are_valid_and_extend_the_base() {
    for host in HOSTS {
        let file = format!("examples/fleet/{host}");
        let out = Command::new(env!("CARGO_BIN_EXE_plugsync"))
            .args(["validate", "-f", &file])
            .current_dir(WORKSPACE)
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let group = host.split('/').nth(1).unwrap();
        assert_eq!(
            stdout,
            format!(
                "{file} extends examples/fleet/hosts/{group}/../../base/plugins.yaml: valid \
                 (2 plugins)\n"
            )
        );
    }
    // Editors check them as they are typed.
    for file in FILES {
        let path = example().join(file);
        let text = std::fs::read_to_string(&path).unwrap();
        let schema = text
            .lines()
            .find_map(|l| l.strip_prefix("# yaml-language-server: $schema="))
            .unwrap_or_else(|| panic!("{file} names no schema"));
        let schema = path.parent().unwrap().join(schema);
        assert!(
            schema.ends_with("plugins.schema.json") && schema.exists(),
            "{file}: `{}` is not the schema",
            schema.display()
        );
    }
}

/// The example copied under `dir` (each file edited by `edit`), its registry pointed at the
/// registry directory `dir/registry`, where the versions it names are published.
fn fleet_in(dir: &Path, edit: impl Fn(&str, String) -> String) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for name in [RISK_MODEL_1_0_0, RISK_MODEL_1_1_0, MA_CROSS_2_0_0] {
        publish(dir, name, "stable");
    }
    let root = dir.join("fleet");
    let url = format!("url: {}", dir.join("registry").display());
    for file in FILES {
        let text = std::fs::read_to_string(example().join(file)).unwrap();
        assert!(
            file != "base/plugins.yaml" || text.contains(REGISTRY_URL),
            "the base no longer names `{REGISTRY_URL}`"
        );
        let text = edit(file, text.replace(REGISTRY_URL, &url));
        let path = root.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    root
}

/// A host running risk_model at `risk_model` (a library name) and ma_cross 2.0.0 with the
/// fleet's configs, installed by the sidecar, saved as `plugsync status --output json` would
/// save it, in `dir/NAME.json`.
fn observed(dir: &Path, name: &str, risk_model: &str) -> PathBuf {
    let (_store, runtime) = runtime();
    install_as_sidecar(&runtime, risk_model, json!({"max_position": 100}));
    install_as_sidecar(
        &runtime,
        MA_CROSS_2_0_0,
        json!({"fast_period": 5, "slow_period": 20, "signal_threshold": 0.01}),
    );
    let running = plugsync_host::control::api::RunningState::of(&runtime, false, false).unwrap();
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_string_pretty(&running).unwrap()).unwrap();
    path
}

fn install_as_sidecar(runtime: &Runtime, name: &str, config: Value) {
    let asked = Asked {
        origin: Some(Origin {
            tool: "plugsync-run".to_owned(),
            ..Origin::default()
        }),
        ..Asked::default()
    };
    runtime
        .install_asked(
            &stage(runtime, name),
            config,
            &InstallTerms::default(),
            &asked,
        )
        .unwrap_or_else(|e| panic!("installing {name}: {e}"));
}

/// `plugsync reconcile --dry-run -f FILE --observed STATUS --no-preview ARGS` on a Saturday.
fn dry_run(dir: &Path, file: &Path, status: &Path, args: &[&str]) -> Finished {
    let mut all: Vec<&OsStr> = vec![
        "reconcile".as_ref(),
        "--dry-run".as_ref(),
        "--no-preview".as_ref(),
        "-f".as_ref(),
        file.as_os_str(),
        "--observed".as_ref(),
        status.as_os_str(),
    ];
    all.extend(args.iter().map(OsStr::new));
    let state = dir.join("state");
    plugsync(
        &all,
        &[
            ("PLUGSYNC_NOW", OsStr::new(SATURDAY)),
            ("PLUGSYNC_STATE_DIR", state.as_os_str()),
            ("NO_COLOR", OsStr::new("1")),
        ],
    )
}

/// Each plugin of the plan: `plugin: running → desired (kind)`.
fn resolved(dir: &Path, file: &Path, status: &Path, exit: i32) -> Vec<String> {
    let finished = dry_run(dir, file, status, &["--output", "json"]);
    assert_eq!(
        finished.status.code(),
        Some(exit),
        "{}: {}{}",
        file.display(),
        finished.stdout,
        finished.stderr
    );
    let plan: Value = serde_json::from_str(&finished.stdout).unwrap();
    let version = |v: &Value| v["version"].as_str().unwrap_or("-").to_owned();
    (plan["changes"].as_array().unwrap().iter())
        .map(|change| {
            format!(
                "{}: {} → {} ({})",
                change["plugin"].as_str().unwrap(),
                version(&change["from"]),
                version(&change["to"]),
                change["kind"].as_str().unwrap()
            )
        })
        .collect()
}

#[test]
fn a_rollout_reaches_the_canary_first_then_prod_and_backs_out_by_a_revert() {
    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let before = observed(dir, "at-1.0.0", RISK_MODEL_1_0_0);
    let after = observed(dir, "at-1.1.0", RISK_MODEL_1_1_0);

    // The example as it is: the canary's commit pinned risk_model 1.1.0 there; prod is on the
    // base's 1.0.0.
    let fleet = fleet_in(dir, |_, text| text);
    let (canary, prod) = (fleet.join(HOSTS[0]), fleet.join(HOSTS[1]));
    assert_eq!(
        resolved(dir, &canary, &before, 2),
        [
            "risk_model: 1.0.0 → 1.1.0 (upgrade)",
            "ma_cross: 2.0.0 → 2.0.0 (unchanged)"
        ]
    );
    assert_eq!(
        resolved(dir, &prod, &before, 0),
        [
            "risk_model: 1.0.0 → 1.0.0 (unchanged)",
            "ma_cross: 2.0.0 → 2.0.0 (unchanged)"
        ]
    );
    // What the canary's sidecar is about to do, as an operator sees it.
    let shown = dry_run(dir, &canary, &before, &[]);
    assert_eq!(shown.status.code(), Some(2), "{}", shown.stderr);
    expect![[r#"
        Host [ROOT]/at-1.0.0.json (API 1.1, ABI 1, framework 0.1.0) — observed [TIME]
        Desired [ROOT]/fleet/hosts/canary/plugins.yaml (no plugins.lock: versions resolved afresh)

          ~ risk_model  1.0.0 → 1.1.0  pinned                        1 step
            ma_cross    2.0.0          unchanged

        Set:
          --- running
          +++ desired
          @@ -1,2 +1,2 @@
          -risk_model 1.0.0
          +risk_model 1.1.0
           ma_cross 2.0.0

        Order (each intermediate set satisfies every dependency):

           1. risk_model  1.0.0 → 1.1.0      minor  migrate   pinned
               switch: immediate; verify: health, soak 2m, max error rate 0.1 %

        Plan: 0 to install, 1 to upgrade, 0 to downgrade, 0 to reconfigure, 0 to remove (1 step), 1 unchanged. Plan id [ID].
    "#]]
    .assert_eq(&normalise_host_times(&normalise(&shown.stdout, dir)));

    // The promotion: the pin moves into the base, the canary's own pin goes. The canary (now
    // at 1.1.0) has nothing to do; prod moves, with its own, longer soak.
    let promoted = fleet_in(&dir.join("promoted"), |file, text| match file {
        "base/plugins.yaml" => {
            let pinned = text.replace("      version: 1.0.0\n", "      version: 1.1.0\n");
            assert_ne!(pinned, text, "the base no longer pins risk_model 1.0.0");
            pinned
        }
        "hosts/canary/plugins.yaml" => {
            let at = text
                .find("  plugins:\n")
                .expect("the canary overlays plugins");
            text[..at].to_owned()
        }
        _ => text,
    });
    let (canary, prod) = (promoted.join(HOSTS[0]), promoted.join(HOSTS[1]));
    assert_eq!(
        resolved(dir, &canary, &after, 0),
        [
            "risk_model: 1.1.0 → 1.1.0 (unchanged)",
            "ma_cross: 2.0.0 → 2.0.0 (unchanged)"
        ]
    );
    assert_eq!(
        resolved(dir, &prod, &before, 2),
        [
            "risk_model: 1.0.0 → 1.1.0 (upgrade)",
            "ma_cross: 2.0.0 → 2.0.0 (unchanged)"
        ]
    );
    let prod_plan = dry_run(dir, &prod, &before, &[]);
    assert!(
        prod_plan
            .stdout
            .contains("verify: health, soak 10m, max error rate 0.1 %"),
        "{}",
        prod_plan.stdout
    );

    // Backing out is a revert of the canary's commit: the canary goes back to the base's
    // 1.0.0.
    let reverted = fleet_in(&dir.join("reverted"), |file, text| match file {
        "hosts/canary/plugins.yaml" => {
            let at = text
                .find("  plugins:\n")
                .expect("the canary overlays plugins");
            text[..at].to_owned()
        }
        _ => text,
    });
    assert_eq!(
        resolved(dir, &reverted.join(HOSTS[0]), &after, 2),
        [
            "risk_model: 1.1.0 → 1.0.0 (downgrade)",
            "ma_cross: 2.0.0 → 2.0.0 (unchanged)"
        ]
    );
}
