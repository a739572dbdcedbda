//! plugins.yaml from anywhere: whatever the bytes, `validate` answers with errors, never a
//! panic, a hang or an explosion of memory; each limit is enforced and named.

use std::path::{Path, PathBuf};

use plugsync::spec::{self, Limits};
use proptest::prelude::*;

fn examples() -> Vec<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/desired-state");
    let mut texts = Vec::new();
    let mut dirs = vec![root];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml") {
                texts.push(std::fs::read_to_string(path).unwrap());
            }
        }
    }
    texts.sort();
    texts
}

/// Checks `text` and renders the report (the rendering must not panic either).
fn validate(text: &str) -> String {
    spec::check_text(Path::new("plugins.yaml"), text, &Limits::default()).render(false)
}

/// An edit of a text: cut a range, duplicate one, or put a fragment YAML finds hard in.
#[derive(Debug, Clone)]
enum Edit {
    Cut(usize, usize),
    Repeat(usize, usize),
    Insert(usize, &'static str),
}

const FRAGMENTS: &[&str] = &[
    "\n",
    ": ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    "&a ",
    "*a",
    "!!str ",
    "'",
    "\"",
    "#",
    "\t",
    "---\n",
    ">-\n",
    "|\n",
    "? ",
    "~",
    "\u{feff}",
    "\u{0}",
    "é",
    "\r\n",
    "  ",
    "version: ",
    "id: ",
    "-1",
    "1e999",
    ".nan",
    "0x",
    "9999999999999999999999",
];

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), 0usize..40).prop_map(|(at, len)| Edit::Cut(at, len)),
        (any::<usize>(), 0usize..40).prop_map(|(at, len)| Edit::Repeat(at, len)),
        (any::<usize>(), prop::sample::select(FRAGMENTS)).prop_map(|(at, f)| Edit::Insert(at, f)),
    ]
}

/// `text` with `edits` applied (positions taken modulo the length, on char boundaries).
fn mutate(text: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    for edit in edits {
        let at = |n: usize, len: usize| if len == 0 { 0 } else { n % len };
        match *edit {
            Edit::Cut(n, len) => {
                let start = at(n, chars.len());
                let end = (start + len).min(chars.len());
                chars.drain(start..end);
            }
            Edit::Repeat(n, len) => {
                let start = at(n, chars.len());
                let end = (start + len).min(chars.len());
                let copy: Vec<char> = chars[start..end].to_vec();
                chars.splice(start..start, copy);
            }
            Edit::Insert(n, fragment) => {
                let start = at(n, chars.len() + 1);
                chars.splice(start..start, fragment.chars());
            }
        }
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_get_errors_never_a_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = validate(&text);
    }

    #[test]
    fn mutated_examples_get_errors_or_pass_never_a_panic(
        example in 0usize..64,
        edits in prop::collection::vec(edit(), 1..6),
    ) {
        let examples = examples();
        let text = mutate(&examples[example % examples.len()], &edits);
        let report = validate(&text);
        // A report is a count, or nothing at all for a valid file.
        prop_assert!(report.is_empty() || report.ends_with(" in plugins.yaml\n"), "{report}");
    }
}

#[test]
fn each_limit_is_enforced_and_named() {
    let head = "apiVersion: plugsync/v1\nkind: PluginSet\nmetadata: {name: a}\nspec:\n";
    let limits = Limits {
        max_file_bytes: 4096,
        max_depth: 8,
        max_key_chars: 16,
        max_plugins: 3,
    };
    let plugins: String = (0..4)
        .map(|i| format!("    - {{id: p{i}, version: 1.0.0}}\n"))
        .collect();
    let cases = [
        (
            format!("{head}  plugins:\n{plugins}"),
            "error: 4 plugins exceed the limit of 3",
        ),
        (
            format!("{head}  defaults: {{{}: 1}}\n", "k".repeat(17)),
            "error: this key exceeds the limit of 16 characters",
        ),
        (
            format!("{head}  plugins: [{}{}]\n", "[".repeat(10), "]".repeat(10)),
            "error: nesting exceeds the limit of 8 levels",
        ),
        (
            format!("{head}# {}\n", "x".repeat(4096)),
            "error: the file exceeds the limit of 4096 bytes",
        ),
        (
            format!("{head}  a: &a [x, x, x, x, x, x, x, x]\n  b: [*a, *a, *a, *a, *a, *a]\n"),
            "error: anchors and aliases are not supported",
        ),
    ];
    for (text, expected) in cases {
        let report = spec::check_text(Path::new("plugins.yaml"), &text, &limits).render(false);
        assert!(
            report.starts_with(expected),
            "expected {expected:?}, got:\n{report}"
        );
    }
}
