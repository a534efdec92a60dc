//! Sharded runs (`weave run --shard I/N`): N processes over one cache read every record
//! exactly once between them, and their parts, concatenated in shard order, are the
//! single process's output.

use std::path::Path;
use std::process::Command;

use crate::cli::{check_in, weave_in};

/// Two sources, a record-wise step on each, `concat`, and exports (one per source, one of
/// the concatenation, one with `{shard}` in its path), with bad rows set aside.
const PIPELINE: &str = r#"
[pipeline]
name = "sharded"
seed = 3

[[step]]
id = "csv"
kind = "load_csv"
path = "in.csv"
types = { id = "int" }
on_bad_record = "skip"
batch_size = 7

[[step]]
id = "clean"
kind = "clean"
after = ["csv"]
fields = ["text"]
rules = ["trim", "collapse_whitespace"]

[[step]]
id = "export_csv"
kind = "export_jsonl"
after = ["clean"]
path = "out/csv.jsonl"

[[step]]
id = "text"
kind = "load_text"
path = "text/*"
batch_size = 5

[[step]]
id = "export_text"
kind = "export_jsonl"
after = ["text"]
path = "out/{shard}/text.jsonl"

[[step]]
id = "gen"
kind = "generate"
templates = ["{a} and {b}"]
slots = { a = ["x", "y", "z"], b = ["1", "2"] }
count = 53
batch_size = 4

[[step]]
id = "both"
kind = "concat"
after = ["clean", "gen"]

[[step]]
id = "export_both"
kind = "export_jsonl"
after = ["both"]
path = "out/both.jsonl"
"#;

/// A CSV file with quoted line breaks, quotes, CRLF rows and bad rows, of `rows` rows.
fn csv(rows: usize) -> String {
    let mut s = String::from("id,text\r\n");
    for i in 0..rows {
        match i % 9 {
            0 => s.push_str(&format!("{i},\"a quoted\nline break and \"\"quotes\"\"\"\r\n")),
            3 => s.push_str(&format!("{i},  spaced   out  \n")),
            5 => s.push_str(&format!("{i},\"two\n\nbreaks, and a comma\"\n")),
            // A bad row (three fields), named by its line in the quarantine file.
            7 => s.push_str(&format!("{i},bad,row\n")),
            _ => s.push_str(&format!("{i},row {i} of some length {}\n", "x".repeat(i % 13))),
        }
    }
    s
}

fn setup(dir: &Path) {
    std::fs::write(dir.join("p.toml"), PIPELINE).unwrap();
    std::fs::write(dir.join("in.csv"), csv(200)).unwrap();
    std::fs::create_dir_all(dir.join("text")).unwrap();
    std::fs::write(dir.join("text/a.txt"), "alpha\nbeta\n\ngamma\n").unwrap();
    let long: String = (0..150).map(|i| format!("line {i}\n")).collect();
    std::fs::write(dir.join("text/b.txt"), long).unwrap();
    // A compressed file is read whole, by the shard its first byte falls to.
    let zst = zstd::encode_all(&b"zipped one\nzipped two\n"[..], 3).unwrap();
    std::fs::write(dir.join("text/c.txt.zst"), zst).unwrap();
    std::fs::write(dir.join("text/d.txt"), "last\n").unwrap();
}

fn read(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The parts of a sharded output, in shard order, concatenated.
fn concatenated(parts: &[std::path::PathBuf]) -> Vec<u8> {
    parts.iter().flat_map(|p| read(p)).collect()
}

#[test]
fn shards_read_every_record_once_and_their_parts_in_order_are_the_single_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    check_in(d, &["run", "p.toml"], 0, &["run succeeded"], &[]);
    let whole_csv = read(&d.join("out/csv.jsonl"));
    let whole_text = read(&d.join("out/part-00000-of-00001/text.jsonl"));
    let whole_both = read(&d.join("out/both.jsonl"));
    let whole_quarantine = read(&d.join(".weave/quarantine.jsonl"));
    assert_eq!(String::from_utf8_lossy(&whole_quarantine).lines().count(), 22, "the bad rows");
    for n in [1usize, 2, 3, 4, 7] {
        for i in 0..n {
            let shard = format!("{i}/{n}");
            check_in(d, &["run", "p.toml", "--shard", &shard], 0, &["run succeeded"], &[]);
        }
        let part = |stem: &str, ext: &str, i: usize| d.join(format!("{stem}-part-{i:05}-of-{n:05}.{ext}"));
        let parts = |stem: &str, ext: &str| (0..n).map(|i| part(stem, ext, i)).collect::<Vec<_>>();
        assert_eq!(concatenated(&parts("out/csv", "jsonl")), whole_csv, "csv at {n} shards");
        let text: Vec<_> = (0..n).map(|i| d.join(format!("out/part-{i:05}-of-{n:05}/text.jsonl"))).collect();
        assert_eq!(concatenated(&text), whole_text, "text at {n} shards");
        // Each shard's concatenation holds its share of both inputs: the same rows, in
        // shard order.
        let mut rows: Vec<String> =
            String::from_utf8(concatenated(&parts("out/both", "jsonl"))).unwrap().lines().map(String::from).collect();
        let mut expected: Vec<String> =
            String::from_utf8(whole_both.clone()).unwrap().lines().map(String::from).collect();
        rows.sort();
        expected.sort();
        assert_eq!(rows, expected, "concat at {n} shards");
        // The bad rows, each set aside once, by the shard that read it, with its own line.
        let quarantined = concatenated(&parts(".weave/quarantine", "jsonl"));
        assert_eq!(quarantined, whole_quarantine, "quarantine at {n} shards");
    }
    // At 7 shards, the compressed file is read whole by one shard.
    let holding: Vec<usize> = (0..7)
        .filter(|i| {
            String::from_utf8(read(&d.join(format!("out/part-{i:05}-of-00007/text.jsonl")))).unwrap().contains("zipped")
        })
        .collect();
    assert_eq!(holding.len(), 1, "{holding:?}");
    // A shard's run record says which shard it was.
    let runs: Vec<String> = std::fs::read_dir(d.join(".weave/runs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(runs.iter().any(|r| r.ends_with("-part-00006-of-00007")), "{runs:?}");
}

#[test]
fn a_shard_with_no_input_writes_empty_parts_and_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("in.jsonl"), "{\"a\":1}\n").unwrap();
    let p = "[[step]]\nid = \"l\"\nkind = \"load_jsonl\"\npath = \"in.jsonl\"\n\n[[step]]\nid = \"e\"\nkind = \"export_jsonl\"\npath = \"out.jsonl\"\n";
    std::fs::write(d.join("p.toml"), p).unwrap();
    for i in 0..3 {
        check_in(d, &["run", "p.toml", "--shard", &format!("{i}/3")], 0, &["run succeeded"], &[]);
    }
    let got: Vec<String> =
        (0..3).map(|i| String::from_utf8(read(&d.join(format!("out-part-{i:05}-of-00003.jsonl")))).unwrap()).collect();
    assert_eq!(got, ["{\"a\":1}\n", "", ""]);
}

#[test]
fn the_shard_comes_from_a_slurm_array_task_or_an_indexed_job() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("in.jsonl"), "{\"a\":1}\n{\"a\":2}\n").unwrap();
    let p = "[[step]]\nid = \"l\"\nkind = \"load_jsonl\"\npath = \"in.jsonl\"\n\n[[step]]\nid = \"e\"\nkind = \"export_jsonl\"\npath = \"out.jsonl\"\n";
    std::fs::write(d.join("p.toml"), p).unwrap();
    let run = |vars: &[(&str, &str)]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_weave"));
        c.args(["run", "p.toml"]).current_dir(d).env_remove("RUST_LOG");
        for v in crate::cli::SHARD_VARIABLES {
            c.env_remove(v);
        }
        for (k, v) in vars {
            c.env(k, v);
        }
        c.output().expect("weave runs")
    };
    let out = run(&[("SLURM_ARRAY_TASK_ID", "1"), ("SLURM_ARRAY_TASK_COUNT", "2")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read(&d.join("out-part-00001-of-00002.jsonl")), b"{\"a\":2}\n");
    let out = run(&[("JOB_COMPLETION_INDEX", "0"), ("WEAVE_SHARD_COUNT", "2")]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(read(&d.join("out-part-00000-of-00002.jsonl")), b"{\"a\":1}\n");
    let out = run(&[("JOB_COMPLETION_INDEX", "0")]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("WEAVE_SHARD_COUNT"));
    // `--shard` wins over the environment.
    let out = Command::new(env!("CARGO_BIN_EXE_weave"))
        .args(["run", "p.toml", "--shard", "0/4"])
        .current_dir(d)
        .env("SLURM_ARRAY_TASK_ID", "1")
        .env("SLURM_ARRAY_TASK_COUNT", "2")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(d.join("out-part-00000-of-00004.jsonl").exists());
}

#[test]
fn a_sharded_run_refuses_steps_that_need_the_whole_dataset_and_bad_shards() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("in.jsonl"), "{\"text\":\"a\"}\n{\"text\":\"a\"}\n").unwrap();
    let p = "[[step]]\nid = \"l\"\nkind = \"load_jsonl\"\npath = \"in.jsonl\"\n\n[[step]]\nid = \"dd\"\nkind = \"dedup\"\nfields = [\"text\"]\n\n[[step]]\nid = \"e\"\nkind = \"export_jsonl\"\npath = \"out.jsonl\"\n";
    std::fs::write(d.join("p.toml"), p).unwrap();
    let out = check_in(d, &["run", "p.toml", "--shard", "1/2"], 1, &[], &["step `dd` (dedup) needs the whole dataset"]);
    assert!(out.stderr.contains("p.toml:6"), "{}", out.stderr);
    // One shard of one sees everything.
    check_in(d, &["run", "p.toml", "--shard", "0/1"], 0, &["run succeeded"], &[]);
    assert_eq!(read(&d.join("out-part-00000-of-00001.jsonl")), b"{\"text\":\"a\"}\n");
    for bad in ["2/2", "x/2", "1"] {
        let out = weave_in(d, &["run", "p.toml", "--shard", bad]);
        assert_eq!(out.code, 2, "{bad}: {}", out.stderr);
        assert!(out.stderr.contains("--shard"), "{bad}: {}", out.stderr);
    }
    assert!(!d.join("out.jsonl").exists());
}
