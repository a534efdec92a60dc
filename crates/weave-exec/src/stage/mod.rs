//! A stage's thread: the context its loop runs in, the dispatch to the loop of its kind
//! (one file each), and what every loop does with a call's output.

mod map;
mod merge;
mod replay;
mod sink;
mod source;
mod stateful;

use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender};
use weave_core::{Batch, Event, Sink};

pub use map::max_abandoned_calls;

use crate::budget::Permit;
use crate::caller::Caller;
use crate::recorder::Recorder;
use crate::shared::{Msg, Shared, Stopped};
use crate::stages::{Stage, StageStep, Work};
use crate::summary::StepStats;

/// What a stage's loop works with, besides its steps: the run's shared state, the caller
/// of its steps, and its edges.
pub(crate) struct StageCtx<'a> {
    pub(crate) shared: &'a Shared,
    /// Calls the stage's steps on its thread (the map stage's go to a pool).
    pub(crate) caller: Caller<'a>,
    /// The stage's inputs, in the first step's input order.
    pub(crate) inputs: &'a [Receiver<Msg>],
    /// The consumers of the stage's output.
    pub(crate) outputs: &'a [Sender<Msg>],
}

/// A step that runs alone in its stage (any stage but a map's): its settings, its counts,
/// and where its output is stored.
pub(crate) struct Single<'a> {
    pub(crate) step: &'a StageStep,
    pub(crate) stats: &'a mut StepStats,
    pub(crate) rec: &'a mut Recorder,
}

/// The call that made a step's output: its sequence number, the records it took in, when
/// it started, and its input's share of the memory budget (handed on to the output).
pub(crate) struct Made {
    pub(crate) seq: u64,
    pub(crate) records_in: u64,
    pub(crate) t0: Instant,
    pub(crate) input: Option<Arc<Permit>>,
}

/// What a stage thread hands back.
pub(crate) struct StageResult {
    pub(crate) stats: Vec<(usize, StepStats)>,
    pub(crate) sink: Option<(usize, Box<dyn Sink>)>,
}

/// Runs a stage to its end on the current thread.
pub(crate) fn run_stage(stage: Stage, shared: &Shared, pool: &Arc<rayon::ThreadPool>, start: Instant) -> StageResult {
    let Stage { steps, work, inputs, outputs, watch, cache } = stage;
    for s in &steps {
        let id = Arc::clone(&s.id);
        shared.emit(|| Event::StepStarted { step: id });
    }
    let began = Instant::now();
    let mut stats: Vec<StepStats> = steps.iter().map(|_| StepStats::default()).collect();
    let mut sink = None;
    let caller = Caller { shared, watch: &watch, start, pool };
    let cx = StageCtx { shared, caller, inputs: &inputs, outputs: &outputs };
    let single = |stats, rec| Single { step: &steps[0], stats, rec };
    match work {
        Work::Replay(c) => {
            let _ = replay::replay_loop(&cx, &steps[0], &*c, &mut stats[0]);
        }
        Work::Source(mut src) => {
            let mut rec = Recorder::new(&steps[0], cache);
            if source::source_loop(&cx, single(&mut stats[0], &mut rec), &mut *src).is_ok() {
                rec.finish(None);
            }
        }
        Work::Map(chain, io) => {
            let mut rec = Recorder::new(&steps[steps.len() - 1], cache);
            if let Ok(parts) = map::map_loop(&cx, &steps, chain, io, &mut stats, &mut rec) {
                rec.finish(Some(parts));
            }
        }
        Work::Stateful(mut st) => {
            let mut rec = Recorder::new(&steps[0], cache);
            if stateful::stateful_loop(&cx, single(&mut stats[0], &mut rec), &mut *st).is_ok() {
                rec.finish(None);
            }
        }
        Work::Merge(mut m) => {
            let mut rec = Recorder::new(&steps[0], cache);
            if merge::merge_loop(&cx, single(&mut stats[0], &mut rec), &mut *m).is_ok() {
                rec.finish(None);
            }
        }
        Work::Sink(mut k) => {
            let ok = sink::sink_loop(&cx, &steps[0], &mut *k, &mut stats[0]);
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

impl StageCtx<'_> {
    /// Lets out what a step holds back (`Merge::more`, `StatefulTransform::more`), a call
    /// at a time, each call's output passed on (under the memory budget) before the next
    /// is asked for. What a call reports (records dropped, figures) is settled whatever it
    /// lets out; a call that lets out nothing is not counted as one. Asked after a merge's
    /// input ends and after `finish` only, not after every batch: the calls run on the
    /// pool, and a round trip there per batch would be paid for nothing.
    pub(crate) fn drain(
        &self,
        one: &mut Single<'_>,
        out: &mut Vec<Batch>,
        seq: u64,
        mut more: impl FnMut(&mut weave_core::StepContext, &mut Vec<Batch>) -> Result<bool, weave_core::StepError> + Send,
    ) -> Result<(), Stopped> {
        loop {
            let t0 = Instant::now();
            let (again, mut ctx) = self.caller.call(one.step, seq, one.stats, |ctx| {
                out.clear();
                more(ctx, out)
            })?;
            self.shared.settle(one.step, one.stats, &mut ctx)?;
            if !out.is_empty() {
                self.emit_outputs(one, out, Made { seq, records_in: 0, t0, input: None })?;
            }
            if !again {
                return Ok(());
            }
        }
    }

    /// At the end of `step`'s input: fails it for a field it reads that no batch of its
    /// input had, when the input's fields vary ([`ReadFields::at_end`](crate::fields::ReadFields)).
    pub(crate) fn fields_at_end(&self, step: &StageStep, seq: u64, stats: &mut StepStats) -> Result<(), Stopped> {
        if step.read.is_empty() {
            return Ok(());
        }
        let batches = stats.batches_in;
        self.caller.call(step, seq, stats, |_| step.read.at_end(&step.id, batches)).map(|_| ())
    }

    /// Counts a call of `one`'s step that made `out`, stores `out` in the cache entry, and
    /// sends it on.
    pub(crate) fn emit_outputs(&self, one: &mut Single<'_>, out: &mut Vec<Batch>, made: Made) -> Result<(), Stopped> {
        let Made { seq, records_in, t0, mut input } = made;
        let shared = self.shared;
        let records_out: u64 = out.iter().map(|b| b.len() as u64).sum();
        if one.rec.active() && !out.is_empty() {
            let part: Vec<(u64, Batch)> = out.iter().map(|b| (seq, b.clone())).collect();
            one.rec.store(&part);
        }
        let event = Event::BatchFinished {
            step: Arc::clone(&one.step.id),
            seq,
            records_in,
            records_out,
            elapsed: t0.elapsed(),
        };
        shared.count(one.stats, event);
        for b in out.drain(..) {
            one.stats.batches_out += 1;
            shared.send(self.outputs, shared.charged(seq, b, input.take()))?;
        }
        Ok(())
    }
}
