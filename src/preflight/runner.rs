//! The parent side: spawn the child, feed it the job, bound it in time, read its verdict.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::error::{PreflightError, PreviewStage, StderrTail};
use super::{PreviewJob, Progress, StepPreview};

/// How long a preview may take when the caller does not say (`--preview-timeout`).
pub const DEFAULT_PREVIEW_TIMEOUT: Duration = Duration::from_secs(30);

/// The hidden command of the `plugsync` binary that runs a job.
pub(crate) const CHILD_COMMAND: &str = "preflight-child";

/// How often the child's exit is polled while waiting: short against any timeout an operator
/// would give, long enough to cost nothing.
const POLL: Duration = Duration::from_millis(10);

/// The most the child's stdout is read into memory (the states of a chain, as JSON); past it
/// the rest is drained and the answer refused, so a plugin that floods stdout cannot exhaust
/// the parent.
const STDOUT_CAP: u64 = 256 << 20;

/// How much of the end of the child's stderr is kept, and how many of its lines are shown.
const STDERR_KEPT: usize = 64 << 10;
const STDERR_LINES: usize = 8;
const STDERR_LINE_CHARS: usize = 200;

/// How previews are run: which `plugsync` executable is the child, and for how long it may
/// run.
#[derive(Debug, Clone)]
pub struct ChildRunner {
    program: PathBuf,
    timeout: Duration,
    env: Vec<(OsString, OsString)>,
}

impl ChildRunner {
    /// Runs `program` (a `plugsync` binary: `std::env::current_exe()` in the CLI,
    /// `env!("CARGO_BIN_EXE_plugsync")` in tests), killing it after `timeout`.
    pub fn new(program: impl Into<PathBuf>, timeout: Duration) -> ChildRunner {
        ChildRunner {
            program: program.into(),
            timeout,
            env: Vec::new(),
        }
    }

    /// Sets an environment variable for the child (besides this process's environment),
    /// e.g. a test fixture's fault switch.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> ChildRunner {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The executable run.
    pub fn program(&self) -> &Path {
        &self.program
    }

    /// How long one preview may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Previews `job` in a child process: each step's config and state after it, computed by the
/// real migration on the job's artifacts, in order. A job without steps returns at once.
pub fn preview(job: &PreviewJob, runner: &ChildRunner) -> Result<Vec<StepPreview>, PreflightError> {
    if job.steps.is_empty() {
        return Ok(Vec::new());
    }
    let io = |action| {
        let plugin = job.plugin.clone();
        move |source| PreflightError::Io {
            plugin,
            action,
            source,
        }
    };
    // The parent owns the child's store: removed when this returns, whatever the child did.
    let dir = tempfile::Builder::new()
        .prefix("plugsync-preflight-")
        .tempdir()
        .map_err(io("create a temporary store"))?;
    // The child runs in that directory (a core dump it leaves goes with it), so the job's
    // paths are made absolute first.
    let input =
        serde_json::to_vec(&absolute(job).map_err(io("make the artifacts' paths absolute"))?)
            .map_err(|e| PreflightError::BadJob {
                plugin: job.plugin.clone(),
                reason: e.to_string(),
            })?;
    // A relative program path would be ambiguous once the directory changes: a bare name is
    // looked up in `PATH`, any other path is taken from here.
    let program = if runner.program.components().count() > 1 {
        std::path::absolute(&runner.program).map_err(io("find the preview program"))?
    } else {
        runner.program.clone()
    };
    let mut child = Command::new(&program)
        .arg(CHILD_COMMAND)
        .arg("--store")
        .arg(dir.path().join("store"))
        .envs(runner.env.iter().map(|(k, v)| (k, v)))
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| PreflightError::Spawn {
            plugin: job.plugin.clone(),
            program: runner.program.clone(),
            source,
        })?;
    // Each pipe has its own thread, so that a child blocked writing one never waits for a
    // parent blocked on another.
    let writer = child.stdin.take().map(|mut stdin| {
        std::thread::spawn(move || {
            // A child that dies before reading it all closes the pipe: its fate tells why.
            let _ = stdin.write_all(&input);
        })
    });
    let stdout = child
        .stdout
        .take()
        .map(|out| spawn_reader(out, read_stdout));
    let stderr = child
        .stderr
        .take()
        .map(|err| spawn_reader(err, read_stderr_tail));

    let waited = wait_bounded(&mut child, runner.timeout).map_err(io("wait for the child"));
    // Killed or exited, the child's ends of the pipes are closed: the threads finish.
    if let Some(writer) = writer {
        let _ = writer.join();
    }
    let stdout = join(stdout).unwrap_or_default();
    let stderr = StderrTail(tail_lines(&join(stderr).unwrap_or_default()));
    let status = waited?;

    let Answer {
        stage,
        previews,
        outcome,
        overflowed,
    } = Answer::read(job, &stdout);
    let stage = Box::new(stage);
    match status {
        Waited::TimedOut => Err(PreflightError::TimedOut {
            stage,
            timeout: runner.timeout,
            stderr,
        }),
        Waited::Exited(status) => match (status.signal(), outcome) {
            (Some(signal), _) => Err(PreflightError::Crashed {
                stage,
                signal,
                signal_name: signal_name(signal),
                stderr,
            }),
            (None, Some(Outcome::Done)) if previews.len() == job.steps.len() => Ok(previews),
            (None, Some(Outcome::Failed(message))) => {
                Err(PreflightError::Failed { stage, message })
            }
            (None, outcome) => Err(PreflightError::NoResult {
                stage,
                reason: match (outcome, status.code(), overflowed) {
                    (_, _, true) => "it wrote more than 256 MiB".to_owned(),
                    (Some(_), _, _) => format!(
                        "it reported {} of {} steps done",
                        previews.len(),
                        job.steps.len()
                    ),
                    (None, Some(0), _) => "it exited without one".to_owned(),
                    (None, code, _) => format!("it exited with {}", describe_code(code)),
                },
                stderr,
            }),
        },
    }
}

/// `job` with its artifacts' paths made absolute (against the current directory; no file is
/// read).
fn absolute(job: &PreviewJob) -> std::io::Result<PreviewJob> {
    let mut job = job.clone();
    job.running.path = std::path::absolute(&job.running.path)?;
    for step in &mut job.steps {
        step.artifact.path = std::path::absolute(&step.artifact.path)?;
    }
    Ok(job)
}

fn describe_code(code: Option<i32>) -> String {
    match code {
        Some(code) => format!("code {code}"),
        None => "no code".to_owned(),
    }
}

enum Waited {
    Exited(ExitStatus),
    TimedOut,
}

/// Waits for the child until `timeout`; past it, kills and reaps it.
fn wait_bounded(child: &mut Child, timeout: Duration) -> std::io::Result<Waited> {
    let deadline = Instant::now() + timeout;
    loop {
        let polled = child.try_wait();
        let now = Instant::now();
        match polled {
            Ok(Some(status)) => return Ok(Waited::Exited(status)),
            Ok(None) if now < deadline => std::thread::sleep(POLL.min(deadline - now)),
            // Past the deadline, or the child cannot be watched: a child left running would
            // hold its pipes (and the threads reading them) open for ever.
            _ => {
                // SIGKILL: a hung migration cannot refuse it. An error means it exited
                // meanwhile; either way `wait` reaps it, so no zombie is left.
                let _ = child.kill();
                let reaped = child.wait();
                polled?;
                reaped?;
                return Ok(Waited::TimedOut);
            }
        }
    }
}

fn spawn_reader<R: Read + Send + 'static, T: Send + 'static>(
    pipe: R,
    read: fn(R) -> T,
) -> JoinHandle<T> {
    std::thread::spawn(move || read(pipe))
}

fn join<T: Default>(handle: Option<JoinHandle<T>>) -> Option<T> {
    handle.and_then(|h| h.join().ok())
}

/// The child's stdout, up to [`STDOUT_CAP`], and whether there was more.
#[derive(Default)]
struct Stdout {
    bytes: Vec<u8>,
    overflowed: bool,
}

fn read_stdout(pipe: impl Read) -> Stdout {
    let mut pipe = pipe;
    let mut bytes = Vec::new();
    let _ = (&mut pipe).take(STDOUT_CAP).read_to_end(&mut bytes);
    // Keep the pipe drained, so the child never blocks on it.
    let more = std::io::copy(&mut pipe, &mut std::io::sink()).unwrap_or(0);
    Stdout {
        bytes,
        overflowed: more > 0,
    }
}

fn read_stderr_tail(mut pipe: impl Read) -> Vec<u8> {
    let mut kept = Vec::new();
    let mut buffer = [0; 8192];
    loop {
        match pipe.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                kept.extend_from_slice(&buffer[..n]);
                if kept.len() > 2 * STDERR_KEPT {
                    kept.drain(..kept.len() - STDERR_KEPT);
                }
            }
        }
    }
    kept
}

/// The last lines of `bytes`, each shortened.
fn tail_lines(bytes: &[u8]) -> Vec<String> {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(STDERR_LINES)..]
        .iter()
        .map(|line| match line.char_indices().nth(STDERR_LINE_CHARS) {
            Some((at, _)) => format!("{}…", &line[..at]),
            None => (*line).to_owned(),
        })
        .collect()
}

enum Outcome {
    Done,
    Failed(String),
}

/// What the child's progress lines say: how far it got, and its result.
struct Answer {
    stage: PreviewStage,
    previews: Vec<StepPreview>,
    outcome: Option<Outcome>,
    overflowed: bool,
}

impl Answer {
    fn read(job: &PreviewJob, stdout: &Stdout) -> Answer {
        let plugin = job.plugin.clone();
        let mut versions: Option<(String, Vec<String>)> = None;
        let mut loaded = false;
        let mut previews = Vec::new();
        let mut outcome = None;
        // Lines that are not progress are skipped: plugin code shares the child's stdout.
        let lines = stdout.bytes.split(|&b| b == b'\n');
        for progress in lines.filter_map(|line| serde_json::from_slice::<Progress>(line).ok()) {
            match progress {
                Progress::Staged {
                    running,
                    versions: steps,
                } => {
                    versions = Some((running, steps));
                }
                Progress::Loaded => loaded = true,
                Progress::Step { preview } => previews.push(preview),
                Progress::Failed { message } => outcome = Some(Outcome::Failed(message)),
                Progress::Done => outcome = Some(Outcome::Done),
            }
        }
        let stage = match versions {
            None => PreviewStage::Setup { plugin },
            Some((version, _)) if !loaded => PreviewStage::Running { plugin, version },
            Some((running, steps)) => {
                let at = previews.len().min(steps.len().saturating_sub(1));
                let from = match at.checked_sub(1) {
                    Some(before) => steps.get(before).cloned().unwrap_or_default(),
                    None => running,
                };
                PreviewStage::Step {
                    plugin,
                    number: at + 1,
                    of: steps.len(),
                    from,
                    to: steps.get(at).cloned().unwrap_or_default(),
                }
            }
        };
        Answer {
            stage,
            previews,
            outcome,
            overflowed: stdout.overflowed,
        }
    }
}

/// The name of a signal by its number on this platform (`SIGSEGV` for 11 on Linux), for the
/// signals a crashing or killed process dies of.
pub fn signal_name(signal: i32) -> Option<&'static str> {
    // Linux's numbering (x86, ARM, RISC-V): the numbers of SIGBUS, SIGUSR1/2, SIGSYS differ on
    // other systems, and this host runtime is Linux-only (memfd).
    Some(match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        5 => "SIGTRAP",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        10 => "SIGUSR1",
        11 => "SIGSEGV",
        12 => "SIGUSR2",
        13 => "SIGPIPE",
        14 => "SIGALRM",
        15 => "SIGTERM",
        24 => "SIGXCPU",
        25 => "SIGXFSZ",
        31 => "SIGSYS",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signals_a_crash_gives_are_named() {
        let named: Vec<_> = [6, 11, 9, 7, 64].into_iter().map(signal_name).collect();
        assert_eq!(
            named,
            [
                Some("SIGABRT"),
                Some("SIGSEGV"),
                Some("SIGKILL"),
                Some("SIGBUS"),
                None
            ]
        );
    }

    #[test]
    fn only_the_last_lines_of_stderr_are_kept_each_shortened() {
        let long = "x".repeat(STDERR_LINE_CHARS + 5);
        let text = format!("one\n\ntwo\n{long}\n");
        let lines = tail_lines(text.as_bytes());
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[2], format!("{}…", "x".repeat(STDERR_LINE_CHARS)));

        let many: String = (0..20).map(|n| format!("line {n}\n")).collect();
        assert_eq!(
            tail_lines(many.as_bytes()).first().map(String::as_str),
            Some("line 12")
        );
    }
}
