//! `plugsync publish`, `promote`, `yank` and `keygen`: a plugin author's side of a registry.

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::registry::{DirectoryRegistry, keygen as write_key_pair, read_signing_key};
use crate::spec::model::Channel;

/// What `publish` is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishOptions {
    /// The built library.
    pub library: PathBuf,
    /// The registry directory.
    pub registry: PathBuf,
    /// The channel to publish on.
    pub channel: Channel,
    /// A private key from `plugsync keygen`, to sign with.
    pub sign_key: Option<PathBuf>,
    /// A JSON file of declarative migrations to publish with the version.
    pub migrations: Option<PathBuf>,
}

/// Publishes a built library; returns the line to print.
pub fn publish(options: &PublishOptions) -> Result<String> {
    let key = options
        .sign_key
        .as_deref()
        .map(read_signing_key)
        .transpose()?;
    let migrations = match &options.migrations {
        Some(path) => {
            let text =
                std::fs::read_to_string(path).map_err(|e| crate::registry::RegistryError::Io {
                    action: "read",
                    path: path.clone(),
                    source: e,
                })?;
            serde_json::from_str(&text).map_err(|e| {
                crate::registry::RegistryError::BadMigrations {
                    path: path.clone(),
                    reason: e.to_string(),
                }
            })?
        }
        None => Vec::new(),
    };
    let registry = DirectoryRegistry::new(&options.registry);
    let published =
        registry.publish_with(&options.library, options.channel, key.as_ref(), migrations)?;
    Ok(match published.new {
        true => format!(
            "published {} {} on `{}` (sha256 {}){}\n",
            published.plugin,
            published.version,
            published.channel.name(),
            published.sha256,
            if published.signed {
                ", signed"
            } else {
                ", unsigned"
            }
        ),
        false => format!(
            "{} {} is already published on `{}` with these bytes: nothing to do\n",
            published.plugin,
            published.version,
            published.channel.name()
        ),
    })
}

/// Moves a published version to another channel; returns the line to print.
pub fn promote(registry: &Path, plugin: &str, version: &str, channel: Channel) -> Result<String> {
    let was = DirectoryRegistry::new(registry).promote(plugin, version, channel)?;
    Ok(match was == channel {
        true => format!("{plugin} {version} is already on `{}`\n", channel.name()),
        false => format!(
            "{plugin} {version}: `{}` -> `{}`\n",
            was.name(),
            channel.name()
        ),
    })
}

/// Withdraws a version from resolution (or, with `undo`, restores it); returns the line to
/// print.
pub fn yank(registry: &Path, plugin: &str, version: &str, undo: bool) -> Result<String> {
    let was = DirectoryRegistry::new(registry).yank(plugin, version, !undo)?;
    Ok(match (undo, was) {
        (false, false) => format!(
            "yanked {plugin} {version}: resolution skips it (a lock that names it still \
             installs it)\n"
        ),
        (false, true) => format!("{plugin} {version} was already yanked\n"),
        (true, true) => format!("{plugin} {version} is resolvable again\n"),
        (true, false) => format!("{plugin} {version} was not yanked\n"),
    })
}

/// Writes a signing key pair; returns the lines to print.
pub fn keygen(name: &Path) -> Result<String> {
    let pair = write_key_pair(name)?;
    Ok(format!(
        "wrote {} (the private key, 0600: sign with `plugsync publish --sign-key {}`)\nwrote {} \
         (the public key {}: add its line to a host's `--trusted-keys` file)\n",
        pair.private.display(),
        pair.private.display(),
        pair.public.display(),
        pair.public_hex
    ))
}
