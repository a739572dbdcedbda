//! The story after the first commit, as an operator lives it: each change applied as
//! `plugsync reconcile` applies it — [`ops::reconcile`] (the apply engine) over the venue's
//! [`HostPort`], from the committed plugins.yaml — and each operator command run as its library
//! function ([`ops::rollback`], [`ops::restrain`], [`ops::history`]):
//!
//! 3. the first commit reconciled (the plan shown before);
//! 4. a faulty patch release committed and reconciled: rolled back by replay and marked failed
//!    on the host; a second reconcile does not retry it; a commit that moves the entry past it
//!    goes on;
//! 5. a manual rollback of that upgrade (applied, then held); the next reconcile keeps it
//!    held; released, the next reconcile moves it back;
//! 6. `plugsync history`, each step with the commit it was applied from.
//!
//! The demo narrates each step as the engine ends it (its [`Progress`]), and checks what the
//! engine cannot see: the calls served and failed, the books, and, after the rollback by
//! replay, the restored state against a reference.
//!
//! [`ops::reconcile`]: crate::ops::reconcile
//! [`ops::rollback`]: crate::ops::rollback
//! [`ops::restrain`]: crate::ops::restrain
//! [`ops::history`]: crate::ops::history

use std::io::Write;
use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use plugsync_host::{RollbackMethod, SwapReport};

use super::gitops::{Desk, Entry, PLANNED, indent};
use super::report::{print_rollback, print_switch};
use super::{
    Calls, DemoOptions, Expect, Reference, STEPS, Staged, Step, StepOutcome, StoryCheck, Venue,
    WaitMeter, gitops, stage_header,
};
use crate::apply::{self as engine, ApplyReport, HostAnswer, HostMethod, HostPort, HostRequest};
use crate::error::{Error, Result};
use crate::ops::{
    HistoryOptions, Progress, ReconcileOptions, RestraintChange, RollbackOptions, RollbackOutcome,
    history, reconcile, restrain, rollback,
};
use crate::plan::SearchLimits;

/// How long the reconcile lease lasts unless renewed (as `plugsync reconcile`'s).
const LEASE_TTL: Duration = Duration::from_secs(30);

/// The demo's steps each stage applies, in `STEPS`.
const FAULTY: Range<usize> = PLANNED..PLANNED + 1;
const MOVED_ON: Range<usize> = PLANNED + 1..PLANNED + 2;
const ROLLED_BACK: Range<usize> = PLANNED + 2..PLANNED + 3;
const RELEASED: Range<usize> = PLANNED + 3..PLANNED + 4;
const SCHEDULED: Range<usize> = PLANNED + 4..PLANNED + 5;

/// Tells stages 3 to 6 of the story on `venue`, from `desk`'s repository, narrating to `out`
/// (see the module docs); `staged` holds each step's artifact, in `STEPS` order. Each step's
/// outcome, and the story's other checks.
pub(super) fn tell_story(
    venue: &dyn Venue,
    desk: &mut Desk,
    staged: &[Staged],
    options: &DemoOptions,
    out: &mut dyn Write,
) -> Result<(Vec<StepOutcome>, Vec<StoryCheck>)> {
    let exe = gitops::plugsync_exe(options);
    let port = Watched {
        port: venue.port()?,
        meter: venue.meter(),
        switches: Mutex::new(Vec::new()),
    };
    let preflight = match &exe {
        Some(_) => "preflighted in a child `plugsync preflight-child` on the live state",
        None => "NOT preflighted (no plugsync executable found to run the child: preflight off)",
    };
    let apply_options = ReconcileOptions {
        file: desk.file.clone(),
        locked: true,
        state_dir: desk.state_dir.clone(),
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
        stop: crate::apply::Stop::new(),
    };
    let reconcile_options = || ReconcileOptions {
        now: jiff::Timestamp::now(),
        ..apply_options.clone()
    };
    let mut narrator = Narrator {
        calls: venue.calls()?,
        venue,
        port: &port,
        out,
        first: 0,
        steps: &STEPS[..PLANNED],
        staged,
        outcomes: Vec::new(),
        error: None,
    };
    let mut checks = Vec::new();
    let ma_cross = |n: usize| staged[n].version.as_str();

    // 3. The first commit.
    stage_header(
        narrator.out,
        3,
        &format!(
            "`plugsync reconcile -f {}` (commit {})",
            desk.file.display(),
            short(&desk.commits[0])
        ),
    );
    let _ = writeln!(
        narrator.out,
        "  each step journaled in {}, {preflight}, staged, switched under the host's reconcile \
         lease over the {} control API, soaked {} ms while the desk trades, then committed — or \
         rolled back",
        desk.state_dir.display(),
        port.describe(),
        options.soak.as_millis()
    );
    narrator.apply(0..PLANNED, &reconcile_options(), &port)?;

    // 4. A faulty release, committed.
    stage_header(
        narrator.out,
        4,
        "A faulty release committed: rolled back, marked failed, not retried",
    );
    venue.mark("ma_cross")?;
    let faulty = ma_cross(FAULTY.start);
    desk.commit(
        &Entry {
            version: faulty,
            locked: true,
            scheduled: None,
        },
        &format!("ma_cross {faulty}: a patch release, switched under the lock (starts fresh)"),
        narrator.out,
    )?;
    narrator.apply(FAULTY, &reconcile_options(), &port)?;
    let marked = (port.status(false)?.status.restraints.failed.iter())
        .any(|mark| mark.plugin == "ma_cross" && mark.version == faulty);
    checks.push(StoryCheck {
        what: format!("ma_cross {faulty} rolled back and marked failed on the host"),
        held: marked,
    });
    let _ = writeln!(narrator.out, "  the next reconcile, from the same commit:");
    let again = narrator.apply(FAULTY.end..FAULTY.end, &reconcile_options(), &port)?;
    checks.push(StoryCheck {
        what: format!("the next reconcile did not retry ma_cross {faulty}"),
        held: again.steps.is_empty()
            && (again.kept.iter()).any(|k| k.contains(&format!("{faulty} marked failed"))),
    });
    let fixed = ma_cross(MOVED_ON.start);
    desk.commit(
        &Entry {
            version: fixed,
            locked: false,
            scheduled: None,
        },
        &format!("ma_cross {fixed}, past the faulty {faulty}"),
        narrator.out,
    )?;
    narrator.apply(MOVED_ON, &reconcile_options(), &port)?;

    // 5. A manual rollback, held against the next reconcile.
    stage_header(
        narrator.out,
        5,
        "A manual rollback: `plugsync rollback ma_cross --yes`, held",
    );
    narrator.expect(ROLLED_BACK);
    let rolled = rollback(
        &RollbackOptions {
            apply: reconcile_options(),
            plugin: "ma_cross".to_owned(),
            to: None,
            carry: Vec::new(),
            reason: "demo drill: back to the previous version".to_owned(),
            yes: true,
            restore_snapshot: false,
            styled: false,
        },
        &port,
        &mut narrator,
    )?;
    if let RollbackOutcome::Applied { report, held, .. } = &rolled {
        narrator.finish(report)?;
        for line in held {
            let _ = writeln!(narrator.out, "  {line}");
        }
    }
    let _ = writeln!(narrator.out, "  the next reconcile, from the same commit:");
    let kept = narrator.apply(
        ROLLED_BACK.end..ROLLED_BACK.end,
        &reconcile_options(),
        &port,
    )?;
    let back = ma_cross(ROLLED_BACK.start);
    checks.push(StoryCheck {
        what: format!("the next reconcile kept ma_cross held at {back}"),
        held: kept.steps.is_empty()
            && (kept.kept.iter()).any(|k| k.starts_with(&format!("ma_cross {back}: held by"))),
    });
    let release = RestraintChange::Release {
        plugin: "ma_cross".to_owned(),
    };
    let released = restrain(&release, &port, false, &mut |_| {})?;
    let _ = writeln!(narrator.out, "  `plugsync release ma_cross`: {released}");
    narrator.apply(RELEASED, &reconcile_options(), &port)?;

    // 6. A change scheduled for later: kept until its time, then applied.
    stage_header(
        narrator.out,
        6,
        "A change scheduled for after the close: kept until then, applied at its time",
    );
    let now = jiff::Timestamp::now();
    // An hour from now, to the minute (jiff's range ends in 9999: no error before then).
    let at = jiff::Timestamp::from_second((now.as_second() / 60 + 61) * 60).unwrap_or(now);
    let at_text = at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
    let released = ma_cross(RELEASED.start);
    desk.commit(
        &Entry {
            version: released,
            locked: false,
            scheduled: Some(&at_text),
        },
        &format!("ma_cross: twice the order size, from {at_text}"),
        narrator.out,
    )?;
    let _ = writeln!(narrator.out, "  the reconcile now:");
    let waiting = narrator.apply(
        SCHEDULED.start..SCHEDULED.start,
        &reconcile_options(),
        &port,
    )?;
    checks.push(StoryCheck {
        what: format!("the reconcile before {at_text} kept ma_cross where it runs"),
        held: waiting.steps.is_empty()
            && (waiting.kept.iter()).any(|k| k.contains(&format!("scheduled at `{at_text}`"))),
    });
    let _ = writeln!(
        narrator.out,
        "  the reconcile at {at_text} (the demo moves its planning clock on; the desk trades \
         on):"
    );
    let due = ReconcileOptions {
        now: at,
        ..reconcile_options()
    };
    narrator.apply(SCHEDULED, &due, &port)?;

    // 7. The history.
    stage_header(
        narrator.out,
        7,
        &format!(
            "`plugsync history --state-dir {}`",
            desk.state_dir.display()
        ),
    );
    let told = history(&HistoryOptions {
        state_dir: desk.state_dir.clone(),
        plugin: None,
        since: None,
    })?;
    let _ = write!(narrator.out, "{}", indent("  ", &told.text()));
    checks.push(history_check(&told, &desk.commits));
    Ok((narrator.outcomes, checks))
}

/// Each step in the history, oldest first, names the commit it was applied from, clean: the
/// first commit's steps, the faulty release's, then the third commit's (its upgrade, the
/// manual rollback and the move back).
fn history_check(told: &crate::ops::History, commits: &[String]) -> StoryCheck {
    let from: [usize; STEPS.len()] = [0, 0, 1, 2, 2, 2, 3];
    let expected: Vec<Option<&str>> = from
        .iter()
        .map(|&n| commits.get(n).map(String::as_str))
        .collect();
    let found: Vec<Option<&str>> = (told.entries.iter().rev())
        .map(|e| {
            (e.dirty == Some(false))
                .then_some(e.commit.as_deref())
                .flatten()
        })
        .collect();
    StoryCheck {
        what: format!(
            "`plugsync history` shows the {} steps, each with the commit it was applied from \
             ({})",
            STEPS.len(),
            commits
                .iter()
                .map(|c| short(c))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        held: found == expected,
    }
}

/// A commit id as the demo prints it: its first 8 hex digits.
fn short(commit: &str) -> &str {
    &commit[..commit.len().min(8)]
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
    /// The demo's steps this plan makes.
    steps: &'static [Step],
    /// Every step's artifact, in `STEPS` order.
    staged: &'a [Staged],
    /// The calls served and failed when the last step ended.
    calls: Calls,
    outcomes: Vec<StepOutcome>,
    /// The first error met while narrating (a [`Progress`] cannot return one).
    error: Option<Error>,
}

impl Narrator<'_, '_> {
    /// The next apply is to make the demo's steps `steps` (an empty range: none).
    fn expect(&mut self, steps: Range<usize>) {
        self.first = steps.start;
        self.steps = &STEPS[steps];
    }

    /// `plugsync reconcile` as `options` ask, on `port`, expected to make the demo's steps
    /// `steps`: narrated, and its summary printed.
    fn apply(
        &mut self,
        steps: Range<usize>,
        options: &ReconcileOptions,
        port: &dyn HostPort,
    ) -> Result<ApplyReport> {
        self.expect(steps);
        let report = reconcile(options, port, self)?;
        self.finish(&report)?;
        Ok(report)
    }

    /// The apply's summary; the demo's steps it did not report are not as expected.
    fn finish(&mut self, report: &ApplyReport) -> Result<()> {
        if let Some(error) = self.error.take() {
            return Err(error);
        }
        let _ = writeln!(self.out, "  {}", report.summary().replace('\n', "\n  "));
        let reported = report.steps.len().min(self.steps.len());
        let left = self
            .steps
            .iter()
            .zip(&self.staged[self.first..])
            .enumerate()
            .skip(reported);
        for (n, (step, artifact)) in left {
            let _ = writeln!(
                self.out,
                "step {}/{}: {}\n  NOT APPLIED: the plan had no step to {} {}",
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
        let artifact = self.staged.get(self.first + report.number - 1);
        let _ = writeln!(
            self.out,
            "\nstep {}/{}: {}",
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
            "  {}; {} calls served during the step, {} failed; books {}",
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
            let to = format!(" {}", artifact.version);
            report.plugin == step.plugin
                && (report.title.ends_with(&to)
                    || report.title.ends_with(&format!("{to} (reconfigure)")))
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
                     {restored} from its state before the step, fed the same {calls} calls \
                     (sha256 {})",
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

    fn plan(&mut self, text: &str) {
        let _ = write!(self.out, "{}", indent("    ", text));
    }
}
