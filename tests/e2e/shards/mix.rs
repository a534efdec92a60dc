//! `mix` in a sharded job: every shard passes on its own real records (the ones kept, in
//! `replace` mode), the last shard the chosen synthetic records of every shard, so that the
//! parts joined in shard order are the single process's output.

use std::path::Path;

use super::{concatenated, last_report, read, run_together, same_lines, sample_input, shards_together, step};
use crate::cli::check_in;

/// The modes the tests run, one `mix` step's keys each.
const MODES: [&str; 5] = [
    "mode = \"append\"\nsource = \"origin\"",
    "ratio = 0.3",
    "ratio = 0.45\nmax_synthetic_share = 0.5\nbalance_by = \"label\"",
    "balance_by = \"label\"\nmax_synthetic_share = 0.2\nseed = 8",
    "mode = \"replace\"\nratio = 0.35\nsource = \"origin\"",
];

/// One source, a record-wise step that makes the synthetic side from it, and the mix: the
/// common augmentation pattern.
fn one_source(mode: &str) -> String {
    format!(
        r#"
[pipeline]
name = "sharded-mix"
seed = 6

[[step]]
id = "load"
kind = "load_jsonl"
path = "in/*"
batch_size = 50

[[step]]
id = "variants"
kind = "fields"
after = ["load"]
template = {{ noise = "variant of {{id}}" }}

[[step]]
id = "mix"
kind = "mix"
after = ["load", "variants"]
{mode}

[[step]]
id = "export"
kind = "export_jsonl"
path = "out/mixed.jsonl"
"#
    )
}

/// Two sources: the real records, and synthetic ones from files of their own (more of
/// them, in other proportions, with a class the real records lack).
fn two_sources(mode: &str) -> String {
    format!(
        r#"
[pipeline]
name = "sharded-mix-two"
seed = 7

[[step]]
id = "real"
kind = "load_jsonl"
path = "in/*"
batch_size = 64

[[step]]
id = "synthetic"
kind = "load_jsonl"
path = "synth/*"
batch_size = 30

[[step]]
id = "mix"
kind = "mix"
after = ["real", "synthetic"]
{mode}

[[step]]
id = "export"
kind = "export_jsonl"
path = "out/mixed.jsonl"
"#
    )
}

/// 2,100 synthetic records in two files, labels weighted otherwise than the real ones'.
fn synthetic_input(d: &Path) {
    std::fs::create_dir_all(d.join("synth")).unwrap();
    let line = |i: usize| {
        let label = ["common", "middle", "rare", "rare", "new"][(i * 7 + i / 11) % 5];
        format!("{{\"id\":{},\"label\":\"{label}\",\"noise\":\"synthetic {i}\"}}\n", 100_000 + i)
    };
    std::fs::write(d.join("synth/a.jsonl"), (0..900).map(line).collect::<String>()).unwrap();
    std::fs::write(d.join("synth/b.jsonl"), (900..2100).map(line).collect::<String>()).unwrap();
}

fn parts(d: &Path, n: usize) -> Vec<std::path::PathBuf> {
    (0..n).map(|i| d.join(format!("out/mixed-part-{i:05}-of-{n:05}.jsonl"))).collect()
}

/// For each mode: the single run, then 1 to 4 shards started together (uneven shares;
/// at 4, one shard has no input): the parts in shard order are the single run's output.
fn every_mode_at_1_to_4_shards(d: &Path, pipeline: fn(&str) -> String) {
    for mode in MODES {
        std::fs::write(d.join("p.toml"), pipeline(mode)).unwrap();
        check_in(d, &["run", "p.toml", "--no-cache"], 0, &["run succeeded"], &[]);
        let whole = String::from_utf8(read(&d.join("out/mixed.jsonl"))).unwrap();
        assert!(whole.lines().count() > 1000, "{mode}");
        for n in [1usize, 2, 3, 4] {
            run_together(d, n);
            same_lines(&concatenated(&parts(d, n)), &whole, &format!("`{mode}` at {n} shards"));
        }
        // At 4 shards, one has no input and writes an empty part; the synthetic records
        // are all in the last one's.
        let sizes: Vec<u64> = parts(d, 4).iter().map(|p| std::fs::metadata(p).unwrap().len()).collect();
        assert!(sizes.contains(&0), "{mode}: {sizes:?}");
        let last = String::from_utf8(read(&parts(d, 4)[3])).unwrap();
        let synthetic =
            |text: &str| text.lines().filter(|l| l.contains("variant of") || l.contains("synthetic ")).count();
        assert_eq!(synthetic(&last), synthetic(&whole), "{mode}");
    }
}

#[test]
fn mix_from_one_source_as_shards_gives_the_single_run_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sample_input(d);
    every_mode_at_1_to_4_shards(d, one_source);
}

#[test]
fn mix_of_two_sources_as_shards_gives_the_single_run_in_every_mode() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sample_input(d);
    synthetic_input(d);
    every_mode_at_1_to_4_shards(d, two_sources);
}

/// Stage by stage (by hand, with `--job-dir`, as `weave slurm submit`'s tasks run), the
/// last shard first in each stage: the stage before only publishes, the parts are the
/// single run's output, and `weave report JOB` adds the shards' figures up to the single
/// run's. `weave plan --shards` shows mix's part and stage. Then a damaged part is named.
#[test]
fn mix_stage_by_stage_gives_the_single_run_and_its_figures() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sample_input(d);
    synthetic_input(d);
    let n = 3;
    for (mode, pipeline) in [(MODES[2], two_sources as fn(&str) -> String), (MODES[4], one_source)] {
        std::fs::write(d.join("p.toml"), pipeline(mode)).unwrap();
        let plan = check_in(d, &["plan", "p.toml", "--shards", "3"], 0, &["2 stages"], &[]);
        assert!(!plan.stdout.contains("cannot run sharded"), "{}", plan.stdout);
        let line = plan.stdout.lines().find(|l| l.starts_with("mix ")).unwrap_or_default();
        assert!(line.contains(" 2 ") && line.contains("takes in every shard's"), "{}", plan.stdout);

        let _ = std::fs::remove_dir_all(d.join(".weave"));
        check_in(d, &["run", "p.toml", "--no-cache"], 0, &["run succeeded"], &[]);
        let whole = String::from_utf8(read(&d.join("out/mixed.jsonl"))).unwrap();
        let run = std::fs::read_dir(d.join(".weave/runs")).unwrap().next().unwrap().unwrap().path();
        let single: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
        let jobarg = super::job_by_hand(d, &single, n, 2);
        for p in parts(d, n) {
            let _ = std::fs::remove_file(p);
        }
        for k in 1..=2 {
            for i in (0..n).rev() {
                let shard = format!("{i}/{n}");
                let stage = k.to_string();
                check_in(
                    d,
                    &["-q", "run", "p.toml", "--shard", &shard, "--stage", &stage, "--job-dir", &jobarg],
                    0,
                    &[],
                    &[],
                );
                let report = last_report(d, i, n);
                if k == 1 {
                    assert_eq!(step(&report, "mix")["records_out"], 0, "stage 1 only publishes");
                    assert!(parts(d, n).iter().all(|p| !p.exists()), "stage 1 writes no part");
                }
            }
        }
        same_lines(&concatenated(&parts(d, n)), &whole, &format!("`{mode}` stage by stage"));
        let out = check_in(d, &["report", &jobarg, "--format", "json"], 0, &[], &[]);
        let r: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        assert_eq!(r["status"], "succeeded", "{r:#}");
        let (sharded, one) = (step(&r, "mix"), step(&single, "mix"));
        assert_eq!(
            (&sharded["records_in"], &sharded["records_out"], &sharded["dropped"]),
            (&one["records_in"], &one["records_out"], &one["dropped"]),
            "`{mode}`: {sharded:#}"
        );
        assert!(one["dropped"].as_object().is_some_and(|m| !m.is_empty()), "{one:#}");
    }

    // A part damaged after the stage that published it: the stage that decides names it.
    let folders: Vec<_> =
        std::fs::read_dir(d.join(".weave/cache/exchange")).unwrap().map(|e| e.unwrap().path()).collect();
    let part = folders.iter().map(|f| f.join("part-00001-of-00003.keys")).find(|p| p.exists()).unwrap();
    let mut bytes = read(&part);
    let end = bytes.iter().rposition(|b| *b == b'E').unwrap();
    bytes[end] = b'?';
    std::fs::write(&part, bytes).unwrap();
    for p in parts(d, n) {
        let _ = std::fs::remove_file(p);
    }
    let out = check_in(d, &["run", "p.toml", "--shard", "2/3", "--stage", "2"], 1, &[], &["part-00001-of-00003.keys"]);
    assert!(out.stderr.contains("a frame of unknown kind") || out.stderr.contains("damaged"), "{}", out.stderr);
    assert!(parts(d, n).iter().all(|p| !p.exists()), "nothing half-written");
}

/// A field whose types differ between the inputs only in the last shard's synthetic
/// records: every shard fails, naming it, as the single run does, and nothing is exported.
#[test]
fn a_schema_mismatch_only_a_later_shard_sees_fails_the_sharded_run() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sample_input(d);
    std::fs::create_dir_all(d.join("synth")).unwrap();
    // The first file has no `score`; the second, read by the later shards, has it as words.
    let real: String =
        (0..300).map(|i| format!("{{\"id\":{i},\"label\":\"a\",\"noise\":\"n\",\"score\":{i}}}\n")).collect();
    std::fs::remove_dir_all(d.join("in")).unwrap();
    std::fs::create_dir_all(d.join("in")).unwrap();
    std::fs::write(d.join("in/a.jsonl"), real).unwrap();
    let first: String = (0..300).map(|i| format!("{{\"id\":{i},\"label\":\"a\",\"noise\":\"s\"}}\n")).collect();
    let second: String =
        (0..300).map(|i| format!("{{\"id\":{i},\"label\":\"a\",\"noise\":\"s\",\"score\":\"high\"}}\n")).collect();
    std::fs::write(d.join("synth/a.jsonl"), first).unwrap();
    std::fs::write(d.join("synth/b.jsonl"), second).unwrap();
    std::fs::write(d.join("p.toml"), two_sources("ratio = 0.3")).unwrap();
    let says = "`score` is int in the real records and string in the synthetic ones";
    check_in(d, &["run", "p.toml", "--no-cache"], 1, &[], &[says]);
    assert!(!d.join("out/mixed.jsonl").exists());
    let n = 2;
    for (i, (ok, stderr)) in shards_together(d, n, false).into_iter().enumerate() {
        assert!(!ok, "shard {i}: {stderr}");
        assert!(stderr.contains(says), "shard {i}: {stderr}");
    }
    assert!(parts(d, n).iter().all(|p| !p.exists()), "nothing exported");
}

/// A ratio that asks for more synthetic records than there are: the job's warning comes
/// once, from the last shard, as the single run gives it once.
#[test]
fn too_few_synthetic_records_are_said_once_by_the_last_shard() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sample_input(d);
    synthetic_input(d);
    // 1,600 real records at a synthetic share of 0.9 want 14,400 synthetic ones; there are 2,100.
    std::fs::write(d.join("p.toml"), two_sources("ratio = 0.9")).unwrap();
    let says = "14400 synthetic records were wanted for the ratio, only 2100 were available";
    let single = check_in(d, &["run", "p.toml", "--no-cache"], 0, &[], &[says]);
    assert_eq!(single.stderr.matches("were available").count(), 1, "{}", single.stderr);
    let ran = shards_together(d, 3, false);
    for (i, (ok, stderr)) in ran.iter().enumerate() {
        assert!(ok, "shard {i}: {stderr}");
        let want = usize::from(i == 2);
        assert_eq!(stderr.matches("were available").count(), want, "shard {i}: {stderr}");
    }
    assert!(ran[2].1.contains(says), "{}", ran[2].1);
}

/// On a real Slurm (`.ci/run` starts one and sets `WEAVE_TEST_SLURM=1`): `weave slurm
/// submit` runs a balanced mix of two sources as 2 stages of 4 tasks, whose parts in shard
/// order are the single process's output and whose job report adds up to its figures.
#[test]
fn a_slurm_job_that_mixes_equals_one_process() {
    if !crate::slurm::slurm_cluster() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    sample_input(d);
    synthetic_input(d);
    std::fs::write(d.join("p.toml"), two_sources(MODES[2])).unwrap();
    check_in(d, &["run", "p.toml", "--no-cache"], 0, &["run succeeded"], &[]);
    let whole = String::from_utf8(read(&d.join("out/mixed.jsonl"))).unwrap();
    let run = std::fs::read_dir(d.join(".weave/runs")).unwrap().next().unwrap().unwrap().path();
    let single: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("report.json")).unwrap()).unwrap();
    check_in(d, &["slurm", "submit", "p.toml", "--tasks", "4"], 0, &["2 stages of 4 tasks"], &[]);
    let jobs: Vec<_> = std::fs::read_dir(d.join(".weave/jobs")).unwrap().flatten().map(|e| e.path()).collect();
    let jobarg = jobs[0].to_string_lossy().into_owned();
    check_in(d, &["slurm", "status", &jobarg, "--wait"], 0, &[], &[]);
    same_lines(&concatenated(&parts(d, 4)), &whole, "the Slurm job");
    let out = check_in(d, &["report", &jobarg, "--format", "json"], 0, &[], &[]);
    let r: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
    let (job, one) = (step(&r, "mix"), step(&single, "mix"));
    assert_eq!(
        (&job["records_in"], &job["records_out"], &job["dropped"]),
        (&one["records_in"], &one["records_out"], &one["dropped"]),
        "{job:#}"
    );
}
