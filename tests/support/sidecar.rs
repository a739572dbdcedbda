//! `plugsync run` under test: the sidecar started against a [`Desk`]'s host, its
//! `sidecar.json` read back, facts waited for by polling (never a fixed sleep).

use std::ffi::OsStr;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::desk::{Desk, SATURDAY};
use super::process::{Finished, Proc};

/// Both plugins at their first versions.
pub const V1: &str = "  plugins:
    - {id: risk_model, version: 1.0.0, config: {max_position: 10}}
    - {id: ma_cross, version: 1.0.0, config: {fast_ma_period: 2, slow_ma_period: 4, order_qty: 1}}
";

/// risk_model's minor upgrade, soaked briefly.
pub const V1_1: &str = "  plugins:
    - id: risk_model
      version: 1.1.0
      config: {max_position: 10}
      verify: {soak: {duration: 300ms}}
    - {id: ma_cross, version: 1.0.0, config: {fast_ma_period: 2, slow_ma_period: 4, order_qty: 1}}
";

/// How long a wait for a fact may take before the test fails (a loaded machine is slow).
pub const PATIENCE: Duration = Duration::from_secs(120);

/// Waits until `done` holds, polling; fails naming `what`, with the sidecar's log.
pub fn eventually(sidecar: &Proc, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}; the sidecar's log:\n{}",
            sidecar.stderr()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the host runs: `plugin version`, sorted, and whether a step is pending.
pub fn running(desk: &Desk) -> Vec<String> {
    let status = desk.api.status();
    let mut running: Vec<String> = (status["plugins"].as_array().unwrap().iter())
        .map(|p| {
            let pending = if p["pending"].is_null() {
                ""
            } else {
                " (pending)"
            };
            format!(
                "{} {}{pending}",
                p["plugin"].as_str().unwrap(),
                p["version"]["version"].as_str().unwrap()
            )
        })
        .collect();
    running.sort();
    running
}

/// A plugins.yaml for the desk's registry (by absolute path: the file may live elsewhere).
pub fn desired(desk: &Desk, plugins: &str) -> String {
    format!(
        "apiVersion: plugsync/v1\nkind: PluginSet\nmetadata: {{name: desk-a}}\nspec:\n  \
         registry: {{url: {}}}\n{plugins}",
        desk.path().join("registry").display()
    )
}

/// `plugsync run -f FILE` against the desk's host, its state in `state`, on a Saturday; its
/// metrics on any free port unless `args` say where (tests run side by side: the default port
/// would be taken by the first).
pub fn run(desk: &Desk, file: &Path, args: &[&str]) -> Proc {
    let mut all: Vec<&OsStr> = vec![
        OsStr::new("run"),
        OsStr::new("-f"),
        file.as_os_str(),
        OsStr::new("--host"),
        OsStr::new(&desk.host.url),
    ];
    let token = desk.path().join("token");
    let state = desk.path().join("state");
    all.extend([OsStr::new("--token-file"), token.as_os_str()]);
    all.extend([OsStr::new("--state-dir"), state.as_os_str()]);
    all.extend([OsStr::new("--debounce"), OsStr::new("50ms")]);
    if !args.contains(&"--metrics-listen") {
        all.extend([OsStr::new("--metrics-listen"), OsStr::new("127.0.0.1:0")]);
    }
    all.extend(args.iter().map(OsStr::new));
    Proc::spawn(&all, &[("PLUGSYNC_NOW", OsStr::new(SATURDAY))])
}

/// The sidecar's `sidecar.json` (null before it is written).
pub fn status(desk: &Desk) -> Value {
    std::fs::read(desk.path().join("state/sidecar.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or(Value::Null)
}

/// How many reconciles the sidecar has ended (applied, failed or in error).
pub fn reconciles(desk: &Desk) -> u64 {
    status(desk)["reconciles"].as_u64().unwrap_or(0)
}

/// How many drift checks it has made.
pub fn checks(desk: &Desk) -> u64 {
    status(desk)["checks"].as_u64().unwrap_or(0)
}

/// Writes `text` to `path` as an editor that saves by rename does: a new file beside, renamed
/// over the old one.
pub fn save_by_rename(path: &Path, text: &str) {
    let beside = path.with_extension("yaml.swp");
    std::fs::write(&beside, text).unwrap();
    std::fs::rename(&beside, path).unwrap();
}

/// Stops the sidecar with SIGTERM; how it ended.
pub fn stop(mut sidecar: Proc) -> Finished {
    sidecar.signal("TERM");
    sidecar.wait();
    sidecar.finish()
}

/// What the sidecar logs when its metrics server is up, before its address.
pub const METRICS_LISTENING: &str = "metrics listening on http://";

/// The address the sidecar serves its metrics on (`IP:PORT`), from its log.
pub fn metrics_address(sidecar: &Proc) -> String {
    let mut address = None;
    eventually(sidecar, "the sidecar logs its metrics address", || {
        address = (sidecar.stderr().lines())
            .find_map(|line| line.split_once(METRICS_LISTENING))
            .map(|(_, rest)| {
                rest.split_whitespace()
                    .next()
                    .unwrap_or_default()
                    .to_owned()
            });
        address.is_some()
    });
    address.unwrap_or_default()
}

/// A plain HTTP/1.1 `GET` over a fresh connection: the status code and the body.
pub fn http_get(address: &str, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let status = (head.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, body.to_owned())
}
