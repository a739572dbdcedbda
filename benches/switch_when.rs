//! What a strategy's condition adds to the switch: the slot lock's hold (the stall callers can
//! see) for the same real upgrade, `ma_cross` 2.0.0 → 2.1.0 and back by its down-migration,
//! with no `when` (the baseline), `when: {flat: true}` (the host asks the running instance's
//! `swap_safe` under the lock, in the hold that switches) and `when: {idle_for_ms}` (the host
//! compares its clock with the slot's last call time).
//!
//! `ma_cross` holds 200 instruments, each with a full window of closes and flat (closes that
//! never cross), so `swap_safe` walks them all: its worst case. The three series take turns
//! swap by swap, so that a shared machine slowing down hits them alike. Each swap is committed
//! before the next. Nothing calls the plugin meanwhile: the figure is the hold itself, not
//! callers queueing for it (`swap_stall` measures that).
//!
//! `cargo bench --bench switch_when` prints the median hold per series and its ratio to the
//! baseline; under `cargo test` it makes a few rounds as a smoke test.

mod common;

use std::time::Duration;

use plugsync_host::{Digest, Runtime, RuntimeOptions, SwapMode, SwapRequest, SwitchWhen};
use serde_json::json;

/// Instruments the strategy holds a window of.
const INSTRUMENTS: usize = 200;

/// Swaps per series in a measuring run (half of them up, half down).
const ROUNDS: usize = 400;

#[derive(Clone, Copy, Debug)]
enum Series {
    Immediate,
    Flat,
    Idle,
}

impl Series {
    const ALL: [Series; 3] = [Series::Immediate, Series::Flat, Series::Idle];

    fn when(self) -> Option<SwitchWhen> {
        match self {
            Series::Immediate => None,
            Series::Flat => Some(SwitchWhen {
                idle_for_ms: None,
                flat: true,
            }),
            Series::Idle => Some(SwitchWhen {
                idle_for_ms: Some(0),
                flat: false,
            }),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Series::Immediate => "immediate (baseline)",
            Series::Flat => "when flat",
            Series::Idle => "when idle",
        }
    }
}

fn main() {
    let measuring = common::is_bench_run();
    let rounds = if measuring { ROUNDS } else { 4 };
    let [v2_0, v2_1] = common::plugin_libraries(["ma_cross_v2_0_0", "ma_cross_v2_1_0"]);
    let store = tempfile::tempdir().expect("a temporary store");
    let runtime = Runtime::new(RuntimeOptions::new(store.path())).expect("a runtime");
    let stage = |path| runtime.stage_file(path).expect("stages").digest;
    let (down, up) = (stage(&v2_0), stage(&v2_1));
    let config = json!({"fast_period": 5, "slow_period": 20, "signal_threshold": 0.0});
    runtime
        .install(&down, config)
        .expect("ma_cross 2.0.0 installs");
    for name in common::instruments(INSTRUMENTS) {
        for _ in 0..20 {
            let bar = json!({"bar": {"instrument": name, "close": 100.0}});
            runtime
                .call("ma_cross", bar.to_string().as_bytes())
                .expect("a bar");
        }
    }
    let mut held: Vec<Vec<Duration>> = vec![Vec::new(); Series::ALL.len()];
    let mut running = down;
    for round in 0..rounds {
        for (at, series) in Series::ALL.into_iter().enumerate() {
            let to: Digest = if running == down { up } else { down };
            let mut request = SwapRequest::new("ma_cross", to).mode(SwapMode::Optimistic);
            request.when = series.when();
            let report = runtime
                .swap(request)
                .unwrap_or_else(|e| panic!("round {round}, {series:?}: {e}"));
            runtime.commit("ma_cross").expect("the step commits");
            running = to;
            held[at].push(report.locked_window);
        }
    }
    if !measuring {
        return;
    }
    let baseline = common::median(&mut held[0].clone());
    println!(
        "switch_when: the slot lock's hold per switch, ma_cross 2.0.x ↔ 2.1.0, {INSTRUMENTS} instruments, {rounds} swaps each"
    );
    for (at, series) in Series::ALL.into_iter().enumerate() {
        let median = common::median(&mut held[at]);
        let p99 = common::percentile(&held[at], 0.99);
        println!(
            "  {:22} median {:>8.1} µs  p99 {:>8.1} µs  {:.3}× the baseline's median",
            series.name(),
            median.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            median.as_secs_f64() / baseline.as_secs_f64()
        );
    }
}
