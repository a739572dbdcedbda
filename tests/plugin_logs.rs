//! A plugin logs through its host: its own copy of std and `tracing` never reach the host's
//! subscriber, so the SDK hands it the host's logger, and routes its panic reports there too.

mod support;

use std::io::Write;
use std::sync::{Arc, Mutex};

use plugsync_host::CallError;
use serde_json::json;
use support::*;

/// A log sink the test reads back.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

#[test]
fn a_plugin_panic_is_reported_with_its_location_in_the_host_log() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .finish();
    // The plugin's log callback runs on the calling thread: a thread-local subscriber sees it.
    tracing::subscriber::with_default(subscriber, || {
        let (_dir, runtime) = runtime();
        install(
            &runtime,
            FAULT_CALL,
            json!({"fast_period": 2, "slow_period": 3, "order_qty": 1}),
        );
        let error = runtime.call("ma_cross", &bar("CRASH", 10.0)).unwrap_err();
        assert!(
            matches!(error, CallError::Plugin { panicked: true, .. }),
            "{error}"
        );
    });
    let log = captured.text();
    let line = log
        .lines()
        .find(|line| line.contains("plugin panicked at"))
        .unwrap_or_else(|| panic!("no panic report in the host log:\n{log}"));
    assert!(line.contains("ERROR"), "{line}");
    assert!(line.contains("plugin=\"ma_cross\""), "{line}");
    assert!(line.contains("version=\"2.0.3\""), "{line}");
    assert!(
        line.contains("tests/fixtures/plugins/ma_cross_fault_call/src/lib.rs:"),
        "{line}"
    );
}
