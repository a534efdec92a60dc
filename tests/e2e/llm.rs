//! LLM steps through the real binary, against the test server running in this process:
//! faults end answered or quarantined, a killed run resumes without asking again, the API
//! key is never written anywhere, `--no-cache`, the figures in the report.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use weave_testkit::{Reply, TestServer};

use crate::cli::Output;

/// The API key the tests give the binary; it must never appear in anything it writes.
pub(crate) const KEY: &str = "sk-e2e-SECRET-4f7c2a9b1d";

/// `weave` with `args` in `dir`, with the key in `WEAVE_E2E_KEY` (or `key`).
pub(crate) fn weave(dir: &Path, args: &[&str], key: &str) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_weave"))
        .args(args)
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("WEAVE_CACHE_DIR")
        .env("WEAVE_E2E_KEY", key)
        .output()
        .expect("the weave binary runs");
    Output {
        code: out.status.code().expect("weave exited on its own"),
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
    }
}

pub(crate) fn pipeline(url: &str, step: &str) -> String {
    format!(
        r#"
[pipeline]
name = "llm"
seed = 3

[retry]
max_retries = 3
retry_delay = "10ms"
max_delay = "50ms"

[llm.local]
base_url = "{url}"
model = "test-model"
api_key_env = "WEAVE_E2E_KEY"
prompt_price_per_million = 0.5
completion_price_per_million = 1.5

[[step]]
id = "load"
kind = "load_jsonl"
path = "in.jsonl"
batch_size = 1000

{step}

[[step]]
id = "export"
kind = "export_jsonl"
path = "out.jsonl"
"#
    )
}

const AUGMENT: &str = r#"[[step]]
id = "restyle"
kind = "augment"
noiser = { kind = "llm_style_transfer", style = "casual", llm = "local" }
concurrency = 16
on_bad_record = "skip""#;

pub(crate) fn setup(url: &str, step: &str, rows: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("p.toml"), pipeline(url, step)).expect("pipeline");
    let mut input = String::new();
    for i in 0..rows {
        input.push_str(&serde_json::json!({"id": i, "text": format!("ticket {i}")}).to_string());
        input.push('\n');
    }
    std::fs::write(dir.path().join("in.jsonl"), input).expect("input");
    dir
}

pub(crate) fn jsonl(path: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

/// The text a noiser's prompt asks to rewrite.
fn text_of(prompt: &str) -> String {
    prompt.rsplit("Text:\n").next().unwrap_or(prompt).to_owned()
}

fn number(text: &str) -> usize {
    text.trim_start_matches("ticket ").parse().unwrap_or(usize::MAX)
}

/// Every file under `dir`.
pub(crate) fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() { stack.push(p) } else { out.push(p) }
        }
    }
    out
}

/// The cache's entries, as `weave cache stats` counts them (answers are in its packs).
pub(crate) fn cache_entries(dir: &Path) -> usize {
    let out = weave(dir, &["cache", "stats", "--dir", ".weave/cache"], "");
    out.stdout.lines().find_map(|l| l.strip_prefix("entries: ")).and_then(|n| n.trim().parse().ok()).unwrap_or(0)
}

pub(crate) fn report(dir: &Path) -> serde_json::Value {
    let mut runs: Vec<PathBuf> =
        std::fs::read_dir(dir.join(".weave/runs")).expect("runs").flatten().map(|e| e.path()).collect();
    runs.sort();
    let last = runs.last().expect("a run record");
    serde_json::from_slice(&std::fs::read(last.join("report.json")).expect("report")).expect("JSON")
}

#[test]
fn through_faults_every_record_is_answered_or_quarantined_once() {
    let server = TestServer::builder()
        .api_key(KEY)
        .start(|r| {
            let text = text_of(r.prompt());
            let fault = match (number(&text) % 8, r.attempt) {
                (1, 1 | 2) => Some(Reply::error(500, "boom")),
                (2, 1) => Some(Reply::too_many_requests("0")),
                (3, 1) => Some(Reply::Malformed),
                (4, 1) => Some(Reply::Drop),
                (5, _) => Some(Reply::error(503, "down for good")),
                (6, 1) => Some(Reply::error(502, "bad gateway").after(Duration::from_millis(30))),
                _ => None,
            };
            fault.unwrap_or_else(|| Reply::text(format!("casual {text}")))
        })
        .expect("server");
    let dir = setup(&server.url(), AUGMENT, 200);
    let out = weave(dir.path(), &["run", "p.toml"], KEY);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("25 bad records set aside"), "{}", out.stdout);

    let answered = jsonl(&dir.path().join("out.jsonl"));
    let quarantined = jsonl(&dir.path().join(".weave/quarantine.jsonl"));
    assert_eq!(answered.len(), 175);
    assert_eq!(quarantined.len(), 25);
    let mut seen = HashSet::new();
    for r in &answered {
        let text = r["text"].as_str().unwrap();
        assert!(seen.insert(text.to_owned()), "{text} twice");
        assert_eq!(r["text_noisy"], format!("casual {text}"));
        assert_eq!(r["text_noisy_noiser"], "llm_style_transfer(style=casual,model=test-model)");
        assert_eq!(r["text_noisy_seed"].as_str().map(str::len), Some(16));
    }
    for q in &quarantined {
        let text = q["record"]["text"].as_str().unwrap();
        assert!(seen.insert(text.to_owned()), "{text} both answered and quarantined");
        assert_eq!(number(text) % 8, 5);
        assert_eq!(q["step"], "restyle");
        assert_eq!(q["reason"], "llm_style_transfer: no answer after 4 attempts: HTTP 503: down for good");
    }
    assert_eq!(seen.len(), 200, "no record lost");
    // No answer asked for twice.
    let mut prompts = server.answered_prompts();
    prompts.sort();
    let n = prompts.len();
    prompts.dedup();
    assert_eq!((n, prompts.len()), (175, 175));

    // The figures: every request sent, the tokens the server reported, the cost.
    let r = report(dir.path());
    let step = r["steps"].as_array().unwrap().iter().find(|s| s["step"] == "restyle").unwrap();
    let figures = &step["figures"];
    assert_eq!(figures["requests"], server.total() as u64, "{figures}");
    assert_eq!(figures["answers"], 175);
    assert_eq!(figures["failed_requests"], 25);
    assert_eq!(figures["rate_limited"], 25);
    assert!(figures["prompt_tokens"].as_u64().unwrap() > 175 * 20, "{figures}");
    assert_eq!(figures["completion_tokens"], 175 * 3);
    assert!(figures["cost"].as_f64().unwrap() > 0.0);
    assert!(out.stdout.contains("restyle: requests "), "the summary shows the figures: {}", out.stdout);
}

#[test]
fn a_killed_run_resumes_without_asking_anything_twice() {
    // After 60 answers the server holds every request: the run is killed with requests in
    // flight that have no answer.
    let holding = Arc::new(AtomicBool::new(false));
    let hold = Arc::clone(&holding);
    let server = TestServer::builder()
        .api_key(KEY)
        .latency(Duration::from_millis(5))
        .start(move |r| {
            if hold.load(Ordering::SeqCst) {
                Reply::Hold
            } else {
                Reply::text(format!("casual {}", text_of(r.prompt())))
            }
        })
        .expect("server");
    let dir = setup(&server.url(), AUGMENT, 300);
    let mut child = Command::new(env!("CARGO_BIN_EXE_weave"))
        .args(["run", "p.toml", "-q"])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env_remove("WEAVE_CACHE_DIR")
        .env("WEAVE_E2E_KEY", KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("weave starts");
    assert!(server.wait_until(Duration::from_secs(60), |answered, _| answered >= 60), "60 answers");
    holding.store(true, Ordering::SeqCst);
    // Let the answers under way go out, then wait until every answer given is stored (each
    // is one cache entry, as the batch is not finished): what a killed run has paid for is
    // what it keeps. (An answer still on its way when a process dies is lost, unavoidably.)
    let start = std::time::Instant::now();
    while server.busy() > 0 && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let answered = server.answered();
    while cache_entries(dir.path()) < answered && start.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(10));
    }
    let killed = Command::new("kill").args(["-KILL", &child.id().to_string()]).status().expect("kill runs");
    assert!(killed.success());
    assert!(!child.wait().expect("weave exits").success());
    assert!(!dir.path().join("out.jsonl").exists(), "a killed run commits nothing");
    let first: HashSet<String> = server.answered_prompts().into_iter().collect();
    let before = server.total();
    assert!(first.len() >= 60 && first.len() < 300, "{}", first.len());

    holding.store(false, Ordering::SeqCst);
    let out = weave(dir.path(), &["run", "p.toml"], KEY);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(jsonl(&dir.path().join("out.jsonl")).len(), 300);
    let again: Vec<String> = server.requests()[before..].iter().map(|l| l.request.prompt().to_owned()).collect();
    let repeated: Vec<&String> = again.iter().filter(|p| first.contains(*p)).collect();
    assert!(repeated.is_empty(), "{} answered requests were sent again", repeated.len());
    // Every record answered exactly once over both runs.
    let mut all = server.answered_prompts();
    all.sort();
    let n = all.len();
    all.dedup();
    assert_eq!((n, all.len()), (300, 300));
    let r = report(dir.path());
    let figures = &r["steps"].as_array().unwrap().iter().find(|s| s["step"] == "restyle").unwrap()["figures"];
    assert_eq!(figures["cache_hits"].as_u64(), Some(first.len() as u64), "{figures}");
}

#[test]
fn the_api_key_is_never_written_anywhere() {
    let server = TestServer::builder()
        .api_key(KEY)
        .start(|r| Reply::text(format!("casual {}", text_of(r.prompt()))))
        .expect("server");
    let dir = setup(&server.url(), AUGMENT, 20);
    // A run with every log line on, a metrics file and a report.
    let ok = weave(dir.path(), &["-vv", "run", "p.toml", "--metrics-file", "metrics.prom"], KEY);
    assert_eq!(ok.code, 0, "{}", ok.stderr);
    assert!(ok.stderr.contains("restyle"), "the log has the run in it");
    // The tokens reach the metrics too.
    let prom = std::fs::read_to_string(dir.path().join("metrics.prom")).expect("metrics");
    assert!(prom.contains("weave_step_figure{pipeline=\"llm\",step=\"restyle\",figure=\"prompt_tokens\"}"), "{prom}");
    assert_eq!(server.requests()[0].request.authorization.as_deref(), Some(format!("Bearer {KEY}").as_str()));
    // A run the server refuses: it repeats the key it was sent in its error message.
    let wrong = "sk-e2e-WRONG-9a8b7c6d5e";
    std::fs::write(dir.path().join("in.jsonl"), "{\"text\":\"another\"}\n").expect("input");
    let refused = weave(dir.path(), &["-vv", "run", "p.toml"], wrong);
    assert_eq!(refused.code, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("HTTP 401") && refused.stderr.contains("[redacted]"), "{}", refused.stderr);
    // A file that names a variable that is not set.
    let plan = weave(dir.path(), &["validate", "p.toml"], "");
    assert!(plan.stderr.contains("`WEAVE_E2E_KEY` (`api_key_env` of [llm.local]) is not set"), "{}", plan.stderr);

    for (what, text) in [("stdout", &ok.stdout), ("stderr", &ok.stderr), ("stderr", &refused.stderr)] {
        for key in [KEY, wrong] {
            assert!(!text.contains(key), "the key is in the {what}");
        }
    }
    let written = files(dir.path());
    assert!(written.iter().any(|p| p.ends_with("report.json")));
    assert!(written.iter().any(|p| p.ends_with("events.jsonl")));
    assert!(written.iter().any(|p| p.to_string_lossy().contains("/packs/")), "the cache of answers");
    assert!(written.iter().any(|p| p.ends_with("metrics.prom")));
    for path in written {
        let bytes = std::fs::read(&path).expect("readable");
        for key in [KEY, wrong] {
            let found = bytes.windows(key.len()).any(|w| w == key.as_bytes());
            assert!(!found, "the key is in {}", path.display());
        }
    }
}

#[test]
fn without_the_cache_every_run_asks_again_and_stores_nothing() {
    let server = TestServer::builder().api_key(KEY).start(|r| Reply::text(text_of(r.prompt()))).expect("server");
    let dir = setup(&server.url(), AUGMENT, 10);
    for _ in 0..2 {
        let out = weave(dir.path(), &["run", "p.toml", "--no-cache"], KEY);
        assert_eq!(out.code, 0, "{}", out.stderr);
    }
    assert_eq!(server.total(), 20);
    assert_eq!(cache_entries(dir.path()), 0);
    // With the cache; then the step computed again: every answer comes from the cache.
    weave(dir.path(), &["run", "p.toml"], KEY);
    std::fs::remove_file(dir.path().join("out.jsonl")).expect("output");
    let out = weave(dir.path(), &["run", "p.toml", "--refresh", "restyle"], KEY);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(server.total(), 30, "the refreshed step takes every answer from the cache of requests");
}

#[test]
fn generate_then_judge_through_the_binary() {
    let server = TestServer::builder()
        .api_key(KEY)
        .start(|r| {
            let p = r.prompt();
            if p.starts_with("Judge") {
                let bad = p.contains("Q2");
                Reply::json(&serde_json::json!({"score": if bad { 3 } else { 9 }, "reason": "because"}))
            } else {
                let seed = r.field("seed").as_u64().unwrap_or(0);
                Reply::json(&serde_json::json!({"question": format!("Q{} {seed}", seed % 3), "answer": "A"}))
            }
        })
        .expect("server");
    let steps = r#"[[step]]
id = "qa"
kind = "llm_generate"
prompt = "Write a question and its answer about ticket {id}, as JSON."
n = 2
keep_input = false
json_schema = { type = "object", properties = { question = { type = "string" }, answer = { type = "string" } }, required = ["question", "answer"] }

[[step]]
id = "judge"
kind = "llm_judge"
field = "question"
threshold = 5"#;
    let dir = setup(&server.url(), steps, 6);
    let out = weave(dir.path(), &["run", "p.toml"], KEY);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = jsonl(&dir.path().join("out.jsonl"));
    assert!(!rows.is_empty() && rows.len() < 12, "{}", rows.len());
    for r in &rows {
        assert!(!r["question"].as_str().unwrap().starts_with("Q2"));
        assert_eq!(r["judge_score"], 9.0);
        assert_eq!(r["judge_reason"], "because");
        assert!(r["sample"] == 0 || r["sample"] == 1);
    }
    assert!(out.stdout.contains("llm_judge: below threshold"), "{}", out.stdout);
}

#[test]
fn a_step_naming_no_provider_is_refused_with_a_suggestion() {
    let dir = setup("http://127.0.0.1:9/v1", "[[step]]\nid = \"j\"\nkind = \"llm_judge\"\nllm = \"locl\"", 1);
    let out = weave(dir.path(), &["validate", "p.toml"], KEY);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("no LLM provider `locl`") && out.stderr.contains("did you mean \"local\"?"),
        "{}",
        out.stderr
    );
}

#[test]
fn small_batches_still_keep_the_requests_in_flight() {
    // Batches of 5 records, 8 requests in flight: the step runs batches side by side.
    let server = TestServer::builder()
        .api_key(KEY)
        .latency(Duration::from_millis(40))
        .start(|r| Reply::text(text_of(r.prompt())))
        .expect("server");
    let step = AUGMENT.replace("concurrency = 16", "concurrency = 8");
    let dir = setup(&server.url(), &step, 60);
    let text = std::fs::read_to_string(dir.path().join("p.toml"))
        .expect("pipeline")
        .replace("batch_size = 1000", "batch_size = 5");
    std::fs::write(dir.path().join("p.toml"), text).expect("pipeline");
    let out = weave(dir.path(), &["run", "p.toml"], KEY);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = jsonl(&dir.path().join("out.jsonl"));
    let ids: Vec<u64> = rows.iter().map(|r| r["id"].as_u64().unwrap()).collect();
    assert_eq!(ids, (0..60).collect::<Vec<u64>>(), "in input order");
    let most = server.max_in_flight();
    assert!((6..=8).contains(&most), "{most} requests in flight at most");
}

#[test]
fn a_graceful_stop_lets_the_requests_in_flight_land_in_the_cache() {
    // regression: Ctrl-C abandoned the requests in flight, which the provider had already
    // charged for, and the resumed run sent them again (8 per stop at `concurrency` 64).
    // The server takes a while to answer while `slow` is set: the run is stopped with all
    // four of its requests in flight.
    let slow = Arc::new(AtomicBool::new(true));
    let slow2 = Arc::clone(&slow);
    let server = TestServer::builder()
        .api_key(KEY)
        .start(move |r| {
            let reply = Reply::text(format!("casual {}", text_of(r.prompt())));
            if slow2.load(Ordering::SeqCst) { reply.after(Duration::from_millis(1500)) } else { reply }
        })
        .expect("server");
    let dir = setup(&server.url(), &AUGMENT.replace("concurrency = 16", "concurrency = 4"), 40);
    let child = Command::new(env!("CARGO_BIN_EXE_weave"))
        .args(["run", "p.toml"])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env_remove("WEAVE_CACHE_DIR")
        .env("WEAVE_E2E_KEY", KEY)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weave starts");
    let start = std::time::Instant::now();
    while server.busy() < 4 && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(server.busy(), 4, "four requests in flight");
    let sent = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill runs");
    assert!(sent.success());
    let out = child.wait_with_output().expect("weave exits");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(stderr.contains("waiting up to 10s for 4 LLM requests in flight"), "{stderr}");
    // Nothing new went out after the stop, and the four were answered and kept.
    assert_eq!(server.total(), 4);
    assert_eq!(server.answered(), 4);

    slow.store(false, Ordering::SeqCst);
    let again = weave(dir.path(), &["run", "p.toml"], KEY);
    assert_eq!(again.code, 0, "{}", again.stderr);
    assert_eq!(jsonl(&dir.path().join("out.jsonl")).len(), 40);
    let twice: Vec<(String, u32)> = server.counts().into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(twice.is_empty(), "sent twice: {twice:?}");
    assert_eq!(server.total(), 40);
}

#[test]
fn a_second_ctrl_c_skips_the_grace_period() {
    // The server never answers: the first Ctrl-C waits for the requests in flight, the
    // second stops at once (before the grace period ends, which would say so).
    let server = TestServer::builder().api_key(KEY).start(|_| Reply::Hold).expect("server");
    let dir = setup(&server.url(), &AUGMENT.replace("concurrency = 16", "concurrency = 2"), 10);
    let mut child = Command::new(env!("CARGO_BIN_EXE_weave"))
        .args(["run", "p.toml"])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env_remove("WEAVE_CACHE_DIR")
        .env("WEAVE_E2E_KEY", KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("weave starts");
    let start = std::time::Instant::now();
    while server.total() < 2 && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(5));
    }
    let pid = child.id().to_string();
    let interrupt = || {
        let sent = Command::new("kill").args(["-INT", &pid]).status().expect("kill runs");
        assert!(sent.success());
    };
    interrupt();
    // Wait for the run to say it is waiting, then interrupt again.
    let mut stderr = std::io::BufReader::new(child.stderr.take().expect("stderr"));
    let mut seen = String::new();
    while !seen.contains("waiting up to 10s for 2 LLM requests in flight") {
        let mut line = String::new();
        if std::io::BufRead::read_line(&mut stderr, &mut line).expect("read stderr") == 0 {
            panic!("weave ended without waiting for its requests:\n{seen}");
        }
        seen.push_str(&line);
    }
    interrupt();
    std::io::Read::read_to_string(&mut stderr, &mut seen).expect("read stderr");
    let status = child.wait().expect("weave exits");
    assert_eq!(status.code(), Some(130), "{seen}");
    assert!(!seen.contains("still had no answer"), "the grace period ran out instead:\n{seen}");
    assert_eq!(server.total(), 2, "nothing new was sent after the stop");
}
