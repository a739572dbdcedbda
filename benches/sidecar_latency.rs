//! How long `plugsync run` takes from the write of plugins.yaml to the step committed: the
//! watcher (inotify, then the debounce's quiet period), the read of the file, and the whole
//! reconcile — lease, plan, the artifact fetched and verified, the preflight in a child
//! process, the step journaled, staged, switched (a hot swap with a state migration) and
//! committed. No soak (`verify.soak` unset): the soak is the operator's own wait.
//!
//! The host is a [`Runtime`] in this process, behind [`InProcessHost`], with a caller thread
//! calling ma_cross all along (bars over the instruments, a call then a 20 µs spin). The
//! sidecar is the library's [`Sidecar`] in a thread of its own, as `plugsync run --embedded`
//! runs it, with `plugsync run`'s default debounce (200 ms). Each edit flips risk_model between
//! 1.0.0 and 1.1.0 (an upgrade, then a downgrade through 1.1.0's `downgrades_to`, each
//! migrating the live state), written in place; the clock starts just before the write and
//! stops when the sidecar's observer sees the step committed. Beside it, in the same run, the
//! reconcile's own duration as the sidecar measured it: the difference is the watcher's part
//! (its debounce included).

mod common;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use plugsync::apply::{InProcessHost, StepOutcome, Stop};
use plugsync::ops::ReconcileOptions;
use plugsync::plan::SearchLimits;
use plugsync::watch::{Clock, DriftMode, Observer, Sidecar, SidecarEvent, SidecarOptions};
use plugsync_host::{Runtime, RuntimeOptions, SlotHandle, TrustedKeys};

/// `cargo bench`: edits measured.
const FULL_EDITS: usize = 20;
/// `cargo test --benches`: checks that everything runs.
const SMOKE_EDITS: usize = 2;
/// `plugsync run`'s default.
const DEBOUNCE: Duration = Duration::from_millis(200);
/// Instruments ma_cross follows.
const INSTRUMENTS: usize = 8;
/// What the caller does between two calls.
const CALLER_GAP: Duration = Duration::from_micros(20);

const PACKAGES: [&str; 3] = ["risk_model_v1_0_0", "risk_model_v1_1_0", "ma_cross_v1_0_0"];

fn plugins_yaml(risk_model: &str) -> String {
    format!(
        "apiVersion: plugsync/v1
kind: PluginSet
metadata: {{name: bench-desk}}
spec:
  registry: {{url: registry}}
  plugins:
    - {{id: risk_model, version: {risk_model}, config: {{max_position: 10}}}}
    - {{id: ma_cross, version: 1.0.0, config: {{fast_ma_period: 5, slow_ma_period: 20, order_qty: 1}}}}
"
    )
}

/// What the bench hears from the sidecar: a step committed, a reconcile's own duration.
enum Heard {
    Committed(Instant),
    Reconciled(Duration),
    Failed(String),
}

struct Ears(Sender<Heard>);

impl Observer for Ears {
    fn observe(&mut self, event: &SidecarEvent) {
        let heard = match event {
            SidecarEvent::StepEnded(report) if report.plugin == "risk_model" => {
                match &report.outcome {
                    Some(StepOutcome::Done) => Heard::Committed(Instant::now()),
                    _ => Heard::Failed(report.text()),
                }
            }
            SidecarEvent::ReconcileFinished { took, .. } => Heard::Reconciled(*took),
            SidecarEvent::ReconcileFailed { error, .. } => Heard::Failed(error.clone()),
            _ => return,
        };
        let _ = self.0.send(heard);
    }
}

fn main() {
    let edits = if common::is_bench_run() {
        FULL_EDITS
    } else {
        println!("smoke run (not `cargo bench`): the figures below mean nothing");
        SMOKE_EDITS
    };
    let libraries = common::plugin_libraries(PACKAGES);
    let desk = tempfile::tempdir().expect("a temporary directory");
    common::publish_stable(&libraries, desk.path());
    let file = desk.path().join("plugins.yaml");
    std::fs::write(&file, plugins_yaml("1.0.0")).expect("plugins.yaml is written");

    let store = tempfile::tempdir().expect("a temporary store");
    let runtime = Runtime::new(RuntimeOptions::new(store.path())).expect("a runtime");
    let port = InProcessHost::new(runtime.clone(), "bench", TrustedKeys::none())
        .expect("the in-process control API starts");
    let state_dir = tempfile::tempdir().expect("a temporary state directory");
    let mut sidecar = Sidecar::new(
        SidecarOptions {
            reconcile: options(file.clone(), state_dir.path().to_owned()),
            clock: Clock::System,
            drift: DriftMode::Heal,
            drift_interval: Duration::from_secs(3600),
            debounce: DEBOUNCE,
            max_backoff: Duration::from_secs(5),
            committed_only: false,
        },
        Box::new(port),
    );
    let (send, heard) = channel();
    sidecar.observe(Box::new(Ears(send)));
    let handle = sidecar.handle();
    let loop_thread = thread::spawn(move || sidecar.run());

    // The first reconcile installs both plugins; then the desk trades.
    wait_reconciled(&heard);
    let stop_calls = Arc::new(AtomicBool::new(false));
    let caller = {
        let slot = runtime
            .handle("ma_cross")
            .expect("installed by the sidecar");
        let stop = stop_calls.clone();
        thread::spawn(move || call_until_stopped(slot, &stop))
    };

    let mut latencies = Vec::new();
    let mut reconciles = Vec::new();
    for edit in 0..edits {
        let version = if edit % 2 == 0 { "1.1.0" } else { "1.0.0" };
        let text = plugins_yaml(version);
        let written = Instant::now();
        std::fs::write(&file, text).expect("plugins.yaml is written");
        let committed = loop {
            match heard.recv_timeout(Duration::from_secs(120)) {
                Ok(Heard::Committed(at)) => break at,
                Ok(Heard::Reconciled(_)) => {}
                Ok(Heard::Failed(why)) => panic!("edit {edit} failed: {why}"),
                Err(_) => panic!("edit {edit}: no step committed in time"),
            }
        };
        latencies.push(committed - written);
        reconciles.push(wait_reconciled(&heard));
    }

    stop_calls.store(true, Ordering::Relaxed);
    caller.join().expect("a call failed");
    handle.stop();
    loop_thread
        .join()
        .expect("the sidecar thread")
        .expect("the sidecar ran");
    print_report(&mut latencies, &mut reconciles);
}

fn options(file: PathBuf, state_dir: PathBuf) -> ReconcileOptions {
    ReconcileOptions {
        file,
        locked: false,
        state_dir,
        trusted_keys: None,
        registry_ca: None,
        plan: None,
        force: None,
        no_wait: false,
        preflight: true,
        preflight_timeout: Duration::from_secs(30),
        exe: plugsync_exe(),
        now: jiff::Timestamp::now(),
        limits: SearchLimits::default(),
        crash_at: None,
        lease_ttl: Duration::from_secs(30),
        stop: Stop::new(),
    }
}

/// Waits for the end of a reconcile; its own duration.
fn wait_reconciled(heard: &Receiver<Heard>) -> Duration {
    loop {
        match heard.recv_timeout(Duration::from_secs(120)) {
            Ok(Heard::Reconciled(took)) => return took,
            Ok(Heard::Committed(_)) => {}
            Ok(Heard::Failed(why)) => panic!("the reconcile failed: {why}"),
            Err(_) => panic!("no reconcile ended in time"),
        }
    }
}

/// The plugsync binary, built by cargo for this benchmark (the preflight child runs it).
fn plugsync_exe() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_plugsync"));
    assert!(exe.is_file(), "{} is missing", exe.display());
    exe
}

/// Calls ma_cross with bars until told to stop, as a desk's feed does.
fn call_until_stopped(slot: SlotHandle, stop: &AtomicBool) {
    let feed = common::bar_feed(&common::instruments(INSTRUMENTS));
    let slot = RwLock::new(slot);
    let mut output = Vec::with_capacity(256);
    let mut next = 0;
    while !stop.load(Ordering::Relaxed) {
        slot.read()
            .expect("never poisoned")
            .call_into(&feed[next], &mut output)
            .expect("ma_cross accepts its bars");
        next = (next + 1) % feed.len();
        let gap_end = Instant::now() + CALLER_GAP;
        while Instant::now() < gap_end {
            std::hint::spin_loop();
        }
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn print_report(latencies: &mut [Duration], reconciles: &mut [Duration]) {
    latencies.sort();
    reconciles.sort();
    let latency_median = common::median(latencies);
    let latency_p99 = common::percentile(latencies, 0.99);
    let reconcile_median = common::median(reconciles);
    let reconcile_p99 = common::percentile(reconciles, 0.99);
    println!(
        "sidecar latency, plugins.yaml written → step committed (no soak), {} edits \
         (risk_model 1.0.0 ⇄ 1.1.0, preflight on, ma_cross called all along):",
        latencies.len()
    );
    println!(
        "  write → committed:      median {:8.1} ms   p99 {:8.1} ms",
        ms(latency_median),
        ms(latency_p99)
    );
    println!(
        "  the reconcile alone:    median {:8.1} ms   p99 {:8.1} ms",
        ms(reconcile_median),
        ms(reconcile_p99)
    );
    println!(
        "  the watcher's debounce:        {:8.1} ms   (write → committed − reconcile, median: {:.1} ms)",
        ms(DEBOUNCE),
        ms(latency_median.saturating_sub(reconcile_median))
    );
    println!(
        "  target p99 ≤ 1000 ms: {}",
        if latency_p99 <= Duration::from_secs(1) {
            "met"
        } else {
            "MISSED"
        }
    );
}
