//! `datasetops`: the dataset operations against hand-written loops doing the same work.
//!
//! - **split + filter**: one million records (`id`, a text of about 100 characters, the
//!   `throughput` scenario's data) through the built-in `split` (80 / 10 / 10, keyed by the
//!   whole record) and `filter` (`split == "train"`), fused by the executor, on one and two
//!   threads. The baseline is one loop over the raw rows that hashes each record the way
//!   `split` does (blake3 of the seed, the salt, and each field's name and value in name
//!   order) and counts the train records. Both must agree on the count and the sum of the
//!   kept ids.
//! - **generate**: one million records from three templates with four slots, by the
//!   built-in `generate` through the executor into a counting sink, against a loop that
//!   draws the same numbers (splitmix64 per position) and writes each record's text and
//!   slot values into reused `String`s. Both must agree on the count and the total text
//!   length.
//! - **compare** and **sample** (no baseline): records per second of `compare` over
//!   200,000 real and 200,000 synthetic texts, and of `sample` with `n = 10,000` over one
//!   million records.
//!
//! Targets: ≥ 0.8× the loop for split + filter on one thread, and for generate.

use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use weave_core::{Batch, Column, ConfTable, Params, SourceFile, Step, StepError, rng};

use super::steps::{builder, sink, source, timed_run};
use super::throughput::{ROWS, Raw, SEED, build_batches, generate};
use super::{Figure, Report, Target, median, thousands, time};

/// Timed runs of each variant, interleaved; the median is reported.
const REPS: usize = 5;

/// The pipeline seed of the runs.
const PIPELINE_SEED: u64 = 42;

/// `weave-steps`' salts (`dataset::salt`), which the loops need to draw the same numbers;
/// the agreement checks fail if they drift apart.
const SALT_SPLIT: u64 = 0x7370_6c69_7400_0001;
const SALT_GENERATE: u64 = 0x6765_6e65_7200_0005;

/// A built-in step of `kind` made from its keys, as a pipeline file would make it.
fn built(kind: &str, keys: &str) -> Step {
    let registry = weave_steps::registry();
    let k = registry.get(kind).unwrap_or_else(|| panic!("datasetops: no kind {kind}"));
    let table = ConfTable::parse(keys).unwrap_or_else(|e| panic!("datasetops: bad keys for {kind}: {e:?}"));
    let p = Params::new(table, SourceFile::new("bench.toml", keys), "step", Some(kind.to_owned()));
    let step = (k.build)(&p);
    let diags = p.finish(&k.keys);
    assert!(!diags.has_errors(), "datasetops: {kind} does not build:\n{diags}");
    step.unwrap_or_else(|| panic!("datasetops: {kind} did not build"))
}

/// What a sink saw: records, and a checksum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Tally {
    records: u64,
    sum: u64,
}

pub(super) fn run(report: &mut Report) {
    split_filter(report);
    generate_records(report);
    compare_and_sample(report);
}

fn split_filter(report: &mut Report) {
    report.progress(format!("split + filter: generating {} records", thousands(ROWS as u64)));
    let raw = generate(ROWS, SEED);
    let batches = build_batches(&raw);
    let expected = split_loop(&raw);
    report.progress(format!(
        "split + filter: {} of {} records go to train",
        thousands(expected.records),
        thousands(ROWS as u64)
    ));
    let mut times: [Vec<Duration>; 3] = Default::default();
    for _ in 0..REPS {
        for (k, threads) in [1, 2].into_iter().enumerate() {
            let (elapsed, tally) = split_pipeline(&batches, threads);
            assert_eq!(tally, expected, "datasetops: split + filter on {threads} thread(s) disagrees with the loop");
            times[k].push(elapsed);
        }
        times[2].push(time(|| {
            let t = split_loop(black_box(&raw));
            assert_eq!(t, expected);
            t
        }));
    }
    let per_sec = times.map(|t| ROWS as f64 / median(t).as_secs_f64());
    let base = per_sec[2];
    report.add(
        Figure::new("split (whole-record key) + filter, max_concurrent = 1: records/s", per_sec[0], "records/s")
            .ratio(per_sec[0] / base)
            .target(Target::RatioAtLeast(0.8)),
    );
    report.add(
        Figure::new("split + filter, max_concurrent = 2: records/s", per_sec[1], "records/s").ratio(per_sec[1] / base),
    );
    report.add(
        Figure::new("split + filter hand-written loop, 1 thread (baseline): records/s", base, "records/s").ratio(1.0),
    );
}

fn split_pipeline(batches: &[Batch], threads: usize) -> (Duration, Tally) {
    let tally = Arc::new(Mutex::new(Tally::default()));
    let seen = Arc::clone(&tally);
    let (input, mut next) = (batches.to_vec(), 0);
    let p = builder("datasetops", threads)
        .seed(PIPELINE_SEED)
        .step(
            "source",
            source("batches", move |_| {
                let b = input.get(next).cloned();
                next += 1;
                Ok(b)
            }),
        )
        .step("split", built("split", "fractions = { train = 0.8, validation = 0.1, test = 0.1 }"))
        .step("train", built("filter", "field = \"split\"\nequals = \"train\""))
        .step(
            "tally",
            sink("tally", move |b, _| {
                let Some(Column::Int(ids)) = b.column("id") else {
                    return Err(StepError::internal("no int column `id`"));
                };
                let sum: i64 = ids.values().iter().sum();
                let mut t = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                t.records += b.len() as u64;
                t.sum += sum as u64;
                Ok(())
            }),
        )
        .build()
        .unwrap_or_else(|d| panic!("datasetops: the split pipeline does not build:\n{d}"));
    let (elapsed, summary) = timed_run(p);
    summary.unwrap_or_else(|e| panic!("datasetops: the split run failed: {e}"));
    let t = *tally.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    (elapsed, t)
}

/// The baseline: each record hashed as `split` hashes a whole record (fields in name
/// order: `id` then `text`, each name length-framed, the int tagged 2, the string tagged
/// 4 and length-framed), the train records counted.
fn split_loop(raw: &[Raw]) -> Tally {
    let mut t = Tally::default();
    for (id, text) in raw {
        let mut h = blake3::Hasher::new();
        h.update(&PIPELINE_SEED.to_le_bytes());
        h.update(&SALT_SPLIT.to_le_bytes());
        h.update(&2u64.to_le_bytes());
        h.update(b"id");
        h.update(&[2]);
        h.update(&id.to_le_bytes());
        h.update(&4u64.to_le_bytes());
        h.update(b"text");
        h.update(&[4]);
        h.update(&(text.len() as u64).to_le_bytes());
        h.update(text.as_bytes());
        let mut k = [0u8; 8];
        k.copy_from_slice(&h.finalize().as_bytes()[..8]);
        let u = (u64::from_le_bytes(k) >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        if u < 0.8 {
            t.records += 1;
            t.sum += *id as u64;
        }
    }
    t
}

const TEMPLATES: [&str; 3] = [
    "My {device} won't {problem} since the {version} update, please help.",
    "I was charged twice for {plan} this month on my {device}.",
    "How do I {problem} my {device}? Tried everything on {version}.",
];
const DEVICES: [&str; 6] = ["phone", "laptop", "tablet", "smart watch", "desktop computer", "e-reader"];
const PROBLEMS: [&str; 5] = ["charge", "boot", "connect to wifi", "update", "sync my contacts"];
const VERSIONS: [&str; 4] = ["14.2", "15.0.1", "beta 3", "latest"];
const PLANS: [&str; 3] = ["the pro plan", "the family bundle", "storage"];

fn generate_keys() -> String {
    let list = |v: &[&str]| format!("[{}]", v.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(", "));
    format!(
        "templates = {}\nslots = {{ device = {}, problem = {}, version = {}, plan = {} }}\ncount = {ROWS}",
        list(&TEMPLATES),
        list(&DEVICES),
        list(&PROBLEMS),
        list(&VERSIONS),
        list(&PLANS)
    )
}

fn generate_records(report: &mut Report) {
    let expected = generate_loop();
    let keys = generate_keys();
    let mut times: [Vec<Duration>; 2] = Default::default();
    for _ in 0..REPS {
        let tally = Arc::new(Mutex::new(Tally::default()));
        let seen = Arc::clone(&tally);
        let p = builder("datasetops", 1)
            .seed(PIPELINE_SEED)
            .step("generate", built("generate", &keys))
            .step(
                "tally",
                sink("tally", move |b, _| {
                    let Some(text) = b.column("text").and_then(Column::as_str) else {
                        return Err(StepError::internal("no string column `text`"));
                    };
                    let mut t = seen.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    t.records += b.len() as u64;
                    t.sum += text.data().len() as u64;
                    Ok(())
                }),
            )
            .build()
            .unwrap_or_else(|d| panic!("datasetops: the generate pipeline does not build:\n{d}"));
        let (elapsed, summary) = timed_run(p);
        summary.unwrap_or_else(|e| panic!("datasetops: the generate run failed: {e}"));
        assert_eq!(
            *tally.lock().unwrap_or_else(std::sync::PoisonError::into_inner),
            expected,
            "datasetops: generate disagrees with the loop"
        );
        times[0].push(elapsed);
        times[1].push(time(|| {
            let t = generate_loop();
            assert_eq!(t, expected);
            t
        }));
    }
    let per_sec = times.map(|t| ROWS as f64 / median(t).as_secs_f64());
    report.add(
        Figure::new("generate, 3 templates × 4 slots: records/s", per_sec[0], "records/s")
            .ratio(per_sec[0] / per_sec[1])
            .target(Target::RatioAtLeast(0.8)),
    );
    report.add(Figure::new("generate hand-written loop (baseline): records/s", per_sec[1], "records/s").ratio(1.0));
}

/// A piece of a template in the loop: a slot (its number) when the flag is set, else text.
type Piece = (bool, usize, &'static str);

/// The baseline: the same draws as `generate` (a splitmix64 stream per record, seeded by
/// its position), each record's text and slot values written into reused `String`s.
fn generate_loop() -> Tally {
    let slots: [&[&str]; 4] = [&DEVICES, &PROBLEMS, &VERSIONS, &PLANS];
    let names = ["device", "problem", "version", "plan"];
    // Each template as pieces: literal text, or a slot number; and its slots in order of
    // first use (the order `generate` draws them in).
    let parsed: Vec<(Vec<Piece>, Vec<usize>)> = TEMPLATES
        .iter()
        .map(|t| {
            let mut pieces = Vec::new();
            let mut uses = Vec::new();
            let mut rest = *t;
            while let Some(open) = rest.find('{') {
                pieces.push((false, 0, &rest[..open]));
                let close = open + rest[open..].find('}').unwrap_or(0);
                let slot = names.iter().position(|n| *n == &rest[open + 1..close]).unwrap_or(0);
                if !uses.contains(&slot) {
                    uses.push(slot);
                }
                pieces.push((true, slot, ""));
                rest = &rest[close + 1..];
            }
            pieces.push((false, 0, rest));
            (pieces, uses)
        })
        .collect();
    let below = |x: u64, n: usize| ((u128::from(x) * n as u128) >> 64) as usize;
    let stream = rng::mix(PIPELINE_SEED ^ SALT_GENERATE);
    let mut buf = String::with_capacity(256);
    let mut fields: [String; 4] = Default::default();
    let mut t = Tally::default();
    for i in 0..ROWS as u64 {
        let mut state = rng::mix(stream.wrapping_add(i.wrapping_mul(0x9E37_79B9_7F4A_7C15)));
        let mut next = || {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            rng::mix(state)
        };
        let template = below(next(), parsed.len());
        let (pieces, uses) = &parsed[template];
        let mut drawn = [0usize; 4];
        for &s in uses {
            drawn[s] = below(next(), slots[s].len());
        }
        buf.clear();
        for (is_slot, s, text) in pieces {
            buf.push_str(if *is_slot { slots[*s][drawn[*s]] } else { text });
        }
        // The record's other fields: the template's number and each slot's value.
        for (s, f) in fields.iter_mut().enumerate() {
            f.clear();
            if uses.contains(&s) {
                f.push_str(slots[s][drawn[s]]);
            }
        }
        t.records += 1;
        t.sum += buf.len() as u64;
        black_box((buf.as_str(), &fields, template));
    }
    t
}

fn compare_and_sample(report: &mut Report) {
    const COMPARED: usize = 200_000;
    let raw = generate(2 * COMPARED, SEED ^ 1);
    let batches = build_batches(&raw);
    let half = batches.len() / 2;
    let mut times = Vec::new();
    for _ in 0..REPS {
        let (real, synth) = (batches[..half].to_vec(), batches[half..].to_vec());
        let records = real.iter().chain(&synth).map(Batch::len).sum::<usize>();
        let synthetic = synth.iter().map(Batch::len).sum::<usize>() as u64;
        let passed = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&passed);
        let (mut r, mut s) = (0, 0);
        let p = builder("datasetops", 1)
            .step(
                "real",
                source("real", move |_| {
                    r += 1;
                    Ok(real.get(r - 1).cloned())
                }),
            )
            .step(
                "synthetic",
                source("synthetic", move |_| {
                    s += 1;
                    Ok(synth.get(s - 1).cloned())
                }),
            )
            .step_after("compare", ["real", "synthetic"], built("compare", ""))
            .step(
                "tally",
                sink("tally", move |b, _| {
                    counted.fetch_add(b.len() as u64, Ordering::Relaxed);
                    Ok(())
                }),
            )
            .build()
            .unwrap_or_else(|d| panic!("datasetops: the compare pipeline does not build:\n{d}"));
        let (elapsed, summary) = timed_run(p);
        summary.unwrap_or_else(|e| panic!("datasetops: the compare run failed: {e}"));
        assert_eq!(passed.load(Ordering::Relaxed), synthetic, "compare passes the synthetic records on");
        times.push(records as f64 / elapsed.as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    report.add(Figure::new(
        "compare, 200,000 real vs 200,000 synthetic texts: records/s",
        times[REPS / 2],
        "records/s",
    ));

    let raw = generate(ROWS, SEED ^ 2);
    let batches = build_batches(&raw);
    let mut times = Vec::new();
    for _ in 0..REPS {
        let (input, mut next) = (batches.clone(), 0);
        let kept = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&kept);
        let p = builder("datasetops", 1)
            .step(
                "source",
                source("batches", move |_| {
                    next += 1;
                    Ok(input.get(next - 1).cloned())
                }),
            )
            .step("sample", built("sample", "n = 10000"))
            .step(
                "tally",
                sink("tally", move |b, _| {
                    counted.fetch_add(b.len() as u64, Ordering::Relaxed);
                    Ok(())
                }),
            )
            .build()
            .unwrap_or_else(|d| panic!("datasetops: the sample pipeline does not build:\n{d}"));
        let (elapsed, summary) = timed_run(p);
        summary.unwrap_or_else(|e| panic!("datasetops: the sample run failed: {e}"));
        assert_eq!(kept.load(Ordering::Relaxed), 10_000);
        times.push(ROWS as f64 / elapsed.as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    report.add(Figure::new("sample n = 10,000 of 1,000,000 records: records/s", times[REPS / 2], "records/s"));
}
