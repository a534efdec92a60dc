//! Batches: a shared schema and a chunk of rows stored column by column.

use std::collections::HashMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::column::Column;
use crate::error::{Error, StepError};
use crate::record::Record;
use crate::schema::{Field, Schema};
use crate::value::{Value, ValueRef};

/// A chunk of rows: the unit of parallelism, caching, retry and memory accounting.
///
/// Rows are stored column by column (see ARCHITECTURE.md, "The batch layout", for the
/// measurements behind this): a string column is one byte buffer plus offsets, so a step
/// that rewrites a column makes no allocation per row. Columns are shared through `Arc`,
/// so cloning a batch, fanning it out to several consumers, or replacing one column
/// copies no data.
///
/// Custom steps that think in rows use [`Batch::rows`] (borrowed views) or
/// [`Batch::map_records`] (owned [`Record`]s in, records out).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "BatchRepr")]
pub struct Batch {
    schema: Arc<Schema>,
    columns: Vec<Arc<Column>>,
    len: usize,
}

#[derive(Deserialize)]
struct BatchRepr {
    schema: Arc<Schema>,
    columns: Vec<Arc<Column>>,
    len: usize,
}

impl TryFrom<BatchRepr> for Batch {
    type Error = Error;

    fn try_from(r: BatchRepr) -> Result<Self, Error> {
        let mut b = Batch::new(r.schema, r.columns)?;
        if b.columns.is_empty() {
            // Records without fields (`{}`) leave no column to count them by.
            b.len = r.len;
        }
        if b.len != r.len {
            return Err(Error::InvalidBatch(format!("batch says {} rows, its columns hold {}", r.len, b.len)));
        }
        Ok(b)
    }
}

impl Batch {
    /// A batch of these columns. Fails if the columns differ in length, do not match the
    /// schema's types, or the schema repeats a name.
    pub fn new(schema: Arc<Schema>, columns: Vec<Arc<Column>>) -> Result<Self, Error> {
        if schema.len() != columns.len() {
            return Err(Error::InvalidBatch(format!(
                "schema has {} fields but {} columns were given",
                schema.len(),
                columns.len()
            )));
        }
        let len = columns.first().map_or(0, |c| c.len());
        for (f, c) in schema.fields().iter().zip(&columns) {
            if c.len() != len {
                return Err(Error::InvalidBatch(format!(
                    "column `{}` has {} rows, the first column has {len}",
                    f.name,
                    c.len()
                )));
            }
            if c.data_type() != f.data_type {
                return Err(Error::InvalidBatch(format!(
                    "column `{}` holds {} values but the schema says {}",
                    f.name,
                    c.data_type(),
                    f.data_type
                )));
            }
        }
        // A name's first position is its look-up; another position with the name repeats it.
        // (Through the schema's map when it is wide: a pairwise check was quadratic, 5 s
        // for a CSV of 50,000 columns.)
        for (i, f) in schema.fields().iter().enumerate() {
            if schema.index_of(&f.name) != Some(i) {
                return Err(Error::InvalidBatch(format!("field `{}` appears twice", f.name)));
            }
        }
        Ok(Batch { schema, columns, len })
    }

    /// A batch with no fields and no rows.
    pub fn empty() -> Self {
        Batch { schema: Arc::new(Schema::default()), columns: Vec::new(), len: 0 }
    }

    /// A batch of these records; fields are the union of the records' fields, in order of
    /// first appearance, and a record without a field holds null there.
    pub fn from_records<'a>(records: impl IntoIterator<Item = &'a Record>) -> Self {
        let mut b = BatchBuilder::new();
        for r in records {
            b.push_record(r);
        }
        b.finish()
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The schema, shared with other batches of the same shape.
    pub fn schema(&self) -> &Arc<Schema> {
        &self.schema
    }

    /// The columns in schema order.
    pub fn columns(&self) -> &[Arc<Column>] {
        &self.columns
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.schema.index_of(name).map(|i| &*self.columns[i])
    }

    /// Row `i` as a borrowed view. Panics if `i >= self.len()`.
    pub fn row(&self, i: usize) -> RowRef<'_> {
        assert!(i < self.len, "row {i} out of range for a batch of {} rows", self.len);
        RowRef { batch: self, index: i }
    }

    /// The rows in order, as borrowed views.
    pub fn rows(&self) -> impl ExactSizeIterator<Item = RowRef<'_>> {
        (0..self.len).map(|index| RowRef { batch: self, index })
    }

    /// The rows as owned records.
    pub fn to_records(&self) -> Vec<Record> {
        self.rows().map(|r| r.to_record()).collect()
    }

    /// The per-record way to write a step: `f` gets each row as an owned [`Record`] and
    /// returns the record to keep (changed or not), or `None` to drop it. Simple, and
    /// slower than working on columns; built-in steps work on columns.
    pub fn map_records(
        &self,
        mut f: impl FnMut(Record) -> Result<Option<Record>, StepError>,
    ) -> Result<Batch, StepError> {
        let mut out = BatchBuilder::new();
        for row in self.rows() {
            if let Some(r) = f(row.to_record())? {
                out.push_record(&r);
            }
        }
        Ok(out.finish())
    }

    /// This batch with column `name` set to `column`: replaced in place if the field
    /// exists, added at the end if not. Other columns are shared, not copied.
    pub fn with_column(&self, name: &str, column: impl Into<Arc<Column>>) -> Result<Batch, Error> {
        let column = column.into();
        if !self.schema.is_empty() && column.len() != self.len {
            return Err(Error::InvalidBatch(format!(
                "new column `{name}` has {} rows, the batch has {}",
                column.len(),
                self.len
            )));
        }
        let mut columns = self.columns.clone();
        let schema = match self.schema.index_of(name) {
            // Same field, same type: the schema stays shared with the input batch.
            Some(i) if self.schema.fields()[i].data_type == column.data_type() => {
                columns[i] = column;
                Arc::clone(&self.schema)
            }
            Some(i) => {
                let mut fields = self.schema.fields().to_vec();
                fields[i] = Field::new(name, column.data_type());
                columns[i] = column;
                Arc::new(Schema::new(fields))
            }
            None => {
                let mut fields = self.schema.fields().to_vec();
                fields.push(Field::new(name, column.data_type()));
                columns.push(column);
                Arc::new(Schema::new(fields))
            }
        };
        let len = columns.first().map_or(0, |c| c.len());
        Ok(Batch { schema, columns, len })
    }

    /// The rows where `keep` is true. Panics if `keep.len() != self.len()`.
    pub fn filter(&self, keep: &[bool]) -> Batch {
        assert_eq!(keep.len(), self.len, "filter mask length differs from the batch length");
        if keep.iter().all(|&k| k) {
            return self.clone();
        }
        let indices: Vec<usize> = keep.iter().enumerate().filter(|(_, k)| **k).map(|(i, _)| i).collect();
        self.take(&indices)
    }

    /// The rows at `indices`, in that order. Panics if an index is out of range.
    pub fn take(&self, indices: &[usize]) -> Batch {
        let columns: Vec<Arc<Column>> = self.columns.iter().map(|c| Arc::new(c.take(indices))).collect();
        // `take` keeps each column's type, except that a typed column with only nulls left
        // keeps its type too, so the schema still holds.
        Batch { schema: Arc::clone(&self.schema), columns, len: indices.len() }
    }
    /// Feeds `out` the bytes that say what the batch holds: each field's name, then its
    /// column's [`Column::content_bytes`]. Two batches feed the same bytes exactly when
    /// they hold the same fields, in the same order, with the same values.
    pub fn content_bytes(&self, out: &mut dyn FnMut(&[u8])) {
        out(&(self.columns.len() as u64).to_le_bytes());
        for (field, column) in self.schema.fields().iter().zip(&self.columns) {
            out(&(field.name.len() as u64).to_le_bytes());
            out(field.name.as_bytes());
            column.content_bytes(out);
        }
    }

    /// An estimate of the bytes this batch holds in memory, for the executor's memory
    /// budget. It counts buffer capacities (what the allocator handed out), so it is an
    /// upper bound for the data and cheap to compute. A column shared with another batch is
    /// counted in both: the budget errs on the safe side.
    pub fn memory_size(&self) -> usize {
        std::mem::size_of::<Batch>()
            + self.columns.iter().map(|c| std::mem::size_of::<Column>() + c.heap_size()).sum::<usize>()
    }
}

/// A borrowed view of one row of a batch.
#[derive(Debug, Clone, Copy)]
pub struct RowRef<'a> {
    batch: &'a Batch,
    index: usize,
}

impl<'a> RowRef<'a> {
    /// The row's position in its batch.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The value of `field`, or `None` if the batch has no such field.
    pub fn get(&self, field: &str) -> Option<ValueRef<'a>> {
        let i = self.batch.schema.index_of(field)?;
        Some(self.batch.columns[i].get(self.index))
    }

    /// The string value of `field`, or `None` if it is missing, null or not a string.
    pub fn get_str(&self, field: &str) -> Option<&'a str> {
        self.get(field).and_then(ValueRef::as_str)
    }

    /// The fields and values in schema order.
    pub fn iter(&self) -> impl Iterator<Item = (&'a str, ValueRef<'a>)> + 'a {
        let (batch, index) = (self.batch, self.index);
        batch.schema.fields().iter().zip(&batch.columns).map(move |(f, c)| (f.name.as_str(), c.get(index)))
    }

    /// The row as an owned record.
    pub fn to_record(&self) -> Record {
        self.iter().map(|(k, v)| (k, v.to_owned())).collect()
    }
}

/// Builds a batch row by row, inferring column types as values arrive.
///
/// A field first seen in a later row is added with nulls before it; a row without a field
/// gets null there. A column's type widens when a value does not fit it
/// (see [`Column::push`]).
#[derive(Debug, Default)]
pub struct BatchBuilder {
    names: Vec<String>,
    columns: Vec<Column>,
    len: usize,
    /// Per column, whether the current row has set it (reused between rows).
    seen: Vec<bool>,
    /// Name → column, once there are more names than a scan handles well; kept in step
    /// with `names` from then on, so that a record of 100,000 fields costs linear time.
    index: HashMap<String, usize>,
}

/// Past this many fields, a name is looked up in a hash map rather than by a scan.
const SCAN_LIMIT: usize = 32;

impl BatchBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        BatchBuilder::default()
    }

    /// A builder whose first columns are these, so that the field order is fixed up front
    /// (a CSV header, say).
    pub fn with_fields<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        let columns = names.iter().map(|_| Column::Null(0)).collect();
        let seen = vec![false; names.len()];
        BatchBuilder { names, columns, len: 0, seen, index: HashMap::new() }
    }

    /// The number of rows pushed so far.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether no row has been pushed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a record.
    pub fn push_record(&mut self, record: &Record) {
        self.push_row(record.iter().map(|(k, v)| (k, v.as_ref())));
    }

    /// Appends a row given as (field, value) pairs. A field given twice keeps its first value.
    pub fn push_row<'v>(&mut self, fields: impl IntoIterator<Item = (&'v str, ValueRef<'v>)>) {
        self.seen.iter_mut().for_each(|s| *s = false);
        for (k, (name, value)) in fields.into_iter().enumerate() {
            let i = match self.find(k, name) {
                Some(i) => i,
                None => {
                    if !self.index.is_empty() {
                        self.index.insert(name.to_owned(), self.names.len());
                    }
                    self.names.push(name.to_owned());
                    self.columns.push(Column::Null(self.len));
                    self.seen.push(false);
                    self.names.len() - 1
                }
            };
            if !self.seen[i] {
                self.seen[i] = true;
                self.columns[i].push(value);
            }
        }
        for (c, seen) in self.columns.iter_mut().zip(&self.seen) {
            if !seen {
                c.push(ValueRef::Null);
            }
        }
        self.len += 1;
    }

    /// The column of field `name`, given as the `k`-th field of its row.
    fn find(&mut self, k: usize, name: &str) -> Option<usize> {
        // Records of one source mostly list their fields in one order: the k-th field is
        // looked for at column k first, so a row costs no search.
        if self.names.get(k).is_some_and(|n| n == name) {
            return Some(k);
        }
        if self.names.len() <= SCAN_LIMIT {
            return self.names.iter().position(|n| n == name);
        }
        if self.index.is_empty() {
            self.index = self.names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        }
        self.index.get(name).copied()
    }

    /// Appends a row given as values in field order (as set by [`BatchBuilder::with_fields`]);
    /// missing trailing values are null. Returns the values past the known fields, which a
    /// caller reading a ragged file reports rather than drops.
    pub fn push_values<'v>(&mut self, values: impl IntoIterator<Item = ValueRef<'v>>) -> usize {
        let mut n = 0;
        let mut extra = 0;
        for v in values {
            match self.columns.get_mut(n) {
                Some(c) => c.push(v),
                None => extra += 1,
            }
            n += 1;
        }
        for c in self.columns.iter_mut().skip(n) {
            c.push(ValueRef::Null);
        }
        self.len += 1;
        extra
    }

    /// The finished batch.
    pub fn finish(self) -> Batch {
        let fields = self.names.into_iter().zip(&self.columns).map(|(n, c)| Field::new(n, c.data_type())).collect();
        Batch {
            schema: Arc::new(Schema::new(fields)),
            columns: self.columns.into_iter().map(Arc::new).collect(),
            len: self.len,
        }
    }
}

impl From<Vec<Value>> for Column {
    fn from(values: Vec<Value>) -> Self {
        let mut c = Column::Null(0);
        for v in &values {
            c.push(v.as_ref());
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::column::StrColumn;
    use crate::schema::DataType;

    fn sample() -> Batch {
        Batch::from_records(&[
            Record::new().with("id", 1i64).with("text", "a"),
            Record::new().with("id", 2i64).with("label", "pos"),
            Record::new().with("id", 3i64).with("text", "c").with("label", "neg"),
        ])
    }

    #[test]
    fn content_bytes_tell_batches_apart_by_any_name_type_value_or_null() {
        let bytes = |b: &Batch| {
            let mut all = Vec::new();
            b.content_bytes(&mut |x| all.extend_from_slice(x));
            all
        };
        let one = |id: Value, text: Value| Batch::from_records(&[Record::new().with("id", id).with("text", text)]);
        let base = bytes(&sample());
        assert_eq!(base, bytes(&sample()), "the same content, the same bytes");
        let variants = [
            one(Value::Int(1), Value::Str("a".into())),
            one(Value::Int(1), Value::Str("b".into())),
            one(Value::Float(1.0), Value::Str("a".into())),
            one(Value::Int(1), Value::Null),
            one(Value::Int(1), Value::Str(String::new())),
            one(Value::Int(2), Value::Str("a".into())),
            Batch::from_records(&[Record::new().with("ID", 1i64).with("text", "a")]),
            Batch::from_records(&[Record::new().with("text", "a").with("id", 1i64)]),
            // Text that moves a boundary between two values.
            Batch::from_records(&[
                Record::new().with("id", 1i64).with("text", "ab"),
                Record::new().with("id", 2i64).with("text", ""),
            ]),
            Batch::from_records(&[
                Record::new().with("id", 1i64).with("text", "a"),
                Record::new().with("id", 2i64).with("text", "b"),
            ]),
            Batch::from_records(&[Record::new().with("id", 1i64).with("text", Value::List(vec![Value::Int(1)]))]),
            // Mixed columns: a NaN and a null, a number and its text, each its own bytes.
            Batch::from_records(&[Record::new()
                .with("id", 1i64)
                .with("text", Value::List(vec![Value::Float(f64::NAN)]))]),
            Batch::from_records(&[Record::new().with("id", 1i64).with("text", Value::List(vec![Value::Null]))]),
            Batch::from_records(&[Record::new()
                .with("id", 1i64)
                .with("text", Value::List(vec![Value::Str("1".into())]))]),
        ];
        let all: Vec<Vec<u8>> = variants.iter().map(bytes).collect();
        for (i, a) in all.iter().enumerate() {
            assert_ne!(*a, base);
            for (j, b) in all.iter().enumerate().skip(i + 1) {
                assert_ne!(a, b, "variants {i} and {j} feed the same bytes");
            }
        }
    }

    #[test]
    fn records_round_trip_through_a_batch() {
        let b = sample();
        assert_eq!(b.len(), 3);
        assert_eq!(b.schema().to_string(), "{id: int, text: string, label: string}");
        let rows: Vec<String> = b.to_records().iter().map(Record::to_string).collect();
        assert_eq!(
            rows,
            [
                r#"{"id":1,"text":"a","label":null}"#,
                r#"{"id":2,"text":null,"label":"pos"}"#,
                r#"{"id":3,"text":"c","label":"neg"}"#
            ]
        );
    }

    #[test]
    fn wide_rows_find_their_columns_in_any_order() {
        // Past the scan limit names are found by hashing: every field lands in its column
        // whatever order a row gives them in, and a new field comes at the end.
        let names: Vec<String> = (0..100).map(|i| format!("f{i}")).collect();
        let mut b = BatchBuilder::new();
        b.push_row(names.iter().enumerate().map(|(i, n)| (n.as_str(), ValueRef::Int(i as i64))));
        b.push_row(names.iter().enumerate().rev().map(|(i, n)| (n.as_str(), ValueRef::Int(i as i64 * 10))));
        b.push_row([("new", ValueRef::Int(1)), ("f7", ValueRef::Int(7))]);
        let batch = b.finish();
        assert_eq!(batch.schema().len(), 101);
        assert_eq!(batch.schema().fields()[100].name, "new");
        assert_eq!(batch.row(1).get("f3"), Some(ValueRef::Int(30)));
        assert_eq!(batch.row(2).get("f7"), Some(ValueRef::Int(7)));
        assert_eq!(batch.row(2).get("f8"), Some(ValueRef::Null));
        assert_eq!(batch.row(0).get("new"), Some(ValueRef::Null));
    }

    #[test]
    fn map_records_transforms_and_drops() {
        let b = sample()
            .map_records(|mut r| {
                if r.get("text").is_some_and(Value::is_null) {
                    return Ok(None);
                }
                r.set("n", 7i64);
                Ok(Some(r))
            })
            .unwrap();
        assert_eq!(b.len(), 2);
        assert_eq!(b.row(1).get("n"), Some(ValueRef::Int(7)));
    }

    #[test]
    fn with_column_shares_the_other_columns() {
        let b = sample();
        let mut c = StrColumn::new();
        for r in b.rows() {
            c.push(&r.get_str("text").unwrap_or("").to_uppercase());
        }
        let b2 = b.with_column("text", Column::Str(c)).unwrap();
        assert!(Arc::ptr_eq(&b.columns()[0], &b2.columns()[0]));
        assert!(Arc::ptr_eq(b.schema(), b2.schema()), "same types: the schema is shared");
        assert_eq!(b2.row(2).get_str("text"), Some("C"));
        assert!(b.with_column("x", Column::Null(5)).is_err());
    }

    #[test]
    fn filter_and_take_keep_the_schema() {
        let b = sample().filter(&[true, false, true]);
        assert_eq!(b.len(), 2);
        assert_eq!(b.row(1).get("id"), Some(ValueRef::Int(3)));
        assert_eq!(b.schema().fields()[2].data_type, DataType::Str);
    }

    #[test]
    fn new_rejects_inconsistent_columns() {
        let schema = Arc::new(Schema::new(vec![Field::new("a", DataType::Null), Field::new("b", DataType::Null)]));
        let err = Batch::new(schema, vec![Arc::new(Column::Null(1)), Arc::new(Column::Null(2))]).unwrap_err();
        assert!(err.to_string().contains("column `b` has 2 rows"), "{err}");
    }

    #[test]
    fn a_wide_builder_places_fields_by_name_in_any_order() {
        let names: Vec<String> = (0..1000).map(|i| format!("f{i}")).collect();
        let mut b = BatchBuilder::new();
        b.push_row(names.iter().map(|n| (n.as_str(), ValueRef::Int(1))));
        b.push_row(names.iter().rev().map(|n| (n.as_str(), ValueRef::Int(2))));
        b.push_row([("new", ValueRef::Int(3)), ("f5", ValueRef::Int(3)), ("f5", ValueRef::Int(4))]);
        let batch = b.finish();
        assert_eq!(batch.schema().len(), 1001);
        assert_eq!(batch.row(1).get("f0"), Some(ValueRef::Int(2)));
        assert_eq!(batch.row(2).get("f5"), Some(ValueRef::Int(3)), "a field given twice keeps its first value");
        assert_eq!(batch.row(2).get("f6"), Some(ValueRef::Null));
        assert_eq!(batch.row(0).get("new"), Some(ValueRef::Null));
        // A repeated name is refused however wide the schema.
        let mut fields: Vec<Field> = names.iter().map(|n| Field::new(n.as_str(), DataType::Null)).collect();
        fields.push(Field::new("f999", DataType::Null));
        let columns = fields.iter().map(|_| Arc::new(Column::Null(0))).collect();
        let err = Batch::new(Arc::new(Schema::new(fields)), columns).unwrap_err();
        assert!(err.to_string().contains("field `f999` appears twice"), "{err}");
    }

    #[test]
    fn batch_survives_json_and_rejects_a_lying_length() {
        let b = sample();
        let s = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<Batch>(&s).unwrap(), b);
        let lie = s.replace("\"len\":3", "\"len\":4");
        assert!(serde_json::from_str::<Batch>(&lie).is_err());
    }

    #[test]
    fn records_without_fields_survive_serialisation() {
        // regression (found by the `load_jsonl` fuzz target): a batch of `{}` records has
        // rows but no columns, so its length was taken as 0 on reading and the batch refused,
        // which made every cache entry of such a step read as damaged.
        let b = Batch::from_records(&[Record::new(), Record::new()]);
        assert_eq!(b.len(), 2);
        let s = serde_json::to_string(&b).unwrap();
        assert_eq!(serde_json::from_str::<Batch>(&s).unwrap(), b);
    }

    #[test]
    fn memory_size_grows_with_the_data() {
        let small = sample().memory_size();
        let big: Vec<Record> =
            (0..1000).map(|i| Record::new().with("text", "x".repeat(100)).with("i", i as i64)).collect();
        let big = Batch::from_records(&big).memory_size();
        assert!(big > 100_000 && big < 200_000, "{big}");
        assert!(small < big);
    }
}
