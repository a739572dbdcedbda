//! A trading desk for the `reconcile` tests: a registry where every example version is
//! published, a real `plugsync host` (`--feed off --allow-calls`: the plugins' states come from
//! calls the test makes), a plugins.yaml written per test, and `plugsync reconcile` run through
//! the binary against it.

use std::ffi::{OsStr, OsString};
use std::path::Path;

use expect_test::Expect;
use serde_json::{Value, json};

use super::process::{Api, Finished, Host, Proc, plugsync, token_file};
use super::*;

/// The token of the desk's host.
pub const TOKEN: &str = "dry-run-token-0123456789abcdef";

/// The token of the client `alice`.
pub const ALICE_TOKEN: &str = "alice-token-0123456789abcdef0123";

/// The token of the client `bob`.
pub const BOB_TOKEN: &str = "bob-token-0123456789abcdef012345";

/// A Saturday noon in New York: no weekday window is open.
pub const SATURDAY: &str = "2026-12-05T17:00:00Z";

/// A registry holding every example plugin, a host, and a plugins.yaml to plan from.
pub struct Desk {
    pub dir: tempfile::TempDir,
    pub host: Host,
    pub api: Api,
    /// The host's arguments besides the desk's own.
    args: Vec<String>,
}

impl Desk {
    /// A host running nothing, beside a registry where every example version is stable.
    pub fn new() -> Desk {
        Desk::with_host_args(&[])
    }

    pub fn with_host_args(args: &[&str]) -> Desk {
        Desk::start(tempfile::tempdir().unwrap(), None, args)
    }

    /// A desk whose registry is signed by the key `k` (`k.key`, `k.pub` in its directory),
    /// beside a host that trusts only that key (`--trusted-keys k.pub`).
    pub fn signed() -> Desk {
        let dir = tempfile::tempdir().unwrap();
        let keygen = plugsync(
            &[OsStr::new("keygen"), dir.path().join("k").as_os_str()],
            &[],
        );
        assert!(keygen.status.success(), "{}", keygen.stderr);
        let public = dir.path().join("k.pub");
        let key = dir.path().join("k.key");
        Desk::start(
            dir,
            Some(&key),
            &["--trusted-keys", public.to_str().unwrap()],
        )
    }

    fn start(dir: tempfile::TempDir, sign_key: Option<&Path>, args: &[&str]) -> Desk {
        for name in [
            MA_CROSS_1_0_0,
            MA_CROSS_2_0_0,
            MA_CROSS_2_1_0,
            RISK_MODEL_1_0_0,
            RISK_MODEL_1_1_0,
            RISK_MODEL_2_0_0,
        ] {
            publish_signed(dir.path(), name, "stable", sign_key);
        }
        // The host knows three clients; the test's own calls are `default`'s.
        let tokens = format!("default {TOKEN}\nalice {ALICE_TOKEN}\nbob {BOB_TOKEN}\n");
        let host_tokens = token_file(dir.path(), "host-tokens", &tokens, 0o600);
        token_file(dir.path(), "token", TOKEN, 0o600);
        token_file(dir.path(), "alice.token", ALICE_TOKEN, 0o600);
        token_file(dir.path(), "bob.token", BOB_TOKEN, 0o600);
        let mut all = vec!["--feed", "off", "--allow-calls"];
        all.extend(args);
        let host = Host::start(&dir.path().join("store"), &host_tokens, &all);
        let api = Api::new(&host, TOKEN);
        Desk {
            dir,
            host,
            api,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        }
    }

    /// Stops the host with `signal` (`KILL`: a crash, no checkpoint and no rollback; `TERM`: a
    /// clean stop) and starts it again on the same store and port; how the old one ended.
    pub fn restart_host(&mut self, signal: &str) -> Finished {
        self.host.proc.signal(signal);
        // Its port is free once it has ended.
        self.host.proc.wait();
        let listen = self.host.url.trim_start_matches("http://").to_owned();
        let mut all = vec!["--feed", "off", "--allow-calls"];
        all.extend(self.args.iter().map(String::as_str));
        let restarted = Host::start_on(
            &listen,
            &self.path().join("store"),
            &self.path().join("host-tokens"),
            &all,
            &[],
        );
        let stopped = std::mem::replace(&mut self.host, restarted);
        self.api = Api::new(&self.host, TOKEN);
        stopped.proc.finish()
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Installs a built library as the reconciler would have (origin `plugsync-reconcile`).
    pub fn install(&self, name: &str, config: Value) {
        self.install_by(name, config, "plugsync-reconcile");
    }

    pub fn install_by(&self, name: &str, config: Value, tool: &str) {
        let artifact = self.api.stage(&lib(name));
        self.api.post(
            &format!("/v1/steps/setup-{name}/install"),
            json!({"artifact": artifact, "config": config, "origin": {"tool": tool}}),
        );
    }

    /// Switches to a built library and commits, as `tool`.
    pub fn switch_by(&self, plugin: &str, name: &str, tool: &str) {
        let artifact = self.api.stage(&lib(name));
        let origin = json!({"tool": tool});
        self.api.post(
            &format!("/v1/steps/by-hand-{name}/switch"),
            json!({"plugin": plugin, "artifact": artifact, "origin": origin}),
        );
        self.api.post(
            &format!("/v1/steps/by-hand-{name}/commit"),
            json!({"plugin": plugin, "origin": origin}),
        );
    }

    /// The desk at (risk_model 1.0.0, ma_cross 1.0.0), installed by the reconciler, each
    /// holding a position in ES after a few calls.
    pub fn at_v1() -> Desk {
        let desk = Desk::new();
        desk.install(RISK_MODEL_1_0_0, json!({"max_position": 10}));
        desk.install(
            MA_CROSS_1_0_0,
            json!({"fast_ma_period": 2, "slow_ma_period": 4, "order_qty": 1}),
        );
        desk.trade();
        desk
    }

    /// A few calls, so each plugin's state holds something: closes, a fill, an exposure.
    pub fn trade(&self) {
        for (plugin, input) in Desk::trade_inputs() {
            self.api.post(
                &format!("/v1/plugins/{plugin}/call"),
                json!({"input": input}),
            );
        }
    }

    /// The calls [`Desk::trade`] makes: to which plugin, what input.
    pub fn trade_inputs() -> Vec<(&'static str, Value)> {
        let mut inputs = Vec::new();
        for close in [100.0, 101.0, 99.5] {
            inputs.push((
                "ma_cross",
                json!({"bar": {"instrument": "ES", "close": close}}),
            ));
        }
        let fill = json!({"fill": {"order_id": 1, "instrument": "ES", "qty": 1, "price": 99.5}});
        for plugin in ["ma_cross", "risk_model"] {
            inputs.push((plugin, fill.clone()));
        }
        inputs
    }

    /// Writes plugins.yaml: a `desk-a` set over the registry, with `spec` under `spec:`.
    pub fn desire(&self, spec: &str) {
        let text = format!(
            "apiVersion: plugsync/v1\nkind: PluginSet\nmetadata: {{name: desk-a}}\nspec:\n  \
             registry: {{url: registry}}\n{spec}"
        );
        std::fs::write(self.path().join("plugins.yaml"), text).unwrap();
    }

    /// `plugsync reconcile --dry-run --host URL --token-file token ARGS`, at `now`.
    pub fn dry_run_at(&self, now: &str, args: &[&str]) -> Finished {
        self.dry_run_with(&[("PLUGSYNC_NOW", now)], args)
    }

    /// `plugsync reconcile --dry-run …` with these environment variables besides the state
    /// directory.
    pub fn dry_run_with(&self, env: &[(&str, &str)], args: &[&str]) -> Finished {
        self.dry_run_of(&self.path().join("plugins.yaml"), env, args)
    }

    /// `plugsync reconcile --dry-run -f FILE …`.
    pub fn dry_run_of(&self, file: &Path, env: &[(&str, &str)], args: &[&str]) -> Finished {
        let mut all = vec!["--dry-run"];
        all.extend(args);
        self.reconcile_of(file, env, &all)
    }

    /// `plugsync reconcile ARGS` on the desk's plugins.yaml, started in the background, with
    /// the state directory `state` and these environment variables.
    pub fn reconcile_in_background(&self, env: &[(&str, &str)], args: &[&str]) -> Proc {
        let (args, vars) = self.reconcile_command(&self.path().join("plugins.yaml"), env, args);
        let vars: Vec<(&str, &OsStr)> = vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_os_str()))
            .collect();
        Proc::spawn(&args, &vars)
    }

    /// `plugsync reconcile -f FILE --host URL --token-file token ARGS` with the state
    /// directory `state` and these environment variables.
    pub fn reconcile_of(&self, file: &Path, env: &[(&str, &str)], args: &[&str]) -> Finished {
        let (args, vars) = self.reconcile_command(file, env, args);
        let vars: Vec<(&str, &OsStr)> = vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_os_str()))
            .collect();
        plugsync(&args, &vars)
    }

    /// The arguments and environment of `plugsync reconcile -f FILE …`.
    fn reconcile_command(
        &self,
        file: &Path,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> (Vec<OsString>, Vec<(String, OsString)>) {
        let mut all: Vec<OsString> = vec![
            "reconcile".into(),
            "-f".into(),
            file.into(),
            "--host".into(),
            (&self.host.url).into(),
        ];
        // The `default` client's token, unless the test names another client's.
        if !args.contains(&"--token-file") {
            all.extend(["--token-file".into(), self.path().join("token").into()]);
        }
        all.extend(args.iter().map(Into::into));
        let mut vars = vec![(
            "PLUGSYNC_STATE_DIR".to_owned(),
            self.path().join("state").into(),
        )];
        vars.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).into())));
        (all, vars)
    }

    /// `plugsync ARGS --host URL --token-file token` (the `default` client's token unless
    /// the test gives another's), with the desk's state directory, on a Saturday: an
    /// operator's command against the desk's host.
    pub fn operator(&self, args: &[&str]) -> Finished {
        let mut all: Vec<OsString> = args.iter().map(Into::into).collect();
        all.extend(["--host".into(), (&self.host.url).into()]);
        if !args.contains(&"--token-file") {
            all.extend(["--token-file".into(), self.path().join("token").into()]);
        }
        let state = self.path().join("state");
        let env = [
            ("PLUGSYNC_STATE_DIR", state.as_os_str()),
            ("PLUGSYNC_NOW", OsStr::new(SATURDAY)),
        ];
        plugsync(&all, &env)
    }

    pub fn dry_run(&self, args: &[&str]) -> Finished {
        self.dry_run_at(SATURDAY, args)
    }

    /// Output made comparable: the host's URL, paths and host times replaced.
    pub fn normalised(&self, text: &str) -> String {
        let text = text.replace(&self.host.url, "[HOST]");
        let text = normalise(&text, self.path());
        without_idle_times(&normalise_host_times(&text))
    }

    /// Checks a dry run's exit code and its normalised stdout (or stderr, on an error).
    pub fn check(&self, finished: &Finished, code: i32, expected: Expect) {
        let shown = if code == 1 {
            &finished.stderr
        } else {
            &finished.stdout
        };
        assert_exit(finished, code);
        expected.assert_eq(&self.normalised(shown));
    }
}

/// How long ago a plugin's last call was, by the host's clock (`served its last call 64 ms
/// ago`), as `[T]`.
pub fn without_idle_times(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("last call ") {
        let (head, tail) = rest.split_at(at + "last call ".len());
        out.push_str(head);
        match tail.find(" ago") {
            Some(end) if tail[..end].starts_with(|c: char| c.is_ascii_digit()) => {
                out.push_str("[T]");
                rest = &tail[end..];
            }
            _ => rest = tail,
        }
    }
    out.push_str(rest);
    out
}

/// Asserts the exit code, showing both outputs if it differs.
pub fn assert_exit(finished: &Finished, code: i32) {
    assert_eq!(
        finished.status.code(),
        Some(code),
        "stdout:\n{}\nstderr:\n{}",
        finished.stdout,
        finished.stderr
    );
}

/// Checks the exit code, then stdout (or stderr on exit 1 with nothing on stdout), normalised.
pub fn check(desk: &Desk, finished: &Finished, code: i32, expected: Expect) {
    assert_exit(finished, code);
    let shown = if finished.stdout.is_empty() {
        &finished.stderr
    } else {
        &finished.stdout
    };
    expected.assert_eq(&normalise_apply(&desk.normalised(shown)));
}

/// Step ids and plan ids (digests) become `[ID]`, slot-held times `[µs]`.
pub fn normalise_apply(text: &str) -> String {
    let mut out = String::new();
    for word in text.split_inclusive(|c: char| c.is_whitespace() || c == '(' || c == ')') {
        let bare = word.trim_end_matches(|c: char| c.is_whitespace() || c == '(' || c == ')');
        let tail = &word[bare.len()..];
        let hex = bare.len() >= 12 && bare.chars().take(12).all(|c| c.is_ascii_hexdigit());
        if hex {
            out.push_str("[ID]");
            out.push_str(tail);
        } else if bare.chars().all(|c| c.is_ascii_digit())
            && tail.starts_with(' ')
            && out.ends_with("held ")
        {
            out.push_str("[N]");
            out.push_str(tail);
        } else {
            out.push_str(word);
        }
    }
    out
}

pub fn publish(dir: &Path, name: &str, channel: &str) {
    publish_signed(dir, name, channel, None);
}

/// Publishes a built library to the registry in `dir`, signed with `key` if given.
pub fn publish_signed(dir: &Path, name: &str, channel: &str, key: Option<&Path>) {
    let library = lib(name);
    let registry = dir.join("registry");
    let mut args: Vec<&OsStr> = vec![
        "publish".as_ref(),
        library.as_os_str(),
        "--registry".as_ref(),
        registry.as_os_str(),
        "--channel".as_ref(),
        OsStr::new(channel),
    ];
    if let Some(key) = key {
        args.extend(["--sign-key".as_ref(), key.as_os_str()]);
    }
    let finished = plugsync(&args, &[]);
    assert!(finished.status.success(), "{}", finished.stderr);
}

/// Host times (`observed 2026-12-02 14:02:21 UTC`, `since 2026-12-02T14:02:21Z`) become
/// `[TIME]`, and the plan id `[ID]` (it covers those times): the host runs on the clock. The
/// `Waits:` line's times come from `PLUGSYNC_NOW` and are kept.
pub fn normalise_host_times(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let line = match line.find(" Plan id ") {
            Some(at) => format!("{} Plan id [ID].", &line[..at]),
            None => line.to_owned(),
        };
        if line.trim_start().starts_with("Waits:") {
            out.push_str(&line);
        } else {
            out.push_str(&without_timestamps(&line));
        }
        out.push('\n');
    }
    out
}

/// `text` with each `YYYY-MM-DD?HH:MM:SS` (then `Z` or ` UTC`, if there) as `[TIME]`.
pub fn without_timestamps(text: &str) -> String {
    let shape = |window: &[u8]| {
        window.len() == 19
            && window.iter().enumerate().all(|(i, b)| match i {
                4 | 7 => *b == b'-',
                10 => *b == b'T' || *b == b' ',
                13 | 16 => *b == b':',
                _ => b.is_ascii_digit(),
            })
    };
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        if i + 19 <= bytes.len() && shape(&bytes[i..i + 19]) {
            out.push_str("[TIME]");
            i += 19;
            if text[i..].starts_with('Z') {
                i += 1;
            } else if text[i..].starts_with(" UTC") {
                i += 4;
            }
            continue;
        }
        let c = text[i..].chars().next().unwrap_or(' ');
        out.push(c);
        i += c.len_utf8();
    }
    out
}
