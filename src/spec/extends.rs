//! `spec.extends`: a file that overlays a base, so that host groups share one set.
//!
//! The merge, overlay over base:
//! - plugins are matched by id; a plugin of either file alone is kept as it is;
//! - for a plugin in both, each key the overlay gives replaces the base's, except two:
//!   `version`, `channel` and `constraint` are one choice, replaced whole when the overlay
//!   pins a version or names a channel (a canary that pins 2.1.0 over a base on `stable` runs
//!   2.1.0, not "2.1.0 on stable"; a `constraint` alone narrows the base's choice); and
//!   `config` is merged key by key (the overlay's values win), unless the overlay also chooses
//!   the version: a config given with another version is that version's, whole. A plugin in
//!   both files is checked again once merged (a pin its constraint refuses, a `freshState`
//!   that is not its pin);
//! - `registry`, `host`, `defaults` and each policy key (`prune` too): the overlay's when it
//!   gives one; `windows` replaced whole;
//! - the policy's guards (`requireSignatures`, `requireLock`) cannot be turned off by an
//!   overlay: that is a conflict, an error naming both files.
//!
//! A chain that comes back to a file already in it is an error naming the files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_json::Value as Json;

use super::decode::Decoder;
use super::diagnostic::{Diagnostic, Problem, Report};
use super::model::{PluginSet, PluginSpec, Policy};
use super::yaml::{self, Limits, Span};

/// One file decoded, with the places that problems found after a merge point at.
pub(crate) struct Loaded {
    pub set: PluginSet,
    /// The file each plugin was last listed in, and where.
    pub origins: BTreeMap<String, (PathBuf, Span)>,
    /// The guards the file sets itself.
    guards: Vec<(&'static str, bool, Span)>,
    /// Plugins whose version was given but refused (see `Decoder::version_attempted`).
    pub version_attempted: std::collections::BTreeSet<String>,
    /// Plugins listed in more than one file of the chain: their merged entry is checked again.
    pub merged: std::collections::BTreeSet<String>,
    extends_span: Option<Span>,
}

/// Parses and decodes one file's text; its problems go to `report`.
pub(crate) fn decode_text(
    path: &Path,
    text: &str,
    limits: &Limits,
    report: &mut Report,
) -> Option<Loaded> {
    report.sources.push((path.to_path_buf(), text.to_owned()));
    let root = match yaml::parse(text, limits) {
        Ok(root) => root,
        Err(error) => {
            report.diagnostics.push(Diagnostic {
                file: path.to_path_buf(),
                span: error.span(),
                problem: Problem::Syntax(error),
            });
            return None;
        }
    };
    let mut decoder = Decoder::new(path.to_path_buf());
    let set = decoder.plugin_set(&root, limits);
    report.diagnostics.append(&mut decoder.diagnostics);
    Some(Loaded {
        set: set?,
        origins: (decoder.plugin_spans.into_iter())
            .map(|(id, span)| (id, (path.to_path_buf(), span)))
            .collect(),
        guards: decoder.guards,
        version_attempted: decoder.version_attempted,
        merged: Default::default(),
        extends_span: decoder.extends_span,
    })
}

/// Reads `path` and, through `spec.extends`, its bases; merges them.
pub(crate) fn load_chain(path: &Path, limits: &Limits, report: &mut Report) -> Option<Loaded> {
    load_following(path, limits, report, &mut Vec::new())
}

fn load_following(
    path: &Path,
    limits: &Limits,
    report: &mut Report,
    chain: &mut Vec<PathBuf>,
) -> Option<Loaded> {
    let text = match read_bounded(path, limits) {
        Ok(text) => text,
        Err(problem) => {
            report.diagnostics.push(Diagnostic {
                file: path.to_path_buf(),
                span: None,
                problem: *problem,
            });
            return None;
        }
    };
    let overlay = decode_text(path, &text, limits, report)?;
    let Some(base_name) = overlay.set.spec.extends.clone() else {
        return Some(overlay);
    };
    let base_path = path.parent().unwrap_or(Path::new("")).join(&base_name);
    let identity = |p: &Path| p.canonicalize().unwrap_or_else(|_| p.to_path_buf());
    chain.push(identity(path));
    if chain.contains(&identity(&base_path)) {
        let mut names: Vec<String> = chain.iter().map(|p| p.display().to_string()).collect();
        names.push(identity(&base_path).display().to_string());
        report.diagnostics.push(Diagnostic {
            file: path.to_path_buf(),
            span: overlay.extends_span,
            problem: Problem::ExtendsCycle {
                chain: names.join(" -> "),
            },
        });
        return None;
    }
    let base = load_following(&base_path, limits, report, chain)?;
    Some(merge(base, &base_path, overlay, path, report))
}

/// Reads a regular file, never more than the size limit (a device or a file that grows while
/// it is read cannot hold the reader).
/// (The problem is boxed: `Problem` is large, and this is the cold path.)
fn read_bounded(path: &Path, limits: &Limits) -> Result<String, Box<Problem>> {
    use std::io::Read as _;
    let unreadable = |reason: String| {
        Box::new(Problem::Unreadable {
            path: path.to_path_buf(),
            reason,
        })
    };
    let file = std::fs::File::open(path).map_err(|e| unreadable(e.to_string()))?;
    let kind = file.metadata().map_err(|e| unreadable(e.to_string()))?;
    if !kind.is_file() {
        return Err(unreadable("not a regular file".to_owned()));
    }
    let mut bytes = Vec::new();
    file.take(limits.max_file_bytes as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| unreadable(e.to_string()))?;
    if bytes.len() > limits.max_file_bytes {
        return Err(Box::new(Problem::Syntax(yaml::SyntaxError::Limit {
            what: "the file",
            limit: limits.max_file_bytes,
            unit: " bytes",
            span: Span::default(),
        })));
    }
    String::from_utf8(bytes).map_err(|_| unreadable("it is not UTF-8 text".to_owned()))
}

/// The overlay over its base.
fn merge(
    base: Loaded,
    base_path: &Path,
    overlay: Loaded,
    overlay_path: &Path,
    report: &mut Report,
) -> Loaded {
    for (key, value, span) in &overlay.guards {
        let guard = matches!(*key, "requireSignatures" | "requireLock");
        if let Some((_, _, base_at)) = base
            .guards
            .iter()
            .find(|(k, v, _)| k == key && *v && guard && !value)
        {
            report.diagnostics.push(Diagnostic {
                file: overlay_path.to_path_buf(),
                span: Some(*span),
                problem: Problem::ExtendsConflict {
                    what: format!("`policy.{key}` is turned on and off"),
                    base: base_path.to_path_buf(),
                    base_at: *base_at,
                    overlay: overlay_path.to_path_buf(),
                    fix: format!(
                        "an overlay cannot turn off its base's `{key}`: remove it from `{}`, or \
                         turn it off in the base for every host",
                        overlay_path.display()
                    ),
                },
            });
        }
    }
    let prune_given = (overlay.guards.iter())
        .find(|(key, _, _)| *key == "prune")
        .map(|(_, value, _)| *value);
    let mut merged = base.merged;
    merged.extend(overlay.merged);
    let (mut set, over) = (base.set, overlay.set);
    set.metadata = over.metadata;
    set.spec.extends = over.spec.extends;
    set.spec.registry = over.spec.registry.or(set.spec.registry);
    set.spec.host = over.spec.host.or(set.spec.host);
    set.spec.policy = merge_policy(set.spec.policy, over.spec.policy);
    // `prune` is not a guard: the overlay's, when it says it, either way.
    set.spec.policy.prune = prune_given.unwrap_or(set.spec.policy.prune);
    let (base_defaults, over_defaults) = (set.spec.defaults, over.spec.defaults);
    set.spec.defaults = super::model::Defaults {
        channel: over_defaults.channel.or(base_defaults.channel),
        allow: over_defaults.allow.or(base_defaults.allow),
        strategy: over_defaults.strategy.or(base_defaults.strategy),
        verify: over_defaults.verify.or(base_defaults.verify),
        update: over_defaults.update.or(base_defaults.update),
        on_failure: over_defaults.on_failure.or(base_defaults.on_failure),
    };
    for plugin in over.spec.plugins {
        match set.spec.plugins.iter_mut().find(|p| p.id == plugin.id) {
            Some(base_plugin) => {
                merged.insert(plugin.id.clone());
                merge_plugin(base_plugin, plugin);
            }
            None => set.spec.plugins.push(plugin),
        }
    }
    let mut origins = base.origins;
    origins.extend(overlay.origins);
    let mut guards = base.guards;
    guards.extend(overlay.guards);
    let mut version_attempted = base.version_attempted;
    version_attempted.extend(overlay.version_attempted);
    Loaded {
        set,
        origins,
        guards,
        version_attempted,
        merged,
        extends_span: overlay.extends_span,
    }
}

fn merge_policy(base: Policy, over: Policy) -> Policy {
    Policy {
        windows: if over.windows.is_empty() {
            base.windows
        } else {
            over.windows
        },
        max_parallel: over.max_parallel.or(base.max_parallel),
        rollback_retention: over.rollback_retention.or(base.rollback_retention),
        compatibility: {
            // The overlay's rules first: the first pattern that matches wins.
            let mut rules = over.compatibility;
            rules.extend(base.compatibility);
            rules
        },
        require_signatures: base.require_signatures || over.require_signatures,
        require_lock: base.require_lock || over.require_lock,
        // Set from the overlay's explicit value by `merge` (a bool cannot say "not given").
        prune: base.prune,
    }
}

fn merge_plugin(base: &mut PluginSpec, over: PluginSpec) {
    // A pin or a channel replaces the base's choice whole; a constraint alone narrows it.
    let reselected = over.version.is_some() || over.channel.is_some();
    if reselected {
        base.version = over.version;
        base.channel = over.channel;
        base.constraint = over.constraint;
    } else if over.constraint.is_some() {
        base.constraint = over.constraint;
    }
    base.allow = over.allow.or(base.allow);
    base.config = match (base.config.take(), over.config) {
        // A config given with another version is that version's, whole: merged into the base's
        // it would mix two versions' keys.
        (Some(base), Some(over)) if !reselected => Some(merge_json(base, over)),
        (base, over) => over.or(base),
    };
    base.strategy = over.strategy.or(base.strategy.take());
    base.verify = over.verify.or(base.verify.take());
    base.update = over.update.or(base.update.take());
    base.on_failure = over.on_failure.or(base.on_failure);
    if !over.migrations.is_empty() {
        base.migrations = over.migrations;
    }
}

/// Objects merged key by key, the overlay's values winning; anything else replaced.
fn merge_json(base: Json, over: Json) -> Json {
    match (base, over) {
        (Json::Object(mut base), Json::Object(over)) => {
            for (key, value) in over {
                let merged = match base.remove(&key) {
                    Some(old) => merge_json(old, value),
                    None => value,
                };
                base.insert(key, merged);
            }
            Json::Object(base)
        }
        (_, over) => over,
    }
}
