//! Outputs never destroy inputs and never leave debris: what a run writes is checked
//! against what it reads before anything is touched, targets that are not plain files are
//! refused, killed runs' temporary files are removed by the next run, and a split
//! export's commit survives a kill.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::check_in;

const PIPELINE: &str = r#"
[[step]]
id = "load"
kind = "load_csv"
path = "in.csv"
batch_size = 64

[[step]]
id = "clean"
kind = "clean"
rules = ["trim"]

[[step]]
id = "export"
kind = "export_jsonl"
path = "out/result.jsonl"
"#;

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write a fixture");
}

/// The temporary files (`.weave-*.tmp`) in `dir`.
fn temporaries(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".weave-") && n.ends_with(".tmp"))
        .collect()
}

/// Starts `weave run p.toml` on a million-row input and returns once its export is
/// writing: once `out/` holds a temporary file that was not in `before`.
fn start_big_run(dir: &Path, before: &[String]) -> Child {
    write(dir, "p.toml", PIPELINE);
    let mut csv = String::from("a,text\n");
    for i in 0..1_000_000 {
        csv.push_str(&format!("{i},  some   text number {i}  \n"));
    }
    write(dir, "in.csv", &csv);
    let child = Command::new(env!("CARGO_BIN_EXE_weave"))
        .args(["run", "p.toml", "--no-cache"])
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weave starts");
    let started = Instant::now();
    let new = || temporaries(&dir.join("out")).iter().any(|t| !before.contains(t));
    while !new() && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(2));
    }
    child
}

fn signal(child: &Child, sig: &str) {
    let sent = Command::new("kill").args([sig, &child.id().to_string()]).status().expect("kill runs");
    assert!(sent.success());
}

#[test]
fn a_killed_runs_temporary_file_is_removed_by_the_next_run() {
    // regression: every SIGKILLed run left its `.weave-*.tmp` (up to 560 MB each) and no
    // later run removed it: 15 orphans after 12 kills.
    let dir = tempfile::tempdir().expect("temp dir");
    let out = dir.path().join("out");
    for _ in 0..3 {
        let mut child = start_big_run(dir.path(), &temporaries(&out));
        signal(&child, "-KILL");
        if child.wait().expect("weave exits").success() {
            return; // Finished before the kill on a very fast machine: nothing to check.
        }
    }
    // Each run removed the files of the runs killed before it: the last one's is left.
    assert_eq!(temporaries(&out).len(), 1, "{:?}", temporaries(&out));
    // The next run writing into the folder removes them (a small input, to be quick).
    write(dir.path(), "in.csv", "a,text\n1, x \n");
    check_in(dir.path(), &["run", "p.toml", "--no-cache"], 0, &["run succeeded"], &[]);
    assert_eq!(temporaries(&out), Vec::<String>::new());
    assert_eq!(std::fs::read_to_string(out.join("result.jsonl")).expect("output"), "{\"a\":\"1\",\"text\":\"x\"}\n");
}

#[test]
fn a_second_ctrl_c_leaves_no_temporary_file() {
    // regression: the forced stop (a second Ctrl-C) exited at once, leaving the run's
    // temporary files behind.
    // near_dedup's calls on batches of 10,000 similar texts are long (a debug build), so
    // the first Ctrl-C takes a few milliseconds to throw the outputs away: the second
    // comes in that time.
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        dir.path(),
        "p.toml",
        "[[step]]\nid = \"load\"\nkind = \"load_csv\"\npath = \"in.csv\"\nbatch_size = 10000\n\n\
         [[step]]\nid = \"similar\"\nkind = \"near_dedup\"\nfields = [\"text\"]\n\n\
         [[step]]\nid = \"export\"\nkind = \"export_jsonl\"\npath = \"out/result.jsonl\"\n",
    );
    let mut csv = String::from("a,text\n");
    for i in 0..30_000 {
        csv.push_str(&format!("{i},some text number {i} and a few more words to hash {}\n", i * 7));
    }
    write(dir.path(), "in.csv", &csv);
    let child = Command::new(env!("CARGO_BIN_EXE_weave"))
        .args(["run", "p.toml"])
        .current_dir(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weave starts");
    let out = dir.path().join("out");
    let started = Instant::now();
    while temporaries(&out).is_empty() && started.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(2));
    }
    // Apart, so that the two are not merged into one pending signal.
    signal(&child, "-INT");
    std::thread::sleep(Duration::from_millis(3));
    signal(&child, "-INT");
    let done = child.wait_with_output().expect("weave exits");
    if done.status.code() == Some(0) {
        return; // Finished first on a very fast machine.
    }
    assert_eq!(done.status.code(), Some(130), "{}", String::from_utf8_lossy(&done.stderr));
    assert_eq!(temporaries(&out), Vec::<String>::new());
    assert!(!out.join("result.jsonl").exists());
}
