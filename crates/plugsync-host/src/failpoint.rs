//! Named points where a test makes the host fail or die, to prove what survives a crash at that
//! very instant (the order of two writes, say) without relying on timing.
//!
//! Set with `PLUGSYNC_FAILPOINTS=name=action[,name=action…]`, read once per process; the
//! actions are `abort` (the process dies there at once, as a `kill -9` would) and `error` (the
//! operation fails as an I/O error would). Unset, a point costs one check of an initialised
//! `OnceLock`. The points:
//!
//! - `commit.between-writes`: in `commit`, after the checkpoint is written and before the
//!   committed set is;
//! - `checkpoint.write`: writing any checkpoint.

use std::sync::OnceLock;

use crate::error::HostError;

/// The environment variable that arms fail points.
pub const FAILPOINTS_ENV: &str = "PLUGSYNC_FAILPOINTS";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Abort,
    Error,
}

fn armed() -> &'static [(String, Action)] {
    static ARMED: OnceLock<Vec<(String, Action)>> = OnceLock::new();
    ARMED.get_or_init(|| {
        let Ok(spec) = std::env::var(FAILPOINTS_ENV) else {
            return Vec::new();
        };
        spec.split(',')
            .filter_map(|point| {
                let (name, action) = point.split_once('=')?;
                let action = match action.trim() {
                    "abort" => Action::Abort,
                    "error" => Action::Error,
                    other => {
                        tracing::error!("{FAILPOINTS_ENV}: unknown action `{other}` ignored");
                        return None;
                    }
                };
                tracing::warn!("fail point `{}` armed: {action:?}", name.trim());
                Some((name.trim().to_owned(), action))
            })
            .collect()
    })
}

/// Passes point `name`: dies there, fails there, or goes on, as armed.
pub(crate) fn hit(name: &'static str, path: &std::path::Path) -> Result<(), HostError> {
    match armed().iter().find(|(armed, _)| armed == name) {
        None => Ok(()),
        Some((_, Action::Abort)) => {
            tracing::error!("fail point `{name}`: aborting");
            std::process::abort()
        }
        Some((_, Action::Error)) => Err(HostError::Io {
            action: "write",
            path: path.to_owned(),
            source: std::io::Error::other(format!("fail point `{name}`")),
        }),
    }
}
