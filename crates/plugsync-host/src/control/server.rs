//! The HTTP server: the route table, the router built from it, and the handlers.

use std::borrow::Cow;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Extension, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, MethodRouter, on};
use schemars::{JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::api::StoredArtifactInfo;
use super::api::{
    CallAnswer, CallRequest, CommitRequest, Committed, ErrorBody, ErrorDetail, InstallRequest,
    LeaseAnswer, LeaseRequest, PluginRequest, RestoreRequest, Restored, RestraintRequest,
    RunningState, Staged, StatusQuery, SwitchRequest, Unloaded, Verified, VerifyRequest,
};
use super::auth::{Client, ClientRefused, Clients};
use super::transport::{Listen, SocketFile, TlsListener, bind_unix, check_listen, tls_acceptor};
use super::{ControlConfig, ControlError};
use crate::dependencies::PlannedChange;
use crate::digest::Digest;
use crate::error::HostError;
use crate::keys::{TrustedKeys, signature_payload};
use crate::library::read_metadata;
use crate::persist::Origin;
use crate::persist::{StepResult, check_step_id};
use crate::restraints::{Force, Restraints};
use crate::rollback::RollbackReport;
use crate::runtime::{Asked, InstallTerms, Installed, Runtime, StateSnapshot, StepFate};
use crate::slot::CallError;
use crate::store::check_name;
use crate::swap::{SwapReport, SwapRequest};

/// The header that carries an artifact's signature (128 hex digits).
pub(crate) const SIGNATURE_HEADER: &str = "x-plugsync-signature";

/// The header set on a response replayed from a step's record.
pub(crate) const REPLAYED_HEADER: &str = "x-plugsync-replayed";
/// The request header carrying the client's reconcile lease epoch (mutating routes).
pub(crate) const LEASE_EPOCH_HEADER: &str = "x-plugsync-lease-epoch";

/// Makes the JSON Schema of a wire type, for the OpenAPI document.
pub(crate) type SchemaFn = fn(&mut SchemaGenerator) -> Schema;

/// The schema of `T` (a reference to it in the generator's definitions).
fn schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.subschema_for::<T>()
}

/// An HTTP method a route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    /// A read.
    Get,
    /// A read answered without a body (its status and headers only).
    Head,
    /// An upload (the artifact: idempotent by content).
    Put,
    /// An operation.
    Post,
}

impl Verb {
    /// Its name in an OpenAPI path item.
    pub fn openapi(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::Head => "head",
            Verb::Put => "put",
            Verb::Post => "post",
        }
    }

    fn filter(self) -> MethodFilter {
        match self {
            Verb::Get => MethodFilter::GET,
            Verb::Head => MethodFilter::HEAD,
            Verb::Put => MethodFilter::PUT,
            Verb::Post => MethodFilter::POST,
        }
    }
}

/// What a route does: which handler serves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Op {
    /// `GET /v1/status`.
    Status,
    /// `GET /v1/plugins/{plugin}/state`.
    State,
    /// `POST /v1/plugins/{plugin}/call`.
    Call,
    /// `PUT /v1/artifacts/{sha256}/{file_name}`.
    Stage,
    /// `GET` and `HEAD /v1/artifacts/{sha256}`.
    Artifact,
    /// `POST /v1/steps/{step_id}/verify`.
    Verify,
    /// `POST /v1/steps/{step_id}/install`.
    Install,
    /// `POST /v1/steps/{step_id}/switch`.
    Switch,
    /// `POST /v1/steps/{step_id}/commit`.
    Commit,
    /// `POST /v1/steps/{step_id}/rollback`.
    Rollback,
    /// `POST /v1/steps/{step_id}/unload`.
    Unload,
    /// `POST /v1/steps/{step_id}/restore`.
    Restore,
    /// `POST /v1/lease`.
    Lease,
    /// `POST /v1/restraints`.
    Restraints,
}

/// A request body.
#[derive(Clone, Copy)]
pub(crate) enum Body {
    /// None.
    Empty,
    /// JSON of this schema, at most `max_json_bytes`.
    Json(SchemaFn),
    /// Raw library bytes, at most `max_artifact_bytes`.
    Artifact,
}

/// One route of the API: what the router serves and the OpenAPI document describes.
pub(crate) struct Route {
    /// Which handler serves it.
    pub op: Op,
    /// Its method.
    pub verb: Verb,
    /// The path template (axum's and OpenAPI's syntax agree: `{name}`).
    pub path: &'static str,
    /// The OpenAPI `operationId`.
    pub id: &'static str,
    /// One line, for the OpenAPI `summary`.
    pub summary: &'static str,
    /// What it does, for the OpenAPI `description`.
    pub description: &'static str,
    /// The path parameters, with their descriptions, in the order of the template.
    pub params: &'static [(&'static str, &'static str)],
    /// The query, as an object schema whose properties are the query parameters.
    pub query: Option<SchemaFn>,
    /// Its request body.
    pub body: Body,
    /// The schema of a `200` response.
    pub ok: SchemaFn,
    /// The error statuses it may answer besides `401` (every route) and `413` (with a body).
    pub errors: &'static [u16],
    /// The operation recorded once per step id (mutating routes).
    pub step: Option<&'static str>,
}

const STEP_ID: (&str, &str) = (
    "step_id",
    "The sidecar's step id: 1 to 128 letters, digits, `.`, `_` or `-`, not starting with `.`.",
);

const SHA256: (&str, &str) = ("sha256", "The artifact's sha256, 64 hex digits.");

/// `GET /v1/artifacts/{sha256}`; its `HEAD` shares all but its method and words.
const ARTIFACT: Route = Route {
    op: Op::Artifact,
    verb: Verb::Get,
    path: "/v1/artifacts/{sha256}",
    id: "artifact",
    summary: "Whether the store has an artifact",
    description: "Answers the artifact's file name, size and whether a signature is kept \
                  beside it, once its bytes are verified against the sha256 (and its \
                  metadata checked); 404 `unknown_artifact` when the store does not have \
                  it, or has it corrupt (staging the right bytes repairs it). A client \
                  stages only what is missing.",
    params: &[SHA256],
    query: None,
    body: Body::Empty,
    ok: schema::<StoredArtifactInfo>,
    errors: &[400, 404, 500],
    step: None,
};

/// Every route of the API. The router and the OpenAPI document are both built from it.
pub(crate) static ROUTES: &[Route] = &[
    Route {
        op: Op::Status,
        verb: Verb::Get,
        path: "/v1/status",
        id: "status",
        summary: "What the host runs",
        description: "The running state: each plugin's version, digest, config, health, \
                      counters, pending step, last step and last rollback; the resident \
                      libraries; what the host recovered on at start; the reconcile lease; the \
                      restraints; each plugin's applied record; and `api`, the control API's \
                      version (`1.<minor>`: a minor only adds) and its capabilities, sorted \
                      (`applied_record`, `artifact_head`, `calls` when the host allows calls, \
                      `dependencies`, `lease`, `min_calls`, `named_clients`, `owned_steps`, \
                      `restore`, `restraints`), so that a client built from another release can \
                      refuse or adapt. With `with_state=true`, also each \
                      plugin's state snapshot.",
        params: &[],
        query: Some(schema::<StatusQuery>),
        body: Body::Empty,
        ok: schema::<RunningState>,
        errors: &[400, 422, 500],
        step: None,
    },
    Route {
        op: Op::State,
        verb: Verb::Get,
        path: "/v1/plugins/{plugin}/state",
        id: "state",
        summary: "A plugin's state",
        description: "A snapshot of the plugin's state with its sha256 (calls wait briefly, none \
                      fails).",
        params: &[("plugin", "Plugin id.")],
        query: None,
        body: Body::Empty,
        ok: schema::<StateSnapshot>,
        errors: &[404, 422, 500],
        step: None,
    },
    Route {
        op: Op::Call,
        verb: Verb::Post,
        path: "/v1/plugins/{plugin}/call",
        id: "call",
        summary: "Call a plugin (development)",
        description: "Calls the plugin once with the input, as the host's own hot path would, \
                      and answers its output. Off (`403 calls_disabled`) unless the host was \
                      started with `allow_calls` (`plugsync host --allow-calls`): a call changes \
                      the plugin's state, which in a trading host only the host's own inputs \
                      should do.",
        params: &[("plugin", "Plugin id.")],
        query: None,
        body: Body::Json(schema::<CallRequest>),
        ok: schema::<CallAnswer>,
        errors: &[400, 403, 404, 409, 422],
        step: None,
    },
    Route {
        op: Op::Stage,
        verb: Verb::Put,
        path: "/v1/artifacts/{sha256}/{file_name}",
        id: "stage",
        summary: "Stage an artifact",
        description: "Writes library bytes into the host's content-addressed store after \
                      checking, with nothing written on any failure: the file name, the sha256 \
                      in the path, the `.plugsync` metadata section (read without running the \
                      library), and, when the host has trusted keys, the ed25519 signature in \
                      the `x-plugsync-signature` header (128 hex digits) over the canonical JSON \
                      of `{\"id\", \"version\", \"sha256\"}`. Idempotent: the same bytes stage to \
                      the same place.",
        params: &[
            SHA256,
            (
                "file_name",
                "The library's file name: no `/`, `\\`, `..` or leading `.`.",
            ),
        ],
        query: None,
        body: Body::Artifact,
        ok: schema::<Staged>,
        errors: &[400, 403, 500],
        step: None,
    },
    ARTIFACT,
    Route {
        verb: Verb::Head,
        id: "artifact_head",
        summary: "Whether the store has an artifact (no body)",
        description: "`GET /v1/artifacts/{sha256}` without a body: 200 when the store has the \
                      artifact (its bytes verified), 404 when it does not.",
        ..ARTIFACT
    },
    Route {
        op: Op::Verify,
        verb: Verb::Post,
        path: "/v1/steps/{step_id}/verify",
        id: "verify",
        summary: "Verify a staged artifact",
        description: "Runs the health check, probes and differential check of a staged version \
                      against what the plugin runs, on throwaway instances only. Mutates \
                      nothing and records nothing (`passed` says whether a switch would go \
                      ahead).",
        params: &[STEP_ID],
        query: None,
        body: Body::Json(schema::<VerifyRequest>),
        ok: schema::<Verified>,
        errors: &[400, 403, 404, 409, 422, 500],
        step: None,
    },
    Route {
        op: Op::Install,
        verb: Verb::Post,
        path: "/v1/steps/{step_id}/install",
        id: "install",
        summary: "Install a plugin",
        description: "Loads a staged artifact into its empty slot with a config and a fresh \
                      state, and adds it to the committed set. With `lease_ms`, the install is a \
                      step: it serves at once but is committed only by a commit with the same \
                      step id in time; otherwise (a rollback, a panic, a failed health check, a \
                      crossed soak threshold, the lease run out) the host unloads it and marks \
                      the version failed, and a restart before the commit comes back without \
                      it; a retry gets the recorded answer only while the install holds, else \
                      409 `step_gone`. Refused with 409 `dependency_unmet` if it would leave a \
                      declared dependency unmet (its own, or a running plugin's on it), unless \
                      forced. Applied once per step id.",
        params: &[STEP_ID],
        query: None,
        body: Body::Json(schema::<InstallRequest>),
        ok: schema::<Installed>,
        errors: &[400, 403, 404, 409, 422, 500],
        step: Some("install"),
    },
    Route {
        op: Op::Switch,
        verb: Verb::Post,
        path: "/v1/steps/{step_id}/switch",
        id: "switch",
        summary: "Hot-swap a plugin",
        description: "Verifies the staged version, migrates the live state and switches with a \
                      short locked window; the previous instance is kept until commit. With \
                      `lease_ms`, the host rolls the step back by itself unless it is committed \
                      in time. Applied once per step id; the step id then names the pending step \
                      that only a commit or rollback with the same id ends. A retry gets the \
                      recorded report only while the switch holds (pending or committed): once \
                      the step was rolled back, or the host restarted before its commit (a \
                      pending step does not survive a restart), a retry gets 409 `step_gone`. \
                      Refused with 409 `dependency_unmet` if the target would leave a declared \
                      dependency unmet, unless forced; refusals that a change elsewhere lifts \
                      (`frozen`, `held`, `version_failed`, `dependency_unmet`) do not spend the \
                      step id.",
        params: &[STEP_ID],
        query: None,
        body: Body::Json(schema::<SwitchRequest>),
        ok: schema::<SwapReport>,
        errors: &[400, 403, 404, 409, 422, 500],
        step: Some("switch"),
    },
    Route {
        op: Op::Commit,
        verb: Verb::Post,
        path: "/v1/steps/{step_id}/commit",
        id: "commit",
        summary: "Commit a plugin's pending step",
        description: "Ends the pending step, which must be the one switched with this step id \
                      (otherwise 409 `step_not_owned`, naming the pending step): the previous \
                      instance is destroyed (its code stays mapped) and the new version becomes \
                      the committed one. Applied once per step id.",
        params: &[STEP_ID],
        query: None,
        body: Body::Json(schema::<CommitRequest>),
        ok: schema::<Committed>,
        errors: &[400, 404, 409, 500],
        step: Some("commit"),
    },
    Route {
        op: Op::Rollback,
        verb: Verb::Post,
        path: "/v1/steps/{step_id}/rollback",
        id: "rollback",
        summary: "Roll a plugin's pending step back",
        description: "Switches back to the previous instance, carrying the calls made since the \
                      switch back by replay, else down-migration, else reporting exactly what \
                      was lost. The pending step must be the one switched with this step id \
                      (otherwise 409 `step_not_owned`). Applied once per step id. Admitted \
                      whoever holds the reconcile lease (an operator's emergency stop of a step \
                      another client soaks: it only ever goes back to the committed version).",
        params: &[STEP_ID],
        query: None,
        body: Body::Json(schema::<PluginRequest>),
        ok: schema::<RollbackReport>,
        errors: &[400, 404, 409, 500],
        step: Some("rollback"),
    },
    Route {
        op: Op::Unload,
        verb: Verb::Post,
        path: "/v1/steps/{step_id}/unload",
        id: "unload",
        summary: "Unload a plugin",
        description: "Destroys the plugin's instances and removes it from the committed set. Its \
                      code stays mapped (never `dlclose`d). Refused with 409 `dependency_unmet` \
                      while a running plugin declares it needs it, unless forced. Applied once \
                      per step id.",
        params: &[STEP_ID],
        query: None,
        body: Body::Json(schema::<PluginRequest>),
        ok: schema::<Unloaded>,
        errors: &[400, 404, 409, 500],
        step: Some("unload"),
    },
    Route {
        op: Op::Restore,
        verb: Verb::Post,
        path: "/v1/steps/{step_id}/restore",
        id: "restore",
        summary: "Restore a state snapshot into a running plugin",
        description: "An operator's explicit restore: the snapshot (as the state route gives it) \
                      is checked (its sha256, and that it was taken from the version running) \
                      and restored into the running instance. Refused with 409 \
                      `step_in_progress` while a step is pending (a rollback by replay would \
                      silently undo it). Applied once per step id.",
        params: &[STEP_ID],
        query: None,
        body: Body::Json(schema::<RestoreRequest>),
        ok: schema::<Restored>,
        errors: &[400, 404, 409, 422, 500],
        step: Some("restore"),
    },
    Route {
        op: Op::Lease,
        verb: Verb::Post,
        path: "/v1/lease",
        id: "lease",
        summary: "Acquire, renew, release or break the reconcile lease",
        description: "One client at a time reconciles a host, in the name its token has in the \
                      host's token file: `owner` (and `by`) may be left out, and if given must \
                      be that name (otherwise 403 `not_this_client`), so no client acts on the \
                      lease in another's name. `acquire` gives the lease to the client for \
                      `ttl_ms` with a new epoch (refused with 409 `lease_held` while another \
                      client holds it; the same client takes it back with a new epoch), `renew` \
                      extends it (the epoch must be current and the lease not expired), \
                      `release` ends it, `break` takes it from its holder on purpose (recorded \
                      with the client as `by` and the `reason`, shown in status). Every mutating step \
                      route then carries the epoch in `x-plugsync-lease-epoch`: a stale epoch \
                      is refused with 409 `stale_lease_epoch` and nothing is applied; without \
                      the header a request is refused while a client holds the lease, and \
                      allowed when none does. The lease is kept in the store: a host restart \
                      keeps it and never gives an epoch twice.",
        params: &[],
        query: None,
        body: Body::Json(schema::<LeaseRequest>),
        ok: schema::<LeaseAnswer>,
        errors: &[400, 403, 409, 500],
        step: None,
    },
    Route {
        op: Op::Restraints,
        verb: Verb::Post,
        path: "/v1/restraints",
        id: "restraints",
        summary: "Freeze, hold, halt, or clear a failed mark",
        description: "What the host forbids for now, kept in its store and shown in status \
                      (`restraints`): `freeze` / `unfreeze` the host (switch, install and \
                      unload refused with 409 `frozen` unless forced; commit and rollback of a \
                      pending step still go); `hold` / `release` a plugin at its running version \
                      (its switch refused with 409 `held` unless forced); `clear_failed` the \
                      mark the host puts on a version that failed verification or was rolled \
                      back (a switch or install of it refused with 409 `version_failed` until \
                      then, unless forced), or `mark_failed` one on a client's word (it failed \
                      the client's own preflight); `halt` / `resume` a plugin (every call \
                      refused at once, 409 `halted` on the call route, until resumed). A hold \
                      or a mark may carry the client's `entry_sha256`, the fingerprint of the \
                      plugin's desired entry: clients lift it once that entry changes. A change \
                      forced through (`force` with a reason) is recorded. Carries the lease \
                      epoch like the step routes, except `freeze`, the kill switch, admitted \
                      whoever holds the lease.",
        params: &[],
        query: None,
        body: Body::Json(schema::<RestraintRequest>),
        ok: schema::<Restraints>,
        errors: &[400, 404, 409, 500],
        step: None,
    },
];

/// What the handlers share.
#[derive(Clone)]
struct App {
    /// The runtime served.
    runtime: Runtime,
    /// The clients, and the bearer token each request must carry one of.
    clients: Arc<Clients>,
    /// Whose signatures staged artifacts must carry (none: not checked).
    keys: Arc<TrustedKeys>,
    /// The body limit of `PUT /v1/artifacts/…`.
    max_artifact_bytes: usize,
    /// The body limit of JSON requests.
    max_json_bytes: usize,
    /// Whether `POST /v1/plugins/{plugin}/call` is served.
    allow_calls: bool,
}

/// The control API server of a [`Runtime`], bound and ready to serve.
pub struct ControlServer {
    /// The bound socket.
    listener: Bound,
    /// Every route, behind the token check.
    router: Router,
    /// The URL a client reaches it at: `http://ADDR`, `https://ADDR` or `unix:PATH`.
    url: String,
}

/// A bound listener, by transport.
enum Bound {
    /// Plain HTTP (on loopback).
    Http(tokio::net::TcpListener),
    /// HTTPS.
    Https(TlsListener),
    /// HTTP on a unix socket; its file is removed when this is dropped.
    Unix(tokio::net::UnixListener, SocketFile),
}

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl ControlServer {
    /// Reads and checks the token file (it must exist, be a regular file with no permission
    /// for group or others, and hold a token or named clients: [`ControlConfig::token_file`]),
    /// checks where to listen (a loopback address, a
    /// unix socket, or with [`ControlConfig::allow_remote`] and [`ControlConfig::tls`] any
    /// address), loads the TLS certificate and key, then binds. Must be called within a Tokio
    /// runtime.
    pub async fn bind(
        runtime: Runtime,
        config: ControlConfig,
    ) -> Result<ControlServer, ControlError> {
        let clients = Clients::read(&config.token_file)?;
        check_listen(&config.listen, config.allow_remote, config.tls.is_some())?;
        let acceptor = config.tls.as_ref().map(tls_acceptor).transpose()?;
        let bind_error = |source| ControlError::Bind {
            listen: config.listen.clone(),
            source,
        };
        let (listener, url) = match &config.listen {
            Listen::Tcp(address) => {
                let listener = tokio::net::TcpListener::bind(address)
                    .await
                    .map_err(bind_error)?;
                let local_addr = listener.local_addr().map_err(bind_error)?;
                match acceptor {
                    Some(acceptor) => (
                        Bound::Https(TlsListener::new(listener, local_addr, acceptor)),
                        format!("https://{local_addr}"),
                    ),
                    None => (Bound::Http(listener), format!("http://{local_addr}")),
                }
            }
            Listen::Unix(path) => {
                let (listener, file) = bind_unix(path)?;
                (
                    Bound::Unix(listener, file),
                    format!("unix:{}", path.display()),
                )
            }
        };
        // The runtime's keys guard every load; staging checks them too, and the API's own.
        let keys = config.trusted_keys.union(runtime.trusted_keys());
        let app = App {
            runtime,
            clients: Arc::new(clients),
            keys: Arc::new(keys),
            max_artifact_bytes: config.max_artifact_bytes,
            max_json_bytes: config.max_json_bytes,
            allow_calls: config.allow_calls,
        };
        if app.keys.is_empty() {
            tracing::warn!(
                "control API: no trusted keys, artifacts are staged without a signature check"
            );
        }
        let names: Vec<&str> = app.clients.names().collect();
        tracing::info!(%url, clients = %names.join(", "), "control API listening");
        Ok(ControlServer {
            listener,
            router: router(app),
            url,
        })
    }

    /// The TCP address the server listens on (with the port the system chose for port 0);
    /// `None` on a unix socket.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        use axum::serve::Listener as _;
        match &self.listener {
            Bound::Http(listener) => listener.local_addr().ok(),
            Bound::Https(listener) => listener.local_addr().ok(),
            Bound::Unix(..) => None,
        }
    }

    /// Where a client reaches the server: `http://ADDR`, `https://ADDR` (the address bound,
    /// with the port chosen for port 0) or `unix:PATH`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Serves requests until `shutdown` completes, then lets the requests in flight finish.
    /// A unix socket's file is removed then.
    pub async fn serve(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ControlError> {
        let served = match self.listener {
            Bound::Http(listener) => {
                axum::serve(listener, self.router)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            Bound::Https(listener) => {
                axum::serve(listener, self.router)
                    .with_graceful_shutdown(shutdown)
                    .await
            }
            Bound::Unix(listener, file) => {
                let served = axum::serve(listener, self.router)
                    .with_graceful_shutdown(shutdown)
                    .await;
                drop(file);
                served
            }
        };
        served.map_err(|source| ControlError::Serve { source })
    }
}

/// The router: every route of [`ROUTES`] behind the token check.
fn router(app: App) -> Router {
    routes(&app)
        .route_layer(middleware::from_fn_with_state(app.clone(), authorize))
        .layer(DefaultBodyLimit::max(app.max_json_bytes))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
}

/// The router of the control API served in this process as `client`: every route of
/// [`ROUTES`], each request made by `client` (there is no token to check: nothing outside the
/// process reaches it). Everything after the token check is the same as over a socket.
pub(crate) fn in_process_router(
    runtime: Runtime,
    client: Client,
    keys: TrustedKeys,
    allow_calls: bool,
) -> Router {
    let keys = keys.union(runtime.trusted_keys());
    let app = App {
        runtime,
        clients: Arc::new(Clients::none()),
        keys: Arc::new(keys),
        max_artifact_bytes: ControlConfig::new("").max_artifact_bytes,
        max_json_bytes: ControlConfig::new("").max_json_bytes,
        allow_calls,
    };
    let as_client = move |mut request: Request, next: Next| {
        request.extensions_mut().insert(client.clone());
        next.run(request)
    };
    routes(&app)
        .route_layer(middleware::from_fn(as_client))
        .layer(DefaultBodyLimit::max(app.max_json_bytes))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
}

/// Every route of [`ROUTES`], with no token check yet.
fn routes(app: &App) -> Router<App> {
    let mut router = Router::new();
    for route in ROUTES {
        router = router.route(route.path, method_router(route, app));
    }
    router
}

/// The handler of a route, with its body limit.
fn method_router(route: &'static Route, app: &App) -> MethodRouter<App> {
    let filter = route.verb.filter();
    match route.op {
        Op::Status => on(filter, status),
        Op::State => on(filter, state),
        Op::Call => on(filter, call),
        Op::Stage => on(filter, stage).layer(DefaultBodyLimit::max(app.max_artifact_bytes)),
        Op::Artifact => on(filter, artifact),
        Op::Verify => on(filter, verify),
        Op::Install => step_route(route, install),
        Op::Switch => step_route(route, switch),
        Op::Commit => step_route(route, commit),
        Op::Rollback => step_route(route, rollback),
        Op::Unload => step_route(route, unload),
        Op::Restore => step_route(route, restore),
        Op::Lease => on(filter, lease),
        Op::Restraints => on(filter, restraints),
    }
}

/// The handler of a mutating route: [`step`] with the route's operation.
fn step_route<R: DeserializeOwned + Send + 'static>(
    route: &'static Route,
    apply: fn(&Runtime, &StepCall, R) -> Result<Value, ApiError>,
) -> MethodRouter<App> {
    on(
        route.verb.filter(),
        move |app: State<App>,
              client: Extension<Client>,
              headers: HeaderMap,
              path: Result<Path<String>, PathRejection>,
              bytes: Result<Bytes, BytesRejection>| {
            step(app, client, headers, path, bytes, route, apply)
        },
    )
}

/// Who makes a mutating request, and under which step id.
pub(crate) struct StepCall {
    /// The step id of the path.
    id: String,
    /// The authenticated client.
    client: Client,
}

/// The lease epoch a request carries in [`LEASE_EPOCH_HEADER`], if any.
fn lease_epoch(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(LEASE_EPOCH_HEADER) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse().ok())
        .map(Some)
        .ok_or_else(|| {
            ApiError::bad_request(format!(
                "`{LEASE_EPOCH_HEADER}` must be the epoch your lease was given (a number)"
            ))
        })
}

/// `POST /v1/restraints`: applied under the reconcile lease, like a step, in the authenticated
/// client's name; a freeze whoever holds the lease.
async fn restraints(
    State(app): State<App>,
    Extension(client): Extension<Client>,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let request: RestraintRequest = parse(bytes, app.max_json_bytes)?;
    let by = client.confirm("by", request.by())?.to_owned();
    let epoch = lease_epoch(&headers)?;
    let runtime = app.runtime.clone();
    let restraints = blocking(move || -> Result<Restraints, HostError> {
        // A freeze is the kill switch: admitted whoever holds the lease (the holder's next
        // change is then refused). Everything else changes what the holder plans around.
        let _lease = match request {
            RestraintRequest::Freeze { .. } => None,
            _ => Some(runtime.admit(epoch, Some(&by))?),
        };
        match request {
            RestraintRequest::Freeze { reason, .. } => runtime.freeze(&reason, &by)?,
            RestraintRequest::Unfreeze { .. } => runtime.unfreeze(&by)?,
            RestraintRequest::Hold {
                plugin,
                reason,
                entry_sha256,
                ..
            } => runtime.hold(&plugin, &reason, &by, entry_sha256.as_deref())?,
            RestraintRequest::Release { plugin, .. } => runtime.release_hold(&plugin, &by)?,
            RestraintRequest::ClearFailed { artifact, .. } => {
                runtime.clear_failed(&artifact, &by)?
            }
            RestraintRequest::MarkFailed {
                plugin,
                artifact,
                version,
                reason,
                entry_sha256,
                ..
            } => runtime.mark_failed(
                &plugin,
                &artifact,
                &version,
                &reason,
                &by,
                entry_sha256.as_deref(),
            )?,
            RestraintRequest::Halt { plugin, reason, .. } => runtime.halt(&plugin, &reason, &by)?,
            RestraintRequest::Resume { plugin, .. } => runtime.resume(&plugin, &by)?,
        }
        Ok(runtime.status().restraints)
    })
    .await??;
    Ok(axum::Json(ok_json(&restraints)?))
}

/// `POST /v1/lease`.
async fn lease(
    State(app): State<App>,
    Extension(client): Extension<Client>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let request: LeaseRequest = parse(bytes, app.max_json_bytes)?;
    // The lease is held in the authenticated client's name; the body may only repeat it.
    let (field, given) = request.named();
    let name = client.confirm(field, given)?.to_owned();
    let runtime = app.runtime.clone();
    let answer = blocking(move || -> Result<LeaseAnswer, HostError> {
        Ok(match request {
            LeaseRequest::Acquire { ttl_ms, .. } => LeaseAnswer {
                holder: Some(runtime.acquire_lease(&name, ttl_ms)?),
                broken: None,
            },
            LeaseRequest::Renew { epoch, ttl_ms, .. } => LeaseAnswer {
                holder: Some(runtime.renew_lease(&name, epoch, ttl_ms)?),
                broken: None,
            },
            LeaseRequest::Release { epoch, .. } => {
                runtime.release_lease(&name, epoch)?;
                LeaseAnswer {
                    holder: None,
                    broken: None,
                }
            }
            LeaseRequest::Break { reason, .. } => LeaseAnswer {
                holder: None,
                broken: Some(runtime.break_lease(&name, &reason)?),
            },
        })
    })
    .await??;
    Ok(axum::Json(ok_json(&answer)?))
}

/// An error response: `{"error": {"code", "message"}}` with a status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    /// The HTTP status.
    status: StatusCode,
    /// The stable code (`HostError::code` or the API's own).
    code: Cow<'static, str>,
    /// What happened and what to do.
    message: String,
    /// A refusal a change elsewhere lifts ([`HostError::lifted_elsewhere`]): a step that
    /// gets it is not recorded, so its step id is not spent.
    lifted_elsewhere: bool,
}

impl ApiError {
    /// An error of the API's own.
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code: Cow::Borrowed(code),
            message: message.into(),
            lifted_elsewhere: false,
        }
    }

    /// A request that cannot be understood (`400 bad_request`).
    fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// A failure of the host itself (`500 internal`).
    fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The JSON a step records for it (replayed with the same status).
    fn recorded(&self) -> Value {
        json!({"code": self.code, "message": self.message, "status": self.status.as_u16()})
    }

    /// Back from a step's record.
    fn from_record(record: &Value) -> ApiError {
        let status = record["status"]
            .as_u64()
            .and_then(|s| u16::try_from(s).ok())
            .and_then(|s| StatusCode::from_u16(s).ok())
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        ApiError {
            status,
            code: Cow::Owned(record["code"].as_str().unwrap_or("internal").to_owned()),
            message: record["message"].as_str().unwrap_or_default().to_owned(),
            lifted_elsewhere: false,
        }
    }
}

impl From<HostError> for ApiError {
    fn from(error: HostError) -> ApiError {
        ApiError {
            status: status_of(&error),
            code: Cow::Borrowed(error.code()),
            message: error.to_string(),
            lifted_elsewhere: error.lifted_elsewhere(),
        }
    }
}

impl From<ClientRefused> for ApiError {
    fn from(error: ClientRefused) -> ApiError {
        ApiError::new(StatusCode::FORBIDDEN, error.code(), error.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.code.into_owned(),
                message: self.message,
            },
        };
        (self.status, axum::Json(body)).into_response()
    }
}

/// The HTTP status of a runtime error: 400 bad input, 403 an artifact not signed by a trusted
/// key, 404 unknown plugin or artifact, 409 a
/// conflict with what runs, 422 the plugin or its verification failed, 500 the host failed.
pub(crate) fn status_of(error: &HostError) -> StatusCode {
    match error {
        HostError::DigestMismatch { .. }
        | HostError::BadArtifactName { .. }
        | HostError::SignatureName { .. }
        | HostError::NotALibrary { .. }
        | HostError::NoMetadata { .. }
        | HostError::BadMetadata { .. }
        | HostError::AbiMismatch { .. }
        | HostError::AbiTooOld { .. }
        | HostError::PanicAbort { .. }
        | HostError::FrameworkMismatch { .. }
        | HostError::BadVersion { .. }
        | HostError::WrongPlugin { .. }
        | HostError::BadConfig { .. }
        | HostError::BadStepId { .. }
        | HostError::BadLeaseRequest { .. }
        | HostError::BadRestraint { .. }
        | HostError::JournalTooLarge { .. }
        | HostError::BadPluginId { .. }
        | HostError::ControlCharacter { .. } => StatusCode::BAD_REQUEST,
        HostError::Unsigned { .. } | HostError::BadSignature { .. } => StatusCode::FORBIDDEN,
        HostError::UnknownArtifact { .. } | HostError::NotLoaded { .. } => StatusCode::NOT_FOUND,
        HostError::AlreadyLoaded { .. }
        | HostError::StepInProgress { .. }
        | HostError::NoStepInProgress { .. }
        | HostError::LeaseHeld { .. }
        | HostError::Restrained { .. }
        | HostError::NotEnoughCalls { .. }
        | HostError::NotYet { .. }
        | HostError::DependencyUnmet(_)
        | HostError::StaleLeaseEpoch { .. }
        | HostError::StepNotOwned { .. }
        | HostError::StepGone { .. }
        | HostError::StepIdReused { .. }
        | HostError::NoMigration { .. }
        | HostError::StateSchemaDiffers { .. }
        | HostError::ResidentCap { .. }
        | HostError::Faulted { .. } => StatusCode::CONFLICT,
        HostError::VerificationFailed { .. }
        | HostError::RolledBack { .. }
        | HostError::Plugin { .. }
        | HostError::BadMigrationOutput { .. }
        | HostError::MigrationRule { .. }
        | HostError::SwapPanicked { .. }
        | HostError::BadSnapshot { .. } => StatusCode::UNPROCESSABLE_ENTITY,
        HostError::Io { .. }
        | HostError::Load { .. }
        | HostError::InsecureStore { .. }
        | HostError::KeysUnreadable { .. }
        | HostError::BadKey { .. }
        | HostError::NoTrustedKeys { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Runs a runtime call on a blocking thread: it may run plugin code, wait for a slot or fsync.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        ApiError::internal(format!(
            "the host's handler failed ({e}); the runtime is unchanged unless its status says \
             otherwise: look at the host's log"
        ))
    })
}

/// A response value as JSON.
fn ok_json<T: Serialize>(value: &T) -> Result<Value, ApiError> {
    serde_json::to_value(value)
        .map_err(|e| ApiError::internal(format!("cannot serialise the response: {e}")))
}

/// Checks the bearer token of a request to a route, and hands the request its [`Client`]; logs
/// every mutating request with its client.
async fn authorize(State(app): State<App>, mut request: Request, next: Next) -> Response {
    let header = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(HeaderValue::as_bytes);
    match app.clients.check(header) {
        Ok(client) => {
            let client = client.clone();
            let mutating = !matches!(*request.method(), Method::GET | Method::HEAD);
            let what =
                mutating.then(|| (request.method().clone(), request.uri().path().to_owned()));
            request.extensions_mut().insert(client.clone());
            let response = next.run(request).await;
            if let Some((method, path)) = what {
                tracing::info!(
                    client = %client.name,
                    %method,
                    path,
                    status = response.status().as_u16(),
                    "control API request"
                );
            }
            response
        }
        Err(denied) => {
            let mut response =
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", denied.message())
                    .into_response();
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            response
        }
    }
}

/// The answer to a path no route serves.
async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!(
            "no route `{}`: the routes are listed in the control API's OpenAPI document",
            request.uri().path()
        ),
    )
}

/// The answer to a method a route does not serve.
async fn method_not_allowed(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!(
            "`{}` does not answer {}: the methods are listed in the control API's OpenAPI \
             document",
            request.uri().path(),
            request.method()
        ),
    )
}

/// The body of a request, or why it was refused (413 when over `limit`).
fn body(body: Result<Bytes, BytesRejection>, what: &str, limit: usize) -> Result<Bytes, ApiError> {
    body.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "body_too_large",
                format!(
                    "the {what} is larger than the {limit} bytes this host accepts: send less, \
                     or raise the host's limit"
                ),
            )
        } else {
            ApiError::bad_request(format!(
                "cannot read the request body: {}",
                rejection.body_text()
            ))
        }
    })
}

/// A JSON request body of type `T`.
fn parse<T: DeserializeOwned>(
    bytes: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = body(bytes, "JSON request body", limit)?;
    serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid request body: {e}; send the JSON fields this route documents in the \
             OpenAPI document"
        ))
    })
}

/// A path that does not decode (e.g. not UTF-8).
fn path_error(rejection: PathRejection) -> ApiError {
    ApiError::bad_request(format!("invalid path: {}", rejection.body_text()))
}

/// `GET /v1/status[?with_state=true]`.
async fn status(
    State(app): State<App>,
    query: Result<Query<StatusQuery>, QueryRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let Query(query) = query.map_err(|rejection| {
        ApiError::bad_request(format!(
            "invalid query: {}; the only parameter is `with_state=true|false`",
            rejection.body_text()
        ))
    })?;
    let runtime = app.runtime.clone();
    let allow_calls = app.allow_calls;
    let state =
        blocking(move || RunningState::of(&runtime, query.with_state, allow_calls)).await??;
    Ok(axum::Json(ok_json(&state)?))
}

/// `GET /v1/plugins/{plugin}/state`.
async fn state(
    State(app): State<App>,
    path: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let Path(plugin) = path.map_err(path_error)?;
    let runtime = app.runtime.clone();
    let snapshot = blocking(move || runtime.snapshot(&plugin)).await??;
    Ok(axum::Json(ok_json(&snapshot)?))
}

/// `POST /v1/plugins/{plugin}/call`: one call through the hot path, when allowed.
async fn call(
    State(app): State<App>,
    path: Result<Path<String>, PathRejection>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    if !app.allow_calls {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "calls_disabled",
            "calls through the control API are off: start the host with `--allow-calls` \
             (`ControlConfig::allow_calls`) to feed a plugin by hand",
        ));
    }
    let Path(plugin) = path.map_err(path_error)?;
    let request: CallRequest = parse(bytes, app.max_json_bytes)?;
    let input = match request.input {
        Value::String(text) => text.into_bytes(),
        value => value.to_string().into_bytes(),
    };
    let runtime = app.runtime.clone();
    let answered = blocking(move || {
        let handle = runtime.handle(&plugin)?;
        let mut output = Vec::new();
        let receipt = match request.now {
            Some(now) => handle.call_into_at(&input, crate::HostTime(now), &mut output),
            None => handle.call_into(&input, &mut output),
        };
        Ok::<_, HostError>(receipt.map(|receipt| (receipt, output)))
    })
    .await??;
    let (receipt, output) = answered.map_err(|error| {
        let (status, code) = match &error {
            CallError::NotLoaded { .. } => (StatusCode::NOT_FOUND, "not_loaded"),
            CallError::FailedClosed { .. } => (StatusCode::CONFLICT, "failed_closed"),
            CallError::Halted { .. } => (StatusCode::CONFLICT, "halted"),
            CallError::Plugin { .. } => (StatusCode::UNPROCESSABLE_ENTITY, "plugin_failed"),
        };
        ApiError::new(status, code, error.to_string())
    })?;
    let output = serde_json::from_slice(&output)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&output).into_owned()));
    Ok(axum::Json(ok_json(&CallAnswer {
        seq: receipt.seq,
        now: receipt.now.0,
        digest: receipt.digest,
        output,
    })?))
}

/// `PUT /v1/artifacts/{sha256}/{file_name}`: checks everything, then stages.
async fn stage(
    State(app): State<App>,
    path: Result<Path<(String, String)>, PathRejection>,
    headers: HeaderMap,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let Path((sha256, file_name)) = path.map_err(path_error)?;
    let expected = parse_digest(&sha256)?;
    // The decoded name: a `%2F` in the path arrives here as `/` and is refused.
    check_name(&file_name)?;
    let bytes = body(bytes, "artifact", app.max_artifact_bytes)?;
    let signature = headers
        .get(SIGNATURE_HEADER)
        .map(|v| v.to_str().unwrap_or("?").to_owned());
    let keys = app.keys.clone();
    let runtime = app.runtime.clone();
    let staged = blocking(move || -> Result<Staged, ApiError> {
        if !keys.is_empty() {
            // The signature covers the announced sha256: the bytes must be those first. (With
            // no keys, `stage` checks the digest itself; a 6 MB library takes ~3.5 ms to hash.)
            let actual = Digest::of(&bytes);
            if actual != expected {
                return Err(HostError::DigestMismatch {
                    artifact: file_name,
                    expected,
                    actual,
                }
                .into());
            }
            let metadata = read_metadata(&file_name, &bytes)?;
            check_signature(&keys, &metadata, &expected, signature.as_deref())?;
        }
        // Kept beside the artifact: checked again before every load.
        let stored = runtime.stage_signed(&file_name, &bytes, &expected, signature.as_deref())?;
        tracing::info!(
            plugin = %stored.metadata.id,
            version = %stored.metadata.version,
            digest = %stored.digest.short(),
            "staged through the control API"
        );
        Ok(Staged {
            sha256: stored.digest,
            file: file_name,
            metadata: stored.metadata,
        })
    })
    .await??;
    Ok(axum::Json(ok_json(&staged)?))
}

/// `GET` and `HEAD /v1/artifacts/{sha256}`: whether the store has the artifact, its bytes
/// verified (a corrupt one is answered as missing: staging the right bytes repairs it).
async fn artifact(
    State(app): State<App>,
    path: Result<Path<String>, PathRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let Path(sha256) = path.map_err(path_error)?;
    let digest = parse_digest(&sha256)?;
    let runtime = app.runtime.clone();
    let read = blocking(move || runtime.store().read(&digest)).await?;
    let (stored, bytes) = read.map_err(|error| match error {
        HostError::UnknownArtifact { .. } | HostError::Io { .. } => ApiError::from(error),
        unusable => ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_artifact",
            format!(
                "artifact {digest} is in the store but cannot be used ({unusable}): stage it \
                 again (the right bytes repair it)"
            ),
        ),
    })?;
    let file = stored
        .path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(axum::Json(ok_json(&StoredArtifactInfo {
        sha256: stored.digest,
        file,
        size: bytes.len() as u64,
        signed: stored.signature.is_some(),
    })?))
}

/// The sha256 of an artifact route's path.
fn parse_digest(sha256: &str) -> Result<Digest, ApiError> {
    sha256.parse().map_err(|e: crate::digest::InvalidDigest| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_digest",
            format!("{e}: put the artifact's sha256 in the path"),
        )
    })
}

/// Refuses an artifact that no trusted key signed (for these bytes, id and version).
fn check_signature(
    keys: &TrustedKeys,
    metadata: &plugsync_plugin::PluginMetadata,
    sha256: &Digest,
    signature: Option<&str>,
) -> Result<(), ApiError> {
    let what = format!(
        "`{}` {} ({})",
        metadata.id,
        metadata.version,
        sha256.short()
    );
    let Some(signature) = signature else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "signature_required",
            format!(
                "{what} carries no signature, and this host only stages artifacts signed by a \
                 key it trusts: send the publisher's signature in `{SIGNATURE_HEADER}`; nothing \
                 was written"
            ),
        ));
    };
    let payload = signature_payload(&metadata.id, &metadata.version, sha256);
    keys.verify(&payload, signature).map_err(|error| {
        let why = error.reason();
        ApiError::new(
            StatusCode::FORBIDDEN,
            "bad_signature",
            format!(
                "the signature of {what} in `{SIGNATURE_HEADER}` {why}: sign the artifact's id, \
                 version and sha256 with a trusted key (or add the publisher's public key to the \
                 host's trusted keys); nothing was written"
            ),
        )
    })
}

/// `POST /v1/steps/{step_id}/verify`: not recorded, nothing changes.
async fn verify(
    State(app): State<App>,
    path: Result<Path<String>, PathRejection>,
    bytes: Result<Bytes, BytesRejection>,
) -> Result<axum::Json<Value>, ApiError> {
    let Path(step_id) = path.map_err(path_error)?;
    check_step_id(&step_id)?;
    let request: VerifyRequest = parse(bytes, app.max_json_bytes)?;
    let runtime = app.runtime.clone();
    let report = blocking(move || {
        runtime.verify(
            &request.plugin,
            &request.artifact,
            request.config.as_ref(),
            request.migration_rules.as_deref(),
            &request.verify.unwrap_or_default(),
        )
    })
    .await??;
    Ok(axum::Json(ok_json(&Verified {
        passed: report.passed(),
        report,
    })?))
}

/// A mutating operation: applied once per step id; a retry gets the recorded response.
async fn step<R: DeserializeOwned + Send + 'static>(
    State(app): State<App>,
    Extension(client): Extension<Client>,
    headers: HeaderMap,
    path: Result<Path<String>, PathRejection>,
    bytes: Result<Bytes, BytesRejection>,
    route: &'static Route,
    apply: fn(&Runtime, &StepCall, R) -> Result<Value, ApiError>,
) -> Response {
    let operation = route.step.expect("a step route names its operation");
    // Refused here (bad step id, bad body), nothing is recorded: the same id may be retried.
    let (step_id, request, fingerprint) = match prepare::<R>(path, bytes, app.max_json_bytes) {
        Ok(prepared) => prepared,
        Err(error) => return error.into_response(),
    };
    let epoch = match lease_epoch(&headers) {
        Ok(epoch) => epoch,
        Err(error) => return error.into_response(),
    };
    let runtime = app.runtime.clone();
    let id = step_id.clone();
    let outcome = blocking(move || {
        // Refused by the lease, nothing is recorded: the step id is not spent. Held until the
        // operation is done, so the lease cannot change hands under it. A rollback goes
        // whoever holds the lease: it only ever returns to the committed version, by replay,
        // losing nothing — an operator's emergency stop of a step another client soaks (that
        // client then finds its step ended elsewhere).
        let _lease = match operation {
            "rollback" => None,
            _ => Some(runtime.admit(epoch, Some(&client.name))?),
        };
        let call = StepCall {
            id: id.clone(),
            client,
        };
        let outcome = runtime.once_per_step(&id, operation, &fingerprint, || {
            match apply(&runtime, &call, request) {
                Ok(value) => StepResult::Final(Ok(value)),
                // The host failed (a 5xx): nothing was decided, so the step id is not spent
                // and a retry runs again.
                Err(error) if error.status.is_server_error() => {
                    StepResult::Transient(error.recorded())
                }
                // Refused for a reason a change elsewhere lifts: nothing was applied, and the
                // same step may go once it is (`HostError::lifted_elsewhere`).
                Err(error) if error.lifted_elsewhere => StepResult::Transient(error.recorded()),
                Err(error) => StepResult::Final(Err(error.recorded())),
            }
        })?;
        if outcome.replayed
            && let Ok(report) = &outcome.outcome
            && (operation == "switch"
                || operation == "install" && !report["lease_expires_at"].is_null())
        {
            step_holds(&runtime, operation, &id, report)?;
        }
        Ok::<_, HostError>(outcome)
    })
    .await;
    let outcome = match outcome {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(error)) => return ApiError::from(error).into_response(),
        Err(error) => return error.into_response(),
    };
    let mut response = match outcome.outcome {
        Ok(value) => axum::Json(value).into_response(),
        Err(record) => ApiError::from_record(&record).into_response(),
    };
    if outcome.replayed {
        tracing::info!(
            step_id,
            operation,
            "replayed the response recorded for this step"
        );
        response
            .headers_mut()
            .insert(REPLAYED_HEADER, HeaderValue::from_static("true"));
    }
    response
}

/// Whether the switch (or install with a lease) a recorded report describes is still in effect
/// (pending or committed): a retry must never be told 200 for a step the host no longer holds.
fn step_holds(
    runtime: &Runtime,
    operation: &'static str,
    step_id: &str,
    report: &Value,
) -> Result<(), HostError> {
    let Some(plugin) = report["plugin"].as_str() else {
        return Ok(());
    };
    match runtime.step_fate(plugin, step_id)? {
        StepFate::Pending | StepFate::Committed => Ok(()),
        fate => Err(HostError::StepGone {
            plugin: plugin.to_owned(),
            operation,
            step_id: step_id.to_owned(),
            fate,
        }),
    }
}

/// The step id and body of a mutating request, checked.
/// Also the request's fingerprint: the sha256 of its canonical JSON, so that a retry is known
/// from a different request reusing the step id whatever its key order or spacing.
fn prepare<R: DeserializeOwned>(
    path: Result<Path<String>, PathRejection>,
    bytes: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<(String, R, Digest), ApiError> {
    let Path(step_id) = path.map_err(path_error)?;
    check_step_id(&step_id)?;
    let value: Value = parse(bytes, limit)?;
    let canonical = plugsync_plugin::canonical_json(&value)
        .map_err(|e| ApiError::bad_request(format!("invalid request body: {e}")))?;
    let request = serde_json::from_value(value).map_err(|e| {
        ApiError::bad_request(format!(
            "invalid request body: {e}; send the JSON fields this route documents in the \
             OpenAPI document"
        ))
    })?;
    Ok((step_id, request, Digest::of(&canonical)))
}

/// How a request asked: its step id, origin, and the reason to force it if it gave one. The
/// client is the authenticated one, whatever the body says: the origin's `client` is set to it
/// (an origin is made, tool `api`, when the body gives none), and so is who forces.
fn asked(call: &StepCall, origin: Option<Origin>, force: Option<String>) -> Asked {
    let name = call.client.name.clone();
    let origin = Origin {
        client: Some(name.clone()),
        ..origin.unwrap_or_else(|| Origin {
            tool: "api".to_owned(),
            ..Origin::default()
        })
    };
    Asked {
        step_id: Some(call.id.clone()),
        origin: Some(origin),
        force: force.map(|reason| Force { reason, by: name }),
        min_calls: None,
    }
}

fn install(runtime: &Runtime, call: &StepCall, request: InstallRequest) -> Result<Value, ApiError> {
    if request.checkpoint_every_ms == Some(0) {
        return Err(ApiError::bad_request(
            "`checkpoint_every_ms` is 0: give an interval in milliseconds, or leave it out to \
             checkpoint only at each commit",
        ));
    }
    if request.soak.is_some() && request.lease_ms.is_none() {
        return Err(ApiError::bad_request(
            "`soak` is given without `lease_ms`: soak thresholds are watched until a commit, \
             which only an install with a lease waits for; give `lease_ms` too",
        ));
    }
    let asked = asked(call, request.origin, request.force);
    let metadata = runtime.store().get(&request.artifact)?.metadata;
    runtime.check_dependencies(
        "install",
        PlannedChange::Run(&metadata),
        asked.force.as_ref(),
    )?;
    let terms = InstallTerms {
        checkpoint_every: request.checkpoint_every_ms.map(Duration::from_millis),
        fail_closed: request.fail_closed,
        lease: request.lease_ms.map(Duration::from_millis),
        soak: request.soak.unwrap_or_default(),
    };
    ok_json(&runtime.install_asked(&request.artifact, request.config, &terms, &asked)?)
}

/// `switch`: the runtime's swap, its request built from the defaults so that a field added to
/// [`SwapRequest`] keeps its default here.
fn switch(runtime: &Runtime, call: &StepCall, request: SwitchRequest) -> Result<Value, ApiError> {
    let origin = request.origin.as_ref().map(|o| o.tool.as_str());
    tracing::info!(plugin = %request.plugin, step_id = %call.id, client = %call.client.name, origin, "switch asked");
    let mut swap = SwapRequest::new(request.plugin, request.artifact).step_id(call.id.clone());
    swap.config = request.config;
    if let Some(verify) = request.verify {
        swap.verify = verify;
    }
    if let Some(mode) = request.mode {
        swap.mode = mode;
    }
    if let Some(capacity) = request.journal_capacity {
        swap.journal_capacity = capacity;
    }
    swap.lease_ms = request.lease_ms;
    if let Some(soak) = request.soak {
        swap.soak = soak;
    }
    swap.migration_rules = request.migration_rules;
    swap.fresh_state = request.fresh_state;
    swap.when = request.when;
    let asked = asked(call, request.origin, request.force);
    swap.force = asked.force;
    swap.origin = asked.origin;
    let metadata = runtime.store().get(&swap.artifact)?.metadata;
    runtime.check_dependencies("switch", PlannedChange::Run(&metadata), swap.force.as_ref())?;
    ok_json(&runtime.swap(swap)?)
}

/// `commit`: the pending step ends, the new version is committed.
fn commit(runtime: &Runtime, call: &StepCall, request: CommitRequest) -> Result<Value, ApiError> {
    let asked = Asked {
        min_calls: request.min_calls,
        ..asked(call, request.origin, None)
    };
    let version = runtime.commit_asked(&request.plugin, &asked)?;
    ok_json(&Committed {
        plugin: request.plugin,
        version,
    })
}

/// `rollback`: back to the previous version.
fn rollback(runtime: &Runtime, call: &StepCall, request: PluginRequest) -> Result<Value, ApiError> {
    ok_json(&runtime.rollback_asked(&request.plugin, &asked(call, request.origin, None))?)
}

/// `restore`: an operator's snapshot into the running plugin.
fn restore(runtime: &Runtime, call: &StepCall, request: RestoreRequest) -> Result<Value, ApiError> {
    let snapshot = request.snapshot;
    let origin = request.origin.as_ref().map(|o| o.tool.as_str());
    tracing::warn!(plugin = %snapshot.plugin, step_id = %call.id, client = %call.client.name, origin, seq = snapshot.seq, "restore asked");
    runtime.restore(&snapshot)?;
    ok_json(&Restored {
        plugin: snapshot.plugin,
        version: snapshot.version,
        sha256: snapshot.sha256,
    })
}

/// `unload`: instances destroyed, the version forgotten (its code stays mapped).
fn unload(runtime: &Runtime, call: &StepCall, request: PluginRequest) -> Result<Value, ApiError> {
    let origin = request.origin.as_ref().map(|o| o.tool.as_str());
    tracing::info!(plugin = %request.plugin, step_id = %call.id, client = %call.client.name, origin, "unload asked");
    let asked = asked(call, request.origin, request.force);
    runtime.check_dependencies(
        "unload",
        PlannedChange::Remove(&request.plugin),
        asked.force.as_ref(),
    )?;
    let version = runtime.unload_asked(&request.plugin, &asked)?;
    ok_json(&Unloaded {
        plugin: request.plugin,
        version,
    })
}
