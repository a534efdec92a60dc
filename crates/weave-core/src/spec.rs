//! The pipeline file: TOML text to a checked [`PipelineSpec`].

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::conf::{self, ConfTable, ConfValue};
use crate::dag::Dep;
use crate::diagnostic::{Diagnostic, Diagnostics, Location, SourceFile};
use crate::params::Params;
use crate::policy::{Backoff, BadRecordLimit, BadRecordPolicy, RetryPolicy};
use crate::step::{CacheMode, CanonicalConfig};

/// The top-level tables of a pipeline file.
pub const TOP_LEVEL_KEYS: &[&str] = &["pipeline", "resources", "retry", "cache", "alert", "llm", "storage", "step"];
/// The keys of `[storage]`: where the pipeline's `s3://` URLs are (never credentials).
pub const STORAGE_KEYS: &[&str] = &["endpoint", "region"];
/// The keys of `[cache]`.
pub const CACHE_KEYS: &[&str] = &["dir"];
/// The keys of `[pipeline]`.
pub const PIPELINE_KEYS: &[&str] = &["name", "description", "seed", "max_bad_records"];
/// The keys of `[resources]`.
pub const RESOURCES_KEYS: &[&str] = &["max_memory", "max_concurrent", "gpu_enabled", "gpus"];
/// The keys of `[retry]` and of a step's `retry` table.
pub const RETRY_KEYS: &[&str] = &["max_retries", "retry_delay", "backoff", "max_delay", "jitter"];
/// The keys of an `[[alert]]`.
pub const ALERT_KEYS: &[&str] = &["when", "notify", "command", "path", "timeout", "step", "window"];
/// The metrics an alert's `when` can name.
pub const ALERT_METRICS: &[&str] = &["error_rate", "step_duration", "retries", "memory_share", "run_failed"];
/// The keys of an `[llm.NAME]` provider.
pub const LLM_KEYS: &[&str] = &[
    "base_url",
    "model",
    "api_key_env",
    "requests_per_minute",
    "tokens_per_minute",
    "timeout",
    "prompt_price_per_million",
    "completion_price_per_million",
    "batch",
    "batch_discount",
    "batch_poll_interval",
];
/// The keys every step takes, whatever its kind.
pub const STEP_COMMON_KEYS: &[&str] = &[
    "id",
    "kind",
    "after",
    "retry",
    "timeout",
    "on_bad_record",
    "max_bad_records",
    "resources",
    "cache",
    "exclusions",
    "schema",
];
/// The keys of a step's `resources` table.
pub const STEP_RESOURCES_KEYS: &[&str] = &["memory", "threads", "gpus"];

/// The default memory budget when `[resources] max_memory` is not set.
pub const DEFAULT_MAX_MEMORY: u64 = 2 << 30;

/// The most threads a setting may ask for: `[resources] max_concurrent` (and
/// `--max-concurrent`), a step's `resources.threads`, a step's I/O pool, an LLM step's
/// `concurrency`. Each is a thread the run starts (or may start); a larger value is refused
/// when the pipeline is checked, since a billion of them would never finish starting.
pub const MAX_CONCURRENT: usize = 1024;

/// The most GPUs `[resources] gpus` and a step's `resources.gpus` may name.
pub const MAX_GPUS: u32 = 1024;

/// The longest step id, in characters: ids name steps in every table, log line, metric
/// label and file name the run writes.
pub const MAX_ID_CHARS: usize = 128;

/// The `[resources]` table: the limits the run must stay within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceLimits {
    /// The budget for bytes in flight (batches in channels and in steps).
    pub max_memory: u64,
    /// CPU worker threads; `None` means one per core.
    pub max_concurrent: Option<usize>,
    /// Whether steps may use GPUs.
    pub gpu_enabled: bool,
    /// How many GPUs there are to share, when enabled.
    pub gpus: u32,
}

impl Default for ResourceLimits {
    fn default() -> Self {
        ResourceLimits { max_memory: DEFAULT_MAX_MEMORY, max_concurrent: None, gpu_enabled: false, gpus: 1 }
    }
}

/// Where an alert goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AlertSink {
    /// A log line at warning level.
    Log,
    /// A line in a JSONL file.
    File(std::path::PathBuf),
    /// A command that gets the alert as JSON on its standard input.
    Command(String),
}

/// A comparison in an alert rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `>`
    Greater,
    /// `>=`
    GreaterOrEqual,
    /// `<`
    Less,
    /// `<=`
    LessOrEqual,
}

/// One `[[alert]]`: a condition (`error_rate > 0.05`) and where to send it.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertSpec {
    /// The metric's name, as written.
    pub metric: String,
    /// The comparison.
    pub comparison: Comparison,
    /// The threshold; sizes and durations are converted to bytes and seconds.
    pub threshold: f64,
    /// The condition as written.
    pub when: String,
    /// Where it goes.
    pub sink: AlertSink,
    /// How long a command sink may take.
    pub timeout: Duration,
    /// The step it watches; `None` for every step.
    pub step: Option<String>,
    /// For rates: how far back the rate looks.
    pub window: Duration,
    /// Where it was declared.
    pub location: Option<Location>,
}

/// One `[llm.NAME]`: an OpenAI-compatible endpoint that steps name.
#[derive(Debug, Clone, PartialEq)]
pub struct LlmProvider {
    /// The provider's name (the table's key).
    pub name: String,
    /// The base URL, such as `http://127.0.0.1:8000/v1`.
    pub base_url: String,
    /// The model name.
    pub model: String,
    /// The name of the environment variable holding the API key (never the key).
    pub api_key_env: Option<String>,
    /// The request budget per minute, shared by every step that uses the provider.
    pub requests_per_minute: Option<u64>,
    /// The token budget per minute.
    pub tokens_per_minute: Option<u64>,
    /// The timeout of one request.
    pub timeout: Option<Duration>,
    /// The price of a million prompt tokens, for the cost figures (any currency).
    pub prompt_price_per_million: Option<f64>,
    /// The price of a million completion tokens.
    pub completion_price_per_million: Option<f64>,
    /// Whether the steps send their requests through the provider's Batch API (upload a
    /// file, create a batch, poll it, download its output) rather than one at a time.
    pub batch: bool,
    /// The share of the prices the Batch API takes off (0.5 when `None`).
    pub batch_discount: Option<f64>,
    /// How often a batch is polled (30 s when `None`).
    pub batch_poll_interval: Option<Duration>,
    /// Its keys as written but the output-neutral ones: what the steps that call it put
    /// in their cache keys.
    pub config: CanonicalConfig,
}

/// One `[[step]]` as written: the common keys read, the kind's own keys kept for the kind.
#[derive(Debug, Clone)]
pub struct StepSpec {
    /// The step's id.
    pub id: String,
    /// The kind name.
    pub kind: String,
    /// Where the kind was written.
    pub kind_location: Option<Location>,
    /// The steps it follows; `None` for "the step written before".
    pub after: Option<Vec<Dep>>,
    /// Per-step retry settings, over the pipeline's `[retry]` defaults.
    pub retry: RetryOverride,
    /// Per-call timeout.
    pub timeout: Option<Duration>,
    /// What to do with bad records.
    pub on_bad_record: Option<BadRecordPolicy>,
    /// How many bad records the step may set aside before the run fails.
    pub max_bad_records: Option<BadRecordLimit>,
    /// Resource needs that override what the step declares.
    pub resources: ResourceOverride,
    /// Whether its output is kept in the cache.
    pub cache: CacheMode,
    /// Where the records it drops on purpose are written, with their reasons.
    pub exclusions: Option<std::path::PathBuf>,
    /// The schema its records must fit (see [`crate::declared`]).
    pub schema: Option<std::sync::Arc<crate::declared::DeclaredSchema>>,
    /// The kind's own keys.
    pub params: ConfTable,
    /// The keys every step takes, as written: with the kind's own keys, what the step's
    /// cache key is made of.
    pub common: ConfTable,
    /// Where the step was declared.
    pub location: Option<Location>,
    /// The bytes of the file the step's table spans.
    pub span: std::ops::Range<usize>,
}

/// Retry settings given for one step; unset fields keep the defaults.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct RetryOverride {
    /// Retries after the first attempt.
    pub max_retries: Option<u32>,
    /// The first delay.
    pub retry_delay: Option<Duration>,
    /// How the delay grows.
    pub backoff: Option<Backoff>,
    /// The longest delay.
    pub max_delay: Option<Duration>,
    /// Whether delays are randomised.
    pub jitter: Option<bool>,
}

impl RetryOverride {
    /// `base` with the fields set here replaced.
    pub fn apply(&self, base: RetryPolicy) -> RetryPolicy {
        RetryPolicy {
            max_retries: self.max_retries.unwrap_or(base.max_retries),
            retry_delay: self.retry_delay.unwrap_or(base.retry_delay),
            backoff: self.backoff.unwrap_or(base.backoff),
            max_delay: self.max_delay.unwrap_or(base.max_delay),
            jitter: self.jitter.unwrap_or(base.jitter),
        }
    }

    fn read(p: &Params) -> RetryOverride {
        let r = RetryOverride {
            max_retries: p.u64("max_retries").map(|n| n.min(u32::MAX as u64) as u32),
            retry_delay: p.duration("retry_delay"),
            backoff: p.choice("backoff", &["fixed", "linear", "exponential"]).map(|b| match b {
                "fixed" => Backoff::Fixed,
                "linear" => Backoff::Linear,
                _ => Backoff::Exponential,
            }),
            max_delay: p.duration("max_delay"),
            jitter: p.bool("jitter"),
        };
        if let (Some(first), Some(max)) = (r.retry_delay, r.max_delay)
            && first > max
            && let Some(item) = p.item("max_delay")
        {
            p.error_at(item, "`max_delay` is shorter than `retry_delay`");
        }
        r
    }
}

/// Resource needs given for one step in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ResourceOverride {
    /// Bytes of memory.
    pub memory: Option<u64>,
    /// CPU threads.
    pub threads: Option<u32>,
    /// GPUs.
    pub gpus: Option<u32>,
}

/// A parsed pipeline file: every table read and checked, the steps not yet built.
#[derive(Debug, Clone)]
pub struct PipelineSpec {
    /// The file.
    pub source: SourceFile,
    /// `[pipeline] name`, or the file's stem.
    pub name: String,
    /// `[pipeline] description`.
    pub description: Option<String>,
    /// `[pipeline] seed` (default 0).
    pub seed: u64,
    /// `[pipeline] max_bad_records`: how many bad records the run's steps together may set
    /// aside before the run fails (a share is of the records its sources read).
    pub max_bad_records: BadRecordLimit,
    /// `[resources]`.
    pub resources: ResourceLimits,
    /// `[retry]` over the built-in defaults.
    pub retry: RetryPolicy,
    /// `[[alert]]`s.
    pub alerts: Vec<AlertSpec>,
    /// `[llm.NAME]` providers, by name.
    pub llm: BTreeMap<String, LlmProvider>,
    /// `[cache] dir`: where the cache lives, resolved against the file's folder. The
    /// caller's own choice goes to building (`BuildOptions`), not here.
    pub cache_dir: Option<std::path::PathBuf>,
    /// `[storage]`: where the pipeline's `s3://` URLs are.
    pub storage: StorageSettings,
    /// `[[step]]`s in the order written.
    pub steps: Vec<StepSpec>,
    /// The pipeline-level settings in every step's cache key (see
    /// [`OUTPUT_NEUTRAL`](crate::OUTPUT_NEUTRAL)).
    pub key_config: CanonicalConfig,
}

/// The `[storage]` table: the S3 endpoint and region of the pipeline's `s3://` URLs, over
/// those of the environment and the profile (`AWS_ENDPOINT_URL`, `AWS_REGION`, ...).
/// Credentials are never here: they come from the environment or a profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct StorageSettings {
    /// An S3-compatible endpoint (`http://localhost:9000`, an R2 or GCS URL), addressed
    /// path-style.
    pub endpoint: Option<String>,
    /// The region requests are signed for.
    pub region: Option<String>,
}

/// Where the cache of the pipeline file at `file` lives when nothing says otherwise:
/// `.weave/cache` beside it.
pub fn default_cache_dir(file: &Path) -> std::path::PathBuf {
    crate::params::resolve(file, ".weave/cache")
}

impl PipelineSpec {
    /// Parses and checks a pipeline file's text. `path` is how messages name the file, and
    /// the folder that relative paths in it resolve against. Every problem found is
    /// returned, not just the first.
    pub fn parse(path: impl AsRef<Path>, text: &str) -> Result<(PipelineSpec, Diagnostics), Diagnostics> {
        let source = SourceFile::new(path.as_ref(), text);
        let root = match conf::parse(text) {
            Ok(t) => t,
            Err((msg, span)) => {
                let loc = span.map(|s| source.locate(s));
                return Err(Diagnostics(vec![
                    Diagnostic::error(format!("invalid TOML: {msg}")).with_code("syntax").at(loc),
                ]));
            }
        };
        let key_config = crate::keys::pipeline_config(&root);
        let top = Params::new(root, source.clone(), "the pipeline file", None);
        let mut diags = Diagnostics::default();

        let (mut name, mut description, mut seed, mut max_bad_records) = (None, None, 0, BadRecordLimit::default());
        if let Some(p) = top.table("pipeline") {
            name = p.str("name");
            // The name is in every metric's labels, the tables of `weave runs` and the
            // cache's records of the pipeline: bounded as step ids are, and one line of
            // text (a line break split the tables; an escape sequence would reach the
            // terminal).
            if let (Some(n), Some(item)) = (&name, p.item("name")) {
                if n.chars().count() > MAX_ID_CHARS {
                    p.error_at(
                        item,
                        format!(
                            "the pipeline's name `{}` is {} characters long: names are at most {MAX_ID_CHARS}",
                            crate::diagnostic::clip(n, 40),
                            n.chars().count()
                        ),
                    );
                } else if let Some(c) = n.chars().find(|c| c.is_control()) {
                    p.error_at(
                        item,
                        format!(
                            "the pipeline's name holds a control character (U+{:04X}): names are one line of text",
                            u32::from(c)
                        ),
                    );
                }
            }
            description = p.str("description");
            seed = p.u64("seed").unwrap_or(0);
            max_bad_records = bad_record_limit(&p).unwrap_or_default();
            diags.extend(p.finish(PIPELINE_KEYS));
        }
        let name = name.unwrap_or_else(|| {
            path.as_ref().file_stem().map_or_else(|| "pipeline".to_owned(), |s| s.to_string_lossy().into_owned())
        });

        let mut resources = ResourceLimits::default();
        if let Some(p) = top.table("resources") {
            if let Some(m) = p.bytes("max_memory") {
                if m == 0 {
                    if let Some(item) = p.item("max_memory") {
                        p.error_at(item, "`max_memory` must be more than zero");
                    }
                } else {
                    resources.max_memory = m;
                }
            }
            if let Some(n) = p.u64_in("max_concurrent", 1, MAX_CONCURRENT as u64) {
                resources.max_concurrent = Some(n as usize);
            }
            resources.gpu_enabled = p.bool("gpu_enabled").unwrap_or(false);
            if let Some(g) = p.u64_in("gpus", 0, u64::from(MAX_GPUS)) {
                resources.gpus = g as u32;
            }
            diags.extend(p.finish(RESOURCES_KEYS));
        }

        let mut retry = RetryPolicy::default();
        if let Some(p) = top.table("retry") {
            retry = RetryOverride::read(&p).apply(retry);
            diags.extend(p.finish(RETRY_KEYS));
        }

        let mut cache_dir = None;
        if let Some(p) = top.table("cache") {
            cache_dir = p.path("dir");
            diags.extend(p.finish(CACHE_KEYS));
        }

        let mut storage = StorageSettings::default();
        if let Some(p) = top.table("storage") {
            storage.endpoint = p.str("endpoint");
            storage.region = p.str("region");
            if let (Some(e), Some(item)) = (&storage.endpoint, p.item("endpoint")) {
                let lower = e.to_ascii_lowercase();
                if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                    p.error_at(item, "`endpoint` must be an http:// or https:// URL");
                } else if e.split("://").nth(1).and_then(|r| r.split('/').next()).is_some_and(|h| h.contains('@')) {
                    // Not repeated: what comes before the `@` may be a password.
                    p.error_at(
                        item,
                        "`endpoint` must not hold credentials (user:password@): they come from the environment or a profile",
                    );
                }
            }
            diags.extend(p.finish(STORAGE_KEYS));
        }

        let alerts = read_alerts(&top, &mut diags);
        let llm = read_llm(&top, &mut diags);
        let steps = read_steps(&top, &mut diags);

        diags.extend(top.finish(TOP_LEVEL_KEYS));
        let spec = PipelineSpec {
            source,
            name,
            description,
            seed,
            max_bad_records,
            resources,
            retry,
            alerts,
            llm,
            cache_dir,
            storage,
            steps,
            key_config,
        };
        if diags.has_errors() { Err(diags) } else { Ok((spec, diags)) }
    }
}

fn read_alerts(top: &Params, diags: &mut Diagnostics) -> Vec<AlertSpec> {
    let mut out = Vec::new();
    let Some(item) = top.item("alert") else { return out };
    let ConfValue::Array(items) = &item.value else {
        top.error_at(item, "`alert` must be an array of tables: write `[[alert]]`");
        return out;
    };
    for it in items {
        let ConfValue::Table(t) = &it.value else {
            top.error_at(it, "each alert must be a table");
            continue;
        };
        let p = Params::new(t.clone(), top.file().clone(), "[[alert]]", None).spanning(it.span.clone());
        let location = Some(p.locate(it.span.clone()));
        let when = p.required_str("when", "the condition, such as \"error_rate > 0.05\"");
        let parsed = when.as_deref().and_then(|w| match check_condition(w) {
            Ok(c) => Some(c),
            Err(e) => {
                if let Some(i) = p.item("when") {
                    p.error_at(i, e);
                }
                None
            }
        });
        let notify = p.choice("notify", &["log", "file", "command"]).unwrap_or("log");
        let sink = match notify {
            "file" => p.required_path("path", "the JSONL file that alerts are appended to").map(AlertSink::File),
            "command" => p
                .required_str("command", "the command that receives each alert as JSON on stdin")
                .map(AlertSink::Command),
            _ => Some(AlertSink::Log),
        };
        let timeout = p.positive_duration("timeout").unwrap_or(Duration::from_secs(10));
        let step = p.str("step");
        let window = p.positive_duration("window").unwrap_or(Duration::from_secs(60));
        if notify != "file" && p.has("path") {
            p.item("path");
            p.push(Diagnostic::warning("`path` is only used with notify = \"file\"").at(location.clone()));
        }
        if notify != "command" && p.has("command") {
            p.item("command");
            p.push(Diagnostic::warning("`command` is only used with notify = \"command\"").at(location.clone()));
        }
        if let (Some(when), Some((metric, comparison, threshold)), Some(sink)) = (when, parsed, sink) {
            out.push(AlertSpec { metric, comparison, threshold, when, sink, timeout, step, window, location });
        }
        diags.extend(p.finish(ALERT_KEYS));
    }
    out
}

/// Parses a condition and checks that its metric is one alerts know.
fn check_condition(when: &str) -> Result<(String, Comparison, f64), String> {
    let c = parse_condition(when)?;
    if ALERT_METRICS.contains(&c.0.as_str()) {
        return Ok(c);
    }
    let hint = crate::diagnostic::did_you_mean(&c.0, ALERT_METRICS.iter().copied())
        .map_or_else(|| format!("known: {}", ALERT_METRICS.join(", ")), |m| format!("did you mean `{m}`?"));
    Err(format!("unknown metric `{}` in the condition ({hint})", c.0))
}

impl AlertSpec {
    /// An alert to the log on `when` (`"error_rate > 0.05"`), over every step, with the
    /// defaults of a pipeline file's `[[alert]]`: the Rust form of
    /// `[[alert]] when = "..." notify = "log"`.
    pub fn log(when: &str) -> Result<AlertSpec, String> {
        let (metric, comparison, threshold) = check_condition(when)?;
        Ok(AlertSpec {
            metric,
            comparison,
            threshold,
            when: when.to_owned(),
            sink: AlertSink::Log,
            timeout: Duration::from_secs(10),
            step: None,
            window: Duration::from_secs(60),
            location: None,
        })
    }
}

/// Parses `metric op number[unit]`, such as `error_rate > 0.05`, `duration > "5m"` or
/// `memory >= 3GiB`.
fn parse_condition(when: &str) -> Result<(String, Comparison, f64), String> {
    let bad = || format!("cannot read the condition `{when}`: write `metric > number`, such as `error_rate > 0.05`");
    let ops = [
        (">=", Comparison::GreaterOrEqual),
        ("<=", Comparison::LessOrEqual),
        (">", Comparison::Greater),
        ("<", Comparison::Less),
    ];
    let (at, op, cmp) =
        ops.iter().filter_map(|(op, c)| when.find(op).map(|i| (i, *op, *c))).min_by_key(|x| x.0).ok_or_else(bad)?;
    let metric = when[..at].trim();
    let value = when[at + op.len()..].trim().trim_matches('"');
    if metric.is_empty() || !metric.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.') {
        return Err(bad());
    }
    let threshold = if let Ok(x) = value.parse::<f64>() {
        x
    } else if let Ok(d) = crate::units::parse_duration(value) {
        d.as_secs_f64()
    } else if let Ok(b) = crate::units::parse_bytes(value) {
        b as f64
    } else if let Some(pct) = value.strip_suffix('%').and_then(|v| v.trim().parse::<f64>().ok()) {
        pct / 100.0
    } else {
        return Err(bad());
    };
    Ok((metric.to_owned(), cmp, threshold))
}

fn read_llm(top: &Params, diags: &mut Diagnostics) -> BTreeMap<String, LlmProvider> {
    let mut out = BTreeMap::new();
    let Some(item) = top.item("llm") else { return out };
    let ConfValue::Table(t) = &item.value else {
        top.error_at(item, "`llm` must be a table of providers: write `[llm.NAME]`");
        return out;
    };
    for (name, _, it) in &t.entries {
        let ConfValue::Table(pt) = &it.value else {
            top.error_at(it, format!("`llm.{name}` must be a table"));
            continue;
        };
        let p = Params::new(pt.clone(), top.file().clone(), format!("[llm.{name}]"), None).spanning(it.span.clone());
        let base_url = p.required_str("base_url", "the endpoint, such as \"http://127.0.0.1:8000/v1\"");
        if let (Some(u), Some(i)) = (&base_url, p.item("base_url"))
            && let Some(problem) = base_url_problem(u)
        {
            p.error_at(i, problem);
        }
        let model = p.required_str("model", "the model name");
        if let (Some(m), Some(i)) = (&model, p.item("model")) {
            if m.trim().is_empty() {
                p.error_at(i, "`model` is empty: name the model the provider serves");
            } else if m.trim() != m {
                p.error_at(i, format!("`model` has spaces around it (`{m}`): the provider would not know it"));
            }
        }
        let api_key_env = p.str("api_key_env");
        if let (Some(k), Some(i)) = (&api_key_env, p.item("api_key_env"))
            && !is_variable_name(k)
        {
            p.error_at(
                i,
                "`api_key_env` is the name of an environment variable (letters, digits and `_`, not starting with a digit), not the key itself",
            );
        }
        let provider = LlmProvider {
            name: name.clone(),
            base_url: base_url.unwrap_or_default(),
            model: model.unwrap_or_default(),
            api_key_env,
            // A budget of zero would never let a request go.
            requests_per_minute: p.u64_in("requests_per_minute", 1, u64::MAX),
            tokens_per_minute: p.u64_in("tokens_per_minute", 1, u64::MAX),
            timeout: p.positive_duration("timeout"),
            prompt_price_per_million: price(&p, "prompt_price_per_million"),
            completion_price_per_million: price(&p, "completion_price_per_million"),
            batch: p.bool("batch").unwrap_or(false),
            batch_discount: batch_discount(&p),
            batch_poll_interval: p.positive_duration("batch_poll_interval"),
            config: crate::keys::provider_config(pt),
        };
        out.insert(name.clone(), provider);
        diags.extend(p.finish(LLM_KEYS));
    }
    out
}

/// What is wrong with a provider's `base_url`, if anything: it must be an http(s) URL with a
/// host, an optional port and a path, and nothing that `/chat/completions`, added to its
/// end, could not follow.
fn base_url_problem(url: &str) -> Option<String> {
    let Some(rest) = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://")) else {
        return Some("`base_url` must start with http:// or https://".to_owned());
    };
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Some("`base_url` holds a space or a control character".to_owned());
    }
    if rest.contains(['?', '#']) {
        return Some(
            "`base_url` cannot hold a query or a fragment (`?`, `#`): the request's path is added to its end"
                .to_owned(),
        );
    }
    let authority = rest.split('/').next().unwrap_or_default();
    // Credentials (`user:password@`) come before the host.
    let host_port = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = match host_port.strip_prefix('[') {
        // An IPv6 address, in brackets.
        Some(v6) => match v6.split_once(']') {
            Some((addr, after)) if addr.parse::<std::net::Ipv6Addr>().is_ok() => match after {
                "" => (host_port, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (&host_port[..addr.len() + 2], Some(port)),
                    None => (host_port, Some("")),
                },
            },
            _ => {
                return Some(format!(
                    "`base_url` has the host `{host_port}`, which is not a host name or an IP address"
                ));
            }
        },
        None => match host_port.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (host_port, None),
        },
    };
    if host.is_empty() {
        return Some(
            "`base_url` has no host: write it as http://HOST[:PORT][/PATH], such as \"http://127.0.0.1:8000/v1\""
                .to_owned(),
        );
    }
    if !host.starts_with('[') && !host.chars().all(|c| c.is_alphanumeric() || matches!(c, '-' | '.' | '_')) {
        return Some(format!("`base_url` has the host `{host}`, which is not a host name or an IP address"));
    }
    match port {
        Some(p) if !p.parse::<u16>().is_ok_and(|p| p > 0) || !p.bytes().all(|b| b.is_ascii_digit()) => {
            Some(format!("`base_url` has the port `{p}`: a port is a number from 1 to 65535"))
        }
        _ => None,
    }
}

/// Whether `name` can name an environment variable that a shell sets: letters, digits and
/// `_`, not starting with a digit.
fn is_variable_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The Batch API's discount: a share of the price, from 0 to 1.
fn batch_discount(p: &Params) -> Option<f64> {
    let v = p.f64("batch_discount")?;
    if !(0.0..=1.0).contains(&v) {
        if let Some(item) = p.item("batch_discount") {
            p.error_at(item, format!("`batch_discount` is the share of the price taken off, from 0 to 1, not {v}"));
        }
        return None;
    }
    Some(v)
}

/// A price per million tokens: a number, not negative.
fn price(p: &Params, key: &str) -> Option<f64> {
    let v = p.f64(key)?;
    if v < 0.0 || !v.is_finite() {
        if let Some(item) = p.item(key) {
            p.error_at(item, format!("`{key}` must be a price (a number, not negative)"));
        }
        return None;
    }
    Some(v)
}

fn read_steps(top: &Params, diags: &mut Diagnostics) -> Vec<StepSpec> {
    let mut out = Vec::new();
    let Some(item) = top.item("step") else {
        diags.push(
            Diagnostic::error("the pipeline has no steps")
                .with_code("no-steps")
                .with_help("add steps as `[[step]]` tables, each with an `id` and a `kind`"),
        );
        return out;
    };
    let ConfValue::Array(items) = &item.value else {
        top.error_at(item, "`step` must be an array of tables: write `[[step]]`");
        return out;
    };
    for (n, it) in items.iter().enumerate() {
        let ConfValue::Table(t) = &it.value else {
            top.error_at(it, "each step must be a table");
            continue;
        };
        let location = Some(top.locate(it.span.clone()));
        let id = match t.get("id").map(|i| &i.value) {
            // An id past the limit is reported below; the step goes by its number, so that
            // the other messages about it stay readable.
            Some(ConfValue::Str(s)) if s.chars().count() <= MAX_ID_CHARS => s.clone(),
            _ => format!("#{}", n + 1),
        };
        // The common keys are read here; the rest belongs to the kind, which reports its
        // unknown keys when it is built.
        let (common, params): (Vec<_>, Vec<_>) =
            t.entries.iter().cloned().partition(|(k, _, _)| STEP_COMMON_KEYS.contains(&k.as_str()));
        let params = ConfTable { entries: params };
        let common_keys = ConfTable { entries: common };
        let common =
            Params::new(common_keys.clone(), top.file().clone(), "step", Some(id.clone())).spanning(it.span.clone());
        match common.item("id") {
            None => common.push(
                Diagnostic::error("this step has no `id`")
                    .with_code("missing-key")
                    .at(location.clone())
                    .with_help("give every step a unique `id = \"...\"`"),
            ),
            Some(i) => match &i.value {
                ConfValue::Str(s) if s.chars().count() > MAX_ID_CHARS => {
                    common.error_at(
                        i,
                        format!(
                            "step id `{}` is {} characters long: ids are at most {MAX_ID_CHARS}",
                            crate::diagnostic::clip(s, 40),
                            s.chars().count()
                        ),
                    );
                }
                ConfValue::Str(s) if valid_id(s) => {}
                ConfValue::Str(s) => {
                    common.error_at(i, format!("step id `{s}` is not valid: use letters, digits, `_`, `-` and `.`"));
                }
                _ => {
                    common.error_at(i, "`id` must be a string");
                }
            },
        }
        let kind = common.required_str("kind", "the step's kind, such as \"load_csv\"").unwrap_or_default();
        // An empty kind is refused here: past this point an empty kind means one that was
        // already reported (missing, or not a string).
        if kind.is_empty()
            && let Some(i) = common.item("kind").filter(|i| matches!(i.value, ConfValue::Str(_)))
        {
            common
                .error_at(i, "`kind` is empty: name the step's kind, such as \"load_csv\" (`weave kinds` lists them)");
        }
        let kind_location = common.item("kind").map(|i| top.locate(i.span.clone()));
        let after = common.item("after").and_then(|i| match &i.value {
            ConfValue::Str(s) => Some(vec![Dep { id: s.clone(), location: Some(top.locate(i.span.clone())) }]),
            ConfValue::Array(a) => {
                let mut deps = Vec::with_capacity(a.len());
                for d in a {
                    match &d.value {
                        ConfValue::Str(s) => {
                            deps.push(Dep { id: s.clone(), location: Some(top.locate(d.span.clone())) })
                        }
                        other => {
                            common.error_at(d, format!("`after` must list step ids, not {}", other.type_name()));
                        }
                    }
                }
                Some(deps)
            }
            other => {
                common.error_at(i, format!("`after` must be a step id or a list of them, not {}", other.type_name()));
                None
            }
        });
        let retry = common.table("retry").map_or_else(RetryOverride::default, |r| {
            let o = RetryOverride::read(&r);
            common.absorb(r, RETRY_KEYS);
            o
        });
        let timeout = common.positive_duration("timeout");
        let on_bad_record = common.choice("on_bad_record", &["fail", "skip"]).map(|c| match c {
            "skip" => BadRecordPolicy::Skip,
            _ => BadRecordPolicy::Fail,
        });
        let max_bad_records = bad_record_limit(&common);
        let resources = common.table("resources").map_or_else(ResourceOverride::default, |r| {
            let o = ResourceOverride {
                memory: r.bytes("memory"),
                threads: r.u64_in("threads", 0, MAX_CONCURRENT as u64).map(|n| n as u32),
                gpus: r.u64_in("gpus", 0, u64::from(MAX_GPUS)).map(|n| n as u32),
            };
            common.absorb(r, STEP_RESOURCES_KEYS);
            o
        });
        let cache = common.item("cache").map_or(CacheMode::Auto, |i| match &i.value {
            ConfValue::Bool(true) => CacheMode::On,
            ConfValue::Bool(false) => CacheMode::Off,
            ConfValue::Str(s) if s == "auto" => CacheMode::Auto,
            _ => {
                common.error_at(i, "`cache` must be true, false or \"auto\"");
                CacheMode::Auto
            }
        });
        let exclusions = common.path("exclusions");
        let schema = crate::declared::DeclaredSchema::read(&common, "schema").map(std::sync::Arc::new);
        diags.extend(common.finish(STEP_COMMON_KEYS));
        out.push(StepSpec {
            id,
            kind,
            kind_location,
            after,
            retry,
            timeout,
            on_bad_record,
            max_bad_records,
            resources,
            cache,
            exclusions,
            schema,
            params,
            common: common_keys,
            location,
            span: it.span.clone(),
        });
    }
    out
}

/// `max_bad_records`: a count (an integer) or a share (a string such as `"1%"`).
fn bad_record_limit(p: &Params) -> Option<BadRecordLimit> {
    let item = p.item("max_bad_records")?;
    let read = match &item.value {
        ConfValue::Int(n) => u64::try_from(*n)
            .map(BadRecordLimit::Count)
            .map_err(|_| format!("`{n}` is not a count of records (such as 100) or a share (such as \"1%\")")),
        ConfValue::Str(s) => BadRecordLimit::parse(s),
        other => Err(format!(
            "`max_bad_records` must be a count of records (such as 100) or a share (such as \"1%\"), not {}",
            other.type_name()
        )),
    };
    read.map_err(|e| p.error_at(item, e)).ok()
}

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_alphanumeric() || matches!(c, '_' | '-' | '.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_errors(text: &str, expected: &[&str]) {
        let err = PipelineSpec::parse("p.toml", text).unwrap_err();
        let got: Vec<String> = err
            .0
            .iter()
            .filter(|d| d.is_error())
            .map(|d| {
                let at = d.location.as_ref().map_or("-".to_owned(), |l| format!("{}:{}", l.line, l.column));
                format!("{at} {}{}", d.message, d.help.as_ref().map_or(String::new(), |h| format!(" ({h})")))
            })
            .collect();
        assert_eq!(got, expected, "\n{err}");
    }

    const GOOD: &str = r#"
[pipeline]
name = "support-tickets"
seed = 42

[resources]
max_memory = "4GB"
max_concurrent = 4

[retry]
max_retries = 5
retry_delay = "250ms"

[[alert]]
when = "error_rate > 0.05"
notify = "log"

[llm.local]
base_url = "http://127.0.0.1:8000/v1"
model = "qwen"
api_key_env = "OPENAI_API_KEY"
prompt_price_per_million = 0.15
completion_price_per_million = 0.6

[[step]]
id = "load"
kind = "load_csv"
path = "raw.csv"

[[step]]
id = "clean"
kind = "clean"
retry = { max_retries = 1 }
timeout = "5s"
rules = ["trim"]
"#;

    #[test]
    fn a_full_file_parses() {
        let (spec, warnings) = PipelineSpec::parse("dir/p.toml", GOOD).unwrap();
        assert!(warnings.is_empty(), "{warnings}");
        assert_eq!(spec.name, "support-tickets");
        assert_eq!(spec.seed, 42);
        assert_eq!(spec.resources.max_memory, 4_000_000_000);
        assert_eq!(spec.resources.max_concurrent, Some(4));
        assert_eq!(spec.retry.max_retries, 5);
        assert_eq!(spec.retry.retry_delay, Duration::from_millis(250));
        assert_eq!(spec.alerts[0].metric, "error_rate");
        assert_eq!(spec.alerts[0].threshold, 0.05);
        assert_eq!(spec.llm["local"].model, "qwen");
        assert_eq!(spec.llm["local"].prompt_price_per_million, Some(0.15));
        assert_eq!(spec.llm["local"].completion_price_per_million, Some(0.6));
        assert_eq!(spec.steps.len(), 2);
        let clean = &spec.steps[1];
        assert_eq!(clean.retry.apply(spec.retry).max_retries, 1);
        assert_eq!(clean.retry.apply(spec.retry).retry_delay, Duration::from_millis(250));
        assert_eq!(clean.timeout, Some(Duration::from_secs(5)));
        assert_eq!(clean.params.entries.len(), 1);
        assert!(clean.after.is_none());
    }

    #[test]
    fn unknown_keys_get_a_suggestion_and_a_place() {
        check_errors(
            "[pipline]\nname = \"x\"\n[resources]\nmax_memroy = \"1GB\"\n[[step]]\nid = \"a\"\nkind = \"k\"\naftr = \"b\"\n",
            &[
                "4:1 unknown key `max_memroy` in [resources] (did you mean `max_memory`?)",
                "1:2 unknown key `pipline` in the pipeline file (did you mean `pipeline`?)",
            ],
        );
    }

    #[test]
    fn bad_values_are_each_reported() {
        check_errors(
            "[resources]\nmax_memory = \"4XB\"\nmax_concurrent = 0\n[retry]\nretry_delay = 5\nbackoff = \"expo\"\n[[step]]\nkind = \"k\"\n[[step]]\nid = \"a b\"\nkind = 3\nafter = [1]\n",
            &[
                "2:14 `4XB` has an unknown size unit: use B, KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)",
                "3:18 `max_concurrent` must be from 1 to 1024, not 0",
                "5:15 `retry_delay` needs a unit (write \"5s\" for seconds or \"5ms\" for milliseconds)",
                "6:11 `backoff` must be one of \"fixed\", \"linear\", \"exponential\", not \"expo\" (did you mean \"exponential\"?)",
                "7:1 this step has no `id` (give every step a unique `id = \"...\"`)",
                "10:6 step id `a b` is not valid: use letters, digits, `_`, `-` and `.`",
                "11:8 `kind` must be a string, not an integer",
                "12:10 `after` must list step ids, not an integer",
            ],
        );
    }

    // regression (found by the `pipeline` fuzz target): `kind = ""` was refused with no
    // error at all ("pipeline.toml has 0 errors").
    #[test]
    fn an_empty_kind_is_an_error_at_its_place() {
        check_errors(
            "[[step]]\nid = \"load\"\nkind = \"\"\n",
            &["3:8 `kind` is empty: name the step's kind, such as \"load_csv\" (`weave kinds` lists them)"],
        );
    }

    // regression: `max_concurrent = 1000000000` started threads until the machine gave out.
    #[test]
    fn settings_that_start_threads_are_bounded() {
        check_errors(
            "[resources]\nmax_concurrent = 1000000000\ngpus = 5000\n[[step]]\nid = \"a\"\nkind = \"k\"\nresources = { threads = 100000, gpus = 2000 }\n",
            &[
                "2:18 `max_concurrent` must be from 1 to 1024, not 1000000000",
                "3:8 `gpus` must be from 0 to 1024, not 5000",
                "7:25 `threads` must be from 0 to 1024, not 100000",
                "7:40 `gpus` must be from 0 to 1024, not 2000",
            ],
        );
        let (spec, _) =
            PipelineSpec::parse("p.toml", "[resources]\nmax_concurrent = 1024\n[[step]]\nid = \"a\"\nkind = \"k\"\n")
                .unwrap();
        assert_eq!(spec.resources.max_concurrent, Some(MAX_CONCURRENT));
    }

    // regression: `timeout = "0s"` was accepted, and stopped every call before it started.
    #[test]
    fn durations_and_budgets_that_mean_nothing_at_zero_are_refused() {
        check_errors(
            "[[alert]]\nwhen = \"error_rate > 0.1\"\ntimeout = \"0s\"\nwindow = \"0ms\"\n[llm.x]\nbase_url = \"http://h\"\nmodel = \"m\"\ntimeout = \"0s\"\nrequests_per_minute = 0\ntokens_per_minute = 0\n[[step]]\nid = \"a\"\nkind = \"k\"\ntimeout = \"0s\"\n",
            &[
                "3:11 `timeout` must be more than zero",
                "4:10 `window` must be more than zero",
                "9:23 `requests_per_minute` must be at least 1, not 0",
                "10:21 `tokens_per_minute` must be at least 1, not 0",
                "8:11 `timeout` must be more than zero",
                "14:11 `timeout` must be more than zero",
            ],
        );
        // A retry at once is a choice, not a mistake.
        let (spec, _) = PipelineSpec::parse(
            "p.toml",
            "[retry]\nretry_delay = \"0s\"\nmax_delay = \"0s\"\n[[step]]\nid = \"a\"\nkind = \"k\"\n",
        )
        .unwrap();
        assert_eq!(spec.retry.retry_delay, Duration::ZERO);
    }

    // regression: a 100,000-character step id was accepted, and panicked in the summary table.
    #[test]
    fn step_ids_are_at_most_128_characters() {
        let long = "a".repeat(100_000);
        let text = format!("[[step]]\nid = \"{long}\"\nkind = \"k\"\n[[step]]\nid = \"b\"\nkind = \"k\"\n");
        let err = PipelineSpec::parse("p.toml", &text).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        let d = &err.0[0];
        assert_eq!(d.message, format!("step id `{}…` is 100000 characters long: ids are at most 128", "a".repeat(40)));
        assert_eq!(d.step.as_deref(), Some("#1"), "the other messages name the step by its number");
        assert_eq!(d.location.as_ref().map(|l| (l.line, l.column)), Some((2, 6)));
        assert!(err.to_string().lines().all(|l| l.chars().count() < 200), "{err}");
        let cjk = "数".repeat(MAX_ID_CHARS);
        let text = format!("[[step]]\nid = \"{cjk}\"\nkind = \"k\"\n");
        let (spec, _) = PipelineSpec::parse("p.toml", &text).unwrap();
        assert_eq!(spec.steps[0].id, cjk);
    }

    // regression (a sibling of issue 13, item 18): a 100,000-character pipeline name was
    // accepted, went into every metric's labels, and its cache path was too long to make
    // (a warning that printed all of it).
    #[test]
    fn pipeline_names_are_at_most_128_characters() {
        let text = |name: &str| format!("[pipeline]\nname = \"{name}\"\n[[step]]\nid = \"a\"\nkind = \"k\"\n");
        let err = PipelineSpec::parse("p.toml", &text(&"n".repeat(100_000))).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        let d = &err.0[0];
        assert_eq!(
            d.message,
            format!("the pipeline's name `{}…` is 100000 characters long: names are at most 128", "n".repeat(40))
        );
        assert_eq!(d.location.as_ref().map(|l| (l.line, l.column)), Some((2, 8)));
        assert!(err.to_string().lines().all(|l| l.chars().count() < 200), "{err}");
        let cjk = "数".repeat(MAX_ID_CHARS);
        let (spec, _) = PipelineSpec::parse("p.toml", &text(&cjk)).unwrap();
        assert_eq!(spec.name, cjk);
        // One line of text: a line break split `weave runs`'s table.
        for (name, code) in [("a\\nb", "000A"), ("\\u001b[2J", "001B")] {
            let err = PipelineSpec::parse("p.toml", &text(name)).unwrap_err();
            assert_eq!(
                err.0[0].message,
                format!("the pipeline's name holds a control character (U+{code}): names are one line of text")
            );
        }
        let (spec, _) = PipelineSpec::parse("p.toml", &text("Support tickets, v2 (fr/de)")).unwrap();
        assert_eq!(spec.name, "Support tickets, v2 (fr/de)");
    }

    #[test]
    fn syntax_errors_point_at_the_place() {
        check_errors(
            "[pipeline]\nname = \n",
            &["2:8 invalid TOML: string values must be quoted, expected literal string"],
        );
    }

    #[test]
    fn alerts_and_providers_are_checked() {
        check_errors(
            "[[alert]]\nwhen = \"error_rate >> x\"\n[[alert]]\nwhen = \"step_duration > 5m\"\nnotify = \"command\"\n[llm.x]\nbase_url = \"localhost\"\napi_key_env = \"sk-123\"\nprompt_price_per_million = -1\n[[step]]\nid = \"a\"\nkind = \"k\"\n",
            &[
                "2:8 cannot read the condition `error_rate >> x`: write `metric > number`, such as `error_rate > 0.05`",
                "3:1 missing required key `command` (the command that receives each alert as JSON on stdin)",
                "7:12 `base_url` must start with http:// or https://",
                "6:1 missing required key `model` (the model name)",
                "8:15 `api_key_env` is the name of an environment variable (letters, digits and `_`, not starting with a digit), not the key itself",
                "9:28 `prompt_price_per_million` must be a price (a number, not negative)",
            ],
        );
    }

    // regression: `model = ""`, and a `base_url` with no host, a port past 65535, a query
    // (to which the request's path was added) or a space were accepted, and every request
    // failed at run time.
    #[test]
    fn providers_that_cannot_work_are_refused_where_written() {
        check_errors(
            "[llm.a]\nbase_url = \"http://\"\nmodel = \"\"\n[llm.b]\nbase_url = \"https://api.example.com:99999/v1\"\nmodel = \"m\"\napi_key_env = \"1KEY\"\n[llm.c]\nbase_url = \"http://host/v1?key=sk-1\"\nmodel = \" gpt-4o\"\n[llm.d]\nbase_url = \"http://ho st/v1\"\nmodel = \"m\"\n[llm.e]\nbase_url = \"http:///v1\"\nmodel = \"m\"\n[llm.f]\nbase_url = \"http://[::1/v1\"\nmodel = \"m\"\n[[step]]\nid = \"a\"\nkind = \"k\"\n",
            &[
                "2:12 `base_url` has no host: write it as http://HOST[:PORT][/PATH], such as \"http://127.0.0.1:8000/v1\"",
                "3:9 `model` is empty: name the model the provider serves",
                "5:12 `base_url` has the port `99999`: a port is a number from 1 to 65535",
                "7:15 `api_key_env` is the name of an environment variable (letters, digits and `_`, not starting with a digit), not the key itself",
                "9:12 `base_url` cannot hold a query or a fragment (`?`, `#`): the request's path is added to its end",
                "10:9 `model` has spaces around it (` gpt-4o`): the provider would not know it",
                "12:12 `base_url` holds a space or a control character",
                "15:12 `base_url` has no host: write it as http://HOST[:PORT][/PATH], such as \"http://127.0.0.1:8000/v1\"",
                "18:12 `base_url` has the host `[::1`, which is not a host name or an IP address",
            ],
        );
        // What works: a port, an IPv6 address, a path, a name with digits and `_`.
        let text = "[llm.a]\nbase_url = \"http://[::1]:8000/v1/\"\nmodel = \"m\"\napi_key_env = \"_KEY_2\"\n[llm.b]\nbase_url = \"https://API.example.com\"\nmodel = \"org/model-7b\"\n[[step]]\nid = \"a\"\nkind = \"k\"\n";
        let (spec, _) = PipelineSpec::parse("p.toml", text).unwrap();
        assert_eq!(spec.llm.len(), 2);
    }

    #[test]
    fn alert_metrics_are_known_ones() {
        check_errors(
            "[[alert]]\nwhen = \"error_rat > 0.1\"\n[[step]]\nid = \"a\"\nkind = \"k\"\n",
            &["2:8 unknown metric `error_rat` in the condition (did you mean `error_rate`?)"],
        );
    }

    #[test]
    fn an_empty_file_has_no_steps() {
        check_errors(
            "",
            &["- the pipeline has no steps (add steps as `[[step]]` tables, each with an `id` and a `kind`)"],
        );
    }

    #[test]
    fn max_bad_records_is_a_count_or_a_share_on_a_step_and_the_pipeline() {
        let text = "[pipeline]\nmax_bad_records = \"1.5%\"\n[[step]]\nid = \"a\"\nkind = \"k\"\nmax_bad_records = 100\n[[step]]\nid = \"b\"\nkind = \"k\"\n";
        let (spec, _) = PipelineSpec::parse("p.toml", text).unwrap();
        assert_eq!(spec.max_bad_records, BadRecordLimit::Share(0.015));
        assert_eq!(spec.steps[0].max_bad_records, Some(BadRecordLimit::Count(100)));
        assert_eq!(spec.steps[1].max_bad_records, None, "the default is the pipeline's to resolve");
        let (spec, _) = PipelineSpec::parse("p.toml", "[[step]]\nid = \"a\"\nkind = \"k\"\n").unwrap();
        assert_eq!(spec.max_bad_records, BadRecordLimit::default());
        check_errors(
            "[pipeline]\nmax_bad_records = 0.5\n[[step]]\nid = \"a\"\nkind = \"k\"\nmax_bad_records = \"101%\"\n",
            &[
                "2:19 `max_bad_records` must be a count of records (such as 100) or a share (such as \"1%\"), not a float",
                "6:19 `101%` is not a count of records (such as 100) or a share (such as \"1%\"): a share is from 0% to 100%",
            ],
        );
    }

    #[test]
    fn conditions_read_units() {
        assert_eq!(parse_condition("duration > 5m").unwrap().2, 300.0);
        assert_eq!(parse_condition("memory >= 3GiB").unwrap().1, Comparison::GreaterOrEqual);
        assert_eq!(parse_condition("error_rate > 5%").unwrap().2, 0.05);
        assert!(parse_condition("> 1").is_err());
    }
}
