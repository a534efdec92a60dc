//! Typed columns: the storage inside a [`Batch`](crate::Batch).

use serde::{Deserialize, Serialize};

use crate::schema::DataType;
use crate::value::{Value, ValueRef};

/// A column of strings stored as one UTF-8 buffer plus offsets, as Arrow stores them.
///
/// Row `i` is `data[offsets[i]..offsets[i + 1]]`. Appending a row copies its bytes into the
/// shared buffer, so building or rewriting a column makes no allocation per row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "StrColumnRepr")]
pub struct StrColumn {
    data: String,
    offsets: Vec<usize>,
    /// `Some` once the column holds a null; `nulls[i]` is true when row `i` is null.
    nulls: Option<Vec<bool>>,
}

/// The unchecked serialised form of a [`StrColumn`], validated on the way in so that a
/// damaged encoding is an error rather than a panic on first access.
#[derive(Deserialize)]
struct StrColumnRepr {
    data: String,
    offsets: Vec<usize>,
    nulls: Option<Vec<bool>>,
}

impl TryFrom<StrColumnRepr> for StrColumn {
    type Error = String;

    fn try_from(r: StrColumnRepr) -> Result<Self, String> {
        if r.offsets.first() != Some(&0) || r.offsets.last() != Some(&r.data.len()) {
            return Err("string column offsets do not span its data".to_owned());
        }
        if r.offsets.windows(2).any(|w| w[0] > w[1]) {
            return Err("string column offsets are not increasing".to_owned());
        }
        if r.offsets.iter().any(|&o| !r.data.is_char_boundary(o)) {
            return Err("string column offset splits a character".to_owned());
        }
        if let Some(n) = &r.nulls
            && n.len() + 1 != r.offsets.len()
        {
            return Err("string column null mask has the wrong length".to_owned());
        }
        Ok(StrColumn { data: r.data, offsets: r.offsets, nulls: r.nulls })
    }
}

impl Default for StrColumn {
    fn default() -> Self {
        Self::new()
    }
}

impl StrColumn {
    /// An empty column.
    pub fn new() -> Self {
        StrColumn { data: String::new(), offsets: vec![0], nulls: None }
    }

    /// An empty column with room for `rows` rows and `bytes` bytes of text.
    pub fn with_capacity(rows: usize, bytes: usize) -> Self {
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0);
        StrColumn { data: String::with_capacity(bytes), offsets, nulls: None }
    }

    /// The number of rows.
    #[inline]
    pub fn len(&self) -> usize {
        self.offsets.len() - 1
    }

    /// Whether the column has no rows.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row `i`, or `None` when it is null. Panics if `i` is out of range.
    #[inline]
    pub fn get(&self, i: usize) -> Option<&str> {
        if self.is_null(i) {
            return None;
        }
        Some(&self.data[self.offsets[i]..self.offsets[i + 1]])
    }

    /// Whether row `i` is null.
    #[inline]
    pub fn is_null(&self, i: usize) -> bool {
        self.nulls.as_ref().is_some_and(|n| n[i])
    }

    /// The rows in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = Option<&str>> + '_ {
        (0..self.len()).map(|i| self.get(i))
    }

    /// Appends a row.
    #[inline]
    pub fn push(&mut self, v: &str) {
        self.data.push_str(v);
        self.offsets.push(self.data.len());
        if let Some(n) = &mut self.nulls {
            n.push(false);
        }
    }

    /// The rows at `indices`, in that order. Runs of consecutive rows (what a filter that
    /// keeps most rows leaves) are copied in one piece, their offsets shifted, rather than
    /// row by row.
    pub fn take(&self, indices: &[usize]) -> StrColumn {
        let bytes = indices.iter().map(|&i| self.offsets[i + 1] - self.offsets[i]).sum();
        let mut out = StrColumn::with_capacity(indices.len(), bytes);
        if self.nulls.is_some() {
            for &i in indices {
                match self.get(i) {
                    Some(s) => out.push(s),
                    None => out.push_null(),
                }
            }
            return out;
        }
        let mut k = 0;
        while k < indices.len() {
            let start = indices[k];
            let mut end = start + 1;
            while indices.get(k + end - start) == Some(&end) {
                end += 1;
            }
            let (from, base) = (self.offsets[start], out.data.len());
            out.data.push_str(&self.data[from..self.offsets[end]]);
            out.offsets.extend(self.offsets[start + 1..=end].iter().map(|&o| o - from + base));
            k += end - start;
        }
        out
    }

    /// Appends a null row.
    pub fn push_null(&mut self) {
        let len = self.len();
        self.offsets.push(self.data.len());
        self.nulls.get_or_insert_with(|| vec![false; len]).push(true);
    }

    /// Appends a row written in place by `f`, with no intermediate string.
    pub fn push_with<R>(&mut self, f: impl FnOnce(&mut Appender<'_>) -> R) -> R {
        let start = self.data.len();
        let r = f(&mut Appender { buf: &mut self.data, start });
        self.offsets.push(self.data.len());
        if let Some(n) = &mut self.nulls {
            n.push(false);
        }
        r
    }

    /// A copy of this column whose text `f` rewrites in place, all rows at once: for
    /// changes that keep every byte where it is (ASCII case, masking characters), this is
    /// one copy and one pass instead of one append per row. Null rows stay null.
    pub fn map_in_place(&self, f: impl FnOnce(&mut str)) -> StrColumn {
        let mut data = self.data.clone();
        f(data.as_mut_str());
        StrColumn { data, offsets: self.offsets.clone(), nulls: self.nulls.clone() }
    }

    /// The bytes of all rows, end to end.
    #[inline]
    pub fn data(&self) -> &str {
        &self.data
    }

    /// Heap bytes held (capacities, not lengths: that is what the allocator gave out).
    pub fn heap_size(&self) -> usize {
        self.data.capacity()
            + self.offsets.capacity() * std::mem::size_of::<usize>()
            + self.nulls.as_ref().map_or(0, Vec::capacity)
    }
}

/// Append-only access to the row being written by [`StrColumn::push_with`].
#[derive(Debug)]
pub struct Appender<'a> {
    buf: &'a mut String,
    start: usize,
}

impl Appender<'_> {
    /// Appends text to the row.
    #[inline]
    pub fn push_str(&mut self, s: &str) {
        self.buf.push_str(s);
    }

    /// Appends one character to the row.
    #[inline]
    pub fn push(&mut self, c: char) {
        self.buf.push(c);
    }

    /// The bytes written to this row so far.
    #[inline]
    pub fn len(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Whether nothing has been written to this row yet.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.buf.len() == self.start
    }

    /// What has been written to this row so far.
    #[inline]
    pub fn written(&self) -> &str {
        &self.buf[self.start..]
    }

    /// Shortens this row to `len` bytes; it cannot reach into earlier rows.
    /// Does nothing if `len` is not below the current length or not on a character boundary.
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        let at = self.start + len;
        if at < self.buf.len() && self.buf.is_char_boundary(at) {
            self.buf.truncate(at);
        }
    }
}

/// A column of fixed-size values (`bool`, `i64`, `u64`, `f64`) with an optional null mask.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "PrimitiveRepr<T>")]
#[serde(bound(deserialize = "T: Deserialize<'de>"))]
pub struct PrimitiveColumn<T> {
    values: Vec<T>,
    nulls: Option<Vec<bool>>,
}

#[derive(Deserialize)]
struct PrimitiveRepr<T> {
    values: Vec<T>,
    nulls: Option<Vec<bool>>,
}

impl<T> TryFrom<PrimitiveRepr<T>> for PrimitiveColumn<T> {
    type Error = String;

    fn try_from(r: PrimitiveRepr<T>) -> Result<Self, String> {
        if let Some(n) = &r.nulls
            && n.len() != r.values.len()
        {
            return Err("column null mask has the wrong length".to_owned());
        }
        Ok(PrimitiveColumn { values: r.values, nulls: r.nulls })
    }
}

impl<T: Copy + Default> Default for PrimitiveColumn<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Copy + Default> PrimitiveColumn<T> {
    /// An empty column.
    pub fn new() -> Self {
        PrimitiveColumn { values: Vec::new(), nulls: None }
    }

    /// A column of these values, none null.
    pub fn from_values(values: Vec<T>) -> Self {
        PrimitiveColumn { values, nulls: None }
    }

    /// The number of rows.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// Whether the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// Row `i`, or `None` when it is null. Panics if `i` is out of range.
    pub fn get(&self, i: usize) -> Option<T> {
        if self.nulls.as_ref().is_some_and(|n| n[i]) { None } else { Some(self.values[i]) }
    }

    /// Appends a row.
    pub fn push(&mut self, v: T) {
        self.values.push(v);
        if let Some(n) = &mut self.nulls {
            n.push(false);
        }
    }

    /// Appends a null row.
    pub fn push_null(&mut self) {
        let len = self.values.len();
        self.values.push(T::default());
        self.nulls.get_or_insert_with(|| vec![false; len]).push(true);
    }

    /// The rows at `indices`, in that order. Panics if an index is out of range.
    pub fn take(&self, indices: &[usize]) -> Self {
        PrimitiveColumn {
            values: indices.iter().map(|&i| self.values[i]).collect(),
            nulls: self.nulls.as_ref().map(|n| indices.iter().map(|&i| n[i]).collect()),
        }
    }

    /// The raw values; a null row holds `T::default()`.
    pub fn values(&self) -> &[T] {
        &self.values
    }

    /// Heap bytes held.
    pub fn heap_size(&self) -> usize {
        self.values.capacity() * std::mem::size_of::<T>() + self.nulls.as_ref().map_or(0, Vec::capacity)
    }
}

/// One column of a batch.
///
/// Columns are typed where the data allows it: strings live in one buffer, numbers in a
/// plain vector. Values of mixed or nested type fall back to [`Column::Any`], where each
/// keeps its own type: integers and floats in one field stay integers and floats.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Column {
    /// Every row is null (the type is not known yet).
    Null(usize),
    /// Booleans.
    Bool(PrimitiveColumn<bool>),
    /// 64-bit integers.
    Int(PrimitiveColumn<i64>),
    /// 64-bit floats.
    Float(PrimitiveColumn<f64>),
    /// UTF-8 strings.
    Str(StrColumn),
    /// Values of any type, one [`Value`] per row.
    Any(Vec<Value>),
    /// Unsigned 64-bit integers: a Parquet `UInt64` column, or integers past `i64::MAX`
    /// with no negative one among them. Read out in their one form ([`Value::from`]): a
    /// value that fits an `i64` as an int.
    UInt(PrimitiveColumn<u64>),
}

impl Column {
    /// The number of rows.
    #[inline]
    pub fn len(&self) -> usize {
        match self {
            Column::Null(n) => *n,
            Column::Bool(c) => c.len(),
            Column::Int(c) => c.len(),
            Column::UInt(c) => c.len(),
            Column::Float(c) => c.len(),
            Column::Str(c) => c.len(),
            Column::Any(c) => c.len(),
        }
    }

    /// Whether the column has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The column's type.
    pub fn data_type(&self) -> DataType {
        match self {
            Column::Null(_) => DataType::Null,
            Column::Bool(_) => DataType::Bool,
            Column::Int(_) => DataType::Int,
            Column::UInt(_) => DataType::UInt,
            Column::Float(_) => DataType::Float,
            Column::Str(_) => DataType::Str,
            Column::Any(_) => DataType::Any,
        }
    }

    /// Row `i`. Panics if `i` is out of range.
    #[inline]
    pub fn get(&self, i: usize) -> ValueRef<'_> {
        match self {
            Column::Null(n) => {
                assert!(i < *n, "row {i} out of range for a column of {n} rows");
                ValueRef::Null
            }
            Column::Bool(c) => c.get(i).map_or(ValueRef::Null, ValueRef::Bool),
            Column::Int(c) => c.get(i).map_or(ValueRef::Null, ValueRef::Int),
            Column::UInt(c) => c.get(i).map_or(ValueRef::Null, uint_ref),
            Column::Float(c) => c.get(i).map_or(ValueRef::Null, ValueRef::Float),
            Column::Str(c) => c.get(i).map_or(ValueRef::Null, ValueRef::Str),
            Column::Any(c) => c[i].as_ref(),
        }
    }

    /// The string column inside, if this is one.
    pub fn as_str(&self) -> Option<&StrColumn> {
        match self {
            Column::Str(c) => Some(c),
            _ => None,
        }
    }

    /// Appends a value, widening the column's type when the value does not fit it: a null
    /// column takes the first value's type, an int column becomes a uint column when an
    /// integer past `i64::MAX` comes and none is negative, and any other mix (ints and
    /// floats too) becomes [`Column::Any`], where every value keeps its own type, so
    /// that no integer is rounded to a float and each is written back as it came.
    pub fn push(&mut self, v: ValueRef<'_>) {
        match (&mut *self, v) {
            (Column::Null(n), ValueRef::Null) => *n += 1,
            (Column::Null(n), v) => {
                let n = *n;
                *self = Column::typed_for(v, n);
                self.push(v);
            }
            (Column::Bool(c), ValueRef::Bool(b)) => c.push(b),
            (Column::Bool(c), ValueRef::Null) => c.push_null(),
            (Column::Int(c), ValueRef::Int(i)) => c.push(i),
            (Column::Int(c), ValueRef::Null) => c.push_null(),
            (Column::Int(c), ValueRef::UInt(u)) if c.values().iter().all(|&i| i >= 0) => {
                // Null rows hold 0, which passed the check and is kept null.
                let mut uc = PrimitiveColumn::new();
                for i in 0..c.len() {
                    match c.get(i) {
                        Some(x) => uc.push(x.unsigned_abs()),
                        None => uc.push_null(),
                    }
                }
                uc.push(u);
                *self = Column::UInt(uc);
            }
            (Column::UInt(c), ValueRef::UInt(u)) => c.push(u),
            (Column::UInt(c), ValueRef::Int(i)) if i >= 0 => c.push(i.unsigned_abs()),
            (Column::UInt(c), ValueRef::Null) => c.push_null(),
            (Column::Float(c), ValueRef::Float(f)) => c.push(f),
            (Column::Float(c), ValueRef::Null) => c.push_null(),
            (Column::Str(c), ValueRef::Str(s)) => c.push(s),
            (Column::Str(c), ValueRef::Null) => c.push_null(),
            (Column::Any(c), v) => c.push(v.to_owned()),
            (_, v) => {
                let mut all: Vec<Value> = (0..self.len()).map(|i| self.get(i).to_owned()).collect();
                all.push(v.to_owned());
                *self = Column::Any(all);
            }
        }
    }

    /// An empty column of the type that holds `v`, after `nulls` null rows.
    fn typed_for(v: ValueRef<'_>, nulls: usize) -> Column {
        let mut c = match v {
            ValueRef::Null => return Column::Null(nulls),
            ValueRef::Bool(_) => Column::Bool(PrimitiveColumn::new()),
            ValueRef::Int(_) => Column::Int(PrimitiveColumn::new()),
            ValueRef::UInt(_) => Column::UInt(PrimitiveColumn::new()),
            ValueRef::Float(_) => Column::Float(PrimitiveColumn::new()),
            ValueRef::Str(_) => Column::Str(StrColumn::new()),
            ValueRef::BigInt(_)
            | ValueRef::List(_)
            | ValueRef::Map(_)
            | ValueRef::Timestamp(_)
            | ValueRef::Date(_)
            | ValueRef::Decimal(_)
            | ValueRef::Binary(_) => Column::Any(Vec::new()),
        };
        for _ in 0..nulls {
            c.push(ValueRef::Null);
        }
        c
    }

    /// An empty column of type `t`.
    pub fn empty(t: DataType) -> Column {
        match t {
            DataType::Null => Column::Null(0),
            DataType::Bool => Column::Bool(PrimitiveColumn::new()),
            DataType::Int => Column::Int(PrimitiveColumn::new()),
            DataType::UInt => Column::UInt(PrimitiveColumn::new()),
            DataType::Float => Column::Float(PrimitiveColumn::new()),
            DataType::Str => Column::Str(StrColumn::new()),
            DataType::Any => Column::Any(Vec::new()),
        }
    }

    /// The rows at `indices`, in that order. Panics if an index is out of range.
    pub fn take(&self, indices: &[usize]) -> Column {
        match self {
            Column::Null(_) => Column::Null(indices.len()),
            Column::Str(c) => Column::Str(c.take(indices)),
            Column::Any(c) => Column::Any(indices.iter().map(|&i| c[i].clone()).collect()),
            Column::Bool(c) => Column::Bool(c.take(indices)),
            Column::Int(c) => Column::Int(c.take(indices)),
            Column::UInt(c) => Column::UInt(c.take(indices)),
            Column::Float(c) => Column::Float(c.take(indices)),
        }
    }

    /// Feeds `out` the bytes that say what the column holds: its type, its values and
    /// which rows are null, in a form fixed within a version of weave. Two columns feed
    /// the same bytes exactly when they are of the same type and hold the same values:
    /// for a content key (an in-memory input's cache key) without encoding the column
    /// first.
    pub fn content_bytes(&self, out: &mut dyn FnMut(&[u8])) {
        fn chunked<T: Copy>(values: &[T], width: usize, bytes: impl Fn(T, &mut Vec<u8>), out: &mut dyn FnMut(&[u8])) {
            let mut buf = Vec::with_capacity(width * values.len().min(8192));
            for chunk in values.chunks(8192) {
                buf.clear();
                for &v in chunk {
                    bytes(v, &mut buf);
                }
                out(&buf);
            }
        }
        fn nulls(n: Option<&Vec<bool>>, out: &mut dyn FnMut(&[u8])) {
            match n {
                Some(n) => {
                    out(&[1]);
                    chunked(n, 1, |b, buf| buf.push(u8::from(b)), out);
                }
                None => out(&[0]),
            }
        }
        out(&(self.len() as u64).to_le_bytes());
        match self {
            Column::Null(_) => out(b"null"),
            Column::Bool(c) => {
                out(b"bool");
                chunked(&c.values, 1, |b, buf| buf.push(u8::from(b)), out);
                nulls(c.nulls.as_ref(), out);
            }
            Column::Int(c) => {
                out(b"int_");
                chunked(&c.values, 8, |v, buf| buf.extend_from_slice(&v.to_le_bytes()), out);
                nulls(c.nulls.as_ref(), out);
            }
            Column::UInt(c) => {
                out(b"uint");
                chunked(&c.values, 8, |v, buf| buf.extend_from_slice(&v.to_le_bytes()), out);
                nulls(c.nulls.as_ref(), out);
            }
            Column::Float(c) => {
                out(b"flt_");
                chunked(&c.values, 8, |v, buf| buf.extend_from_slice(&v.to_bits().to_le_bytes()), out);
                nulls(c.nulls.as_ref(), out);
            }
            Column::Str(c) => {
                out(b"str_");
                chunked(&c.offsets, 8, |o, buf| buf.extend_from_slice(&(o as u64).to_le_bytes()), out);
                out(c.data.as_bytes());
                nulls(c.nulls.as_ref(), out);
            }
            Column::Any(values) => {
                out(b"any_");
                for v in values {
                    value_bytes(v, out);
                }
            }
        }
    }

    /// Heap bytes held by the column.
    pub fn heap_size(&self) -> usize {
        match self {
            Column::Null(_) => 0,
            Column::Bool(c) => c.heap_size(),
            Column::Int(c) => c.heap_size(),
            Column::UInt(c) => c.heap_size(),
            Column::Float(c) => c.heap_size(),
            Column::Str(c) => c.heap_size(),
            Column::Any(c) => {
                c.capacity() * std::mem::size_of::<Value>() + c.iter().map(Value::heap_size).sum::<usize>()
            }
        }
    }
}

/// A `u64` in its one form: an int when it fits one.
#[inline]
fn uint_ref<'a>(u: u64) -> ValueRef<'a> {
    i64::try_from(u).map_or(ValueRef::UInt(u), ValueRef::Int)
}

impl From<StrColumn> for Column {
    fn from(c: StrColumn) -> Self {
        Column::Str(c)
    }
}

/// Feeds `out` one value's bytes for [`Column::content_bytes`]: a tag for its type, then
/// its content, lengths first, so that no two values (a NaN and a null, `"1"` and `1`)
/// feed the same bytes.
fn value_bytes(v: &Value, out: &mut dyn FnMut(&[u8])) {
    let text = |tag: u8, s: &str, out: &mut dyn FnMut(&[u8])| {
        out(&[tag]);
        out(&(s.len() as u64).to_le_bytes());
        out(s.as_bytes());
    };
    match v {
        Value::Null => out(&[0]),
        Value::Bool(b) => out(&[1, u8::from(*b)]),
        Value::Int(i) => {
            out(&[2]);
            out(&i.to_le_bytes());
        }
        Value::UInt(u) => {
            out(&[3]);
            out(&u.to_le_bytes());
        }
        Value::Float(f) => {
            out(&[4]);
            out(&f.to_bits().to_le_bytes());
        }
        Value::Str(s) => text(5, s, out),
        Value::BigInt(s) => text(6, s, out),
        Value::List(items) => {
            out(&[7]);
            out(&(items.len() as u64).to_le_bytes());
            for item in items {
                value_bytes(item, out);
            }
        }
        Value::Timestamp(t) => {
            out(&[10]);
            out(&t.value().to_le_bytes());
            out(t.unit().name().as_bytes());
            match t.zone() {
                Some(z) => text(11, z, out),
                None => out(&[0]),
            }
        }
        Value::Date(d) => {
            out(&[12]);
            out(&d.to_le_bytes());
        }
        Value::Decimal(d) => {
            out(&[13]);
            out(&d.value().to_le_bytes());
            out(&[d.precision(), d.scale().to_le_bytes()[0]]);
        }
        Value::Binary(b) => {
            out(&[14]);
            out(&(b.len() as u64).to_le_bytes());
            out(b);
        }
        Value::Map(m) => {
            // A key-value map and a struct of the same entries are written differently.
            out(&[if m.is_key_value() { 15 } else { 8 }]);
            out(&(m.len() as u64).to_le_bytes());
            for (k, item) in m.iter() {
                text(9, k, out);
                value_bytes(item, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::map::Map;

    #[test]
    fn str_column_stores_rows_end_to_end() {
        let mut c = StrColumn::new();
        c.push("ab");
        c.push_null();
        c.push_with(|a| {
            a.push_str("xyz");
            a.truncate(2);
        });
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![Some("ab"), None, Some("xy")]);
        assert_eq!(c.data(), "abxy");
    }

    #[test]
    fn take_copies_runs_of_rows_as_row_by_row_copying_would() {
        let texts = ["", "a", "bc", "é", "dé f", "", "ghij", "k", "😀", "lm"];
        let mut plain = StrColumn::new();
        for t in texts {
            plain.push(t);
        }
        let mut with_null = plain.clone();
        with_null.push_null();
        with_null.push("n");
        let picks: [&[usize]; 6] =
            [&[], &[0, 1, 2, 3, 4, 5, 6, 7, 8, 9], &[1, 2, 3, 7, 8], &[9, 8, 7], &[2, 2, 3, 0, 1, 4], &[5, 6, 0]];
        for column in [&plain, &with_null] {
            for pick in
                picks.iter().copied().chain([&[10, 11, 3, 4][..]]).filter(|p| p.iter().all(|&i| i < column.len()))
            {
                let mut want = StrColumn::new();
                for &i in pick {
                    match column.get(i) {
                        Some(s) => want.push(s),
                        None => want.push_null(),
                    }
                }
                let got = column.take(pick);
                assert_eq!(got.iter().collect::<Vec<_>>(), want.iter().collect::<Vec<_>>(), "{pick:?}");
                assert_eq!(got, want, "{pick:?}: the same buffers");
            }
        }
    }

    #[test]
    fn map_in_place_rewrites_every_row_and_keeps_nulls() {
        let mut c = StrColumn::new();
        c.push("ab");
        c.push_null();
        c.push("é z");
        let up = c.map_in_place(str::make_ascii_uppercase);
        assert_eq!(up.iter().collect::<Vec<_>>(), vec![Some("AB"), None, Some("é Z")]);
    }

    // regression: ints next to a float became floats, and 17-digit ints lost digits.
    #[test]
    fn mixed_columns_keep_each_value_as_it_came() {
        let mut c = Column::Null(0);
        c.push(ValueRef::Null);
        c.push(ValueRef::Int(12_345_678_901_234_567));
        assert_eq!(c.data_type(), DataType::Int);
        c.push(ValueRef::Float(2.5));
        assert_eq!(c.data_type(), DataType::Any);
        c.push(ValueRef::Str("x"));
        let got: Vec<String> = (0..c.len()).map(|i| c.get(i).to_string()).collect();
        assert_eq!(got, ["null", "12345678901234567", "2.5", "\"x\""]);
        let m = Map::from([("k", Value::Int(1)), ("a", Value::Int(2))]);
        c.push(ValueRef::Map(&m));
        assert_eq!(c.get(4).to_string(), r#"{"k":1,"a":2}"#);
        let mut f = Column::Null(0);
        f.push(ValueRef::Float(0.5));
        f.push(ValueRef::Int(1));
        assert_eq!(f.data_type(), DataType::Any);
        assert_eq!(f.get(1), ValueRef::Int(1));
    }

    #[test]
    fn ints_past_i64_make_a_uint_column_unless_one_is_negative() {
        let mut c = Column::Null(0);
        for v in [ValueRef::Int(1), ValueRef::Null, ValueRef::UInt(u64::MAX), ValueRef::Int(2)] {
            c.push(v);
        }
        assert_eq!(c.data_type(), DataType::UInt);
        let got: Vec<ValueRef<'_>> = (0..c.len()).map(|i| c.get(i)).collect();
        assert_eq!(got, [ValueRef::Int(1), ValueRef::Null, ValueRef::UInt(u64::MAX), ValueRef::Int(2)]);
        c.push(ValueRef::Int(-1));
        assert_eq!(c.data_type(), DataType::Any);
        assert_eq!(c.get(2), ValueRef::UInt(u64::MAX));
        assert_eq!(c.get(4), ValueRef::Int(-1));
        let mut n = Column::Null(0);
        n.push(ValueRef::Int(-1));
        n.push(ValueRef::UInt(u64::MAX));
        assert_eq!(n.data_type(), DataType::Any);
        assert_eq!(n.take(&[1, 0]).get(0), ValueRef::UInt(u64::MAX));
    }

    #[test]
    fn take_keeps_values_and_nulls_in_every_type() {
        let mut c = Column::Null(0);
        for v in [ValueRef::Int(1), ValueRef::Null, ValueRef::Int(3)] {
            c.push(v);
        }
        let t = c.take(&[2, 1, 0, 2]);
        let got: Vec<String> = (0..t.len()).map(|i| t.get(i).to_string()).collect();
        assert_eq!(got, ["3", "null", "1", "3"]);
        assert_eq!(t.data_type(), DataType::Int);
    }

    #[test]
    fn damaged_string_column_is_rejected_on_decode() {
        let bad = r#"{"data":"héllo","offsets":[0,2,6],"nulls":null}"#;
        let err = serde_json::from_str::<StrColumn>(bad).unwrap_err().to_string();
        assert!(err.contains("splits a character"), "{err}");
        let bad = r#"{"data":"ab","offsets":[0,5],"nulls":null}"#;
        assert!(serde_json::from_str::<StrColumn>(bad).is_err());
        let ok = r#"{"data":"ab","offsets":[0,1,2],"nulls":[false,true]}"#;
        let c: StrColumn = serde_json::from_str(ok).unwrap();
        assert_eq!(c.iter().collect::<Vec<_>>(), vec![Some("a"), None]);
    }
}
