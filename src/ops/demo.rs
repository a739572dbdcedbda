//! `plugsync demo`: hot updates of a live trading desk, for a newcomer — in this process, or
//! through the control API of a `plugsync host`.
//!
//! 1. **locate** the example plugins (building them with cargo when run through `cargo run`);
//! 2. **start** the desk: in this process (a runtime over a temporary store with risk_model
//!    1.0.0 and ma_cross 1.0.0, feed threads pushing bars through strategy → risk → exchange,
//!    fills back to both plugins and into the host's ledger), or in a host: one the demo starts
//!    (`--via-host`) or one already running (`--host URL`), trading with its own feed;
//! 3. **stage** the artifacts of the steps (`PUT /v1/artifacts/…` for a host);
//! 4. **declare and plan** as an operator would, in a temporary directory: **publish** the
//!    example plugins to a registry directory (channel `stable`), **write** a plugins.yaml
//!    pinning risk_model 2.0.0 and ma_cross 2.0.0 (each with a config and a soak), **validate**
//!    and **lock** it and **commit** both files in a scratch git repository (gix, no `git`),
//!    then compute **`reconcile --dry-run`** against the desk and print the plan, its state
//!    migrations previewed on the live states in a child `plugsync preflight-child` (when no
//!    plugsync executable is found, without previews, and it says so); **check** that its
//!    steps are the demo's first steps, in order, to the same artifacts;
//! 5. **tell the story** while the desk trades (`apply.rs`), each change applied as
//!    `plugsync reconcile` applies it, by the apply engine ([`ops::reconcile`](crate::ops::reconcile))
//!    over the venue's [`HostPort`] from the committed plugins.yaml, each step journaled,
//!    preflighted in a child `plugsync`, staged, switched under the lease, soaked, committed or
//!    rolled back: the first commit; a faulty ma_cross 2.0.1 committed (switched under the
//!    lock so that it starts fresh, it serves calls, fails its health check and is rolled back
//!    by replaying them, its restored state checked in this process against a reference
//!    runtime fed the same calls from a mark before the step), marked failed, not retried by
//!    the next reconcile, then moved past by a commit to 2.1.0; a manual rollback
//!    ([`ops::rollback`](crate::ops::rollback) with `yes`) held against the next reconcile,
//!    released ([`ops::restrain`](crate::ops::restrain)) and moved back; a change scheduled an
//!    hour ahead, kept by the reconcile now and applied by one planned at that time; then
//!    [`ops::history`](crate::ops::history), each step with the commit it was applied from;
//! 6. **verdict**: success only if the plan was the upgrades made, no call failed, no rollback
//!    lost state, each step ended as expected, the books matched after every step, and every
//!    check of the story held (the failed mark, the reconcile that did not retry it, the hold
//!    kept, the history's commits).
//!
//! The story, the narration and the checks are shared: a [`Venue`] says only how the demo
//! reaches the plugins (a [`Runtime`](plugsync_host::Runtime) here, or the control API) and
//! what it can check there.

mod apply;
mod git;
mod gitops;
mod in_process;
mod report;
mod via_host;

use std::io::Write;
use std::ops::Sub;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use plugsync_host::{Digest, RollbackReport};

use crate::apply::HostPort;
use crate::error::{Error, Result};

/// Where the demo's desk trades, and so how its steps are applied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum DemoVenue {
    /// In this process: a runtime, a desk and a ledger of the demo's own.
    #[default]
    InProcess,
    /// Through the control API of a `plugsync host` the demo starts with `program host --feed
    /// on …` over a temporary store and token, and stops with SIGTERM at the end.
    SpawnHost {
        /// The `plugsync` binary to run.
        program: PathBuf,
    },
    /// Through the control API of a host already running `ma_cross` 1.0.0 and `risk_model`
    /// 1.0.0 with its feed on.
    Host {
        /// Its control API URL (`http://`, `https://` or `unix:PATH`).
        url: String,
        /// The file holding its bearer token.
        token_file: PathBuf,
        /// The CA its certificate must verify against, for an `https://` URL.
        tls_ca: Option<PathBuf>,
    },
}

/// How the demo runs.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    /// Where the built plugin libraries are; by default beside the running binary.
    pub plugins: Option<PathBuf>,
    /// Where the desk trades.
    pub venue: DemoVenue,
    /// Feed threads calling the plugins (in process; a host runs its own feed).
    pub threads: usize,
    /// Instruments each feed thread trades (in process).
    pub instruments_per_thread: usize,
    /// How long each step soaks (health checked) before it is committed; also the warm-up
    /// before the first step.
    pub soak: Duration,
    /// Pause between a feed thread's rounds of bars (in process).
    pub pace: Duration,
    /// The `plugsync` executable that previews the plan's state migrations and preflights each
    /// step in a child process; by default the one that runs the host (`SpawnHost`), or this
    /// program when it is `plugsync`. With none, the plan is shown without previews and the
    /// steps are not preflighted.
    pub exe: Option<PathBuf>,
}

impl Default for DemoOptions {
    fn default() -> Self {
        DemoOptions {
            plugins: None,
            venue: DemoVenue::InProcess,
            threads: 3,
            instruments_per_thread: 3,
            soak: Duration::from_millis(600),
            pace: Duration::from_micros(200),
            exe: None,
        }
    }
}

/// What one step of the demo did.
#[derive(Debug, Clone)]
pub struct StepOutcome {
    /// Plugin id.
    pub plugin: String,
    /// Library switched to.
    pub library: String,
    /// Whether the step was committed.
    pub committed: bool,
    /// Whether the step was switched in, then rolled back.
    pub rolled_back: bool,
    /// Whether the outcome was the one the demo expects of this step.
    pub as_expected: bool,
    /// Calls answered during the step.
    pub calls: u64,
    /// Calls failed during the step.
    pub failed: u64,
    /// Longest wait of a single call while the switch request ran (measured in process only;
    /// `None` through a host, or when the step did not switch).
    pub longest_wait: Option<Duration>,
    /// Whether the plugins' books matched after the step.
    pub consistent: bool,
    /// Whether a rollback lost state updates.
    pub lost_state: bool,
    /// Calls a rollback by replay carried back into the previous version.
    pub replayed: Option<usize>,
    /// Whether the state a rollback restored matched a reference runtime fed the same calls;
    /// `None` when not checked (through a host, whose feed the demo cannot see).
    pub matches_reference: Option<bool>,
}

/// The demo's verdict.
#[derive(Debug, Clone)]
pub struct DemoOutcome {
    /// Each step.
    pub steps: Vec<StepOutcome>,
    /// Calls answered in all.
    pub calls: u64,
    /// Calls failed in all.
    pub failed: u64,
    /// The plan `reconcile --dry-run` computed before the steps, checked against them.
    pub plan: PlanCheck,
    /// The story's other checks, in order: what an operator must see happen between the steps.
    pub checks: Vec<StoryCheck>,
}

/// One of the story's checks besides the steps': a failed mark, a reconcile that did not retry
/// it, a hold kept, the history's commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoryCheck {
    /// What was checked.
    pub what: String,
    /// Whether it held.
    pub held: bool,
}

/// The plan `reconcile --dry-run` computed from the demo's plugins.yaml before the steps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanCheck {
    /// Its steps, `plugin → version`.
    pub planned: Vec<String>,
    /// The upgrades the demo makes from that plugins.yaml, `plugin → version`.
    pub expected: Vec<String>,
    /// Whether the plan's steps were those, in order, each to the same artifact.
    pub as_expected: bool,
}

impl DemoOutcome {
    /// No call failed, no state was lost, every check matched, the plan was the steps taken,
    /// every step went as expected and every check of the story held.
    pub fn passed(&self) -> bool {
        self.failed == 0
            && self.plan.as_expected
            && self.checks.iter().all(|c| c.held)
            && self
                .steps
                .iter()
                .all(|s| s.consistent && !s.lost_state && s.as_expected)
    }
}

/// Runs the demo, narrating to `out`.
pub fn demo(options: &DemoOptions, out: &mut dyn Write) -> Result<DemoOutcome> {
    let dir = locate_plugins(options, out)?;
    match &options.venue {
        DemoVenue::InProcess => in_process::run(&dir, options, out),
        DemoVenue::SpawnHost { program } => via_host::spawn_and_run(program, &dir, options, out),
        DemoVenue::Host {
            url,
            token_file,
            tls_ca,
        } => via_host::run(url, token_file, tls_ca.as_deref(), &dir, options, out),
    }
}

/// The libraries the demo loads, by file name.
const LIBRARIES: [&str; 6] = [
    "libma_cross_v1_0_0.so",
    "libma_cross_v2_0_0.so",
    "libma_cross_v2_1_0.so",
    "librisk_model_v1_0_0.so",
    "librisk_model_v2_0_0.so",
    "libma_cross_fault_health.so",
];

/// The libraries the desk starts on.
const STRATEGY_START: &str = "libma_cross_v1_0_0.so";
const RISK_START: &str = "librisk_model_v1_0_0.so";

/// Finds the plugin libraries; under `cargo run`, builds them first if they are missing.
fn locate_plugins(options: &DemoOptions, out: &mut dyn Write) -> Result<PathBuf> {
    let dir = match &options.plugins {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()
            .ok()
            .and_then(|exe| exe.parent().map(Path::to_owned))
            .unwrap_or_else(|| PathBuf::from(".")),
    };
    let missing = |dir: &Path| -> Vec<String> {
        LIBRARIES
            .iter()
            .filter(|name| !dir.join(name).exists())
            .map(|name| (*name).to_owned())
            .collect()
    };
    let absent = missing(&dir);
    if absent.is_empty() {
        return Ok(dir);
    }
    // Under `cargo run`, CARGO names the cargo that built us: build the plugins with it, in
    // the same profile, so that one command on a fresh clone is enough.
    let cargo = match (std::env::var_os("CARGO"), &options.plugins) {
        (Some(cargo), None) => cargo,
        _ => {
            return Err(Error::PluginsNotBuilt {
                dir,
                missing: absent,
            });
        }
    };
    let mut command = Command::new(&cargo);
    command.args(["build", "--workspace", "--lib"]);
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    if let Some(root) = option_env!("CARGO_MANIFEST_DIR") {
        command.current_dir(root);
    }
    let shown = format!(
        "cargo build --workspace --lib{}",
        if cfg!(debug_assertions) {
            ""
        } else {
            " --release"
        }
    );
    let _ = writeln!(out, "building the example plugins: {shown}");
    let status = command.status().map_err(|source| Error::Io {
        action: "run",
        path: PathBuf::from(&cargo),
        source,
    })?;
    if !status.success() {
        return Err(Error::BuildFailed {
            command: shown,
            status: status.to_string(),
        });
    }
    let absent = missing(&dir);
    if absent.is_empty() {
        Ok(dir)
    } else {
        Err(Error::PluginsNotBuilt {
            dir,
            missing: absent,
        })
    }
}

/// What the demo expects of a step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Switched in, caught in soak after it served calls, rolled back by replaying them,
    /// without losing state (the restored state matching the reference, where checked).
    RolledBack,
    /// Switched in, soaked, committed.
    Committed,
}

/// A step of the story.
struct Step {
    plugin: &'static str,
    library: &'static str,
    title: &'static str,
    expect: Expect,
}

const STEPS: [Step; 7] = [
    Step {
        plugin: "ma_cross",
        library: "libma_cross_v2_0_0.so",
        title: "ma_cross 1.0.0 -> 2.0.0 (renames its periods, adds signal_threshold)",
        expect: Expect::Committed,
    },
    Step {
        plugin: "risk_model",
        library: "librisk_model_v2_0_0.so",
        title: "risk_model 1.0.0 -> 2.0.0 (new state schema: notional limits)",
        expect: Expect::Committed,
    },
    Step {
        plugin: "ma_cross",
        library: "libma_cross_fault_health.so",
        title: "a faulty ma_cross patch release (2.0.1: healthy when fresh, fails once it trades)",
        expect: Expect::RolledBack,
    },
    Step {
        plugin: "ma_cross",
        library: "libma_cross_v2_1_0.so",
        title: "ma_cross 2.0.0 -> 2.1.0 (orders carry limit prices; needs risk_model 2.x)",
        expect: Expect::Committed,
    },
    Step {
        plugin: "ma_cross",
        library: "libma_cross_v2_0_0.so",
        title: "manual rollback: ma_cross 2.1.0 -> 2.0.0 (a planned downgrade of the live state)",
        expect: Expect::Committed,
    },
    Step {
        plugin: "ma_cross",
        library: "libma_cross_v2_1_0.so",
        title: "released: ma_cross 2.0.0 -> 2.1.0 again",
        expect: Expect::Committed,
    },
    Step {
        plugin: "ma_cross",
        library: "libma_cross_v2_1_0.so",
        title: "scheduled: ma_cross 2.1.0 reconfigured at its time (twice the order size)",
        expect: Expect::Committed,
    },
];

/// An artifact in the venue's store.
#[derive(Debug, Clone)]
struct Staged {
    digest: Digest,
    version: String,
}

/// Calls served and failed by both plugins.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Calls {
    served: u64,
    failed: u64,
}

impl Sub for Calls {
    type Output = Calls;

    fn sub(self, earlier: Calls) -> Calls {
        Calls {
            served: self.served.saturating_sub(earlier.served),
            failed: self.failed.saturating_sub(earlier.failed),
        }
    }
}

/// The books after a step.
#[derive(Debug, Clone)]
struct Books {
    /// What agreed, when nothing disagreed: `match the ledger on 9 instruments`.
    agreed: String,
    /// What disagreed.
    problems: Vec<String>,
}

/// A plugin's state checked against a reference runtime fed the same calls.
#[derive(Debug, Clone)]
enum Reference {
    /// The same state, after the same calls.
    Matched {
        /// Calls the reference was fed.
        calls: usize,
        /// sha256 of the state.
        sha256: String,
    },
    /// Not the same: what differs.
    Differs(String),
    /// Not checked, and why.
    Unavailable(String),
}

/// Where the desk trades: how the demo reaches its plugins, and what it checks there.
trait Venue {
    /// Where the desk trades, for messages.
    fn name(&self) -> String;
    /// Stages a library: its digest and metadata checked, none of its code run.
    fn stage(&self, library: &Path) -> Result<Staged>;
    /// Calls served and failed so far by both plugins.
    fn calls(&self) -> Result<Calls>;
    /// Checks the plugins' books.
    fn books(&self) -> Result<Books>;
    /// Marks, at a quiet point, where `plugin`'s reference starts: its state there, and the
    /// calls from then on recorded (where the demo sees its callers; elsewhere nothing).
    fn mark(&self, plugin: &str) -> Result<()> {
        let _ = plugin;
        Ok(())
    }
    /// Checks `plugin`'s state against a reference runtime that ran its version from the
    /// [`mark`](Venue::mark) on, fed the same calls at the same host times (after a rollback:
    /// the state of a plugin that was never updated).
    fn reference(&self, plugin: &str) -> Result<Reference>;
    /// Where `reconcile --dry-run` observes the desk.
    fn observe(&self) -> crate::ops::Observe;
    /// The host's operations, as the apply engine drives them.
    fn port(&self) -> Result<Box<dyn HostPort>>;
    /// What times the callers' waits, where the demo sees its callers (in process).
    fn meter(&self) -> Option<&dyn WaitMeter>;
    /// The last rollback of `plugin` the host reports.
    fn last_rollback(&self, plugin: &str) -> Result<Option<RollbackReport>>;
}

/// The longest wait of any caller since the last reset.
trait WaitMeter: Sync {
    /// Starts a new measure.
    fn reset(&self);
    /// The longest wait since the reset.
    fn longest(&self) -> Duration;
}

/// The shared part: warm up, stage, declare and plan, tell the story, and total the calls.
fn run_steps(
    venue: &dyn Venue,
    dir: &Path,
    options: &DemoOptions,
    out: &mut dyn Write,
) -> Result<DemoOutcome> {
    let start = venue.calls()?;
    // Let the windows fill before the first step.
    std::thread::sleep(options.soak);
    let warm = venue.calls()? - start;
    if warm.served == 0 {
        return Err(Error::DemoNotTrading {
            venue: venue.name(),
            warm_up_ms: options.soak.as_millis() as u64,
        });
    }
    stage_header(out, 1, "A desk trading under load");
    let _ = writeln!(
        out,
        "  {} calls served in the first {} ms, {} failed",
        warm.served,
        options.soak.as_millis(),
        warm.failed
    );
    let mut staged = Vec::new();
    for step in &STEPS {
        staged.push(venue.stage(&dir.join(step.library))?);
    }
    let work = tempfile::Builder::new()
        .prefix("plugsync-demo-gitops-")
        .tempdir()
        .map_err(|source| Error::Io {
            action: "create",
            path: std::env::temp_dir(),
            source,
        })?;
    stage_header(
        out,
        2,
        "plugins.yaml committed, validated, locked; the plan `reconcile --dry-run` shows",
    );
    let mut desk = gitops::tell(work.path(), dir, venue.observe(), &staged, options, out)?;
    let (outcomes, checks) = apply::tell_story(venue, &mut desk, &staged, options, out)?;
    let total = venue.calls()? - start;
    Ok(DemoOutcome {
        steps: outcomes,
        calls: total.served,
        failed: total.failed,
        plan: desk.plan,
        checks,
    })
}

/// A stage's header: `== 3. … ==`, after a blank line.
fn stage_header(out: &mut dyn Write, number: usize, title: &str) {
    let _ = writeln!(out, "\n== {number}. {title} ==");
}

/// Whether a rollback lost state, and on whose account.
fn state_verdict(outcome: &DemoOutcome) -> &'static str {
    let rolled_back = || outcome.steps.iter().filter(|s| s.rolled_back);
    if outcome.steps.iter().any(|s| s.lost_state) {
        "LOST in a rollback"
    } else if rolled_back().all(|s| s.matches_reference == Some(true)) {
        "never lost (each rollback's restored state identical to a reference runtime's)"
    } else {
        "never lost by the runtime's own report (not checked against a reference)"
    }
}

/// The summary and the verdict.
fn print_verdict(outcome: &DemoOutcome, books_checked: &str, out: &mut dyn Write) {
    let _ = writeln!(
        out,
        "summary: {} steps ({} committed, {} rolled back), {} calls served, {} failed; books {}; state {}",
        outcome.steps.len(),
        outcome.steps.iter().filter(|s| s.committed).count(),
        outcome.steps.iter().filter(|s| s.rolled_back).count(),
        outcome.calls,
        outcome.failed,
        if outcome.steps.iter().all(|s| s.consistent) {
            format!("{books_checked} after every step")
        } else {
            format!("DO NOT {books_checked}")
        },
        state_verdict(outcome),
    );
    let plan = &outcome.plan;
    if plan.as_expected {
        let _ = writeln!(
            out,
            "plan: `reconcile --dry-run` planned exactly the upgrades the first commit's \
             reconcile made, in order ({})",
            plan.planned.join(", ")
        );
    } else {
        let _ = writeln!(
            out,
            "plan: DID NOT MATCH the steps: `reconcile --dry-run` planned {} ({}); the first \
             commit's upgrades are {} ({})",
            plan.planned.len(),
            plan.planned.join(", "),
            plan.expected.len(),
            plan.expected.join(", ")
        );
    }
    for check in &outcome.checks {
        let _ = writeln!(
            out,
            "{} {}",
            if check.held { "✓" } else { "✗ FAILED:" },
            check.what
        );
    }
    let _ = writeln!(out, "{}", if outcome.passed() { "PASS" } else { "FAIL" });
}
