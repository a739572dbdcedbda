//! Files written from the code (JSON Schemas, the plugins.yaml reference), compared with the
//! committed ones, or refreshed on purpose with `PLUGSYNC_BLESS=1`. Light on purpose: a test
//! binary that needs nothing else of `support` includes it alone (`#[path]`).

use std::path::Path;

/// Compares `text` with the workspace's file `relative`, or writes it there with
/// `PLUGSYNC_BLESS=1`; `test` names the test target that refreshes it.
pub fn check_blessed(relative: &str, text: &str, test: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    if std::env::var_os("PLUGSYNC_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, text).unwrap();
        return;
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == text,
        "`{relative}` is out of date: refresh it with `PLUGSYNC_BLESS=1 cargo test --test \
         {test}` and review the diff"
    );
}
