//! Dynamically typed values: what one field of one record holds.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::map::Map;
use crate::scalar::{Decimal, TimeUnit, Timestamp, write_date};

/// How deep values may nest: lists and maps inside one another, the outermost counted.
///
/// serde_json's parser stops one level short of it, so every value a JSON text can hold is
/// within it. Every way data
/// becomes a value keeps to it (JSON text, Parquet files, the cache's entries, any serde
/// format), so that code walking a value recursively (display, comparison, hashing, drop)
/// cannot exhaust a thread's stack on hostile input; a value nested deeper is an error
/// there, and the cache refuses to store one built deeper in Rust.
pub const MAX_DEPTH: usize = 128;

/// One field's value.
///
/// This is the owned, general form, used at the edges (building records by hand, nested
/// data, tests). Inside a [`Batch`](crate::Batch) most values live in typed columns and
/// are read through [`ValueRef`] without being copied.
///
/// Every integer has one form: [`Value::Int`] when it fits an `i64`, [`Value::UInt`] above
/// that up to `u64::MAX`, [`Value::BigInt`] beyond (`Value::from` chooses). Integers never
/// become floats on the way: a value is written back as it was read.
///
/// Serialised as plain JSON values by human-readable formats (`"text"`, `3`, `[1, 2]`),
/// and as a tagged enum by binary formats such as the cache's bincode codec, which cannot
/// guess a type from the bytes.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Value {
    /// No value.
    #[default]
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit signed integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A UTF-8 string.
    Str(String),
    /// An ordered list of values.
    List(Vec<Value>),
    /// A map from field names to values, in the order the keys came (see [`Map`]).
    Map(Map),
    /// An integer above `i64::MAX` that fits a `u64`.
    UInt(u64),
    /// An integer outside the 64-bit range (below `i64::MIN` or above `u64::MAX`), kept as
    /// its decimal digits, a JSON integer (`-` and digits, no leading zero), so that it is
    /// written back exactly.
    BigInt(String),
    /// A point in time (see [`Timestamp`]).
    Timestamp(Timestamp),
    /// A date: days since 1970-01-01.
    Date(i32),
    /// A decimal number (see [`Decimal`]).
    Decimal(Decimal),
    /// Bytes (an image, audio, anything not text).
    Binary(Vec<u8>),
}

impl Value {
    /// Borrows this value as a [`ValueRef`].
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Bool(b) => ValueRef::Bool(*b),
            Value::Int(i) => ValueRef::Int(*i),
            Value::UInt(u) => ValueRef::UInt(*u),
            Value::BigInt(s) => ValueRef::BigInt(s),
            Value::Float(f) => ValueRef::Float(*f),
            Value::Str(s) => ValueRef::Str(s),
            Value::List(l) => ValueRef::List(l),
            Value::Map(m) => ValueRef::Map(m),
            Value::Timestamp(t) => ValueRef::Timestamp(t),
            Value::Date(d) => ValueRef::Date(*d),
            Value::Decimal(d) => ValueRef::Decimal(*d),
            Value::Binary(b) => ValueRef::Binary(b),
        }
    }

    /// The integer `i` in its one form.
    pub fn from_i128(i: i128) -> Value {
        if let Ok(i) = i64::try_from(i) {
            Value::Int(i)
        } else if let Ok(u) = u64::try_from(i) {
            Value::UInt(u)
        } else {
            Value::BigInt(i.to_string())
        }
    }

    /// The string inside, if this is a string.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    /// Whether this is [`Value::Null`].
    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The name of this value's type, as error messages print it.
    pub fn type_name(&self) -> &'static str {
        self.as_ref().type_name()
    }

    /// An estimate of the heap bytes this value owns (not counting `size_of::<Value>()`).
    pub fn heap_size(&self) -> usize {
        match self {
            Value::Null
            | Value::Bool(_)
            | Value::Int(_)
            | Value::UInt(_)
            | Value::Float(_)
            | Value::Date(_)
            | Value::Decimal(_) => 0,
            // The zone is shared by a column's values.
            Value::Timestamp(_) => 0,
            Value::Binary(b) => b.capacity(),
            Value::Str(s) | Value::BigInt(s) => s.capacity(),
            Value::List(l) => {
                l.capacity() * std::mem::size_of::<Value>() + l.iter().map(Value::heap_size).sum::<usize>()
            }
            Value::Map(m) => m.heap_size(),
        }
    }
}

impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}
impl From<u64> for Value {
    /// An `Int` when it fits one, else a `UInt`.
    fn from(v: u64) -> Self {
        i64::try_from(v).map_or(Value::UInt(v), Value::Int)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Float(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_owned())
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl From<Map> for Value {
    fn from(v: Map) -> Self {
        Value::Map(v)
    }
}
impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(v: Option<T>) -> Self {
        v.map_or(Value::Null, Into::into)
    }
}

impl fmt::Display for Value {
    /// Values display as JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.as_ref().fmt(f)
    }
}

/// The message of a value nested past [`MAX_DEPTH`].
pub(crate) fn too_deep() -> String {
    format!("a value nested more than {MAX_DEPTH} deep (lists and maps inside one another)")
}

/// The binary form of a [`Value`]: a tagged enum whose variant names and order are part of
/// the cache format, so new variants go at the end.
const VARIANTS: &[&str] = &[
    "Null",
    "Bool",
    "Int",
    "Float",
    "Str",
    "List",
    "Map",
    "UInt",
    "BigInt",
    "Timestamp",
    "Date",
    "Decimal",
    "Binary",
    "KeyValueMap",
];

/// A variant of the binary form, read by its number or its name.
#[derive(Deserialize)]
#[serde(variant_identifier)]
enum Tag {
    Null,
    Bool,
    Int,
    Float,
    Str,
    List,
    Map,
    UInt,
    BigInt,
    Timestamp,
    Date,
    Decimal,
    Binary,
    /// A [`Map`] that is a key-value map ([`Map::is_key_value`]).
    KeyValueMap,
}

/// A value in the binary form, inside `enclosing` lists and maps: written and read with
/// its depth counted, so that a value nested past [`MAX_DEPTH`] is an error (never written,
/// and refused when read, before the recursion could exhaust the stack).
struct Binary<'a> {
    value: &'a Value,
    enclosing: usize,
}

impl Serialize for Binary<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let inner = self.enclosing + 1;
        if matches!(self.value, Value::List(_) | Value::Map(_)) && inner > MAX_DEPTH {
            return Err(serde::ser::Error::custom(too_deep()));
        }
        match self.value {
            Value::Null => s.serialize_unit_variant("Value", 0, "Null"),
            Value::Bool(b) => s.serialize_newtype_variant("Value", 1, "Bool", b),
            Value::Int(i) => s.serialize_newtype_variant("Value", 2, "Int", i),
            Value::Float(f) => s.serialize_newtype_variant("Value", 3, "Float", f),
            Value::Str(v) => s.serialize_newtype_variant("Value", 4, "Str", v.as_str()),
            Value::List(items) => s.serialize_newtype_variant("Value", 5, "List", &Items { items, enclosing: inner }),
            Value::Map(map) if map.is_key_value() => {
                s.serialize_newtype_variant("Value", 13, "KeyValueMap", &Entries { map, enclosing: inner })
            }
            Value::Map(map) => s.serialize_newtype_variant("Value", 6, "Map", &Entries { map, enclosing: inner }),
            Value::UInt(u) => s.serialize_newtype_variant("Value", 7, "UInt", u),
            Value::BigInt(v) => s.serialize_newtype_variant("Value", 8, "BigInt", v.as_str()),
            Value::Timestamp(t) => {
                s.serialize_newtype_variant("Value", 9, "Timestamp", &(t.value(), t.unit().name(), t.zone()))
            }
            Value::Date(d) => s.serialize_newtype_variant("Value", 10, "Date", d),
            Value::Decimal(d) => {
                // An i128 as two halves: not every binary format has 128-bit integers.
                let v = d.value();
                s.serialize_newtype_variant(
                    "Value",
                    11,
                    "Decimal",
                    &(v as u64, (v >> 64) as i64, d.precision(), d.scale()),
                )
            }
            Value::Binary(b) => s.serialize_newtype_variant("Value", 12, "Binary", &Bytes(b)),
        }
    }
}

/// Bytes in the binary form, as the format writes bytes.
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

/// Reads bytes written by [`Bytes`], as bytes or as a sequence of them.
struct BytesVisitor;

impl<'de> serde::de::Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("bytes")
    }

    fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }

    fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1 << 16));
        while let Some(b) = seq.next_element()? {
            out.push(b);
        }
        Ok(out)
    }
}

struct BytesSeed;

impl<'de> serde::de::DeserializeSeed<'de> for BytesSeed {
    type Value = Vec<u8>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<u8>, D::Error> {
        d.deserialize_byte_buf(BytesVisitor)
    }
}

/// A list's items in the binary form, as a sequence (as `Vec<Value>` writes them).
struct Items<'a> {
    items: &'a [Value],
    enclosing: usize,
}

impl Serialize for Items<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.items.len()))?;
        for value in self.items {
            seq.serialize_element(&Binary { value, enclosing: self.enclosing })?;
        }
        seq.end()
    }
}

/// A map's entries in the binary form, in order (as [`Map`] writes them).
struct Entries<'a> {
    map: &'a Map,
    enclosing: usize,
}

impl Serialize for Entries<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(self.map.len()))?;
        for (k, value) in self.map {
            m.serialize_entry(k, &Binary { value, enclosing: self.enclosing })?;
        }
        m.end()
    }
}

/// Reads a value in the binary form inside `enclosing` lists and maps.
#[derive(Clone, Copy)]
struct BinarySeed {
    enclosing: usize,
}

impl<'de> serde::de::DeserializeSeed<'de> for BinarySeed {
    type Value = Value;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_enum("Value", VARIANTS, self)
    }
}

impl<'de> serde::de::Visitor<'de> for BinarySeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value")
    }

    fn visit_enum<A: serde::de::EnumAccess<'de>>(self, data: A) -> Result<Value, A::Error> {
        use serde::de::{Error, VariantAccess};
        let (tag, v) = data.variant::<Tag>()?;
        let inner = BinarySeed { enclosing: self.enclosing + 1 };
        if matches!(tag, Tag::List | Tag::Map | Tag::KeyValueMap) && inner.enclosing > MAX_DEPTH {
            return Err(A::Error::custom(too_deep()));
        }
        Ok(match tag {
            Tag::Null => {
                v.unit_variant()?;
                Value::Null
            }
            Tag::Bool => Value::Bool(v.newtype_variant()?),
            Tag::Int => Value::Int(v.newtype_variant()?),
            Tag::Float => Value::Float(v.newtype_variant()?),
            Tag::Str => Value::Str(v.newtype_variant()?),
            Tag::List => Value::List(v.newtype_variant_seed(ItemsSeed(inner))?),
            Tag::Map => Value::Map(v.newtype_variant_seed(EntriesSeed(inner))?),
            Tag::UInt => Value::UInt(v.newtype_variant()?),
            // Its one form, as `Value::from` makes it: a damaged or forged encoding is an
            // error here, never a value whose JSON cannot be written later.
            Tag::BigInt => {
                let s: String = v.newtype_variant()?;
                match ValueRef::parse_number(&s) {
                    Some(ValueRef::BigInt(_)) => Value::BigInt(s),
                    _ => return Err(A::Error::custom("an integer past 64 bits that is not one")),
                }
            }
            Tag::Timestamp => {
                let (value, unit, zone): (i64, String, Option<String>) = v.newtype_variant()?;
                let unit = TimeUnit::parse(&unit).ok_or_else(|| A::Error::custom("a timestamp of no unit"))?;
                Value::Timestamp(Timestamp::new(value, unit, zone.map(std::sync::Arc::new)))
            }
            Tag::Date => Value::Date(v.newtype_variant()?),
            Tag::Decimal => {
                let (lo, hi, precision, scale): (u64, i64, u8, i8) = v.newtype_variant()?;
                let value = (i128::from(hi) << 64) | i128::from(lo);
                Value::Decimal(Decimal::new(value, precision, scale).map_err(A::Error::custom)?)
            }
            Tag::Binary => Value::Binary(v.newtype_variant_seed(BytesSeed)?),
            Tag::KeyValueMap => {
                let mut m = v.newtype_variant_seed(EntriesSeed(inner))?;
                m.set_key_value(true);
                Value::Map(m)
            }
        })
    }
}

/// Reads a list's items, each inside one more level.
struct ItemsSeed(BinarySeed);

impl<'de> serde::de::DeserializeSeed<'de> for ItemsSeed {
    type Value = Vec<Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Vec<Value>, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> serde::de::Visitor<'de> for ItemsSeed {
    type Value = Vec<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of values")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<Value>, A::Error> {
        // The length is the encoder's word: bounded, so that a damaged one cannot reserve
        // the memory.
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element_seed(self.0)? {
            out.push(v);
        }
        Ok(out)
    }
}

/// Reads a map's entries, each value inside one more level.
struct EntriesSeed(BinarySeed);

impl<'de> serde::de::DeserializeSeed<'de> for EntriesSeed {
    type Value = Map;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Map, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for EntriesSeed {
    type Value = Map;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a map of field names to values")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut access: A) -> Result<Map, A::Error> {
        let mut m = Map::with_capacity(access.size_hint().unwrap_or(0).min(4096));
        while let Some(k) = access.next_key::<String>()? {
            let v = access.next_value_seed(self.0)?;
            m.insert(k, v);
        }
        Ok(m)
    }
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            match self {
                Value::Null => serializer.serialize_unit(),
                Value::Bool(b) => serializer.serialize_bool(*b),
                Value::Int(i) => serializer.serialize_i64(*i),
                Value::UInt(u) => serializer.serialize_u64(*u),
                // A JSON number of any size: serde_json writes a raw value's text as it
                // is (other formats get it as serde_json's raw-value structure).
                Value::BigInt(s) => serde_json::value::RawValue::from_string(s.clone())
                    .map_err(serde::ser::Error::custom)?
                    .serialize(serializer),
                Value::Float(f) => serializer.serialize_f64(*f),
                Value::Str(s) => serializer.serialize_str(s),
                Value::List(l) => l.serialize(serializer),
                Value::Map(m) => m.serialize(serializer),
                // Their text forms (see `scalar.rs`): JSON has no such types.
                Value::Timestamp(_) | Value::Date(_) | Value::Decimal(_) | Value::Binary(_) => {
                    serializer.collect_str(&TextForm(self.as_ref()))
                }
            }
        } else {
            Binary { value: self, enclosing: 0 }.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    /// From a self-describing format (JSON, TOML) by its types: an integer past 64 bits
    /// that the format gives as a float stays one here. [`Value::from_json`] reads JSON
    /// text exactly. Either way, a value nested past [`MAX_DEPTH`] is an error.
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::DeserializeSeed;
        if deserializer.is_human_readable() {
            let (next, wide) = (std::cell::Cell::new(0), std::cell::Cell::new(false));
            deserializer.deserialize_any(crate::json::Exact { literals: None, next: &next, wide: &wide, enclosing: 0 })
        } else {
            BinarySeed { enclosing: 0 }.deserialize(deserializer)
        }
    }
}

/// A borrowed view of one value, as read out of a batch without copying.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ValueRef<'a> {
    /// No value.
    Null,
    /// A boolean.
    Bool(bool),
    /// A 64-bit signed integer.
    Int(i64),
    /// A 64-bit float.
    Float(f64),
    /// A string, borrowed from the batch's buffer.
    Str(&'a str),
    /// A list.
    List(&'a [Value]),
    /// A map.
    Map(&'a Map),
    /// An integer above `i64::MAX` that fits a `u64`.
    UInt(u64),
    /// An integer outside the 64-bit range, as its decimal digits (see [`Value::BigInt`]).
    BigInt(&'a str),
    /// A point in time.
    Timestamp(&'a Timestamp),
    /// A date: days since 1970-01-01.
    Date(i32),
    /// A decimal number.
    Decimal(Decimal),
    /// Bytes.
    Binary(&'a [u8]),
}

impl<'a> ValueRef<'a> {
    /// Copies this view into an owned [`Value`].
    pub fn to_owned(self) -> Value {
        match self {
            ValueRef::Null => Value::Null,
            ValueRef::Bool(b) => Value::Bool(b),
            ValueRef::Int(i) => Value::Int(i),
            ValueRef::UInt(u) => Value::UInt(u),
            ValueRef::BigInt(s) => Value::BigInt(s.to_owned()),
            ValueRef::Float(f) => Value::Float(f),
            ValueRef::Str(s) => Value::Str(s.to_owned()),
            ValueRef::List(l) => Value::List(l.to_vec()),
            ValueRef::Map(m) => Value::Map(m.clone()),
            ValueRef::Timestamp(t) => Value::Timestamp(t.clone()),
            ValueRef::Date(d) => Value::Date(d),
            ValueRef::Decimal(d) => Value::Decimal(d),
            ValueRef::Binary(b) => Value::Binary(b.to_vec()),
        }
    }

    /// The string inside, if this is a string.
    pub fn as_str(self) -> Option<&'a str> {
        match self {
            ValueRef::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer inside, if this is an integer that fits an `i64`.
    pub fn as_int(self) -> Option<i64> {
        match self {
            ValueRef::Int(i) => Some(i),
            _ => None,
        }
    }

    /// The number inside as a float, if this is a number: the nearest `f64`, so an
    /// integer past 2^53 is rounded (for statistics; [`ValueRef::cmp_number`] compares
    /// exactly).
    pub fn as_f64(self) -> Option<f64> {
        match self {
            ValueRef::Int(i) => Some(i as f64),
            ValueRef::UInt(u) => Some(u as f64),
            ValueRef::BigInt(s) => s.parse().ok(),
            ValueRef::Float(f) => Some(f),
            ValueRef::Decimal(d) => Some(d.to_f64()),
            _ => None,
        }
    }

    /// A number read from text (a CSV field, say): an integer in its one form at any size,
    /// else a float as Rust reads one (`1e3`, `NaN`, `inf`); `None` when the text is no
    /// number. An integer past 64 bits is kept as its digits when they are a JSON integer
    /// (no sign but `-`, no leading zero), and read as the nearest float otherwise.
    pub fn parse_number(s: &'a str) -> Option<ValueRef<'a>> {
        if let Ok(i) = s.parse::<i64>() {
            return Some(ValueRef::Int(i));
        }
        if let Ok(u) = s.parse::<u64>() {
            return Some(ValueRef::UInt(u));
        }
        let digits = s.strip_prefix('-').unwrap_or(s);
        if !digits.is_empty() && !digits.starts_with('0') && digits.bytes().all(|b| b.is_ascii_digit()) {
            return Some(ValueRef::BigInt(s));
        }
        s.parse::<f64>().ok().map(ValueRef::Float)
    }

    /// Whether this is a number (an integer of any size, or a float).
    pub fn is_number(self) -> bool {
        matches!(self, ValueRef::Int(_) | ValueRef::UInt(_) | ValueRef::BigInt(_) | ValueRef::Float(_))
    }

    /// Compares two numbers by their exact values (`3` equals `3.0`; `2^53 + 1` is above
    /// `2^53` as a float); `None` when either is not a number, or is NaN.
    pub fn cmp_number(self, other: ValueRef<'_>) -> Option<Ordering> {
        Some(match (Num::of(self)?, Num::of(other)?) {
            (Num::Int(a), Num::Int(b)) => a.cmp(&b),
            (Num::Int(a), Num::Float(b)) => cmp_int_float(a, b)?,
            (Num::Float(a), Num::Int(b)) => cmp_int_float(b, a)?.reverse(),
            (Num::Float(a), Num::Float(b)) => a.partial_cmp(&b)?,
            (Num::Big(a), Num::Big(b)) => cmp_big(a, b),
            (Num::Big(a), b) => cmp_big_other(a, b)?,
            (a, Num::Big(b)) => cmp_big_other(b, a)?.reverse(),
        })
    }

    /// Whether this is [`ValueRef::Null`].
    pub fn is_null(self) -> bool {
        matches!(self, ValueRef::Null)
    }

    /// The name of this value's type, as error messages print it: integers of every size
    /// are `int`.
    pub fn type_name(self) -> &'static str {
        match self {
            ValueRef::Null => "null",
            ValueRef::Bool(_) => "bool",
            ValueRef::Int(_) | ValueRef::UInt(_) | ValueRef::BigInt(_) => "int",
            ValueRef::Float(_) => "float",
            ValueRef::Str(_) => "string",
            ValueRef::List(_) => "list",
            ValueRef::Map(_) => "map",
            ValueRef::Timestamp(_) => "timestamp",
            ValueRef::Date(_) => "date",
            ValueRef::Decimal(_) => "decimal",
            ValueRef::Binary(_) => "binary",
        }
    }

    /// This value as JSON with every map's keys in name order: the same text for two
    /// equal values, whatever order their maps were built in (for keys, hashes and
    /// category names). Floats JSON lacks are `NaN`, `inf` and `-inf` here, not `null`,
    /// so that they are told from each other and from a null.
    pub fn canonical(self) -> Canonical<'a> {
        Canonical(self)
    }
}

/// A number, for exact comparisons.
#[derive(Clone, Copy)]
enum Num<'a> {
    Int(i128),
    Float(f64),
    /// Beyond 64 bits: its digits, with a sign.
    Big(&'a str),
}

impl<'a> Num<'a> {
    fn of(v: ValueRef<'a>) -> Option<Num<'a>> {
        match v {
            ValueRef::Int(i) => Some(Num::Int(i128::from(i))),
            ValueRef::UInt(u) => Some(Num::Int(i128::from(u))),
            ValueRef::BigInt(s) => Some(match s.parse::<i128>() {
                Ok(i) => Num::Int(i),
                Err(_) => Num::Big(s),
            }),
            ValueRef::Float(f) if f.is_nan() => None,
            ValueRef::Float(f) => Some(Num::Float(f)),
            _ => None,
        }
    }
}

/// 2^127: every `i128` is below it, and every `f64` of at least this size is an integer.
const TWO_127: f64 = 170_141_183_460_469_231_731_687_303_715_884_105_728.0;

/// An integer against a float, exactly.
fn cmp_int_float(a: i128, b: f64) -> Option<Ordering> {
    if b.is_nan() {
        None
    } else if b >= TWO_127 {
        Some(Ordering::Less)
    } else if b < -TWO_127 {
        Some(Ordering::Greater)
    } else {
        // Within ±2^127 a float's integer part is exact as an i128, and the fraction
        // breaks a tie.
        let t = b.trunc();
        Some(a.cmp(&(t as i128)).then_with(|| 0.0f64.partial_cmp(&(b - t)).unwrap_or(Ordering::Equal)))
    }
}

/// Two integers past i128, as digit strings.
fn cmp_big(a: &str, b: &str) -> Ordering {
    let (na, da) = (a.starts_with('-'), a.trim_start_matches('-'));
    let (nb, db) = (b.starts_with('-'), b.trim_start_matches('-'));
    let magnitude = da.len().cmp(&db.len()).then_with(|| da.cmp(db));
    match (na, nb) {
        (false, false) => magnitude,
        (true, true) => magnitude.reverse(),
        (false, true) => Ordering::Greater,
        (true, false) => Ordering::Less,
    }
}

/// An integer past i128 (digits) against an integer within it or a float.
fn cmp_big_other(a: &str, b: Num<'_>) -> Option<Ordering> {
    let sign = if a.starts_with('-') { Ordering::Less } else { Ordering::Greater };
    match b {
        Num::Big(b) => Some(cmp_big(a, b)),
        Num::Float(f) if f.is_infinite() => Some(if f > 0.0 { Ordering::Less } else { Ordering::Greater }),
        // A float this large is an integer, whose exact digits `{:.0}` prints.
        Num::Float(f) if f.abs() >= TWO_127 => Some(cmp_big(a, &format!("{f:.0}"))),
        // Anything within ±2^127 is nearer zero than an integer past i128.
        Num::Int(_) | Num::Float(_) => Some(sign),
    }
}

impl fmt::Display for ValueRef<'_> {
    /// Values display as JSON, maps with their keys in order; a float JSON cannot hold
    /// (NaN, infinities) as `null`, as serde_json writes it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ValueRef::Null => f.write_str("null"),
            ValueRef::Bool(b) => write!(f, "{b}"),
            ValueRef::Int(i) => write!(f, "{i}"),
            ValueRef::UInt(u) => write!(f, "{u}"),
            ValueRef::BigInt(s) => f.write_str(s),
            ValueRef::Float(x) => match serde_json::Number::from_f64(x) {
                Some(n) => write!(f, "{n}"),
                None => f.write_str("null"),
            },
            ValueRef::Str(s) => match serde_json::to_string(s) {
                Ok(j) => f.write_str(&j),
                Err(_) => Err(fmt::Error),
            },
            ValueRef::List(l) => match serde_json::to_string(l) {
                Ok(j) => f.write_str(&j),
                Err(_) => Err(fmt::Error),
            },
            ValueRef::Map(m) => match serde_json::to_string(m) {
                Ok(j) => f.write_str(&j),
                Err(_) => Err(fmt::Error),
            },
            // Their text forms hold no quote or backslash: a JSON string as they are.
            v @ (ValueRef::Timestamp(_) | ValueRef::Date(_) | ValueRef::Decimal(_) | ValueRef::Binary(_)) => {
                write!(f, "\"{}\"", TextForm(v))
            }
        }
    }
}

/// The text form of a value JSON has no type for: RFC 3339 timestamps, ISO 8601 dates,
/// decimal digits, base64 (standard alphabet, padded) bytes. Other values show as JSON.
#[derive(Debug, Clone, Copy)]
pub struct TextForm<'a>(pub ValueRef<'a>);

impl fmt::Display for TextForm<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ValueRef::Timestamp(t) => t.fmt(f),
            ValueRef::Date(d) => write_date(d, f),
            ValueRef::Decimal(d) => d.fmt(f),
            ValueRef::Binary(b) => {
                use base64::Engine as _;
                f.write_str(&base64::engine::general_purpose::STANDARD.encode(b))
            }
            ValueRef::Str(s) => f.write_str(s),
            v => v.fmt(f),
        }
    }
}

/// A value displayed as JSON with every map's keys in name order
/// ([`ValueRef::canonical`]).
#[derive(Debug, Clone, Copy)]
pub struct Canonical<'a>(ValueRef<'a>);

impl fmt::Display for Canonical<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            ValueRef::List(l) => {
                f.write_str("[")?;
                for (i, v) in l.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    Canonical(v.as_ref()).fmt(f)?;
                }
                f.write_str("]")
            }
            ValueRef::Map(m) => {
                let mut entries: Vec<(&String, &Value)> = m.iter().collect();
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                f.write_str("{")?;
                for (i, (k, v)) in entries.into_iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{}:{}", ValueRef::Str(k), Canonical(v.as_ref()))?;
                }
                f.write_str("}")
            }
            ValueRef::Float(x) if x.is_nan() => f.write_str("NaN"),
            ValueRef::Float(x) if x.is_infinite() => f.write_str(if x > 0.0 { "inf" } else { "-inf" }),
            v => v.fmt(f),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_display_as_json_with_maps_in_order() {
        let m = Map::from([("b", Value::from(1.5)), ("a", Value::List(vec![Value::Null, "x\"y".into()]))]);
        let v = Value::Map(m);
        assert_eq!(v.to_string(), r#"{"b":1.5,"a":[null,"x\"y"]}"#);
        assert_eq!(v.as_ref().canonical().to_string(), r#"{"a":[null,"x\"y"],"b":1.5}"#);
        let floats = Value::List(vec![Value::Float(f64::NAN), Value::Float(f64::NEG_INFINITY), Value::Null]);
        assert_eq!(floats.to_string(), "[null,null,null]");
        assert_eq!(floats.as_ref().canonical().to_string(), "[NaN,-inf,null]");
        assert_eq!(Value::Float(f64::NAN).to_string(), "null");
        assert_eq!(Value::from(u64::MAX).to_string(), "18446744073709551615");
        assert_eq!(Value::BigInt("-100000000000000000000000".into()).to_string(), "-100000000000000000000000");
    }

    #[test]
    fn maps_with_the_same_entries_are_equal_in_any_order() {
        let a = Map::from([("x", 1i64), ("y", 2)]);
        let b = Map::from([("y", 2i64), ("x", 1)]);
        assert_eq!(Value::Map(a.clone()), Value::Map(b.clone()));
        assert_ne!(Value::Map(a.clone()).to_string(), Value::Map(b.clone()).to_string());
        assert_eq!(Value::Map(a).as_ref().canonical().to_string(), Value::Map(b).as_ref().canonical().to_string());
    }

    #[test]
    fn every_integer_has_one_form() {
        assert_eq!(Value::from(5u64), Value::Int(5));
        assert_eq!(Value::from(u64::MAX), Value::UInt(u64::MAX));
        assert_eq!(Value::from_i128(-5), Value::Int(-5));
        assert_eq!(Value::from_i128(i128::from(u64::MAX)), Value::UInt(u64::MAX));
        assert_eq!(Value::from_i128(i128::from(i64::MIN) - 1), Value::BigInt("-9223372036854775809".into()));
        assert_eq!(Value::BigInt("1".into()).type_name(), "int");
    }

    #[test]
    fn numbers_compare_exactly_across_kinds() {
        use Ordering::*;
        let cmp = |a: Value, b: Value| a.as_ref().cmp_number(b.as_ref());
        let big = |s: &str| Value::BigInt(s.into());
        // 2^53 + 1 is above 2^53, though both are the same float.
        assert_eq!(cmp(Value::Int(9_007_199_254_740_993), Value::Float(9_007_199_254_740_992.0)), Some(Greater));
        assert_eq!(cmp(Value::Int(3), Value::Float(3.0)), Some(Equal));
        assert_eq!(cmp(Value::Int(3), Value::Float(3.5)), Some(Less));
        assert_eq!(cmp(Value::Int(-3), Value::Float(-3.5)), Some(Greater));
        assert_eq!(cmp(Value::UInt(u64::MAX), Value::UInt(u64::MAX - 1)), Some(Greater));
        assert_eq!(cmp(Value::UInt(u64::MAX), Value::Float(1.8446744073709552e19)), Some(Less));
        assert_eq!(cmp(Value::UInt(u64::MAX), Value::Int(-1)), Some(Greater));
        assert_eq!(cmp(big("100000000000000000000000000000"), Value::UInt(u64::MAX)), Some(Greater));
        assert_eq!(cmp(big("-9223372036854775809"), Value::Int(i64::MIN)), Some(Less));
        // 2^130 is a float exactly; 1e39 is not (the float is 999999999999999939709166371603178586112).
        let two_130 = 2f64.powi(130);
        assert_eq!(cmp(big("1361129467683753853853498429727072845824"), Value::Float(two_130)), Some(Equal));
        assert_eq!(cmp(big("1361129467683753853853498429727072845825"), Value::Float(two_130)), Some(Greater));
        assert_eq!(cmp(big("-1361129467683753853853498429727072845825"), Value::Float(-two_130)), Some(Less));
        assert_eq!(cmp(big("1000000000000000000000000000000000000000"), Value::Float(1e39)), Some(Greater));
        assert_eq!(cmp(big("-1000000000000000000000000000000000000000"), Value::Float(1e38)), Some(Less));
        assert_eq!(
            cmp(big("99999999999999999999999999999999999999999"), big("100000000000000000000000000000000000000000")),
            Some(Less)
        );
        assert_eq!(
            cmp(big("-99999999999999999999999999999999999999999"), big("-100000000000000000000000000000000000000000")),
            Some(Greater)
        );
        assert_eq!(cmp(big("1000000000000000000000000000000000000000"), Value::Float(f64::INFINITY)), Some(Less));
        assert_eq!(cmp(Value::Float(f64::NAN), Value::Int(1)), None);
        assert_eq!(cmp(Value::Str("1".into()), Value::Int(1)), None);
    }

    #[test]
    fn numbers_read_from_text_keep_their_kind_and_digits() {
        assert_eq!(ValueRef::parse_number("12345678901234567"), Some(ValueRef::Int(12_345_678_901_234_567)));
        assert_eq!(ValueRef::parse_number("18446744073709551615"), Some(ValueRef::UInt(u64::MAX)));
        assert_eq!(ValueRef::parse_number("-9223372036854775809"), Some(ValueRef::BigInt("-9223372036854775809")));
        assert_eq!(ValueRef::parse_number("3.0"), Some(ValueRef::Float(3.0)));
        assert!(ValueRef::parse_number("NaN").is_some_and(|v| v.as_f64().is_some_and(f64::is_nan)));
        assert_eq!(ValueRef::parse_number("3 apples"), None);
        assert_eq!(ValueRef::parse_number(""), None);
    }

    // A format with no depth limit of its own (here serde_json's tree, unlike its parser)
    // still cannot give a value nested past MAX_DEPTH.
    #[test]
    fn values_are_read_at_most_max_depth_deep_from_any_format() {
        let nested = |depth: usize, inner: serde_json::Value| {
            (0..depth)
                .fold(inner, |v, i| if i % 2 == 0 { serde_json::json!([v]) } else { serde_json::json!({ "k": v }) })
        };
        let deepest = nested(MAX_DEPTH, serde_json::Value::Null);
        let v = Value::deserialize(&deepest).unwrap();
        assert_eq!(v.to_string(), deepest.to_string());
        let e = Value::deserialize(&nested(MAX_DEPTH + 1, serde_json::Value::Null)).unwrap_err();
        assert!(e.to_string().contains("nested more than 128 deep"), "{e}");
        // serde_json's parser stops just short of it: every value JSON text holds is within.
        assert!(Value::from_json(&nested(MAX_DEPTH - 1, serde_json::Value::Null).to_string()).is_ok());
        let e = Value::from_json(&deepest.to_string()).unwrap_err();
        assert!(e.to_string().starts_with("recursion limit exceeded"), "{e}");
    }

    #[test]
    fn value_round_trips_through_json() {
        let v = Value::List(vec![
            Value::Int(3),
            Value::Str("é".into()),
            Value::Bool(true),
            Value::UInt(u64::MAX),
            Value::BigInt("-100000000000000000000000".into()),
            Value::Map(Map::from([("z", Value::Int(1)), ("a", Value::Null)])),
        ]);
        let s = serde_json::to_string(&v).unwrap();
        assert_eq!(s, r#"[3,"é",true,18446744073709551615,-100000000000000000000000,{"z":1,"a":null}]"#);
        assert_eq!(Value::from_json(&s).unwrap(), v);
    }
}
