//! The HTTP layer shared by every remote service: one [`Endpoint`] per URL a provider calls, with a
//! per-call timeout, a bound on requests in flight, and retries with exponential backoff.
//!
//! Retried: HTTP 429 and 5xx answers (honouring `Retry-After` / `retry-after-ms`) and connection
//! failures. Not retried: a call that times out (the service is up but slow; repeating a slow
//! generation multiplies the wait) and every other HTTP status, which becomes
//! [`ProviderError::Http`] at once. The total time spent sleeping between attempts is capped.
//!
//! The client is `reqwest`'s blocking one: call it from plain threads (the engine's workers, or
//! `tokio::task::spawn_blocking`), never from inside an async task.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::concepts::{ProviderError, ProviderResult};

/// How many characters of an error answer's body an [`ProviderError::Http`] keeps.
pub const ERROR_BODY_CHARS: usize = 300;

/// Longest single backoff sleep (before jitter) when the server gives no `Retry-After`.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// An API key. Its `Debug` form is redacted so configs can be logged.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ApiKey(pub String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

/// Timeouts, concurrency and retry policy of one endpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpSettings {
    /// Whole-call timeout (connect, send, wait for and read the answer).
    pub timeout: Duration,
    /// Most requests in flight at once through one [`Endpoint`] (at least 1).
    pub max_concurrency: usize,
    /// Extra attempts after the first for retryable failures.
    pub retries: u32,
    /// First backoff sleep; doubled on every further retry, capped at 30 s, then jittered
    /// to 50–100 % of that value.
    pub backoff: Duration,
    /// Cap on the total time slept between attempts of one call. A retry whose wait would exceed
    /// it is not made; the last error is returned instead.
    pub max_total_wait: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            timeout: Duration::from_secs(120),
            max_concurrency: 4,
            retries: 4,
            backoff: Duration::from_millis(500),
            max_total_wait: Duration::from_secs(120),
        }
    }
}

impl HttpSettings {
    /// Settings from the plain numbers of a TOML config, validated.
    pub fn from_config(
        component: &str,
        timeout_secs: f64,
        max_concurrency: usize,
        retries: u32,
        backoff_ms: u64,
        max_retry_wait_secs: f64,
    ) -> ProviderResult<Self> {
        let secs = |name: &str, v: f64, allow_zero: bool| -> ProviderResult<Duration> {
            let ok = v.is_finite() && if allow_zero { v >= 0.0 } else { v > 0.0 };
            if !ok || v > 1.0e7 {
                return Err(ProviderError::Local {
                    component: component.to_string(),
                    reason: format!(
                        "`{name}` must be a {} number of seconds, got {v}",
                        if allow_zero { "non-negative" } else { "positive" }
                    ),
                });
            }
            Ok(Duration::from_secs_f64(v))
        };
        if max_concurrency == 0 {
            return Err(ProviderError::Local {
                component: component.to_string(),
                reason: "`max_concurrency` must be at least 1".into(),
            });
        }
        Ok(HttpSettings {
            timeout: secs("timeout_secs", timeout_secs, false)?,
            max_concurrency,
            retries,
            backoff: Duration::from_millis(backoff_ms),
            max_total_wait: secs("max_retry_wait_secs", max_retry_wait_secs, true)?,
        })
    }
}

/// A counting semaphore: the bound on requests in flight through one endpoint.
struct Limiter {
    limit: usize,
    in_flight: Mutex<usize>,
    freed: Condvar,
}

struct Permit<'a>(&'a Limiter);

impl Limiter {
    fn new(limit: usize) -> Self {
        Limiter { limit: limit.max(1), in_flight: Mutex::new(0), freed: Condvar::new() }
    }

    fn acquire(&self) -> Permit<'_> {
        let mut n = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        while *n >= self.limit {
            n = self.freed.wait(n).unwrap_or_else(|e| e.into_inner());
        }
        *n += 1;
        Permit(self)
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let mut n = self.0.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        *n -= 1;
        drop(n);
        self.0.freed.notify_one();
    }
}

/// One attempt's outcome.
enum Attempt {
    Done(Vec<u8>),
    /// Worth another try, after the server's requested delay if it gave one.
    Retry(ProviderError, Option<Duration>),
    Fatal(ProviderError),
}

/// One URL of a remote service (e.g. `https://api.openai.com/v1/chat/completions`), with its own
/// client, concurrency bound and retry policy. Share one `Endpoint` among all calls to that URL.
pub struct Endpoint {
    url: String,
    api_key: Option<ApiKey>,
    settings: HttpSettings,
    limiter: Limiter,
    /// Built on first use, so an `Endpoint` can be created anywhere (even inside an async
    /// runtime, where building a blocking client is not allowed).
    client: OnceLock<Result<reqwest::blocking::Client, String>>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url)
            .field("api_key", &self.api_key)
            .field("settings", &self.settings)
            .finish()
    }
}

impl Endpoint {
    /// An endpoint at `url` (validated here: it must be an absolute http(s) URL).
    pub fn new(url: impl Into<String>, api_key: Option<ApiKey>, settings: HttpSettings) -> ProviderResult<Self> {
        let url = url.into();
        match reqwest::Url::parse(&url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.has_host() => {}
            Ok(u) => {
                return Err(ProviderError::Request {
                    endpoint: url.clone(),
                    reason: format!("unsupported URL scheme `{}`; use http or https", u.scheme()),
                })
            }
            Err(e) => {
                return Err(ProviderError::Request { endpoint: url.clone(), reason: format!("not a valid URL ({e})") })
            }
        }
        let api_key = api_key.filter(|k| !k.0.trim().is_empty());
        let limiter = Limiter::new(settings.max_concurrency);
        Ok(Endpoint { url, api_key, settings, limiter, client: OnceLock::new() })
    }

    /// The full URL, as named in errors and provenance.
    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn settings(&self) -> &HttpSettings {
        &self.settings
    }

    fn client(&self) -> ProviderResult<&reqwest::blocking::Client> {
        let built = self.client.get_or_init(|| {
            install_crypto_provider();
            reqwest::blocking::Client::builder()
                .timeout(self.settings.timeout)
                .connect_timeout(self.settings.timeout.min(Duration::from_secs(30)))
                .user_agent(concat!("dnd-studio-dissect/", env!("CARGO_PKG_VERSION")))
                .build()
                .map_err(|e| format!("cannot build the HTTP client: {}", error_chain(&e)))
        });
        built.as_ref().map_err(|reason| self.request_error(reason.clone()))
    }

    fn request_error(&self, reason: impl Into<String>) -> ProviderError {
        ProviderError::Request { endpoint: self.url.clone(), reason: reason.into() }
    }

    /// POST `body` as JSON; the answer's body bytes on a 2xx status, after the retries the
    /// policy allows.
    pub fn post_json(&self, body: &serde_json::Value) -> ProviderResult<Vec<u8>> {
        let client = self.client()?;
        let payload =
            serde_json::to_vec(body).map_err(|e| self.request_error(format!("cannot encode the request: {e}")))?;
        let mut waited = Duration::ZERO;
        let mut attempt: u32 = 0;
        loop {
            let outcome = {
                let _permit = self.limiter.acquire();
                self.attempt(client, &payload)
            };
            let (error, server_delay) = match outcome {
                Attempt::Done(bytes) => return Ok(bytes),
                Attempt::Fatal(error) => return Err(error),
                Attempt::Retry(error, delay) => (error, delay),
            };
            if attempt >= self.settings.retries {
                return Err(self.exhausted(error, attempt));
            }
            let delay = server_delay.unwrap_or_else(|| self.backoff(attempt));
            if waited + delay > self.settings.max_total_wait {
                return Err(self.exhausted(error, attempt));
            }
            std::thread::sleep(delay);
            waited += delay;
            attempt += 1;
        }
    }

    /// Says how many attempts were made on a transport error that ran out of retries.
    fn exhausted(&self, error: ProviderError, attempt: u32) -> ProviderError {
        match error {
            ProviderError::Request { endpoint, reason } if attempt > 0 => {
                ProviderError::Request { endpoint, reason: format!("{reason} (after {} attempts)", attempt + 1) }
            }
            other => other,
        }
    }

    fn attempt(&self, client: &reqwest::blocking::Client, payload: &[u8]) -> Attempt {
        let mut request = client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(reqwest::header::ACCEPT, "application/json")
            .body(payload.to_vec());
        if let Some(key) = &self.api_key {
            request = request.bearer_auth(key.expose());
        }
        let response = match request.send() {
            Ok(r) => r,
            Err(e) => return self.transport_failure(&e),
        };
        let status = response.status();
        let server_delay = retry_after(response.headers());
        let body = match response.bytes() {
            Ok(b) => b.to_vec(),
            Err(e) => return self.transport_failure(&e),
        };
        if status.is_success() {
            return Attempt::Done(body);
        }
        let error =
            ProviderError::Http { endpoint: self.url.clone(), status: status.as_u16(), body: truncate_body(&body) };
        if status.as_u16() == 429 || status.is_server_error() {
            Attempt::Retry(error, server_delay)
        } else {
            Attempt::Fatal(error)
        }
    }

    fn transport_failure(&self, e: &reqwest::Error) -> Attempt {
        if e.is_timeout() && !e.is_connect() {
            let secs = self.settings.timeout.as_secs_f64();
            return Attempt::Fatal(self.request_error(format!("no complete answer within {secs} s (timed out)")));
        }
        let what = if e.is_connect() { "cannot connect" } else { "request failed" };
        Attempt::Retry(self.request_error(format!("{what}: {}", error_chain(e))), None)
    }

    /// Exponential backoff with jitter: `backoff · 2^attempt`, capped, times a random 0.5–1.0.
    fn backoff(&self, attempt: u32) -> Duration {
        let base = self.settings.backoff.saturating_mul(1u32 << attempt.min(16)).min(MAX_BACKOFF);
        let r = RandomState::new().hash_one((attempt, std::thread::current().id()));
        let factor = 0.5 + 0.5 * (r as f64 / u64::MAX as f64);
        base.mul_f64(factor)
    }
}

/// rustls needs one process-wide crypto provider; this crate uses `ring` (no C++/cmake build).
/// A provider installed earlier by someone else is kept.
fn install_crypto_provider() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Losing a race with another installer is fine: a provider is then in place.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
    });
}

/// The server's requested wait: `retry-after-ms` (OpenAI) or `Retry-After` in seconds.
/// (The HTTP-date form of `Retry-After` is ignored; the exponential backoff applies then.)
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let number = |name: &str| -> Option<f64> {
        let v: f64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
        (v.is_finite() && v >= 0.0 && v < 1.0e7).then_some(v)
    };
    number("retry-after-ms")
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .or_else(|| number("retry-after").map(Duration::from_secs_f64))
}

/// The body of an error answer as text, whitespace collapsed, at most [`ERROR_BODY_CHARS`]
/// characters (plus an ellipsis when cut).
pub fn truncate_body(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let collapsed = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match collapsed.char_indices().nth(ERROR_BODY_CHARS) {
        Some((cut, _)) => format!("{}…", &collapsed[..cut]),
        None => collapsed,
    }
}

/// An error's causes ("client error (Connect): Connection refused"), without the URL that
/// reqwest's own message repeats (the endpoint is named by the [`ProviderError`] already).
fn error_chain(e: &reqwest::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    if parts.is_empty() {
        e.to_string()
    } else {
        parts.join(": ")
    }
}
