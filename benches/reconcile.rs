//! One patch update done by `plugsync reconcile`, against the same update done by restarting
//! the host with its state restored: how long each takes, and the longest a caller of the
//! plugin waits meanwhile.
//!
//! The host is a [`Runtime`] in this process, behind [`InProcessHost`] (the control API's
//! router called directly, no HTTP): `risk_model` 1.0.0 and `ma_cross` 2.0.0, with traded
//! state (instruments with full windows of closes, a fill in each plugin). The update is
//! ma_cross 2.0.0 → 2.0.9, a patch build: the `ma_cross_fault_gate` test fixture, which is
//! 2.0.0's code plus test gates acting only on special instrument names (none of which the
//! bench sends) and migrates from `>=2.0.0, <2.0.9` (its state passed through unchanged).
//!
//! One caller thread calls ma_cross all along (bars over the instruments, a call then a 20 µs
//! spin, as `swap_stall`'s paced load) and times every call; a call counts for a case when it
//! overlaps the case's window. Each call takes a read lock on the cell holding the slot handle
//! (in every case, so the callers' overhead is the same); a restart empties the cell.
//!
//! Cases, each run on a fresh setup (new store, state directory and caller), taking turns run by
//! run so that drift on a shared machine hits them alike:
//! - **reconcile, preflight on**: `ops::reconcile` with a plugins.yaml asking ma_cross 2.0.9
//!   (no `verify.soak`: the soak is excluded), timed from its call to its return (the step
//!   committed, the lease released). That is the whole real flow: plugins.yaml, lock-free
//!   resolution against a directory registry, lease, plan, the artifact fetched into a cold
//!   cache and verified, the preflight in a child process (`plugsync preflight-child`, which
//!   loads both versions and migrates the live state), then the step journaled, staged,
//!   switched (a hot swap) and committed;
//! - **reconcile, preflight off**: the same with `preflight: false`: what the preflight costs;
//! - **restart with state restored** (the baseline): what a host without plugsync does. 2.0.9
//!   is staged into the host's store before the window (a deploy puts the new build on disk
//!   first). From the window's start: take the slot away from the caller (waiting for its call
//!   in flight), snapshot both plugins, drop the runtime, open a new one over the same store,
//!   install risk_model 1.0.0 and restore its snapshot, install ma_cross 2.0.0 and restore its
//!   snapshot, swap to 2.0.9 on the idle slot (`SwapMode::Locked`: 2.0.9's migration of the
//!   restored state) and commit, then hand the new slot to the caller: the window ends. Each
//!   install and swap really loads its library again (read from the store, hash checked,
//!   copied into a new memfd, `dlopen`ed), as a new process would. The caller waits for the whole
//!   window (its call is held from the moment the slot is taken away), so its longest stall is
//!   about the window. In-process, this is a lower bound on restarting a process: no exec,
//!   no runtime start-up, no page-in of the binary, no reading state back from disk.

mod common;
mod stall;

use stall::CpuQueueing;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::thread;
use std::time::{Duration, Instant};

use plugsync::apply::{InProcessHost, StepReport};
use plugsync::ops::{self, Progress, ReconcileOptions};
use plugsync::plan::SearchLimits;
use plugsync_host::{
    Digest, Runtime, RuntimeOptions, SlotHandle, SwapMode, SwapRequest, TrustedKeys,
};
use serde_json::{Value, json};

/// `cargo bench`: 15 runs of each case.
const FULL_RUNS: usize = 15;
/// `cargo test --benches`: checks that everything runs.
const SMOKE_RUNS: usize = 1;
/// Instruments ma_cross follows.
const INSTRUMENTS: usize = 8;
/// Bars given to each instrument before measuring: `slow_period`, a full window.
const WARM_UP_BARS: usize = 20;
/// What the caller does between two calls: a spin, as `swap_stall`'s paced load.
const CALLER_GAP: Duration = Duration::from_micros(20);

/// The libraries, as `common::plugin_libraries` builds them.
const PACKAGES: [&str; 3] = [
    "risk_model_v1_0_0",
    "ma_cross_v2_0_0",
    "ma_cross_fault_gate",
];

fn risk_config() -> Value {
    json!({"max_position": 10})
}

fn ma_config() -> Value {
    json!({"fast_period": 5, "slow_period": 20, "order_qty": 1})
}

/// plugins.yaml: both plugins as running, ma_cross at 2.0.9; no soak.
const PLUGINS_YAML: &str = "apiVersion: plugsync/v1
kind: PluginSet
metadata: {name: bench-desk}
spec:
  registry: {url: registry}
  plugins:
    - {id: risk_model, version: 1.0.0, config: {max_position: 10}}
    - id: ma_cross
      version: 2.0.9
      config: {fast_period: 5, slow_period: 20, order_qty: 1}
";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Case {
    Preflight,
    NoPreflight,
    Restart,
}

impl Case {
    const ALL: [Case; 3] = [Case::Preflight, Case::NoPreflight, Case::Restart];

    fn name(self) -> &'static str {
        match self {
            Case::Preflight => "plugsync reconcile, preflight on",
            Case::NoPreflight => "plugsync reconcile, preflight off",
            Case::Restart => "restart, state restored (in-process)",
        }
    }
}

/// One run of a case.
#[derive(Clone, Copy)]
struct Sample {
    /// The window: reconcile's call to its return, or the restart's stop to the new slot
    /// handed over.
    wall: Duration,
    /// The caller's longest call overlapping the window.
    stall: Duration,
    /// The same, net of the time the caller's thread sat queued for a CPU.
    stall_net: Duration,
    /// Calls the caller completed during the run (window or not).
    calls: u64,
    /// Reconcile: from its call to the plan ready to apply (plugins.yaml read, registry index
    /// read and resolved, lease taken, host observed, plan made, artifacts fetched into the
    /// cache and verified); the rest is the engine's (preflight, journal, stage, switch,
    /// commit, lease released).
    planned: Option<Duration>,
}

/// The example libraries, the plugsync binary, and a registry holding the three versions.
struct Fixture {
    libraries: [PathBuf; 3],
    exe: PathBuf,
    /// Holds `registry/` and `plugins.yaml`.
    desk: tempfile::TempDir,
}

fn main() {
    let runs = if common::is_bench_run() {
        FULL_RUNS
    } else {
        println!("smoke run (not `cargo bench`): the figures below mean nothing");
        SMOKE_RUNS
    };
    let fixture = Fixture::new();
    let mut samples: Vec<Vec<Sample>> = Case::ALL.iter().map(|_| Vec::new()).collect();
    for run in 0..runs {
        // Turns rotate, so no case always runs right after another.
        for turn in 0..Case::ALL.len() {
            let index = (run + turn) % Case::ALL.len();
            samples[index].push(fixture.run(Case::ALL[index]));
        }
    }
    print_report(&samples, runs);
}

impl Fixture {
    fn new() -> Fixture {
        let libraries = common::plugin_libraries(PACKAGES);
        let exe = plugsync_exe();
        let desk = tempfile::tempdir().expect("a temporary directory");
        common::publish_stable(&libraries, desk.path());
        std::fs::write(desk.path().join("plugins.yaml"), PLUGINS_YAML)
            .expect("plugins.yaml is written");
        Fixture {
            libraries,
            exe,
            desk,
        }
    }

    /// A fresh host with traded state and a caller, then the case, timed.
    fn run(&self, case: Case) -> Sample {
        let [risk, ma_old, ma_new] = &self.libraries;
        let store = tempfile::tempdir().expect("a temporary store");
        let runtime = Runtime::new(RuntimeOptions::new(store.path())).expect("a runtime");
        let risk_digest = runtime.stage_file(risk).expect("risk_model stages").digest;
        let ma_digest = runtime.stage_file(ma_old).expect("ma_cross stages").digest;
        runtime
            .install(&risk_digest, risk_config())
            .expect("risk_model 1.0.0 installs");
        runtime
            .install(&ma_digest, ma_config())
            .expect("ma_cross 2.0.0 installs");
        let instruments = common::instruments(INSTRUMENTS);
        trade(&runtime, &instruments);
        let slot = runtime.handle("ma_cross").expect("installed just now");
        let cell = Arc::new(RwLock::new(Some(slot)));
        let probe = Arc::new(Probe::new());
        let caller = {
            let (cell, probe) = (cell.clone(), probe.clone());
            let feed = common::bar_feed(&instruments);
            // The warm-up used the first bars of every instrument; carry on from there.
            let start = WARM_UP_BARS * instruments.len();
            thread::spawn(move || call_until_stopped(&cell, &probe, &feed, start))
        };
        // Let the caller settle into its pace.
        while probe.calls.load(Ordering::Relaxed) < 1_000 {
            thread::sleep(Duration::from_millis(1));
        }
        // Reconcile: when the plan was ready to apply (read, lease, plan, artifacts fetched).
        let mut planned = None;
        let wall = match case {
            Case::Preflight | Case::NoPreflight => {
                let state_dir = tempfile::tempdir().expect("a temporary state directory");
                let port = InProcessHost::new(runtime.clone(), "bench", TrustedKeys::none())
                    .expect("the in-process control API starts");
                let options = self.options(state_dir.path(), case == Case::Preflight);
                let started = Instant::now();
                let mut progress = Quiet::new(started);
                probe.open();
                let report = ops::reconcile(&options, &port, &mut progress);
                let wall = started.elapsed();
                planned = progress.planned;
                probe.close();
                let report = report.unwrap_or_else(|e| {
                    panic!("reconcile failed: {e}\n{}", progress.lines.join("\n"))
                });
                assert!(
                    !report.failed && report.running.iter().any(|r| r == "ma_cross 2.0.9"),
                    "the update did not commit: {}\n{}",
                    report.summary(),
                    progress.lines.join("\n")
                );
                assert_eq!(report.steps.len(), 1, "{}", report.summary());
                wall
            }
            Case::Restart => {
                // The new build on the host's disk before the restart, as a deploy puts it.
                let new = runtime.stage_file(ma_new).expect("2.0.9 stages").digest;
                let digests = [risk_digest, ma_digest, new];
                probe.open();
                let started = Instant::now();
                let restarted = restart(runtime, &cell, store.path(), digests);
                *cell
                    .write()
                    .expect("the caller never panics holding the cell") =
                    Some(restarted.handle("ma_cross").expect("installed just now"));
                let wall = started.elapsed();
                probe.close();
                let status = restarted.status();
                let ma = (status.plugins.iter())
                    .find(|p| p.plugin == "ma_cross")
                    .expect("ma_cross runs");
                assert_eq!(ma.version.version, "2.0.9");
                wall
            }
        };
        probe.stop.store(true, Ordering::Relaxed);
        caller.join().expect("a call failed");
        Sample {
            wall,
            stall: Duration::from_nanos(probe.longest.load(Ordering::Relaxed)),
            stall_net: Duration::from_nanos(probe.longest_net.load(Ordering::Relaxed)),
            calls: probe.calls.load(Ordering::Relaxed),
            planned,
        }
    }

    fn options(&self, state_dir: &Path, preflight: bool) -> ReconcileOptions {
        ReconcileOptions {
            file: self.desk.path().join("plugins.yaml"),
            locked: false,
            state_dir: state_dir.to_owned(),
            trusted_keys: None,
            registry_ca: None,
            plan: None,
            force: None,
            no_wait: false,
            preflight,
            // `plugsync reconcile`'s default.
            preflight_timeout: Duration::from_secs(30),
            exe: self.exe.clone(),
            now: jiff::Timestamp::now(),
            limits: SearchLimits::default(),
            crash_at: None,
            lease_ttl: Duration::from_secs(30),
            stop: plugsync::apply::Stop::new(),
        }
    }
}

/// The plugsync binary, built by cargo for this benchmark (the preflight child runs it).
fn plugsync_exe() -> PathBuf {
    let exe = PathBuf::from(env!("CARGO_BIN_EXE_plugsync"));
    assert!(
        exe.is_file(),
        "{} is missing: build it with `cargo build --release --bin plugsync` (the preflight \
         runs it as a child)",
        exe.display()
    );
    exe
}

/// Gives each plugin some state: every instrument a full window of closes, then a fill in ES
/// to both plugins.
fn trade(runtime: &Runtime, instruments: &[String]) {
    for bar in 0..WARM_UP_BARS {
        for (index, name) in instruments.iter().enumerate() {
            runtime
                .call("ma_cross", &common::bar_input(name, index, bar))
                .expect("ma_cross accepts its bars");
        }
    }
    let fill = json!({"fill": {"order_id": 1, "instrument": "ES", "qty": 1, "price": 99.5}});
    for plugin in ["ma_cross", "risk_model"] {
        runtime
            .call(plugin, fill.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("{plugin} refused a fill: {e:?}"));
    }
}

/// The restart: the slot taken from the caller, both states snapshot, the runtime dropped, a
/// new one over the same `store` (where the three artifacts are) running what was asked with
/// the states restored (ma_cross's migrated by a swap on the idle slot, committed). Returns the
/// new runtime; the caller still waits.
fn restart(
    runtime: Runtime,
    cell: &RwLock<Option<SlotHandle>>,
    store: &Path,
    [risk, ma_old, ma_new]: [Digest; 3],
) -> Runtime {
    // Waits for the caller's call in flight: nothing is served from here on.
    let taken = cell
        .write()
        .expect("the caller never panics holding the cell")
        .take();
    let risk_state = runtime.snapshot("risk_model").expect("a snapshot");
    let ma_state = runtime.snapshot("ma_cross").expect("a snapshot");
    let config = |plugin: &str| {
        (runtime.status().plugins.into_iter())
            .find(|p| p.plugin == plugin)
            .map(|p| p.config)
            .expect("installed")
    };
    let (risk_config, ma_config) = (config("risk_model"), config("ma_cross"));
    drop(taken);
    drop(runtime);

    let runtime = Runtime::new(RuntimeOptions::new(store)).expect("a runtime");
    runtime
        .install(&risk, risk_config)
        .expect("risk_model installs");
    runtime
        .restore(&risk_state)
        .expect("risk_model's state restores");
    runtime
        .install(&ma_old, ma_config)
        .expect("ma_cross installs");
    runtime
        .restore(&ma_state)
        .expect("ma_cross's state restores");
    runtime
        .swap(SwapRequest::new("ma_cross", ma_new).mode(SwapMode::Locked))
        .expect("2.0.9 migrates the restored state");
    runtime.commit("ma_cross").expect("2.0.9 commits");
    runtime
}

/// What the caller and the main thread share.
struct Probe {
    /// When this probe was made: the origin of the window's bounds.
    origin: Instant,
    /// The window, in ns since `origin` (0: not yet; `u64::MAX`: not closed yet).
    window_start: AtomicU64,
    window_end: AtomicU64,
    /// The longest call overlapping the window, in ns.
    longest: AtomicU64,
    /// The same, net of the time the caller's thread sat queued for a CPU during it.
    longest_net: AtomicU64,
    calls: AtomicU64,
    stop: AtomicBool,
}

impl Probe {
    fn new() -> Probe {
        Probe {
            origin: Instant::now(),
            window_start: AtomicU64::new(0),
            window_end: AtomicU64::new(u64::MAX),
            longest: AtomicU64::new(0),
            longest_net: AtomicU64::new(0),
            calls: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        }
    }

    fn now(&self) -> u64 {
        self.origin.elapsed().as_nanos() as u64
    }

    fn open(&self) {
        self.window_start.store(self.now().max(1), Ordering::SeqCst);
    }

    fn close(&self) {
        self.window_end.store(self.now(), Ordering::SeqCst);
    }

    /// Records a call from `started` to `ended` (ns since `origin`), `queued` ns of which its
    /// thread sat queued for a CPU, if it overlaps the window.
    fn observe(&self, started: u64, ended: u64, queued: Option<u64>) {
        let start = self.window_start.load(Ordering::SeqCst);
        let end = self.window_end.load(Ordering::SeqCst);
        if start != 0 && ended >= start && started <= end {
            let wall = ended - started;
            self.longest.fetch_max(wall, Ordering::Relaxed);
            let net = wall.saturating_sub(queued.unwrap_or(0));
            self.longest_net.fetch_max(net, Ordering::Relaxed);
        }
    }
}

/// The caller: a call, a spin of [`CALLER_GAP`], until told to stop. A call finding no slot
/// (a restart) waits, timed as part of the call, until there is one again.
fn call_until_stopped(
    cell: &RwLock<Option<SlotHandle>>,
    probe: &Probe,
    feed: &[Vec<u8>],
    start: usize,
) {
    let queueing = CpuQueueing::for_this_thread();
    let mut output = Vec::with_capacity(256);
    let mut next = start;
    while !probe.stop.load(Ordering::Relaxed) {
        let input = &feed[next];
        next = (next + 1) % feed.len();
        // Read around every call (~1 µs), in the window or not, so the pace is the same.
        let queued_before = queueing.total_ns();
        let started = probe.now();
        loop {
            let guard = cell
                .read()
                .expect("the main thread never panics holding the cell");
            if let Some(slot) = guard.as_ref() {
                slot.call_into(input, &mut output)
                    .expect("ma_cross accepts its bars, in every version");
                break;
            }
            drop(guard);
            // No host: wait for one, leaving the CPU to the restart. A sleep, not a yield: a
            // yielding thread counts as queued for a CPU, which would hide the wait from `net`.
            thread::sleep(Duration::from_micros(50));
        }
        let ended = probe.now();
        let queued = queued_before
            .zip(queueing.total_ns())
            .map(|(before, after)| after.saturating_sub(before));
        probe.observe(started, ended, queued);
        probe.calls.fetch_add(1, Ordering::Relaxed);
        let gap_end = Instant::now() + CALLER_GAP;
        while Instant::now() < gap_end {
            std::hint::spin_loop();
        }
    }
}

/// Keeps the apply's lines, shown only if it fails, and when the plan was ready.
struct Quiet {
    started: Instant,
    lines: Vec<String>,
    planned: Option<Duration>,
}

impl Quiet {
    fn new(started: Instant) -> Quiet {
        Quiet {
            started,
            lines: Vec::new(),
            planned: None,
        }
    }
}

impl Progress for Quiet {
    fn step(&mut self, report: &StepReport) {
        self.lines.push(report.text());
    }

    fn notice(&mut self, text: &str) {
        if text.starts_with("Applying plan") {
            self.planned.get_or_insert(self.started.elapsed());
        }
        self.lines.push(text.to_owned());
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn case_index(case: Case) -> usize {
    Case::ALL
        .iter()
        .position(|c| *c == case)
        .unwrap_or_default()
}

/// Median, min and max of each case, then the ratios to the restart.
fn print_report(samples: &[Vec<Sample>], runs: usize) {
    let cpus = thread::available_parallelism().map_or(0, usize::from);
    println!();
    println!(
        "reconcile: ma_cross 2.0.0 -> 2.0.9 (patch, no soak) beside risk_model 1.0.0, \
         {INSTRUMENTS} instruments x {WARM_UP_BARS} closes of state, host in process \
         (InProcessHost over a Runtime), 1 caller (call, then spin {} µs), {runs} runs per \
         case, fresh setup each, {cpus} CPUs",
        CALLER_GAP.as_micros()
    );
    println!(
        "wall = reconcile's call to its return (committed) / restart's stop to the new version \
         serving; stall = the caller's longest call overlapping that window, as it timed it; \
         net = that call minus its time queued for a CPU (/proc/thread-self/schedstat)"
    );
    println!(
        "  {:<38} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>9} | {:>9}",
        "", "wall p50", "min", "max", "stall p50", "min", "max", "net p50", "calls/run"
    );
    let medians: Vec<(Duration, Duration)> = samples
        .iter()
        .zip(Case::ALL)
        .map(|(samples, case)| {
            let mut walls: Vec<Duration> = samples.iter().map(|s| s.wall).collect();
            let mut stalls: Vec<Duration> = samples.iter().map(|s| s.stall).collect();
            let mut nets: Vec<Duration> = samples.iter().map(|s| s.stall_net).collect();
            let (wall, stall) = (common::median(&mut walls), common::median(&mut stalls));
            println!(
                "  {:<38} | {:>6.2} ms {:>6.2} ms {:>6.2} ms | {:>6.2} ms {:>6.2} ms {:>6.2} ms | {:>6.2} ms | {:>9}",
                case.name(),
                ms(wall),
                ms(walls[0]),
                ms(walls[walls.len() - 1]),
                ms(stall),
                ms(stalls[0]),
                ms(stalls[stalls.len() - 1]),
                ms(common::median(&mut nets)),
                samples.iter().map(|s| s.calls).sum::<u64>() / samples.len().max(1) as u64,
            );
            (wall, stall)
        })
        .collect();
    let (restart_wall, restart_stall) = medians[2];
    for (case, (wall, stall)) in Case::ALL.iter().zip(&medians).take(2) {
        println!(
            "  {}: wall {:.2}x the restart's, longest stall {:.3}x the restart's (p50s)",
            case.name(),
            wall.as_secs_f64() / restart_wall.as_secs_f64(),
            stall.as_secs_f64() / restart_stall.as_secs_f64(),
        );
    }
    for (case, samples) in Case::ALL.iter().zip(samples).take(2) {
        let mut planned: Vec<Duration> = samples.iter().filter_map(|s| s.planned).collect();
        if planned.is_empty() {
            continue;
        }
        let planned = common::median(&mut planned);
        println!(
            "  {}: plan ready to apply after {:.2} ms (p50: read, resolve, lease, plan, fetch \
             into a cold cache); the engine's part (preflight, journal, stage, switch, commit) \
             {:.2} ms",
            case.name(),
            ms(planned),
            ms(medians[case_index(*case)].0.saturating_sub(planned)),
        );
    }
    println!(
        "the preflight costs {:.2} ms of wall (p50 on - p50 off)",
        ms(medians[0].0.saturating_sub(medians[1].0))
    );
    println!(
        "the restart is in this process: a lower bound on restarting the host's process (no \
         exec, no start-up, no page-in, no state read back from disk)"
    );
}
