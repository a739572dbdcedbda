//! The engine: steps advanced pass by pass, each transition journaled before it is acted on.
//!
//! A pass ([`Engine::reconcile`]) holds the host's reconcile lease (acquired, then renewed),
//! reads the host's status once, and advances each step of the current wave as far as it can
//! without waiting; it returns an [`Action`]: come back after a while (a soak runs, the lease is
//! held by another client), or finished. Nothing in a pass sleeps: waiting is the caller's
//! requeue, so a lease is never held across a sleep of the engine's own.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime};

use plugsync_host::control::api::{LeaseRequest, RestraintRequest, RunningState};
use plugsync_host::{Digest, Origin};
use plugsync_host::{PluginStatus, RollbackReport, StepState, SwapReport};
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::preflight::{ChildRunner, PreviewJob, preview};
use crate::store::{JournalRecord, RollbackPoint, RunningVersion, StepPhase, Store};

use super::port::{HostPort, StepOperation};
use super::report::{StepOutcome, StepReport};
use super::step::{StepContext, StepOperationName, step_id};
use super::{Action, ApplyOptions, Preflight, PreparedPlan};

/// How often a soaking step is looked at.
const SOAK_POLL: Duration = Duration::from_millis(100);

/// How often another client's lease is looked at again.
const LEASE_POLL: Duration = Duration::from_secs(1);

/// How often a switch the host answered "not yet" (its strategy's moment has not come) is
/// asked again.
const STRATEGY_POLL: Duration = Duration::from_millis(100);

/// The engine: the steps it drives, the lease it holds, and where it journals.
pub struct Engine<'a> {
    port: &'a dyn HostPort,
    store: &'a Store,
    options: ApplyOptions,
    origin: Origin,
    lease: Option<HeldLease>,
    /// The name the host knows this client by: the lease's holder, as the host answered.
    client: Option<String>,
    /// Told once that another client holds the lease.
    told_waiting: bool,
    runs: Vec<StepRun>,
    /// Indexes into `runs`; resumed steps form the first waves.
    waves: Vec<Vec<usize>>,
    wave: usize,
    /// A step failed or was interrupted: no step of this plan not yet started starts.
    stopping: bool,
    /// A step of this run failed (rolled back, or stopped by a check): the reconcile fails,
    /// though it may go on with a plan made again without it.
    failed: bool,
    /// A step of the loaded plan was interrupted (the host restarted under it).
    interrupted: bool,
    /// The loaded plan's windows, the time it was made for, and when it was loaded.
    windows: Vec<crate::spec::model::Window>,
    planned_at: Option<(jiff::Timestamp, Instant)>,
    /// How long the loaded plan's rollback points are kept.
    retention: Duration,
    /// Steps ended since the caller last took them.
    ended: Vec<StepReport>,
    /// Notices since the caller last took them.
    notices: Vec<String>,
    /// Steps that moved (not to their end) since the caller last took them.
    working: Vec<StepReport>,
}

/// The reconcile lease, as held.
#[derive(Debug, Clone, Copy)]
struct HeldLease {
    epoch: u64,
    renewed: Instant,
}

/// One step being driven.
struct StepRun {
    context: StepContext,
    plan_id: String,
    attempt: u32,
    step_id: String,
    /// The last phase journaled (`None`: nothing yet).
    phase: Option<StepPhase>,
    /// When the soak ends (unix ms, wall clock: it outlives this process in the journal).
    soak_until_ms: Option<i64>,
    /// How to preflight it (planned steps; a resumed step is past its preflight).
    preflight: Option<Preflight>,
    /// The artifact to stage, if any.
    artifact: Option<super::LocalArtifact>,
    /// When the host first answered "not yet" to its switch (a strategy waits for its
    /// moment): the deadline runs from then.
    waiting_since: Option<Instant>,
    report: StepReport,
}

impl<'a> Engine<'a> {
    /// An engine over `port` journaling into `store`, loaded with the steps a previous run left
    /// unfinished in the journal (each finished first: [`Engine::reconcile`] until
    /// [`Action::Finished`]); steps that never reached the host are closed as stopped.
    pub fn resume(
        port: &'a dyn HostPort,
        store: &'a Store,
        options: ApplyOptions,
    ) -> Result<Engine<'a>> {
        let origin = Origin {
            tool: options.tool.to_owned(),
            ..Origin::default()
        };
        let mut engine = Engine {
            port,
            store,
            options,
            origin,
            lease: None,
            client: None,
            told_waiting: false,
            runs: Vec::new(),
            waves: Vec::new(),
            wave: 0,
            stopping: false,
            interrupted: false,
            failed: false,
            windows: Vec::new(),
            planned_at: None,
            retention: crate::store::DEFAULT_RETENTION,
            ended: Vec::new(),
            notices: Vec::new(),
            working: Vec::new(),
        };
        let mut resumed = Vec::new();
        for open in store.unfinished()? {
            let records = store.step(&open.record.step_id)?;
            let Some(context) = records
                .iter()
                .find(|r| r.record.phase == StepPhase::Planned)
                .and_then(|r| serde_json::from_value::<StepContext>(r.record.detail.clone()).ok())
            else {
                // A step whose context cannot be read: closed, nothing is sent for it.
                engine.journal_closed(&open.record, "its journaled context cannot be read")?;
                continue;
            };
            let soak_until_ms = records
                .iter()
                .rev()
                .find_map(|r| r.record.detail.get("soak_until_ms").and_then(Value::as_i64));
            let attempt = open
                .record
                .step_id
                .rsplit('.')
                .next()
                .and_then(|a| a.parse().ok())
                .unwrap_or(1);
            // A switch sent again after its strategy's deadline (`fallback: immediate`) was
            // journaled with its new body: the last one sent is the one to send again.
            let mut context = context;
            if let Some(sent) = (records.iter().rev())
                .find(|r| r.record.phase == StepPhase::SwitchSent)
                .and_then(|r| r.record.request.clone())
            {
                if sent.get("when").is_none() {
                    context.wait = None;
                }
                context.request = sent;
            }
            let mut report = StepReport::new(&context, &open.record.step_id);
            report.resumed = true;
            let run = StepRun {
                report,
                plan_id: open.record.plan_id.clone(),
                attempt,
                step_id: open.record.step_id.clone(),
                phase: Some(open.record.phase),
                soak_until_ms,
                preflight: None,
                artifact: None,
                waiting_since: None,
                context,
            };
            if run.phase < Some(StepPhase::SwitchSent) {
                // Nothing was sent to the host: the plan made now decides again.
                engine.journal_closed(
                    &open.record,
                    "plugsync stopped before the step's request was sent; planned again",
                )?;
                engine.notices.push(format!(
                    "step {} ({}) was left by a previous run before its request was sent: \
                     nothing to undo, planned again",
                    run.step_id,
                    run.context.title()
                ));
                continue;
            }
            resumed.push(engine.runs.len());
            engine.runs.push(run);
        }
        if !resumed.is_empty() {
            engine.waves.push(resumed);
        }
        Ok(engine)
    }

    /// Adds a plan's steps, in its waves, after those loaded so far.
    pub fn load(&mut self, plan: PreparedPlan) {
        // A plan made again after a failure or an interruption starts afresh: what failed is
        // marked on the host, and the new plan was made without it.
        self.stopping = false;
        self.interrupted = false;
        self.origin = plan.origin.clone();
        self.windows = plan.windows.clone();
        self.planned_at = Some((plan.now, Instant::now()));
        self.retention = plan.rollback_retention;
        let base = self.runs.len();
        for step in plan.steps {
            // The same plan made again (the host unchanged since a run that stopped): the
            // step gets the next attempt's id, so the host applies it afresh.
            let attempt = (1..)
                .find(|&attempt| {
                    let id = step_id(&plan.plan_id, step.context.number, attempt);
                    self.store
                        .step(&id)
                        .map_or(true, |records| records.is_empty())
                })
                .unwrap_or(1);
            let id = step_id(&plan.plan_id, step.context.number, attempt);
            self.runs.push(StepRun {
                report: StepReport::new(&step.context, &id),
                plan_id: plan.plan_id.clone(),
                attempt,
                step_id: id,
                phase: None,
                soak_until_ms: None,
                preflight: step.preflight,
                artifact: step.artifact,
                waiting_since: None,
                context: step.context,
            });
        }
        for wave in plan.waves {
            self.waves
                .push(wave.into_iter().map(|i| base + i).collect());
        }
    }

    /// The origin the steps are sent with.
    pub fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Whether a step of this run failed (or was refused): the reconcile fails.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Whether the loaded plan stopped short (a step failed or was interrupted): the rest of
    /// it did not start, and a plan made again decides.
    pub fn stopped_short(&self) -> bool {
        self.stopping
    }

    /// Whether a step of the loaded plan was interrupted (the host restarted under it).
    pub fn interrupted(&self) -> bool {
        self.interrupted
    }

    /// The versions whose steps failed in this run, as (plugin, artifact; `None`: a
    /// removal): never tried again in the same run, whatever the host's marks say.
    pub fn failed_versions(&self) -> BTreeSet<(String, Option<Digest>)> {
        (self.runs.iter())
            .filter(|run| {
                matches!(
                    run.report.outcome,
                    Some(StepOutcome::RolledBack { .. } | StepOutcome::Stopped { .. })
                )
            })
            .map(|run| {
                let to = run.context.to.as_ref().map(|to| to.sha256);
                (run.context.plugin.clone(), to)
            })
            .collect()
    }

    /// Every step's report, in order.
    pub fn reports(&self) -> Vec<StepReport> {
        self.runs.iter().map(|r| r.report.clone()).collect()
    }

    /// The steps begun and not ended, each as `step ID (TITLE) at PHASE`: what a stop now
    /// leaves to the journal.
    pub fn in_flight(&self) -> Vec<String> {
        (self.runs.iter())
            .filter(|run| run.report.outcome.is_none())
            .filter_map(|run| {
                let phase = run.phase?;
                Some(format!(
                    "step {} ({}) at `{phase}`",
                    run.step_id,
                    run.context.title()
                ))
            })
            .collect()
    }

    /// The steps that ended since the last call, in the order they ended.
    pub fn take_ended(&mut self) -> Vec<StepReport> {
        std::mem::take(&mut self.ended)
    }

    /// The steps that moved since the last call, not to their end (a progress line's update).
    pub fn take_working(&mut self) -> Vec<StepReport> {
        std::mem::take(&mut self.working)
    }

    /// What the engine had to say since the last call (a lease held elsewhere, an outcome
    /// in doubt).
    pub fn take_notices(&mut self) -> Vec<String> {
        std::mem::take(&mut self.notices)
    }

    /// Takes (or keeps) the host's reconcile lease: `Some(wait)` while another client holds
    /// it (the caller comes back after `wait`), an error with `no_wait`.
    pub fn acquire(&mut self) -> Result<Option<Duration>> {
        self.hold_lease()
    }

    /// Ends this engine's hold on the host's reconcile lease.
    pub fn release(&mut self) -> Result<()> {
        if let Some(lease) = self.lease.take() {
            self.port.lease(&LeaseRequest::Release {
                owner: None,
                epoch: lease.epoch,
            })?;
        }
        Ok(())
    }

    /// One pass: see the module docs.
    pub fn reconcile(&mut self) -> Result<Action> {
        if self.wave >= self.waves.len() {
            return Ok(Action::Finished);
        }
        if let Some(wait) = self.hold_lease()? {
            return Ok(Action::Requeue(wait));
        }
        let status = self.port.status(false)?;
        let mut next: Option<Duration> = None;
        let wave = self.waves[self.wave].clone();
        for &index in &wave {
            if self.runs[index].report.outcome.is_some() {
                continue;
            }
            if self.stopping && self.runs[index].phase.is_none() {
                self.runs[index].report.outcome = Some(StepOutcome::NotStarted);
                self.emit(index);
                continue;
            }
            if let Some(wait) = self.advance(index, &status)? {
                next = Some(next.map_or(wait, |n| n.min(wait)));
            }
        }
        if wave.iter().all(|&i| self.runs[i].report.outcome.is_some()) {
            self.wave += 1;
            if self.wave >= self.waves.len() {
                return Ok(Action::Finished);
            }
            return Ok(Action::Requeue(Duration::ZERO));
        }
        Ok(Action::Requeue(next.unwrap_or(SOAK_POLL)))
    }

    /// Sends a restraint change (a release, a cleared mark) under the reconcile lease,
    /// taking it first if need be (waiting while another client holds it).
    pub fn restrain(&mut self, request: &RestraintRequest) -> Result<()> {
        while let Some(wait) = self.hold_lease()? {
            std::thread::sleep(wait);
        }
        self.port.restraints(request, self.epoch())?;
        Ok(())
    }

    /// Acquires or renews the reconcile lease; the wait when another client holds it.
    fn hold_lease(&mut self) -> Result<Option<Duration>> {
        let ttl_ms = self.options.lease_ttl.as_millis() as u64;
        if let Some(lease) = self.lease {
            if lease.renewed.elapsed() < self.options.lease_ttl / 3 {
                return Ok(None);
            }
            let renewed = self.port.lease(&LeaseRequest::Renew {
                owner: None,
                epoch: lease.epoch,
                ttl_ms,
            });
            return match renewed {
                Ok(_) => {
                    self.lease = Some(HeldLease {
                        epoch: lease.epoch,
                        renewed: Instant::now(),
                    });
                    Ok(None)
                }
                Err(Error::HostRefused { code, message, .. }) => {
                    self.lease = None;
                    Err(Error::LeaseLost {
                        host: self.port.describe().to_owned(),
                        reason: format!("{code}: {message}"),
                    })
                }
                Err(error) => Err(error),
            };
        }
        match self.port.lease(&LeaseRequest::Acquire {
            owner: None,
            ttl_ms,
        }) {
            Ok(answer) => {
                let epoch = answer.holder.as_ref().map(|h| h.epoch).unwrap_or_default();
                self.client = answer.holder.map(|h| h.owner);
                self.lease = Some(HeldLease {
                    epoch,
                    renewed: Instant::now(),
                });
                Ok(None)
            }
            Err(Error::HostRefused { code, .. }) if code == "lease_held" => {
                let holder = self.port.status(false)?.status.lease.holder;
                let who = match &holder {
                    Some(holder) => format!(
                        "`{}` (its lease runs until {} unless renewed)",
                        holder.owner,
                        crate::plan::host_time(holder.expires_at.0)
                    ),
                    None => "another client".to_owned(),
                };
                if self.options.no_wait {
                    return Err(Error::LeaseHeldElsewhere {
                        host: self.port.describe().to_owned(),
                        holder: who,
                    });
                }
                if !self.told_waiting {
                    self.told_waiting = true;
                    self.notices
                        .push(format!("waiting: {who} is reconciling the host"));
                }
                Ok(Some(LEASE_POLL))
            }
            Err(error) => Err(error),
        }
    }

    fn epoch(&self) -> Option<u64> {
        self.lease.map(|l| l.epoch)
    }

    /// Advances step `index` by at most one transition that changes the host; the wait before
    /// the next pass (`Some(ZERO)`: at once), or `None` when the step ended.
    fn advance(&mut self, index: usize, status: &RunningState) -> Result<Option<Duration>> {
        let plugin = self.runs[index].context.plugin.clone();
        let running = status.status.plugins.iter().find(|p| p.plugin == plugin);
        match self.runs[index].phase {
            None => self.start(index, running),
            Some(StepPhase::Planned) => self.preflight(index),
            Some(StepPhase::Preflighted) => self.stage(index),
            Some(StepPhase::Staged) => self.send_operation(index),
            Some(StepPhase::SwitchSent) => self.settle_switch(index, status, running),
            Some(StepPhase::Soaking) => self.soak(index, running, status),
            Some(StepPhase::CommitSent) => self.send_commit(index, running),
            Some(StepPhase::RollbackSent) => self.send_rollback(index, running),
            Some(StepPhase::Done | StepPhase::RolledBack | StepPhase::Stopped) => Ok(None),
        }
    }

    /// Pre-checks, then `planned`: the plugin runs what the plan expected.
    fn start(&mut self, index: usize, running: Option<&PluginStatus>) -> Result<Option<Duration>> {
        // Who asks is journaled with the step: the name the host gave this client's lease.
        if self.runs[index].context.client.is_none() {
            self.runs[index].context.client = self.client.clone();
        }
        let context = &self.runs[index].context;
        let runs_now = running.map(|p| (p.version.version.clone(), p.version.digest));
        let expected = context.from.as_ref().map(|f| (f.version.clone(), f.sha256));
        let detail = serde_json::to_value(context).unwrap_or(Value::Null);
        self.journal(index, StepPhase::Planned, None, detail)?;
        if let Some(check) = self.free_space() {
            return self.stop(index, "pre-check", check);
        }
        if let Some((planned, loaded)) = self.planned_at
            && let Some(closed) = self.window_closed(planned, loaded)
        {
            return self.stop(index, "policy window", closed);
        }
        if runs_now != expected {
            let shown = |v: &Option<(String, plugsync_host::Digest)>| match v {
                Some((version, digest)) => format!("{version} ({})", digest.short()),
                None => "nothing".to_owned(),
            };
            let check = format!(
                "the host runs {} of `{}`, the plan expected {}: the host changed since the plan \
                 was made; run `plugsync reconcile` again to plan from what it runs now",
                shown(&runs_now),
                self.runs[index].context.plugin,
                shown(&expected)
            );
            return self.stop(index, "pre-check", check);
        }
        if let Some(problem) = self.keep_point(index)? {
            return self.stop(index, "rollback point", problem);
        }
        Ok(Some(Duration::ZERO))
    }

    /// Keeps a rollback point of what the step is about to change (not for an install: nothing
    /// runs yet); why it could not, if so (the step then does not start).
    fn keep_point(&mut self, index: usize) -> Result<Option<String>> {
        let context = &self.runs[index].context;
        let Some(from) = &context.from else {
            return Ok(None);
        };
        let plugin = context.plugin.clone();
        let running = self.port.status(true)?;
        let Some(status) = running.status.plugins.iter().find(|p| p.plugin == plugin) else {
            return Ok(Some(format!("`{plugin}` is no longer loaded on the host")));
        };
        let state = running
            .states
            .as_ref()
            .and_then(|s| s.get(&plugin))
            .cloned();
        if let Some(snapshot) = &state
            && let Err(error) = snapshot.verify()
        {
            return Ok(Some(format!(
                "the host's state of `{plugin}` does not verify ({error}): it is not one to roll \
                 back to"
            )));
        }
        let mut others: Vec<RunningVersion> = (running.status.plugins.iter())
            .map(|p| RunningVersion {
                plugin: p.plugin.clone(),
                version: p.version.version.clone(),
                sha256: p.version.digest,
            })
            .collect();
        others.sort_by(|a, b| a.plugin.cmp(&b.plugin));
        let at_ms = self.plan_time_ms();
        let retention = self.retention.as_millis() as i64;
        let point = RollbackPoint {
            step_id: self.runs[index].step_id.clone(),
            plan_id: self.runs[index].plan_id.clone(),
            plugin,
            at_ms,
            expires_at_ms: at_ms.saturating_add(retention),
            version: from.version.clone(),
            sha256: from.sha256,
            config: status.config.clone(),
            state,
            running: others,
            seq: 0,
        };
        // Not a mark of the step's line: a safety record, listed by `status` and `gc`.
        self.store.save_point(&point)?;
        Ok(None)
    }

    /// Now, by the clock the plan was made for (its time plus what has elapsed since it was
    /// loaded), in unix milliseconds: `PLUGSYNC_NOW` moves it in tests.
    fn plan_time_ms(&self) -> i64 {
        match self.planned_at {
            Some((planned, loaded)) => planned
                .as_millisecond()
                .saturating_add(loaded.elapsed().as_millis() as i64),
            None => now_ms(),
        }
    }

    /// Why the state directory's file system is too full for a step to start, if it is: every
    /// transition is a write the journal must be able to make.
    fn free_space(&self) -> Option<String> {
        let dir = self.store.path().parent()?;
        let stats = rustix::fs::statvfs(dir).ok()?;
        let free = stats.f_bavail.saturating_mul(stats.f_frsize);
        (free < self.options.min_free_bytes).then(|| {
            format!(
                "`{}` has {} MiB free, less than the {} MiB a step needs for its journal: \
                 free some space there, or give another `--state-dir`",
                dir.display(),
                free >> 20,
                self.options.min_free_bytes >> 20
            )
        })
    }

    /// Why the policy's windows forbid a step now (the plan's time plus the time since), if
    /// they do.
    fn window_closed(&self, planned: jiff::Timestamp, loaded: Instant) -> Option<String> {
        let elapsed = jiff::SignedDuration::try_from(loaded.elapsed()).ok()?;
        let now = planned.checked_add(elapsed).ok()?;
        let closed = crate::spec::windows::closed(&self.windows, now)?;
        let which = if closed.denied_by.is_empty() {
            format!("outside every allow window ({})", closed.outside.join(", "))
        } else {
            format!("deny window `{}` opened", closed.denied_by.join("`, `"))
        };
        Some(format!(
            "{which} while the reconcile ran: the steps left wait for the next reconcile \
             (or `--force --reason TEXT`)"
        ))
    }

    /// `preflighted`: the step's real switch made in a throwaway child process first.
    fn preflight(&mut self, index: usize) -> Result<Option<Duration>> {
        let Some(preflight) = self.runs[index].preflight.clone() else {
            // A removal runs no new code: nothing to preflight.
            if self.runs[index].context.operation != StepOperationName::Unload {
                self.runs[index].report.mark("not preflighted");
            }
            self.journal(index, StepPhase::Preflighted, None, Value::Null)?;
            return Ok(Some(Duration::ZERO));
        };
        let plugin = self.runs[index].context.plugin.clone();
        let job = match &preflight.running {
            Some(running) => {
                let state = self.port.status(true)?;
                let snapshot = state.states.as_ref().and_then(|s| s.get(&plugin)).cloned();
                let Some(snapshot) = snapshot else {
                    return self.stop(
                        index,
                        "preflight",
                        format!("the host gave no state for `{plugin}`"),
                    );
                };
                let live = match snapshot.verify() {
                    Ok(live) => live,
                    Err(error) => {
                        return self.stop(
                            index,
                            "preflight",
                            format!("the live state of `{plugin}` does not verify: {error}"),
                        );
                    }
                };
                let config = state
                    .status
                    .plugins
                    .iter()
                    .find(|p| p.plugin == plugin)
                    .map_or(Value::Null, |p| p.config.clone());
                PreviewJob::new(&plugin, running.clone(), config, live).step(preflight.step.clone())
            }
            None => PreviewJob::install(
                &plugin,
                preflight.step.artifact.clone(),
                (preflight.step.config.clone()).unwrap_or_else(|| json!({})),
            ),
        };
        let runner = ChildRunner::new(&self.options.exe, self.options.preflight_timeout);
        match preview(&job, &runner) {
            Ok(_) => {
                self.runs[index].report.mark("preflight ✓");
                self.journal(index, StepPhase::Preflighted, None, Value::Null)?;
                Ok(Some(Duration::ZERO))
            }
            Err(error) => {
                let message = error.to_string();
                if error.faults_the_new_version(preflight.running.is_none()) {
                    self.mark_failed(index, &message)?;
                }
                self.stop(index, "preflight", message)
            }
        }
    }

    /// Marks the step's target version failed on the host, as the host marks a version its own
    /// checks failed: no client retries it until it is cleared or its entry changes. A mark
    /// that cannot be set is said, not fatal (the step stops either way).
    fn mark_failed(&mut self, index: usize, why: &str) -> Result<()> {
        let context = &self.runs[index].context;
        let Some(to) = &context.to else {
            return Ok(());
        };
        let request = RestraintRequest::MarkFailed {
            plugin: context.plugin.clone(),
            artifact: to.sha256,
            version: to.version.clone(),
            reason: format!("preflight failed: {why}"),
            by: None,
            entry_sha256: context.entry_sha256.clone(),
        };
        let plugin = context.plugin.clone();
        let version = to.version.clone();
        match self.port.restraints(&request, self.epoch()) {
            Ok(_) => self.runs[index].report.marked_failed = Some(version),
            Err(error) => self.notices.push(format!(
                "could not mark `{plugin}` {version} failed on the host: {error}"
            )),
        }
        Ok(())
    }

    /// `staged`: the artifact in the host's store.
    fn stage(&mut self, index: usize) -> Result<Option<Duration>> {
        if let Some(artifact) = self.runs[index].artifact.clone()
            && !self.port.has_artifact(&artifact.sha256)?
        {
            let bytes = std::fs::read(&artifact.path).map_err(|source| Error::Io {
                action: "read",
                path: artifact.path.clone(),
                source,
            })?;
            if let Err(error) = self.port.stage(
                &artifact.sha256,
                &artifact.file_name,
                bytes,
                artifact.signature.clone(),
            ) {
                return match error {
                    Error::HostRefused { code, message, .. } => {
                        self.stop(index, "stage", format!("{code}: {message}"))
                    }
                    other => Err(other),
                };
            }
        }
        let run = &mut self.runs[index];
        if run.context.operation != StepOperationName::Unload
            && !run.report.marks.iter().any(|m| m == "staged ✓")
        {
            run.report.mark("staged ✓");
        }
        self.journal(index, StepPhase::Staged, None, Value::Null)?;
        Ok(Some(Duration::ZERO))
    }

    /// `switch-sent`: the operation journaled with its exact body, then sent.
    fn send_operation(&mut self, index: usize) -> Result<Option<Duration>> {
        // A preflight may have run long since the pass began: the lease is renewed first if it
        // is due, so the change goes under a lease that is surely still ours.
        if let Some(wait) = self.hold_lease()? {
            return Ok(Some(wait));
        }
        let request = self.runs[index].context.request.clone();
        self.journal(index, StepPhase::SwitchSent, Some(request), Value::Null)?;
        self.send_journaled_operation(index)
    }

    /// Sends the journaled operation (again, after a restart: the same step id, so the host
    /// applies it at most once) and reads its answer.
    fn send_journaled_operation(&mut self, index: usize) -> Result<Option<Duration>> {
        let run = &self.runs[index];
        let operation = run.context.operation;
        let answer = self.port.step(
            operation.operation(),
            &run.step_id,
            &run.context.request,
            self.epoch(),
        );
        match answer {
            Ok(answer) => {
                self.crash_if_answered(StepPhase::SwitchSent);
                if operation == StepOperationName::Unload {
                    self.runs[index].report.mark("unloaded");
                    return self.done(index);
                }
                if let (Some(since), Some(wait)) = (
                    self.runs[index].waiting_since,
                    &self.runs[index].context.wait,
                ) {
                    let waited = humantime::format_duration(Duration::from_millis(
                        since.elapsed().as_millis() as u64,
                    ));
                    let what = wait.waits_for.clone();
                    self.runs[index]
                        .report
                        .mark(&format!("waited {waited} until {what}"));
                }
                if let Ok(report) = serde_json::from_value::<SwapReport>(answer.body.clone()) {
                    let held = report.locked_window.as_micros();
                    self.runs[index].report.slot_held_us =
                        Some(u64::try_from(held).unwrap_or(u64::MAX));
                    self.runs[index]
                        .report
                        .mark(&format!("switched (slot held {})", micros(held)));
                } else {
                    self.runs[index].report.mark("installed");
                }
                self.begin_soak(index)
            }
            Err(Error::HostRefused { code, message, .. }) if code == "step_gone" => {
                self.supersede(index, &message)
            }
            Err(Error::HostRefused { code, message, .. }) if code == "not_yet" => {
                self.not_yet(index, message)
            }
            Err(Error::HostRefused { code, message, .. }) if code == "rolled_back" => {
                self.runs[index].report.rollback = Some(message.clone());
                self.journal(
                    index,
                    StepPhase::RolledBack,
                    None,
                    json!({"check": "switch", "message": message}),
                )?;
                self.fail(index, "switch", message)
            }
            Err(Error::HostRefused { code, message, .. }) => {
                let what = operation.operation().name();
                if code == "verification_failed" {
                    // The host marked the version failed as it refused it.
                    self.runs[index].report.marked_failed =
                        (self.runs[index].context.to.as_ref()).map(|to| to.version.clone());
                }
                self.stop(
                    index,
                    what,
                    format!("the host refused it (`{code}`): {message}"),
                )
            }
            // In doubt (the host unreachable, a 5xx): the next pass reads the outcome from the
            // host's status.
            Err(error) if transient(&error) => {
                self.notices.push(format!(
                    "step {}: the outcome of the {} is in doubt ({error}); reading it from the \
                     host",
                    self.runs[index].step_id,
                    operation.operation().name()
                ));
                Ok(Some(SOAK_POLL))
            }
            Err(error) => Err(error),
        }
    }

    /// The host answered "not yet" to the switch (its `when` does not hold): nothing was
    /// applied and the step id is not spent, so the same switch is asked again until the
    /// strategy's deadline; then the step fails, or with `fallback: immediate` the switch is
    /// journaled again without its `when` and sent.
    fn not_yet(&mut self, index: usize, message: String) -> Result<Option<Duration>> {
        let Some(wait) = self.runs[index].context.wait.clone() else {
            // Only a switch that asked for a moment can be told to wait for one.
            return self.stop(
                index,
                "switch",
                format!("the host refused it (`not_yet`): {message}"),
            );
        };
        let run = &mut self.runs[index];
        let deadline = Duration::from_millis(wait.deadline_ms);
        let shown = humantime::format_duration(deadline);
        let plugin = run.context.plugin.clone();
        let Some(since) = run.waiting_since else {
            run.waiting_since = Some(Instant::now());
            let then = match wait.fallback_immediate {
                true => "switches anyway",
                false => "fails",
            };
            let step_id = run.step_id.clone();
            self.notices.push(format!(
                "step {step_id}: `{plugin}` waits until it is {}: {}; asked again for up to \
                 {shown}, then it {then}",
                wait.waits_for,
                not_yet_why(&message)
            ));
            return Ok(Some(STRATEGY_POLL));
        };
        // A long wait may run into a policy window: the switch waits for the next reconcile.
        if let Some((planned, loaded)) = self.planned_at
            && let Some(closed) = self.window_closed(planned, loaded)
        {
            return self.stop(index, "policy window", closed);
        }
        let elapsed = since.elapsed();
        if elapsed < deadline {
            return Ok(Some(STRATEGY_POLL.min(deadline - elapsed)));
        }
        if !wait.fallback_immediate {
            return self.stop(
                index,
                "strategy",
                format!(
                    "`{plugin}` was not {} within its deadline of {shown} ({}): nothing changed; \
                     the next reconcile waits again (or set `fallback: immediate`)",
                    wait.waits_for,
                    not_yet_why(&message)
                ),
            );
        }
        let run = &mut self.runs[index];
        if let Some(body) = run.context.request.as_object_mut() {
            body.remove("when");
        }
        run.context.wait = None;
        run.report.mark(&format!(
            "not {} within {shown}: switching anyway (fallback: immediate)",
            wait.waits_for
        ));
        let request = run.context.request.clone();
        self.journal(
            index,
            StepPhase::SwitchSent,
            Some(request),
            json!({"fallback": "immediate", "waited_ms": elapsed.as_millis() as u64}),
        )?;
        self.send_journaled_operation(index)
    }

    /// An operation sent before a restart: its outcome read from the host, never from a
    /// replayed answer.
    fn settle_switch(
        &mut self,
        index: usize,
        status: &RunningState,
        running: Option<&PluginStatus>,
    ) -> Result<Option<Duration>> {
        let run = &self.runs[index];
        let id = run.step_id.as_str();
        if pending_id(running) == Some(id) {
            self.runs[index]
                .report
                .mark("switched (found pending on the host)");
            return self.begin_soak(index);
        }
        if applied_id(running) == Some(id) || unloaded_by(status, &run.context.plugin, id) {
            self.runs[index].report.mark("applied (found on the host)");
            return self.done(index);
        }
        if let Some(last) = running.and_then(|p| p.last_step.as_ref())
            && last.step_id.as_deref() == Some(id)
            && last.outcome == StepState::RolledBack
        {
            let why = rollback_reason(running);
            return self.rolled_back(index, "soak", why);
        }
        // No trace of it on the host: never received, or forgotten by a restart. Sent again
        // with the same id, the host applies it or says it is gone.
        self.send_journaled_operation(index)
    }

    /// `soaking`: the new version serves; the soak's end journaled so a restart keeps it.
    fn begin_soak(&mut self, index: usize) -> Result<Option<Duration>> {
        let until = now_ms() + self.runs[index].context.soak_ms as i64;
        let until = self.runs[index].soak_until_ms.unwrap_or(until);
        self.runs[index].soak_until_ms = Some(until);
        self.journal(
            index,
            StepPhase::Soaking,
            None,
            json!({"soak_until_ms": until}),
        )?;
        Ok(Some(Duration::ZERO))
    }

    /// Watches the soak: the host's own checks (lease, thresholds, health) roll back by
    /// themselves; at its end, the commit.
    fn soak(
        &mut self,
        index: usize,
        running: Option<&PluginStatus>,
        status: &RunningState,
    ) -> Result<Option<Duration>> {
        let id = self.runs[index].step_id.clone();
        if pending_id(running) != Some(id.as_str()) {
            return self.ended_elsewhere(index, running, status);
        }
        if let Some(plugin) = running
            && let plugsync_host::Health::Unhealthy { reason } = &plugin.health
        {
            let reason = format!("unhealthy during the soak: {reason}");
            return self.roll_back(index, reason);
        }
        let until = self.runs[index].soak_until_ms.unwrap_or_default();
        let left = until - now_ms();
        if left > 0 {
            return Ok(Some(Duration::from_millis(left as u64).min(SOAK_POLL)));
        }
        if let (Some(min), Some(pending)) = (
            self.runs[index].context.min_calls,
            running.and_then(|p| p.pending.as_ref()),
        ) && pending.calls_since_switch < min
        {
            return Ok(Some(SOAK_POLL));
        }
        let soak = self.runs[index].context.soak_ms;
        if soak > 0 {
            self.runs[index].report.mark(&format!(
                "soak {} ✓",
                humantime::format_duration(Duration::from_millis(soak))
            ));
        }
        let body = self.runs[index].context.commit_request(&self.origin);
        self.journal(index, StepPhase::CommitSent, Some(body), Value::Null)?;
        self.send_commit(index, running)
    }

    /// `commit-sent`: the commit (again, after a restart, when the step is still pending).
    fn send_commit(
        &mut self,
        index: usize,
        running: Option<&PluginStatus>,
    ) -> Result<Option<Duration>> {
        let id = self.runs[index].step_id.clone();
        if self.runs[index].report.resumed && pending_id(running) != Some(id.as_str()) {
            // Sent before a restart: what became of it is on the host.
            return if applied_id(running) == Some(id.as_str()) {
                self.runs[index]
                    .report
                    .mark("committed (found on the host)");
                self.done(index)
            } else {
                let why = rollback_reason(running);
                self.rolled_back(index, "soak", why)
            };
        }
        let body = self.runs[index].context.commit_request(&self.origin);
        match self
            .port
            .step(StepOperation::Commit, &id, &body, self.epoch())
        {
            Ok(_) => {
                self.crash_if_answered(StepPhase::CommitSent);
                self.runs[index].report.mark("committed");
                self.done(index)
            }
            Err(Error::HostRefused { code, .. }) if code == "not_enough_calls" => {
                Ok(Some(SOAK_POLL))
            }
            Err(Error::HostRefused { code, message, .. }) => {
                // Rolled back by the host between the last look and the commit, most often.
                let status = self.port.status(false)?;
                let running = status
                    .status
                    .plugins
                    .iter()
                    .find(|p| p.plugin == self.runs[index].context.plugin);
                if applied_id(running) == Some(id.as_str()) {
                    self.runs[index].report.mark("committed");
                    return self.done(index);
                }
                let why = match running.and_then(|p| p.last_rollback.as_ref()) {
                    Some(_) => rollback_reason(running),
                    None => format!("the commit was refused: {code}: {message}"),
                };
                self.rolled_back(index, "commit", why)
            }
            Err(error) if transient(&error) => Ok(Some(SOAK_POLL)),
            Err(error) => Err(error),
        }
    }

    /// plugsync rolls the step back (the host had not yet).
    fn roll_back(&mut self, index: usize, reason: String) -> Result<Option<Duration>> {
        let body = self.runs[index].context.rollback_request(&self.origin);
        self.journal(
            index,
            StepPhase::RollbackSent,
            Some(body),
            json!({"message": reason}),
        )?;
        self.runs[index].report.rollback = Some(reason);
        self.send_rollback(index, None)
    }

    /// `rollback-sent`: the rollback (again, after a restart, while still pending).
    fn send_rollback(
        &mut self,
        index: usize,
        running: Option<&PluginStatus>,
    ) -> Result<Option<Duration>> {
        let id = self.runs[index].step_id.clone();
        if self.runs[index].report.resumed
            && running.is_some()
            && pending_id(running) != Some(id.as_str())
        {
            let why = rollback_reason(running);
            return self.rolled_back(index, "soak", why);
        }
        let body = self.runs[index].context.rollback_request(&self.origin);
        let answer = self
            .port
            .step(StepOperation::Rollback, &id, &body, self.epoch());
        let why = self.runs[index]
            .report
            .rollback
            .clone()
            .unwrap_or_else(|| "rolled back by plugsync".to_owned());
        match answer {
            Ok(answer) => {
                self.crash_if_answered(StepPhase::RollbackSent);
                let detail = serde_json::from_value::<RollbackReport>(answer.body.clone())
                    .map(|r| describe_rollback(&r))
                    .unwrap_or_default();
                let message = format!("{why}{detail}");
                self.journal(
                    index,
                    StepPhase::RolledBack,
                    None,
                    json!({"check": "soak", "message": message}),
                )?;
                self.fail(index, "soak", message)
            }
            Err(error) if transient(&error) => Ok(Some(SOAK_POLL)),
            Err(Error::HostRefused { message, .. }) => {
                let message = format!("{why}; the rollback answered: {message}");
                self.journal(
                    index,
                    StepPhase::RolledBack,
                    None,
                    json!({"check": "soak", "message": message}),
                )?;
                self.fail(index, "soak", message)
            }
            Err(error) => Err(error),
        }
    }

    /// The step is no longer pending on the host, and plugsync did not end it.
    fn ended_elsewhere(
        &mut self,
        index: usize,
        running: Option<&PluginStatus>,
        status: &RunningState,
    ) -> Result<Option<Duration>> {
        let id = self.runs[index].step_id.clone();
        if applied_id(running) == Some(id.as_str()) {
            self.runs[index].report.mark("committed");
            return self.done(index);
        }
        let rolled_back = running
            .and_then(|p| p.last_step.as_ref())
            .is_some_and(|s| s.step_id.as_deref() == Some(id.as_str()));
        let why = if rolled_back || running.is_none() {
            match running {
                Some(_) => rollback_reason(running),
                None if unloaded_by(status, &self.runs[index].context.plugin, &id) => {
                    "the host unloaded the install: it was rolled back".to_owned()
                }
                None => "the host no longer runs the plugin".to_owned(),
            }
        } else {
            // No trace of the step: the host restarted and came back on its committed set.
            // Not the version's fault: the step ends, and the next plan decides again.
            let message = format!(
                "the host restarted during the soak and came back on its committed set \
                 ({} runs)",
                describe_running(running)
            );
            let detail = json!({"outcome": "interrupted", "message": message});
            self.journal(index, StepPhase::Stopped, None, detail)?;
            // The rest of this plan assumed the step: none of it starts.
            self.stopping = true;
            self.interrupted = true;
            self.runs[index].report.outcome = Some(StepOutcome::Interrupted { message });
            self.emit(index);
            return Ok(None);
        };
        self.runs[index].report.rollback = Some(why.clone());
        self.rolled_back(index, "soak", why)
    }

    /// A step the host forgot (it restarted before the commit): a new attempt with a new id,
    /// from its staged artifact.
    fn supersede(&mut self, index: usize, message: &str) -> Result<Option<Duration>> {
        self.journal(
            index,
            StepPhase::Stopped,
            None,
            json!({
                "outcome": "superseded",
                "message": format!("superseded by a new attempt: {message}")
            }),
        )?;
        let run = &mut self.runs[index];
        run.attempt += 1;
        run.step_id = step_id(&run.plan_id, run.context.number, run.attempt);
        run.report.step_id = run.step_id.clone();
        run.phase = None;
        run.soak_until_ms = None;
        let detail = serde_json::to_value(&run.context).unwrap_or(Value::Null);
        self.journal(index, StepPhase::Planned, None, detail)?;
        self.journal(index, StepPhase::Preflighted, None, Value::Null)?;
        Ok(Some(Duration::ZERO))
    }

    fn done(&mut self, index: usize) -> Result<Option<Duration>> {
        self.journal(index, StepPhase::Done, None, Value::Null)?;
        self.runs[index].report.outcome = Some(StepOutcome::Done);
        self.emit(index);
        Ok(None)
    }

    /// The step stopped before anything changed on the host (`check` failed).
    fn stop(&mut self, index: usize, check: &str, message: String) -> Result<Option<Duration>> {
        self.journal(
            index,
            StepPhase::Stopped,
            None,
            json!({"check": check, "message": message}),
        )?;
        self.stopping = true;
        self.failed = true;
        self.runs[index].report.outcome = Some(StepOutcome::Stopped {
            check: check.to_owned(),
            message,
        });
        self.emit(index);
        Ok(None)
    }

    /// Journals that the step was rolled back (`why`), then fails it.
    fn rolled_back(&mut self, index: usize, check: &str, why: String) -> Result<Option<Duration>> {
        let detail = json!({"check": check, "message": why});
        self.journal(index, StepPhase::RolledBack, None, detail)?;
        self.fail(index, check, why)
    }

    /// The step was rolled back (journaled by the caller); `on_failure: halt` halts the
    /// plugin.
    fn fail(&mut self, index: usize, check: &str, message: String) -> Result<Option<Duration>> {
        self.stopping = true;
        self.failed = true;
        let mut halted = None;
        if self.runs[index].context.halt_on_failure {
            let plugin = self.runs[index].context.plugin.clone();
            let reason = format!(
                "onFailure: halt after step {} was rolled back: {message}",
                self.runs[index].step_id
            );
            let request = RestraintRequest::Halt {
                plugin: plugin.clone(),
                reason,
                by: None,
            };
            halted = Some(match self.port.restraints(&request, self.epoch()) {
                Ok(_) => Ok(plugin),
                Err(error) => Err(error.to_string()),
            });
        }
        // The host marks the version it rolled back failed (whoever asked for the rollback).
        self.runs[index].report.marked_failed =
            (self.runs[index].context.to.as_ref()).map(|to| to.version.clone());
        self.runs[index].report.outcome = Some(StepOutcome::RolledBack {
            check: check.to_owned(),
            message,
            halted,
        });
        self.emit(index);
        Ok(None)
    }

    fn emit(&mut self, index: usize) {
        self.ended.push(self.runs[index].report.clone());
    }

    /// Journals a transition of step `index`, then — when told to crash there — aborts.
    fn journal(
        &mut self,
        index: usize,
        phase: StepPhase,
        request: Option<Value>,
        detail: Value,
    ) -> Result<()> {
        let run = &self.runs[index];
        self.store.journal(&JournalRecord {
            step_id: run.step_id.clone(),
            plan_id: run.plan_id.clone(),
            plugin: run.context.plugin.clone(),
            phase,
            at_ms: now_ms(),
            request,
            detail,
        })?;
        self.runs[index].phase = Some(phase);
        self.runs[index].report.phase = Some(phase);
        if !phase.is_terminal() {
            self.working.push(self.runs[index].report.clone());
        }
        if self.options.crash_at
            == Some(super::CrashPoint {
                phase,
                answered: false,
            })
        {
            // A crash injected on purpose (`PLUGSYNC_CRASH_AT`), to prove a restart finishes
            // what the journal holds: no destructor, no flush, like a `kill -9`.
            eprintln!("plugsync: PLUGSYNC_CRASH_AT={phase}: aborting right after journaling it");
            std::process::abort();
        }
        Ok(())
    }

    /// When told to crash once the host answered `phase`'s request, aborts: the host applied
    /// it, the journal does not know.
    fn crash_if_answered(&self, phase: StepPhase) {
        if self.options.crash_at
            == Some(super::CrashPoint {
                phase,
                answered: true,
            })
        {
            eprintln!(
                "plugsync: PLUGSYNC_CRASH_AT={phase}+answered: aborting before journaling the \
                 host's answer"
            );
            std::process::abort();
        }
    }

    /// Closes a journaled step that will not be driven.
    fn journal_closed(&mut self, last: &JournalRecord, why: &str) -> Result<()> {
        self.store.journal(&JournalRecord {
            phase: StepPhase::Stopped,
            at_ms: now_ms(),
            request: None,
            detail: json!({"outcome": "interrupted", "message": why}),
            ..last.clone()
        })?;
        Ok(())
    }
}

/// What the host's "not yet" says of the plugin: its message without the lead and the advice
/// (`its last call was 3 ms ago, and it waits for 5000 ms without one`).
fn not_yet_why(message: &str) -> &str {
    let why = message
        .split_once(" not yet: ")
        .map_or(message, |(_, why)| why);
    why.split_once("; nothing was applied")
        .map_or(why, |(why, _)| why)
}

/// Whether an error leaves an outcome in doubt (it may be retried).
fn transient(error: &Error) -> bool {
    match error {
        Error::Unreachable { .. } => true,
        Error::HostRefused { status, .. } | Error::BadAnswer { status, .. } => *status >= 500,
        _ => false,
    }
}

/// `ma_cross 1.0.0`, or `nothing`.
fn describe_running(running: Option<&PluginStatus>) -> String {
    running.map_or("nothing".to_owned(), |p| {
        format!("{} {}", p.plugin, p.version.version)
    })
}

fn pending_id(running: Option<&PluginStatus>) -> Option<&str> {
    running
        .and_then(|p| p.pending.as_ref())
        .and_then(|p| p.step_id.as_deref())
}

fn applied_id(running: Option<&PluginStatus>) -> Option<&str> {
    use plugsync_host::AppliedOperation;
    // A step rolled back on request (an operator's `plugsync rollback` of it) is recorded
    // under its id too: only a commit (or an install's) says it was applied.
    running
        .and_then(|p| p.applied.as_ref())
        .filter(|a| {
            matches!(
                a.operation,
                AppliedOperation::Commit | AppliedOperation::Install
            )
        })
        .and_then(|a| a.step_id.as_deref())
}

/// Whether the host's record of an unloaded plugin names step `id`.
fn unloaded_by(status: &RunningState, plugin: &str, id: &str) -> bool {
    status
        .status
        .unloaded
        .iter()
        .any(|u| u.plugin == plugin && u.applied.step_id.as_deref() == Some(id))
}

/// Why the host rolled the plugin's last step back, as its status says.
fn rollback_reason(running: Option<&PluginStatus>) -> String {
    // A rollback another client asked for is recorded with who asked (an operator's
    // `plugsync rollback` of a step this client soaked).
    let report = running.and_then(|p| p.last_rollback.as_ref());
    let asked = (report.and_then(|r| r.asked_by.as_ref()))
        .or_else(|| {
            (running.and_then(|p| p.applied.as_ref()))
                .filter(|a| a.operation == plugsync_host::AppliedOperation::Rollback)
                .and_then(|a| a.origin.as_ref())
        })
        .map(|origin| match &origin.client {
            Some(client) => format!(" by `{client}` ({})", origin.tool),
            None => format!(" by {}", origin.tool),
        })
        .unwrap_or_default();
    match report {
        Some(report) => format!(
            "rolled back by the host: {}{asked}{}",
            report.reason,
            describe_rollback(report)
        ),
        None => format!("rolled back by the host{asked}"),
    }
}

/// `; 12 calls replayed into 1.0.0, 0 outputs differ; 1.0.0 serves, its state exact`.
pub fn describe_rollback(report: &RollbackReport) -> String {
    use plugsync_host::RollbackMethod;
    let serving = report
        .to
        .as_ref()
        .map_or("nothing".to_owned(), |to| to.version.clone());
    let how = match &report.method {
        RollbackMethod::Replay {
            replayed,
            divergences,
        } => format!(
            "{replayed} call{} replayed into {serving}, {}; {serving} serves, its state exact",
            if *replayed == 1 { "" } else { "s" },
            match divergences.len() {
                1 => "1 output differs".to_owned(),
                n => format!("{n} outputs differ"),
            },
        ),
        RollbackMethod::DownMigration {
            unjournaled_calls,
            in_doubt_call,
            ..
        } => format!(
            "state migrated back into {serving} ({unjournaled_calls} calls past the journal{})",
            match in_doubt_call {
                Some(call) => format!(", call #{call} in doubt"),
                None => String::new(),
            }
        ),
        RollbackMethod::Lossy { .. } => {
            format!("{serving} resumed from its state at the switch: calls since are LOST")
        }
        RollbackMethod::Unloaded { .. } => "the install was unloaded".to_owned(),
    };
    format!("; {how}")
}

fn micros(us: u128) -> String {
    format!("{us} µs")
}

/// Wall-clock now, in unix milliseconds: soaks are journaled in it, to outlive the process.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
