//! `plugsync host`: the reference trading host — a runtime over its own store, the control API
//! for the sidecar, and a synthetic desk trading through the plugins.
//!
//! 1. **bind** the control API (token file and listen address checked before any plugin code
//!    is loaded);
//! 2. **stage** each `--load LIB` (verified into the store with its signature `LIB.sig`, if
//!    any; no code runs), so a restart with the same `--load` and `--allow-unsigned-load`
//!    recovers an unsigned development library too;
//! 3. **recover** the committed set from the store, with each plugin's checkpointed state (with
//!    trusted keys, each artifact's signature is checked before it loads);
//! 4. **load** each staged library whose plugin is not already running: installed with config
//!    `{}`, its state checkpointed;
//! 5. **trade** (`--feed on`, with `ma_cross` and `risk_model` loaded): feed threads push bars
//!    through strategy → risk → simulated exchange, fills back to both plugins and the ledger;
//!    or (`--feed FILE`) one thread replays a file of calls (see [`feed`]), read and checked
//!    before the host starts;
//! 6. **serve** the control API until SIGTERM or SIGINT;
//! 7. **stop**: the server drains, the feed threads are joined, a step still pending is rolled
//!    back (a restart comes back on the committed set) and the states are checkpointed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use plugsync_host::control::{ControlConfig, ControlServer, Listen, TlsFiles};
use plugsync_host::{
    CheckpointOutcome, Recovery, Runtime, RuntimeOptions, SlotHandle, StoredArtifact, TrustedKeys,
};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

use crate::error::{Error, Result};
use crate::market::{Desk, DeskStats, Ledger, PriceFeed};

mod feed;

pub use feed::FeedFile;

/// The plugins the desk trades through: a strategy and a risk model.
const STRATEGY: &str = "ma_cross";
const RISK: &str = "risk_model";

const INSTRUMENTS: [&str; 12] = [
    "ES", "NQ", "YM", "RTY", "CL", "NG", "GC", "SI", "ZN", "ZB", "6E", "6J",
];

/// How often a feed thread reports failed calls (it counts them in between).
const FAILURE_REPORT_EVERY: Duration = Duration::from_secs(10);

/// How `plugsync host` runs.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Where the control API listens: a TCP address (port 0: any free port, shown in the ready
    /// line) or a unix socket (created `0600`, removed when the host stops).
    pub listen: Listen,
    /// The file holding the control API's bearer token, or its clients' (`name token` per
    /// line), mode 0600: [`ControlConfig::token_file`].
    pub token_file: PathBuf,
    /// Accept a non-loopback `listen` address (which also needs `tls`).
    pub allow_remote: bool,
    /// Serve the control API over HTTPS with this certificate and key.
    pub tls: Option<TlsFiles>,
    /// The host's store: artifacts, committed set, checkpoints, step outcomes.
    pub store: PathBuf,
    /// Keys one of which must have signed every artifact, checked when it is staged through the
    /// control API and before every load.
    pub trusted_keys: Option<PathBuf>,
    /// Plugin libraries to load at start (skipped when their plugin runs from the store), each
    /// with its signature in `LIB.sig` beside it if the host has trusted keys.
    pub load: Vec<PathBuf>,
    /// Development: let the `load` libraries that have no `LIB.sig` load unsigned although the
    /// host has trusted keys.
    pub allow_unsigned_load: bool,
    /// Run the synthetic desk (unless `feed_file` is given).
    pub feed: bool,
    /// Replay this file of calls instead of running the synthetic desk.
    pub feed_file: Option<FeedFile>,
    /// How often each plugin loaded here has its state checkpointed; `None`: never.
    pub checkpoint_every: Option<Duration>,
    /// Feed threads of the desk.
    pub feed_threads: usize,
    /// Instruments each feed thread trades.
    pub instruments_per_thread: usize,
    /// Pause between a feed thread's rounds of bars.
    pub feed_pace: Duration,
    /// Plugins to start with a fresh state if their checkpoint cannot be restored (otherwise
    /// such a plugin is not started).
    pub fresh_state: Vec<String>,
    /// Plugins loaded here that refuse calls while faulted by a panic (risk plugins).
    pub fail_closed: Vec<String>,
    /// Serve `POST /v1/plugins/{plugin}/call` (a plugin author feeding a plugin by hand).
    pub allow_calls: bool,
    /// Run the sidecar in a thread of this process, over the runtime's in-process control API
    /// (`plugsync run --embedded`): it stops with the host.
    pub sidecar: Option<crate::watch::SidecarOptions>,
}

impl HostOptions {
    /// Defaults, with the token file: loopback port 7077, store `./plugsync-host-store`, the
    /// feed on (2 threads × 3 instruments, a round of bars every millisecond), checkpoints
    /// every second.
    pub fn new(token_file: impl Into<PathBuf>) -> HostOptions {
        HostOptions {
            listen: Listen::Tcp(plugsync_host::control::DEFAULT_LISTEN),
            token_file: token_file.into(),
            allow_remote: false,
            tls: None,
            store: PathBuf::from("plugsync-host-store"),
            trusted_keys: None,
            load: Vec::new(),
            allow_unsigned_load: false,
            feed: true,
            feed_file: None,
            checkpoint_every: Some(Duration::from_secs(1)),
            feed_threads: 2,
            instruments_per_thread: 3,
            feed_pace: Duration::from_millis(1),
            fresh_state: Vec::new(),
            fail_closed: Vec::new(),
            allow_calls: false,
            sidecar: None,
        }
    }
}

/// Runs the reference host until SIGTERM or SIGINT. Prints `plugsync host listening on URL`
/// on stdout once the control API accepts connections, with the URL a client is given:
/// `http://ADDR`, `https://ADDR` or `unix:PATH`.
pub fn host(options: &HostOptions) -> Result<()> {
    // A bad feed file refuses the start before anything runs.
    let script = options
        .feed_file
        .as_ref()
        .map(feed::Script::read)
        .transpose()?;
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("plugsync-control")
        .enable_all()
        .build()
        .map_err(|source| Error::Setup {
            action: "start the async runtime",
            source,
        })?;
    // From here on SIGTERM and SIGINT are ours: they stop the host cleanly.
    let stop_signal = {
        let _entered = io.enter();
        StopSignal::install()?
    };

    let mut runtime_options = RuntimeOptions::new(&options.store);
    // The runtime holds the keys: they guard every load, and the control API's staging.
    runtime_options.load_policy.trusted_keys = match &options.trusted_keys {
        Some(path) => TrustedKeys::load(path)?,
        None => TrustedKeys::none(),
    };
    let runtime = Runtime::new(runtime_options)?;
    let mut config = ControlConfig::new(options.token_file.clone());
    config.listen = options.listen.clone();
    config.allow_remote = options.allow_remote;
    config.tls = options.tls.clone();
    config.allow_calls = options.allow_calls;
    let server = io.block_on(ControlServer::bind(runtime.clone(), config))?;
    let url = server.url().to_owned();

    let staged = stage(&runtime, options)?;
    let recovery = runtime.recover_with(&plugsync_host::RecoverOptions {
        fresh_state: options.fresh_state.iter().cloned().collect(),
    })?;
    log_recovery(&recovery, &options.store);
    load(&runtime, &recovery, staged, options)?;
    let replay = match script {
        Some(script) => Some(script.prepare(&runtime)?),
        None => None,
    };
    // The desk trades once its plugins run: at once when they are loaded here, else (with
    // the sidecar in this process, which installs them) as soon as they are.
    let trading = if replay.is_some() {
        Trading::Off
    } else if options.feed {
        match desk_handles(&runtime) {
            Ok(handles) => Trading::Now(handles),
            Err(missing) if options.sidecar.is_some() => {
                tracing::info!("the feed starts once the sidecar has installed {missing}");
                Trading::Later
            }
            Err(missing) => {
                tracing::warn!(
                    "the feed is off: the desk trades through {STRATEGY} and {RISK}, and \
                     {missing} not loaded (pass `--load` with its library)"
                );
                Trading::Off
            }
        }
    } else {
        tracing::info!("the feed is off (`--feed off`)");
        Trading::Off
    };

    let threads = options.feed_threads.clamp(1, INSTRUMENTS.len());
    let per_thread = options
        .instruments_per_thread
        .clamp(1, INSTRUMENTS.len() / threads);
    let stats: Vec<DeskStats> = (0..threads).map(|_| DeskStats::default()).collect();
    let (ledger, stop) = (Ledger::default(), AtomicBool::new(false));
    let sidecar = match &options.sidecar {
        Some(sidecar) => Some(start_sidecar(&runtime, sidecar)?),
        None => None,
    };
    let served = std::thread::scope(|scope| {
        let mut feeds = Vec::new();
        if let Some(replay) = replay {
            let stop = &stop;
            let feed = std::thread::Builder::new()
                .name("feed-file".to_owned())
                .spawn_scoped(scope, move || replay.run(stop))
                .expect("the feed thread starts");
            feeds.push(feed);
        }
        let (ledger, stats, stop) = (&ledger, &stats, &stop);
        let start_feeds = move |(strategy, risk): (SlotHandle, SlotHandle)| {
            let mut feeds = Vec::new();
            for (t, instruments) in INSTRUMENTS.chunks(per_thread).take(threads).enumerate() {
                let desk = Desk::new(strategy.clone(), risk.clone(), ledger, &stats[t]);
                let pace = options.feed_pace;
                let feed = std::thread::Builder::new()
                    .name(format!("feed-{t}"))
                    .spawn_scoped(scope, move || trade(desk, instruments, t, pace, stop))
                    .expect("a feed thread starts");
                feeds.push(feed);
            }
            tracing::info!(
                threads,
                instruments = threads * per_thread,
                "the feed is on: bars go through {STRATEGY} → {RISK} → the simulated exchange"
            );
            feeds
        };
        match trading {
            Trading::Now(handles) => feeds.extend(start_feeds(handles)),
            Trading::Later => {
                let runtime = &runtime;
                let waiter = std::thread::Builder::new()
                    .name("feed-waiter".to_owned())
                    .spawn_scoped(scope, move || {
                        while !stop.load(Ordering::Relaxed) {
                            if let Ok(handles) = desk_handles(runtime) {
                                for feed in start_feeds(handles) {
                                    if feed.join().is_err() {
                                        tracing::error!("a feed thread panicked");
                                    }
                                }
                                return;
                            }
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    })
                    .expect("the feed waiter starts");
                feeds.push(waiter);
            }
            Trading::Off => {}
        }
        println!("plugsync host listening on {url}");
        tracing::info!(%url, store = %options.store.display(), "ready");
        let served = io.block_on(server.serve(stop_signal.wait()));
        stop.store(true, Ordering::Relaxed);
        if let Some((handle, thread)) = sidecar {
            handle.stop();
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!("the sidecar ended: {error}"),
                Err(_) => tracing::error!("the sidecar thread panicked"),
            }
        }
        for feed in feeds {
            if feed.join().is_err() {
                tracing::error!("a feed thread panicked");
            }
        }
        served
    });
    settle(&runtime);
    served?;
    tracing::info!("stopped");
    Ok(())
}

/// SIGTERM and SIGINT, listened for from the start.
pub(super) struct StopSignal {
    terminate: tokio::signal::unix::Signal,
    interrupt: tokio::signal::unix::Signal,
}

impl StopSignal {
    /// Must run inside the async runtime.
    pub(super) fn install() -> Result<StopSignal> {
        let listen = |kind| {
            signal(kind).map_err(|source| Error::Setup {
                action: "listen for signals",
                source,
            })
        };
        Ok(StopSignal {
            terminate: listen(SignalKind::terminate())?,
            interrupt: listen(SignalKind::interrupt())?,
        })
    }

    /// Resolves at the first SIGTERM or SIGINT; a second one while stopping exits at once.
    pub(super) async fn wait(mut self) {
        let name = tokio::select! {
            _ = self.terminate.recv() => "SIGTERM",
            _ = self.interrupt.recv() => "SIGINT",
        };
        tracing::info!("{name} received: stopping (send it again to exit at once)");
        tokio::spawn(async move {
            tokio::select! {
                _ = self.terminate.recv() => {}
                _ = self.interrupt.recv() => {}
            }
            tracing::warn!("second stop signal: exiting without stopping cleanly");
            std::process::exit(1);
        });
    }
}

fn log_recovery(recovery: &Recovery, store: &Path) {
    if recovery.plugins.is_empty() {
        tracing::info!(
            store = %store.display(),
            "nothing to recover: the store has no committed plugin"
        );
    }
    for plugin in &recovery.plugins {
        let (id, version, digest) = (
            &plugin.plugin,
            &plugin.version.version,
            plugin.version.digest,
        );
        match &plugin.checkpoint {
            CheckpointOutcome::Restored { checkpoint } => tracing::info!(
                "recovered {id} {version} (sha256 {digest}) from the store with its checkpointed \
                 state (as of call #{})",
                checkpoint.seq
            ),
            CheckpointOutcome::Missing => tracing::info!(
                "recovered {id} {version} (sha256 {digest}) from the store with a fresh state \
                 (it had no checkpoint)"
            ),
            CheckpointOutcome::Migrated { checkpoint, from } => tracing::warn!(
                "recovered {id} {version} (sha256 {digest}) from the store with the checkpoint \
                 of {from} (as of call #{}), migrated forward: the commit's own checkpoint was \
                 not written",
                checkpoint.seq
            ),
            CheckpointOutcome::NotStarted { reason } => {
                tracing::error!("{id} {version} (sha256 {digest}) was not started: {reason}")
            }
            CheckpointOutcome::Fresh { reason } => tracing::warn!(
                "recovered {id} {version} (sha256 {digest}) with a fresh state, as asked by \
                 `--fresh-state {id}`: {reason}"
            ),
        }
    }
}

/// The `--load` libraries, staged, by plugin id.
type Staged<'a> = BTreeMap<String, (&'a Path, StoredArtifact)>;

/// Stages each `--load` library (its digest, metadata and signature checked, no code run)
/// before anything is recovered or installed: a bad `--load` refuses the start with nothing
/// installed. An unsigned one is refused here too when the host trusts keys, unless
/// `--allow-unsigned-load` lets it load.
fn stage<'a>(runtime: &Runtime, options: &'a HostOptions) -> Result<Staged<'a>> {
    let mut staged: Staged<'a> = BTreeMap::new();
    for path in &options.load {
        let artifact = runtime.stage_file(path)?;
        if let Some((first, _)) = staged.get(&artifact.metadata.id) {
            return Err(Error::LoadedTwice {
                plugin: artifact.metadata.id.clone(),
                first: first.to_path_buf(),
                second: path.clone(),
            });
        }
        if options.allow_unsigned_load && artifact.signature.is_none() {
            runtime.allow_unsigned(&artifact.digest);
        }
        runtime.check_signature(&artifact)?;
        staged.insert(artifact.metadata.id.clone(), (path, artifact));
    }
    Ok(staged)
}

/// Loads each staged `--load` library whose plugin is not running already.
fn load(
    runtime: &Runtime,
    recovery: &Recovery,
    staged: Staged<'_>,
    options: &HostOptions,
) -> Result<()> {
    for (id, (path, artifact)) in staged {
        let version = &artifact.metadata.version;
        if let Some(running) = recovery.plugins.iter().find(|p| p.plugin == id) {
            tracing::info!(
                "{id} {} runs from the store: `--load {}` ({id} {version}) skipped; change a \
                 running plugin through the control API",
                running.version.version,
                path.display()
            );
            continue;
        }
        runtime.load(&artifact.digest, json!({}))?;
        runtime.set_checkpointing(&id, options.checkpoint_every)?;
        if options.fail_closed.contains(&id) {
            runtime.set_fail_closed(&id, true)?;
        }
        tracing::info!(
            "loaded {id} {version} (sha256 {}) from `{}`",
            artifact.digest,
            path.display()
        );
    }
    Ok(())
}

/// The strategy and risk slots, if both are loaded; else logs why the feed is off.
fn desk_handles(runtime: &Runtime) -> std::result::Result<(SlotHandle, SlotHandle), String> {
    let running: Vec<String> = runtime
        .status()
        .plugins
        .into_iter()
        .map(|p| p.plugin)
        .collect();
    let missing: Vec<&str> = [STRATEGY, RISK]
        .into_iter()
        .filter(|id| !running.iter().any(|r| r == id))
        .collect();
    let handles = (runtime.handle(STRATEGY).ok()).zip(runtime.handle(RISK).ok());
    match (missing.as_slice(), handles) {
        ([], Some(handles)) => Ok(handles),
        ([one], _) => Err(format!("{one} is")),
        _ => Err("neither is".to_owned()),
    }
}

/// When the desk trades.
enum Trading {
    /// From the start: its plugins are loaded.
    Now((SlotHandle, SlotHandle)),
    /// Once the sidecar in this process has installed them.
    Later,
    /// Never (`--feed off`, a feed file, or its plugins not loaded and nothing to load them).
    Off,
}

/// Starts `plugsync run --embedded`'s sidecar in a thread of this process, over the runtime's
/// in-process control API (client `plugsync-run`); its handle stops it.
fn start_sidecar(
    runtime: &Runtime,
    options: &crate::watch::SidecarOptions,
) -> Result<(
    crate::watch::SidecarHandle,
    std::thread::JoinHandle<Result<()>>,
)> {
    use crate::watch::{Sidecar, StatusFile};
    // The runtime checks signatures against its own trusted keys before every load.
    let port =
        crate::apply::InProcessHost::new(runtime.clone(), "plugsync-run", TrustedKeys::none())?;
    let mut sidecar = Sidecar::new(options.clone(), Box::new(port));
    sidecar.observe(Box::new(StatusFile::new(
        &options.reconcile.state_dir,
        crate::apply::InProcessHost::PLACE,
        options,
    )));
    let handle = sidecar.handle();
    let thread = std::thread::Builder::new()
        .name("plugsync-sidecar".to_owned())
        .spawn(move || {
            let ran = sidecar.run();
            // Said at once: the host serves on without it until stopped.
            if let Err(error) = &ran {
                tracing::error!("the sidecar stopped, the host serves on without it: {error}");
            }
            ran
        })
        .map_err(|source| Error::Setup {
            action: "start the sidecar thread",
            source,
        })?;
    Ok((handle, thread))
}

/// One feed thread: rounds of bars for its instruments until told to stop.
fn trade(
    mut desk: Desk<'_>,
    instruments: &[&str],
    thread: usize,
    pace: Duration,
    stop: &AtomicBool,
) {
    let mut prices: Vec<(&str, PriceFeed)> = instruments
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let seed = (thread * 31 + i) as u64 + 1;
            (*name, PriceFeed::new(seed, 100.0 + 37.0 * i as f64))
        })
        .collect();
    // A long-running host keeps no list of failures: it counts them and reports the first at
    // once, then at most one line per interval.
    let (mut failed, mut reported) = (0u64, None::<Instant>);
    while !stop.load(Ordering::Relaxed) {
        for (name, feed) in &mut prices {
            desk.on_bar(name, feed.next_close());
        }
        if let Some(last) = desk.failures.last() {
            failed += desk.failures.len() as u64;
            if reported.is_none_or(|at| at.elapsed() >= FAILURE_REPORT_EVERY) {
                tracing::warn!(
                    thread,
                    failed,
                    "feed calls failed; the last: {}",
                    last.error
                );
                reported = Some(Instant::now());
                failed = 0;
            }
            desk.failures.clear();
        }
        std::thread::sleep(pace);
    }
}

/// After the last call: a step still pending is rolled back (a restart would come back on the
/// committed version anyway; the rollback replays its calls into it), then every plugin that
/// checkpoints writes its final state.
fn settle(runtime: &Runtime) {
    for plugin in runtime.status().plugins {
        if plugin.pending.is_none() {
            continue;
        }
        match runtime.rollback(&plugin.plugin) {
            Ok(report) => tracing::warn!(
                plugin = %plugin.plugin,
                "stopping with a step not committed: rolled back from {} to {}",
                report.from,
                report.serving()
            ),
            Err(error) => {
                tracing::error!(plugin = %plugin.plugin, "cannot roll the pending step back: {error}")
            }
        }
    }
    for plugin in runtime.committed().plugins {
        if plugin.checkpoint_every_ms.is_none() {
            continue;
        }
        if let Err(error) = runtime.checkpoint_now(&plugin.plugin) {
            tracing::error!(plugin = %plugin.plugin, "cannot write the final checkpoint: {error}");
        }
    }
}
