//! `wide`: files of 12,500 to 100,000 columns and a few rows, read and written by the
//! built-in steps: the cost of handling a field must not grow with the number of fields
//! (a header of 100,000 columns took 23 s, 12,500 took 0.34 s: quadratic).
//!
//! For each format (CSV: `load_csv` → `clean` trim over every field → `export_csv`; JSON
//! Lines: `load_jsonl` → `export_jsonl`; Parquet: `load_parquet` → `export_parquet`), the
//! time per column at the narrowest width, measured in the same run, over the time per
//! column at each width: a ratio near 1 is linear, near 1/8 at 100,000 columns quadratic.
//! Every output is checked to hold every cell.

use std::sync::Arc;
use std::time::Duration;

use weave_core::{Batch, ConfTable, Params, SourceFile, Step, StepContext};

use super::{Figure, Report, Target, median, thousands, time};

const WIDTHS: [usize; 4] = [12_500, 25_000, 50_000, 100_000];
const ROWS: usize = 3;
const REPS: usize = 3;

pub(super) fn run(report: &mut Report) {
    let dir = std::env::temp_dir().join(format!("weave-bench-wide-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    report.progress(format!(
        "{ROWS} rows of {} to {} columns, {REPS} runs each",
        thousands(WIDTHS[0] as u64),
        thousands(WIDTHS[3] as u64)
    ));
    for format in ["csv", "jsonl", "parquet"] {
        let mut per_column = Vec::new();
        for &width in &WIDTHS {
            let input = write_input(&dir, format, width);
            let output = dir.join(format!("out-{width}.{format}"));
            let runs: Vec<Duration> = (0..REPS)
                .map(|_| {
                    let _ = std::fs::remove_file(&output);
                    time(|| pass(format, &input, &output))
                })
                .collect();
            check(format, &output, width);
            let t = median(runs).as_secs_f64();
            per_column.push((width, t, t / width as f64));
        }
        let base = per_column[0].2;
        for (i, (width, t, per)) in per_column.into_iter().enumerate() {
            let name = format!("{format}: {} columns × {ROWS} rows, read and written", thousands(width as u64));
            let mut f = Figure::new(if i == 0 { format!("{name} (baseline per column)") } else { name }, t * 1e3, "ms")
                .ratio(base / per);
            if i + 1 == WIDTHS.len() {
                // Linear: the time per column at 8× the width within 2× of the narrowest's.
                f = f.target(Target::RatioAtLeast(0.5));
            }
            report.add(f);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// The input of `width` columns in `format`: names `c0…`, cells `rRcC` padded by a space
/// on each side (for `clean` to trim), written by the built-in exporters for JSON Lines and
/// Parquet so that they hold what a user's file would.
fn write_input(dir: &std::path::Path, format: &str, width: usize) -> std::path::PathBuf {
    let path = dir.join(format!("in-{width}.{format}"));
    let names: Vec<String> = (0..width).map(|c| format!("c{c}")).collect();
    let mut csv = names.join(",") + "\n";
    for r in 0..ROWS {
        let cells: Vec<String> = (0..width).map(|c| format!(" r{r}c{c} ")).collect();
        csv += &(cells.join(",") + "\n");
    }
    let csv_path = dir.join(format!("in-{width}.csv"));
    std::fs::write(&csv_path, csv).unwrap_or_else(|e| panic!("cannot write {}: {e}", csv_path.display()));
    if format != "csv" {
        let batches = read_all(build("load_csv", &csv_path, ""));
        let _ = std::fs::remove_file(&path);
        write_all(build(&format!("export_{format}"), &path, ""), &batches);
    }
    path
}

/// Reads `input` and writes it to `output` through the format's loader and exporter (and,
/// for CSV, `clean` over every field).
fn pass(format: &str, input: &std::path::Path, output: &std::path::Path) {
    let mut batches = read_all(build(&format!("load_{format}"), input, ""));
    if format == "csv" {
        let Step::Transform(clean) = build_keys("clean", "rules = [\"trim\"]") else { panic!("clean is a transform") };
        let mut ctx = StepContext::new("clean", 0, 0, Arc::default());
        batches = batches.iter().map(|b| clean.apply(b, &mut ctx).unwrap_or_else(|e| panic!("{e}"))).collect();
    }
    write_all(build(&format!("export_{format}"), output, ""), &batches);
}

/// Every cell of the output is there, trimmed.
fn check(format: &str, output: &std::path::Path, width: usize) {
    let batches = read_all(build(&format!("load_{format}"), output, ""));
    let rows: usize = batches.iter().map(Batch::len).sum();
    assert_eq!(rows, ROWS, "{format} at {width} columns: rows lost");
    let b = &batches[0];
    assert_eq!(b.schema().len(), width, "{format}: columns lost");
    let last = format!("c{}", width - 1);
    let cell = b.row(0).get_str(&last).map(str::trim).map(str::to_owned);
    assert_eq!(cell.as_deref(), Some(format!("r0c{}", width - 1).as_str()), "{format}: the last cell");
}

fn build(kind: &str, path: &std::path::Path, extra: &str) -> Step {
    build_keys(kind, &format!("path = {:?}\n{extra}", path.display().to_string()))
}

fn build_keys(kind: &str, config: &str) -> Step {
    let table = ConfTable::parse(config).unwrap_or_else(|e| panic!("bad config: {e:?}"));
    let p = Params::new(table, SourceFile::new("bench.toml", config), "step", Some("s".into()));
    let registry = weave_steps::registry();
    let k = registry.get(kind).unwrap_or_else(|| panic!("no kind {kind}"));
    (k.build)(&p).unwrap_or_else(|| panic!("{kind} did not build: {}", p.finish(&k.keys)))
}

fn read_all(step: Step) -> Vec<Batch> {
    let Step::Source(mut s) = step else { panic!("not a source") };
    let mut ctx = StepContext::new("load", 0, 0, Arc::default());
    let mut out = Vec::new();
    while let Some(b) = s.next_batch(&mut ctx).unwrap_or_else(|e| panic!("{e}")) {
        out.push(b);
    }
    assert!(ctx.take_rejected().is_empty(), "records were rejected");
    out
}

fn write_all(step: Step, batches: &[Batch]) {
    let Step::Sink(mut s) = step else { panic!("not a sink") };
    let mut ctx = StepContext::new("export", 0, 0, Arc::default());
    for b in batches {
        s.write(b, &mut ctx).unwrap_or_else(|e| panic!("{e}"));
    }
    s.commit(&mut ctx).unwrap_or_else(|e| panic!("{e}"));
}
