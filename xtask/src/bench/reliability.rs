//! `reliability`: how often a run gets through when every step call may fail
//! transiently, with the default retry policy.
//!
//! A thousand runs of a ten-step pipeline: a source of 10 batches → three stateless
//! transforms (fused) → one stateful transform → four stateless transforms (fused) → a
//! sink. Every call of every step (`next_batch`, `apply`, `process`, `finish`, `write`)
//! fails with `StepError::transient` with probability 5%, decided by a generator seeded
//! with (run, step, sequence number, attempt): the same calls fail on every machine and
//! whatever the thread timing. A failure is injected before the step does anything, so a
//! source that failed has not advanced and a sink has not written.
//!
//! The policy is `RetryPolicy::default()` (3 retries, exponential backoff, jitter) with
//! only its delays shortened to 1 µs, so that a thousand runs take seconds: the delay does
//! not change the odds. A call then fails for good with probability 0.05⁴, and a run of
//! `CALLS` calls (102) succeeds with probability (1 − 0.05⁴)^CALLS, about 99.94%: that is
//! the baseline the measured share is compared with. The target is ≥ 99.9% of runs; with
//! 3 retries it holds for runs of up to about 160 calls, so the pipeline here carries 10
//! batches (20 would make 202 calls and expect 99.87%).
//!
//! Each successful run must deliver every record exactly once, and its summary must count
//! exactly as many retries as failures were injected. A thousand runs expect less than
//! one failed run, so 20,000 further runs estimate the share more tightly.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use weave_core::{Batch, Column, PipelineBuilder, Record, RetryPolicy, StepContext, StepError};
use weave_exec::Error;

use super::steps::{builder, sink, source, stateful, timed_run, transform};
use super::{Figure, Report, Rng, Target, thousands};

/// Runs of the pipeline for the figure with the target.
const RUNS: u64 = 1_000;
/// Further runs (other seeds) for a tighter estimate: a thousand runs expect less than one
/// failure, too few to tell 99.94% from 99.9%.
const CHECK_RUNS: u64 = 20_000;
/// Batches from the source in each run.
const BATCHES: u64 = 10;
/// Records per batch.
const ROWS: u64 = 4;
/// The chance that a step call fails.
const P_FAIL: f64 = 0.05;
/// Step calls in a run that succeeds, not counting retries: the source's batches and its
/// end, 8 transforms × the batches and the stateful one's `finish`, and a write per batch.
const CALLS: u64 = (BATCHES + 1) + 8 * BATCHES + 1 + BATCHES;
/// The transforms after the source, in order; `true` for the stateful one.
const TRANSFORMS: [bool; 8] = [false, false, false, true, false, false, false, false];
const SEED: u64 = 0x0e1a_b1e5;

pub(super) fn run(report: &mut Report) {
    let policy = RetryPolicy {
        retry_delay: Duration::from_micros(1),
        max_delay: Duration::from_micros(1),
        ..RetryPolicy::default()
    };
    let expected = (1.0 - P_FAIL.powi(policy.max_retries as i32 + 1)).powi(CALLS as i32);
    report.progress(format!(
        "{} runs of 10 steps, {BATCHES} batches each; every step call fails transiently with p = {P_FAIL}; \
         retry policy: the default ({} retries, exponential, jitter) with only its delays shortened to 1 µs \
         (the delay does not change the odds)",
        thousands(RUNS),
        policy.max_retries
    ));

    let main = sample(0, RUNS, policy);
    for f in &main.other_failures {
        report.progress(format!("unexpected failure: {f}"));
    }
    report.progress(format!(
        "{} failures injected, {} retries counted; {:.2} ms per run",
        thousands(main.injected),
        thousands(main.retries),
        main.elapsed.as_secs_f64() * 1e3 / RUNS as f64
    ));
    report.progress(format!("{} more runs, for a tighter estimate of the share", thousands(CHECK_RUNS)));
    let check = sample(RUNS, CHECK_RUNS, policy);
    for f in &check.other_failures {
        report.progress(format!("unexpected failure: {f}"));
    }

    let share = main.share();
    report.add(
        Figure::new(
            format!("runs that succeeded ({} runs, p = {P_FAIL} per call, 3 retries)", thousands(RUNS)),
            share,
            "%",
        )
        .ratio(share / (100.0 * expected))
        .target(Target::AtLeast(99.9)),
    );
    report.add(
        Figure::new(
            format!("runs that succeeded, {} further runs (a tighter estimate)", thousands(CHECK_RUNS)),
            check.share(),
            "%",
        )
        .ratio(check.share() / (100.0 * expected)),
    );
    report.add(
        Figure::new(
            format!("runs expected to succeed by the odds, (1 - 0.05^4)^{CALLS} (baseline)"),
            100.0 * expected,
            "%",
        )
        .ratio(1.0),
    );
    report.add(Figure::new(format!("retries, total over {} runs", thousands(RUNS)), main.retries as f64, "retries"));
    report.add(Figure::new("retries per run, mean", main.retries as f64 / RUNS as f64, "retries"));
    report.add(
        Figure::new(
            "successful runs whose retry count differs from the failures injected",
            (main.miscounted + check.miscounted) as f64,
            "runs",
        )
        .target(Target::AtMost(0.0)),
    );
    report.add(
        Figure::new(
            "runs that failed other than by running out of retries",
            (main.other_failures.len() + check.other_failures.len()) as f64,
            "runs",
        )
        .target(Target::AtMost(0.0)),
    );
}

/// What a series of runs did.
#[derive(Debug, Default)]
struct Sample {
    runs: u64,
    succeeded: u64,
    /// Retries counted by the executor, over all runs.
    retries: u64,
    /// Failures injected by the steps, over all runs.
    injected: u64,
    /// Successful runs whose summary counts other retries than failures were injected.
    miscounted: u64,
    /// Runs that failed for another reason than a transient error past its last retry.
    other_failures: Vec<String>,
    elapsed: Duration,
}

impl Sample {
    /// The share of runs that succeeded, in percent.
    fn share(&self) -> f64 {
        100.0 * self.succeeded as f64 / self.runs as f64
    }
}

/// Runs number `first..first + runs`, checking each one's output and counts.
fn sample(first: u64, runs: u64, policy: RetryPolicy) -> Sample {
    let start = Instant::now();
    let mut s = Sample { runs, ..Sample::default() };
    for r in first..first + runs {
        let faults = Arc::new(AtomicU64::new(0));
        let delivered = Arc::new(Delivered::default());
        let (_, result) = timed_run(pipeline(r, policy, &faults, &delivered));
        let (summary, ok) = match result {
            Ok(summary) => (summary, true),
            Err(e) => {
                // Giving up after the last retry of a transient error is the one failure expected.
                let expected_failure = matches!(
                    &e.error,
                    Error::Step { retries, source: StepError::Transient { .. }, .. } if *retries == policy.max_retries
                );
                if !expected_failure {
                    s.other_failures.push(format!("run {r}: {}", e.error));
                }
                (e.summary, false)
            }
        };
        let retries: u64 = summary.steps.iter().map(|st| st.retries).sum();
        let injected = faults.load(Ordering::Relaxed);
        s.retries += retries;
        s.injected += injected;
        if ok {
            s.succeeded += 1;
            assert_eq!(
                (delivered.records.load(Ordering::Relaxed), delivered.id_sum.load(Ordering::Relaxed)),
                (BATCHES * ROWS, (BATCHES * ROWS) * (BATCHES * ROWS - 1) / 2),
                "reliability: run {r} succeeded but did not deliver every record exactly once"
            );
            s.miscounted += u64::from(retries != injected);
        }
    }
    s.elapsed = start.elapsed();
    s
}

/// What the sink received.
#[derive(Debug, Default)]
struct Delivered {
    records: AtomicU64,
    id_sum: AtomicU64,
}

/// Decides, per call, whether a step fails: seeded by (run, step, sequence, attempt), with
/// the attempt counted per sequence number by the step itself.
struct Faults {
    run: u64,
    step: u64,
    /// Calls so far per sequence number (the stateful step's `finish` has one past the last).
    attempts: Vec<AtomicU32>,
    injected: Arc<AtomicU64>,
}

impl Faults {
    fn new(run: u64, step: u64, injected: &Arc<AtomicU64>) -> Self {
        let attempts = (0..=BATCHES).map(|_| AtomicU32::new(0)).collect();
        Faults { run, step, attempts, injected: Arc::clone(injected) }
    }

    /// `Err` for the calls chosen to fail.
    fn call(&self, ctx: &StepContext) -> Result<(), StepError> {
        let seq = ctx.sequence();
        let attempt = self.attempts[seq as usize].fetch_add(1, Ordering::Relaxed);
        let seed = mix(mix(mix(mix(SEED ^ self.run) ^ self.step) ^ seq) ^ u64::from(attempt));
        if Rng::new(seed).chance(P_FAIL) {
            self.injected.fetch_add(1, Ordering::Relaxed);
            return Err(StepError::transient(format!("injected failure, call {attempt} of batch {seq}")));
        }
        Ok(())
    }
}

/// splitmix64's finaliser: spreads every input bit over the output, so that neighbouring
/// (run, step, seq, attempt) give unrelated seeds.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Run `run`'s pipeline: every step fails some of its calls.
fn pipeline(
    run: u64,
    policy: RetryPolicy,
    injected: &Arc<AtomicU64>,
    delivered: &Arc<Delivered>,
) -> weave_core::Pipeline {
    let faults = |step: u64| Faults::new(run, step, injected);
    let src = faults(0);
    let mut next = 0u64;
    let mut b: PipelineBuilder = builder("reliability", 2).retry(policy).step(
        "source",
        source("flaky_source", move |ctx| {
            // The failure comes first, so that a retried call makes the same batch.
            src.call(ctx)?;
            if next == BATCHES {
                return Ok(None);
            }
            let records: Vec<Record> =
                (next * ROWS..(next + 1) * ROWS).map(|i| Record::new().with("i", i as i64)).collect();
            next += 1;
            Ok(Some(Batch::from_records(&records)))
        }),
    );
    for (k, &is_stateful) in TRANSFORMS.iter().enumerate() {
        let f = faults(k as u64 + 1);
        let step = if is_stateful {
            let f = Arc::new(f);
            let g = Arc::clone(&f);
            stateful(
                "flaky_stateful",
                move |batch, ctx, out| {
                    f.call(ctx)?;
                    out.push(batch.clone());
                    Ok(())
                },
                move |ctx, _| g.call(ctx),
            )
        } else {
            transform("flaky_map", move |batch, ctx| {
                f.call(ctx)?;
                Ok(batch.clone())
            })
        };
        b = b.step(format!("t{}", k + 1), step);
    }
    let (f, delivered) = (faults(9), Arc::clone(delivered));
    b.step(
        "sink",
        sink("flaky_sink", move |batch, ctx| {
            f.call(ctx)?;
            let Some(Column::Int(ids)) = batch.column("i") else {
                return Err(StepError::internal("no int column `i`"));
            };
            delivered.records.fetch_add(batch.len() as u64, Ordering::Relaxed);
            delivered.id_sum.fetch_add(ids.values().iter().sum::<i64>() as u64, Ordering::Relaxed);
            Ok(())
        }),
    )
    .build()
    .unwrap_or_else(|d| panic!("reliability: the pipeline does not build:\n{d}"))
}
