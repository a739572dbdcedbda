//! `plugsync inspect`: a built plugin's metadata, read from the file without running it.

use std::fmt::Write as _;
use std::path::Path;

use crate::error::Result;

/// How `inspect` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InspectFormat {
    /// Aligned `key: value` lines.
    #[default]
    Text,
    /// The metadata as JSON.
    Json,
}

/// Reads a plugin library's metadata (no plugin code runs) and renders it.
pub fn inspect(library: &Path, format: InspectFormat) -> Result<String> {
    let metadata = plugsync_host::inspect(library)?;
    let digest =
        plugsync_host::Digest::of(&std::fs::read(library).map_err(|source| crate::Error::Io {
            action: "read",
            path: library.to_owned(),
            source,
        })?);
    if format == InspectFormat::Json {
        let mut value = serde_json::to_value(&metadata).expect("metadata serialises");
        value["sha256"] = serde_json::Value::String(digest.to_string());
        return Ok(serde_json::to_string_pretty(&value).expect("JSON serialises") + "\n");
    }
    let list = |items: &[String]| {
        if items.is_empty() {
            "-".to_owned()
        } else {
            items.join(" | ")
        }
    };
    let dependencies: Vec<String> = metadata
        .dependencies
        .iter()
        .map(|(id, req)| format!("{id} {req}"))
        .collect();
    let mut out = String::new();
    let rows = [
        ("id", metadata.id.clone()),
        ("version", metadata.version.clone()),
        ("kind", metadata.kind.clone()),
        ("sha256", digest.to_string()),
        ("abi", format!("{}.{}", metadata.abi, metadata.abi_minor)),
        ("framework", metadata.framework.clone()),
        ("state schema", metadata.state_schema.to_string()),
        ("dependencies", list(&dependencies)),
        ("migrates from", list(&metadata.migrates_from)),
        ("downgrades to", list(&metadata.downgrades_to)),
        ("panic", metadata.build.panic.clone()),
        (
            "built with",
            format!(
                "plugsync-plugin {}, rustc {}",
                metadata.build.sdk, metadata.build.rustc
            ),
        ),
    ];
    for (key, value) in rows {
        let _ = writeln!(out, "{key:>14}: {value}");
    }
    Ok(out)
}
