//! Records whose fields vary (JSON Lines, where a key may be in one record and not the
//! next): a step that names such a field does the same with every record whatever the
//! batch size, and a misspelt field fails the run with its name (at once for a CSV's fixed
//! columns, at the input's end for JSON records).

use std::fmt::Write as _;
use std::path::Path;

use crate::cli::check_in;

/// 300 records: `text` in each, with repeats; `title` in one in five (with spaces to
/// clean, and repeats); `label` in one in 37; the keys in another order in one in three;
/// and records 290.. repeat records 0.. with their keys in another order and an explicit
/// null for a field they lack (the same record, to a whole-record dedup).
fn sparse_input() -> String {
    let mut out = String::new();
    for i in 0..290u32 {
        let text = format!("text {}", i % 250);
        let mut fields: Vec<(String, String)> =
            vec![("id".into(), i.to_string()), ("text".into(), format!("{text:?}"))];
        if i % 3 == 0 {
            fields.reverse();
        }
        if i % 5 == 0 {
            fields.push(("title".into(), format!("\"  Title   {}  \"", i % 20)));
        }
        if i % 37 == 0 {
            fields.push(("label".into(), format!("\"{}\"", if i % 2 == 0 { "spam" } else { "ham" })));
        }
        let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
        writeln!(out, "{{{}}}", body.join(",")).expect("a String takes text");
    }
    for i in 0..10u32 {
        writeln!(out, "{{\"text\":\"text {i}\",\"tag\":null,\"id\":{i}}}").expect("a String takes text");
    }
    out
}

fn pipeline(batch_size: usize, filter_field: &str) -> String {
    format!(
        r#"
[[step]]
id = "load"
kind = "load_jsonl"
path = "in.jsonl"
batch_size = {batch_size}

[[step]]
id = "clean"
kind = "clean"
after = "load"
fields = ["title"]
rules = ["trim", "collapse_whitespace", "lowercase"]

[[step]]
id = "titles"
kind = "near_dedup"
after = "clean"
fields = ["title"]
threshold = 0.9

[[step]]
id = "whole"
kind = "dedup"
after = "titles"

[[step]]
id = "keep"
kind = "filter"
after = "whole"
field = "{filter_field}"
equals = "spam"
not = true

[[step]]
id = "pii"
kind = "pii"
after = "keep"
fields = ["title"]

[[step]]
id = "noise"
kind = "augment"
after = "pii"
field = "title"
noiser = "typos"

[[step]]
id = "split"
kind = "split"
after = "noise"
fractions = {{ train = 0.7, test = 0.3 }}
stratify_by = "label"
seed = 7

[[step]]
id = "out"
kind = "export_jsonl"
after = "split"
path = "out.jsonl"
"#
    )
}

/// The records of a JSON Lines file, each without its null fields (a record without a
/// field and one where it is null are one record to a table: pandas, polars, pyarrow).
fn records(dir: &Path, name: &str) -> Vec<serde_json::Map<String, serde_json::Value>> {
    let text = std::fs::read_to_string(dir.join(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    text.lines()
        .map(|l| {
            let mut m: serde_json::Map<String, serde_json::Value> = serde_json::from_str(l).expect("a JSON object");
            m.retain(|_, v| !v.is_null());
            m
        })
        .collect()
}

// regression: a step that named a field failed with "field `label` is not in the data" on
// a batch where no record had it, and ran at another batch size; a whole-record dedup
// gave records that differ only by key order or an explicit null different keys, by batch.
#[test]
fn every_batch_size_gives_the_same_records_when_fields_vary() {
    let mut runs = Vec::new();
    for batch_size in [1, 7, 64, 1000] {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("in.jsonl"), sparse_input()).expect("input");
        std::fs::write(dir.path().join("p.toml"), pipeline(batch_size, "label")).expect("pipeline");
        check_in(dir.path(), &["run", "p.toml", "--no-cache"], 0, &["run succeeded"], &[]);
        runs.push((batch_size, records(dir.path(), "out.jsonl")));
    }
    let (_, first) = &runs[0];
    // What the steps did: the 10 repeats dropped by the whole-record dedup, the spam
    // records by the filter, near-duplicate titles by near_dedup; every record split.
    let spam = (0..290u32).filter(|i| i % 37 == 0 && i % 2 == 0).count();
    assert!(first.len() < 290 - spam, "near_dedup dropped records with repeated titles: {}", first.len());
    assert!(first.iter().all(|r| r.get("label").and_then(|l| l.as_str()) != Some("spam")));
    assert!(first.iter().any(|r| r.get("label").and_then(|l| l.as_str()) == Some("ham")));
    assert!(first.iter().all(|r| r.contains_key("split")));
    assert!(first.iter().filter_map(|r| r.get("title")).all(|t| t.as_str().is_some_and(|t| t.starts_with("title "))));
    assert!(first.iter().any(|r| r.contains_key("title_noisy")), "titles noised");
    for (batch_size, got) in &runs[1..] {
        assert_eq!(got, first, "batch_size = {batch_size} against batch_size = 1");
    }
}

#[test]
fn a_misspelt_field_of_json_records_fails_at_the_inputs_end_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("in.jsonl"), sparse_input()).expect("input");
    std::fs::write(dir.path().join("p.toml"), pipeline(7, "lable")).expect("pipeline");
    check_in(
        dir.path(),
        &["run", "p.toml"],
        1,
        &[],
        &["keep", "field `lable` is in no record of the input (fields the records have: id, label, tag, text, title"],
    );
    assert!(!dir.path().join("out.jsonl").exists(), "nothing written");
}

#[test]
fn a_misspelt_field_of_a_csv_fails_at_once_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut csv = String::from("id,text,label\n");
    for i in 0..100 {
        writeln!(csv, "{i},text {i},{}", if i % 2 == 0 { "spam" } else { "ham" }).expect("a String takes text");
    }
    std::fs::write(dir.path().join("in.csv"), csv).expect("input");
    std::fs::write(
        dir.path().join("p.toml"),
        r#"
[[step]]
id = "load"
kind = "load_csv"
path = "in.csv"
batch_size = 10

[[step]]
id = "keep"
kind = "filter"
after = "load"
field = "lable"
equals = "ham"

[[step]]
id = "out"
kind = "export_jsonl"
after = "keep"
path = "out.jsonl"
"#,
    )
    .expect("pipeline");
    let out = check_in(
        dir.path(),
        &["run", "p.toml"],
        1,
        &[],
        &["keep", "field `lable` is not in the data (fields: id, text, label)"],
    );
    assert!(!out.stderr.contains("in no record"), "{}", out.stderr);
    assert!(!dir.path().join("out.jsonl").exists(), "nothing written");
}

#[test]
fn a_shard_whose_records_lack_a_field_others_have_warns_and_the_parts_are_the_single_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    let mut input = String::new();
    for i in 0..100 {
        // `label` only in the last fifth of the file: the first of two shards never sees it.
        let label =
            if i >= 80 { format!(",\"label\":\"{}\"", if i % 2 == 0 { "spam" } else { "ham" }) } else { String::new() };
        writeln!(input, "{{\"id\":{i},\"text\":\"text {i}\"{label}}}").expect("a String takes text");
    }
    std::fs::write(d.join("in.jsonl"), input).expect("input");
    std::fs::write(
        d.join("p.toml"),
        r#"
[[step]]
id = "load"
kind = "load_jsonl"
path = "in.jsonl"
batch_size = 10

[[step]]
id = "keep"
kind = "filter"
after = "load"
field = "label"
equals = "spam"
not = true

[[step]]
id = "out"
kind = "export_jsonl"
after = "keep"
path = "out.jsonl"
"#,
    )
    .expect("pipeline");
    check_in(d, &["run", "p.toml"], 0, &["run succeeded"], &[]);
    let single = records(d, "out.jsonl");
    assert_eq!(single.len(), 90, "the 10 spam records dropped");
    let first = check_in(d, &["run", "p.toml", "--shard", "0/2"], 0, &["run succeeded"], &[]);
    assert!(
        first.stderr.contains(
            "step keep: field `label` is in no record of the input (fields the records have: id, text) of this shard"
        ),
        "{}",
        first.stderr
    );
    let second = check_in(d, &["run", "p.toml", "--shard", "1/2"], 0, &["run succeeded"], &[]);
    assert!(!second.stderr.contains("in no record"), "{}", second.stderr);
    let mut joined = records(d, "out-part-00000-of-00002.jsonl");
    joined.extend(records(d, "out-part-00001-of-00002.jsonl"));
    assert_eq!(joined, single);
}
