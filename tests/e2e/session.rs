//! One session behind every front end: the quick start run through the Rust API
//! (`Orchestrator::run_file`) and through `weave run` keeps the same run record
//! (report.json, events.jsonl), the same metrics file and delivers the same alert, field by
//! field, with what differs between any two runs set aside (times, durations, rates, the
//! run's id, process and absolute paths, and the peak memory in flight, which depends on
//! how the threads interleave).

use std::path::Path;

use serde_json::Value;

use crate::cli::{check_in, data};

/// The quick start with an alert that fires on every run (retries of `dedup` are 0), sent
/// to a file.
fn quickstart_with_alert() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let from = data("../../examples/quickstart");
    std::fs::copy(from.join("raw_data.csv"), dir.path().join("raw_data.csv")).expect("copy the input");
    let text = std::fs::read_to_string(from.join("pipeline.toml")).expect("the example");
    let alert = "\n[[alert]]\nwhen = \"retries >= 0\"\nstep = \"dedup\"\nnotify = \"file\"\npath = \"alerts.jsonl\"\n";
    std::fs::write(dir.path().join("pipeline.toml"), text + alert).expect("write the pipeline");
    dir
}

/// Keys whose values differ between two runs of one pipeline.
const VARYING: &[&str] = &[
    "t",
    "elapsed",
    "time_ms",
    "started_ms",
    "ended_ms",
    "run_id",
    "pid",
    "process_start",
    "pipeline_file",
    "absolute",
    "secs",
    "nanos",
    "call_seconds",
    "wall_seconds",
    "records_per_second",
    "memory_wait_seconds",
    "peak_memory",
    "memory_share",
];

/// `v` with every [`VARYING`] value set to null.
fn scrub(mut v: Value) -> Value {
    fn walk(v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if VARYING.contains(&k.as_str()) {
                        *x = Value::Null;
                    } else {
                        walk(x);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut v);
    v
}

/// The one run record under `dir/.weave/runs`.
fn record(dir: &Path) -> std::path::PathBuf {
    let runs: Vec<_> = std::fs::read_dir(dir.join(".weave/runs")).expect("a runs folder").flatten().collect();
    assert_eq!(runs.len(), 1, "one run record");
    runs[0].path()
}

fn report(dir: &Path) -> Value {
    let text = std::fs::read_to_string(record(dir).join("report.json")).expect("report.json");
    scrub(serde_json::from_str(&text).expect("JSON"))
}

/// The events, scrubbed, in an order that does not depend on how the steps' threads
/// interleave (each step's own events keep their order in its sequence numbers).
fn events(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(record(dir).join("events.jsonl")).expect("events.jsonl");
    // Every line is an `Event` (with its time), and reads back as exactly what was written.
    let read = weave::read_events(&record(dir)).expect("events.jsonl reads back as events");
    assert_eq!(read.len(), text.lines().count());
    for (event, line) in read.iter().zip(text.lines()) {
        assert_eq!(event.to_line(), line);
    }
    assert!(matches!(read.first().map(|l| &l.event), Some(weave::Event::RunStarted { .. })), "{text}");
    assert!(
        matches!(
            read.last().map(|l| &l.event),
            Some(weave::Event::RunFinished { status: weave::RunStatus::Succeeded, .. })
        ),
        "{text}"
    );
    let mut lines: Vec<String> =
        text.lines().map(|l| scrub(serde_json::from_str(l).expect("a JSON line")).to_string()).collect();
    lines.sort();
    lines
}

/// The metrics file's samples; those that measure time or memory in flight by name and
/// labels only.
fn metrics(dir: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("m.prom")).expect("the metrics file");
    let timed = [
        "weave_run_elapsed_seconds",
        "weave_step_call_duration_seconds_bucket",
        "weave_step_call_duration_seconds_sum",
        "weave_step_records_per_second",
        "weave_step_memory_wait_seconds_total",
        "weave_run_peak_memory_bytes",
    ];
    text.lines()
        .map(|l| {
            let name = l.split(['{', ' ']).next().unwrap_or(l);
            if timed.contains(&name) {
                l.rsplit_once(' ').map_or(l, |(series, _)| series).to_owned()
            } else {
                l.to_owned()
            }
        })
        .collect()
}

fn alerts(dir: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(dir.join("alerts.jsonl")).expect("the alert was delivered");
    text.lines().map(|l| scrub(serde_json::from_str(l).expect("a JSON line"))).collect()
}

#[test]
fn the_rust_api_and_the_command_keep_the_same_record_metrics_and_alerts() {
    let cli = quickstart_with_alert();
    check_in(cli.path(), &["run", "pipeline.toml", "--metrics-file", "m.prom"], 0, &["run succeeded"], &[]);

    let rust = quickstart_with_alert();
    let summary = weave::Orchestrator::new()
        .monitoring(false)
        .metrics_file(rust.path().join("m.prom"))
        .run_file(rust.path().join("pipeline.toml"))
        .expect("the run succeeds");
    assert_eq!(summary.step("export").map(|s| s.records_in), Some(2046));

    let (a, b) = (report(cli.path()), report(rust.path()));
    assert_eq!(a["status"], "succeeded");
    assert_eq!(a["outputs"][0]["path"], "processed_data.jsonl", "lineage names the output");
    assert_eq!(a["alerts"].as_array().map(Vec::len), Some(1), "the alert is in the record");
    // Field by field, so that a difference names its field.
    for (k, v) in a.as_object().expect("an object") {
        assert_eq!(&b[k], v, "report.json field {k}");
    }
    assert_eq!(a, b);
    assert_eq!(events(cli.path()), events(rust.path()), "events.jsonl");
    assert_eq!(metrics(cli.path()), metrics(rust.path()), "the metrics file");
    let delivered = alerts(cli.path());
    assert_eq!(delivered.len(), 1);
    assert_eq!(delivered[0]["step"], "dedup");
    assert_eq!(delivered, alerts(rust.path()), "the alert delivered");
    // The outputs themselves, byte for byte.
    for f in ["processed_data.jsonl", "excluded.jsonl"] {
        assert_eq!(std::fs::read(cli.path().join(f)).ok(), std::fs::read(rust.path().join(f)).ok(), "{f}");
    }
}
