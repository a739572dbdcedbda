//! The in-process demo (`plugsync::ops::demo`) with small counts, its steps applied by the
//! apply engine over the runtime's in-process control API: its faulty release fails after
//! serving calls (at the switch's own health check, or in the soak) and is rolled back by
//! replaying them, and the state it restored is checked against an independent reference (a
//! runtime that ran ma_cross 1.0.0 alone, fed the same calls at the same host times), not
//! taken from the runtime's own report; the other steps commit, and the verdict says PASS. Before the steps, the plan
//! `reconcile --dry-run` computes against the desk in this process, from a plugins.yaml the
//! demo publishes, validates and locks, is exactly the upgrades the demo then makes.

mod support;

use std::time::Duration;

use plugsync::ops::{DemoOptions, DemoVenue, demo};
use support::*;

#[test]
fn the_demos_faulty_release_is_rolled_back_by_replay_in_its_soak_and_its_state_matches_a_reference()
{
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

    let faulty = &outcome.steps[0];
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
        out.contains("  restored state checked: identical to a reference runtime that ran 1.0.0"),
        "{out}"
    );
    // Caught at the switch's own health check, by the runtime in the soak, or by the apply
    // engine in the soak (which then asks for the rollback): its line says which.
    let failed = out
        .lines()
        .find(|l| l.starts_with("        ✗ "))
        .unwrap_or_else(|| panic!("no failed step in:\n{out}"));
    assert!(failed.contains("order book desynchronised"), "{failed}");
    for step in &outcome.steps[1..] {
        assert!(
            step.committed && step.as_expected,
            "{}: {out}",
            step.library
        );
        // In process, the demo times its callers around each switch the engine sends.
        assert!(step.longest_wait.is_some(), "{}: {out}", step.library);
    }
    // Each step applied by the apply engine (`ops::reconcile`), preflighted in a child: the
    // faulty release from a plugins.yaml of its own, then the locked plugins.yaml.
    for line in [
        "  [1/1] ma_cross 1.0.0 → 2.0.1       preflight ✓  staged ✓",
        "  Reconcile failed at step 1 of 1 (ma_cross 1.0.0 → 2.0.1); 0 steps applied. The host \
         runs ma_cross 1.0.0, risk_model 1.0.0 — a committed set.",
        "  ma_cross 2.0.1 marked failed on this host: not retried",
        "  [1/3] ma_cross 1.0.0 → 2.0.0       preflight ✓  staged ✓  switched (slot held ",
        "  [2/3] risk_model 1.0.0 → 2.0.0     preflight ✓  staged ✓  switched (slot held ",
        "  [3/3] ma_cross 2.0.0 → 2.1.0       preflight ✓  staged ✓  switched (slot held ",
        "  Applied 3 steps. The host runs ma_cross 2.1.0, risk_model 2.0.0.",
    ] {
        assert!(out.contains(line), "no `{line}` in:\n{out}");
    }
    assert!(
        out.contains("state never lost (each rollback's restored state identical to a reference"),
        "{out}"
    );

    // The first half of the GitOps story, before the steps.
    assert_eq!(
        outcome.plan.planned,
        ["ma_cross → 2.0.0", "risk_model → 2.0.0", "ma_cross → 2.1.0"],
        "{out}"
    );
    assert!(outcome.plan.as_expected, "{out}");
    for line in [
        "    published ma_cross 2.0.1 on `stable` (sha256 ",
        "    `plugsync validate`: valid (2 plugins, every field checked)",
        "      ma_cross    2.1.0        sha256 ",
        "    Host this process (API ",
        "    Desired [GITOPS]/plugins.yaml (plugins.lock matches)",
        // Previews ran in a child `plugsync`, on the live states.
        "           state (live snapshot, migrated in a sandbox):",
        "  plan check: its 3 steps are the demo's steps 2-4 below, in order, to the same \
         artifacts",
        "plan: `reconcile --dry-run` planned exactly the upgrades the demo made after its faulty \
         step, in order (ma_cross → 2.0.0, risk_model → 2.0.0, ma_cross → 2.1.0)",
    ] {
        assert!(gitops(&out).contains(line), "no `{line}` in:\n{out}");
    }
    let plan_starts = out
        .find("`plugsync reconcile --dry-run` against the desk")
        .unwrap();
    assert!(plan_starts < out.find("step 1/4:").unwrap(), "{out}");
}

/// The demo's output with its GitOps directory (a fresh temporary one) as `[GITOPS]`.
fn gitops(out: &str) -> String {
    let start = out
        .find("(in /")
        .map(|at| at + "(in ".len())
        .expect("the demo names its GitOps directory");
    let end = start + out[start..].find("):").expect("the directory's line ends");
    out.replace(&out[start..end], "[GITOPS]")
}
