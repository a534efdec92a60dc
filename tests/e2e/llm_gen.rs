//! LLM generation through the real binary, against the test server in this process:
//! `n` answers per record and records with one prompt get requests of their own (and a
//! re-run sends none).

use weave_testkit::{Reply, TestServer};

use crate::llm::{KEY, jsonl, report, setup, weave};

/// The figures of step `id` in the last run's report.
fn figures(dir: &std::path::Path, id: &str) -> serde_json::Value {
    let r = report(dir);
    r["steps"].as_array().expect("steps").iter().find(|s| s["step"] == id).expect("the step")["figures"].clone()
}

#[test]
fn five_answers_per_record_are_five_requests_and_a_rerun_sends_none() {
    // A model that samples: its answer depends on the seed it is sent.
    let server = TestServer::builder()
        .api_key(KEY)
        .start(|r| Reply::text(format!("ticket text {}", r.field("seed"))))
        .expect("server");
    // Every record renders the same prompt: only `vary_by` tells them apart.
    let step = r#"[[step]]
id = "gen"
kind = "llm_generate"
prompt = "Write a support ticket."
n = 5
temperature = 1.0"#;
    let dir = setup(&server.url(), step, 6);
    let out = weave(dir.path(), &["run", "p.toml"], KEY);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = jsonl(&dir.path().join("out.jsonl"));
    assert_eq!(rows.len(), 30);
    // Thirty requests, each body once: five per record.
    assert_eq!(server.total(), 30);
    let counts = server.counts();
    assert_eq!(counts.len(), 30);
    assert!(counts.values().all(|&n| n == 1));
    let mut texts: Vec<&str> = rows.iter().map(|r| r["generated"].as_str().expect("text")).collect();
    texts.sort_unstable();
    texts.dedup();
    assert_eq!(texts.len(), 30, "thirty different answers");
    let f = figures(dir.path(), "gen");
    assert_eq!((f["requests"].as_u64(), f["distinct"].as_u64()), (Some(30), Some(30)), "{f}");

    // Again, with the step's stored output gone: every answer comes from the cache.
    let out = weave(dir.path(), &["run", "p.toml", "--refresh", "gen"], KEY);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(server.total(), 30, "a re-run sends nothing");
    let f = figures(dir.path(), "gen");
    assert_eq!((f["cache_hits"].as_u64(), f["distinct"].as_u64()), (Some(30), Some(30)), "{f}");
    assert_eq!(jsonl(&dir.path().join("out.jsonl")), rows);
}

/// `setup`'s pipeline with its provider sending through the Batch API, polled every 20 ms.
fn batch_setup(url: &str, step: &str, rows: usize) -> tempfile::TempDir {
    let dir = setup(url, step, rows);
    let p = dir.path().join("p.toml");
    let text = std::fs::read_to_string(&p).expect("pipeline");
    let text = text.replace(
        "completion_price_per_million = 1.5\n",
        "completion_price_per_million = 1.5\nbatch = true\nbatch_poll_interval = \"20ms\"\n",
    );
    std::fs::write(&p, text).expect("pipeline");
    dir
}

#[test]
fn a_batch_run_killed_after_upload_resumes_and_sends_every_request_once() {
    // The batch takes three seconds: the run is killed while it waits.
    let server = TestServer::builder()
        .api_key(KEY)
        .batch_delay(std::time::Duration::from_secs(3))
        .start(|r| Reply::text(format!("answer to {}", r.prompt())).with_usage(12, 3))
        .expect("server");
    let step = r#"[[step]]
id = "gen"
kind = "llm_generate"
prompt = "Summarise ticket {id}: {text}""#;
    let dir = batch_setup(&server.url(), step, 200);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_weave"))
        .args(["run", "p.toml", "-q"])
        .current_dir(dir.path())
        .env_remove("RUST_LOG")
        .env_remove("WEAVE_CACHE_DIR")
        .env("WEAVE_E2E_KEY", KEY)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("weave starts");
    // Once the batch is polled, its id is in the cache (it is stored before the first poll).
    let start = std::time::Instant::now();
    while !server.api_calls().iter().any(|c| c.starts_with("GET /v1/batches/"))
        && start.elapsed() < std::time::Duration::from_secs(60)
    {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let killed = std::process::Command::new("kill").args(["-KILL", &child.id().to_string()]).status().expect("kill");
    assert!(killed.success());
    assert!(!child.wait().expect("weave exits").success());
    assert!(!dir.path().join("out.jsonl").exists(), "a killed run commits nothing");
    assert_eq!((server.batches(), server.total()), (1, 200), "one batch of every request");

    let out = weave(dir.path(), &["run", "p.toml"], KEY);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let rows = jsonl(&dir.path().join("out.jsonl"));
    assert_eq!(rows.len(), 200);
    for r in &rows {
        let expected = format!("answer to Summarise ticket {}: ticket {}", r["id"], r["id"]);
        assert_eq!(r["generated"].as_str(), Some(expected.as_str()));
    }
    // The resumed run polled the same batch: nothing uploaded or asked again.
    assert_eq!(server.batches(), 1);
    assert_eq!(server.total(), 200);
    assert!(server.counts().values().all(|&n| n == 1), "every request exactly once");
    assert_eq!(server.api_calls().iter().filter(|c| *c == "POST /v1/files").count(), 1);
    let f = figures(dir.path(), "gen");
    assert_eq!((f["requests"].as_u64(), f["answers"].as_u64()), (Some(0), Some(200)), "{f}");
    // 200 × 12 prompt tokens at 0.5 and 200 × 3 at 1.5 a million, at half the price.
    let cost = f["cost"].as_f64().expect("cost");
    assert!((cost - (2400.0 * 0.5 + 600.0 * 1.5) / 1e6 * 0.5).abs() < 1e-12, "{cost}");
}

/// Tokens as the test server counts them: a quarter of the bytes, rounded up. No test
/// server has a real tokenizer; the plan's estimate uses the same rule, so what is tested
/// is what the plan must get right by itself: which requests are new, how many, and how
/// long their answers will be (learnt from the cache and the last run).
fn tokens(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4)
}

/// A model whose answers are 20 to 60 words long, as its seed decides, with usage counted
/// by [`tokens`] (and three tokens per message and three for the reply, as OpenAI counts).
fn sampling_model(r: &weave_testkit::Request) -> Reply {
    let seed = r.field("seed").as_u64().unwrap_or(0);
    let words = ["the", "ticket", "customer", "refund", "delivery", "was", "late", "and", "support", "answered"];
    let n = 20 + (seed % 41) as usize;
    let content: Vec<&str> = (0..n).map(|i| words[(seed as usize / 7 + i * 3) % words.len()]).collect();
    let content = content.join(" ");
    let prompt: u64 = r.messages().iter().map(|(_, c)| tokens(c) + 3).sum::<u64>() + 3;
    let completion = tokens(&content);
    Reply::text(content).with_usage(prompt, completion)
}

/// `weave plan --cost --format json`'s entry for step `id`.
fn planned(dir: &std::path::Path, id: &str) -> serde_json::Value {
    let out = weave(dir, &["plan", "p.toml", "--cost", "--format", "json"], KEY);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    v["cost"]["steps"].as_array().expect("steps").iter().find(|s| s["step"] == id).expect("the step").clone()
}

/// Whether `estimate` is within 10% of `actual`.
fn within_10_percent(estimate: f64, actual: f64) -> bool {
    (estimate - actual).abs() <= 0.1 * actual
}

#[test]
fn plan_cost_says_what_the_run_then_sends_and_pays() {
    let server = TestServer::builder().api_key(KEY).start(sampling_model).expect("server");
    let step = r#"[[step]]
id = "gen"
kind = "llm_generate"
prompt = "Summarise support ticket {id} in a few sentences: {text}""#;
    let dir = setup(&server.url(), step, 200);
    let out = weave(dir.path(), &["run", "p.toml"], KEY);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert_eq!(server.total(), 200);

    // Nothing changed: the step's output is cached, nothing would be sent.
    let p = planned(dir.path(), "gen");
    assert_eq!((p["output_cached"].as_bool(), p["new_requests"].as_u64()), (Some(true), Some(0)), "{p}");
    assert_eq!(server.total(), 200, "a plan sends nothing");

    // Check the plan against the run after each change: 100 records more, then a new prompt.
    let check = |dir: &std::path::Path, new: u64, cached: u64, basis: &str| {
        let p = planned(dir, "gen");
        assert_eq!((p["new_requests"].as_u64(), p["cache_hits"].as_u64()), (Some(new), Some(cached)), "{p}");
        assert_eq!(p["answer_basis"], basis, "{p}");
        let before = server.total();
        let out = weave(dir, &["run", "p.toml"], KEY);
        assert_eq!(out.code, 0, "{}", out.stderr);
        assert_eq!((server.total() - before) as u64, new, "the run sent what the plan said");
        let f = figures(dir, "gen");
        for (planned, reported) in
            [("prompt_tokens", "prompt_tokens"), ("completion_tokens", "completion_tokens"), ("cost", "cost")]
        {
            let (e, a) = (p[planned].as_f64().expect("planned"), f[reported].as_f64().expect("reported"));
            assert!(within_10_percent(e, a), "{planned}: planned {e}, the run reported {a}");
        }
    };
    let more: String =
        (200..300).map(|i| serde_json::json!({"id": i, "text": format!("ticket {i}")}).to_string() + "\n").collect();
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, std::fs::read_to_string(&input).expect("input") + &more).expect("input");
    check(dir.path(), 100, 200, "mean of the cached answers");

    let p = dir.path().join("p.toml");
    let text = std::fs::read_to_string(&p).expect("pipeline");
    std::fs::write(&p, text.replace("in a few sentences", "for a manager, in one paragraph")).expect("pipeline");
    check(dir.path(), 300, 0, "mean of the last run's answers");
    let table = weave(dir.path(), &["plan", "p.toml", "--cost"], KEY);
    assert!(table.stdout.contains("total: 0 new requests"), "{}", table.stdout);
}

#[test]
fn plan_cost_on_a_pipeline_that_cannot_run_says_why_and_sends_nothing() {
    let server = TestServer::builder().api_key(KEY).start(sampling_model).expect("server");
    let step = r#"[[step]]
id = "gen"
kind = "llm_generate"
prompt = "Summarise {text}""#;
    let dir = setup(&server.url(), step, 3);
    std::fs::remove_file(dir.path().join("in.jsonl")).expect("input");
    let out = weave(dir.path(), &["plan", "p.toml", "--cost"], KEY);
    assert_ne!(out.code, 0);
    assert!(out.stderr.contains("the dry run failed") && out.stderr.contains("in.jsonl"), "{}", out.stderr);
    assert_eq!(server.total(), 0);
    assert!(!dir.path().join("out.jsonl").exists());

    // A pipeline without an LLM step says so.
    let p = dir.path().join("p.toml");
    let text = std::fs::read_to_string(&p).expect("pipeline");
    std::fs::write(
        &p,
        text.replace("kind = \"llm_generate\"\nprompt = \"Summarise {text}\"", "kind = \"clean\"\nrules = [\"trim\"]"),
    )
    .expect("pipeline");
    std::fs::write(dir.path().join("in.jsonl"), "{\"text\": \" a \"}\n").expect("input");
    let out = weave(dir.path(), &["plan", "p.toml", "--cost"], KEY);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("no LLM step"), "{}", out.stdout);
    assert!(!dir.path().join("out.jsonl").exists(), "a plan writes no output");
}

// regression: over JSON records whose fields vary, `vary_by = "record"` (llm_generate's
// default) salted a request with every field of the record's batch, in the batch's order
// and with nulls for the fields the record lacked: another batch size (or a shard's other
// cut) asked other requests, and got other answers.
#[test]
fn records_whose_fields_vary_ask_the_same_requests_at_any_batch_size() {
    let server = TestServer::builder()
        .api_key(KEY)
        .start(|r| Reply::text(format!("ticket text {}", r.field("seed"))))
        .expect("server");
    let step = r#"[[step]]
id = "gen"
kind = "llm_generate"
prompt = "Write a support ticket."
temperature = 1.0"#;
    let mut input = String::new();
    for i in 0..12 {
        // `lang` in one record in four, and the keys in another order in one in three.
        let mut fields = vec![format!("\"id\":{i}"), format!("\"text\":\"ticket {i}\"")];
        if i % 4 == 0 {
            fields.push("\"lang\":\"en\"".to_owned());
        }
        if i % 3 == 0 {
            fields.reverse();
        }
        input.push_str(&format!("{{{}}}\n", fields.join(",")));
    }
    let mut outputs = Vec::new();
    for batch_size in [1000, 3, 1] {
        let dir = setup(&server.url(), step, 0);
        std::fs::write(dir.path().join("in.jsonl"), &input).expect("input");
        let p = std::fs::read_to_string(dir.path().join("p.toml")).expect("pipeline");
        std::fs::write(
            dir.path().join("p.toml"),
            p.replace("batch_size = 1000", &format!("batch_size = {batch_size}")),
        )
        .expect("pipeline");
        let out = weave(dir.path(), &["run", "p.toml"], KEY);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let rows: Vec<serde_json::Value> = jsonl(&dir.path().join("out.jsonl"))
            .into_iter()
            .map(|mut r| {
                r.as_object_mut().expect("an object").retain(|_, v| !v.is_null());
                r
            })
            .collect();
        outputs.push(rows);
    }
    // Twelve requests, each asked once per run: the same twelve at every batch size.
    let counts = server.counts();
    assert_eq!(counts.len(), 12, "{counts:?}");
    assert!(counts.values().all(|&n| n == 3), "{counts:?}");
    assert_eq!(outputs[1], outputs[0]);
    assert_eq!(outputs[2], outputs[0]);
}
