//! A sink's loop: each batch written; committing is the coordinator's, once every step
//! has succeeded.

use std::sync::Arc;
use std::time::Instant;

use weave_core::{Event, Sink};

use super::StageCtx;
use crate::shared::Stopped;
use crate::stages::StageStep;
use crate::summary::StepStats;

pub(super) fn sink_loop(
    cx: &StageCtx<'_>,
    step: &StageStep,
    k: &mut dyn Sink,
    stats: &mut StepStats,
) -> Result<(), Stopped> {
    let shared = cx.shared;
    while let Some(msg) = shared.recv(&cx.inputs[0]) {
        let t0 = Instant::now();
        let records = msg.batch.len() as u64;
        let ((), mut ctx) =
            cx.caller.call(step, msg.seq, stats, |ctx| k.write(&*step.read.complete(&msg.batch)?, ctx))?;
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
    if shared.cancelled() {
        return Err(Stopped);
    }
    cx.fields_at_end(step, 0, stats)
}
