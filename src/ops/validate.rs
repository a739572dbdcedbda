//! `plugsync validate` and `plugsync schema`: check a plugins.yaml as CI and editors do.

use std::path::Path;

use crate::spec::{self, Limits};

/// What `validate` found.
#[derive(Debug, Clone, PartialEq)]
pub enum Validated {
    /// Valid: the files read (the one named, then each base it extends) and how many plugins.
    Valid {
        /// The files read.
        files: Vec<std::path::PathBuf>,
        /// Plugins in the merged set.
        plugins: usize,
    },
    /// Every problem, rendered like a compiler's errors (the caller prints it on stderr).
    Invalid(String),
}

/// Reads and checks `file` and every file it extends; `styled` renders errors in colour.
pub fn validate(file: &Path, styled: bool) -> Validated {
    match spec::load(file, &Limits::default()) {
        Ok(desired) => Validated::Valid {
            files: desired.files,
            plugins: desired.set.spec.plugins.len(),
        },
        Err(report) => Validated::Invalid(report.render(styled)),
    }
}

/// The JSON Schemas `plugsync schema` prints, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchemaName {
    /// plugins.yaml.
    #[default]
    Plugins,
    /// A registry's index files (`index/<id>.json`).
    Index,
    /// `plugins.lock`.
    Lock,
    /// A plan: `reconcile --dry-run --output json`.
    Plan,
    /// `history --output json`.
    History,
    /// An alert `plugsync run --alert-webhook` posts (`--alert-format json`).
    Alert,
}

/// The schema named, pretty-printed.
pub fn schema(name: SchemaName) -> String {
    let schema = match name {
        SchemaName::Plugins => spec::schema(),
        SchemaName::Index => crate::registry::index_schema(),
        SchemaName::Lock => crate::resolve::lock_schema(),
        SchemaName::Plan => crate::plan::plan_schema(),
        SchemaName::History => super::history_schema(),
        SchemaName::Alert => crate::watch::alert_schema(),
    };
    serde_json::to_string_pretty(&schema).unwrap_or_default() + "\n"
}
