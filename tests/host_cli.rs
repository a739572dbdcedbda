//! `plugsync host` and `plugsync status` through the real binary: a host started with the
//! example plugins answers `status` (table and JSON); every refusal is one clear line and
//! exit 1; SIGTERM stops a trading host cleanly; a host killed with SIGKILL after two commits
//! comes back on its committed set with the checkpointed states, from its store alone, and one
//! killed while it trades with its latest periodic checkpoint; a host fed a file of calls (`--feed FILE`) writes each answer in order, and a bad feed file refuses
//! the start, naming the line.
//!
//! Every host runs with `--feed off` except where trading is the point (the feed only
//! supplies state; no assertion depends on what it traded). Waits are deadlines on what the
//! host prints or answers, never sleeps; every child is killed when its guard drops, so a
//! failing test leaves no host behind.

mod support;

use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use expect_test::{Expect, expect};
use serde_json::{Value, json};
use support::process::*;
use support::*;

const TOKEN: &str = "test-token-0123456789abcdef";

/// Makes output comparable: temporary paths become `[ROOT]`, the host URL `[HOST]`, digests
/// `[HASH]`, and short digests `[SHORT]` padded to their width (tables stay aligned).
fn normalised(text: &str, root: &Path, host: Option<&str>) -> String {
    let text = match host {
        Some(url) => text.replace(url, "[HOST]"),
        None => text.to_owned(),
    };
    normalise(&text, root).replace("[SHORT]", "[SHORT]     ")
}

fn check(actual: &str, expected: &Expect) {
    expected.assert_eq(actual);
}

/// Checks that `plugsync ARGS` exits 1 with exactly `expected` on stderr and nothing on stdout.
fn refused(finished: &Finished, root: &Path, host: Option<&str>, expected: &str) {
    assert_eq!(
        (
            finished.status.code(),
            normalised(&finished.stderr, root, host).as_str(),
            finished.stdout.as_str()
        ),
        (Some(1), expected, ""),
    );
}

#[test]
fn status_shows_what_a_host_started_with_two_plugins_runs() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), "token", TOKEN, 0o600);
    let host = Host::start(
        &dir.path().join("store"),
        &token,
        &[
            OsStr::new("--feed"),
            "off".as_ref(),
            "--load".as_ref(),
            lib(MA_CROSS_1_0_0).as_os_str(),
            "--load".as_ref(),
            lib(RISK_MODEL_1_0_0).as_os_str(),
        ],
    );

    let text = host.status(&token, &[]);
    assert_eq!(text.status.code(), Some(0), "{}", text.stderr);
    check(
        &normalised(&text.stdout, dir.path(), Some(&host.url)),
        &expect![[r#"
            host: plugin ABI 1, framework 0.1.0, 2 plugins
            PLUGIN      VERSION  SHA256        HEALTH  FAULTED  CALLS  ERRORS  PANICS  LAST CALL  PENDING STEP  LAST STEP
            ma_cross    1.0.0    [SHORT]       ok      no           0       0       0  -          -             -
            risk_model  1.0.0    [SHORT]       ok      no           0       0       0  -          -             -

            resident libraries (2 mapped, at most 8 versions per plugin; code is never unmapped):
              ma_cross 1.0.0 ([SHORT]     ): 1 live instance
              risk_model 1.0.0 ([SHORT]     ): 1 live instance
        "#]],
    );
    assert_eq!(text.stderr, "");

    let with_state = host.status(&token, &["--with-state"]);
    assert_eq!(with_state.status.code(), Some(0), "{}", with_state.stderr);
    assert!(
        with_state.stdout.starts_with(&text.stdout),
        "{}",
        with_state.stdout
    );
    check(
        &normalised(&with_state.stdout[text.stdout.len()..], dir.path(), None),
        &expect![[r#"

            state of ma_cross (sha256 [SHORT]     ):
              {
                "fast_ma_period": 5,
                "slow_ma_period": 20,
                "order_qty": 1,
                "next_order_id": 1,
                "instruments": {}
              }

            state of risk_model (sha256 [SHORT]     ):
              {
                "max_position": 10,
                "rejected": 0,
                "instruments": {}
              }
        "#]],
    );

    let json_out = host.status(&token, &["--output", "json"]);
    assert_eq!(json_out.status.code(), Some(0), "{}", json_out.stderr);
    assert!(
        json_out.stdout.starts_with("{\n  \""),
        "pretty JSON: {}",
        json_out.stdout
    );
    let status = json(json_out.stdout.as_bytes());
    for field in [
        "abi",
        "framework",
        "now",
        "plugins",
        "resident",
        "resident_cap",
        "live_instances",
        "recovered",
        "persist_error",
        "lease",
    ] {
        assert!(status.get(field).is_some(), "no `{field}` in {status:#}");
    }
    assert!(status.get("states").is_none(), "states only when asked");
    let plugins = status["plugins"].as_array().unwrap();
    let versions: Vec<(&str, &str, String)> = plugins
        .iter()
        .map(|p| {
            (
                p["plugin"].as_str().unwrap(),
                p["version"]["version"].as_str().unwrap(),
                p["version"]["digest"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        versions,
        [
            ("ma_cross", "1.0.0", digest_of(MA_CROSS_1_0_0).to_string()),
            (
                "risk_model",
                "1.0.0",
                digest_of(RISK_MODEL_1_0_0).to_string()
            ),
        ]
    );
    for plugin in plugins {
        // Loaded by the host at its start, not by a client: recorded as such.
        let applied = &plugin["applied"];
        assert_eq!(
            (&applied["operation"], &applied["origin"]),
            (&json!("load"), &Value::Null),
            "{applied:#}"
        );
        for field in [
            "config",
            "config_hash",
            "state_schema",
            "health",
            "fault",
            "counters",
            "pending",
            "last_step",
            "last_rollback",
        ] {
            assert!(plugin.get(field).is_some(), "no `{field}` in {plugin:#}");
        }
        assert_eq!(plugin["config"], json!({}));
    }
    assert_eq!(status["recovered"]["plugins"], json!([]));

    let with_state = host.status(&token, &["--output", "json", "--with-state"]);
    let states = &json(with_state.stdout.as_bytes())["states"];
    assert_eq!(states["ma_cross"]["version"]["version"], "1.0.0");
    assert_eq!(states["risk_model"]["version"]["version"], "1.0.0");

    let stopped = host.terminate();
    assert_eq!(stopped.status.code(), Some(0), "{}", stopped.stderr);
    assert!(
        stopped.stderr.contains("the feed is off (`--feed off`)"),
        "{}",
        stopped.stderr
    );
    assert!(
        stopped.stderr.trim_end().ends_with("stopped"),
        "{}",
        stopped.stderr
    );
}

#[test]
fn status_refusals_are_one_line_each() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let token = token_file(root, "token", TOKEN, 0o600);
    let wrong = token_file(root, "wrong-token", "not-the-token", 0o600);
    let host = Host::start(&root.join("store"), &token, &["--feed", "off"]);
    let url = host.url.clone();
    let missing = root.join("missing");
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let status = |args: &[&OsStr], env: &[(&str, &OsStr)], shown: Option<&str>, expected: &str| {
        let mut all = vec![OsStr::new("status")];
        all.extend(args);
        refused(&plugsync(&all, env), root, shown, expected);
    };
    let (url_arg, token_arg) = (OsStr::new(&url), token.as_os_str());
    status(
        &["--host".as_ref(), url_arg],
        &[],
        None,
        "error: no token file given: pass `--token-file FILE` or set `PLUGSYNC_TOKEN_FILE` (the \
         file holding the host's control API token)\n",
    );
    status(
        &[
            "--host".as_ref(),
            url_arg,
            "--token-file".as_ref(),
            missing.as_os_str(),
        ],
        &[],
        None,
        "error: cannot read the token file `[ROOT]/missing`: No such file or directory (os error \
         2)\n",
    );
    status(
        &[
            "--host".as_ref(),
            url_arg,
            "--token-file".as_ref(),
            wrong.as_os_str(),
        ],
        &[],
        Some(&url),
        "error: the plugsync host at [HOST] refused the token in `[ROOT]/wrong-token`: check that \
         it matches the host's `--token-file`\n",
    );
    // The same from the environment.
    status(
        &[],
        &[
            ("PLUGSYNC_HOST", url_arg),
            ("PLUGSYNC_TOKEN_FILE", wrong.as_os_str()),
        ],
        Some(&url),
        "error: the plugsync host at [HOST] refused the token in `[ROOT]/wrong-token`: check that \
         it matches the host's `--token-file`\n",
    );
    status(
        &[
            "--host".as_ref(),
            closed.as_ref(),
            "--token-file".as_ref(),
            token_arg,
        ],
        &[],
        Some(&closed),
        "error: cannot reach the plugsync host at [HOST]: connection refused; is `plugsync host` \
         running?\n",
    );
    status(
        &[
            "--host".as_ref(),
            "foo".as_ref(),
            "--token-file".as_ref(),
            token_arg,
        ],
        &[],
        None,
        "error: `foo` is not a valid host URL: expected e.g. `http://127.0.0.1:7077`, \
         `https://host.example:7077` or `unix:/run/plugsync/control.sock`\n",
    );
    status(
        &[],
        &[
            ("PLUGSYNC_HOST", "127.0.0.1:7077".as_ref()),
            ("PLUGSYNC_TOKEN_FILE", token_arg),
        ],
        None,
        "error: `127.0.0.1:7077` is not a valid host URL: expected e.g. \
         `http://127.0.0.1:7077`, `https://host.example:7077` or \
         `unix:/run/plugsync/control.sock`\n",
    );
    // The right token still works: the refusals changed nothing.
    assert_eq!(host.status(&token, &[]).status.code(), Some(0));
}

#[test]
fn a_host_refuses_to_start_without_a_private_token_file_or_on_a_remote_address() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = root.join("store");
    let private = token_file(root, "token", TOKEN, 0o600);
    let open = token_file(root, "open-token", TOKEN, 0o644);
    let host = |args: &[&OsStr]| {
        let mut all: Vec<&OsStr> = vec![
            "host".as_ref(),
            "--store".as_ref(),
            store.as_os_str(),
            "--feed".as_ref(),
            "off".as_ref(),
        ];
        all.extend(args);
        plugsync(&all, &[])
    };
    refused(
        &host(&["--listen".as_ref(), "127.0.0.1:0".as_ref()]),
        root,
        None,
        "error: no token file given: pass `--token-file FILE` or set `PLUGSYNC_TOKEN_FILE` (the \
         file holding the host's control API token)\n",
    );
    refused(
        &host(&[
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--token-file".as_ref(),
            open.as_os_str(),
        ]),
        root,
        None,
        "error: token file `[ROOT]/open-token` has mode 0644, so other users can read or change \
         it: run `chmod 600 [ROOT]/open-token`\n",
    );
    refused(
        &host(&[
            "--listen".as_ref(),
            "0.0.0.0:0".as_ref(),
            "--token-file".as_ref(),
            private.as_os_str(),
        ]),
        root,
        None,
        "error: refusing to listen on `0.0.0.0:0`: it is not a loopback address, and whoever \
         reaches the control API can change what the host runs; listen on `127.0.0.1` or a unix \
         socket (`--listen unix:PATH`), or pass `--allow-remote` with `--tls-cert FILE \
         --tls-key FILE` to accept other machines over HTTPS\n",
    );
    refused(
        &host(&[
            "--listen".as_ref(),
            "0.0.0.0:0".as_ref(),
            "--allow-remote".as_ref(),
            "--token-file".as_ref(),
            private.as_os_str(),
        ]),
        root,
        None,
        "error: refusing to serve plain HTTP on `0.0.0.0:0`: it is not a loopback address, and \
         the bearer token would cross the network in clear; pass `--tls-cert FILE --tls-key \
         FILE` (PEM) to serve HTTPS, or listen on `127.0.0.1` or a unix socket (`--listen \
         unix:PATH`)\n",
    );
    // A usage error: clap's exit code 2.
    let unparsed = host(&[
        "--listen".as_ref(),
        "localhost:7077".as_ref(),
        "--token-file".as_ref(),
        private.as_os_str(),
    ]);
    assert_eq!(
        (unparsed.status.code(), unparsed.stderr.as_str()),
        (
            Some(2),
            "error: invalid value 'localhost:7077' for '--listen <ADDR>': `localhost:7077` is not a \
         listen address: give `IP:PORT` (e.g. `127.0.0.1:7077`) or `unix:PATH` (e.g. \
         `unix:/run/plugsync/control.sock`)\n\nFor more information, try '--help'.\n"
        )
    );

    // Two versions of one plugin: refused before anything is installed.
    let (v1, v2) = (lib(MA_CROSS_1_0_0), lib(MA_CROSS_2_0_0));
    let twice = host(&[
        "--listen".as_ref(),
        "127.0.0.1:0".as_ref(),
        "--token-file".as_ref(),
        private.as_os_str(),
        "--load".as_ref(),
        v1.as_os_str(),
        "--load".as_ref(),
        v2.as_os_str(),
    ]);
    assert_eq!(twice.status.code(), Some(1), "{}", twice.stderr);
    assert_eq!(
        twice.stderr.lines().last(),
        Some(
            format!(
                "error: `--load` names two libraries of `ma_cross` (`{}` and `{}`): a host runs \
                 one version of a plugin; load one and switch to the other through the control \
                 API",
                v1.display(),
                v2.display()
            )
            .as_str()
        ),
    );
    assert!(
        !twice.stderr.contains("installed"),
        "nothing was installed: {}",
        twice.stderr
    );

    // Asked for, and over TLS, a remote address is served; a client trusts it through the
    // pinned CA only.
    let pki = Pki::new(root);
    let mut remote = Proc::spawn(
        &[
            OsStr::new("host"),
            "--store".as_ref(),
            store.as_os_str(),
            "--feed".as_ref(),
            "off".as_ref(),
            "--listen".as_ref(),
            "0.0.0.0:0".as_ref(),
            "--allow-remote".as_ref(),
            "--tls-cert".as_ref(),
            pki.cert.as_os_str(),
            "--tls-key".as_ref(),
            pki.key.as_os_str(),
            "--token-file".as_ref(),
            private.as_os_str(),
        ],
        &[],
    );
    let ready = remote.line_starting("plugsync host listening on https://");
    let port = ready
        .strip_prefix("plugsync host listening on https://0.0.0.0:")
        .unwrap_or_else(|| panic!("{ready}"));
    // Only loopback is ever asked (the certificate names 127.0.0.1).
    let url = format!("https://127.0.0.1:{port}");
    let status = |env: &[(&str, &OsStr)]| {
        plugsync(
            &[
                OsStr::new("status"),
                "--host".as_ref(),
                url.as_ref(),
                "--token-file".as_ref(),
                private.as_os_str(),
            ],
            env,
        )
    };
    let trusted = status(&[("PLUGSYNC_TLS_CA", pki.ca.as_os_str())]);
    assert_eq!(trusted.status.code(), Some(0), "{}", trusted.stderr);
    assert!(trusted.stdout.contains("0 plugins"), "{}", trusted.stdout);
    refused(
        &status(&[("PLUGSYNC_TLS_CA", pki.other_ca.as_os_str())]),
        root,
        Some(&url),
        "error: the plugsync host at [HOST] presented a certificate that does not verify against \
         the pinned CA `[ROOT]/other-ca.pem` (invalid peer certificate: UnknownIssuer): pin the \
         CA that signed the host's `--tls-cert` with `--tls-ca`, and use a host name or address \
         the certificate names\n",
    );
    refused(
        &status(&[]),
        root,
        Some(&url),
        "error: `[HOST]` is HTTPS, and plugsync trusts only the CA you pin for it: pass \
         `--tls-ca FILE` (or set `PLUGSYNC_TLS_CA`) with the CA certificate that signed the \
         host's `--tls-cert`\n",
    );
    remote.signal("INT");
    let stopped = remote.finish();
    assert_eq!(stopped.status.code(), Some(0), "{}", stopped.stderr);
    assert!(
        stopped.stderr.contains("SIGINT received"),
        "{}",
        stopped.stderr
    );
}

#[test]
fn a_host_serves_named_clients_each_holding_its_own_token() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let laptop = "laptop-token-0123456789abcdef";
    let tokens = root.join("tokens");
    std::fs::write(
        &tokens,
        format!("# the clients of this host\nsidecar {TOKEN}\n\nlaptop {laptop}\n"),
    )
    .unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    let host = Host::start(&root.join("store"), &tokens, &["--feed", "off"]);
    for (name, token) in [("sidecar", TOKEN), ("laptop", laptop)] {
        let own = token_file(root, name, token, 0o600);
        let shown = host.status(&own, &["--output", "json"]);
        assert_eq!(shown.status.code(), Some(0), "{name}: {}", shown.stderr);
        let api = &json(shown.stdout.as_bytes())["api"];
        assert_eq!(api["version"], "1.1");
        assert!(
            api["capabilities"]
                .as_array()
                .unwrap()
                .contains(&json!("named_clients")),
            "{api}"
        );
    }
    // A client is given its own token, not the host's file of clients.
    refused(
        &host.status(&tokens, &[]),
        root,
        Some(&host.url),
        "error: the token file `[ROOT]/tokens` holds more than a token (a host's `name token` \
         lines?): a client sends its own token only; give it a file holding that token alone\n",
    );
    let stopped = host.terminate();
    assert_eq!(stopped.status.code(), Some(0), "{}", stopped.stderr);
    assert!(
        stopped.stderr.contains("clients=sidecar, laptop"),
        "{}",
        stopped.stderr
    );
}

#[test]
fn a_token_file_with_a_bad_line_refuses_the_start_naming_the_file_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let tokens = root.join("tokens");
    std::fs::write(&tokens, format!("sidecar {TOKEN}\nlaptop {TOKEN}\n")).unwrap();
    std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o600)).unwrap();
    let store = root.join("store");
    let started = plugsync(
        &[
            OsStr::new("host"),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--token-file".as_ref(),
            tokens.as_os_str(),
            "--store".as_ref(),
            store.as_os_str(),
            "--feed".as_ref(),
            "off".as_ref(),
        ],
        &[],
    );
    refused(
        &started,
        root,
        None,
        "error: token file `[ROOT]/tokens:2` gives client `laptop` the token of client `sidecar` \
         (line 1): two clients must never share a token; give each its own, e.g. `head -c 32 \
         /dev/urandom | base64`\n",
    );
    assert!(!started.stderr.contains(TOKEN), "the token was shown");
}

/// A CA, a host certificate it signed for `127.0.0.1` (and its key, mode 0600), and another
/// CA, as PEM files.
struct Pki {
    ca: PathBuf,
    other_ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl Pki {
    fn new(dir: &Path) -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
        let ca = |name: &str| {
            let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params
                .distinguished_name
                .push(rcgen::DnType::CommonName, name);
            let key = KeyPair::generate().unwrap();
            let cert = params.self_signed(&key).unwrap();
            (cert.pem(), Issuer::new(params, key))
        };
        let (ca_pem, issuer) = ca("plugsync test CA");
        let (other_pem, _) = ca("another CA");
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &issuer)
            .unwrap();
        let file = |name: &str, text: String| {
            let path = dir.join(name);
            std::fs::write(&path, text).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
            path
        };
        Pki {
            ca: file("ca.pem", ca_pem),
            other_ca: file("other-ca.pem", other_pem),
            cert: file("host.pem", cert.pem()),
            key: file("host.key", key.serialize_pem()),
        }
    }
}

#[test]
fn a_host_on_a_unix_socket_answers_status_and_removes_the_socket_when_it_stops() {
    use std::os::unix::fs::FileTypeExt;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let token = token_file(root, "token", TOKEN, 0o600);
    let wrong = token_file(root, "wrong-token", "not-the-token", 0o600);
    let socket = root.join("control.sock");
    let listen = format!("unix:{}", socket.display());
    let mut proc = Proc::spawn(
        &[
            OsStr::new("host"),
            "--listen".as_ref(),
            listen.as_ref(),
            "--token-file".as_ref(),
            token.as_os_str(),
            "--store".as_ref(),
            root.join("store").as_os_str(),
            "--feed".as_ref(),
            "off".as_ref(),
        ],
        &[],
    );
    assert_eq!(
        proc.line_starting("plugsync host listening on "),
        format!("plugsync host listening on {listen}")
    );
    let metadata = std::fs::symlink_metadata(&socket).unwrap();
    assert!(metadata.file_type().is_socket());
    assert_eq!(metadata.permissions().mode() & 0o7777, 0o600);
    let host = Host {
        proc,
        url: listen.clone(),
    };

    let shown = host.status(&token, &[]);
    assert_eq!(shown.status.code(), Some(0), "{}", shown.stderr);
    assert!(shown.stdout.contains("0 plugins"), "{}", shown.stdout);
    // The same from the environment.
    let shown = plugsync(
        &["status"],
        &[
            ("PLUGSYNC_HOST", listen.as_ref()),
            ("PLUGSYNC_TOKEN_FILE", token.as_os_str()),
        ],
    );
    assert_eq!(shown.status.code(), Some(0), "{}", shown.stderr);
    // The token is still required.
    refused(
        &host.status(&wrong, &[]),
        root,
        Some(&listen),
        "error: the plugsync host at [HOST] refused the token in `[ROOT]/wrong-token`: check that \
         it matches the host's `--token-file`\n",
    );

    let stopped = host.terminate();
    assert_eq!(stopped.status.code(), Some(0), "{}", stopped.stderr);
    assert!(
        std::fs::symlink_metadata(&socket).is_err(),
        "the socket file is removed at a clean stop"
    );
    refused(
        &plugsync(
            &[
                OsStr::new("status"),
                "--host".as_ref(),
                listen.as_ref(),
                "--token-file".as_ref(),
                token.as_os_str(),
            ],
            &[],
        ),
        root,
        Some(&listen),
        "error: cannot reach the plugsync host at [HOST]: No such file or directory (os error 2); \
         is `plugsync host` running?\n",
    );
}

#[test]
fn a_trading_host_stops_cleanly_on_sigterm_and_a_killed_one_comes_back_from_its_store_alone() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = root.join("store");
    let token = token_file(root, "token", TOKEN, 0o600);
    // The libraries come from a directory of their own, removed before the last start: the
    // host needs nothing but its store to come back.
    let libraries = root.join("libraries");
    std::fs::create_dir(&libraries).unwrap();
    let copy = |name: &str| {
        let to = libraries.join(format!("lib{name}.so"));
        std::fs::copy(lib(name), &to).unwrap();
        to
    };
    let (ma_cross_1, risk_model_1) = (copy(MA_CROSS_1_0_0), copy(RISK_MODEL_1_0_0));
    let (ma_cross_2, risk_model_2) = (copy(MA_CROSS_2_0_0), copy(RISK_MODEL_2_0_0));

    // 1. A trading host, stopped by SIGTERM: the feed threads are joined, the states
    //    checkpointed, exit 0.
    let trading = Host::start(
        &store,
        &token,
        &[
            OsStr::new("--load"),
            ma_cross_1.as_os_str(),
            "--load".as_ref(),
            risk_model_1.as_os_str(),
        ],
    );
    let api = Api::new(&trading, TOKEN);
    wait_until("the desk has traded a while", || {
        api.plugin("ma_cross")["counters"]["calls"]
            .as_u64()
            .unwrap()
            >= 200
    });
    let stopped = trading.terminate();
    assert_eq!(stopped.status.code(), Some(0), "{}", stopped.stderr);
    for line in ["the feed is on", "SIGTERM received: stopping", "stopped"] {
        assert!(
            stopped.stderr.contains(line),
            "no `{line}` in:\n{}",
            stopped.stderr
        );
    }

    // 2. Started again on its store: the committed set with the states it stopped with; a
    //    `--load` of a plugin that runs from the store is skipped. Two upgrades committed
    //    through the control API, then SIGKILL.
    let host = Host::start(
        &store,
        &token,
        &[
            OsStr::new("--feed"),
            "off".as_ref(),
            "--load".as_ref(),
            ma_cross_1.as_os_str(),
        ],
    );
    let api = Api::new(&host, TOKEN);
    let recovered = &api.status()["recovered"]["plugins"];
    assert_eq!(recovered[0]["plugin"], "ma_cross");
    assert!(
        recovered[0]["checkpoint"]["seq"].as_u64().unwrap() >= 200,
        "{recovered:#}"
    );
    let traded = api.get("/v1/plugins/ma_cross/state");
    let traded_state = json(traded["state"].as_str().unwrap().as_bytes());
    assert!(
        traded_state["instruments"].as_object().unwrap().len() >= 3,
        "the desk's state came back: {traded_state:#}"
    );
    api.upgrade("ma_cross-2.0.0", "ma_cross", &ma_cross_2);
    api.upgrade("risk_model-2.0.0", "risk_model", &risk_model_2);
    let committed = api.get("/v1/plugins/ma_cross/state");
    let risk_committed = api.get("/v1/plugins/risk_model/state");
    assert_eq!(committed["version"]["version"], "2.0.0");
    let migrated = json(committed["state"].as_str().unwrap().as_bytes());
    assert_eq!(
        migrated["instruments"], traded_state["instruments"],
        "the upgrade carried the traded state over"
    );
    let mut host = host;
    host.proc.child.kill().unwrap();
    let killed = host.proc.finish();
    assert_eq!(killed.status.signal(), Some(9));
    assert!(
        killed.stderr.contains("runs from the store: `--load"),
        "{}",
        killed.stderr
    );

    // 3. With no library left anywhere but in its store, and no `--load`.
    std::fs::remove_dir_all(&libraries).unwrap();
    let host = Host::start(&store, &token, &["--feed", "off"]);
    let api = Api::new(&host, TOKEN);
    let status = api.status();
    let running: Vec<(&str, &str)> = status["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["plugin"].as_str().unwrap(),
                p["version"]["version"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(running, [("ma_cross", "2.0.0"), ("risk_model", "2.0.0")]);
    let recovered = &status["recovered"]["plugins"];
    assert_eq!(
        (
            &recovered[0]["checkpoint"]["sha256"],
            &recovered[1]["checkpoint"]["sha256"]
        ),
        (&committed["sha256"], &risk_committed["sha256"]),
        "{recovered:#}"
    );
    for (plugin, before) in [("ma_cross", &committed), ("risk_model", &risk_committed)] {
        let now = api.get(&format!("/v1/plugins/{plugin}/state"));
        assert_eq!(
            (&now["version"], &now["state"], &now["sha256"]),
            (&before["version"], &before["state"], &before["sha256"]),
            "{plugin}'s state is the one committed before the kill"
        );
    }
    let text = host.status(&token, &[]);
    check(
        &normalised(
            &text.stdout[text.stdout.find("recovered").expect("says it recovered")..],
            root,
            None,
        ),
        &expect![[r#"
            recovered from its store when it started:
              ma_cross 2.0.0 ([SHORT]     ) with its checkpointed state (sha256 [SHORT]     )
              risk_model 2.0.0 ([SHORT]     ) with its checkpointed state (sha256 [SHORT]     )
        "#]],
    );
    let stopped = host.terminate();
    assert_eq!(stopped.status.code(), Some(0), "{}", stopped.stderr);
    assert!(
        stopped.stderr.contains("recovered ma_cross 2.0.0 (sha256 "),
        "{}",
        stopped.stderr
    );
    assert!(
        stopped.stderr.contains("the feed is off (`--feed off`)"),
        "{}",
        stopped.stderr
    );
}

/// The `seq` of a checkpoint file in a store (`checkpoints/<plugin>.json`), once it exists.
fn checkpoint_seq(store: &Path, plugin: &str) -> Option<u64> {
    let path = store.join("checkpoints").join(format!("{plugin}.json"));
    // Written beside and renamed into place: a read sees a whole file or the previous one.
    let bytes = std::fs::read(path).ok()?;
    json(&bytes)["seq"].as_u64()
}

#[test]
fn a_host_killed_while_trading_comes_back_from_its_latest_periodic_checkpoint() {
    // While the desk trades, only the steward's periodic checkpoint (every 100 ms here) writes
    // `checkpoints/ma_cross.json`: the load writes the first one before the feed starts, and
    // a commit or a clean stop the others, neither of which happens here.
    const PAST: u64 = 300;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = root.join("store");
    let token = token_file(root, "token", TOKEN, 0o600);
    let (ma_cross, risk_model) = (lib(MA_CROSS_1_0_0), lib(RISK_MODEL_1_0_0));
    let mut host = Host::start(
        &store,
        &token,
        &[
            OsStr::new("--checkpoint-every-ms"),
            "100".as_ref(),
            "--load".as_ref(),
            ma_cross.as_os_str(),
            "--load".as_ref(),
            risk_model.as_os_str(),
        ],
    );
    wait_until(
        &format!("a periodic checkpoint of ma_cross passes call #{PAST}"),
        || checkpoint_seq(&store, "ma_cross").is_some_and(|seq| seq >= PAST),
    );
    let seen = checkpoint_seq(&store, "ma_cross").unwrap();
    host.proc.child.kill().unwrap();
    let killed = host.proc.finish();
    assert_eq!(killed.status.signal(), Some(9));
    assert!(
        !killed.stderr.contains("SIGTERM received"),
        "killed, not stopped: {}",
        killed.stderr
    );
    let at_kill = checkpoint_seq(&store, "ma_cross").unwrap();
    assert!(at_kill >= seen, "checkpoints only move forward");

    // Back from the store: the checkpoint written last before the kill, no older.
    let host = Host::start(&store, &token, &["--feed", "off"]);
    let api = Api::new(&host, TOKEN);
    let recovered = &api.status()["recovered"]["plugins"];
    let ma_cross = recovered
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["plugin"] == "ma_cross")
        .unwrap_or_else(|| panic!("ma_cross recovered: {recovered:#}"));
    assert_eq!(
        ma_cross["checkpoint"]["seq"].as_u64(),
        Some(at_kill),
        "{recovered:#}"
    );
    assert!(at_kill >= PAST);
    let state = api.get("/v1/plugins/ma_cross/state");
    let file = std::fs::read(store.join("checkpoints/ma_cross.json")).unwrap();
    // (A restarted runtime counts its calls from 0 again: the checkpoint's `seq` is in
    // `recovered`, above.)
    assert_eq!(
        (&state["sha256"], &state["state"]),
        (&json(&file)["sha256"], &json(&file)["state"]),
        "the state restored is the checkpoint's"
    );
}

#[test]
fn a_host_with_one_desk_plugin_runs_without_the_feed_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), "token", TOKEN, 0o600);
    let host = Host::start(
        &dir.path().join("store"),
        &token,
        &[OsStr::new("--load"), lib(MA_CROSS_1_0_0).as_os_str()],
    );
    let stopped = host.terminate();
    assert_eq!(stopped.status.code(), Some(0), "{}", stopped.stderr);
    assert!(
        stopped.stderr.contains(
            "the feed is off: the desk trades through ma_cross and risk_model, and risk_model is \
             not loaded (pass `--load` with its library)"
        ),
        "{}",
        stopped.stderr
    );
}

#[test]
fn a_step_pending_when_the_host_stops_is_rolled_back_so_a_restart_runs_what_was_committed() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (store, token) = (root.join("store"), token_file(root, "token", TOKEN, 0o600));
    let host = Host::start(
        &store,
        &token,
        &[
            OsStr::new("--feed"),
            "off".as_ref(),
            "--load".as_ref(),
            lib(MA_CROSS_1_0_0).as_os_str(),
            "--load".as_ref(),
            lib(RISK_MODEL_1_0_0).as_os_str(),
        ],
    );
    let api = Api::new(&host, TOKEN);
    let artifact = api.stage(&lib(MA_CROSS_2_0_0));
    api.post(
        "/v1/steps/s1/switch",
        json!({"plugin": "ma_cross", "artifact": artifact}),
    );
    let text = host.status(&token, &[]);
    check(
        &normalised(&text.stdout, root, None),
        &expect![[r#"
            host: plugin ABI 1, framework 0.1.0, 2 plugins
            PLUGIN      VERSION  SHA256        HEALTH  FAULTED  CALLS  ERRORS  PANICS  LAST CALL  PENDING STEP                   LAST STEP
            ma_cross    2.0.0    [SHORT]       ok      no           0       0       0  -          from 1.0.0, 0 calls (step s1)  2.0.0 pending
            risk_model  1.0.0    [SHORT]       ok      no           0       0       0  -          -                              -

            resident libraries (3 mapped, at most 8 versions per plugin; code is never unmapped):
              ma_cross 1.0.0 ([SHORT]     ): 1 live instance
              ma_cross 2.0.0 ([SHORT]     ): 1 live instance
              risk_model 1.0.0 ([SHORT]     ): 1 live instance
        "#]],
    );
    let stopped = host.terminate();
    assert_eq!(stopped.status.code(), Some(0), "{}", stopped.stderr);
    assert!(
        normalise(&stopped.stderr, root).contains(
            "stopping with a step not committed: rolled back from 2.0.0 ([SHORT]) to 1.0.0 ([SHORT])"
        ),
        "{}",
        stopped.stderr
    );

    let host = Host::start(&store, &token, &["--feed", "off"]);
    assert_eq!(
        Api::new(&host, TOKEN).plugin("ma_cross")["version"]["version"],
        "1.0.0"
    );
}

/// Trades a desk on ma_cross 1.0.0 and risk_model 1.0.0 a while, then stops it (its states
/// checkpointed): returns the store, the token file and ma_cross's traded state.
fn traded_store(root: &Path) -> (PathBuf, PathBuf, Value) {
    let (store, token) = (root.join("store"), token_file(root, "token", TOKEN, 0o600));
    let host = Host::start(
        &store,
        &token,
        &[
            OsStr::new("--load"),
            lib(MA_CROSS_1_0_0).as_os_str(),
            "--load".as_ref(),
            lib(RISK_MODEL_1_0_0).as_os_str(),
        ],
    );
    let api = Api::new(&host, TOKEN);
    wait_until("the desk has traded a while", || {
        api.plugin("ma_cross")["counters"]["calls"]
            .as_u64()
            .unwrap()
            >= 200
    });
    let stopped = host.terminate();
    assert_eq!(stopped.status.code(), Some(0), "{}", stopped.stderr);
    let host = Host::start(&store, &token, &["--feed", "off"]);
    let traded = Api::new(&host, TOKEN).state("ma_cross");
    assert!(traded["instruments"].as_object().unwrap().len() >= 3);
    drop(host);
    (store, token, traded)
}

/// A host over `store` without the feed, with one fail point armed.
fn host_with_failpoint(store: &Path, token: &Path, failpoint: &str) -> Host {
    Host::start_with_env(
        store,
        token,
        &["--feed", "off"],
        &[(plugsync_host::FAILPOINTS_ENV, OsStr::new(failpoint))],
    )
}

/// Checks that ma_cross came back as `version` with the checkpoint of `from` migrated.
fn assert_recovered_migrated(api: &Api, version: &str, from: &str) {
    let recovered = &api.status()["recovered"]["plugins"][0];
    assert_eq!(
        (
            &recovered["version"]["version"],
            &recovered["checkpoint"]["status"],
            &recovered["checkpoint"]["from"]["version"]
        ),
        (&json!(version), &json!("migrated"), &json!(from)),
        "{recovered:#}"
    );
}

#[test]
fn a_host_killed_between_a_commits_two_writes_comes_back_with_the_state_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (store, token, traded) = traded_store(root);

    // The commit of 1.0.0 -> 2.0.0 writes 2.0.0's checkpoint, then the host dies before the
    // committed set names 2.0.0.
    let host = host_with_failpoint(&store, &token, "commit.between-writes=abort");
    let api = Api::new(&host, TOKEN);
    let artifact = api.stage(&lib(MA_CROSS_2_0_0));
    api.post(
        "/v1/steps/s1/switch",
        json!({"plugin": "ma_cross", "artifact": artifact}),
    );
    api.post_unanswered("/v1/steps/s1/commit", json!({"plugin": "ma_cross"}));
    let died = host.proc.finish();
    assert_eq!(died.status.signal(), Some(6), "{}", died.stderr);

    // Back on the committed 1.0.0, with 2.0.0's checkpoint migrated down: nothing forgotten.
    let host = Host::start(&store, &token, &["--feed", "off"]);
    let api = Api::new(&host, TOKEN);
    assert_recovered_migrated(&api, "1.0.0", "2.0.0");
    assert_eq!(api.state("ma_cross")["instruments"], traded["instruments"]);
}

#[test]
fn a_commit_whose_checkpoint_cannot_be_written_comes_back_with_the_older_one_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (store, token, traded) = traded_store(root);

    // Every checkpoint write fails: the commit of 2.0.0 stands, the committed set names it,
    // the only checkpoint is 1.0.0's. Then the host is killed.
    let host = host_with_failpoint(&store, &token, "checkpoint.write=error");
    let api = Api::new(&host, TOKEN);
    api.upgrade("s1", "ma_cross", &lib(MA_CROSS_2_0_0));
    let persist_error = api.status()["persist_error"].clone();
    assert!(
        persist_error
            .as_str()
            .is_some_and(|e| e.contains("fail point `checkpoint.write`")),
        "{persist_error}"
    );
    let upgraded = api.state("ma_cross");
    let mut host = host;
    host.proc.child.kill().unwrap();
    host.proc.finish();

    // Back on 2.0.0, with 1.0.0's checkpoint migrated forward: never a fresh state.
    let host = Host::start(&store, &token, &["--feed", "off"]);
    let api = Api::new(&host, TOKEN);
    assert_recovered_migrated(&api, "2.0.0", "1.0.0");
    let state = api.state("ma_cross");
    assert_eq!(state["instruments"], upgraded["instruments"]);
    assert_eq!(
        state["instruments"].as_object().unwrap().len(),
        traded["instruments"].as_object().unwrap().len()
    );
}

/// Starts a host that replays `feed` (written to `DIR/feed.jsonl`) with `ARGS`, over a fresh
/// store, with ma_cross and risk_model 1.0.0 loaded.
fn feed_host(root: &Path, feed: &str, args: &[&OsStr]) -> Host {
    let path = root.join("feed.jsonl");
    std::fs::write(&path, feed).unwrap();
    let token = token_file(root, "token", TOKEN, 0o600);
    let (ma_cross, risk_model) = (lib(MA_CROSS_1_0_0), lib(RISK_MODEL_1_0_0));
    let mut all = vec![
        OsStr::new("--feed"),
        path.as_os_str(),
        "--load".as_ref(),
        ma_cross.as_os_str(),
        "--load".as_ref(),
        risk_model.as_os_str(),
    ];
    all.extend(args);
    Host::start(&root.join("store"), &token, &all)
}

#[test]
fn a_host_fed_a_file_answers_each_call_in_order_into_the_feed_out_file() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let out = root.join("answers.jsonl");
    let feed = r#"{"plugin": "ma_cross", "input": {"bar": {"instrument": "ES", "close": 4500.25}}}
{"plugin": "risk_model", "input": {"check": {"order_id": 1, "instrument": "ES", "qty": 1}}, "now": 1700000000000000000}

{"plugin": "risk_model", "input": {"fill": {"order_id": 1, "instrument": "ES", "qty": 1, "price": 4500.25}}}
{"plugin": "ma_cross", "input": "not json"}
{"plugin": "risk_model", "input": {"check": {"order_id": 2, "instrument": "ES", "qty": 10}}}
"#;
    let host = feed_host(
        root,
        feed,
        &[
            "--feed-rate".as_ref(),
            "0".as_ref(),
            "--feed-out".as_ref(),
            out.as_os_str(),
        ],
    );
    wait_until("the feed is done", || {
        host.proc.stderr().contains("the feed `") && host.proc.stderr().contains("` is done")
    });
    let stopped = host.terminate();
    assert_eq!(stopped.status.code(), Some(0), "{}", stopped.stderr);
    assert!(
        normalise(&stopped.stderr, root).contains(
            "the feed `[ROOT]/feed.jsonl` is done: 5 calls made, 1 failed, answers in \
             `[ROOT]/answers.jsonl`"
        ),
        "{}",
        stopped.stderr
    );
    check(
        &normalise(&std::fs::read_to_string(&out).unwrap(), root),
        &expect![[r#"
            {"plugin":"ma_cross","seq":1,"output":{"orders":[]}}
            {"plugin":"risk_model","seq":2,"output":{"approved":true,"order_id":1}}
            {"plugin":"risk_model","seq":3,"output":{"ok":true}}
            {"plugin":"ma_cross","seq":4,"error":"plugin `ma_cross` ([SHORT]) returned an error: invalid input: expected value at line 1 column 1; expected {\"bar\":{\"instrument\",\"close\"}}, {\"fill\":{\"order_id\",\"instrument\",\"qty\",\"price\"}} or {\"cancel\":{\"order_id\",\"instrument\",\"qty\"}}"}
            {"plugin":"risk_model","seq":5,"output":{"approved":false,"order_id":2,"reason":"position on ES would be 11, beyond the limit of 10"}}
        "#]],
    );
}

#[test]
fn a_malformed_feed_line_refuses_the_start_naming_the_file_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let feed = root.join("feed.jsonl");
    std::fs::write(
        &feed,
        "{\"plugin\": \"ma_cross\", \"input\": \"x\"}\n{\"plugin\": \"ma_cross\", \"inptu\": 1}\n",
    )
    .unwrap();
    let token = token_file(root, "token", TOKEN, 0o600);
    let refusal = plugsync(
        &[
            OsStr::new("host"),
            "--token-file".as_ref(),
            token.as_os_str(),
            "--store".as_ref(),
            root.join("store").as_os_str(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--feed".as_ref(),
            feed.as_os_str(),
        ],
        &[],
    );
    refused(
        &refusal,
        root,
        None,
        "error: `[ROOT]/feed.jsonl:2` is not a feed line (unknown field `inptu`, expected one of \
         `plugin`, `input`, `now`): expected one JSON object per line: {\"plugin\": \"<id>\", \
         \"input\": <JSON value or string>} with an optional \"now\": <host time in ns>\n",
    );
    assert!(
        !root.join("store").exists(),
        "nothing ran: not even the store was created"
    );
}

#[test]
fn a_feed_calling_a_plugin_the_host_does_not_run_refuses_the_start_before_any_call() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let feed = root.join("feed.jsonl");
    std::fs::write(
        &feed,
        "{\"plugin\": \"ma_cross\", \"input\": {\"bar\": {\"instrument\": \"ES\", \"close\": 1.5}}}\n\
         {\"plugin\": \"risk\", \"input\": {}}\n",
    )
    .unwrap();
    let token = token_file(root, "token", TOKEN, 0o600);
    let refusal = plugsync(
        &[
            OsStr::new("host"),
            "--token-file".as_ref(),
            token.as_os_str(),
            "--store".as_ref(),
            root.join("store").as_os_str(),
            "--listen".as_ref(),
            "127.0.0.1:0".as_ref(),
            "--feed".as_ref(),
            feed.as_os_str(),
            "--load".as_ref(),
            lib(MA_CROSS_1_0_0).as_os_str(),
        ],
        &[],
    );
    assert_eq!(refusal.status.code(), Some(1), "{}", refusal.stderr);
    assert_eq!(
        normalise(&refusal.stderr, root).lines().last(),
        Some(
            "error: `[ROOT]/feed.jsonl:2` calls `risk`, which this host does not run (it runs \
             `ma_cross`): `--load` its library or fix the line"
        )
    );
    assert!(
        !refusal.stderr.contains("the feed is on"),
        "no call was made"
    );
}

#[test]
fn feed_options_without_a_feed_file_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let token = token_file(dir.path(), "token", TOKEN, 0o600);
    let refusal = plugsync(
        &[
            OsStr::new("host"),
            "--token-file".as_ref(),
            token.as_os_str(),
            "--feed".as_ref(),
            "off".as_ref(),
            "--feed-out".as_ref(),
            "answers.jsonl".as_ref(),
        ],
        &[],
    );
    refused(
        &refusal,
        dir.path(),
        None,
        "error: `--feed-out` applies to a feed file only: pass `--feed FILE` too, or drop \
         `--feed-out`\n",
    );
}

#[test]
fn with_trusted_keys_a_loaded_library_needs_its_signature_file_or_allow_unsigned_load() {
    use ed25519_dalek::{Signer, SigningKey};
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let token = token_file(root, "token", TOKEN, 0o600);
    let hex = |bytes: &[u8]| -> String { bytes.iter().map(|b| format!("{b:02x}")).collect() };
    let publisher = SigningKey::from_bytes(&[7; 32]);
    let keys = root.join("trusted.keys");
    std::fs::write(&keys, hex(publisher.verifying_key().as_bytes())).unwrap();
    let local = root.join("libma_cross_v1_0_0.so");
    std::fs::copy(lib(MA_CROSS_1_0_0), &local).unwrap();
    let store = root.join("store");
    let args = |extra: &[&OsStr]| -> Vec<std::ffi::OsString> {
        let mut all: Vec<std::ffi::OsString> = [
            "--feed".as_ref(),
            "off".as_ref(),
            "--trusted-keys".as_ref(),
            keys.as_os_str(),
            "--load".as_ref(),
            local.as_os_str(),
        ]
        .iter()
        .map(|a: &&OsStr| a.to_os_string())
        .collect();
        all.extend(extra.iter().map(|a| a.to_os_string()));
        all
    };

    // No `LIB.sig`: refused before anything is installed, with the way out named.
    let mut all: Vec<std::ffi::OsString> = vec![
        "host".into(),
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--token-file".into(),
        token.clone().into(),
        "--store".into(),
        store.clone().into(),
    ];
    all.extend(args(&[]));
    let unsigned = plugsync(&all, &[]);
    assert_eq!(unsigned.status.code(), Some(1), "{}", unsigned.stderr);
    assert_eq!(
        normalise(unsigned.stderr.lines().last().unwrap(), root),
        "error: plugin `ma_cross` 1.0.0 (sha256 [HASH]) carries no signature, and this host \
         loads only artifacts signed by a key it trusts; it was not opened: stage it with its \
         publisher's signature (the `x-plugsync-signature` header, or a `LIB.sig` file beside a \
         `--load`ed `LIB`), or, for development only, start `plugsync host` with \
         `--allow-unsigned-load`"
    );

    // `--allow-unsigned-load`: it runs.
    let host = Host::start(&store, &token, &args(&["--allow-unsigned-load".as_ref()]));
    let stopped = host.terminate();
    assert_eq!(stopped.status.code(), Some(0), "{}", stopped.stderr);
    assert!(
        stopped.stderr.contains("loading an unsigned artifact"),
        "{}",
        stopped.stderr
    );

    // Signed with `LIB.sig` beside it: it runs, on a fresh store, without the flag.
    let digest = plugsync_host::Digest::of(&std::fs::read(&local).unwrap());
    let payload = plugsync_host::signature_payload("ma_cross", "1.0.0", &digest);
    let signature = hex(&publisher.sign(&payload).to_bytes());
    std::fs::write(
        root.join("libma_cross_v1_0_0.so.sig"),
        format!("{signature}\n"),
    )
    .unwrap();
    let host = Host::start(&root.join("store-2"), &token, &args(&[]));
    let stopped = host.terminate();
    assert_eq!(stopped.status.code(), Some(0), "{}", stopped.stderr);
    assert!(
        stopped.stderr.contains("loaded ma_cross 1.0.0"),
        "{}",
        stopped.stderr
    );
}
