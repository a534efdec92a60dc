//! Where calls run: `max_concurrent` bounds every call that computes, a source's, a
//! stateful step's and a sink's included, not only the pool's map jobs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use weave_core::{
    Batch, CanonicalConfig, Sink, Source, StatefulTransform, StepContext, StepError, StepInfo, StepPolicy,
};
use weave_exec::{ExecOptions, run};

use crate::steps::*;

/// Calls under way at once, over every step of a run.
#[derive(Default)]
struct Busy {
    now: AtomicU32,
    peak: AtomicU32,
}

impl Busy {
    /// A call's work: counted while it lasts.
    fn work(&self) {
        let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(n, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(3));
        self.now.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A source, a stateful step and a sink that each work in every call.
struct Step<T> {
    inner: T,
    busy: Arc<Busy>,
    timeout: Option<Duration>,
}

impl<T: Send> StepInfo for Step<T> {
    fn kind(&self) -> &str {
        "busy"
    }
    fn config(&self) -> CanonicalConfig {
        CanonicalConfig::default()
    }
    fn policy(&self) -> StepPolicy {
        StepPolicy { timeout: self.timeout, ..StepPolicy::default() }
    }
}

impl Source for Step<Gen> {
    fn next_batch(&mut self, ctx: &mut StepContext) -> Result<Option<Batch>, StepError> {
        self.busy.work();
        self.inner.next_batch(ctx)
    }
}

impl StatefulTransform for Step<()> {
    fn process(&mut self, b: &Batch, _ctx: &mut StepContext, out: &mut Vec<Batch>) -> Result<(), StepError> {
        self.busy.work();
        out.push(b.clone());
        Ok(())
    }
}

impl Sink for Step<Collect> {
    fn write(&mut self, batch: &Batch, ctx: &mut StepContext) -> Result<(), StepError> {
        self.busy.work();
        self.inner.write(batch, ctx)
    }
    fn commit(&mut self, ctx: &mut StepContext) -> Result<(), StepError> {
        self.inner.commit(ctx)
    }
}

/// Runs source → map → stateful → sink, each call working 3 ms, at `threads`; returns the
/// most calls under way at once and the output.
fn peak(threads: usize, timeout: Option<Duration>) -> (u32, Vec<u8>) {
    let busy = Arc::new(Busy::default());
    let b = Arc::clone(&busy);
    let (out, lines) = collect();
    fn step<T>(inner: T, busy: &Arc<Busy>, timeout: Option<Duration>) -> Step<T> {
        Step { inner, busy: Arc::clone(busy), timeout }
    }
    let p = builder(threads)
        .step("gen", src(step(gen_(30, 4), &busy, timeout)))
        .step(
            "map",
            tf(map(move |batch, _| {
                b.work();
                Ok(batch.clone())
            })),
        )
        .step("keep", stateful(step((), &busy, timeout)))
        .step("out", sink(step(out, &busy, timeout)))
        .build()
        .unwrap();
    let summary = run(p, ExecOptions::default()).unwrap();
    assert_eq!(summary.step("out").unwrap().records_in, 120);
    let lines = lines.lock().unwrap().clone().unwrap();
    (busy.peak.load(Ordering::SeqCst), lines)
}

#[test]
fn max_concurrent_bounds_the_calls_of_every_stage() {
    let (one, first) = peak(1, None);
    assert_eq!(one, 1, "max_concurrent = 1: one call at a time, over the four stages");
    let (two, second) = peak(2, None);
    assert!(two <= 2, "max_concurrent = 2: {two} calls at once");
    assert_eq!(first, second, "the same output");
}

#[test]
fn calls_that_may_be_abandoned_keep_their_own_threads() {
    // With a timeout, the source's, stateful step's and sink's calls run on their stages'
    // threads (an abandoned call must not hold a pool worker), beside the map's on the pool.
    let (n, _) = peak(1, Some(Duration::from_secs(60)));
    assert!(n > 1, "{n}");
}
