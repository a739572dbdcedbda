//! A registry directory, through the binary and the library, with the real built plugins:
//! publish (signed and not), republish, tamper, promote, yank, two publishers at once, keys,
//! and paths that would leave the registry.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use plugsync::registry::{DirectoryRegistry, IndexFile, RegistryError};
use plugsync::spec::model::Channel;
use plugsync_host::{Digest, TrustedKeys};
use support::{lib, normalise, refused, succeeded as ok};

fn plugsync(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plugsync"))
        .args(args)
        .current_dir(dir)
        .env_remove("PLUGSYNC_REGISTRY")
        .output()
        .unwrap()
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn index(registry: &Path, plugin: &str) -> IndexFile {
    DirectoryRegistry::new(registry)
        .index(plugin)
        .unwrap()
        .unwrap()
}

#[test]
fn a_signed_publish_is_in_the_index_with_a_signature_a_host_with_the_key_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let keys = ok(plugsync(dir.path(), &["keygen", "desk-signing"]));
    assert!(keys.contains("wrote desk-signing.key"), "{keys}");
    let key = dir.path().join("desk-signing.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let library = lib("ma_cross_v1_0_0");
    let registry = dir.path().join("registry");
    let published = ok(plugsync(
        dir.path(),
        &[
            "publish",
            path(&library),
            "--registry",
            "registry",
            "--channel",
            "stable",
            "--sign-key",
            "desk-signing.key",
        ],
    ));
    assert_eq!(
        normalise(&published, dir.path()),
        "published ma_cross 1.0.0 on `stable` (sha256 [HASH]), signed\n"
    );

    let entry = &index(&registry, "ma_cross").versions[0];
    let bytes = std::fs::read(&library).unwrap();
    assert_eq!(entry.sha256, Digest::of(&bytes));
    assert_eq!(
        (
            entry.version.as_str(),
            entry.channel,
            entry.yanked,
            entry.file.as_str()
        ),
        (
            "1.0.0",
            Channel::Stable,
            false,
            "artifacts/ma_cross/1.0.0/libma_cross_v1_0_0.so"
        )
    );
    assert_eq!(
        entry.dependencies.get("risk_model").map(String::as_str),
        Some(">=1.0, <2")
    );
    // The public half is a trusted-keys line: a host with it accepts the signature.
    let trusted = TrustedKeys::load(&dir.path().join("desk-signing.pub")).unwrap();
    let metadata = plugsync_host::inspect(&library).unwrap();
    trusted
        .check_artifact(&metadata, &entry.sha256, entry.signature.as_deref())
        .expect("the signature verifies");
    // ...and refuses it for other bytes.
    assert!(
        trusted
            .check_artifact(&metadata, &Digest::of(b"other"), entry.signature.as_deref())
            .is_err()
    );
    let artifact = DirectoryRegistry::new(&registry)
        .artifact("ma_cross", entry)
        .unwrap();
    assert_eq!(artifact, bytes);

    // The same bytes again: nothing to do. Other bytes under the version: refused.
    let again = ok(plugsync(
        dir.path(),
        &[
            "publish",
            path(&library),
            "--registry",
            "registry",
            "--channel",
            "stable",
        ],
    ));
    assert_eq!(
        again,
        "ma_cross 1.0.0 is already published on `stable` with these bytes: nothing to do\n"
    );
    let rebuilt = dir.path().join("libma_cross_v1_0_0.so");
    let mut changed = bytes.clone();
    changed.push(0);
    std::fs::write(&rebuilt, &changed).unwrap();
    let message = refused(plugsync(
        dir.path(),
        &[
            "publish",
            path(&rebuilt),
            "--registry",
            "registry",
            "--channel",
            "stable",
        ],
    ));
    assert_eq!(
        message,
        format!(
            "error: `ma_cross` 1.0.0 is already published with sha256 {}, and this library's is \
             {}: a published version never changes; bump the version and publish that\n",
            Digest::of(&bytes),
            Digest::of(&changed)
        )
    );
    assert_eq!(index(&registry, "ma_cross").versions.len(), 1);
}

#[test]
fn a_published_artifact_changed_by_one_byte_is_refused_naming_both_digests() {
    let dir = tempfile::tempdir().unwrap();
    let registry = DirectoryRegistry::new(dir.path().join("registry"));
    registry
        .publish(&lib("ma_cross_v1_0_0"), Channel::Stable, None)
        .unwrap();
    let entry = index(registry.root(), "ma_cross").versions[0].clone();
    let file = registry.root().join(&entry.file);
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[1000] ^= 1;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&file, &bytes).unwrap();
    let error = registry.artifact("ma_cross", &entry).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "the artifact of `ma_cross` 1.0.0 (`artifacts/ma_cross/1.0.0/libma_cross_v1_0_0.so`) \
             has sha256 {}, not the {} its index records: it was altered or corrupted; republish \
             it from its build",
            Digest::of(&bytes),
            entry.sha256
        )
    );
}

#[test]
fn promote_moves_a_version_between_channels_and_yank_withdraws_it() {
    let dir = tempfile::tempdir().unwrap();
    let registry = dir.path().join("registry");
    for (name, channel) in [("ma_cross_v1_0_0", "stable"), ("ma_cross_v2_0_0", "beta")] {
        ok(plugsync(
            dir.path(),
            &[
                "publish",
                path(&lib(name)),
                "--registry",
                "registry",
                "--channel",
                channel,
            ],
        ));
    }
    assert_eq!(
        ok(plugsync(
            dir.path(),
            &[
                "promote",
                "ma_cross",
                "2.0.0",
                "--channel",
                "stable",
                "--registry",
                "registry"
            ],
        )),
        "ma_cross 2.0.0: `beta` -> `stable`\n"
    );
    assert_eq!(
        ok(plugsync(
            dir.path(),
            &["yank", "ma_cross", "2.0.0", "--registry", "registry"]
        )),
        "yanked ma_cross 2.0.0: resolution skips it (a lock that names it still installs it)\n"
    );
    let entry = index(&registry, "ma_cross").versions[1].clone();
    assert_eq!((entry.channel, entry.yanked), (Channel::Stable, true));
    assert_eq!(
        ok(plugsync(
            dir.path(),
            &[
                "yank",
                "ma_cross",
                "2.0.0",
                "--undo",
                "--registry",
                "registry"
            ]
        )),
        "ma_cross 2.0.0 is resolvable again\n"
    );
    assert_eq!(
        refused(plugsync(
            dir.path(),
            &[
                "promote",
                "ma_cross",
                "3.0.0",
                "--channel",
                "stable",
                "--registry",
                "registry"
            ],
        )),
        "error: `ma_cross` 3.0.0 is not published (published: 1.0.0, 2.0.0)\n"
    );
    // Publishing the same bytes on another channel says how to move them instead.
    assert_eq!(
        refused(plugsync(
            dir.path(),
            &[
                "publish",
                path(&lib("ma_cross_v1_0_0")),
                "--registry",
                "registry",
                "--channel",
                "dev"
            ],
        )),
        "error: `ma_cross` 1.0.0 is already published on `stable`: move it to `dev` with \
         `plugsync promote ma_cross 1.0.0 --channel dev`\n"
    );
}

#[test]
fn two_publishing_processes_at_once_lose_nothing() {
    // Two processes publish two versions of one plugin into one fresh registry, started
    // together: without the registry's lock, each reads the index, adds its version and writes
    // it back, and one version is lost whenever their windows overlap. Twenty rounds.
    let libraries: Vec<PathBuf> = ["ma_cross_v1_0_0", "ma_cross_v2_0_0", "ma_cross_v2_1_0"]
        .iter()
        .map(|name| lib(name))
        .collect();
    for round in 0..20 {
        let dir = tempfile::tempdir().unwrap();
        let children: Vec<std::process::Child> = libraries
            .iter()
            .map(|library| {
                Command::new(env!("CARGO_BIN_EXE_plugsync"))
                    .args(["publish", path(library), "--registry", "registry"])
                    .args(["--channel", "stable"])
                    .current_dir(dir.path())
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut child in children {
            assert!(child.wait().unwrap().success(), "round {round}");
        }
        let versions: Vec<String> = index(&dir.path().join("registry"), "ma_cross")
            .versions
            .into_iter()
            .map(|entry| entry.version)
            .collect();
        assert_eq!(versions, ["1.0.0", "2.0.0", "2.1.0"], "round {round}");
    }
}

#[test]
fn keys_are_never_overwritten_and_a_public_key_is_not_a_signing_key() {
    let dir = tempfile::tempdir().unwrap();
    ok(plugsync(dir.path(), &["keygen", "k"]));
    assert_eq!(
        refused(plugsync(dir.path(), &["keygen", "k"])),
        "error: `k.key` exists: `plugsync keygen` never overwrites a key; choose another name\n"
    );
    let publish_with = |key: &str| {
        refused(plugsync(
            dir.path(),
            &[
                "publish",
                path(&lib("ma_cross_v1_0_0")),
                "--registry",
                "registry",
                "--channel",
                "stable",
                "--sign-key",
                key,
            ],
        ))
    };
    use std::os::unix::fs::PermissionsExt;
    let public = dir.path().join("k.pub");
    std::fs::set_permissions(&public, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        publish_with("k.pub"),
        "error: the signing key `k.pub` cannot be used: the key is not hex digits\n"
    );
    // A private key others may read is refused (and may have leaked).
    let private = dir.path().join("k.key");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        publish_with("k.key"),
        "error: the signing key `k.key` cannot be used: others may read it (mode 644): `chmod \
         600` it, and consider whether it leaked\n"
    );
    // A name with a dot keeps it: `desk.2026.key`, not `desk.key`.
    ok(plugsync(dir.path(), &["keygen", "desk.2026"]));
    assert!(dir.path().join("desk.2026.key").exists());
}

#[test]
fn paths_that_would_leave_the_registry_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let registry = DirectoryRegistry::new(dir.path());
    for plugin in ["../committed", "Ma_Cross", ""] {
        assert!(
            matches!(
                registry.index(plugin),
                Err(RegistryError::BadPluginId { .. })
            ),
            "{plugin:?}"
        );
    }
    std::fs::create_dir_all(dir.path().join("index")).unwrap();
    for file in [
        "../../etc/passwd",
        "/etc/passwd",
        "artifacts/../../x.so",
        "index/ma_cross.json",
        "artifacts/%2e%2e/%2e%2e/x.so",
    ] {
        let text = serde_json::json!({"plugin": "ma_cross", "versions": [{
            "version": "1.0.0", "channel": "stable", "sha256": "0".repeat(64), "file": file,
            "abi": "1.2", "framework": "^0.1", "kind": "strategy", "stateSchema": 1,
        }]});
        std::fs::write(dir.path().join("index/ma_cross.json"), text.to_string()).unwrap();
        let error = registry.index("ma_cross").unwrap_err();
        assert_eq!(
            error.to_string(),
            format!("`{file}` would lead outside the registry: refused"),
        );
    }
}

#[test]
fn an_unsigned_version_published_again_with_a_key_gets_its_signature() {
    let dir = tempfile::tempdir().unwrap();
    ok(plugsync(dir.path(), &["keygen", "k"]));
    let library = lib("ma_cross_v1_0_0");
    let publish = |key: Option<&str>| {
        let mut args = vec!["publish", path(&library), "--registry", "registry"];
        args.extend(["--channel", "stable"]);
        if let Some(key) = key {
            args.extend(["--sign-key", key]);
        }
        ok(plugsync(dir.path(), &args))
    };
    publish(None);
    assert_eq!(
        index(&dir.path().join("registry"), "ma_cross").versions[0].signature,
        None
    );
    let signed = publish(Some("k.key"));
    assert!(signed.ends_with(", signed\n"), "{signed}");
    let entry = index(&dir.path().join("registry"), "ma_cross").versions[0].clone();
    let trusted = TrustedKeys::load(&dir.path().join("k.pub")).unwrap();
    trusted
        .check_artifact(
            &plugsync_host::inspect(&library).unwrap(),
            &entry.sha256,
            entry.signature.as_deref(),
        )
        .expect("the added signature verifies");
}

#[test]
fn declarative_migrations_are_published_with_a_version() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("migrations.json"),
        r#"[{"from": ">=1.0, <2", "to": "2.0.0", "rules": [
            {"op": "rename", "from": "/state/fast_ma_period", "to": "/state/fast_period"},
            {"op": "default", "path": "/state/signal_threshold", "value": 0.01}]}]"#,
    )
    .unwrap();
    let library = lib("ma_cross_v2_0_0");
    ok(plugsync(
        dir.path(),
        &[
            "publish",
            path(&library),
            "--registry",
            "registry",
            "--channel",
            "stable",
            "--migrations",
            "migrations.json",
        ],
    ));
    let entry = &index(&dir.path().join("registry"), "ma_cross").versions[0];
    assert_eq!(
        serde_json::to_value(&entry.migrations).unwrap()[0]["rules"][0]["op"],
        "rename"
    );
    std::fs::write(
        dir.path().join("bad.json"),
        r#"[{"from": "1.x", "rules": []}]"#,
    )
    .unwrap();
    let message = refused(plugsync(
        dir.path(),
        &[
            "publish",
            path(&lib("ma_cross_v2_1_0")),
            "--registry",
            "registry",
            "--channel",
            "stable",
            "--migrations",
            "bad.json",
        ],
    ));
    assert!(
        message.starts_with("error: `bad.json` is not a list of migrations: missing field `to`"),
        "{message}"
    );
}
