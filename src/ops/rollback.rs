//! `plugsync rollback PLUGIN`: an operator going back by hand — and every reconcile told to
//! leave it there.
//!
//! - While the plugin's step is **pending** on the host (switched, soaking), the rollback is
//!   the host's own: the previous instance serves again with the calls made since the switch
//!   replayed into it, losing nothing. The host admits it whoever holds the reconcile lease, so
//!   it stops a step another client (a sidecar) is soaking.
//! - Once the step is **committed**, the previous instance is gone: the rollback is a **planned
//!   downgrade of the live state**, made like any reconcile — a plan from what runs to the
//!   plugin at `--to VERSION` (by default the version it ran before, from this plugsync's
//!   journal), every other plugin pinned where it runs; its path, its state migration previewed
//!   on the live state, shown first; applied with `--yes` by the same engine (preflight, soak,
//!   commit or rollback). A plugin whose running version needs the current one is refused
//!   unless it is carried down too (`--carry PLUGIN@VERSION`), and the plan shows it.
//!
//! Either way the plugin (and what was carried) is then **held** on the host, with who and
//! why: the next reconcile, by any client, keeps it there and says so, until `plugsync release`
//! or a change of its entry in plugins.yaml.

use std::collections::BTreeMap;

use plugsync_host::control::api::{PluginRequest, RestoreRequest, RestraintRequest};
use plugsync_host::{Origin, RollbackReport};
use semver::Version;

use super::apply::{ReconcileOptions, UnderLease, apply_then};
use super::reconcile::Inputs;
use super::restrain::{RestraintChange, acquire, held_text, restrain};
use crate::apply::{ApplyReport, HostPort, StepContext, StepOperation, describe_rollback};
use crate::error::{Error, Result};
use crate::observe::{Observation, Source};
use crate::plan::PreviewOutcome;
use crate::resolve::{self, Update};
use crate::spec::model::PluginSpec;
use crate::store::{RollbackPoint, StepPhase, Store};

use super::Progress;

/// The tool a manual rollback's changes are recorded under on the host.
pub const ROLLBACK_TOOL: &str = "plugsync-rollback";

/// What to roll back, to where, and how.
#[derive(Debug, Clone)]
pub struct RollbackOptions {
    /// The reconcile's own settings: plugins.yaml (its registry, its policy, the entries holds
    /// are set under), the state directory, keys, preflight, lease, time.
    pub apply: ReconcileOptions,
    /// The plugin.
    pub plugin: String,
    /// The version to go back to (default: the one it ran before, from the journal).
    pub to: Option<Version>,
    /// Plugins carried down with it, each to a version: those whose running version needs
    /// the plugin's current one.
    pub carry: Vec<(String, Version)>,
    /// Why (recorded with the hold).
    pub reason: String,
    /// Apply the downgrade (without it, only its plan is shown).
    pub yes: bool,
    /// Also put back the state of the newest rollback point taken at the version gone back
    /// to (its difference from what the downgrade leaves is shown first).
    pub restore_snapshot: bool,
    /// Colour the plan.
    pub styled: bool,
}

/// What a rollback did.
#[derive(Debug, Clone)]
pub enum RollbackOutcome {
    /// The pending step rolled back by the host, and the plugin held: what happened.
    Pending(String),
    /// The downgrade's plan, shown and not applied (no `--yes`).
    Planned(String),
    /// The downgrade applied (or failed, the report says which), and the plugins held if it
    /// was.
    Applied {
        /// Its plan, as shown before it was applied.
        plan: String,
        /// What the apply did.
        report: ApplyReport,
        /// What was held afterwards, for the operator.
        held: Vec<String>,
    },
}

/// Rolls `options.plugin` back on the host behind `port` (see the module docs).
pub fn rollback(
    options: &RollbackOptions,
    port: &dyn HostPort,
    progress: &mut dyn Progress,
) -> Result<RollbackOutcome> {
    let plugin = &options.plugin;
    let running = port.status(false)?;
    let status = (running.status.plugins.iter())
        .find(|p| &p.plugin == plugin)
        .ok_or_else(|| Error::NotRestrainable {
            what: format!(
                "`{plugin}` is not loaded on the host at {}",
                port.describe()
            ),
            fix: "roll back a plugin the host runs (`plugsync status` lists them)".into(),
        })?;
    if let Some(pending) = &status.pending {
        return roll_back_pending(options, port, pending.step_id.as_deref(), progress);
    }
    let mut inputs = Inputs::read(
        &options.apply.file,
        false,
        options.apply.registry_ca.as_deref(),
    )?;
    let to = match &options.to {
        Some(to) => to.clone(),
        None => version_before(&options.apply, plugin, &status.version.version)?,
    };
    check_dependants(options, &running.status, &to)?;
    pin(&mut inputs, options, &running.status, &to)?;

    // The plan, its migrations previewed on the live state; a hold of the plugins moved is the
    // operator's own (a rollback replaces it), so it is not what keeps them.
    let mut observation = Observation {
        source: Source::Host {
            url: port.describe().to_owned(),
        },
        running: port.status(true)?,
    };
    let moved: Vec<&str> = std::iter::once(plugin.as_str())
        .chain(options.carry.iter().map(|(id, _)| id.as_str()))
        .collect();
    let restraints = &mut observation.running.status.restraints;
    restraints
        .holds
        .retain(|id, _| !moved.contains(&id.as_str()));
    let mut document = inputs.plan(observation.clone(), options.apply.now, options.apply.limits)?;
    document.previews = super::preview::previews(
        &document.plan,
        &observation,
        inputs.registry.as_deref(),
        &inputs.index,
        &super::preview::PreviewContext {
            state_dir: &options.apply.state_dir,
            trusted_keys: options.apply.trusted_keys.as_deref(),
            timeout: options.apply.preflight_timeout,
            exe: &options.apply.exe,
        },
    );
    let carried: Vec<String> = (options.carry.iter())
        .map(|(id, version)| format!(", `{id}` to {version}"))
        .collect();
    let mut plan = format!(
        "Rollback of `{plugin}` to {to}{}: every other plugin stays where it runs (plugins.yaml \
         gives the registry and the policy).\n",
        carried.concat()
    );
    plan.push_str(&crate::render::plan_text(&document, options.styled));
    let restore = match options.restore_snapshot {
        true => Some(point_to_restore(options, &to, &document, &observation)?),
        false => None,
    };
    if let Some((point, change)) = &restore {
        plan.push_str(&format!(
            "\nThen restore {}:\n{change}",
            super::gc::describe(point)
        ));
    }
    if !options.yes {
        return Ok(RollbackOutcome::Planned(plan));
    }

    progress.plan(&plan);
    // Held before the lease is given back: no other client (a sidecar healing drift) may
    // reconcile between the rollback and its hold, and undo it.
    let versions: Vec<(&str, String)> = std::iter::once((plugin.as_str(), to.to_string()))
        .chain((options.carry.iter()).map(|(id, version)| (id.as_str(), version.to_string())))
        .collect();
    // The operator's own holds of the plugins moved go under the same lease: a sidecar
    // reconciling between their release and the rollback would move them where they were
    // held away from.
    let held_now: Vec<String> = (moved.iter())
        .filter(|id| running.status.restraints.holds.contains_key(**id))
        .map(|id| (*id).to_owned())
        .collect();
    let mut released = Vec::new();
    let mut held = Vec::new();
    let report = apply_then(
        &inputs,
        &options.apply,
        ROLLBACK_TOOL,
        port,
        progress,
        UnderLease {
            first: &mut |engine| {
                for plugin in &held_now {
                    engine.restrain(&RestraintRequest::Release {
                        plugin: plugin.clone(),
                        by: None,
                    })?;
                    released.push(format!("Released the hold on `{plugin}` to roll it back."));
                }
                Ok(())
            },
            then: &mut |engine| {
                for (id, version) in &versions {
                    let (request, text) = hold_request(options, &inputs.of_record, id, version);
                    engine.restrain(&request)?;
                    held.push(text);
                }
                Ok(())
            },
        },
    )?;
    for text in &released {
        progress.notice(text);
    }
    if !report.failed
        && let Some((point, _)) = &restore
    {
        held.insert(0, restore_point(options, point, port, progress)?);
    }
    Ok(RollbackOutcome::Applied { plan, report, held })
}

/// The newest rollback point of the plugin at `to` that holds a state, and that state's
/// difference from the one the downgrade leaves (its preview), or from the live one.
fn point_to_restore(
    options: &RollbackOptions,
    to: &Version,
    document: &crate::plan::PlanDocument,
    observation: &Observation,
) -> Result<(RollbackPoint, String)> {
    let plugin = &options.plugin;
    let store = Store::open(&options.apply.state_dir)?;
    let version = to.to_string();
    let point = (store.points(Some(plugin))?.into_iter())
        .find(|point| point.version == version && point.state.is_some())
        .ok_or_else(|| Error::NotRestrainable {
            what: format!(
                "no rollback point of `{plugin}` {version} with a state is kept in `{}`",
                options.apply.state_dir.display()
            ),
            fix: "roll back without `--restore-snapshot` (the state is migrated down); \
                  `plugsync status` lists the points kept"
                .into(),
        })?;
    let saved = (point.state.as_ref())
        .map(|snapshot| snapshot.verify())
        .transpose()
        .map_err(|error| Error::NotRestrainable {
            what: format!("the rollback point's state does not verify: {error}"),
            fix: "roll back without `--restore-snapshot`".into(),
        })?
        .unwrap_or_default();
    // What the downgrade's last step of the plugin leaves, as previewed; else what runs now.
    let last = (document.plan.steps.iter()).rfind(|step| &step.plugin == plugin);
    let previewed = last.and_then(|step| {
        let preview = document.previews.iter().find(|p| p.step == step.number)?;
        match &preview.outcome {
            PreviewOutcome::Migrated { state_after, .. } => Some(state_after.clone()),
            _ => None,
        }
    });
    let (before, what) = match previewed {
        Some(state) => (state, "its state against what the downgrade leaves"),
        None => {
            let live = (observation.running.states.as_ref())
                .and_then(|states| states.get(plugin))
                .and_then(|snapshot| snapshot.verify().ok())
                .unwrap_or_default();
            (live, "its state against the live state")
        }
    };
    let change = crate::render::state_change(what, &before, &saved);
    Ok((point, change))
}

/// Puts `point`'s state into the running version (the downgrade left it at the point's
/// version), under the reconcile lease; what was done.
fn restore_point(
    options: &RollbackOptions,
    point: &RollbackPoint,
    port: &dyn HostPort,
    progress: &mut dyn Progress,
) -> Result<String> {
    let Some(snapshot) = &point.state else {
        return Ok(String::new());
    };
    let request = RestoreRequest {
        snapshot: snapshot.clone(),
        origin: Some(Origin {
            tool: ROLLBACK_TOOL.to_owned(),
            ..Origin::default()
        }),
    };
    let body = serde_json::to_value(&request).unwrap_or_default();
    let mut notice = |text: &str| progress.notice(text);
    let epoch = acquire(port, options.apply.no_wait, &mut notice)?;
    // One restore per point: a retry is answered from the host's record.
    let sent = port.step(
        StepOperation::Restore,
        &format!("{}.restore", point.step_id),
        &body,
        Some(epoch),
    );
    let _ = port.lease(&plugsync_host::control::api::LeaseRequest::Release { owner: None, epoch });
    sent?;
    Ok(format!(
        "Restored the state of {} (sha256 {}).",
        super::gc::describe(point),
        snapshot.sha256.short()
    ))
}

/// The host's rollback of the pending step `step_id`, then the hold.
fn roll_back_pending(
    options: &RollbackOptions,
    port: &dyn HostPort,
    step_id: Option<&str>,
    progress: &mut dyn Progress,
) -> Result<RollbackOutcome> {
    let plugin = &options.plugin;
    if options.restore_snapshot {
        return Err(Error::NotRestrainable {
            what: format!(
                "`{plugin}`'s step is still pending: its rollback replays every call into the \
                 previous version, losing nothing, and restores no older snapshot"
            ),
            fix: "roll back without `--restore-snapshot`".into(),
        });
    }
    let Some(step_id) = step_id else {
        return Err(Error::NotRestrainable {
            what: format!(
                "`{plugin}`'s pending step has no step id: it was not asked for through the control API"
            ),
            fix: "roll it back where it was switched".into(),
        });
    };
    let request = PluginRequest {
        plugin: plugin.clone(),
        origin: Some(Origin {
            tool: ROLLBACK_TOOL.to_owned(),
            ..Origin::default()
        }),
        force: None,
    };
    let body = serde_json::to_value(&request).unwrap_or_default();
    let answer = port.step(StepOperation::Rollback, step_id, &body, None)?;
    let report: RollbackReport =
        serde_json::from_value(answer.body).map_err(|error| Error::BadAnswer {
            url: port.describe().to_owned(),
            status: 200,
            reason: format!("not a rollback report: {error}"),
        })?;
    // plugins.yaml is only needed for the entry the hold is set under.
    let of_record = crate::spec::load(&options.apply.file, &crate::spec::Limits::default())
        .map(|desired| desired.set.spec.plugins)
        .unwrap_or_default();
    let held = hold(options, &of_record, plugin, port, progress)?;
    let from = report.from.version.clone();
    Ok(RollbackOutcome::Pending(format!(
        "Rolled back `{plugin}`'s pending step {step_id} ({from}): {}.\n{held}",
        describe_rollback(&report).trim_start_matches("; ")
    )))
}

/// Holds `plugin` where it now runs, under its entry in plugins.yaml (`of_record`). (The
/// host's rollback of a pending step also marks the version failed: a client that reconciles
/// before the hold is set cannot switch back to it.)
fn hold(
    options: &RollbackOptions,
    of_record: &[PluginSpec],
    plugin: &str,
    port: &dyn HostPort,
    progress: &mut dyn Progress,
) -> Result<String> {
    let entry_sha256 = (of_record.iter())
        .find(|spec| spec.id == plugin)
        .map(|spec| spec.fingerprint().to_string());
    let change = RestraintChange::Hold {
        plugin: plugin.to_owned(),
        reason: format!("manual rollback: {}", options.reason),
        entry_sha256,
    };
    let mut notice = |text: &str| progress.notice(text);
    restrain(&change, port, options.apply.no_wait, &mut notice)
}

/// The hold of `plugin` at `version`, under its entry in plugins.yaml (`of_record`), and
/// what it says once set.
fn hold_request(
    options: &RollbackOptions,
    of_record: &[PluginSpec],
    plugin: &str,
    version: &str,
) -> (RestraintRequest, String) {
    let entry_sha256 = (of_record.iter())
        .find(|spec| spec.id == plugin)
        .map(|spec| spec.fingerprint().to_string());
    let text = held_text(plugin, version, entry_sha256.is_some());
    let request = RestraintRequest::Hold {
        plugin: plugin.to_owned(),
        reason: format!("manual rollback: {}", options.reason),
        by: None,
        entry_sha256,
    };
    (request, text)
}

/// The version `plugin` ran before `running`: the `from` of the last step this plugsync
/// committed that took it to `running`.
fn version_before(options: &ReconcileOptions, plugin: &str, running: &str) -> Result<Version> {
    let store = Store::open(&options.state_dir)?;
    let mut contexts: BTreeMap<String, StepContext> = BTreeMap::new();
    let mut before = None;
    for journaled in store.records(0)? {
        let record = &journaled.record;
        if record.plugin != plugin {
            continue;
        }
        match record.phase {
            StepPhase::Planned => {
                if let Ok(context) = serde_json::from_value(record.detail.clone()) {
                    contexts.insert(record.step_id.clone(), context);
                }
            }
            StepPhase::Done => {
                let Some(context) = contexts.get(&record.step_id) else {
                    continue;
                };
                if let (Some(from), Some(to)) = (&context.from, &context.to)
                    && to.version == running
                    && from.version != running
                {
                    before = Some(from.version.clone());
                }
            }
            _ => {}
        }
    }
    let before = before.ok_or_else(|| Error::NotRestrainable {
        what: format!(
            "this plugsync's journal ({}) records no step that took `{plugin}` to {running}",
            options.state_dir.display()
        ),
        fix: "say which version to go back to with `--to VERSION`".into(),
    })?;
    Version::parse(&before).map_err(|error| Error::NotRestrainable {
        what: format!("the journal's version `{before}` of `{plugin}` does not parse: {error}"),
        fix: "say which version to go back to with `--to VERSION`".into(),
    })
}

/// Refuses a rollback that would leave a running plugin's requirement on it unmet, unless
/// that plugin is carried down too.
fn check_dependants(
    options: &RollbackOptions,
    running: &plugsync_host::RuntimeStatus,
    to: &Version,
) -> Result<()> {
    let plugin = &options.plugin;
    for dependant in &running.plugins {
        if options.carry.iter().any(|(id, _)| id == &dependant.plugin) {
            continue;
        }
        let Some(requirement) = dependant.metadata.dependencies.get(plugin) else {
            continue;
        };
        let met = semver::VersionReq::parse(requirement).is_ok_and(|req| req.matches(to));
        if !met {
            return Err(Error::RollbackBreaksDependant {
                plugin: plugin.clone(),
                to: to.to_string(),
                dependant: dependant.plugin.clone(),
                version: dependant.version.version.clone(),
                requirement: requirement.clone(),
            });
        }
    }
    Ok(())
}

/// The rollback's own desired set: every plugin plugins.yaml names pinned where it runs (its
/// config as it runs), but the plugin rolled back and those carried, pinned to their versions;
/// nothing installed, nothing removed.
fn pin(
    inputs: &mut Inputs,
    options: &RollbackOptions,
    running: &plugsync_host::RuntimeStatus,
    to: &Version,
) -> Result<()> {
    let mut targets: BTreeMap<&str, &Version> = BTreeMap::from([(options.plugin.as_str(), to)]);
    for (id, version) in &options.carry {
        targets.insert(id, version);
    }
    let spec = &mut inputs.desired.set.spec;
    for id in targets.keys() {
        if !spec.plugins.iter().any(|p| p.id == *id) {
            return Err(Error::NotRestrainable {
                what: format!("`{id}` is not named in {}", options.apply.file.display()),
                fix: "a rollback takes its versions from the registry plugins.yaml names: name \
                      the plugin there"
                    .into(),
            });
        }
    }
    spec.policy.prune = false;
    spec.plugins
        .retain(|p| running.plugins.iter().any(|r| r.plugin == p.id));
    for entry in &mut spec.plugins {
        let version = match targets.get(entry.id.as_str()) {
            Some(version) => (*version).clone(),
            None => {
                let Some(runs) = running.plugins.iter().find(|r| r.plugin == entry.id) else {
                    continue;
                };
                Version::parse(&runs.version.version).map_err(|error| Error::NotRestrainable {
                    what: format!("`{}` runs `{}`: {error}", entry.id, runs.version.version),
                    fix: "roll it back through the control API".into(),
                })?
            }
        };
        entry.version = Some(version);
        entry.channel = None;
        entry.constraint = None;
        entry.config = None;
    }
    inputs.lock = None;
    inputs.resolution = resolve::resolve(&inputs.desired.set, &inputs.index, None, &Update::None)
        .map_err(|error| Error::Resolve(Box::new(error)))?;
    Ok(())
}
