//! What the resolver's and the planner's tests share: a registry index written one version a
//! line, plugins.yaml from text, and a plugin's paths computed as `plan::plan` computes them.
//!
//! An index line: `<id> <version> [<channel>]`, then `;`-separated clauses: `from <req>`
//! (`migrates_from`), `down <req>` (`downgrades_to`), `rule <from> to <to>` (a declarative
//! migration published with it), `needs <id> <req>`, `abi <MAJOR.MINOR>`, `framework <req>`,
//! `schema <n>`, `yanked`.
#![allow(dead_code)] // each test uses a part of it

use std::collections::BTreeMap;

use plugsync::plan::{
    self, Allowance, GraphInput, HostCompat, PlanError, Running, UpgradePath, VersionGraph,
};
use plugsync::registry::{IndexEntry, IndexFile};
use plugsync::resolve::{self, Update};
use plugsync::spec::model::{Channel, Migration, PluginSet};
use plugsync::spec::{self, Limits};
use plugsync_host::Digest;
use semver::VersionReq;

/// A plugins.yaml with a registry, then `spec` (indented under `spec:`).
pub fn set(spec: &str) -> PluginSet {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugins.yaml");
    let text = format!(
        "apiVersion: plugsync/v1\nkind: PluginSet\nmetadata:\n  name: desk\nspec:\n  registry:\n    \
         url: https://registry.example.com/plugins\n{spec}"
    );
    std::fs::write(&path, text).unwrap();
    match spec::load(&path, &Limits::default()) {
        Ok(desired) => desired.set,
        Err(report) => panic!("not a valid plugins.yaml:\n{}", report.render(false)),
    }
}

/// The index the lines describe (see the module docs).
pub fn index(lines: &str) -> BTreeMap<String, IndexFile> {
    let mut index: BTreeMap<String, IndexFile> = BTreeMap::new();
    for line in lines.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let mut clauses = line.split(';').map(str::trim);
        let head: Vec<&str> = clauses.next().unwrap().split_whitespace().collect();
        let (id, version) = (head[0], head[1]);
        let channel = match head.get(2).copied().unwrap_or("stable") {
            "stable" => Channel::Stable,
            "beta" => Channel::Beta,
            "alpha" => Channel::Alpha,
            "dev" => Channel::Dev,
            other => panic!("no channel `{other}`"),
        };
        let mut entry = IndexEntry {
            version: version.to_owned(),
            channel,
            yanked: false,
            sha256: artifact(id, version),
            file: format!("artifacts/{id}/{version}/lib{id}.so"),
            signature: None,
            abi: "1.2".to_owned(),
            framework: ">=0.1.0".to_owned(),
            kind: "strategy".to_owned(),
            state_schema: 1,
            dependencies: BTreeMap::new(),
            migrates_from: Vec::new(),
            downgrades_to: Vec::new(),
            migrations: Vec::new(),
        };
        for clause in clauses {
            let (word, rest) = clause.split_once(' ').unwrap_or((clause, ""));
            match word {
                "from" => entry.migrates_from.push(rest.to_owned()),
                "down" => entry.downgrades_to.push(rest.to_owned()),
                "rule" => entry.migrations.push(migration(rest)),
                "needs" => {
                    let (dependency, requirement) = rest.split_once(' ').unwrap();
                    entry
                        .dependencies
                        .insert(dependency.to_owned(), requirement.to_owned());
                }
                "abi" => entry.abi = rest.to_owned(),
                "framework" => entry.framework = rest.to_owned(),
                "schema" => entry.state_schema = rest.parse().unwrap(),
                "yanked" => entry.yanked = true,
                other => panic!("no clause `{other}`"),
            }
        }
        let file = index.entry(id.to_owned()).or_insert_with(|| IndexFile {
            plugin: id.to_owned(),
            versions: Vec::new(),
        });
        file.versions.push(entry);
    }
    index
}

/// `<from> to <to>`: a migration of no rules (what matters here is that it exists).
pub fn migration(text: &str) -> Migration {
    let (from, to) = text.split_once(" to ").unwrap();
    Migration {
        from: VersionReq::parse(from).unwrap(),
        to: VersionReq::parse(to).unwrap(),
        rules: Vec::new(),
    }
}

/// The sha256 the index gives `id` `version`'s artifact.
pub fn artifact(id: &str, version: &str) -> Digest {
    Digest::of(format!("{id} {version}").as_bytes())
}

/// The host of every case unless said: ABI 1, framework 0.1.0.
pub fn host() -> HostCompat {
    HostCompat::of_status(1, "0.1.0").unwrap()
}

/// What runs: `id` at `version` as the index publishes it, or another build of it.
#[derive(Debug, Clone, Copy)]
pub struct Runs<'a> {
    pub version: &'a str,
    /// Another artifact of the same version.
    pub rebuilt: bool,
    pub config_differs: bool,
}

pub fn runs(version: &str) -> Runs<'_> {
    Runs {
        version,
        rebuilt: false,
        config_differs: false,
    }
}

/// The `k` cheapest paths of plugins.yaml's first plugin from `running` to what it resolves to
/// (no lock), as the glue computes them.
pub fn paths_of(
    set: &PluginSet,
    index: &BTreeMap<String, IndexFile>,
    running: Runs<'_>,
    host: &HostCompat,
    k: usize,
) -> Result<(VersionGraph, Vec<UpgradePath>), PlanError> {
    paths_of_plugin(set, index, &set.spec.plugins[0].id, running, host, k)
}

/// [`paths_of`] for plugins.yaml's plugin `id`.
pub fn paths_of_plugin(
    set: &PluginSet,
    index: &BTreeMap<String, IndexFile>,
    id: &str,
    running: Runs<'_>,
    host: &HostCompat,
    k: usize,
) -> Result<(VersionGraph, Vec<UpgradePath>), PlanError> {
    let spec = set.spec.plugins.iter().find(|p| p.id == id).unwrap();
    let resolution = resolve::resolve(set, index, None, &Update::None)
        .unwrap_or_else(|e| panic!("the case must resolve: {e}"));
    let target = resolution.get(&spec.id).unwrap();
    let file = &index[&spec.id];
    let entry = file
        .versions
        .iter()
        .find(|e| e.version == running.version)
        .unwrap_or_else(|| panic!("the index has no running version {}", running.version));
    let metadata = plan::metadata_of(&spec.id, entry).unwrap();
    let sha256 = if running.rebuilt {
        Digest::of(b"another build")
    } else {
        entry.sha256
    };
    let allow = Allowance::of(spec, &set.spec.policy, &set.spec.defaults);
    let running = Running {
        metadata: &metadata,
        sha256,
        config_differs: running.config_differs,
    };
    let input = GraphInput::of(spec, &set.spec, &allow, running, target, file, host);
    let graph = VersionGraph::build(&input)?;
    let paths = plan::paths(&graph, k)?;
    Ok((graph, paths))
}

/// Each path on a line: `1.0.0 → 2.0.0 (upgrade, major, by 2.0.0's migrate) → …`.
pub fn render_paths(paths: &[UpgradePath]) -> String {
    let mut out = String::new();
    for path in paths {
        match path.steps.first() {
            None => out.push_str("no steps"),
            Some(first) => out.push_str(&first.from.to_string()),
        }
        for step in &path.steps {
            out.push_str(&format!(" → {} ({})", step.to, step.transition));
        }
        out.push('\n');
    }
    out
}
