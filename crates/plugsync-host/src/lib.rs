//! The plugsync host runtime: what a trading host embeds to load plugins and replace them
//! while they are being called.
//!
//! - [`ArtifactStore`]: content-addressed, verified artifacts (`<store>/artifacts/<sha256>/`),
//!   private to the host's user, each with its publisher's signature if it has one;
//! - the loader: metadata (and, with [`TrustedKeys`], the signature) checked **before**
//!   `dlopen`; the very bytes that were hashed mapped from a sealed memfd; libraries opened
//!   `RTLD_NOW | RTLD_LOCAL | RTLD_NODELETE` and never closed;
//! - slots: one per plugin id; [`SlotHandle::call_into`] is the hot path;
//! - [`Runtime::swap`]: verify on throwaway instances, migrate the state, switch with a stall of
//!   one short locked window, keep the old instance until [`Runtime::commit`];
//! - [`Runtime::rollback`]: back to the old instance by replay, down-migration, or an exact
//!   account of what was lost.
//!
//! ```no_run
//! use plugsync_host::{Runtime, RuntimeOptions, SwapRequest};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let runtime = Runtime::new(RuntimeOptions::new("/var/lib/host/store"))?;
//! let v1 = runtime.stage_file("libma_cross_v1_0_0.so".as_ref())?;
//! runtime.install(&v1.digest, serde_json::json!({"fast_ma_period": 5}))?;
//! let ma_cross = runtime.handle("ma_cross")?;
//! let mut output = Vec::new();
//! let receipt = ma_cross.call_into(br#"{"bar":{"instrument":"ES","close":4500.0}}"#, &mut output)?;
//! println!("served by {}", receipt.digest);
//!
//! let v2 = runtime.stage_file("libma_cross_v2_0_0.so".as_ref())?;
//! let report = runtime.swap(SwapRequest::new("ma_cross", v2.digest))?;
//! println!("stalled callers for at most {:?}", report.locked_window);
//! runtime.commit("ma_cross")?;
//! # Ok(()) }
//! ```

mod clock;
#[cfg(feature = "control-api")]
pub mod control;
mod dependencies;
mod digest;
mod error;
mod failpoint;
mod keys;
#[allow(unsafe_code)]
mod library;
mod migration;
mod persist;
mod reconcile_lease;
mod restraints;
mod rollback;
mod rules;
mod runtime;
mod slot;
mod steward;
mod store;
mod swap;
mod verify;
mod versions;

pub use clock::{Clock, ManualClock, SystemClock};
pub use dependencies::{PlannedChange, UnmetDependency};
pub use digest::{Digest, InvalidDigest};
pub use error::{HostError, Result};
pub use failpoint::FAILPOINTS_ENV;
pub use keys::{TrustedKeys, signature_payload};
pub use library::{
    FRAMEWORK_VERSION, LoadPolicy, REQUIRED_ABI_MINOR, check_plugin_id, inspect, inspect_bytes,
};
pub use migration::TransitionKind;
pub use persist::{
    AppliedOperation, AppliedRecord, CheckpointOutcome, CheckpointRef, CommittedPlugin,
    CommittedSet, Origin, RecoverOptions, RecoveredPlugin, Recovery, StepOutcome, StepResult,
    UnloadedPlugin,
};
pub use plugsync_plugin::{HostTime, PluginMetadata};
pub use reconcile_lease::{LeaseBreak, LeaseGuard, LeaseHolder, LeaseStatus, MAX_LEASE_TTL_MS};
pub use restraints::{Because, FailedMark, Force, ForcedChange, Restraint, Restraints};
pub use rollback::{
    Divergence, LostCalls, RollbackMethod, RollbackReason, RollbackReport, VersionRef,
};
/// The declarative migration rules' applier ([`MigrationRule`]), usable without a switch.
pub use rules::apply as apply_migration_rules;
pub use rules::{MigrationRule, RuleError};
pub use runtime::{
    Asked, Health, InstallTerms, Installed, PendingStatus, PluginStatus, ResidentLibrary, Runtime,
    RuntimeOptions, RuntimeStatus, StateSnapshot, StepFate,
};
pub use slot::{
    CallError, CallOutput, CallReceipt, Counters, Fault, RecordedCall, SlotHandle, StepRecord,
    StepState, StuckCall,
};
pub use steward::SoakThresholds;
pub use store::{ArtifactStore, StoredArtifact};
pub use swap::{
    MAX_JOURNAL_CAPACITY, SwapMode, SwapPath, SwapReport, SwapRequest, SwapSafeAnswer, SwitchWhen,
    idle_ms,
};
pub use verify::{
    DifferentialRow, Probe, ProbeMismatch, ProbeOutcome, ProbeStep, VerifyReport, VerifySpec,
};
pub use versions::version_matches;
