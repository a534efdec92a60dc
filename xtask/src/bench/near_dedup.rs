//! `near_dedup`: 1,000,000 generated text records through the `near_dedup` step (default
//! keys: word 5-shingles, 16 bands of 7 rows, threshold 0.8): records per second, peak
//! memory, and how many planted near duplicates it finds.
//!
//! The source generates the records as it goes (so the input is never all in memory): 50
//! to 80 words (about 450 bytes) drawn from a 20,000-word made-up vocabulary with a
//! Zipf-like spread of frequencies (so common words and phrases recur across records, as
//! in real text), with capitals and punctuation. One record in ten (after the first
//! 1,000) is a planted near duplicate of an earlier original: the same words restyled
//! (other capitals and punctuation: identical once normalised), a word added at the end or
//! removed at the start, or one word replaced anywhere. After the run, each plant's exact
//! Jaccard similarity to its original (same shingles as the step's defaults) says whether
//! it is truly a near duplicate at 0.8; the figures are recall over those, and precision
//! over every dropped record (any other record dropped counts as a false drop).
//!
//! Each run is a child process (`__bench-child near_dedup <variant>`) so that its peak
//! resident set (`VmHWM`) is its own. The variants: `near` (the step), `exact` (the
//! baseline: the `dedup` step on `text`, exact duplicates only, 16 bytes per distinct
//! record), and `pass` (generator and sink alone, the floor of both). Besides records per
//! second, each child reports its CPU time: on a machine shared with other work it is
//! steadier than elapsed time, and less the `pass` child's it is what the step costs.
//! Targets: the near-dedup child's peak RSS below 500 MB; recall ≥ 90% and precision
//! ≥ 95% on the plants, as the step's quality test asks of its smaller corpus.

use std::collections::HashMap;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use weave_core::{
    Batch, Column, ConfTable, DataType, Field, Params, PrimitiveColumn, Schema, SourceFile, Step, StrColumn,
};

use super::steps::{builder, sink, source};
use super::{Figure, Report, Rng, Target, cpu_time, median, peak_rss, thousands};

/// Records per run.
const RECORDS: u64 = 1_000_000;
/// Rows per batch from the source.
const BATCH: u64 = 8192;
/// Runs of each variant, each in a child process; the median time and the highest RSS are
/// reported.
const REPS: usize = 3;
const SEED: u64 = 0x6e65_6172_6475_7073;
/// Words in the made-up vocabulary.
const VOCABULARY: usize = 20_000;
/// The similarity at which a plant counts as a near duplicate (the step's default).
const THRESHOLD: f64 = 0.8;
/// The step's default shingle size, for the exact similarities.
const SHINGLE: usize = 5;

/// The variants, each run in a child process: what sits between the source and the sink.
const VARIANTS: [(&str, &str); 3] = [
    ("near", "near_dedup (defaults)"),
    ("exact", "dedup on text (exact, the baseline)"),
    ("pass", "generator and sink alone"),
];

pub(super) fn run(report: &mut Report) {
    report.progress(format!(
        "{} generated records of 50–80 words, 10% planted near duplicates; {REPS} runs of each variant, each in a child process",
        thousands(RECORDS)
    ));
    let mut results: HashMap<&str, Vec<ChildRun>> = HashMap::new();
    for _ in 0..REPS {
        for (variant, _) in VARIANTS {
            let r = child_run(variant);
            assert_eq!(r.records, RECORDS, "near_dedup: the source did not make every record ({variant})");
            results.entry(variant).or_default().push(r);
        }
    }
    let rate = |v: &str| RECORDS as f64 / median(results[v].iter().map(|r| r.elapsed).collect()).as_secs_f64();
    let rss = |v: &str| {
        results[v].iter().map(|r| r.peak_rss).collect::<Option<Vec<u64>>>().map(|v| v.into_iter().max().unwrap_or(0))
    };
    let near = &results["near"][0];
    for (variant, what) in VARIANTS {
        let r = &results[variant][0];
        report.progress(format!(
            "{what}: {} records/s, {} kept, peak RSS {}",
            thousands(rate(variant) as u64),
            thousands(r.kept),
            rss(variant).map_or_else(|| "unknown".to_owned(), |b| format!("{:.0} MB", b as f64 / 1e6))
        ));
    }
    report.progress(format!(
        "plants: {} near duplicates at {THRESHOLD} by exact Jaccard ({} dropped), {} below it ({} dropped); {} other records dropped",
        thousands(near.plants_near),
        thousands(near.plants_near_dropped),
        thousands(near.plants_far),
        thousands(near.plants_far_dropped),
        thousands(near.others_dropped)
    ));
    let busy = median(results["near"].iter().map(|r| r.step_busy).collect());
    report.add(
        Figure::new("near_dedup: records per second (generator to sink)", rate("near"), "records/s")
            .ratio(rate("near") / rate("exact")),
    );
    report.add(Figure::new("near_dedup: time in the step per record", busy.as_secs_f64() * 1e6 / RECORDS as f64, "µs"));
    report.add(Figure::new("exact dedup (baseline): records per second", rate("exact"), "records/s").ratio(1.0));
    report.add(Figure::new("generator and sink alone: records per second", rate("pass"), "records/s"));
    // CPU time is steadier than elapsed time on a shared machine: the step's cost per
    // record is the run's CPU time less that of the generator and sink alone.
    let cpu = |v: &str| results[v].iter().map(|r| r.cpu).collect::<Option<Vec<Duration>>>().map(median);
    if let (Some(n), Some(e), Some(p)) = (cpu("near"), cpu("exact"), cpu("pass")) {
        let per_record = |d: Duration| d.saturating_sub(p).as_secs_f64() * 1e6 / RECORDS as f64;
        report.add(Figure::new(
            "near_dedup: CPU time per record (all threads, less the generator's)",
            per_record(n),
            "µs",
        ));
        report.add(Figure::new("exact dedup: CPU time per record (less the generator's)", per_record(e), "µs"));
    }
    match (rss("near"), rss("exact"), rss("pass")) {
        (Some(n), Some(e), Some(p)) => {
            report.add(
                Figure::new("near_dedup: peak RSS of the child (highest)", n as f64 / 1e6, "MB")
                    .target(Target::Below(500.0)),
            );
            report.add(Figure::new("exact dedup: peak RSS of the child (highest)", e as f64 / 1e6, "MB"));
            report.add(Figure::new("generator and sink alone: peak RSS (highest)", p as f64 / 1e6, "MB"));
            report.add(Figure::new(
                "near_dedup: peak RSS over the generator's, per record kept",
                n.saturating_sub(p) as f64 / near.kept as f64,
                "bytes",
            ));
        }
        _ => report.progress("the peak RSS is not known on this system (no VmHWM in /proc/self/status)"),
    }
    let dropped = RECORDS - near.kept;
    report.add(
        Figure::new(
            "recall: plants at Jaccard ≥ 0.8 dropped",
            100.0 * near.plants_near_dropped as f64 / near.plants_near as f64,
            "%",
        )
        .target(Target::AtLeast(90.0)),
    );
    report.add(
        Figure::new(
            "precision: dropped records that are such plants",
            100.0 * near.plants_near_dropped as f64 / dropped as f64,
            "%",
        )
        .target(Target::AtLeast(95.0)),
    );
}

/// What one child process reported.
#[derive(Debug)]
struct ChildRun {
    peak_rss: Option<u64>,
    elapsed: Duration,
    /// CPU time of the run, every thread together.
    cpu: Option<Duration>,
    step_busy: Duration,
    records: u64,
    kept: u64,
    plants_near: u64,
    plants_near_dropped: u64,
    plants_far: u64,
    plants_far_dropped: u64,
    others_dropped: u64,
}

/// Runs `variant` in a child process and reads its report.
fn child_run(variant: &str) -> ChildRun {
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("near_dedup: cannot find this program: {e}"));
    let out = Command::new(&exe)
        .args(["__bench-child", "near_dedup", variant])
        .output()
        .unwrap_or_else(|e| panic!("near_dedup: cannot start {}: {e}", exe.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "near_dedup: the child process failed ({}):\n{stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let values: HashMap<&str, &str> = stdout.lines().filter_map(|l| l.split_once('=')).collect();
    let number = |key: &str| -> Option<u64> { values.get(key).and_then(|v| v.parse().ok()) };
    let required = |key: &str| -> u64 {
        number(key).unwrap_or_else(|| panic!("near_dedup: the child did not report `{key}`:\n{stdout}"))
    };
    ChildRun {
        peak_rss: number("peak_rss"),
        elapsed: Duration::from_nanos(required("elapsed_ns")),
        cpu: number("cpu_ns").map(Duration::from_nanos),
        step_busy: Duration::from_nanos(required("step_busy_ns")),
        records: required("records"),
        kept: required("kept"),
        plants_near: required("plants_near"),
        plants_near_dropped: required("plants_near_dropped"),
        plants_far: required("plants_far"),
        plants_far_dropped: required("plants_far_dropped"),
        others_dropped: required("others_dropped"),
    }
}

/// The child's side: runs `variant` once and prints `key=value` lines on stdout.
pub(super) fn child(variant: &str) -> Result<(), String> {
    let middle = match variant {
        "near" => Some(("near_dedup", "")),
        "exact" => Some(("dedup", "fields = [\"text\"]")),
        "pass" => None,
        other => return Err(format!("unknown variant `{other}`")),
    };
    let corpus = Arc::new(Corpus::new());
    let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int), Field::new("text", DataType::Str)]));
    let gen_corpus = Arc::clone(&corpus);
    let mut next = 0u64;
    let mut b = builder("near_dedup", 2).step(
        "generate",
        source("generate", move |_| {
            if next == RECORDS {
                return Ok(None);
            }
            let end = (next + BATCH).min(RECORDS);
            let batch = gen_corpus.batch(&schema, next..end);
            next = end;
            Ok(Some(batch))
        }),
    );
    if let Some((kind, keys)) = middle {
        b = b.step("dedup", registry_step(kind, keys)?);
    }
    // The sink marks the records it sees, in a bitmap of ids.
    let seen = Arc::new(Mutex::new(vec![0u64; RECORDS.div_ceil(64) as usize]));
    let seen2 = Arc::clone(&seen);
    let pipeline = b
        .step(
            "count",
            sink("count", move |b, _| {
                let Some(Column::Int(ids)) = b.column("id") else {
                    return Err(weave_core::StepError::internal("no id column"));
                };
                let mut seen = seen2.lock().map_err(|_| weave_core::StepError::internal("poisoned"))?;
                for &id in ids.values() {
                    seen[id as usize / 64] |= 1 << (id % 64);
                }
                Ok(())
            }),
        )
        .build()
        .map_err(|d| format!("the pipeline does not build:\n{d}"))?;
    let (start, cpu_before) = (Instant::now(), cpu_time());
    let summary = weave_exec::run(pipeline, weave_exec::ExecOptions::default()).map_err(|e| e.to_string())?;
    let elapsed = start.elapsed();
    let cpu = cpu_time().zip(cpu_before).map(|(after, before)| after.saturating_sub(before));
    let peak = peak_rss();

    let seen = seen.lock().map_err(|_| "poisoned".to_owned())?;
    let kept_id = |id: u64| seen[id as usize / 64] & (1 << (id % 64)) != 0;
    let (mut kept, mut near, mut near_dropped, mut far, mut far_dropped, mut others_dropped) = (0u64, 0, 0, 0, 0, 0);
    for id in 0..RECORDS {
        let k = kept_id(id);
        kept += u64::from(k);
        match corpus.plant_similarity(id) {
            Some(j) if j >= THRESHOLD => {
                near += 1;
                near_dropped += u64::from(!k);
            }
            Some(_) => {
                far += 1;
                far_dropped += u64::from(!k);
            }
            None => others_dropped += u64::from(!k),
        }
    }
    if let Some(p) = peak {
        println!("peak_rss={p}");
    }
    println!("elapsed_ns={}", elapsed.as_nanos());
    if let Some(cpu) = cpu {
        println!("cpu_ns={}", cpu.as_nanos());
    }
    println!("step_busy_ns={}", summary.step("dedup").map_or(Duration::ZERO, |s| s.busy).as_nanos());
    println!("records={}", summary.step("generate").map_or(0, |s| s.records_out));
    println!("kept={kept}");
    println!("plants_near={near}");
    println!("plants_near_dropped={near_dropped}");
    println!("plants_far={far}");
    println!("plants_far_dropped={far_dropped}");
    println!("others_dropped={others_dropped}");
    Ok(())
}

/// A built-in step of `kind` built from `keys`, as a pipeline file would build it.
fn registry_step(kind: &str, keys: &str) -> Result<Step, String> {
    let registry = weave_steps::registry();
    let k = registry.get(kind).ok_or_else(|| format!("no step kind `{kind}`"))?;
    let table = ConfTable::parse(keys).map_err(|(e, _)| e)?;
    let p = Params::new(table, SourceFile::new("bench.toml", keys), "step", Some("dedup".to_owned()));
    let step = (k.build)(&p);
    let diags = p.finish(&k.all_keys());
    if diags.has_errors() {
        return Err(diags.to_string());
    }
    step.ok_or_else(|| format!("{kind} did not build"))
}

/// The generated records: record `id` is a function of the seed and `id` alone.
struct Corpus {
    vocabulary: Vec<String>,
    /// `VOCABULARY^(k / 65536) - 1` for each `k`: a word index with a Zipf-like spread
    /// from 16 random bits, without a `powf` per word.
    zipf: Vec<u16>,
}

/// How a plant differs from its original.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Edit {
    /// The same words, other capitals and punctuation.
    Restyled,
    /// A word added at the end, or the first one removed.
    AtAnEnd,
    /// One word replaced anywhere.
    Replaced,
}

impl Corpus {
    fn new() -> Self {
        const SYLLABLES: [&str; 32] = [
            "a", "e", "ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "bra", "de", "fi", "go", "hu", "je", "ko", "pa",
            "qui", "re", "so", "tu", "ve", "wa", "xi", "yo", "ze", "ul", "or", "en", "ist", "an",
        ];
        let vocabulary = (0..VOCABULARY)
            .map(|n| {
                let (mut x, mut w) = (n + 32, String::new());
                while x > 0 {
                    w.push_str(SYLLABLES[x % 32]);
                    x /= 32;
                }
                w
            })
            .collect();
        let zipf = (0..1u32 << 16)
            .map(|k| ((VOCABULARY as f64).powf(f64::from(k) / 65536.0) as usize).saturating_sub(1) as u16)
            .collect();
        Corpus { vocabulary, zipf }
    }

    fn rng(id: u64, salt: u64) -> Rng {
        Rng::new((SEED ^ salt).wrapping_add(id.wrapping_mul(0x9e37_79b9_7f4a_7c15)))
    }

    /// Whether record `id` is a plant, and if so its original (an earlier non-plant) and
    /// its edit.
    fn plant(id: u64) -> Option<(u64, Edit)> {
        let mut rng = Self::rng(id, 1);
        if id < 1000 || rng.below(10) != 0 {
            return None;
        }
        let mut src = rng.below(id as usize) as u64;
        while Self::plant(src).is_some() {
            src -= 1;
        }
        let edit = match rng.below(4) {
            0 | 1 => Edit::Restyled,
            2 => Edit::AtAnEnd,
            _ => Edit::Replaced,
        };
        Some((src, edit))
    }

    /// A word index with a Zipf-like spread: index `i` comes up about as often as 1/(i+1).
    fn word(&self, rng: &mut Rng) -> usize {
        usize::from(self.zipf[(rng.next_u64() >> 48) as usize])
    }

    /// The words of record `id` (into `out`), and the seed of its style.
    fn words(&self, id: u64, out: &mut Vec<usize>) -> u64 {
        out.clear();
        match Self::plant(id) {
            None => {
                let mut rng = Self::rng(id, 2);
                let n = rng.range(50, 80);
                out.extend((0..n).map(|_| self.word(&mut rng)));
                rng.next_u64()
            }
            Some((src, edit)) => {
                self.words(src, out);
                let mut rng = Self::rng(id, 3);
                match edit {
                    Edit::Restyled => {}
                    Edit::AtAnEnd if rng.chance(0.5) => out.push(self.word(&mut rng)),
                    Edit::AtAnEnd => {
                        out.remove(0);
                    }
                    Edit::Replaced => {
                        let at = rng.below(out.len());
                        let mut w = self.word(&mut rng);
                        while w == out[at] {
                            w = self.word(&mut rng);
                        }
                        out[at] = w;
                    }
                }
                rng.next_u64()
            }
        }
    }

    /// Writes `words` as sentences in the style `style` (capitals after a full stop, some
    /// commas, the odd double space).
    fn render(&self, words: &[usize], style: u64, out: &mut weave_core::Appender<'_>) {
        let mut rng = Rng::new(style);
        let mut capital = true;
        for (i, &w) in words.iter().enumerate() {
            if i > 0 {
                out.push_str(if rng.below(25) == 0 { "  " } else { " " });
            }
            let w = &self.vocabulary[w];
            if capital {
                out.push(char::from(w.as_bytes()[0].to_ascii_uppercase()));
                out.push_str(&w[1..]);
            } else {
                out.push_str(w);
            }
            capital = false;
            match rng.below(12) {
                0 => {
                    out.push('.');
                    capital = true;
                }
                1 => out.push(','),
                _ => {}
            }
        }
        out.push('.');
    }

    /// Records `ids` as a batch.
    fn batch(&self, schema: &Arc<Schema>, ids: std::ops::Range<u64>) -> Batch {
        let n = (ids.end - ids.start) as usize;
        let mut text = StrColumn::with_capacity(n, n * 480);
        let mut id_col = PrimitiveColumn::new();
        let mut words = Vec::new();
        for id in ids {
            let style = self.words(id, &mut words);
            text.push_with(|a| self.render(&words, style, a));
            id_col.push(id as i64);
        }
        Batch::new(Arc::clone(schema), vec![Arc::new(Column::Int(id_col)), Arc::new(Column::Str(text))])
            .unwrap_or_else(|e| panic!("near_dedup: bad batch: {e}"))
    }

    /// For a plant, its exact Jaccard similarity to its original (word 5-shingles; the
    /// words are already lower case and free of punctuation); `None` for an original.
    fn plant_similarity(&self, id: u64) -> Option<f64> {
        let (src, _) = Self::plant(id)?;
        let (mut a, mut b) = (Vec::new(), Vec::new());
        self.words(src, &mut a);
        self.words(id, &mut b);
        let (sa, sb) = (sorted_shingles(&a), sorted_shingles(&b));
        let inter = sa.iter().filter(|s| sb.binary_search(s).is_ok()).count();
        Some(inter as f64 / (sa.len() + sb.len() - inter) as f64)
    }
}

/// The distinct word shingles of `words`, sorted.
fn sorted_shingles(words: &[usize]) -> Vec<&[usize]> {
    let mut s: Vec<&[usize]> = words.windows(SHINGLE).collect();
    s.sort_unstable();
    s.dedup();
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plants_come_after_an_original_and_are_near_it() {
        let c = Corpus::new();
        let plants: Vec<u64> = (0..5000).filter(|&id| Corpus::plant(id).is_some()).collect();
        assert!((350..650).contains(&plants.len()), "{} plants in 5,000", plants.len());
        for &id in &plants {
            let (src, edit) = Corpus::plant(id).unwrap_or_else(|| unreachable!());
            assert!(src < id && Corpus::plant(src).is_none());
            let j = c.plant_similarity(id).unwrap_or_default();
            match edit {
                Edit::Restyled => assert_eq!(j, 1.0),
                _ => assert!(j > 0.7 && j < 1.0, "{edit:?}: {j}"),
            }
        }
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Int), Field::new("text", DataType::Str)]));
        let b = c.batch(&schema, 0..10);
        let text = b.column("text").and_then(Column::as_str).map(|t| t.data().len()).unwrap_or_default();
        assert!((3000..6000).contains(&text), "{text} bytes in 10 records");
    }
}
