//! Registries of published plugins: a directory, or the same layout over HTTP(S).
//!
//! The index format is [`IndexFile`]; publishing, promoting and yanking change a directory
//! registry under its lock file so that concurrent publishers lose nothing.

mod index;

pub use index::{IndexEntry, IndexFile};

/// The JSON Schema of a registry's index files (`index/<id>.json`).
pub fn index_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(IndexFile)).unwrap_or_default()
}
