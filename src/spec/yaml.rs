//! A YAML document as a tree that keeps where each node and each key is, built from the
//! events of `saphyr-parser` (a maintained YAML 1.2 parser that marks every event with its
//! line and column), with the limits a file from anywhere needs.
//!
//! Why our own tree rather than a loader's: the limits must hold *while* the tree is built. A
//! loader that expands aliases has already spent the memory of a "billion laughs" document
//! when it returns, and one that builds nodes 100 000 levels deep overflows the stack when it
//! drops them. Here anchors and aliases are refused outright (plugins.yaml shares settings
//! with `defaults` and `extends`, which say what they do), tags too, and depth, size, key
//! length and duplicate keys are checked as each event arrives.

use std::collections::HashMap;
use std::fmt;

use saphyr_parser::{Event, Parser, ScalarStyle, Span as ParserSpan};

/// Where a node or a key is in its file: 1-based line and column (in characters), and its
/// character range (for the caret under it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Span {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1, in characters.
    pub column: usize,
    /// Character offset of the start in the file.
    pub start: usize,
    /// Character offset just past the end (at least `start + 1` for the caret).
    pub end: usize,
}

impl Span {
    fn of(span: &ParserSpan) -> Span {
        let start = span.start.index();
        Span {
            line: span.start.line(),
            column: span.start.col() + 1,
            start,
            end: span.end.index().max(start + 1),
        }
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

/// The bounds a document must stay within. A file past one is refused with the limit named,
/// before anything of it is used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes in one file.
    pub max_file_bytes: usize,
    /// Nesting of sequences and mappings.
    pub max_depth: usize,
    /// Characters in one mapping key.
    pub max_key_chars: usize,
    /// Entries of `spec.plugins` (after `extends`).
    pub max_plugins: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_file_bytes: 4 << 20,
            max_depth: 32,
            max_key_chars: 128,
            max_plugins: 10_000,
        }
    }
}

/// One mapping key.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// Its text.
    pub name: String,
    /// Where it is.
    pub span: Span,
}

/// A YAML node and where it is.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where it starts.
    pub span: Span,
    /// What it is.
    pub value: Value,
    /// A scalar's text as written (`2.10`, `007`), which its typed value may not keep.
    pub text: Option<String>,
}

/// What a node holds. Plain scalars are typed by the YAML 1.2 core schema (`null`, booleans,
/// integers, floats); the text as written is kept for the values plugins.yaml reads as text
/// (a version `2.10` is not the number 2.1).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// `null`, `~` or nothing.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number written without a fraction or exponent (wide enough for any `u64` or `i64`).
    Int(i128),
    /// Any other number, `.inf` and `.nan` included.
    Float(f64),
    /// A string: quoted, or plain and none of the above.
    Str(String),
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, in file order (keys are unique: a duplicate is refused).
    Map(Vec<(Key, Node)>),
}

impl Value {
    /// What it is, for "expected a string, found a sequence".
    pub fn kind(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "a boolean",
            Value::Int(_) | Value::Float(_) => "a number",
            Value::Str(_) => "a string",
            Value::Seq(_) => "a sequence",
            Value::Map(_) => "a mapping",
        }
    }
}

impl Node {
    /// The node as JSON (a plugin's config, a probe's input): mappings keep their order. A
    /// number JSON cannot hold exactly (`.inf`, `.nan`, an integer beyond 64 bits) is refused
    /// with where it is, never turned into something else.
    pub fn to_json(&self) -> Result<serde_json::Value, (Span, String)> {
        Ok(match &self.value {
            Value::Null => serde_json::Value::Null,
            Value::Bool(b) => serde_json::Value::Bool(*b),
            Value::Int(i) => match (i64::try_from(*i), u64::try_from(*i)) {
                (Ok(i), _) => serde_json::Value::from(i),
                (_, Ok(u)) => serde_json::Value::from(u),
                _ => return Err((self.span, format!("{i} does not fit in 64 bits"))),
            },
            Value::Float(f) => match serde_json::Number::from_f64(*f) {
                Some(number) => serde_json::Value::Number(number),
                None => {
                    let written = self.text.as_deref().unwrap_or("this number");
                    return Err((self.span, format!("`{written}` has no JSON form")));
                }
            },
            Value::Str(s) => serde_json::Value::String(s.clone()),
            Value::Seq(items) => items.iter().map(Node::to_json).collect::<Result<_, _>>()?,
            Value::Map(entries) => entries
                .iter()
                .map(|(key, node)| Ok((key.name.clone(), node.to_json()?)))
                .collect::<Result<serde_json::Map<_, _>, _>>()?
                .into(),
        })
    }

    /// The text of a scalar as written (a number or boolean too), for values read as text.
    pub fn scalar_text(&self) -> Option<String> {
        match &self.value {
            Value::Null | Value::Seq(_) | Value::Map(_) => None,
            Value::Str(s) => Some(s.clone()),
            _ => self.text.clone(),
        }
    }
}

/// Why a document could not be read as a tree: the first such fault ends the parse (the
/// validation that follows reports every other error at once).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SyntaxError {
    /// Not YAML.
    #[error("invalid YAML: {message}")]
    Invalid {
        /// The parser's words.
        message: String,
        /// Where it stopped.
        span: Span,
    },
    /// An anchor (`&name`) or alias (`*name`).
    #[error(
        "anchors and aliases are not supported: share settings with `spec.defaults`, or with a \
         base file (`spec.extends`)"
    )]
    Alias {
        /// Where.
        span: Span,
    },
    /// An explicit tag (`!tag`).
    #[error("tags (`{tag}`) are not supported: write the value itself")]
    Tag {
        /// The tag.
        tag: String,
        /// Where.
        span: Span,
    },
    /// More than one document in the file.
    #[error("more than one YAML document (`---`): a plugins.yaml holds one")]
    SecondDocument {
        /// Where the second starts.
        span: Span,
    },
    /// A key that is not a plain string.
    #[error("a mapping key must be a string")]
    ComplexKey {
        /// Where.
        span: Span,
    },
    /// A key given twice in one mapping.
    #[error("`{key}` is given twice in this mapping (first at {first})")]
    DuplicateKey {
        /// The key.
        key: String,
        /// The second one.
        span: Span,
        /// The first one.
        first: Span,
    },
    /// Past one of the [`Limits`].
    #[error("{what} exceeds the limit of {limit}{unit}")]
    Limit {
        /// What: "the file", "nesting", "this key".
        what: &'static str,
        /// The limit.
        limit: usize,
        /// Its unit, with its leading space.
        unit: &'static str,
        /// Where.
        span: Span,
    },
    /// An empty file.
    #[error("the file is empty: a plugins.yaml starts with `apiVersion: plugsync/v1`")]
    Empty,
}

impl SyntaxError {
    /// Where the error is (`None` for a fault of the whole file).
    pub fn span(&self) -> Option<Span> {
        match self {
            SyntaxError::Invalid { span, .. }
            | SyntaxError::Alias { span }
            | SyntaxError::Tag { span, .. }
            | SyntaxError::SecondDocument { span }
            | SyntaxError::ComplexKey { span }
            | SyntaxError::DuplicateKey { span, .. }
            | SyntaxError::Limit { span, .. } => Some(*span),
            SyntaxError::Empty => None,
        }
    }
}

/// A collection being built.
enum Open {
    Seq(Span, Vec<Node>),
    /// Its start, its entries, the key waiting for its value, and where each key is (so a
    /// duplicate is found in constant time, whatever the mapping's size).
    Map(Span, Vec<(Key, Node)>, Option<Key>, HashMap<String, Span>),
}

/// Parses one YAML document into a [`Node`], within `limits`.
pub fn parse(source: &str, limits: &Limits) -> Result<Node, SyntaxError> {
    if source.len() > limits.max_file_bytes {
        return Err(SyntaxError::Limit {
            what: "the file",
            limit: limits.max_file_bytes,
            unit: " bytes",
            span: Span {
                line: 1,
                column: 1,
                start: 0,
                end: 1,
            },
        });
    }
    let mut parser = Parser::new_from_str(source);
    let mut stack: Vec<Open> = Vec::new();
    let mut root: Option<Node> = None;
    let mut documents = 0;
    loop {
        let (event, span) = match parser.next_event() {
            None => break,
            Some(Ok((event, span))) => (event, Span::of(&span)),
            Some(Err(error)) => {
                let marker = error.marker();
                return Err(SyntaxError::Invalid {
                    message: error.info().to_owned(),
                    span: Span {
                        line: marker.line(),
                        column: marker.col() + 1,
                        start: marker.index(),
                        end: marker.index() + 1,
                    },
                });
            }
        };
        let node = match event {
            Event::StreamStart | Event::DocumentEnd | Event::Nothing => continue,
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(SyntaxError::SecondDocument { span });
                }
                continue;
            }
            Event::Alias(_) => return Err(SyntaxError::Alias { span }),
            Event::Scalar(text, style, anchor, tag) => {
                refuse_anchor_or_tag(anchor, tag.is_some().then(|| written(source, span)), span)?;
                Node {
                    span,
                    value: scalar(&text, style),
                    text: Some(text.to_string()),
                }
            }
            Event::SequenceStart(anchor, ref tag) | Event::MappingStart(anchor, ref tag) => {
                refuse_anchor_or_tag(anchor, tag.is_some().then(|| written(source, span)), span)?;
                if stack.len() >= limits.max_depth {
                    return Err(SyntaxError::Limit {
                        what: "nesting",
                        limit: limits.max_depth,
                        unit: " levels",
                        span,
                    });
                }
                stack.push(match event {
                    Event::SequenceStart(..) => Open::Seq(span, Vec::new()),
                    _ => Open::Map(span, Vec::new(), None, HashMap::new()),
                });
                continue;
            }
            Event::SequenceEnd | Event::MappingEnd => match stack.pop() {
                Some(Open::Seq(start, items)) => Node {
                    span: start,
                    value: Value::Seq(items),
                    text: None,
                },
                Some(Open::Map(start, entries, _, _)) => Node {
                    span: start,
                    value: Value::Map(entries),
                    text: None,
                },
                None => continue,
            },
        };
        attach(&mut stack, &mut root, node, limits)?;
    }
    root.ok_or(SyntaxError::Empty)
}

/// The word written at `span` (a tag as the operator wrote it: `!!str`).
fn written(source: &str, span: Span) -> String {
    source
        .chars()
        .skip(span.start)
        .take_while(|c| !c.is_whitespace())
        .collect()
}

fn refuse_anchor_or_tag(anchor: usize, tag: Option<String>, span: Span) -> Result<(), SyntaxError> {
    // saphyr-parser numbers anchors from 1; 0 is none.
    if anchor != 0 {
        return Err(SyntaxError::Alias { span });
    }
    match tag {
        Some(tag) => Err(SyntaxError::Tag { tag, span }),
        None => Ok(()),
    }
}

/// Puts a finished node where it belongs: the next item of a sequence, a mapping's key or its
/// value, or the root.
fn attach(
    stack: &mut [Open],
    root: &mut Option<Node>,
    node: Node,
    limits: &Limits,
) -> Result<(), SyntaxError> {
    match stack.last_mut() {
        None => *root = Some(node),
        Some(Open::Seq(_, items)) => items.push(node),
        Some(Open::Map(_, entries, pending, seen)) => match pending.take() {
            Some(key) => entries.push((key, node)),
            None => {
                let name = match &node.value {
                    Value::Seq(_) | Value::Map(_) => {
                        return Err(SyntaxError::ComplexKey { span: node.span });
                    }
                    // A number or boolean key is read as its text.
                    Value::Null => "null".to_owned(),
                    _ => node.scalar_text().unwrap_or_default(),
                };
                return start_entry(seen, pending, name, node.span, limits);
            }
        },
    }
    Ok(())
}

fn start_entry(
    seen: &mut HashMap<String, Span>,
    pending: &mut Option<Key>,
    name: String,
    span: Span,
    limits: &Limits,
) -> Result<(), SyntaxError> {
    if name.chars().count() > limits.max_key_chars {
        return Err(SyntaxError::Limit {
            what: "this key",
            limit: limits.max_key_chars,
            unit: " characters",
            span,
        });
    }
    if let Some(first) = seen.get(&name) {
        return Err(SyntaxError::DuplicateKey {
            key: name,
            span,
            first: *first,
        });
    }
    seen.insert(name.clone(), span);
    *pending = Some(Key { name, span });
    Ok(())
}

/// A scalar typed by the YAML 1.2 core schema: only plain scalars can be anything but a string.
fn scalar(text: &str, style: ScalarStyle) -> Value {
    if style != ScalarStyle::Plain {
        return Value::Str(text.to_owned());
    }
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Value::Null,
        "true" | "True" | "TRUE" => return Value::Bool(true),
        "false" | "False" | "FALSE" => return Value::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Value::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Value::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Value::Float(f64::NAN),
        _ => {}
    }
    // `from_str_radix` would take a sign after the prefix (`0x-1`): the digits are checked
    // first.
    let digits_in =
        |digits: &str, radix: u32| !digits.is_empty() && digits.chars().all(|c| c.is_digit(radix));
    if let Some(hex) = text.strip_prefix("0x") {
        if digits_in(hex, 16)
            && let Ok(i) = i128::from_str_radix(hex, 16)
        {
            return Value::Int(i);
        }
    } else if let Some(octal) = text.strip_prefix("0o") {
        if digits_in(octal, 8)
            && let Ok(i) = i128::from_str_radix(octal, 8)
        {
            return Value::Int(i);
        }
    } else if is_decimal_int(text) {
        return match text.parse() {
            Ok(i) => Value::Int(i),
            // Beyond 128 bits: kept as a number JSON refuses (see `Node::to_json`).
            Err(_) => Value::Float(f64::INFINITY),
        };
    } else if is_float(text)
        && let Ok(f) = text.parse()
    {
        return Value::Float(f);
    }
    Value::Str(text.to_owned())
}

/// `[-+]? [0-9]+`
fn is_decimal_int(text: &str) -> bool {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// `[-+]? ( \. [0-9]+ | [0-9]+ ( \. [0-9]* )? ) ( [eE] [-+]? [0-9]+ )?`
fn is_float(text: &str) -> bool {
    let unsigned = text.strip_prefix(['-', '+']).unwrap_or(text);
    let (mantissa, exponent) = match unsigned.find(['e', 'E']) {
        Some(at) => (&unsigned[..at], Some(&unsigned[at + 1..])),
        None => (unsigned, None),
    };
    let (whole, fraction) = match mantissa.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (mantissa, None),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok = match fraction {
        Some(fraction) => {
            digits(whole) && digits(fraction) && !(whole.is_empty() && fraction.is_empty())
        }
        None => !whole.is_empty() && digits(whole),
    };
    let exponent_ok = exponent.is_none_or(is_decimal_int);
    mantissa_ok && exponent_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_default(source: &str) -> Result<Node, SyntaxError> {
        parse(source, &Limits::default())
    }

    #[test]
    fn plain_scalars_are_typed_by_the_core_schema_and_quoted_ones_stay_strings() {
        let cases = [
            ("~", Value::Null),
            ("", Value::Null),
            ("true", Value::Bool(true)),
            ("FALSE", Value::Bool(false)),
            ("42", Value::Int(42)),
            ("-7", Value::Int(-7)),
            ("0x1f", Value::Int(31)),
            ("0o17", Value::Int(15)),
            ("2.5", Value::Float(2.5)),
            ("1e3", Value::Float(1000.0)),
            (".5", Value::Float(0.5)),
            ("2.1.0", Value::Str("2.1.0".into())),
            ("'>=1.0, <2'", Value::Str(">=1.0, <2".into())),
            ("yes", Value::Str("yes".into())),
            ("\"42\"", Value::Str("42".into())),
            ("'true'", Value::Str("true".into())),
        ];
        for (text, expected) in cases {
            let node = parse_default(&format!("k: {text}\n")).unwrap();
            let Value::Map(entries) = node.value else {
                panic!("{text}: not a map")
            };
            assert_eq!(entries[0].1.value, expected, "{text}");
        }
    }

    #[test]
    fn every_key_and_node_knows_its_line_and_column() {
        let node = parse_default("a: 1\nb:\n  - {x: q}\n").unwrap();
        let Value::Map(entries) = &node.value else {
            panic!()
        };
        let (b, list) = &entries[1];
        assert_eq!((b.name.as_str(), b.span.to_string()), ("b", "2:1".into()));
        let Value::Seq(items) = &list.value else {
            panic!()
        };
        let Value::Map(inner) = &items[0].value else {
            panic!()
        };
        assert_eq!(inner[0].0.span.to_string(), "3:6");
        assert_eq!(inner[0].1.span.to_string(), "3:9");
    }

    #[test]
    fn block_and_flow_nodes_of_every_kind_know_where_they_are() {
        let source = "spec:\n  plugins:\n    - id: a\n      config:\n        window: [1, 2.5, x]\n        note: >-\n          folded\n    - {id: b}\n";
        let node = parse_default(source).unwrap();
        let mut places = Vec::new();
        fn walk(node: &Node, places: &mut Vec<String>) {
            match &node.value {
                Value::Map(entries) => {
                    for (key, value) in entries {
                        places.push(format!("{}@{}", key.name, key.span));
                        walk(value, places);
                    }
                }
                Value::Seq(items) => items.iter().for_each(|item| walk(item, places)),
                other => places.push(format!("{:?}@{}", other, node.span)),
            }
        }
        walk(&node, &mut places);
        assert_eq!(
            places,
            [
                "spec@1:1",
                "plugins@2:3",
                "id@3:7",
                "Str(\"a\")@3:11",
                "config@4:7",
                "window@5:9",
                "Int(1)@5:18",
                "Float(2.5)@5:21",
                "Str(\"x\")@5:26",
                "note@6:9",
                // A block scalar is placed at its text, not at its `>-`.
                "Str(\"folded\")@7:11",
                "id@8:8",
                "Str(\"b\")@8:12",
            ]
        );
    }

    #[test]
    fn what_the_tree_refuses() {
        let cases: [(&str, &str); 7] = [
            ("a: &x 1\nb: *x\n", "anchors and aliases are not supported"),
            ("a: !!str 1\n", "tags (`!!str`) are not supported"),
            ("a: 1\n---\nb: 2\n", "more than one YAML document"),
            (
                "a: 1\na: 2\n",
                "`a` is given twice in this mapping (first at 1:1)",
            ),
            ("? [1]\n: x\n", "a mapping key must be a string"),
            ("a: [1, 2\n", "invalid YAML"),
            ("", "the file is empty"),
        ];
        for (source, expected) in cases {
            let error = parse_default(source).unwrap_err().to_string();
            assert!(error.starts_with(expected), "{source:?}: {error}");
        }
    }

    #[test]
    fn a_billion_laughs_is_refused_at_its_first_anchor_not_expanded() {
        let mut source = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 9].join(", ");
            source.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let error = parse_default(&source).unwrap_err();
        assert_eq!(error.span().map(|s| s.to_string()), Some("1:5".to_owned()));
    }

    #[test]
    fn the_limits_are_enforced_while_parsing() {
        let limits = Limits {
            max_file_bytes: 64,
            max_depth: 3,
            max_key_chars: 5,
            max_plugins: 1,
        };
        let cases = [
            ("a: [[[1]]]\n", "nesting exceeds the limit of 3 levels"),
            ("abcdef: 1\n", "this key exceeds the limit of 5 characters"),
            (
                &*format!("a: \"{}\"\n", "x".repeat(80)),
                "the file exceeds the limit of 64 bytes",
            ),
        ];
        for (source, expected) in cases {
            let error = parse(source, &limits).unwrap_err().to_string();
            assert_eq!(error, expected, "{source:?}");
        }
        // 100 000 levels: refused (by the parser's own recursion limit, which its look-ahead
        // reaches first in a flow collection), never built nor dropped that deep.
        let deep = format!("a: {}1{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let error = parse(
            &deep,
            &Limits {
                max_file_bytes: 1 << 20,
                ..Limits::default()
            },
        );
        assert!(matches!(
            error,
            Err(SyntaxError::Limit { .. } | SyntaxError::Invalid { .. })
        ));
        // Block nesting, one level past the default limit of 32.
        let mut block = String::new();
        for depth in 0..33 {
            block.push_str(&format!("{}k{depth}:\n", "  ".repeat(depth)));
        }
        let error = parse(&block, &Limits::default()).unwrap_err().to_string();
        assert_eq!(error, "nesting exceeds the limit of 32 levels");
    }
}
