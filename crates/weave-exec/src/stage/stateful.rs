//! A stateful transform's loop: each batch in order, then `finish` for what the step held
//! back.

use std::time::Instant;

use weave_core::StatefulTransform;

use super::{Made, Single, StageCtx};
use crate::shared::Stopped;

pub(super) fn stateful_loop(
    cx: &StageCtx<'_>,
    mut one: Single<'_>,
    st: &mut dyn StatefulTransform,
) -> Result<(), Stopped> {
    let shared = cx.shared;
    let step = one.step;
    let mut out = Vec::new();
    let mut last_seq = None;
    while let Some(msg) = shared.recv(&cx.inputs[0]) {
        let t0 = Instant::now();
        let ((), mut ctx) = cx.caller.call(step, msg.seq, one.stats, |ctx| {
            out.clear();
            st.process(&msg.batch, ctx, &mut out)
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
    let t0 = Instant::now();
    let ((), mut ctx) = cx.caller.call(step, seq, one.stats, |ctx| {
        out.clear();
        st.finish(ctx, &mut out)
    })?;
    shared.settle(step, one.stats, &mut ctx)?;
    cx.emit_outputs(&mut one, &mut out, Made { seq, records_in: 0, t0, input: None })
}
