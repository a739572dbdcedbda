//! The host clock: where each call's host time comes from.
//!
//! [`SystemClock`] turns a fast counter (the CPU's time-stamp counter, through `quanta`) into
//! wall-clock time and keeps it on the system clock by **slewing**:
//!
//! - Host time is a continuous, piecewise-linear function of the counter: each *piece* maps the
//!   counter from its start with a rate close to its calibrated one. A reading is one `rdtsc`
//!   and one multiply-add on the raw ticks, no syscall.
//! - Every [`PERIOD`] (driven by [`Clock::tick`], which the runtime's steward calls every 10 ms)
//!   the clock compares itself to the system clock and starts a new piece, [`MARGIN`] ahead in
//!   counter time, that begins exactly where the current one is by then (so host time never
//!   jumps back) and runs at the measured frequency plus a correction of half the offset per
//!   period, at most [`MAX_SLEW`] (500 ppm, the `adjtime` limit).
//! - The frequency (wall nanoseconds per counter nanosecond) is measured over each period and
//!   smoothed, apart from the offset correction: a counter 50 ppm fast or slow is followed
//!   within tens of microseconds, a system clock that NTP slews at 500 ppm within 1 ms.
//! - A step of the system clock: forward by more than [`STEP`], host time steps forward too
//!   (harmless: it stays monotonic); backward, host time never goes back, it slews at
//!   [`MAX_SLEW`] until it meets the system clock again (a 1 s step back takes ~33 min).
//!
//! # Publishing the pieces to readers without a lock
//!
//! Readers (any thread, under a slot lock, ~250 ns per call) must not take a lock or a syscall,
//! and no 128-bit atomic is available; the current pieces are seven words. They are published
//! as a **latched seqlock** (Linux's `seqcount_latch`): two copies of the words and a counter,
//! the `latch`, whose parity says which copy readers use. The writer only ever writes the copy
//! readers are not directed to, so a writer preempted half-way does not stall the hot path, as
//! a plain seqlock's odd phase would (unless it stays preempted longer than [`MARGIN`], below).
//! A reader loads the latch (`Acquire`), reads the counter, loads the copy, then (`Acquire`
//! fence) loads the latch again and retries if it moved (the counter and the copy may come in
//! either order: the proofs below need both between the two latch loads). Soundness in the memory model, with every
//! word an atomic:
//!
//! - *No torn read.* A copy is written only while the latch points away from it, and each batch
//!   of writes comes after a `Release` fence that follows the latch increment pointing readers
//!   away. A reader that observed any word of such a batch has, by fence-to-fence
//!   synchronisation (the writer's `Release` fence, the reader's `Acquire` fence), the increment
//!   happening before its second latch load, which therefore sees a new value: it retries.
//! - *No stale copy.* The increment pointing readers at a copy is a `Release` operation after
//!   the copy's writes, and the reader's first load is `Acquire`: it sees the whole batch.
//!
//! # Why readings never go backwards
//!
//! Let `F` be the function all pieces ever published define together: it is non-decreasing
//! (each piece has a positive rate; a new piece starts at the value the previous one reaches at
//! its start, or higher for a forward step; the multiply rounds down). Every reading returns
//! exactly `F(c)` for its counter value `c`:
//!
//! - A reading of copy 0 validated before re-anchor `k+1` read its counter before its second
//!   latch load, which did not see the increment that sends readers to copy 1; the writer reads
//!   its counter `c_w` after that increment and starts the new piece at `c_w + MARGIN`. So the
//!   reader's counter is before the new piece's start, where the old state is `F`.
//! - During the re-anchor, readers of copy 1 (the old state) are valid only below its `until`,
//!   at most the new piece's start, where the old state is `F` too. A reader past it (the
//!   writer stalled for longer than `MARGIN` mid-publication) waits for the new state rather
//!   than give a time: clamping to `until` could give less than a reading of copy 0 before the
//!   re-anchor whose counter was past `until` (the writer stalled before the increment). A
//!   test with a preempted writer found exactly that.
//! - Later readings use the new state, which is `F`.
//!
//! Two readings ordered by happens-before read their counters in that order, so the later one
//! gets a time not smaller. The assumptions: the counter is monotonic across cores (an
//! invariant TSC, which `quanta` requires to use it, or `CLOCK_MONOTONIC`, its fallback), as the
//! previous anchored-once clock assumed; and, new, a counter read is ordered with the
//! neighbouring memory operations to within far less than `MARGIN` (1 ms; `rdtsc` is not
//! serialising, but its reordering window is a few hundred cycles).
//!
//! Readings are non-decreasing, not strictly increasing: two readings of the same counter value
//! give the same time. No caller needs more (the slot's sequence number orders calls; the time
//! dates them), and strict increase would take a shared read-modify-write per reading: a cache
//! line bouncing between every thread that calls a plugin.

use std::fmt::Debug;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering, fence};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use plugsync_plugin::HostTime;

/// Gives each call its host time. The time is recorded with the call, so replay never reads a
/// clock; tests inject a [`ManualClock`] for golden outputs.
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current host time.
    fn now(&self) -> HostTime;

    /// Upkeep off the hot path: the runtime's steward calls it about every 10 ms. A clock that
    /// needs none (the default) does nothing.
    fn tick(&self) {}
}

/// How often [`SystemClock`] compares itself to the system clock and re-anchors (counter ns).
const PERIOD: u64 = 1_000_000_000;
/// How far ahead (counter ns) a new piece starts: far more than the reordering window of a
/// counter read, so that no reader of the previous state reads a counter past the new start.
const MARGIN: u64 = 1_000_000;
/// The largest correction of the rate, beyond the measured frequency: 500 ppm, the limit of
/// `adjtime` (a 1 ms offset is slewed in 2 s, a 1 s one in ~33 min).
const MAX_SLEW: f64 = 500e-6;
/// The share of the offset corrected over the next period (half: the offset decays by half each
/// period, without overshoot).
const GAIN: f64 = 0.5;
/// An offset ahead of host time beyond this is a forward step of the system clock: followed by
/// a step (host time only moves forward, and slewing it would take `STEP / MAX_SLEW` per ms).
/// At this offset the slew `GAIN * STEP / PERIOD` just saturates: below it, host time slews.
const STEP: i64 = 1_000_000;
/// How much a period's measured frequency moves the estimate (an exponential average over ~4
/// periods: smooths the jitter of reading the two clocks, follows NTP's frequency changes).
const FREQ_WEIGHT: f64 = 0.25;
/// A period whose measured frequency differs more than this from the estimate contains a step
/// of the system clock, not a frequency: it does not count.
const MAX_FREQ_JUMP: f64 = 2_000e-6;
/// The farthest the frequency estimate may stray from the counter's nominal rate.
const MAX_FREQ_ERROR: f64 = 10_000e-6;
/// A pair of readings of the counter and the wall clock is trusted when the two counter
/// readings around the wall clock's are this close (ns); otherwise it is read again.
const PAIR_WINDOW: u64 = 20_000;
/// Fixed-point scale of a piece's rate: `rate / 2^32` host ns per counter tick (below 1 ppb steps
/// for a counter of up to 4 GHz).
const RATE_SHIFT: u32 = 32;

/// The fast counter: ticks of its own, non-decreasing across threads, at a nominal (calibrated
/// but imperfect) number of nanoseconds per tick.
trait Counter: Send + Sync + Debug + 'static {
    fn ticks(&self) -> u64;

    /// Nanoseconds per tick, as calibrated: the frequency the clock starts from and measures
    /// its errors against. The durations in counter ns above ([`PERIOD`], [`MARGIN`],
    /// [`PAIR_WINDOW`]) are converted with it once, so a reading scales the raw counter with
    /// one multiply (converting to ns first would be a second).
    fn nanos_per_tick(&self) -> f64 {
        1.0
    }
}

/// The reference the host follows: the system's wall clock, ns since the Unix epoch.
trait Wall: Send + Sync + Debug + 'static {
    fn wall_ns(&self) -> i64;
}

/// The CPU's time-stamp counter through `quanta` (which falls back to `CLOCK_MONOTONIC`, in
/// ns, where the TSC is not invariant), read raw; `quanta`'s calibration against the OS clock
/// at start (to some ppm) gives its nominal rate.
#[derive(Debug)]
struct TscCounter {
    clock: quanta::Clock,
    nanos_per_tick: f64,
}

impl TscCounter {
    fn new() -> TscCounter {
        let clock = quanta::Clock::new();
        // The calibrated scale, read through a long delta (2^40 ticks: ~6 minutes at 3 GHz) so
        // that its rounding is far below a ppb.
        const SPAN: u64 = 1 << 40;
        let nanos_per_tick = clock.delta_as_nanos(SPAN, 2 * SPAN) as f64 / SPAN as f64;
        TscCounter {
            clock,
            nanos_per_tick,
        }
    }
}

impl Counter for TscCounter {
    fn ticks(&self) -> u64 {
        // One `rdtsc`: `Slewed` scales it.
        self.clock.raw()
    }

    fn nanos_per_tick(&self) -> f64 {
        self.nanos_per_tick
    }
}

/// The system clock (`CLOCK_REALTIME`): ~40 ns a reading on a VM, read once a period.
#[derive(Debug)]
struct SystemWall;

impl Wall for SystemWall {
    fn wall_ns(&self) -> i64 {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        i64::try_from(since_epoch.as_nanos()).unwrap_or(i64::MAX)
    }
}

/// One linear piece: host time `at` at counter `from`, then `rate / 2^32` ns per counter tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Piece {
    from: u64,
    at: i64,
    rate: u64,
}

impl Piece {
    /// Host time at `counter`; rounds down, so it is non-decreasing in `counter`. A counter
    /// before `from` (which the re-anchoring rules out) counts as `from`.
    fn host(&self, counter: u64) -> i64 {
        let elapsed = counter.saturating_sub(self.from);
        let scaled = (u128::from(elapsed) * u128::from(self.rate)) >> RATE_SHIFT;
        self.at
            .saturating_add(i64::try_from(scaled).unwrap_or(i64::MAX))
    }
}

/// What readers need: the piece in force and the next one, which starts at `next.from`
/// (possibly still ahead), and the counter value up to which this state is valid (`u64::MAX`
/// but in the copy readers use during a re-anchor).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Anchors {
    current: Piece,
    next: Piece,
    until: u64,
}

impl Anchors {
    /// Both pieces as one: `next` continues `current` at `next.from` without going back.
    fn starting(piece: Piece) -> Anchors {
        Anchors {
            current: piece,
            next: piece,
            until: u64::MAX,
        }
    }

    /// Host time at `counter`, ignoring `until` (which readers check).
    fn host(&self, counter: u64) -> i64 {
        if counter < self.next.from {
            self.current.host(counter)
        } else {
            self.next.host(counter)
        }
    }
}

/// One copy of the [`Anchors`], word by word: atomics, so that a torn read is only a wrong
/// value the latch check discards, never undefined behaviour.
#[derive(Debug, Default)]
struct AnchorWords([AtomicU64; 7]);

impl AnchorWords {
    fn load(&self) -> Anchors {
        let w = |i: usize| self.0[i].load(Ordering::Relaxed);
        Anchors {
            current: Piece {
                from: w(0),
                at: w(1) as i64,
                rate: w(2),
            },
            next: Piece {
                from: w(3),
                at: w(4) as i64,
                rate: w(5),
            },
            until: w(6),
        }
    }

    fn store(&self, anchors: &Anchors) {
        let words = [
            anchors.current.from,
            anchors.current.at as u64,
            anchors.current.rate,
            anchors.next.from,
            anchors.next.at as u64,
            anchors.next.rate,
            anchors.until,
        ];
        for (word, value) in self.0.iter().zip(words) {
            word.store(value, Ordering::Relaxed);
        }
    }
}

/// The writer's side: the state readers see, and what steers the next piece. Behind a mutex
/// that only re-anchors take (`try_lock`: a second ticker skips its turn).
#[derive(Debug)]
struct Steering {
    /// The state published in the copy readers use.
    anchors: Anchors,
    /// Wall ns per counter ns (nominal: ticks times the counter's `nanos_per_tick`), measured.
    freq: f64,
    /// The last pair of readings (counter, wall): the start of the period measured next.
    last: (u64, i64),
    /// The counter value from which the next re-anchor is due.
    due: u64,
}

/// A clock slewed onto a wall clock (module docs); generic over its two sources for tests.
#[derive(Debug)]
struct Slewed<C, W> {
    counter: C,
    wall: W,
    /// The counter's nominal ns per tick, and [`PERIOD`], [`MARGIN`] and [`PAIR_WINDOW`] in
    /// its ticks.
    scale: Scale,
    /// Bumped twice per re-anchor; its parity is the copy readers use.
    latch: AtomicU64,
    copies: [AnchorWords; 2],
    steering: Mutex<Steering>,
}

impl<C: Counter, W: Wall> Slewed<C, W> {
    /// A clock anchored at the wall clock's current time, at the counter's nominal rate.
    fn new(counter: C, wall: W) -> Slewed<C, W> {
        let scale = Scale::of(&counter);
        let (tick, wall_ns) = read_pair(&counter, &wall, scale.pair_window);
        let anchors = Anchors::starting(Piece {
            from: tick,
            at: wall_ns,
            rate: scale.rate_fixed(1.0),
        });
        let clock = Slewed {
            counter,
            wall,
            scale,
            latch: AtomicU64::new(0),
            copies: Default::default(),
            steering: Mutex::new(Steering {
                anchors,
                freq: 1.0,
                last: (tick, wall_ns),
                due: tick.saturating_add(scale.period),
            }),
        };
        clock.copies[0].store(&anchors);
        clock
    }

    /// The hot path: no lock, no syscall; retries only when a re-anchor's latch increment
    /// falls inside the reading (twice a period at most), and waits only for a re-anchor
    /// stalled for longer than `MARGIN`.
    fn now(&self) -> i64 {
        let mut waits = 0u32;
        loop {
            let latch = self.latch.load(Ordering::Acquire);
            // Read after the first latch load and before the second: the module docs' proof
            // needs the counter inside the validated window. Before the copy's words, so that
            // they need not be kept across the counter's (not inlined) call.
            let counter = self.counter.ticks();
            let anchors = self.copies[(latch & 1) as usize].load();
            fence(Ordering::Acquire);
            if self.latch.load(Ordering::Relaxed) != latch {
                continue;
            }
            if counter < anchors.until {
                return anchors.host(counter);
            }
            // A re-anchor stalled (its thread preempted) for longer than `MARGIN`: the time at
            // this counter is the new piece's, not published yet. Any time given instead could
            // be later than a reading after the publication, or earlier than one before it.
            waits += 1;
            if waits < 64 {
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
        }
    }

    /// Re-anchors if a period has passed since the last time (and no other thread is at it).
    fn tick(&self) {
        let Ok(mut steering) = self.steering.try_lock() else {
            return;
        };
        if self.counter.ticks() < steering.due {
            return;
        }
        self.reanchor(&mut steering);
    }

    /// Measures the offset and frequency against the wall clock, then publishes a new piece.
    fn reanchor(&self, steering: &mut Steering) {
        let scale = self.scale;
        let (tick, wall_ns) = read_pair(&self.counter, &self.wall, scale.pair_window);
        steering.due = tick.saturating_add(scale.period);
        // The new piece must follow the one in force (rules out a counter that went back).
        let old = steering.anchors;
        if tick < old.next.from.saturating_add(scale.margin) {
            return;
        }

        // Frequency over the period just ended; a period with a wall-clock step in it measures
        // the step, not the frequency, and is left out.
        let (last_tick, last_wall) = steering.last;
        steering.last = (tick, wall_ns);
        let period = tick.saturating_sub(last_tick);
        if period >= scale.period / 2 {
            let measured =
                wall_ns.saturating_sub(last_wall) as f64 / (period as f64 * scale.nanos_per_tick);
            if (measured - steering.freq).abs() <= MAX_FREQ_JUMP {
                steering.freq += FREQ_WEIGHT * (measured - steering.freq);
                steering.freq = steering
                    .freq
                    .clamp(1.0 - MAX_FREQ_ERROR, 1.0 + MAX_FREQ_ERROR);
            }
        }

        // Offset: how far host time is behind the wall clock (positive) or ahead (negative).
        let offset = wall_ns.saturating_sub(old.host(tick));
        let correction = (GAIN * offset as f64 / PERIOD as f64).clamp(-MAX_SLEW, MAX_SLEW);
        let rate = scale.rate_fixed(steering.freq + correction);

        // Publish (module docs). 1. Readers are sent to copy 1, the current state valid up to
        // `until`; the new piece starts no earlier, so up to there it is `F`.
        let until = self.counter.ticks().saturating_add(scale.margin);
        fence(Ordering::Release); // Copy 1's writes after the last increment (no torn read).
        self.copies[1].store(&Anchors { until, ..old });
        self.latch.fetch_add(1, Ordering::Release); // Odd: readers on copy 1.
        fence(Ordering::Release); // Copy 0's writes after that increment.

        // 2. The new piece starts `MARGIN` after a counter read that follows the increment, so
        // past every counter a reader of the old copy 0 can have validated.
        let start = self.counter.ticks().saturating_add(scale.margin).max(until);
        let continued = old.host(start);
        let at = if offset > STEP {
            // A forward step of the wall clock: host time steps forward to it.
            let ahead = ((start - tick) as f64 * scale.nanos_per_tick * steering.freq) as i64;
            continued.max(wall_ns.saturating_add(ahead))
        } else {
            continued
        };
        let new = Anchors {
            // `start` is past `old.next.from` (checked above): below `start`, `F` is `old.next`.
            current: old.next,
            next: Piece {
                from: start,
                at,
                rate,
            },
            until: u64::MAX,
        };
        self.copies[0].store(&new);
        self.latch.fetch_add(1, Ordering::Release); // Even: readers on copy 0, the new state.
        steering.anchors = new;
    }
}

/// A counter's nominal rate, and the clock's durations in its ticks.
#[derive(Debug, Clone, Copy)]
struct Scale {
    nanos_per_tick: f64,
    period: u64,
    margin: u64,
    pair_window: u64,
}

impl Scale {
    fn of(counter: &impl Counter) -> Scale {
        let nanos_per_tick = counter.nanos_per_tick();
        let ticks = |nanos: u64| (nanos as f64 / nanos_per_tick).ceil() as u64;
        Scale {
            nanos_per_tick,
            period: ticks(PERIOD),
            margin: ticks(MARGIN),
            pair_window: ticks(PAIR_WINDOW),
        }
    }

    /// A rate in host ns per counter ns (nominal), as a piece's fixed-point rate per tick.
    fn rate_fixed(&self, rate: f64) -> u64 {
        (rate * self.nanos_per_tick * (1u64 << RATE_SHIFT) as f64).round() as u64
    }
}

/// One reading of the counter and the wall clock taken together: the wall clock read between
/// two counter reads close enough (a thread preempted in between would pair a wrong counter
/// value), with the counter's midpoint. After a few tries, the closest pair.
fn read_pair(counter: &impl Counter, wall: &impl Wall, pair_window: u64) -> (u64, i64) {
    let mut best: Option<(u64, u64, i64)> = None;
    for _ in 0..4 {
        let before = counter.ticks();
        let wall_ns = wall.wall_ns();
        let after = counter.ticks();
        let window = after.saturating_sub(before);
        let mid = before + window / 2;
        if best.is_none_or(|(w, _, _)| window < w) {
            best = Some((window, mid, wall_ns));
        }
        if window <= pair_window {
            break;
        }
    }
    let (_, tick, wall_ns) = best.expect("read at least once");
    (tick, wall_ns)
}

/// Wall-clock time, read cheaply: the CPU's time-stamp counter (`quanta`, calibrated against
/// the OS clock) mapped onto the system clock, and re-anchored to it every second by
/// **slewing**: the counter's rate is corrected (the measured frequency, plus at most 500 ppm
/// to close the offset), so host time stays within 1 ms of the system clock over a day (tens of
/// microseconds for a counter 50 ppm off) despite the counter's calibration error and NTP's
/// adjustments. Reading the OS wall clock costs ~40 ns on a VM, a sixth of a plugin call; a
/// reading here is one counter read and a multiply-add on shared, rarely written words, without
/// a lock or a syscall (the re-anchoring made no measurable difference: ~21 ns a reading before
/// and after, on a VM where `rdtsc` itself is most of it).
///
/// Host time never goes backwards, from any thread: a forward step of the system clock is
/// followed by a step, a backward one by slewing at 500 ppm until host time meets the system
/// clock again (a 1 s step back takes ~33 minutes). Readings are non-decreasing; two may be
/// equal. The re-anchoring happens in [`Clock::tick`], which the runtime's steward calls;
/// without ticks the clock keeps its last rate. Clones share one clock.
#[derive(Debug, Clone)]
pub struct SystemClock {
    inner: Arc<Slewed<TscCounter, SystemWall>>,
}

impl SystemClock {
    /// A clock anchored at the current wall time.
    pub fn new() -> SystemClock {
        SystemClock {
            inner: Arc::new(Slewed::new(TscCounter::new(), SystemWall)),
        }
    }
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock::new()
    }
}

impl Clock for SystemClock {
    fn now(&self) -> HostTime {
        HostTime(self.inner.now())
    }

    /// Re-anchors to the system clock once a second (two clock readings, a few stores).
    fn tick(&self) {
        self.inner.tick();
    }
}

/// A clock that moves only when told, by one nanosecond per reading so that every call still
/// gets a distinct time.
#[derive(Debug, Default)]
pub struct ManualClock {
    nanos: AtomicI64,
}

impl ManualClock {
    /// A clock starting at `start`.
    pub fn starting_at(start: HostTime) -> ManualClock {
        ManualClock {
            nanos: AtomicI64::new(start.0),
        }
    }

    /// Moves the clock forward.
    pub fn advance(&self, nanos: i64) {
        self.nanos.fetch_add(nanos, Ordering::Relaxed);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> HostTime {
        HostTime(self.nanos.fetch_add(1, Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::PoisonError;

    use super::*;

    const MS: i64 = 1_000_000;
    const SECOND: i64 = 1_000 * MS;
    const HOUR: i64 = 3_600 * SECOND;
    const DAY: i64 = 24 * HOUR;
    /// Wall time at the start of every simulation (2023-11-14T22:13:20Z).
    const START: i64 = 1_700_000_000 * SECOND;

    /// A counter the test sets.
    #[derive(Debug, Clone, Default)]
    struct ManualCounter(Arc<AtomicU64>);

    impl Counter for ManualCounter {
        fn ticks(&self) -> u64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// A counter the test sets, whose ticks are not nanoseconds (as the TSC's are not).
    #[derive(Debug, Clone)]
    struct ManualTicks {
        ticks: ManualCounter,
        nanos_per_tick: f64,
    }

    impl Counter for ManualTicks {
        fn ticks(&self) -> u64 {
            self.ticks.ticks()
        }

        fn nanos_per_tick(&self) -> f64 {
            self.nanos_per_tick
        }
    }

    /// A wall clock the test sets.
    #[derive(Debug, Clone, Default)]
    struct ManualWall(Arc<AtomicI64>);

    impl Wall for ManualWall {
        fn wall_ns(&self) -> i64 {
            self.0.load(Ordering::SeqCst)
        }
    }

    /// A simulated day: how the counter errs and what happens to the wall clock.
    struct Case {
        name: &'static str,
        /// The counter's rate error: counter ns per true ns is `1 + ppm / 1e6`.
        counter_ppm: f64,
        /// The counter's nominal ns per tick (1: it counts ns; a 2.9 GHz TSC counted raw: 1/2.9).
        nanos_per_tick: f64,
        /// Steps of the wall clock: (true time, step).
        steps: &'static [(i64, i64)],
        /// Slews of the wall clock, as NTP does them: (from, to, ppm) in true time.
        slews: &'static [(i64, i64, f64)],
    }

    impl Case {
        /// The counter at true time `t`.
        fn counter(&self, t: i64) -> u64 {
            (t as f64 * (1.0 + self.counter_ppm * 1e-6) / self.nanos_per_tick) as u64
        }

        /// The wall clock at true time `t`.
        fn wall(&self, t: i64) -> i64 {
            let stepped: i64 = self.steps.iter().filter(|s| s.0 <= t).map(|s| s.1).sum();
            let slewed: f64 = (self.slews.iter())
                .map(|&(from, to, ppm)| (t.min(to) - from).max(0) as f64 * ppm * 1e-6)
                .sum();
            START + t + stepped + slewed as i64
        }

        /// Whether host time may be off the wall clock by more than 1 ms at `t`: while it
        /// catches up a step (one period or so for a forward step; slewing at 500 ppm for a
        /// backward one), with ten seconds of settling.
        fn recovering(&self, t: i64) -> bool {
            self.steps.iter().any(|&(at, step)| {
                let catch_up = if step > 0 {
                    2 * SECOND
                } else {
                    (-step as f64 / MAX_SLEW) as i64
                };
                (at..at + catch_up + 10 * SECOND).contains(&t)
            })
        }

        /// Whether the host time may jump at `t` (a forward step of the wall clock is followed
        /// at the next re-anchor, which may be one period and a tick later).
        fn jumping(&self, t: i64) -> bool {
            self.steps
                .iter()
                .any(|&(at, step)| step > 0 && (at..at + 3 * SECOND).contains(&t))
        }
    }

    const CASES: &[Case] = &[
        Case {
            name: "counter 50 ppm fast",
            counter_ppm: 50.0,
            nanos_per_tick: 1.0,
            steps: &[],
            slews: &[],
        },
        Case {
            name: "counter 50 ppm slow",
            counter_ppm: -50.0,
            nanos_per_tick: 1.0,
            steps: &[],
            slews: &[],
        },
        Case {
            name: "counter 50 ppm fast, wall steps back 100 ms, then forward 2 s",
            counter_ppm: 50.0,
            nanos_per_tick: 1.0,
            steps: &[(6 * HOUR, -100 * MS), (12 * HOUR + 123 * MS, 2 * SECOND)],
            slews: &[],
        },
        Case {
            name: "counter 50 ppm slow, wall steps forward 500 ms, back 5 ms, back 1 s",
            counter_ppm: -50.0,
            nanos_per_tick: 1.0,
            steps: &[
                (HOUR, 500 * MS),
                (2 * HOUR, -5 * MS),
                (18 * HOUR + 7 * MS, -SECOND),
            ],
            slews: &[],
        },
        Case {
            name: "counter 50 ppm fast, NTP slews the wall clock 500 ppm for 10 min, each way",
            counter_ppm: 50.0,
            nanos_per_tick: 1.0,
            steps: &[],
            slews: &[
                (HOUR, HOUR + 600 * SECOND, 500.0),
                (3 * HOUR, 3 * HOUR + 600 * SECOND, -500.0),
            ],
        },
        Case {
            name: "a 2.9 GHz counter read raw, 50 ppm fast",
            counter_ppm: 50.0,
            nanos_per_tick: 1.0 / 2.9,
            steps: &[],
            slews: &[],
        },
        Case {
            name: "a 3.7 GHz counter read raw, 50 ppm slow, wall steps back 5 ms then forward 2 s",
            counter_ppm: -50.0,
            nanos_per_tick: 1.0 / 3.7,
            steps: &[(2 * HOUR, -5 * MS), (12 * HOUR + 123 * MS, 2 * SECOND)],
            slews: &[],
        },
    ];

    /// Simulates each case's day in steps of 100 ms, ticking the clock like the steward and
    /// reading it around every tick: host time never decreases, advances at the true rate
    /// within the slew bound (but for a forward step), and stays within 1 ms of the wall clock
    /// (but while it catches up a step).
    #[test]
    fn slewed_clock_follows_the_wall_clock_over_a_day() {
        const DT: i64 = 100 * MS;
        for case in CASES {
            let counter = ManualTicks {
                ticks: ManualCounter::default(),
                nanos_per_tick: case.nanos_per_tick,
            };
            let wall = ManualWall::default();
            wall.0.store(case.wall(0), Ordering::SeqCst);
            let clock = Slewed::new(counter.clone(), wall.clone());
            let (mut last, mut last_t) = (clock.now(), 0);
            let mut worst_offset = 0;
            for t in (DT..=DAY).step_by(DT as usize) {
                counter.ticks.0.store(case.counter(t), Ordering::SeqCst);
                wall.0.store(case.wall(t), Ordering::SeqCst);
                for read in 0..2 {
                    let host = clock.now();
                    let at = format!("{}: at {} s (read {read})", case.name, t as f64 / 1e9);
                    assert!(
                        host >= last,
                        "{at}: host time went back by {} ns",
                        last - host
                    );
                    let advance = (host - last) as f64 / (t - last_t).max(1) as f64;
                    if read == 0 && !case.jumping(t) {
                        assert!(
                            (advance - 1.0).abs() <= MAX_SLEW + 100e-6,
                            "{at}: host time advanced at {advance} of the true rate"
                        );
                    }
                    let offset = (case.wall(t) - host).abs();
                    if !case.recovering(t) {
                        assert!(offset <= MS, "{at}: host time is {offset} ns off the wall");
                        worst_offset = worst_offset.max(offset);
                    }
                    (last, last_t) = (host, t);
                    clock.tick();
                }
            }
            println!("{}: worst offset {} µs", case.name, worst_offset / 1_000);
        }
    }

    /// A counter that moves 100 µs at every reading: shared, totally ordered, like a TSC.
    #[derive(Debug, Default)]
    struct SteppingCounter(AtomicU64);

    impl Counter for SteppingCounter {
        fn ticks(&self) -> u64 {
            self.0.fetch_add(100_000, Ordering::SeqCst)
        }
    }

    /// Readers on several threads while another re-anchors as often as it can, the wall clock
    /// stepping back and forth around the counter: readings ordered by a lock (as the slot's
    /// orders calls) never go back, nor do one thread's own.
    #[test]
    fn readings_never_go_back_across_threads_and_reanchors() {
        let wall = ManualWall::default();
        let clock = Slewed::new(SteppingCounter::default(), wall.clone());
        let last = Mutex::new(i64::MIN);
        /// Counts a reader out when it ends, even by a failed assertion: the re-anchoring
        /// thread stops when none is left, so a failure fails the test instead of hanging it.
        struct Reading<'a>(&'a AtomicU64);
        impl Drop for Reading<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        const READERS: u64 = 2;
        let reading = AtomicU64::new(READERS);
        std::thread::scope(|scope| {
            scope.spawn(|| {
                let offsets = [0, 5 * MS, -5 * MS, MS / 2, -200 * MS, 3 * SECOND];
                for i in 0.. {
                    if reading.load(Ordering::SeqCst) == 0 {
                        break;
                    }
                    let counter = clock.counter.0.load(Ordering::SeqCst) as i64;
                    wall.0.store(
                        START + counter + offsets[i % offsets.len()],
                        Ordering::SeqCst,
                    );
                    clock.tick();
                }
            });
            for _ in 0..READERS {
                scope.spawn(|| {
                    let _reading = Reading(&reading);
                    let mut own = i64::MIN;
                    // Enough readings, and enough re-anchors among them, however the threads are
                    // scheduled.
                    let mut readings = 0;
                    while readings < 200_000 || clock.latch.load(Ordering::Relaxed) < 2 * 50 {
                        readings += 1;
                        let mut last = last.lock().unwrap_or_else(PoisonError::into_inner);
                        let host = clock.now();
                        assert!(host >= *last, "host time went back by {} ns", *last - host);
                        *last = host;
                        drop(last);
                        let host = clock.now();
                        assert!(host >= own, "host time went back by {} ns", own - host);
                        own = host;
                    }
                });
            }
        });
    }

    /// The public clock: near the system clock, non-decreasing over a few thousand readings
    /// with ticks in between.
    #[test]
    fn system_clock_is_monotonic_and_near_the_system_clock() {
        let clock = SystemClock::new();
        let wall = SystemWall.wall_ns();
        let mut last = clock.now();
        assert!((last.0 - wall).abs() < SECOND, "{} vs {wall}", last.0);
        for i in 0..5_000 {
            if i % 100 == 0 {
                clock.tick();
            }
            let now = clock.now();
            assert!(now >= last, "went back from {last:?} to {now:?}");
            last = now;
        }
        // Clones are the same clock.
        assert!(clock.clone().now() >= last);
    }
}
