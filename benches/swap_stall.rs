//! Swap stall: the longest a caller waits while a plugin is hot-swapped under it, against
//! restarting a process that loads the plugin and restores its state (DESIGN §3, §7).
//!
//! `ma_cross` holds ~10 KB of state (many instruments, each with a full window of closes). Two
//! caller threads call it without pause and time every call; the main thread swaps it 1.0.0 →
//! 2.0.0 (upgrade, migrated up) → commit → 1.0.0 (downgrade, 2.0.0's down-migration) → commit,
//! in `SwapMode::Optimistic` and `SwapMode::Locked` alternately (pair by pair, so that drift on
//! a shared machine hits both modes alike). Per swap it records the longest call that
//! overlapped the swap (swap and commit, verification included), and `SwapReport`'s locked
//! window and path.
//!
//! Two baselines run in the same process:
//! - **no swap**: after each swap, a window of the same length in which the main thread only
//!   spins. It loads the CPUs as the swap did but never takes the slot, so its longest calls are
//!   the machine's noise (preemption with three busy threads on two cores, say), not the swap's;
//! - **restart**: this binary re-executed as a child process that opens a runtime over the
//!   store, stages and installs the library, restores the state from a checkpoint file
//!   (`Runtime::restore`, digest checked), serves one call and exits; timed spawn to exit.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use plugsync_host::{
    Digest, Runtime, RuntimeOptions, SlotHandle, StateSnapshot, SwapMode, SwapPath, SwapRequest,
    VersionRef,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Set (to the checkpoint file) when this binary runs as the restart baseline's child.
const CHILD_ENV: &str = "PLUGSYNC_BENCH_SWAP_STALL_RESTART";
/// The state size the brief asks for; instruments are added until the snapshot reaches it.
const TARGET_STATE_BYTES: usize = 10 * 1024;
/// Bars given to each instrument before measuring: `slow_ma_period`, a full window.
const WARM_UP_BARS: usize = 20;
const CALLERS: usize = 2;
/// Target from the brief for the optimistic swap's p99 stall.
const TARGET_P99: Duration = Duration::from_micros(100);

/// How much to measure.
struct Params {
    /// Up/down pairs per mode (each pair is two swaps).
    pairs_per_mode: usize,
    restarts: usize,
}

/// `cargo bench`: ~600 swaps and 20 restarts, a few seconds on 2 cores.
const FULL: Params = Params {
    pairs_per_mode: 150,
    restarts: 20,
};
/// `cargo test --benches`: checks that everything runs.
const SMOKE: Params = Params {
    pairs_per_mode: 2,
    restarts: 2,
};

fn main() {
    if let Some(checkpoint) = std::env::var_os(CHILD_ENV) {
        if let Err(error) = restart_child(Path::new(&checkpoint)) {
            eprintln!("restart child: {error}");
            std::process::exit(1);
        }
        return;
    }
    let params = if common::is_bench_run() { FULL } else { SMOKE };
    let [v1_library, v2_library] = common::plugin_libraries(["ma_cross_v1_0_0", "ma_cross_v2_0_0"]);
    let store = tempfile::tempdir().expect("a temporary store");
    let runtime = Runtime::new(RuntimeOptions::new(store.path())).expect("a runtime");
    let v1 = runtime
        .stage_file(&v1_library)
        .expect("1.0.0 stages")
        .digest;
    let v2 = runtime
        .stage_file(&v2_library)
        .expect("2.0.0 stages")
        .digest;
    runtime
        .install(&v1, v1_config())
        .expect("ma_cross 1.0.0 installs");
    let slot = runtime.handle("ma_cross").expect("installed just now");
    let instruments = grow_state(&runtime, &slot);
    let state_bytes = runtime
        .snapshot("ma_cross")
        .expect("a snapshot")
        .state
        .len();

    let feed = Arc::new(common::bar_feed(&instruments));
    let probe = Arc::new(Probe::new(4 * params.pairs_per_mode * 2));
    let callers: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let (slot, feed, probe) = (slot.clone(), feed.clone(), probe.clone());
            // The warm-up used the first bars of every instrument; carry on from there, each
            // caller half a feed apart.
            let start = WARM_UP_BARS * instruments.len() + caller * feed.len() / CALLERS;
            thread::spawn(move || call_continuously(&slot, &feed, start % feed.len(), &probe))
        })
        .collect();
    let samples = swap_back_and_forth(&runtime, &probe, v1, v2, params.pairs_per_mode);
    probe.stop.store(true, Ordering::Relaxed);
    let mut latencies = Histogram::new();
    for caller in callers {
        latencies.merge(&caller.join().expect("a caller thread panicked"));
    }
    let samples: Vec<SwapSample> = samples
        .into_iter()
        .map(|sample| sample.with_waits(&probe))
        .collect();

    let restarts = restart_baseline(
        &runtime,
        store.path(),
        &v1_library,
        &instruments,
        params.restarts,
    );
    print_report(&Report {
        instruments: instruments.len(),
        state_bytes,
        samples: &samples,
        latencies: &latencies,
        restarts: &restarts,
    });
}

fn v1_config() -> Value {
    serde_json::json!({"fast_ma_period": 5, "slow_ma_period": 20})
}

/// Adds instruments, each with a full window, until the state reaches the target size.
fn grow_state(runtime: &Runtime, slot: &SlotHandle) -> Vec<String> {
    let mut output = Vec::new();
    let mut count = 0;
    loop {
        // Add a few at a time: a snapshot per instrument would be wasteful, not wrong.
        count += 4;
        let instruments = common::instruments(count);
        for bar in 0..WARM_UP_BARS {
            for (index, name) in instruments.iter().enumerate().skip(count - 4) {
                slot.call_into(&common::bar_input(name, index, bar), &mut output)
                    .expect("ma_cross accepts its bars");
            }
        }
        let snapshot = runtime.snapshot("ma_cross").expect("a snapshot");
        if snapshot.state.len() >= TARGET_STATE_BYTES {
            return instruments;
        }
    }
}

/// What the callers report about each window the main thread opens.
///
/// Window `w` is open while `epoch` is `2w + 1`. A caller reads the epoch before and after each
/// call: every window open at some point between the two readings overlapped the call. Callers
/// touch the shared window counters only for such calls, so the probe adds nothing shared to the
/// other calls but two reads of a line that is written once per window.
struct Probe {
    epoch: AtomicU64,
    stop: AtomicBool,
    windows: Vec<WindowStats>,
}

#[derive(Default)]
struct WindowStats {
    longest_call_ns: AtomicU64,
    calls: AtomicU64,
}

impl Probe {
    fn new(windows: usize) -> Probe {
        Probe {
            epoch: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            windows: (0..windows).map(|_| WindowStats::default()).collect(),
        }
    }

    /// Runs `body` as window `window`.
    fn window<R>(&self, window: usize, body: impl FnOnce() -> R) -> R {
        let epoch = 2 * window as u64;
        self.epoch.store(epoch + 1, Ordering::SeqCst);
        let result = body();
        self.epoch.store(epoch + 2, Ordering::SeqCst);
        result
    }

    fn observe(&self, epoch_before: u64, epoch_after: u64, nanos: u64) {
        let mut epoch = epoch_before | 1;
        while epoch <= epoch_after {
            let stats = &self.windows[(epoch / 2) as usize];
            stats.longest_call_ns.fetch_max(nanos, Ordering::Relaxed);
            stats.calls.fetch_add(1, Ordering::Relaxed);
            epoch += 2;
        }
    }

    /// The longest call that overlapped `window`, and how many did. Read after the callers
    /// stopped.
    fn stats(&self, window: usize) -> (Duration, u64) {
        let stats = &self.windows[window];
        (
            Duration::from_nanos(stats.longest_call_ns.load(Ordering::Relaxed)),
            stats.calls.load(Ordering::Relaxed),
        )
    }
}

/// A caller thread: calls without pause, timing every call, until told to stop.
fn call_continuously(
    slot: &SlotHandle,
    feed: &[Vec<u8>],
    start: usize,
    probe: &Probe,
) -> Histogram {
    let mut latencies = Histogram::new();
    let mut output = Vec::with_capacity(256);
    let mut next = start;
    while !probe.stop.load(Ordering::Relaxed) {
        let input = &feed[next];
        next = (next + 1) % feed.len();
        let epoch_before = probe.epoch.load(Ordering::SeqCst);
        let started = Instant::now();
        slot.call_into(input, &mut output)
            .expect("ma_cross accepts its bars, in every version");
        let nanos = started.elapsed().as_nanos() as u64;
        let epoch_after = probe.epoch.load(Ordering::SeqCst);
        latencies.record(nanos);
        if epoch_before % 2 == 1 || epoch_after != epoch_before {
            probe.observe(epoch_before, epoch_after, nanos);
        }
    }
    latencies
}

/// One swap as the main thread saw it; the callers' view is added once they stopped.
struct SwapSample {
    mode: SwapMode,
    upgrade: bool,
    /// The swap's window and the no-swap window after it.
    window: usize,
    control_window: usize,
    /// Swap and commit, as the main thread timed them.
    elapsed: Duration,
    locked_window: Duration,
    /// Why an optimistic swap fell back to the locked path.
    fell_back: Option<String>,
    longest_call: Duration,
    calls: u64,
    control_longest_call: Duration,
}

impl SwapSample {
    fn with_waits(mut self, probe: &Probe) -> SwapSample {
        (self.longest_call, self.calls) = probe.stats(self.window);
        (self.control_longest_call, _) = probe.stats(self.control_window);
        self
    }
}

fn swap_back_and_forth(
    runtime: &Runtime,
    probe: &Probe,
    v1: Digest,
    v2: Digest,
    pairs_per_mode: usize,
) -> Vec<SwapSample> {
    let mut samples = Vec::with_capacity(4 * pairs_per_mode);
    for pair in 0..2 * pairs_per_mode {
        let mode = if pair % 2 == 0 {
            SwapMode::Optimistic
        } else {
            SwapMode::Locked
        };
        for (target, upgrade) in [(v2, true), (v1, false)] {
            let window = 2 * samples.len();
            // Callers alone for a moment: a window starts with calls in flight of their own.
            thread::sleep(Duration::from_millis(1));
            let (elapsed, report) = probe.window(window, || {
                let started = Instant::now();
                let report = runtime
                    .swap(SwapRequest::new("ma_cross", target).mode(mode))
                    .expect("ma_cross swaps between 1.0.0 and 2.0.0");
                runtime.commit("ma_cross").expect("the step commits");
                (started.elapsed(), report)
            });
            thread::sleep(Duration::from_millis(1));
            probe.window(window + 1, || {
                let started = Instant::now();
                while started.elapsed() < elapsed {
                    std::hint::spin_loop();
                }
            });
            let fell_back = match (mode, report.path) {
                (SwapMode::Optimistic, SwapPath::Locked { reason }) => Some(reason),
                _ => None,
            };
            samples.push(SwapSample {
                mode,
                upgrade,
                window,
                control_window: window + 1,
                elapsed,
                locked_window: report.locked_window,
                fell_back,
                longest_call: Duration::ZERO,
                calls: 0,
                control_longest_call: Duration::ZERO,
            });
        }
    }
    samples
}

/// What the restart child needs, written by the parent.
#[derive(Serialize, Deserialize)]
struct Checkpoint {
    store: PathBuf,
    library: PathBuf,
    config: Value,
    snapshot: SnapshotFile,
    input: String,
}

/// A [`StateSnapshot`] as written to disk (it serialises, but does not deserialise, so the
/// child reads this mirror of its fields).
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    plugin: String,
    version: String,
    digest: Digest,
    state_schema: u32,
    seq: u64,
    state: String,
    sha256: Digest,
}

impl From<StateSnapshot> for SnapshotFile {
    fn from(snapshot: StateSnapshot) -> SnapshotFile {
        SnapshotFile {
            plugin: snapshot.plugin,
            version: snapshot.version.version,
            digest: snapshot.version.digest,
            state_schema: snapshot.state_schema,
            seq: snapshot.seq,
            state: snapshot.state,
            sha256: snapshot.sha256,
        }
    }
}

impl From<SnapshotFile> for StateSnapshot {
    fn from(file: SnapshotFile) -> StateSnapshot {
        StateSnapshot {
            plugin: file.plugin,
            version: VersionRef {
                version: file.version,
                digest: file.digest,
            },
            state_schema: file.state_schema,
            seq: file.seq,
            state: file.state,
            sha256: file.sha256,
        }
    }
}

/// The restart baseline's child: a fresh process brings the plugin back with its state.
fn restart_child(checkpoint: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let checkpoint: Checkpoint = serde_json::from_slice(&std::fs::read(checkpoint)?)?;
    let runtime = Runtime::new(RuntimeOptions::new(&checkpoint.store))?;
    let artifact = runtime.stage_file(&checkpoint.library)?;
    runtime.install(&artifact.digest, checkpoint.config)?;
    runtime.restore(&checkpoint.snapshot.into())?;
    runtime.call("ma_cross", checkpoint.input.as_bytes())?;
    Ok(())
}

/// Times `runs` restarts from a checkpoint of the running 1.0.0 instance.
fn restart_baseline(
    runtime: &Runtime,
    store: &Path,
    library: &Path,
    instruments: &[String],
    runs: usize,
) -> Vec<Duration> {
    let status = runtime.status();
    let running = status
        .plugins
        .iter()
        .find(|p| p.plugin == "ma_cross")
        .expect("ma_cross runs");
    assert_eq!(
        running.version.version, "1.0.0",
        "every pair of swaps ends back on 1.0.0"
    );
    let checkpoint = Checkpoint {
        store: store.to_owned(),
        library: library.to_owned(),
        config: running.config.clone(),
        snapshot: runtime.snapshot("ma_cross").expect("a snapshot").into(),
        input: String::from_utf8(common::bar_input(&instruments[0], 0, WARM_UP_BARS))
            .expect("bars are UTF-8"),
    };
    let path = store.join("restart-checkpoint.json");
    std::fs::write(
        &path,
        serde_json::to_vec(&checkpoint).expect("a checkpoint serialises"),
    )
    .expect("the checkpoint is written");
    let exe = std::env::current_exe().expect("the benchmark knows its own path");
    (0..runs)
        .map(|_| {
            let started = Instant::now();
            let child = Command::new(&exe)
                .env(CHILD_ENV, &path)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .output()
                .expect("the restart child starts");
            let elapsed = started.elapsed();
            assert!(
                child.status.success(),
                "the restart child failed ({}): {}",
                child.status,
                String::from_utf8_lossy(&child.stderr)
            );
            elapsed
        })
        .collect()
}

/// Call latencies in log-linear buckets: 16 per power of two, so a percentile is off by at most
/// 1/16 of its value (it is reported as its bucket's upper bound, never flattering).
struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

const SUB_BUCKET_BITS: u32 = 4;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: vec![0; 64 * SUB_BUCKETS as usize],
            total: 0,
            max: 0,
        }
    }

    fn bucket(nanos: u64) -> usize {
        if nanos < SUB_BUCKETS {
            return nanos as usize;
        }
        let shift = 63 - nanos.leading_zeros() - SUB_BUCKET_BITS;
        let sub_bucket = (nanos >> shift) & (SUB_BUCKETS - 1);
        (((u64::from(shift) + 1) << SUB_BUCKET_BITS) + sub_bucket) as usize
    }

    fn lower_bound(bucket: usize) -> u64 {
        let bucket = bucket as u64;
        if bucket < SUB_BUCKETS {
            return bucket;
        }
        let shift = (bucket >> SUB_BUCKET_BITS) - 1;
        (SUB_BUCKETS + (bucket & (SUB_BUCKETS - 1))) << shift
    }

    fn record(&mut self, nanos: u64) {
        self.counts[Self::bucket(nanos)] += 1;
        self.total += 1;
        self.max = self.max.max(nanos);
    }

    fn merge(&mut self, other: &Histogram) {
        for (count, other) in self.counts.iter_mut().zip(&other.counts) {
            *count += other;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    fn percentile(&self, fraction: f64) -> Duration {
        let rank = ((fraction * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (bucket, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let upper = Self::lower_bound(bucket + 1) - 1;
                return Duration::from_nanos(upper.min(self.max));
            }
        }
        Duration::from_nanos(self.max)
    }
}

/// Nearest-rank percentile of a sample.
fn percentile(values: &[Duration], fraction: f64) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort_unstable();
    let rank = ((fraction * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

struct Report<'a> {
    instruments: usize,
    state_bytes: usize,
    samples: &'a [SwapSample],
    latencies: &'a Histogram,
    restarts: &'a [Duration],
}

/// p50 / p99 / max of the longest call per swap, for the swaps `select` picks.
struct Row {
    name: &'static str,
    swaps: usize,
    fell_back: usize,
    wait: [Duration; 3],
    locked: [Duration; 2],
    no_swap: [Duration; 3],
    elapsed_p50: Duration,
    min_calls: u64,
}

impl Row {
    fn of(name: &'static str, samples: &[&SwapSample]) -> Row {
        let field = |f: fn(&SwapSample) -> Duration| -> Vec<Duration> {
            samples.iter().map(|s| f(s)).collect()
        };
        let waits = field(|s| s.longest_call);
        let locked = field(|s| s.locked_window);
        let no_swap = field(|s| s.control_longest_call);
        let stats = |v: &[Duration]| [percentile(v, 0.5), percentile(v, 0.99), percentile(v, 1.0)];
        Row {
            name,
            swaps: samples.len(),
            fell_back: samples.iter().filter(|s| s.fell_back.is_some()).count(),
            wait: stats(&waits),
            locked: [percentile(&locked, 0.5), percentile(&locked, 0.99)],
            no_swap: stats(&no_swap),
            elapsed_p50: percentile(&field(|s| s.elapsed), 0.5),
            min_calls: samples.iter().map(|s| s.calls).min().unwrap_or(0),
        }
    }

    fn print(&self) {
        let [w50, w99, wmax] = self.wait;
        let [l50, l99] = self.locked;
        let [n50, n99, nmax] = self.no_swap;
        println!(
            "  {:<18} {:>5} {:>9} | {:>9.1?} {:>9.1?} {:>9.1?} | {:>9.1?} {:>9.1?} | {:>9.1?} {:>9.1?} {:>9.1?} | {:>9.1?} {:>6}",
            self.name,
            self.swaps,
            self.fell_back,
            w50,
            w99,
            wmax,
            l50,
            l99,
            n50,
            n99,
            nmax,
            self.elapsed_p50,
            self.min_calls,
        );
    }
}

fn print_report(report: &Report<'_>) {
    let cpus = thread::available_parallelism().map_or(0, usize::from);
    let select = |mode: SwapMode, upgrade: Option<bool>| -> Vec<&SwapSample> {
        report
            .samples
            .iter()
            .filter(|s| s.mode == mode && upgrade.is_none_or(|u| s.upgrade == u))
            .collect()
    };
    let rows = [
        Row::of("optimistic", &select(SwapMode::Optimistic, None)),
        Row::of("  upgrades", &select(SwapMode::Optimistic, Some(true))),
        Row::of("  downgrades", &select(SwapMode::Optimistic, Some(false))),
        Row::of("locked", &select(SwapMode::Locked, None)),
        Row::of("  upgrades", &select(SwapMode::Locked, Some(true))),
        Row::of("  downgrades", &select(SwapMode::Locked, Some(false))),
    ];
    println!();
    println!(
        "swap stall: ma_cross 1.0.0 <-> 2.0.0 with {} B of state ({} instruments x {WARM_UP_BARS} closes), \
         {CALLERS} callers calling without pause, {} swaps (+ commit each), {cpus} CPUs",
        report.state_bytes,
        report.instruments,
        report.samples.len(),
    );
    println!(
        "  {:<18} {:>5} {:>9} | {:^29} | {:^19} | {:^29} | {:>9} {:>6}",
        "",
        "",
        "",
        "longest caller wait per swap",
        "SwapReport.locked",
        "no-swap window, same length",
        "swap+",
        "calls/"
    );
    println!(
        "  {:<18} {:>5} {:>9} | {:>9} {:>9} {:>9} | {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>9} {:>6}",
        "mode",
        "swaps",
        "fell back",
        "p50",
        "p99",
        "max",
        "p50",
        "p99",
        "p50",
        "p99",
        "max",
        "commit",
        "window"
    );
    for row in &rows {
        row.print();
    }
    let mut reasons: Vec<&str> = report
        .samples
        .iter()
        .filter_map(|s| s.fell_back.as_deref())
        .collect();
    reasons.sort_unstable();
    reasons.dedup_by(|a, b| first_words(a) == first_words(b));
    for reason in reasons {
        println!("  fell back, e.g.: {reason}");
    }
    let latencies = report.latencies;
    println!(
        "  every call ({} calls): p50 {:.1?}, p99 {:.1?}, p99.9 {:.1?}, p99.99 {:.1?}, max {:.1?}",
        latencies.total,
        latencies.percentile(0.5),
        latencies.percentile(0.99),
        latencies.percentile(0.999),
        latencies.percentile(0.9999),
        Duration::from_nanos(latencies.max),
    );

    let restart = [
        percentile(report.restarts, 0.5),
        percentile(report.restarts, 0.99),
    ];
    println!();
    println!(
        "restart baseline: new process, runtime over the store, stage + install + restore {} B + one call ({} runs): p50 {:.2?}, p99 {:.2?}",
        report.state_bytes,
        report.restarts.len(),
        restart[0],
        restart[1],
    );
    for row in [&rows[0], &rows[3]] {
        let ratio = |i: usize| restart[i].as_secs_f64() / row.wait[i].as_secs_f64();
        println!(
            "  restart / {} swap stall: p50 {:.0}x, p99 {:.0}x",
            row.name,
            ratio(0),
            ratio(1)
        );
    }
    let p99 = rows[0].wait[1];
    if p99 <= TARGET_P99 {
        println!("  optimistic p99 stall {p99:.1?}: target <= {TARGET_P99:?} met");
    } else {
        println!(
            "  optimistic p99 stall {p99:.1?}: target <= {TARGET_P99:?} missed by {:.1?} ({:.1}x)",
            p99 - TARGET_P99,
            p99.as_secs_f64() / TARGET_P99.as_secs_f64()
        );
    }
}

/// A fall-back reason without its call number, to group alike reasons.
fn first_words(reason: &str) -> &str {
    reason.split('#').next().unwrap_or(reason)
}
