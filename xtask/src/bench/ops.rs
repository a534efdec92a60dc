//! `ops`: every operator alone, on one thread, on the same generated corpus: records per
//! second per core and MB per second, the per-operator figures that tools in this field
//! do not publish.
//!
//! The corpus is 200,000 rows of the `io` scenario's generator ([`Corpus`]): an id, a
//! messy text of 2 to 270 characters, a label. It is written as CSV, JSON Lines and plain
//! text lines for the loaders, and built as batches of 8,192 rows (string columns, as
//! `load_csv` makes them) for everything else.
//!
//! Each operator is a step built through the registry from a line of [`OPS`], exactly as
//! a pipeline file would build it, and called directly on this thread: a source is read
//! to its end, a transform applied to every batch, a stateful transform or merge fed
//! every batch and finished, a sink fed every batch and committed (the commit, which
//! syncs the file, is part of its cost). No executor, so the figure is the operator's own
//! cost per core. MB/s counts the file's bytes for a loader and the bytes of the
//! records' fields for the others (the same for every operator but the loaders).
//!
//! `WEAVE_BENCH_OPS=augment,dedup cargo xtask bench ops` measures only the operators
//! whose name holds one of the comma-separated words.
//!
//! Adding an operator is one line in [`OPS`]: a name, its kind and its keys. The test
//! `every_kind_is_measured` fails when a kind in the registry has no line.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use weave_core::{Batch, Column, ConfTable, DataType, Field, Params, Schema, SourceFile, Step, StepContext, StrColumn};

use super::io::{Corpus, write_csv};
use super::{Figure, Report, median, thousands, time};

/// Rows in the corpus.
const ROWS: usize = 200_000;
/// Rows per batch.
const BATCH: usize = 8_192;
/// Timed runs of each operator; the median is reported.
const REPS: usize = 3;
const SEED: u64 = 0x0b5_0e7a;

/// One operator to measure: a name for the table, a step kind, and its keys as a
/// pipeline file writes them (`{dir}` is the corpus's folder).
#[derive(Debug, Clone, Copy)]
pub(super) struct Op {
    name: &'static str,
    kind: &'static str,
    keys: &'static str,
}

const fn op(name: &'static str, kind: &'static str, keys: &'static str) -> Op {
    Op { name, kind, keys }
}

/// A `clean` operator: one rule, on the text field (the id and the label are strings too,
/// and a length filter on them would drop every record).
macro_rules! clean {
    ($rule:literal, $keys:literal) => {
        op(concat!("clean: ", $rule), "clean", concat!("fields = [\"text\"]\nrules = [", $keys, "]"))
    };
}

/// Kinds measured by a scenario of their own rather than here, with the scenario: an LLM
/// step's cost is the endpoint's latency, not CPU, so a records-per-second figure on one
/// thread would say nothing (`llm` runs the LLM request path against the test server).
pub(super) const ELSEWHERE: &[(&str, &str)] = &[("llm_generate", "llm"), ("llm_judge", "llm")];

/// Every operator measured, one line each.
pub(super) const OPS: &[Op] = &[
    op("load_csv", "load_csv", r#"path = "{dir}/corpus.csv""#),
    op("load_csv, gzip", "load_csv", r#"path = "{dir}/corpus.csv.gz""#),
    op(
        "load_csv, typed (id as int)",
        "load_csv",
        r#"path = "{dir}/corpus.csv"
types = { id = "int" }"#,
    ),
    op("load_jsonl", "load_jsonl", r#"path = "{dir}/corpus.jsonl""#),
    op("load_jsonl, zstd", "load_jsonl", r#"path = "{dir}/corpus.jsonl.zst""#),
    op("load_text", "load_text", r#"path = "{dir}/corpus.txt""#),
    op("load_json", "load_json", r#"path = "{dir}/corpus.json""#),
    op("load_parquet", "load_parquet", r#"path = "{dir}/corpus.parquet""#),
    clean!("trim", r#""trim""#),
    clean!("collapse_whitespace", r#""collapse_whitespace""#),
    clean!("trim + collapse_whitespace", r#""trim", "collapse_whitespace""#),
    clean!("lowercase", r#""lowercase""#),
    clean!("nfc", r#""nfc""#),
    clean!("strip_control", r#""strip_control""#),
    clean!("strip_html", r#""strip_html""#),
    clean!("replace", r#"{ replace = { pattern = "[0-9]+", with = "0" } }"#),
    clean!("drop_empty", r#""drop_empty""#),
    clean!("min_chars", r#"{ min_chars = 20 }"#),
    clean!("max_chars", r#"{ max_chars = 200 }"#),
    clean!("min_words", r#"{ min_words = 3 }"#),
    clean!("max_words", r#"{ max_words = 40 }"#),
    clean!("drop_if_match", r#"{ drop_if_match = "(?i)password|refund" }"#),
    clean!("min_alpha_ratio", r#"{ min_alpha_ratio = 0.6 }"#),
    clean!("max_repeated_line_ratio", r#"{ max_repeated_line_ratio = 0.3 }"#),
    clean!("min_mean_word_length", r#"{ min_mean_word_length = 3 }"#),
    clean!("max_mean_word_length", r#"{ max_mean_word_length = 10 }"#),
    clean!("min_punct_line_ratio", r#"{ min_punct_line_ratio = 0.5 }"#),
    op("dedup, exact", "dedup", r#"fields = ["text"]"#),
    op(
        "dedup, normalised",
        "dedup",
        r#"fields = ["text"]
normalize = ["lowercase", "collapse_whitespace"]"#,
    ),
    op("dedup, whole record", "dedup", ""),
    op("near_dedup (MinHash + LSH)", "near_dedup", ""),
    op("concat", "concat", ""),
    op("augment: typos (moderate)", "augment", r#"noiser = { kind = "typos", frequency = "moderate" }"#),
    op("augment: typos (low, mild)", "augment", r#"noiser = { kind = "typos", frequency = "low", severity = "mild" }"#),
    op(
        "augment: typos (high, severe)",
        "augment",
        r#"noiser = { kind = "typos", frequency = "high", severity = "severe" }"#,
    ),
    op("augment: case", "augment", r#"noiser = "case""#),
    op("augment: whitespace", "augment", r#"noiser = "whitespace""#),
    op("augment: punctuation", "augment", r#"noiser = "punctuation""#),
    op("augment: dropout", "augment", r#"noiser = "dropout""#),
    op("augment: shuffle", "augment", r#"noiser = "shuffle""#),
    op("augment: synonyms", "augment", r#"noiser = "synonyms""#),
    op("augment: language (en)", "augment", r#"noiser = { kind = "language", language = "en" }"#),
    op("augment: domain (programming)", "augment", r#"noiser = { kind = "domain", domain = "programming" }"#),
    op("augment: style (technical)", "augment", r#"noiser = { kind = "style", style = "technical" }"#),
    op("validate: completeness", "validate", r#"checks = [{ check = "completeness", fields = ["text", "label"] }]"#),
    op("validate: coherence", "validate", r#"checks = [{ check = "coherence", field = "text" }]"#),
    op(
        "validate: length",
        "validate",
        r#"checks = [{ check = "length", field = "text", min_chars = 20, max_words = 40 }]"#,
    ),
    op(
        "validate: schema (allowed)",
        "validate",
        r#"checks = [{ check = "schema", field = "label", pattern = "^[a-z]+$" }]"#,
    ),
    op("validate: uniqueness", "validate", r#"checks = [{ check = "uniqueness", fields = ["text"] }]"#),
    op(
        "generate",
        "generate",
        r#"templates = ["My {device} won't {problem} since {day}.", "Why does the {device} {problem}?"]
slots = { device = ["phone", "laptop", "router", "watch"], problem = ["charge", "boot", "sync"], day = ["Monday", "Friday"] }
count = 200000"#,
    ),
    op("mix, append", "mix", ""),
    op(
        "mix, ratio 0.3 balanced",
        "mix",
        r#"ratio = 0.3
balance_by = "label""#,
    ),
    op("compare", "compare", r#"label = "label""#),
    op("split", "split", r#"fractions = { train = 0.8, validation = 0.1, test = 0.1 }"#),
    op(
        "split, stratified",
        "split",
        r#"fractions = { train = 0.8, validation = 0.1, test = 0.1 }
stratify_by = "label""#,
    ),
    op(
        "filter, equals",
        "filter",
        r#"field = "label"
equals = "billing""#,
    ),
    op(
        "fields, select + rename (no copy)",
        "fields",
        r#"select = ["id", "text"]
rename = { text = "prompt" }"#,
    ),
    op("fields, cast id to int", "fields", r#"cast = { id = "int" }"#),
    op(
        "fields, select + a schema checked",
        "fields",
        r#"select = ["id", "text", "label"]
schema = { id = "string", text = { type = "string", nullable = false }, label = "string" }"#,
    ),
    op("fields, template", "fields", r#"template = { line = "{label}: {text}" }"#),
    op("pii, redact (every kind)", "pii", r#"fields = ["text"]"#),
    op("language", "language", ""),
    op(
        "language, keep en at confidence 0.5",
        "language",
        r#"languages = ["en"]
min_confidence = 0.5"#,
    ),
    op("tokens, o200k_base", "tokens", ""),
    op("tokens, cl100k_base", "tokens", r#"encoding = "cl100k_base""#),
    op("quality: gopher_quality", "quality", r#"filters = ["gopher_quality"]"#),
    op("quality: gopher_repetition", "quality", r#"filters = ["gopher_repetition"]"#),
    op("quality: c4", "quality", r#"filters = ["c4"]"#),
    op("quality: fineweb", "quality", r#"filters = ["fineweb"]"#),
    op("sample, n = 10,000", "sample", "n = 10000"),
    op("sample, fraction 0.1", "sample", "fraction = 0.1"),
    op("export_jsonl", "export_jsonl", r#"path = "{dir}/out/a.jsonl""#),
    op("export_jsonl, gzip", "export_jsonl", r#"path = "{dir}/out/a.jsonl.gz""#),
    op("export_jsonl, zstd", "export_jsonl", r#"path = "{dir}/out/a.jsonl.zst""#),
    op(
        "export_jsonl, split by 10,000 rows",
        "export_jsonl",
        r#"path = "{dir}/out/split/part-{index}.jsonl"
max_rows = 10000"#,
    ),
    op("export_jsonl, partitioned by label", "export_jsonl", r#"path = "{dir}/out/by/{label}.jsonl""#),
    op("export_csv", "export_csv", r#"path = "{dir}/out/a.csv""#),
    op("export_parquet", "export_parquet", r#"path = "{dir}/out/a.parquet""#),
    op(
        "export_parquet, zstd",
        "export_parquet",
        r#"path = "{dir}/out/b.parquet"
compression = "zstd""#,
    ),
    op("export_json", "export_json", r#"path = "{dir}/out/a.json""#),
    op(
        "export_json, pretty",
        "export_json",
        r#"path = "{dir}/out/b.json"
pretty = true"#,
    ),
];

pub(super) fn run(report: &mut Report) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("ops: cannot make a temporary folder: {e}"));
    report.progress(format!(
        "writing the corpus ({} rows) as CSV, JSONL and text, gzip and zstd",
        thousands(ROWS as u64)
    ));
    let corpus = Corpus::files(dir.path(), ROWS, SEED).unwrap_or_else(|e| panic!("ops: cannot write the corpus: {e}"));
    report.progress(format!(
        "{} batches, {:.1} MB of fields; {REPS} runs of each of {} operators, one thread",
        corpus.batches.len(),
        corpus.field_bytes as f64 / 1e6,
        OPS.len()
    ));
    for (kind, scenario) in ELSEWHERE {
        report.progress(format!("{kind} is measured by the `{scenario}` scenario"));
    }
    // `WEAVE_BENCH_OPS=augment,clean` measures only the operators whose name holds one of
    // the words, for a quick comparison of a few kernels.
    let only: Vec<String> = std::env::var("WEAVE_BENCH_OPS")
        .map(|v| v.split(',').map(str::trim).filter(|w| !w.is_empty()).map(str::to_owned).collect())
        .unwrap_or_default();
    for op in OPS.iter().filter(|op| only.is_empty() || only.iter().any(|w| op.name.contains(w.as_str()))) {
        let mut times = Vec::with_capacity(REPS);
        let mut result = None;
        for _ in 0..REPS {
            let (elapsed, r) = measure(op, dir.path(), &corpus).unwrap_or_else(|e| panic!("ops: {}: {e}", op.name));
            times.push(elapsed);
            result = Some(r);
        }
        let Some(r) = result else { continue };
        let secs = median(times).as_secs_f64();
        report.add(Figure::new(format!("{}: records/s per core", op.name), r.records as f64 / secs, "records/s"));
        report.add(Figure::new(format!("{}: MB/s", op.name), r.bytes as f64 / 1e6 / secs, "MB/s"));
    }
}

/// What an operator processed in one run.
#[derive(Debug, Clone, Copy)]
struct Done {
    /// Records in (records out, for a loader).
    records: u64,
    /// The file's bytes for a loader, the fields' bytes for the others.
    bytes: u64,
}

/// The corpus: batches, and files for the loaders.
pub(super) struct CorpusData {
    batches: Vec<Batch>,
    field_bytes: u64,
    rows: usize,
}

impl Corpus {
    /// Writes the corpus's `rows` rows under `dir` as `corpus.csv` (and `.csv.gz`),
    /// `corpus.jsonl` (and `.jsonl.zst`), `corpus.json` (one array), `corpus.parquet` and
    /// `corpus.txt` (the texts, one per line, their line breaks made spaces), and returns
    /// them as batches.
    pub(super) fn files(dir: &Path, rows: usize, seed: u64) -> std::io::Result<CorpusData> {
        write_csv(&dir.join("corpus.csv"), rows, seed)?;
        let csv = std::fs::read(dir.join("corpus.csv"))?;
        let mut gz =
            flate2::write::GzEncoder::new(File::create(dir.join("corpus.csv.gz"))?, flate2::Compression::default());
        gz.write_all(&csv)?;
        gz.finish()?.sync_all()?;
        let mut corpus = Corpus::new(seed);
        let (mut text, mut jsonl, mut lines) = (String::new(), Vec::new(), Vec::new());
        let schema = Arc::new(Schema::new(["id", "text", "label"].map(|n| Field::new(n, DataType::Str)).to_vec()));
        let mut batches = Vec::new();
        let mut cols: [StrColumn; 3] = Default::default();
        let mut field_bytes = 0u64;
        for n in 0..rows {
            let (id, label) = corpus.next_row(&mut text);
            let id = id.to_string();
            for (c, v) in cols.iter_mut().zip([id.as_str(), text.as_str(), label]) {
                c.push(v);
                field_bytes += v.len() as u64;
            }
            jsonl.extend_from_slice(b"{\"id\":");
            weave_steps::write_json_str(&id, &mut jsonl);
            jsonl.extend_from_slice(b",\"text\":");
            weave_steps::write_json_str(&text, &mut jsonl);
            jsonl.extend_from_slice(b",\"label\":");
            weave_steps::write_json_str(label, &mut jsonl);
            jsonl.extend_from_slice(b"}\n");
            lines.extend(text.bytes().map(|b| if b == b'\n' || b == b'\r' { b' ' } else { b }));
            lines.push(b'\n');
            if cols[0].len() == BATCH || n + 1 == rows {
                let columns = std::mem::take(&mut cols).map(|c| Arc::new(Column::Str(c))).to_vec();
                batches.push(Batch::new(Arc::clone(&schema), columns).map_err(std::io::Error::other)?);
            }
        }
        std::fs::write(dir.join("corpus.jsonl"), &jsonl)?;
        std::fs::write(dir.join("corpus.jsonl.zst"), zstd::encode_all(&jsonl[..], 3)?)?;
        let mut txt = BufWriter::new(File::create(dir.join("corpus.txt"))?);
        txt.write_all(&lines)?;
        txt.flush()?;
        // The same objects as one JSON array, and the batches as a Parquet file.
        let mut array = Vec::with_capacity(jsonl.len() + 2);
        array.push(b'[');
        for (i, line) in jsonl.split(|&b| b == b'\n').filter(|l| !l.is_empty()).enumerate() {
            if i > 0 {
                array.extend_from_slice(b",\n");
            }
            array.extend_from_slice(line);
        }
        array.extend_from_slice(b"]\n");
        std::fs::write(dir.join("corpus.json"), &array)?;
        let parquet = format!("path = \"{}\"", dir.join("corpus.parquet").display());
        let Ok(Step::Sink(mut sink)) = weave_steps::registry().build("export_parquet", &parquet) else {
            return Err(std::io::Error::other("cannot build export_parquet"));
        };
        let mut ctx = StepContext::new("corpus", SEED, 0, Arc::default());
        for b in &batches {
            sink.write(b, &mut ctx).map_err(std::io::Error::other)?;
        }
        sink.commit(&mut ctx).map_err(std::io::Error::other)?;
        Ok(CorpusData { batches, field_bytes, rows })
    }
}

/// Builds the operator's step through the registry, from its keys with `{dir}` filled in.
fn build(op: &Op, dir: &Path) -> Result<Step, String> {
    let registry = weave_steps::registry();
    let kind = registry.get(op.kind).ok_or_else(|| format!("no step kind `{}`", op.kind))?;
    let text = op.keys.replace("{dir}", &dir.to_string_lossy());
    let table = ConfTable::parse(&text).map_err(|(e, _)| format!("bad keys: {e}"))?;
    let params = Params::new(table, SourceFile::new("ops.toml", text.as_str()), "step", Some(op.name.to_owned()))
        .reading_schema();
    // A `schema`, one of the keys every step takes, wraps the step in its check.
    let step = (kind.build)(&params).map(|s| weave_core::checked::with_declared_schema(s, &params));
    let diags = params.finish(&kind.all_keys());
    if diags.has_errors() {
        return Err(diags.to_string());
    }
    step.ok_or_else(|| "did not build".to_owned())
}

/// Builds and runs the operator once over the corpus, timing the run (not the build).
fn measure(op: &Op, dir: &Path, corpus: &CorpusData) -> Result<(Duration, Done), String> {
    let step = build(op, dir)?;
    let fields = Done { records: corpus.rows as u64, bytes: corpus.field_bytes };
    let err = |e: weave_core::StepError| e.to_string();
    let ctx = |seq: usize| StepContext::new(op.name, 0, seq as u64, Default::default());
    let mut outcome = Ok(fields);
    let elapsed = match step {
        Step::Source(mut s) => {
            let bytes = s.files_read().iter().map(|f| std::fs::metadata(f).map_or(0, |m| m.len())).sum();
            time(|| {
                let mut c = ctx(0);
                let mut records = 0;
                loop {
                    match s.next_batch(&mut c) {
                        Ok(Some(b)) => records += b.len() as u64,
                        Ok(None) => break,
                        Err(e) => {
                            outcome = Err(err(e));
                            break;
                        }
                    }
                }
                if outcome.is_ok() {
                    outcome = Ok(Done { records, bytes });
                }
            })
        }
        Step::Transform(t) => time(|| {
            for (k, b) in corpus.batches.iter().enumerate() {
                if let Err(e) = t.apply(b, &mut ctx(k)) {
                    outcome = Err(err(e));
                    break;
                }
            }
        }),
        Step::StatefulTransform(mut t) => time(|| {
            let mut out = Vec::new();
            for (k, b) in corpus.batches.iter().enumerate() {
                out.clear();
                if let Err(e) = t.process(b, &mut ctx(k), &mut out) {
                    outcome = Err(err(e));
                    return;
                }
            }
            if let Err(e) = t.finish(&mut ctx(0), &mut out) {
                outcome = Err(err(e));
            }
        }),
        Step::Merge(mut m) => time(|| {
            let mut out = Vec::new();
            // Batches go to two inputs in turn (real and synthetic, for `mix` and `compare`).
            for (k, b) in corpus.batches.iter().enumerate() {
                out.clear();
                if let Err(e) = m.process(k % 2, b, &mut ctx(k), &mut out) {
                    outcome = Err(err(e));
                    return;
                }
            }
            let done = m
                .input_done(0, &mut ctx(0), &mut out)
                .and_then(|()| m.input_done(1, &mut ctx(0), &mut out))
                .and_then(|()| m.finish(&mut ctx(0), &mut out));
            if let Err(e) = done {
                outcome = Err(err(e));
            }
        }),
        Step::Sink(mut s) => time(|| {
            let mut c = ctx(0);
            for b in &corpus.batches {
                if let Err(e) = s.write(b, &mut c) {
                    outcome = Err(err(e));
                    s.abort();
                    return;
                }
            }
            if let Err(e) = s.commit(&mut c) {
                outcome = Err(err(e));
            }
        }),
    };
    outcome.map(|done| (elapsed, done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operator_builds_and_runs_on_a_small_corpus() {
        let dir = tempfile::tempdir().unwrap();
        let corpus = Corpus::files(dir.path(), 3_000, 9).unwrap();
        assert_eq!(corpus.batches.len(), 1);
        for op in OPS {
            let (_, done) = measure(op, dir.path(), &corpus).unwrap_or_else(|e| panic!("{}: {e}", op.name));
            if op.kind.starts_with("load_") {
                // Each loader reads every row of its file back.
                assert_eq!(done.records, 3_000, "{}", op.name);
                assert!(done.bytes > 0, "{}", op.name);
            }
        }
    }

    #[test]
    fn every_kind_is_measured() {
        let registry = weave_steps::registry();
        let missing: Vec<&str> = registry
            .kinds()
            .map(|k| k.name.as_ref())
            .filter(|name| !OPS.iter().any(|op| op.kind == *name))
            .filter(|name| !ELSEWHERE.iter().any(|(kind, _)| kind == name))
            .collect();
        assert!(missing.is_empty(), "add a line to OPS in xtask/src/bench/ops.rs for: {}", missing.join(", "));
    }
}
