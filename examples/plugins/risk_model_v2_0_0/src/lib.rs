//! `risk_model` 2.0.0: per-instrument position and notional limits, as a plugsync plugin.
//!
//! As 1.x, and an order that carries a `limit_price` (as `ma_cross` 2.1.0's do) is also
//! rejected when the position it would lead to, valued at that price, exceeds `max_notional`
//! either way. The state records each instrument's notional at its last fill. The message
//! protocol and the state schemas are described in `examples/plugins/README.md`.
//!
//! State schema 2: the limits grouped under `limits`, plus `max_notional` and each
//! instrument's `notional`. No dependencies. Migrates up from 1.x and down to 1.x.

mod risk;
pub use risk::*;

plugsync_plugin::export_plugin!(RiskModel {
    id: "risk_model",
    kind: "risk",
    state_schema: 2,
    framework: ">=0.1, <1",
    dependencies: {},
    migrates_from: [">=1.0.0, <2.0.0"],
    downgrades_to: [">=1.0.0, <2.0.0"],
});
