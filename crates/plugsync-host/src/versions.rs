//! When a semver requirement admits a version: the one rule that resolution (which version to
//! run) and the host (which migration or dependency a version declares) both apply, so that a
//! step a client planned is never refused by the host over a pre-release.

use std::cmp::Ordering;

use semver::{Comparator, Op, Prerelease, Version, VersionReq};

/// Whether `req` admits `version`.
///
/// With `prereleases` false, this is semver's own rule ([`VersionReq::matches`]): a
/// pre-release version (`2.1.0-beta.1`) is admitted only by a requirement that names a
/// pre-release of the same `MAJOR.MINOR.PATCH`, so a `stable` channel never drifts onto one.
///
/// With `prereleases` true (a channel below `stable`, or a version already running), each
/// comparator is read by version order, pre-releases included, so `>=1.0, <3` admits
/// `2.1.0-beta.1`; but an upper bound `<X.Y.Z` excludes the pre-releases of `X.Y.Z` itself
/// (it reads as `<X.Y.Z-0`: `<3` or `<3.0.0` does not admit `3.0.0-beta.1`, which belongs to
/// the release it excludes), unless the requirement names a pre-release of `X.Y.Z`
/// (`>=3.0.0-alpha, <3.0.0` admits `3.0.0-beta.1`, as semver does). For a version that is not
/// a pre-release both readings agree, and every version semver's rule admits is admitted here
/// too: the host, which uses this reading, accepts whatever a client planned with either.
///
/// Build metadata (`+build.5`) is ignored, as semver ignores it.
///
/// ```
/// use plugsync_host::version_matches;
/// use semver::{Version, VersionReq};
///
/// let req = VersionReq::parse(">=1.0, <3").unwrap();
/// let beta = Version::parse("2.1.0-beta.1").unwrap();
/// assert!(!version_matches(&req, &beta, false)); // stable: semver's rule
/// assert!(version_matches(&req, &beta, true)); // beta, alpha, dev: by version order
/// let three = Version::parse("3.0.0-beta.1").unwrap();
/// assert!(!version_matches(&req, &three, true)); // `<3` is `<3.0.0-0`
/// ```
pub fn version_matches(req: &VersionReq, version: &Version, prereleases: bool) -> bool {
    if !prereleases || version.pre.is_empty() {
        // For a release, reading by order is semver's rule (the tests check it on a grid).
        return req.matches(version);
    }
    req.comparators.iter().all(|comparator| {
        let names_own_prerelease = req
            .comparators
            .iter()
            .any(|other| !other.pre.is_empty() && triple_of(other) == triple_of(comparator));
        admits_by_order(comparator, version, names_own_prerelease)
    })
}

/// `MAJOR.MINOR.PATCH`, compared as numbers.
type Triple = (u64, u64, u64);

fn triple(version: &Version) -> Triple {
    (version.major, version.minor, version.patch)
}

/// A comparator's triple when it gives all three numbers.
fn triple_of(comparator: &Comparator) -> Option<Triple> {
    Some((comparator.major, comparator.minor?, comparator.patch?))
}

/// Whether `comparator` admits the pre-release `version` by version order. A comparator
/// `<X.Y.Z` (no pre-release of its own) stops below `X.Y.Z`'s pre-releases unless
/// `own_prereleases` (the requirement names one of them).
fn admits_by_order(comparator: &Comparator, version: &Version, own_prereleases: bool) -> bool {
    let low = Lower {
        triple: (
            comparator.major,
            comparator.minor.unwrap_or(0),
            comparator.patch.unwrap_or(0),
        ),
        pre: &comparator.pre,
    };
    // The comparator's own version against `version`.
    let order = low.cmp_version(version);
    let below = |end: Triple| triple(version) < end;
    // The first triple past a partial comparator (`1.2` → `1.3.0`, `1` → `2.0.0`).
    let past_partial = match (comparator.minor, comparator.patch) {
        (None, _) => (comparator.major + 1, 0, 0),
        (Some(minor), None) => (comparator.major, minor + 1, 0),
        (Some(minor), Some(patch)) => (comparator.major, minor, patch + 1),
    };
    let full = comparator.patch.is_some();
    match comparator.op {
        Op::Exact | Op::Wildcard if full => order == Ordering::Equal,
        Op::Exact | Op::Wildcard => order != Ordering::Greater && below(past_partial),
        Op::Greater if full => order == Ordering::Less,
        Op::Greater => !below(past_partial),
        Op::GreaterEq => order != Ordering::Greater,
        Op::Less if full && comparator.pre.is_empty() && !own_prereleases => below(low.triple),
        Op::Less if full => order == Ordering::Greater,
        Op::Less => below(low.triple),
        Op::LessEq if full => order != Ordering::Less,
        Op::LessEq => below(past_partial),
        Op::Tilde => {
            let end = match comparator.minor {
                None => (comparator.major + 1, 0, 0),
                Some(minor) => (comparator.major, minor + 1, 0),
            };
            order != Ordering::Greater && below(end)
        }
        Op::Caret => {
            let end = match (comparator.major, comparator.minor, comparator.patch) {
                (0, Some(0), Some(patch)) => (0, 0, patch + 1),
                (0, Some(minor), _) => (0, minor + 1, 0),
                (major, _, _) => (major + 1, 0, 0),
            };
            order != Ordering::Greater && below(end)
        }
        // `Op` is non-exhaustive: an operator semver adds later is read its own way.
        _ => comparator.matches(version),
    }
}

/// A comparator's own version (`>=1.2.3-beta` → `1.2.3-beta`; `>=1.2` → `1.2.0`).
struct Lower<'a> {
    triple: Triple,
    pre: &'a Prerelease,
}

impl Lower<'_> {
    /// This version against `version`, by semver's order without build metadata (an empty
    /// pre-release sorts after every non-empty one).
    fn cmp_version(&self, version: &Version) -> Ordering {
        self.triple
            .cmp(&triple(version))
            .then_with(|| self.pre.cmp(&version.pre))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQUIREMENTS: &[&str] = &[
        "*",
        "1",
        "1.2",
        "1.2.3",
        "=1",
        "=1.2",
        "=1.2.3",
        "=1.2.3-beta.2",
        ">1",
        ">1.2",
        ">1.2.3",
        ">1.2.3-beta",
        ">=1",
        ">=1.2",
        ">=1.2.3",
        ">=1.2.3-beta.2",
        "<1",
        "<1.2",
        "<1.2.3",
        "<1.2.3-beta.2",
        "<=1",
        "<=1.2",
        "<=1.2.3",
        "<=1.2.3-beta.2",
        "~1",
        "~1.2",
        "~1.2.3",
        "~1.2.3-beta.2",
        "^1",
        "^1.2",
        "^1.2.3",
        "^1.2.3-beta.2",
        "^0",
        "^0.0",
        "^0.2",
        "^0.0.3",
        "^0.2.3",
        "^0.0.3-beta.2",
        "1.*",
        "1.2.*",
        ">=1.0, <3",
        ">=1.2.3-alpha, <1.2.3",
        ">=0.9, <2.0.0",
        "<2",
        "<2.0",
        "<2.0.0",
        ">1.2.3, <=2",
    ];

    const VERSIONS: &[&str] = &[
        "0.0.0", "0.0.2", "0.0.3", "0.0.4", "0.1.9", "0.2.0", "0.2.3", "0.2.4", "0.3.0", "0.9.0",
        "1.0.0", "1.1.9", "1.2.0", "1.2.2", "1.2.3", "1.2.4", "1.3.0", "1.9.9", "2.0.0", "2.0.1",
        "2.5.0", "3.0.0",
    ];

    const PRERELEASES: &[&str] = &["alpha", "beta.1", "beta.2", "beta.3", "rc.1", "0"];

    fn req(text: &str) -> VersionReq {
        VersionReq::parse(text).unwrap()
    }

    fn version(text: &str) -> Version {
        Version::parse(text).unwrap()
    }

    /// Every version of the grid, and each of its pre-releases.
    fn grid() -> Vec<Version> {
        let mut all = Vec::new();
        for text in VERSIONS {
            all.push(version(text));
            for pre in PRERELEASES {
                all.push(version(&format!("{text}-{pre}")));
            }
            all.push(version(&format!("{text}+build.7")));
        }
        all
    }

    #[test]
    fn on_releases_both_readings_are_semvers_own() {
        for text in REQUIREMENTS {
            let req = req(text);
            for version in grid().iter().filter(|v| v.pre.is_empty()) {
                let semver = req.matches(version);
                assert_eq!(
                    version_matches(&req, version, false),
                    semver,
                    "{text} {version}"
                );
                assert_eq!(
                    version_matches(&req, version, true),
                    semver,
                    "{text} {version}"
                );
            }
        }
    }

    #[test]
    fn without_prereleases_the_rule_is_semvers() {
        for text in REQUIREMENTS {
            let req = req(text);
            for version in grid() {
                assert_eq!(
                    version_matches(&req, &version, false),
                    req.matches(&version),
                    "{text} {version}"
                );
            }
        }
    }

    /// The host reads with pre-releases: it must accept whatever a client resolved with
    /// semver's rule, so this reading admits a superset.
    #[test]
    fn reading_by_order_admits_everything_semver_admits() {
        for text in REQUIREMENTS {
            let req = req(text);
            for version in grid() {
                if req.matches(&version) {
                    assert!(version_matches(&req, &version, true), "{text} {version}");
                }
            }
        }
    }

    /// By order, a pre-release sits between the releases around it; an upper bound excludes
    /// the pre-releases of the release it names; a lower bound on a release excludes that
    /// release's pre-releases (they come before it).
    #[test]
    fn prereleases_by_version_order() {
        let cases: &[(&str, &str, bool)] = &[
            (">=1.0, <3", "2.1.0-beta.1", true),
            (">=1.0, <3", "3.0.0-beta.1", false),
            (">=1.0, <3.0.0", "3.0.0-beta.1", false),
            (">=1.0, <3.0.0", "3.0.0-0", false),
            (">=1.0, <3.0.0", "2.9.9-rc.1", true),
            (">=1.0, <3.0", "3.0.0-beta.1", false),
            (">=1.0", "1.0.0-rc.1", false),
            (">=1.0.0-rc.1", "1.0.0-rc.2", true),
            ("^2", "2.0.0-beta.1", false),
            ("^2", "2.3.0-beta.1", true),
            ("^2", "3.0.0-alpha", false),
            ("~1.2", "1.2.7-beta.1", true),
            ("~1.2", "1.3.0-beta.1", false),
            ("^0.0.3", "0.0.3-beta.1", false),
            ("^0.0.3-alpha", "0.0.3-beta.1", true),
            ("^0.0.3-alpha", "0.0.4-alpha", false),
            (">1.2", "1.3.0-alpha", true),
            (">1.2", "1.2.9-alpha", false),
            (">1.2.3", "1.2.4-alpha", true),
            (">1.2.3", "1.2.3-rc.1", false),
            ("<=1.2.3", "1.2.3-rc.1", true),
            ("<=1.2", "1.2.9-rc.1", true),
            ("<=1.2", "1.3.0-rc.1", false),
            ("=1.2", "1.2.5-beta.1", true),
            ("=1.2", "1.2.0-beta.1", false),
            ("=1.2.3-beta.1", "1.2.3-beta.1", true),
            ("=1.2.3-beta.1", "1.2.3-beta.2", false),
            ("1.*", "1.4.0-dev.3", true),
            ("*", "0.1.0-dev", true),
            (">=3.0.0-alpha, <3.0.0", "3.0.0-beta.1", true),
            (">=2.0.0, <3.0.0-beta.2", "3.0.0-beta.1", true),
            (">=2.0.0, <3.0.0-beta.2", "3.0.0-beta.2", false),
            ("<2.0.0", "2.0.0-beta.1+build.9", false),
        ];
        for &(text, v, admitted) in cases {
            assert_eq!(
                version_matches(&req(text), &version(v), true),
                admitted,
                "{text} {v} by order"
            );
        }
    }
}
