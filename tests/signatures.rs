//! With trusted keys, an artifact's signature is kept beside it in the store and checked
//! before every `dlopen` — install, swap, recover — not only when it is staged: an artifact
//! staged unsigned (through the runtime, before keys were configured, or planted in the store)
//! or whose stored signature was replaced is refused by name, version and digest, and nothing
//! is mapped. [`Runtime::allow_unsigned`] (`plugsync host --allow-unsigned-load`) is the only
//! way around it.

mod support;

use std::path::Path;

use ed25519_dalek::{Signer, SigningKey};
use plugsync_host::{
    CheckpointOutcome, Digest, HostError, Runtime, SwapRequest, TrustedKeys, signature_payload,
};
use serde_json::json;
use support::*;

/// The publisher's key, trusted by the hosts below.
fn publisher() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// A key nobody trusts.
fn stranger() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `key`'s signature (128 hex digits) of ma_cross `version` with the bytes of `library`.
fn sign(key: &SigningKey, library: &str, version: &str) -> String {
    let payload = signature_payload("ma_cross", version, &digest_of(library));
    hex(&key.sign(&payload).to_bytes())
}

/// Trusted keys holding the publisher's.
fn trusted(dir: &Path) -> TrustedKeys {
    let path = dir.join("trusted.keys");
    let public = hex(publisher().verifying_key().as_bytes());
    std::fs::write(&path, format!("# the release key\n{public}\n")).unwrap();
    TrustedKeys::load(&path).unwrap()
}

/// A runtime over `store` that trusts the publisher's key.
fn signed_runtime(store: &Path) -> Runtime {
    let mut options = options(store);
    options.load_policy.trusted_keys = trusted(store.parent().unwrap());
    Runtime::new(options).unwrap()
}

fn stage_bytes(runtime: &Runtime, library: &str, signature: Option<&str>) -> Digest {
    let bytes = std::fs::read(lib(library)).unwrap();
    let name = format!("lib{library}.so");
    runtime
        .stage_signed(&name, &bytes, &Digest::of(&bytes), signature)
        .unwrap()
        .digest
}

#[test]
fn with_trusted_keys_every_load_checks_the_signature_kept_beside_the_artifact() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let runtime = signed_runtime(&store);

    // Staged without a signature (the runtime's API does not require one): refused at load.
    let v1 = stage_bytes(&runtime, MA_CROSS_1_0_0, None);
    let error = runtime.install(&v1, json!({})).unwrap_err();
    assert!(
        matches!(&error, HostError::Unsigned { plugin, version, digest } if plugin == "ma_cross" && version == "1.0.0" && *digest == v1),
        "{error:?}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "plugin `ma_cross` 1.0.0 (sha256 {v1}) carries no signature, and this host loads \
             only artifacts signed by a key it trusts; it was not opened: stage it with its \
             publisher's signature (the `x-plugsync-signature` header, or a `LIB.sig` file \
             beside a `--load`ed `LIB`), or, for development only, start `plugsync host` with \
             `--allow-unsigned-load`"
        )
    );
    assert_eq!(runtime.status().resident, [], "nothing was mapped");

    // A signature by an untrusted key, or a trusted key's over other metadata: refused at
    // staging, and nothing is kept.
    let bytes = std::fs::read(lib(MA_CROSS_1_0_0)).unwrap();
    for signature in [
        sign(&stranger(), MA_CROSS_1_0_0, "1.0.0"),
        sign(&publisher(), MA_CROSS_1_0_0, "9.9.9"),
    ] {
        let error = runtime
            .stage_signed("libma_cross_v1_0_0.so", &bytes, &v1, Some(&signature))
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "the signature of plugin `ma_cross` 1.0.0 (sha256 {v1}) was not made by a key \
                 this host trusts, so it is not loaded: sign the artifact's id, version and \
                 sha256 with a trusted key (or add the publisher's public key to the host's \
                 trusted keys)"
            )
        );
    }
    let sig = store
        .join("artifacts")
        .join(v1.to_string())
        .join("libma_cross_v1_0_0.so.sig");
    assert!(!sig.exists());

    // Staged again with the publisher's signature: kept beside the artifact, and it loads.
    let good = sign(&publisher(), MA_CROSS_1_0_0, "1.0.0");
    let stored = runtime
        .stage_signed("libma_cross_v1_0_0.so", &bytes, &v1, Some(&good))
        .unwrap();
    assert_eq!(stored.signature.as_deref(), Some(good.as_str()));
    assert_eq!(std::fs::read_to_string(&sig).unwrap(), format!("{good}\n"));
    runtime.install(&v1, json!({})).unwrap();

    // A swap to an unsigned version is refused before it maps it; the slot keeps serving 1.0.0.
    let v2 = stage_bytes(&runtime, MA_CROSS_2_0_0, None);
    let error = runtime.swap(SwapRequest::new("ma_cross", v2)).unwrap_err();
    assert!(
        matches!(&error, HostError::Unsigned { version, .. } if version == "2.0.0"),
        "{error:?}"
    );
    assert_eq!(runtime.status().resident.len(), 1, "2.0.0 was not mapped");
    let call = runtime.call("ma_cross", &bar("ES", 100.0)).unwrap();
    assert_eq!(call.receipt.digest, v1);

    // Signed, it swaps.
    let signed = sign(&publisher(), MA_CROSS_2_0_0, "2.0.0");
    stage_bytes(&runtime, MA_CROSS_2_0_0, Some(&signed));
    runtime.swap(SwapRequest::new("ma_cross", v2)).unwrap();
    runtime.commit("ma_cross").unwrap();
}

#[test]
fn an_artifact_staged_before_keys_were_trusted_is_refused_at_recovery_unless_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    // A host without keys stages and installs ma_cross 1.0.0 unsigned, and commits it.
    let v1 = {
        let runtime = Runtime::new(options(&store)).unwrap();
        let v1 = stage(&runtime, MA_CROSS_1_0_0);
        runtime.install(&v1, json!({})).unwrap();
        v1
    };
    // Restarted with trusted keys, it does not load it back unsigned …
    // (it is not started, and says why; the other plugins would run) …
    let runtime = signed_runtime(&store);
    let recovery = runtime.recover().unwrap();
    let CheckpointOutcome::NotStarted { reason } = &recovery.plugins[0].checkpoint else {
        panic!("{recovery:?}");
    };
    assert!(
        reason.contains("carries no signature")
            && reason.ends_with(
                "it was not started (the other plugins run; calls to `ma_cross` fail as not \
             loaded until it can be loaded)"
            ),
        "{reason}"
    );
    assert_eq!(runtime.status().resident, []);
    // … nor installed by digest …
    let error = runtime.install(&v1, json!({})).unwrap_err();
    assert!(matches!(error, HostError::Unsigned { .. }), "{error:?}");
    drop(runtime);

    // … unless explicitly allowed (development).
    let runtime = signed_runtime(&store);
    runtime.allow_unsigned(&v1);
    let recovery = runtime.recover().unwrap();
    assert_eq!(recovery.plugins[0].version.digest, v1);
}

#[test]
fn a_signature_staged_on_a_host_without_keys_is_kept_for_when_keys_are_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let good = sign(&publisher(), MA_CROSS_1_0_0, "1.0.0");
    // A host without keys checks no signature, but keeps a well-formed one beside the
    // artifact …
    let v1 = {
        let runtime = Runtime::new(options(&store)).unwrap();
        let v1 = stage_bytes(&runtime, MA_CROSS_1_0_0, Some(&good));
        runtime.install(&v1, json!({})).unwrap();
        v1
    };
    // … so that restarted with trusted keys, it loads it back.
    let runtime = signed_runtime(&store);
    let recovery = runtime.recover().unwrap();
    assert_eq!(recovery.plugins[0].version.digest, v1);
    let served = runtime.call("ma_cross", &bar("ES", 100.0)).unwrap();
    assert_eq!(served.receipt.digest, v1);
}

#[test]
fn a_malformed_signature_is_refused_with_trusted_keys_and_dropped_with_a_warning_without() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(lib(MA_CROSS_1_0_0)).unwrap();
    let v1 = Digest::of(&bytes);
    let malformed = "not 128 hex digits";

    let signed = signed_runtime(&dir.path().join("signed"));
    let error = signed
        .stage_signed("libma_cross_v1_0_0.so", &bytes, &v1, Some(malformed))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "the signature of plugin `ma_cross` 1.0.0 (sha256 {v1}) is not 128 hex digits, so it \
             is not loaded: sign the artifact's id, version and sha256 with a trusted key (or add \
             the publisher's public key to the host's trusted keys)"
        )
    );
    assert!(
        !dir.path()
            .join("signed/artifacts")
            .join(v1.to_string())
            .exists(),
        "nothing is written"
    );

    // Without keys nothing checks it now: kept, it would fail every load once keys are
    // trusted, so it is dropped, and the host says so.
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    let stored = tracing::subscriber::with_default(subscriber, || {
        let (_store, runtime) = runtime();
        runtime
            .stage_signed("libma_cross_v1_0_0.so", &bytes, &v1, Some(malformed))
            .unwrap()
    });
    assert_eq!(stored.signature, None);
    let beside = stored.path.with_file_name("libma_cross_v1_0_0.so.sig");
    assert!(!beside.exists(), "{} was written", beside.display());
    let log = captured.text();
    assert!(
        log.lines().any(|line| line.contains("WARN")
            && line.contains("ignoring a signature that is not 128 hex digits")),
        "no warning in the host log:\n{log}"
    );
}

#[test]
fn a_signature_replaced_in_the_store_is_refused_at_load() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let runtime = signed_runtime(&store);
    let good = sign(&publisher(), MA_CROSS_1_0_0, "1.0.0");
    let v1 = stage_bytes(&runtime, MA_CROSS_1_0_0, Some(&good));
    let sig = store
        .join("artifacts")
        .join(v1.to_string())
        .join("libma_cross_v1_0_0.so.sig");
    // Whoever can write the store swaps in a signature of their own.
    std::fs::remove_file(&sig).unwrap();
    std::fs::write(&sig, sign(&stranger(), MA_CROSS_1_0_0, "1.0.0")).unwrap();
    let error = runtime.install(&v1, json!({})).unwrap_err();
    assert!(
        matches!(&error, HostError::BadSignature { digest, .. } if *digest == v1),
        "{error:?}"
    );
    // Allowing it unsigned does not let a bad signature through.
    runtime.allow_unsigned(&v1);
    let error = runtime.install(&v1, json!({})).unwrap_err();
    assert!(matches!(error, HostError::BadSignature { .. }), "{error:?}");
    // Deleting it makes it unsigned: refused as well (here: allowed, as development).
    std::fs::remove_file(&sig).unwrap();
    runtime.install(&v1, json!({})).unwrap();
    assert_eq!(runtime.status().resident.len(), 1);
}

#[test]
fn a_local_library_is_staged_with_the_signature_file_beside_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let runtime = signed_runtime(&store);
    let local = dir.path().join("libma_cross_v1_0_0.so");
    std::fs::copy(lib(MA_CROSS_1_0_0), &local).unwrap();
    // No `LIB.sig`: staged unsigned, refused at load.
    let unsigned = runtime.stage_file(&local).unwrap();
    assert_eq!(unsigned.signature, None);
    assert!(matches!(
        runtime.check_signature(&unsigned),
        Err(HostError::Unsigned { .. })
    ));
    // `LIB.sig`: the same 128 hex digits as the control API's header (a newline is fine).
    let good = sign(&publisher(), MA_CROSS_1_0_0, "1.0.0");
    std::fs::write(
        dir.path().join("libma_cross_v1_0_0.so.sig"),
        format!("{good}\n"),
    )
    .unwrap();
    let signed = runtime.stage_file(&local).unwrap();
    assert_eq!(signed.signature.as_deref(), Some(good.as_str()));
    runtime.install(&signed.digest, json!({})).unwrap();
    // A name the store keeps for signatures is not an artifact name.
    let error = runtime
        .stage(
            "lib.so.sig",
            &std::fs::read(&local).unwrap(),
            &signed.digest,
        )
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "artifact name `lib.so.sig` ends in `.sig`, which the store keeps for an artifact's \
         signature: name the library `lib<plugin>.so`"
    );
}
