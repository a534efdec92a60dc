//! Dynamically typed values: what one field of one record holds.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// One field's value.
///
/// This is the owned, general form, used at the edges (building records by hand, nested
/// data, tests). Inside a [`Batch`](crate::Batch) most values live in typed columns and
/// are read through [`ValueRef`] without being copied.
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
    /// A map from field names to values, ordered by key so that equal maps serialise equally.
    Map(BTreeMap<String, Value>),
}

impl Value {
    /// Borrows this value as a [`ValueRef`].
    pub fn as_ref(&self) -> ValueRef<'_> {
        match self {
            Value::Null => ValueRef::Null,
            Value::Bool(b) => ValueRef::Bool(*b),
            Value::Int(i) => ValueRef::Int(*i),
            Value::Float(f) => ValueRef::Float(*f),
            Value::Str(s) => ValueRef::Str(s),
            Value::List(l) => ValueRef::List(l),
            Value::Map(m) => ValueRef::Map(m),
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
            Value::Null | Value::Bool(_) | Value::Int(_) | Value::Float(_) => 0,
            Value::Str(s) => s.capacity(),
            Value::List(l) => {
                l.capacity() * std::mem::size_of::<Value>() + l.iter().map(Value::heap_size).sum::<usize>()
            }
            Value::Map(m) => m
                .iter()
                // A B-tree node holds up to 11 entries; count one entry's share of a node
                // plus the key's and value's own heap.
                .map(|(k, v)| k.capacity() + std::mem::size_of::<(String, Value)>() + v.heap_size())
                .sum(),
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

/// The binary form of a [`Value`]: variant names and order are part of the cache format.
#[derive(Serialize)]
#[serde(rename = "Value")]
enum ValueReprRef<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(&'a str),
    List(&'a [Value]),
    Map(&'a BTreeMap<String, Value>),
}

/// The owned twin of [`ValueReprRef`], for decoding.
#[derive(Deserialize)]
#[serde(rename = "Value")]
enum ValueRepr {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
}

impl Serialize for Value {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            match self {
                Value::Null => serializer.serialize_unit(),
                Value::Bool(b) => serializer.serialize_bool(*b),
                Value::Int(i) => serializer.serialize_i64(*i),
                Value::Float(f) => serializer.serialize_f64(*f),
                Value::Str(s) => serializer.serialize_str(s),
                Value::List(l) => l.serialize(serializer),
                Value::Map(m) => m.serialize(serializer),
            }
        } else {
            let repr = match self {
                Value::Null => ValueReprRef::Null,
                Value::Bool(b) => ValueReprRef::Bool(*b),
                Value::Int(i) => ValueReprRef::Int(*i),
                Value::Float(f) => ValueReprRef::Float(*f),
                Value::Str(s) => ValueReprRef::Str(s),
                Value::List(l) => ValueReprRef::List(l),
                Value::Map(m) => ValueReprRef::Map(m),
            };
            repr.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for Value {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            deserializer.deserialize_any(ValueVisitor)
        } else {
            Ok(match ValueRepr::deserialize(deserializer)? {
                ValueRepr::Null => Value::Null,
                ValueRepr::Bool(b) => Value::Bool(b),
                ValueRepr::Int(i) => Value::Int(i),
                ValueRepr::Float(f) => Value::Float(f),
                ValueRepr::Str(s) => Value::Str(s),
                ValueRepr::List(l) => Value::List(l),
                ValueRepr::Map(m) => Value::Map(m),
            })
        }
    }
}

/// Reads a self-describing format (JSON, TOML) into a [`Value`].
struct ValueVisitor;

impl<'de> serde::de::Visitor<'de> for ValueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Value::deserialize(d)
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        // Integers past i64::MAX keep their magnitude as a float rather than wrapping.
        Ok(i64::try_from(v).map_or(Value::Float(v as f64), Value::Int))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(v) = seq.next_element()? {
            out.push(v);
        }
        Ok(Value::List(out))
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = BTreeMap::new();
        while let Some((k, v)) = map.next_entry::<String, Value>()? {
            out.insert(k, v);
        }
        Ok(Value::Map(out))
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
    Map(&'a BTreeMap<String, Value>),
}

impl<'a> ValueRef<'a> {
    /// Copies this view into an owned [`Value`].
    pub fn to_owned(self) -> Value {
        match self {
            ValueRef::Null => Value::Null,
            ValueRef::Bool(b) => Value::Bool(b),
            ValueRef::Int(i) => Value::Int(i),
            ValueRef::Float(f) => Value::Float(f),
            ValueRef::Str(s) => Value::Str(s.to_owned()),
            ValueRef::List(l) => Value::List(l.to_vec()),
            ValueRef::Map(m) => Value::Map(m.clone()),
        }
    }

    /// The string inside, if this is a string.
    pub fn as_str(self) -> Option<&'a str> {
        match self {
            ValueRef::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The integer inside, if this is an integer.
    pub fn as_int(self) -> Option<i64> {
        match self {
            ValueRef::Int(i) => Some(i),
            _ => None,
        }
    }

    /// The number inside as a float, if this is an integer or a float.
    pub fn as_f64(self) -> Option<f64> {
        match self {
            ValueRef::Int(i) => Some(i as f64),
            ValueRef::Float(f) => Some(f),
            _ => None,
        }
    }

    /// Whether this is [`ValueRef::Null`].
    pub fn is_null(self) -> bool {
        matches!(self, ValueRef::Null)
    }

    /// The name of this value's type, as error messages print it.
    pub fn type_name(self) -> &'static str {
        match self {
            ValueRef::Null => "null",
            ValueRef::Bool(_) => "bool",
            ValueRef::Int(_) => "int",
            ValueRef::Float(_) => "float",
            ValueRef::Str(_) => "string",
            ValueRef::List(_) => "list",
            ValueRef::Map(_) => "map",
        }
    }
}

impl fmt::Display for ValueRef<'_> {
    /// Values display as JSON.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ValueRef::Null => f.write_str("null"),
            ValueRef::Bool(b) => write!(f, "{b}"),
            ValueRef::Int(i) => write!(f, "{i}"),
            ValueRef::Float(x) => match serde_json::Number::from_f64(x) {
                Some(n) => write!(f, "{n}"),
                // JSON has no NaN or infinity; `null` is what serde_json writes for them.
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
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_display_as_json() {
        let mut m = BTreeMap::new();
        m.insert("b".to_owned(), Value::from(1.5));
        m.insert("a".to_owned(), Value::List(vec![Value::Null, "x\"y".into()]));
        assert_eq!(Value::Map(m).to_string(), r#"{"a":[null,"x\"y"],"b":1.5}"#);
        assert_eq!(Value::Float(f64::NAN).to_string(), "null");
    }

    #[test]
    fn value_round_trips_through_json() {
        let v = Value::List(vec![Value::Int(3), Value::Str("é".into()), Value::Bool(true)]);
        let s = serde_json::to_string(&v).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&s).unwrap(), v);
    }
}
