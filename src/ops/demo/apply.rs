//! The steps, applied as an operator's `plugsync reconcile` applies them: [`ops::reconcile`]
//! (the apply engine) over the venue's [`HostPort`], once for a plugins.yaml pinning the faulty
//! release, once for the demo's plugins.yaml. The demo narrates each step as the engine ends it
//! (its [`Progress`]), and checks what the engine cannot see: the calls served and failed, the
//! books, and, after the rollback, the restored state against a reference.
//!
//! [`ops::reconcile`]: crate::ops::reconcile

use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use plugsync_host::{RollbackMethod, SwapReport};

use super::report::{print_rollback, print_switch};
use super::{
    Calls, DemoOptions, Expect, Reference, STEPS, Staged, Step, StepOutcome, Venue, WaitMeter,
    gitops,
};
use crate::apply::{self as engine, ApplyReport, HostAnswer, HostMethod, HostPort, HostRequest};
use crate::error::{Error, Result};
use crate::ops::{Progress, ReconcileOptions, reconcile};
use crate::plan::SearchLimits;

/// How long the reconcile lease lasts unless renewed (as `plugsync reconcile`'s).
const LEASE_TTL: Duration = Duration::from_secs(30);

/// Applies the demo's steps with the engine, narrating to `out`: the faulty release from
/// `faulty-release/plugins.yaml`, then the upgrades from the locked `plugins.yaml` under `work`.
/// `staged` holds each step's artifact, in `STEPS` order.
pub(super) fn apply_steps(
    venue: &dyn Venue,
    work: &Path,
    staged: &[Staged],
    options: &DemoOptions,
    out: &mut dyn Write,
) -> Result<Vec<StepOutcome>> {
    let exe = gitops::plugsync_exe(options);
    let port = Watched {
        port: venue.port()?,
        meter: venue.meter(),
        switches: Mutex::new(Vec::new()),
    };
    let state_dir = work.join("state");
    let preflight = match &exe {
        Some(exe) => format!(
            "preflighted in a child `{} preflight-child` on the live state",
            exe.display()
        ),
        None => "NOT preflighted (no plugsync executable found to run the child: preflight off)"
            .to_owned(),
    };
    let _ = writeln!(
        out,
        "  the steps are applied as `plugsync reconcile` applies them (the apply engine, over \
         the {} control API): each journaled in {}, {preflight}, staged, switched under the \
         host's reconcile lease, soaked {} ms while the desk trades (the host watches health \
         and error rate), then committed — or rolled back\n",
        port.describe(),
        state_dir.display(),
        options.soak.as_millis()
    );
    let reconcile_options = |file: &Path, locked: bool| ReconcileOptions {
        file: file.to_owned(),
        locked,
        state_dir: state_dir.clone(),
        trusted_keys: None,
        registry_ca: None,
        plan: None,
        force: None,
        no_wait: false,
        preflight: exe.is_some(),
        preflight_timeout: gitops::PREVIEW_TIMEOUT,
        exe: exe.clone().unwrap_or_default(),
        now: jiff::Timestamp::now(),
        limits: SearchLimits::default(),
        crash_at: None,
        lease_ttl: LEASE_TTL,
    };

    let (faulty, upgrades) = STEPS.split_at(1);
    let mut narrator = Narrator {
        calls: venue.calls()?,
        venue,
        port: &port,
        out,
        first: 0,
        steps: faulty,
        staged: &staged[..1],
        outcomes: Vec::new(),
        error: None,
    };
    // risk_model stays as the desk runs it.
    let running = port.status(false)?;
    let risk_config = (running.status.plugins.iter())
        .find(|p| p.plugin == "risk_model")
        .map_or(serde_json::Value::Null, |p| p.config.clone());
    let file = gitops::faulty_release(work, &staged[0], &risk_config, options.soak, narrator.out)?;
    let report = reconcile(&reconcile_options(&file, false), &port, &mut narrator)?;
    narrator.finish(&report)?;

    let _ = writeln!(
        narrator.out,
        "`plugsync reconcile -f {}` (the plugins.yaml planned above, locked):",
        work.join("plugins.yaml").display()
    );
    narrator.first = faulty.len();
    narrator.steps = upgrades;
    narrator.staged = &staged[faulty.len()..];
    let report = reconcile(
        &reconcile_options(&work.join("plugins.yaml"), true),
        &port,
        &mut narrator,
    )?;
    narrator.finish(&report)?;
    Ok(narrator.outcomes)
}

/// A switch the venue's port carried, as the host answered it.
struct Switch {
    /// `POST /v1/steps/{id}/switch`.
    request: String,
    report: SwapReport,
    /// How long the request took.
    took: Duration,
    /// The longest wait of any call while it ran (in process only).
    longest_wait: Option<Duration>,
}

/// The venue's port, watched: each switch's answer kept for the narration (its state diff,
/// how it switched), and, where the demo sees its callers, the longest wait of any call
/// while it ran.
struct Watched<'a> {
    port: Box<dyn HostPort>,
    meter: Option<&'a dyn WaitMeter>,
    switches: Mutex<Vec<Switch>>,
}

impl Watched<'_> {
    fn take_switches(&self) -> Vec<Switch> {
        std::mem::take(
            &mut self
                .switches
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

impl HostPort for Watched<'_> {
    fn describe(&self) -> &str {
        self.port.describe()
    }

    fn send(&self, request: HostRequest) -> Result<HostAnswer> {
        let switch = request.method == HostMethod::Post && request.path.ends_with("/switch");
        if !switch {
            return self.port.send(request);
        }
        let shown = format!("POST {}", request.path);
        if let Some(meter) = self.meter {
            meter.reset();
        }
        let started = Instant::now();
        let answer = self.port.send(request)?;
        let took = started.elapsed();
        let longest_wait = self.meter.map(|m| m.longest());
        if let Ok(report) = serde_json::from_value::<SwapReport>(answer.body.clone()) {
            self.switches
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .push(Switch {
                    request: shown,
                    report,
                    took,
                    longest_wait,
                });
        }
        Ok(answer)
    }
}

/// The engine's progress, narrated, each ended step checked on the venue.
struct Narrator<'a, 'o> {
    venue: &'a dyn Venue,
    port: &'a Watched<'a>,
    out: &'o mut dyn Write,
    /// The index in `STEPS` of the plan's first step.
    first: usize,
    /// The demo's steps this plan makes, and their artifacts.
    steps: &'static [Step],
    staged: &'a [Staged],
    /// The calls served and failed when the last step ended.
    calls: Calls,
    outcomes: Vec<StepOutcome>,
    /// The first error met while narrating (a [`Progress`] cannot return one).
    error: Option<Error>,
}

impl Narrator<'_, '_> {
    /// The apply's summary; the demo's steps it did not report are not as expected.
    fn finish(&mut self, report: &ApplyReport) -> Result<()> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        let _ = writeln!(self.out, "  {}\n", report.summary());
        let reported = report.steps.len().min(self.steps.len());
        let left = self
            .steps
            .iter()
            .zip(self.staged)
            .enumerate()
            .skip(reported);
        for (n, (step, artifact)) in left {
            let _ = writeln!(
                self.out,
                "step {}/{}: {}\n  NOT APPLIED: the plan had no step to {} {}\n",
                self.first + n + 1,
                STEPS.len(),
                step.title,
                step.plugin,
                artifact.version
            );
            self.outcomes.push(StepOutcome {
                plugin: step.plugin.to_owned(),
                library: step.library.to_owned(),
                committed: false,
                rolled_back: false,
                as_expected: false,
                calls: 0,
                failed: 0,
                longest_wait: None,
                consistent: true,
                lost_state: false,
                replayed: None,
                matches_reference: None,
            });
        }
        Ok(())
    }

    fn narrate(&mut self, report: &engine::StepReport) -> Result<StepOutcome> {
        let step = self.steps.get(report.number - 1);
        let artifact = self.staged.get(report.number - 1);
        let _ = writeln!(
            self.out,
            "step {}/{}: {}",
            self.first + report.number,
            STEPS.len(),
            step.map_or(report.title.as_str(), |s| s.title)
        );
        let mut longest_wait = None;
        for switch in self.port.take_switches() {
            print_switch(self.out, &switch.report);
            let took = switch.took.as_secs_f64() * 1e3;
            let _ = match switch.longest_wait {
                Some(wait) => {
                    longest_wait = Some(longest_wait.map_or(wait, |w: Duration| w.max(wait)));
                    writeln!(
                        self.out,
                        "  {} answered in {took:.1} ms; longest wait of any call while it \
                         swapped: {:.1} µs",
                        switch.request,
                        wait.as_secs_f64() * 1e6
                    )
                }
                None => writeln!(
                    self.out,
                    "  {} answered in {took:.1} ms (the host does not report its callers' \
                     longest wait: they waited at most the slot time above)",
                    switch.request
                ),
            };
        }
        let _ = writeln!(self.out, "  {}", report.text().replace('\n', "\n  "));

        let committed = report.outcome == Some(engine::StepOutcome::Done);
        let rolled_back = matches!(report.outcome, Some(engine::StepOutcome::RolledBack { .. }));
        let mut replayed = None;
        let mut matches_reference = None;
        let mut lost_state = false;
        if rolled_back {
            match self.venue.last_rollback(&report.plugin)? {
                Some(rollback) => {
                    print_rollback(self.out, &rollback, None);
                    lost_state = !rollback.lost_nothing();
                    if let RollbackMethod::Replay { replayed: n, .. } = &rollback.method {
                        replayed = Some(*n);
                    }
                    let restored = rollback.to.as_ref().map_or("nothing", |to| &to.version);
                    matches_reference = self.reference(&report.plugin, restored)?;
                }
                None => {
                    let _ = writeln!(self.out, "  the host reports no rollback of it");
                }
            }
        }
        lost_state |= matches_reference == Some(false);

        let books = self.venue.books()?;
        let now = self.venue.calls()?;
        let calls = now - self.calls;
        self.calls = now;
        let _ = writeln!(
            self.out,
            "  {}; {} calls served during the step, {} failed; books {}\n",
            if committed {
                "committed"
            } else {
                "not committed: the previous version serves"
            },
            calls.served,
            calls.failed,
            if books.problems.is_empty() {
                books.agreed.clone()
            } else {
                format!("MISMATCH: {}", books.problems.join("; "))
            }
        );
        // The step the demo expects: the same plugin, to the same version.
        let planned = step.zip(artifact).is_some_and(|(step, artifact)| {
            report.plugin == step.plugin
                && report.title.ends_with(&format!(" {}", artifact.version))
        });
        Ok(StepOutcome {
            plugin: report.plugin.clone(),
            library: step.map_or_else(|| report.title.clone(), |s| s.library.to_owned()),
            committed,
            rolled_back,
            as_expected: planned
                && match step.map(|s| s.expect) {
                    Some(Expect::Committed) => committed,
                    // Rolled back by replaying calls the faulty version served, and restored
                    // exactly.
                    Some(Expect::RolledBack) => {
                        rolled_back
                            && !lost_state
                            && replayed.is_some_and(|n| n > 0)
                            && matches_reference != Some(false)
                    }
                    None => false,
                },
            calls: calls.served,
            failed: calls.failed,
            longest_wait,
            consistent: books.problems.is_empty(),
            lost_state,
            replayed,
            matches_reference,
        })
    }

    /// Checks the restored state of `plugin` against a reference runtime; prints what it found.
    fn reference(&mut self, plugin: &str, restored: &str) -> Result<Option<bool>> {
        Ok(match self.venue.reference(plugin)? {
            Reference::Matched { calls, sha256 } => {
                let _ = writeln!(
                    self.out,
                    "  restored state checked: identical to a reference runtime that ran \
                     {restored} alone and was fed the same {calls} calls (sha256 {})",
                    &sha256[..12.min(sha256.len())]
                );
                Some(true)
            }
            Reference::Differs(what) => {
                let _ = writeln!(
                    self.out,
                    "  RESTORED STATE DIFFERS from a reference runtime fed the same calls: {what}"
                );
                Some(false)
            }
            Reference::Unavailable(why) => {
                let _ = writeln!(
                    self.out,
                    "  restored state not checked against a reference: {why}"
                );
                None
            }
        })
    }
}

impl Progress for Narrator<'_, '_> {
    fn step(&mut self, report: &engine::StepReport) {
        match self.narrate(report) {
            Ok(outcome) => self.outcomes.push(outcome),
            Err(error) => {
                self.error.get_or_insert(error);
            }
        }
    }

    fn notice(&mut self, text: &str) {
        let _ = writeln!(self.out, "  {text}");
    }
}
