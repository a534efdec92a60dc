//! Test support for Weave: [`TestServer`], a real HTTP/1.1 server on `127.0.0.1` that
//! speaks the OpenAI chat-completions wire format (`POST /v1/chat/completions`), with the
//! reply to each request chosen by the test — an answer, a truncated answer, a 429 with
//! `Retry-After`, a 500, a body that is not JSON, a dropped connection, a reply held back,
//! latency — and a log of every request, counted by body, so that a test can check that
//! nothing was asked twice.
//!
//! It also speaks the OpenAI Batch API (`POST /v1/files`, `POST /v1/batches`,
//! `GET /v1/batches/{id}`, `GET /v1/files/{id}/content`): each line of a batch's input
//! file is answered by the same reply function and counted in the same log as a request
//! of its own, and a batch completes after [`Builder::batch_delay`], or fails or expires
//! as [`Builder::batch_end`] says.
//!
//! The unit tests of the LLM steps, the end-to-end tests (which run the `weave` binary
//! against it) and `cargo xtask bench llm` all use this one server.
//!
//! ```
//! use weave_testkit::{Reply, TestServer};
//!
//! // Every prompt is answered with itself in capitals; the first try of each is a 503.
//! let server = TestServer::start(|req| {
//!     if req.attempt == 1 { Reply::error(503, "warming up") } else { Reply::text(req.prompt().to_uppercase()) }
//! })
//! .unwrap();
//! assert!(server.url().starts_with("http://127.0.0.1:"));
//! assert_eq!(server.total(), 0);
//! ```
#![deny(missing_docs)]

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Request {
    /// The raw body.
    pub body: String,
    /// The body as JSON (`Null` when it is not JSON).
    pub json: serde_json::Value,
    /// The `Authorization` header, if any.
    pub authorization: Option<String>,
    /// How many times this exact body has been received, this one included (1 for the
    /// first): lets a test fail the first tries of every request and answer the next.
    pub attempt: u32,
}

impl Request {
    /// The content of the last user message (empty when there is none).
    pub fn prompt(&self) -> &str {
        self.messages().iter().rev().find(|(role, _)| *role == "user").map_or("", |(_, c)| c)
    }

    /// The content of the system message, if any.
    pub fn system(&self) -> Option<&str> {
        self.messages().into_iter().find(|(role, _)| *role == "system").map(|(_, c)| c)
    }

    /// The messages as (role, content).
    pub fn messages(&self) -> Vec<(&str, &str)> {
        self.json["messages"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|m| (m["role"].as_str().unwrap_or_default(), m["content"].as_str().unwrap_or_default()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A top-level field of the body (`"temperature"`, `"seed"`, `"response_format"`).
    pub fn field(&self, name: &str) -> &serde_json::Value {
        &self.json[name]
    }
}

/// How the server answers one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// `200` with a chat completion.
    Completion {
        /// The message's content.
        content: String,
        /// `"stop"`, or `"length"` for an answer cut off at `max_tokens`.
        finish_reason: String,
        /// The usage's prompt tokens; `None` counts the words of the messages.
        prompt_tokens: Option<u64>,
        /// The usage's completion tokens; `None` counts the words of the content.
        completion_tokens: Option<u64>,
        /// Extra response headers (rate-limit headers).
        headers: Vec<(String, String)>,
    },
    /// An HTTP error with an OpenAI-style JSON error body.
    Error {
        /// The status code.
        status: u16,
        /// The error's message.
        message: String,
        /// Extra response headers (`Retry-After`).
        headers: Vec<(String, String)>,
    },
    /// `200` with a body that is not JSON (cut off half-way).
    Malformed,
    /// The connection is closed without an answer.
    Drop,
    /// No answer at all until the server is dropped (a request in flight when a run is
    /// killed).
    Hold,
    /// Waits, then replies.
    After(Duration, Box<Reply>),
}

impl Reply {
    /// An answer with this content.
    pub fn text(content: impl Into<String>) -> Reply {
        Reply::Completion {
            content: content.into(),
            finish_reason: "stop".to_owned(),
            prompt_tokens: None,
            completion_tokens: None,
            headers: Vec::new(),
        }
    }

    /// An answer whose content is this JSON value.
    pub fn json(value: &serde_json::Value) -> Reply {
        Reply::text(value.to_string())
    }

    /// An answer cut off at the token limit (`finish_reason: "length"`).
    pub fn truncated(content: impl Into<String>) -> Reply {
        match Reply::text(content) {
            Reply::Completion { content, prompt_tokens, completion_tokens, headers, .. } => Reply::Completion {
                content,
                finish_reason: "length".to_owned(),
                prompt_tokens,
                completion_tokens,
                headers,
            },
            other => other,
        }
    }

    /// An HTTP error.
    pub fn error(status: u16, message: impl Into<String>) -> Reply {
        Reply::Error { status, message: message.into(), headers: Vec::new() }
    }

    /// A `429 Too Many Requests` with `Retry-After: retry_after` (seconds, or an HTTP date).
    pub fn too_many_requests(retry_after: &str) -> Reply {
        Reply::error(429, "Rate limit reached, please try again later").with_header("Retry-After", retry_after)
    }

    /// This reply with one more response header.
    pub fn with_header(self, name: &str, value: &str) -> Reply {
        match self {
            Reply::Completion { content, finish_reason, prompt_tokens, completion_tokens, mut headers } => {
                headers.push((name.to_owned(), value.to_owned()));
                Reply::Completion { content, finish_reason, prompt_tokens, completion_tokens, headers }
            }
            Reply::Error { status, message, mut headers } => {
                headers.push((name.to_owned(), value.to_owned()));
                Reply::Error { status, message, headers }
            }
            Reply::After(d, r) => Reply::After(d, Box::new(r.with_header(name, value))),
            other => other,
        }
    }

    /// This reply with usage figures of its own.
    pub fn with_usage(self, prompt: u64, completion: u64) -> Reply {
        match self {
            Reply::Completion { content, finish_reason, headers, .. } => Reply::Completion {
                content,
                finish_reason,
                prompt_tokens: Some(prompt),
                completion_tokens: Some(completion),
                headers,
            },
            other => other,
        }
    }

    /// This reply after a wait.
    pub fn after(self, wait: Duration) -> Reply {
        Reply::After(wait, Box::new(self))
    }

    fn kind(&self) -> &'static str {
        match self {
            Reply::Completion { .. } => "completion",
            Reply::Error { .. } => "error",
            Reply::Malformed => "malformed",
            Reply::Drop => "drop",
            Reply::Hold => "hold",
            Reply::After(_, r) => r.kind(),
        }
    }
}

/// How a batch of the Batch API ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchEnd {
    /// Every line answered (each by the reply function), after the batch delay.
    Completed,
    /// Refused at validation, at once, with this message: no line is answered.
    Failed(String),
    /// Only the first this many lines are answered, and the batch expires after the delay.
    Expired(usize),
}

/// One batch of the Batch API.
#[derive(Debug, Clone)]
struct Job {
    id: String,
    input_file_id: String,
    created: Instant,
    end: BatchEnd,
    /// The output and error files' ids and their line counts.
    output: Option<(String, usize)>,
    errors: Option<(String, usize)>,
    total: usize,
    cancelled: bool,
}

/// A request in the server's log, with what was done with it.
#[derive(Debug, Clone)]
pub struct Logged {
    /// The request.
    pub request: Request,
    /// `"completion"`, `"error"`, `"malformed"`, `"drop"`, `"hold"`, or `"unauthorized"`.
    pub reply: &'static str,
    /// Whether a completion was written out whole (an answer the client may have).
    pub answered: bool,
    /// When it arrived (its body read).
    pub at: Instant,
    /// When the reply was written or the connection dropped (`None` while held, or still
    /// being answered).
    pub done: Option<Instant>,
}

type Respond = dyn Fn(&Request) -> Reply + Send + Sync;
type EndOf = dyn Fn(usize) -> BatchEnd + Send + Sync;

struct Shared {
    respond: Box<Respond>,
    latency: Duration,
    key: Option<String>,
    in_flight: std::sync::atomic::AtomicUsize,
    max_in_flight: std::sync::atomic::AtomicUsize,
    connections: std::sync::atomic::AtomicUsize,
    log: Mutex<Vec<Logged>>,
    counts: Mutex<HashMap<String, u32>>,
    batch_delay: Duration,
    batch_end: Option<Box<EndOf>>,
    /// Uploaded files and the files a batch made, by id.
    files: Mutex<HashMap<String, String>>,
    jobs: Mutex<Vec<Job>>,
    /// Every Batch API call, as `METHOD /path`.
    api: Mutex<Vec<String>>,
    /// Every batch ends now, whatever the delay ([`TestServer::finish_batches`]).
    finished: AtomicBool,
}

impl Shared {
    fn log(&self) -> MutexGuard<'_, Vec<Logged>> {
        self.log.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// How to start a [`TestServer`].
#[derive(Default)]
pub struct Builder {
    latency: Duration,
    key: Option<String>,
    batch_delay: Duration,
    batch_end: Option<Box<EndOf>>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder").field("latency", &self.latency).field("batch_delay", &self.batch_delay).finish()
    }
}

impl Builder {
    /// Every reply waits this long first (as a model would take to answer).
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Requests must carry `Authorization: Bearer <key>`; others get a 401 whose message
    /// repeats what they sent (as some servers do), which a client must not pass on.
    pub fn api_key(mut self, key: &str) -> Self {
        self.key = Some(key.to_owned());
        self
    }

    /// A batch of the Batch API is `in_progress` this long after it is created, then
    /// completes (or expires, see [`Builder::batch_end`]).
    pub fn batch_delay(mut self, delay: Duration) -> Self {
        self.batch_delay = delay;
        self
    }

    /// How batch number `n` (from 0, in the order they are created) ends; every batch
    /// completes without it.
    pub fn batch_end(mut self, end: impl Fn(usize) -> BatchEnd + Send + Sync + 'static) -> Self {
        self.batch_end = Some(Box::new(end));
        self
    }

    /// Starts the server on `127.0.0.1` on a free port; `respond` chooses each reply.
    ///
    /// The server is event-driven: one thread serves every connection (a task each, on a
    /// tokio runtime of its own), so that a thousand requests held for their latency cost
    /// a timer each, not a thread each, and a benchmark's client is not measured against a
    /// server that needs the machine's cores for its context switches. `respond` is called
    /// on that thread: it must answer at once (a reply that waits is [`Reply::after`]).
    pub fn start(self, respond: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> std::io::Result<TestServer> {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            respond: Box::new(respond),
            latency: self.latency,
            key: self.key,
            in_flight: Default::default(),
            max_in_flight: Default::default(),
            connections: Default::default(),
            log: Mutex::default(),
            counts: Mutex::default(),
            batch_delay: self.batch_delay,
            batch_end: self.batch_end,
            files: Mutex::default(),
            jobs: Mutex::default(),
            api: Mutex::default(),
            finished: AtomicBool::new(false),
        });
        let runtime = tokio::runtime::Builder::new_current_thread().enable_io().enable_time().build()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new().name("testkit-server".into()).spawn(move || {
            runtime.block_on(async move {
                let listener = match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => l,
                    Err(e) => panic!("the test server cannot listen: {e}"),
                };
                tokio::spawn(async move {
                    loop {
                        match listener.accept().await {
                            Ok((conn, _)) => {
                                s.connections.fetch_add(1, Ordering::SeqCst);
                                tokio::spawn(serve(Arc::clone(&s), conn));
                            }
                            // Out of descriptors, say: the client's connect waits meanwhile.
                            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
                        }
                    }
                });
                // Until the server is dropped (or its handle lost).
                let _ = stopped.await;
            });
            // Dropping the runtime drops every connection's task, and with it its socket:
            // a request held (`Reply::Hold`) ends without an answer.
            drop(runtime);
        })?;
        Ok(TestServer { addr, shared, stop: Some(stop), thread: Some(thread) })
    }
}

/// An OpenAI-compatible HTTP server on `127.0.0.1`, stopped when dropped.
pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// Tells the server's thread to stop.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer").field("addr", &self.addr).finish()
    }
}

impl TestServer {
    /// How to start a server with latency or an API key.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Starts a server without latency or key; `respond` chooses each reply.
    pub fn start(respond: impl Fn(&Request) -> Reply + Send + Sync + 'static) -> std::io::Result<TestServer> {
        Builder::default().start(respond)
    }

    /// Starts a server that answers every prompt with `echo: <prompt>`.
    pub fn echo() -> std::io::Result<TestServer> {
        TestServer::start(|r| Reply::text(format!("echo: {}", r.prompt())))
    }

    /// The base URL to configure (`http://127.0.0.1:PORT/v1`).
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Every request received, in arrival order.
    pub fn requests(&self) -> Vec<Logged> {
        self.shared.log().clone()
    }

    /// How many requests were received.
    pub fn total(&self) -> usize {
        self.shared.log().len()
    }

    /// How many requests are being handled now (received, not yet answered or held).
    pub fn busy(&self) -> usize {
        self.shared.log().iter().filter(|l| l.reply.is_empty()).count()
    }

    /// The most requests that were being handled at once.
    pub fn max_in_flight(&self) -> usize {
        self.shared.max_in_flight.load(Ordering::SeqCst)
    }

    /// How many connections clients opened (a client that keeps its connections for the
    /// next request opens about as many as it has requests in flight).
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::SeqCst)
    }

    /// How many requests were answered with a whole completion.
    pub fn answered(&self) -> usize {
        self.shared.log().iter().filter(|l| l.answered).count()
    }

    /// How many times each body was received.
    pub fn counts(&self) -> HashMap<String, u32> {
        self.shared.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The prompts answered with a whole completion, once per answer.
    pub fn answered_prompts(&self) -> Vec<String> {
        self.shared.log().iter().filter(|l| l.answered).map(|l| l.request.prompt().to_owned()).collect()
    }

    /// How many batches of the Batch API were created.
    pub fn batches(&self) -> usize {
        lock(&self.shared.jobs).len()
    }

    /// Ends every batch now, and every batch made from now on at once, whatever
    /// [`Builder::batch_delay`] says.
    pub fn finish_batches(&self) {
        self.shared.finished.store(true, Ordering::SeqCst);
    }

    /// Forgets every batch and file, as a provider does after its retention period (or
    /// for another account's key): asking for one then answers 404.
    pub fn forget_batches(&self) {
        lock(&self.shared.files).clear();
        for job in lock(&self.shared.jobs).iter_mut() {
            job.id = format!("forgotten-{}", job.id);
        }
    }

    /// Every Batch API call, in order, as `METHOD /path` (`POST /v1/files`).
    pub fn api_calls(&self) -> Vec<String> {
        lock(&self.shared.api).clone()
    }

    /// Waits until `done(answered, total)` holds, up to `timeout`; returns whether it did.
    pub fn wait_until(&self, timeout: Duration, done: impl Fn(usize, usize) -> bool) -> bool {
        let start = Instant::now();
        loop {
            if done(self.answered(), self.total()) {
                return true;
            }
            if start.elapsed() > timeout {
                return false;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}

/// One connection: requests one after another (keep-alive) until the client closes it or
/// the server stops (its runtime dropped, which drops this task).
async fn serve(s: Arc<Shared>, conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let mut conn = tokio::io::BufReader::new(conn);
    loop {
        let Some((method, path, headers, body)) = read_request(&mut conn).await else { return };
        let header = |name: &str| headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let close = header("connection").is_some_and(|v| v.eq_ignore_ascii_case("close"));
        let authorization = header("authorization");
        if path.starts_with("/v1/files") || path.starts_with("/v1/batches") {
            lock(&s.api).push(format!("{method} {path}"));
            let (status, body) = match &s.key {
                Some(key) if authorization.as_deref() != Some(&format!("Bearer {key}")) => {
                    (401, error_body("Incorrect API key provided", "invalid_api_key"))
                }
                _ => batch_api(&s, &method, &path, header("content-type").as_deref(), &body),
            };
            if write(conn.get_mut(), status, &[], &body).await.is_err() || close {
                return;
            }
            continue;
        }
        let json: serde_json::Value = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
        let attempt = match lock(&s.counts).entry(body.clone()) {
            Entry::Occupied(mut e) => {
                *e.get_mut() += 1;
                *e.get()
            }
            Entry::Vacant(e) => *e.insert(1),
        };
        let request = Request { body, json, authorization, attempt };
        let index = {
            let mut log = s.log();
            log.push(Logged { request: request.clone(), reply: "", answered: false, at: Instant::now(), done: None });
            log.len() - 1
        };
        let set = |reply: &'static str, answered: bool| {
            let mut log = s.log();
            log[index].reply = reply;
            log[index].answered = answered;
            if reply != "hold" {
                log[index].done = Some(Instant::now());
            }
        };
        let now = s.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        s.max_in_flight.fetch_max(now, Ordering::SeqCst);
        let _leave = Leave(&s.in_flight);
        if path != "/v1/chat/completions" {
            set("error", false);
            let body = error_body(&format!("no route {path}"), "not_found");
            if write(conn.get_mut(), 404, &[], &body).await.is_err() || close {
                return;
            }
            continue;
        }
        if let Some(key) = &s.key
            && request.authorization.as_deref() != Some(&format!("Bearer {key}"))
        {
            set("unauthorized", false);
            let sent = request.authorization.clone().unwrap_or_default();
            let sent = sent.strip_prefix("Bearer ").unwrap_or(&sent);
            let body = error_body(&format!("Incorrect API key provided: {sent}"), "invalid_api_key");
            if write(conn.get_mut(), 401, &[], &body).await.is_err() || close {
                return;
            }
            continue;
        }
        if request.json.is_null() {
            set("error", false);
            if write(conn.get_mut(), 400, &[], &error_body("the body is not JSON", "invalid_request_error"))
                .await
                .is_err()
                || close
            {
                return;
            }
            continue;
        }
        let mut reply = (s.respond)(&request);
        if !s.latency.is_zero() {
            tokio::time::sleep(s.latency).await;
        }
        while let Reply::After(wait, r) = reply {
            tokio::time::sleep(wait).await;
            reply = *r;
        }
        let kind = reply.kind();
        let written = match reply {
            Reply::Completion { content, finish_reason, prompt_tokens, completion_tokens, headers } => {
                let body = completion(&request, index, &content, &finish_reason, prompt_tokens, completion_tokens);
                write(conn.get_mut(), 200, &headers, &body.to_string()).await
            }
            Reply::Error { status, message, headers } => {
                let body = error_body(&message, if status == 429 { "rate_limit_exceeded" } else { "server_error" });
                write(conn.get_mut(), status, &headers, &body).await
            }
            Reply::Malformed => {
                write(conn.get_mut(), 200, &[], "{\"id\":\"chatcmpl-x\",\"choices\":[{\"message\":{\"content\":\"cut")
                    .await
            }
            Reply::Drop => {
                set(kind, false);
                // Dropping the socket closes it.
                return;
            }
            Reply::Hold => {
                set(kind, false);
                // Until the server stops, which drops this task.
                std::future::pending::<()>().await;
                return;
            }
            Reply::After(..) => unreachable!("unwrapped above"),
        };
        set(kind, kind == "completion" && written.is_ok());
        if written.is_err() || close {
            return;
        }
    }
}

/// A chat completion's body.
fn completion(
    request: &Request,
    index: usize,
    content: &str,
    finish_reason: &str,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
) -> serde_json::Value {
    let prompt_tokens = prompt_tokens
        .unwrap_or_else(|| request.messages().iter().map(|(_, c)| c.split_whitespace().count() as u64 + 1).sum());
    let completion_tokens = completion_tokens.unwrap_or(content.split_whitespace().count() as u64);
    serde_json::json!({
        "id": format!("chatcmpl-{index}"),
        "object": "chat.completion",
        "created": 0,
        "model": request.json["model"],
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": finish_reason,
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    })
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A Batch API call: its status and JSON body.
fn batch_api(s: &Shared, method: &str, path: &str, content_type: Option<&str>, body: &str) -> (u16, String) {
    let not_found = |what: &str| (404, error_body(&format!("no such {what}"), "not_found"));
    let bad = |why: &str| (400, error_body(why, "invalid_request_error"));
    let parts: Vec<&str> = path.trim_start_matches("/v1/").split('/').collect();
    match (method, parts.as_slice()) {
        ("POST", ["files"]) => {
            let Some(boundary) = content_type.and_then(|c| c.split("boundary=").nth(1)) else {
                return bad("a file upload is multipart/form-data");
            };
            let (mut purpose, mut file) = (None, None);
            for part in body.split(&format!("--{}", boundary.trim_matches('"'))) {
                let Some((head, content)) = part.split_once("\r\n\r\n") else { continue };
                let content = content.strip_suffix("\r\n").unwrap_or(content);
                if head.contains("name=\"purpose\"") {
                    purpose = Some(content.to_owned());
                } else if head.contains("name=\"file\"") {
                    file = Some(content.to_owned());
                }
            }
            let (Some(purpose), Some(file)) = (purpose, file) else { return bad("missing `purpose` or `file`") };
            if purpose != "batch" {
                return bad("this server takes files for batches only");
            }
            let mut files = lock(&s.files);
            let id = format!("file-{}", files.len());
            let bytes = file.len();
            files.insert(id.clone(), file);
            let obj = serde_json::json!({"id": id, "object": "file", "bytes": bytes, "purpose": "batch", "filename": "batch.jsonl"});
            (200, obj.to_string())
        }
        ("GET", ["files", id, "content"]) => match lock(&s.files).get(*id) {
            Some(content) => (200, content.clone()),
            None => not_found("file"),
        },
        ("POST", ["batches"]) => {
            let Ok(req) = serde_json::from_str::<serde_json::Value>(body) else { return bad("the body is not JSON") };
            let Some(file_id) = req["input_file_id"].as_str() else { return bad("missing `input_file_id`") };
            if req["endpoint"] != "/v1/chat/completions" {
                return bad("`endpoint` must be /v1/chat/completions");
            }
            let Some(input) = lock(&s.files).get(file_id).cloned() else { return not_found("file") };
            let n = lock(&s.jobs).len();
            let end = s.batch_end.as_ref().map_or(BatchEnd::Completed, |f| f(n));
            let job = run_batch(s, n, file_id, &input, end);
            let obj = batch_object(s, &job);
            lock(&s.jobs).push(job);
            (200, obj.to_string())
        }
        ("GET", ["batches", id]) => match lock(&s.jobs).iter().find(|j| j.id == *id) {
            Some(job) => (200, batch_object(s, job).to_string()),
            None => not_found("batch"),
        },
        ("POST", ["batches", id, "cancel"]) => {
            let mut jobs = lock(&s.jobs);
            match jobs.iter_mut().find(|j| j.id == *id) {
                Some(job) => {
                    job.cancelled = true;
                    (200, batch_object(s, job).to_string())
                }
                None => not_found("batch"),
            }
        }
        _ => (404, error_body(&format!("no route {method} {path}"), "not_found")),
    }
}

/// Answers the lines of batch number `n` (those its end lets through), each logged and
/// counted as a request, and keeps its output and error files.
fn run_batch(s: &Shared, n: usize, file_id: &str, input: &str, end: BatchEnd) -> Job {
    let lines: Vec<&str> = input.lines().filter(|l| !l.trim().is_empty()).collect();
    let answered = match end {
        BatchEnd::Completed => lines.len(),
        BatchEnd::Failed(_) => 0,
        BatchEnd::Expired(k) => k.min(lines.len()),
    };
    let (mut output, mut errors) = (String::new(), String::new());
    for (i, line) in lines.iter().take(answered).enumerate() {
        let parsed: serde_json::Value = serde_json::from_str(line).unwrap_or(serde_json::Value::Null);
        let custom_id = parsed["custom_id"].clone();
        let body = parsed["body"].to_string();
        let attempt = {
            let mut c = lock(&s.counts);
            let k = c.entry(body.clone()).or_insert(0);
            *k += 1;
            *k
        };
        let request = Request { body, json: parsed["body"].clone(), authorization: None, attempt };
        let mut reply = (s.respond)(&request);
        while let Reply::After(_, r) = reply {
            reply = *r;
        }
        let index = lock(&s.log).len();
        let id = format!("batch_req_{n}_{i}");
        let (kind, answered, out, target) = match reply {
            Reply::Completion { content, finish_reason, prompt_tokens, completion_tokens, .. } => {
                let body = completion(&request, index, &content, &finish_reason, prompt_tokens, completion_tokens);
                let line = serde_json::json!({"id": id, "custom_id": custom_id, "response": {"status_code": 200, "request_id": format!("req_{index}"), "body": body}, "error": null});
                ("completion", true, line, &mut output)
            }
            Reply::Error { status, message, .. } => {
                let line = serde_json::json!({"id": id, "custom_id": custom_id, "response": {"status_code": status, "request_id": format!("req_{index}"), "body": {"error": {"message": message, "type": "error"}}}, "error": null});
                ("error", false, line, &mut errors)
            }
            other => {
                let line = serde_json::json!({"id": id, "custom_id": custom_id, "response": null, "error": {"code": "server_error", "message": format!("the request failed ({})", other.kind())}});
                ("error", false, line, &mut errors)
            }
        };
        target.push_str(&out.to_string());
        target.push('\n');
        let now = Instant::now();
        lock(&s.log).push(Logged { request, reply: kind, answered, at: now, done: Some(now) });
    }
    let mut files = lock(&s.files);
    let mut keep = |text: String, count: usize| {
        (count > 0).then(|| {
            let id = format!("file-{}", files.len());
            files.insert(id.clone(), text);
            (id, count)
        })
    };
    let ok = output.lines().count();
    let failed = errors.lines().count();
    Job {
        id: format!("batch_{n}"),
        input_file_id: file_id.to_owned(),
        created: Instant::now(),
        end,
        output: keep(output, ok),
        errors: keep(errors, failed),
        total: lines.len(),
        cancelled: false,
    }
}

/// A batch as the API shows it now.
fn batch_object(s: &Shared, job: &Job) -> serde_json::Value {
    let done = job.created.elapsed() >= s.batch_delay || s.finished.load(Ordering::SeqCst);
    let (status, errors) = match (&job.end, done, job.cancelled) {
        (BatchEnd::Failed(why), _, _) => (
            "failed",
            serde_json::json!({"object": "list", "data": [{"code": "invalid_request", "message": why, "line": null}]}),
        ),
        (_, _, true) => ("cancelled", serde_json::Value::Null),
        (_, false, _) => ("in_progress", serde_json::Value::Null),
        (BatchEnd::Completed, true, _) => ("completed", serde_json::Value::Null),
        (BatchEnd::Expired(_), true, _) => ("expired", serde_json::Value::Null),
    };
    let finished = done && status != "failed";
    let (ok, failed) = (job.output.as_ref().map_or(0, |o| o.1), job.errors.as_ref().map_or(0, |e| e.1));
    serde_json::json!({
        "id": job.id,
        "object": "batch",
        "endpoint": "/v1/chat/completions",
        "errors": errors,
        "input_file_id": job.input_file_id,
        "completion_window": "24h",
        "status": status,
        "output_file_id": if finished { job.output.as_ref().map(|o| o.0.clone()) } else { None },
        "error_file_id": if finished { job.errors.as_ref().map(|e| e.0.clone()) } else { None },
        "request_counts": {
            "total": job.total,
            "completed": if finished { ok } else { 0 },
            "failed": if finished { failed } else { 0 },
        },
    })
}

/// Counts a request out of flight when its handling ends, however it ends.
struct Leave<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn error_body(message: &str, code: &str) -> String {
    serde_json::json!({"error": {"message": message, "type": "error", "code": code}}).to_string()
}

/// A request as read off the wire: its method, path, lower-cased headers and body.
type Raw = (String, String, Vec<(String, String)>, String);

/// Reads one request (`Content-Length` bodies only); `None` when the client closed the
/// connection or sent something else.
async fn read_request(input: &mut (impl AsyncBufRead + Unpin)) -> Option<Raw> {
    let mut line = String::new();
    input.read_line(&mut line).await.ok()?;
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next()?.to_owned(), parts.next()?.to_owned());
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        input.read_line(&mut h).await.ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_owned()));
    }
    let len: usize = headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.parse().ok()).unwrap_or(0);
    let mut body = vec![0u8; len];
    input.read_exact(&mut body).await.ok()?;
    Some((method, path, headers, String::from_utf8_lossy(&body).into_owned()))
}

async fn write(out: &mut TcpStream, status: u16, headers: &[(String, String)], body: &str) -> std::io::Result<()> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut text =
        format!("HTTP/1.1 {status} {reason}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n", body.len());
    for (k, v) in headers {
        text.push_str(&format!("{k}: {v}\r\n"));
    }
    text.push_str("\r\n");
    text.push_str(body);
    out.write_all(text.as_bytes()).await?;
    out.flush().await
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;

    /// A minimal client: one request on a fresh connection, the raw response back.
    fn post(url: &str, body: &str) -> String {
        let addr = url.trim_start_matches("http://").trim_end_matches("/v1");
        let mut c = TcpStream::connect(addr).unwrap();
        let req = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        c.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        out
    }

    const BODY: &str =
        r#"{"model":"m","messages":[{"role":"system","content":"be brief"},{"role":"user","content":"hello there"}]}"#;

    #[test]
    fn answers_in_the_openai_format_and_counts_by_body() {
        let server =
            TestServer::start(|r| if r.attempt == 1 { Reply::error(500, "boom") } else { Reply::text("hi") }).unwrap();
        let first = post(&server.url(), BODY);
        assert!(first.starts_with("HTTP/1.1 500"), "{first}");
        let second = post(&server.url(), BODY);
        assert!(second.starts_with("HTTP/1.1 200"), "{second}");
        let json: serde_json::Value = serde_json::from_str(second.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(json["choices"][0]["message"]["content"], "hi");
        assert_eq!(json["choices"][0]["finish_reason"], "stop");
        assert_eq!(json["usage"]["prompt_tokens"], 2 + 1 + 2 + 1);
        assert_eq!(json["usage"]["completion_tokens"], 1);
        assert_eq!(json["model"], "m");
        assert_eq!(server.counts()[BODY], 2);
        assert_eq!((server.total(), server.answered()), (2, 1));
        // Two connections, one after the other.
        assert_eq!(server.connections(), 2);
        let log = server.requests();
        assert_eq!(log[0].request.prompt(), "hello there");
        assert_eq!(log[0].request.system(), Some("be brief"));
        assert_eq!((log[0].reply, log[1].reply), ("error", "completion"));
    }

    #[test]
    fn faults_are_what_they_say() {
        let server = TestServer::start(|r| match r.prompt() {
            "429" => Reply::too_many_requests("2"),
            "bad" => Reply::Malformed,
            "drop" => Reply::Drop,
            _ => Reply::truncated("cut off"),
        })
        .unwrap();
        let body = |p: &str| BODY.replace("hello there", p);
        let r = post(&server.url(), &body("429"));
        assert!(r.starts_with("HTTP/1.1 429") && r.contains("Retry-After: 2"), "{r}");
        let r = post(&server.url(), &body("bad"));
        assert!(serde_json::from_str::<serde_json::Value>(r.split("\r\n\r\n").nth(1).unwrap()).is_err());
        assert_eq!(post(&server.url(), &body("drop")), "");
        let r = post(&server.url(), &body("x"));
        assert!(r.contains("\"finish_reason\":\"length\""), "{r}");
        assert_eq!(server.answered(), 1);
    }

    /// One request of any method on a fresh connection; the status and body back.
    fn call(url: &str, method: &str, path: &str, content_type: &str, body: &str) -> (u16, String) {
        let addr = url.trim_start_matches("http://").trim_end_matches("/v1");
        let mut c = TcpStream::connect(addr).unwrap();
        let req = format!(
            "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        );
        c.write_all(req.as_bytes()).unwrap();
        let mut out = String::new();
        let _ = c.read_to_string(&mut out);
        let status = out.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
    }

    fn upload(url: &str, jsonl: &str) -> String {
        let body = format!(
            "--XX\r\ncontent-disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--XX\r\ncontent-disposition: form-data; name=\"file\"; filename=\"b.jsonl\"\r\ncontent-type: application/jsonl\r\n\r\n{jsonl}\r\n--XX--\r\n"
        );
        let (status, out) = call(url, "POST", "/v1/files", "multipart/form-data; boundary=XX", &body);
        assert_eq!(status, 200, "{out}");
        serde_json::from_str::<serde_json::Value>(&out).unwrap()["id"].as_str().unwrap().to_owned()
    }

    fn line(custom_id: &str, prompt: &str) -> String {
        serde_json::json!({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": prompt}]}})
        .to_string()
    }

    fn json(text: &str) -> serde_json::Value {
        serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
    }

    #[test]
    fn batches_answer_every_line_once_after_the_delay_and_fail_or_expire_on_demand() {
        let server = TestServer::builder()
            .batch_delay(Duration::from_millis(200))
            .batch_end(|n| match n {
                0 => BatchEnd::Completed,
                1 => BatchEnd::Failed("bad model".into()),
                _ => BatchEnd::Expired(1),
            })
            .start(|r| {
                if r.prompt() == "no" { Reply::error(400, "refused") } else { Reply::text(r.prompt().to_uppercase()) }
            })
            .unwrap();
        let url = server.url();
        let input = [line("a", "hi"), line("b", "no"), line("c", "yo")].join("\n");
        let file = upload(&url, &input);
        let create =
            format!(r#"{{"input_file_id":"{file}","endpoint":"/v1/chat/completions","completion_window":"24h"}}"#);
        let (status, out) = call(&url, "POST", "/v1/batches", "application/json", &create);
        assert_eq!(status, 200, "{out}");
        let batch = json(&out);
        assert_eq!(batch["status"], "in_progress");
        assert!(batch["output_file_id"].is_null());
        // Each line is a request, answered once, when the batch is made.
        assert_eq!((server.total(), server.answered(), server.batches()), (3, 2, 1));
        std::thread::sleep(Duration::from_millis(250));
        let done = json(&call(&url, "GET", "/v1/batches/batch_0", "", "").1);
        assert_eq!(done["status"], "completed");
        assert_eq!(done["request_counts"], serde_json::json!({"total": 3, "completed": 2, "failed": 1}));
        let output =
            call(&url, "GET", &format!("/v1/files/{}/content", done["output_file_id"].as_str().unwrap()), "", "").1;
        let lines: Vec<serde_json::Value> = output.lines().map(json).collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["custom_id"], "a");
        assert_eq!(lines[0]["response"]["body"]["choices"][0]["message"]["content"], "HI");
        let errors =
            call(&url, "GET", &format!("/v1/files/{}/content", done["error_file_id"].as_str().unwrap()), "", "").1;
        let e = json(errors.lines().next().unwrap());
        assert_eq!((e["custom_id"].as_str(), e["response"]["status_code"].as_u64()), (Some("b"), Some(400)));
        // The second batch fails at once, answering nothing; the third answers one line.
        let failed = json(&call(&url, "POST", "/v1/batches", "application/json", &create).1);
        assert_eq!(failed["status"], "failed");
        assert_eq!(failed["errors"]["data"][0]["message"], "bad model");
        assert_eq!(server.total(), 3);
        call(&url, "POST", "/v1/batches", "application/json", &create);
        assert_eq!(server.total(), 4);
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(json(&call(&url, "GET", "/v1/batches/batch_2", "", "").1)["status"], "expired");
        assert_eq!(call(&url, "GET", "/v1/batches/batch_9", "", "").0, 404);
        assert_eq!(server.api_calls()[..2], ["POST /v1/files", "POST /v1/batches"]);
    }

    #[test]
    fn a_wrong_key_is_refused_and_repeated_back() {
        let server = TestServer::builder().api_key("sk-right").start(|_| Reply::text("ok")).unwrap();
        let r = post(&server.url(), BODY);
        assert!(r.starts_with("HTTP/1.1 401"), "{r}");
        assert_eq!(server.requests()[0].reply, "unauthorized");
    }
}
