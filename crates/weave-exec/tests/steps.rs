//! Steps made for the executor's tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weave_core::{
    Batch, CanonicalConfig, Merge, PipelineBuilder, Prepare, Prepared, Record, Resources, Sink, Source,
    StatefulTransform, Step, StepContext, StepError, StepInfo, StepPolicy, Transform, ValueRef,
};

macro_rules! info {
    ($t:ty, $kind:expr) => {
        impl StepInfo for $t {
            fn kind(&self) -> &str {
                $kind
            }
            fn config(&self) -> CanonicalConfig {
                CanonicalConfig::default()
            }
            fn policy(&self) -> StepPolicy {
                self.policy
            }
            fn resources(&self) -> Resources {
                self.resources
            }
        }
    };
}

/// Makes `batches` batches of `rows` records `{ "i": n, "text": "..." }`.
pub(crate) struct Gen {
    pub(crate) batches: u64,
    pub(crate) rows: u64,
    pub(crate) next: u64,
    pub(crate) policy: StepPolicy,
    pub(crate) resources: Resources,
    /// Bytes of padding text per record, to make batches big.
    pub(crate) pad: usize,
}
info!(Gen, "gen");

pub(crate) fn gen_(batches: u64, rows: u64) -> Gen {
    Gen { batches, rows, next: 0, policy: StepPolicy::default(), resources: Resources::default(), pad: 0 }
}

impl Source for Gen {
    fn next_batch(&mut self, _ctx: &mut StepContext) -> Result<Option<Batch>, StepError> {
        if self.next == self.batches {
            return Ok(None);
        }
        let b = self.next;
        self.next += 1;
        let pad = "x".repeat(self.pad);
        let recs: Vec<Record> = (0..self.rows)
            .map(|r| {
                let i = b * self.rows + r;
                Record::new().with("i", i as i64).with("text", format!("row {i}{pad}"))
            })
            .collect();
        Ok(Some(Batch::from_records(&recs)))
    }
}

pub(crate) type MapFn = dyn Fn(&Batch, &mut StepContext) -> Result<Batch, StepError> + Send + Sync;

/// A stateless transform running a closure.
pub(crate) struct Map {
    pub(crate) f: Box<MapFn>,
    pub(crate) policy: StepPolicy,
    pub(crate) resources: Resources,
}
info!(Map, "map");

pub(crate) fn map(f: impl Fn(&Batch, &mut StepContext) -> Result<Batch, StepError> + Send + Sync + 'static) -> Map {
    Map { f: Box::new(f), policy: StepPolicy::default(), resources: Resources::default() }
}

impl Transform for Map {
    fn apply(&self, batch: &Batch, ctx: &mut StepContext) -> Result<Batch, StepError> {
        (self.f)(batch, ctx)
    }
}

/// Appends a field to every record, `tag` = `"<name>"`, through the per-record view.
pub(crate) fn tag(name: &'static str) -> Map {
    map(move |b, _| {
        b.map_records(|mut r| {
            let prev = r.get("tag").and_then(|v| v.as_str()).unwrap_or("").to_owned();
            r.set("tag", format!("{prev}{name}"));
            Ok(Some(r))
        })
    })
}

/// A stateful transform that keeps every other batch (by arrival), and at the end emits
/// a batch with the count it saw.
pub(crate) struct EveryOther {
    pub(crate) seen: u64,
    pub(crate) policy: StepPolicy,
    pub(crate) resources: Resources,
}
info!(EveryOther, "every_other");

impl StatefulTransform for EveryOther {
    fn process(&mut self, batch: &Batch, _ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        if self.seen.is_multiple_of(2) {
            out.push(batch.clone());
        }
        self.seen += 1;
        Ok(())
    }
    fn finish(&mut self, _ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        out.push(Batch::from_records(&[Record::new().with("seen", self.seen as i64)]));
        Ok(())
    }
}

pub(crate) type PrepareFn = dyn Fn(&StepContext) -> Result<(), StepError> + Send + Sync;

/// A small dedup: keeps the records whose key (`i % modulus`) is new. With `ahead`, the
/// keys are made by its preparer (after `before`, which may sleep or fail), and its
/// ordered call notes the sequence numbers it was handed, checking that the keys are its
/// batch's.
pub(crate) struct KeepNew {
    pub(crate) modulus: i64,
    pub(crate) ahead: bool,
    pub(crate) before: Arc<PrepareFn>,
    pub(crate) seen: std::collections::HashSet<i64>,
    pub(crate) order: Arc<Mutex<Vec<u64>>>,
    pub(crate) policy: StepPolicy,
    pub(crate) resources: Resources,
}
info!(KeepNew, "keep_new");

pub(crate) fn keep_new(modulus: i64, ahead: bool) -> KeepNew {
    KeepNew {
        modulus,
        ahead,
        before: Arc::new(|_| Ok(())),
        seen: Default::default(),
        order: Default::default(),
        policy: StepPolicy::default(),
        resources: Resources::default(),
    }
}

/// `KeepNew`'s preparer.
struct Keys {
    modulus: i64,
    before: Arc<PrepareFn>,
}

impl Keys {
    fn keys(&self, batch: &Batch) -> Vec<i64> {
        let col = batch.column("i").expect("an `i` field");
        (0..batch.len())
            .map(|r| match col.get(r) {
                ValueRef::Int(i) => i % self.modulus,
                other => panic!("not an int: {other:?}"),
            })
            .collect()
    }
}

impl Prepare for Keys {
    fn prepare(&self, batch: &Batch, ctx: &StepContext) -> Result<Prepared, StepError> {
        (self.before)(ctx)?;
        Ok(Box::new((ctx.sequence(), self.keys(batch))))
    }
}

impl KeepNew {
    fn decide(&mut self, batch: &Batch, keys: &[i64], out: &mut Vec<Batch>) {
        let keep: Vec<bool> = keys.iter().map(|k| self.seen.insert(*k)).collect();
        if keep.iter().any(|k| *k) {
            out.push(batch.filter(&keep));
        }
    }
}

impl StatefulTransform for KeepNew {
    fn preparer(&self) -> Option<Arc<dyn Prepare>> {
        self.ahead
            .then(|| Arc::new(Keys { modulus: self.modulus, before: Arc::clone(&self.before) }) as Arc<dyn Prepare>)
    }

    fn process(&mut self, batch: &Batch, _ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        let keys = Keys { modulus: self.modulus, before: Arc::clone(&self.before) }.keys(batch);
        self.decide(batch, &keys, out);
        Ok(())
    }

    fn process_prepared(
        &mut self,
        batch: &Batch,
        prepared: &Prepared,
        ctx: &mut StepContext,
        out: &mut Vec<Batch>,
    ) -> Result<(), StepError> {
        let (seq, keys) = prepared.downcast_ref::<(u64, Vec<i64>)>().expect("keys");
        if *seq != ctx.sequence() {
            return Err(StepError::fatal(format!("handed batch {seq}'s keys with batch {}", ctx.sequence())));
        }
        self.order.lock().unwrap().push(*seq);
        let keys = keys.clone();
        self.decide(batch, &keys, out);
        Ok(())
    }
}

/// Passes on every input's batches.
pub(crate) struct Concat {
    pub(crate) policy: StepPolicy,
    pub(crate) resources: Resources,
}
info!(Concat, "concat");

pub(crate) fn concat() -> Concat {
    Concat { policy: StepPolicy::default(), resources: Resources::default() }
}

impl Merge for Concat {
    fn process(&mut self, _i: usize, b: &Batch, _ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        out.push(b.clone());
        Ok(())
    }
}

/// Collects every record as a JSON line; the lines become visible on commit.
pub(crate) struct Collect {
    pub(crate) pending: Vec<u8>,
    pub(crate) committed: Arc<Mutex<Option<Vec<u8>>>>,
    pub(crate) delay: Duration,
    pub(crate) policy: StepPolicy,
    pub(crate) resources: Resources,
    pub(crate) written: Arc<AtomicU64>,
}
info!(Collect, "collect");

pub(crate) fn collect() -> (Collect, Arc<Mutex<Option<Vec<u8>>>>) {
    let out = Arc::new(Mutex::new(None));
    let c = Collect {
        pending: Vec::new(),
        committed: Arc::clone(&out),
        delay: Duration::ZERO,
        policy: StepPolicy::default(),
        resources: Resources::default(),
        written: Arc::default(),
    };
    (c, out)
}

impl Sink for Collect {
    fn write(&mut self, batch: &Batch, _ctx: &mut StepContext) -> Result<(), StepError> {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        for r in batch.rows() {
            self.pending.extend_from_slice(r.to_record().to_string().as_bytes());
            self.pending.push(b'\n');
        }
        self.written.fetch_add(batch.memory_size() as u64, Ordering::Relaxed);
        Ok(())
    }
    fn commit(&mut self, _ctx: &mut StepContext) -> Result<(), StepError> {
        *self.committed.lock().unwrap() = Some(std::mem::take(&mut self.pending));
        Ok(())
    }
    fn abort(&mut self) {
        self.pending.clear();
    }
}

/// Counts the bytes it is given, slowly, and keeps nothing.
pub(crate) struct Drain {
    /// The pause on the first write, during which the source can fill the budget.
    pub(crate) first: Duration,
    pub(crate) delay: Duration,
    pub(crate) written: Arc<AtomicU64>,
    pub(crate) policy: StepPolicy,
    pub(crate) resources: Resources,
}
info!(Drain, "drain");

impl Sink for Drain {
    fn write(&mut self, batch: &Batch, _ctx: &mut StepContext) -> Result<(), StepError> {
        std::thread::sleep(std::mem::take(&mut self.first).max(self.delay));
        self.written.fetch_add(batch.memory_size() as u64, Ordering::Relaxed);
        Ok(())
    }
    fn commit(&mut self, _ctx: &mut StepContext) -> Result<(), StepError> {
        Ok(())
    }
}

/// A policy with fast retries, for tests.
pub(crate) fn fast_retries(n: u32) -> StepPolicy {
    StepPolicy {
        retry: Some(weave_core::RetryPolicy {
            max_retries: n,
            retry_delay: Duration::from_millis(1),
            backoff: weave_core::Backoff::Fixed,
            max_delay: Duration::from_millis(5),
            jitter: false,
        }),
        ..StepPolicy::default()
    }
}

/// The builder with `threads` workers.
pub(crate) fn builder(threads: usize) -> PipelineBuilder {
    PipelineBuilder::new("test").resources(weave_core::ResourceLimits {
        max_concurrent: Some(threads),
        ..weave_core::ResourceLimits::default()
    })
}

pub(crate) fn src(s: impl Source + 'static) -> Step {
    Step::Source(Box::new(s))
}
pub(crate) fn tf(s: impl Transform + 'static) -> Step {
    Step::Transform(Arc::new(s))
}
pub(crate) fn sink(s: impl Sink + 'static) -> Step {
    Step::Sink(Box::new(s))
}
pub(crate) fn merge(s: impl Merge + 'static) -> Step {
    Step::Merge(Box::new(s))
}
pub(crate) fn stateful(s: impl StatefulTransform + 'static) -> Step {
    Step::StatefulTransform(Box::new(s))
}
