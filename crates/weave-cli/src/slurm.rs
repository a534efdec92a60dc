//! `weave slurm`: a pipeline's shards as a Slurm array job.
//!
//! `submit` writes a job folder (`.weave/jobs/<id>/` beside the pipeline file: `job.json`,
//! the sbatch scripts as submitted, the tasks' logs) and submits one array job per stage
//! of the pipeline run sharded (`weave plan --shards N` shows them), each after the one
//! before has succeeded (`--dependency=afterok`): task `I` of stage `K` runs `weave run
//! FILE --shard I/N --stage K --job-dir <folder>` (a pipeline of one stage: no
//! `--stage`). A task whose run succeeds leaves a completion marker
//! (`done/stage-K-part-IIIII-of-NNNNN.json`; the last stage's is
//! `done/part-IIIII-of-NNNNN.json`, the shard's); `status` reads the markers and Slurm's
//! queue; `resume` submits again, stage by stage, the tasks that have no marker and are
//! not queued, so that a job whose tasks were cancelled or failed is finished without
//! running the finished ones again.

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

/// The job's number of stages (a job folder written before stages: 1).
fn stage_count(job: &Value) -> usize {
    job["stages"].as_u64().map_or(1, |n| n.max(1) as usize)
}

/// The completion marker of `shard`'s stage `k` of `stages`: the last stage's is the
/// shard's own.
fn marker(dir: &Path, shard: weave::Shard, k: usize, stages: usize) -> PathBuf {
    let name = if k >= stages { shard.part_name() } else { format!("stage-{k}-{}", shard.part_name()) };
    dir.join(DONE).join(format!("{name}.json"))
}

/// Submits stage `stage` (from 1) of shards `shards` of the job in `dir` as one array job,
/// to start once the Slurm jobs `after` have all succeeded; returns Slurm's job id.
fn submit_array(
    dir: &Path,
    job: &mut Value,
    stage: usize,
    shards: &[u32],
    after: &[String],
) -> Result<String, Failure> {
    let tasks = job["tasks"].as_u64().unwrap_or(1);
    let stages = stage_count(job);
    let file = PathBuf::from(job["pipeline_file"].as_str().unwrap_or_default());
    let weave = job["weave"].as_str().unwrap_or_default().to_owned();
    let r = &job["resources"];
    let n = job["submissions"].as_array().map_or(0, Vec::len) + 1;
    let script_path = dir.join(format!("submit-{n}-stage-{stage}.sbatch"));
    let array: Vec<String> = shards.iter().map(u32::to_string).collect();
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).map_err(|e| Failure::Other(format!("cannot make {}: {e}", logs.display())))?;
    let name = job["pipeline"].as_str().unwrap_or("weave");
    let mut s = String::from("#!/bin/bash\n");
    s.push_str(&format!("#SBATCH --job-name={}\n", sbatch_word(&format!("weave-{name}"))));
    s.push_str(&format!("#SBATCH --array={}\n", array.join(",")));
    let log = if stages > 1 { format!("stage-{stage}-part-%a.out") } else { "part-%a.out".to_owned() };
    s.push_str(&format!("#SBATCH --output={}\n", path_text(&logs.join(log))?));
    if !after.is_empty() {
        // A stage runs on the keys and cache entries the stage before it left; if that
        // stage fails, Slurm cancels this one rather than leave it pending for ever.
        s.push_str(&format!("#SBATCH --dependency=afterok:{}\n", after.join(":")));
        s.push_str("#SBATCH --kill-on-invalid-dep=yes\n");
    }
    s.push_str(&format!("#SBATCH --chdir={}\n", path_text(file.parent().unwrap_or(Path::new("/")))?));
    for (key, flag) in [("partition", "partition"), ("time", "time"), ("mem", "mem"), ("cpus", "cpus-per-task")] {
        match &r[key] {
            Value::String(v) => s.push_str(&format!("#SBATCH --{flag}={}\n", sbatch_word(v))),
            Value::Number(v) => s.push_str(&format!("#SBATCH --{flag}={v}\n")),
            _ => {}
        }
    }
    if stages > 1 {
        s.push_str(&format!(
            "# Written by `weave slurm submit`: task I runs stage {stage} of {stages} of shard I of {tasks} of the\n\
             # pipeline below and leaves its completion marker in the job folder's done/ when it succeeds.\n"
        ));
    } else {
        s.push_str(&format!(
            "# Written by `weave slurm submit`: task I runs shard I of {tasks} of the pipeline below and\n\
             # leaves done/part-IIIII-of-NNNNN.json in the job folder when its run succeeds.\n"
        ));
    }
    let mut cmd = format!(
        "exec {} run {} --shard \"$SLURM_ARRAY_TASK_ID/{tasks}\" --job-dir {}",
        quote(&weave),
        quote(path_text(&file)?),
        quote(path_text(dir)?)
    );
    if stages > 1 {
        cmd.push_str(&format!(" --stage {stage}"));
    }
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
            "stage": stage,
            "after": after,
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
    let (options, stages) = crate::sharded_build_options(&pf, &run, None)?;
    let pipeline = crate::build(&pf, &options, quiet)?;
    let stages = stages.unwrap_or(1);
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
        "stages": stages,
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
    let mut ids: Vec<String> = Vec::new();
    for k in 1..=stages {
        match submit_array(&dir, &mut job, k, &all, &ids[ids.len().saturating_sub(1)..]) {
            Ok(id) => ids.push(id),
            Err(e) => {
                // Nothing is left queued: no job folder is left to follow.
                cancel(&ids);
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        }
    }
    let what = if stages == 1 {
        format!("submitted Slurm job {}: {tasks} tasks of {}", ids.join(""), file.display())
    } else {
        format!(
            "submitted Slurm jobs {}: {stages} stages of {tasks} tasks of {}, each after the one before",
            ids.join(", "),
            file.display()
        )
    };
    emit(&format!("{what}\njob folder: {}\nfollow it with: weave slurm status {}\n", dir.display(), dir.display()))
}

/// Cancels the Slurm jobs `ids` (a submission that failed part-way), saying so when it
/// cannot.
fn cancel(ids: &[String]) {
    if ids.is_empty() {
        return;
    }
    match Command::new("scancel").args(ids).status() {
        Ok(s) if s.success() => {}
        _ => log::warn!("could not cancel Slurm jobs {}: cancel them with scancel", ids.join(" ")),
    }
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

/// The state of each stage (from the first) of each shard of the job in `dir`.
fn states(dir: &Path, job: &Value) -> Result<Vec<Vec<ShardState>>, Failure> {
    let tasks = job["tasks"].as_u64().unwrap_or(0) as u32;
    let stages = stage_count(job);
    let subs: Vec<(String, usize)> = job["submissions"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(|x| Some((x["slurm_job"].as_str()?.to_owned(), x["stage"].as_u64().unwrap_or(1) as usize)))
                .collect()
        })
        .unwrap_or_default();
    // Queued tasks, one line each (`-r`): the array job's id, the task's index, its state;
    // by stage and task.
    let mut queued: std::collections::HashMap<(usize, u32), String> = std::collections::HashMap::new();
    if !subs.is_empty() {
        let ids: Vec<&str> = subs.iter().map(|(id, _)| id.as_str()).collect();
        let out = Command::new("squeue")
            .args(["-h", "-r", "-o", "%F %K %T", "-j", &ids.join(",")])
            .output()
            .map_err(|e| Failure::Other(format!("cannot run squeue: {e}")))?;
        // squeue fails when none of the jobs is known any more: nothing is queued then.
        if out.status.success() {
            // Later submissions win: a task resubmitted after a failure is the new one.
            let mut seen: std::collections::HashMap<(usize, u32), usize> = std::collections::HashMap::new();
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                let mut w = line.split_whitespace();
                let (Some(array), Some(task), Some(state)) = (w.next(), w.next(), w.next()) else { continue };
                let Ok(task) = task.parse::<u32>() else { continue };
                let Some(rank) = subs.iter().position(|(id, _)| id == array) else { continue };
                let at = (subs[rank].1, task);
                if seen.get(&at).is_none_or(|&r| rank >= r) {
                    seen.insert(at, rank);
                    queued.insert(at, state.to_owned());
                }
            }
        }
    }
    let mut out = vec![Vec::with_capacity(tasks as usize); stages];
    for (k, per_stage) in (1..=stages).zip(out.iter_mut()) {
        for i in 0..tasks {
            let shard = weave::Shard::new(i, tasks).map_err(other)?;
            let state = match std::fs::read_to_string(marker(dir, shard, k, stages)) {
                Ok(text) => ShardState::Done(serde_json::from_str(&text).unwrap_or(Value::Null)),
                Err(_) => match queued.get(&(k, i)) {
                    Some(s) => ShardState::Queued(s.clone()),
                    None => ShardState::NotDone,
                },
            };
            per_stage.push(state);
        }
    }
    Ok(out)
}

/// Each shard's state over its stages: done when its last stage is; queued while a stage
/// of it is in Slurm's queue (the first one not done, or a later one waiting for it).
fn overall(s: &[Vec<ShardState>]) -> Vec<ShardState> {
    let Some(last) = s.last() else { return Vec::new() };
    (0..last.len())
        .map(|i| match &last[i] {
            ShardState::Done(m) => ShardState::Done(m.clone()),
            _ => s
                .iter()
                .find_map(|stage| match &stage[i] {
                    ShardState::Queued(q) => Some(ShardState::Queued(q.clone())),
                    _ => None,
                })
                .unwrap_or(ShardState::NotDone),
        })
        .collect()
}

/// `weave slurm status`: one line per shard; with `wait`, until no shard is queued, then
/// a failure if any did not finish.
pub(crate) fn status(job: &str, wait: bool) -> Result<(), Failure> {
    let dir = job_dir(job);
    let meta = load(&dir)?;
    let mut shown = String::new();
    let all = loop {
        let all = states(&dir, &meta)?;
        let s = overall(&all);
        let queued = s.iter().any(|x| matches!(x, ShardState::Queued(_)));
        if !wait || !queued {
            break all;
        }
        let line = summary(&s);
        if line != shown {
            eprintln!("{line}");
            shown = line;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let s = overall(&all);
    let stages = all.len();
    let mut text = String::new();
    for (i, st) in s.iter().enumerate() {
        // Where a shard of several stages is: the first stage not done.
        let at = (stages > 1)
            .then(|| all.iter().position(|stage| !matches!(stage[i], ShardState::Done(_))))
            .flatten()
            .map(|k| match &all[k][i] {
                ShardState::Queued(q) => format!(" (stage {} of {stages}: {})", k + 1, q.to_lowercase()),
                _ => format!(" (stage {} of {stages} not done)", k + 1),
            })
            .unwrap_or_default();
        let what = match st {
            ShardState::Done(m) => format!("done ({})", m["run"].as_str().unwrap_or("run record unknown")),
            ShardState::Queued(q) => format!("{}{at}", q.to_lowercase()),
            ShardState::NotDone => {
                format!("not done (failed or cancelled){at}: `weave slurm resume` submits it again")
            }
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

/// `weave slurm resume`: submits again, stage by stage, the tasks that neither finished
/// nor are queued (failed, cancelled, or cancelled by Slurm because a stage before them
/// failed). Each stage resubmitted starts after the stage before it: the one submitted
/// now, or the tasks of it still queued.
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
    let all = states(&dir, &meta)?;
    let stages = all.len();
    // By stage: the Slurm jobs of it that may still have tasks queued.
    let queued: Vec<Vec<String>> = (1..=stages)
        .map(|k| {
            if !all[k - 1].iter().any(|x| matches!(x, ShardState::Queued(_))) {
                return Vec::new();
            }
            meta["submissions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|x| x["stage"].as_u64().unwrap_or(1) as usize == k)
                .filter_map(|x| x["slurm_job"].as_str().map(str::to_owned))
                .collect()
        })
        .collect();
    let mut lines = Vec::new();
    // What the next stage waits for: this stage's array submitted now, and its tasks still
    // queued from before.
    let mut before: Vec<String> = Vec::new();
    for k in 1..=stages {
        let todo: Vec<u32> =
            (0..all[k - 1].len() as u32).filter(|&i| all[k - 1][i as usize] == ShardState::NotDone).collect();
        let mut waited_for = queued[k - 1].clone();
        if !todo.is_empty() {
            let id = submit_array(&dir, &mut meta, k, &todo, &before)?;
            let list: Vec<String> = todo.iter().map(u32::to_string).collect();
            let stage = if stages > 1 { format!("stage {k} of ") } else { String::new() };
            lines.push(format!("submitted Slurm job {id}: {stage}shards {} of {}", list.join(", "), all[k - 1].len()));
            waited_for.insert(0, id);
        }
        before = waited_for;
    }
    if lines.is_empty() {
        return emit(&format!("nothing to resume: {}\n", summary(&overall(&all))));
    }
    emit(&format!("{}\n", lines.join("\n")))
}

/// What `weave run --job-dir` does after its run succeeded: leaves the shard's completion
/// marker in the job folder (after checking that the job is of this pipeline and this
/// many shards).
pub(crate) fn mark_done(
    dir: &Path,
    shard: Option<weave::Shard>,
    stage: Option<(usize, usize)>,
    config_hash: &str,
    record: Option<&Path>,
) -> Result<(), Failure> {
    let Some(shard) = shard else {
        return Err(Failure::Other("--job-dir is for a shard of a job: give --shard I/N".into()));
    };
    let meta = load(dir)?;
    let done = dir.join(DONE);
    std::fs::create_dir_all(&done).map_err(|e| Failure::Other(format!("cannot make {}: {e}", done.display())))?;
    let (k, stages) = stage.unwrap_or((1, 1));
    let marker_json = json!({
        "shard": shard.index(),
        "count": shard.count(),
        "stage": k,
        "stages": stages,
        "config_hash": config_hash,
        "job_config_hash": meta["config_hash"],
        "run": record.and_then(|r| r.file_name()).map(|n| n.to_string_lossy().into_owned()),
        "host": weave::host_name(),
        "finished_ms": now_ms(),
    });
    let path = marker(dir, shard, k, stages);
    weave::write_atomically(&path, marker_json.to_string().as_bytes())
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

/// Step `id`'s entry in a run's report, if the run had the step.
fn step_entry<'a>(report: &'a Value, id: &Value) -> Option<&'a Value> {
    report["steps"].as_array()?.iter().find(|x| &x["step"] == id)
}

/// The job's report: its done shards' run records merged into one, as `weave report JOB`
/// prints it. Counts are summed over the shards (records, retries, drops by reason,
/// failures by class, bad records, calls, requests); a step's figures are each shard's from
/// the last stage that ran the step (in a later stage its output is read back from the
/// cache, or it is left out: a stage's run says `replayed` or `skipped`); the job runs from
/// its first shard's start to its last one's end, and its rates are over that time; call times (p50, p99)
/// and peak memory are the largest of any shard; a step's figures are the job's when one
/// shard wrote them for the whole job (`"scope": "job"`, `compare`), and absent otherwise; alerts, inputs and outputs are listed
/// shard by shard. A job with shards not done reads as `incomplete`.
pub(crate) fn job_report(dir: &Path) -> Result<weave::RunEntry, Failure> {
    let meta = load(dir)?;
    let file = PathBuf::from(meta["pipeline_file"].as_str().unwrap_or_default());
    let runs = weave::runs_dir(&file);
    let by_stage = states(dir, &meta)?;
    let s = overall(&by_stage);
    let read = |marker: &Value| -> Result<Option<Value>, Failure> {
        let Some(run) = marker["run"].as_str() else { return Ok(None) };
        let path = runs.join(run).join("report.json");
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Failure::Other(format!("cannot read {}: {e}", path.display())))?;
        serde_json::from_str::<Value>(&text).map(Some).map_err(|e| Failure::Other(format!("{}: {e}", path.display())))
    };
    // Each done shard's last stage's report, and its earlier stages' before it.
    let mut reports = Vec::new();
    let mut staged: Vec<Vec<Value>> = Vec::new();
    for (i, st) in s.iter().enumerate() {
        if let ShardState::Done(marker) = st
            && let Some(last) = read(marker)?
        {
            let mut runs = Vec::new();
            for stage in by_stage.iter().take(by_stage.len().saturating_sub(1)) {
                if let Some(ShardState::Done(m)) = stage.get(i)
                    && let Some(r) = read(m)?
                {
                    runs.push(r);
                }
            }
            runs.push(last.clone());
            reports.push(last);
            staged.push(runs);
        }
    }
    let first = reports.first().cloned().unwrap_or(Value::Null);
    let started = staged.iter().flatten().filter_map(|r| r["started_ms"].as_u64()).min();
    let ended = staged.iter().flatten().filter_map(|r| r["ended_ms"].as_u64()).max();
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
        // Per shard: the step's entry in the last stage that ran it, else in the last stage.
        let entry = |r| step_entry(r, id);
        let all: Vec<&Value> = staged
            .iter()
            .filter_map(|runs| {
                let ran =
                    runs.iter().rev().filter_map(entry).find(|x| x["cache"] != "replayed" && x["cache"] != "skipped");
                ran.or_else(|| runs.last().and_then(entry))
            })
            .collect();
        let sum = |key: &str| all.iter().filter_map(|x| x[key].as_u64()).sum::<u64>();
        let most = |a: &str, b: &str| all.iter().filter_map(|x| x[a][b].as_f64()).fold(0.0f64, f64::max);
        let (mut dropped, mut failures) = (serde_json::Map::new(), serde_json::Map::new());
        for x in &all {
            sum_map(&mut dropped, &x["dropped"]);
            sum_map(&mut failures, &x["failures"]);
        }
        let records = sum("records_in").max(sum("records_out"));
        // The step's figures over the whole job, when one shard wrote them (`compare`'s
        // last shard: `"scope": "job"`), once; the shards' own figures are not the job's,
        // and are not summed into them.
        let figures = all.iter().map(|x| &x["figures"]).find(|f| f["scope"] == "job").cloned().unwrap_or(Value::Null);
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
            "figures": figures,
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
