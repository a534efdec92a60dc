//! `loaders`: reading 500,000 records from JSON Lines, a JSON array and Parquet, and
//! writing them as Parquet, each through the built-in step against the plainest program
//! that does the same job by hand.
//!
//! - JSON: `load_jsonl` and `load_json` (batches of typed columns) against a loop that
//!   reads the JSON Lines file line by line and parses each line into a `serde_json::Value`
//!   (what a generic reader that does not know the fields must do at least).
//! - Parquet in: `load_parquet` (Arrow arrays converted to our columns) against the
//!   parquet crate's Arrow reader alone, touching every string.
//! - Parquet out: `export_parquet` (our batches converted to Arrow, written through a
//!   temporary file renamed into place) against the parquet crate's Arrow writer given
//!   ready Arrow batches, writing a plain file.
//!
//! Each figure is the median of interleaved runs; the records read back are counted (and
//! their text summed) so that every variant is checked to have done the whole job.

use std::io::BufRead;
use std::sync::Arc;
use std::time::Duration;

use arrow_array::{Array, ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use weave_core::{Batch, ConfTable, Params, Record, SourceFile, Step, StepContext, Value};

use super::{Figure, Report, Rng, Target, median, thousands, time};

const ROWS: usize = 500_000;
const BATCH: usize = 8_192;
const REPS: usize = 3;
const SEED: u64 = 0x10ad_e125;

/// A named job to time.
type Variant<'a> = (&'static str, Box<dyn Fn() + 'a>);

pub(super) fn run(report: &mut Report) {
    let dir = tempfile_dir();
    report.progress(format!("generating {} records", thousands(ROWS as u64)));
    let batches = generate(ROWS, SEED);
    let text_bytes: usize = batches.iter().map(text_len).sum();
    let jsonl = dir.join("data.jsonl");
    let json = dir.join("data.json");
    let parquet = dir.join("data.parquet");
    write_files(&batches, &jsonl, &json);
    drain(build("export_parquet", &parquet, ""), &batches);
    let size = |p: &std::path::Path| std::fs::metadata(p).map(|m| m.len() as f64 / 1e6).unwrap_or(0.0);
    report.progress(format!(
        "{} records, {:.1} MB of text; JSONL {:.1} MB, JSON {:.1} MB, Parquet {:.1} MB; {REPS} interleaved runs",
        thousands(ROWS as u64),
        text_bytes as f64 / 1e6,
        size(&jsonl),
        size(&json),
        size(&parquet)
    ));
    let arrow_batches: Vec<RecordBatch> = batches.iter().map(to_arrow).collect();

    let check = |(rows, text): (usize, usize)| {
        assert_eq!((rows, text), (ROWS, text_bytes), "a variant did not read every record");
    };
    let variants: [Variant<'_>; 6] = [
        ("load_jsonl", Box::new(|| check(read(build("load_jsonl", &jsonl, ""))))),
        ("load_json", Box::new(|| check(read(build("load_json", &json, ""))))),
        ("JSON Lines into serde_json::Value, by hand", Box::new(|| check(parse_lines(&jsonl)))),
        ("load_parquet", Box::new(|| check(read(build("load_parquet", &parquet, ""))))),
        ("parquet crate's Arrow reader alone", Box::new(|| check(arrow_read(&parquet)))),
        ("export_parquet", Box::new(|| drain(build("export_parquet", &dir.join("out.parquet"), ""), &batches))),
    ];
    let raw_write = || arrow_write(&dir.join("raw.parquet"), &arrow_batches);
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); variants.len() + 1];
    for rep in 0..REPS {
        for k in (0..=variants.len()).map(|k| (k + rep) % (variants.len() + 1)) {
            times[k].push(match variants.get(k) {
                Some((_, f)) => time(f),
                None => time(raw_write),
            });
        }
    }
    let per_sec: Vec<f64> = times.into_iter().map(|t| ROWS as f64 / median(t).as_secs_f64()).collect();
    // Each step against the baseline of its own job; the baselines themselves come last.
    for (k, base) in [(0, 2), (1, 2), (3, 4), (5, 6)] {
        report.add(
            Figure::new(format!("{}: records/s", variants[k].0), per_sec[k], "records/s")
                .ratio(per_sec[k] / per_sec[base])
                .target(Target::RatioAtLeast(0.8)),
        );
    }
    for (k, name) in [(2, variants[2].0), (4, variants[4].0), (6, "parquet crate's Arrow writer alone")] {
        report.add(Figure::new(format!("{name} (baseline): records/s"), per_sec[k], "records/s").ratio(1.0));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh folder under the system's temporary folder.
fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("weave-bench-loaders-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

/// Records of an id, a text of 5 to 60 words, a label and a score, in batches.
fn generate(rows: usize, seed: u64) -> Vec<Batch> {
    let words =
        ["data", "pipeline", "the", "model", "café", "training", "of", "a", "tokens", "naïve", "Ünïcode", "run"];
    let labels = ["train", "test", "validation"];
    let mut rng = Rng::new(seed);
    let mut out = Vec::new();
    let mut recs = Vec::with_capacity(BATCH);
    for id in 0..rows {
        let mut text = String::new();
        for w in 0..rng.range(5, 60) {
            if w > 0 {
                text.push(' ');
            }
            text.push_str(rng.pick(&words));
        }
        recs.push(
            Record::new()
                .with("id", id as i64)
                .with("text", text)
                .with("label", rng.pick(&labels))
                .with("score", Value::Float(rng.below(1000) as f64 / 10.0)),
        );
        if recs.len() == BATCH || id + 1 == rows {
            out.push(Batch::from_records(&recs));
            recs.clear();
        }
    }
    out
}

fn text_len(b: &Batch) -> usize {
    b.column("text").and_then(|c| c.as_str()).map_or(0, |c| c.data().len())
}

fn write_files(batches: &[Batch], jsonl: &std::path::Path, json: &std::path::Path) {
    let mut lines = Vec::new();
    for b in batches {
        weave_steps::write_jsonl(b, &mut lines);
    }
    let text = String::from_utf8(lines).unwrap_or_default();
    let array = format!("[\n{}\n]\n", text.trim_end().replace('\n', ",\n"));
    std::fs::write(jsonl, &text).unwrap_or_else(|e| panic!("cannot write {}: {e}", jsonl.display()));
    std::fs::write(json, array).unwrap_or_else(|e| panic!("cannot write {}: {e}", json.display()));
}

/// A built-in step of `kind` on `path`, with more keys in `extra`.
fn build(kind: &str, path: &std::path::Path, extra: &str) -> Step {
    let config = format!("path = {:?}\n{extra}", path.display().to_string());
    let table = ConfTable::parse(&config).unwrap_or_else(|e| panic!("bad config: {e:?}"));
    let p = Params::new(table, SourceFile::new("bench.toml", config.as_str()), "step", Some("s".into()));
    let registry = weave_steps::registry();
    let k = registry.get(kind).unwrap_or_else(|| panic!("no kind {kind}"));
    (k.build)(&p).unwrap_or_else(|| panic!("{kind} did not build: {}", p.finish(&k.keys)))
}

/// Reads a source to its end: records and bytes of text.
fn read(step: Step) -> (usize, usize) {
    let Step::Source(mut s) = step else { panic!("not a source") };
    let mut ctx = StepContext::new("load", 0, 0, Arc::default());
    let (mut rows, mut text) = (0, 0);
    while let Some(b) = s.next_batch(&mut ctx).unwrap_or_else(|e| panic!("{e}")) {
        rows += b.len();
        text += text_len(&b);
    }
    (rows, text)
}

/// Writes batches through a sink and commits.
fn drain(step: Step, batches: &[Batch]) {
    let Step::Sink(mut s) = step else { panic!("not a sink") };
    let mut ctx = StepContext::new("export", 0, 0, Arc::default());
    for b in batches {
        s.write(b, &mut ctx).unwrap_or_else(|e| panic!("{e}"));
    }
    s.commit(&mut ctx).unwrap_or_else(|e| panic!("{e}"));
}

fn parse_lines(path: &std::path::Path) -> (usize, usize) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{e}"));
    let reader = std::io::BufReader::with_capacity(1 << 20, file);
    let (mut rows, mut text) = (0, 0);
    for line in reader.lines() {
        let line = line.unwrap_or_else(|e| panic!("{e}"));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}"));
        rows += 1;
        text += v["text"].as_str().map_or(0, str::len);
    }
    (rows, text)
}

fn arrow_read(path: &std::path::Path) -> (usize, usize) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{e}"));
    let reader = parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(file)
        .and_then(|b| b.with_batch_size(BATCH).build())
        .unwrap_or_else(|e| panic!("{e}"));
    let (mut rows, mut text) = (0, 0);
    for rb in reader {
        let rb = rb.unwrap_or_else(|e| panic!("{e}"));
        rows += rb.num_rows();
        if let Some(t) = rb.column_by_name("text").and_then(|c| c.as_any().downcast_ref::<StringArray>()) {
            text += t.iter().map(|s| s.map_or(0, str::len)).sum::<usize>();
        }
    }
    (rows, text)
}

fn to_arrow(b: &Batch) -> RecordBatch {
    let ints = |name: &str| -> ArrayRef {
        Arc::new(Int64Array::from_iter((0..b.len()).map(|i| b.row(i).get(name).and_then(|v| v.as_int()))))
    };
    let strs =
        |name: &str| -> ArrayRef { Arc::new(StringArray::from_iter((0..b.len()).map(|i| b.row(i).get_str(name)))) };
    let floats: ArrayRef =
        Arc::new(Float64Array::from_iter((0..b.len()).map(|i| b.row(i).get("score").and_then(|v| v.as_f64()))));
    RecordBatch::try_from_iter([
        ("id", ints("id")),
        ("text", strs("text")),
        ("label", strs("label")),
        ("score", floats),
    ])
    .unwrap_or_else(|e| panic!("{e}"))
}

fn arrow_write(path: &std::path::Path, batches: &[RecordBatch]) {
    let file = std::fs::File::create(path).unwrap_or_else(|e| panic!("{e}"));
    let props = parquet::file::properties::WriterProperties::builder()
        .set_compression(parquet::basic::Compression::SNAPPY)
        .build();
    let schema = batches.first().map(RecordBatch::schema).unwrap_or_else(|| panic!("no batches"));
    let mut w = parquet::arrow::ArrowWriter::try_new(std::io::BufWriter::new(file), schema, Some(props))
        .unwrap_or_else(|e| panic!("{e}"));
    for rb in batches {
        w.write(rb).unwrap_or_else(|e| panic!("{e}"));
    }
    // Synced as the step's output is, so that both pay for the disk alike.
    let file = w.into_inner().and_then(|b| b.into_inner().map_err(|e| e.into_error().into()));
    file.and_then(|f| f.sync_all().map_err(Into::into)).unwrap_or_else(|e| panic!("{e}"));
}
