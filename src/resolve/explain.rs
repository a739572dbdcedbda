//! A conflict in words, from PubGrub's derivation tree.
//!
//! PubGrub proves there is no solution with a tree whose leaves are facts (plugins.yaml asks
//! this of a plugin; this version needs that) and whose inner nodes are what it deduced from
//! them. An operator needs the facts: they are what can be changed. So the report is the set
//! of leaves, each once, in words — the requirements between plugins first, then what
//! plugins.yaml asks — and the fix.

use std::collections::HashSet;
use std::fmt;

use pubgrub::{DerivationTree, External, Ranges};
use semver::Version;

use super::candidates::Universe;
use super::solver::{Node, Unusable};
use super::{Asked, words};

/// Why no choice of versions meets every requirement: the requirements that collide.
#[derive(Debug, Clone, PartialEq)]
pub struct Conflict {
    /// The requirements, each once: those between plugins first, then what plugins.yaml asks.
    pub because: Vec<Clause>,
}

/// One requirement taking part in a conflict.
#[derive(Debug, Clone, PartialEq)]
pub enum Clause {
    /// What plugins.yaml asks of a plugin.
    Asked {
        /// The plugin.
        plugin: String,
        /// What plugins.yaml asks.
        asked: Asked,
        /// The versions that admits (published, on the channel, in the constraint, for the
        /// host, not yanked), lowest first.
        admits: Vec<Version>,
    },
    /// Versions of a plugin need another plugin within a requirement.
    Needs {
        /// The plugin whose versions declare the dependency.
        dependant: String,
        /// Those versions, lowest first.
        versions: Vec<Version>,
        /// The plugin they need.
        dependency: String,
        /// The requirement, as declared.
        requirement: String,
        /// Whether any published version of the dependency meets it.
        published: bool,
    },
    /// Versions of a plugin need a plugin plugins.yaml does not name.
    NeedsUnnamed {
        /// The plugin whose versions declare the dependency.
        dependant: String,
        /// Those versions, lowest first.
        versions: Vec<Version>,
        /// The plugin they need.
        dependency: String,
    },
    /// Versions of a plugin need another version of themselves.
    NeedsOtherSelf {
        /// The plugin.
        plugin: String,
        /// Those versions, lowest first.
        versions: Vec<Version>,
        /// The requirement, as declared.
        requirement: String,
    },
}

impl fmt::Display for Clause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Clause::Asked {
                plugin,
                asked: Asked::Pinned(version),
                ..
            } => write!(f, "`{plugin}` is pinned to {version}"),
            Clause::Asked {
                plugin,
                asked,
                admits,
            } => {
                let admits: Vec<&Version> = admits.iter().collect();
                write!(
                    f,
                    "`{plugin}` follows {asked}, which admits {}",
                    words::versions(&admits)
                )
            }
            Clause::Needs {
                dependant,
                versions,
                dependency,
                requirement,
                published,
            } => {
                write_versions(f, dependant, versions)?;
                write!(f, " `{dependency}` {requirement}")?;
                if !*published {
                    write!(f, " (no version of `{dependency}` published meets it)")?;
                }
                Ok(())
            }
            Clause::NeedsUnnamed {
                dependant,
                versions,
                dependency,
            } => {
                write_versions(f, dependant, versions)?;
                write!(f, " `{dependency}`, which plugins.yaml does not name")
            }
            Clause::NeedsOtherSelf {
                plugin,
                versions,
                requirement,
            } => {
                write_versions(f, plugin, versions)?;
                write!(f, " `{plugin}` {requirement} (another version of itself)")
            }
        }
    }
}

/// `` `ma_cross` 2.1.0 needs ``, `` `ma_cross` 2.0.0 and 2.1.0 need ``.
fn write_versions(f: &mut fmt::Formatter<'_>, plugin: &str, versions: &[Version]) -> fmt::Result {
    let list: Vec<&Version> = versions.iter().collect();
    let verb = if versions.len() == 1 { "needs" } else { "need" };
    write!(f, "`{plugin}` {} {verb}", words::versions(&list))
}

impl fmt::Display for Conflict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (asked, needs): (Vec<&Clause>, Vec<&Clause>) = self
            .because
            .iter()
            .partition(|c| matches!(c, Clause::Asked { .. }));
        f.write_str("no versions meet every requirement: ")?;
        join(f, &needs, "; ")?;
        if !needs.is_empty() && !asked.is_empty() {
            f.write_str(", but ")?;
        }
        // `, and `: a clause about a channel ends with the versions it admits.
        join(f, &asked, ", and ")?;
        let unnamed = self.because.iter().find_map(|c| match c {
            Clause::NeedsUnnamed {
                dependant,
                dependency,
                ..
            } => Some((dependant, dependency)),
            _ => None,
        });
        match unnamed {
            Some((dependant, dependency)) => write!(
                f,
                ": add `{dependency}` to plugins.yaml, or select a version of `{dependant}` that \
                 does not need it"
            ),
            None => f.write_str(
                ": change one of these in plugins.yaml (a pin, a channel or a constraint), or \
                 publish versions that agree",
            ),
        }
    }
}

fn join(f: &mut fmt::Formatter<'_>, clauses: &[&Clause], separator: &str) -> fmt::Result {
    for (i, clause) in clauses.iter().enumerate() {
        if i > 0 {
            f.write_str(separator)?;
        }
        write!(f, "{clause}")?;
    }
    Ok(())
}

type Tree = DerivationTree<Node, Ranges<u32>, Unusable>;

/// The conflict `tree` proves, in the universe's words.
pub(crate) fn conflict(universe: &Universe<'_>, tree: &Tree) -> Conflict {
    let mut tree = tree.clone();
    // "No version of X in this range" is deduced, not a fact an operator can change: PubGrub
    // folds it into the facts it came from.
    tree.collapse_no_versions();
    let mut leaves = Vec::new();
    collect_leaves(&tree, &mut HashSet::new(), &mut leaves);
    let mut needs = Vec::new();
    let mut asked = Vec::new();
    for leaf in leaves {
        let clause = match leaf {
            External::FromDependencyOf(Node::Root, _, Node::Plugin(plugin), _) => {
                asked.push(*plugin);
                continue;
            }
            External::FromDependencyOf(
                Node::Plugin(dependant),
                versions,
                Node::Plugin(dependency),
                required,
            ) => needs_clause(universe, *dependant, versions, *dependency, required),
            External::Custom(Node::Plugin(plugin), versions, why) => {
                let id = universe.plugins[*plugin as usize].spec.id.clone();
                let versions = versions_in(universe, *plugin, versions);
                match why {
                    Unusable::NeedsUnnamed(dependency) => Clause::NeedsUnnamed {
                        dependant: id,
                        versions,
                        dependency: dependency.clone(),
                    },
                    Unusable::NeedsOtherSelf(requirement) => Clause::NeedsOtherSelf {
                        plugin: id,
                        versions,
                        requirement: requirement.clone(),
                    },
                }
            }
            // The root's own version, a dependency on the root, versions left over: none is a
            // requirement anyone wrote.
            _ => continue,
        };
        if !needs.contains(&clause) {
            needs.push(clause);
        }
    }
    asked.sort_unstable();
    asked.dedup();
    let asked = asked.into_iter().map(|place| {
        let plugin = &universe.plugins[place as usize];
        Clause::Asked {
            plugin: plugin.spec.id.clone(),
            asked: plugin.asked.clone(),
            admits: versions_in(universe, place, &plugin.eligible),
        }
    });
    needs.extend(asked);
    Conflict { because: needs }
}

/// The tree's leaves, depth first, a shared subtree once.
fn collect_leaves<'t>(
    tree: &'t Tree,
    seen: &mut HashSet<usize>,
    leaves: &mut Vec<&'t External<Node, Ranges<u32>, Unusable>>,
) {
    match tree {
        DerivationTree::External(external) => leaves.push(external),
        DerivationTree::Derived(derived) => {
            if derived.shared_id.is_some_and(|id| !seen.insert(id)) {
                return;
            }
            collect_leaves(&derived.cause1, seen, leaves);
            collect_leaves(&derived.cause2, seen, leaves);
        }
    }
}

fn needs_clause(
    universe: &Universe<'_>,
    dependant: u32,
    versions: &Ranges<u32>,
    dependency: u32,
    required: &Ranges<u32>,
) -> Clause {
    let plugin = &universe.plugins[dependant as usize];
    let versions = versions_in(universe, dependant, versions);
    let target = &universe.plugins[dependency as usize];
    // The versions in the leaf share the requirement (PubGrub merges only alike ones); the
    // highest one's text is shown.
    let requirement = versions
        .last()
        .and_then(|v| plugin.candidates.iter().find(|c| c.version == *v))
        .and_then(|c| c.entry.dependencies.get(&target.spec.id))
        .cloned()
        .unwrap_or_default();
    let published = (0..target.candidates.len())
        .filter_map(|p| u32::try_from(p).ok())
        .any(|p| required.contains(&p));
    Clause::Needs {
        dependant: plugin.spec.id.clone(),
        versions,
        dependency: target.spec.id.clone(),
        requirement,
        published,
    }
}

/// The versions of `plugin` in `set`: those plugins.yaml admits when there are any (the
/// others were never candidates), else all of them.
fn versions_in(universe: &Universe<'_>, plugin: u32, set: &Ranges<u32>) -> Vec<Version> {
    let plugin = &universe.plugins[plugin as usize];
    let inside: Vec<(u32, &Version)> = (0u32..)
        .zip(&plugin.candidates)
        .filter(|(p, _)| set.contains(p))
        .map(|(p, c)| (p, &c.version))
        .collect();
    let admitted: Vec<Version> = inside
        .iter()
        .filter(|(p, _)| plugin.eligible.contains(p))
        .map(|(_, v)| (*v).clone())
        .collect();
    if admitted.is_empty() {
        inside.into_iter().map(|(_, v)| v.clone()).collect()
    } else {
        admitted
    }
}
