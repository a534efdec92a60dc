//! Weave's LLM-backed steps: the LLM noisers of `augment`, `llm_generate` and
//! `llm_judge`, on an OpenAI-compatible `/chat/completions` endpoint named by an
//! `[llm.NAME]` table. The HTTP client (reqwest on a small tokio runtime) and the answer
//! cache (weave-cache) are this crate's; weave-steps takes it with its `llm` feature.
//!
//! - `client.rs`: one [`Endpoint`](client::Endpoint) per provider and pipeline (its HTTP
//!   client, API key, rate budget), shared by every step that names the provider; a
//!   request is retried on 429, 5xx, timeouts, dropped connections and bodies that are
//!   not JSON, with the step's retry policy and the provider's `Retry-After`. Requests
//!   are tasks on one runtime of two threads for the whole process, not threads.
//! - `limiter.rs`: the provider's budget of requests and tokens per minute, adjusted from
//!   its rate-limit headers, with a cool-down after a 429 that every step respects.
//! - `cache.rs`: every answer stored under a key of what decides it, so that a re-run or
//!   a resumed run never sends a request that already has an answer.
//! - `prompt.rs`: templates with `{variable}`s, checked when the pipeline is built;
//!   `schema.rs`: the JSON-schema subset structured answers are checked against.
//! - Here: [`LlmCall`], what every LLM step shares: its keys, its `concurrency` slots
//!   (requests in flight, over every batch of the step), and the step's figures
//!   (requests, tokens, cost, cache hits), summed over its calls.
#![deny(missing_docs)]

mod augment;
mod batch;
mod cache;
mod client;
mod distinct;
mod estimate;
mod generate;
mod judge;
mod limiter;
mod prompt;
mod schema;
mod vary;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use weave_core::{CanonicalConfig, Diagnostic, ErrorOrigin, LlmProvider, Params, RetryPolicy, StepContext, StepError};

pub use augment::LlmAugment;
pub use augment::{NOISER_KEYS, build as build_augment, noiser_names};
pub use generate::KIND as GENERATE_KIND;
pub use generate::LlmGenerate;
pub use judge::KIND as JUDGE_KIND;
pub use judge::LlmJudge;

use weave_core::missing_field;

use cache::{RequestCache, request_key};
use client::{Answer, CallError, Endpoint, Tally};
use weave_cache::Key;

/// The keys every LLM step takes.
pub const COMMON_KEYS: &[&str] =
    &["llm", "concurrency", "temperature", "top_p", "max_tokens", "stop", "system", "vary_by"];

/// Requests a step keeps in flight when `concurrency` is not given.
const DEFAULT_CONCURRENCY: u64 = 16;

/// The tokens an answer is assumed to take, for the rate budget, when `max_tokens` is not
/// given (the difference is settled when the answer comes).
const ASSUMED_ANSWER_TOKENS: u64 = 256;

/// The share of the prices the Batch API takes off when `batch_discount` is not given
/// (OpenAI's).
pub(crate) const DEFAULT_BATCH_DISCOUNT: f64 = 0.5;

/// The cost per record of an LLM step, for the critical path and the cache (`auto` keeps
/// the output of steps this costly).
const COST: f64 = 1000.0;

/// The sampling parameters sent with every request.
#[derive(Debug, Clone, Default)]
struct Sampling {
    temperature: Option<f64>,
    top_p: Option<f64>,
    max_tokens: Option<u64>,
    stop: Vec<String>,
}

/// One request to make.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// The system message, if any.
    pub(crate) system: Option<String>,
    /// The user message.
    pub(crate) user: String,
    /// The seed sent with it (31 bits, which every server takes).
    pub(crate) seed: u64,
}

impl Request {
    /// A request whose seed comes from the pipeline's seed, the messages, `sample` (the
    /// number of the answer, when one prompt asks for several) and the record's `salt`
    /// (`vary_by`, [`vary::VaryBy::salt`]): the same messages and salt give the same
    /// request, whatever the step, batch or thread. Without a salt the seed is the one
    /// earlier versions sent, so that their answers in the cache still serve.
    pub(crate) fn new(
        system: Option<String>,
        user: String,
        pipeline_seed: u64,
        sample: u64,
        salt: Option<&[u8; 32]>,
    ) -> Request {
        let mut h = blake3::Hasher::new_derive_key("weave llm request seed v1");
        h.update(&pipeline_seed.to_le_bytes());
        h.update(&sample.to_le_bytes());
        for part in [system.as_deref().unwrap_or(""), user.as_str()] {
            h.update(&(part.len() as u64).to_le_bytes());
            h.update(part.as_bytes());
        }
        if let Some(salt) = salt {
            h.update(b"salt");
            h.update(salt);
        }
        let mut first = [0u8; 8];
        first.copy_from_slice(&h.finalize().as_bytes()[..8]);
        Request { system, user, seed: u64::from_le_bytes(first) >> 33 }
    }
}

/// What became of one request.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Outcome {
    /// The model's answer (from the cache or fresh).
    Answered(Answer),
    /// No answer: the record goes to the quarantine file with this reason.
    Rejected(String),
}

/// What every LLM step shares: the provider's endpoint, the cache of answers, the retry
/// policy and sampling, and the step's slots for requests in flight.
#[derive(Debug)]
pub(crate) struct LlmCall {
    worker: Arc<Worker>,
    concurrency: usize,
    /// One per request in flight, over every batch of the step.
    slots: Arc<Slots>,
    /// Held by the batch handing its requests over: one batch at a time, so that the
    /// batches' requests go out in the order the batches came, and the first batch is done
    /// first rather than every batch at the end.
    turn: Mutex<()>,
    /// The answers the step has had in this run, for its `distinct` figure (each call
    /// adds how much the count grew).
    seen: Mutex<distinct::Distinct>,
    /// A dry run (`weave plan --cost`): count the requests, send none.
    dry_run: bool,
    /// How a dry run's stand-in answers are shaped (the kind sets it).
    pub(crate) shape: estimate::Shape,
}

#[derive(Debug)]
struct Worker {
    endpoint: Arc<Endpoint>,
    cache: Option<Arc<RequestCache>>,
    retry: RetryPolicy,
    sampling: Sampling,
    response_format: Option<serde_json::Value>,
}

/// A step's requests in flight: at most `concurrency`, whatever the number of its batches
/// at once. A slot is taken by the batch's thread before a request is looked up in the
/// cache and sent, and given back when its answer is stored (or it failed).
#[derive(Debug)]
struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// One slot taken, given back when dropped (on the runtime's thread that finished the
/// request, or on the batch's thread for an answer found in the cache).
#[derive(Debug)]
struct Slot(Arc<Slots>);

impl Slots {
    fn new(n: usize) -> Arc<Slots> {
        Arc::new(Slots { free: Mutex::new(n), freed: Condvar::new() })
    }

    /// Waits for a free slot; `None` once `stopped` says so (asked every 50 ms).
    fn take(self: &Arc<Self>, stopped: impl Fn() -> bool) -> Option<Slot> {
        let mut free = self.free.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if stopped() {
                return None;
            }
            if *free > 0 {
                *free -= 1;
                return Some(Slot(Arc::clone(self)));
            }
            free = self.freed.wait_timeout(free, Duration::from_millis(50)).unwrap_or_else(PoisonError::into_inner).0;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.0.freed.notify_one();
    }
}

/// The reply of one request, sent to the batch waiting for it; a request whose task ends
/// without one (it panicked) replies that it failed, so that the batch does not wait forever.
struct Reply {
    index: usize,
    to: Option<Sender<Done>>,
}

impl Reply {
    fn send(mut self, result: Result<(Answer, bool), CallError>, tally: Tally) {
        if let Some(to) = self.to.take() {
            let _ = to.send(Done { index: self.index, result, tally });
        }
    }
}

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(to) = self.to.take() {
            let result = Err(CallError::Fatal("an LLM request task panicked".into()));
            let _ = to.send(Done { index: self.index, result, tally: Tally::default() });
        }
    }
}

/// Requests of this process on their way: from the decision to send one to its answer
/// stored in the cache (or its failure).
static IN_FLIGHT: (Mutex<usize>, Condvar) = (Mutex::new(0), Condvar::new());

/// One request counted in [`IN_FLIGHT`] while this lives.
#[derive(Debug)]
struct InFlight;

impl InFlight {
    fn enter() -> InFlight {
        *IN_FLIGHT.0.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        InFlight
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut n = IN_FLIGHT.0.lock().unwrap_or_else(PoisonError::into_inner);
        *n = n.saturating_sub(1);
        IN_FLIGHT.1.notify_all();
    }
}

/// How many LLM requests of this process are on their way now.
pub fn requests_in_flight() -> usize {
    *IN_FLIGHT.0.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits, for at most `grace`, until every LLM request of this process that is on its
/// way has its answer stored in the cache (or has failed), and returns how many still
/// have not. For a run that stopped (Ctrl-C, a failure): the provider has charged for the
/// requests it received, and an answer stored is one the next run does not pay for again.
/// Once the run's cancel flag is up no request is sent, and none is retried, so this waits
/// only for answers already asked for.
pub fn settle_requests(grace: Duration) -> usize {
    let deadline = std::time::Instant::now() + grace;
    let mut n = IN_FLIGHT.0.lock().unwrap_or_else(PoisonError::into_inner);
    while *n > 0 {
        let now = std::time::Instant::now();
        if now >= deadline {
            break;
        }
        n = IN_FLIGHT.1.wait_timeout(n, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
    }
    *n
}

struct Done {
    index: usize,
    result: Result<(Answer, bool), CallError>,
    tally: Tally,
}

impl LlmCall {
    /// Reads the keys every LLM step takes (`llm`, `concurrency`, `temperature`,
    /// `top_p`, `max_tokens`, `stop`) from the step `step`, or from `inner` (a noiser's
    /// table) for those written there; `temperature` is the kind's default, and
    /// `response_format` is sent with every request.
    pub(crate) fn read(
        step: &Params,
        inner: Option<&Params>,
        temperature: f64,
        response_format: Option<serde_json::Value>,
    ) -> Option<LlmCall> {
        let p = &Either { step, inner };
        let provider = p.pick("llm").llm("llm");
        let concurrency = step.u64("concurrency").unwrap_or(DEFAULT_CONCURRENCY);
        if !(1..=1024).contains(&concurrency)
            && let Some(item) = step.item("concurrency")
        {
            step.error_at(item, "`concurrency` (requests in flight) must be from 1 to 1024");
        }
        let (mt, stop) = (p.pick("max_tokens"), p.pick("stop"));
        let sampling = Sampling {
            temperature: Some(number_in(p.pick("temperature"), "temperature", 0.0, 2.0).unwrap_or(temperature)),
            top_p: number_in(p.pick("top_p"), "top_p", 0.0, 1.0),
            max_tokens: mt.u64("max_tokens"),
            stop: stop.str_list("stop").unwrap_or_default(),
        };
        if sampling.max_tokens == Some(0)
            && let Some(item) = mt.item("max_tokens")
        {
            mt.error_at(item, "`max_tokens` must be at least 1");
        }
        if sampling.stop.len() > 4
            && let Some(item) = stop.item("stop")
        {
            stop.error_at(item, "`stop` takes at most 4 sequences (the OpenAI API's limit)");
        }
        let provider = provider?;
        let ctx = step.context();
        let shards = ctx.shard().map_or(1, |s| s.count());
        let endpoint =
            ctx.shared(&format!("llm.{}", provider.name), || Endpoint::for_shards(Arc::clone(&provider), shards));
        if let Some(why) = endpoint.unusable()
            && endpoint.first_warning()
        {
            step.push(Diagnostic::warning(why).with_code("llm-key"));
        }
        let cache = ctx.cache_dir().map(|dir| ctx.shared("llm.answers", || RequestCache::new(dir.to_path_buf())));
        let concurrency = concurrency.clamp(1, 1024) as usize;
        Some(LlmCall {
            worker: Arc::new(Worker { endpoint, cache, retry: step.retry_policy(), sampling, response_format }),
            concurrency,
            slots: Slots::new(concurrency),
            turn: Mutex::new(()),
            seen: Mutex::default(),
            dry_run: ctx.is_dry_run(),
            shape: estimate::Shape::default(),
        })
    }

    /// What the step needs: the executor runs a few of its batches at once (one per 256
    /// of the concurrency, from 2 to 8), each waiting on the step's slots. A batch's
    /// requests go out one after another as slots free up, the batches in turn, so that
    /// while one batch waits for its last answers the next one's requests fill the slots
    /// it frees: 2 batches of the loaders' 2,048 rows keep 1,024 slots full, 4 batches of
    /// 342 rows do. More batches would hold more prompts and answers in memory (which the
    /// memory budget does not see), each on a thread of its own.
    pub(crate) fn resources(&self) -> weave_core::Resources {
        let batches = (self.concurrency / 256).clamp(2, 8) as u32;
        weave_core::Resources { io_concurrency: Some(batches), ..weave_core::Resources::default() }
    }

    /// The token limit of an answer.
    pub(crate) fn max_tokens(&self) -> Option<u64> {
        self.worker.sampling.max_tokens
    }

    /// The provider.
    pub(crate) fn provider(&self) -> &LlmProvider {
        self.worker.endpoint.provider()
    }

    /// The step's configuration for the cache key: its own keys (but those declared
    /// output-neutral, such as `concurrency`) and the provider's keys that decide its
    /// answers (its endpoint and model; never its API key or its limits).
    pub(crate) fn config(&self, p: &Params) -> CanonicalConfig {
        let parse = |c: CanonicalConfig| -> serde_json::Value {
            serde_json::from_slice(c.as_bytes()).unwrap_or(serde_json::Value::Null)
        };
        let provider = self.provider();
        // The provider's keys as written; its endpoint and model always, for a provider
        // made in Rust rather than read from a pipeline file.
        let mut llm = match parse(provider.config.clone()) {
            serde_json::Value::Object(m) => m,
            _ => serde_json::Map::new(),
        };
        llm.insert("base_url".to_owned(), provider.base_url.clone().into());
        llm.insert("model".to_owned(), provider.model.clone().into());
        let v = serde_json::json!({ "step": parse(p.canonical()), "llm": llm });
        CanonicalConfig::of(&v).unwrap_or_default()
    }

    /// Sends `requests` (at most `concurrency` at once, over every batch of the step in
    /// flight), and returns what became of each, in order. A request that every other
    /// would share the fate of (a refused key, an unreachable endpoint) fails the call;
    /// the step's figures are added to `ctx`.
    pub(crate) fn run(&self, requests: Vec<Request>, ctx: &mut StepContext) -> Result<Vec<Outcome>, StepError> {
        let n = requests.len();
        if n == 0 {
            return Ok(Vec::new());
        }
        // The same request twice in a call (two records with one text) is sent once. The
        // messages are compared where they are, not copied: a batch's prompts are most
        // of what an LLM step holds.
        let mut slot_of: Vec<usize> = Vec::with_capacity(n);
        let mut first_of_its_kind: Vec<bool> = Vec::with_capacity(n);
        {
            let mut first: HashMap<(Option<&str>, &str, u64), usize> = HashMap::with_capacity(n);
            for r in &requests {
                let unique = first.len();
                let slot = *first.entry((r.system.as_deref(), r.user.as_str(), r.seed)).or_insert(unique);
                first_of_its_kind.push(slot == unique);
                slot_of.push(slot);
            }
        }
        let unique: Vec<Request> =
            requests.into_iter().zip(first_of_its_kind).filter_map(|(r, k)| k.then_some(r)).collect();
        // Counted, not silent: records whose request was another's (see `vary_by`).
        let shared = (n - unique.len()) as i64;
        if self.dry_run {
            let outcomes = self.estimate(unique, ctx);
            return Ok(slot_of.into_iter().map(|i| outcomes[i].clone()).collect());
        }
        let done = if self.provider().batch { self.run_batch(unique, ctx)? } else { self.run_each(unique, ctx)? };
        self.figures(done, shared, slot_of, ctx)
    }

    /// [`LlmCall::run`]'s requests (already told apart) one by one, as they take slots.
    fn run_each(&self, unique: Vec<Request>, ctx: &StepContext) -> Result<Vec<Done>, StepError> {
        let n = unique.len();
        let runtime = client::runtime().map_err(StepError::fatal)?;
        let (reply, results) = crossbeam_channel::unbounded();
        let cancel = Arc::new(AtomicBool::new(false));
        let stop = ctx.cancel_flag();
        {
            let _turn = self.turn.lock().unwrap_or_else(PoisonError::into_inner);
            for (index, request) in unique.into_iter().enumerate() {
                // The run stopped: no request is sent, and none is waited for.
                let Some(slot) = self.slots.take(|| stop.load(Ordering::Relaxed)) else {
                    cancel.store(true, Ordering::Relaxed);
                    return Err(StepError::transient("the run is being cancelled"));
                };
                let reply = Reply { index, to: Some(reply.clone()) };
                let prepared = match self.worker.look_up(&request) {
                    Lookup::Hit(a) => {
                        reply.send(Ok((a, true)), Tally::default());
                        continue;
                    }
                    Lookup::Miss(p) => p,
                };
                // Counted from now until its answer is stored, so that a stopped run can
                // wait for it.
                let in_flight = InFlight::enter();
                let worker = Arc::clone(&self.worker);
                let (cancel, stop) = (Arc::clone(&cancel), Arc::clone(&stop));
                let task = async move {
                    let cancelled = move || cancel.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed);
                    let mut tally = Tally::default();
                    let result = if cancelled() {
                        Err(CallError::Cancelled)
                    } else {
                        worker.ask(prepared, &cancelled, &mut tally).await
                    };
                    // One turn of the runtime first: the response's connection goes back to
                    // the pool then, so the request that takes this slot finds it there
                    // rather than opening another.
                    tokio::task::yield_now().await;
                    drop((in_flight, slot));
                    reply.send(result, tally);
                };
                runtime.spawn(task);
            }
        }
        drop(reply);
        match collect(&results, n, ctx) {
            Ok(d) => Ok(d),
            Err(e) => {
                // Queued requests are dropped unsent; those in flight finish and are kept.
                cancel.store(true, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// The outcomes of a call's requests (`done`, one per distinct request, in order; each
    /// record's is `slot_of` it), with the step's figures added to `ctx`.
    fn figures(
        &self,
        done: Vec<Done>,
        shared: i64,
        slot_of: Vec<usize>,
        ctx: &mut StepContext,
    ) -> Result<Vec<Outcome>, StepError> {
        let n = done.len();
        let mut tally = Tally::default();
        let (mut answers, mut hits, mut failed) = (0i64, 0i64, 0i64);
        let (mut prompt_tokens, mut completion_tokens, mut cached_tokens) = (0i64, 0i64, 0i64);
        let mut outcomes = Vec::with_capacity(n);
        let mut fatal = None;
        for d in done {
            tally.requests += d.tally.requests;
            tally.retries += d.tally.retries;
            tally.rate_limited += d.tally.rate_limited;
            tally.failed += d.tally.failed;
            match d.result {
                Ok((a, cached)) => {
                    let tokens = (a.prompt_tokens as i64, a.completion_tokens as i64);
                    if cached {
                        hits += 1;
                        cached_tokens += tokens.0 + tokens.1;
                    } else {
                        answers += 1;
                        prompt_tokens += tokens.0;
                        completion_tokens += tokens.1;
                    }
                    outcomes.push(Outcome::Answered(a));
                }
                Err(CallError::Rejected(why)) => {
                    failed += 1;
                    outcomes.push(Outcome::Rejected(why));
                }
                Err(CallError::Fatal(why) | CallError::NotFound(why)) => {
                    fatal.get_or_insert(StepError::fatal(why));
                    outcomes.push(Outcome::Rejected(String::new()));
                }
                Err(CallError::Unreachable(why)) => {
                    fatal.get_or_insert(StepError::Fatal {
                        message: why,
                        origin: ErrorOrigin::Environment,
                        source: None,
                    });
                    outcomes.push(Outcome::Rejected(String::new()));
                }
                Err(CallError::Cancelled) => {
                    fatal.get_or_insert(StepError::transient("the run is being cancelled"));
                    outcomes.push(Outcome::Rejected(String::new()));
                }
            }
        }
        // Paid for, whatever happens to the batch. The requests also count in the step's
        // retries and error rate, with the executor's retries of calls.
        let Tally { requests, failed: failed_attempts, retries, .. } = tally;
        ctx.count_requests(weave_core::RequestCounts { requests, failed: failed_attempts, retries });
        ctx.add_stat("requests", tally.requests as i64);
        ctx.add_stat("answers", answers);
        ctx.add_stat("cache_hits", hits);
        ctx.add_stat("prompt_tokens", prompt_tokens);
        ctx.add_stat("completion_tokens", completion_tokens);
        for (name, v) in [("retries", tally.retries as i64), ("rate_limited", tally.rate_limited as i64)] {
            if v > 0 {
                ctx.add_stat(name, v);
            }
        }
        if failed > 0 {
            ctx.add_stat("failed_requests", failed);
        }
        if shared > 0 {
            ctx.add_stat("shared_requests", shared);
        }
        ctx.add_stat("distinct", self.new_distinct(&outcomes));
        if cached_tokens > 0 {
            ctx.add_stat("cached_tokens", cached_tokens);
        }
        let provider = self.provider();
        if provider.prompt_price_per_million.is_some() || provider.completion_price_per_million.is_some() {
            // The Batch API's answers cost a share of the price.
            let paid =
                if provider.batch { 1.0 - provider.batch_discount.unwrap_or(DEFAULT_BATCH_DISCOUNT) } else { 1.0 };
            let cost = prompt_tokens as f64 * provider.prompt_price_per_million.unwrap_or(0.0) / 1e6
                + completion_tokens as f64 * provider.completion_price_per_million.unwrap_or(0.0) / 1e6;
            ctx.add_stat("cost", cost * paid);
        }
        match fatal {
            Some(e) => Err(e),
            None => Ok(slot_of.into_iter().map(|i| outcomes[i].clone()).collect()),
        }
    }
}

impl LlmCall {
    /// How much the step's count of different answers grows with those in `outcomes`
    /// (the calls' amounts add up to the count: see `distinct.rs`).
    fn new_distinct(&self, outcomes: &[Outcome]) -> i64 {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let before = seen.count();
        for o in outcomes {
            if let Outcome::Answered(a) = o {
                seen.add(&a.content);
            }
        }
        seen.count() as i64 - before as i64
    }
}

/// Waits for the `n` answers of one call, in order; gives up when the run is cancelled.
fn collect(results: &Receiver<Done>, n: usize, ctx: &StepContext) -> Result<Vec<Done>, StepError> {
    let mut slots: Vec<Option<Done>> = (0..n).map(|_| None).collect();
    let mut got = 0;
    while got < n {
        match results.recv_timeout(Duration::from_millis(50)) {
            Ok(d) => {
                let i = d.index;
                if slots[i].replace(d).is_none() {
                    got += 1;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if ctx.is_cancelled() {
                    return Err(StepError::transient("the run is being cancelled"));
                }
            }
            Err(RecvTimeoutError::Disconnected) => {
                return Err(StepError::internal("an LLM request worker stopped without answering"));
            }
        }
    }
    Ok(slots.into_iter().flatten().collect())
}

impl Worker {
    /// The request's body as JSON, without `max_tokens` (the key's part).
    fn body(&self, r: &Request) -> serde_json::Value {
        let mut messages = Vec::with_capacity(2);
        if let Some(s) = &r.system {
            messages.push(serde_json::json!({"role": "system", "content": s}));
        }
        messages.push(serde_json::json!({"role": "user", "content": r.user}));
        let mut body = serde_json::json!({
            "model": self.endpoint.provider().model,
            "messages": messages,
            "seed": r.seed,
        });
        let s = &self.sampling;
        if let Some(t) = s.temperature {
            body["temperature"] = t.into();
        }
        if let Some(t) = s.top_p {
            body["top_p"] = t.into();
        }
        if !s.stop.is_empty() {
            body["stop"] = s.stop.clone().into();
        }
        if let Some(f) = &self.response_format {
            body["response_format"] = f.clone();
        }
        body
    }

    /// The answer to `r` from the cache, or the request to send for it.
    fn look_up(&self, r: &Request) -> Lookup {
        let mut body = self.body(r);
        let key = request_key(self.endpoint.url(), &body);
        let max_tokens = self.sampling.max_tokens;
        if let Some(a) = self.cache.as_ref().and_then(|c| c.get(&key, max_tokens)) {
            return Lookup::Hit(a);
        }
        if let Some(m) = max_tokens {
            body["max_tokens"] = m.into();
        }
        let bytes = body.to_string().into_bytes();
        // About four bytes a token, plus the answer.
        let tokens = bytes.len() as u64 / 4 + max_tokens.unwrap_or(ASSUMED_ANSWER_TOKENS);
        Lookup::Miss(Prepared { key, bytes, tokens, seed: r.seed })
    }

    /// Asks for the answer to a request the cache did not have, and stores it: it is on
    /// disk when this returns.
    async fn ask(
        self: Arc<Self>,
        p: Prepared,
        cancelled: &(dyn Fn() -> bool + Send + Sync),
        tally: &mut Tally,
    ) -> Result<(Answer, bool), CallError> {
        let answer = self.endpoint.complete(&p.bytes, p.tokens, &self.retry, p.seed, cancelled, tally).await?;
        let Some(cache) = &self.cache else { return Ok((answer, false)) };
        // Handed to the cache's pack thread, which writes and syncs it with the others
        // that came meanwhile; waited for without a thread, and without touching the disk
        // on this one (a write stalled by the kernel's dirty-page throttle would hold up
        // every request of the runtime).
        let (stored, on_disk) = tokio::sync::oneshot::channel();
        cache.put_then(&p.key, &answer, self.sampling.max_tokens, move || {
            let _ = stored.send(());
        });
        let _ = on_disk.await;
        Ok((answer, false))
    }
}

/// What [`Worker::look_up`] found.
enum Lookup {
    /// The cache's answer.
    Hit(Answer),
    /// No answer stored: the request to send.
    Miss(Prepared),
}

/// A request ready to send: its body, its cache key, its cost in tokens for the budget.
struct Prepared {
    key: Key,
    bytes: Vec<u8>,
    tokens: u64,
    seed: u64,
}

/// A step's table and, for a noiser written as a table, that table: each key is read from
/// the one that has it (the inner one first).
pub(crate) struct Either<'a> {
    pub(crate) step: &'a Params,
    pub(crate) inner: Option<&'a Params>,
}

impl Either<'_> {
    /// The table that has `key` (the step's when neither has it). A key in both is an
    /// error at the step's copy.
    pub(crate) fn pick(&self, key: &str) -> &Params {
        match self.inner {
            Some(inner) if inner.has(key) => {
                if let Some(item) = self.step.item(key) {
                    self.step.error_at(item, format!("`{key}` is given twice: here and in the `noiser` table"));
                }
                inner
            }
            _ => self.step,
        }
    }
}

/// A number from `min` to `max` at `key`, if given and right.
fn number_in(p: &Params, key: &str, min: f64, max: f64) -> Option<f64> {
    let v = p.f64(key)?;
    if (min..=max).contains(&v) {
        Some(v)
    } else {
        if let Some(item) = p.item(key) {
            p.error_at(item, format!("`{key}` must be from {min} to {max}, not {v}"));
        }
        None
    }
}

/// The parsed JSON of an answer (the part between the first `{` or `[` and the last `}` or
/// `]` when the model wrapped it in prose or a code fence), or why it is not JSON.
pub(crate) fn answer_json(text: &str) -> Result<serde_json::Value, String> {
    answer_parsed(text, |t| serde_json::from_str(t).ok())
}

/// An answer's JSON as a value, read exactly ([`weave_core::Value::from_json`]): an object's fields in
/// the order the model wrote them, integers with their digits.
pub(crate) fn answer_value(text: &str) -> Result<weave_core::Value, String> {
    answer_parsed(text, |t| weave_core::Value::from_json(t).ok())
}

/// The answer's JSON (see [`answer_json`]) read by `parse`.
fn answer_parsed<T>(text: &str, parse: impl Fn(&str) -> Option<T>) -> Result<T, String> {
    let t = text.trim();
    if let Some(v) = parse(t) {
        return Ok(v);
    }
    let start = t.find(['{', '[']);
    let end = t.rfind(['}', ']']);
    if let (Some(s), Some(e)) = (start, end)
        && s < e
        && let Some(v) = parse(&t[s..=e])
    {
        return Ok(v);
    }
    let err = serde_json::from_str::<serde_json::Value>(t).err().map(|e| e.to_string()).unwrap_or_default();
    let shown: String = t.chars().take(60).collect();
    Err(format!("the answer is not JSON ({err}): {shown:?}"))
}

/// Adds `llm_generate` and `llm_judge` to `registry` (the LLM noisers are `augment`'s,
/// which weave-steps builds through [`build_augment`]).
pub fn register(registry: &mut weave_core::Registry) {
    registry.register(weave_core::StepKind::clone(&GENERATE_KIND));
    registry.register(weave_core::StepKind::clone(&JUDGE_KIND));
}

#[cfg(test)]
mod tests {
    use super::*;
    use weave_core::{BuildContext, ConfTable, SourceFile};
    use weave_testkit::{Reply, TestServer};

    /// A step's [`LlmCall`] with `config` (its keys) against the provider `local` at
    /// `url`, with a cache of answers in `cache`.
    fn llm_call(url: &str, config: &str, cache: &std::path::Path) -> LlmCall {
        let provider = LlmProvider {
            name: "local".into(),
            base_url: url.into(),
            model: "m".into(),
            api_key_env: None,
            requests_per_minute: None,
            tokens_per_minute: None,
            timeout: Some(Duration::from_secs(30)),
            prompt_price_per_million: None,
            completion_price_per_million: None,
            batch: false,
            batch_discount: None,
            batch_poll_interval: None,
            config: Default::default(),
        };
        let ctx = Arc::new(BuildContext::new([provider], Some(cache.to_path_buf())));
        let text = format!("llm = \"local\"\n{config}");
        let table = ConfTable::parse(&text).expect("test TOML");
        let retry = RetryPolicy {
            max_retries: 2,
            retry_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            ..RetryPolicy::default()
        };
        let p = Params::new(table, SourceFile::new("t.toml", text.as_str()), "step", Some("s".into()))
            .with_context(ctx)
            .with_retry(retry);
        let call = LlmCall::read(&p, None, 0.0, None).expect("the step's LLM keys");
        assert!(!p.finish(COMMON_KEYS).has_errors());
        call
    }

    /// A server that answers `re: <prompt>` after `latency`.
    fn slow_server(latency: Duration) -> TestServer {
        TestServer::builder().latency(latency).start(|r| Reply::text(format!("re: {}", r.prompt()))).unwrap()
    }

    fn requests(prefix: &str, n: usize) -> Vec<Request> {
        (0..n).map(|i| Request::new(None, format!("{prefix} {i}"), 1, 0, None)).collect()
    }

    /// Runs `call` on `n` requests on a thread of its own, stops the run once `sent` of
    /// them are at the server, and returns what the call returned. The run is stopped
    /// before a failed wait is reported, so that its requests do not outlive the test
    /// (they are counted process-wide, and the next test waits for them to settle).
    fn stopped_once_sent(
        call: &Arc<LlmCall>,
        server: &TestServer,
        n: usize,
        sent: usize,
    ) -> Result<Vec<Outcome>, StepError> {
        let stop = Arc::new(AtomicBool::new(false));
        let batch = {
            let (call, stop) = (Arc::clone(call), Arc::clone(&stop));
            std::thread::spawn(move || {
                let mut ctx = StepContext::new("s", 0, 0, stop);
                call.run(requests("stop", n), &mut ctx)
            })
        };
        let reached = server.wait_until(Duration::from_secs(30), |_, total| total >= sent);
        stop.store(true, Ordering::Relaxed);
        let result = batch.join().unwrap();
        assert!(reached, "{} of {sent} requests reached the server", server.total());
        result
    }

    /// Held by the tests that count what is in flight in the whole process (requests
    /// sent, the client's threads): run side by side, each would count the other's.
    static PROCESS_WIDE: std::sync::Mutex<()> = std::sync::Mutex::new(());

    fn process_wide() -> std::sync::MutexGuard<'static, ()> {
        PROCESS_WIDE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The threads of this process whose name starts with `prefix` now.
    fn threads_named(prefix: &str) -> usize {
        let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
        tasks
            .flatten()
            .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix)))
            .count()
    }

    #[test]
    fn requests_in_flight_stay_within_the_concurrency_over_every_batch_and_are_not_threads() {
        let _alone = process_wide();
        let server = slow_server(Duration::from_millis(100));
        let dir = tempfile::tempdir().unwrap();
        let call = Arc::new(llm_call(&server.url(), "concurrency = 256", dir.path()));
        // Three batches at once, as the executor runs them, 1,200 requests in all; a
        // watcher counts the client's threads meanwhile.
        let done = Arc::new(AtomicBool::new(false));
        let watcher = {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let mut most = 0;
                while !done.load(Ordering::Relaxed) {
                    most = most.max(threads_named("weave-llm"));
                    std::thread::sleep(Duration::from_millis(5));
                }
                most
            })
        };
        let batches: Vec<_> = (0..3)
            .map(|b| {
                let call = Arc::clone(&call);
                std::thread::spawn(move || {
                    let mut ctx = StepContext::new("s", 0, 0, Arc::default());
                    let out = call.run(requests(&format!("batch {b}"), 400), &mut ctx).expect("answers");
                    (b, out, ctx.take_added_stats())
                })
            })
            .collect();
        for handle in batches {
            let (b, out, stats) = handle.join().unwrap();
            let texts: Vec<String> = out
                .into_iter()
                .map(|o| match o {
                    Outcome::Answered(a) => a.content,
                    Outcome::Rejected(why) => panic!("rejected: {why}"),
                })
                .collect();
            let expected: Vec<String> = (0..400).map(|i| format!("re: batch {b} {i}")).collect();
            assert_eq!(texts, expected, "in order");
            let requests = stats.iter().find(|(k, _)| k == "requests").map(|(_, v)| v.clone());
            assert_eq!(requests, Some(weave_core::Value::Int(400)));
        }
        done.store(true, Ordering::Relaxed);
        let threads = watcher.join().unwrap();
        assert_eq!(server.total(), 1200);
        let most = server.max_in_flight();
        assert!((128..=256).contains(&most), "{most} requests in flight at most");
        assert!(
            threads <= client::IO_THREADS + client::BLOCKING_THREADS,
            "{threads} client threads for {most} requests in flight"
        );
    }

    #[test]
    fn a_stop_sends_nothing_more_and_the_answers_in_flight_land_in_the_cache() {
        let _alone = process_wide();
        // Every request takes a while: the run stops with four in flight, out of twenty.
        let server = slow_server(Duration::from_millis(300));
        let dir = tempfile::tempdir().unwrap();
        let call = Arc::new(llm_call(&server.url(), "concurrency = 4", dir.path()));
        let err = stopped_once_sent(&call, &server, 20, 4).unwrap_err();
        assert_eq!(err.to_string(), "the run is being cancelled");
        assert_eq!(settle_requests(Duration::from_secs(30)), 0);
        assert_eq!((server.total(), server.answered()), (4, 4), "nothing new went out after the stop");
        // The next run takes the four from the cache and asks only for the rest.
        let mut ctx = StepContext::new("s", 0, 0, Arc::default());
        let out = call.run(requests("stop", 20), &mut ctx).unwrap();
        assert_eq!(out.len(), 20);
        assert_eq!(server.total(), 20);
        let hits = ctx.take_added_stats().into_iter().find(|(k, _)| k == "cache_hits").map(|(_, v)| v);
        assert_eq!(hits, Some(weave_core::Value::Int(4)));
    }

    #[test]
    fn a_stop_cuts_short_the_waits_of_a_cool_down() {
        let _alone = process_wide();
        // The provider asks for an hour's pause: the request waits on a timer, which a
        // stop ends at once. The other request waits on the same pause if the first
        // answer came before it was sent (on a loaded machine): it is stopped there.
        let server = TestServer::start(|_| Reply::too_many_requests("3600")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let call = Arc::new(llm_call(&server.url(), "concurrency = 2", dir.path()));
        let err = stopped_once_sent(&call, &server, 2, 1).unwrap_err();
        assert_eq!(err.to_string(), "the run is being cancelled");
        assert_eq!(settle_requests(Duration::from_secs(30)), 0, "the waits ended");
        assert!(server.total() <= 2, "no retry after the stop: {}", server.total());
        assert!(server.counts().values().all(|&n| n == 1), "each request sent once at most");
    }
}
