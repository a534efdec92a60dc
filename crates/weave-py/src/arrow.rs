//! Tables between Python and Weave through Arrow's C data interface: the PyCapsule
//! protocol (`__arrow_c_stream__`, `__arrow_c_array__`, `__arrow_c_schema__`) that
//! pyarrow, polars, pandas and DuckDB speak.
//!
//! Importing takes any object with `__arrow_c_stream__` (a pyarrow `Table` or
//! `RecordBatchReader`, a polars `DataFrame`) or `__arrow_c_array__` (a pyarrow
//! `RecordBatch`), reads its record batches one at a time through the stream's callbacks,
//! and makes each a [`Batch`] with [`from_record_batch`], the conversion the Parquet
//! loader uses. Exporting makes batches record batches of one schema with
//! [`to_record_batches`] and hands them out as an [`ArrowData`], which any of those
//! libraries reads (`pyarrow.table(data)`, `pyarrow.record_batch(data)`): the columns'
//! buffers cross as pointers, never row by row.
//!
//! `unsafe` here is the C data interface's own: taking a struct out of a capsule another
//! library made, under that library's promise (the protocol's) that the capsule's pointer
//! is the struct its name says.

use std::ffi::CStr;
use std::sync::Arc;

use arrow_array::ffi::{FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::ffi_stream::{FFI_ArrowArrayStream, RecordBatchStreamReader};
use arrow_array::{Array, RecordBatch, RecordBatchIterator, StructArray};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyCapsuleMethods, PyTuple};
use weave::Batch;
use weave::steps::arrow::arrow_schema::{ArrowError, SchemaRef};
use weave::steps::arrow::{from_record_batch, to_record_batches};

/// The capsule names the PyCapsule protocol gives each struct.
const STREAM: &CStr = c"arrow_array_stream";
const ARRAY: &CStr = c"arrow_array";
const SCHEMA: &CStr = c"arrow_schema";

/// Record batches of one schema, held for Python: what Weave hands out as a table.
///
/// It speaks the PyCapsule protocol, so `pyarrow.table(data)`,
/// `pyarrow.RecordBatchReader.from_stream(data)`, `pyarrow.record_batch(data)` and
/// `polars.DataFrame(data)` read it without copying the columns. Each call of
/// `__arrow_c_stream__` streams the batches again (they are shared, not used up).
#[pyclass(frozen, module = "weave_pipelines._native")]
#[derive(Debug)]
pub(crate) struct ArrowData {
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
}

#[pymethods]
impl ArrowData {
    /// The batches as an Arrow C stream, in a capsule named `arrow_array_stream`.
    /// `requested_schema` is accepted as the protocol asks, and ignored: the data keeps
    /// the types Weave gave it (the consumer casts if it wants others).
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        drop(requested_schema);
        let reader = RecordBatchIterator::new(self.batches.clone().into_iter().map(Ok), Arc::clone(&self.schema));
        PyCapsule::new_with_value(py, FFI_ArrowArrayStream::new(Box::new(reader)), STREAM)
    }

    /// The schema as an Arrow C schema, in a capsule named `arrow_schema`.
    fn __arrow_c_schema__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyCapsule>> {
        let schema = FFI_ArrowSchema::try_from(self.schema.as_ref()).map_err(arrow_error)?;
        PyCapsule::new_with_value(py, schema, SCHEMA)
    }

    /// The batches as one Arrow C array (a struct array of the columns) with its schema:
    /// two capsules, `arrow_schema` and `arrow_array`, as `pyarrow.record_batch` takes them.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_array__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        drop(requested_schema);
        let one = match self.batches.as_slice() {
            [one] => one.clone(),
            many => arrow_select::concat::concat_batches(&self.schema, many).map_err(arrow_error)?,
        };
        let (array, schema) = arrow_array::ffi::to_ffi(&StructArray::from(one).into_data()).map_err(arrow_error)?;
        let schema = PyCapsule::new_with_value(py, schema, SCHEMA)?;
        let array = PyCapsule::new_with_value(py, array, ARRAY)?;
        PyTuple::new(py, [schema.into_any(), array.into_any()])
    }

    /// How many rows the batches hold.
    #[getter]
    fn num_rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    fn __repr__(&self) -> String {
        let fields: Vec<String> =
            self.schema.fields().iter().map(|f| format!("{}: {}", f.name(), f.data_type())).collect();
        format!("ArrowData({} rows; {})", self.num_rows(), fields.join(", "))
    }
}

impl ArrowData {
    /// `batches` as Arrow record batches of one schema (see [`to_record_batches`]); `what`
    /// names them in errors (`the output of step "clean"`).
    pub(crate) fn from_batches(batches: &[Batch], what: &str) -> PyResult<ArrowData> {
        let (schema, batches) =
            to_record_batches(batches).map_err(|e| PyValueError::new_err(format!("{what}: {e}")))?;
        Ok(ArrowData { schema, batches })
    }
}

/// The record batches of a Python object of the Arrow PyCapsule protocol, read one at a
/// time as Weave batches. It holds no Python object: the stream's callbacks are the
/// producer's C functions (pyarrow's take the interpreter's lock themselves when they
/// call back into Python), so it may be read on any thread, with the lock released.
#[derive(Debug)]
pub(crate) struct BatchStream {
    source: Source,
}

#[derive(Debug)]
enum Source {
    Stream(RecordBatchStreamReader),
    /// A single record batch, not yet read.
    One(Option<RecordBatch>),
}

impl BatchStream {
    /// Imports `obj`'s data: its `__arrow_c_stream__` if it has one, else its
    /// `__arrow_c_array__` (a struct array: a record batch). `what` names it in errors.
    pub(crate) fn import(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<BatchStream> {
        if obj.hasattr("__arrow_c_stream__")? {
            let capsule = obj.call_method0("__arrow_c_stream__")?;
            let capsule = capsule.cast::<PyCapsule>().map_err(|_| not_a_capsule(what, "__arrow_c_stream__"))?;
            let ptr = capsule.pointer_checked(Some(STREAM))?;
            // SAFETY: the protocol makes a capsule named `arrow_array_stream` hold an
            // `ArrowArrayStream`, which is `FFI_ArrowArrayStream`'s layout. `from_raw` moves
            // it out and leaves a released stream behind, which the capsule's destructor
            // leaves alone (the protocol's rule for a consumed stream).
            let stream = unsafe { FFI_ArrowArrayStream::from_raw(ptr.as_ptr().cast()) };
            let reader = RecordBatchStreamReader::try_new(stream)
                .map_err(|e| PyValueError::new_err(format!("{what}: cannot read its Arrow stream: {e}")))?;
            return Ok(BatchStream { source: Source::Stream(reader) });
        }
        if obj.hasattr("__arrow_c_array__")? {
            let pair = obj.call_method0("__arrow_c_array__")?;
            let (schema, array): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair.extract()?;
            let schema = schema.cast::<PyCapsule>().map_err(|_| not_a_capsule(what, "__arrow_c_array__"))?;
            let array = array.cast::<PyCapsule>().map_err(|_| not_a_capsule(what, "__arrow_c_array__"))?;
            let schema_ptr = schema.pointer_checked(Some(SCHEMA))?;
            let array_ptr = array.pointer_checked(Some(ARRAY))?;
            // SAFETY: the protocol makes these capsules hold an `ArrowSchema` and an
            // `ArrowArray`. The schema is only borrowed (its capsule still owns and
            // releases it); the array is moved out, leaving a released one behind, which
            // its capsule's destructor leaves alone.
            let data = unsafe {
                let schema: &FFI_ArrowSchema = &*schema_ptr.as_ptr().cast::<FFI_ArrowSchema>();
                let array = FFI_ArrowArray::from_raw(array_ptr.as_ptr().cast());
                arrow_array::ffi::from_ffi(array, schema)
            }
            .map_err(|e| PyValueError::new_err(format!("{what}: cannot read its Arrow array: {e}")))?;
            let array = arrow_array::make_array(data);
            let Some(columns) = array.as_any().downcast_ref::<StructArray>() else {
                return Err(PyTypeError::new_err(format!(
                    "{what}: its Arrow array is a {}, not a table's columns (a struct array)",
                    array.data_type()
                )));
            };
            return Ok(BatchStream { source: Source::One(Some(RecordBatch::from(columns))) });
        }
        let kind = obj.get_type().name().map_or_else(|_| "?".to_owned(), |n| n.to_string());
        Err(PyTypeError::new_err(format!(
            "{what}: a {kind} is not a table (it has no __arrow_c_stream__ or __arrow_c_array__ method)"
        )))
    }

    /// Every batch left, read and converted in order; the first error stops it. The error
    /// is a sentence to prefix with what the data is.
    pub(crate) fn read_all(self) -> Result<Vec<Batch>, String> {
        self.collect()
    }
}

impl Iterator for BatchStream {
    type Item = Result<Batch, String>;

    fn next(&mut self) -> Option<Self::Item> {
        let rb = match &mut self.source {
            Source::Stream(r) => match r.next()? {
                Ok(rb) => rb,
                Err(e) => return Some(Err(format!("cannot read its Arrow stream: {e}"))),
            },
            Source::One(one) => one.take()?,
        };
        Some(from_record_batch(&rb).map_err(|e| e.to_string()))
    }
}

/// The error for a protocol method that returned something other than a capsule.
fn not_a_capsule(what: &str, method: &str) -> PyErr {
    PyTypeError::new_err(format!("{what}: its {method}() did not return a PyCapsule"))
}

/// An Arrow error as Python's `ValueError`.
fn arrow_error(e: ArrowError) -> PyErr {
    PyValueError::new_err(e.to_string())
}
