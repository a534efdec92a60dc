//! `throughput`: records per second through a chain of real column-wise transforms, on
//! one and two threads, against a hand-written loop doing the same work.
//!
//! One million records (`id`, a messy `text` of about 100 characters), pre-built as
//! batches of 8,192 rows (the source hands out clones, which share the columns), go
//! through four stateless transforms, each written on columns as the built-in steps are:
//!
//! 1. **clean**: trim and collapse whitespace ([`trim_collapse_into`]) into a new
//!    [`StrColumn`];
//! 2. **upper**: ASCII letters to upper case into a new column;
//! 3. **length**: a new `len` column, the text's length in characters;
//! 4. **filter**: drops the records whose `id` ends in 9 (10%), with [`Batch::filter`].
//!
//! The executor fuses the four into one pass per batch. A sink counts the records and
//! sums `len` (the checksum). The baseline is one loop over the raw rows in one thread,
//! doing the same four operations per record on one reused `String`. Both must agree on
//! the count and the checksum, and the first batch's records must match field for field.
//! To tell the executor's cost from the transforms', the same four functions also run
//! without it: in a plain loop over the batches, and on two scoped threads that take
//! every other batch. The time spent inside each step (from the run's summary) is printed.
//!
//! Targets: ≥ 0.9× the loop with `max_concurrent = 1`, ≥ 1.7× with `max_concurrent = 2`.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weave_core::{Batch, Column, DataType, Field, PrimitiveColumn, Schema, StepError, StrColumn};
use weave_exec::ExecOptions;
use weave_steps::trim_collapse_into;

use super::layout::{SPACES, WORDS, trim_collapse};
use super::steps::{builder, sink, source, timed_run_with, transform};
use super::{Figure, Report, Rng, Target, median, thousands, time};

/// Records per run.
pub(super) const ROWS: usize = 1_000_000;
/// Rows per batch.
const BATCH: usize = 8_192;
/// Timed runs of each variant, interleaved; the median is reported.
const REPS: usize = 5;
pub(super) const SEED: u64 = 0x7412_0a9e;

/// A raw input row: id, text.
pub(super) type Raw = (i64, String);

/// What the sink (or the loop) saw: records, and the sum of their lengths.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Tally {
    pub(super) records: u64,
    pub(super) len_sum: u64,
}

pub(super) fn run(report: &mut Report) {
    report.progress(format!("generating {} records", thousands(ROWS as u64)));
    let raw = generate(ROWS, SEED);
    let text_bytes: usize = raw.iter().map(|r| r.1.len()).sum();
    let batches = build_batches(&raw);
    verify(&raw[..BATCH.min(raw.len())], &batches[0]);
    let expected = hand_written(&raw);
    report.progress(format!(
        "{} records ({:.1} MB of text) in {} batches, {} kept by the filter; {REPS} interleaved runs of each variant",
        thousands(ROWS as u64),
        text_bytes as f64 / 1e6,
        batches.len(),
        thousands(expected.records),
    ));

    let mut times: [Vec<Duration>; 5] = Default::default();
    let mut busy = [Duration::ZERO; 4];
    for _ in 0..REPS {
        for (k, threads) in [1, 2].into_iter().enumerate() {
            let (elapsed, tally, step_busy) = run_pipeline(&batches, threads);
            assert_eq!(tally, expected, "throughput: the pipeline on {threads} thread(s) disagrees with the loop");
            times[k].push(elapsed);
            if threads == 1 {
                for (b, s) in busy.iter_mut().zip(step_busy) {
                    *b += s / REPS as u32;
                }
            }
        }
        for (k, threads) in [(2, 1), (3, 2)] {
            times[k].push(time(|| {
                let t = without_executor(black_box(&batches), threads);
                assert_eq!(t, expected);
                t
            }));
        }
        times[4].push(time(|| {
            let t = hand_written(black_box(&raw));
            assert_eq!(t, expected);
            t
        }));
    }
    report.progress(format!(
        "time inside each step on 1 thread (mean): clean {:.0} ms, upper {:.0} ms, length {:.0} ms, filter {:.0} ms",
        busy[0].as_secs_f64() * 1e3,
        busy[1].as_secs_f64() * 1e3,
        busy[2].as_secs_f64() * 1e3,
        busy[3].as_secs_f64() * 1e3
    ));
    let per_sec = times.map(|t| ROWS as f64 / median(t).as_secs_f64());
    let base = per_sec[4];
    report.add(
        Figure::new("4 column-wise transforms, max_concurrent = 1: records/s", per_sec[0], "records/s")
            .ratio(per_sec[0] / base)
            .target(Target::RatioAtLeast(0.9)),
    );
    report.add(
        Figure::new("4 column-wise transforms, max_concurrent = 2: records/s", per_sec[1], "records/s")
            .ratio(per_sec[1] / base)
            .target(Target::RatioAtLeast(1.7)),
    );
    report.add(
        Figure::new(
            "the same 4 transforms called in a loop, no executor, 1 thread: records/s",
            per_sec[2],
            "records/s",
        )
        .ratio(per_sec[2] / base),
    );
    report.add(
        Figure::new(
            "the same, no executor, 2 scoped threads taking every other batch: records/s",
            per_sec[3],
            "records/s",
        )
        .ratio(per_sec[3] / base),
    );
    report.add(Figure::new("hand-written loop, 1 thread (baseline): records/s", base, "records/s").ratio(1.0));
}

/// Runs the pipeline on `threads` workers; returns its wall time, what the sink saw, and
/// the time spent inside each of the four transforms.
fn run_pipeline(batches: &[Batch], threads: usize) -> (Duration, Tally, [Duration; 4]) {
    run_pipeline_with(batches, threads, ExecOptions::default())
}

/// [`run_pipeline`] with `options`: the `monitoring` scenario runs the same pipeline with
/// subscribers.
pub(super) fn run_pipeline_with(
    batches: &[Batch],
    threads: usize,
    options: ExecOptions,
) -> (Duration, Tally, [Duration; 4]) {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let (input, mut next) = (batches.to_vec(), 0);
    let seen = Arc::clone(&tally);
    let records_in = Arc::new(AtomicU64::new(0));
    let counted = Arc::clone(&records_in);
    let p = builder("throughput", threads)
        .step(
            "source",
            source("batches", move |_| {
                let b = input.get(next).cloned();
                next += 1;
                if let Some(b) = &b {
                    counted.fetch_add(b.len() as u64, Ordering::Relaxed);
                }
                Ok(b)
            }),
        )
        .step("clean", transform("clean", |b, _| clean(b)))
        .step("upper", transform("upper", |b, _| upper(b)))
        .step("length", transform("length", |b, _| length(b)))
        .step("filter", transform("filter", |b, _| filter(b)))
        .step(
            "tally",
            sink("tally", move |b, _| {
                let Some(Column::Int(len)) = b.column("len") else {
                    return Err(StepError::internal("no int column `len`"));
                };
                let sum: i64 = len.values().iter().sum();
                let mut t = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                t.records += b.len() as u64;
                t.len_sum += sum as u64;
                Ok(())
            }),
        )
        .build()
        .unwrap_or_else(|d| panic!("throughput: the pipeline does not build:\n{d}"));
    let (elapsed, summary) = timed_run_with(p, options);
    let summary = summary.unwrap_or_else(|e| panic!("throughput: the run failed: {e}"));
    assert_eq!(summary.threads, threads);
    assert_eq!(records_in.load(Ordering::Relaxed), ROWS as u64);
    let t = *tally.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let busy = ["clean", "upper", "length", "filter"].map(|id| summary.step(id).map_or(Duration::ZERO, |s| s.busy));
    (elapsed, t, busy)
}

/// The four transforms called in turn on each batch and the sink's tally, on `threads`
/// scoped threads that take every `threads`-th batch: the same work as the pipeline
/// without the executor, to tell its cost from the transforms'.
fn without_executor(batches: &[Batch], threads: usize) -> Tally {
    let work = |first: usize| {
        let mut t = Tally::default();
        for b in batches.iter().skip(first).step_by(threads) {
            let out = [clean, upper, length, filter]
                .iter()
                .try_fold(b.clone(), |b, step| step(&b))
                .unwrap_or_else(|e| panic!("throughput: a transform failed: {e}"));
            let Some(Column::Int(len)) = out.column("len") else { panic!("throughput: no int column `len`") };
            t.records += out.len() as u64;
            t.len_sum += len.values().iter().sum::<i64>() as u64;
        }
        t
    };
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads).map(|first| s.spawn(move || work(first))).collect();
        handles.into_iter().fold(Tally::default(), |acc, h| {
            let t = h.join().unwrap_or_else(|_| panic!("throughput: a thread panicked"));
            Tally { records: acc.records + t.records, len_sum: acc.len_sum + t.len_sum }
        })
    })
}

fn text_column(b: &Batch) -> Result<&StrColumn, StepError> {
    b.column("text").and_then(Column::as_str).ok_or_else(|| StepError::internal("no string column `text`"))
}

fn bad_batch(e: weave_core::Error) -> StepError {
    StepError::internal(e.to_string())
}

/// Step 1: the text trimmed, with each run of whitespace collapsed to one space.
fn clean(b: &Batch) -> Result<Batch, StepError> {
    let text = text_column(b)?;
    let mut out = StrColumn::with_capacity(text.len(), text.data().len());
    for s in text.iter() {
        match s {
            Some(s) => out.push_with(|a| trim_collapse_into(s, a)),
            None => out.push_null(),
        }
    }
    b.with_column("text", Column::Str(out)).map_err(bad_batch)
}

/// Step 2: ASCII letters in upper case, rewritten in place in one copy of the column
/// (the case change keeps every byte where it is).
fn upper(b: &Batch) -> Result<Batch, StepError> {
    let text = text_column(b)?;
    b.with_column("text", Column::Str(text.map_in_place(str::make_ascii_uppercase))).map_err(bad_batch)
}

/// Step 3: a `len` column, the text's length in characters.
fn length(b: &Batch) -> Result<Batch, StepError> {
    let text = text_column(b)?;
    let lens = text.iter().map(|s| s.map_or(0, |s| s.chars().count() as i64)).collect();
    b.with_column("len", Column::Int(PrimitiveColumn::from_values(lens))).map_err(bad_batch)
}

/// Step 4: drops the records whose id ends in 9.
fn filter(b: &Batch) -> Result<Batch, StepError> {
    let Some(Column::Int(ids)) = b.column("id") else {
        return Err(StepError::internal("no int column `id`"));
    };
    let keep: Vec<bool> = ids.values().iter().map(|&id| keep(id)).collect();
    Ok(b.filter(&keep))
}

fn keep(id: i64) -> bool {
    id.rem_euclid(10) != 9
}

/// The baseline: the four operations per record, in one loop, on one reused buffer.
pub(super) fn hand_written(raw: &[Raw]) -> Tally {
    let mut buf = String::with_capacity(512);
    let mut t = Tally::default();
    for (id, text) in raw {
        buf.clear();
        trim_collapse(text, &mut buf);
        buf.make_ascii_uppercase();
        let len = buf.chars().count() as u64;
        if keep(*id) {
            t.records += 1;
            t.len_sum += len;
        }
        black_box(buf.as_str());
    }
    t
}

/// Panics unless the four transforms turn `batch` (built from `raw`) into the records the
/// loop computes, field for field.
fn verify(raw: &[Raw], batch: &Batch) {
    let out = [clean, upper, length, filter]
        .iter()
        .try_fold(batch.clone(), |b, step| step(&b))
        .unwrap_or_else(|e| panic!("throughput: a transform failed: {e}"));
    let want: Vec<(i64, String, i64)> = raw
        .iter()
        .filter(|(id, _)| keep(*id))
        .map(|(id, text)| {
            let mut s = String::new();
            trim_collapse(text, &mut s);
            s.make_ascii_uppercase();
            let n = s.chars().count() as i64;
            (*id, s, n)
        })
        .collect();
    assert_eq!(out.len(), want.len(), "throughput: the filter kept another number of records");
    for (row, (id, text, len)) in out.rows().zip(&want) {
        let got =
            (row.get("id").and_then(|v| v.as_int()), row.get_str("text"), row.get("len").and_then(|v| v.as_int()));
        assert_eq!(got, (Some(*id), Some(text.as_str()), Some(*len)), "throughput: record {} differs", row.index());
    }
}

/// The batches of `raw`, as a loader would build them.
pub(super) fn build_batches(raw: &[Raw]) -> Vec<Batch> {
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int), Field::new("text", DataType::Str)]));
    raw.chunks(BATCH)
        .map(|chunk| {
            let ids = PrimitiveColumn::from_values(chunk.iter().map(|r| r.0).collect());
            let mut text = StrColumn::with_capacity(chunk.len(), chunk.iter().map(|r| r.1.len()).sum());
            for (_, t) in chunk {
                text.push(t);
            }
            Batch::new(Arc::clone(&schema), vec![Arc::new(Column::Int(ids)), Arc::new(Column::Str(text))])
                .unwrap_or_else(|e| panic!("throughput: bad batch: {e}"))
        })
        .collect()
}

/// `n` raw rows: consecutive ids and texts of about 100 characters with messy whitespace.
pub(super) fn generate(n: usize, seed: u64) -> Vec<Raw> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let target = rng.range(80, 120);
            let mut s = String::with_capacity(target + 32);
            if rng.chance(0.3) {
                s.push_str(rng.pick(SPACES));
            }
            while s.len() < target {
                if !s.is_empty() {
                    s.push_str(if rng.chance(0.8) { " " } else { rng.pick(SPACES) });
                }
                s.push_str(rng.pick(WORDS));
            }
            if rng.chance(0.3) {
                s.push_str(rng.pick(SPACES));
            }
            (i as i64, s)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transforms_match_the_loop_on_a_small_input() {
        let raw = generate(3 * BATCH / 2, 5);
        let batches = build_batches(&raw);
        verify(&raw[..BATCH], &batches[0]);
        verify(&raw[BATCH..], &batches[1]);
    }
}
