//! Memory over many swap and unload cycles.
//!
//! Plugin code is never unmapped (ARCHITECTURE.md: never `dlclose`), so what a long-running host
//! must not accumulate is everything else: instances, journals, buffers. This benchmark runs
//! 500 cycles of swap → commit → swap back → commit → unload → install over two plugins and
//! reports the process RSS, the resident libraries and the live instances as it goes, beside the
//! RSS after the first cycles (the baseline: every library is mapped by then). Reported, not
//! asserted: RSS depends on the allocator; the tests assert the exact bounds on libraries and
//! instances.

use std::time::Instant;

use plugsync_host::{Runtime, RuntimeOptions, SwapRequest};
use serde_json::json;

mod common;

const CYCLES: usize = 500;
const SMOKE_CYCLES: usize = 10;

/// Resident set size of this process, from `/proc/self/status` (Linux), in KiB.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|line| line.starts_with("VmRSS:"))
                .and_then(|line| line.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let cycles = if common::is_bench_run() {
        CYCLES
    } else {
        SMOKE_CYCLES
    };
    let libraries = common::plugin_libraries([
        "ma_cross_v1_0_0",
        "ma_cross_v2_0_0",
        "risk_model_v1_0_0",
        "risk_model_v1_1_0",
    ]);
    let store = tempfile::tempdir().expect("a temporary store");
    let runtime = Runtime::new(RuntimeOptions::new(store.path())).expect("a runtime");
    let [ma1, ma2, risk1, risk11] =
        libraries.map(|path| runtime.stage_file(&path).expect("staged").digest);
    let ma_config = json!({"fast_ma_period": 5, "slow_ma_period": 20, "order_qty": 1});
    let risk_config = json!({"max_position": 10});
    runtime
        .install(&ma1, ma_config.clone())
        .expect("ma_cross installs");
    runtime
        .install(&risk1, risk_config.clone())
        .expect("risk_model installs");

    let ma_cross = runtime.handle("ma_cross").expect("a slot");
    let mut output = Vec::new();
    let feed = common::bar_feed(&common::instruments(8));
    let mut next = 0usize;
    let mut trade = |calls: usize| {
        for _ in 0..calls {
            ma_cross
                .call_into(&feed[next % feed.len()], &mut output)
                .expect("the call is served");
            next += 1;
        }
    };

    println!(
        "cycles: swap ma_cross 1.0.0 -> 2.0.0 -> 1.0.0 and risk_model 1.0.0 -> 1.1.0 -> 1.0.0 (each committed), unload both, install again; 200 calls per cycle"
    );
    println!(
        "{:>7} {:>10} {:>10} {:>9} {:>9} {:>10}",
        "cycle", "RSS KiB", "vs base", "resident", "instances", "ms/cycle"
    );
    let started = Instant::now();
    let mut baseline = None;
    for cycle in 1..=cycles {
        let cycle_started = Instant::now();
        for (plugin, up, down) in [("ma_cross", ma2, ma1), ("risk_model", risk11, risk1)] {
            for target in [up, down] {
                runtime
                    .swap(SwapRequest::new(plugin, target))
                    .expect("the swap succeeds");
                trade(50);
                runtime.commit(plugin).expect("the step commits");
            }
        }
        runtime.unload("ma_cross").expect("unloads");
        runtime.unload("risk_model").expect("unloads");
        runtime
            .install(&ma1, ma_config.clone())
            .expect("installs again");
        runtime
            .install(&risk1, risk_config.clone())
            .expect("installs again");
        let rss = rss_kib();
        let base = *baseline.get_or_insert(rss);
        if cycle == 1 || cycle % (cycles / 5).max(1) == 0 {
            let status = runtime.status();
            println!(
                "{cycle:>7} {rss:>10} {:>+10} {:>9} {:>9} {:>10.2}",
                rss as i64 - base as i64,
                status.resident.len(),
                status.live_instances,
                cycle_started.elapsed().as_secs_f64() * 1e3
            );
        }
    }
    let status = runtime.status();
    println!(
        "{cycles} cycles in {:.1} s; at the end {} libraries resident (4 distinct digests loaded), {} live instances (2 plugins serving)",
        started.elapsed().as_secs_f64(),
        status.resident.len(),
        status.live_instances
    );
}
