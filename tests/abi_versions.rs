//! ABI minors: a library built for an ABI minor older than the host needs (1.0: its vtable
//! lacks 1.1's `copy_state`, `serialize_copy` and `free_copy`) is refused from its metadata,
//! before it is mapped; a 1.1 library (without 1.2's optional `set_host`) still loads and
//! serves. The libraries are real builds edited in place, as in `metadata_checks.rs`; that no
//! code of a refused library runs is proven with a constructor in `loader.rs`.

mod support;

use plugsync_host::{Digest, HostError, SwapRequest, SwapSafeAnswer, SwitchWhen};
use plugsync_plugin::abi::{ABI_MAJOR, ABI_MINOR, PluginVTable, VTABLE_SIZE_1_1, VTABLE_SIZE_1_2};
use serde_json::json;
use support::*;

/// `bytes` with `from` replaced by `to` (same length), where `from` occurs exactly once.
fn edit(bytes: &mut [u8], from: &[u8], to: &[u8]) {
    assert_eq!(from.len(), to.len(), "an edit in place keeps the length");
    let found: Vec<usize> = bytes
        .windows(from.len())
        .enumerate()
        .filter(|(_, w)| *w == from)
        .map(|(at, _)| at)
        .collect();
    assert_eq!(found.len(), 1, "`{from:x?}` occurs once, at {found:?}");
    let at = found[0];
    bytes[at..at + from.len()].copy_from_slice(to);
}

/// The `abi_minor` entry this SDK writes in the metadata.
fn minor_entry(minor: u16) -> String {
    format!(r#""abi_minor":{minor}"#)
}

/// The vtable header as it lies in the file: ABI version and size, native-endian `u32`s.
fn header(major: u16, minor: u16, size: usize) -> Vec<u8> {
    let version = (u32::from(major) << 16) | u32::from(minor);
    [version.to_ne_bytes(), (size as u32).to_ne_bytes()].concat()
}

/// Stages `bytes` (refused), then plants them in the store and installs them (refused):
/// returns both errors, after checking nothing was stored at staging and nothing is resident.
fn refused_twice(bytes: &[u8]) -> (HostError, HostError) {
    let (store, runtime) = runtime();
    let digest = Digest::of(bytes);
    let staged = runtime.stage("libedited.so", bytes, &digest).unwrap_err();
    let artifacts = store.path().join("artifacts");
    assert_eq!(std::fs::read_dir(&artifacts).unwrap().count(), 0);
    let planted = artifacts.join(digest.to_string());
    std::fs::create_dir_all(&planted).unwrap();
    std::fs::write(planted.join("libedited.so"), bytes).unwrap();
    let installed = runtime.install(&digest, json!({})).unwrap_err();
    assert_eq!(runtime.status().resident, [], "nothing was mapped");
    (staged, installed)
}

#[test]
fn a_library_whose_metadata_says_abi_1_0_is_refused_before_it_is_mapped() {
    let built = std::fs::read(lib(MA_CROSS_1_0_0)).unwrap();
    let message = "plugin `ma_cross` 1.0.0 was built for plugin ABI 1.0, this host needs ABI 1.1 \
                   or newer; it was not opened: rebuild it with a newer plugsync-plugin SDK";

    // `"abi_minor":0`, and no `abi_minor` at all (an SDK older than ABI 1.2; the key is renamed,
    // so ignored, keeping the length): both read as 1.0.
    for to in [minor_entry(0), r#""abi_minoX":2"#.to_owned()] {
        let mut bytes = built.clone();
        edit(&mut bytes, minor_entry(ABI_MINOR).as_bytes(), to.as_bytes());
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &bytes).unwrap();
        let metadata = plugsync_host::inspect(file.path()).unwrap();
        assert_eq!((metadata.abi, metadata.abi_minor), (1, 0), "{to}");
        let (staged, installed) = refused_twice(&bytes);
        for error in [staged, installed] {
            assert!(
                matches!(error, HostError::AbiTooOld { .. }),
                "{to}: {error:?}"
            );
            assert_eq!(error.to_string(), message, "{to}");
            assert_eq!(error.code(), "abi_too_old");
        }
    }
}

#[test]
fn an_abi_1_1_library_without_set_host_still_loads_and_swaps() {
    // ma_cross 2.0.0 as an ABI 1.1 SDK built it: minor 1 in its metadata and its vtable header,
    // and a vtable that ends after `free_copy` (the host must not read `set_host` past it).
    let mut bytes = std::fs::read(lib(MA_CROSS_2_0_0)).unwrap();
    edit(
        &mut bytes,
        minor_entry(ABI_MINOR).as_bytes(),
        minor_entry(1).as_bytes(),
    );
    edit(
        &mut bytes,
        &header(ABI_MAJOR, ABI_MINOR, size_of::<PluginVTable>()),
        &header(ABI_MAJOR, 1, VTABLE_SIZE_1_1),
    );
    let (_store, runtime) = runtime();
    let v1 = install(
        &runtime,
        MA_CROSS_1_0_0,
        json!({"fast_ma_period": 2, "slow_ma_period": 3}),
    );
    for close in [100.0, 101.0, 102.0] {
        runtime.call("ma_cross", &bar("ES", close)).unwrap();
    }
    let old = runtime
        .stage("libma_cross_v2_0_0.so", &bytes, &Digest::of(&bytes))
        .unwrap();
    assert_eq!(old.metadata.abi_minor, 1);
    // Up to 2.0.0 as ABI 1.1: its migration, the cut's `copy_state` and its calls all work.
    runtime
        .swap(SwapRequest::new("ma_cross", old.digest))
        .unwrap();
    let served = runtime.call("ma_cross", &bar("ES", 103.0)).unwrap();
    assert_eq!(served.receipt.digest, old.digest);
    runtime.commit("ma_cross").unwrap();
    assert_ne!(old.digest, v1);
    let resident = runtime.status().resident;
    assert!(
        resident.iter().any(|r| r.version.digest == old.digest),
        "{resident:?}"
    );
}

#[test]
fn an_abi_1_2_library_cannot_say_whether_it_is_flat_and_counts_as_always_flat() {
    // ma_cross 2.0.0 as an ABI 1.2 SDK built it (a table that ends after `set_host`), and as
    // one whose table is full-size but whose metadata says 1.2: the metadata decides, so
    // neither's `swap_safe` is called, though this build's strategy would say "not flat".
    for size in [VTABLE_SIZE_1_2, size_of::<PluginVTable>()] {
        let mut bytes = std::fs::read(lib(MA_CROSS_2_0_0)).unwrap();
        edit(
            &mut bytes,
            minor_entry(ABI_MINOR).as_bytes(),
            minor_entry(2).as_bytes(),
        );
        edit(
            &mut bytes,
            &header(ABI_MAJOR, ABI_MINOR, size_of::<PluginVTable>()),
            &header(ABI_MAJOR, 2, size),
        );
        let (_store, runtime) = runtime();
        let old = runtime
            .stage("libma_cross_v2_0_0.so", &bytes, &Digest::of(&bytes))
            .unwrap();
        runtime
            .install(
                &old.digest,
                json!({"fast_period": 2, "slow_period": 3, "signal_threshold": 0.0}),
            )
            .unwrap();
        for close in [10.0, 10.0, 13.0] {
            runtime.call("ma_cross", &bar("ES", close)).unwrap();
        }
        runtime.call("ma_cross", &fill(1, "ES", 1, 13.0)).unwrap();
        let status = runtime.status();
        assert_eq!(
            status.plugins[0].swap_safe,
            Some(SwapSafeAnswer::Undeclared { abi_minor: 2 }),
            "{size}"
        );
        assert_eq!(status.plugins[0].metadata.abi_minor, 2);
        let new = stage(&runtime, MA_CROSS_2_1_0);
        let flat = SwitchWhen {
            idle_for_ms: None,
            flat: true,
        };
        let report = runtime
            .swap(SwapRequest::new("ma_cross", new).when(flat))
            .unwrap();
        assert_eq!(report.state_before["instruments"]["ES"]["position"], 1);
    }
}

#[test]
fn a_vtable_header_older_than_its_metadata_is_refused_after_the_map_as_a_second_line() {
    // Metadata says 1.2 but the vtable header says 1.0 with a 1.0-sized table: only a broken
    // SDK or an edited file does that. The header check refuses it after `dlopen`.
    let mut bytes = std::fs::read(lib(MA_CROSS_2_0_0)).unwrap();
    let size_1_0 = std::mem::offset_of!(PluginVTable, copy_state);
    edit(
        &mut bytes,
        &header(ABI_MAJOR, ABI_MINOR, size_of::<PluginVTable>()),
        &header(ABI_MAJOR, 0, size_1_0),
    );
    let (_store, runtime) = runtime();
    let staged = runtime
        .stage("libma_cross_v2_0_0.so", &bytes, &Digest::of(&bytes))
        .unwrap();
    let error = runtime.install(&staged.digest, json!({})).unwrap_err();
    assert!(
        matches!(
            error,
            HostError::AbiTooOld {
                found: 0,
                required: 1,
                ..
            }
        ),
        "{error:?}"
    );
}
