//! The migration previews of a plan: for each plugin whose steps migrate its state, the live
//! state (observed with the plugins' states) carried along its steps by the real migrations,
//! on the real artifacts, in a throwaway child process ([`crate::preflight`]).
//!
//! The artifacts come from the registry by digest into `STATE_DIR/cache`, verified like
//! `plugsync lock` verifies them (sha256, metadata, signature with trusted keys). A preview
//! that cannot run says why in the plan (no state observed, the running artifact not in the
//! registry…); one that fails, crashes or hangs is an error *in the plan*, never a failure of
//! the dry run: the plan itself stands.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use plugsync_host::{Digest, TrustedKeys};

use crate::error::Error;
use crate::observe::Observation;
use crate::plan::{Plan, PlannedStep, PreviewOutcome, StateMigration, StatePreview, StepAction};
use crate::preflight::{
    self, ArtifactFile, ChildRunner, PreflightError, PreviewJob, PreviewStage, PreviewStep,
};
use crate::registry::{IndexFile, Registry};

use super::lock::ArtifactCache;

/// Where previews fetch artifacts to, how they check them, and how the child runs.
#[derive(Debug, Clone, Copy)]
pub(super) struct PreviewContext<'a> {
    /// plugsync's state directory (the cache is `cache/` in it).
    pub state_dir: &'a Path,
    /// The publishers' keys, when artifacts must be signed.
    pub trusted_keys: Option<&'a Path>,
    /// How long one plugin's chain may run.
    pub timeout: Duration,
    /// The plugsync executable (the child runs `plugsync preflight-child`).
    pub exe: &'a Path,
}

/// A preview for every step of `plan` that migrates state, in step order.
pub(super) fn previews(
    plan: &Plan,
    observation: &Observation,
    registry: Option<&dyn Registry>,
    index: &BTreeMap<String, IndexFile>,
    context: &PreviewContext<'_>,
) -> Vec<StatePreview> {
    let mut previews = Vec::new();
    let mut plugins: Vec<&str> = Vec::new();
    for step in plan.steps.iter().filter(|s| s.migration.is_some()) {
        if !plugins.contains(&step.plugin.as_str()) {
            plugins.push(&step.plugin);
        }
    }
    for plugin in plugins {
        let chain: Vec<&PlannedStep> = plan
            .steps
            .iter()
            .filter(|s| s.plugin == plugin && s.action != StepAction::Install)
            .take_while(|s| s.action != StepAction::Remove)
            .collect();
        let outcomes = match chain_previews(plugin, &chain, observation, registry, index, context) {
            Ok(outcomes) => outcomes,
            Err(reason) => vec![PreviewOutcome::Skipped { reason }; chain.len()],
        };
        for (step, outcome) in chain.iter().zip(outcomes) {
            // A fresh start is shown too: what it discards.
            if step.migration.is_some() || matches!(outcome, PreviewOutcome::Failed { .. }) {
                previews.push(StatePreview {
                    step: step.number,
                    plugin: plugin.to_owned(),
                    outcome,
                });
            }
        }
    }
    previews.sort_by_key(|p| p.step);
    previews
}

/// One plugin's chain previewed: one outcome per step, or why none can be.
fn chain_previews(
    plugin: &str,
    chain: &[&PlannedStep],
    observation: &Observation,
    registry: Option<&dyn Registry>,
    index: &BTreeMap<String, IndexFile>,
    context: &PreviewContext<'_>,
) -> std::result::Result<Vec<PreviewOutcome>, String> {
    let Some(states) = &observation.running.states else {
        return Err(
            "the plugins' states were not observed: plan with `--host`, or save the status with \
             `plugsync status --output json --with-state`"
                .to_owned(),
        );
    };
    let running = (observation.running.status.plugins.iter())
        .find(|p| p.plugin == plugin)
        .ok_or_else(|| format!("`{plugin}` is not running"))?;
    let snapshot = states
        .get(plugin)
        .ok_or_else(|| format!("the observed status has no state for `{plugin}`"))?;
    let state = snapshot
        .verify()
        .map_err(|e| format!("the observed state of `{plugin}` does not verify: {e}"))?;
    let registry = registry.ok_or_else(|| "plugins.yaml names no registry".to_owned())?;
    let keys = match context.trusted_keys {
        Some(file) => TrustedKeys::load(file).map_err(|e| e.to_string())?,
        None => TrustedKeys::none(),
    };
    let cache = ArtifactCache::open(context.state_dir, keys).map_err(|e| e.to_string())?;
    let fetch = |digest: &Digest, what: &str| -> std::result::Result<ArtifactFile, String> {
        let entry = (index.get(plugin).into_iter())
            .flat_map(|file| &file.versions)
            .find(|entry| entry.sha256 == *digest)
            .ok_or_else(|| Error::NotInRegistry {
                plugin: plugin.to_owned(),
                sha256: *digest,
            });
        entry
            .and_then(|entry| cache.verified(registry, plugin, entry))
            .map(|stored| ArtifactFile::new(stored.path, *digest))
            .map_err(|e| format!("{what}: {e}"))
    };
    let running_file = fetch(
        &running.version.digest,
        &format!("the running {plugin} {}", running.version.version),
    )?;
    let mut job = PreviewJob::new(plugin, running_file, running.config.clone(), state);
    for step in chain {
        let Some(target) = &step.to else {
            return Err(format!("step {} has no target", step.number));
        };
        let mut preview_step = PreviewStep::new(fetch(
            &target.at.sha256,
            &format!("{plugin} {}", target.at),
        )?);
        match &step.migration {
            Some(StateMigration::Rules { rules, .. }) => {
                preview_step = preview_step.migration_rules(rules.clone());
            }
            Some(StateMigration::Fresh) => preview_step = preview_step.fresh_state(),
            _ => {}
        }
        if let Some(config) = &step.config {
            preview_step = preview_step.config(config.clone());
        }
        job = job.step(preview_step);
    }
    let runner = ChildRunner::new(context.exe, context.timeout);
    Ok(run(&job, &runner))
}

/// Runs `job`: an outcome per step. When a step fails, the steps before it are previewed again
/// on their own (the failed run's partial results died with its process), the failing step
/// gets the error, and the steps after it are skipped.
fn run(job: &PreviewJob, runner: &ChildRunner) -> Vec<PreviewOutcome> {
    match preflight::preview(job, runner) {
        Ok(steps) => steps
            .into_iter()
            .map(|step| PreviewOutcome::Migrated {
                config_before: step.config_before,
                config_after: step.config_after,
                state_before: step.state_before,
                state_after: step.state_after,
            })
            .collect(),
        Err(error) => {
            let failed_at = match stage(&error) {
                Some(PreviewStage::Step { number, .. }) => number.saturating_sub(1),
                _ => 0,
            };
            let mut outcomes = match failed_at {
                0 => Vec::new(),
                n => {
                    let mut before = job.clone();
                    before.steps.truncate(n);
                    run(&before, runner)
                }
            };
            outcomes.truncate(failed_at);
            outcomes.push(PreviewOutcome::Failed {
                error: error.to_string(),
            });
            while outcomes.len() < job.steps.len() {
                outcomes.push(PreviewOutcome::Skipped {
                    reason: format!("an earlier step's preview failed (step {})", failed_at + 1),
                });
            }
            outcomes
        }
    }
}

fn stage(error: &PreflightError) -> Option<PreviewStage> {
    match error {
        PreflightError::Crashed { stage, .. }
        | PreflightError::TimedOut { stage, .. }
        | PreflightError::Failed { stage, .. }
        | PreflightError::NoResult { stage, .. } => Some((**stage).clone()),
        _ => None,
    }
}
