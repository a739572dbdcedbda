//! Swaps refused from the target artifact's metadata alone (no declared migration between the
//! versions, or an artifact of another plugin) never map the target library: a refused version
//! runs none of its code and takes none of the resident cap. "Mapped" is judged twice: from
//! the runtime's own `resident` list, and from the process's `/proc/self/maps`, where each
//! library shows as the sealed memfd it was mapped from, `/memfd:plugsync:<short digest>:<file>`.

mod support;

use plugsync_host::{Digest, HostError, Runtime, SwapRequest, VerifySpec};
use serde_json::json;
use support::*;

/// The digests of every library mapped in the process.
fn resident(runtime: &Runtime) -> Vec<Digest> {
    runtime
        .status()
        .resident
        .iter()
        .map(|r| r.version.digest)
        .collect()
}

/// Whether the process maps a library with that digest, by `/proc/self/maps` (other tests of
/// this binary run in parallel: none maps the targets refused here).
fn mapped_in_the_process(digest: Digest) -> bool {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("/proc/self/maps is readable");
    let name = format!("/memfd:plugsync:{}:", digest.short());
    maps.lines().any(|line| line.contains(&name))
}

#[test]
fn a_swap_refused_from_the_targets_metadata_never_maps_the_target_library() {
    struct Case {
        target: &'static str,
        message: &'static str,
        refused: fn(&HostError) -> bool,
    }
    let cases = [
        Case {
            target: MA_CROSS_2_1_0,
            message: "`ma_cross` cannot go from 1.0.0 to 2.1.0: 2.1.0 does not declare \
                      `migrates_from` covering 1.0.0 (it declares `>=2.0.0, <2.1.0`); go \
                      through an intermediate version that does",
            refused: |e| matches!(e, HostError::NoMigration { .. }),
        },
        Case {
            target: RISK_MODEL_1_0_0,
            message: "artifact [HASH] is plugin `risk_model`, not `ma_cross`: check the \
                      artifact you staged for `ma_cross`",
            refused: |e| matches!(e, HostError::WrongPlugin { .. }),
        },
    ];
    for case in cases {
        let (dir, runtime) = runtime();
        let running = install(&runtime, MA_CROSS_1_0_0, json!({}));
        let target = stage(&runtime, case.target);
        assert_eq!(resident(&runtime), [running], "{}", case.target);
        assert!(
            mapped_in_the_process(running),
            "maps name the running library"
        );
        assert!(!mapped_in_the_process(target), "{} was mapped", case.target);

        // Neither a swap nor a verification of it maps it.
        let swapped = runtime
            .swap(SwapRequest::new("ma_cross", target))
            .unwrap_err();
        let verified = runtime
            .verify("ma_cross", &target, None, None, &VerifySpec::default())
            .unwrap_err();
        for error in [&swapped, &verified] {
            assert!((case.refused)(error), "{}: {error:?}", case.target);
            assert_eq!(normalise(&error.to_string(), dir.path()), case.message);
        }
        assert_eq!(resident(&runtime), [running], "{} was mapped", case.target);
        assert!(
            !mapped_in_the_process(target),
            "{} was mapped, by /proc/self/maps",
            case.target
        );
        assert_eq!(runtime.status().live_instances, 1);

        // The running version keeps serving, with no step pending.
        let out = runtime.call("ma_cross", &bar("ES", 10.0)).unwrap();
        assert_eq!(out.receipt.digest, running);
        assert_eq!(runtime.status().plugins[0].pending, None);
    }
}

#[test]
fn control_an_accepted_swap_maps_the_target_library() {
    let (_dir, runtime) = runtime();
    let running = install(&runtime, MA_CROSS_1_0_0, json!({}));
    let target = stage(&runtime, MA_CROSS_2_0_0);
    assert_eq!(resident(&runtime), [running]);
    runtime.swap(SwapRequest::new("ma_cross", target)).unwrap();
    assert!(mapped_in_the_process(target), "by /proc/self/maps");
    let mut mapped = resident(&runtime);
    mapped.sort();
    let mut expected = [running, target];
    expected.sort();
    assert_eq!(mapped, expected);
}
