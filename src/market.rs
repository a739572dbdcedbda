//! The reference trading desk: a synthetic market feed, a simulated exchange and the host's
//! ledger, wired to a strategy plugin and a risk plugin.
//!
//! Effects go through the host, so that replay is exact: the strategy returns orders, the risk model
//! approves them, the exchange fills them, and the host feeds each fill back to both plugins as
//! a call and books it in its own ledger. Each plugin's state is then a function of its inputs,
//! and the ledger is the truth its positions are checked against.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Instant;

use plugsync_desk::{Bar, Fill, Orders, RiskInput, StrategyInput, Verdict};
use plugsync_host::{CallError, CallReceipt, Digest, SlotHandle};
use serde::Serialize;

/// How many recent closes the ledger keeps per instrument (the strategies' longest window).
pub const CLOSES_KEPT: usize = 20;

/// A deterministic random walk with trending regimes, so moving averages cross now and then.
#[derive(Debug, Clone)]
pub struct PriceFeed {
    state: u64,
    price: f64,
    drift: f64,
    regime_left: u32,
}

impl PriceFeed {
    /// A feed starting at `start`, its path fixed by `seed`.
    pub fn new(seed: u64, start: f64) -> PriceFeed {
        PriceFeed {
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            price: start,
            drift: 0.0,
            regime_left: 0,
        }
    }

    /// xorshift64*: tiny, fast and reproducible; cryptographic quality is not needed here.
    fn next_unit(&mut self) -> f64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let bits = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11;
        bits as f64 / (1u64 << 53) as f64
    }

    /// The next bar's close, on a 0.25 tick.
    pub fn next_close(&mut self) -> f64 {
        if self.regime_left == 0 {
            self.drift = (self.next_unit() - 0.5) * 0.004;
            self.regime_left = 20 + (self.next_unit() * 60.0) as u32;
        }
        self.regime_left -= 1;
        let shock = (self.next_unit() - 0.5) * 0.003;
        self.price = (self.price * (1.0 + self.drift + shock)).max(1.0);
        (self.price * 4.0).round() / 4.0
    }
}

/// The host's own books: what was really traded, and the recent closes it fed.
#[derive(Debug, Default)]
pub struct Ledger {
    positions: Mutex<BTreeMap<String, i64>>,
    closes: Mutex<BTreeMap<String, VecDeque<f64>>>,
}

impl Ledger {
    /// Books a fill.
    pub fn book(&self, fill: &Fill<'_>) {
        *lock(&self.positions)
            .entry(fill.instrument.to_string())
            .or_default() += fill.qty;
    }

    /// Records a close fed to the strategy.
    pub fn record_close(&self, instrument: &str, close: f64) {
        let mut closes = lock(&self.closes);
        let window = closes.entry(instrument.to_owned()).or_default();
        if window.len() == CLOSES_KEPT {
            window.pop_front();
        }
        window.push_back(close);
    }

    /// Net position per instrument.
    pub fn positions(&self) -> BTreeMap<String, i64> {
        lock(&self.positions).clone()
    }

    /// Recent closes per instrument, oldest first.
    pub fn closes(&self) -> BTreeMap<String, Vec<f64>> {
        lock(&self.closes)
            .iter()
            .map(|(k, v)| (k.clone(), v.iter().copied().collect()))
            .collect()
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Counters of one feed thread: written by that thread only, read by whoever reports.
#[derive(Debug, Default)]
pub struct DeskStats {
    /// Plugin calls answered.
    pub calls: AtomicU64,
    /// Plugin calls that failed.
    pub failed: AtomicU64,
    /// Orders emitted by the strategy.
    pub orders: AtomicU64,
    /// Orders the risk model rejected.
    pub rejected: AtomicU64,
    /// Longest single call seen since the last reset, in nanoseconds.
    pub longest_call_ns: AtomicU64,
}

impl DeskStats {
    fn call_took(&self, started: Instant) {
        let ns = started.elapsed().as_nanos() as u64;
        self.calls.fetch_add(1, Ordering::Relaxed);
        if ns > self.longest_call_ns.load(Ordering::Relaxed) {
            self.longest_call_ns.store(ns, Ordering::Relaxed);
        }
    }
}

/// The strategy calls desks answered, as they made them (receipt and input), while it records:
/// what a reference runtime is fed to check a plugin's state independently of the runtime's
/// own account (the demo's rollback check).
#[derive(Debug, Default)]
pub struct CallLog {
    recording: AtomicBool,
    calls: Mutex<Vec<(CallReceipt, Vec<u8>)>>,
}

impl CallLog {
    /// A log that records from now on.
    pub fn recording() -> CallLog {
        CallLog {
            recording: AtomicBool::new(true),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// A log that records nothing until [`restart`](CallLog::restart)ed.
    pub fn idle() -> CallLog {
        CallLog {
            recording: AtomicBool::new(false),
            calls: Mutex::new(Vec::new()),
        }
    }

    /// Forgets what was recorded and records from now on.
    pub fn restart(&self) {
        *lock(&self.calls) = Vec::new();
        self.recording.store(true, Ordering::Relaxed);
    }

    fn record(&self, receipt: CallReceipt, input: &[u8]) {
        if self.recording.load(Ordering::Relaxed) {
            lock(&self.calls).push((receipt, input.to_vec()));
        }
    }

    /// The calls recorded so far, in sequence order.
    pub fn calls(&self) -> Vec<(CallReceipt, Vec<u8>)> {
        let mut calls = lock(&self.calls).clone();
        calls.sort_by_key(|(receipt, _)| receipt.seq);
        calls
    }

    /// Stops recording and forgets what was recorded.
    pub fn stop(&self) {
        self.recording.store(false, Ordering::Relaxed);
        *lock(&self.calls) = Vec::new();
    }
}

/// The last call failure a desk saw (for the report).
#[derive(Debug, Clone)]
pub struct DeskFailure {
    /// The error.
    pub error: CallError,
}

/// One thread's view of the trading loop: strategy → risk → exchange → fills back.
#[derive(Debug)]
pub struct Desk<'a> {
    /// The strategy plugin's slot.
    pub strategy: SlotHandle,
    /// The risk plugin's slot.
    pub risk: SlotHandle,
    /// The host's books.
    pub ledger: &'a Ledger,
    /// This thread's counters.
    pub stats: &'a DeskStats,
    /// Orders per strategy artifact (tagged with the digest that emitted them).
    pub orders_by_digest: BTreeMap<Digest, u64>,
    /// The failures seen.
    pub failures: Vec<DeskFailure>,
    /// Where the strategy calls answered are recorded, if anywhere.
    log: Option<&'a CallLog>,
    input: Vec<u8>,
}

impl<'a> Desk<'a> {
    /// A desk over the two slots.
    pub fn new(
        strategy: SlotHandle,
        risk: SlotHandle,
        ledger: &'a Ledger,
        stats: &'a DeskStats,
    ) -> Desk<'a> {
        Desk {
            strategy,
            risk,
            ledger,
            stats,
            orders_by_digest: BTreeMap::new(),
            failures: Vec::new(),
            log: None,
            input: Vec::with_capacity(256),
        }
    }

    /// Records the strategy calls answered into `log`.
    pub fn recording_into(mut self, log: &'a CallLog) -> Desk<'a> {
        self.log = Some(log);
        self
    }

    /// Sends `message` to the slot's plugin and reads its answer with `parse`.
    fn call<T>(
        &mut self,
        slot: Slot,
        message: &impl Serialize,
        parse: impl FnOnce(&[u8]) -> serde_json::Result<T>,
    ) -> Option<(Digest, T)> {
        self.input.clear();
        serde_json::to_writer(&mut self.input, message).expect("protocol messages serialise");
        let handle = match slot {
            Slot::Strategy => &self.strategy,
            Slot::Risk => &self.risk,
        };
        let started = Instant::now();
        let result = handle.call_with(&self.input, parse);
        self.stats.call_took(started);
        if let (Slot::Strategy, Some(log), Ok((receipt, _))) = (slot, self.log, &result) {
            log.record(*receipt, &self.input);
        }
        match result {
            Ok((receipt, Ok(parsed))) => Some((receipt.digest, parsed)),
            Ok((receipt, Err(reason))) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                self.failures.push(DeskFailure {
                    error: CallError::Plugin {
                        plugin: handle.plugin().to_owned(),
                        digest: receipt.digest,
                        message: format!("unparsable output: {reason}"),
                        panicked: false,
                        seq: receipt.seq,
                    },
                });
                None
            }
            Err(error) => {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                self.failures.push(DeskFailure { error });
                None
            }
        }
    }

    /// Feeds one bar through the loop: the strategy's orders go through risk to the exchange,
    /// which fills them at the close; the fills go back to both plugins and into the ledger.
    pub fn on_bar(&mut self, instrument: &str, close: f64) {
        self.ledger.record_close(instrument, close);
        let bar = StrategyInput::Bar(Bar {
            instrument: instrument.into(),
            close,
        });
        let Some((digest, output)) = self.call(Slot::Strategy, &bar, |out| {
            serde_json::from_slice::<Orders>(out).map(Orders::into_owned)
        }) else {
            return;
        };
        for order in output.orders.iter() {
            self.stats.orders.fetch_add(1, Ordering::Relaxed);
            *self.orders_by_digest.entry(digest).or_default() += 1;
            let check = RiskInput::Check(order.clone());
            let Some((_, verdict)) = self.call(Slot::Risk, &check, |out| {
                serde_json::from_slice::<Verdict>(out)
            }) else {
                continue;
            };
            if !verdict.approved {
                // Tell the strategy, so that it stops counting the order as pending.
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                let cancel = StrategyInput::Cancel(order.clone());
                self.call(Slot::Strategy, &cancel, any_json);
                continue;
            }
            // The simulated exchange fills in full at the limit, or at the close.
            let fill = Fill {
                order_id: order.order_id,
                instrument: Cow::Borrowed(&order.instrument),
                qty: order.qty,
                price: order.limit_price.unwrap_or(close),
            };
            self.ledger.book(&fill);
            self.call(Slot::Strategy, &StrategyInput::Fill(fill.clone()), any_json);
            self.call(Slot::Risk, &RiskInput::Fill(fill), any_json);
        }
    }
}

/// Reads an answer the desk does not act on (to a fill or a cancel): any JSON.
fn any_json(output: &[u8]) -> serde_json::Result<serde_json::Value> {
    serde_json::from_slice(output)
}

#[derive(Debug, Clone, Copy)]
enum Slot {
    Strategy,
    Risk,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_feed_is_reproducible_and_on_tick() {
        let path = |seed| {
            let mut feed = PriceFeed::new(seed, 100.0);
            (0..500).map(|_| feed.next_close()).collect::<Vec<_>>()
        };
        assert_eq!(path(7), path(7));
        assert_ne!(path(7), path(8));
        assert!(
            path(7)
                .iter()
                .all(|p| (p * 4.0).fract() == 0.0 && *p >= 1.0)
        );
    }

    #[test]
    fn the_ledger_keeps_positions_and_recent_closes() {
        let ledger = Ledger::default();
        for i in 0..25 {
            ledger.record_close("ES", f64::from(i));
        }
        ledger.book(&Fill {
            order_id: 1,
            instrument: "ES".into(),
            qty: 2,
            price: 1.0,
        });
        ledger.book(&Fill {
            order_id: 2,
            instrument: "ES".into(),
            qty: -1,
            price: 1.0,
        });
        assert_eq!(ledger.positions()["ES"], 1);
        assert_eq!(
            ledger.closes()["ES"],
            (5..25).map(f64::from).collect::<Vec<_>>()
        );
    }
}
