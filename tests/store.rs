//! Staging into the content-addressed store: bytes that do not hash to the digest announced,
//! and names that could leave the store directory, write nothing; a verified artifact is
//! written once, read-only, under its digest; a file altered in the store is caught at load.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use plugsync_host::{Digest, HostError, Runtime};
use serde_json::json;
use support::*;

/// Every file and directory under `dir`, relative to it, sorted.
fn tree(dir: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).unwrap() {
            let path = entry.unwrap().path();
            found.push(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn staging_with_a_wrong_digest_writes_nothing_into_the_store() {
    let (dir, runtime) = runtime();
    let bytes = std::fs::read(lib(MA_CROSS_1_0_0)).unwrap();
    let cases = [
        (
            "another artifact's digest",
            &bytes[..],
            digest_of(MA_CROSS_2_0_0),
        ),
        (
            "truncated bytes",
            &bytes[..bytes.len() / 2],
            Digest::of(&bytes),
        ),
    ];
    for (case, bytes, announced) in cases {
        let error = runtime
            .stage("libma_cross_v1_0_0.so", bytes, &announced)
            .unwrap_err();
        assert!(
            matches!(error, HostError::DigestMismatch { expected, .. } if expected == announced),
            "{case}: {error:?}"
        );
        assert_eq!(
            normalise(&error.to_string(), dir.path()),
            "sha256 mismatch for `libma_cross_v1_0_0.so`: expected [HASH], got [HASH]; the \
             artifact is corrupt or not the one that was published: fetch it again from the \
             registry",
            "{case}"
        );
        assert_eq!(
            tree(dir.path()),
            ["artifacts"],
            "{case}: something was written"
        );
    }
    let error = runtime
        .install(&digest_of(MA_CROSS_2_0_0), json!({}))
        .unwrap_err();
    assert_eq!(
        normalise(&error.to_string(), dir.path()),
        "no artifact [HASH] in the store: stage it first"
    );
}

#[test]
fn artifact_names_that_could_leave_the_store_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let runtime = plugsync_host::Runtime::new(options(&store)).unwrap();
    let bytes = std::fs::read(lib(MA_CROSS_1_0_0)).unwrap();
    let digest = Digest::of(&bytes);
    for name in [
        "../../evil.so",
        "..",
        ".",
        "",
        "sub/lib.so",
        "..\\evil.so",
        ".hidden.so",
        "/tmp/evil.so",
        "lib\0.so",
    ] {
        let error = runtime.stage(name, &bytes, &digest).unwrap_err();
        assert!(
            matches!(error, HostError::BadArtifactName { .. }),
            "{name:?}: {error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "artifact name `{name}` is not a plain file name: use a name without `/`, `\\`, \
                 `..` or a leading `.`"
            )
        );
    }
    assert_eq!(tree(dir.path()), ["store", "store/artifacts"]);
}

#[test]
fn a_verified_artifact_is_stored_once_read_only_under_its_digest() {
    let (dir, runtime) = runtime();
    let bytes = std::fs::read(lib(MA_CROSS_1_0_0)).unwrap();
    let digest = Digest::of(&bytes);
    let first = runtime
        .stage("libma_cross_v1_0_0.so", &bytes, &digest)
        .unwrap();
    let again = runtime.stage_file(&lib(MA_CROSS_1_0_0)).unwrap();
    assert_eq!((first.digest, &first.path), (again.digest, &again.path));
    assert_eq!(
        (first.metadata.id.as_str(), first.metadata.version.as_str()),
        ("ma_cross", "1.0.0")
    );
    let relative = format!("artifacts/{digest}/libma_cross_v1_0_0.so");
    assert_eq!(first.path, dir.path().join(&relative));
    assert_eq!(
        tree(dir.path()),
        [
            "artifacts".to_owned(),
            format!("artifacts/{digest}"),
            relative
        ]
    );
    assert_eq!(mode(&first.path), 0o400);
    assert_eq!(std::fs::read(&first.path).unwrap(), bytes);
}

#[test]
fn an_artifact_altered_in_the_store_is_refused_at_load() {
    let (dir, runtime) = runtime();
    let stored = runtime.stage_file(&lib(MA_CROSS_1_0_0)).unwrap();
    // An operator (or a disk) changes the file after it was staged.
    let mut permissions = std::fs::metadata(&stored.path).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    permissions.set_readonly(false);
    std::fs::set_permissions(&stored.path, permissions).unwrap();
    let mut bytes = std::fs::read(&stored.path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&stored.path, &bytes).unwrap();

    let error = runtime.install(&stored.digest, json!({})).unwrap_err();
    assert_eq!(
        normalise(&error.to_string(), dir.path()),
        "sha256 mismatch for `[ROOT]/artifacts/[HASH]/libma_cross_v1_0_0.so`: expected [HASH], \
         got [HASH]; the artifact is corrupt or not the one that was published: fetch it again \
         from the registry"
    );
    assert_eq!(runtime.status().resident, []);
}

#[test]
fn a_signature_beside_an_artifact_that_cannot_be_read_refuses_the_load() {
    let (dir, runtime) = runtime();
    let stored = runtime.stage_file(&lib(MA_CROSS_1_0_0)).unwrap();
    // Something where the signature would be that is not a readable file: taken for no
    // signature, a damaged signature would pass for an unsigned artifact.
    std::fs::create_dir(stored.path.with_file_name("libma_cross_v1_0_0.so.sig")).unwrap();

    let error = runtime.install(&stored.digest, json!({})).unwrap_err();
    assert_eq!(
        normalise(&error.to_string(), dir.path()),
        "cannot read `[ROOT]/artifacts/[HASH]/libma_cross_v1_0_0.so.sig`: Is a directory (os \
         error 21)"
    );
    assert_eq!(runtime.status().resident, []);
}

#[test]
fn a_store_whose_artifacts_directory_is_a_file_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("artifacts"), b"").unwrap();
    let error = Runtime::new(options(dir.path())).unwrap_err();
    assert_eq!(
        normalise(&error.to_string(), dir.path()),
        "cannot create `[ROOT]/artifacts`: File exists (os error 17)"
    );
}

/// The permission bits of `path`.
fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

#[test]
fn the_store_is_private_to_the_hosts_user() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("var/store");
    let runtime = plugsync_host::Runtime::new(options(&store)).unwrap();
    let digest = install(&runtime, MA_CROSS_1_0_0, json!({}));
    let hour = std::time::Duration::from_secs(3600);
    runtime.set_checkpointing("ma_cross", Some(hour)).unwrap();
    runtime.checkpoint_now("ma_cross").unwrap();
    runtime
        .once_per_step("step-1", "install", &digest, || Ok(json!({})))
        .unwrap();
    // Directories `0700` whatever the umask, the host's state files `0600`, artifacts `0400`.
    for directory in [
        "var",
        "var/store",
        "var/store/artifacts",
        &format!("var/store/artifacts/{digest}"),
        "var/store/checkpoints",
        "var/store/steps",
        "var/store/steps/step-1",
    ] {
        assert_eq!(mode(&dir.path().join(directory)), 0o700, "{directory}");
    }
    for file in [
        "committed.json",
        "checkpoints/ma_cross.json",
        "steps/step-1/install.json",
    ] {
        assert_eq!(mode(&store.join(file)), 0o600, "{file}");
    }
    let artifact = store
        .join("artifacts")
        .join(digest.to_string())
        .join("libma_cross_v1_0_0.so");
    assert_eq!(mode(&artifact), 0o400);
}

#[test]
fn a_store_others_can_write_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    drop(plugsync_host::Runtime::new(options(&store)).unwrap());
    let artifacts = store.join("artifacts");
    for (path, open) in [(&store, 0o777), (&store, 0o720), (&artifacts, 0o702)] {
        chmod(path, open);
        let error = plugsync_host::Runtime::new(options(&store)).unwrap_err();
        assert!(
            matches!(&error, HostError::InsecureStore { path: p, mode, .. } if p == path && *mode == open),
            "{error:?}"
        );
        let shown = path.display().to_string();
        let uid = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(path).unwrap());
        assert_eq!(
            error.to_string(),
            format!(
                "store directory `{shown}` can be written by its group or others (mode \
                 {open:04o}, owner uid {uid}, this host runs as uid {uid}): whoever can write it \
                 can change the code this host loads; make it private to the host's user: \
                 `chown {uid} {shown} && chmod 700 {shown}`"
            )
        );
        chmod(path, 0o700);
    }
    // Readable by others is not a risk to the code it loads: accepted as it is.
    chmod(&store, 0o755);
    plugsync_host::Runtime::new(options(&store)).unwrap();

    // Owned by another user (only root can give it away: skipped otherwise).
    if std::os::unix::fs::chown(&artifacts, Some(65534), None).is_ok() {
        let error = plugsync_host::Runtime::new(options(&store)).unwrap_err();
        assert!(
            matches!(&error, HostError::InsecureStore { path, owner: 65534, .. } if *path == artifacts),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("belongs to another user"),
            "{error}"
        );
    }
}

#[test]
fn a_corrupt_artifact_is_repaired_by_staging_the_right_bytes() {
    let (dir, runtime) = runtime();
    let stored = runtime.stage_file(&lib(MA_CROSS_1_0_0)).unwrap();
    // A disk error (or a hand edit) corrupts the stored file.
    chmod(&stored.path, 0o600);
    let good = std::fs::read(&stored.path).unwrap();
    let mut bad = good.clone();
    bad[good.len() / 2] ^= 0xff;
    std::fs::write(&stored.path, &bad).unwrap();
    let error = runtime.install(&stored.digest, json!({})).unwrap_err();
    assert!(
        matches!(error, HostError::DigestMismatch { .. }),
        "{error:?}"
    );

    // Uploading the right bytes again replaces the corrupt file, whole and read-only.
    let again = runtime
        .stage("libma_cross_v1_0_0.so", &good, &stored.digest)
        .unwrap();
    assert_eq!(again.path, stored.path);
    assert_eq!(std::fs::read(&stored.path).unwrap(), good);
    assert_eq!(mode(&stored.path), 0o400);
    let digest = stored.digest;
    assert_eq!(
        tree(dir.path()),
        [
            "artifacts".to_owned(),
            format!("artifacts/{digest}"),
            format!("artifacts/{digest}/libma_cross_v1_0_0.so"),
        ]
    );
    runtime.install(&digest, json!({})).unwrap();
    let output = runtime.call("ma_cross", &bar("ES", 100.0)).unwrap();
    assert_eq!(output.receipt.digest, digest);
}

/// Whoever can write the store (the host's own uid) swaps the artifact's file for other bytes
/// in a loop while the host loads it. The host hashes the bytes it read and maps those very
/// bytes: each load either runs the verified version or is refused as a digest mismatch, never
/// maps the swapped-in file (which would show as a vtable that disagrees with the metadata
/// that was checked, or worse).
#[test]
fn a_file_swapped_while_it_loads_is_refused_or_loaded_as_verified() {
    let good = std::fs::read(lib(MA_CROSS_1_0_0)).unwrap();
    let evil = std::fs::read(lib(MA_CROSS_2_0_0)).unwrap();
    let digest = Digest::of(&good);
    let (mut loaded, mut refused) = (0, 0);
    // Each round loads into a fresh runtime and store (a digest maps once per runtime), and
    // each load stays mapped for the life of this process: a few dozen rounds.
    for round in 0..24 {
        let (dir, runtime) = runtime();
        let stored = runtime
            .stage("libma_cross_v1_0_0.so", &good, &digest)
            .unwrap();
        let side = dir.path().join("side");
        std::fs::create_dir(&side).unwrap();
        std::fs::write(side.join("good"), &good).unwrap();
        std::fs::write(side.join("evil"), &evil).unwrap();
        let stop = std::sync::atomic::AtomicBool::new(false);
        let outcome = std::thread::scope(|scope| {
            scope.spawn(|| {
                let next = side.join("next");
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    for source in ["evil", "good"] {
                        std::fs::hard_link(side.join(source), &next).unwrap();
                        std::fs::rename(&next, &stored.path).unwrap();
                    }
                }
            });
            let outcome = runtime.install(&digest, json!({}));
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
            outcome
        });
        match outcome {
            Ok(installed) => {
                assert_eq!(installed.version.version, "1.0.0", "round {round}");
                let state = state(&runtime.snapshot("ma_cross").unwrap());
                assert!(
                    state.get("fast_ma_period").is_some(),
                    "round {round}: {state}"
                );
                loaded += 1;
            }
            Err(HostError::DigestMismatch { expected, .. }) if expected == digest => refused += 1,
            Err(error) => panic!("round {round}: the swapped file was mapped: {error}"),
        }
    }
    assert_eq!(loaded + refused, 24);
}
