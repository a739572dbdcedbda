//! Plan: from what runs to what plugins.yaml asks, one transition the host accepts at a time,
//! in an order where every set of plugins running between two steps meets every dependency.
//!
//! Pure, like resolution (no file, no network, no clock: `now` is an argument):
//!
//! 1. [`VersionGraph::build`] and [`paths`]: per plugin, the versions it may step through and
//!    the switches between them the host accepts; the `k` cheapest upgrade paths
//!    ([`UpgradePath`]), within the allowed jump ([`Allowance`]).
//! 2. [`order`]: every plugin's steps interleaved so that after each one every present
//!    plugin's dependencies are met ([`Ordered`]), with why each step is where it is, and the
//!    [`Wave`]s that may run at once.
//! 3. [`plan`]: the two fed from plugins.yaml, the resolution, the index and the host's status,
//!    and their answer dressed as the [`Plan`] an operator reads and the apply engine runs.
//!
//! [`PlanDocument`] is the plan with what it was computed from, its id, the drift seen and the
//! state previews: what `--output json` prints.

mod assemble;
mod document;
mod error;
mod limits;
mod model;
mod order;
mod path;
mod restrained;

pub use assemble::{PlanInput, plan};
pub(crate) use document::host_time;
pub use document::{
    Observed, PLAN_FORMAT, PlanDocument, PlanInputs, PreviewOutcome, RunningInput, StatePreview,
    plan_id, plan_schema,
};
pub use error::{Blocked, JumpRefused, NoOrder, NoPath, PlanError, Unmet};
pub use limits::SearchLimits;
pub use model::{
    Change, ChangeKind, ConfigChange, Kept, KeptBecause, Lift, Plan, PlannedStep, Reason, Refusal,
    StateMigration, StepAction, StrategyWait, Target, VersionAt, Wait, Warning,
};
pub use order::{Because, Involved, Ordered, OrderedStep, Placement, Route, Wave, order};
pub use path::{
    AllowFrom, Allowance, GraphInput, HostCompat, MigrationBy, PathCost, PathStep, RuleSource,
    Running, Transition, UpgradePath, VersionGraph, jump, metadata_of, paths,
};
