//! Errors of the `plugsync` library and CLI.

use std::path::PathBuf;

/// What went wrong in a `plugsync` command. Messages are lowercase, name things in backticks
/// and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The host runtime refused or failed an operation.
    #[error(transparent)]
    Host(#[from] plugsync_host::HostError),

    /// Plugin libraries the command needs are not built.
    #[error(
        "the example plugins are not built in `{dir}` (missing: {}): run `cargo build --release \
         --workspace` first, or pass `--plugins DIR`",
        .missing.join(", ")
    )]
    PluginsNotBuilt {
        /// Where they were looked for.
        dir: PathBuf,
        /// Library files not found.
        missing: Vec<String>,
    },

    /// Building the plugins failed.
    #[error("`{command}` failed ({status}): fix the build error above, then run the demo again")]
    BuildFailed {
        /// The command run.
        command: String,
        /// Its exit status.
        status: String,
    },

    /// A file or process could not be used.
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// The file or program.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },

    /// A plugin answered something that is not the protocol the host speaks.
    #[error(
        "plugin `{plugin}` answered `{output}`, which is not its documented protocol ({reason}): check `examples/plugins/README.md`"
    )]
    Protocol {
        /// Plugin id.
        plugin: String,
        /// What it answered.
        output: String,
        /// The parse error.
        reason: String,
    },
}

/// Result alias of the `plugsync` library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
