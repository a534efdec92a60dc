//! The memory budget holds under a slow sink.

use std::time::Duration;

use crate::steps::*;
use weave_exec::{ExecOptions, run};

#[test]
fn a_slow_sink_holds_memory_in_flight_within_the_budget() {
    // 250 batches of about 8 MiB each (2 GB in all) through a sink that is slower than
    // the source, with a 64 MiB budget: the channels alone would hold more than that.
    let budget = 64u64 << 20;
    let mut g = gen_(250, 16);
    g.pad = 512 * 1024;
    let written = std::sync::Arc::default();
    // The sink stalls on its first batch, long enough for the source to fill the budget
    // however slow the machine, then drains slowly.
    let out = Drain {
        first: Duration::from_millis(1500),
        delay: Duration::from_millis(2),
        written: std::sync::Arc::clone(&written),
        policy: Default::default(),
        resources: Default::default(),
    };
    let p = builder(2)
        .resources(weave_core::ResourceLimits { max_memory: budget, max_concurrent: Some(2), ..Default::default() })
        .step("gen", src(g))
        .step("pass", tf(map(|b, _| Ok(b.clone()))))
        .step("out", sink(out))
        .build()
        .unwrap();
    let summary = run(p, ExecOptions::default()).unwrap();
    let total = written.load(std::sync::atomic::Ordering::Relaxed);
    assert!(total > 2_000_000_000, "{total} bytes went through");
    assert!(summary.peak_memory <= budget, "peak {} over the budget {budget}", summary.peak_memory);
    assert!(summary.peak_memory > budget / 2, "the budget was used: peak {}", summary.peak_memory);
}
