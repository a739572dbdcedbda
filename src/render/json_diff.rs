//! What changed between two JSON documents, as changed paths: short enough for a plan, where a
//! state of 50 instruments that each gain a field reads as one line.
//!
//! Leaves are compared path by path (`/instruments/ES/position`); arrays of equal length
//! element by element, others as a whole. Paths that differ in one segment only and change the
//! same way (`/instruments/ES/notional` added, `/instruments/NQ/notional` added…) are grouped
//! under a `*` once [`GROUP_AT_LEAST`] of them do.

use std::collections::BTreeMap;

use serde_json::Value;

/// How many paths alike make a group.
pub const GROUP_AT_LEAST: usize = 3;

/// How one leaf changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Edit {
    /// Only in the second document.
    Added(Value),
    /// Only in the first.
    Removed(Value),
    /// In both, different.
    Changed(Value, Value),
    /// Only in the first under this name, and only in the second under `to` (a sibling),
    /// with the same value: a renamed field.
    Renamed {
        /// The new name.
        to: String,
        /// The value both hold.
        value: Value,
    },
}

impl Edit {
    fn kind(&self) -> &'static str {
        match self {
            Edit::Added(_) => "added",
            Edit::Removed(_) => "removed",
            Edit::Changed(..) => "changed",
            Edit::Renamed { .. } => "renamed",
        }
    }
}

/// One line of a summary: a path (or a group of paths) and how it changed.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    /// `/a/b`, or `/instruments/*/notional` for a group.
    pub path: String,
    /// How.
    pub edit: Edit,
    /// For a group: how many paths, and the first one's key in place of the `*`.
    pub group: Option<(usize, String)>,
}

/// Every leaf that differs from `before` to `after`, in document order; a field removed and
/// a sibling added with the same value (and no other sibling added with it) is one rename.
pub fn edits(before: &Value, after: &Value) -> Vec<(Vec<String>, Edit)> {
    let mut out = Vec::new();
    walk(&mut Vec::new(), before, after, &mut out);
    renames(out)
}

fn renames(edits: Vec<(Vec<String>, Edit)>) -> Vec<(Vec<String>, Edit)> {
    let parent = |path: &[String]| path[..path.len().saturating_sub(1)].to_vec();
    let added = |edits: &[(Vec<String>, Edit)], path: &[String], value: &Value| -> Vec<usize> {
        (edits.iter().enumerate())
            .filter(|(_, (p, e))| {
                !p.is_empty()
                    && parent(p) == parent(path)
                    && matches!(e, Edit::Added(v) if v == value)
            })
            .map(|(i, _)| i)
            .collect()
    };
    let mut taken = vec![false; edits.len()];
    let mut out = Vec::with_capacity(edits.len());
    for (i, (path, edit)) in edits.iter().enumerate() {
        if taken[i] {
            continue;
        }
        if let Edit::Removed(value) = edit
            && !path.is_empty()
            && let [only] = added(&edits, path, value)[..]
            && !taken[only]
        {
            let removed_alike = (edits.iter())
                .filter(|(p, e)| {
                    parent(p) == parent(path) && matches!(e, Edit::Removed(v) if v == value)
                })
                .count();
            if removed_alike == 1 {
                taken[only] = true;
                let to = edits[only].0.last().cloned().unwrap_or_default();
                out.push((
                    path.clone(),
                    Edit::Renamed {
                        to,
                        value: value.clone(),
                    },
                ));
                continue;
            }
        }
        out.push((path.clone(), edit.clone()));
    }
    out
}

fn walk(path: &mut Vec<String>, before: &Value, after: &Value, out: &mut Vec<(Vec<String>, Edit)>) {
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, old) in a {
                path.push(key.clone());
                match b.get(key) {
                    Some(new) => walk(path, old, new, out),
                    None => out.push((path.clone(), Edit::Removed(old.clone()))),
                }
                path.pop();
            }
            for (key, new) in b.iter().filter(|(key, _)| !a.contains_key(*key)) {
                path.push(key.clone());
                out.push((path.clone(), Edit::Added(new.clone())));
                path.pop();
            }
        }
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (old, new)) in a.iter().zip(b).enumerate() {
                path.push(i.to_string());
                walk(path, old, new, out);
                path.pop();
            }
        }
        (old, new) if old != new => {
            out.push((path.clone(), Edit::Changed(old.clone(), new.clone())))
        }
        _ => {}
    }
}

/// The edits from `before` to `after`, grouped (see the module docs).
pub fn summary(before: &Value, after: &Value) -> Vec<Line> {
    let edits = edits(before, after);
    let mut grouped = vec![false; edits.len()];
    let mut lines: Vec<(usize, Line)> = Vec::new();
    loop {
        // The largest group left: (template, kind) → member indices.
        let mut groups: BTreeMap<(Vec<String>, &'static str), Vec<usize>> = BTreeMap::new();
        for (i, (path, edit)) in edits.iter().enumerate().filter(|(i, _)| !grouped[*i]) {
            // A leaf's own name stays: only the keys of a map above it are grouped (the
            // instruments of a state, not the fields of one).
            for j in 0..path.len().saturating_sub(1) {
                let mut template = path.clone();
                template[j] = "*".to_owned();
                groups.entry((template, edit.kind())).or_default().push(i);
            }
        }
        let Some(((template, _), members)) = groups
            .into_iter()
            .filter(|(_, members)| members.len() >= GROUP_AT_LEAST)
            .max_by_key(|(_, members)| members.len())
        else {
            break;
        };
        let first = members[0];
        let star = template.iter().position(|s| s == "*").unwrap_or(0);
        let (path, edit) = &edits[first];
        lines.push((
            first,
            Line {
                path: pointer(&template),
                edit: edit.clone(),
                group: Some((members.len(), path.get(star).cloned().unwrap_or_default())),
            },
        ));
        for member in members {
            grouped[member] = true;
        }
    }
    for (i, (path, edit)) in edits.iter().enumerate().filter(|(i, _)| !grouped[*i]) {
        lines.push((
            i,
            Line {
                path: pointer(path),
                edit: edit.clone(),
                group: None,
            },
        ));
    }
    lines.sort_by_key(|(first, _)| *first);
    lines.into_iter().map(|(_, line)| line).collect()
}

fn pointer(path: &[String]) -> String {
    if path.is_empty() {
        return "/".to_owned();
    }
    path.iter().map(|s| format!("/{s}")).collect()
}

/// A JSON value in at most `max` characters (`…` where cut).
pub fn abridged(value: &Value, max: usize) -> String {
    let text = value.to_string();
    if text.chars().count() <= max {
        return text;
    }
    let cut: String = text.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn render(lines: &[Line]) -> Vec<String> {
        lines
            .iter()
            .map(|line| {
                let edit = match &line.edit {
                    Edit::Added(v) => format!("+ {v}"),
                    Edit::Removed(v) => format!("- {v}"),
                    Edit::Changed(a, b) => format!("{a} -> {b}"),
                    Edit::Renamed { to, value } => format!("renamed {to} ({value})"),
                };
                match &line.group {
                    Some((n, first)) => format!("{} {edit} ({n}, first {first})", line.path),
                    None => format!("{} {edit}", line.path),
                }
            })
            .collect()
    }

    #[test]
    fn leaves_are_compared_path_by_path_and_alike_paths_grouped() {
        let cases = [
            ("equal documents", json!({"a": 1}), json!({"a": 1}), vec![]),
            (
                "a field removed and a sibling added with its value is a rename",
                json!({"fast_ma_period": 5, "slow_ma_period": 20}),
                json!({"fast_period": 5, "slow_period": 20, "signal_threshold": 0.01}),
                vec![
                    "/fast_ma_period renamed fast_period (5)",
                    "/slow_ma_period renamed slow_period (20)",
                    "/signal_threshold + 0.01",
                ],
            ),
            (
                "two removed with one value and one added with it stay apart",
                json!({"a": 1, "b": 1}),
                json!({"c": 1}),
                vec!["/a - 1", "/b - 1", "/c + 1"],
            ),
            (
                "three instruments gaining a field make one group",
                json!({"i": {"ES": {"p": 1}, "NQ": {"p": 2}, "CL": {"p": 3}}}),
                json!({"i": {"ES": {"p": 1, "n": 10}, "NQ": {"p": 2, "n": 20}, "CL": {"p": 3, "n": 30}}}),
                vec!["/i/*/n + 30 (3, first CL)"],
            ),
            (
                "three fields added at one level stay apart: a leaf's name is not grouped",
                json!({"a": 1}),
                json!({"a": 1, "x": 1, "y": 1, "z": 1}),
                vec!["/x + 1", "/y + 1", "/z + 1"],
            ),
            (
                "two alike paths stay apart",
                json!({"i": {"ES": {"p": 1}, "NQ": {"p": 2}}}),
                json!({"i": {"ES": {"p": 5}, "NQ": {"p": 6}}}),
                vec!["/i/ES/p 1 -> 5", "/i/NQ/p 2 -> 6"],
            ),
            (
                "arrays of another length change whole",
                json!({"closes": [1, 2]}),
                json!({"closes": [1, 2, 3]}),
                vec!["/closes [1,2] -> [1,2,3]"],
            ),
        ];
        for (name, before, after, expected) in cases {
            assert_eq!(render(&summary(&before, &after)), expected, "{name}");
        }
    }

    #[test]
    fn abridged_values_end_with_an_ellipsis() {
        assert_eq!(abridged(&json!([1, 2, 3]), 20), "[1,2,3]");
        assert_eq!(abridged(&json!("abcdefgh"), 5), "\"abc…");
    }
}
