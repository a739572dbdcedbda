//! Errors of the `plugsync` library and CLI.

use std::path::PathBuf;

/// What went wrong in a `plugsync` command. Messages are lowercase, name things in backticks
/// and say what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The host runtime refused or failed an operation.
    #[error(transparent)]
    Host(#[from] plugsync_host::HostError),

    /// A plugins.yaml with problems: every one, rendered like a compiler's errors.
    #[error("{report}")]
    InvalidDesiredState {
        /// The rendered report.
        report: String,
    },

    /// plugins.yaml cannot be resolved against its registry (boxed: rare, and keeps every
    /// `Result` small).
    #[error(transparent)]
    Resolve(Box<crate::resolve::ResolveError>),

    /// `--locked`, and the lock would change.
    #[error(
        "`{path}` is not the lock this plugins.yaml and registry give, and `--locked` forbids \
         changing it:\n  {}\nrun `plugsync lock` and commit the new lock", changes.join("\n  ")
    )]
    LockWouldChange {
        /// The lock file.
        path: PathBuf,
        /// What would change.
        changes: Vec<String>,
    },

    /// An artifact the registry does not have (a preview needs the running version's).
    #[error(
        "the registry has no artifact of `{plugin}` with sha256 {sha256}: it was not published \
         there (loaded by hand?), so its migration cannot be previewed outside the host"
    )]
    NotInRegistry {
        /// The plugin.
        plugin: String,
        /// The artifact's sha256.
        sha256: plugsync_host::Digest,
    },

    /// A lock made from another plugins.yaml: reconcile applies what was reviewed, or nothing.
    #[error(
        "`{path}` was made from another plugins.yaml (it no longer matches): run `plugsync \
         lock`, review the versions it picks, and commit the new lock"
    )]
    StaleLock {
        /// The lock file.
        path: PathBuf,
    },

    /// The host's control API is too old for `plugsync reconcile`.
    #[error(
        "the host at {host} serves control API {version}, without {missing}: `plugsync \
         reconcile` needs them to apply safely; nothing was applied. Upgrade the host's \
         plugsync-host, or plan only with `--dry-run`"
    )]
    HostTooOld {
        /// The host.
        host: String,
        /// Its API version.
        version: String,
        /// The capabilities it lacks.
        missing: String,
    },

    /// `PLUGSYNC_CRASH_AT` names no phase of a step.
    #[error("`PLUGSYNC_CRASH_AT={value}` is not a step phase: {reason}")]
    BadCrashPoint {
        /// The value.
        value: String,
        /// Why, with the valid names.
        reason: String,
    },

    /// Another client holds the host's reconcile lease, and `--no-wait` was given.
    #[error(
        "{holder} is reconciling the host at {host}: nothing was applied; run again without \
         `--no-wait` to wait for it, or take its lease with `plugsync reconcile --break-lease \
         --reason TEXT` if that client is gone"
    )]
    LeaseHeldElsewhere {
        /// The host.
        host: String,
        /// Who holds the lease, and until when.
        holder: String,
    },

    /// The reconcile lease was taken away mid-apply (broken by another client, or expired).
    #[error(
        "lost the reconcile lease of the host at {host} ({reason}): another client may be \
         changing it; the steps in progress are in the journal and the next `plugsync \
         reconcile` finishes them"
    )]
    LeaseLost {
        /// The host.
        host: String,
        /// Why the renewal was refused.
        reason: String,
    },

    /// `--plan FILE` is not a saved plan.
    #[error(
        "`{path}` is not a saved plan ({reason}): save one with `plugsync reconcile --dry-run \
         --out FILE`",
        path = .path.display()
    )]
    BadSavedPlan {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The saved plan is no longer the plan: the world changed since it was reviewed.
    #[error(
        "the saved plan `{path}` ({saved}) is not the plan now ({now}): {why}; nothing was \
         applied. Review the new plan with `plugsync reconcile --dry-run --out {path}`",
        path = .path.display()
    )]
    PlanChanged {
        /// The file.
        path: PathBuf,
        /// The saved plan's id.
        saved: String,
        /// The id of the plan computed now.
        now: String,
        /// What changed.
        why: String,
    },

    /// A plan step uses an update strategy the apply engine does not run yet.
    #[error(
        "`{plugin}` asks for the update strategy `{strategy}`, which `plugsync reconcile` does \
         not run yet: nothing was applied; use `strategy: {{kind: immediate}}` (or remove the \
         key) for this plugin"
    )]
    StrategyNotImplemented {
        /// The plugin.
        plugin: String,
        /// The strategy.
        strategy: String,
    },

    /// A step is pending on the host that this client did not journal.
    #[error(
        "`{plugin}` has a step in progress on the host ({}) that this client did not start: \
         nothing was applied; wait for its commit or rollback, then reconcile again",
        step_id.as_deref().map_or("no step id".to_owned(), |id| format!("step `{id}`"))
    )]
    StepPendingElsewhere {
        /// The plugin.
        plugin: String,
        /// The pending step's id.
        step_id: Option<String>,
    },

    /// A policy window forbids updates now.
    #[error(
        "updates are not allowed now: {window}, {until}; nothing was applied. Reconcile then, \
         or now with `--force --reason TEXT` (recorded on the host)"
    )]
    PolicyWindow {
        /// Which window.
        window: String,
        /// When updates may happen.
        until: String,
    },

    /// The host is frozen: no step may be taken. (Holds and failed marks keep their plugins
    /// where they are; the rest of a plan goes on.)
    #[error(
        "{what}; nothing was applied. Lift it with `plugsync unfreeze` once it is over, or go \
         ahead with `--force --reason TEXT` (recorded on the host)"
    )]
    Restrained {
        /// The restraint, who set it and why.
        what: String,
    },

    /// A manual rollback would leave a running plugin's requirement on the plugin unmet.
    #[error(
        "rolling `{plugin}` back to {to} would break `{dependant}` {version}, which needs \
         `{plugin}` {requirement}: nothing was changed; carry it down too with `--carry \
         {dependant}@VERSION` (a version that accepts `{plugin}` {to}), or roll `{dependant}` \
         back first"
    )]
    RollbackBreaksDependant {
        /// The plugin rolled back.
        plugin: String,
        /// The version it would go back to.
        to: String,
        /// The running plugin that needs it.
        dependant: String,
        /// The dependant's running version.
        version: String,
        /// What it needs.
        requirement: String,
    },

    /// Another `plugsync run` already uses this state directory.
    #[error(
        "another `plugsync run` (pid {pid}) uses the state directory `{state_dir}`: stop it, or \
         give this one its own `--state-dir`"
    )]
    SidecarRunning {
        /// The state directory.
        state_dir: PathBuf,
        /// The process holding it, as its lock file says.
        pid: String,
    },

    /// The sidecar cannot watch plugins.yaml's directories (inotify's limits reached).
    #[error(
        "cannot watch plugins.yaml's directories: {source}; raise `fs.inotify.max_user_instances` \
         or `max_user_watches` (sysctl), or stop other watchers of this user"
    )]
    Watch {
        /// What the watcher said.
        source: notify::Error,
    },

    /// A stop was asked (SIGTERM, SIGINT) and the apply stopped at a safe point before its
    /// end: what was in flight is in the journal, for the next run to finish.
    #[error(
        "stopped before the end, as asked: {left}; the journal has it and the next \
         `plugsync run` or `reconcile` finishes it"
    )]
    Stopped {
        /// What was left in flight (or "no step in flight").
        left: String,
    },

    /// A restraint change that makes no sense on this host (a release of a plugin not held).
    #[error("{what}: nothing was changed; {fix}")]
    NotRestrainable {
        /// What is not so.
        what: String,
        /// Where to look instead.
        fix: String,
    },

    /// A switch cannot be preflighted: the running version's artifact is not available.
    #[error(
        "cannot preflight `{plugin}`'s step from {version}: {reason}; the preflight migrates the \
         live state with the running version's code. Publish that artifact, or reconcile with \
         `--no-preflight`"
    )]
    PreflightNeedsRunning {
        /// The plugin.
        plugin: String,
        /// The running version.
        version: String,
        /// Why its artifact cannot be had.
        reason: String,
    },

    /// `--locked` and no lock.
    #[error(
        "`--locked` needs a plugins.lock, and there is none at `{path}`: run `plugsync lock` \
         and commit it"
    )]
    NoLock {
        /// Where the lock should be.
        path: PathBuf,
    },

    /// No plan reaches what plugins.yaml asks from what runs (boxed: rare).
    #[error(transparent)]
    Plan(Box<crate::plan::PlanError>),

    /// `PLUGSYNC_NOW` is not a time.
    #[error(
        "`PLUGSYNC_NOW` is `{value}`, not an RFC 3339 time: {reason}; e.g. \
         `2026-12-02T14:00:00Z`, or unset it to use the clock"
    )]
    BadNow {
        /// What it holds.
        value: String,
        /// Why it is not a time.
        reason: String,
    },

    /// A lock file that cannot be read.
    #[error("`{path}` is not a plugins.lock: {reason}; delete it and run `plugsync lock`")]
    BadLock {
        /// The lock file.
        path: PathBuf,
        /// Why.
        reason: String,
    },

    /// A saved status (`--observed FILE`) that cannot be read as one.
    #[error(
        "`{path}:{line}:{column}` is not a saved host status: {reason}; save one with \
         `plugsync status --output json [--with-state] > FILE`"
    )]
    BadObserved {
        /// The file.
        path: PathBuf,
        /// Line of the problem (1-based).
        line: usize,
        /// Column of the problem (1-based).
        column: usize,
        /// What is wrong there.
        reason: String,
    },

    /// `requireSignatures` with no key to check them.
    #[error(
        "`{file}` sets `policy.requireSignatures`, but no key is trusted: pass `--trusted-keys \
         FILE` (the publishers' public keys; never taken from plugins.yaml)"
    )]
    SignaturesNeedKeys {
        /// The plugins.yaml.
        file: PathBuf,
    },

    /// An artifact without a signature by a trusted key.
    #[error(
        "`{plugin}` {version} (sha256 {sha256}) {}: publish it signed (`plugsync publish \
         --sign-key`) by a key in `--trusted-keys`, or pin a version that is",
        if *signed { "is signed by no key given in `--trusted-keys`" } else { "is not signed" }
    )]
    NotSignedByTrustedKey {
        /// Plugin id.
        plugin: String,
        /// Version.
        version: String,
        /// Its sha256.
        sha256: plugsync_host::Digest,
        /// Whether it carries a signature (by another key).
        signed: bool,
    },

    /// An artifact whose own metadata is not what the registry's index says it is.
    #[error(
        "the artifact the registry gives for `{plugin}` {version} (sha256 {sha256}) is {found}: \
         the registry's index is wrong; republish the plugin"
    )]
    ArtifactIsNot {
        /// The plugin asked.
        plugin: String,
        /// The version asked.
        version: String,
        /// What its metadata says it is.
        found: String,
        /// Its sha256.
        sha256: plugsync_host::Digest,
    },

    /// A registry could not be read or changed (boxed: rare, and keeps every `Result` small).
    #[error(transparent)]
    Registry(Box<crate::registry::RegistryError>),

    /// The journal (`STATE_DIR/journal.redb`) could not be opened, read or written (boxed:
    /// rare, and keeps every `Result` small).
    #[error(transparent)]
    Store(Box<crate::store::StoreError>),

    /// `plugsync history` was asked something it cannot answer (boxed: rare, and keeps every
    /// `Result` small).
    #[error(transparent)]
    History(Box<crate::ops::HistoryError>),

    /// The control API server refused its configuration or failed.
    #[error(transparent)]
    Control(#[from] plugsync_host::control::ControlError),

    /// The async runtime or the signal handlers could not be set up.
    #[error("cannot {action}: {source}")]
    Setup {
        /// What was being set up.
        action: &'static str,
        /// The cause.
        source: std::io::Error,
    },

    /// `plugsync run --metrics-listen` on an address other hosts can reach, not allowed.
    #[error(
        "`--metrics-listen {listen}` is not a loopback address: the metrics name every plugin, \
         its versions and its traffic, served in clear to whoever reaches it; listen on \
         `127.0.0.1:PORT`, or pass `--metrics-allow-remote` if the network is yours"
    )]
    MetricsNotLoopback {
        /// The address asked.
        listen: std::net::SocketAddr,
    },

    /// The metrics address cannot be listened on (in use, not this host's).
    #[error(
        "cannot serve metrics on `{listen}`: {source}; pick another address with \
         `--metrics-listen ADDR` (port 0: any free port), or `--metrics-listen off`"
    )]
    MetricsListen {
        /// The address asked.
        listen: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },

    /// `--load` names two libraries of the same plugin.
    #[error(
        "`--load` names two libraries of `{plugin}` (`{first}` and `{second}`): a host runs one \
         version of a plugin; load one and switch to the other through the control API"
    )]
    LoadedTwice {
        /// Plugin id.
        plugin: String,
        /// The library loaded.
        first: PathBuf,
        /// The library refused.
        second: PathBuf,
    },

    /// No token file was given for the control API.
    #[error(
        "no token file given: pass `--token-file FILE` or set `PLUGSYNC_TOKEN_FILE` (the file \
         holding the host's control API token)"
    )]
    NoTokenFile,

    /// The token file could not be read.
    #[error("cannot read the token file `{path}`: {source}")]
    TokenFile {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },

    /// The token file holds no token.
    #[error("the token file `{path}` is empty: it must hold the host's control API token")]
    EmptyToken {
        /// The file.
        path: PathBuf,
    },

    /// The token file holds more than one token, e.g. the host's file of named clients.
    #[error(
        "the token file `{path}` holds more than a token (a host's `name token` lines?): a client \
         sends its own token only; give it a file holding that token alone"
    )]
    NotOneToken {
        /// The file.
        path: PathBuf,
    },

    /// `--host` / `PLUGSYNC_HOST` is not a URL of a host.
    #[error(
        "`{url}` is not a valid host URL: expected e.g. `http://127.0.0.1:7077`, \
         `https://host.example:7077` or `unix:/run/plugsync/control.sock`"
    )]
    BadHostUrl {
        /// What was given.
        url: String,
    },

    /// An `https://` host URL without a pinned CA: plugsync trusts no built-in root.
    #[error(
        "`{url}` is HTTPS, and plugsync trusts only the CA you pin for it: pass `--tls-ca FILE` \
         (or set `PLUGSYNC_TLS_CA`) with the CA certificate that signed the host's `--tls-cert`"
    )]
    NoTlsCa {
        /// What was given.
        url: String,
    },

    /// The pinned CA file cannot be used.
    #[error(
        "cannot use `{path}` as the pinned CA: {reason}; give a PEM file holding the CA \
         certificate that signed the host's `--tls-cert`"
    )]
    TlsCa {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// The host's TLS certificate did not verify against the pinned CA (or does not name the
    /// host of the URL).
    #[error(
        "the plugsync host at {url} presented a certificate that does not verify against the \
         pinned CA `{ca}` ({reason}): pin the CA that signed the host's `--tls-cert` with \
         `--tls-ca`, and use a host name or address the certificate names"
    )]
    CertificateRefused {
        /// The host URL.
        url: String,
        /// The pinned CA file.
        ca: PathBuf,
        /// What rustls said, e.g. `invalid peer certificate: UnknownIssuer`.
        reason: String,
    },

    /// The host's control API could not be reached.
    #[error("cannot reach the plugsync host at {url}: {cause}; is `plugsync host` running?")]
    Unreachable {
        /// The host URL.
        url: String,
        /// The cause, e.g. `connection refused`.
        cause: String,
    },

    /// The host refused the token.
    #[error(
        "the plugsync host at {url} refused the token in `{path}`: check that it matches the \
         host's `--token-file`"
    )]
    Unauthorized {
        /// The host URL.
        url: String,
        /// The token file sent.
        path: PathBuf,
    },

    /// The host answered a request with an error.
    #[error("{message}")]
    HostRefused {
        /// The host URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The error code.
        code: String,
        /// The host's message.
        message: String,
    },

    /// Something answered that is not a plugsync host's control API.
    #[error(
        "the answer of {url} ({status}) is not the plugsync control API's ({reason}): is \
         `plugsync host` listening there?"
    )]
    BadAnswer {
        /// The host URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// What was wrong with it.
        reason: String,
    },

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

    /// The host `demo --via-host` started did not become ready.
    #[error(
        "the demo's `plugsync host` did not start: {why}; its log is kept in `{log}` (run \
         `plugsync demo` without `--via-host` to see the demo in one process)"
    )]
    DemoHostStart {
        /// What happened (exited, or no ready line in time).
        why: String,
        /// The host's log file.
        log: PathBuf,
    },

    /// The host `demo --via-host` started did not stop cleanly on SIGTERM.
    #[error(
        "the demo's `plugsync host` did not stop cleanly on SIGTERM ({status}): its log is kept \
         in `{log}`"
    )]
    DemoHostStop {
        /// How it ended.
        status: String,
        /// The host's log file.
        log: PathBuf,
    },

    /// `demo --host` found a host that does not run the demo's starting point.
    #[error(
        "the host at {url} runs {found}: `plugsync demo --host` starts from `ma_cross` 1.0.0 and \
         `risk_model` 1.0.0 with no step pending; start a fresh host (`plugsync host --store \
         NEW_DIR --load DIR/libma_cross_v1_0_0.so --load DIR/librisk_model_v1_0_0.so`), or run \
         `plugsync demo --via-host`"
    )]
    DemoHostNotAtStart {
        /// The host URL.
        url: String,
        /// What it runs.
        found: String,
    },

    /// The demo could not make its scratch git repository or a commit in it.
    #[error("the demo could not {action} in its scratch git repository: {reason}")]
    DemoGit {
        /// What it was doing.
        action: &'static str,
        /// Why, in gix's words.
        reason: String,
    },

    /// The desk the demo updates served no call while the demo warmed up.
    #[error(
        "no call reached the plugins in the {warm_up_ms} ms before the first step ({venue}): the \
         demo updates a desk while it trades; start the host with `--feed on` (the default) and \
         both plugins loaded"
    )]
    DemoNotTrading {
        /// Where the desk runs.
        venue: String,
        /// How long the demo watched.
        warm_up_ms: u64,
    },

    /// A line of a `--feed` file is not a call.
    #[error("`{path}:{line}` is not a feed line ({reason}): expected {expected}")]
    FeedLine {
        /// The feed file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
        /// What a line must be.
        expected: &'static str,
    },

    /// A `--feed` file calls a plugin the host does not run.
    #[error(
        "`{path}:{line}` calls `{plugin}`, which this host does not run (it runs {}): `--load` \
         its library or fix the line",
        Error::running(.running)
    )]
    FeedPluginNotRunning {
        /// The feed file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// The plugin called.
        plugin: String,
        /// The plugins the host runs.
        running: Vec<String>,
    },

    /// A feed option was given without a feed file.
    #[error("`{option}` applies to a feed file only: pass `--feed FILE` too, or drop `{option}`")]
    FeedOptionWithoutFile {
        /// The option given.
        option: &'static str,
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

impl Error {
    /// The plugins a host runs, for a message: "`a`, `b`", or "no plugin".
    fn running(plugins: &[String]) -> String {
        if plugins.is_empty() {
            return "no plugin".to_owned();
        }
        let named: Vec<String> = plugins.iter().map(|p| format!("`{p}`")).collect();
        named.join(", ")
    }
}

/// Result alias of the `plugsync` library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<crate::registry::RegistryError> for Error {
    fn from(error: crate::registry::RegistryError) -> Self {
        Error::Registry(Box::new(error))
    }
}

impl From<crate::ops::HistoryError> for Error {
    fn from(error: crate::ops::HistoryError) -> Self {
        Error::History(Box::new(error))
    }
}

impl From<crate::store::StoreError> for Error {
    fn from(error: crate::store::StoreError) -> Self {
        Error::Store(Box::new(error))
    }
}
