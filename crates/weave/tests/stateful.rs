//! The stateful steps' outputs are the same bytes at any thread count, and the same as the
//! bytes recorded before their per-record work moved to the worker pool (golden hashes).

use std::fmt::Write as _;
use std::path::Path;

use weave::Orchestrator;

/// Rows of the generated input.
const ROWS: usize = 4000;

/// A few thousand rows with many exact duplicates (up to case and whitespace), near
/// duplicates (a word changed) and blank labels, from a fixed generator.
fn input() -> String {
    const WORDS: &[&str] = &[
        "river", "stone", "Light", "quiet", "morning", "paper", "GARDEN", "window", "silver", "forest", "cloud",
        "bridge", "salt", "harbour", "lantern", "meadow",
    ];
    let mut x: u64 = 0x5eed_1234_abcd;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut csv = String::from("id,text,label,code\n");
    for id in 0..ROWS {
        // One text in three repeats one of 300 earlier-drawn texts: drawn from a small seed.
        let r = next();
        let seed = if r % 3 == 0 { r % 300 } else { r };
        let mut words = Vec::new();
        let mut y = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        for _ in 0..(8 + seed % 6) {
            y ^= y << 13;
            y ^= y >> 7;
            y ^= y << 17;
            words.push(WORDS[(y % WORDS.len() as u64) as usize].to_owned());
        }
        // Near duplicates: one word changed now and then.
        if next() % 7 == 0 {
            words[0] = "changed".to_owned();
        }
        // Case and whitespace that the normalisation removes.
        let sep = if next() % 4 == 0 { "  " } else { " " };
        let mut text = words.join(sep);
        if next() % 5 == 0 {
            text = format!(" {} ", text.to_uppercase());
        }
        let label = if next() % 20 == 0 { "" } else { ["a", "b", "c"][(next() % 3) as usize] };
        let code = next() % 2500;
        writeln!(csv, "{id},\"{text}\",{label},{code}").unwrap();
    }
    csv
}

/// The pipeline: dedup (normalised text, its drops written out), validate (completeness
/// and a uniqueness check on another field, flagging), near_dedup, export.
fn pipeline(dir: &Path, threads: usize) -> String {
    let d = dir.display();
    format!(
        r#"[pipeline]
name = "stateful"
seed = 7

[resources]
max_concurrent = {threads}

[[step]]
id = "load"
kind = "load_csv"
path = "{d}/in.csv"
batch_size = 97

[[step]]
id = "dedup"
kind = "dedup"
fields = ["text"]
normalize = ["lowercase", "trim", "collapse_whitespace"]
exclusions = "{d}/dedup-{threads}.jsonl"

[[step]]
id = "check"
kind = "validate"
checks = [{{ check = "completeness", fields = ["label"] }}, {{ check = "uniqueness", fields = ["code"] }}]
on_fail = "flag"

[[step]]
id = "near"
kind = "near_dedup"
fields = ["text"]
exclusions = "{d}/near-{threads}.jsonl"

[[step]]
id = "out"
kind = "export_jsonl"
path = "{d}/out-{threads}.jsonl"
"#
    )
}

fn hash(path: &Path) -> String {
    blake3::hash(&std::fs::read(path).unwrap()).to_hex().to_string()
}

#[test]
fn stateful_steps_write_the_same_bytes_at_any_thread_count_and_as_before() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("in.csv"), input()).unwrap();
    let mut seen = Vec::new();
    for threads in [1, 2, 8] {
        let path = d.join(format!("p{threads}.toml"));
        std::fs::write(&path, pipeline(d, threads)).unwrap();
        let summary = Orchestrator::new().monitoring(false).run_file(&path).unwrap_or_else(|e| panic!("{e}"));
        let counts: Vec<(String, u64, u64)> =
            summary.steps.iter().map(|s| (s.id.clone(), s.records_in, s.records_out)).collect();
        let files = ["out", "dedup", "near"].map(|f| hash(&d.join(format!("{f}-{threads}.jsonl"))));
        seen.push((threads, counts, files));
    }
    for (threads, counts, files) in &seen {
        assert_eq!((counts, files), (&seen[0].1, &seen[0].2), "{threads} thread(s) against 1");
    }
    // The bytes written before the stateful steps' per-record work moved to the pool.
    let (_, counts, files) = &seen[0];
    let golden = [
        "73260e586861ea1a364b7df438fff8d81d79d7de2a2232cee3c4769f9ca78472",
        "a6350d17faac939fed6d47d52fa019b106a65362e739dc6d0dc50cf485d75e0a",
        "c58400683b54587f06472e15cd808561d0c43493dceb0be93a797aa561833904",
    ];
    assert_eq!(files, &golden.map(str::to_owned), "counts: {counts:?}");
    let expected =
        [("load", 0, 4000), ("dedup", 4000, 2860), ("check", 2860, 2860), ("near", 2860, 2853), ("out", 2853, 0)];
    assert_eq!(counts, &expected.map(|(id, i, o)| (id.to_owned(), i, o)).to_vec());
}
