//! Inputs and exports in object storage: `s3://bucket/key` (Amazon S3, or any
//! S3-compatible store through an endpoint URL: MinIO, R2, GCS in S3 mode) and
//! `http://` / `https://` URLs, through the `object_store` crate's clients (SigV4 signing
//! with ring, reqwest with rustls; no hand-written signing).
//!
//! A remote input is carried through the loaders as a `PathBuf` holding its URL (so that
//! globs, shards and messages work as they do for files), and told apart by its scheme
//! ([`is_remote`]). Its identity for the cache key is what the store says of it when the
//! pipeline is built (a HEAD, or the listing of a glob): its ETag or version id and its
//! size, never its content, so `weave plan` downloads nothing. Reads are streamed (a GET
//! read a chunk at a time, with the ETag of the build as a precondition, so that an object
//! replaced since is an error rather than data the key does not describe); Parquet is read
//! by ranges (its footer, then its row groups).
//!
//! An export to a remote URL is written, as a local export is, into a temporary file (in
//! the system's temporary folder), and uploaded by a multipart upload when the export
//! commits; the upload is completed only when every part is in, and aborted on an error.
//! A process killed during the upload leaves an incomplete multipart upload, which S3
//! never shows as an object.
//!
//! Requests run on a small tokio runtime of this module's own (two threads for the whole
//! process, started at the first remote URL), and are retried with backoff on transient
//! failures (5xx answers, timeouts, broken connections) by the client.
//!
//! Credentials come from the environment (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
//! `AWS_SESSION_TOKEN`), else from a profile (`AWS_PROFILE`, or `default`, in
//! `~/.aws/credentials` and `~/.aws/config`); they never appear in a message: every error
//! text from the store is scrubbed of them ([`scrub`]).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::http::HttpBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, RetryConfig};
use weave_core::StepError;

/// Whether `raw` (a `path` key as written) names a remote object rather than a file.
pub(crate) fn is_url(raw: &str) -> bool {
    ["s3://", "http://", "https://"].iter().any(|s| raw.len() > s.len() && raw[..s.len()].eq_ignore_ascii_case(s))
}

/// Whether `path` is a remote object's URL (see the module's documentation).
pub(crate) fn is_remote(path: &Path) -> bool {
    path.to_str().is_some_and(is_url)
}

/// A remote object as the store described it when the pipeline was built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Object {
    /// Its URL, as the pipeline names it (a glob's match spelt with the glob's scheme and bucket).
    pub(crate) url: String,
    /// Its size in bytes.
    pub(crate) size: u64,
    /// Its ETag (or the version id, when the bucket keeps versions); empty when the server
    /// gave neither (a plain web server may not).
    pub(crate) version: String,
}

/// Where a URL points: the store (one per bucket or web server) and the object's path in it.
struct Location {
    store: Arc<dyn ObjectStore>,
    path: ObjectPath,
    /// `s3` or `http`, which decides what a listing can do.
    s3: bool,
}

/// The runtime the requests run on (see the module's documentation).
fn runtime() -> Result<&'static tokio::runtime::Runtime, StepError> {
    static RUNTIME: OnceLock<Result<tokio::runtime::Runtime, String>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            // reqwest's rustls is built without a provider of its own (the workspace keeps
            // aws-lc out): ring is the process's. Another part of the program may have
            // installed it first, which is as good.
            let _ = rustls::crypto::ring::default_provider().install_default();
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get()).min(2);
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("weave-io-remote")
                .enable_io()
                .enable_time()
                .build()
                .map_err(|e| format!("cannot start the object storage client's threads: {e}"))
        })
        .as_ref()
        .map_err(|e| StepError::fatal(e.clone()))
}

/// Secrets that must never be shown: every credential a store was built with.
fn secrets() -> &'static Mutex<Vec<String>> {
    static SECRETS: OnceLock<Mutex<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| Mutex::new(Vec::new()))
}

/// `text` with every credential the stores were built with replaced by `***`. S3's error
/// answers name the access key they refused, and a library's message may quote more: every
/// message made from a store's error goes through here before it is shown or kept.
pub(crate) fn scrub(text: &str) -> String {
    let mut out = text.to_owned();
    for s in secrets().lock().unwrap_or_else(std::sync::PoisonError::into_inner).iter() {
        if !s.is_empty() {
            out = out.replace(s.as_str(), "***");
        }
    }
    out
}

fn remember_secret(s: &str) {
    let mut all = secrets().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    if !all.iter().any(|x| x == s) {
        all.push(s.to_owned());
    }
}

/// What a store said, as one line a user can act on, about `what` (`read s3://b/k`).
fn store_error(what: &str, e: &object_store::Error) -> String {
    let detail = scrub(&weave_core::error_line(e));
    match e {
        object_store::Error::NotFound { .. } => format!("cannot {what}: there is no such object (or bucket)"),
        object_store::Error::PermissionDenied { .. } => {
            format!("cannot {what}: access denied (check the credentials' permissions): {detail}")
        }
        object_store::Error::Unauthenticated { .. } => {
            format!("cannot {what}: the credentials were refused (check AWS_ACCESS_KEY_ID, AWS_PROFILE): {detail}")
        }
        object_store::Error::Precondition { .. } => format!(
            "cannot {what}: the object changed since the pipeline was built (its ETag differs); run again to read the new version"
        ),
        _ if detail.contains("NoSuchBucket") => format!("cannot {what}: there is no such bucket"),
        _ if detail.contains("AccessDenied") || detail.contains("status: 403") => {
            format!("cannot {what}: access denied (check the credentials' permissions)")
        }
        _ if detail.contains("InvalidAccessKeyId") || detail.contains("SignatureDoesNotMatch") => {
            format!("cannot {what}: the credentials were refused (check AWS_ACCESS_KEY_ID, AWS_PROFILE)")
        }
        _ => format!("cannot {what}: {detail}"),
    }
}

/// A store error as a step's error: a missing object, refused credentials and the like are
/// the user's to fix (fatal); the rest are the environment's (the client already retried).
fn step_error(what: &str, e: &object_store::Error) -> StepError {
    let text = store_error(what, e);
    match e {
        object_store::Error::Generic { .. } => StepError::environment(text, std::io::Error::other("object storage")),
        _ => StepError::fatal(text),
    }
}

/// The `[storage]` settings of the pipelines that named each bucket (`s3://bucket`), noted
/// when they were built ([`configure`]): the reads and uploads of a run, which know only
/// the URL, use them.
fn settings() -> &'static Mutex<HashMap<String, weave_core::StorageSettings>> {
    static SETTINGS: OnceLock<Mutex<HashMap<String, weave_core::StorageSettings>>> = OnceLock::new();
    SETTINGS.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Notes the pipeline's `[storage]` settings for the bucket of `url` (see [`settings`]).
pub(crate) fn configure(url: &str, storage: &weave_core::StorageSettings) {
    if let Some(id) = store_id(url) {
        settings().lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(id, storage.clone());
    }
}

/// `s3://bucket` or `https://host` of `url`.
fn store_id(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    Some(format!("{}://{}", scheme.to_ascii_lowercase(), rest.split('/').next()?))
}

/// The store and path of `url`, building (once per bucket or web server, and settings) the client.
fn locate(url: &str) -> Result<Location, String> {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<dyn ObjectStore>>>> = OnceLock::new();
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("`{url}` is not a URL"))?;
    let scheme = scheme.to_ascii_lowercase();
    let (authority, key) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        // Not echoed: what comes before the `@` may be a password.
        return Err(format!(
            "a {scheme}:// URL must not hold credentials (user:password@): set them in the environment or a profile"
        ));
    }
    let shown = format!("{scheme}://{authority}/{key}");
    if key.contains(['?', '#']) {
        return Err(format!("{shown}: URLs with a query string or a fragment are not supported"));
    }
    if authority.is_empty() {
        return Err(format!("`{url}` names no bucket or host"));
    }
    if key.is_empty() || key.ends_with('/') {
        return Err(format!("`{url}` names no object (a key after the bucket or host)"));
    }
    let path = ObjectPath::parse(key).map_err(|e| format!("`{url}` is not a valid object name: {e}"))?;
    // The clients are built with the TLS provider the runtime's start installs.
    runtime().map_err(|e| e.to_string())?;
    let s3 = scheme == "s3";
    let id = format!("{scheme}://{authority}");
    let storage =
        settings().lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&id).cloned().unwrap_or_default();
    let stores = STORES.get_or_init(|| Mutex::new(HashMap::new()));
    let mut stores = stores.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let cached = format!("{id} {:?} {:?}", storage.endpoint, storage.region);
    let store = match stores.get(&cached) {
        Some(s) => s.clone(),
        None => {
            let built: Arc<dyn ObjectStore> = if s3 { s3_store(authority, &storage)? } else { http_store(&id)? };
            stores.insert(cached, built.clone());
            built
        }
    };
    Ok(Location { store, path, s3 })
}

/// Timeouts and retries for every store: a connection must open within 5 s and an answer
/// keep coming (30 s without a byte is a failure), but a long download has no limit as a
/// whole (a loader may read a large object slowly, at the pipeline's pace). Transient
/// failures are retried 5 times, backing off from 100 ms, for at most 2 minutes.
fn client_options() -> (ClientOptions, RetryConfig) {
    let options = ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_read_timeout(Duration::from_secs(30))
        .with_timeout_disabled();
    let retry = RetryConfig { max_retries: 5, retry_timeout: Duration::from_secs(120), ..RetryConfig::default() };
    (options, retry)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// A named profile's settings from the AWS CLI's files: the credentials file's section
/// `[NAME]` and the config file's `[profile NAME]` (`[default]` for the default profile).
#[derive(Debug, Default)]
struct Profile {
    values: HashMap<String, String>,
    found: bool,
}

impl Profile {
    fn load(name: &str) -> Profile {
        let home = env("HOME").map(PathBuf::from);
        let file =
            |var: &str, default: &str| env(var).map(PathBuf::from).or_else(|| home.as_ref().map(|h| h.join(default)));
        Profile::read(
            name,
            file("AWS_CONFIG_FILE", ".aws/config"),
            file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"),
        )
    }

    /// The profile `name` from the config file `config` and the credentials file `credentials`.
    fn read(name: &str, config: Option<PathBuf>, credentials: Option<PathBuf>) -> Profile {
        let mut profile = Profile::default();
        // The credentials file wins over the config file, as in the AWS CLI.
        let config_section = if name == "default" { "default".to_owned() } else { format!("profile {name}") };
        for (path, section) in [(config, config_section.as_str()), (credentials, name)] {
            let Some(text) = path.and_then(|p| std::fs::read_to_string(p).ok()) else { continue };
            let mut inside = false;
            for line in text.lines() {
                let line = line.trim();
                if line.is_empty() || line.starts_with(['#', ';']) {
                    continue;
                }
                if let Some(s) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                    inside = s.trim() == section;
                    profile.found |= inside;
                } else if inside && let Some((k, v)) = line.split_once('=') {
                    profile.values.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
                }
            }
        }
        profile
    }

    fn get(&self, key: &str) -> Option<String> {
        self.values.get(key).filter(|v| !v.is_empty()).cloned()
    }
}

/// The client of an S3 bucket, with the pipeline's `[storage]` settings, else those of
/// the environment and the profile (see the module's documentation): a custom endpoint
/// (`[storage] endpoint`, `AWS_ENDPOINT_URL_S3`, `AWS_ENDPOINT_URL`, or a profile's
/// `endpoint_url`) is addressed path-style (`endpoint/bucket/key`), as MinIO and most
/// S3-compatible stores expect.
fn s3_store(bucket: &str, storage: &weave_core::StorageSettings) -> Result<Arc<dyn ObjectStore>, String> {
    let named = env("AWS_PROFILE");
    let profile = Profile::load(named.as_deref().unwrap_or("default"));
    if let Some(name) = &named
        && !profile.found
    {
        return Err(format!(
            "AWS_PROFILE names the profile `{name}`, which is in neither ~/.aws/credentials nor ~/.aws/config"
        ));
    }
    let mut b = AmazonS3Builder::new().with_bucket_name(bucket);
    let (key, secret) = (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"));
    let from_profile = (profile.get("aws_access_key_id"), profile.get("aws_secret_access_key"));
    let skip = env("AWS_SKIP_SIGNATURE").is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1"));
    let mut keys = |k: String, s: String, token: Option<String>| {
        for x in [&k, &s].into_iter().chain(token.as_ref()) {
            remember_secret(x);
        }
        b = std::mem::take(&mut b).with_access_key_id(k).with_secret_access_key(s);
        if let Some(t) = token {
            b = std::mem::take(&mut b).with_token(t);
        }
    };
    if let (Some(k), Some(s)) = (key, secret) {
        keys(k, s, env("AWS_SESSION_TOKEN"));
    } else if let (Some(k), Some(s)) = from_profile {
        keys(k, s, profile.get("aws_session_token"));
    } else if skip {
        b = b.with_skip_signature(true);
    } else if [
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_METADATA_ENDPOINT",
    ]
    .iter()
    .any(|v| env(v).is_some())
    {
        // Credentials the client fetches itself (a web identity, a container's, an
        // instance's): the variables that say where are read as the AWS SDKs read them.
        for (k, v) in std::env::vars() {
            if k.starts_with("AWS_")
                && let Ok(config) = k.to_ascii_lowercase().parse()
            {
                b = b.with_config(config, v);
            }
        }
    } else {
        return Err(format!(
            "no credentials for s3://{bucket}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (a profile in ~/.aws/credentials), or AWS_SKIP_SIGNATURE=true for a public bucket"
        ));
    }
    let region = storage
        .region
        .clone()
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .or_else(|| profile.get("region"));
    b = b.with_region(region.unwrap_or_else(|| "us-east-1".to_owned()));
    let endpoint = storage
        .endpoint
        .clone()
        .or_else(|| env("AWS_ENDPOINT_URL_S3"))
        .or_else(|| env("AWS_ENDPOINT_URL"))
        .or_else(|| profile.get("endpoint_url"));
    let (mut options, retry) = client_options();
    if let Some(endpoint) = endpoint {
        if endpoint.to_ascii_lowercase().starts_with("http://") {
            options = options.with_allow_http(true);
        }
        b = b.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
    }
    let store =
        b.with_client_options(options).with_retry(retry).build().map_err(|e| {
            format!("cannot set up the client of s3://{bucket}: {}", scrub(&weave_core::error_line(&e)))
        })?;
    Ok(Arc::new(store))
}

/// The client of a web server (`http://host:port` or `https://host`).
fn http_store(base: &str) -> Result<Arc<dyn ObjectStore>, String> {
    let (mut options, retry) = client_options();
    if base.starts_with("http://") {
        options = options.with_allow_http(true);
    }
    let store = HttpBuilder::new()
        .with_url(base)
        .with_client_options(options)
        .with_retry(retry)
        .build()
        .map_err(|e| format!("cannot set up the client of {base}: {}", scrub(&weave_core::error_line(&e))))?;
    Ok(Arc::new(store))
}

fn object_of(url: String, meta: &object_store::ObjectMeta) -> Object {
    let version = meta.version.clone().or_else(|| meta.e_tag.clone()).unwrap_or_default();
    Object { url, size: meta.size, version }
}

/// What objects the `path` key `raw` names: the object itself (a HEAD), or, for a pattern
/// with `*`, `?` or `[` in its key, every object of the bucket under the pattern's literal
/// prefix whose key matches it (`*` within one `/`-separated part, `**` across them, no
/// leading dot matched by a wildcard, as for local globs), sorted by key. A pattern that
/// matches nothing is an error naming it. Nothing is downloaded.
pub(crate) fn resolve(raw: &str) -> Result<Vec<Object>, String> {
    let (scheme_authority, key) = match raw.split_once("://").and_then(|(_, r)| r.split_once('/')) {
        Some((auth, key)) => (&raw[..raw.len() - key.len() - 1 - auth.len()], key),
        None => return Err(format!("`{raw}` names no object (a key after the bucket or host)")),
    };
    let _ = scheme_authority;
    if !key.contains(['*', '?', '[']) {
        let loc = locate(raw)?;
        let rt = runtime().map_err(|e| e.to_string())?;
        let meta = rt.block_on(loc.store.head(&loc.path)).map_err(|e| {
            // A HEAD's 404 has no body to say whether the bucket or the key is missing: a
            // listing of the key's folder tells.
            if matches!(e, object_store::Error::NotFound { .. }) && loc.s3 {
                let listed = rt.block_on(loc.store.list_with_delimiter(Some(&loc.path)));
                if let Err(l) = listed
                    && (matches!(l, object_store::Error::NotFound { .. })
                        || weave_core::error_line(&l).contains("NoSuchBucket"))
                {
                    let bucket = raw.split("://").nth(1).and_then(|r| r.split('/').next()).unwrap_or_default();
                    return format!("cannot look at {raw}: there is no bucket `{bucket}`");
                }
                return format!("cannot look at {raw}: there is no such object");
            }
            store_error(&format!("look at {raw}"), &e)
        })?;
        return Ok(vec![object_of(raw.to_owned(), &meta)]);
    }
    let base = &raw[..raw.len() - key.len()];
    let literal = key.find(['*', '?', '[']).map_or(key, |i| &key[..i]);
    let prefix = &literal[..literal.rfind('/').map_or(0, |i| i + 1)];
    // A placeholder object name to reach the store; listing takes the prefix only.
    let loc = locate(&format!("{base}{}", if prefix.is_empty() { "x" } else { prefix.trim_end_matches('/') }))?;
    if !loc.s3 {
        return Err(format!("`{raw}`: a web server cannot be listed, so an http(s) URL cannot be a glob pattern"));
    }
    let pattern = glob::Pattern::new(key).map_err(|e| format!("`path` is not a valid glob pattern: {}", e.msg))?;
    let options =
        glob::MatchOptions { case_sensitive: true, require_literal_separator: true, require_literal_leading_dot: true };
    let list_prefix = (!prefix.is_empty()).then(|| ObjectPath::from(prefix.trim_end_matches('/')));
    let metas: Vec<object_store::ObjectMeta> = runtime()
        .map_err(|e| e.to_string())?
        .block_on(async { loc.store.list(list_prefix.as_ref()).collect::<Vec<_>>().await })
        .into_iter()
        .collect::<Result<_, _>>()
        .map_err(|e| store_error(&format!("list {base}{prefix}"), &e))?;
    let mut out: Vec<Object> = metas
        .iter()
        .filter(|m| pattern.matches_with(m.location.as_ref(), options))
        .map(|m| object_of(format!("{base}{}", m.location), m))
        .collect();
    if out.is_empty() {
        return Err(format!("no object matches the pattern `{raw}` (listed {base}{prefix})"));
    }
    out.sort_by(|a, b| a.url.cmp(&b.url));
    Ok(out)
}

/// What the build found of each object, by URL: its size and version, so that a run reads
/// the version the cache key describes and a shard's share is worked out without asking again.
fn known() -> &'static Mutex<HashMap<String, Object>> {
    static KNOWN: OnceLock<Mutex<HashMap<String, Object>>> = OnceLock::new();
    KNOWN.get_or_init(|| Mutex::new(HashMap::new()))
}

/// Notes what the build found of `objects` (see [`known`]).
pub(crate) fn remember(objects: &[Object]) {
    let mut k = known().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    for o in objects {
        k.insert(o.url.clone(), o.clone());
    }
}

/// What is known of the object at `path`, asking the store when the build did not.
fn object(path: &Path) -> Result<Object, StepError> {
    let url = path.to_string_lossy().into_owned();
    if let Some(o) = known().lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&url) {
        return Ok(o.clone());
    }
    let found = resolve(&url).map_err(StepError::fatal)?;
    remember(&found);
    found.into_iter().next().ok_or_else(|| StepError::fatal(format!("no object at {url}")))
}

/// The identity of each remote object of `paths` for the cache key (see
/// `input::config`): its URL, size and version, as the build found them.
pub(crate) fn identities(paths: &[PathBuf]) -> Vec<serde_json::Value> {
    let known = known().lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    paths
        .iter()
        .filter(|p| is_remote(p))
        .map(|p| {
            let url = p.to_string_lossy();
            match known.get(url.as_ref()) {
                Some(o) => serde_json::json!([o.url, o.size, o.version]),
                None => serde_json::json!([url]),
            }
        })
        .collect()
}

/// The size of the object at `path`, in bytes.
pub(crate) fn size(path: &Path) -> Result<u64, StepError> {
    Ok(object(path)?.size)
}

/// The GET options that read the version the build saw, from byte `start` on.
fn get_options(o: &Object, range: Option<GetRange>) -> GetOptions {
    let mut opts = GetOptions::default();
    // A web server's ETag may be weak (`W/"..."`), which `If-Match` does not take.
    if !o.version.is_empty() && !o.version.starts_with("W/") && o.url.starts_with("s3://") {
        opts.if_match = Some(o.version.clone());
    }
    opts.range = range;
    opts
}

/// The bytes of the object at `path` from byte `start` on, streamed: a GET whose body is
/// read a chunk at a time as the reader asks for more.
pub(crate) fn open(path: &Path, start: u64) -> Result<Box<dyn Read + Send>, StepError> {
    let o = object(path)?;
    let loc = locate(&o.url).map_err(StepError::fatal)?;
    let rt = runtime()?;
    if start >= o.size {
        return Ok(Box::new(std::io::empty()));
    }
    let range = (start > 0).then_some(GetRange::Offset(start));
    let got = rt
        .block_on(loc.store.get_opts(&loc.path, get_options(&o, range)))
        .map_err(|e| step_error(&format!("read {}", o.url), &e))?;
    Ok(Box::new(Body { stream: got.into_stream(), chunk: bytes::Bytes::new(), url: o.url }))
}

/// A GET's body as a reader (see [`open`]).
struct Body {
    stream: futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>,
    chunk: bytes::Bytes,
    url: String,
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            let rt = runtime().map_err(|e| std::io::Error::other(e.to_string()))?;
            match rt.block_on(self.stream.next()) {
                None => return Ok(0),
                Some(Ok(b)) => self.chunk = b,
                Some(Err(e)) => return Err(std::io::Error::other(store_error(&format!("read {}", self.url), &e))),
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk[..n]);
        self.chunk = self.chunk.slice(n..);
        Ok(n)
    }
}

/// Bytes `range` of the object at `path`, in memory (a Parquet footer or column chunk).
pub(crate) fn read_range(path: &Path, range: std::ops::Range<u64>) -> Result<bytes::Bytes, StepError> {
    let o = object(path)?;
    let loc = locate(&o.url).map_err(StepError::fatal)?;
    let rt = runtime()?;
    let got = rt
        .block_on(async {
            let r = loc.store.get_opts(&loc.path, get_options(&o, Some(GetRange::Bounded(range)))).await?;
            r.bytes().await
        })
        .map_err(|e| step_error(&format!("read {}", o.url), &e))?;
    Ok(got)
}

/// A remote Parquet file, read by ranges: the footer's bytes, then each column chunk's,
/// each a ranged GET (never the whole object unless every column is read), and as a
/// seekable reader with a small read-ahead (the footer check reads it so).
#[cfg(feature = "parquet")]
pub(crate) struct RemoteFile {
    path: PathBuf,
    size: u64,
    pos: u64,
    /// Bytes read ahead, from `ahead_at`.
    ahead: bytes::Bytes,
    ahead_at: u64,
}

#[cfg(feature = "parquet")]
impl RemoteFile {
    /// The object at `path` (its size as the build found it).
    pub(crate) fn open(path: &Path) -> Result<RemoteFile, StepError> {
        let size = size(path)?;
        Ok(RemoteFile { path: path.to_path_buf(), size, pos: 0, ahead: bytes::Bytes::new(), ahead_at: 0 })
    }
}

#[cfg(feature = "parquet")]
impl Read for RemoteFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        let inside = self.pos >= self.ahead_at && self.pos < self.ahead_at + self.ahead.len() as u64;
        if !inside {
            let end = self.size.min(self.pos + (buf.len() as u64).max(64 << 10));
            self.ahead = read_range(&self.path, self.pos..end).map_err(|e| std::io::Error::other(e.to_string()))?;
            self.ahead_at = self.pos;
        }
        let from = usize::try_from(self.pos - self.ahead_at).unwrap_or(usize::MAX);
        let n = buf.len().min(self.ahead.len() - from);
        buf[..n].copy_from_slice(&self.ahead[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(feature = "parquet")]
impl std::io::Seek for RemoteFile {
    fn seek(&mut self, to: std::io::SeekFrom) -> std::io::Result<u64> {
        let at = match to {
            std::io::SeekFrom::Start(n) => Some(n),
            std::io::SeekFrom::End(d) => self.size.checked_add_signed(d),
            std::io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = at.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

#[cfg(feature = "parquet")]
impl parquet::file::reader::Length for RemoteFile {
    fn len(&self) -> u64 {
        self.size
    }
}

#[cfg(feature = "parquet")]
impl parquet::file::reader::ChunkReader for RemoteFile {
    type T = Box<dyn Read + Send>;

    fn get_read(&self, start: u64) -> parquet::errors::Result<Self::T> {
        open(&self.path, start).map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
    }

    fn get_bytes(&self, start: u64, length: usize) -> parquet::errors::Result<bytes::Bytes> {
        read_range(&self.path, start..start + length as u64)
            .map_err(|e| parquet::errors::ParquetError::External(Box::new(e)))
    }
}

/// Whether `url` is a place an export can write: an `s3://` URL (a web server takes no uploads).
pub(crate) fn check_target(url: &str) -> Result<(), String> {
    if !url.get(..5).is_some_and(|s| s.eq_ignore_ascii_case("s3://")) {
        return Err(format!("`{url}`: an export can write to s3:// URLs only (a web server takes no uploads)"));
    }
    let probe = url.replace(['{', '}'], "");
    locate(&probe).map(|_| ())
}

/// Uploads the local file `from` to the object at `url` as one multipart upload: parts of
/// 8 MiB (up to four in flight) read from the file as they go, completed at the end (the
/// object appears whole, at once), aborted on any error (nothing appears).
pub(crate) fn upload(from: &Path, url: &Path) -> Result<(), StepError> {
    let shown = url.to_string_lossy().into_owned();
    let loc = locate(&shown).map_err(StepError::fatal)?;
    let rt = runtime()?;
    let mut file = std::fs::File::open(from)
        .map_err(|e| StepError::environment(format!("cannot read the spooled output of {shown}"), e))?;
    rt.block_on(async {
        let upload = loc.store.put_multipart(&loc.path).await.map_err(|e| step_error(&format!("write {shown}"), &e))?;
        let mut w = object_store::WriteMultipart::new_with_chunk_size(upload, 8 << 20);
        let mut buf = vec![0u8; 1 << 20];
        let sent: Result<(), StepError> = async {
            loop {
                let n = file
                    .read(&mut buf)
                    .map_err(|e| StepError::environment(format!("cannot read the spooled output of {shown}"), e))?;
                if n == 0 {
                    return Ok(());
                }
                w.wait_for_capacity(4).await.map_err(|e| step_error(&format!("write {shown}"), &e))?;
                w.write(&buf[..n]);
            }
        }
        .await;
        match sent {
            Ok(()) => w.finish().await.map(|_| ()).map_err(|e| step_error(&format!("write {shown}"), &e)),
            Err(e) => {
                if let Err(a) = w.abort().await {
                    log::warn!("cannot abort the upload of {shown}: {}", store_error("abort", &a));
                }
                Err(e)
            }
        }
    })
}

/// Deletes the object at `url` (S3 answers the same whether it was there or not): an
/// uploaded part of a set whose commit failed after it, or a part of an earlier run of the
/// set that its manifest no longer lists.
pub(crate) fn remove(url: &Path) -> Result<(), String> {
    let shown = url.to_string_lossy().into_owned();
    let loc = locate(&shown)?;
    let rt = runtime().map_err(|e| e.to_string())?;
    rt.block_on(loc.store.delete(&loc.path)).map_err(|e| store_error(&format!("delete {shown}"), &e))
}

/// The whole of a small object (a set's manifest), or a `NotFound` error when there is none.
pub(crate) fn read_whole(url: &Path) -> std::io::Result<Vec<u8>> {
    let shown = url.to_string_lossy().into_owned();
    let loc = locate(&shown).map_err(std::io::Error::other)?;
    let rt = runtime().map_err(|e| std::io::Error::other(e.to_string()))?;
    rt.block_on(async { loc.store.get(&loc.path).await?.bytes().await }).map(|b| b.to_vec()).map_err(|e| match e {
        object_store::Error::NotFound { .. } => std::io::Error::from(std::io::ErrorKind::NotFound),
        e => std::io::Error::other(store_error(&format!("read {shown}"), &e)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_told_from_paths_and_credentials_in_them_are_refused_unshown() {
        assert!(is_url("s3://b/k") && is_url("HTTPS://h/x") && is_url("http://h/x"));
        assert!(!is_url("s3://") && !is_url("data/x.jsonl") && !is_url("s3:/b/k"));
        let Err(e) = locate("https://user:hunter2@example.com/x") else { panic!("accepted") };
        assert!(!e.contains("hunter2"), "{e}");
        assert!(locate("s3://bucket/").is_err());
        assert!(locate("https://h/x?sig=abc").is_err());
    }

    #[test]
    fn a_profile_is_read_from_both_files_the_credentials_file_winning() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config"),
            "[profile p]\nregion = eu-west-1\naws_access_key_id = FROMCONFIG\n[default]\nregion=x\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("credentials"),
            "# c\n[p]\naws_access_key_id = AK\naws_secret_access_key = SK\n",
        )
        .unwrap();
        let read = |name| Profile::read(name, Some(dir.path().join("config")), Some(dir.path().join("credentials")));
        let p = read("p");
        assert!(p.found);
        assert_eq!(p.get("region").as_deref(), Some("eu-west-1"));
        assert_eq!(p.get("aws_access_key_id").as_deref(), Some("AK"));
        assert!(!read("q").found);
        assert_eq!(read("default").get("region").as_deref(), Some("x"));
    }

    #[test]
    fn store_errors_say_what_to_do_and_never_show_a_credential() {
        remember_secret("AKIA-UNIT-SECRET");
        let source = || -> Box<dyn std::error::Error + Send + Sync> {
            "<Error><Code>AccessDenied</Code><AWSAccessKeyId>AKIA-UNIT-SECRET</AWSAccessKeyId></Error>".into()
        };
        let denied = object_store::Error::PermissionDenied { path: "k".into(), source: source() };
        let text = store_error("read s3://b/k", &denied);
        assert!(text.starts_with("cannot read s3://b/k: access denied"), "{text}");
        assert!(!text.contains("AKIA-UNIT-SECRET") && text.contains("***"), "{text}");
        let missing = object_store::Error::NotFound { path: "k".into(), source: source() };
        assert_eq!(store_error("read s3://b/k", &missing), "cannot read s3://b/k: there is no such object (or bucket)");
        let refused = object_store::Error::Unauthenticated { path: "k".into(), source: source() };
        assert!(store_error("read s3://b/k", &refused).contains("the credentials were refused"));
        let generic = object_store::Error::Generic { store: "S3", source: "NoSuchBucket: gone".into() };
        assert_eq!(store_error("list s3://b/", &generic), "cannot list s3://b/: there is no such bucket");
    }

    #[test]
    fn scrub_hides_every_remembered_secret() {
        remember_secret("S3CR3T-VALUE");
        assert_eq!(scrub("body: <Key>S3CR3T-VALUE</Key>"), "body: <Key>***</Key>");
    }
}
