//! The reconcile lease: which client may change this host now.
//!
//! Several clients drive one host (a sidecar, an operator's `plugsync reconcile`, CI) and share
//! no disk, so who is reconciling is the host's to say. A client **acquires** the lease with its
//! name and a time to live and gets an **epoch**, a number the host never gives twice; it sends
//! the epoch with every mutating request and **renews** before the TTL runs out. The host
//! refuses (409) a mutating request that carries an epoch other than the current holder's, and
//! one without an epoch while another client holds the lease; without a lease held, requests
//! without an epoch are allowed (one client alone needs no lease). A crashed holder's lease
//! expires by itself (the runtime's clock); an operator can **break** it on purpose, which is
//! recorded. The lease, its epoch counter and the last breaks are kept in the store
//! (`lease.json`), so a host restart neither frees a lease nor gives an epoch twice.
//!
//! Mutating requests hold the lease's read lock while they apply, and acquiring, renewing,
//! releasing and breaking take its write lock: a request allowed by the lease completes before
//! the lease can change hands.

use std::path::PathBuf;
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use plugsync_plugin::HostTime;
use serde::{Deserialize, Serialize};

use crate::error::{HostError, Result};
use crate::persist::{read_json, write_atomic};
use crate::slot::lock;

/// The longest TTL a lease may be given: a crashed holder blocks other clients at most this long
/// (an operator can always break it).
pub const MAX_LEASE_TTL_MS: u64 = 3_600_000;

/// How many breaks the host remembers.
const BREAKS_KEPT: usize = 16;

/// Who holds the lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct LeaseHolder {
    /// The client's name.
    pub owner: String,
    /// The epoch every mutating request of the holder carries.
    pub epoch: u64,
    /// Host time (ns since the Unix epoch) at which it expires unless renewed.
    #[cfg_attr(feature = "control-api", schemars(with = "i64"))]
    pub expires_at: HostTime,
    /// Host time it was acquired.
    #[cfg_attr(feature = "control-api", schemars(with = "i64"))]
    pub acquired_at: HostTime,
}

/// A lease broken on purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct LeaseBreak {
    /// Who broke it.
    pub by: String,
    /// Why.
    pub reason: String,
    /// Host time of the break.
    #[cfg_attr(feature = "control-api", schemars(with = "i64"))]
    pub at: HostTime,
    /// The holder it was taken from (`None`: no one held it, or it had expired).
    pub holder: Option<LeaseHolder>,
}

/// The lease as status shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
pub struct LeaseStatus {
    /// The holder, if the lease is held and not expired.
    pub holder: Option<LeaseHolder>,
    /// The last epoch given (0: never).
    pub last_epoch: u64,
    /// The last breaks, oldest first.
    pub breaks: Vec<LeaseBreak>,
}

/// The lease and where it is kept.
#[derive(Debug)]
pub(crate) struct ReconcileLease {
    path: PathBuf,
    state: RwLock<LeaseStatus>,
    /// A copy of `state` for status, which must answer at once even while a request holds the
    /// lease and a client waits to acquire it (a waiting writer holds up new readers).
    seen: Mutex<LeaseStatus>,
}

/// Held while a mutating request applies: the lease cannot change hands meanwhile.
pub struct LeaseGuard<'a> {
    _state: RwLockReadGuard<'a, LeaseStatus>,
}

impl ReconcileLease {
    /// The lease kept at `path`, as the store last had it (none if never written).
    pub fn open(path: PathBuf) -> Result<ReconcileLease> {
        let state = read_json::<LeaseStatus>(&path)?.unwrap_or_default();
        Ok(ReconcileLease {
            path,
            seen: Mutex::new(state.clone()),
            state: RwLock::new(state),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, LeaseStatus> {
        self.state
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, LeaseStatus> {
        self.state
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The lease at `now`: an expired holder is shown as none.
    pub fn status(&self, now: HostTime) -> LeaseStatus {
        let mut status = lock(&self.seen).clone();
        status.holder = status.holder.filter(|holder| holder.expires_at > now);
        status
    }

    /// Allows a mutating request carrying `epoch` at `now` (see the module docs) from `client`
    /// (`None`: the host's own code), and holds the lease until the returned guard is dropped.
    /// The holder's epoch admits only the holder: another client that read it from status
    /// cannot borrow it.
    pub fn admit(
        &self,
        epoch: Option<u64>,
        client: Option<&str>,
        now: HostTime,
    ) -> Result<LeaseGuard<'_>> {
        let state = self.read();
        let holder = state.holder.as_ref().filter(|h| h.expires_at > now);
        match (holder, epoch) {
            (Some(holder), Some(epoch))
                if holder.epoch == epoch && client.is_some_and(|c| c != holder.owner) =>
            {
                return Err(HostError::LeaseHeld {
                    owner: holder.owner.clone(),
                    epoch: holder.epoch,
                    expires_in_ms: ms_until(holder.expires_at, now),
                });
            }
            (Some(holder), Some(epoch)) if holder.epoch == epoch => {}
            (None, None) => {}
            (Some(holder), None) => {
                return Err(HostError::LeaseHeld {
                    owner: holder.owner.clone(),
                    epoch: holder.epoch,
                    expires_in_ms: ms_until(holder.expires_at, now),
                });
            }
            (holder, Some(epoch)) => {
                return Err(HostError::StaleLeaseEpoch {
                    epoch,
                    holder: holder.map(|h| (h.owner.clone(), h.epoch)),
                });
            }
        }
        Ok(LeaseGuard { _state: state })
    }

    /// Gives the lease to `owner` for `ttl_ms` with a new epoch: when no one holds it, when it
    /// expired, or when `owner` itself holds it (a restarted client takes its lease back, and
    /// the new epoch fences out its previous incarnation's requests).
    pub fn acquire(&self, owner: &str, ttl_ms: u64, now: HostTime) -> Result<LeaseHolder> {
        check_lease_request(owner, ttl_ms)?;
        let mut state = self.write();
        if let Some(holder) = state.holder.as_ref().filter(|h| h.expires_at > now)
            && holder.owner != owner
        {
            return Err(HostError::LeaseHeld {
                owner: holder.owner.clone(),
                epoch: holder.epoch,
                expires_in_ms: ms_until(holder.expires_at, now),
            });
        }
        let mut next = state.clone();
        next.last_epoch += 1;
        let holder = LeaseHolder {
            owner: owner.to_owned(),
            epoch: next.last_epoch,
            expires_at: after(now, ttl_ms),
            acquired_at: now,
        };
        next.holder = Some(holder.clone());
        self.persist(&mut state, next)?;
        tracing::info!(
            owner,
            epoch = holder.epoch,
            ttl_ms,
            "reconcile lease acquired"
        );
        Ok(holder)
    }

    /// Extends the lease of `owner` at `epoch` to `ttl_ms` from now. An expired lease is not
    /// renewed: another client may have changed the host meanwhile, so the owner acquires again
    /// (and observes again).
    pub fn renew(
        &self,
        owner: &str,
        epoch: u64,
        ttl_ms: u64,
        now: HostTime,
    ) -> Result<LeaseHolder> {
        check_lease_request(owner, ttl_ms)?;
        let mut state = self.write();
        let mut next = state.clone();
        let holder = held_by(&mut next, owner, epoch, now)?;
        holder.expires_at = after(now, ttl_ms);
        let renewed = holder.clone();
        self.persist(&mut state, next)?;
        Ok(renewed)
    }

    /// Ends the lease of `owner` at `epoch`.
    pub fn release(&self, owner: &str, epoch: u64, now: HostTime) -> Result<()> {
        let mut state = self.write();
        let mut next = state.clone();
        held_by(&mut next, owner, epoch, now)?;
        next.holder = None;
        self.persist(&mut state, next)?;
        tracing::info!(owner, epoch, "reconcile lease released");
        Ok(())
    }

    /// Takes the lease from whoever holds it, on purpose: recorded with who and why. The
    /// holder's requests are refused from now on (their epoch is stale).
    pub fn break_lease(&self, by: &str, reason: &str, now: HostTime) -> Result<LeaseBreak> {
        if by.trim().is_empty() || reason.trim().is_empty() {
            return Err(HostError::BadLeaseRequest {
                reason: "breaking the lease needs `by` (who) and a `reason`".into(),
            });
        }
        let mut state = self.write();
        let mut next = state.clone();
        let taken = LeaseBreak {
            by: by.to_owned(),
            reason: reason.to_owned(),
            at: now,
            holder: next.holder.take().filter(|h| h.expires_at > now),
        };
        next.breaks.push(taken.clone());
        let excess = next.breaks.len().saturating_sub(BREAKS_KEPT);
        next.breaks.drain(..excess);
        self.persist(&mut state, next)?;
        tracing::warn!(
            by,
            reason,
            holder = taken.holder.as_ref().map(|h| h.owner.as_str()),
            "reconcile lease broken"
        );
        Ok(taken)
    }

    /// Writes `next` to the store, then makes it the lease: a lease the store does not have is
    /// never given (a restart would forget it, or give its epoch again).
    fn persist(&self, state: &mut LeaseStatus, next: LeaseStatus) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(&next).map_err(|e| HostError::Io {
            action: "serialise",
            path: self.path.clone(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&self.path, &bytes)?;
        *lock(&self.seen) = next.clone();
        *state = next;
        Ok(())
    }
}

/// The holder of `state` if it is `owner` at `epoch` and not expired. Another client naming
/// the holder's epoch is told the lease is held (not that the epoch is stale: it is current).
fn held_by<'a>(
    state: &'a mut LeaseStatus,
    owner: &str,
    epoch: u64,
    now: HostTime,
) -> Result<&'a mut LeaseHolder> {
    match state.holder.as_mut().filter(|h| h.expires_at > now) {
        Some(holder) if holder.owner == owner && holder.epoch == epoch => Ok(holder),
        Some(holder) if holder.epoch == epoch => Err(HostError::LeaseHeld {
            owner: holder.owner.clone(),
            epoch: holder.epoch,
            expires_in_ms: ms_until(holder.expires_at, now),
        }),
        holder => Err(HostError::StaleLeaseEpoch {
            epoch,
            holder: holder.map(|h| (h.owner.clone(), h.epoch)),
        }),
    }
}

fn check_lease_request(owner: &str, ttl_ms: u64) -> Result<()> {
    if owner.trim().is_empty() || owner.len() > 128 || owner.chars().any(char::is_control) {
        return Err(HostError::BadLeaseRequest {
            reason: "`owner` must be a name of 1 to 128 printable characters".into(),
        });
    }
    if ttl_ms == 0 || ttl_ms > MAX_LEASE_TTL_MS {
        return Err(HostError::BadLeaseRequest {
            reason: format!(
                "`ttl_ms` is {ttl_ms}: give 1 to {MAX_LEASE_TTL_MS} ms (renew a longer lease)"
            ),
        });
    }
    Ok(())
}

fn after(now: HostTime, ms: u64) -> HostTime {
    let ns = i64::try_from(ms.saturating_mul(1_000_000)).unwrap_or(i64::MAX);
    HostTime(now.0.saturating_add(ns))
}

/// Whole milliseconds from `now` to `at`, rounded up (a lease with 1 ns left is not "0 ms").
fn ms_until(at: HostTime, now: HostTime) -> u64 {
    u64::try_from(at.0.saturating_sub(now.0))
        .unwrap_or(0)
        .div_ceil(1_000_000)
}
