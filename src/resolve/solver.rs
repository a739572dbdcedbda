//! The plugins' requirements on each other, solved jointly by PubGrub.
//!
//! The problem as PubGrub sees it: a root package (plugins.yaml) at one version depends on
//! every plugin it names, each restricted to the versions plugins.yaml admits; each version of
//! a plugin depends on what its index entry declares. A version is known by its place among
//! its plugin's published versions (lowest first), so a requirement is a set of places: the
//! places whose versions [`version_matches`] admits, computed once per requirement met.

use std::cmp::Reverse;
use std::fmt;
use std::ops::Bound;

use plugsync_host::version_matches;
use pubgrub::{
    Dependencies, DependencyConstraints, DependencyProvider, PackageResolutionStatistics,
    PubGrubError, Ranges,
};
use semver::VersionReq;

use super::candidates::{Universe, bad_entry, ranges_of};
use super::error::ResolveError;
use super::explain;

/// A package of the problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Node {
    /// plugins.yaml, which depends on every plugin it names.
    Root,
    /// A plugin, by its place in plugins.yaml.
    Plugin(u32),
}

impl fmt::Display for Node {
    // Only PubGrub's own logging shows this; the errors name plugins by id (`explain`).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Root => f.write_str("plugins.yaml"),
            Node::Plugin(place) => write!(f, "plugin #{place}"),
        }
    }
}

/// Why a version cannot be used, outside of its requirements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unusable {
    /// It needs a plugin plugins.yaml does not name (by id).
    NeedsUnnamed(String),
    /// It needs another version of itself.
    NeedsOtherSelf(String),
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unusable::NeedsUnnamed(id) => {
                write!(f, "needs `{id}`, which plugins.yaml does not name")
            }
            Unusable::NeedsOtherSelf(requirement) => {
                write!(f, "needs itself at {requirement}")
            }
        }
    }
}

/// What PubGrub asks of the index, answered from the [`Universe`].
struct Provider<'u, 'a> {
    universe: &'u Universe<'a>,
}

/// The chosen place of each plugin, in plugins.yaml's order.
pub(crate) fn solve(universe: &Universe<'_>) -> Result<Vec<u32>, ResolveError> {
    let provider = Provider { universe };
    let solution = match pubgrub::resolve(&provider, Node::Root, 0u32) {
        Ok(solution) => solution,
        Err(PubGrubError::NoSolution(tree)) => {
            return Err(ResolveError::Conflict(Box::new(explain::conflict(
                universe, &tree,
            ))));
        }
        Err(PubGrubError::ErrorRetrievingDependencies { source, .. })
        | Err(PubGrubError::ErrorChoosingVersion { source, .. })
        | Err(PubGrubError::ErrorInShouldCancel(source)) => return Err(source),
    };
    // The root depends on every plugin, so a solution names each one.
    let mut chosen = vec![0; universe.plugins.len()];
    for (node, place) in solution {
        if let Node::Plugin(plugin) = node {
            chosen[plugin as usize] = place;
        }
    }
    Ok(chosen)
}

impl DependencyProvider for Provider<'_, '_> {
    type P = Node;
    type V = u32;
    type VS = Ranges<u32>;
    type M = Unusable;
    type Err = ResolveError;
    /// Conflicts met first (PubGrub's advice: a package that conflicted is decided early),
    /// then the fewest versions left.
    type Priority = (u32, Reverse<u64>);

    fn prioritize(
        &self,
        node: &Node,
        range: &Ranges<u32>,
        statistics: &PackageResolutionStatistics,
    ) -> Self::Priority {
        match node {
            Node::Root => (u32::MAX, Reverse(0)),
            Node::Plugin(plugin) => {
                let count = self.count(*plugin, range);
                if count == 0 {
                    // Nothing to choose: deciding it first finds the conflict soonest.
                    return (u32::MAX, Reverse(0));
                }
                (statistics.conflict_count(), Reverse(count))
            }
        }
    }

    fn choose_version(
        &self,
        node: &Node,
        range: &Ranges<u32>,
    ) -> Result<Option<u32>, ResolveError> {
        let Node::Plugin(plugin) = *node else {
            return Ok(Some(0));
        };
        let plugin = &self.universe.plugins[plugin as usize];
        // The lock's version while it still fits (as cargo keeps a locked version), else the
        // highest. `range` lies within what plugins.yaml admits, since the root requires that
        // of every plugin; checking again costs one lookup.
        if let Some(preferred) = plugin.preferred
            && range.contains(&preferred)
            && plugin.eligible.contains(&preferred)
        {
            return Ok(Some(preferred));
        }
        let len = plugin.candidates.len() as u64;
        let runs: Vec<(u32, u32)> = places(range, len).collect();
        for &(low, high) in runs.iter().rev() {
            if let Some(place) = (low..=high).rev().find(|p| plugin.eligible.contains(p)) {
                return Ok(Some(place));
            }
        }
        Ok(None)
    }

    fn get_dependencies(
        &self,
        node: &Node,
        place: &u32,
    ) -> Result<Dependencies<Node, Ranges<u32>, Unusable>, ResolveError> {
        let universe = self.universe;
        let Node::Plugin(plugin) = *node else {
            let all = (0u32..).zip(&universe.plugins);
            let constraints = all.map(|(p, plugin)| (Node::Plugin(p), plugin.eligible.clone()));
            return Ok(Dependencies::Available(constraints.collect()));
        };
        let dependant = &universe.plugins[plugin as usize];
        let candidate = &dependant.candidates[*place as usize];
        let id = dependant.spec.id.as_str();
        let mut constraints = DependencyConstraints::default();
        for (dependency, text) in &candidate.entry.dependencies {
            let requirement = VersionReq::parse(text).map_err(|e| {
                let value = format!("{dependency}: {text}");
                bad_entry(id, candidate.entry, "dependencies", &value, e)
            })?;
            // Read as the host reads a declared dependency: by version order, pre-releases
            // included, so the host never refuses the set resolved here.
            let admits = |version| version_matches(&requirement, version, true);
            if dependency == id {
                // A version that needs itself is satisfied by itself, or never.
                if admits(&candidate.version) {
                    continue;
                }
                return Ok(Dependencies::Unavailable(Unusable::NeedsOtherSelf(
                    text.clone(),
                )));
            }
            let Some(&target) = universe.by_id.get(dependency.as_str()) else {
                return Ok(Dependencies::Unavailable(Unusable::NeedsUnnamed(
                    dependency.clone(),
                )));
            };
            let versions = &universe.plugins[target as usize].candidates;
            let matching = (0u32..).zip(versions).filter(|(_, c)| admits(&c.version));
            constraints.insert(Node::Plugin(target), ranges_of(matching.map(|(p, _)| p)));
        }
        Ok(Dependencies::Available(constraints))
    }
}

impl Provider<'_, '_> {
    /// How many versions of `plugin` `range` holds.
    fn count(&self, plugin: u32, range: &Ranges<u32>) -> u64 {
        let len = self.universe.plugins[plugin as usize].candidates.len() as u64;
        places(range, len)
            .map(|(low, high)| u64::from(high - low) + 1)
            .sum()
    }
}

/// The places `range` holds among `len` versions, as inclusive runs, lowest first. PubGrub
/// treats places as a continuum, so a run may hold no whole place (`(3, 4)`): it is left out.
fn places(range: &Ranges<u32>, len: u64) -> impl Iterator<Item = (u32, u32)> + '_ {
    let last = u32::try_from(len).ok().and_then(|len| len.checked_sub(1));
    range.iter().filter_map(move |(low, high)| {
        let last = last?;
        let low = match low {
            Bound::Included(p) => *p,
            Bound::Excluded(p) => p.checked_add(1)?,
            Bound::Unbounded => 0,
        };
        let high = match high {
            Bound::Included(p) => (*p).min(last),
            Bound::Excluded(p) => p.checked_sub(1)?.min(last),
            Bound::Unbounded => last,
        };
        (low <= high).then_some((low, high))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Places are whole numbers to us, a continuum to PubGrub: a range between two places
    /// holds none, and a range past the last version holds only those up to it.
    #[test]
    fn a_range_holds_the_whole_places_inside_it() {
        let runs = |range: Ranges<u32>| places(&range, 10).collect::<Vec<_>>();
        assert_eq!(runs(Ranges::from_range_bounds(2u32..5)), [(2, 4)]);
        assert_eq!(runs(Ranges::singleton(3u32).complement()), [(0, 2), (4, 9)]);
        let between =
            Ranges::strictly_higher_than(3u32).intersection(&Ranges::strictly_lower_than(4u32));
        assert!(!between.is_empty());
        assert_eq!(runs(between), []);
        assert_eq!(runs(Ranges::higher_than(7u32)), [(7, 9)]);
        assert_eq!(runs(Ranges::higher_than(12u32)), []);
        assert_eq!(places(&Ranges::full(), 0).count(), 0);
    }

    #[test]
    fn consecutive_places_make_one_run() {
        let ranges = ranges_of([0, 1, 2, 5, 7, 8]);
        let expected = Ranges::from_range_bounds(0u32..=2)
            .union(&Ranges::singleton(5u32))
            .union(&Ranges::from_range_bounds(7u32..=8));
        assert_eq!(ranges, expected);
        assert!(ranges_of([]).is_empty());
    }
}
