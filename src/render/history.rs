//! `plugsync history` for people — a table, newest first, one row per step and a line under a
//! step that failed or was forced — or as JSON.
//!
//! ```text
//! WHEN                  PLUGIN      CHANGE         OUTCOME      TOOK  BY       COMMIT              PLAN
//! 2026-12-02T14:05:32Z  risk_model  1.0.0 → 2.0.0  rolled back  12.0s alice    3f9c2e1a4b5c+dirty  7c1e0a9b3d2f
//!                       ✗ soak: rolled back by the host: …
//! ```

use std::fmt::Write as _;

use crate::ops::{History, HistoryEntry, Outcome};
use crate::spec::provenance::Git;

/// The columns, in order.
const HEADER: [&str; 8] = [
    "WHEN", "PLUGIN", "CHANGE", "OUTCOME", "TOOK", "BY", "COMMIT", "PLAN",
];

/// The history as JSON: the entries (an array, `[]` when empty), pretty, with a final newline.
pub fn history_json(history: &History) -> String {
    // Our own types, with string keys: serialising cannot fail.
    serde_json::to_string_pretty(&history.entries).unwrap_or_default() + "\n"
}

/// The history as text: a table, or a line saying there is nothing to show.
pub fn history_text(history: &History) -> String {
    if history.entries.is_empty() {
        return empty(history);
    }
    let rows: Vec<[String; 8]> = history.entries.iter().map(row).collect();
    let mut widths = HEADER.map(|h| h.chars().count());
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let indent = " ".repeat(widths[0] + 2);
    let mut out = String::new();
    line(&mut out, &HEADER.map(str::to_owned), &widths);
    for (entry, row) in history.entries.iter().zip(&rows) {
        line(&mut out, row, &widths);
        let message = entry.message.as_deref();
        match (entry.outcome, &entry.check) {
            (Outcome::RolledBack | Outcome::Stopped, Some(check)) => {
                let message = message.unwrap_or("no message was journaled");
                let _ = writeln!(out, "{indent}✗ {check}: {message}");
            }
            (Outcome::RolledBack | Outcome::Stopped, None) => {
                let message = message.unwrap_or("no message was journaled");
                let _ = writeln!(out, "{indent}✗ {message}");
            }
            (Outcome::Interrupted | Outcome::Superseded, _) if message.is_some() => {
                let _ = writeln!(out, "{indent}{}", message.unwrap_or_default());
            }
            _ => {}
        }
        if let Some(reason) = &entry.forced {
            let _ = writeln!(out, "{indent}forced: {reason}");
        }
    }
    out
}

/// One row, its cells padded to `widths` (the last one not).
fn line(out: &mut String, cells: &[String; 8], widths: &[usize; 8]) {
    let mut text = String::new();
    for (i, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if i > 0 {
            text.push_str("  ");
        }
        text.push_str(cell);
        if i + 1 < cells.len() {
            let pad = width.saturating_sub(cell.chars().count());
            text.extend(std::iter::repeat_n(' ', pad));
        }
    }
    out.push_str(text.trim_end());
    out.push('\n');
}

/// A step's cells.
fn row(entry: &HistoryEntry) -> [String; 8] {
    let when = entry
        .started_at
        .parse::<jiff::Timestamp>()
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_else(|_| entry.started_at.clone());
    [
        when,
        entry.plugin.clone(),
        change(entry),
        entry.outcome.words().to_owned(),
        crate::ops::span(entry.duration_ms),
        entry.client.clone().unwrap_or_else(|| "—".to_owned()),
        commit(entry),
        entry.plan_id.chars().take(12).collect(),
    ]
}

/// `1.0.0 → 2.0.0`, `install 1.0.0`, `remove 1.0.0`, `reconfigure 2.0.0`.
fn change(entry: &HistoryEntry) -> String {
    match (&entry.from, &entry.to) {
        (Some(from), Some(to)) if from.version == to.version => {
            format!("reconfigure {}", to.version)
        }
        (Some(from), Some(to)) => format!("{} → {}", from.version, to.version),
        (None, Some(to)) => format!("install {}", to.version),
        (Some(from), None) => format!("remove {}", from.version),
        (None, None) => "?".to_owned(),
    }
}

/// The commit plugins.yaml was read at (12 hex digits), `+dirty` when it (or a file it
/// extends) differed from it; or why there is none.
fn commit(entry: &HistoryEntry) -> String {
    let dirty = if entry.dirty == Some(true) {
        "+dirty"
    } else {
        ""
    };
    match entry.provenance.first().map(|p| &p.git) {
        None => "—".to_owned(),
        Some(Git::Outside) => "not in git".to_owned(),
        Some(Git::Unreadable { .. }) => "git unreadable".to_owned(),
        Some(Git::Repository { commit: None, .. }) => format!("no commit{dirty}"),
        Some(Git::Repository {
            commit: Some(commit),
            ..
        }) => format!("{}{dirty}", &commit[..commit.len().min(12)]),
    }
}

/// The line when nothing is shown: no journal, or no step (that matches).
fn empty(history: &History) -> String {
    let Some(journal) = &history.journal else {
        return format!(
            "No history: `{}` holds no journal (no `plugsync reconcile` has run with this state \
             dir).\n",
            history.state_dir.display()
        );
    };
    let mut what = "No steps".to_owned();
    if let Some(plugin) = &history.plugin {
        let _ = write!(what, " of `{plugin}`");
    }
    if let Some(since) = &history.since {
        let _ = write!(what, " since {}", since.strftime("%Y-%m-%dT%H:%M:%SZ"));
    }
    format!("{what} in the journal `{}`.\n", journal.display())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::ops::Version;
    use crate::spec::provenance::{FileProvenance, FileState};

    fn entry(plugin: &str, from: Option<&str>, to: Option<&str>, outcome: Outcome) -> HistoryEntry {
        let version = |v: &str| Version {
            version: v.to_owned(),
            sha256: "ab".repeat(32),
        };
        HistoryEntry {
            step_id: format!("{}.1.1", "7c1e0a9b3d2f".repeat(5)),
            plan_id: "7c1e0a9b3d2f".repeat(5),
            plugin: plugin.to_owned(),
            action: None,
            number: Some(1),
            of: Some(1),
            from: from.map(version),
            to: to.map(version),
            outcome,
            check: None,
            message: None,
            started_at: "2026-12-02T14:05:32.417Z".to_owned(),
            ended_at: None,
            duration_ms: 12_345,
            soak_ms: None,
            phases: Vec::new(),
            client: Some("alice".to_owned()),
            commit: None,
            dirty: None,
            provenance: Vec::new(),
            desired_sha256: None,
            forced: None,
        }
    }

    fn in_git(commit: &str, state: FileState) -> Vec<FileProvenance> {
        vec![FileProvenance {
            file: PathBuf::from("plugins.yaml"),
            git: Git::Repository {
                workdir: PathBuf::from("/desk"),
                path: "plugins.yaml".to_owned(),
                commit: Some(commit.to_owned()),
                state,
            },
        }]
    }

    #[test]
    fn the_table_aligns_its_columns_and_tells_failures_and_forced_reasons_below_a_row() {
        let mut rolled_back = entry(
            "risk_model",
            Some("1.0.0"),
            Some("2.0.0"),
            Outcome::RolledBack,
        );
        rolled_back.check = Some("soak".to_owned());
        rolled_back.message = Some("rolled back by the host: 7 errors in 1204 calls".to_owned());
        rolled_back.provenance = in_git("3f9c2e1a4b5c6d7e", FileState::Modified);
        rolled_back.dirty = Some(true);
        let mut forced = entry("ma_cross", Some("2.0.0"), Some("2.0.0"), Outcome::Done);
        forced.forced = Some("hotfix".to_owned());
        forced.client = None;
        forced.duration_ms = 350;
        forced.provenance = in_git("3f9c2e1a4b5c6d7e", FileState::Clean);
        let mut install = entry("quote_counter", None, Some("1.0.0"), Outcome::Done);
        install.provenance = vec![FileProvenance {
            file: PathBuf::from("plugins.yaml"),
            git: Git::Outside,
        }];
        let removal = entry("old", Some("1.0.0"), None, Outcome::Interrupted);
        let history = History {
            journal: Some(PathBuf::from("/state/journal.redb")),
            state_dir: PathBuf::from("/state"),
            entries: vec![rolled_back, forced, install, removal],
            plugin: None,
            since: None,
        };
        expect_test::expect![[r#"
            WHEN                  PLUGIN         CHANGE             OUTCOME      TOOK   BY     COMMIT              PLAN
            2026-12-02T14:05:32Z  risk_model     1.0.0 → 2.0.0      rolled back  12.3s  alice  3f9c2e1a4b5c+dirty  7c1e0a9b3d2f
                                  ✗ soak: rolled back by the host: 7 errors in 1204 calls
            2026-12-02T14:05:32Z  ma_cross       reconfigure 2.0.0  done         350ms  —      3f9c2e1a4b5c        7c1e0a9b3d2f
                                  forced: hotfix
            2026-12-02T14:05:32Z  quote_counter  install 1.0.0      done         12.3s  alice  not in git          7c1e0a9b3d2f
            2026-12-02T14:05:32Z  old            remove 1.0.0       interrupted  12.3s  alice  —                   7c1e0a9b3d2f
        "#]]
        .assert_eq(&history_text(&history));
    }
}
