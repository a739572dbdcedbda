//! Swap stall: the longest a caller waits while a plugin is hot-swapped under it, against
//! restarting a process that loads the plugin and restores its state (what a host without hot
//! swaps does to update a plugin).
//!
//! `ma_cross` holds ~10 KB of state (many instruments, each with a full window of closes). Two
//! caller threads call it and time every call; the main thread swaps it 1.0.0 → 2.0.0 (upgrade,
//! migrated up) → commit → 1.0.0 (downgrade, 2.0.0's down-migration) → commit, in three series:
//! `SwapMode::Optimistic` and `SwapMode::Locked` with a 2.0.0 config that answers as 1.0.0
//! does, and `Optimistic` with the config 2.0.0's migration gives, which answers otherwise (its
//! catch-up then disagrees and it falls back to the locked path): that last one is the upgrade
//! users make, so it heads the summary. Per swap it records the longest call that overlapped
//! the swap and its commit, and `SwapReport`'s locked window, catch-up and path.
//!
//! Three more series measure the stall of a rollback (defect 7): the same real upgrade, left
//! uncommitted while the slot serves 1 000 or 10 000 calls, then rolled back in place of the
//! downgrade. A rollback replays every call since the switch into the previous instance under
//! the slot lock, so its stall grows with the journal. In the third series the upgrade is to
//! 2.0.3 (2.0.0 that panics on a `CRASH` bar) and the rollback is triggered by a caller's call
//! panicking: it runs on that caller's thread, which waits for the whole replay too.
//!
//! Each series runs under three loads ([`LOADS`]): callers that call without pause (always
//! queued at the slot: an overload, which no host should run at), and callers that call, then
//! busy-wait a fixed gap, as a host's feed handlers polling on their cores do between
//! market-data events. The gap is a spin on `Instant`, not a sleep: a sleeping caller would
//! measure the scheduler's wake-up latency (tens of µs) rather than the swap. Each load level
//! reports its call rate, and the slot's utilisation estimated as that rate times a lone
//! call's mean. Loads and series take turns pair by pair, so that drift on a shared machine
//! hits them alike.
//!
//! A call's wall time includes the time its thread queued for a CPU, and on two shared cores
//! with three busy threads (spinning callers are busy too) that is often a whole scheduler
//! slice (milliseconds), swap or not. Callers therefore also read their run-queue delay
//! (`/proc/thread-self/schedstat`) around the calls that overlap a window, and the table shows
//! the wall time net of it (waiting for the slot lock, plus the call's own work) beside the
//! wall time. Net figures tell the swap's cost from the machine's; a caller waits the wall
//! time, and the restart is timed by the wall, so the restart's ratios are taken wall to wall.
//!
//! Three baselines run in the same process:
//! - **no swap**: after each swap, a window of the same length, under the same load, in which
//!   the main thread only spins. It loads the CPUs as the swap did but never takes the slot:
//!   the machine's noise;
//! - **snapshot only**: another such window, in which the main thread takes one
//!   `Runtime::snapshot`: the slot held while the plugin copies its state (it is serialised
//!   after), as every swap's cut holds it. No swap can stall its callers for less;
//! - **restart**: this binary re-executed as a child process that opens a runtime over the
//!   store, stages and installs the library, restores the state from a checkpoint file
//!   (`Runtime::restore`, digest checked), serves one call and exits; timed spawn to exit. The
//!   callers are stopped by then (a restart takes the plugin away from them: the load does not
//!   slow it down), so it is measured once and compared with every load level.

mod common;
mod stall;

use common::percentile;
use stall::{CpuQueueing, Probe, Seen, spin_for};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread;
use std::time::{Duration, Instant};

use plugsync_host::{
    Digest, RollbackMethod, RollbackReport, Runtime, RuntimeOptions, SlotHandle, StateSnapshot,
    SwapMode, SwapPath, SwapRequest, VersionRef,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Set (to the checkpoint file) when this binary runs as the restart baseline's child.
const CHILD_ENV: &str = "PLUGSYNC_BENCH_SWAP_STALL_RESTART";
/// State to swap with: about what a strategy following a few dozen instruments holds. Instruments
/// are added until the snapshot reaches it.
const TARGET_STATE_BYTES: usize = 10 * 1024;
/// Bars given to each instrument before measuring: `slow_ma_period`, a full window.
const WARM_UP_BARS: usize = 20;
const CALLERS: usize = 2;
/// The stall an optimistic swap should stay under, at p99.
const TARGET_P99: Duration = Duration::from_micros(100);

/// How hard the callers call.
struct Load {
    name: &'static str,
    /// What each caller does between two calls, spinning on `Instant`; zero: nothing.
    gap: Duration,
}

impl Load {
    fn paced(&self) -> bool {
        !self.gap.is_zero()
    }
}

/// The load levels, lightest first. The paced ones stand for a host whose feed handlers call
/// the strategy once per market-data event and poll between events, the slot idle most of the
/// time; flat out is an overload (callers always queued at the slot) that bounds what any load
/// can do to a swap.
const LOADS: [Load; 3] = [
    Load {
        name: "paced, 20 µs gap",
        gap: Duration::from_micros(20),
    },
    Load {
        name: "paced, 5 µs gap",
        gap: Duration::from_micros(5),
    },
    Load {
        name: "flat out",
        gap: Duration::ZERO,
    },
];

/// How much to measure.
struct Params {
    /// Up/down pairs per series and load (each pair is two swaps).
    pairs_per_series: usize,
    restarts: usize,
    /// Calls a lone caller makes to time the slot's service time.
    lone_calls: usize,
}

/// `cargo bench`: 3 600 pairs of steps (400 swaps per swap series and load, nearest-rank p99
/// the 5th longest; 200 rollbacks per rollback series and load, p99 the 3rd longest) and 20
/// restarts, about 2 minutes on 2 idle cores (longer when something else runs).
const FULL: Params = Params {
    pairs_per_series: 200,
    restarts: 20,
    lone_calls: 200_000,
};
/// `cargo test --benches`: checks that everything runs.
const SMOKE: Params = Params {
    pairs_per_series: 1,
    restarts: 2,
    lone_calls: 20_000,
};

fn main() {
    if let Some(checkpoint) = std::env::var_os(CHILD_ENV) {
        if let Err(error) = restart_child(Path::new(&checkpoint)) {
            eprintln!("restart child: {error}");
            std::process::exit(1);
        }
        return;
    }
    let params = if common::is_bench_run() {
        FULL
    } else {
        println!("smoke run (not `cargo bench`): the figures below mean nothing");
        SMOKE
    };
    let [v1_library, v2_library, crashing_library] =
        common::plugin_libraries(["ma_cross_v1_0_0", "ma_cross_v2_0_0", "ma_cross_fault_call"]);
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
    let crashing = runtime
        .stage_file(&crashing_library)
        .expect("2.0.3 (2.0.0 crashing on CRASH bars) stages")
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
    // The warm-up used the first bars of every instrument; carry on from there.
    let start = WARM_UP_BARS * instruments.len();
    let lone_call = lone_call_mean(&slot, &feed, start, params.lone_calls);
    let windows = 2 * WINDOWS_PER_SWAP * LOADS.len() * Series::ALL.len() * params.pairs_per_series;
    let probe = Arc::new(Probe::new(windows));
    let cpu_before = CpuUse::now();
    let callers: Vec<_> = (0..CALLERS)
        .map(|caller| {
            let (slot, feed, probe) = (slot.clone(), feed.clone(), probe.clone());
            // Each caller half a feed apart.
            let start = (start + caller * feed.len() / CALLERS) % feed.len();
            thread::spawn(move || call_until_stopped(&slot, &feed, start, &probe))
        })
        .collect();
    let targets = Targets { v1, v2, crashing };
    let (samples, time_at_load) = swap_back_and_forth(
        &runtime,
        &slot,
        &feed,
        &probe,
        &targets,
        params.pairs_per_series,
    );
    probe.stop.store(true, Ordering::Relaxed);
    let mut latencies: Vec<Histogram> = LOADS.iter().map(|_| Histogram::new()).collect();
    for caller in callers {
        let per_load = caller.join().expect("a caller thread panicked");
        for (total, caller) in latencies.iter_mut().zip(&per_load) {
            total.merge(caller);
        }
    }
    let elsewhere = cpu_before
        .zip(CpuUse::now())
        .map(|(before, after)| after.elsewhere_since(&before));
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
        time_at_load: &time_at_load,
        lone_call,
        elsewhere,
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

/// The slot's service time: the mean wall time of a call with no other caller, so never waiting
/// for the lock. A load level's utilisation is its call rate times this (an estimate: callers
/// taking turns also pay for moving the lock and the state between cores).
fn lone_call_mean(slot: &SlotHandle, feed: &[Vec<u8>], start: usize, calls: usize) -> Duration {
    let mut output = Vec::with_capacity(256);
    let started = Instant::now();
    for input in feed.iter().cycle().skip(start).take(calls) {
        slot.call_into(input, &mut output)
            .expect("ma_cross accepts its bars");
    }
    started.elapsed() / calls as u32
}

/// The machine's CPU time, and this process's, in clock ticks (`/proc/stat`,
/// `/proc/self/stat`; Linux).
struct CpuUse {
    /// All CPUs, idle included.
    total: u64,
    busy: u64,
    /// Taken by the hypervisor for other guests.
    steal: u64,
    /// This process, and its children it has waited for.
    own: u64,
}

/// Where the CPUs went while the callers ran, besides this benchmark, as fractions of them all.
#[derive(Clone, Copy)]
struct Elsewhere {
    other_processes: f64,
    steal: f64,
}

impl CpuUse {
    fn now() -> Option<CpuUse> {
        let parse = |fields: &str| -> Option<Vec<u64>> {
            fields.split_whitespace().map(|f| f.parse().ok()).collect()
        };
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        // "cpu  user nice system idle iowait irq softirq steal guest guest_nice"; guest time is
        // counted in user already.
        let cpu = parse(stat.lines().next()?.strip_prefix("cpu")?)?;
        let own_stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // utime, stime, cutime and cstime (fields 14 to 17 in proc(5)) are the 12th to 15th
        // after the parenthesised command name, which may hold spaces.
        let own: u64 = own_stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .skip(11)
            .take(4)
            .map(|f| f.parse::<u64>().ok())
            .sum::<Option<u64>>()?;
        Some(CpuUse {
            total: cpu.iter().take(8).sum(),
            busy: cpu[0] + cpu[1] + cpu[2] + cpu[5] + cpu[6],
            steal: *cpu.get(7)?,
            own,
        })
    }

    /// What other processes and the hypervisor took since `before`: either preempts callers
    /// and the swapping thread alike, and shows in every row, no-swap included.
    fn elsewhere_since(&self, before: &CpuUse) -> Elsewhere {
        let total = self.total.saturating_sub(before.total).max(1) as f64;
        let others = (self.busy.saturating_sub(before.busy))
            .saturating_sub(self.own.saturating_sub(before.own));
        Elsewhere {
            other_processes: others as f64 / total,
            steal: self.steal.saturating_sub(before.steal) as f64 / total,
        }
    }
}

/// Windows the main thread opens per swap: the swap, then two of the same length under the same
/// load, as baselines: one in which it only spins (the machine's noise), one in which it takes a
/// `Runtime::snapshot` and spins for the rest. The snapshot holds the slot while the plugin
/// copies its state, exactly as every swap's cut does (serialising it and its checksum happen
/// off the lock), so that window shows the stall a swap cannot go below, measured where the
/// swap runs.
const WINDOWS_PER_SWAP: usize = 3;

/// A caller thread: calls, paced as [`Probe::load`] says, timing every call, until told to
/// stop; returns the calls' wall times per load level. Calls that overlap a window also have
/// their CPU queueing read around them.
fn call_until_stopped(
    slot: &SlotHandle,
    feed: &[Vec<u8>],
    start: usize,
    probe: &Probe,
) -> Vec<Histogram> {
    let queueing = CpuQueueing::for_this_thread();
    let mut latencies: Vec<Histogram> = LOADS.iter().map(|_| Histogram::new()).collect();
    let mut output = Vec::with_capacity(256);
    let mut next = start;
    let mut queued_after_previous = None;
    while !probe.stop.load(Ordering::Relaxed) {
        let load = probe.load.load(Ordering::Relaxed);
        let paced = LOADS[load].paced();
        let input = &feed[next];
        next = (next + 1) % feed.len();
        let epoch_before = probe.epoch.load(Ordering::SeqCst);
        let in_window = epoch_before % 2 == 1;
        let queued_before = if paced {
            // Read before every call: the reading after the previous call would also count
            // queueing during the gap, which is not in this call's wall time. Read outside
            // windows too, so that the pace is the same inside and outside them (the read,
            // ~1 µs, lengthens every gap alike; the rate reported is measured, so includes it).
            queueing.total_ns()
        } else if in_window {
            // Flat out, the reading after one call is the reading before the next: a second
            // read per call would slow the callers down inside windows only.
            queued_after_previous.or_else(|| queueing.total_ns())
        } else {
            None
        };
        let started = Instant::now();
        slot.call_into(input, &mut output)
            .expect("ma_cross accepts its bars, in every version");
        let ended = Instant::now();
        let wall = (ended - started).as_nanos() as u64;
        let epoch_after = probe.epoch.load(Ordering::SeqCst);
        latencies[load].record(wall);
        queued_after_previous = None;
        if in_window || epoch_after != epoch_before {
            let queued_after = queueing.total_ns();
            let net = match (queued_before, queued_after) {
                (Some(before), Some(after)) => Some(wall.saturating_sub(after - before)),
                _ => None,
            };
            probe.observe(epoch_before, epoch_after, wall, net);
            if !paced && epoch_after % 2 == 1 {
                queued_after_previous = queued_after;
            }
        }
        if paced {
            // Spin rather than sleep: waking from a sleep takes the scheduler tens of µs,
            // which would pace the calls (and show in their latency) more than the gap does.
            while ended.elapsed() < LOADS[load].gap {
                std::hint::spin_loop();
            }
        }
    }
    latencies
}

/// A series of swaps: how they switch, and whether the upgrade changes behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Series {
    /// Optimistic, 2.0.0 run with `signal_threshold: 0`, where it answers exactly as 1.0.0
    /// does (a refactor or a fix): the catch-up agrees unless too many calls came in.
    Optimistic,
    /// Locked, the same upgrade.
    Locked,
    /// Optimistic, 2.0.0 with the `signal_threshold` its migration gives (1 %): it signals later
    /// than 1.0.0, so calls answered by 1.0.0 during the migration are often answered otherwise
    /// by 2.0.0 and the swap must fall back to the locked path. This is the upgrade a user
    /// makes (`plugsync` applies the migrated config unless told otherwise).
    OptimisticDiverging,
    /// The same real upgrade, not committed: once `journal` calls have come since the switch,
    /// the operator rolls it back (`Runtime::rollback`), which replays them all into 1.0.0
    /// under the slot lock. The rollback takes the place of the downgrade.
    Rollback { journal: usize },
    /// As [`Series::Rollback`], to 2.0.3 (2.0.0 that panics on a bar about `CRASH`); the
    /// rollback is triggered by a caller's call panicking, and runs on that caller's thread.
    PanicRollback { journal: usize },
}

impl Series {
    const ALL: [Series; 6] = [
        Series::Optimistic,
        Series::Locked,
        Series::OptimisticDiverging,
        Series::Rollback { journal: 1_000 },
        Series::Rollback { journal: 10_000 },
        Series::PanicRollback { journal: 10_000 },
    ];

    fn mode(self) -> SwapMode {
        match self {
            Series::Locked => SwapMode::Locked,
            _ => SwapMode::Optimistic,
        }
    }

    /// The config to upgrade with; `None`: the one the migration gives.
    fn upgrade_config(self) -> Option<Value> {
        match self {
            Series::Optimistic | Series::Locked => Some(serde_json::json!({
                "fast_period": 5, "slow_period": 20, "signal_threshold": 0.0
            })),
            _ => None,
        }
    }

    /// Calls to let in after the upgrade before rolling it back; `None`: the series commits.
    fn rollback_after(self) -> Option<usize> {
        match self {
            Series::Rollback { journal } | Series::PanicRollback { journal } => Some(journal),
            _ => None,
        }
    }

    fn upgrade_to(self, targets: &Targets) -> Digest {
        match self {
            Series::PanicRollback { .. } => targets.crashing,
            _ => targets.v2,
        }
    }
}

/// The artifacts the series swap between.
struct Targets {
    v1: Digest,
    v2: Digest,
    /// ma_cross 2.0.3 (`tests/fixtures/plugins/ma_cross_fault_call`): 2.0.0 that panics on a bar
    /// about an instrument named `CRASH…`, and answers as 2.0.0 otherwise.
    crashing: Digest,
}

/// One swap as the main thread saw it; the callers' view is added once they stopped.
struct SwapSample {
    /// Index into [`LOADS`].
    load: usize,
    series: Series,
    upgrade: bool,
    /// The swap's window; the no-swap and snapshot-only windows after it are the next two.
    window: usize,
    /// Swap and commit (or the rollback: the panicking call, for [`Series::PanicRollback`]),
    /// as the main thread timed them.
    elapsed: Duration,
    /// `SwapReport.locked_window`; `None` for a rollback, which holds the slot throughout.
    locked_window: Option<Duration>,
    /// Calls caught up by the swap, or replayed by the rollback.
    calls: usize,
    /// Why an optimistic swap fell back to the locked path.
    fell_back: Option<String>,
    seen: Seen,
    no_swap_seen: Seen,
    snapshot_seen: Seen,
}

impl SwapSample {
    fn with_waits(mut self, probe: &Probe) -> SwapSample {
        self.seen = probe.seen(self.window);
        self.no_swap_seen = probe.seen(self.window + 1);
        self.snapshot_seen = probe.seen(self.window + 2);
        self
    }
}

/// Up/down pairs, the loads and series taking turns pair by pair so that drift on a shared
/// machine hits them alike. Also returns how long the callers spent at each load level.
fn swap_back_and_forth(
    runtime: &Runtime,
    slot: &SlotHandle,
    feed: &[Vec<u8>],
    probe: &Probe,
    targets: &Targets,
    pairs_per_series: usize,
) -> (Vec<SwapSample>, Vec<Duration>) {
    let turns = LOADS.len() * Series::ALL.len();
    let mut samples = Vec::with_capacity(2 * turns * pairs_per_series);
    let mut time_at_load = vec![Duration::ZERO; LOADS.len()];
    let mut load_since = Instant::now();
    let mut output = Vec::with_capacity(256);
    for pair in 0..turns * pairs_per_series {
        let load = pair % turns / Series::ALL.len();
        let series = Series::ALL[pair % Series::ALL.len()];
        let previous = probe.load.swap(load, Ordering::Relaxed);
        time_at_load[previous] += load_since.elapsed();
        load_since = Instant::now();
        let mut switched_seq = 0;
        for upgrade in [true, false] {
            let window = WINDOWS_PER_SWAP * samples.len();
            // Callers alone for a moment between windows, so that each window starts alike
            // (and, at a change of load, at the new pace).
            thread::sleep(Duration::from_millis(1));
            let (elapsed, report) = match (upgrade, series.rollback_after()) {
                (false, Some(journal)) => {
                    // The calls the rollback will replay, made right before it so that few
                    // come besides: the main thread calls beside the callers until the slot
                    // has served `journal` calls since the switch, whoever made them.
                    fill_journal(slot, feed, switched_seq + journal as u64, &mut output);
                    let (elapsed, replayed) = probe.window(window, || {
                        roll_back(runtime, slot, series, targets, &mut output)
                    });
                    // Every rollback marks the version it left failed, and the host refuses a
                    // switch to a failed version: the next pair upgrades to it again, so the
                    // mark is cleared, as an operator would once the cause is known (after the
                    // window: it writes the restraints file).
                    runtime
                        .clear_failed(&series.upgrade_to(targets), "swap_stall")
                        .expect("the rollback marked the version it left failed");
                    (elapsed, Err(replayed))
                }
                (_, rollback_after) => {
                    let target = if upgrade {
                        series.upgrade_to(targets)
                    } else {
                        targets.v1
                    };
                    let mut request = SwapRequest::new("ma_cross", target).mode(series.mode());
                    if let Some(config) = series.upgrade_config().filter(|_| upgrade) {
                        request = request.config(config);
                    }
                    let (elapsed, report) = probe.window(window, || {
                        let started = Instant::now();
                        let report = runtime
                            .swap(request)
                            .expect("ma_cross swaps between 1.0.0 and 2.0.x");
                        if rollback_after.is_none() {
                            runtime.commit("ma_cross").expect("the step commits");
                        }
                        (started.elapsed(), report)
                    });
                    switched_seq = report.switched_seq;
                    (elapsed, Ok(report))
                }
            };
            // The baselines. A rollback series' upgrade has none: no row shows it, and the
            // calls in them would all join the journal. Its rollback has the no-swap window
            // (as long as the rollback), not the snapshot: a rollback takes no snapshot.
            let rollback_series = series.rollback_after().is_some();
            if !(upgrade && rollback_series) {
                thread::sleep(Duration::from_millis(1));
                probe.window(window + 1, || spin_for(elapsed));
            }
            if !rollback_series {
                thread::sleep(Duration::from_millis(1));
                probe.window(window + 2, || {
                    let started = Instant::now();
                    runtime.snapshot("ma_cross").expect("a snapshot");
                    spin_for(elapsed.saturating_sub(started.elapsed()));
                });
            }
            let (locked_window, calls, fell_back) = match report {
                Ok(report) => {
                    let fell_back = match (series.mode(), report.path) {
                        (SwapMode::Optimistic, SwapPath::Locked { reason }) => Some(reason),
                        _ => None,
                    };
                    (Some(report.locked_window), report.caught_up, fell_back)
                }
                Err(replayed) => (None, replayed, None),
            };
            samples.push(SwapSample {
                load,
                series,
                upgrade,
                window,
                elapsed,
                locked_window,
                calls,
                fell_back,
                seen: Seen::default(),
                no_swap_seen: Seen::default(),
                snapshot_seen: Seen::default(),
            });
        }
    }
    // The callers stop right after this returns: the last level's time ends here.
    time_at_load[probe.load.load(Ordering::Relaxed)] += load_since.elapsed();
    (samples, time_at_load)
}

/// Calls the slot with the feed until it has served the call numbered `until`.
fn fill_journal(slot: &SlotHandle, feed: &[Vec<u8>], until: u64, output: &mut Vec<u8>) {
    for input in feed.iter().cycle() {
        let receipt = slot
            .call_into(input, output)
            .expect("ma_cross accepts its bars");
        if receipt.seq >= until {
            return;
        }
    }
}

/// Rolls the pending upgrade back as `series` does; returns how long it took (for a panic, the
/// panicking caller's call) and how many calls were replayed.
fn roll_back(
    runtime: &Runtime,
    slot: &SlotHandle,
    series: Series,
    targets: &Targets,
    output: &mut Vec<u8>,
) -> (Duration, usize) {
    let started = Instant::now();
    if let Series::PanicRollback { .. } = series {
        // 2.0.3 panics; the slot rolls back on this thread, then serves the call with the
        // restored 1.0.0, so the caller gets an answer.
        let receipt = slot
            .call_into(&common::bar_input("CRASH", 0, 0), output)
            .expect("the restored 1.0.0 answers the call that panicked");
        let elapsed = started.elapsed();
        assert_eq!(receipt.digest, targets.v1, "1.0.0 served the call again");
        let report = runtime
            .status()
            .plugins
            .into_iter()
            .find(|p| p.plugin == "ma_cross")
            .and_then(|p| p.last_rollback)
            .expect("the panic rolled the step back");
        (elapsed, replayed(&report))
    } else {
        let report = runtime
            .rollback("ma_cross")
            .expect("the upgrade rolls back");
        (started.elapsed(), replayed(&report))
    }
}

fn replayed(report: &RollbackReport) -> usize {
    match &report.method {
        RollbackMethod::Replay { replayed, .. } => *replayed,
        other => panic!("the journal holds every call, so the rollback replays: {other:?}"),
    }
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
    /// Sum of the values: how long the callers spent inside calls.
    sum: u64,
    max: u64,
}

const SUB_BUCKET_BITS: u32 = 4;
const SUB_BUCKETS: u64 = 1 << SUB_BUCKET_BITS;

impl Histogram {
    fn new() -> Histogram {
        Histogram {
            counts: vec![0; 64 * SUB_BUCKETS as usize],
            total: 0,
            sum: 0,
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
        self.sum += nanos;
        self.max = self.max.max(nanos);
    }

    fn merge(&mut self, other: &Histogram) {
        for (count, other) in self.counts.iter_mut().zip(&other.counts) {
            *count += other;
        }
        self.total += other.total;
        self.sum += other.sum;
        self.max = self.max.max(other.max);
    }

    fn percentile(&self, fraction: f64) -> Duration {
        let rank = common::nearest_rank(self.total, fraction);
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

struct Report<'a> {
    instruments: usize,
    state_bytes: usize,
    samples: &'a [SwapSample],
    /// Every call's wall time, per load level.
    latencies: &'a [Histogram],
    /// How long the callers ran at each load level.
    time_at_load: &'a [Duration],
    lone_call: Duration,
    elsewhere: Option<Elsewhere>,
    restarts: &'a [Duration],
}

/// One line of the table: a set of swaps (or rollbacks), or of the baseline windows.
struct Row {
    name: &'static str,
    count: usize,
    fell_back: Option<usize>,
    /// Longest wait per window, net of CPU queueing: p50, p99, max (over the windows with a
    /// measured call).
    net: [Duration; 3],
    /// Windows without a measured call.
    unprobed: usize,
    /// The same, wall time (CPU queueing included): p50, p99, max.
    wall: [Duration; 3],
    /// `SwapReport.locked_window`: p50, p99.
    locked: Option<[Duration; 2]>,
    /// Calls caught up by the swap, or replayed by the rollback: p50, p99.
    calls: Option<[usize; 2]>,
    elapsed_p50: Duration,
}

impl Row {
    fn swaps(name: &'static str, samples: &[&SwapSample]) -> Row {
        let locked: Vec<Duration> = samples.iter().filter_map(|s| s.locked_window).collect();
        let calls: Vec<usize> = samples.iter().map(|s| s.calls).collect();
        Row {
            fell_back: Some(samples.iter().filter(|s| s.fell_back.is_some()).count()),
            locked: (!locked.is_empty())
                .then(|| [percentile(&locked, 0.5), percentile(&locked, 0.99)]),
            calls: Some([percentile(&calls, 0.5), percentile(&calls, 0.99)]),
            ..Row::windows(name, samples, |s| s.seen)
        }
    }

    fn no_swap(name: &'static str, samples: &[&SwapSample]) -> Row {
        Row::windows(name, samples, |s| s.no_swap_seen)
    }

    fn snapshot_only(name: &'static str, samples: &[&SwapSample]) -> Row {
        Row::windows(name, samples, |s| s.snapshot_seen)
    }

    fn windows(name: &'static str, samples: &[&SwapSample], seen: fn(&SwapSample) -> Seen) -> Row {
        let net: Vec<Duration> = samples.iter().filter_map(|s| seen(s).longest_net).collect();
        let wall: Vec<Duration> = samples.iter().map(|s| seen(s).longest_wall).collect();
        let elapsed: Vec<Duration> = samples.iter().map(|s| s.elapsed).collect();
        let three = |values: &[Duration]| {
            [
                percentile(values, 0.5),
                percentile(values, 0.99),
                percentile(values, 1.0),
            ]
        };
        Row {
            name,
            count: samples.len(),
            fell_back: None,
            net: three(&net),
            unprobed: samples.len() - net.len(),
            wall: three(&wall),
            locked: None,
            calls: None,
            elapsed_p50: percentile(&elapsed, 0.5),
        }
    }

    fn print(&self) {
        let [n50, n99, nmax] = self.net;
        let [w50, w99, wmax] = self.wall;
        let dash = || "-".to_owned();
        let fell_back = self.fell_back.map_or_else(dash, |n| n.to_string());
        let [l50, l99] = self.locked.map_or_else(|| [dash(), dash()], |l| l.map(us));
        let [c50, c99] = self
            .calls
            .map_or_else(|| [dash(), dash()], |c| c.map(|n| n.to_string()));
        println!(
            "  {:<19} {:>5} {:>5} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} | {l50:>9} {l99:>9} | \
             {c50:>6} {c99:>6} | {:>9} {:>6}",
            self.name,
            self.count,
            fell_back,
            us(n50),
            us(n99),
            us(nmax),
            us(w50),
            us(w99),
            us(wmax),
            us(self.elapsed_p50),
            self.unprobed,
        );
    }
}

/// A duration in microseconds, for the table.
fn us(duration: Duration) -> String {
    format!("{:.1}µs", duration.as_secs_f64() * 1e6)
}

/// The rows of one load level's table, from its swaps, in this order (see the constants below).
fn level_rows(samples: &[&SwapSample]) -> Vec<Row> {
    let select = |series: Series, upgrade: Option<bool>| -> Vec<&SwapSample> {
        samples
            .iter()
            .copied()
            .filter(|s| s.series == series && upgrade.is_none_or(|u| s.upgrade == u))
            .collect()
    };
    let rollback = |series: Series| select(series, Some(false));
    // The baselines of the swaps are windows as long as a swap; those of the rollbacks, as
    // long as a rollback (milliseconds: more room for the machine's noise).
    let swaps: Vec<&SwapSample> = samples
        .iter()
        .copied()
        .filter(|s| s.series.rollback_after().is_none())
        .collect();
    let rollbacks: Vec<&SwapSample> = samples
        .iter()
        .copied()
        .filter(|s| s.series.rollback_after().is_some() && !s.upgrade)
        .collect();
    vec![
        Row::swaps("optimistic", &select(Series::Optimistic, None)),
        Row::swaps("  upgrades", &select(Series::Optimistic, Some(true))),
        Row::swaps("  downgrades", &select(Series::Optimistic, Some(false))),
        Row::swaps("locked", &select(Series::Locked, None)),
        Row::swaps("  upgrades", &select(Series::Locked, Some(true))),
        Row::swaps("  downgrades", &select(Series::Locked, Some(false))),
        Row::swaps(
            "optimistic, 1 %",
            &select(Series::OptimisticDiverging, None),
        ),
        Row::swaps(
            "  upgrades (real)",
            &select(Series::OptimisticDiverging, Some(true)),
        ),
        Row::swaps(
            "  downgrades",
            &select(Series::OptimisticDiverging, Some(false)),
        ),
        Row::no_swap("no swap", &swaps),
        Row::snapshot_only("snapshot only", &swaps),
        Row::swaps(
            "rollback, 1k calls",
            &rollback(Series::Rollback { journal: 1_000 }),
        ),
        Row::swaps(
            "rollback, 10k calls",
            &rollback(Series::Rollback { journal: 10_000 }),
        ),
        Row::swaps(
            "  on a panic",
            &rollback(Series::PanicRollback { journal: 10_000 }),
        ),
        Row::no_swap("no rollback", &rollbacks),
    ]
}

/// The share of the CPUs that, taken by others, marks a run as disturbed: on 2 CPUs, 5 % is a
/// tenth of a core, often enough to preempt a lock holder in a window.
const DISTURBED: f64 = 0.05;

/// Where rows sit in [`level_rows`].
const OPTIMISTIC_ROW: usize = 0;
const REAL_UPGRADE_ROW: usize = 7;
const NO_SWAP_ROW: usize = 9;
const SNAPSHOT_ROW: usize = 10;
const ROLLBACK_10K_ROW: usize = 12;
const PANIC_ROLLBACK_ROW: usize = 13;
const NO_ROLLBACK_ROW: usize = 14;

fn print_report(report: &Report<'_>) {
    let cpus = thread::available_parallelism().map_or(0, usize::from);
    let per_load: Vec<Vec<&SwapSample>> = (0..LOADS.len())
        .map(|load| report.samples.iter().filter(|s| s.load == load).collect())
        .collect();
    println!();
    println!(
        "swap stall: ma_cross 1.0.0 <-> 2.0.x with {} B of state ({} instruments x {WARM_UP_BARS} \
         closes), {CALLERS} callers, {} pairs of steps per series and load level, {cpus} CPUs",
        report.state_bytes,
        report.instruments,
        per_load[0].len() / (2 * Series::ALL.len()),
    );
    match report.elsewhere {
        Some(elsewhere) => {
            let taken = elsewhere.other_processes + elsewhere.steal;
            println!(
                "CPUs taken from this benchmark while its callers ran: {:.1} % by other \
                 processes, {:.1} % by the hypervisor (steal){}",
                100.0 * elsewhere.other_processes,
                100.0 * elsewhere.steal,
                if taken > DISTURBED {
                    ": DISTURBED, every row overstates"
                } else {
                    ""
                }
            );
        }
        None => println!("CPUs taken from this benchmark: unknown (no /proc/stat)"),
    }
    println!(
        "per swap, the longest call that overlapped it: wall = as the caller timed it; net = \
         wall minus its time queued for a CPU"
    );
    println!(
        "  {:<19} {:>5} {:>5} | {:^29} | {:^29} | {:^19} | {:^13} | {:>9} {:>6}",
        "",
        "",
        "fell",
        "longest wait, net",
        "... wall",
        "SwapReport.locked",
        "caught up",
        "swap+",
        "un-"
    );
    println!(
        "  {:<19} {:>5} {:>5} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>9} {:>9} | {:>6} {:>6} | \
         {:>9} {:>6}",
        "",
        "swaps",
        "back",
        "p50",
        "p99",
        "max",
        "p50",
        "p99",
        "max",
        "p50",
        "p99",
        "p50",
        "p99",
        "commit",
        "probed"
    );
    let mut tables = Vec::with_capacity(LOADS.len());
    for (load, level) in LOADS.iter().enumerate() {
        let latencies = &report.latencies[load];
        let calls_per_s = latencies.total as f64 / report.time_at_load[load].as_secs_f64();
        let pace = if level.paced() {
            format!("each caller calls, then spins {:?}", level.gap)
        } else {
            "each caller calls without pause".to_owned()
        };
        let inside_calls = Duration::from_nanos(latencies.sum).as_secs_f64()
            / (CALLERS as f64 * report.time_at_load[load].as_secs_f64());
        println!();
        println!(
            "{}: {pace}; {:.0}k calls/s, slot busy ~{:.0} %, callers inside a call {:.0} % of \
             the time",
            level.name,
            calls_per_s / 1e3,
            100.0 * calls_per_s * report.lone_call.as_secs_f64(),
            100.0 * inside_calls,
        );
        let rows = level_rows(&per_load[load]);
        for row in &rows {
            row.print();
        }
        println!(
            "  every call ({} calls, wall): p50 {}, p99 {}, p99.9 {}, p99.99 {}, max {}",
            latencies.total,
            us(latencies.percentile(0.5)),
            us(latencies.percentile(0.99)),
            us(latencies.percentile(0.999)),
            us(latencies.percentile(0.9999)),
            us(Duration::from_nanos(latencies.max)),
        );
        for (series, kind, count) in fall_back_reasons(&per_load[load]) {
            println!("  {series:?} fell back {count}x: {kind}");
        }
        tables.push(rows);
    }
    println!();
    println!(
        "  percentiles by nearest rank: of 200 steps, p99 is the 3rd longest; of 400, the 5th"
    );
    println!(
        "  slot busy: calls/s x a lone caller's mean call ({}), the share of time the slot is \
         held; callers inside a call: including waiting for the lock",
        us(report.lone_call)
    );
    println!(
        "  optimistic, locked: 2.0.0 runs with signal_threshold 0, answering as 1.0.0 does; \
         optimistic, 1 %: with the 1 % its migration gives, answering otherwise (the real \
         upgrade, whose catch-up mostly disagrees: it then switches under the lock)"
    );
    println!(
        "  no swap: after each swap, a window as long, under the same load, the main thread \
         spinning instead: the machine's noise (no rollback: the same after each rollback)"
    );
    println!(
        "  snapshot only: another such window, in which the main thread takes a snapshot (the \
         plugin copying its state under the slot lock, as every swap's cut does): the floor of a \
         swap's stall"
    );
    println!(
        "  rollback, N calls: the real upgrade, not committed, rolled back once N calls came \
         since the switch (replayed into 1.0.0 under the slot lock; `caught up` = replayed); \
         on a panic: the same to 2.0.3, rolled back by a call panicking, on its caller's \
         thread (`swap+commit` = that call's own wall time)"
    );
    println!(
        "  unprobed: windows in which no caller got a CPU to call (left out of the net figures)"
    );

    let restart = [
        percentile(report.restarts, 0.5),
        percentile(report.restarts, 0.99),
    ];
    println!();
    println!(
        "restart baseline: new process, runtime over the store, stage + install + restore {} B + \
         one call ({} runs, wall): p50 {:.2?}, p99 {:.2?}",
        report.state_bytes,
        report.restarts.len(),
        restart[0],
        restart[1],
    );
    println!(
        "restart / longest wait, wall against wall (the restart's wall time includes its CPU \
         queueing too)"
    );
    println!(
        "  {:<17} | {:^23} | {:^23} | {:^23} | {:^23}",
        "", "real upgrade (1 %)", "optimistic (agreeing)", "rollback, 10k calls", "  on a panic",
    );
    for (level, rows) in LOADS.iter().zip(&tables) {
        let ratios = |row: &Row| {
            let ratio = |i: usize| match row.wall[i] {
                Duration::ZERO => "-".to_owned(),
                wall => format!("{:.0}x", restart[i].as_secs_f64() / wall.as_secs_f64()),
            };
            format!("p50 {:>6}  p99 {:>6}", ratio(0), ratio(1))
        };
        println!(
            "  {:<17} | {} | {} | {} | {}",
            level.name,
            ratios(&rows[REAL_UPGRADE_ROW]),
            ratios(&rows[OPTIMISTIC_ROW]),
            ratios(&rows[ROLLBACK_10K_ROW]),
            ratios(&rows[PANIC_ROLLBACK_ROW]),
        );
    }
    println!();
    println!("p99 stall target <= {TARGET_P99:?}, on the real upgrade (net / wall):");
    for (level, rows) in LOADS.iter().zip(&tables) {
        let verdict = |p99: Duration| {
            if p99 <= TARGET_P99 {
                "met".to_owned()
            } else {
                format!(
                    "missed ({:.1}x)",
                    p99.as_secs_f64() / TARGET_P99.as_secs_f64()
                )
            }
        };
        let real = &rows[REAL_UPGRADE_ROW];
        println!(
            "  {:<17} | real upgrade {} / {}: {} / {} | agreeing optimistic {} / {} | no swap {} \
             / {}, snapshot only {} / {} | rollback 10k {} / {} (no rollback {} / {})",
            level.name,
            us(real.net[1]),
            us(real.wall[1]),
            verdict(real.net[1]),
            verdict(real.wall[1]),
            us(rows[OPTIMISTIC_ROW].net[1]),
            us(rows[OPTIMISTIC_ROW].wall[1]),
            us(rows[NO_SWAP_ROW].net[1]),
            us(rows[NO_SWAP_ROW].wall[1]),
            us(rows[SNAPSHOT_ROW].net[1]),
            us(rows[SNAPSHOT_ROW].wall[1]),
            us(rows[ROLLBACK_10K_ROW].net[1]),
            us(rows[ROLLBACK_10K_ROW].wall[1]),
            us(rows[NO_ROLLBACK_ROW].net[1]),
            us(rows[NO_ROLLBACK_ROW].wall[1]),
        );
    }
}

/// Why optimistic swaps fell back, counted per series and kind of reason, in order of first
/// appearance.
fn fall_back_reasons(samples: &[&SwapSample]) -> Vec<(Series, String, usize)> {
    let mut reasons: Vec<(Series, String, usize)> = Vec::new();
    for sample in samples {
        let Some(reason) = &sample.fell_back else {
            continue;
        };
        let kind = reason_kind(reason);
        match reasons
            .iter_mut()
            .find(|(series, k, _)| *series == sample.series && *k == kind)
        {
            Some((_, _, count)) => *count += 1,
            None => reasons.push((sample.series, kind, 1)),
        }
    }
    reasons
}

/// A fall-back reason with its numbers (call number, calls left, µs) replaced by `N`, to count
/// alike reasons together.
fn reason_kind(reason: &str) -> String {
    let mut kind = String::with_capacity(reason.len());
    let mut in_number = false;
    for c in reason.chars() {
        let digit = c.is_ascii_digit();
        if digit && !in_number {
            kind.push('N');
        } else if !digit {
            kind.push(c);
        }
        in_number = digit;
    }
    kind
}
