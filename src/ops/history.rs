//! `plugsync history`: what this client changed on its hosts, step by step, newest first —
//! read from its journal.
//!
//! 1. **Open** the journal in the state directory (none there: no history, not an error; one
//!    another plugsync has open: [`HistoryError::JournalInUse`]) and read every record;
//! 2. **Fold** each step's records into one [`HistoryEntry`] ([`entries`], pure): the
//!    [`StepContext`] journaled on `planned` (plugin, from → to, action, the desired state's
//!    sha256 and git provenance, who asked, a forced reason), the time of each phase, and its
//!    end (outcome, the failing check and its message);
//! 3. **Filter** by plugin and `--since` (a step is shown when any of its transitions is at or
//!    after that time: a step that ended since is news even if it started before);
//! 4. **Render** (`render::history`): a table for people, or JSON (an array of
//!    [`HistoryEntry`], `plugsync schema history`).
//!
//! The journal holds this client's steps only: another client's changes are in its own
//! journal, and the host's applied record says who last changed each plugin.

use std::collections::BTreeMap;
use std::path::PathBuf;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::apply::StepContext;
use crate::error::Result;
use crate::spec::provenance::{FileProvenance, Git};
use crate::store::{FILE_NAME, Journaled, StepPhase, Store, StoreError};

/// What `plugsync history` is asked.
#[derive(Debug, Clone)]
pub struct HistoryOptions {
    /// The state directory whose journal is read.
    pub state_dir: PathBuf,
    /// Only this plugin's steps.
    pub plugin: Option<String>,
    /// Only steps with a transition at or after this time.
    pub since: Option<Timestamp>,
}

/// What `plugsync history` found.
#[derive(Debug, Clone, PartialEq)]
pub struct History {
    /// The journal read (`None`: the state directory has none).
    pub journal: Option<PathBuf>,
    /// The state directory.
    pub state_dir: PathBuf,
    /// The steps, newest first, filtered.
    pub entries: Vec<HistoryEntry>,
    /// The filters, as asked (for the empty message).
    pub plugin: Option<String>,
    /// The `--since` time, as asked.
    pub since: Option<Timestamp>,
}

impl History {
    /// The history as text: a table, newest first.
    pub fn text(&self) -> String {
        crate::render::history::history_text(self)
    }

    /// The history as JSON: an array of [`HistoryEntry`].
    pub fn json(&self) -> String {
        crate::render::history::history_json(self)
    }
}

/// One step as `plugsync history` tells it (the JSON is a contract: `plugsync schema
/// history`). Fields a journal written by an older plugsync lacks are `null`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// `{planId}.{n}.{attempt}`.
    pub step_id: String,
    /// The plan the step belongs to (a sha256).
    pub plan_id: String,
    /// The plugin.
    pub plugin: String,
    /// `install`, `upgrade`, `downgrade`, `reconfigure` or `remove`.
    pub action: Option<String>,
    /// The step's number in its plan, from 1.
    pub number: Option<usize>,
    /// How many steps its plan had.
    pub of: Option<usize>,
    /// What the plan expected running before (`null`: nothing).
    pub from: Option<Version>,
    /// What the step installs (`null`: a removal).
    pub to: Option<Version>,
    /// How it ended.
    pub outcome: Outcome,
    /// What failed (`preflight`, `soak`, `switch`…), when it failed.
    pub check: Option<String>,
    /// What happened, as journaled at its end (why it failed or was interrupted).
    pub message: Option<String>,
    /// When it started (its `planned` transition), RFC 3339 UTC.
    pub started_at: String,
    /// When it ended (RFC 3339 UTC; `null`: unfinished).
    pub ended_at: Option<String>,
    /// From its first transition to its last, in milliseconds.
    pub duration_ms: u64,
    /// From the switch (`soaking`) to the commit or the rollback, in milliseconds (`null`: it
    /// never soaked).
    pub soak_ms: Option<u64>,
    /// Every transition, in order.
    pub phases: Vec<PhaseAt>,
    /// Who asked: the name the host knows the client by.
    pub client: Option<String>,
    /// The commit checked out where plugins.yaml was read (hex).
    pub commit: Option<String>,
    /// Whether plugins.yaml, or a file it extends, differed from its commit (modified or
    /// untracked); `null` when it is in no repository, or that was not recorded.
    pub dirty: Option<bool>,
    /// Where each file of the desired state came from: plugins.yaml, then each it extends.
    pub provenance: Vec<FileProvenance>,
    /// The sha256 of the desired state the plan was made from.
    pub desired_sha256: Option<String>,
    /// Why it was forced (`--force --reason`).
    pub forced: Option<String>,
}

/// A version and its artifact's sha256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    /// The version.
    pub version: String,
    /// The artifact's sha256.
    pub sha256: String,
}

/// A transition and when it was journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PhaseAt {
    /// The phase entered (`planned`, `preflighted`, …, `done`).
    pub phase: String,
    /// When, RFC 3339 UTC.
    pub at: String,
}

/// How a step ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    /// Committed (a removal: unloaded).
    Done,
    /// Switched, then rolled back: the previous version serves.
    RolledBack,
    /// Stopped before anything changed on the host (a check refused it).
    Stopped,
    /// Ended through no fault of its version (the host restarted, plugsync stopped before
    /// sending it): planned again.
    Interrupted,
    /// Replaced by a new attempt at the same step (the host had forgotten it).
    Superseded,
    /// Not ended: running now, or left by a plugsync that stopped (the next reconcile
    /// finishes it).
    Unfinished,
}

impl Outcome {
    /// The words the text shows.
    pub fn words(self) -> &'static str {
        match self {
            Outcome::Done => "done",
            Outcome::RolledBack => "rolled back",
            Outcome::Stopped => "stopped",
            Outcome::Interrupted => "interrupted",
            Outcome::Superseded => "superseded",
            Outcome::Unfinished => "unfinished",
        }
    }
}

/// What can go wrong asking for history. Messages are lowercase, name things in backticks and
/// say what to do.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// `--since` is neither a time nor a duration.
    #[error(
        "`--since {value}` is neither an RFC 3339 time nor a duration ({reason}): give a time \
         like `2026-12-02T14:00:00Z`, or how long ago like `2h` or `7d`"
    )]
    BadSince {
        /// What was given.
        value: String,
        /// Why the duration reading refused it.
        reason: String,
    },

    /// Another plugsync has the journal open (redb locks it for one process).
    #[error(
        "the journal `{path}` is open by another plugsync (a `reconcile` running with this \
         state dir): it has one reader and writer at a time; run `plugsync history` again when \
         that reconcile ends"
    )]
    JournalInUse {
        /// The journal file.
        path: PathBuf,
    },
}

/// The time `--since` means at `now`: an RFC 3339 time, or a duration ago (`2h`, `7d`,
/// `1h30m`).
pub fn parse_since(text: &str, now: Timestamp) -> std::result::Result<Timestamp, HistoryError> {
    if let Ok(time) = text.parse::<Timestamp>() {
        return Ok(time);
    }
    let bad = |reason: String| HistoryError::BadSince {
        value: text.to_owned(),
        reason,
    };
    let ago = humantime::parse_duration(text).map_err(|e| bad(e.to_string()))?;
    let ago = jiff::SignedDuration::try_from(ago).map_err(|e| bad(e.to_string()))?;
    now.checked_sub(ago)
        .map_err(|_| bad("that is before any time plugsync can show".to_owned()))
}

/// Reads the journal in the state directory (see the module docs).
pub fn history(options: &HistoryOptions) -> Result<History> {
    let path = options.state_dir.join(FILE_NAME);
    let mut history = History {
        journal: None,
        state_dir: options.state_dir.clone(),
        entries: Vec::new(),
        plugin: options.plugin.clone(),
        since: options.since,
    };
    // Opening would create a journal: asked for history, plugsync writes nothing.
    if !path.exists() {
        return Ok(history);
    }
    let store = match Store::open(&options.state_dir) {
        Ok(store) => store,
        Err(StoreError::InUse { path }) => {
            return Err(HistoryError::JournalInUse { path }.into());
        }
        Err(error) => return Err(error.into()),
    };
    let records = store.records(0)?;
    drop(store);
    history.journal = Some(path);
    history.entries = entries(&records)
        .into_iter()
        .filter(|e| options.plugin.as_ref().is_none_or(|p| &e.plugin == p))
        .filter(|e| options.since.is_none_or(|since| last_at(e) >= since))
        .collect();
    Ok(history)
}

/// When a step's last transition was.
fn last_at(entry: &HistoryEntry) -> Timestamp {
    (entry.phases.last())
        .and_then(|p| p.at.parse().ok())
        .unwrap_or(Timestamp::MIN)
}

/// Each step of the journal, folded from its records, newest first (pure).
pub fn entries(records: &[Journaled]) -> Vec<HistoryEntry> {
    // Steps by their first record: the journal's order is the order they started in.
    let mut steps: BTreeMap<u64, Vec<&Journaled>> = BTreeMap::new();
    let mut first: BTreeMap<&str, u64> = BTreeMap::new();
    for journaled in records {
        let seq = *first
            .entry(journaled.record.step_id.as_str())
            .or_insert(journaled.seq);
        steps.entry(seq).or_default().push(journaled);
    }
    steps.into_values().rev().map(|step| entry(&step)).collect()
}

/// One step from its records, in journal order (not empty).
fn entry(records: &[&Journaled]) -> HistoryEntry {
    let first = &records[0].record;
    let last = &records[records.len() - 1].record;
    let context: Option<StepContext> = (records.iter())
        .find(|r| r.record.phase == StepPhase::Planned)
        .and_then(|r| serde_json::from_value(r.record.detail.clone()).ok());
    let detail_str = |key: &str| last.detail.get(key).and_then(Value::as_str);
    let outcome = match last.phase {
        StepPhase::Done => Outcome::Done,
        StepPhase::RolledBack => Outcome::RolledBack,
        StepPhase::Stopped => match detail_str("outcome") {
            Some("interrupted") => Outcome::Interrupted,
            Some("superseded") => Outcome::Superseded,
            _ => Outcome::Stopped,
        },
        _ => Outcome::Unfinished,
    };
    let failed = matches!(outcome, Outcome::RolledBack | Outcome::Stopped);
    let message = detail_str("message").map(str::to_owned).or_else(|| {
        // A rollback plugsync sent says why on `rollback-sent`.
        (records.iter().rev())
            .find_map(|r| r.record.detail.get("message").and_then(Value::as_str))
            .filter(|_| failed)
            .map(str::to_owned)
    });
    let at = |ms: i64| time(ms).to_string();
    let soaking = (records.iter()).position(|r| r.record.phase == StepPhase::Soaking);
    let soak_ms = soaking.map(|i| {
        let until = records.get(i + 1).map_or(last.at_ms, |r| r.record.at_ms);
        millis(until - records[i].record.at_ms)
    });
    let version = |v: &crate::apply::VersionDigest| Version {
        version: v.version.clone(),
        sha256: v.sha256.to_string(),
    };
    let provenance = context
        .as_ref()
        .map(|c| c.provenance.clone())
        .unwrap_or_default();
    HistoryEntry {
        step_id: first.step_id.clone(),
        plan_id: first.plan_id.clone(),
        plugin: first.plugin.clone(),
        action: context.as_ref().map(|c| c.action.clone()),
        number: context.as_ref().map(|c| c.number),
        of: context.as_ref().map(|c| c.of),
        from: (context.as_ref()).and_then(|c| c.from.as_ref().map(version)),
        to: (context.as_ref()).and_then(|c| c.to.as_ref().map(version)),
        outcome,
        check: detail_str("check").map(str::to_owned).filter(|_| failed),
        message,
        started_at: at(first.at_ms),
        ended_at: last.phase.is_terminal().then(|| at(last.at_ms)),
        duration_ms: millis(last.at_ms - first.at_ms),
        soak_ms,
        phases: (records.iter())
            .map(|r| PhaseAt {
                phase: r.record.phase.to_string(),
                at: at(r.record.at_ms),
            })
            .collect(),
        client: context.as_ref().and_then(|c| c.client.clone()),
        commit: provenance
            .first()
            .and_then(|p| p.git.commit())
            .map(str::to_owned),
        dirty: dirty(&provenance),
        desired_sha256: context.as_ref().and_then(|c| c.desired_sha256.clone()),
        forced: context.as_ref().and_then(|c| c.forced.clone()),
        provenance,
    }
}

/// Whether any file of the desired state differed from its commit; `None` when none of them
/// is in a repository (or nothing was recorded).
fn dirty(provenance: &[FileProvenance]) -> Option<bool> {
    let in_git: Vec<&Git> = (provenance.iter())
        .map(|p| &p.git)
        .filter(|git| matches!(git, Git::Repository { .. }))
        .collect();
    (!in_git.is_empty()).then(|| in_git.iter().any(|git| git.dirty()))
}

/// Unix milliseconds as a time (the journal's clock is the wall clock).
fn time(ms: i64) -> Timestamp {
    Timestamp::from_millisecond(ms).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A span in milliseconds, never negative (a clock stepped back between two transitions).
fn millis(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

/// A span as the text shows it: `350ms`, `1.2s`, `2m05s`, `1h02m`.
pub fn span(ms: u64) -> String {
    match ms {
        0..1_000 => format!("{ms}ms"),
        1_000..60_000 => format!("{}.{}s", ms / 1_000, (ms % 1_000) / 100),
        60_000..3_600_000 => format!("{}m{:02}s", ms / 60_000, (ms / 1_000) % 60),
        _ => format!("{}h{:02}m", ms / 3_600_000, (ms / 60_000) % 60),
    }
}

/// The JSON Schema of `plugsync history --output json`.
pub fn history_schema() -> Value {
    serde_json::to_value(schemars::schema_for!(HistoryDocument)).unwrap_or_default()
}

/// `plugsync history --output json`: the steps, newest first.
#[derive(Serialize, schemars::JsonSchema)]
#[schemars(title = "plugsync history")]
#[serde(transparent)]
struct HistoryDocument(Vec<HistoryEntry>);

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: &str = "2026-12-02T14:00:00Z";

    fn check_since(text: &str, expected: Option<&str>) {
        let now: Timestamp = NOW.parse().unwrap();
        let got = parse_since(text, now).map(|t| t.to_string()).ok();
        assert_eq!(got.as_deref(), expected, "--since {text}");
    }

    #[test]
    fn since_is_a_time_or_a_duration_ago() {
        let cases = [
            ("2026-12-01T09:30:00Z", Some("2026-12-01T09:30:00Z")),
            ("2026-12-01T09:30:00+01:00", Some("2026-12-01T08:30:00Z")),
            ("2h", Some("2026-12-02T12:00:00Z")),
            ("7d", Some("2026-11-25T14:00:00Z")),
            ("1h30m", Some("2026-12-02T12:30:00Z")),
            ("90s", Some("2026-12-02T13:58:30Z")),
            ("0s", Some(NOW)),
            ("yesterday", None),
            ("2026-12-01", None),
            ("", None),
            ("-2h", None),
        ];
        for (text, expected) in cases {
            check_since(text, expected);
        }
    }

    #[test]
    fn a_bad_since_names_both_forms() {
        let error = parse_since("soon", NOW.parse().unwrap()).unwrap_err();
        expect_test::expect![[r#"`--since soon` is neither an RFC 3339 time nor a duration (expected number at 0): give a time like `2026-12-02T14:00:00Z`, or how long ago like `2h` or `7d`"#]]
            .assert_eq(&error.to_string());
    }

    /// A journal of one step: (phase, at_ms, detail).
    fn journal(step_id: &str, phases: &[(StepPhase, i64, Value)]) -> Vec<Journaled> {
        (phases.iter().enumerate())
            .map(|(i, (phase, at_ms, detail))| Journaled {
                seq: i as u64 + 1,
                record: crate::store::JournalRecord {
                    step_id: step_id.to_owned(),
                    plan_id: "p".repeat(64),
                    plugin: "ma_cross".to_owned(),
                    phase: *phase,
                    at_ms: *at_ms,
                    request: None,
                    detail: detail.clone(),
                },
            })
            .collect()
    }

    /// A `planned` detail as the first journals wrote it: no provenance, client, forced
    /// reason or desired sha256.
    fn old_context() -> Value {
        let digest = "ab".repeat(32);
        serde_json::json!({
            "number": 1, "of": 1, "plugin": "ma_cross", "action": "upgrade",
            "from": {"version": "2.0.0", "sha256": digest},
            "to": {"version": "2.0.3", "sha256": digest},
            "operation": "switch", "request": {}, "soak_ms": 60000, "min_calls": null,
            "halt_on_failure": false
        })
    }

    #[test]
    fn a_step_of_an_old_journal_reads_with_its_soak_and_the_rollback_message() {
        use StepPhase::*;
        let t = 1_796_222_400_000; // 2026-12-02T14:40:00Z
        let records = journal(
            "s.1.1",
            &[
                (Planned, t, old_context()),
                (Preflighted, t + 400, Value::Null),
                (Staged, t + 500, Value::Null),
                (SwitchSent, t + 600, Value::Null),
                (
                    Soaking,
                    t + 700,
                    serde_json::json!({"soak_until_ms": t + 60_700}),
                ),
                (
                    RollbackSent,
                    t + 2_700,
                    serde_json::json!({"message": "unhealthy"}),
                ),
                (RolledBack, t + 2_900, Value::Null),
            ],
        );
        let entries = entries(&records);
        assert_eq!(entries.len(), 1);
        let entry = &entries[0];
        assert_eq!(entry.outcome, Outcome::RolledBack);
        assert_eq!(entry.message.as_deref(), Some("unhealthy"));
        assert_eq!(entry.check, None, "an old journal did not record it");
        assert_eq!(entry.duration_ms, 2_900);
        assert_eq!(entry.soak_ms, Some(2_000));
        assert_eq!(entry.started_at, "2026-12-02T14:40:00Z");
        assert_eq!(entry.ended_at.as_deref(), Some("2026-12-02T14:40:02.9Z"));
        assert_eq!(entry.to.as_ref().map(|v| v.version.as_str()), Some("2.0.3"));
        assert_eq!(
            (
                entry.client.as_deref(),
                entry.commit.as_deref(),
                entry.dirty
            ),
            (None, None, None)
        );
    }

    #[test]
    fn outcomes_come_from_the_last_phase_and_its_detail() {
        use StepPhase::*;
        let stopped = |detail| vec![(Planned, 0, old_context()), (Stopped, 5, detail)];
        let cases = [
            (
                vec![(Planned, 0, old_context()), (Done, 9, Value::Null)],
                Outcome::Done,
                None,
            ),
            (
                stopped(serde_json::json!({"check": "preflight", "message": "panicked"})),
                Outcome::Stopped,
                Some("preflight"),
            ),
            (
                stopped(serde_json::json!({"outcome": "interrupted", "message": "restart"})),
                Outcome::Interrupted,
                None,
            ),
            (
                stopped(serde_json::json!({"outcome": "superseded", "message": "gone"})),
                Outcome::Superseded,
                None,
            ),
            (
                vec![(Planned, 0, old_context()), (Soaking, 9, Value::Null)],
                Outcome::Unfinished,
                None,
            ),
        ];
        for (phases, outcome, check) in cases {
            let entry = &entries(&journal("s.1.1", &phases))[0];
            assert_eq!(
                (entry.outcome, entry.check.as_deref()),
                (outcome, check),
                "{phases:?}"
            );
        }
    }

    #[test]
    fn steps_come_newest_first() {
        use StepPhase::*;
        let mut records = journal("a.1.1", &[(Planned, 0, old_context())]);
        let b = journal(
            "b.1.1",
            &[(Planned, 1, old_context()), (Done, 2, Value::Null)],
        );
        records.extend(b.into_iter().map(|mut j| {
            j.seq += 1;
            j
        }));
        let mut done = journal("a.1.1", &[(Done, 3, Value::Null)]);
        done[0].seq = 4;
        records.extend(done);
        let ids: Vec<String> = entries(&records).into_iter().map(|e| e.step_id).collect();
        assert_eq!(ids, ["b.1.1", "a.1.1"]);
    }

    #[test]
    fn dirty_is_any_file_of_the_chain_in_git_and_unknown_outside() {
        use crate::spec::provenance::FileState::{Clean, Modified, Untracked};
        let file = |git: Git| FileProvenance {
            file: "plugins.yaml".into(),
            git,
        };
        let repo = |state| {
            file(Git::Repository {
                workdir: "/r".into(),
                path: "plugins.yaml".to_owned(),
                commit: None,
                state,
            })
        };
        let cases = [
            (vec![], None),
            (vec![file(Git::Outside)], None),
            (vec![repo(Clean)], Some(false)),
            (vec![repo(Clean), repo(Modified)], Some(true)),
            (vec![repo(Untracked), file(Git::Outside)], Some(true)),
            (vec![repo(Clean), file(Git::Outside)], Some(false)),
        ];
        for (provenance, expected) in cases {
            assert_eq!(dirty(&provenance), expected, "{provenance:?}");
        }
    }

    #[test]
    fn spans_read_at_a_glance() {
        let cases = [
            (0, "0ms"),
            (350, "350ms"),
            (1_000, "1.0s"),
            (1_250, "1.2s"),
            (59_999, "59.9s"),
            (125_000, "2m05s"),
            (3_720_000, "1h02m"),
        ];
        for (ms, expected) in cases {
            assert_eq!(span(ms), expected, "{ms}");
        }
    }
}
