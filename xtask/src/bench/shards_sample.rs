//! `shards_sample`: what sampling and a stratified split cost when a run is split into
//! shards. The release `weave` binary runs load_jsonl → split (stratified by a label of 5
//! uneven classes: each shard replays the earlier shards' classes and keys) → sample of
//! 10,000 stratified by the label (each shard waits for every shard's classes and works
//! out the job's winners) → export_jsonl over 1,000,000 generated rows, the cache on and
//! cold: as one process, as 1, 2 and 4 shards started together, and as 4 shards run stage
//! by stage (each stage's 4 shards together, as `weave slurm submit` runs them). Figures:
//! the wall time of the whole job and the CPU time of all its processes together, against
//! the single process's. Each is the median of 3 runs.

use std::process::Command;
use std::time::{Duration, Instant};

use super::shards::children_cpu;
use super::{Figure, Report, median, thousands};

const REPS: usize = 3;
const ROWS: usize = 1_000_000;

const PIPELINE: &str = r#"
[pipeline]
name = "shards-sample-bench"
seed = 7

[[step]]
id = "load"
kind = "load_jsonl"
path = "in.jsonl"

[[step]]
id = "split"
kind = "split"
fractions = { train = 0.8, dev = 0.1, test = 0.1 }
stratify_by = "label"

[[step]]
id = "sample"
kind = "sample"
n = 10000
stratify_by = "label"

[[step]]
id = "export"
kind = "export_jsonl"
path = "out/sample.jsonl"
"#;

/// `ROWS` JSON Lines of an id, a label (5 classes, from 50% to 2%) and a short text.
fn write_input(dir: &std::path::Path) -> usize {
    let labels = ["billing", "shipping", "login", "refund", "other"];
    let words = ["order", "refund", "screen", "battery", "late", "invoice", "password", "login", "broken", "shipping"];
    let mut s = String::with_capacity(ROWS * 80);
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in 0..ROWS {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let label = match x % 50 {
            0..=24 => labels[0],
            25..=36 => labels[1],
            37..=44 => labels[2],
            45..=48 => labels[3],
            _ => labels[4],
        };
        let text: Vec<&str> = (0..6).map(|w| words[((x >> (8 + w * 4)) % 10) as usize]).collect();
        s.push_str(&format!("{{\"id\":{i},\"label\":\"{label}\",\"text\":\"{}\"}}\n", text.join(" ")));
    }
    std::fs::write(dir.join("in.jsonl"), &s).expect("input");
    s.len()
}

pub(super) fn run(report: &mut Report) {
    run_pipeline(report, PIPELINE, 3);
}

/// Measures `pipeline` (over this scenario's input, its export in `out/`), of `stages`
/// stages as shards: as one process, as 1, 2 and 4 shards started together, and as 4
/// shards stage by stage.
pub(super) fn run_pipeline(report: &mut Report, pipeline: &str, stages: usize) {
    let weave = match super::cache::build_weave() {
        Ok(p) => p,
        Err(e) => {
            report.progress(format!("cannot build the weave binary: {e}"));
            return;
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let bytes = write_input(dir.path());
    std::fs::write(dir.path().join("p.toml"), pipeline).expect("pipeline");
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    report.progress(format!("{} rows ({} MB), {cores} cores", thousands(ROWS as u64), bytes / 1_000_000));
    // `n` processes started together (none: one process without `--shard`), for each of
    // `stages` (none: without `--stage`), one stage after the other.
    let job = |shards: Option<usize>, stages: Option<usize>| -> (Duration, Duration) {
        let _ = std::fs::remove_dir_all(dir.path().join(".weave"));
        let _ = std::fs::remove_dir_all(dir.path().join("out"));
        let cpu0 = children_cpu().unwrap_or_default();
        let t0 = Instant::now();
        let n = shards.unwrap_or(1);
        let threads = (cores / n).max(1).to_string();
        let stage_list: Vec<Option<usize>> = stages.map_or(vec![None], |k| (1..=k).map(Some).collect());
        for stage in stage_list {
            let children: Vec<_> = (0..n)
                .map(|i| {
                    let mut c = Command::new(&weave);
                    c.args(["-q", "run", "p.toml", "--max-concurrent", &threads]).current_dir(dir.path());
                    if shards.is_some() {
                        c.args(["--shard", &format!("{i}/{n}")]);
                    }
                    if let Some(k) = stage {
                        c.args(["--stage", &k.to_string()]);
                    }
                    c.stdout(std::process::Stdio::null()).spawn().expect("weave starts")
                })
                .collect();
            for mut c in children {
                assert!(c.wait().expect("weave runs").success(), "weave run failed");
            }
        }
        (t0.elapsed(), children_cpu().unwrap_or_default().saturating_sub(cpu0))
    };
    let measure = |shards: Option<usize>, stages: Option<usize>| {
        let runs: Vec<(Duration, Duration)> = (0..REPS).map(|_| job(shards, stages)).collect();
        (median(runs.iter().map(|r| r.0).collect()), median(runs.iter().map(|r| r.1).collect()))
    };
    let (wall1, cpu1) = measure(None, None);
    report.add(Figure::new("one process: wall time", wall1.as_secs_f64() * 1e3, "ms"));
    report.add(Figure::new("one process: CPU time", cpu1.as_secs_f64() * 1e3, "ms"));
    for (name, shards, stages) in [
        ("1 shard", 1, None),
        ("2 shards together", 2, None),
        ("4 shards together", 4, None),
        ("4 shards stage by stage", 4, Some(stages)),
    ] {
        let (wall, cpu) = measure(Some(shards), stages);
        report.add(
            Figure::new(format!("{name}: wall time"), wall.as_secs_f64() * 1e3, "ms")
                .ratio(wall1.as_secs_f64() / wall.as_secs_f64()),
        );
        report.add(
            Figure::new(
                format!("{name}: CPU time of all, over one process's"),
                cpu.as_secs_f64() / cpu1.as_secs_f64().max(1e-9),
                "×",
            )
            .ratio(cpu1.as_secs_f64() / cpu.as_secs_f64().max(1e-9)),
        );
        report.progress(format!("{name}: {} ms CPU", thousands(cpu.as_millis() as u64)));
    }
}
