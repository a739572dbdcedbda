//! The child side: `plugsync preflight-child --store DIR`, a hidden command that reads a
//! [`PreviewJob`] on stdin and answers with [`Progress`] lines on stdout.

use std::io::{Read, Write};
use std::path::Path;

use plugsync_host::{
    Digest, HostError, Runtime, RuntimeOptions, StateSnapshot, StoredArtifact, SwapRequest,
    VersionRef,
};

use super::{ArtifactFile, PreviewJob, Progress, StepPreview};

/// Runs the job read from `input` over a store at `store` (created; the parent removes it),
/// writing progress and the result to `output`. An error of the job's is a `failed` line, not
/// an `Err`: only failing to write the answer is.
pub(crate) fn run_child(
    store: &Path,
    input: &mut dyn Read,
    output: &mut dyn Write,
) -> std::io::Result<()> {
    let mut emit = |progress: &Progress| -> std::io::Result<()> {
        // One write per line: a plugin that prints on stdout (it has its own std, and so its
        // own lock) can at worst spoil a line of its own, which the parent skips.
        let mut line = serde_json::to_vec(progress).map_err(std::io::Error::other)?;
        line.push(b'\n');
        output.write_all(&line)?;
        output.flush()
    };
    match run_job(store, input, &mut emit) {
        Ok(()) => emit(&Progress::Done),
        Err(Failure::Job(message)) => emit(&Progress::Failed { message }),
        Err(Failure::Write(error)) => Err(error),
    }
}

enum Failure {
    /// The job failed: why, for the parent.
    Job(String),
    /// The answer could not be written: nobody is left to tell.
    Write(std::io::Error),
}

impl From<HostError> for Failure {
    fn from(error: HostError) -> Failure {
        Failure::Job(error.to_string())
    }
}

fn run_job(
    store: &Path,
    input: &mut dyn Read,
    emit: &mut dyn FnMut(&Progress) -> std::io::Result<()>,
) -> Result<(), Failure> {
    let mut bytes = Vec::new();
    input
        .read_to_end(&mut bytes)
        .map_err(|e| Failure::Job(format!("cannot read the preview job on stdin: {e}")))?;
    let job: PreviewJob = serde_json::from_slice(&bytes)
        .map_err(|e| Failure::Job(format!("the preview job is not valid: {e}")))?;

    let mut options = RuntimeOptions::new(store);
    // Every version of the chain is mapped at once, in this process that lives for one job.
    options.resident_cap = options.resident_cap.max(job.steps.len() + 1);
    // Nothing calls the plugins here; the parent bounds the whole job in time.
    options.call_watchdog = None;
    let runtime = Runtime::new(options)?;

    // Staging reads metadata only: no plugin code runs before every digest is checked.
    let running = stage(&runtime, &job.running)?;
    if running.metadata.id != job.plugin {
        return Err(Failure::Job(format!(
            "the running artifact `{}` is plugin `{}`, not `{}`: the job is wrong",
            job.running.path.display(),
            running.metadata.id,
            job.plugin
        )));
    }
    let mut targets = Vec::with_capacity(job.steps.len());
    for step in &job.steps {
        targets.push(stage(&runtime, &step.artifact)?);
    }
    emit(&Progress::Staged {
        running: running.metadata.version.clone(),
        versions: targets.iter().map(|t| t.metadata.version.clone()).collect(),
    })
    .map_err(Failure::Write)?;

    runtime.install(&running.digest, job.config.clone())?;
    if job.fresh {
        runtime.check_health(&job.plugin)?;
    } else {
        runtime.restore(&snapshot(&job, &running)?)?;
    }
    emit(&Progress::Loaded).map_err(Failure::Write)?;

    for (step, target) in job.steps.iter().zip(&targets) {
        // The host's own defaults (optimistic, health checked): the preview is the switch an
        // apply would make. Nothing calls the plugin, so there is nothing to catch up.
        let mut request = SwapRequest::new(&job.plugin, target.digest);
        request.migration_rules = step.migration_rules.clone();
        request.fresh_state = step.fresh_state;
        request.config = step.config.clone();
        if let Some(verify) = &step.verify {
            request.verify = verify.clone();
        }
        let report = runtime.swap(request)?;
        // The next step starts from this one, with no step pending.
        runtime.commit(&job.plugin)?;
        emit(&Progress::Step {
            preview: StepPreview {
                from: report.from.version,
                version: report.to.version,
                kind: report.kind,
                config_before: report.config_before,
                config_after: report.config_after,
                state_before: report.state_before,
                state_after: report.state_after,
                state_discarded: report.state_discarded,
            },
        })
        .map_err(Failure::Write)?;
    }
    Ok(())
}

/// Stages a job's artifact, checked against the digest the parent verified.
fn stage(runtime: &Runtime, artifact: &ArtifactFile) -> Result<StoredArtifact, Failure> {
    let path = &artifact.path;
    let name = path.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        Failure::Job(format!(
            "`{}` does not end in a file name the store accepts",
            path.display()
        ))
    })?;
    let bytes = std::fs::read(path)
        .map_err(|e| Failure::Job(format!("cannot read `{}`: {e}", path.display())))?;
    Ok(runtime.stage(name, &bytes, &artifact.sha256)?)
}

/// The job's state as a snapshot of the running version, with the checksum a restore checks.
fn snapshot(job: &PreviewJob, running: &StoredArtifact) -> Result<StateSnapshot, Failure> {
    let canonical = plugsync_plugin::canonical_json(&job.state)
        .map_err(|e| Failure::Job(format!("the running state cannot be hashed: {e}")))?;
    Ok(StateSnapshot {
        plugin: job.plugin.clone(),
        version: VersionRef {
            version: running.metadata.version.clone(),
            digest: running.digest,
        },
        state_schema: running.metadata.state_schema,
        seq: 0,
        state: job.state.to_string(),
        sha256: Digest::of(&canonical),
    })
}
