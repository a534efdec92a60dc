//! `speedup`: two independent branches of one pipeline share the CPU pool.
//!
//! Each branch is a source of pre-built batches → a CPU-heavy stateless transform (a
//! serial hash loop over each record's text, many milliseconds per batch) → a sink that
//! folds the hashes into a checksum. The branches have no step in common, so the executor
//! should keep both workers busy:
//!
//! - **one pipeline, 2 threads**: both branches in one pipeline with `max_concurrent = 2`.
//! - **two pipelines in turn, 1 thread each** (the baseline): each branch alone, with
//!   `max_concurrent = 1`, one after the other: the same work on one worker.
//!
//! The figure is the wall time of the first over the second; ideal is 0.5×, the target is
//! ≤ 0.6×. Both must produce the same checksums, branch by branch.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use weave_core::{Batch, Column, DataType, Field, PipelineBuilder, PrimitiveColumn, Schema, StepError, StrColumn};

use super::steps::{builder, sink, source, timed_run, transform};
use super::{Figure, Report, Rng, Target, median, thousands};

/// Batches per branch.
const BATCHES: usize = 48;
/// Records per batch.
const ROWS: usize = 64;
/// Characters of text per record.
const TEXT: usize = 100;
/// Passes of the hash loop over each record's text: sets the work per batch (about
/// 25 ms on a 3 GHz core, so a branch is about 1.2 s of work).
const ROUNDS: usize = 3_000;
/// Timed runs of each variant, interleaved; the median is reported.
const REPS: usize = 5;
const SEED: u64 = 0x5bee_d0b5;

pub(super) fn run(report: &mut Report) {
    let branches = [generate(SEED), generate(SEED + 1)];
    let one = Instant::now();
    black_box(hash_batch(&branches[0][0]));
    report.progress(format!(
        "2 branches × {BATCHES} batches × {ROWS} records; the transform takes {:.1} ms per batch on one core; {REPS} interleaved runs of each",
        one.elapsed().as_secs_f64() * 1e3
    ));
    let expected = branches.each_ref().map(|b| b.iter().map(|batch| fold(&hash_batch(batch))).fold(0, combine));

    let mut parallel = Vec::with_capacity(REPS);
    let mut sequential = Vec::with_capacity(REPS);
    for _ in 0..REPS {
        let sums = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
        let mut b = builder("speedup", 2);
        for (k, batches) in branches.iter().enumerate() {
            b = branch(b, k, batches, &sums[k]);
        }
        let p = b.build().unwrap_or_else(|d| panic!("speedup: the pipeline does not build:\n{d}"));
        let (elapsed, summary) = timed_run(p);
        let summary = summary.unwrap_or_else(|e| panic!("speedup: the run failed: {e}"));
        assert_eq!(summary.threads, 2);
        check(&sums, &expected, "one pipeline");
        parallel.push(elapsed);

        let sums = [Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0))];
        let mut total = Duration::ZERO;
        for (k, batches) in branches.iter().enumerate() {
            let p = branch(builder("speedup", 1), k, batches, &sums[k])
                .build()
                .unwrap_or_else(|d| panic!("speedup: the pipeline does not build:\n{d}"));
            let (elapsed, summary) = timed_run(p);
            summary.unwrap_or_else(|e| panic!("speedup: the run failed: {e}"));
            total += elapsed;
        }
        check(&sums, &expected, "two pipelines");
        sequential.push(total);
    }
    let (parallel, sequential) = (median(parallel).as_secs_f64(), median(sequential).as_secs_f64());
    let speed = sequential / parallel;
    report.add(
        Figure::new("wall time, one pipeline on 2 threads / two pipelines in turn on 1", parallel / sequential, "×")
            .ratio(speed)
            .target(Target::AtMost(0.6)),
    );
    report.add(Figure::new("2 branches in one pipeline, max_concurrent = 2: wall", parallel * 1e3, "ms").ratio(speed));
    report.add(
        Figure::new("2 pipelines one after the other, max_concurrent = 1 (baseline): wall", sequential * 1e3, "ms")
            .ratio(1.0),
    );
    let records = (2 * BATCHES * ROWS) as f64;
    report.add(Figure::new("2 branches in one pipeline: records/s", records / parallel, "records/s").ratio(speed));
    report.progress(format!("{} records hashed per variant and run", thousands(records as u64)));
}

/// Adds branch `k` (source → hash → sink) to the pipeline; the sink folds the hashes
/// into `sum`.
fn branch(b: PipelineBuilder, k: usize, batches: &[Batch], sum: &Arc<AtomicU64>) -> PipelineBuilder {
    let (batches, sum) = (batches.to_vec(), Arc::clone(sum));
    let mut next = 0;
    b.step(
        format!("source_{k}"),
        source("batches", move |_| {
            let b = batches.get(next).cloned();
            next += 1;
            Ok(b)
        }),
    )
    .step(
        format!("hash_{k}"),
        transform("hash", |batch, _| {
            let hashes = hash_batch(batch);
            batch.with_column("hash", Column::Int(hashes)).map_err(|e| StepError::internal(e.to_string()))
        }),
    )
    .step(
        format!("sink_{k}"),
        sink("fold", move |batch, _| {
            let Some(Column::Int(h)) = batch.column("hash") else {
                return Err(StepError::internal("no hash column"));
            };
            // The executor keeps each branch's batches in order, so the fold is exact.
            let s = sum.load(Ordering::Relaxed);
            sum.store(combine(s, fold(h)), Ordering::Relaxed);
            Ok(())
        }),
    )
}

fn check(sums: &[Arc<AtomicU64>; 2], expected: &[u64; 2], variant: &str) {
    for (k, s) in sums.iter().enumerate() {
        assert_eq!(s.load(Ordering::Relaxed), expected[k], "speedup: {variant}: branch {k} computed other hashes");
    }
}

/// The CPU-heavy work: a serial multiply-xor chain over each record's text, `ROUNDS`
/// times (each step depends on the one before, so it cannot be vectorised away).
fn hash_batch(batch: &Batch) -> PrimitiveColumn<i64> {
    let Some(text) = batch.column("text").and_then(Column::as_str) else {
        panic!("speedup: the batch has no string column `text`");
    };
    let hashes = text
        .iter()
        .map(|s| {
            let bytes = s.unwrap_or("").as_bytes();
            let mut h = 0xcbf2_9ce4_8422_2325u64;
            for _ in 0..ROUNDS {
                for &b in black_box(bytes) {
                    h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
                }
            }
            h as i64
        })
        .collect();
    PrimitiveColumn::from_values(hashes)
}

/// One batch's hashes as one number.
fn fold(h: &PrimitiveColumn<i64>) -> u64 {
    h.values().iter().fold(0u64, |acc, &x| acc.rotate_left(5) ^ x as u64)
}

/// Batch checksums in order: sensitive to their order too.
fn combine(acc: u64, x: u64) -> u64 {
    (acc.rotate_left(17) ^ x).wrapping_mul(0x9e37_79b9_7f4a_7c15)
}

/// A branch's input: `BATCHES` batches of `ROWS` records (`id`, `text`).
fn generate(seed: u64) -> Vec<Batch> {
    let mut rng = Rng::new(seed);
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int), Field::new("text", DataType::Str)]));
    (0..BATCHES)
        .map(|b| {
            let mut text = StrColumn::with_capacity(ROWS, ROWS * TEXT);
            let mut s = String::with_capacity(TEXT);
            for _ in 0..ROWS {
                s.clear();
                s.extend((0..TEXT).map(|_| char::from(b'a' + rng.below(26) as u8)));
                text.push(&s);
            }
            let ids = PrimitiveColumn::from_values((0..ROWS).map(|r| (b * ROWS + r) as i64).collect());
            Batch::new(Arc::clone(&schema), vec![Arc::new(Column::Int(ids)), Arc::new(Column::Str(text))])
                .unwrap_or_else(|e| panic!("speedup: bad batch: {e}"))
        })
        .collect()
}
