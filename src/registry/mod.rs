//! Registries of published plugins: a directory, or the same layout over HTTP(S).
//!
//! The index format is [`IndexFile`]; publishing, promoting and yanking change a directory
//! registry under its lock file so that concurrent publishers lose nothing
//! ([`DirectoryRegistry`]); publishers sign with keys from [`keygen`].

mod directory;
mod error;
mod index;
mod signing;

pub use directory::{DirectoryRegistry, Published};
pub use error::{DigestMismatch, RegistryError};
pub use index::{IndexEntry, IndexFile};
pub use signing::{KeyPair, keygen, read_signing_key};

/// The JSON Schema of a registry's index files (`index/<id>.json`).
pub fn index_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(IndexFile)).unwrap_or_default()
}
