//! `ma_cross` 2.0.0: a moving-average crossover strategy, as a plugsync plugin.
//!
//! On every bar it compares the mean of the last `fast_period` closes with the mean of the
//! last `slow_period` closes of the instrument and, when the fast average moves more than
//! `signal_threshold` (relative to the slow one) above or below it, asks the host for the order
//! that takes its position to `order_qty` long or short. The host feeds the fills back, so the
//! state is a function of the config and the inputs alone. The message protocol and the state
//! schemas are described in `examples/plugins/README.md`.
//!
//! State schema 2: 1.x's `fast_ma_period`/`slow_ma_period` renamed to
//! `fast_period`/`slow_period`, plus `signal_threshold`. Migrates up from 1.x and down to 1.x;
//! works with `risk_model >=1.0, <3`.

mod strategy;
pub use strategy::*;

plugsync_plugin::export_plugin!(MaCross {
    id: "ma_cross",
    kind: "strategy",
    state_schema: 2,
    framework: ">=0.1, <1",
    dependencies: { "risk_model": ">=1.0, <3" },
    migrates_from: [">=1.0.0, <2.0.0"],
    downgrades_to: [">=1.0.0, <2.0.0"],
});
