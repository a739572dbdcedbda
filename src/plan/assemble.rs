//! From plugins.yaml, the resolution, the registry index and what the host runs to a [`Plan`]:
//! the core ([`VersionGraph`], [`paths`], [`order`]) fed per plugin, and its answer dressed as
//! steps an operator reads and the apply engine runs — each with its config, reasons,
//! strategy and verification — plus what would make the plan wait or be refused.
//!
//! Pure, like the core: `now` is an argument.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use jiff::Timestamp;
use plugsync_host::{
    Digest, PluginMetadata, PluginStatus, RuntimeStatus, SwapSafeAnswer, TransitionKind,
};
use plugsync_plugin::canonical_json;
use semver::{Version, VersionReq};
use serde_json::Value;

use super::error::PlanError;
use super::limits::SearchLimits;
use super::model::{
    Change, ChangeKind, ConfigChange, Kept, KeptBecause, Plan, PlannedStep, Reason, Refusal,
    StateMigration, StepAction, StrategyWait, Target, VersionAt, Wait, Warning,
};
use super::order::{Because, Involved, Placement, order};
use super::path::{
    Allowance, GraphInput, HostCompat, MigrationBy, PathStep, RuleSource, Running, UpgradePath,
    VersionGraph, paths,
};
use super::restrained::{Move, Standing, keep_dependants};
use crate::registry::{IndexEntry, IndexFile};
use crate::resolve::{Resolution, Resolved, Why};
use crate::spec::model::{Migration, OnFailure, PluginSet, PluginSpec, Strategy};
use crate::spec::windows;

/// What a plan is computed from.
#[derive(Debug, Clone, Copy)]
pub struct PlanInput<'a> {
    /// plugins.yaml, merged.
    pub set: &'a PluginSet,
    /// The versions it resolves to.
    pub resolution: &'a Resolution,
    /// Each plugin's published versions, by id.
    pub index: &'a BTreeMap<String, IndexFile>,
    /// What the host runs.
    pub running: &'a RuntimeStatus,
    /// plugins.yaml's own entries, which the host's holds and failed marks are judged by:
    /// `set`'s, except for a manual rollback, which plans from a set of its own.
    pub of_record: &'a [PluginSpec],
    /// The time the plan is for (policy windows).
    pub now: Timestamp,
    /// How far the search may go.
    pub limits: SearchLimits,
}

/// One plugin of the plan, before ordering.
struct Planned<'a> {
    id: String,
    spec: Option<&'a PluginSpec>,
    running: Option<&'a PluginStatus>,
    resolved: Option<&'a Resolved>,
    /// Its upgrade paths (empty for an install, a removal or no change).
    paths: Vec<UpgradePath>,
    kind: ChangeKind,
    config: Option<ConfigChange>,
    /// Where its change would leave it, as the ordering sees it.
    end: Option<Placement>,
    /// Why it stays where it is, if the host's restraints keep it.
    kept: Option<KeptBecause>,
}

/// The plan that takes the host from what it runs to what `input.set` asks (see the module
/// docs).
pub fn plan(input: &PlanInput<'_>) -> Result<Plan, PlanError> {
    let running = input.running;
    let host = HostCompat::of_status(running.abi, &running.framework)?;
    let spec = &input.set.spec;
    let mut planned = Vec::new();
    let mut involved = Vec::new();
    // By id, so that thousands of plugins cost no more than their number.
    let resolved_of: HashMap<&str, &Resolved> = (input.resolution.plugins.iter())
        .map(|r| (r.id.as_str(), r))
        .collect();
    let status_of: HashMap<&str, &PluginStatus> = (running.plugins.iter())
        .map(|p| (p.plugin.as_str(), p))
        .collect();
    let named: BTreeSet<&str> = spec.plugins.iter().map(|p| p.id.as_str()).collect();
    let standing = Standing::of(&running.restraints, input.of_record);
    for plugin in &spec.plugins {
        let resolved = resolved_of
            .get(plugin.id.as_str())
            .copied()
            .ok_or_else(|| PlanError::NotResolved {
                plugin: plugin.id.clone(),
            })?;
        let status = status_of.get(plugin.id.as_str()).copied();
        let entry = entry(input.index, &plugin.id, &resolved.sha256);
        let desired_config = plugin.config.clone();
        let target = Placement {
            version: resolved.version.clone(),
            dependencies: requirements(entry.map(|e| &e.dependencies)),
        };
        let Some(status) = status else {
            involved.push(Involved::install(&plugin.id, target.clone()));
            planned.push(Planned {
                id: plugin.id.clone(),
                spec: Some(plugin),
                running: None,
                resolved: Some(resolved),
                paths: Vec::new(),
                kind: ChangeKind::Install,
                config: None,
                kept: standing.keeps(&plugin.id, None, &resolved.sha256, true),
                end: Some(target),
            });
            continue;
        };
        let config_differs = desired_config
            .as_ref()
            .is_some_and(|config| config_hash(config) != Some(status.config_hash));
        let allow = Allowance::of(plugin, &spec.policy, &spec.defaults);
        let empty = IndexFile {
            plugin: plugin.id.clone(),
            versions: Vec::new(),
        };
        let full = input.index.get(&plugin.id).unwrap_or(&empty);
        let graph_of = |index: &IndexFile| -> Result<(VersionGraph, Vec<UpgradePath>), PlanError> {
            let graph = VersionGraph::build(&GraphInput::of(
                plugin,
                spec,
                &allow,
                Running {
                    metadata: &status.metadata,
                    sha256: status.version.digest,
                    config_differs,
                },
                resolved,
                index,
                &host,
            ))?;
            let found = paths(&graph, input.limits.k_paths)?;
            Ok((graph, found))
        };
        // A version marked failed is not one to step through (the target is judged below);
        // when no path is left without one, the plugin stays, kept by the first on its way.
        let marked = |v: &IndexEntry| {
            v.sha256 != resolved.sha256
                && v.sha256 != status.version.digest
                && standing.failed(&plugin.id, &v.sha256)
        };
        let mut through_marked = None;
        let (graph, found) = if full.versions.iter().any(marked) {
            let unmarked = IndexFile {
                plugin: full.plugin.clone(),
                versions: (full.versions.iter())
                    .filter(|v| !marked(v))
                    .cloned()
                    .collect(),
            };
            match graph_of(&unmarked) {
                Ok(planned) => planned,
                Err(_) => {
                    let (graph, found) = graph_of(full)?;
                    through_marked = (found.first().into_iter())
                        .flat_map(|path| &path.steps)
                        .find_map(|step| standing.failed.get(&step.sha256))
                        .map(|mark| KeptBecause::Failed {
                            version: mark.version.clone(),
                            because: mark.because.clone(),
                        });
                    (graph, found)
                }
            }
        } else {
            graph_of(full)?
        };
        let running_version = parse(&status.metadata.version);
        let kind = match running_version.as_ref().map(|v| resolved.version.cmp(v)) {
            Some(std::cmp::Ordering::Greater) => ChangeKind::Upgrade,
            Some(std::cmp::Ordering::Less) => ChangeKind::Downgrade,
            _ if found.first().is_some_and(|p| !p.steps.is_empty()) => ChangeKind::Reconfigure,
            _ => ChangeKind::Unchanged,
        };
        let config = match (config_differs, &desired_config) {
            (true, Some(desired)) => Some(ConfigChange {
                running: status.config.clone(),
                desired: desired.clone(),
            }),
            _ => None,
        };
        involved.push(match kind {
            ChangeKind::Unchanged => Involved::fixed(&plugin.id, placement(&status.metadata)),
            _ => Involved::upgrade(&graph, &found),
        });
        let moves = kind != ChangeKind::Unchanged;
        planned.push(Planned {
            id: plugin.id.clone(),
            spec: Some(plugin),
            running: Some(status),
            resolved: Some(resolved),
            paths: found,
            kind,
            config,
            kept: (standing.keeps(
                &plugin.id,
                Some(&status.version.digest),
                &resolved.sha256,
                moves,
            ))
            .or(through_marked.filter(|_| moves))
            .or_else(|| scheduled(input, plugin).filter(|_| moves)),
            end: Some(match moves {
                true => target,
                false => placement(&status.metadata),
            }),
        });
    }
    // The plugins the host runs that plugins.yaml does not name.
    for status in &running.plugins {
        if named.contains(status.plugin.as_str()) {
            continue;
        }
        let kind = match spec.policy.prune {
            true => ChangeKind::Remove,
            false => ChangeKind::Unmanaged,
        };
        involved.push(match kind {
            ChangeKind::Remove => Involved::remove(&status.plugin, placement(&status.metadata)),
            _ => Involved::fixed(&status.plugin, placement(&status.metadata)),
        });
        planned.push(Planned {
            id: status.plugin.clone(),
            spec: None,
            running: Some(status),
            resolved: None,
            paths: Vec::new(),
            kind,
            config: None,
            kept: None,
            end: match kind {
                ChangeKind::Remove => None,
                _ => Some(placement(&status.metadata)),
            },
        });
    }
    keep_restrained(&mut planned, &mut involved);

    let max_parallel = spec.policy.max_parallel.unwrap_or(1) as usize;
    let ordered = order(&involved, max_parallel, &input.limits)?;

    let mut steps: Vec<PlannedStep> = Vec::with_capacity(ordered.steps.len());
    let mut last_step_of: HashMap<&str, usize> = HashMap::new();
    for ordered_step in &ordered.steps {
        last_step_of.insert(&ordered_step.plugin, ordered_step.number);
    }
    let place: HashMap<&str, usize> = (planned.iter().enumerate())
        .map(|(at, plugin)| (plugin.id.as_str(), at))
        .collect();
    for ordered_step in &ordered.steps {
        let Some(plugin) = place
            .get(ordered_step.plugin.as_str())
            .map(|&at| &planned[at])
        else {
            continue;
        };
        let last = last_step_of.get(plugin.id.as_str()) == Some(&ordered_step.number);
        let body = match plugin.kind {
            ChangeKind::Install => StepBody::install(plugin),
            ChangeKind::Remove => StepBody::remove(plugin),
            _ => {
                // The order's routes are these paths (`Involved::upgrade`): the step is there.
                let Some(path_step) = (plugin.paths.get(ordered_step.route))
                    .and_then(|path| path.steps.get(ordered_step.index))
                else {
                    continue;
                };
                StepBody::switch(input, plugin, path_step, last)
            }
        };
        let step = planned_step(
            input,
            plugin,
            ordered_step.number,
            body,
            &ordered_step.because,
        );
        steps.push(step);
    }

    let mut steps_of: HashMap<&str, Vec<&PlannedStep>> = HashMap::new();
    for step in &steps {
        steps_of.entry(&step.plugin).or_default().push(step);
    }
    let changes: Vec<Change> = planned
        .iter()
        .map(|plugin| change(plugin, steps_of.get(plugin.id.as_str())))
        .collect();
    let waves = ordered.waves.iter().map(|w| w.steps.clone()).collect();
    let mut warnings: Vec<Warning> = ordered
        .tolerated
        .iter()
        .map(|unmet| Warning::UnmetNow {
            plugin: unmet.dependant.clone(),
            needs: format!("{} {}", unmet.dependency, unmet.requirement),
        })
        .collect();
    warnings.extend(slot_warnings(running, &steps));
    warnings.extend(strategy_warnings(&steps));
    warnings.extend(resident_warnings(running, &steps));
    let plan = Plan {
        waits: waits(input, &steps),
        refusals: refusals(running, &steps),
        lifts: standing.lifts,
        changes,
        steps,
        waves,
        warnings,
    };
    Ok(plan)
}

/// The index entry of `plugin` whose artifact is `sha256`.
fn entry<'a>(
    index: &'a BTreeMap<String, IndexFile>,
    plugin: &str,
    sha256: &Digest,
) -> Option<&'a IndexEntry> {
    index
        .get(plugin)?
        .versions
        .iter()
        .find(|entry| entry.sha256 == *sha256)
}

/// Requirements as the ordering reads them; one that does not parse is left out (the host
/// checked the metadata it loaded, and the index entries were checked when published).
fn requirements(dependencies: Option<&BTreeMap<String, String>>) -> BTreeMap<String, VersionReq> {
    dependencies
        .into_iter()
        .flatten()
        .filter_map(|(id, req)| Some((id.clone(), VersionReq::parse(req).ok()?)))
        .collect()
}

fn placement(metadata: &PluginMetadata) -> Placement {
    Placement {
        version: parse(&metadata.version).unwrap_or_else(|| Version::new(0, 0, 0)),
        dependencies: requirements(Some(&metadata.dependencies)),
    }
}

fn parse(version: &str) -> Option<Version> {
    Version::parse(version).ok()
}

/// The host's config hash: sha256 of the canonical JSON.
fn config_hash(config: &Value) -> Option<Digest> {
    canonical_json(config).ok().map(|bytes| Digest::of(&bytes))
}

/// What a step does, before the settings every step carries.
struct StepBody {
    action: StepAction,
    from: Option<VersionAt>,
    to: Option<Target>,
    jump: Option<crate::spec::model::Jump>,
    migration: Option<StateMigration>,
    config: Option<Value>,
    reasons: Vec<Reason>,
}

impl StepBody {
    /// Loading a plugin not loaded: the resolved version, the desired config (`{}` when
    /// plugins.yaml gives none: the plugin's defaults).
    fn install(plugin: &Planned<'_>) -> StepBody {
        let resolved = plugin.resolved;
        let config = (plugin.spec.and_then(|s| s.config.clone()))
            .unwrap_or_else(|| Value::Object(Default::default()));
        StepBody {
            action: StepAction::Install,
            from: None,
            to: resolved.map(|r| Target {
                at: VersionAt {
                    version: r.version.clone(),
                    sha256: r.sha256,
                },
                file: r.file.clone(),
                signature: r.signature.clone(),
            }),
            jump: None,
            migration: None,
            config: Some(config),
            reasons: resolved.map(|r| why(&r.why)).into_iter().collect(),
        }
    }

    /// Unloading a plugin plugins.yaml no longer names (`policy.prune`).
    fn remove(plugin: &Planned<'_>) -> StepBody {
        StepBody {
            action: StepAction::Remove,
            from: plugin.running.map(running_at),
            to: None,
            jump: None,
            migration: None,
            config: None,
            reasons: vec![Reason::Prune],
        }
    }

    /// One switch of a plugin's path; `last`: the one that reaches the target.
    fn switch(
        input: &PlanInput<'_>,
        plugin: &Planned<'_>,
        step: &PathStep,
        last: bool,
    ) -> StepBody {
        let action = match step.transition.kind {
            TransitionKind::Upgrade => StepAction::Upgrade,
            TransitionKind::Downgrade => StepAction::Downgrade,
            TransitionKind::Reconfigure => StepAction::Reconfigure,
        };
        let target = plugin.resolved;
        let reason = match (last, action) {
            (false, _) => target.map(|t| Reason::Toward {
                target: t.version.clone(),
            }),
            (true, StepAction::Reconfigure) => {
                let running = plugin.running.map(|r| r.version.digest);
                match target.zip(running) {
                    Some((target, running)) if target.sha256 != running => Some(Reason::Rebuild),
                    _ => Some(Reason::Config),
                }
            }
            (true, _) => target.map(|r| why(&r.why)),
        };
        let published = entry(input.index, &plugin.id, &step.sha256);
        StepBody {
            action,
            from: Some(VersionAt {
                version: step.from.clone(),
                sha256: previous_sha256(plugin, step),
            }),
            to: Some(Target {
                at: VersionAt {
                    version: step.to.clone(),
                    sha256: step.sha256,
                },
                file: published.map(|e| e.file.clone()).unwrap_or_default(),
                signature: published.and_then(|e| e.signature.clone()),
            }),
            jump: step.transition.jump,
            migration: state_migration(input, plugin, step),
            // An intermediate step leaves the config out: the host migrates the running one.
            config: if last {
                plugin.spec.and_then(|s| s.config.clone())
            } else {
                None
            },
            reasons: reason.into_iter().collect(),
        }
    }
}

/// The strategy of `spec`'s switches: its own, else the defaults', else `immediate`.
fn strategy_of(input: &PlanInput<'_>, spec: Option<&PluginSpec>) -> Strategy {
    (spec.and_then(|s| s.strategy.clone()))
        .or_else(|| input.set.spec.defaults.strategy.clone())
        .unwrap_or(Strategy::Immediate)
}

/// Why a plugin whose strategy is `scheduled` stays where it is, if its time has not come at
/// the plan's time.
fn scheduled(input: &PlanInput<'_>, spec: &PluginSpec) -> Option<KeptBecause> {
    let strategy = strategy_of(input, Some(spec));
    let not_before = strategy.not_before(input.now)?;
    let Strategy::Scheduled { at } = strategy else {
        return None;
    };
    // Shown to the second, rounded up: never earlier than the instant itself (the sidecar
    // wakes by it).
    let shown = match not_before.subsec_nanosecond() {
        0 => not_before,
        _ => jiff::Timestamp::from_second(not_before.as_second() + 1).unwrap_or(not_before),
    };
    (not_before > input.now).then(|| KeptBecause::Scheduled {
        at,
        not_before: shown.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        wait: minutes(shown.as_second() - input.now.as_second()),
    })
}

/// What a `when-idle` or `when-flat` switch of `plugin` waits for, as the host tells of the
/// plugin now.
fn strategy_wait(
    strategy: &Strategy,
    action: StepAction,
    running: &RuntimeStatus,
    plugin: &str,
) -> Option<StrategyWait> {
    if matches!(action, StepAction::Install | StepAction::Remove) {
        return None;
    }
    let (deadline, fallback) = strategy.deadline()?;
    let deadline = humantime::format_duration(deadline).to_string();
    let status = running.plugins.iter().find(|p| p.plugin == plugin);
    match strategy {
        Strategy::WhenIdle { idle_for, .. } => {
            let idle_ms = plugsync_host::idle_ms(status.and_then(|s| s.last_call_at), running.now);
            Some(StrategyWait::Idle {
                idle_for: idle_for.to_string(),
                met: idle_ms.is_none_or(|idle| u128::from(idle) >= idle_for.0.as_millis()),
                idle_ms,
                deadline,
                fallback,
            })
        }
        _ => {
            let answer = status.and_then(|s| s.swap_safe.clone());
            Some(StrategyWait::Flat {
                met: answer.as_ref().is_some_and(SwapSafeAnswer::lets_switch),
                answer,
                deadline,
                fallback,
            })
        }
    }
}

/// The step `body` as planned: with the plugin's strategy, verification and on-failure (after
/// `defaults`), and why it is where it is in the order.
fn planned_step(
    input: &PlanInput<'_>,
    plugin: &Planned<'_>,
    number: usize,
    body: StepBody,
    because: &[Because],
) -> PlannedStep {
    let spec = plugin.spec;
    let defaults = &input.set.spec.defaults;
    let strategy = strategy_of(input, spec);
    let verify = (spec.and_then(|s| s.verify.clone())).or_else(|| defaults.verify.clone());
    let on_failure = (spec.and_then(|s| s.on_failure))
        .or(defaults.on_failure)
        .unwrap_or(OnFailure::Rollback);
    let StepBody {
        action,
        from,
        to,
        jump,
        migration,
        config,
        mut reasons,
    } = body;
    reasons.extend(because.iter().map(|because| match because {
        Because::After {
            dependency,
            requirement,
            step,
        } => Reason::After {
            dependency: dependency.clone(),
            requirement: requirement.to_string(),
            step: *step,
        },
        Because::Before {
            version,
            dependency,
            requirement,
            step,
        } => Reason::Before {
            version: version.clone(),
            dependency: dependency.clone(),
            requirement: requirement.to_string(),
            step: *step,
        },
    }));
    PlannedStep {
        number,
        wait: strategy_wait(&strategy, action, input.running, &plugin.id),
        plugin: plugin.id.clone(),
        action,
        from,
        to,
        jump,
        migration,
        config,
        reasons,
        strategy,
        verify,
        on_failure,
    }
}

/// The artifact running before `step`: the running one for a path's first step, else the
/// previous step's target.
fn previous_sha256(plugin: &Planned<'_>, step: &PathStep) -> Digest {
    let previous = plugin
        .paths
        .iter()
        .flat_map(|path| &path.steps)
        .find(|s| s.to == step.from);
    match (previous, plugin.running) {
        (Some(previous), _) => previous.sha256,
        (None, Some(running)) => running.version.digest,
        (None, None) => step.sha256,
    }
}

fn running_at(status: &PluginStatus) -> VersionAt {
    VersionAt {
        version: parse(&status.version.version).unwrap_or_else(|| Version::new(0, 0, 0)),
        sha256: status.version.digest,
    }
}

fn why(why: &Why) -> Reason {
    match why {
        Why::Pinned => Reason::Pinned,
        Why::Channel { channel, .. } => Reason::Channel {
            channel: channel.name().to_owned(),
        },
        Why::Locked => Reason::Locked,
    }
}

/// How `step` carries the state, with the rules themselves when rules do it.
fn state_migration(
    input: &PlanInput<'_>,
    plugin: &Planned<'_>,
    step: &PathStep,
) -> Option<StateMigration> {
    match &step.transition.by {
        MigrationBy::Plugin { version } => Some(StateMigration::Plugin {
            version: version.clone(),
        }),
        MigrationBy::Fresh => Some(StateMigration::Fresh),
        MigrationBy::Unchanged => None,
        MigrationBy::Rules { source } => {
            let (name, migrations): (String, Vec<&Migration>) = match source {
                RuleSource::PluginsYaml => (
                    "plugins.yaml".to_owned(),
                    plugin
                        .spec
                        .map(|s| s.migrations.iter().collect())
                        .unwrap_or_default(),
                ),
                RuleSource::Index { version } => (
                    format!("the registry's entry of {} {version}", plugin.id),
                    (input.index.get(&plugin.id).into_iter())
                        .flat_map(|file| &file.versions)
                        .filter(|e| Version::parse(&e.version).is_ok_and(|v| v == *version))
                        .flat_map(|e| &e.migrations)
                        .collect(),
                ),
            };
            let rules = migrations
                .into_iter()
                .find(|m| {
                    plugsync_host::version_matches(&m.from, &step.from, true)
                        && plugsync_host::version_matches(&m.to, &step.to, true)
                })
                .map(|m| m.rules.clone())
                .unwrap_or_default();
            Some(StateMigration::Rules {
                source: name,
                rules,
            })
        }
    }
}

fn change(plugin: &Planned<'_>, own: Option<&Vec<&PlannedStep>>) -> Change {
    let own: &[&PlannedStep] = own.map_or(&[], Vec::as_slice);
    let via = match own.split_last() {
        Some((_, before)) => before
            .iter()
            .filter_map(|s| s.to.as_ref().map(|t| t.at.version.clone()))
            .collect(),
        None => Vec::new(),
    };
    Change {
        plugin: plugin.id.clone(),
        kind: plugin.kind,
        from: plugin.running.map(running_at),
        to: match plugin.kind {
            ChangeKind::Remove | ChangeKind::Unmanaged | ChangeKind::Kept => None,
            _ => plugin.resolved.map(|r| VersionAt {
                version: r.version.clone(),
                sha256: r.sha256,
            }),
        },
        why: plugin.resolved.map(|r| r.why.clone()),
        via,
        steps: own.iter().map(|s| s.number).collect(),
        config: plugin.config.clone(),
        kept: plugin.kept.as_ref().map(|because| Kept {
            wanted: plugin.resolved.map(|r| VersionAt {
                version: r.version.clone(),
                sha256: r.sha256,
            }),
            because: because.clone(),
        }),
    }
}

fn waits(input: &PlanInput<'_>, steps: &[PlannedStep]) -> Vec<Wait> {
    let mut waits = Vec::new();
    if steps.is_empty() {
        return waits;
    }
    let policy_windows = &input.set.spec.policy.windows;
    if let Some(closed) = windows::closed(policy_windows, input.now) {
        // The zone of the window that decides: the deny window open, else the allow window
        // waited for.
        let deciding = (closed.denied_by.first())
            .or(closed.outside.first())
            .and_then(|name| policy_windows.iter().find(|w| &w.name == name));
        let zone = deciding.and_then(|w| jiff::tz::TimeZone::get(&w.timezone).ok());
        let until_local = match (closed.until, zone, deciding) {
            (Some(until), Some(zone), Some(window)) => {
                let local = jiff::ZonedDateTime::new(until, zone.clone());
                let today = jiff::ZonedDateTime::new(input.now, zone).date() == local.date();
                let format = if today { "%H:%M" } else { "%a %H:%M" };
                Some(format!("{} {}", local.strftime(format), window.timezone))
            }
            _ => None,
        };
        waits.push(Wait::Window {
            denied_by: closed.denied_by,
            outside: closed.outside,
            until: closed
                .until
                .map(|at| at.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()),
            until_local,
            wait: closed
                .until
                .map(|at| minutes(at.as_second() - input.now.as_second())),
        });
    }
    for status in &input.running.plugins {
        if let Some(pending) = &status.pending {
            waits.push(Wait::PendingStep {
                plugin: status.plugin.clone(),
                step_id: pending.step_id.clone(),
            });
        }
    }
    if let Some(holder) = &input.running.lease.holder {
        waits.push(Wait::Lease {
            holder: holder.owner.clone(),
        });
    }
    waits
}

/// A number of seconds as hours and minutes, rounded up to the minute (`6h`, `1h 58m`, `5m`).
fn minutes(seconds: i64) -> String {
    let minutes = (seconds.max(0) + 59) / 60;
    match (minutes / 60, minutes % 60) {
        (0, m) => format!("{m}m"),
        (h, 0) => format!("{h}h"),
        (h, m) => format!("{h}h {m}m"),
    }
}

fn refusals(running: &RuntimeStatus, steps: &[PlannedStep]) -> Vec<Refusal> {
    match (&running.restraints.freeze, steps.is_empty()) {
        (Some(freeze), false) => vec![Refusal::Freeze {
            because: freeze.clone(),
        }],
        _ => Vec::new(),
    }
}

/// Keeps where they are the plugins the host's restraints keep, and every plugin whose move
/// would break a dependency with one of them (`restrained::keep_dependants`): each becomes
/// [`ChangeKind::Kept`], fixed at what it runs (or left absent) for the ordering.
fn keep_restrained(planned: &mut [Planned<'_>], involved: &mut [Involved]) {
    let mut kept: BTreeMap<String, KeptBecause> = (planned.iter())
        .filter_map(|p| Some((p.id.clone(), p.kept.clone()?)))
        .collect();
    if kept.is_empty() {
        return;
    }
    let moves: BTreeMap<String, Move> = (planned.iter())
        .map(|p| {
            let start = p.running.map(|status| placement(&status.metadata));
            (
                p.id.clone(),
                Move {
                    start,
                    end: p.end.clone(),
                },
            )
        })
        .collect();
    keep_dependants(&moves, &mut kept);
    for (plugin, involved) in planned.iter_mut().zip(involved.iter_mut()) {
        let Some(because) = kept.remove(&plugin.id) else {
            continue;
        };
        *involved = match plugin.running {
            Some(status) => Involved::fixed(&plugin.id, placement(&status.metadata)),
            None => Involved {
                plugin: plugin.id.clone(),
                start: None,
                routes: Vec::new(),
            },
        };
        plugin.kind = ChangeKind::Kept;
        plugin.paths.clear();
        plugin.kept = Some(because);
    }
}

/// A plugin with steps whose slot was busy when observed, or holds a stuck call.
fn slot_warnings(running: &RuntimeStatus, steps: &[PlannedStep]) -> Vec<Warning> {
    let moving: BTreeSet<&str> = steps.iter().map(|s| s.plugin.as_str()).collect();
    let mut warnings = Vec::new();
    for status in (running.plugins.iter()).filter(|p| moving.contains(p.plugin.as_str())) {
        if let Some(stuck) = &status.stuck {
            warnings.push(Warning::Stuck {
                plugin: status.plugin.clone(),
                running_ms: stuck.running_ms,
            });
        } else if status.busy {
            warnings.push(Warning::Busy {
                plugin: status.plugin.clone(),
            });
        }
    }
    warnings
}

/// A step whose strategy the apply engine does not run yet (`blue-green`).
fn strategy_warnings(steps: &[PlannedStep]) -> Vec<Warning> {
    let mut seen = BTreeSet::new();
    steps
        .iter()
        .filter(|s| matches!(s.strategy, Strategy::BlueGreen { .. }))
        .filter(|s| seen.insert(s.plugin.clone()))
        .map(|s| Warning::StrategyNotSupported {
            plugin: s.plugin.clone(),
            strategy: s.strategy.kind().to_owned(),
        })
        .collect()
}

/// A plugin whose plan maps more versions than the host keeps resident: mapped code is never
/// unmapped, so every version a plan loads stays.
fn resident_warnings(running: &RuntimeStatus, steps: &[PlannedStep]) -> Vec<Warning> {
    let mut mapped: BTreeMap<&str, BTreeSet<Digest>> = BTreeMap::new();
    for library in &running.resident {
        mapped
            .entry(&library.plugin)
            .or_default()
            .insert(library.version.digest);
    }
    let mut touched = BTreeSet::new();
    for step in steps {
        if let Some(to) = &step.to {
            mapped.entry(&step.plugin).or_default().insert(to.at.sha256);
            touched.insert(step.plugin.as_str());
        }
    }
    (mapped.into_iter())
        .filter(|(plugin, digests)| {
            touched.contains(plugin) && digests.len() > running.resident_cap
        })
        .map(|(plugin, digests)| Warning::ResidentCap {
            plugin: plugin.to_owned(),
            resident: digests.len(),
            cap: running.resident_cap,
        })
        .collect()
}
