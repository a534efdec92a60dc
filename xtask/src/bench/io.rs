//! `io` and `prep`: whole data pipelines on a file, through the real executor and the
//! built-in steps, each against a tuned program doing the same work ([`super::tuned`])
//! and, as a second reference, a plain hand-written single pass.
//!
//! One million generated rows (`id`, a messy `text`, a `label`; see [`Corpus`]) are
//! written as a CSV file in a temporary folder. The pipeline, read from a pipeline file as
//! a user would write it, is run by `weave_exec::run` with `max_concurrent = 1` and `= 2`
//! (and `= 8`, for its peak RSS and its output):
//!
//! - `io`: `load_csv` → `clean` (trim, collapse whitespace, drop texts under 20
//!   characters) → `dedup` (exact, on the lower-cased text) → `export_jsonl`;
//! - `prep`: the same with `augment` (the `typos` noiser at moderate frequency) and
//!   `validate` (a completeness check on the text and the label, failing records dropped)
//!   between `dedup` and `export_jsonl`. Its input has 2% of blank labels (empty, or
//!   spaces), so that the check has records to drop.
//!
//! The tuned program runs on 1 and 2 worker threads; Weave at `max_concurrent = N` is
//! compared with it on N. The old baseline ([`hand_written`]) is what a careful programmer
//! would write in one pass: the csv crate's `ByteRecord` reader, one reused text buffer,
//! the same branch-light trim-and-collapse as the layout scenario's loop, a set of 128-bit
//! blake3 keys of the lower-cased text, JSON written by hand into one reused line buffer
//! and one `BufWriter`. For `prep` both call the public noiser (`weave_steps::Typos`) with
//! each record's seed made as the `augment` step makes it (`record_seed`, then
//! `Rng::substream`), through [`Noise`], and skip a record whose label is blank before
//! noising it (where the pipeline noises it first, then drops it: the same output for less
//! work). Every run's output must be the same bytes as Weave's, or the scenario panics.
//!
//! Each run happens in a child process of its own (`__bench-child io|prep <variant>`),
//! which times itself and reads its peak resident set (`VmHWM`) and its CPU time at the
//! end, so that they are that run's alone. The CPU time, every thread counted, is the cost
//! per row that a loaded machine does not blur (its ratio is the tuned program's over the
//! variant's: below 1 the variant spends more CPU). Targets (issue 15): Weave ≥ 0.8× the
//! tuned program's rows/s on 1 thread and on 2, ≥ 1.7× its own 1-thread figure on 2, a
//! peak RSS of at most 100 MB.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use weave_steps::{
    Frequency, KeySet, Noiser, Rng as NoiseRng, Scratch, Severity, Typos, hash_bytes, record_seed, write_json_str,
};

use super::layout::{SPACES, WORDS, trim_collapse};
use super::{Figure, Report, Rng, Target, median, thousands};

/// Rows in the generated file.
const ROWS: usize = 1_000_000;
/// Runs of each variant, interleaved; the median time is reported (five, as the machine
/// is shared and a run's time can double when others build).
const REPS: usize = 5;
const SEED: u64 = 0x10_5ca1e;
/// Cleaned texts shorter than this are dropped.
pub(super) const MIN_CHARS: usize = 20;
/// `prep`: the share of rows whose label is blank, for the completeness check to drop.
const BLANK_LABELS: f64 = 0.02;
/// `prep`: the pipeline's seed and the augment step's id, from which each record's seed
/// derives.
const PREP_SEED: u64 = 42;
const AUGMENT_ID: &str = "augment";

/// The variants: name on the child's command line, and what the report calls it.
/// `pipeline-8` has more workers than the machine's cores: its memory must not follow
/// the thread count (target: the same peak RSS bound), its output must be the same bytes.
const VARIANTS: [(&str, &str); 6] = [
    ("pipeline-1", "Weave, max_concurrent = 1"),
    ("pipeline-2", "Weave, max_concurrent = 2"),
    ("tuned-1", "tuned baseline, 1 worker thread"),
    ("tuned-2", "tuned baseline, 2 worker threads"),
    ("hand-written", "old hand-written single pass"),
    ("pipeline-8", "Weave, max_concurrent = 8"),
];
/// Indexes into [`VARIANTS`].
const WEAVE_1: usize = 0;
const WEAVE_2: usize = 1;
const TUNED_1: usize = 2;
const TUNED_2: usize = 3;
const WEAVE_8: usize = 5;

/// Which of the two scenarios: they share the input's generator, the runner, the
/// figures and the hand-written program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Job {
    /// load → clean → dedup → export.
    Io,
    /// load → clean → dedup → augment (typos) → validate (completeness) → export.
    Prep,
}

impl Job {
    /// The scenario's name, as `cargo xtask bench` and `__bench-child` take it.
    fn name(self) -> &'static str {
        match self {
            Job::Io => "io",
            Job::Prep => "prep",
        }
    }

    /// Writes the scenario's input: [`ROWS`] rows of the corpus, with blank labels for
    /// `prep`.
    fn write_input(self, path: &Path) -> std::io::Result<()> {
        match self {
            Job::Io => write_csv(path, ROWS, SEED),
            Job::Prep => write_csv_with(path, ROWS, SEED, BLANK_LABELS),
        }
    }
}

/// The `io` scenario.
pub(super) fn run(report: &mut Report) {
    measure(Job::Io, report);
}

/// The `prep` scenario.
pub(super) fn run_prep(report: &mut Report) {
    measure(Job::Prep, report);
}

fn measure(job: Job, report: &mut Report) {
    let name = job.name();
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{name}: cannot make a temporary folder: {e}"));
    let input = dir.path().join("input.csv");
    report.progress(format!("writing {} generated rows to {}", thousands(ROWS as u64), input.display()));
    job.write_input(&input).unwrap_or_else(|e| panic!("{name}: cannot write {}: {e}", input.display()));
    let input_bytes = std::fs::metadata(&input).map_or(0, |m| m.len());
    report.progress(format!(
        "{:.1} MB of CSV; {REPS} interleaved runs of each variant, each in a child process",
        input_bytes as f64 / 1e6
    ));

    let outputs: Vec<PathBuf> = VARIANTS.iter().map(|(v, _)| dir.path().join(format!("{v}.jsonl"))).collect();
    let mut runs: Vec<Vec<ChildRun>> = VARIANTS.iter().map(|_| Vec::new()).collect();
    for rep in 0..REPS {
        for k in (0..VARIANTS.len()).map(|k| (k + rep) % VARIANTS.len()) {
            runs[k].push(child_run(job, VARIANTS[k].0, &input, &outputs[k]));
        }
        // Every repetition: the tuned baseline is parallel, so a race would show as a
        // difference in some run, not necessarily the first.
        check_same_output(job, &outputs);
    }
    let records_out = runs[TUNED_1][0].records_out;
    let output_bytes = std::fs::metadata(&outputs[TUNED_1]).map_or(0, |m| m.len());
    report.progress(format!(
        "{} rows in, {} records out ({:.1} MB of JSONL), the same bytes from every variant in every run",
        thousands(ROWS as u64),
        thousands(records_out),
        output_bytes as f64 / 1e6
    ));
    for k in [WEAVE_1, WEAVE_2] {
        let steps: Vec<String> =
            runs[k][0].busy.iter().map(|(s, d)| format!("{s} {:.0} ms", d.as_secs_f64() * 1e3)).collect();
        report.progress(format!("{}: time inside each step (first run): {}", VARIANTS[k].1, steps.join(", ")));
    }

    // Each variant's rows/s, against the tuned baseline on as many threads (Weave's
    // max_concurrent counts every thread it runs; the tuned baseline's count is its
    // workers, beside which a reader, a sequencer and a writer thread do little).
    let secs: Vec<f64> = runs.iter().map(|r| median(r.iter().map(|c| c.elapsed).collect()).as_secs_f64()).collect();
    let per_sec: Vec<f64> = secs.iter().map(|s| ROWS as f64 / s).collect();
    let against = |k: usize| match k {
        WEAVE_2 | TUNED_2 | WEAVE_8 => TUNED_2,
        _ => TUNED_1,
    };
    for (k, (_, variant)) in VARIANTS.iter().enumerate() {
        let mut fig =
            Figure::new(format!("{variant}: rows/s"), per_sec[k], "rows/s").ratio(per_sec[k] / per_sec[against(k)]);
        if matches!(k, WEAVE_1 | WEAVE_2) {
            fig = fig.target(Target::RatioAtLeast(0.8));
        }
        report.add(fig);
    }
    let own = per_sec[WEAVE_2] / per_sec[WEAVE_1];
    report.add(
        Figure::new("Weave, max_concurrent = 2 over max_concurrent = 1", own, "×")
            .ratio(own)
            .target(Target::RatioAtLeast(1.7)),
    );
    let tuned = per_sec[TUNED_2] / per_sec[TUNED_1];
    report.add(Figure::new("tuned baseline, 2 worker threads over 1", tuned, "×").ratio(tuned));

    // CPU time says what each row costs whatever the other processes on the machine do
    // (the wall time of a shared machine does not): the tuned baseline's over the variant's.
    let cpu: Vec<Option<f64>> = runs
        .iter()
        .map(|r| r.iter().map(|c| c.cpu).collect::<Option<Vec<_>>>().map(|t| median(t).as_secs_f64()))
        .collect();
    for (k, (_, variant)) in VARIANTS.iter().enumerate() {
        if let (Some(c), Some(base)) = (cpu[k], cpu[against(k)]) {
            report.add(Figure::new(format!("{variant}: CPU time, every thread"), c, "s").ratio(base / c));
        }
    }
    // Cores kept busy (CPU time over wall time): `max_concurrent = N` means N busy cores,
    // stage threads included, so Weave should sit just under N; a shared machine that
    // lends fewer cores shows here too, in the tuned program's figure as well.
    for k in [WEAVE_1, WEAVE_2, TUNED_1, TUNED_2] {
        if let Some(c) = cpu[k] {
            report.add(Figure::new(format!("{}: cores busy (CPU time / wall time)", VARIANTS[k].1), c / secs[k], ""));
        }
    }
    for (k, (_, variant)) in VARIANTS.iter().enumerate() {
        let Some(peaks) = runs[k].iter().map(|r| r.peak_rss).collect::<Option<Vec<u64>>>() else {
            report.progress("the peak RSS is not known on this system (no VmHWM in /proc/self/status)");
            break;
        };
        let mb = peaks.into_iter().max().unwrap_or(0) as f64 / 1e6;
        let mut fig = Figure::new(format!("{variant}: peak RSS (highest of {REPS} runs)"), mb, "MB");
        if matches!(k, WEAVE_1 | WEAVE_2 | WEAVE_8) {
            fig = fig.target(Target::AtMost(100.0));
        }
        report.add(fig);
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
    /// Time inside each step of the pipeline, in the pipeline's order.
    busy: Vec<(String, Duration)>,
}

fn child_run(job: Job, variant: &str, input: &Path, output: &Path) -> ChildRun {
    let name = job.name();
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("{name}: cannot find this program: {e}"));
    let out = Command::new(&exe)
        .args(["__bench-child", name, variant])
        .arg(input)
        .arg(output)
        .output()
        .unwrap_or_else(|e| panic!("{name}: cannot start {}: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{name}: the child process ({variant}) failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let pairs: Vec<(&str, &str)> = stdout.lines().filter_map(|l| l.split_once('=')).collect();
    let number = |key: &str| -> Option<u64> { pairs.iter().find(|(k, _)| *k == key).and_then(|(_, v)| v.parse().ok()) };
    let required = |key: &str| -> u64 {
        number(key).unwrap_or_else(|| panic!("{name}: the child did not report `{key}`:\n{stdout}"))
    };
    let busy = pairs
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

/// The child's side of scenario `name` (`io` or `prep`): `args` are the variant, the input
/// and the output file. Prints `key=value` lines.
///
/// `__bench-child <name> generate <file.csv>` writes the input alone, to profile a variant
/// by hand (`perf record target/release/xtask __bench-child prep pipeline-1 in.csv out.jsonl`).
pub(super) fn child(name: &str, args: &[String]) -> Result<(), String> {
    let job = match name {
        "io" => Job::Io,
        "prep" => Job::Prep,
        other => return Err(format!("no child task {other:?} in the io module")),
    };
    if let [generate, path] = args
        && generate == "generate"
    {
        return job.write_input(Path::new(path)).map_err(|e| format!("cannot write {path}: {e}"));
    }
    let [variant, input, output] = args else {
        return Err(format!(
            "usage: __bench-child {name} <variant> <input.csv> <output.jsonl>, or {name} generate <file.csv>"
        ));
    };
    let (input, output) = (Path::new(input), Path::new(output));
    let start = Instant::now();
    let (records_out, busy) = match variant.as_str() {
        "pipeline-1" => run_pipeline(job, input, output, 1)?,
        "pipeline-2" => run_pipeline(job, input, output, 2)?,
        "pipeline-8" => run_pipeline(job, input, output, 8)?,
        "tuned-1" => (super::tuned::run(job, input, output, 1, super::tuned::PIECE)?, Vec::new()),
        "tuned-2" => (super::tuned::run(job, input, output, 2, super::tuned::PIECE)?, Vec::new()),
        "hand-written" => (hand_written(job, input, output).map_err(|e| e.to_string())?, Vec::new()),
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
    if let Some(cpu) = super::cpu_time() {
        println!("cpu_ns={}", cpu.as_nanos());
    }
    Ok(())
}

/// The pipeline file the scenario runs, as a user would write it.
pub(super) fn pipeline_file(job: Job, input: &Path, output: &Path, threads: usize) -> String {
    let name = job.name();
    let (seed, prep) = match job {
        Job::Io => (String::new(), String::new()),
        Job::Prep => (
            format!("seed = {PREP_SEED}\n"),
            format!(
                r#"
[[step]]
id = "{AUGMENT_ID}"
kind = "augment"
noiser = {{ kind = "typos", frequency = "moderate" }}

[[step]]
id = "validate"
kind = "validate"
checks = [{{ check = "completeness", fields = ["text", "label"] }}]
on_fail = "drop"
"#
            ),
        ),
    };
    format!(
        r#"[pipeline]
name = "{name}"
{seed}
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
normalize = ["lowercase"]
{prep}
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
    job: Job,
    input: &Path,
    output: &Path,
    threads: usize,
) -> Result<(u64, Vec<(String, Duration)>), String> {
    let summary = run_summary(job, input, output, threads)?;
    let written = summary.step("export").map_or(0, |s| s.records_in);
    Ok((written, summary.steps.iter().map(|s| (s.id.clone(), s.busy)).collect()))
}

/// Runs the pipeline through the executor and returns its summary.
fn run_summary(job: Job, input: &Path, output: &Path, threads: usize) -> Result<weave_exec::RunSummary, String> {
    let dir = output.parent().unwrap_or(Path::new("."));
    let text = pipeline_file(job, input, output, threads);
    let name = job.name();
    let pipeline =
        weave_core::Pipeline::from_file_text(dir.join(format!("{name}.toml")), &text, &weave_steps::registry())
            .map_err(|d| format!("the {name} pipeline does not build:\n{d}"))?;
    weave_exec::run(pipeline, weave_exec::ExecOptions::default()).map_err(|e| e.to_string())
}

/// What `prep`'s `augment` step does to a record, by hand: the same public noiser, each
/// record seeded as the step seeds it, into reused buffers. Both baselines use it.
pub(super) struct Noise {
    typos: Typos,
    /// The step id's hash, which goes into every record's seed.
    step_hash: u64,
    /// `,"text_noisy_noiser":"typos(...)","text_noisy_seed":"`, escaped once.
    middle: Vec<u8>,
    scratch: Scratch,
    noisy: String,
}

impl Noise {
    pub(super) fn new() -> Self {
        let typos = Typos::new(Frequency::Moderate, Severity::Mild);
        let mut middle = b",\"text_noisy_noiser\":".to_vec();
        write_json_str(&format!("{}({})", typos.name(), typos.settings()), &mut middle);
        middle.extend_from_slice(b",\"text_noisy_seed\":\"");
        Noise {
            typos,
            step_hash: hash_bytes(AUGMENT_ID.as_bytes()),
            middle,
            scratch: Scratch::default(),
            noisy: String::new(),
        }
    }

    /// Noises `text` and appends the three fields `augment` writes to `line`, the noisy
    /// text escaped by `json` (a JSON string writer).
    pub(super) fn write(&mut self, text: &str, line: &mut Vec<u8>, json: fn(&str, &mut Vec<u8>)) {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let seed = record_seed(PREP_SEED, self.step_hash, text);
        self.noisy.clear();
        self.typos.apply(text, &mut NoiseRng::substream(seed, 0), &mut self.scratch, &mut self.noisy);
        line.extend_from_slice(b",\"text_noisy\":");
        json(&self.noisy, line);
        line.extend_from_slice(&self.middle);
        line.extend((0..16).rev().map(|shift| HEX[((seed >> (shift * 4)) & 0xf) as usize]));
        line.push(b'"');
    }
}

/// The baseline: one pass over the CSV file with reused buffers, no allocation per row.
/// Returns the records written.
pub(super) fn hand_written(job: Job, input: &Path, output: &Path) -> std::io::Result<u64> {
    let bad = |what: String| std::io::Error::new(std::io::ErrorKind::InvalidData, what);
    let mut reader = csv::ReaderBuilder::new().buffer_capacity(1 << 20).from_reader(File::open(input)?);
    let header = reader.byte_headers().map_err(|e| bad(e.to_string()))?.clone();
    let column =
        |name: &str| header.iter().position(|h| h == name.as_bytes()).ok_or_else(|| bad(format!("no column {name}")));
    let (id_at, text_at, label_at) = (column("id")?, column("text")?, column("label")?);
    let mut out = BufWriter::with_capacity(1 << 20, File::create(output)?);
    let mut row = csv::ByteRecord::new();
    let mut text = String::with_capacity(1024);
    let mut lower = Vec::with_capacity(1024);
    let mut line = Vec::with_capacity(4096);
    let mut seen = KeySet::default();
    let mut noise = (job == Job::Prep).then(Noise::new);
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
        // The key of the lower-cased text, lower-cased as the step does it.
        lower.clear();
        if text.is_ascii() {
            lower.extend(text.bytes().map(|b| b.to_ascii_lowercase()));
        } else {
            let mut b = [0u8; 4];
            for c in text.chars().flat_map(char::to_lowercase) {
                lower.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
            }
        }
        let mut key = [0u8; 16];
        key.copy_from_slice(&blake3::hash(&lower).as_bytes()[..16]);
        if !seen.insert(u128::from_le_bytes(key)) {
            continue;
        }
        // The completeness check, before the noise it would throw away.
        if noise.is_some() && (text.trim().is_empty() || label.trim().is_empty()) {
            continue;
        }
        line.clear();
        line.extend_from_slice(b"{\"id\":");
        write_json_str(id, &mut line);
        line.extend_from_slice(b",\"text\":");
        write_json_str(&text, &mut line);
        line.extend_from_slice(b",\"label\":");
        write_json_str(label, &mut line);
        if let Some(noise) = &mut noise {
            noise.write(&text, &mut line, write_json_str);
        }
        line.extend_from_slice(b"}\n");
        out.write_all(&line)?;
        written += 1;
    }
    out.into_inner().map_err(std::io::IntoInnerError::into_error)?.sync_all()?;
    Ok(written)
}

/// Panics, naming the first differing line, unless every variant wrote the same bytes as
/// Weave on one thread.
fn check_same_output(job: Job, outputs: &[PathBuf]) {
    let name = job.name();
    let read = |p: &Path| std::fs::read(p).unwrap_or_else(|e| panic!("{name}: cannot read {}: {e}", p.display()));
    let base = read(&outputs[WEAVE_1]);
    for (k, path) in outputs.iter().enumerate() {
        if let Some(diff) = super::layout::first_difference(VARIANTS[k].0, &read(path), &base) {
            panic!("{name}: {diff}");
        }
    }
}

/// Labels of the generated rows.
const LABELS: [&str; 5] = ["billing", "shipping", "account", "hardware", "other"];

/// The generated corpus that `io`, `prep` and `ops` share: rows of an id, a messy text and
/// a label. About 10% of the texts are short (under 20 characters once cleaned) and about
/// 15% repeat one of the last 4,096 texts' words with other whitespace (so that they are
/// exact duplicates once cleaned); the rest are 40 to 270 characters of words with runs of
/// tabs, newlines and Unicode spaces, some quotes, backslashes and control characters.
pub(super) struct Corpus {
    rng: Rng,
    recent: Vec<Vec<usize>>,
    words: Vec<usize>,
    next: usize,
    /// A stream of its own and the share of labels it blanks, so that the rest of the
    /// corpus is the same with blank labels or without.
    blanks: Option<(Rng, f64)>,
}

impl Corpus {
    pub(super) fn new(seed: u64) -> Self {
        Corpus { rng: Rng::new(seed), recent: Vec::new(), words: Vec::new(), next: 0, blanks: None }
    }

    /// The same rows, but a share `blank_labels` of them (drawn at random) have a blank
    /// label: empty, or two spaces, half of the time each.
    pub(super) fn with_blank_labels(seed: u64, blank_labels: f64) -> Self {
        let blanks = Some((Rng::new(seed ^ 0xb1a2_c3d4), blank_labels));
        Corpus { blanks, ..Corpus::new(seed) }
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
        let label = rng.pick(&LABELS);
        if let Some((r, share)) = &mut self.blanks
            && r.chance(*share)
        {
            return (self.next, if r.chance(0.5) { "" } else { "  " });
        }
        (self.next, label)
    }
}

/// Writes `rows` rows of the corpus as CSV with a header `id,text,label`.
pub(super) fn write_csv(path: &Path, rows: usize, seed: u64) -> std::io::Result<()> {
    write_csv_with(path, rows, seed, 0.0)
}

/// [`write_csv`] with a share `blank_labels` of blank labels (see
/// [`Corpus::with_blank_labels`]).
fn write_csv_with(path: &Path, rows: usize, seed: u64, blank_labels: f64) -> std::io::Result<()> {
    let mut w = csv::Writer::from_writer(BufWriter::with_capacity(1 << 20, File::create(path)?));
    w.write_record(["id", "text", "label"])?;
    let mut corpus = Corpus::with_blank_labels(seed, blank_labels);
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
        let written = hand_written(Job::Io, &input, &hand).unwrap();
        // The corpus has work for every step: short texts and repeats.
        assert!((20_000..27_000).contains(&written), "{written} of 30,000 kept");
        for threads in [1, 2] {
            let out = dir.path().join(format!("p{threads}.jsonl"));
            let (n, busy) = run_pipeline(Job::Io, &input, &out, threads).unwrap();
            assert_eq!(n, written);
            assert_eq!(busy.len(), 4);
            assert_eq!(std::fs::read(&out).unwrap(), std::fs::read(&hand).unwrap(), "{threads} thread(s)");
        }
        assert_tuned_writes(Job::Io, &input, &std::fs::read(&hand).unwrap());
    }

    /// Checks that the tuned baseline writes `want` on 1 to 3 workers, with pieces from
    /// a few records (so that records and quoted newlines straddle many cuts) to the size
    /// it is measured with.
    fn assert_tuned_writes(job: Job, input: &Path, want: &[u8]) {
        let out = input.with_file_name("tuned.jsonl");
        for (threads, piece) in [(1, super::super::tuned::PIECE), (2, 4096), (3, 300), (2, 64)] {
            let n = super::super::tuned::run(job, input, &out, threads, piece).unwrap();
            let got = std::fs::read(&out).unwrap();
            assert_eq!(n as usize, want.iter().filter(|b| **b == b'\n').count());
            if let Some(diff) = super::super::layout::first_difference("tuned", &got, want) {
                panic!("{threads} worker(s), pieces of {piece} bytes: {diff}");
            }
        }
    }

    #[test]
    fn the_tuned_baseline_refuses_input_it_was_not_written_for() {
        let dir = tempfile::tempdir().unwrap();
        let (input, out) = (dir.path().join("in.csv"), dir.path().join("out.jsonl"));
        std::fs::write(&input, "id,label,text\n1,a,b\n").unwrap();
        let e = super::super::tuned::run(Job::Io, &input, &out, 1, 64).unwrap_err();
        assert!(e.contains("id,text,label"), "{e}");
        std::fs::write(&input, "id,text,label\n1,\"a long enough text to be kept here\",x,extra\n").unwrap();
        let e = super::super::tuned::run(Job::Io, &input, &out, 2, 64).unwrap_err();
        assert!(e.contains("three fields"), "{e}");
        std::fs::write(&input, "id,text,label\n1,\"an unterminated quote that goes on\n").unwrap();
        let e = super::super::tuned::run(Job::Io, &input, &out, 1, 64).unwrap_err();
        assert!(e.contains("unterminated"), "{e}");
    }

    #[test]
    fn blank_labels_leave_the_rest_of_the_corpus_as_it_was() {
        let (mut plain, mut blanks) = (Corpus::new(5), Corpus::with_blank_labels(5, 0.1));
        let (mut a, mut b) = (String::new(), String::new());
        let mut blank = 0;
        for _ in 0..10_000 {
            let (ia, la) = plain.next_row(&mut a);
            let (ib, lb) = blanks.next_row(&mut b);
            assert_eq!((ia, &a), (ib, &b));
            if lb.trim().is_empty() {
                blank += 1;
            } else {
                assert_eq!(la, lb);
            }
        }
        assert!((800..1200).contains(&blank), "{blank} blank labels of 10,000 at 10%");
    }

    #[test]
    fn prep_pipeline_and_hand_written_program_write_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.csv");
        write_csv_with(&input, 30_000, 3, BLANK_LABELS).unwrap();
        let hand = dir.path().join("hand.jsonl");
        let written = hand_written(Job::Prep, &input, &hand).unwrap();
        let hand_bytes = std::fs::read(&hand).unwrap();
        for threads in [1, 2] {
            let out = dir.path().join(format!("p{threads}.jsonl"));
            let summary = run_summary(Job::Prep, &input, &out, threads).unwrap();
            let ids: Vec<&str> = summary.steps.iter().map(|s| s.id.as_str()).collect();
            assert_eq!(ids, ["load", "clean", "dedup", "augment", "validate", "export"]);
            assert_eq!(summary.step("export").map(|s| s.records_in), Some(written));
            // Every step had work: the completeness check dropped the blank labels that
            // cleaning and dedup left (about 2% of them), and nothing else.
            let drops = |id: &str| summary.step(id).map_or(0, |s| s.dropped.iter().map(|(_, n)| n).sum::<u64>());
            assert!(drops("clean") > 2_000 && drops("dedup") > 2_000, "{:?}", summary.steps);
            let validate = summary.step("validate").unwrap();
            let blank = validate.dropped.iter().find(|(r, _)| r.ends_with("`label` empty")).map_or(0, |(_, n)| *n);
            assert!((300..700).contains(&blank), "{:?}", validate.dropped);
            assert_eq!(drops("validate"), blank, "{:?}", validate.dropped);
            assert_eq!(std::fs::read(&out).unwrap(), hand_bytes, "{threads} thread(s)");
        }
        assert_tuned_writes(Job::Prep, &input, &hand_bytes);

        // What the records hold: the fields augment writes, after the original ones, and
        // noise where the typos noiser's rate says.
        let text = String::from_utf8(hand_bytes).unwrap();
        let (mut lines, mut noised) = (0, 0);
        for line in text.lines() {
            let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).unwrap();
            // The fields in the batch's order (serde_json's map sorts them, so look at the line).
            let fields = ["id", "text", "label", "text_noisy", "text_noisy_noiser", "text_noisy_seed"];
            let at: Vec<Option<usize>> = fields.iter().map(|f| line.find(&format!("\"{f}\":"))).collect();
            assert!(v.len() == 6 && at.is_sorted() && at[0] == Some(1), "{line}");
            assert!(LABELS.contains(&v["label"].as_str().unwrap()), "{line}");
            assert_eq!(v["text_noisy_noiser"], "typos(frequency=moderate,severity=mild)");
            let seed = v["text_noisy_seed"].as_str().unwrap();
            assert!(seed.len() == 16 && seed.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");
            lines += 1;
            noised += usize::from(v["text"] != v["text_noisy"]);
        }
        assert_eq!(lines as u64, written);
        // At 10% of words, nearly every text of 40 characters or more gets some noise.
        assert!(noised * 10 > lines * 8, "{noised} of {lines} noised");
    }
}
