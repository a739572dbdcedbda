//! What the control API's test binaries share: the plugin libraries of the workspace, a host
//! served on 127.0.0.1 over a fresh store, and its answers.
#![allow(dead_code)] // each test binary uses a part of it

use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use plugsync_host::control::{ControlConfig, ControlError, ControlServer};
use plugsync_host::{Digest, HostTime, ManualClock, Runtime, RuntimeOptions};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tempfile::TempDir;

pub const TOKEN: &str = "t0ken-for-tests";
/// The token of client `laptop` in a host of [`Host::start_with_clients`].
pub const LAPTOP_TOKEN: &str = "laptop-t0ken-for-tests";
/// The token of client `ops` in a host of [`Host::start_with_clients`].
pub const OPS_TOKEN: &str = "ops-t0ken-for-tests";
pub const MA_CROSS_1_0_0: &str = "ma_cross_v1_0_0";
pub const MA_CROSS_2_0_0: &str = "ma_cross_v2_0_0";
pub const FAULT_CALL: &str = "ma_cross_fault_call";
pub const RISK_MODEL_1_0_0: &str = "risk_model_v1_0_0";
/// How long a poll waits for something that should happen almost at once.
pub const DEADLINE: Duration = Duration::from_secs(60);

// ---- the plugin libraries (as `tests/support` of the workspace finds them) ----

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Builds every library of the workspace once per test binary, in the profile of the tests,
/// and returns the directory they are in (`target/<profile>`, where this binary's `deps` is).
pub fn built() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"));
        let mut command = Command::new(cargo);
        command
            .args(["build", "--workspace", "--lib", "--quiet"])
            .current_dir(workspace());
        if !cfg!(debug_assertions) {
            command.arg("--release");
        }
        let output = command.output().expect("cargo runs");
        assert!(
            output.status.success(),
            "building the plugin libraries failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let exe = std::env::current_exe().expect("the test binary knows its path");
        exe.parent()
            .and_then(Path::parent)
            .expect("the test binary lives in <target>/<profile>/deps")
            .to_owned()
    })
}

/// The bytes of a built library, e.g. `library("ma_cross_v1_0_0")`, and its file name.
pub fn library(name: &str) -> (Vec<u8>, String) {
    let file = format!("lib{name}.so");
    let path = built().join(&file);
    let bytes =
        std::fs::read(&path).unwrap_or_else(|e| panic!("`{}` was not built: {e}", path.display()));
    (bytes, file)
}

/// A config of ma_cross 1.0.0.
pub fn v1_config() -> Value {
    json!({"fast_ma_period": 2, "slow_ma_period": 4})
}

pub fn bar(instrument: &str, close: f64) -> Vec<u8> {
    json!({"bar": {"instrument": instrument, "close": close}})
        .to_string()
        .into_bytes()
}

// ---- a host with its control API ----

/// A runtime over a fresh store, served by a control API on 127.0.0.1 with a fresh token.
pub struct Host {
    pub dir: TempDir,
    pub runtime: Runtime,
    pub url: String,
    pub client: reqwest::Client,
    /// The clock its runtime reads, when the test moves it (kept across a restart).
    pub clock: Option<Arc<ManualClock>>,
    /// The token file it was served with (kept across a restart).
    pub token_file: PathBuf,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    pub served: Option<tokio::task::JoinHandle<Result<(), ControlError>>>,
}

/// The options of a test runtime over `dir/store`, reading `clock` if given.
fn options(dir: &Path, clock: Option<&Arc<ManualClock>>) -> RuntimeOptions {
    let mut options = RuntimeOptions::new(dir.join("store"));
    if let Some(clock) = clock {
        options.clock = clock.clone();
    }
    options
}

/// A file holding `TOKEN` with mode 0600.
pub fn token_file(dir: &Path) -> PathBuf {
    let path = dir.join("token");
    std::fs::write(&path, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// A token file of named clients, one `name token` line each, with mode 0600.
pub fn clients_file(dir: &Path, clients: &[(&str, &str)]) -> PathBuf {
    let path = dir.join("tokens");
    let mut text = String::from("# the clients of this host\n");
    for (name, token) in clients {
        text.push_str(&format!("{name} {token}\n"));
    }
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// The clients of [`Host::start_with_clients`]: `sidecar` (whose token, [`TOKEN`], every
/// request of [`Host`] carries), `laptop` and `ops`.
pub const CLIENTS: [(&str, &str); 3] = [
    ("sidecar", TOKEN),
    ("laptop", LAPTOP_TOKEN),
    ("ops", OPS_TOKEN),
];

impl Host {
    pub async fn start() -> Host {
        Host::start_with(|_, _| {}).await
    }

    pub async fn start_with(configure: impl FnOnce(&mut ControlConfig, &Path)) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let runtime = Runtime::new(RuntimeOptions::new(dir.path().join("store"))).unwrap();
        Host::serve(dir, runtime, configure).await
    }

    /// A host whose runtime reads a [`ManualClock`] the test moves (`host.clock`).
    pub async fn start_with_manual_clock() -> Host {
        Host::start_with_manual_clock_and(|_, _| {}).await
    }

    /// A host with a [`ManualClock`] whose token file names `clients` (`name`, `token`);
    /// requests through `host` carry [`TOKEN`], through `host.as_client(token)` another.
    pub async fn start_with_clients(clients: &[(&str, &str)]) -> Host {
        Host::start_with_manual_clock_and(|config, dir| {
            config.token_file = clients_file(dir, clients);
        })
        .await
    }

    async fn start_with_manual_clock_and(
        configure: impl FnOnce(&mut ControlConfig, &Path),
    ) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let clock = Arc::new(ManualClock::starting_at(HostTime(
            1_700_000_000_000_000_000,
        )));
        let runtime = Runtime::new(options(dir.path(), Some(&clock))).unwrap();
        let mut host = Host::serve(dir, runtime, configure).await;
        host.clock = Some(clock);
        host
    }

    /// Requests carrying `token` instead of [`TOKEN`]: another client's.
    pub fn as_client<'a>(&'a self, token: &'a str) -> As<'a> {
        As { host: self, token }
    }

    /// Moves the host's manual clock on by `ms`.
    pub fn advance_ms(&self, ms: i64) {
        let clock = self
            .clock
            .as_ref()
            .expect("a host started with a manual clock");
        clock.advance(ms * 1_000_000);
    }

    /// A POST carrying the reconcile lease epoch `epoch` in `x-plugsync-lease-epoch`.
    pub async fn post_with_epoch(&self, path: &str, body: Value, epoch: u64) -> Answer {
        self.as_client(TOKEN)
            .post_with_epoch(path, body, epoch)
            .await
    }

    /// The host restarted, as a process would be: the server stopped, the runtime dropped, a
    /// new runtime over the same store recovering the committed set, served again.
    pub async fn restart(mut self) -> Host {
        self.stop.take().unwrap().send(()).unwrap();
        self.served.take().unwrap().await.unwrap().unwrap();
        let Host {
            dir,
            runtime,
            clock,
            token_file,
            ..
        } = self;
        drop(runtime);
        let runtime = Runtime::new(options(dir.path(), clock.as_ref())).unwrap();
        runtime.recover().expect("the store recovers");
        let mut host = Host::serve(dir, runtime, |config, _| config.token_file = token_file).await;
        host.clock = clock;
        host
    }

    /// `runtime` served with a fresh token under `dir`.
    pub async fn serve(
        dir: TempDir,
        runtime: Runtime,
        configure: impl FnOnce(&mut ControlConfig, &Path),
    ) -> Host {
        let mut config = ControlConfig::new(token_file(dir.path()));
        config.listen = "127.0.0.1:0".parse().unwrap();
        configure(&mut config, dir.path());
        let token_file = config.token_file.clone();
        let server = ControlServer::bind(runtime.clone(), config).await.unwrap();
        let url = server.url().to_owned();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(server.serve(async {
            stopped.await.ok();
        }));
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        Host {
            dir,
            runtime,
            url,
            client,
            clock: None,
            token_file,
            stop: Some(stop),
            served: Some(served),
        }
    }

    /// Stops the server and waits for it.
    pub async fn shutdown(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.served.take().unwrap().await.unwrap().unwrap();
    }

    pub fn artifacts(&self) -> PathBuf {
        self.dir.path().join("store/artifacts")
    }

    /// Every file under the store's artifacts (nothing is written by a refused stage).
    pub fn stored_files(&self) -> Vec<String> {
        fn walk(dir: &Path, out: &mut Vec<String>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    out.push(path.display().to_string());
                }
            }
        }
        let mut files = Vec::new();
        walk(&self.artifacts(), &mut files);
        files
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        self.send_with(TOKEN, request).await
    }

    /// Sends `request` with the bearer token `token`.
    pub async fn send_with(&self, token: &str, request: reqwest::RequestBuilder) -> Answer {
        let response = request
            .bearer_auth(token)
            .send()
            .await
            .expect("the request reaches the server");
        Answer::read(response).await
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.as_client(TOKEN).get(path).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        self.as_client(TOKEN).post(path, body).await
    }

    /// A POST of a body exactly as written (key order and spacing kept).
    pub async fn post_raw(&self, path: &str, body: String) -> Answer {
        let request = self
            .client
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body);
        self.send(request).await
    }

    /// `PUT /v1/artifacts/{sha256}/{name}` (the name as given: already percent-encoded).
    pub async fn put(
        &self,
        sha256: &str,
        name: &str,
        bytes: Vec<u8>,
        signature: Option<&str>,
    ) -> Answer {
        let mut request = self
            .client
            .put(format!("{}/v1/artifacts/{sha256}/{name}", self.url))
            .body(bytes);
        if let Some(signature) = signature {
            request = request.header("x-plugsync-signature", signature);
        }
        self.send(request).await
    }

    /// Stages a built library through the API; returns its digest.
    /// Stages and installs risk_model 1.0.0 (step `install-risk`), which ma_cross 1.0.0 and
    /// 2.0.0 declare they need.
    pub async fn install_risk_model(&self) {
        let risk = self.stage(RISK_MODEL_1_0_0).await;
        self.post(
            "/v1/steps/install-risk/install",
            json!({"artifact": risk, "config": {}}),
        )
        .await
        .expect_ok();
    }

    pub async fn stage(&self, name: &str) -> Digest {
        let (bytes, file) = library(name);
        let digest = Digest::of(&bytes);
        let answer = self.put(&digest.to_string(), &file, bytes, None).await;
        answer.expect_ok();
        assert_eq!(answer.body["sha256"], digest.to_string());
        digest
    }
}

/// A host's requests as another client sends them (with its own token).
#[derive(Clone, Copy)]
pub struct As<'a> {
    pub host: &'a Host,
    pub token: &'a str,
}

impl As<'_> {
    pub async fn get(&self, path: &str) -> Answer {
        let host = self.host;
        host.send_with(self.token, host.client.get(format!("{}{path}", host.url)))
            .await
    }

    pub async fn post(&self, path: &str, body: Value) -> Answer {
        let host = self.host;
        let request = host.client.post(format!("{}{path}", host.url)).json(&body);
        host.send_with(self.token, request).await
    }

    /// A POST carrying the reconcile lease epoch `epoch` in `x-plugsync-lease-epoch`.
    pub async fn post_with_epoch(&self, path: &str, body: Value, epoch: u64) -> Answer {
        let host = self.host;
        let request = host
            .client
            .post(format!("{}{path}", host.url))
            .header("x-plugsync-lease-epoch", epoch.to_string())
            .json(&body);
        host.send_with(self.token, request).await
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    pub async fn read(response: reqwest::Response) -> Answer {
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("a response body");
        let body = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("a {status} response is not JSON ({e}): {text}"));
        Answer {
            status,
            headers,
            body,
        }
    }

    pub fn expect_ok(&self) -> &Value {
        assert_eq!(self.status, StatusCode::OK, "{:#}", self.body);
        &self.body
    }

    pub fn expect_error(&self, status: StatusCode, code: &str) -> &str {
        assert_eq!(
            (self.status, self.body["error"]["code"].as_str()),
            (status, Some(code)),
            "{:#}",
            self.body
        );
        self.body["error"]["message"].as_str().unwrap()
    }

    pub fn replayed(&self) -> bool {
        self.headers
            .get("x-plugsync-replayed")
            .is_some_and(|v| v == "true")
    }
}

/// Polls `done` every few milliseconds until it holds, failing with `what` after [`DEADLINE`].
pub async fn poll_until<F: std::future::Future<Output = bool>>(
    what: &str,
    mut done: impl FnMut() -> F,
) {
    let deadline = Instant::now() + DEADLINE;
    while !done().await {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
