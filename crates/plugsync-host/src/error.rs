//! Errors of the host runtime: each variant a situation, with what to do about it.

use std::path::PathBuf;

use crate::digest::Digest;
use crate::restraints::Restraint;
use crate::rollback::RollbackReport;
use crate::verify::VerifyReport;

/// What went wrong in the host runtime. Messages are lowercase, name things in backticks and
/// end with the fix. Whatever the error, the slot it concerns keeps serving the version it
/// served before the failed operation.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// A file could not be read or written.
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        /// What was being done (`read`, `write`, …).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },

    /// The bytes do not hash to the digest they were announced with.
    #[error(
        "sha256 mismatch for `{artifact}`: expected {expected}, got {actual}; the artifact is \
         corrupt or not the one that was published: fetch it again from the registry"
    )]
    DigestMismatch {
        /// The artifact's file name.
        artifact: String,
        /// The digest it was announced with.
        expected: Digest,
        /// The digest of the bytes received.
        actual: Digest,
    },

    /// An artifact name that could escape the store directory.
    #[error(
        "artifact name `{name}` is not a plain file name: use a name without `/`, `\\`, `..` or \
         a leading `.`"
    )]
    BadArtifactName {
        /// The name received.
        name: String,
    },

    /// The file is not a shared object this host can read.
    #[error("`{artifact}` is not a loadable plugin library: {reason}")]
    NotALibrary {
        /// The artifact.
        artifact: String,
        /// What the object parser said.
        reason: String,
    },

    /// The library has no `.plugsync` metadata section.
    #[error(
        "`{artifact}` has no `.plugsync` metadata section, so it was not built with the plugsync \
         SDK; it was not opened: export the plugin with `plugsync_plugin::export_plugin!`"
    )]
    NoMetadata {
        /// The artifact.
        artifact: String,
    },

    /// The metadata section does not parse.
    #[error(
        "`{artifact}` has invalid plugin metadata ({reason}); it was not opened: rebuild it with the plugsync SDK"
    )]
    BadMetadata {
        /// The artifact.
        artifact: String,
        /// The parse error.
        reason: String,
    },

    /// The library was built for another ABI major.
    #[error(
        "plugin `{plugin}` {version} was built for plugin ABI {found}, this host speaks ABI \
         {expected}; it was not opened: rebuild it against a plugsync-plugin SDK of ABI {expected}"
    )]
    AbiMismatch {
        /// Plugin id.
        plugin: String,
        /// Plugin version.
        version: String,
        /// ABI major of the library.
        found: u32,
        /// ABI major of this host.
        expected: u32,
    },

    /// The library was built for an older ABI minor than this host needs: its vtable lacks
    /// entries the host calls. Found in its metadata, so it was never mapped.
    #[error(
        "plugin `{plugin}` {version} was built for plugin ABI {major}.{found}, this host needs \
         ABI {major}.{required} or newer; it was not opened: rebuild it with a newer \
         plugsync-plugin SDK"
    )]
    AbiTooOld {
        /// Plugin id.
        plugin: String,
        /// Plugin version.
        version: String,
        /// ABI major of the library (this host's).
        major: u32,
        /// ABI minor of the library (0 when its metadata predates `abi_minor`).
        found: u32,
        /// The oldest ABI minor this host loads.
        required: u32,
    },

    /// The library was built with `panic = "abort"`.
    #[error(
        "plugin `{plugin}` {version} was built with `panic = \"abort\"`: its first panic would \
         kill the host, so it was not opened; rebuild it with `panic = \"unwind\"` (Cargo's \
         default)"
    )]
    PanicAbort {
        /// Plugin id.
        plugin: String,
        /// Plugin version.
        version: String,
    },

    /// The plugin does not run on this host's framework version.
    #[error(
        "plugin `{plugin}` {version} needs host framework `{required}`, this host is {host}: \
         pick a plugin version built for framework {host}"
    )]
    FrameworkMismatch {
        /// Plugin id.
        plugin: String,
        /// Plugin version.
        version: String,
        /// The plugin's requirement.
        required: String,
        /// This host's framework version.
        host: String,
    },

    /// A version or requirement in the metadata is not semver.
    #[error(
        "plugin `{plugin}` declares `{field}` = `{value}`, which is not valid semver ({reason}): fix the plugin's `export_plugin!` call"
    )]
    BadVersion {
        /// Plugin id.
        plugin: String,
        /// The metadata field.
        field: &'static str,
        /// The value.
        value: String,
        /// The parse error.
        reason: String,
    },

    /// `dlopen` or the entry point failed.
    #[error("cannot load plugin `{plugin}` {version} from `{path}`: {reason}")]
    Load {
        /// Plugin id.
        plugin: String,
        /// Plugin version.
        version: String,
        /// The store path.
        path: PathBuf,
        /// The loader's message.
        reason: String,
    },

    /// Too many versions of one plugin are mapped in this process.
    #[error(
        "cannot load `{plugin}` {version}: {resident} versions of `{plugin}` are already mapped \
         in this host (cap {cap}) and plugin code is never unmapped; restart the host in a quiet \
         window to release them, or raise the resident cap"
    )]
    ResidentCap {
        /// Plugin id.
        plugin: String,
        /// The version refused.
        version: String,
        /// Digests of this plugin resident now.
        resident: usize,
        /// The cap.
        cap: usize,
    },

    /// The store directory (or its `artifacts/`) can be written by another user: whoever can
    /// write it can replace the code this host loads.
    #[error(
        "store directory `{}` {problem} (mode {mode:04o}, owner uid {owner}, this host runs as \
         uid {uid}): whoever can write it can change the code this host loads; make it private \
         to the host's user: `chown {uid} {} && chmod 700 {}`",
        .path.display(), .path.display(), .path.display()
    )]
    InsecureStore {
        /// The directory.
        path: PathBuf,
        /// What is wrong: writable by its group or others, or owned by another user.
        problem: &'static str,
        /// Its permission bits.
        mode: u32,
        /// Its owner.
        owner: u32,
        /// The effective uid of this host.
        uid: u32,
    },

    /// The trusted keys file cannot be read.
    #[error("cannot read trusted keys file `{}`: {source}; check the path given as the trusted keys file", .path.display())]
    KeysUnreadable {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },

    /// A line of the trusted keys file is not an ed25519 public key.
    #[error(
        "`{}:{line}`: {reason}; write one ed25519 public key per line as 64 hex digits (`#` \
         starts a comment)",
        .path.display()
    )]
    BadKey {
        /// The file.
        path: PathBuf,
        /// The line, from 1.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },

    /// The trusted keys file holds no key (which would silently accept unsigned artifacts).
    #[error(
        "trusted keys file `{}` holds no key: add one ed25519 public key per line (64 hex \
         digits), or leave out the trusted keys to accept unsigned artifacts",
        .path.display()
    )]
    NoTrustedKeys {
        /// The file.
        path: PathBuf,
    },

    /// An artifact name the store keeps for signatures.
    #[error(
        "artifact name `{name}` ends in `.sig`, which the store keeps for an artifact's \
         signature: name the library `lib<plugin>.so`"
    )]
    SignatureName {
        /// The name received.
        name: String,
    },

    /// An artifact without a signature, on a host that loads only signed ones.
    #[error(
        "plugin `{plugin}` {version} (sha256 {digest}) carries no signature, and this host loads \
         only artifacts signed by a key it trusts; it was not opened: stage it with its \
         publisher's signature (the `x-plugsync-signature` header, or a `LIB.sig` file beside a \
         `--load`ed `LIB`), or, for development only, start `plugsync host` with \
         `--allow-unsigned-load`"
    )]
    Unsigned {
        /// Plugin id.
        plugin: String,
        /// Its version.
        version: String,
        /// The artifact.
        digest: Digest,
    },

    /// An artifact whose signature is not one of a trusted key over its id, version and sha256.
    #[error(
        "the signature of plugin `{plugin}` {version} (sha256 {digest}) {reason}, so it is not \
         loaded: sign the artifact's id, version and sha256 with a trusted key (or add the \
         publisher's public key to the host's trusted keys)"
    )]
    BadSignature {
        /// Plugin id.
        plugin: String,
        /// Its version.
        version: String,
        /// The artifact.
        digest: Digest,
        /// What is wrong with it.
        reason: &'static str,
    },

    /// No artifact with that digest is in the store.
    #[error("no artifact {digest} in the store: stage it first")]
    UnknownArtifact {
        /// The digest asked for.
        digest: Digest,
    },

    /// The artifact is a different plugin than the slot it was aimed at.
    #[error(
        "artifact {digest} is plugin `{found}`, not `{plugin}`: check the artifact you staged for `{plugin}`"
    )]
    WrongPlugin {
        /// The slot.
        plugin: String,
        /// The artifact's id.
        found: String,
        /// The artifact.
        digest: Digest,
    },

    /// No plugin with that id is loaded.
    #[error("no plugin `{plugin}` is loaded in this host: install it first")]
    NotLoaded {
        /// Plugin id.
        plugin: String,
    },

    /// Installing over a loaded plugin.
    #[error("plugin `{plugin}` is already loaded ({version}): swap to the new version instead")]
    AlreadyLoaded {
        /// Plugin id.
        plugin: String,
        /// The running version.
        version: String,
    },

    /// A step is in progress on the slot.
    #[error(
        "a step is in progress for `{plugin}` ({from} -> {to}): commit it or roll it back first"
    )]
    StepInProgress {
        /// Plugin id.
        plugin: String,
        /// Version before the step.
        from: String,
        /// Version after it.
        to: String,
    },

    /// Commit or rollback with no step in progress.
    #[error("no step is in progress for `{plugin}`: nothing to commit or roll back")]
    NoStepInProgress {
        /// Plugin id.
        plugin: String,
    },

    /// A change that would leave a running plugin's declared dependency unmet (boxed: rare,
    /// and keeps every `Result` small).
    #[error(transparent)]
    DependencyUnmet(Box<crate::dependencies::UnmetDependency>),

    /// A commit that asked for more calls served since the switch than there were.
    #[error(
        "`{plugin}`'s new version has served {served} calls since its switch, fewer than the \
         {wanted} this commit asks for: nothing was committed; ask again once it has (the step \
         stays pending, under its lease if it has one)"
    )]
    NotEnoughCalls {
        /// Plugin id.
        plugin: String,
        /// Calls served since the switch.
        served: u64,
        /// Calls the commit asked for.
        wanted: u64,
    },

    /// A switch whose `when` does not hold yet (the plugin served a call too recently, or is
    /// not flat), judged under the slot lock: nothing was applied, the step id is not spent.
    #[error(
        "`switch` of `{plugin}` not yet: {why}; nothing was applied: ask again with the same \
         step id"
    )]
    NotYet {
        /// Plugin id.
        plugin: String,
        /// What the switch waits for, and what the plugin is doing instead.
        why: String,
    },

    /// A change a restraint of the host forbids (a freeze, a hold, a version marked failed).
    #[error(
        "{}: `{operation}` of `{plugin}` was refused and nothing was applied; {}, or force this \
         change with a reason (`force`, recorded)",
        match restraint {
            Restraint::Freeze => format!("the host is frozen ({}, by {})", because.reason, because.by),
            Restraint::Hold => format!("`{plugin}` is held at its running version ({}, by {})", because.reason, because.by),
            Restraint::Failed | Restraint::Dependency => format!("`{plugin}` {} is marked failed ({})", version.as_deref().unwrap_or("?"), because.reason),
        },
        match restraint {
            Restraint::Freeze => "unfreeze the host when the freeze is over",
            Restraint::Hold => "release the hold first",
            Restraint::Failed | Restraint::Dependency => "clear the mark once the version is fixed (`clear_failed`)",
        }
    )]
    Restrained {
        /// The operation refused.
        operation: String,
        /// Plugin id.
        plugin: String,
        /// Which restraint: a freeze, a hold or a failed mark.
        restraint: Restraint,
        /// The version marked failed (for `failed`).
        version: Option<String>,
        /// Why, by whom, when it was set (boxed: rare, and keeps every `Result` small).
        because: Box<crate::restraints::Because>,
    },

    /// A restraint request that cannot be carried out as written.
    #[error("invalid restraint request: {reason}")]
    BadRestraint {
        /// What is wrong, and the fix.
        reason: String,
    },

    /// Another client holds the reconcile lease.
    #[error(
        "`{owner}` holds this host's reconcile lease (epoch {epoch}) for {expires_in_ms} ms more: \
         nothing was applied; wait for it, or if it crashed, let the lease expire or break it on \
         purpose (`POST /v1/lease` with `\"action\": \"break\"`, recorded)"
    )]
    LeaseHeld {
        /// The holder's name.
        owner: String,
        /// The holder's epoch.
        epoch: u64,
        /// How long the lease lasts unless renewed.
        expires_in_ms: u64,
    },

    /// A request carrying a lease epoch that is not the current holder's.
    #[error(
        "lease epoch {epoch} is not current ({}): nothing was applied; acquire the lease again, \
         observe the host again and plan again",
        match holder {
            Some((owner, current)) => format!("`{owner}` holds the lease at epoch {current}"),
            None => "no one holds the lease: it expired, was released or was broken".to_owned(),
        }
    )]
    StaleLeaseEpoch {
        /// The epoch the request carried.
        epoch: u64,
        /// The holder now and its epoch, if any.
        holder: Option<(String, u64)>,
    },

    /// A lease request that cannot be carried out as written.
    #[error("invalid lease request: {reason}")]
    BadLeaseRequest {
        /// What is wrong, and the fix.
        reason: String,
    },

    /// A commit or rollback naming a step that is not the pending one.
    #[error(
        "the pending step of `{plugin}` is {}, not `{step_id}`: commit or roll back only the step \
         you switched (its id is in `GET /v1/status`, under `pending`)",
        match pending {
            Some(id) => format!("`{id}`"),
            None => "one started in process, without a step id (only the host ends it)".to_owned(),
        }
    )]
    StepNotOwned {
        /// Plugin id.
        plugin: String,
        /// The step id the request named.
        step_id: String,
        /// The pending step's id, `None` when it was started in process.
        pending: Option<String>,
    },

    /// A retried switch (or install with a lease) whose step the host no longer holds.
    #[error(
        "step `{step_id}` {} `{plugin}`, but {}: the {operation} is not in effect; read \
         `GET /v1/status` and start a new step with a new step id",
        match *operation { "install" => "installed", _ => "switched" },
        match fate {
            crate::StepFate::RolledBack => "has been rolled back since",
            _ => "the host has no trace of it: it restarted since (a pending step does not \
                  survive a restart: what was committed runs)",
        }
    )]
    StepGone {
        /// Plugin id.
        plugin: String,
        /// What the step did: `switch`, or `install` (with a lease).
        operation: &'static str,
        /// The step id.
        step_id: String,
        /// What became of it.
        fate: crate::StepFate,
    },

    /// No declared migration between the versions.
    #[error(
        "`{plugin}` cannot go from {from} to {to}: {} does not declare `{field}` covering {} \
         ({declared}); go through an intermediate version that does",
        declarer_covered(.field, .from, .to).0, declarer_covered(.field, .from, .to).1
    )]
    NoMigration {
        /// Plugin id.
        plugin: String,
        /// Running version.
        from: String,
        /// Target version.
        to: String,
        /// `migrates_from` (up: declared by `to`) or `downgrades_to` (down: declared by
        /// `from`).
        field: &'static str,
        /// What the relevant version declares.
        declared: String,
    },

    /// Two builds of one version with different state schemas.
    #[error(
        "`{plugin}` {version} is running with state schema {running}, and the build to switch \
         to has state schema {target}: a switch within one version keeps the state as it is; \
         give the new build its own version (with a migration), or send migration rules"
    )]
    StateSchemaDiffers {
        /// Plugin id.
        plugin: String,
        /// The version both builds claim.
        version: String,
        /// The running build's state schema.
        running: u32,
        /// The target build's state schema.
        target: u32,
    },

    /// A plugin entry point failed or panicked.
    #[error("plugin `{plugin}` {version} failed in `{operation}`{}: {message}", if *.panicked { " (panic caught)" } else { "" })]
    Plugin {
        /// Plugin id.
        plugin: String,
        /// Plugin version.
        version: String,
        /// The entry point (`create`, `migrate`, `restore`, …).
        operation: &'static str,
        /// The plugin's message.
        message: String,
        /// Whether it was a caught panic.
        panicked: bool,
    },

    /// The plugin panicked in a call (caught): its instance's state is suspect.
    #[error(
        "plugin `{plugin}` {version} is faulted: it panicked in call #{seq} ({message}), so its \
         state is suspect; swap to a fixed version or reinstall it"
    )]
    Faulted {
        /// Plugin id.
        plugin: String,
        /// Plugin version.
        version: String,
        /// The call that panicked.
        seq: u64,
        /// Its panic message.
        message: String,
    },

    /// A migrated document is not `{config, state}`.
    #[error(
        "plugin `{plugin}` {version} returned a migration document that is not `{{config, state}}` JSON: {reason}"
    )]
    BadMigrationOutput {
        /// Plugin id.
        plugin: String,
        /// The version that migrated.
        version: String,
        /// The parse error.
        reason: String,
    },

    /// A state snapshot does not match its checksum or its plugin.
    #[error("state snapshot for `{plugin}` does not verify: {reason}; it was not restored")]
    BadSnapshot {
        /// Plugin id.
        plugin: String,
        /// What did not match.
        reason: String,
    },

    /// Verification before the switch failed; nothing live was touched.
    #[error("verification of `{plugin}` {version} failed, the running version keeps serving: {}", .report.summary())]
    VerificationFailed {
        /// Plugin id.
        plugin: String,
        /// The version that failed.
        version: String,
        /// What was checked and what failed.
        report: Box<VerifyReport>,
    },

    /// The step was switched, then rolled back by the host (health failed after the switch).
    #[error("`{plugin}` {version} was switched in, then rolled back: {}", .report.reason)]
    RolledBack {
        /// Plugin id.
        plugin: String,
        /// The version rolled back.
        version: String,
        /// How the rollback went.
        report: Box<RollbackReport>,
    },

    /// A declarative migration rule did not fit the document.
    #[error(
        "migrating `{plugin}` from {from} to {to}: {error}; fix the rule for this state schema"
    )]
    MigrationRule {
        /// Plugin id.
        plugin: String,
        /// Running version.
        from: String,
        /// Target version.
        to: String,
        /// Which rule failed and why (boxed: it is rare, and keeps every `Result` small).
        error: Box<crate::rules::RuleError>,
    },

    /// A step id already used for another request of the same operation.
    #[error(
        "step id `{step_id}` was already used for a different `{operation}` request: a retry must \
         send the same request; give a new step a new step id"
    )]
    StepIdReused {
        /// The step id.
        step_id: String,
        /// The operation.
        operation: String,
    },

    /// A step id that cannot name a file in the store.
    #[error(
        "step id `{step_id}` is not usable: use 1 to 128 letters, digits, `.`, `_` or `-`, not \
         starting with `.`"
    )]
    BadStepId {
        /// The step id received.
        step_id: String,
    },

    /// The new version panicked replaying a call during the swap's catch-up.
    #[error(
        "plugin `{plugin}` {version} panicked replaying call #{seq} during the swap ({message}); \
         the swap was abandoned and the running version keeps serving: fix the new version"
    )]
    SwapPanicked {
        /// Plugin id.
        plugin: String,
        /// The version swapped to.
        version: String,
        /// The call it panicked in.
        seq: u64,
        /// Its panic message.
        message: String,
    },

    /// A step journal larger than the host allows.
    #[error(
        "a journal of {requested} calls for `{plugin}` is more than this host keeps ({max}): \
         ask for at most {max}, and commit sooner"
    )]
    JournalTooLarge {
        /// Plugin id.
        plugin: String,
        /// The capacity asked for.
        requested: usize,
        /// The most allowed.
        max: usize,
    },

    /// A plugin id that is not a plain lowercase name.
    #[error(
        "plugin id `{id}` is not valid: use a lowercase letter, then up to 63 lowercase \
         letters, digits or `_` (like `ma_cross`); it was not loaded"
    )]
    BadPluginId {
        /// The id found (control characters escaped).
        id: String,
    },

    /// A metadata string that holds control characters.
    #[error(
        "plugin `{plugin}` has a control character in its metadata field `{field}`; it was not \
         opened: rebuild it without one"
    )]
    ControlCharacter {
        /// Plugin id (escaped).
        plugin: String,
        /// The field.
        field: &'static str,
    },

    /// A config that is not JSON (or not an object).
    #[error("config for `{plugin}` is not valid JSON: {reason}")]
    BadConfig {
        /// Plugin id.
        plugin: String,
        /// The parse error.
        reason: String,
    },
}

/// For [`HostError::NoMigration`]: the version whose `field` would have to declare the change
/// (the target going up, the running version going down), and the version it would cover.
pub(crate) fn declarer_covered<'a>(field: &str, from: &'a str, to: &'a str) -> (&'a str, &'a str) {
    if field == "downgrades_to" {
        (from, to)
    } else {
        (to, from)
    }
}

impl HostError {
    /// Whether this is a refusal that a change elsewhere lifts (a freeze lifted, a hold
    /// released, a failed mark cleared, a dependency installed first, more calls served):
    /// nothing was applied, and the same step may go once it is, so it does not spend a step id.
    pub fn lifted_elsewhere(&self) -> bool {
        matches!(
            self,
            HostError::Restrained { .. }
                | HostError::DependencyUnmet(_)
                | HostError::NotEnoughCalls { .. }
                | HostError::NotYet { .. }
        )
    }

    /// A stable, machine-readable code for the error (the control API's `code`).
    pub fn code(&self) -> &'static str {
        match self {
            HostError::Io { .. } => "io",
            HostError::DigestMismatch { .. } => "digest_mismatch",
            HostError::BadArtifactName { .. } => "bad_artifact_name",
            HostError::NotALibrary { .. } => "not_a_library",
            HostError::NoMetadata { .. } => "no_metadata",
            HostError::BadMetadata { .. } => "bad_metadata",
            HostError::AbiMismatch { .. } => "abi_mismatch",
            HostError::AbiTooOld { .. } => "abi_too_old",
            HostError::PanicAbort { .. } => "panic_abort",
            HostError::FrameworkMismatch { .. } => "framework_mismatch",
            HostError::BadVersion { .. } => "bad_version",
            HostError::Load { .. } => "load_failed",
            HostError::ResidentCap { .. } => "resident_cap",
            HostError::InsecureStore { .. } => "insecure_store",
            HostError::KeysUnreadable { .. } => "keys_unreadable",
            HostError::BadKey { .. } => "bad_key",
            HostError::NoTrustedKeys { .. } => "no_trusted_keys",
            HostError::SignatureName { .. } => "bad_artifact_name",
            HostError::Unsigned { .. } => "signature_required",
            HostError::BadSignature { .. } => "bad_signature",
            HostError::UnknownArtifact { .. } => "unknown_artifact",
            HostError::WrongPlugin { .. } => "wrong_plugin",
            HostError::NotLoaded { .. } => "not_loaded",
            HostError::AlreadyLoaded { .. } => "already_loaded",
            HostError::StepInProgress { .. } => "step_in_progress",
            HostError::NoStepInProgress { .. } => "no_step_in_progress",
            HostError::StepNotOwned { .. } => "step_not_owned",
            HostError::LeaseHeld { .. } => "lease_held",
            HostError::Restrained { restraint, .. } => match restraint {
                Restraint::Freeze => "frozen",
                Restraint::Hold => "held",
                Restraint::Failed | Restraint::Dependency => "version_failed",
            },
            HostError::BadRestraint { .. } => "bad_restraint",
            HostError::NotEnoughCalls { .. } => "not_enough_calls",
            HostError::NotYet { .. } => "not_yet",
            HostError::DependencyUnmet(_) => "dependency_unmet",
            HostError::StaleLeaseEpoch { .. } => "stale_lease_epoch",
            HostError::BadLeaseRequest { .. } => "bad_lease_request",
            HostError::StepGone { .. } => "step_gone",
            HostError::NoMigration { .. } => "no_migration",
            HostError::Plugin { .. } => "plugin_failed",
            HostError::BadMigrationOutput { .. } => "bad_migration_output",
            HostError::BadSnapshot { .. } => "bad_snapshot",
            HostError::VerificationFailed { .. } => "verification_failed",
            HostError::RolledBack { .. } => "rolled_back",
            HostError::BadConfig { .. } => "bad_config",
            HostError::Faulted { .. } => "faulted",
            HostError::BadStepId { .. } => "bad_step_id",
            HostError::StepIdReused { .. } => "step_id_reused",
            HostError::MigrationRule { .. } => "migration_rule",
            HostError::SwapPanicked { .. } => "swap_panicked",
            HostError::StateSchemaDiffers { .. } => "state_schema_differs",
            HostError::JournalTooLarge { .. } => "journal_too_large",
            HostError::BadPluginId { .. } => "bad_plugin_id",
            HostError::ControlCharacter { .. } => "control_character",
        }
    }
}

/// Builds [`HostError::Io`] for `action` on `path`, for `map_err`.
pub(crate) fn io(
    action: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> HostError {
    let path = path.to_owned();
    move |source| HostError::Io {
        action,
        path,
        source,
    }
}

/// Result alias of the host runtime.
pub type Result<T, E = HostError> = std::result::Result<T, E>;
