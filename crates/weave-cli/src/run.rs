//! `weave run`: the terminal's side of a run (progress, Ctrl-C, the summary at the end);
//! the run itself is the library's [`weave::Session`].

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use weave::{
    ExecError, Pipeline, PipelineFile, RunOptions, RunSummary, Session, SessionError, format_bytes, format_duration,
};

use crate::{Failure, emit};

/// How often progress is logged when stderr is not a terminal.
const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Runs the pipeline; returns the run record's folder when it succeeded.
pub(crate) fn run(
    file: PipelineFile,
    pipeline: Pipeline,
    mut options: RunOptions,
    quiet: bool,
) -> Result<Option<std::path::PathBuf>, Failure> {
    let steps: Vec<String> =
        pipeline.dag().topological_order().iter().map(|&i| pipeline.dag().node(i).id.clone()).collect();
    // Progress: bars on a terminal, periodic log lines (seen with -v) otherwise.
    let bars = (!quiet && std::io::stderr().is_terminal()).then(|| Arc::new(crate::progress::Bars::new(&steps)));
    if let Some(b) = &bars {
        options.subscribers.push(b.clone());
    }
    options.on_failure = Some(Arc::new(move || settle_llm_requests(quiet)));
    let session = Session::new(pipeline, Some(file), options).map_err(|e| match e {
        SessionError::NoSuchStep { ref step, .. } => Failure::Other(format!("--refresh {step}: {e}")),
        e => Failure::Other(e.to_string()),
    })?;
    let stopped_by = stop_on_signals(&session.options().cancel);
    let handle = match session.start() {
        Ok(h) => h,
        Err(SessionError::Files { problems }) => {
            for p in &problems {
                eprintln!("error: {p}");
            }
            eprintln!("nothing was written: give each output a path of its own");
            return Err(Failure::Invalid);
        }
        Err(e) => return Err(Failure::Other(e.to_string())),
    };
    let _progress_lines =
        bars.is_none().then(|| crate::progress::log_lines(Arc::clone(handle.metrics()), PROGRESS_EVERY));
    let outcome = handle.wait();
    if let Some(b) = &bars {
        b.finish();
    }
    if let Some(dir) = &outcome.record_dir
        && !quiet
    {
        eprintln!("run record: {}", dir.display());
    }
    let fired = outcome.alerts_fired;
    if fired > 0 && !quiet {
        eprintln!("{fired} {} fired (see the log and the alerts' sinks)", if fired == 1 { "alert" } else { "alerts" });
    }
    match outcome.result {
        Ok(summary) => {
            let table = if quiet { String::new() } else { summary_table(&summary) };
            let q = summary.steps.iter().map(|s| s.quarantined).sum::<u64>() + outcome.restored;
            let note = match &outcome.quarantine {
                Some(path) if q > 0 => format!("; {q} bad records set aside in {}", path.display()),
                _ => String::new(),
            };
            emit(&format!("{table}run succeeded in {}{note}\n", format_duration(summary.elapsed)))?;
            outcome.metrics_error.map_or(Ok(outcome.record_dir), |m| Err(Failure::Other(m)))
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
            eprintln!("error: {}", crate::error_chain(&failure.error));
            if let Some(m) = outcome.metrics_error {
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

/// Gives the LLM requests a stopped run has in flight (already paid for) up to
/// [`weave::LLM_GRACE`] to be answered and stored in the cache, saying so on a terminal.
/// Nothing new is sent meanwhile; a second Ctrl-C stops at once.
fn settle_llm_requests(quiet: bool) {
    let n = weave::steps::requests_in_flight();
    if n == 0 {
        return;
    }
    if !quiet {
        let what = if n == 1 { "LLM request" } else { "LLM requests" };
        eprintln!(
            "waiting up to {} for {n} {what} in flight to be answered and kept in the cache (Ctrl-C again to stop now)",
            format_duration(weave::LLM_GRACE)
        );
    }
    weave::settle_llm_requests();
}

/// One line per step: what went in and out, retries, drops, time, and the CPU time its
/// calls used (against `busy`: a step near its busy time keeps a core busy).
fn summary_table(s: &RunSummary) -> String {
    let header = [
        "step",
        "kind",
        "cache",
        "batches",
        "records in",
        "records out",
        "retries",
        "dropped",
        "quarantined",
        "busy",
        "cpu",
    ];
    let dash = |n: u64| if n == 0 { "-".to_owned() } else { n.to_string() };
    let rows: Vec<[String; 11]> = s
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
                format_duration(st.cpu),
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
