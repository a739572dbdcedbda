//! How the control API is reached: plain HTTP on a loopback TCP address, HTTP on a unix domain
//! socket only its owner can connect to (`0600`), or HTTPS (rustls) on any TCP address.
//!
//! The bearer token is required on every transport; these only decide who can see it:
//!
//! - **plain HTTP** only on loopback: on any other address the token would cross the network
//!   in clear, so [`check_listen`] refuses it whatever `allow_remote` says;
//! - **a unix socket** is bound in a fresh `0700` directory, made `0600` there, then renamed
//!   to its path: nobody else can connect to it at any moment. A stale socket (no server
//!   answers on it) is replaced, anything else at the path is refused, and the socket file is
//!   removed when the server stops;
//! - **TLS** presents the certificate chain and key of [`TlsFiles`] (PEM); clients verify it
//!   against a CA they pin. Handshakes run concurrently, each within [`HANDSHAKE_TIMEOUT`], so
//!   a client that never finishes one holds up nobody else.

use std::fmt;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::server::TlsStream;

use super::ControlError;

/// How long a client may take to complete its TLS handshake.
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Where the control API listens: a TCP address, or a unix domain socket.
///
/// Parsed from `IP:PORT` (`127.0.0.1:7077`, `[::1]:0`) or `unix:PATH`
/// (`unix:/run/plugsync/control.sock`), and shown the same way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Listen {
    /// A TCP address. Plain HTTP is served on a loopback address only; any other address needs
    /// TLS ([`ControlConfig::tls`](super::ControlConfig::tls)) and
    /// [`allow_remote`](super::ControlConfig::allow_remote).
    Tcp(SocketAddr),
    /// A unix domain socket at this path, created with mode `0600` (only the host's user can
    /// connect) and removed when the server stops.
    Unix(PathBuf),
}

impl From<SocketAddr> for Listen {
    fn from(address: SocketAddr) -> Listen {
        Listen::Tcp(address)
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Listen::Tcp(address) => address.fmt(f),
            Listen::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

/// A `--listen` value that is neither `IP:PORT` nor `unix:PATH`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{given}` is not a listen address: give `IP:PORT` (e.g. `127.0.0.1:7077`) or \
     `unix:PATH` (e.g. `unix:/run/plugsync/control.sock`)"
)]
pub struct InvalidListen {
    /// What was given.
    pub given: String,
}

impl FromStr for Listen {
    type Err = InvalidListen;

    fn from_str(text: &str) -> Result<Listen, InvalidListen> {
        let invalid = || InvalidListen {
            given: text.to_owned(),
        };
        match text.strip_prefix("unix:") {
            Some("") => Err(invalid()),
            Some(path) => Ok(Listen::Unix(PathBuf::from(path))),
            None => text.parse().map(Listen::Tcp).map_err(|_| invalid()),
        }
    }
}

/// The certificate chain and private key a TLS listener presents, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The host's certificate, then its intermediates (PEM).
    pub cert: PathBuf,
    /// The certificate's private key (PEM: PKCS#8, PKCS#1 or SEC1); readable by its owner only.
    pub key: PathBuf,
}

/// Refuses a listen address on which the token could be seen or used by others: a non-loopback
/// address unless `allow_remote`, plain HTTP on one even then, and TLS on a unix socket (where
/// it protects nothing the socket's mode does not).
pub(crate) fn check_listen(
    listen: &Listen,
    allow_remote: bool,
    tls: bool,
) -> Result<(), ControlError> {
    match listen {
        Listen::Tcp(address) if !address.ip().is_loopback() => {
            if !allow_remote {
                Err(ControlError::RemoteBindRefused { listen: *address })
            } else if !tls {
                Err(ControlError::RemoteWithoutTls { listen: *address })
            } else {
                Ok(())
            }
        }
        Listen::Tcp(_) => Ok(()),
        Listen::Unix(path) if tls => Err(ControlError::TlsOnUnixSocket { path: path.clone() }),
        Listen::Unix(_) => Ok(()),
    }
}

// ---- TLS ----

/// The TLS server configuration from `files`: rustls with `ring`, TLS 1.2 and 1.3, no client
/// certificates (clients authenticate with the bearer token), HTTP/1.1.
pub(crate) fn tls_acceptor(files: &TlsFiles) -> Result<TlsAcceptor, ControlError> {
    let cert_error = |reason: String| ControlError::TlsFile {
        path: files.cert.clone(),
        what: "certificate",
        reason,
    };
    let key_error = |reason: String| ControlError::TlsFile {
        path: files.key.clone(),
        what: "private key",
        reason,
    };
    let pem = std::fs::read(&files.cert).map_err(|e| cert_error(e.to_string()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| cert_error(e.to_string()))?;
    if certs.is_empty() {
        return Err(cert_error("it holds no `CERTIFICATE` block".to_owned()));
    }
    // Like the token file: a key others can read is a key others may have. Checked on the
    // opened file, so it cannot change in between.
    let mut file = std::fs::File::open(&files.key).map_err(|e| key_error(e.to_string()))?;
    let mode = file
        .metadata()
        .map_err(|e| key_error(e.to_string()))?
        .permissions()
        .mode()
        & 0o7777;
    if mode & 0o077 != 0 {
        return Err(ControlError::TlsKeyTooOpen {
            path: files.key.clone(),
            mode,
        });
    }
    let mut pem = Vec::new();
    file.read_to_end(&mut pem)
        .map_err(|e| key_error(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            key_error("it holds no `PRIVATE KEY` block".to_owned())
        }
        e => key_error(e.to_string()),
    })?;
    // The provider is named, not taken from the process default: that default is ambiguous
    // (a panic) if another crate in the host enables a second provider.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| builder.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| ControlError::TlsConfig {
            cert: files.cert.clone(),
            key: files.key.clone(),
            reason: e.to_string(),
        })?;
    // The server speaks HTTP/1.1 only (axum's `http1`).
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// A TCP listener whose connections come out of their TLS handshake, for `axum::serve`.
///
/// A task accepts connections and runs each handshake on its own task (within
/// [`HANDSHAKE_TIMEOUT`]); finished ones queue here. Dropping the listener (the server stops)
/// stops accepting.
pub(crate) struct TlsListener {
    /// Connections whose handshake succeeded.
    incoming: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    /// The address bound.
    local_addr: SocketAddr,
    /// The accepting task, aborted on drop.
    accepting: tokio::task::JoinHandle<()>,
}

impl TlsListener {
    /// Serves TLS with `acceptor` on the bound `listener`. Must be called within a Tokio
    /// runtime.
    pub fn new(listener: TcpListener, local_addr: SocketAddr, acceptor: TlsAcceptor) -> Self {
        // A few connections may wait for the server to take them; beyond that the handshake
        // tasks wait (and hold their connection) rather than queue without bound.
        let (send, incoming) = tokio::sync::mpsc::channel(64);
        let accepting = tokio::spawn(accept_tls(listener, acceptor, send));
        TlsListener {
            incoming,
            local_addr,
            accepting,
        }
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.incoming.recv().await {
            Some(connection) => connection,
            // The accepting task ended (it only does when aborted): nothing comes any more.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local_addr)
    }
}

/// Accepts TCP connections and hands each to its own handshake task.
async fn accept_tls(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    done: tokio::sync::mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(connection) => connection,
            Err(error) => {
                // As axum does: a connection that failed while queued is that client's problem;
                // anything else (out of file descriptors) is waited out, not spun on.
                if !is_connection_error(&error) {
                    tracing::error!("control API: cannot accept a connection: {error}");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                continue;
            }
        };
        let (acceptor, done) = (acceptor.clone(), done.clone());
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    // Fails only when the server stopped: the connection is dropped.
                    let _ = done.send((tls, peer)).await;
                }
                Ok(Err(error)) => {
                    tracing::debug!(%peer, "control API: TLS handshake failed: {error}");
                }
                Err(_) => tracing::debug!(
                    %peer,
                    "control API: no TLS handshake within {} s: connection dropped",
                    HANDSHAKE_TIMEOUT.as_secs()
                ),
            }
        });
    }
}

/// An accept error that concerns one connection only.
fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind;
    matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    )
}

// ---- unix domain socket ----

/// The socket file of a unix listener, removed on drop if it is still the one bound (a later
/// host may have replaced it).
#[derive(Debug)]
pub(crate) struct SocketFile {
    /// Where it is.
    path: PathBuf,
    /// Its device and inode, to know it from a replacement.
    id: (u64, u64),
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        match std::fs::symlink_metadata(&self.path) {
            Ok(metadata) if (metadata.dev(), metadata.ino()) == self.id => {
                if let Err(error) = std::fs::remove_file(&self.path) {
                    tracing::warn!(
                        path = %self.path.display(),
                        "cannot remove the control API's socket file: {error}"
                    );
                }
            }
            _ => {}
        }
    }
}

/// Binds a unix socket at `path` that only this user can connect to, replacing a stale socket
/// (one no server answers on). Must be called within a Tokio runtime.
pub(crate) fn bind_unix(
    path: &Path,
) -> Result<(tokio::net::UnixListener, SocketFile), ControlError> {
    let bind_error = |source| ControlError::Bind {
        listen: Listen::Unix(path.to_owned()),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(metadata) if metadata.file_type().is_socket() => {
            match std::os::unix::net::UnixStream::connect(path) {
                Ok(_) => {
                    return Err(ControlError::SocketInUse {
                        path: path.to_owned(),
                    });
                }
                // Nobody listens: a socket left by a host that died. The rename below replaces
                // it in one step.
                Err(error) if error.kind() == std::io::ErrorKind::ConnectionRefused => {
                    tracing::info!(path = %path.display(), "replacing a stale control API socket");
                }
                Err(error) => return Err(bind_error(error)),
            }
        }
        Ok(_) => {
            return Err(ControlError::NotASocket {
                path: path.to_owned(),
            });
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(bind_error(error)),
    }

    // Bound inside a directory only we can enter, made 0600 there, then moved into place: a
    // socket bound at its path directly would be connectable with the umask's mode until a
    // chmod, and changing the umask would change it for every thread of the host.
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let private = parent.join(format!(
        ".plugsync-bind-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(bind_error)?;
    let inside = private.join("s");
    let bound = (|| {
        let listener = tokio::net::UnixListener::bind(&inside)?;
        std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&inside, path)?;
        let metadata = std::fs::symlink_metadata(path)?;
        Ok((listener, (metadata.dev(), metadata.ino())))
    })();
    // Empty once the socket moved; on failure, the socket goes with it.
    let _ = std::fs::remove_file(&inside);
    let _ = std::fs::remove_dir(&private);
    let (listener, id) = bound.map_err(bind_error)?;
    Ok((
        listener,
        SocketFile {
            path: path.to_owned(),
            id,
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses_parse_and_show_the_same() {
        for text in [
            "127.0.0.1:7077",
            "[::1]:0",
            "unix:/run/p/control.sock",
            "unix:c.sock",
        ] {
            let listen: Listen = text.parse().unwrap();
            assert_eq!(listen.to_string(), text);
        }
        assert_eq!(
            "unix:/a b".parse::<Listen>().unwrap(),
            Listen::Unix(PathBuf::from("/a b"))
        );
        for bad in [
            "",
            "unix:",
            "localhost:7077",
            "/run/control.sock",
            "127.0.0.1",
        ] {
            assert_eq!(
                bad.parse::<Listen>().unwrap_err().to_string(),
                format!(
                    "`{bad}` is not a listen address: give `IP:PORT` (e.g. `127.0.0.1:7077`) or \
                     `unix:PATH` (e.g. `unix:/run/plugsync/control.sock`)"
                )
            );
        }
    }

    #[test]
    fn plain_http_only_on_loopback_tls_only_on_tcp() {
        let cases = [
            ("127.0.0.1:7077", false, false, Ok(())),
            ("[::1]:7077", false, false, Ok(())),
            ("127.0.0.1:7077", false, true, Ok(())),
            ("0.0.0.0:7077", false, false, Err("RemoteBindRefused")),
            ("192.0.2.1:7077", false, true, Err("RemoteBindRefused")),
            ("0.0.0.0:7077", true, false, Err("RemoteWithoutTls")),
            ("0.0.0.0:7077", true, true, Ok(())),
            ("unix:/tmp/c.sock", false, false, Ok(())),
            ("unix:/tmp/c.sock", true, false, Ok(())),
            ("unix:/tmp/c.sock", false, true, Err("TlsOnUnixSocket")),
        ];
        for (listen, allow_remote, tls, expected) in cases {
            let listen: Listen = listen.parse().unwrap();
            let got = check_listen(&listen, allow_remote, tls).map_err(|e| {
                let name = format!("{e:?}");
                name[..name
                    .find(|c: char| !c.is_alphanumeric())
                    .unwrap_or(name.len())]
                    .to_owned()
            });
            assert_eq!(
                got.as_ref().map(|_| ()).map_err(String::as_str),
                expected,
                "{listen} {allow_remote} {tls}"
            );
        }
    }
}
