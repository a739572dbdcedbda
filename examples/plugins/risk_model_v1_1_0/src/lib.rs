//! `risk_model` 1.1.0: per-instrument position limits, as a plugsync plugin.
//!
//! A compatible minor of 1.0.0: the same config, state schema and decisions; a rejection's
//! reason also says by how much the limit would be exceeded. The message protocol and the
//! state schema are described in `examples/plugins/README.md`.
//!
//! State schema 1; no dependencies. Migrates up from 1.0.x and down to 1.0.x (both identity).

mod risk;
pub use risk::*;

plugsync_plugin::export_plugin!(RiskModel {
    id: "risk_model",
    kind: "risk",
    state_schema: 1,
    framework: ">=0.1, <1",
    dependencies: {},
    migrates_from: [">=1.0.0, <1.1.0"],
    downgrades_to: [">=1.0.0, <1.1.0"],
});
