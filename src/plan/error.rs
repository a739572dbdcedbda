//! Why a plan cannot be made, each with its fix.

use std::fmt;

use semver::{Version, VersionReq};

use super::path::Allowance;
use crate::spec::model::Jump;

/// Why the planner cannot take the plugins from what runs to what plugins.yaml asks.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PlanError {
    /// The host cannot run the target version.
    #[error(
        "`{plugin}` {version} cannot run in this host: {reason}; publish a version built for it, \
         or pin one that is"
    )]
    HostIncompatible {
        /// The plugin.
        plugin: String,
        /// The version, as published.
        version: String,
        /// Why, in words.
        reason: String,
    },
    /// The resolution has no version for a plugin plugins.yaml names (the resolution given is
    /// not this plugins.yaml's).
    #[error(
        "plugin `{plugin}` has no resolved version: the resolution is not this plugins.yaml's; \
         resolve it again"
    )]
    NotResolved {
        /// The plugin.
        plugin: String,
    },
    /// The index lacks the target version.
    #[error(
        "`{plugin}` {version} is not in the registry's index: resolve again against this index \
         (`plugsync lock`)"
    )]
    TargetNotPublished {
        /// The plugin.
        plugin: String,
        /// The target version.
        version: Version,
    },
    /// A step needs a jump the allowance refuses.
    #[error("{0}")]
    JumpNotAllowed(Box<JumpRefused>),
    /// No switch or chain of switches the host accepts reaches the target.
    #[error("{0}")]
    NoPath(Box<NoPath>),
    /// No order of the steps keeps every dependency met after each one.
    #[error("{0}")]
    NoOrder(Box<NoOrder>),
    /// The set the plan ends with leaves a dependency unmet.
    #[error(
        "when every step has run, {0}: change plugins.yaml so that the versions agree \
         (`plugsync lock` checks them)"
    )]
    FinalUnmet(Box<Unmet>),
    /// The ordering visited as many states as it may before finding an order.
    #[error(
        "no order of the {steps} steps was found within the search budget of {budget} states: \
         raise the budget (`node_budget`), or make fewer changes at once"
    )]
    SearchBudgetExhausted {
        /// The budget, in states.
        budget: usize,
        /// The steps to order.
        steps: usize,
    },
    /// A plugin given twice to the ordering.
    #[error("`{plugin}` is given twice to the ordering: give each plugin once")]
    DuplicatePlugin {
        /// The plugin.
        plugin: String,
    },
    /// The host's framework version cannot be read.
    #[error("the host reports framework `{value}`, which is not a semantic version: {reason}")]
    BadHostFramework {
        /// As reported.
        value: String,
        /// Why it cannot be read.
        reason: String,
    },
    /// An index entry that cannot be read.
    #[error(
        "the registry's index entry for `{plugin}` {version} has a bad `{field}` `{value}`: \
         {reason}; republish it with `plugsync publish`"
    )]
    BadIndexEntry {
        /// The plugin.
        plugin: String,
        /// The entry's version, as written.
        version: String,
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The running version's metadata cannot be read.
    #[error(
        "the host reports `{plugin}` {version} with a bad `{field}` `{value}`: {reason}; replace \
         it with a version built by the current SDK"
    )]
    BadRunning {
        /// The plugin.
        plugin: String,
        /// Its version, as reported.
        version: String,
        /// The field.
        field: &'static str,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A step whose jump the allowance refuses, on the only way to the target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{plugin}` from {from} to {to} is a {} jump, but `{plugin}` allows `{}` ({}): pin \
     `version: {target}` in plugins.yaml or set `allow: {}`",
    jump.name(), allow.jump.name(), allow.from, jump.name()
)]
pub struct JumpRefused {
    /// The plugin.
    pub plugin: String,
    /// The version the step starts from.
    pub from: Version,
    /// The version it switches to.
    pub to: Version,
    /// Its jump.
    pub jump: Jump,
    /// The allowance, and where it comes from.
    pub allow: Allowance,
    /// The target version.
    pub target: Version,
}

/// No chain of switches the host accepts reaches the target.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NoPath {
    /// The plugin.
    pub plugin: String,
    /// The running version.
    pub from: Version,
    /// The target.
    pub to: Version,
    /// What the versions declare, in words (`2.1.0 migrates from `>=2.0, <3` only`).
    pub declared: String,
    /// The published versions between them left out, each with why (`2.0.0 is yanked`).
    pub excluded: Vec<String>,
}

impl fmt::Display for NoPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let NoPath {
            plugin, from, to, ..
        } = self;
        write!(
            f,
            "no transition reaches `{plugin}` {to} from {from}: {}, and no published version \
             between them connects",
            self.declared
        )?;
        if !self.excluded.is_empty() {
            write!(f, " ({})", self.excluded.join("; "))?;
        }
        if to < from {
            write!(f, ": publish a version that declares a downgrade to {to}")?;
        } else {
            write!(f, ": publish a version that migrates from {from}")?;
        }
        write!(
            f,
            ", add a migration from {from} to {to} to its `migrations` in plugins.yaml, or set \
             `update.freshState: {to}` to start it from a fresh state"
        )
    }
}

/// A dependency left unmet: a plugin's version needs another plugin within a requirement.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Unmet {
    /// The plugin that needs.
    pub dependant: String,
    /// Its version.
    #[schemars(with = "String")]
    pub dependant_version: Version,
    /// The plugin it needs.
    pub dependency: String,
    /// The requirement.
    #[schemars(with = "String")]
    pub requirement: VersionReq,
    /// The dependency's version then; `None` when it is absent.
    #[schemars(with = "Option<String>")]
    pub found: Option<Version>,
}

impl fmt::Display for Unmet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Unmet {
            dependant,
            dependant_version,
            dependency,
            requirement,
            found,
        } = self;
        write!(
            f,
            "`{dependant}` {dependant_version} needs `{dependency} {requirement}`, but "
        )?;
        match found {
            Some(version) => write!(f, "`{dependency}` is at {version}"),
            None => write!(f, "`{dependency}` is absent"),
        }
    }
}

/// A step the ordering could not take, and the requirement it would break.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Blocked {
    /// The plugin the step changes.
    pub plugin: String,
    /// Its version before (`None`: an install).
    pub from: Option<Version>,
    /// Its version after (`None`: a remove).
    pub to: Option<Version>,
    /// The requirement the step would leave unmet.
    pub unmet: Unmet,
}

impl fmt::Display for Blocked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Unmet {
            dependant,
            dependant_version,
            dependency,
            requirement,
            ..
        } = &self.unmet;
        if *dependant == self.plugin {
            // The step's own new version needs what is not there.
            return write!(
                f,
                "`{dependant}` {dependant_version} needs `{dependency} {requirement}`"
            );
        }
        match &self.to {
            Some(to) => write!(
                f,
                "`{}` {to} cannot run beside `{dependant}` {dependant_version}, which needs \
                 `{dependency} {requirement}`",
                self.plugin
            ),
            None => write!(
                f,
                "`{}` cannot be removed while `{dependant}` {dependant_version} needs \
                 `{dependency} {requirement}`",
                self.plugin
            ),
        }
    }
}

/// No order of the steps keeps every dependency met: the steps that block each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct NoOrder {
    /// A step that cannot be taken.
    pub blocked: Blocked,
    /// The step of the plugin it waits for, itself blocked by the first plugin: the blocking
    /// pair. `None` when the first waits for a plugin that has no step to take.
    pub other: Option<Blocked>,
}

impl fmt::Display for NoOrder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "no order of the steps keeps every dependency met: {}",
            self.blocked
        )?;
        match &self.other {
            Some(other) => write!(
                f,
                ", but {other}: publish a version of `{}` or `{}` that runs beside the other's \
                 current version, or change them in two reconciles (switching both at once is \
                 not supported yet)",
                self.blocked.plugin, other.plugin
            ),
            None => {
                let unmet = &self.blocked.unmet;
                let other = if unmet.dependant == self.blocked.plugin {
                    &unmet.dependency
                } else {
                    &unmet.dependant
                };
                match (&unmet.found, unmet.dependant == self.blocked.plugin) {
                    (Some(found), true) => write!(f, " and `{other}` stays at {found}")?,
                    (None, true) => write!(f, " and `{other}` is absent")?,
                    _ => {}
                }
                write!(
                    f,
                    ": publish a version of `{}` that runs beside `{other}`'s, or change \
                     `{other}` in plugins.yaml too",
                    self.blocked.plugin
                )
            }
        }
    }
}
