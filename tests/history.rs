//! `plugsync history` through the binary: steps applied by `plugsync reconcile` against a real
//! reference host running the real example plugins, from a plugins.yaml outside any repository,
//! then committed in a git repository the test makes with gix (a machine with only the Rust
//! toolchain has no `git`), then edited and not committed. Each step's line names its commit
//! (checked against the ids gix gave), the dirty flag, who asked, the check that failed.
//!
//! Snapshots normalise what varies: times (`[TIME]`), durations (`[TOOK]`), plan ids
//! (`[SHORT]`), runs of spaces (the columns' widths follow the durations); the commits are
//! replaced by their names (`[C1]`), so a snapshot that matches proves the ids. Refresh with
//! `UPDATE_EXPECT=1 cargo test --test history`; the schema with `PLUGSYNC_BLESS=1`.

mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};

use expect_test::expect;
use serde_json::Value;
use support::desk::*;
use support::process::{Finished, plugsync};
use support::*;

/// risk_model 1.0.0 and ma_cross 2.0.0, where the faulty ma_cross 2.0.2 migrates from.
const START: &str = "  plugins:
    - {id: risk_model, version: 1.0.0, config: {max_position: 10}}
    - id: ma_cross
      version: 2.0.0
      config: {fast_period: 2, slow_period: 4, order_qty: 1}
";

/// `START` with risk_model at `risk` (soaked briefly) and ma_cross at `ma_cross`.
fn desired(risk: &str, ma_cross: &str) -> String {
    format!(
        "  plugins:
    - id: risk_model
      version: {risk}
      config: {{max_position: 10}}
      verify: {{soak: {{duration: 300ms}}}}
    - id: ma_cross
      version: {ma_cross}
      config: {{fast_period: 2, slow_period: 4, order_qty: 1}}
"
    )
}

/// A commit in the desk's repository: `file` as it is on disk, over HEAD's tree; its id.
fn commit(repo: &gix::Repository, file: &str, message: &str) -> String {
    let workdir = repo.workdir().expect("a work tree");
    let bytes = std::fs::read(workdir.join(file)).unwrap();
    support::git::commit(repo, file, &bytes, message)
}

/// `plugsync reconcile` on the desk's plugins.yaml, on a Saturday (no window applies).
fn reconcile(desk: &Desk, args: &[&str]) -> Finished {
    desk.reconcile_of(
        &desk.path().join("plugins.yaml"),
        &[("PLUGSYNC_NOW", SATURDAY)],
        args,
    )
}

/// `plugsync history --state-dir STATE ARGS` with these environment variables.
fn history(state: &Path, args: &[&str], env: &[(&str, &str)]) -> Finished {
    let mut all: Vec<&OsStr> = vec!["history".as_ref(), "--state-dir".as_ref(), state.as_ref()];
    all.extend(args.iter().map(OsStr::new));
    let env: Vec<(&str, &OsStr)> = env.iter().map(|(k, v)| (*k, OsStr::new(*v))).collect();
    plugsync(&all, &env)
}

/// `history ARGS --output json`, which must succeed: its entries.
fn history_json(state: &Path, args: &[&str], env: &[(&str, &str)]) -> Vec<Value> {
    let mut all = args.to_vec();
    all.extend(["--output", "json"]);
    let finished = history(state, &all, env);
    assert!(finished.status.success(), "{}", finished.stderr);
    serde_json::from_str(&finished.stdout).unwrap()
}

/// Durations (`350ms`, `1.2s`, `2m05s`) become `[TOOK]`, runs of spaces two spaces.
fn without_durations(text: &str) -> String {
    let took = |word: &str| {
        let digits = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_digit() || c == '.');
        word.strip_suffix("ms").is_some_and(digits)
            || word.strip_suffix('s').is_some_and(|w| {
                digits(w)
                    || w.split_once('m')
                        .is_some_and(|(m, s)| digits(m) && digits(s))
            })
    };
    let mut out = String::new();
    for line in text.lines() {
        let words: Vec<&str> = line
            .split(' ')
            .map(|w| if took(w) { "[TOOK]" } else { w })
            .collect();
        let mut line = words.join(" ");
        while line.contains("   ") {
            line = line.replace("   ", "  ");
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The state directory the desk's reconciles journal in.
fn state(desk: &Desk) -> PathBuf {
    desk.path().join("state")
}

#[test]
fn each_step_is_told_with_its_commit_dirty_flag_outcome_and_who_asked() {
    let desk = Desk::new();
    publish(desk.path(), FAULT_MIGRATE, "stable");
    let succeeded = |finished: Finished| {
        assert!(finished.status.success(), "{}", finished.stderr);
    };

    // 1. A plugins.yaml in no repository: two installs, by the `default` client.
    desk.desire(START);
    succeeded(reconcile(&desk, &[]));
    desk.trade();

    // 2. Committed: risk_model to 1.1.0, by `alice`, forced with a reason.
    let repo = gix::init(desk.path()).unwrap();
    desk.desire(&desired("1.1.0", "2.0.0"));
    let c1 = commit(&repo, "plugins.yaml", "risk_model 1.1.0");
    let alice = desk.path().join("alice.token");
    succeeded(reconcile(
        &desk,
        &[
            "--token-file",
            alice.to_str().unwrap(),
            "--force",
            "--reason",
            "hotfix: ES limits",
        ],
    ));

    // 3. Edited, not committed: a ma_cross whose migration panics, stopped in preflight.
    desk.desire(&desired("1.1.0", "2.0.2"));
    let failed = reconcile(&desk, &[]);
    assert_eq!(failed.status.code(), Some(1), "{}", failed.stderr);

    // 4. Committed again: risk_model to 2.0.0, clean.
    desk.desire(&desired("2.0.0", "2.0.0"));
    let c2 = commit(&repo, "plugins.yaml", "risk_model 2.0.0");
    succeeded(reconcile(&desk, &[]));

    let shown = history(&state(&desk), &[], &[]);
    assert!(shown.status.success(), "{}", shown.stderr);
    let text = shown
        .stdout
        .replace(&c1[..12], "[C1]")
        .replace(&c2[..12], "[C2]");
    let text = without_durations(&without_timestamps(&normalise(&text, desk.path())));
    expect![[r#"
        WHEN  PLUGIN  CHANGE  OUTCOME  TOOK  BY  COMMIT  PLAN
        [TIME]  risk_model  1.1.0 → 2.0.0  done  [TOOK]  default  [C2]  [SHORT]
        [TIME]  ma_cross  2.0.0 → 2.0.2  stopped  [TOOK]  default  [C1]+dirty  [SHORT]
          ✗ preflight: migrating `ma_cross` 2.0.0 -> 2.0.2 (step 1 of 1) failed in the preview process: plugin `ma_cross` 2.0.2 failed in `migrate` (panic caught): plugin panicked: migration bug: cannot migrate 2.0.0 -> 2.0.2 (fault injected by the ma_cross_fault_migrate fixture)
        [TIME]  risk_model  1.0.0 → 1.1.0  done  [TOOK]  alice  [C1]  [SHORT]
          forced: hotfix: ES limits
        [TIME]  ma_cross  install 2.0.0  done  [TOOK]  default  not in git  [SHORT]
        [TIME]  risk_model  install 1.0.0  done  [TOOK]  default  not in git  [SHORT]
    "#]]
    .assert_eq(&text);

    // The same as data: the full commit ids, the dirty flags, the digests.
    let entries = history_json(&state(&desk), &[], &[]);
    let field = |key: &str| -> Vec<Value> { entries.iter().map(|e| e[key].clone()).collect() };
    assert_eq!(
        field("commit"),
        [&c2, &c1, &c1]
            .map(|c| Value::from(c.as_str()))
            .into_iter()
            .chain([Value::Null, Value::Null])
            .collect::<Vec<_>>()
    );
    assert_eq!(
        field("dirty"),
        [
            false.into(),
            true.into(),
            false.into(),
            Value::Null,
            Value::Null
        ]
    );
    assert_eq!(
        field("outcome"),
        ["done", "stopped", "done", "done", "done"].map(Value::from)
    );
    assert_eq!(
        field("client"),
        ["default", "default", "alice", "default", "default"].map(Value::from)
    );
    assert_eq!(entries[1]["check"], "preflight");
    assert_eq!(entries[2]["forced"], "hotfix: ES limits");
    assert_eq!(entries[4]["provenance"][0]["git"]["kind"], "outside");
    let git = &entries[1]["provenance"][0]["git"];
    assert_eq!(
        (&git["kind"], &git["path"], &git["state"]),
        (
            &"repository".into(),
            &"plugins.yaml".into(),
            &"modified".into()
        ),
        "{git}"
    );
    assert_eq!(
        entries[0]["to"]["sha256"],
        digest_of(RISK_MODEL_2_0_0).to_string()
    );
    assert_eq!(
        entries[0]["from"]["sha256"],
        digest_of(RISK_MODEL_1_1_0).to_string()
    );
    for entry in &entries {
        let desired = entry["desiredSha256"].as_str().unwrap_or_default();
        assert_eq!(desired.len(), 64, "{entry}");
        assert!(
            entry["planId"]
                .as_str()
                .unwrap()
                .starts_with(entry["stepId"].as_str().unwrap().split('.').next().unwrap())
        );
    }
    // A step that soaked says how long; a stopped one never soaked.
    assert!(
        entries[0]["soakMs"].as_u64().unwrap() >= 300,
        "{}",
        entries[0]
    );
    assert_eq!(entries[1]["soakMs"], Value::Null);
    check_schema(&entries);

    // One plugin's steps.
    let ma_cross = history_json(&state(&desk), &["ma_cross"], &[]);
    let steps: Vec<(&str, &str)> = (ma_cross.iter())
        .map(|e| {
            (
                e["plugin"].as_str().unwrap(),
                e["outcome"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(steps, [("ma_cross", "stopped"), ("ma_cross", "done")]);

    // Since a time: the step started then and those after it.
    let since = entries[2]["startedAt"].as_str().unwrap();
    let recent = history_json(&state(&desk), &["--since", since], &[]);
    assert_eq!(recent, entries[..3]);

    // Since a while ago, from `PLUGSYNC_NOW`: an hour after the last step.
    let last: jiff::Timestamp = entries[0]["endedAt"].as_str().unwrap().parse().unwrap();
    let later = (last + jiff::SignedDuration::from_hours(1)).to_string();
    let now = [("PLUGSYNC_NOW", later.as_str())];
    assert_eq!(
        history_json(&state(&desk), &["--since", "2h"], &now),
        entries
    );
    let none = history(&state(&desk), &["--since", "30m"], &now);
    assert!(none.status.success(), "{}", none.stderr);
    expect![[r#"
        No steps since [TIME] in the journal `[ROOT]/state/journal.redb`.
    "#]]
    .assert_eq(&without_timestamps(&normalise(&none.stdout, desk.path())));
    let none = history(&state(&desk), &["risk_model", "--since", "30m"], &now);
    assert_eq!(
        history_json(&state(&desk), &["risk_model", "--since", "30m"], &now),
        Vec::<Value>::new()
    );
    expect![[r#"
        No steps of `risk_model` since [TIME] in the journal `[ROOT]/state/journal.redb`.
    "#]]
    .assert_eq(&without_timestamps(&normalise(&none.stdout, desk.path())));
}

#[test]
fn a_step_the_host_rolled_back_tells_the_check_its_soak_and_why() {
    let desk = Desk::new();
    publish(desk.path(), FAULT_CALL, "stable");
    desk.desire(START);
    let installed = reconcile(&desk, &[]);
    assert!(installed.status.success(), "{}", installed.stderr);
    desk.trade();
    // ma_cross 2.0.3 panics on a bar of `CRASH` in its soak: the host rolls it back.
    desk.desire(&desired("1.0.0", "2.0.3").replace(
        "order_qty: 1}\n",
        "order_qty: 1}\n      verify: {soak: {duration: 60s, maxErrorRate: 0.001}}\n",
    ));
    let running = desk.reconcile_in_background(&[("PLUGSYNC_NOW", SATURDAY)], &[]);
    wait_until("ma_cross 2.0.3 soaks", || {
        !desk.api.plugin("ma_cross")["pending"].is_null()
    });
    let crash = serde_json::json!({"bar": {"instrument": "CRASH", "close": 1.0}});
    let (status, body) = desk.api.try_post(
        "/v1/plugins/ma_cross/call",
        serde_json::json!({"input": crash}),
    );
    assert_eq!(status, 200, "{body}");
    let finished = running.finish();
    assert_eq!(finished.status.code(), Some(1), "{}", finished.stderr);

    let shown = history(&state(&desk), &["ma_cross"], &[]);
    let text = without_durations(&without_timestamps(&normalise(&shown.stdout, desk.path())));
    expect![[r#"
        WHEN  PLUGIN  CHANGE  OUTCOME  TOOK  BY  COMMIT  PLAN
        [TIME]  ma_cross  2.0.0 → 2.0.3  rolled back  [TOOK]  default  not in git  [SHORT]
          ✗ soak: rolled back by the host: the new version panicked in call #5 (plugin panicked: call on instrument CRASH (fault injected by the ma_cross_fault_call fixture)); 0 calls replayed into 2.0.0, 0 outputs differ; 2.0.0 serves, its state exact
        [TIME]  ma_cross  install 2.0.0  done  [TOOK]  default  not in git  [SHORT]
    "#]]
    .assert_eq(&text);
    let entries = history_json(&state(&desk), &["ma_cross"], &[]);
    let rolled_back = &entries[0];
    assert_eq!(
        (&rolled_back["outcome"], &rolled_back["check"]),
        (&"rolled-back".into(), &"soak".into())
    );
    // It soaked from the switch until the host rolled it back, well short of its 60 s.
    let soaked = rolled_back["soakMs"].as_u64().unwrap();
    assert!(soaked < 60_000, "{rolled_back}");
    let phases: Vec<&str> = (rolled_back["phases"].as_array().unwrap().iter())
        .map(|p| p["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases.join(" → "),
        "planned → preflighted → staged → switch-sent → soaking → rolled-back"
    );
    check_schema(&entries);
}

/// Validates the entries against `schemas/history.schema.json`.
fn check_schema(entries: &[Value]) {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(WORKSPACE).join("schemas/history.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let document = Value::Array(entries.to_vec());
    let errors: Vec<String> = validator
        .iter_errors(&document)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
}

#[test]
fn the_history_schema_in_schemas_is_the_one_the_types_give() {
    let text = plugsync::ops::schema(plugsync::ops::SchemaName::History);
    support::bless::check_blessed("schemas/history.schema.json", &text, "history");
    let printed = plugsync(&["schema", "history"], &[]);
    assert_eq!(printed.stdout, text);
}

#[test]
fn no_journal_no_steps_and_bad_since_are_said_plainly() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let empty = history(&state, &[], &[]);
    assert!(empty.status.success(), "{}", empty.stderr);
    expect![[r#"
        No history: `[ROOT]/state` holds no journal (no `plugsync reconcile` has run with this state dir).
    "#]]
    .assert_eq(&normalise(&empty.stdout, dir.path()));
    assert!(
        !state.exists(),
        "asked for history, plugsync created the state dir"
    );
    assert_eq!(history_json(&state, &[], &[]), Vec::<Value>::new());

    // A journal with no step yet.
    drop(plugsync::store::Store::open(&state).unwrap());
    let empty = history(&state, &[], &[]);
    expect![[r#"
        No steps in the journal `[ROOT]/state/journal.redb`.
    "#]]
    .assert_eq(&normalise(&empty.stdout, dir.path()));

    let bad = history(&state, &["--since", "last tuesday"], &[]);
    assert_eq!(bad.status.code(), Some(1));
    expect![[r#"
        error: `--since last tuesday` is neither an RFC 3339 time nor a duration (expected number at 0): give a time like `2026-12-02T14:00:00Z`, or how long ago like `2h` or `7d`
    "#]]
    .assert_eq(&bad.stderr);
}

#[test]
fn a_journal_another_plugsync_has_open_is_named_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    // This process holds the journal, as a running reconcile would.
    let held = plugsync::store::Store::open(&state).unwrap();
    let refused = history(&state, &[], &[]);
    assert_eq!(refused.status.code(), Some(1), "{}", refused.stdout);
    expect![[r#"
        error: the journal `[ROOT]/state/journal.redb` is open by another plugsync (a `reconcile` running with this state dir): it has one reader and writer at a time; run `plugsync history` again when that reconcile ends
    "#]]
    .assert_eq(&normalise(&refused.stderr, dir.path()));
    drop(held);
    assert!(history(&state, &[], &[]).status.success());
}

#[test]
fn a_repository_that_cannot_be_read_is_a_fact_not_an_error() {
    use plugsync::spec::provenance::{Git, of_file};
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plugins.yaml");
    std::fs::write(&file, "apiVersion: plugsync/v1\n").unwrap();
    assert_eq!(of_file(&file), Git::Outside);

    let repo = gix::init(dir.path()).unwrap();
    // No commit yet: untracked, no commit to name.
    let git = of_file(&file);
    assert!(
        matches!(&git, Git::Repository { commit: None, .. }) && git.dirty(),
        "{git:?}"
    );
    let id = commit(&repo, "plugins.yaml", "first");
    let git = of_file(&file);
    assert_eq!(git.commit(), Some(id.as_str()));
    assert!(!git.dirty(), "{git:?}");

    // HEAD names a commit whose object is gone.
    let object = dir
        .path()
        .join(".git/objects")
        .join(&id[..2])
        .join(&id[2..]);
    std::fs::remove_file(object).unwrap();
    let git = of_file(&file);
    let Git::Unreadable { reason } = &git else {
        panic!("{git:?}")
    };
    assert!(reason.contains(&id), "{reason}");
}
