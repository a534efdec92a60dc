//! The monitoring tells the truth: every count agrees wherever it is shown (summary,
//! report.json, `weave report`, the HTML page, the metrics file), bad records count and
//! can fail a run, retries made inside an LLM call are counted once, the metrics file is
//! valid Prometheus text (`promtool check metrics`), and an error is printed once.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use weave_testkit::{Reply, TestServer};

use crate::cli::{Output, check_in, data, last_report, weave_in};

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write a fixture");
}

/// A temporary copy of the shipped quick start, with `validate` set to fail the run.
fn quickstart_that_fails_validation() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let from = data("../../examples/quickstart");
    std::fs::copy(from.join("raw_data.csv"), dir.path().join("raw_data.csv")).expect("copy the input");
    let text = std::fs::read_to_string(from.join("pipeline.toml")).expect("the example");
    let text = text.replace("kind = \"validate\"\n", "kind = \"validate\"\non_fail = \"fail\"\n");
    assert!(text.contains("on_fail = \"fail\""), "the example still has its validate step");
    write(dir.path(), "pipeline.toml", &text);
    dir
}

/// The summary table that `weave run` prints, as rows of named cells (the cells are
/// separated by two spaces or more, and hold none themselves).
fn summary_rows(text: &str) -> HashMap<String, HashMap<String, String>> {
    let split = |l: &str| -> Vec<String> {
        l.split("  ").map(str::trim).filter(|c| !c.is_empty()).map(str::to_owned).collect()
    };
    let mut lines = text.lines().skip_while(|l| !l.starts_with("step "));
    let header = split(lines.next().expect("a summary table"));
    let mut rows = HashMap::new();
    for l in lines {
        let cells = split(l);
        if cells.len() != header.len() {
            break;
        }
        rows.insert(cells[0].clone(), header.iter().cloned().zip(cells).collect());
    }
    rows
}

/// A summary cell as a number (`-` is 0).
fn cell(rows: &HashMap<String, HashMap<String, String>>, step: &str, column: &str) -> u64 {
    let c = &rows[step][column];
    if c == "-" { 0 } else { c.split(' ').next().unwrap_or(c).parse().unwrap_or_else(|_| panic!("{column}: {c:?}")) }
}

/// The value of a metric line `name{labels} value` whose labels include `step="STEP"`.
fn metric(text: &str, name: &str, step: &str) -> Option<f64> {
    let want = format!("step=\"{step}\"");
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(&want))
        .find_map(|l| l.rsplit(' ').next()?.parse().ok())
}

fn report_step<'a>(report: &'a serde_json::Value, step: &str) -> &'a serde_json::Value {
    report["steps"].as_array().and_then(|s| s.iter().find(|s| s["step"] == step)).expect("the step is in the report")
}

/// Regression: with `validate` `on_fail = "fail"`, the summary said `export … records in
/// 2091` (counted as batches arrived) while report.json, `weave report` and the metrics
/// said 1459 (counted as calls finished). Every count now comes from the same events.
#[test]
fn every_count_is_the_same_in_the_summary_the_report_the_html_and_the_metrics() {
    let dir = quickstart_that_fails_validation();
    let out = check_in(
        dir.path(),
        &["run", "pipeline.toml", "--metrics-file", "metrics.prom"],
        1,
        &[],
        &["fell short", "nothing was written"],
    );
    let summary = summary_rows(&out.stderr);
    let report = last_report(dir.path());
    let json = check_in(dir.path(), &["report", "--format", "json"], 0, &[], &[]);
    let json: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON report");
    let table = check_in(dir.path(), &["report"], 0, &[], &[]).stdout;
    let table = summary_rows(&table);
    let html = check_in(dir.path(), &["report", "--format", "html"], 0, &[], &[]).stdout;
    let metrics = std::fs::read_to_string(dir.path().join("metrics.prom")).expect("metrics file");
    for step in ["load", "clean", "dedup", "augment", "validate", "export"] {
        for (column, key, family) in [
            ("records in", "records_in", "weave_step_records_in_total"),
            ("records out", "records_out", "weave_step_records_out_total"),
            ("retries", "retries", "weave_step_retries_total"),
            ("quarantined", "quarantined", "weave_step_quarantined_records_total"),
        ] {
            let shown = cell(&summary, step, column);
            let ctx = format!("{step} {column}\n{}", out.stderr);
            assert_eq!(report_step(&report, step)[key], shown, "report.json, {ctx}");
            assert_eq!(report_step(&json, step)[key], shown, "weave report --format json, {ctx}");
            assert_eq!(cell(&table, step, column), shown, "weave report, {ctx}");
            assert_eq!(metric(&metrics, family, step), Some(shown as f64), "metrics, {ctx}");
        }
        let dropped: u64 = report_step(&report, step)["dropped"]
            .as_object()
            .map_or(0, |m| m.values().filter_map(serde_json::Value::as_u64).sum());
        assert_eq!(cell(&summary, step, "dropped"), dropped, "{step} dropped");
        let row = format!(
            "<tr><td>{step}</td><td>{}</td><td>{}</td>",
            cell(&summary, step, "records in"),
            cell(&summary, step, "records out")
        );
        assert!(html.contains(&row), "the HTML page shows {row}");
    }
    // Whatever the timing, the export took in no more than validate passed on.
    assert!(cell(&summary, "export", "records in") <= cell(&summary, "validate", "records out"));
}

/// Regression: a run that failed on a bad CSV row reported `success_rate` 1.0, and the
/// bad row was counted nowhere.
#[test]
fn a_run_that_fails_on_a_bad_row_counts_it_and_is_not_a_success() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        dir.path(),
        "p.toml",
        "[[step]]\nid = \"load\"\nkind = \"load_csv\"\npath = \"in.csv\"\n\n\
         [[step]]\nid = \"export\"\nkind = \"export_jsonl\"\npath = \"out.jsonl\"\n",
    );
    write(dir.path(), "in.csv", "a,text\n1,x\n2,y,extra\n3,z\n");
    check_in(dir.path(), &["run", "p.toml", "--metrics-file", "m.prom"], 1, &[], &["in.csv:3"]);
    let report = last_report(dir.path());
    let rate = report["stats"]["success_rate"].as_f64().expect("a success rate");
    assert!(rate < 1.0, "success_rate {rate}");
    assert_eq!(report["stats"]["bad_records"], 1);
    assert_eq!(report_step(&report, "load")["bad_records"], 1);
    let metrics = std::fs::read_to_string(dir.path().join("m.prom")).expect("metrics");
    assert_eq!(metric(&metrics, "weave_step_bad_records_total", "load"), Some(1.0), "{metrics}");
    check_in(dir.path(), &["report"], 0, &["1 bad record"], &[]);
}

/// Regression: a run whose every record was set aside exited 0 with an empty output and
/// a WARN line. By default a step may set aside at most half of what it handled.
#[test]
fn a_step_that_sets_aside_every_record_fails_the_run() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        dir.path(),
        "p.toml",
        "[[step]]\nid = \"load\"\nkind = \"load_csv\"\npath = \"in.csv\"\non_bad_record = \"skip\"\n\n\
         [[step]]\nid = \"export\"\nkind = \"export_jsonl\"\npath = \"out.jsonl\"\n",
    );
    // A semicolon file read with the default comma: every row is ragged.
    write(dir.path(), "in.csv", "a,text\n1;x;y\n2;y;z\n3;z;w\n".replace(';', ",").as_str());
    let out = check_in(
        dir.path(),
        &["run", "p.toml"],
        1,
        &[],
        &["step \"load\"", "3 bad records of 3 (100%)", "max_bad_records = \"50%\"", "quarantine.jsonl"],
    );
    assert!(!dir.path().join("out.jsonl").exists(), "nothing is written: {}", out.stderr);
    // The records are still set aside, for a look.
    let q = std::fs::read_to_string(dir.path().join(".weave/quarantine.jsonl")).expect("quarantine file");
    assert_eq!(q.lines().count(), 3);
    let report = last_report(dir.path());
    assert_eq!(report["status"], "failed");
    assert_eq!(report_step(&report, "load")["bad_records"], 3);
}

/// `max_bad_records` as a count or a share, per step and per run.
#[test]
fn max_bad_records_fails_a_run_past_a_count_or_a_share() {
    let dir = tempfile::tempdir().expect("temp dir");
    // 10 rows: 2 ragged ones that `load` sets aside, and one whose `n` is not a number,
    // which `small` (a filter on a maximum) sets aside.
    let mut csv = String::from("id,n\n");
    for i in 0..10 {
        if i == 3 || i == 7 {
            csv.push_str(&format!("{i},{i},extra\n"));
        } else {
            csv.push_str(&format!("{i},{}\n", if i == 5 { "five".to_owned() } else { i.to_string() }));
        }
    }
    write(dir.path(), "in.csv", &csv);
    let pipeline = |run: &str, load: &str, filter: &str| {
        format!(
            "[pipeline]\nname = \"bad\"\n{run}\n\n\
             [[step]]\nid = \"load\"\nkind = \"load_csv\"\npath = \"in.csv\"\non_bad_record = \"skip\"\n{load}\n\n\
             [[step]]\nid = \"small\"\nkind = \"filter\"\nfield = \"n\"\nmax = 100\non_bad_record = \"skip\"\n{filter}\n\n\
             [[step]]\nid = \"export\"\nkind = \"export_jsonl\"\npath = \"out.jsonl\"\n"
        )
    };
    let cases = [
        // (run, load, filter, exit code, what the error says)
        ("", "", "", 0, ""),
        ("", "max_bad_records = 1", "", 1, "step \"load\": 2 bad records, more than max_bad_records = 1 allows"),
        ("", "max_bad_records = 2", "", 0, ""),
        (
            "",
            "max_bad_records = \"10%\"",
            "",
            1,
            "step \"load\": 2 bad records of 10 (20%), more than max_bad_records = \"10%\" allows",
        ),
        ("", "max_bad_records = \"20%\"", "", 0, ""),
        ("", "", "max_bad_records = 0", 1, "step \"small\": 1 bad record, more than max_bad_records = 0 allows"),
        ("max_bad_records = 2", "", "", 1, "the run: 3 bad records, more than [pipeline] max_bad_records = 2 allows"),
        ("max_bad_records = 3", "", "", 0, ""),
        (
            "max_bad_records = \"25%\"",
            "",
            "",
            1,
            "the run: 3 bad records of 10 read (30%), more than [pipeline] max_bad_records = \"25%\" allows",
        ),
    ];
    for (run, load, filter, code, says) in cases {
        write(dir.path(), "p.toml", &pipeline(run, load, filter));
        let out = check_in(dir.path(), &["run", "p.toml", "--no-cache"], code, &[], &[says]);
        assert_eq!(dir.path().join("out.jsonl").exists(), code == 0, "{run} {load} {filter}: {}", out.stderr);
        let _ = std::fs::remove_file(dir.path().join("out.jsonl"));
    }
    // A limit that is neither a count nor a share is refused, at its place.
    write(
        dir.path(),
        "p.toml",
        &pipeline("max_bad_records = \"lots\"", "max_bad_records = -1", "max_bad_records = \"150%\""),
    );
    check_in(
        dir.path(),
        &["validate", "p.toml"],
        1,
        &[],
        &["p.toml:3:", "p.toml:10:", "p.toml:18:", "a count of records (such as 100) or a share (such as \"1%\")"],
    );
}

/// A pipeline with an LLM step on `url`, and alerts on retries and the error rate.
fn llm_pipeline(url: &str) -> String {
    format!(
        r#"[pipeline]
name = "llm"

[retry]
max_retries = 3
retry_delay = "10ms"
max_delay = "50ms"

[[alert]]
when = "retries > 20"
notify = "file"
path = "alerts.jsonl"

[[alert]]
when = "error_rate > 0.3"
notify = "file"
path = "alerts.jsonl"

[llm.local]
base_url = "{url}"
model = "test-model"

[[step]]
id = "load"
kind = "load_jsonl"
path = "in.jsonl"
batch_size = 1000

[[step]]
id = "restyle"
kind = "augment"
noiser = {{ kind = "llm_style_transfer", style = "casual", llm = "local" }}
concurrency = 4

[[step]]
id = "export"
kind = "export_jsonl"
path = "out.jsonl"
"#
    )
}

/// Regression: retries and 429s inside an LLM call were not counted in
/// `weave_step_retries_total`, the summary's retries column, `error_rate` or the
/// `retries` alert (the figures said 56 retries; the metric said 0, no alert fired).
#[test]
fn retries_and_rate_limits_inside_llm_calls_are_counted_once_everywhere() {
    // Of 40 tickets, 10 are rate limited twice, 10 fail once with a 503: 30 retries.
    let server = TestServer::start(|r| {
        let text = r.prompt().rsplit("Text:\n").next().unwrap_or_default().to_owned();
        let n: usize = text.trim_start_matches("ticket ").parse().unwrap_or(0);
        match (n % 4, r.attempt) {
            (1, 1 | 2) => Reply::too_many_requests("0"),
            (2, 1) => Reply::error(503, "busy"),
            _ => Reply::text(format!("casual {text}")),
        }
    })
    .expect("server");
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "p.toml", &llm_pipeline(&server.url()));
    let input: String = (0..40).map(|i| format!("{{\"id\":{i},\"text\":\"ticket {i}\"}}\n")).collect();
    write(dir.path(), "in.jsonl", &input);
    let out = check_in(
        dir.path(),
        &["run", "p.toml", "--no-cache", "--metrics-file", "m.prom"],
        0,
        &["run succeeded"],
        &["2 alerts fired"],
    );
    assert_eq!(server.total(), 70, "40 requests and 30 retries");
    let summary = summary_rows(&out.stdout);
    assert_eq!(cell(&summary, "restyle", "retries"), 30, "{}", out.stdout);
    let metrics = std::fs::read_to_string(dir.path().join("m.prom")).expect("metrics");
    assert_eq!(metric(&metrics, "weave_step_retries_total", "restyle"), Some(30.0), "{metrics}");
    assert_eq!(metric(&metrics, "weave_step_requests_total", "restyle"), Some(70.0), "{metrics}");
    assert_eq!(metric(&metrics, "weave_step_failed_requests_total", "restyle"), Some(30.0), "{metrics}");
    let report = last_report(dir.path());
    assert_eq!(report_step(&report, "restyle")["retries"], 30);
    // Failed attempts over all attempts: the one call and its 70 requests.
    let rate = report["stats"]["error_rates"]["restyle"].as_f64().expect("an error rate");
    assert!((rate - 30.0 / 71.0).abs() < 1e-9, "error rate {rate}");
    let alerts = std::fs::read_to_string(dir.path().join("alerts.jsonl")).expect("alerts file");
    let alerts: Vec<serde_json::Value> =
        alerts.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect();
    let by_metric = |m: &str| alerts.iter().find(|a| a["metric"] == m).unwrap_or_else(|| panic!("{m}: {alerts:?}"));
    assert_eq!(by_metric("retries")["value"], 30.0);
    assert_eq!(by_metric("retries")["step"], "restyle");
    assert!((by_metric("error_rate")["value"].as_f64().unwrap_or(0.0) - 30.0 / 71.0).abs() < 1e-9);
}

/// Runs `promtool check metrics` on `text`: `None` when promtool is not installed.
fn promtool(text: &str) -> Option<std::process::Output> {
    use std::io::Write as _;
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take().expect("stdin").write_all(text.as_bytes()).expect("feed promtool");
    Some(child.wait_with_output().expect("promtool ends"))
}

/// Regression: promtool rejected the metrics file (call-duration quantiles published on a
/// gauge). Call durations are a histogram now; promtool checks a real run's file when it
/// is installed, and must be when `WEAVE_TEST_PROMTOOL` is set (as `.ci/run` does).
#[test]
fn the_metrics_file_of_a_real_run_is_valid_prometheus_text() {
    let dir = quickstart_that_fails_validation();
    check_in(dir.path(), &["run", "pipeline.toml", "--metrics-file", "failed.prom"], 1, &[], &[]);
    let text = std::fs::read_to_string(dir.path().join("pipeline.toml")).expect("pipeline");
    write(dir.path(), "pipeline.toml", &text.replace("on_fail = \"fail\"\n", ""));
    check_in(dir.path(), &["run", "pipeline.toml", "--metrics-file", "ok.prom"], 0, &[], &[]);
    for file in ["failed.prom", "ok.prom"] {
        let metrics = std::fs::read_to_string(dir.path().join(file)).expect("metrics file");
        // A histogram: cumulative buckets ending in +Inf, equal to the count.
        assert!(metrics.contains("# TYPE weave_step_call_duration_seconds histogram\n"), "{metrics}");
        let count = metric(&metrics, "weave_step_call_duration_seconds_count", "clean").expect("a count");
        let inf = metrics
            .lines()
            .find(|l| l.contains("_bucket{") && l.contains("step=\"clean\"") && l.contains("le=\"+Inf\""))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
        assert_eq!(inf, Some(count), "{metrics}");
        assert!(count >= 2.0, "clean made a call per batch");
        assert!(!metrics.contains("quantile="), "no quantiles outside a summary");
        let required = std::env::var_os("WEAVE_TEST_PROMTOOL").is_some();
        match promtool(&metrics) {
            Some(out) => {
                let said = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                assert!(out.status.success() && said.trim().is_empty(), "promtool on {file}:\n{said}\n{metrics}");
            }
            None => {
                assert!(!required, "WEAVE_TEST_PROMTOOL is set but promtool does not run");
                // A skip is worth saying (the harness shows it with --nocapture).
                #[allow(clippy::print_stderr)]
                {
                    eprintln!("skipped promtool: it is not installed (.ci/run installs it)");
                }
            }
        }
    }
}

/// The number of times `needle` occurs in `hay`.
fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

/// Regression: an error was printed three times: a log line, `error:` and `caused by:`.
#[test]
fn an_error_is_printed_once() {
    let dir = quickstart_that_fails_validation();
    let out = check_in(dir.path(), &["run", "pipeline.toml"], 1, &[], &["error: step \"validate\" failed"]);
    assert_eq!(count(&out.stderr, "fell short"), 1, "{}", out.stderr);
    assert_eq!(count(&out.stderr, "record 66 (id \"79\")"), 1, "{}", out.stderr);
    assert!(!out.stderr.contains("caused by"), "{}", out.stderr);

    // A cause that the message does not repeat is still shown, once.
    let dir = tempfile::tempdir().expect("temp dir");
    write(
        dir.path(),
        "p.toml",
        "[[step]]\nid = \"load\"\nkind = \"load_csv\"\npath = \"in.csv\"\n\n\
         [[step]]\nid = \"export\"\nkind = \"export_jsonl\"\npath = \"out.jsonl\"\n",
    );
    let out: Output = weave_in(dir.path(), &["run", "p.toml"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(count(&out.stderr, "cannot open in.csv"), 1, "{}", out.stderr);
    assert_eq!(count(&out.stderr, "No such file"), 1, "{}", out.stderr);
}

/// Whether the process `pid` has ended (gone, or a zombie waiting for its parent).
fn ended(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(") ").next().is_some_and(|rest| rest.starts_with(['Z', 'X'])),
    }
}

// regression: an `[[alert]]` command runs in a process group of its own (so that its
// timeout kills all it started), which a terminal's Ctrl-C does not reach; after the
// forced stop (a second Ctrl-C), weave exited and the command lived on.
#[test]
fn a_second_ctrl_c_stops_the_alert_commands_still_running() {
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "in.csv", "a,text\n1,x\n");
    write(
        dir.path(),
        "p.toml",
        "[[alert]]\nwhen = \"step_duration >= 0s\"\nstep = \"load\"\nnotify = \"command\"\n\
         command = \"sh -c 'echo $$ >> pids; exec sleep 1000' & echo $$ >> pids; exec sleep 1000\"\ntimeout = \"10m\"\n\
         [[step]]\nid = \"load\"\nkind = \"load_csv\"\npath = \"in.csv\"\n\n\
         [[step]]\nid = \"export\"\nkind = \"export_jsonl\"\npath = \"out.jsonl\"\n",
    );
    // Not piped: the command holds weave's stderr, so reading it to the end would wait for
    // the command to end.
    let mut child = Command::new(env!("CARGO_BIN_EXE_weave"))
        .args(["run", "p.toml", "--no-cache"])
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("weave starts");
    // The command and the child it started have written their process ids; weave waits
    // for the command (its timeout is long) before it exits.
    let pids = dir.path().join("pids");
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&pids).map_or(0, |p| p.lines().count()) < 2
        && started.elapsed() < std::time::Duration::from_secs(60)
    {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let pids = std::fs::read_to_string(&pids).expect("the alert command ran");
    for _ in 0..2 {
        let sent = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill runs");
        assert!(sent.success());
        // Apart, so that the two are not merged into one pending signal.
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let status = child.wait().expect("weave exits");
    assert_eq!(status.code(), Some(130));
    // The kill is sent before weave exits; the kernel takes a moment to end them.
    let outlived: Vec<&str> = pids
        .split_whitespace()
        .filter(|pid| {
            let gone = (0..500).any(|_| {
                std::thread::sleep(std::time::Duration::from_millis(10));
                ended(pid)
            });
            if !gone {
                let _ = Command::new("kill").args(["-9", pid]).status();
            }
            !gone
        })
        .collect();
    assert!(outlived.is_empty(), "processes {outlived:?} of the alert command outlived the forced stop");
}
