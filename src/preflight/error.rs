//! What can go wrong in a preview, and where in the chain.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

/// Where in a job the child was when it failed, died or ran out of time: known from the
/// progress lines it wrote before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PreviewStage {
    /// Before the versions were known: reading the job, staging the artifacts.
    Setup {
        /// Plugin id.
        plugin: String,
    },
    /// Loading the running version with its config and state.
    Running {
        /// Plugin id.
        plugin: String,
        /// The running version.
        version: String,
    },
    /// A step of the chain.
    Step {
        /// Plugin id.
        plugin: String,
        /// Its place in the chain, from 1.
        number: usize,
        /// How many steps the chain has.
        of: usize,
        /// Version before the step.
        from: String,
        /// Version after it.
        to: String,
    },
}

impl PreviewStage {
    /// The plugin whose chain it is.
    pub fn plugin(&self) -> &str {
        match self {
            PreviewStage::Setup { plugin }
            | PreviewStage::Running { plugin, .. }
            | PreviewStage::Step { plugin, .. } => plugin,
        }
    }
}

impl fmt::Display for PreviewStage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PreviewStage::Setup { plugin } => write!(f, "preparing the preview of `{plugin}`"),
            PreviewStage::Running { plugin, version } => {
                write!(f, "loading the running `{plugin}` {version} with its state")
            }
            PreviewStage::Step {
                plugin,
                number,
                of,
                from,
                to,
            } => write!(
                f,
                "migrating `{plugin}` {from} -> {to} (step {number} of {of})"
            ),
        }
    }
}

/// The last lines the child wrote on stderr, shown under a crash or a timeout.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StderrTail(pub Vec<String>);

impl fmt::Display for StderrTail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return Ok(());
        }
        write!(f, "\nthe preview process's last lines on stderr:")?;
        for line in &self.0 {
            write!(f, "\n  {line}")?;
        }
        Ok(())
    }
}

/// Why a preview gave no result. Nothing of it reached the live host. (The stage is boxed to
/// keep every `Result` small.)
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// A signal killed the child: the plugin's code crashed or aborted, where no
    /// `catch_unwind` reaches.
    #[error(
        "{stage} crashed the preview process: signal {signal} ({}); the live host was not \
         touched: fix the plugin, or plan a path that avoids this step{stderr}",
        signal_name.unwrap_or("unknown")
    )]
    Crashed {
        /// Where it died.
        stage: Box<PreviewStage>,
        /// The signal's number.
        signal: i32,
        /// Its name (`SIGSEGV`), when known.
        signal_name: Option<&'static str>,
        /// The child's last lines on stderr.
        stderr: StderrTail,
    },

    /// The child did not finish in time; it was killed and reaped.
    #[error(
        "{stage} did not finish within {} (the preview process was killed); the live host was \
         not touched: if the migration is only slow, raise it with `--preview-timeout`{stderr}",
        humantime::format_duration(*timeout)
    )]
    TimedOut {
        /// Where it was.
        stage: Box<PreviewStage>,
        /// The bound.
        timeout: Duration,
        /// The child's last lines on stderr.
        stderr: StderrTail,
    },

    /// The runtime in the child reported an error: a `migrate` that failed or panicked, a
    /// refused transition, an artifact that does not verify.
    #[error("{stage} failed in the preview process: {message}")]
    Failed {
        /// Where.
        stage: Box<PreviewStage>,
        /// The runtime's message, with its own fix.
        message: String,
    },

    /// The job cannot be sent (a path that is not UTF-8).
    #[error("the preview job for `{plugin}` cannot be written: {reason}; use UTF-8 paths")]
    BadJob {
        /// Plugin id.
        plugin: String,
        /// Why.
        reason: String,
    },

    /// The child could not be started.
    #[error(
        "cannot start the preview process `{}` for `{plugin}`: {source}; check that plugsync's \
         binary is still there", program.display()
    )]
    Spawn {
        /// Plugin id.
        plugin: String,
        /// The executable.
        program: PathBuf,
        /// The cause.
        source: std::io::Error,
    },

    /// The preview's temporary store or the wait for the child failed.
    #[error("cannot {action} for the preview of `{plugin}`: {source}")]
    Io {
        /// Plugin id.
        plugin: String,
        /// What was being done.
        action: &'static str,
        /// The cause.
        source: std::io::Error,
    },

    /// The child ended without a result it could read (a bug of plugsync's, or a plugin
    /// writing over its stdout).
    #[error(
        "{stage}: the preview process gave no result ({reason}); this is a bug of plugsync's \
         (or the plugin writes to stdout): report it with these lines{stderr}"
    )]
    NoResult {
        /// How far it got.
        stage: Box<PreviewStage>,
        /// What was wrong.
        reason: String,
        /// The child's last lines on stderr.
        stderr: StderrTail,
    },
}

impl PreflightError {
    /// Whether the new version's own code failed (it crashed, panicked, or its migration,
    /// health or probes failed), not the preview's setup, the running version, or time: a
    /// failure that marks the version failed. For an `install`, loading is the new code's.
    pub fn faults_the_new_version(&self, install: bool) -> bool {
        let stage = match self {
            PreflightError::Crashed { stage, .. } | PreflightError::Failed { stage, .. } => stage,
            _ => return false,
        };
        match **stage {
            PreviewStage::Step { .. } => true,
            PreviewStage::Running { .. } => install,
            PreviewStage::Setup { .. } => false,
        }
    }

    /// The plugin whose preview failed.
    pub fn plugin(&self) -> &str {
        match self {
            PreflightError::Crashed { stage, .. }
            | PreflightError::TimedOut { stage, .. }
            | PreflightError::Failed { stage, .. }
            | PreflightError::NoResult { stage, .. } => stage.plugin(),
            PreflightError::BadJob { plugin, .. }
            | PreflightError::Io { plugin, .. }
            | PreflightError::Spawn { plugin, .. } => plugin,
        }
    }
}
