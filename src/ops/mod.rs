//! The operations behind the commands: each command is a thin handler over one function here,
//! which tests call directly.

mod apply;
mod demo;
mod gc;
mod history;
mod host;
mod inspect;
mod lock;
mod operator_view;
mod preview;
mod reconcile;
mod registry;
mod restrain;
mod rollback;
mod run;
mod status;
mod validate;

pub use apply::{
    Progress, RECONCILE_TOOL, RUN_TOOL, ReconcileOptions, finish_journal, plan_now, reconcile,
    reconcile_desired,
};
pub use demo::{DemoOptions, DemoOutcome, DemoVenue, PlanCheck, StepOutcome, StoryCheck, demo};
pub use gc::gc;
pub use history::{
    History, HistoryEntry, HistoryError, HistoryOptions, Outcome, PhaseAt, Version, history,
    history_schema, parse_since, span,
};
pub use host::{FeedFile, HostOptions, host};
pub use inspect::{InspectFormat, inspect};
pub use lock::{LockOptions, LockOutcome, default_state_dir, lock};
pub use operator_view::{OperatorView, operator_view};
pub use reconcile::{DesiredState, DryRun, DryRunOptions, Observe, dry_run};
pub use registry::{PublishOptions, keygen, promote, publish, yank};
pub use restrain::{RestraintChange, entry_fingerprint, restrain};
pub use rollback::{ROLLBACK_TOOL, RollbackOptions, RollbackOutcome, rollback};
pub use run::{EmbeddedHost, RunOptions, run, run_embedded};
pub use status::{StatusFormat, StatusOptions, status};
pub use validate::{SchemaName, Validated, schema, validate};
