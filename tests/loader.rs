//! The loader refuses a library for another ABI (major, or a minor older than it needs), one
//! built with `panic = "abort"`, and bytes that do not hash to the digest they were announced
//! with, all **before `dlopen`**: both
//! fixtures have a load-time constructor that writes the file named by
//! `PLUGSYNC_FIXTURE_MARKER`, and after the refusals that file does not exist. The control
//! proves the constructors work: `dlopen`ing the fixtures directly does write it.
//!
//! The environment variable must not be set in this multi-threaded test process, and a
//! library `dlopen`ed by the control stays mapped, so each scenario runs in a child process:
//! the `child_*` tests (ignored in a normal run) are run by the tests above them.

mod support;

use std::path::Path;

use plugsync_host::{Digest, HostError, LoadPolicy, inspect};
use serde_json::json;
use support::*;

/// The marker file the constructors would write, in the child's environment.
fn marker() -> std::path::PathBuf {
    std::env::var_os(MARKER_ENV)
        .unwrap_or_else(|| panic!("run by its parent test, with {MARKER_ENV} set"))
        .into()
}

/// Files under `dir`, recursively, relative to it.
fn files(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else {
                found.push(path.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    found
}

#[test]
fn libraries_refused_by_the_loader_are_never_opened() {
    // Built here: the child does not build.
    lib(MA_CROSS_2_0_0);
    lib(FAULT_ABI);
    panic_abort_lib();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    run_child_test("child_refuses_before_dlopen", &[(MARKER_ENV, &marker)]);
    assert!(
        !marker.exists(),
        "a refused library was dlopened: its constructor wrote {}",
        marker.display()
    );
}

#[test]
#[ignore = "run by `libraries_refused_by_the_loader_are_never_opened` in a child process"]
fn child_refuses_before_dlopen() {
    let marker = marker();
    let (dir, runtime) = runtime();
    let root = dir.path();
    let abi = lib(FAULT_ABI);
    let abort = panic_abort_lib();

    // Wrong ABI: refused at staging, from the metadata section of the file.
    let error = runtime.stage_file(&abi).unwrap_err();
    assert!(matches!(error, HostError::AbiMismatch { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "plugin `ma_cross` 2.0.5 was built for plugin ABI 2, this host speaks ABI 1; it was not \
         opened: rebuild it against a plugsync-plugin SDK of ABI 1"
    );
    assert_eq!(
        inspect(&abi).unwrap().abi,
        2,
        "inspect reads it without running it"
    );

    // ABI 1.0 (the fixture with its metadata edited in place to say `"abi":1` and, as SDKs
    // before ABI 1.2 wrote it, no `abi_minor`): an older minor than the host needs, whose
    // vtable would lack entries the host calls. Refused at staging, from the metadata.
    let mut old_minor = std::fs::read(&abi).unwrap();
    let at = old_minor
        .windows(9)
        .position(|w| w == br#"{"abi":2,"#)
        .expect("the fixture's metadata starts with its ABI major");
    old_minor[at..at + 9].copy_from_slice(br#"{"abi":1,"#);
    let error = runtime
        .stage(
            "libma_cross_fault_abi.so",
            &old_minor,
            &Digest::of(&old_minor),
        )
        .unwrap_err();
    assert!(matches!(error, HostError::AbiTooOld { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "plugin `ma_cross` 2.0.5 was built for plugin ABI 1.0, this host needs ABI 1.1 or newer; \
         it was not opened: rebuild it with a newer plugsync-plugin SDK"
    );

    // `panic = "abort"`: refused at staging.
    let error = runtime.stage_file(&abort).unwrap_err();
    assert!(matches!(error, HostError::PanicAbort { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "plugin `ma_cross` 2.0.7 was built with `panic = \"abort\"`: its first panic would kill \
         the host, so it was not opened; rebuild it with `panic = \"unwind\"` (Cargo's default)"
    );

    // Bytes that are not the ones announced (those of a library with a constructor, announced
    // as ma_cross 2.0.0): refused before their metadata is even read.
    let bytes = std::fs::read(&abi).unwrap();
    let announced = digest_of(MA_CROSS_2_0_0);
    let error = runtime
        .stage("libma_cross_v2_0_0.so", &bytes, &announced)
        .unwrap_err();
    assert!(
        matches!(error, HostError::DigestMismatch { .. }),
        "{error:?}"
    );
    assert_eq!(
        normalise(&error.to_string(), root),
        "sha256 mismatch for `libma_cross_v2_0_0.so`: expected [HASH], got [HASH]; the artifact \
         is corrupt or not the one that was published: fetch it again from the registry"
    );
    assert_eq!(files(root), Vec::<String>::new(), "nothing was written");

    // A library planted in the store (by hand, past staging) is checked again at load.
    let planted_bytes = [
        std::fs::read(&abi).unwrap(),
        std::fs::read(&abort).unwrap(),
        old_minor,
    ];
    for bytes in planted_bytes {
        let digest = Digest::of(&bytes);
        let planted = root.join("artifacts").join(digest.to_string());
        std::fs::create_dir_all(&planted).unwrap();
        std::fs::write(planted.join("lib.so"), &bytes).unwrap();
        let error = runtime.install(&digest, json!({})).unwrap_err();
        assert!(
            matches!(
                error,
                HostError::AbiMismatch { .. }
                    | HostError::AbiTooOld { .. }
                    | HostError::PanicAbort { .. }
            ),
            "{error:?}"
        );
    }
    assert_eq!(runtime.status().resident, [], "nothing was mapped");

    // Allowing `panic = "abort"` explicitly is the only way in: not exercised (it would run the
    // constructor); the policy exists and defaults to refusing.
    assert!(!LoadPolicy::default().allow_panic_abort);
    assert!(!marker.exists());
}

#[test]
fn control_the_fixtures_constructors_write_the_marker_when_dlopened() {
    lib(FAULT_ABI);
    panic_abort_lib();
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    run_child_test("child_dlopens_the_fixtures", &[(MARKER_ENV, &marker)]);
    assert_eq!(
        std::fs::read_to_string(&marker).unwrap(),
        "ma_cross_fault_abi was loaded\n"
    );
}

#[test]
#[ignore = "run by `control_the_fixtures_constructors_write_the_marker_when_dlopened` in a child process"]
#[allow(unsafe_code)]
fn child_dlopens_the_fixtures() {
    let marker = marker();
    for (path, written) in [
        (panic_abort_lib(), "ma_cross_fault_abort was loaded\n"),
        (lib(FAULT_ABI), "ma_cross_fault_abi was loaded\n"),
    ] {
        assert!(!marker.exists());
        // SAFETY: loading runs the fixture's constructor, which only writes the marker file;
        // no symbol of the library is used, and it is never unloaded (the process ends).
        let library = unsafe { libloading::Library::new(&path) }.unwrap();
        std::mem::forget(library);
        assert_eq!(std::fs::read_to_string(&marker).unwrap(), written);
        if written.contains("abort") {
            std::fs::remove_file(&marker).unwrap();
        }
    }
}

/// `dlopen` answers a path it opened before with the library it opened then, so a library
/// mapped from `/proc/self/fd/N` must keep `N` open: if it were closed and reused for the next
/// library, that one would come back as the first (measured on glibc 2.36). Two runtimes in one
/// process load ma_cross 1.0.0, then — after many descriptors were opened and closed — 2.0.0:
/// the second runs 2.0.0's code.
#[test]
fn a_library_loaded_after_descriptors_were_reused_runs_its_own_code() {
    let (_dir_a, a) = runtime();
    install(
        &a,
        MA_CROSS_1_0_0,
        json!({"fast_ma_period": 2, "slow_ma_period": 3}),
    );
    for _ in 0..64 {
        let files: Vec<_> = (0..8)
            .map(|_| std::fs::File::open("/dev/null").unwrap())
            .collect();
        drop(files);
    }
    let (dir_b, b) = runtime();
    let config = json!({"fast_period": 2, "slow_period": 3, "signal_threshold": 0.0});
    let digest = install(&b, MA_CROSS_2_0_0, config);
    let call = b.call("ma_cross", &bar("ES", 100.0)).unwrap();
    assert_eq!(call.receipt.digest, digest);
    // The state in 2.0.0's own format (schema 2), written by its code.
    let state = state(&b.snapshot("ma_cross").unwrap());
    assert_eq!(state["fast_period"], 2, "{state}");
    assert_eq!(state["signal_threshold"], 0.0, "{state}");
    assert!(state.get("fast_ma_period").is_none(), "{state}");
    // And the first still runs 1.0.0.
    let state = ma_cross_state(&a);
    assert_eq!(state["fast_ma_period"], 2, "{state}");
    let resident = &b.status().resident[0];
    assert_eq!(
        (resident.version.version.as_str(), &resident.version.digest),
        ("2.0.0", &digest)
    );
    assert!(
        resident.path.starts_with(dir_b.path()),
        "status names the store file it was read from: {}",
        resident.path.display()
    );
}

/// ma_cross's state in `runtime`.
fn ma_cross_state(runtime: &plugsync_host::Runtime) -> serde_json::Value {
    state(&runtime.snapshot("ma_cross").unwrap())
}
