//! A source's loop: batches pulled from the step, numbered, charged to the memory budget
//! (waiting for room) and sent on.

use std::sync::Arc;
use std::time::{Duration, Instant};

use weave_core::{Event, Source};

use super::{Single, StageCtx};
use crate::shared::{Msg, Stopped};

pub(super) fn source_loop(cx: &StageCtx<'_>, one: Single<'_>, src: &mut dyn Source) -> Result<(), Stopped> {
    let Single { step, stats, rec } = one;
    let shared = cx.shared;
    let mut seq = 0u64;
    loop {
        let t0 = Instant::now();
        let (batch, mut ctx) = cx.caller.call(step, seq, stats, |ctx| src.next_batch(ctx))?;
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
        shared.send(cx.outputs, Msg { seq, batch, permit: Arc::new(permit) })?;
        seq += 1;
    }
}
