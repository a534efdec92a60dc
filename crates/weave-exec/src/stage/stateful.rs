//! A stateful transform's loop: each batch in order, then `finish` for what the step held
//! back. A step with a preparer (`StatefulTransform::preparer`) has its batches prepared
//! ahead on the worker pool, several at a time and in any order ([`Ahead`]), and handed to
//! its ordered call in input order with what was made of them.

use std::collections::{HashMap, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select, unbounded};
use weave_core::{Event, Prepare, Prepared, StatefulTransform, StepContext, StepError};

use super::{Made, Single, StageCtx};
use crate::caller::{panic_message, retry_delay, step_error};
use crate::options::TICK;
use crate::shared::{Msg, Stopped};
use crate::stages::StageStep;
use crate::summary::StepStats;

pub(super) fn stateful_loop(
    cx: &StageCtx<'_>,
    mut one: Single<'_>,
    st: &mut dyn StatefulTransform,
) -> Result<(), Stopped> {
    let shared = cx.shared;
    let step = one.step;
    // A step with a call timeout prepares inside its call (`process`), where the timeout
    // watch sees the work: a preparation on the pool has no deadline.
    let mut ahead = st.preparer().filter(|_| step.timeout.is_none()).map(|p| Ahead::new(cx, step, p));
    let mut out = Vec::new();
    let mut last_seq = None;
    loop {
        let (msg, prepared) = match &mut ahead {
            Some(a) => match a.next(one.stats)? {
                Some((msg, prepared)) => (msg, Some(prepared)),
                None => break,
            },
            None => match shared.recv(&cx.inputs[0]) {
                Some(msg) => (msg, None),
                None => break,
            },
        };
        let t0 = Instant::now();
        let ((), mut ctx) = cx.caller.call(step, msg.seq, one.stats, |ctx| {
            out.clear();
            let batch = step.read.complete(&msg.batch)?;
            match &prepared {
                Some(p) => st.process_prepared(&batch, p, ctx, &mut out),
                None => st.process(&batch, ctx, &mut out),
            }
        })?;
        shared.settle(step, one.stats, &mut ctx)?;
        one.stats.batches_in += 1;
        let (seq, n) = (msg.seq, msg.batch.len() as u64);
        cx.emit_outputs(&mut one, &mut out, Made { seq, records_in: n, t0, input: Some(msg.permit) })?;
        last_seq = Some(seq);
    }
    if shared.cancelled() {
        return Err(Stopped);
    }
    let seq = last_seq.map_or(0, |s| s + 1);
    cx.fields_at_end(step, seq, one.stats)?;
    let t0 = Instant::now();
    let ((), mut ctx) = cx.caller.call(step, seq, one.stats, |ctx| {
        out.clear();
        st.finish(ctx, &mut out)
    })?;
    shared.settle(step, one.stats, &mut ctx)?;
    cx.emit_outputs(&mut one, &mut out, Made { seq, records_in: 0, t0, input: None })?;
    cx.drain(&mut one, &mut out, seq, |ctx, out| st.more(ctx, out))
}

/// What a preparation job sends back.
struct Done {
    idx: u64,
    elapsed: Duration,
    cpu: Duration,
    result: Result<Prepared, StepError>,
}

/// Where a batch taken in is.
enum Slot {
    /// Being prepared on the pool.
    Running,
    /// Waiting out a retry's delay.
    Waiting(Instant),
    /// Prepared, waiting for the batches before it.
    Done(Prepared),
}

struct Entry {
    msg: Msg,
    slot: Slot,
    retries: u32,
}

/// The batches of a stateful stage taken in ahead of its ordered calls, kept in input
/// order, with their preparations under way on the pool.
struct Ahead<'s, 'a> {
    cx: &'s StageCtx<'a>,
    step: &'s StageStep,
    prep: Arc<dyn Prepare>,
    tx: Sender<Done>,
    rx: Receiver<Done>,
    order: VecDeque<u64>,
    entries: HashMap<u64, Entry>,
    input_open: bool,
    next_idx: u64,
    /// Batches taken in and not yet handed on: twice the pool's width, so that the pool
    /// has the next batches at hand while the stage's thread decides on the first.
    max_in_flight: usize,
}

impl<'s, 'a> Ahead<'s, 'a> {
    fn new(cx: &'s StageCtx<'a>, step: &'s StageStep, prep: Arc<dyn Prepare>) -> Self {
        let (tx, rx) = unbounded();
        let max_in_flight = (2 * cx.caller.pool.current_num_threads()).max(2);
        Ahead {
            cx,
            step,
            prep,
            tx,
            rx,
            order: VecDeque::new(),
            entries: HashMap::new(),
            input_open: true,
            next_idx: 0,
            max_in_flight,
        }
    }

    /// The next batch in input order with what was prepared of it; `None` when the input
    /// has ended and every batch was handed on.
    fn next(&mut self, stats: &mut StepStats) -> Result<Option<(Msg, Prepared)>, Stopped> {
        let shared = self.cx.shared;
        loop {
            if shared.cancelled() {
                return Err(Stopped);
            }
            if let Some(idx) = self.order.front().copied()
                && matches!(self.entries.get(&idx).map(|e| &e.slot), Some(Slot::Done(_)))
            {
                self.order.pop_front();
                let Some(Entry { msg, slot: Slot::Done(prepared), .. }) = self.entries.remove(&idx) else {
                    continue;
                };
                return Ok(Some((msg, prepared)));
            }
            if !self.input_open && self.order.is_empty() {
                return Ok(None);
            }
            self.start_due(Instant::now());
            self.wait(stats)?;
        }
    }

    /// Starts a preparation of batch `idx` on the pool.
    fn submit(&self, idx: u64, msg: &Msg) {
        let shared = self.cx.shared;
        let (prep, tx, batch) = (Arc::clone(&self.prep), self.tx.clone(), msg.batch.clone());
        let read = Arc::clone(&self.step.read);
        let ctx = StepContext::new(Arc::clone(&self.step.id), shared.seed, msg.seq, Arc::clone(&shared.cancel))
            .with_fields_varying(self.step.read.vary());
        let jobs = Arc::clone(&self.cx.caller.watch.jobs);
        jobs.fetch_add(1, Ordering::Relaxed);
        self.cx.caller.pool.spawn(move || {
            let t0 = Instant::now();
            let (caught, cpu) =
                crate::cpu::timed(|| catch_unwind(AssertUnwindSafe(|| prep.prepare(&*read.complete(&batch)?, &ctx))));
            let result = match caught {
                Ok(r) => r,
                Err(p) => Err(StepError::internal(format!("panicked: {}", panic_message(&p)))),
            };
            let _ = tx.send(Done { idx, elapsed: t0.elapsed(), cpu, result });
            jobs.fetch_sub(1, Ordering::Relaxed);
        });
    }

    /// Starts the retries whose delay is over.
    fn start_due(&mut self, now: Instant) {
        let due: Vec<u64> = self
            .order
            .iter()
            .copied()
            .filter(|idx| matches!(self.entries.get(idx).map(|e| &e.slot), Some(Slot::Waiting(at)) if *at <= now))
            .collect();
        for idx in due {
            if let Some(e) = self.entries.get(&idx) {
                self.submit(idx, &e.msg);
            }
            if let Some(e) = self.entries.get_mut(&idx) {
                e.slot = Slot::Running;
            }
        }
    }

    /// Waits for a preparation to end, a batch to come in (when there is room), or the
    /// next retry to be due.
    fn wait(&mut self, stats: &mut StepStats) -> Result<(), Stopped> {
        let next_wake = self
            .entries
            .values()
            .filter_map(|e| match e.slot {
                Slot::Waiting(at) => Some(at),
                _ => None,
            })
            .min();
        let wait = next_wake.map_or(TICK, |w| w.saturating_duration_since(Instant::now()).min(TICK));
        let waiting = self.entries.values().filter(|e| matches!(e.slot, Slot::Waiting(_))).count();
        self.cx.caller.watch.pending.store(waiting, Ordering::Relaxed);
        let room = self.input_open && self.entries.len() < self.max_in_flight;
        let never = crossbeam_channel::never();
        let in_rx = if room { &self.cx.inputs[0] } else { &never };
        select! {
            recv(in_rx) -> msg => match msg {
                Ok(msg) => {
                    self.cx.shared.progress.fetch_add(1, Ordering::Relaxed);
                    let idx = self.next_idx;
                    self.next_idx += 1;
                    self.submit(idx, &msg);
                    self.entries.insert(idx, Entry { msg, slot: Slot::Running, retries: 0 });
                    self.order.push_back(idx);
                }
                Err(_) => self.input_open = false,
            },
            recv(self.rx) -> done => {
                if let Ok(done) = done {
                    self.settle(done, stats)?;
                }
            },
            default(wait) => {}
        }
        Ok(())
    }

    /// Takes a preparation's result: done, waiting for a retry, or the step failed.
    fn settle(&mut self, done: Done, stats: &mut StepStats) -> Result<(), Stopped> {
        let (shared, step) = (self.cx.shared, self.step);
        let Some(e) = self.entries.get_mut(&done.idx) else { return Ok(()) };
        stats.busy += done.elapsed;
        stats.cpu += done.cpu;
        let error = match done.result {
            Ok(prepared) => {
                e.slot = Slot::Done(prepared);
                return Ok(());
            }
            Err(error) => error,
        };
        let seq = e.msg.seq;
        match retry_delay(&step.retry, &error, e.retries, seq) {
            Some(delay) => {
                e.retries += 1;
                let (id, attempt, msg) = (Arc::clone(&step.id), e.retries, error.to_string());
                shared.count(stats, Event::BatchRetried { step: id, seq, attempt, delay, error: msg });
                e.slot = Slot::Waiting(Instant::now() + delay);
                Ok(())
            }
            None => {
                let (id, msg, class) = (Arc::clone(&step.id), error.to_string(), error.class());
                shared.count(stats, Event::BatchFailed { step: id, seq, error: msg, class });
                shared.fail(step_error(step, e.retries, error));
                Err(Stopped)
            }
        }
    }
}
