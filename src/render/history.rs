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
