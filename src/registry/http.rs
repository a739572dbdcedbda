//! A registry served over HTTP(S): the directory layout, read with GETs. Blocking: it runs
//! its own small async runtime, so it is called from synchronous code (the reconciler's
//! commands), never from inside an async task.
//!
//! A registry is often a plain static file server or an object store, on a network that
//! drops things: each request has a connect and a total timeout, and a failure that may pass
//! (no connection, a timeout, a 5xx or 429, a body cut off midway) is retried with
//! exponential backoff. A download is held in memory until it is whole and its sha256 checked;
//! nothing is written anywhere before that, so a download that dies leaves no partial file.

use std::path::Path;
use std::time::Duration;

use reqwest::{StatusCode, Url};

use super::directory::checked_relative;
use super::error::RegistryError;
use super::index::{IndexEntry, IndexFile};

/// How hard to try.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included.
    pub attempts: u32,
    /// The wait before the second attempt; doubled before each next one.
    pub first_backoff: Duration,
    /// How long connecting may take.
    pub connect_timeout: Duration,
    /// How long one attempt may take in all (a large artifact on a slow link included).
    pub request_timeout: Duration,
    /// The largest artifact or index accepted.
    pub max_bytes: usize,
}

impl Default for RetryPolicy {
    fn default() -> RetryPolicy {
        RetryPolicy {
            attempts: 4,
            first_backoff: Duration::from_millis(250),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(120),
            max_bytes: 512 << 20,
        }
    }
}

/// A registry at an `http://` or `https://` URL.
#[derive(Debug)]
pub struct HttpRegistry {
    /// The registry's root, ending with `/`.
    base: Url,
    http: reqwest::Client,
    io: tokio::runtime::Runtime,
    policy: RetryPolicy,
}

/// Why one attempt failed.
enum Failure {
    /// Worth another attempt.
    Passing(String),
    /// Final: the same request would fail the same way.
    Final(RegistryError),
}

impl HttpRegistry {
    /// The registry at `url`; an `https://` one's certificate must verify against the webpki
    /// roots, or against the CA in `ca` (PEM) when given.
    pub fn new(
        url: &str,
        ca: Option<&Path>,
        policy: RetryPolicy,
    ) -> Result<HttpRegistry, RegistryError> {
        let bad = |reason: String| RegistryError::BadRegistryUrl {
            url: url.to_owned(),
            reason,
        };
        let mut base = Url::parse(url).map_err(|e| bad(e.to_string()))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err(bad("a registry URL is `http://` or `https://`".to_owned()));
        }
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(policy.connect_timeout)
            .timeout(policy.request_timeout)
            // A registry answers where it is asked: a redirect could lead to another host, or
            // from https to http.
            .redirect(reqwest::redirect::Policy::none());
        if let Some(ca) = ca {
            let pem = std::fs::read(ca).map_err(|e| RegistryError::io("read", ca, e))?;
            let certificates = reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| bad(format!("the CA `{}` is not PEM: {e}", ca.display())))?;
            builder = builder.tls_built_in_root_certs(false);
            for certificate in certificates {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let http = builder
            .build()
            .map_err(|e| bad(format!("cannot set up the HTTP client: {e}")))?;
        let io = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| RegistryError::io("start the async runtime for", Path::new(url), e))?;
        Ok(HttpRegistry {
            base,
            http,
            io,
            policy,
        })
    }

    /// The registry's URL.
    pub fn url(&self) -> &str {
        self.base.as_str()
    }

    /// The index of `plugin`, if it is published there (a 404 says it is not).
    pub fn index(&self, plugin: &str) -> Result<Option<IndexFile>, RegistryError> {
        plugsync_host::check_plugin_id(plugin).map_err(|_| RegistryError::BadPluginId {
            plugin: plugin.escape_debug().to_string(),
        })?;
        let url = self.join(&format!("index/{plugin}.json"))?;
        let Some(bytes) = self.get(&url, true)? else {
            return Ok(None);
        };
        let index: IndexFile =
            serde_json::from_slice(&bytes).map_err(|e| RegistryError::BadIndex {
                path: url.as_str().into(),
                reason: e.to_string(),
            })?;
        if index.plugin != plugin {
            return Err(RegistryError::BadIndex {
                path: url.as_str().into(),
                reason: format!("it is the index of `{}`", index.plugin),
            });
        }
        for entry in &index.versions {
            checked_relative(&entry.file)?;
        }
        Ok(Some(index))
    }

    /// The bytes of a published artifact, whole and checked against its entry's sha256.
    pub fn artifact(&self, plugin: &str, entry: &IndexEntry) -> Result<Vec<u8>, RegistryError> {
        let url = self.join(checked_relative(&entry.file)?.to_str().unwrap_or_default())?;
        let bytes = self
            .get(&url, false)?
            .ok_or_else(|| RegistryError::HttpStatus {
                url: url.to_string(),
                status: 404,
            })?;
        entry.check(plugin, bytes)
    }

    fn join(&self, path: &str) -> Result<Url, RegistryError> {
        self.base
            .join(path)
            .map_err(|_| RegistryError::EscapesRegistry {
                path: path.to_owned(),
            })
    }

    /// GETs `url` whole, retrying what may pass; `None` for a 404. An index is asked fresh
    /// (`no-cache`): a cache's copy from before a `yank` would bring the yanked version back.
    fn get(&self, url: &Url, fresh: bool) -> Result<Option<Vec<u8>>, RegistryError> {
        let mut backoff = self.policy.first_backoff;
        let mut last = String::new();
        for attempt in 1..=self.policy.attempts.max(1) {
            match self.io.block_on(self.attempt(url, fresh)) {
                Ok(body) => return Ok(body),
                Err(Failure::Final(error)) => return Err(error),
                Err(Failure::Passing(why)) => last = why,
            }
            if attempt < self.policy.attempts {
                tracing::warn!(%url, attempt, "{last}; retrying in {backoff:?}");
                std::thread::sleep(backoff);
                backoff = backoff.saturating_mul(2);
            }
        }
        Err(RegistryError::Unreachable {
            url: url.to_string(),
            attempts: self.policy.attempts.max(1),
            cause: last,
        })
    }

    async fn attempt(&self, url: &Url, fresh: bool) -> Result<Option<Vec<u8>>, Failure> {
        let mut request = self.http.get(url.clone());
        if fresh {
            request = request.header(reqwest::header::CACHE_CONTROL, "no-cache");
        }
        let mut response = request
            .send()
            .await
            .map_err(|e| Failure::Passing(cause(&e)))?;
        let status = response.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return Err(Failure::Passing(format!("the registry answered {status}")));
        }
        if !status.is_success() {
            return Err(Failure::Final(RegistryError::HttpStatus {
                url: url.to_string(),
                status: status.as_u16(),
            }));
        }
        let expected = response.content_length();
        let too_large = |size: u64| {
            Failure::Final(RegistryError::TooLarge {
                url: url.to_string(),
                limit: self.policy.max_bytes,
                size,
            })
        };
        if let Some(size) = expected.filter(|&size| size > self.policy.max_bytes as u64) {
            return Err(too_large(size));
        }
        let mut body = Vec::with_capacity(expected.unwrap_or(0) as usize);
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    body.extend_from_slice(&chunk);
                    if body.len() > self.policy.max_bytes {
                        return Err(too_large(body.len() as u64));
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(Failure::Passing(format!(
                        "the download died after {} bytes: {}",
                        body.len(),
                        cause(&e)
                    )));
                }
            }
        }
        if let Some(expected) = expected
            && body.len() as u64 != expected
        {
            return Err(Failure::Passing(format!(
                "the download ended after {} of {expected} bytes",
                body.len()
            )));
        }
        Ok(Some(body))
    }
}

/// The innermost cause of a reqwest error, in words.
fn cause(error: &reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(inner) = source {
        text = inner.to_string();
        source = inner.source();
    }
    if error.is_timeout() {
        return format!("timed out ({text})");
    }
    text
}
