//! The in-process demo (`plugsync::ops::demo`) with small counts tells the GitOps story, each
//! stage asserted: plugins.yaml committed in a scratch git repository (gix), validated, locked,
//! its plan (`reconcile --dry-run`) exactly the upgrades then applied by the apply engine over
//! the runtime's in-process control API; a faulty patch release committed, rolled back by
//! replaying the calls it served (the restored state checked against an independent reference:
//! a runtime that ran ma_cross 2.0.0 from its state before the step, fed the same calls at the
//! same host times), marked failed and not retried by the next reconcile, then moved past by a
//! commit; a manual rollback held against the next reconcile, released and moved back; and
//! `plugsync history` naming each step's commit. The verdict says PASS.

mod support;

use std::time::Duration;

use plugsync::ops::{DemoOptions, DemoVenue, demo};
use support::*;

#[test]
fn the_demo_tells_the_gitops_story_from_commit_to_history_and_passes() {
    // Builds the example plugins and the fixtures (once), in the profile of this test.
    lib(FAULT_HEALTH);
    let options = DemoOptions {
        plugins: Some(profile_dir()),
        venue: DemoVenue::InProcess,
        threads: 1,
        instruments_per_thread: 2,
        soak: Duration::from_millis(300),
        exe: Some(env!("CARGO_BIN_EXE_plugsync").into()),
        ..DemoOptions::default()
    };
    let mut out = Vec::new();
    let outcome = demo(&options, &mut out).expect("the demo runs");
    let out = String::from_utf8(out).unwrap();
    assert!(outcome.passed(), "{out}");
    assert!(out.ends_with("PASS\n"), "{out}");
    assert_eq!(outcome.failed, 0, "{out}");

    // Every check of the story held.
    assert_eq!(outcome.checks.len(), 5, "{out}");
    assert!(outcome.checks.iter().all(|c| c.held), "{out}");

    let faulty = &outcome.steps[2];
    assert_eq!(faulty.library, "libma_cross_fault_health.so");
    assert!(faulty.rolled_back && !faulty.committed, "{out}");
    assert!(
        faulty.replayed.is_some_and(|n| n > 0),
        "the rollback replayed the calls the faulty version served: {:?}\n{out}",
        faulty.replayed
    );
    assert_eq!(faulty.matches_reference, Some(true), "{out}");
    assert!(!faulty.lost_state && faulty.as_expected, "{out}");
    assert!(
        out.contains(
            "  restored state checked: identical to a reference runtime that ran 2.0.0 from its \
             state before the step"
        ),
        "{out}"
    );
    // Caught at the switch's own health check, by the runtime in the soak, or by the apply
    // engine in the soak (which then asks for the rollback): its line says which.
    let failed = out
        .lines()
        .find(|l| l.starts_with("        ✗ "))
        .unwrap_or_else(|| panic!("no failed step in:\n{out}"));
    assert!(failed.contains("order book desynchronised"), "{failed}");
    for (n, step) in outcome.steps.iter().enumerate().filter(|(n, _)| *n != 2) {
        assert!(
            step.committed && step.as_expected,
            "{n}: {}: {out}",
            step.library
        );
        // In process, the demo times its callers around each switch the engine sends.
        assert!(step.longest_wait.is_some(), "{}: {out}", step.library);
    }

    // The story, stage by stage, each change a commit in the scratch repository.
    let commits = commits(&out);
    assert_eq!(commits.len(), 4, "{out}");
    let mut at = 0;
    for line in [
        "== 1. A desk trading under load ==",
        "== 2. plugins.yaml committed, validated, locked; the plan `reconcile --dry-run` shows ==",
        &format!(
            "  commit {}  pin risk_model 2.0.0, ma_cross 2.0.0",
            commits[0]
        ),
        "== 3. `plugsync reconcile -f ",
        "  [1/2] ma_cross 1.0.0 → 2.0.0       preflight ✓  staged ✓  switched (slot held ",
        "  [2/2] risk_model 1.0.0 → 2.0.0     preflight ✓  staged ✓  switched (slot held ",
        "  Applied 2 steps. The host runs ma_cross 2.0.0, risk_model 2.0.0.",
        "== 4. A faulty release committed: rolled back, marked failed, not retried ==",
        &format!("  commit {}  ma_cross 2.0.1: a patch release", commits[1]),
        "    +      version: 2.0.1",
        "  [1/1] ma_cross 2.0.0 → 2.0.1       preflight ✓  staged ✓",
        "        ma_cross 2.0.1 marked failed on this host: not retried",
        "  Reconcile failed at step 1 of 1 (ma_cross 2.0.0 → 2.0.1); 0 steps applied. The host \
         runs ma_cross 2.0.0, risk_model 2.0.0 — a committed set.",
        "  the next reconcile, from the same commit:",
        "  Nothing to apply now: the rest is kept where it is (below).",
        "  Kept: ma_cross 2.0.0: 2.0.1 marked failed by ",
        &format!(
            "  commit {}  ma_cross 2.1.0, past the faulty 2.0.1",
            commits[2]
        ),
        "  Cleared the failed mark on `ma_cross` 2.0.1: its entry in plugins.yaml changed",
        "  [1/1] ma_cross 2.0.0 → 2.1.0       preflight ✓  staged ✓  switched (slot held ",
        "== 5. A manual rollback: `plugsync rollback ma_cross --yes`, held ==",
        "  [1/1] ma_cross 2.1.0 → 2.0.0       preflight ✓  staged ✓  switched (slot held ",
        "  Held `ma_cross` at 2.0.0: every reconcile keeps it there until",
        "  the next reconcile, from the same commit:",
        "  Kept: ma_cross 2.0.0: held by demo since ",
        "  `plugsync release ma_cross`: Released `ma_cross`",
        "  [1/1] ma_cross 2.0.0 → 2.1.0       preflight ✓  staged ✓  switched (slot held ",
        "  Applied 1 step. The host runs ma_cross 2.1.0, risk_model 2.0.0.",
        "== 6. A change scheduled for after the close: kept until then, applied at its time ==",
        &format!(
            "  commit {}  ma_cross: twice the order size, from ",
            commits[3]
        ),
        "    +      strategy: {kind: scheduled, at: \"",
        "  the reconcile now:",
        "  Nothing to apply now: the rest is kept where it is (below).",
        "  Kept: ma_cross 2.1.0: plugins.yaml asks 2.1.0, scheduled at `",
        "  the reconcile at ",
        "  [1/1] ma_cross 2.1.0 (reconfigure) preflight ✓  staged ✓  switched (slot held ",
        "  Applied 1 step. The host runs ma_cross 2.1.0, risk_model 2.0.0.",
        "== 7. `plugsync history --state-dir ",
        "  WHEN                  PLUGIN      CHANGE             OUTCOME      TOOK ",
        "✓ ma_cross 2.0.1 rolled back and marked failed on the host",
        "✓ the next reconcile did not retry ma_cross 2.0.1",
        "✓ the next reconcile kept ma_cross held at 2.0.0",
        "✓ the reconcile before ",
        "✓ `plugsync history` shows the 7 steps, each with the commit it was applied from",
    ] {
        let found = out[at..].find(line);
        at += found.unwrap_or_else(|| panic!("no `{line}` after byte {at} in:\n{out}"));
    }
    // The history table: the seven steps, newest first, each with its commit (12 hex digits).
    let table: Vec<(String, String)> = out
        .lines()
        .skip_while(|l| !l.starts_with("  WHEN "))
        .skip(1)
        .filter(|l| l.starts_with("  20"))
        .map(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            let change = cells[2..5].join(" ");
            let commit = cells[cells.len() - 2].to_owned();
            (format!("{} {change}", cells[1]), commit)
        })
        .collect();
    let expected: Vec<(String, String)> = [
        ("ma_cross reconfigure 2.1.0 done", 3),
        ("ma_cross 2.0.0 → 2.1.0", 2),
        ("ma_cross 2.1.0 → 2.0.0", 2),
        ("ma_cross 2.0.0 → 2.1.0", 2),
        ("ma_cross 2.0.0 → 2.0.1", 1),
        ("risk_model 1.0.0 → 2.0.0", 0),
        ("ma_cross 1.0.0 → 2.0.0", 0),
    ]
    .into_iter()
    .map(|(change, c)| (change.to_owned(), commits[c].clone()))
    .collect();
    let shown: Vec<(String, String)> = table
        .into_iter()
        .map(|(change, commit)| (change, commit[..8].to_owned()))
        .collect();
    assert_eq!(shown, expected, "{out}");
    assert!(
        out.contains("state never lost (each rollback's restored state identical to a reference"),
        "{out}"
    );

    // The plan, before the steps.
    assert_eq!(
        outcome.plan.planned,
        ["ma_cross → 2.0.0", "risk_model → 2.0.0"],
        "{out}"
    );
    assert!(outcome.plan.as_expected, "{out}");
    for line in [
        "    published ma_cross 2.0.1 on `stable` (sha256 ",
        "    Host this process (API ",
        "    Desired [GITOPS]/desk/plugins.yaml (plugins.lock matches)",
        // Previews ran in a child `plugsync`, on the live states.
        "           state (live snapshot, migrated in a sandbox):",
        "  plan check: its 2 steps are the demo's steps 1-2 below, in order, to the same \
         artifacts",
        "plan: `reconcile --dry-run` planned exactly the upgrades the first commit's reconcile \
         made, in order (ma_cross → 2.0.0, risk_model → 2.0.0)",
    ] {
        assert!(gitops(&out).contains(line), "no `{line}` in:\n{out}");
    }
}

/// The ids of the commits the demo made, as it prints them (8 hex digits), in order.
fn commits(out: &str) -> Vec<String> {
    out.lines()
        .filter_map(|l| l.strip_prefix("  commit "))
        .map(|rest| rest[..8].to_owned())
        .collect()
}

/// The demo's output with its GitOps directory (a fresh temporary one) as `[GITOPS]`.
fn gitops(out: &str) -> String {
    let start = out
        .find("registry (in /")
        .map(|at| at + "registry (in ".len())
        .expect("the demo names its GitOps directory");
    let end = start + out[start..].find("):").expect("the directory's line ends");
    out.replace(&out[start..end], "[GITOPS]")
}
