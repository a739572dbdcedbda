//! `plugsync lock` through the binary, against a registry directory holding the real built
//! plugins: the lock written, honoured, checked with `--locked`, moved with `--update`; the
//! same on two machines; artifacts verified (tampered bytes, signatures, requireSignatures).

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::{lib, normalise, refused, succeeded as ok};

fn plugsync(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plugsync"))
        .args(args)
        .current_dir(dir)
        .env_remove("PLUGSYNC_REGISTRY")
        .env_remove("PLUGSYNC_TRUSTED_KEYS")
        .env("PLUGSYNC_STATE_DIR", dir.join("state"))
        .output()
        .unwrap()
}

/// A directory with a registry holding ma_cross 1.0.0 (stable), 2.0.0 (stable), 2.1.0 (beta)
/// and risk_model 1.0.0 and 2.0.0 (stable), signed with `k.key` when `signed`; and a
/// plugins.yaml with `spec`.
fn desk(spec: &str, signed: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    ok(plugsync(dir.path(), &["keygen", "k"]));
    for (name, channel) in [
        ("ma_cross_v1_0_0", "stable"),
        ("ma_cross_v2_0_0", "stable"),
        ("ma_cross_v2_1_0", "beta"),
        ("risk_model_v1_0_0", "stable"),
        ("risk_model_v2_0_0", "stable"),
    ] {
        let library = lib(name);
        let mut args = vec![
            "publish",
            library.to_str().unwrap(),
            "--registry",
            "registry",
        ];
        args.extend(["--channel", channel]);
        if signed {
            args.extend(["--sign-key", "k.key"]);
        }
        ok(plugsync(dir.path(), &args));
    }
    write_desired(dir.path(), spec);
    dir
}

fn write_desired(dir: &Path, spec: &str) {
    let text = format!(
        "apiVersion: plugsync/v1\nkind: PluginSet\nmetadata: {{name: desk-a}}\nspec:\n  registry: {{url: registry}}\n{spec}"
    );
    std::fs::write(dir.join("plugins.yaml"), text).unwrap();
}

const PINNED_V1: &str = "  plugins:\n    - {id: risk_model, version: 1.0.0, config: {max_position: 100}}\n    - {id: ma_cross, channel: stable, constraint: \"<2\"}\n";

#[test]
fn a_lock_is_written_then_honoured_and_a_config_edit_leaves_it_current() {
    let dir = desk(PINNED_V1, false);
    let first = ok(plugsync(dir.path(), &["lock"]));
    assert_eq!(
        normalise(&first, dir.path()),
        "  risk_model  1.0.0        sha256 [SHORT]  pinned\n  ma_cross    1.0.0        sha256 [SHORT]  channel `stable` with constraint `<2`\nwrote plugins.lock (2 changes):\n  `ma_cross` added at 1.0.0\n  `risk_model` added at 1.0.0\n"
    );
    let lock = std::fs::read_to_string(dir.path().join("plugins.lock")).unwrap();
    // Again: nothing changes. A config-only edit does not make it stale either.
    assert!(ok(plugsync(dir.path(), &["lock"])).ends_with("plugins.lock is up to date\n"));
    write_desired(dir.path(), &PINNED_V1.replace("100", "50"));
    assert!(ok(plugsync(dir.path(), &["lock", "--locked"])).ends_with("is up to date\n"));
    assert_eq!(
        std::fs::read_to_string(dir.path().join("plugins.lock")).unwrap(),
        lock
    );

    // Widening the constraint: the locked 1.0.0 still fits and is kept; `--update` moves it.
    write_desired(dir.path(), &PINNED_V1.replace("\"<2\"", "\"<3\""));
    let kept = ok(plugsync(dir.path(), &["lock"]));
    assert!(kept.contains("ma_cross    1.0.0"), "{kept}");
    let moved = ok(plugsync(dir.path(), &["lock", "--update", "ma_cross"]));
    assert!(moved.contains("ma_cross    2.0.0"), "{moved}");
    assert!(moved.contains("`ma_cross` 1.0.0 → 2.0.0"), "{moved}");
}

#[test]
fn locked_refuses_a_lock_that_would_change_and_says_what() {
    let dir = desk(PINNED_V1, false);
    ok(plugsync(dir.path(), &["lock"]));
    write_desired(
        dir.path(),
        &PINNED_V1.replace("channel: stable, constraint: \"<2\"", "version: 2.0.0"),
    );
    let message = refused(plugsync(dir.path(), &["lock", "--locked"]));
    expect_test::expect![[r#"
        error: `plugins.lock` is not the lock this plugins.yaml and registry give, and `--locked` forbids changing it:
          `ma_cross` 1.0.0 → 2.0.0
          plugins.yaml changed since the lock was made
        run `plugsync lock` and commit the new lock
    "#]].assert_eq(&message);
    let fresh = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.path().join("plugins.yaml"),
        fresh.path().join("plugins.yaml"),
    )
    .unwrap();
    std::os::unix::fs::symlink(dir.path().join("registry"), fresh.path().join("registry")).unwrap();
    expect_test::expect![[r#"
        error: `plugins.lock` is not the lock this plugins.yaml and registry give, and `--locked` forbids changing it:
          there is no lock yet
          `ma_cross` added at 2.0.0
          `risk_model` added at 1.0.0
        run `plugsync lock` and commit the new lock
    "#]].assert_eq(&refused(plugsync(fresh.path(), &["lock", "--locked"])));
}

#[test]
fn two_machines_write_the_same_lock() {
    let dir = desk(PINNED_V1, false);
    let other = tempfile::tempdir().unwrap();
    // The same repository checked out elsewhere: plugins.yaml and the registry, another cache.
    std::fs::copy(
        dir.path().join("plugins.yaml"),
        other.path().join("plugins.yaml"),
    )
    .unwrap();
    std::os::unix::fs::symlink(dir.path().join("registry"), other.path().join("registry")).unwrap();
    ok(plugsync(dir.path(), &["lock"]));
    ok(plugsync(other.path(), &["lock"]));
    assert_eq!(
        std::fs::read(dir.path().join("plugins.lock")).unwrap(),
        std::fs::read(other.path().join("plugins.lock")).unwrap()
    );
}

#[test]
fn a_tampered_artifact_is_refused_naming_both_digests_and_no_lock_is_written() {
    let dir = desk(PINNED_V1, false);
    let file = dir
        .path()
        .join("registry/artifacts/risk_model/1.0.0/librisk_model_v1_0_0.so");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[4096] ^= 1;
    std::fs::write(&file, &bytes).unwrap();
    let message = refused(plugsync(dir.path(), &["lock"]));
    assert_eq!(
        normalise(&message, dir.path()),
        "error: the artifact of `risk_model` 1.0.0 (`artifacts/risk_model/1.0.0/librisk_model_v1_0_0.so`) has sha256 [HASH], not the [HASH] its index records: it was altered or corrupted; republish it from its build\n"
    );
    assert!(!dir.path().join("plugins.lock").exists());
}

#[test]
fn signatures_are_checked_with_the_keys_given_and_required_by_policy() {
    let signed = desk(PINNED_V1, true);
    let locked = ok(plugsync(
        signed.path(),
        &["lock", "--trusted-keys", "k.pub"],
    ));
    assert!(locked.contains("pinned, signed"), "{locked}");

    // Signed, but by a key the lock is not told to trust.
    ok(plugsync(signed.path(), &["keygen", "other"]));
    let message = refused(plugsync(
        signed.path(),
        &[
            "lock",
            "--trusted-keys",
            "other.pub",
            "--state-dir",
            "other-cache",
        ],
    ));
    assert_eq!(
        normalise(&message, signed.path()),
        "error: `risk_model` 1.0.0 (sha256 [HASH]) is signed by no key given in \
         `--trusted-keys`: publish it signed (`plugsync publish --sign-key`) by a key in \
         `--trusted-keys`, or pin a version that is\n"
    );

    let unsigned = desk(PINNED_V1, false);
    let other_key = unsigned.path().join("k.pub");
    let message = refused(plugsync(
        unsigned.path(),
        &["lock", "--trusted-keys", other_key.to_str().unwrap()],
    ));
    assert_eq!(
        normalise(&message, unsigned.path()),
        "error: `risk_model` 1.0.0 (sha256 [HASH]) is not signed: publish it signed (`plugsync \
         publish --sign-key`) by a key in `--trusted-keys`, or pin a version that is\n"
    );
    write_desired(
        unsigned.path(),
        &format!("  policy: {{requireSignatures: true}}\n{PINNED_V1}"),
    );
    assert_eq!(
        refused(plugsync(unsigned.path(), &["lock"])),
        "error: `plugins.yaml` sets `policy.requireSignatures`, but no key is trusted: pass \
         `--trusted-keys FILE` (the publishers' public keys; never taken from plugins.yaml)\n"
    );
}

#[test]
fn an_invalid_plugins_yaml_is_reported_whole_and_an_impossible_set_explained() {
    let dir = desk("  plugins:\n    - {id: ma_cross, verison: 1.0.0}\n", false);
    let message = refused(plugsync(dir.path(), &["lock"]));
    assert!(
        message.starts_with("error: unknown key `verison` in a plugin\n --> plugins.yaml:7:22"),
        "{message}"
    );
    write_desired(
        dir.path(),
        "  plugins:\n    - {id: risk_model, version: 2.0.0}\n    - {id: ma_cross, version: 1.0.0}\n",
    );
    let message = refused(plugsync(dir.path(), &["lock"]));
    assert!(
        message.contains("`ma_cross` 1.0.0 needs `risk_model` >=1.0, <2"),
        "{message}"
    );
}
