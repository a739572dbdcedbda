//! `plugsync reconcile`: the host made to run what plugins.yaml asks, one hot update at a time.
//!
//! 1. **Read** plugins.yaml, its lock and the registry's index, and resolve — before the host
//!    is touched, so a bad file changes nothing;
//! 2. **Lease**: take the host's reconcile lease (waiting while another client holds it, or
//!    failing with `--no-wait`), held and renewed until the end;
//! 3. **Resume**: finish the steps a previous run left in the journal (read from the host what
//!    became of each);
//! 4. **Plan** against what the host runs now (pure, as the dry run plans); with `--plan`, apply
//!    only if the saved plan's id is the one computed now. Plugins the host's holds and
//!    failed marks keep (and those whose move would break a dependency with them) stay where
//!    they are, and the plan goes on without them;
//! 5. **Policy**: a deny window or a freeze refuses the apply unless `--force --reason`; a
//!    strategy not implemented refuses it;
//! 6. **Lift** the holds and failed marks whose plugin's entry in plugins.yaml has changed
//!    since they were set;
//! 7. **Prepare** each step: its request, its artifact fetched and verified into the cache,
//!    its preflight;
//! 8. **Apply** with the [`Engine`]: each step journaled, preflighted, staged, switched, soaked
//!    and committed, or rolled back — its version then marked failed on the host, and a plan
//!    made again without it (step 4), until nothing is left to do.

use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use plugsync_host::control::api::{Capability, RestraintRequest};
use plugsync_host::{Digest, Origin, TrustedKeys, VerifySpec};
use serde_json::Value;

use crate::apply::{
    Action, ApplyOptions, ApplyReport, CrashPoint, Engine, HostPort, LocalArtifact, Preflight,
    PreparedPlan, PreparedStep, StepReport, Stop, context, error_policy,
};
use crate::error::{Error, Result};
use crate::observe::{Observation, Source};
use crate::plan::{
    Lift, PlanDocument, PlannedStep, Refusal, SearchLimits, StateMigration, StepAction, Wait,
    Warning,
};
use crate::preflight::{ArtifactFile, PreviewStep};
use crate::render;
use crate::store::{DEFAULT_RETENTION, Store};

use super::lock::ArtifactCache;
use super::reconcile::{DesiredState, Inputs};

/// The tool the host's records name for `plugsync reconcile`.
pub const RECONCILE_TOOL: &str = "plugsync-reconcile";

/// The tool the host's records name for the sidecar, `plugsync run` (history and alerts tell
/// its steps from an operator's manual reconcile).
pub const RUN_TOOL: &str = "plugsync-run";

/// What `plugsync reconcile` is asked.
#[derive(Debug, Clone)]
pub struct ReconcileOptions {
    /// The plugins.yaml.
    pub file: PathBuf,
    /// Require a `plugins.lock` made from this plugins.yaml.
    pub locked: bool,
    /// Where plugsync keeps its journal and artifact cache.
    pub state_dir: PathBuf,
    /// The publishers' public keys, when artifacts must be signed.
    pub trusted_keys: Option<PathBuf>,
    /// A CA an `https://` registry's certificate must verify against.
    pub registry_ca: Option<PathBuf>,
    /// A plan saved by `reconcile --dry-run --out`: applied only if it is still the plan.
    pub plan: Option<PathBuf>,
    /// Go ahead despite a deny window or a freeze, for this reason (sent to the host and
    /// recorded).
    pub force: Option<String>,
    /// Fail at once when another client holds the host's reconcile lease.
    pub no_wait: bool,
    /// Preflight each step in a child process before the host sees it.
    pub preflight: bool,
    /// How long one preflight may run.
    pub preflight_timeout: Duration,
    /// The plugsync executable (the preflight child).
    pub exe: PathBuf,
    /// The time policy windows are judged at (`PLUGSYNC_NOW` in tests).
    pub now: Timestamp,
    /// How far the ordering search may go.
    pub limits: SearchLimits,
    /// Abort right after journaling this phase (`PLUGSYNC_CRASH_AT`, for tests).
    pub crash_at: Option<CrashPoint>,
    /// How long the reconcile lease lasts unless renewed.
    pub lease_ttl: Duration,
    /// Asked to stop (SIGTERM to `plugsync run`): the apply ends at its next safe point.
    pub stop: Stop,
}

/// Where the apply tells what happens as it happens.
pub trait Progress {
    /// A step ended: its lines.
    fn step(&mut self, report: &StepReport);
    /// A step moved on, not to its end: what it does now ([`StepReport::working`]).
    fn working(&mut self, report: &StepReport) {
        let _ = report;
    }
    /// Something to know (a lease held elsewhere, a plan, an outcome in doubt).
    fn notice(&mut self, text: &str);
    /// A plan about to be applied, as text: shown before its steps (a manual rollback's).
    fn plan(&mut self, text: &str) {
        let _ = text;
    }
}

/// Reconciles the host behind `port` with plugins.yaml (see the module docs). A failed step
/// is not an error: the report says which, and its exit code is 1.
pub fn reconcile(
    options: &ReconcileOptions,
    port: &dyn HostPort,
    progress: &mut dyn Progress,
) -> Result<ApplyReport> {
    let inputs = Inputs::read(
        &options.file,
        options.locked,
        options.registry_ca.as_deref(),
    )?;
    apply(&inputs, options, RECONCILE_TOOL, port, progress)
}

/// Reconciles the host behind `port` with a plugins.yaml already read (the sidecar's last good
/// one), as `plugsync run` ([`RUN_TOOL`]): as [`reconcile`], its lock, registry index and
/// resolution read now.
pub fn reconcile_desired(
    desired: DesiredState,
    options: &ReconcileOptions,
    port: &dyn HostPort,
    progress: &mut dyn Progress,
) -> Result<ApplyReport> {
    let inputs = Inputs::resolve(desired, options.locked, options.registry_ca.as_deref())?;
    apply(&inputs, options, RUN_TOOL, port, progress)
}

/// The plan a reconcile with `desired` would apply now, computed without the lease and
/// without previews — what the sidecar's drift check compares the host with — and the host's
/// status it was made against.
pub fn plan_now(
    desired: DesiredState,
    options: &ReconcileOptions,
    port: &dyn HostPort,
) -> Result<(PlanDocument, Observation)> {
    let inputs = Inputs::resolve(desired, options.locked, options.registry_ca.as_deref())?;
    let observation = Observation {
        source: Source::Host {
            url: port.describe().to_owned(),
        },
        running: port.status(false)?,
    };
    let document = inputs.plan(observation.clone(), options.now, options.limits)?;
    Ok((document, observation))
}

/// Applies what `inputs` ask (plugins.yaml's, or a manual rollback's set), as `tool`: the
/// journal finished first, then plans until nothing is left to do.
pub(super) fn apply(
    inputs: &Inputs,
    options: &ReconcileOptions,
    tool: &'static str,
    port: &dyn HostPort,
    progress: &mut dyn Progress,
) -> Result<ApplyReport> {
    let mut nothing = |_: &mut Engine<'_>| Ok(());
    let mut also_nothing = |_: &mut Engine<'_>| Ok(());
    apply_then(
        inputs,
        options,
        tool,
        port,
        progress,
        UnderLease {
            first: &mut nothing,
            then: &mut also_nothing,
        },
    )
}

/// What an apply also does under its lease, so that no other client can act in between (a
/// sidecar healing drift would otherwise undo a manual rollback).
pub(super) struct UnderLease<'a> {
    /// Before the first plan (a manual rollback releases the operator's own old holds).
    pub first: &'a mut dyn FnMut(&mut Engine<'_>) -> Result<()>,
    /// After the last step, when every step was applied (its new hold).
    pub then: &'a mut dyn FnMut(&mut Engine<'_>) -> Result<()>,
}

/// [`apply`], with what [`UnderLease`] says done while the lease is held.
pub(super) fn apply_then(
    inputs: &Inputs,
    options: &ReconcileOptions,
    tool: &'static str,
    port: &dyn HostPort,
    progress: &mut dyn Progress,
    under_lease: UnderLease<'_>,
) -> Result<ApplyReport> {
    check_api(port)?;
    warn_unreadable(inputs, progress);
    let store = Store::open(&options.state_dir)?;
    let mut engine = Engine::resume(port, &store, engine_options(options, tool))?;
    // Under the lease from here to the end.
    acquire(&mut engine, options, progress)?;
    let applied = (under_lease.first)(&mut engine)
        .and_then(|()| apply_rounds(&mut engine, inputs, options, port, progress))
        .and_then(|done| {
            if !engine.failed() {
                (under_lease.then)(&mut engine)?;
            }
            Ok(done)
        });
    if applied.is_err() {
        // The lease is given back on an error too (a crash leaves it to expire).
        let _ = engine.release();
    }
    let (plan_id, kept) = applied?;
    let report = finish(engine, port, plan_id, kept)?;
    // Rollback points past their retention go on the way out (what `plugsync gc` does).
    if let Err(error) = store.gc(options.now.as_millisecond()) {
        tracing::warn!("could not drop expired rollback points: {error}");
    }
    Ok(report)
}

/// Finishes the steps a previous run left in the journal, with no desired state to plan from
/// (`plugsync run` starting on an invalid plugins.yaml): `None` when the journal had none, and
/// then the host was not touched.
pub fn finish_journal(
    options: &ReconcileOptions,
    port: &dyn HostPort,
    progress: &mut dyn Progress,
) -> Result<Option<ApplyReport>> {
    let store = Store::open(&options.state_dir)?;
    let mut engine = Engine::resume(port, &store, engine_options(options, RUN_TOOL))?;
    if engine.reports().is_empty() {
        return Ok(None);
    }
    check_api(port)?;
    acquire(&mut engine, options, progress)?;
    if let Err(error) = drive(&mut engine, progress, &options.stop) {
        let _ = engine.release();
        return Err(error);
    }
    finish(engine, port, None, Vec::new()).map(Some)
}

/// How the engine works, from what `reconcile` is asked.
fn engine_options(options: &ReconcileOptions, tool: &'static str) -> ApplyOptions {
    ApplyOptions {
        tool,
        lease_ttl: options.lease_ttl,
        no_wait: options.no_wait,
        exe: options.exe.clone(),
        preflight_timeout: options.preflight_timeout,
        crash_at: options.crash_at,
        min_free_bytes: MIN_FREE_BYTES,
    }
}

/// Takes the host's reconcile lease, waiting while another client holds it (or until a stop
/// is asked).
fn acquire(
    engine: &mut Engine<'_>,
    options: &ReconcileOptions,
    progress: &mut dyn Progress,
) -> Result<()> {
    while let Some(wait) = engine.acquire()? {
        tell(engine, progress);
        if options.stop.sleep(wait) {
            return Err(stopped(engine));
        }
    }
    Ok(())
}

/// Tells of each file of the desired state whose repository could not be read: its commit is
/// not recorded, and the reconcile goes on.
fn warn_unreadable(inputs: &Inputs, progress: &mut dyn Progress) {
    for file in &inputs.provenance {
        if let crate::spec::provenance::Git::Unreadable { reason } = &file.git {
            progress.notice(&format!(
                "warning: git: unreadable ({reason}): `{}` is applied, its commit not recorded",
                file.file.display()
            ));
        }
    }
}

/// Finishes what the journal holds, then plans and applies until the host is in sync (or
/// what is left is kept by the host's restraints); the last plan's id.
///
/// A failed step does not end the reconcile: its version is marked failed on the host, and a
/// plan made again keeps that plugin (and whatever needs it) where it is and goes on with the
/// rest. A step interrupted by a host restart is planned again, at most [`MAX_ROUNDS`] times.
fn apply_rounds(
    engine: &mut Engine<'_>,
    inputs: &Inputs,
    options: &ReconcileOptions,
    port: &dyn HostPort,
    progress: &mut dyn Progress,
) -> Result<(Option<String>, Vec<String>)> {
    drive(engine, progress, &options.stop)?;
    let mut plan_id = None;
    let mut kept = Vec::new();
    let mut interruptions = 0;
    for round in 0..MAX_PLANS {
        let running = port.status(false)?;
        let observation = Observation {
            source: Source::Host {
                url: port.describe().to_owned(),
            },
            running,
        };
        let document = inputs.plan(observation.clone(), options.now, options.limits)?;
        plan_id = Some(document.plan_id.to_string());
        kept = (document.plan.kept())
            .filter_map(|(change, _)| {
                let why = render::kept_why(change)?;
                let at = change
                    .from
                    .as_ref()
                    .map_or("not loaded".to_owned(), |v| v.to_string());
                Some(format!("{} {at}: {why}", change.plugin))
            })
            .collect();
        if round == 0
            && let Some(saved) = &options.plan
        {
            check_saved_plan(saved, &document)?;
        }
        // A step pending on the host that this client did not start (another tool's, or a run
        // whose journal was lost) may still roll back: nothing is in sync until it ends.
        check_pending(&observation)?;
        if document.plan.in_sync() {
            break;
        }
        // Whatever the host's marks say (a mark lost with its store, cleared behind this
        // run's back), a version that failed in this run is not tried again in it.
        let failed = engine.failed_versions();
        if let Some(step) = (document.plan.steps.iter()).find(|step| {
            let target = step.to.as_ref().map(|t| t.at.sha256);
            failed.contains(&(step.plugin.clone(), target))
        }) {
            progress.notice(&format!(
                "Not retrying `{}` {}: it failed in this run",
                step.plugin,
                step.to
                    .as_ref()
                    .map_or(String::new(), |t| t.at.version.to_string())
            ));
            break;
        }
        check_policy(&document, options.force.as_deref())?;
        lift(&document, engine, progress)?;
        if document.plan.steps.is_empty() {
            continue;
        }
        let prepared = prepare(&document, inputs, &observation, options, engine.origin())?;
        progress.notice(&format!(
            "Applying plan {} ({} step{}) to {}",
            document.plan_id.short(),
            prepared.steps.len(),
            if prepared.steps.len() == 1 { "" } else { "s" },
            port.describe()
        ));
        if options.stop.asked() {
            return Err(stopped(engine));
        }
        engine.load(prepared);
        drive(engine, progress, &options.stop)?;
        if engine.interrupted() {
            interruptions += 1;
            if interruptions >= MAX_ROUNDS {
                break;
            }
        } else if !engine.stopped_short() {
            break;
        }
    }
    Ok((plan_id, kept))
}

/// Lifts the holds and failed marks plugins.yaml has moved past, under the lease, before the
/// steps (the host would refuse them otherwise).
fn lift(
    document: &PlanDocument,
    engine: &mut Engine<'_>,
    progress: &mut dyn Progress,
) -> Result<()> {
    for lift in &document.plan.lifts {
        let (request, text) = match lift {
            Lift::Hold { plugin, because } => (
                RestraintRequest::Release {
                    plugin: plugin.clone(),
                    by: None,
                },
                format!(
                    "Released the hold on `{plugin}` (by {}: {}): its entry in plugins.yaml changed",
                    because.by, because.reason
                ),
            ),
            Lift::Failed {
                plugin,
                version,
                sha256,
                ..
            } => (
                RestraintRequest::ClearFailed {
                    artifact: *sha256,
                    by: None,
                },
                format!(
                    "Cleared the failed mark on `{plugin}` {version}: its entry in plugins.yaml \
                     changed"
                ),
            ),
        };
        engine.restrain(&request)?;
        progress.notice(&text);
    }
    Ok(())
}

/// The least free space under the state directory for a step to start: room for the
/// journal's writes, well beyond them.
const MIN_FREE_BYTES: u64 = 64 << 20;

/// How many plans one reconcile makes at most (each after a failure, a lift or an
/// interruption): a bound, never reached in practice, on a host that keeps changing under it.
const MAX_PLANS: usize = 32;

/// How many times a reconcile plans again after host restarts interrupted steps.
const MAX_ROUNDS: usize = 3;

/// What the engine needs of the host's control API.
const NEEDED: [Capability; 5] = [
    Capability::Lease,
    Capability::OwnedSteps,
    Capability::LeasedInstall,
    Capability::AppliedRecord,
    Capability::Restraints,
];

/// Refuses a host whose control API lacks what the engine relies on, before anything is sent.
fn check_api(port: &dyn HostPort) -> Result<()> {
    let api = port.status(false)?.api;
    let missing: Vec<&str> = (NEEDED.into_iter())
        .filter(|&capability| !api.has(capability))
        .map(Capability::name)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::HostTooOld {
        host: port.describe().to_owned(),
        version: api.version,
        missing: missing.join(", "),
    })
}

/// Passes what the engine said on to `progress`.
fn tell(engine: &mut Engine<'_>, progress: &mut dyn Progress) {
    for text in engine.take_notices() {
        progress.notice(&text);
    }
    for report in engine.take_working() {
        progress.working(&report);
    }
    for report in engine.take_ended() {
        progress.step(&report);
    }
}

/// Runs passes until every step loaded has ended; errors retried as [`error_policy`] says.
/// A stop asked ends it between two passes (each transition is journaled by then).
fn drive(engine: &mut Engine<'_>, progress: &mut dyn Progress, stop: &Stop) -> Result<()> {
    let mut failures = 0;
    loop {
        let pass = engine.reconcile();
        tell(engine, progress);
        let wait = match pass {
            Ok(Action::Finished) => return Ok(()),
            Ok(Action::Requeue(wait)) => {
                failures = 0;
                wait
            }
            Err(error) => {
                failures += 1;
                match error_policy(&error, failures) {
                    Some(wait) => wait,
                    None => return Err(error),
                }
            }
        };
        if stop.asked() || stop.sleep(wait) {
            return Err(stopped(engine));
        }
    }
}

/// The error a stop ends an apply with: what it leaves in flight.
fn stopped(engine: &Engine<'_>) -> Error {
    let in_flight = engine.in_flight();
    Error::Stopped {
        left: if in_flight.is_empty() {
            "no step in flight".to_owned()
        } else {
            in_flight.join(", ")
        },
    }
}

/// Releases the lease and reports what the host runs now.
fn finish(
    mut engine: Engine<'_>,
    port: &dyn HostPort,
    plan_id: Option<String>,
    kept: Vec<String>,
) -> Result<ApplyReport> {
    let failed = engine.failed();
    let steps = engine.reports();
    // The steps are done whatever becomes of the lease: a release that fails leaves it to
    // expire (the same client takes it back at once).
    if let Err(error) = engine.release() {
        tracing::warn!("could not release the host's reconcile lease: {error}");
    }
    let status = port.status(false)?;
    let mut running: Vec<String> = status
        .status
        .plugins
        .iter()
        .map(|p| format!("{} {}", p.plugin, p.version.version))
        .collect();
    running.sort();
    Ok(ApplyReport {
        plan_id: if steps.is_empty() {
            plan_id
        } else {
            plan_id.or_else(|| steps.first().map(|s| s.step_id.clone()))
        },
        steps,
        running,
        failed,
        kept,
    })
}

/// A saved plan applies only if it is exactly the plan computed now.
fn check_saved_plan(path: &Path, document: &PlanDocument) -> Result<()> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?;
    let saved: Value = serde_json::from_str(&text).map_err(|error| Error::BadSavedPlan {
        path: path.to_owned(),
        reason: error.to_string(),
    })?;
    let saved_id = saved["planId"]
        .as_str()
        .ok_or_else(|| Error::BadSavedPlan {
            path: path.to_owned(),
            reason:
                "it has no `planId`: save a plan with `plugsync reconcile --dry-run --out FILE`"
                    .to_owned(),
        })?;
    if saved_id == document.plan_id.to_string() {
        return Ok(());
    }
    let saved_desired = saved["inputs"]["desiredSha256"]
        .as_str()
        .unwrap_or_default();
    let why = if saved_desired != document.inputs.desired_sha256.to_string() {
        "plugins.yaml changed since it was saved"
    } else {
        "the host, the lock or the registry changed since it was saved"
    };
    Err(Error::PlanChanged {
        path: path.to_owned(),
        saved: saved_id.to_owned(),
        now: document.plan_id.to_string(),
        why: why.to_owned(),
    })
}

/// Refuses to go on while a step this client did not start is pending on the host (this
/// client's own were finished from its journal before).
fn check_pending(observation: &Observation) -> Result<()> {
    let pending =
        (observation.running.status.plugins.iter()).find_map(|p| Some((p, p.pending.as_ref()?)));
    match pending {
        Some((plugin, pending)) => Err(Error::StepPendingElsewhere {
            plugin: plugin.plugin.clone(),
            step_id: pending.step_id.clone(),
        }),
        None => Ok(()),
    }
}

/// Refuses what policy forbids now, unless forced; and strategies not implemented.
fn check_policy(document: &PlanDocument, force: Option<&str>) -> Result<()> {
    let plan = &document.plan;
    for warning in &plan.warnings {
        if let Warning::StrategyNotSupported { plugin, strategy } = warning {
            return Err(Error::StrategyNotImplemented {
                plugin: plugin.clone(),
                strategy: strategy.clone(),
            });
        }
    }
    for wait in &plan.waits {
        match wait {
            Wait::Window {
                denied_by,
                outside,
                until,
                until_local,
                ..
            } if force.is_none() => {
                let window = if denied_by.is_empty() {
                    format!("outside every allow window ({})", outside.join(", "))
                } else {
                    format!("deny window `{}` is open", denied_by.join("`, `"))
                };
                let until = match (until_local, until) {
                    (Some(local), Some(utc)) => format!("until {local} ({utc})"),
                    _ => "for the next eight days at least".to_owned(),
                };
                return Err(Error::PolicyWindow { window, until });
            }
            _ => {}
        }
    }
    if force.is_none()
        && let Some(refusal) = plan.refusals.first()
    {
        let what = match refusal {
            Refusal::Freeze { because } => {
                format!("the host is frozen by {}: {}", because.by, because.reason)
            }
        };
        return Err(Error::Restrained { what });
    }
    Ok(())
}

/// Each step's request, artifact and preflight.
fn prepare(
    document: &PlanDocument,
    inputs: &Inputs,
    observation: &Observation,
    options: &ReconcileOptions,
    origin: &Origin,
) -> Result<PreparedPlan> {
    let keys = match &options.trusted_keys {
        Some(file) => TrustedKeys::load(file)?,
        None => TrustedKeys::none(),
    };
    let cache = ArtifactCache::open(&options.state_dir, keys)?;
    let registry = inputs.registry.as_deref();
    let fetch = |plugin: &str, sha256: &Digest| -> Result<LocalArtifact> {
        let entry = (inputs.index.get(plugin).into_iter())
            .flat_map(|file| &file.versions)
            .find(|entry| entry.sha256 == *sha256)
            .ok_or_else(|| Error::NotInRegistry {
                plugin: plugin.to_owned(),
                sha256: *sha256,
            })?;
        let registry = registry.ok_or_else(|| Error::NotInRegistry {
            plugin: plugin.to_owned(),
            sha256: *sha256,
        })?;
        let stored = cache.verified(registry, plugin, entry)?;
        let file_name = entry
            .file
            .rsplit('/')
            .next()
            .unwrap_or(&entry.file)
            .to_owned();
        Ok(LocalArtifact {
            path: stored.path,
            sha256: *sha256,
            file_name,
            signature: entry.signature.clone(),
        })
    };
    let plan = &document.plan;
    let of = plan.steps.len();
    let mut origin = origin.clone();
    origin.plan_id = Some(document.plan_id.to_string());
    origin.desired_sha256 = Some(document.inputs.desired_sha256.to_string());
    origin.forced = options.force.clone();
    let mut steps = Vec::with_capacity(of);
    for step in &plan.steps {
        let spec = (inputs.desired.set.spec.plugins.iter()).find(|p| p.id == step.plugin);
        let update = spec.and_then(|p| p.update.as_ref());
        // The plugin's own entry in plugins.yaml, so that a failed mark set by this step
        // stands until that entry changes.
        let of_record = (inputs.of_record.iter()).find(|p| p.id == step.plugin);
        let origin = Origin {
            entry_sha256: of_record.map(|p| p.fingerprint().to_string()),
            ..origin.clone()
        };
        let mut context =
            context(step, of, update, &origin, options.force.as_deref()).ok_or_else(|| {
                Error::BadSavedPlan {
                    path: options.file.clone(),
                    reason: format!("its step {} has no target version", step.number),
                }
            })?;
        context.provenance = inputs.provenance.clone();
        let artifact = match &step.to {
            Some(target) => Some(fetch(&step.plugin, &target.at.sha256)?),
            None => None,
        };
        let preflight = match (&artifact, options.preflight) {
            (Some(artifact), true) => Some(preflight(step, artifact, observation, &fetch)?),
            _ => None,
        };
        steps.push(PreparedStep {
            context,
            artifact,
            preflight,
        });
    }
    let waves = plan
        .waves
        .iter()
        .map(|wave| wave.iter().map(|n| n - 1).collect())
        .collect();
    Ok(PreparedPlan {
        plan_id: document.plan_id.to_string(),
        desired_sha256: document.inputs.desired_sha256,
        origin,
        steps,
        waves,
        windows: match &options.force {
            Some(_) => Vec::new(),
            None => inputs.desired.set.spec.policy.windows.clone(),
        },
        now: options.now,
        rollback_retention: (inputs.desired.set.spec.policy.rollback_retention.as_ref())
            .map_or(DEFAULT_RETENTION, |period| period.0),
    })
}

/// A step's preflight: its switch from the version before it, or its install.
fn preflight(
    step: &PlannedStep,
    target: &LocalArtifact,
    observation: &Observation,
    fetch: &dyn Fn(&str, &Digest) -> Result<LocalArtifact>,
) -> Result<Preflight> {
    let _ = observation;
    let mut preview = PreviewStep::new(ArtifactFile::new(&target.path, target.sha256));
    match &step.migration {
        Some(StateMigration::Rules { rules, .. }) => {
            preview = preview.migration_rules(rules.clone());
        }
        Some(StateMigration::Fresh) => preview = preview.fresh_state(),
        _ => {}
    }
    if let Some(config) = &step.config {
        preview = preview.config(config.clone());
    }
    if let Some(verify) = &step.verify {
        preview = preview.verify(VerifySpec {
            health: verify.health,
            probes: verify.probes.clone(),
            differential: verify.differential.clone(),
        });
    }
    let running = match (&step.from, step.action) {
        (Some(from), StepAction::Upgrade | StepAction::Downgrade | StepAction::Reconfigure) => {
            let running = fetch(&step.plugin, &from.sha256).map_err(|error| {
                Error::PreflightNeedsRunning {
                    plugin: step.plugin.clone(),
                    version: from.version.to_string(),
                    reason: error.to_string(),
                }
            })?;
            Some(ArtifactFile::new(running.path, running.sha256))
        }
        _ => None,
    };
    Ok(Preflight {
        running,
        step: preview,
    })
}
