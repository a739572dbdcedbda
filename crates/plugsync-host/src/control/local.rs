//! The control API served inside the host's own process, with no socket: for a reconciler
//! embedded in the host (a host that is itself a plugin container runs plugsync in a thread of
//! its own) and for `plugsync demo`.
//!
//! It is the same router as [`ControlServer`](super::ControlServer)'s, called directly: every
//! check after the token's (body limits, the reconcile lease, once per step id, the replayed
//! header, the error codes) is the code a client over HTTP meets, so a reconciler behaves the
//! same whichever way it reaches the host. The token check is replaced by the client's name
//! given here: nothing outside the process can reach this API.

use axum::Router;
use axum::body::{Body, to_bytes};
use axum::http::{Method, Request, StatusCode};
use tower::ServiceExt as _;

use super::TrustedKeys;
use super::auth::Client;
use super::server::{LEASE_EPOCH_HEADER, REPLAYED_HEADER, SIGNATURE_HEADER, in_process_router};
use crate::runtime::Runtime;

/// The largest answer read back (a status with every plugin's state).
const MAX_ANSWER_BYTES: usize = 1 << 30;

/// The control API of a [`Runtime`] in this process, used as one named client.
///
/// Its calls block: make them from a thread that is not running a Tokio runtime's tasks (the
/// API runs each request on a small runtime of its own).
pub struct LocalControl {
    router: Router,
    io: tokio::runtime::Runtime,
    client: String,
}

impl std::fmt::Debug for LocalControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalControl")
            .field("client", &self.client)
            .finish_non_exhaustive()
    }
}

/// One request to a [`LocalControl`], as a client over HTTP would send it.
#[derive(Debug, Clone)]
pub struct LocalRequest {
    /// The method.
    pub method: Method,
    /// The path and query (`/v1/status?with_state=true`).
    pub path: String,
    /// The body (JSON, or an artifact's bytes).
    pub body: Vec<u8>,
    /// The reconcile lease epoch (`x-plugsync-lease-epoch`).
    pub lease_epoch: Option<u64>,
    /// An artifact's signature (`x-plugsync-signature`).
    pub signature: Option<String>,
}

impl LocalRequest {
    /// A request with no body and no headers.
    pub fn new(method: Method, path: impl Into<String>) -> LocalRequest {
        LocalRequest {
            method,
            path: path.into(),
            body: Vec::new(),
            lease_epoch: None,
            signature: None,
        }
    }

    /// With this body.
    pub fn body(mut self, body: Vec<u8>) -> LocalRequest {
        self.body = body;
        self
    }

    /// Carrying this lease epoch.
    pub fn lease_epoch(mut self, epoch: Option<u64>) -> LocalRequest {
        self.lease_epoch = epoch;
        self
    }

    /// Carrying this artifact signature.
    pub fn signature(mut self, signature: Option<String>) -> LocalRequest {
        self.signature = signature;
        self
    }
}

/// The answer to a [`LocalRequest`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalAnswer {
    /// The HTTP status.
    pub status: StatusCode,
    /// The body: JSON (an answer, or `{"error": {"code", "message"}}`).
    pub body: Vec<u8>,
    /// The answer was replayed from the step's record (`x-plugsync-replayed: true`).
    pub replayed: bool,
}

impl LocalControl {
    /// The control API of `runtime`, used as the client named `client` (the reconcile lease is
    /// held in this name, and the host's records name it), checking staged artifacts'
    /// signatures against `keys` and the runtime's own keys; `POST /v1/plugins/{plugin}/call`
    /// is served only with `allow_calls`.
    pub fn new(
        runtime: Runtime,
        client: &str,
        keys: TrustedKeys,
        allow_calls: bool,
    ) -> std::io::Result<LocalControl> {
        let io = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let named = Client {
            name: client.to_owned(),
        };
        Ok(LocalControl {
            router: in_process_router(runtime, named, keys, allow_calls),
            io,
            client: client.to_owned(),
        })
    }

    /// The client's name.
    pub fn client(&self) -> &str {
        &self.client
    }

    /// Serves one request, as the HTTP server would.
    pub fn send(&self, request: LocalRequest) -> LocalAnswer {
        let mut builder = Request::builder()
            .method(request.method)
            .uri(request.path)
            .header("content-type", "application/json");
        if let Some(epoch) = request.lease_epoch {
            builder = builder.header(LEASE_EPOCH_HEADER, epoch.to_string());
        }
        if let Some(signature) = request.signature {
            builder = builder.header(SIGNATURE_HEADER, signature);
        }
        let built = match builder.body(Body::from(request.body)) {
            Ok(built) => built,
            Err(error) => return local_error(StatusCode::BAD_REQUEST, &error.to_string()),
        };
        let router = self.router.clone();
        self.io.block_on(async move {
            // The router's error type is `Infallible`.
            let Ok(response) = router.oneshot(built).await;
            let status = response.status();
            let replayed = response.headers().contains_key(REPLAYED_HEADER);
            match to_bytes(response.into_body(), MAX_ANSWER_BYTES).await {
                Ok(body) => LocalAnswer {
                    status,
                    body: body.to_vec(),
                    replayed,
                },
                Err(error) => local_error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("cannot read the answer: {error}"),
                ),
            }
        })
    }
}

/// An answer made here, in the API's error shape.
fn local_error(status: StatusCode, message: &str) -> LocalAnswer {
    let body = serde_json::json!({"error": {"code": "bad_request", "message": message}});
    LocalAnswer {
        status,
        body: body.to_string().into_bytes(),
        replayed: false,
    }
}
