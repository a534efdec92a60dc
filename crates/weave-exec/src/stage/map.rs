//! The map stage: one or more stateless transforms, fused into one pass per batch, with
//! batches processed in parallel on a pool and put back in input order.

use std::collections::{HashMap, HashSet, VecDeque};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, select, unbounded};
use weave_core::{Batch, Event, StepContext, StepError, Transform};

use super::StageCtx;
use crate::account::CallReport;
use crate::caller::{panic_message, retry_delay, step_error};
use crate::error::Error;
use crate::fields::ReadFields;
use crate::options::TICK;
use crate::recorder::Recorder;
use crate::shared::{Msg, Stopped};
use crate::stages::StageStep;
use crate::summary::StepStats;

/// What one call of one step in a job did, for the stage's thread to account.
struct Report {
    k: usize,
    records_in: u64,
    records_out: u64,
    elapsed: Duration,
    /// The CPU time the call used.
    cpu: Duration,
    call: CallReport,
}

/// How a job ended.
enum Outcome {
    Done(Batch),
    /// Step `k` failed on `input`; steps before it are done. `spent` is what the failed
    /// call spent (requests, added figures), which counts although it is made again.
    Failed {
        k: usize,
        input: Batch,
        error: StepError,
        spent: Box<CallReport>,
    },
}

struct JobResult {
    /// The stage's own arrival number of the batch (sequence numbers repeat after a merge).
    idx: u64,
    attempt: u64,
    reports: Vec<Report>,
    outcome: Outcome,
}

/// Where a batch of this stage is.
enum Slot {
    /// Being processed; `input` is kept for a retry after a timeout.
    Running { attempt: u64, deadline: Option<Instant>, k: usize, input: Batch },
    /// Waiting to be tried again from step `k`.
    Waiting { at: Instant, k: usize, input: Batch },
    /// Finished, waiting for the batches before it.
    Done(Batch),
}

struct Entry {
    seq: u64,
    slot: Slot,
    /// The input's share of the memory budget, handed to the output when it is passed on.
    input: Msg,
    /// What the steps' calls did, accounted when the batch is passed on, in input order,
    /// so that the quarantine file and the events come out the same whatever the timing.
    reports: Vec<Report>,
    retries: Vec<u32>,
    /// Its output came from the cache (an interrupted run stored it).
    cached: bool,
}

/// How many calls of a step that ran past its timeout may be left running (a thread cannot
/// be stopped, so an abandoned call goes on until it returns) before the run fails: as many
/// as the step may have under way, `width` (the run's `max_concurrent`, or the step's I/O
/// concurrency), and at least 4, so that a step of one call at a time can still retry a few.
/// With the calls under way, a step with a timeout has at most twice that many threads.
pub fn max_abandoned_calls(width: usize) -> usize {
    width.max(4)
}

/// The map stage while it runs: its steps and their counts, the jobs under way, and the
/// batches in flight, kept in input order.
struct MapStage<'s, 'a> {
    cx: &'s StageCtx<'a>,
    steps: &'s [StageStep],
    stats: &'s mut [StepStats],
    rec: &'s mut Recorder,
    chain: Arc<[Arc<dyn Transform>]>,
    ids: Arc<[Arc<str>]>,
    keep: Arc<[bool]>,
    /// The fields each step reads.
    reads: Arc<[Arc<ReadFields>]>,
    /// Where finished jobs report.
    results: Sender<JobResult>,
    /// An I/O-bound step's pool of its own size.
    io_pool: Option<rayon::ThreadPool>,
    /// The GPUs a call takes (the most any step of the chain asks).
    gpus: u32,
    /// The call timeout, for a stage of one step; each such call runs on a thread of its own.
    timeout: Option<Duration>,
    /// Whether an interrupted run's stored output may stand for a batch's calls.
    resumable: bool,
    max_in_flight: usize,
    max_running: usize,
    max_hung: usize,
    /// The attempts of calls abandoned past their timeout that have not returned yet.
    hung: HashSet<u64>,
    order: VecDeque<u64>,
    entries: HashMap<u64, Entry>,
    input_open: bool,
    next_attempt: u64,
    next_idx: u64,
}

/// Runs the stage until its input ends, the run is cancelled, or a step fails for good.
/// When the stage's last step has a cache entry, each output batch is stored as the part
/// numbered by its input's arrival, and inputs whose part an earlier run stored are not
/// computed again. Returns the number of input batches.
pub(super) fn map_loop(
    cx: &StageCtx<'_>,
    steps: &[StageStep],
    chain: Vec<Arc<dyn Transform>>,
    io_concurrency: Option<u32>,
    stats: &mut [StepStats],
    rec: &mut Recorder,
) -> Result<u64, Stopped> {
    let shared = cx.shared;
    // A step with a timeout runs each call on a thread of its own, so that an abandoned
    // call never holds a pool worker; an I/O-bound step gets a pool of its own size.
    let timeout = steps[0].timeout.filter(|_| steps.len() == 1);
    let io_pool = match io_concurrency {
        Some(n) if timeout.is_none() => Some(
            rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1) as usize)
                .thread_name(|i| format!("weave-io-{i}"))
                .build()
                .map_err(|e| {
                    shared.fail(Error::Thread(std::io::Error::other(e.to_string())));
                    Stopped
                })?,
        ),
        _ => None,
    };
    let width = match io_concurrency {
        Some(n) => n.max(1) as usize,
        None => cx.caller.pool.current_num_threads(),
    };
    let max_in_flight = (4 * width).max(4);
    let (results, res_rx) = unbounded::<JobResult>();
    let mut stage = MapStage {
        cx,
        steps,
        chain: chain.into(),
        ids: steps.iter().map(|s| Arc::clone(&s.id)).collect(),
        keep: steps.iter().map(|s| s.exclusions.is_some()).collect(),
        reads: steps.iter().map(|s| Arc::clone(&s.read)).collect(),
        resumable: steps.iter().all(|s| !s.sets_aside()),
        stats,
        rec,
        results,
        io_pool,
        gpus: steps.iter().map(|s| s.gpus).max().unwrap_or(0),
        timeout,
        max_in_flight,
        // Calls run on a pool queue the batches past its width; a call on a thread of its
        // own starts only when fewer than `width` are under way, the others wait their turn.
        max_running: if timeout.is_some() { width } else { max_in_flight },
        max_hung: max_abandoned_calls(width),
        hung: HashSet::new(),
        order: VecDeque::new(),
        entries: HashMap::new(),
        input_open: true,
        next_attempt: 1,
        next_idx: 0,
    };
    loop {
        stage.pass_on()?;
        if shared.cancelled() {
            return Err(Stopped);
        }
        if !stage.input_open && stage.order.is_empty() {
            for (step, st) in steps.iter().zip(stage.stats.iter_mut()) {
                cx.fields_at_end(step, stage.next_idx, st)?;
            }
            return Ok(stage.next_idx);
        }
        let now = Instant::now();
        stage.start_due(now);
        stage.check_timeouts(now)?;
        stage.wait(&res_rx)?;
    }
}

impl MapStage<'_, '_> {
    /// Starts the job of steps `k..` on batch `idx`, on the pool, a thread of its own (a
    /// call with a timeout) or the stage's thread (a GPU call).
    fn submit(&self, idx: u64, seq: u64, attempt: u64, k: usize, batch: Batch) {
        let shared = self.cx.shared;
        let chain = Arc::clone(&self.chain);
        let ids = Arc::clone(&self.ids);
        let keep = Arc::clone(&self.keep);
        let reads = Arc::clone(&self.reads);
        let tx = self.results.clone();
        let seed = shared.seed;
        let cancel = Arc::clone(&shared.cancel);
        let jobs = Arc::clone(&self.cx.caller.watch.jobs);
        jobs.fetch_add(1, Ordering::Relaxed);
        let job = move || {
            let (reports, outcome) = run_job(&chain, &ids, &keep, &reads, k, batch, seq, seed, &cancel);
            let _ = tx.send(JobResult { idx, attempt, reports, outcome });
            jobs.fetch_sub(1, Ordering::Relaxed);
        };
        if self.gpus > 0 {
            // GPU steps take their slots on the stage's thread, one call at a time.
            if let Some(_g) = shared.gpus.acquire(self.gpus, &shared.cancel) {
                job();
            }
        } else if self.timeout.is_some() {
            let name = format!("weave-call-{}", self.steps[0].id);
            if let Err(e) = std::thread::Builder::new().name(name).spawn(job) {
                shared.fail(Error::Thread(e));
            }
        } else if let Some(p) = &self.io_pool {
            p.spawn(job);
        } else {
            self.cx.caller.pool.spawn(job);
        }
    }

    fn running(&self) -> usize {
        self.entries.values().filter(|e| matches!(e.slot, Slot::Running { .. })).count()
    }

    /// Passes on finished batches, in input order. While this waits for room downstream,
    /// retries due meanwhile do not start: they are not work under way.
    fn pass_on(&mut self) -> Result<(), Stopped> {
        let shared = self.cx.shared;
        self.cx.caller.watch.pending.store(0, Ordering::Relaxed);
        while let Some(idx) = self.order.front().copied() {
            if !matches!(self.entries.get(&idx).map(|e| &e.slot), Some(Slot::Done(_))) {
                break;
            }
            self.order.pop_front();
            let Some(Entry { seq, slot: Slot::Done(batch), input, reports, cached, .. }) = self.entries.remove(&idx)
            else {
                break;
            };
            for rep in reports {
                self.account(seq, rep)?;
            }
            let last = self.stats.len() - 1;
            let steps = self.steps;
            if cached {
                let (id, records) = (Arc::clone(&steps[last].id), batch.len() as u64);
                shared.count(&mut self.stats[last], Event::CacheHit { step: id, seq: Some(seq), batches: 1, records });
            } else if self.rec.active() {
                let id = Arc::clone(&steps[last].id);
                shared.count(&mut self.stats[last], Event::CacheMiss { step: id, seq: Some(seq) });
                self.rec.store_at(idx, &[(seq, batch.clone())]);
            }
            self.stats[last].batches_out += 1;
            let Msg { batch: input_batch, permit, .. } = input;
            drop(input_batch);
            shared.send(self.cx.outputs, shared.charged(seq, batch, Some(permit)))?;
        }
        Ok(())
    }

    /// Starts retries whose wait is over and batches waiting for their turn, longest due
    /// first.
    fn start_due(&mut self, now: Instant) {
        let running = self.running();
        let mut due: Vec<(Instant, u64)> = self
            .entries
            .iter()
            .filter_map(|(&idx, e)| match &e.slot {
                Slot::Waiting { at, .. } if *at <= now => Some((*at, idx)),
                _ => None,
            })
            .collect();
        due.sort_unstable();
        for (_, idx) in due.into_iter().take(self.max_running.saturating_sub(running)) {
            let attempt = self.next_attempt;
            let Some(e) = self.entries.get_mut(&idx) else { continue };
            if let Slot::Waiting { k, input, .. } = &e.slot {
                let (k, input) = (*k, input.clone());
                self.next_attempt += 1;
                e.slot = Slot::Running { attempt, deadline: self.timeout.map(|t| now + t), k, input: input.clone() };
                let seq = e.seq;
                self.submit(idx, seq, attempt, k, input);
            }
        }
    }

    /// Timeouts: the call is abandoned and counts as a transient failure.
    fn check_timeouts(&mut self, now: Instant) -> Result<(), Stopped> {
        let (shared, steps) = (self.cx.shared, self.steps);
        for e in self.entries.values_mut() {
            if let Slot::Running { attempt, deadline: Some(d), k, input } = &e.slot
                && *d <= now
            {
                self.hung.insert(*attempt);
                let (k, input, seq) = (*k, input.clone(), e.seq);
                let t = self.timeout.unwrap_or_default();
                let err = StepError::transient(format!("call timed out after {}", weave_core::format_duration(t)));
                match retry_delay(&steps[k].retry, &err, e.retries[k], seq) {
                    Some(delay) => {
                        e.retries[k] += 1;
                        let (id, attempt, error) = (Arc::clone(&steps[k].id), e.retries[k], err.to_string());
                        shared.count(&mut self.stats[k], Event::BatchRetried { step: id, seq, attempt, delay, error });
                        e.slot = Slot::Waiting { at: now + delay, k, input };
                    }
                    None => {
                        shared.fail(Error::Timeout {
                            step: steps[k].id.to_string(),
                            timeout: t,
                            retries: e.retries[k],
                            retryable: true,
                        });
                        return Err(Stopped);
                    }
                }
                if self.hung.len() > self.max_hung {
                    let step = steps[k].id.to_string();
                    shared.fail(Error::Hung { step, hung: self.hung.len(), limit: self.max_hung, timeout: t });
                    return Err(Stopped);
                }
            }
        }
        Ok(())
    }

    /// Waits for a result, an input (when there is room), or the next deadline: a batch
    /// waiting for a call to start wakes the stage only when one can.
    fn wait(&mut self, res_rx: &Receiver<JobResult>) -> Result<(), Stopped> {
        let running = self.running();
        let next_wake = self
            .entries
            .values()
            .filter_map(|e| match &e.slot {
                Slot::Waiting { at, .. } => (running < self.max_running).then_some(*at),
                Slot::Running { deadline, .. } => *deadline,
                Slot::Done(_) => None,
            })
            .min();
        let wait = next_wake.map_or(TICK, |w| w.saturating_duration_since(Instant::now()).min(TICK));
        let waiting = self.entries.values().filter(|e| matches!(e.slot, Slot::Waiting { .. })).count();
        self.cx.caller.watch.pending.store(waiting, Ordering::Relaxed);
        let room = self.input_open && self.entries.len() < self.max_in_flight;
        let never = crossbeam_channel::never();
        let in_rx = if room { &self.cx.inputs[0] } else { &never };
        select! {
            recv(in_rx) -> msg => match msg {
                Ok(msg) => self.admit(msg, running),
                Err(_) => self.input_open = false,
            },
            recv(res_rx) -> r => {
                let Ok(r) = r else { return Ok(()) };
                // An abandoned call that returns at last no longer holds a thread.
                self.hung.remove(&r.attempt);
                self.handle_result(r)?;
            },
            default(wait) => {}
        }
        Ok(())
    }

    /// Takes in a batch: its stored output when an interrupted run left one, else a job
    /// started now or waiting for its turn.
    fn admit(&mut self, msg: Msg, running: usize) {
        self.cx.shared.progress.fetch_add(1, Ordering::Relaxed);
        let (idx, seq) = (self.next_idx, msg.seq);
        self.next_idx += 1;
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        let batch = msg.batch.clone();
        // An interrupted run may have stored this batch's output already; it stands in only
        // when no step of the stage sets records aside, since those records are not stored
        // with it.
        let stored = match self.rec.load(idx).filter(|_| self.resumable) {
            Some(mut out) if out.len() == 1 => out.pop().map(|(_, b)| b),
            _ => None,
        };
        let cached = stored.is_some();
        if cached {
            // The calls that made it were not made again: which fields they saw is not
            // known, so none is said at the end to be in no record.
            self.reads.iter().for_each(|r| r.seen_unknown());
        }
        let start = !cached && running < self.max_running;
        let slot = match stored {
            Some(b) => Slot::Done(b),
            None if start => Slot::Running {
                attempt,
                deadline: self.timeout.map(|t| Instant::now() + t),
                k: 0,
                input: batch.clone(),
            },
            None => Slot::Waiting { at: Instant::now(), k: 0, input: batch.clone() },
        };
        let retries = vec![0; self.steps.len()];
        self.entries.insert(idx, Entry { seq, slot, input: msg, reports: Vec::new(), retries, cached });
        self.order.push_back(idx);
        if start {
            self.submit(idx, seq, attempt, 0, batch);
        }
    }

    /// Accounts a job's reports and moves its batch on: done, waiting for a retry, or failed.
    fn handle_result(&mut self, r: JobResult) -> Result<(), Stopped> {
        let (shared, steps) = (self.cx.shared, self.steps);
        let Some(e) = self.entries.get_mut(&r.idx) else { return Ok(()) };
        let seq = e.seq;
        // A late answer from an abandoned (timed-out) call is ignored.
        if !matches!(e.slot, Slot::Running { attempt, .. } if attempt == r.attempt) {
            return Ok(());
        }
        e.reports.extend(r.reports);
        match r.outcome {
            Outcome::Done(batch) => e.slot = Slot::Done(batch),
            Outcome::Failed { k, input, error, spent } => {
                let stats = &mut self.stats[k];
                shared.settle_parts(&steps[k], stats, *spent)?;
                match retry_delay(&steps[k].retry, &error, e.retries[k], seq) {
                    Some(delay) => {
                        e.retries[k] += 1;
                        let (id, attempt, msg) = (Arc::clone(&steps[k].id), e.retries[k], error.to_string());
                        shared.count(stats, Event::BatchRetried { step: id, seq, attempt, delay, error: msg });
                        e.slot = Slot::Waiting { at: Instant::now() + delay, k, input };
                    }
                    None => {
                        let (id, msg, class) = (Arc::clone(&steps[k].id), error.to_string(), error.class());
                        shared.count(stats, Event::BatchFailed { step: id, seq, error: msg, class });
                        shared.fail(step_error(&steps[k], e.retries[k], error));
                        return Err(Stopped);
                    }
                }
            }
        }
        Ok(())
    }

    /// Accounts one step call of a batch: counters, events, dropped records and the
    /// bad-record policy.
    fn account(&mut self, seq: u64, rep: Report) -> Result<(), Stopped> {
        let shared = self.cx.shared;
        let (step, st) = (&self.steps[rep.k], &mut self.stats[rep.k]);
        st.busy += rep.elapsed;
        st.cpu += rep.cpu;
        // As on a stage's own thread: what the call reported first (a bad record may fail
        // it), then the call's end.
        shared.settle_parts(step, st, rep.call)?;
        st.batches_in += 1;
        if rep.k + 1 < self.steps.len() {
            st.batches_out += 1;
        }
        let (records_in, records_out, elapsed) = (rep.records_in, rep.records_out, rep.elapsed);
        shared.count(st, Event::BatchFinished { step: Arc::clone(&step.id), seq, records_in, records_out, elapsed });
        Ok(())
    }
}

/// Runs steps `k..` of the chain on one batch.
#[allow(clippy::too_many_arguments)]
fn run_job(
    chain: &[Arc<dyn Transform>],
    ids: &[Arc<str>],
    keep: &[bool],
    reads: &[Arc<ReadFields>],
    start: usize,
    mut batch: Batch,
    seq: u64,
    seed: u64,
    cancel: &Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<Report>, Outcome) {
    let mut reports = Vec::with_capacity(chain.len() - start);
    for k in start..chain.len() {
        let mut ctx = StepContext::new(Arc::clone(&ids[k]), seed, seq, Arc::clone(cancel))
            .keeping_dropped(keep[k])
            .with_fields_varying(reads[k].vary());
        let t0 = Instant::now();
        let (r, cpu) = crate::cpu::timed(|| {
            catch_unwind(AssertUnwindSafe(|| chain[k].apply(&*reads[k].complete(&batch)?, &mut ctx)))
        });
        let out = match r {
            Ok(Ok(out)) => out,
            Ok(Err(error)) => {
                let spent = Box::new(CallReport::spent(&mut ctx));
                return (reports, Outcome::Failed { k, input: batch, error, spent });
            }
            Err(p) => {
                let error = StepError::internal(format!("panicked: {}", panic_message(&p)));
                return (reports, Outcome::Failed { k, input: batch, error, spent: Box::default() });
            }
        };
        reports.push(Report {
            k,
            records_in: batch.len() as u64,
            records_out: out.len() as u64,
            elapsed: t0.elapsed(),
            cpu,
            call: CallReport::take(&mut ctx),
        });
        batch = out;
    }
    (reports, Outcome::Done(batch))
}
