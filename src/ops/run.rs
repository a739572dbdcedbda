//! `plugsync run`: the sidecar ([`crate::watch::Sidecar`]) against a host's control API, until
//! SIGTERM or SIGINT — which end it at the apply's next safe point, exit 0 (a second signal
//! exits at once: the journal is safe at any instant).

use std::path::PathBuf;

use crate::apply::HttpHost;
use crate::error::{Error, Result};
use crate::watch::{Sidecar, SidecarHandle, SidecarOptions, StatusFile};

use super::host::StopSignal;

/// What `plugsync run` is asked.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The loop's options (plugins.yaml, the state directory, drift, debounce…).
    pub sidecar: SidecarOptions,
    /// The host's control API: its URL.
    pub host: String,
    /// The file holding the bearer token.
    pub token_file: Option<PathBuf>,
    /// The CA an `https://` host's certificate must verify against.
    pub tls_ca: Option<PathBuf>,
}

/// Runs the sidecar until a stop signal (see the module docs).
pub fn run(options: &RunOptions) -> Result<()> {
    let port = HttpHost::new(
        &options.host,
        options.token_file.as_deref(),
        options.tls_ca.as_deref(),
    )?;
    let state_dir = options.sidecar.reconcile.state_dir.clone();
    let mut sidecar = Sidecar::new(options.sidecar.clone(), Box::new(port));
    sidecar.observe(Box::new(StatusFile::new(
        &state_dir,
        &options.sidecar.reconcile.file,
        &options.host,
    )));
    stop_on_signal(sidecar.handle())?;
    tracing::info!(
        file = %options.sidecar.reconcile.file.display(),
        host = %options.host,
        "plugsync run: watching plugins.yaml"
    );
    sidecar.run()
}

/// Stops the sidecar at the first SIGTERM or SIGINT (listened for before this returns, so a
/// signal sent at once is not lost).
fn stop_on_signal(handle: SidecarHandle) -> Result<()> {
    let signals = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|source| Error::Setup {
            action: "start the signal listener",
            source,
        })?;
    let stop_signal = {
        let _entered = signals.enter();
        StopSignal::install()?
    };
    std::thread::Builder::new()
        .name("plugsync-signals".into())
        .spawn(move || {
            signals.block_on(async move {
                stop_signal.wait().await;
                handle.stop();
                // Listens on for a second signal (which exits at once).
                std::future::pending::<()>().await;
            });
        })
        .map_err(|source| Error::Setup {
            action: "start the signal listener",
            source,
        })?;
    Ok(())
}
