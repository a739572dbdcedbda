//! Each plugin's candidates: every version its index publishes, and the ones plugins.yaml (and
//! the target host) admit.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use plugsync_host::version_matches;
use pubgrub::Ranges;
use semver::{Version, VersionReq};

use super::error::{DigestDiffers, ResolveError};
use super::lock::{LockedPlugin, effective_channel};
use super::{Asked, words};
use crate::registry::{IndexEntry, IndexFile};
use crate::spec::model::{Channel, HostTarget, PluginSet, PluginSpec};

/// Every plugin of the set with its candidates, in plugins.yaml's order.
pub(crate) struct Universe<'a> {
    /// The plugins, in plugins.yaml's order; a plugin's place is its number in the solver.
    pub plugins: Vec<Plugin<'a>>,
    /// Each plugin's place, by id.
    pub by_id: HashMap<&'a str, u32>,
}

/// One plugin: what plugins.yaml asks, and the versions that could answer.
pub(crate) struct Plugin<'a> {
    /// Its spec.
    pub spec: &'a PluginSpec,
    /// What plugins.yaml asks of it.
    pub asked: Asked,
    /// Every version its index publishes, lowest first; the solver knows a version by its
    /// place here.
    pub candidates: Vec<Candidate<'a>>,
    /// The places of the candidates plugins.yaml admits (pin or channel, constraint, host,
    /// not yanked unless locked).
    pub eligible: Ranges<u32>,
    /// The place of the version its lock names, when the lock still holds for it.
    pub preferred: Option<u32>,
}

/// One published version.
pub(crate) struct Candidate<'a> {
    /// Its version.
    pub version: Version,
    /// Its index entry.
    pub entry: &'a IndexEntry,
}

impl<'a> Universe<'a> {
    /// The candidates of every plugin of `set` in `index`; `locked` holds the lock's entries
    /// that still bind (those an update does not free).
    pub fn build(
        set: &'a PluginSet,
        index: &'a BTreeMap<String, IndexFile>,
        locked: &BTreeMap<&str, &LockedPlugin>,
    ) -> Result<Universe<'a>, ResolveError> {
        let host = match &set.spec.host {
            Some(target) => Some(Host::of(target)?),
            None => None,
        };
        let mut frameworks = HashMap::new();
        let mut plugins = Vec::with_capacity(set.spec.plugins.len());
        for spec in &set.spec.plugins {
            let file = index
                .get(&spec.id)
                .ok_or_else(|| ResolveError::NotPublished {
                    plugin: spec.id.clone(),
                })?;
            let candidates = candidates(&spec.id, file)?;
            let lock = locked.get(spec.id.as_str()).copied();
            let preferred = match lock {
                Some(lock) => locked_place(&spec.id, &candidates, lock)?,
                None => None,
            };
            let mut plugin = Plugin {
                spec,
                asked: match &spec.version {
                    Some(pin) => Asked::Pinned(pin.clone()),
                    None => Asked::Channel {
                        channel: effective_channel(set, spec),
                        constraint: spec.constraint.clone(),
                    },
                },
                candidates,
                eligible: Ranges::empty(),
                preferred,
            };
            let mut judge = Judge {
                plugin: &plugin,
                host: host.as_ref(),
                frameworks: &mut frameworks,
            };
            let eligible = match &plugin.asked {
                Asked::Pinned(pin) => judge.pin(pin)?,
                Asked::Channel {
                    channel,
                    constraint,
                } => judge.channel(*channel, constraint.as_ref())?,
            };
            plugin.eligible = eligible;
            plugins.push(plugin);
        }
        let by_id = (0u32..)
            .zip(&plugins)
            .map(|(place, plugin)| (plugin.spec.id.as_str(), place))
            .collect();
        Ok(Universe { plugins, by_id })
    }
}

/// The versions of `file`, lowest first.
fn candidates<'a>(plugin: &str, file: &'a IndexFile) -> Result<Vec<Candidate<'a>>, ResolveError> {
    let mut candidates = file
        .versions
        .iter()
        .map(|entry| {
            let version = Version::parse(&entry.version)
                .map_err(|e| bad_entry(plugin, entry, "version", &entry.version, e))?;
            Ok(Candidate { version, entry })
        })
        .collect::<Result<Vec<_>, ResolveError>>()?;
    // The index is written lowest first; sorting again costs nothing then, and a hand-edited
    // index still resolves by version order.
    candidates.sort_by(|a, b| a.version.cmp(&b.version));
    Ok(candidates)
}

/// The place of the locked version in `candidates`, when the index still has it with the
/// artifact the lock recorded; a version gone from the index binds no more (the set is being
/// resolved again), but another artifact under a locked version is refused.
fn locked_place(
    plugin: &str,
    candidates: &[Candidate<'_>],
    lock: &LockedPlugin,
) -> Result<Option<u32>, ResolveError> {
    let Some(place) = place_of(candidates, &lock.version) else {
        return Ok(None);
    };
    let entry = candidates[place as usize].entry;
    check_locked_digest(plugin, entry, lock)?;
    Ok(Some(place))
}

/// The place of `version` among `candidates` (sorted).
pub(crate) fn place_of(candidates: &[Candidate<'_>], version: &Version) -> Option<u32> {
    let place = candidates
        .binary_search_by(|c| c.version.cmp(version))
        .ok()?;
    u32::try_from(place).ok()
}

/// Refuses an index entry whose artifact differs from the one the lock recorded.
pub(crate) fn check_locked_digest(
    plugin: &str,
    entry: &IndexEntry,
    lock: &LockedPlugin,
) -> Result<(), ResolveError> {
    if entry.sha256 == lock.sha256 {
        return Ok(());
    }
    Err(ResolveError::LockedDigestDiffers(Box::new(DigestDiffers {
        plugin: plugin.to_owned(),
        version: lock.version.clone(),
        file: entry.file.clone(),
        locked: lock.sha256,
        index: entry.sha256,
    })))
}

pub(crate) fn bad_entry(
    plugin: &str,
    entry: &IndexEntry,
    field: &'static str,
    value: &str,
    reason: impl ToString,
) -> ResolveError {
    ResolveError::BadIndexEntry {
        plugin: plugin.to_owned(),
        version: entry.version.clone(),
        field,
        value: value.to_owned(),
        reason: reason.to_string(),
    }
}

/// The places of `places` (ascending) as ranges, a run of consecutive places as one closed
/// range (`[3, 5]`, not `[3, 6)`: PubGrub treats places as a continuum, where `[3, 6)` would
/// hold more than the places 3 to 5 once intersected).
pub(crate) fn ranges_of(places: impl IntoIterator<Item = u32>) -> Ranges<u32> {
    let mut ranges = Ranges::empty();
    let mut run: Option<(u32, u32)> = None;
    for place in places {
        run = match run {
            Some((first, last)) if last.checked_add(1) == Some(place) => Some((first, place)),
            Some((first, last)) => {
                ranges = ranges.union(&Ranges::from_range_bounds(first..=last));
                Some((place, place))
            }
            None => Some((place, place)),
        };
    }
    if let Some((first, last)) = run {
        ranges = ranges.union(&Ranges::from_range_bounds(first..=last));
    }
    ranges
}

/// The target host, read once.
struct Host<'a> {
    /// Its ABI, as numbers and as plugins.yaml writes it.
    abi: Option<((u32, u32), &'a str)>,
    framework: Option<&'a Version>,
}

impl<'a> Host<'a> {
    fn of(target: &'a HostTarget) -> Result<Host<'a>, ResolveError> {
        let abi = match &target.abi {
            // The decoder checks `MAJOR.MINOR`; a number past u32 is still refused here.
            Some(text) => {
                let abi = parse_abi(text).ok_or_else(|| ResolveError::BadHostTarget {
                    field: "abi",
                    value: text.clone(),
                })?;
                Some((abi, text.as_str()))
            }
            None => None,
        };
        Ok(Host {
            abi,
            framework: target.framework.as_ref(),
        })
    }
}

fn parse_abi(text: &str) -> Option<(u32, u32)> {
    let (major, minor) = text.split_once('.')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// Decides which of a plugin's candidates plugins.yaml admits.
struct Judge<'p, 'a, 'c> {
    plugin: &'p Plugin<'a>,
    host: Option<&'p Host<'a>>,
    /// Framework requirements parsed so far (most versions of a registry share a few).
    frameworks: &'c mut HashMap<&'a str, Result<VersionReq, String>>,
}

/// Why a candidate was passed over, from the first reason checked to the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Skip {
    LessStable,
    Yanked,
    OutsideConstraint,
    OtherHost,
}

impl<'a> Judge<'_, 'a, '_> {
    fn id(&self) -> &str {
        &self.plugin.spec.id
    }

    /// A pin admits its version alone: published, not yanked unless locked, built for the host.
    fn pin(&mut self, pin: &Version) -> Result<Ranges<u32>, ResolveError> {
        let candidates = &self.plugin.candidates;
        let Some(place) = place_of(candidates, pin) else {
            let published: Vec<&Version> = candidates.iter().map(|c| &c.version).collect();
            return Err(ResolveError::PinNotPublished {
                plugin: self.id().to_owned(),
                version: pin.clone(),
                published: words::versions_or_none(&published),
            });
        };
        let entry = candidates[place as usize].entry;
        if entry.yanked && self.plugin.preferred != Some(place) {
            return Err(ResolveError::PinYanked {
                plugin: self.id().to_owned(),
                version: pin.clone(),
            });
        }
        if let Some(reason) = self.host_refuses(entry)? {
            return Err(ResolveError::PinIncompatible {
                plugin: self.id().to_owned(),
                version: pin.clone(),
                reason,
            });
        }
        Ok(Ranges::singleton(place))
    }

    /// A channel admits the versions on it or a more stable one that meet the constraint, are
    /// not yanked (unless locked) and run in the host.
    fn channel(
        &mut self,
        channel: Channel,
        constraint: Option<&VersionReq>,
    ) -> Result<Ranges<u32>, ResolveError> {
        let prereleases = channel > Channel::Stable;
        let mut admitted = Vec::new();
        // Per reason, how many were skipped and the newest of them (with the host's word).
        let mut skipped: BTreeMap<Skip, (usize, &Version, Option<String>)> = BTreeMap::new();
        let plugin = self.plugin;
        for (place, candidate) in (0u32..).zip(&plugin.candidates) {
            let entry = candidate.entry;
            let skip = if entry.channel > channel {
                Some((Skip::LessStable, None))
            } else if entry.yanked && plugin.preferred != Some(place) {
                Some((Skip::Yanked, None))
            } else if constraint
                .is_some_and(|c| !version_matches(c, &candidate.version, prereleases))
            {
                Some((Skip::OutsideConstraint, None))
            } else {
                self.host_refuses(entry)?
                    .map(|why| (Skip::OtherHost, Some(why)))
            };
            match skip {
                None => admitted.push(place),
                Some((reason, why)) => {
                    let slot = skipped
                        .entry(reason)
                        .or_insert((0, &candidate.version, None));
                    slot.0 += 1;
                    slot.1 = &candidate.version;
                    slot.2 = why;
                }
            }
        }
        if admitted.is_empty() {
            return Err(self.nothing_fits(channel, constraint, &skipped));
        }
        Ok(ranges_of(admitted))
    }

    fn nothing_fits(
        &self,
        channel: Channel,
        constraint: Option<&VersionReq>,
        skipped: &BTreeMap<Skip, (usize, &Version, Option<String>)>,
    ) -> ResolveError {
        let mut text = String::new();
        let total = self.plugin.candidates.len();
        let _ = write!(text, "of its {total} published version{}", plural(total));
        for (reason, (count, newest, why)) in skipped {
            let what = match reason {
                Skip::LessStable => "on a less stable channel",
                Skip::Yanked => "yanked",
                Skip::OutsideConstraint => "outside the constraint",
                Skip::OtherHost => "built for another host",
            };
            let _ = match count {
                1 => write!(text, ", 1 is {what} ({newest}"),
                _ => write!(text, ", {count} are {what} (the newest {newest}"),
            };
            if let Some(why) = why {
                let _ = write!(text, ": {why}");
            }
            text.push(')');
        }
        let fix = match skipped.keys().next_back() {
            Some(Skip::OtherHost) => {
                "publish a version built for the target host, or correct `spec.host`"
            }
            Some(Skip::OutsideConstraint) => "widen the constraint, or publish a version inside it",
            Some(Skip::Yanked) => "publish a fixed version, or pin one and keep it in plugins.lock",
            _ => {
                "follow a less stable channel, or promote a version to this one (`plugsync promote`)"
            }
        };
        ResolveError::NothingFits {
            plugin: self.id().to_owned(),
            asked: Asked::Channel {
                channel,
                constraint: constraint.cloned(),
            }
            .to_string(),
            skipped: text,
            fix,
        }
    }

    /// Why the target host would refuse `entry`, if it would: an ABI of another major or a
    /// newer minor, or a framework requirement the host's framework does not meet (as the
    /// host's own `check_metadata` reads it).
    fn host_refuses(&mut self, entry: &'a IndexEntry) -> Result<Option<String>, ResolveError> {
        let Some(host) = self.host else {
            return Ok(None);
        };
        let id = &self.plugin.spec.id;
        if let Some(((major, minor), text)) = host.abi {
            let abi = parse_abi(&entry.abi)
                .ok_or_else(|| bad_entry(id, entry, "abi", &entry.abi, "expected `MAJOR.MINOR`"))?;
            // The host loads its own major only, and a minor up to its own: a plugin built for
            // a newer minor calls entries this host lacks.
            if abi.0 != major || abi.1 > minor {
                return Ok(Some(format!(
                    "built for ABI {}, the host speaks {text}",
                    entry.abi
                )));
            }
        }
        if let Some(framework) = host.framework {
            let requirement = self
                .frameworks
                .entry(entry.framework.as_str())
                .or_insert_with(|| VersionReq::parse(&entry.framework).map_err(|e| e.to_string()));
            let requirement = requirement
                .as_ref()
                .map_err(|e| bad_entry(id, entry, "framework", &entry.framework, e))?;
            if !requirement.matches(framework) {
                return Ok(Some(format!(
                    "needs framework `{}`, the host has {framework}",
                    entry.framework
                )));
            }
        }
        Ok(None)
    }
}

fn plural(count: usize) -> &'static str {
    if count == 1 { "" } else { "s" }
}
