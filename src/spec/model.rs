//! The desired state as types: what `plugins.yaml` says, once read and checked.
//!
//! These types are the format's single definition. The decoder (`decode.rs`) builds them from
//! the YAML tree, reporting every error with its place; the JSON Schema in `schemas/` is
//! generated from them (schemars), so an editor refuses what `plugsync validate` refuses; and
//! their JSON (camelCase, as in the file) is what a lock's hash is taken over.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use plugsync_host::{MigrationRule, Probe, SwapMode};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

/// The only `apiVersion` this release reads.
pub const API_VERSION: &str = "plugsync/v1";
/// The only `kind`.
pub const KIND: &str = "PluginSet";

/// A `plugins.yaml`: the plugins one host (or a group of hosts) should run, and how to get
/// there.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(title = "plugins.yaml")]
pub struct PluginSet {
    /// `plugsync/v1`.
    #[schemars(regex(pattern = r"^plugsync/v1$"))]
    pub api_version: String,
    /// `PluginSet`.
    #[schemars(regex(pattern = r"^PluginSet$"))]
    pub kind: String,
    /// What this set is called.
    pub metadata: Metadata,
    /// What should run, and how changes are made.
    pub spec: Spec,
}

/// Names for the set.
#[derive(Debug, Clone, PartialEq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Metadata {
    /// The set's name (the desk or host group), in plans and history.
    pub name: String,
    /// Free-form labels (`env: prod`), shown in status.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// What should run, and the rules for changing it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Spec {
    /// A base file this one overlays (relative to this file): its plugins merged by id, this
    /// file's keys winning. So `hosts/canary/` and `hosts/prod/` share one base, and a rollout
    /// bumps the canary first by a commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extends: Option<String>,
    /// Where published plugins are.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<Registry>,
    /// The host these plugins are for, to plan with no host reachable (its status says the
    /// same names).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<HostTarget>,
    /// When and how changes may be made.
    #[serde(default, skip_serializing_if = "Policy::is_default")]
    pub policy: Policy,
    /// Settings every plugin gets unless it says otherwise.
    #[serde(default, skip_serializing_if = "Defaults::is_empty")]
    pub defaults: Defaults,
    /// The plugins, each once.
    #[serde(default)]
    pub plugins: Vec<PluginSpec>,
}

/// A plugin registry.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Registry {
    /// A directory (relative to this file), or an `http://` or `https://` URL.
    pub url: String,
}

/// The host a set is planned for.
#[derive(Debug, Clone, PartialEq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HostTarget {
    /// The plugin ABI the host speaks, `MAJOR.MINOR` (its status's `abi`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+\.[0-9]+$"))]
    pub abi: Option<String>,
    /// The framework version the host provides (its status's `framework`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub framework: Option<semver::Version>,
}

/// When and how changes may be made.
#[derive(Debug, Clone, PartialEq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Policy {
    /// When updates may happen. None: at any time. With `allow` windows, only inside one of
    /// them; never inside a `deny` window (a trading-hours freeze).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<Window>,
    /// How many independent steps may run at once (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 64))]
    pub max_parallel: Option<u32>,
    /// How long rollback points are kept (default `7d`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollback_retention: Option<Period>,
    /// The largest automatic jump by plugin id pattern (`strategy_*: patch`); a plugin's own
    /// `allow` wins, then the first pattern that matches, in file order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(with = "BTreeMap<String, Jump>")]
    pub compatibility: Vec<CompatibilityRule>,
    /// Refuse any artifact without a signature by a trusted key.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_signatures: bool,
    /// Refuse to reconcile without a `plugins.lock` matching this file.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub require_lock: bool,
    /// Unload running plugins this file does not name (default: leave them, and report them).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prune: bool,
}

impl Policy {
    fn is_default(&self) -> bool {
        *self == Policy::default()
    }
}

/// The largest jump by id pattern: `*` matches any run of characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompatibilityRule {
    /// The pattern (`strategy_*`).
    pub pattern: String,
    /// The largest automatic jump for the plugins it matches.
    pub allow: Jump,
}

impl Serialize for CompatibilityRule {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        // Only ever serialised inside `Policy::compatibility`, as one entry of a map.
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(&self.pattern, &self.allow)?;
        map.end()
    }
}

/// An update window.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Window {
    /// Its name, in plans ("held by `trading-hours` until 16:00").
    pub name: String,
    /// A window when updates are refused (default: one when they are allowed).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deny: bool,
    /// The days it applies to (default: every day), in its time zone.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub days: Vec<Day>,
    /// When it starts, `HH:MM` (24 h), in its time zone.
    pub from: TimeOfDay,
    /// When it ends, `HH:MM`, exclusive (`24:00`: at midnight); before `from`, it ends the
    /// next day.
    pub to: TimeOfDay,
    /// An IANA time zone (`America/New_York`, `Europe/London`, `UTC`).
    pub timezone: String,
}

/// A day of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
pub enum Day {
    /// Monday.
    Mon,
    /// Tuesday.
    Tue,
    /// Wednesday.
    Wed,
    /// Thursday.
    Thu,
    /// Friday.
    Fri,
    /// Saturday.
    Sat,
    /// Sunday.
    Sun,
}

impl Day {
    /// Every day, Monday first.
    pub const ALL: [Day; 7] = [
        Day::Mon,
        Day::Tue,
        Day::Wed,
        Day::Thu,
        Day::Fri,
        Day::Sat,
        Day::Sun,
    ];

    /// Its name in plugins.yaml.
    pub fn name(self) -> &'static str {
        ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"][self as usize]
    }
}

/// A time of day, to the minute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeOfDay {
    /// Minutes since midnight.
    pub minutes: u16,
}

impl fmt::Display for TimeOfDay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.minutes / 60, self.minutes % 60)
    }
}

impl JsonSchema for TimeOfDay {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "TimeOfDay".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A time of day, `HH:MM` (24-hour); `24:00` only as a window's `to`.",
            "pattern": "^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$",
        })
    }
}

impl Serialize for TimeOfDay {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// A duration, written `500ms`, `10s`, `30m`, `2h`, `7d` (or combined: `1h30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Period(pub Duration);

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

impl JsonSchema for Period {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Period".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "type": "string",
            "description": "A duration: `500ms`, `10s`, `30m`, `2h`, `7d`, or combined (`1h30m`).",
            "pattern": "^([0-9]+ *(ns|us|ms|s|sec|m|min|h|hr|d|day|days|w|week|weeks) *)+$",
        })
    }
}

impl Serialize for Period {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Settings every plugin gets unless it says otherwise.
#[derive(Debug, Clone, PartialEq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Defaults {
    /// The channel of plugins that pin no version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    /// The largest automatic jump.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Jump>,
    /// When to switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// What to check before and after a switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verify>,
    /// How to switch (`freshState` is a plugin's own, never a default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<Update>,
    /// What a failed step leaves.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
}

impl Defaults {
    fn is_empty(&self) -> bool {
        *self == Defaults::default()
    }
}

/// One plugin: which version, with which config, changed how.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PluginSpec {
    /// The plugin's id (`[a-z][a-z0-9_]{0,63}`), as its library declares it.
    #[schemars(regex(pattern = r"^[a-z][a-z0-9_]{0,63}$"))]
    pub id: String,
    /// An exact version: this one, and no other.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub version: Option<semver::Version>,
    /// Follow a channel instead: the highest version published on it (or on a more stable one)
    /// that `constraint` admits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<Channel>,
    /// A semver requirement (`>=1.0, <3`) the version must meet.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub constraint: Option<semver::VersionReq>,
    /// The largest automatic jump from what runs: `patch`, `minor` or `major`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow: Option<Jump>,
    /// The plugin's config (its `create(config)`); the running config when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
    /// When to switch (default `immediate`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<Strategy>,
    /// What to check before and after a switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verify>,
    /// How to switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<Update>,
    /// What a failed step leaves (default `rollback`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_failure: Option<OnFailure>,
    /// Declarative migrations, used where the plugin declares none between two versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<Migration>,
}

impl PluginSpec {
    /// The sha256 of this entry's canonical JSON, as the merged plugins.yaml gives it. A hold
    /// or a failed mark set under it records it, and stands until this entry — not any other
    /// part of the file, nor its comments or layout — changes.
    pub fn fingerprint(&self) -> plugsync_host::Digest {
        let canonical = plugsync_plugin::canonical_json(self).unwrap_or_default();
        plugsync_host::Digest::of(&canonical)
    }
}

/// A release channel. A channel sees its own releases and those of the more stable ones.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// Released.
    Stable,
    /// Release candidates, and stable.
    Beta,
    /// Early builds, beta and stable.
    Alpha,
    /// Everything published.
    Dev,
}

impl Channel {
    /// Every channel, the most stable first.
    pub const ALL: [Channel; 4] = [Channel::Stable, Channel::Beta, Channel::Alpha, Channel::Dev];

    /// Its name in plugins.yaml.
    pub fn name(self) -> &'static str {
        ["stable", "beta", "alpha", "dev"][self as usize]
    }
}

/// The largest version jump made without a person: beyond it, the plan stops and says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Jump {
    /// `x.y.Z` only.
    Patch,
    /// `x.Y.z` too.
    Minor,
    /// Any.
    Major,
}

impl Jump {
    /// Every jump, the smallest first.
    pub const ALL: [Jump; 3] = [Jump::Patch, Jump::Minor, Jump::Major];

    /// Its name in plugins.yaml.
    pub fn name(self) -> &'static str {
        ["patch", "minor", "major"][self as usize]
    }
}

/// When a switch happens.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Strategy {
    /// As soon as the step's turn comes.
    Immediate,
    /// Once the plugin has served no call for `idleFor`.
    #[serde(rename_all = "camelCase")]
    WhenIdle {
        /// How long without a call.
        idle_for: Period,
        /// Give up (or fall back) after this long (default 1h).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline: Option<Period>,
        /// What to do at the deadline (default `fail`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fallback: Option<Fallback>,
    },
    /// Once the plugin holds no position and no working order (it says so itself).
    #[serde(rename_all = "camelCase")]
    WhenFlat {
        /// Give up (or fall back) after this long (default 1h).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        deadline: Option<Period>,
        /// What to do at the deadline (default `fail`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        fallback: Option<Fallback>,
    },
    /// Not before a time, and still inside the policy's windows.
    #[serde(rename_all = "camelCase")]
    Scheduled {
        /// RFC 3339 (`2026-12-05T18:00:00-05:00`), or a time of day and an IANA zone
        /// (`18:00 America/New_York`: not before that time on the day the plan is made, in
        /// that zone).
        at: String,
    },
    /// The new version runs in shadow on mirrored calls; the switch happens once enough
    /// calls were answered alike.
    #[serde(rename_all = "camelCase")]
    BlueGreen {
        /// How many calls in a row must be answered alike.
        agreeing_calls: u64,
        /// How answers are compared.
        #[serde(default, skip_serializing_if = "Compare::is_default")]
        compare: Compare,
    },
}

/// How long a `when-idle` or `when-flat` step waits for its moment when plugins.yaml gives no
/// `deadline`.
pub const DEFAULT_STRATEGY_DEADLINE: Duration = Duration::from_secs(3600);

impl Strategy {
    /// How long a waiting strategy (`when-idle`, `when-flat`) waits at most, and what it does
    /// then; `None` for the others.
    pub fn deadline(&self) -> Option<(Duration, Fallback)> {
        let (deadline, fallback) = match self {
            Strategy::WhenIdle {
                deadline, fallback, ..
            }
            | Strategy::WhenFlat { deadline, fallback } => (deadline, fallback),
            _ => return None,
        };
        Some((
            deadline.as_ref().map_or(DEFAULT_STRATEGY_DEADLINE, |d| d.0),
            fallback.unwrap_or(Fallback::Fail),
        ))
    }

    /// The instant before which a `scheduled` step may not switch, as judged at `now`: the
    /// RFC 3339 instant given, or that time of day on the day `now` falls on in the zone
    /// given (`18:00 America/New_York` planned at 09:00 there waits until 18:00; planned at
    /// 20:00, it goes). `None` for the other strategies (and for an `at` that does not parse,
    /// which plugins.yaml's checks refuse first).
    pub fn not_before(&self, now: jiff::Timestamp) -> Option<jiff::Timestamp> {
        let Strategy::Scheduled { at } = self else {
            return None;
        };
        if let Ok(instant) = at.parse::<jiff::Timestamp>() {
            return Some(instant);
        }
        let (time, zone) = at.split_once(' ')?;
        let zone = jiff::tz::TimeZone::get(zone.trim()).ok()?;
        let time: jiff::civil::Time = format!("{time}:00").parse().ok()?;
        let today = now.to_zoned_datetime(zone.clone()).date();
        let local = today.to_datetime(time).to_zoned_datetime(zone).ok()?;
        Some(local.timestamp())
    }

    /// Its `kind` in plugins.yaml.
    pub fn kind(&self) -> &'static str {
        match self {
            Strategy::Immediate => "immediate",
            Strategy::WhenIdle { .. } => "when-idle",
            Strategy::WhenFlat { .. } => "when-flat",
            Strategy::Scheduled { .. } => "scheduled",
            Strategy::BlueGreen { .. } => "blue-green",
        }
    }
}

/// What a waiting strategy does at its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Fallback {
    /// The step fails.
    Fail,
    /// The switch happens anyway.
    Immediate,
}

/// How a blue-green step compares answers.
#[derive(Debug, Clone, PartialEq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Compare {
    /// JSON pointers into an answer that may differ (`/diagnostics/latency_us`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ignore: Vec<String>,
}

impl Compare {
    fn is_default(&self) -> bool {
        self.ignore.is_empty()
    }
}

/// What is checked before and after a switch, in the host's own terms.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Verify {
    /// Check the new version's health on the migrated live state (default true).
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub health: bool,
    /// Inputs with the outputs expected, run on a throwaway instance.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub probes: Vec<Probe>,
    /// Inputs fed to both versions from the same state, outputs compared.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub differential: Vec<Value>,
    /// What the new version must stay within after the switch, until the commit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<Soak>,
}

fn yes() -> bool {
    true
}

fn is_true(b: &bool) -> bool {
    *b
}

/// The soak: how long, and within what, before a commit.
#[derive(Debug, Clone, PartialEq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Soak {
    /// How long the new version serves before the commit (the switch's lease is this plus a
    /// margin, so a client that dies mid-soak leaves the host to roll back).
    pub duration: Period,
    /// Roll back when more than this share of calls fail (0 to 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_rate: Option<f64>,
    /// Calls served before the error rate is judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_calls: Option<u64>,
    /// Roll back when one call takes longer (microseconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_call_latency_us: Option<u64>,
    /// Commit only once this many calls were served (a soak outside trading hours waits for
    /// the open, or its lease rolls it back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_calls_before_commit: Option<u64>,
}

/// How a switch is made.
#[derive(Debug, Clone, PartialEq, Default, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Update {
    /// `optimistic` (the shortest stall; the default) or `locked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<SwapMode>,
    /// Calls kept for a rollback by replay (at most 1 000 000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1_000_000))]
    pub journal_capacity: Option<u64>,
    /// Checkpoint the plugin's state this often, for a host restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_every: Option<Period>,
    /// The step to exactly this version (the plugin's pin) starts from a fresh state: its
    /// positions are discarded, and the plan says so. Never a standing setting: a later
    /// upgrade migrates the state again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<String>")]
    pub fresh_state: Option<semver::Version>,
}

/// What a failed step leaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Roll the step back: the previous version serves on.
    Rollback,
    /// Roll back, then halt the plugin: its calls are refused until an operator resumes it
    /// (a risk model whose state is suspect must not approve orders).
    Halt,
}

/// A declarative migration between two ranges of versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Migration {
    /// The versions it migrates from.
    #[schemars(with = "String")]
    pub from: semver::VersionReq,
    /// The versions it migrates to.
    #[schemars(with = "String")]
    pub to: semver::VersionReq,
    /// The rules, in order, over `{config, state}`.
    pub rules: Vec<MigrationRule>,
}
