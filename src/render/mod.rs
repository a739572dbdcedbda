//! Render: a plan for people (like `terraform plan`) or as JSON.
//!
//! The text is the product's interface for an operator deciding whether to let a change near a
//! live engine: one line per plugin, short where nothing changes; then each step with why it is
//! taken and why there, its transition, strategy and verification, the config it sends and
//! what its migration does to the live state; then what would make it wait or refuse, drift,
//! warnings, and a summary line with the plan id. Colours only when asked (a terminal, without
//! `NO_COLOR`): the words carry everything without them.

pub mod history;
pub mod json_diff;

use std::fmt::Write as _;
use std::time::Duration;

use plugsync_host::SwapSafeAnswer;
use serde_json::Value;

use crate::observe::{Drift, DriftKind};
use crate::plan::{
    Change, ChangeKind, Kept, KeptBecause, Lift, PlanDocument, PlannedStep, PreviewOutcome, Reason,
    Refusal, StateMigration, StepAction, StrategyWait, Wait, Warning, host_time,
};
use crate::spec::model::{Fallback, Jump, Strategy, Verify};

use json_diff::{Edit, abridged};

/// How many summary lines a state or config preview shows before it is cut.
const PREVIEW_LINES: usize = 12;

/// The widest value shown inline in a preview line.
const VALUE_WIDTH: usize = 48;

/// The plan as JSON: pretty, with a final newline.
pub fn plan_json(document: &PlanDocument) -> String {
    // Our own types, with string keys: serialising cannot fail.
    serde_json::to_string_pretty(document).unwrap_or_default() + "\n"
}

/// The plan as text, coloured when `styled`.
pub fn plan_text(document: &PlanDocument, styled: bool) -> String {
    let paint = Paint { styled };
    let mut out = String::new();
    header(&mut out, document);
    changes(&mut out, document, paint);
    lifts(&mut out, &document.plan.lifts);
    if !document.plan.steps.is_empty() {
        set_diff(&mut out, document);
        steps(&mut out, document, paint);
    }
    waits(&mut out, &document.plan.waits);
    refusals(&mut out, &document.plan.refusals);
    drift(&mut out, &document.drift);
    warnings(&mut out, &document.plan.warnings);
    failed_previews(&mut out, document);
    summary(&mut out, document);
    out
}

/// ANSI colours, or none.
#[derive(Clone, Copy)]
struct Paint {
    styled: bool,
}

impl Paint {
    fn sign(self, kind: ChangeKind) -> String {
        let sign = kind.sign();
        let code = match kind {
            ChangeKind::Install => "32",
            ChangeKind::Remove => "31",
            ChangeKind::Upgrade | ChangeKind::Downgrade | ChangeKind::Reconfigure => "33",
            ChangeKind::Kept => "36",
            ChangeKind::Unchanged | ChangeKind::Unmanaged => return sign.to_string(),
        };
        self.code(code, &sign.to_string())
    }

    fn red(self, text: &str) -> String {
        self.code("31", text)
    }

    fn code(self, code: &str, text: &str) -> String {
        match self.styled {
            true => format!("\x1b[{code}m{text}\x1b[0m"),
            false => text.to_owned(),
        }
    }
}

fn header(out: &mut String, document: &PlanDocument) {
    let observed = &document.observed;
    let inputs = &document.inputs;
    let _ = writeln!(
        out,
        "Host {} (API {}, ABI {}, framework {}) — observed {}",
        observed.source,
        observed.api,
        inputs.abi,
        inputs.framework,
        observed.at.replace('T', " ").replace('Z', " UTC"),
    );
    let lock = match inputs.lock_sha256 {
        Some(_) => "plugins.lock matches",
        None => "no plugins.lock: versions resolved afresh",
    };
    let _ = writeln!(out, "Desired {} ({lock})", document.file);
    out.push('\n');
}

fn changes(out: &mut String, document: &PlanDocument, paint: Paint) {
    let plan = &document.plan;
    let width = plan
        .changes
        .iter()
        .map(|c| c.plugin.len())
        .max()
        .unwrap_or(0);
    let versions: Vec<String> = plan.changes.iter().map(versions).collect();
    let vwidth = versions
        .iter()
        .map(|v| v.chars().count())
        .max()
        .unwrap_or(0);
    for (change, versions) in plan.changes.iter().zip(&versions) {
        let drifted = document.drift.iter().any(|d| d.plugin == change.plugin);
        let why = match (change.kind, &change.why) {
            (ChangeKind::Unmanaged, _) => {
                "not in plugins.yaml: kept (`policy.prune` is off)".to_owned()
            }
            (ChangeKind::Remove, _) => "not in plugins.yaml: removed (`policy.prune`)".to_owned(),
            (ChangeKind::Unchanged, _) if drifted => "unchanged, drifted (see Drift)".to_owned(),
            (ChangeKind::Unchanged, _) => "unchanged".to_owned(),
            (ChangeKind::Reconfigure, _) if change.config.is_some() => "config changed".to_owned(),
            (ChangeKind::Reconfigure, _) => "another build".to_owned(),
            (ChangeKind::Kept, _) => kept_why(change).unwrap_or_default(),
            (_, Some(why)) => why.to_string(),
            (_, None) => String::new(),
        };
        let steps = match change.steps.len() {
            0 => String::new(),
            1 => "1 step".to_owned(),
            n if change.via.is_empty() => format!("{n} steps"),
            n => {
                let via: Vec<String> = change.via.iter().map(ToString::to_string).collect();
                format!("{n} steps (via {})", via.join(", "))
            }
        };
        let line = format!(
            "  {} {:width$}  {:vwidth$}  {:28}  {steps}",
            paint.sign(change.kind),
            change.plugin,
            versions,
            why,
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if plan.changes.is_empty() {
        out.push_str("  (no plugins named, none running)\n");
    }
    out.push('\n');
}

/// The running set against the desired one as a unified diff: a plugin a line, its version
/// (and its config, where plugins.yaml changes it).
fn set_diff(out: &mut String, document: &PlanDocument) {
    let line = |plugin: &str, at: Option<&crate::plan::VersionAt>, config: Option<&Value>| {
        let version = at.map_or_else(|| "not loaded".to_owned(), ToString::to_string);
        match config {
            Some(config) => format!("{plugin} {version} config {config}\n"),
            None => format!("{plugin} {version}\n"),
        }
    };
    let (mut running, mut desired) = (String::new(), String::new());
    for change in &document.plan.changes {
        // A plugin kept by the host's restraints stays as it runs, config included.
        let stays = change.kind == ChangeKind::Kept;
        let config = change.config.as_ref().filter(|_| !stays);
        if change.from.is_some() {
            running.push_str(&line(
                &change.plugin,
                change.from.as_ref(),
                config.map(|c| &c.running),
            ));
        }
        let to = match change.kind {
            ChangeKind::Unchanged | ChangeKind::Unmanaged | ChangeKind::Kept => {
                change.from.as_ref()
            }
            _ => change.to.as_ref(),
        };
        if to.is_some() {
            desired.push_str(&line(&change.plugin, to, config.map(|c| &c.desired)));
        }
    }
    let diff = similar::TextDiff::from_lines(&running, &desired);
    let unified = diff
        .unified_diff()
        .context_radius(1)
        .header("running", "desired")
        .to_string();
    out.push_str("Set:\n");
    for text in unified.lines() {
        let _ = writeln!(out, "  {text}");
    }
    out.push('\n');
}

/// Why a plugin stays where it is, what plugins.yaml asks of it, and how to let it go; `None`
/// for a change that is not [`ChangeKind::Kept`].
pub fn kept_why(change: &Change) -> Option<String> {
    Some(kept(&change.plugin, change.kept.as_ref()?))
}

fn kept(plugin: &str, kept: &Kept) -> String {
    let wanted = match &kept.wanted {
        Some(wanted) => format!("plugins.yaml asks {wanted}"),
        None => "plugins.yaml removes it".to_owned(),
    };
    match &kept.because {
        KeptBecause::Held { because } => format!(
            "held by {} since {}: {}; {wanted} (release: `plugsync release {plugin}`)",
            because.by,
            host_time(because.at.as_nanos()),
            because.reason
        ),
        KeptBecause::Failed { version, because } => format!(
            "{version} marked failed by {} at {}: {}; not retried (clear: `plugsync retry \
             {plugin}`, or change its entry)",
            because.by,
            host_time(because.at.as_nanos()),
            because.reason
        ),
        KeptBecause::Needs {
            plugin: other,
            requirement,
        } => format!("{wanted}, which needs `{other}` {requirement}: `{other}` stays"),
        KeptBecause::NeededBy {
            plugin: other,
            requirement,
        } => format!("{wanted}, but `{other}`, which stays, needs it {requirement}"),
        KeptBecause::Scheduled {
            at,
            not_before,
            wait,
        } => format!(
            "{wanted}, scheduled at `{at}`: not before {} (in {wait}); the first reconcile from \
             then on moves it",
            not_before.replace('T', " ").replace('Z', " UTC")
        ),
    }
}

/// The holds and failed marks plugins.yaml has moved past, lifted before the steps.
fn lifts(out: &mut String, lifts: &[Lift]) {
    for lift in lifts {
        let text = match lift {
            Lift::Hold { plugin, because } => format!(
                "the hold on `{plugin}` (by {}: {}): its entry in plugins.yaml changed since",
                because.by, because.reason
            ),
            Lift::Failed {
                plugin,
                version,
                because,
                ..
            } => format!(
                "the failed mark on `{plugin}` {version} (by {}: {}): its entry in plugins.yaml \
                 changed since",
                because.by, because.reason
            ),
        };
        let _ = writeln!(out, "Lifts: {text}");
    }
    if !lifts.is_empty() {
        out.push('\n');
    }
}

fn versions(change: &Change) -> String {
    match (&change.from, &change.to) {
        (Some(from), Some(to)) if from.version == to.version && from.sha256 != to.sha256 => {
            format!("{from} (rebuild {})", to.sha256.short())
        }
        (Some(from), Some(to)) if from.version == to.version => from.to_string(),
        (Some(from), Some(to)) => format!("{from} → {to}"),
        (None, Some(to)) => to.to_string(),
        (Some(from), None) => from.to_string(),
        (None, None) => String::new(),
    }
}

fn steps(out: &mut String, document: &PlanDocument, paint: Paint) {
    let plan = &document.plan;
    out.push_str("Order (each intermediate set satisfies every dependency):\n\n");
    let width = plan.steps.iter().map(|s| s.plugin.len()).max().unwrap_or(0);
    let parallel = plan.waves.iter().any(|wave| wave.len() > 1);
    for step in &plan.steps {
        let transition = match (&step.from, &step.to) {
            (Some(from), Some(to)) if step.action == StepAction::Reconfigure => {
                if from.sha256 == to.at.sha256 {
                    from.to_string()
                } else {
                    format!("{from} (rebuild {})", to.at.sha256.short())
                }
            }
            (Some(from), Some(to)) => format!("{from} → {}", to.at),
            (None, Some(to)) => format!("→ {}", to.at),
            (Some(from), None) => format!("{from} →"),
            (None, None) => String::new(),
        };
        let kind = match step.action {
            StepAction::Install => "install".to_owned(),
            StepAction::Remove => "remove".to_owned(),
            StepAction::Reconfigure => "reconfigure".to_owned(),
            _ => format!(
                "{:5}  {}",
                step.jump.map(Jump::name).unwrap_or(""),
                match &step.migration {
                    Some(StateMigration::Plugin { .. }) => "migrate",
                    Some(StateMigration::Rules { .. }) => "rules",
                    Some(StateMigration::Fresh) => "fresh",
                    None => "",
                }
            ),
        };
        let reasons: Vec<String> = step.reasons.iter().map(reason).collect();
        let line = format!(
            "  {:>2}. {:width$}  {:18} {:15}  {}",
            step.number,
            step.plugin,
            transition,
            kind,
            reasons.join("; "),
        );
        let _ = writeln!(out, "{}", line.trim_end());
        if step.discards_state() {
            let _ = writeln!(
                out,
                "       {}: starts from a fresh state; the positions it holds are lost",
                paint.red("DISCARDS STATE")
            );
        }
        if let Some(StateMigration::Rules { source, .. }) = &step.migration {
            let _ = writeln!(out, "       migrated by declarative rules from {source}");
        }
        if parallel && let Some(wave) = plan.waves.iter().position(|w| w.contains(&step.number)) {
            let _ = writeln!(out, "       wave {}", wave + 1);
        }
        if step.action != StepAction::Remove {
            let strategy = strategy(&step.strategy);
            let verify = verify(step.verify.as_ref());
            let _ = writeln!(out, "       {strategy}; verify: {verify}");
        }
        if let Some(wait) = &step.wait {
            let _ = writeln!(out, "       {}", strategy_wait(&step.plugin, wait));
        }
        step_config(out, step);
        preview(out, document, step);
    }
    out.push('\n');
}

fn reason(reason: &Reason) -> String {
    match reason {
        Reason::Pinned => "pinned".to_owned(),
        Reason::Channel { channel } => format!("channel `{channel}`"),
        Reason::Locked => "locked".to_owned(),
        Reason::Toward { target } => format!("on the way to {target}"),
        Reason::After {
            dependency,
            requirement,
            step,
        } => format!("needs {dependency} {requirement} (after step {step})"),
        Reason::Before {
            version,
            dependency,
            requirement,
            step,
        } => format!(
            "{version} needs {dependency} {requirement}, which step {step} breaks: moves first"
        ),
        Reason::Prune => "not in plugins.yaml (`policy.prune`)".to_owned(),
        Reason::Config => "config changed".to_owned(),
        Reason::Rebuild => "another build of the same version".to_owned(),
    }
}

fn strategy(strategy: &Strategy) -> String {
    match strategy {
        Strategy::Immediate => "switch: immediate".to_owned(),
        Strategy::WhenIdle {
            idle_for, deadline, ..
        } => match deadline {
            Some(deadline) => format!("switch: when idle for {idle_for} (up to {deadline})"),
            None => format!("switch: when idle for {idle_for}"),
        },
        Strategy::WhenFlat { deadline, .. } => match deadline {
            Some(deadline) => format!("switch: when flat (up to {deadline})"),
            None => "switch: when flat".to_owned(),
        },
        Strategy::Scheduled { at } => format!("switch: at {at}"),
        Strategy::BlueGreen { agreeing_calls, .. } => {
            format!("switch: blue-green after {agreeing_calls} agreeing calls")
        }
    }
}

/// What a step's switch waits for, and the host's answer now: `ma_cross holds a position of
/// +1 in ES: would wait up to 30m for flat, then fail`.
fn strategy_wait(plugin: &str, wait: &StrategyWait) -> String {
    let (deadline, fallback) = match wait {
        StrategyWait::Idle {
            deadline, fallback, ..
        }
        | StrategyWait::Flat {
            deadline, fallback, ..
        } => (deadline, fallback),
    };
    let then = match fallback {
        Fallback::Fail => "then fail",
        Fallback::Immediate => "then switch anyway",
    };
    match wait {
        StrategyWait::Idle {
            idle_for,
            idle_ms: None,
            ..
        } => format!(
            "`{plugin}` has served no call yet: idle for {idle_for} now, would switch at once"
        ),
        StrategyWait::Idle {
            idle_for,
            idle_ms: Some(idle_ms),
            met: true,
            ..
        } => format!(
            "`{plugin}` served its last call {} ago: idle for {idle_for} now, would switch at once",
            ago(*idle_ms)
        ),
        StrategyWait::Idle {
            idle_for,
            idle_ms: Some(idle_ms),
            ..
        } => format!(
            "`{plugin}` served its last call {} ago: would wait up to {deadline} for {idle_for} \
             without a call, {then}",
            ago(*idle_ms)
        ),
        StrategyWait::Flat { answer, .. } => match answer {
            Some(SwapSafeAnswer::Safe) => {
                format!("`{plugin}` says it is flat now: would switch at once")
            }
            Some(SwapSafeAnswer::NotSafe { reason }) => {
                format!("`{plugin}` {reason}: would wait up to {deadline} for flat, {then}")
            }
            Some(SwapSafeAnswer::Failed { message }) => format!(
                "`{plugin}` cannot say whether it is flat ({message}): would wait up to \
                 {deadline} for flat, {then}"
            ),
            Some(SwapSafeAnswer::Undeclared { abi_minor }) => format!(
                "`{plugin}` is built for plugin ABI 1.{abi_minor}, before `swap_safe`: it cannot \
                 say whether it is flat and counts as always flat: would switch at once"
            ),
            None => format!(
                "the host does not say whether `{plugin}` is flat: would wait up to {deadline} \
                 for flat, {then}"
            ),
        },
    }
}

/// Milliseconds as the plan shows an idle time (`12 ms`, `3.4 s`, `2m 5s`).
fn ago(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms} ms"),
        1_000..60_000 => format!("{:.1} s", ms as f64 / 1000.0),
        _ => humantime::format_duration(Duration::from_secs(ms / 1000)).to_string(),
    }
}

fn verify(verify: Option<&Verify>) -> String {
    let Some(verify) = verify else {
        return "health".to_owned();
    };
    let mut parts = Vec::new();
    if verify.health {
        parts.push("health".to_owned());
    }
    for probe in &verify.probes {
        parts.push(format!("probe `{}`", probe.name));
    }
    if !verify.differential.is_empty() {
        parts.push(format!(
            "differential ({} inputs)",
            verify.differential.len()
        ));
    }
    if let Some(soak) = &verify.soak {
        let mut soak_text = format!("soak {}", soak.duration);
        if let Some(rate) = soak.max_error_rate {
            let _ = write!(soak_text, ", max error rate {} %", rate * 100.0);
        }
        if let Some(latency) = soak.max_call_latency_us {
            let _ = write!(soak_text, ", max call latency {latency} µs");
        }
        if let Some(calls) = soak.min_calls_before_commit {
            let _ = write!(soak_text, ", at least {calls} calls");
        }
        parts.push(soak_text);
    }
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(", ")
    }
}

/// The config a step sends, as a diff against what runs (from the preview when there is one,
/// else from the plan).
fn step_config(out: &mut String, step: &PlannedStep) {
    let Some(desired) = &step.config else {
        return;
    };
    if step.action == StepAction::Install {
        let _ = writeln!(out, "       config: {}", abridged(desired, 100));
    }
}

fn preview(out: &mut String, document: &PlanDocument, step: &PlannedStep) {
    if matches!(step.action, StepAction::Install | StepAction::Remove) {
        return;
    }
    let Some(preview) = document.previews.iter().find(|p| p.step == step.number) else {
        if let Some(change) = document
            .plan
            .changes
            .iter()
            .find(|c| c.plugin == step.plugin)
            && let (Some(config), Some(_)) = (&change.config, &step.config)
        {
            edit_lines(out, "config", &config.running, &config.desired);
        }
        return;
    };
    match &preview.outcome {
        PreviewOutcome::Migrated {
            config_before,
            config_after,
            state_before,
            state_after,
        } => {
            let by = match (&step.config, &step.migration) {
                (Some(_), _) => " (from plugins.yaml)".to_owned(),
                (None, Some(StateMigration::Plugin { version })) => {
                    format!(" (migrated by {version})")
                }
                (None, Some(StateMigration::Rules { .. })) => " (migrated by rules)".to_owned(),
                _ => String::new(),
            };
            edit_lines(out, &format!("config{by}"), config_before, config_after);
            let what = match step.migration {
                Some(StateMigration::Fresh) => "state (live snapshot, replaced by a fresh one)",
                _ => "state (live snapshot, migrated in a sandbox)",
            };
            edit_lines(out, what, state_before, state_after);
        }
        PreviewOutcome::Skipped { reason } => {
            let _ = writeln!(out, "       state preview skipped: {reason}");
        }
        PreviewOutcome::Failed { error } => {
            let _ = writeln!(out, "       state preview FAILED: {error}");
        }
    }
}

/// `what` from `before` to `after` as the plan shows a state change: a heading, then the
/// changed paths (or `unchanged`).
pub fn state_change(what: &str, before: &Value, after: &Value) -> String {
    let mut out = String::new();
    edit_lines(&mut out, what, before, after);
    out
}

fn edit_lines(out: &mut String, what: &str, before: &Value, after: &Value) {
    let lines = json_diff::summary(before, after);
    if lines.is_empty() {
        let _ = writeln!(out, "       {what}: unchanged");
        return;
    }
    let _ = writeln!(out, "       {what}:");
    for line in lines.iter().take(PREVIEW_LINES) {
        let edit = match &line.edit {
            Edit::Added(v) => format!("added {}", abridged(v, VALUE_WIDTH)),
            Edit::Removed(v) => format!("removed (was {})", abridged(v, VALUE_WIDTH)),
            Edit::Changed(a, b) => format!(
                "{} → {}",
                abridged(a, VALUE_WIDTH),
                abridged(b, VALUE_WIDTH)
            ),
            Edit::Renamed { to, value } => {
                format!("renamed `{to}` ({})", abridged(value, VALUE_WIDTH))
            }
        };
        match &line.group {
            Some((n, first)) => {
                let _ = writeln!(
                    out,
                    "         {}: in {n} alike, e.g. `{first}`: {edit}",
                    line.path
                );
            }
            None => {
                let _ = writeln!(out, "         {}: {edit}", line.path);
            }
        }
    }
    if lines.len() > PREVIEW_LINES {
        let _ = writeln!(
            out,
            "         … {} more (the whole documents: `--output json`)",
            lines.len() - PREVIEW_LINES
        );
    }
}

fn waits(out: &mut String, waits: &[Wait]) {
    for (i, wait) in waits.iter().enumerate() {
        let lead = if i == 0 { "Waits:" } else { "      " };
        let text = match wait {
            Wait::Window {
                denied_by,
                outside,
                until,
                until_local,
                wait,
            } => {
                let why = match (denied_by.is_empty(), outside.is_empty()) {
                    (false, _) => format!("deny window {} is open now", names(denied_by)),
                    (true, false) => format!("outside the allow windows {}", names(outside)),
                    (true, true) => "the policy windows close updates now".to_owned(),
                };
                let utc = |until: &String| until.replace('T', " ").replace('Z', " UTC");
                match (until, until_local, wait) {
                    (Some(until), Some(local), Some(wait)) => format!(
                        "{why}; reconcile would wait until {local} ({}, in {wait}) or need \
                         `--force`",
                        utc(until)
                    ),
                    (Some(until), _, _) => format!(
                        "{why}; reconcile would wait until {} or need `--force`",
                        utc(until)
                    ),
                    (None, _, _) => format!("{why}; no window opens within eight days"),
                }
            }
            Wait::PendingStep { plugin, step_id } => match step_id {
                Some(id) => format!("`{plugin}` has a step in progress on the host (`{id}`)"),
                None => format!("`{plugin}` has a step in progress on the host"),
            },
            Wait::Lease { holder } => format!("`{holder}` holds the host's reconcile lease"),
        };
        let _ = writeln!(out, "{lead} {text}");
    }
    if !waits.is_empty() {
        out.push('\n');
    }
}

fn names(names: &[String]) -> String {
    let quoted: Vec<String> = names.iter().map(|n| format!("`{n}`")).collect();
    quoted.join(", ")
}

fn refusals(out: &mut String, refusals: &[Refusal]) {
    for refusal in refusals {
        let text = match refusal {
            Refusal::Freeze { because } => format!(
                "the host is frozen by {} since {}: {} (lift: `plugsync unfreeze`)",
                because.by,
                host_time(because.at.as_nanos()),
                because.reason
            ),
        };
        let _ = writeln!(out, "Refused: {text}");
    }
    if !refusals.is_empty() {
        out.push('\n');
    }
}

fn drift(out: &mut String, drift: &[Drift]) {
    if drift.is_empty() {
        return;
    }
    out.push_str("Drift (runs other than the reconciler left it):\n");
    for plugin in drift {
        let kinds: Vec<String> = plugin.kinds.iter().map(drift_kind).collect();
        let when = match &plugin.record {
            Some(record) => format!(" (at {})", host_time(record.at.as_nanos())),
            None => String::new(),
        };
        let _ = writeln!(out, "  {}{when}: {}", plugin.plugin, kinds.join("; "));
    }
    out.push('\n');
}

/// One plugin's drift on a line: `ma_cross: its last change was …`.
pub fn drift_text(drift: &Drift) -> String {
    let kinds: Vec<String> = drift.kinds.iter().map(drift_kind).collect();
    format!("{}: {}", drift.plugin, kinds.join("; "))
}

fn drift_kind(kind: &DriftKind) -> String {
    match kind {
        DriftKind::Unrecorded => "the host has no record of how it came to run".to_owned(),
        DriftKind::ChangedElsewhere {
            operation,
            tool,
            client,
        } => {
            let operation = serde_json::to_value(operation)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let by = match (tool, client) {
                (Some(tool), Some(client)) => format!("`{tool}` (client `{client}`)"),
                (Some(tool), None) => format!("`{tool}`"),
                (None, _) => "the host itself (`--load` or in-process code)".to_owned(),
            };
            format!("last change `{operation}` by {by}, not the reconciler")
        }
        DriftKind::ArtifactDiffers { recorded, running } => format!(
            "runs {} ({}) but was left at {} ({})",
            running.version,
            running.digest.short(),
            recorded.version,
            recorded.digest.short()
        ),
        DriftKind::ConfigDiffers { .. } => "its config was changed since".to_owned(),
        DriftKind::FreshState => "recovery started it with a fresh state".to_owned(),
    }
}

fn warnings(out: &mut String, warnings: &[Warning]) {
    for warning in warnings {
        let text = match warning {
            Warning::ResidentCap {
                plugin,
                resident,
                cap,
            } => format!(
                "`{plugin}` would have {resident} versions mapped, past the host's cap of {cap} \
                 (code is never unmapped): the host refuses the load past it; restart the \
                 host between steps or raise `--resident-cap`"
            ),
            Warning::StrategyNotSupported { plugin, strategy } => format!(
                "`{plugin}` asks for the `{strategy}` strategy, which `plugsync reconcile` does \
                 not apply yet: it would refuse the step"
            ),
            Warning::Busy { plugin } => format!(
                "`{plugin}` was busy when the host was observed (a long call held it): its \
                 entry is what it showed last"
            ),
            Warning::Stuck { plugin, running_ms } => format!(
                "`{plugin}` has a call running for {} (past the host's call watchdog): a \
                 switch waits for it, and a call cannot be cancelled in-process",
                humantime::format_duration(std::time::Duration::from_millis(*running_ms))
            ),
            Warning::UnmetNow { plugin, needs } => format!(
                "`{plugin}` runs now without what it needs ({needs}); the plan meets it by its \
                 end"
            ),
        };
        let _ = writeln!(out, "warning: {text}");
    }
    if !warnings.is_empty() {
        out.push('\n');
    }
}

/// A migration that failed in its preview would fail the same way in the apply's preflight:
/// said once more at the end, where a reader of a long plan looks.
fn failed_previews(out: &mut String, document: &PlanDocument) {
    let failed: Vec<String> = (document.previews.iter())
        .filter(|p| matches!(p.outcome, PreviewOutcome::Failed { .. }))
        .map(|p| format!("{} (`{}`)", p.step, p.plugin))
        .collect();
    if failed.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "warning: the migration preview of step {} failed: applying this plan would stop there \
         (its preflight runs the same migration)\n",
        failed.join(", step ")
    );
}

fn summary(out: &mut String, document: &PlanDocument) {
    let plan = &document.plan;
    let id = document.plan_id.to_string();
    let short_id = format!("{}…{}", &id[..4], &id[id.len() - 4..]);
    let kept = plan.count(ChangeKind::Kept);
    if plan.in_sync() && kept > 0 {
        let _ = writeln!(
            out,
            "No changes now: {kept} plugin{} kept where {} (above); the rest runs what \
             plugins.yaml asks. Plan id {short_id}.",
            if kept == 1 { "" } else { "s" },
            if kept == 1 { "it is" } else { "they are" }
        );
        return;
    }
    if plan.in_sync() {
        let running = plan
            .changes
            .iter()
            .filter(|c| c.kind != ChangeKind::Unmanaged)
            .count();
        let _ = writeln!(
            out,
            "No changes: the host runs what plugins.yaml asks ({running} plugin{}). Plan id {short_id}.",
            if running == 1 { "" } else { "s" }
        );
        return;
    }
    let moving = |kind| plan.count(kind);
    let steps = plan.steps.len();
    let kept = match kept {
        0 => String::new(),
        n => format!(", {n} kept"),
    };
    let lifted = match plan.lifts.len() {
        0 => String::new(),
        1 => ", 1 restraint lifted".to_owned(),
        n => format!(", {n} restraints lifted"),
    };
    let _ = writeln!(
        out,
        "Plan: {} to install, {} to upgrade, {} to downgrade, {} to reconfigure, {} to remove \
         ({steps} step{}), {} unchanged{kept}{lifted}. Plan id {short_id}.",
        moving(ChangeKind::Install),
        moving(ChangeKind::Upgrade),
        moving(ChangeKind::Downgrade),
        moving(ChangeKind::Reconfigure),
        moving(ChangeKind::Remove),
        if steps == 1 { "" } else { "s" },
        moving(ChangeKind::Unchanged),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn colours_only_when_asked() {
        let signs = |styled| {
            let paint = Paint { styled };
            [ChangeKind::Install, ChangeKind::Upgrade, ChangeKind::Remove]
                .map(|kind| paint.sign(kind))
                .join(" ")
        };
        assert_eq!(signs(false), "+ ~ -");
        assert_eq!(
            signs(true),
            "\x1b[32m+\x1b[0m \x1b[33m~\x1b[0m \x1b[31m-\x1b[0m"
        );
        assert_eq!(Paint { styled: true }.sign(ChangeKind::Unchanged), " ");
    }
}
