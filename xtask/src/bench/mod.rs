//! `cargo xtask bench`: benchmark scenarios, each measured against a baseline in the same
//! run, printed as one table and kept as dated JSON files so that progress can be compared.
//!
//! A scenario is a module here with a `run(&mut Report)` function, listed in [`SCENARIOS`].
//! It measures what it wants and adds [`Figure`]s to the report; a figure may carry a
//! ratio to the scenario's baseline and a [`Target`]. A missed target is printed as
//! `MISSED` but does not change the exit code: benchmarks report, they do not fail CI.

mod backpressure;
mod cache;
mod datasetops;
mod io;
mod layout;
mod llm;
mod loaders;
mod measure;
mod monitoring;
mod near_dedup;
mod ops;
mod overhead;
mod plan;
mod reliability;
mod report;
mod shards;
mod shards_mix;
mod shards_sample;
mod speedup;
mod steps;
mod throughput;
mod tuned;
mod wide;

pub(crate) use measure::{Rng, cpu_time, median, peak_rss, time};
pub(crate) use report::{Figure, Report, Target, thousands};

/// A benchmark scenario.
pub(crate) struct Scenario {
    /// The name given on the command line.
    pub(crate) name: &'static str,
    /// One line on what it measures, for `cargo xtask help`.
    pub(crate) summary: &'static str,
    /// Measures and adds figures to the report.
    run: fn(&mut Report),
}

/// Every scenario, in the order `cargo xtask bench` runs them.
pub(crate) const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "plan",
        summary: "validate, level and find the critical path of a 10,000-step DAG; parse it as a pipeline file",
        run: plan::run,
    },
    Scenario {
        name: "layout",
        summary: "1M text records: build, clean, write JSONL as columnar batches vs rows vs a hand-written loop",
        run: layout::run,
    },
    Scenario {
        name: "overhead",
        summary: "executor cost per batch per step: 1M one-record batches through 10 no-op steps, fused and not",
        run: overhead::run,
    },
    Scenario {
        name: "speedup",
        summary: "two independent CPU-heavy branches in one pipeline on 2 threads vs two pipelines in turn on 1",
        run: speedup::run,
    },
    Scenario {
        name: "throughput",
        summary: "1M records through 4 fused column-wise transforms on 1 and 2 threads vs a hand-written loop",
        run: throughput::run,
    },
    Scenario {
        name: "monitoring",
        summary: "cost of MetricsCollector + LogSubscriber: the throughput pipeline on 1 and 2 threads, 200,000 one-record batches",
        run: monitoring::run,
    },
    Scenario {
        name: "datasetops",
        summary: "split + filter and generate against hand-written loops (1M records); compare and sample throughput",
        run: datasetops::run,
    },
    Scenario {
        name: "loaders",
        summary: "500,000 records read from JSONL, a JSON array and Parquet, and written as Parquet, vs hand-written readers and the bare parquet crate",
        run: loaders::run,
    },
    Scenario {
        name: "reliability",
        summary: "1,000 runs of a 10-step pipeline where every step call fails transiently with p = 5%, default retries",
        run: reliability::run,
    },
    Scenario {
        name: "backpressure",
        summary: "2 GB of 8 MiB batches through a slow sink with max_memory = 64 MiB, in a child process: peak RSS",
        run: backpressure::run,
    },
    Scenario {
        name: "cache",
        summary: "1M-row load/clean/dedup/export through the weave binary: cache write cost, no-change re-run, replay; blake3 GB/s",
        run: cache::run,
    },
    Scenario {
        name: "io",
        summary: "1M generated CSV rows: load_csv → clean → dedup → export_jsonl on 1 and 2 threads vs a hand-written single pass; peak RSS",
        run: io::run,
    },
    Scenario {
        name: "prep",
        summary: "1M generated CSV rows: load_csv → clean → dedup → augment (typos) → validate (completeness) → export_jsonl on 1 and 2 threads vs a hand-written single pass; peak RSS",
        run: io::run_prep,
    },
    Scenario {
        name: "ops",
        summary: "every operator alone on one thread over one generated corpus (200,000 rows): records/s per core and MB/s",
        run: ops::run,
    },
    Scenario {
        name: "llm",
        summary: "an augment LLM noiser against the OpenAI-compatible test server at 100 ms latency, concurrency 64 (2,000 requests), 256 and 1,024 (10,000), in a child process: wall time against the ideal, peak RSS",
        run: llm::run,
    },
    Scenario {
        name: "wide",
        summary: "CSV, JSON Lines and Parquet of 12,500 to 100,000 columns read and written (CSV cleaned over every field): time per column against the narrowest",
        run: wide::run,
    },
    Scenario {
        name: "shards",
        summary: "1M CSV rows through load → clean → dedup → export as one process and as 1, 2 and 4 shards started together: wall time, and CPU of all against one process's",
        run: shards::run,
    },
    Scenario {
        name: "shards_sample",
        summary: "1M JSONL rows through load → stratified split → stratified sample of 10,000 → export as one process, as 1, 2 and 4 shards started together and as 4 shards stage by stage: wall time, and CPU of all against one process's",
        run: shards_sample::run,
    },
    Scenario {
        name: "shards_mix",
        summary: "1M JSONL rows through load → a template making variants → sample (0.3) → mix (ratio 0.2, balanced by label) → export as one process, as 1, 2 and 4 shards started together and as 4 shards stage by stage: wall time, and CPU of all against one process's",
        run: shards_mix::run,
    },
    Scenario {
        name: "near_dedup",
        summary: "1M generated records (10% planted near duplicates) through near_dedup, in a child process: records/s, peak RSS, recall",
        run: near_dedup::run,
    },
];

/// The hidden task `__bench-child <scenario>`: the part of a scenario that must run in a
/// process of its own (to measure that process's peak memory), started by the scenario.
pub(crate) fn child(args: &[String]) -> Result<(), String> {
    match args.first().map(String::as_str) {
        Some("backpressure") => backpressure::child(args.get(1).map_or("pass", String::as_str)),
        Some(name @ ("io" | "prep")) => io::child(name, &args[1..]),
        Some("near_dedup") => near_dedup::child(args.get(1).map_or("near", String::as_str)),
        Some("llm") => llm::child(&args[1..]),
        Some("llm-server") => llm::server(&args[1..]),
        other => Err(format!("no child task {other:?}")),
    }
}

/// Runs the scenarios named in `args` (all when there are none), prints the table and
/// writes the JSON files.
pub(crate) fn main(args: &[String]) -> Result<(), String> {
    let selected: Vec<&Scenario> = if args.is_empty() {
        SCENARIOS.iter().collect()
    } else {
        let mut out = Vec::new();
        for name in args {
            match SCENARIOS.iter().find(|s| s.name == name) {
                Some(s) if !out.iter().any(|o: &&Scenario| o.name == s.name) => out.push(s),
                Some(_) => {}
                None => {
                    let names: Vec<&str> = SCENARIOS.iter().map(|s| s.name).collect();
                    return Err(format!(
                        "unknown benchmark scenario `{name}`; the scenarios are: {}",
                        names.join(", ")
                    ));
                }
            }
        }
        out
    };
    if cfg!(debug_assertions) {
        eprintln!("warning: xtask was built without optimisations; run it as `cargo xtask bench` for real numbers");
    }

    let mut rows = Vec::new();
    for s in &selected {
        eprintln!("[{}] running", s.name);
        let mut report = Report::new(s.name);
        (s.run)(&mut report);
        rows.extend(report.into_rows());
    }

    print!("{}", report::table(&rows));
    let names: Vec<&str> = selected.iter().map(|s| s.name).collect();
    let paths = report::save(&names, &rows)?;
    for p in paths {
        println!("wrote {}", p.display());
    }
    let missed: Vec<&str> = rows.iter().filter(|r| r.ok == Some(false)).map(|r| r.figure.as_str()).collect();
    if !missed.is_empty() {
        println!(
            "MISSED: {} figure(s) did not meet their target: {} (the exit code stays 0: benchmarks report, they do not fail CI)",
            missed.len(),
            missed.join("; ")
        );
    }
    Ok(())
}
