//! The desk in this process: a runtime over a temporary store, feed threads, the host's ledger;
//! steps applied by calling the runtime.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use plugsync_host::{Digest, RollbackReport, Runtime, RuntimeOptions, StateSnapshot, TrustedKeys};
use serde_json::{Value, json};

use super::{
    Books, Calls, DemoOptions, DemoOutcome, LIBRARIES, RISK_START, Reference, STRATEGY_START,
    Staged, Venue, WaitMeter, print_verdict, run_steps,
};
use crate::apply::{HostPort, InProcessHost};
use crate::error::Result;
use crate::market::{CallLog, Desk, DeskStats, Ledger, PriceFeed};
use crate::ops::Observe;

const INSTRUMENTS: [&str; 12] = [
    "ES", "NQ", "YM", "RTY", "CL", "NG", "GC", "SI", "ZN", "ZB", "6E", "6J",
];

/// Everything the feed threads share with the main thread.
struct Floor {
    ledger: Ledger,
    stats: Vec<DeskStats>,
    /// Feed threads hold it shared per round of bars; the main thread takes it exclusively to
    /// check the books at a quiet point.
    gate: RwLock<()>,
    stop: AtomicBool,
    /// Every strategy call answered from the mark until the step that rolls back has been
    /// checked.
    log: CallLog,
}

/// Where the reference starts: a plugin's state at a quiet point, the config it ran with and
/// the library of its version.
struct Baseline {
    snapshot: StateSnapshot,
    config: Value,
    library: PathBuf,
}

impl Floor {
    fn calls(&self) -> Calls {
        self.stats.iter().fold(Calls::default(), |c, s| Calls {
            served: c.served + s.calls.load(Ordering::Relaxed),
            failed: c.failed + s.failed.load(Ordering::Relaxed),
        })
    }
}

impl WaitMeter for Floor {
    fn reset(&self) {
        for s in &self.stats {
            s.longest_call_ns.store(0, Ordering::Relaxed);
        }
    }

    fn longest(&self) -> Duration {
        let ns = self
            .stats
            .iter()
            .map(|s| s.longest_call_ns.load(Ordering::Relaxed))
            .max();
        Duration::from_nanos(ns.unwrap_or(0))
    }
}

/// The runtime in this process, its desk and ledger.
struct InProcess<'a> {
    runtime: &'a Runtime,
    floor: &'a Floor,
    instruments: &'a [&'a str],
    /// The libraries' directory, for the reference.
    dir: &'a Path,
    /// The demo's libraries by digest, for the reference.
    libraries: &'a BTreeMap<Digest, &'a str>,
    /// Where the reference starts (see [`Venue::mark`]).
    baseline: Mutex<Option<Baseline>>,
}

impl Venue for InProcess<'_> {
    fn name(&self) -> String {
        "the desk in this process".to_owned()
    }

    fn stage(&self, library: &Path) -> Result<Staged> {
        let stored = self.runtime.stage_file(library)?;
        Ok(Staged {
            digest: stored.digest,
            version: stored.metadata.version,
        })
    }

    fn calls(&self) -> Result<Calls> {
        Ok(self.floor.calls())
    }

    fn books(&self) -> Result<Books> {
        let problems = check_books(self.runtime, self.floor, self.instruments)?;
        Ok(Books {
            agreed: format!("match the ledger on {} instruments", self.instruments.len()),
            problems,
        })
    }

    fn mark(&self, plugin: &str) -> Result<()> {
        if plugin != "ma_cross" {
            return Ok(());
        }
        // A quiet point: no round of bars in flight; every call from here on recorded.
        let snapshot = {
            let _quiet = self
                .floor
                .gate
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let snapshot = self.runtime.snapshot(plugin)?;
            self.floor.log.restart();
            snapshot
        };
        let config = (self.runtime.status().plugins.into_iter())
            .find(|p| p.plugin == plugin)
            .map_or(Value::Null, |p| p.config);
        let library = self.libraries.get(&snapshot.version.digest);
        *self
            .baseline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = library.map(|name| Baseline {
            library: self.dir.join(name),
            snapshot,
            config,
        });
        Ok(())
    }

    fn reference(&self, plugin: &str) -> Result<Reference> {
        if plugin != "ma_cross" {
            return Ok(Reference::Unavailable(format!(
                "the demo records the calls of ma_cross only, not of {plugin}"
            )));
        }
        // A quiet point: no round of bars in flight, every call answered so far recorded.
        let (live, calls) = {
            let _quiet = self
                .floor
                .gate
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (self.runtime.snapshot(plugin)?, self.floor.log.calls())
        };
        // Only the first rollback is checked: stop recording (the log would grow all along).
        self.floor.log.stop();
        let baseline = self
            .baseline
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take();
        let Some(baseline) = baseline else {
            return Ok(Reference::Unavailable(
                "no mark was taken before the step".to_owned(),
            ));
        };
        let checked = check_reference(&baseline, &live, &calls);
        Ok(match checked {
            Ok(()) => Reference::Matched {
                calls: calls.len(),
                sha256: live.sha256.to_string(),
            },
            Err(what) => Reference::Differs(what),
        })
    }

    fn observe(&self) -> Observe {
        Observe::Runtime(self.runtime.clone())
    }

    fn port(&self) -> Result<Box<dyn HostPort>> {
        let host = InProcessHost::new(self.runtime.clone(), "demo", TrustedKeys::none())?;
        Ok(Box::new(host))
    }

    fn meter(&self) -> Option<&dyn WaitMeter> {
        Some(self.floor)
    }

    fn last_rollback(&self, plugin: &str) -> Result<Option<RollbackReport>> {
        let status = self.runtime.status();
        let plugin = status.plugins.into_iter().find(|p| p.plugin == plugin);
        Ok(plugin.and_then(|p| p.last_rollback))
    }
}

/// The config the desk's ma_cross 1.0.0 starts with.
fn strategy_config() -> Value {
    json!({"fast_ma_period": 5, "slow_ma_period": 20, "order_qty": 1})
}

/// Feeds `calls` (every call of ma_cross since the mark, in sequence order) to a reference
/// runtime of its own running the version of the mark alone, from its state there, each call
/// at the host time it was given, and compares the state with `live`.
fn check_reference(
    baseline: &Baseline,
    live: &plugsync_host::StateSnapshot,
    calls: &[(plugsync_host::CallReceipt, Vec<u8>)],
) -> std::result::Result<(), String> {
    let store = tempfile_dir("reference");
    let start = &baseline.snapshot;
    let result = (|| {
        let reference = Runtime::new(RuntimeOptions::new(&store)).map_err(|e| e.to_string())?;
        let digest = reference
            .stage_file(&baseline.library)
            .map_err(|e| e.to_string())?
            .digest;
        if digest != live.version.digest {
            return Err(format!(
                "{} serves, not the version of the mark ({})",
                live.version.version,
                digest.short()
            ));
        }
        reference
            .install(&digest, baseline.config.clone())
            .map_err(|e| e.to_string())?;
        reference.restore(start).map_err(|e| e.to_string())?;
        let handle = reference.handle("ma_cross").map_err(|e| e.to_string())?;
        let mut output = Vec::new();
        let since = calls.iter().filter(|(r, _)| r.seq > start.seq);
        for (receipt, input) in since.take_while(|(r, _)| r.seq <= live.seq) {
            let again = handle
                .call_into_at(input, receipt.now, &mut output)
                .map_err(|e| format!("call #{} failed in the reference: {e}", receipt.seq))?;
            if start.seq + again.seq != receipt.seq {
                return Err(format!(
                    "call #{} is missing from the record (a call failed?)",
                    start.seq + again.seq
                ));
            }
        }
        let expected = reference.snapshot("ma_cross").map_err(|e| e.to_string())?;
        if (start.seq + expected.seq, expected.sha256) == (live.seq, live.sha256) {
            Ok(())
        } else {
            Err(format!(
                "after call #{} the reference has state sha256 {} (as of call #{}), the desk {}",
                live.seq,
                expected.sha256.short(),
                start.seq + expected.seq,
                live.sha256.short()
            ))
        }
    })();
    let _ = std::fs::remove_dir_all(&store);
    result
}

/// A fresh scratch directory path for this process.
fn tempfile_dir(what: &str) -> std::path::PathBuf {
    std::env::temp_dir().join(format!("plugsync-demo-{}-{what}", std::process::id()))
}

/// Compares the plugins' books with the ledger at a quiet point.
fn check_books(runtime: &Runtime, floor: &Floor, instruments: &[&str]) -> Result<Vec<String>> {
    let _quiet = floor
        .gate
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let strategy: Value =
        serde_json::from_str(&runtime.snapshot("ma_cross")?.state).unwrap_or_default();
    let risk: Value =
        serde_json::from_str(&runtime.snapshot("risk_model")?.state).unwrap_or_default();
    let positions = floor.ledger.positions();
    let closes = floor.ledger.closes();
    let mut problems = Vec::new();
    for instrument in instruments {
        let booked = positions.get(*instrument).copied().unwrap_or(0);
        let held = strategy["instruments"][instrument]["position"]
            .as_i64()
            .unwrap_or(0);
        let exposure = risk["instruments"][instrument]["exposure"]
            .as_i64()
            .unwrap_or(0);
        if held != booked || exposure != booked {
            problems.push(format!(
                "{instrument}: ledger {booked}, ma_cross {held}, risk_model {exposure}"
            ));
        }
        let window: Vec<f64> = strategy["instruments"][instrument]["closes"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default();
        let fed = closes.get(*instrument).cloned().unwrap_or_default();
        if !fed.ends_with(&window) || window.is_empty() {
            problems.push(format!(
                "{instrument}: ma_cross's price window is not the last closes the host fed"
            ));
        }
    }
    Ok(problems)
}

/// Runs the demo with the desk in this process.
pub(super) fn run(dir: &Path, options: &DemoOptions, out: &mut dyn Write) -> Result<DemoOutcome> {
    let store = std::env::temp_dir().join(format!("plugsync-demo-{}", std::process::id()));
    let runtime = Runtime::new(RuntimeOptions::new(&store))?;
    let result = trade(&runtime, dir, &store, options, out);
    let _ = std::fs::remove_dir_all(&store);
    result
}

fn trade(
    runtime: &Runtime,
    dir: &Path,
    store: &Path,
    options: &DemoOptions,
    out: &mut dyn Write,
) -> Result<DemoOutcome> {
    let mut digests: BTreeMap<&str, Digest> = BTreeMap::new();
    for name in LIBRARIES {
        digests.insert(name, runtime.stage_file(&dir.join(name))?.digest);
    }
    let _ = writeln!(
        out,
        "plugsync demo: hot updates of a live trading desk\n  plugins from {}\n  store {}",
        dir.display(),
        store.display()
    );
    runtime.install(&digests[RISK_START], json!({"max_position": 10}))?;
    runtime.install(&digests[STRATEGY_START], strategy_config())?;
    let _ = writeln!(out, "  installed risk_model 1.0.0 and ma_cross 1.0.0");

    let threads = options.threads.max(1);
    let per_thread = options
        .instruments_per_thread
        .clamp(1, INSTRUMENTS.len() / threads.min(INSTRUMENTS.len()));
    let instruments: Vec<&str> = INSTRUMENTS
        .iter()
        .copied()
        .take(threads * per_thread)
        .collect();
    let floor = Floor {
        ledger: Ledger::default(),
        stats: (0..threads).map(|_| DeskStats::default()).collect(),
        gate: RwLock::new(()),
        stop: AtomicBool::new(false),
        log: CallLog::idle(),
    };
    let _ = writeln!(
        out,
        "  trading {} instruments from {threads} feed threads",
        instruments.len()
    );

    let names: BTreeMap<Digest, &str> = digests.iter().map(|(name, d)| (*d, *name)).collect();
    let (strategy, risk) = (runtime.handle("ma_cross")?, runtime.handle("risk_model")?);
    let (outcome, desks) = std::thread::scope(|scope| {
        let mut feeds = Vec::new();
        for (t, mine) in instruments.chunks(per_thread).enumerate() {
            let floor = &floor;
            let (strategy, risk) = (strategy.clone(), risk.clone());
            let pace = options.pace;
            feeds.push(scope.spawn(move || {
                let mut desk = Desk::new(strategy, risk, &floor.ledger, &floor.stats[t])
                    .recording_into(&floor.log);
                let mut prices: Vec<(&str, PriceFeed)> = mine
                    .iter()
                    .enumerate()
                    .map(|(i, name)| {
                        (
                            *name,
                            PriceFeed::new((t * 31 + i) as u64 + 1, 100.0 + 37.0 * i as f64),
                        )
                    })
                    .collect();
                while !floor.stop.load(Ordering::Relaxed) {
                    {
                        let _open = floor
                            .gate
                            .read()
                            .unwrap_or_else(std::sync::PoisonError::into_inner);
                        for (name, feed) in &mut prices {
                            desk.on_bar(name, feed.next_close());
                        }
                    }
                    std::thread::sleep(pace);
                }
                desk
            }));
        }
        let venue = InProcess {
            runtime,
            floor: &floor,
            instruments: &instruments,
            dir,
            libraries: &names,
            baseline: Mutex::new(None),
        };
        let outcome = run_steps(&venue, dir, options, out);
        floor.stop.store(true, Ordering::Relaxed);
        let desks: Vec<Desk<'_>> = feeds
            .into_iter()
            .map(|h| h.join().expect("feed threads do not panic"))
            .collect();
        (outcome, desks)
    });
    let outcome = outcome?;

    let mut by_digest: BTreeMap<Digest, u64> = BTreeMap::new();
    for desk in &desks {
        for (digest, n) in &desk.orders_by_digest {
            *by_digest.entry(*digest).or_default() += n;
        }
        for failure in desk.failures.iter().take(3) {
            let _ = writeln!(out, "  failed call: {}", failure.error);
        }
    }
    let tagged: Vec<String> = by_digest
        .iter()
        .map(|(d, n)| format!("{} ({}): {n}", names.get(d).unwrap_or(&"?"), d.short()))
        .collect();
    let _ = writeln!(
        out,
        "orders by the strategy version that emitted them: {}",
        tagged.join(", ")
    );
    print_verdict(&outcome, "match the ledger", out);
    Ok(outcome)
}
