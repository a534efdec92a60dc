//! `compare` in a sharded job: each shard passes its synthetic records on and publishes its
//! part of the comparison; the last shard takes in every part and writes the job's
//! figures, which are the single process's, exactly.

use std::path::Path;

use serde_json::Value;

use super::{concatenated, job_by_hand, last_report, read, run_stage, run_together, same_lines, sample_input, step};
use crate::cli::check_in;

/// The real set is [`sample_input`]'s (1,600 records: a compressed file read whole by one
/// shard, so that at 4 shards one shard has no real record, then a plain file); the
/// synthetic set is [`synthetic_input`]'s 700. Compared: a text field, a label (also a
/// category field), a number field with a sample smaller than the data, and a field only
/// the synthetic set has.
const PIPELINE: &str = r#"
[pipeline]
name = "sharded-compare"
seed = 9

[[step]]
id = "real"
kind = "load_jsonl"
path = "in/*"
batch_size = 50

[[step]]
id = "synthetic"
kind = "load_jsonl"
path = "syn/*"
batch_size = 40

[[step]]
id = "compare"
kind = "compare"
after = ["real", "synthetic"]
label = "label"
ks_sample = 50
top = 2

[[step]]
id = "export"
kind = "export_jsonl"
after = ["compare"]
path = "out/synthetic.jsonl"
"#;

/// 700 synthetic records: ids as halves (numbers, spread wider than the real ones), a
/// skewed label, hex noise of varying length (null now and then), and a field few have;
/// the first 300 in a compressed file larger than the plain file of the rest, so that, as
/// with the real set, one shard of 4 has none (the same shard: it has no input at all).
fn synthetic_input(d: &Path) {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (mut zipped, mut s) = (String::new(), String::new());
    for i in 0..700u64 {
        if i == 300 {
            zipped = std::mem::take(&mut s);
        }
        let label = ["common", "middle", "middle", "rare"][(next() % 4) as usize];
        let noise = if next() % 17 == 0 {
            "null".to_owned()
        } else {
            // Long in the compressed file, short in the plain one.
            let len = if i < 300 { 600 } else { next() % 12 };
            let hex: String = (0..len).map(|_| format!("{:x}", next() % 16)).collect();
            format!("\"{hex} {}\"", ["a", "b", "c d"][(next() % 3) as usize])
        };
        // `extra` in one record of seven. (Every batch has one: where a batch has none, the
        // export leaves the field out of its records rather than writing it null, and the
        // shards' batches fall elsewhere than the single process's.)
        let extra = if i % 7 == 0 { format!(",\"extra\":{}", next() % 5) } else { String::new() };
        s.push_str(&format!("{{\"id\":{}.5,\"label\":\"{label}\",\"noise\":{noise}{extra}}}\n", i * 3));
    }
    std::fs::create_dir_all(d.join("syn")).unwrap();
    let zst = zstd::encode_all(zipped.as_bytes(), 3).unwrap();
    assert!(zst.len() > s.len(), "the compressed file spans a whole range at 4 shards");
    std::fs::write(d.join("syn/a.jsonl.zst"), zst).unwrap();
    std::fs::write(d.join("syn/b.jsonl"), s).unwrap();
}

fn setup(d: &Path) {
    std::fs::write(d.join("p.toml"), PIPELINE).unwrap();
    sample_input(d);
    synthetic_input(d);
}

/// The single run's compare figures, synthetic output and report.
fn single_run(d: &Path) -> (Value, String, Value) {
    check_in(d, &["run", "p.toml", "--no-cache"], 0, &["run succeeded"], &[]);
    let run = std::fs::read_dir(d.join(".weave/runs")).unwrap().next().unwrap().unwrap().path();
    let report: Value = serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    let figures = step(&report, "compare")["figures"].clone();
    // The data is what the test means it to be: a sample smaller than the numbers, label
    // and category figures, a field only in the synthetic set.
    assert_eq!(figures["fields"]["id"]["ks"]["real_sample"], 50, "{figures:#}");
    assert!(figures["fields"]["label"]["categories"]["distinct"] == 3, "{figures:#}");
    assert!(figures["fields"]["noise"]["vocabulary"]["jaccard"].as_f64().is_some(), "{figures:#}");
    assert_eq!(figures["schema"]["only_in_synthetic"], serde_json::json!(["extra"]), "{figures:#}");
    assert_eq!(figures["records"], serde_json::json!({"real": 1600, "synthetic": 700}));
    assert_eq!(figures["fields"]["extra"]["synthetic"]["nulls"], 600, "{figures:#}");
    (figures, String::from_utf8(read(&d.join("out/synthetic.jsonl"))).unwrap(), report)
}

/// The job's figures in the last shard's report of a job of `n`: the single run's with
/// the scope said; the other shards' name their own records and where the job's are.
fn job_figures(d: &Path, n: usize) -> Value {
    let mut records = [0u64; 2];
    for i in 0..n - 1 {
        let f = step(&last_report(d, i, n), "compare")["figures"].clone();
        assert_eq!(f["scope"], "shard", "shard {i}/{n}: {f:#}");
        assert_eq!(f["job_figures_in"], format!("shard {}/{n}", n - 1), "{f:#}");
        assert!(f.get("fields").is_none(), "a shard's own figures are not the job's: {f:#}");
        records[0] += f["records"]["real"].as_u64().unwrap();
        records[1] += f["records"]["synthetic"].as_u64().unwrap();
    }
    let mut f = step(&last_report(d, n - 1, n), "compare")["figures"].clone();
    assert_eq!(f["scope"], "job", "{f:#}");
    assert_eq!(f["shards"], n, "{f:#}");
    let m = f.as_object_mut().unwrap();
    m.remove("scope");
    m.remove("shards");
    f
}

/// At 1 to 4 shards started together (the real set's split is uneven, and at 4 one
/// shard has no real record), the synthetic parts in shard order are the single run's
/// output, and the last shard's figures are the single run's, exactly.
#[test]
fn compare_in_shards_started_together_gives_the_single_runs_output_and_figures() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let (want, output, _) = single_run(d);
    let plan = check_in(d, &["plan", "p.toml", "--shards", "4"], 0, &["2 stages"], &[]);
    let line = plan.stdout.lines().find(|l| l.starts_with("compare ")).unwrap_or_default();
    assert!(
        line.contains(" 2 ") && line.contains("the last shard takes in every shard's and writes the job's"),
        "{}",
        plan.stdout
    );
    assert!(!plan.stdout.contains("cannot run sharded"), "{}", plan.stdout);
    for n in [1usize, 2, 3, 4] {
        run_together(d, n);
        let parts: Vec<_> = (0..n).map(|i| d.join(format!("out/synthetic-part-{i:05}-of-{n:05}.jsonl"))).collect();
        same_lines(&concatenated(&parts), &output, &format!("at {n} shards"));
        let got = if n == 1 {
            // One shard of one is the single process.
            step(&last_report(d, 0, 1), "compare")["figures"].clone()
        } else {
            job_figures(d, n)
        };
        assert_eq!(got, want, "the job's figures at {n} shards");
    }
    let records: Vec<Value> = (0..4).map(|i| step(&last_report(d, i, 4), "compare")["records_in"].clone()).collect();
    assert!(records.contains(&Value::from(0)), "one shard has no input at 4 shards: {records:?}");
}

/// Stage by stage with a job folder (as `weave slurm submit`'s tasks run, the last shard
/// first in each stage): stage 1 publishes only, stage 2 passes the records on and writes
/// the figures, and `weave report JOB` shows the job's figures once, the single run's.
#[test]
fn compare_stage_by_stage_reports_the_jobs_figures_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let (want, output, single) = single_run(d);
    let jobarg = job_by_hand(d, &single, 3, 2);
    let n = 3;
    let parts: Vec<_> = (0..n).map(|i| d.join(format!("out/synthetic-part-{i:05}-of-{n:05}.jsonl"))).collect();
    for k in 1..=2 {
        for i in (0..n).rev() {
            let shard = format!("{i}/{n}");
            let stage = k.to_string();
            let out = check_in(
                d,
                &["run", "p.toml", "--shard", &shard, "--stage", &stage, "--job-dir", &jobarg],
                0,
                &[],
                &[],
            );
            let report = last_report(d, i, n);
            // The run's own summary says whose figures it shows.
            let summary = out.stdout.lines().find(|l| l.starts_with("compare: ")).unwrap_or_default();
            if k == 2 && i == n - 1 {
                assert!(
                    summary.starts_with("compare: scope \"job\", shards 3, records {\"real\":1600,\"synthetic\":700}"),
                    "{}",
                    out.stdout
                );
            } else if k == 2 {
                assert!(summary.starts_with("compare: scope \"shard\", records {"), "{}", out.stdout);
                assert!(summary.ends_with("job_figures_in \"shard 2/3\""), "{}", out.stdout);
            }
            if k == 1 {
                assert_eq!(step(&report, "compare")["records_out"], 0, "stage 1 only publishes");
                assert!(parts.iter().all(|p| !p.exists()), "stage 1 writes no part");
            } else {
                assert_eq!(step(&report, "synthetic")["cache"], "replayed", "{report:#}");
            }
        }
    }
    same_lines(&concatenated(&parts), &output, "stage by stage");
    let out = check_in(d, &["report", &jobarg, "--format", "json"], 0, &[], &[]);
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(r["status"], "succeeded", "{r:#}");
    let mut figures = step(&r, "compare")["figures"].clone();
    assert_eq!((&figures["scope"], &figures["shards"]), (&Value::from("job"), &Value::from(3)), "{figures:#}");
    let m = figures.as_object_mut().unwrap();
    m.remove("scope");
    m.remove("shards");
    assert_eq!(figures, want, "weave report JOB: the job's figures, once");
    assert_eq!(
        (&step(&r, "compare")["records_in"], &step(&r, "compare")["records_out"]),
        (&step(&single, "compare")["records_in"], &step(&single, "compare")["records_out"])
    );
    // Steps without the job's figures show none (a shard's own are not the job's).
    assert!(step(&r, "real")["figures"].is_null(), "{r:#}");
    let text = check_in(d, &["report", &jobarg], 0, &["compare: the job's figures"], &[]);
    assert!(text.stdout.contains("records {\"real\":1600,\"synthetic\":700}"), "{}", text.stdout);
}

/// A published part the last shard cannot read fails its run, naming the file, and
/// leaves no output part behind.
#[test]
fn a_damaged_compare_part_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    for i in 0..2 {
        run_stage(d, i, 2, 1);
    }
    let folders: Vec<_> =
        std::fs::read_dir(d.join(".weave/cache/exchange")).unwrap().map(|e| e.unwrap().path()).collect();
    assert_eq!(folders.len(), 1, "{folders:?}");
    let part = folders[0].join("part-00000-of-00002.keys");
    // Shard 1's part swapped for shard 0's (whole, but of other records): shard 1's stage 2,
    // which finds its part published, checks its records against it.
    let other = folders[0].join("part-00001-of-00002.keys");
    let (zero, one) = (read(&part), read(&other));
    std::fs::write(&other, &zero).unwrap();
    check_in(
        d,
        &["run", "p.toml", "--shard", "1/2", "--stage", "2"],
        1,
        &[],
        &["part-00001-of-00002.keys is damaged: it counts", "it is not of these records"],
    );
    std::fs::write(&other, one).unwrap();
    // The error names the file as the run found it, from the pipeline's folder.
    let named = format!("{} is damaged", part.strip_prefix(d).unwrap().display());
    // A whole file of frames, one of which no compare wrote.
    std::fs::write(&part, b"WVX1\x01\x00\x00\x00\x00\x00\x00\x00\x09").unwrap();
    let out =
        check_in(d, &["run", "p.toml", "--shard", "1/2", "--stage", "2"], 1, &[], &["a frame of an unknown kind"]);
    assert!(out.stderr.contains(&named), "{}", out.stderr);
    assert!(!d.join("out/synthetic-part-00001-of-00002.jsonl").exists(), "nothing half-written");
    // A part with no totals (its last frame lost) is named too.
    std::fs::write(&part, b"WVX1").unwrap();
    let out = check_in(d, &["run", "p.toml", "--shard", "1/2", "--stage", "2"], 1, &[], &["the part has no totals"]);
    assert!(out.stderr.contains(&named), "{}", out.stderr);
}

/// On a real Slurm (`.ci/run` starts one and sets `WEAVE_TEST_SLURM=1`; without it this
/// test says so and does nothing): `weave slurm submit` of the comparison as 3 tasks
/// gives the single run's output, and `weave report JOB` its figures.
#[test]
fn a_slurm_job_that_compares_reports_the_single_runs_figures() {
    if !crate::slurm::slurm_cluster() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    setup(d);
    let (want, output, _) = single_run(d);
    check_in(d, &["slurm", "submit", "p.toml", "--tasks", "3"], 0, &["2 stages of 3 tasks"], &[]);
    let jobs: Vec<_> = std::fs::read_dir(d.join(".weave/jobs")).unwrap().flatten().map(|e| e.path()).collect();
    let jobarg = jobs[0].to_string_lossy().into_owned();
    check_in(d, &["slurm", "status", &jobarg, "--wait"], 0, &[], &[]);
    let parts: Vec<_> = (0..3).map(|i| d.join(format!("out/synthetic-part-{i:05}-of-00003.jsonl"))).collect();
    same_lines(&concatenated(&parts), &output, "as a Slurm job");
    let out = check_in(d, &["report", &jobarg, "--format", "json"], 0, &[], &[]);
    let r: Value = serde_json::from_str(&out.stdout).unwrap();
    let mut figures = step(&r, "compare")["figures"].clone();
    assert_eq!(figures["scope"], "job", "{figures:#}");
    let m = figures.as_object_mut().unwrap();
    m.remove("scope");
    m.remove("shards");
    assert_eq!(figures, want);
}
