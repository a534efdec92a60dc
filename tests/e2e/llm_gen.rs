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
