//! The desk in a `plugsync host`, trading with its own feed; artifacts staged with
//! `PUT /v1/artifacts/{sha256}/{file}`, and the steps applied by the apply engine through the
//! same control API ([`HttpHost`]): each a `switch` with a lease and soak thresholds, a soak
//! polling `GET /v1/status` while the host watches health and error rate itself, then `commit`
//! (or the rollback the host made).
//!
//! The host's ledger is not reachable through the control API: after each step the books
//! checked are ma_cross's positions against risk_model's exposures, per instrument. Both
//! plugins book every fill the host feeds them, so a fill lost by either shows as a difference.

use std::collections::BTreeSet;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use plugsync_host::control::api::{RunningState, Staged as StagedArtifact};
use plugsync_host::{Digest, RollbackReport};
use serde_json::Value;

use super::{
    Books, Calls, DemoOptions, DemoOutcome, RISK_START, Reference, STRATEGY_START, Staged, Venue,
    WaitMeter, print_verdict, run_steps,
};
use crate::apply::{HostPort, HttpHost};
use crate::client::ControlClient;
use crate::error::{Error, Result};
use crate::ops::Observe;

/// The plugins the host's desk trades through.
const STRATEGY: &str = "ma_cross";
const RISK: &str = "risk_model";

/// What the books are checked against, for the summary.
const BOOKS_CHECKED: &str = "agree (ma_cross's positions = risk_model's exposures)";

/// The start of the line `plugsync host` prints on stdout once its control API is up (see
/// `ops::host`), followed by the URL.
const READY_LINE: &str = "plugsync host listening on ";

/// How long the spawned host may take to load its plugins and listen.
const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the spawned host may take to stop after SIGTERM (it rolls back a pending step and
/// checkpoints the states).
const STOP_TIMEOUT: Duration = Duration::from_secs(15);

/// How many times the books are read before a difference counts: the two states are
/// snapshotted one after the other while the desk trades, so a fill fed to one plugin and not
/// yet to the other can show for a moment. A lost fill shows in every read.
const BOOK_READS: usize = 20;

/// Runs the demo through the control API of the host at `url`.
pub(super) fn run(
    url: &str,
    token_file: &Path,
    tls_ca: Option<&Path>,
    dir: &Path,
    options: &DemoOptions,
    out: &mut dyn Write,
) -> Result<DemoOutcome> {
    let venue = HostVenue::new(url, token_file, tls_ca)?;
    let _ = writeln!(
        out,
        "plugsync demo: hot updates of a live trading desk, through a host's control API\n  \
         plugins from {}\n  host {url}",
        dir.display()
    );
    let outcome = drive(&venue, dir, options, out)?;
    print_verdict(&outcome, BOOKS_CHECKED, out);
    Ok(outcome)
}

/// Starts a `plugsync host` over a temporary store and token, runs the demo through its
/// control API, and stops it with SIGTERM.
pub(super) fn spawn_and_run(
    program: &Path,
    dir: &Path,
    options: &DemoOptions,
    out: &mut dyn Write,
) -> Result<DemoOutcome> {
    let scratch = Scratch::create()?;
    let host = SpawnedHost::start(program, dir, &scratch)?;
    let _ = writeln!(
        out,
        "plugsync demo: hot updates of a live trading desk, through a host's control API\n  \
         plugins from {}\n  started `plugsync host --feed on --listen 127.0.0.1:0 --load {} \
         --load {}` (pid {}): listening on {}\n  its store, token (0600) and log in {}",
        dir.display(),
        STRATEGY_START,
        RISK_START,
        host.child.id(),
        host.url,
        scratch.dir.display()
    );
    let driven = HostVenue::new(&host.url, &scratch.token, None)
        .and_then(|venue| drive(&venue, dir, options, out));
    let stopped = host.stop(&scratch.log);
    match (driven, stopped) {
        (Ok(outcome), Ok(status)) => {
            let _ = writeln!(
                out,
                "stopped the host with SIGTERM: it exited cleanly ({status}), its states \
                 checkpointed"
            );
            if outcome.passed() {
                scratch.remove();
            } else {
                let _ = writeln!(
                    out,
                    "the host's store and log are kept in {}",
                    scratch.dir.display()
                );
            }
            print_verdict(&outcome, BOOKS_CHECKED, out);
            Ok(outcome)
        }
        (Err(error), _) => {
            let _ = writeln!(
                out,
                "the host's store and log are kept in {}",
                scratch.dir.display()
            );
            Err(error)
        }
        (Ok(_), Err(error)) => Err(error),
    }
}

/// Checks the host runs the demo's starting point, then runs the steps.
fn drive(
    venue: &HostVenue,
    dir: &Path,
    options: &DemoOptions,
    out: &mut dyn Write,
) -> Result<DemoOutcome> {
    venue.check_start()?;
    let _ = writeln!(
        out,
        "  the host runs ma_cross 1.0.0 and risk_model 1.0.0, fed by its own desk\n  \
         books: the host's ledger is not reachable through the control API; after each step, \
         ma_cross's positions are compared with risk_model's exposures per instrument (both \
         book every fill), read with GET /v1/status?with_state=true"
    );
    run_steps(venue, dir, options, out)
}

/// A host, through its control API.
struct HostVenue {
    client: ControlClient,
    /// The file holding its bearer token.
    token_file: PathBuf,
    /// The CA its certificate must verify against, for an `https://` URL.
    tls_ca: Option<PathBuf>,
}

impl HostVenue {
    /// The host at `url`.
    fn new(url: &str, token_file: &Path, tls_ca: Option<&Path>) -> Result<HostVenue> {
        Ok(HostVenue {
            client: ControlClient::new(Some(url), Some(token_file), tls_ca)?,
            token_file: token_file.to_owned(),
            tls_ca: tls_ca.map(Path::to_owned),
        })
    }

    fn status(&self, with_state: bool) -> Result<RunningState> {
        let query: &[(&str, &str)] = if with_state {
            &[("with_state", "true")]
        } else {
            &[]
        };
        self.client.get_json("v1/status", query)
    }

    /// The host runs ma_cross 1.0.0 and risk_model 1.0.0, no step pending.
    fn check_start(&self) -> Result<()> {
        let status = self.status(false)?;
        let ready = [STRATEGY, RISK].iter().all(|id| {
            status
                .status
                .plugins
                .iter()
                .any(|p| p.plugin == *id && p.version.version == "1.0.0" && p.pending.is_none())
        });
        if ready {
            return Ok(());
        }
        let running: Vec<String> = status
            .status
            .plugins
            .iter()
            .map(|p| {
                let pending = if p.pending.is_some() {
                    " (a step pending)"
                } else {
                    ""
                };
                format!("`{}` {}{pending}", p.plugin, p.version.version)
            })
            .collect();
        Err(Error::DemoHostNotAtStart {
            url: self.client.url().to_owned(),
            found: if running.is_empty() {
                "no plugin".to_owned()
            } else {
                running.join(", ")
            },
        })
    }

    fn bad_answer(&self, reason: String) -> Error {
        Error::BadAnswer {
            url: self.client.url().to_owned(),
            status: 200,
            reason,
        }
    }

    /// One read of both plugins' books: how many instruments, and the differences.
    fn read_books(&self) -> Result<(usize, Vec<String>)> {
        let status = self.status(true)?;
        let states = status.states.unwrap_or_default();
        let state = |id: &str| -> Result<Value> {
            let snapshot = states
                .get(id)
                .ok_or_else(|| self.bad_answer(format!("no state of `{id}` in its status")))?;
            serde_json::from_str(&snapshot.state)
                .map_err(|e| self.bad_answer(format!("the state of `{id}` is not JSON: {e}")))
        };
        let (strategy, risk) = (state(STRATEGY)?, state(RISK)?);
        let instruments: BTreeSet<&String> = [&strategy, &risk]
            .iter()
            .filter_map(|s| s["instruments"].as_object())
            .flat_map(|m| m.keys())
            .collect();
        let mut problems = Vec::new();
        for instrument in &instruments {
            let held = strategy["instruments"][instrument.as_str()]["position"]
                .as_i64()
                .unwrap_or(0);
            let exposure = risk["instruments"][instrument.as_str()]["exposure"]
                .as_i64()
                .unwrap_or(0);
            if held != exposure {
                problems.push(format!(
                    "{instrument}: ma_cross {held}, risk_model {exposure}"
                ));
            }
        }
        Ok((instruments.len(), problems))
    }
}

impl Venue for HostVenue {
    fn name(&self) -> String {
        format!("the host at {}", self.client.url())
    }

    fn stage(&self, library: &Path) -> Result<Staged> {
        let bytes = std::fs::read(library).map_err(|source| Error::Io {
            action: "read",
            path: library.to_owned(),
            source,
        })?;
        let digest = Digest::of(&bytes);
        let file = library
            .file_name()
            .and_then(|name| name.to_str())
            .expect("the demo's libraries have plain names");
        let staged: StagedArtifact = self
            .client
            .put_bytes(&format!("v1/artifacts/{digest}/{file}"), bytes)?;
        Ok(Staged {
            digest: staged.sha256,
            version: staged.metadata.version,
        })
    }

    fn calls(&self) -> Result<Calls> {
        let status = self.status(false)?;
        Ok(status
            .status
            .plugins
            .iter()
            .filter(|p| p.plugin == STRATEGY || p.plugin == RISK)
            .fold(Calls::default(), |c, p| Calls {
                served: c.served + p.counters.calls,
                failed: c.failed + p.counters.errors,
            }))
    }

    fn books(&self) -> Result<Books> {
        let mut problems = Vec::new();
        for read in 1..=BOOK_READS {
            let (instruments, found) = self.read_books()?;
            if found.is_empty() {
                let retried = if read > 1 {
                    format!(", at read {read}: a fill was in flight before")
                } else {
                    String::new()
                };
                return Ok(Books {
                    agreed: format!(
                        "agree on {instruments} instruments (ma_cross's positions = \
                         risk_model's exposures{retried})"
                    ),
                    problems: Vec::new(),
                });
            }
            problems = found;
            std::thread::sleep(Duration::from_millis(10));
        }
        problems.push(format!("the same in each of {BOOK_READS} reads"));
        Ok(Books {
            agreed: String::new(),
            problems,
        })
    }

    fn reference(&self, _plugin: &str) -> Result<Reference> {
        Ok(Reference::Unavailable(
            "the host's feed calls its plugins inside the host, out of the demo's sight: the \
             rollback's report is the host's own account"
                .to_owned(),
        ))
    }

    fn observe(&self) -> Observe {
        Observe::Host {
            url: self.client.url().to_owned(),
            token_file: Some(self.token_file.clone()),
            tls_ca: self.tls_ca.clone(),
        }
    }

    fn port(&self) -> Result<Box<dyn HostPort>> {
        let host = HttpHost::new(
            self.client.url(),
            Some(&self.token_file),
            self.tls_ca.as_deref(),
        )?;
        Ok(Box::new(host))
    }

    fn meter(&self) -> Option<&dyn WaitMeter> {
        None
    }

    fn last_rollback(&self, plugin: &str) -> Result<Option<RollbackReport>> {
        let status = self.status(false)?;
        let plugin = status
            .status
            .plugins
            .into_iter()
            .find(|p| p.plugin == plugin);
        Ok(plugin.and_then(|p| p.last_rollback))
    }
}

/// A prefix for the spawned host's directory, unique on this machine.
fn run_id() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("demo-{secs}-{}", std::process::id())
}

/// The spawned host's directory: its store, token file and log.
struct Scratch {
    dir: PathBuf,
    store: PathBuf,
    token: PathBuf,
    log: PathBuf,
}

impl Scratch {
    /// A fresh directory (mode 0700) with a random token in a 0600 file.
    fn create() -> Result<Scratch> {
        let dir = std::env::temp_dir().join(format!("plugsync-{}-host", run_id()));
        let io = |action: &'static str, path: &Path| {
            let path = path.to_owned();
            move |source| Error::Io {
                action,
                path,
                source,
            }
        };
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(io("create", &dir))?;
        let token = dir.join("token");
        let mut random = [0u8; 32];
        let urandom = Path::new("/dev/urandom");
        File::open(urandom)
            .and_then(|mut f| f.read_exact(&mut random))
            .map_err(io("read", urandom))?;
        let hex: String = random.iter().map(|b| format!("{b:02x}")).collect();
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&token)
            .and_then(|mut f| f.write_all(hex.as_bytes()))
            .map_err(io("write", &token))?;
        Ok(Scratch {
            store: dir.join("store"),
            log: dir.join("host.log"),
            token,
            dir,
        })
    }

    fn remove(self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A `plugsync host` child process; killed if dropped while still running.
struct SpawnedHost {
    child: Child,
    url: String,
}

impl SpawnedHost {
    /// Starts `program host …` and waits for its ready line.
    fn start(program: &Path, dir: &Path, scratch: &Scratch) -> Result<SpawnedHost> {
        let log = File::create(&scratch.log).map_err(|source| Error::Io {
            action: "create",
            path: scratch.log.clone(),
            source,
        })?;
        let mut child = Command::new(program)
            .args(["host", "--feed", "on", "--listen", "127.0.0.1:0", "--store"])
            .arg(&scratch.store)
            .arg("--token-file")
            .arg(&scratch.token)
            .arg("--load")
            .arg(dir.join(STRATEGY_START))
            .arg("--load")
            .arg(dir.join(RISK_START))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .map_err(|source| Error::Io {
                action: "run",
                path: program.to_owned(),
                source,
            })?;
        // Its stdout is read to the end by a thread of its own, so that it never blocks.
        let stdout = child.stdout.take().expect("stdout is piped");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = send.send(line);
            }
        });
        let mut host = SpawnedHost {
            child,
            url: String::new(),
        };
        let failed = |why: String| Error::DemoHostStart {
            why,
            log: scratch.log.clone(),
        };
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix(READY_LINE) {
                        host.url = url.trim().to_owned();
                        return Ok(host);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    return Err(failed(format!(
                        "it printed no ready line within {} s",
                        READY_TIMEOUT.as_secs()
                    )));
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = host.child.wait().map_or_else(
                        |e| format!("cannot wait for it: {e}"),
                        |status| status.to_string(),
                    );
                    return Err(failed(format!("it exited ({status}) before it was ready")));
                }
            }
        }
    }

    /// Sends SIGTERM and waits for the host to stop (killing it if it does not in time).
    fn stop(mut self, log: &Path) -> Result<ExitStatus> {
        let failed = |status: String| Error::DemoHostStop {
            status,
            log: log.to_owned(),
        };
        // kill(1): std has no way to send SIGTERM, and this crate allows no `unsafe`.
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-s", "TERM", &pid]).status();
        if !sent.as_ref().is_ok_and(ExitStatus::success) {
            let _ = self.child.kill();
            let _ = self.child.wait();
            return Err(failed(format!(
                "`kill -s TERM {pid}` failed ({}), so it was killed",
                sent.map_or_else(|e| e.to_string(), |s| s.to_string())
            )));
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(status),
                Ok(Some(status)) => return Err(failed(status.to_string())),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return Err(failed(format!(
                        "still running {} s after it, so it was killed",
                        STOP_TIMEOUT.as_secs()
                    )));
                }
                Err(error) => return Err(failed(format!("cannot wait for it: {error}"))),
            }
        }
    }
}

impl Drop for SpawnedHost {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
