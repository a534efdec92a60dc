//! Limits and bad input through the binary: absurd settings refused before they are acted
//! on, long and wide names laid out without a panic, thousands of problems printed as a
//! screenful, alert commands stopped with everything they started.

use std::path::Path;

use crate::cli::{check_in, weave_in};

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write a fixture");
}

/// A folder with `in.csv` (3 rows) and `p.toml`: `load` then `export` to `out.jsonl`, with
/// `resources` (the `[resources]` table's lines) and the load step's id.
fn pipeline(resources: &str, load_id: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "in.csv", "id,text\n1,one\n2,two\n3,three\n");
    write(
        dir.path(),
        "p.toml",
        &format!(
            "[resources]\n{resources}\n\n[[step]]\nid = \"{load_id}\"\nkind = \"load_csv\"\npath = \"in.csv\"\n\n\
             [[step]]\nid = \"export\"\nkind = \"export_jsonl\"\npath = \"out.jsonl\"\n"
        ),
    );
    dir
}

fn no_panic(out: &crate::cli::Output) {
    assert!(!out.stderr.contains("panicked") && !out.stdout.contains("panicked"), "{}", out.stderr);
}

// regression: `max_concurrent = 1000000000` started threads without bound (1,250 threads
// and 506 MB after 3 s on a 3-row input) and never finished.
#[test]
fn absurd_thread_counts_are_refused_before_the_run() {
    let dir = pipeline("max_concurrent = 1000000000", "load");
    let out = check_in(
        dir.path(),
        &["run", "p.toml"],
        1,
        &[],
        &["`max_concurrent` must be from 1 to 1024, not 1000000000", "--> p.toml:2:18"],
    );
    no_panic(&out);
    assert!(!dir.path().join("out.jsonl").exists());
    // The command line's override is held to the same bound; it is a usage error.
    let dir = pipeline("max_memory = \"1GB\"", "load");
    check_in(dir.path(), &["run", "--max-concurrent", "100000", "p.toml"], 2, &[], &["100000 is not in 1..=1024"]);
    check_in(dir.path(), &["run", "--max-concurrent", "1024", "p.toml"], 0, &["run succeeded"], &[]);
}

// regression: a 100,000-character step id passed validation, the run committed its output,
// then the summary table panicked (a format width must fit in a u16).
#[test]
fn a_step_id_of_100000_characters_is_refused_and_nothing_panics() {
    let dir = pipeline("max_memory = \"1GB\"", &"a".repeat(100_000));
    for cmd in ["validate", "plan", "run"] {
        let out = check_in(
            dir.path(),
            &[cmd, "p.toml"],
            1,
            &[],
            &["is 100000 characters long: ids are at most 128", "p.toml has 1 error"],
        );
        no_panic(&out);
        assert!(out.stderr.len() < 2_000, "the message quotes the id, not all of it:\n{}", out.stderr);
    }
    assert!(!dir.path().join("out.jsonl").exists());
}

#[test]
fn a_128_character_cjk_id_runs_and_every_table_lines_up() {
    let id = "数".repeat(128);
    let dir = pipeline("max_memory = \"1GB\"", &id);
    let run = check_in(dir.path(), &["run", "p.toml"], 0, &["run succeeded"], &[]);
    no_panic(&run);
    assert_eq!(std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap().lines().count(), 3);
    // Columns line up by display width: each CJK character takes two.
    let lines: Vec<&str> = run.stdout.lines().collect();
    let column = |line: &str, word: &str| unicode_width::UnicodeWidthStr::width(&line[..line.find(word).unwrap()]);
    assert_eq!(column(lines[0], "kind"), 128 * 2 + 2, "{}", run.stdout);
    assert_eq!(column(lines[1], "load_csv"), 128 * 2 + 2, "{}", run.stdout);
    assert_eq!(column(lines[2], "export_jsonl"), 128 * 2 + 2, "{}", run.stdout);
    for args in [
        &["plan", "p.toml"][..],
        &["plan", "p.toml", "--explain", "--format", "json"],
        &["graph", "p.toml", "--format", "mermaid"],
        &["runs"],
        &["report"],
        &["report", "--format", "html"],
    ] {
        let out = weave_in(dir.path(), args);
        assert_eq!(out.code, 0, "weave {args:?}\n{}", out.stderr);
        no_panic(&out);
        assert!(args == ["runs"] || out.stdout.contains(&id), "weave {args:?}:\n{}", out.stdout);
    }
}

// regression: 5,000 problems printed 35,002 lines.
#[test]
fn thousands_of_problems_print_a_screenful_and_the_count() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut text = String::from("[[step]]\nid = \"load\"\nkind = \"load_csv\"\npath = \"in.csv\"\n");
    for i in 0..5000 {
        text.push_str(&format!("unknown_{i} = 1\n"));
    }
    write(dir.path(), "p.toml", &text);
    let out = check_in(
        dir.path(),
        &["validate", "p.toml"],
        1,
        &[],
        &["unknown key `unknown_0`", "and 4950 more problems not shown (4950 errors)", "p.toml has 5000 errors"],
    );
    assert!(!out.stderr.contains("unknown_50 "), "{}", out.stderr);
    let lines = out.stderr.lines().count();
    assert!(lines < 500, "{lines} lines");
}

// regression: `timeout = "0s"` was accepted.
#[test]
fn zero_timeouts_windows_and_batches_are_refused_at_their_place() {
    let dir = pipeline("max_memory = \"1GB\"", "load");
    let text = std::fs::read_to_string(dir.path().join("p.toml")).unwrap();
    let zero = text.replace("path = \"in.csv\"\n", "path = \"in.csv\"\ntimeout = \"0s\"\n")
        + "\n[[alert]]\nwhen = \"error_rate > 0.1\"\nwindow = \"0s\"\n";
    write(dir.path(), "p.toml", &zero);
    check_in(
        dir.path(),
        &["validate", "p.toml"],
        1,
        &[],
        &[
            "`timeout` must be more than zero\n --> p.toml:8:11",
            "`window` must be more than zero\n  --> p.toml:17:10",
            "p.toml has 2 errors",
        ],
    );
    let huge = text.replace("path = \"in.csv\"\n", "path = \"in.csv\"\nbatch_size = 1000000000\n");
    write(dir.path(), "p.toml", &huge);
    check_in(
        dir.path(),
        &["run", "p.toml"],
        1,
        &[],
        &["`batch_size` must be from 1 to 1000000, not 1000000000\n --> p.toml:8:14", "p.toml has 1 error"],
    );
}

// regression: an alert command that started a child (`sh -c 'sleep 1000' &`) was killed at
// its timeout, but the child lived on holding Weave's stderr, so `weave run … | cat` did
// not return until it ended. The test reads the pipes only once every process the command
// started is gone, so it cannot hang on them.
#[test]
fn an_alert_command_is_stopped_with_what_it_started_and_the_pipes_close() {
    use std::io::Read;

    let dir = pipeline("max_memory = \"1GB\"", "load");
    let pids = dir.path().join("pids");
    let alert = format!(
        "\n[[alert]]\nwhen = \"step_duration >= 0\"\nstep = \"export\"\nnotify = \"command\"\ntimeout = \"1s\"\n\
         command = \"sh -c 'echo $$ >> {0}; exec sleep 1000' & echo $$ >> {0}; exec sleep 1000\"\n",
        pids.display()
    );
    let text = std::fs::read_to_string(dir.path().join("p.toml")).unwrap() + &alert;
    write(dir.path(), "p.toml", &text);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weave"))
        .args(["run", "p.toml"])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the weave binary runs");
    let status = child.wait().expect("weave ends");
    assert_eq!(status.code(), Some(0));
    let pids = std::fs::read_to_string(&pids).expect("the command ran");
    assert_eq!(pids.split_whitespace().count(), 2, "{pids}");
    for pid in pids.split_whitespace() {
        let ended = || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat.rsplit(") ").next().is_some_and(|rest| rest.starts_with(['Z', 'X'])),
        };
        // The group was killed before weave exited; the kernel takes a moment to end it.
        let gone = (0..500).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            ended()
        });
        if !gone {
            let _ = std::process::Command::new("kill").arg("-9").arg(pid).status();
        }
        assert!(gone, "process {pid} started by the alert command outlived weave");
    }
    // Nothing holds the pipes now: both read to their end.
    let (mut out, mut err) = (String::new(), String::new());
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(out.contains("run succeeded"), "{out}");
    assert!(err.contains("took longer than 1s and was stopped"), "{err}");
}

// A CSV of 20,000 columns (and JSON Lines of 20,000 keys, Parquet of 20,000 columns) read,
// cleaned over every field, and written back: every cell arrives where it left, and a
// ragged row is set aside whole. That each takes time linear in the width (a header of
// 100,000 columns took 23 s) is measured by `cargo xtask bench wide`, not here.
#[test]
fn wide_files_round_trip_through_every_format() {
    const COLUMNS: usize = 20_000;
    let dir = tempfile::tempdir().expect("temp dir");
    // Zero-padded names sort as they stand, whatever order a loader keeps.
    let names: Vec<String> = (0..COLUMNS).map(|c| format!("c{c:05}")).collect();
    let row = |r: usize, pad: &str| (0..COLUMNS).map(|c| format!("{pad}r{r}c{c}{pad}")).collect::<Vec<_>>().join(",");
    let mut input = names.join(",") + "\n";
    let mut expected = input.clone();
    for r in 0..3 {
        input += &(row(r, " ") + "\n");
        expected += &(row(r, "") + "\n");
    }
    input += "only,three,fields\n";
    write(dir.path(), "in.csv", &input);
    write(
        dir.path(),
        "p.toml",
        "[[step]]\nid = \"load\"\nkind = \"load_csv\"\npath = \"in.csv\"\non_bad_record = \"skip\"\n\n\
         [[step]]\nid = \"clean\"\nkind = \"clean\"\nrules = [\"trim\"]\n\n\
         [[step]]\nid = \"csv\"\nkind = \"export_csv\"\npath = \"out.csv\"\nafter = \"clean\"\n\n\
         [[step]]\nid = \"jsonl\"\nkind = \"export_jsonl\"\npath = \"out.jsonl\"\nafter = \"clean\"\n\n\
         [[step]]\nid = \"parquet\"\nkind = \"export_parquet\"\npath = \"out.parquet\"\nafter = \"clean\"\n",
    );
    let out = check_in(dir.path(), &["run", "p.toml", "--quarantine", "bad.jsonl"], 0, &["run succeeded"], &[]);
    no_panic(&out);
    assert_eq!(std::fs::read_to_string(dir.path().join("out.csv")).unwrap(), expected);
    let bad = std::fs::read_to_string(dir.path().join("bad.jsonl")).unwrap();
    assert!(bad.contains("expected 20000 fields (as in the header), found 3"), "{}", &bad[..200.min(bad.len())]);
    write(
        dir.path(),
        "back.toml",
        "[[step]]\nid = \"jsonl\"\nkind = \"load_jsonl\"\npath = \"out.jsonl\"\n\n\
         [[step]]\nid = \"from_jsonl\"\nkind = \"export_csv\"\npath = \"from_jsonl.csv\"\n\n\
         [[step]]\nid = \"parquet\"\nkind = \"load_parquet\"\npath = \"out.parquet\"\n\n\
         [[step]]\nid = \"from_parquet\"\nkind = \"export_csv\"\npath = \"from_parquet.csv\"\n",
    );
    check_in(dir.path(), &["run", "back.toml"], 0, &["run succeeded"], &[]);
    for back in ["from_jsonl.csv", "from_parquet.csv"] {
        assert!(std::fs::read_to_string(dir.path().join(back)).unwrap() == expected, "{back} differs");
    }
}
