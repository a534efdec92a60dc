//! Weave's Python bindings: the compiled module `weave_pipelines._native`, which the
//! Python package `weave_pipelines` (in `python/`) wraps.
//!
//! A pipeline is read from a file, from TOML text, or from a Python dict of the same
//! shape, and checked at once: its errors raise `PipelineError` with the diagnostics the
//! CLI prints. `plan()` is `weave plan --format json` as Python data, and `run()` is
//! `weave run`: the same [`weave::Session`], so the same run record, report, metrics file
//! and alerts, with the interpreter's lock released while the run goes and Ctrl-C
//! (`KeyboardInterrupt`) stopping it cleanly. Python functions registered with
//! `weave_pipelines.step` are step kinds of every pipeline built here (`steps.rs`).
#![deny(missing_docs)]
// PyO3's macros expand to `unsafe` FFI glue (module init, type objects, exception
// types); the only `unsafe` written here is `arrow.rs`'s, which takes Arrow's C structs
// out of another library's capsules, each block with the protocol's promise it relies on.
#![allow(unsafe_code)]

mod arrow;
mod data;
mod steps;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use pyo3::exceptions::{PyException, PyFileNotFoundError, PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use weave::{
    Diagnostic, Diagnostics, Location, PipelineFile, RunOptions, RunOutcome, Session, SessionError, StepError,
};

/// How often the waiting thread looks for Ctrl-C (Python's signal handlers run only when
/// the interpreter checks for them).
const SIGNAL_POLL: Duration = Duration::from_millis(100);

pyo3::create_exception!(
    weave_pipelines,
    WeaveError,
    PyException,
    "The base of Weave's errors: a run that cannot start (its files would clash, its cache cannot be opened) raises it."
);
pyo3::create_exception!(
    weave_pipelines,
    PipelineError,
    WeaveError,
    "A pipeline with errors. `diagnostics` lists them (severity, message, file, line, column, step, hint, code, text); `text` is what `weave validate` prints."
);
pyo3::create_exception!(
    weave_pipelines,
    RunError,
    WeaveError,
    "A run that failed: nothing was committed. `result` is the RunResult with what the run did until then."
);

/// A checked pipeline: the text it was read from and where relative paths resolve from.
#[pyclass(frozen, module = "weave_pipelines._native")]
struct Pipeline {
    file: PipelineFile,
    name: String,
    /// The warnings found when it was checked, as JSON (diagnostic objects).
    warnings: serde_json::Value,
}

#[pymethods]
impl Pipeline {
    /// Reads and checks the pipeline file at `path`.
    #[staticmethod]
    fn from_file(py: Python<'_>, path: PathBuf) -> PyResult<Pipeline> {
        let file = py.detach(|| PipelineFile::read(&path)).map_err(|e| session_error(py, e))?;
        Pipeline::checked(py, file)
    }

    /// Checks TOML text, taken as read from `path`: relative paths resolve from its folder,
    /// diagnostics name it, and the run's `.weave` folder goes beside it. The file need not
    /// exist.
    #[staticmethod]
    fn from_toml(py: Python<'_>, text: String, path: PathBuf) -> PyResult<Pipeline> {
        Pipeline::checked(py, PipelineFile { path, text })
    }

    /// The TOML text of a dict of the pipeline file's shape (tables as dicts, arrays as
    /// lists or tuples; strings, ints, floats and bools).
    #[staticmethod]
    fn dict_to_toml(spec: &Bound<'_, PyDict>) -> PyResult<String> {
        let toml::Value::Table(table) = toml_value(spec.as_any(), "the pipeline")? else {
            return Err(PyTypeError::new_err("the pipeline must be a dict"));
        };
        toml::to_string(&table).map_err(|e| PyValueError::new_err(format!("cannot write the dict as TOML: {e}")))
    }

    /// The pipeline's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// The file the pipeline was read from (or is taken to be).
    #[getter]
    fn path(&self) -> &Path {
        &self.file.path
    }

    /// The pipeline's TOML text.
    #[getter]
    fn text(&self) -> &str {
        &self.file.text
    }

    /// The warnings found when it was checked.
    #[getter]
    fn warnings<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        to_python(py, &self.warnings)
    }

    /// `weave plan --format json` as Python data, against the cache in `cache_dir` (by
    /// default `$WEAVE_CACHE_DIR`, the file's `[cache] dir`, or `.weave/cache` beside it).
    #[pyo3(signature = (cache_dir=None))]
    fn plan<'py>(&self, py: Python<'py>, cache_dir: Option<PathBuf>) -> PyResult<Bound<'py, PyAny>> {
        let pipeline = self.build(py, &weave::BuildOptions::default())?;
        let file = &self.file;
        let plan = py.detach(move || {
            let dir = weave::cache_dir_for(&file.path, pipeline.cache_dir.as_deref(), cache_dir.as_deref());
            weave::cache_plan(&pipeline, &dir, &weave::cache::CacheOptions::default())
                .map(|cache| weave::plan_json(&pipeline, &cache))
        });
        to_python(py, &plan.map_err(|e| session_error(py, e))?)
    }

    /// Runs the pipeline as `weave run` does, and returns what it did as a dict (the
    /// Python package makes it a `RunResult`). Raises `KeyboardInterrupt` when Ctrl-C
    /// stopped it (nothing committed). `progress`, when given, is called about every
    /// 100 ms and once at the end with each step's counts so far; an exception it raises
    /// stops the run as Ctrl-C does, and is raised once the run has stopped.
    ///
    /// `inputs`: (step id, table) pairs, each table an object of the Arrow PyCapsule
    /// protocol that takes the place of that source step. `outputs`: step ids whose
    /// output comes back, under `tables` in the dict, as `ArrowData` by step id.
    #[pyo3(signature = (*, max_memory=None, max_concurrent=None, cache_dir=None, no_cache=false, refresh=Vec::new(), quarantine=None, metrics_file=None, progress=None, inputs=Vec::new(), outputs=Vec::new()))]
    #[allow(clippy::too_many_arguments)]
    fn run<'py>(
        &self,
        py: Python<'py>,
        max_memory: Option<Bound<'py, PyAny>>,
        max_concurrent: Option<usize>,
        cache_dir: Option<PathBuf>,
        no_cache: bool,
        refresh: Vec<String>,
        quarantine: Option<PathBuf>,
        metrics_file: Option<PathBuf>,
        progress: Option<Bound<'py, PyAny>>,
        inputs: Vec<(String, Bound<'py, PyAny>)>,
        outputs: Vec<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let max_memory = max_memory.map(|m| memory_budget(&m)).transpose()?;
        if let Some(n) = max_concurrent
            && !(1..=weave::MAX_CONCURRENT).contains(&n)
        {
            return Err(PyValueError::new_err(format!(
                "max_concurrent must be from 1 to {}, not {n}",
                weave::MAX_CONCURRENT
            )));
        }
        let options = RunOptions {
            max_memory,
            max_concurrent,
            cache_dir,
            no_cache,
            refresh,
            quarantine,
            metrics_file,
            labels: weave::Labels { quarantine: "quarantine".to_owned(), metrics_file: "metrics_file".to_owned() },
            // LLM requests already paid for get their grace to be answered and cached, as
            // in `weave run`.
            on_failure: Some(Arc::new(weave::settle_llm_requests)),
            ..RunOptions::default()
        };
        let cancel = Arc::clone(&options.cancel);
        let inputs = read_inputs(py, inputs, no_cache)?;
        let file = &self.file;
        let build_options = options.build_options();
        let built = py.detach(|| data::build(file, steps::registry(), &build_options, inputs, &outputs));
        let (pipeline, output_handles) = built.map_err(|e| match e {
            data::EndsError::Invalid(d) => pipeline_error(py, &self.file.path, &d),
            data::EndsError::Step(message) => PyValueError::new_err(message),
        })?;
        let session = Session::new(pipeline, Some(self.file.clone()), options).map_err(|e| session_error(py, e))?;
        // Starting plans against the cache and hashes the inputs: no lock held meanwhile.
        let handle = py.detach(|| session.start()).map_err(|e| session_error(py, e))?;
        let metrics = Arc::clone(handle.metrics());
        let report = |done: bool| -> PyResult<()> {
            match &progress {
                Some(f) => f.call1((to_python(py, &progress_json(&metrics, done))?,)).map(drop),
                None => Ok(()),
            }
        };
        // A channel whose receiver may be waited on with the lock released (it is `Sync`).
        let (tx, rx) = crossbeam_channel::bounded(1);
        std::thread::Builder::new()
            .name("weave-py-wait".to_owned())
            .spawn(move || {
                // The receiver is gone only if the caller's thread died; nothing to tell.
                let _ = tx.send(handle.wait());
            })
            .map_err(|e| PyRuntimeError::new_err(format!("cannot start the thread that waits for the run: {e}")))?;
        let mut interrupted: Option<PyErr> = None;
        let outcome = loop {
            match py.detach(|| rx.recv_timeout(SIGNAL_POLL)) {
                Ok(outcome) => break outcome,
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => {
                    // The first Ctrl-C stops the run cleanly, as in `weave run`; the wait
                    // goes on until it has, so that nothing is left half-written.
                    if interrupted.is_none()
                        && let Err(e) = py.check_signals().and_then(|()| report(false))
                    {
                        cancel.store(true, Ordering::SeqCst);
                        interrupted = Some(e);
                    }
                }
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => {
                    return Err(PyRuntimeError::new_err("the run ended without an outcome (it panicked)"));
                }
            }
        };
        if let Some(e) = interrupted {
            return Err(e);
        }
        report(true)?;
        let result = to_python(py, &outcome_json(&outcome))?;
        // A failed run committed nothing: its handles are empty, and no table is made.
        let tables = PyDict::new(py);
        if outcome.result.is_ok() {
            for (id, handle) in output_handles {
                let what = format!("the output of step \"{id}\"");
                let data = py.detach(|| arrow::ArrowData::from_batches(&handle.take(), &what))?;
                tables.set_item(id, data)?;
            }
        }
        result.set_item("tables", tables)?;
        Ok(result)
    }

    fn __repr__(&self) -> String {
        format!("Pipeline(name={:?}, path={:?})", self.name, self.file.path.display().to_string())
    }
}

impl Pipeline {
    /// Builds `file` once to check it, keeping its name and warnings.
    fn checked(py: Python<'_>, file: PipelineFile) -> PyResult<Pipeline> {
        let built = py.detach(|| file.build(&steps::registry(), &weave::BuildOptions::default()));
        let pipeline = built.map_err(|d| pipeline_error(py, &file.path, &d))?;
        let warnings = diagnostics_json(pipeline.warnings());
        Ok(Pipeline { name: pipeline.name.clone(), file, warnings })
    }

    /// Builds the pipeline's steps with `options` over the file's.
    fn build(&self, py: Python<'_>, options: &weave::BuildOptions) -> PyResult<weave::Pipeline> {
        py.detach(|| self.file.build(&steps::registry(), options)).map_err(|d| pipeline_error(py, &self.file.path, &d))
    }
}

/// Each input as a source of the batches of its table's Arrow C stream, read with the
/// lock released (a producer that calls back into Python takes it itself). With a cache,
/// the stream is read in full now, and its batches hashed for the source's key; without
/// one, the key would key nothing, so the run reads the stream as it goes, and an error
/// of the stream fails the step.
fn read_inputs(
    py: Python<'_>,
    inputs: Vec<(String, Bound<'_, PyAny>)>,
    no_cache: bool,
) -> PyResult<Vec<(String, weave::MemorySource)>> {
    inputs
        .into_iter()
        .map(|(id, table)| {
            let what = format!("inputs[\"{id}\"]");
            let stream = arrow::BatchStream::import(&table, &what)?;
            let source = if no_cache {
                let fail = move |e: String| StepError::fatal(format!("{what}: {e}"));
                weave::MemorySource::try_streamed(stream.map(move |b| b.map_err(&fail)))
            } else {
                let batches =
                    py.detach(|| stream.read_all()).map_err(|e| PyValueError::new_err(format!("{what}: {e}")))?;
                py.detach(|| weave::MemorySource::new(batches))
            };
            Ok((id, source))
        })
        .collect()
}

/// A memory budget given as bytes (an int) or as the CLI takes it ("4GB", "512MiB").
fn memory_budget(value: &Bound<'_, PyAny>) -> PyResult<u64> {
    let bytes = match value.extract::<String>() {
        Ok(text) => weave::parse_bytes(&text).map_err(|e| PyValueError::new_err(format!("max_memory: {e}")))?,
        Err(_) => value
            .extract::<u64>()
            .map_err(|_| PyTypeError::new_err("max_memory must be a number of bytes or a size such as \"4GB\""))?,
    };
    if bytes == 0 {
        return Err(PyValueError::new_err("max_memory: the memory budget must be more than zero"));
    }
    Ok(bytes)
}

/// What a run did, as the dict behind `RunResult`.
fn outcome_json(outcome: &RunOutcome) -> serde_json::Value {
    let (status, summary, error) = match &outcome.result {
        Ok(s) => ("succeeded", s, None),
        Err(f) if matches!(f.error, weave::ExecError::Cancelled) => {
            ("cancelled", &f.summary, Some(weave_cli::error_chain(&f.error)))
        }
        Err(f) => ("failed", &f.summary, Some(weave_cli::error_chain(&f.error))),
    };
    let steps: Vec<serde_json::Value> = summary
        .steps
        .iter()
        .map(|s| {
            serde_json::json!({
                "id": s.id,
                "kind": s.kind,
                "cache": s.cache.as_str(),
                "cached_batches": s.cached_batches,
                "batches_in": s.batches_in,
                "batches_out": s.batches_out,
                "records_in": s.records_in,
                "records_out": s.records_out,
                "retries": s.retries,
                "dropped": s.dropped.iter().map(|(r, n)| (r.clone(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
                "quarantined": s.quarantined,
                "bad_records": s.bad_records,
                "excluded": s.excluded,
                "busy_seconds": s.busy.as_secs_f64(),
                "cpu_seconds": s.cpu.as_secs_f64(),
                "figures": figures_json(&s.figures),
            })
        })
        .collect();
    let figures: serde_json::Map<String, serde_json::Value> = summary
        .steps
        .iter()
        .filter(|s| !s.figures.is_empty())
        .map(|s| (s.id.clone(), figures_json(&s.figures)))
        .collect();
    let report_path = outcome.record_dir.as_ref().map(|d| d.join("report.json")).filter(|p| p.is_file());
    // The report is the run record's: the same file `weave report` reads.
    let report = report_path
        .as_ref()
        .and_then(|p| std::fs::read(p).ok())
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok());
    let quarantined = summary.steps.iter().map(|s| s.quarantined).sum::<u64>() + outcome.restored;
    serde_json::json!({
        "status": status,
        "pipeline": summary.pipeline,
        "error": error,
        "steps": steps,
        "figures": figures,
        "stats": report.as_ref().map(|r| r["stats"].clone()),
        "report": report,
        "report_path": report_path,
        "record_dir": outcome.record_dir,
        "elapsed_seconds": summary.elapsed.as_secs_f64(),
        "peak_memory": summary.peak_memory,
        "threads": summary.threads,
        "quarantine": outcome.quarantine,
        "quarantined": quarantined,
        "alerts_fired": outcome.alerts_fired,
        "metrics_error": outcome.metrics_error,
    })
}

/// Each step's counts so far, for a progress display: `step`, `records_in`,
/// `records_out`, `retries`, `records_per_second`, `finished` (the step has ended), and
/// `done` (the run has).
fn progress_json(metrics: &weave::MetricsCollector, done: bool) -> serde_json::Value {
    let steps: Vec<serde_json::Value> = metrics
        .steps()
        .iter()
        .map(|s| {
            serde_json::json!({
                "step": s.step,
                "records_in": s.records_in,
                "records_out": s.records_out,
                "retries": s.retries,
                "records_per_second": s.records_per_second(),
                "finished": s.wall.is_some(),
            })
        })
        .collect();
    serde_json::json!({ "done": done, "steps": steps })
}

/// A step's figures (tokens, cost, pass rates) as one JSON object, in the order it set them.
fn figures_json(figures: &[(String, weave::Value)]) -> serde_json::Value {
    serde_json::Value::Object(
        figures.iter().map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or_default())).collect(),
    )
}

/// Each diagnostic as a JSON object: what `PipelineError.diagnostics` holds.
fn diagnostics_json(diags: &Diagnostics) -> serde_json::Value {
    diags
        .0
        .iter()
        .map(|d| {
            serde_json::json!({
                "severity": if d.is_error() { "error" } else { "warning" },
                "message": d.message,
                "step": d.step,
                "file": d.location.as_ref().map(|l| l.file.clone()),
                "line": d.location.as_ref().map(|l| l.line),
                "column": d.location.as_ref().map(|l| l.column),
                "hint": d.help,
                "code": d.code,
                "text": d.to_string(),
            })
        })
        .collect()
}

/// `PipelineError` for a pipeline file's diagnostics, with the text `weave validate`
/// prints for them.
fn pipeline_error(py: Python<'_>, path: &Path, diags: &Diagnostics) -> PyErr {
    // Laid out as `weave validate` prints them on stderr (all of them: no screenful limit).
    let mut text: String = diags.0.iter().map(|d| format!("{d}\n\n")).collect();
    let n = diags.error_count();
    text.push_str(&format!("\nerror: {} has {n} {}", path.display(), if n == 1 { "error" } else { "errors" }));
    let err = PipelineError::new_err(text.clone());
    let attached = to_python(py, &diagnostics_json(diags)).and_then(|list| {
        let value = err.value(py);
        value.setattr("diagnostics", list)?;
        value.setattr("text", text)
    });
    match attached {
        Ok(()) => err,
        Err(e) => e,
    }
}

/// The Python error for a session that cannot be set up or started.
fn session_error(py: Python<'_>, e: SessionError) -> PyErr {
    match e {
        SessionError::Invalid(diags) => {
            let path = diags.0.iter().find_map(|d| d.location.as_ref().map(|l| l.file.clone())).unwrap_or_default();
            pipeline_error(py, &path, &diags)
        }
        SessionError::NotUtf8 { path, line, column } => {
            let d = Diagnostic::error("the file is not valid UTF-8").with_help("save it as UTF-8").at(Some(Location {
                file: path.clone(),
                line,
                column,
                snippet: None,
            }));
            pipeline_error(py, &path, &Diagnostics(vec![d]))
        }
        SessionError::Read { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            PyFileNotFoundError::new_err(e.to_string())
        }
        SessionError::Read { .. } => PyOSError::new_err(e.to_string()),
        SessionError::NoSuchStep { .. } => PyValueError::new_err(format!("refresh: {e}")),
        SessionError::Files { problems } => WeaveError::new_err(format!(
            "{}\nnothing was written: give each output a path of its own",
            problems.join("\n")
        )),
        e => WeaveError::new_err(e.to_string()),
    }
}

/// A JSON value as Python data, through the standard library's `json` (so that a plan or a
/// report reads in Python exactly as its JSON does).
fn to_python<'py>(py: Python<'py>, value: &serde_json::Value) -> PyResult<Bound<'py, PyAny>> {
    py.import("json")?.call_method1("loads", (value.to_string(),))
}

/// A Python value of a pipeline dict as TOML; `at` names it in errors.
fn toml_value(obj: &Bound<'_, PyAny>, at: &str) -> PyResult<toml::Value> {
    // A bool is an int in Python: it is looked at first.
    if let Ok(b) = obj.cast::<pyo3::types::PyBool>() {
        return Ok(toml::Value::Boolean(b.is_true()));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut table = toml::Table::new();
        for (k, v) in d.iter() {
            let key: String = k.extract().map_err(|_| {
                PyTypeError::new_err(format!(
                    "{at}: a key is not a string ({})",
                    k.repr().map_or_else(|_| "?".to_owned(), |r| r.to_string())
                ))
            })?;
            let value = toml_value(&v, &format!("{at}.{key}"))?;
            table.insert(key, value);
        }
        return Ok(toml::Value::Table(table));
    }
    if obj.cast::<PyList>().is_ok() || obj.cast::<PyTuple>().is_ok() {
        let items: Vec<Bound<'_, PyAny>> = obj.try_iter()?.collect::<PyResult<_>>()?;
        let values =
            items.iter().enumerate().map(|(i, v)| toml_value(v, &format!("{at}[{i}]"))).collect::<PyResult<_>>()?;
        return Ok(toml::Value::Array(values));
    }
    if let Ok(s) = obj.extract::<String>() {
        return Ok(toml::Value::String(s));
    }
    if obj.cast::<pyo3::types::PyInt>().is_ok() {
        return obj
            .extract::<i64>()
            .map(toml::Value::Integer)
            .map_err(|_| PyValueError::new_err(format!("{at}: {} does not fit in 64 bits", obj)));
    }
    if let Ok(x) = obj.cast::<pyo3::types::PyFloat>() {
        return Ok(toml::Value::Float(x.value()));
    }
    let kind = obj.get_type().name().map_or_else(|_| "?".to_owned(), |n| n.to_string());
    Err(PyTypeError::new_err(format!("{at}: a {kind} has no TOML form (use a dict, list, str, int, float or bool)")))
}

/// Runs the `weave` command with `args` (`sys.argv`: the first is the program's name), the
/// lock released, and returns its exit code: the wheel's `weave` command.
#[pyfunction]
fn cli(py: Python<'_>, args: Vec<std::ffi::OsString>) -> u8 {
    let code = py.detach(|| weave_cli::run_command(args));
    // The command handled Ctrl-C itself (the run stopped, exit code 130); the
    // `KeyboardInterrupt` Python's own handler left pending is dropped here, not raised.
    let _ = py.check_signals();
    code
}

/// The compiled part of `weave_pipelines`.
#[pymodule]
#[pyo3(name = "_native")]
fn native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Pipeline>()?;
    m.add_class::<arrow::ArrowData>()?;
    m.add_function(pyo3::wrap_pyfunction!(cli, m)?)?;
    m.add("WeaveError", m.py().get_type::<WeaveError>())?;
    m.add("PipelineError", m.py().get_type::<PipelineError>())?;
    m.add("RunError", m.py().get_type::<RunError>())?;
    m.add("TransientError", m.py().get_type::<steps::TransientError>())?;
    m.add_function(pyo3::wrap_pyfunction!(steps::register_step, m)?)?;
    m.add_function(pyo3::wrap_pyfunction!(steps::step_kinds, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
