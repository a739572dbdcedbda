//! `plugsync run`: the sidecar ([`crate::watch::Sidecar`]) against a host's control API, until
//! SIGTERM or SIGINT — which end it at the apply's next safe point, exit 0 (a second signal
//! exits at once: the journal is safe at any instant).

use std::path::PathBuf;
use std::sync::Arc;

use crate::apply::HttpHost;
use crate::error::{Error, Result};
use crate::watch::metrics::{self, Metrics, MetricsObserver, MetricsOptions};
use crate::watch::{
    AlertCounters, AlertObserver, AlertOptions, Sidecar, SidecarHandle, SidecarOptions, StatusFile,
};

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
    let state_dir = options.sidecar.reconcile.state_dir.clone();
    let mut sidecar = Sidecar::new(options.sidecar.clone(), Box::new(port));
    sidecar.observe(Box::new(StatusFile::new(
        &state_dir,
        &options.sidecar.reconcile.file,
        &options.host,
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
