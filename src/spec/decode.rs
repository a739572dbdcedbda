//! From the YAML tree to the model, every error at once: each value is checked where it is,
//! a wrong one is reported with its place and skipped, and the walk goes on (serde's derive
//! would stop at the first).

use std::collections::BTreeMap;
use std::path::PathBuf;

use plugsync_host::{MAX_JOURNAL_CAPACITY, MigrationRule, Probe, SwapMode};
use serde_json::Value as Json;

use super::diagnostic::{Diagnostic, Problem};
use super::model::*;
use super::yaml::{Key, Limits, Node, Span, Value};

/// Walks one file's tree, collecting its problems.
pub(crate) struct Decoder {
    file: PathBuf,
    /// What was found wrong, in file order of the walk.
    pub diagnostics: Vec<Diagnostic>,
    /// Where each plugin's id is, for problems found once files are merged.
    pub plugin_spans: BTreeMap<String, Span>,
    /// Where `spec.extends` is.
    pub extends_span: Option<Span>,
    /// Plugins that tried to say their version (a value refused, a misspelt key): "names no
    /// version" would only repeat that error.
    pub version_attempted: std::collections::BTreeSet<String>,
    /// The policy's guards this file sets explicitly, and where (an overlay may not turn off
    /// a base's).
    pub guards: Vec<(&'static str, bool, Span)>,
}

/// A mapping whose keys were checked against the ones its place allows.
struct Fields<'n> {
    entries: &'n [(Key, Node)],
    span: Span,
}

impl<'n> Fields<'n> {
    /// The value of `name`; a key given `null` (or no value) counts as absent, as the schema
    /// allows.
    fn get(&self, name: &str) -> Option<&'n Node> {
        (self.entries.iter())
            .find(|(key, _)| key.name == name)
            .map(|(_, node)| node)
            .filter(|node| node.value != Value::Null)
    }
}

const ROOT_KEYS: &[&str] = &["apiVersion", "kind", "metadata", "spec"];
const METADATA_KEYS: &[&str] = &["name", "labels"];
const SPEC_KEYS: &[&str] = &[
    "extends", "registry", "host", "policy", "defaults", "plugins",
];
const REGISTRY_KEYS: &[&str] = &["url"];
const HOST_KEYS: &[&str] = &["abi", "framework"];
const POLICY_KEYS: &[&str] = &[
    "windows",
    "maxParallel",
    "rollbackRetention",
    "compatibility",
    "requireSignatures",
    "requireLock",
    "prune",
];
const WINDOW_KEYS: &[&str] = &["name", "deny", "days", "from", "to", "timezone"];
const DEFAULTS_KEYS: &[&str] = &[
    "channel",
    "allow",
    "strategy",
    "verify",
    "update",
    "onFailure",
];
const PLUGIN_KEYS: &[&str] = &[
    "id",
    "version",
    "channel",
    "constraint",
    "allow",
    "config",
    "strategy",
    "verify",
    "update",
    "onFailure",
    "migrations",
];
const STRATEGY_KINDS: &[&str] = &[
    "immediate",
    "when-idle",
    "when-flat",
    "scheduled",
    "blue-green",
];
const VERIFY_KEYS: &[&str] = &["health", "probes", "differential", "soak"];
const SOAK_KEYS: &[&str] = &[
    "duration",
    "maxErrorRate",
    "minCalls",
    "maxCallLatencyUs",
    "minCallsBeforeCommit",
];
const UPDATE_KEYS: &[&str] = &["mode", "journalCapacity", "checkpointEvery", "freshState"];
const MIGRATION_KEYS: &[&str] = &["from", "to", "rules"];
const COMPARE_KEYS: &[&str] = &["ignore"];

/// The keys of each strategy `kind`.
fn strategy_keys(kind: &str) -> &'static [&'static str] {
    match kind {
        "when-idle" => &["kind", "idleFor", "deadline", "fallback"],
        "when-flat" => &["kind", "deadline", "fallback"],
        "scheduled" => &["kind", "at"],
        "blue-green" => &["kind", "agreeingCalls", "compare"],
        _ => &["kind"],
    }
}

/// The closest of `candidates` to `found`, if close enough to be a slip: the same letters
/// in another case or with `_`/`-` (`max_parallel` for `maxParallel`), or a small edit away.
pub(crate) fn closest(found: &str, candidates: &[&'static str]) -> Option<&'static str> {
    // Nothing long is a slip of a short name (and edit distance is quadratic in the length).
    let longest = candidates.iter().map(|c| c.len()).max().unwrap_or(0);
    if found.len() > 2 * longest {
        return None;
    }
    let fold = |s: &str| -> String {
        s.chars()
            .filter(|c| *c != '_' && *c != '-')
            .flat_map(char::to_lowercase)
            .collect()
    };
    let folded = fold(found);
    if let Some(same) = candidates.iter().find(|c| fold(c) == folded) {
        return Some(same);
    }
    candidates
        .iter()
        .map(|c| (strsim::damerau_levenshtein(&folded, &fold(c)), *c))
        .filter(|(distance, c)| *distance <= (c.len() / 3).max(1))
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

impl Decoder {
    pub(crate) fn new(file: PathBuf) -> Decoder {
        Decoder {
            file,
            diagnostics: Vec::new(),
            plugin_spans: BTreeMap::new(),
            extends_span: None,
            version_attempted: Default::default(),
            guards: Vec::new(),
        }
    }

    fn report(&mut self, span: Span, problem: Problem) {
        self.diagnostics.push(Diagnostic {
            file: self.file.clone(),
            span: Some(span),
            problem,
        });
    }

    fn wrong_type(&mut self, node: &Node, key: &str, expected: &'static str) {
        self.report(
            node.span,
            Problem::WrongType {
                key: key.to_owned(),
                expected,
                found: node.value.kind(),
            },
        );
    }

    /// `node` as a mapping whose keys are among `allowed` (each other key reported).
    fn map<'n>(
        &mut self,
        node: &'n Node,
        key: &str,
        within: &str,
        allowed: &'static [&'static str],
    ) -> Option<Fields<'n>> {
        let Value::Map(entries) = &node.value else {
            self.wrong_type(node, key, "a mapping");
            return None;
        };
        for (key, _) in entries {
            if !allowed.contains(&key.name.as_str()) {
                self.report(
                    key.span,
                    Problem::UnknownKey {
                        key: key.name.clone(),
                        within: within.to_owned(),
                        suggestion: closest(&key.name, allowed),
                        expected: allowed,
                    },
                );
            }
        }
        Some(Fields {
            entries,
            span: node.span,
        })
    }

    fn required<'n>(
        &mut self,
        fields: &Fields<'n>,
        key: &'static str,
        within: &str,
    ) -> Option<&'n Node> {
        let node = fields.get(key);
        if node.is_none() {
            self.report(
                fields.span,
                Problem::MissingKey {
                    key,
                    within: within.to_owned(),
                },
            );
        }
        node
    }

    fn seq<'n>(&mut self, node: &'n Node, key: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            _ => {
                self.wrong_type(node, key, "a sequence");
                None
            }
        }
    }

    fn string(&mut self, node: &Node, key: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            _ => {
                self.wrong_type(node, key, "a string");
                None
            }
        }
    }

    /// A scalar read as text (a version `2` written unquoted is still text here).
    fn text(&mut self, node: &Node, key: &str) -> Option<String> {
        let text = node.scalar_text();
        if text.is_none() {
            self.wrong_type(node, key, "a string");
        }
        text
    }

    fn boolean(&mut self, node: &Node, key: &str) -> Option<bool> {
        match node.value {
            Value::Bool(b) => Some(b),
            _ => {
                self.wrong_type(node, key, "`true` or `false`");
                None
            }
        }
    }

    fn count(&mut self, node: &Node, key: &str, min: u64, max: u64) -> Option<u64> {
        let Value::Int(n) = node.value else {
            self.wrong_type(node, key, "a whole number");
            return None;
        };
        match u64::try_from(n) {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                self.report(
                    node.span,
                    Problem::Invalid {
                        key: key.to_owned(),
                        found: n.to_string(),
                        reason: format!("it must be from {min} to {max}"),
                        fix: None,
                    },
                );
                None
            }
        }
    }

    fn fraction(&mut self, node: &Node, key: &str) -> Option<f64> {
        let value = match node.value {
            Value::Int(n) => n as f64,
            Value::Float(f) => f,
            _ => {
                self.wrong_type(node, key, "a number");
                return None;
            }
        };
        if !(0.0..=1.0).contains(&value) {
            self.report(
                node.span,
                Problem::Invalid {
                    key: key.to_owned(),
                    found: value.to_string(),
                    reason: "it is a share of calls, from 0 to 1".to_owned(),
                    fix: Some("write `0.001` for one call in a thousand".to_owned()),
                },
            );
            return None;
        }
        Some(value)
    }

    fn version(&mut self, node: &Node, key: &str) -> Option<semver::Version> {
        let text = self.text(node, key)?;
        match semver::Version::parse(text.trim()) {
            Ok(version) => Some(version),
            Err(_) => {
                self.report(node.span, Problem::NotAVersion { found: text });
                None
            }
        }
    }

    fn requirement(&mut self, node: &Node, key: &str) -> Option<semver::VersionReq> {
        let text = self.text(node, key)?;
        match semver::VersionReq::parse(&text) {
            Ok(requirement) => Some(requirement),
            Err(error) => {
                self.report(
                    node.span,
                    Problem::NotARequirement {
                        found: text,
                        reason: error.to_string(),
                    },
                );
                None
            }
        }
    }

    fn period(&mut self, node: &Node, key: &str) -> Option<Period> {
        let text = self.text(node, key)?;
        match humantime::parse_duration(&text) {
            Ok(duration) => Some(Period(duration)),
            Err(error) => {
                self.report(
                    node.span,
                    Problem::Invalid {
                        key: key.to_owned(),
                        found: text,
                        reason: error.to_string(),
                        fix: Some(
                            "write a duration: `500ms`, `10s`, `30m`, `2h`, `7d`, or `1h30m`"
                                .to_owned(),
                        ),
                    },
                );
                None
            }
        }
    }

    /// One of `options` by name.
    fn choice<T: Copy>(
        &mut self,
        node: &Node,
        key: &str,
        options: &[(&'static str, T)],
    ) -> Option<T> {
        let found = self.text(node, key)?;
        if let Some((_, value)) = options.iter().find(|(name, _)| *name == found) {
            return Some(*value);
        }
        let names: Vec<&'static str> = options.iter().map(|(name, _)| *name).collect();
        self.report(
            node.span,
            Problem::UnknownValue {
                key: key.to_owned(),
                suggestion: closest(&found, &names),
                found,
                expected: names,
            },
        );
        None
    }

    /// A JSON pointer (`/a/b`, `~0` and `~1` escapes), optionally under one of `roots`.
    fn pointer(&mut self, node: &Node, key: &str, roots: &[&str]) -> Option<String> {
        let text = self.string(node, key)?;
        let reason = if !text.is_empty() && !text.starts_with('/') {
            Some("a JSON pointer starts with `/`".to_owned())
        } else if text
            .split('~')
            .skip(1)
            .any(|rest| !rest.starts_with('0') && !rest.starts_with('1'))
        {
            Some("`~` must be followed by `0` (for `~`) or `1` (for `/`)".to_owned())
        } else if !roots.is_empty()
            && !roots
                .iter()
                .any(|root| text == *root || text.starts_with(&format!("{root}/")))
        {
            let roots: Vec<String> = roots.iter().map(|root| format!("`{root}`")).collect();
            Some(format!("it must start with {}", roots.join(" or ")))
        } else {
            None
        };
        match reason {
            Some(reason) => {
                self.report(
                    node.span,
                    Problem::Invalid {
                        key: key.to_owned(),
                        found: text,
                        reason,
                        fix: None,
                    },
                );
                None
            }
            None => Some(text),
        }
    }

    /// A node as JSON (a config, an input), or the place of a number JSON cannot hold.
    fn json(&mut self, node: &Node, key: &str) -> Option<Json> {
        match node.to_json() {
            Ok(json) => Some(json),
            Err((span, reason)) => {
                self.report(
                    span,
                    Problem::NotJson {
                        key: key.to_owned(),
                        reason,
                    },
                );
                None
            }
        }
    }

    /// A value of the host's own types (a probe, a migration rule), read as the host reads it.
    fn host_type<T: serde::de::DeserializeOwned>(
        &mut self,
        node: &Node,
        what: &'static str,
    ) -> Option<T> {
        let json = self.json(node, what)?;
        match serde_json::from_value(json) {
            Ok(value) => Some(value),
            Err(error) => {
                self.report(
                    node.span,
                    Problem::HostShape {
                        what,
                        reason: error.to_string(),
                    },
                );
                None
            }
        }
    }

    /// The whole file. `None` only when its root is not a mapping; otherwise whatever could be
    /// read, with every problem in [`Self::diagnostics`].
    pub(crate) fn plugin_set(&mut self, root: &Node, limits: &Limits) -> Option<PluginSet> {
        let fields = self.map(root, "plugins.yaml", "the file", ROOT_KEYS)?;
        let api_version = match self.required(&fields, "apiVersion", "the file") {
            Some(node) => self.fixed(node, "apiVersion", API_VERSION),
            None => String::new(),
        };
        let kind = match self.required(&fields, "kind", "the file") {
            Some(node) => self.fixed(node, "kind", KIND),
            None => String::new(),
        };
        let metadata = match self.required(&fields, "metadata", "the file") {
            Some(node) => self.metadata(node),
            None => Metadata::default(),
        };
        let spec = match self.required(&fields, "spec", "the file") {
            Some(node) => self.spec(node, limits),
            None => Spec::default(),
        };
        Some(PluginSet {
            api_version,
            kind,
            metadata,
            spec,
        })
    }

    fn fixed(&mut self, node: &Node, key: &str, expected: &'static str) -> String {
        match self.text(node, key) {
            Some(found) if found == expected => found,
            Some(found) => {
                self.report(
                    node.span,
                    Problem::UnknownValue {
                        key: key.to_owned(),
                        suggestion: closest(&found, &[expected]),
                        found,
                        expected: vec![expected],
                    },
                );
                String::new()
            }
            None => String::new(),
        }
    }

    fn metadata(&mut self, node: &Node) -> Metadata {
        let mut metadata = Metadata::default();
        let Some(fields) = self.map(node, "metadata", "`metadata`", METADATA_KEYS) else {
            return metadata;
        };
        if let Some(name) = self.required(&fields, "name", "`metadata`") {
            metadata.name = self.string(name, "name").unwrap_or_default();
        }
        if let Some(labels) = fields.get("labels")
            && let Value::Map(entries) = &labels.value
        {
            for (key, value) in entries {
                if let Some(value) = self.text(value, &key.name) {
                    metadata.labels.insert(key.name.clone(), value);
                }
            }
        } else if let Some(labels) = fields.get("labels") {
            self.wrong_type(labels, "labels", "a mapping");
        }
        metadata
    }

    fn spec(&mut self, node: &Node, limits: &Limits) -> Spec {
        let mut spec = Spec::default();
        let Some(fields) = self.map(node, "spec", "`spec`", SPEC_KEYS) else {
            return spec;
        };
        if let Some(extends) = fields.get("extends") {
            self.extends_span = Some(extends.span);
            spec.extends = self.string(extends, "extends");
        }
        spec.registry = fields.get("registry").and_then(|n| self.registry(n));
        spec.host = fields.get("host").and_then(|n| self.host(n));
        if let Some(policy) = fields.get("policy") {
            spec.policy = self.policy(policy);
        }
        if let Some(defaults) = fields.get("defaults") {
            spec.defaults = self.defaults(defaults);
        }
        if let Some(plugins) = fields.get("plugins")
            && let Some(items) = self.seq(plugins, "plugins")
        {
            if items.len() > limits.max_plugins {
                self.report(
                    plugins.span,
                    Problem::TooManyPlugins {
                        count: items.len(),
                        limit: limits.max_plugins,
                    },
                );
                return spec;
            }
            let mut seen: BTreeMap<String, Span> = BTreeMap::new();
            for item in items {
                let Some((plugin, id_span)) = self.plugin(item) else {
                    continue;
                };
                if let Some(first) = seen.get(&plugin.id) {
                    self.report(
                        id_span,
                        Problem::DuplicatePlugin {
                            id: plugin.id.clone(),
                            first: *first,
                        },
                    );
                    continue;
                }
                seen.insert(plugin.id.clone(), id_span);
                self.plugin_spans.insert(plugin.id.clone(), id_span);
                spec.plugins.push(plugin);
            }
        }
        spec
    }

    fn registry(&mut self, node: &Node) -> Option<Registry> {
        let fields = self.map(node, "registry", "`spec.registry`", REGISTRY_KEYS)?;
        let url_node = self.required(&fields, "url", "`spec.registry`")?;
        let url = self.string(url_node, "url")?;
        if let Some((scheme, _)) = url.split_once("://")
            && scheme != "http"
            && scheme != "https"
        {
            let scheme = scheme.to_owned();
            self.report(
                url_node.span,
                Problem::Invalid {
                    key: "url".to_owned(),
                    found: url,
                    reason: format!("`{scheme}://` is not served"),
                    fix: Some(
                        "give a directory (relative to this file) or an `http://` or `https://` \
                         URL"
                        .to_owned(),
                    ),
                },
            );
            return None;
        }
        Some(Registry { url })
    }

    fn host(&mut self, node: &Node) -> Option<HostTarget> {
        let fields = self.map(node, "host", "`spec.host`", HOST_KEYS)?;
        let mut host = HostTarget::default();
        if let Some(abi) = fields.get("abi")
            && let Some(text) = self.text(abi, "abi")
        {
            let valid = text.split_once('.').is_some_and(|(major, minor)| {
                major.parse::<u16>().is_ok() && minor.parse::<u16>().is_ok()
            });
            if valid {
                host.abi = Some(text);
            } else {
                self.report(
                    abi.span,
                    Problem::Invalid {
                        key: "abi".to_owned(),
                        found: text,
                        reason: "an ABI version is `MAJOR.MINOR`".to_owned(),
                        fix: Some(
                            "write it quoted, as the host's status shows it: `\"1.2\"`".to_owned(),
                        ),
                    },
                );
            }
        }
        host.framework = fields
            .get("framework")
            .and_then(|n| self.version(n, "framework"));
        Some(host)
    }

    fn policy(&mut self, node: &Node) -> Policy {
        let mut policy = Policy::default();
        let Some(fields) = self.map(node, "policy", "`spec.policy`", POLICY_KEYS) else {
            return policy;
        };
        if let Some(windows) = fields.get("windows")
            && let Some(items) = self.seq(windows, "windows")
        {
            policy.windows = items.iter().filter_map(|w| self.window(w)).collect();
            if let Err(why) = super::windows::check_some_minute_allowed(&policy.windows) {
                self.report(windows.span, Problem::WindowsDenyAlways { why });
            }
        }
        policy.max_parallel = fields
            .get("maxParallel")
            .and_then(|n| self.count(n, "maxParallel", 1, 64))
            .map(|n| n as u32);
        policy.rollback_retention = fields
            .get("rollbackRetention")
            .and_then(|n| self.period(n, "rollbackRetention"));
        if let Some(rules) = fields.get("compatibility") {
            if let Value::Map(entries) = &rules.value {
                for (pattern, jump) in entries {
                    let valid = pattern.name.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '*'
                    });
                    if !valid {
                        self.report(
                            pattern.span,
                            Problem::Invalid {
                                key: "compatibility".to_owned(),
                                found: pattern.name.clone(),
                                reason: "a pattern is a plugin id with `*` for any run of \
                                         characters"
                                    .to_owned(),
                                fix: Some("e.g. `strategy_*: patch`".to_owned()),
                            },
                        );
                        continue;
                    }
                    if let Some(allow) = self.jump(jump, &pattern.name) {
                        policy.compatibility.push(CompatibilityRule {
                            pattern: pattern.name.clone(),
                            allow,
                        });
                    }
                }
            } else {
                self.wrong_type(rules, "compatibility", "a mapping");
            }
        }
        let mut flag = |key: &'static str| {
            let node = fields.get(key)?;
            let value = self.boolean(node, key)?;
            self.guards.push((key, value, node.span));
            Some(value)
        };
        policy.require_signatures = flag("requireSignatures").unwrap_or(false);
        policy.require_lock = flag("requireLock").unwrap_or(false);
        policy.prune = flag("prune").unwrap_or(false);
        policy
    }

    fn window(&mut self, node: &Node) -> Option<Window> {
        let fields = self.map(node, "windows[]", "a window", WINDOW_KEYS)?;
        let name = self
            .required(&fields, "name", "a window")
            .and_then(|n| self.string(n, "name"));
        let deny = fields
            .get("deny")
            .and_then(|n| self.boolean(n, "deny"))
            .unwrap_or(false);
        let mut days = Vec::new();
        if let Some(list) = fields.get("days")
            && let Some(items) = self.seq(list, "days")
        {
            let options: Vec<(&'static str, Day)> =
                Day::ALL.iter().map(|day| (day.name(), *day)).collect();
            days = items
                .iter()
                .filter_map(|item| self.choice(item, "days", &options))
                .collect();
        }
        let from = self
            .required(&fields, "from", "a window")
            .and_then(|n| self.time_of_day(n, "from"));
        let to = self
            .required(&fields, "to", "a window")
            .and_then(|n| self.time_of_day(n, "to"));
        let timezone = self
            .required(&fields, "timezone", "a window")
            .and_then(|n| self.timezone(n));
        if let (Some(from), Some(to)) = (from, to)
            && from == to
        {
            self.report(
                fields.get("to").map_or(fields.span, |n| n.span),
                Problem::Invalid {
                    key: "to".to_owned(),
                    found: to.to_string(),
                    reason: "the window starts and ends at the same minute: it is empty".to_owned(),
                    fix: Some(
                        "for a whole day, write `from: \"00:00\"` and `to: \"23:59\"`".to_owned(),
                    ),
                },
            );
            return None;
        }
        Some(Window {
            name: name?,
            deny,
            days,
            from: from?,
            to: to?,
            timezone: timezone?,
        })
    }

    /// `HH:MM`, 24-hour; `24:00` only as a window's end (the end of the day: `to` is
    /// exclusive).
    fn time_of_day(&mut self, node: &Node, key: &str) -> Option<TimeOfDay> {
        let text = self.text(node, key)?;
        let two_digits = |s: &str| {
            (s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u16>().ok())?
        };
        let parsed = text.split_once(':').and_then(|(h, m)| {
            let (h, m) = (two_digits(h)?, two_digits(m)?);
            let end_of_day = key == "to" && h == 24 && m == 0;
            ((h < 24 && m < 60) || end_of_day).then_some(TimeOfDay {
                minutes: h * 60 + m,
            })
        });
        if parsed.is_none() {
            self.report(
                node.span,
                Problem::Invalid {
                    key: key.to_owned(),
                    found: text,
                    reason: match key {
                        "to" => {
                            "a time of day is `HH:MM`, 24-hour (`24:00` for the end of the day)"
                        }
                        _ => "a time of day is `HH:MM`, 24-hour",
                    }
                    .to_owned(),
                    fix: Some("write it quoted: `\"09:30\"`".to_owned()),
                },
            );
        }
        parsed
    }

    fn timezone(&mut self, node: &Node) -> Option<String> {
        let name = self.string(node, "timezone")?;
        if jiff::tz::TimeZone::get(&name).is_ok() {
            return Some(name);
        }
        self.report(
            node.span,
            Problem::Invalid {
                key: "timezone".to_owned(),
                fix: Some(match closest_zone(&name) {
                    Some(zone) => format!("did you mean `{zone}`?"),
                    None => "give an IANA time zone: `America/New_York`, `Europe/London`, `UTC`"
                        .to_owned(),
                }),
                found: name,
                reason: "no such IANA time zone".to_owned(),
            },
        );
        None
    }

    fn jump(&mut self, node: &Node, key: &str) -> Option<Jump> {
        let options: Vec<(&'static str, Jump)> =
            Jump::ALL.iter().map(|jump| (jump.name(), *jump)).collect();
        self.choice(node, key, &options)
    }

    fn channel(&mut self, node: &Node) -> Option<Channel> {
        let options: Vec<(&'static str, Channel)> =
            Channel::ALL.iter().map(|c| (c.name(), *c)).collect();
        self.choice(node, "channel", &options)
    }

    fn on_failure(&mut self, node: &Node) -> Option<OnFailure> {
        self.choice(
            node,
            "onFailure",
            &[("rollback", OnFailure::Rollback), ("halt", OnFailure::Halt)],
        )
    }

    fn defaults(&mut self, node: &Node) -> Defaults {
        let mut defaults = Defaults::default();
        let Some(fields) = self.map(node, "defaults", "`spec.defaults`", DEFAULTS_KEYS) else {
            return defaults;
        };
        defaults.channel = fields.get("channel").and_then(|n| self.channel(n));
        defaults.allow = fields.get("allow").and_then(|n| self.jump(n, "allow"));
        defaults.strategy = fields.get("strategy").and_then(|n| self.strategy(n));
        defaults.verify = fields.get("verify").and_then(|n| self.verify(n));
        if let Some(update) = fields.get("update") {
            defaults.update = self.update(update, "`spec.defaults.update`");
            if let Some(fresh) = (defaults.update.as_mut()).and_then(|u| u.fresh_state.take()) {
                let span = update_key_span(update, "freshState").unwrap_or(update.span);
                self.report(
                    span,
                    Problem::Invalid {
                        key: "freshState".to_owned(),
                        found: fresh.to_string(),
                        reason: "it is a plugin's own, never a default: as a default it would \
                                 discard every plugin's state"
                            .to_owned(),
                        fix: Some(
                            "move it to the one plugin whose state must start fresh".to_owned(),
                        ),
                    },
                );
            }
        }
        defaults.on_failure = fields.get("onFailure").and_then(|n| self.on_failure(n));
        defaults
    }

    /// One plugin, and where its id is (for "listed twice").
    fn plugin(&mut self, node: &Node) -> Option<(PluginSpec, Span)> {
        let fields = self.map(node, "plugins[]", "a plugin", PLUGIN_KEYS)?;
        let id_node = self.required(&fields, "id", "a plugin")?;
        let id = self.string(id_node, "id")?;
        if plugsync_host::check_plugin_id(&id).is_err() {
            self.report(
                id_node.span,
                Problem::Invalid {
                    key: "id".to_owned(),
                    found: id.clone(),
                    reason: "a plugin id is a lowercase letter, then up to 63 lowercase letters, \
                             digits or `_`"
                        .to_owned(),
                    fix: Some(
                        "use the id the plugin's library declares (`plugsync inspect LIB`)"
                            .to_owned(),
                    ),
                },
            );
        }
        let within = format!("plugin `{id}`");
        let selection = ["version", "channel", "constraint"];
        if fields.entries.iter().any(|(key, _)| {
            selection.contains(&key.name.as_str()) || closest(&key.name, &selection).is_some()
        }) {
            self.version_attempted.insert(id.clone());
        }
        let version = fields
            .get("version")
            .and_then(|n| self.version(n, "version"));
        let channel = fields.get("channel").and_then(|n| self.channel(n));
        let constraint = fields
            .get("constraint")
            .and_then(|n| self.requirement(n, "constraint"));
        if let (Some(pin), Some(requirement)) = (&version, &constraint)
            && !requirement.matches(pin)
        {
            self.report(
                fields.get("version").map_or(node.span, |n| n.span),
                Problem::PinOutsideConstraint {
                    id: id.clone(),
                    version: pin.to_string(),
                    constraint: requirement.to_string(),
                },
            );
        }
        if let (Some(pin), Some(channel)) = (&version, channel) {
            self.report(
                fields.get("channel").map_or(node.span, |n| n.span),
                Problem::PinAndChannel {
                    id: id.clone(),
                    version: pin.to_string(),
                    channel: channel.name(),
                },
            );
        }
        let update = fields.get("update").and_then(|n| self.update(n, &within));
        if let Some(fresh) = update.as_ref().and_then(|u| u.fresh_state.as_ref())
            && version.as_ref() != Some(fresh)
        {
            let span = (fields.get("update"))
                .and_then(|u| update_key_span(u, "freshState"))
                .unwrap_or(node.span);
            self.report(
                span,
                Problem::FreshStateNotPin {
                    id: id.clone(),
                    fresh: fresh.to_string(),
                    pin: version.as_ref().map(ToString::to_string),
                },
            );
        }
        let mut migrations = Vec::new();
        if let Some(list) = fields.get("migrations")
            && let Some(items) = self.seq(list, "migrations")
        {
            migrations = items.iter().filter_map(|m| self.migration(m)).collect();
        }
        let plugin = PluginSpec {
            version,
            channel,
            constraint,
            allow: fields.get("allow").and_then(|n| self.jump(n, "allow")),
            config: fields.get("config").and_then(|n| self.json(n, "config")),
            strategy: fields.get("strategy").and_then(|n| self.strategy(n)),
            verify: fields.get("verify").and_then(|n| self.verify(n)),
            update,
            on_failure: fields.get("onFailure").and_then(|n| self.on_failure(n)),
            migrations,
            id,
        };
        Some((plugin, id_node.span))
    }

    fn strategy(&mut self, node: &Node) -> Option<Strategy> {
        let Value::Map(entries) = &node.value else {
            self.wrong_type(node, "strategy", "a mapping with a `kind`");
            return None;
        };
        let kind_node = entries
            .iter()
            .find(|(k, _)| k.name == "kind")
            .map(|(_, n)| n);
        let Some(kind_node) = kind_node else {
            self.report(
                node.span,
                Problem::MissingKey {
                    key: "kind",
                    within: "`strategy`".to_owned(),
                },
            );
            return None;
        };
        let options: Vec<(&'static str, &'static str)> =
            STRATEGY_KINDS.iter().map(|k| (*k, *k)).collect();
        let kind = self.choice(kind_node, "kind", &options)?;
        let within = format!("strategy `{kind}`");
        let fields = self.map(node, "strategy", &within, strategy_keys(kind))?;
        let period = |this: &mut Self, key: &str| fields.get(key).and_then(|n| this.period(n, key));
        let fallback = |this: &mut Self| {
            fields.get("fallback").and_then(|n| {
                this.choice(
                    n,
                    "fallback",
                    &[("fail", Fallback::Fail), ("immediate", Fallback::Immediate)],
                )
            })
        };
        Some(match kind {
            "immediate" => Strategy::Immediate,
            "when-idle" => Strategy::WhenIdle {
                idle_for: {
                    let node = self.required(&fields, "idleFor", &within)?;
                    self.period(node, "idleFor")?
                },
                deadline: period(self, "deadline"),
                fallback: fallback(self),
            },
            "when-flat" => Strategy::WhenFlat {
                deadline: period(self, "deadline"),
                fallback: fallback(self),
            },
            "scheduled" => {
                let node = self.required(&fields, "at", &within)?;
                Strategy::Scheduled {
                    at: self.schedule(node)?,
                }
            }
            _ => Strategy::BlueGreen {
                agreeing_calls: {
                    let node = self.required(&fields, "agreeingCalls", &within)?;
                    self.count(node, "agreeingCalls", 1, 100_000_000)?
                },
                compare: fields
                    .get("compare")
                    .and_then(|n| self.compare(n))
                    .unwrap_or_default(),
            },
        })
    }

    /// `at`: an RFC 3339 instant, or `HH:MM Zone`.
    fn schedule(&mut self, node: &Node) -> Option<String> {
        let text = self.string(node, "at")?;
        let instant = text.parse::<jiff::Timestamp>().is_ok();
        let daily = text.split_once(' ').is_some_and(|(time, zone)| {
            let time_ok = time.len() == 5
                && time.split_once(':').is_some_and(|(h, m)| {
                    h.parse::<u8>().is_ok_and(|h| h < 24) && m.parse::<u8>().is_ok_and(|m| m < 60)
                });
            time_ok && jiff::tz::TimeZone::get(zone.trim()).is_ok()
        });
        if instant || daily {
            return Some(text);
        }
        self.report(
            node.span,
            Problem::Invalid {
                key: "at".to_owned(),
                found: text,
                reason: "not an RFC 3339 time, nor a time of day and an IANA zone".to_owned(),
                fix: Some(
                    "write `2026-12-05T18:00:00-05:00`, or `18:00 America/New_York` for not before \
                     that time of the day"
                        .to_owned(),
                ),
            },
        );
        None
    }

    fn compare(&mut self, node: &Node) -> Option<Compare> {
        let fields = self.map(node, "compare", "`compare`", COMPARE_KEYS)?;
        let mut compare = Compare::default();
        if let Some(list) = fields.get("ignore")
            && let Some(items) = self.seq(list, "ignore")
        {
            compare.ignore = items
                .iter()
                .filter_map(|item| self.pointer(item, "ignore", &[]))
                .collect();
        }
        Some(compare)
    }

    fn verify(&mut self, node: &Node) -> Option<Verify> {
        let fields = self.map(node, "verify", "`verify`", VERIFY_KEYS)?;
        let mut verify = Verify {
            health: fields
                .get("health")
                .and_then(|n| self.boolean(n, "health"))
                .unwrap_or(true),
            probes: Vec::new(),
            differential: Vec::new(),
            soak: None,
        };
        if let Some(list) = fields.get("probes")
            && let Some(items) = self.seq(list, "probes")
        {
            verify.probes = items
                .iter()
                .filter_map(|item| self.host_type::<Probe>(item, "probe"))
                .collect();
        }
        if let Some(list) = fields.get("differential")
            && let Some(items) = self.seq(list, "differential")
        {
            verify.differential = (items.iter())
                .filter_map(|item| self.json(item, "differential"))
                .collect::<Vec<Json>>();
        }
        verify.soak = fields.get("soak").and_then(|n| self.soak(n));
        Some(verify)
    }

    fn soak(&mut self, node: &Node) -> Option<Soak> {
        let fields = self.map(node, "soak", "`soak`", SOAK_KEYS)?;
        let duration = self.required(&fields, "duration", "`soak`");
        let counter = |this: &mut Self, key: &str| {
            fields
                .get(key)
                .and_then(|n| this.count(n, key, 0, u64::MAX >> 1))
        };
        let soak = Soak {
            max_error_rate: fields
                .get("maxErrorRate")
                .and_then(|n| self.fraction(n, "maxErrorRate")),
            min_calls: counter(self, "minCalls"),
            max_call_latency_us: counter(self, "maxCallLatencyUs"),
            min_calls_before_commit: counter(self, "minCallsBeforeCommit"),
            duration: self.period(duration?, "duration")?,
        };
        Some(soak)
    }

    fn update(&mut self, node: &Node, within: &str) -> Option<Update> {
        let fields = self.map(
            node,
            "update",
            &format!("`update` of {within}"),
            UPDATE_KEYS,
        )?;
        Some(Update {
            mode: fields.get("mode").and_then(|n| {
                self.choice(
                    n,
                    "mode",
                    &[
                        ("optimistic", SwapMode::Optimistic),
                        ("locked", SwapMode::Locked),
                    ],
                )
            }),
            journal_capacity: fields
                .get("journalCapacity")
                .and_then(|n| self.count(n, "journalCapacity", 1, MAX_JOURNAL_CAPACITY as u64)),
            checkpoint_every: fields
                .get("checkpointEvery")
                .and_then(|n| self.period(n, "checkpointEvery")),
            fresh_state: fields
                .get("freshState")
                .and_then(|n| self.version(n, "freshState")),
        })
    }

    fn migration(&mut self, node: &Node) -> Option<Migration> {
        let fields = self.map(node, "migrations[]", "a migration", MIGRATION_KEYS)?;
        let from = self
            .required(&fields, "from", "a migration")
            .and_then(|n| self.requirement(n, "from"));
        let to = self
            .required(&fields, "to", "a migration")
            .and_then(|n| self.requirement(n, "to"));
        let mut rules = Vec::new();
        if let Some(list) = self.required(&fields, "rules", "a migration")
            && let Some(items) = self.seq(list, "rules")
        {
            for item in items {
                let Some(rule) = self.host_type::<MigrationRule>(item, "migration rule") else {
                    continue;
                };
                if self.rule_paths(item) {
                    rules.push(rule);
                }
            }
        }
        Some(Migration {
            from: from?,
            to: to?,
            rules,
        })
    }

    /// Checks a rule's JSON pointers: into `/config` or `/state`. Whether all were valid.
    fn rule_paths(&mut self, node: &Node) -> bool {
        let Value::Map(entries) = &node.value else {
            return false;
        };
        let mut valid = true;
        for (key, value) in entries {
            if ["path", "from", "to"].contains(&key.name.as_str()) {
                valid &= self
                    .pointer(value, &key.name, &["/config", "/state"])
                    .is_some();
            }
        }
        valid
    }
}

/// Where `key` of the mapping `node` is, if it has it.
fn update_key_span(node: &Node, key: &str) -> Option<Span> {
    match &node.value {
        Value::Map(entries) => entries
            .iter()
            .find(|(k, _)| k.name == key)
            .map(|(_, n)| n.span),
        _ => None,
    }
}

/// The IANA zone closest to a misspelt one (`America/New_york`).
fn closest_zone(found: &str) -> Option<String> {
    // IANA names are at most ~30 characters; nothing much longer is a slip of one.
    if found.len() > 64 {
        return None;
    }
    let folded = found.to_lowercase();
    let names = jiff::tz::db().available();
    let mut best: Option<(usize, String)> = None;
    for name in names {
        let name = name.as_str().to_owned();
        let distance = strsim::damerau_levenshtein(&folded, &name.to_lowercase());
        if distance <= 3 && best.as_ref().is_none_or(|(d, _)| distance < *d) {
            best = Some((distance, name));
        }
    }
    best.map(|(_, name)| name)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys the decoder accepts in each place are the properties the JSON Schema gives
    /// that place: an editor refuses exactly what `validate` refuses.
    #[test]
    fn the_decoder_accepts_the_keys_the_schema_gives_and_no_other() {
        let schema = crate::spec::schema();
        let properties = |definition: &serde_json::Value| -> Vec<String> {
            let mut keys: Vec<String> = definition["properties"]
                .as_object()
                .map(|p| p.keys().cloned().collect())
                .unwrap_or_default();
            keys.sort();
            keys
        };
        let sorted = |keys: &[&str]| -> Vec<String> {
            let mut keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
            keys.sort();
            keys
        };
        let places: [(&str, &[&str]); 14] = [
            ("Metadata", METADATA_KEYS),
            ("Spec", SPEC_KEYS),
            ("Registry", REGISTRY_KEYS),
            ("HostTarget", HOST_KEYS),
            ("Policy", POLICY_KEYS),
            ("Window", WINDOW_KEYS),
            ("Defaults", DEFAULTS_KEYS),
            ("PluginSpec", PLUGIN_KEYS),
            ("Verify", VERIFY_KEYS),
            ("Soak", SOAK_KEYS),
            ("Update", UPDATE_KEYS),
            ("Migration", MIGRATION_KEYS),
            ("Compare", COMPARE_KEYS),
            ("", ROOT_KEYS),
        ];
        for (name, keys) in places {
            let definition = match name {
                "" => &schema,
                name => &schema["$defs"][name],
            };
            assert_eq!(properties(definition), sorted(keys), "`{name}`");
        }
        for variant in schema["$defs"]["Strategy"]["oneOf"].as_array().unwrap() {
            let kind = variant["properties"]["kind"]["const"].as_str().unwrap();
            assert!(STRATEGY_KINDS.contains(&kind), "{kind}");
            assert_eq!(
                properties(variant),
                sorted(strategy_keys(kind)),
                "strategy `{kind}`"
            );
        }
        assert_eq!(
            schema["$defs"]["Strategy"]["oneOf"]
                .as_array()
                .unwrap()
                .len(),
            STRATEGY_KINDS.len()
        );
    }

    #[test]
    fn slips_of_case_and_separators_and_small_typos_find_the_key() {
        let keys = PLUGIN_KEYS;
        let cases = [
            ("verison", Some("version")),
            ("on_failure", Some("onFailure")),
            ("OnFailure", Some("onFailure")),
            ("migration", Some("migrations")),
            ("confg", Some("config")),
            ("colour", None),
        ];
        for (found, expected) in cases {
            assert_eq!(closest(found, keys), expected, "{found}");
        }
    }
}
