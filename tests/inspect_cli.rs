//! `plugsync inspect`: a built plugin's metadata, read from the file without running any of its
//! code, through the real binary.

mod support;

use std::path::Path;
use std::process::{Command, Output};

use support::*;

fn inspect(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_plugsync"))
        .arg("inspect")
        .args(args)
        .env("NO_COLOR", "1")
        .output()
        .expect("the plugsync binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn inspect_prints_what_a_plugin_declares() {
    let library = lib(MA_CROSS_2_0_0);
    let out = inspect(&[library.as_os_str()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rustc = plugsync_plugin::RUSTC_VERSION;
    let printed = normalise(&text(&out.stdout), Path::new("/")).replace(rustc, "[RUSTC]");
    assert_eq!(
        printed,
        "            id: ma_cross
       version: 2.0.0
          kind: strategy
        sha256: [HASH]
           abi: 1.3
     framework: >=0.1, <1
  state schema: 2
  dependencies: risk_model >=1.0, <3
 migrates from: >=1.0.0, <2.0.0
 downgrades to: >=1.0.0, <2.0.0
         panic: unwind
    built with: plugsync-plugin 0.1.0, rustc [RUSTC]
"
    );
}

#[test]
fn inspect_as_json_gives_the_metadata_and_the_digest() {
    let library = lib(MA_CROSS_2_1_0);
    let out = inspect(&[library.as_os_str(), "--output".as_ref(), "json".as_ref()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let metadata: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(metadata["id"], "ma_cross");
    assert_eq!(metadata["version"], "2.1.0");
    assert_eq!(
        metadata["migrates_from"],
        serde_json::json!([">=2.0.0, <2.1.0"])
    );
    assert_eq!(metadata["dependencies"]["risk_model"], ">=2.0, <3");
    assert_eq!(metadata["sha256"], digest_of(MA_CROSS_2_1_0).to_string());
}

#[test]
fn inspect_reads_a_library_it_would_refuse_to_load_without_running_it() {
    let marker_dir = tempfile::tempdir().unwrap();
    let marker = marker_dir.path().join("constructor-ran");
    let library = lib(FAULT_ABI);
    let out = Command::new(env!("CARGO_BIN_EXE_plugsync"))
        .arg("inspect")
        .arg(&library)
        .env(MARKER_ENV, &marker)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("           abi: 2.0\n"));
    assert!(
        !marker.exists(),
        "inspect ran the library's constructor: it must only read the file"
    );
}

#[test]
fn inspect_of_a_file_that_is_not_a_plugin_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let not_a_library = dir.path().join("notes.txt");
    std::fs::write(&not_a_library, "not a shared object").unwrap();
    let out = inspect(&[not_a_library.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty());
    assert_eq!(
        normalise(&text(&out.stderr), dir.path()),
        "error: `[ROOT]/notes.txt` is not a loadable plugin library: Unknown file magic\n"
    );

    let missing = dir.path().join("missing.so");
    let out = inspect(&[missing.as_os_str()]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = normalise(&text(&out.stderr), dir.path());
    assert!(
        stderr.starts_with("error: cannot read `[ROOT]/missing.so`: "),
        "{stderr}"
    );
}
