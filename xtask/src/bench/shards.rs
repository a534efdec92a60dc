//! `shards`: what splitting a run into shards costs. The release `weave` binary runs
//! load → clean → dedup → export_jsonl (the cache on, cold; dedup's shards exchange their
//! keys) over the `cache` scenario's 1,000,000 generated rows, as CSV and as JSON Lines, as
//! one process, then as 1, 2 and 4 shards (`--shard I/N`) started together, each with
//! `--max-concurrent` of its share of the machine's cores (at least 1). Figures: the wall
//! time of the whole job and the CPU time of all its processes together (the children's
//! `cutime + cstime`), against the single process's (target: the 4 shards' CPU ≤ 1.2× the
//! single process's). Each is the median of 5 runs. A shard reads its own range and little
//! more: a JSONL shard from the first line feed before it, a CSV shard from the byte
//! before it, following the states a quote leaves the parse in until they agree where the
//! next record starts (only a line break inside quotes near the cut makes it follow the
//! file from its start); neither counts the lines before its range unless a message needs
//! a line number.

use std::process::Command;
use std::time::{Duration, Instant};

use super::{Figure, Report, Target, median, thousands};

const REPS: usize = 5;

/// CPU time of the children this process has waited for, from `/proc/self/stat`
/// (`cutime` and `cstime`, fields 16 and 17, in ticks of 1/100 s).
pub(super) fn children_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(13)?.parse::<u64>().ok()? + fields.get(14)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

pub(super) fn run(report: &mut Report) {
    let weave = match super::cache::build_weave() {
        Ok(p) => p,
        Err(e) => {
            report.progress(format!("cannot build the weave binary: {e}"));
            return;
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let bytes = super::cache::write_input(dir.path());
    // The same rows as JSON Lines.
    let csv = std::fs::read_to_string(dir.path().join("in.csv")).expect("input");
    let mut jsonl = String::with_capacity(csv.len() + csv.len() / 4);
    for row in csv::ReaderBuilder::new().from_reader(csv.as_bytes()).records().flatten() {
        jsonl.push_str(&serde_json::json!({"id": &row[0], "text": &row[1]}).to_string());
        jsonl.push('\n');
    }
    drop(csv);
    std::fs::write(dir.path().join("in.jsonl"), jsonl).expect("input");
    // The `cache` scenario's pipeline, with the cache's defaults.
    let csv_pipeline = super::cache::PIPELINE.replace("CACHE", "").replace("OUT", "out/clean.jsonl");
    let jsonl_pipeline =
        csv_pipeline.replace("kind = \"load_csv\"\npath = \"in.csv\"", "kind = \"load_jsonl\"\npath = \"in.jsonl\"");
    assert!(jsonl_pipeline.contains("load_jsonl"), "the cache scenario's pipeline reads in.csv as its load step");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    report.progress(format!("1,000,000 rows ({} MB), {cores} cores", bytes / 1_000_000));
    // One job: `shards` processes (none: one process without `--shard`) started together.
    let job = |shards: Option<usize>| -> (Duration, Duration) {
        let _ = std::fs::remove_dir_all(dir.path().join(".weave"));
        let _ = std::fs::remove_dir_all(dir.path().join("out"));
        let cpu0 = children_cpu().unwrap_or_default();
        let t0 = Instant::now();
        let n = shards.unwrap_or(1);
        let threads = (cores / n).max(1).to_string();
        let children: Vec<_> = (0..n)
            .map(|i| {
                let mut c = Command::new(&weave);
                c.args(["-q", "run", "p.toml", "--max-concurrent", &threads]).current_dir(dir.path());
                if shards.is_some() {
                    c.args(["--shard", &format!("{i}/{n}")]);
                }
                c.stdout(std::process::Stdio::null()).spawn().expect("weave starts")
            })
            .collect();
        for mut c in children {
            assert!(c.wait().expect("weave runs").success(), "weave run failed");
        }
        (t0.elapsed(), children_cpu().unwrap_or_default().saturating_sub(cpu0))
    };
    let measure = |shards: Option<usize>| {
        let runs: Vec<(Duration, Duration)> = (0..REPS).map(|_| job(shards)).collect();
        (median(runs.iter().map(|r| r.0).collect()), median(runs.iter().map(|r| r.1).collect()))
    };
    for (format, pipeline) in [("CSV", &csv_pipeline), ("JSONL", &jsonl_pipeline)] {
        std::fs::write(dir.path().join("p.toml"), pipeline).expect("pipeline");
        let (wall1, cpu1) = measure(None);
        report.add(Figure::new(format!("{format}: one process: wall time"), wall1.as_secs_f64() * 1e3, "ms"));
        report.add(Figure::new(format!("{format}: one process: CPU time"), cpu1.as_secs_f64() * 1e3, "ms"));
        for n in [1usize, 2, 4] {
            let (wall, cpu) = measure(Some(n));
            report.add(
                Figure::new(format!("{format}: {n} shards: wall time"), wall.as_secs_f64() * 1e3, "ms")
                    .ratio(wall1.as_secs_f64() / wall.as_secs_f64()),
            );
            let over = cpu.as_secs_f64() / cpu1.as_secs_f64().max(1e-9);
            let f = Figure::new(format!("{format}: {n} shards: CPU time of all, over one process's"), over, "×")
                .ratio(cpu1.as_secs_f64() / cpu.as_secs_f64().max(1e-9));
            report.add(if n == 4 { f.target(Target::AtMost(1.2)) } else { f });
            report.progress(format!("{format}, {n} shards: {} ms CPU", thousands(cpu.as_millis() as u64)));
        }
    }
}
