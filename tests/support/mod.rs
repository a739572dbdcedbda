//! Shared by the integration tests: the real plugin libraries (built once per test binary, in
//! the profile the tests were built with), runtimes over fresh stores, messages, and the
//! normalisation that makes error messages comparable.
#![allow(dead_code)] // each test binary uses a part of it

pub mod bless;
pub mod desk;
pub mod git;
pub mod process;
pub mod sidecar;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use plugsync_desk::{Bar, Fill, Order, Orders, StrategyInput};
use plugsync_host::{
    CallReceipt, Clock, Digest, HostTime, ManualClock, Probe, Runtime, RuntimeOptions, SlotHandle,
    StateSnapshot,
};
use serde_json::{Value, json};
use tempfile::TempDir;

/// The workspace root.
pub const WORKSPACE: &str = env!("CARGO_MANIFEST_DIR");

/// Host time at which every test clock starts (2023-11-14T22:13:20Z).
pub const START: HostTime = HostTime(1_700_000_000_000_000_000);

/// How long a poll waits for something that should happen almost at once.
pub const DEADLINE: Duration = Duration::from_secs(60);

/// The env var the fault fixtures' constructors read: they create the file it names.
pub const MARKER_ENV: &str = "PLUGSYNC_FIXTURE_MARKER";

// Library names (`lib<name>.so` in the target directory).
pub const MA_CROSS_1_0_0: &str = "ma_cross_v1_0_0";
pub const MA_CROSS_2_0_0: &str = "ma_cross_v2_0_0";
pub const MA_CROSS_2_1_0: &str = "ma_cross_v2_1_0";
pub const RISK_MODEL_1_0_0: &str = "risk_model_v1_0_0";
pub const RISK_MODEL_1_1_0: &str = "risk_model_v1_1_0";
pub const RISK_MODEL_2_0_0: &str = "risk_model_v2_0_0";
pub const FAULT_HEALTH: &str = "ma_cross_fault_health";
pub const FAULT_MIGRATE: &str = "ma_cross_fault_migrate";
pub const FAULT_CALL: &str = "ma_cross_fault_call";
pub const FAULT_PROBE: &str = "ma_cross_fault_probe";
pub const FAULT_ABI: &str = "ma_cross_fault_abi";
pub const FAULT_TLS: &str = "ma_cross_fault_tls";
pub const NO_DOWNGRADE: &str = "ma_cross_no_downgrade";
pub const FAULT_GATE: &str = "ma_cross_fault_gate";

/// The instrument whose bars the gate fixture (2.0.9) takes as closing at the host time, and
/// whose answers carry that time: `{"orders":[…],"now":<ns>}`.
pub const ECHO_NOW: &str = "ECHO_NOW";

fn cargo() -> Command {
    Command::new(std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")))
}

fn run(mut command: Command, what: &str) {
    let output = command
        .current_dir(WORKSPACE)
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build {what}: {e}"));
    assert!(
        output.status.success(),
        "building {what} failed ({}):\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The target directory of the profile these tests were built with (`target/debug` or
/// `target/release`): the test binary lives in its `deps` directory.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    exe.parent()
        .and_then(Path::parent)
        .expect("the test binary lives in <target>/<profile>/deps")
        .to_owned()
}

/// Set by [`run_child_test`]: its parent built the libraries already.
const PREBUILT_ENV: &str = "PLUGSYNC_TESTS_PREBUILT";

/// Builds every library of the workspace (examples and fixtures) once per test binary, in
/// the profile of the tests, and returns where they are.
fn built() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        if std::env::var_os(PREBUILT_ENV).is_some() {
            return profile_dir();
        }
        let mut command = cargo();
        command.args(["build", "--workspace", "--lib", "--quiet"]);
        if !cfg!(debug_assertions) {
            command.arg("--release");
        }
        run(command, "the plugin libraries");
        profile_dir()
    })
}

/// Path of a built plugin library of the workspace, e.g. `lib("ma_cross_v1_0_0")`.
pub fn lib(name: &str) -> PathBuf {
    let path = built().join(format!("lib{name}.so"));
    assert!(
        path.is_file(),
        "`{}` was not built: is `{name}` a cdylib member of the workspace?",
        path.display()
    );
    path
}

/// The `panic = "abort"` fixture, built once per test binary outside the workspace.
pub fn panic_abort_lib() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let fixture = Path::new(WORKSPACE).join("tests/fixtures/panic_abort");
            let path = fixture.join("target/release/libma_cross_fault_abort.so");
            if std::env::var_os(PREBUILT_ENV).is_some() {
                return path;
            }
            let mut command = cargo();
            command
                .args(["build", "--release", "--quiet", "--manifest-path"])
                .arg(fixture.join("Cargo.toml"))
                .arg("--target-dir")
                .arg(fixture.join("target"));
            run(command, "the panic = \"abort\" fixture");
            assert!(path.is_file(), "`{}` was not built", path.display());
            path
        })
        .clone()
}

/// Options over `store` with a [`ManualClock`] starting at [`START`].
pub fn options(store: &Path) -> RuntimeOptions {
    let mut options = RuntimeOptions::new(store);
    options.clock = Arc::new(ManualClock::starting_at(START));
    options
}

/// A runtime over a fresh temporary store, with a [`ManualClock`].
pub fn runtime() -> (TempDir, Runtime) {
    runtime_with(|_| {})
}

/// A runtime over a fresh temporary store, and its [`ManualClock`] for the test to move
/// (leases expire by the runtime's clock).
pub fn runtime_and_clock() -> (TempDir, Runtime, Arc<ManualClock>) {
    runtime_and_clock_with(|_| {})
}

/// As [`runtime_and_clock`], with options changed by `configure`.
pub fn runtime_and_clock_with(
    configure: impl FnOnce(&mut RuntimeOptions),
) -> (TempDir, Runtime, Arc<ManualClock>) {
    let clock = Arc::new(ManualClock::starting_at(START));
    let shared = clock.clone();
    let (dir, runtime) = runtime_with(move |options| {
        options.clock = shared;
        configure(options);
    });
    (dir, runtime, clock)
}

/// A runtime over a fresh temporary store, with a [`ManualClock`] and options changed by
/// `configure`.
pub fn runtime_with(configure: impl FnOnce(&mut RuntimeOptions)) -> (TempDir, Runtime) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let mut options = options(dir.path());
    configure(&mut options);
    let runtime = Runtime::new(options).expect("a runtime over a fresh store");
    (dir, runtime)
}

/// Stages a built library into the runtime's store and returns its digest.
pub fn stage(runtime: &Runtime, name: &str) -> Digest {
    runtime
        .stage_file(&lib(name))
        .unwrap_or_else(|e| panic!("staging {name}: {e}"))
        .digest
}

/// Stages and installs a built library with `config`, returning its digest.
pub fn install(runtime: &Runtime, name: &str, config: Value) -> Digest {
    let digest = stage(runtime, name);
    runtime
        .install(&digest, config)
        .unwrap_or_else(|e| panic!("installing {name}: {e}"));
    digest
}

/// The sha256 of a built library's bytes.
pub fn digest_of(name: &str) -> Digest {
    Digest::of(&std::fs::read(lib(name)).expect("the library is readable"))
}

/// `{"bar":{"instrument":…,"close":…}}`, as the desk writes it.
pub fn bar(instrument: &str, close: f64) -> Vec<u8> {
    let bar = Bar {
        instrument: instrument.into(),
        close,
    };
    serde_json::to_vec(&StrategyInput::Bar(bar)).expect("a message serialises")
}

/// `{"fill":{"order_id":…,"instrument":…,"qty":…,"price":…}}`, as the desk writes it.
pub fn fill(order_id: u64, instrument: &str, qty: i64, price: f64) -> Vec<u8> {
    let fill = Fill {
        order_id,
        instrument: instrument.into(),
        qty,
        price,
    };
    serde_json::to_vec(&StrategyInput::Fill(fill)).expect("a message serialises")
}

/// The `{"orders":[…]}` output of ma_cross 1.x/2.0 for `(order_id, instrument, qty)`s.
pub fn orders(orders: &[(u64, &str, i64)]) -> Value {
    let orders: Vec<Order> = orders
        .iter()
        .map(|&(order_id, instrument, qty)| Order {
            order_id,
            instrument: instrument.into(),
            qty,
            limit_price: None,
        })
        .collect();
    serde_json::to_value(Orders::new(&orders)).expect("an output serialises")
}

/// Bars that take a fresh instance (periods 2 and 4) long: the fifth crosses up by 7%.
pub fn crossing_up_probe(expected_qty: i64) -> Probe {
    let mut steps: Vec<Value> = [10.0, 10.0, 10.0, 10.0]
        .into_iter()
        .map(|close| {
            json!({"input": {"bar": {"instrument": "ES", "close": close}},
                            "expect": orders(&[])})
        })
        .collect();
    steps.push(
        json!({"input": {"bar": {"instrument": "ES", "close": 13.0}},
                      "expect": orders(&[(1, "ES", expected_qty)])}),
    );
    serde_json::from_value(json!({"name": "a fresh instance buys on a cross up", "steps": steps}))
        .unwrap()
}

/// The orders of an ma_cross output.
pub fn parse_orders(output: &[u8]) -> Vec<Order<'static>> {
    let orders: Orders = serde_json::from_slice(output).unwrap_or_else(|e| {
        panic!(
            "not an ma_cross output ({e}): {}",
            String::from_utf8_lossy(output)
        )
    });
    orders.into_owned().orders.into_owned()
}

/// Parses JSON bytes.
pub fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

/// The state of a snapshot, as JSON.
pub fn state(snapshot: &StateSnapshot) -> Value {
    serde_json::from_str(&snapshot.state).expect("a snapshot's state is JSON")
}

/// Makes a message comparable: `root` becomes `[ROOT]`, every word of exactly 64 hex digits
/// `[HASH]` and every word of exactly 12 (a short digest) `[SHORT]`.
pub fn normalise(message: &str, root: &Path) -> String {
    let message = message.replace(&root.display().to_string(), "[ROOT]");
    let mut out = String::with_capacity(message.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let hex = word.chars().all(|c| c.is_ascii_hexdigit());
        match word.len() {
            64 if hex => out.push_str("[HASH]"),
            12 if hex => out.push_str("[SHORT]"),
            _ => out.push_str(word),
        }
        word.clear();
    };
    for c in message.chars() {
        if c.is_ascii_alphanumeric() || c == '_' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Polls `done` until it holds, failing with `what` after [`DEADLINE`].
pub fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::yield_now();
    }
}

/// A clock the test sets: it gives the time it was last set to, so that a reference run can
/// give each call the host time it was recorded with.
#[derive(Debug)]
pub struct SetClock {
    nanos: AtomicI64,
}

impl SetClock {
    /// A clock showing [`START`].
    pub fn new() -> Arc<SetClock> {
        Arc::new(SetClock {
            nanos: AtomicI64::new(START.0),
        })
    }

    /// Sets the time the next readings give.
    pub fn set(&self, now: HostTime) {
        self.nanos.store(now.0, Ordering::SeqCst);
    }
}

impl Clock for SetClock {
    fn now(&self) -> HostTime {
        HostTime(self.nanos.load(Ordering::SeqCst))
    }
}

/// One call as a test recorded it: what was sent, what came back, and the receipt.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub receipt: CallReceipt,
    pub input: Vec<u8>,
    pub output: Vec<u8>,
}

/// A runtime over a fresh store whose clock the test sets ([`SetClock`]), for reference runs
/// that reproduce recorded host times.
pub fn reference_runtime() -> (TempDir, Runtime, Arc<SetClock>) {
    let clock = SetClock::new();
    let shared = clock.clone();
    let (dir, runtime) = runtime_with(move |options| options.clock = shared);
    (dir, runtime, clock)
}

/// Feeds recorded calls to `plugin` of a reference runtime at their recorded host times,
/// checking that each gets the sequence number it got in the recorded run; returns the
/// outputs.
pub fn feed_at(
    runtime: &Runtime,
    clock: &SetClock,
    plugin: &str,
    calls: &[Recorded],
) -> Vec<Vec<u8>> {
    let handle = runtime.handle(plugin).expect("the plugin is installed");
    calls
        .iter()
        .map(|call| {
            clock.set(call.receipt.now);
            let replayed = handle.call(&call.input).unwrap_or_else(|e| {
                panic!(
                    "reference call #{} failed: {e}\ninput: {}",
                    call.receipt.seq,
                    String::from_utf8_lossy(&call.input)
                )
            });
            assert_eq!(
                replayed.receipt.seq, call.receipt.seq,
                "the reference run lost step with the recorded one"
            );
            replayed.output
        })
        .collect()
}

/// [`feed_at`], checking that each call also answers what it answered in the recorded run.
pub fn replay(runtime: &Runtime, clock: &SetClock, plugin: &str, calls: &[Recorded]) {
    let outputs = feed_at(runtime, clock, plugin, calls);
    for (call, output) in calls.iter().zip(outputs) {
        assert_eq!(
            String::from_utf8_lossy(&output),
            String::from_utf8_lossy(&call.output),
            "call #{} ({}) answered differently in the reference run",
            call.receipt.seq,
            String::from_utf8_lossy(&call.input)
        );
    }
}

/// Calls `plugin` and records the call; panics if it fails.
pub fn record(runtime: &Runtime, plugin: &str, input: Vec<u8>) -> Recorded {
    let out = runtime.call(plugin, &input).unwrap_or_else(|e| {
        panic!(
            "call to {plugin} failed: {e}\ninput: {}",
            String::from_utf8_lossy(&input)
        )
    });
    Recorded {
        receipt: out.receipt,
        input,
        output: out.output,
    }
}

/// Calls `handle` at the host time `now` and records the call, checking the receipt carries
/// that time.
pub fn record_at(handle: &SlotHandle, input: Vec<u8>, now: HostTime) -> Recorded {
    let mut output = Vec::new();
    let receipt = handle
        .call_into_at(&input, now, &mut output)
        .unwrap_or_else(|e| panic!("call at {now:?} failed: {e}"));
    assert_eq!(receipt.now, now, "the receipt carries the time given");
    Recorded {
        receipt,
        input,
        output,
    }
}

/// Event times a caller gives: an hour before the runtime's clock, distinct, and out of order.
pub fn event_time(i: i64) -> HostTime {
    HostTime(START.0 - 3_600_000_000_000 + (i % 3) * 1_000_000_000 - i)
}

/// Runs test `test` of this same test binary in a child process with `env` set, and returns
/// its output once it passed. Used where a test needs an environment variable that must not
/// be set in this (multi-threaded) process. The libraries the child uses must have been built
/// by the caller ([`lib`], [`panic_abort_lib`]): the child does not build.
pub fn run_child_test(test: &str, env: &[(&str, &Path)]) -> Output {
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let mut command = Command::new(exe);
    command.env(PREBUILT_ENV, "1");
    command.args([
        test,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    for (key, value) in env {
        command.env(key, value);
    }
    let output = command.output().expect("the test binary runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.contains("1 passed"),
        "child test `{test}` failed ({}):\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

/// A log sink the test reads back (a `tracing_subscriber` writer).
#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

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
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// A gate of the `ma_cross_fault_gate` fixture: a barrier a test opens, reached by a plugin
/// call (instrument `HOLD_CALL:<path>`), migration (a state that knows instrument
/// `HOLD_MIGRATE:<path>`) or restore (a state that knows instrument `HOLD_RESTORE:<path>`). The plugin creates `<path>.entered` when it reaches the gate, then
/// waits until `<path>.open` exists.
pub struct Gate {
    _dir: TempDir,
    path: PathBuf,
}

impl Gate {
    /// A closed gate in a fresh directory.
    pub fn new() -> Gate {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("gate");
        Gate { _dir: dir, path }
    }

    /// The instrument whose calls wait at this gate.
    pub fn call_instrument(&self) -> String {
        format!("HOLD_CALL:{}", self.path.display())
    }

    /// The instrument whose presence in the state makes a migration wait at this gate.
    pub fn migrate_instrument(&self) -> String {
        format!("HOLD_MIGRATE:{}", self.path.display())
    }

    /// The instrument whose presence in the state makes a restore wait at this gate (a
    /// reconfigure of 2.0.9 restores, but does not migrate).
    pub fn restore_instrument(&self) -> String {
        format!("HOLD_RESTORE:{}", self.path.display())
    }

    /// Waits until the plugin has reached the gate.
    pub fn wait_reached(&self) {
        let entered = self.path.with_extension("entered");
        wait_until("the plugin reaches the gate", || entered.exists());
    }

    /// Lets the plugin through (and every later arrival).
    pub fn open(&self) {
        std::fs::write(self.path.with_extension("open"), b"").expect("the gate opens");
    }
}

/// Waits until the host has rolled `plugin`'s step back by itself (no step pending, a last
/// rollback recorded), and returns the rollback's reason.
pub fn rolled_back_by_host(runtime: &Runtime, plugin: &str) -> plugsync_host::RollbackReason {
    let mut reason = None;
    wait_until("the host rolls the step back", || {
        let status = runtime.status();
        let slot = status.plugins.iter().find(|p| p.plugin == plugin).unwrap();
        reason = slot.last_rollback.as_ref().map(|r| r.reason.clone());
        reason.is_some() && slot.pending.is_none()
    });
    reason.unwrap()
}

/// The stdout of a command that succeeded; panics with its stderr otherwise.
pub fn succeeded(output: std::process::Output) -> String {
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The stderr of a command refused (exit 1, nothing on stdout).
pub fn refused(output: std::process::Output) -> String {
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    assert_eq!(String::from_utf8_lossy(&output.stdout), "");
    String::from_utf8_lossy(&output.stderr).into_owned()
}
