//! Registries of published plugins: a directory, or the same layout over HTTP(S).
//!
//! The index format is [`IndexFile`]; publishing, promoting and yanking change a directory
//! registry under its lock file so that concurrent publishers lose nothing
//! ([`DirectoryRegistry`]); publishers sign with keys from [`keygen`].

mod directory;
mod error;
mod http;
mod index;
mod signing;

pub(crate) use directory::write_atomic;
pub use directory::{DirectoryRegistry, Published};
pub use error::{DigestMismatch, RegistryError};
pub use http::{HttpRegistry, RetryPolicy};
pub use index::{IndexEntry, IndexFile};
pub use signing::{KeyPair, keygen, read_signing_key};

/// The JSON Schema of a registry's index files (`index/<id>.json`).
pub fn index_schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(IndexFile)).unwrap_or_default()
}

use std::path::Path;

/// Where published plugins are read from: a directory or an HTTP(S) registry, alike.
pub trait Registry {
    /// Where it is, for messages and the lock (`https://…`, or the directory as given).
    fn location(&self) -> String;
    /// The index of `plugin`, if it is published there.
    fn index(&self, plugin: &str) -> Result<Option<IndexFile>, RegistryError>;
    /// The bytes of a published artifact, checked against its entry's sha256.
    fn artifact(&self, plugin: &str, entry: &IndexEntry) -> Result<Vec<u8>, RegistryError>;
}

impl Registry for DirectoryRegistry {
    fn location(&self) -> String {
        self.root().display().to_string()
    }

    fn index(&self, plugin: &str) -> Result<Option<IndexFile>, RegistryError> {
        DirectoryRegistry::index(self, plugin)
    }

    fn artifact(&self, plugin: &str, entry: &IndexEntry) -> Result<Vec<u8>, RegistryError> {
        DirectoryRegistry::artifact(self, plugin, entry)
    }
}

impl Registry for HttpRegistry {
    fn location(&self) -> String {
        self.url().to_owned()
    }

    fn index(&self, plugin: &str) -> Result<Option<IndexFile>, RegistryError> {
        HttpRegistry::index(self, plugin)
    }

    fn artifact(&self, plugin: &str, entry: &IndexEntry) -> Result<Vec<u8>, RegistryError> {
        HttpRegistry::artifact(self, plugin, entry)
    }
}

/// The registry `url` names: `http://` or `https://` (verified against the webpki roots, or
/// `ca`), else a directory relative to `relative_to` (the plugins.yaml's directory).
pub fn open(
    url: &str,
    relative_to: &Path,
    ca: Option<&Path>,
) -> Result<Box<dyn Registry>, RegistryError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        return Ok(Box::new(HttpRegistry::new(
            url,
            ca,
            RetryPolicy::default(),
        )?));
    }
    if let Some((scheme, _)) = url.split_once("://") {
        return Err(RegistryError::BadRegistryUrl {
            url: url.to_owned(),
            reason: format!("`{scheme}://` is not served: give a directory or an http(s) URL"),
        });
    }
    Ok(Box::new(DirectoryRegistry::new(relative_to.join(url))))
}
