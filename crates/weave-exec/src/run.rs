//! The run: stages on threads, bounded channels between them, a coordinator that watches.

use std::any::Any;
use std::collections::HashMap;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender, bounded, unbounded};
use weave_core::{
    BadRecordLimit, BadRecordPolicy, Batch, Event, Merge, Pipeline, PipelineStep, Record, Rejected, RequestCounts,
    RetryPolicy, RunStatus, Shape, Sink, Source, StatefulTransform, Step, StepCache, StepContext, StepCounts,
    StepError, Subscriber, Transform, Value,
};

use crate::budget::{MemoryBudget, Permit};
use crate::error::Error;
use crate::files::RunFiles;
use crate::quarantine::{Exclusions, Quarantine};

/// How often blocked threads look at the cancel flag, and the coordinator at deadlines.
pub(crate) const TICK: Duration = Duration::from_millis(20);

/// The most batches an edge may hold: a channel's slots are allocated when it is made, and
/// the memory budget, not the channels, is what bounds the data in flight.
pub const MAX_CHANNEL_CAPACITY: usize = 1024;

/// Settings of one run that are not in the pipeline file.
#[derive(Clone)]
pub struct ExecOptions {
    /// Batches an edge holds before its producer waits (default 4; from 1 to
    /// [`MAX_CHANNEL_CAPACITY`], a value outside is taken to the nearer bound with a
    /// warning).
    pub channel_capacity: usize,
    /// Who hears the run's events.
    pub subscribers: Vec<Arc<dyn Subscriber>>,
    /// Set it to stop the run (Ctrl-C); every thread notices within a few milliseconds.
    pub cancel: Arc<AtomicBool>,
    /// Where records set aside by `on_bad_record = "skip"` go. Without it, a step with that
    /// policy that rejects a record fails the run rather than lose the record.
    pub quarantine: Option<PathBuf>,
    /// How long the run may go with no batch moving and no step working before it is
    /// stopped as stalled (default 10 s): a deadlock is an error, never a hang.
    pub stall_timeout: Duration,
    /// The cache entries of steps, by step id. A step whose entry is complete is not run:
    /// its output is replayed, or, for a sink, it is skipped; a step that nothing needs
    /// any more (every step after it is served by the cache) is skipped. Other steps with
    /// an entry store their output as they go, and a stateless one skips the input
    /// batches an interrupted run already stored.
    pub caches: HashMap<String, Arc<dyn StepCache>>,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            channel_capacity: 4,
            subscribers: Vec::new(),
            cancel: Arc::default(),
            quarantine: None,
            stall_timeout: Duration::from_secs(10),
            caches: HashMap::new(),
        }
    }
}

impl std::fmt::Debug for ExecOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExecOptions")
            .field("channel_capacity", &self.channel_capacity)
            .field("subscribers", &self.subscribers.len())
            .field("quarantine", &self.quarantine)
            .field("caches", &self.caches.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// What one step did in a run. Its counts are the fold of the step's events
/// ([`StepCounts::apply`]), the same that the monitor makes of them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StepStats {
    /// The step's id.
    pub id: String,
    /// Its kind.
    pub kind: String,
    /// Batches it took in.
    pub batches_in: u64,
    /// Batches it passed on.
    pub batches_out: u64,
    /// Records it took in.
    pub records_in: u64,
    /// Records it passed on.
    pub records_out: u64,
    /// Calls retried after a transient failure (timeouts included), and requests that
    /// calls retried themselves (an LLM step's).
    pub retries: u64,
    /// Records dropped on purpose, by reason.
    pub dropped: Vec<(String, u64)>,
    /// Records set aside into the quarantine file.
    pub quarantined: u64,
    /// Bad records: set aside, or failing the run.
    pub bad_records: u64,
    /// Time spent inside the step's calls, summed over threads.
    pub busy: Duration,
    /// Batches whose output came from the cache instead of the step.
    pub cached_batches: u64,
    /// Whether the step ran, was replayed from the cache, or was skipped.
    pub cache: CacheUse,
    /// Records written to the step's exclusion file.
    pub excluded: u64,
    /// The step's dataset-level figures, set with `StepContext::set_stat` (or summed over
    /// its calls, from `StepContext::add_stat`).
    pub figures: Vec<(String, Value)>,
    /// The counts, as the events made them; the fields above are filled from them when the
    /// run ends.
    counts: StepCounts,
}

/// How the cache served a step in a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CacheUse {
    /// The step ran (possibly taking some batches from an interrupted run's entries).
    #[default]
    Ran,
    /// Its whole output was read back from the cache.
    Replayed,
    /// It did not run: nothing after it needed its output, or (a sink) its files were up
    /// to date.
    Skipped,
}

impl CacheUse {
    /// The name used in reports: `ran`, `replayed` or `skipped`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheUse::Ran => "ran",
            CacheUse::Replayed => "replayed",
            CacheUse::Skipped => "skipped",
        }
    }
}

impl StepStats {
    fn set_figure(&mut self, name: String, value: Value) {
        match self.figures.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = value,
            None => self.figures.push((name, value)),
        }
    }

    fn add_figure(&mut self, name: String, amount: Value) {
        match self.figures.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => *v = weave_core::sum_figures(v, &amount),
            None => self.figures.push((name, amount)),
        }
    }

    /// Fills the public counts from the events counted.
    fn close(&mut self) {
        let c = &self.counts;
        self.records_in = c.records_in;
        self.records_out = c.records_out;
        self.retries = c.retries;
        self.dropped.clone_from(&c.dropped);
        self.quarantined = c.quarantined;
        self.bad_records = c.bad_records();
        self.cached_batches = c.cache_hit_batches;
    }

    /// The records the step handled, bad ones included, for `max_bad_records` shares: a
    /// source's are those it read (its bad records are not passed on), another step's
    /// those it took in.
    fn handled(&self, source: bool) -> u64 {
        if source { self.counts.records_out + self.counts.bad_records() } else { self.counts.records_in }
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct RunSummary {
    /// The pipeline's name.
    pub pipeline: String,
    /// How it ended.
    pub status: RunStatus,
    /// Per step, in declaration order.
    pub steps: Vec<StepStats>,
    /// Wall time.
    pub elapsed: Duration,
    /// The most bytes of batches in flight at once.
    pub peak_memory: u64,
    /// CPU worker threads used.
    pub threads: usize,
}

impl RunSummary {
    /// The stats of step `id`.
    pub fn step(&self, id: &str) -> Option<&StepStats> {
        self.steps.iter().find(|s| s.id == id)
    }
}

/// A failed run: the first error, and what the run did until then.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct RunError {
    /// The first error.
    #[source]
    pub error: Error,
    /// What the run did.
    pub summary: RunSummary,
}

/// A batch on an edge, with its sequence number (the source's batch number, kept through
/// one-to-one steps) and its share of the memory budget.
#[derive(Clone)]
pub(crate) struct Msg {
    pub(crate) seq: u64,
    pub(crate) batch: Batch,
    pub(crate) permit: Arc<Permit>,
}

/// State every thread of a run shares.
pub(crate) struct Shared {
    pub(crate) cancel: Arc<AtomicBool>,
    pub(crate) budget: MemoryBudget,
    subscribers: Vec<Arc<dyn Subscriber>>,
    pub(crate) seed: u64,
    quarantine: Quarantine,
    /// Where the quarantine file is, for messages.
    quarantine_path: Option<PathBuf>,
    /// `[pipeline] max_bad_records`, and the bad records set aside so far over every step.
    max_bad_records: BadRecordLimit,
    bad_records: AtomicU64,
    failure: Mutex<Option<Error>>,
    pub(crate) gpus: Semaphore,
    /// Counts batches received and sent, for the stall watch.
    pub(crate) progress: AtomicU64,
}

impl Shared {
    pub(crate) fn cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    pub(crate) fn emit(&self, event: impl FnOnce() -> Event) {
        if self.subscribers.is_empty() {
            return;
        }
        let e = event();
        for s in &self.subscribers {
            s.on_event(&e);
        }
    }

    /// Counts `event` into the stats of the step it is about, and sends it to the
    /// subscribers: the one way a step's counts change, so that the run summary is the
    /// same fold of the same events as the metrics.
    pub(crate) fn count(&self, stats: &mut StepStats, event: Event) {
        stats.counts.apply(&event);
        for s in &self.subscribers {
            s.on_event(&event);
        }
    }

    /// The error for `bad` bad records past `limit`, in a step or (`step` `None`) the run.
    fn too_many_bad(&self, step: Option<&str>, bad: u64, handled: Option<u64>, limit: BadRecordLimit) -> Error {
        Error::TooManyBadRecords {
            step: step.map(str::to_owned),
            bad,
            handled,
            limit,
            quarantine: self.quarantine_path.clone(),
        }
    }

    /// Records the run's failure (the first one wins) and stops every thread.
    pub(crate) fn fail(&self, err: Error) {
        let mut f = self.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if f.is_none() {
            if let Some(step) = err.step() {
                let (step, error, class): (Arc<str>, _, _) = (step.into(), err.to_string(), err.class());
                self.emit(|| Event::StepFailed { step, error, class });
            }
            *f = Some(err);
        }
        drop(f);
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Waits for the next message; `None` at the end of the input or when cancelled.
    pub(crate) fn recv(&self, rx: &Receiver<Msg>) -> Option<Msg> {
        loop {
            match rx.recv_timeout(TICK) {
                Ok(m) => {
                    self.progress.fetch_add(1, Ordering::Relaxed);
                    return Some(m);
                }
                Err(RecvTimeoutError::Timeout) if !self.cancelled() => {}
                Err(_) => return None,
            }
        }
    }

    /// The next message on any of `inputs` but those marked `ended`, with the input's
    /// index: `Some((i, None))` when input `i` has ended, `None` when the run is cancelled
    /// (or no input is left).
    pub(crate) fn recv_any(&self, inputs: &[Receiver<Msg>], ended: &[bool]) -> Option<(usize, Option<Msg>)> {
        let open: Vec<usize> = (0..inputs.len()).filter(|&i| !ended[i]).collect();
        if open.is_empty() {
            return None;
        }
        let mut select = crossbeam_channel::Select::new();
        for &i in &open {
            select.recv(&inputs[i]);
        }
        loop {
            match select.select_timeout(TICK) {
                Ok(op) => {
                    let i = open[op.index()];
                    return Some(match op.recv(&inputs[i]) {
                        Ok(m) => {
                            self.progress.fetch_add(1, Ordering::Relaxed);
                            (i, Some(m))
                        }
                        Err(_) => (i, None),
                    });
                }
                Err(_) if self.cancelled() => return None,
                Err(_) => {}
            }
        }
    }

    /// Sends `msg` to every consumer; `Err` when cancelled or a consumer is gone. The last
    /// consumer gets the message itself, so that with one consumer nothing else holds its
    /// share of the memory budget (which the consumer can then hand on to its output).
    pub(crate) fn send(&self, outputs: &[Sender<Msg>], msg: Msg) -> Result<(), Stopped> {
        let mut msg = Some(msg);
        for (i, tx) in outputs.iter().enumerate() {
            let Some(mut m) = (if i + 1 == outputs.len() { msg.take() } else { msg.clone() }) else {
                break;
            };
            loop {
                match tx.send_timeout(m, TICK) {
                    Ok(()) => {
                        self.progress.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    Err(SendTimeoutError::Timeout(back)) if !self.cancelled() => m = back,
                    Err(_) => return Err(Stopped),
                }
            }
        }
        Ok(())
    }

    /// Sleeps for `d`, waking early when cancelled.
    fn sleep(&self, d: Duration) -> Result<(), Stopped> {
        let end = Instant::now() + d;
        while !self.cancelled() {
            let now = Instant::now();
            if now >= end {
                return Ok(());
            }
            std::thread::sleep((end - now).min(TICK));
        }
        Err(Stopped)
    }

    /// Accounts what a call reported besides its output: dropped records (counted, and
    /// written to the exclusion file), figures, and rejected records (the bad-record policy).
    pub(crate) fn settle(&self, step: &StageStep, stats: &mut StepStats, ctx: &mut StepContext) -> Result<(), Stopped> {
        self.settle_parts(step, stats, CallReport::take(ctx))
    }

    pub(crate) fn settle_parts(&self, step: &StageStep, stats: &mut StepStats, rep: CallReport) -> Result<(), Stopped> {
        let seq = rep.seq;
        let RequestCounts { requests, failed, retries } = rep.requests;
        if requests > 0 {
            self.count(stats, Event::RequestsMade { step: Arc::clone(&step.id), seq, requests, failed, retries });
        }
        for (reason, n) in rep.dropped {
            self.count(stats, Event::RecordsDropped { step: Arc::clone(&step.id), reason, count: n });
        }
        if let Some(ex) = &step.exclusions
            && !rep.excluded.is_empty()
        {
            if let Err(e) = ex.write(&rep.excluded) {
                self.fail(e);
                return Err(Stopped);
            }
            stats.excluded += rep.excluded.len() as u64;
        }
        let changed = !(rep.figures.is_empty() && rep.added.is_empty());
        for (name, value) in rep.figures {
            stats.set_figure(name, value);
        }
        for (name, amount) in rep.added {
            stats.add_figure(name, amount);
        }
        if changed {
            let figures: Vec<(String, f64)> = stats
                .figures
                .iter()
                .filter_map(|(n, v)| match v {
                    Value::Int(i) => Some((n.clone(), *i as f64)),
                    Value::Float(x) => Some((n.clone(), *x)),
                    _ => None,
                })
                .collect();
            if !figures.is_empty() {
                let s = Arc::clone(&step.id);
                self.emit(|| Event::StepFigures { step: s, figures });
            }
        }
        self.reject(step, stats, seq, rep.rejected)
    }

    pub(crate) fn reject(
        &self,
        step: &StageStep,
        stats: &mut StepStats,
        seq: u64,
        rejected: Vec<Rejected>,
    ) -> Result<(), Stopped> {
        let Some(first) = rejected.first() else { return Ok(()) };
        let n = rejected.len() as u64;
        match step.on_bad_record {
            BadRecordPolicy::Fail => {
                let error = Error::BadRecord {
                    step: step.id.to_string(),
                    reason: first.reason.clone(),
                    origin: first.origin.clone(),
                };
                self.count(stats, Event::RecordsFailed { step: Arc::clone(&step.id), seq, count: n });
                self.fail(error);
                Err(Stopped)
            }
            BadRecordPolicy::Skip => match self.quarantine.write(&step.id, &rejected) {
                Ok(()) => {
                    self.count(stats, Event::RecordsQuarantined { step: Arc::clone(&step.id), count: n });
                    // A count is checked at once, so that the run stops without reading
                    // the rest; a share waits for the step's end.
                    let bad = stats.counts.bad_records();
                    if matches!(step.max_bad_records, BadRecordLimit::Count(_)) && step.max_bad_records.exceeded(bad, 0)
                    {
                        self.fail(self.too_many_bad(Some(&step.id), bad, None, step.max_bad_records));
                        return Err(Stopped);
                    }
                    let total = self.bad_records.fetch_add(n, Ordering::Relaxed) + n;
                    if matches!(self.max_bad_records, BadRecordLimit::Count(_))
                        && self.max_bad_records.exceeded(total, 0)
                    {
                        self.fail(self.too_many_bad(None, total, None, self.max_bad_records));
                        return Err(Stopped);
                    }
                    Ok(())
                }
                Err(e) => {
                    self.fail(e);
                    Err(Stopped)
                }
            },
        }
    }

    /// Checks a step that ended against its `max_bad_records`.
    fn check_bad_records(&self, step: &StageStep, stats: &StepStats) {
        let (bad, handled) = (stats.counts.bad_records(), stats.handled(step.source));
        if step.max_bad_records.exceeded(bad, handled) {
            let handled = matches!(step.max_bad_records, BadRecordLimit::Share(_)).then_some(handled);
            self.fail(self.too_many_bad(Some(&step.id), bad, handled, step.max_bad_records));
        }
    }

    /// The message carrying `batch`, charged to the budget without waiting. When `input`
    /// (the batch it was made from) has no other holder, its share of the budget is handed
    /// over rather than charged anew, so a step that passes data on does not count it twice.
    pub(crate) fn charged(&self, seq: u64, batch: Batch, input: Option<Arc<Permit>>) -> Msg {
        let bytes = batch.memory_size() as u64;
        let permit = match input.map(Arc::try_unwrap) {
            Some(Ok(mut p)) => {
                p.resize(bytes);
                p
            }
            // Shared with other consumers (or none): release ours, then charge.
            other => {
                drop(other);
                self.budget.charge(bytes)
            }
        };
        Msg { seq, batch, permit: Arc::new(permit) }
    }
}

/// What a call reported besides its output, taken out of its context.
#[derive(Default)]
pub(crate) struct CallReport {
    pub(crate) seq: u64,
    pub(crate) dropped: Vec<(String, u64)>,
    pub(crate) excluded: Vec<(String, Record)>,
    pub(crate) figures: Vec<(String, Value)>,
    pub(crate) added: Vec<(String, Value)>,
    pub(crate) rejected: Vec<Rejected>,
    pub(crate) requests: RequestCounts,
}

impl CallReport {
    pub(crate) fn take(ctx: &mut StepContext) -> Self {
        CallReport {
            seq: ctx.sequence(),
            dropped: ctx.take_dropped(),
            excluded: ctx.take_excluded(),
            figures: ctx.take_stats(),
            added: ctx.take_added_stats(),
            rejected: ctx.take_rejected(),
            requests: ctx.take_requests(),
        }
    }

    /// What a call that failed spent, which counts although the call will be made again
    /// (or the run stops): the requests it made and the amounts it added to its figures
    /// (tokens and cost are paid for). What it produced (drops, bad records, set
    /// figures) does not count: the retry produces it again.
    pub(crate) fn spent(ctx: &mut StepContext) -> Self {
        CallReport {
            seq: ctx.sequence(),
            added: ctx.take_added_stats(),
            requests: ctx.take_requests(),
            ..CallReport::default()
        }
    }
}

/// Stores a step's output in its cache entry, part by part, as the step makes it. A
/// failure to store only costs the cache: it is logged once and the step goes on without.
pub(crate) struct Recorder {
    cache: Option<Arc<dyn StepCache>>,
    step: Arc<str>,
    parts: u64,
}

impl Recorder {
    pub(crate) fn new(step: &StageStep, cache: Option<Arc<dyn StepCache>>) -> Self {
        Recorder { cache, step: Arc::clone(&step.id), parts: 0 }
    }

    /// Whether the output is being stored.
    pub(crate) fn active(&self) -> bool {
        self.cache.is_some()
    }

    /// The output stored for input part `part` by an earlier run.
    pub(crate) fn load(&self, part: u64) -> Option<Vec<(u64, Batch)>> {
        self.cache.as_ref()?.load(part)
    }

    /// Stores one part (the output made from one input batch) as part number `part`.
    pub(crate) fn store_at(&mut self, part: u64, out: &[(u64, Batch)]) {
        let Some(c) = &self.cache else { return };
        if let Err(e) = c.store(part, out) {
            log::warn!("step \"{}\": cannot store its output in the cache, going on without: {e}", self.step);
            self.cache = None;
        }
        self.parts = self.parts.max(part + 1);
    }

    /// Stores the next part.
    pub(crate) fn store(&mut self, out: &[(u64, Batch)]) {
        self.store_at(self.parts, out);
    }

    /// Marks the output complete.
    pub(crate) fn finish(&mut self, parts: Option<u64>) {
        let Some(c) = self.cache.take() else { return };
        if let Err(e) = c.finish(parts.unwrap_or(self.parts)) {
            log::warn!("step \"{}\": cannot complete its cache entry: {e}", self.step);
        }
    }
}

/// The run is stopping (the reason is in `Shared::failure` or the cancel flag).
#[derive(Debug)]
pub(crate) struct Stopped;

/// A counting semaphore for GPUs, held per call.
pub(crate) struct Semaphore {
    free: Mutex<u32>,
    cv: Condvar,
}

impl Semaphore {
    pub(crate) fn acquire(&self, n: u32, cancel: &AtomicBool) -> Option<SemaphoreGuard<'_>> {
        if n == 0 {
            return Some(SemaphoreGuard { sem: self, n });
        }
        let mut free = self.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while *free < n {
            if cancel.load(Ordering::Relaxed) {
                return None;
            }
            free = self.cv.wait_timeout(free, TICK).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
        *free -= n;
        Some(SemaphoreGuard { sem: self, n })
    }
}

pub(crate) struct SemaphoreGuard<'a> {
    sem: &'a Semaphore,
    n: u32,
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        if self.n > 0 {
            *self.sem.free.lock().unwrap_or_else(std::sync::PoisonError::into_inner) += self.n;
            self.sem.cv.notify_all();
        }
    }
}

/// One step's settings inside a stage.
#[derive(Clone)]
pub(crate) struct StageStep {
    pub(crate) node: usize,
    pub(crate) id: Arc<str>,
    pub(crate) retry: RetryPolicy,
    pub(crate) timeout: Option<Duration>,
    pub(crate) on_bad_record: BadRecordPolicy,
    pub(crate) gpus: u32,
    pub(crate) exclusions: Option<Arc<Exclusions>>,
    /// Its calls run on the worker pool ([`weave_core::StepInfo::parallel`]).
    pub(crate) parallel: bool,
    /// How many bad records it may set aside before the run fails.
    pub(crate) max_bad_records: BadRecordLimit,
    /// It is a source (for `max_bad_records` shares: what it read).
    pub(crate) source: bool,
}

impl StageStep {
    /// Whether the step's calls set records aside, into its exclusion file or the
    /// quarantine: their output alone does not stand for them, so the stored output of an
    /// interrupted run cannot replace calling them.
    pub(crate) fn sets_aside(&self) -> bool {
        self.exclusions.is_some() || self.on_bad_record != BadRecordPolicy::Fail
    }
}

/// What a stage runs.
enum Work {
    Source(Box<dyn Source>),
    /// A step whose whole output is in the cache.
    Replay(Arc<dyn StepCache>),
    /// One or more stateless transforms fused into one pass.
    Map(Vec<Arc<dyn Transform>>, Option<u32>),
    Stateful(Box<dyn StatefulTransform>),
    Merge(Box<dyn Merge>),
    Sink(Box<dyn Sink>),
}

/// What a stage thread tells the coordinator: whether it is in a call (for timeouts), and
/// whether it has work under way that will move batches without any input (for the stall
/// watch).
#[derive(Default)]
pub(crate) struct Watch {
    /// Nanoseconds since the run started when the current call started; 0 when idle.
    call_started: AtomicU64,
    /// Calls waiting out a retry delay.
    pub(crate) pending: AtomicUsize,
    /// Calls running on a pool (a map stage's jobs).
    pub(crate) jobs: Arc<AtomicUsize>,
}

struct Stage {
    steps: Vec<StageStep>,
    work: Work,
    inputs: Vec<Receiver<Msg>>,
    outputs: Vec<Sender<Msg>>,
    watch: Arc<Watch>,
    /// The cache entry its (last) step's output is stored in.
    cache: Option<Arc<dyn StepCache>>,
}

/// What a stage thread hands back.
struct StageResult {
    stats: Vec<(usize, StepStats)>,
    sink: Option<(usize, Box<dyn Sink>)>,
}

/// `n` taken into `1..=max`, with a warning when it was outside.
fn within(what: &str, n: usize, max: usize) -> usize {
    let b = n.clamp(1, max);
    if b != n {
        log::warn!("{what} is {n}; the run uses {b} (it must be from 1 to {max})");
    }
    b
}

/// Runs a pipeline to the end. Outputs are committed only if every step succeeded;
/// otherwise every sink is aborted and the first error is returned with what the run did.
pub fn run(pipeline: Pipeline, options: ExecOptions) -> Result<RunSummary, Box<RunError>> {
    let start = Instant::now();
    let threads = pipeline
        .resources
        .max_concurrent
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get));
    // A checked pipeline is within the bound; its `resources` are public, so a caller may
    // have changed them since.
    let threads = within("max_concurrent", threads, weave_core::MAX_CONCURRENT);
    let channel_capacity = within("channel_capacity", options.channel_capacity, MAX_CHANNEL_CAPACITY);
    let name = pipeline.name.clone();
    let shared = Arc::new(Shared {
        cancel: Arc::clone(&options.cancel),
        budget: MemoryBudget::new(pipeline.resources.max_memory),
        subscribers: options.subscribers.clone(),
        seed: pipeline.seed,
        quarantine: Quarantine::new(options.quarantine.clone()),
        quarantine_path: options.quarantine.clone(),
        max_bad_records: pipeline.max_bad_records,
        bad_records: AtomicU64::new(0),
        failure: Mutex::new(None),
        gpus: Semaphore {
            free: Mutex::new(if pipeline.resources.gpu_enabled { pipeline.resources.gpus } else { 0 }),
            cv: Condvar::new(),
        },
        progress: AtomicU64::new(0),
    });
    // What the run writes against what it reads, before anything is touched (a front end
    // that writes files of its own, as the CLI does, checks them with these first).
    let mut files = RunFiles::of_pipeline(&pipeline);
    if let Some(q) = &options.quarantine {
        files = files.replaced("the quarantine file", q.clone());
    }
    let files_checked = files.check();
    let max_memory = pipeline.resources.max_memory;
    let dag = pipeline.into_dag();
    let mut stats: Vec<StepStats> = dag
        .nodes()
        .iter()
        .map(|n| StepStats { id: n.id.clone(), kind: n.payload.kind.clone(), ..StepStats::default() })
        .collect();
    let step_count = dag.len();
    shared.emit(|| Event::RunStarted { pipeline: name.clone(), steps: step_count, threads, max_memory });
    let roles = cache_roles(&dag, &|id| options.caches.get(id).is_some_and(|c| c.complete()));
    for (i, role) in roles.iter().enumerate() {
        stats[i].cache = *role;
        if *role == CacheUse::Skipped {
            let id: Arc<str> = dag.node(i).id.as_str().into();
            shared.emit(|| Event::StepSkipped { step: id });
        }
    }
    let exclusions: Vec<Arc<Exclusions>> = dag
        .nodes()
        .iter()
        .zip(&roles)
        .filter(|(_, r)| **r == CacheUse::Ran)
        .filter_map(|(n, _)| Some(Arc::new(Exclusions::new(&n.id, n.payload.exclusions.clone()?))))
        .collect();

    let sources: Vec<bool> = dag.nodes().iter().map(|n| n.shape == Shape::Source).collect();
    let summary = |mut stats: Vec<StepStats>, status, shared: &Shared| RunSummary {
        pipeline: name.clone(),
        status,
        steps: {
            stats.iter_mut().for_each(StepStats::close);
            stats
        },
        elapsed: start.elapsed(),
        peak_memory: shared.budget.peak(),
        threads,
    };

    if let Err(error) = files_checked {
        let sum = summary(stats, RunStatus::Failed, &shared);
        shared.emit(|| Event::RunFinished { status: RunStatus::Failed, elapsed: sum.elapsed, peak_memory: 0 });
        return Err(Box::new(RunError { error, summary: sum }));
    }
    let pool =
        match rayon::ThreadPoolBuilder::new().num_threads(threads).thread_name(|i| format!("weave-worker-{i}")).build()
        {
            Ok(p) => Arc::new(p),
            Err(e) => {
                let error = Error::Thread(std::io::Error::other(e.to_string()));
                return Err(Box::new(RunError { error, summary: summary(stats, RunStatus::Failed, &shared) }));
            }
        };

    let stages = build_stages(dag, &roles, &options.caches, &exclusions, channel_capacity);
    let (done_tx, done_rx) = unbounded::<usize>();
    let mut handles = Vec::with_capacity(stages.len());
    let mut watches = Vec::with_capacity(stages.len());
    for (i, stage) in stages.into_iter().enumerate() {
        let timeout = if matches!(stage.work, Work::Map(..)) { None } else { stage.steps[0].timeout };
        watches.push((Arc::clone(&stage.watch), timeout, stage.steps[0].id.clone(), i));
        let shared2 = Arc::clone(&shared);
        let pool2 = Arc::clone(&pool);
        let done = done_tx.clone();
        let thread_name = format!("weave-{}", stage.steps[0].id);
        let spawned = std::thread::Builder::new().name(thread_name).spawn(move || {
            let result = run_stage(stage, &shared2, &pool2, start);
            let _ = done.send(i);
            result
        });
        match spawned {
            Ok(h) => handles.push(Some(h)),
            Err(e) => {
                shared.fail(Error::Thread(e));
                handles.push(None);
            }
        }
    }
    drop(done_tx);

    // Coordinate: wait for the stages, watch call deadlines, notice cancellation.
    let mut finished = vec![false; handles.len()];
    for (i, h) in handles.iter().enumerate() {
        finished[i] = h.is_none();
    }
    let mut abandoned = vec![false; handles.len()];
    let mut last_progress = (shared.progress.load(Ordering::Relaxed), Instant::now());
    while finished.iter().zip(&abandoned).any(|(f, a)| !f && !a) {
        match done_rx.recv_timeout(TICK) {
            Ok(i) => finished[i] = true,
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let now = start.elapsed().as_nanos() as u64;
        for (watch, timeout, id, i) in &watches {
            let (Some(timeout), false, false) = (timeout, finished[*i], abandoned[*i]) else { continue };
            let started = watch.call_started.load(Ordering::Relaxed);
            if started != 0 && now.saturating_sub(started) > timeout.as_nanos() as u64 {
                // The call holds the step's state, so it cannot be retried: stop the run
                // and leave the thread behind.
                shared.fail(Error::Timeout { step: id.to_string(), timeout: *timeout, retries: 0, retryable: false });
                abandoned[*i] = true;
            }
        }
        // Stall watch: batches stopped moving, and no step is working to move them.
        let progress = shared.progress.load(Ordering::Relaxed);
        let working = watches.iter().any(|(w, _, _, i)| {
            !finished[*i]
                && (w.call_started.load(Ordering::Relaxed) != 0
                    || w.pending.load(Ordering::Relaxed) > 0
                    || w.jobs.load(Ordering::Relaxed) > 0)
        });
        if progress != last_progress.0 || working {
            last_progress = (progress, Instant::now());
        } else if !shared.cancelled() && last_progress.1.elapsed() >= options.stall_timeout {
            let waiting: Vec<String> =
                watches.iter().filter(|(_, _, _, i)| !finished[*i]).map(|(_, _, id, _)| id.to_string()).collect();
            shared.fail(Error::Stalled { waited: options.stall_timeout, waiting });
        }
        if shared.cancelled() {
            // Threads stuck in a call never come back; everything else stops within a tick.
            for (watch, _, _, i) in &watches {
                if !finished[*i] && watch.call_started.load(Ordering::Relaxed) != 0 {
                    let started = watch.call_started.load(Ordering::Relaxed);
                    if now.saturating_sub(started) > Duration::from_secs(1).as_nanos() as u64 {
                        abandoned[*i] = true;
                    }
                }
            }
        }
    }

    let mut sinks: Vec<(usize, Box<dyn Sink>)> = Vec::new();
    for (i, h) in handles.into_iter().enumerate() {
        let Some(h) = h else { continue };
        if abandoned[i] && !finished[i] {
            continue;
        }
        match h.join() {
            Ok(r) => {
                for (node, s) in r.stats {
                    let (id, kind) = (std::mem::take(&mut stats[node].id), std::mem::take(&mut stats[node].kind));
                    stats[node] = StepStats { id, kind, cache: stats[node].cache, ..s };
                }
                sinks.extend(r.sink);
            }
            Err(p) => shared.fail(Error::Panic { step: watches[i].2.to_string(), message: panic_message(&p) }),
        }
    }
    sinks.sort_by_key(|(node, _)| *node);
    // `[pipeline] max_bad_records` as a share: of the records the sources read.
    if !shared.cancelled() && matches!(shared.max_bad_records, BadRecordLimit::Share(_)) {
        let read: u64 = stats.iter().zip(&sources).filter(|(_, s)| **s).map(|(st, _)| st.handled(true)).sum();
        let bad: u64 = stats.iter().map(|s| s.counts.bad_records()).sum();
        if shared.max_bad_records.exceeded(bad, read) {
            shared.fail(shared.too_many_bad(None, bad, Some(read), shared.max_bad_records));
        }
    }

    if let Err(e) = shared.quarantine.flush() {
        shared.fail(e);
    }
    let failed = shared.failure.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
    let mut error = failed.or_else(|| options.cancel.load(Ordering::Relaxed).then_some(Error::Cancelled));
    if error.is_none() {
        for ex in &exclusions {
            if let Err(e) = ex.commit() {
                error = Some(e);
                break;
            }
        }
    }
    if let Some(error) = error {
        for ex in &exclusions {
            ex.abort();
        }
        for (_, mut s) in sinks {
            s.abort();
        }
        let status = if matches!(error, Error::Cancelled) { RunStatus::Cancelled } else { RunStatus::Failed };
        let sum = summary(stats, status, &shared);
        shared.emit(|| Event::RunFinished { status, elapsed: sum.elapsed, peak_memory: sum.peak_memory });
        return Err(Box::new(RunError { error, summary: sum }));
    }
    // Every step succeeded: make the outputs visible, sink by sink.
    let mut commit_error = None;
    for (node, mut s) in sinks {
        if commit_error.is_some() {
            s.abort();
            continue;
        }
        let id: Arc<str> = stats[node].id.as_str().into();
        let mut ctx = StepContext::new(Arc::clone(&id), shared.seed, 0, Arc::clone(&shared.cancel));
        if let Err(e) = s.commit(&mut ctx) {
            commit_error = Some(Error::Step { step: id.to_string(), retries: 0, source: e });
        } else if let Some(cache) = options.caches.get(&*id)
            && let Err(e) = cache.finish(stats[node].batches_in)
        {
            log::warn!("step \"{id}\": cannot record its output in the cache: {e}");
        }
    }
    if let Some(error) = commit_error {
        let sum = summary(stats, RunStatus::Failed, &shared);
        shared.emit(|| Event::RunFinished {
            status: RunStatus::Failed,
            elapsed: sum.elapsed,
            peak_memory: sum.peak_memory,
        });
        return Err(Box::new(RunError { error, summary: sum }));
    }
    let sum = summary(stats, RunStatus::Succeeded, &shared);
    shared.emit(|| Event::RunFinished {
        status: RunStatus::Succeeded,
        elapsed: sum.elapsed,
        peak_memory: sum.peak_memory,
    });
    Ok(sum)
}

pub(crate) fn panic_message(p: &Box<dyn Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Decides, from the sinks back, what a run does with each step, given which steps have a
/// complete cache entry: a sink whose entry is complete is skipped; a step runs only if a
/// step that runs needs its output, and is replayed instead when its entry is complete.
/// (A step with no consumers that is not a sink runs: its output is unused, which the
/// pipeline check warns about.) `weave plan` shows the same decision.
pub fn cache_roles(dag: &weave_core::Dag<PipelineStep>, complete: &dyn Fn(&str) -> bool) -> Vec<CacheUse> {
    let mut roles = vec![CacheUse::Ran; dag.len()];
    for &i in dag.topological_order().iter().rev() {
        let consumers = dag.consumers(i);
        let node = dag.node(i);
        roles[i] = if node.shape == Shape::Sink {
            if complete(&node.id) { CacheUse::Skipped } else { CacheUse::Ran }
        } else if consumers.is_empty() {
            CacheUse::Ran
        } else if !consumers.iter().any(|&c| roles[c] == CacheUse::Ran) {
            CacheUse::Skipped
        } else if complete(&node.id) {
            CacheUse::Replayed
        } else {
            CacheUse::Ran
        };
    }
    roles
}

/// Groups the DAG's steps that run into stages (fusing chains of stateless transforms) and
/// wires them with bounded channels.
fn build_stages(
    dag: weave_core::Dag<PipelineStep>,
    roles: &[CacheUse],
    caches: &HashMap<String, Arc<dyn StepCache>>,
    exclusions: &[Arc<Exclusions>],
    capacity: usize,
) -> Vec<Stage> {
    let n = dag.len();
    let cache_of = |i: usize| caches.get(&dag.node(i).id).cloned();
    // A stateless transform joins its input's stage when it is that input's only consumer,
    // has no timeout (a call that may be abandoned runs alone) and runs on the same pool.
    // A step whose output is cached ends its stage, so that its output is seen whole.
    let fusable = |i: usize| {
        let node = dag.node(i);
        roles[i] == CacheUse::Ran
            && node.shape == Shape::Transform
            && node.payload.timeout.is_none()
            && node.payload.resources.io_concurrency.is_none()
    };
    let live_consumers = |j: usize| dag.consumers(j).iter().filter(|&&c| roles[c] == CacheUse::Ran).count();
    // A step whose output is stored starts a stage of its own after steps that set records
    // aside: its stored parts then stand for its own calls only, which the stage can check.
    let sets_aside = |m: usize| {
        let p = &dag.node(m).payload;
        p.exclusions.is_some() || p.on_bad_record != BadRecordPolicy::Fail
    };
    let mut stage_of = vec![usize::MAX; n];
    let mut members: Vec<Vec<usize>> = Vec::new();
    for &i in dag.topological_order() {
        if roles[i] == CacheUse::Skipped {
            continue;
        }
        let node = dag.node(i);
        if fusable(i)
            && let [j] = node.inputs[..]
            && fusable(j)
            && !caches.contains_key(&dag.node(j).id)
            && live_consumers(j) == 1
            && dag.node(j).payload.resources.gpus == node.payload.resources.gpus
            && !(caches.contains_key(&node.id) && members[stage_of[j]].iter().any(|&m| sets_aside(m)))
        {
            stage_of[i] = stage_of[j];
            members[stage_of[j]].push(i);
            continue;
        }
        stage_of[i] = members.len();
        members.push(vec![i]);
    }

    // Channels: one per edge between stages, in the consumer's input order.
    let mut inputs: Vec<Vec<Receiver<Msg>>> = (0..members.len()).map(|_| Vec::new()).collect();
    let mut outputs: Vec<Vec<Sender<Msg>>> = (0..members.len()).map(|_| Vec::new()).collect();
    for (s, m) in members.iter().enumerate() {
        let first = m[0];
        if roles[first] == CacheUse::Replayed {
            continue;
        }
        for &j in &dag.node(first).inputs {
            let (tx, rx) = bounded(capacity);
            outputs[stage_of[j]].push(tx);
            inputs[s].push(rx);
        }
    }

    let mut steps: Vec<Option<Step>> = Vec::with_capacity(n);
    let mut infos = Vec::with_capacity(n);
    for (i, node) in dag.nodes().iter().enumerate() {
        infos.push(StageStep {
            node: i,
            id: node.id.as_str().into(),
            retry: node.payload.retry,
            timeout: node.payload.timeout,
            on_bad_record: node.payload.on_bad_record,
            gpus: node.payload.resources.gpus,
            exclusions: exclusions.iter().find(|e| e.step() == node.id).cloned(),
            parallel: node.payload.step.info().parallel(),
            max_bad_records: node.payload.max_bad_records,
            source: node.shape == Shape::Source,
        });
    }
    let stage_caches: Vec<Option<Arc<dyn StepCache>>> = members.iter().map(|m| cache_of(m[m.len() - 1])).collect();
    let io: Vec<Option<u32>> = dag.nodes().iter().map(|n| n.payload.resources.io_concurrency).collect();
    for node in dag.into_nodes() {
        steps.push(Some(node.payload.step));
    }

    let mut stages = Vec::with_capacity(members.len());
    for (s, m) in members.into_iter().enumerate() {
        let replay = roles[m[0]] == CacheUse::Replayed;
        let work = match steps[m[0]].take() {
            _ if replay => match &stage_caches[s] {
                Some(c) => Work::Replay(Arc::clone(c)),
                None => unreachable!("a replayed step has a cache entry"),
            },
            Some(Step::Source(x)) => Work::Source(x),
            Some(Step::Transform(t)) => {
                let mut chain = vec![t];
                for &i in &m[1..] {
                    if let Some(Step::Transform(t)) = steps[i].take() {
                        chain.push(t);
                    }
                }
                Work::Map(chain, io[m[0]])
            }
            Some(Step::StatefulTransform(x)) => Work::Stateful(x),
            Some(Step::Merge(x)) => Work::Merge(x),
            Some(Step::Sink(x)) => Work::Sink(x),
            None => unreachable!("every node is in exactly one stage"),
        };
        stages.push(Stage {
            steps: m.iter().map(|&i| infos[i].clone()).collect(),
            work,
            inputs: std::mem::take(&mut inputs[s]),
            outputs: std::mem::take(&mut outputs[s]),
            watch: Arc::default(),
            cache: stage_caches[s].clone(),
        });
    }
    stages
}

fn run_stage(stage: Stage, shared: &Shared, pool: &Arc<rayon::ThreadPool>, start: Instant) -> StageResult {
    let Stage { steps, work, inputs, outputs, watch, cache } = stage;
    for s in &steps {
        let id = Arc::clone(&s.id);
        shared.emit(|| Event::StepStarted { step: id });
    }
    let began = Instant::now();
    let mut stats: Vec<StepStats> = steps.iter().map(|_| StepStats::default()).collect();
    let mut sink = None;
    let caller = Caller { shared, watch: &watch, start, pool };
    match work {
        Work::Replay(c) => {
            let _ = replay_loop(shared, &steps[0], &*c, &outputs, &mut stats[0]);
        }
        Work::Source(mut src) => {
            let mut rec = Recorder::new(&steps[0], cache);
            if source_loop(&caller, &steps[0], &mut *src, &outputs, &mut stats[0], &mut rec).is_ok() {
                rec.finish(None);
            }
        }
        Work::Map(chain, io) => {
            let last = steps.len() - 1;
            let mut rec = Recorder::new(&steps[last], cache);
            let r = crate::map::map_loop(
                shared, &watch, pool, &steps, chain, io, &inputs[0], &outputs, &mut stats, &mut rec,
            );
            if let Ok(parts) = r {
                rec.finish(Some(parts));
            }
        }
        Work::Stateful(mut st) => {
            let mut rec = Recorder::new(&steps[0], cache);
            if stateful_loop(&caller, &steps[0], &mut *st, &inputs[0], &outputs, &mut stats[0], &mut rec).is_ok() {
                rec.finish(None);
            }
        }
        Work::Merge(mut m) => {
            let mut rec = Recorder::new(&steps[0], cache);
            if merge_loop(&caller, &steps[0], &mut *m, &inputs, &outputs, &mut stats[0], &mut rec).is_ok() {
                rec.finish(None);
            }
        }
        Work::Sink(mut k) => {
            let ok = sink_loop(&caller, &steps[0], &mut *k, &inputs[0], &mut stats[0]);
            if ok.is_err() {
                k.abort();
            }
            sink = Some((steps[0].node, k));
        }
    }
    if !shared.cancelled() {
        for (s, st) in steps.iter().zip(&stats) {
            shared.check_bad_records(s, st);
        }
    }
    // Closing the outputs tells consumers that this stage's data has ended.
    drop(outputs);
    drop(inputs);
    if !shared.cancelled() {
        for s in &steps {
            let id = Arc::clone(&s.id);
            shared.emit(|| Event::StepFinished { step: id, elapsed: began.elapsed() });
        }
    }
    StageResult { stats: steps.iter().map(|s| s.node).zip(stats).collect(), sink }
}

/// Calls a step on its stage's thread, with retries, the GPU semaphore and the watch.
struct Caller<'a> {
    shared: &'a Shared,
    watch: &'a Watch,
    start: Instant,
    /// The run's worker pool, where the calls of a parallel step run.
    pool: &'a rayon::ThreadPool,
}

impl Caller<'_> {
    fn call<T: Send>(
        &self,
        step: &StageStep,
        seq: u64,
        stats: &mut StepStats,
        mut f: impl FnMut(&mut StepContext) -> Result<T, StepError> + Send,
    ) -> Result<(T, StepContext), Stopped> {
        let mut attempt = 0u32;
        loop {
            if self.shared.cancelled() {
                return Err(Stopped);
            }
            let mut ctx =
                StepContext::new(Arc::clone(&step.id), self.shared.seed, seq, Arc::clone(&self.shared.cancel))
                    .keeping_dropped(step.exclusions.is_some());
            let gpu = self.shared.gpus.acquire(step.gpus, &self.shared.cancel).ok_or(Stopped)?;
            let t0 = Instant::now();
            self.watch.call_started.store((self.start.elapsed().as_nanos() as u64).max(1), Ordering::Relaxed);
            let mut once = || catch_unwind(AssertUnwindSafe(|| f(&mut ctx)));
            let r = if step.parallel { self.pool.install(once) } else { once() };
            self.watch.call_started.store(0, Ordering::Relaxed);
            drop(gpu);
            stats.busy += t0.elapsed();
            let e = match r {
                Ok(Ok(v)) => return Ok((v, ctx)),
                Ok(Err(e)) => e,
                Err(p) => {
                    self.shared.fail(Error::Panic { step: step.id.to_string(), message: panic_message(&p) });
                    return Err(Stopped);
                }
            };
            self.shared.settle_parts(step, stats, CallReport::spent(&mut ctx))?;
            match retry_delay(&step.retry, &e, attempt, seq) {
                Some(delay) => {
                    attempt += 1;
                    let (id, error) = (Arc::clone(&step.id), e.to_string());
                    self.shared.count(stats, Event::BatchRetried { step: id, seq, attempt, delay, error });
                    self.watch.pending.fetch_add(1, Ordering::Relaxed);
                    let slept = self.shared.sleep(delay);
                    self.watch.pending.fetch_sub(1, Ordering::Relaxed);
                    slept?;
                }
                None => {
                    let (id, error, class) = (Arc::clone(&step.id), e.to_string(), e.class());
                    self.shared.count(stats, Event::BatchFailed { step: id, seq, error, class });
                    self.shared.fail(step_error(step, attempt, e));
                    return Err(Stopped);
                }
            }
        }
    }
}

/// The error for a step that failed for good after `retries` retries.
pub(crate) fn step_error(step: &StageStep, retries: u32, e: StepError) -> Error {
    match e {
        StepError::BadRecord { reason, record, .. } => {
            Error::BadRecord { step: step.id.to_string(), reason, origin: record.map(|r| format!("record {r}")) }
        }
        e => Error::Step { step: step.id.to_string(), retries, source: e },
    }
}

/// The wait before retry number `attempt + 1`, or `None` if the error is not transient or
/// the retries are used up. Jitter comes from the seq and attempt, not a clock, so it is
/// spread but reproducible.
pub(crate) fn retry_delay(policy: &RetryPolicy, e: &StepError, attempt: u32, seq: u64) -> Option<Duration> {
    let StepError::Transient { retry_after, .. } = e else { return None };
    if attempt >= policy.max_retries {
        return None;
    }
    let mut d = policy.delay(attempt + 1);
    if policy.jitter {
        let mut x = seq.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(attempt).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 31;
        let frac = 0.5 + (x % 1000) as f64 / 2000.0;
        d = d.mul_f64(frac);
    }
    Some(match retry_after {
        Some(ra) => d.max(*ra),
        None => d,
    })
}

fn source_loop(
    c: &Caller<'_>,
    step: &StageStep,
    src: &mut dyn Source,
    outputs: &[Sender<Msg>],
    stats: &mut StepStats,
    rec: &mut Recorder,
) -> Result<(), Stopped> {
    let shared = c.shared;
    let mut seq = 0u64;
    loop {
        let t0 = Instant::now();
        let (batch, mut ctx) = c.call(step, seq, stats, |ctx| src.next_batch(ctx))?;
        shared.settle(step, stats, &mut ctx)?;
        let Some(batch) = batch else { return Ok(()) };
        let records = batch.len() as u64;
        stats.batches_out += 1;
        let event = Event::BatchFinished {
            step: Arc::clone(&step.id),
            seq,
            records_in: 0,
            records_out: records,
            elapsed: t0.elapsed(),
        };
        shared.count(stats, event);
        if rec.active() {
            rec.store(&[(seq, batch.clone())]);
        }
        let bytes = batch.memory_size() as u64;
        let (permit, waited) = shared.budget.acquire(bytes, &shared.cancel).ok_or(Stopped)?;
        if waited > Duration::from_millis(1) {
            let id = Arc::clone(&step.id);
            shared.emit(|| Event::WaitedForMemory { step: id, bytes, waited });
        }
        shared.send(outputs, Msg { seq, batch, permit: Arc::new(permit) })?;
        seq += 1;
    }
}

fn stateful_loop(
    c: &Caller<'_>,
    step: &StageStep,
    st: &mut dyn StatefulTransform,
    input: &Receiver<Msg>,
    outputs: &[Sender<Msg>],
    stats: &mut StepStats,
    rec: &mut Recorder,
) -> Result<(), Stopped> {
    let shared = c.shared;
    let mut out = Vec::new();
    let mut last_seq = None;
    while let Some(msg) = shared.recv(input) {
        let t0 = Instant::now();
        let ((), mut ctx) = c.call(step, msg.seq, stats, |ctx| {
            out.clear();
            st.process(&msg.batch, ctx, &mut out)
        })?;
        shared.settle(step, stats, &mut ctx)?;
        stats.batches_in += 1;
        let (seq, n) = (msg.seq, msg.batch.len() as u64);
        emit_outputs(shared, step, stats, seq, &mut out, outputs, n, t0, Some(msg.permit), rec)?;
        last_seq = Some(seq);
    }
    if shared.cancelled() {
        return Err(Stopped);
    }
    let seq = last_seq.map_or(0, |s| s + 1);
    let t0 = Instant::now();
    let ((), mut ctx) = c.call(step, seq, stats, |ctx| {
        out.clear();
        st.finish(ctx, &mut out)
    })?;
    shared.settle(step, stats, &mut ctx)?;
    emit_outputs(shared, step, stats, seq, &mut out, outputs, 0, t0, None, rec)
}

#[allow(clippy::too_many_arguments)]
fn emit_outputs(
    shared: &Shared,
    step: &StageStep,
    stats: &mut StepStats,
    seq: u64,
    out: &mut Vec<Batch>,
    outputs: &[Sender<Msg>],
    records_in: u64,
    t0: Instant,
    mut input: Option<Arc<Permit>>,
    rec: &mut Recorder,
) -> Result<(), Stopped> {
    let records_out: u64 = out.iter().map(|b| b.len() as u64).sum();
    if rec.active() && !out.is_empty() {
        let part: Vec<(u64, Batch)> = out.iter().map(|b| (seq, b.clone())).collect();
        rec.store(&part);
    }
    let event =
        Event::BatchFinished { step: Arc::clone(&step.id), seq, records_in, records_out, elapsed: t0.elapsed() };
    shared.count(stats, event);
    for b in out.drain(..) {
        stats.batches_out += 1;
        shared.send(outputs, shared.charged(seq, b, input.take()))?;
    }
    Ok(())
}

fn merge_loop(
    c: &Caller<'_>,
    step: &StageStep,
    m: &mut dyn Merge,
    inputs: &[Receiver<Msg>],
    outputs: &[Sender<Msg>],
    stats: &mut StepStats,
    rec: &mut Recorder,
) -> Result<(), Stopped> {
    let shared = c.shared;
    // Inputs are merged by sequence number (ties in input order): once every input that
    // has not ended has its next batch at hand, the smallest goes first, so the output
    // order depends on the data, never on timing. While an input's next batch is awaited,
    // batches arriving on the others are queued (holding their share of the memory
    // budget): a branch that holds its batches back until its end (a stateful step before
    // the merge) then does not stop the branches beside it, and with them the source they
    // split from. Only when the queues fill the budget does the run stall (and the stall
    // watch stops it, with the way out).
    let mut queues: Vec<std::collections::VecDeque<Msg>> = inputs.iter().map(|_| Default::default()).collect();
    // The input's channel has ended; `input_done` has been called for it.
    let mut ended: Vec<bool> = inputs.iter().map(|_| false).collect();
    let mut done: Vec<bool> = inputs.iter().map(|_| false).collect();
    let mut out = Vec::new();
    let mut last_seq = 0;
    loop {
        for i in 0..inputs.len() {
            if done[i] {
                continue;
            }
            while queues[i].is_empty() && !ended[i] {
                match shared.recv_any(inputs, &ended) {
                    Some((j, Some(msg))) => queues[j].push_back(msg),
                    Some((j, None)) => ended[j] = true,
                    None => return Err(Stopped),
                }
            }
            if queues[i].is_empty() {
                // Its queued batches all merged, and its channel ended: in the same place
                // among the calls as if nothing had been queued.
                done[i] = true;
                let t0 = Instant::now();
                let ((), mut ctx) = c.call(step, last_seq, stats, |ctx| {
                    out.clear();
                    m.input_done(i, ctx, &mut out)
                })?;
                shared.settle(step, stats, &mut ctx)?;
                emit_outputs(shared, step, stats, last_seq, &mut out, outputs, 0, t0, None, rec)?;
            }
        }
        let Some(i) =
            (0..queues.len()).filter(|&i| !queues[i].is_empty()).min_by_key(|&i| queues[i].front().map(|m| m.seq))
        else {
            break;
        };
        let Some(msg) = queues[i].pop_front() else { break };
        let t0 = Instant::now();
        let ((), mut ctx) = c.call(step, msg.seq, stats, |ctx| {
            out.clear();
            m.process(i, &msg.batch, ctx, &mut out)
        })?;
        shared.settle(step, stats, &mut ctx)?;
        stats.batches_in += 1;
        last_seq = msg.seq;
        let n = msg.batch.len() as u64;
        emit_outputs(shared, step, stats, msg.seq, &mut out, outputs, n, t0, Some(msg.permit), rec)?;
    }
    let t0 = Instant::now();
    let ((), mut ctx) = c.call(step, last_seq, stats, |ctx| {
        out.clear();
        m.finish(ctx, &mut out)
    })?;
    shared.settle(step, stats, &mut ctx)?;
    emit_outputs(shared, step, stats, last_seq, &mut out, outputs, 0, t0, None, rec)
}

/// Sends a step's stored output on with the sequence numbers it first went out with.
fn replay_loop(
    shared: &Shared,
    step: &StageStep,
    cache: &dyn StepCache,
    outputs: &[Sender<Msg>],
    stats: &mut StepStats,
) -> Result<(), Stopped> {
    let mut stopped = false;
    let mut records = 0u64;
    let r = cache.replay(&mut |seq, batch| {
        let bytes = batch.memory_size() as u64;
        let Some((permit, _)) = shared.budget.acquire(bytes, &shared.cancel) else {
            stopped = true;
            return false;
        };
        stats.batches_out += 1;
        records += batch.len() as u64;
        if shared.send(outputs, Msg { seq, batch, permit: Arc::new(permit) }).is_err() {
            stopped = true;
            return false;
        }
        true
    });
    if let Err(message) = r {
        shared.fail(Error::Cache { step: step.id.to_string(), message });
        return Err(Stopped);
    }
    if stopped || shared.cancelled() {
        return Err(Stopped);
    }
    let (id, batches) = (Arc::clone(&step.id), stats.batches_out);
    shared.count(stats, Event::CacheHit { step: id, seq: None, batches, records });
    Ok(())
}

fn sink_loop(
    c: &Caller<'_>,
    step: &StageStep,
    k: &mut dyn Sink,
    input: &Receiver<Msg>,
    stats: &mut StepStats,
) -> Result<(), Stopped> {
    let shared = c.shared;
    while let Some(msg) = shared.recv(input) {
        let t0 = Instant::now();
        let records = msg.batch.len() as u64;
        let ((), mut ctx) = c.call(step, msg.seq, stats, |ctx| k.write(&msg.batch, ctx))?;
        shared.settle(step, stats, &mut ctx)?;
        stats.batches_in += 1;
        let event = Event::BatchFinished {
            step: Arc::clone(&step.id),
            seq: msg.seq,
            records_in: records,
            records_out: 0,
            elapsed: t0.elapsed(),
        };
        shared.count(stats, event);
    }
    if shared.cancelled() { Err(Stopped) } else { Ok(()) }
}
