//! What a plugin author implements: the [`Plugin`] trait, in safe Rust.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::abi::LogLevel;
use crate::export::HostRef;

/// Host time given to every call: nanoseconds since the Unix epoch.
///
/// The host chooses it and records it with the call, so that replaying the recorded calls
/// reproduces the state exactly. Plugins must use it instead of reading a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct HostTime(pub i64);

impl HostTime {
    /// Nanoseconds since the Unix epoch.
    pub fn as_nanos(self) -> i64 {
        self.0
    }
}

/// An error a plugin reports to its host. The message should say what went wrong and, where
/// it can, what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginError {
    message: String,
}

impl PluginError {
    /// An error with the given message.
    pub fn new(message: impl Into<String>) -> PluginError {
        PluginError {
            message: message.into(),
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for PluginError {}

impl From<serde_json::Error> for PluginError {
    fn from(error: serde_json::Error) -> PluginError {
        PluginError::new(format!("invalid JSON: {error}"))
    }
}

/// The document a migration transforms: the plugin's config and its state, both JSON, so that
/// one function (or one declarative rule set) carries both across a version change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MigrationDoc {
    /// The instance's config.
    pub config: serde_json::Value,
    /// The instance's state, as its snapshot produced it.
    pub state: serde_json::Value,
}

/// Which way a migration goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// From an older version to this one (`migrates_from`).
    Up,
    /// From this version to an older one (`downgrades_to`).
    Down,
}

/// A request to migrate a document between two versions of the plugin.
#[derive(Debug, Clone, PartialEq)]
pub struct Migration {
    /// Version the document comes from.
    pub from: String,
    /// Version the document is for.
    pub to: String,
    /// Up (run by the newer version on an older document) or down (run by the newer version to
    /// produce an older document).
    pub direction: Direction,
    /// The document.
    pub doc: MigrationDoc,
}

/// The host's services, handed to a plugin at creation. Cheap to clone; a plugin may keep it.
///
/// A plugin has its own copy of std and its own globals, so it logs through this handle
/// rather than through a global `tracing` dispatcher (which would be the plugin's own, not
/// the host's).
#[derive(Clone)]
pub struct HostContext {
    /// `None` when detached. Only the SDK's entry points make a `HostRef`, from the host's
    /// `HostApi`; that is where the `unsafe` (and its contract) lives.
    pub(crate) api: Option<HostRef>,
}

impl fmt::Debug for HostContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostContext").finish_non_exhaustive()
    }
}

impl HostContext {
    /// A context with no host: logging is dropped; for tests and benchmarks.
    pub fn detached() -> HostContext {
        HostContext { api: None }
    }

    /// Writes one record through the host's logger.
    pub fn log(&self, level: LogLevel, message: &str) {
        if let Some(api) = self.api {
            api.log(level, message);
        }
    }

    /// Logs at `info`.
    pub fn info(&self, message: &str) {
        self.log(LogLevel::Info, message);
    }

    /// Logs at `warn`.
    pub fn warn(&self, message: &str) {
        self.log(LogLevel::Warn, message);
    }
}

/// A plugin: a stateful instance that the host feeds inputs, one call at a time.
///
/// Implement it in safe Rust and export it with [`export_plugin!`](crate::export_plugin). The
/// SDK turns every method into an `extern "C"` entry point that catches panics.
///
/// Effects go through the host: a plugin returns intents (orders) in its output, and the host
/// feeds the outcomes (fills) back as calls. The state is then a function of the inputs and the
/// host times, which is what makes rollback by replay lossless.
pub trait Plugin: Sized + Send + 'static {
    /// The config the instance is created with (deserialised from JSON).
    type Config: DeserializeOwned;
    /// The instance's state, snapshotted and restored as JSON. `Clone` lets the host copy it
    /// in the short window it holds the instance and serialise the copy after.
    type State: Serialize + DeserializeOwned + Clone + Send;

    /// Creates an instance with a fresh state.
    fn create(config: Self::Config, host: &HostContext) -> Result<Self, PluginError>;

    /// Handles one input at host time `now`, writing the output into `output` (cleared by the
    /// SDK before each call and reused, so a steady-state call allocates nothing).
    fn call(
        &mut self,
        input: &[u8],
        now: HostTime,
        output: &mut Vec<u8>,
    ) -> Result<(), PluginError>;

    /// The state to snapshot.
    fn state(&self) -> &Self::State;

    /// Replaces the state with a snapshot (of this version's schema).
    fn restore(&mut self, state: Self::State) -> Result<(), PluginError>;

    /// Migrates a document between versions. The default refuses: a plugin that declares
    /// `migrates_from` or `downgrades_to` overrides it.
    fn migrate(migration: Migration) -> Result<MigrationDoc, PluginError> {
        Err(PluginError::new(format!(
            "this plugin has no migration from `{}` to `{}`",
            migration.from, migration.to
        )))
    }

    /// Reports whether the instance is fit to serve; the error says why not.
    fn health(&self) -> Result<(), PluginError> {
        Ok(())
    }

    /// Whether swapping this instance now is safe for what it trades: a strategy says
    /// [`SwapSafety::NotSafe`] while it holds a position or has working orders, so that a
    /// `when-flat` update never carries open risk across a version change. Asked by the host
    /// under the slot lock, between two calls, right before such a switch (and by `status`);
    /// keep it quick. The default is always safe.
    fn swap_safe(&self) -> SwapSafety {
        SwapSafety::Safe
    }
}

/// A plugin's answer to "may it be swapped now?" ([`Plugin::swap_safe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SwapSafety {
    /// Nothing open: a swap carries no risk across.
    Safe,
    /// Not now, and why, for the operator (`holds a position in ES (+2)`).
    NotSafe(String),
}
