//! What a step reports, and how the demo prints it.
//!
//! The control API answers a switch with the JSON of the runtime's [`SwapReport`] and a
//! rollback with that of its [`RollbackReport`], which read back into those very types; in one
//! process the demo has the values themselves. Both modes print from one code path.

use std::io::Write;

use plugsync_host::{RollbackMethod, RollbackReport, SwapPath, SwapReport};
use serde_json::{Value, json};

/// Elides price windows so a state fits on a screen.
fn elide(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| match v {
                    Value::Array(items) if items.len() > 4 => {
                        (k.clone(), json!(format!("[{} values]", items.len())))
                    }
                    _ => (k.clone(), elide(v)),
                })
                .collect(),
        ),
        other => other.clone(),
    }
}

/// The first instrument of a state, with the top-level fields: enough to see a migration.
fn excerpt(state: &Value) -> String {
    let mut shown = serde_json::Map::new();
    if let Value::Object(map) = state {
        for (key, value) in map {
            if key == "instruments" {
                if let Some((name, first)) = value.as_object().and_then(|m| m.iter().next()) {
                    shown.insert(
                        key.clone(),
                        json!({ name: elide(first), "…": "one instrument of many shown" }),
                    );
                }
            } else {
                shown.insert(key.clone(), elide(value));
            }
        }
    }
    serde_json::to_string_pretty(&Value::Object(shown)).unwrap_or_default() + "\n"
}

/// The state diff, the switch and the verification of a step.
pub(super) fn print_switch(out: &mut dyn Write, report: &SwapReport) {
    let before = excerpt(&report.state_before);
    let after = excerpt(&report.state_after);
    let _ = writeln!(
        out,
        "  state migrated {} -> {} (diff of one instrument and the top-level fields):",
        report.from.version, report.to.version
    );
    let diff = similar::TextDiff::from_lines(&before, &after);
    let header_old = format!("state {}", report.from.version);
    let header_new = format!("state {}", report.to.version);
    for line in diff
        .unified_diff()
        .context_radius(2)
        .header(&header_old, &header_new)
        .to_string()
        .lines()
    {
        let _ = writeln!(out, "    {line}");
    }
    let path = match &report.path {
        SwapPath::Optimistic => format!("optimistic, {} calls caught up", report.caught_up),
        SwapPath::Locked { reason } => format!("under the lock ({reason})"),
    };
    let _ = writeln!(
        out,
        "  switch: {path}; slot held {:.1} µs; cut at call #{}, switched at #{}",
        report.locked_window.as_secs_f64() * 1e6,
        report.cut_seq,
        report.switched_seq
    );
    let verification = &report.verification;
    let probes: Vec<String> = verification
        .probes
        .iter()
        .map(|p| {
            let passed = if p.passed() { "passed" } else { "FAILED" };
            format!("`{}` {passed}", p.name)
        })
        .collect();
    let differing = verification
        .differential
        .iter()
        .filter(|r| !r.agrees())
        .count();
    let _ = writeln!(
        out,
        "  verified before the switch: health {}, probes {}, differential {} inputs ({} differ)",
        match &verification.health {
            Some(Ok(())) => "ok".to_owned(),
            Some(Err(e)) => format!("FAILED ({e})"),
            None => "skipped".to_owned(),
        },
        if probes.is_empty() {
            "none".to_owned()
        } else {
            probes.join(", ")
        },
        verification.differential.len(),
        differing
    );
}

/// A rollback: why, who asked for it when it was not the runtime itself, and how the state
/// came back.
pub(super) fn print_rollback(out: &mut dyn Write, report: &RollbackReport, by: Option<&str>) {
    let restored = report
        .to
        .as_ref()
        .map_or("nothing", |to| to.version.as_str());
    let _ = writeln!(
        out,
        "  ROLLED BACK {} -> {}: {}",
        report.from,
        report.serving(),
        report.reason
    );
    if let Some(by) = by {
        let _ = writeln!(out, "  ({by})");
    }
    match &report.method {
        RollbackMethod::Replay {
            replayed,
            divergences,
        } => {
            let _ = writeln!(
                out,
                "  state carried back by replay: {replayed} calls replayed into {restored}, {} outputs differ",
                divergences.len()
            );
            if !divergences.is_empty() {
                let _ = writeln!(
                    out,
                    "  (orders one version sent and the other would not have: the host owns them and \
                     reconciles; positions follow fills, so the books still match)"
                );
            }
            for d in divergences.iter().take(2) {
                let _ = writeln!(
                    out,
                    "    call #{}: {} answered {:?}, {} computes {:?}",
                    d.seq, report.from.version, d.new_output, restored, d.old_output
                );
            }
        }
        RollbackMethod::DownMigration {
            unjournaled_calls, ..
        } => {
            let _ = writeln!(
                out,
                "  state carried back by down-migration ({unjournaled_calls} calls were beyond the journal)"
            );
        }
        RollbackMethod::Lossy { lost } => {
            let _ = writeln!(
                out,
                "  LOST {} calls (#{}..#{}): {}",
                lost.count, lost.first_seq, lost.last_seq, lost.why
            );
        }
        RollbackMethod::Unloaded { .. } => {
            let _ = writeln!(out, "  the install was undone: the plugin is not loaded");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use plugsync_host::{
        DifferentialRow, Digest, Divergence, LostCalls, ProbeOutcome, RollbackReason,
        TransitionKind, VerifyReport, VersionRef,
    };

    use super::*;

    fn version(v: &str, byte: u8) -> VersionRef {
        VersionRef {
            version: v.to_owned(),
            digest: Digest::of(&[byte]),
        }
    }

    fn rollback(reason: RollbackReason, method: RollbackMethod) -> RollbackReport {
        RollbackReport {
            asked_by: None,
            plugin: "ma_cross".into(),
            from: version("2.0.1", 1),
            to: Some(version("1.0.0", 0)),
            reason,
            method,
            calls_since_switch: 3,
        }
    }

    /// A report as the demo reads it from a host: its JSON, read back.
    fn through_json<T: serde::Serialize + serde::de::DeserializeOwned>(report: &T) -> T {
        serde_json::to_string(report)
            .and_then(|text| serde_json::from_str(&text))
            .unwrap()
    }

    /// Every reason and method the runtime reports reads back equal from its JSON (what the
    /// demo gets from a host), and prints as it is.
    #[test]
    fn rollback_reports_read_back_from_their_json() {
        let reasons = [
            RollbackReason::Requested,
            RollbackReason::CallPanicked {
                seq: 7,
                message: "boom".into(),
            },
            RollbackReason::HealthFailed {
                message: "desynchronised".into(),
            },
            RollbackReason::LeaseExpired { lease_ms: 5000 },
            RollbackReason::SoakThreshold {
                threshold: "max_error_rate 0".into(),
                observed: "1 of 9 calls failed".into(),
            },
        ];
        let methods = [
            RollbackMethod::Replay {
                replayed: 3,
                divergences: vec![Divergence {
                    seq: 2,
                    input: "{}".into(),
                    new_output: Ok("a".into()),
                    old_output: Err("b".into()),
                }],
            },
            RollbackMethod::DownMigration {
                unjournaled_calls: 4,
                state: json!({}),
                in_doubt_call: Some(9),
            },
            RollbackMethod::Lossy {
                lost: LostCalls {
                    count: 2,
                    first_seq: 5,
                    last_seq: 6,
                    why: "no down-migration".into(),
                    abandoned_state: Some(json!({"closes": [1.5]})),
                },
            },
        ];
        for reason in &reasons {
            for method in &methods {
                let report = rollback(reason.clone(), method.clone());
                assert_eq!(through_json(&report), report);
                let mut printed = Vec::new();
                print_rollback(&mut printed, &report, None);
                let first = format!(
                    "  ROLLED BACK {} -> {}: {reason}",
                    report.from,
                    report.serving()
                );
                let printed = String::from_utf8(printed).unwrap();
                assert_eq!(printed.lines().next(), Some(first.as_str()), "{printed}");
            }
        }
    }

    #[test]
    fn swap_reports_read_back_from_their_json_and_print() {
        let report = SwapReport {
            plugin: "ma_cross".into(),
            from: version("1.0.0", 0),
            to: version("2.0.0", 2),
            kind: TransitionKind::Upgrade,
            config_before: json!({}),
            config_after: json!({}),
            state_before: json!({"fast_ma_period": 5}),
            state_before_sha256: Digest::of(b"{}"),
            state_after: json!({"fast_period": 5}),
            cut_seq: 10,
            switched_seq: 12,
            caught_up: 2,
            path: SwapPath::Locked {
                reason: "outputs differ".into(),
            },
            locked_window: Duration::from_micros(250),
            verification: VerifyReport {
                health: Some(Err("sick".into())),
                probes: vec![ProbeOutcome {
                    name: "crossover buys".into(),
                    mismatches: Vec::new(),
                    error: Some("cannot restore".into()),
                }],
                differential: vec![DifferentialRow {
                    input: json!({}),
                    old: Ok(json!({"orders": []})),
                    new: Err("no".into()),
                }],
            },
            replaced_fault: None,
            state_discarded: false,
        };
        assert_eq!(through_json(&report), report);
        let mut printed = Vec::new();
        print_switch(&mut printed, &report);
        let printed = String::from_utf8(printed).unwrap();
        for line in [
            "  state migrated 1.0.0 -> 2.0.0 (diff of one instrument and the top-level fields):",
            "    -  \"fast_ma_period\": 5",
            "  switch: under the lock (outputs differ); slot held 250.0 µs; cut at call #10, switched at #12",
            "  verified before the switch: health FAILED (sick), probes `crossover buys` FAILED, differential 1 inputs (1 differ)",
        ] {
            assert!(printed.lines().any(|l| l == line), "{line}\n{printed}");
        }
    }
}
