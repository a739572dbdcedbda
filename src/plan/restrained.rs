//! What the host's holds and failed marks keep where it is, and which of them plugins.yaml has
//! moved past.
//!
//! A hold or a failed mark stands until it is lifted by hand (`plugsync release`, `plugsync
//! retry`) or until plugins.yaml changes the entry of its plugin: a client records the entry's
//! fingerprint ([`PluginSpec::fingerprint`]) with it, and a plan whose entry differs lifts it
//! ([`Lift`]). One that stands keeps its plugin where it is ([`KeptBecause::Held`],
//! [`KeptBecause::Failed`]) — not retried, not undone — and so does every plugin whose move it
//! would break ([`keep_dependants`]); the rest of the plan goes on.

use std::collections::{BTreeMap, HashMap};

use plugsync_host::{Digest, Restraints};

use super::model::{KeptBecause, Lift};
use super::order::Placement;
use crate::spec::model::PluginSpec;

/// The restraints that stand, by plugin, and those plugins.yaml has moved past.
#[derive(Debug, Default)]
pub(super) struct Standing<'a> {
    /// Holds that stand, by plugin.
    pub holds: HashMap<&'a str, &'a plugsync_host::Because>,
    /// Failed marks that stand, by artifact.
    pub failed: HashMap<Digest, &'a plugsync_host::FailedMark>,
    /// The ones to lift, in the host's order (holds, then marks).
    pub lifts: Vec<Lift>,
}

impl<'a> Standing<'a> {
    /// Sorts the host's `restraints` against the entries of plugins.yaml (`named`). One set
    /// under an entry that has changed since (or is gone) is lifted; one set with no
    /// fingerprint (by hand, through the API) stands until lifted by hand.
    pub fn of(restraints: &'a Restraints, named: &[PluginSpec]) -> Standing<'a> {
        let fingerprints: HashMap<&str, String> = (named.iter())
            .map(|spec| (spec.id.as_str(), spec.fingerprint().to_string()))
            .collect();
        let moved_past = |plugin: &str, recorded: &Option<String>| match recorded {
            Some(recorded) => fingerprints.get(plugin) != Some(recorded),
            None => false,
        };
        let mut standing = Standing::default();
        for (plugin, because) in &restraints.holds {
            if moved_past(plugin, &because.entry_sha256) {
                standing.lifts.push(Lift::Hold {
                    plugin: plugin.clone(),
                    because: because.clone(),
                });
            } else {
                standing.holds.insert(plugin, because);
            }
        }
        for mark in &restraints.failed {
            if moved_past(&mark.plugin, &mark.because.entry_sha256) {
                standing.lifts.push(Lift::Failed {
                    plugin: mark.plugin.clone(),
                    version: mark.version.clone(),
                    sha256: mark.digest,
                    because: mark.because.clone(),
                });
            } else {
                standing.failed.insert(mark.digest, mark);
            }
        }
        standing
    }

    /// Why `plugin`, running `running` (its artifact, if loaded), stays where it is rather
    /// than move to `target`, if a restraint that stands says so.
    pub fn keeps(
        &self,
        plugin: &str,
        running: Option<&Digest>,
        target: &Digest,
        moves: bool,
    ) -> Option<KeptBecause> {
        if !moves {
            return None;
        }
        if running.is_some()
            && let Some(because) = self.holds.get(plugin)
        {
            return Some(KeptBecause::Held {
                because: (*because).clone(),
            });
        }
        let mark = self.failed.get(target).filter(|m| m.plugin == plugin)?;
        Some(KeptBecause::Failed {
            version: mark.version.clone(),
            because: mark.because.clone(),
        })
    }

    /// Whether `digest`, a version of `plugin`, is marked failed and the mark stands: not a
    /// version to step through.
    pub fn failed(&self, plugin: &str, digest: &Digest) -> bool {
        self.failed.get(digest).is_some_and(|m| m.plugin == plugin)
    }
}

/// A plugin as [`keep_dependants`] sees it: where it starts and where it would end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Move {
    /// What runs (`None`: absent).
    pub start: Option<Placement>,
    /// Where the plan would take it (`None`: absent, or removed).
    pub end: Option<Placement>,
}

impl Move {
    fn moves(&self) -> bool {
        self.start != self.end
    }
}

/// Adds to `kept` (plugins staying where they are, and why) every plugin whose move would
/// break a dependency with one that stays, until none would: a plugin whose new version needs
/// a version of a kept plugin that it does not run ([`KeptBecause::Needs`]), or that a kept
/// plugin needs as it runs now ([`KeptBecause::NeededBy`]). What is left can move together.
pub(super) fn keep_dependants(
    moves: &BTreeMap<String, Move>,
    kept: &mut BTreeMap<String, KeptBecause>,
) {
    loop {
        let mut added = Vec::new();
        for (plugin, movement) in moves {
            if kept.contains_key(plugin) || !movement.moves() {
                continue;
            }
            if let Some(because) = broken_by_kept(plugin, movement, moves, kept) {
                added.push((plugin.clone(), because));
            }
        }
        if added.is_empty() {
            return;
        }
        kept.extend(added);
    }
}

/// Why `plugin`'s move would break a dependency with a kept plugin, if it would.
fn broken_by_kept(
    plugin: &str,
    movement: &Move,
    moves: &BTreeMap<String, Move>,
    kept: &BTreeMap<String, KeptBecause>,
) -> Option<KeptBecause> {
    let stays = |id: &str| moves.get(id).and_then(|m| m.start.as_ref());
    if let Some(end) = &movement.end {
        for (dependency, requirement) in &end.dependencies {
            if kept.contains_key(dependency)
                && !stays(dependency).is_some_and(|at| requirement.matches(&at.version))
            {
                return Some(KeptBecause::Needs {
                    plugin: dependency.clone(),
                    requirement: requirement.to_string(),
                });
            }
        }
    }
    for dependant in kept.keys() {
        let Some(requirement) = stays(dependant).and_then(|at| at.dependencies.get(plugin)) else {
            continue;
        };
        if !(movement.end.as_ref()).is_some_and(|end| requirement.matches(&end.version)) {
            return Some(KeptBecause::NeededBy {
                plugin: dependant.clone(),
                requirement: requirement.to_string(),
            });
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use semver::{Version, VersionReq};

    use super::*;

    fn at(version: &str, needs: &[(&str, &str)]) -> Option<Placement> {
        Some(Placement {
            version: Version::parse(version).unwrap(),
            dependencies: (needs.iter())
                .map(|(id, req)| (id.to_string(), VersionReq::parse(req).unwrap()))
                .collect(),
        })
    }

    fn held() -> KeptBecause {
        KeptBecause::Held {
            because: plugsync_host::Because {
                reason: "manual rollback".into(),
                by: "alice".into(),
                at: plugsync_plugin::HostTime(0),
                entry_sha256: None,
            },
        }
    }

    /// (case, moves, kept at first, kept at the end: plugin → kind and the plugin it names)
    #[test]
    fn a_kept_plugin_keeps_exactly_the_moves_that_would_break_a_dependency_with_it() {
        type Case = (
            &'static str,
            Vec<(&'static str, Option<Placement>, Option<Placement>)>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "a dependant whose new version needs the kept one's new version stays",
                vec![
                    ("risk", at("1.0.0", &[]), at("2.0.0", &[])),
                    ("ma", at("1.0.0", &[]), at("2.0.0", &[("risk", ">=2")])),
                    ("other", at("1.0.0", &[]), at("1.1.0", &[])),
                ],
                vec!["ma needs risk >=2", "risk"],
            ),
            (
                "a dependant whose new version is content with what the kept one runs moves",
                vec![
                    ("risk", at("1.0.0", &[]), at("2.0.0", &[])),
                    ("ma", at("1.0.0", &[]), at("2.0.0", &[("risk", ">=1")])),
                ],
                vec!["risk"],
            ),
            (
                "a dependency the kept one needs as it runs stays, and so does its dependant",
                vec![
                    ("ma", at("1.0.0", &[("risk", "<2")]), at("2.0.0", &[])),
                    ("risk", at("1.0.0", &[]), at("2.0.0", &[])),
                    ("feed", at("1.0.0", &[]), at("2.0.0", &[("risk", ">=2")])),
                ],
                vec!["feed needs risk >=2", "ma", "risk needed by ma <2"],
            ),
            (
                "a removal the kept one needs does not happen",
                vec![
                    ("ma", at("1.0.0", &[("risk", "^1")]), at("2.0.0", &[])),
                    ("risk", at("1.0.0", &[]), None),
                ],
                vec!["ma", "risk needed by ma ^1"],
            ),
            (
                "an install needing the kept one's new version waits",
                vec![
                    ("risk", at("1.0.0", &[]), at("2.0.0", &[])),
                    ("ma", None, at("1.0.0", &[("risk", "^2")])),
                ],
                vec!["ma needs risk ^2", "risk"],
            ),
            (
                "a plugin that does not move is never kept",
                vec![
                    ("risk", at("1.0.0", &[]), at("2.0.0", &[])),
                    (
                        "ma",
                        at("1.0.0", &[("risk", ">=2")]),
                        at("1.0.0", &[("risk", ">=2")]),
                    ),
                ],
                vec!["risk"],
            ),
        ];
        for (case, moves, expected) in cases {
            let first = moves[0].0.to_owned();
            let moves: BTreeMap<String, Move> = (moves.into_iter())
                .map(|(id, start, end)| (id.to_owned(), Move { start, end }))
                .collect();
            let mut kept = BTreeMap::from([(first, held())]);
            keep_dependants(&moves, &mut kept);
            let got: Vec<String> = (kept.iter())
                .map(|(plugin, because)| match because {
                    KeptBecause::Needs {
                        plugin: other,
                        requirement,
                    } => format!("{plugin} needs {other} {requirement}"),
                    KeptBecause::NeededBy {
                        plugin: other,
                        requirement,
                    } => format!("{plugin} needed by {other} {requirement}"),
                    _ => plugin.clone(),
                })
                .collect();
            assert_eq!(got, expected, "{case}");
        }
    }
}
