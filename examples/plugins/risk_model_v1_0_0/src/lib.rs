//! `risk_model` 1.0.0: per-instrument position limits, as a plugsync plugin.
//!
//! The host asks it to check every order a strategy emits before placing it: an order is
//! approved when the instrument's position, counting the orders approved but not filled yet,
//! stays within `max_position` either way, and the quantity is then reserved. The host feeds
//! the fills back, so the exposure it records is the sum of the fills. The message protocol
//! and the state schema are described in `examples/plugins/README.md`.
//!
//! State schema 1; no dependencies, no migrations (it is the first version).

mod risk;
pub use risk::*;

plugsync_plugin::export_plugin!(RiskModel {
    id: "risk_model",
    kind: "risk",
    state_schema: 1,
    framework: ">=0.1, <1",
    dependencies: {},
    migrates_from: [],
    downgrades_to: [],
});
