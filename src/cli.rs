//! The command line: parse, call one operation, map the result to an exit code.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use plugsync_host::control::{Listen, TlsFiles};

use crate::ops;

/// Hot-update the plugins of a running Rust host from a declarative `plugins.yaml`.
#[derive(Debug, Parser)]
#[command(name = "plugsync", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a live trading desk and hot-update its plugins under load: in this process, or
    /// through a host's control API (`--via-host`, `--host URL`).
    ///
    /// It tells the GitOps story: plugins.yaml committed in a scratch git repository
    /// (risk_model 2.0.0, ma_cross 2.0.0), validated, locked, its plan shown
    /// (`reconcile --dry-run`, state migrations previewed) and reconciled; a faulty ma_cross
    /// 2.0.1 committed, rolled back by replay, marked failed and not retried, then a commit to
    /// 2.1.0; a manual rollback held against the next reconcile, then released; and `history`,
    /// each step with its commit. It exits 0 only if the plan matched, no call failed, no state
    /// was lost, the books matched after every step and every stage's check held.
    Demo(DemoArgs),
    /// Print a built plugin's metadata, read from the file without running it.
    Inspect(InspectArgs),
    /// Run the reference trading host: the plugin runtime, its control API and a synthetic
    /// desk trading through the plugins, until SIGTERM or SIGINT.
    Host(HostArgs),
    /// Show what a running host runs: versions, health, counters, pending steps.
    Status(StatusArgs),
    /// Check a plugins.yaml (and the files it extends): every error, with its place and the
    /// fix; exit 0 when valid, 1 otherwise.
    Validate(ValidateArgs),
    /// Print a JSON Schema, for editors and CI: plugins.yaml's (the default), a registry
    /// index's, plugins.lock's, a plan's or the history's JSON.
    Schema(SchemaArgs),
    /// Publish a built plugin to a registry directory: its metadata read without running it,
    /// hashed, signed with `--sign-key`, added to the index.
    Publish(PublishArgs),
    /// Move a published version to another channel (the same bytes, no rebuild).
    Promote(PromoteArgs),
    /// Withdraw a published version from resolution (a lock that names it still installs it).
    Yank(YankArgs),
    /// Resolve plugins.yaml against its registry, fetch and verify each chosen artifact, and
    /// write `plugins.lock` beside it (never reads the host: the lock is the same wherever it
    /// is made).
    Lock(LockArgs),
    /// Make the host run what plugins.yaml asks, one hot update at a time: each step
    /// preflighted, staged, switched, soaked and committed, or rolled back and the reconcile
    /// stopped. With `--dry-run`, show what it would do — which versions, through which steps,
    /// in which order, what each migration does to the live state — without touching the host.
    #[command(after_help = RECONCILE_EXIT_CODES)]
    Reconcile(ReconcileArgs),
    /// The sidecar: reconcile on start, on every change to plugins.yaml (watched: in-place
    /// edits, rename-on-save, `git pull`, a symlink swap) and on an interval (drift), until
    /// SIGTERM or SIGINT. An invalid plugins.yaml is never applied: its errors are logged and
    /// the last good one stays the one reconciled to.
    Run(RunArgs),
    /// Roll a plugin back by hand, and hold it there: a step still pending on the host is
    /// rolled back by the host (lossless replay); a committed one is a planned downgrade of the
    /// live state, shown first and applied with `--yes`. The next reconcile, by any client,
    /// leaves it there until `release` or a change of its entry in plugins.yaml.
    #[command(after_help = ROLLBACK_EXIT_CODES)]
    Rollback(RollbackArgs),
    /// Drop the rollback points past their retention (`policy.rollbackRetention`, 7 days by
    /// default) from the state directory; every reconcile does it too.
    Gc(GcArgs),
    /// Freeze the host: every client's switch, install and unload refused until `unfreeze`
    /// (the kill switch: it goes even while another client reconciles).
    Freeze(FreezeArgs),
    /// Lift the host's freeze.
    Unfreeze(HostOnlyArgs),
    /// Keep a plugin at the version it runs: every reconcile leaves it there, and says so,
    /// until `release` (or, with `-f`, until its entry in plugins.yaml changes).
    Hold(HoldArgs),
    /// Release a plugin's hold: the next reconcile moves it to what plugins.yaml asks.
    Release(PluginOnHostArgs),
    /// Clear the failed marks of a plugin's versions: the next reconcile may try them again.
    Retry(PluginOnHostArgs),
    /// Show what this client's reconciles changed, newest first: each step's plugin, versions,
    /// outcome (and the check that failed), duration, who asked, the git commit plugins.yaml was
    /// read at (`+dirty` when it differed from it), plan and forced reason. Read from the
    /// journal in the state directory.
    History(HistoryArgs),
    /// Write an ed25519 key pair for `publish --sign-key` (`NAME.key`, `0600`) and hosts'
    /// `--trusted-keys` (`NAME.pub`).
    Keygen(KeygenArgs),
    /// Print the shell completion script for plugsync's commands and flags.
    ///
    /// Install it where the shell looks for it: bash, `/etc/bash_completion.d/plugsync`; zsh,
    /// `_plugsync` in a directory of `$fpath`; fish, `~/.config/fish/completions/plugsync.fish`.
    Completions(CompletionsArgs),
    /// Internal: run one preview job from stdin in this throwaway process (`src/preflight`).
    #[command(name = "preflight-child", hide = true)]
    PreflightChild(PreflightChildArgs),
}

#[derive(Debug, clap::Args)]
struct PreflightChildArgs {
    /// The store to create for the job (the parent removes it).
    #[arg(long, value_name = "DIR")]
    store: PathBuf,
}

/// A channel, on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum ChannelArg {
    Stable,
    Beta,
    Alpha,
    Dev,
}

impl From<ChannelArg> for crate::spec::model::Channel {
    fn from(channel: ChannelArg) -> Self {
        use crate::spec::model::Channel;
        match channel {
            ChannelArg::Stable => Channel::Stable,
            ChannelArg::Beta => Channel::Beta,
            ChannelArg::Alpha => Channel::Alpha,
            ChannelArg::Dev => Channel::Dev,
        }
    }
}

#[derive(Debug, clap::Args)]
struct PublishArgs {
    /// The built plugin library (`.so`).
    library: PathBuf,
    /// The registry directory (created if absent).
    #[arg(long, value_name = "DIR", env = "PLUGSYNC_REGISTRY")]
    registry: PathBuf,
    /// The channel to publish on.
    #[arg(long, value_enum)]
    channel: ChannelArg,
    /// Sign with this private key (from `plugsync keygen`).
    #[arg(long, value_name = "KEY")]
    sign_key: Option<PathBuf>,
    /// Declarative migrations to publish with the version: a JSON list of `{"from", "to",
    /// "rules"}`, as plugins.yaml's `migrations`.
    #[arg(long, value_name = "FILE")]
    migrations: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct PromoteArgs {
    /// Plugin id.
    plugin: String,
    /// The published version.
    version: String,
    /// The channel to move it to.
    #[arg(long, value_enum)]
    channel: ChannelArg,
    /// The registry directory.
    #[arg(long, value_name = "DIR", env = "PLUGSYNC_REGISTRY")]
    registry: PathBuf,
}

#[derive(Debug, clap::Args)]
struct YankArgs {
    /// Plugin id.
    plugin: String,
    /// The published version.
    version: String,
    /// Make it resolvable again.
    #[arg(long)]
    undo: bool,
    /// The registry directory.
    #[arg(long, value_name = "DIR", env = "PLUGSYNC_REGISTRY")]
    registry: PathBuf,
}

#[derive(Debug, clap::Args)]
struct LockArgs {
    /// The plugins.yaml.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        default_value = "plugins.yaml"
    )]
    file: PathBuf,
    /// Let locked versions move: all of them, or only the plugins named.
    #[arg(long, value_name = "PLUGIN", num_args = 0..)]
    update: Option<Vec<String>>,
    /// Fail if the lock would change (for CI).
    #[arg(long, conflicts_with = "update")]
    locked: bool,
    /// Where plugsync keeps its state (the artifact cache is `DIR/cache`).
    #[arg(long, value_name = "DIR", env = "PLUGSYNC_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// The publishers' public keys (one per line, 64 hex digits): artifacts must be signed by
    /// one of them.
    #[arg(long, value_name = "FILE", env = "PLUGSYNC_TRUSTED_KEYS")]
    trusted_keys: Option<PathBuf>,
    /// A CA (PEM) an `https://` registry's certificate must verify against.
    #[arg(long, value_name = "FILE", env = "PLUGSYNC_REGISTRY_CA")]
    registry_ca: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct HistoryArgs {
    /// Only this plugin's steps.
    plugin: Option<String>,
    /// Only steps with a transition at or after this time: RFC 3339 (`2026-12-02T14:00:00Z`)
    /// or how long ago (`2h`, `7d`, `1h30m`; from `PLUGSYNC_NOW` when set).
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// Output format (the JSON is a contract: `plugsync schema history`).
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// Where plugsync keeps its state (the journal is `DIR/journal.redb`).
    #[arg(long, value_name = "DIR", env = "PLUGSYNC_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

/// `plugsync history`: the journal's steps, as text or JSON.
fn history(args: HistoryArgs) -> Result<String, crate::Error> {
    let since = match &args.since {
        Some(text) => Some(ops::parse_since(text, now()?)?),
        None => None,
    };
    let history = ops::history(&ops::HistoryOptions {
        state_dir: args.state_dir.unwrap_or_else(ops::default_state_dir),
        plugin: args.plugin,
        since,
    })?;
    Ok(match args.output {
        Output::Text => history.text(),
        Output::Json => history.json(),
    })
}

/// `reconcile`'s exit codes, in its `--help`.
const RECONCILE_EXIT_CODES: &str = "Exit codes:
  reconcile:            0  applied (or already in sync)
                        1  a step failed and was rolled back or stopped, or an error: the
                           message names the step or the place, and what to do
  reconcile --dry-run:  0  in sync: the host runs what plugins.yaml asks
                        1  error: nothing was planned
                        2  changes pending: the plan has steps (like `terraform plan
                           -detailed-exitcode`)";

#[derive(Debug, clap::Args)]
struct ReconcileArgs {
    /// Only show the plan; change nothing.
    #[arg(long)]
    dry_run: bool,
    /// Apply this saved plan (`--dry-run --out FILE`), only if it is still the plan: its id is
    /// recomputed from plugins.yaml, the lock, the registry and the host.
    #[arg(long, value_name = "FILE", conflicts_with = "dry_run")]
    plan: Option<PathBuf>,
    /// Apply despite a deny window or a freeze (needs `--reason`). Holds and failed marks are
    /// lifted by `release` and `retry`, or by a change of the plugin's entry.
    #[arg(long, requires = "reason", conflicts_with = "dry_run")]
    force: bool,
    /// Why: sent to the host with `--force` or `--break-lease`, and recorded there.
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Fail at once if another client holds the host's reconcile lease, instead of waiting.
    #[arg(long, conflicts_with = "dry_run")]
    no_wait: bool,
    /// Take the host's reconcile lease from the client holding it (a crashed one), first
    /// (needs `--reason`).
    #[arg(long, requires = "reason", conflicts_with = "dry_run")]
    break_lease: bool,
    /// Do not preflight steps in a child process before the host sees them.
    #[arg(long, conflicts_with = "dry_run")]
    no_preflight: bool,
    /// The plugins.yaml.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        default_value = "plugins.yaml"
    )]
    file: PathBuf,
    #[command(flatten)]
    connection: HostConnection,
    /// Plan against a saved `plugsync status --output json` instead of asking the host (CI
    /// with no route to it); migrations are previewed only if it was saved `--with-state`.
    #[arg(long, value_name = "FILE", requires = "dry_run")]
    observed: Option<PathBuf>,
    /// Require a plugins.lock made from this plugins.yaml.
    #[arg(long)]
    locked: bool,
    /// Output format (the JSON is a contract: `plugsync schema plan`).
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// Also save the plan as JSON to this file.
    #[arg(long, value_name = "FILE", requires = "dry_run")]
    out: Option<PathBuf>,
    /// Do not preview state migrations (no artifact fetched, no child process).
    #[arg(long)]
    no_preview: bool,
    /// How long one plugin's migration previews (or one step's preflight) may run before they
    /// are stopped.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    preview_timeout: std::time::Duration,
    /// How many states the ordering search may visit before it gives up.
    #[arg(long, value_name = "N", default_value_t = crate::plan::SearchLimits::default().node_budget)]
    search_budget: usize,
    /// Where plugsync keeps its state (artifacts fetched for previews: `DIR/cache`).
    #[arg(long, value_name = "DIR", env = "PLUGSYNC_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// The publishers' public keys: artifacts previewed must be signed by one of them.
    #[arg(long, value_name = "FILE", env = "PLUGSYNC_TRUSTED_KEYS")]
    trusted_keys: Option<PathBuf>,
    /// A CA (PEM) an `https://` registry's certificate must verify against.
    #[arg(long, value_name = "FILE", env = "PLUGSYNC_REGISTRY_CA")]
    registry_ca: Option<PathBuf>,
}

/// The time plugsync decides by: `PLUGSYNC_NOW` (RFC 3339) when set — for tests and for
/// planning ahead — else the clock.
fn now() -> Result<jiff::Timestamp, crate::Error> {
    match std::env::var("PLUGSYNC_NOW") {
        Ok(value) if !value.is_empty() => {
            value
                .parse::<jiff::Timestamp>()
                .map_err(|error| crate::Error::BadNow {
                    reason: error.to_string(),
                    value,
                })
        }
        _ => Ok(jiff::Timestamp::now()),
    }
}

/// `PLUGSYNC_CRASH_AT`: where a test makes plugsync abort, to prove the journal.
fn crash_point() -> crate::Result<Option<crate::apply::CrashPoint>> {
    match std::env::var("PLUGSYNC_CRASH_AT") {
        Ok(name) if !name.is_empty() => {
            name.parse::<crate::apply::CrashPoint>()
                .map(Some)
                .map_err(|reason| crate::Error::BadCrashPoint {
                    reason,
                    value: name.clone(),
                })
        }
        _ => Ok(None),
    }
}

fn dry_run_options(args: ReconcileArgs) -> Result<ops::DryRunOptions, crate::Error> {
    let observe = match args.observed {
        Some(path) => ops::Observe::File(path),
        None => ops::Observe::Host {
            url: args.connection.host,
            token_file: args.connection.token_file,
            tls_ca: args.connection.tls_ca,
        },
    };
    Ok(ops::DryRunOptions {
        file: args.file,
        observe,
        locked: args.locked,
        state_dir: args.state_dir.unwrap_or_else(ops::default_state_dir),
        trusted_keys: args.trusted_keys,
        registry_ca: args.registry_ca,
        preview: !args.no_preview,
        preview_timeout: args.preview_timeout,
        exe: std::env::current_exe().map_err(|source| crate::Error::Setup {
            action: "find the plugsync executable (it runs migration previews)",
            source,
        })?,
        now: now()?,
        limits: crate::plan::SearchLimits {
            node_budget: args.search_budget,
            ..crate::plan::SearchLimits::default()
        },
    })
}

/// `plugsync reconcile` (no `--dry-run`): applies, a line per step, then the summary.
fn apply(args: ReconcileArgs) -> Result<ExitCode, crate::Error> {
    let crash_at = crash_point()?;
    let options = ops::ReconcileOptions {
        file: args.file,
        locked: args.locked,
        state_dir: args.state_dir.unwrap_or_else(ops::default_state_dir),
        trusted_keys: args.trusted_keys,
        registry_ca: args.registry_ca,
        plan: args.plan,
        force: if args.force {
            args.reason.clone()
        } else {
            None
        },
        no_wait: args.no_wait,
        preflight: !args.no_preflight,
        preflight_timeout: args.preview_timeout,
        exe: std::env::current_exe().map_err(|source| crate::Error::Setup {
            action: "find the plugsync executable (it runs preflights)",
            source,
        })?,
        now: now()?,
        limits: crate::plan::SearchLimits {
            node_budget: args.search_budget,
            ..crate::plan::SearchLimits::default()
        },
        crash_at,
        // Renewed every third of it, and before each change: longer than a preflight may run.
        lease_ttl: (std::time::Duration::from_secs(30).max(args.preview_timeout * 2))
            .min(std::time::Duration::from_secs(3600)),
        stop: crate::apply::Stop::new(),
    };
    let port = args.connection.port()?;
    if args.break_lease {
        let reason = args.reason.clone().unwrap_or_default();
        let broken = crate::apply::HostPort::lease(
            &port,
            &plugsync_host::control::api::LeaseRequest::Break { by: None, reason },
        )?;
        match broken.broken {
            Some(broken) => eprintln!(
                "broke the reconcile lease of `{}` (epoch {})",
                broken
                    .holder
                    .as_ref()
                    .map_or("nobody", |h| h.owner.as_str()),
                broken.holder.as_ref().map_or(0, |h| h.epoch)
            ),
            None => eprintln!("the reconcile lease was not held"),
        }
    }
    let mut progress = PrintProgress {
        json: matches!(args.output, Output::Json),
        live: std::io::stderr().is_terminal(),
        showing: false,
    };
    let report = ops::reconcile(&options, &port, &mut progress)?;
    match args.output {
        Output::Text if report.steps.is_empty() => println!("{}", report.summary()),
        Output::Text => println!("\n{}", report.summary()),
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
    }
    Ok(ExitCode::from(report.exit_code()))
}

/// Prints an apply's progress: each step's lines as it ends, on stdout; notices on stderr; on
/// a terminal, the running step's line kept up to date on stderr.
struct PrintProgress {
    /// The result goes out as JSON at the end: no lines on stdout before it.
    json: bool,
    /// stderr is a terminal: show the running step's line as it goes.
    live: bool,
    /// A live line is on the terminal now.
    showing: bool,
}

impl PrintProgress {
    /// Clears the live line, if one shows.
    fn clear(&mut self) {
        if self.showing {
            eprint!("\r\x1b[2K");
            self.showing = false;
        }
    }
}

impl ops::Progress for PrintProgress {
    fn step(&mut self, report: &crate::apply::StepReport) {
        self.clear();
        if self.json {
            eprintln!("{}", report.text());
        } else {
            println!("{}", report.text());
        }
    }

    fn working(&mut self, report: &crate::apply::StepReport) {
        if self.live {
            self.clear();
            eprint!("{}", report.working());
            self.showing = true;
        }
    }

    fn notice(&mut self, text: &str) {
        self.clear();
        eprintln!("{text}");
    }

    fn plan(&mut self, text: &str) {
        self.clear();
        print!("{text}");
        println!();
    }
}

/// Prints a dry run (and saves it with `--out`); its exit code says whether changes are
/// pending.
fn print_dry_run(
    dry_run: &ops::DryRun,
    output: Output,
    out: Option<&std::path::Path>,
) -> Result<ExitCode, crate::Error> {
    if let Some(path) = out {
        crate::registry::write_atomic(path, dry_run.json().as_bytes(), 0o644)?;
    }
    match output {
        Output::Text => {
            let styled = std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            print!("{}", dry_run.text(styled));
        }
        Output::Json => print!("{}", dry_run.json()),
    }
    Ok(ExitCode::from(dry_run.exit_code()))
}

/// Which host to ask, and as whom.
#[derive(Debug, clap::Args)]
struct HostConnection {
    /// The host's control API: `http://ADDR`, `https://HOST:PORT` or `unix:PATH`.
    #[arg(long, value_name = "URL", env = "PLUGSYNC_HOST", default_value = crate::DEFAULT_HOST)]
    host: String,
    /// File holding this client's bearer token, alone: the host's `--token-file` when it holds
    /// a single token, else a file of one of its clients' tokens.
    #[arg(long, value_name = "FILE", env = "PLUGSYNC_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The CA (PEM) that signed an `https://` host's certificate: the only one trusted.
    #[arg(long, value_name = "FILE", env = "PLUGSYNC_TLS_CA")]
    tls_ca: Option<PathBuf>,
}

/// A restraint change's connection: the host, and whether to wait for its lease.
#[derive(Debug, clap::Args)]
struct RestrainOn {
    #[command(flatten)]
    connection: HostConnection,
    /// Fail at once if another client holds the host's reconcile lease, instead of waiting.
    #[arg(long)]
    no_wait: bool,
}

impl HostConnection {
    fn port(&self) -> crate::Result<crate::apply::HttpHost> {
        crate::apply::HttpHost::new(
            &self.host,
            self.token_file.as_deref(),
            self.tls_ca.as_deref(),
        )
    }
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// The plugins.yaml to follow.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        default_value = "plugins.yaml"
    )]
    file: PathBuf,
    #[command(flatten)]
    connection: HostConnection,
    /// Where plugsync keeps its journal, history, rollback points, artifact cache and
    /// `sidecar.json` (its status).
    #[arg(long, value_name = "DIR", env = "PLUGSYNC_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Drift (the host changed by hand, plugins.yaml not): reconcile it away, or only report
    /// it. Healing never undoes a hold, a freeze or a failed mark.
    #[arg(long, value_enum, default_value = "heal")]
    drift: DriftChoice,
    /// How often the host is compared with plugins.yaml (which is read again too) when
    /// nothing changed.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = loop_duration)]
    drift_interval: std::time::Duration,
    /// How long plugins.yaml's directory must be quiet after a change before it is read.
    #[arg(long, value_name = "DURATION", default_value = "200ms", value_parser = loop_duration)]
    debounce: std::time::Duration,
    /// The longest wait between retries of a failing reconcile (the backoff doubles up to it).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = loop_duration)]
    max_backoff: std::time::Duration,
    /// Apply plugins.yaml (and the files it extends) only exactly as their git commit holds
    /// them: an edit not committed, or a file caught mid-write, is never applied.
    #[arg(long)]
    committed_only: bool,
    /// Require a plugins.lock made from plugins.yaml.
    #[arg(long)]
    locked: bool,
    /// Do not preflight steps in a child process before the host sees them.
    #[arg(long)]
    no_preflight: bool,
    /// How long one step's preflight may run before it is stopped.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    preflight_timeout: std::time::Duration,
    /// The publishers' public keys: artifacts must be signed by one of them.
    #[arg(long, value_name = "FILE", env = "PLUGSYNC_TRUSTED_KEYS")]
    trusted_keys: Option<PathBuf>,
    /// A CA (PEM) an `https://` registry's certificate must verify against.
    #[arg(long, value_name = "FILE", env = "PLUGSYNC_REGISTRY_CA")]
    registry_ca: Option<PathBuf>,
    /// The log's format on stderr (`RUST_LOG` or `PLUGSYNC_LOG` filter it).
    #[arg(long, value_enum, default_value = "human")]
    log_format: LogFormat,
    /// Run the reference host in this process too, the sidecar in a thread beside it: plugsync
    /// tried with nothing else running (its desk trades once plugins.yaml's plugins run).
    #[arg(long, conflicts_with_all = ["host", "token_file", "tls_ca"])]
    embedded: bool,
    /// With `--embedded`: where the host's control API listens (port 0: any free port, shown
    /// when ready); its token is in `STATE_DIR/host-token`.
    #[arg(
        long,
        value_name = "ADDR",
        requires = "embedded",
        default_value = "127.0.0.1:0"
    )]
    listen: Listen,
    /// With `--embedded`: the host's store (default `STATE_DIR/host-store`).
    #[arg(long, value_name = "DIR", requires = "embedded")]
    store: Option<PathBuf>,
    /// With `--embedded`: do not run the synthetic desk.
    #[arg(long, requires = "embedded")]
    no_feed: bool,
    /// A webhook (`http://` or `https://`) to post alerts to, repeatable: a step started,
    /// committed, rolled back, stopped or interrupted; a reconcile failed; drift found;
    /// plugins.yaml invalid. Posted from a queue of their own, retried with backoff: a webhook
    /// down never holds up a reconcile.
    #[arg(long = "alert-webhook", value_name = "URL", value_parser = parse_webhook)]
    alert_webhook: Vec<reqwest::Url>,
    /// The alerts' body: the versioned JSON object (`plugsync schema alert`), or a Slack
    /// incoming-webhook message.
    #[arg(long, value_enum, default_value = "json")]
    alert_format: AlertFormatChoice,
    /// Where to serve `/metrics` (Prometheus), `/healthz` and `/readyz`: `IP:PORT` (port 0:
    /// any free port, logged), or `off`. A loopback address unless `--metrics-allow-remote`.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464", value_parser = parse_metrics_listen)]
    metrics_listen: MetricsListen,
    /// Serve metrics on a non-loopback `--metrics-listen` address (plain HTTP: the series
    /// name the plugins, their versions and their traffic).
    #[arg(long)]
    metrics_allow_remote: bool,
}

/// A duration of the sidecar's loop: more than nothing, at most a day.
fn loop_duration(text: &str) -> Result<std::time::Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|error| error.to_string())?;
    if duration.is_zero() || duration > std::time::Duration::from_secs(86_400) {
        return Err("give a duration above 0 and at most 24h".to_owned());
    }
    Ok(duration)
}

/// `--alert-format`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum AlertFormatChoice {
    /// `{"apiVersion": "plugsync/v1", "kind": "Alert", "event": …}`.
    Json,
    /// `{"text": …}`, for a Slack incoming webhook.
    Slack,
}

/// `--metrics-listen`: an address, or `off`.
#[derive(Debug, Clone, Copy)]
struct MetricsListen(Option<std::net::SocketAddr>);

fn parse_metrics_listen(text: &str) -> Result<MetricsListen, String> {
    if text == "off" {
        return Ok(MetricsListen(None));
    }
    text.parse()
        .map(|addr| MetricsListen(Some(addr)))
        .map_err(|_| format!("`{text}` is not `IP:PORT` (e.g. `127.0.0.1:9464`) or `off`"))
}

fn parse_webhook(text: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(text).map_err(|error| {
        format!("not a URL ({error}): e.g. `https://hooks.example.com/plugsync`")
    })?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!(
            "a webhook is `http://` or `https://`, not `{other}:`"
        )),
    }
}

/// `--drift`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DriftChoice {
    /// Reconcile drift away.
    Heal,
    /// Only report it.
    Report,
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    /// Lines for people.
    Human,
    /// A JSON object per line.
    Json,
}

fn run_options(args: RunArgs) -> crate::Result<ops::RunOptions> {
    let clock = match std::env::var("PLUGSYNC_NOW") {
        Ok(value) if !value.is_empty() => crate::watch::Clock::Fixed(now()?),
        _ => crate::watch::Clock::System,
    };
    let reconcile = ops::ReconcileOptions {
        file: args.file,
        locked: args.locked,
        state_dir: args.state_dir.unwrap_or_else(ops::default_state_dir),
        trusted_keys: args.trusted_keys,
        registry_ca: args.registry_ca,
        plan: None,
        force: None,
        no_wait: false,
        preflight: !args.no_preflight,
        preflight_timeout: args.preflight_timeout,
        exe: std::env::current_exe().map_err(|source| crate::Error::Setup {
            action: "find the plugsync executable (it runs preflights)",
            source,
        })?,
        now: clock.now(),
        limits: crate::plan::SearchLimits::default(),
        crash_at: crash_point()?,
        lease_ttl: (std::time::Duration::from_secs(30).max(args.preflight_timeout * 2))
            .min(std::time::Duration::from_secs(3600)),
        stop: crate::apply::Stop::new(),
    };
    Ok(ops::RunOptions {
        sidecar: crate::watch::SidecarOptions {
            reconcile,
            clock,
            drift: match args.drift {
                DriftChoice::Heal => crate::watch::DriftMode::Heal,
                DriftChoice::Report => crate::watch::DriftMode::Report,
            },
            drift_interval: args.drift_interval,
            debounce: args.debounce,
            max_backoff: args.max_backoff,
            committed_only: args.committed_only,
        },
        host: args.connection.host,
        token_file: args.connection.token_file,
        tls_ca: args.connection.tls_ca,
        alerts: crate::watch::AlertOptions::new(
            args.alert_webhook,
            match args.alert_format {
                AlertFormatChoice::Json => crate::watch::AlertFormat::Json,
                AlertFormatChoice::Slack => crate::watch::AlertFormat::Slack,
            },
        ),
        metrics: (args.metrics_listen.0).map(|listen| crate::watch::metrics::MetricsOptions {
            listen,
            allow_remote: args.metrics_allow_remote,
        }),
    })
}

const ROLLBACK_EXIT_CODES: &str = "Exit codes: 0 rolled back (and held), 2 the downgrade's \
plan shown and not applied (no --yes), 1 a step failed or an error.";

#[derive(Debug, clap::Args)]
struct RollbackArgs {
    /// The plugin.
    plugin: String,
    /// The version to go back to (default: the one it ran before, from this plugsync's
    /// journal).
    #[arg(long, value_name = "VERSION")]
    to: Option<semver::Version>,
    /// A plugin to carry down with it, to a version (`ma_cross@2.0.0`): one whose running
    /// version needs the plugin's current one. Repeatable.
    #[arg(long, value_name = "PLUGIN@VERSION", value_parser = parse_carry)]
    carry: Vec<(String, semver::Version)>,
    /// Why (recorded with the hold on the host).
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// Apply the downgrade of a committed step (without it, its plan is only shown).
    #[arg(long)]
    yes: bool,
    /// Then put back the state of the newest rollback point taken at that version (possibly
    /// days old: its difference from what the downgrade leaves is shown first).
    #[arg(long)]
    restore_snapshot: bool,
    /// The plugins.yaml: its registry, its policy, and the entries the hold is set under.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        default_value = "plugins.yaml"
    )]
    file: PathBuf,
    #[command(flatten)]
    host: RestrainOn,
    /// Do not preflight the downgrade's steps in a child process.
    #[arg(long)]
    no_preflight: bool,
    /// How long the preview or preflight of one step may run.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = humantime::parse_duration)]
    preview_timeout: std::time::Duration,
    /// Where plugsync keeps its journal and cache.
    #[arg(long, value_name = "DIR", env = "PLUGSYNC_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// The publishers' public keys: artifacts must be signed by one of them.
    #[arg(long, value_name = "FILE", env = "PLUGSYNC_TRUSTED_KEYS")]
    trusted_keys: Option<PathBuf>,
}

fn parse_carry(text: &str) -> Result<(String, semver::Version), String> {
    let (plugin, version) = text
        .split_once('@')
        .ok_or_else(|| format!("`{text}` is not PLUGIN@VERSION (`ma_cross@2.0.0`)"))?;
    let version = semver::Version::parse(version)
        .map_err(|error| format!("`{version}` is not a version: {error}"))?;
    Ok((plugin.to_owned(), version))
}

/// `plugsync rollback`: the downgrade's plan, or what was rolled back and held.
fn rollback(args: RollbackArgs) -> crate::Result<ExitCode> {
    let options = ops::RollbackOptions {
        apply: ops::ReconcileOptions {
            file: args.file,
            locked: false,
            state_dir: args.state_dir.unwrap_or_else(ops::default_state_dir),
            trusted_keys: args.trusted_keys,
            registry_ca: None,
            plan: None,
            force: None,
            no_wait: args.host.no_wait,
            preflight: !args.no_preflight,
            preflight_timeout: args.preview_timeout,
            exe: std::env::current_exe().map_err(|source| crate::Error::Setup {
                action: "find the plugsync executable (it runs previews and preflights)",
                source,
            })?,
            now: now()?,
            limits: crate::plan::SearchLimits::default(),
            crash_at: None,
            lease_ttl: (std::time::Duration::from_secs(30).max(args.preview_timeout * 2))
                .min(std::time::Duration::from_secs(3600)),
            stop: crate::apply::Stop::new(),
        },
        plugin: args.plugin,
        to: args.to,
        carry: args.carry,
        reason: args.reason,
        yes: args.yes,
        restore_snapshot: args.restore_snapshot,
        styled: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let port = args.host.connection.port()?;
    let mut progress = PrintProgress {
        json: false,
        live: std::io::stderr().is_terminal(),
        showing: false,
    };
    Ok(match ops::rollback(&options, &port, &mut progress)? {
        ops::RollbackOutcome::Pending(text) => {
            println!("{text}");
            ExitCode::SUCCESS
        }
        ops::RollbackOutcome::Planned(plan) => {
            print!("{plan}");
            println!(
                "\nNot applied: run again with `--yes` to apply it (the plugin is then held)."
            );
            ExitCode::from(2)
        }
        ops::RollbackOutcome::Applied { report, held, .. } => {
            // The plan and the steps' lines went out as they came (`PrintProgress`).
            println!("\n{}", report.summary());
            for line in held {
                println!("{line}");
            }
            ExitCode::from(report.exit_code())
        }
    })
}

#[derive(Debug, clap::Args)]
struct GcArgs {
    /// Where plugsync keeps its journal and rollback points.
    #[arg(long, value_name = "DIR", env = "PLUGSYNC_STATE_DIR")]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct FreezeArgs {
    /// Why (shown to every client and operator).
    #[arg(long, value_name = "TEXT")]
    reason: String,
    #[command(flatten)]
    host: RestrainOn,
}

#[derive(Debug, clap::Args)]
struct HostOnlyArgs {
    #[command(flatten)]
    host: RestrainOn,
}

#[derive(Debug, clap::Args)]
struct HoldArgs {
    /// The plugin.
    plugin: String,
    /// Why (shown to every client and operator).
    #[arg(long, value_name = "TEXT")]
    reason: String,
    /// The plugins.yaml naming it: the hold then also ends when its entry there changes.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    #[command(flatten)]
    host: RestrainOn,
}

#[derive(Debug, clap::Args)]
struct PluginOnHostArgs {
    /// The plugin.
    plugin: String,
    #[command(flatten)]
    host: RestrainOn,
}

/// Makes one restraint change on the host and says what was done.
fn restrain(change: ops::RestraintChange, host: &RestrainOn) -> crate::Result<bool> {
    let port = host.connection.port()?;
    let done = ops::restrain(&change, &port, host.no_wait, &mut |notice| {
        eprintln!("{notice}")
    })?;
    println!("{done}");
    Ok(true)
}

/// A shell `plugsync completions` writes a script for.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum CompletionShell {
    Bash,
    Zsh,
    Fish,
}

#[derive(Debug, clap::Args)]
struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: CompletionShell,
}

/// `plugsync completions SHELL`: the script, generated from this command line's definition.
fn completions(args: &CompletionsArgs) -> crate::Result<bool> {
    use std::io::Write as _;
    let shell = match args.shell {
        CompletionShell::Bash => clap_complete::Shell::Bash,
        CompletionShell::Zsh => clap_complete::Shell::Zsh,
        CompletionShell::Fish => clap_complete::Shell::Fish,
    };
    // clap_complete offers hidden commands too (`preflight-child`), and a `Command` has no way
    // to remove one: the root is assembled again from `Cli`'s own arguments and its visible
    // commands, so nothing of the command line is restated here.
    let full = <Cli as clap::CommandFactory>::command();
    let mut command = clap::Command::new("plugsync")
        .version(env!("CARGO_PKG_VERSION"))
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|c| !c.is_hide_set()).cloned());
    if let Some(about) = full.get_about() {
        command = command.about(about.clone());
    }
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "plugsync", &mut script);
    std::io::stdout()
        .write_all(&script)
        .map_err(|source| crate::Error::Setup {
            action: "write the completion script",
            source,
        })?;
    Ok(true)
}

#[derive(Debug, clap::Args)]
struct KeygenArgs {
    /// Where to write the pair: `NAME.key` and `NAME.pub`.
    #[arg(default_value = "plugsync-signing")]
    name: PathBuf,
}

#[derive(Debug, clap::Args)]
struct ValidateArgs {
    /// The file to check.
    #[arg(
        short = 'f',
        long = "file",
        value_name = "FILE",
        default_value = "plugins.yaml"
    )]
    file: PathBuf,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SchemaChoice {
    /// plugins.yaml.
    Plugins,
    /// A registry's index files.
    Index,
    /// `plugins.lock`.
    Lock,
    /// A plan (`reconcile --dry-run --output json`).
    Plan,
    /// `history --output json`.
    History,
    /// An alert `run --alert-webhook` posts.
    Alert,
}

#[derive(Debug, clap::Args)]
struct SchemaArgs {
    /// Which schema.
    #[arg(value_enum, default_value = "plugins")]
    name: SchemaChoice,
}

#[derive(Debug, clap::Args)]
struct DemoArgs {
    /// Directory holding the built plugin libraries (default: beside this binary, built on
    /// demand under `cargo run`).
    #[arg(long, value_name = "DIR")]
    plugins: Option<PathBuf>,
    /// Feed threads calling the plugins (in process; a host runs its own feed).
    #[arg(long, default_value_t = 3, conflicts_with_all = ["via_host", "host"])]
    threads: usize,
    /// Milliseconds each step soaks before it is committed.
    #[arg(long, value_name = "MS", default_value_t = 600)]
    soak_ms: u64,
    /// Run the steps through the control API of a `plugsync host` the demo starts (over a
    /// temporary store and token, trading with its feed) and stops with SIGTERM at the end.
    #[arg(long, conflicts_with = "host")]
    via_host: bool,
    /// Run the steps through the control API of this running host instead (`http://…`,
    /// `https://…` or `unix:PATH`): it must run `ma_cross` 1.0.0 and `risk_model` 1.0.0 with
    /// `--feed on`.
    #[arg(long, value_name = "URL", requires = "token_file")]
    host: Option<String>,
    /// File holding that host's bearer token (its `--token-file`).
    #[arg(long, value_name = "FILE", requires = "host")]
    token_file: Option<PathBuf>,
    /// The CA (PEM) that signed an `https://` `--host`'s certificate: the only one trusted.
    // Not `requires = "host"`: set in the environment, it must not refuse the other venues.
    #[arg(long, value_name = "FILE", env = "PLUGSYNC_TLS_CA")]
    tls_ca: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct InspectArgs {
    /// The plugin library (`.so`).
    library: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
}

/// What `plugsync host --feed` runs.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Feed {
    /// The synthetic desk.
    On,
    /// Nothing.
    Off,
    /// A file of calls.
    File(PathBuf),
}

impl std::str::FromStr for Feed {
    type Err = std::convert::Infallible;

    /// `on`, `off`, or else a path (a file named `on` is `./on`).
    fn from_str(text: &str) -> Result<Feed, Self::Err> {
        Ok(match text {
            "on" => Feed::On,
            "off" => Feed::Off,
            path => Feed::File(PathBuf::from(path)),
        })
    }
}

#[derive(Debug, clap::Args)]
struct HostArgs {
    /// Where the control API listens: `IP:PORT` (port 0: any free port, printed when ready),
    /// or `unix:PATH` for a unix socket only this user can connect to (mode 0600). Plain HTTP
    /// is served on loopback only: a non-loopback address needs `--allow-remote` and
    /// `--tls-cert`/`--tls-key`.
    #[arg(
        long,
        value_name = "ADDR",
        default_value_t = Listen::Tcp(plugsync_host::control::DEFAULT_LISTEN)
    )]
    listen: Listen,
    /// File holding the control API's clients and their bearer tokens; it must be readable by
    /// its owner only (mode 0600). Either format: one line holding only a token (its client is
    /// named `default`), or one `name token` line per client (a name is 1 to 64 of `a-z`,
    /// `0-9`, `_`, `.`, `-`; no two clients share a name or a token). Blank lines and `#`
    /// comments are allowed; a bad line refuses the start with `FILE:LINE`. Each client is
    /// given a file holding its own token only.
    #[arg(long, value_name = "FILE", env = "PLUGSYNC_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// The host's own store: verified artifacts, the committed set, state checkpoints. A host
    /// started again on the same store comes back on what was committed.
    #[arg(long, value_name = "DIR", default_value = "plugsync-host-store")]
    store: PathBuf,
    /// ed25519 public keys (one per line, 64 hex digits) one of which must have signed each
    /// artifact, checked when it is staged through the control API and before every load
    /// (default: signatures not required). A signature is 128 hex digits over the canonical
    /// JSON `{"id","sha256","version"}` of the artifact.
    #[arg(long, value_name = "FILE")]
    trusted_keys: Option<PathBuf>,
    /// Development only: with `--trusted-keys`, let a `--load` library without a `LIB.sig`
    /// load unsigned.
    #[arg(long)]
    allow_unsigned_load: bool,
    /// Accept a non-loopback `--listen` address; it also needs `--tls-cert` and `--tls-key`, so
    /// that the token never crosses the network in clear.
    #[arg(long)]
    allow_remote: bool,
    /// The certificate (PEM, then its intermediates) the control API presents over HTTPS.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM; mode 0600).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A plugin library to load at start, with config `{}` (repeatable). Skipped when that
    /// plugin already runs from the store. With `--trusted-keys`, its signature is read from
    /// `LIB.sig` beside it (128 hex digits, as in the `x-plugsync-signature` header).
    #[arg(long = "load", value_name = "LIB")]
    load: Vec<PathBuf>,
    /// `on`: trade a synthetic desk through `ma_cross` and `risk_model` (both must be
    /// loaded); `off`; or a FILE of calls to replay in order, one JSON object per line:
    /// `{"plugin": "<id>", "input": <JSON value or string>}`, optionally with `"now": <host
    /// time in ns>`. A string input is sent as its bytes, any other value as written. The
    /// file is checked before the host starts.
    #[arg(long, value_name = "on|off|FILE", default_value = "on")]
    feed: Feed,
    /// Calls per second a feed FILE is replayed at; 0: as fast as the plugins answer
    /// [default: 1000].
    #[arg(long, value_name = "N")]
    feed_rate: Option<u32>,
    /// Write a feed FILE's answers here, one JSON object per line, in order:
    /// `{"plugin", "seq", "output"}` or `{"plugin", "seq", "error"}` (default: the log).
    #[arg(long, value_name = "FILE")]
    feed_out: Option<PathBuf>,
    /// How often the plugins loaded with `--load` have their state checkpointed in the store
    /// (also at each commit and when the host stops); 0: never.
    #[arg(long, value_name = "N", default_value_t = 1000)]
    checkpoint_every_ms: u64,
    /// Start PLUGIN with a fresh state if its checkpoint in the store cannot be restored
    /// (repeatable). Without it such a plugin is not started, so that its positions are never
    /// silently forgotten.
    #[arg(long = "fresh-state", value_name = "PLUGIN")]
    fresh_state: Vec<String>,
    /// A `--load`ed PLUGIN refuses calls while it is faulted by a panic, instead of serving on
    /// with the state the panic left (repeatable; for risk plugins).
    #[arg(long = "fail-closed", value_name = "PLUGIN")]
    fail_closed: Vec<String>,
    /// Serve `POST /v1/plugins/{plugin}/call`, to feed a plugin by hand (development: in a
    /// trading host only the host's own inputs should change a plugin's state).
    #[arg(long)]
    allow_calls: bool,
}

#[derive(Debug, clap::Args)]
struct StatusArgs {
    /// Output format (the JSON is a contract).
    #[arg(long, value_enum, default_value = "text")]
    output: Output,
    /// Include every plugin's state.
    #[arg(long)]
    with_state: bool,
    /// Also show plugins.yaml against what runs: per plugin in sync, a change pending, or kept
    /// by the host's restraints (and why); drift; the last plan applied; rollback points.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    file: Option<PathBuf>,
    /// The state directory whose last plan and rollback points to show (with `-f`, the
    /// default one unless given).
    #[arg(long, value_name = "DIR", env = "PLUGSYNC_STATE_DIR")]
    state_dir: Option<PathBuf>,
    #[command(flatten)]
    connection: HostConnection,
}

/// The log on stderr: filtered by `PLUGSYNC_LOG` or else `RUST_LOG` (default: `default`),
/// coloured only on a terminal without `NO_COLOR`.
fn init_logging(default: &str, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("PLUGSYNC_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new(default));
    let ansi = std::env::var_os("NO_COLOR").is_none()
        && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => log.with_ansi(ansi).init(),
        LogFormat::Json => log.json().flatten_event(true).init(),
    }
}

fn demo_options(args: DemoArgs) -> crate::Result<ops::DemoOptions> {
    let venue = match (args.via_host, args.host, args.token_file) {
        (true, _, _) => ops::DemoVenue::SpawnHost {
            program: std::env::current_exe().map_err(|source| crate::Error::Setup {
                action: "find the `plugsync` binary to run the host with",
                source,
            })?,
        },
        (false, Some(url), Some(token_file)) => ops::DemoVenue::Host {
            url,
            token_file,
            tls_ca: args.tls_ca,
        },
        // clap makes `--host` and `--token-file` come together.
        _ => ops::DemoVenue::InProcess,
    };
    Ok(ops::DemoOptions {
        plugins: args.plugins,
        venue,
        threads: args.threads,
        soak: Duration::from_millis(args.soak_ms),
        ..ops::DemoOptions::default()
    })
}

fn host_options(args: HostArgs) -> crate::Result<ops::HostOptions> {
    let mut options = ops::HostOptions::new(args.token_file.ok_or(crate::Error::NoTokenFile)?);
    options.listen = args.listen;
    options.store = args.store;
    options.trusted_keys = args.trusted_keys;
    options.allow_remote = args.allow_remote;
    options.tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        // clap makes `--tls-cert` and `--tls-key` come together.
        _ => None,
    };
    options.load = args.load;
    options.allow_unsigned_load = args.allow_unsigned_load;
    match args.feed {
        Feed::File(path) => {
            let mut file = ops::FeedFile::new(path);
            file.rate = args.feed_rate.unwrap_or(file.rate);
            file.out = args.feed_out;
            options.feed = false;
            options.feed_file = Some(file);
        }
        on_or_off => {
            if args.feed_rate.is_some() {
                return Err(crate::Error::FeedOptionWithoutFile {
                    option: "--feed-rate",
                });
            }
            if args.feed_out.is_some() {
                return Err(crate::Error::FeedOptionWithoutFile {
                    option: "--feed-out",
                });
            }
            options.feed = on_or_off == Feed::On;
        }
    }
    options.checkpoint_every =
        (args.checkpoint_every_ms > 0).then(|| Duration::from_millis(args.checkpoint_every_ms));
    options.fresh_state = args.fresh_state;
    options.fail_closed = args.fail_closed;
    options.allow_calls = args.allow_calls;
    Ok(options)
}

/// Prints what a command did; it succeeded.
fn print_done(text: String) -> bool {
    print!("{text}");
    true
}

/// Runs the `plugsync` command line; `main` only calls this.
pub fn run() -> ExitCode {
    let cli = Cli::parse();
    // A host is a daemon: its log says what it runs. Other commands speak on stdout.
    init_logging(
        match cli.command {
            Command::Host(_) | Command::Run(_) => "info",
            _ => "warn",
        },
        match &cli.command {
            Command::Run(args) => args.log_format,
            _ => LogFormat::Human,
        },
    );
    let result = match cli.command {
        Command::Reconcile(args) if !args.dry_run => {
            return match apply(args) {
                Ok(code) => code,
                Err(error) => fail(error),
            };
        }
        Command::Reconcile(args) => {
            let output = args.output;
            let out = args.out.clone();
            return match dry_run_options(args)
                .and_then(|options| ops::dry_run(&options))
                .and_then(|dry_run| print_dry_run(&dry_run, output, out.as_deref()))
            {
                Ok(code) => code,
                Err(error) => fail(error),
            };
        }
        Command::Demo(args) => demo_options(args).and_then(|options| {
            ops::demo(&options, &mut std::io::stdout()).map(|outcome| outcome.passed())
        }),
        Command::Inspect(args) => {
            let format = match args.output {
                Output::Text => ops::InspectFormat::Text,
                Output::Json => ops::InspectFormat::Json,
            };
            ops::inspect(&args.library, format).map(|text| {
                print!("{text}");
                true
            })
        }
        Command::Host(args) => {
            host_options(args).and_then(|options| ops::host(&options).map(|()| true))
        }
        Command::Run(args) if args.embedded => {
            let (listen, store, feed) = (args.listen.clone(), args.store.clone(), !args.no_feed);
            run_options(args)
                .and_then(|options| {
                    let state_dir = &options.sidecar.reconcile.state_dir;
                    let host = ops::EmbeddedHost {
                        listen,
                        store: store.unwrap_or_else(|| state_dir.join("host-store")),
                        feed,
                    };
                    ops::run_embedded(options.sidecar, host)
                })
                .map(|()| true)
        }
        Command::Run(args) => {
            run_options(args).and_then(|options| ops::run(&options).map(|()| true))
        }
        Command::Validate(args) => {
            let styled = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            match ops::validate(&args.file, styled) {
                ops::Validated::Valid { files, plugins } => {
                    let files: Vec<String> =
                        files.iter().map(|f| f.display().to_string()).collect();
                    println!(
                        "{}: valid ({plugins} plugin{})",
                        files.join(" extends "),
                        if plugins == 1 { "" } else { "s" }
                    );
                    Ok(true)
                }
                ops::Validated::Invalid(report) => {
                    eprint!("{report}");
                    Ok(false)
                }
            }
        }
        Command::Schema(args) => {
            print!(
                "{}",
                ops::schema(match args.name {
                    SchemaChoice::Plugins => ops::SchemaName::Plugins,
                    SchemaChoice::Index => ops::SchemaName::Index,
                    SchemaChoice::Lock => ops::SchemaName::Lock,
                    SchemaChoice::Plan => ops::SchemaName::Plan,
                    SchemaChoice::History => ops::SchemaName::History,
                    SchemaChoice::Alert => ops::SchemaName::Alert,
                })
            );
            Ok(true)
        }
        Command::Publish(args) => ops::publish(&ops::PublishOptions {
            library: args.library,
            registry: args.registry,
            channel: args.channel.into(),
            sign_key: args.sign_key,
            migrations: args.migrations,
        })
        .map(print_done),
        Command::Promote(args) => ops::promote(
            &args.registry,
            &args.plugin,
            &args.version,
            args.channel.into(),
        )
        .map(print_done),
        Command::Yank(args) => {
            ops::yank(&args.registry, &args.plugin, &args.version, args.undo).map(print_done)
        }
        Command::Keygen(args) => ops::keygen(&args.name).map(print_done),
        Command::Completions(args) => completions(&args),
        Command::Rollback(args) => return rollback(args).unwrap_or_else(fail),
        Command::Gc(args) => now().and_then(|now| {
            let state_dir = args.state_dir.unwrap_or_else(ops::default_state_dir);
            ops::gc(&state_dir, now).map(print_done)
        }),
        Command::Freeze(args) => restrain(
            ops::RestraintChange::Freeze {
                reason: args.reason,
            },
            &args.host,
        ),
        Command::Unfreeze(args) => restrain(ops::RestraintChange::Unfreeze, &args.host),
        Command::Hold(args) => {
            let entry_sha256 = match &args.file {
                Some(file) => Some(ops::entry_fingerprint(file, &args.plugin)),
                None => None,
            };
            match entry_sha256.transpose() {
                Ok(entry_sha256) => restrain(
                    ops::RestraintChange::Hold {
                        plugin: args.plugin,
                        reason: args.reason,
                        entry_sha256,
                    },
                    &args.host,
                ),
                Err(error) => Err(error),
            }
        }
        Command::Release(args) => restrain(
            ops::RestraintChange::Release {
                plugin: args.plugin,
            },
            &args.host,
        ),
        Command::Retry(args) => restrain(
            ops::RestraintChange::Retry {
                plugin: args.plugin,
            },
            &args.host,
        ),
        Command::History(args) => history(args).map(print_done),
        Command::Lock(args) => ops::lock(&ops::LockOptions {
            file: args.file,
            update: match args.update {
                None => crate::resolve::Update::None,
                Some(plugins) if plugins.is_empty() => crate::resolve::Update::All,
                Some(plugins) => crate::resolve::Update::Plugins(plugins.into_iter().collect()),
            },
            locked: args.locked,
            state_dir: args.state_dir.unwrap_or_else(ops::default_state_dir),
            trusted_keys: args.trusted_keys,
            registry_ca: args.registry_ca,
        })
        .map(|outcome| print_done(outcome.render())),
        Command::PreflightChild(args) => {
            crate::preflight::run_child(&args.store, &mut std::io::stdin(), &mut std::io::stdout())
                .map(|()| true)
                .map_err(|source| crate::Error::Setup {
                    action: "write the preview's answer",
                    source,
                })
        }
        Command::Status(args) => {
            let options = ops::StatusOptions {
                host: Some(args.connection.host),
                token_file: args.connection.token_file,
                tls_ca: args.connection.tls_ca,
                format: match args.output {
                    Output::Text => ops::StatusFormat::Text,
                    Output::Json => ops::StatusFormat::Json,
                },
                with_state: args.with_state,
                file: args.file,
                state_dir: args.state_dir,
                now: match now() {
                    Ok(now) => now,
                    Err(error) => return fail(error),
                },
            };
            ops::status(&options).map(|text| {
                print!("{text}");
                true
            })
        }
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => fail(error),
    }
}

/// Prints `error` on stderr; exit code 1.
fn fail(error: crate::Error) -> ExitCode {
    match error {
        // A plugins.yaml's problems are rendered whole, each with its own `error:`.
        crate::Error::InvalidDesiredState { report } => eprint!("{report}"),
        error => eprintln!("error: {error}"),
    }
    ExitCode::FAILURE
}
