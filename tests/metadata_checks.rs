//! Metadata is checked before a library is stored or opened: a plugin id that could name a
//! file outside its place (`../committed`), or metadata strings with control characters
//! (which would reach status, logs and terminals), are refused at staging, with nothing
//! written. The libraries are real builds with their `.plugsync` section edited in place.

mod support;

use plugsync_host::{Digest, HostError, SwapRequest};
use serde_json::json;
use support::*;

/// ma_cross 1.0.0's bytes with `from` replaced by `to` (same length) in its metadata section.
fn edited(from: &str, to: &str) -> Vec<u8> {
    edited_library(MA_CROSS_1_0_0, from, to)
}

/// A built library's bytes with `from` replaced by `to` (same length) in its metadata section.
fn edited_library(name: &str, from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len(), "an edit in place keeps the length");
    let mut bytes = std::fs::read(lib(name)).unwrap();
    let at = bytes
        .windows(from.len())
        .position(|w| w == from.as_bytes())
        .unwrap_or_else(|| panic!("`{from}` is in the metadata"));
    bytes[at..at + from.len()].copy_from_slice(to.as_bytes());
    bytes
}

#[test]
fn unsafe_ids_and_control_characters_in_metadata_are_refused_before_anything_is_stored() {
    let cases = [
        (
            r#""id":"ma_cross""#,
            r#""id":"../commi""#,
            "plugin id `../commi` is not valid: use a lowercase letter, then up to 63 lowercase \
             letters, digits or `_` (like `ma_cross`); it was not loaded",
        ),
        (
            r#""id":"ma_cross""#,
            r#""id":"Ma_Cross""#,
            "plugin id `Ma_Cross` is not valid: use a lowercase letter, then up to 63 lowercase \
             letters, digits or `_` (like `ma_cross`); it was not loaded",
        ),
        (
            r#""kind":"strategy""#,
            r#""kind":"\u001b[m""#,
            "plugin `ma_cross` has a control character in its metadata field `kind`; it was not \
             opened: rebuild it without one",
        ),
    ];
    for (from, to, message) in cases {
        let (store, runtime) = runtime();
        let bytes = edited(from, to);
        let error = runtime
            .stage("libedited.so", &bytes, &Digest::of(&bytes))
            .unwrap_err();
        assert!(
            matches!(
                error,
                HostError::BadPluginId { .. } | HostError::ControlCharacter { .. }
            ),
            "{to}: {error:?}"
        );
        assert_eq!(error.to_string(), message, "{to}");
        let stored = std::fs::read_dir(store.path().join("artifacts"))
            .unwrap()
            .count();
        assert_eq!(stored, 0, "{to}: nothing is stored");
    }
}

#[test]
fn a_switch_between_two_builds_of_one_version_with_other_state_schemas_is_refused() {
    let (_store, runtime) = runtime();
    let running = install(&runtime, MA_CROSS_2_0_0, json!({}));
    // Another build of 2.0.0 that claims state schema 3: a reconfigure would hand it a state
    // of schema 2 unchanged.
    let bytes = edited_library(MA_CROSS_2_0_0, r#""state_schema":2"#, r#""state_schema":3"#);
    let other_build = runtime
        .stage("libma_cross_v2_0_0.so", &bytes, &Digest::of(&bytes))
        .unwrap()
        .digest;
    let error = runtime
        .swap(SwapRequest::new("ma_cross", other_build))
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "`ma_cross` 2.0.0 is running with state schema 2, and the build to switch to has state \
         schema 3: a switch within one version keeps the state as it is; give the new build its \
         own version (with a migration), or send migration rules"
    );
    let status = runtime.status();
    assert_eq!(status.plugins[0].version.digest, running);
    assert_eq!(status.resident.len(), 1, "the other build was never mapped");
}
