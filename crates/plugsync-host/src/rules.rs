//! Declarative migrations: rules an operator sends with a switch instead of relying on the
//! plugin's own `migrate`, applied in order to the `{"config": …, "state": …}` document.
//!
//! Paths are JSON Pointers (RFC 6901) into that document, where a segment `*` stands for every
//! member of an object (or element of an array), so per-instrument fields can be moved too:
//!
//! ```json
//! [
//!   {"op": "rename",  "from": "/state/fast_ma_period", "to": "/state/fast_period"},
//!   {"op": "default", "path": "/state/signal_threshold", "value": 0.01},
//!   {"op": "remove",  "path": "/state/instruments/*/legacy"}
//! ]
//! ```
//!
//! Rules are strict: a `rename` or `remove` of a path that is not there is an error naming the
//! rule, so a rule written for another schema fails before anything is switched. A `*` that
//! matches nothing matches nothing (an empty map of instruments is fine).

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One rule of a declarative migration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "control-api", derive(schemars::JsonSchema))]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum MigrationRule {
    /// Moves a value to another key (the `*`s of `to` take what those of `from` matched).
    Rename {
        /// Where the value is.
        from: String,
        /// Where it goes.
        to: String,
    },
    /// Sets a value, replacing any there.
    Set {
        /// Where.
        path: String,
        /// The value.
        value: Value,
    },
    /// Sets a value where there is none.
    Default {
        /// Where.
        path: String,
        /// The value.
        value: Value,
    },
    /// Removes a value.
    Remove {
        /// Where.
        path: String,
    },
}

impl fmt::Display for MigrationRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MigrationRule::Rename { from, to } => write!(f, "rename `{from}` to `{to}`"),
            MigrationRule::Set { path, value } => write!(f, "set `{path}` to {value}"),
            MigrationRule::Default { path, value } => write!(f, "default `{path}` to {value}"),
            MigrationRule::Remove { path } => write!(f, "remove `{path}`"),
        }
    }
}

/// A rule that could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("migration rule {index} ({rule}) cannot be applied: {reason}")]
pub struct RuleError {
    /// Its position in the list, from 1.
    pub index: usize,
    /// The rule.
    pub rule: String,
    /// Why.
    pub reason: String,
}

/// A parsed pointer: its segments, `None` for a `*`.
type Pattern = Vec<Option<String>>;

/// A concrete path a pattern matched, and what each of its `*`s matched.
type Match = (Vec<String>, Vec<String>);

fn parse(pointer: &str) -> Result<Pattern, String> {
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| format!("`{pointer}` is not a JSON pointer: it must start with `/`"))?;
    Ok(rest
        .split('/')
        .map(|segment| match segment {
            "*" => None,
            _ => Some(segment.replace("~1", "/").replace("~0", "~")),
        })
        .collect())
}

fn show(path: &[String]) -> String {
    path.iter()
        .map(|s| format!("/{}", s.replace('~', "~0").replace('/', "~1")))
        .collect()
}

fn child<'a>(value: &'a Value, key: &str) -> Option<&'a Value> {
    match value {
        Value::Object(map) => map.get(key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
        _ => None,
    }
}

fn child_mut<'a>(value: &'a mut Value, key: &str) -> Option<&'a mut Value> {
    match value {
        Value::Object(map) => map.get_mut(key),
        Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
        _ => None,
    }
}

/// Every concrete path the pattern matches, with what each `*` matched. A concrete segment
/// that is missing is an error; a `*` over an empty container matches nothing.
fn expand(doc: &Value, pattern: &[Option<String>]) -> Result<Vec<Match>, String> {
    let mut found = vec![(Vec::new(), Vec::new(), doc)];
    for segment in pattern {
        let mut next = Vec::new();
        for (path, stars, value) in found {
            match segment {
                Some(key) => match child(value, key) {
                    Some(inner) => {
                        let mut path = path.clone();
                        path.push(key.clone());
                        next.push((path, stars.clone(), inner));
                    }
                    None => {
                        return Err(format!(
                            "`{}` does not exist",
                            show(&[path, vec![key.clone()]].concat())
                        ));
                    }
                },
                None => {
                    let members: Vec<(String, &Value)> = match value {
                        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
                        Value::Array(items) => items
                            .iter()
                            .enumerate()
                            .map(|(i, v)| (i.to_string(), v))
                            .collect(),
                        _ => {
                            return Err(format!(
                                "`{}` is not an object or array, so `*` cannot go through it",
                                show(&path)
                            ));
                        }
                    };
                    for (key, inner) in members {
                        let (mut path, mut stars) = (path.clone(), stars.clone());
                        path.push(key.clone());
                        stars.push(key);
                        next.push((path, stars, inner));
                    }
                }
            }
        }
        found = next;
    }
    Ok(found
        .into_iter()
        .map(|(path, stars, _)| (path, stars))
        .collect())
}

/// The container at `parent`, which must exist (concrete path).
fn container<'a>(doc: &'a mut Value, parent: &[String]) -> Result<&'a mut Value, String> {
    let mut value = doc;
    for (i, key) in parent.iter().enumerate() {
        value = child_mut(value, key)
            .ok_or_else(|| format!("`{}` does not exist", show(&parent[..=i])))?;
    }
    Ok(value)
}

fn take(doc: &mut Value, path: &[String]) -> Result<Value, String> {
    let (last, parent) = path
        .split_last()
        .ok_or("the whole document cannot be moved")?;
    match container(doc, parent)? {
        Value::Object(map) => map
            .remove(last)
            .ok_or_else(|| format!("`{}` does not exist", show(path))),
        Value::Array(items) => match last.parse::<usize>() {
            Ok(i) if i < items.len() => Ok(items.remove(i)),
            _ => Err(format!("`{}` does not exist", show(path))),
        },
        _ => Err(format!("`{}` is not inside an object or array", show(path))),
    }
}

fn put(doc: &mut Value, path: &[String], value: Value, replace: bool) -> Result<(), String> {
    let (last, parent) = path
        .split_last()
        .ok_or("the whole document cannot be replaced")?;
    match container(doc, parent)? {
        Value::Object(map) => {
            if replace || !map.contains_key(last) {
                map.insert(last.clone(), value);
            }
            Ok(())
        }
        _ => Err(format!(
            "`{}` is not an object, so `{last}` cannot be set in it",
            show(parent)
        )),
    }
}

/// Substitutes what `from`'s stars matched into `to`'s stars.
fn fill(to: &[Option<String>], stars: &[String]) -> Result<Vec<String>, String> {
    let mut stars = stars.iter();
    let path: Option<Vec<String>> = to
        .iter()
        .map(|segment| segment.clone().or_else(|| stars.next().cloned()))
        .collect();
    match (path, stars.next()) {
        (Some(path), None) => Ok(path),
        _ => Err("`from` and `to` must have as many `*` segments".to_owned()),
    }
}

fn apply_one(rule: &MigrationRule, doc: &mut Value) -> Result<(), String> {
    match rule {
        MigrationRule::Rename { from, to } => {
            let (from, to) = (parse(from)?, parse(to)?);
            if from.iter().filter(|s| s.is_none()).count()
                != to.iter().filter(|s| s.is_none()).count()
            {
                return Err("`from` and `to` must have as many `*` segments".to_owned());
            }
            for (path, stars) in expand(doc, &from)? {
                let target = fill(&to, &stars)?;
                let value = take(doc, &path)?;
                put(doc, &target, value, true)?;
            }
            Ok(())
        }
        MigrationRule::Set { path, value } | MigrationRule::Default { path, value } => {
            let mut pattern = parse(path)?;
            let last = pattern
                .pop()
                .flatten()
                .ok_or("the last segment of the path must be a key, not `*`")?;
            let replace = matches!(rule, MigrationRule::Set { .. });
            for (mut parent, _) in expand(doc, &pattern)? {
                parent.push(last.clone());
                put(doc, &parent, value.clone(), replace)?;
            }
            Ok(())
        }
        MigrationRule::Remove { path } => {
            for (path, _) in expand(doc, &parse(path)?)? {
                take(doc, &path)?;
            }
            Ok(())
        }
    }
}

/// Applies `rules` in order to a `{"config": …, "state": …}` document and returns the migrated
/// one; `doc` is left untouched, and the first rule that does not fit is the error.
///
/// This is what a switch sent with migration rules runs on the running config and state, so a
/// client can check its rules against a state it read (`GET /v1/status?with_state=true`)
/// before it sends them.
///
/// ```
/// use plugsync_host::{MigrationRule, apply_migration_rules};
/// use serde_json::json;
///
/// let rules: Vec<MigrationRule> = serde_json::from_value(json!([
///     {"op": "rename", "from": "/state/fast_ma_period", "to": "/state/fast_period"},
///     {"op": "remove", "path": "/state/instruments/*/legacy"}
/// ]))
/// .unwrap();
/// let doc = json!({
///     "config": {},
///     "state": {"fast_ma_period": 5, "instruments": {"ES": {"legacy": true, "closes": []}}}
/// });
/// let migrated = apply_migration_rules(&rules, &doc).unwrap();
/// assert_eq!(
///     migrated["state"],
///     json!({"fast_period": 5, "instruments": {"ES": {"closes": []}}})
/// );
/// // Rules written for another schema fail before anything is switched, naming the rule.
/// let error = apply_migration_rules(&rules, &migrated).unwrap_err();
/// assert_eq!(error.index, 1);
/// ```
pub fn apply(rules: &[MigrationRule], doc: &Value) -> Result<Value, RuleError> {
    let mut migrated = doc.clone();
    for (i, rule) in rules.iter().enumerate() {
        apply_one(rule, &mut migrated).map_err(|reason| RuleError {
            index: i + 1,
            rule: rule.to_string(),
            reason,
        })?;
    }
    Ok(migrated)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn doc() -> Value {
        json!({
            "config": {"fast_ma_period": 5, "slow_ma_period": 20},
            "state": {
                "fast_ma_period": 5,
                "instruments": {
                    "ES": {"closes": [1.0], "legacy": true},
                    "NQ": {"closes": [], "legacy": false}
                }
            }
        })
    }

    fn rules(json: Value) -> Vec<MigrationRule> {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn rules_transform_the_document() {
        let cases = [
            (
                json!([{"op": "rename", "from": "/config/fast_ma_period", "to": "/config/fast_period"}]),
                json!({"fast_period": 5, "slow_ma_period": 20}),
                "/config",
            ),
            (
                json!([{"op": "default", "path": "/state/instruments/*/last_close", "value": null},
                       {"op": "set", "path": "/state/instruments/ES/last_close", "value": 1.0}]),
                json!({"ES": {"closes": [1.0], "legacy": true, "last_close": 1.0},
                       "NQ": {"closes": [], "legacy": false, "last_close": null}}),
                "/state/instruments",
            ),
            (
                json!([{"op": "remove", "path": "/state/instruments/*/legacy"}]),
                json!({"ES": {"closes": [1.0]}, "NQ": {"closes": []}}),
                "/state/instruments",
            ),
            (
                json!([{"op": "rename", "from": "/state/instruments/*/closes", "to": "/state/instruments/*/window"}]),
                json!({"ES": {"window": [1.0], "legacy": true}, "NQ": {"window": [], "legacy": false}}),
                "/state/instruments",
            ),
            (
                json!([{"op": "default", "path": "/state/fast_ma_period", "value": 9}]),
                json!(5),
                "/state/fast_ma_period",
            ),
        ];
        for (rule_set, expected, at) in cases {
            let migrated = apply(&rules(rule_set.clone()), &doc()).unwrap();
            assert_eq!(migrated.pointer(at), Some(&expected), "{rule_set}");
        }
    }

    #[test]
    fn a_rule_that_does_not_fit_the_document_names_itself() {
        let cases = [
            (
                json!([{"op": "rename", "from": "/state/slow_period", "to": "/state/slow"}]),
                "migration rule 1 (rename `/state/slow_period` to `/state/slow`) cannot be applied: `/state/slow_period` does not exist",
            ),
            (
                json!([{"op": "set", "path": "/state/x", "value": 1}, {"op": "remove", "path": "state"}]),
                "migration rule 2 (remove `state`) cannot be applied: `state` is not a JSON pointer: it must start with `/`",
            ),
            (
                json!([{"op": "rename", "from": "/state/instruments/*/closes", "to": "/state/closes"}]),
                "migration rule 1 (rename `/state/instruments/*/closes` to `/state/closes`) cannot be applied: `from` and `to` must have as many `*` segments",
            ),
            (
                json!([{"op": "set", "path": "/state/fast_ma_period/*/x", "value": 1}]),
                "migration rule 1 (set `/state/fast_ma_period/*/x` to 1) cannot be applied: `/state/fast_ma_period` is not an object or array, so `*` cannot go through it",
            ),
        ];
        for (rule_set, expected) in cases {
            let error = apply(&rules(rule_set), &doc()).unwrap_err();
            assert_eq!(error.to_string(), expected);
        }
    }

    #[test]
    fn unknown_operations_and_fields_are_refused_when_parsed() {
        assert!(
            serde_json::from_value::<Vec<MigrationRule>>(json!([{"op": "copy", "path": "/a"}]))
                .is_err()
        );
        assert!(
            serde_json::from_value::<Vec<MigrationRule>>(
                json!([{"op": "remove", "path": "/a", "extra": 1}])
            )
            .is_err()
        );
    }
}
