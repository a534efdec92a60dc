//! `weave run`: the run itself, Ctrl-C, and the summary at the end.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use weave::{
    AlertManager, ExecError, ExecOptions, LogSubscriber, MetricsCollector, Pipeline, RunInfo, RunRecorder, RunSummary,
    format_bytes, format_duration,
};

use crate::{Failure, emit};

/// How often progress is logged when stderr is not a terminal.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// How long a stopped run waits for its LLM requests in flight to be answered.
const LLM_GRACE: std::time::Duration = std::time::Duration::from_secs(10);

/// How often `--metrics-file` is rewritten while the run goes.
const METRICS_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// Where the run's cache is and how it is used.
pub(crate) struct CacheArgs {
    pub(crate) dir: PathBuf,
    pub(crate) options: weave::cache::CacheOptions,
}

pub(crate) fn run(
    file: &Path,
    pipeline: Pipeline,
    config_hash: &str,
    quarantine: Option<PathBuf>,
    metrics_file: Option<PathBuf>,
    cache: CacheArgs,
    quiet: bool,
) -> Result<(), Failure> {
    let cancel = Arc::new(AtomicBool::new(false));
    let stopped_by = stop_on_signals(&cancel);
    let quarantine_flag = if quarantine.is_some() { "--quarantine" } else { "the quarantine file" };
    let quarantine = quarantine.unwrap_or_else(|| default_quarantine(file));
    // Before anything is written or removed: no output may be an input, the pipeline file
    // or another output, nor anything but a regular file, nor one of the cache's files.
    let mut files =
        weave::RunFiles::of_pipeline(&pipeline).read("the pipeline file", file).replaced(quarantine_flag, &quarantine);
    for own in weave::cache::own_paths(&cache.dir) {
        files = files.kept_by_weave("the cache", own);
    }
    if let Some(m) = &metrics_file {
        files = files.replaced("--metrics-file", m);
    }
    crate::refuse(files, "nothing was written: give each output a path of its own")?;
    // A quarantine file from an earlier run would read as this run's.
    match std::fs::remove_file(&quarantine) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Failure::Other(format!("cannot remove the old quarantine file {}: {e}", quarantine.display())));
        }
    }
    if let Some(path) = &metrics_file {
        prepare_metrics_file(path)?;
    }
    let metrics = Arc::new(MetricsCollector::new());
    let alerts = Arc::new(AlertManager::new(pipeline.alerts.clone()));
    let steps: Vec<String> =
        pipeline.dag().topological_order().iter().map(|&i| pipeline.dag().node(i).id.clone()).collect();
    let dag = pipeline.dag();
    let dag_json = serde_json::json!({
        "nodes": dag.nodes().iter().enumerate().map(|(i, n)| serde_json::json!({
            "id": n.id, "kind": n.payload.kind, "shape": n.shape, "level": dag.level_of(i),
        })).collect::<Vec<_>>(),
        "edges": dag.edges().map(|(a, b)| [dag.node(a).id.clone(), dag.node(b).id.clone()]).collect::<Vec<_>>(),
    });
    let info = RunInfo {
        steps: steps.clone(),
        dag: dag_json,
        pipeline: pipeline.name.clone(),
        file: absolute(file),
        config_hash: config_hash.to_owned(),
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
    };
    let mut subscribers: Vec<Arc<dyn weave::Subscriber>> =
        vec![Arc::new(LogSubscriber), metrics.clone(), alerts.clone()];
    // Progress: bars on a terminal, periodic log lines (seen with -v) otherwise.
    // Lineage: the files each step reads (hashed now, as the run will read them) and
    // writes (hashed once committed).
    let files = |f: &dyn Fn(&weave::PipelineStep) -> Vec<PathBuf>| -> Vec<(String, PathBuf)> {
        pipeline.dag().nodes().iter().flat_map(|n| f(&n.payload).into_iter().map(move |p| (n.id.clone(), p))).collect()
    };
    let reads = files(&|s| s.step.info().files_read());
    let writes = files(&|s| s.step.info().files_written());
    let plan = crate::cache::plan(&pipeline, &cache.dir, &cache.options)?;
    // `pipeline` goes to the run; the lineage of its outputs is named after the run.
    let base_dir = pipeline.base_dir.clone();
    // The run's entries are pinned against `weave cache gc` until it ends.
    let _pin = match weave::cache::Pin::new(&plan) {
        Ok(p) => Some(p),
        Err(e) => {
            log::warn!("cannot pin the run's cache entries ({e}); a concurrent `weave cache gc` may evict them");
            None
        }
    };
    let index = Arc::clone(plan.files());
    let inputs = lineage(&index, &pipeline.base_dir, &reads);
    let bars = (!quiet && std::io::stderr().is_terminal()).then(|| Arc::new(crate::progress::Bars::new(&steps)));
    if let Some(b) = &bars {
        subscribers.push(b.clone());
    }
    let _progress_lines = bars.is_none().then(|| crate::progress::log_lines(Arc::clone(&metrics), PROGRESS_EVERY));
    // The record is kept beside the pipeline file; a run goes on without one if it cannot be written.
    let record = match RunRecorder::start(&runs_dir(file), info, Arc::clone(&metrics), Some(Arc::clone(&alerts))) {
        Ok(r) => {
            let r = Arc::new(r);
            subscribers.push(r.clone());
            Some(r)
        }
        Err(e) => {
            log::warn!("cannot start the run record in {} ({e}); running without one", runs_dir(file).display());
            None
        }
    };
    let options = ExecOptions {
        subscribers,
        cancel,
        quarantine: Some(quarantine.clone()),
        caches: plan.entries(),
        ..ExecOptions::default()
    };
    // While the run goes, a thread rewrites the metrics file; it stops when `done` drops.
    let (done, stop) = std::sync::mpsc::channel::<()>();
    let writer = metrics_file.clone().map(|path| {
        let metrics = Arc::clone(&metrics);
        std::thread::spawn(move || {
            while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(METRICS_EVERY) {
                if let Err(e) = weave::write_atomically(&path, metrics.prometheus().as_bytes()) {
                    log::warn!("cannot write the metrics file {}: {e}", path.display());
                }
            }
        })
    });
    let outcome = weave::run(pipeline, options);
    // Bad records that steps taken from the cache set aside when they last ran.
    let mut restored = 0;
    if let Ok(summary) = &outcome
        && !cache.options.disabled
    {
        let ran = |id: &str| summary.steps.iter().any(|s| s.id == id && s.cache == weave::CacheUse::Ran);
        match plan.settle_set_aside(&quarantine, &ran) {
            Ok(n) => restored = n,
            Err(e) => log::warn!("cannot keep the set-aside records of the cached steps ({e})"),
        }
    }
    if outcome.is_err() {
        settle_llm_requests(quiet);
    }
    if outcome.is_ok()
        && !cache.options.disabled
        && let Err(e) = plan.remember()
    {
        log::warn!(
            "cannot record the steps' keys in {} ({e}); `weave plan --explain` will know less",
            cache.dir.display()
        );
    }
    if let Some(b) = &bars {
        b.finish();
    }
    // Alerts are delivered on a thread of their own; each command has its timeout.
    alerts.finish();
    if let Some(r) = &record {
        if let Err(failure) = &outcome {
            r.set_error(&failure.error.to_string());
        }
        let summary = match &outcome {
            Ok(s) => s,
            Err(f) => &f.summary,
        };
        for st in summary.steps.iter().filter(|s| !s.figures.is_empty()) {
            r.set_figures(&st.id, figures_json(&st.figures));
        }
        let outputs = if outcome.is_ok() { lineage(&index, &base_dir, &writes) } else { Vec::new() };
        r.set_lineage(inputs, outputs);
        if let Err(e) = index.save() {
            log::debug!("cannot save the file index ({e}); inputs will be hashed again next time");
        }
        if let Err(e) = r.write_report() {
            log::warn!("cannot write the run report in {} ({e})", r.dir().display());
        }
        if !quiet {
            eprintln!("run record: {}", r.dir().display());
        }
    }
    let fired = alerts.fired().len();
    if fired > 0 && !quiet {
        eprintln!("{fired} {} fired (see the log and the alerts' sinks)", if fired == 1 { "alert" } else { "alerts" });
    }
    drop(done);
    if let Some(w) = writer {
        let _ = w.join();
    }
    // Told after the run's own outcome, which must never be lost behind it.
    let metrics_error = metrics_file.as_ref().and_then(|path| {
        weave::write_atomically(path, metrics.prometheus().as_bytes())
            .err()
            .map(|e| format!("cannot write the metrics file {}: {e}", path.display()))
    });
    match outcome {
        Ok(summary) => {
            let table = if quiet { String::new() } else { summary_table(&summary) };
            let q = summary.steps.iter().map(|s| s.quarantined).sum::<u64>() + restored;
            let note =
                if q > 0 { format!("; {q} bad records set aside in {}", quarantine.display()) } else { String::new() };
            emit(&format!("{table}run succeeded in {}{note}\n", format_duration(summary.elapsed)))?;
            metrics_error.map_or(Ok(()), |m| Err(Failure::Other(m)))
        }
        Err(failure) => {
            if !quiet {
                eprint!("{}", summary_table(&failure.summary));
            }
            let nothing = "nothing was written: outputs appear only when the whole run succeeds";
            if matches!(failure.error, ExecError::Cancelled) {
                eprintln!("interrupted after {}; {nothing}", format_duration(failure.summary.elapsed));
                let code = match stopped_by.load(Ordering::SeqCst) {
                    0 => SIGINT_EXIT,
                    code => code,
                };
                return Err(Failure::Interrupted(code));
            }
            eprint!("{}", crate::error_chain(&failure.error));
            if let Some(m) = metrics_error {
                eprintln!("error: {m}");
            }
            eprintln!("{nothing}");
            Err(Failure::Invalid)
        }
    }
}

/// The exit code of a run stopped by SIGINT (Ctrl-C) and by SIGTERM: 128 + the signal's
/// number, as shells report a process killed by it.
const SIGINT_EXIT: u8 = 130;
const SIGTERM_EXIT: u8 = 143;

/// Stops the run on SIGINT (Ctrl-C) or SIGTERM: the first one sets `cancel` (the run stops
/// cleanly and commits nothing), a second one of either kills the process at once (removing its temporary files and killing the alert commands under way first). The
/// signals only set flags, which a thread of ours watches. Returns the exit code of the
/// signal that stopped the run (0 while none has).
fn stop_on_signals(cancel: &Arc<AtomicBool>) -> Arc<AtomicU8> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stopped_by = Arc::new(AtomicU8::new(0));
    let (int, term) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
    let registered = signal_hook::flag::register(SIGINT, Arc::clone(&int))
        .and_then(|_| signal_hook::flag::register(SIGTERM, Arc::clone(&term)));
    if let Err(e) = registered {
        log::warn!("cannot catch Ctrl-C and SIGTERM ({e}); a stopped run stops without cleaning up");
        return stopped_by;
    }
    let (cancel, stopped) = (Arc::clone(cancel), Arc::clone(&stopped_by));
    let watcher = std::thread::Builder::new().name("weave-signals".to_owned()).spawn(move || {
        loop {
            std::thread::sleep(std::time::Duration::from_millis(20));
            let code = if int.swap(false, Ordering::SeqCst) {
                SIGINT_EXIT
            } else if term.swap(false, Ordering::SeqCst) {
                SIGTERM_EXIT
            } else {
                continue;
            };
            if stopped.swap(code, Ordering::SeqCst) != 0 {
                weave::remove_live_temporaries();
                // They run in process groups of their own, which the Ctrl-C did not reach.
                weave::kill_alert_commands();
                std::process::exit(i32::from(code));
            }
            cancel.store(true, Ordering::SeqCst);
            if code == SIGTERM_EXIT {
                eprintln!("\nterminated (SIGTERM): stopping the run (send it again to kill it)");
            } else {
                eprintln!("\ninterrupted: stopping the run (Ctrl-C again to kill it)");
            }
        }
    });
    if let Err(e) = watcher {
        log::warn!("cannot watch for Ctrl-C and SIGTERM ({e}); a stopped run stops without cleaning up");
    }
    stopped_by
}

/// Readies `--metrics-file` before the run, so that a run never commits its outputs and then
/// fails on its metrics: its own folder is made (as the quarantine's and the exports' are; a
/// folder in the file's place was refused with the run's other files).
fn prepare_metrics_file(path: &Path) -> Result<(), Failure> {
    match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) => std::fs::create_dir_all(dir).map_err(|e| {
            Failure::Other(format!("--metrics-file {}: cannot make its folder {}: {e}", path.display(), dir.display()))
        }),
        None => Ok(()),
    }
}

/// Gives the LLM requests a stopped run has in flight (already paid for) up to
/// [`LLM_GRACE`] to be answered and stored in the cache, so that the next run does not pay
/// for them again. Nothing new is sent meanwhile; a second Ctrl-C stops at once.
fn settle_llm_requests(quiet: bool) {
    let n = weave::steps::requests_in_flight();
    if n == 0 {
        return;
    }
    if !quiet {
        let what = if n == 1 { "LLM request" } else { "LLM requests" };
        eprintln!(
            "waiting up to {} for {n} {what} in flight to be answered and kept in the cache (Ctrl-C again to stop now)",
            format_duration(LLM_GRACE)
        );
    }
    let left = weave::steps::settle_requests(LLM_GRACE);
    if left > 0 {
        log::warn!("{left} LLM requests still had no answer after {}; they were abandoned", format_duration(LLM_GRACE));
    }
}

/// Each file as `{step, path, absolute, bytes, blake3}` (or `{step, path, absolute,
/// error}` when it cannot be read): `path` relative to the pipeline file's folder `base`,
/// as cache keys name it, and `absolute` its real path, so that neither depends on the
/// folder the run was started from.
fn lineage(index: &weave::cache::FileIndex, base: &Path, files: &[(String, PathBuf)]) -> Vec<serde_json::Value> {
    files
        .iter()
        .map(|(step, path)| {
            let mut entry = serde_json::json!({
                "step": step,
                "path": weave::cache::pipeline_relative(base, path),
                "absolute": absolute(path),
            });
            let bytes = std::fs::metadata(path).map(|m| m.len());
            let more = match (index.hash(path), bytes) {
                (Ok(h), Ok(n)) => serde_json::json!({"bytes": n, "blake3": h.to_hex()}),
                (Err(e), _) => serde_json::json!({"error": e.to_string()}),
                (_, Err(e)) => serde_json::json!({"error": e.to_string()}),
            };
            if let (Some(entry), serde_json::Value::Object(more)) = (entry.as_object_mut(), more) {
                entry.extend(more);
            }
            entry
        })
        .collect()
}

/// `path` from the root, links followed where it exists.
fn absolute(path: &Path) -> PathBuf {
    std::fs::canonicalize(path).or_else(|_| std::path::absolute(path)).unwrap_or_else(|_| path.to_path_buf())
}

/// `.weave/runs` beside the pipeline file: where run records go.
pub(crate) fn runs_dir(file: &Path) -> PathBuf {
    weave::resolve(file, ".weave/runs")
}

/// `.weave/quarantine.jsonl` beside the pipeline file.
pub(crate) fn default_quarantine(file: &Path) -> PathBuf {
    weave::resolve(file, ".weave/quarantine.jsonl")
}

/// A step's figures as one JSON object, in the order it set them.
fn figures_json(figures: &[(String, weave::Value)]) -> serde_json::Value {
    serde_json::Value::Object(
        figures.iter().map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default())).collect(),
    )
}

/// One line per step: what went in and out, retries, drops, time.
fn summary_table(s: &RunSummary) -> String {
    let header =
        ["step", "kind", "cache", "batches", "records in", "records out", "retries", "dropped", "quarantined", "busy"];
    let dash = |n: u64| if n == 0 { "-".to_owned() } else { n.to_string() };
    let rows: Vec<[String; 10]> = s
        .steps
        .iter()
        .map(|st| {
            let dropped: u64 = st.dropped.iter().map(|(_, n)| n).sum();
            let reasons: Vec<String> = st.dropped.iter().map(|(r, n)| format!("{r} {n}")).collect();
            [
                st.id.clone(),
                st.kind.clone(),
                match st.cache {
                    weave::CacheUse::Ran if st.cached_batches > 0 => format!("{} batches hit", st.cached_batches),
                    weave::CacheUse::Ran => "-".to_owned(),
                    other => other.as_str().to_owned(),
                },
                st.batches_in.max(st.batches_out).to_string(),
                dash(st.records_in),
                dash(st.records_out),
                dash(st.retries),
                if dropped == 0 { "-".to_owned() } else { format!("{dropped} ({})", reasons.join(", ")) },
                dash(st.quarantined),
                format_duration(st.busy),
            ]
        })
        .collect();
    let mut out = crate::table::render(&header, &rows);
    for st in s.steps.iter().filter(|s| !s.figures.is_empty()) {
        let parts: Vec<String> = st
            .figures
            .iter()
            .map(|(k, v)| match v {
                weave::Value::Float(x) => format!("{k} {x:.4}"),
                other => format!("{k} {}", serde_json::to_string(other).unwrap_or_default()),
            })
            .collect();
        out.push_str(&format!("{}: {}\n", st.id, parts.join(", ")));
    }
    out.push_str(&format!("{} worker threads, peak memory in flight {}\n", s.threads, format_bytes(s.peak_memory)));
    out
}
