//! The host as the apply engine sees it: one [`HostPort`] trait, reached over HTTP
//! ([`HttpHost`], the control API of a `plugsync host` or of a host embedding the runtime) or
//! in this process ([`InProcessHost`], the same API's router called directly).
//!
//! Both carry the same requests and read the same answers: a transport sends a
//! [`HostRequest`] and gives back the body, and everything the engine asks (status, stage, a
//! step, the lease) is built once above that, so the engine cannot tell the two apart.

use std::path::Path;

use plugsync_host::Digest;
use plugsync_host::control::api::{
    LeaseAnswer, LeaseRequest, RestraintRequest, RunningState, Staged,
};
use plugsync_host::control::{LocalControl, LocalRequest, TrustedKeys};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::client::{ControlClient, answer_body};
use crate::error::{Error, Result};

/// How a request is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostMethod {
    /// A read.
    Get,
    /// A change (a step, the lease, a restraint).
    Post,
    /// An artifact's bytes.
    Put,
}

/// One request to a host's control API, whatever carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostRequest {
    /// How.
    pub method: HostMethod,
    /// The path and query, from the API's root (`/v1/status?with_state=true`).
    pub path: String,
    /// JSON, or an artifact's bytes for [`HostMethod::Put`].
    pub body: Vec<u8>,
    /// The reconcile lease epoch the change is made under.
    pub lease_epoch: Option<u64>,
    /// An artifact's signature (128 hex digits).
    pub signature: Option<String>,
}

impl HostRequest {
    /// A request with no body.
    pub fn new(method: HostMethod, path: impl Into<String>) -> HostRequest {
        HostRequest {
            method,
            path: path.into(),
            body: Vec::new(),
            lease_epoch: None,
            signature: None,
        }
    }

    /// A `POST` of `body` as JSON.
    pub fn post(path: impl Into<String>, body: &impl Serialize) -> Result<HostRequest> {
        let body = serde_json::to_vec(body).map_err(|e| Error::Setup {
            action: "encode a request to the host",
            source: std::io::Error::other(e),
        })?;
        Ok(HostRequest {
            body,
            ..HostRequest::new(HostMethod::Post, path)
        })
    }

    /// The body's media type.
    pub fn content_type(&self) -> &'static str {
        match self.method {
            HostMethod::Put => "application/octet-stream",
            _ => "application/json",
        }
    }
}

/// What a host answered: the JSON body, and whether it was replayed from the step's record (a
/// retry of a step id the host had already applied).
#[derive(Debug, Clone, PartialEq)]
pub struct HostAnswer {
    /// The body.
    pub body: Value,
    /// The host answered from its record of the step id, applying nothing.
    pub replayed: bool,
}

/// A mutating operation of a step, applied once per step id by the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepOperation {
    /// Load a plugin into its empty slot.
    Install,
    /// Hot-swap a plugin to another version or config.
    Switch,
    /// End a pending step, keeping the new version.
    Commit,
    /// End a pending step, going back.
    Rollback,
    /// Remove a plugin.
    Unload,
    /// Put a saved state into the running version (an operator's, from a rollback point).
    Restore,
}

impl StepOperation {
    /// The operation's name in the API's path.
    pub fn name(self) -> &'static str {
        match self {
            StepOperation::Install => "install",
            StepOperation::Switch => "switch",
            StepOperation::Commit => "commit",
            StepOperation::Rollback => "rollback",
            StepOperation::Unload => "unload",
            StepOperation::Restore => "restore",
        }
    }
}

/// The operations of a host the apply engine needs.
pub trait HostPort: Send + Sync {
    /// Where the host is, for messages: its URL, or `in-process`.
    fn describe(&self) -> &str;

    /// Sends one request; the body of a successful answer, or the error the host answered
    /// ([`Error::HostRefused`] with its code), or why it could not be reached.
    fn send(&self, request: HostRequest) -> Result<HostAnswer>;

    /// What the host runs, with each plugin's state when `with_state`.
    fn status(&self, with_state: bool) -> Result<RunningState> {
        let path = if with_state {
            "/v1/status?with_state=true"
        } else {
            "/v1/status"
        };
        let answer = self.send(HostRequest::new(HostMethod::Get, path))?;
        read_answer(self.describe(), answer.body)
    }

    /// Whether the host's store has the artifact (its bytes verified there).
    fn has_artifact(&self, sha256: &Digest) -> Result<bool> {
        let request = HostRequest::new(HostMethod::Get, format!("/v1/artifacts/{sha256}"));
        match self.send(request) {
            Ok(_) => Ok(true),
            Err(Error::HostRefused { status: 404, .. }) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Stages an artifact's bytes (checked by the host: sha256, metadata, signature).
    fn stage(
        &self,
        sha256: &Digest,
        file_name: &str,
        bytes: Vec<u8>,
        signature: Option<String>,
    ) -> Result<Staged> {
        let request = HostRequest {
            body: bytes,
            signature,
            ..HostRequest::new(
                HostMethod::Put,
                format!("/v1/artifacts/{sha256}/{file_name}"),
            )
        };
        let answer = self.send(request)?;
        read_answer(self.describe(), answer.body)
    }

    /// `POST /v1/steps/{step_id}/{operation}` with `body` exactly, under the lease `epoch`.
    fn step(
        &self,
        operation: StepOperation,
        step_id: &str,
        body: &Value,
        epoch: Option<u64>,
    ) -> Result<HostAnswer> {
        let path = format!("/v1/steps/{step_id}/{}", operation.name());
        let mut request = HostRequest::post(path, body)?;
        request.lease_epoch = epoch;
        self.send(request)
    }

    /// Acquires, renews, releases or breaks the reconcile lease.
    fn lease(&self, request: &LeaseRequest) -> Result<LeaseAnswer> {
        let answer = self.send(HostRequest::post("/v1/lease", request)?)?;
        read_answer(self.describe(), answer.body)
    }

    /// Freezes, holds, halts, or clears a failed mark, under the lease `epoch`.
    fn restraints(&self, request: &RestraintRequest, epoch: Option<u64>) -> Result<Value> {
        let mut request = HostRequest::post("/v1/restraints", request)?;
        request.lease_epoch = epoch;
        Ok(self.send(request)?.body)
    }
}

/// A successful answer's body as a `T`, or what was wrong with it.
fn read_answer<T: DeserializeOwned>(url: &str, body: Value) -> Result<T> {
    serde_json::from_value(body).map_err(|e| Error::BadAnswer {
        url: url.to_owned(),
        status: 200,
        reason: format!("unexpected JSON: {e}"),
    })
}

/// A host reached over its control API (HTTP, HTTPS or a unix socket).
#[derive(Debug)]
pub struct HttpHost {
    client: ControlClient,
}

impl HttpHost {
    /// The host at `url`, with the token in `token_file`; an `https://` host's certificate must
    /// verify against the CA in `tls_ca`.
    pub fn new(url: &str, token_file: Option<&Path>, tls_ca: Option<&Path>) -> Result<HttpHost> {
        Ok(HttpHost {
            client: ControlClient::new(Some(url), token_file, tls_ca)?,
        })
    }
}

impl HostPort for HttpHost {
    fn describe(&self) -> &str {
        self.client.url()
    }

    fn send(&self, request: HostRequest) -> Result<HostAnswer> {
        let (body, replayed) = self.client.send_request(&request)?;
        let body = serde_json::from_str(&body).map_err(|e| Error::BadAnswer {
            url: self.describe().to_owned(),
            status: 200,
            reason: format!("not JSON: {e}"),
        })?;
        Ok(HostAnswer { body, replayed })
    }
}

/// The control API of a runtime in this process, called as one named client.
#[derive(Debug)]
pub struct InProcessHost {
    control: LocalControl,
}

impl InProcessHost {
    /// What a client shows as this host's place.
    pub const PLACE: &'static str = "in-process";

    /// The control API of `runtime`, used as the client `client`, checking staged artifacts'
    /// signatures against `keys` (and the runtime's own).
    pub fn new(
        runtime: plugsync_host::Runtime,
        client: &str,
        keys: TrustedKeys,
    ) -> Result<InProcessHost> {
        let control =
            LocalControl::new(runtime, client, keys, false).map_err(|source| Error::Setup {
                action: "start the in-process control API",
                source,
            })?;
        Ok(InProcessHost { control })
    }
}

impl HostPort for InProcessHost {
    fn describe(&self) -> &str {
        InProcessHost::PLACE
    }

    fn send(&self, request: HostRequest) -> Result<HostAnswer> {
        let method = match request.method {
            HostMethod::Get => plugsync_host::control::Method::GET,
            HostMethod::Post => plugsync_host::control::Method::POST,
            HostMethod::Put => plugsync_host::control::Method::PUT,
        };
        let local = LocalRequest::new(method, request.path)
            .body(request.body)
            .lease_epoch(request.lease_epoch)
            .signature(request.signature);
        let answer = self.control.send(local);
        let status = answer.status.as_u16();
        let text = String::from_utf8_lossy(&answer.body).into_owned();
        let body = answer_body(Self::PLACE, status, text)?;
        let body = serde_json::from_str(&body).map_err(|e| Error::BadAnswer {
            url: Self::PLACE.to_owned(),
            status,
            reason: format!("not JSON: {e}"),
        })?;
        Ok(HostAnswer {
            body,
            replayed: answer.replayed,
        })
    }
}
