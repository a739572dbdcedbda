//! `ma_cross` 1.0.0: a moving-average crossover strategy, as a plugsync plugin.
//!
//! On every bar it compares the mean of the last `fast_ma_period` closes with the mean of the
//! last `slow_ma_period` closes of the instrument and, when the fast average crosses the slow
//! one, asks the host for the order that takes its position to `order_qty` long or short. The
//! host feeds the fills back, so the state (price windows, positions) is a function of the
//! config and the inputs alone. The message protocol and the state schema are described in
//! `examples/plugins/README.md`.
//!
//! State schema 1. Needs `risk_model >=1.0, <2`; has no migrations (it is the first version).

mod strategy;
pub use strategy::*;

plugsync_plugin::export_plugin!(MaCross {
    id: "ma_cross",
    kind: "strategy",
    state_schema: 1,
    framework: ">=0.1, <1",
    dependencies: { "risk_model": ">=1.0, <2" },
    migrates_from: [],
    downgrades_to: [],
});
