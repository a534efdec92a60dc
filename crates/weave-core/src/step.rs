//! The step traits, one per shape, and the context a step call gets.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::{Deserialize, Serialize};

use crate::batch::Batch;
use crate::error::StepError;
use crate::policy::{Resources, StepPolicy};
use crate::record::Record;
use crate::value::Value;

/// The shape of a step: how many inputs and outputs it has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// No input, one output: reads data in.
    Source,
    /// One input, one output, no state between batches: batches may run in parallel.
    Transform,
    /// One input, one output, state between batches (dedup, sample): batches run in order.
    StatefulTransform,
    /// Several inputs, one output.
    Merge,
    /// One input, no output: writes data out.
    Sink,
}

impl Shape {
    /// Whether a step of this shape takes inputs.
    pub fn has_inputs(self) -> bool {
        self != Shape::Source
    }

    /// Whether a step of this shape produces output.
    pub fn has_output(self) -> bool {
        self != Shape::Sink
    }

    /// Whether a step of this shape takes more than one input.
    pub fn takes_many_inputs(self) -> bool {
        self == Shape::Merge
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Shape::Source => "source",
            Shape::Transform => "transform",
            Shape::StatefulTransform => "stateful transform",
            Shape::Merge => "merge",
            Shape::Sink => "sink",
        })
    }
}

/// The bytes that identify a step's configuration for the cache key: two configurations
/// that give the same output have the same bytes, whatever the order or layout they were
/// written in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct CanonicalConfig(Vec<u8>);

impl CanonicalConfig {
    /// Canonical bytes of a serialisable configuration: compact JSON with map keys sorted
    /// (through `serde_json::Value`, whose maps are ordered by key).
    pub fn of<T: Serialize + ?Sized>(config: &T) -> Result<Self, StepError> {
        let v = serde_json::to_value(config)
            .map_err(|e| StepError::internal(format!("configuration does not serialise: {e}")))?;
        Ok(CanonicalConfig(v.to_string().into_bytes()))
    }

    /// These exact bytes.
    pub fn from_bytes(bytes: Vec<u8>) -> Self {
        CanonicalConfig(bytes)
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for CanonicalConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// What every step states about itself, whatever its shape.
pub trait StepInfo: Send {
    /// The kind name, as the pipeline file writes it (`"load_csv"`).
    fn kind(&self) -> &str;

    /// The version of the step's logic. Bump it when the same configuration starts to give
    /// different output, so that cached results are not reused.
    fn version(&self) -> u32 {
        1
    }

    /// The configuration that decides the output, as canonical bytes for the cache key.
    fn config(&self) -> CanonicalConfig;

    /// What the step needs to run.
    fn resources(&self) -> Resources {
        Resources::default()
    }

    /// The step's own retry, timeout and bad-record policy; unset fields take the
    /// pipeline's defaults, and the pipeline file can override each per step.
    fn policy(&self) -> StepPolicy {
        StepPolicy::default()
    }

    /// A relative estimate of the step's cost per record, for the critical path in
    /// `weave plan` (a no-op is about 0.1, a cleaning pass 1, an LLM call 1000).
    fn estimated_cost(&self) -> f64 {
        1.0
    }

    /// The files the step reads, for the run's lineage and the cache keys of sources.
    fn files_read(&self) -> Vec<std::path::PathBuf> {
        Vec::new()
    }

    /// The files the step writes (once committed), for the run's lineage.
    fn files_written(&self) -> Vec<std::path::PathBuf> {
        Vec::new()
    }

    /// The sets of files the step writes whose names it makes as it runs (the parts of a
    /// split or partitioned export), so that a run can refuse, before it starts, to write
    /// over a file it reads or another output.
    fn written_patterns(&self) -> Vec<FilePattern> {
        Vec::new()
    }

    /// Whether each shard of a job may run this step on its own share of the data (see
    /// [`Shard`](crate::Shard)): sources, transforms and sinks always do, whatever this
    /// says; a stateful step or a merge does only when its output for a share is its
    /// output for the whole cut the same way (a merge that passes its inputs on), and says
    /// so here. The others (dedup, sampling, mixing at a ratio) see the whole dataset, and a
    /// sharded run refuses them.
    fn runs_per_shard(&self) -> bool {
        false
    }

    /// Whether a stateful step that needs the whole dataset (keep the first of each key)
    /// runs in a sharded job by exchanging its per-record keys with the other shards: each
    /// shard publishes the keys of its input, takes in the keys of every earlier shard (in
    /// shard order) before deciding on its own records, and so decides as the single
    /// process would. The front end names the folder ([`BuildContext::exchange`](crate::BuildContext::exchange)).
    fn shards_by_exchange(&self) -> bool {
        false
    }

    /// Whether a step that shards by exchange ([`StepInfo::shards_by_exchange`]) takes in
    /// EVERY shard's published part, the later shards' too, before it decides on its own
    /// records (a sample of `n` records, whose winners are the job's `n` smallest keys),
    /// rather than only the earlier shards'. Run without `--stage`, the shards of a job with
    /// such a step must then all run at once.
    fn waits_for_every_shard(&self) -> bool {
        false
    }

    /// What the step does in a shard of a job, in words for `weave plan --shards N`, when
    /// the words its shape and the methods above give would not say it (a comparison
    /// whose shards publish their parts and whose last shard writes the job's figures).
    fn shard_role(&self) -> Option<&'static str> {
        None
    }

    /// The fields of a record the step reads, as its configuration names them (a
    /// filter's field, a dedup's key fields, a prompt's `{name}`s). The executor hands the
    /// step only batches that have each of them: a batch of records whose fields vary
    /// (see [`StepInfo::fields_vary`]) that lacks one gets a column of nulls for it, as
    /// its records without the field would have in a batch where another record has it,
    /// so that what the step does with a record never depends on the records it shares a
    /// batch with; a batch of fixed fields (a CSV's, a Parquet file's) that lacks one fails
    /// the step at once, naming the field. A field that no batch of a varying input had
    /// fails the step at its input's end (a misspelt name), or in a shard of a job, whose
    /// records are only part of the input, is said in a warning.
    fn fields_read(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether the records of the step's output may lack fields that others have (JSON
    /// records, whose keys vary from record to record), given whether those of its input
    /// may (`input`: those of any input, for a merge; `false` for a source). A batch then
    /// has the fields its own records have, not every field of the data. The default
    /// passes the input's on; a source of JSON records and a merge of inputs whose fields
    /// may differ say `true`.
    fn fields_vary(&self, input: bool) -> bool {
        input
    }

    /// Whether the step's output is decided by what its cache key covers: kind, version,
    /// configuration, seed, its inputs and the content of [`StepInfo::files_read`].
    /// A step whose output depends on anything else (the clock, a web page, a file it
    /// does not declare) returns `false`, and is then never taken from the cache.
    fn cacheable(&self) -> bool {
        true
    }

    /// Whether the step's calls run rayon parallel iterators (or `rayon::join`) inside
    /// them. The executor then makes each call on the run's worker pool, so that those
    /// iterators use its `max_concurrent` threads rather than rayon's global pool (one
    /// thread per core, whatever the run's limits).
    fn parallel(&self) -> bool {
        false
    }
}

/// A set of files a step writes, named as it runs: every one is under [`FilePattern::dir`],
/// and [`FilePattern::matches`] says whether a path under it is one of them.
#[derive(Clone)]
pub struct FilePattern {
    dir: std::path::PathBuf,
    shown: String,
    matches: Arc<dyn Fn(&str) -> bool + Send + Sync>,
}

impl FilePattern {
    /// The files under `dir` whose path relative to it (`/` between folders) `matches`
    /// accepts; `shown` is the pattern as the pipeline file writes it, for messages.
    pub fn new(
        dir: impl Into<std::path::PathBuf>,
        shown: impl Into<String>,
        matches: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> FilePattern {
        FilePattern { dir: dir.into(), shown: shown.into(), matches: Arc::new(matches) }
    }

    /// The folder every file of the set is under.
    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    /// The pattern as the pipeline file writes it.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Whether `relative` (a path under [`FilePattern::dir`], `/` between folders) is a
    /// file of the set.
    pub fn matches(&self, relative: &str) -> bool {
        (self.matches)(relative)
    }
}

impl fmt::Debug for FilePattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FilePattern").field("dir", &self.dir).field("shown", &self.shown).finish_non_exhaustive()
    }
}

/// Whether a step's output is kept in the cache (the `cache` key of a step).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheMode {
    /// Kept when recomputing it costs more than reading it back: steps whose
    /// [`StepInfo::estimated_cost`] is at least [`CacheMode::AUTO_MIN_COST`] (LLM calls),
    /// and every sink (as a record of the files it wrote, so that an unchanged run skips it).
    #[default]
    Auto,
    /// Always kept.
    On,
    /// Never kept, never taken from the cache.
    Off,
}

impl CacheMode {
    /// The estimated cost per record from which `auto` keeps a step's output. Cheap steps
    /// (cleaning, exact dedup: about 1) recompute faster than their output reads back.
    pub const AUTO_MIN_COST: f64 = 50.0;

    /// Whether a step of this shape and cost has its output stored.
    pub fn stores(self, shape: Shape, cost: f64) -> bool {
        match self {
            CacheMode::On => true,
            CacheMode::Off => false,
            CacheMode::Auto => shape == Shape::Sink || cost >= Self::AUTO_MIN_COST,
        }
    }
}

/// One step's entry in a cache, as the executor uses it; `weave-cache` provides it.
///
/// The output of a step is stored as parts, one per input batch (in arrival order), each
/// with the sequence number it went out with, and is complete once [`StepCache::finish`]
/// is called. A complete entry is replayed instead of running the step (a sink with a
/// complete entry is skipped: its files are up to date). Parts of an incomplete entry,
/// left by an interrupted run, let a stateless step that sets no record aside skip the
/// batches it already did.
pub trait StepCache: Send + Sync {
    /// Whether the whole output is stored and readable. May check every part, so the
    /// executor asks only for steps whose output it needs.
    fn complete(&self) -> bool;

    /// Reads the whole stored output in order, calling `f(seq, batch)` per batch until it
    /// returns `false`.
    fn replay(&self, f: &mut dyn FnMut(u64, Batch) -> bool) -> Result<(), String>;

    /// The output stored for input part `part` by an earlier run, if any.
    fn load(&self, part: u64) -> Option<Vec<(u64, Batch)>>;

    /// Stores the output of input part `part`: the batches with their sequence numbers.
    fn store(&self, part: u64, out: &[(u64, Batch)]) -> Result<(), String>;

    /// Marks the output complete after `parts` parts (after the commit, for a sink).
    fn finish(&self, parts: u64) -> Result<(), String>;
}

/// A source: reads data in, one batch at a time.
pub trait Source: StepInfo {
    /// The next batch, or `None` at the end. Called repeatedly from one thread.
    fn next_batch(&mut self, ctx: &mut StepContext) -> Result<Option<Batch>, StepError>;
}

/// A stateless transform: batches may be processed in parallel, in any order; the executor
/// puts the outputs back in input order.
pub trait Transform: StepInfo + Sync {
    /// Transforms one batch. Takes the batch by reference so that a failed call can be
    /// retried on the same input; unchanged columns can be shared into the output.
    fn apply(&self, batch: &Batch, ctx: &mut StepContext) -> Result<Batch, StepError>;
}

/// What a stateful step's [`Prepare`] made of one batch (its records' keys, hashes or
/// signatures), handed back to [`StatefulTransform::process_prepared`] with the batch.
/// Opaque to the executor: the step reads it as the type its preparer made, with
/// [`prepared_as`].
pub type Prepared = Box<dyn std::any::Any + Send + Sync>;

/// What a step's [`Prepare`] made, as the type it makes: for
/// [`StatefulTransform::process_prepared`]. Another type is an internal error naming
/// `step` (the executor hands a step only what its own preparer made).
pub fn prepared_as<'p, T: 'static>(prepared: &'p Prepared, step: &str) -> Result<&'p T, StepError> {
    prepared.downcast_ref::<T>().ok_or_else(|| {
        StepError::internal(format!("{step} was handed a preparation of another type than its preparer makes"))
    })
}

/// The per-record work of a stateful step that does not depend on its state: normalising
/// and hashing keys, shingling, signatures. The executor runs it on the worker pool,
/// several batches at a time and in any order (within `max_concurrent`), and hands each
/// result to the step's ordered call in input order, so that only the decision over
/// compact keys ("is this key new?") runs on the stage's thread.
///
/// A failed call is retried like a stateless step's (a transient error, within the step's
/// retry policy). It must be a function of the batch and the step's settings alone: the
/// output may not depend on whether, or on which thread, a batch was prepared.
pub trait Prepare: Send + Sync {
    /// Works out what the step's ordered call needs from `batch`. `ctx` gives the step
    /// id, seed, sequence number and cancellation flag; dropped and rejected records and
    /// figures belong in the ordered call.
    fn prepare(&self, batch: &Batch, ctx: &StepContext) -> Result<Prepared, StepError>;
}

/// A stateful transform (dedup, sample, sort): batches arrive one at a time, in order.
pub trait StatefulTransform: StepInfo {
    /// The step's per-record work that the executor may run ahead on the worker pool (see
    /// [`Prepare`]); `None` (the default) when there is none. Asked once, before the first
    /// batch. A step that has one gets [`StatefulTransform::process_prepared`] calls.
    fn preparer(&self) -> Option<Arc<dyn Prepare>> {
        None
    }

    /// Takes one batch and appends any output batches to `out`.
    fn process(&mut self, batch: &Batch, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError>;

    /// Takes one batch with what the step's [`Prepare`] made of it, in input order, and
    /// appends any output batches to `out`: the same output as [`StatefulTransform::process`]
    /// on the batch. The default ignores `prepared`.
    fn process_prepared(
        &mut self,
        batch: &Batch,
        prepared: &Prepared,
        ctx: &mut StepContext,
        out: &mut Vec<Batch>,
    ) -> Result<(), StepError> {
        let _ = prepared;
        self.process(batch, ctx, out)
    }

    /// Called once after the last batch; appends any remaining output.
    fn finish(&mut self, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        let _ = (ctx, out);
        Ok(())
    }

    /// Output the step holds back (a shard's batches, held until the earlier shards' keys
    /// were there, in a temporary file past a size) and lets out a little at a time: after
    /// [`StatefulTransform::finish`], the executor calls this until it returns `false`,
    /// passing on what each call appends before the next, so that what was held is never
    /// all in memory at once. The default holds nothing back.
    fn more(&mut self, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<bool, StepError> {
        let _ = (ctx, out);
        Ok(false)
    }
}

/// A merge: several inputs, one output.
pub trait Merge: StepInfo {
    /// Takes one batch from input number `input` (in the order of the step's `after`) and
    /// appends any output batches to `out`.
    fn process(
        &mut self,
        input: usize,
        batch: &Batch,
        ctx: &mut StepContext,
        out: &mut Vec<Batch>,
    ) -> Result<(), StepError>;

    /// Called once when input number `input` has ended.
    fn input_done(&mut self, input: usize, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        let _ = (input, ctx, out);
        Ok(())
    }

    /// Called once after every input has ended; appends any remaining output.
    fn finish(&mut self, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        let _ = (ctx, out);
        Ok(())
    }

    /// Output the step holds back (in a temporary file, say) and lets out a little at a
    /// time: after each [`Merge::input_done`] and after [`Merge::finish`], the executor
    /// calls this until it returns `false`, passing on what each call appends before the
    /// next, so that what was held is never all in memory at once. The default holds
    /// nothing back.
    fn more(&mut self, ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<bool, StepError> {
        let _ = (ctx, out);
        Ok(false)
    }
}

/// A sink: writes data out. Output must appear only on [`Sink::commit`], whole, so that a
/// failed run never leaves a file that looks finished.
pub trait Sink: StepInfo {
    /// Writes one batch (to a temporary place).
    fn write(&mut self, batch: &Batch, ctx: &mut StepContext) -> Result<(), StepError>;

    /// Makes everything written visible at once (rename into place). Called once, after
    /// the last batch, only if the run succeeded.
    fn commit(&mut self, ctx: &mut StepContext) -> Result<(), StepError>;

    /// Throws away everything written. Called when the run fails or is cancelled.
    fn abort(&mut self) {}
}

/// A step of any shape, as the DAG holds it.
pub enum Step {
    /// A source.
    Source(Box<dyn Source>),
    /// A stateless transform, shared by the threads that run it.
    Transform(Arc<dyn Transform>),
    /// A stateful transform.
    StatefulTransform(Box<dyn StatefulTransform>),
    /// A merge.
    Merge(Box<dyn Merge>),
    /// A sink.
    Sink(Box<dyn Sink>),
}

impl Step {
    /// The step's shape.
    pub fn shape(&self) -> Shape {
        match self {
            Step::Source(_) => Shape::Source,
            Step::Transform(_) => Shape::Transform,
            Step::StatefulTransform(_) => Shape::StatefulTransform,
            Step::Merge(_) => Shape::Merge,
            Step::Sink(_) => Shape::Sink,
        }
    }

    /// What the step states about itself.
    pub fn info(&self) -> &dyn StepInfo {
        match self {
            Step::Source(s) => &**s,
            Step::Transform(s) => &**s,
            Step::StatefulTransform(s) => &**s,
            Step::Merge(s) => &**s,
            Step::Sink(s) => &**s,
        }
    }
}

impl fmt::Debug for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let info = self.info();
        f.debug_struct("Step")
            .field("shape", &self.shape())
            .field("kind", &info.kind())
            .field("version", &info.version())
            .field("config", &info.config().to_string())
            .finish()
    }
}

/// A record that a step set aside, with the reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// Why.
    pub reason: String,
    /// The record, when the step has it.
    pub record: Option<Record>,
    /// Where it came from (`"data.csv:17"`), when known.
    pub origin: Option<String>,
}

/// What one step call gets besides its data: who it is, the seed, cancellation, and
/// places to report what it dropped or rejected. One context per call, so parallel calls
/// never share one.
#[derive(Debug)]
pub struct StepContext {
    step_id: Arc<str>,
    seed: u64,
    sequence: u64,
    cancel: Arc<AtomicBool>,
    dropped: Vec<(String, u64)>,
    rejected: Vec<Rejected>,
    keep_dropped: bool,
    fields_vary: bool,
    excluded: Vec<(String, Record)>,
    stats: Vec<(String, Value)>,
    added: Vec<(String, Value)>,
    requests: RequestCounts,
}

/// Requests a call made of its own and retried itself (an LLM step's HTTP requests), for
/// the run's retry counts and error rates: see [`StepContext::count_requests`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// Attempts sent, retries included.
    pub requests: u64,
    /// Attempts that failed: those retried, and those given up on.
    pub failed: u64,
    /// Attempts sent again after a transient failure.
    pub retries: u64,
}

impl StepContext {
    /// A context for step `step_id`, with the pipeline's seed, for the batch with this
    /// sequence number (0 for calls that are not per batch).
    pub fn new(step_id: impl Into<Arc<str>>, seed: u64, sequence: u64, cancel: Arc<AtomicBool>) -> Self {
        StepContext {
            step_id: step_id.into(),
            seed,
            sequence,
            cancel,
            dropped: Vec::new(),
            rejected: Vec::new(),
            keep_dropped: false,
            fields_vary: false,
            excluded: Vec::new(),
            stats: Vec::new(),
            added: Vec::new(),
            requests: RequestCounts::default(),
        }
    }

    /// Builder: keep the records given to [`StepContext::drop_record`] (the step has an
    /// exclusion file), not only their counts.
    pub fn keeping_dropped(mut self, keep: bool) -> Self {
        self.keep_dropped = keep;
        self
    }

    /// Builder: the records of the step's input may lack fields that others have
    /// ([`StepInfo::fields_vary`]), so that a batch's fields are those its own records
    /// have, in the order they first have them.
    pub fn with_fields_varying(mut self, vary: bool) -> Self {
        self.fields_vary = vary;
        self
    }

    /// Whether the records of the step's input may lack fields that others have: what a
    /// step reads of "every field of the batch" then depends on which records share it,
    /// and a step that must not depend on that reads the record's own fields (the ones not
    /// null), in name order.
    pub fn fields_vary(&self) -> bool {
        self.fields_vary
    }

    /// Whether dropped records are kept for an exclusion file. When not, a step that would
    /// have to build a record just to drop it can skip that work and only count.
    pub fn keeps_dropped(&self) -> bool {
        self.keep_dropped
    }

    /// The id of the step being called.
    pub fn step_id(&self) -> &str {
        &self.step_id
    }

    /// The pipeline's seed.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The input batch's sequence number, counted from 0 in source order. With the seed,
    /// it gives randomness that does not depend on thread count or timing.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Whether the run is being cancelled; long calls should check it and return.
    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The run's cancel flag itself, for work a call hands to threads of its own, which
    /// must stop starting new work when the run stops, even after the call has returned.
    pub fn cancel_flag(&self) -> Arc<AtomicBool> {
        Arc::clone(&self.cancel)
    }

    /// Counts `n` records dropped on purpose (a filter) for `reason`, for the metrics.
    pub fn count_dropped(&mut self, reason: &str, n: u64) {
        if n == 0 {
            return;
        }
        match self.dropped.iter_mut().find(|(r, _)| r == reason) {
            Some((_, c)) => *c += n,
            None => self.dropped.push((reason.to_owned(), n)),
        }
    }

    /// Drops one record on purpose for `reason`: counts it, and keeps it (built by
    /// `record`, called only then) for the step's exclusion file when it has one.
    pub fn drop_record(&mut self, reason: &str, record: impl FnOnce() -> Record) {
        self.count_dropped(reason, 1);
        if self.keep_dropped {
            self.excluded.push((reason.to_owned(), record()));
        }
    }

    /// Drops one record on purpose like [`StepContext::drop_record`], counted under
    /// `reason` but kept for the exclusion file with the reason `why` gives (built only
    /// then): the counts stay one per rule while each excluded record says what it measured
    /// (`gopher_repetition: top_2_gram 0.231 > 0.2`).
    pub fn drop_record_because(&mut self, reason: &str, why: impl FnOnce() -> String, record: impl FnOnce() -> Record) {
        self.count_dropped(reason, 1);
        if self.keep_dropped {
            self.excluded.push((why(), record()));
        }
    }

    /// Sets a dataset-level figure of the step (a validator's pass rate, a comparison of
    /// distributions) under `name`, for the run's stats and report. A later value for
    /// the same name replaces the earlier one, so a stateful step can set its totals in
    /// `finish`.
    pub fn set_stat(&mut self, name: &str, value: impl Into<Value>) {
        let value = value.into();
        match self.stats.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = value,
            None => self.stats.push((name.to_owned(), value)),
        }
    }

    /// The figures set with [`StepContext::set_stat`], emptying them.
    pub fn take_stats(&mut self) -> Vec<(String, Value)> {
        std::mem::take(&mut self.stats)
    }

    /// Adds `amount` (an integer or a float) to the figure `name`: what a stateless step
    /// uses for totals (tokens, requests), since its calls run in parallel and end in any
    /// order, so that no call knows the running total. The run sums every call's amounts;
    /// a step uses either this or [`StepContext::set_stat`] for one name, not both.
    pub fn add_stat(&mut self, name: &str, amount: impl Into<Value>) {
        let amount = amount.into();
        match self.added.iter_mut().find(|(n, _)| n == name) {
            Some((_, v)) => *v = sum_figures(v, &amount),
            None => self.added.push((name.to_owned(), amount)),
        }
    }

    /// The amounts given to [`StepContext::add_stat`], emptying them.
    pub fn take_added_stats(&mut self) -> Vec<(String, Value)> {
        std::mem::take(&mut self.added)
    }

    /// Counts requests this call made of its own and retried itself (an LLM step's HTTP
    /// requests, retried through 429s and 5xx answers): they count in the step's retries
    /// and error rate like the executor's own retries of calls, once each. A step reports
    /// them even when the call then fails, since they were made.
    pub fn count_requests(&mut self, counts: RequestCounts) {
        self.requests.requests += counts.requests;
        self.requests.failed += counts.failed;
        self.requests.retries += counts.retries;
    }

    /// The requests given to [`StepContext::count_requests`], emptying them.
    pub fn take_requests(&mut self) -> RequestCounts {
        std::mem::take(&mut self.requests)
    }

    /// Sets aside a bad record; the step's bad-record policy decides whether the run goes on.
    pub fn reject(&mut self, rejected: Rejected) {
        self.rejected.push(rejected);
    }

    /// The drop counts by reason, emptying them.
    pub fn take_dropped(&mut self) -> Vec<(String, u64)> {
        std::mem::take(&mut self.dropped)
    }

    /// The dropped records kept for the exclusion file, with their reasons, in the order
    /// they were dropped, emptying them.
    pub fn take_excluded(&mut self) -> Vec<(String, Record)> {
        std::mem::take(&mut self.excluded)
    }

    /// The rejected records, emptying them.
    pub fn take_rejected(&mut self) -> Vec<Rejected> {
        std::mem::take(&mut self.rejected)
    }
}

/// The sum of two figures: integers stay integers, a float makes a float, anything else
/// (not a number) is replaced by the newer value.
pub fn sum_figures(a: &Value, b: &Value) -> Value {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Value::Int(x.saturating_add(*y)),
        (Value::Int(x), Value::Float(y)) => Value::Float(*x as f64 + y),
        (Value::Float(x), Value::Int(y)) => Value::Float(x + *y as f64),
        (Value::Float(x), Value::Float(y)) => Value::Float(x + y),
        (_, b) => b.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_preparation_reads_as_its_own_type_and_another_is_an_error_naming_the_step() {
        let prepared: Prepared = Box::new(vec![1u128, 2]);
        assert_eq!(prepared_as::<Vec<u128>>(&prepared, "dedup").unwrap(), &vec![1u128, 2]);
        let e = prepared_as::<Vec<u64>>(&prepared, "dedup").unwrap_err();
        assert!(e.to_string().contains("dedup was handed a preparation of another type"), "{e}");
    }

    #[test]
    fn added_figures_sum_within_a_call() {
        let mut ctx = StepContext::new("llm", 0, 0, Arc::default());
        ctx.add_stat("tokens", 3i64);
        ctx.add_stat("tokens", 4i64);
        ctx.add_stat("cost", 0.5);
        ctx.add_stat("cost", 1i64);
        assert_eq!(
            ctx.take_added_stats(),
            vec![("tokens".to_owned(), Value::Int(7)), ("cost".to_owned(), Value::Float(1.5))]
        );
        assert!(ctx.take_added_stats().is_empty());
        assert!(ctx.take_stats().is_empty(), "set and added figures are kept apart");
    }

    #[test]
    fn canonical_config_ignores_key_order() {
        #[derive(Serialize)]
        struct A {
            b: u32,
            a: &'static str,
        }
        let mut m = std::collections::HashMap::new();
        m.insert("a", serde_json::json!("x"));
        m.insert("b", serde_json::json!(1));
        assert_eq!(CanonicalConfig::of(&A { b: 1, a: "x" }).unwrap(), CanonicalConfig::of(&m).unwrap());
        assert_eq!(CanonicalConfig::of(&m).unwrap().to_string(), r#"{"a":"x","b":1}"#);
    }

    #[test]
    fn context_counts_drops_by_reason() {
        let mut ctx = StepContext::new("clean", 42, 3, Arc::default());
        ctx.count_dropped("too short", 2);
        ctx.count_dropped("empty", 1);
        ctx.count_dropped("too short", 5);
        ctx.count_dropped("never", 0);
        assert_eq!(ctx.take_dropped(), vec![("too short".to_owned(), 7), ("empty".to_owned(), 1)]);
        assert!(ctx.take_dropped().is_empty());
    }

    #[test]
    fn dropped_records_are_kept_only_with_an_exclusion_file() {
        let mut ctx = StepContext::new("clean", 42, 3, Arc::default());
        ctx.drop_record("too short", || panic!("built although nobody keeps it"));
        assert_eq!(ctx.take_dropped(), vec![("too short".to_owned(), 1)]);
        assert!(ctx.take_excluded().is_empty());

        let mut ctx = StepContext::new("clean", 42, 3, Arc::default()).keeping_dropped(true);
        assert!(ctx.keeps_dropped());
        ctx.drop_record("too short", || Record::new().with("text", "hi"));
        ctx.drop_record("empty", || Record::new().with("text", ""));
        assert_eq!(ctx.take_dropped(), vec![("too short".to_owned(), 1), ("empty".to_owned(), 1)]);
        let kept = ctx.take_excluded();
        assert_eq!(kept.len(), 2);
        assert_eq!(kept[0], ("too short".to_owned(), Record::new().with("text", "hi")));
    }
}
