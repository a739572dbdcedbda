//! The control API: how the sidecar (or an operator's `curl`) drives a running host over
//! HTTP/JSON (feature `control-api`, off by default).
//!
//! A request goes through:
//!
//! 1. **route**: one table (`server::ROUTES`) makes both the router and the OpenAPI
//!    document ([`openapi`]), so neither can list a path the other lacks;
//! 2. **auth**: `Authorization: Bearer <token>`, compared in constant time with every client's
//!    token, read at start from a file that only its owner may read (`0600`; one token, of
//!    client `default`, or one `name token` line per client: see [`ControlConfig::token_file`]),
//!    on every transport ([`Listen`]): plain HTTP on a loopback address (the default), HTTP on
//!    a unix socket only the host's user can connect to (`0600`), or HTTPS
//!    ([`ControlConfig::tls`]), which a non-loopback address requires on top of
//!    [`ControlConfig::allow_remote`]. The request then carries its [`Client`] (an extension):
//!    the reconcile lease is held in the client's name, and the host logs every mutating
//!    request with it (field `client`);
//! 3. **body**: at most [`ControlConfig::max_json_bytes`] of JSON (requests refuse unknown
//!    fields), or [`ControlConfig::max_artifact_bytes`] of library bytes;
//! 4. **once per step**: a mutating operation (`install`, `switch`, `commit`, `rollback`,
//!    `unload`) runs through [`Runtime::once_per_step`](crate::Runtime::once_per_step) with the
//!    step id of its path, so a sidecar that retries after a crash gets the recorded response
//!    (same status, same body, header `x-plugsync-replayed: true`) and nothing is applied
//!    twice. Staging is idempotent by nature (content-addressed); `verify` and the reads
//!    mutate nothing;
//! 5. **runtime**: every runtime call runs on a blocking thread (`spawn_blocking`): it may
//!    run plugin code, wait for a slot, or fsync;
//! 6. **answer**: the result as JSON, or `{"error": {"code", "message"}}` with the runtime's
//!    stable [`HostError::code`](crate::HostError::code) and a message that says what to do.
//!
//! Staging checks, in order, before anything is written: the file name (nothing that could
//! leave the store), the size, the sha256 announced in the path, the metadata section, and,
//! when trusted keys are configured (the runtime's, [`LoadPolicy::trusted_keys`], and
//! [`ControlConfig::trusted_keys`]), the ed25519 signature of [`signature_payload`] in the
//! header `x-plugsync-signature`. The signature is kept beside the artifact, and the runtime
//! checks it again before every load.
//!
//! [`LoadPolicy::trusted_keys`]: crate::LoadPolicy::trusted_keys
//!
//! ```no_run
//! use plugsync_host::control::{ControlConfig, ControlServer};
//! use plugsync_host::{Runtime, RuntimeOptions};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::new(RuntimeOptions::new("/var/lib/host/store"))?;
//! let server = ControlServer::bind(runtime, ControlConfig::new("/etc/host/token")).await?;
//! println!("control API on {}", server.url());
//! server.serve(async { tokio::signal::ctrl_c().await.ok(); }).await?;
//! # Ok(()) }
//! ```

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;

pub mod api;
mod auth;
mod local;
mod openapi;
mod server;
mod transport;

/// The trusted keys live in the runtime (they guard every load, not only staging); re-exported
/// here for the control API's users.
pub use crate::keys::{TrustedKeys, signature_payload};
pub use auth::Client;
pub use axum::http::Method;
pub use local::{LocalAnswer, LocalControl, LocalRequest};
pub use openapi::{openapi, running_state_schema};
pub use server::ControlServer;
pub use transport::{InvalidListen, Listen, TlsFiles};

/// Where the control API listens unless told otherwise: `127.0.0.1:7077`.
pub const DEFAULT_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 7077));

/// How the control API is served.
#[derive(Debug, Clone)]
pub struct ControlConfig {
    /// Where to listen ([`DEFAULT_LISTEN`] by default): a TCP address or a unix socket. A
    /// non-loopback address is refused unless [`allow_remote`](ControlConfig::allow_remote) is
    /// set and [`tls`](ControlConfig::tls) given.
    pub listen: Listen,
    /// The file holding the clients' bearer tokens; it must be a regular file that only its
    /// owner can read or write (mode `0600` or stricter). Blank lines and lines starting with
    /// `#` aside, it holds either **one line of one field**, a token, whose client is named
    /// `default` ([`Client::DEFAULT`]), or **one line per client of two fields**, `name token`
    /// (a name is `[a-z0-9][a-z0-9_.-]{0,63}`; no two clients share a name or a token). Anything
    /// else refuses the start, naming the file and the line.
    pub token_file: PathBuf,
    /// Accept a non-loopback [`listen`](ControlConfig::listen) address (`--allow-remote`); it
    /// also needs [`tls`](ControlConfig::tls).
    pub allow_remote: bool,
    /// Serve HTTPS with this certificate and key (`--tls-cert`, `--tls-key`) on a TCP address;
    /// none: plain HTTP, on a loopback address or a unix socket only.
    pub tls: Option<TlsFiles>,
    /// Public keys whose signature an artifact must carry to be staged, in addition to the
    /// runtime's own ([`LoadPolicy::trusted_keys`](crate::LoadPolicy::trusted_keys), which are
    /// also checked before every load); none here and none there: signatures are not required.
    pub trusted_keys: TrustedKeys,
    /// The largest artifact accepted, in bytes (256 MiB by default).
    pub max_artifact_bytes: usize,
    /// The largest JSON request accepted, in bytes (4 MiB by default).
    pub max_json_bytes: usize,
    /// Serve `POST /v1/plugins/{plugin}/call` (`--allow-calls`): a plugin author feeding a
    /// plugin by hand. Off by default: in a trading host only the host's own inputs should
    /// change a plugin's state.
    pub allow_calls: bool,
}

impl ControlConfig {
    /// The defaults with the given token file: [`DEFAULT_LISTEN`], loopback only, plain HTTP,
    /// no trusted keys, artifacts up to 256 MiB, JSON requests up to 4 MiB.
    pub fn new(token_file: impl Into<PathBuf>) -> Self {
        ControlConfig {
            listen: Listen::Tcp(DEFAULT_LISTEN),
            token_file: token_file.into(),
            allow_remote: false,
            tls: None,
            trusted_keys: TrustedKeys::none(),
            max_artifact_bytes: 256 << 20,
            max_json_bytes: 4 << 20,
            allow_calls: false,
        }
    }
}

/// Why the control API could not start or stopped. Each message is lowercase and ends with
/// the fix.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The token file does not exist.
    #[error(
        "token file `{}` does not exist: create it with a random token, e.g. \
         `head -c 32 /dev/urandom | base64 > {0} && chmod 600 {0}`",
        .path.display()
    )]
    TokenFileMissing {
        /// The file.
        path: PathBuf,
    },

    /// The token file exists but cannot be read.
    #[error("cannot read token file `{}`: {source}; make it a readable file holding the token", .path.display())]
    TokenFileUnreadable {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },

    /// The token file is a directory, a socket, …
    #[error("token file `{}` is not a regular file: point the token file at a file holding the token", .path.display())]
    TokenFileNotRegular {
        /// The path.
        path: PathBuf,
    },

    /// Other users can read or write the token file.
    #[error(
        "token file `{}` has mode {mode:04o}, so other users can read or change it: run `chmod 600 {}`",
        .path.display(), .path.display()
    )]
    TokenFileTooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// The token file holds no token: only blank lines and comments.
    #[error(
        "token file `{}` is empty: write a random token into it, e.g. \
         `head -c 32 /dev/urandom | base64 > {0}`",
        .path.display()
    )]
    TokenFileEmpty {
        /// The file.
        path: PathBuf,
    },

    /// A line of the token file has more than two fields.
    #[error(
        "token file `{}:{line}` has {fields} fields: write one client per line as `name token` \
         (or, alone in the file, only a token: its client is named `default`)",
        .path.display()
    )]
    TokenFileMalformedLine {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// How many fields it has.
        fields: usize,
    },

    /// A line of only a token in a token file of more than one line.
    #[error(
        "token file `{}:{line}` holds only a token, but the file has other lines: write \
         `name token` on every line (a file whose only line is a token is read as the token of \
         client `default`)",
        .path.display()
    )]
    TokenFileLoneToken {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
    },

    /// A line of the token file names a client with a name that is not valid (not shown: it
    /// may be a token written first).
    #[error(
        "token file `{}:{line}` names a client with a name that is not valid: a name is 1 to 64 \
         of `a-z`, `0-9`, `_`, `.`, `-`, starting with a letter or a digit, and comes before the \
         token",
        .path.display()
    )]
    TokenFileBadName {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
    },

    /// Two lines of the token file name the same client.
    #[error(
        "token file `{}:{line}` names client `{name}` again (first on line {first_line}): give \
         each client one line, with its own name",
        .path.display()
    )]
    TokenFileDuplicateName {
        /// The file.
        path: PathBuf,
        /// The second line naming it, from 1.
        line: usize,
        /// The client's name.
        name: String,
        /// The first line naming it.
        first_line: usize,
    },

    /// Two clients of the token file have the same token: the host could not tell them apart.
    #[error(
        "token file `{}:{line}` gives client `{name}` the token of client `{other}` (line \
         {other_line}): two clients must never share a token; give each its own, e.g. \
         `head -c 32 /dev/urandom | base64`",
        .path.display()
    )]
    TokenFileDuplicateToken {
        /// The file.
        path: PathBuf,
        /// The line giving the token again, from 1.
        line: usize,
        /// The client of that line.
        name: String,
        /// The client that has the token already.
        other: String,
        /// Its line.
        other_line: usize,
    },

    /// A non-loopback listen address without `allow_remote`.
    #[error(
        "refusing to listen on `{listen}`: it is not a loopback address, and whoever reaches the \
         control API can change what the host runs; listen on `127.0.0.1` or a unix socket \
         (`--listen unix:PATH`), or pass `--allow-remote` with `--tls-cert FILE --tls-key FILE` \
         to accept other machines over HTTPS"
    )]
    RemoteBindRefused {
        /// The address asked for.
        listen: SocketAddr,
    },

    /// A non-loopback listen address without TLS: the bearer token would cross the network in
    /// clear.
    #[error(
        "refusing to serve plain HTTP on `{listen}`: it is not a loopback address, and the \
         bearer token would cross the network in clear; pass `--tls-cert FILE --tls-key FILE` \
         (PEM) to serve HTTPS, or listen on `127.0.0.1` or a unix socket (`--listen unix:PATH`)"
    )]
    RemoteWithoutTls {
        /// The address asked for.
        listen: SocketAddr,
    },

    /// TLS asked for on a unix socket, where the socket's mode (`0600`) already keeps others
    /// out.
    #[error(
        "refusing TLS on unix socket `{}`: only its owner can connect to it (mode 0600), so TLS \
         adds nothing; leave out `--tls-cert` and `--tls-key`, or listen on a TCP address",
        .path.display()
    )]
    TlsOnUnixSocket {
        /// The socket's path.
        path: PathBuf,
    },

    /// A TLS certificate or key file cannot be used.
    #[error(
        "cannot use `{}` as the control API's TLS {what}: {reason}; give a PEM file holding the \
         {what}",
        .path.display()
    )]
    TlsFile {
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
        /// What is wrong with it.
        reason: String,
    },

    /// Other users can read or write the TLS private key.
    #[error(
        "TLS private key `{}` has mode {mode:04o}, so other users can read or change it: run \
         `chmod 600 {}`",
        .path.display(), .path.display()
    )]
    TlsKeyTooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },

    /// The certificate and key do not make a TLS server configuration (e.g. the key is not the
    /// certificate's).
    #[error(
        "cannot serve TLS with certificate `{}` and key `{}`: {reason}; give the certificate's \
         own private key",
        .cert.display(), .key.display()
    )]
    TlsConfig {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// What rustls said.
        reason: String,
    },

    /// Something other than a socket is at the unix socket's path.
    #[error(
        "refusing to listen on `unix:{}`: the path exists and is not a socket; remove it, or \
         pick another path with `--listen unix:PATH`",
        .path.display()
    )]
    NotASocket {
        /// The path.
        path: PathBuf,
    },

    /// A server answers on the unix socket's path already.
    #[error(
        "refusing to listen on `unix:{}`: a server already listens on it; stop that host, or \
         pick another path with `--listen unix:PATH`",
        .path.display()
    )]
    SocketInUse {
        /// The path.
        path: PathBuf,
    },

    /// The listening socket could not be bound.
    #[error("cannot listen on `{listen}`: {source}; pick another address with `--listen`")]
    Bind {
        /// The address asked for.
        listen: Listen,
        /// The cause.
        source: std::io::Error,
    },

    /// The server stopped on an I/O error.
    #[error("the control API server failed: {source}; restart the host's control API")]
    Serve {
        /// The cause.
        source: std::io::Error,
    },
}
