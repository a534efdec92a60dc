//! Outputs never destroy inputs and never leave debris: what a run writes is checked
//! against what it reads before anything is touched, targets that are not plain files are
//! refused, killed runs' temporary files are removed by the next run, and a split
//! export's commit survives a kill.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cli::check_in;
use crate::run::write;

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
    write(dir, "p.toml", &crate::run::PIPELINE.replace("ON_BAD", "batch_size = 64"));
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

/// A folder with `in.csv` (with a bad row, so that a run with `--quarantine` has
/// something to set aside) and `p.toml`: load `in.csv`, export to `export`, plus `extra`
/// at the end of the file.
fn reads_in_csv(export: &str, extra: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "in.csv", "a,text\n1,first\n2,second,extra\n3,third\n");
    write(
        dir.path(),
        "p.toml",
        &format!(
            "[[step]]\nid = \"load\"\nkind = \"load_csv\"\npath = \"in.csv\"\non_bad_record = \"skip\"\n\n\
             [[step]]\nid = \"export\"\nkind = \"export_jsonl\"\npath = {export:?}\n{extra}"
        ),
    );
    dir
}

/// Runs `weave run p.toml` with `args` in `dir`, expects it refused (exit 1) with each of
/// `messages` on stderr, and every file of `dir` (the input and the pipeline above all)
/// exactly as it was.
fn refused(dir: &Path, args: &[&str], messages: &[&str]) {
    let before = snapshot(dir);
    let mut all = vec!["run", "p.toml"];
    all.extend_from_slice(args);
    let mut expected = messages.to_vec();
    expected.push("nothing was written");
    check_in(dir, &all, 1, &[], &expected);
    assert_eq!(snapshot(dir), before, "the run touched nothing");
}

/// Every entry of `dir` (not below): its name, and its bytes for a regular file or its
/// kind otherwise.
fn snapshot(dir: &Path) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = std::fs::read_dir(dir)
        .expect("list")
        .flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let kind = e.file_type().expect("type");
            let what = if kind.is_file() {
                String::from_utf8_lossy(&std::fs::read(e.path()).expect("read")).into_owned()
            } else {
                format!("{kind:?}")
            };
            (name, what)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn an_export_that_names_the_input_by_another_spelling_is_refused() {
    // regression: `./in.csv`, `sub/../in.csv` and the absolute path overwrote the input.
    let message = "step \"export\" would write over a file that step \"load\" reads: ";
    for spelling in ["./in.csv", "sub/../in.csv", "missing/../in.csv", "ABS", "link.csv", "via/in.csv"] {
        let dir = reads_in_csv("PLACEHOLDER", "");
        std::fs::create_dir(dir.path().join("sub")).expect("sub");
        std::os::unix::fs::symlink(dir.path().join("in.csv"), dir.path().join("link.csv")).expect("link");
        std::os::unix::fs::symlink(dir.path(), dir.path().join("via")).expect("folder link");
        let abs = dir.path().join("in.csv").display().to_string();
        let path = if spelling == "ABS" { abs.as_str() } else { spelling };
        let text = std::fs::read_to_string(dir.path().join("p.toml")).expect("read");
        write(dir.path(), "p.toml", &text.replace("PLACEHOLDER", path));
        let both = if spelling == "link.csv" {
            "link.csv and in.csv are one file (linked)".to_owned()
        } else {
            format!("{path} and in.csv are both ")
        };
        refused(dir.path(), &[], &[message, &both]);
    }
}

#[test]
fn two_exports_to_one_file_spelled_differently_are_refused() {
    // regression: `out.jsonl` and `./out.jsonl` silently lost one export's rows.
    let dir = reads_in_csv(
        "out.jsonl",
        "\n[[step]]\nid = \"again\"\nkind = \"export_jsonl\"\nafter = \"load\"\npath = \"./out.jsonl\"\n",
    );
    refused(
        dir.path(),
        &[],
        &["step \"export\" and step \"again\" would both write one file: out.jsonl and ./out.jsonl are both "],
    );
}

#[test]
fn quarantine_and_metrics_file_on_the_input_are_refused() {
    // regression: `--quarantine in.csv` deleted the input before the run read it, and
    // `--metrics-file in.csv` overwrote it with metrics.
    let dir = reads_in_csv("out.jsonl", "");
    refused(
        dir.path(),
        &["--quarantine", "./in.csv"],
        &["--quarantine would write over a file that step \"load\" reads: ./in.csv and in.csv are both "],
    );
    let abs = dir.path().join("in.csv").display().to_string();
    refused(
        dir.path(),
        &["--metrics-file", &abs],
        &["--metrics-file would write over a file that step \"load\" reads: "],
    );
    // The metrics file and the quarantine file are not one file either.
    refused(
        dir.path(),
        &["--metrics-file", "bad.jsonl", "--quarantine", "./bad.jsonl"],
        &["--quarantine and --metrics-file would both write one file"],
    );
    // With paths of their own, the run goes, and sets the bad row aside.
    check_in(dir.path(), &["run", "p.toml", "--quarantine", "bad.jsonl", "--metrics-file", "m.prom"], 0, &[], &[]);
    assert!(std::fs::read_to_string(dir.path().join("bad.jsonl")).expect("quarantine").contains("second"));
    assert_eq!(std::fs::read_to_string(dir.path().join("in.csv")).expect("input").lines().count(), 4);
}

#[test]
fn an_export_to_the_pipeline_file_or_an_alert_file_on_the_input_is_refused() {
    // regression: an export to the pipeline file itself overwrote the pipeline.
    let dir = reads_in_csv("./p.toml", "");
    refused(dir.path(), &[], &["step \"export\" would write over the pipeline file: ./p.toml and p.toml are both "]);
    let dir =
        reads_in_csv("out.jsonl", "\n[[alert]]\nwhen = \"run_failed > 0\"\nnotify = \"file\"\npath = \"in.csv\"\n");
    refused(dir.path(), &[], &["alert `run_failed > 0` would write over a file that step \"load\" reads"]);
    // `weave validate` says so too, and `weave graph -o` does not write over the pipeline.
    check_in(dir.path(), &["validate", "p.toml"], 1, &[], &["alert `run_failed > 0` would write over a file"]);
    check_in(dir.path(), &["graph", "p.toml", "-o", "./p.toml"], 1, &[], &["-o would write over the pipeline file"]);
    assert!(std::fs::read_to_string(dir.path().join("p.toml")).expect("pipeline").contains("[[alert]]"));
}

#[test]
fn an_export_to_a_parts_pattern_that_makes_an_input_is_refused() {
    // A split export's parts are named as the run goes: one that could be the input is
    // refused before the run, like a file named outright.
    let dir = reads_in_csv("data.csv", "max_rows = 1\n");
    std::fs::rename(dir.path().join("in.csv"), dir.path().join("data-00001.csv")).expect("rename");
    let text = std::fs::read_to_string(dir.path().join("p.toml")).expect("read");
    write(dir.path(), "p.toml", &text.replace("in.csv", "./data-00001.csv").replace("export_jsonl", "export_csv"));
    refused(
        dir.path(),
        &[],
        &[
            "step \"export\" writes its parts as `data.csv`, which makes ",
            "data-00001.csv: a file that step \"load\" reads (as ./data-00001.csv)",
        ],
    );
}

#[test]
fn targets_that_are_not_regular_files_are_refused() {
    // regression: an export to a FIFO or a device replaced it with a regular file (as
    // root, `path = "/dev/null"` would have replaced the system's /dev/null).
    let dir = reads_in_csv("pipe", "");
    assert!(Command::new("mkfifo").arg(dir.path().join("pipe")).status().expect("mkfifo").success());
    refused(dir.path(), &[], &["step \"export\" would replace pipe, which is a FIFO (named pipe), not a regular file"]);
    let dir = reads_in_csv("/dev/null", "");
    refused(dir.path(), &[], &["step \"export\" would replace /dev/null, which is a device, not a regular file"]);
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &std::fs::metadata("/dev/null").expect("/dev/null").file_type()
    ));
    let dir = reads_in_csv("out.jsonl", "");
    refused(dir.path(), &["--quarantine", "/dev/null"], &["--quarantine would replace /dev/null, which is a device"]);
    std::fs::create_dir(dir.path().join("folder")).expect("folder");
    refused(dir.path(), &["--metrics-file", "folder"], &["--metrics-file would replace folder, which is a folder"]);
    // A symbolic link is refused too: the rename would replace the link, not its file.
    std::fs::write(dir.path().join("real.jsonl"), "old").expect("write");
    std::os::unix::fs::symlink("real.jsonl", dir.path().join("out.jsonl")).expect("link");
    refused(dir.path(), &[], &["step \"export\" would replace out.jsonl, which is a symbolic link (to real.jsonl)"]);
}

#[test]
fn a_smaller_split_run_leaves_exactly_its_parts_and_its_hidden_manifest() {
    // regression: the old parts a new manifest did not list were left beside it, and the
    // manifest (`data.manifest.json`) matched the data's glob: `out/*.json` read it.
    let dir = tempfile::tempdir().expect("temp dir");
    let rows = |n: usize| (0..n).map(|i| format!("{{\"id\":{i}}}\n")).collect::<String>();
    write(
        dir.path(),
        "p.toml",
        "[[step]]\nid = \"load\"\nkind = \"load_jsonl\"\npath = \"in.jsonl\"\n\n\
         [[step]]\nid = \"export\"\nkind = \"export_json\"\npath = \"out/data.json\"\nmax_rows = 2\n",
    );
    let listing = || {
        let mut names: Vec<String> = std::fs::read_dir(dir.path().join("out"))
            .expect("out")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    write(dir.path(), "in.jsonl", &rows(10));
    check_in(dir.path(), &["run", "p.toml"], 0, &["run succeeded"], &[]);
    assert_eq!(listing().len(), 6, "5 parts and the manifest: {:?}", listing());
    write(dir.path(), "in.jsonl", &rows(6));
    check_in(dir.path(), &["run", "p.toml"], 0, &["run succeeded"], &[]);
    assert_eq!(listing(), [".data.manifest.json", "data-00000.json", "data-00001.json", "data-00002.json"]);
    // A glob over the output reads the 6 records and nothing else.
    write(
        dir.path(),
        "read.toml",
        "[[step]]\nid = \"load\"\nkind = \"load_json\"\npath = \"out/*.json\"\n\n\
         [[step]]\nid = \"export\"\nkind = \"export_jsonl\"\npath = \"copy.jsonl\"\n",
    );
    check_in(dir.path(), &["run", "read.toml"], 0, &["run succeeded"], &[]);
    assert_eq!(std::fs::read_to_string(dir.path().join("copy.jsonl")).expect("copy"), rows(6));
}
