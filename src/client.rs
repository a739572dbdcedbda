//! A client of a host's control API (HTTP/JSON, bearer token): `status` and `demo --via-host`
//! use it, and so will `reconcile` and `run`.
//!
//! One client for the host's three transports, chosen by the host URL: `http://` (a host on
//! loopback), `unix:PATH` (HTTP on the host's unix socket) and `https://`, where the host's
//! certificate must verify against a CA the operator pins (`--tls-ca`): no built-in or system
//! root is trusted, so a certificate bought from any public CA does not pass for the host.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::header::CONTENT_TYPE;
use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};

/// Where `plugsync host` listens unless told otherwise.
pub const DEFAULT_HOST: &str = "http://127.0.0.1:7077";

/// The request header carrying the client's reconcile lease epoch.
const LEASE_EPOCH_HEADER: &str = "x-plugsync-lease-epoch";

/// The request header carrying an artifact's signature.
const SIGNATURE_HEADER: &str = "x-plugsync-signature";

/// The answer header set when the host replayed a step's recorded answer.
const REPLAYED_HEADER: &str = "x-plugsync-replayed";

/// How long connecting may take: the host is on this machine or next to it.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a whole request may take (a status with every plugin's state included).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// A connection to one host's control API.
#[derive(Debug)]
pub(crate) struct ControlClient {
    /// The API's root, ending with `/`.
    base: Url,
    /// The URL as the operator gave it, for messages.
    shown: String,
    token: String,
    token_file: PathBuf,
    /// The CA pinned for an `https://` host.
    tls_ca: Option<PathBuf>,
    http: reqwest::Client,
    io: tokio::runtime::Runtime,
}

/// How the client reaches the host.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Transport {
    /// Plain HTTP over TCP.
    Http,
    /// HTTPS, verified against the pinned CA.
    Https,
    /// HTTP over the unix socket at this path.
    Unix(PathBuf),
}

impl ControlClient {
    /// A client of the host at `host` (default [`DEFAULT_HOST`]) authenticating with the token
    /// in `token_file`; an `https://` host's certificate must verify against the CA in `tls_ca`
    /// (ignored for other hosts). Checks the URL, reads the token and the CA; connects on the
    /// first request.
    pub fn new(
        host: Option<&str>,
        token_file: Option<&Path>,
        tls_ca: Option<&Path>,
    ) -> Result<ControlClient> {
        let (base, shown, transport) = parse_host(host.unwrap_or(DEFAULT_HOST))?;
        let tls_ca = match transport {
            Transport::Https => Some(tls_ca.ok_or_else(|| Error::NoTlsCa { url: shown.clone() })?),
            _ => None,
        };
        let token_file = token_file.ok_or(Error::NoTokenFile)?.to_owned();
        let token = std::fs::read_to_string(&token_file)
            .map_err(|source| Error::TokenFile {
                path: token_file.clone(),
                source,
            })?
            .trim()
            .to_owned();
        if token.is_empty() {
            return Err(Error::EmptyToken { path: token_file });
        }
        // A client holds its own token only, never the host's list of clients.
        if token.contains(char::is_whitespace) {
            return Err(Error::NotOneToken { path: token_file });
        }
        let mut builder = reqwest::Client::builder()
            // The token must never go to a proxy named by the environment.
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            // Only the pinned CA vouches for a host (this build has no built-in roots anyway).
            .tls_built_in_root_certs(false);
        if let Some(ca) = tls_ca {
            for certificate in pinned_ca(ca)? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        if let Transport::Unix(path) = &transport {
            builder = builder.unix_socket(path.as_path());
        }
        let http = builder.build().map_err(|e| Error::Setup {
            action: "set up the HTTP client",
            source: std::io::Error::other(e),
        })?;
        let io = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| Error::Setup {
                action: "start the async runtime",
                source,
            })?;
        Ok(ControlClient {
            base,
            shown,
            token,
            token_file,
            tls_ca: tls_ca.map(Path::to_owned),
            http,
            io,
        })
    }

    /// The host URL, as the operator gave it.
    pub fn url(&self) -> &str {
        &self.shown
    }

    /// `GET path?query`, returning the body of a successful answer (checked to be JSON).
    pub fn get(&self, path: &str, query: &[(&str, &str)]) -> Result<String> {
        self.send(self.http.get(self.url_of(path)).query(query))
    }

    /// `GET path?query`, its answer read as a `T`.
    pub fn get_json<T: DeserializeOwned>(&self, path: &str, query: &[(&str, &str)]) -> Result<T> {
        self.parse(&self.get(path, query)?)
    }

    /// `PUT path` with raw bytes (an artifact), its answer read as a `T`.
    pub fn put_bytes<T: DeserializeOwned>(&self, path: &str, bytes: Vec<u8>) -> Result<T> {
        let request = self
            .http
            .put(self.url_of(path))
            .header(CONTENT_TYPE, "application/octet-stream")
            .body(bytes);
        self.parse(&self.send(request)?)
    }

    /// Sends `request` as it is (its lease epoch and signature as headers) and returns the body
    /// of a successful answer and whether the host replayed it from a step's record.
    pub fn send_request(&self, request: &crate::apply::HostRequest) -> Result<(String, bool)> {
        use crate::apply::HostMethod;
        let url = self.url_of(request.path.trim_start_matches('/'));
        let mut builder = match request.method {
            HostMethod::Get => self.http.get(url),
            HostMethod::Post => self.http.post(url),
            HostMethod::Put => self.http.put(url),
        };
        builder = builder.header(CONTENT_TYPE, request.content_type());
        if let Some(epoch) = request.lease_epoch {
            builder = builder.header(LEASE_EPOCH_HEADER, epoch.to_string());
        }
        if let Some(signature) = &request.signature {
            builder = builder.header(SIGNATURE_HEADER, signature.as_str());
        }
        if !request.body.is_empty() {
            builder = builder.body(request.body.clone());
        }
        let builder = builder.bearer_auth(&self.token);
        self.io.block_on(async {
            let response = builder.send().await.map_err(|e| self.unreachable(&e))?;
            let status = response.status();
            let replayed = response.headers().contains_key(REPLAYED_HEADER);
            let body = response.text().await.map_err(|e| self.unreachable(&e))?;
            self.check(status, body).map(|body| (body, replayed))
        })
    }

    fn url_of(&self, path: &str) -> Url {
        self.base.join(path).expect("API paths are relative URLs")
    }

    /// Sends a request with the token, returning the body of a successful answer (checked to
    /// be JSON).
    fn send(&self, request: reqwest::RequestBuilder) -> Result<String> {
        let request = request.bearer_auth(&self.token);
        self.io.block_on(async {
            let response = request.send().await.map_err(|e| self.unreachable(&e))?;
            let status = response.status();
            let body = response.text().await.map_err(|e| self.unreachable(&e))?;
            self.check(status, body)
        })
    }

    /// A successful answer's JSON as a `T`.
    fn parse<T: DeserializeOwned>(&self, body: &str) -> Result<T> {
        serde_json::from_str(body)
            .map_err(|e| self.bad_answer(StatusCode::OK, &format!("unexpected JSON: {e}")))
    }

    /// Turns an answer into its body, or into the error it carries.
    fn check(&self, status: StatusCode, body: String) -> Result<String> {
        if status == StatusCode::UNAUTHORIZED {
            return Err(Error::Unauthorized {
                url: self.shown.clone(),
                path: self.token_file.clone(),
            });
        }
        answer_body(&self.shown, status.as_u16(), body)
    }

    fn bad_answer(&self, status: StatusCode, reason: &str) -> Error {
        bad_answer(&self.shown, status.as_u16(), reason)
    }

    fn unreachable(&self, error: &reqwest::Error) -> Error {
        if let (Some(ca), Some(refused)) = (&self.tls_ca, certificate_refusal(error)) {
            return Error::CertificateRefused {
                url: self.shown.clone(),
                ca: ca.clone(),
                reason: refused.to_string(),
            };
        }
        Error::Unreachable {
            url: self.shown.clone(),
            cause: cause(error),
        }
    }
}

/// A control API answer (from `url`, as shown in messages) turned into its body, checked to
/// be JSON, or into the error the host answered: the one reading of answers whichever way the
/// host is reached.
pub(crate) fn answer_body(url: &str, status: u16, body: String) -> Result<String> {
    let parsed: Option<Value> = serde_json::from_str(&body).ok();
    if (200..300).contains(&status) {
        return match parsed {
            Some(_) => Ok(body),
            None => Err(bad_answer(url, status, "not JSON")),
        };
    }
    let error = parsed.as_ref().map(|v| &v["error"]);
    match error.and_then(|e| Some((e["code"].as_str()?, e["message"].as_str()?))) {
        Some((code, message)) => Err(Error::HostRefused {
            url: url.to_owned(),
            status,
            code: code.to_owned(),
            message: message.to_owned(),
        }),
        None => Err(bad_answer(url, status, "an error without `error.message`")),
    }
}

fn bad_answer(url: &str, status: u16, reason: &str) -> Error {
    Error::BadAnswer {
        url: url.to_owned(),
        status,
        reason: reason.to_owned(),
    }
}

/// The certificates of the pinned CA file (PEM; at least one).
fn pinned_ca(path: &Path) -> Result<Vec<reqwest::Certificate>> {
    let bad = |reason: String| Error::TlsCa {
        path: path.to_owned(),
        reason,
    };
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    let certificates =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| bad(e.to_string()))?;
    if certificates.is_empty() {
        return Err(bad("it holds no `CERTIFICATE` block".to_owned()));
    }
    Ok(certificates)
}

/// The TLS verdict on the host's certificate, if that is why a request failed. rustls's error
/// travels inside `io::Error`s, whose `source()` skips what they wrap: each one is opened.
fn certificate_refusal(error: &reqwest::Error) -> Option<&rustls::Error> {
    fn find<'a>(error: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
        if let Some(refusal @ rustls::Error::InvalidCertificate(_)) = error.downcast_ref() {
            return Some(refusal);
        }
        let wrapped = error
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref)
            .and_then(|inner| find(inner));
        wrapped.or_else(|| error.source().and_then(find))
    }
    find(error)
}

/// Checks a host URL: `http[s]://HOST[:PORT][/PREFIX]` or `unix:PATH`. Returns the API root
/// (ending with `/`), the URL as shown in messages and how to reach it.
fn parse_host(url: &str) -> Result<(Url, String, Transport)> {
    let bad = || Error::BadHostUrl {
        url: url.to_owned(),
    };
    if let Some(path) = url.strip_prefix("unix:") {
        if path.is_empty() {
            return Err(bad());
        }
        // Every request goes to the socket; the URL only names the path (and `Host` header).
        let base = Url::parse("http://localhost/").expect("a valid URL");
        return Ok((base, url.to_owned(), Transport::Unix(PathBuf::from(path))));
    }
    let parsed = Url::parse(url).map_err(|_| bad())?;
    let transport = match parsed.scheme() {
        "http" => Transport::Http,
        "https" => Transport::Https,
        _ => return Err(bad()),
    };
    if parsed.host_str().is_none_or(str::is_empty)
        || parsed.query().is_some()
        || parsed.fragment().is_some()
        || !parsed.username().is_empty()
        || parsed.password().is_some()
    {
        return Err(bad());
    }
    let mut base = parsed;
    if !base.path().ends_with('/') {
        let path = format!("{}/", base.path());
        base.set_path(&path);
    }
    Ok((base, url.trim_end_matches('/').to_owned(), transport))
}

/// The root cause of a failed request, in a few lowercase words (`connection refused`).
fn cause(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        return format!(
            "no answer within {} s (connect) / {} s (request)",
            CONNECT_TIMEOUT.as_secs(),
            REQUEST_TIMEOUT.as_secs()
        );
    }
    let mut innermost: &dyn std::error::Error = error;
    while let Some(source) = innermost.source() {
        if let Some(io) = source.downcast_ref::<std::io::Error>() {
            return io_cause(io);
        }
        innermost = source;
    }
    innermost.to_string()
}

fn io_cause(error: &std::io::Error) -> String {
    use std::io::ErrorKind;
    let words = match error.kind() {
        ErrorKind::ConnectionRefused => "connection refused",
        ErrorKind::ConnectionReset => "connection reset",
        ErrorKind::ConnectionAborted => "connection aborted",
        ErrorKind::TimedOut => "timed out",
        ErrorKind::AddrNotAvailable => "address not available",
        ErrorKind::HostUnreachable => "host unreachable",
        ErrorKind::NetworkUnreachable => "network unreachable",
        ErrorKind::UnexpectedEof => "the connection closed before an answer",
        _ => return error.to_string(),
    };
    words.to_owned()
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpListener;

    use super::*;

    /// Answers one request with `response` on a loopback port; returns the URL and the
    /// request it received.
    fn serve_once(response: String) -> (String, std::thread::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0; 4096];
            let complete = |request: &[u8]| {
                let text = String::from_utf8_lossy(request).to_ascii_lowercase();
                let Some(end) = text.find("\r\n\r\n") else {
                    return false;
                };
                let length = text
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length: "))
                    .map_or(0, |n| n.trim().parse::<usize>().unwrap());
                request.len() >= end + 4 + length
            };
            while !complete(&request) {
                let n = stream.read(&mut buf).unwrap();
                assert!(n > 0, "the client closed before its request ended");
                request.extend_from_slice(&buf[..n]);
            }
            stream.write_all(response.as_bytes()).unwrap();
            String::from_utf8(request).unwrap()
        });
        (url, server)
    }

    fn answer(status: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        )
    }

    /// `GET v1/status` against a server answering `response`.
    fn ask(response: String) -> (Result<String>, String) {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "  the-token\n").unwrap();
        let (url, server) = serve_once(response);
        let client = ControlClient::new(Some(&url), Some(&token), None).unwrap();
        let result = client.get("v1/status", &[("with_state", "true")]);
        (result, server.join().unwrap())
    }

    #[test]
    fn requests_carry_the_trimmed_token_and_the_query() {
        let (result, request) = ask(answer("200 OK", r#"{"plugins":[]}"#));
        assert_eq!(result.unwrap(), r#"{"plugins":[]}"#);
        assert!(
            request.starts_with("GET /v1/status?with_state=true HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request
                .to_ascii_lowercase()
                .contains("authorization: bearer the-token\r\n"),
            "{request}"
        );
    }

    #[test]
    fn posts_send_json_and_puts_send_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "the-token").unwrap();
        let (url, server) = serve_once(answer("200 OK", r#"{"plugin":"ma_cross"}"#));
        let client = ControlClient::new(Some(&url), Some(&token), None).unwrap();
        let request = crate::apply::HostRequest::post(
            "/v1/steps/s1/commit",
            &serde_json::json!({"plugin": "ma_cross"}),
        )
        .unwrap();
        let (committed, replayed) = client.send_request(&request).unwrap();
        let committed: Value = serde_json::from_str(&committed).unwrap();
        assert_eq!(committed["plugin"], "ma_cross");
        assert!(!replayed);
        let request = server.join().unwrap().to_ascii_lowercase();
        assert!(
            request.starts_with("post /v1/steps/s1/commit http/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains("content-type: application/json\r\n"),
            "{request}"
        );
        assert!(
            request.ends_with("\r\n\r\n{\"plugin\":\"ma_cross\"}"),
            "{request}"
        );

        let (url, server) = serve_once(answer("200 OK", "[1]"));
        let client = ControlClient::new(Some(&url), Some(&token), None).unwrap();
        let staged: Vec<u8> = client
            .put_bytes("v1/artifacts/ab/lib.so", b"\x7fELF".to_vec())
            .unwrap();
        assert_eq!(staged, [1]);
        let request = server.join().unwrap();
        assert!(
            request.starts_with("PUT /v1/artifacts/ab/lib.so HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(request.ends_with("\r\n\r\n\x7fELF"), "{request}");

        // An answer that is JSON, but not what was asked for.
        let (url, _server) = serve_once(answer("200 OK", r#"{"plugin":"ma_cross"}"#));
        let client = ControlClient::new(Some(&url), Some(&token), None).unwrap();
        let error = client.get_json::<Vec<u8>>("v1/status", &[]).unwrap_err();
        assert!(
            matches!(&error, Error::BadAnswer { reason, .. } if reason.starts_with("unexpected JSON: ")),
            "{error:?}"
        );
    }

    #[test]
    fn answers_become_errors() {
        let (refused, _) = ask(answer(
            "409 Conflict",
            r#"{"error":{"code":"step_in_progress","message":"`ma_cross` is switching: commit or roll back first"}}"#,
        ));
        let refused = refused.unwrap_err();
        assert!(
            matches!(&refused, Error::HostRefused { status: 409, code, .. } if code == "step_in_progress"),
            "{refused:?}"
        );
        assert_eq!(
            refused.to_string(),
            "`ma_cross` is switching: commit or roll back first"
        );
        let (unauthorized, _) = ask(answer(
            "401 Unauthorized",
            r#"{"error":{"code":"unauthorized","message":"wrong bearer token"}}"#,
        ));
        assert!(matches!(unauthorized, Err(Error::Unauthorized { .. })));
        for (response, reason) in [
            (answer("200 OK", "<html>"), "not JSON"),
            (
                answer("502 Bad Gateway", "upstream down"),
                "an error without `error.message`",
            ),
        ] {
            let (result, _) = ask(response);
            let error = result.unwrap_err();
            assert!(
                matches!(&error, Error::BadAnswer { reason: r, .. } if r == reason),
                "{error:?}"
            );
        }
    }

    #[test]
    fn host_urls() {
        let ok = |url: &str, base: &str, shown: &str, transport: Transport| {
            let (b, s, t) = parse_host(url).unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_eq!(
                (b.as_str(), s.as_str(), t),
                (base, shown, transport),
                "{url}"
            );
        };
        ok(
            "http://127.0.0.1:7077",
            "http://127.0.0.1:7077/",
            "http://127.0.0.1:7077",
            Transport::Http,
        );
        ok(
            "http://127.0.0.1:7077/",
            "http://127.0.0.1:7077/",
            "http://127.0.0.1:7077",
            Transport::Http,
        );
        ok(
            "http://[::1]:7077/desk-a",
            "http://[::1]:7077/desk-a/",
            "http://[::1]:7077/desk-a",
            Transport::Http,
        );
        ok(
            "http://localhost",
            "http://localhost/",
            "http://localhost",
            Transport::Http,
        );
        ok(
            "https://desk-a.example:7077",
            "https://desk-a.example:7077/",
            "https://desk-a.example:7077",
            Transport::Https,
        );
        ok(
            "unix:/run/plugsync/control.sock",
            "http://localhost/",
            "unix:/run/plugsync/control.sock",
            Transport::Unix(PathBuf::from("/run/plugsync/control.sock")),
        );
        ok(
            "unix:control.sock",
            "http://localhost/",
            "unix:control.sock",
            Transport::Unix(PathBuf::from("control.sock")),
        );
        for bad in [
            "foo",
            "127.0.0.1:7077",
            "localhost:7077",
            "ftp://127.0.0.1",
            "http://",
            "http://u:p@127.0.0.1:7077",
            "http://127.0.0.1:7077/?x=1",
            "unix:",
            "",
        ] {
            let error = parse_host(bad).unwrap_err();
            assert_eq!(
                error.to_string(),
                format!(
                    "`{bad}` is not a valid host URL: expected e.g. `http://127.0.0.1:7077`, \
                     `https://host.example:7077` or `unix:/run/plugsync/control.sock`"
                ),
            );
        }
    }

    /// A real control API (over an empty runtime) in `dir`, served while the returned runtime
    /// lives; its URL.
    fn real_host(
        dir: &Path,
        listen: plugsync_host::control::Listen,
        tls: Option<plugsync_host::control::TlsFiles>,
    ) -> (tokio::runtime::Runtime, String) {
        use plugsync_host::control::{ControlConfig, ControlServer};
        use std::os::unix::fs::PermissionsExt;
        let token = dir.join("host-token");
        std::fs::write(&token, "the-token\n").unwrap();
        std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600)).unwrap();
        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let runtime =
            plugsync_host::Runtime::new(plugsync_host::RuntimeOptions::new(dir.join("store")))
                .unwrap();
        let mut config = ControlConfig::new(token);
        config.listen = listen;
        config.tls = tls;
        let server = io.block_on(ControlServer::bind(runtime, config)).unwrap();
        let url = server.url().to_owned();
        io.spawn(server.serve(std::future::pending()));
        (io, url)
    }

    /// A token file holding the host's token, and one holding another.
    fn tokens(dir: &Path) -> (PathBuf, PathBuf) {
        let (right, wrong) = (dir.join("token"), dir.join("wrong-token"));
        std::fs::write(&right, "the-token").unwrap();
        std::fs::write(&wrong, "not-the-token").unwrap();
        (right, wrong)
    }

    #[test]
    fn a_host_on_a_unix_socket_is_reached_by_the_same_client() {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("control.sock");
        let (_io, url) = real_host(
            dir.path(),
            plugsync_host::control::Listen::Unix(socket.clone()),
            None,
        );
        assert_eq!(url, format!("unix:{}", socket.display()));
        let (token, wrong) = tokens(dir.path());
        let client = ControlClient::new(Some(&url), Some(&token), None).unwrap();
        let status: Value = client.get_json("v1/status", &[]).unwrap();
        assert_eq!(status["plugins"], serde_json::json!([]));
        let client = ControlClient::new(Some(&url), Some(&wrong), None).unwrap();
        assert!(matches!(
            client.get("v1/status", &[]),
            Err(Error::Unauthorized { .. })
        ));
        // Nobody on the socket: the same one-line error as a closed port.
        let closed = format!("unix:{}", dir.path().join("closed.sock").display());
        let client = ControlClient::new(Some(&closed), Some(&token), None).unwrap();
        let error = client.get("v1/status", &[]).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with(&format!("cannot reach the plugsync host at {closed}: ")),
            "{error}"
        );
    }

    #[test]
    fn an_https_host_is_trusted_through_the_pinned_ca_only() {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
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
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let file = |name: &str, text: String| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            path
        };
        let tls = plugsync_host::control::TlsFiles {
            cert: file("host.pem", cert.pem()),
            key: file("host.key", key.serialize_pem()),
        };
        let (ca, other) = (file("ca.pem", ca_pem), file("other-ca.pem", other_pem));
        let (_io, url) = real_host(
            dir.path(),
            plugsync_host::control::Listen::Tcp("127.0.0.1:0".parse().unwrap()),
            Some(tls),
        );
        assert!(url.starts_with("https://127.0.0.1:"), "{url}");
        let (token, _) = tokens(dir.path());

        let client = ControlClient::new(Some(&url), Some(&token), Some(&ca)).unwrap();
        let status: Value = client.get_json("v1/status", &[]).unwrap();
        assert_eq!(status["plugins"], serde_json::json!([]));

        let client = ControlClient::new(Some(&url), Some(&token), Some(&other)).unwrap();
        let error = client.get("v1/status", &[]).unwrap_err();
        assert!(
            matches!(&error, Error::CertificateRefused { reason, .. } if reason.contains("UnknownIssuer")),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "the plugsync host at {url} presented a certificate that does not verify \
                 against the pinned CA `{}` (invalid peer certificate: UnknownIssuer): pin the \
                 CA that signed the host's `--tls-cert` with `--tls-ca`, and use a host name or \
                 address the certificate names",
                other.display()
            )
        );
    }

    #[test]
    fn https_needs_a_pinned_ca_that_holds_a_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "the-token").unwrap();
        let url = "https://127.0.0.1:7077";
        let error = ControlClient::new(Some(url), Some(&token), None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "`https://127.0.0.1:7077` is HTTPS, and plugsync trusts only the CA you pin for it: \
             pass `--tls-ca FILE` (or set `PLUGSYNC_TLS_CA`) with the CA certificate that signed \
             the host's `--tls-cert`"
        );
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let error = ControlClient::new(Some(url), Some(&token), Some(&empty)).unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "cannot use `{}` as the pinned CA: it holds no `CERTIFICATE` block; give a PEM \
                 file holding the CA certificate that signed the host's `--tls-cert`",
                empty.display()
            )
        );
        // A CA given with a plain `http://` URL is not read: `PLUGSYNC_TLS_CA` may be set for
        // another host.
        let missing = dir.path().join("missing.pem");
        ControlClient::new(Some("http://127.0.0.1:7077"), Some(&token), Some(&missing)).unwrap();
    }
}
