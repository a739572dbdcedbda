//! `plugsync freeze | unfreeze | hold | release | retry`: an operator's word on what the host
//! forbids for now. The host keeps these facts and every client honours them (a freeze
//! refuses every change; a hold keeps a plugin where it runs; a failed mark keeps a version
//! from being tried again), so each command is one request to the host's control API:
//!
//! 1. **read** the host's status, to say what changes (and refuse what makes no sense: a
//!    release of a plugin not held, a retry with nothing marked failed);
//! 2. **lease**: take the host's reconcile lease, waiting while another client reconciles,
//!    so that no plan is made around a restraint that is about to change — except for a
//!    freeze, the kill switch, which the host admits whoever holds the lease;
//! 3. **send** the change, and give the lease back.

use std::path::Path;
use std::time::Duration;

use plugsync_host::Digest;
use plugsync_host::control::api::{LeaseRequest, RestraintRequest};

use crate::apply::HostPort;
use crate::error::{Error, Result};
use crate::plan::host_time;
use crate::spec::{self, Limits};

/// What to forbid or allow again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RestraintChange {
    /// Freeze the host: no switch, install or unload, by any client, until unfrozen.
    Freeze {
        /// Why (shown to every client).
        reason: String,
    },
    /// Lift the freeze.
    Unfreeze,
    /// Keep a plugin at the version it runs.
    Hold {
        /// The plugin.
        plugin: String,
        /// Why.
        reason: String,
        /// The fingerprint of its entry in plugins.yaml, when one was given: the hold then
        /// ends when that entry changes, as well as by `release`.
        entry_sha256: Option<String>,
    },
    /// Release a plugin's hold.
    Release {
        /// The plugin.
        plugin: String,
    },
    /// Clear a plugin's failed marks: the next reconcile tries those versions again.
    Retry {
        /// The plugin.
        plugin: String,
    },
}

/// How long the lease taken for one restraint change lasts: the change is one request.
const LEASE_TTL: Duration = Duration::from_secs(30);

/// How often to ask again for a lease another client holds.
const LEASE_POLL: Duration = Duration::from_millis(500);

/// Makes `change` on the host behind `port`; what was done, for the operator. Waits while
/// another client holds the reconcile lease unless `no_wait` (then fails), telling `notice`.
pub fn restrain(
    change: &RestraintChange,
    port: &dyn HostPort,
    no_wait: bool,
    notice: &mut dyn FnMut(&str),
) -> Result<String> {
    let restraints = port.status(false)?.status.restraints;
    let host = port.describe().to_owned();
    let (requests, done) = match change {
        RestraintChange::Freeze { reason } => {
            let request = RestraintRequest::Freeze {
                reason: reason.clone(),
                by: None,
            };
            // The kill switch goes whoever holds the lease.
            port.restraints(&request, None)?;
            return Ok(format!(
                "Froze the host at {host}: every client's switch, install and unload is refused \
                 until `plugsync unfreeze` (a pending step may still be committed or rolled \
                 back). Reason: {reason}"
            ));
        }
        RestraintChange::Unfreeze => {
            let Some(freeze) = &restraints.freeze else {
                return Ok(format!("The host at {host} is not frozen: nothing to do."));
            };
            let done = format!(
                "Unfroze the host at {host} (frozen by {} since {}: {}).",
                freeze.by,
                host_time(freeze.at.as_nanos()),
                freeze.reason
            );
            (vec![RestraintRequest::Unfreeze { by: None }], done)
        }
        RestraintChange::Hold {
            plugin,
            reason,
            entry_sha256,
        } => {
            let running = port.status(false)?.status;
            let Some(status) = running.plugins.iter().find(|p| &p.plugin == plugin) else {
                return Err(Error::NotRestrainable {
                    what: format!("`{plugin}` is not loaded on the host at {host}"),
                    fix: "hold a plugin the host runs (`plugsync status` lists them)".into(),
                });
            };
            let done = held_text(
                plugin,
                &status.version.version.to_string(),
                entry_sha256.is_some(),
            );
            let request = RestraintRequest::Hold {
                plugin: plugin.clone(),
                reason: reason.clone(),
                by: None,
                entry_sha256: entry_sha256.clone(),
            };
            (vec![request], done)
        }
        RestraintChange::Release { plugin } => {
            let Some(hold) = restraints.holds.get(plugin) else {
                return Err(Error::NotRestrainable {
                    what: format!("`{plugin}` is not held on the host at {host}"),
                    fix: "`plugsync status` lists the holds".into(),
                });
            };
            let done = format!(
                "Released `{plugin}` (held by {} since {}: {}): the next reconcile moves it to \
                 what plugins.yaml asks.",
                hold.by,
                host_time(hold.at.as_nanos()),
                hold.reason
            );
            let request = RestraintRequest::Release {
                plugin: plugin.clone(),
                by: None,
            };
            (vec![request], done)
        }
        RestraintChange::Retry { plugin } => {
            let marks: Vec<_> = (restraints.failed.iter())
                .filter(|mark| &mark.plugin == plugin)
                .collect();
            if marks.is_empty() {
                return Err(Error::NotRestrainable {
                    what: format!(
                        "no version of `{plugin}` is marked failed on the host at {host}"
                    ),
                    fix: "`plugsync status` lists the failed marks".into(),
                });
            }
            let mut done = String::new();
            for mark in &marks {
                done.push_str(&format!(
                    "Cleared the failed mark on `{plugin}` {} (by {} at {}: {}).\n",
                    mark.version,
                    mark.because.by,
                    host_time(mark.because.at.as_nanos()),
                    mark.because.reason
                ));
            }
            done.push_str("The next reconcile may try it again.");
            let requests = (marks.iter())
                .map(|mark| clear_failed(mark.digest))
                .collect();
            (requests, done)
        }
    };
    let epoch = acquire(port, no_wait, notice)?;
    let sent = requests_in_order(&requests, port, epoch);
    // Given back whatever became of the change; a release that fails leaves it to expire.
    let _ = port.lease(&LeaseRequest::Release { owner: None, epoch });
    sent?;
    Ok(done)
}

/// The fingerprint of `plugin`'s entry in the plugins.yaml at `file` (merged with what it
/// extends), for a hold that ends when that entry changes.
pub fn entry_fingerprint(file: &Path, plugin: &str) -> Result<String> {
    let desired =
        spec::load(file, &Limits::default()).map_err(|report| Error::InvalidDesiredState {
            report: report.render(false),
        })?;
    let entry = (desired.set.spec.plugins.iter()).find(|p| p.id == plugin);
    match entry {
        Some(entry) => Ok(entry.fingerprint().to_string()),
        None => Err(Error::NotRestrainable {
            what: format!("`{plugin}` is not named in {}", file.display()),
            fix: "hold it without `-f`, or name the plugins.yaml that names it".into(),
        }),
    }
}

fn clear_failed(artifact: Digest) -> RestraintRequest {
    RestraintRequest::ClearFailed { artifact, by: None }
}

/// Sends `requests` under lease `epoch`, in order, stopping at the first refused.
fn requests_in_order(requests: &[RestraintRequest], port: &dyn HostPort, epoch: u64) -> Result<()> {
    for request in requests {
        port.restraints(request, Some(epoch))?;
    }
    Ok(())
}

/// Takes the host's reconcile lease for one change; its epoch.
/// What a hold of `plugin` at `version` says once set (`by_entry`: lifted too by a change of
/// its entry in plugins.yaml).
pub(super) fn held_text(plugin: &str, version: &str, by_entry: bool) -> String {
    let until = if by_entry {
        format!("`plugsync release {plugin}`, or until its entry in plugins.yaml changes")
    } else {
        format!("`plugsync release {plugin}`")
    };
    format!("Held `{plugin}` at {version}: every reconcile keeps it there until {until}.")
}

pub(super) fn acquire(
    port: &dyn HostPort,
    no_wait: bool,
    notice: &mut dyn FnMut(&str),
) -> Result<u64> {
    let mut told = false;
    loop {
        let acquired = port.lease(&LeaseRequest::Acquire {
            owner: None,
            ttl_ms: LEASE_TTL.as_millis() as u64,
        });
        match acquired {
            Ok(answer) => return Ok(answer.holder.map(|h| h.epoch).unwrap_or_default()),
            Err(Error::HostRefused { code, .. }) if code == "lease_held" => {
                let holder = port.status(false)?.status.lease.holder;
                let who = holder.map_or_else(
                    || "another client".to_owned(),
                    |holder| format!("`{}`", holder.owner),
                );
                if no_wait {
                    return Err(Error::LeaseHeldElsewhere {
                        host: port.describe().to_owned(),
                        holder: who,
                    });
                }
                if !told {
                    told = true;
                    notice(&format!("waiting: {who} is reconciling the host"));
                }
                std::thread::sleep(LEASE_POLL);
            }
            Err(error) => return Err(error),
        }
    }
}
