//! `plugsync status`: what a running host runs, asked from its control API.
//!
//! 1. **connect**: check the host URL (`http://`, `https://` or `unix:PATH`), read the token
//!    file (and the pinned CA for `https://`);
//! 2. **ask**: `GET /v1/status` (`?with_state=true` for every plugin's state);
//! 3. **render**: a table (plugins, then resident libraries and what the host recovered from
//!    its store), or the JSON as the host sent it, pretty-printed with its key order kept.

use std::fmt::Write as _;
use std::path::PathBuf;

use serde_json::Value;

use super::operator_view::operator_view;
use crate::client::ControlClient;
use crate::error::{Error, Result};

/// How `status` prints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StatusFormat {
    /// A table for people.
    #[default]
    Text,
    /// The host's JSON (a contract), pretty-printed.
    Json,
}

/// Which host to ask, and how to print its answer.
#[derive(Debug, Clone, Default)]
pub struct StatusOptions {
    /// The host's control API URL (default `http://127.0.0.1:7077`): `http://`, `https://` or
    /// `unix:PATH`.
    pub host: Option<String>,
    /// The file holding the host's bearer token.
    pub token_file: Option<PathBuf>,
    /// The CA the host's certificate must verify against, for an `https://` host.
    pub tls_ca: Option<PathBuf>,
    /// How to print.
    pub format: StatusFormat,
    /// Also ask for every plugin's state.
    pub with_state: bool,
    /// plugins.yaml, to show desired against running (and drift, and what is kept).
    pub file: Option<PathBuf>,
    /// The state directory whose journal and rollback points to show.
    pub state_dir: Option<PathBuf>,
    /// The time plans are made for (`PLUGSYNC_NOW` in tests).
    pub now: jiff::Timestamp,
}

/// Asks the host what it runs and renders the answer.
pub fn status(options: &StatusOptions) -> Result<String> {
    let client = ControlClient::new(
        options.host.as_deref(),
        options.token_file.as_deref(),
        options.tls_ca.as_deref(),
    )?;
    let query: &[(&str, &str)] = if options.with_state {
        &[("with_state", "true")]
    } else {
        &[]
    };
    let body = client.get("v1/status", query)?;
    let view = match (&options.file, &options.state_dir) {
        (None, None) => None,
        (file, state_dir) => {
            let running = serde_json::from_str(&body).map_err(|error| Error::BadAnswer {
                url: client.url().to_owned(),
                status: 200,
                reason: format!("not a running state: {error}"),
            })?;
            let state_dir = state_dir.clone().unwrap_or_else(super::default_state_dir);
            Some(operator_view(
                &running,
                file.as_deref(),
                &state_dir,
                options.now,
            )?)
        }
    };
    Ok(match options.format {
        StatusFormat::Json => {
            // The operator's view under its own key: the rest reads back as the host's state.
            let body = match &view {
                Some(view) => {
                    let view = serde_json::to_string(view).unwrap_or_default();
                    let trimmed = body.trim_end().trim_end_matches('}');
                    format!("{trimmed},\"plugsync\":{view}}}")
                }
                None => body,
            };
            pretty_json(&body) + "\n"
        }
        StatusFormat::Text => {
            let status: Value = serde_json::from_str(&body).expect("the client checked it");
            let mut text = render(&status);
            if let Some(view) = &view {
                text.push_str(&view.text());
            }
            text
        }
    })
}

/// Pretty-prints JSON text with two-space indents, keeping the order of its keys (the host's
/// order is part of what it sent; parsing into a map would sort them). `text` must be JSON.
fn pretty_json(text: &str) -> String {
    fn newline(out: &mut String, indent: usize) {
        out.push('\n');
        out.extend(std::iter::repeat_n("  ", indent));
    }
    let mut out = String::with_capacity(text.len() * 2);
    let mut indent = 0;
    let (mut in_string, mut escaped) = (false, false);
    let mut chars = text.trim().chars().peekable();
    while let Some(c) = chars.next() {
        if in_string {
            out.push(c);
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_string = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                while chars.next_if(|c| c.is_whitespace()).is_some() {}
                match chars.next_if(|c| matches!(c, '}' | ']')) {
                    Some(close) => out.push(close),
                    None => {
                        indent += 1;
                        newline(&mut out, indent);
                    }
                }
            }
            '}' | ']' => {
                indent = indent.saturating_sub(1);
                newline(&mut out, indent);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, indent);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
}

/// The text of a JSON string, or `-`.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

/// The first 12 hex digits of a digest.
fn short(digest: &Value) -> String {
    let digest = text(digest);
    digest.get(..12).unwrap_or(&digest).to_owned()
}

/// `Ok(())` or the reason, from `{"status":"ok"}` / `{"status":"unhealthy","reason":"…"}`.
fn health(value: &Value) -> Result<(), String> {
    match value["status"].as_str() {
        Some("ok") => Ok(()),
        _ => Err(text(&value["reason"])),
    }
}

/// How long before the status's host time `now` the host time `at` was: `1.5 s ago`, or `-`.
fn ago(at: &Value, now: &Value) -> String {
    match (at.as_i64(), now.as_i64()) {
        (Some(at), Some(now)) => format!("{:.1} s ago", now.saturating_sub(at).max(0) as f64 / 1e9),
        _ => "-".to_owned(),
    }
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The table of what the host runs.
fn render(status: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    let plugins = status["plugins"].as_array().unwrap_or(&empty);
    let _ = writeln!(
        out,
        "host: plugin ABI {}, framework {}, {}",
        text(&status["abi"]),
        text(&status["framework"]),
        plural(plugins.len() as u64, "plugin", "plugins")
    );
    let holder = &status["lease"]["holder"];
    if !holder.is_null() {
        let left_ns =
            holder["expires_at"].as_i64().unwrap_or(0) - status["now"].as_i64().unwrap_or(0);
        let _ = writeln!(
            out,
            "reconcile lease: held by {} (epoch {}) for {:.1} s more",
            text(&holder["owner"]),
            text(&holder["epoch"]),
            left_ns.max(0) as f64 / 1e9
        );
    }
    let mut rows = vec![
        [
            "PLUGIN",
            "VERSION",
            "SHA256",
            "HEALTH",
            "FAULTED",
            "CALLS",
            "ERRORS",
            "PANICS",
            "LAST CALL",
            "PENDING STEP",
            "LAST STEP",
        ]
        .map(str::to_owned),
    ];
    let mut notes = Vec::new();
    let restraints = &status["restraints"];
    let freeze = &restraints["freeze"];
    if !freeze.is_null() {
        let _ = writeln!(
            out,
            "frozen by {}: {}; switch, install and unload are refused unless forced (lift: \
             `plugsync unfreeze`)",
            text(&freeze["by"]),
            text(&freeze["reason"])
        );
    }
    let empty_map = serde_json::Map::new();
    for (plugin, because) in restraints["holds"].as_object().unwrap_or(&empty_map) {
        notes.push(format!(
            "{plugin}: held at its running version by {}: {} (release: `plugsync release \
             {plugin}`)",
            text(&because["by"]),
            text(&because["reason"])
        ));
    }
    for (plugin, because) in restraints["halts"].as_object().unwrap_or(&empty_map) {
        notes.push(format!(
            "{plugin}: halted by {}: {}; its calls are refused",
            text(&because["by"]),
            text(&because["reason"])
        ));
    }
    for mark in restraints["failed"].as_array().unwrap_or(&empty) {
        notes.push(format!(
            "{}: {} ({}) is marked failed: {}; not retried (clear: `plugsync retry {}`, or \
             change its entry in plugins.yaml)",
            text(&mark["plugin"]),
            text(&mark["version"]),
            short(&mark["digest"]),
            text(&mark["because"]["reason"]),
            text(&mark["plugin"]),
        ));
    }
    for plugin in plugins {
        let id = text(&plugin["plugin"]);
        let health = match health(&plugin["health"]) {
            Ok(()) => "ok".to_owned(),
            Err(reason) => {
                notes.push(format!("{id}: unhealthy: {reason}"));
                "failing".to_owned()
            }
        };
        let fault = &plugin["fault"];
        let faulted = if fault.is_null() {
            "no".to_owned()
        } else {
            notes.push(format!(
                "{id}: faulted by a panic in call #{}: {}",
                text(&fault["seq"]),
                text(&fault["message"])
            ));
            format!("call #{}", text(&fault["seq"]))
        };
        let pending = &plugin["pending"];
        let pending = if pending.is_null() {
            "-".to_owned()
        } else {
            let mut words = format!(
                "from {}, {}",
                text(&pending["previous"]["version"]),
                plural(
                    pending["calls_since_switch"].as_u64().unwrap_or(0),
                    "call",
                    "calls"
                )
            );
            if let Some(step) = pending["step_id"].as_str() {
                let _ = write!(words, " (step {step})");
            }
            words
        };
        let last = &plugin["last_step"];
        let last = if last.is_null() {
            "-".to_owned()
        } else {
            // `rolled_back` on the wire, "rolled back" to a reader.
            let outcome = text(&last["outcome"]).replace('_', " ");
            format!("{} {outcome}", text(&last["version"]))
        };
        if plugin["busy"].as_bool() == Some(true) {
            notes.push(format!(
                "{id}: busy: its slot was held when status looked (a long call or a switch); \
                 shown as last seen"
            ));
        }
        let stuck = &plugin["stuck"];
        if !stuck.is_null() {
            notes.push(format!(
                "{id}: stuck: call #{} has run for {} ms, longer than the host's call \
                 watchdog allows; it cannot be cancelled in-process",
                text(&stuck["seq"]),
                text(&stuck["running_ms"])
            ));
        }
        let counters = &plugin["counters"];
        rows.push([
            id,
            text(&plugin["version"]["version"]),
            short(&plugin["version"]["digest"]),
            health,
            faulted,
            text(&counters["calls"]),
            text(&counters["errors"]),
            text(&counters["panics"]),
            ago(&plugin["last_call_at"], &status["now"]),
            pending,
            last,
        ]);
    }
    if plugins.is_empty() {
        out.push_str("no plugin is loaded\n");
    } else {
        table(&mut out, &rows, &[5, 6, 7]);
    }
    for note in notes {
        let _ = writeln!(out, "  {note}");
    }

    let mut resident: Vec<&Value> = status["resident"]
        .as_array()
        .unwrap_or(&empty)
        .iter()
        .collect();
    resident.sort_by_key(|library| {
        let version = text(&library["version"]["version"]);
        (
            text(&library["plugin"]),
            semver::Version::parse(&version).ok(),
            version,
        )
    });
    let _ = writeln!(
        out,
        "\nresident libraries ({} mapped, at most {} versions per plugin; code is never unmapped):",
        resident.len(),
        text(&status["resident_cap"])
    );
    for library in resident {
        let live = library["live_instances"].as_u64().unwrap_or(0);
        let _ = writeln!(
            out,
            "  {} {} ({}): {}",
            text(&library["plugin"]),
            text(&library["version"]["version"]),
            short(&library["version"]["digest"]),
            plural(live, "live instance", "live instances")
        );
    }

    let recovered = status["recovered"]["plugins"].as_array().unwrap_or(&empty);
    if !recovered.is_empty() {
        let _ = writeln!(out, "\nrecovered from its store when it started:");
        for plugin in recovered {
            let checkpoint = &plugin["checkpoint"];
            let state = match checkpoint["status"].as_str() {
                Some("restored") => {
                    format!("its checkpointed state{}", describe_snapshot(checkpoint))
                }
                Some("migrated") => format!(
                    "the checkpointed state of {}{}, migrated forward",
                    text(&checkpoint["from"]["version"]),
                    describe_snapshot(checkpoint)
                ),
                Some("missing") => "a fresh state (no checkpoint)".to_owned(),
                Some("fresh") => format!(
                    "a fresh state, as the operator chose (`--fresh-state`): {}",
                    text(&checkpoint["reason"])
                ),
                Some("not_started") => {
                    let _ = writeln!(
                        out,
                        "  {} {} ({}) was not started: {}",
                        text(&plugin["plugin"]),
                        text(&plugin["version"]["version"]),
                        short(&plugin["version"]["digest"]),
                        text(&checkpoint["reason"])
                    );
                    continue;
                }
                _ => "an unknown state".to_owned(),
            };
            let _ = writeln!(
                out,
                "  {} {} ({}) with {state}",
                text(&plugin["plugin"]),
                text(&plugin["version"]["version"]),
                short(&plugin["version"]["digest"]),
            );
        }
    }
    if let Some(error) = status["persist_error"].as_str() {
        let _ = writeln!(
            out,
            "\nwarning: the host cannot persist to its store (a restart would come back on an \
             older committed set): {error}"
        );
    }
    render_states(&mut out, &status["states"]);
    out
}

/// The states of `?with_state=true`: per plugin, a snapshot (`state` as JSON text or value).
fn render_states(out: &mut String, states: &Value) {
    let entries: Vec<(String, &Value)> = match states {
        Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v)).collect(),
        Value::Array(list) => list.iter().map(|v| (text(&v["plugin"]), v)).collect(),
        _ => return,
    };
    for (plugin, snapshot) in entries {
        let (state, about) = match &snapshot["state"] {
            Value::String(json) => (pretty_json(json), describe_snapshot(snapshot)),
            Value::Null => (pretty_json(&snapshot.to_string()), String::new()),
            value => (pretty_json(&value.to_string()), describe_snapshot(snapshot)),
        };
        let _ = writeln!(out, "\nstate of {plugin}{about}:");
        for line in state.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
}

fn describe_snapshot(snapshot: &Value) -> String {
    let mut about = Vec::new();
    // Sequence numbers count the calls of this run of the host: 0 is "none yet".
    if let Some(seq) = snapshot["seq"].as_u64().filter(|seq| *seq > 0) {
        about.push(format!("as of call #{seq}"));
    }
    if snapshot["sha256"].is_string() {
        about.push(format!("sha256 {}", short(&snapshot["sha256"])));
    }
    if about.is_empty() {
        String::new()
    } else {
        format!(" ({})", about.join(", "))
    }
}

/// Writes rows as aligned columns (two spaces apart); the columns in `right` are right-aligned.
fn table<const N: usize>(out: &mut String, rows: &[[String; N]], right: &[usize]) {
    let mut widths = [0; N];
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in rows {
        let mut line = String::new();
        for (i, (cell, width)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            if right.contains(&i) {
                let _ = write!(line, "{cell:>width$}");
            } else {
                let _ = write!(line, "{cell:<width$}");
            }
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pretty_json_keeps_the_key_order_and_strings() {
        let check = |input: &str, expected: &str| {
            let pretty = pretty_json(input);
            assert_eq!(pretty, expected, "{input}");
            let (a, b): (Value, Value) = (
                serde_json::from_str(input).unwrap(),
                serde_json::from_str(&pretty).unwrap(),
            );
            assert_eq!(a, b);
        };
        check(
            r#"{"z":1,"a":[1,2]}"#,
            "{\n  \"z\": 1,\n  \"a\": [\n    1,\n    2\n  ]\n}",
        );
        check(
            r#"{"a":{},"b":[ ],"c":null}"#,
            "{\n  \"a\": {},\n  \"b\": [],\n  \"c\": null\n}",
        );
        check(
            r#"["a,b:{c}", "q\"}", "\\"]"#,
            "[\n  \"a,b:{c}\",\n  \"q\\\"}\",\n  \"\\\\\"\n]",
        );
        check("{\n    \"x\" :  [ 1 ]\n}\n", "{\n  \"x\": [\n    1\n  ]\n}");
        check("3", "3");
    }

    #[test]
    fn health_reads_the_status_forms() {
        assert_eq!(health(&serde_json::json!({"status": "ok"})), Ok(()));
        assert_eq!(
            health(&serde_json::json!({"status": "unhealthy", "reason": "stale"})),
            Err("stale".to_owned())
        );
    }

    #[test]
    fn busy_stuck_and_not_started_plugins_and_a_held_lease_are_said_so() {
        let digest = "a".repeat(64);
        let plugin = |id: &str, busy: bool, stuck: serde_json::Value| {
            serde_json::json!({
                "plugin": id, "version": {"version": "2.0.0", "digest": digest},
                "health": {"status": "ok"}, "fault": null,
                "counters": {"calls": 7, "errors": 0, "panics": 0},
                "last_call_at": if busy { 998_500_000_000i64 } else { 999_999_000_000 },
                "pending": null, "last_step": null, "busy": busy, "stuck": stuck,
            })
        };
        let status = serde_json::json!({
            "abi": 1, "framework": "0.1.0", "now": 1_000_000_000_000i64,
            "lease": {"holder": {"owner": "sidecar", "epoch": 3, "expires_at": 1_012_300_000_000i64}},
            "restraints": {
                "freeze": {"reason": "US open", "by": "ops"},
                "holds": {"risk_model": {"reason": "under review", "by": "ops"}},
                "halts": {},
                "failed": [{"plugin": "ma_cross", "version": "2.0.1", "digest": digest,
                            "because": {"reason": "rolled back: lease of 600000 ms expired", "by": "host"}}],
            },
            "plugins": [
                plugin("ma_cross", true, serde_json::json!({"seq": 8, "running_ms": 1500})),
                plugin("risk_model", false, serde_json::Value::Null),
            ],
            "resident": [], "resident_cap": 8,
            "recovered": {"plugins": [{
                "plugin": "vwap", "version": {"version": "1.0.0", "digest": digest},
                "checkpoint": {"status": "not_started", "reason": "its checkpoint does not verify"},
            }]},
        });
        expect_test::expect![[r#"
            host: plugin ABI 1, framework 0.1.0, 2 plugins
            reconcile lease: held by sidecar (epoch 3) for 12.3 s more
            frozen by ops: US open; switch, install and unload are refused unless forced (lift: `plugsync unfreeze`)
            PLUGIN      VERSION  SHA256        HEALTH  FAULTED  CALLS  ERRORS  PANICS  LAST CALL  PENDING STEP  LAST STEP
            ma_cross    2.0.0    aaaaaaaaaaaa  ok      no           7       0       0  1.5 s ago  -             -
            risk_model  2.0.0    aaaaaaaaaaaa  ok      no           7       0       0  0.0 s ago  -             -
              risk_model: held at its running version by ops: under review (release: `plugsync release risk_model`)
              ma_cross: 2.0.1 (aaaaaaaaaaaa) is marked failed: rolled back: lease of 600000 ms expired; not retried (clear: `plugsync retry ma_cross`, or change its entry in plugins.yaml)
              ma_cross: busy: its slot was held when status looked (a long call or a switch); shown as last seen
              ma_cross: stuck: call #8 has run for 1500 ms, longer than the host's call watchdog allows; it cannot be cancelled in-process

            resident libraries (0 mapped, at most 8 versions per plugin; code is never unmapped):

            recovered from its store when it started:
              vwap 1.0.0 (aaaaaaaaaaaa) was not started: its checkpoint does not verify
        "#]]
        .assert_eq(&render(&status));
    }
}
