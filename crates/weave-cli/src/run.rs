//! `weave run`: the run itself, Ctrl-C, and the summary at the end.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use weave::{
    AlertManager, ExecError, ExecOptions, LogSubscriber, MetricsCollector, Pipeline, RunInfo, RunRecorder, RunSummary,
    format_bytes, format_duration,
};

use crate::{Failure, emit};

/// How often progress is logged when stderr is not a terminal.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

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
    let flag = Arc::clone(&cancel);
    // The first Ctrl-C stops the run cleanly (nothing committed); a second one kills it.
    let handler = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: stopping the run (Ctrl-C again to kill it)");
    });
    if let Err(e) = handler {
        log::warn!("cannot catch Ctrl-C ({e}); an interrupted run stops without cleaning up");
    }
    let quarantine = quarantine.unwrap_or_else(|| default_quarantine(file));
    // A quarantine file from an earlier run would read as this run's.
    match std::fs::remove_file(&quarantine) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Failure::Other(format!("cannot remove the old quarantine file {}: {e}", quarantine.display())));
        }
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
        file: file.to_path_buf(),
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
    // The run's entries are pinned against `weave cache gc` until it ends.
    let _pin = match weave::cache::Pin::new(&plan) {
        Ok(p) => Some(p),
        Err(e) => {
            log::warn!("cannot pin the run's cache entries ({e}); a concurrent `weave cache gc` may evict them");
            None
        }
    };
    let index = Arc::clone(plan.files());
    let inputs = lineage(&index, &reads);
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
                if let Err(e) = write_atomically(&path, &metrics.prometheus()) {
                    log::warn!("cannot write the metrics file {}: {e}", path.display());
                }
            }
        })
    });
    let outcome = weave::run(pipeline, options);
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
        let outputs = if outcome.is_ok() { lineage(&index, &writes) } else { Vec::new() };
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
    if let Some(path) = &metrics_file {
        write_atomically(path, &metrics.prometheus())
            .map_err(|e| Failure::Other(format!("cannot write the metrics file {}: {e}", path.display())))?;
    }
    match outcome {
        Ok(summary) => {
            let table = if quiet { String::new() } else { summary_table(&summary) };
            let q = summary.steps.iter().map(|s| s.quarantined).sum::<u64>();
            let note =
                if q > 0 { format!("; {q} bad records set aside in {}", quarantine.display()) } else { String::new() };
            emit(&format!("{table}run succeeded in {}{note}\n", format_duration(summary.elapsed)))
        }
        Err(failure) => {
            if !quiet {
                eprint!("{}", summary_table(&failure.summary));
            }
            let nothing = "nothing was written: outputs appear only when the whole run succeeds";
            if matches!(failure.error, ExecError::Cancelled) {
                eprintln!("interrupted after {}; {nothing}", format_duration(failure.summary.elapsed));
                return Err(Failure::Interrupted);
            }
            eprintln!("error: {}", failure.error);
            let mut source = std::error::Error::source(&failure.error);
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            eprintln!("{nothing}");
            Err(Failure::Invalid)
        }
    }
}

/// Writes `text` to `path` through a temporary file and a rename, so that a reader (a
/// Prometheus file collector) never sees half a file.
fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// Each file as `{step, path, bytes, blake3}` (or `{step, path, error}` when it cannot be
/// read).
fn lineage(index: &weave::cache::FileIndex, files: &[(String, PathBuf)]) -> Vec<serde_json::Value> {
    files
        .iter()
        .map(|(step, path)| {
            let bytes = std::fs::metadata(path).map(|m| m.len());
            match (index.hash(path), bytes) {
                (Ok(h), Ok(n)) => serde_json::json!({"step": step, "path": path, "bytes": n, "blake3": h.to_hex()}),
                (Err(e), _) => serde_json::json!({"step": step, "path": path, "error": e.to_string()}),
                (_, Err(e)) => serde_json::json!({"step": step, "path": path, "error": e.to_string()}),
            }
        })
        .collect()
}

/// `.weave/runs` beside the pipeline file: where run records go.
pub(crate) fn runs_dir(file: &Path) -> PathBuf {
    weave::resolve(file, ".weave/runs")
}

/// `.weave/quarantine.jsonl` beside the pipeline file.
fn default_quarantine(file: &Path) -> PathBuf {
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
