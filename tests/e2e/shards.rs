//! Sharded runs (`weave run --shard I/N`): N processes over one cache read every record
//! exactly once between them, and their parts, concatenated in shard order, are the
//! single process's output.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::cli::{check_in, weave_in};

// `compare` in a sharded job: the figures the last shard writes are the job's.
mod compare;

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

/// A pipeline with a mistake, run as a shard, is refused for the mistake alone: its
/// whole-dataset step does not add that it was given no folder to exchange keys in.
#[test]
fn a_shard_of_a_pipeline_with_a_mistake_is_told_the_mistake_alone() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("in.jsonl"), "{\"text\":\"a\"}\n").unwrap();
    let p = "[[step]]\nid = \"l\"\nkind = \"load_jsonl\"\npath = \"in.jsonl\"\n\n[[step]]\nid = \"dd\"\nkind = \"dedup\"\nfield = \"text\"\n\n[[step]]\nid = \"e\"\nkind = \"export_jsonl\"\npath = \"out.jsonl\"\n";
    std::fs::write(d.join("p.toml"), p).unwrap();
    let out = check_in(d, &["run", "p.toml", "--shard", "1/4"], 1, &[], &["unknown key `field`", "p.toml has 1 error"]);
    assert!(!out.stderr.contains("folder"), "{}", out.stderr);
    assert!(std::fs::read_dir(d).unwrap().all(|e| !e.unwrap().file_name().to_string_lossy().starts_with("out")));
}

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
fn a_sharded_run_refuses_bad_shards() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("in.jsonl"), "{\"text\":\"a\"}\n{\"text\":\"a\"}\n").unwrap();
    // (A step that cannot run sharded, of a user's own kind, is refused by name and line:
    // weave-core's `a_shard_refuses_a_stateful_step_that_cannot_run_sharded_naming_it`.)
    let p = "[[step]]\nid = \"l\"\nkind = \"load_jsonl\"\npath = \"in.jsonl\"\n\n[[step]]\nid = \"e\"\nkind = \"export_jsonl\"\npath = \"out.jsonl\"\n";
    std::fs::write(d.join("p.toml"), p).unwrap();
    // One shard of one sees everything.
    check_in(d, &["run", "p.toml", "--shard", "0/1"], 0, &["run succeeded"], &[]);
    assert_eq!(String::from_utf8(read(&d.join("out-part-00000-of-00001.jsonl"))).unwrap().lines().count(), 2);
    for bad in ["2/2", "x/2", "1"] {
        let out = weave_in(d, &["run", "p.toml", "--shard", bad]);
        assert_eq!(out.code, 2, "{bad}: {}", out.stderr);
        assert!(out.stderr.contains("--shard"), "{bad}: {}", out.stderr);
    }
    assert!(!d.join("out.jsonl").exists());
}

/// load → clean → exact dedup (lower-cased, its drops kept) → near dedup → export, over
/// texts with exact, case-only and near duplicates spread through the file.
const DEDUP_PIPELINE: &str = r#"
[pipeline]
name = "sharded-dedup"
seed = 11

[[step]]
id = "load"
kind = "load_csv"
path = "in.csv"
types = { id = "int" }
batch_size = 64

[[step]]
id = "clean"
kind = "clean"
fields = ["text"]
rules = ["trim", "collapse_whitespace"]

[[step]]
id = "dedup"
kind = "dedup"
fields = ["text"]
normalize = ["lowercase"]
exclusions = "out/duplicates.jsonl"

[[step]]
id = "near"
kind = "near_dedup"
fields = ["text"]
threshold = 0.7

[[step]]
id = "export"
kind = "export_jsonl"
path = "out/kept.jsonl"
"#;

/// 1,500 rows: a third repeats one of 150 texts (some upper-cased), a fifth changes one
/// word of one, the rest are new.
fn dedup_input() -> String {
    let words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu"];
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let text = |next: &mut dyn FnMut(usize) -> usize| {
        let n = 8 + next(10);
        (0..n).map(|_| words[next(words.len())]).collect::<Vec<_>>().join(" ")
    };
    let base: Vec<String> = (0..150).map(|_| text(&mut next)).collect();
    let mut csv = String::from("id,text\n");
    for i in 0..1500 {
        let t = match next(15) {
            0..=4 => base[next(base.len())].clone(),
            5 => base[next(base.len())].to_uppercase(),
            6..=8 => {
                let mut w: Vec<String> = base[next(base.len())].split(' ').map(String::from).collect();
                let at = next(w.len());
                w[at] = words[next(words.len())].to_owned();
                w.join(" ")
            }
            _ => text(&mut next),
        };
        csv.push_str(&format!("{i},  {t} \n"));
    }
    csv
}

/// Runs the `n` shards of `p.toml` in `d` all at once, as an array job's tasks run, and
/// waits for them: each must succeed.
fn run_together(d: &Path, n: usize) {
    for (ok, stderr) in shards_together(d, n, true) {
        assert!(ok, "{n} shards: {stderr}");
    }
}

/// Starts shard `i` of `n` of `p.toml` in `d` (`quiet`: with `-q`), its stderr kept.
fn start_shard(d: &Path, i: usize, n: usize, quiet: bool) -> std::process::Child {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weave"));
    for v in crate::cli::SHARD_VARIABLES {
        c.env_remove(v);
    }
    if quiet {
        c.arg("-q");
    }
    c.args(["run", "p.toml", "--shard", &format!("{i}/{n}")])
        .current_dir(d)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("weave starts")
}

/// Runs the `n` shards of `p.toml` in `d` all at once (`quiet`: with `-q`) and returns,
/// for each, whether it succeeded and what it wrote to stderr.
fn shards_together(d: &Path, n: usize, quiet: bool) -> Vec<(bool, String)> {
    let children: Vec<_> = (0..n).map(|i| start_shard(d, i, n, quiet)).collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().unwrap();
            (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
        })
        .collect()
}

#[test]
fn shards_with_exact_and_near_dedup_started_together_give_the_single_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("p.toml"), DEDUP_PIPELINE).unwrap();
    std::fs::write(d.join("in.csv"), dedup_input()).unwrap();
    check_in(d, &["run", "p.toml"], 0, &["run succeeded"], &[]);
    let kept = read(&d.join("out/kept.jsonl"));
    let duplicates = read(&d.join("out/duplicates.jsonl"));
    let (k, dup) =
        (String::from_utf8_lossy(&kept).lines().count(), String::from_utf8_lossy(&duplicates).lines().count());
    assert!(k > 500 && dup > 300, "the input has both kinds of duplicates: {k} kept, {dup} exact");
    for n in [1usize, 2, 3, 4, 7] {
        // Every shard at once, as an array job's tasks run: each waits for the earlier
        // shards' keys before deciding on its own records.
        run_together(d, n);
        let parts = |stem: &str| -> Vec<std::path::PathBuf> {
            (0..n).map(|i| d.join(format!("out/{stem}-part-{i:05}-of-{n:05}.jsonl"))).collect()
        };
        assert_eq!(
            String::from_utf8(concatenated(&parts("kept"))).unwrap(),
            String::from_utf8(kept.clone()).unwrap(),
            "kept at {n} shards"
        );
        assert_eq!(concatenated(&parts("duplicates")), duplicates, "exact duplicates at {n} shards");
    }
}

#[test]
fn shards_run_one_after_another_in_shard_order_give_the_single_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("p.toml"), DEDUP_PIPELINE).unwrap();
    std::fs::write(d.join("in.csv"), dedup_input()).unwrap();
    check_in(d, &["run", "p.toml", "--no-cache"], 0, &["run succeeded"], &[]);
    let kept = read(&d.join("out/kept.jsonl"));
    for i in 0..3 {
        check_in(d, &["run", "p.toml", "--shard", &format!("{i}/3")], 0, &["run succeeded"], &[]);
    }
    let parts: Vec<_> = (0..3).map(|i| d.join(format!("out/kept-part-{i:05}-of-00003.jsonl"))).collect();
    assert_eq!(concatenated(&parts), kept);
    // Run again, every shard's output is taken from the cache; the keys stay in place for
    // a shard computed again.
    for i in [2, 0, 1] {
        check_in(d, &["run", "p.toml", "--shard", &format!("{i}/3")], 0, &["run succeeded"], &[]);
    }
    assert_eq!(concatenated(&parts), kept);
}

/// `validate` with a uniqueness check (the shards exchange keys, as dedup's) after one
/// without (each shard judges its own records), with the records that fail kept in an
/// exclusion file.
const VALIDATE_PIPELINE: &str = r#"
[pipeline]
name = "sharded-validate"
seed = 11

[[step]]
id = "load"
kind = "load_csv"
path = "in.csv"
types = { id = "int" }
batch_size = 64

[[step]]
id = "long"
kind = "validate"
checks = [{ check = "length", field = "text", min_words = 9 }]
on_fail = "flag"
prefix = "long_"

[[step]]
id = "unique"
kind = "validate"
checks = [
  { check = "length", field = "text", max_words = 16 },
  { check = "uniqueness", fields = ["text"], normalize = ["lowercase"] },
]
exclusions = "out/invalid.jsonl"

[[step]]
id = "export"
kind = "export_jsonl"
path = "out/valid.jsonl"
"#;

/// Validation over the whole dataset runs sharded: started together, and stage by stage,
/// the parts in shard order are the single process's output and exclusion file.
#[test]
fn shards_with_a_uniqueness_check_give_the_single_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("p.toml"), VALIDATE_PIPELINE).unwrap();
    std::fs::write(d.join("in.csv"), dedup_input()).unwrap();
    check_in(d, &["run", "p.toml", "--no-cache"], 0, &["run succeeded"], &[]);
    let valid = read(&d.join("out/valid.jsonl"));
    let invalid = read(&d.join("out/invalid.jsonl"));
    let text = String::from_utf8_lossy(&invalid).into_owned();
    assert!(text.contains("uniqueness: duplicate") && text.contains("length.text: over max_words"), "{text}");
    let plan = check_in(d, &["plan", "p.toml", "--shards", "3"], 0, &["2 stages"], &[]);
    assert!(!plan.stdout.contains("cannot run sharded"), "{}", plan.stdout);
    let parts = |stem: &str, n: usize| -> Vec<std::path::PathBuf> {
        (0..n).map(|i| d.join(format!("out/{stem}-part-{i:05}-of-{n:05}.jsonl"))).collect()
    };
    for n in [2usize, 3] {
        run_together(d, n);
        assert_eq!(concatenated(&parts("valid", n)), valid, "valid records at {n} shards");
        assert_eq!(concatenated(&parts("invalid", n)), invalid, "invalid records at {n} shards");
        for p in parts("valid", n).iter().chain(&parts("invalid", n)) {
            std::fs::remove_file(p).unwrap();
        }
    }
    // Stage by stage, the last shard first.
    for k in 1..=2 {
        for i in (0..3).rev() {
            run_stage(d, i, 3, k);
        }
    }
    assert_eq!(concatenated(&parts("valid", 3)), valid);
    assert_eq!(concatenated(&parts("invalid", 3)), invalid);
}

/// Runs `weave run p.toml --shard I/N --stage K` in `d`, failing if it does not end
/// within two minutes (a stage that waited for another shard would never end here).
fn run_stage(d: &Path, i: usize, n: usize, k: usize) -> serde_json::Value {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weave"));
    for v in crate::cli::SHARD_VARIABLES {
        c.env_remove(v);
    }
    let mut child = c
        .args(["-q", "run", "p.toml", "--shard", &format!("{i}/{n}"), "--stage", &k.to_string()])
        .current_dir(d)
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("weave starts");
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            panic!("stage {k} of shard {i}/{n} did not end: it waited for another shard");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "stage {k} of shard {i}/{n}: {}", String::from_utf8_lossy(&out.stderr));
    // The run's record.
    last_report(d, i, n)
}

fn step<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["steps"].as_array().unwrap().iter().find(|s| s["step"] == id).unwrap_or_else(|| panic!("no step {id}"))
}

/// A job run stage by stage (`--stage K`, as `weave slurm submit` runs it, one array job
/// per stage): in each stage the shards run in any order without waiting for one another,
/// a stage before the last writes no output, the stage after it reads the whole-dataset
/// step's input back from the cache, and the last stage's parts in order are the single
/// process's output.
#[test]
fn shards_run_stage_by_stage_give_the_single_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("p.toml"), DEDUP_PIPELINE).unwrap();
    std::fs::write(d.join("in.csv"), dedup_input()).unwrap();
    check_in(d, &["run", "p.toml", "--no-cache"], 0, &["run succeeded"], &[]);
    let kept = read(&d.join("out/kept.jsonl"));
    let duplicates = read(&d.join("out/duplicates.jsonl"));
    let n = 3;
    for k in 1..=3 {
        // Last shard first: nothing a stage needs comes from a shard of the same stage.
        for i in (0..n).rev() {
            let report = run_stage(d, i, n, k);
            match k {
                1 => {
                    // Up to dedup's input, and dedup only publishes its keys.
                    let ids: Vec<&str> =
                        report["steps"].as_array().unwrap().iter().filter_map(|s| s["step"].as_str()).collect();
                    assert_eq!(ids, ["load", "clean", "dedup"], "stage 1 runs what dedup needs");
                    assert_eq!(step(&report, "dedup")["records_out"], 0);
                }
                2 => {
                    // dedup decides; its input is read back from the cache stage 1 left.
                    assert_eq!(step(&report, "clean")["cache"], "replayed", "{report:#}");
                    assert_eq!(step(&report, "load")["cache"], "skipped", "{report:#}");
                    assert!(report["steps"].as_array().unwrap().iter().all(|s| s["step"] != "export"));
                }
                _ => {
                    // near_dedup's input, dedup's output, was kept by stage 2.
                    assert_eq!(step(&report, "dedup")["cache"], "replayed", "{report:#}");
                    assert_eq!(step(&report, "clean")["cache"], "skipped", "{report:#}");
                    assert_eq!(step(&report, "export")["records_in"], step(&report, "near")["records_out"]);
                }
            }
            // The export's parts are the last stage's; dedup's exclusion file is written by
            // the stage in which it decides.
            let written: Vec<String> = std::fs::read_dir(d.join("out"))
                .unwrap()
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .filter(|name| name.contains("-part-"))
                .collect();
            let allowed = |name: &String| k >= 3 || (k == 2 && name.starts_with("duplicates-"));
            assert!(written.iter().all(allowed), "stage {k} wrote {written:?}");
        }
    }
    let parts = |stem: &str| -> Vec<std::path::PathBuf> {
        (0..n).map(|i| d.join(format!("out/{stem}-part-{i:05}-of-{n:05}.jsonl"))).collect()
    };
    assert_eq!(String::from_utf8(concatenated(&parts("kept"))).unwrap(), String::from_utf8(kept).unwrap());
    assert_eq!(concatenated(&parts("duplicates")), duplicates);
    // A stage out of range, or without a shard, is refused.
    check_in(d, &["run", "p.toml", "--shard", "0/3", "--stage", "4"], 1, &[], &["--stage 4", "3 stages"]);
    check_in(d, &["run", "p.toml", "--shard", "0/3", "--stage", "0"], 1, &[], &["--stage 0"]);
    check_in(d, &["run", "p.toml", "--stage", "1"], 1, &[], &["--stage is for a shard"]);
}

/// A plain fraction (per shard), a stratified split, a stratified fraction with its own
/// seed, a sample of `n` and a sample of `n` stratified by the split: each of the last four
/// needs the whole dataset and starts a stage.
pub(crate) const SAMPLE_PIPELINE: &str = r#"
[pipeline]
name = "sharded-sample"
seed = 5

[[step]]
id = "load"
kind = "load_jsonl"
path = "in/*"
batch_size = 50

[[step]]
id = "some"
kind = "sample"
fraction = 0.9

[[step]]
id = "split"
kind = "split"
fractions = { train = 0.8, dev = 0.1, test = 0.1 }
stratify_by = "label"

[[step]]
id = "thin"
kind = "sample"
fraction = 0.6
stratify_by = "label"
seed = 21
exclusions = "out/thinned.jsonl"

[[step]]
id = "few"
kind = "sample"
n = 400
exclusions = "out/unsampled.jsonl"

[[step]]
id = "per_split"
kind = "sample"
n = 90
stratify_by = "split"

[[step]]
id = "export"
kind = "export_jsonl"
path = "out/sample.jsonl"
"#;

/// The input of [`SAMPLE_PIPELINE`]: 400 records in a compressed file (read whole by the
/// shard its first byte falls to, and larger in bytes than the plain file after it, so
/// that with 4 shards one shard's range lies inside it and that shard has no input), then
/// 1,200 in a plain JSONL file. Labels are uneven (one rare class).
pub(crate) fn sample_input(d: &Path) {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut line = |i: usize, noise: usize| {
        let label = match next() % 20 {
            0 => "rare",
            1..=6 => "middle",
            _ => "common",
        };
        let hex: String = (0..noise).map(|_| format!("{:x}", next() % 16)).collect();
        format!("{{\"id\":{i},\"label\":\"{label}\",\"noise\":\"{hex}\"}}\n")
    };
    let zipped: String = (0..400).map(|i| line(i, 600)).collect();
    let plain: String = (400..1600).map(|i| line(i, 8)).collect();
    std::fs::create_dir_all(d.join("in")).unwrap();
    let zst = zstd::encode_all(zipped.as_bytes(), 3).unwrap();
    assert!(zst.len() > plain.len(), "the compressed file spans a whole range at 4 shards");
    std::fs::write(d.join("in/a.jsonl.zst"), zst).unwrap();
    std::fs::write(d.join("in/b.jsonl"), plain).unwrap();
}

/// Sampling and a stratified split over the whole dataset run sharded: at 1 to 4 shards
/// started together (uneven shares, one shard without input at 4) and stage by stage, the
/// parts in shard order are the single process's output, byte for byte.
#[test]
fn shards_with_samples_and_a_stratified_split_give_the_single_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("p.toml"), SAMPLE_PIPELINE).unwrap();
    sample_input(d);
    check_in(d, &["run", "p.toml", "--no-cache"], 0, &["run succeeded"], &[]);
    let whole = String::from_utf8(read(&d.join("out/sample.jsonl"))).unwrap();
    assert_eq!(whole.lines().count(), 90, "the last sample keeps 90");
    let thinned = String::from_utf8(read(&d.join("out/thinned.jsonl"))).unwrap();
    let sorted = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        lines.sort();
        lines
    };
    let unsampled = sorted(&String::from_utf8(read(&d.join("out/unsampled.jsonl"))).unwrap());
    assert!(unsampled.len() > 100, "{}", unsampled.len());
    for split in ["train", "dev", "test"] {
        assert!(whole.contains(&format!("\"split\":\"{split}\"")), "{split} is among the kept");
    }
    let plan = check_in(d, &["plan", "p.toml", "--shards", "4"], 0, &["5 stages"], &[]);
    assert!(!plan.stdout.contains("cannot run sharded"), "{}", plan.stdout);
    let line = |id: &str| plan.stdout.lines().find(|l| l.starts_with(&format!("{id} "))).unwrap_or_default().to_owned();
    assert!(line("some").contains("runs on the shard's records") && line("some").contains(" 1 "), "{}", plan.stdout);
    assert!(line("split").contains("takes in the earlier shards'") && line("split").contains(" 2 "), "{}", plan.stdout);
    assert!(line("few").contains("takes in every shard's") && line("few").contains(" 4 "), "{}", plan.stdout);
    assert!(line("per_split").contains("takes in every shard's"), "{}", plan.stdout);
    let parts_of = |stem: &str, n: usize| -> Vec<std::path::PathBuf> {
        (0..n).map(|i| d.join(format!("out/{stem}-part-{i:05}-of-{n:05}.jsonl"))).collect()
    };
    let parts = |n: usize| parts_of("sample", n);
    for n in [1usize, 2, 3, 4] {
        run_together(d, n);
        same_lines(&concatenated(&parts(n)), &whole, &format!("at {n} shards"));
        // A stratified fraction drops as the single process does, in order; a sample of
        // `n` drops the same records (the single process lets a record out when it leaves
        // the reservoir, a shard in input order).
        same_lines(&concatenated(&parts_of("thinned", n)), &thinned, &format!("thinned at {n} shards"));
        let dropped = String::from_utf8(concatenated(&parts_of("unsampled", n))).unwrap();
        assert_eq!(sorted(&dropped), unsampled, "unsampled at {n} shards");
    }
    // At 4 shards one shard has no input, and writes an empty part.
    let exports: Vec<u64> =
        (0..4).map(|i| step(&last_report(d, i, 4), "load")["records_out"].as_u64().unwrap()).collect();
    assert!(exports.contains(&0) && exports.iter().sum::<u64>() == 1600, "{exports:?}");
    // Stage by stage, the last shard first in each stage: no stage waits for a shard of
    // its own stage, and only the last writes the parts.
    let n = 3;
    for p in parts(n) {
        std::fs::remove_file(p).unwrap();
    }
    for k in 1..=5 {
        for i in (0..n).rev() {
            let report = run_stage(d, i, n, k);
            if k == 5 {
                // Each shard's figures are its own: what it saw and kept.
                assert_eq!(step(&report, "few")["records_in"], step(&report, "thin")["records_out"], "{report:#}");
            } else {
                assert!(parts(n).iter().all(|p| !p.exists()), "stage {k} writes no part");
            }
        }
    }
    same_lines(&concatenated(&parts(n)), &whole, "stage by stage");
}

/// The job folder `weave slurm submit` would have made for `p.toml` in `d`, without its
/// submissions, for a job of `tasks` shards and `stages` stages of the pipeline whose
/// single run reported `single`: its path, for `--job-dir` and `weave report`.
fn job_by_hand(d: &Path, single: &serde_json::Value, tasks: usize, stages: usize) -> String {
    let job = d.join(".weave/jobs/job-by-hand");
    std::fs::create_dir_all(&job).unwrap();
    let meta = serde_json::json!({
        "pipeline": single["pipeline"],
        "pipeline_file": d.join("p.toml").to_string_lossy(),
        "config_hash": single["config_hash"],
        "tasks": tasks,
        "stages": stages,
        "submissions": [],
    });
    std::fs::write(job.join("job.json"), meta.to_string()).unwrap();
    job.to_string_lossy().into_owned()
}

/// `weave report JOB` of a job run stage by stage (here by hand, with `--job-dir`, as
/// `weave slurm submit`'s tasks run): each step's figures are the shards' from the stage
/// that ran it, not the last stage's, which reads its input back from the cache.
#[test]
fn a_staged_jobs_report_takes_each_steps_figures_from_the_stage_that_ran_it() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("p.toml"), SAMPLE_PIPELINE).unwrap();
    sample_input(d);
    check_in(d, &["run", "p.toml", "--no-cache"], 0, &["run succeeded"], &[]);
    let run = std::fs::read_dir(d.join(".weave/runs")).unwrap().next().unwrap().unwrap().path();
    let single: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let jobarg = job_by_hand(d, &single, 3, 5);
    for k in 1..=5 {
        for i in 0..3 {
            let shard = format!("{i}/3");
            let stage = k.to_string();
            check_in(d, &["run", "p.toml", "--shard", &shard, "--stage", &stage, "--job-dir", &jobarg], 0, &[], &[]);
        }
    }
    let out = check_in(d, &["report", &jobarg, "--format", "json"], 0, &[], &[]);
    let r: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(r["status"], "succeeded", "{r:#}");
    // Every step's records in and out, over the job, are the single run's.
    for id in ["load", "some", "split", "thin", "few", "per_split", "export"] {
        let (job, one) = (step(&r, id), step(&single, id));
        assert_eq!(
            (&job["records_in"], &job["records_out"], &job["dropped"]),
            (&one["records_in"], &one["records_out"], &one["dropped"]),
            "{id}: {job:#}"
        );
    }
    assert_eq!(step(&r, "few")["records_out"], 400);
}

/// Fails, naming the first line that differs, unless `got` is `want` byte for byte.
fn same_lines(got: &[u8], want: &str, what: &str) {
    if got == want.as_bytes() {
        return;
    }
    let got = String::from_utf8_lossy(got);
    let (g, w): (Vec<&str>, Vec<&str>) = (got.lines().collect(), want.lines().collect());
    let at = g.iter().zip(&w).position(|(a, b)| a != b).unwrap_or(g.len().min(w.len()));
    panic!("{what}: {} lines for {}; line {} is {:?}, not {:?}", g.len(), w.len(), at + 1, g.get(at), w.get(at));
}

/// The newest run report of shard `i` of `n` in `d`.
fn last_report(d: &Path, i: usize, n: usize) -> serde_json::Value {
    let part = format!("part-{i:05}-of-{n:05}");
    let mut reports: Vec<_> = std::fs::read_dir(d.join(".weave/runs"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().ends_with(&part)))
        .collect();
    reports.sort_by_key(|p| std::fs::metadata(p.join("report.json")).and_then(|m| m.modified()).ok());
    let path = reports.last().expect("a run record").join("report.json");
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A stage that decides with the keys its shard published in the stage before checks its
/// records against them: keys that are not its records' (a damaged exchange file) fail the
/// stage, naming the cause, rather than giving other records' decisions.
#[test]
fn a_stage_whose_published_keys_are_not_its_records_fails_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("p.toml"), DEDUP_PIPELINE).unwrap();
    std::fs::write(d.join("in.csv"), dedup_input()).unwrap();
    let n = 3;
    for i in 0..n {
        run_stage(d, i, n, 1);
    }
    // The keys shard 1 published, each changed.
    let folders: Vec<_> =
        std::fs::read_dir(d.join(".weave/cache/exchange")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(folders.len(), 1, "stage 1 published dedup's keys only: {folders:?}");
    let keys = folders[0].join("part-00001-of-00003.keys");
    let mut bytes = std::fs::read(&keys).unwrap();
    assert!(bytes.len() > 12 + 16, "shard 1 has records");
    for b in &mut bytes[12..28] {
        *b ^= 0xff;
    }
    std::fs::write(&keys, bytes).unwrap();
    check_in(
        d,
        &["run", "p.toml", "--shard", "1/3", "--stage", "2"],
        1,
        &[],
        &["differ from the keys it published", "shard 1"],
    );
    assert!(!d.join("out/duplicates-part-00001-of-00003.jsonl").exists(), "nothing half-written");
}

#[test]
fn plan_with_shards_shows_each_steps_part_and_the_stages() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("p.toml"), DEDUP_PIPELINE).unwrap();
    std::fs::write(d.join("in.csv"), "id,text\n1,a\n").unwrap();
    let out = check_in(d, &["plan", "p.toml", "--shards", "4"], 0, &["as 4 shards", "3 stages"], &[]);
    let line = |id: &str| out.stdout.lines().find(|l| l.starts_with(&format!("{id} "))).map(str::to_owned);
    assert!(line("dedup").is_some_and(|l| l.contains(" 2 ") && l.contains("exchanges its keys")), "{}", out.stdout);
    assert!(line("near").is_some_and(|l| l.contains(" 3 ")), "{}", out.stdout);
    let json = check_in(d, &["plan", "p.toml", "--shards", "4", "--format", "json"], 0, &[], &[]);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).unwrap();
    assert_eq!(v["sharded"]["stages"], 3);
    // Every built-in whole-dataset step runs sharded: a compare in the middle starts a stage.
    let compared = DEDUP_PIPELINE.replace(
        "kind = \"near_dedup\"\nfields = [\"text\"]\nthreshold = 0.7",
        "kind = \"compare\"\nafter = [\"clean\", \"dedup\"]",
    );
    std::fs::write(d.join("p.toml"), compared).unwrap();
    let out = check_in(d, &["plan", "p.toml", "--shards", "2"], 0, &["3 stages"], &[]);
    assert!(!out.stdout.contains("cannot run sharded"), "{}", out.stdout);
    let line = |id: &str| out.stdout.lines().find(|l| l.starts_with(&format!("{id} "))).map(str::to_owned);
    assert!(line("near").is_some_and(|l| l.contains(" 3 ") && l.contains("the last shard")), "{}", out.stdout);
}

#[test]
fn slurm_submit_without_sbatch_says_so_and_leaves_no_job_folder() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("in.jsonl"), "{\"a\":1}\n").unwrap();
    let p = "[[step]]\nid = \"l\"\nkind = \"load_jsonl\"\npath = \"in.jsonl\"\n\n[[step]]\nid = \"e\"\nkind = \"export_jsonl\"\npath = \"out.jsonl\"\n";
    std::fs::write(d.join("p.toml"), p).unwrap();
    // A PATH without Slurm's commands.
    let out = Command::new(env!("CARGO_BIN_EXE_weave"))
        .args(["slurm", "submit", "p.toml", "--tasks", "2"])
        .current_dir(d)
        .env("PATH", d)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot run sbatch"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let jobs = std::fs::read_dir(d.join(".weave/jobs")).map(|r| r.count()).unwrap_or(0);
    assert_eq!(jobs, 0, "no job folder left");
    let out = weave_in(d, &["slurm", "submit", "p.toml", "--tasks", "0"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert!(out.stderr.contains("--tasks"), "{}", out.stderr);
    let out = weave_in(d, &["slurm", "status", "no-such-job"]);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("not a job folder"), "{}", out.stderr);
}

/// A job of 3 shards over one cache, each standing in for a machine of its own (its pid
/// space faked with WEAVE_PID_SPACE), is frozen (SIGSTOP) once each has pinned its entries;
/// `weave cache gc --max-size 0` then removes nothing (the pins' leases are fresh); the
/// shards go on (SIGCONT) and the job's parts in order are the single process's output.
#[test]
fn gc_during_a_sharded_job_removes_nothing_a_live_shard_holds() {
    let dir = crate::cache::setup(300_000, 64);
    let d = dir.path();
    check_in(d, &["run", "p.toml", "--no-cache"], 0, &["run succeeded"], &[]);
    let whole = read(&d.join("out/result.jsonl"));
    let children: Vec<_> = (0..3)
        .map(|i| {
            let mut c = Command::new(env!("CARGO_BIN_EXE_weave"));
            for v in crate::cli::SHARD_VARIABLES {
                c.env_remove(v);
            }
            c.args(["-q", "run", "p.toml", "--shard", &format!("{i}/3")])
                .current_dir(d)
                .env_remove("WEAVE_CACHE_DIR")
                .env("WEAVE_PID_SPACE", format!("00000000dec0de0{i}"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .expect("weave starts")
        })
        .collect();
    let pins = d.join(".weave/cache/pins");
    let start = std::time::Instant::now();
    let pinned = || std::fs::read_dir(&pins).map(|p| p.flatten().count()).unwrap_or(0);
    while !(pinned() >= 3 && crate::cache::entries(d).len() >= 3) && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let signal = |sig: &str| {
        for c in &children {
            Command::new("kill").args([sig, &c.id().to_string()]).status().expect("kill runs");
        }
    };
    signal("-STOP");
    // `kill` returns before every thread has stopped: wait until each says `T` (stopped).
    let stopped = |pid: u32| {
        std::fs::read_dir(format!("/proc/{pid}/task")).map_or(true, |tasks| {
            tasks.flatten().all(|t| {
                let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
                stat.rfind(')').is_none_or(|i| matches!(stat[i + 1..].trim_start().chars().next(), Some('T' | 'Z')))
            })
        })
    };
    while !children.iter().all(|c| stopped(c.id())) && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(50));
    let held = crate::cache::entries(d);
    let live_pins = pinned();
    check_in(d, &["cache", "gc", "--max-size", "0"], 0, &[], &[]);
    let after = crate::cache::entries(d);
    signal("-CONT");
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    if live_pins >= 3 {
        // Every shard was still running when gc ran: it kept everything they hold.
        assert_eq!(after, held, "gc removed entries that live shards pinned");
    }
    let parts: Vec<_> = (0..3).map(|i| d.join(format!("out/result-part-{i:05}-of-00003.jsonl"))).collect();
    assert_eq!(concatenated(&parts), whole);
}

// `mix` in a sharded job: the last shard passes on the chosen synthetic records.
mod mix;

/// Writes `in.jsonl` in `d`, `rows` records whose texts repeat (a text in ~4), and
/// `p.toml`: load → dedup on the text → export. Returns the input's lines.
fn dedup_job(d: &Path, rows: usize) -> Vec<String> {
    let lines: Vec<String> =
        (0..rows).map(|i| format!("{{\"id\":{i},\"text\":\"text {}\"}}", i % (rows / 4).max(1))).collect();
    std::fs::write(d.join("in.jsonl"), lines.join("\n") + "\n").unwrap();
    std::fs::write(
        d.join("p.toml"),
        "[[step]]\nid = \"load\"\nkind = \"load_jsonl\"\npath = \"in.jsonl\"\n\n\
         [[step]]\nid = \"dedup\"\nkind = \"dedup\"\nfields = [\"text\"]\n\n\
         [[step]]\nid = \"out\"\nkind = \"export_jsonl\"\npath = \"out.jsonl\"\n",
    )
    .unwrap();
    lines
}

// regression: run together (without `--stage`), the shards after one that failed before
// its keys were out waited for them without end, warning every 10 minutes.
#[test]
fn a_shard_that_fails_before_its_keys_are_out_stops_the_shards_waiting_for_them() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut lines = dedup_job(d, 400);
    lines[20] = "{\"id\":20,\"text\":".to_owned();
    std::fs::write(d.join("in.jsonl"), lines.join("\n") + "\n").unwrap();
    let started = std::time::Instant::now();
    let runs = shards_together(d, 2, false);
    assert!(started.elapsed() < std::time::Duration::from_secs(60), "the shards stopped, not waited");
    let (ok0, err0) = &runs[0];
    assert!(!ok0 && err0.contains("in.jsonl:21: invalid JSON"), "shard 0 fails on its bad line: {err0}");
    let (ok1, err1) = &runs[1];
    assert!(!ok1, "shard 1 stops: {err1}");
    assert!(
        err1.contains("step \"dedup\" failed: shard 0/2 of the job failed (step \"load\": bad record at in.jsonl:21")
            && err1.contains(") before its keys for this step were out")
            && err1.contains("bad record at in.jsonl:21: invalid JSON")
            && err1.contains("weave run --shard 0/2"),
        "shard 1 names shard 0 and its error: {err1}"
    );
    assert!(!d.join("out-part-00000-of-00002.jsonl").exists() && !d.join("out-part-00001-of-00002.jsonl").exists());
}

#[test]
fn a_shard_run_again_takes_back_its_failure_note() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    dedup_job(d, 400);
    run_together(d, 2);
    let single: Vec<u8> =
        concatenated(&[d.join("out-part-00000-of-00002.jsonl"), d.join("out-part-00001-of-00002.jsonl")]);
    let folders: Vec<_> =
        std::fs::read_dir(d.join(".weave/cache/exchange")).unwrap().flatten().map(|e| e.path()).collect();
    let [folder] = &folders[..] else { panic!("one exchange folder: {folders:?}") };
    // As if shard 0 had failed before its keys were out: shard 1, computing its dedup
    // again, stops and says why.
    std::fs::remove_file(folder.join("part-00000-of-00002.keys")).unwrap();
    let note = folder.join("part-00000-of-00002.failed");
    std::fs::write(&note, "step \"load\" failed: the disk is full").unwrap();
    check_in(
        d,
        &["run", "p.toml", "--shard", "1/2", "--refresh", "dedup"],
        1,
        &[],
        &[
            "shard 0/2 of the job failed (step \"load\" failed: the disk is full) before its keys for this step were out",
        ],
    );
    // Shard 0 runs again: its note goes, its keys come, and shard 1 then runs.
    check_in(d, &["run", "p.toml", "--shard", "0/2", "--refresh", "dedup"], 0, &["run succeeded"], &[]);
    assert!(!note.exists(), "the note is taken back");
    assert!(folder.join("part-00000-of-00002.keys").exists());
    check_in(d, &["run", "p.toml", "--shard", "1/2", "--refresh", "dedup"], 0, &["run succeeded"], &[]);
    let again = concatenated(&[d.join("out-part-00000-of-00002.jsonl"), d.join("out-part-00001-of-00002.jsonl")]);
    assert_eq!(again, single);
}

// regression: the shards waiting for the keys of a shard that was killed outright waited
// without end (warning every 10 minutes), as they do for one that has not started.
#[test]
fn a_killed_shard_stops_the_shards_waiting_for_its_keys_and_a_resumed_job_equals_the_single_run() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    const KEY: &str = "shards-test-key";
    // Shard 1's records ask an LLM that does not answer while `hang` holds: it is killed
    // inside its run, before its keys are out, whatever the machine's speed.
    let hang = Arc::new(AtomicBool::new(true));
    let server = {
        let hang = Arc::clone(&hang);
        weave_testkit::TestServer::builder()
            .api_key(KEY)
            .start(move |r| {
                let reply = weave_testkit::Reply::text(format!("re: {}", r.prompt()));
                if r.prompt().contains("hang") && hang.load(Ordering::Relaxed) {
                    reply.after(Duration::from_secs(600))
                } else {
                    reply
                }
            })
            .expect("server")
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // 600 lines of one length, so that shard 1 of 3 has exactly records 200 to 399.
    let lines: Vec<String> = (0..600)
        .map(|i| {
            let mood = if (200..400).contains(&i) { "hang" } else { "fine" };
            format!("{{\"id\":\"{i:04}\",\"mood\":\"{mood}\",\"text\":\"text {:03}\"}}", i % 150)
        })
        .collect();
    std::fs::write(d.join("in.jsonl"), lines.join("\n") + "\n").unwrap();
    std::fs::write(
        d.join("p.toml"),
        format!(
            "[llm.local]\nbase_url = \"{}\"\nmodel = \"test-model\"\napi_key_env = \"WEAVE_E2E_KEY\"\n\n\
             [[step]]\nid = \"load\"\nkind = \"load_jsonl\"\npath = \"in.jsonl\"\n\n\
             [[step]]\nid = \"ask\"\nkind = \"llm_generate\"\nprompt = \"Say {{mood}}: {{text}}\"\n\n\
             [[step]]\nid = \"dedup\"\nkind = \"dedup\"\nfields = [\"text\"]\n\n\
             [[step]]\nid = \"out\"\nkind = \"export_jsonl\"\npath = \"out.jsonl\"\n",
            server.url()
        ),
    )
    .unwrap();
    let start = |i: usize| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_weave"));
        for v in crate::cli::SHARD_VARIABLES {
            c.env_remove(v);
        }
        c.args(["run", "p.toml", "--shard", &format!("{i}/3")])
            .current_dir(d)
            .env_remove("RUST_LOG")
            .env("WEAVE_E2E_KEY", KEY)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("weave starts")
    };
    let run = |i: usize| {
        let out = start(i).wait_with_output().unwrap();
        assert!(out.status.success(), "shard {i}: {}", String::from_utf8_lossy(&out.stderr));
    };
    // Shards 1 and 2 start; shard 1 is killed while its records wait for the LLM.
    let mut one = start(1);
    let two = start(2);
    let since = std::time::Instant::now();
    while server.total() < 1 || !running_note(d, 1) {
        assert!(since.elapsed() < Duration::from_secs(60), "shard 1 runs and asks the LLM");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pid = one.id();
    one.kill().unwrap();
    one.wait().unwrap();
    hang.store(false, Ordering::Relaxed);
    // Shard 0 runs; shard 2, once it has shard 0's keys, waits for shard 1's, and stops.
    run(0);
    let out = two.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "shard 1/3 of the job ended without finishing (its process, {pid}, is gone: killed, or out of memory?) before its keys for this step were out"
        )),
        "{stderr}"
    );
    // The job resumed: shard 1, then shard 2; the parts are the single run's records.
    run(1);
    run(2);
    let parts: Vec<_> = (0..3).map(|i| d.join(format!("out-part-{i:05}-of-00003.jsonl"))).collect();
    let joined = concatenated(&parts);
    std::fs::write(
        d.join("single.toml"),
        std::fs::read_to_string(d.join("p.toml")).unwrap().replace("out.jsonl", "single.jsonl"),
    )
    .unwrap();
    let single = Command::new(env!("CARGO_BIN_EXE_weave"))
        .args(["-q", "run", "single.toml"])
        .current_dir(d)
        .env("WEAVE_E2E_KEY", KEY)
        .output()
        .unwrap();
    assert!(single.status.success(), "{}", String::from_utf8_lossy(&single.stderr));
    assert_eq!(joined, read(&d.join("single.jsonl")));
    assert!((0..3).all(|i| !running_note(d, i)), "no running note is left behind");
}

/// Whether shard `i` of 3 has a running note in an exchange folder under `d`'s cache.
fn running_note(d: &Path, i: usize) -> bool {
    std::fs::read_dir(d.join(".weave/cache/exchange"))
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.path().join(format!("part-{i:05}-of-00003.running")).exists())
}
