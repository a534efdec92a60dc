//! Between Arrow arrays, which the Parquet reader and writer speak, and Weave's columns:
//! [`to_record_batch`] and [`from_record_batch`] convert a whole [`Batch`] each way, with
//! the code the Parquet loader and exporter use, so that a front end handing batches to
//! Arrow (the Python bindings) gets what a Parquet file would hold.
//!
//! ```
//! use weave_core::{Batch, Record, Value};
//! let record = Record::new().with("text", "hi").with("n", 1i64).with("tags", Value::List(vec!["a".into()]));
//! let batch = Batch::from_records(&[record]);
//! let rb = weave_io::arrow::to_record_batch(&batch).unwrap();
//! assert_eq!(rb.num_rows(), 1);
//! let back = weave_io::arrow::from_record_batch(&rb).unwrap();
//! assert_eq!(back.to_records(), batch.to_records());
//! ```
//!
//! Reading: booleans, integers (unsigned 64-bit ones too) and floats become typed
//! columns, strings string columns, timestamps, dates, decimals (to 38 digits) and binary
//! data values of those types, times and wider decimals strings in ISO 8601 or decimal
//! notation, and lists, structs and maps [`Value`]s in a [`Column::Any`], a struct's fields
//! in the file's order, a map's entries as a key-value [`Map`].
//! Writing: each field's Arrow type is set by the first batch ([`FileSchema`]) and widened
//! by later ones ([`FileSchema::widened`]); a struct's
//! fields come in the order its records first have them; a field whose values do not fit
//! one Arrow type exactly (ints and strings mixed, ints a float cannot hold next to floats,
//! integers past 64 bits) is written as JSON text and marked so that reading it back gives
//! the values again.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use indexmap::IndexMap;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Date32Type, Date64Type, Decimal32Type, Decimal64Type, Decimal128Type, Decimal256Type, Float16Type, Float32Type,
    Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, Time32MillisecondType, Time32SecondType,
    Time64MicrosecondType, Time64NanosecondType, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow_array::{
    Array, ArrayRef, ArrowPrimitiveType, BooleanArray, Float64Array, Int64Array, ListArray, OffsetSizeTrait,
    RecordBatch, RecordBatchOptions, StringArray, StructArray, UInt64Array,
};
use arrow_buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::{DataType as ArrowType, Field as ArrowField, Fields, Schema as ArrowSchema, TimeUnit};
use weave_core::{
    Batch, Column, Decimal, Field, Map, PrimitiveColumn, Schema, StrColumn, TimeUnit as WeaveUnit, Timestamp, Value,
    ValueRef,
};

use crate::json::{NonFinite, non_finite};

/// The Arrow crates this module speaks, so that a caller uses the same versions.
pub use {arrow_array, arrow_schema};

/// The field metadata key marking a string column that holds JSON text written for a
/// field of mixed types.
pub(crate) const JSON_MARK: &str = "weave:json";

/// Why a batch could not become an Arrow record batch, or the other way round.
#[derive(Debug, thiserror::Error)]
pub enum ConversionError {
    /// The batch holds what an Arrow record batch cannot: records without fields (rows
    /// with no column), or NaN or an infinite float in a field of mixed types, which Arrow
    /// gets as JSON text (JSON has no such numbers).
    #[error("the batch cannot be an Arrow record batch: {0}")]
    ToArrow(String),
    /// The record batch holds what Weave does not read: a column of an Arrow type it has
    /// no column for (intervals, durations, unions...), or one name twice.
    #[error("the Arrow record batch cannot be a batch: {0}")]
    FromArrow(String),
}

/// `batch` as an Arrow record batch, typed as `export_parquet` types a file by its first
/// batch: booleans, 64-bit ints, unsigned ints and floats, strings, nulls as Arrow's
/// types; lists and maps as lists and structs (a struct's fields in the order the records
/// first have them); a field whose values fit no one Arrow type exactly (ints and strings
/// mixed, integers past 64 bits) as JSON text, its field marked (metadata `weave:json`) so
/// that [`from_record_batch`] gives the values back.
pub fn to_record_batch(batch: &Batch) -> Result<RecordBatch, ConversionError> {
    let mut nulled = NonFinite::default();
    let rb = FileSchema::of(batch).record_batch(batch, &mut nulled).map_err(ConversionError::ToArrow)?;
    refuse_non_finite(&nulled)?;
    Ok(rb)
}

/// `batches` as Arrow record batches of one schema, as a table or a stream needs them
/// (a Python caller's `pyarrow.Table`), with their Arrow schema (the one of no fields when
/// there are no batches). Each field is typed as [`to_record_batch`] types it, over the
/// values of every batch rather than the first: a field null in one batch and strings in
/// another is a string field, and a field a batch lacks is null in its rows. Fields come
/// in the order the batches first have them.
pub fn to_record_batches(batches: &[Batch]) -> Result<(Arc<ArrowSchema>, Vec<RecordBatch>), ConversionError> {
    let schema = FileSchema::of_all(batches);
    let mut nulled = NonFinite::default();
    let out = batches
        .iter()
        .map(|b| schema.record_batch(b, &mut nulled))
        .collect::<Result<Vec<_>, _>>()
        .map_err(ConversionError::ToArrow)?;
    refuse_non_finite(&nulled)?;
    Ok((schema.arrow(), out))
}

/// The Parquet exporter writes NaN and infinities in a JSON text field as nulls and counts
/// them; a conversion has no one to tell, so it refuses rather than change a value in
/// silence.
fn refuse_non_finite(nulled: &NonFinite) -> Result<(), ConversionError> {
    match nulled.first_field() {
        Some(field) => Err(ConversionError::ToArrow(format!(
            "field `{field}` mixes types and holds NaN or an infinite float, which its JSON text cannot hold"
        ))),
        None => Ok(()),
    }
}

/// An Arrow record batch as a batch, read as `load_parquet` reads a file: booleans,
/// integers and floats as typed columns (unsigned 64-bit ones too), strings (and binary
/// data that is UTF-8) as strings, dates, times, timestamps and decimals as strings in ISO
/// 8601 or decimal notation, lists, structs and maps as values; a field marked as JSON
/// text (by [`to_record_batch`]) as the values it holds.
pub fn from_record_batch(rb: &RecordBatch) -> Result<Batch, ConversionError> {
    batch_from_arrow(rb).map_err(ConversionError::FromArrow)
}

// ---------------------------------------------------------------------------------------
// Arrow to Weave
// ---------------------------------------------------------------------------------------

/// An Arrow record batch as a batch; messages say which column could not be read.
pub(crate) fn batch_from_arrow(rb: &RecordBatch) -> Result<Batch, String> {
    let mut fields = Vec::with_capacity(rb.num_columns());
    let mut columns = Vec::with_capacity(rb.num_columns());
    let schema = rb.schema();
    // A set, not a scan of the names so far, so that a file of many columns reads in
    // linear time.
    let mut seen = std::collections::HashSet::with_capacity(rb.num_columns());
    for (f, array) in schema.fields().iter().zip(rb.columns()) {
        if !seen.insert(f.name().as_str()) {
            return Err(format!("the column `{}` appears twice", f.name()));
        }
        let mut column = column_from_arrow(array.as_ref()).map_err(|e| format!("column `{}`: {e}", f.name()))?;
        if f.metadata().get(JSON_MARK).is_some_and(|v| v == "true") {
            column = decode_json(&column).map_err(|e| format!("column `{}`: {e}", f.name()))?;
        }
        fields.push(Field::new(f.name().clone(), column.data_type()));
        columns.push(Arc::new(column));
    }
    if fields.is_empty() {
        // Rows without columns (a file of no columns, which a Parquet file's row groups
        // still count): records without fields, as many as there are rows.
        let mut b = weave_core::BatchBuilder::new();
        for _ in 0..rb.num_rows() {
            b.push_row(std::iter::empty());
        }
        return Ok(b.finish());
    }
    Batch::new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())
}

/// A string column of JSON texts as the values they hold, typed as loaders type them.
fn decode_json(column: &Column) -> Result<Column, String> {
    let Column::Str(c) = column else { return Ok(column.clone()) };
    let mut out = Column::Null(0);
    for (i, text) in c.iter().enumerate() {
        match text {
            None => out.push(ValueRef::Null),
            Some(t) => {
                let v = Value::from_json(t).map_err(|e| format!("row {i} is marked as JSON but is not: {e}"))?;
                out.push(v.as_ref());
            }
        }
    }
    Ok(out)
}

/// One Arrow array as a column.
pub(crate) fn column_from_arrow(array: &dyn Array) -> Result<Column, String> {
    let n = array.len();
    Ok(match array.data_type() {
        ArrowType::Null => Column::Null(n),
        ArrowType::Boolean => {
            let a = array.as_boolean();
            Column::Bool(primitive(array, a.values().iter().collect()))
        }
        ArrowType::Int8 => ints::<Int8Type>(array),
        ArrowType::Int16 => ints::<Int16Type>(array),
        ArrowType::Int32 => ints::<Int32Type>(array),
        ArrowType::Int64 => ints::<Int64Type>(array),
        ArrowType::UInt8 => ints::<UInt8Type>(array),
        ArrowType::UInt16 => ints::<UInt16Type>(array),
        ArrowType::UInt32 => ints::<UInt32Type>(array),
        ArrowType::UInt64 => Column::UInt(primitive(array, array.as_primitive::<UInt64Type>().values().to_vec())),
        ArrowType::Float16 => {
            let a = array.as_primitive::<Float16Type>();
            Column::Float(primitive(array, a.values().iter().map(|v| v.to_f64()).collect()))
        }
        ArrowType::Float32 => {
            let a = array.as_primitive::<Float32Type>();
            Column::Float(primitive(array, a.values().iter().map(|&v| f64::from(v)).collect()))
        }
        ArrowType::Float64 => Column::Float(primitive(array, array.as_primitive::<Float64Type>().values().to_vec())),
        ArrowType::Utf8 => strings(n, array.as_string::<i32>().value_data().len(), array.as_string::<i32>().iter()),
        ArrowType::LargeUtf8 => {
            strings(n, array.as_string::<i64>().value_data().len(), array.as_string::<i64>().iter())
        }
        ArrowType::Utf8View => strings(n, 0, array.as_string_view().iter()),
        ArrowType::Binary => binary(array.as_binary::<i32>().iter()),
        ArrowType::LargeBinary => binary(array.as_binary::<i64>().iter()),
        ArrowType::BinaryView => binary(array.as_binary_view().iter()),
        ArrowType::FixedSizeBinary(_) => binary(array.as_fixed_size_binary().iter()),
        ArrowType::Date32 => {
            let a = array.as_primitive::<Date32Type>();
            values(array, |i| Value::Date(a.value(i)))
        }
        ArrowType::Date64 => {
            // Milliseconds since the epoch, which Arrow requires to be whole days.
            let a = array.as_primitive::<Date64Type>();
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                out.push(if a.is_null(i) {
                    Value::Null
                } else {
                    let days = a.value(i).div_euclid(86_400_000);
                    Value::Date(i32::try_from(days).map_err(|_| format!("row {i}: a date out of range"))?)
                });
            }
            Column::Any(out)
        }
        ArrowType::Time32(TimeUnit::Second) => {
            let a = array.as_primitive::<Time32SecondType>();
            formatted(array, |i, buf| write_opt(buf, a.value_as_time(i), "time"))?
        }
        ArrowType::Time32(TimeUnit::Millisecond) => {
            let a = array.as_primitive::<Time32MillisecondType>();
            formatted(array, |i, buf| write_opt(buf, a.value_as_time(i), "time"))?
        }
        ArrowType::Time64(TimeUnit::Microsecond) => {
            let a = array.as_primitive::<Time64MicrosecondType>();
            formatted(array, |i, buf| write_opt(buf, a.value_as_time(i), "time"))?
        }
        ArrowType::Time64(TimeUnit::Nanosecond) => {
            let a = array.as_primitive::<Time64NanosecondType>();
            formatted(array, |i, buf| write_opt(buf, a.value_as_time(i), "time"))?
        }
        ArrowType::Timestamp(unit, tz) => {
            // With a time zone, values are instants in UTC; without, wall-clock times. The
            // values of a column share its zone.
            let zone = tz.as_ref().map(|z| Arc::new(z.to_string()));
            let unit = weave_unit(*unit);
            macro_rules! timestamps {
                ($t:ty) => {{
                    let a = array.as_primitive::<$t>();
                    values(array, |i| Value::Timestamp(Timestamp::new(a.value(i), unit, zone.clone())))
                }};
            }
            match unit {
                WeaveUnit::Second => timestamps!(TimestampSecondType),
                WeaveUnit::Millisecond => timestamps!(TimestampMillisecondType),
                WeaveUnit::Microsecond => timestamps!(TimestampMicrosecondType),
                WeaveUnit::Nanosecond => timestamps!(TimestampNanosecondType),
            }
        }
        ArrowType::Decimal32(p, s) => decimals::<Decimal32Type>(array, *p, *s)?,
        ArrowType::Decimal64(p, s) => decimals::<Decimal64Type>(array, *p, *s)?,
        ArrowType::Decimal128(p, s) => decimals::<Decimal128Type>(array, *p, *s)?,
        // Past 38 digits an i128 cannot hold every value: their decimal text.
        ArrowType::Decimal256(_, _) => decimal_texts::<Decimal256Type>(array)?,
        ArrowType::Dictionary(_, _) => {
            let d = array.as_any_dictionary();
            let plain = arrow_select::take::take(d.values().as_ref(), d.keys(), None).map_err(|e| e.to_string())?;
            column_from_arrow(plain.as_ref())?
        }
        ArrowType::List(_)
        | ArrowType::LargeList(_)
        | ArrowType::FixedSizeList(_, _)
        | ArrowType::Struct(_)
        | ArrowType::Map(_, _) => Column::Any(values_from_arrow(array)?),
        other => return Err(unsupported(other)),
    })
}

fn unsupported(t: &ArrowType) -> String {
    format!("values of type {t} are not read by Weave; leave the column out with `columns = [...]`")
}

/// A primitive column of `values`, with the array's nulls.
fn primitive<T: Copy + Default>(array: &dyn Array, values: Vec<T>) -> PrimitiveColumn<T> {
    if array.null_count() == 0 {
        return PrimitiveColumn::from_values(values);
    }
    let mut c = PrimitiveColumn::new();
    for (i, v) in values.into_iter().enumerate() {
        if array.is_null(i) {
            c.push_null();
        } else {
            c.push(v);
        }
    }
    c
}

fn ints<T: ArrowPrimitiveType>(array: &dyn Array) -> Column
where
    T::Native: Into<i64>,
{
    let a = array.as_primitive::<T>();
    Column::Int(primitive(array, a.values().iter().map(|&v| v.into()).collect()))
}

fn strings<'a>(n: usize, bytes: usize, rows: impl Iterator<Item = Option<&'a str>>) -> Column {
    let mut c = StrColumn::with_capacity(n, bytes);
    for s in rows {
        match s {
            Some(s) => c.push(s),
            None => c.push_null(),
        }
    }
    Column::Str(c)
}

/// Binary values as bytes ([`Value::Binary`]); `fields`'s `cast = { f = "string" }` reads
/// bytes that are UTF-8 text as text.
fn binary<'a>(rows: impl Iterator<Item = Option<&'a [u8]>>) -> Column {
    Column::Any(rows.map(|b| b.map_or(Value::Null, |b| Value::Binary(b.to_vec()))).collect())
}

/// A column of each valid row's value made by `f`, nulls where the array has them.
fn values(array: &dyn Array, f: impl Fn(usize) -> Value) -> Column {
    Column::Any((0..array.len()).map(|i| if array.is_null(i) { Value::Null } else { f(i) }).collect())
}

fn weave_unit(u: TimeUnit) -> WeaveUnit {
    match u {
        TimeUnit::Second => WeaveUnit::Second,
        TimeUnit::Millisecond => WeaveUnit::Millisecond,
        TimeUnit::Microsecond => WeaveUnit::Microsecond,
        TimeUnit::Nanosecond => WeaveUnit::Nanosecond,
    }
}

fn arrow_unit(u: WeaveUnit) -> TimeUnit {
    match u {
        WeaveUnit::Second => TimeUnit::Second,
        WeaveUnit::Millisecond => TimeUnit::Millisecond,
        WeaveUnit::Microsecond => TimeUnit::Microsecond,
        WeaveUnit::Nanosecond => TimeUnit::Nanosecond,
    }
}

/// A string column of each row written by `f` into a buffer reused from row to row.
fn formatted(array: &dyn Array, mut f: impl FnMut(usize, &mut String) -> Result<(), String>) -> Result<Column, String> {
    let mut c = StrColumn::with_capacity(array.len(), array.len() * 20);
    let mut buf = String::new();
    for i in 0..array.len() {
        if array.is_null(i) {
            c.push_null();
            continue;
        }
        buf.clear();
        f(i, &mut buf)?;
        c.push(&buf);
    }
    Ok(Column::Str(c))
}

fn write_opt(buf: &mut String, v: Option<impl std::fmt::Display>, what: &str) -> Result<(), String> {
    let v = v.ok_or_else(|| format!("a {what} out of range"))?;
    let _ = write!(buf, "{v}");
    Ok(())
}

/// Decimals of up to 38 digits as [`Value::Decimal`]s.
fn decimals<T: arrow_array::types::DecimalType>(array: &dyn Array, precision: u8, scale: i8) -> Result<Column, String>
where
    T::Native: Into<i128>,
{
    let a = array.as_primitive::<T>();
    let mut out = Vec::with_capacity(a.len());
    for i in 0..a.len() {
        out.push(if a.is_null(i) {
            Value::Null
        } else {
            Value::Decimal(Decimal::new(a.value(i).into(), precision, scale).map_err(|e| format!("row {i}: {e}"))?)
        });
    }
    Ok(Column::Any(out))
}

fn decimal_texts<T: arrow_array::types::DecimalType>(array: &dyn Array) -> Result<Column, String> {
    let a = array.as_primitive::<T>();
    formatted(array, |i, buf| {
        buf.push_str(&a.value_as_string(i));
        Ok(())
    })
}

/// Every row of an array as a value: the general, slower path, for nested data.
fn values_from_arrow(array: &dyn Array) -> Result<Vec<Value>, String> {
    let valid = |i: usize| !array.is_null(i);
    Ok(match array.data_type() {
        ArrowType::List(_) => lists(array.as_list::<i32>(), &valid)?,
        ArrowType::LargeList(_) => lists(array.as_list::<i64>(), &valid)?,
        ArrowType::FixedSizeList(_, size) => {
            let a = array.as_fixed_size_list();
            let size = usize::try_from(*size).map_err(|e| e.to_string())?;
            let mut items = values_from_arrow(a.values().as_ref())?;
            (0..a.len())
                .map(|i| {
                    let start = a.value_offset_at(i);
                    if valid(i) { Value::List(take_values(&mut items, start, start + size)) } else { Value::Null }
                })
                .collect()
        }
        ArrowType::Struct(fields) => {
            let a = array.as_struct();
            let mut children =
                a.columns().iter().map(|c| values_from_arrow(c.as_ref())).collect::<Result<Vec<_>, _>>()?;
            (0..a.len())
                .map(|i| {
                    if !valid(i) {
                        return Value::Null;
                    }
                    let m: Map = fields
                        .iter()
                        .zip(children.iter_mut())
                        .map(|(f, c)| (f.name().clone(), std::mem::take(&mut c[i])))
                        .collect();
                    Value::Map(m)
                })
                .collect()
        }
        ArrowType::Map(_, _) => {
            let a = array.as_map();
            let keys = values_from_arrow(a.keys().as_ref())?;
            let mut values = values_from_arrow(a.values().as_ref())?;
            let offsets = a.value_offsets();
            (0..a.len())
                .map(|i| {
                    if !valid(i) {
                        return Value::Null;
                    }
                    let (start, end) = (offsets[i] as usize, offsets[i + 1] as usize);
                    let m: Map = (start..end)
                        .map(|j| {
                            let k = match &keys[j] {
                                Value::Str(s) => s.clone(),
                                other => other.to_string(),
                            };
                            (k, std::mem::take(&mut values[j]))
                        })
                        .collect();
                    let mut m = m;
                    m.set_key_value(true);
                    Value::Map(m)
                })
                .collect()
        }
        _ => {
            let c = column_from_arrow(array)?;
            match c {
                Column::Any(v) => v,
                c => (0..c.len()).map(|i| c.get(i).to_owned()).collect(),
            }
        }
    })
}

fn lists<O: OffsetSizeTrait>(
    a: &arrow_array::GenericListArray<O>,
    valid: &dyn Fn(usize) -> bool,
) -> Result<Vec<Value>, String> {
    let mut items = values_from_arrow(a.values().as_ref())?;
    let offsets = a.value_offsets();
    Ok((0..a.len())
        .map(|i| {
            if valid(i) {
                Value::List(take_values(&mut items, offsets[i].as_usize(), offsets[i + 1].as_usize()))
            } else {
                Value::Null
            }
        })
        .collect())
}

/// Moves `items[start..end]` out (leaving nulls), clamped to the items there are.
fn take_values(items: &mut [Value], start: usize, end: usize) -> Vec<Value> {
    let end = end.min(items.len());
    let start = start.min(end);
    items[start..end].iter_mut().map(std::mem::take).collect()
}

// ---------------------------------------------------------------------------------------
// Weave to Arrow
// ---------------------------------------------------------------------------------------

/// Number types a field's values fit exactly, as a set of these bits.
const I64: u8 = 1;
const U64: u8 = 2;
const F64: u8 = 4;

/// The number types that hold `v` exactly (0 for an integer past 64 bits, which none
/// holds): an int is an `i64`, a `u64` when not negative, a float when one holds it.
fn number_fits(v: ValueRef<'_>) -> u8 {
    match v {
        ValueRef::Int(i) => {
            I64 | if i >= 0 { U64 } else { 0 } | if float_of_int(i128::from(i)).is_some() { F64 } else { 0 }
        }
        ValueRef::UInt(u) => U64 | if float_of_int(i128::from(u)).is_some() { F64 } else { 0 },
        ValueRef::Float(_) => F64,
        _ => 0,
    }
}

/// `i` as a float, if one holds it exactly.
fn float_of_int(i: i128) -> Option<f64> {
    let f = i as f64;
    // A float of at least 2^127 would saturate the cast back; no i128 is that large.
    (f.abs() < 1.7e38 && f as i128 == i).then_some(f)
}

/// The type a field has in the file: the Arrow types Weave writes.
#[derive(Debug, Clone, PartialEq)]
enum Ty {
    Null,
    Bool,
    /// Numbers: the set of number types ([`I64`], [`U64`], [`F64`]) that holds every
    /// value exactly, never empty; the file's type is the first of int, uint, float in it.
    Num(u8),
    Str,
    List(Box<Ty>),
    /// Fields in the order the records first have them.
    Struct(IndexMap<String, Ty>),
    /// Values of mixed types, written as JSON text.
    Json,
    /// Timestamps of one unit and zone.
    Timestamp(WeaveUnit, Option<Arc<String>>),
    /// Dates (Arrow's `Date32`).
    Date,
    /// Decimals of this precision and scale (Arrow's `Decimal128`).
    Decimal(u8, i8),
    /// Bytes.
    Binary,
    /// Key-value maps (string keys) of values of this type.
    Map(Box<Ty>),
}

impl Ty {
    fn of_value(v: ValueRef<'_>) -> Ty {
        match v {
            ValueRef::Null => Ty::Null,
            ValueRef::Bool(_) => Ty::Bool,
            ValueRef::Int(_) | ValueRef::UInt(_) | ValueRef::Float(_) => Ty::Num(number_fits(v)),
            ValueRef::BigInt(_) => Ty::Json,
            ValueRef::Str(_) => Ty::Str,
            ValueRef::List(items) => {
                Ty::List(Box::new(items.iter().fold(Ty::Null, |t, v| t.unify(Ty::of_value(v.as_ref())))))
            }
            ValueRef::Map(m) if m.is_key_value() => {
                Ty::Map(Box::new(m.values().fold(Ty::Null, |t, v| t.unify(Ty::of_value(v.as_ref())))))
            }
            ValueRef::Map(m) => Ty::Struct(m.iter().map(|(k, v)| (k.clone(), Ty::of_value(v.as_ref()))).collect()),
            ValueRef::Timestamp(t) => Ty::Timestamp(t.unit(), t.zone_arc().cloned()),
            ValueRef::Date(_) => Ty::Date,
            ValueRef::Decimal(d) => Ty::Decimal(d.precision(), d.scale()),
            ValueRef::Binary(_) => Ty::Binary,
        }
    }

    /// The type that holds values of both types exactly, or JSON when none does.
    fn unify(self, other: Ty) -> Ty {
        match (self, other) {
            (Ty::Num(a), Ty::Num(b)) if a & b != 0 => Ty::Num(a & b),
            (a, b) if a == b => a,
            (Ty::Null, t) | (t, Ty::Null) => t,
            (Ty::List(a), Ty::List(b)) => Ty::List(Box::new(a.unify(*b))),
            (Ty::Map(a), Ty::Map(b)) => Ty::Map(Box::new(a.unify(*b))),
            // Decimals of two scales: the larger scale, and digits enough for the larger
            // whole part, when that is within 38 digits.
            (Ty::Decimal(p1, s1), Ty::Decimal(p2, s2)) => {
                let scale = s1.max(s2);
                let whole = (i16::from(p1) - i16::from(s1)).max(i16::from(p2) - i16::from(s2));
                match u8::try_from(whole + i16::from(scale)) {
                    Ok(p) if (1..=weave_core::MAX_DECIMAL_PRECISION).contains(&p) => Ty::Decimal(p, scale),
                    _ => Ty::Json,
                }
            }
            (Ty::Struct(mut a), Ty::Struct(b)) => {
                // The first record's keys keep their places; new keys go after them.
                for (k, t) in b {
                    let u = match a.get_mut(&k) {
                        Some(old) => std::mem::replace(old, Ty::Null).unify(t),
                        None => t,
                    };
                    a.insert(k, u);
                }
                Ty::Struct(a)
            }
            _ => Ty::Json,
        }
    }

    /// The type a file of `self` values widens to so that it holds `other` values too: a
    /// null type takes the other, ints become floats (or unsigned ints), a struct gains
    /// the keys it lacked, and lists and maps widen their items. `Err` says where no type
    /// holds both without turning typed values into JSON text. Values already written are
    /// checked as they are rewritten (an int a float cannot hold exactly is an error then).
    fn widen(&self, other: &Ty) -> Result<Ty, String> {
        let incompatible = || {
            format!(
                "{} in the rows written so far, {} in this batch, and no Parquet type holds both",
                self.describe(),
                other.describe()
            )
        };
        Ok(match (self, other) {
            (a, b) if a == b => a.clone(),
            (Ty::Null, t) | (t, Ty::Null) => t.clone(),
            // Anything can be written as JSON text.
            (Ty::Json, _) => Ty::Json,
            (Ty::Num(a), Ty::Num(b)) if a & b != 0 => Ty::Num(a & b),
            (Ty::Num(a), Ty::Num(b)) if (a | b) & F64 != 0 => Ty::Num(F64),
            (Ty::Num(_), Ty::Num(_)) => Ty::Num(U64),
            (Ty::List(a), Ty::List(b)) => Ty::List(Box::new(a.widen(b).map_err(|e| format!("in a list: {e}"))?)),
            (Ty::Map(a), Ty::Map(b)) => Ty::Map(Box::new(a.widen(b).map_err(|e| format!("in a map's values: {e}"))?)),
            (Ty::Struct(a), Ty::Struct(b)) => {
                let mut out = a.clone();
                for (k, t) in b {
                    let w = match a.get(k) {
                        Some(old) => old.widen(t).map_err(|e| format!("in key `{k}`: {e}"))?,
                        None => t.clone(),
                    };
                    out.insert(k.clone(), w);
                }
                Ty::Struct(out)
            }
            (Ty::Decimal(..), Ty::Decimal(..)) => match self.clone().unify(other.clone()) {
                Ty::Json => return Err(incompatible()),
                t => t,
            },
            _ => return Err(incompatible()),
        })
    }

    /// The type a declared type (`export_parquet`'s `schema`) names.
    fn of_cast(t: &weave_core::cast::CastType) -> Ty {
        use weave_core::cast::CastType;
        match t {
            CastType::Str => Ty::Str,
            CastType::Int => Ty::Num(I64),
            CastType::Float => Ty::Num(F64),
            CastType::Bool => Ty::Bool,
            CastType::Json => Ty::Json,
            CastType::Date { .. } => Ty::Date,
            CastType::Timestamp { unit, zone, .. } => Ty::Timestamp(*unit, zone.as_ref().map(|z| Arc::new(z.clone()))),
            CastType::Decimal { precision, scale } => Ty::Decimal(*precision, *scale),
        }
    }

    /// Whether Parquet can hold this type as it is: no JSON inside, no struct without fields.
    fn is_writable(&self) -> bool {
        match self {
            Ty::Json => false,
            Ty::List(t) | Ty::Map(t) => t.is_writable(),
            Ty::Struct(fields) => !fields.is_empty() && fields.values().all(Ty::is_writable),
            _ => true,
        }
    }

    fn arrow(&self) -> ArrowType {
        match self {
            Ty::Null => ArrowType::Null,
            Ty::Bool => ArrowType::Boolean,
            Ty::Num(m) if m & I64 != 0 => ArrowType::Int64,
            Ty::Num(m) if m & U64 != 0 => ArrowType::UInt64,
            Ty::Num(_) => ArrowType::Float64,
            Ty::Str | Ty::Json => ArrowType::Utf8,
            Ty::List(t) => ArrowType::List(Arc::new(ArrowField::new_list_field(t.arrow(), true))),
            Ty::Struct(fields) => ArrowType::Struct(struct_fields(fields)),
            Ty::Timestamp(unit, zone) => {
                ArrowType::Timestamp(arrow_unit(*unit), zone.as_ref().map(|z| z.as_str().into()))
            }
            Ty::Date => ArrowType::Date32,
            Ty::Decimal(p, s) => ArrowType::Decimal128(*p, *s),
            Ty::Binary => ArrowType::Binary,
            Ty::Map(t) => ArrowType::Map(map_entries(t), false),
        }
    }

    fn describe(&self) -> String {
        match self {
            Ty::Null => "null".into(),
            Ty::Bool => "bool".into(),
            Ty::Num(m) if m & I64 != 0 => "int".into(),
            Ty::Num(m) if m & U64 != 0 => "uint".into(),
            Ty::Num(_) => "float".into(),
            Ty::Str => "string".into(),
            Ty::Json => "JSON text".into(),
            Ty::List(t) => format!("list of {}", t.describe()),
            Ty::Map(t) => format!("map of {}", t.describe()),
            Ty::Timestamp(unit, None) => format!("timestamp({})", unit.name()),
            Ty::Timestamp(unit, Some(z)) => format!("timestamp({}, {z})", unit.name()),
            Ty::Date => "date".into(),
            Ty::Decimal(p, s) => format!("decimal({p}, {s})"),
            Ty::Binary => "binary".into(),
            Ty::Struct(fields) => {
                let f: Vec<String> = fields.iter().map(|(k, t)| format!("{k}: {}", t.describe())).collect();
                format!("struct {{{}}}", f.join(", "))
            }
        }
    }
}

/// The entries field of a map of string keys to values of type `t`, named as Arrow C++
/// (pyarrow) names them.
fn map_entries(t: &Ty) -> Arc<ArrowField> {
    let entries =
        Fields::from(vec![ArrowField::new("key", ArrowType::Utf8, false), ArrowField::new("value", t.arrow(), true)]);
    Arc::new(ArrowField::new("entries", ArrowType::Struct(entries), false))
}

fn struct_fields(fields: &IndexMap<String, Ty>) -> Fields {
    fields.iter().map(|(k, t)| ArrowField::new(k.clone(), t.arrow(), true)).collect()
}

/// The schema of a Parquet file being written: each field's type, set by the first batch
/// and widened by later ones.
#[derive(Debug)]
pub(crate) struct FileSchema {
    fields: Vec<(String, Ty)>,
    arrow: Arc<ArrowSchema>,
}

impl FileSchema {
    /// The schema that holds the values of every one of `batches`: each field's types
    /// unified over the batches, in the order the batches first have the fields.
    fn of_all(batches: &[Batch]) -> FileSchema {
        let mut fields: IndexMap<String, Ty> = IndexMap::new();
        for batch in batches {
            for (name, ty) in FileSchema::of(batch).fields {
                let unified = match fields.get_mut(&name) {
                    Some(old) => std::mem::replace(old, Ty::Null).unify(ty),
                    None => ty,
                };
                fields.insert(name, unified);
            }
        }
        FileSchema::of_fields(fields.into_iter().collect())
    }

    /// The schema the first batch gives.
    pub(crate) fn of(batch: &Batch) -> FileSchema {
        let fields: Vec<(String, Ty)> = batch
            .schema()
            .fields()
            .iter()
            .zip(batch.columns())
            .map(|(f, c)| {
                let ty = match &**c {
                    Column::Null(_) => Ty::Null,
                    Column::Bool(_) => Ty::Bool,
                    Column::Int(_) => Ty::Num(I64),
                    Column::UInt(_) => Ty::Num(U64),
                    Column::Float(_) => Ty::Num(F64),
                    Column::Str(_) => Ty::Str,
                    other => {
                        let t = (0..other.len()).fold(Ty::Null, |t, i| t.unify(Ty::of_value(other.get(i))));
                        if t.is_writable() { t } else { Ty::Json }
                    }
                };
                (f.name.clone(), ty)
            })
            .collect();
        FileSchema::of_fields(fields)
    }

    /// The schema of these fields and types.
    fn of_fields(fields: Vec<(String, Ty)>) -> FileSchema {
        let arrow = ArrowSchema::new(
            fields
                .iter()
                .map(|(name, ty)| {
                    let f = ArrowField::new(name.clone(), ty.arrow(), true);
                    if *ty == Ty::Json {
                        f.with_metadata(BTreeMap::from([(JSON_MARK.to_owned(), "true".to_owned())]))
                    } else {
                        f
                    }
                })
                .collect::<Vec<_>>(),
        );
        FileSchema { fields, arrow: Arc::new(arrow) }
    }

    /// The schema the step's declared `schema` gives: its fields in that order.
    pub(crate) fn declared(declared: &weave_core::declared::DeclaredSchema) -> FileSchema {
        FileSchema::of_fields(declared.fields().iter().map(|f| (f.name.clone(), Ty::of_cast(&f.ty))).collect())
    }

    /// This schema widened to hold `batch` too ([`Ty::widen`], field by field; a field it
    /// lacks goes at the end), or the field and both types when no widening holds both.
    pub(crate) fn widened(&self, batch: &Batch) -> Result<FileSchema, String> {
        let mut fields: IndexMap<String, Ty> = self.fields.iter().cloned().collect();
        for (name, ty) in FileSchema::of(batch).fields {
            let w = match fields.get(&name) {
                Some(old) => old.widen(&ty).map_err(|e| format!("field `{name}`: {e}"))?,
                None => ty,
            };
            fields.insert(name, w);
        }
        Ok(FileSchema::of_fields(fields.into_iter().collect()))
    }

    /// The fields whose types differ from `other`'s, with both types, for messages.
    pub(crate) fn changes_from(&self, other: &FileSchema) -> Vec<String> {
        self.fields
            .iter()
            .filter_map(|(name, ty)| match other.fields.iter().find(|(n, _)| n == name) {
                Some((_, old)) if old.arrow() == ty.arrow() => None,
                Some((_, old)) => Some(format!("`{name}` from {} to {}", old.describe(), ty.describe())),
                None => Some(format!("`{name}` added as {}", ty.describe())),
            })
            .collect()
    }

    /// The Arrow schema.
    pub(crate) fn arrow(&self) -> Arc<ArrowSchema> {
        Arc::clone(&self.arrow)
    }

    /// A batch as an Arrow record batch of this schema: a field the batch lacks is null,
    /// numbers go into a field of another number type when it holds them exactly, anything
    /// goes into a JSON field (counting in `nulled` the floats JSON cannot hold); a field
    /// the schema lacks or a value of another type is an error that names the field.
    pub(crate) fn record_batch(&self, batch: &Batch, nulled: &mut NonFinite) -> Result<RecordBatch, String> {
        if self.fields.is_empty() && !batch.is_empty() {
            return Err("records with no fields cannot be written as Parquet rows".to_owned());
        }
        // The schema's names are unique, so the batch has a field the schema lacks exactly
        // when fewer of the schema's fields are found in it than it has; only then is the
        // field looked for (a scan per field was quadratic in a wide batch).
        let found = self.fields.iter().filter(|(f, _)| batch.schema().index_of(f).is_some()).count();
        if found < batch.schema().len()
            && let Some(extra) = batch.schema().names().find(|n| !self.fields.iter().any(|(f, _)| f == n))
        {
            let known: Vec<&str> = self.fields.iter().map(|(f, _)| f.as_str()).collect();
            return Err(format!(
                "field `{extra}` is not in the Parquet file's schema ({})",
                if known.is_empty() { "no fields".to_owned() } else { known.join(", ") }
            ));
        }
        let mut arrays = Vec::with_capacity(self.fields.len());
        for (name, ty) in &self.fields {
            let array = match batch.column(name) {
                None => arrow_array::new_null_array(&ty.arrow(), batch.len()),
                Some(c) => {
                    if *ty == Ty::Json {
                        nulled.add(name, (0..c.len()).map(|i| non_finite(c.get(i))).sum());
                    }
                    array_of(ty, c).map_err(|e| format!("field `{name}`: {e}"))?
                }
            };
            arrays.push(array);
        }
        let options = RecordBatchOptions::new().with_row_count(Some(batch.len()));
        RecordBatch::try_new_with_options(self.arrow(), arrays, &options).map_err(|e| e.to_string())
    }
}

fn conflict(ty: &Ty, found: &str) -> String {
    format!("{found} values, but the Parquet file's schema has {} there", ty.describe())
}

/// A number that the file's number type cannot hold exactly.
fn inexact(ty: &Ty, v: ValueRef<'_>) -> String {
    format!("{v} cannot be written exactly in the Parquet file's {} column", ty.describe())
}

fn nulls(len: usize, is_null: impl Fn(usize) -> bool) -> Option<NullBuffer> {
    let valid: Vec<bool> = (0..len).map(|i| !is_null(i)).collect();
    if valid.iter().all(|&v| v) { None } else { Some(NullBuffer::from(valid)) }
}

/// One column as an array of type `ty`.
fn array_of(ty: &Ty, column: &Column) -> Result<ArrayRef, String> {
    Ok(match (ty, column) {
        (_, Column::Null(n)) => arrow_array::new_null_array(&ty.arrow(), *n),
        (Ty::Bool, Column::Bool(c)) => Arc::new(BooleanArray::from_iter((0..c.len()).map(|i| c.get(i)))),
        (Ty::Num(_), Column::Int(c)) if ty.arrow() == ArrowType::Int64 => {
            Arc::new(Int64Array::new(ScalarBuffer::from(c.values().to_vec()), nulls(c.len(), |i| c.get(i).is_none())))
        }
        (Ty::Num(_), Column::UInt(c)) if ty.arrow() == ArrowType::UInt64 => {
            Arc::new(UInt64Array::new(ScalarBuffer::from(c.values().to_vec()), nulls(c.len(), |i| c.get(i).is_none())))
        }
        (Ty::Num(_), Column::Float(c)) if ty.arrow() == ArrowType::Float64 => {
            Arc::new(Float64Array::new(ScalarBuffer::from(c.values().to_vec()), nulls(c.len(), |i| c.get(i).is_none())))
        }
        (Ty::Str, Column::Str(c)) => Arc::new(string_array(c)?),
        (Ty::Json, _) => Arc::new(StringArray::from_iter((0..column.len()).map(|i| match column.get(i) {
            ValueRef::Null => None,
            v => Some(v.to_string()),
        }))),
        // Numbers into a field of another number type (ints into a float field), and
        // nested values: value by value, each checked.
        (
            Ty::Num(_)
            | Ty::List(_)
            | Ty::Struct(_)
            | Ty::Map(_)
            | Ty::Timestamp(..)
            | Ty::Date
            | Ty::Decimal(..)
            | Ty::Binary,
            Column::Int(_) | Column::UInt(_) | Column::Any(_),
        ) => {
            let refs: Vec<ValueRef<'_>> = (0..column.len()).map(|i| column.get(i)).collect();
            array_of_values(ty, &refs)?
        }
        (ty, c) => return Err(conflict(ty, &c.data_type().to_string())),
    })
}

/// A string column as an Arrow string array, its text copied row by row into one buffer
/// (already UTF-8, so unlike building the array from raw buffers, nothing is checked again).
fn string_array(c: &StrColumn) -> Result<StringArray, String> {
    if i32::try_from(c.data().len()).is_err() {
        return Err("more than 2 GiB of text in one batch; make the batches smaller".to_owned());
    }
    let mut b = arrow_array::builder::StringBuilder::with_capacity(c.len(), c.data().len());
    for v in c.iter() {
        b.append_option(v);
    }
    Ok(b.finish())
}

/// Values as an array of type `ty`, checking each against it.
fn array_of_values(ty: &Ty, values: &[ValueRef<'_>]) -> Result<ArrayRef, String> {
    let wrong = |v: &ValueRef<'_>| conflict(ty, v.type_name());
    // A number as the file's number type, exactly, or why not.
    let number = |v: &ValueRef<'_>, fits: u8| match v {
        ValueRef::Null => Ok(false),
        v if number_fits(*v) & fits != 0 => Ok(true),
        ValueRef::Int(_) | ValueRef::UInt(_) | ValueRef::BigInt(_) => Err(inexact(ty, *v)),
        v => Err(wrong(v)),
    };
    Ok(match ty {
        Ty::Null => match values.iter().find(|v| !v.is_null()) {
            Some(v) => return Err(wrong(v)),
            None => arrow_array::new_null_array(&ArrowType::Null, values.len()),
        },
        Ty::Bool => Arc::new(
            values
                .iter()
                .map(|v| match v {
                    ValueRef::Null => Ok(None),
                    ValueRef::Bool(b) => Ok(Some(*b)),
                    v => Err(wrong(v)),
                })
                .collect::<Result<BooleanArray, String>>()?,
        ),
        Ty::Num(_) => match ty.arrow() {
            ArrowType::Int64 => {
                Arc::new(values.iter().map(|v| Ok(if number(v, I64)? { v.as_int() } else { None })).collect::<Result<
                    Int64Array,
                    String,
                >>(
                )?)
            }
            ArrowType::UInt64 => Arc::new(
                values
                    .iter()
                    .map(|v| {
                        Ok(match (number(v, U64)?, v) {
                            (true, ValueRef::Int(i)) => u64::try_from(*i).ok(),
                            (true, ValueRef::UInt(u)) => Some(*u),
                            _ => None,
                        })
                    })
                    .collect::<Result<UInt64Array, String>>()?,
            ),
            _ => Arc::new(
                values
                    .iter()
                    .map(|v| {
                        Ok(match (number(v, F64)?, v) {
                            (true, ValueRef::Float(f)) => Some(*f),
                            (true, ValueRef::Int(i)) => float_of_int(i128::from(*i)),
                            (true, ValueRef::UInt(u)) => float_of_int(i128::from(*u)),
                            _ => None,
                        })
                    })
                    .collect::<Result<Float64Array, String>>()?,
            ),
        },
        Ty::Str => Arc::new(
            values
                .iter()
                .map(|v| match v {
                    ValueRef::Null => Ok(None),
                    ValueRef::Str(s) => Ok(Some(*s)),
                    v => Err(wrong(v)),
                })
                .collect::<Result<StringArray, String>>()?,
        ),
        Ty::Json => Arc::new(StringArray::from_iter(values.iter().map(|v| match v {
            ValueRef::Null => None,
            v => Some(v.to_string()),
        }))),
        Ty::List(item) => {
            let mut offsets = Vec::with_capacity(values.len() + 1);
            offsets.push(0i32);
            let mut items = Vec::new();
            for v in values {
                match v {
                    ValueRef::Null => {}
                    ValueRef::List(l) => items.extend(l.iter().map(Value::as_ref)),
                    v => return Err(wrong(v)),
                }
                offsets
                    .push(i32::try_from(items.len()).map_err(|_| "a list column too long for one batch".to_owned())?);
            }
            let child = array_of_values(item, &items).map_err(|e| format!("in a list: {e}"))?;
            let field = Arc::new(ArrowField::new_list_field(item.arrow(), true));
            Arc::new(
                ListArray::try_new(
                    field,
                    OffsetBuffer::new(ScalarBuffer::from(offsets)),
                    child,
                    nulls(values.len(), |i| values[i].is_null()),
                )
                .map_err(|e| e.to_string())?,
            )
        }
        Ty::Timestamp(unit, zone) => {
            let mut raw = Vec::with_capacity(values.len());
            for v in values {
                raw.push(match v {
                    ValueRef::Null => None,
                    ValueRef::Timestamp(t) if t.unit() == *unit && t.zone() == zone.as_deref().map(String::as_str) => {
                        Some(t.value())
                    }
                    ValueRef::Timestamp(t) => {
                        return Err(conflict(ty, &Ty::Timestamp(t.unit(), t.zone_arc().cloned()).describe()));
                    }
                    v => return Err(wrong(v)),
                });
            }
            let zone = zone.as_ref().map(|z| Arc::<str>::from(z.as_str()));
            macro_rules! timestamps {
                ($a:ty) => {
                    Arc::new(<$a>::from(raw).with_timezone_opt(zone))
                };
            }
            match unit {
                WeaveUnit::Second => timestamps!(arrow_array::TimestampSecondArray),
                WeaveUnit::Millisecond => timestamps!(arrow_array::TimestampMillisecondArray),
                WeaveUnit::Microsecond => timestamps!(arrow_array::TimestampMicrosecondArray),
                WeaveUnit::Nanosecond => timestamps!(arrow_array::TimestampNanosecondArray),
            }
        }
        Ty::Date => Arc::new(
            values
                .iter()
                .map(|v| match v {
                    ValueRef::Null => Ok(None),
                    ValueRef::Date(d) => Ok(Some(*d)),
                    v => Err(wrong(v)),
                })
                .collect::<Result<arrow_array::Date32Array, String>>()?,
        ),
        Ty::Decimal(precision, scale) => {
            let mut raw = Vec::with_capacity(values.len());
            for v in values {
                raw.push(match v {
                    ValueRef::Null => None,
                    // A decimal of a smaller scale, scaled up exactly (the type was unified
                    // to hold every value).
                    ValueRef::Decimal(d) if d.scale() <= *scale => {
                        let up = 10i128.checked_pow(u32::from((*scale - d.scale()).unsigned_abs()));
                        Some(up.and_then(|up| d.value().checked_mul(up)).ok_or_else(|| inexact(ty, *v))?)
                    }
                    ValueRef::Decimal(_) => return Err(inexact(ty, *v)),
                    v => return Err(wrong(v)),
                });
            }
            Arc::new(
                arrow_array::Decimal128Array::from(raw)
                    .with_precision_and_scale(*precision, *scale)
                    .map_err(|e| e.to_string())?,
            )
        }
        Ty::Binary => Arc::new(
            values
                .iter()
                .map(|v| match v {
                    ValueRef::Null => Ok(None),
                    ValueRef::Binary(b) => Ok(Some(*b)),
                    v => Err(wrong(v)),
                })
                .collect::<Result<arrow_array::BinaryArray, String>>()?,
        ),
        Ty::Map(item) => {
            let mut offsets = Vec::with_capacity(values.len() + 1);
            offsets.push(0i32);
            let (mut keys, mut items) = (Vec::new(), Vec::new());
            for v in values {
                match v {
                    ValueRef::Null => {}
                    ValueRef::Map(m) if m.is_key_value() => {
                        for (k, x) in m.iter() {
                            keys.push(k.as_str());
                            items.push(x.as_ref());
                        }
                    }
                    ValueRef::Map(_) => return Err(conflict(ty, "struct")),
                    v => return Err(wrong(v)),
                }
                offsets.push(i32::try_from(keys.len()).map_err(|_| "a map column too long for one batch".to_owned())?);
            }
            let child = array_of_values(item, &items).map_err(|e| format!("in a map's values: {e}"))?;
            let entries_field = map_entries(item);
            let ArrowType::Struct(entry_fields) = entries_field.data_type().clone() else {
                return Err("a map's entries are not a struct".to_owned());
            };
            let entries = StructArray::try_new(entry_fields, vec![Arc::new(StringArray::from(keys)), child], None)
                .map_err(|e| e.to_string())?;
            Arc::new(
                arrow_array::MapArray::try_new(
                    entries_field,
                    OffsetBuffer::new(ScalarBuffer::from(offsets)),
                    entries,
                    nulls(values.len(), |i| values[i].is_null()),
                    false,
                )
                .map_err(|e| e.to_string())?,
            )
        }
        Ty::Struct(fields) => {
            for v in values {
                match v {
                    ValueRef::Null => {}
                    ValueRef::Map(m) if m.is_key_value() => return Err(conflict(ty, "key-value map")),
                    ValueRef::Map(m) => {
                        if let Some(k) = m.keys().find(|k| !fields.contains_key(*k)) {
                            return Err(format!(
                                "key `{k}` is not in the Parquet file's schema, which has {}",
                                ty.describe()
                            ));
                        }
                    }
                    v => return Err(wrong(v)),
                }
            }
            let mut children = Vec::with_capacity(fields.len());
            for (name, t) in fields {
                let child: Vec<ValueRef<'_>> = values
                    .iter()
                    .map(|v| match v {
                        ValueRef::Map(m) => m.get(name).map_or(ValueRef::Null, Value::as_ref),
                        _ => ValueRef::Null,
                    })
                    .collect();
                children.push(array_of_values(t, &child).map_err(|e| format!("in key `{name}`: {e}"))?);
            }
            Arc::new(
                StructArray::try_new(struct_fields(fields), children, nulls(values.len(), |i| values[i].is_null()))
                    .map_err(|e| e.to_string())?,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_unify_to_the_narrowest_that_holds_every_value_exactly() {
        let t = |text: &str| Ty::of_value(Value::from_json(text).unwrap().as_ref());
        let arrow = |texts: &[&str]| texts.iter().map(|x| t(x)).fold(Ty::Null, Ty::unify).arrow();
        assert_eq!(arrow(&["1", "1.5"]), ArrowType::Float64);
        assert_eq!(arrow(&["1", "18446744073709551615"]), ArrowType::UInt64);
        assert_eq!(arrow(&["-1", "2", "null"]), ArrowType::Int64);
        // regression: 17-digit ints next to a float were written as floats, losing digits.
        assert_eq!(t("12345678901234567").unify(t("0.5")), Ty::Json);
        assert_eq!(arrow(&["12345678901234568", "0.5"]), ArrowType::Float64, "an int a float holds exactly");
        assert_eq!(t("-1").unify(t("18446744073709551615")), Ty::Json);
        assert_eq!(t("100000000000000000000000"), Ty::Json);
        assert_eq!(t("null").unify(t("\"x\"")), Ty::Str);
        assert_eq!(t("1").unify(t("\"x\"")), Ty::Json);
        // A struct's fields come in the order the records first have them.
        let Ty::Struct(fields) = t(r#"{"z": 1, "l": [1]}"#).unify(t(r#"{"b": "x", "l": [2.5, null], "z": 2}"#)) else {
            panic!("a struct")
        };
        let got: Vec<(&str, ArrowType)> = fields.iter().map(|(k, t)| (k.as_str(), t.arrow())).collect();
        assert_eq!(
            got,
            [
                ("z", ArrowType::Int64),
                ("l", ArrowType::List(Arc::new(ArrowField::new_list_field(ArrowType::Float64, true)))),
                ("b", ArrowType::Utf8)
            ]
        );
        assert!(!t("{}").is_writable());
    }
}
