//! The order of the steps across plugins, and the waves they run in.
//!
//! **The constraint.** After every step, every present plugin's dependencies are met by the
//! present plugins' versions ([`version_matches`] by version order, as the host checks them; a
//! dependency on an absent plugin, or on one not given to the ordering, is unmet). A
//! requirement already unmet in the starting set is tolerated while its dependant has not
//! moved (the caller warns of them: [`Ordered::tolerated`]); the final set must meet every
//! requirement ([`PlanError::FinalUnmet`]).
//!
//! **The search space.** Each plugin follows one of its routes (for an upgrade, its `k`
//! cheapest paths), committing to one when it first moves and then taking that route's steps
//! in order; steps of different plugins interleave freely. A state is where each plugin stands
//! (its route and how many of its steps have run).
//!
//! **The search.** Depth-first from the starting state, the greedy choice first, in three
//! phases: the first plugin in input order that can take its next step on its route (or, not
//! yet moved, on its cheapest route) moves; failing that, a plugin not yet moved leaves its
//! cheapest route for another whose first step frees a neighbour's cheapest move; failing
//! that, for any other route. So a plugin takes a longer path only when the cheaper ones
//! cannot be ordered from where the search stands, and the detour taken is one that unblocks
//! another plugin rather than one that only adds steps. States already seen are skipped (each kept as a 128-bit
//! hash, updated per move in constant time), so the search is complete over the space above:
//! it finds an order whenever one exists, within [`SearchLimits::node_budget`] states
//! ([`PlanError::SearchBudgetExhausted`] beyond). A move is checked against the moving
//! plugin's new dependencies and its dependants only (a reverse-dependency index), so the
//! common case, where the greedy order works, costs O(steps × plugins) scanning and
//! O(steps × dependencies) checking.
//!
//! When no order exists, [`PlanError::NoOrder`] names the blocking pair at the furthest state
//! the search reached: two steps each waiting for the other plugin to move first.
//!
//! **Waves.** Consecutive steps are grouped into waves of at most `max_parallel`, steps of
//! one wave changing distinct plugins of which neither depends on the other (by the versions
//! before and after each step): whatever order they run in, every set stays as valid as the
//! sequential one.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use plugsync_host::version_matches;
use schemars::JsonSchema;
use semver::{Version, VersionReq};
use serde::Serialize;

use super::error::{Blocked, NoOrder, PlanError, Unmet};
use super::limits::SearchLimits;
use super::path::{UpgradePath, VersionGraph};

/// A version of a plugin as the ordering sees it: the version, and what it needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Placement {
    /// The version.
    #[schemars(with = "String")]
    pub version: Version,
    /// The other plugins it needs, by id.
    #[schemars(with = "BTreeMap<String, String>")]
    pub dependencies: BTreeMap<String, VersionReq>,
}

/// The placements a plugin passes through, one per step (`None`: removed).
pub type Route = Vec<Option<Placement>>;

/// A plugin given to the ordering: where it starts and the routes it may follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Involved {
    /// The plugin.
    pub plugin: String,
    /// What runs (`None`: absent).
    pub start: Option<Placement>,
    /// The routes it may follow, cheapest first, all ending at the same placement; none (or
    /// only empty ones): it does not change, but its dependencies still count.
    pub routes: Vec<Route>,
}

impl Involved {
    /// A plugin that does not change.
    pub fn fixed(plugin: impl Into<String>, running: Placement) -> Involved {
        Involved {
            plugin: plugin.into(),
            start: Some(running),
            routes: Vec::new(),
        }
    }

    /// A plugin to install, in one step.
    pub fn install(plugin: impl Into<String>, target: Placement) -> Involved {
        Involved {
            plugin: plugin.into(),
            start: None,
            routes: vec![vec![Some(target)]],
        }
    }

    /// A plugin to remove, in one step.
    pub fn remove(plugin: impl Into<String>, running: Placement) -> Involved {
        Involved {
            plugin: plugin.into(),
            start: Some(running),
            routes: vec![vec![None]],
        }
    }

    /// A plugin that changes version along one of `paths` (from [`paths`](super::paths) on
    /// `graph`).
    pub fn upgrade(graph: &VersionGraph, paths: &[UpgradePath]) -> Involved {
        let routes = paths.iter().map(|path| {
            path.steps
                .iter()
                .map(|step| {
                    Some(Placement {
                        version: step.to.clone(),
                        dependencies: step.dependencies.clone(),
                    })
                })
                .collect()
        });
        Involved {
            plugin: graph.plugin().to_owned(),
            start: Some(graph.start()),
            routes: routes.collect(),
        }
    }
}

/// Why a step is where it is in the order: a dependency that forced it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum Because {
    /// Its new version needs `dependency` within `requirement`, met only once step `step`
    /// had run.
    After {
        /// The plugin needed.
        dependency: String,
        /// The requirement.
        #[schemars(with = "String")]
        requirement: VersionReq,
        /// The step (numbered from 1) that met it.
        step: usize,
    },
    /// Its old version needs `dependency` within `requirement`, which step `step` breaks: it
    /// moves first.
    Before {
        /// The version it leaves.
        #[schemars(with = "String")]
        version: Version,
        /// The plugin it needs.
        dependency: String,
        /// The requirement.
        #[schemars(with = "String")]
        requirement: VersionReq,
        /// The later step (numbered from 1) that breaks it.
        step: usize,
    },
}

impl fmt::Display for Because {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Because::After {
                dependency,
                requirement,
                step,
            } => write!(f, "needs `{dependency} {requirement}` (after step {step})"),
            Because::Before {
                version,
                dependency,
                requirement,
                step,
            } => write!(
                f,
                "{version} needs `{dependency} {requirement}`, which step {step} breaks: it \
                 moves first"
            ),
        }
    }
}

/// One step, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrderedStep {
    /// Its number, from 1.
    pub number: usize,
    /// The plugin it changes.
    pub plugin: String,
    /// Which of the plugin's routes (from 0, as given).
    pub route: usize,
    /// Which step of that route (from 0).
    pub index: usize,
    /// The version before (`None`: an install).
    #[schemars(with = "Option<String>")]
    pub from: Option<Version>,
    /// The version after (`None`: a remove).
    #[schemars(with = "Option<String>")]
    pub to: Option<Version>,
    /// The dependencies that forced it where it is.
    pub because: Vec<Because>,
}

/// Steps that may run at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Wave {
    /// Its number, from 1.
    pub number: usize,
    /// Its steps' numbers, consecutive.
    pub steps: Vec<usize>,
}

/// The steps in an order that keeps every dependency met, and their waves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Ordered {
    /// The steps, in order.
    pub steps: Vec<OrderedStep>,
    /// The waves, in order, covering every step once.
    pub waves: Vec<Wave>,
    /// Per plugin given, in that order, the route it follows (`None`: it does not move).
    pub routes: Vec<Option<usize>>,
    /// The requirements unmet in the starting set, tolerated until their dependant moves.
    pub tolerated: Vec<Unmet>,
    /// How many states the search visited.
    pub explored: usize,
}

/// Orders the steps of `plugins` (see the module docs) and groups them in waves of at most
/// `max_parallel` (0 reads as 1).
pub fn order(
    plugins: &[Involved],
    max_parallel: usize,
    limits: &SearchLimits,
) -> Result<Ordered, PlanError> {
    let search = Search::new(plugins)?;
    let tolerated = search.start_unmet();
    search.check_final()?;
    let found = search.run(limits)?;
    let steps = search.steps(&found.moves);
    let waves = waves(plugins, &search, &found.moves, max_parallel.max(1));
    Ok(Ordered {
        steps,
        waves,
        routes: found.routes,
        tolerated,
        explored: found.explored,
    })
}

/// A dependency with its plugin's place among those given (`None`: not given).
struct Dep<'a> {
    on: Option<u32>,
    id: &'a str,
    requirement: &'a VersionReq,
}

/// A placement with its dependencies resolved to places.
struct Stop<'a> {
    placement: Option<&'a Placement>,
    deps: Vec<Dep<'a>>,
}

struct Plugin<'a> {
    id: &'a str,
    start: Stop<'a>,
    /// Non-empty routes only, with their place among those given.
    routes: Vec<(usize, Vec<Stop<'a>>)>,
}

/// Where a plugin stands: on route `route` (meaningful once `done` > 0), `done` steps run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct At {
    route: u32,
    done: u32,
}

/// Which requirement a move would break: one of the moving plugin's new version (by its place
/// among that version's dependencies), or one of a dependant's current version.
#[derive(Debug, Clone, Copy)]
enum Broken {
    Own { dep: usize },
    Dependant { dependant: u32, dep: usize },
}

/// One step taken: the plugin, and where it stood before.
#[derive(Debug, Clone, Copy)]
struct Move {
    plugin: u32,
    before: At,
    after: At,
}

struct Found {
    moves: Vec<Move>,
    routes: Vec<Option<usize>>,
    explored: usize,
}

struct Search<'a> {
    plugins: Vec<Plugin<'a>>,
    /// For each plugin, the plugins any of whose placements needs it.
    dependants: Vec<Vec<u32>>,
    /// For each plugin, the plugins whose moves its own move may allow or forbid: itself, its
    /// dependants, and those any of its placements needs.
    neighbours: Vec<Vec<u32>>,
    /// The (dependant, dependency) requirements unmet at the start.
    unmet_at_start: HashSet<(u32, u32)>,
}

impl<'a> Search<'a> {
    fn new(given: &'a [Involved]) -> Result<Search<'a>, PlanError> {
        let mut places: HashMap<&str, u32> = HashMap::with_capacity(given.len());
        for (place, involved) in (0u32..).zip(given) {
            if places.insert(&involved.plugin, place).is_some() {
                return Err(PlanError::DuplicatePlugin {
                    plugin: involved.plugin.clone(),
                });
            }
        }
        let stop = |placement: Option<&'a Placement>| Stop {
            placement,
            deps: placement
                .map(|p| {
                    p.dependencies
                        .iter()
                        .map(|(id, requirement)| Dep {
                            on: places.get(id.as_str()).copied(),
                            id,
                            requirement,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        };
        let plugins: Vec<Plugin<'a>> = given
            .iter()
            .map(|involved| Plugin {
                id: &involved.plugin,
                start: stop(involved.start.as_ref()),
                routes: involved
                    .routes
                    .iter()
                    .enumerate()
                    .filter(|(_, route)| !route.is_empty())
                    .map(|(place, route)| (place, route.iter().map(|p| stop(p.as_ref())).collect()))
                    .collect(),
            })
            .collect();
        let mut dependants: Vec<Vec<u32>> = vec![Vec::new(); plugins.len()];
        let mut neighbours: Vec<Vec<u32>> = (0..plugins.len() as u32).map(|p| vec![p]).collect();
        for (place, plugin) in (0u32..).zip(&plugins) {
            let stops = std::iter::once(&plugin.start)
                .chain(plugin.routes.iter().flat_map(|(_, route)| route));
            let mut needed: Vec<u32> = stops
                .flat_map(|stop| stop.deps.iter().filter_map(|dep| dep.on))
                .collect();
            needed.sort_unstable();
            needed.dedup();
            for &dependency in &needed {
                dependants[dependency as usize].push(place);
                neighbours[dependency as usize].push(place);
            }
            neighbours[place as usize].extend(needed);
        }
        for list in &mut neighbours {
            list.sort_unstable();
            list.dedup();
        }
        let mut search = Search {
            plugins,
            dependants,
            neighbours,
            unmet_at_start: HashSet::new(),
        };
        let start = vec![At { route: 0, done: 0 }; search.plugins.len()];
        for (place, plugin) in (0u32..).zip(&search.plugins) {
            if plugin.start.placement.is_none() {
                continue;
            }
            for dep in &plugin.start.deps {
                if !search.met(&start, dep) {
                    // A dependency not given is never met; it cannot be tolerated by place.
                    let on = dep.on.unwrap_or(u32::MAX);
                    search.unmet_at_start.insert((place, on));
                }
            }
        }
        Ok(search)
    }

    fn stop(&self, plugin: u32, at: At) -> &Stop<'a> {
        let plugin = &self.plugins[plugin as usize];
        match at.done {
            0 => &plugin.start,
            done => &plugin.routes[at.route as usize].1[done as usize - 1],
        }
    }

    fn version(&self, state: &[At], plugin: u32) -> Option<&'a Version> {
        self.stop(plugin, state[plugin as usize])
            .placement
            .map(|p| &p.version)
    }

    fn met(&self, state: &[At], dep: &Dep<'_>) -> bool {
        dep.on
            .and_then(|on| self.version(state, on))
            .is_some_and(|version| version_matches(dep.requirement, version, true))
    }

    fn unmet(&self, state: &[At], dependant: u32, dep: &Dep<'_>) -> Unmet {
        let version = self.version(state, dependant);
        Unmet {
            dependant: self.plugins[dependant as usize].id.to_owned(),
            dependant_version: version.cloned().unwrap_or_else(|| Version::new(0, 0, 0)),
            dependency: dep.id.to_owned(),
            requirement: dep.requirement.clone(),
            found: dep.on.and_then(|on| self.version(state, on)).cloned(),
        }
    }

    fn start_unmet(&self) -> Vec<Unmet> {
        let start = vec![At { route: 0, done: 0 }; self.plugins.len()];
        let mut unmet = Vec::new();
        for (place, plugin) in (0u32..).zip(&self.plugins) {
            if plugin.start.placement.is_none() {
                continue;
            }
            for dep in &plugin.start.deps {
                if !self.met(&start, dep) {
                    unmet.push(self.unmet(&start, place, dep));
                }
            }
        }
        unmet
    }

    fn is_done(&self, plugin: u32, at: At) -> bool {
        let routes = &self.plugins[plugin as usize].routes;
        routes.is_empty() || (at.done > 0 && at.done as usize == routes[at.route as usize].1.len())
    }

    /// The set every plugin's first route ends with must meet every requirement.
    fn check_final(&self) -> Result<(), PlanError> {
        let end: Vec<At> = self
            .plugins
            .iter()
            .map(|plugin| match plugin.routes.first() {
                None => At { route: 0, done: 0 },
                Some((_, route)) => At {
                    route: 0,
                    done: route.len() as u32,
                },
            })
            .collect();
        for place in 0..self.plugins.len() as u32 {
            let stop = self.stop(place, end[place as usize]);
            if stop.placement.is_none() {
                continue;
            }
            for dep in &stop.deps {
                if !self.met(&end, dep) {
                    return Err(PlanError::FinalUnmet(Box::new(
                        self.unmet(&end, place, dep),
                    )));
                }
            }
        }
        Ok(())
    }

    /// Whether `plugin` may move to `to` from `state`: its new version's requirements met,
    /// and its dependants' still met (or tolerated). Cheap when refused: the refusal is put in
    /// words only when reported ([`Search::unmet_of`]).
    fn check(&self, state: &[At], plugin: u32, to: At) -> Result<(), Broken> {
        let stop = self.stop(plugin, to);
        let version = stop.placement.map(|p| &p.version);
        if stop.placement.is_some() {
            for (index, dep) in stop.deps.iter().enumerate() {
                let found = match dep.on {
                    Some(on) if on == plugin => version,
                    Some(on) => self.version(state, on),
                    None => None,
                };
                if !found.is_some_and(|v| version_matches(dep.requirement, v, true)) {
                    return Err(Broken::Own { dep: index });
                }
            }
        }
        for &dependant in &self.dependants[plugin as usize] {
            if dependant == plugin {
                continue;
            }
            let at = state[dependant as usize];
            let their = self.stop(dependant, at);
            if their.placement.is_none() {
                continue;
            }
            for (index, dep) in their.deps.iter().enumerate() {
                if dep.on != Some(plugin)
                    || version.is_some_and(|v| version_matches(dep.requirement, v, true))
                {
                    continue;
                }
                if at.done == 0 && self.unmet_at_start.contains(&(dependant, plugin)) {
                    continue;
                }
                return Err(Broken::Dependant {
                    dependant,
                    dep: index,
                });
            }
        }
        Ok(())
    }

    /// The requirement `broken` names, in the terms of the move of `plugin` to `to`.
    fn unmet_of(&self, state: &[At], plugin: u32, to: At, broken: Broken) -> Unmet {
        let stop = self.stop(plugin, to);
        let version = stop.placement.map(|p| &p.version);
        let (dependant, their, index) = match broken {
            Broken::Own { dep } => (plugin, stop, dep),
            Broken::Dependant { dependant, dep } => (
                dependant,
                self.stop(dependant, state[dependant as usize]),
                dep,
            ),
        };
        let dep = &their.deps[index];
        let found = match dep.on {
            Some(on) if on == plugin => version,
            Some(on) => self.version(state, on),
            None => None,
        };
        Unmet {
            dependant: self.plugins[dependant as usize].id.to_owned(),
            dependant_version: their
                .placement
                .map_or_else(|| Version::new(0, 0, 0), |p| p.version.clone()),
            dependency: dep.id.to_owned(),
            requirement: dep.requirement.clone(),
            found: found.cloned(),
        }
    }

    /// Whether the requirements tolerated at the start hold at the end (those of plugins that
    /// never move are still tolerated while searching).
    fn tolerated_hold(&self, state: &[At]) -> bool {
        self.unmet_at_start.iter().all(|&(dependant, _)| {
            let stop = self.stop(dependant, state[dependant as usize]);
            stop.placement.is_none() || stop.deps.iter().all(|dep| self.met(state, dep))
        })
    }

    /// The routes `plugin` may take its next step on from `at`, in `phase`: a plugin that has
    /// moved keeps to its route (phase 0); one that has not tries its cheapest route in phase
    /// 0 and the others in phase 1. Every plugin's cheapest move is tried before any plugin
    /// leaves its cheapest route, so a plugin takes a longer path only when no order exists on
    /// the cheaper ones from here.
    fn routes_in(&self, plugin: u32, at: At, phase: u8) -> std::ops::Range<u32> {
        let routes = self.plugins[plugin as usize].routes.len() as u32;
        match (at.done > 0, phase) {
            (true, 0) => at.route..at.route + 1,
            (true, _) => 0..0,
            (false, 0) => 0..routes.min(1),
            (false, _) => routes.min(1)..routes,
        }
    }

    /// Whether moving `plugin` to `to` lets a neighbour take a cheapest move it could not
    /// take before: an alternative route worth leaving the cheapest one for (phase 1), where
    /// one that frees nobody only adds steps (phase 2).
    fn unblocks(&self, state: &mut [At], plugin: u32, to: At) -> bool {
        let at = state[plugin as usize];
        let blocked: Vec<(u32, At)> = (self.neighbours[plugin as usize].iter())
            .filter(|&&other| other != plugin && !self.is_done(other, state[other as usize]))
            .filter_map(|&other| {
                let their = state[other as usize];
                let route = self.routes_in(other, their, 0).next()?;
                let next = At {
                    route,
                    done: their.done + 1,
                };
                self.check(state, other, next)
                    .is_err()
                    .then_some((other, next))
            })
            .collect();
        state[plugin as usize] = to;
        let freed = (blocked.iter()).any(|&(other, next)| self.check(state, other, next).is_ok());
        state[plugin as usize] = at;
        freed
    }

    /// Whether `plugin` has no valid next step on any route it may take from `state`.
    fn stuck(&self, state: &[At], plugin: u32) -> bool {
        let at = state[plugin as usize];
        (0..2)
            .flat_map(|phase| self.routes_in(plugin, at, phase))
            .all(|route| {
                let to = At {
                    route,
                    done: at.done + 1,
                };
                self.check(state, plugin, to).is_err()
            })
    }

    fn run(&self, limits: &SearchLimits) -> Result<Found, PlanError> {
        let count = self.plugins.len() as u32;
        let mut state = vec![At { route: 0, done: 0 }; count as usize];
        let mut hash = (0..count).fold(0u128, |h, p| h ^ zobrist(p, At { route: 0, done: 0 }));
        let mut visited: HashSet<u128> = HashSet::new();
        visited.insert(hash);
        let mut explored = 1usize;
        let mut left = (0..count)
            .filter(|&p| !self.is_done(p, state[p as usize]))
            .count();
        // Per state on the way: the next (phase, plugin, route) to try, and the move that led
        // there.
        struct Frame {
            phase: u8,
            plugin: u32,
            route: u32,
            valid: bool,
            led: Option<Move>,
        }
        let fresh_frame = |led| Frame {
            phase: 0,
            plugin: 0,
            route: 0,
            valid: false,
            led,
        };
        let mut stack = vec![fresh_frame(None)];
        let mut furthest: Option<(usize, NoOrder)> = None;
        let mut open: BTreeSet<u32> = (0..count)
            .filter(|&p| !self.is_done(p, state[p as usize]))
            .collect();
        loop {
            if left == 0 && self.tolerated_hold(&state) {
                let moves: Vec<Move> = stack.iter().filter_map(|f| f.led).collect();
                let routes = (0..count as usize)
                    .map(|p| {
                        (state[p].done > 0)
                            .then(|| self.plugins[p].routes[state[p].route as usize].0)
                    })
                    .collect();
                return Ok(Found {
                    moves,
                    routes,
                    explored,
                });
            }
            let Some(frame) = stack.last_mut() else {
                break;
            };
            let mut taken = None;
            // Only the open plugins can move: the others are done, or were found blocked and
            // none of their neighbours has moved since. Phase 0 tries every plugin's cheapest
            // move; phase 1 the other routes of the plugins that have not moved yet, where
            // the move frees a neighbour's cheapest one; phase 2 the rest of them.
            'scan: loop {
                let Some(&plugin) = open.range(frame.plugin..).next() else {
                    if frame.phase < 2 {
                        frame.phase += 1;
                        frame.plugin = 0;
                        frame.route = 0;
                        continue;
                    }
                    break;
                };
                if plugin != frame.plugin {
                    frame.plugin = plugin;
                    frame.route = 0;
                }
                let at = state[plugin as usize];
                let routes = self.routes_in(plugin, at, frame.phase);
                let every_move = frame.route == 0;
                let mut any_valid = false;
                for route in routes.start + frame.route..routes.end {
                    frame.route += 1;
                    let to = At {
                        route,
                        done: at.done + 1,
                    };
                    if self.check(&state, plugin, to).is_err() {
                        continue;
                    }
                    any_valid = true;
                    frame.valid = true;
                    if frame.phase == 1 && !self.unblocks(&mut state, plugin, to) {
                        continue;
                    }
                    let next = hash ^ zobrist(plugin, at) ^ zobrist(plugin, to);
                    if visited.contains(&next) {
                        continue;
                    }
                    taken = Some((
                        Move {
                            plugin,
                            before: at,
                            after: to,
                        },
                        next,
                    ));
                    break 'scan;
                }
                if every_move && !any_valid && self.stuck(&state, plugin) {
                    open.remove(&plugin);
                }
                frame.plugin += 1;
                frame.route = 0;
            }
            match taken {
                Some((step, next)) => {
                    explored += 1;
                    if explored > limits.node_budget {
                        return Err(PlanError::SearchBudgetExhausted {
                            budget: limits.node_budget,
                            steps: self.steps_of_first_routes(),
                        });
                    }
                    visited.insert(next);
                    hash = next;
                    state[step.plugin as usize] = step.after;
                    if self.is_done(step.plugin, step.after) {
                        left -= 1;
                    }
                    self.reopen(&mut open, &state, step.plugin);
                    stack.push(fresh_frame(Some(step)));
                }
                None => {
                    let Some(frame) = stack.pop() else { break };
                    if !frame.valid {
                        let depth = stack.len();
                        if furthest.as_ref().is_none_or(|(d, _)| depth > *d) {
                            furthest = Some((depth, self.blocking(&state)));
                        }
                    }
                    let Some(step) = frame.led else { break };
                    if self.is_done(step.plugin, step.after) {
                        left += 1;
                    }
                    hash =
                        hash ^ zobrist(step.plugin, step.after) ^ zobrist(step.plugin, step.before);
                    state[step.plugin as usize] = step.before;
                    self.reopen(&mut open, &state, step.plugin);
                }
            }
        }
        let start = vec![At { route: 0, done: 0 }; count as usize];
        let no_order = match furthest {
            Some((_, no_order)) => no_order,
            None => self.blocking(&start),
        };
        Err(PlanError::NoOrder(Box::new(no_order)))
    }

    /// After `moved` moved (or moved back): it and its neighbours may move now, unless done.
    fn reopen(&self, open: &mut BTreeSet<u32>, state: &[At], moved: u32) {
        for &plugin in &self.neighbours[moved as usize] {
            if self.is_done(plugin, state[plugin as usize]) {
                open.remove(&plugin);
            } else {
                open.insert(plugin);
            }
        }
    }

    fn steps_of_first_routes(&self) -> usize {
        self.plugins
            .iter()
            .map(|p| p.routes.first().map_or(0, |(_, route)| route.len()))
            .sum()
    }

    /// At a state where no step can be taken: the first plugin's blocked step (its next, or
    /// its cheapest route's first), and a plugin it waits for whose step it blocks in turn.
    fn blocking(&self, state: &[At]) -> NoOrder {
        let mut blocked: Vec<(u32, u32, Blocked)> = Vec::new();
        for plugin in 0..self.plugins.len() as u32 {
            let at = state[plugin as usize];
            if self.is_done(plugin, at) {
                continue;
            }
            // Its next step, or (not moved yet) its cheapest route's first.
            let Some(route) = self.routes_in(plugin, at, 0).next() else {
                continue;
            };
            let to = At {
                route,
                done: at.done + 1,
            };
            let Err(broken) = self.check(state, plugin, to) else {
                continue;
            };
            let unmet = self.unmet_of(state, plugin, to, broken);
            let id = self.plugins[plugin as usize].id;
            let other = if unmet.dependant == id {
                &unmet.dependency
            } else {
                &unmet.dependant
            };
            let other = self
                .plugins
                .iter()
                .position(|p| p.id == other)
                .map_or(u32::MAX, |p| p as u32);
            blocked.push((
                plugin,
                other,
                Blocked {
                    plugin: id.to_owned(),
                    from: self.version(state, plugin).cloned(),
                    to: self.stop(plugin, to).placement.map(|p| p.version.clone()),
                    unmet,
                },
            ));
        }
        for (i, (a, waits_for, first)) in blocked.iter().enumerate() {
            let pair = blocked
                .iter()
                .skip(i + 1)
                .find(|(b, theirs, _)| b == waits_for && theirs == a);
            if let Some((_, _, second)) = pair {
                return NoOrder {
                    blocked: first.clone(),
                    other: Some(second.clone()),
                };
            }
        }
        match blocked.into_iter().next() {
            Some((_, _, first)) => NoOrder {
                blocked: first,
                other: None,
            },
            // Unreachable for a stuck state with steps left; a neutral report all the same.
            None => NoOrder {
                blocked: Blocked {
                    plugin: String::new(),
                    from: None,
                    to: None,
                    unmet: Unmet {
                        dependant: String::new(),
                        dependant_version: Version::new(0, 0, 0),
                        dependency: String::new(),
                        requirement: VersionReq::STAR,
                        found: None,
                    },
                },
                other: None,
            },
        }
    }

    /// The moves as steps, each with the dependencies that forced it.
    fn steps(&self, moves: &[Move]) -> Vec<OrderedStep> {
        // Each plugin's step numbers (from 1), in order.
        let mut of_plugin: Vec<Vec<usize>> = vec![Vec::new(); self.plugins.len()];
        for (i, step) in moves.iter().enumerate() {
            of_plugin[step.plugin as usize].push(i + 1);
        }
        // Each plugin's placement before step `number` of it: found from its moves.
        let stop_before = |plugin: u32, number: usize| -> &Stop<'a> {
            self.stop(plugin, moves[number - 1].before)
        };
        let stop_after = |plugin: u32, number: usize| -> &Stop<'a> {
            self.stop(plugin, moves[number - 1].after)
        };
        let matches = |stop: &Stop<'_>, requirement: &VersionReq| {
            stop.placement
                .is_some_and(|p| version_matches(requirement, &p.version, true))
        };
        moves
            .iter()
            .enumerate()
            .map(|(i, step)| {
                let number = i + 1;
                let plugin = &self.plugins[step.plugin as usize];
                let (before, after) = (
                    self.stop(step.plugin, step.before),
                    self.stop(step.plugin, step.after),
                );
                let mut because = Vec::new();
                if after.placement.is_some() {
                    for dep in &after.deps {
                        let Some(on) = dep.on else { continue };
                        let theirs = &of_plugin[on as usize];
                        let last = theirs.partition_point(|&n| n < number);
                        if last == 0 {
                            continue;
                        }
                        let t = theirs[last - 1];
                        if !matches(stop_before(on, t), dep.requirement) {
                            because.push(Because::After {
                                dependency: dep.id.to_owned(),
                                requirement: dep.requirement.clone(),
                                step: t,
                            });
                        }
                    }
                }
                if let Some(placement) = before.placement {
                    for dep in &before.deps {
                        let Some(on) = dep.on else { continue };
                        let theirs = &of_plugin[on as usize];
                        let next = theirs.partition_point(|&n| n <= number);
                        let Some(&t) = theirs.get(next) else { continue };
                        if matches(stop_before(on, t), dep.requirement)
                            && !matches(stop_after(on, t), dep.requirement)
                        {
                            because.push(Because::Before {
                                version: placement.version.clone(),
                                dependency: dep.id.to_owned(),
                                requirement: dep.requirement.clone(),
                                step: t,
                            });
                        }
                    }
                }
                let (route, _) = &plugin.routes[step.after.route as usize];
                OrderedStep {
                    number,
                    plugin: plugin.id.to_owned(),
                    route: *route,
                    index: step.before.done as usize,
                    from: before.placement.map(|p| p.version.clone()),
                    to: after.placement.map(|p| p.version.clone()),
                    because,
                }
            })
            .collect()
    }
}

/// Waves of consecutive steps: at most `max_parallel`, distinct plugins, none depending on
/// another of the wave by the versions before or after its step.
fn waves(
    given: &[Involved],
    search: &Search<'_>,
    moves: &[Move],
    max_parallel: usize,
) -> Vec<Wave> {
    let mut waves: Vec<Wave> = Vec::new();
    let mut members: Vec<&Move> = Vec::new();
    let needs = |a: &Move, b: &Move| {
        let id = &given[b.plugin as usize].plugin;
        [a.before, a.after].into_iter().any(|at| {
            search
                .stop(a.plugin, at)
                .placement
                .is_some_and(|p| p.dependencies.contains_key(id))
        })
    };
    for (i, step) in moves.iter().enumerate() {
        let joins = members.len() < max_parallel
            && !waves.is_empty()
            && members
                .iter()
                .all(|m| m.plugin != step.plugin && !needs(m, step) && !needs(step, m));
        if joins {
            if let Some(wave) = waves.last_mut() {
                wave.steps.push(i + 1);
            }
            members.push(step);
        } else {
            waves.push(Wave {
                number: waves.len() + 1,
                steps: vec![i + 1],
            });
            members.clear();
            members.push(step);
        }
    }
    waves
}

/// A state's hash is the XOR of one 128-bit value per plugin and where it stands, so a move
/// updates it in constant time. Two SplitMix64 finalisers make the two halves; a collision
/// (which would skip an unseen state) is as likely as two random 128-bit values agreeing.
fn zobrist(plugin: u32, at: At) -> u128 {
    let key = mix(u64::from(plugin)) ^ ((u64::from(at.route) << 32) | u64::from(at.done));
    let high = mix(key ^ 0x243f_6a88_85a3_08d3);
    let low = mix(key.wrapping_add(0x1319_8a2e_0370_7344));
    (u128::from(high) << 64) | u128::from(low)
}

fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}
