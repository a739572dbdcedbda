//! `plugsync run --alert-webhook` through the binary, against a real reference host: each
//! event of a scenario (an install, an upgrade committed, drift made by hand, an invalid edit)
//! reaches a webhook as a versioned JSON object valid against `schemas/alert.schema.json`, in
//! the order the events happened; a webhook that is down or never answers holds up neither the
//! reconciles nor the other webhooks; the Slack format names the plugin and its versions.
//!
//! The webhooks are tiny HTTP servers in the test on `127.0.0.1:0`. Nothing sleeps for a set
//! time: each test waits for the fact itself, polling.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::desk::*;
use support::sidecar::*;
use support::*;

/// A webhook that answers 200 to every POST and keeps the bodies, in the order received.
struct Webhook {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl Webhook {
    fn start() -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hooks/plugsync", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = Arc::clone(&bodies);
        // Ends with the test binary; one connection at a time, as the sidecar posts in order.
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                if let Some(body) = answer(stream) {
                    kept.lock().unwrap().push(body);
                }
            }
        });
        Webhook { url, bodies }
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

/// Reads one request (a `POST` with a `Content-Length`), answers 200 and closes; its body as
/// JSON.
fn answer(stream: TcpStream) -> Option<Value> {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    let mut reader = BufReader::new(stream);
    let mut length = 0;
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    assert!(
        request_line.starts_with("POST /hooks/plugsync "),
        "{request_line}"
    );
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    let mut stream = reader.into_inner();
    stream
        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
        .ok()?;
    Some(serde_json::from_slice(&body).expect("an alert is JSON"))
}

/// A webhook that accepts connections and never answers.
fn silent_webhook() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/slow", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            held.push(stream);
        }
    });
    url
}

/// A webhook URL nothing listens on (a port taken, then given back).
fn dead_webhook() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/dead", listener.local_addr().unwrap());
    drop(listener);
    url
}

/// Each alert as `event plugin from→to`, in the order received.
fn told(webhook: &Webhook) -> Vec<String> {
    (webhook.bodies().iter())
        .map(|alert| {
            let text = |key: &str| alert[key].as_str().unwrap_or("-").to_owned();
            format!(
                "{} {} {}→{}",
                text("event"),
                text("plugin"),
                text("from"),
                text("to")
            )
        })
        .collect()
}

/// Validates an alert against `schemas/alert.schema.json`.
fn check_schema(alert: &Value) {
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(Path::new(WORKSPACE).join("schemas/alert.schema.json")).unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(alert)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}\n{alert:#}");
}

/// The install and the upgrade to [`V1_1`], as a webhook is told them.
const INSTALL_AND_UPGRADE: [&str; 6] = [
    "step-started risk_model -→1.0.0",
    "step-committed risk_model -→1.0.0",
    "step-started ma_cross -→1.0.0",
    "step-committed ma_cross -→1.0.0",
    "step-started risk_model 1.0.0→1.1.0",
    "step-committed risk_model 1.0.0→1.1.0",
];

#[test]
fn each_event_of_a_scenario_reaches_the_webhook_in_order_as_a_valid_versioned_alert() {
    let desk = Desk::new();
    let webhook = Webhook::start();
    let file = desk.path().join("plugins.yaml");
    std::fs::write(&file, desired(&desk, V1)).unwrap();
    let sidecar = run(
        &desk,
        &file,
        &[
            "--alert-webhook",
            &webhook.url,
            "--drift",
            "report",
            "--drift-interval",
            "200ms",
        ],
    );
    eventually(&sidecar, "the install is told", || {
        told(&webhook).len() >= 4
    });
    std::fs::write(&file, desired(&desk, V1_1)).unwrap();
    eventually(&sidecar, "the upgrade is told", || {
        told(&webhook).len() >= 6
    });
    assert_eq!(told(&webhook), INSTALL_AND_UPGRADE);

    // Drift made by hand: told (once per plan; a check between the script's switch and its
    // commit may tell it twice), never healed.
    desk.switch_by("risk_model", RISK_MODEL_1_0_0, "an-operators-script");
    eventually(&sidecar, "the drift is told", || {
        told(&webhook).iter().any(|t| t.starts_with("drift-found"))
    });
    // An invalid edit.
    std::fs::write(
        &file,
        desired(&desk, &V1_1.replace("version: 1.1.0", "verison: 1.1.0")),
    )
    .unwrap();
    eventually(&sidecar, "the invalid edit is told", || {
        told(&webhook)
            .iter()
            .any(|t| t.starts_with("desired-invalid"))
    });

    let alerts = webhook.bodies();
    let mut events: Vec<String> = told(&webhook);
    events.dedup();
    assert_eq!(
        events[6..],
        ["drift-found - -→-", "desired-invalid - -→-"],
        "{alerts:#?}"
    );
    for alert in &alerts {
        check_schema(alert);
        assert_eq!(alert["apiVersion"], "plugsync/v1");
        assert_eq!(alert["kind"], "Alert");
        assert_eq!(alert["host"], desk.host.url.as_str());
        assert_eq!(alert["file"], file.display().to_string());
        assert!(alert["at"].as_str().unwrap().ends_with('Z'), "{alert}");
    }
    let upgrade = &alerts[5];
    assert_eq!(upgrade["event"], "step-committed");
    assert_eq!(upgrade["detail"]["title"], "risk_model 1.0.0 → 1.1.0");
    assert!(
        upgrade["detail"]["slotHeldUs"].is_u64(),
        "the switch's stall, measured by the host: {upgrade}"
    );
    assert_eq!(
        upgrade["step"], alerts[4]["step"],
        "started and ended: one step"
    );
    assert_eq!(
        upgrade["summary"],
        format!("risk_model 1.0.0 → 1.1.0: committed on {}", desk.host.url)
    );
    let drift = alerts.iter().find(|a| a["event"] == "drift-found").unwrap();
    assert_eq!(
        drift["detail"]["changes"][0],
        "risk_model: runs 1.0.0, plugins.yaml asks 1.1.0"
    );
    assert_eq!(drift["detail"]["healing"], false);
    let invalid = alerts.last().unwrap();
    let report = invalid["detail"]["report"].as_str().unwrap();
    assert!(report.contains("plugins.yaml:8:7"), "{report}");
    assert!(
        invalid["summary"]
            .as_str()
            .unwrap()
            .contains("is invalid (unknown key `verison` in a plugin): keeping the last good"),
        "{invalid}"
    );
    assert!(stop(sidecar).status.success());
}

#[test]
fn a_webhook_down_or_silent_stalls_neither_the_reconciles_nor_the_webhook_that_answers() {
    let desk = Desk::new();
    let good = Webhook::start();
    let (dead, silent) = (dead_webhook(), silent_webhook());
    let file = desk.path().join("plugins.yaml");
    std::fs::write(&file, desired(&desk, V1)).unwrap();
    let sidecar = run(
        &desk,
        &file,
        &[
            "--alert-webhook",
            &dead,
            "--alert-webhook",
            &silent,
            "--alert-webhook",
            &good.url,
            "--drift-interval",
            "1h",
        ],
    );
    eventually(&sidecar, "the first versions run", || {
        running(&desk) == ["ma_cross 1.0.0", "risk_model 1.0.0"]
    });
    std::fs::write(&file, desired(&desk, V1_1)).unwrap();
    eventually(&sidecar, "risk_model 1.1.0 is committed", || {
        running(&desk) == ["ma_cross 1.0.0", "risk_model 1.1.0"]
    });
    eventually(
        &sidecar,
        "the webhook that answers is told everything",
        || told(&good).len() >= 6,
    );
    assert_eq!(told(&good), INSTALL_AND_UPGRADE);

    // A stop gives up on what the others still owe after the drain time (3 s; the rest is
    // slack for a loaded machine): a post in flight to the silent webhook is cut short.
    let stopping = Instant::now();
    let stopped = stop(sidecar);
    assert!(stopped.status.success(), "{}", stopped.stderr);
    assert!(
        stopping.elapsed() < Duration::from_secs(15),
        "the stop took {:?}",
        stopping.elapsed()
    );
    let dead_name = dead.trim_end_matches("/hooks/dead");
    assert!(
        stopped.stderr.contains(&format!("webhook={dead_name}")),
        "the webhook down is named, without its path:\n{}",
        stopped.stderr
    );
    assert!(
        !stopped.stderr.contains("/hooks/"),
        "no log shows a webhook's path (it may be its secret):\n{}",
        stopped.stderr
    );
}

#[test]
fn the_slack_format_says_in_text_which_plugin_moved_between_which_versions() {
    let desk = Desk::new();
    let webhook = Webhook::start();
    let file = desk.path().join("plugins.yaml");
    std::fs::write(&file, desired(&desk, V1)).unwrap();
    let sidecar = run(
        &desk,
        &file,
        &[
            "--alert-webhook",
            &webhook.url,
            "--alert-format",
            "slack",
            "--drift-interval",
            "1h",
        ],
    );
    eventually(&sidecar, "the install is told", || {
        webhook.bodies().len() >= 4
    });
    std::fs::write(&file, desired(&desk, V1_1)).unwrap();
    eventually(&sidecar, "the upgrade is told", || {
        webhook.bodies().len() >= 6
    });
    let bodies = webhook.bodies();
    for body in &bodies {
        let object = body.as_object().unwrap();
        assert_eq!(object.len(), 1, "only `text`: {body}");
    }
    let text = bodies[5]["text"].as_str().unwrap();
    assert!(
        text.starts_with(
            ":white_check_mark: *plugsync* risk_model 1.0.0 → 1.1.0: committed on http://127.0.0.1:"
        ),
        "{text}"
    );
    assert!(text.contains("soak 300ms ✓"), "the details follow: {text}");
    assert!(stop(sidecar).status.success());
}

#[test]
fn the_alert_schema_in_schemas_is_the_one_the_types_give() {
    let text = plugsync::ops::schema(plugsync::ops::SchemaName::Alert);
    support::bless::check_blessed("schemas/alert.schema.json", &text, "sidecar_alerts");
    let printed = support::process::plugsync(&["schema", "alert"], &[]);
    assert_eq!(printed.stdout, text);
}
