//! Ordering the steps of every plugin so that each intermediate set meets every dependency:
//! the interleaved upgrade through an intermediate version, removes and installs, waves, the
//! blocking pair, the search budget, requirements already unmet at the start — and two
//! properties on random sets: every set of every plan meets its dependencies, and on small sets
//! the planner finds an order exactly when a brute-force search of the same space does.
//!
//! Outcomes are snapshots (`UPDATE_EXPECT=1 cargo test --test plan_order`, review the diff).

mod plan_support;

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};

use expect_test::{Expect, expect};
use plan_support::{host, index, paths_of_plugin, runs, set};
use plugsync::plan::{Involved, Ordered, Placement, PlanError, SearchLimits, order};
use plugsync_host::version_matches;
use proptest::prelude::*;
use semver::{Version, VersionReq};

/// `version` needing `deps` (`("risk_model", ">=2.0")`).
fn at(version: &str, deps: &[(&str, &str)]) -> Placement {
    Placement {
        version: Version::parse(version).unwrap(),
        dependencies: deps
            .iter()
            .map(|(id, req)| (id.to_string(), VersionReq::parse(req).unwrap()))
            .collect(),
    }
}

/// Each step on a line with why it is there, then the waves.
fn render(result: &Result<Ordered, PlanError>) -> String {
    let ordered = match result {
        Ok(ordered) => ordered,
        Err(error) => return format!("error: {error}\n"),
    };
    let mut out = String::new();
    let version = |v: &Option<Version>| v.as_ref().map_or("absent".to_owned(), Version::to_string);
    for step in &ordered.steps {
        out.push_str(&format!(
            "{}. {} {} → {}",
            step.number,
            step.plugin,
            version(&step.from),
            version(&step.to)
        ));
        for because in &step.because {
            out.push_str(&format!("; {because}"));
        }
        out.push('\n');
    }
    let waves: Vec<String> = ordered
        .waves
        .iter()
        .map(|w| format!("{:?}", w.steps))
        .collect();
    out.push_str(&format!("waves: {}\n", waves.join(" ")));
    for unmet in &ordered.tolerated {
        out.push_str(&format!("tolerated: {unmet}\n"));
    }
    out
}

fn check(plugins: &[Involved], max_parallel: usize, expected: Expect) {
    expected.assert_eq(&render(&order(
        plugins,
        max_parallel,
        &SearchLimits::default(),
    )));
}

/// risk_model 1.0.0 → 2.0.0; ma_cross 1.0.0 → 2.1.0, which migrates only from 2.x; ma_cross
/// 1.x needs risk_model <2, 2.0.0 accepts both, 2.1.0 needs risk_model >=2.0.
const INTERLEAVED: &str = "
    risk_model 1.0.0
    risk_model 2.0.0; from ^1
    ma_cross 1.0.0; needs risk_model >=1.0, <2
    ma_cross 2.0.0; from >=1.0.0, <2; needs risk_model >=1.0, <3
    ma_cross 2.1.0; from >=2.0, <3; needs risk_model >=2.0
";

/// The two plugins as the glue builds them from paths, in the order `ids` lists them: both
/// pinned (risk_model to 2.0.0, ma_cross to 2.1.0), both running 1.0.0.
fn interleaved(lines: &str, ids: &[&str]) -> Vec<Involved> {
    let index = index(lines);
    let pin = |id: &str| if id == "ma_cross" { "2.1.0" } else { "2.0.0" };
    let spec: String = ids
        .iter()
        .map(|id| format!("    - {{id: {id}, version: {}}}\n", pin(id)))
        .collect();
    let set = set(&format!("  plugins:\n{spec}"));
    ids.iter()
        .map(|id| {
            let (graph, paths) =
                paths_of_plugin(&set, &index, id, runs("1.0.0"), &host(), 3).unwrap();
            Involved::upgrade(&graph, &paths)
        })
        .collect()
}

#[test]
fn an_upgrade_through_an_intermediate_version_interleaves_with_its_dependency() {
    let expected = || {
        expect![[r#"
            1. ma_cross 1.0.0 → 2.0.0; 1.0.0 needs `risk_model >=1.0, <2`, which step 2 breaks: it moves first
            2. risk_model 1.0.0 → 2.0.0
            3. ma_cross 2.0.0 → 2.1.0; needs `risk_model >=2.0` (after step 2)
            waves: [1] [2] [3]
        "#]]
    };
    check(
        &interleaved(INTERLEAVED, &["risk_model", "ma_cross"]),
        4,
        expected(),
    );
    check(
        &interleaved(INTERLEAVED, &["ma_cross", "risk_model"]),
        4,
        expected(),
    );
}

#[test]
fn a_longer_path_is_taken_only_when_no_order_exists_on_the_cheapest_ones() {
    // risk_model 1.1.0 opens a second, longer path (1.0.0 → 1.1.0 → 2.0.0) whose first step is
    // free at the start, where the cheapest (1.0.0 → 2.0.0) must wait for ma_cross: the
    // plan waits rather than take two steps where one does.
    let with_minor = format!("{INTERLEAVED}    risk_model 1.1.0; from >=1.0.0, <1.1.0\n");
    let with_minor = with_minor.replace(
        "risk_model 2.0.0; from ^1",
        "risk_model 2.0.0; from >=1.0.0, <2",
    );
    let expected = || {
        expect![[r#"
            1. ma_cross 1.0.0 → 2.0.0; 1.0.0 needs `risk_model >=1.0, <2`, which step 2 breaks: it moves first
            2. risk_model 1.0.0 → 2.0.0
            3. ma_cross 2.0.0 → 2.1.0; needs `risk_model >=2.0` (after step 2)
            waves: [1] [2] [3]
        "#]]
    };
    check(
        &interleaved(&with_minor, &["risk_model", "ma_cross"]),
        4,
        expected(),
    );
    check(
        &interleaved(&with_minor, &["ma_cross", "risk_model"]),
        4,
        expected(),
    );
}

#[test]
fn the_plugin_that_leaves_its_cheapest_path_is_one_whose_detour_frees_the_other() {
    // ma_cross's cheapest path is one fresh step 1.0.0 → 2.1.0 (which needs risk_model 2.x),
    // risk_model's is 1.0.0 → 2.0.0 (which ma_cross 1.x forbids): a deadlock. Both have a
    // detour: risk_model through 1.1.0 frees nobody; ma_cross through 2.0.0 frees risk_model.
    let lines = format!("{INTERLEAVED}    risk_model 1.1.0; from >=1.0.0, <1.1.0\n").replace(
        "risk_model 2.0.0; from ^1",
        "risk_model 2.0.0; from >=1.0.0, <2",
    );
    let index = index(&lines);
    let set = set("  plugins:
    - {id: risk_model, version: 2.0.0}
    - {id: ma_cross, version: 2.1.0, update: {freshState: 2.1.0}}
");
    let plugins: Vec<Involved> = ["risk_model", "ma_cross"]
        .iter()
        .map(|id| {
            let (graph, paths) =
                paths_of_plugin(&set, &index, id, runs("1.0.0"), &host(), 3).unwrap();
            Involved::upgrade(&graph, &paths)
        })
        .collect();
    check(
        &plugins,
        1,
        expect![[r#"
        1. ma_cross 1.0.0 → 2.0.0; 1.0.0 needs `risk_model >=1.0, <2`, which step 2 breaks: it moves first
        2. risk_model 1.0.0 → 2.0.0
        3. ma_cross 2.0.0 → 2.1.0; needs `risk_model >=2.0` (after step 2)
        waves: [1] [2] [3]
    "#]],
    );
}

#[test]
fn two_upgrades_that_can_only_switch_together_name_the_blocking_pair() {
    // No ma_cross 2.0.0 to pass through.
    let lines = "
        risk_model 1.0.0
        risk_model 2.0.0; from ^1
        ma_cross 1.0.0; needs risk_model >=1.0, <2
        ma_cross 2.1.0; from ^1; needs risk_model >=2.0
    ";
    for ids in [["risk_model", "ma_cross"], ["ma_cross", "risk_model"]] {
        let plugins = interleaved(lines, &ids);
        let result = order(&plugins, 1, &SearchLimits::default());
        let Err(PlanError::NoOrder(no_order)) = &result else {
            panic!("expected no order, got {result:?}");
        };
        let mut pair = vec![no_order.blocked.plugin.clone()];
        pair.extend(no_order.other.iter().map(|o| o.plugin.clone()));
        pair.sort();
        assert_eq!(pair, ["ma_cross", "risk_model"]);
    }
    check(
        &interleaved(lines, &["ma_cross", "risk_model"]),
        1,
        expect![[r#"
            error: no order of the steps keeps every dependency met: `ma_cross` 2.1.0 needs `risk_model >=2.0`, but `risk_model` 2.0.0 cannot run beside `ma_cross` 1.0.0, which needs `risk_model >=1.0, <2`: publish a version of `ma_cross` or `risk_model` that runs beside the other's current version, or change them in two reconciles (switching both at once is not supported yet)
        "#]],
    );
}

#[test]
fn a_dependant_is_removed_before_what_it_needs_and_a_dependency_installed_before_its_dependant() {
    check(
        &[
            Involved::remove("risk_model", at("1.0.0", &[])),
            Involved::remove("ma_cross", at("1.0.0", &[("risk_model", "^1")])),
        ],
        1,
        expect![[r#"
            1. ma_cross 1.0.0 → absent; 1.0.0 needs `risk_model ^1`, which step 2 breaks: it moves first
            2. risk_model 1.0.0 → absent
            waves: [1] [2]
        "#]],
    );
    check(
        &[
            Involved::install("ma_cross", at("1.0.0", &[("risk_model", "^1")])),
            Involved::install("risk_model", at("1.0.0", &[])),
        ],
        1,
        expect![[r#"
            1. risk_model absent → 1.0.0
            2. ma_cross absent → 1.0.0; needs `risk_model ^1` (after step 1)
            waves: [1] [2]
        "#]],
    );
    // A plugin that stays still counts: removing what it needs is refused.
    check(
        &[
            Involved::remove("risk_model", at("1.0.0", &[])),
            Involved::fixed("ma_cross", at("1.0.0", &[("risk_model", "^1")])),
        ],
        1,
        expect![[r#"
            error: when every step has run, `ma_cross` 1.0.0 needs `risk_model ^1`, but `risk_model` is absent: change plugins.yaml so that the versions agree (`plugsync lock` checks them)
        "#]],
    );
}

#[test]
fn waves_hold_at_most_max_parallel_independent_steps() {
    let plugins = || {
        vec![
            Involved::install("a", at("1.0.0", &[])),
            Involved::install("b", at("1.0.0", &[])),
            Involved::install("c", at("1.0.0", &[])),
            // d needs c: never in c's wave.
            Involved::install("d", at("1.0.0", &[("c", "^1")])),
            Involved::install("e", at("1.0.0", &[])),
        ]
    };
    let cases = [
        (
            1,
            expect![[r#"
                1. a absent → 1.0.0
                2. b absent → 1.0.0
                3. c absent → 1.0.0
                4. d absent → 1.0.0; needs `c ^1` (after step 3)
                5. e absent → 1.0.0
                waves: [1] [2] [3] [4] [5]
            "#]],
        ),
        (
            2,
            expect![[r#"
                1. a absent → 1.0.0
                2. b absent → 1.0.0
                3. c absent → 1.0.0
                4. d absent → 1.0.0; needs `c ^1` (after step 3)
                5. e absent → 1.0.0
                waves: [1, 2] [3] [4, 5]
            "#]],
        ),
        (
            8,
            expect![[r#"
                1. a absent → 1.0.0
                2. b absent → 1.0.0
                3. c absent → 1.0.0
                4. d absent → 1.0.0; needs `c ^1` (after step 3)
                5. e absent → 1.0.0
                waves: [1, 2, 3] [4, 5]
            "#]],
        ),
    ];
    for (max_parallel, expected) in cases {
        check(&plugins(), max_parallel, expected);
    }
}

#[test]
fn a_requirement_unmet_at_the_start_is_tolerated_until_its_dependant_moves() {
    check(
        &[
            Involved {
                plugin: "ma_cross".to_owned(),
                start: Some(at("1.0.0", &[("risk_model", "^2")])),
                routes: vec![vec![Some(at("1.1.0", &[("risk_model", "^1")]))]],
            },
            Involved::fixed("risk_model", at("1.0.0", &[])),
            Involved::install("feed", at("1.0.0", &[])),
        ],
        1,
        expect![[r#"
            1. ma_cross 1.0.0 → 1.1.0
            2. feed absent → 1.0.0
            waves: [1] [2]
            tolerated: `ma_cross` 1.0.0 needs `risk_model ^2`, but `risk_model` is at 1.0.0
        "#]],
    );
}

#[test]
fn a_search_past_its_budget_says_so_and_how_to_raise_it() {
    // Ten plugins free to move in any order, then two that block each other: proving there is
    // no order visits every subset of the ten.
    let mut plugins: Vec<Involved> = (0..10)
        .map(|i| Involved::install(format!("p{i}"), at("1.0.0", &[])))
        .collect();
    plugins.push(Involved {
        plugin: "ma_cross".to_owned(),
        start: Some(at("1.0.0", &[("risk_model", "^1")])),
        routes: vec![vec![Some(at("2.0.0", &[("risk_model", "^2")]))]],
    });
    plugins.push(Involved {
        plugin: "risk_model".to_owned(),
        start: Some(at("1.0.0", &[])),
        routes: vec![vec![Some(at("2.0.0", &[]))]],
    });
    let limits = SearchLimits {
        node_budget: 500,
        ..SearchLimits::default()
    };
    expect![[r#"
        error: no order of the 12 steps was found within the search budget of 500 states: raise the budget (`node_budget`), or make fewer changes at once
    "#]]
    .assert_eq(&render(&order(&plugins, 1, &limits)));
    // With the default budget the search completes and names the pair.
    let result = order(&plugins, 1, &SearchLimits::default());
    assert!(matches!(result, Err(PlanError::NoOrder(_))), "{result:?}");
}

#[test]
fn a_search_that_needs_exactly_its_budget_completes() {
    // The detour case of `the_plugin_that_leaves_its_cheapest_path_…`, written by hand: the
    // start and one state per step.
    let plugins = [
        Involved {
            plugin: "risk_model".to_owned(),
            start: Some(at("1.0.0", &[])),
            routes: vec![
                vec![Some(at("2.0.0", &[]))],
                vec![Some(at("1.1.0", &[])), Some(at("2.0.0", &[]))],
            ],
        },
        Involved {
            plugin: "ma_cross".to_owned(),
            start: Some(at("1.0.0", &[("risk_model", ">=1.0, <2")])),
            routes: vec![
                vec![Some(at("2.1.0", &[("risk_model", ">=2.0")]))],
                vec![
                    Some(at("2.0.0", &[("risk_model", ">=1.0, <3")])),
                    Some(at("2.1.0", &[("risk_model", ">=2.0")])),
                ],
            ],
        },
    ];
    let explored = order(&plugins, 1, &SearchLimits::default())
        .unwrap()
        .explored;
    let within = |node_budget| {
        let limits = SearchLimits {
            node_budget,
            ..SearchLimits::default()
        };
        render(&order(&plugins, 1, &limits))
    };
    expect![[r#"
        4 states
        with a budget of as many:
        1. ma_cross 1.0.0 → 2.0.0; 1.0.0 needs `risk_model >=1.0, <2`, which step 2 breaks: it moves first
        2. risk_model 1.0.0 → 2.0.0
        3. ma_cross 2.0.0 → 2.1.0; needs `risk_model >=2.0` (after step 2)
        waves: [1] [2] [3]
        with one fewer:
        error: no order of the 2 steps was found within the search budget of 3 states: raise the budget (`node_budget`), or make fewer changes at once
    "#]].assert_eq(&format!(
        "{explored} states\nwith a budget of as many:\n{}with one fewer:\n{}",
        within(explored),
        within(explored - 1)
    ));
}

#[test]
fn a_plugin_given_twice_is_refused() {
    check(
        &[
            Involved::install("a", at("1.0.0", &[])),
            Involved::install("a", at("1.0.0", &[])),
        ],
        1,
        expect![[r#"
            error: `a` is given twice to the ordering: give each plugin once
        "#]],
    );
}

#[test]
fn a_version_that_needs_its_own_plugin_is_judged_by_itself_not_by_the_version_it_replaces() {
    // 2.0.0 needs `a ^2`: met by the version the step moves to, whatever ran before.
    check(
        &[Involved {
            plugin: "a".to_owned(),
            start: Some(at("1.0.0", &[])),
            routes: vec![vec![Some(at("2.0.0", &[("a", "^2")]))]],
        }],
        1,
        expect![[r#"
            1. a 1.0.0 → 2.0.0
            waves: [1]
        "#]],
    );
}

// ---- Properties on random sets --------------------------------------------------------------

/// A random small set: each plugin starts at a version (or absent), and has routes (possibly
/// none) that all end at one target; each version needs some others within a range of majors.
#[derive(Debug, Clone)]
struct Case {
    plugins: Vec<Involved>,
}

const IDS: [&str; 4] = ["a", "b", "c", "d"];

/// A placement of plugin `id` at major `major` (1 to 4; 0: absent), needing `deps`.
fn placement(major: u64, deps: &[(usize, u64, u64)]) -> Option<Placement> {
    (major > 0).then(|| Placement {
        version: Version::new(major, 0, 0),
        dependencies: deps
            .iter()
            .map(|&(on, low, high)| {
                let req = VersionReq::parse(&format!(">={low}.0.0, <{high}.0.0")).unwrap();
                (IDS[on].to_owned(), req)
            })
            .collect(),
    })
}

fn case_strategy(max_plugins: usize) -> impl Strategy<Value = Case> {
    // Per plugin and major (0..=4): its dependencies, each (on, low, width).
    let deps = proptest::collection::vec(
        proptest::collection::vec((0..max_plugins, 1u64..=4, 1u64..=3), 0..=2),
        5,
    );
    let plugin = (
        0u64..=4,
        0u64..=4,
        proptest::collection::vec(proptest::collection::vec(1u64..=4, 0..=2), 0..=2),
        deps,
    );
    proptest::collection::vec(plugin, 1..=max_plugins).prop_map(|plugins| {
        let count = plugins.len();
        let involved = plugins
            .into_iter()
            .enumerate()
            .map(|(i, (start, target, middles, deps))| {
                let deps_of = |major: u64| -> Vec<(usize, u64, u64)> {
                    deps[major as usize]
                        .iter()
                        .filter(|(on, _, _)| *on < count && *on != i)
                        .map(|&(on, low, width)| (on, low, low + width))
                        .collect()
                };
                let at = |major: u64| placement(major, &deps_of(major));
                let routes = if start == target {
                    Vec::new()
                } else {
                    let mut routes: Vec<Vec<Option<Placement>>> = Vec::new();
                    for middle in middles {
                        // A simple route: distinct majors, none the start or the target.
                        let mut seen = BTreeSet::from([start, target]);
                        let mut route: Vec<Option<Placement>> = middle
                            .into_iter()
                            .filter(|m| seen.insert(*m))
                            .map(at)
                            .collect();
                        route.push(at(target));
                        if !routes.contains(&route) {
                            routes.push(route);
                        }
                    }
                    if routes.is_empty() {
                        routes.push(vec![at(target)]);
                    }
                    routes
                };
                Involved {
                    plugin: IDS[i].to_owned(),
                    start: at(start),
                    routes,
                }
            })
            .collect();
        Case { plugins: involved }
    })
}

/// Where each plugin stands, written independently of the planner: `None` before it moves,
/// else (route, steps run).
type State = Vec<Option<(usize, usize)>>;

fn placement_at(plugin: &Involved, at: Option<(usize, usize)>) -> Option<&Placement> {
    match at {
        None => plugin.start.as_ref(),
        Some((route, done)) => plugin.routes[route][done - 1].as_ref(),
    }
}

/// The requirements of `state` that are unmet: (dependant, dependency).
fn unmet(plugins: &[Involved], state: &State) -> BTreeSet<(usize, String)> {
    let versions: BTreeMap<&str, &Version> = plugins
        .iter()
        .zip(state)
        .filter_map(|(p, at)| Some((p.plugin.as_str(), &placement_at(p, *at)?.version)))
        .collect();
    let mut out = BTreeSet::new();
    for (i, (plugin, at)) in plugins.iter().zip(state).enumerate() {
        let Some(placement) = placement_at(plugin, *at) else {
            continue;
        };
        for (dependency, requirement) in &placement.dependencies {
            let met = versions
                .get(dependency.as_str())
                .is_some_and(|v| version_matches(requirement, v, true));
            if !met {
                out.insert((i, dependency.clone()));
            }
        }
    }
    out
}

/// Valid: every unmet requirement was unmet at the start and its dependant has not moved.
fn valid(plugins: &[Involved], state: &State, at_start: &BTreeSet<(usize, String)>) -> bool {
    unmet(plugins, state)
        .iter()
        .all(|(i, dep)| state[*i].is_none() && at_start.contains(&(*i, dep.clone())))
}

fn done(plugins: &[Involved], state: &State) -> bool {
    plugins.iter().zip(state).all(|(p, at)| {
        let routes: Vec<&Vec<Option<Placement>>> =
            p.routes.iter().filter(|r| !r.is_empty()).collect();
        routes.is_empty() || at.is_some_and(|(route, n)| n == p.routes[route].len())
    })
}

/// Breadth-first over the same space: whether some order reaches the end.
fn brute_force(plugins: &[Involved]) -> bool {
    let start: State = vec![None; plugins.len()];
    let at_start = unmet(plugins, &start);
    let mut seen = HashSet::from([start.clone()]);
    let mut queue = VecDeque::from([start]);
    while let Some(state) = queue.pop_front() {
        if done(plugins, &state) && unmet(plugins, &state).is_empty() {
            return true;
        }
        for (i, plugin) in plugins.iter().enumerate() {
            let nexts: Vec<(usize, usize)> = match state[i] {
                None => (0..plugin.routes.len())
                    .filter(|&r| !plugin.routes[r].is_empty())
                    .map(|r| (r, 1))
                    .collect(),
                Some((r, n)) if n < plugin.routes[r].len() => vec![(r, n + 1)],
                Some(_) => Vec::new(),
            };
            for next in nexts {
                let mut after = state.clone();
                after[i] = Some(next);
                if valid(plugins, &after, &at_start) && seen.insert(after.clone()) {
                    queue.push_back(after);
                }
            }
        }
    }
    false
}

/// Replays a plan: every set valid, each plugin along one of its routes to its end, and each
/// wave valid whichever of its steps have run.
fn replay(plugins: &[Involved], ordered: &Ordered) -> Result<(), String> {
    let mut state: State = vec![None; plugins.len()];
    let at_start = unmet(plugins, &state);
    let index = |id: &str| plugins.iter().position(|p| p.plugin == id).unwrap();
    let mut states = vec![state.clone()];
    for step in &ordered.steps {
        let i = index(&step.plugin);
        let expected = match state[i] {
            None => (step.route, 1),
            Some((route, n)) => (route, n + 1),
        };
        if expected != (step.route, step.index + 1) {
            return Err(format!("step {} leaves its route", step.number));
        }
        state[i] = Some(expected);
        if placement_at(&plugins[i], state[i]).map(|p| p.version.clone()) != step.to {
            return Err(format!("step {} names another version", step.number));
        }
        if !valid(plugins, &state, &at_start) {
            return Err(format!(
                "after step {}: {:?}",
                step.number,
                unmet(plugins, &state)
            ));
        }
        states.push(state.clone());
    }
    if !done(plugins, &state) || !unmet(plugins, &state).is_empty() {
        return Err("the plan does not end where every plugin is done and met".to_owned());
    }
    // The route each plugin followed: that of its steps, none for one that did not move.
    let followed: Vec<Option<usize>> = state.iter().map(|at| at.map(|(route, _)| route)).collect();
    if ordered.routes != followed {
        return Err(format!(
            "the routes are given as {:?}, the steps follow {followed:?}",
            ordered.routes
        ));
    }
    for (i, wave) in ordered.waves.iter().enumerate() {
        if wave.number != i + 1 {
            return Err(format!("wave {} is numbered {}", i + 1, wave.number));
        }
        let first = wave.steps[0];
        let before = &states[first - 1];
        // Every subset of the wave's steps applied to the set before it.
        for mask in 0u32..(1 << wave.steps.len()) {
            let mut subset = before.clone();
            for (bit, &number) in wave.steps.iter().enumerate() {
                if mask & (1 << bit) != 0 {
                    let step = &ordered.steps[number - 1];
                    subset[index(&step.plugin)] = Some((step.route, step.index + 1));
                }
            }
            if !valid(plugins, &subset, &at_start) {
                return Err(format!("wave {} is not independent", wave.number));
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn every_set_of_every_plan_meets_its_dependencies(case in case_strategy(4), parallel in 1usize..=3) {
        if let Ok(ordered) = order(&case.plugins, parallel, &SearchLimits::default()) {
            prop_assert_eq!(replay(&case.plugins, &ordered), Ok(()));
            prop_assert!(ordered.waves.iter().all(|w| w.steps.len() <= parallel));
        }
    }

    #[test]
    fn an_order_is_found_exactly_when_brute_force_finds_one(case in case_strategy(4)) {
        let planned = order(&case.plugins, 1, &SearchLimits::default());
        let exists = brute_force(&case.plugins);
        match &planned {
            Ok(_) => prop_assert!(exists, "the planner found an order brute force did not"),
            Err(PlanError::NoOrder(_) | PlanError::FinalUnmet(_)) => {
                prop_assert!(!exists, "brute force found an order: {:?}", planned)
            }
            Err(other) => prop_assert!(false, "unexpected error {}", other),
        }
    }
}
