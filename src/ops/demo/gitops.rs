//! The GitOps side of the story: the example plugins published to a registry; the desk's
//! `plugins.yaml` written, validated, locked and committed in a scratch git repository (each
//! later change an operator makes is a commit too: [`Desk::commit`]); and the plan
//! `plugsync reconcile --dry-run` computes for the first commit against the desk — which must be
//! the upgrades the demo then applies, in order.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plugsync_host::Digest;

use super::git::Repo;
use super::{DemoOptions, LIBRARIES, PlanCheck, STEPS, Staged};
use crate::error::{Error, Result};
use crate::ops::{
    DryRunOptions, LockOptions, Observe, PublishOptions, Validated, dry_run, lock, publish,
    validate,
};
use crate::plan::PlannedStep;
use crate::resolve::Update;
use crate::spec::model::Channel;

/// How long one plugin's migration previews may run (as `reconcile --dry-run`'s default).
pub(super) const PREVIEW_TIMEOUT: Duration = Duration::from_secs(30);

/// The demo's steps the first commit's plan must be: `STEPS[..PLANNED]`.
pub(super) const PLANNED: usize = 2;

/// A step the plan must have: the plugin, and the artifact it ends on.
struct Wanted<'a> {
    plugin: &'a str,
    artifact: &'a Staged,
}

impl std::fmt::Display for Wanted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} → {}", self.plugin, self.artifact.version)
    }
}

/// What ma_cross's entry in plugins.yaml asks.
pub(super) struct Entry<'a> {
    /// The version pinned.
    pub version: &'a str,
    /// Switched under the lock (`update: {mode: locked}`), so that it starts fresh.
    pub locked: bool,
    /// Twice the order size, not before this time (`strategy: {kind: scheduled, at: …}`):
    /// a change for after the close.
    pub scheduled: Option<&'a str>,
}

/// The desk's git repository: its plugins.yaml, and the commits made so far.
pub(super) struct Desk {
    repo: Repo,
    /// The desk's plugins.yaml, in the repository's work tree.
    pub file: PathBuf,
    /// Where plugsync keeps its journal and artifact cache (outside the repository).
    pub state_dir: PathBuf,
    /// Each commit's id (hex), oldest first.
    pub commits: Vec<String>,
    /// The first commit's plan, checked against the demo's steps.
    pub plan: PlanCheck,
    /// risk_model's version, as the first commit pins it.
    risk_model: String,
    soak: Duration,
}

impl Desk {
    /// An operator's change: plugins.yaml with ma_cross's entry as `entry`, validated, locked,
    /// committed with `message`; prints the commit's line and the lines changed. Its id.
    pub fn commit(
        &mut self,
        entry: &Entry<'_>,
        message: &str,
        out: &mut dyn Write,
    ) -> Result<String> {
        let before = std::fs::read_to_string(&self.file).unwrap_or_default();
        let yaml = plugins_yaml(&self.risk_model, entry, self.soak);
        let id = self.write_and_commit(&yaml, message)?;
        let _ = writeln!(out, "  commit {}  {message}", &id[..8]);
        let diff = similar::TextDiff::from_lines(&before, &yaml);
        for change in diff.iter_all_changes() {
            let sign = match change.tag() {
                similar::ChangeTag::Equal => continue,
                similar::ChangeTag::Delete => '-',
                similar::ChangeTag::Insert => '+',
            };
            let _ = write!(out, "    {sign}{change}");
        }
        Ok(id)
    }

    /// Writes plugins.yaml, validates and locks it, commits both files; the commit's id.
    fn write_and_commit(&mut self, yaml: &str, message: &str) -> Result<String> {
        write(&self.file, yaml)?;
        if let Validated::Invalid(report) = validate(&self.file, false) {
            return Err(Error::InvalidDesiredState { report });
        }
        lock_file(&self.file, &self.state_dir)?;
        let id = self
            .repo
            .commit(&["plugins.yaml", "plugins.lock"], message)?;
        self.commits.push(id.clone());
        Ok(id)
    }
}

/// Publishes, writes plugins.yaml in a new git repository, validates, locks and commits it,
/// plans against `observe` and checks the plan against the demo's first steps (`staged`: each
/// step's artifact, in `STEPS` order), narrating to `out`; the files are written under
/// `work`.
pub(super) fn tell(
    work: &Path,
    plugins: &Path,
    observe: Observe,
    staged: &[Staged],
    options: &DemoOptions,
    out: &mut dyn Write,
) -> Result<Desk> {
    let registry = work.join("registry");
    let _ = writeln!(
        out,
        "  the example plugins published to a registry (in {}):",
        work.display()
    );
    for name in LIBRARIES {
        let said = publish(&PublishOptions {
            library: plugins.join(name),
            registry: registry.clone(),
            channel: Channel::Stable,
            sign_key: None,
            migrations: None,
        })?;
        let _ = write!(out, "{}", indent("    ", &said));
    }

    let wanted: Vec<Wanted<'_>> = STEPS[..PLANNED]
        .iter()
        .zip(staged)
        .map(|(step, artifact)| Wanted {
            plugin: step.plugin,
            artifact,
        })
        .collect();
    let version = |plugin: &str| {
        let last = wanted.iter().rev().find(|w| w.plugin == plugin);
        last.map_or_else(String::new, |w| w.artifact.version.clone())
    };
    let repo_dir = work.join("desk");
    let repo = Repo::init(&repo_dir)?;
    let mut desk = Desk {
        file: repo_dir.join("plugins.yaml"),
        repo,
        state_dir: work.join("state"),
        commits: Vec::new(),
        plan: PlanCheck {
            planned: Vec::new(),
            expected: Vec::new(),
            as_expected: false,
        },
        risk_model: version("risk_model"),
        soak: options.soak,
    };
    let ma_cross = version("ma_cross");
    let entry = Entry {
        version: &ma_cross,
        locked: false,
        scheduled: None,
    };
    let yaml = plugins_yaml(&desk.risk_model, &entry, options.soak);
    let message = format!("pin risk_model {}, ma_cross {ma_cross}", desk.risk_model);
    let id = desk.write_and_commit(&yaml, &message)?;
    let _ = writeln!(
        out,
        "  {}, validated (`plugsync validate`), locked (`plugsync lock`: each version resolved, fetched, its digest checked) and committed with plugins.lock in a new git repository:",
        desk.file.display()
    );
    let _ = writeln!(out, "  commit {}  {message}", &id[..8]);
    let _ = write!(out, "{}", indent("    ", &yaml));

    let exe = plugsync_exe(options);
    let (preview, previews_by) = match &exe {
        Some(exe) => (
            true,
            format!(
                "state migrations previewed on the live states in `{} preflight-child`",
                exe.display()
            ),
        ),
        None => (
            false,
            "no plugsync executable found to preview state migrations with: previews off"
                .to_owned(),
        ),
    };
    let _ = writeln!(
        out,
        "  `plugsync reconcile --dry-run` against the desk ({previews_by}):"
    );
    let planned = dry_run(&DryRunOptions {
        file: desk.file.clone(),
        observe,
        locked: true,
        state_dir: desk.state_dir.clone(),
        trusted_keys: None,
        registry_ca: None,
        preview,
        preview_timeout: PREVIEW_TIMEOUT,
        exe: exe.unwrap_or_default(),
        now: jiff::Timestamp::now(),
        limits: crate::plan::SearchLimits::default(),
    })?;
    let _ = write!(out, "{}", indent("    ", &planned.text(false)));

    let steps: Vec<Planned<'_>> = planned
        .document
        .plan
        .steps
        .iter()
        .map(Planned::from)
        .collect();
    let check = check(&steps, &wanted);
    if check.as_expected {
        let _ = writeln!(
            out,
            "  plan check: its {} steps are the demo's steps 1-{PLANNED} below, in order, to the same artifacts",
            steps.len(),
        );
    } else {
        let _ = writeln!(
            out,
            "  PLAN MISMATCH: reconcile would take {} step(s) ({}), but the demo's steps \
             1-{PLANNED} are {} ({}): the verdict will be FAIL",
            check.planned.len(),
            check.planned.join(", "),
            check.expected.len(),
            check.expected.join(", ")
        );
    }
    desk.plan = check;
    Ok(desk)
}

/// Resolves and locks `file`, its artifacts fetched into `state_dir`'s cache.
fn lock_file(file: &Path, state_dir: &Path) -> Result<()> {
    lock(&LockOptions {
        file: file.to_owned(),
        update: Update::None,
        locked: false,
        state_dir: state_dir.to_owned(),
        trusted_keys: None,
        registry_ca: None,
    })?;
    Ok(())
}

fn write(file: &Path, text: &str) -> Result<()> {
    std::fs::write(file, text).map_err(|source| Error::Io {
        action: "write",
        path: file.to_owned(),
        source,
    })
}

/// A planned step as the check sees it: the plugin, and the version and artifact it ends on
/// (`None`: a removal).
struct Planned<'a> {
    plugin: &'a str,
    to: Option<(String, Digest)>,
}

impl<'a> From<&'a PlannedStep> for Planned<'a> {
    fn from(step: &'a PlannedStep) -> Self {
        Planned {
            plugin: &step.plugin,
            to: step
                .to
                .as_ref()
                .map(|to| (to.at.version.to_string(), to.at.sha256)),
        }
    }
}

/// Compares the plan's steps with the steps wanted: the same plugins, in the same order, each
/// to the same version and artifact.
fn check(steps: &[Planned<'_>], wanted: &[Wanted<'_>]) -> PlanCheck {
    let planned = steps
        .iter()
        .map(|step| match &step.to {
            Some((version, _)) => format!("{} → {version}", step.plugin),
            None => format!("{} removed", step.plugin),
        })
        .collect();
    let as_expected = steps.len() == wanted.len()
        && steps.iter().zip(wanted).all(|(step, wanted)| {
            step.plugin == wanted.plugin
                && step.to.as_ref().is_some_and(|(version, sha256)| {
                    *version == wanted.artifact.version && *sha256 == wanted.artifact.digest
                })
        });
    PlanCheck {
        planned,
        expected: wanted.iter().map(ToString::to_string).collect(),
        as_expected,
    }
}

/// The desk's plugins.yaml: risk_model pinned to `risk_model` (dependency first), ma_cross as
/// `entry` asks, each with the config it runs with and a soak like the demo's.
fn plugins_yaml(risk_model: &str, entry: &Entry<'_>, soak: Duration) -> String {
    let soak = format!(
        "      verify: {{soak: {{duration: {}ms, maxErrorRate: 0}}}}\n",
        soak.as_millis()
    );
    let locked = match entry.locked {
        true => "      update: {mode: locked}\n",
        false => "",
    };
    let (order_qty, strategy) = match entry.scheduled {
        Some(at) => (
            2,
            format!("      strategy: {{kind: scheduled, at: \"{at}\"}}\n"),
        ),
        None => (1, String::new()),
    };
    // ma_cross's config as 2.0.0 migrates the desk's 1.0.0 config, which the steps keep.
    format!(
        "apiVersion: plugsync/v1\nkind: PluginSet\nmetadata: {{name: demo-desk}}\nspec:\n  \
         registry: {{url: ../registry}}\n  plugins:\n    \
         - id: risk_model\n      version: {risk_model}\n      config: {{max_position: 10}}\n{soak}    \
         - id: ma_cross\n      version: {}\n      \
         config: {{fast_period: 5, slow_period: 20, signal_threshold: 0.01, order_qty: \
         {order_qty}}}\n{locked}{strategy}{soak}",
        entry.version
    )
}

/// The plugsync executable that runs migration previews: the one the options name, the one
/// that runs the host, or this program when it is `plugsync`.
pub(super) fn plugsync_exe(options: &DemoOptions) -> Option<PathBuf> {
    if let Some(exe) = &options.exe {
        return Some(exe.clone());
    }
    if let super::DemoVenue::SpawnHost { program } = &options.venue {
        return Some(program.clone());
    }
    std::env::current_exe()
        .ok()
        .filter(|exe| exe.file_stem().is_some_and(|stem| stem == "plugsync"))
}

/// Each line of `text` after `prefix`.
pub(super) fn indent(prefix: &str, text: &str) -> String {
    text.lines()
        .map(|line| match line.is_empty() {
            true => "\n".to_owned(),
            false => format!("{prefix}{line}\n"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(version: &str) -> Staged {
        Staged {
            digest: Digest::of(version.as_bytes()),
            version: version.to_owned(),
        }
    }

    /// The artifacts of the first commit's upgrades: ma_cross 2.0.0, risk_model 2.0.0.
    fn artifacts() -> [Staged; 2] {
        [staged("2.0.0"), staged("2.0.0")]
    }

    fn upgrades(artifacts: &[Staged; 2]) -> Vec<Wanted<'_>> {
        ["ma_cross", "risk_model"]
            .into_iter()
            .zip(artifacts)
            .map(|(plugin, artifact)| Wanted { plugin, artifact })
            .collect()
    }

    fn planned<'a>(plugin: &'a str, version: &str) -> Planned<'a> {
        Planned {
            plugin,
            to: Some((version.to_owned(), Digest::of(version.as_bytes()))),
        }
    }

    /// Checks `steps` against the first commit's upgrades: `expect` is whether they match.
    fn check_plan(steps: &[Planned<'_>], expect: bool) {
        let artifacts = artifacts();
        let wanted = upgrades(&artifacts);
        let checked = check(steps, &wanted);
        assert_eq!(checked.as_expected, expect, "{:?}", checked.planned);
        assert_eq!(checked.expected, ["ma_cross → 2.0.0", "risk_model → 2.0.0"]);
    }

    #[test]
    fn the_demos_upgrades_in_order_match() {
        check_plan(
            &[planned("ma_cross", "2.0.0"), planned("risk_model", "2.0.0")],
            true,
        );
    }

    #[test]
    fn a_detour_another_order_a_missing_step_or_another_artifact_does_not() {
        // risk_model through 1.1.0.
        check_plan(
            &[
                planned("risk_model", "1.1.0"),
                planned("ma_cross", "2.0.0"),
                planned("risk_model", "2.0.0"),
            ],
            false,
        );
        check_plan(
            &[planned("risk_model", "2.0.0"), planned("ma_cross", "2.0.0")],
            false,
        );
        check_plan(&[planned("ma_cross", "2.0.0")], false);
        let mut rebuilt = planned("risk_model", "2.0.0");
        rebuilt.to = Some(("2.0.0".to_owned(), Digest::of(b"other bytes")));
        check_plan(&[planned("ma_cross", "2.0.0"), rebuilt], false);
    }

    #[test]
    fn plugins_yaml_pins_both_dependency_first_and_is_valid() {
        let locked = Entry {
            version: "2.0.1",
            locked: true,
            scheduled: None,
        };
        let yaml = plugins_yaml("2.0.0", &locked, Duration::from_millis(600));
        expect_test::expect![[r#"
            apiVersion: plugsync/v1
            kind: PluginSet
            metadata: {name: demo-desk}
            spec:
              registry: {url: ../registry}
              plugins:
                - id: risk_model
                  version: 2.0.0
                  config: {max_position: 10}
                  verify: {soak: {duration: 600ms, maxErrorRate: 0}}
                - id: ma_cross
                  version: 2.0.1
                  config: {fast_period: 5, slow_period: 20, signal_threshold: 0.01, order_qty: 1}
                  update: {mode: locked}
                  verify: {soak: {duration: 600ms, maxErrorRate: 0}}
        "#]]
        .assert_eq(&yaml);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plugins.yaml");
        std::fs::write(&file, &yaml).unwrap();
        assert!(matches!(
            validate(&file, false),
            Validated::Valid { plugins: 2, .. }
        ));
    }
}
