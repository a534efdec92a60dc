//! `io`: a whole data pipeline on a file, through the real executor and the built-in steps,
//! against a hand-written single-pass program doing the same work.
//!
//! One million generated rows (`id`, a messy `text`, a `label`; see [`Corpus`]) are
//! written as a CSV file in a temporary folder. The pipeline, read from a pipeline file as
//! a user would write it, is `load_csv` → `clean` (trim, collapse whitespace, drop texts
//! under 20 characters) → `dedup` (exact, on the text) → `export_jsonl`, run by
//! `weave_exec::run` with `max_concurrent = 1` and `= 2`.
//!
//! The baseline ([`hand_written`]) is what a careful programmer would write for this one
//! job: the csv crate's `ByteRecord` reader, one reused text buffer, the same
//! branch-light trim-and-collapse as the layout scenario's loop, a set of 128-bit blake3
//! keys (the same hash as the step: a collision would silently drop a record, so both
//! keep the same guarantee; the set takes the keys' low bits as its hash, as a careful
//! programmer would, rather than hash a hash again), JSON written by hand into one reused
//! line buffer and one `BufWriter`. No allocation per row. The three outputs must be the
//! same bytes.
//!
//! Each run happens in a child process of its own (`__bench-child io <variant>`), which
//! times itself and reads its peak resident set (`VmHWM`) and its CPU time at the end,
//! so that they are that run's alone. The CPU time, every thread counted, is the cost per
//! row that a loaded machine does not blur (its ratio is the baseline's over the
//! variant's: below 1 the pipeline spends more CPU than the loop). Targets: ≥ 0.8× the baseline's records/s on one thread, ≥ 1.5×
//! on two, a peak RSS under 300 MB.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use weave_steps::{KeySet, write_json_str};

use super::layout::{SPACES, WORDS, trim_collapse};
use super::{Figure, Report, Rng, Target, median, thousands};

/// Rows in the generated file.
const ROWS: usize = 1_000_000;
/// Runs of each variant, interleaved; the median time is reported (five, as the machine
/// is shared and a run's time can double when others build).
const REPS: usize = 5;
const SEED: u64 = 0x10_5ca1e;
/// Cleaned texts shorter than this are dropped.
const MIN_CHARS: usize = 20;

/// The variants: name on the child's command line, and what the report calls it.
const VARIANTS: [(&str, &str); 3] = [
    ("pipeline-1", "pipeline, max_concurrent = 1"),
    ("pipeline-2", "pipeline, max_concurrent = 2"),
    ("hand-written", "hand-written single pass (baseline)"),
];
const BASELINE: usize = 2;

pub(super) fn run(report: &mut Report) {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("io: cannot make a temporary folder: {e}"));
    let input = dir.path().join("input.csv");
    report.progress(format!("writing {} generated rows to {}", thousands(ROWS as u64), input.display()));
    write_csv(&input, ROWS, SEED).unwrap_or_else(|e| panic!("io: cannot write {}: {e}", input.display()));
    let input_bytes = std::fs::metadata(&input).map_or(0, |m| m.len());
    report.progress(format!(
        "{:.1} MB of CSV; {REPS} interleaved runs of each variant, each in a child process",
        input_bytes as f64 / 1e6
    ));

    let outputs: Vec<PathBuf> = VARIANTS.iter().map(|(v, _)| dir.path().join(format!("{v}.jsonl"))).collect();
    let mut runs: Vec<Vec<ChildRun>> = VARIANTS.iter().map(|_| Vec::new()).collect();
    for rep in 0..REPS {
        for k in (0..VARIANTS.len()).map(|k| (k + rep) % VARIANTS.len()) {
            runs[k].push(child_run(VARIANTS[k].0, &input, &outputs[k]));
        }
        if rep == 0 {
            check_same_output(&outputs);
        }
    }
    let records_out = runs[BASELINE][0].records_out;
    let output_bytes = std::fs::metadata(&outputs[BASELINE]).map_or(0, |m| m.len());
    report.progress(format!(
        "{} rows in, {} records out ({:.1} MB of JSONL), the same bytes from every variant",
        thousands(ROWS as u64),
        thousands(records_out),
        output_bytes as f64 / 1e6
    ));
    for (k, (_, name)) in VARIANTS.iter().enumerate().take(BASELINE) {
        let busy = &runs[k][0].busy;
        let ms = |s: &str| busy.get(s).map_or(0.0, |d| d.as_secs_f64() * 1e3);
        report.progress(format!(
            "{name}: time inside each step (first run): load {:.0} ms, clean {:.0} ms, dedup {:.0} ms, export {:.0} ms",
            ms("load"),
            ms("clean"),
            ms("dedup"),
            ms("export")
        ));
    }

    let secs: Vec<f64> = runs.iter().map(|r| median(r.iter().map(|c| c.elapsed).collect()).as_secs_f64()).collect();
    let base = ROWS as f64 / secs[BASELINE];
    for (k, (_, name)) in VARIANTS.iter().enumerate() {
        let per_sec = ROWS as f64 / secs[k];
        let mut fig = Figure::new(format!("{name}: rows/s"), per_sec, "rows/s").ratio(per_sec / base);
        fig = match k {
            0 => fig.target(Target::RatioAtLeast(0.8)),
            1 => fig.target(Target::RatioAtLeast(1.5)),
            _ => fig,
        };
        report.add(fig);
        report.add(
            Figure::new(format!("{name}: CSV in, MB/s"), input_bytes as f64 / 1e6 / secs[k], "MB/s")
                .ratio(per_sec / base),
        );
    }
    // CPU time says what each row costs whatever the other processes on the machine do
    // (the wall time of a shared machine does not): the baseline's over the variant's.
    let cpu: Vec<Option<f64>> = runs
        .iter()
        .map(|r| r.iter().map(|c| c.cpu).collect::<Option<Vec<_>>>().map(|t| median(t).as_secs_f64()))
        .collect();
    if let Some(base_cpu) = cpu[BASELINE] {
        for (k, (_, name)) in VARIANTS.iter().enumerate() {
            if let Some(c) = cpu[k] {
                report.add(Figure::new(format!("{name}: CPU time, every thread"), c, "s").ratio(base_cpu / c));
            }
        }
    }
    let peak = |k: usize| runs[k].iter().map(|r| r.peak_rss).collect::<Option<Vec<u64>>>();
    match (peak(0), peak(1)) {
        (Some(a), Some(b)) => {
            let mb = a.into_iter().chain(b).max().unwrap_or(0) as f64 / 1e6;
            report.add(
                Figure::new("pipeline: peak RSS of the child process (highest)", mb, "MB").target(Target::Below(300.0)),
            );
        }
        _ => report.progress("the peak RSS is not known on this system (no VmHWM in /proc/self/status)"),
    }
    if let Some(h) = peak(BASELINE) {
        let mb = h.into_iter().max().unwrap_or(0) as f64 / 1e6;
        report.add(Figure::new("hand-written: peak RSS of the child process (highest)", mb, "MB"));
    }
}

/// What one child process reported.
#[derive(Debug)]
struct ChildRun {
    elapsed: Duration,
    peak_rss: Option<u64>,
    /// CPU time of the whole process, every thread.
    cpu: Option<Duration>,
    records_out: u64,
    /// Time inside each step of the pipeline.
    busy: HashMap<String, Duration>,
}

fn child_run(variant: &str, input: &Path, output: &Path) -> ChildRun {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("io: cannot find this program: {e}"));
    let out = Command::new(&exe)
        .args(["__bench-child", "io", variant])
        .arg(input)
        .arg(output)
        .output()
        .unwrap_or_else(|e| panic!("io: cannot start {}: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "io: the child process ({variant}) failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let values: HashMap<&str, &str> = stdout.lines().filter_map(|l| l.split_once('=')).collect();
    let number = |key: &str| -> Option<u64> { values.get(key).and_then(|v| v.parse().ok()) };
    let required =
        |key: &str| -> u64 { number(key).unwrap_or_else(|| panic!("io: the child did not report `{key}`:\n{stdout}")) };
    let busy = values
        .iter()
        .filter_map(|(k, v)| Some((k.strip_prefix("busy_ns.")?.to_owned(), Duration::from_nanos(v.parse().ok()?))))
        .collect();
    ChildRun {
        elapsed: Duration::from_nanos(required("elapsed_ns")),
        peak_rss: number("peak_rss"),
        cpu: number("cpu_ns").map(Duration::from_nanos),
        records_out: required("records_out"),
        busy,
    }
}

/// The child's side: `args` are the variant, the input and the output file. Prints
/// `key=value` lines.
///
/// `__bench-child io generate <file.csv>` writes the input alone, to profile a variant by
/// hand (`perf record target/release/xtask __bench-child io pipeline-1 in.csv out.jsonl`).
pub(super) fn child(args: &[String]) -> Result<(), String> {
    if let [generate, path] = args
        && generate == "generate"
    {
        return write_csv(Path::new(path), ROWS, SEED).map_err(|e| format!("cannot write {path}: {e}"));
    }
    let [variant, input, output] = args else {
        return Err("usage: __bench-child io <variant> <input.csv> <output.jsonl>, or io generate <file.csv>".into());
    };
    let (input, output) = (Path::new(input), Path::new(output));
    let start = Instant::now();
    let (records_out, busy) = match variant.as_str() {
        "pipeline-1" => run_pipeline(input, output, 1)?,
        "pipeline-2" => run_pipeline(input, output, 2)?,
        "hand-written" => (hand_written(input, output).map_err(|e| e.to_string())?, Vec::new()),
        other => return Err(format!("unknown variant `{other}`")),
    };
    let elapsed = start.elapsed();
    println!("elapsed_ns={}", elapsed.as_nanos());
    println!("records_out={records_out}");
    for (step, d) in busy {
        println!("busy_ns.{step}={}", d.as_nanos());
    }
    if let Some(p) = super::peak_rss() {
        println!("peak_rss={p}");
    }
    if let Some(cpu) = cpu_time() {
        println!("cpu_ns={}", cpu.as_nanos());
    }
    Ok(())
}

/// The CPU time (user and system, every thread, finished ones too) this process has
/// used, from `/proc/self/stat`, where Linux reports it (in 1/100 s).
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The fields after the command name (which may hold spaces, in parentheses): the
    // 12th and 13th are utime and stime, in clock ticks of 1/100 s (USER_HZ).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The pipeline file the scenario runs, as a user would write it.
pub(super) fn pipeline_file(input: &Path, output: &Path, threads: usize) -> String {
    format!(
        r#"[pipeline]
name = "io"

[resources]
max_concurrent = {threads}

[[step]]
id = "load"
kind = "load_csv"
path = {input:?}

[[step]]
id = "clean"
kind = "clean"
fields = ["text"]
rules = ["trim", "collapse_whitespace", {{ min_chars = {MIN_CHARS} }}]

[[step]]
id = "dedup"
kind = "dedup"
fields = ["text"]

[[step]]
id = "export"
kind = "export_jsonl"
path = {output:?}
"#
    )
}

/// Runs the pipeline through the executor; returns the records written and the time
/// inside each step.
pub(super) fn run_pipeline(
    input: &Path,
    output: &Path,
    threads: usize,
) -> Result<(u64, Vec<(String, Duration)>), String> {
    let dir = output.parent().unwrap_or(Path::new("."));
    let text = pipeline_file(input, output, threads);
    let pipeline = weave_core::Pipeline::from_file_text(dir.join("io.toml"), &text, &weave_steps::registry())
        .map_err(|d| format!("the io pipeline does not build:\n{d}"))?;
    let summary = weave_exec::run(pipeline, weave_exec::ExecOptions::default()).map_err(|e| e.to_string())?;
    let written = summary.step("export").map_or(0, |s| s.records_in);
    Ok((written, summary.steps.iter().map(|s| (s.id.clone(), s.busy)).collect()))
}

/// The baseline: one pass over the CSV file with reused buffers, no allocation per row.
/// Returns the records written.
pub(super) fn hand_written(input: &Path, output: &Path) -> std::io::Result<u64> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut reader = csv::ReaderBuilder::new().buffer_capacity(1 << 20).from_reader(File::open(input)?);
    let header = reader.byte_headers().map_err(|e| bad(e.to_string()))?.clone();
    let column =
        |name: &str| header.iter().position(|h| h == name.as_bytes()).ok_or_else(|| bad(format!("no column {name}")));
    let (id_at, text_at, label_at) = (column("id")?, column("text")?, column("label")?);
    let mut out = BufWriter::with_capacity(1 << 20, File::create(output)?);
    let mut row = csv::ByteRecord::new();
    let mut text = String::with_capacity(1024);
    let mut line = Vec::with_capacity(4096);
    let mut seen = KeySet::default();
    let mut written = 0;
    while reader.read_byte_record(&mut row).map_err(|e| bad(e.to_string()))? {
        let field = |i: usize| {
            std::str::from_utf8(&row[i])
                .map_err(|e| bad(format!("line {}: {e}", row.position().map_or(0, csv::Position::line))))
        };
        let (id, raw, label) = (field(id_at)?, field(text_at)?, field(label_at)?);
        text.clear();
        trim_collapse(raw, &mut text);
        let long_enough = text.len() >= MIN_CHARS && (text.is_ascii() || text.chars().nth(MIN_CHARS - 1).is_some());
        if !long_enough {
            continue;
        }
        let mut key = [0u8; 16];
        key.copy_from_slice(&blake3::hash(text.as_bytes()).as_bytes()[..16]);
        if !seen.insert(u128::from_le_bytes(key)) {
            continue;
        }
        line.clear();
        line.extend_from_slice(b"{\"id\":");
        write_json_str(id, &mut line);
        line.extend_from_slice(b",\"text\":");
        write_json_str(&text, &mut line);
        line.extend_from_slice(b",\"label\":");
        write_json_str(label, &mut line);
        line.extend_from_slice(b"}\n");
        out.write_all(&line)?;
        written += 1;
    }
    out.into_inner().map_err(std::io::IntoInnerError::into_error)?.sync_all()?;
    Ok(written)
}

/// Panics, naming the first differing line, unless every variant wrote the same bytes.
fn check_same_output(outputs: &[PathBuf]) {
    let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("io: cannot read {}: {e}", p.display()));
    let base = read(&outputs[BASELINE]);
    for (k, path) in outputs.iter().enumerate() {
        if let Some(diff) = super::layout::first_difference(VARIANTS[k].0, &read(path), &base) {
            panic!("io: {diff}");
        }
    }
}

/// Labels of the generated rows.
const LABELS: [&str; 5] = ["billing", "shipping", "account", "hardware", "other"];

/// The generated corpus that `io` and `ops` share: rows of an id, a messy text and a
/// label. About 10% of the texts are short (under 20 characters once cleaned) and about
/// 15% repeat one of the last 4,096 texts' words with other whitespace (so that they are
/// exact duplicates once cleaned); the rest are 40 to 270 characters of words with runs of
/// tabs, newlines and Unicode spaces, some quotes, backslashes and control characters.
pub(super) struct Corpus {
    rng: Rng,
    recent: Vec<Vec<usize>>,
    words: Vec<usize>,
    next: usize,
}

impl Corpus {
    pub(super) fn new(seed: u64) -> Self {
        Corpus { rng: Rng::new(seed), recent: Vec::new(), words: Vec::new(), next: 0 }
    }

    /// The next row: writes its text into `text` (cleared first) and returns its id and label.
    pub(super) fn next_row(&mut self, text: &mut String) -> (usize, &'static str) {
        let rng = &mut self.rng;
        self.words.clear();
        if !self.recent.is_empty() && rng.chance(0.15) {
            let k = rng.below(self.recent.len());
            self.words.extend_from_slice(&self.recent[k]);
        } else {
            let (lo, hi) = if rng.chance(0.1) { (2, 14) } else { (40, 270) };
            let target = rng.range(lo, hi);
            let mut len = 0;
            while len < target {
                let w = rng.below(WORDS.len());
                len += WORDS[w].len() + 1;
                self.words.push(w);
            }
            if self.recent.len() < 4096 {
                self.recent.push(self.words.clone());
            } else {
                let slot = rng.below(4096);
                self.recent[slot].clone_from(&self.words);
            }
        }
        text.clear();
        if rng.chance(0.3) {
            text.push_str(rng.pick(SPACES));
        }
        for (i, &w) in self.words.iter().enumerate() {
            if i > 0 {
                text.push_str(if rng.chance(0.8) { " " } else { rng.pick(SPACES) });
            }
            text.push_str(WORDS[w]);
        }
        if rng.chance(0.3) {
            text.push_str(rng.pick(SPACES));
        }
        self.next += 1;
        (self.next, rng.pick(&LABELS))
    }
}

/// Writes `rows` rows of the corpus as CSV with a header `id,text,label`.
pub(super) fn write_csv(path: &Path, rows: usize, seed: u64) -> std::io::Result<()> {
    let mut w = csv::Writer::from_writer(BufWriter::with_capacity(1 << 20, File::create(path)?));
    w.write_record(["id", "text", "label"])?;
    let mut corpus = Corpus::new(seed);
    let mut text = String::new();
    let mut id = String::new();
    for _ in 0..rows {
        let (n, label) = corpus.next_row(&mut text);
        id.clear();
        id.push_str(&n.to_string());
        w.write_record([id.as_bytes(), text.as_bytes(), label.as_bytes()])?;
    }
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pipeline_and_the_hand_written_program_write_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        write_csv(&input, 30_000, 3).unwrap();
        let hand = dir.path().join("hand.jsonl");
        let written = hand_written(&input, &hand).unwrap();
        // The corpus has work for every step: short texts and repeats.
        assert!((20_000..27_000).contains(&written), "{written} of 30,000 kept");
        for threads in [1, 2] {
            let out = dir.path().join(format!("p{threads}.jsonl"));
            let (n, busy) = run_pipeline(&input, &out, threads).unwrap();
            assert_eq!(n, written);
            assert_eq!(busy.len(), 4);
            assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&hand).unwrap(), "{threads} thread(s)");
        }
    }
}
