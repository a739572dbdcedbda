//! Upgrade paths through one plugin's version graph.
//!
//! A [`VersionGraph`] holds the versions of one plugin the planner may step through, and an
//! edge wherever the host would accept the switch:
//!
//! - **nodes**: the running version (its metadata as the host reports it, so it need not be in
//!   the index), the target (the resolution's), and the intermediates: the index entries
//!   strictly between the two (a path never overshoots the target nor goes below the running
//!   version: a detour outside them is not a plan an operator expects), not yanked, on the
//!   plugin's channel or a more stable one (its own, else `defaults.channel`, else `stable`,
//!   even for a pin: the pin names the target, not the versions on the way), and runnable in the
//!   host (the host's ABI major, a `framework` requirement its framework meets);
//! - **edges** `a → b`: the host accepts the switch ([`TransitionKind::between`], read the same
//!   way when the graph is built, and called itself on every edge of a path returned), by the
//!   versions' own
//!   declarations (`migrates_from` of the newer going up, `downgrades_to` of the running one
//!   going down) or, where they declare none, by a declarative migration whose `from` admits
//!   `a` and `to` admits `b` (plugins.yaml's own first, then those published with `a`, then
//!   with `b`); `update.freshState: X` makes every switch to exactly `X` (from the running
//!   version, or from an intermediate one) an edge that discards the state instead;
//! - **the allowed jump** ([`Allowance`]) bounds every edge, unless plugins.yaml pins exactly
//!   the target (the operator chose that version by hand).
//!
//! [`paths`] gives the `k` cheapest simple paths (Yen's algorithm over a Dijkstra on the
//! graph): fewer steps first, then fewer major jumps, fewer minor jumps, fewer patch jumps
//! ([`PathCost`]), then by the versions passed through, lowest first.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::fmt;

use petgraph::Direction;
use petgraph::graph::{DiGraph, EdgeIndex, NodeIndex};
use petgraph::visit::EdgeRef;
use plugsync_host::{Digest, PluginMetadata, TransitionKind, version_matches};
use schemars::JsonSchema;
use semver::{Version, VersionReq};
use serde::Serialize;

use super::error::{JumpRefused, NoPath, PlanError};
use super::order::Placement;
use crate::registry::{IndexEntry, IndexFile};
use crate::spec::model::{Channel, Defaults, Jump, Migration, PluginSpec, Policy, Spec};

/// What the host offers a plugin: its ABI major and its framework version (its status's `abi`
/// and `framework`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCompat {
    /// The plugin ABI major the host loads.
    pub abi: u16,
    /// The framework version the host provides.
    pub framework: Version,
}

impl HostCompat {
    /// From a host status's `abi` and `framework` (a semantic version, as the host reports it).
    pub fn of_status(abi: u16, framework: &str) -> Result<HostCompat, PlanError> {
        let framework = Version::parse(framework).map_err(|e| PlanError::BadHostFramework {
            value: framework.to_owned(),
            reason: e.to_string(),
        })?;
        Ok(HostCompat { abi, framework })
    }

    /// Why the host would refuse to load `entry`, if it would: another ABI major, or a
    /// `framework` requirement the host's framework does not meet.
    pub fn refuses(&self, plugin: &str, entry: &IndexEntry) -> Result<Option<String>, PlanError> {
        let (abi, _) = parse_abi(plugin, entry)?;
        if abi != self.abi {
            return Ok(Some(format!(
                "built for ABI {}, the host speaks ABI {}",
                entry.abi, self.abi
            )));
        }
        let framework = VersionReq::parse(&entry.framework)
            .map_err(|e| bad_entry(plugin, entry, "framework", &entry.framework, e))?;
        if !framework.matches(&self.framework) {
            return Ok(Some(format!(
                "needs framework `{}`, the host has {}",
                entry.framework, self.framework
            )));
        }
        Ok(None)
    }

    /// [`PlanError::HostIncompatible`] when the host would refuse `entry` (a version to install
    /// or to upgrade to).
    pub fn check(&self, plugin: &str, entry: &IndexEntry) -> Result<(), PlanError> {
        match self.refuses(plugin, entry)? {
            None => Ok(()),
            Some(reason) => Err(PlanError::HostIncompatible {
                plugin: plugin.to_owned(),
                version: entry.version.clone(),
                reason,
            }),
        }
    }
}

/// Where a plugin's allowed jump comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum AllowFrom {
    /// The plugin's own `allow`.
    Plugin,
    /// The first `policy.compatibility` rule whose pattern matches the plugin's id.
    Policy {
        /// The rule's id pattern (`strategy_*`).
        pattern: String,
    },
    /// `defaults.allow`.
    Defaults,
    /// Nothing says: [`Allowance::DEFAULT`].
    Default,
}

impl fmt::Display for AllowFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AllowFrom::Plugin => f.write_str("its own `allow`"),
            AllowFrom::Policy { pattern } => {
                write!(f, "`policy.compatibility` rule `{pattern}`")
            }
            AllowFrom::Defaults => f.write_str("`defaults.allow`"),
            AllowFrom::Default => f.write_str("the default, as nothing in plugins.yaml says"),
        }
    }
}

/// The largest jump a plugin may make without a person, and where that comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Allowance {
    /// The largest jump.
    pub jump: Jump,
    /// Where it comes from.
    pub from: AllowFrom,
}

impl Allowance {
    /// The jump allowed when plugins.yaml says nothing: `minor`. A major version declares
    /// breaking changes, which a person should see before they run.
    pub const DEFAULT: Jump = Jump::Minor;

    /// The plugin's own `allow`, else the first `policy.compatibility` rule whose pattern
    /// matches its id (`*` matching any run of characters), else `defaults.allow`, else
    /// [`Allowance::DEFAULT`].
    pub fn of(spec: &PluginSpec, policy: &Policy, defaults: &Defaults) -> Allowance {
        if let Some(jump) = spec.allow {
            return Allowance {
                jump,
                from: AllowFrom::Plugin,
            };
        }
        if let Some(rule) = policy
            .compatibility
            .iter()
            .find(|rule| glob_matches(&rule.pattern, &spec.id))
        {
            return Allowance {
                jump: rule.allow,
                from: AllowFrom::Policy {
                    pattern: rule.pattern.clone(),
                },
            };
        }
        match defaults.allow {
            Some(jump) => Allowance {
                jump,
                from: AllowFrom::Defaults,
            },
            None => Allowance {
                jump: Allowance::DEFAULT,
                from: AllowFrom::Default,
            },
        }
    }
}

/// Whether `pattern` (`*` matches any run of characters, the rest literally) matches `text`
/// whole.
fn glob_matches(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return text.is_empty();
    };
    let Some(mut rest) = text.strip_prefix(first) else {
        return false;
    };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else {
        // No `*`: the pattern is the text.
        return rest.is_empty();
    };
    for part in middle {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// The semver distance from `a` to `b`: major when the majors differ (or both are `0.x` and
/// the minors differ: a `0.x` minor is breaking), minor when the minors differ, patch
/// otherwise; `None` for the same version.
pub fn jump(a: &Version, b: &Version) -> Option<Jump> {
    if a == b {
        None
    } else if a.major != b.major || (a.major == 0 && a.minor != b.minor) {
        Some(Jump::Major)
    } else if a.minor != b.minor {
        Some(Jump::Minor)
    } else {
        Some(Jump::Patch)
    }
}

/// Where declarative migration rules come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum RuleSource {
    /// The plugin's `migrations` in plugins.yaml.
    PluginsYaml,
    /// The `migrations` published with a version, in its index entry.
    Index {
        /// That version.
        #[schemars(with = "String")]
        version: Version,
    },
}

/// How the state migrates along an edge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase", tag = "kind")]
pub enum MigrationBy {
    /// A plugin's own `migrate`: the target's going up, the running version's going down.
    Plugin {
        /// The version whose `migrate` runs.
        #[schemars(with = "String")]
        version: Version,
    },
    /// Declarative rules, the versions declaring no migration between them.
    Rules {
        /// Where the rules are.
        source: RuleSource,
    },
    /// None: the new version starts from a fresh state (`update.freshState`), the running
    /// state discarded.
    Fresh,
    /// None: the same version, whose state passes unchanged.
    Unchanged,
}

impl fmt::Display for MigrationBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MigrationBy::Plugin { version } => write!(f, "by {version}'s migrate"),
            MigrationBy::Rules {
                source: RuleSource::PluginsYaml,
            } => f.write_str("by the rules in plugins.yaml"),
            MigrationBy::Rules {
                source: RuleSource::Index { version },
            } => write!(f, "by the rules published with {version}"),
            MigrationBy::Fresh => f.write_str("from a fresh state (the state is discarded)"),
            MigrationBy::Unchanged => f.write_str("with its state unchanged"),
        }
    }
}

/// One edge: a switch the host accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    /// Upgrade, downgrade or reconfigure.
    pub kind: TransitionKind,
    /// How the state migrates.
    pub by: MigrationBy,
    /// The semver distance ([`jump`]); `None` for the same version.
    pub jump: Option<Jump>,
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            TransitionKind::Upgrade => "upgrade",
            TransitionKind::Downgrade => "downgrade",
            TransitionKind::Reconfigure => "reconfigure",
        };
        match self.jump {
            Some(jump) => write!(f, "{kind}, {}, {}", jump.name(), self.by),
            None => write!(f, "{kind}, {}", self.by),
        }
    }
}

/// What a path costs, compared field by field in this order: fewer steps, then fewer major,
/// minor and patch jumps.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct PathCost {
    /// Steps.
    pub steps: u32,
    /// Major jumps.
    pub majors: u32,
    /// Minor jumps.
    pub minors: u32,
    /// Patch jumps.
    pub patches: u32,
}

impl PathCost {
    fn of(transition: &Transition) -> PathCost {
        let mut cost = PathCost {
            steps: 1,
            ..PathCost::default()
        };
        match transition.jump {
            Some(Jump::Major) => cost.majors = 1,
            Some(Jump::Minor) => cost.minors = 1,
            Some(Jump::Patch) => cost.patches = 1,
            None => {}
        }
        cost
    }

    fn plus(self, other: PathCost) -> PathCost {
        PathCost {
            steps: self.steps.saturating_add(other.steps),
            majors: self.majors.saturating_add(other.majors),
            minors: self.minors.saturating_add(other.minors),
            patches: self.patches.saturating_add(other.patches),
        }
    }
}

/// One step of an upgrade path.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PathStep {
    /// The version switched from.
    #[schemars(with = "String")]
    pub from: Version,
    /// The version switched to.
    #[schemars(with = "String")]
    pub to: Version,
    /// The artifact of `to`.
    pub sha256: Digest,
    /// The switch.
    pub transition: Transition,
    /// What `to` needs of the other plugins (its `dependencies`).
    #[schemars(with = "BTreeMap<String, String>")]
    pub dependencies: BTreeMap<String, VersionReq>,
}

/// A way from the running version to the target: each step a switch the host accepts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UpgradePath {
    /// The plugin.
    pub plugin: String,
    /// The steps, in order; none when the target already runs.
    pub steps: Vec<PathStep>,
    /// What the path costs.
    pub cost: PathCost,
}

/// What a plugin runs now, as the host reports it.
#[derive(Debug, Clone, Copy)]
pub struct Running<'a> {
    /// Its metadata (status's `metadata`).
    pub metadata: &'a PluginMetadata,
    /// Its artifact's sha256 (status's `version.digest`).
    pub sha256: Digest,
    /// Its config differs from the desired one (a step is due even at the same version).
    pub config_differs: bool,
}

/// Everything a plugin's [`VersionGraph`] is built from.
#[derive(Debug, Clone, Copy)]
pub struct GraphInput<'a> {
    /// The plugin.
    pub plugin: &'a str,
    /// What runs.
    pub running: Running<'a>,
    /// The target version (the resolution's).
    pub target: &'a Version,
    /// The target's artifact.
    pub target_sha256: Digest,
    /// The plugin's index.
    pub index: &'a IndexFile,
    /// The channel intermediates are taken from (it and the more stable ones).
    pub channel: Channel,
    /// The largest jump of each step.
    pub allow: &'a Allowance,
    /// plugins.yaml pins exactly the target: the allowance does not apply.
    pub pinned: bool,
    /// `update.freshState`: the switch to exactly this version discards the state.
    pub fresh_state: Option<&'a Version>,
    /// The plugin's own declarative migrations (plugins.yaml).
    pub migrations: &'a [Migration],
    /// The host.
    pub host: &'a HostCompat,
}

impl<'a> GraphInput<'a> {
    /// The input for plugin `plugin` of plugins.yaml's `spec`, from what runs and the target:
    /// the channel, allowance, pin, fresh state and migrations as plugins.yaml gives them.
    pub fn of(
        plugin: &'a PluginSpec,
        spec: &Spec,
        allow: &'a Allowance,
        running: Running<'a>,
        target: &'a crate::resolve::Resolved,
        index: &'a IndexFile,
        host: &'a HostCompat,
    ) -> GraphInput<'a> {
        GraphInput {
            plugin: &plugin.id,
            running,
            target: &target.version,
            target_sha256: target.sha256,
            index,
            channel: plugin
                .channel
                .or(spec.defaults.channel)
                .unwrap_or(Channel::Stable),
            allow,
            pinned: plugin.version.as_ref() == Some(&target.version),
            fresh_state: plugin
                .update
                .as_ref()
                .and_then(|update| update.fresh_state.as_ref()),
            migrations: &plugin.migrations,
            host,
        }
    }
}

/// Why a published version between the running one and the target is not in the graph.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Excluded {
    Yanked,
    LessStable(Channel),
    Host(String),
}

/// A version in the graph.
#[derive(Debug, Clone)]
struct Node {
    version: Version,
    metadata: PluginMetadata,
    sha256: Digest,
    /// The migrations published with it (none for a running version the index lacks).
    migrations: Vec<Migration>,
    dependencies: BTreeMap<String, VersionReq>,
    migrates_from: Vec<VersionReq>,
    downgrades_to: Vec<VersionReq>,
}

/// An edge, and whether the allowance admits it.
#[derive(Debug, Clone)]
struct Edge {
    transition: Transition,
    cost: PathCost,
    allowed: bool,
}

/// One plugin's versions and the switches between them the host accepts (see the module
/// docs).
#[derive(Debug, Clone)]
pub struct VersionGraph {
    plugin: String,
    graph: DiGraph<Node, Edge>,
    running: NodeIndex,
    target: NodeIndex,
    allow: Allowance,
    exempt: bool,
    /// The published versions between the two left out, and why.
    excluded: Vec<(Version, Excluded)>,
}

impl VersionGraph {
    /// The graph of `input`'s plugin; [`PlanError::HostIncompatible`] when the host cannot run
    /// the target, [`PlanError::TargetNotPublished`] when the index lacks it.
    pub fn build(input: &GraphInput<'_>) -> Result<VersionGraph, PlanError> {
        let plugin = input.plugin;
        let running_meta = input.running.metadata;
        let running_version = parse_version(plugin, &running_meta.version, "version")?;
        let target_entry = input
            .index
            .versions
            .iter()
            .find(|entry| Version::parse(&entry.version).is_ok_and(|v| &v == input.target))
            .ok_or_else(|| PlanError::TargetNotPublished {
                plugin: plugin.to_owned(),
                version: input.target.clone(),
            })?;
        input.host.check(plugin, target_entry)?;

        let mut graph = DiGraph::new();
        let running = graph.add_node(node_of_running(plugin, input, running_version.clone())?);
        let same = *input.target == running_version;
        let mut excluded = Vec::new();
        if same {
            let unchanged = input.running.sha256 == input.target_sha256;
            if unchanged && !input.running.config_differs {
                return Ok(VersionGraph {
                    plugin: plugin.to_owned(),
                    graph,
                    running,
                    target: running,
                    allow: input.allow.clone(),
                    exempt: input.pinned,
                    excluded,
                });
            }
        }
        // Intermediates, in version order, then the target.
        let (low, high) = if *input.target < running_version {
            (input.target, &running_version)
        } else {
            (&running_version, input.target)
        };
        let mut between = Vec::new();
        for entry in &input.index.versions {
            let Ok(version) = Version::parse(&entry.version) else {
                // An unreadable intermediate is no way through; the resolver reports the index.
                continue;
            };
            if version <= *low || version >= *high {
                continue;
            }
            let why = if entry.yanked {
                Some(Excluded::Yanked)
            } else if entry.channel > input.channel {
                Some(Excluded::LessStable(entry.channel))
            } else {
                input.host.refuses(plugin, entry)?.map(Excluded::Host)
            };
            match why {
                Some(why) => excluded.push((version, why)),
                None => between.push((version, entry)),
            }
        }
        between.sort_by(|a, b| a.0.cmp(&b.0));
        excluded.sort_by(|a, b| a.0.cmp(&b.0));
        for (version, entry) in between {
            graph.add_node(node_of_entry(plugin, entry, version, entry.sha256)?);
        }
        let target_node = node_of_entry(
            plugin,
            target_entry,
            input.target.clone(),
            input.target_sha256,
        )?;
        let target = graph.add_node(target_node);

        let mut this = VersionGraph {
            plugin: plugin.to_owned(),
            graph,
            running,
            target,
            allow: input.allow.clone(),
            exempt: input.pinned,
            excluded,
        };
        this.add_edges(input)?;
        Ok(this)
    }

    /// Adds every edge the host accepts (see the module docs); none into the running version
    /// nor out of the target, which no simple path from one to the other uses.
    fn add_edges(&mut self, input: &GraphInput<'_>) -> Result<(), PlanError> {
        let nodes: Vec<NodeIndex> = self.graph.node_indices().collect();
        for &a in &nodes {
            if a == self.target {
                continue;
            }
            for &b in &nodes {
                if b == a || b == self.running {
                    continue;
                }
                let (na, nb) = (&self.graph[a], &self.graph[b]);
                // Every switch to exactly the fresh-state version discards the state, whatever
                // version it starts from: the operator asked that version to start fresh
                // (its migration is broken, or the state is), and a path that reaches it
                // through an intermediate version must not migrate into it after all.
                let fresh = input.fresh_state == Some(&nb.version);
                let transition = if fresh {
                    Some(Transition {
                        kind: kind_by_order(&na.version, &nb.version),
                        by: MigrationBy::Fresh,
                        jump: jump(&na.version, &nb.version),
                    })
                } else {
                    transition(input.migrations, na, nb)
                };
                let Some(transition) = transition else {
                    continue;
                };
                let allowed =
                    self.exempt || transition.jump.is_none_or(|jump| jump <= self.allow.jump);
                let cost = PathCost::of(&transition);
                self.graph.add_edge(
                    a,
                    b,
                    Edge {
                        transition,
                        cost,
                        allowed,
                    },
                );
            }
        }
        Ok(())
    }

    /// The plugin.
    pub fn plugin(&self) -> &str {
        &self.plugin
    }

    /// The running version.
    pub fn running(&self) -> &Version {
        &self.graph[self.running].version
    }

    /// The target version.
    pub fn target(&self) -> &Version {
        &self.graph[self.target].version
    }

    /// The running version with its dependencies, where the ordering starts the plugin.
    pub fn start(&self) -> Placement {
        let node = &self.graph[self.running];
        Placement {
            version: node.version.clone(),
            dependencies: node.dependencies.clone(),
        }
    }

    /// Every version in the graph, the running one first, then lowest first.
    pub fn versions(&self) -> impl Iterator<Item = &Version> {
        self.graph.node_weights().map(|node| &node.version)
    }

    /// Every edge the allowance admits: `(from, to, transition)`.
    pub fn transitions(&self) -> impl Iterator<Item = (&Version, &Version, &Transition)> {
        self.graph
            .edge_references()
            .filter(|edge| edge.weight().allowed)
            .map(|edge| {
                (
                    &self.graph[edge.source()].version,
                    &self.graph[edge.target()].version,
                    &edge.weight().transition,
                )
            })
    }
}

/// The transition the host accepts from `a` to `b`, if any: by the versions' own
/// declarations, else by a declarative migration covering both. This reads the declarations
/// as [`TransitionKind::between`] does (the same requirements, by [`version_matches`] with
/// pre-releases); the host's check itself confirms each edge of a path [`paths`] returns
/// (calling it for every pair of versions would cost more than the rest of planning).
fn transition(own: &[Migration], a: &Node, b: &Node) -> Option<Transition> {
    let jump = jump(&a.version, &b.version);
    let kind = kind_by_order(&a.version, &b.version);
    let declared = match kind {
        TransitionKind::Upgrade => covers(&b.migrates_from, &a.version),
        TransitionKind::Downgrade => covers(&a.downgrades_to, &b.version),
        TransitionKind::Reconfigure => a.metadata.state_schema == b.metadata.state_schema,
    };
    if declared {
        let by = match kind {
            TransitionKind::Upgrade => MigrationBy::Plugin {
                version: b.version.clone(),
            },
            TransitionKind::Downgrade => MigrationBy::Plugin {
                version: a.version.clone(),
            },
            TransitionKind::Reconfigure => MigrationBy::Unchanged,
        };
        return Some(Transition { kind, by, jump });
    }
    let source = rule_source(own, a, b)?;
    Some(Transition {
        kind,
        by: MigrationBy::Rules { source },
        jump,
    })
}

/// Whether the host's own check accepts `edge` (a fresh start needs no declaration).
fn host_accepts(graph: &VersionGraph, edge: EdgeIndex) -> bool {
    let Some((a, b)) = graph.graph.edge_endpoints(edge) else {
        return false;
    };
    let transition = &graph.graph[edge].transition;
    let ruled = match transition.by {
        MigrationBy::Fresh => return true,
        MigrationBy::Rules { .. } => true,
        MigrationBy::Plugin { .. } | MigrationBy::Unchanged => false,
    };
    let (a, b) = (&graph.graph[a], &graph.graph[b]);
    TransitionKind::between(&graph.plugin, &a.metadata, &b.metadata, ruled)
        .is_ok_and(|kind| kind == transition.kind)
}

/// Where the first declarative migration from `a` to `b` is: plugins.yaml's, then `a`'s,
/// then `b`'s.
fn rule_source(own: &[Migration], a: &Node, b: &Node) -> Option<RuleSource> {
    let fits = |m: &Migration| {
        version_matches(&m.from, &a.version, true) && version_matches(&m.to, &b.version, true)
    };
    if own.iter().any(fits) {
        return Some(RuleSource::PluginsYaml);
    }
    for node in [a, b] {
        if node.migrations.iter().any(fits) {
            return Some(RuleSource::Index {
                version: node.version.clone(),
            });
        }
    }
    None
}

fn covers(requirements: &[VersionReq], version: &Version) -> bool {
    requirements
        .iter()
        .any(|req| version_matches(req, version, true))
}

fn kind_by_order(a: &Version, b: &Version) -> TransitionKind {
    match a.cmp(b) {
        std::cmp::Ordering::Less => TransitionKind::Upgrade,
        std::cmp::Ordering::Greater => TransitionKind::Downgrade,
        std::cmp::Ordering::Equal => TransitionKind::Reconfigure,
    }
}

fn node_of_running(
    plugin: &str,
    input: &GraphInput<'_>,
    version: Version,
) -> Result<Node, PlanError> {
    let metadata = input.running.metadata;
    // The running version's published migrations count too, when the index has it.
    let migrations = input
        .index
        .versions
        .iter()
        .find(|entry| Version::parse(&entry.version).is_ok_and(|v| v == version))
        .map(|entry| entry.migrations.clone())
        .unwrap_or_default();
    let field = |name: &'static str, value: &str, e: &dyn fmt::Display| PlanError::BadRunning {
        plugin: plugin.to_owned(),
        version: metadata.version.clone(),
        field: name,
        value: value.to_owned(),
        reason: e.to_string(),
    };
    let dependencies = parse_dependencies(&metadata.dependencies)
        .map_err(|(value, e)| field("dependencies", &value, &e))?;
    Ok(Node {
        migrates_from: parse_reqs(&metadata.migrates_from),
        downgrades_to: parse_reqs(&metadata.downgrades_to),
        version,
        metadata: metadata.clone(),
        sha256: input.running.sha256,
        migrations,
        dependencies,
    })
}

fn node_of_entry(
    plugin: &str,
    entry: &IndexEntry,
    version: Version,
    sha256: Digest,
) -> Result<Node, PlanError> {
    let metadata = metadata_of(plugin, entry)?;
    let dependencies = parse_dependencies(&entry.dependencies)
        .map_err(|(value, e)| bad_entry(plugin, entry, "dependencies", &value, e))?;
    Ok(Node {
        migrates_from: parse_reqs(&entry.migrates_from),
        downgrades_to: parse_reqs(&entry.downgrades_to),
        version,
        metadata,
        sha256,
        migrations: entry.migrations.clone(),
        dependencies,
    })
}

/// The metadata a library published as `entry` declares, as far as the index records it (its
/// build is not recorded: the transition checks do not read it).
pub fn metadata_of(plugin: &str, entry: &IndexEntry) -> Result<PluginMetadata, PlanError> {
    let (abi, abi_minor) = parse_abi(plugin, entry)?;
    Ok(PluginMetadata {
        abi,
        abi_minor,
        id: plugin.to_owned(),
        version: entry.version.clone(),
        kind: entry.kind.clone(),
        state_schema: entry.state_schema,
        framework: entry.framework.clone(),
        dependencies: entry.dependencies.clone(),
        migrates_from: entry.migrates_from.clone(),
        downgrades_to: entry.downgrades_to.clone(),
        build: plugsync_plugin::BuildInfo {
            panic: "unwind".to_owned(),
            sdk: String::new(),
            rustc: String::new(),
        },
    })
}

fn parse_abi(plugin: &str, entry: &IndexEntry) -> Result<(u16, u16), PlanError> {
    let parsed = entry
        .abi
        .split_once('.')
        .and_then(|(major, minor)| Some((major.parse().ok()?, minor.parse().ok()?)));
    parsed.ok_or_else(|| bad_entry(plugin, entry, "abi", &entry.abi, "expected `MAJOR.MINOR`"))
}

/// Each requirement by id; the first unreadable one with its reason.
pub(crate) fn parse_dependencies(
    dependencies: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, VersionReq>, (String, String)> {
    dependencies
        .iter()
        .map(|(id, req)| match VersionReq::parse(req) {
            Ok(parsed) => Ok((id.clone(), parsed)),
            Err(e) => Err((format!("{id}: {req}"), e.to_string())),
        })
        .collect()
}

/// The requirements that parse: the host ignores the others too.
fn parse_reqs(requirements: &[String]) -> Vec<VersionReq> {
    requirements
        .iter()
        .filter_map(|r| VersionReq::parse(r).ok())
        .collect()
}

fn parse_version(plugin: &str, version: &str, field: &'static str) -> Result<Version, PlanError> {
    Version::parse(version).map_err(|e| PlanError::BadRunning {
        plugin: plugin.to_owned(),
        version: version.to_owned(),
        field,
        value: version.to_owned(),
        reason: e.to_string(),
    })
}

fn bad_entry(
    plugin: &str,
    entry: &IndexEntry,
    field: &'static str,
    value: &str,
    reason: impl ToString,
) -> PlanError {
    PlanError::BadIndexEntry {
        plugin: plugin.to_owned(),
        version: entry.version.clone(),
        field,
        value: value.to_owned(),
        reason: reason.to_string(),
    }
}

/// A path as the graph's nodes, with its cost.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Found {
    cost: PathCost,
    nodes: Vec<NodeIndex>,
}

/// The `k` cheapest simple paths from the running version to the target (at least one, when
/// `k` is 0), cheapest first (see the module docs for the order); one path of no steps when
/// the target runs, with the same artifact and config.
///
/// [`PlanError::JumpNotAllowed`] when a path exists only through a jump the allowance
/// refuses; [`PlanError::NoPath`] when none exists at all.
pub fn paths(graph: &VersionGraph, k: usize) -> Result<Vec<UpgradePath>, PlanError> {
    if graph.running == graph.target {
        return Ok(vec![UpgradePath {
            plugin: graph.plugin.clone(),
            steps: Vec::new(),
            cost: PathCost::default(),
        }]);
    }
    // Edges the host's own check refuses (none, unless its reading and the graph's differ):
    // left out, and the paths searched again.
    let mut refused = vec![false; graph.graph.edge_count()];
    loop {
        let found = yen(graph, k.max(1), &refused);
        if found.is_empty() {
            return Err(graph.no_path(&refused));
        }
        let mut clean = true;
        for path in &found {
            for pair in path.nodes.windows(2) {
                if let Some(edge) = graph.graph.find_edge(pair[0], pair[1])
                    && !host_accepts(graph, edge)
                {
                    refused[edge.index()] = true;
                    clean = false;
                }
            }
        }
        if clean {
            return Ok(found.into_iter().map(|f| graph.upgrade_path(f)).collect());
        }
    }
}

impl VersionGraph {
    fn upgrade_path(&self, found: Found) -> UpgradePath {
        let steps = found
            .nodes
            .windows(2)
            .filter_map(|pair| {
                let edge = self.graph.find_edge(pair[0], pair[1])?;
                let (from, to) = (&self.graph[pair[0]], &self.graph[pair[1]]);
                Some(PathStep {
                    from: from.version.clone(),
                    to: to.version.clone(),
                    sha256: to.sha256,
                    transition: self.graph[edge].transition.clone(),
                    dependencies: to.dependencies.clone(),
                })
            })
            .collect();
        UpgradePath {
            plugin: self.plugin.clone(),
            steps,
            cost: found.cost,
        }
    }

    /// Why no path exists: a refused jump on the cheapest path the allowance would otherwise
    /// give, else the target's declarations in words.
    fn no_path(&self, refused: &[bool]) -> PlanError {
        let no_nodes = vec![false; self.graph.node_count()];
        let unrestricted = dijkstra(self, self.running, &no_nodes, refused, false);
        if let Some(found) = unrestricted {
            let refused = found.nodes.windows(2).find_map(|pair| {
                let edge = self.graph.find_edge(pair[0], pair[1])?;
                let weight = &self.graph[edge];
                (!weight.allowed).then_some((pair[0], pair[1], weight.transition.jump))
            });
            if let Some((a, b, Some(jump))) = refused {
                return PlanError::JumpNotAllowed(Box::new(JumpRefused {
                    plugin: self.plugin.clone(),
                    from: self.graph[a].version.clone(),
                    to: self.graph[b].version.clone(),
                    jump,
                    allow: self.allow.clone(),
                    target: self.graph[self.target].version.clone(),
                }));
            }
        }
        let (running, target) = (&self.graph[self.running], &self.graph[self.target]);
        let upward = running.version < target.version;
        let declared = if upward {
            let list = &target.metadata.migrates_from;
            if list.is_empty() {
                format!("{} declares no version it migrates from", target.version)
            } else {
                format!(
                    "{} migrates from `{}` only",
                    target.version,
                    list.join("`, `")
                )
            }
        } else {
            let list = &running.metadata.downgrades_to;
            if list.is_empty() {
                format!("{} declares no version it downgrades to", running.version)
            } else {
                format!(
                    "{} downgrades to `{}` only",
                    running.version,
                    list.join("`, `")
                )
            }
        };
        let excluded: Vec<String> = self
            .excluded
            .iter()
            .map(|(version, why)| match why {
                Excluded::Yanked => format!("{version} is yanked"),
                Excluded::LessStable(channel) => {
                    format!("{version} is on `{}`", channel.name())
                }
                Excluded::Host(reason) => format!("{version} cannot run in this host: {reason}"),
            })
            .collect();
        PlanError::NoPath(Box::new(NoPath {
            plugin: self.plugin.clone(),
            from: running.version.clone(),
            to: target.version.clone(),
            declared,
            excluded,
        }))
    }
}

/// The cheapest path from `source` to the target avoiding `removed_nodes` and
/// `removed_edges` (and, when `allowed_only`, the edges the allowance refuses). Ties go to
/// the lower node (lower version), deterministically.
fn dijkstra(
    graph: &VersionGraph,
    source: NodeIndex,
    removed_nodes: &[bool],
    removed_edges: &[bool],
    allowed_only: bool,
) -> Option<Found> {
    let g = &graph.graph;
    let mut best: Vec<Option<PathCost>> = vec![None; g.node_count()];
    let mut previous: Vec<Option<NodeIndex>> = vec![None; g.node_count()];
    let mut heap = BinaryHeap::new();
    best[source.index()] = Some(PathCost::default());
    heap.push(Reverse((PathCost::default(), source)));
    while let Some(Reverse((cost, node))) = heap.pop() {
        if best[node.index()].is_some_and(|b| b < cost) {
            continue;
        }
        if node == graph.target {
            let mut nodes = vec![node];
            let mut at = node;
            while let Some(before) = previous[at.index()] {
                nodes.push(before);
                at = before;
            }
            nodes.reverse();
            return Some(Found { cost, nodes });
        }
        for edge in g.edges_directed(node, Direction::Outgoing) {
            let next = edge.target();
            let weight = edge.weight();
            if removed_nodes[next.index()]
                || removed_edges[edge.id().index()]
                || (allowed_only && !weight.allowed)
            {
                continue;
            }
            let through = cost.plus(weight.cost);
            let better = match best[next.index()] {
                None => true,
                Some(known) => through < known,
            };
            if better {
                best[next.index()] = Some(through);
                previous[next.index()] = Some(node);
                heap.push(Reverse((through, next)));
            }
        }
    }
    None
}

/// Yen's `k` cheapest simple paths, each allowed edge by edge, none through `refused`.
fn yen(graph: &VersionGraph, k: usize, refused: &[bool]) -> Vec<Found> {
    let mut removed_nodes = vec![false; graph.graph.node_count()];
    let Some(first) = dijkstra(graph, graph.running, &removed_nodes, refused, true) else {
        return Vec::new();
    };
    let mut chosen = vec![first];
    // Candidates ordered by cost, then by the versions they pass through.
    let mut candidates: BTreeSet<(PathCost, Vec<Version>, Vec<NodeIndex>)> = BTreeSet::new();
    let versions_of = |nodes: &[NodeIndex]| -> Vec<Version> {
        nodes
            .iter()
            .map(|n| graph.graph[*n].version.clone())
            .collect()
    };
    let mut removed_edges = refused.to_vec();
    while chosen.len() < k {
        let Some(last) = chosen.last() else { break };
        let last = last.clone();
        for spur_at in 0..last.nodes.len().saturating_sub(1) {
            let root = &last.nodes[..=spur_at];
            let spur = root[spur_at];
            // The edges leaving the root of the paths already chosen that share it.
            let mut cut = Vec::new();
            for path in &chosen {
                if path.nodes.len() > spur_at + 1
                    && path.nodes[..=spur_at] == *root
                    && let Some(edge) = graph
                        .graph
                        .find_edge(path.nodes[spur_at], path.nodes[spur_at + 1])
                    && !removed_edges[edge.index()]
                {
                    removed_edges[edge.index()] = true;
                    cut.push(edge);
                }
            }
            for node in &root[..spur_at] {
                removed_nodes[node.index()] = true;
            }
            let tail = dijkstra(graph, spur, &removed_nodes, &removed_edges, true);
            for edge in cut {
                removed_edges[edge.index()] = false;
            }
            for node in &root[..spur_at] {
                removed_nodes[node.index()] = false;
            }
            let Some(tail) = tail else {
                continue;
            };
            let mut nodes = root[..spur_at].to_vec();
            nodes.extend(&tail.nodes);
            if chosen.iter().any(|p| p.nodes == nodes) {
                continue;
            }
            let cost = cost_of(graph, &nodes);
            candidates.insert((cost, versions_of(&nodes), nodes));
        }
        let Some((cost, _, nodes)) = candidates.pop_first() else {
            break;
        };
        chosen.push(Found { cost, nodes });
    }
    // Dijkstra's first path wins ties by node order; sort all by the documented order.
    chosen.sort_by_cached_key(|f| (f.cost, versions_of(&f.nodes)));
    chosen
}

fn cost_of(graph: &VersionGraph, nodes: &[NodeIndex]) -> PathCost {
    nodes
        .windows(2)
        .filter_map(|pair| graph.graph.find_edge(pair[0], pair[1]))
        .fold(PathCost::default(), |cost, edge| {
            cost.plus(graph.graph[edge].cost)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_matches_as_documented() {
        let cases = [
            ("strategy_*", "strategy_ma", true),
            ("strategy_*", "strategy_", true),
            ("strategy_*", "risk_model", false),
            ("*_model", "risk_model", true),
            ("*", "anything", true),
            ("risk_model", "risk_model", true),
            ("risk_model", "risk_models", false),
            ("a*b*c", "aXbYc", true),
            ("a*b*c", "aXcYb", false),
            ("ab*ba", "aba", false),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(glob_matches(pattern, text), expected, "{pattern} ~ {text}");
        }
    }

    #[test]
    fn jump_is_the_semver_distance() {
        let v = |s: &str| Version::parse(s).unwrap();
        let cases = [
            ("1.0.0", "2.0.0", Some(Jump::Major)),
            ("2.0.0", "1.9.9", Some(Jump::Major)),
            ("0.1.0", "0.2.0", Some(Jump::Major)),
            ("0.1.0", "0.1.3", Some(Jump::Patch)),
            ("1.1.0", "1.2.5", Some(Jump::Minor)),
            ("1.1.0", "1.1.1", Some(Jump::Patch)),
            ("1.1.0-beta.1", "1.1.0", Some(Jump::Patch)),
            ("1.1.0", "1.1.0", None),
        ];
        for (a, b, expected) in cases {
            assert_eq!(jump(&v(a), &v(b)), expected, "{a} -> {b}");
        }
    }
}
