//! A registry over HTTP, against a server the test starts on loopback that answers as the
//! test scripts it: retries with backoff, a download cut off midway, timeouts, a 404, an
//! artifact whose bytes are not the ones the index records.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plugsync::registry::{HttpRegistry, IndexEntry, IndexFile, RegistryError, RetryPolicy};
use plugsync_host::Digest;

/// What the server does with one request.
#[derive(Debug, Clone)]
enum Answer {
    /// A full answer with this status and body.
    Full(u16, Vec<u8>),
    /// Headers announcing `len` bytes, then only `sent` of `body`, then the connection closed.
    CutOff { body: Vec<u8>, sent: usize },
    /// Accept, read the request, and never answer (until the test ends).
    Silent,
}

/// A server on 127.0.0.1 answering each request (any path) with the next scripted answer
/// (the last one repeats); records the paths asked.
struct Server {
    url: String,
    asked: Arc<Mutex<Vec<String>>>,
}

fn serve(answers: Vec<Answer>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/registry", listener.local_addr().unwrap());
    let asked = Arc::new(Mutex::new(Vec::new()));
    let log = asked.clone();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            reader.read_line(&mut line).unwrap_or_default();
            let path = line
                .split_whitespace()
                .nth(1)
                .unwrap_or_default()
                .to_owned();
            loop {
                let mut header = String::new();
                if reader.read_line(&mut header).unwrap_or(0) == 0 || header == "\r\n" {
                    break;
                }
            }
            log.lock().unwrap().push(path);
            let answer = answers[n.min(answers.len() - 1)].clone();
            let head = |status: u16, len: usize| {
                format!("HTTP/1.1 {status} X\r\ncontent-length: {len}\r\nconnection: close\r\n\r\n")
            };
            match answer {
                Answer::Full(status, body) => {
                    let _ = stream.write_all(head(status, body.len()).as_bytes());
                    let _ = stream.write_all(&body);
                }
                Answer::CutOff { body, sent } => {
                    let _ = stream.write_all(head(200, body.len()).as_bytes());
                    let _ = stream.write_all(&body[..sent]);
                }
                Answer::Silent => held.push(stream),
            }
        }
    });
    Server { url, asked }
}

fn quick() -> RetryPolicy {
    RetryPolicy {
        attempts: 3,
        first_backoff: Duration::from_millis(1),
        connect_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(5),
        max_bytes: 1 << 20,
    }
}

fn entry(bytes: &[u8]) -> IndexEntry {
    serde_json::from_value(serde_json::json!({
        "version": "1.0.0", "channel": "stable", "sha256": Digest::of(bytes).to_string(),
        "file": "artifacts/ma_cross/1.0.0/libma_cross_v1_0_0.so", "abi": "1.2",
        "framework": "^0.1", "kind": "strategy", "stateSchema": 1,
    }))
    .unwrap()
}

fn index_json(bytes: &[u8]) -> Vec<u8> {
    serde_json::to_vec(&IndexFile {
        plugin: "ma_cross".into(),
        versions: vec![entry(bytes)],
    })
    .unwrap()
}

#[test]
fn an_index_and_an_artifact_come_whole_after_passing_failures_are_retried() {
    let artifact = b"the library's bytes".to_vec();
    let server = serve(vec![
        Answer::Full(503, b"busy".to_vec()),
        Answer::Full(200, index_json(&artifact)),
        Answer::Full(502, Vec::new()),
        Answer::Full(200, artifact.clone()),
    ]);
    let registry = HttpRegistry::new(&server.url, None, quick()).unwrap();
    let index = registry.index("ma_cross").unwrap().unwrap();
    let bytes = registry.artifact("ma_cross", &index.versions[0]).unwrap();
    assert_eq!(bytes, artifact);
    assert_eq!(
        *server.asked.lock().unwrap(),
        [
            "/registry/index/ma_cross.json",
            "/registry/index/ma_cross.json",
            "/registry/artifacts/ma_cross/1.0.0/libma_cross_v1_0_0.so",
            "/registry/artifacts/ma_cross/1.0.0/libma_cross_v1_0_0.so",
        ]
    );
}

#[test]
fn a_download_that_dies_midway_every_time_is_an_error_after_the_retries() {
    let artifact = vec![7u8; 64 * 1024];
    let server = serve(vec![Answer::CutOff {
        body: artifact.clone(),
        sent: 1000,
    }]);
    let registry = HttpRegistry::new(&server.url, None, quick()).unwrap();
    let error = registry
        .artifact("ma_cross", &entry(&artifact))
        .unwrap_err();
    let RegistryError::Unreachable {
        attempts, cause, ..
    } = &error
    else {
        panic!("{error}");
    };
    assert_eq!(*attempts, 3);
    assert!(cause.contains("1000"), "{cause}");
    assert_eq!(server.asked.lock().unwrap().len(), 3);
}

#[test]
fn a_registry_that_never_answers_times_out() {
    let server = serve(vec![Answer::Silent]);
    let policy = RetryPolicy {
        attempts: 2,
        request_timeout: Duration::from_millis(200),
        ..quick()
    };
    let registry = HttpRegistry::new(&server.url, None, policy).unwrap();
    let error = registry.index("ma_cross").unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "cannot fetch `{}/index/ma_cross.json` after 2 attempts: timed out",
            server.url
        )),
        "{message}"
    );
}

#[test]
fn a_missing_index_is_none_and_other_bytes_are_refused_naming_both_digests() {
    let server = serve(vec![
        Answer::Full(404, Vec::new()),
        Answer::Full(200, b"other bytes".to_vec()),
        Answer::Full(403, Vec::new()),
    ]);
    let registry = HttpRegistry::new(&server.url, None, quick()).unwrap();
    assert_eq!(registry.index("ma_cross").unwrap(), None);
    let expected = entry(b"the library's bytes");
    let error = registry.artifact("ma_cross", &expected).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "the artifact of `ma_cross` 1.0.0 (`artifacts/ma_cross/1.0.0/libma_cross_v1_0_0.so`) \
             has sha256 {}, not the {} its index records: it was altered or corrupted; republish \
             it from its build",
            Digest::of(b"other bytes"),
            expected.sha256
        )
    );
    // A 403 is final: not retried.
    let refused = registry.index("ma_cross").unwrap_err();
    assert_eq!(
        refused.to_string(),
        format!("`{}/index/ma_cross.json` answered HTTP 403", server.url)
    );
    assert_eq!(server.asked.lock().unwrap().len(), 3);
}
