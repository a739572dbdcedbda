//! `plugsync run`: the sidecar ([`crate::watch::Sidecar`]) against a host's control API, until
//! SIGTERM or SIGINT — which end it at the apply's next safe point, exit 0 (a second signal
//! exits at once: the journal is safe at any instant).

use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use plugsync_host::control::Listen;

use crate::apply::HttpHost;
use crate::error::{Error, Result};
use crate::watch::metrics::{self, Metrics, MetricsObserver, MetricsOptions};
use crate::watch::{
    AlertCounters, AlertObserver, AlertOptions, Sidecar, SidecarHandle, SidecarLock,
    SidecarOptions, StatusFile,
};

use super::host::{HostOptions, StopSignal};

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
    /// The webhooks told of steps, failures, drift and an invalid plugins.yaml (none: no
    /// alerts).
    pub alerts: AlertOptions,
    /// Where `/metrics`, `/healthz` and `/readyz` are served (`None`: not served).
    pub metrics: Option<MetricsOptions>,
}

/// Runs the sidecar until a stop signal (see the module docs).
pub fn run(options: &RunOptions) -> Result<()> {
    let port = HttpHost::new(
        &options.host,
        options.token_file.as_deref(),
        options.tls_ca.as_deref(),
    )?;
    // One sidecar per state directory, before anything else (a second is told whose it is).
    let state_dir = options.sidecar.reconcile.state_dir.clone();
    let _only = SidecarLock::take(&state_dir)?;
    // Alerts' fate is counted for metrics whether or not either is on.
    let alert_counters = Arc::new(AlertCounters::default());
    // Bound before anything else starts, so a bad address refuses the start (and leaves no
    // `sidecar.json` behind); stopped when this returns.
    let metrics = match &options.metrics {
        Some(metrics_options) => {
            let metrics = Metrics::new(Arc::clone(&alert_counters));
            let server = metrics::serve(metrics_options, Arc::clone(&metrics))?;
            tracing::info!("metrics listening on http://{}", server.local_addr());
            Some((metrics, server))
        }
        None => None,
    };
    let mut sidecar = Sidecar::new(options.sidecar.clone(), Box::new(port));
    sidecar.observe(Box::new(StatusFile::new(
        &state_dir,
        &options.host,
        &options.sidecar,
    )));
    let _metrics_server = metrics.map(|(metrics, server)| {
        sidecar.observe(Box::new(MetricsObserver::new(metrics)));
        server
    });
    if !options.alerts.webhooks.is_empty() {
        sidecar.observe(Box::new(AlertObserver::new(
            &options.alerts,
            &options.host,
            &options.sidecar.reconcile.file,
            alert_counters,
        )?));
    }
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

/// The host `plugsync run --embedded` runs in its own process.
#[derive(Debug, Clone)]
pub struct EmbeddedHost {
    /// Where its control API listens (for `plugsync status`, `history`, a second client).
    pub listen: Listen,
    /// Its store.
    pub store: PathBuf,
    /// Run the synthetic desk once its plugins are installed.
    pub feed: bool,
}

/// Runs the reference host with the sidecar in a thread of the same process, over the
/// runtime's in-process control API ([`crate::watch::Sidecar`] over
/// [`crate::apply::InProcessHost`]): plugsync tried with nothing else running. The control
/// API's token is `STATE_DIR/host-token` (made on first use, `0600`). Stops as the host does,
/// on SIGTERM or SIGINT.
pub fn run_embedded(sidecar: crate::watch::SidecarOptions, host: EmbeddedHost) -> Result<()> {
    let _only = SidecarLock::take(&sidecar.reconcile.state_dir)?;
    let token_file = sidecar.reconcile.state_dir.join("host-token");
    ensure_token(&token_file)?;
    tracing::info!(
        token_file = %token_file.display(),
        "plugsync run --embedded: the host's control API takes the token in this file"
    );
    let mut options = HostOptions::new(token_file);
    options.listen = host.listen;
    options.store = host.store;
    options.feed = host.feed;
    options.sidecar = Some(sidecar);
    super::host(&options)
}

/// Makes a token file holding a fresh random token, `0600`, unless it exists.
fn ensure_token(path: &Path) -> Result<()> {
    if path.exists() {
        return Ok(());
    }
    let io = |source| Error::Io {
        action: "write",
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|error| io(std::io::Error::other(error)))?;
    let token: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    file.write_all(format!("{token}\n").as_bytes()).map_err(io)
}
