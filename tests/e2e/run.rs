//! `weave run` on real files: outputs, failures, bad records, overrides, Ctrl-C.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cli::{check_in, data, last_report};

/// A temporary folder holding a copy of `tests/data/tickets`: 10 support tickets through
/// load → clean → export, small enough that every count below is known.
fn tickets() -> tempfile::TempDir {
    copy_of(&data("tickets"))
}

/// A temporary folder holding a copy of the shipped quick-start example.
fn quickstart() -> tempfile::TempDir {
    copy_of(&data("../../examples/quickstart"))
}

fn copy_of(from: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for f in ["pipeline.toml", "raw_data.csv"] {
        std::fs::copy(from.join(f), dir.path().join(f)).expect("copy the example");
    }
    dir
}

pub(crate) fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write a fixture");
}

#[test]
fn the_tickets_run_and_write_clean_rows() {
    let dir = tickets();
    check_in(dir.path(), &["run", "pipeline.toml"], 0, &["run succeeded", "clean", "2 (min_chars 2)"], &[]);
    let out = std::fs::read_to_string(dir.path().join("processed_data.jsonl")).expect("the output exists");
    let rows: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).expect("JSON lines")).collect();
    // 10 rows in; "hi" and an all-space text fall under min_chars = 20.
    assert_eq!(rows.len(), 8, "{out}");
    assert_eq!(rows[0]["text"], "My order #4417 arrived with a cracked screen, can I get a replacement?");
    assert_eq!(rows[4]["text"], "How do I export my data as CSV? I can't find the option anywhere.");
    assert!(rows.iter().all(|r| r["text"].as_str().is_some_and(|t| t.chars().count() >= 20 && t == t.trim())));
    assert!(!dir.path().join(".weave/quarantine.jsonl").exists());
}

/// load `in.csv` → trim → export `out/result.jsonl`; `ON_BAD` is replaced by the loader's
/// extra keys.
pub(crate) const PIPELINE: &str = r#"
[[step]]
id = "load"
kind = "load_csv"
path = "in.csv"
ON_BAD

[[step]]
id = "clean"
kind = "clean"
rules = ["trim"]

[[step]]
id = "export"
kind = "export_jsonl"
path = "out/result.jsonl"
"#;

#[test]
fn metrics_file_holds_the_runs_counts_in_prometheus_text() {
    let dir = tickets();
    check_in(dir.path(), &["run", "pipeline.toml", "--metrics-file", "metrics.prom"], 0, &[], &[]);
    let text = std::fs::read_to_string(dir.path().join("metrics.prom")).expect("metrics file");
    for line in [
        "weave_step_records_in_total{pipeline=\"support-tickets\",step=\"clean\"} 10",
        "weave_step_records_out_total{pipeline=\"support-tickets\",step=\"clean\"} 8",
        "weave_step_dropped_records_total{pipeline=\"support-tickets\",step=\"clean\",reason=\"min_chars\"} 2",
        "weave_run_status{pipeline=\"support-tickets\",status=\"succeeded\"} 1",
    ] {
        assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
    }
    assert!(!dir.path().join("metrics.prom.tmp").exists());
}

#[test]
fn an_alert_rule_fires_into_its_file() {
    let dir = tickets();
    let text = std::fs::read_to_string(dir.path().join("pipeline.toml")).expect("read");
    let text = text.replace(
        "[[alert]]\nwhen = \"error_rate > 0.05\"\nnotify = \"log\"",
        "[[alert]]\nwhen = \"run_failed > 0\"\nnotify = \"file\"\npath = \"alerts.jsonl\"",
    );
    std::fs::write(dir.path().join("p.toml"), text).expect("write");
    std::fs::remove_file(dir.path().join("raw_data.csv")).expect("remove the input");
    check_in(dir.path(), &["run", "p.toml"], 1, &[], &["1 alert fired"]);
    let alert: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(dir.path().join("alerts.jsonl")).expect("alerts file").trim())
            .expect("one JSON line");
    assert_eq!(alert["rule"], "run_failed > 0");
    assert_eq!(alert["pipeline"], "support-tickets");
}

#[test]
fn a_bad_row_fails_the_run_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "p.toml", &PIPELINE.replace("ON_BAD", ""));
    write(dir.path(), "in.csv", "a,text\n1, x \n2,y,extra\n3,z\n");
    check_in(
        dir.path(),
        &["run", "p.toml"],
        1,
        &[],
        &[
            "error: step \"load\": bad record at in.csv:3: expected 2 fields (as in the header), found 3",
            "nothing was written",
        ],
    );
    assert!(!dir.path().join("out/result.jsonl").exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path().join("out")).map(|d| d.collect()).unwrap_or_default();
    assert!(leftovers.is_empty(), "no temporary file is left behind: {leftovers:?}");
}

#[test]
fn skipped_rows_go_to_the_quarantine_file_with_their_reason() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "p.toml", &PIPELINE.replace("ON_BAD", "on_bad_record = \"skip\""));
    write(dir.path(), "in.csv", "a,text\n1, x \n2,y,extra\n3,z\n");
    check_in(dir.path(), &["run", "p.toml"], 0, &["1 bad records set aside in"], &[]);
    let out = std::fs::read_to_string(dir.path().join("out/result.jsonl")).expect("output");
    assert_eq!(out, "{\"a\":\"1\",\"text\":\"x\"}\n{\"a\":\"3\",\"text\":\"z\"}\n");
    let q = std::fs::read_to_string(dir.path().join(".weave/quarantine.jsonl")).expect("quarantine file");
    let q: serde_json::Value = serde_json::from_str(q.trim()).expect("one JSON line");
    assert_eq!(q["step"], "load");
    assert_eq!(q["origin"], "in.csv:3");
    assert_eq!(q["record"]["_extra_1"], "extra");
}

#[test]
fn a_missing_input_names_the_file_and_step() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "p.toml", &PIPELINE.replace("ON_BAD", ""));
    check_in(
        dir.path(),
        &["run", "p.toml"],
        1,
        &[],
        &["error: step \"load\" failed: cannot open in.csv", "caused by: No such file"],
    );
}

#[test]
fn command_line_limits_override_the_file() {
    let dir = tickets();
    let out =
        check_in(dir.path(), &["run", "pipeline.toml", "--max-concurrent", "1", "--max-memory", "64MiB"], 0, &[], &[]);
    assert!(out.stdout.contains("1 worker threads"), "{}", out.stdout);
    check_in(dir.path(), &["run", "pipeline.toml", "--max-memory", "lots"], 2, &[], &["not a size"]);
    check_in(dir.path(), &["run", "pipeline.toml", "--max-concurrent", "0"], 2, &[], &["--max-concurrent"]);
    std::fs::write(
        dir.path().join("big.toml"),
        std::fs::read_to_string(dir.path().join("pipeline.toml"))
            .expect("read")
            .replace("rules = [", "resources = { memory = \"1GiB\" }\nrules = ["),
    )
    .expect("write");
    check_in(
        dir.path(),
        &["run", "big.toml", "--max-memory", "100MiB"],
        1,
        &[],
        &["insufficient resources: step \"clean\" needs 1 GiB, limit is 100 MiB"],
    );
}

#[test]
fn ctrl_c_stops_the_run_and_commits_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let child = start_big_run(dir.path());
    let killed = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill runs");
    assert!(killed.success());
    let t0 = Instant::now();
    let out = child.wait_with_output().expect("weave exits");
    assert!(t0.elapsed() < Duration::from_secs(5), "the run stops promptly");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(0) {
        // The machine was fast enough to finish first: then the output is whole.
        assert!(dir.path().join("out/result.jsonl").exists());
        return;
    }
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(!dir.path().join("out/result.jsonl").exists());
    check_in(dir.path(), &["runs"], 0, &["interrupted"], &[]);
}

/// Regression: SIGTERM (what `kill`, systemd and Kubernetes send) exited 130 like Ctrl-C;
/// the convention is 128 + 15. It stops the run as cleanly as Ctrl-C does.
#[test]
fn sigterm_stops_the_run_and_exits_143() {
    let dir = tempfile::tempdir().expect("temp dir");
    let child = start_big_run(dir.path());
    let killed = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill runs");
    assert!(killed.success());
    let out = child.wait_with_output().expect("weave exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(0) {
        assert!(dir.path().join("out/result.jsonl").exists());
        return;
    }
    assert_eq!(out.status.code(), Some(143), "{stderr}");
    assert!(stderr.contains("terminated (SIGTERM)") && stderr.contains("nothing was written"), "{stderr}");
    assert!(!dir.path().join("out/result.jsonl").exists());
    check_in(dir.path(), &["runs"], 0, &["interrupted"], &[]);
}

/// Starts `weave run` on a large input and returns once its export is writing.
fn start_big_run(dir: &Path) -> std::process::Child {
    write(dir, "p.toml", &PIPELINE.replace("ON_BAD", "batch_size = 64"));
    let mut csv = String::from("a,text\n");
    for i in 0..1_000_000 {
        csv.push_str(&format!("{i},  some   text number {i}  \n"));
    }
    write(dir, "in.csv", &csv);
    let child = Command::new(env!("CARGO_BIN_EXE_weave"))
        .args(["run", "p.toml"])
        .current_dir(dir)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("weave starts");
    let started = Instant::now();
    let writing = || {
        std::fs::read_dir(dir.join("out"))
            .map(|d| d.flatten().any(|e| e.file_name().to_string_lossy().starts_with(".weave-")))
            .unwrap_or(false)
    };
    while !writing() && started.elapsed() < Duration::from_secs(20) {
        std::thread::sleep(Duration::from_millis(5));
    }
    child
}

#[test]
fn a_killed_run_leaves_a_record_that_says_interrupted_and_what_was_running() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut child = start_big_run(dir.path());
    let killed = Command::new("kill").args(["-KILL", &child.id().to_string()]).status().expect("kill runs");
    assert!(killed.success());
    let status = child.wait().expect("weave exits");
    if status.success() {
        return; // Finished before the kill on a very fast machine: nothing to check.
    }
    let out = check_in(dir.path(), &["runs"], 0, &["interrupted"], &[]);
    assert!(out.stdout.contains("the process stopped without finishing the run"), "{}", out.stdout);
    let runs: Vec<_> = std::fs::read_dir(dir.path().join(".weave/runs")).expect("runs").flatten().collect();
    assert_eq!(runs.len(), 1);
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(runs[0].path().join("report.json")).expect("report")).expect("JSON");
    assert_eq!(report["status"], "interrupted");
    let error = report["error"].as_str().expect("an explanation");
    assert!(error.contains("while running: ") && error.contains("export"), "{error}");
    let events = std::fs::read_to_string(runs[0].path().join("events.jsonl")).expect("events");
    assert!(events.lines().next().is_some_and(|l| l.contains("run_started")), "{events}");
    assert!(!dir.path().join("out/result.jsonl").exists(), "nothing committed");
}

#[test]
fn the_lineage_names_files_alike_from_any_working_directory() {
    // regression: report.json named each file by its path from the folder the run was
    // started in (`raw_data.csv` from the project, `proj/raw_data.csv` from its parent,
    // the cache keys having been made independent of it).
    let dir = tempfile::tempdir().expect("temp dir");
    let proj = dir.path().join("proj");
    std::fs::create_dir(&proj).expect("proj");
    for f in ["pipeline.toml", "raw_data.csv"] {
        std::fs::copy(data("tickets").join(f), proj.join(f)).expect("copy the example");
    }
    let lineage = |r: &serde_json::Value| -> Vec<(String, String, String)> {
        ["inputs", "outputs"]
            .iter()
            .flat_map(|k| r[*k].as_array().expect("files").clone())
            .map(|f| {
                assert!(f["blake3"].is_string(), "{f}");
                let s = |k: &str| f[k].as_str().unwrap_or_else(|| panic!("{k} in {f}")).to_owned();
                (s("step"), s("path"), s("absolute"))
            })
            .collect()
    };
    check_in(&proj, &["run", "pipeline.toml", "--no-cache"], 0, &["run succeeded"], &[]);
    let from_proj = last_report(&proj);
    check_in(dir.path(), &["run", "proj/pipeline.toml", "--no-cache"], 0, &["run succeeded"], &[]);
    let from_parent = last_report(&proj);
    assert_ne!(from_proj["run_id"], from_parent["run_id"]);
    let real = std::fs::canonicalize(&proj).expect("canonical");
    let abs = |name: &str| real.join(name).display().to_string();
    let expected = vec![
        ("load".to_owned(), "raw_data.csv".to_owned(), abs("raw_data.csv")),
        ("export".to_owned(), "processed_data.jsonl".to_owned(), abs("processed_data.jsonl")),
    ];
    assert_eq!(lineage(&from_proj), expected);
    assert_eq!(lineage(&from_parent), expected);
    assert_eq!(from_proj["pipeline_file"], abs("pipeline.toml"));
    assert_eq!(from_parent["pipeline_file"], abs("pipeline.toml"));
}

#[test]
fn runs_and_report_read_the_records() {
    let dir = tickets();
    check_in(dir.path(), &["run", "pipeline.toml"], 0, &[], &["run record: "]);
    // Computed again (not skipped as up to date), so that the latest report has counts.
    check_in(dir.path(), &["run", "pipeline.toml", "--no-cache"], 0, &[], &[]);
    let out = check_in(dir.path(), &["runs"], 0, &["support-tickets  succeeded"], &[]);
    assert_eq!(out.stdout.lines().count(), 3, "a header and two runs:\n{}", out.stdout);
    let out = check_in(dir.path(), &["report"], 0, &["succeeded", "clean", "success rate 100.00%"], &[]);
    assert!(
        out.stdout.lines().any(|l| l.starts_with("clean") && l.contains(" 10 ") && l.contains(" 8 ")),
        "{}",
        out.stdout
    );
    let out = check_in(dir.path(), &["report", "--format", "json"], 0, &[], &[]);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON report");
    assert_eq!(v["steps"][1]["dropped"]["min_chars"], 2);
    assert_eq!(v["tool_version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["config_hash"].as_str().map(str::len), Some(64));
    // Lineage: what was read and written, with content hashes.
    let input = std::fs::read(dir.path().join("raw_data.csv")).expect("input");
    assert_eq!(v["inputs"][0]["step"], "load");
    assert_eq!(v["inputs"][0]["bytes"], input.len());
    assert_eq!(v["inputs"][0]["blake3"], weave::cache::Key::of_content(&input).to_hex());
    let output = std::fs::read(dir.path().join("processed_data.jsonl")).expect("output");
    assert_eq!(v["outputs"][0]["step"], "export");
    assert_eq!(v["outputs"][0]["bytes"], output.len());
    assert_eq!(v["outputs"][0]["blake3"], weave::cache::Key::of_content(&output).to_hex());
    // The HTML page: self-contained, with the DAG (a node per step, an edge per
    // dependency), the step table and a chart per step.
    let out = check_in(dir.path(), &["report", "--format", "html"], 0, &["<!DOCTYPE html>"], &[]);
    let html = out.stdout;
    for step in ["load", "clean", "export"] {
        assert!(html.contains(&format!("<g class=\"node\" data-step=\"{step}\">")), "node {step} missing");
    }
    assert_eq!(html.matches("<path class=\"edge\"").count(), 2);
    assert_eq!(html.matches("<svg class=\"chart\"").count(), 3);
    assert!(html.contains("<strong class=\"status-succeeded\" id=\"status\">succeeded</strong>"));
    assert!(!html.contains("<script") && !html.contains("src=") && !html.contains("href="), "no scripts or fetches");
    check_in(dir.path(), &["report", "nope"], 1, &[], &["no run `nope`"]);
    check_in(dir.path(), &["report", "--dir", "elsewhere"], 1, &[], &["no run is recorded here"]);
}

#[test]
fn the_html_report_renders_in_headless_chromium() {
    let required = std::env::var_os("WEAVE_TEST_CHROMIUM").is_some();
    let available = Command::new("chromium").arg("--version").output().is_ok_and(|o| o.status.success());
    if !available {
        assert!(!required, "WEAVE_TEST_CHROMIUM is set but chromium does not run");
        // The test harness shows what a test prints to stderr when it fails or with
        // --nocapture; a skip is worth saying.
        #[allow(clippy::print_stderr)]
        {
            eprintln!("skipped: chromium is not installed (.ci/run installs it)");
        }
        return;
    }
    let dir = tickets();
    check_in(dir.path(), &["run", "pipeline.toml"], 0, &[], &[]);
    let out = check_in(dir.path(), &["report", "--format", "html"], 0, &[], &[]);
    let page = dir.path().join("report.html");
    std::fs::write(&page, out.stdout).expect("write the page");
    let url = format!("file://{}", page.display());
    let chromium = |extra: &[&str]| {
        let profile = tempfile::tempdir().expect("profile dir");
        let mut args = vec![
            "--headless".to_owned(),
            "--no-sandbox".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-quic".to_owned(),
            "--no-first-run".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-component-update".to_owned(),
            "--disable-sync".to_owned(),
            format!("--user-data-dir={}", profile.path().display()),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args.push(url.clone());
        Command::new("chromium").args(&args).output().expect("chromium runs")
    };
    // The DOM as the browser built it: the DAG's nodes and edges, and the status.
    let dom = String::from_utf8_lossy(&chromium(&["--dump-dom"]).stdout).into_owned();
    for step in ["load", "clean", "export"] {
        assert!(dom.contains(&format!("data-step=\"{step}\"")), "node {step} missing from the rendered DOM");
    }
    assert_eq!(dom.matches("class=\"edge\"").count(), 2, "{dom}");
    assert!(dom.contains("id=\"status\">succeeded<"), "{dom}");
    // And a screenshot: a real PNG of some size.
    let shot = dir.path().join("report.png");
    chromium(&[&format!("--screenshot={}", shot.display()), "--window-size=1200,900"]);
    let png = std::fs::read(&shot).expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000, "{} bytes", png.len());
}

/// The README's first command, `weave run examples/quickstart/pipeline.toml`, on a copy of
/// the shipped example: the output's rows and fields, checked against the raw file.
#[test]
fn the_quickstart_example_runs_as_the_readme_says() {
    let dir = quickstart();
    let out = check_in(dir.path(), &["run", "pipeline.toml"], 0, &["run succeeded", "validate: records"], &[]);
    let text = std::fs::read_to_string(dir.path().join("processed_data.jsonl")).expect("the output exists");
    let rows: Vec<serde_json::Map<String, serde_json::Value>> =
        text.lines().map(|l| serde_json::from_str(l).expect("a JSON object per line")).collect();
    assert_eq!(rows.len(), 2046, "{}", out.stdout);

    // The raw tickets by id.
    let mut raw = std::collections::HashMap::new();
    let mut reader = csv::Reader::from_path(dir.path().join("raw_data.csv")).expect("the raw CSV");
    for r in reader.records() {
        let r = r.expect("a CSV row");
        raw.insert(r[0].to_owned(), (r[1].to_owned(), r[2].to_owned()));
    }
    assert_eq!(raw.len(), 3000);

    let fields = [
        "id",
        "text",
        "label",
        "channel",
        "text_technical",
        "text_technical_noiser",
        "text_technical_seed",
        "coherence_score",
    ];
    let mut seen = std::collections::HashSet::new();
    let (mut last_id, mut restyled) = (0u64, 0);
    for row in &rows {
        let mut keys: Vec<&str> = row.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let mut want = fields;
        want.sort_unstable();
        assert_eq!(keys, want, "{row:?}");
        let s = |k: &str| row[k].as_str().unwrap_or_else(|| panic!("{k} is a string in {row:?}"));
        let id: u64 = s("id").parse().expect("a numeric id");
        assert!(id > last_id, "rows keep the input's order");
        last_id = id;
        let (raw_text, raw_label) = &raw[s("id")];
        // Cleaned: no markup, trimmed, single spaces, at least 20 characters; for a raw
        // text without markup or control characters, exactly its trimmed, collapsed form.
        let t = s("text");
        assert!(t.chars().count() >= 20 && t == t.trim() && !t.contains("  ") && !t.contains('<'), "{t:?}");
        if !raw_text.contains(['<', '&']) && !raw_text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            assert_eq!(t, raw_text.split_whitespace().collect::<Vec<_>>().join(" "), "id {id}");
        }
        // Deduplicated ignoring case and spacing; complete; coherent.
        assert!(seen.insert(t.to_lowercase()), "duplicate {t:?}");
        assert_eq!(s("label"), raw_label.as_str());
        assert!(!raw_label.is_empty(), "id {id} has no label");
        assert!(row["coherence_score"].as_f64().expect("a score") >= 0.6);
        // Augmented: the original kept, the restyled text beside it, with noiser and seed.
        assert_eq!(s("text_technical_noiser"), "style(style=technical,rate=1)");
        assert!(
            s("text_technical_seed").len() == 16 && s("text_technical_seed").chars().all(|c| c.is_ascii_hexdigit())
        );
        if s("text_technical") != t {
            restyled += 1;
        }
    }
    assert!(restyled > 300, "the technical style rewrote {restyled} texts");
    // The records the cleaning dropped, each with its reason.
    let excluded = std::fs::read_to_string(dir.path().join("excluded.jsonl")).expect("the exclusion file");
    assert_eq!(excluded.lines().count(), 161);
    assert!(excluded.lines().all(|l| l.contains("\"reason\":\"min_chars\"")));

    // A second run finds everything up to date and leaves the output as it was.
    check_in(dir.path(), &["run", "pipeline.toml"], 0, &["skipped"], &[]);
    assert_eq!(std::fs::read_to_string(dir.path().join("processed_data.jsonl")).expect("output"), text);
}
