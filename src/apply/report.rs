//! What an apply did, step by step: the progress lines and the final summary, as text for
//! people and as JSON (`--output json`).

use std::fmt::Write as _;

use serde::Serialize;

use super::step::StepContext;

/// How a step ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "outcome")]
pub enum StepOutcome {
    /// Committed (or, for a removal, unloaded).
    Done,
    /// Switched, then rolled back: the previous version serves.
    RolledBack {
        /// What failed (`soak`, `switch`, `commit`).
        check: String,
        /// What happened, and what the host runs now.
        message: String,
        /// `onFailure: halt`: the plugin halted on the host (`Ok`), or why it could not be.
        #[serde(skip_serializing_if = "Option::is_none")]
        halted: Option<Result<String, String>>,
    },
    /// Stopped before anything changed on the host.
    Stopped {
        /// What refused it (`pre-check`, `policy window`, `preflight`, `stage`, or the
        /// operation the host refused: `switch`, `install`, `unload`).
        check: String,
        /// Why, and the fix.
        message: String,
    },
    /// Not started: an earlier step failed.
    NotStarted,
    /// Switched, then lost through no fault of its version: the host restarted before the
    /// commit and came back on its committed set (a pending step does not survive a restart).
    /// The plan made next decides again.
    Interrupted {
        /// What happened.
        message: String,
    },
}

/// One step's progress and end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StepReport {
    /// Its number in the plan.
    pub number: usize,
    /// How many steps the plan has.
    pub of: usize,
    /// The plugin.
    pub plugin: String,
    /// `ma_cross 1.0.0 → 2.0.0`.
    pub title: String,
    /// Its step id (the last attempt's).
    pub step_id: String,
    /// What it went through (`preflight ✓`, `switched (slot held 3 µs)`…).
    pub marks: Vec<String>,
    /// How it ended (`None`: still going).
    #[serde(flatten)]
    pub outcome: Option<StepOutcome>,
    /// Why it was rolled back, once known.
    #[serde(skip)]
    pub rollback: Option<String>,
    /// A step a previous run left, finished by this one.
    pub resumed: bool,
    /// The last phase journaled (`soaking`, `done`…).
    pub phase: Option<crate::store::StepPhase>,
    /// The version the step's failure marked failed on the host, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marked_failed: Option<String>,
    /// The version running before the step (`None`: an install). Not in the JSON result,
    /// whose `title` says it: for the sidecar's alerts and metrics.
    #[serde(skip)]
    pub from: Option<String>,
    /// The version after it (`None`: a removal); as `from`.
    #[serde(skip)]
    pub to: Option<String>,
    /// How long the switch held the plugin's slot, in microseconds, as the host reported it
    /// (the `switched (slot held N µs)` mark); `None` before a switch answered, or for an
    /// install or removal. For the sidecar's metrics, not in the JSON result.
    #[serde(skip)]
    pub slot_held_us: Option<u64>,
}

impl StepReport {
    /// A report of a step not yet started.
    pub fn new(context: &StepContext, step_id: &str) -> StepReport {
        StepReport {
            number: context.number,
            of: context.of,
            plugin: context.plugin.clone(),
            title: context.title(),
            step_id: step_id.to_owned(),
            marks: Vec::new(),
            outcome: None,
            rollback: None,
            resumed: false,
            phase: None,
            marked_failed: None,
            from: context.from.as_ref().map(|from| from.version.clone()),
            to: context.to.as_ref().map(|to| to.version.clone()),
            slot_held_us: None,
        }
    }

    /// The step's line while it runs: its marks so far, and what it does now.
    pub fn working(&self) -> String {
        let doing = match self.phase {
            None => "starting",
            Some(crate::store::StepPhase::Planned) => "preflight…",
            Some(crate::store::StepPhase::Preflighted) => "staging…",
            Some(crate::store::StepPhase::Staged | crate::store::StepPhase::SwitchSent) => {
                "switching…"
            }
            Some(crate::store::StepPhase::Soaking) => "soaking…",
            Some(crate::store::StepPhase::CommitSent) => "committing…",
            Some(crate::store::StepPhase::RollbackSent) => "rolling back…",
            Some(_) => "",
        };
        let mut line = format!(
            "[{}/{}] {:<28} {}",
            self.number,
            self.of,
            self.title,
            self.marks.join("  ")
        );
        line = line.trim_end().to_owned();
        line.push_str("  ");
        line.push_str(doing);
        line
    }

    /// Notes what the step went through.
    pub fn mark(&mut self, mark: &str) {
        self.marks.push(mark.to_owned());
    }

    /// The step's lines: its progress, then what failed.
    pub fn text(&self) -> String {
        let mut text = format!("[{}/{}] {:<28}", self.number, self.of, self.title);
        if self.resumed {
            text.push_str(" (left by a previous run)");
        }
        let marks = self.marks.join("  ");
        if !marks.is_empty() {
            let _ = write!(text, " {marks}");
        }
        let mut text = text.trim_end().to_owned();
        match &self.outcome {
            None | Some(StepOutcome::Done) => {}
            Some(StepOutcome::NotStarted) => text.push_str(" not started"),
            Some(StepOutcome::Interrupted { message }) => {
                let _ = write!(text, "\n      ✗ interrupted: {message}; planned again");
            }
            Some(StepOutcome::Stopped { check, message }) => {
                let _ = write!(
                    text,
                    "\n      ✗ stopped at the {check}: {message}\n        nothing changed on the host"
                );
            }
            Some(StepOutcome::RolledBack {
                check: _,
                message,
                halted,
            }) => {
                let _ = write!(text, "\n      ✗ {message}");
                match halted {
                    Some(Ok(plugin)) => {
                        let _ = write!(
                            text,
                            "\n      `{plugin}` HALTED on the host (onFailure: halt): every call to \
                             it is refused until an operator resumes it"
                        );
                    }
                    Some(Err(why)) => {
                        let _ = write!(
                            text,
                            "\n      onFailure: halt, but the host did not halt `{}`: {why}",
                            self.plugin
                        );
                    }
                    None => {}
                }
            }
        }
        if let Some(version) = &self.marked_failed {
            let plugin = &self.plugin;
            let _ = write!(
                text,
                "\n      {plugin} {version} marked failed on this host: not retried (clear: \
                 `plugsync retry {plugin}`, or change its entry in plugins.yaml)"
            );
        }
        text.trim_end().to_owned()
    }
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// The plan applied (`None`: nothing to apply).
    pub plan_id: Option<String>,
    /// Every step, in order (resumed ones first).
    pub steps: Vec<StepReport>,
    /// What the host runs at the end: `plugin version`, sorted.
    pub running: Vec<String>,
    /// Whether a step failed.
    pub failed: bool,
    /// The plugins the last plan kept where they are (a hold, a failed mark, or a plugin
    /// they depend on that stays): `plugin version: why`.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub kept: Vec<String>,
}

impl ApplyReport {
    /// The exit code: 0 when every step was applied (or there was none), 1 when one failed.
    pub fn exit_code(&self) -> u8 {
        u8::from(self.failed)
    }

    /// The summary after the steps' lines.
    pub fn summary(&self) -> String {
        let runs = if self.running.is_empty() {
            "nothing".to_owned()
        } else {
            self.running.join(", ")
        };
        let mut kept = String::new();
        for line in &self.kept {
            let _ = write!(kept, "\nKept: {line}");
        }
        if self.steps.is_empty() && self.kept.is_empty() {
            return format!("In sync: nothing to apply. The host runs {runs}.");
        }
        if self.steps.is_empty() {
            return format!(
                "Nothing to apply now: the rest is kept where it is (below). The host runs \
                 {runs}.{kept}"
            );
        }
        self.steps_summary(&runs) + &kept
    }

    fn steps_summary(&self, runs: &str) -> String {
        let failed: Vec<&StepReport> = (self.steps.iter())
            .filter(|s| {
                matches!(
                    s.outcome,
                    Some(StepOutcome::RolledBack { .. } | StepOutcome::Stopped { .. })
                )
            })
            .collect();
        let done = (self.steps.iter())
            .filter(|s| s.outcome == Some(StepOutcome::Done))
            .count();
        let applied = format!("{done} step{} applied", if done == 1 { "" } else { "s" });
        match failed.as_slice() {
            [] => format!(
                "Applied {done} step{}. The host runs {runs}.",
                if done == 1 { "" } else { "s" }
            ),
            [step] => format!(
                "Reconcile failed at step {} of {} ({}); {applied}. The host runs {runs} — a \
                 committed set.",
                step.number, step.of, step.title
            ),
            [first, rest @ ..] => format!(
                "Reconcile failed at step {} of {} ({}) and {} more; {applied}. The host runs \
                 {runs} — a committed set.",
                first.number,
                first.of,
                first.title,
                rest.len()
            ),
        }
    }
}
