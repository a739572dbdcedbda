//! Versions and ids in words, for the errors.

use semver::Version;

/// `1.1.0`; `1.0.0 and 1.1.0`; `1.0.0 to 1.4.0 (5 versions)` — `versions` sorted.
pub(crate) fn versions(versions: &[&Version]) -> String {
    match versions {
        [] => "no version".to_owned(),
        [one] => one.to_string(),
        [first, second] => format!("{first} and {second}"),
        [first, .., last] => format!("{first} to {last} ({} versions)", versions.len()),
    }
}

/// As [`versions`], with `none` for an empty list.
pub(crate) fn versions_or_none(list: &[&Version]) -> String {
    if list.is_empty() {
        "none".to_owned()
    } else {
        versions(list)
    }
}

/// `` `a` ``, `` `a` and `b` ``, `` `a`, `b` and `c` ``.
pub(crate) fn ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = ids.into_iter().map(|id| format!("`{id}`")).collect();
    match quoted.split_last() {
        None => "none".to_owned(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} and {last}", rest.join(", ")),
    }
}
