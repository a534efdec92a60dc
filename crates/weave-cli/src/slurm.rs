//! `weave slurm`: a pipeline's shards as a Slurm array job.
//!
//! `submit` writes a job folder (`.weave/jobs/<id>/` beside the pipeline file: `job.json`,
//! the sbatch scripts as submitted, the tasks' logs) and submits one array job whose task
//! `I` runs `weave run FILE --shard I/N --job-dir <folder>`. A task whose run succeeds
//! leaves a completion marker (`done/part-IIIII-of-NNNNN.json`); `status` reads the markers
//! and Slurm's queue; `resume` submits again the shards that have no marker and are not
//! queued, so that a job whose tasks were cancelled or failed is finished without
//! running the finished shards again.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::{Failure, emit};

/// What `weave slurm submit` asks Slurm for, besides the array.
#[derive(Debug, Clone, Default)]
pub(crate) struct Resources {
    pub(crate) partition: Option<String>,
    pub(crate) time: Option<String>,
    pub(crate) mem: Option<String>,
    pub(crate) cpus: Option<u32>,
    pub(crate) cache_dir: Option<PathBuf>,
}

/// The folder of a job's markers, as `weave run --job-dir` writes them.
const DONE: &str = "done";

fn other(e: impl std::fmt::Display) -> Failure {
    Failure::Other(e.to_string())
}

/// A word for the shell, in single quotes.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn path_text(p: &Path) -> Result<&str, Failure> {
    p.to_str().ok_or_else(|| Failure::Other(format!("{} is not UTF-8: a Slurm script cannot name it", p.display())))
}

/// Submits shards `shards` of the job in `dir` as one array job; returns Slurm's job id.
fn submit_array(dir: &Path, job: &mut Value, shards: &[u32]) -> Result<String, Failure> {
    let tasks = job["tasks"].as_u64().unwrap_or(1);
    let file = PathBuf::from(job["pipeline_file"].as_str().unwrap_or_default());
    let weave = job["weave"].as_str().unwrap_or_default().to_owned();
    let r = &job["resources"];
    let n = job["submissions"].as_array().map_or(0, Vec::len) + 1;
    let script_path = dir.join(format!("submit-{n}.sbatch"));
    let array: Vec<String> = shards.iter().map(u32::to_string).collect();
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| Failure::Other(format!("cannot make {}: {e}", logs.display())))?;
    let name = job["pipeline"].as_str().unwrap_or("weave");
    let mut s = String::from("#!/bin/bash\n");
    s.push_str(&format!("#SBATCH --job-name={}\n", sbatch_word(&format!("weave-{name}"))));
    s.push_str(&format!("#SBATCH --array={}\n", array.join(",")));
    s.push_str(&format!("#SBATCH --output={}\n", path_text(&logs.join("part-%a.out"))?));
    s.push_str(&format!("#SBATCH --chdir={}\n", path_text(file.parent().unwrap_or(Path::new("/")))?));
    for (key, flag) in [("partition", "partition"), ("time", "time"), ("mem", "mem"), ("cpus", "cpus-per-task")] {
        match &r[key] {
            Value::String(v) => s.push_str(&format!("#SBATCH --{flag}={}\n", sbatch_word(v))),
            Value::Number(v) => s.push_str(&format!("#SBATCH --{flag}={v}\n")),
            _ => {}
        }
    }
    s.push_str(&format!(
        "# Written by `weave slurm submit`: task I runs shard I of {tasks} of the pipeline below and\n\
         # leaves done/part-IIIII-of-NNNNN.json in the job folder when its run succeeds.\n"
    ));
    let mut cmd = format!(
        "exec {} run {} --shard \"$SLURM_ARRAY_TASK_ID/{tasks}\" --job-dir {}",
        quote(&weave),
        quote(path_text(&file)?),
        quote(path_text(dir)?)
    );
    if let Some(c) = r["cache_dir"].as_str() {
        cmd.push_str(&format!(" --cache-dir {}", quote(c)));
    }
    if let Some(c) = r["cpus"].as_u64() {
        cmd.push_str(&format!(" --max-concurrent {c}"));
    }
    s.push_str(&cmd);
    s.push('\n');
    weave::write_atomically(&script_path, s.as_bytes())
        .map_err(|e| Failure::Other(format!("cannot write {}: {e}", script_path.display())))?;
    let out = Command::new("sbatch")
        .arg("--parsable")
        .arg(&script_path)
        .output()
        .map_err(|e| Failure::Other(format!("cannot run sbatch (is Slurm's client installed?): {e}")))?;
    if !out.status.success() {
        return Err(Failure::Other(format!(
            "sbatch refused the job ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let id = String::from_utf8_lossy(&out.stdout).trim().split(';').next().unwrap_or_default().to_owned();
    if id.is_empty() {
        return Err(Failure::Other("sbatch printed no job id".into()));
    }
    if let Some(list) = job["submissions"].as_array_mut() {
        list.push(json!({
            "slurm_job": id,
            "shards": shards,
            "script": script_path.file_name().map(|n| n.to_string_lossy().into_owned()),
            "submitted_ms": now_ms(),
        }));
    }
    save(dir, job)?;
    Ok(id)
}

/// A value for an `#SBATCH` line: no line breaks.
fn sbatch_word(s: &str) -> String {
    s.chars().map(|c| if c.is_control() || c.is_whitespace() { '_' } else { c }).collect()
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn save(dir: &Path, job: &Value) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(job).map_err(other)?;
    weave::write_atomically(&dir.join("job.json"), text.as_bytes())
        .map_err(|e| Failure::Other(format!("cannot write {}: {e}", dir.join("job.json").display())))
}

fn load(dir: &Path) -> Result<Value, Failure> {
    let path = dir.join("job.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| Failure::Other(format!("{} is not a job folder: cannot read job.json: {e}", dir.display())))?;
    serde_json::from_str(&text).map_err(|e| Failure::Other(format!("{}: {e}", path.display())))
}

/// `weave slurm submit`.
pub(crate) fn submit(file: &Path, tasks: u32, resources: Resources, quiet: bool) -> Result<(), Failure> {
    let shard = weave::Shard::new(0, tasks).map_err(|e| Failure::Other(format!("--tasks: {e}")))?;
    // The pipeline is checked as a shard sees it (steps that need the whole dataset are
    // refused here, before anything is queued).
    let pf = crate::read_file(file)?;
    let run = weave::RunOptions {
        shard: Some(shard),
        cache_dir: resources.cache_dir.clone(),
        ..weave::RunOptions::default()
    };
    let pipeline = crate::build(&pf, &crate::sharded_build_options(&pf, &run)?, quiet)?;
    let abs = std::fs::canonicalize(file).map_err(|e| Failure::Other(format!("{}: {e}", file.display())))?;
    let weave_bin =
        std::env::current_exe().map_err(|e| Failure::Other(format!("cannot find the weave binary: {e}")))?;
    let jobs = abs.parent().unwrap_or(Path::new("/")).join(".weave/jobs");
    std::fs::create_dir_all(&jobs).map_err(|e| Failure::Other(format!("cannot make {}: {e}", jobs.display())))?;
    let (secs, pid) = (now_ms() / 1000, std::process::id());
    let dir = jobs.join(format!("job-{secs}-{pid}"));
    std::fs::create_dir(&dir).map_err(|e| Failure::Other(format!("cannot make {}: {e}", dir.display())))?;
    let cache_dir = match resources.cache_dir {
        Some(d) => Some(std::path::absolute(&d).map_err(other)?),
        None => None,
    };
    let mut job = json!({
        "pipeline": pipeline.name,
        "pipeline_file": path_text(&abs)?,
        "config_hash": pf.config_hash(),
        "tasks": tasks,
        "weave": path_text(&weave_bin)?,
        "resources": {
            "partition": resources.partition,
            "time": resources.time,
            "mem": resources.mem,
            "cpus": resources.cpus,
            "cache_dir": cache_dir.as_deref().map(path_text).transpose()?,
        },
        "submitted_ms": now_ms(),
        "submissions": [],
    });
    let all: Vec<u32> = (0..tasks).collect();
    let id = match submit_array(&dir, &mut job, &all) {
        Ok(id) => id,
        Err(e) => {
            // Nothing was queued: no job folder is left to follow.
            let _ = std::fs::remove_dir_all(&dir);
            return Err(e);
        }
    };
    emit(&format!(
        "submitted Slurm job {id}: {tasks} tasks of {}\njob folder: {}\nfollow it with: weave slurm status {}\n",
        file.display(),
        dir.display(),
        dir.display()
    ))
}

/// The state of each shard of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
enum ShardState {
    Done(Value),
    /// In Slurm's queue, in this state (`PENDING`, `RUNNING`...).
    Queued(String),
    /// Neither finished nor queued: failed, cancelled, or lost with its node.
    NotDone,
}

/// The job folder `job` names: a path, or a job id under `.weave/jobs` beside the working
/// directory.
pub(crate) fn job_dir(job: &str) -> PathBuf {
    let p = PathBuf::from(job);
    if p.join("job.json").exists() { p } else { Path::new(".weave/jobs").join(job) }
}

fn states(dir: &Path, job: &Value) -> Result<Vec<ShardState>, Failure> {
    let tasks = job["tasks"].as_u64().unwrap_or(0) as u32;
    let ids: Vec<String> = job["submissions"]
        .as_array()
        .map(|s| s.iter().filter_map(|x| x["slurm_job"].as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    // Queued tasks, one line each (`-r`): the array job's id, the task's index, its state.
    let mut queued: std::collections::HashMap<u32, String> = std::collections::HashMap::new();
    if !ids.is_empty() {
        let out = Command::new("squeue")
            .args(["-h", "-r", "-o", "%F %K %T", "-j", &ids.join(",")])
            .output()
            .map_err(|e| Failure::Other(format!("cannot run squeue: {e}")))?;
        // squeue fails when none of the jobs is known any more: nothing is queued then.
        if out.status.success() {
            // Later submissions win: a shard resubmitted after a failure is the new task.
            let order = |id: &str| ids.iter().position(|i| i == id).unwrap_or(0);
            let mut seen: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let mut w = line.split_whitespace();
                let (Some(array), Some(task), Some(state)) = (w.next(), w.next(), w.next()) else { continue };
                let Ok(task) = task.parse::<u32>() else { continue };
                let rank = order(array);
                if seen.get(&task).is_none_or(|&r| rank >= r) {
                    seen.insert(task, rank);
                    queued.insert(task, state.to_owned());
                }
            }
        }
    }
    let mut out = Vec::with_capacity(tasks as usize);
    for i in 0..tasks {
        let shard = weave::Shard::new(i, tasks).map_err(other)?;
        let marker = dir.join(DONE).join(format!("{}.json", shard.part_name()));
        let state = match std::fs::read_to_string(&marker) {
            Ok(text) => ShardState::Done(serde_json::from_str(&text).unwrap_or(Value::Null)),
            Err(_) => match queued.get(&i) {
                Some(s) => ShardState::Queued(s.clone()),
                None => ShardState::NotDone,
            },
        };
        out.push(state);
    }
    Ok(out)
}

/// `weave slurm status`: one line per shard; with `wait`, until no shard is queued, then
/// a failure if any did not finish.
pub(crate) fn status(job: &str, wait: bool) -> Result<(), Failure> {
    let dir = job_dir(job);
    let meta = load(&dir)?;
    let mut shown = String::new();
    let s = loop {
        let s = states(&dir, &meta)?;
        let queued = s.iter().any(|x| matches!(x, ShardState::Queued(_)));
        if !wait || !queued {
            break s;
        }
        let line = summary(&s);
        if line != shown {
            eprintln!("{line}");
            shown = line;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let mut text = String::new();
    for (i, st) in s.iter().enumerate() {
        let what = match st {
            ShardState::Done(m) => format!("done ({})", m["run"].as_str().unwrap_or("run record unknown")),
            ShardState::Queued(q) => q.to_lowercase(),
            ShardState::NotDone => "not done (failed or cancelled): `weave slurm resume` submits it again".to_owned(),
        };
        text.push_str(&format!("shard {i}: {what}\n"));
    }
    text.push_str(&format!("{}\n", summary(&s)));
    emit(&text)?;
    let missing = s.iter().filter(|x| matches!(x, ShardState::NotDone)).count();
    if wait && missing > 0 {
        return Err(Failure::Other(format!(
            "{missing} of {} shards did not finish; `weave slurm resume {}` submits them again",
            s.len(),
            dir.display()
        )));
    }
    Ok(())
}

fn summary(s: &[ShardState]) -> String {
    let done = s.iter().filter(|x| matches!(x, ShardState::Done(_))).count();
    let queued = s.iter().filter(|x| matches!(x, ShardState::Queued(_))).count();
    format!("{done} of {} shards done, {queued} queued or running, {} not done", s.len(), s.len() - done - queued)
}

/// `weave slurm resume`: submits again the shards that neither finished nor are queued.
pub(crate) fn resume(job: &str) -> Result<(), Failure> {
    let dir = job_dir(job);
    let mut meta = load(&dir)?;
    let file = PathBuf::from(meta["pipeline_file"].as_str().unwrap_or_default());
    let pf = crate::read_file(&file)?;
    if meta["config_hash"].as_str() != Some(pf.config_hash().as_str()) {
        return Err(Failure::Other(format!(
            "{} changed since the job was submitted: its finished shards are of the old pipeline; submit a new job",
            file.display()
        )));
    }
    let s = states(&dir, &meta)?;
    let todo: Vec<u32> = (0..s.len() as u32).filter(|&i| s[i as usize] == ShardState::NotDone).collect();
    if todo.is_empty() {
        return emit(&format!("nothing to resume: {}\n", summary(&s)));
    }
    let id = submit_array(&dir, &mut meta, &todo)?;
    let list: Vec<String> = todo.iter().map(u32::to_string).collect();
    emit(&format!("submitted Slurm job {id}: shards {} of {}\n", list.join(", "), s.len()))
}

/// What `weave run --job-dir` does after its run succeeded: leaves the shard's completion
/// marker in the job folder (after checking that the job is of this pipeline and this
/// many shards).
pub(crate) fn mark_done(
    dir: &Path,
    shard: Option<weave::Shard>,
    config_hash: &str,
    record: Option<&Path>,
) -> Result<(), Failure> {
    let Some(shard) = shard else {
        return Err(Failure::Other("--job-dir is for a shard of a job: give --shard I/N".into()));
    };
    let meta = load(dir)?;
    let done = dir.join(DONE);
    std::fs::create_dir_all(&done).map_err(|e| Failure::Other(format!("cannot make {}: {e}", done.display())))?;
    let marker = json!({
        "shard": shard.index(),
        "count": shard.count(),
        "config_hash": config_hash,
        "job_config_hash": meta["config_hash"],
        "run": record.and_then(|r| r.file_name()).map(|n| n.to_string_lossy().into_owned()),
        "host": weave::host_name(),
        "finished_ms": now_ms(),
    });
    let path = done.join(format!("{}.json", shard.part_name()));
    weave::write_atomically(&path, marker.to_string().as_bytes())
        .map_err(|e| Failure::Other(format!("cannot write {}: {e}", path.display())))
}

/// Checks, before a run with `--job-dir` starts, that the job is this pipeline's.
pub(crate) fn check_job(dir: &Path, shard: Option<weave::Shard>, config_hash: &str) -> Result<(), Failure> {
    let meta = load(dir)?;
    let Some(shard) = shard else {
        return Err(Failure::Other("--job-dir is for a shard of a job: give --shard I/N".into()));
    };
    if meta["tasks"].as_u64() != Some(u64::from(shard.count())) {
        return Err(Failure::Other(format!(
            "the job in {} has {} shards, not {}",
            dir.display(),
            meta["tasks"],
            shard.count()
        )));
    }
    if meta["config_hash"].as_str() != Some(config_hash) {
        return Err(Failure::Other(format!(
            "the job in {} was submitted for another version of the pipeline file",
            dir.display()
        )));
    }
    Ok(())
}

/// The job's report: its done shards' run records merged into one, as `weave report JOB`
/// prints it. Counts are summed over the shards (records, retries, drops by reason,
/// failures by class, bad records, calls, requests); the job runs from its first shard's
/// start to its last one's end, and its rates are over that time; call times (p50, p99)
/// and peak memory are the largest of any shard; alerts, inputs and outputs are listed
/// shard by shard. A job with shards not done reads as `incomplete`.
pub(crate) fn job_report(dir: &Path) -> Result<weave::RunEntry, Failure> {
    let meta = load(dir)?;
    let file = PathBuf::from(meta["pipeline_file"].as_str().unwrap_or_default());
    let runs = weave::runs_dir(&file);
    let s = states(dir, &meta)?;
    let mut reports = Vec::new();
    for st in &s {
        if let ShardState::Done(marker) = st
            && let Some(run) = marker["run"].as_str()
        {
            let path = runs.join(run).join("report.json");
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Failure::Other(format!("cannot read {}: {e}", path.display())))?;
            reports.push(
                serde_json::from_str::<Value>(&text).map_err(|e| Failure::Other(format!("{}: {e}", path.display())))?,
            );
        }
    }
    let first = reports.first().cloned().unwrap_or(Value::Null);
    let started = reports.iter().filter_map(|r| r["started_ms"].as_u64()).min();
    let ended = reports.iter().filter_map(|r| r["ended_ms"].as_u64()).max();
    let secs = match (started, ended) {
        (Some(a), Some(b)) if b > a => (b - a) as f64 / 1000.0,
        _ => 0.0,
    };
    let sum_map = |into: &mut serde_json::Map<String, Value>, from: &Value| {
        for (k, v) in from.as_object().into_iter().flatten() {
            let n = into.get(k).and_then(Value::as_u64).unwrap_or(0) + v.as_u64().unwrap_or(0);
            into.insert(k.clone(), json!(n));
        }
    };
    let mut steps = Vec::new();
    for step in first["steps"].as_array().into_iter().flatten() {
        let id = &step["step"];
        let all: Vec<&Value> =
            reports.iter().filter_map(|r| r["steps"].as_array()?.iter().find(|x| &x["step"] == id)).collect();
        let sum = |key: &str| all.iter().filter_map(|x| x[key].as_u64()).sum::<u64>();
        let most = |a: &str, b: &str| all.iter().filter_map(|x| x[a][b].as_f64()).fold(0.0f64, f64::max);
        let (mut dropped, mut failures) = (serde_json::Map::new(), serde_json::Map::new());
        for x in &all {
            sum_map(&mut dropped, &x["dropped"]);
            sum_map(&mut failures, &x["failures"]);
        }
        let records = sum("records_in").max(sum("records_out"));
        steps.push(json!({
            "step": id,
            "records_in": sum("records_in"),
            "records_out": sum("records_out"),
            "records_per_second": if secs > 0.0 { records as f64 / secs } else { 0.0 },
            "retries": sum("retries"),
            "failures": failures,
            "dropped": dropped,
            "quarantined": sum("quarantined"),
            "bad_records": sum("bad_records"),
            "calls": sum("calls"),
            "requests": sum("requests"),
            "failed_requests": sum("failed_requests"),
            "call_seconds": {"p50": most("call_seconds", "p50"), "p99": most("call_seconds", "p99")},
        }));
    }
    let done = reports.len();
    let all_ok = done == s.len() && reports.iter().all(|r| r["status"] == "succeeded");
    let peak = reports.iter().filter_map(|r| r["stats"]["resource_usage"]["peak_memory"].as_u64()).max();
    let success = reports.iter().filter_map(|r| r["stats"]["success_rate"].as_f64()).fold(1.0f64, f64::min);
    let concat = |key: &str| -> Vec<Value> {
        reports.iter().flat_map(|r| r[key].as_array().cloned().unwrap_or_default()).collect()
    };
    let report = json!({
        "pipeline": first["pipeline"],
        "pipeline_file": first["pipeline_file"],
        "config_hash": first["config_hash"],
        "tool_version": first["tool_version"],
        "status": if all_ok { "succeeded".to_owned() } else { format!("incomplete ({done} of {} shards done)", s.len()) },
        "error": Value::Null,
        "started_ms": started,
        "ended_ms": ended,
        "dag": first["dag"],
        "steps": steps,
        "stats": {
            "bad_records": reports.iter().filter_map(|r| r["stats"]["bad_records"].as_u64()).sum::<u64>(),
            "success_rate": success,
            "resource_usage": {
                "peak_memory": peak,
                "max_memory": first["stats"]["resource_usage"]["max_memory"],
            },
        },
        "alerts": concat("alerts"),
        "inputs": concat("inputs"),
        "outputs": concat("outputs"),
        "shards": {
            "count": s.len(),
            "done": done,
            "runs": reports.iter().map(|r| r["run_id"].clone()).collect::<Vec<_>>(),
        },
    });
    let id = format!(
        "{} ({} shards)",
        dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        s.len()
    );
    Ok(weave::RunEntry { id, report })
}
