//! The in-process demo (`plugsync::ops::demo`) with small counts: its faulty release fails
//! in the soak after serving calls and is rolled back by replaying them, and the state it
//! restored is checked against an independent reference (a runtime that ran ma_cross 1.0.0
//! alone, fed the same calls at the same host times), not taken from the runtime's own
//! report; the other steps commit, and the verdict says PASS.

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
    assert!(
        out.contains("failed its health check (order book desynchronised"),
        "{out}"
    );
    for step in &outcome.steps[1..] {
        assert!(
            step.committed && step.as_expected,
            "{}: {out}",
            step.library
        );
    }
    assert!(
        out.contains("state never lost (each rollback's restored state identical to a reference"),
        "{out}"
    );
}
