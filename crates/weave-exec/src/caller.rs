//! Calling a step on its stage's thread: retries with their delays, the GPU semaphore,
//! panics caught, and the watch the coordinator reads for timeouts.

use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use weave_core::{Event, RetryPolicy, StepContext, StepError};

use crate::account::CallReport;
use crate::error::Error;
use crate::shared::{Shared, Stopped};
use crate::stages::{StageStep, Watch};
use crate::summary::StepStats;

/// The message a panic carried, for errors.
pub(crate) fn panic_message(p: &Box<dyn Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".to_owned()
    }
}

/// Calls a step on its stage's thread, with retries, the GPU semaphore and the watch.
pub(crate) struct Caller<'a> {
    pub(crate) shared: &'a Shared,
    pub(crate) watch: &'a Watch,
    /// When the run started: call start times are kept as nanoseconds since then.
    pub(crate) start: Instant,
    /// The run's worker pool, where the calls of a parallel step run.
    pub(crate) pool: &'a Arc<rayon::ThreadPool>,
}

impl Caller<'_> {
    pub(crate) fn call<T: Send>(
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
                    .keeping_dropped(step.exclusions.is_some())
                    .with_fields_varying(step.read.vary());
            let gpu = self.shared.gpus.acquire(step.gpus, &self.shared.cancel).ok_or(Stopped)?;
            self.watch.call_started.store((self.start.elapsed().as_nanos() as u64).max(1), Ordering::Relaxed);
            // A call that computes runs on the pool (the stage's thread waits), so that the
            // run keeps at most `max_concurrent` cores busy; the CPU time is the pool
            // thread's. A call that may be abandoned (a timeout), waits on a GPU or on I/O
            // stays on the stage's thread, where it cannot hold a worker.
            // The time in the call is counted where it runs, without the wait for a worker.
            let mut once = || {
                let t0 = Instant::now();
                let (r, cpu) = crate::cpu::timed(|| catch_unwind(AssertUnwindSafe(|| f(&mut ctx))));
                (r, cpu, t0.elapsed())
            };
            let (r, cpu, busy) = if step.parallel || step.on_pool { self.pool.install(once) } else { once() };
            self.watch.call_started.store(0, Ordering::Relaxed);
            drop(gpu);
            stats.busy += busy;
            stats.cpu += cpu;
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
