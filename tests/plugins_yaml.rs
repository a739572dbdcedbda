//! `plugins.yaml`: every error an operator can make, with its place and its fix, all at once;
//! `extends` overlays; the examples; the JSON Schema kept current.
//!
//! The error snapshots are refreshed on purpose with `UPDATE_EXPECT=1 cargo test --test
//! plugins_yaml` (review the diff); the schema with `PLUGSYNC_BLESS=1`.

use std::path::{Path, PathBuf};
use std::process::Command;

use expect_test::{Expect, expect};
use plugsync::spec::{self, Limits};

#[path = "support/bless.rs"]
mod bless;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A valid file's head, for cases that only need a `spec`.
const HEAD: &str = "apiVersion: plugsync/v1\nkind: PluginSet\nmetadata:\n  name: desk-a\n";

/// Checks `text` as `plugins.yaml` and compares the rendered errors with `expected`.
fn check(text: &str, expected: Expect) {
    let report = spec::check_text(Path::new("plugins.yaml"), text, &Limits::default());
    expected.assert_eq(&report.render(false));
}

/// As [`check`], for a file that is [`HEAD`] then `spec`.
fn check_spec(spec: &str, expected: Expect) {
    check(&format!("{HEAD}spec:\n{spec}"), expected);
}

#[test]
fn every_error_in_one_run_in_file_order_each_with_its_place_and_fix() {
    check(
        &format!(
            "{HEAD}spec:
  plugins:
    - id: ma_cross
      verison: 2.1.0
    - {{id: risk_model, version: \"2.x.1\"}}
    - id: ma_cross
      version: 2.0.0
"
        ),
        expect![[r#"
            error: unknown key `verison` in a plugin
             --> plugins.yaml:8:7
              |
            8 |       verison: 2.1.0
              |       ^^^^^^^
              |
            help: did you mean `version`?

            error: `2.x.1` is not a semantic version
             --> plugins.yaml:9:33
              |
            9 |     - {id: risk_model, version: "2.x.1"}
              |                                 ^^^^^^^
              |
            help: expected MAJOR.MINOR.PATCH, e.g. `2.0.1`

            error: plugin `ma_cross` is listed twice (first at 7:11)
              --> plugins.yaml:10:11
               |
            10 |     - id: ma_cross
               |           ^^^^^^^^

            3 errors in plugins.yaml
        "#]],
    );
}

#[test]
fn the_files_head_names_the_format() {
    check(
        "apiVersion: plugsync/v2\nkind: PlugnSet\nmetdata:\n  name: desk-a\nspec: {}\n",
        expect![[r#"
            error: the file has no `metadata`
             --> plugins.yaml:1:1
              |
            1 | apiVersion: plugsync/v2
              | ^

            error: `plugsync/v2` is not a valid `apiVersion`
             --> plugins.yaml:1:13
              |
            1 | apiVersion: plugsync/v2
              |             ^^^^^^^^^^^
              |
            help: did you mean `plugsync/v1`?

            error: `PlugnSet` is not a valid `kind`
             --> plugins.yaml:2:7
              |
            2 | kind: PlugnSet
              |       ^^^^^^^^
              |
            help: did you mean `PluginSet`?

            error: unknown key `metdata` in the file
             --> plugins.yaml:3:1
              |
            3 | metdata:
              | ^^^^^^^
              |
            help: did you mean `metadata`?

            4 errors in plugins.yaml
        "#]],
    );
}

#[test]
fn a_value_of_the_wrong_type_and_one_out_of_range() {
    check_spec(
        "  policy:\n    maxParallel: two\n    rollbackRetention: 7d\n  defaults:\n    verify:\n      soak: {duration: 10s, maxErrorRate: 5}\n",
        expect![[r#"
            error: `maxParallel` must be a whole number, found a string
             --> plugins.yaml:7:18
              |
            7 |     maxParallel: two
              |                  ^^^ expected a whole number

            error: `5` is not a valid `maxErrorRate`: it is a share of calls, from 0 to 1
              --> plugins.yaml:11:43
               |
            11 |       soak: {duration: 10s, maxErrorRate: 5}
               |                                           ^
               |
            help: write `0.001` for one call in a thousand

            2 errors in plugins.yaml
        "#]],
    );
}

#[test]
fn requirements_invalid_or_refusing_the_pin_and_versions_not_said() {
    check_spec(
        "  plugins:\n    - {id: a, channel: stable, constraint: \">=1.0 <<2\"}\n    - {id: b, version: 1.0.0, constraint: \"^2\"}\n    - {id: c, version: 1.0.0, channel: beta}\n    - {id: d}\n",
        expect![[r#"
            error: `>=1.0 <<2` is not a version requirement: expected comma after minor version number, found '<'
             --> plugins.yaml:7:44
              |
            7 |     - {id: a, channel: stable, constraint: ">=1.0 <<2"}
              |                                            ^^^^^^^^^^^
              |
            help: expected comparators separated by commas, e.g. `>=1.0, <3`

            error: plugin `b` pins 1.0.0, which its own `constraint` `^2` refuses
             --> plugins.yaml:8:24
              |
            8 |     - {id: b, version: 1.0.0, constraint: "^2"}
              |                        ^^^^^
              |
            help: change the pin, or the constraint (a pin needs none)

            error: plugin `c` pins `version` 1.0.0 and follows `channel` `beta`
             --> plugins.yaml:9:40
              |
            9 |     - {id: c, version: 1.0.0, channel: beta}
              |                                        ^^^^
              |
            help: keep one: a pin is exact, a channel floats

            error: plugin `d` names no version
              --> plugins.yaml:10:12
               |
            10 |     - {id: d}
               |            ^
               |
            help: pin one (`version: 2.1.0`), or follow a channel (`channel: stable`, with an optional `constraint`)

            4 errors in plugins.yaml
        "#]],
    );
}

#[test]
fn a_constraint_starting_with_a_chevron_must_be_quoted() {
    check_spec(
        "  plugins:\n    - id: a\n      channel: stable\n      constraint: >=1.0, <3\n",
        expect![[r#"
            error: invalid YAML: while scanning a block scalar, did not find expected comment or line break
             --> plugins.yaml:9:19
              |
            9 |       constraint: >=1.0, <3
              |                   ^
              |
            help: a value that starts with `>` or `|` must be quoted: `constraint: ">=1.0, <3"`

            1 error in plugins.yaml
        "#]],
    );
}

#[test]
fn values_not_among_the_allowed_ones_suggest_the_closest() {
    check_spec(
        "  defaults:\n    channel: nightly\n    allow: majr\n    onFailure: panic\n  plugins:\n    - id: a\n      version: 1.0.0\n      strategy: {kind: when-idel}\n      update: {mode: lazy}\n",
        expect![[r#"
            error: `nightly` is not a valid `channel`
             --> plugins.yaml:7:14
              |
            7 |     channel: nightly
              |              ^^^^^^^
              |
            help: expected one of `stable`, `beta`, `alpha`, `dev`

            error: `majr` is not a valid `allow`
             --> plugins.yaml:8:12
              |
            8 |     allow: majr
              |            ^^^^
              |
            help: did you mean `major`?

            error: `panic` is not a valid `onFailure`
             --> plugins.yaml:9:16
              |
            9 |     onFailure: panic
              |                ^^^^^
              |
            help: expected one of `rollback`, `halt`

            error: `when-idel` is not a valid `kind`
              --> plugins.yaml:13:24
               |
            13 |       strategy: {kind: when-idel}
               |                        ^^^^^^^^^
               |
            help: did you mean `when-idle`?

            error: `lazy` is not a valid `mode`
              --> plugins.yaml:14:22
               |
            14 |       update: {mode: lazy}
               |                      ^^^^
               |
            help: expected one of `optimistic`, `locked`

            5 errors in plugins.yaml
        "#]],
    );
}

#[test]
fn a_strategys_keys_are_those_of_its_kind() {
    check_spec(
        "  plugins:\n    - id: a\n      version: 1.0.0\n      strategy: {kind: when-flat, idleFor: 5m}\n    - id: b\n      version: 1.0.0\n      strategy: {kind: when-idle, idleFor: 5m, deadline: soon}\n    - id: c\n      version: 1.0.0\n      strategy: {kind: scheduled, at: tomorrow}\n    - id: d\n      version: 1.0.0\n      strategy: {kind: blue-green}\n",
        expect![[r#"
            error: unknown key `idleFor` in strategy `when-flat`
             --> plugins.yaml:9:35
              |
            9 |       strategy: {kind: when-flat, idleFor: 5m}
              |                                   ^^^^^^^
              |
            help: expected one of `kind`, `deadline`, `fallback`

            error: `soon` is not a valid `deadline`: expected number at 0
              --> plugins.yaml:12:58
               |
            12 |       strategy: {kind: when-idle, idleFor: 5m, deadline: soon}
               |                                                          ^^^^
               |
            help: write a duration: `500ms`, `10s`, `30m`, `2h`, `7d`, or `1h30m`

            error: `tomorrow` is not a valid `at`: not an RFC 3339 time, nor a time of day and an IANA zone
              --> plugins.yaml:15:39
               |
            15 |       strategy: {kind: scheduled, at: tomorrow}
               |                                       ^^^^^^^^
               |
            help: write `2026-12-05T18:00:00-05:00`, or `18:00 America/New_York` for not before that time of the day

            error: strategy `blue-green` has no `agreeingCalls`
              --> plugins.yaml:18:17
               |
            18 |       strategy: {kind: blue-green}
               |                 ^

            4 errors in plugins.yaml
        "#]],
    );
}

#[test]
fn windows_a_bad_time_an_unknown_zone_and_no_minute_left() {
    check_spec(
        "  policy:\n    windows:\n      - {name: open, from: \"9:30\", to: \"16:00\", timezone: America/New_York}\n      - {name: far, from: \"09:30\", to: \"16:00\", timezone: Mars/Olympus}\n      - {name: morning, deny: true, from: \"00:00\", to: \"12:00\", timezone: UTC}\n      - {name: afternoon, deny: true, from: \"12:00\", to: \"00:00\", timezone: UTC}\n",
        expect![[r#"
            error: the update windows never allow an update: the deny windows (`morning`, `afternoon`) cover every minute of the week
             --> plugins.yaml:8:7
              |
            8 |       - {name: open, from: "9:30", to: "16:00", timezone: America/New_York}
              |       ^
              |
            help: narrow a `deny` window, or add an `allow` window outside them

            error: `9:30` is not a valid `from`: a time of day is `HH:MM`, 24-hour
             --> plugins.yaml:8:28
              |
            8 |       - {name: open, from: "9:30", to: "16:00", timezone: America/New_York}
              |                            ^^^^^^
              |
            help: write it quoted: `"09:30"`

            error: `Mars/Olympus` is not a valid `timezone`: no such IANA time zone
             --> plugins.yaml:9:59
              |
            9 |       - {name: far, from: "09:30", to: "16:00", timezone: Mars/Olympus}
              |                                                           ^^^^^^^^^^^^
              |
            help: give an IANA time zone: `America/New_York`, `Europe/London`, `UTC`

            3 errors in plugins.yaml
        "#]],
    );
}

#[test]
fn json_pointers_in_migration_rules_and_comparisons() {
    check_spec(
        "  plugins:\n    - id: a\n      version: 2.0.0\n      strategy: {kind: blue-green, agreeingCalls: 100, compare: {ignore: [\"/diag/~2\"]}}\n      migrations:\n        - from: \"1.x\"\n          to: \"2.0.0\"\n          rules:\n            - {op: rename, from: state/fast, to: /state/fast_period}\n            - {op: default, path: /positions/ES, value: 0}\n            - {op: copy, path: /state/x}\n",
        expect![[r#"
            error: `/diag/~2` is not a valid `ignore`: `~` must be followed by `0` (for `~`) or `1` (for `/`)
             --> plugins.yaml:9:75
              |
            9 |       strategy: {kind: blue-green, agreeingCalls: 100, compare: {ignore: ["/diag/~2"]}}
              |                                                                           ^^^^^^^^^^

            error: `state/fast` is not a valid `from`: a JSON pointer starts with `/`
              --> plugins.yaml:14:34
               |
            14 |             - {op: rename, from: state/fast, to: /state/fast_period}
               |                                  ^^^^^^^^^^

            error: `/positions/ES` is not a valid `path`: it must start with `/config` or `/state`
              --> plugins.yaml:15:35
               |
            15 |             - {op: default, path: /positions/ES, value: 0}
               |                                   ^^^^^^^^^^^^^

            error: invalid migration rule: unknown variant `copy`, expected one of `rename`, `set`, `default`, `remove`
              --> plugins.yaml:16:15
               |
            16 |             - {op: copy, path: /state/x}
               |               ^

            4 errors in plugins.yaml
        "#]],
    );
}

#[test]
fn fresh_state_is_a_pin_of_one_plugin_never_a_default() {
    check_spec(
        "  defaults:\n    update: {freshState: 2.0.0}\n  plugins:\n    - id: a\n      version: 2.1.0\n      update: {freshState: 2.0.0}\n    - id: b\n      channel: stable\n      update: {freshState: 1.0.0}\n",
        expect![[r#"
            error: `2.0.0` is not a valid `freshState`: it is a plugin's own, never a default: as a default it would discard every plugin's state
             --> plugins.yaml:7:26
              |
            7 |     update: {freshState: 2.0.0}
              |                          ^^^^^
              |
            help: move it to the one plugin whose state must start fresh

            error: `freshState` names 2.0.0, but plugin `a` pins 2.1.0
              --> plugins.yaml:11:28
               |
            11 |       update: {freshState: 2.0.0}
               |                            ^^^^^
               |
            help: `freshState` discards the state on the step to exactly that version: set it to the version the plugin pins, and remove it once applied

            error: `freshState` names 1.0.0, but plugin `b` pins no version
              --> plugins.yaml:14:28
               |
            14 |       update: {freshState: 1.0.0}
               |                            ^^^^^
               |
            help: `freshState` discards the state on the step to exactly that version: set it to the version the plugin pins, and remove it once applied

            3 errors in plugins.yaml
        "#]],
    );
}

#[test]
fn registry_host_plugin_id_journal_and_probes() {
    check_spec(
        "  registry: {url: \"ftp://example.com/registry\"}\n  host: {abi: 1, framework: 0.1}\n  plugins:\n    - id: Ma-Cross\n      version: 1.0.0\n      update: {journalCapacity: 2000000}\n      verify:\n        probes:\n          - {name: p, stepz: []}\n",
        expect![[r#"
            error: `ftp://example.com/registry` is not a valid `url`: `ftp://` is not served
             --> plugins.yaml:6:19
              |
            6 |   registry: {url: "ftp://example.com/registry"}
              |                   ^^^^^^^^^^^^^^^^^^^^^^^^^^^^
              |
            help: give a directory (relative to this file) or an `http://` or `https://` URL

            error: `1` is not a valid `abi`: an ABI version is `MAJOR.MINOR`
             --> plugins.yaml:7:15
              |
            7 |   host: {abi: 1, framework: 0.1}
              |               ^
              |
            help: write it quoted, as the host's status shows it: `"1.2"`

            error: `0.1` is not a semantic version
             --> plugins.yaml:7:29
              |
            7 |   host: {abi: 1, framework: 0.1}
              |                             ^^^
              |
            help: expected MAJOR.MINOR.PATCH, e.g. `2.0.1`

            error: `Ma-Cross` is not a valid `id`: a plugin id is a lowercase letter, then up to 63 lowercase letters, digits or `_`
             --> plugins.yaml:9:11
              |
            9 |     - id: Ma-Cross
              |           ^^^^^^^^
              |
            help: use the id the plugin's library declares (`plugsync inspect LIB`)

            error: `2000000` is not a valid `journalCapacity`: it must be from 1 to 1000000
              --> plugins.yaml:11:33
               |
            11 |       update: {journalCapacity: 2000000}
               |                                 ^^^^^^^

            error: invalid probe: unknown field `stepz`, expected one of `name`, `state`, `steps`
              --> plugins.yaml:14:13
               |
            14 |           - {name: p, stepz: []}
               |             ^

            6 errors in plugins.yaml
        "#]],
    );
}

#[test]
fn yaml_the_format_refuses() {
    let cases = [
        (
            "anchors",
            format!("{HEAD}spec:\n  defaults: &d {{allow: minor}}\n"),
            expect![[r#"
                error: anchors and aliases are not supported: share settings with `spec.defaults`, or with a base file (`spec.extends`)
                 --> plugins.yaml:6:13
                  |
                6 |   defaults: &d {allow: minor}
                  |             ^^^^

                1 error in plugins.yaml
            "#]],
        ),
        (
            "tags",
            format!("{HEAD}spec:\n  plugins: !!seq []\n"),
            expect![[r#"
                error: tags (`!!seq`) are not supported: write the value itself
                 --> plugins.yaml:6:12
                  |
                6 |   plugins: !!seq []
                  |            ^^^^^^^

                1 error in plugins.yaml
            "#]],
        ),
        (
            "duplicate keys",
            format!("{HEAD}spec:\n  plugins: []\n  plugins: []\n"),
            expect![[r#"
                error: `plugins` is given twice in this mapping (first at 6:3)
                 --> plugins.yaml:7:3
                  |
                7 |   plugins: []
                  |   ^^^^^^^
                  |
                help: keep one of the two

                1 error in plugins.yaml
            "#]],
        ),
        (
            "not YAML",
            format!("{HEAD}spec: [\n"),
            expect![[r#"
                error: invalid YAML: while parsing a node, did not find expected node content
                 --> plugins.yaml:5:8
                  |
                5 | spec: [
                  |        ^

                1 error in plugins.yaml
            "#]],
        ),
    ];
    for (_, text, expected) in cases {
        check(&text, expected);
    }
}

// ---- extends ----

/// Writes `files` (name, text) under a temporary directory.
fn files(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        let path = dir.path().join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    dir
}

/// The report of loading `name` in `dir`, with the directory's path taken out.
fn load_errors(dir: &tempfile::TempDir, name: &str) -> String {
    let report = spec::load(&dir.path().join(name), &Limits::default()).unwrap_err();
    let root = dir.path().display().to_string();
    let root = std::fs::canonicalize(dir.path())
        .map(|p| p.display().to_string())
        .unwrap_or(root.clone());
    report
        .render(false)
        .replace(&root, "[ROOT]")
        .replace(&dir.path().display().to_string(), "[ROOT]")
}

#[test]
fn an_overlay_merges_its_plugins_into_the_base_by_id() {
    let desired = spec::load(
        &workspace().join("examples/desired-state/fleet/canary/plugins.yaml"),
        &Limits::default(),
    )
    .unwrap();
    let set = serde_json::to_value(&desired.set).unwrap();
    let plugins = &set["spec"]["plugins"];
    // ma_cross: the canary's pin, allow and config (a config given with another version is
    // that version's, whole); risk_model: the base's pin and halt, the canary's position limit
    // merged into the base's config.
    assert_eq!(
        plugins,
        &serde_json::json!([
            {"id": "risk_model", "version": "1.0.0", "config": {"max_position": 50}, "onFailure": "halt"},
            {"id": "ma_cross", "version": "2.0.0", "allow": "major",
             "config": {"fast_period": 5, "slow_period": 20, "signal_threshold": 0.01}},
        ])
    );
    assert_eq!(set["metadata"]["name"], "fleet-canary");
    assert_eq!(set["spec"]["policy"]["requireSignatures"], true);
    assert_eq!(set["spec"]["policy"]["windows"][0]["name"], "trading-hours");
    assert_eq!(desired.files.len(), 2);
}

#[test]
fn an_overlay_that_follows_a_channel_replaces_the_bases_pin_whole() {
    let dir = files(&[
        (
            "base.yaml",
            &format!("{HEAD}spec:\n  plugins:\n    - {{id: a, version: 1.0.0}}\n"),
        ),
        (
            "canary.yaml",
            &format!(
                "{HEAD}spec:\n  extends: base.yaml\n  plugins:\n    - {{id: a, channel: beta, constraint: \"^1\"}}\n"
            ),
        ),
    ]);
    let desired = spec::load(&dir.path().join("canary.yaml"), &Limits::default()).unwrap();
    let plugin = &desired.set.spec.plugins[0];
    assert_eq!(
        (plugin.version.as_ref(), plugin.channel.map(|c| c.name())),
        (None, Some("beta"))
    );
}

#[test]
fn an_overlay_cannot_turn_off_a_bases_guard_and_a_cycle_is_named() {
    let dir = files(&[
        (
            "base.yaml",
            &format!("{HEAD}spec:\n  policy: {{requireSignatures: true}}\n  plugins: []\n"),
        ),
        (
            "prod.yaml",
            &format!("{HEAD}spec:\n  extends: base.yaml\n  policy: {{requireSignatures: false}}\n"),
        ),
        ("a.yaml", &format!("{HEAD}spec:\n  extends: b.yaml\n")),
        ("b.yaml", &format!("{HEAD}spec:\n  extends: a.yaml\n")),
    ]);
    expect![[r#"
        error: `policy.requireSignatures` is turned on and off, in `[ROOT]/base.yaml` (6:31) and in `[ROOT]/prod.yaml`
         --> [ROOT]/prod.yaml:7:31
          |
        7 |   policy: {requireSignatures: false}
          |                               ^^^^^
          |
        help: an overlay cannot turn off its base's `requireSignatures`: remove it from `[ROOT]/prod.yaml`, or turn it off in the base for every host

        1 error in [ROOT]/prod.yaml
    "#]].assert_eq(&load_errors(&dir, "prod.yaml"));
    expect![[r#"
        error: `extends` goes round in a circle: [ROOT]/a.yaml -> [ROOT]/b.yaml -> [ROOT]/a.yaml
         --> [ROOT]/b.yaml:6:12
          |
        6 |   extends: a.yaml
          |            ^^^^^^
          |
        help: remove one of the `extends`

        1 error in [ROOT]/b.yaml
    "#]]
    .assert_eq(&load_errors(&dir, "a.yaml"));
}

#[test]
fn errors_in_a_base_name_the_base() {
    let dir = files(&[
        (
            "base.yaml",
            &format!("{HEAD}spec:\n  plugins:\n    - {{id: a, verison: 1.0.0}}\n"),
        ),
        (
            "prod.yaml",
            &format!(
                "{HEAD}spec:\n  extends: base.yaml\n  plugins:\n    - {{id: b, version: 1.0.0}}\n"
            ),
        ),
        (
            "lost.yaml",
            &format!("{HEAD}spec:\n  extends: nowhere.yaml\n"),
        ),
    ]);
    expect![[r#"
        error: unknown key `verison` in a plugin
         --> [ROOT]/base.yaml:7:15
          |
        7 |     - {id: a, verison: 1.0.0}
          |               ^^^^^^^
          |
        help: did you mean `version`?

        1 error in [ROOT]/base.yaml
    "#]]
    .assert_eq(&load_errors(&dir, "prod.yaml"));
    let lost = load_errors(&dir, "lost.yaml");
    assert!(
        lost.starts_with("error: cannot read `[ROOT]/nowhere.yaml`: No such file or directory"),
        "{lost}"
    );
}

// ---- examples, schema, the binary ----

/// Every `.yaml` under `examples/desired-state`.
fn examples() -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut dirs = vec![workspace().join("examples/desired-state")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn every_example_is_valid_and_names_the_schema_for_editors() {
    let examples = examples();
    assert!(examples.len() >= 8, "{examples:?}");
    for example in examples {
        if let Err(report) = spec::load(&example, &Limits::default()) {
            panic!("{}", report.render(false));
        }
        let text = std::fs::read_to_string(&example).unwrap();
        let schema_line = text
            .lines()
            .find_map(|l| l.strip_prefix("# yaml-language-server: $schema="))
            .unwrap_or_else(|| panic!("{} names no schema", example.display()));
        let schema = example.parent().unwrap().join(schema_line);
        assert!(
            schema.ends_with("plugins.schema.json") && schema.exists(),
            "{}: `{schema_line}` is not the schema",
            example.display()
        );
    }
}

/// Compares `text` with `schemas/<name>`, or writes it there with `PLUGSYNC_BLESS=1`.
fn check_schema_file(name: &str, text: &str) {
    bless::check_blessed(&format!("schemas/{name}"), text, "plugins_yaml");
}

#[test]
fn the_lock_schema_in_schemas_is_the_one_the_types_give() {
    let text = plugsync::ops::schema(plugsync::ops::SchemaName::Lock);
    check_schema_file("plugins-lock.schema.json", &text);
}

#[test]
fn the_plan_schema_in_schemas_is_the_one_the_types_give() {
    let text = plugsync::ops::schema(plugsync::ops::SchemaName::Plan);
    check_schema_file("plan.schema.json", &text);
}

#[test]
fn the_registry_index_schema_in_schemas_is_the_one_the_types_give() {
    let text = plugsync::ops::schema(plugsync::ops::SchemaName::Index);
    check_schema_file("registry-index.schema.json", &text);
}

#[test]
fn the_schema_in_schemas_is_the_one_the_types_give() {
    let text = plugsync::ops::schema(plugsync::ops::SchemaName::Plugins);
    check_schema_file("plugins.schema.json", &text);
    // What the parser refuses, the schema refuses: no unknown keys anywhere.
    let schema: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(schema["additionalProperties"], false);
    for (name, definition) in schema["$defs"].as_object().unwrap() {
        if definition["type"] == "object" && definition.get("properties").is_some() {
            assert_eq!(
                definition["additionalProperties"], false,
                "`{name}` admits unknown keys"
            );
        }
    }
}

#[test]
fn validate_exits_0_for_a_valid_file_and_1_with_every_error_on_stderr() {
    let bin = env!("CARGO_BIN_EXE_plugsync");
    let valid = Command::new(bin)
        .args(["validate", "-f", "examples/desired-state/desk.yaml"])
        .current_dir(workspace())
        .output()
        .unwrap();
    assert_eq!(valid.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&valid.stdout),
        "examples/desired-state/desk.yaml: valid (2 plugins)\n"
    );

    let dir = files(&[(
        "plugins.yaml",
        &format!("{HEAD}spec:\n  plugins:\n    - {{id: a, verison: 1.0.0}}\n  polcy: {{}}\n"),
    )]);
    let invalid = Command::new(bin)
        .args(["validate"])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(invalid.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&invalid.stdout), "");
    expect![[r#"
        error: unknown key `verison` in a plugin
         --> plugins.yaml:7:15
          |
        7 |     - {id: a, verison: 1.0.0}
          |               ^^^^^^^
          |
        help: did you mean `version`?

        error: unknown key `polcy` in `spec`
         --> plugins.yaml:8:3
          |
        8 |   polcy: {}
          |   ^^^^^
          |
        help: did you mean `policy`?

        2 errors in plugins.yaml
    "#]]
    .assert_eq(&String::from_utf8_lossy(&invalid.stderr));
}

#[test]
fn the_reference_in_docs_is_written_from_the_schema() {
    let text = spec::reference_markdown();
    bless::check_blessed("docs/plugins-yaml.md", &text, "plugins_yaml");
}

#[test]
fn the_digest_of_the_desired_state_ignores_layout_and_comments_not_content() {
    let dir = files(&[
        (
            "block.yaml",
            &format!(
                "{HEAD}spec:\n  plugins:\n    # the strategy\n    - id: ma_cross\n      version: 1.0.0\n      config:\n        fast_ma_period: 5\n        slow_ma_period: 20\n"
            ),
        ),
        (
            "flow.yaml",
            "kind: PluginSet\napiVersion: plugsync/v1\nmetadata: {name: desk-a}\nspec: {plugins: [{version: 1.0.0, id: ma_cross, config: {slow_ma_period: 20, fast_ma_period: 5}}]}\n",
        ),
        (
            "changed.yaml",
            &format!(
                "{HEAD}spec:\n  plugins:\n    - {{id: ma_cross, version: 1.0.0, config: {{fast_ma_period: 5, slow_ma_period: 21}}}}\n"
            ),
        ),
    ]);
    let digest = |name: &str| {
        spec::load(&dir.path().join(name), &Limits::default())
            .unwrap()
            .digest()
    };
    assert_eq!(digest("block.yaml"), digest("flow.yaml"));
    assert_ne!(digest("block.yaml"), digest("changed.yaml"));
}

#[test]
fn schema_prints_the_schema_in_schemas() {
    let output = Command::new(env!("CARGO_BIN_EXE_plugsync"))
        .arg("schema")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(0));
    let file = std::fs::read_to_string(workspace().join("schemas/plugins.schema.json")).unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout), file);
}

#[test]
fn numbers_keep_the_text_they_were_written_with_and_json_cannot_hold_infinity() {
    check_spec(
        "  host: {abi: 1.10}\n  plugins:\n    - id: a\n      version: 1.0.0\n      config: {max_loss: .inf, qty: 18446744073709551615, big: 340282366920938463463374607431768211456}\n",
        expect![[r#"
            error: `config` holds a number JSON cannot hold: `.inf` has no JSON form
              --> plugins.yaml:10:26
               |
            10 |       config: {max_loss: .inf, qty: 18446744073709551615, big: 340282366920938463463374607431768211456}
               |                          ^^^^
               |
            help: write a finite number within 64 bits, or quote it to pass a string

            1 error in plugins.yaml
        "#]],
    );
    let dir = files(&[(
        "plugins.yaml",
        &format!(
            "{HEAD}spec:\n  host: {{abi: 1.10}}\n  plugins: [{{id: a, version: 1.0.0, config: {{qty: 18446744073709551615}}}}]\n"
        ),
    )]);
    let set = spec::load(&dir.path().join("plugins.yaml"), &Limits::default())
        .unwrap()
        .set;
    assert_eq!(set.spec.host.unwrap().abi.as_deref(), Some("1.10"));
    assert_eq!(
        set.spec.plugins[0].config,
        Some(serde_json::json!({"qty": 18446744073709551615u64}))
    );
}

#[test]
fn a_window_may_end_at_midnight() {
    check_spec(
        "  policy:\n    windows:\n      - {name: day, deny: true, from: \"00:00\", to: \"24:00\", timezone: UTC, days: [Mon]}\n      - {name: bad, from: \"24:00\", to: \"01:00\", timezone: UTC}\n      - {name: signed, from: \"+9:30\", to: \"10:00\", timezone: UTC}\n",
        expect![[r#"
            error: `24:00` is not a valid `from`: a time of day is `HH:MM`, 24-hour
             --> plugins.yaml:9:27
              |
            9 |       - {name: bad, from: "24:00", to: "01:00", timezone: UTC}
              |                           ^^^^^^^
              |
            help: write it quoted: `"09:30"`

            error: `+9:30` is not a valid `from`: a time of day is `HH:MM`, 24-hour
              --> plugins.yaml:10:30
               |
            10 |       - {name: signed, from: "+9:30", to: "10:00", timezone: UTC}
               |                              ^^^^^^^
               |
            help: write it quoted: `"09:30"`

            2 errors in plugins.yaml
        "#]],
    );
}

#[test]
fn an_overlay_says_prune_either_way_narrows_a_pin_with_a_constraint_and_is_checked_merged() {
    let dir = files(&[
        (
            "base.yaml",
            &format!(
                "{HEAD}spec:\n  policy: {{prune: true}}\n  plugins:\n    - {{id: a, version: 2.1.0, update: {{freshState: 2.1.0}}}}\n    - {{id: b, version: 1.0.0}}\n"
            ),
        ),
        (
            "quiet.yaml",
            &format!("{HEAD}spec:\n  extends: base.yaml\n  policy: {{prune: false}}\n"),
        ),
        (
            "canary.yaml",
            &format!(
                "{HEAD}spec:\n  extends: base.yaml\n  plugins:\n    - {{id: a, channel: beta}}\n    - {{id: b, constraint: \"^2\"}}\n"
            ),
        ),
    ]);
    let quiet = spec::load(&dir.path().join("quiet.yaml"), &Limits::default()).unwrap();
    assert!(
        !quiet.set.spec.policy.prune,
        "the overlay's `prune: false` wins"
    );
    expect![[r#"
        error: `freshState` names 2.1.0, but plugin `a` pins no version
         --> [ROOT]/canary.yaml:8:12
          |
        8 |     - {id: a, channel: beta}
          |            ^
          |
        help: `freshState` discards the state on the step to exactly that version: set it to the version the plugin pins, and remove it once applied

        error: plugin `b` pins 1.0.0, which its own `constraint` `^2` refuses
         --> [ROOT]/canary.yaml:9:12
          |
        9 |     - {id: b, constraint: "^2"}
          |            ^
          |
        help: change the pin, or the constraint (a pin needs none)

        2 errors in [ROOT]/canary.yaml
    "#]].assert_eq(&load_errors(&dir, "canary.yaml"));
}

#[test]
fn extends_reads_only_regular_files() {
    let dir = files(&[(
        "plugins.yaml",
        &format!("{HEAD}spec:\n  extends: /dev/zero\n"),
    )]);
    let report = load_errors(&dir, "plugins.yaml");
    assert!(
        report.starts_with("error: cannot read `/dev/zero`: not a regular file"),
        "{report}"
    );
}

#[test]
fn a_report_shows_the_first_hundred_problems_and_counts_the_rest() {
    let keys: String = (0..150).map(|i| format!("  unknown{i}: 1\n")).collect();
    let report = spec::check_text(
        Path::new("plugins.yaml"),
        &format!("{HEAD}spec:\n{keys}"),
        &Limits::default(),
    )
    .render(false);
    assert_eq!(report.matches("error: unknown key").count(), 100);
    assert!(
        report.ends_with("... and 50 more not shown\n\n150 errors in plugins.yaml\n"),
        "{report}"
    );
}
