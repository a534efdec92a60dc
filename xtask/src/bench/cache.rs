//! `cache`: what the content-addressed cache costs and saves, through the real `weave`
//! binary (release build), on a generated 1,000,000-row CSV through load → clean (trim,
//! collapse whitespace, drop < 20 chars) → exact dedup → export JSONL.
//!
//! - Cold run with the cache (empty cache, default settings: `cache = "auto"` keeps the
//!   export's record and costly steps' outputs) against `--no-cache`: the write path's
//!   cost (target ≤ 10% more wall time).
//! - No-change re-run against the cold run (target ≤ 5% of its wall time): every step is
//!   up to date, so nothing is read but the input's stamp.
//! - The same with every step's output stored (`cache = true` on clean and dedup): the
//!   cost of storing intermediate outputs, and a re-run after changing only the export
//!   (clean and dedup replayed from the cache) — figures without targets.
//! - blake3 hashing on one core, over an in-memory buffer (target ≥ 1 GB/s), and through
//!   `FileIndex::hash` on the CSV (read from the page cache).
//!
//! Each timing is the median of 3 runs, each a fresh process, timed from the outside.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::{Figure, Report, Rng, Target, median, thousands};

const ROWS: usize = 1_000_000;
const REPS: usize = 3;

pub(super) const PIPELINE: &str = r#"
[pipeline]
name = "cache-bench"

[[step]]
id = "load"
kind = "load_csv"
path = "in.csv"

[[step]]
id = "clean"
kind = "clean"
fields = ["text"]
rules = ["trim", "collapse_whitespace", { min_chars = 20 }]
CACHE

[[step]]
id = "dedup"
kind = "dedup"
fields = ["text"]
CACHE

[[step]]
id = "export"
kind = "export_jsonl"
path = "OUT"
"#;

pub(super) fn run(report: &mut Report) {
    let weave = match build_weave() {
        Ok(p) => p,
        Err(e) => {
            report.progress(format!("cannot build the weave binary: {e}"));
            return;
        }
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let bytes = write_input(dir.path());
    report.progress(format!("{} rows ({} MB) in {}", thousands(ROWS as u64), bytes / 1_000_000, dir.path().display()));
    let write = |store_all: bool, out: &str| {
        let cache = if store_all { "cache = true" } else { "" };
        std::fs::write(dir.path().join("p.toml"), PIPELINE.replace("CACHE", cache).replace("OUT", out))
            .expect("pipeline");
    };
    let clear = || {
        let _ = std::fs::remove_dir_all(dir.path().join(".weave"));
        let _ = std::fs::remove_file(dir.path().join("out.jsonl"));
    };
    let run = |args: &[&str]| -> Duration {
        let t0 = Instant::now();
        let st = Command::new(&weave)
            .args(["run", "p.toml", "-q"])
            .args(args)
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .status()
            .expect("weave runs");
        let t = t0.elapsed();
        assert!(st.success(), "weave run failed");
        t
    };

    // Default settings.
    write(false, "out.jsonl");
    let no_cache = median(
        (0..REPS)
            .map(|_| {
                clear();
                run(&["--no-cache"])
            })
            .collect(),
    );
    let cold = median(
        (0..REPS)
            .map(|_| {
                clear();
                run(&[])
            })
            .collect(),
    );
    let rerun = median((0..REPS).map(|_| run(&[])).collect());
    report.add(Figure::new("cold run, --no-cache (baseline)", no_cache.as_secs_f64() * 1e3, "ms"));
    let over = cold.as_secs_f64() / no_cache.as_secs_f64() - 1.0;
    report.add(
        Figure::new("cold run with the cache: time added over --no-cache", over * 100.0, "%")
            .ratio(no_cache.as_secs_f64() / cold.as_secs_f64())
            .target(Target::AtMost(10.0)),
    );
    let share = rerun.as_secs_f64() / cold.as_secs_f64();
    report.add(
        Figure::new("no-change re-run, share of the cold run's wall time", share * 100.0, "%")
            .ratio(cold.as_secs_f64() / rerun.as_secs_f64())
            .target(Target::AtMost(5.0)),
    );

    // Every step stored.
    write(true, "out.jsonl");
    let cold_all = median(
        (0..REPS)
            .map(|_| {
                clear();
                run(&[])
            })
            .collect(),
    );
    let over = cold_all.as_secs_f64() / no_cache.as_secs_f64() - 1.0;
    report.add(
        Figure::new("cold run storing every step (cache = true): time added over --no-cache", over * 100.0, "%")
            .ratio(no_cache.as_secs_f64() / cold_all.as_secs_f64()),
    );
    let mut n = 0;
    let changed_export = median(
        (0..REPS)
            .map(|_| {
                n += 1;
                write(true, &format!("out-{n}.jsonl"));
                run(&[])
            })
            .collect(),
    );
    report.add(
        Figure::new(
            "re-run after changing the export only: clean and dedup replayed",
            changed_export.as_secs_f64() * 1e3,
            "ms",
        )
        .ratio(no_cache.as_secs_f64() / changed_export.as_secs_f64()),
    );

    // Hashing on one core.
    let mut buf = vec![0u8; 1 << 30];
    let mut rng = Rng::new(7);
    for chunk in buf.chunks_mut(8) {
        let x = rng.next_u64().to_le_bytes();
        chunk.copy_from_slice(&x[..chunk.len()]);
    }
    let t = median(
        (0..REPS)
            .map(|_| {
                let t0 = Instant::now();
                std::hint::black_box(weave_cache::Key::of_content(&buf));
                t0.elapsed()
            })
            .collect(),
    );
    drop(buf);
    report.add(
        Figure::new("blake3 on one core, 1 GiB in memory", (1u64 << 30) as f64 / t.as_secs_f64() / 1e9, "GB/s")
            .target(Target::AtLeast(1.0)),
    );
    let csv = dir.path().join("in.csv");
    let t = median(
        (0..REPS)
            .map(|_| {
                // A fresh index each time, so the file is read and hashed, not looked up.
                let index = weave_cache::FileIndex::load(&dir.path().join("index"));
                let t0 = Instant::now();
                index.hash(&csv).expect("hash");
                t0.elapsed()
            })
            .collect(),
    );
    report.add(Figure::new(
        "FileIndex::hash of the input CSV (page cache)",
        bytes as f64 / t.as_secs_f64() / 1e9,
        "GB/s",
    ));
}

/// Builds the release `weave` binary and returns its path.
pub(super) fn build_weave() -> Result<PathBuf, String> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let st = Command::new(cargo)
        .args(["build", "--release", "--quiet", "-p", "weave-cli"])
        .current_dir(&root)
        .status()
        .map_err(|e| e.to_string())?;
    if !st.success() {
        return Err(format!("cargo build failed ({st})"));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), PathBuf::from);
    Ok(target.join("release").join("weave"))
}

/// The input: texts with messy spacing, some short, a fifth repeated. Returns its size.
pub(super) fn write_input(dir: &Path) -> usize {
    let mut rng = Rng::new(42);
    let words = ["order", "refund", "screen", "battery", "late", "invoice", "password", "login", "broken", "shipping"];
    let mut csv = String::with_capacity(ROWS * 70);
    csv.push_str("id,text\n");
    for i in 0..ROWS {
        let n = if rng.chance(0.1) { 2 } else { rng.range(5, 12) };
        let id = if rng.chance(0.2) { rng.below(ROWS / 10) } else { i };
        csv.push_str(&format!("{i},\"  "));
        for w in 0..n {
            csv.push_str(words[(id + w * 7) % words.len()]);
            csv.push_str(if w % 3 == 0 { "   " } else { " " });
        }
        csv.push_str(&format!("#{id} \"\n"));
    }
    std::fs::write(dir.join("in.csv"), &csv).expect("input");
    csv.len()
}
