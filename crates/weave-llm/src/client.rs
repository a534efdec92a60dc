//! The client of an OpenAI-compatible `/chat/completions` endpoint (OpenAI, vLLM,
//! llama.cpp's server, Ollama): one per provider, shared by every step that calls it.
//!
//! Requests are tasks on one small tokio runtime for the whole process ([`runtime`]), sent
//! with reqwest: a request in flight is a few kilobytes (its task, its connection's
//! buffers), not a thread, so that a step can keep a thousand of them in flight. Waits
//! (the rate budget, the backoff between retries) are timers on that runtime.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use weave_core::{LlmProvider, RetryPolicy};

use super::limiter::{Cancelled, Limiter, RateHeaders};

/// How long one request may take when the provider sets no `timeout`.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(120);

/// The largest answer body read (a chat completion is a few kilobytes).
const MAX_BODY: usize = 64 << 20;

/// The largest body of the Batch API read (a batch's output file: the answers of up to
/// 50,000 requests).
const MAX_FILE: usize = 1 << 30;

/// The runtime's threads that run requests: the work of a request between its waits (a
/// few microseconds of parsing) is small, so two keep up with a thousand in flight.
pub(crate) const IO_THREADS: usize = 2;

/// The runtime's threads for blocking work: name lookups, and opening the cache. (Storing
/// an answer is the cache's pack thread's work; the wait for it takes no thread.)
pub(crate) const BLOCKING_THREADS: usize = 32;

/// The process's runtime for LLM requests, started when the first request is sent:
/// [`IO_THREADS`] threads named `weave-llm-io` for every step and provider, rather than a
/// thread per request in flight.
pub(crate) fn runtime() -> Result<&'static tokio::runtime::Runtime, String> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(IO_THREADS);
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .max_blocking_threads(BLOCKING_THREADS)
                .thread_name("weave-llm-io")
                .enable_io()
                .enable_time()
                .build()
                .map_err(|e| format!("cannot start the LLM client's threads: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// An answer to one request.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Answer {
    /// The message's text.
    pub(crate) content: String,
    /// Why the model stopped: `"stop"`, `"length"` (cut off at `max_tokens`), ...
    pub(crate) finish_reason: Option<String>,
    /// Tokens of the prompt, as the provider counted them.
    pub(crate) prompt_tokens: u64,
    /// Tokens of the answer.
    pub(crate) completion_tokens: u64,
    /// The model that answered, as the provider named it.
    pub(crate) model: Option<String>,
}

impl Answer {
    /// Whether the answer was cut off at the token limit.
    pub(crate) fn truncated(&self) -> bool {
        self.finish_reason.as_deref() == Some("length")
    }
}

/// Why a request got no answer, in the terms the step acts on.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum CallError {
    /// Every request would fail (the key is refused, the model does not exist, the
    /// endpoint cannot be reached): the run stops.
    Fatal(String),
    /// This request cannot be answered (refused as invalid, or still failing after every
    /// retry): its record goes to the quarantine file with this reason.
    Rejected(String),
    /// The endpoint cannot be reached at all (nothing listens, the host is unknown),
    /// after every retry: the run stops.
    Unreachable(String),
    /// The run is being cancelled.
    Cancelled,
    /// A Batch API object (a batch, a file) the provider does not have (HTTP 404): a
    /// batch a stopped run left may have been deleted since, or belong to another key.
    NotFound(String),
}

/// One failed attempt.
#[derive(Debug)]
enum Failure {
    /// Worth trying again (429, 5xx, a timeout, a dropped connection, a body that is not
    /// JSON); `unreachable` when no connection could be made at all.
    Transient {
        why: String,
        retry_after: Option<Duration>,
        rate_limited: bool,
        unreachable: bool,
    },
    Fatal(String),
    Rejected(String),
}

/// What the requests of one job cost, summed into the step's figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// HTTP requests sent, retries included.
    pub(crate) requests: u64,
    /// Requests sent again after a transient failure.
    pub(crate) retries: u64,
    /// Requests that failed: those sent again, and those given up on.
    pub(crate) failed: u64,
    /// 429 answers.
    pub(crate) rate_limited: u64,
}

/// The API key, which nothing prints: not `Debug`, not logs, not errors.
enum ApiKey {
    /// The provider needs none (a local server).
    None,
    Present(String),
    /// `api_key_env` names a variable that is not set.
    Missing(String),
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ApiKey::None => "none",
            ApiKey::Present(_) => "[redacted]",
            ApiKey::Missing(_) => "missing",
        })
    }
}

/// One provider's endpoint: the HTTP client (its connection pool), the API key, the rate
/// budget. Shared by every step of a pipeline that names the provider.
#[derive(Debug)]
pub(crate) struct Endpoint {
    provider: Arc<LlmProvider>,
    url: String,
    /// The client, or why none could be made (its TLS setup failed).
    http: Result<reqwest::Client, String>,
    key: ApiKey,
    pub(crate) limiter: Limiter,
    warned: std::sync::atomic::AtomicBool,
}

impl Endpoint {
    /// The endpoint of `provider`; its API key is read from the environment now.
    #[cfg(test)]
    pub(crate) fn new(provider: Arc<LlmProvider>) -> Self {
        Endpoint::for_shards(provider, 1)
    }

    /// The endpoint of `provider` in one of `shards` processes of a job, whose
    /// `requests_per_minute` and `tokens_per_minute` are the whole job's: each process
    /// spends an equal share.
    pub(crate) fn for_shards(provider: Arc<LlmProvider>, shards: u32) -> Self {
        let url = format!("{}/chat/completions", provider.base_url.trim_end_matches('/'));
        let timeout = provider.timeout.unwrap_or(DEFAULT_TIMEOUT);
        let http = http_client(timeout);
        let key = match &provider.api_key_env {
            None => ApiKey::None,
            Some(var) => match std::env::var(var) {
                Ok(k) if !k.is_empty() => ApiKey::Present(k),
                _ => ApiKey::Missing(var.clone()),
            },
        };
        let limiter = Limiter::shared_by(provider.requests_per_minute, provider.tokens_per_minute, shards);
        Endpoint { http, url, key, limiter, provider, warned: Default::default() }
    }

    /// True the first time it is asked: a problem with the provider is reported once, not
    /// once per step that names it.
    pub(crate) fn first_warning(&self) -> bool {
        !self.warned.swap(true, std::sync::atomic::Ordering::Relaxed)
    }

    /// The URL requests go to.
    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    /// The provider.
    pub(crate) fn provider(&self) -> &LlmProvider {
        &self.provider
    }

    /// Why requests cannot be sent at all, if so (the key's variable is not set, the
    /// client could not be made).
    pub(crate) fn unusable(&self) -> Option<String> {
        match (&self.key, &self.http) {
            (ApiKey::Missing(var), _) => Some(format!(
                "the environment variable `{var}` (`api_key_env` of [llm.{}]) is not set: set it to the API key",
                self.provider.name
            )),
            (_, Err(why)) => Some(format!("cannot send requests to {}: {why}", self.url)),
            _ => None,
        }
    }

    /// `text` with the API key blanked out, for anything the provider said that we repeat.
    fn redact(&self, text: &str) -> String {
        match &self.key {
            ApiKey::Present(k) if k.len() >= 4 => text.replace(k.as_str(), "[redacted]"),
            _ => text.to_owned(),
        }
    }

    /// Sends `body` until it is answered, retrying transient failures with `policy`
    /// (honouring `Retry-After`; a 429 pauses every request to the provider), within the
    /// provider's rate budget. `tokens` is the request's estimated cost in tokens,
    /// `jitter` spreads the retry delays of different requests. A request sent is let
    /// finish (the provider charges for it); `cancelled` is asked before each attempt and
    /// at least every 50 ms of a wait. Runs on [`runtime`].
    pub(crate) async fn complete(
        &self,
        body: &[u8],
        tokens: u64,
        policy: &RetryPolicy,
        jitter: u64,
        cancelled: &(dyn Fn() -> bool + Send + Sync),
        tally: &mut Tally,
    ) -> Result<Answer, CallError> {
        if let Some(why) = self.unusable() {
            return Err(CallError::Fatal(why));
        }
        let Ok(http) = &self.http else { return Err(CallError::Fatal("no HTTP client".into())) };
        let mut attempt = 0u32;
        loop {
            self.limiter.acquire(tokens, cancelled).await.map_err(|Cancelled| CallError::Cancelled)?;
            if cancelled() {
                return Err(CallError::Cancelled);
            }
            tally.requests += 1;
            let (result, headers) = self.send(http, body).await;
            if let Some(h) = &headers {
                self.limiter.observe(h);
            }
            let failure = match result {
                Ok(answer) => {
                    self.limiter.settle(tokens, answer.prompt_tokens + answer.completion_tokens);
                    return Ok(answer);
                }
                Err(f) => f,
            };
            tally.failed += 1;
            let (why, retry_after, rate_limited, unreachable) = match failure {
                Failure::Fatal(m) => return Err(CallError::Fatal(m)),
                Failure::Rejected(m) => return Err(CallError::Rejected(m)),
                Failure::Transient { why, retry_after, rate_limited, unreachable } => {
                    (why, retry_after, rate_limited, unreachable)
                }
            };
            if rate_limited {
                tally.rate_limited += 1;
            }
            if attempt >= policy.max_retries {
                let tries = attempt + 1;
                let what = if tries == 1 { "1 attempt".to_owned() } else { format!("{tries} attempts") };
                return Err(if unreachable {
                    CallError::Unreachable(format!("cannot reach {} after {what}: {why}", self.url))
                } else {
                    CallError::Rejected(format!("no answer after {what}: {why}"))
                });
            }
            attempt += 1;
            tally.retries += 1;
            let delay = backoff(policy, attempt, jitter).max(retry_after.unwrap_or_default());
            if rate_limited {
                // The provider's limit is everyone's: every request to it waits.
                self.limiter.cool_down(Instant::now() + delay);
            }
            log::debug!("{}: {why}; retry {attempt} in {}", self.url, weave_core::format_duration(delay));
            sleep(delay, cancelled).await.map_err(|Cancelled| CallError::Cancelled)?;
        }
    }

    /// A call of the provider's API besides the chat completions (the Batch API's files
    /// and batches): `method` on `path` (after `base_url`), with a body of its content
    /// type, retried as a request is (transient failures, `Retry-After`), its answer's
    /// text back. A refusal stops the step: it is the whole batch's, not a record's.
    pub(crate) async fn api(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        policy: &RetryPolicy,
        cancelled: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<String, CallError> {
        if let Some(why) = self.unusable() {
            return Err(CallError::Fatal(why));
        }
        let Ok(http) = &self.http else { return Err(CallError::Fatal("no HTTP client".into())) };
        let url = format!("{}/{}", self.provider.base_url.trim_end_matches('/'), path.trim_start_matches('/'));
        let mut attempt = 0u32;
        loop {
            if cancelled() {
                return Err(CallError::Cancelled);
            }
            let mut req = http.request(method.clone(), &url);
            if let Some((content_type, bytes)) = &body {
                req = req.header("content-type", *content_type).body(bytes.clone());
            }
            if let ApiKey::Present(k) = &self.key {
                req = req.header("authorization", format!("Bearer {k}"));
            }
            let failure = match req.send().await {
                Err(e) => self.transport_failure(&e),
                Ok(mut resp) => {
                    let status = resp.status().as_u16();
                    let retry_after =
                        RateHeaders::read(|name| resp.headers().get(name).and_then(|v| v.to_str().ok())).retry_after;
                    match read_body(&mut resp, MAX_FILE).await {
                        Err(e) => transient(
                            format!("the connection broke while reading the answer ({})", self.redact(&e)),
                            None,
                        ),
                        Ok(text) if (200..300).contains(&status) => return Ok(text),
                        Ok(text) if status == 404 => {
                            let msg = self.redact(&error_message(&text));
                            return Err(CallError::NotFound(format!(
                                "{url} answered HTTP 404 ({msg}): does the provider offer the Batch API? (or set `batch = false` in [llm.{}])",
                                self.provider.name
                            )));
                        }
                        Ok(text) => self.status_failure(status, &text, retry_after),
                    }
                }
            };
            let (why, retry_after, unreachable) = match failure {
                Failure::Fatal(m) => return Err(CallError::Fatal(m)),
                Failure::Rejected(m) => return Err(CallError::Fatal(format!("{url}: {m}"))),
                Failure::Transient { why, retry_after, unreachable, .. } => (why, retry_after, unreachable),
            };
            if attempt >= policy.max_retries {
                let what = format!("{} attempts", attempt + 1);
                return Err(if unreachable {
                    CallError::Unreachable(format!("cannot reach {url} after {what}: {why}"))
                } else {
                    CallError::Fatal(format!("no answer from {url} after {what}: {why}"))
                });
            }
            attempt += 1;
            let delay = backoff(policy, attempt, 0).max(retry_after.unwrap_or_default());
            log::debug!("{url}: {why}; retry {attempt} in {}", weave_core::format_duration(delay));
            sleep(delay, cancelled).await.map_err(|Cancelled| CallError::Cancelled)?;
        }
    }

    /// One attempt.
    async fn send(&self, http: &reqwest::Client, body: &[u8]) -> (Result<Answer, Failure>, Option<RateHeaders>) {
        let mut req = http.post(&self.url).header("content-type", "application/json").body(body.to_vec());
        if let ApiKey::Present(k) = &self.key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        let mut resp = match req.send().await {
            Ok(r) => r,
            Err(e) => return (Err(self.transport_failure(&e)), None),
        };
        let status = resp.status().as_u16();
        let headers = RateHeaders::read(|name| resp.headers().get(name).and_then(|v| v.to_str().ok()));
        let text = match read_body(&mut resp, MAX_BODY).await {
            Ok(t) => t,
            Err(e) => {
                let why = format!("the connection broke while reading the answer ({})", self.redact(&e));
                return (Err(transient(why, None)), Some(headers));
            }
        };
        let result = match status {
            200..=299 => parse_answer(&text).map_err(|f| match f {
                Failure::Transient { why, retry_after, rate_limited, unreachable } => {
                    Failure::Transient { why: self.redact(&why), retry_after, rate_limited, unreachable }
                }
                Failure::Rejected(m) => Failure::Rejected(self.redact(&m)),
                Failure::Fatal(m) => Failure::Fatal(self.redact(&m)),
            }),
            _ => Err(self.status_failure(status, &text, headers.retry_after)),
        };
        (result, Some(headers))
    }

    /// A non-2xx answer, classified.
    fn status_failure(&self, status: u16, body: &str, retry_after: Option<Duration>) -> Failure {
        let msg = self.redact(&error_message(body));
        let said = if msg.is_empty() { String::new() } else { format!(": {msg}") };
        match status {
            429 => Failure::Transient {
                why: format!("rate limited (HTTP 429){said}"),
                retry_after,
                rate_limited: true,
                unreachable: false,
            },
            408 | 409 | 425 | 500..=599 => transient(format!("HTTP {status}{said}"), retry_after),
            401 | 403 => Failure::Fatal(format!(
                "{} refused the request (HTTP {status}){said}; check the API key in `{}`",
                self.url,
                self.provider.api_key_env.as_deref().unwrap_or("api_key_env (none is set)")
            )),
            404 => Failure::Fatal(format!(
                "{} answered HTTP 404{said}; check `base_url` and `model` (\"{}\") of [llm.{}]",
                self.url, self.provider.model, self.provider.name
            )),
            _ => Failure::Rejected(format!("the provider refused the request (HTTP {status}){said}")),
        }
    }

    /// A request that got no HTTP answer, classified: a timeout, no connection at all
    /// (refused, no route, an unknown host), a connection that broke, or a request that
    /// cannot be made (a bad URL).
    fn transport_failure(&self, e: &reqwest::Error) -> Failure {
        let text = self.redact(&weave_core::error_line(e));
        if e.is_timeout() {
            transient(
                format!(
                    "no answer within {}",
                    weave_core::format_duration(self.provider.timeout.unwrap_or(DEFAULT_TIMEOUT))
                ),
                None,
            )
        } else if e.is_connect() {
            unreachable(text)
        } else if e.is_builder() {
            Failure::Fatal(format!("cannot send a request to {}: {text}", self.url))
        } else {
            transient(format!("the connection broke ({text})"), None)
        }
    }
}

/// The HTTP client of one endpoint: HTTP/1.1 connections kept for the next request (as
/// many as there are requests in flight), `timeout` for each request whole, Weave's user
/// agent, rustls with the ring provider and the webpki roots for https.
fn http_client(timeout: Duration) -> Result<reqwest::Client, String> {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("cannot set up TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .timeout(timeout)
        .pool_max_idle_per_host(1024)
        .pool_idle_timeout(Duration::from_secs(60))
        .user_agent(concat!("weave/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| weave_core::error_line(&e))
}

/// The body of `resp` as text, up to `max` bytes.
async fn read_body(resp: &mut reqwest::Response, max: usize) -> Result<String, String> {
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(|e| weave_core::error_line(&e))? {
        if bytes.len() + chunk.len() > max {
            return Err(format!("the answer is larger than {}", weave_core::format_bytes(max as u64)));
        }
        bytes.extend_from_slice(&chunk);
    }
    String::from_utf8(bytes).map_err(|e| format!("the answer is not UTF-8 ({e})"))
}

fn transient(why: String, retry_after: Option<Duration>) -> Failure {
    Failure::Transient { why, retry_after, rate_limited: false, unreachable: false }
}

fn unreachable(why: String) -> Failure {
    Failure::Transient { why, retry_after: None, rate_limited: false, unreachable: true }
}

/// The delay before retry number `attempt` (from 1): the policy's backoff, with a jitter
/// taken from `jitter` and the attempt rather than a clock, so that requests that failed
/// together do not come back together.
fn backoff(policy: &RetryPolicy, attempt: u32, jitter: u64) -> Duration {
    let d = policy.delay(attempt);
    if !policy.jitter {
        return d;
    }
    let mut x = jitter ^ u64::from(attempt).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 31;
    d.mul_f64(0.5 + (x % 1000) as f64 / 2000.0)
}

/// Sleeps `d` on the runtime's timer, looking at `cancelled` every 50 ms.
pub(crate) async fn sleep(d: Duration, cancelled: &(dyn Fn() -> bool + Send + Sync)) -> Result<(), Cancelled> {
    let end = Instant::now() + d;
    loop {
        if cancelled() {
            return Err(Cancelled);
        }
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        tokio::time::sleep((end - now).min(Duration::from_millis(50))).await;
    }
}

/// The `error.message` of an OpenAI-style error body, or the start of the body.
fn error_message(body: &str) -> String {
    if let Ok(v) = serde_json::from_str::<serde_json::Value>(body)
        && let Some(m) =
            v["error"]["message"].as_str().or_else(|| v["error"].as_str()).or_else(|| v["message"].as_str())
    {
        return m.to_owned();
    }
    let t: String = body.trim().chars().take(200).collect();
    t
}

/// The answer in a chat completion's body (a line of a batch's output file), or why there
/// is none.
pub(crate) fn answer_of(body: &serde_json::Value) -> Result<Answer, String> {
    parse_answer(&body.to_string()).map_err(|f| match f {
        Failure::Transient { why, .. } => why,
        Failure::Rejected(m) | Failure::Fatal(m) => m,
    })
}

/// The `error.message` of an OpenAI-style error body, for a line of a batch's error file.
pub(crate) fn error_text(body: &serde_json::Value) -> String {
    error_message(&body.to_string())
}

/// A chat completion's answer.
fn parse_answer(text: &str) -> Result<Answer, Failure> {
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        let start: String = text.chars().take(80).collect();
        transient(format!("the answer is not JSON ({e}): {start:?}"), None)
    })?;
    if !v["error"].is_null() {
        return Err(transient(format!("the server answered with an error: {}", error_message(text)), None));
    }
    let Some(choice) = v["choices"].get(0) else {
        return Err(transient("the answer has no `choices`".to_owned(), None));
    };
    let finish_reason = choice["finish_reason"].as_str().map(str::to_owned);
    let message = &choice["message"];
    let Some(content) = message["content"].as_str() else {
        if let Some(r) = message["refusal"].as_str() {
            return Err(Failure::Rejected(format!("the model refused: {r}")));
        }
        if message.is_null() {
            return Err(transient("the answer's first choice has no `message`".to_owned(), None));
        }
        return Err(Failure::Rejected(format!(
            "the model gave no text (finish_reason {})",
            finish_reason.as_deref().unwrap_or("missing")
        )));
    };
    let usage = &v["usage"];
    Ok(Answer {
        content: content.to_owned(),
        finish_reason,
        prompt_tokens: usage["prompt_tokens"].as_u64().unwrap_or(0),
        completion_tokens: usage["completion_tokens"].as_u64().unwrap_or(0),
        model: v["model"].as_str().map(str::to_owned),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use weave_testkit::{Reply, TestServer};

    fn provider(url: &str, key_env: Option<&str>) -> Arc<LlmProvider> {
        Arc::new(LlmProvider {
            name: "local".into(),
            base_url: url.into(),
            model: "m".into(),
            api_key_env: key_env.map(str::to_owned),
            requests_per_minute: None,
            tokens_per_minute: None,
            timeout: Some(Duration::from_secs(5)),
            prompt_price_per_million: None,
            completion_price_per_million: None,
            batch: false,
            batch_discount: None,
            batch_poll_interval: None,
            config: Default::default(),
        })
    }

    fn fast(n: u32) -> RetryPolicy {
        RetryPolicy {
            max_retries: n,
            retry_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            ..RetryPolicy::default()
        }
    }

    fn body(prompt: &str) -> Vec<u8> {
        serde_json::json!({"model": "m", "messages": [{"role": "user", "content": prompt}]}).to_string().into_bytes()
    }

    fn call(e: &Endpoint, prompt: &str, retries: u32) -> (Result<Answer, CallError>, Tally) {
        let mut tally = Tally::default();
        let r = runtime().unwrap().block_on(e.complete(&body(prompt), 10, &fast(retries), 7, &|| false, &mut tally));
        (r, tally)
    }

    #[test]
    fn transient_failures_are_retried_until_answered() {
        // Each prompt fails in its own way on its first two tries.
        let server = TestServer::start(|r| match (r.prompt(), r.attempt) {
            ("500", 1 | 2) => Reply::error(500, "boom"),
            ("429", 1 | 2) => Reply::too_many_requests("0"),
            ("bad", 1 | 2) => Reply::Malformed,
            ("drop", 1 | 2) => Reply::Drop,
            (p, _) => Reply::text(format!("ok {p}")).with_usage(7, 2),
        })
        .unwrap();
        let e = Endpoint::new(provider(&server.url(), None));
        for p in ["500", "429", "bad", "drop"] {
            let (r, tally) = call(&e, p, 3);
            let a = r.unwrap_or_else(|e| panic!("{p}: {e:?}"));
            assert_eq!(a.content, format!("ok {p}"));
            assert_eq!((a.prompt_tokens, a.completion_tokens), (7, 2));
            assert_eq!(a.finish_reason.as_deref(), Some("stop"));
            assert_eq!((tally.requests, tally.retries), (3, 2), "{p}");
            assert_eq!(tally.rate_limited, if p == "429" { 2 } else { 0 });
        }
    }

    #[test]
    fn retries_run_out_into_a_rejection_with_the_last_reason() {
        let server = TestServer::start(|_| Reply::error(503, "overloaded")).unwrap();
        let e = Endpoint::new(provider(&server.url(), None));
        let (r, tally) = call(&e, "x", 2);
        assert_eq!(r, Err(CallError::Rejected("no answer after 3 attempts: HTTP 503: overloaded".into())));
        assert_eq!(tally.requests, 3);
    }

    #[test]
    fn refusals_are_per_request_and_auth_errors_stop_everything() {
        let server = TestServer::start(|r| match r.prompt() {
            "long" => Reply::error(400, "maximum context length exceeded"),
            "auth" => Reply::error(401, "bad key"),
            _ => Reply::error(404, "model `m` not found"),
        })
        .unwrap();
        let e = Endpoint::new(provider(&server.url(), None));
        let (r, tally) = call(&e, "long", 3);
        assert_eq!(
            r,
            Err(CallError::Rejected(
                "the provider refused the request (HTTP 400): maximum context length exceeded".into()
            ))
        );
        assert_eq!(tally.requests, 1, "not retried");
        let Err(CallError::Fatal(m)) = call(&e, "auth", 3).0 else { panic!() };
        assert!(m.contains("HTTP 401") && m.contains("check the API key"), "{m}");
        let Err(CallError::Fatal(m)) = call(&e, "x", 3).0 else { panic!() };
        assert!(m.contains("HTTP 404") && m.contains("\"m\""), "{m}");
    }

    #[test]
    fn retry_after_is_honoured_and_pauses_the_provider() {
        let server =
            TestServer::start(|r| if r.attempt == 1 { Reply::too_many_requests("1") } else { Reply::text("ok") })
                .unwrap();
        let e = Endpoint::new(provider(&server.url(), None));
        let t0 = Instant::now();
        let (r, _) = call(&e, "x", 3);
        assert!(r.is_ok());
        // The retry waited at least the second the server asked for, though the policy's
        // own delay is a millisecond.
        assert!(t0.elapsed() >= Duration::from_secs(1), "{:?}", t0.elapsed());
    }

    #[test]
    fn an_endpoint_nobody_listens_on_is_fatal_after_the_retries() {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let e = Endpoint::new(provider(&format!("http://127.0.0.1:{port}/v1"), None));
        let Err(CallError::Unreachable(m)) = call(&e, "x", 1).0 else { panic!() };
        assert!(
            m.starts_with(&format!("cannot reach http://127.0.0.1:{port}/v1/chat/completions after 2 attempts")),
            "{m}"
        );
    }

    #[test]
    fn the_key_is_sent_and_never_repeated() {
        let var = "WEAVE_TEST_CLIENT_KEY_1";
        // A variable the test process does not have: the key is missing.
        let e = Endpoint::new(provider("http://127.0.0.1:9/v1", Some(var)));
        assert!(std::env::var(var).is_err());
        let Err(CallError::Fatal(m)) = call(&e, "x", 0).0 else { panic!() };
        assert_eq!(
            m,
            "the environment variable `WEAVE_TEST_CLIENT_KEY_1` (`api_key_env` of [llm.local]) is not set: set it to the API key"
        );
        // A key the server refuses, and repeats back in its message.
        let server = TestServer::builder().api_key("sk-right-key").start(|_| Reply::text("ok")).unwrap();
        let mut e = Endpoint::new(provider(&server.url(), None));
        e.key = ApiKey::Present("sk-wrong-secret-key".into());
        let Err(CallError::Fatal(m)) = call(&e, "x", 0).0 else { panic!() };
        assert!(!m.contains("sk-wrong-secret-key"), "{m}");
        assert!(m.contains("[redacted]"), "{m}");
        assert_eq!(format!("{:?}", e.key), "[redacted]");
        assert_eq!(server.requests()[0].request.authorization.as_deref(), Some("Bearer sk-wrong-secret-key"));
        e.key = ApiKey::Present("sk-right-key".into());
        assert!(call(&e, "x", 0).0.is_ok());
    }

    #[test]
    fn answers_without_text_are_refusals() {
        assert!(matches!(
            parse_answer(r#"{"choices":[{"message":{"content":null,"refusal":"no"},"finish_reason":"stop"}]}"#),
            Err(Failure::Rejected(m)) if m == "the model refused: no"
        ));
        assert!(matches!(
            parse_answer(r#"{"choices":[{"message":{"content":null},"finish_reason":"content_filter"}]}"#),
            Err(Failure::Rejected(m)) if m == "the model gave no text (finish_reason content_filter)"
        ));
        assert!(matches!(parse_answer(r#"{"choices":[]}"#), Err(Failure::Transient { .. })));
        let a = parse_answer(r#"{"choices":[{"message":{"content":"x"},"finish_reason":"length"}]}"#).unwrap();
        assert!(a.truncated());
        assert_eq!((a.prompt_tokens, a.completion_tokens), (0, 0), "no usage: zero, not an error");
    }

    #[test]
    fn backoff_follows_the_policy_with_a_reproducible_jitter() {
        let p = RetryPolicy { retry_delay: Duration::from_millis(100), ..RetryPolicy::default() };
        let d = backoff(&p, 2, 42);
        assert!(d >= Duration::from_millis(100) && d <= Duration::from_millis(200), "{d:?}");
        assert_eq!(d, backoff(&p, 2, 42));
        assert_ne!(backoff(&p, 2, 42), backoff(&p, 2, 43));
        let flat = RetryPolicy { jitter: false, ..p };
        assert_eq!(backoff(&flat, 2, 42), Duration::from_millis(200));
    }
}
