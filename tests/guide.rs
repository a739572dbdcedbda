//! The documentation shows what is real: every `rust` and `toml` block of the guides is a copy
//! of a source file of this repository (which is built and tested), named on the block's first
//! line (`// path` or `# path`); an `ini` or `yaml` block that names a file so (a systemd unit,
//! an example plugins.yaml: a path with a `/`) is a copy of it, and one that does not (a
//! Prometheus job, say) only an illustration. A block may skip lines with a `// …` (`# …`)
//! line; each run of lines between skips must appear in the file, in order, with the same text
//! up to indentation. A block copied from a doc comment (`//!`, `///`) matches its text.

use std::path::Path;

const WORKSPACE: &str = env!("CARGO_MANIFEST_DIR");

/// The guides whose code blocks are checked.
const GUIDES: [&str; 3] = [
    "docs/plugin-guide.md",
    "docs/operator-guide.md",
    "docs/fleet.md",
];

/// A fenced code block: its language, the line of the file it starts on, and its lines.
struct Block {
    lang: String,
    line: usize,
    lines: Vec<String>,
}

fn blocks(text: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut open: Option<Block> = None;
    for (index, line) in text.lines().enumerate() {
        let fence = line.trim_start().strip_prefix("```");
        match (fence, &mut open) {
            (Some(_), Some(_)) => blocks.push(open.take().expect("a block is open")),
            (Some(lang), None) => {
                open = Some(Block {
                    lang: lang.trim().to_owned(),
                    line: index + 1,
                    lines: Vec::new(),
                })
            }
            (None, Some(block)) => block.lines.push(line.to_owned()),
            (None, None) => {}
        }
    }
    assert!(open.is_none(), "a code block is not closed");
    blocks
}

/// The lines of a source file, and the same lines with a doc comment's marker removed.
fn source_lines(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(|line| {
            let trimmed = line.trim();
            let doc = ["//! ", "/// ", "//!", "///"]
                .iter()
                .find_map(|marker| trimmed.strip_prefix(marker))
                .unwrap_or(trimmed);
            (trimmed.to_owned(), doc.trim().to_owned())
        })
        .collect()
}

/// Where `run` appears in `source` at or after `from`, as code or as doc-comment text.
fn find(source: &[(String, String)], run: &[String], from: usize) -> Option<usize> {
    (from..source.len().saturating_sub(run.len() - 1)).find(|&start| {
        let code = run
            .iter()
            .zip(&source[start..])
            .all(|(line, (code, _))| line.trim() == code);
        let doc = run
            .iter()
            .zip(&source[start..])
            .all(|(line, (_, doc))| line.trim() == doc);
        code || doc
    })
}

/// Whether a block's first line is `# PATH`, a path with a `/` and no space.
fn names_a_file(block: &Block) -> bool {
    let first = block.lines.first().map(|l| l.trim()).unwrap_or_default();
    first
        .strip_prefix("# ")
        .is_some_and(|path| path.contains('/') && !path.contains(char::is_whitespace))
}

#[test]
fn every_rust_toml_ini_and_yaml_block_of_the_guides_is_copied_from_a_file() {
    let mut checked = 0;
    for guide in GUIDES {
        let text = std::fs::read_to_string(Path::new(WORKSPACE).join(guide)).unwrap();
        for block in blocks(&text) {
            let comment = match block.lang.as_str() {
                "rust" => "//",
                "toml" => "#",
                "ini" | "yaml" if names_a_file(&block) => "#",
                _ => continue,
            };
            let at = format!("{guide}:{}", block.line);
            let path = block
                .lines
                .first()
                .and_then(|first| first.strip_prefix(comment))
                .map(str::trim)
                .unwrap_or_else(|| {
                    panic!("{at}: a {} block starts with `{comment} <path of the file it is copied from>`", block.lang)
                });
            let source = std::fs::read_to_string(Path::new(WORKSPACE).join(path))
                .unwrap_or_else(|e| panic!("{at}: cannot read `{path}`: {e}"));
            let source = source_lines(&source);
            let skip = format!("{comment} …");
            let mut from = 0;
            for run in block.lines[1..].split(|line| line.trim() == skip) {
                if run.is_empty() {
                    continue;
                }
                let start = find(&source, run, from).unwrap_or_else(|| {
                    panic!(
                        "{at}: these lines are not in `{path}` (in this order), so the guide no \
                         longer shows what is built or shipped; copy them again:\n{}",
                        run.join("\n")
                    )
                });
                from = start + run.len();
            }
            checked += 1;
        }
    }
    assert!(
        checked >= 10,
        "only {checked} blocks checked: is the fence syntax still ```rust?"
    );
}
