//! `plugins.yaml`, the desired state: read, checked and merged with the files it extends.
//!
//! 1. **Parse** each file into a tree that keeps every node's line and column ([`yaml`]),
//!    within [`Limits`] (size, depth, key length; anchors, aliases and tags refused).
//! 2. **Decode** the tree into the model ([`model`]), reporting every problem at once, with
//!    its place and a fix ([`Diagnostic`]).
//! 3. **Extend**: a file with `spec.extends` overlays its base, plugin by plugin.
//! 4. **Check** what needs the merged set: each plugin names a version, a `freshState` is a
//!    pin, windows leave some time.
//!
//! Pure: nothing here but reading the files.

mod decode;
mod diagnostic;
mod extends;
pub mod model;
pub mod provenance;
mod reference;
pub mod windows;
pub mod yaml;

use std::path::{Path, PathBuf};

pub use diagnostic::{Diagnostic, MAX_SHOWN, Problem, Report};
pub use model::PluginSet;
pub use reference::reference_markdown;
pub use yaml::{Limits, Span};

/// A plugins.yaml read and checked: the set it describes (merged with the files it extends),
/// and the files it was read from.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// The file named (the overlay, when it extends others).
    pub file: PathBuf,
    /// Every file read: the one named first, then each base.
    pub files: Vec<PathBuf>,
    /// The merged set.
    pub set: PluginSet,
}

/// Reads `path` (and what it extends) within `limits`: the set, or every problem found.
pub fn load(path: &Path, limits: &Limits) -> Result<Desired, Report> {
    let mut report = Report::default();
    let loaded = extends::load_chain(path, limits, &mut report);
    if let Some(loaded) = &loaded {
        check_merged(loaded, &mut report);
    }
    match loaded {
        Some(loaded) if report.is_empty() => Ok(Desired {
            file: path.to_path_buf(),
            files: report
                .sources
                .iter()
                .map(|(path, _)| path.clone())
                .collect(),
            set: loaded.set,
        }),
        _ => Err(report),
    }
}

/// Reads and checks one file's text on its own (no `extends` followed): every problem found.
/// What the property tests feed.
pub fn check_text(path: &Path, text: &str, limits: &Limits) -> Report {
    let mut report = Report::default();
    if let Some(loaded) = extends::decode_text(path, text, limits, &mut report) {
        check_merged(&loaded, &mut report);
    }
    report
}

/// What only the whole (merged) set can tell: each plugin says which version it wants; and,
/// for a plugin listed in several files, that its merged pin meets its merged constraint and
/// its `freshState` names that pin.
fn check_merged(loaded: &extends::Loaded, report: &mut Report) {
    let set = &loaded.set;
    let channel_by_default = set.spec.defaults.channel.is_some();
    for plugin in &set.spec.plugins {
        let Some((file, span)) = loaded.origins.get(&plugin.id) else {
            continue;
        };
        let mut problem = |problem: Problem| {
            report.diagnostics.push(Diagnostic {
                file: file.clone(),
                span: Some(*span),
                problem,
            });
        };
        if plugin.version.is_none()
            && plugin.channel.is_none()
            && !channel_by_default
            && !loaded.version_attempted.contains(&plugin.id)
        {
            problem(Problem::NoVersion {
                id: plugin.id.clone(),
            });
        }
        // What each file's decoding checked, checked again once files are merged.
        if !loaded.merged.contains(&plugin.id) {
            continue;
        }
        if let (Some(pin), Some(constraint)) = (&plugin.version, &plugin.constraint)
            && !constraint.matches(pin)
        {
            problem(Problem::PinOutsideConstraint {
                id: plugin.id.clone(),
                version: pin.to_string(),
                constraint: constraint.to_string(),
            });
        }
        if let Some(fresh) = (plugin.update.as_ref()).and_then(|u| u.fresh_state.as_ref())
            && plugin.version.as_ref() != Some(fresh)
        {
            problem(Problem::FreshStateNotPin {
                id: plugin.id.clone(),
                fresh: fresh.to_string(),
                pin: plugin.version.as_ref().map(ToString::to_string),
            });
        }
    }
    // Problems of several files, each file's in order: the report reads like a compiler's.
    report
        .diagnostics
        .sort_by_key(|d| (d.file.clone(), d.span.map(|s| s.start)));
}

impl Desired {
    /// The sha256 of the merged set's canonical JSON: what a plan records it was made from,
    /// and a change's `desired_sha256`. Comments, layout and key order do not change it; a
    /// change to what is desired does. (A lock records less: `resolve::desired_sha256`, only
    /// what resolution reads.)
    pub fn digest(&self) -> plugsync_host::Digest {
        let canonical = plugsync_plugin::canonical_json(&self.set).unwrap_or_default();
        plugsync_host::Digest::of(&canonical)
    }
}

/// The JSON Schema of plugins.yaml, for editors (`# yaml-language-server: $schema=…`).
pub fn schema() -> serde_json::Value {
    serde_json::to_value(schemars::schema_for!(PluginSet)).unwrap_or_default()
}
