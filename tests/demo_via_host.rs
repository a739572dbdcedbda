//! `plugsync demo --via-host` through the real binary: it starts a real `plugsync host` and
//! tells the whole GitOps story through its control API while the host's desk trades —
//! plugins.yaml committed in a scratch git repository, validated, locked and planned
//! (`reconcile --dry-run`), reconciled; a faulty release committed, rolled back, marked failed
//! and not retried, then moved past; a manual rollback held against the next reconcile, then
//! released; `plugsync history` naming each step's commit — stops the host with SIGTERM and
//! passes; `plugsync demo --host` names an unreachable host in one line.

mod support;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use expect_test::expect;
use support::*;

const PLUGSYNC: &str = env!("CARGO_BIN_EXE_plugsync");

/// Runs `plugsync demo ARGS` to its end, with plugsync's own variables cleared.
fn demo(args: &[&str]) -> Output {
    Command::new(PLUGSYNC)
        .arg("demo")
        .args(args)
        .env_remove("PLUGSYNC_HOST")
        .env_remove("PLUGSYNC_TOKEN_FILE")
        .env_remove("PLUGSYNC_LOG")
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .output()
        .expect("the plugsync binary runs")
}

/// A line with what varies from run to run replaced: call counts by `[N]`, what follows `by` on a `Kept:` line (who, when) dropped, and the note of a books
/// read retried past a fill in flight dropped.
/// The times of the scheduled change (an hour from the run) as `[TIME]`, its wait as `[WAIT]`.
fn without_times(line: &str) -> String {
    let bytes = line.as_bytes();
    let shape = b"dddd-dd-dd?dd:dd:dd";
    let mut out = String::new();
    let mut at = 0;
    while at < line.len() {
        let fits = bytes.len() >= at + shape.len()
            && (shape.iter().zip(&bytes[at..])).all(|(want, got)| match want {
                b'd' => got.is_ascii_digit(),
                b'?' => *got == b'T' || *got == b' ',
                other => got == other,
            });
        if fits {
            out.push_str("[TIME]");
            at += shape.len();
        } else {
            let c = line[at..].chars().next().expect("within the line");
            out.push(c);
            at += c.len_utf8();
        }
    }
    match (out.find("(in "), out.find("); the first reconcile")) {
        (Some(from), Some(to)) if from < to => format!("{}(in [WAIT]{}", &out[..from], &out[to..]),
        _ => out,
    }
}

fn normalise(line: &str) -> String {
    let line = &without_times(line);
    if line.starts_with("  Kept: ")
        && let Some(by) = line.find(" by ")
    {
        return format!("{} by …", &line[..by]);
    }
    let line = match line.find(", at read ") {
        Some(start) => {
            let end = line[start..].find(')').map_or(line.len(), |e| start + e);
            format!("{}{}", &line[..start], &line[end..])
        }
        None => line.to_owned(),
    };
    let words: Vec<&str> = line.split(' ').collect();
    let normalised: Vec<&str> = words
        .iter()
        .enumerate()
        .map(|(i, word)| {
            let counts_calls = words
                .get(i + 1)
                .is_some_and(|next| next.starts_with("calls"));
            if counts_calls && word.chars().all(|c| c.is_ascii_digit()) {
                "[N]"
            } else {
                word
            }
        })
        .collect();
    normalised.join(" ")
}

/// A step of the plan's text, indented under the demo's line: `       1. ma_cross …`.
fn is_planned_step(line: &str) -> bool {
    line.strip_prefix("       ")
        .and_then(|rest| rest.split_once(". "))
        .is_some_and(|(n, _)| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

/// The value after `prefix` on the line that holds it, up to `end`.
fn after<'a>(text: &'a str, prefix: &str, end: char) -> &'a str {
    let start = text
        .find(prefix)
        .unwrap_or_else(|| panic!("no `{prefix}` in:\n{text}"))
        + prefix.len();
    let rest = &text[start..];
    &rest[..rest.find(end).unwrap_or(rest.len())]
}

#[test]
fn the_demo_runs_its_steps_through_a_host_it_starts_and_stops() {
    // Builds the example plugins and the fixtures (once), in the profile of this test.
    lib(FAULT_HEALTH);
    let plugins = profile_dir();
    let output = demo(&[
        "--via-host",
        "--plugins",
        plugins.to_str().unwrap(),
        "--soak-ms",
        "300",
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );

    // The GitOps directory (a fresh temporary one) as `[GITOPS]`.
    let gitops = after(&stdout, "published to a registry (in ", ')');
    let mut shown = stdout.replace(gitops, "[GITOPS]");
    // And the commits the demo made in its scratch repository as `[COMMIT]`.
    let commits: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("  commit "))
        .map(|rest| &rest[..8])
        .collect();
    for commit in &commits {
        shown = shown.replace(commit, "[COMMIT]");
    }
    let kept: Vec<String> = shown
        .lines()
        .filter(|l| {
            [
                "== ",
                "  commit ",
                "      ~ ",
                "  plan check:",
                "step ",
                "  committed;",
                "  not committed",
                "  Applied ",
                "  Reconcile failed",
                "  Nothing to apply",
                "  Kept: ",
                "  Held ",
                "stopped ",
                "summary:",
                "plan:",
                "✓ ",
                "✗ ",
                "PASS",
            ]
            .iter()
            .any(|start| l.starts_with(start))
                || is_planned_step(l)
        })
        .map(normalise)
        .collect();
    expect![[r#"
        == 1. A desk trading under load ==
        == 2. plugins.yaml committed, validated, locked; the plan `reconcile --dry-run` shows ==
          commit [COMMIT]  pin risk_model 2.0.0, ma_cross 2.0.0
              ~ risk_model  1.0.0 → 2.0.0  pinned                        1 step
              ~ ma_cross    1.0.0 → 2.0.0  pinned                        1 step
               1. ma_cross    1.0.0 → 2.0.0      major  migrate   pinned; 1.0.0 needs risk_model >=1.0, <2, which step 2 breaks: moves first
               2. risk_model  1.0.0 → 2.0.0      major  migrate   pinned
          plan check: its 2 steps are the demo's steps 1-2 below, in order, to the same artifacts
        == 3. `plugsync reconcile -f [GITOPS]/desk/plugins.yaml` (commit [COMMIT]) ==
        step 1/7: ma_cross 1.0.0 -> 2.0.0 (renames its periods, adds signal_threshold)
          committed; [N] calls served during the step, 0 failed; books agree on 6 instruments (ma_cross's positions = risk_model's exposures)
        step 2/7: risk_model 1.0.0 -> 2.0.0 (new state schema: notional limits)
          committed; [N] calls served during the step, 0 failed; books agree on 6 instruments (ma_cross's positions = risk_model's exposures)
          Applied 2 steps. The host runs ma_cross 2.0.0, risk_model 2.0.0.
        == 4. A faulty release committed: rolled back, marked failed, not retried ==
          commit [COMMIT]  ma_cross 2.0.1: a patch release, switched under the lock (starts fresh)
        step 3/7: a faulty ma_cross patch release (2.0.1: healthy when fresh, fails once it trades)
          not committed: the previous version serves; [N] calls served during the step, 0 failed; books agree on 6 instruments (ma_cross's positions = risk_model's exposures)
          Reconcile failed at step 1 of 1 (ma_cross 2.0.0 → 2.0.1); 0 steps applied. The host runs ma_cross 2.0.0, risk_model 2.0.0 — a committed set.
          Kept: ma_cross 2.0.0: 2.0.1 marked failed by …
          Nothing to apply now: the rest is kept where it is (below). The host runs ma_cross 2.0.0, risk_model 2.0.0.
          Kept: ma_cross 2.0.0: 2.0.1 marked failed by …
          commit [COMMIT]  ma_cross 2.1.0, past the faulty 2.0.1
        step 4/7: ma_cross 2.0.0 -> 2.1.0 (orders carry limit prices; needs risk_model 2.x)
          committed; [N] calls served during the step, 0 failed; books agree on 6 instruments (ma_cross's positions = risk_model's exposures)
          Applied 1 step. The host runs ma_cross 2.1.0, risk_model 2.0.0.
        == 5. A manual rollback: `plugsync rollback ma_cross --yes`, held ==
              ~ ma_cross    2.1.0 → 2.0.0  pinned                        1 step
               1. ma_cross  2.1.0 → 2.0.0      minor  migrate   pinned
        step 5/7: manual rollback: ma_cross 2.1.0 -> 2.0.0 (a planned downgrade of the live state)
          committed; [N] calls served during the step, 0 failed; books agree on 6 instruments (ma_cross's positions = risk_model's exposures)
          Applied 1 step. The host runs ma_cross 2.0.0, risk_model 2.0.0.
          Held `ma_cross` at 2.0.0: every reconcile keeps it there until `plugsync release ma_cross`, or until its entry in plugins.yaml changes.
          Nothing to apply now: the rest is kept where it is (below). The host runs ma_cross 2.0.0, risk_model 2.0.0.
          Kept: ma_cross 2.0.0: held by …
        step 6/7: released: ma_cross 2.0.0 -> 2.1.0 again
          committed; [N] calls served during the step, 0 failed; books agree on 6 instruments (ma_cross's positions = risk_model's exposures)
          Applied 1 step. The host runs ma_cross 2.1.0, risk_model 2.0.0.
        == 6. A change scheduled for after the close: kept until then, applied at its time ==
          commit [COMMIT]  ma_cross: twice the order size, from [TIME]Z
          Nothing to apply now: the rest is kept where it is (below). The host runs ma_cross 2.1.0, risk_model 2.0.0.
          Kept: ma_cross 2.1.0: plugins.yaml asks 2.1.0, scheduled at `[TIME]Z`: not before [TIME] UTC (in [WAIT]); the first reconcile from then on moves it
        step 7/7: scheduled: ma_cross 2.1.0 reconfigured at its time (twice the order size)
          committed; [N] calls served during the step, 0 failed; books agree on 6 instruments (ma_cross's positions = risk_model's exposures)
          Applied 1 step. The host runs ma_cross 2.1.0, risk_model 2.0.0.
        == 7. `plugsync history --state-dir [GITOPS]/state` ==
        stopped the host with SIGTERM: it exited cleanly (exit status: 0), its states checkpointed
        summary: 7 steps (6 committed, 1 rolled back), [N] calls served, 0 failed; books agree (ma_cross's positions = risk_model's exposures) after every step; state never lost by the runtime's own report (not checked against a reference)
        plan: `reconcile --dry-run` planned exactly the upgrades the first commit's reconcile made, in order (ma_cross → 2.0.0, risk_model → 2.0.0)
        ✓ ma_cross 2.0.1 rolled back and marked failed on the host
        ✓ the next reconcile did not retry ma_cross 2.0.1
        ✓ the next reconcile kept ma_cross held at 2.0.0
        ✓ the reconcile before [TIME]Z kept ma_cross where it runs
        ✓ `plugsync history` shows the 7 steps, each with the commit it was applied from ([COMMIT], [COMMIT], [COMMIT], [COMMIT])
        PASS"#]]
    .assert_eq(&kept.join("\n"));

    // The history names each step's commit: the first commit's two steps, the faulty
    // release's, then the third commit's upgrade, manual rollback and move back, then the
    // scheduled change's.
    assert_eq!(commits.len(), 4, "{stdout}");
    let rows: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("  WHEN "))
        .filter(|l| l.starts_with("  20"))
        .collect();
    assert_eq!(rows.len(), 7, "{stdout}");
    for (commit, steps) in commits.iter().zip([2, 1, 3, 1]) {
        let naming = rows.iter().filter(|r| r.contains(commit)).count();
        assert_eq!(naming, steps, "commit {commit} in:\n{stdout}");
    }

    // The faulty release was rolled back without losing a call's effect: at the switch by the
    // host itself, or, caught unhealthy in the soak, by the host or on the apply engine's
    // request; the engine's line for the step says why.
    assert!(stdout.contains("  ROLLED BACK 2.0.1 ("), "{stdout}");
    let failed = stdout
        .lines()
        .find(|l| l.starts_with("        ✗ "))
        .unwrap_or_else(|| panic!("no failed step in:\n{stdout}"));
    assert!(failed.contains("order book desynchronised"), "{failed}");
    assert!(
        stdout.contains("  state carried back by replay: "),
        "{stdout}"
    );
    // Switched under the lock, it failed only once it had served calls: some were replayed.
    let replayed = after(&stdout, "  state carried back by replay: ", ' ');
    assert!(
        replayed.parse::<u64>().is_ok_and(|n| n > 0),
        "{replayed} calls replayed:\n{stdout}"
    );
    // The host's feed is out of the demo's sight: no reference check, and it says so.
    assert!(
        stdout.contains("  restored state not checked against a reference: the host's feed"),
        "{stdout}"
    );
    // Each switch went through the control API, with the step ids of the apply engine.
    assert_eq!(
        stdout.matches("  POST /v1/steps/").count(),
        stdout.matches("  state migrated ").count(),
        "{stdout}"
    );

    // The host is gone, and so is its scratch directory.
    let pid = after(&stdout, "(pid ", ')');
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists(),
        "host {pid} still runs"
    );
    let scratch = after(&stdout, "its store, token (0600) and log in ", '\n');
    assert!(!Path::new(scratch).exists(), "{scratch} was left behind");
    // And so is the directory of its plugins.yaml, registry and lock.
    assert!(!Path::new(gitops).exists(), "{gitops} was left behind");
}

#[test]
fn an_unreachable_host_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "a-token\n").unwrap();
    // A port nothing listens on any more.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    lib(FAULT_HEALTH);
    let plugins = profile_dir();
    let output = demo(&[
        "--host",
        &url,
        "--token-file",
        token.to_str().unwrap(),
        "--plugins",
        plugins.to_str().unwrap(),
    ]);
    assert_eq!(output.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&output.stderr).replace(&port.to_string(), "[PORT]"),
        "error: cannot reach the plugsync host at http://127.0.0.1:[PORT]: connection refused; \
         is `plugsync host` running?\n"
    );
}
