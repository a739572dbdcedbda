//! The first half of the GitOps story, told before the steps: the example plugins published
//! to a registry, a `plugins.yaml` asking for the versions the steps end on, validated and
//! locked, and the plan `plugsync reconcile --dry-run` computes for it against the desk — which
//! must be the upgrades the demo then performs, in order.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use plugsync_host::Digest;

use super::{DemoOptions, Expect, LIBRARIES, PlanCheck, STEPS, Staged};
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

/// Publishes, writes plugins.yaml, validates, locks, plans against `observe` and checks the
/// plan against the steps (`staged`: each step's artifact, in `STEPS` order), narrating to
/// `out`; the files are written under `work`.
pub(super) fn tell(
    work: &Path,
    plugins: &Path,
    observe: Observe,
    staged: &[Staged],
    options: &DemoOptions,
    out: &mut dyn Write,
) -> Result<PlanCheck> {
    let _ = writeln!(
        out,
        "  the desired state, as an operator declares it (in {}):",
        work.display()
    );
    let registry = work.join("registry");
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

    let wanted: Vec<Wanted<'_>> = STEPS
        .iter()
        .zip(staged)
        .filter(|(step, _)| step.expect == Expect::Committed)
        .map(|(step, artifact)| Wanted {
            plugin: step.plugin,
            artifact,
        })
        .collect();
    let file = work.join("plugins.yaml");
    let yaml = plugins_yaml(&wanted, options.soak);
    std::fs::write(&file, &yaml).map_err(|source| Error::Io {
        action: "write",
        path: file.clone(),
        source,
    })?;
    let _ = writeln!(out, "    wrote plugins.yaml:");
    let _ = write!(out, "{}", indent("      ", &yaml));
    match validate(&file, false) {
        Validated::Valid { plugins, .. } => {
            let _ = writeln!(
                out,
                "    `plugsync validate`: valid ({plugins} plugins, every field checked)"
            );
        }
        Validated::Invalid(report) => return Err(Error::InvalidDesiredState { report }),
    }
    let state_dir = work.join("state");
    let locked = lock(&LockOptions {
        file: file.clone(),
        update: Update::None,
        locked: false,
        state_dir: state_dir.clone(),
        trusted_keys: None,
        registry_ca: None,
    })?;
    let _ = writeln!(
        out,
        "    `plugsync lock`: each version resolved, fetched and its digest checked"
    );
    let _ = write!(out, "{}", indent("    ", &locked.render()));

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
        file,
        observe,
        locked: true,
        state_dir,
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
    let from = 1 + STEPS.len() - wanted.len();
    if check.as_expected {
        let _ = writeln!(
            out,
            "  plan check: its {} steps are the demo's steps {from}-{} below, in order, to the \
             same artifacts (step 1 first tries a faulty release that is not in plugins.yaml)\n",
            steps.len(),
            STEPS.len()
        );
    } else {
        let _ = writeln!(
            out,
            "  PLAN MISMATCH: reconcile would take {} step(s) ({}), but the demo's steps {from}-{} \
             are {} ({}): the verdict will be FAIL\n",
            check.planned.len(),
            check.planned.join(", "),
            STEPS.len(),
            check.expected.len(),
            check.expected.join(", ")
        );
    }
    Ok(check)
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

/// A plugins.yaml pinning each plugin to the last version the steps take it to, with the
/// config it runs with and a soak like the demo's.
fn plugins_yaml(wanted: &[Wanted<'_>], soak: Duration) -> String {
    let mut last: Vec<&Wanted<'_>> = Vec::new();
    for step in wanted.iter().rev() {
        if !last.iter().any(|w| w.plugin == step.plugin) {
            last.insert(0, step);
        }
    }
    // Dependencies first: risk_model, then the strategy that needs it.
    last.sort_by_key(|w| w.plugin != "risk_model");
    let mut yaml = String::from(
        "apiVersion: plugsync/v1\nkind: PluginSet\nmetadata: {name: demo-desk}\nspec:\n  \
         registry: {url: registry}\n  plugins:\n",
    );
    for w in last {
        let config = if w.plugin == "risk_model" {
            "{max_position: 10}"
        } else {
            // As 2.0.0 migrates the desk's 1.0.0 config, which the steps keep.
            "{fast_period: 5, slow_period: 20, signal_threshold: 0.01, order_qty: 1}"
        };
        yaml.push_str(&format!(
            "    - id: {}\n      version: {}\n      config: {config}\n      verify: {{soak: \
             {{duration: {}ms, maxErrorRate: 0}}}}\n",
            w.plugin,
            w.artifact.version,
            soak.as_millis()
        ));
    }
    yaml
}

/// Writes the plugins.yaml of the demo's first step, in a directory of its own under `work`
/// (it has no lock): risk_model as the desk runs it (1.0.0 with `risk_config`), ma_cross
/// pinned to the faulty release `artifact`, switched under the lock so that it starts fresh,
/// soaked for `soak`; narrated to `out`. Its path.
pub(super) fn faulty_release(
    work: &Path,
    artifact: &Staged,
    risk_config: &serde_json::Value,
    soak: Duration,
    out: &mut dyn Write,
) -> Result<PathBuf> {
    let dir = work.join("faulty-release");
    let file = dir.join("plugins.yaml");
    let yaml = format!(
        "apiVersion: plugsync/v1\nkind: PluginSet\nmetadata: {{name: demo-desk-release-candidate}}\n\
         spec:\n  registry: {{url: ../registry}}\n  plugins:\n    \
         - {{id: risk_model, version: 1.0.0, config: {risk_config}}}\n    \
         - id: ma_cross\n      version: {}\n      update: {{mode: locked}}\n      \
         verify: {{soak: {{duration: {}ms, maxErrorRate: 0}}}}\n",
        artifact.version,
        soak.as_millis()
    );
    std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&file, &yaml))
        .map_err(|source| Error::Io {
            action: "write",
            path: file.clone(),
            source,
        })?;
    let _ = writeln!(
        out,
        "`plugsync reconcile -f {}`: an operator tries a release candidate of ma_cross first, \
         switched under the lock so that it starts fresh (a plugins.yaml of its own, with no \
         plugins.lock):",
        file.display()
    );
    let _ = write!(out, "{}", indent("    ", &yaml));
    Ok(file)
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
fn indent(prefix: &str, text: &str) -> String {
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

    /// The artifacts of the demo's upgrades: ma_cross 2.0.0, risk_model 2.0.0, ma_cross 2.1.0.
    fn artifacts() -> [Staged; 3] {
        [staged("2.0.0"), staged("2.0.0"), staged("2.1.0")]
    }

    fn upgrades(artifacts: &[Staged; 3]) -> Vec<Wanted<'_>> {
        ["ma_cross", "risk_model", "ma_cross"]
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

    /// Checks `steps` against the demo's three upgrades: `expect` is whether they match.
    fn check_plan(steps: &[Planned<'_>], expect: bool) {
        let artifacts = artifacts();
        let wanted = upgrades(&artifacts);
        let checked = check(steps, &wanted);
        assert_eq!(checked.as_expected, expect, "{:?}", checked.planned);
        assert_eq!(
            checked.expected,
            ["ma_cross → 2.0.0", "risk_model → 2.0.0", "ma_cross → 2.1.0"]
        );
    }

    #[test]
    fn the_demos_upgrades_in_order_match() {
        check_plan(
            &[
                planned("ma_cross", "2.0.0"),
                planned("risk_model", "2.0.0"),
                planned("ma_cross", "2.1.0"),
            ],
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
                planned("ma_cross", "2.1.0"),
            ],
            false,
        );
        check_plan(
            &[
                planned("risk_model", "2.0.0"),
                planned("ma_cross", "2.0.0"),
                planned("ma_cross", "2.1.0"),
            ],
            false,
        );
        check_plan(
            &[planned("ma_cross", "2.0.0"), planned("risk_model", "2.0.0")],
            false,
        );
        let mut rebuilt = planned("ma_cross", "2.1.0");
        rebuilt.to = Some(("2.1.0".to_owned(), Digest::of(b"other bytes")));
        check_plan(
            &[
                planned("ma_cross", "2.0.0"),
                planned("risk_model", "2.0.0"),
                rebuilt,
            ],
            false,
        );
    }

    #[test]
    fn the_faulty_release_has_a_valid_plugins_yaml_of_its_own() {
        let work = tempfile::tempdir().unwrap();
        let mut out = Vec::new();
        let file = faulty_release(
            work.path(),
            &staged("2.0.1"),
            &serde_json::json!({"max_position": 10}),
            Duration::from_millis(600),
            &mut out,
        )
        .unwrap();
        assert_eq!(file, work.path().join("faulty-release/plugins.yaml"));
        expect_test::expect![[r#"
            apiVersion: plugsync/v1
            kind: PluginSet
            metadata: {name: demo-desk-release-candidate}
            spec:
              registry: {url: ../registry}
              plugins:
                - {id: risk_model, version: 1.0.0, config: {"max_position":10}}
                - id: ma_cross
                  version: 2.0.1
                  update: {mode: locked}
                  verify: {soak: {duration: 600ms, maxErrorRate: 0}}
        "#]]
        .assert_eq(&std::fs::read_to_string(&file).unwrap());
        assert!(
            matches!(validate(&file, false), Validated::Valid { plugins: 2, .. }),
            "{}",
            String::from_utf8_lossy(&out)
        );
    }

    #[test]
    fn plugins_yaml_pins_each_plugin_to_its_last_version_dependency_first() {
        let artifacts = artifacts();
        let wanted = upgrades(&artifacts);
        expect_test::expect![[r#"
            apiVersion: plugsync/v1
            kind: PluginSet
            metadata: {name: demo-desk}
            spec:
              registry: {url: registry}
              plugins:
                - id: risk_model
                  version: 2.0.0
                  config: {max_position: 10}
                  verify: {soak: {duration: 600ms, maxErrorRate: 0}}
                - id: ma_cross
                  version: 2.1.0
                  config: {fast_period: 5, slow_period: 20, signal_threshold: 0.01, order_qty: 1}
                  verify: {soak: {duration: 600ms, maxErrorRate: 0}}
        "#]]
        .assert_eq(&plugins_yaml(&wanted, Duration::from_millis(600)));
    }
}
