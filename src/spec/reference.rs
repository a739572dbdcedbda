//! `docs/plugins-yaml.md`, the format's reference, written from the JSON Schema's descriptions
//! (which are the model's doc comments): one place says what each key means.

use std::fmt::Write as _;

use serde_json::Value;

/// The sections first, in the order a file holds them.
const READING_ORDER: &[&str] = &[
    "Metadata",
    "Spec",
    "Registry",
    "HostTarget",
    "Policy",
    "Window",
    "Defaults",
    "PluginSpec",
    "Strategy",
    "Compare",
    "Verify",
    "Probe",
    "ProbeStep",
    "Soak",
    "Update",
    "Migration",
    "MigrationRule",
];

/// The reference as Markdown.
pub fn reference_markdown() -> String {
    let schema = super::schema();
    let mut out = String::new();
    out.push_str(
        "# plugins.yaml reference\n\n\
         <!-- Written by `plugsync::spec::reference_markdown` from the JSON Schema \
         (`schemas/plugins.schema.json`); refresh with `PLUGSYNC_BLESS=1 cargo test --test \
         plugins_yaml`. -->\n\n\
         A `plugins.yaml` is one YAML document. Editors that speak the YAML language server \
         check it as you type with its first line:\n\n\
         ```yaml\n# yaml-language-server: $schema=../../schemas/plugins.schema.json\n```\n\n\
         `plugsync validate -f plugins.yaml` runs every check, and reports every error at once \
         with its `file:line:column` and the fix. Anchors, aliases and tags are refused (share \
         settings with `spec.defaults` or `spec.extends`); a key given as `null` (or with no \
         value) counts as absent. Examples: `examples/desired-state/`.\n\n",
    );
    section(&mut out, "The file", &schema);
    let definitions = schema["$defs"].as_object().cloned().unwrap_or_default();
    // Top-down, as a reader meets them in a file; then the small types, by name.
    let mut names: Vec<&String> = definitions.keys().collect();
    names.sort_by_key(|name| {
        let at = READING_ORDER.iter().position(|n| n == name);
        (at.unwrap_or(READING_ORDER.len()), (*name).clone())
    });
    for name in names {
        section(&mut out, name, &definitions[name]);
    }
    out
}

/// One object (a table of its keys), enumeration (its values) or union (each variant).
fn section(out: &mut String, name: &str, definition: &Value) {
    let _ = writeln!(out, "## {name}\n");
    if let Some(description) = definition["description"].as_str() {
        let _ = writeln!(out, "{}\n", one_paragraph(description));
    }
    if definition.get("properties").is_some() {
        table(out, definition);
    } else if let Some(variants) = definition["oneOf"].as_array() {
        let constants = variants.iter().all(|v| v.get("const").is_some());
        if constants {
            let _ = writeln!(out, "| value | meaning |\n| --- | --- |");
            for variant in variants {
                let _ = writeln!(
                    out,
                    "| `{}` | {} |",
                    variant["const"].as_str().unwrap_or_default(),
                    cell(variant["description"].as_str().unwrap_or_default())
                );
            }
            out.push('\n');
        } else {
            for variant in variants {
                let tag = variant["properties"]
                    .as_object()
                    .and_then(|p| p.iter().find(|(_, v)| v.get("const").is_some()))
                    .map(|(key, v)| format!("`{key}: {}`", v["const"].as_str().unwrap_or("")))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "### {tag}\n\n{}\n",
                    one_paragraph(variant["description"].as_str().unwrap_or_default())
                );
                table(out, variant);
            }
        }
    } else if let Some(pattern) = definition["pattern"].as_str() {
        let _ = writeln!(out, "A string matching `{pattern}`.\n");
    }
}

fn table(out: &mut String, object: &Value) {
    let required: Vec<&str> = object["required"]
        .as_array()
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "| key | type | required | meaning |\n| --- | --- | --- | --- |"
    );
    for (key, property) in object["properties"].as_object().into_iter().flatten() {
        if property.get("const").is_some() {
            continue;
        }
        let _ = writeln!(
            out,
            "| `{key}` | {} | {} | {} |",
            type_of(property),
            if required.contains(&key.as_str()) {
                "yes"
            } else {
                ""
            },
            cell(property["description"].as_str().unwrap_or_default())
        );
    }
    out.push('\n');
}

/// A property's type, with links to the sections of named types.
fn type_of(property: &Value) -> String {
    if let Some(reference) = property["$ref"].as_str() {
        let name = reference.rsplit('/').next().unwrap_or(reference);
        return format!("[{name}](#{})", name.to_lowercase());
    }
    if let Some(options) = property["anyOf"].as_array() {
        let kinds: Vec<String> = options
            .iter()
            .filter(|o| o["type"] != "null")
            .map(type_of)
            .collect();
        return kinds.join(" or ");
    }
    match property["type"].as_str() {
        Some("array") => format!("list of {}", type_of(&property["items"])),
        Some("object") => match property.get("additionalProperties") {
            Some(values) if values.is_object() => format!("map of {}", type_of(values)),
            _ => "mapping".to_owned(),
        },
        Some(kind) => kind.to_owned(),
        None => match property["type"].as_array() {
            Some(kinds) => {
                let kinds: Vec<&str> = kinds
                    .iter()
                    .filter_map(Value::as_str)
                    .filter(|k| *k != "null")
                    .collect();
                kinds.join(" or ")
            }
            None => "any".to_owned(),
        },
    }
}

/// A description as one paragraph (doc comments wrap lines).
fn one_paragraph(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A description for a table cell.
fn cell(text: &str) -> String {
    one_paragraph(text).replace('|', "\\|")
}
