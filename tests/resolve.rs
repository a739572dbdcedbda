//! Resolution: pins, channels, constraints, the target host, dependencies solved jointly and
//! their conflicts in words, the lock (honoured, stale, updated), yanked versions and
//! pre-releases per channel.
//!
//! Each case is a plugins.yaml, an index written one version a line, and maybe a lock; the
//! outcome (each plugin's version and why, or the error) is a snapshot, refreshed on purpose
//! with `UPDATE_EXPECT=1 cargo test --test resolve` (review the diff).
//!
//! An index line: `<id> <version> [<channel>]`, then `;`-separated clauses: `needs <id>
//! <requirement>`, `abi <MAJOR.MINOR>`, `framework <requirement>`, `yanked` (and those only the
//! planner reads: see `tests/plan_support`).

mod plan_support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use expect_test::{Expect, expect};
use plan_support::{index, set};
use plugsync::registry::IndexFile;
use plugsync::resolve::{
    self, PluginsLock, Resolution, ResolveError, Update, desired_sha256, lock_changes,
};
use plugsync::spec::model::PluginSet;
use plugsync::spec::{self, Limits};
use plugsync_host::{Digest, PluginMetadata, TransitionKind, version_matches};

/// Each plugin's version and why, one a line, or the error.
fn outcome(result: &Result<Resolution, ResolveError>) -> String {
    match result {
        Ok(resolution) => resolution
            .plugins
            .iter()
            .map(|p| format!("{} {} ({})\n", p.id, p.version, p.why))
            .collect(),
        Err(error) => format!("error: {error}\n"),
    }
}

/// Resolves `set` against `index` with `lock`, as `update` says, and compares the outcome.
fn check_with(
    set: &PluginSet,
    index: &BTreeMap<String, IndexFile>,
    lock: Option<&PluginsLock>,
    update: &Update,
    expected: Expect,
) {
    expected.assert_eq(&outcome(&resolve::resolve(set, index, lock, update)));
}

/// [`check_with`] with no lock.
fn check(spec: &str, index_lines: &str, expected: Expect) {
    check_with(
        &set(spec),
        &index(index_lines),
        None,
        &Update::None,
        expected,
    );
}

/// The lock of a resolution that must succeed.
fn locked(set: &PluginSet, index: &BTreeMap<String, IndexFile>) -> PluginsLock {
    resolve::resolve(set, index, None, &Update::None)
        .unwrap()
        .lock()
}

/// `risk_model` and `ma_cross`, both following `stable`.
const BOTH_STABLE: &str =
    "  plugins:\n    - {id: risk_model, channel: stable}\n    - {id: ma_cross, channel: stable}\n";

/// Their first releases; then each has published a second.
const FIRST_RELEASES: &str = "risk_model 1.0.0\nma_cross 1.0.0";
const SECOND_RELEASES: &str = "risk_model 1.0.0\nrisk_model 1.1.0\nma_cross 1.0.0\nma_cross 1.1.0";

const RISK_AND_STRATEGY: &str = "
    risk_model 1.0.0
    risk_model 1.1.0
    risk_model 2.0.0
    risk_model 2.1.0 beta
    ma_cross 1.0.0
    ma_cross 2.0.0; needs risk_model >=1.0, <3
    ma_cross 2.1.0; needs risk_model >=2.0
    ma_cross 2.2.0 beta; needs risk_model >=2.1
";

#[test]
fn a_pin_is_that_version_and_no_other() {
    let spec = "  plugins:\n    - {id: risk_model, version: 1.1.0}\n";
    check(
        spec,
        RISK_AND_STRATEGY,
        expect![[r#"
        risk_model 1.1.0 (pinned)
    "#]],
    );
    let absent = "  plugins:\n    - {id: risk_model, version: 1.2.0}\n";
    check(
        absent,
        RISK_AND_STRATEGY,
        expect![[r#"
            error: `risk_model` 1.2.0 is not published; the index has 1.0.0 to 2.1.0 (4 versions): pin one of those, or publish 1.2.0
        "#]],
    );
    let unpublished = "  plugins:\n    - {id: risk_engine, version: 1.0.0}\n";
    check(
        unpublished,
        RISK_AND_STRATEGY,
        expect![[r#"
        error: `risk_engine` is not in the registry's index: publish it (`plugsync publish`), or correct its id in plugins.yaml
    "#]],
    );
}

#[test]
fn a_channel_is_its_highest_version_on_it_or_a_more_stable_one() {
    let index = "
        ma_cross 1.0.0
        ma_cross 1.1.0 beta
        ma_cross 1.2.0 alpha
        ma_cross 1.3.0 dev
    ";
    let on = |channel: &str| format!("  plugins:\n    - {{id: ma_cross, channel: {channel}}}\n");
    let cases = [
        (
            on("stable"),
            expect![[r#"
            ma_cross 1.0.0 (channel `stable`)
        "#]],
        ),
        (
            on("beta"),
            expect![[r#"
            ma_cross 1.1.0 (channel `beta`)
        "#]],
        ),
        (
            on("alpha"),
            expect![[r#"
            ma_cross 1.2.0 (channel `alpha`)
        "#]],
        ),
        (
            on("dev"),
            expect![[r#"
            ma_cross 1.3.0 (channel `dev`)
        "#]],
        ),
    ];
    for (spec, expected) in cases {
        check(&spec, index, expected);
    }
    // No channel of its own: the default's; no default either: stable.
    let defaulted =
        "  defaults:\n    channel: alpha\n  plugins:\n    - {id: ma_cross, constraint: \">=1\"}\n";
    check(
        defaulted,
        index,
        expect![[r#"
            ma_cross 1.2.0 (channel `alpha` with constraint `>=1`)
        "#]],
    );
    let bare = "  plugins:\n    - {id: ma_cross, constraint: \">=1\"}\n";
    check(
        bare,
        index,
        expect![[r#"
            ma_cross 1.0.0 (channel `stable` with constraint `>=1`)
        "#]],
    );
}

#[test]
fn a_constraint_bounds_the_channel() {
    let index = "
        ma_cross 1.0.0
        ma_cross 1.4.0
        ma_cross 2.0.0
        ma_cross 2.3.0
        ma_cross 3.0.0
    ";
    let within = |c: &str| {
        format!("  plugins:\n    - {{id: ma_cross, channel: stable, constraint: \"{c}\"}}\n")
    };
    let cases = [
        (
            within(">=1.0, <2"),
            expect![[r#"
            ma_cross 1.4.0 (channel `stable` with constraint `>=1.0, <2`)
        "#]],
        ),
        (
            within("^2"),
            expect![[r#"
            ma_cross 2.3.0 (channel `stable` with constraint `^2`)
        "#]],
        ),
        (
            within("~1.0"),
            expect![[r#"
            ma_cross 1.0.0 (channel `stable` with constraint `~1.0`)
        "#]],
        ),
        (
            within(">=4"),
            expect![[r#"
            error: no version of `ma_cross` fits channel `stable` with constraint `>=4`: of its 5 published versions, 5 are outside the constraint (the newest 3.0.0); widen the constraint, or publish a version inside it
        "#]],
        ),
    ];
    for (spec, expected) in cases {
        check(&spec, index, expected);
    }
}

/// On `stable`, semver's own rule: a pre-release is admitted only by a constraint that names
/// one. Below it, by version order, with `<3` stopping below `3.0.0`'s pre-releases.
#[test]
fn prereleases_by_channel() {
    let index = "
        ma_cross 2.0.0
        ma_cross 2.1.0-beta.1 stable
        ma_cross 2.1.0-beta.2 beta
        ma_cross 3.0.0-beta.1 beta
    ";
    let on = |channel: &str, c: &str| {
        format!("  plugins:\n    - {{id: ma_cross, channel: {channel}, constraint: \"{c}\"}}\n")
    };
    let cases = [
        (
            on("stable", ">=1.0, <3"),
            expect![[r#"
            ma_cross 2.0.0 (channel `stable` with constraint `>=1.0, <3`)
        "#]],
        ),
        (
            on("stable", ">=2.1.0-beta.1, <3"),
            expect![[r#"
            ma_cross 2.1.0-beta.1 (channel `stable` with constraint `>=2.1.0-beta.1, <3`)
        "#]],
        ),
        (
            on("beta", ">=1.0, <3"),
            expect![[r#"
            ma_cross 2.1.0-beta.2 (channel `beta` with constraint `>=1.0, <3`)
        "#]],
        ),
        (
            on("beta", ">=1.0, <3.0.0"),
            expect![[r#"
            ma_cross 2.1.0-beta.2 (channel `beta` with constraint `>=1.0, <3.0.0`)
        "#]],
        ),
        (
            on("beta", ">=1.0, <4"),
            expect![[r#"
            ma_cross 3.0.0-beta.1 (channel `beta` with constraint `>=1.0, <4`)
        "#]],
        ),
    ];
    for (spec, expected) in cases {
        check(&spec, index, expected);
    }
    // Without a constraint every version on the channel counts.
    let bare = "  plugins:\n    - {id: ma_cross, channel: beta}\n";
    check(
        bare,
        index,
        expect![[r#"
            ma_cross 3.0.0-beta.1 (channel `beta`)
        "#]],
    );
}

/// The rule resolution applies is the host's: a version resolved on `beta` is one the host
/// accepts to migrate from, by the same function.
#[test]
fn the_host_reads_requirements_as_resolution_does() {
    let index_lines = "
        ma_cross 2.0.0
        ma_cross 2.1.0-beta.2 beta
    ";
    let beta = set("  plugins:\n    - {id: ma_cross, channel: beta, constraint: \">=1.0, <3\"}\n");
    let resolution = resolve::resolve(&beta, &index(index_lines), None, &Update::None).unwrap();
    let running = &resolution.plugins[0].version;
    assert_eq!(running.to_string(), "2.1.0-beta.2");
    let constraint = beta.spec.plugins[0].constraint.as_ref().unwrap();
    assert!(version_matches(constraint, running, true));
    assert!(!version_matches(constraint, running, false));

    let metadata = |version: &str, migrates_from: &[&str]| -> PluginMetadata {
        serde_json::from_value(serde_json::json!({
            "abi": 1, "abi_minor": 2, "id": "ma_cross", "version": version,
            "kind": "strategy", "state_schema": 1, "framework": ">=0.1.0",
            "dependencies": {}, "migrates_from": migrates_from, "downgrades_to": [],
            "build": {"panic": "unwind", "sdk": "0.1.0", "rustc": "1.88.0"}
        }))
        .unwrap()
    };
    // 3.0.0 declares it migrates from `>=1.0, <3`: the running beta is inside, by order.
    let next = metadata("3.0.0", &[">=1.0, <3"]);
    let kind = TransitionKind::between(
        "ma_cross",
        &metadata(&running.to_string(), &[]),
        &next,
        false,
    );
    assert_eq!(kind.unwrap(), TransitionKind::Upgrade);
}

#[test]
fn versions_the_target_host_cannot_run_are_passed_over() {
    let index = "
        ma_cross 1.0.0; abi 1.1
        ma_cross 1.1.0; abi 1.2; framework >=0.2
        ma_cross 1.2.0; abi 1.3
        ma_cross 2.0.0; abi 2.0
    ";
    let host = |abi: &str, framework: &str| {
        format!(
            "  host:\n    abi: \"{abi}\"\n    framework: {framework}\n  plugins:\n    - {{id: ma_cross, channel: stable}}\n"
        )
    };
    let cases = [
        (
            host("1.2", "0.2.0"),
            expect![[r#"
            ma_cross 1.1.0 (channel `stable`)
        "#]],
        ),
        (
            host("1.2", "0.1.5"),
            expect![[r#"
            ma_cross 1.0.0 (channel `stable`)
        "#]],
        ),
        (
            host("1.3", "0.1.5"),
            expect![[r#"
            ma_cross 1.2.0 (channel `stable`)
        "#]],
        ),
        (
            host("2.1", "0.1.5"),
            expect![[r#"
            ma_cross 2.0.0 (channel `stable`)
        "#]],
        ),
        (
            host("3.0", "0.1.5"),
            expect![[r#"
            error: no version of `ma_cross` fits channel `stable`: of its 4 published versions, 4 are built for another host (the newest 2.0.0: built for ABI 2.0, the host speaks 3.0); publish a version built for the target host, or correct `spec.host`
        "#]],
        ),
    ];
    for (spec, expected) in cases {
        check(&spec, index, expected);
    }
    // No host target: the highest, whoever can run it.
    let cases = [(
        "  plugins:\n    - {id: ma_cross, channel: stable}\n".to_owned(),
        expect![[r#"
            ma_cross 2.0.0 (channel `stable`)
        "#]],
    )];
    for (spec, expected) in cases {
        check(&spec, index, expected);
    }
    let pinned = "  host:\n    abi: \"1.2\"\n  plugins:\n    - {id: ma_cross, version: 2.0.0}\n";
    check(
        pinned,
        index,
        expect![[r#"
            error: `ma_cross` 2.0.0 cannot run in the target host: built for ABI 2.0, the host speaks 1.2; pin a version built for it, or correct `spec.host`
        "#]],
    );
}

#[test]
fn yanked_versions_are_skipped_by_channels_and_refused_as_pins() {
    let index = "
        ma_cross 1.0.0
        ma_cross 1.1.0; yanked
    ";
    let cases = [
        (
            "  plugins:\n    - {id: ma_cross, channel: stable}\n".to_owned(),
            expect![[r#"
            ma_cross 1.0.0 (channel `stable`)
        "#]],
        ),
        (
            "  plugins:\n    - {id: ma_cross, version: 1.1.0}\n".to_owned(),
            expect![[r#"
            error: `ma_cross` 1.1.0 was yanked: pin another version (a plugins.lock that already names 1.1.0 keeps installing it)
        "#]],
        ),
        (
            "  plugins:\n    - {id: ma_cross, channel: stable, constraint: \">=1.1\"}\n".to_owned(),
            expect![[r#"
                error: no version of `ma_cross` fits channel `stable` with constraint `>=1.1`: of its 2 published versions, 1 is yanked (1.1.0), 1 is outside the constraint (1.0.0); widen the constraint, or publish a version inside it
            "#]],
        ),
    ];
    for (spec, expected) in cases {
        check(&spec, index, expected);
    }
}

#[test]
fn dependencies_are_solved_jointly() {
    // `ma_cross` 2.1.0 needs `risk_model` >=2.0; on stable `risk_model` has 2.0.0.
    check(
        BOTH_STABLE,
        RISK_AND_STRATEGY,
        expect![[r#"
        risk_model 2.0.0 (channel `stable`)
        ma_cross 2.1.0 (channel `stable`)
    "#]],
    );
    // `risk_model` held below 2: `ma_cross` steps back to 2.0.0, whose requirement it meets.
    let held = "  plugins:\n    - {id: risk_model, channel: stable, constraint: \"<2\"}\n    - {id: ma_cross, channel: stable}\n";
    check(
        held,
        RISK_AND_STRATEGY,
        expect![[r#"
        risk_model 1.1.0 (channel `stable` with constraint `<2`)
        ma_cross 2.0.0 (channel `stable`)
    "#]],
    );
    // `ma_cross` 2.2.0 on beta needs `risk_model` >=2.1, which only beta has.
    let beta =
        "  plugins:\n    - {id: risk_model, channel: beta}\n    - {id: ma_cross, channel: beta}\n";
    check(
        beta,
        RISK_AND_STRATEGY,
        expect![[r#"
        risk_model 2.1.0 (channel `beta`)
        ma_cross 2.2.0 (channel `beta`)
    "#]],
    );
    let mixed = "  plugins:\n    - {id: risk_model, channel: stable}\n    - {id: ma_cross, channel: beta}\n";
    check(
        mixed,
        RISK_AND_STRATEGY,
        expect![[r#"
        risk_model 2.0.0 (channel `stable`)
        ma_cross 2.1.0 (channel `beta`)
    "#]],
    );
    // A chain: the pin at the end decides the versions before it.
    let chain = "
        feed 1.0.0
        feed 2.0.0
        risk_model 1.0.0; needs feed ^1
        risk_model 2.0.0; needs feed ^2
        ma_cross 1.0.0; needs risk_model ^1
        ma_cross 2.0.0; needs risk_model ^2
    ";
    let pinned_feed = "  plugins:\n    - {id: ma_cross, channel: stable}\n    - {id: risk_model, channel: stable}\n    - {id: feed, version: 1.0.0}\n";
    check(
        pinned_feed,
        chain,
        expect![[r#"
        ma_cross 1.0.0 (channel `stable`)
        risk_model 1.0.0 (channel `stable`)
        feed 1.0.0 (pinned)
    "#]],
    );
}

#[test]
fn a_conflict_names_the_requirements_that_collide() {
    let pinned = "  plugins:\n    - {id: risk_model, version: 1.1.0}\n    - {id: ma_cross, version: 2.1.0}\n";
    check(
        pinned,
        RISK_AND_STRATEGY,
        expect![[r#"
            error: no versions meet every requirement: `ma_cross` 2.1.0 needs `risk_model` >=2.0, but `risk_model` is pinned to 1.1.0, and `ma_cross` is pinned to 2.1.0: change one of these in plugins.yaml (a pin, a channel or a constraint), or publish versions that agree
        "#]],
    );
    let channel = "  plugins:\n    - {id: risk_model, version: 1.1.0}\n    - {id: ma_cross, channel: stable, constraint: \">=2.1\"}\n";
    check(
        channel,
        RISK_AND_STRATEGY,
        expect![[r#"
            error: no versions meet every requirement: `ma_cross` 2.1.0 needs `risk_model` >=2.0, but `risk_model` is pinned to 1.1.0, and `ma_cross` follows channel `stable` with constraint `>=2.1`, which admits 2.1.0: change one of these in plugins.yaml (a pin, a channel or a constraint), or publish versions that agree
        "#]],
    );
    // Every version the channel admits needs what the pin excludes.
    let all_need = "
        risk_model 1.0.0
        risk_model 2.0.0
        ma_cross 1.0.0
        ma_cross 2.0.0; needs risk_model ^2
        ma_cross 2.1.0; needs risk_model ^2
        ma_cross 2.2.0; needs risk_model ^2
    ";
    let major_two = "  plugins:\n    - {id: risk_model, version: 1.0.0}\n    - {id: ma_cross, channel: stable, constraint: \"^2\"}\n";
    check(
        major_two,
        all_need,
        expect![[r#"
        error: no versions meet every requirement: `ma_cross` 2.0.0 to 2.2.0 (3 versions) need `risk_model` ^2, but `risk_model` is pinned to 1.0.0, and `ma_cross` follows channel `stable` with constraint `^2`, which admits 2.0.0 to 2.2.0 (3 versions): change one of these in plugins.yaml (a pin, a channel or a constraint), or publish versions that agree
    "#]],
    );
    // Nothing published meets the requirement.
    let index = "
        risk_model 1.0.0
        ma_cross 1.0.0; needs risk_model >=5
    ";
    check(
        BOTH_STABLE,
        index,
        expect![[r#"
            error: no versions meet every requirement: `ma_cross` 1.0.0 needs `risk_model` >=5 (no version of `risk_model` published meets it), but `ma_cross` follows channel `stable`, which admits 1.0.0: change one of these in plugins.yaml (a pin, a channel or a constraint), or publish versions that agree
        "#]],
    );
    // Through a chain of three.
    let chain = "
        feed 1.0.0
        feed 2.0.0
        risk_model 2.0.0; needs feed ^2
        ma_cross 2.0.0; needs risk_model ^2
    ";
    let pinned_feed = "  plugins:\n    - {id: ma_cross, channel: stable}\n    - {id: risk_model, channel: stable}\n    - {id: feed, version: 1.0.0}\n";
    check(
        pinned_feed,
        chain,
        expect![[r#"
            error: no versions meet every requirement: `risk_model` 2.0.0 needs `feed` ^2, but `risk_model` follows channel `stable`, which admits 2.0.0, and `feed` is pinned to 1.0.0: change one of these in plugins.yaml (a pin, a channel or a constraint), or publish versions that agree
        "#]],
    );
}

#[test]
fn a_dependency_on_a_plugin_plugins_yaml_does_not_name_is_refused() {
    let index = "
        ma_cross 1.0.0
        ma_cross 2.0.0; needs risk_model ^1
        risk_model 1.0.0
    ";
    let pinned = "  plugins:\n    - {id: ma_cross, version: 2.0.0}\n";
    check(
        pinned,
        index,
        expect![[r#"
            error: no versions meet every requirement: `ma_cross` 2.0.0 needs `risk_model`, which plugins.yaml does not name, but `ma_cross` is pinned to 2.0.0: add `risk_model` to plugins.yaml, or select a version of `ma_cross` that does not need it
        "#]],
    );
    // Following a channel, a version that cannot run without it is not chosen.
    let channel = "  plugins:\n    - {id: ma_cross, channel: stable}\n";
    check(
        channel,
        index,
        expect![[r#"
            ma_cross 1.0.0 (channel `stable`)
        "#]],
    );
}

#[test]
fn a_current_lock_is_followed_exactly() {
    let desk = set(
        "  plugins:\n    - {id: risk_model, channel: stable}\n    - {id: ma_cross, channel: stable, config: {fast: 5}}\n",
    );
    let before = index(
        "
        risk_model 1.0.0
        ma_cross 1.0.0; needs risk_model ^1
    ",
    );
    let lock = locked(&desk, &before);
    let later = index(
        "
        risk_model 1.0.0
        risk_model 1.1.0
        ma_cross 1.0.0; needs risk_model ^1
        ma_cross 1.1.0; needs risk_model ^1
    ",
    );
    check_with(
        &desk,
        &later,
        Some(&lock),
        &Update::None,
        expect![[r#"
        risk_model 1.0.0 (locked)
        ma_cross 1.0.0 (locked)
    "#]],
    );
    // Without the lock, the newest.
    check_with(
        &desk,
        &later,
        None,
        &Update::None,
        expect![[r#"
        risk_model 1.1.0 (channel `stable`)
        ma_cross 1.1.0 (channel `stable`)
    "#]],
    );
    // A config-only edit leaves the lock current.
    let reconfigured = set(
        "  plugins:\n    - {id: risk_model, channel: stable}\n    - {id: ma_cross, channel: stable, config: {fast: 8}, strategy: {kind: when-idle, idleFor: 10s}}\n",
    );
    assert_eq!(desired_sha256(&reconfigured), lock.desired_sha256);
    check_with(
        &reconfigured,
        &later,
        Some(&lock),
        &Update::None,
        expect![[r#"
        risk_model 1.0.0 (locked)
        ma_cross 1.0.0 (locked)
    "#]],
    );
}

#[test]
fn a_locked_artifact_must_be_the_one_the_index_gives() {
    let desk = set("  plugins:\n    - {id: ma_cross, channel: stable}\n");
    let index_v1 = index("ma_cross 1.0.0");
    let mut lock = locked(&desk, &index_v1);
    let tampered = Digest::of(b"other bytes");
    lock.plugins.get_mut("ma_cross").unwrap().sha256 = tampered;
    check_with(
        &desk,
        &index_v1,
        Some(&lock),
        &Update::None,
        expect![[r#"
        error: the registry's `artifacts/ma_cross/1.0.0/libma_cross.so` (`ma_cross` 1.0.0) has sha256 6b14576a0b577498ff346b0f16448a509198974ff834cd7f92c0ad785e752620, but plugins.lock recorded a3ead5eedad5df82318c51685dbc1c147a36d1ff8584fc82de6b08d0bf63a795: the artifact was republished or the registry altered; find out which before updating the lock for it (`plugsync lock --update ma_cross`)
    "#]],
    );
    // Gone from the index.
    let lock = locked(&desk, &index_v1);
    check_with(
        &desk,
        &index("ma_cross 1.1.0"),
        Some(&lock),
        &Update::None,
        expect![[r#"
        error: plugins.lock names `ma_cross` 1.0.0, which the registry's index no longer has: update the lock for it (`plugsync lock --update ma_cross`)
    "#]],
    );
}

#[test]
fn a_stale_lock_keeps_the_versions_that_still_fit() {
    let before = index(FIRST_RELEASES);
    let desk = set(BOTH_STABLE);
    let lock = locked(&desk, &before);
    let later = index(&format!(
        "{SECOND_RELEASES}
feed 1.0.0"
    ));
    // A plugin added: the file changed, the lock is stale; the others keep their versions.
    let grown = set(
        "  plugins:\n    - {id: risk_model, channel: stable}\n    - {id: ma_cross, channel: stable}\n    - {id: feed, channel: stable}\n",
    );
    assert_ne!(desired_sha256(&grown), lock.desired_sha256);
    check_with(
        &grown,
        &later,
        Some(&lock),
        &Update::None,
        expect![[r#"
        risk_model 1.0.0 (locked)
        ma_cross 1.0.0 (locked)
        feed 1.0.0 (channel `stable`)
    "#]],
    );
    // A constraint the locked version no longer meets: it moves, the other stays.
    let raised = set(
        "  plugins:\n    - {id: risk_model, channel: stable}\n    - {id: ma_cross, channel: stable, constraint: \">=1.1\"}\n",
    );
    check_with(
        &raised,
        &later,
        Some(&lock),
        &Update::None,
        expect![[r#"
        risk_model 1.0.0 (locked)
        ma_cross 1.1.0 (channel `stable` with constraint `>=1.1`)
    "#]],
    );
}

#[test]
fn a_locked_version_moves_when_a_dependency_requires_it() {
    let before = index(
        "
        risk_model 1.0.0
        ma_cross 1.0.0; needs risk_model ^1
    ",
    );
    let desk = set(BOTH_STABLE);
    let lock = locked(&desk, &before);
    // `ma_cross` is raised to 2, which needs `risk_model` 2: the lock gives way for both.
    let later = index(
        "
        risk_model 1.0.0
        risk_model 2.0.0
        ma_cross 1.0.0; needs risk_model ^1
        ma_cross 2.0.0; needs risk_model ^2
    ",
    );
    let raised = set(
        "  plugins:\n    - {id: risk_model, channel: stable}\n    - {id: ma_cross, channel: stable, constraint: \"^2\"}\n",
    );
    check_with(
        &raised,
        &later,
        Some(&lock),
        &Update::None,
        expect![[r#"
        risk_model 2.0.0 (channel `stable`)
        ma_cross 2.0.0 (channel `stable` with constraint `^2`)
    "#]],
    );
}

#[test]
fn an_update_frees_the_plugins_it_names() {
    let before = index(FIRST_RELEASES);
    let desk = set(BOTH_STABLE);
    let lock = locked(&desk, &before);
    let later = index(SECOND_RELEASES);
    let only = |ids: &[&str]| {
        Update::Plugins(ids.iter().map(|id| id.to_string()).collect::<BTreeSet<_>>())
    };
    check_with(
        &desk,
        &later,
        Some(&lock),
        &only(&["ma_cross"]),
        expect![[r#"
        risk_model 1.0.0 (locked)
        ma_cross 1.1.0 (channel `stable`)
    "#]],
    );
    check_with(
        &desk,
        &later,
        Some(&lock),
        &Update::All,
        expect![[r#"
        risk_model 1.1.0 (channel `stable`)
        ma_cross 1.1.0 (channel `stable`)
    "#]],
    );
    check_with(
        &desk,
        &later,
        Some(&lock),
        &only(&["ma_crosss"]),
        expect![[r#"
        error: cannot update `ma_crosss`: plugins.yaml has no such plugin (it has `risk_model` and `ma_cross`)
    "#]],
    );
}

#[test]
fn a_locked_yanked_version_is_kept() {
    let before = index("ma_cross 1.0.0\nma_cross 1.1.0");
    let channel = set("  plugins:\n    - {id: ma_cross, channel: stable}\n");
    let lock = locked(&channel, &before);
    let yanked = index("ma_cross 1.0.0\nma_cross 1.1.0; yanked");
    // The current lock, the stale lock (another plugins.yaml), and an update that frees it.
    check_with(
        &channel,
        &yanked,
        Some(&lock),
        &Update::None,
        expect![[r#"
        ma_cross 1.1.0 (locked)
    "#]],
    );
    let widened = set("  plugins:\n    - {id: ma_cross, channel: beta}\n");
    check_with(
        &widened,
        &yanked,
        Some(&lock),
        &Update::None,
        expect![[r#"
        ma_cross 1.1.0 (locked)
    "#]],
    );
    check_with(
        &channel,
        &yanked,
        Some(&lock),
        &Update::All,
        expect![[r#"
        ma_cross 1.0.0 (channel `stable`)
    "#]],
    );
    // A pin of a yanked version stands when the lock names it.
    let pinned = set("  plugins:\n    - {id: ma_cross, version: 1.1.0}\n");
    let pin_lock = locked(&pinned, &before);
    check_with(
        &pinned,
        &yanked,
        Some(&pin_lock),
        &Update::None,
        expect![[r#"
        ma_cross 1.1.0 (pinned)
    "#]],
    );
    let pinned_elsewhere =
        set("  host:\n    abi: \"1.2\"\n  plugins:\n    - {id: ma_cross, version: 1.1.0}\n");
    check_with(
        &pinned_elsewhere,
        &yanked,
        Some(&pin_lock),
        &Update::None,
        expect![[r#"
        ma_cross 1.1.0 (pinned)
    "#]],
    );
    check_with(
        &pinned,
        &yanked,
        None,
        &Update::None,
        expect![[r#"
        error: `ma_cross` 1.1.0 was yanked: pin another version (a plugins.lock that already names 1.1.0 keeps installing it)
    "#]],
    );
}

/// `desiredSha256` covers what resolution reads and nothing else.
#[test]
fn the_desired_hash_follows_what_resolution_reads() {
    let base = "  plugins:\n    - {id: ma_cross, channel: beta, constraint: \">=1.0, <3\"}\n";
    let hash = |spec: &str| desired_sha256(&set(spec));
    let same = [
        "  plugins:\n    - {id: ma_cross, channel: beta, constraint: \">=1.0,<3\", config: {a: 1}}\n",
        "  defaults:\n    channel: beta\n  plugins:\n    - {id: ma_cross, constraint: \">=1.0, <3\", allow: minor}\n",
        "  policy:\n    maxParallel: 2\n  plugins:\n    - {id: ma_cross, channel: beta, constraint: \">=1.0, <3\", onFailure: halt}\n",
    ];
    for spec in same {
        assert_eq!(hash(spec), hash(base), "{spec}");
    }
    let different = [
        "  plugins:\n    - {id: ma_cross, channel: alpha, constraint: \">=1.0, <3\"}\n",
        "  plugins:\n    - {id: ma_cross, channel: beta, constraint: \">=1.0, <4\"}\n",
        "  plugins:\n    - {id: ma_cross, channel: beta}\n",
        "  plugins:\n    - {id: ma_cross, version: 1.0.0}\n",
        "  host:\n    abi: \"1.2\"\n  plugins:\n    - {id: ma_cross, channel: beta, constraint: \">=1.0, <3\"}\n",
        "  plugins:\n    - {id: ma_cross, channel: beta, constraint: \">=1.0, <3\"}\n    - {id: feed, version: 1.0.0}\n",
    ];
    for spec in different {
        assert_ne!(hash(spec), hash(base), "{spec}");
    }
}

#[test]
fn lock_changes_say_what_a_new_lock_would_change() {
    let desk = set(BOTH_STABLE);
    let before = index("risk_model 1.0.0\nma_cross 1.0.0");
    let lock = locked(&desk, &before);
    assert_eq!(lock.changes_to(&lock), []);
    let later = index("risk_model 1.0.0\nma_cross 1.0.0\nma_cross 1.1.0");
    let fresh = resolve::resolve(&desk, &later, Some(&lock), &Update::None)
        .unwrap()
        .lock();
    assert_eq!(lock.changes_to(&fresh), [], "a current lock stays as it is");
    let updated = resolve::resolve(&desk, &later, Some(&lock), &Update::All)
        .unwrap()
        .lock();
    let grown = set(
        "  plugins:\n    - {id: ma_cross, channel: stable}\n    - {id: feed, channel: stable}\n",
    );
    let other = resolve::resolve(
        &grown,
        &index("ma_cross 1.0.0\nfeed 2.0.0"),
        None,
        &Update::None,
    )
    .unwrap()
    .lock();
    let render = |changes: Vec<resolve::LockChange>| {
        changes.iter().map(|c| format!("{c}\n")).collect::<String>()
    };
    expect![[r#"
        `ma_cross` 1.0.0 → 1.1.0
    "#]]
    .assert_eq(&render(lock.changes_to(&updated)));
    expect![[r#"
        `feed` added at 2.0.0
        `risk_model` 1.0.0 removed
        plugins.yaml changed since the lock was made
    "#]]
    .assert_eq(&render(lock.changes_to(&other)));
    expect![[r#"
        `ma_cross` added at 1.0.0
        `risk_model` added at 1.0.0
    "#]]
    .assert_eq(&render(lock_changes(None, &lock)));
}

#[test]
fn a_lock_round_trips_through_its_json_and_matches_its_schema() {
    let desk = set("  plugins:\n    - {id: ma_cross, channel: stable}\n");
    let lock = locked(&desk, &index("ma_cross 1.0.0"));
    let json = serde_json::to_string_pretty(&lock).unwrap();
    let back: PluginsLock = serde_json::from_str(&json).unwrap();
    assert_eq!(back, lock);
    let schema = resolve::lock_schema();
    assert_eq!(schema["additionalProperties"], false);
    let keys: BTreeSet<&str> = schema["properties"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, BTreeSet::from(["desiredSha256", "format", "plugins"]));
    let unknown = json.replacen("\"format\"", "\"formats\"", 1);
    assert!(serde_json::from_str::<PluginsLock>(&unknown).is_err());
}

/// An index a hand could have written out of order still resolves by version order.
#[test]
fn the_index_order_does_not_matter() {
    let spec = "  plugins:\n    - {id: ma_cross, channel: stable}\n";
    check(
        spec,
        "ma_cross 1.10.0\nma_cross 1.9.0\nma_cross 1.2.0",
        expect![[r#"
        ma_cross 1.10.0 (channel `stable`)
    "#]],
    );
}

#[test]
fn bad_index_entries_are_named() {
    let spec = "  plugins:\n    - {id: ma_cross, channel: stable}\n";
    check(
        spec,
        "ma_cross 1.x",
        expect![[r#"
        error: the registry's index entry for `ma_cross` 1.x has a bad `version` `1.x`: unexpected character 'x' while parsing minor version number; republish it with `plugsync publish`
    "#]],
    );
    let host = "  host:\n    framework: 0.2.0\n  plugins:\n    - {id: ma_cross, channel: stable}\n";
    check(
        host,
        "ma_cross 1.0.0; framework at least 0.1",
        expect![[r#"
        error: the registry's index entry for `ma_cross` 1.0.0 has a bad `framework` `at least 0.1`: unexpected character 'a' while parsing major version number; republish it with `plugsync publish`
    "#]],
    );
    let index = "risk_model 1.0.0\nma_cross 1.0.0; needs risk_model one";
    check(
        BOTH_STABLE,
        index,
        expect![[r#"
                error: the registry's index entry for `ma_cross` 1.0.0 has a bad `dependencies` `risk_model: one`: unexpected character 'o' while parsing major version number; republish it with `plugsync publish`
            "#]],
    );
}

#[test]
fn a_set_needs_a_registry() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugins.yaml");
    std::fs::write(
        &path,
        "apiVersion: plugsync/v1\nkind: PluginSet\nmetadata:\n  name: desk\nspec:\n  plugins:\n    - {id: ma_cross, version: 1.0.0}\n",
    )
    .unwrap();
    let set = spec::load(Path::new(&path), &Limits::default())
        .unwrap()
        .set;
    check_with(
        &set,
        &index("ma_cross 1.0.0"),
        None,
        &Update::None,
        expect![[r#"
        error: plugins.yaml names no registry to resolve `ma_cross` from: add `spec.registry.url` (a directory or an http(s) URL)
    "#]],
    );
}
