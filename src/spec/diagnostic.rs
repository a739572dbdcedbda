//! What is wrong in a plugins.yaml, where, and how to fix it; rendered as rustc renders its
//! own errors (annotate-snippets): the line quoted, a caret under the place, a help line.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use annotate_snippets::{AnnotationKind, Group, Level, Renderer, Snippet};

use super::yaml::{Span, SyntaxError};

/// One thing wrong in a plugins.yaml. Messages are lowercase and name keys and values in
/// backticks; [`Problem::help`] says what to write instead.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Problem {
    /// The file is not YAML, or not YAML this format reads (see [`SyntaxError`]).
    #[error(transparent)]
    Syntax(#[from] SyntaxError),

    /// The file cannot be read.
    #[error("cannot read `{path}`: {reason}")]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The system's words.
        reason: String,
    },

    /// A key this place does not have.
    #[error("unknown key `{key}` in {within}")]
    UnknownKey {
        /// The key.
        key: String,
        /// Where: "a plugin", "`spec.policy`".
        within: String,
        /// The closest known key, if one is close.
        suggestion: Option<&'static str>,
        /// The keys this place has.
        expected: &'static [&'static str],
    },

    /// A required key is absent.
    #[error("{within} has no `{key}`")]
    MissingKey {
        /// The key.
        key: &'static str,
        /// Where.
        within: String,
    },

    /// A value of the wrong type.
    #[error("`{key}` must be {expected}, found {found}")]
    WrongType {
        /// The key (or `spec.plugins[2]`).
        key: String,
        /// What it must be: "a string", "a mapping".
        expected: &'static str,
        /// What it is.
        found: &'static str,
    },

    /// A value not among the ones allowed.
    #[error("`{found}` is not a valid `{key}`")]
    UnknownValue {
        /// The key.
        key: String,
        /// The value.
        found: String,
        /// The values allowed.
        expected: Vec<&'static str>,
        /// The closest allowed value, if one is close.
        suggestion: Option<&'static str>,
    },

    /// A value of the right type that does not fit (a number out of range, a bad format).
    #[error("`{found}` is not a valid `{key}`: {reason}")]
    Invalid {
        /// The key.
        key: String,
        /// The value as written.
        found: String,
        /// Why.
        reason: String,
        /// What to write instead.
        fix: Option<String>,
    },

    /// A value of one of the host's own types (a probe, a migration rule) the host would refuse.
    #[error("invalid {what}: {reason}")]
    HostShape {
        /// What: "probe", "migration rule".
        what: &'static str,
        /// The host's words.
        reason: String,
    },

    /// A number a plugin's JSON cannot hold exactly.
    #[error("`{key}` holds a number JSON cannot hold: {reason}")]
    NotJson {
        /// The key holding it.
        key: String,
        /// Which number, and why.
        reason: String,
    },

    /// Not a semantic version.
    #[error("`{found}` is not a semantic version")]
    NotAVersion {
        /// As written.
        found: String,
    },

    /// Not a semver requirement.
    #[error("`{found}` is not a version requirement: {reason}")]
    NotARequirement {
        /// As written.
        found: String,
        /// The parser's words.
        reason: String,
    },

    /// A plugin listed twice.
    #[error("plugin `{id}` is listed twice (first at {first})")]
    DuplicatePlugin {
        /// Its id.
        id: String,
        /// The first listing.
        first: Span,
    },

    /// A plugin whose version is not said.
    #[error("plugin `{id}` names no version")]
    NoVersion {
        /// Its id.
        id: String,
    },

    /// A plugin that pins a version and follows a channel.
    #[error("plugin `{id}` pins `version` {version} and follows `channel` `{channel}`")]
    PinAndChannel {
        /// Its id.
        id: String,
        /// The pin.
        version: String,
        /// The channel.
        channel: &'static str,
    },

    /// A pin its own constraint refuses.
    #[error("plugin `{id}` pins {version}, which its own `constraint` `{constraint}` refuses")]
    PinOutsideConstraint {
        /// Its id.
        id: String,
        /// The pin.
        version: String,
        /// The constraint.
        constraint: String,
    },

    /// A `freshState` that is not the plugin's pin.
    #[error("`freshState` names {fresh}, but plugin `{id}` {}", match pin {
        Some(pin) => format!("pins {pin}"),
        None => "pins no version".to_owned(),
    })]
    FreshStateNotPin {
        /// Its id.
        id: String,
        /// The version `freshState` names.
        fresh: String,
        /// The pin, if any.
        pin: Option<String>,
    },

    /// Windows under which updates can never happen.
    #[error("the update windows never allow an update: {why}")]
    WindowsDenyAlways {
        /// Which windows, and how.
        why: String,
    },

    /// Too many plugins.
    #[error("{count} plugins exceed the limit of {limit}")]
    TooManyPlugins {
        /// How many.
        count: usize,
        /// The limit.
        limit: usize,
    },

    /// `extends` leads back to a file already on the way.
    #[error("`extends` goes round in a circle: {chain}")]
    ExtendsCycle {
        /// The files, in order, back to the first.
        chain: String,
    },

    /// Two files of an `extends` chain say two incompatible things.
    #[error("{what}, in `{base}` ({base_at}) and in `{overlay}`")]
    ExtendsConflict {
        /// What conflicts.
        what: String,
        /// The base file.
        base: PathBuf,
        /// Where in the base.
        base_at: Span,
        /// The overlay file (the one this diagnostic points into).
        overlay: PathBuf,
        /// How to resolve it.
        fix: String,
    },
}

impl Problem {
    /// What to do, if the message does not say it already.
    pub fn help(&self) -> Option<String> {
        Some(match self {
            Problem::UnknownKey {
                suggestion: Some(close),
                ..
            } => format!("did you mean `{close}`?"),
            Problem::UnknownKey { expected, .. } => format!("expected one of {}", list(expected)),
            Problem::UnknownValue {
                suggestion: Some(close),
                ..
            } => format!("did you mean `{close}`?"),
            Problem::UnknownValue { expected, .. } => format!("expected one of {}", list(expected)),
            Problem::Invalid { fix: Some(fix), .. } => fix.clone(),
            Problem::NotAVersion { .. } => "expected MAJOR.MINOR.PATCH, e.g. `2.0.1`".to_owned(),
            Problem::NotJson { .. } => {
                "write a finite number within 64 bits, or quote it to pass a string".to_owned()
            }
            Problem::NotARequirement { .. } => {
                "expected comparators separated by commas, e.g. `>=1.0, <3`".to_owned()
            }
            Problem::NoVersion { .. } => "pin one (`version: 2.1.0`), or follow a channel \
                (`channel: stable`, with an optional `constraint`)"
                .to_owned(),
            Problem::PinAndChannel { .. } => {
                "keep one: a pin is exact, a channel floats".to_owned()
            }
            Problem::PinOutsideConstraint { .. } => {
                "change the pin, or the constraint (a pin needs none)".to_owned()
            }
            Problem::FreshStateNotPin { .. } => "`freshState` discards the state on the step to \
                exactly that version: set it to the version the plugin pins, and remove it once \
                applied"
                .to_owned(),
            Problem::WindowsDenyAlways { .. } => {
                "narrow a `deny` window, or add an `allow` window outside them".to_owned()
            }
            Problem::TooManyPlugins { .. } => "split the set into several files".to_owned(),
            Problem::ExtendsCycle { .. } => "remove one of the `extends`".to_owned(),
            Problem::ExtendsConflict { fix, .. } => fix.clone(),
            Problem::Syntax(SyntaxError::DuplicateKey { .. }) => "keep one of the two".to_owned(),
            Problem::Syntax(SyntaxError::Invalid { message, .. })
                if message.contains("block scalar") =>
            {
                "a value that starts with `>` or `|` must be quoted: `constraint: \">=1.0, <3\"`"
                    .to_owned()
            }
            _ => return None,
        })
    }

    /// The label under the caret (a short restatement), if any.
    fn label(&self) -> Option<String> {
        match self {
            Problem::WrongType { expected, .. } => Some(format!("expected {expected}")),
            _ => None,
        }
    }
}

fn list(names: &[&str]) -> String {
    let quoted: Vec<String> = names.iter().map(|name| format!("`{name}`")).collect();
    quoted.join(", ")
}

/// A problem at a place in a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Diagnostic {
    /// The file, as the operator named it (or as `extends` reached it).
    pub file: PathBuf,
    /// Where in it; `None` for the whole file.
    pub span: Option<Span>,
    /// What is wrong.
    pub problem: Problem,
}

impl Diagnostic {
    /// `file:line:column: message` — one line, for logs.
    pub fn one_line(&self) -> String {
        match self.span {
            Some(span) => format!("{}:{span}: {}", self.file.display(), self.problem),
            None => format!("{}: {}", self.file.display(), self.problem),
        }
    }
}

/// Every problem found in a plugins.yaml (and the files it extends), with the sources to
/// quote them from.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// The problems, file by file, in file order.
    pub diagnostics: Vec<Diagnostic>,
    /// The text of each file read, to quote.
    pub sources: Vec<(PathBuf, String)>,
}

impl Report {
    /// Whether nothing is wrong.
    pub fn is_empty(&self) -> bool {
        self.diagnostics.is_empty()
    }

    /// Renders every problem like a compiler (colours when `styled`), then a count; nothing
    /// when there is none. Past [`MAX_SHOWN`] problems, the rest are counted, not shown.
    pub fn render(&self, styled: bool) -> String {
        if self.is_empty() {
            return String::new();
        }
        let renderer = match styled {
            true => Renderer::styled(),
            false => Renderer::plain(),
        };
        let mut out = String::new();
        let mut lines: Vec<(&Path, LineIndex<'_>)> = Vec::new();
        for diagnostic in self.diagnostics.iter().take(MAX_SHOWN) {
            let index = match lines.iter().position(|(file, _)| *file == diagnostic.file) {
                Some(at) => Some(&lines[at].1),
                None => self.source(&diagnostic.file).map(|source| {
                    lines.push((&diagnostic.file, LineIndex::new(source)));
                    &lines[lines.len() - 1].1
                }),
            };
            let _ = writeln!(out, "{}\n", renderer.render(&report_of(diagnostic, index)));
        }
        let count = self.diagnostics.len();
        if count > MAX_SHOWN {
            let _ = writeln!(out, "... and {} more not shown\n", count - MAX_SHOWN);
        }
        let mut files: Vec<String> = Vec::new();
        for diagnostic in &self.diagnostics {
            let name = diagnostic.file.display().to_string();
            if !files.contains(&name) {
                files.push(name);
            }
        }
        let _ = writeln!(
            out,
            "{count} error{} in {}",
            if count == 1 { "" } else { "s" },
            files.join(", ")
        );
        out
    }

    fn source(&self, file: &Path) -> Option<&str> {
        (self.sources.iter())
            .find(|(path, _)| path == file)
            .map(|(_, text)| text.as_str())
    }
}

/// How many problems a report shows; the rest are counted.
pub const MAX_SHOWN: usize = 100;

/// A file's lines, found once: a diagnostic quotes its own line without walking the file.
struct LineIndex<'s> {
    source: &'s str,
    /// The byte offset where each line starts.
    starts: Vec<usize>,
}

impl<'s> LineIndex<'s> {
    fn new(source: &'s str) -> LineIndex<'s> {
        let starts = std::iter::once(0)
            .chain(source.match_indices('\n').map(|(at, _)| at + 1))
            .collect();
        LineIndex { source, starts }
    }

    /// Line `line` (from 1), without its end of line.
    fn line(&self, line: usize) -> Option<&'s str> {
        let start = *self.starts.get(line.checked_sub(1)?)?;
        let end = self
            .starts
            .get(line)
            .map_or(self.source.len(), |next| *next);
        Some(self.source[start..end].trim_end_matches(['\n', '\r']))
    }
}

/// The annotate-snippets report of one diagnostic: the title, its line with a caret (when the
/// place and its source are known), the help.
fn report_of<'a>(diagnostic: &'a Diagnostic, lines: Option<&LineIndex<'a>>) -> Vec<Group<'a>> {
    let title = Level::ERROR.primary_title(diagnostic.problem.to_string());
    let path = diagnostic.file.to_str().unwrap_or("plugins.yaml");
    let quoted = diagnostic.span.and_then(|span| {
        let lines = lines?;
        let line = lines.line(span.line)?;
        // A parser stopping at the end of the file points at the empty line after the last:
        // the caret goes after the last thing written instead.
        if line.is_empty() && span.line > 1 {
            let previous = lines.line(span.line - 1)?;
            let end = Span {
                line: span.line - 1,
                column: previous.chars().count() + 1,
                ..span
            };
            return Some((end, previous));
        }
        Some((span, line))
    });
    let group = match quoted {
        Some((span, line)) => {
            let mut annotation = AnnotationKind::Primary.span(caret(line, span));
            if let Some(label) = diagnostic.problem.label() {
                annotation = annotation.label(label);
            }
            title.element(
                Snippet::source(line)
                    .line_start(span.line)
                    .path(path)
                    .annotation(annotation),
            )
        }
        None => title.element(annotate_snippets::Origin::path(path)),
    };
    let mut report = vec![group];
    if let Some(help) = diagnostic.problem.help() {
        report.push(Group::with_title(Level::HELP.secondary_title(help)));
    }
    report
}

/// The byte range, within its line, of a span's characters (at least one, at most to the end
/// of the line: the caret stays under the place).
fn caret(line: &str, span: Span) -> std::ops::Range<usize> {
    let byte_at = |column: usize| {
        line.char_indices()
            .nth(column)
            .map_or(line.len(), |(at, _)| at)
    };
    let start = byte_at(span.column.saturating_sub(1));
    let width = span.end.saturating_sub(span.start).max(1);
    let end = byte_at(span.column.saturating_sub(1) + width).max(start);
    start..end
}
