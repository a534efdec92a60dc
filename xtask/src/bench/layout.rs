//! `layout`: the batch layout decision (DESIGN.md, "Data flow"), measured.
//!
//! One million generated text records (`id`, a messy `text`, a `label`) go through the
//! same small pipeline three ways: build the in-memory form from the raw rows, clean the
//! text (trim, collapse whitespace), write JSON Lines.
//!
//! - **columnar**: [`Batch`]es of 8,192 rows built as typed columns, cleaned into a new
//!   [`StrColumn`] with [`trim_collapse_into`], written with [`write_jsonl`]. This is the
//!   layout Weave uses.
//! - **rows**: the naive layout, a `Vec<Record>` of owned strings and values per chunk,
//!   cleaned into a new `String` per record, written with `serde_json` record by record.
//! - **hand-written loop** (the baseline): one pass over the raw rows, reusing one text
//!   buffer and writing the JSON by hand: what a tuned single-purpose program does.
//!
//! The bar is columnar ≥ 0.8× the hand-written loop. Each variant writes into one reused
//! output buffer that is cleared after every 8,192 rows, so memory stays bounded, and each
//! chunk of output is folded into a checksum, so the work cannot be optimised away. All
//! three cut their output at the same rows, so their checksums must agree: with the
//! byte-for-byte comparison of the first 20,000 rows, that keeps the variants honest.

use std::sync::Arc;
use std::time::Duration;

use weave_core::{Batch, Column, DataType, Field, PrimitiveColumn, Record, Schema, StrColumn, Value};
use weave_steps::{trim_collapse_into, write_json_str, write_jsonl};

use super::{Figure, Report, Rng, Target, median, thousands, time};

/// Records per run.
const ROWS: usize = 1_000_000;
/// Rows per batch (and per chunk of output for every variant).
const BATCH: usize = 8_192;
/// Timed runs of each variant, interleaved; the median is reported.
const REPS: usize = 5;
/// Rows whose output is compared byte for byte before timing.
const CHECK_ROWS: usize = 20_000;
const SEED: u64 = 0x1a70_u64 << 32 | 0xbeef;

/// A raw input row: id, text, label.
type Raw = (i64, String, &'static str);

/// A variant: turns raw rows into JSON Lines in `out`, handing each finished chunk of
/// output to `emit` before clearing `out`.
type Variant = fn(&[Raw], &Arc<Schema>, &mut Vec<u8>, &mut dyn FnMut(&[u8]));

const VARIANTS: [(&str, Variant); 3] =
    [("columnar", columnar), ("rows (Vec<Record>)", rows), ("hand-written loop (baseline)", hand_written)];
const BASELINE: usize = 2;

pub(super) fn run(report: &mut Report) {
    report.progress(format!("generating {} records", thousands(ROWS as u64)));
    let raw = generate(ROWS, SEED);
    let input_bytes: usize = raw.iter().map(|r| r.1.len()).sum();
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int),
        Field::new("text", DataType::Str),
        Field::new("label", DataType::Str),
    ]));

    verify(&raw[..CHECK_ROWS.min(raw.len())], &schema);

    report.progress(format!(
        "{} records, {:.1} MB of text; {REPS} interleaved runs of each variant",
        thousands(ROWS as u64),
        input_bytes as f64 / 1e6
    ));
    let mut outs: Vec<Vec<u8>> = VARIANTS.iter().map(|_| Vec::new()).collect();
    let mut times: Vec<Vec<Duration>> = VARIANTS.iter().map(|_| Vec::new()).collect();
    let mut output_bytes = 0u64;
    for rep in 0..REPS {
        let mut sums = [Checksum::default(); VARIANTS.len()];
        // Each run starts with a different variant, so that none always runs first.
        for k in (0..VARIANTS.len()).map(|k| (k + rep) % VARIANTS.len()) {
            let (_, variant) = VARIANTS[k];
            let (out, sum) = (&mut outs[k], &mut sums[k]);
            times[k].push(time(|| variant(&raw, &schema, out, &mut |chunk| sum.feed(chunk))));
        }
        for (k, s) in sums.iter().enumerate() {
            assert_eq!(
                *s, sums[BASELINE],
                "variant `{}` wrote different output from the baseline (checksums differ)",
                VARIANTS[k].0
            );
        }
        output_bytes = sums[BASELINE].bytes;
    }

    let secs: Vec<f64> = times.into_iter().map(|t| median(t).as_secs_f64()).collect();
    let base = ROWS as f64 / secs[BASELINE];
    for (k, (name, _)) in VARIANTS.iter().enumerate() {
        let per_sec = ROWS as f64 / secs[k];
        let ratio = per_sec / base;
        let mut fig = Figure::new(format!("{name}: records/s"), per_sec, "records/s").ratio(ratio);
        if k == 0 {
            fig = fig.target(Target::RatioAtLeast(0.8));
        }
        report.add(fig);
        report
            .add(Figure::new(format!("{name}: output MB/s"), output_bytes as f64 / 1e6 / secs[k], "MB/s").ratio(ratio));
    }
}

/// Columnar: batches built as typed columns, the text column rewritten, written from the
/// columns.
fn columnar(raw: &[Raw], schema: &Arc<Schema>, out: &mut Vec<u8>, emit: &mut dyn FnMut(&[u8])) {
    for chunk in raw.chunks(BATCH) {
        let batch = build_batch(chunk, schema);
        let batch = clean_text(&batch);
        out.clear();
        write_jsonl(&batch, out);
        emit(out);
    }
}

/// The batch that a loader would produce from these rows.
fn build_batch(chunk: &[Raw], schema: &Arc<Schema>) -> Batch {
    let ids = PrimitiveColumn::from_values(chunk.iter().map(|r| r.0).collect());
    let text_bytes = chunk.iter().map(|r| r.1.len()).sum();
    let mut text = StrColumn::with_capacity(chunk.len(), text_bytes);
    let mut label = StrColumn::with_capacity(chunk.len(), chunk.len() * 8);
    for (_, t, l) in chunk {
        text.push(t);
        label.push(l);
    }
    let columns = vec![Arc::new(Column::Int(ids)), Arc::new(Column::Str(text)), Arc::new(Column::Str(label))];
    Batch::new(Arc::clone(schema), columns).unwrap_or_else(|e| panic!("the benchmark built a bad batch: {e}"))
}

/// What the built-in cleaning step does: a new text column, the others shared.
fn clean_text(batch: &Batch) -> Batch {
    let Some(text) = batch.column("text").and_then(Column::as_str) else {
        panic!("the benchmark batch has no string column `text`");
    };
    let mut cleaned = StrColumn::with_capacity(text.len(), text.data().len());
    for s in text.iter() {
        match s {
            Some(s) => cleaned.push_with(|a| trim_collapse_into(s, a)),
            None => cleaned.push_null(),
        }
    }
    batch.with_column("text", Column::Str(cleaned)).unwrap_or_else(|e| panic!("{e}"))
}

/// Rows: a `Record` of owned values per row, a new `String` per cleaned text, serde_json
/// per record.
fn rows(raw: &[Raw], _schema: &Arc<Schema>, out: &mut Vec<u8>, emit: &mut dyn FnMut(&[u8])) {
    for chunk in raw.chunks(BATCH) {
        let mut records: Vec<Record> = chunk
            .iter()
            .map(|(id, text, label)| Record::new().with("id", *id).with("text", text.clone()).with("label", *label))
            .collect();
        for r in &mut records {
            if let Some(Value::Str(s)) = r.get_mut("text") {
                *s = s.split_whitespace().collect::<Vec<_>>().join(" ");
            }
        }
        out.clear();
        for r in &records {
            serde_json::to_writer(&mut *out, r).unwrap_or_else(|e| panic!("a record did not serialise: {e}"));
            out.push(b'\n');
        }
        emit(out);
    }
}

/// The baseline: one pass, one reused text buffer, JSON written by hand.
fn hand_written(raw: &[Raw], _schema: &Arc<Schema>, out: &mut Vec<u8>, emit: &mut dyn FnMut(&[u8])) {
    let mut text = String::with_capacity(512);
    out.clear();
    for (n, (id, raw_text, label)) in raw.iter().enumerate() {
        text.clear();
        trim_collapse(raw_text, &mut text);
        out.extend_from_slice(b"{\"id\":");
        write_i64(*id, out);
        out.extend_from_slice(b",\"text\":");
        write_json_str(&text, out);
        out.extend_from_slice(b",\"label\":");
        write_json_str(label, out);
        out.extend_from_slice(b"}\n");
        if (n + 1) % BATCH == 0 || n + 1 == raw.len() {
            emit(out);
            out.clear();
        }
    }
}

/// Trims `s` and collapses each inner run of whitespace (Unicode `White_Space`) to one
/// ASCII space, appending to `out`: the same result as `trim_collapse_into`, written
/// independently and tuned.
///
/// Copying word by word costs two mispredicted branches per word (where it starts and
/// where it ends), which dominates on short words. Instead every ASCII byte is pushed,
/// whitespace as `' '`, and a space pushed right after another is taken back at once: a
/// data-dependent length, not a branch. Non-ASCII characters are copied whole; only those
/// whose first byte can start a Unicode space (C2, E1, E2, E3) are decoded and checked.
pub(super) fn trim_collapse(s: &str, out: &mut String) {
    let bytes = s.as_bytes();
    let start = out.len();
    // 1 after whitespace, and at the start, so that leading whitespace is dropped.
    let mut after_space = 1;
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b < 0x80 {
            let space = usize::from(matches!(b, b' ' | b'\t'..=b'\r'));
            out.push(if space == 1 { ' ' } else { char::from(b) });
            out.truncate(out.len() - (space & after_space));
            after_space = space;
            i += 1;
        } else {
            let len = if b < 0xe0 {
                2
            } else if b < 0xf0 {
                3
            } else {
                4
            };
            let c = &s[i..i + len];
            if matches!(b, 0xc2 | 0xe1..=0xe3) && c.chars().next().is_some_and(char::is_whitespace) {
                if after_space == 0 {
                    out.push(' ');
                }
                after_space = 1;
            } else {
                out.push_str(c);
                after_space = 0;
            }
            i += len;
        }
    }
    // A space is only ever written for whitespace, so a final one is trailing whitespace.
    if out.len() > start && out.ends_with(' ') {
        out.pop();
    }
}

/// Appends `v` in decimal.
fn write_i64(v: i64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    let mut n = v.unsigned_abs();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    if v < 0 {
        out.push(b'-');
    }
    out.extend_from_slice(&buf[i..]);
}

/// Runs every variant on `raw` and panics, naming the first differing line, unless they
/// all write the same bytes, and those bytes are JSON that `serde_json` reads back.
fn verify(raw: &[Raw], schema: &Arc<Schema>) {
    let outputs: Vec<Vec<u8>> = VARIANTS
        .iter()
        .map(|(_, variant)| {
            let mut all = Vec::new();
            variant(raw, schema, &mut Vec::new(), &mut |chunk| all.extend_from_slice(chunk));
            all
        })
        .collect();
    let base = &outputs[BASELINE];
    for (k, out) in outputs.iter().enumerate() {
        if let Some(diff) = first_difference(VARIANTS[k].0, out, base) {
            panic!("layout: {diff}");
        }
    }
    let text = std::str::from_utf8(base).unwrap_or_else(|e| panic!("layout: the output is not UTF-8: {e}"));
    assert_eq!(text.lines().count(), raw.len(), "layout: one line per record");
    for (line, (r, (id, raw_text, label))) in text.lines().zip(raw).enumerate() {
        let v: serde_json::Value =
            serde_json::from_str(r).unwrap_or_else(|e| panic!("layout: line {} is not JSON: {e}: {r}", line + 1));
        let want = raw_text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(
            v["id"] == *id && v["text"] == want.as_str() && v["label"] == *label,
            "layout: line {} does not hold its record: {r}",
            line + 1
        );
    }
}

/// Where `out` (written by variant `name`) first differs from the baseline's `base`, or
/// `None` if the bytes are the same.
pub(super) fn first_difference(name: &str, out: &[u8], base: &[u8]) -> Option<String> {
    if out == base {
        return None;
    }
    let (mut ours, mut theirs) = (out.split_inclusive(|&b| b == b'\n'), base.split_inclusive(|&b| b == b'\n'));
    let mut line = 1;
    loop {
        match (ours.next(), theirs.next()) {
            (Some(a), Some(b)) if a == b => line += 1,
            (a, b) => {
                let show = |l: Option<&[u8]>| {
                    l.map_or_else(
                        || "<end of output>".to_owned(),
                        |l| String::from_utf8_lossy(l).trim_end_matches('\n').to_owned(),
                    )
                };
                return Some(format!(
                    "variant `{name}` writes different JSONL from the baseline at line {line}:\n  {name}: {}\n  baseline: {}",
                    show(a),
                    show(b)
                ));
            }
        }
    }
}

/// A checksum of a stream of chunks: cheap (the words of a chunk are summed, which
/// vectorises), and sensitive to each chunk's content, length and order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Checksum {
    hash: u64,
    bytes: u64,
}

impl Checksum {
    fn feed(&mut self, chunk: &[u8]) {
        let mut words = chunk.chunks_exact(8);
        let mut sum = 0u64;
        for w in &mut words {
            let mut b = [0u8; 8];
            b.copy_from_slice(w);
            sum = sum.wrapping_add(u64::from_le_bytes(b));
        }
        for &b in words.remainder() {
            sum = sum.wrapping_add(u64::from(b));
        }
        self.hash = (self.hash.rotate_left(17) ^ sum ^ chunk.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.bytes += chunk.len() as u64;
    }
}

/// Words of the generated text: mostly ASCII, some accented or non-Latin, some with
/// quotes, backslashes and a control character, which JSON must escape.
pub(super) const WORDS: &[&str] = &[
    "the",
    "a",
    "data",
    "pipeline",
    "model",
    "training",
    "example",
    "text",
    "cleaning",
    "quick",
    "brown",
    "fox",
    "jumps",
    "over",
    "lazy",
    "dog",
    "customer",
    "ticket",
    "support",
    "refund",
    "order",
    "shipping",
    "delayed",
    "again",
    "please",
    "help",
    "thanks",
    "error",
    "message",
    "when",
    "I",
    "try",
    "to",
    "log",
    "in",
    "account",
    "password",
    "reset",
    "works",
    "café",
    "naïve",
    "résumé",
    "Zürich",
    "déjà",
    "vu",
    "año",
    "über",
    "élan",
    "—",
    "…",
    "数据",
    "ok",
    "\"quoted\"",
    "it's",
    "C:\\Users\\me",
    "back\\slash",
    "50%",
    "<b>bold</b>",
    "e-mail",
    "#42",
    "ASAP!!",
    "(sic)",
    "x\u{1}y",
];

/// Whitespace between words: mostly one space, sometimes runs of tabs, newlines, carriage
/// returns, and Unicode spaces (no-break space, em space).
pub(super) const SPACES: &[&str] = &["  ", "\t", "\n", " \t ", "\r\n", "   ", "\u{a0}", "\u{2003}", "\n\n", " \n\t  "];

const LABELS: [&str; 5] = ["positive", "negative", "neutral", "spam", "needs \"review\""];

/// `n` raw rows: ids (some negative), texts of about 40 to 300 characters with messy
/// whitespace, and labels.
fn generate(n: usize, seed: u64) -> Vec<Raw> {
    let mut rng = Rng::new(seed);
    (0..n)
        .map(|i| {
            let target = rng.range(40, 270);
            let mut s = String::with_capacity(target + 32);
            if rng.chance(0.4) {
                s.push_str(rng.pick(SPACES));
            }
            let mut first = true;
            while s.len() < target {
                if !first {
                    s.push_str(if rng.chance(0.75) { " " } else { rng.pick(SPACES) });
                }
                first = false;
                s.push_str(rng.pick(WORDS));
            }
            if rng.chance(0.4) {
                s.push_str(rng.pick(SPACES));
            }
            let id = i as i64 * 7 - 1_000_000;
            (id, s, rng.pick(&LABELS))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_written_cleaning_matches_the_library() {
        let cases = [
            "  a  b\t\tc \n",
            "",
            "   ",
            "x",
            "\u{a0}é\u{2003}ü\r\n",
            "a\nb",
            "x\u{1}y \u{85}z\u{3000}",
            "数据 \u{2028} ok",
        ];
        for s in cases {
            let mut ours = String::new();
            trim_collapse(s, &mut ours);
            let mut col = StrColumn::new();
            col.push_with(|a| trim_collapse_into(s, a));
            assert_eq!(Some(ours.as_str()), col.get(0), "{s:?}");
            assert_eq!(ours, s.split_whitespace().collect::<Vec<_>>().join(" "), "{s:?}");
        }
    }

    #[test]
    fn integers_are_written_in_full() {
        for v in [0, 7, -7, 1_000_000, i64::MIN, i64::MAX] {
            let mut out = Vec::new();
            write_i64(v, &mut out);
            assert_eq!(String::from_utf8(out).unwrap(), v.to_string());
        }
    }

    #[test]
    fn variants_agree_on_a_small_input() {
        let raw = generate(3 * BATCH / 2, 5);
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int),
            Field::new("text", DataType::Str),
            Field::new("label", DataType::Str),
        ]));
        verify(&raw, &schema);
    }

    #[test]
    fn a_difference_is_found_and_named() {
        let base = b"{\"id\":1}\n{\"id\":2}\n";
        assert_eq!(first_difference("x", base, base), None);
        let diff = first_difference("x", b"{\"id\":1}\n{\"id\":3}\n", base).unwrap_or_default();
        assert!(diff.contains("variant `x`") && diff.contains("line 2") && diff.contains("{\"id\":3}"), "{diff}");
        let short = first_difference("x", b"{\"id\":1}\n", base).unwrap_or_default();
        assert!(short.contains("<end of output>"), "{short}");
    }
}
