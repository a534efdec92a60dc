//! Python steps: a Python function registered as a step kind that pipeline files name.
//!
//! `weave_pipelines.step` (in `_steps.py`) registers a function with [`register_step`];
//! [`registry`] is the built-in kinds plus those, and is what every pipeline built from
//! Python is checked and built with, so an unknown kind is the usual diagnostic and
//! `plan()` shows a Python step as any other. A Python step is a stateless
//! [`Transform`](weave::Transform): the executor gives it batches on its worker threads as
//! it does a built-in one, and retries, sets records aside, counts and caches alike.
//!
//! A call takes the interpreter's lock for its batch: Python steps run one batch at a time
//! across the run's threads, while Rust steps and I/O go on beside them. The rows cross
//! (in dict mode) as JSON text, through the conversions every JSON loader and exporter uses
//! ([`weave::steps::write_jsonl`], [`weave::Value::from_json`]), parsed and written by the
//! standard library's `json` in one call per batch, so that integers keep their digits
//! and objects their field order.
//!
//! With `batch=True`, the function takes the batch as a pyarrow `RecordBatch` and returns
//! a table (a `RecordBatch`, a `Table`, anything of the Arrow PyCapsule protocol): the
//! columns cross through Arrow's C data interface (`arrow.rs`), both ways. Fewer rows
//! out than in are counted as dropped; an exception other than a `TransientError`, or a
//! value that is not a table, sets every record of the batch aside.
//!
//! What a function's call does with a record (dict mode):
//! - returns a dict: the output record;
//! - returns `None`: the record is dropped, counted under "`KIND` returned None";
//! - raises `weave_pipelines.TransientError` (or a subclass): the call fails as transient,
//!   and the executor retries the batch under the step's retry policy;
//! - raises any other `Exception`, or returns something else: the record is bad, set
//!   aside with the exception's type and message (`on_bad_record` decides what follows);
//! - raises a `BaseException` that is not an `Exception` (`SystemExit`): the run stops.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};

use crate::arrow::{ArrowData, BatchStream};
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList};
use weave::{
    Batch, BatchBuilder, CanonicalConfig, Params, Rejected, Shape, Step, StepContext, StepError, StepInfo, StepKind,
    Transform, Value,
};

pyo3::create_exception!(
    weave_pipelines,
    TransientError,
    PyException,
    "Raised by a Python step for a failure that may pass if tried again (a timeout, a busy service): the step's call is retried under its retry policy, and counted in its retries. Subclass it for failures of your own."
);

/// The Python kinds registered in this process, by name.
static KINDS: LazyLock<Mutex<BTreeMap<String, Arc<PyKind>>>> = LazyLock::new(Mutex::default);

/// The registered kinds, whatever a panic elsewhere left the lock as (the map is replaced
/// an entry at a time, so it is never half-written).
fn kinds() -> MutexGuard<'static, BTreeMap<String, Arc<PyKind>>> {
    KINDS.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The step kinds pipelines built from Python may name: the built-in kinds and the Python
/// kinds registered so far.
pub(crate) fn registry() -> weave::Registry {
    let mut registry = weave::registry();
    for kind in kinds().values() {
        registry.register(kind.step_kind());
    }
    registry
}

/// A Python function registered as a step kind.
struct PyKind {
    /// The kind's name, as pipeline files write it.
    name: String,
    /// The function: `f(record)` or `f(record, config)` (a batch in batch mode).
    function: Py<PyAny>,
    /// The user's version string, in the cache key.
    version: String,
    /// A digest of the function's source (or, without one, its name and bytecode), in
    /// the cache key.
    fingerprint: String,
    /// The keys the step takes, with their defaults.
    defaults: serde_json::Map<String, serde_json::Value>,
    /// Whether the function takes the step's configuration as a second argument.
    takes_config: bool,
    /// Whether the function takes a batch (a pyarrow `RecordBatch`) rather than a record.
    batch: bool,
    /// One line on what it does, for listings.
    summary: String,
    /// The reason its dropped records are counted under.
    drop_reason: String,
}

impl PyKind {
    /// The kind as the registry holds it: its steps are built from the step's table.
    fn step_kind(self: &Arc<Self>) -> StepKind {
        let kind = Arc::clone(self);
        let keys: Vec<String> = self.defaults.keys().cloned().collect();
        StepKind::new(self.name.clone(), Shape::Transform, self.summary.clone(), keys, move |p| build(&kind, p))
    }
}

/// A step of a Python kind, built from its table: the kind's defaults under the file's keys.
fn build(kind: &Arc<PyKind>, p: &Params) -> Option<Step> {
    let mut config = kind.defaults.clone();
    for key in kind.defaults.keys() {
        if let Some(item) = p.item(key) {
            config.insert(key.clone(), item.value.to_json());
        }
    }
    // The function's source, the user's version and how it is called are part of what
    // decides the output, so they are in the cache key beside the configuration.
    let key = serde_json::json!({
        "config": config,
        "function": { "version": kind.version, "source": kind.fingerprint, "batch": kind.batch },
    });
    let canonical = match CanonicalConfig::of(&key) {
        Ok(c) => c,
        Err(e) => {
            p.push(weave::Diagnostic::error(format!("the configuration of `{}` cannot be keyed: {e}", kind.name)));
            return None;
        }
    };
    let config = serde_json::Value::Object(config);
    Some(Step::Transform(Arc::new(PythonStep { kind: Arc::clone(kind), config, canonical })))
}

/// A step of a Python kind: the function applied to each record, or to each batch.
struct PythonStep {
    kind: Arc<PyKind>,
    /// The configuration the function is given (when it takes one).
    config: serde_json::Value,
    canonical: CanonicalConfig,
}

impl StepInfo for PythonStep {
    fn kind(&self) -> &str {
        &self.kind.name
    }

    fn config(&self) -> CanonicalConfig {
        self.canonical.clone()
    }

    /// One call at a time, on a thread of the step's own (the executor's pool for I/O-bound
    /// steps): the interpreter's lock lets one batch run anyway, and a call waiting for
    /// the lock on the CPU pool would hold a worker that the Rust steps need.
    fn resources(&self) -> weave::Resources {
        weave::Resources { io_concurrency: Some(1), ..weave::Resources::default() }
    }

    /// As much as `cache = "auto"` keeps: a Python step holds the interpreter's lock, so
    /// it runs one batch at a time, and reading its output back from the cache costs far
    /// less than calling it again (`crates/weave-py/bench/python_step.py`).
    fn estimated_cost(&self) -> f64 {
        weave::CacheMode::AUTO_MIN_COST
    }
}

impl Transform for PythonStep {
    fn apply(&self, batch: &Batch, ctx: &mut StepContext) -> Result<Batch, StepError> {
        if self.kind.batch { self.apply_batch(batch, ctx) } else { self.apply_records(batch, ctx) }
    }
}

/// What an exception raised by the function means for the run.
enum Raised {
    /// A `TransientError`: the call is retried.
    Transient(StepError),
    /// Another `Exception`: the record (or the batch) is bad, for this reason.
    Bad(String),
    /// A `BaseException` that is not an `Exception` (`SystemExit`, `KeyboardInterrupt`
    /// raised by the function itself): not a bad record, a request to stop.
    Fatal(StepError),
}

impl PythonStep {
    /// Classes an exception the function raised.
    fn raised(&self, py: Python<'_>, e: &PyErr) -> Raised {
        if e.is_instance_of::<TransientError>(py) {
            Raised::Transient(StepError::transient(format!("{}: {}", self.kind.name, describe(py, e))))
        } else if e.is_instance_of::<PyException>(py) {
            Raised::Bad(describe(py, e))
        } else {
            Raised::Fatal(StepError::fatal(format!("{}: {}", self.kind.name, describe(py, e))))
        }
    }

    /// The configuration as the function gets it, if it takes it.
    fn config<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        if self.kind.takes_config { crate::to_python(py, &self.config).map(Some) } else { Ok(None) }
    }

    /// Calls the function on `input` (a record or a batch), with the configuration if it
    /// takes it.
    fn call_with<'py>(
        &self,
        py: Python<'py>,
        input: Bound<'py, PyAny>,
        config: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let function = self.kind.function.bind(py);
        match config {
            Some(c) => function.call1((input, c)),
            None => function.call1((input,)),
        }
    }

    /// Dict mode: the function on each record.
    fn apply_records(&self, batch: &Batch, ctx: &mut StepContext) -> Result<Batch, StepError> {
        let rows = rows_json(batch);
        let text = Python::attach(|py| {
            self.call_records(py, batch, rows, ctx).unwrap_or_else(|e| {
                Err(StepError::internal(format!("{}: the json module failed: {}", self.kind.name, describe(py, &e))))
            })
        })?;
        records_from_json(&text).map_err(|e| {
            StepError::internal(format!("{}: the records it returned do not read back from JSON: {e}", self.kind.name))
        })
    }

    /// Calls the function on each row (`rows`: the batch as a JSON array), with the lock
    /// held, and returns the records it kept as a JSON array. The outer error is one of
    /// the `json` module's (a bug); the inner one, the call's.
    fn call_records(
        &self,
        py: Python<'_>,
        batch: &Batch,
        rows: String,
        ctx: &mut StepContext,
    ) -> PyResult<Result<String, StepError>> {
        let json = py.import("json")?;
        let records = json.call_method1("loads", (rows,))?.cast_into::<PyList>()?;
        let config = self.config(py)?;
        let kept = PyList::empty(py);
        let mut origins = Vec::new();
        for (i, record) in records.iter().enumerate() {
            if ctx.is_cancelled() {
                return Ok(Err(StepError::transient("the run is being cancelled")));
            }
            match self.call_with(py, record, config.as_ref()) {
                Ok(r) if r.is_none() => ctx.drop_record(&self.kind.drop_reason, || batch.row(i).to_record()),
                Ok(r) if r.cast::<PyDict>().is_ok() => {
                    kept.append(r)?;
                    origins.push(i);
                }
                Ok(r) => {
                    let what = r.get_type().name().map_or_else(|_| "?".to_owned(), |n| n.to_string());
                    reject(ctx, batch, i, format!("TypeError: it returned a {what}, not a dict or None"));
                }
                Err(e) => match self.raised(py, &e) {
                    Raised::Bad(reason) => reject(ctx, batch, i, reason),
                    Raised::Transient(e) | Raised::Fatal(e) => return Ok(Err(e)),
                },
            }
        }
        let dumps = json.getattr("dumps")?;
        let options = PyDict::new(py);
        // NaN is not JSON: such a record is bad rather than written in a form nothing
        // reads back. The text stays UTF-8, which Rust reads without unescaping.
        options.set_item("allow_nan", false)?;
        options.set_item("ensure_ascii", false)?;
        let whole = dumps.call((&kept,), Some(&options)).and_then(|t| t.extract::<String>());
        if let Ok(text) = whole {
            return Ok(Ok(text));
        }
        // Some record has a value JSON cannot hold (a datetime, a set, NaN, a lone
        // surrogate): each is tried alone, and those that fail are set aside.
        let mut texts = Vec::with_capacity(kept.len());
        for (record, &i) in kept.iter().zip(&origins) {
            match dumps.call((&record,), Some(&options)).and_then(|t| t.extract::<String>()) {
                Ok(text) => texts.push(text),
                Err(e) => {
                    reject(ctx, batch, i, format!("the record it returned is not JSON data: {}", describe(py, &e)))
                }
            }
        }
        Ok(Ok(format!("[{}]", texts.join(","))))
    }

    /// Batch mode: the function on the whole batch as a pyarrow `RecordBatch`, through
    /// Arrow's C data interface (`arrow.rs`), both ways.
    fn apply_batch(&self, batch: &Batch, ctx: &mut StepContext) -> Result<Batch, StepError> {
        let name = &self.kind.name;
        let returned = Python::attach(|py| -> Result<Option<BatchStream>, StepError> {
            let unexpected = |e: PyErr| StepError::internal(format!("{name}: {}", describe(py, &e)));
            let data =
                Bound::new(py, ArrowData::from_batches(std::slice::from_ref(batch), "the batch").map_err(unexpected)?)
                    .map_err(unexpected)?;
            let input =
                py.import("pyarrow").and_then(|pa| pa.call_method1("record_batch", (data,))).map_err(unexpected)?;
            let config = self.config(py).map_err(unexpected)?;
            let bad = match self.call_with(py, input, config.as_ref()) {
                Ok(out) => match BatchStream::import(&out, &format!("what {name} returned")) {
                    Ok(stream) => return Ok(Some(stream)),
                    Err(e) => describe(py, &e),
                },
                Err(e) => match self.raised(py, &e) {
                    Raised::Bad(reason) => reason,
                    Raised::Transient(e) | Raised::Fatal(e) => return Err(e),
                },
            };
            // The function failed on the batch as a whole: which record it could not
            // take is not known, so each is set aside with the reason.
            for i in 0..batch.len() {
                reject(ctx, batch, i, bad.clone());
            }
            Ok(None)
        })?;
        let Some(stream) = returned else {
            return Ok(Batch::empty());
        };
        let batches =
            stream.read_all().map_err(|e| StepError::fatal(format!("{name}: what it returned cannot be read: {e}")))?;
        let out = match <[Batch; 1]>::try_from(batches) {
            Ok([one]) => one,
            Err(many) => {
                // A table of several chunks: one batch out of the call, as a transform gives.
                let mut builder = BatchBuilder::new();
                for b in &many {
                    for row in b.rows() {
                        builder.push_row(row.iter());
                    }
                }
                builder.finish()
            }
        };
        if out.len() < batch.len() {
            ctx.count_dropped(&self.kind.drop_reason, (batch.len() - out.len()) as u64);
        }
        Ok(out)
    }
}

/// Sets input row `i` of `batch` aside as a bad record for `reason`.
fn reject(ctx: &mut StepContext, batch: &Batch, i: usize, reason: String) {
    ctx.reject(Rejected { reason, record: Some(batch.row(i).to_record()), origin: None });
}

/// An exception as `Type: message`, the way Python prints its last line.
fn describe(py: Python<'_>, e: &PyErr) -> String {
    let kind = e.get_type(py).name().map_or_else(|_| "Exception".to_owned(), |n| n.to_string());
    match e.value(py).str() {
        Ok(m) if !m.to_string().is_empty() => format!("{kind}: {m}"),
        _ => kind,
    }
}

/// A batch as a JSON array of objects, fields in schema order, as JSON Lines writes them.
fn rows_json(batch: &Batch) -> String {
    let mut out = Vec::with_capacity(batch.memory_size() + 2 * batch.len() + 2);
    out.push(b'[');
    weave::steps::write_jsonl(batch, &mut out);
    // Each row ends in a newline, and a newline occurs nowhere else (JSON escapes it in
    // strings): the newlines become the array's commas.
    if out.last() == Some(&b'\n') {
        out.pop();
    }
    for b in &mut out {
        if *b == b'\n' {
            *b = b',';
        }
    }
    out.push(b']');
    // The writer writes UTF-8 from UTF-8 strings.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// A JSON array of objects as a batch.
fn records_from_json(text: &str) -> Result<Batch, String> {
    let Value::List(items) = Value::from_json(text).map_err(|e| e.to_string())? else {
        return Err("not an array".to_owned());
    };
    let mut builder = BatchBuilder::new();
    for item in &items {
        let Value::Map(fields) = item else {
            return Err(format!("an element is {}, not an object", item.type_name()));
        };
        builder.push_row(fields.iter().map(|(k, v)| (k.as_str(), v.as_ref())));
    }
    Ok(builder.finish())
}

/// Registers `function` as the step kind `name` (what `weave_pipelines.step` does):
/// `defaults` is the JSON object of the keys its steps take with their default values,
/// `fingerprint` a digest of its source. A kind of the same name registered before is
/// replaced; a built-in kind's name is refused.
#[pyfunction]
#[pyo3(signature = (name, function, *, version, fingerprint, defaults, takes_config, batch, summary))]
#[allow(clippy::too_many_arguments)]
pub(crate) fn register_step(
    name: String,
    function: Py<PyAny>,
    version: String,
    fingerprint: String,
    defaults: String,
    takes_config: bool,
    batch: bool,
    summary: String,
) -> PyResult<()> {
    if weave::registry().get(&name).is_some() {
        return Err(PyValueError::new_err(format!(
            "`{name}` is a built-in step kind: give the Python step another name"
        )));
    }
    let defaults = match serde_json::from_str::<serde_json::Value>(&defaults) {
        Ok(serde_json::Value::Object(map)) => map,
        _ => return Err(PyValueError::new_err("the step's config must be a JSON object of its keys")),
    };
    let drop_reason = if batch { format!("{name} left it out") } else { format!("{name} returned None") };
    let kind = PyKind {
        name: name.clone(),
        function,
        version,
        fingerprint,
        defaults,
        takes_config,
        batch,
        summary,
        drop_reason,
    };
    // The kind it replaces is dropped once the map's lock is released: dropping the last
    // reference to a function may run Python code, which could register a kind in turn.
    let replaced = kinds().insert(name, Arc::new(kind));
    drop(replaced);
    Ok(())
}

/// The names of the Python step kinds registered in this process.
#[pyfunction]
pub(crate) fn step_kinds() -> Vec<String> {
    kinds().keys().cloned().collect()
}
