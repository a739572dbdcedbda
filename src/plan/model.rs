//! What a plan says: per plugin the change, the steps in order, the waves, and what could hold
//! or stop them. Data only: [`super::plan`] computes it, `render` prints it.

use std::fmt;

use plugsync_host::{Because, Digest, MigrationRule};
use schemars::JsonSchema;
use semver::Version;
use serde::Serialize;
use serde_json::Value;

use crate::resolve::Why;
use crate::spec::model::{Fallback, Jump, OnFailure, Strategy, Verify};

/// The plan: what `plugsync reconcile` would do, in order.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// One entry per plugin plugins.yaml names (in its order), then the plugins the host runs
    /// that it does not name.
    pub changes: Vec<Change>,
    /// The steps, in the order they would be taken.
    pub steps: Vec<PlannedStep>,
    /// The steps grouped into waves that may run together (at most `policy.maxParallel`
    /// each), by step number.
    pub waves: Vec<Vec<usize>>,
    /// What the steps would wait for before they start.
    pub waits: Vec<Wait>,
    /// What the host would refuse, and who set it.
    pub refusals: Vec<Refusal>,
    /// Holds and failed marks plugins.yaml has moved past (their plugin's entry changed since
    /// they were set): lifted before the steps.
    pub lifts: Vec<Lift>,
    /// What the operator should know, though nothing stops.
    pub warnings: Vec<Warning>,
}

impl Plan {
    /// Whether there is nothing to do: no step to take, no restraint to lift. (A plugin kept
    /// where it is by a hold or a failed mark is not out of sync: it is where the host's
    /// restraints say it must stay.)
    pub fn in_sync(&self) -> bool {
        self.steps.is_empty() && self.lifts.is_empty()
    }

    /// The plugins kept where they are although plugins.yaml asks otherwise.
    pub fn kept(&self) -> impl Iterator<Item = (&Change, &Kept)> {
        (self.changes.iter()).filter_map(|change| Some((change, change.kept.as_ref()?)))
    }

    /// How many plugins change by `kind`.
    pub fn count(&self, kind: ChangeKind) -> usize {
        self.changes.iter().filter(|c| c.kind == kind).count()
    }
}

/// A version of a plugin, and its artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionAt {
    /// The version.
    #[serde(serialize_with = "display")]
    #[schemars(with = "String")]
    pub version: Version,
    /// Its artifact's sha256.
    #[schemars(with = "String")]
    pub sha256: Digest,
}

impl fmt::Display for VersionAt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.version.fmt(f)
    }
}

/// What happens to one plugin.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// The plugin.
    pub plugin: String,
    /// The kind of change.
    pub kind: ChangeKind,
    /// What runs now (`None`: not loaded).
    pub from: Option<VersionAt>,
    /// What will run (`None`: removed, or not named by plugins.yaml).
    pub to: Option<VersionAt>,
    /// Why that version (`None` for a plugin plugins.yaml does not name).
    pub why: Option<Why>,
    /// The versions stepped through on the way, in order.
    #[schemars(with = "Vec<String>")]
    #[serde(serialize_with = "displays")]
    pub via: Vec<Version>,
    /// Its steps, by number.
    pub steps: Vec<usize>,
    /// The running config's hash and the desired one's, when they differ.
    pub config: Option<ConfigChange>,
    /// Why it stays where it is, though plugins.yaml asks otherwise (kind `kept`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept: Option<Kept>,
}

/// A plugin that stays where it is although plugins.yaml asks otherwise: the host's restraints
/// keep it, or keep a plugin it depends on (or that depends on it). Not retried, not undone;
/// the rest of the plan goes on without it.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Kept {
    /// What plugins.yaml asks for it (`None`: a removal).
    pub wanted: Option<VersionAt>,
    /// Why it stays.
    pub because: KeptBecause,
}

/// Why a plugin stays where it is.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum KeptBecause {
    /// Held at its running version (a manual rollback), until released or until its entry in
    /// plugins.yaml changes.
    Held {
        /// Who, why and when.
        because: Because,
    },
    /// The version plugins.yaml asks for is marked failed on this host: not retried until
    /// cleared (`plugsync retry`) or until its entry in plugins.yaml changes.
    Failed {
        /// The version marked.
        version: String,
        /// What failed, by whom and when.
        because: Because,
    },
    /// The version it would move to needs a version of a plugin that stays.
    Needs {
        /// The plugin that stays.
        plugin: String,
        /// What the new version needs of it.
        requirement: String,
    },
    /// Its strategy is `scheduled` and the time has not come: it moves at the first reconcile
    /// from then on (`plugsync run` plans again at that time).
    #[serde(rename_all = "camelCase")]
    Scheduled {
        /// `at` as plugins.yaml gives it.
        at: String,
        /// The instant it may move from (RFC 3339, UTC).
        not_before: String,
        /// How long from the plan's time until then (`2h 5m`).
        wait: String,
    },
    /// A plugin that stays needs it as it runs now.
    NeededBy {
        /// The plugin that stays.
        plugin: String,
        /// What that plugin needs of this one.
        requirement: String,
    },
}

/// A hold or a failed mark that plugins.yaml has moved past: its plugin's entry changed since
/// it was set. The apply lifts it before the steps, then plans with it gone.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Lift {
    /// A hold released.
    Hold {
        /// The plugin.
        plugin: String,
        /// Who set it, why and when.
        because: Because,
    },
    /// A failed mark cleared.
    Failed {
        /// The plugin.
        plugin: String,
        /// The version marked.
        version: String,
        /// The artifact marked.
        #[schemars(with = "String")]
        sha256: Digest,
        /// What failed, by whom and when.
        because: Because,
    },
}

/// The config a change leaves, beside the running one.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigChange {
    /// The running config.
    pub running: Value,
    /// The config plugins.yaml asks for.
    pub desired: Value,
}

/// The kind of a plugin's change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// Not loaded; will be.
    Install,
    /// To a newer version.
    Upgrade,
    /// To an older version.
    Downgrade,
    /// The same version with another config or build.
    Reconfigure,
    /// Loaded, not named by plugins.yaml, and `policy.prune` is on: unloaded.
    Remove,
    /// Runs what plugins.yaml asks.
    Unchanged,
    /// Loaded, not named by plugins.yaml, kept (`policy.prune` is off).
    Unmanaged,
    /// Stays where it is though plugins.yaml asks otherwise: a hold, a failed mark, or a
    /// plugin it depends on that stays ([`Change::kept`] says which).
    Kept,
}

impl ChangeKind {
    /// The sign a plan prints before the plugin (`+` install, `~` change, `-` remove).
    pub fn sign(self) -> char {
        match self {
            ChangeKind::Install => '+',
            ChangeKind::Upgrade | ChangeKind::Downgrade | ChangeKind::Reconfigure => '~',
            ChangeKind::Remove => '-',
            ChangeKind::Unchanged | ChangeKind::Unmanaged => ' ',
            ChangeKind::Kept => '=',
        }
    }
}

/// One step: one plugin moved by one transition the host accepts.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlannedStep {
    /// Its number, from 1.
    pub number: usize,
    /// The plugin.
    pub plugin: String,
    /// What the step does.
    pub action: StepAction,
    /// What runs before it (`None`: an install).
    pub from: Option<VersionAt>,
    /// What runs after it (`None`: a removal).
    pub to: Option<Target>,
    /// The semver distance of the step (`None` for an install or a removal).
    pub jump: Option<Jump>,
    /// How the plugin's state crosses the step (`None` for an install or a removal).
    pub migration: Option<StateMigration>,
    /// The config sent with the step. `None`: the host migrates the running config (an
    /// intermediate step, or plugins.yaml gives none).
    pub config: Option<Value>,
    /// Why the step is taken, and why here.
    pub reasons: Vec<Reason>,
    /// When it switches.
    pub strategy: Strategy,
    /// What is checked before and after the switch.
    pub verify: Option<Verify>,
    /// What a `when-idle` or `when-flat` switch waits for, and how the plugin stands now;
    /// `None` for the other strategies and for installs and removals.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<StrategyWait>,
    /// What a failure leaves.
    pub on_failure: OnFailure,
}

/// What a step's switch waits for (its strategy), and the host's answer when the plan was
/// made: whether it would switch at once, or wait up to its deadline.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", tag = "for")]
pub enum StrategyWait {
    /// `when-idle`: no call for `idle_for`.
    #[serde(rename_all = "camelCase")]
    Idle {
        /// How long without a call (`5s`).
        idle_for: String,
        /// How long ago its last call was: the host's clock now against the host time that
        /// call was given (`None`: no call yet).
        idle_ms: Option<u64>,
        /// Whether it has been idle long enough now.
        met: bool,
        /// The longest the step waits (`30m`).
        deadline: String,
        /// What then.
        fallback: Fallback,
    },
    /// `when-flat`: the plugin says it holds no position and no working order.
    #[serde(rename_all = "camelCase")]
    Flat {
        /// What it answers now (`None`: the host did not say, or the plugin is not loaded).
        answer: Option<plugsync_host::SwapSafeAnswer>,
        /// Whether that answer lets it switch now.
        met: bool,
        /// The longest the step waits.
        deadline: String,
        /// What then.
        fallback: Fallback,
    },
}

impl PlannedStep {
    /// Whether the step starts the plugin from a fresh state (its positions discarded).
    pub fn discards_state(&self) -> bool {
        matches!(self.migration, Some(StateMigration::Fresh))
    }
}

/// What a step does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum StepAction {
    /// Load a plugin not loaded.
    Install,
    /// Switch to a newer version.
    Upgrade,
    /// Switch to an older version.
    Downgrade,
    /// Switch to the same version with another config or build.
    Reconfigure,
    /// Unload the plugin.
    Remove,
}

/// The version a step goes to, and where its artifact is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Target {
    /// The version and sha256.
    #[serde(flatten)]
    pub at: VersionAt,
    /// Its artifact's path in the registry.
    pub file: String,
    /// The publisher's signature, if signed.
    pub signature: Option<String>,
}

/// How a step carries the plugin's state across.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", tag = "by")]
pub enum StateMigration {
    /// A version's own `migrate`: the target's going up, the running version's going down.
    #[serde(rename_all = "camelCase")]
    Plugin {
        /// Whose `migrate` runs.
        #[serde(serialize_with = "display")]
        #[schemars(with = "String")]
        version: Version,
    },
    /// Declarative migration rules (sent with the switch).
    #[serde(rename_all = "camelCase")]
    Rules {
        /// Where the rules come from: `plugins.yaml`, or the published version whose index
        /// entry carries them.
        source: String,
        /// The rules, in order.
        rules: Vec<MigrationRule>,
    },
    /// None: the step starts from a fresh state (`update.freshState`); the positions the
    /// plugin held are discarded.
    Fresh,
}

/// Why a step is taken, or why it is where it is in the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Reason {
    /// plugins.yaml pins the version.
    Pinned,
    /// The highest version its channel offers (within its constraint).
    Channel {
        /// The channel.
        channel: String,
    },
    /// plugins.lock names the version.
    Locked,
    /// An intermediate version on the way to the target (no transition reaches the target
    /// from what runs directly).
    Toward {
        /// The target.
        #[serde(serialize_with = "display")]
        #[schemars(with = "String")]
        target: Version,
    },
    /// The step must come after another: the version it goes to needs what that step
    /// brings.
    After {
        /// The plugin needed.
        dependency: String,
        /// What the new version requires of it.
        requirement: String,
        /// The step that meets it.
        step: usize,
    },
    /// The step must come before another: the version it leaves needs what that step
    /// removes, so it moves first.
    Before {
        /// The version it leaves.
        #[serde(serialize_with = "display")]
        #[schemars(with = "String")]
        version: Version,
        /// The plugin needed.
        dependency: String,
        /// What the version it leaves requires of it.
        requirement: String,
        /// The later step that breaks it.
        step: usize,
    },
    /// plugins.yaml does not name the plugin and `policy.prune` is on.
    Prune,
    /// The same version, another config.
    Config,
    /// The same version, another build (sha256).
    Rebuild,
}

/// Something the steps would wait for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Wait {
    /// A policy window closes updates now.
    #[serde(rename_all = "camelCase")]
    Window {
        /// The deny windows open now, by name.
        denied_by: Vec<String>,
        /// The allow windows, when none is open now.
        outside: Vec<String>,
        /// When updates may next happen (RFC 3339, UTC), if within eight days.
        until: Option<String>,
        /// The same, in the zone of the window that decides it (`16:00 America/New_York`, or
        /// `Mon 09:30 …` on another day).
        until_local: Option<String>,
        /// How long from the plan's time until then (`6h 30m`).
        wait: Option<String>,
    },
    /// A step is in progress on the host (switched, not yet committed or rolled back).
    #[serde(rename_all = "camelCase")]
    PendingStep {
        /// The plugin.
        plugin: String,
        /// The step's id, if the client gave one.
        step_id: Option<String>,
    },
    /// Another client holds the host's reconcile lease.
    Lease {
        /// The client holding it.
        holder: String,
    },
}

/// What the host would refuse, and who set it. (Holds and failed marks refuse nothing: the
/// plugins they restrain are [`Kept`], and the rest of the plan goes on.)
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Refusal {
    /// The host is frozen: every step is refused.
    Freeze {
        /// Who froze it, why and when.
        because: Because,
    },
}

/// Something the operator should know, though nothing stops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Warning {
    /// The plan maps more versions of a plugin than the host keeps resident (code is never
    /// unmapped: the host refuses a load past its cap).
    ResidentCap {
        /// The plugin.
        plugin: String,
        /// Versions resident after the plan.
        resident: usize,
        /// The host's cap.
        cap: usize,
    },
    /// A strategy the apply engine does not run yet: `plugsync reconcile` refuses the step.
    StrategyNotSupported {
        /// The plugin.
        plugin: String,
        /// Its strategy.
        strategy: String,
    },
    /// A plugin with steps was busy when the host was observed (a long call or another
    /// operation held it): its entry is what it showed last.
    Busy {
        /// The plugin.
        plugin: String,
    },
    /// A plugin with steps has a call running past the host's call watchdog: a switch waits
    /// for the slot that call holds (a call cannot be cancelled in-process).
    #[serde(rename_all = "camelCase")]
    Stuck {
        /// The plugin.
        plugin: String,
        /// How long the call had run, in milliseconds.
        running_ms: u64,
    },
    /// A dependency unmet already in the running set (the plan does not make it worse, and
    /// its last step meets it).
    UnmetNow {
        /// The dependant.
        plugin: String,
        /// What it needs.
        needs: String,
    },
}

fn display<S: serde::Serializer>(value: &impl fmt::Display, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(value)
}

fn displays<S: serde::Serializer>(values: &[Version], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(values.iter().map(ToString::to_string))
}
