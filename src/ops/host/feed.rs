//! `plugsync host --feed FILE`: replays a file of calls into the host's plugins, in order.
//!
//! The file holds one call per line (blank lines are skipped), a JSON object:
//!
//! ```json
//! {"plugin": "ma_cross", "input": {"bar": {"instrument": "ES", "close": 4500.25}}}
//! {"plugin": "ma_cross", "input": "raw bytes, sent as they are", "now": 1700000000000000000}
//! ```
//!
//! - `plugin`: the id of a plugin the host runs;
//! - `input`: a string is sent as its UTF-8 bytes; any other JSON value as its text exactly as
//!   written in the line;
//! - `now` (optional): the host time of the call, in nanoseconds since the Unix epoch; without
//!   it, the runtime's clock gives it.
//!
//! Each answer is one line of the output file (`--feed-out`), in the order of the calls:
//! `{"plugin": …, "seq": N, "output": …}` or `{"plugin": …, "seq": N, "error": "…"}`, where
//! `seq` is the call's position in the feed (from 1) and `output` follows the same convention
//! as `input`: the plugin's output as a JSON value when it is a JSON document other than a
//! string, else as a string of its bytes (invalid UTF-8 replaced by U+FFFD).
//!
//! The format is a contract (a later feature records live sessions in it to replay them), so
//! unknown fields are refused rather than ignored: a misspelt `now` must not pass silently.
//! The whole file is read and checked, and every plugin it calls found, before the first call.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use plugsync_host::{HostTime, Runtime, SlotHandle};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::error::{Error, Result};

/// What the line format expects, for error messages.
const EXPECTED: &str = r#"one JSON object per line: {"plugin": "<id>", "input": <JSON value or string>} with an optional "now": <host time in ns>"#;

/// How `plugsync host` replays a feed file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedFile {
    /// The file of calls, one JSON object per line.
    pub path: PathBuf,
    /// Calls per second; 0: as fast as the plugins answer.
    pub rate: u32,
    /// Where the answers go, one JSON object per line; `None`: the host's log.
    pub out: Option<PathBuf>,
}

impl FeedFile {
    /// Replays `path` at the default rate of 1000 calls per second, answers to the log.
    pub fn new(path: impl Into<PathBuf>) -> FeedFile {
        FeedFile {
            path: path.into(),
            rate: 1000,
            out: None,
        }
    }
}

/// One line of the feed file, as written.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    plugin: String,
    input: Box<RawValue>,
    #[serde(default)]
    now: Option<i64>,
}

/// One call of the feed, checked.
#[derive(Debug)]
struct Call {
    /// Line number in the file, from 1.
    line: usize,
    plugin: String,
    input: Vec<u8>,
    now: Option<HostTime>,
}

/// A feed file read and checked: every line parsed, before the host starts.
#[derive(Debug)]
pub(super) struct Script {
    file: FeedFile,
    calls: Vec<Call>,
}

impl Script {
    /// Reads and checks every line; the first bad one is an error naming `FILE:LINE`.
    pub(super) fn read(file: &FeedFile) -> Result<Script> {
        let text = std::fs::read_to_string(&file.path).map_err(|source| Error::Io {
            action: "read the feed file",
            path: file.path.clone(),
            source,
        })?;
        let mut calls = Vec::new();
        for (index, text) in text.lines().enumerate() {
            if text.trim().is_empty() {
                continue;
            }
            calls.push(parse(&file.path, index + 1, text)?);
        }
        Ok(Script {
            file: file.clone(),
            calls,
        })
    }

    /// Checks that the host runs every plugin the feed calls and opens the output file:
    /// still before any call.
    pub(super) fn prepare(self, runtime: &Runtime) -> Result<Replay> {
        let mut handles = BTreeMap::new();
        for call in &self.calls {
            if handles.contains_key(&call.plugin) {
                continue;
            }
            let handle = runtime
                .handle(&call.plugin)
                .map_err(|_| Error::FeedPluginNotRunning {
                    path: self.file.path.clone(),
                    line: call.line,
                    plugin: call.plugin.clone(),
                    running: runtime
                        .status()
                        .plugins
                        .into_iter()
                        .map(|p| p.plugin)
                        .collect(),
                })?;
            handles.insert(call.plugin.clone(), handle);
        }
        let out = match &self.file.out {
            Some(path) => Some(BufWriter::new(File::create(path).map_err(|source| {
                Error::Io {
                    action: "create the feed output file",
                    path: path.clone(),
                    source,
                }
            })?)),
            None => None,
        };
        Ok(Replay {
            script: self,
            handles,
            out,
        })
    }
}

fn parse(path: &Path, line: usize, text: &str) -> Result<Call> {
    let bad = |reason: String| Error::FeedLine {
        path: path.to_owned(),
        line,
        reason,
        expected: EXPECTED,
    };
    // serde_json's own position is within this line only: drop it, the line number says where.
    let reason = |e: serde_json::Error| {
        let text = e.to_string();
        match text.rfind(" at line ") {
            Some(at) => text[..at].to_owned(),
            None => text,
        }
    };
    // serde would also take a struct from an array of its fields in order: not a feed line.
    if !text.trim_start().starts_with('{') {
        return Err(bad("not a JSON object".to_owned()));
    }
    let parsed: Line = serde_json::from_str(text).map_err(|e| bad(reason(e)))?;
    if parsed.plugin.is_empty() {
        return Err(bad("`plugin` is empty".to_owned()));
    }
    let raw = parsed.input.get();
    let input = if raw.starts_with('"') {
        serde_json::from_str::<String>(raw)
            .map_err(|e| bad(reason(e)))?
            .into_bytes()
    } else {
        raw.as_bytes().to_vec()
    };
    Ok(Call {
        line,
        plugin: parsed.plugin,
        input,
        now: parsed.now.map(HostTime),
    })
}

/// One answer, as written to `--feed-out`.
#[derive(Serialize)]
struct Answer<'a> {
    plugin: &'a str,
    seq: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<Output<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// A plugin's output in an answer line.
#[derive(Serialize)]
#[serde(untagged)]
enum Output<'a> {
    /// A JSON document other than a string, as the plugin wrote it.
    Raw(&'a RawValue),
    /// A JSON document spread over lines: compacted, so that the answer stays one line.
    Value(serde_json::Value),
    /// Anything else, as text.
    Text(String),
}

impl<'a> Output<'a> {
    fn of(bytes: &'a [u8]) -> Output<'a> {
        match serde_json::from_slice::<&RawValue>(bytes) {
            Ok(raw) if raw.get().starts_with('"') => {}
            Ok(raw) if !raw.get().contains(['\n', '\r']) => return Output::Raw(raw),
            Ok(_) => {
                if let Ok(value) = serde_json::from_slice(bytes) {
                    return Output::Value(value);
                }
            }
            Err(_) => {}
        }
        Output::Text(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// A checked feed with the handles it calls, ready to run.
pub(super) struct Replay {
    script: Script,
    handles: BTreeMap<String, SlotHandle>,
    out: Option<BufWriter<File>>,
}

impl Replay {
    /// Makes every call in order, paced to the rate, until the end of the file or `stop`.
    pub(super) fn run(mut self, stop: &AtomicBool) {
        let FeedFile { path, rate, out } = &self.script.file;
        tracing::info!(
            calls = self.script.calls.len(),
            rate,
            "the feed is on: replaying `{}`",
            path.display()
        );
        let started = Instant::now();
        let (mut output, mut failed, mut made) = (Vec::new(), 0u64, 0u64);
        for (index, call) in self.script.calls.iter().enumerate() {
            if *rate > 0 {
                let due = started + pace(index, *rate);
                if !sleep_until(due, stop) {
                    break;
                }
            } else if stop.load(Ordering::Relaxed) {
                break;
            }
            let handle = &self.handles[&call.plugin];
            let result = match call.now {
                Some(now) => handle.call_into_at(&call.input, now, &mut output),
                None => handle.call_into(&call.input, &mut output),
            };
            made += 1;
            let seq = index as u64 + 1;
            let answer = match &result {
                Ok(_) => Answer {
                    plugin: &call.plugin,
                    seq,
                    output: Some(Output::of(&output)),
                    error: None,
                },
                Err(error) => {
                    failed += 1;
                    Answer {
                        plugin: &call.plugin,
                        seq,
                        output: None,
                        error: Some(error.to_string()),
                    }
                }
            };
            let line = serde_json::to_string(&answer).expect("an answer serialises");
            match &mut self.out {
                Some(writer) => {
                    if let Err(error) = writeln!(writer, "{line}") {
                        let path = out.as_deref().unwrap_or(path);
                        tracing::error!(
                            "cannot write `{}`: {error}; the feed stops",
                            path.display()
                        );
                        return;
                    }
                }
                None => tracing::info!(target: "plugsync::feed", "{line}"),
            }
        }
        if let (Some(writer), Some(out)) = (&mut self.out, out)
            && let Err(error) = writer.flush()
        {
            tracing::error!("cannot write `{}`: {error}", out.display());
        }
        tracing::info!(
            "the feed `{}` is done: {made} calls made, {failed} failed{}",
            path.display(),
            match out {
                Some(out) => format!(", answers in `{}`", out.display()),
                None => String::new(),
            }
        );
    }
}

/// When call `index` (from 0) is due after the start, at `rate` calls per second.
fn pace(index: usize, rate: u32) -> Duration {
    let nanos = index as u128 * 1_000_000_000 / u128::from(rate);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

/// Sleeps until `due`, waking often enough to notice `stop`; false if stopped.
fn sleep_until(due: Instant, stop: &AtomicBool) -> bool {
    const NAP: Duration = Duration::from_millis(50);
    loop {
        if stop.load(Ordering::Relaxed) {
            return false;
        }
        let left = due.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(NAP));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(text: &str) -> Result<Call> {
        parse(Path::new("feed.jsonl"), 3, text)
    }

    #[test]
    fn a_string_input_is_sent_as_its_bytes_and_any_other_value_as_written() {
        let call = line(r#"{"plugin":"p","input":"a \"raw\" line"}"#).unwrap();
        assert_eq!(call.input, br#"a "raw" line"#);
        let call =
            line(r#"{"plugin":"p","input": {"bar": {"close": 4500.10000000000001}} }"#).unwrap();
        assert_eq!(call.input, br#"{"bar": {"close": 4500.10000000000001}}"#);
        assert_eq!(call.now, None);
        let call = line(r#"{"plugin":"p","input":1,"now":1700000000000000000}"#).unwrap();
        assert_eq!(call.now, Some(HostTime(1_700_000_000_000_000_000)));
    }

    #[test]
    fn a_bad_line_names_the_file_the_line_and_what_is_expected() {
        let error = line(r#"{"plugin":"p","inptu":1}"#).unwrap_err().to_string();
        assert_eq!(
            error,
            format!(
                "`feed.jsonl:3` is not a feed line (unknown field `inptu`, expected one of \
                 `plugin`, `input`, `now`): expected {EXPECTED}"
            )
        );
        for (text, reason) in [
            (r#"{"plugin":"p"}"#, "missing field `input`"),
            (r#"{"plugin":"","input":1}"#, "`plugin` is empty"),
            (r#"["p", 1]"#, "not a JSON object"),
            ("{", "EOF while parsing an object"),
        ] {
            let error = line(text).unwrap_err().to_string();
            assert!(error.contains(&format!("({reason})")), "{text}: {error}");
        }
    }

    #[test]
    fn an_output_is_a_json_value_unless_it_is_a_string_or_not_json() {
        let answer = |bytes: &[u8]| {
            serde_json::to_string(&Answer {
                plugin: "p",
                seq: 1,
                output: Some(Output::of(bytes)),
                error: None,
            })
            .unwrap()
        };
        assert_eq!(
            answer(br#"{"orders":[], "px":4500.10000000000001}"#),
            r#"{"plugin":"p","seq":1,"output":{"orders":[], "px":4500.10000000000001}}"#
        );
        assert_eq!(
            answer(b"{\n  \"ok\": true\n}\n"),
            r#"{"plugin":"p","seq":1,"output":{"ok":true}}"#
        );
        assert_eq!(
            answer(br#""ok""#),
            r#"{"plugin":"p","seq":1,"output":"\"ok\""}"#
        );
        assert_eq!(
            answer(b"not json \xff"),
            r#"{"plugin":"p","seq":1,"output":"not json �"}"#
        );
    }

    #[test]
    fn calls_are_paced_from_the_start_at_the_rate() {
        assert_eq!(pace(0, 1000), Duration::ZERO);
        assert_eq!(pace(3, 1000), Duration::from_millis(3));
        assert_eq!(pace(1, 3), Duration::from_nanos(333_333_333));
    }
}
