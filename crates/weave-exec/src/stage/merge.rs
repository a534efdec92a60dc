//! A merge's loop: its inputs merged by sequence number, so that the output order depends
//! on the data, never on timing.

use std::time::Instant;

use weave_core::Merge;

use super::{Made, Single, StageCtx};
use crate::shared::{Msg, Stopped};

pub(super) fn merge_loop(cx: &StageCtx<'_>, mut one: Single<'_>, m: &mut dyn Merge) -> Result<(), Stopped> {
    let shared = cx.shared;
    let step = one.step;
    let inputs = cx.inputs;
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
                let ((), mut ctx) = cx.caller.call(step, last_seq, one.stats, |ctx| {
                    out.clear();
                    m.input_done(i, ctx, &mut out)
                })?;
                shared.settle(step, one.stats, &mut ctx)?;
                cx.emit_outputs(&mut one, &mut out, Made { seq: last_seq, records_in: 0, t0, input: None })?;
                cx.drain(&mut one, &mut out, last_seq, |ctx, out| m.more(ctx, out))?;
            }
        }
        let Some(i) =
            (0..queues.len()).filter(|&i| !queues[i].is_empty()).min_by_key(|&i| queues[i].front().map(|m| m.seq))
        else {
            break;
        };
        let Some(msg) = queues[i].pop_front() else { break };
        let t0 = Instant::now();
        let ((), mut ctx) = cx.caller.call(step, msg.seq, one.stats, |ctx| {
            out.clear();
            m.process(i, &*step.read.complete(&msg.batch)?, ctx, &mut out)
        })?;
        shared.settle(step, one.stats, &mut ctx)?;
        one.stats.batches_in += 1;
        last_seq = msg.seq;
        let n = msg.batch.len() as u64;
        cx.emit_outputs(&mut one, &mut out, Made { seq: msg.seq, records_in: n, t0, input: Some(msg.permit) })?;
    }
    cx.fields_at_end(step, last_seq, one.stats)?;
    let t0 = Instant::now();
    let ((), mut ctx) = cx.caller.call(step, last_seq, one.stats, |ctx| {
        out.clear();
        m.finish(ctx, &mut out)
    })?;
    shared.settle(step, one.stats, &mut ctx)?;
    cx.emit_outputs(&mut one, &mut out, Made { seq: last_seq, records_in: 0, t0, input: None })?;
    cx.drain(&mut one, &mut out, last_seq, |ctx, out| m.more(ctx, out))
}
