//! Observe: what the host runs, asked from its control API or read from a saved
//! `plugsync status --output json` — and where that differs from what was last applied on
//! purpose (**drift**).
//!
//! The sources give the same [`Observation`], so a plan made in CI from a saved status
//! (`--observed FILE`) is the plan made against the host itself (`--host URL`):
//!
//! - `from_host` (the CLI's control-API client): `GET /v1/status` (`?with_state=true` when
//!   the plan previews migrations);
//! - [`from_file`]: the JSON `plugsync status --output json [--with-state]` printed, which is
//!   the host's answer unchanged;
//! - [`from_runtime`]: a runtime in this process (the demo, a host embedding the reconciler):
//!   the same document, built by `RunningState::of`.
//!
//! [`drift`] is pure: it reads the observation's applied records (the host keeps one per
//! plugin, with who asked and when) and nothing else.

mod drift;

use std::path::{Path, PathBuf};

use plugsync_host::control::api::RunningState;

use crate::client::ControlClient;
use crate::error::{Error, Result};

pub use drift::{Drift, DriftKind, RECONCILER_TOOLS, drift};

/// Where an observation came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The host's control API, at this URL.
    Host {
        /// The URL, as shown to people.
        url: String,
    },
    /// A saved `plugsync status --output json`.
    File {
        /// The file.
        path: PathBuf,
    },
    /// A runtime in this process (the reconciler embedded in a host, the demo).
    InProcess,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Host { url } => f.write_str(url),
            Source::File { path } => write!(f, "{}", path.display()),
            Source::InProcess => f.write_str("this process"),
        }
    }
}

/// What a host runs, and where that was learnt.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Where it came from.
    pub source: Source,
    /// The host's running state (with each plugin's state when it was asked for).
    pub running: RunningState,
}

impl Observation {
    /// Whether the plugins' states are in it (asked `with_state`).
    pub fn has_states(&self) -> bool {
        self.running.states.is_some()
    }
}

/// Asks the host behind `client` what it runs, with every plugin's state when `with_state`.
pub(crate) fn from_host(client: &ControlClient, with_state: bool) -> Result<Observation> {
    let query: &[(&str, &str)] = if with_state {
        &[("with_state", "true")]
    } else {
        &[]
    };
    let running: RunningState = client.get_json("v1/status", query)?;
    Ok(Observation {
        source: Source::Host {
            url: client.url().to_owned(),
        },
        running,
    })
}

/// Asks a runtime in this process what it runs (the same document a host's `GET /v1/status`
/// answers).
pub fn from_runtime(runtime: &plugsync_host::Runtime, with_state: bool) -> Result<Observation> {
    Ok(Observation {
        source: Source::InProcess,
        running: RunningState::of(runtime, with_state, false)?,
    })
}

/// Reads a saved `plugsync status --output json` (the host's answer, unchanged).
pub fn from_file(path: &Path) -> Result<Observation> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    let running: RunningState =
        serde_json::from_str(&text).map_err(|error| Error::BadObserved {
            path: path.to_owned(),
            line: error.line(),
            column: error.column(),
            reason: without_place(&error),
        })?;
    Ok(Observation {
        source: Source::File {
            path: path.to_owned(),
        },
        running,
    })
}

/// A `serde_json` error's message without the "at line L column C" it appends (the caller
/// names the place its own way).
fn without_place(error: &serde_json::Error) -> String {
    let text = error.to_string();
    match text.rsplit_once(" at line ") {
        Some((message, _)) => message.to_owned(),
        None => text,
    }
}
