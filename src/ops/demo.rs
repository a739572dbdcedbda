//! `plugsync demo`: hot updates of a live trading desk, in one process, for a newcomer.
//!
//! 1. **locate** the example plugins (building them with cargo when run through `cargo run`);
//! 2. **install** risk_model 1.0.0 and ma_cross 1.0.0 in a runtime over a temporary store;
//! 3. **trade**: feed threads push synthetic bars through strategy → risk → exchange, fills
//!    back to both plugins and into the host's ledger;
//! 4. **step** through the upgrades of DESIGN §6 while they trade: a faulty ma_cross (caught in
//!    soak, rolled back), then ma_cross 2.0.0, risk_model 2.0.0, ma_cross 2.1.0; per step it
//!    prints the state before and after migration, calls served and failed, the longest wait a
//!    caller saw, and checks the plugins' positions and price windows against the ledger;
//! 5. **verdict**: success only if no call failed, no state was lost and every check matched.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use plugsync_host::{
    Digest, HostError, Probe, ProbeStep, RollbackMethod, RollbackReport, Runtime, RuntimeOptions,
    SwapPath, SwapReport, SwapRequest, VerifySpec,
};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::market::{CLOSES_KEPT, Desk, DeskStats, Ledger, PriceFeed};

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the built plugin libraries are; by default beside the running binary.
    pub plugins: Option<PathBuf>,
    /// Feed threads calling the plugins.
    pub threads: usize,
    /// Instruments each feed thread trades.
    pub instruments_per_thread: usize,
    /// How long each step soaks (health checked) before it is committed.
    pub soak: Duration,
    /// Pause between a feed thread's rounds of bars (paces the load).
    pub pace: Duration,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            plugins: None,
            threads: 3,
            instruments_per_thread: 3,
            soak: Duration::from_millis(600),
            pace: Duration::from_micros(200),
        }
    }
}

/// What one step of the demo did.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    /// Plugin id.
    pub plugin: String,
    /// Library switched to.
    pub library: String,
    /// Whether the step was committed (else rolled back or refused).
    pub committed: bool,
    /// Whether the outcome was the one the demo expects of this step.
    pub as_expected: bool,
    /// Calls answered during the step.
    pub calls: u64,
    /// Calls failed during the step.
    pub failed: u64,
    /// Longest wait of a single call during the swap.
    pub longest_wait: Duration,
    /// Whether the plugins' books matched the ledger after the step.
    pub consistent: bool,
    /// Whether a rollback lost state updates.
    pub lost_state: bool,
}

/// The demo's verdict.
#[derive(Debug, Clone)]
pub struct DemoOutcome {
    /// Each step.
    pub steps: Vec<StepOutcome>,
    /// Calls answered in all.
    pub calls: u64,
    /// Calls failed in all.
    pub failed: u64,
}

impl DemoOutcome {
    /// No call failed, no state was lost, every check matched and every step went as expected.
    pub fn passed(&self) -> bool {
        self.failed == 0
            && self
                .steps
                .iter()
                .all(|s| s.consistent && !s.lost_state && s.as_expected)
    }
}

/// The libraries the demo loads, by file name.
const LIBRARIES: [&str; 6] = [
    "libma_cross_v1_0_0.so",
    "libma_cross_v2_0_0.so",
    "libma_cross_v2_1_0.so",
    "librisk_model_v1_0_0.so",
    "librisk_model_v2_0_0.so",
    "libma_cross_fault_health.so",
];

const INSTRUMENTS: [&str; 12] = [
    "ES", "NQ", "YM", "RTY", "CL", "NG", "GC", "SI", "ZN", "ZB", "6E", "6J",
];

/// Finds the plugin libraries; under `cargo run`, builds them first if they are missing.
fn locate_plugins(options: &DemoOptions, out: &mut dyn Write) -> Result<PathBuf> {
    let dir = match &options.plugins {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_owned))
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let missing = |dir: &Path| -> Vec<String> {
        LIBRARIES
            .iter()
            .filter(|name| !dir.join(name).exists())
            .map(|name| (*name).to_owned())
            .collect()
    };
    let absent = missing(&dir);
    if absent.is_empty() {
        return Ok(dir);
    }
    // Under `cargo run`, CARGO names the cargo that built us: build the plugins with it, in
    // the same profile, so that one command on a fresh clone is enough.
    let cargo = match (std::env::var_os("CARGO"), &options.plugins) {
        (Some(cargo), None) => cargo,
        _ => {
            return Err(Error::PluginsNotBuilt {
                dir,
                missing: absent,
            });
        }
    };
    let mut command = Command::new(&cargo);
    command.args(["build", "--workspace", "--lib"]);
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    if let Some(root) = option_env!("CARGO_MANIFEST_DIR") {
        command.current_dir(root);
    }
    let shown = format!(
        "cargo build --workspace --lib{}",
        if cfg!(debug_assertions) {
            ""
        } else {
            " --release"
        }
    );
    let _ = writeln!(out, "building the example plugins: {shown}");
    let status = command.status().map_err(|source| Error::Io {
        action: "run",
        path: PathBuf::from(&cargo),
        source,
    })?;
    if !status.success() {
        return Err(Error::BuildFailed {
            command: shown,
            status: status.to_string(),
        });
    }
    let absent = missing(&dir);
    if absent.is_empty() {
        Ok(dir)
    } else {
        Err(Error::PluginsNotBuilt {
            dir,
            missing: absent,
        })
    }
}

/// A step of the story.
struct Step {
    plugin: &'static str,
    library: &'static str,
    title: &'static str,
    expect_commit: bool,
}

const STEPS: [Step; 4] = [
    Step {
        plugin: "ma_cross",
        library: "libma_cross_fault_health.so",
        title: "a faulty ma_cross release (2.0.1: healthy when fresh, fails once it trades)",
        expect_commit: false,
    },
    Step {
        plugin: "ma_cross",
        library: "libma_cross_v2_0_0.so",
        title: "ma_cross 1.0.0 -> 2.0.0 (renames its periods, adds signal_threshold)",
        expect_commit: true,
    },
    Step {
        plugin: "risk_model",
        library: "librisk_model_v2_0_0.so",
        title: "risk_model 1.0.0 -> 2.0.0 (new state schema: notional limits)",
        expect_commit: true,
    },
    Step {
        plugin: "ma_cross",
        library: "libma_cross_v2_1_0.so",
        title: "ma_cross 2.0.0 -> 2.1.0 (orders carry limit prices; needs risk_model 2.x)",
        expect_commit: true,
    },
];

/// The probe a strategy version must pass: flat bars, then a jump, must give one buy order.
fn crossover_probe(version: &str) -> Probe {
    let mut steps: Vec<ProbeStep> = (0..CLOSES_KEPT)
        .map(|_| ProbeStep {
            input: json!({"bar": {"instrument": "PROBE", "close": 100.0}}),
            expect: Some(json!({"orders": []})),
        })
        .collect();
    let mut order = json!({"order_id": 1, "instrument": "PROBE", "qty": 1});
    if version == "2.1.0" {
        order["limit_price"] = json!(110.0);
    }
    steps.push(ProbeStep {
        input: json!({"bar": {"instrument": "PROBE", "close": 110.0}}),
        expect: Some(json!({"orders": [order]})),
    });
    Probe {
        name: "crossover buys".into(),
        state: None,
        steps,
    }
}

fn risk_probe() -> Probe {
    Probe {
        name: "order within limits is approved".into(),
        state: None,
        steps: vec![ProbeStep {
            input: json!({"check": {"order_id": 9, "instrument": "PROBE", "qty": 1}}),
            expect: Some(json!({"approved": true, "order_id": 9})),
        }],
    }
}

/// Everything the feed threads share with the main thread.
struct Floor {
    ledger: Ledger,
    stats: Vec<DeskStats>,
    /// Feed threads hold it shared per round of bars; the main thread takes it exclusively to
    /// check the books at a quiet point.
    gate: RwLock<()>,
    stop: AtomicBool,
}

impl Floor {
    fn calls(&self) -> (u64, u64) {
        self.stats.iter().fold((0, 0), |(c, f), s| {
            (
                c + s.calls.load(Ordering::Relaxed),
                f + s.failed.load(Ordering::Relaxed),
            )
        })
    }

    fn reset_longest(&self) {
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

/// Elides price windows so a state fits on a screen.
fn elide(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| match v {
                    Value::Array(items) if items.len() > 4 => {
                        (k.clone(), json!(format!("[{} values]", items.len())))
                    }
                    _ => (k.clone(), elide(v)),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The first instrument of a state, with the top-level fields: enough to see a migration.
fn excerpt(state: &Value) -> String {
    let mut shown = serde_json::Map::new();
    if let Value::Object(map) = state {
        for (key, value) in map {
            if key == "instruments" {
                if let Some((name, first)) = value.as_object().and_then(|m| m.iter().next()) {
                    shown.insert(
                        key.clone(),
                        json!({ name: elide(first), "…": "one instrument of many shown" }),
                    );
                }
            } else {
                shown.insert(key.clone(), elide(value));
            }
        }
    }
    serde_json::to_string_pretty(&Value::Object(shown)).unwrap_or_default() + "\n"
}

fn print_swap(out: &mut dyn Write, report: &SwapReport) {
    let before = excerpt(&report.state_before);
    let after = excerpt(&report.state_after);
    let _ = writeln!(
        out,
        "  state migrated {} -> {} (diff of one instrument and the top-level fields):",
        report.from.version, report.to.version
    );
    let diff = similar::TextDiff::from_lines(&before, &after);
    let header_old = format!("state {}", report.from.version);
    let header_new = format!("state {}", report.to.version);
    for line in diff
        .unified_diff()
        .context_radius(2)
        .header(&header_old, &header_new)
        .to_string()
        .lines()
    {
        let _ = writeln!(out, "    {line}");
    }
    let path = match &report.path {
        SwapPath::Optimistic => format!("optimistic, {} calls caught up", report.caught_up),
        SwapPath::Locked { reason } => format!("under the lock ({reason})"),
    };
    let _ = writeln!(
        out,
        "  switch: {path}; slot held {:.1} µs; cut at call #{}, switched at #{}",
        report.locked_window.as_secs_f64() * 1e6,
        report.cut_seq,
        report.switched_seq
    );
    let verification = &report.verification;
    let probes: Vec<String> = verification
        .probes
        .iter()
        .map(|p| {
            format!(
                "`{}` {}",
                p.name,
                if p.passed() { "passed" } else { "FAILED" }
            )
        })
        .collect();
    let differing = verification
        .differential
        .iter()
        .filter(|r| !r.agrees())
        .count();
    let _ = writeln!(
        out,
        "  verified before the switch: health {}, probes {}, differential {} inputs ({} differ)",
        match &verification.health {
            Some(Ok(())) => "ok".to_owned(),
            Some(Err(e)) => format!("FAILED ({e})"),
            None => "skipped".to_owned(),
        },
        if probes.is_empty() {
            "none".to_owned()
        } else {
            probes.join(", ")
        },
        verification.differential.len(),
        differing
    );
}

fn print_rollback(out: &mut dyn Write, report: &RollbackReport) {
    let _ = writeln!(
        out,
        "  ROLLED BACK {} -> {}: {}",
        report.from, report.to, report.reason
    );
    match &report.method {
        RollbackMethod::Replay {
            replayed,
            divergences,
        } => {
            let _ = writeln!(
                out,
                "  state carried back by replay: {replayed} calls replayed into {}, {} outputs differ",
                report.to.version,
                divergences.len()
            );
            if !divergences.is_empty() {
                let _ = writeln!(
                    out,
                    "  (orders one version sent and the other would not have: the host owns them and \
                     reconciles; positions follow fills, so the books still match)"
                );
            }
            for d in divergences.iter().take(2) {
                let _ = writeln!(
                    out,
                    "    call #{}: {} answered {:?}, {} computes {:?}",
                    d.seq, report.from.version, d.new_output, report.to.version, d.old_output
                );
            }
        }
        RollbackMethod::DownMigration {
            unjournaled_calls, ..
        } => {
            let _ = writeln!(
                out,
                "  state carried back by down-migration ({unjournaled_calls} calls were beyond the journal)"
            );
        }
        RollbackMethod::Lossy { lost } => {
            let _ = writeln!(
                out,
                "  LOST {} calls (#{}..#{}): {}",
                lost.count, lost.first_seq, lost.last_seq, lost.why
            );
        }
    }
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

/// Runs the demo, narrating to `out`.
pub fn demo(options: &DemoOptions, out: &mut dyn Write) -> Result<DemoOutcome> {
    let dir = locate_plugins(options, out)?;
    let store = std::env::temp_dir().join(format!("plugsync-demo-{}", std::process::id()));
    let runtime = Runtime::new(RuntimeOptions::new(&store))?;
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
    runtime.install(
        &digests["librisk_model_v1_0_0.so"],
        json!({"max_position": 10}),
    )?;
    runtime.install(
        &digests["libma_cross_v1_0_0.so"],
        json!({"fast_ma_period": 5, "slow_ma_period": 20, "order_qty": 1}),
    )?;
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
    };
    let _ = writeln!(
        out,
        "  trading {} instruments from {threads} feed threads\n",
        instruments.len()
    );

    let (strategy, risk) = (runtime.handle("ma_cross")?, runtime.handle("risk_model")?);
    let result = std::thread::scope(|scope| {
        let mut feeds = Vec::new();
        for (t, mine) in instruments.chunks(per_thread).enumerate() {
            let floor = &floor;
            let (strategy, risk) = (strategy.clone(), risk.clone());
            let pace = options.pace;
            feeds.push(scope.spawn(move || {
                let mut desk = Desk::new(strategy, risk, &floor.ledger, &floor.stats[t]);
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
        let steps = run_steps(&runtime, &floor, &digests, &instruments, options, out);
        floor.stop.store(true, Ordering::Relaxed);
        let desks: Vec<Desk<'_>> = feeds
            .into_iter()
            .map(|h| h.join().expect("feed threads do not panic"))
            .collect();
        steps.map(|steps| (steps, desks))
    });
    let _ = std::fs::remove_dir_all(&store);
    let (steps, desks) = result?;

    let (calls, failed) = floor.calls();
    let mut by_digest: BTreeMap<Digest, u64> = BTreeMap::new();
    for desk in &desks {
        for (digest, n) in &desk.orders_by_digest {
            *by_digest.entry(*digest).or_default() += n;
        }
        for failure in desk.failures.iter().take(3) {
            let _ = writeln!(out, "  failed call: {}", failure.error);
        }
    }
    let names: BTreeMap<Digest, &str> = digests.iter().map(|(name, d)| (*d, *name)).collect();
    let tagged: Vec<String> = by_digest
        .iter()
        .map(|(d, n)| format!("{} ({}): {n}", names.get(d).unwrap_or(&"?"), d.short()))
        .collect();
    let outcome = DemoOutcome {
        steps,
        calls,
        failed,
    };
    let _ = writeln!(
        out,
        "orders by the strategy version that emitted them: {}",
        tagged.join(", ")
    );
    let _ = writeln!(
        out,
        "summary: {} steps ({} committed, {} rolled back), {calls} calls served, {failed} failed; books {}; state {}",
        outcome.steps.len(),
        outcome.steps.iter().filter(|s| s.committed).count(),
        outcome.steps.iter().filter(|s| !s.committed).count(),
        if outcome.steps.iter().all(|s| s.consistent) {
            "match the ledger after every step"
        } else {
            "DO NOT match the ledger"
        },
        if outcome.steps.iter().any(|s| s.lost_state) {
            "LOST in a rollback"
        } else {
            "never lost"
        },
    );
    let _ = writeln!(out, "{}", if outcome.passed() { "PASS" } else { "FAIL" });
    Ok(outcome)
}

fn run_steps(
    runtime: &Runtime,
    floor: &Floor,
    digests: &BTreeMap<&str, Digest>,
    instruments: &[&str],
    options: &DemoOptions,
    out: &mut dyn Write,
) -> Result<Vec<StepOutcome>> {
    // Let the windows fill before the first step.
    std::thread::sleep(options.soak);
    let mut outcomes = Vec::new();
    for (n, step) in STEPS.iter().enumerate() {
        let _ = writeln!(out, "step {}/{}: {}", n + 1, STEPS.len(), step.title);
        let (calls_before, failed_before) = floor.calls();
        let target = digests[step.library];
        let version = runtime.store().get(&target)?.metadata.version;
        let probe = if step.plugin == "ma_cross" {
            crossover_probe(&version)
        } else {
            risk_probe()
        };
        let differential = vec![if step.plugin == "ma_cross" {
            json!({"bar": {"instrument": instruments[0], "close": 100.0}})
        } else {
            json!({"check": {"order_id": 1_000_000, "instrument": instruments[0], "qty": 1, "limit_price": 100.0}})
        }];
        let request = SwapRequest::new(step.plugin, target).verify(VerifySpec {
            health: true,
            probes: vec![probe],
            differential,
        });
        floor.reset_longest();
        let started = Instant::now();
        let swapped = runtime.swap(request);
        let longest_wait = floor.longest();
        let mut rollback = None;
        match &swapped {
            Ok(report) => {
                print_swap(out, report);
                let _ = writeln!(
                    out,
                    "  longest wait of any call while swapping: {:.1} µs (swap call took {:.1} ms)",
                    longest_wait.as_secs_f64() * 1e6,
                    started.elapsed().as_secs_f64() * 1e3
                );
            }
            Err(HostError::RolledBack { report, .. }) => rollback = Some((**report).clone()),
            Err(error) => {
                let _ = writeln!(out, "  refused: {error}");
            }
        }
        let mut committed = false;
        if swapped.is_ok() {
            // Soak: health checked while it trades; a failure rolls the step back.
            let soak_until = Instant::now() + options.soak;
            while rollback.is_none() && Instant::now() < soak_until {
                std::thread::sleep(Duration::from_millis(50));
                match runtime.check_health(step.plugin) {
                    Ok(()) => {}
                    Err(HostError::RolledBack { report, .. }) => rollback = Some(*report),
                    Err(error) => return Err(error.into()),
                }
            }
            if rollback.is_none() {
                runtime.commit(step.plugin)?;
                committed = true;
            }
        }
        if let Some(report) = &rollback {
            print_rollback(out, report);
        }
        let problems = check_books(runtime, floor, instruments)?;
        let (calls_after, failed_after) = floor.calls();
        let outcome = StepOutcome {
            plugin: step.plugin.to_owned(),
            library: step.library.to_owned(),
            committed,
            as_expected: committed == step.expect_commit,
            calls: calls_after - calls_before,
            failed: failed_after - failed_before,
            longest_wait,
            consistent: problems.is_empty(),
            lost_state: rollback.as_ref().is_some_and(|r| !r.lost_nothing()),
        };
        let _ = writeln!(
            out,
            "  {}; {} calls served during the step, {} failed; books {}\n",
            if committed {
                "committed"
            } else {
                "not committed: the previous version serves"
            },
            outcome.calls,
            outcome.failed,
            if problems.is_empty() {
                format!("match the ledger on {} instruments", instruments.len())
            } else {
                format!("MISMATCH: {}", problems.join("; "))
            }
        );
        outcomes.push(outcome);
    }
    Ok(outcomes)
}
