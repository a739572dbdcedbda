//! Control API overhead: what driving the runtime over HTTP costs, against calling the same
//! `Runtime` in process.
//!
//! A real `ControlServer` serves a real `Runtime` in this process on 127.0.0.1, on a
//! multi-thread Tokio runtime with two workers as `plugsync host` serves it; a `reqwest`
//! client on a current-thread runtime blocks on each request, as `plugsync`'s own client does
//! (one kept-alive connection, the body read whole and parsed as JSON). `ma_cross` 1.0.0 and
//! 2.0.0 are the real release libraries, with ~10 KB of state (many instruments, as in
//! `swap_stall`). The store is a temporary directory on the machine's disk: the step records
//! and the committed set are fsynced there, as in a host.
//!
//! 1. **Round trips**, with no caller load: each operation over HTTP beside the same work done
//!    in process, the transports taking turns call by call so that drift hits them alike.
//!    For the mutating routes "the same work" is what the handler runs: the runtime call
//!    inside `Runtime::once_per_step`, whose record (written and fsynced) is what makes a
//!    retried request safe; the bare runtime call, with no record, is shown beside it, as the
//!    figure of a host that drives itself in process.
//! 2. **Swap stall** seen by two caller threads on `SlotHandle`s while the swap is driven over
//!    HTTP (`switch` + `commit`), beside `Runtime::swap` + `commit` called in process under the
//!    same load in the same run, turn by turn. As in `swap_stall`, each swap opens a window;
//!    callers record the longest call that overlapped it, in wall time and net of the time the
//!    caller queued for a CPU (`/proc/thread-self/schedstat`), and after each swap a window as
//!    long in which nothing is swapped gives the machine's noise (an HTTP-driven swap keeps its
//!    window open longer, so it catches more of that noise).

mod common;
mod stall;

use common::percentile;
use stall::{CpuQueueing, Probe, Seen, spin_for};

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use plugsync_host::control::{ControlConfig, ControlServer};
use plugsync_host::{
    Digest, HostError, Runtime, RuntimeOptions, SlotHandle, SwapPath, SwapRequest, VerifySpec,
};
use serde_json::{Value, json};

const PLUGIN: &str = "ma_cross";
const TOKEN: &str = "bench-token";
/// State to swap with, as `swap_stall`: instruments are added until the snapshot reaches it.
const TARGET_STATE_BYTES: usize = 10 * 1024;
/// Bars given to each instrument before measuring: `slow_ma_period`, a full window.
const WARM_UP_BARS: usize = 20;
const CALLERS: usize = 2;

/// How much to measure.
struct Params {
    /// Timed round trips per transport of the cheap operations (reads, replays).
    cheap: usize,
    /// ... of staging (a 6 MB library hashed) and verifying (throwaway instances).
    heavy: usize,
    /// Up/down turns per transport of switch + commit (two samples each).
    swap_turns: usize,
    /// Switch-then-rollback turns per transport (the rollback timed).
    rollbacks: usize,
    /// Stall: up/down turns per transport and load (two swaps each).
    stall_turns: usize,
}

/// `cargo bench`: about 35 s on 2 quiet cores, after the build (1 200 swaps in part 2: 300 per
/// transport and load, so a p99 is the 3rd longest).
const FULL: Params = Params {
    cheap: 2_000,
    heavy: 200,
    swap_turns: 100,
    rollbacks: 200,
    stall_turns: 150,
};
/// `cargo test --benches`: checks that everything runs.
const SMOKE: Params = Params {
    cheap: 5,
    heavy: 2,
    swap_turns: 1,
    rollbacks: 2,
    stall_turns: 1,
};

fn main() {
    let params = if common::is_bench_run() {
        FULL
    } else {
        println!("smoke run (not `cargo bench`): the figures below mean nothing");
        SMOKE
    };
    let [v1_library, v2_library, risk_library] =
        common::plugin_libraries(["ma_cross_v1_0_0", "ma_cross_v2_0_0", "risk_model_v1_0_0"]);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let runtime = Runtime::new(RuntimeOptions::new(dir.path().join("store"))).expect("a runtime");
    let v1 = runtime
        .stage_file(&v1_library)
        .expect("1.0.0 stages")
        .digest;
    let v2 = runtime
        .stage_file(&v2_library)
        .expect("2.0.0 stages")
        .digest;
    // ma_cross 2.0.0 needs risk_model: the control API refuses a switch whose dependencies
    // would not run (the in-process `Runtime::swap` leaves that check to its caller).
    let risk_model = runtime
        .stage_file(&risk_library)
        .expect("risk_model 1.0.0 stages")
        .digest;
    runtime
        .install(&risk_model, json!({"max_position": 10}))
        .expect("risk_model 1.0.0 installs");
    runtime
        .install(&v1, json!({"fast_ma_period": 5, "slow_ma_period": 20}))
        .expect("ma_cross 1.0.0 installs");
    let slot = runtime.handle(PLUGIN).expect("installed just now");
    let instruments = grow_state(&runtime, &slot);
    let state_bytes = runtime.snapshot(PLUGIN).expect("a snapshot").state.len();

    let (server, base) = serve(&runtime, dir.path());
    let client = Client::new(base);
    let host = Host {
        runtime: &runtime,
        client: &client,
        v1,
        v2,
    };
    let cpus = thread::available_parallelism().map_or(0, usize::from);
    println!();
    println!(
        "control API: ma_cross 1.0.0 <-> 2.0.0 with {state_bytes} B of state ({} instruments), \
         server and client in this process on 127.0.0.1, {cpus} CPUs",
        instruments.len()
    );

    let v2_bytes = std::fs::read(&v2_library).expect("the 2.0.0 library reads");
    let cpu_before = CpuUse::now();
    let rows = round_trips(&host, &params, &v2_bytes, &v2_library);
    let elsewhere = CpuUse::elsewhere_since(cpu_before);
    print_round_trips(&rows, elsewhere);
    print_stage_hash(&v2_bytes, params.heavy);

    let feed = common::bar_feed(&instruments);
    // The warm-up used the first bars of every instrument; carry on from there.
    let start = WARM_UP_BARS * instruments.len();
    let cpu_before = CpuUse::now();
    let stall = stall(&host, &slot, &feed, start, params.stall_turns);
    let elsewhere = CpuUse::elsewhere_since(cpu_before);
    print_stall(&stall, elsewhere);

    // The server's task ends with its runtime: nothing is in flight by now.
    server.shutdown_timeout(Duration::from_secs(1));
}

/// An upgrade config of 2.0.0 under which it answers exactly as 1.0.0 does (`swap_stall`'s
/// main series): an optimistic swap's catch-up then agrees, so the stall is the swap's, not a
/// fall-back to the locked path.
fn upgrade_config() -> Value {
    json!({"fast_period": 5, "slow_period": 20, "signal_threshold": 0.0})
}

/// Adds instruments, each with a full window, until the state reaches the target size.
fn grow_state(runtime: &Runtime, slot: &SlotHandle) -> Vec<String> {
    let mut output = Vec::new();
    let mut count = 0;
    loop {
        // A few at a time: a snapshot per instrument would be wasteful, not wrong.
        count += 4;
        let instruments = common::instruments(count);
        for bar in 0..WARM_UP_BARS {
            for (index, name) in instruments.iter().enumerate().skip(count - 4) {
                slot.call_into(&common::bar_input(name, index, bar), &mut output)
                    .expect("ma_cross accepts its bars");
            }
        }
        if runtime.snapshot(PLUGIN).expect("a snapshot").state.len() >= TARGET_STATE_BYTES {
            return instruments;
        }
    }
}

// ---- the two ends ----

/// Serves the control API of `runtime` on 127.0.0.1 (a free port) with a `0600` token file,
/// on its own multi-thread runtime with two workers, as `plugsync host` does: its threads then
/// compete for the CPUs with the callers as they would in a host. Returns that runtime (the
/// server runs until it is shut down) and the API's base URL.
fn serve(runtime: &Runtime, dir: &Path) -> (tokio::runtime::Runtime, String) {
    let io = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("plugsync-control")
        .enable_all()
        .build()
        .expect("the server's runtime starts");
    let token = dir.join("token");
    std::fs::write(&token, format!("{TOKEN}\n")).expect("the token file is written");
    std::fs::set_permissions(&token, std::fs::Permissions::from_mode(0o600))
        .expect("the token file is made private");
    let mut config = ControlConfig::new(token);
    config.listen = "127.0.0.1:0".parse().expect("a socket address");
    let server = io
        .block_on(ControlServer::bind(runtime.clone(), config))
        .expect("the control API binds");
    let base = server.url().to_owned();
    io.spawn(server.serve(std::future::pending()));
    (io, base)
}

/// The sidecar's end: `reqwest` on a current-thread runtime, blocking on each request, as
/// `plugsync`'s client does.
struct Client {
    http: reqwest::Client,
    io: tokio::runtime::Runtime,
    base: String,
}

/// A successful answer.
struct Answer {
    body: Value,
    replayed: bool,
}

impl Client {
    fn new(base: String) -> Client {
        Client {
            // No proxy, as `plugsync`'s client: an environment's proxy must not see the token
            // (nor add a hop to the figures).
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("an HTTP client"),
            io: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the client's runtime starts"),
            base,
        }
    }

    /// Sends `request` with the token, reads the whole body and parses it, as a sidecar must
    /// before it acts on an answer; every answer here must be a success.
    fn send(&self, request: reqwest::RequestBuilder) -> Answer {
        self.io.block_on(async {
            let response = request
                .bearer_auth(TOKEN)
                .send()
                .await
                .expect("the control API answers");
            let status = response.status();
            let replayed = response
                .headers()
                .get("x-plugsync-replayed")
                .is_some_and(|v| v == "true");
            let text = response.text().await.expect("an answer's body");
            assert!(status.is_success(), "{status}: {text}");
            let body = serde_json::from_str(&text).expect("the control API answers JSON");
            Answer { body, replayed }
        })
    }

    fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(format!("{}{path}", self.base)))
    }

    fn post(&self, path: &str, body: &Value) -> Answer {
        self.send(self.http.post(format!("{}{path}", self.base)).json(body))
    }

    fn put(&self, path: &str, bytes: &'static [u8]) -> Answer {
        self.send(self.http.put(format!("{}{path}", self.base)).body(bytes))
    }
}

/// What the measurements drive: the runtime directly, or through the client.
struct Host<'a> {
    runtime: &'a Runtime,
    client: &'a Client,
    v1: Digest,
    v2: Digest,
}

/// A step id never used before in this run (the store is fresh, so in the store too).
fn fresh_step_id(operation: &str) -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    format!("bench-{operation}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The body of `switch` to `target`: the upgrade with [`upgrade_config`], the downgrade with
/// the config its migration gives (as `swap_stall`).
fn switch_body(host: &Host<'_>, target: Digest) -> Value {
    let mut body = json!({"plugin": PLUGIN, "artifact": target});
    if target == host.v2 {
        body["config"] = upgrade_config();
    }
    body
}

/// The same swap as a [`SwapRequest`].
fn swap_request(host: &Host<'_>, target: Digest, step_id: &str) -> SwapRequest {
    let mut request = SwapRequest::new(PLUGIN, target).step_id(step_id);
    if target == host.v2 {
        request = request.config(upgrade_config());
    }
    request
}

/// Clears the failed mark a rollback set on `target` (untimed): every rollback marks the
/// version it left failed, and the next turn switches up to it again, which the host would
/// refuse.
fn clear_failed_mark(runtime: &Runtime, target: Digest) {
    runtime
        .clear_failed(&target, "control_api bench")
        .expect("the rollback marked the version it left failed");
}

/// What the handler records of a runtime error (only to fail with it).
fn recorded_error(error: &HostError) -> Value {
    json!({"code": error.code(), "message": error.to_string()})
}

/// Runs `apply` once per step id as the handler does, converting its result to JSON inside, as
/// the handler does; panics unless it succeeded (or replayed a success).
fn once_per_step<T: serde::Serialize>(
    runtime: &Runtime,
    step_id: &str,
    operation: &str,
    body: &Value,
    apply: impl FnOnce() -> plugsync_host::Result<T>,
) -> (Value, bool) {
    // The request's fingerprint, as the handler takes it: the sha256 of its canonical JSON.
    let canonical = plugsync_plugin::canonical_json(body).expect("a JSON body is canonical");
    let request = plugsync_host::Digest::of(&canonical);
    let outcome = runtime
        .once_per_step(step_id, operation, &request, || {
            apply()
                .map(|value| serde_json::to_value(value).expect("a report serialises"))
                .map_err(|e| recorded_error(&e))
        })
        .expect("the step is recorded");
    let value = outcome
        .outcome
        .unwrap_or_else(|e| panic!("{operation} failed: {e}"));
    (value, outcome.replayed)
}

// ---- 1. round trips ----

/// How an operation is driven.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Via {
    Http,
    /// The handler's work in process: for a mutating route, inside `once_per_step`.
    InProcess,
    /// The bare runtime call, no step record (mutating routes only).
    Bare,
}

/// One iteration of an operation by one transport: does it, pushing the time of what is
/// measured (setup excluded) onto the samples.
type Iteration<'a> = Box<dyn FnMut(&mut Vec<Duration>) + 'a>;

/// A transport's iteration; the bound gives the closure its argument's type.
fn by<'a>(via: Via, iteration: impl FnMut(&mut Vec<Duration>) + 'a) -> (Via, Iteration<'a>) {
    (via, Box::new(iteration))
}

/// One operation's samples, by transport.
struct OpRow {
    name: &'static str,
    http: Vec<Duration>,
    in_process: Vec<Duration>,
    bare: Option<Vec<Duration>>,
}

/// Times `iterations` of each transport, after a tenth as many (at least 2) untimed, the
/// transports taking turns and the one going first rotating, so that neither always runs on
/// a cache the other warmed.
fn measure(name: &'static str, iterations: usize, mut by: Vec<(Via, Iteration<'_>)>) -> OpRow {
    let warm_up = (iterations / 10).max(2);
    let mut samples: Vec<Vec<Duration>> = by.iter().map(|_| Vec::new()).collect();
    let mut discarded = Vec::new();
    for i in 0..warm_up + iterations {
        for k in 0..by.len() {
            let t = (i + k) % by.len();
            let sink = if i < warm_up {
                &mut discarded
            } else {
                &mut samples[t]
            };
            (by[t].1)(sink);
        }
    }
    let mut take = |via: Via| {
        by.iter()
            .position(|(v, _)| *v == via)
            .map(|t| std::mem::take(&mut samples[t]))
    };
    OpRow {
        name,
        http: take(Via::Http).expect("every operation goes over HTTP"),
        in_process: take(Via::InProcess).expect("every operation has its in-process baseline"),
        bare: take(Via::Bare),
    }
}

/// Times `work`, pushing its wall time; keeps its result from being optimised away.
fn timed<T>(samples: &mut Vec<Duration>, work: impl FnOnce() -> T) {
    let started = Instant::now();
    std::hint::black_box(work());
    samples.push(started.elapsed());
}

fn round_trips(host: &Host<'_>, params: &Params, v2_bytes: &[u8], v2_path: &Path) -> Vec<OpRow> {
    let (runtime, client) = (host.runtime, host.client);
    let (v1, v2) = (host.v1, host.v2);
    let mut rows = Vec::new();

    rows.push(measure(
        "GET status",
        params.cheap,
        vec![
            by(Via::Http, |s| timed(s, || client.get("/v1/status").body)),
            by(Via::InProcess, |s| timed(s, || runtime.status())),
        ],
    ));

    let state_path = format!("/v1/plugins/{PLUGIN}/state");
    rows.push(measure(
        "GET state",
        params.cheap,
        vec![
            by(Via::Http, |s| timed(s, || client.get(&state_path))),
            by(Via::InProcess, |s| {
                timed(s, || runtime.snapshot(PLUGIN).expect("a snapshot"))
            }),
        ],
    ));

    // Leaked once so that each request sends the bytes without copying 6 MB first: the copy
    // is the benchmark's, not the API's.
    let bytes: &'static [u8] = Box::leak(v2_bytes.to_vec().into_boxed_slice());
    let file = v2_path
        .file_name()
        .and_then(|n| n.to_str())
        .expect("a library's file name is UTF-8")
        .to_owned();
    let stage_path = format!("/v1/artifacts/{v2}/{file}");
    rows.push(measure(
        "PUT artifact (staged)",
        params.heavy,
        vec![
            by(Via::Http, |s| timed(s, || client.put(&stage_path, bytes))),
            by(Via::InProcess, |s| {
                timed(s, || {
                    runtime
                        .stage(&file, bytes, &v2)
                        .expect("2.0.0 stages again")
                })
            }),
        ],
    ));

    let verify_body = json!({"plugin": PLUGIN, "artifact": v2, "config": upgrade_config()});
    let spec = VerifySpec::default();
    rows.push(measure(
        "POST verify",
        params.heavy,
        vec![
            by(Via::Http, |s| {
                let path = format!("/v1/steps/{}/verify", fresh_step_id("verify"));
                timed(s, || {
                    let answer = client.post(&path, &verify_body);
                    assert_eq!(answer.body["passed"], true, "{:#}", answer.body);
                });
            }),
            by(Via::InProcess, |s| {
                timed(s, || {
                    let config = upgrade_config();
                    let report = runtime
                        .verify(PLUGIN, &v2, Some(&config), None, &spec)
                        .expect("2.0.0 verifies");
                    assert!(report.passed(), "{}", report.summary());
                });
            }),
        ],
    ));

    // Each turn swaps up then down, each swap + commit timed together with a fresh step id
    // (shared by the two: records are kept per step id and operation).
    rows.push(measure(
        "POST switch + commit",
        params.swap_turns,
        vec![
            by(Via::Http, |s| {
                for target in [v2, v1] {
                    let id = fresh_step_id("swap");
                    let body = switch_body(host, target);
                    timed(s, || {
                        client.post(&format!("/v1/steps/{id}/switch"), &body);
                        client.post(
                            &format!("/v1/steps/{id}/commit"),
                            &json!({"plugin": PLUGIN}),
                        )
                    });
                }
            }),
            by(Via::InProcess, |s| {
                for target in [v2, v1] {
                    let id = fresh_step_id("swap");
                    timed(s, || {
                        once_per_step(runtime, &id, "switch", &json!({"plugin": PLUGIN}), || {
                            runtime.swap(swap_request(host, target, &id))
                        });
                        once_per_step(runtime, &id, "commit", &json!({"plugin": PLUGIN}), || {
                            runtime
                                .commit(PLUGIN)
                                .map(|version| json!({"plugin": PLUGIN, "version": version}))
                        })
                    });
                }
            }),
            by(Via::Bare, |s| {
                for target in [v2, v1] {
                    let id = fresh_step_id("swap");
                    timed(s, || {
                        runtime
                            .swap(swap_request(host, target, &id))
                            .expect("ma_cross swaps");
                        runtime.commit(PLUGIN).expect("the step commits")
                    });
                }
            }),
        ],
    ));

    // Each turn switches up (untimed, the same way for every transport) and times the rollback
    // back to 1.0.0. No calls were made meanwhile: the rollback replays an empty journal.
    let switch_up = |id: &str| {
        runtime
            .swap(swap_request(host, v2, id))
            .expect("ma_cross swaps up");
    };
    rows.push(measure(
        "POST rollback",
        params.rollbacks,
        vec![
            by(Via::Http, |s| {
                let id = fresh_step_id("rollback");
                switch_up(&id);
                let path = format!("/v1/steps/{id}/rollback");
                timed(s, || client.post(&path, &json!({"plugin": PLUGIN})));
                clear_failed_mark(runtime, v2);
            }),
            by(Via::InProcess, |s| {
                let id = fresh_step_id("rollback");
                switch_up(&id);
                timed(s, || {
                    once_per_step(runtime, &id, "rollback", &json!({"plugin": PLUGIN}), || {
                        runtime.rollback(PLUGIN)
                    })
                });
                clear_failed_mark(runtime, v2);
            }),
            by(Via::Bare, |s| {
                let id = fresh_step_id("rollback");
                switch_up(&id);
                timed(s, || runtime.rollback(PLUGIN).expect("the step rolls back"));
                clear_failed_mark(runtime, v2);
            }),
        ],
    ));

    // A sidecar that retries a switch it already sent: the step's recorded answer (the swap
    // report, with the state before and after) is read back from the store and sent again.
    let replayed_id = fresh_step_id("replayed");
    let replayed_body = switch_body(host, v2);
    let replayed_path = format!("/v1/steps/{replayed_id}/switch");
    client.post(&replayed_path, &replayed_body);
    client.post(
        &format!("/v1/steps/{replayed_id}/commit"),
        &json!({"plugin": PLUGIN}),
    );
    let back = fresh_step_id("swap");
    runtime
        .swap(swap_request(host, v1, &back))
        .expect("ma_cross swaps down");
    runtime.commit(PLUGIN).expect("the step commits");
    rows.push(measure(
        "POST switch, replayed",
        params.cheap,
        vec![
            by(Via::Http, |s| {
                timed(s, || {
                    let answer = client.post(&replayed_path, &replayed_body);
                    assert!(answer.replayed, "a retried step id is replayed");
                });
            }),
            by(Via::InProcess, |s| {
                timed(s, || {
                    let (_, replayed) = once_per_step(
                        runtime,
                        &replayed_id,
                        "switch",
                        &replayed_body,
                        || -> plugsync_host::Result<()> {
                            panic!("a retried step id must not switch again")
                        },
                    );
                    assert!(replayed, "a retried step id is replayed");
                });
            }),
        ],
    ));
    rows
}

fn print_round_trips(rows: &[OpRow], elsewhere: Option<Elsewhere>) {
    println!();
    println!(
        "1. round trips, no caller load: HTTP (reqwest -> axum, kept-alive, body parsed) vs the \
         same work in process"
    );
    print_elsewhere(elsewhere);
    println!(
        "  {:<22} {:>5} | {:^19} | {:^19} | {:^13} | {:^19} | {:^13}",
        "", "", "HTTP", "in process", "HTTP/in proc", "bare runtime call", "HTTP/bare"
    );
    println!(
        "  {:<22} {:>5} | {:>9} {:>9} | {:>9} {:>9} | {:>6} {:>6} | {:>9} {:>9} | {:>6} {:>6}",
        "", "n", "p50", "p99", "p50", "p99", "p50", "p99", "p50", "p99", "p50", "p99"
    );
    for row in rows {
        let http = [percentile(&row.http, 0.5), percentile(&row.http, 0.99)];
        let in_process = [
            percentile(&row.in_process, 0.5),
            percentile(&row.in_process, 0.99),
        ];
        let ratio = |a: Duration, b: Duration| format!("{:.1}x", a.as_secs_f64() / b.as_secs_f64());
        let bare = match &row.bare {
            Some(bare) => {
                let bare = [percentile(bare, 0.5), percentile(bare, 0.99)];
                format!(
                    "{:>9} {:>9} | {:>6} {:>6}",
                    time(bare[0]),
                    time(bare[1]),
                    ratio(http[0], bare[0]),
                    ratio(http[1], bare[1])
                )
            }
            None => format!("{:>9} {:>9} | {:>6} {:>6}", "-", "-", "-", "-"),
        };
        println!(
            "  {:<22} {:>5} | {:>9} {:>9} | {:>9} {:>9} | {:>6} {:>6} | {bare}",
            row.name,
            row.http.len(),
            time(http[0]),
            time(http[1]),
            time(in_process[0]),
            time(in_process[1]),
            ratio(http[0], in_process[0]),
            ratio(http[1], in_process[1]),
        );
    }
    println!(
        "  in process: the handler's work without HTTP: status(), snapshot(), stage() of the \
         library already in the store, verify(),"
    );
    println!(
        "    and for switch, commit, rollback and the replay the runtime call inside \
         once_per_step, whose record (fsynced) makes a retry safe"
    );
    println!(
        "  bare runtime call: swap() + commit(), rollback() with no step record, as a host \
         driving itself in process would call them"
    );
}

/// What hashing the staged library once takes: staging is mostly hashing, and the `PUT`
/// handler hashes the body itself before `Runtime::stage` hashes it again in the store, so
/// this puts the staging rows' difference in proportion.
fn print_stage_hash(bytes: &[u8], iterations: usize) {
    let times: Vec<Duration> = (0..iterations)
        .map(|_| {
            let started = Instant::now();
            std::hint::black_box(Digest::of(std::hint::black_box(bytes)));
            started.elapsed()
        })
        .collect();
    println!(
        "  PUT artifact: the library is {} B; sha256 of it once takes {} (p50); the handler \
         hashes it, then the store again",
        bytes.len(),
        time(percentile(&times, 0.5)),
    );
}

// ---- 2. swap stall under load ----

/// How hard the callers call.
struct Load {
    name: &'static str,
    /// What each caller does between two calls, spinning on `Instant`; zero: nothing.
    gap: Duration,
}

/// A host's feed handlers pinned to their cores, busy-waiting between market-data events
/// (`swap_stall`'s paced load), and callers without pause: an overload that bounds what any
/// load can do to a swap.
const LOADS: [Load; 2] = [
    Load {
        name: "paced, 5 µs gap",
        gap: Duration::from_micros(5),
    },
    Load {
        name: "flat out",
        gap: Duration::ZERO,
    },
];

/// A caller thread (`swap_stall`'s): calls, paced as [`Probe::load`] says, until told to stop;
/// returns how many calls it made at each load level.
fn call_until_stopped(
    slot: &SlotHandle,
    feed: &[Vec<u8>],
    start: usize,
    probe: &Probe,
) -> [u64; LOADS.len()] {
    let queueing = CpuQueueing::for_this_thread();
    let mut calls = [0; LOADS.len()];
    let mut output = Vec::with_capacity(256);
    let mut next = start;
    let mut queued_after_previous = None;
    while !probe.stop.load(Ordering::Relaxed) {
        let load = probe.load.load(Ordering::Relaxed);
        let gap = LOADS[load].gap;
        let input = &feed[next];
        next = (next + 1) % feed.len();
        let epoch_before = probe.epoch.load(Ordering::SeqCst);
        let in_window = epoch_before % 2 == 1;
        let queued_before = if !gap.is_zero() {
            // Read before every call, in windows or not, so that the pace is the same in and
            // out of them (the read is part of the gap).
            queueing.total_ns()
        } else if in_window {
            // Flat out, the reading after one call is the reading before the next: a second
            // read per call would slow the callers down inside windows only.
            queued_after_previous.or_else(|| queueing.total_ns())
        } else {
            None
        };
        let started = Instant::now();
        slot.call_into(input, &mut output)
            .expect("ma_cross accepts its bars, in every version");
        let ended = Instant::now();
        let wall = (ended - started).as_nanos() as u64;
        let epoch_after = probe.epoch.load(Ordering::SeqCst);
        calls[load] += 1;
        queued_after_previous = None;
        if in_window || epoch_after != epoch_before {
            let queued_after = queueing.total_ns();
            let net = match (queued_before, queued_after) {
                (Some(before), Some(after)) => Some(wall.saturating_sub(after - before)),
                _ => None,
            };
            probe.observe(epoch_before, epoch_after, wall, net);
            if gap.is_zero() && epoch_after % 2 == 1 {
                queued_after_previous = queued_after;
            }
        }
        // Spin rather than sleep: waking from a sleep takes the scheduler tens of µs, which
        // would pace the calls more than the gap does.
        while ended.elapsed() < gap {
            std::hint::spin_loop();
        }
    }
    calls
}

/// One swap (and commit) as the main thread saw it; the callers' view is added once they
/// stopped.
struct StallSample {
    load: usize,
    via: Via,
    window: usize,
    control_window: usize,
    /// Switch + commit, as the main thread timed them (for HTTP: both round trips).
    elapsed: Duration,
    /// `SwapReport::locked_window`: how long the swap held the slot for the switch.
    locked_window: Duration,
    fell_back: bool,
}

struct Stall {
    samples: Vec<StallSample>,
    seen: Vec<Seen>,
    /// Calls per second at each load level, both callers.
    call_rates: Vec<f64>,
}

/// Swaps up and down under each load, HTTP and in process taking turns pair by pair (and the
/// loads in turn) so that drift on a shared machine hits them alike.
fn stall(
    host: &Host<'_>,
    slot: &SlotHandle,
    feed: &[Vec<u8>],
    start: usize,
    turns: usize,
) -> Stall {
    let transports = [Via::InProcess, Via::Http];
    let swaps = 2 * turns * transports.len() * LOADS.len();
    let probe = Probe::new(2 * swaps);
    let mut samples = Vec::with_capacity(swaps);
    let mut time_at_load = [Duration::ZERO; LOADS.len()];
    let calls = thread::scope(|scope| {
        let callers: Vec<_> = (0..CALLERS)
            .map(|caller| {
                // Each caller half a feed apart.
                let start = (start + caller * feed.len() / CALLERS) % feed.len();
                let probe = &probe;
                scope.spawn(move || call_until_stopped(slot, feed, start, probe))
            })
            .collect();
        let mut load_since = Instant::now();
        for turn in 0..turns * transports.len() * LOADS.len() {
            let via = transports[turn % transports.len()];
            let load = turn / transports.len() % LOADS.len();
            let previous = probe.load.swap(load, Ordering::Relaxed);
            time_at_load[previous] += load_since.elapsed();
            load_since = Instant::now();
            for target in [host.v2, host.v1] {
                let window = 2 * samples.len();
                // Callers alone for a moment between windows, so that each window starts
                // alike (and, at a change of load, at the new pace).
                thread::sleep(Duration::from_millis(1));
                let id = fresh_step_id("stall");
                let (elapsed, locked_window, fell_back) =
                    probe.window(window, || swap_and_commit(host, via, target, &id));
                thread::sleep(Duration::from_millis(1));
                probe.window(window + 1, || spin_for(elapsed));
                samples.push(StallSample {
                    load,
                    via,
                    window,
                    control_window: window + 1,
                    elapsed,
                    locked_window,
                    fell_back,
                });
            }
        }
        time_at_load[probe.load.load(Ordering::Relaxed)] += load_since.elapsed();
        probe.stop.store(true, Ordering::Relaxed);
        callers
            .into_iter()
            .map(|caller| caller.join().expect("a caller thread panicked"))
            .collect::<Vec<_>>()
    });
    let call_rates = (0..LOADS.len())
        .map(|load| {
            let total: u64 = calls.iter().map(|c| c[load]).sum();
            total as f64 / time_at_load[load].as_secs_f64()
        })
        .collect();
    let seen = (0..2 * swaps).map(|w| probe.seen(w)).collect();
    Stall {
        samples,
        seen,
        call_rates,
    }
}

/// Swaps to `target` and commits, over HTTP or in process; returns the time both took, the
/// swap's locked window, and whether it fell back to the locked path.
fn swap_and_commit(
    host: &Host<'_>,
    via: Via,
    target: Digest,
    step_id: &str,
) -> (Duration, Duration, bool) {
    let started = Instant::now();
    match via {
        Via::Http => {
            let body = switch_body(host, target);
            let report = host
                .client
                .post(&format!("/v1/steps/{step_id}/switch"), &body)
                .body;
            host.client.post(
                &format!("/v1/steps/{step_id}/commit"),
                &json!({"plugin": PLUGIN}),
            );
            let elapsed = started.elapsed();
            // `Duration` serialises as `{"secs", "nanos"}`.
            let locked = &report["locked_window"];
            let locked_window = Duration::new(
                locked["secs"].as_u64().expect("a duration's seconds"),
                locked["nanos"].as_u64().expect("a duration's nanoseconds") as u32,
            );
            (
                elapsed,
                locked_window,
                report["path"]["kind"] != "optimistic",
            )
        }
        Via::InProcess | Via::Bare => {
            let report = host
                .runtime
                .swap(swap_request(host, target, step_id))
                .expect("ma_cross swaps between 1.0.0 and 2.0.0");
            host.runtime.commit(PLUGIN).expect("the step commits");
            let fell_back = matches!(report.path, SwapPath::Locked { .. });
            (started.elapsed(), report.locked_window, fell_back)
        }
    }
}

/// One line of the stall table: the swaps of one transport at one load, or their no-swap
/// windows.
struct StallRow {
    name: &'static str,
    count: usize,
    fell_back: Option<usize>,
    /// Longest wait per window, net: p50, p99, max (over the windows with a net figure).
    net: [Duration; 3],
    unprobed: usize,
    /// The same, wall time: p50, p99.
    wall: [Duration; 2],
    /// `SwapReport::locked_window` p50, p99.
    locked: Option<[Duration; 2]>,
    elapsed_p50: Duration,
}

impl StallRow {
    fn new(name: &'static str, stall: &Stall, samples: &[&StallSample], control: bool) -> StallRow {
        let window =
            |s: &StallSample| stall.seen[if control { s.control_window } else { s.window }];
        let net: Vec<Duration> = samples
            .iter()
            .filter_map(|s| window(s).longest_net)
            .collect();
        let wall: Vec<Duration> = samples.iter().map(|s| window(s).longest_wall).collect();
        let locked: Vec<Duration> = samples.iter().map(|s| s.locked_window).collect();
        let elapsed: Vec<Duration> = samples.iter().map(|s| s.elapsed).collect();
        StallRow {
            name,
            count: samples.len(),
            fell_back: (!control).then(|| samples.iter().filter(|s| s.fell_back).count()),
            net: [
                percentile(&net, 0.5),
                percentile(&net, 0.99),
                percentile(&net, 1.0),
            ],
            unprobed: samples.len() - net.len(),
            wall: [percentile(&wall, 0.5), percentile(&wall, 0.99)],
            locked: (!control).then(|| [percentile(&locked, 0.5), percentile(&locked, 0.99)]),
            elapsed_p50: percentile(&elapsed, 0.5),
        }
    }

    fn print(&self) {
        let dash = || "-".to_owned();
        let [n50, n99, nmax] = self.net;
        let [w50, w99] = self.wall;
        let [l50, l99] = self.locked.map_or([dash(), dash()], |l| l.map(time));
        println!(
            "  {:<24} {:>5} {:>5} | {:>9} {:>9} {:>9} | {:>9} {:>9} | {l50:>9} {l99:>9} | {:>9} {:>6}",
            self.name,
            self.count,
            self.fell_back.map_or_else(dash, |n| n.to_string()),
            time(n50),
            time(n99),
            time(nmax),
            time(w50),
            time(w99),
            time(self.elapsed_p50),
            self.unprobed,
        );
    }
}

fn print_stall(stall: &Stall, elsewhere: Option<Elsewhere>) {
    println!();
    println!(
        "2. swap stall: {CALLERS} callers on SlotHandles; per swap (+ commit), the longest call \
         that overlapped it; net = wall minus time queued for a CPU"
    );
    print_elsewhere(elsewhere);
    println!(
        "  {:<24} {:>5} {:>5} | {:^29} | {:^19} | {:^19} | {:>9} {:>6}",
        "", "", "fell", "longest wait, net", "... wall", "SwapReport.locked", "swap+", "un-"
    );
    println!(
        "  {:<24} {:>5} {:>5} | {:>9} {:>9} {:>9} | {:>9} {:>9} | {:>9} {:>9} | {:>9} {:>6}",
        "", "swaps", "back", "p50", "p99", "max", "p50", "p99", "p50", "p99", "commit", "probed"
    );
    let mut ratios = Vec::new();
    for (load, level) in LOADS.iter().enumerate() {
        let select = |via: Via| -> Vec<&StallSample> {
            stall
                .samples
                .iter()
                .filter(|s| s.load == load && s.via == via)
                .collect()
        };
        let (in_process, http) = (select(Via::InProcess), select(Via::Http));
        println!();
        println!(
            "  {}: {:.0}k calls/s",
            level.name,
            stall.call_rates[load] / 1e3
        );
        let rows = [
            StallRow::new("in process: swap+commit", stall, &in_process, false),
            StallRow::new("  no swap, as long", stall, &in_process, true),
            StallRow::new("HTTP: switch+commit", stall, &http, false),
            StallRow::new("  no swap, as long", stall, &http, true),
        ];
        for row in &rows {
            row.print();
        }
        ratios.push((level.name, rows));
    }
    println!();
    println!(
        "  no swap: after each swap, a window as long under the same load, the main thread \
         spinning instead: the machine's noise"
    );
    println!(
        "  unprobed: windows in which no caller got a CPU to call (left out of the net figures)"
    );
    println!();
    println!("  HTTP / in process      | longest wait, net | ... wall          | swap+commit");
    for (name, rows) in &ratios {
        let [swap, _, http, _] = rows;
        let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64();
        println!(
            "  {name:<22} | p50 {:>4.1}x p99 {:>4.1}x | p50 {:>4.1}x p99 {:>4.1}x | p50 {:>5.1}x",
            ratio(http.net[0], swap.net[0]),
            ratio(http.net[1], swap.net[1]),
            ratio(http.wall[0], swap.wall[0]),
            ratio(http.wall[1], swap.wall[1]),
            ratio(http.elapsed_p50, swap.elapsed_p50),
        );
    }
}

// ---- figures ----

/// The machine's CPU time, and this process's, in clock ticks (`/proc/stat`,
/// `/proc/self/stat`; Linux): what other processes take from the benchmark shows in every
/// figure (as `swap_stall` reports it).
struct CpuUse {
    /// All CPUs, idle included.
    total: u64,
    busy: u64,
    /// Taken by the hypervisor for other guests.
    steal: u64,
    /// This process.
    own: u64,
}

/// Where the CPUs went while a part ran, besides this benchmark, as fractions of them all.
#[derive(Clone, Copy)]
struct Elsewhere {
    other_processes: f64,
    steal: f64,
}

/// The share of the CPUs that, taken by others, marks a part as disturbed: on 2 CPUs, 5 % is
/// a tenth of a core, often enough to preempt a lock holder or a server thread.
const DISTURBED: f64 = 0.05;

impl CpuUse {
    fn now() -> Option<CpuUse> {
        let parse = |fields: &str| -> Option<Vec<u64>> {
            fields.split_whitespace().map(|f| f.parse().ok()).collect()
        };
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        // "cpu  user nice system idle iowait irq softirq steal guest guest_nice"; guest time is
        // counted in user already.
        let cpu = parse(stat.lines().next()?.strip_prefix("cpu")?)?;
        let own_stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        // After the parenthesised command name (which may hold spaces), utime and stime are
        // the 12th and 13th fields (this process starts no child worth counting).
        let own: u64 = own_stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .skip(11)
            .take(2)
            .map(|f| f.parse::<u64>().ok())
            .sum::<Option<u64>>()?;
        Some(CpuUse {
            total: cpu.iter().take(8).sum(),
            busy: cpu[0] + cpu[1] + cpu[2] + cpu[5] + cpu[6],
            steal: *cpu.get(7)?,
            own,
        })
    }

    /// What other processes and the hypervisor took since `before` (`None`: unknown).
    fn elsewhere_since(before: Option<CpuUse>) -> Option<Elsewhere> {
        let (before, after) = (before?, CpuUse::now()?);
        let total = after.total.saturating_sub(before.total).max(1) as f64;
        let others = (after.busy.saturating_sub(before.busy))
            .saturating_sub(after.own.saturating_sub(before.own));
        Some(Elsewhere {
            other_processes: others as f64 / total,
            steal: after.steal.saturating_sub(before.steal) as f64 / total,
        })
    }
}

fn print_elsewhere(elsewhere: Option<Elsewhere>) {
    match elsewhere {
        Some(elsewhere) => println!(
            "  CPUs taken from this benchmark meanwhile: {:.1} % by other processes, {:.1} % by \
             the hypervisor (steal){}",
            100.0 * elsewhere.other_processes,
            100.0 * elsewhere.steal,
            if elsewhere.other_processes + elsewhere.steal > DISTURBED {
                ": DISTURBED, every figure overstates"
            } else {
                ""
            }
        ),
        None => println!("  CPUs taken from this benchmark meanwhile: unknown (no /proc/stat)"),
    }
}

/// A duration for the tables: µs below 1 ms, ms above.
fn time(duration: Duration) -> String {
    let micros = duration.as_secs_f64() * 1e6;
    if micros < 1_000.0 {
        format!("{micros:.1}µs")
    } else {
        format!("{:.2}ms", micros / 1e3)
    }
}
