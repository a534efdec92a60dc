//! The cache through the real binary: unchanged re-runs, changed steps, resume after
//! SIGKILL, damaged entries, two runs at once, `weave plan --explain`, `weave cache`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cli::{check_in, weave_in};

/// load → clean (output kept in the cache) → dedup → export.
const PIPELINE: &str = r#"
[pipeline]
name = "cached"
seed = 7

[[step]]
id = "load"
kind = "load_csv"
path = "in.csv"
batch_size = BATCH

[[step]]
id = "clean"
kind = "clean"
fields = ["text"]
rules = ["trim", "collapse_whitespace", { min_chars = MIN }]
cache = true

[[step]]
id = "dedup"
kind = "dedup"
fields = ["text"]

[[step]]
id = "export"
kind = "export_jsonl"
path = "out/result.jsonl"
"#;

fn pipeline(batch: usize, min: usize) -> String {
    PIPELINE.replace("BATCH", &batch.to_string()).replace("MIN", &min.to_string())
}

/// Rows with repeats (for dedup) and short texts (for min_chars).
fn input(rows: usize) -> String {
    let mut csv = String::from("id,text\n");
    for i in 0..rows {
        let text =
            if i % 10 == 3 { "short".to_owned() } else { format!("  text   number {} of the corpus ", i % 7919) };
        csv.push_str(&format!("{i},{text}\n"));
    }
    csv
}

pub(crate) fn setup(rows: usize, batch: usize) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("p.toml"), pipeline(batch, 10)).expect("pipeline");
    std::fs::write(dir.path().join("in.csv"), input(rows)).expect("input");
    dir
}

fn output(dir: &Path) -> Vec<u8> {
    std::fs::read(dir.join("out/result.jsonl")).expect("the output exists")
}

/// The latest run's report.
fn report(dir: &Path) -> serde_json::Value {
    let mut runs: Vec<PathBuf> =
        std::fs::read_dir(dir.join(".weave/runs")).expect("runs").flatten().map(|e| e.path()).collect();
    runs.sort();
    let last = runs.last().expect("a run record");
    serde_json::from_slice(&std::fs::read(last.join("report.json")).expect("report")).expect("JSON")
}

fn step<'a>(report: &'a serde_json::Value, id: &str) -> &'a serde_json::Value {
    report["steps"].as_array().expect("steps").iter().find(|s| s["step"] == id).expect("the step")
}

/// Every file in the cache's object store.
pub(crate) fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(shards) = std::fs::read_dir(dir.join(".weave/cache/objects")) {
        for shard in shards.flatten() {
            if let Ok(files) = std::fs::read_dir(shard.path()) {
                out.extend(files.flatten().map(|e| e.path()));
            }
        }
    }
    out.sort();
    out
}

/// Starts `weave run p.toml` in `dir` and kills it (SIGKILL) once the cache holds `n`
/// entries; checks that it had not finished.
fn kill_when_stored(dir: &Path, n: usize) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_weave"))
        .args(["run", "p.toml"])
        .current_dir(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("weave starts");
    let t0 = Instant::now();
    while entries(dir).len() < n && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let killed = Command::new("kill").args(["-KILL", &child.id().to_string()]).status().expect("kill runs");
    assert!(killed.success());
    let status = child.wait().expect("weave exits");
    assert!(!status.success(), "the run was killed before it finished ({status})");
}

/// An uninterrupted run without the cache, in a folder of its own: the reference output.
fn reference(rows: usize, batch: usize) -> Vec<u8> {
    let dir = setup(rows, batch);
    check_in(dir.path(), &["run", "p.toml", "--no-cache"], 0, &[], &[]);
    assert!(entries(dir.path()).is_empty(), "--no-cache writes nothing to the cache");
    output(dir.path())
}

#[test]
fn an_unchanged_rerun_is_all_hits_and_gives_the_same_bytes() {
    let dir = setup(5000, 500);
    check_in(dir.path(), &["plan", "p.toml"], 0, &["compute"], &[]);
    check_in(dir.path(), &["run", "p.toml"], 0, &["run succeeded"], &[]);
    let first = output(dir.path());
    assert_eq!(first, reference(5000, 500));

    // Nothing changed: the export's file is up to date, so nothing runs at all.
    let out = check_in(dir.path(), &["plan", "p.toml", "--explain"], 0, &[], &[]);
    assert!(out.stdout.contains("export (cached): unchanged"), "{}", out.stdout);
    check_in(dir.path(), &["run", "p.toml"], 0, &["skipped"], &[]);
    assert_eq!(output(dir.path()), first);
    let r = report(dir.path());
    for id in ["load", "clean", "dedup", "export"] {
        assert_eq!(step(&r, id)["cache"], "skipped", "{id}: {r:#}");
        assert_eq!(step(&r, id)["records_in"], 0, "{id} computed nothing");
    }

    // The output file removed: the export runs again from clean's stored output.
    std::fs::remove_file(dir.path().join("out/result.jsonl")).expect("rm");
    let out = check_in(dir.path(), &["plan", "p.toml", "--explain"], 0, &[], &[]);
    assert!(out.stdout.contains("output file out/result.jsonl is missing"), "{}", out.stdout);
    check_in(dir.path(), &["run", "p.toml"], 0, &["replayed"], &[]);
    assert_eq!(output(dir.path()), first);
    let r = report(dir.path());
    assert_eq!(step(&r, "load")["cache"], "skipped");
    assert_eq!(step(&r, "clean")["cache"], "replayed");
    assert_eq!(step(&r, "clean")["cache_hit_batches"], 10);
    assert_eq!(step(&r, "dedup")["cache"], "ran");

    // --no-cache computes everything; --refresh computes the step and what follows.
    check_in(dir.path(), &["run", "p.toml", "--refresh", "clean"], 0, &[], &[]);
    let r = report(dir.path());
    assert_eq!(step(&r, "load")["cache"], "ran");
    assert_eq!(step(&r, "clean")["cache_hit_batches"], 0);
    assert_eq!(step(&r, "export")["cache"], "ran");
    assert_eq!(output(dir.path()), first);
    check_in(dir.path(), &["run", "p.toml", "--refresh", "clen"], 1, &[], &["did you mean \"clean\""]);
}

#[test]
fn changing_one_step_recomputes_it_and_the_steps_after_it() {
    let dir = setup(3000, 500);
    check_in(dir.path(), &["run", "p.toml"], 0, &[], &[]);
    // The dedup step changes: clean's stored output is reused, load is not needed.
    let changed = pipeline(500, 10)
        .replace("fields = [\"text\"]\n\n[[step]]\nid = \"export\"", "fields = [\"id\"]\n\n[[step]]\nid = \"export\"");
    assert_ne!(changed, pipeline(500, 10));
    std::fs::write(dir.path().join("p.toml"), &changed).expect("pipeline");
    let out = check_in(dir.path(), &["plan", "p.toml", "--explain"], 0, &[], &[]);
    assert!(out.stdout.contains("dedup (stale): config `fields[0]` changed: \"text\" → \"id\""), "{}", out.stdout);
    assert!(out.stdout.contains("export (stale): upstream step \"dedup\" changed"), "{}", out.stdout);
    assert!(out.stdout.contains("clean (cached)"), "{}", out.stdout);
    check_in(dir.path(), &["run", "p.toml"], 0, &[], &[]);
    let r = report(dir.path());
    assert_eq!(step(&r, "load")["cache"], "skipped");
    assert_eq!(step(&r, "clean")["cache"], "replayed");
    assert_eq!(step(&r, "dedup")["cache"], "ran");
    // Deduplicated on the unique id, every cleaned row stays.
    let rows = String::from_utf8(output(dir.path())).expect("UTF-8").lines().count();
    assert_eq!(rows as u64, step(&r, "clean")["cache_hit_records"].as_u64().expect("records"));

    // An input file edited: the plan names it, and everything runs again.
    let mut csv = input(3000);
    csv.push_str("3000,a brand new row of text\n");
    std::fs::write(dir.path().join("in.csv"), csv).expect("input");
    let out = check_in(dir.path(), &["plan", "p.toml", "--explain"], 0, &[], &[]);
    assert!(out.stdout.contains("load (stale): input file in.csv changed"), "{}", out.stdout);
    assert!(out.stdout.contains("clean (stale): upstream step \"load\" changed"), "{}", out.stdout);
}

#[test]
fn a_killed_run_resumes_without_recomputing_finished_batches() {
    let (rows, batch) = (400_000, 2000);
    let dir = setup(rows, batch);
    // Kill the run outright once clean has stored some batches.
    kill_when_stored(dir.path(), 10);
    assert!(!dir.path().join("out/result.jsonl").exists(), "nothing committed");
    let stored = entries(dir.path()).len() as u64;
    assert!(stored >= 10);

    let out = check_in(dir.path(), &["plan", "p.toml"], 0, &["partial ("], &[]);
    assert!(out.stdout.contains("batches stored)"), "{}", out.stdout);
    check_in(dir.path(), &["run", "p.toml", "--metrics-file", "m.prom"], 0, &["batches hit"], &[]);
    let r = report(dir.path());
    let hits = step(&r, "clean")["cache_hit_batches"].as_u64().expect("hits");
    // Every batch stored before the kill is taken from the cache, not computed again.
    assert!(hits >= stored, "{hits} hits, {stored} entries stored before the kill");
    assert_eq!(step(&r, "clean")["calls"].as_u64().expect("calls") + hits, (rows / batch) as u64);
    let prom = std::fs::read_to_string(dir.path().join("m.prom")).expect("metrics");
    let line = format!("weave_step_cache_hit_batches_total{{pipeline=\"cached\",step=\"clean\"}} {hits}");
    assert!(prom.lines().any(|l| l == line), "{line} in\n{prom}");
    assert_eq!(output(dir.path()), reference(rows, batch), "the resumed run's output is the uninterrupted one's");
}

/// The files in the cache's `tmp/` folder, where entries are written before their rename.
fn cache_temporaries(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir.join(".weave/cache/tmp"))
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

#[test]
fn a_killed_runs_cache_temporaries_are_removed_by_the_next_run_but_not_a_live_ones() {
    // regression (issue 13, item 7, in the cache): an entry was written through a randomly
    // named file in `.weave/cache/tmp/`, which a SIGKILL left there for good (an LLM
    // step's part can be large), as no later run could tell a dead writer's from a live one's.
    let dir = setup(600_000, 200_000);
    let tmp = dir.path().join(".weave/cache/tmp");
    // Parts of 200,000 records take milliseconds to write: the run is killed while one is
    // being written (tried again in a fresh cache in the rare case the kill comes just
    // after the rename).
    let mut left = Vec::new();
    for _ in 0..10 {
        let _ = std::fs::remove_dir_all(dir.path().join(".weave"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_weave"))
            .args(["run", "p.toml"])
            .current_dir(dir.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("weave starts");
        let t0 = Instant::now();
        while cache_temporaries(dir.path()).is_empty()
            && child.try_wait().expect("wait").is_none()
            && t0.elapsed() < Duration::from_secs(120)
        {
            std::thread::sleep(Duration::from_micros(200));
        }
        let killed = Command::new("kill").args(["-KILL", &child.id().to_string()]).status().expect("kill runs");
        let status = child.wait().expect("weave exits");
        assert!(killed.success() && !status.success(), "the run was killed before it finished ({status})");
        left = cache_temporaries(dir.path());
        if !left.is_empty() {
            break;
        }
    }
    assert!(!left.is_empty(), "the killed run left the part it was writing");
    // A live process's temporary file, as a run writing into the same cache now has.
    let mut live = Command::new("sleep").arg("60").spawn().expect("sleep starts");
    let owner = weave::Owner::of_process(live.id()).expect("a live process");
    let writing = format!(".weave-{}-{}-0.tmp", owner.pid(), owner.start().unwrap_or(0));
    std::fs::write(tmp.join(&writing), "a part being written").expect("write");

    check_in(dir.path(), &["run", "p.toml"], 0, &["run succeeded"], &[]);
    let after = cache_temporaries(dir.path());
    live.kill().expect("kill sleep");
    live.wait().expect("sleep exits");
    assert_eq!(after, [writing], "the dead run's file is removed, the live process's is not");
}

#[test]
fn damaged_entries_are_warned_about_and_recomputed() {
    let dir = setup(6000, 500);
    check_in(dir.path(), &["run", "p.toml"], 0, &[], &[]);
    let good = output(dir.path());
    let parts = entries(dir.path());
    assert!(parts.len() >= 12, "12 parts of clean and a manifest each for clean and export: {parts:?}");
    // One entry with a flipped byte, one truncated, one emptied.
    let mut bytes = std::fs::read(&parts[0]).expect("entry");
    let last = bytes.len() - 1;
    bytes[last] ^= 0x40;
    std::fs::write(&parts[0], &bytes).expect("flip");
    let bytes = std::fs::read(&parts[1]).expect("entry");
    std::fs::write(&parts[1], &bytes[..bytes.len() / 2]).expect("truncate");
    std::fs::write(&parts[2], b"").expect("empty");
    check_recomputed(dir.path(), &good, "is damaged");
}

// regression (fuzz/artifacts-found/cache_entry/deep-nested-list.part): an intact entry
// holding a value nested 20,000 deep overflowed the stack when decoded, killing the run
// (SIGSEGV); a hostile entry must be a warning and a miss, as a damaged one is.
#[test]
fn a_part_nested_too_deep_is_warned_about_and_recomputed() {
    use weave::cache::{Key, Store, codec};
    let dir = setup(6000, 500);
    check_in(dir.path(), &["run", "p.toml"], 0, &[], &[]);
    let good = output(dir.path());
    let store = Store::open(dir.path().join(".weave/cache")).expect("the run's cache");
    let parts = entries(dir.path());
    // Every entry of the store but the manifests (…ffffffffffffffff) is a part of clean.
    let part = parts.iter().find(|p| !p.to_string_lossy().ends_with("ffffffffffffffff")).expect("a part");
    let hex: String =
        part.iter().rev().take(2).collect::<Vec<_>>().into_iter().rev().map(|s| s.to_string_lossy()).collect();
    let key = Key::from_hex(&hex).expect("an entry's path is its key");
    let deep = include_bytes!("../../fuzz/artifacts-found/cache_entry/deep-nested-list.part");
    store.put(&key, codec::BINCODE2, deep).expect("put");
    check_recomputed(dir.path(), &good, "does not decode");
}

/// Runs the pipeline in `dir` again without its output file, after entries of its cache
/// were spoilt: the run warns with `warning`, computes them again and writes `good`; they
/// were replaced, so the run after it warns of nothing and replays them.
fn check_recomputed(dir: &Path, good: &[u8], warning: &str) {
    std::fs::remove_file(dir.join("out/result.jsonl")).expect("rm");
    let out = check_in(dir, &["run", "p.toml"], 0, &["run succeeded"], &[warning]);
    assert!(out.stderr.contains("removing it and recomputing"), "{}", out.stderr);
    assert_eq!(output(dir), good, "the output is the one computed");
    std::fs::remove_file(dir.join("out/result.jsonl")).expect("rm");
    let out = check_in(dir, &["run", "p.toml"], 0, &["replayed"], &[]);
    assert!(!out.stderr.contains("recomputing"), "{}", out.stderr);
    assert_eq!(output(dir), good);
}

#[test]
fn two_runs_at_once_share_one_cache() {
    let dir = setup(100_000, 1000);
    // Same steps, other output file: the two runs compute and store the same entries.
    let second = pipeline(1000, 10).replace("out/result.jsonl", "out/second.jsonl");
    std::fs::write(dir.path().join("q.toml"), second).expect("pipeline");
    let spawn = |file: &str| {
        Command::new(env!("CARGO_BIN_EXE_weave"))
            .args(["run", file, "-q"])
            .current_dir(dir.path())
            .output()
            .expect("weave runs")
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| spawn("p.toml"));
        let b = s.spawn(|| spawn("q.toml"));
        (a.join().expect("thread"), b.join().expect("thread"))
    });
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let first = output(dir.path());
    assert_eq!(std::fs::read(dir.path().join("out/second.jsonl")).expect("second"), first);
    assert_eq!(first, reference(100_000, 1000));
    // The cache is valid: a run that must read it back warns of nothing and agrees.
    std::fs::remove_file(dir.path().join("out/second.jsonl")).expect("rm");
    let out = weave_in(dir.path(), &["run", "q.toml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(!out.stderr.contains("damaged"), "{}", out.stderr);
    assert!(out.stdout.contains("replayed"), "{}", out.stdout);
    assert_eq!(std::fs::read(dir.path().join("out/second.jsonl")).expect("second"), first);
}

#[test]
fn cache_commands_show_and_evict_entries() {
    let dir = setup(2000, 500);
    let cache = dir.path().join("elsewhere");
    let cache_s = cache.to_str().expect("UTF-8 path");
    let run = Command::new(env!("CARGO_BIN_EXE_weave"))
        .args(["run", "p.toml", "-q"])
        .env("WEAVE_CACHE_DIR", &cache)
        .current_dir(dir.path())
        .status()
        .expect("weave runs");
    assert!(run.success());
    assert!(entries(dir.path()).is_empty(), "WEAVE_CACHE_DIR moved the cache");
    check_in(dir.path(), &["cache", "stats", "--dir", cache_s], 0, &["entries: 6"], &[]);
    let ls = check_in(dir.path(), &["cache", "ls", "--dir", cache_s], 0, &["key"], &[]);
    assert_eq!(ls.stdout.lines().count(), 7, "{}", ls.stdout);
    check_in(dir.path(), &["cache", "gc", "--dir", cache_s, "--max-size", "1GB"], 0, &["removed 0 entries"], &[]);
    check_in(dir.path(), &["cache", "clear", "--dir", cache_s], 0, &["removed 6 entries", "0 entries (0 B) left"], &[]);
    check_in(dir.path(), &["cache", "stats", "--dir", "nowhere"], 1, &[], &["no cache in nowhere"]);
}

#[test]
fn dropped_records_go_to_the_exclusion_file_with_their_reason() {
    let dir = setup(100, 50);
    let text = pipeline(50, 10).replace("cache = true", "cache = true\nexclusions = \"out/dropped.jsonl\"");
    std::fs::write(dir.path().join("p.toml"), text).expect("pipeline");
    check_in(dir.path(), &["run", "p.toml"], 0, &[], &[]);
    let dropped = std::fs::read_to_string(dir.path().join("out/dropped.jsonl")).expect("exclusion file");
    let lines: Vec<serde_json::Value> = dropped.lines().map(|l| serde_json::from_str(l).expect("JSON")).collect();
    assert_eq!(lines.len(), 10, "{dropped}");
    assert_eq!(lines[0]["reason"], "min_chars");
    assert_eq!(lines[0]["step"], "clean");
    assert_eq!(lines[0]["record"]["id"], "3");
    assert_eq!(lines[9]["record"]["id"], "93");
}

// regression (issue 13, item 1): a step's `on_bad_record` and `exclusions` were not in its
// cache key, so a stricter re-run "succeeded" on the laxer run's output, and a new exclusion
// file was never written.
#[test]
fn a_stricter_bad_record_policy_or_another_exclusion_file_is_not_served_from_the_cache() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    std::fs::write(d.join("in.csv"), "id,text\n1,a line long enough to keep\n2,ragged,row\n3,short\n").expect("input");
    let text = r#"
[[step]]
id = "load"
kind = "load_csv"
path = "in.csv"
on_bad_record = "skip"

[[step]]
id = "clean"
kind = "clean"
fields = ["text"]
rules = [{ min_chars = 10 }]
exclusions = "out/dropped.jsonl"
cache = true

[[step]]
id = "export"
kind = "export_jsonl"
path = "out/result.jsonl"
"#;
    std::fs::write(d.join("p.toml"), text).expect("pipeline");
    check_in(d, &["run", "p.toml"], 0, &["1 bad records set aside"], &[]);
    let dropped = std::fs::read_to_string(d.join("out/dropped.jsonl")).expect("exclusion file");
    assert_eq!(dropped.lines().count(), 1, "{dropped}");

    // The stricter policy fails the run, as it does without the cache.
    std::fs::write(d.join("p.toml"), text.replace("on_bad_record = \"skip\"", "on_bad_record = \"fail\"")).expect("p");
    let out = check_in(d, &["plan", "p.toml", "--explain"], 0, &[], &[]);
    assert!(out.stdout.contains("load (stale): config `on_bad_record` changed: \"skip\" → \"fail\""), "{}", out.stdout);
    check_in(d, &["run", "p.toml", "--no-cache"], 1, &[], &["in.csv:3: expected 2 fields"]);
    check_in(d, &["run", "p.toml"], 1, &[], &["in.csv:3: expected 2 fields"]);

    // Another exclusion file: clean runs again and writes it.
    std::fs::write(d.join("p.toml"), text.replace("out/dropped.jsonl", "out/dropped2.jsonl")).expect("p");
    let out = check_in(d, &["plan", "p.toml", "--explain"], 0, &[], &[]);
    assert!(out.stdout.contains("config `exclusions` changed"), "{}", out.stdout);
    check_in(d, &["run", "p.toml"], 0, &[], &[]);
    assert_eq!(std::fs::read_to_string(d.join("out/dropped2.jsonl")).expect("new exclusion file"), dropped);

    // The exclusion file removed: the plan says so, and the step runs again to rewrite it,
    // though its output and the export's file are in the cache.
    std::fs::remove_file(d.join("out/dropped2.jsonl")).expect("rm");
    let out = check_in(d, &["plan", "p.toml", "--explain"], 0, &[], &[]);
    assert!(out.stdout.contains("clean (stale): its exclusion file out/dropped2.jsonl is missing"), "{}", out.stdout);
    assert!(out.stdout.contains("export (compute): step \"clean\" before it runs again"), "{}", out.stdout);
    check_in(d, &["run", "p.toml"], 0, &[], &[]);
    assert_eq!(std::fs::read_to_string(d.join("out/dropped2.jsonl")).expect("rewritten"), dropped);
    let r = report(d);
    assert_eq!(step(&r, "clean")["cache"], "ran");
    // A file edited by hand is noticed too.
    std::fs::write(d.join("out/dropped2.jsonl"), "{}\n").expect("edit");
    let out = check_in(d, &["plan", "p.toml", "--explain"], 0, &[], &[]);
    assert!(
        out.stdout.contains("its exclusion file out/dropped2.jsonl was changed since it was written"),
        "{}",
        out.stdout
    );
    check_in(d, &["run", "p.toml"], 0, &[], &[]);
    assert_eq!(std::fs::read_to_string(d.join("out/dropped2.jsonl")).expect("rewritten"), dropped);
    // Nothing changed since: everything is in the cache again.
    check_in(d, &["run", "p.toml"], 0, &["skipped"], &[]);
    assert_eq!(step(&report(d), "clean")["cache"], "skipped");
}

// regression (issue 13, item 2): keys named input files by their path from the working
// directory, so the same pipeline run from its parent folder recomputed everything.
#[test]
fn the_same_pipeline_is_cached_from_any_folder() {
    let dir = setup(3000, 500);
    let proj = dir.path().join("proj");
    std::fs::create_dir(&proj).expect("proj");
    std::fs::rename(dir.path().join("in.csv"), proj.join("in.csv")).expect("mv");
    std::fs::write(proj.join("typos.txt"), "[spelling]\nnumber -> nubmer\n").expect("patterns");
    // Every step stored, one with an exclusion file, one reading a pattern file.
    let text = pipeline(500, 10)
        .replace("path = \"in.csv\"\n", "path = \"in.csv\"\ncache = true\n")
        .replace("cache = true\n\n[[step]]\nid = \"dedup\"", "cache = true\nexclusions = \"out/short.jsonl\"\n\n[[step]]\nid = \"noise\"\nkind = \"augment\"\nnoiser = \"language\"\nlanguage = \"mine\"\npatterns_file = \"typos.txt\"\ncache = true\n\n[[step]]\nid = \"dedup\"")
        .replace("fields = [\"text\"]\n\n[[step]]\nid = \"export\"", "fields = [\"text\"]\ncache = true\n\n[[step]]\nid = \"export\"");
    std::fs::write(proj.join("p.toml"), &text).expect("pipeline");
    check_in(&proj, &["run", "p.toml"], 0, &["run succeeded"], &[]);
    let first = std::fs::read(proj.join("out/result.jsonl")).expect("output");

    let ids = ["load", "clean", "noise", "dedup", "export"];
    let abs = proj.join("p.toml");
    for (folder, file) in [
        (dir.path().to_path_buf(), "proj/p.toml"),
        (dir.path().to_path_buf(), "./proj/p.toml"),
        (proj.clone(), "./p.toml"),
        (proj.join("out"), "../p.toml"),
        (PathBuf::from("/"), abs.to_str().expect("UTF-8")),
    ] {
        let out = check_in(&folder, &["plan", file, "--explain"], 0, &[], &[]);
        for id in ids {
            assert!(
                out.stdout.contains(&format!("  {id} (cached): unchanged")),
                "{id} from {}:\n{}",
                folder.display(),
                out.stdout
            );
        }
    }
    check_in(dir.path(), &["run", "proj/p.toml"], 0, &["skipped"], &[]);
    let r = report(&proj);
    for id in ids {
        assert_eq!(step(&r, id)["cache"], "skipped", "{id}: {r:#}");
    }
    assert_eq!(std::fs::read(proj.join("out/result.jsonl")).expect("output"), first);
}

// regression (issue 13, item 3): two intact entries swapped on disk were served as each
// other's data, with no warning.
#[test]
fn entries_swapped_on_disk_are_warned_about_and_recomputed() {
    let dir = setup(6000, 500);
    check_in(dir.path(), &["run", "p.toml"], 0, &[], &[]);
    let good = output(dir.path());
    // The two largest entries are two of clean's parts: intact, each under the other's key.
    let mut parts = entries(dir.path());
    parts.sort_by_key(|p| std::cmp::Reverse(std::fs::metadata(p).expect("entry").len()));
    let (a, b) = (std::fs::read(&parts[0]).expect("a"), std::fs::read(&parts[1]).expect("b"));
    assert_ne!(a, b);
    std::fs::write(&parts[0], &b).expect("swap");
    std::fs::write(&parts[1], &a).expect("swap");
    check_recomputed(dir.path(), &good, "holds the entry of another key");
}

// regression (issue 13, item 4): after a kill, `weave plan` said `partial (N batches
// stored)` for a stateful step whose stored batches the resumed run does not use.
#[test]
fn a_killed_stateful_step_is_not_claimed_as_partly_done() {
    let (rows, batch) = (400_000, 2000);
    // dedup (stateful) keeps its output; clean does not. Every text is unique, so that
    // dedup stores a part for every batch.
    let text = pipeline(batch, 10).replace("cache = true\n", "").replace(
        "fields = [\"text\"]\n\n[[step]]\nid = \"export\"",
        "fields = [\"text\"]\ncache = true\n\n[[step]]\nid = \"export\"",
    );
    let mut csv = String::from("id,text\n");
    for i in 0..rows {
        csv.push_str(&format!("{i},  text   number {i} of the corpus \n"));
    }
    let folder = || {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("p.toml"), &text).expect("pipeline");
        std::fs::write(dir.path().join("in.csv"), &csv).expect("input");
        dir
    };
    let uninterrupted = folder();
    check_in(uninterrupted.path(), &["run", "p.toml", "--no-cache"], 0, &[], &[]);
    let dir = folder();
    kill_when_stored(dir.path(), 10);
    let stored = entries(dir.path()).len();
    assert!(stored >= 10, "{stored} entries");

    let out = check_in(dir.path(), &["plan", "p.toml", "--explain"], 0, &[], &[]);
    assert!(!out.stdout.contains("partial"), "{}", out.stdout);
    assert!(
        out.stdout.contains("batches of its output, which it does not resume from: its state is not stored with them"),
        "{}",
        out.stdout
    );
    check_in(dir.path(), &["run", "p.toml"], 0, &["run succeeded"], &[]);
    let r = report(dir.path());
    assert_eq!(step(&r, "dedup")["cache"], "ran");
    assert_eq!(step(&r, "dedup")["cache_hit_batches"], 0, "nothing claimed, nothing used");
    assert_eq!(step(&r, "dedup")["records_in"].as_u64(), step(&r, "clean")["records_out"].as_u64());
    assert_eq!(output(dir.path()), output(uninterrupted.path()), "the resumed run's output is the uninterrupted one's");
    // Its output is whole in the cache now.
    std::fs::remove_file(dir.path().join("out/result.jsonl")).expect("rm");
    check_in(dir.path(), &["run", "p.toml"], 0, &["replayed"], &[]);
    assert_eq!(step(&report(dir.path()), "dedup")["cache"], "replayed");
}

// regression (issue 13, sibling of item 1): a run that took a step from the cache started
// a new quarantine file without the bad records that step had set aside, though its output
// still lacked them; `--no-cache` listed them.
#[test]
fn bad_records_set_aside_by_a_cached_step_are_in_the_quarantine_file_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path();
    std::fs::write(d.join("in.csv"), "id,text\n1,a line long enough to keep\n2,ragged,row\n3,another fine line\n")
        .expect("input");
    let text = r#"
[[step]]
id = "load"
kind = "load_csv"
path = "in.csv"
on_bad_record = "skip"
cache = true

[[step]]
id = "export"
kind = "export_jsonl"
path = "out/result.jsonl"
"#;
    std::fs::write(d.join("p.toml"), text).expect("pipeline");
    let quarantine = d.join(".weave/quarantine.jsonl");
    check_in(d, &["run", "p.toml", "--no-cache"], 0, &["1 bad records set aside"], &[]);
    let want = std::fs::read_to_string(&quarantine).expect("quarantine");
    assert_eq!(want.lines().count(), 1, "{want}");
    check_in(d, &["run", "p.toml"], 0, &["1 bad records set aside"], &[]);
    assert_eq!(std::fs::read_to_string(&quarantine).expect("quarantine"), want);

    // Nothing runs: the record comes from the cache.
    check_in(d, &["run", "p.toml"], 0, &["skipped", "1 bad records set aside"], &[]);
    assert_eq!(step(&report(d), "load")["cache"], "skipped");
    assert_eq!(std::fs::read_to_string(&quarantine).expect("quarantine"), want);
    // The step replayed: the same.
    std::fs::remove_file(d.join("out/result.jsonl")).expect("rm");
    check_in(d, &["run", "p.toml"], 0, &["replayed", "1 bad records set aside"], &[]);
    assert_eq!(std::fs::read_to_string(&quarantine).expect("quarantine"), want);
}

// Issue 17, item 1: a cache shared by the nodes of a cluster. A run on another node (its
// pid space faked with WEAVE_PID_SPACE) cannot be looked up by its process id from here:
// `weave cache gc` keeps what it pinned while its pin's lease is fresh, and takes it back
// once the lease has run out (the run frozen with SIGSTOP renews nothing; the expiry is
// brought forward by ageing the pin's modification time).
#[test]
fn gc_keeps_what_a_run_on_another_machine_pinned_until_its_lease_runs_out() {
    let dir = setup(400_000, 64);
    let mut child = Command::new(env!("CARGO_BIN_EXE_weave"))
        .args(["run", "p.toml", "-q"])
        .env("WEAVE_PID_SPACE", "00000000dec0ded1")
        .env_remove("WEAVE_CACHE_DIR")
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("weave starts");
    let pins = dir.path().join(".weave/cache/pins");
    let start = Instant::now();
    let pinned = || std::fs::read_dir(&pins).map(|d| d.flatten().count() > 0).unwrap_or(false);
    while !(pinned() && entries(dir.path()).len() >= 3) && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(2));
    }
    let pid = child.id().to_string();
    let stop = |sig: &str| Command::new("kill").args([sig, &pid]).status().expect("kill runs");
    assert!(stop("-STOP").success());
    if child.try_wait().expect("wait").is_some() {
        return; // Finished before it could be frozen on a very fast machine: nothing to check.
    }
    // `kill` returns before every thread has stopped: wait until each says `T` (stopped).
    let stopped = || {
        std::fs::read_dir(format!("/proc/{pid}/task")).expect("its threads").flatten().all(|t| {
            let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
            stat.rfind(')').is_some_and(|i| stat[i + 1..].trim_start().starts_with('T'))
        })
    };
    while !stopped() && start.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(50));
    let pin = std::fs::read_dir(&pins).expect("pins").flatten().next().expect("a pin").path();
    let text = std::fs::read_to_string(&pin).expect("the pin");
    assert!(text.contains(r#""pid_space":"00000000dec0ded1""#) && text.contains(r#""host":"#), "{text}");
    let held = entries(dir.path()).len();

    check_in(dir.path(), &["cache", "gc", "--max-size", "0"], 0, &["removed 0 entries"], &[]);
    assert_eq!(entries(dir.path()).len(), held, "the other node's entries are kept");
    assert!(pin.exists());
    let runs = check_in(dir.path(), &["runs"], 0, &["running"], &[]);
    assert!(!runs.stdout.contains("interrupted"), "{}", runs.stdout);

    let expired = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::options().append(true).open(&pin).expect("pin").set_modified(expired).expect("age the pin");
    let gc = check_in(dir.path(), &["cache", "gc", "--max-size", "0"], 0, &[], &[]);
    assert!(!gc.stdout.contains("removed 0 entries"), "{}", gc.stdout);
    assert!(!pin.exists(), "the pin of a node that stopped renewing it is removed");
    assert!(entries(dir.path()).len() < held);

    assert!(stop("-KILL").success());
    let _ = child.wait();
}
