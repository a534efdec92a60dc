//! The run record: `.weave/runs/<run-id>/events.jsonl` and `report.json`, written as the
//! run goes, so that a run that dies still leaves a readable record.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use serde::Deserialize;
use serde_json::{Value, json};
use weave_core::{Event, EventLine, RunStatus, Subscriber};
use weave_fs::Owner;

use crate::alerts::AlertManager;
use crate::collector::MetricsCollector;

/// What the record says about the run besides its events.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The pipeline's name.
    pub pipeline: String,
    /// The pipeline file, best given by its real path (as `weave run` does), so that the
    /// record does not depend on the folder the run was started from.
    pub file: PathBuf,
    /// A hash of the pipeline file's text, to tell runs of different versions apart.
    pub config_hash: String,
    /// The tool's version.
    pub tool_version: String,
    /// The step ids in the DAG's order, the order the report lists them in.
    pub steps: Vec<String>,
    /// The DAG, for reports that draw it: `{"nodes": [{id, kind, shape, level}], "edges":
    /// [[from, to]]}` with ids.
    pub dag: Value,
    /// The shard of a job the run is, if it is one: in its id and its report.
    pub shard: Option<weave_core::Shard>,
}

/// Writes a run's record. Subscribe it after the [`MetricsCollector`] it reads.
#[derive(Debug)]
pub struct RunRecorder {
    dir: PathBuf,
    id: String,
    info: RunInfo,
    metrics: Arc<MetricsCollector>,
    alerts: Option<Arc<AlertManager>>,
    state: Mutex<RecState>,
    /// Held while a report is made and written, so that two threads never interleave
    /// (and an older snapshot never lands after a newer one).
    writing: Mutex<()>,
    /// The lease of `report.json` while the run runs: its modification time, renewed so
    /// that `weave runs` on another machine sharing the folder does not take the run for
    /// dead ([`weave_fs::holder_is_gone`]). Released when the run finishes.
    lease: Mutex<Option<weave_fs::LeaseGuard>>,
}

#[derive(Debug)]
struct RecState {
    events: Option<BufWriter<File>>,
    start: Instant,
    started_ms: u64,
    last_flush: Instant,
    running: Vec<String>,
    lineage: Option<Value>,
    figures: BTreeMap<String, Value>,
    status: &'static str,
    error: Option<String>,
    ended_ms: Option<u64>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// A run id that sorts by time: `20261126T160844.123Z-<host>-<pid>` (milliseconds, so that
/// runs started within one second still sort in the order they started; the host, so that
/// the runs of the nodes of a cluster that share a folder never take each other's id).
/// The host is the kernel's node name, cut to 32 characters of `[A-Za-z0-9._]`.
fn new_run_id(shard: Option<weave_core::Shard>) -> String {
    let ms = now_ms();
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    let host: String = weave_fs::host_name()
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_'))
        .take(32)
        .collect();
    let host = if host.is_empty() { host } else { format!("{host}-") };
    // A shard's run says which it is (`-part-00001-of-00004`), so that the records of a
    // job's shards sort by time and tell apart at a glance.
    let shard = shard.map(|s| format!("-{}", s.part_name())).unwrap_or_default();
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}.{:03}Z-{host}{}{shard}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        ms % 1000,
        std::process::id()
    )
}

impl RunRecorder {
    /// Starts a record under `runs_dir` (usually `.weave/runs` beside the pipeline file),
    /// writing a first `report.json` that says the run is running.
    pub fn start(
        runs_dir: &Path,
        info: RunInfo,
        metrics: Arc<MetricsCollector>,
        alerts: Option<Arc<AlertManager>>,
    ) -> std::io::Result<RunRecorder> {
        fs::create_dir_all(runs_dir)?;
        // A folder of its own, never an earlier run's: two runs of one process can start
        // within the same millisecond.
        let base = new_run_id(info.shard);
        let (mut id, mut n) = (base.clone(), 1);
        let dir = loop {
            let dir = runs_dir.join(&id);
            match fs::create_dir(&dir) {
                Ok(()) => break dir,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => {
                    n += 1;
                    id = format!("{base}-{n}");
                }
                Err(e) => return Err(e),
            }
        };
        let events = BufWriter::new(File::create(dir.join("events.jsonl"))?);
        let rec = RunRecorder {
            dir,
            id,
            info,
            metrics,
            alerts,
            state: Mutex::new(RecState {
                events: Some(events),
                start: Instant::now(),
                started_ms: now_ms(),
                last_flush: Instant::now(),
                running: Vec::new(),
                lineage: None,
                figures: BTreeMap::new(),
                status: "running",
                error: None,
                ended_ms: None,
            }),
            writing: Mutex::new(()),
            lease: Mutex::new(None),
        };
        rec.write_report()?;
        *rec.lease.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some(weave_fs::hold_lease(&rec.dir.join("report.json")));
        Ok(rec)
    }

    /// The run's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The run's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records the files the run read and wrote, each as a JSON object (`weave run` gives
    /// `{step, path, absolute, bytes, blake3}`, `path` relative to the pipeline file's
    /// folder): the lineage of every output.
    pub fn set_lineage(&self, inputs: Vec<Value>, outputs: Vec<Value>) {
        self.lock().lineage = Some(json!({ "inputs": inputs, "outputs": outputs }));
    }

    /// Records a step's dataset-level figures (a validator's pass rates, a comparison's
    /// divergences), as a JSON object, for the report.
    pub fn set_figures(&self, step: &str, figures: Value) {
        self.lock().figures.insert(step.to_owned(), figures);
    }

    /// Records the run's error (its message), for the report.
    pub fn set_error(&self, error: &str) {
        self.lock().error = Some(error.to_owned());
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Writes `report.json` (through a temporary file and a rename).
    pub fn write_report(&self) -> std::io::Result<()> {
        let _writing = self.writing.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let report = {
            let st = self.lock();
            let stats = self.metrics.pipeline_stats();
            let mut metrics = self.metrics.steps();
            metrics.sort_by_key(|m| self.info.steps.iter().position(|s| *s == m.step).unwrap_or(usize::MAX));
            let steps: Vec<Value> = metrics
                .iter()
                .map(|s| {
                    json!({
                        "step": s.step,
                        "calls": s.calls,
                        "records_in": s.records_in,
                        "records_out": s.records_out,
                        "retries": s.retries,
                        "failures": s.failures,
                        "requests": s.requests,
                        "failed_requests": s.failed_requests,
                        "error_rate": s.error_rate(),
                        "dropped": s.dropped,
                        "quarantined": s.quarantined,
                        "bad_records": s.bad_records,
                        "cache": if s.cache_use.is_empty() { "ran" } else { s.cache_use },
                        "cache_hit_batches": s.cache_hits,
                        "cache_hit_records": s.cache_hit_records,
                        "records_per_second": s.records_per_second(),
                        "wall_seconds": s.wall.map(|w| w.as_secs_f64()),
                        "call_seconds": {
                            "p50": s.latency.quantile(0.5).as_secs_f64(),
                            "p95": s.latency.quantile(0.95).as_secs_f64(),
                            "p99": s.latency.quantile(0.99).as_secs_f64(),
                            "mean": s.latency.mean().as_secs_f64(),
                        },
                        "memory_wait_seconds": s.waited_for_memory.as_secs_f64(),
                        "figures": st.figures.get(&s.step),
                    })
                })
                .collect();
            let mut report = json!({
                "run_id": self.id,
                "pipeline": self.info.pipeline,
                "pipeline_file": self.info.file,
                "config_hash": self.info.config_hash,
                "tool_version": self.info.tool_version,
                "status": st.status,
                "error": st.error,
                "started_ms": st.started_ms,
                "ended_ms": st.ended_ms,
                "running_steps": st.running,
                "dag": self.info.dag,
                "steps": steps,
                "stats": stats,
                "alerts": self.alerts.as_ref().map(|a| a.fired()).unwrap_or_default(),
                "inputs": st.lineage.as_ref().map_or(json!([]), |l| l["inputs"].clone()),
                "outputs": st.lineage.as_ref().map_or(json!([]), |l| l["outputs"].clone()),
            });
            // The process that runs it (`pid`, `process_start`, `pid_space`), for
            // `list_runs` to tell a live run from a dead one, and its host, for people.
            if let (Some(r), Some(host)) = (report.as_object_mut(), weave_fs::host_name()) {
                r.insert("host".to_owned(), json!(host));
            }
            if let (Some(r), Some(shard)) = (report.as_object_mut(), self.info.shard) {
                r.insert("shard".to_owned(), json!({"index": shard.index(), "count": shard.count()}));
            }
            if let (Some(r), Ok(Value::Object(owner))) =
                (report.as_object_mut(), serde_json::to_value(Owner::current()))
            {
                r.extend(owner);
            }
            report
        };
        write_json(&self.dir.join("report.json"), &report)
    }
}

/// Writes `value` to `path` through a temporary file of this process and a rename
/// (`weave_fs::write_atomically`: a writer killed half-way leaves a file that the next
/// writer in the folder removes, and two writers never share one).
fn write_json(path: &Path, value: &Value) -> std::io::Result<()> {
    weave_fs::write_atomically(path, &serde_json::to_vec_pretty(value).unwrap_or_default())
}

impl Subscriber for RunRecorder {
    fn on_event(&self, event: &Event) {
        let mut report = false;
        {
            let mut st = self.lock();
            let line = EventLine { t: st.start.elapsed().as_secs_f64(), event: event.clone() }.to_line();
            let important = !matches!(event, Event::BatchFinished { .. } | Event::StepFigures { .. });
            match event {
                Event::StepStarted { step } => {
                    st.running.push(step.to_string());
                    report = true;
                }
                Event::StepFinished { step, .. } => {
                    st.running.retain(|s| **s != **step);
                    report = true;
                }
                Event::StepFailed { error, .. } if st.error.is_none() => {
                    st.error = Some(error.clone());
                }
                Event::RunFinished { status, .. } => {
                    st.status = match status {
                        RunStatus::Succeeded => "succeeded",
                        RunStatus::Failed => "failed",
                        RunStatus::Cancelled => "interrupted",
                    };
                    st.ended_ms = Some(now_ms());
                    report = true;
                    self.lease.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take();
                }
                _ => {}
            }
            // Flush on anything but routine batches, and at least every second, so that
            // a killed run leaves what it did on disk.
            let flush = important || st.last_flush.elapsed() > Duration::from_secs(1);
            if let Some(w) = st.events.as_mut() {
                let ok = writeln!(w, "{line}").and_then(|()| if flush { w.flush() } else { Ok(()) });
                if let Err(e) = ok {
                    log::warn!("cannot write the run's events file ({e}); the record stops here");
                    st.events = None;
                }
            }
            if flush {
                st.last_flush = Instant::now();
            }
        }
        if report && let Err(e) = self.write_report() {
            log::warn!("cannot write the run report in {} ({e})", self.dir.display());
        }
    }
}

/// The events of the run recorded in `run_dir` (a folder under `.weave/runs`), in the
/// order they were written, read from its `events.jsonl` ([`EventLine`]). A last line
/// cut short (a run killed while writing it) is left out.
pub fn read_events(run_dir: &Path) -> std::io::Result<Vec<EventLine>> {
    let text = fs::read_to_string(run_dir.join("events.jsonl"))?;
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .enumerate()
        .map(|(i, line)| {
            EventLine::parse(line).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, format!("events.jsonl line {}: {e}", i + 1))
            })
        })
        .collect()
}

/// A run read back from its record.
#[derive(Debug, Clone)]
pub struct RunEntry {
    /// The run's id (its folder's name).
    pub id: String,
    /// The report.
    pub report: Value,
}

impl RunEntry {
    /// The status (`running` only while the process that runs it lives).
    pub fn status(&self) -> &str {
        self.report["status"].as_str().unwrap_or("unknown")
    }
}

/// The runs recorded under `runs_dir`, oldest first. A record that says `running` but
/// whose process is gone is marked `interrupted` in its report, with the steps that were
/// running then.
pub fn list_runs(runs_dir: &Path) -> std::io::Result<Vec<RunEntry>> {
    let mut out = Vec::new();
    let dir = match fs::read_dir(runs_dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in dir.flatten() {
        let path = entry.path().join("report.json");
        let Ok(bytes) = fs::read(&path) else { continue };
        let Ok(mut report) = serde_json::from_slice::<Value>(&bytes) else {
            log::warn!("{} is not a readable run report; skipping it", path.display());
            continue;
        };
        if report["status"] == "running" && runner_is_gone(&report, &path) {
            report["status"] = json!("interrupted");
            if report["error"].is_null() {
                let running: Vec<String> = report["running_steps"]
                    .as_array()
                    .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                report["error"] = json!(format!(
                    "the process stopped without finishing the run (killed?) while running: {}",
                    if running.is_empty() { "no step".to_owned() } else { running.join(", ") }
                ));
            }
            let _ = write_json(&path, &report);
        }
        out.push(RunEntry { id: entry.file_name().to_string_lossy().into_owned(), report });
    }
    // By start time, then id: ids from before they carried milliseconds sort only by the
    // second.
    out.sort_by(|a, b| (a.report["started_ms"].as_u64(), &a.id).cmp(&(b.report["started_ms"].as_u64(), &b.id)));
    Ok(out)
}

/// Whether the process that ran the run of `report` (read from `path`) is certainly gone
/// (a report that names none is from no live process). Through
/// `weave_fs::holder_is_gone`, so that a reused process id does not keep a dead run
/// `running`, and a run on another machine is judged by its report's lease; a report
/// written before reports kept the start time is judged by the process id alone.
fn runner_is_gone(report: &Value, path: &Path) -> bool {
    match Owner::deserialize(report) {
        Ok(owner) if owner.pid() != 0 => weave_fs::holder_is_gone(&owner, path),
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info() -> RunInfo {
        RunInfo {
            pipeline: "p".into(),
            file: "p.toml".into(),
            config_hash: "abc".into(),
            tool_version: "0.1.0".into(),
            steps: vec!["load".into()],
            dag: json!({"nodes": [], "edges": []}),
            shard: None,
        }
    }

    #[test]
    fn the_record_follows_the_run_and_ends_with_its_status() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(MetricsCollector::new());
        let rec = RunRecorder::start(dir.path(), info(), metrics.clone(), None).unwrap();
        let report = || -> Value { serde_json::from_slice(&fs::read(rec.dir().join("report.json")).unwrap()).unwrap() };
        assert_eq!(report()["status"], "running");
        let events = [
            Event::RunStarted { pipeline: "p".into(), steps: 1, threads: 1, max_memory: 10 },
            Event::StepStarted { step: "load".into() },
            Event::BatchFinished {
                step: "load".into(),
                seq: 0,
                records_in: 0,
                records_out: 5,
                elapsed: Duration::ZERO,
            },
        ];
        for e in &events {
            metrics.on_event(e);
            rec.on_event(e);
        }
        assert_eq!(report()["running_steps"], json!(["load"]));
        let end = Event::RunFinished { status: RunStatus::Succeeded, elapsed: Duration::ZERO, peak_memory: 3 };
        metrics.on_event(&end);
        rec.on_event(&end);
        let r = report();
        assert_eq!(r["status"], "succeeded");
        assert_eq!(r["steps"][0]["records_out"], 5);
        let written: Vec<Event> = read_events(rec.dir()).unwrap().into_iter().map(|l| l.event).collect();
        assert_eq!(written, [&events[..], &[end]].concat());
        assert_eq!(list_runs(dir.path()).unwrap()[0].status(), "succeeded");
    }

    #[test]
    fn a_last_line_cut_short_is_left_out_and_a_bad_line_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let line = EventLine { t: 0.25, event: Event::StepStarted { step: "load".into() } };
        let whole = format!("{}\n", line.to_line());
        fs::write(dir.path().join("events.jsonl"), format!("{whole}{{\"event\":\"step_fin")).unwrap();
        assert_eq!(read_events(dir.path()).unwrap(), [line]);
        fs::write(dir.path().join("events.jsonl"), format!("{{\"event\":\"nope\",\"t\":1}}\n{whole}")).unwrap();
        let err = read_events(dir.path()).unwrap_err();
        assert!(err.to_string().starts_with("events.jsonl line 1: unknown variant `nope`"), "{err}");
    }

    #[test]
    fn a_record_left_running_by_a_dead_process_reads_as_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("20260101T000000Z-1");
        fs::create_dir_all(&run).unwrap();
        let report = json!({"status": "running", "pid": 4_000_000_000u64, "running_steps": ["embed"], "error": null});
        fs::write(run.join("report.json"), report.to_string()).unwrap();
        let runs = list_runs(dir.path()).unwrap();
        assert_eq!(runs[0].status(), "interrupted");
        let on_disk: Value = serde_json::from_slice(&fs::read(run.join("report.json")).unwrap()).unwrap();
        assert_eq!(on_disk["status"], "interrupted");
        assert!(on_disk["error"].as_str().unwrap().ends_with("while running: embed"));
        assert!(new_run_id(None).len() > 16);
        assert!(new_run_id(Some(weave_core::Shard::new(1, 4).unwrap())).ends_with("-part-00001-of-00004"));
    }

    // regression: a record was judged by its process id alone, so a killed run's record
    // whose id the kernel had given to another process (here: this one) said `running`
    // for as long as that process lived.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_record_left_running_by_a_process_whose_id_was_reused_reads_as_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let me = weave_fs::Owner::current();
        let write = |name: &str, report: Value| {
            fs::create_dir_all(dir.path().join(name)).unwrap();
            fs::write(dir.path().join(name).join("report.json"), report.to_string()).unwrap();
        };
        let reused = json!({"status": "running", "pid": me.pid(), "process_start": me.start().unwrap() + 1, "running_steps": []});
        write("20260101T000000Z-1", reused);
        // This process's own record, and one written before records kept the start time
        // (judged by the process id alone, as before).
        write("20260101T000001Z-2", json!({"status": "running", "pid": me.pid(), "process_start": me.start()}));
        write("20260101T000002Z-3", json!({"status": "running", "pid": me.pid()}));
        let status: Vec<String> = list_runs(dir.path()).unwrap().iter().map(|r| r.status().to_owned()).collect();
        assert_eq!(status, ["interrupted", "running", "running"]);
    }

    // Issue 17, item 1: a folder of run records shared by the nodes of a cluster. A run
    // on another node cannot be looked up by its process id: its record's lease says.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_record_of_another_machine_is_running_while_its_lease_is_renewed() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("20260101T000000Z-node7-1");
        fs::create_dir_all(&run).unwrap();
        let space = format!("{:016x}", !weave_fs::pid_space().unwrap());
        let report = json!({"status": "running", "pid": 4_000_000_000u64, "pid_space": space, "host": "node7", "running_steps": []});
        fs::write(run.join("report.json"), report.to_string()).unwrap();
        assert_eq!(list_runs(dir.path()).unwrap()[0].status(), "running", "a fresh lease");
        let expired = std::time::SystemTime::now() - weave_fs::LEASE_EXPIRY - Duration::from_secs(5);
        File::options().append(true).open(run.join("report.json")).unwrap().set_modified(expired).unwrap();
        assert_eq!(list_runs(dir.path()).unwrap()[0].status(), "interrupted", "the node stopped renewing it");
    }

    #[test]
    fn a_run_record_names_its_host_and_pid_space_and_its_id_the_host() {
        let dir = tempfile::tempdir().unwrap();
        let rec = RunRecorder::start(dir.path(), info(), Arc::new(MetricsCollector::new()), None).unwrap();
        let report: Value = serde_json::from_slice(&fs::read(rec.dir().join("report.json")).unwrap()).unwrap();
        let host = weave_fs::host_name().unwrap();
        assert_eq!(report["host"], json!(host));
        assert_eq!(report["pid_space"], json!(format!("{:016x}", weave_fs::pid_space().unwrap())));
        let safe: String =
            host.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_')).take(32).collect();
        assert!(rec.id().ends_with(&format!("Z-{safe}-{}", std::process::id())), "{}", rec.id());
    }

    // regression (issue 13, item 7): report.json was written through `report.json.tmp`, a
    // fixed name: two writers of one record (a run and `weave runs` marking it
    // interrupted) wrote into one temporary file, and a killed writer's was never removed.
    #[cfg(target_os = "linux")]
    #[test]
    fn report_json_is_written_through_a_temporary_file_of_its_own_and_a_dead_writers_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(MetricsCollector::new());
        let rec = RunRecorder::start(dir.path(), info(), metrics, None).unwrap();
        let other = rec.dir().join("report.json.tmp");
        fs::write(&other, "another writer's").unwrap();
        rec.write_report().unwrap();
        assert_eq!(fs::read_to_string(&other).unwrap(), "another writer's", "not taken over");
        let names = |d: &Path| -> Vec<String> {
            let mut v: Vec<String> =
                fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
            v.sort();
            v
        };
        assert_eq!(names(rec.dir()), ["events.jsonl", "report.json", "report.json.tmp"]);
        // A run killed while it wrote its report: its record says `running`, and its
        // temporary file is there.
        let me = weave_fs::Owner::current();
        let dead = weave_fs::Owner::new(me.pid(), me.start().map(|s| s + 1));
        let run = dir.path().join("20260101T000000Z-1");
        fs::create_dir_all(&run).unwrap();
        let mut report = json!({"status": "running", "running_steps": ["embed"]});
        report.as_object_mut().unwrap().extend(serde_json::to_value(dead).unwrap().as_object().unwrap().clone());
        fs::write(run.join("report.json"), report.to_string()).unwrap();
        let leftover = format!(".weave-{}-{}-3.tmp", dead.pid(), dead.start().unwrap());
        fs::write(run.join(&leftover), "half a report").unwrap();
        assert_eq!(list_runs(dir.path()).unwrap()[0].status(), "interrupted");
        assert_eq!(names(&run), ["report.json"], "the dead writer's temporary file is removed");
    }

    // regression: run ids were to the second, so two runs started within one second of
    // one process shared a folder (the second overwrote the first's record), and `weave
    // report` could take the earlier of two runs as the latest.
    #[test]
    fn runs_started_at_once_get_folders_of_their_own_listed_in_start_order() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(MetricsCollector::new());
        let recs: Vec<RunRecorder> =
            (0..5).map(|_| RunRecorder::start(dir.path(), info(), metrics.clone(), None).unwrap()).collect();
        let ids: std::collections::BTreeSet<&str> = recs.iter().map(RunRecorder::id).collect();
        assert_eq!(ids.len(), 5, "{ids:?}");
        let listed: Vec<String> = list_runs(dir.path()).unwrap().into_iter().map(|r| r.id).collect();
        let started: Vec<String> = recs.iter().map(|r| r.id().to_owned()).collect();
        assert_eq!(listed, started);
    }
}
