//! `weave slurm` on a real Slurm: `.ci/run` starts a one-node cluster (`.ci/slurm-up.sh`)
//! and sets `WEAVE_TEST_SLURM=1`; without it, this test says so and does nothing.
//!
//! A 4-task job runs a two-stage pipeline — an exact dedup over the whole input (the shards
//! exchange their keys), then an LLM step that answers slowly (the test server, 150 ms an
//! answer, one at a time) — as two array jobs, the second after the first (`afterok`), one
//! task at a time (`--cpus 2` on a 2-CPU node). Stage 1 reads each shard's input and
//! publishes its dedup keys; stage 2 reads the input back from the cache, dedups and calls
//! the LLM. Shard 1's stage 2 is cancelled with `scancel` while it runs; `weave slurm status
//! --wait` then fails naming the shard, `weave slurm resume` submits that task alone, and
//! the job's parts in shard order are the single process's output. Nothing finished is run
//! again: the completion markers of every finished task are untouched, each finished task
//! has one run record, and the resumed task's run reads its input back from the cache
//! that stage 1 left (`"cache": "replayed"` in its report).
//!
//! A second job runs the shards' sampling pipeline (a stratified split, a stratified
//! fraction, a sample of `n` whose shards wait for every shard's part, another stratified by
//! the split): five stages of 4 tasks, its parts equal to the single process's output.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use weave_testkit::{Reply, TestServer};

const KEY: &str = "slurm-test-key";

fn pipeline(url: &str) -> String {
    format!(
        r#"
[pipeline]
name = "slurm-e2e"
seed = 5

[llm.local]
base_url = "{url}"
model = "test-model"
api_key_env = "WEAVE_E2E_KEY"

[[step]]
id = "load"
kind = "load_jsonl"
path = "in.jsonl"
batch_size = 2

[[step]]
id = "dedup"
kind = "dedup"
fields = ["text"]

[[step]]
id = "restyle"
kind = "augment"
noiser = {{ kind = "llm_style_transfer", style = "casual", llm = "local" }}
concurrency = 1

[[step]]
id = "export"
kind = "export_jsonl"
path = "out/restyled.jsonl"
"#
    )
}

fn weave(dir: &Path, args: &[&str]) -> std::process::Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_weave"));
    for v in crate::cli::SHARD_VARIABLES {
        c.env_remove(v);
    }
    c.args(args).current_dir(dir).env_remove("RUST_LOG").env("WEAVE_E2E_KEY", KEY).output().expect("weave runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The state of shard `task` of Slurm job `id` in the queue, if it is there.
fn queued(id: &str, task: u32) -> Option<String> {
    let out = Command::new("squeue").args(["-h", "-r", "-o", "%K %T", "-j", id]).output().ok()?;
    text(&out.stdout).lines().find_map(|l| {
        let (t, s) = l.split_once(' ')?;
        (t.parse::<u32>().ok()? == task).then(|| s.trim().to_owned())
    })
}

/// Whether the tests have a Slurm cluster (`.ci/run` starts one and sets
/// `WEAVE_TEST_SLURM=1`); without one a test says it skips and does nothing.
pub(crate) fn slurm_cluster() -> bool {
    let there = std::env::var("WEAVE_TEST_SLURM").as_deref() == Ok("1");
    if !there {
        // The test harness shows what a test prints to stderr with --nocapture; a skip is
        // worth saying.
        #[allow(clippy::print_stderr)]
        {
            eprintln!("skipped: no Slurm cluster (.ci/run starts one and sets WEAVE_TEST_SLURM=1)");
        }
    }
    there
}

#[test]
fn a_slurm_job_of_four_shards_survives_a_cancelled_task_and_equals_one_process() {
    if !slurm_cluster() {
        return;
    }
    let server = TestServer::builder()
        .api_key(KEY)
        .latency(Duration::from_millis(150))
        .start(|r| Reply::text(format!("casual: {}", r.prompt().rsplit("Text:\n").next().unwrap_or(""))))
        .expect("server");
    // 60 records, 40 distinct texts: a third repeat a text of an earlier shard.
    let input: String =
        (0..60).map(|i| format!("{{\"id\":{i},\"text\":\"ticket number {}\"}}\n", (i * 7) % 40)).collect();
    let single = tempfile::tempdir().unwrap();
    let job = tempfile::tempdir().unwrap();
    for d in [single.path(), job.path()] {
        std::fs::write(d.join("p.toml"), pipeline(&server.url())).unwrap();
        std::fs::write(d.join("in.jsonl"), &input).unwrap();
    }
    let out = weave(single.path(), &["run", "p.toml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected = std::fs::read(single.path().join("out/restyled.jsonl")).unwrap();

    let d = job.path();
    let out = weave(d, &["slurm", "submit", "p.toml", "--tasks", "4", "--cpus", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("2 stages of 4 tasks"), "{}", text(&out.stdout));
    let jobs: Vec<_> = std::fs::read_dir(d.join(".weave/jobs")).unwrap().flatten().map(|e| e.path()).collect();
    assert_eq!(jobs.len(), 1);
    let jobdir = jobs[0].clone();
    let jobarg = jobdir.to_str().unwrap();
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(jobdir.join("job.json")).unwrap()).unwrap();
    let (first, second) = (
        meta["submissions"][0]["slurm_job"].as_str().unwrap().to_owned(),
        meta["submissions"][1]["slurm_job"].as_str().unwrap().to_owned(),
    );
    let script = |name: &str| std::fs::read_to_string(jobdir.join(name)).unwrap();
    assert!(script("submit-1-stage-1.sbatch").contains("--array=0,1,2,3"));
    assert!(script("submit-1-stage-1.sbatch").contains("--stage 1"));
    let stage2 = script("submit-2-stage-2.sbatch");
    assert!(stage2.contains(&format!("--dependency=afterok:{first}\n")), "{stage2}");
    assert!(stage2.contains("--stage 2"), "{stage2}");

    // Shard 1's second stage, once it runs, is cancelled mid-run.
    let t0 = Instant::now();
    loop {
        assert!(t0.elapsed() < Duration::from_secs(180), "stage 2 of shard 1 never ran");
        if queued(&second, 1).as_deref() == Some("RUNNING") {
            // Into its LLM calls (each 150 ms).
            std::thread::sleep(Duration::from_millis(400));
            let st = Command::new("scancel").arg(format!("{second}_1")).status().expect("scancel");
            assert!(st.success());
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = weave(d, &["slurm", "status", jobarg, "--wait"]);
    assert_eq!(out.status.code(), Some(1), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(
        text(&out.stdout).contains("shard 1: not done (failed or cancelled) (stage 2 of 2"),
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stderr).contains("weave slurm resume"), "{}", text(&out.stderr));
    let markers = |name: String| std::fs::read_to_string(jobdir.join("done").join(name)).ok();
    let last = |i: u32| markers(format!("part-{i:05}-of-00004.json"));
    let first_stage = |i: u32| markers(format!("stage-1-part-{i:05}-of-00004.json"));
    let before: Vec<Option<String>> = (0..4).map(last).collect();
    let before_first: Vec<Option<String>> = (0..4).map(first_stage).collect();
    assert!(before[1].is_none(), "the cancelled task left no marker");
    assert!([0, 2, 3].iter().all(|&i| before[i].is_some()), "{before:?}");
    assert!(before_first.iter().all(Option::is_some), "every first stage finished: {before_first:?}");

    let out = weave(d, &["slurm", "resume", jobarg]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("stage 2 of shards 1 of 4"), "{}", text(&out.stdout));
    let resumed = script("submit-3-stage-2.sbatch");
    assert!(resumed.contains("--array=1\n") && !resumed.contains("--dependency"), "{resumed}");
    let out = weave(d, &["slurm", "status", jobarg, "--wait"]);
    assert!(out.status.success(), "{}\n{}", text(&out.stdout), text(&out.stderr));
    assert!(text(&out.stdout).contains("4 of 4 shards done"), "{}", text(&out.stdout));

    // Nothing finished was run again: the markers are as they were, and each finished
    // task has the one run record that succeeded (two per shard, one per stage; shard 1
    // has its cancelled second stage's as well).
    for i in [0u32, 2, 3] {
        assert_eq!(last(i), before[i as usize], "shard {i}'s marker");
    }
    for i in 0..4u32 {
        assert_eq!(first_stage(i), before_first[i as usize], "shard {i}'s first stage's marker");
    }
    let runs: Vec<String> = std::fs::read_dir(d.join(".weave/runs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    for i in 0..4 {
        let n = runs.iter().filter(|r| r.ends_with(&format!("-part-{i:05}-of-00004"))).count();
        assert_eq!(n, if i == 1 { 3 } else { 2 }, "shard {i}'s runs: {runs:?}");
    }
    // The resumed run read its input back from the cache stage 1 left.
    let resumed_run = last(1)
        .and_then(|m| serde_json::from_str::<serde_json::Value>(&m).ok())
        .and_then(|m| m["run"].as_str().map(str::to_owned))
        .expect("shard 1's run");
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(d.join(".weave/runs").join(&resumed_run).join("report.json")).unwrap(),
    )
    .unwrap();
    let step = |id: &str| report["steps"].as_array().unwrap().iter().find(|s| s["step"] == id).unwrap().clone();
    assert_eq!(step("load")["cache"], "replayed", "{report:#}");
    assert_eq!(text(&expected).lines().count(), 40, "the single run kept each text once");
    // One report for the job: the shards' last stages' records merged.
    let out = weave(d, &["report", jobarg, "--format", "json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["status"], "succeeded");
    let dedup = r["steps"].as_array().unwrap().iter().find(|s| s["step"] == "dedup").unwrap();
    assert_eq!((dedup["records_in"].as_u64(), dedup["records_out"].as_u64()), (Some(60), Some(40)), "{dedup}");
    assert_eq!(dedup["dropped"]["duplicate"], 20);
    assert_eq!(r["shards"]["done"], 4);
    let got: Vec<u8> = (0..4)
        .flat_map(|i| std::fs::read(d.join(format!("out/restyled-part-{i:05}-of-00004.jsonl"))).unwrap())
        .collect();
    assert_eq!(text(&got), text(&expected));
}

#[test]
fn a_slurm_job_that_samples_equals_one_process() {
    if !slurm_cluster() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("p.toml"), crate::shards::SAMPLE_PIPELINE).unwrap();
    crate::shards::sample_input(d);
    let out = weave(d, &["run", "p.toml", "--no-cache"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let expected = std::fs::read(d.join("out/sample.jsonl")).unwrap();
    let out = weave(d, &["slurm", "submit", "p.toml", "--tasks", "4"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("5 stages of 4 tasks"), "{}", text(&out.stdout));
    let jobs: Vec<_> = std::fs::read_dir(d.join(".weave/jobs")).unwrap().flatten().map(|e| e.path()).collect();
    let jobarg = jobs[0].to_str().unwrap();
    let started = Instant::now();
    let out = weave(d, &["slurm", "status", jobarg, "--wait"]);
    assert!(out.status.success(), "{}{}", text(&out.stdout), text(&out.stderr));
    assert!(started.elapsed() < Duration::from_secs(600));
    let got: Vec<u8> =
        (0..4).flat_map(|i| std::fs::read(d.join(format!("out/sample-part-{i:05}-of-00004.jsonl"))).unwrap()).collect();
    assert_eq!(text(&got), text(&expected));
    let out = weave(d, &["report", jobarg, "--format", "json"]);
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let few = r["steps"].as_array().unwrap().iter().find(|s| s["step"] == "few").unwrap();
    assert_eq!(few["records_out"], 400, "{few}");
}
