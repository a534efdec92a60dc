//! `weave validate`, `plan`, `graph` and `kinds` on the pipeline files in tests/data.

use std::path::PathBuf;
use std::process::Command;

/// What one run of the binary gave.
pub(crate) struct Output {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

pub(crate) fn data(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../tests/data").join(name)
}

/// Runs `weave` with `args` in tests/data, so that file names in messages are short.
/// Runs `weave` with `args` in `dir`.
/// The variables a job's task gives its shard by (a test run inside a Slurm array job
/// must not shard every run).
pub(crate) const SHARD_VARIABLES: [&str; 5] = [
    "SLURM_ARRAY_TASK_ID",
    "SLURM_ARRAY_TASK_COUNT",
    "SLURM_ARRAY_TASK_MIN",
    "JOB_COMPLETION_INDEX",
    "WEAVE_SHARD_COUNT",
];

pub(crate) fn weave_in(dir: &std::path::Path, args: &[&str]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weave"));
    for v in SHARD_VARIABLES {
        command.env_remove(v);
    }
    let out = command.args(args).current_dir(dir).env_remove("RUST_LOG").output().expect("the weave binary runs");
    Output {
        code: out.status.code().expect("weave exited on its own, not by a signal"),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

/// The report.json of the latest run recorded under `dir`.
pub(crate) fn last_report(dir: &std::path::Path) -> serde_json::Value {
    let mut runs: Vec<PathBuf> =
        std::fs::read_dir(dir.join(".weave/runs")).expect("run records").flatten().map(|e| e.path()).collect();
    runs.sort();
    let last = runs.last().expect("a run record");
    serde_json::from_slice(&std::fs::read(last.join("report.json")).expect("report.json")).expect("JSON")
}

/// Runs `weave` and checks the exit code and that stdout/stderr contain each fragment.
pub(crate) fn check(args: &[&str], code: i32, stdout: &[&str], stderr: &[&str]) -> Output {
    check_in(&data(""), args, code, stdout, stderr)
}

/// [`check`] in `dir`.
pub(crate) fn check_in(dir: &std::path::Path, args: &[&str], code: i32, stdout: &[&str], stderr: &[&str]) -> Output {
    let out = weave_in(dir, args);
    let ctx = format!("weave {}\n--- stdout\n{}\n--- stderr\n{}", args.join(" "), out.stdout, out.stderr);
    assert_eq!(out.code, code, "exit code\n{ctx}");
    for s in stdout {
        assert!(out.stdout.contains(s), "stdout lacks {s:?}\n{ctx}");
    }
    for s in stderr {
        assert!(out.stderr.contains(s), "stderr lacks {s:?}\n{ctx}");
    }
    out
}

#[test]
fn validate_prints_the_cycle_and_fails() {
    check(
        &["validate", "cycle.toml"],
        1,
        &[],
        &["cycle: a -> b -> c -> a", "--> cycle.toml:9:1", "cycle.toml has 1 error"],
    );
}

#[test]
fn validate_names_file_line_column_and_suggests() {
    check(
        &["validate", "typo.toml"],
        1,
        &[],
        &[
            "unknown key `ruls` in step",
            "--> typo.toml:9:1",
            "did you mean `rules`?",
            "unknown step kind `exprot_jsonl`",
            "--> typo.toml:13:8",
            "did you mean `export_jsonl`?",
            "typo.toml has 3 errors",
        ],
    );
}

#[test]
fn validate_accepts_a_good_file() {
    let out = check(
        &["validate", "chain.toml"],
        0,
        &["ok: chain.toml: pipeline \"support-tickets\": 3 steps, 2 edges, 0 warnings"],
        &[],
    );
    assert!(out.stderr.is_empty(), "{}", out.stderr);
}

#[test]
fn plan_puts_the_diamond_sides_on_one_level() {
    let out = check(&["plan", "diamond.toml"], 0, &["4 parallel levels", "critical path"], &[]);
    let level1: Vec<&str> =
        out.stdout.lines().filter(|l| l.starts_with("1 ")).map(|l| l.split_whitespace().nth(1).unwrap_or("")).collect();
    assert_eq!(level1, ["b", "c"], "{}", out.stdout);

    let out = check(&["plan", "diamond.toml", "--format", "json"], 0, &[], &[]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("plan JSON parses");
    assert_eq!(v["levels"], serde_json::json!([["a"], ["b", "c"], ["d"], ["out"]]));
    assert_eq!(v["steps"][1]["timeout_ms"], 250);
    assert_eq!(v["steps"][2]["retry"]["max_retries"], 0);
}

#[test]
fn plan_refuses_steps_beyond_the_resources() {
    check(
        &["plan", "resources.toml"],
        1,
        &[],
        &[
            "insufficient resources: step \"embed\" needs 6 GiB, limit is 4 GiB",
            "insufficient resources: step \"gpu\" needs a GPU, and `gpu_enabled` is false",
        ],
    );
}

#[test]
fn validate_refuses_clashing_files() {
    check(
        &["validate", "files.toml"],
        1,
        &[],
        &[
            "steps \"out1\" and \"out2\" both write result.jsonl",
            "step \"load\" reads data.jsonl, which step \"out3\" of the same run writes",
        ],
    );
}

#[test]
fn graph_draws_dot_and_mermaid() {
    check(&["graph", "diamond.toml"], 0, &["digraph \"diamond\" {", "\"a\" -> \"b\";", "\"c\" -> \"d\";"], &[]);
    check(&["graph", "diamond.toml", "--format", "mermaid"], 0, &["flowchart LR", "n1 --> n3", "n2 --> n3"], &[]);
    let dir = tempfile::tempdir().expect("temp dir");
    let target = dir.path().join("g.dot");
    check(&["graph", "diamond.toml", "-o", target.to_str().expect("utf-8 path")], 0, &[], &[]);
    assert!(std::fs::read_to_string(&target).expect("graph written").contains("digraph"));
}

#[test]
fn unreadable_input_is_a_clear_error() {
    check(&["validate", "missing.toml"], 1, &[], &["error: cannot read missing.toml"]);
    let dir = tempfile::tempdir().expect("temp dir");
    let bad = dir.path().join("latin1.toml");
    std::fs::write(&bad, b"[pipeline]\nname = \"caf\xe9\"\n").expect("write");
    check(&["validate", bad.to_str().expect("utf-8 path")], 1, &[], &["latin1.toml:2:12: the file is not valid UTF-8"]);
    let broken = dir.path().join("broken.toml");
    std::fs::write(&broken, "[[step]\nid = 1\n").expect("write");
    check(&["validate", broken.to_str().expect("utf-8 path")], 1, &[], &["invalid TOML", "broken.toml:1:"]);
}

#[test]
fn usage_errors_exit_2_and_every_command_has_help() {
    check(&["validate"], 2, &[], &["FILE"]);
    check(&["frobnicate"], 2, &[], &["unrecognized subcommand"]);
    for cmd in ["validate", "plan", "graph", "kinds"] {
        check(&[cmd, "--help"], 0, &["Usage: weave"], &[]);
    }
    check(&["kinds"], 0, &["load_csv", "export_jsonl", "Every step also takes: id, kind, after"], &[]);
}

#[test]
fn the_readme_main_command_plans_the_shipped_example() {
    // README: `cargo run --release -- plan examples/quickstart/pipeline.toml`.
    check(
        &["plan", "../../examples/quickstart/pipeline.toml"],
        0,
        &[
            "pipeline \"support-tickets\": 6 steps, 5 edges",
            "critical path (estimated cost 6): load -> clean -> dedup -> augment -> validate -> export",
        ],
        &[],
    );
}
