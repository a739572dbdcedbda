//! The control API through a real server on 127.0.0.1 (or a unix socket in a temporary
//! directory) and a real HTTP client, with the real plugin libraries of the workspace.
//!
//! The schema files under `schemas/` are checked here too; refresh them on purpose with
//! `PLUGSYNC_BLESS=1 cargo test -p plugsync-host --features control-api --test control_api`
//! and review the diff.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ed25519_dalek::{Signer, SigningKey};
use plugsync_host::control::api::{API_VERSION, ApiInfo, Capability};
use plugsync_host::control::{
    ControlConfig, ControlError, ControlServer, Listen, TlsFiles, TrustedKeys, openapi,
    running_state_schema, signature_payload,
};
use plugsync_host::{Digest, Runtime, RuntimeOptions, SwapMode, SwapRequest};
use reqwest::StatusCode;
use serde_json::{Value, json};

mod support;

use support::*;

// ---- refusals at start ----

async fn bind_error(configure: impl FnOnce(&mut ControlConfig)) -> String {
    let dir = tempfile::tempdir().unwrap();
    let runtime = Runtime::new(RuntimeOptions::new(dir.path().join("store"))).unwrap();
    let mut config = ControlConfig::new(dir.path().join("token"));
    config.listen = "127.0.0.1:0".parse().unwrap();
    configure(&mut config);
    ControlServer::bind(runtime, config)
        .await
        .expect_err("the server must not start")
        .to_string()
}

#[tokio::test]
async fn token_files_that_are_missing_open_or_empty_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    let shown = path.display().to_string();

    let missing = path.clone();
    assert_eq!(
        bind_error(|c| c.token_file = missing).await,
        format!(
            "token file `{shown}` does not exist: create it with a random token, e.g. `head -c \
             32 /dev/urandom | base64 > {shown} && chmod 600 {shown}`"
        )
    );

    std::fs::write(&path, "s3cret\n").unwrap();
    for mode in [0o644, 0o640, 0o604, 0o620] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let open = path.clone();
        assert_eq!(
            bind_error(|c| c.token_file = open).await,
            format!(
                "token file `{shown}` has mode {mode:04o}, so other users can read or change it: \
                 run `chmod 600 {shown}`"
            )
        );
    }

    std::fs::write(&path, " \n\t\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let empty = path.clone();
    assert_eq!(
        bind_error(|c| c.token_file = empty).await,
        format!(
            "token file `{shown}` is empty: write a random token into it, e.g. `head -c 32 \
             /dev/urandom | base64 > {shown}`"
        )
    );

    let directory = dir.path().join("a-directory");
    std::fs::create_dir(&directory).unwrap();
    std::fs::set_permissions(&directory, std::fs::Permissions::from_mode(0o700)).unwrap();
    let shown_dir = directory.display().to_string();
    assert_eq!(
        bind_error(|c| c.token_file = directory).await,
        format!(
            "token file `{shown_dir}` is not a regular file: point the token file at a file \
             holding the token"
        )
    );
}

#[tokio::test]
async fn a_token_file_of_named_clients_with_a_bad_line_is_refused_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokens");
    let shown = path.display().to_string();
    for (text, expected) in [
        (
            "# who drives this host\nsidecar s1\nlaptop s1\n",
            format!(
                "token file `{shown}:3` gives client `laptop` the token of client `sidecar` \
                 (line 2): two clients must never share a token; give each its own, e.g. `head \
                 -c 32 /dev/urandom | base64`"
            ),
        ),
        (
            "sidecar s1\n\nsidecar s2\n",
            format!(
                "token file `{shown}:3` names client `sidecar` again (first on line 1): give \
                 each client one line, with its own name"
            ),
        ),
        (
            "sidecar s1\nlaptop l2 l3\n",
            format!(
                "token file `{shown}:2` has 3 fields: write one client per line as `name token` \
                 (or, alone in the file, only a token: its client is named `default`)"
            ),
        ),
    ] {
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let tokens = path.clone();
        assert_eq!(
            bind_error(|c| c.token_file = tokens).await,
            expected,
            "{text:?}"
        );
    }
}

#[tokio::test]
async fn a_non_loopback_address_is_refused_unless_remote_access_is_allowed_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path());
    let shown = token.clone();
    assert_eq!(
        bind_error(|c| {
            c.token_file = shown;
            c.listen = "0.0.0.0:0".parse().unwrap();
        })
        .await,
        "refusing to listen on `0.0.0.0:0`: it is not a loopback address, and whoever reaches the \
         control API can change what the host runs; listen on `127.0.0.1` or a unix socket \
         (`--listen unix:PATH`), or pass `--allow-remote` with `--tls-cert FILE --tls-key FILE` \
         to accept other machines over HTTPS"
    );
    // Allowed, but over plain HTTP: the token would cross the network in clear.
    let shown = token.clone();
    assert_eq!(
        bind_error(|c| {
            c.token_file = shown;
            c.listen = "0.0.0.0:0".parse().unwrap();
            c.allow_remote = true;
        })
        .await,
        "refusing to serve plain HTTP on `0.0.0.0:0`: it is not a loopback address, and the \
         bearer token would cross the network in clear; pass `--tls-cert FILE --tls-key FILE` \
         (PEM) to serve HTTPS, or listen on `127.0.0.1` or a unix socket (`--listen unix:PATH`)"
    );
    // Allowed on purpose and over TLS, it binds (and is dropped at once: nothing is sent to it).
    let pki = Pki::new(dir.path());
    let runtime = Runtime::new(RuntimeOptions::new(dir.path().join("store"))).unwrap();
    let mut config = ControlConfig::new(token);
    config.listen = "0.0.0.0:0".parse().unwrap();
    config.allow_remote = true;
    config.tls = Some(pki.host_files());
    let server = ControlServer::bind(runtime, config).await.unwrap();
    assert!(server.local_addr().unwrap().ip().is_unspecified());
    assert!(server.url().starts_with("https://0.0.0.0:"), "{server:?}");
}

// ---- transports: unix socket, TLS ----

/// A server bound with `config` over a fresh runtime in `dir`, serving until the sender fires.
async fn serve(
    dir: &Path,
    config: ControlConfig,
) -> (
    String,
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Result<(), ControlError>>,
) {
    let runtime = Runtime::new(RuntimeOptions::new(dir.join("store"))).unwrap();
    let server = ControlServer::bind(runtime, config).await.unwrap();
    let url = server.url().to_owned();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(server.serve(async {
        stopped.await.ok();
    }));
    (url, stop, served)
}

/// `GET /v1/status` through `client` at `base`, with the token or without; the status and the
/// body.
async fn get_status(client: &reqwest::Client, base: &str, token: bool) -> (StatusCode, Value) {
    let mut request = client.get(format!("{base}/v1/status"));
    if token {
        request = request.bearer_auth(TOKEN);
    }
    let response = request.send().await.unwrap();
    (response.status(), response.json().await.unwrap())
}

/// A client of the unix socket at `path` (the URL's host is not used).
fn unix_client(path: &Path) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .unix_socket(path)
        .build()
        .unwrap()
}

fn mode(path: &Path) -> u32 {
    std::fs::symlink_metadata(path)
        .unwrap()
        .permissions()
        .mode()
        & 0o7777
}

#[tokio::test]
async fn a_unix_socket_is_private_to_its_owner_answers_with_the_token_only_and_goes_at_stop() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("control.sock");
    let mut config = ControlConfig::new(token_file(dir.path()));
    config.listen = Listen::Unix(socket.clone());
    let (url, stop, served) = serve(dir.path(), config).await;
    assert_eq!(url, format!("unix:{}", socket.display()));

    let metadata = std::fs::symlink_metadata(&socket).unwrap();
    assert!(metadata.file_type().is_socket());
    assert_eq!(mode(&socket), 0o600, "only the host's user may connect");
    // The directory it was bound in is gone.
    let mut names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, ["control.sock", "store", "token"]);

    let client = unix_client(&socket);
    let (status, body) = get_status(&client, "http://localhost", true).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["plugins"], json!([]));
    let (status, body) = get_status(&client, "http://localhost", false).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"]["code"], "unauthorized");

    stop.send(()).unwrap();
    served.await.unwrap().unwrap();
    assert!(
        std::fs::symlink_metadata(&socket).is_err(),
        "a clean stop removes the socket file"
    );
}

#[tokio::test]
async fn a_stale_socket_is_replaced_and_a_live_one_or_a_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path());
    let socket = dir.path().join("control.sock");
    let unix = |path: &Path| {
        let mut config = ControlConfig::new(token.clone());
        config.listen = Listen::Unix(path.to_owned());
        config
    };
    // A socket nobody listens on any more, as a killed host leaves it (world-connectable).
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o777)).unwrap();
    let (_, stop, served) = serve(dir.path(), unix(&socket)).await;
    assert_eq!(mode(&socket), 0o600);
    let (status, _) = get_status(&unix_client(&socket), "http://localhost", true).await;
    assert_eq!(status, StatusCode::OK);

    // A live one is not taken over.
    let shown = socket.display();
    let runtime = Runtime::new(RuntimeOptions::new(dir.path().join("store2"))).unwrap();
    let error = ControlServer::bind(runtime.clone(), unix(&socket))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "refusing to listen on `unix:{shown}`: a server already listens on it; stop that \
             host, or pick another path with `--listen unix:PATH`"
        )
    );
    let (status, _) = get_status(&unix_client(&socket), "http://localhost", true).await;
    assert_eq!(status, StatusCode::OK, "the running server still answers");
    stop.send(()).unwrap();
    served.await.unwrap().unwrap();

    // Anything else at the path is left alone.
    std::fs::write(&socket, "not a socket").unwrap();
    let error = ControlServer::bind(runtime.clone(), unix(&socket))
        .await
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "refusing to listen on `unix:{shown}`: the path exists and is not a socket; remove \
             it, or pick another path with `--listen unix:PATH`"
        )
    );
    assert_eq!(std::fs::read_to_string(&socket).unwrap(), "not a socket");

    // TLS on a unix socket protects nothing its mode does not.
    let pki = Pki::new(dir.path());
    let mut config = unix(&dir.path().join("other.sock"));
    config.tls = Some(pki.host_files());
    let error = ControlServer::bind(runtime, config).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "refusing TLS on unix socket `{}`: only its owner can connect to it (mode 0600), so \
             TLS adds nothing; leave out `--tls-cert` and `--tls-key`, or listen on a TCP address",
            dir.path().join("other.sock").display()
        )
    );
}

/// A CA, a host certificate it signed (for `localhost` and `127.0.0.1`), and another CA, as
/// PEM files in a directory.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let key = KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            (cert.pem(), Issuer::new(params, key))
        };
        let (ca_pem, issuer) = ca("plugsync test CA");
        let (other_pem, _) = ca("another CA");
        let key = KeyPair::generate().unwrap();
        let host = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let dir = dir.join("pki");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.pem"), ca_pem).unwrap();
        std::fs::write(dir.join("other-ca.pem"), other_pem).unwrap();
        std::fs::write(dir.join("host.pem"), host.pem()).unwrap();
        std::fs::write(dir.join("host.key"), key.serialize_pem()).unwrap();
        std::fs::set_permissions(dir.join("host.key"), std::fs::Permissions::from_mode(0o600))
            .unwrap();
        Pki { dir }
    }

    fn host_files(&self) -> TlsFiles {
        TlsFiles {
            cert: self.dir.join("host.pem"),
            key: self.dir.join("host.key"),
        }
    }

    /// A client that trusts only the CA in `file` (`ca.pem` or `other-ca.pem`).
    fn client(&self, file: &str) -> reqwest::Client {
        let pem = std::fs::read(self.dir.join(file)).unwrap();
        reqwest::Client::builder()
            .no_proxy()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .build()
            .unwrap()
    }
}

#[tokio::test]
async fn tls_serves_clients_that_pin_its_ca_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new(dir.path());
    let mut config = ControlConfig::new(token_file(dir.path()));
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.tls = Some(pki.host_files());
    let (url, stop, served) = serve(dir.path(), config).await;
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");
    let port = url.rsplit(':').next().unwrap();

    let pinned = pki.client("ca.pem");
    for base in [url.clone(), format!("https://localhost:{port}")] {
        let (status, body) = get_status(&pinned, &base, true).await;
        assert_eq!(status, StatusCode::OK, "{base}: {body}");
        let (status, _) = get_status(&pinned, &base, false).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{base}");
    }

    // Pinned to another CA: the handshake fails, no request (nor token) is sent.
    let error = pki
        .client("other-ca.pem")
        .get(format!("{url}/v1/status"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap_err();
    let mut chain = format!("{error:?}");
    let mut source: Option<&dyn std::error::Error> = Some(&error);
    while let Some(e) = source {
        chain.push_str(&format!(" / {e}"));
        source = e.source();
    }
    assert!(chain.contains("UnknownIssuer"), "{chain}");

    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::Client::builder().no_proxy().build().unwrap();
    let http = url.replacen("https://", "http://", 1);
    assert!(
        plain
            .get(format!("{http}/v1/status"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .is_err()
    );

    // A client that connects and never says hello holds up nobody.
    let _silent = tokio::net::TcpStream::connect(url.trim_start_matches("https://"))
        .await
        .unwrap();
    let (status, _) = get_status(&pinned, &url, true).await;
    assert_eq!(status, StatusCode::OK);

    stop.send(()).unwrap();
    served.await.unwrap().unwrap();
}

#[tokio::test]
async fn tls_files_that_are_missing_open_or_mismatched_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path());
    let pki = Pki::new(dir.path());
    let with = |tls: TlsFiles| {
        let token = token.clone();
        move |c: &mut ControlConfig| {
            c.token_file = token;
            c.tls = Some(tls);
        }
    };
    let files = pki.host_files();
    let (cert, key) = (files.cert.display(), files.key.display());

    let missing = dir.path().join("missing.pem");
    assert_eq!(
        bind_error(with(TlsFiles {
            cert: missing.clone(),
            key: files.key.clone(),
        }))
        .await,
        format!(
            "cannot use `{}` as the control API's TLS certificate: No such file or directory \
             (os error 2); give a PEM file holding the certificate",
            missing.display()
        )
    );
    assert_eq!(
        bind_error(with(TlsFiles {
            cert: files.key.clone(),
            key: files.key.clone(),
        }))
        .await,
        format!(
            "cannot use `{key}` as the control API's TLS certificate: it holds no `CERTIFICATE` \
             block; give a PEM file holding the certificate"
        )
    );
    let no_key = dir.path().join("no.key");
    std::fs::write(&no_key, "").unwrap();
    std::fs::set_permissions(&no_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        bind_error(with(TlsFiles {
            cert: files.cert.clone(),
            key: no_key.clone(),
        }))
        .await,
        format!(
            "cannot use `{}` as the control API's TLS private key: it holds no `PRIVATE KEY` \
             block; give a PEM file holding the private key",
            no_key.display()
        )
    );
    assert_eq!(
        bind_error(with(TlsFiles {
            cert: files.cert.clone(),
            key: files.cert.clone(),
        }))
        .await,
        format!(
            "TLS private key `{cert}` has mode 0644, so other users can read or change it: run \
             `chmod 600 {cert}`"
        )
    );
    // A key that is not the certificate's.
    let other_key = dir.path().join("other.key");
    std::fs::write(
        &other_key,
        rcgen::KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    std::fs::set_permissions(&other_key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let error = bind_error(with(TlsFiles {
        cert: files.cert.clone(),
        key: other_key.clone(),
    }))
    .await;
    assert!(
        error.starts_with(&format!(
            "cannot serve TLS with certificate `{cert}` and key `{}`: ",
            other_key.display()
        )) && error.ends_with("; give the certificate's own private key"),
        "{error}"
    );
}

// ---- authentication and routing ----

#[tokio::test]
async fn requests_without_the_token_are_refused() {
    let host = Host::start().await;
    let url = format!("{}/v1/status", host.url);
    let cases = [
        (
            None,
            "missing bearer token: send `Authorization: Bearer <token>` with the token from the \
             host's token file",
        ),
        (
            Some("Basic dDBrZW4="),
            "missing bearer token: send `Authorization: Bearer <token>` with the token from the \
             host's token file",
        ),
        (
            Some("Bearer not-the-token"),
            "wrong bearer token: send the token from the host's token file (it is read when the \
             host starts)",
        ),
        (
            Some("Bearer t0ken-for-test"),
            "wrong bearer token: send the token from the host's token file (it is read when the \
             host starts)",
        ),
    ];
    for (authorization, message) in cases {
        let mut request = host.client.get(&url);
        if let Some(authorization) = authorization {
            request = request.header("authorization", authorization);
        }
        let answer = Answer::read(request.send().await.unwrap()).await;
        assert_eq!(answer.status, StatusCode::UNAUTHORIZED, "{authorization:?}");
        assert_eq!(
            answer.body,
            json!({"error": {"code": "unauthorized", "message": message}}),
            "{authorization:?}"
        );
        assert_eq!(answer.headers["www-authenticate"], "Bearer");
    }
    // A mutating request without the token does nothing.
    let answer = Answer::read(
        host.client
            .post(format!("{}/v1/steps/s1/unload", host.url))
            .json(&json!({"plugin": "ma_cross"}))
            .send()
            .await
            .unwrap(),
    )
    .await;
    answer.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    host.get("/v1/status").await.expect_ok();
    host.shutdown().await;
}

/// The host's log lines that one thread captures, as text.
///
/// One subscriber serves the whole binary (installed by the first capture) and writes each line
/// to the capture of the thread that logs it, if any: a subscriber set per thread would miss
/// events whose callsite another test's thread met first (tracing caches a callsite's interest
/// for every thread). The tests' runtime runs the server's tasks on the test's thread.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

thread_local! {
    static CAPTURED: std::cell::RefCell<Option<Logs>> = const { std::cell::RefCell::new(None) };
}

impl std::io::Write for Logs {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes to the capture of the logging thread (or nowhere).
struct ToCapture;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for ToCapture {
    type Writer = Logs;

    fn make_writer(&'a self) -> Logs {
        CAPTURED.with(|captured| captured.borrow().clone().unwrap_or_default())
    }
}

impl Logs {
    /// Captures what this thread logs from now on.
    fn capture() -> Logs {
        static SUBSCRIBER: std::sync::Once = std::sync::Once::new();
        SUBSCRIBER.call_once(|| {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(ToCapture)
                .with_ansi(false)
                .without_time()
                .with_target(false)
                .finish();
            tracing::subscriber::set_global_default(subscriber)
                .expect("no other subscriber in this test binary");
        });
        let logs = Logs::default();
        CAPTURED.with(|captured| *captured.borrow_mut() = Some(logs.clone()));
        logs
    }

    /// The lines logged so far that contain `text`.
    fn lines_with(&self, text: &str) -> Vec<String> {
        let logged = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        logged
            .lines()
            .filter(|line| line.contains(text))
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test]
async fn each_client_has_its_own_token_and_every_mutating_request_is_logged_with_its_name() {
    let logs = Logs::capture();
    let host = Host::start_with_clients(&CLIENTS).await;
    for token in [TOKEN, LAPTOP_TOKEN, OPS_TOKEN] {
        host.as_client(token).get("/v1/status").await.expect_ok();
    }
    // A name is not a token, nor is `name token`.
    for wrong in ["laptop", &format!("laptop {LAPTOP_TOKEN}")] {
        let refused = host.as_client(wrong).get("/v1/status").await;
        refused.expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    let laptop = host.as_client(LAPTOP_TOKEN);
    laptop
        .post("/v1/lease", json!({"action": "acquire", "ttl_ms": 1_000}))
        .await
        .expect_ok();
    // Logged whatever its answer: this one is refused (nothing is loaded).
    laptop
        .post_with_epoch("/v1/steps/s1/unload", json!({"plugin": "ma_cross"}), 1)
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_loaded");
    host.shutdown().await;

    let requests = logs.lines_with("control API request");
    assert_eq!(requests.len(), 2, "{requests:#?}");
    for (line, (path, status)) in requests
        .iter()
        .zip([("/v1/lease", 200), ("/v1/steps/s1/unload", 404)])
    {
        for field in [
            "client=laptop".to_owned(),
            "method=POST".to_owned(),
            format!("path=\"{path}\""),
            format!("status={status}"),
        ] {
            assert!(line.contains(&field), "no `{field}` in {line}");
        }
    }
    let listening = logs.lines_with("control API listening");
    assert!(
        listening[0].contains("clients=sidecar, laptop, ops"),
        "{listening:?}"
    );
    for token in [TOKEN, LAPTOP_TOKEN, OPS_TOKEN] {
        assert!(logs.lines_with(token).is_empty(), "a token was logged");
    }
}

#[tokio::test]
async fn every_documented_route_is_served_and_behind_the_token() {
    let host = Host::start().await;
    let document = openapi();
    let paths = document["paths"].as_object().unwrap();
    assert_eq!(
        paths.keys().map(String::as_str).collect::<Vec<_>>(),
        [
            "/v1/artifacts/{sha256}",
            "/v1/artifacts/{sha256}/{file_name}",
            "/v1/lease",
            "/v1/plugins/{plugin}/call",
            "/v1/plugins/{plugin}/state",
            "/v1/restraints",
            "/v1/status",
            "/v1/steps/{step_id}/commit",
            "/v1/steps/{step_id}/install",
            "/v1/steps/{step_id}/restore",
            "/v1/steps/{step_id}/rollback",
            "/v1/steps/{step_id}/switch",
            "/v1/steps/{step_id}/unload",
            "/v1/steps/{step_id}/verify",
        ]
    );
    let digest = Digest::of(b"x").to_string();
    for (template, item) in paths {
        let path = template
            .replace("{sha256}", &digest)
            .replace("{file_name}", "lib.so")
            .replace("{plugin}", "ma_cross")
            .replace("{step_id}", "s1");
        for method in item.as_object().unwrap().keys() {
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = host
                .client
                .request(method.clone(), format!("{}{path}", host.url))
                .send()
                .await
                .unwrap();
            // Routed (not 404/405) and refused before anything ran.
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{method} {path}"
            );
        }
    }
    let answer = host.get("/v1/no-such-route").await;
    let message = answer.expect_error(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(
        message,
        "no route `/v1/no-such-route`: the routes are listed in the control API's OpenAPI document"
    );
    let answer = host.get("/v1/steps/s1/commit").await;
    answer.expect_error(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed");
    host.shutdown().await;
}

// ---- staging ----

#[tokio::test]
async fn a_wrong_digest_stages_nothing() {
    let host = Host::start().await;
    let (bytes, file) = library(MA_CROSS_1_0_0);
    let wrong = Digest::of(b"other bytes");
    let answer = host
        .put(&wrong.to_string(), &file, bytes.clone(), None)
        .await;
    let message = answer.expect_error(StatusCode::BAD_REQUEST, "digest_mismatch");
    assert!(
        message.starts_with(&format!(
            "sha256 mismatch for `{file}`: expected {wrong}, got {}",
            Digest::of(&bytes)
        )),
        "{message}"
    );
    assert_eq!(host.stored_files(), Vec::<String>::new());

    let answer = host.put("not-a-digest", &file, bytes, None).await;
    let message = answer.expect_error(StatusCode::BAD_REQUEST, "bad_digest");
    assert_eq!(
        message,
        "`not-a-digest` is not a sha256 digest: expected 64 hex digits: put the artifact's sha256 \
         in the path"
    );
    assert_eq!(host.stored_files(), Vec::<String>::new());
    host.shutdown().await;
}

/// `HEAD path` with the token: its status and body (none, ever).
async fn head(host: &Host, path: &str) -> (StatusCode, String) {
    let response = host
        .client
        .head(format!("{}{path}", host.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    (response.status(), response.text().await.unwrap())
}

#[tokio::test]
async fn a_client_learns_whether_the_store_has_an_artifact_before_staging_it() {
    let host = Host::start().await;
    let (bytes, file) = library(MA_CROSS_1_0_0);
    let digest = Digest::of(&bytes);
    let path = format!("/v1/artifacts/{digest}");

    let missing = host.get(&path).await;
    let message = missing.expect_error(StatusCode::NOT_FOUND, "unknown_artifact");
    assert_eq!(
        message,
        format!("no artifact {digest} in the store: stage it first")
    );
    assert_eq!(
        head(&host, &path).await,
        (StatusCode::NOT_FOUND, String::new())
    );

    host.stage(MA_CROSS_1_0_0).await;
    let present = host.get(&path).await;
    assert_eq!(
        present.expect_ok(),
        &json!({"sha256": digest, "file": file, "size": bytes.len(), "signed": false})
    );
    assert_eq!(head(&host, &path).await, (StatusCode::OK, String::new()));

    // A file that no longer holds its digest's bytes is not the artifact: staging repairs it.
    let stored = host.artifacts().join(digest.to_string()).join(&file);
    std::fs::set_permissions(&stored, std::fs::Permissions::from_mode(0o600)).unwrap();
    std::fs::write(&stored, b"not the library").unwrap();
    let corrupt = host.get(&path).await;
    let message = corrupt.expect_error(StatusCode::NOT_FOUND, "unknown_artifact");
    assert!(
        message.starts_with(&format!(
            "artifact {digest} is in the store but cannot be used (sha256 mismatch for `"
        )),
        "{message}"
    );
    assert!(
        message.ends_with("): stage it again (the right bytes repair it)"),
        "{message}"
    );
    assert_eq!(
        head(&host, &path).await,
        (StatusCode::NOT_FOUND, String::new())
    );
    host.put(&digest.to_string(), &file, bytes, None)
        .await
        .expect_ok();
    host.get(&path).await.expect_ok();

    let answer = host.get("/v1/artifacts/not-a-digest").await;
    let message = answer.expect_error(StatusCode::BAD_REQUEST, "bad_digest");
    assert_eq!(
        message,
        "`not-a-digest` is not a sha256 digest: expected 64 hex digits: put the artifact's sha256 \
         in the path"
    );
    host.shutdown().await;
}

#[tokio::test]
async fn names_that_could_leave_the_store_are_refused() {
    let host = Host::start().await;
    let (bytes, _) = library(MA_CROSS_1_0_0);
    let digest = Digest::of(&bytes).to_string();
    // Percent-encoded as sent; the server decodes before checking.
    let cases = [
        ("..%2Fx.so", "../x.so"),
        ("..%2F..%2F..%2Ftmp%2Fx.so", "../../../tmp/x.so"),
        ("%2Fetc%2Fx.so", "/etc/x.so"),
        (".hidden.so", ".hidden.so"),
        ("..%5Cx.so", "..\\x.so"),
        ("x%00.so", "x\0.so"),
    ];
    for (sent, decoded) in cases {
        let answer = host.put(&digest, sent, bytes.clone(), None).await;
        let message = answer.expect_error(StatusCode::BAD_REQUEST, "bad_artifact_name");
        assert_eq!(
            message,
            format!(
                "artifact name `{decoded}` is not a plain file name: use a name without `/`, \
                 `\\`, `..` or a leading `.`"
            ),
            "{sent}"
        );
    }
    assert_eq!(host.stored_files(), Vec::<String>::new());
    assert!(!host.dir.path().join("store/x.so").exists());
    assert!(!host.dir.path().join("x.so").exists());
    host.shutdown().await;
}

#[tokio::test]
async fn bodies_over_the_limits_get_413_and_change_nothing() {
    let host = Host::start_with(|config, _| {
        config.max_artifact_bytes = 64 << 10;
        config.max_json_bytes = 1 << 10;
    })
    .await;
    let big = vec![0x7f; 200 << 10];
    let answer = host
        .put(&Digest::of(&big).to_string(), "libbig.so", big, None)
        .await;
    let message = answer.expect_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    assert_eq!(
        message,
        "the artifact is larger than the 65536 bytes this host accepts: send less, or raise the \
         host's limit"
    );
    assert_eq!(host.stored_files(), Vec::<String>::new());

    let padding = "x".repeat(4 << 10);
    let body = json!({"artifact": Digest::of(b"x"), "config": {"padding": padding}});
    let answer = host.post("/v1/steps/big-1/install", body).await;
    answer.expect_error(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large");
    assert!(!answer.replayed());
    // Refused before the step ran: nothing is recorded under its id.
    assert!(!host.dir.path().join("store/steps/big-1").exists());
    host.shutdown().await;
}

#[tokio::test]
async fn with_trusted_keys_only_a_trusted_signature_stages() {
    let trusted = SigningKey::from_bytes(&[7; 32]);
    let stranger = SigningKey::from_bytes(&[9; 32]);
    let host = Host::start_with(|config, dir| {
        let keys = dir.join("trusted.keys");
        let public: String = trusted
            .verifying_key()
            .as_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        std::fs::write(&keys, format!("# the release key\n{public}\n")).unwrap();
        config.trusted_keys = TrustedKeys::load(&keys).unwrap();
    })
    .await;
    let (bytes, file) = library(MA_CROSS_1_0_0);
    let digest = Digest::of(&bytes);
    let sign = |key: &SigningKey, version: &str| -> String {
        let payload = signature_payload("ma_cross", version, &digest);
        key.sign(&payload)
            .to_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    };
    let short = &digest.to_string()[..12];
    let untrusted = format!(
        "the signature of `ma_cross` 1.0.0 ({short}) in `x-plugsync-signature` was not made by a \
         key this host trusts: sign the artifact's id, version and sha256 with a trusted key (or \
         add the publisher's public key to the host's trusted keys); nothing was written"
    );
    let cases = [
        (
            None,
            "signature_required",
            format!(
                "`ma_cross` 1.0.0 ({short}) carries no signature, and this host only stages \
                 artifacts signed by a key it trusts: send the publisher's signature in \
                 `x-plugsync-signature`; nothing was written"
            ),
        ),
        (
            Some("abcd".to_owned()),
            "bad_signature",
            untrusted.replace(
                "was not made by a key this host trusts",
                "is not 128 hex digits",
            ),
        ),
        (
            Some(sign(&stranger, "1.0.0")),
            "bad_signature",
            untrusted.clone(),
        ),
        // A trusted signature of other metadata does not carry over.
        (
            Some(sign(&trusted, "9.9.9")),
            "bad_signature",
            untrusted.clone(),
        ),
    ];
    for (signature, code, message) in cases {
        let answer = host
            .put(
                &digest.to_string(),
                &file,
                bytes.clone(),
                signature.as_deref(),
            )
            .await;
        assert_eq!(answer.expect_error(StatusCode::FORBIDDEN, code), message);
        assert_eq!(host.stored_files(), Vec::<String>::new());
    }
    let good = sign(&trusted, "1.0.0");
    let answer = host
        .put(&digest.to_string(), &file, bytes.clone(), Some(&good))
        .await;
    let staged = answer.expect_ok();
    assert_eq!(staged["file"], file);
    assert_eq!(staged["metadata"]["id"], "ma_cross");
    assert_eq!(staged["metadata"]["version"], "1.0.0");
    let stored = host.artifacts().join(digest.to_string()).join(&file);
    assert_eq!(std::fs::read(&stored).unwrap(), bytes);
    // The signature is kept beside the artifact: checked again before every load.
    let kept = std::fs::read_to_string(stored.with_file_name(format!("{file}.sig"))).unwrap();
    assert_eq!(kept, format!("{good}\n"));
    let present = host.get(&format!("/v1/artifacts/{digest}")).await;
    assert_eq!(present.expect_ok()["signed"], true);
    // Content-addressed: staging again is a no-op with the same answer.
    let again = host
        .put(&digest.to_string(), &file, bytes, Some(&good))
        .await;
    assert_eq!(again.expect_ok(), staged);
    host.shutdown().await;
}

// ---- steps ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_driven_over_http_under_load_fails_no_call() {
    let host = Host::start().await;
    // ma_cross needs risk_model: the host refuses it without (its declared dependency).
    host.install_risk_model().await;
    let v1 = host.stage(MA_CROSS_1_0_0).await;
    let installed = host
        .post(
            "/v1/steps/install-1/install",
            json!({"artifact": v1, "config": v1_config()}),
        )
        .await;
    assert_eq!(installed.expect_ok()["version"]["version"], "1.0.0");

    // The host's own hot path, called directly while the sidecar drives the step over HTTP.
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let feeder = {
        let handle = host.runtime.handle("ma_cross").unwrap();
        let (stop, calls) = (stop.clone(), calls.clone());
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            // Every call answered: its receipt (sequence number, host time), input and output.
            let mut answered = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::SeqCst) {
                let close = 100.0 + (i % 7) as f64 - (i % 3) as f64 * 2.0;
                // Every other call a fill of an order placed elsewhere: the position on
                // `ES-FILLS` counts each of them whose update reached the final state.
                let input = if i.is_multiple_of(2) {
                    bar("ES", close)
                } else {
                    json!({"fill": {"order_id": 1_000_000 + i, "instrument": "ES-FILLS",
                                    "qty": 1, "price": 100.0}})
                    .to_string()
                    .into_bytes()
                };
                let mut output = Vec::new();
                match handle.call_into(&input, &mut output) {
                    Ok(receipt) => answered.push((receipt, input, output)),
                    Err(e) => failures.push(e.to_string()),
                }
                calls.fetch_add(1, Ordering::SeqCst);
                i += 1;
            }
            (failures, answered)
        })
    };
    let more_calls = |n: u64| {
        let calls = calls.clone();
        let goal = calls.load(Ordering::SeqCst) + n;
        async move {
            poll_until("the host has called again", || {
                let calls = calls.clone();
                async move { calls.load(Ordering::SeqCst) >= goal }
            })
            .await
        }
    };

    more_calls(100).await;
    let v2 = host.stage(MA_CROSS_2_0_0).await;
    let verified = host
        .post(
            "/v1/steps/switch-2/verify",
            json!({"plugin": "ma_cross", "artifact": v2}),
        )
        .await;
    let verified = verified.expect_ok();
    assert_eq!(verified["passed"], true, "{verified:#}");
    assert_eq!(verified["health"], json!({"Ok": null}));
    // Verify records nothing under the step id.
    assert!(!host.dir.path().join("store/steps/switch-2").exists());

    more_calls(100).await;
    let switched = host
        .post(
            "/v1/steps/switch-2/switch",
            json!({"plugin": "ma_cross", "artifact": v2, "lease_ms": 600_000}),
        )
        .await;
    let report = switched.expect_ok();
    assert_eq!(report["kind"], "upgrade");
    assert_eq!(report["to"]["digest"], v2.to_string());
    let status = host.get("/v1/status").await;
    let plugin = &status.expect_ok()["plugins"][0];
    assert_eq!(plugin["pending"]["step_id"], "switch-2");
    assert_eq!(plugin["last_step"]["outcome"], "pending");

    more_calls(100).await;
    let committed = host
        .post("/v1/steps/switch-2/commit", json!({"plugin": "ma_cross"}))
        .await;
    assert_eq!(
        committed.expect_ok(),
        &json!({"plugin": "ma_cross", "version": {"version": "2.0.0", "digest": v2}})
    );
    more_calls(100).await;
    stop.store(true, Ordering::SeqCst);
    let (failures, answered) = feeder.join().unwrap();
    assert_eq!(
        failures,
        Vec::<String>::new(),
        "calls failed during the step"
    );

    let status = host.get("/v1/status").await;
    let status = status.expect_ok();
    assert!(status.get("states").is_none(), "states only when asked for");
    let plugin = &status["plugins"][0];
    assert_eq!(plugin["version"]["version"], "2.0.0");
    assert_eq!(plugin["pending"], Value::Null);
    assert_eq!(plugin["last_step"]["outcome"], "committed");
    assert_eq!(plugin["counters"]["errors"], 0);
    assert!(plugin["counters"]["calls"].as_u64().unwrap() >= 400);

    let with_state = host.get("/v1/status?with_state=true").await;
    let snapshot = &with_state.expect_ok()["states"]["ma_cross"];
    assert_eq!(snapshot["version"]["digest"], v2.to_string());
    let state = host.get("/v1/plugins/ma_cross/state").await;
    let state = state.expect_ok();
    assert_eq!(state["sha256"], snapshot["sha256"]);

    // The reference: a runtime of its own running 1.0.0, fed the same calls in sequence order
    // at their host times, switched to 2.0.0 (under the lock) at the cut the report names:
    // the same state migrated, the same answers, the same state at the end.
    let reference_dir = tempfile::tempdir().unwrap();
    let reference = Runtime::new(RuntimeOptions::new(reference_dir.path().join("store"))).unwrap();
    let stage = |name: &str| {
        let (bytes, file) = library(name);
        let stored = reference.stage(&file, &bytes, &Digest::of(&bytes)).unwrap();
        stored.digest
    };
    reference
        .install(&stage(MA_CROSS_1_0_0), v1_config())
        .unwrap();
    let target = stage(MA_CROSS_2_0_0);
    assert_eq!(target, v2);
    let handle = reference.handle("ma_cross").unwrap();
    let cut_seq = report["cut_seq"].as_u64().unwrap();
    let mut switched = false;
    for (receipt, input, output) in &answered {
        if receipt.seq > cut_seq && !switched {
            let expected = reference
                .swap(SwapRequest::new("ma_cross", target).mode(SwapMode::Locked))
                .unwrap();
            assert_eq!(expected.cut_seq, cut_seq);
            assert_eq!(
                serde_json::to_value(&expected.state_before).unwrap(),
                report["state_before"]
            );
            assert_eq!(
                serde_json::to_value(&expected.state_after).unwrap(),
                report["state_after"]
            );
            reference.commit("ma_cross").unwrap();
            switched = true;
        }
        let mut replayed = Vec::new();
        let again = handle
            .call_into_at(input, receipt.now, &mut replayed)
            .unwrap();
        assert_eq!(
            again.seq, receipt.seq,
            "the reference lost step with the host"
        );
        assert_eq!(
            String::from_utf8_lossy(&replayed),
            String::from_utf8_lossy(output),
            "call #{} answered differently in the reference",
            receipt.seq
        );
    }
    assert!(switched, "calls came after the switch");
    let expected = reference.snapshot("ma_cross").unwrap();
    let live: Value = serde_json::from_str(state["state"].as_str().unwrap()).unwrap();
    let reference_state: Value = serde_json::from_str(&expected.state).unwrap();
    assert_eq!(live, reference_state, "a state update was lost");
    let fills = answered.len() / 2;
    assert_eq!(live["instruments"]["ES-FILLS"]["position"], json!(fills));
    assert_eq!(
        (&state["seq"], &state["sha256"]),
        (&json!(expected.seq), &json!(expected.sha256.to_string()))
    );
    host.shutdown().await;
}

#[tokio::test]
async fn the_same_step_id_applies_once() {
    let host = Host::start().await;
    // ma_cross needs risk_model: the host refuses it without (its declared dependency).
    host.install_risk_model().await;
    let v1 = host.stage(MA_CROSS_1_0_0).await;
    let request = json!({"artifact": v1, "config": v1_config()});
    let first = host
        .post("/v1/steps/install-1/install", request.clone())
        .await;
    first.expect_ok();
    assert!(!first.replayed());
    let retry = host
        .post("/v1/steps/install-1/install", request.clone())
        .await;
    assert!(retry.replayed(), "{:?}", retry.headers);
    assert_eq!((retry.status, &retry.body), (first.status, &first.body));

    // A new step id is a new operation: installing over a loaded plugin is a conflict...
    let conflict = host.post("/v1/steps/install-2/install", request).await;
    let message = conflict.expect_error(StatusCode::CONFLICT, "already_loaded");
    assert_eq!(
        message,
        "plugin `ma_cross` is already loaded (1.0.0): swap to the new version instead"
    );
    assert!(!conflict.replayed());
    // ...and a failure is recorded too: the retry gets it again, with the same status.
    let again = host
        .post(
            "/v1/steps/install-2/install",
            json!({"artifact": v1, "config": v1_config()}),
        )
        .await;
    assert!(again.replayed());
    assert_eq!(
        (again.status, &again.body),
        (conflict.status, &conflict.body)
    );

    // The same step id with another request is not a retry: 409, nothing applied.
    let reused = host
        .post(
            "/v1/steps/install-1/install",
            json!({"artifact": v1, "config": {"fast_ma_period": 3}}),
        )
        .await;
    let message = reused.expect_error(StatusCode::CONFLICT, "step_id_reused");
    assert_eq!(
        message,
        "step id `install-1` was already used for a different `install` request: a retry must \
         send the same request; give a new step a new step id"
    );
    // Key order and spacing do not make a request different.
    let reordered = host
        .post_raw(
            "/v1/steps/install-1/install",
            format!(
                r#"{{ "config": {}, "artifact": "{v1}" }}"#,
                serde_json::to_string(&v1_config()).unwrap()
            ),
        )
        .await;
    assert!(reordered.replayed(), "{:?}", reordered.body);

    // A commit with nothing pending: 409, recorded.
    let commit = host
        .post("/v1/steps/commit-1/commit", json!({"plugin": "ma_cross"}))
        .await;
    commit.expect_error(StatusCode::CONFLICT, "no_step_in_progress");

    // Refused before running (bad input) is not recorded: fixed, the same id then runs.
    let typo = host
        .post(
            "/v1/steps/unload-1/unload",
            json!({"plugin": "ma_cross", "plugn": "x"}),
        )
        .await;
    let message = typo.expect_error(StatusCode::BAD_REQUEST, "bad_request");
    assert!(message.contains("unknown field `plugn`"), "{message}");
    let unloaded = host
        .post("/v1/steps/unload-1/unload", json!({"plugin": "ma_cross"}))
        .await;
    assert!(!unloaded.replayed());
    assert_eq!(unloaded.expect_ok()["version"]["version"], "1.0.0");
    let bad_id = host
        .post("/v1/steps/..hidden/unload", json!({"plugin": "ma_cross"}))
        .await;
    bad_id.expect_error(StatusCode::BAD_REQUEST, "bad_step_id");
    let state = host.get("/v1/plugins/ma_cross/state").await;
    state.expect_error(StatusCode::NOT_FOUND, "not_loaded");
    host.shutdown().await;
}

#[tokio::test]
async fn a_switch_not_committed_within_its_lease_is_rolled_back_by_the_host() {
    let host = Host::start().await;
    // ma_cross needs risk_model: the host refuses it without (its declared dependency).
    host.install_risk_model().await;
    let v1 = host.stage(MA_CROSS_1_0_0).await;
    let v2 = host.stage(MA_CROSS_2_0_0).await;
    host.post(
        "/v1/steps/install-1/install",
        json!({"artifact": v1, "config": v1_config()}),
    )
    .await
    .expect_ok();
    for close in [10.0, 11.0, 12.0] {
        host.runtime.call("ma_cross", &bar("ES", close)).unwrap();
    }
    let switched = host
        .post(
            "/v1/steps/switch-2/switch",
            json!({"plugin": "ma_cross", "artifact": v2, "lease_ms": 50}),
        )
        .await;
    assert_eq!(switched.expect_ok()["to"]["version"], "2.0.0");
    // Nobody commits: the sidecar "crashed". The host rolls back by itself.
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        let status = host.get("/v1/status").await.body;
        if status["plugins"][0]["last_rollback"]["reason"]["kind"] == "lease_expired" {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the host did not roll back: {status:#}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let plugin = &status["plugins"][0];
    assert_eq!(plugin["version"]["digest"], v1.to_string());
    assert_eq!(plugin["pending"], Value::Null);
    assert_eq!(plugin["last_step"]["outcome"], "rolled_back");
    assert_eq!(plugin["last_rollback"]["reason"]["lease_ms"], 50);
    assert_eq!(plugin["last_rollback"]["method"]["kind"], "replay");
    // The late commit finds nothing to commit.
    let late = host
        .post("/v1/steps/switch-2/commit", json!({"plugin": "ma_cross"}))
        .await;
    late.expect_error(StatusCode::CONFLICT, "no_step_in_progress");
    host.shutdown().await;
}

#[tokio::test]
async fn a_panic_during_the_soak_rolls_the_step_back_and_no_call_fails() {
    let host = Host::start().await;
    // ma_cross needs risk_model: the host refuses it without (its declared dependency).
    host.install_risk_model().await;
    let v1 = host.stage(MA_CROSS_1_0_0).await;
    let faulty = host.stage(FAULT_CALL).await;
    host.post(
        "/v1/steps/install-1/install",
        json!({"artifact": v1, "config": v1_config()}),
    )
    .await
    .expect_ok();
    host.runtime.call("ma_cross", &bar("ES", 10.0)).unwrap();
    let soak = json!({"max_error_rate": 0.0, "min_calls": 1});
    host.post(
        "/v1/steps/switch-2/switch",
        json!({"plugin": "ma_cross", "artifact": faulty, "lease_ms": 60_000, "soak": soak}),
    )
    .await
    .expect_ok();
    // The fixture panics on this instrument: the host rolls the step back at once and the
    // same call is answered by 1.0.0.
    let answered = host.runtime.call("ma_cross", &bar("CRASH", 11.0)).unwrap();
    assert_eq!(answered.receipt.digest, v1);
    let status = host.get("/v1/status").await.body;
    let plugin = &status["plugins"][0];
    assert_eq!(plugin["version"]["digest"], v1.to_string());
    assert_eq!(plugin["pending"], Value::Null);
    assert_eq!(plugin["last_rollback"]["reason"]["kind"], "call_panicked");
    assert_eq!(plugin["last_rollback"]["method"]["kind"], "replay");
    assert_eq!(plugin["health"]["status"], "ok");
    host.shutdown().await;
}

// ---- the documents under `schemas/` ----

/// Compares `value` with `schemas/<name>`, or writes it there with `PLUGSYNC_BLESS=1`.
fn check_document(name: &str, value: &Value) {
    let path = workspace().join("schemas").join(name);
    let text = serde_json::to_string_pretty(value).unwrap() + "\n";
    if std::env::var_os("PLUGSYNC_BLESS").is_some_and(|v| v == "1") {
        std::fs::write(&path, &text).unwrap();
        return;
    }
    let refresh = "`PLUGSYNC_BLESS=1 cargo test -p plugsync-host --features control-api --test \
                   control_api`";
    let Ok(current) = std::fs::read_to_string(&path) else {
        panic!("`schemas/{name}` does not exist: write it with {refresh}");
    };
    if current != text {
        let line = current
            .lines()
            .zip(text.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| current.lines().count().min(text.lines().count()));
        panic!(
            "`schemas/{name}` is not what the code generates (first difference at line {}): \
             refresh it with {refresh} and review the diff",
            line + 1
        );
    }
}

#[test]
fn the_running_state_schema_is_current() {
    let schema = running_state_schema();
    assert_eq!(schema["title"], "RunningState");
    check_document("running-state.schema.json", &schema);
}

#[test]
fn the_openapi_document_is_current() {
    let document = openapi();
    assert_eq!(document["openapi"], "3.1.0");
    check_document("control-api.openapi.json", &document);
}

#[tokio::test]
async fn status_names_the_api_version_and_the_capabilities_the_host_serves() {
    for (allow_calls, capabilities) in [
        (
            false,
            json!([
                "applied_record",
                "artifact_head",
                "dependencies",
                "lease",
                "leased_install",
                "min_calls",
                "named_clients",
                "owned_steps",
                "restore",
                "restraints"
            ]),
        ),
        (
            true,
            json!([
                "applied_record",
                "artifact_head",
                "calls",
                "dependencies",
                "lease",
                "leased_install",
                "min_calls",
                "named_clients",
                "owned_steps",
                "restore",
                "restraints"
            ]),
        ),
    ] {
        let host = Host::start_with(|config, _| config.allow_calls = allow_calls).await;
        let status = host.get("/v1/status").await;
        let api = &status.expect_ok()["api"];
        assert_eq!(
            api,
            &json!({"version": "1.1", "capabilities": capabilities})
        );
        let api: ApiInfo = serde_json::from_value(api.clone()).unwrap();
        assert_eq!(api.version, API_VERSION);
        assert_eq!(api.has(Capability::Calls), allow_calls);
        assert!(api.has(Capability::NamedClients));
        host.shutdown().await;
    }
}

#[tokio::test]
async fn calls_through_the_api_are_off_unless_allowed() {
    let host = Host::start().await;
    let v1 = host.stage(MA_CROSS_1_0_0).await;
    host.runtime.install(&v1, json!({})).unwrap();
    let bar = json!({"input": {"bar": {"instrument": "ES", "close": 4500.25}}});
    let refused = host.post("/v1/plugins/ma_cross/call", bar.clone()).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    assert_eq!(
        refused.body["error"],
        json!({"code": "calls_disabled", "message": "calls through the control API are off: \
               start the host with `--allow-calls` (`ControlConfig::allow_calls`) to feed a \
               plugin by hand"})
    );
    assert_eq!(host.runtime.status().plugins[0].counters.calls, 0);
    host.shutdown().await;

    let host = Host::start_with(|config, _| config.allow_calls = true).await;
    let v1 = host.stage(MA_CROSS_1_0_0).await;
    host.runtime.install(&v1, json!({})).unwrap();
    let answer = host
        .post(
            "/v1/plugins/ma_cross/call",
            json!({"input": {"bar": {"instrument": "ES", "close": 4500.25}}, "now": 7}),
        )
        .await;
    answer.expect_ok();
    assert_eq!(
        answer.body,
        json!({"seq": 1, "now": 7, "digest": v1.to_string(), "output": {"orders": []}})
    );
    // A string is sent as its bytes; a plugin's refusal is a 422 naming it.
    let refused = host
        .post("/v1/plugins/ma_cross/call", json!({"input": "not json"}))
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.body["error"]["code"], "plugin_failed");
    let unknown = host.post("/v1/plugins/nope/call", bar).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    host.shutdown().await;
}
