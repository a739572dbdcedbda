//! `plugsync gc`: the rollback points past their retention dropped from the state directory
//! (every reconcile does it too, on its way out).

use std::fmt::Write as _;
use std::path::Path;

use jiff::Timestamp;

use crate::error::Result;
use crate::store::{FILE_NAME, RollbackPoint, Store};

/// Drops the rollback points in `state_dir` expired at `now`; what was dropped and what is
/// kept, for the operator. A state directory with no journal is left as it is.
pub fn gc(state_dir: &Path, now: Timestamp) -> Result<String> {
    if !state_dir.join(FILE_NAME).exists() {
        return Ok(format!(
            "No journal in `{}`: no rollback point to drop.\n",
            state_dir.display()
        ));
    }
    let store = Store::open(state_dir)?;
    let dropped = store.gc(now.as_millisecond())?;
    let kept = store.points(None)?;
    let mut out = String::new();
    match dropped.len() {
        0 => out.push_str("No rollback point has expired.\n"),
        n => {
            let _ = writeln!(
                out,
                "Dropped {n} expired rollback point{}:",
                if n == 1 { "" } else { "s" }
            );
            for point in &dropped {
                let _ = writeln!(out, "  {}", describe(point));
            }
        }
    }
    match kept.iter().map(|p| p.expires_at_ms).min() {
        None => out.push_str("None is kept.\n"),
        Some(next) => {
            let _ = writeln!(
                out,
                "Kept {} point{}; the next expires at {}.",
                kept.len(),
                if kept.len() == 1 { "" } else { "s" },
                time(next)
            );
        }
    }
    Ok(out)
}

/// `ma_cross 2.0.0 before step 1a2b….1.1, taken 2026-12-05 17:00:00 UTC`.
pub fn describe(point: &RollbackPoint) -> String {
    format!(
        "{} {} before step {}, taken {}",
        point.plugin,
        point.version,
        point.step_id,
        time(point.at_ms)
    )
}

/// Unix milliseconds as `2026-12-05 17:00:00 UTC`.
pub fn time(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|_| ms.to_string())
}
