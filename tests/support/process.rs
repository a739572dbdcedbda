//! A `plugsync` process under test: its output collected as it comes, killed when dropped;
//! and a `plugsync host` started on a free port with its ready line awaited.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{DEADLINE, json as parse_json};

/// The plugsync binary under test.
pub const PLUGSYNC: &str = env!("CARGO_BIN_EXE_plugsync");

/// What a host prints when it is ready, before its URL.
pub const READY: &str = "plugsync host listening on http://";

/// A running `plugsync` process: its output collected as it comes, killed and reaped when
/// dropped (even when the test fails).
pub struct Proc {
    pub child: Child,
    lines: Receiver<String>,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

/// How a process ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

fn collect(
    pipe: impl Read + Send + 'static,
    into: Arc<Mutex<String>>,
    lines: Option<mpsc::Sender<String>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            into.lock().unwrap().push_str(&format!("{line}\n"));
            if let Some(lines) = &lines {
                let _ = lines.send(line);
            }
        }
    })
}

impl Proc {
    /// Starts `plugsync ARGS` with a clean environment for plugsync's own variables.
    pub fn spawn<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &OsStr)]) -> Proc {
        let mut command = Command::new(PLUGSYNC);
        command
            .args(args)
            .env_remove("PLUGSYNC_HOST")
            .env_remove("PLUGSYNC_TOKEN_FILE")
            .env_remove("PLUGSYNC_TLS_CA")
            .env_remove("PLUGSYNC_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (key, value) in env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("the plugsync binary starts");
        let (stdout, stderr) = (Arc::default(), Arc::default());
        let (send, lines) = mpsc::channel();
        let readers = vec![
            collect(
                child.stdout.take().unwrap(),
                Arc::clone(&stdout),
                Some(send),
            ),
            collect(child.stderr.take().unwrap(), Arc::clone(&stderr), None),
        ];
        Proc {
            child,
            lines,
            stdout,
            stderr,
            readers,
        }
    }

    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits for a line of stdout starting with `prefix`, failing (with the log) at the
    /// deadline or if the process ends first.
    pub fn line_starting(&mut self, prefix: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            match self
                .lines
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no `{prefix}` line in time; stderr:\n{}", self.stderr())
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().unwrap();
                    panic!(
                        "plugsync ended ({status}) before printing `{prefix}`; stderr:\n{}",
                        self.stderr()
                    )
                }
            }
        }
    }

    /// Sends a signal (`TERM`, `INT`, …) with kill(1).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .expect("kill(1) runs");
        assert!(status.success(), "kill -s {name} failed");
    }

    /// Waits for the process to end, failing at the deadline.
    pub fn wait(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "plugsync did not end in time; stderr:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for the process to end (failing at the deadline) and collects its output.
    pub fn finish(mut self) -> Finished {
        let status = self.wait();
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        Finished {
            status,
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.stderr(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs a short `plugsync` command to its end.
pub fn plugsync<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &OsStr)]) -> Finished {
    Proc::spawn(args, env).finish()
}

/// Writes a token file with the given mode.
pub fn token_file(dir: &Path, name: &str, token: &str, mode: u32) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, format!("{token}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

/// A `plugsync host` that printed its ready line.
pub struct Host {
    pub proc: Proc,
    pub url: String,
}

impl Host {
    /// Starts `plugsync host --listen 127.0.0.1:0 --token-file TOKEN --store STORE ARGS` and
    /// waits until it is ready.
    pub fn start<S: AsRef<OsStr>>(store: &Path, token: &Path, args: &[S]) -> Host {
        Host::start_with_env(store, token, args, &[])
    }

    /// As [`Host::start`], with environment variables set (fail points, say).
    pub fn start_with_env<S: AsRef<OsStr>>(
        store: &Path,
        token: &Path,
        args: &[S],
        env: &[(&str, &OsStr)],
    ) -> Host {
        Host::start_on("127.0.0.1:0", store, token, args, env)
    }

    /// As [`Host::start_with_env`], listening on `listen` (a restarted host on its old port).
    pub fn start_on<S: AsRef<OsStr>>(
        listen: &str,
        store: &Path,
        token: &Path,
        args: &[S],
        env: &[(&str, &OsStr)],
    ) -> Host {
        let mut all: Vec<&OsStr> = vec![
            "host".as_ref(),
            "--listen".as_ref(),
            listen.as_ref(),
            "--token-file".as_ref(),
            token.as_os_str(),
            "--store".as_ref(),
            store.as_os_str(),
        ];
        all.extend(args.iter().map(AsRef::<OsStr>::as_ref));
        let mut proc = Proc::spawn(&all, env);
        let ready = proc.line_starting(READY);
        let url = ready["plugsync host listening on ".len()..].to_owned();
        Host { proc, url }
    }

    /// `plugsync status --host URL --token-file TOKEN ARGS`.
    pub fn status(&self, token: &Path, args: &[&str]) -> Finished {
        let mut all: Vec<&OsStr> = vec![
            "status".as_ref(),
            "--host".as_ref(),
            self.url.as_ref(),
            "--token-file".as_ref(),
            token.as_os_str(),
        ];
        all.extend(args.iter().map(OsStr::new));
        plugsync(&all, &[])
    }

    /// Sends SIGTERM and returns how it ended.
    pub fn terminate(self) -> Finished {
        self.proc.signal("TERM");
        self.proc.finish()
    }
}

/// The control API, driven directly (what the sidecar will do).
pub struct Api {
    pub url: String,
    token: String,
    http: reqwest::Client,
    io: tokio::runtime::Runtime,
}

impl Api {
    pub fn new(host: &Host, token: &str) -> Api {
        Api::at(&host.url, token)
    }

    /// The control API at `url` (a host this test did not start: `plugsync run --embedded`).
    pub fn at(url: &str, token: &str) -> Api {
        Api {
            url: url.to_owned(),
            token: token.to_owned(),
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            io: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    pub fn send(&self, request: reqwest::RequestBuilder) -> Value {
        self.io.block_on(async {
            let response = request.bearer_auth(&self.token).send().await.unwrap();
            let status = response.status();
            let body = response.text().await.unwrap();
            assert!(status.is_success(), "the host answered {status}: {body}");
            parse_json(body.as_bytes())
        })
    }

    pub fn get(&self, path: &str) -> Value {
        self.send(self.http.get(format!("{}{path}", self.url)))
    }

    pub fn post(&self, path: &str, body: Value) -> Value {
        self.send(self.http.post(format!("{}{path}", self.url)).json(&body))
    }

    /// `POST path`, whatever the host answers: its status and JSON body.
    pub fn try_post(&self, path: &str, body: Value) -> (u16, Value) {
        let request = self.http.post(format!("{}{path}", self.url)).json(&body);
        self.io.block_on(async {
            let response = request.bearer_auth(&self.token).send().await.unwrap();
            let status = response.status().as_u16();
            let body = response.text().await.unwrap();
            (status, parse_json(body.as_bytes()))
        })
    }

    /// Stages a library file and returns its sha256.
    pub fn stage(&self, library: &Path) -> String {
        let bytes = std::fs::read(library).unwrap();
        let sha256 = plugsync_host::Digest::of(&bytes).to_string();
        let name = library.file_name().unwrap().to_str().unwrap();
        let url = format!("{}/v1/artifacts/{sha256}/{name}", self.url);
        self.send(self.http.put(url).body(bytes));
        sha256
    }

    /// Switches `plugin` to a library and commits, as step `step`.
    pub fn upgrade(&self, step: &str, plugin: &str, library: &Path) {
        let artifact = self.stage(library);
        self.post(
            &format!("/v1/steps/{step}/switch"),
            json!({"plugin": plugin, "artifact": artifact}),
        );
        self.post(
            &format!("/v1/steps/{step}/commit"),
            json!({"plugin": plugin}),
        );
    }

    pub fn status(&self) -> Value {
        self.get("/v1/status")
    }

    /// Sends a request that may never be answered (the host dies on the way).
    pub fn post_unanswered(&self, path: &str, body: Value) {
        let request = self.http.post(format!("{}{path}", self.url)).json(&body);
        let answered = self
            .io
            .block_on(async { request.bearer_auth(&self.token).send().await });
        assert!(answered.is_err(), "the host answered: {answered:?}");
    }

    /// The state of `plugin`, as JSON.
    pub fn state(&self, plugin: &str) -> Value {
        let snapshot = self.get(&format!("/v1/plugins/{plugin}/state"));
        parse_json(snapshot["state"].as_str().unwrap().as_bytes())
    }

    pub fn plugin(&self, id: &str) -> Value {
        let status = self.status();
        status["plugins"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["plugin"] == id)
            .unwrap_or_else(|| panic!("no `{id}` in the status: {status}"))
            .clone()
    }
}
