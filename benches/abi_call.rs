//! The cost of calling a plugin through the plugsync ABI, against calling the same code as a
//! `dyn Trait` (the target: an ABI call costs at most 1.10× a direct `dyn Trait` call of the
//! same code).
//!
//! All variants run `ma_cross` 2.0.0's real `on_bar`: parse a JSON bar, update a full 20-close
//! window of one of 8 instruments, compare the averages, write the `{"orders":[…]}` output.
//!
//! - `abi_call`: the built `libma_cross_v2_0_0.so`, staged into a store and loaded by
//!   `plugsync_host::Runtime`, called with `SlotHandle::call_into` and a reused output buffer
//!   (slot lock, host clock, sequence number, the `extern "C"` call with its `catch_unwind`, the
//!   copy of the output); `abi_call_host_time` is the same with the host giving each call its
//!   time (`SlotHandle::call_into_at`, as a host with event timestamps does), which tells the
//!   ABI's own cost from the cost of reading a clock;
//! - `direct_locked_baseline`: the same plugin type from the crate's rlib, behind a
//!   `Box<dyn Strategy>` in a `std::sync::Mutex`, as a host without plugsync would keep a
//!   stateful strategy that several threads call;
//! - `direct_locked_clock`: the baseline reading a [`SystemClock`] per call for the time it
//!   gives, as a host without plugsync that dates each call by the clock does: the like-for-like
//!   baseline of `abi_call` (a TSC read is ~10 ns in a tight loop on this VM, ~25 ns between
//!   calls of real work);
//! - `direct_unlocked`, for context: the bare `dyn` call.
//!
//! divan prints each variant's distribution. The ratios are then measured again in interleaved
//! rounds, so that a shared machine slowing down half-way affects every variant alike.
//!
//! Wall time on a shared machine moves by a few % between runs, as much as the overhead being
//! measured, so the instructions per call are counted too, which repeat exactly. With
//! `PLUGSYNC_BENCH_ABI_CALLS=<variant>:<calls>` set (variant `abi`, `abi_host_time`,
//! `direct_locked`, `direct_locked_clock` or `direct_unlocked`) the binary only warms that variant up, then makes
//! `<calls>` calls in `counted_calls`, for callgrind to count:
//!
//! ```text
//! cargo bench --bench abi_call --no-run   # prints the binary's path
//! PLUGSYNC_BENCH_ABI_CALLS=abi_host_time:100000 valgrind --tool=callgrind \
//!     --toggle-collect='*counted_calls*' --callgrind-out-file=/dev/null target/release/deps/abi_call-…
//! ```
//!
//! and the instructions per call are callgrind's total (`Collected`) over `<calls>`: the loop,
//! the feed and the call, setup and warm-up left out.

mod common;

use std::hint::black_box;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use ma_cross_v2_0_0::{Config, MaCross};
use plugsync_host::{Clock, Runtime, RuntimeOptions, SlotHandle, SystemClock};
use plugsync_plugin::{HostContext, HostTime, Plugin, PluginError};
use tempfile::TempDir;

/// Instruments the feed cycles through: enough that consecutive calls touch different
/// windows, few enough that the state stays in cache as a busy strategy's would.
const INSTRUMENTS: usize = 8;
/// Bars per instrument fed before measuring, so that every window is full (`slow_period`).
const WARM_UP_BARS: usize = 20;
/// Host time given to the direct calls: `ma_cross` ignores it, and reading a clock is the
/// host's business (the runtime reads its own).
const NOW: HostTime = HostTime(1_700_000_000_000_000_000);

/// Set to `<variant>:<calls>` to count one variant's calls under callgrind (see above).
const COUNT_ENV: &str = "PLUGSYNC_BENCH_ABI_CALLS";

fn main() {
    if let Ok(spec) = std::env::var(COUNT_ENV) {
        count_calls(&spec);
        return;
    }
    divan::main();
    if common::is_bench_run() {
        print_ratios();
    }
}

/// A plugin instance the benchmark can feed, whichever way it is called.
trait Variant {
    /// Feeds one input; returns the output length (so the work cannot be optimised away).
    fn call(&mut self, input: &[u8]) -> usize;
}

/// The inputs, in a cycle.
struct Feed {
    inputs: Vec<Vec<u8>>,
    next: usize,
}

impl Feed {
    /// A feed whose warm-up has been given to `variant`.
    fn warmed(variant: &mut dyn Variant) -> Feed {
        let inputs = common::bar_feed(&common::instruments(INSTRUMENTS));
        let mut feed = Feed { inputs, next: 0 };
        for _ in 0..WARM_UP_BARS * INSTRUMENTS {
            variant.call(feed.next());
        }
        feed
    }

    fn next(&mut self) -> &[u8] {
        let input = &self.inputs[self.next];
        self.next = (self.next + 1) % self.inputs.len();
        input
    }
}

fn config() -> serde_json::Value {
    serde_json::json!({"fast_period": 5, "slow_period": 20})
}

/// `ma_cross` 2.0.0 loaded from its cdylib by the plugsync runtime.
struct Abi {
    slot: SlotHandle,
    output: Vec<u8>,
    /// The time the host gives each call, or `None` for the runtime's clock.
    now: Option<HostTime>,
    // Dropped last: the store the library was loaded from (the mapping outlives the file).
    _store: TempDir,
}

impl Abi {
    /// The runtime as a host runs it: the runtime reads the system clock for each call
    /// (`host_time: false`), or the host gives each call its time (the direct calls' `NOW`).
    fn new(host_time: bool) -> Abi {
        let [library] = common::plugin_libraries(["ma_cross_v2_0_0"]);
        let store = tempfile::tempdir().expect("a temporary store");
        let runtime = Runtime::new(RuntimeOptions::new(store.path())).expect("a runtime");
        let artifact = runtime.stage_file(&library).expect("ma_cross 2.0.0 stages");
        runtime
            .install(&artifact.digest, config())
            .expect("ma_cross 2.0.0 installs");
        Abi {
            slot: runtime.handle("ma_cross").expect("installed just now"),
            output: Vec::with_capacity(256),
            now: host_time.then_some(NOW),
            _store: store,
        }
    }
}

impl Variant for Abi {
    fn call(&mut self, input: &[u8]) -> usize {
        match self.now {
            Some(now) => self.slot.call_into_at(input, now, &mut self.output),
            None => self.slot.call_into(input, &mut self.output),
        }
        .expect("ma_cross accepts its bars");
        self.output.len()
    }
}

/// What a host without plugsync would call: the plugin's own `call`, as a trait object.
trait Strategy: Send {
    fn on_input(
        &mut self,
        input: &[u8],
        now: HostTime,
        output: &mut Vec<u8>,
    ) -> Result<(), PluginError>;
}

impl<P: Plugin> Strategy for P {
    fn on_input(
        &mut self,
        input: &[u8],
        now: HostTime,
        output: &mut Vec<u8>,
    ) -> Result<(), PluginError> {
        output.clear();
        self.call(input, now, output)
    }
}

fn strategy() -> Box<dyn Strategy> {
    let config: Config = serde_json::from_value(config()).expect("a valid config");
    let plugin = MaCross::create(config, &HostContext::detached()).expect("ma_cross creates");
    // Hidden from the optimiser, so that the call stays a real virtual call rather than being
    // devirtualised and inlined into the benchmark loop.
    black_box(Box::new(plugin) as Box<dyn Strategy>)
}

/// The baseline: the trait object behind a per-slot mutex, like the runtime's slot lock; with
/// `clock`, the time given is read from it under the lock, as the runtime reads its own.
struct DirectLocked {
    slot: Mutex<Box<dyn Strategy>>,
    clock: Option<SystemClock>,
    output: Vec<u8>,
}

impl Variant for DirectLocked {
    fn call(&mut self, input: &[u8]) -> usize {
        let mut strategy = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        let now = self.clock.as_ref().map_or(NOW, Clock::now);
        strategy
            .on_input(input, now, &mut self.output)
            .expect("ma_cross accepts its bars");
        self.output.len()
    }
}

/// The bare trait object.
struct DirectUnlocked {
    strategy: Box<dyn Strategy>,
    output: Vec<u8>,
}

impl Variant for DirectUnlocked {
    fn call(&mut self, input: &[u8]) -> usize {
        self.strategy
            .on_input(input, NOW, &mut self.output)
            .expect("ma_cross accepts its bars");
        self.output.len()
    }
}

impl DirectLocked {
    fn new() -> DirectLocked {
        DirectLocked {
            slot: Mutex::new(strategy()),
            clock: None,
            output: Vec::with_capacity(256),
        }
    }

    fn reading_the_clock() -> DirectLocked {
        DirectLocked {
            clock: Some(SystemClock::new()),
            ..DirectLocked::new()
        }
    }
}

impl DirectUnlocked {
    fn new() -> DirectUnlocked {
        DirectUnlocked {
            strategy: strategy(),
            output: Vec::with_capacity(256),
        }
    }
}

fn bench(bencher: divan::Bencher, mut variant: impl Variant) {
    let mut feed = Feed::warmed(&mut variant);
    bencher.bench_local(|| variant.call(feed.next()));
}

/// Enough calls per sample that the timer's resolution does not matter, enough samples for a
/// stable median; about a second per variant.
const SAMPLE_SIZE: u32 = 2_000;
const SAMPLE_COUNT: u32 = 1_000;

#[divan::bench(sample_size = SAMPLE_SIZE, sample_count = SAMPLE_COUNT)]
fn abi_call(bencher: divan::Bencher) {
    bench(bencher, Abi::new(false));
}

#[divan::bench(sample_size = SAMPLE_SIZE, sample_count = SAMPLE_COUNT)]
fn abi_call_host_time(bencher: divan::Bencher) {
    bench(bencher, Abi::new(true));
}

#[divan::bench(sample_size = SAMPLE_SIZE, sample_count = SAMPLE_COUNT)]
fn direct_locked_baseline(bencher: divan::Bencher) {
    bench(bencher, DirectLocked::new());
}

#[divan::bench(sample_size = SAMPLE_SIZE, sample_count = SAMPLE_COUNT)]
fn direct_locked_clock(bencher: divan::Bencher) {
    bench(bencher, DirectLocked::reading_the_clock());
}

#[divan::bench(sample_size = SAMPLE_SIZE, sample_count = SAMPLE_COUNT)]
fn direct_unlocked(bencher: divan::Bencher) {
    bench(bencher, DirectUnlocked::new());
}

/// Interleaved rounds: each round times a batch of every variant in turn.
const ROUNDS: usize = 31;
const CALLS_PER_BATCH: u32 = 20_000;

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn print_ratios() {
    let mut variants: [(&str, Box<dyn Variant>); 5] = [
        (
            "direct dyn call, per-slot Mutex (baseline)",
            Box::new(DirectLocked::new()),
        ),
        ("ABI call via plugsync-host", Box::new(Abi::new(false))),
        (
            "  the same, the host giving the time",
            Box::new(Abi::new(true)),
        ),
        (
            "direct, per-slot Mutex, reading the clock",
            Box::new(DirectLocked::reading_the_clock()),
        ),
        ("direct dyn call, no lock", Box::new(DirectUnlocked::new())),
    ];
    let mut feeds: Vec<Feed> = variants
        .iter_mut()
        .map(|(_, variant)| Feed::warmed(variant.as_mut()))
        .collect();
    let mut per_call = vec![Vec::with_capacity(ROUNDS); variants.len()];
    for _ in 0..ROUNDS {
        for ((_, variant), (feed, times)) in variants
            .iter_mut()
            .zip(feeds.iter_mut().zip(per_call.iter_mut()))
        {
            let started = Instant::now();
            for _ in 0..CALLS_PER_BATCH {
                black_box(variant.call(black_box(feed.next())));
            }
            times.push(started.elapsed().as_nanos() as f64 / f64::from(CALLS_PER_BATCH));
        }
    }
    // The ratio is taken within each round, then the median over rounds: a round shares its
    // machine conditions between the variants, the median drops the rounds that were disturbed.
    let ratio = |variant: usize| {
        let mut ratios: Vec<f64> = per_call[variant]
            .iter()
            .zip(&per_call[0])
            .map(|(t, base)| t / base)
            .collect();
        median(&mut ratios)
    };
    let ratios: Vec<f64> = (0..variants.len()).map(ratio).collect();
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    println!();
    println!(
        "ma_cross 2.0.0 on_bar ({INSTRUMENTS} instruments, full 20-close windows); median of \
         {ROUNDS} interleaved rounds of {CALLS_PER_BATCH} calls; {cpus} CPUs"
    );
    for (i, (name, _)) in variants.iter().enumerate() {
        let nanos = median(&mut per_call[i].clone());
        println!(
            "  {name:<44} {:>8.1?} per call  {:>5.3}x",
            Duration::from_secs_f64(nanos / 1e9),
            ratios[i]
        );
    }
    // Like for like: the host giving the time against the baseline, which reads no clock; the
    // runtime reading its clock against the baseline reading the same clock.
    let overhead = (ratios[2] - 1.0) * 100.0;
    let with_clock = (ratios[1] / ratios[3] - 1.0) * 100.0;
    let met = |overhead: f64| if overhead <= 10.0 { "met" } else { "missed" };
    println!(
        "  ABI overhead, like for like (target <= 10 %): {overhead:+.1} % with the host giving the \
         time ({}); {with_clock:+.1} % with both reading the clock ({}); the clock itself: {:+.1} % \
         of the baseline",
        met(overhead),
        met(with_clock),
        (ratios[3] - 1.0) * 100.0,
    );
}

/// Makes the calls callgrind counts: `<calls>` calls of one variant, after its warm-up.
fn count_calls(spec: &str) {
    let (name, calls) = spec
        .split_once(':')
        .unwrap_or_else(|| panic!("{COUNT_ENV}={spec}: expected <variant>:<calls>"));
    let calls: u32 = calls
        .parse()
        .unwrap_or_else(|_| panic!("{COUNT_ENV}={spec}: <calls> is a number"));
    let mut variant: Box<dyn Variant> = match name {
        "abi" => Box::new(Abi::new(false)),
        "abi_host_time" => Box::new(Abi::new(true)),
        "direct_locked" => Box::new(DirectLocked::new()),
        "direct_locked_clock" => Box::new(DirectLocked::reading_the_clock()),
        "direct_unlocked" => Box::new(DirectUnlocked::new()),
        _ => panic!(
            "{COUNT_ENV}={spec}: the variants are abi, abi_host_time, direct_locked, \
             direct_locked_clock, direct_unlocked"
        ),
    };
    let mut feed = Feed::warmed(variant.as_mut());
    let started = Instant::now();
    let total = counted_calls(variant.as_mut(), &mut feed, calls);
    println!(
        "{name}: {calls} calls in {:.2?} ({total} output bytes)",
        started.elapsed()
    );
}

/// The only code callgrind counts (`--toggle-collect='*counted_calls*'`): not inlined, so that
/// it has a symbol to toggle on.
#[inline(never)]
fn counted_calls(variant: &mut dyn Variant, feed: &mut Feed, calls: u32) -> usize {
    let mut total = 0;
    for _ in 0..calls {
        total += black_box(variant.call(black_box(feed.next())));
    }
    total
}
