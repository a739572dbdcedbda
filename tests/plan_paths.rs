//! Upgrade paths through one plugin's version graph: the transitions the host accepts (its
//! versions' declarations, declarative rules, a fresh state), the intermediates a path may
//! pass through (not yanked, on the channel, runnable in the host), the allowed jump and
//! where it comes from, and the errors when no path exists.
//!
//! Each case is plugins.yaml (its first plugin is planned), an index one version a line (see
//! `plan_support`) and the running version; the outcome (each of the cheapest paths on a
//! line, or the error) is a snapshot, refreshed on purpose with
//! `UPDATE_EXPECT=1 cargo test --test plan_paths` (review the diff).

mod plan_support;

use expect_test::{Expect, expect};
use plan_support::{Runs, host, index, paths_of, render_paths, runs, set};
use plugsync::plan::{AllowFrom, Allowance, HostCompat, SearchLimits, jump};
use plugsync::spec::model::Jump;

/// The paths (at most the default `k`) or the error.
fn outcome(spec: &str, lines: &str, running: Runs<'_>, host: &HostCompat) -> String {
    let k = SearchLimits::default().k_paths;
    match paths_of(&set(spec), &index(lines), running, host, k) {
        Ok((_, paths)) => render_paths(&paths),
        Err(error) => format!("error: {error}\n"),
    }
}

fn check(spec: &str, lines: &str, running: &str, expected: Expect) {
    expected.assert_eq(&outcome(spec, lines, runs(running), &host()));
}

const MA_CROSS_MAJOR: &str = "  plugins:\n    - {id: ma_cross, channel: stable, allow: major}\n";

/// 2.1.0 migrates only from 2.x, 2.0.0 from 1.x.
const THREE_RELEASES: &str = "
    ma_cross 1.0.0
    ma_cross 2.0.0; from >=1.0.0, <2
    ma_cross 2.1.0; from >=2.0, <3
";

#[test]
fn a_target_that_migrates_only_from_its_own_major_is_reached_through_it() {
    check(
        MA_CROSS_MAJOR,
        THREE_RELEASES,
        "1.0.0",
        expect![[r#"
            1.0.0 → 2.0.0 (upgrade, major, by 2.0.0's migrate) → 2.1.0 (upgrade, minor, by 2.1.0's migrate)
        "#]],
    );
}

#[test]
fn the_cheapest_paths_come_first_fewer_steps_then_smaller_jumps_then_lower_versions() {
    let index = "
        ma_cross 1.0.0
        ma_cross 1.0.1; from >=1.0.0
        ma_cross 1.1.0; from >=1.0.0
        ma_cross 1.2.0; from >=1.0.0
        ma_cross 1.3.0; from >=1.0.0
    ";
    check(
        "  plugins:\n    - {id: ma_cross, channel: stable}\n",
        index,
        "1.0.0",
        expect![[r#"
            1.0.0 → 1.3.0 (upgrade, minor, by 1.3.0's migrate)
            1.0.0 → 1.0.1 (upgrade, patch, by 1.0.1's migrate) → 1.3.0 (upgrade, minor, by 1.3.0's migrate)
            1.0.0 → 1.1.0 (upgrade, minor, by 1.1.0's migrate) → 1.3.0 (upgrade, minor, by 1.3.0's migrate)
        "#]],
    );
}

#[test]
fn a_declarative_migration_is_an_edge_where_the_versions_declare_none() {
    let index = "
        ma_cross 1.0.0
        ma_cross 1.1.0
    ";
    let cases = [
        (
            // None declared, no rule: no edge.
            "  plugins:\n    - {id: ma_cross, channel: stable}\n",
            index.to_owned(),
            expect![[r#"
                error: no transition reaches `ma_cross` 1.1.0 from 1.0.0: 1.1.0 declares no version it migrates from, and no published version between them connects: publish a version that migrates from 1.0.0, add a migration from 1.0.0 to 1.1.0 to its `migrations` in plugins.yaml, or set `update.freshState: 1.1.0` to start it from a fresh state
            "#]],
        ),
        (
            // plugins.yaml's own rule.
            "  plugins:\n    - id: ma_cross\n      channel: stable\n      migrations:\n        - {from: \"^1.0\", to: \"1.1.0\", rules: []}\n",
            index.to_owned(),
            expect![[r#"
                1.0.0 → 1.1.0 (upgrade, minor, by the rules in plugins.yaml)
            "#]],
        ),
        (
            // A rule published with the target.
            "  plugins:\n    - {id: ma_cross, channel: stable}\n",
            "ma_cross 1.0.0\nma_cross 1.1.0; rule ^1.0 to =1.1.0".to_owned(),
            expect![[r#"
                1.0.0 → 1.1.0 (upgrade, minor, by the rules published with 1.1.0)
            "#]],
        ),
        (
            // A rule published with the running version.
            "  plugins:\n    - {id: ma_cross, channel: stable}\n",
            "ma_cross 1.0.0; rule ^1.0 to ^1.1\nma_cross 1.1.0".to_owned(),
            expect![[r#"
                1.0.0 → 1.1.0 (upgrade, minor, by the rules published with 1.0.0)
            "#]],
        ),
        (
            // A rule that does not cover the running version is no edge.
            "  plugins:\n    - {id: ma_cross, channel: stable}\n",
            "ma_cross 1.0.0\nma_cross 1.1.0; rule >=1.0.5 to ^1.1".to_owned(),
            expect![[r#"
                error: no transition reaches `ma_cross` 1.1.0 from 1.0.0: 1.1.0 declares no version it migrates from, and no published version between them connects: publish a version that migrates from 1.0.0, add a migration from 1.0.0 to 1.1.0 to its `migrations` in plugins.yaml, or set `update.freshState: 1.1.0` to start it from a fresh state
            "#]],
        ),
    ];
    for (spec, lines, expected) in cases {
        check(spec, &lines, "1.0.0", expected);
    }
}

#[test]
fn a_downgrade_uses_the_running_versions_downgrades_to() {
    let pinned_down = "  plugins:\n    - {id: ma_cross, version: 1.0.0}\n";
    check(
        pinned_down,
        "ma_cross 1.0.0\nma_cross 2.0.0; from ^1; down >=1.0.0, <2",
        "2.0.0",
        expect![[r#"
            2.0.0 → 1.0.0 (downgrade, major, by 2.0.0's migrate)
        "#]],
    );
    check(
        pinned_down,
        "ma_cross 1.0.0\nma_cross 2.0.0; from ^1",
        "2.0.0",
        expect![[r#"
            error: no transition reaches `ma_cross` 1.0.0 from 2.0.0: 2.0.0 declares no version it downgrades to, and no published version between them connects: publish a version that declares a downgrade to 1.0.0, add a migration from 2.0.0 to 1.0.0 to its `migrations` in plugins.yaml, or set `update.freshState: 1.0.0` to start it from a fresh state
        "#]],
    );
}

#[test]
fn intermediates_are_published_on_the_channel_and_runnable_in_the_host() {
    let with_middle = |middle: &str| {
        format!(
            "ma_cross 1.0.0\nma_cross 2.0.0{middle}; from >=1.0.0, <2\nma_cross 2.1.0; from >=2.0, <3"
        )
    };
    let cases = [
        (
            MA_CROSS_MAJOR,
            with_middle("; yanked"),
            expect![[r#"
                error: no transition reaches `ma_cross` 2.1.0 from 1.0.0: 2.1.0 migrates from `>=2.0, <3` only, and no published version between them connects (2.0.0 is yanked): publish a version that migrates from 1.0.0, add a migration from 1.0.0 to 2.1.0 to its `migrations` in plugins.yaml, or set `update.freshState: 2.1.0` to start it from a fresh state
            "#]],
        ),
        (
            MA_CROSS_MAJOR,
            with_middle(" beta"),
            expect![[r#"
                error: no transition reaches `ma_cross` 2.1.0 from 1.0.0: 2.1.0 migrates from `>=2.0, <3` only, and no published version between them connects (2.0.0 is on `beta`): publish a version that migrates from 1.0.0, add a migration from 1.0.0 to 2.1.0 to its `migrations` in plugins.yaml, or set `update.freshState: 2.1.0` to start it from a fresh state
            "#]],
        ),
        (
            // The plugin's channel sees beta.
            "  plugins:\n    - {id: ma_cross, channel: beta, allow: major}\n",
            with_middle(" beta"),
            expect![[r#"
                1.0.0 → 2.0.0 (upgrade, major, by 2.0.0's migrate) → 2.1.0 (upgrade, minor, by 2.1.0's migrate)
            "#]],
        ),
        (
            // A pin still takes intermediates from its channel (`defaults.channel` here).
            "  defaults: {channel: beta}\n  plugins:\n    - {id: ma_cross, version: 2.1.0}\n",
            with_middle(" beta"),
            expect![[r#"
                1.0.0 → 2.0.0 (upgrade, major, by 2.0.0's migrate) → 2.1.0 (upgrade, minor, by 2.1.0's migrate)
            "#]],
        ),
        (
            MA_CROSS_MAJOR,
            with_middle("; abi 2.0"),
            expect![[r#"
                error: no transition reaches `ma_cross` 2.1.0 from 1.0.0: 2.1.0 migrates from `>=2.0, <3` only, and no published version between them connects (2.0.0 cannot run in this host: built for ABI 2.0, the host speaks ABI 1): publish a version that migrates from 1.0.0, add a migration from 1.0.0 to 2.1.0 to its `migrations` in plugins.yaml, or set `update.freshState: 2.1.0` to start it from a fresh state
            "#]],
        ),
        (
            MA_CROSS_MAJOR,
            with_middle("; framework >=0.2"),
            expect![[r#"
                error: no transition reaches `ma_cross` 2.1.0 from 1.0.0: 2.1.0 migrates from `>=2.0, <3` only, and no published version between them connects (2.0.0 cannot run in this host: needs framework `>=0.2`, the host has 0.1.0): publish a version that migrates from 1.0.0, add a migration from 1.0.0 to 2.1.0 to its `migrations` in plugins.yaml, or set `update.freshState: 2.1.0` to start it from a fresh state
            "#]],
        ),
    ];
    for (spec, lines, expected) in cases {
        check(spec, &lines, "1.0.0", expected);
    }
}

#[test]
fn a_target_the_host_cannot_run_is_refused_with_what_the_host_has() {
    let lines = "ma_cross 1.0.0\nma_cross 1.1.0; from ^1; abi 2.0\nma_cross 1.2.0; from ^1; framework >=0.3";
    let cases = [
        (
            "1.1.0",
            expect![[r#"
                error: `ma_cross` 1.1.0 cannot run in this host: built for ABI 2.0, the host speaks ABI 1; publish a version built for it, or pin one that is
            "#]],
        ),
        (
            "1.2.0",
            expect![[r#"
                error: `ma_cross` 1.2.0 cannot run in this host: needs framework `>=0.3`, the host has 0.1.0; publish a version built for it, or pin one that is
            "#]],
        ),
    ];
    for (pin, expected) in cases {
        let spec = format!("  plugins:\n    - {{id: ma_cross, version: {pin}}}\n");
        check(&spec, lines, "1.0.0", expected);
    }
}

#[test]
fn every_step_keeps_within_the_allowed_jump_unless_the_target_is_pinned() {
    let cases = [
        (
            // Nothing says: minor.
            "  plugins:\n    - {id: ma_cross, channel: stable}\n",
            expect![[r#"
                error: `ma_cross` from 1.0.0 to 2.0.0 is a major jump, but `ma_cross` allows `minor` (the default, as nothing in plugins.yaml says): pin `version: 2.1.0` in plugins.yaml or set `allow: major`
            "#]],
        ),
        (
            "  defaults: {allow: patch}\n  plugins:\n    - {id: ma_cross, channel: stable}\n",
            expect![[r#"
                error: `ma_cross` from 1.0.0 to 2.0.0 is a major jump, but `ma_cross` allows `patch` (`defaults.allow`): pin `version: 2.1.0` in plugins.yaml or set `allow: major`
            "#]],
        ),
        (
            "  policy:\n    compatibility:\n      risk_*: major\n      ma_*: minor\n      \"*\": major\n  plugins:\n    - {id: ma_cross, channel: stable}\n",
            expect![[r#"
                error: `ma_cross` from 1.0.0 to 2.0.0 is a major jump, but `ma_cross` allows `minor` (`policy.compatibility` rule `ma_*`): pin `version: 2.1.0` in plugins.yaml or set `allow: major`
            "#]],
        ),
        (
            // The plugin's own `allow` wins over the policy.
            "  policy:\n    compatibility:\n      ma_*: patch\n  plugins:\n    - {id: ma_cross, channel: stable, allow: major}\n",
            expect![[r#"
                1.0.0 → 2.0.0 (upgrade, major, by 2.0.0's migrate) → 2.1.0 (upgrade, minor, by 2.1.0's migrate)
            "#]],
        ),
        (
            // A pin of exactly the target is exempt.
            "  defaults: {allow: patch}\n  plugins:\n    - {id: ma_cross, version: 2.1.0}\n",
            expect![[r#"
                1.0.0 → 2.0.0 (upgrade, major, by 2.0.0's migrate) → 2.1.0 (upgrade, minor, by 2.1.0's migrate)
            "#]],
        ),
    ];
    for (spec, expected) in cases {
        check(spec, THREE_RELEASES, "1.0.0", expected);
    }
}

#[test]
fn the_allowance_comes_from_the_plugin_then_the_first_matching_pattern_then_the_defaults() {
    let cases = [
        (
            "  plugins:\n    - {id: ma_cross, channel: stable}\n",
            Jump::Minor,
            AllowFrom::Default,
        ),
        (
            "  defaults: {allow: major}\n  plugins:\n    - {id: ma_cross, channel: stable}\n",
            Jump::Major,
            AllowFrom::Defaults,
        ),
        (
            "  defaults: {allow: major}\n  policy:\n    compatibility:\n      other: minor\n      ma*ss: patch\n      ma_*: minor\n  plugins:\n    - {id: ma_cross, channel: stable}\n",
            Jump::Patch,
            AllowFrom::Policy {
                pattern: "ma*ss".to_owned(),
            },
        ),
        (
            "  defaults: {allow: major}\n  policy:\n    compatibility:\n      ma_*: minor\n  plugins:\n    - {id: ma_cross, channel: stable, allow: patch}\n",
            Jump::Patch,
            AllowFrom::Plugin,
        ),
    ];
    for (spec, jump, from) in cases {
        let set = set(spec);
        let allow = Allowance::of(&set.spec.plugins[0], &set.spec.policy, &set.spec.defaults);
        assert_eq!(allow, Allowance { jump, from }, "{spec}");
    }
}

#[test]
fn fresh_state_makes_the_switch_to_exactly_that_version_one_edge() {
    let lines = "ma_cross 1.0.0\nma_cross 2.1.0; from >=2.0, <3";
    check(
        "  plugins:\n    - id: ma_cross\n      version: 2.1.0\n      update: {freshState: 2.1.0}\n",
        lines,
        "1.0.0",
        expect![[r#"
            1.0.0 → 2.1.0 (upgrade, major, from a fresh state (the state is discarded))
        "#]],
    );
    // It replaces a migration the versions declare, too: the operator asked for a fresh state.
    check(
        "  plugins:\n    - id: ma_cross\n      version: 1.1.0\n      update: {freshState: 1.1.0}\n",
        "ma_cross 1.0.0\nma_cross 1.1.0; from ^1",
        "1.0.0",
        expect![[r#"
            1.0.0 → 1.1.0 (upgrade, minor, from a fresh state (the state is discarded))
        "#]],
    );
    // Every path's switch into that version starts it fresh, from an intermediate too (the
    // second path here: the order may need it when the first cannot be ordered).
    check(
        "  plugins:\n    - id: ma_cross\n      version: 2.1.0\n      update: {freshState: 2.1.0}\n",
        "ma_cross 1.0.0\nma_cross 2.0.0; from ^1\nma_cross 2.1.0; from >=2.0, <3",
        "1.0.0",
        expect![[r#"
            1.0.0 → 2.1.0 (upgrade, major, from a fresh state (the state is discarded))
            1.0.0 → 2.0.0 (upgrade, major, by 2.0.0's migrate) → 2.1.0 (upgrade, minor, from a fresh state (the state is discarded))
        "#]],
    );
}

#[test]
fn the_same_version_is_no_step_or_one_reconfigure() {
    let spec = "  plugins:\n    - {id: ma_cross, version: 1.0.0}\n";
    let lines = "ma_cross 1.0.0";
    let cases = [
        (
            runs("1.0.0"),
            expect![[r#"
                no steps
            "#]],
        ),
        (
            Runs {
                rebuilt: true,
                ..runs("1.0.0")
            },
            expect![[r#"
                1.0.0 → 1.0.0 (reconfigure, with its state unchanged)
            "#]],
        ),
        (
            Runs {
                config_differs: true,
                ..runs("1.0.0")
            },
            expect![[r#"
                1.0.0 → 1.0.0 (reconfigure, with its state unchanged)
            "#]],
        ),
    ];
    for (running, expected) in cases {
        expected.assert_eq(&outcome(spec, lines, running, &host()));
    }
}

#[test]
fn jumps_are_semver_distances() {
    let v = |s: &str| semver::Version::parse(s).unwrap();
    assert_eq!(jump(&v("1.0.0"), &v("2.0.0")), Some(Jump::Major));
    assert_eq!(jump(&v("0.1.0"), &v("0.2.0")), Some(Jump::Major));
    assert_eq!(jump(&v("1.1.0"), &v("1.2.0")), Some(Jump::Minor));
    assert_eq!(jump(&v("1.1.0"), &v("1.1.1")), Some(Jump::Patch));
    assert_eq!(jump(&v("1.1.0"), &v("1.1.0")), None);
}

#[test]
fn every_edge_of_every_path_is_a_switch_the_host_accepts() {
    let lines = "
        ma_cross 1.0.0; down ^0
        ma_cross 1.5.0; from ^1; down ^1
        ma_cross 2.0.0; from >=1.0.0, <2; down ^1
        ma_cross 2.1.0; from >=2.0, <3; down ^2
        ma_cross 3.0.0; from ^2
    ";
    let index = index(lines);
    for (running, pin) in [("1.0.0", "3.0.0"), ("2.1.0", "1.5.0")] {
        let spec = format!("  plugins:\n    - {{id: ma_cross, version: {pin}}}\n");
        let (_, paths) = paths_of(&set(&spec), &index, runs(running), &host(), 5).unwrap();
        assert!(!paths.is_empty());
        for step in paths.iter().flat_map(|p| &p.steps) {
            let meta = |v: &semver::Version| {
                let entry = index["ma_cross"]
                    .versions
                    .iter()
                    .find(|e| e.version == v.to_string())
                    .unwrap();
                plugsync::plan::metadata_of("ma_cross", entry).unwrap()
            };
            let kind = plugsync_host::TransitionKind::between(
                "ma_cross",
                &meta(&step.from),
                &meta(&step.to),
                false,
            );
            assert_eq!(kind.ok(), Some(step.transition.kind), "{step:?}");
        }
    }
}

// ---- Property: random version graphs ---------------------------------------------------------

mod random_graphs {
    use std::collections::{BTreeMap, BTreeSet, VecDeque};

    use plugsync::plan::{
        self, AllowFrom, Allowance, GraphInput, PathCost, Running, VersionGraph, jump,
    };
    use plugsync::registry::IndexFile;
    use plugsync::spec::model::{Channel, Jump};
    use plugsync_host::TransitionKind;
    use proptest::prelude::*;
    use semver::Version;

    use super::plan_support::{host, index};

    const VERSIONS: [&str; 6] = ["1.0.0", "1.0.1", "1.1.0", "2.0.0", "2.1.0", "3.0.0"];

    /// Per version: the lower versions it migrates from, the lower ones it downgrades to, and
    /// whether it is yanked.
    fn graph_strategy() -> impl Strategy<Value = Vec<(Vec<bool>, Vec<bool>, bool)>> {
        proptest::collection::vec(
            (
                proptest::collection::vec(any::<bool>(), 6),
                proptest::collection::vec(any::<bool>(), 6),
                proptest::bool::weighted(0.2),
            ),
            6,
        )
    }

    fn index_of(spec: &[(Vec<bool>, Vec<bool>, bool)]) -> IndexFile {
        let mut lines = String::new();
        for (i, (from, down, yanked)) in spec.iter().enumerate() {
            lines.push_str(&format!("ma_cross {}", VERSIONS[i]));
            for j in 0..i {
                if from[j] {
                    lines.push_str(&format!("; from ={}", VERSIONS[j]));
                }
                if down[j] {
                    lines.push_str(&format!("; down ={}", VERSIONS[j]));
                }
            }
            if *yanked {
                lines.push_str("; yanked");
            }
            lines.push('\n');
        }
        index(&lines).remove("ma_cross").unwrap()
    }

    /// Fewest steps from `running` to `target` by breadth-first search over the switches the
    /// host accepts, written apart from the planner.
    fn fewest_steps(
        file: &IndexFile,
        running: usize,
        target: usize,
        allow: Jump,
        pinned: bool,
    ) -> Option<u32> {
        let v = |i: usize| Version::parse(VERSIONS[i]).unwrap();
        let (low, high) = (running.min(target), running.max(target));
        let usable = |i: usize| {
            i == running || i == target || (i > low && i < high && !file.versions[i].yanked)
        };
        let meta = |i: usize| plan::metadata_of("ma_cross", &file.versions[i]).unwrap();
        let mut steps = BTreeMap::from([(running, 0u32)]);
        let mut queue = VecDeque::from([running]);
        while let Some(a) = queue.pop_front() {
            if a == target {
                return steps.get(&a).copied();
            }
            for b in (0..VERSIONS.len()).filter(|&b| b != a && usable(b)) {
                let accepted =
                    TransitionKind::between("ma_cross", &meta(a), &meta(b), false).is_ok();
                let within = pinned || jump(&v(a), &v(b)).is_none_or(|j| j <= allow);
                if accepted && within && !steps.contains_key(&b) {
                    steps.insert(b, steps[&a] + 1);
                    queue.push_back(b);
                }
            }
        }
        None
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn paths_are_simple_accepted_cheapest_first_and_found_exactly_when_one_exists(
            spec in graph_strategy(),
            running in 0usize..6,
            target in 0usize..6,
            allow in prop_oneof![Just(Jump::Patch), Just(Jump::Minor), Just(Jump::Major)],
            pinned in any::<bool>(),
        ) {
            prop_assume!(running != target);
            let file = index_of(&spec);
            let metadata = plan::metadata_of("ma_cross", &file.versions[running]).unwrap();
            let target_version = Version::parse(VERSIONS[target]).unwrap();
            let allowance = Allowance { jump: allow, from: AllowFrom::Plugin };
            let host = host();
            let input = GraphInput {
                plugin: "ma_cross",
                running: Running {
                    metadata: &metadata,
                    sha256: file.versions[running].sha256,
                    config_differs: false,
                },
                target: &target_version,
                target_sha256: file.versions[target].sha256,
                index: &file,
                channel: Channel::Stable,
                allow: &allowance,
                pinned,
                fresh_state: None,
                migrations: &[],
                host: &host,
            };
            let graph = VersionGraph::build(&input).unwrap();
            let expected = fewest_steps(&file, running, target, allow, pinned);
            match plan::paths(&graph, 3) {
                Ok(paths) => {
                    prop_assert!(expected.is_some(), "a path where brute force finds none");
                    prop_assert_eq!(paths[0].cost.steps, expected.unwrap_or(0));
                    let mut previous = PathCost::default();
                    for path in &paths {
                        prop_assert!(path.cost >= previous, "not cheapest first");
                        previous = path.cost;
                        let mut seen = BTreeSet::from([VERSIONS[running].to_owned()]);
                        let mut at = VERSIONS[running].to_owned();
                        for step in &path.steps {
                            prop_assert_eq!(step.from.to_string(), at.clone());
                            at = step.to.to_string();
                            prop_assert!(seen.insert(at.clone()), "not simple");
                            prop_assert!(pinned || step.transition.jump.is_none_or(|j| j <= allow));
                        }
                        prop_assert_eq!(at, VERSIONS[target]);
                    }
                }
                Err(error) => prop_assert!(expected.is_none(), "no path, but brute force finds one: {}", error),
            }
        }
    }
}
