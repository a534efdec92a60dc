//! `llm`: an LLM step at high concurrency against the OpenAI-compatible test server (the
//! one the tests use, `weave-testkit`), started in this process on 127.0.0.1 with 100 ms
//! of latency per request.
//!
//! A pipeline file (load_jsonl of 2,000 records → `augment` with an LLM noiser,
//! `concurrency = 64` → export_jsonl) is built and run through the executor, as
//! `weave run` does. The baseline is the ideal wall time: 2,000 × 0.1 s / 64 = 3.125 s
//! (target: at most 1.15× that).
//!
//! - **cold**: an empty cache of answers, so each of the 2,000 answers is also stored
//!   (durably) in the run's cache folder;
//! - **no cache**: as `weave run --no-cache`;
//! - **all cached**: the cold run again in the same folder: the executor here keeps no
//!   step outputs (that is `weave run`'s cache plan), so the step runs, and takes every
//!   answer from the cache of answers, sending no request.
//!
//! Each figure is the median of 3 runs; the server's peak of requests in flight is
//! reported too (it should be the concurrency).

use std::path::Path;
use std::time::Duration;

use weave_testkit::{Reply, TestServer};

use super::{Figure, Report, Target, median, time};

const RECORDS: usize = 2_000;
const CONCURRENCY: usize = 64;
const LATENCY: Duration = Duration::from_millis(100);
const REPS: usize = 3;

fn pipeline(url: &str) -> String {
    format!(
        r#"
[pipeline]
name = "llm-bench"

[llm.local]
base_url = "{url}"
model = "bench"

[[step]]
id = "load"
kind = "load_jsonl"
path = "in.jsonl"

[[step]]
id = "restyle"
kind = "augment"
noiser = {{ kind = "llm_style_transfer", style = "casual" }}
concurrency = {CONCURRENCY}

[[step]]
id = "export"
kind = "export_jsonl"
path = "out.jsonl"
"#
    )
}

/// Builds and runs the pipeline in `dir`; returns the records written.
fn run_once(dir: &Path, text: &str, no_cache: bool) -> Result<u64, String> {
    let file = dir.join("p.toml");
    let options = weave_core::BuildOptions { no_cache, ..weave_core::BuildOptions::default() };
    let pipeline = weave_core::Pipeline::from_file_text_with(&file, text, &weave_steps::registry(), &options)
        .map_err(|d| d.to_string())?;
    let summary = weave_exec::run(pipeline, weave_exec::ExecOptions::default()).map_err(|e| e.to_string())?;
    Ok(summary.step("export").map_or(0, |s| s.records_in))
}

pub(super) fn run(report: &mut Report) {
    if let Err(e) = measure(report) {
        report.progress(format!("llm: {e}"));
    }
}

fn measure(report: &mut Report) -> Result<(), String> {
    let server = TestServer::builder()
        .latency(LATENCY)
        .start(|r| Reply::text(format!("casual: {}", r.prompt().rsplit("Text:\n").next().unwrap_or_default())))
        .map_err(|e| format!("cannot start the test server: {e}"))?;
    let text = pipeline(&server.url());
    let ideal = RECORDS as f64 * LATENCY.as_secs_f64() / CONCURRENCY as f64;
    report.progress(format!(
        "{RECORDS} requests, {} ms latency, concurrency {CONCURRENCY}: ideal {ideal:.3} s",
        LATENCY.as_millis()
    ));
    let mut input = String::new();
    for i in 0..RECORDS {
        input.push_str(&format!("{{\"id\":{i},\"text\":\"ticket number {i}: my order arrived late\"}}\n"));
    }

    let mut cold = Vec::new();
    let mut uncached = Vec::new();
    let mut cached = Vec::new();
    for rep in 0..REPS {
        // Each repetition in a fresh folder: a cold cache, then the same file again.
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        std::fs::write(dir.path().join("in.jsonl"), &input).map_err(|e| e.to_string())?;
        let timed = |no_cache: bool, expected_sent: usize| -> Result<Duration, String> {
            let sent = server.total();
            let mut records = Ok(0);
            let t = time(|| records = run_once(dir.path(), &text, no_cache));
            check(records?, server.total() - sent, expected_sent)?;
            Ok(t)
        };
        cold.push(timed(false, RECORDS)?);
        cached.push(timed(false, 0)?);
        uncached.push(timed(true, RECORDS)?);
        report.progress(format!(
            "run {}: cold {:.3} s, all cached {:.3} s, no cache {:.3} s",
            rep + 1,
            cold[rep].as_secs_f64(),
            cached[rep].as_secs_f64(),
            uncached[rep].as_secs_f64()
        ));
    }
    report.add(Figure::new("ideal wall time: 2,000 × 0.1 s / 64 (baseline)", ideal, "s"));
    for (name, times) in [("cold cache (each answer stored)", cold), ("no cache (--no-cache)", uncached)] {
        let t = median(times).as_secs_f64();
        report.add(
            Figure::new(format!("{name}: wall time over the ideal"), t / ideal, "×")
                .ratio(ideal / t)
                .target(Target::AtMost(1.15)),
        );
    }
    let t = median(cached).as_secs_f64();
    report.add(Figure::new("every answer from the cache: wall time", t * 1e3, "ms").ratio(ideal / t));
    report.add(
        Figure::new("requests in flight at the server, at most", server.max_in_flight() as f64, "")
            .target(Target::AtMost(CONCURRENCY as f64)),
    );
    Ok(())
}

/// The run wrote every record and sent the requests it should have.
fn check(records: u64, sent: usize, expected_sent: usize) -> Result<(), String> {
    if records != RECORDS as u64 {
        return Err(format!("the run wrote {records} records, not {RECORDS}"));
    }
    if sent != expected_sent {
        return Err(format!("the run sent {sent} requests, not {expected_sent}"));
    }
    Ok(())
}
