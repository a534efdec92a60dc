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
//! across the run's threads, while Rust steps and I/O go on beside them. In dict mode each
//! row is made a dict straight from the batch's columns (`to_py`: field names made
//! Python strings once a batch), and each dict returned is read straight into the output
//! batch (`from_py`), as JSON's types: integers keep every digit, dicts their order. A
//! round trip through JSON text (`write_jsonl`, `json.loads`, `json.dumps`,
//! `Value::from_json`) cost six times as much per record
//! (`crates/weave-py/bench/python_step.py`: 2.1 µs against 0.20-0.32 µs).
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
//! - raises `weave_pipelines.TransientError` (or a subclass): the function is called again
//!   on the record, under the step's retry policy; past its retries the record is bad (in
//!   batch mode, the call fails as transient, and the executor retries the batch);
//! - raises any other `Exception`, or returns something else: the record is bad, set
//!   aside with the exception's type and message (`on_bad_record` decides what follows);
//! - raises a `BaseException` that is not an `Exception` (`SystemExit`): the run stops.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::arrow::{ArrowData, BatchStream};
use pyo3::exceptions::{PyException, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};
use weave::{
    Batch, BatchBuilder, CanonicalConfig, MAX_DEPTH, Params, Rejected, RequestCounts, RetryPolicy, Shape, Step,
    StepContext, StepError, StepInfo, StepKind, Transform, Value, ValueRef,
};

pyo3::create_exception!(
    weave_pipelines,
    TransientError,
    PyException,
    "Raised by a Python step for a failure that may pass if tried again (a timeout, a busy service): the record's call is made again under the step's retry policy (the batch's, in batch mode), and counted in its retries. Subclass it for failures of your own."
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
    let retry = p.retry_policy();
    Some(Step::Transform(Arc::new(PythonStep { kind: Arc::clone(kind), config, canonical, retry })))
}

/// A step of a Python kind: the function applied to each record, or to each batch.
struct PythonStep {
    kind: Arc<PyKind>,
    /// The configuration the function is given (when it takes one).
    config: serde_json::Value,
    canonical: CanonicalConfig,
    /// How a record's call that raised `TransientError` is retried (dict mode).
    retry: RetryPolicy,
}

impl StepInfo for PythonStep {
    fn fields_vary(&self, _input: bool) -> bool {
        // A Python function's records are dicts, whose keys may vary from record to record.
        true
    }

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

    /// As much as `cache = "auto"` keeps, as an LLM step's: a Python step runs one batch
    /// at a time (it holds the interpreter's lock), costs 0.2-0.3 µs a record doing nothing
    /// (`crates/weave-py/bench/python_step.py`), and is usually there for work far dearer
    /// than that (a model, a parser): its output is worth storing.
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
    /// A `TransientError` in batch mode: the executor retries the call.
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

    /// Dict mode: the function on each record, each made a dict and the dicts it returns
    /// made records again, with the lock held.
    fn apply_records(&self, batch: &Batch, ctx: &mut StepContext) -> Result<Batch, StepError> {
        let mut calls = RequestCounts::default();
        let out = Python::attach(|py| {
            self.call_records(py, batch, ctx, &mut calls)
                .unwrap_or_else(|e| Err(StepError::internal(format!("{}: {}", self.kind.name, describe(py, &e)))))
        });
        // The calls are counted as an LLM step counts its requests, whatever the outcome:
        // their retries are the step's.
        ctx.count_requests(calls);
        out
    }

    /// Calls the function on each row of `batch` and builds the batch of the records it
    /// returns; counts the calls in `calls`. The outer error is the interpreter's own (out
    /// of memory); the inner one, the call's.
    fn call_records(
        &self,
        py: Python<'_>,
        batch: &Batch,
        ctx: &mut StepContext,
        calls: &mut RequestCounts,
    ) -> PyResult<Result<Batch, StepError>> {
        let config = self.config(py)?;
        // Each field name is made a Python string once a batch, not once a row.
        let names: Vec<Bound<'_, PyString>> = batch.schema().names().map(|n| PyString::intern(py, n)).collect();
        let mut out = BatchBuilder::new();
        let mut fields = Vec::new();
        for (i, row) in batch.rows().enumerate() {
            if ctx.is_cancelled() {
                return Ok(Err(cancelled()));
            }
            let mut retries = 0;
            let returned = loop {
                // A fresh dict each attempt: a call that failed may have changed it.
                let record = PyDict::new(py);
                for (name, (_, value)) in names.iter().zip(row.iter()) {
                    record.set_item(name, to_py(py, value)?)?;
                }
                calls.requests += 1;
                match self.call_with(py, record.into_any(), config.as_ref()) {
                    Ok(r) => break Ok(r),
                    Err(e) if e.is_instance_of::<TransientError>(py) => {
                        calls.failed += 1;
                        if retries >= self.retry.max_retries {
                            let why = format!("{} (still failing after {retries} retries)", describe(py, &e));
                            break Err(Raised::Bad(why));
                        }
                        // The record's call alone is tried again, so that one flaky
                        // record does not repeat the others. No jitter: the step's calls
                        // are made one at a time, so none fail together.
                        retries += 1;
                        calls.retries += 1;
                        let (delay, cancel) = (self.retry.delay(retries), ctx.cancel_flag());
                        if !py.detach(|| sleep_unless_cancelled(delay, &cancel)) {
                            return Ok(Err(cancelled()));
                        }
                    }
                    Err(e) => break Err(self.raised(py, &e)),
                }
            };
            match returned {
                Ok(r) if r.is_none() => ctx.drop_record(&self.kind.drop_reason, || row.to_record()),
                Ok(r) => match r.cast::<PyDict>() {
                    Ok(d) => match fields_of(d, &mut fields) {
                        Ok(()) => out.push_row(fields.iter().map(|(k, v)| (k.as_str(), v.as_ref()))),
                        Err(why) => reject(ctx, batch, i, format!("the record it returned is not JSON data: {why}")),
                    },
                    Err(_) => {
                        let what = type_name(&r);
                        reject(ctx, batch, i, format!("TypeError: it returned a {what}, not a dict or None"));
                    }
                },
                Err(Raised::Bad(reason)) => reject(ctx, batch, i, reason),
                Err(Raised::Transient(e) | Raised::Fatal(e)) => return Ok(Err(e)),
            }
        }
        Ok(Ok(out.finish()))
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

/// The error of a call that stopped because the run is being cancelled.
fn cancelled() -> StepError {
    StepError::transient("the run is being cancelled")
}

/// Sleeps for `delay`, looking at the run's cancel flag every 50 ms; `false` if the run is
/// being cancelled.
fn sleep_unless_cancelled(delay: Duration, cancel: &AtomicBool) -> bool {
    let end = Instant::now() + delay;
    loop {
        if cancel.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
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

/// The name of an object's type, for messages.
fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type().name().map_or_else(|_| "?".to_owned(), |n| n.to_string())
}

/// A value of a record as Python data: JSON's types (`None`, `bool`, `int` of any size,
/// `float`, `str`, `list`, `dict` in the map's order), as `json.loads` would make them,
/// and `datetime`, `date`, `decimal.Decimal` and `bytes` for timestamps, dates, decimals
/// and binary values.
fn to_py<'py>(py: Python<'py>, value: ValueRef<'_>) -> PyResult<Bound<'py, PyAny>> {
    Ok(match value {
        ValueRef::Null => py.None().into_bound(py),
        ValueRef::Bool(b) => PyBool::new(py, b).to_owned().into_any(),
        ValueRef::Int(i) => i.into_pyobject(py)?.into_any(),
        ValueRef::UInt(u) => u.into_pyobject(py)?.into_any(),
        // Decimal digits past 64 bits, which Python's `int` reads exactly.
        ValueRef::BigInt(digits) => py.get_type::<PyInt>().call1((digits,))?,
        ValueRef::Float(x) => PyFloat::new(py, x).into_any(),
        ValueRef::Str(s) => PyString::new(py, s).into_any(),
        ValueRef::List(items) => {
            let list = PyList::empty(py);
            for item in items {
                list.append(to_py(py, item.as_ref())?)?;
            }
            list.into_any()
        }
        ValueRef::Map(map) => {
            let dict = PyDict::new(py);
            for (k, v) in map.iter() {
                dict.set_item(k, to_py(py, v.as_ref())?)?;
            }
            dict.into_any()
        }
        // A `datetime` (in UTC when the timestamp has a zone), to the microsecond, which is
        // as fine as Python's `datetime` goes.
        ValueRef::Timestamp(t) => {
            let datetime = py.import("datetime")?;
            let micros = i128::from(t.value()) * 1_000_000;
            let micros = micros.div_euclid(i128::from(t.unit().per_second()));
            let epoch = epoch(py, t.zone().is_some())?;
            let delta = datetime.getattr("timedelta")?.call1((0, 0, micros))?;
            epoch.call_method1("__add__", (delta,))?
        }
        ValueRef::Date(d) => {
            py.import("datetime")?.getattr("date")?.call_method1("fromordinal", (i64::from(d) + EPOCH_ORDINAL,))?
        }
        ValueRef::Decimal(d) => py.import("decimal")?.getattr("Decimal")?.call1((d.to_string(),))?,
        ValueRef::Binary(b) => pyo3::types::PyBytes::new(py, b).into_any(),
    })
}

/// `date(1970, 1, 1).toordinal()`.
const EPOCH_ORDINAL: i64 = 719_163;

/// 1970-01-01T00:00:00, in UTC when `utc`.
fn epoch(py: Python<'_>, utc: bool) -> PyResult<Bound<'_, PyAny>> {
    let datetime = py.import("datetime")?;
    let kwargs = PyDict::new(py);
    if utc {
        kwargs.set_item("tzinfo", datetime.getattr("timezone")?.getattr("utc")?)?;
    }
    datetime.getattr("datetime")?.call((1970, 1, 1), Some(&kwargs))
}

/// A `datetime`, `date`, `decimal.Decimal` or `bytes` as a timestamp (in microseconds; in
/// UTC when it has a time zone), a date, a decimal or bytes; `None` for any other object.
fn typed_from_py(obj: &Bound<'_, PyAny>) -> Result<Option<Value>, String> {
    let py = obj.py();
    let err = |e: PyErr| e.to_string();
    if let Ok(b) = obj.cast::<pyo3::types::PyBytes>() {
        return Ok(Some(Value::Binary(b.as_bytes().to_vec())));
    }
    let datetime = py.import("datetime").map_err(err)?;
    if obj.is_instance(&datetime.getattr("datetime").map_err(err)?).map_err(err)? {
        let aware = !obj.getattr("tzinfo").map_err(err)?.is_none();
        let since = obj.call_method1("__sub__", (epoch(py, aware).map_err(err)?,)).map_err(err)?;
        let one = datetime.getattr("timedelta").map_err(err)?.call1((0, 0, 1)).map_err(err)?;
        let micros: i64 = since.call_method1("__floordiv__", (one,)).and_then(|m| m.extract()).map_err(err)?;
        let zone = aware.then(|| std::sync::Arc::new("UTC".to_owned()));
        return Ok(Some(Value::Timestamp(weave::Timestamp::new(micros, weave::TimeUnit::Microsecond, zone))));
    }
    if obj.is_instance(&datetime.getattr("date").map_err(err)?).map_err(err)? {
        let ordinal: i64 = obj.call_method0("toordinal").and_then(|o| o.extract()).map_err(err)?;
        let days = i32::try_from(ordinal - EPOCH_ORDINAL).map_err(|e| e.to_string())?;
        return Ok(Some(Value::Date(days)));
    }
    if obj.is_instance(&py.import("decimal").map_err(err)?.getattr("Decimal").map_err(err)?).map_err(err)? {
        let (sign, digits, exponent): (i64, Vec<u8>, Bound<'_, PyAny>) =
            obj.call_method0("as_tuple").and_then(|t| t.extract()).map_err(err)?;
        let exponent: i64 = exponent.extract().map_err(|_| format!("ValueError: {obj} is not a finite decimal"))?;
        let scale = i8::try_from(-exponent).map_err(|_| format!("ValueError: {obj} has too many decimal places"))?;
        let mut value: i128 = 0;
        for d in &digits {
            value = value
                .checked_mul(10)
                .and_then(|v| v.checked_add(i128::from(*d)))
                .ok_or_else(|| format!("ValueError: {obj} has more than 38 digits"))?;
        }
        if sign == 1 {
            value = -value;
        }
        let precision = digits.len().max(usize::from(scale.max(0).unsigned_abs())).max(1);
        let precision = u8::try_from(precision).unwrap_or(u8::MAX);
        return weave::Decimal::new(value, precision, scale)
            .map(|d| Some(Value::Decimal(d)))
            .map_err(|e| format!("ValueError: {e}"));
    }
    Ok(None)
}

/// The fields of a dict a function returned, in its order, into `fields` (cleared first);
/// or why it is not a record: a key that is not a string, a value that is not JSON data
/// (the types [`to_py`] makes, or a tuple), or one nested past [`MAX_DEPTH`].
fn fields_of(dict: &Bound<'_, PyDict>, fields: &mut Vec<(String, Value)>) -> Result<(), String> {
    fields.clear();
    for (k, v) in dict.iter() {
        let key = key_of(&k)?;
        let value = from_py(&v, 1).map_err(|why| format!("{why} (field `{key}`)"))?;
        fields.push((key, value));
    }
    Ok(())
}

/// A dict's key as a field name.
fn key_of(key: &Bound<'_, PyAny>) -> Result<String, String> {
    let s = key.cast::<PyString>().map_err(|_| format!("TypeError: a key is a {}, not a str", type_name(key)))?;
    s.to_cow().map(|c| c.into_owned()).map_err(|e| format!("UnicodeEncodeError: {e}"))
}

/// A Python value as a record's value, `depth` lists and dicts down.
fn from_py(obj: &Bound<'_, PyAny>, depth: usize) -> Result<Value, String> {
    if obj.is_none() {
        return Ok(Value::Null);
    }
    // A bool is an int in Python: it is looked at first.
    if let Ok(b) = obj.cast::<PyBool>() {
        return Ok(Value::Bool(b.is_true()));
    }
    if obj.cast::<PyInt>().is_ok() {
        if let Ok(i) = obj.extract::<i64>() {
            return Ok(Value::Int(i));
        }
        if let Ok(u) = obj.extract::<u64>() {
            return Ok(Value::UInt(u));
        }
        let digits = obj.str().map_err(|e| e.to_string())?;
        return Ok(Value::BigInt(digits.to_cow().map_err(|e| e.to_string())?.into_owned()));
    }
    if let Ok(x) = obj.cast::<PyFloat>() {
        return Ok(Value::Float(x.value()));
    }
    if let Ok(s) = obj.cast::<PyString>() {
        return s.to_cow().map(|c| Value::Str(c.into_owned())).map_err(|e| format!("UnicodeEncodeError: {e}"));
    }
    if let Some(v) = typed_from_py(obj)? {
        return Ok(v);
    }
    if depth >= MAX_DEPTH {
        return Err(format!("ValueError: nested more than {MAX_DEPTH} deep"));
    }
    if let Ok(d) = obj.cast::<PyDict>() {
        let mut map = weave::Map::with_capacity(d.len());
        for (k, v) in d.iter() {
            map.insert(key_of(&k)?, from_py(&v, depth + 1)?);
        }
        return Ok(Value::Map(map));
    }
    if obj.cast::<PyList>().is_ok() || obj.cast::<PyTuple>().is_ok() {
        let items = obj.try_iter().map_err(|e| e.to_string())?;
        return items
            .map(|item| item.map_err(|e| e.to_string()).and_then(|item| from_py(&item, depth + 1)))
            .collect::<Result<Vec<_>, _>>()
            .map(Value::List);
    }
    Err(format!(
        "TypeError: a {} is not record data (str, int, float, bool, None, list, dict, datetime, date, Decimal or bytes)",
        type_name(obj)
    ))
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
