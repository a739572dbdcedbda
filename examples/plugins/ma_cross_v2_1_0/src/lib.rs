//! `ma_cross` 2.1.0: a moving-average crossover strategy, as a plugsync plugin.
//!
//! As 2.0.0, and every order also carries a `limit_price` (the close of the bar that triggered
//! it), which only `risk_model` 2.x reads for its notional limit; hence the dependency on
//! `risk_model >=2.0, <3`. The message protocol and the state schemas are described in
//! `examples/plugins/README.md`.
//!
//! State schema 3: schema 2 plus each instrument's `last_close`. Migrates up from 2.0.x only
//! and down to 2.0.x.

mod strategy;
pub use strategy::*;

plugsync_plugin::export_plugin!(MaCross {
    id: "ma_cross",
    kind: "strategy",
    state_schema: 3,
    framework: ">=0.1, <1",
    dependencies: { "risk_model": ">=2.0, <3" },
    migrates_from: [">=2.0.0, <2.1.0"],
    downgrades_to: [">=2.0.0, <2.1.0"],
});
