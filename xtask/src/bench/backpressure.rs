//! `backpressure`: a fast source, a slow sink and a small memory budget: memory must stay
//! bounded by the budget, not grow with the input.
//!
//! The source makes 250 batches of about 8 MiB (16 records with a 512 KiB string each,
//! copied into a fresh buffer for every batch, so that the memory is real): 2.1 GB in
//! all. A stateless pass-through step hands them to a sink that sleeps 2 ms per batch,
//! slower than the source. The budget is `max_memory = 64 MiB`, which the channels alone
//! (four batches an edge) would exceed without back-pressure.
//!
//! The same runs with four pass-through steps (stateless, stateful, stateless, stateful)
//! check that the budget also holds when a batch's share is handed from stage to stage.
//!
//! Each run happens in a child process (this binary again, as `__bench-child
//! backpressure`), so that its peak resident set (`VmHWM` in `/proc/self/status`, read by
//! the child when the run is over) is this run's alone and not the other scenarios'. The
//! child prints `key=value` lines for the parent to read. Figures (the highest of the
//! runs, as they are bounds): the peak RSS (target < 200 MB), the executor's own peak of
//! bytes in flight (`RunSummary::peak_memory`, target ≤ 64 MiB, shown in KiB so that a few
//! bytes over do not round to the budget), and the data streamed.

use std::collections::HashMap;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use weave_core::{Batch, Column, DataType, Field, PrimitiveColumn, ResourceLimits, Schema, StrColumn};

use super::steps::{builder, sink, source, stateful, transform};
use super::{Figure, Report, Target, median, peak_rss, thousands};

/// Batches from the source.
const BATCHES: u64 = 250;
/// Records per batch.
const ROWS: usize = 16;
/// Bytes of text per record.
const TEXT: usize = 512 * 1024;
/// The memory budget.
const BUDGET: u64 = 64 << 20;
/// What the sink spends on each batch.
const SINK_DELAY: Duration = Duration::from_millis(2);
/// Runs of each chain, each in a child process of its own.
const REPS: usize = 3;
/// What runs between the source and the sink: the scenario's chain (first), and a longer
/// one whose stateless and stateful steps each hand the batch's share of the budget on.
const CHAINS: [(&str, &str); 2] = [("pass", "1 pass-through"), ("mixed", "4 pass-throughs (2 stateful)")];

/// In KiB rather than MiB, so that a few bytes over the budget do not round to it.
const KIB: f64 = 1024.0;

pub(super) fn run(report: &mut Report) {
    report.progress(format!(
        "{BATCHES} batches of {ROWS} × {} KiB through a sink that sleeps {} ms per batch, max_memory = {} MiB; {REPS} runs of each chain, each in a child process",
        TEXT / 1024,
        SINK_DELAY.as_millis(),
        BUDGET >> 20
    ));
    for (chain, what) in CHAINS {
        let runs: Vec<ChildRun> = (0..REPS).map(|_| child_run(chain)).collect();
        for r in &runs {
            assert_eq!(r.bytes, BATCHES * (ROWS * TEXT) as u64, "backpressure: the sink did not get every byte");
        }
        let peak_memory = runs.iter().map(|r| r.peak_memory).max().unwrap_or(0);
        let batch_bytes = runs[0].batch_bytes;
        report.progress(format!(
            "{what}: peak bytes in flight {} for a budget of {}: {:.2} batches of {} bytes",
            thousands(peak_memory),
            thousands(BUDGET),
            peak_memory as f64 / batch_bytes as f64,
            thousands(batch_bytes)
        ));
        let rss = runs.iter().map(|r| r.peak_rss).collect::<Option<Vec<u64>>>();
        let rss = rss.map(|v| v.into_iter().max().unwrap_or(0) as f64 / 1e6);
        let peak = Figure::new(
            format!("{what}: peak bytes in flight, RunSummary::peak_memory (highest)"),
            peak_memory as f64 / KIB,
            "KiB",
        )
        .target(Target::AtMost((BUDGET >> 10) as f64));
        if chain != CHAINS[0].0 {
            // The longer chain checks the budget through more hand-overs between stages.
            report.add(peak);
            if let Some(rss) = rss {
                report.add(Figure::new(format!("{what}: peak RSS (highest)"), rss, "MB"));
            }
            continue;
        }
        match rss {
            Some(rss) => report.add(
                Figure::new(format!("{what}: peak RSS of the child process (highest)"), rss, "MB")
                    .target(Target::Below(200.0)),
            ),
            None => report.progress("the peak RSS is not known on this system (no VmHWM in /proc/self/status)"),
        }
        if let Some(before) = runs.iter().map(|r| r.rss_before).collect::<Option<Vec<u64>>>() {
            let before = before.into_iter().max().unwrap_or(0) as f64 / 1e6;
            report.add(Figure::new("RSS of the child before the run", before, "MB"));
        }
        report.add(peak);
        let gb = runs[0].bytes as f64 / 1e9;
        let secs = median(runs.iter().map(|r| r.elapsed).collect()).as_secs_f64();
        report.progress(format!(
            "streamed {} bytes per run in {secs:.2} s (the sink's sleeps alone take {:.2} s)",
            thousands(runs[0].bytes),
            (SINK_DELAY * BATCHES as u32).as_secs_f64()
        ));
        report.add(Figure::new("data streamed per run", gb, "GB"));
        report.add(Figure::new("throughput, limited by the slow sink", gb / secs, "GB/s"));
    }
}

/// What one child process reported.
#[derive(Debug)]
struct ChildRun {
    rss_before: Option<u64>,
    peak_rss: Option<u64>,
    peak_memory: u64,
    /// What the budget counts for one batch (`Batch::memory_size`).
    batch_bytes: u64,
    bytes: u64,
    elapsed: Duration,
}

/// Runs `chain` in a child process and reads its report.
fn child_run(chain: &str) -> ChildRun {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("backpressure: cannot find this program: {e}"));
    let out = Command::new(&exe)
        .args(["__bench-child", "backpressure", chain])
        .output()
        .unwrap_or_else(|e| panic!("backpressure: cannot start {}: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "backpressure: the child process failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let values: HashMap<&str, &str> = stdout.lines().filter_map(|l| l.split_once('=')).collect();
    let number = |key: &str| -> Option<u64> { values.get(key).and_then(|v| v.parse().ok()) };
    let required = |key: &str| -> u64 {
        number(key).unwrap_or_else(|| panic!("backpressure: the child did not report `{key}`:\n{stdout}"))
    };
    ChildRun {
        rss_before: number("rss_before"),
        peak_rss: number("peak_rss"),
        peak_memory: required("peak_memory"),
        batch_bytes: required("batch_bytes"),
        bytes: required("bytes"),
        elapsed: Duration::from_nanos(required("elapsed_ns")),
    }
}

/// The child's side: runs the pipeline with `chain` (from [`CHAINS`]) between the source
/// and the sink once, and prints `key=value` lines on stdout.
pub(super) fn child(chain: &str) -> Result<(), String> {
    if !CHAINS.iter().any(|(c, _)| *c == chain) {
        return Err(format!("unknown chain `{chain}`"));
    }
    let rss_before = peak_rss();
    let bytes = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&bytes);
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int), Field::new("text", DataType::Str)]));
    // One record's text, copied into every batch's fresh buffer.
    let template: String = (0..TEXT).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
    let batch_bytes = make_batch(&schema, &template, 0).memory_size();
    let mut next = 0u64;
    let mut b = builder("backpressure", 2)
        .resources(ResourceLimits { max_memory: BUDGET, max_concurrent: Some(2), ..ResourceLimits::default() })
        .step(
            "generate",
            source("generate", move |_| {
                if next == BATCHES {
                    return Ok(None);
                }
                let batch = make_batch(&schema, &template, next);
                next += 1;
                Ok(Some(batch))
            }),
        );
    let stages = if chain == "pass" { 1 } else { 4 };
    for k in 0..stages {
        let step = if k % 2 == 0 {
            transform("pass", |b, _| Ok(b.clone()))
        } else {
            stateful(
                "pass_stateful",
                |b, _, out| {
                    out.push(b.clone());
                    Ok(())
                },
                |_, _| Ok(()),
            )
        };
        b = b.step(format!("pass_{k}"), step);
    }
    let pipeline = b
        .step(
            "slow_sink",
            sink("slow_sink", move |b, _| {
                std::thread::sleep(SINK_DELAY);
                let text = b.column("text").and_then(Column::as_str).map_or(0, |t| t.data().len());
                seen.fetch_add(text as u64, Ordering::Relaxed);
                Ok(())
            }),
        )
        .build()
        .map_err(|d| format!("the pipeline does not build:\n{d}"))?;
    let start = Instant::now();
    let summary = weave_exec::run(pipeline, weave_exec::ExecOptions::default()).map_err(|e| e.to_string())?;
    let elapsed = start.elapsed();
    let peak = peak_rss();
    if let Some(b) = rss_before {
        println!("rss_before={b}");
    }
    if let Some(p) = peak {
        println!("peak_rss={p}");
    }
    println!("peak_memory={}", summary.peak_memory);
    println!("batch_bytes={batch_bytes}");
    println!("bytes={}", bytes.load(Ordering::Relaxed));
    println!("elapsed_ns={}", elapsed.as_nanos());
    Ok(())
}

/// Batch `n`: `ROWS` records whose text is copied into a fresh buffer.
fn make_batch(schema: &Arc<Schema>, template: &str, n: u64) -> Batch {
    let mut text = StrColumn::with_capacity(ROWS, ROWS * template.len());
    let mut ids = PrimitiveColumn::new();
    for r in 0..ROWS {
        text.push(template);
        ids.push((n as usize * ROWS + r) as i64);
    }
    Batch::new(Arc::clone(schema), vec![Arc::new(Column::Int(ids)), Arc::new(Column::Str(text))])
        .unwrap_or_else(|e| panic!("backpressure: bad batch: {e}"))
}
