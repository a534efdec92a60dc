//! `overhead`: what the executor itself costs per batch and per step, measured with steps
//! that cost nothing.
//!
//! A source emits one-record batches (clones of one batch, which share its columns), ten
//! no-op steps pass each on (`batch.clone()`, an `Arc` copy per column) and a sink counts
//! them:
//!
//! - **10 stateless**: the executor fuses the chain into one stage, so each batch is one
//!   job on the pool (ten calls) plus two channel hops (source → chain → sink). This is
//!   what a user pays for a chain of small steps; the target is ≤ 2 µs per batch per step.
//! - **10 stateful**: stateful transforms are not fused, so each step is a stage on a thread
//!   of its own and every step adds a channel hop: the cost of a hop, for comparison.
//! - **hand-written loop** (the baseline): the same ten closures called in turn on each
//!   batch, in one thread. It is far faster, as it has no threads, channels, jobs or
//!   accounting; the ratio shows how much of the executor's cost is per batch rather
//!   than per record, which is why batches should be thousands of records, not one.
//!
//! The figure is wall time / (batches × 10 steps).

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use weave_core::{Batch, Pipeline, Record};
use weave_exec::ExecOptions;

use super::steps::{builder, sink, source, stateful, timed_run_with, transform};
use super::{Figure, Report, Target, median, thousands, time};

/// Batches per run of the fused chain and of the baseline.
const BATCHES: u64 = 1_000_000;
/// Batches per run of the unfused chain: each costs eleven channel hops, so fewer keep the
/// scenario within a minute; the figure is per batch and step, so it stays comparable.
const STATEFUL_BATCHES: u64 = 200_000;
/// No-op steps between the source and the sink.
pub(super) const STEPS: u64 = 10;
/// CPU workers for the stateless chain (the stateful stages have threads of their own).
pub(super) const THREADS: usize = 2;
/// Timed runs of each variant, interleaved; the median is reported.
const REPS: usize = 3;

/// What a no-op step does: hands the batch on unchanged.
fn noop(batch: &Batch) -> Batch {
    batch.clone()
}

/// The one-record batch the source hands out clones of.
pub(super) fn template() -> Batch {
    Batch::from_records(&[Record::new().with("n", 1i64)])
}

pub(super) fn run(report: &mut Report) {
    let template = template();
    report.progress(format!(
        "{} one-record batches through {STEPS} no-op steps ({} through the unfused chain); {REPS} interleaved runs of each",
        thousands(BATCHES),
        thousands(STATEFUL_BATCHES)
    ));
    let mut fused = Vec::with_capacity(REPS);
    let mut unfused = Vec::with_capacity(REPS);
    let mut baseline = Vec::with_capacity(REPS);
    for _ in 0..REPS {
        fused.push(time_run(&template, false, BATCHES));
        unfused.push(time_run(&template, true, STATEFUL_BATCHES));
        baseline.push(time(|| hand_written(&template, BATCHES)));
    }
    let per_step = |d: Duration, batches: u64| d.as_secs_f64() * 1e6 / (batches * STEPS) as f64;
    let (fused, unfused, baseline) = (
        per_step(median(fused), BATCHES),
        per_step(median(unfused), STATEFUL_BATCHES),
        per_step(median(baseline), BATCHES),
    );
    report.add(
        Figure::new(format!("{STEPS} stateless no-ops (fused), {THREADS} threads: per batch per step"), fused, "µs")
            .ratio(baseline / fused)
            .target(Target::AtMost(2.0)),
    );
    report.add(
        Figure::new(
            format!("{STEPS} stateful no-ops (a stage and a channel hop each): per batch per step"),
            unfused,
            "µs",
        )
        .ratio(baseline / unfused),
    );
    report.add(
        Figure::new(
            format!("{STEPS} no-op closures in a hand-written loop (baseline): per batch per step"),
            baseline,
            "µs",
        )
        .ratio(1.0),
    );
}

/// Runs `batches` one-record batches through the chain (fused stateless, or stateful) and
/// returns the wall time, after checking that the sink saw every batch.
fn time_run(template: &Batch, stateful_steps: bool, batches: u64) -> Duration {
    time_run_with(template, stateful_steps, batches, ExecOptions::default())
}

/// [`time_run`] with `options`: the `monitoring` scenario runs the same chain with
/// subscribers.
pub(super) fn time_run_with(template: &Batch, stateful_steps: bool, batches: u64, options: ExecOptions) -> Duration {
    let seen = Arc::new(AtomicU64::new(0));
    let pipeline = pipeline(template, stateful_steps, batches, &seen);
    let (elapsed, summary) = timed_run_with(pipeline, options);
    let summary = summary.unwrap_or_else(|e| panic!("overhead: the run failed: {e}"));
    assert_eq!(seen.load(Ordering::Relaxed), batches, "overhead: the sink did not see every batch");
    assert_eq!(summary.step("count").map(|s| s.batches_in), Some(batches), "overhead: the summary disagrees");
    elapsed
}

/// Source → ten no-ops → counting sink.
fn pipeline(template: &Batch, stateful_steps: bool, batches: u64, seen: &Arc<AtomicU64>) -> Pipeline {
    let (template, mut left) = (template.clone(), batches);
    let mut b = builder("overhead", THREADS).step(
        "source",
        source("repeat", move |_| {
            if left == 0 {
                return Ok(None);
            }
            left -= 1;
            Ok(Some(template.clone()))
        }),
    );
    for k in 0..STEPS {
        let step = if stateful_steps {
            stateful(
                "noop",
                |batch, _, out| {
                    out.push(noop(batch));
                    Ok(())
                },
                |_, _| Ok(()),
            )
        } else {
            transform("noop", |batch, _| Ok(noop(batch)))
        };
        b = b.step(format!("noop_{k}"), step);
    }
    let seen = Arc::clone(seen);
    b.step(
        "count",
        sink("count", move |batch, _| {
            seen.fetch_add(u64::from(!batch.is_empty()), Ordering::Relaxed);
            Ok(())
        }),
    )
    .build()
    .unwrap_or_else(|d| panic!("overhead: the pipeline does not build:\n{d}"))
}

/// The baseline: the same source, no-ops and count, as one loop in one thread.
fn hand_written(template: &Batch, batches: u64) -> u64 {
    // Called through `dyn`, as the executor calls its steps.
    let steps: Vec<&dyn Fn(&Batch) -> Batch> = (0..STEPS).map(|_| &noop as &dyn Fn(&Batch) -> Batch).collect();
    let mut seen = 0;
    for _ in 0..batches {
        let mut batch = black_box(template).clone();
        for f in &steps {
            batch = f(black_box(&batch));
        }
        seen += u64::from(!batch.is_empty());
    }
    assert_eq!(seen, batches);
    seen
}
