//! The whole pure planner, `plan::plan`: plugins.yaml, a registry index and a host's status (as
//! the host answers it) in, the steps an operator reads and the apply engine runs out — with
//! their configs, reasons, waits, refusals and warnings. Data-driven: each case is an index, a
//! plugins.yaml, what runs and how the host stands, and the plan as a snapshot
//! (`UPDATE_EXPECT=1 cargo test --test plan_assemble`, review the diff).

mod plan_support;

use expect_test::{Expect, expect};
use plan_support::{artifact, index, set};
use plugsync::plan::{self, Plan, PlanInput, SearchLimits};
use plugsync::resolve::{self, Update};
use plugsync_host::{Digest, RuntimeStatus};
use plugsync_plugin::canonical_json;
use serde_json::{Value, json};

/// One plugin the host runs.
struct Running<'a> {
    id: &'a str,
    version: &'a str,
    config: Value,
    /// The tool of its applied record's origin.
    by: &'a str,
}

fn running<'a>(id: &'a str, version: &'a str) -> Running<'a> {
    Running {
        id,
        version,
        config: json!({}),
        by: "plugsync-reconcile",
    }
}

fn hash(config: &Value) -> Digest {
    Digest::of(&canonical_json(config).unwrap())
}

/// The status a host running `plugins` answers (from the index's metadata), changed by
/// `adjust` (a lease, restraints, a pending step, resident libraries…).
fn status(
    index: &std::collections::BTreeMap<String, plugsync::registry::IndexFile>,
    plugins: &[Running<'_>],
    adjust: impl FnOnce(&mut Value),
) -> RuntimeStatus {
    let plugins: Vec<Value> = plugins
        .iter()
        .map(|p| {
            let entry = index[p.id]
                .versions
                .iter()
                .find(|e| e.version == p.version)
                .unwrap();
            let metadata = plan::metadata_of(p.id, entry).unwrap();
            let version = json!({"version": p.version, "digest": artifact(p.id, p.version)});
            json!({
                "plugin": p.id, "version": version, "config": p.config,
                "config_hash": hash(&p.config), "state_schema": 1, "metadata": metadata,
                "health": {"status": "ok"}, "fault": null,
                "counters": {"calls": 0, "errors": 0, "panics": 0}, "last_call_at": null,
                "pending": null, "last_step": null, "last_rollback": null, "busy": false,
                "stuck": null, "fail_closed": false,
                "applied": {
                    "operation": "install", "step_id": null, "version": version,
                    "config_hash": hash(&p.config), "origin": {"tool": p.by}, "at": 0,
                    "fresh_state": false,
                },
            })
        })
        .collect();
    let mut status = json!({
        "abi": 1, "framework": "0.1.0", "now": 0, "plugins": plugins, "resident": [],
        "resident_cap": 8, "live_instances": 0, "recovered": null, "persist_error": null,
        "lease": {"holder": null, "last_epoch": 0, "breaks": []},
        "restraints": {"freeze": null, "holds": {}, "failed": [], "halts": {}, "forced": []},
        "unloaded": [],
    });
    adjust(&mut status);
    serde_json::from_value(status).unwrap()
}

/// The plan, one line per step (with the config it sends and its reasons), then the waves,
/// waits, refusals and warnings — or the error.
fn render(plan: &Result<Plan, plan::PlanError>) -> String {
    let plan = match plan {
        Ok(plan) => plan,
        Err(error) => return format!("error: {error}\n"),
    };
    let mut out = String::new();
    for change in &plan.changes {
        out.push_str(&format!(
            "{} {:?} steps {:?}",
            change.plugin, change.kind, change.steps
        ));
        if let Some(config) = &change.config {
            out.push_str(&format!("; config {} → {}", config.running, config.desired));
        }
        if let Some(kept) = &change.kept {
            out.push_str(&format!("; kept {}", serde_json::to_string(kept).unwrap()));
        }
        out.push('\n');
    }
    for lift in &plan.lifts {
        out.push_str(&format!("lift {}\n", serde_json::to_string(lift).unwrap()));
    }
    for step in &plan.steps {
        let version = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
        out.push_str(&format!(
            "{}. {} {:?} {} → {}; config {}; {}\n",
            step.number,
            step.plugin,
            step.action,
            version(step.from.as_ref().map(|f| f.version.to_string())),
            version(step.to.as_ref().map(|t| t.at.version.to_string())),
            step.config
                .as_ref()
                .map_or("(migrated by the host)".to_owned(), Value::to_string),
            serde_json::to_string(&step.reasons).unwrap(),
        ));
    }
    out.push_str(&format!("waves {:?}\n", plan.waves));
    for wait in &plan.waits {
        out.push_str(&format!("wait {}\n", serde_json::to_string(wait).unwrap()));
    }
    for refusal in &plan.refusals {
        out.push_str(&format!(
            "refused {}\n",
            serde_json::to_string(refusal).unwrap()
        ));
    }
    for warning in &plan.warnings {
        out.push_str(&format!(
            "warning {}\n",
            serde_json::to_string(warning).unwrap()
        ));
    }
    out
}

/// A case: the index, plugins.yaml's `spec` body, what runs, the host's adjustments, the time.
fn check(
    lines: &str,
    spec: &str,
    plugins: &[Running<'_>],
    adjust: impl FnOnce(&mut Value),
    expected: Expect,
) {
    expected.assert_eq(&render(&plan_of(lines, spec, plugins, adjust)));
}

/// The plan of a case (see [`check`]).
fn plan_of(
    lines: &str,
    spec: &str,
    plugins: &[Running<'_>],
    adjust: impl FnOnce(&mut Value),
) -> Result<Plan, plan::PlanError> {
    let index = index(lines);
    let set = set(spec);
    let resolution = resolve::resolve(&set, &index, None, &Update::None).unwrap();
    let status = status(&index, plugins, adjust);
    let input = PlanInput {
        set: &set,
        resolution: &resolution,
        index: &index,
        running: &status,
        of_record: &set.spec.plugins,
        now: "2026-12-05T17:00:00Z".parse().unwrap(),
        limits: SearchLimits::default(),
    };
    plan::plan(&input)
}

const MA_CROSS: &str = "
    ma_cross 1.0.0
    ma_cross 2.0.0; from ^1
    ma_cross 2.1.0; from >=2.0, <3
";

#[test]
fn only_the_last_step_of_a_plugin_sends_the_desired_config() {
    check(
        MA_CROSS,
        "  plugins:\n    - {id: ma_cross, version: 2.1.0, config: {fast_period: 5}}\n",
        &[running("ma_cross", "1.0.0")],
        |_| {},
        expect![[r#"
            ma_cross Upgrade steps [1, 2]; config {} → {"fast_period":5}
            1. ma_cross Upgrade 1.0.0 → 2.0.0; config (migrated by the host); [{"kind":"toward","target":"2.1.0"}]
            2. ma_cross Upgrade 2.0.0 → 2.1.0; config {"fast_period":5}; [{"kind":"pinned"}]
            waves [[1], [2]]
        "#]],
    );
}

#[test]
fn a_config_equal_to_the_running_one_in_another_key_order_is_no_change() {
    let mut ma_cross = running("ma_cross", "1.0.0");
    ma_cross.config = json!({"a": 1, "b": {"c": 2, "d": 3}});
    check(
        MA_CROSS,
        "  plugins:\n    - {id: ma_cross, version: 1.0.0, config: {b: {d: 3, c: 2}, a: 1}}\n",
        &[ma_cross],
        |_| {},
        expect![[r#"
            ma_cross Unchanged steps []
            waves []
        "#]],
    );
}

#[test]
fn an_install_without_a_config_gets_an_empty_one() {
    check(
        MA_CROSS,
        "  plugins:\n    - {id: ma_cross, version: 2.0.0}\n",
        &[],
        |_| {},
        expect![[r#"
            ma_cross Install steps [1]
            1. ma_cross Install - → 2.0.0; config {}; [{"kind":"pinned"}]
            waves [[1]]
        "#]],
    );
}

#[test]
fn a_plugin_not_named_is_kept_unless_prune_and_then_removed() {
    let lines = format!("{MA_CROSS}    risk_model 1.0.0\n");
    check(
        &lines,
        "  plugins:\n    - {id: ma_cross, version: 1.0.0}\n",
        &[running("ma_cross", "1.0.0"), running("risk_model", "1.0.0")],
        |_| {},
        expect![[r#"
            ma_cross Unchanged steps []
            risk_model Unmanaged steps []
            waves []
        "#]],
    );
    check(
        &lines,
        "  policy: {prune: true}\n  plugins:\n    - {id: ma_cross, version: 1.0.0}\n",
        &[running("ma_cross", "1.0.0"), running("risk_model", "1.0.0")],
        |_| {},
        expect![[r#"
            ma_cross Unchanged steps []
            risk_model Remove steps [1]
            1. risk_model Remove 1.0.0 → -; config (migrated by the host); [{"kind":"prune"}]
            waves [[1]]
        "#]],
    );
}

#[test]
fn a_path_past_the_resident_cap_is_warned_of() {
    // 1.0.0 resident, 2.0.0 and 2.1.0 loaded by the plan: three versions mapped.
    let cases = [
        (
            2,
            expect![[r#"
                ma_cross Upgrade steps [1, 2]
                1. ma_cross Upgrade 1.0.0 → 2.0.0; config (migrated by the host); [{"kind":"toward","target":"2.1.0"}]
                2. ma_cross Upgrade 2.0.0 → 2.1.0; config (migrated by the host); [{"kind":"pinned"}]
                waves [[1], [2]]
                warning {"kind":"residentCap","plugin":"ma_cross","resident":3,"cap":2}
            "#]],
        ),
        // As many as the cap: within it.
        (
            3,
            expect![[r#"
            ma_cross Upgrade steps [1, 2]
            1. ma_cross Upgrade 1.0.0 → 2.0.0; config (migrated by the host); [{"kind":"toward","target":"2.1.0"}]
            2. ma_cross Upgrade 2.0.0 → 2.1.0; config (migrated by the host); [{"kind":"pinned"}]
            waves [[1], [2]]
        "#]],
        ),
    ];
    for (cap, expected) in cases {
        check(
            MA_CROSS,
            "  plugins:\n    - {id: ma_cross, version: 2.1.0}\n",
            &[running("ma_cross", "1.0.0")],
            |status| {
                status["resident_cap"] = json!(cap);
                status["resident"] = json!([{
                    "plugin": "ma_cross",
                    "version": {"version": "1.0.0", "digest": artifact("ma_cross", "1.0.0")},
                    "path": "store/x/libma_cross.so",
                    "live_instances": 1,
                }]);
            },
            expected,
        );
    }
}

#[test]
fn what_would_make_the_steps_wait_or_be_refused_is_listed() {
    check(
        MA_CROSS,
        "  policy:
    windows:
      - {name: weekend, deny: true, days: [Sat, Sun], from: \"00:00\", to: \"24:00\", timezone: UTC}
  plugins:
    - {id: ma_cross, version: 2.0.0, strategy: {kind: when-idle, idleFor: 5m}}
",
        &[running("ma_cross", "1.0.0")],
        |status| {
            let because = json!({"reason": "audit", "by": "ops", "at": 0});
            status["lease"]["holder"] =
                json!({"owner": "sidecar-b", "epoch": 3, "expires_at": 0, "acquired_at": 0});
            status["restraints"]["freeze"] = because;
        },
        expect![[r#"
            ma_cross Upgrade steps [1]
            1. ma_cross Upgrade 1.0.0 → 2.0.0; config (migrated by the host); [{"kind":"pinned"}]
            waves [[1]]
            wait {"kind":"window","deniedBy":["weekend"],"outside":[],"until":"2026-12-07T00:00:00Z","untilLocal":"Mon 00:00 UTC","wait":"31h"}
            wait {"kind":"lease","holder":"sidecar-b"}
            refused {"kind":"freeze","because":{"reason":"audit","by":"ops","at":0}}
        "#]],
    );
}

/// (case, the version asked, the host's holds, its failed marks, the plan)
#[test]
fn holds_and_failed_marks_keep_their_plugin_and_ones_set_under_another_entry_are_lifted() {
    let because = |entry: Option<&str>| json!({"reason": "audit", "by": "ops", "at": 0, "entry_sha256": entry});
    let mark = |version: &str, entry: Option<&str>| {
        json!({"plugin": "ma_cross", "digest": artifact("ma_cross", version),
               "version": version, "because": because(entry)})
    };
    let cases = [
        (
            "a hold set by hand keeps it",
            "2.0.0",
            json!({"ma_cross": because(None)}),
            json!([]),
            expect![[r#"
                a hold set by hand keeps it:
                ma_cross Kept steps []; kept {"wanted":{"version":"2.0.0","sha256":"51e8f6bebc5094b6bede1c90107bc4b90e54f011fc8cf16aa825248b47215d0b"},"because":{"kind":"held","because":{"reason":"audit","by":"ops","at":0}}}
                waves []
            "#]],
        ),
        (
            "a failed mark on the version asked keeps it",
            "2.0.0",
            json!({}),
            json!([mark("2.0.0", None)]),
            expect![[r#"
                a failed mark on the version asked keeps it:
                ma_cross Kept steps []; kept {"wanted":{"version":"2.0.0","sha256":"51e8f6bebc5094b6bede1c90107bc4b90e54f011fc8cf16aa825248b47215d0b"},"because":{"kind":"failed","version":"2.0.0","because":{"reason":"audit","by":"ops","at":0}}}
                waves []
            "#]],
        ),
        (
            "a hold set under another entry is lifted, and the plugin moves",
            "2.0.0",
            json!({"ma_cross": because(Some("an-older-entry"))}),
            json!([]),
            expect![[r#"
                a hold set under another entry is lifted, and the plugin moves:
                ma_cross Upgrade steps [1]
                lift {"kind":"hold","plugin":"ma_cross","because":{"reason":"audit","by":"ops","at":0,"entry_sha256":"an-older-entry"}}
                1. ma_cross Upgrade 1.0.0 → 2.0.0; config (migrated by the host); [{"kind":"pinned"}]
                waves [[1]]
            "#]],
        ),
        (
            "a failed mark on the only way there keeps it, by that version",
            "2.1.0",
            json!({}),
            json!([mark("2.0.0", None)]),
            expect![[r#"
                a failed mark on the only way there keeps it, by that version:
                ma_cross Kept steps []; kept {"wanted":{"version":"2.1.0","sha256":"8e953b0e715fef7ffea0ee0f8e05d390701030f3a7dc81f09e9e27419e1b4a89"},"because":{"kind":"failed","version":"2.0.0","because":{"reason":"audit","by":"ops","at":0}}}
                waves []
            "#]],
        ),
    ];
    for (case, version, holds, failed, expected) in cases {
        let plan = plan_of(
            MA_CROSS,
            &format!("  plugins:\n    - {{id: ma_cross, version: {version}}}\n"),
            &[running("ma_cross", "1.0.0")],
            |status| {
                status["restraints"]["holds"] = holds;
                status["restraints"]["failed"] = failed;
            },
        );
        expected.assert_eq(&format!("{case}:\n{}", render(&plan)));
    }
}

#[test]
fn a_host_running_what_is_asked_has_no_step_and_nothing_to_wait_for() {
    check(
        MA_CROSS,
        "  policy:
    windows:
      - {name: weekend, deny: true, days: [Sat, Sun], from: \"00:00\", to: \"24:00\", timezone: UTC}
  plugins:
    - {id: ma_cross, version: 1.0.0}
",
        &[running("ma_cross", "1.0.0")],
        |status| {
            status["restraints"]["freeze"] = json!({"reason": "audit", "by": "ops", "at": 0});
        },
        expect![[r#"
            ma_cross Unchanged steps []
            waves []
        "#]],
    );
}

/// A change to the host's status, as a case of a table gives it.
type Adjust<'a> = &'a dyn Fn(&mut Value);

#[test]
fn a_downgrade_a_new_config_and_a_rebuild_are_each_named_as_such() {
    let rebuilt = |status: &mut Value| {
        let digest = json!(Digest::of(b"another build"));
        status["plugins"][0]["version"]["digest"] = digest.clone();
        status["plugins"][0]["applied"]["version"]["digest"] = digest;
    };
    let cases: [(&str, &str, Running<'_>, Adjust<'_>, Expect); 3] = [
        // Pinned below what runs.
        (
            "ma_cross 1.0.0\nma_cross 2.0.0; from ^1; down >=1.0.0, <2",
            "  plugins:\n    - {id: ma_cross, version: 1.0.0}\n",
            running("ma_cross", "2.0.0"),
            &|_| {},
            expect![[r#"
                ma_cross Downgrade steps [1]
                1. ma_cross Downgrade 2.0.0 → 1.0.0; config (migrated by the host); [{"kind":"pinned"}]
                waves [[1]]
            "#]],
        ),
        // The version that runs, with another config.
        (
            MA_CROSS,
            "  plugins:\n    - {id: ma_cross, version: 1.0.0, config: {fast_period: 5}}\n",
            running("ma_cross", "1.0.0"),
            &|_| {},
            expect![[r#"
                ma_cross Reconfigure steps [1]; config {} → {"fast_period":5}
                1. ma_cross Reconfigure 1.0.0 → 1.0.0; config {"fast_period":5}; [{"kind":"config"}]
                waves [[1]]
            "#]],
        ),
        // The version that runs, from another artifact.
        (
            MA_CROSS,
            "  plugins:\n    - {id: ma_cross, version: 1.0.0}\n",
            running("ma_cross", "1.0.0"),
            &rebuilt,
            expect![[r#"
                ma_cross Reconfigure steps [1]
                1. ma_cross Reconfigure 1.0.0 → 1.0.0; config (migrated by the host); [{"kind":"rebuild"}]
                waves [[1]]
            "#]],
        ),
    ];
    for (lines, spec, runs, adjust, expected) in cases {
        check(lines, spec, &[runs], adjust, expected);
    }
}

#[test]
fn a_plugin_installed_after_what_it_needs_reads_its_needs_from_the_index_entry_it_installs() {
    // ma_cross 1.0.0 needs risk_model, 0.9.0 (listed after it) needs nothing: the install of
    // 1.0.0 waits for risk_model's although plugins.yaml names ma_cross first.
    check(
        "
            ma_cross 1.0.0; needs risk_model ^1
            ma_cross 0.9.0
            risk_model 1.0.0
        ",
        "  plugins:\n    - {id: ma_cross, version: 1.0.0}\n    - {id: risk_model, version: 1.0.0}\n",
        &[],
        |_| {},
        expect![[r#"
            ma_cross Install steps [2]
            risk_model Install steps [1]
            1. risk_model Install - → 1.0.0; config {}; [{"kind":"pinned"}]
            2. ma_cross Install - → 1.0.0; config {}; [{"kind":"pinned"},{"kind":"after","dependency":"risk_model","requirement":"^1","step":1}]
            waves [[1], [2]]
        "#]],
    );
}

#[test]
fn each_step_leaves_the_artifact_the_step_before_it_loaded_and_says_how_the_state_is_carried() {
    // 1.0.0 → 2.0.0 by 2.0.0's migrate, then 2.0.0 → 2.1.0 by the rules 2.1.0 publishes.
    let lines = "
        ma_cross 1.0.0
        ma_cross 2.0.0; from ^1
        ma_cross 2.1.0; rule ^2.0 to =2.1.0
    ";
    let plan = plan_of(
        lines,
        "  plugins:\n    - {id: ma_cross, version: 2.1.0}\n",
        &[running("ma_cross", "1.0.0")],
        |_| {},
    )
    .unwrap();
    // An artifact by the version the index publishes it for.
    let named = |at: &Option<plan::VersionAt>| match at {
        None => "-".to_owned(),
        Some(at) => ["1.0.0", "2.0.0", "2.1.0"]
            .into_iter()
            .find(|v| artifact("ma_cross", v) == at.sha256)
            .map_or(format!("{} (another artifact)", at.version), |v| {
                format!("{} ({v}'s artifact)", at.version)
            }),
    };
    let mut out = String::new();
    for step in &plan.steps {
        out.push_str(&format!(
            "{}. {} → {}; state {}\n",
            step.number,
            named(&step.from),
            named(&step.to.as_ref().map(|t| t.at.clone())),
            serde_json::to_string(&step.migration).unwrap(),
        ));
    }
    expect![[r#"
        1. 1.0.0 (1.0.0's artifact) → 2.0.0 (2.0.0's artifact); state {"by":"plugin","version":"2.0.0"}
        2. 2.0.0 (2.0.0's artifact) → 2.1.0 (2.1.0's artifact); state {"by":"rules","source":"the registry's entry of ma_cross 2.1.0","rules":[]}
    "#]].assert_eq(&out);
}

#[test]
fn a_busy_or_stuck_plugin_with_steps_is_warned_of() {
    let lines = format!("{MA_CROSS}    risk_model 1.0.0\n    risk_model 1.1.0; from ^1\n");
    check(
        &lines,
        "  plugins:
    - {id: ma_cross, version: 2.0.0}
    - {id: risk_model, version: 1.1.0}
",
        &[running("ma_cross", "1.0.0"), running("risk_model", "1.0.0")],
        |status| {
            status["plugins"][0]["busy"] = json!(true);
            status["plugins"][0]["stuck"] = json!({"seq": 7, "running_ms": 12_500});
            status["plugins"][1]["busy"] = json!(true);
        },
        expect![[r#"
            ma_cross Upgrade steps [1]
            risk_model Upgrade steps [2]
            1. ma_cross Upgrade 1.0.0 → 2.0.0; config (migrated by the host); [{"kind":"pinned"}]
            2. risk_model Upgrade 1.0.0 → 1.1.0; config (migrated by the host); [{"kind":"pinned"}]
            waves [[1], [2]]
            warning {"kind":"stuck","plugin":"ma_cross","runningMs":12500}
            warning {"kind":"busy","plugin":"risk_model"}
        "#]],
    );
    // A plugin without steps is not worth a line.
    check(
        &lines,
        "  plugins:
    - {id: ma_cross, version: 1.0.0}
    - {id: risk_model, version: 1.1.0}
",
        &[running("ma_cross", "1.0.0"), running("risk_model", "1.0.0")],
        |status| {
            status["plugins"][0]["busy"] = json!(true);
        },
        expect![[r#"
            ma_cross Unchanged steps []
            risk_model Upgrade steps [1]
            1. risk_model Upgrade 1.0.0 → 1.1.0; config (migrated by the host); [{"kind":"pinned"}]
            waves [[1]]
        "#]],
    );
}
