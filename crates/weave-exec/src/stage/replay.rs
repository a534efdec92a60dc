//! A replayed step's loop: its stored output sent on from the cache, in place of running it.

use std::sync::Arc;

use weave_core::{Event, StepCache};

use super::StageCtx;
use crate::error::Error;
use crate::shared::{Msg, Stopped};
use crate::stages::StageStep;
use crate::summary::StepStats;

/// Sends a step's stored output on with the sequence numbers it first went out with.
pub(super) fn replay_loop(
    cx: &StageCtx<'_>,
    step: &StageStep,
    cache: &dyn StepCache,
    stats: &mut StepStats,
) -> Result<(), Stopped> {
    let shared = cx.shared;
    let mut stopped = false;
    let mut records = 0u64;
    let r = cache.replay(&mut |seq, batch| {
        let bytes = batch.memory_size() as u64;
        let Some((permit, _)) = shared.budget.acquire(bytes, &shared.cancel) else {
            stopped = true;
            return false;
        };
        stats.batches_out += 1;
        records += batch.len() as u64;
        if shared.send(cx.outputs, Msg { seq, batch, permit: Arc::new(permit) }).is_err() {
            stopped = true;
            return false;
        }
        true
    });
    if let Err(message) = r {
        shared.fail(Error::Cache { step: step.id.to_string(), message });
        return Err(Stopped);
    }
    if stopped || shared.cancelled() {
        return Err(Stopped);
    }
    let (id, batches) = (Arc::clone(&step.id), stats.batches_out);
    shared.count(stats, Event::CacheHit { step: id, seq: None, batches, records });
    Ok(())
}
